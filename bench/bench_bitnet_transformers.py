"""transformers' BitNet with and without fastemb.torch.patch_bitnet: greedy decoding tokens/s at batch 1.

Run (numbers go in BENCHMARKS.md; a few minutes, the unpatched model is the slow part):

    OMP_WAIT_POLICY=PASSIVE python bench/bench_bitnet_transformers.py                # 4 layers, bf16, 2 threads
    python bench/bench_bitnet_transformers.py --layers 1 --tokens 4 --reps 1          # quick look
    OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_bitnet_transformers.py --benchmark-json=out.json

Model: a ``BitNetForCausalLM`` with BitNet b1.58 2B4T's decoder shapes (transformers' own
``BitNetConfig`` defaults: hidden 2560, intermediate 6912, 20 attention heads, 5 key/value heads,
head dim 128, squared-ReLU MLP, sub-norms), ``--layers`` decoder layers, random ternary weights
(packed by transformers' ``pack_weights``; ``weight_scale`` per tensor), made BitNet layers by
transformers' ``replace_with_bitnet_linear`` as its BitNet quantizer does when loading a
checkpoint. The vocabulary is cut to 256 tokens so that the timing is the decoder stack's (the real
128256-token ``lm_head`` is a dense bf16 matmul that neither variant changes). Model dtype bf16 (the
checkpoint's) by default. One layer holds 69.5M ternary weights: 17.4 MB packed, so memory allows
the full 30 layers on a 24 GB machine; the unpatched model's time (transformers unpacks every
weight on every call) is what keeps the default at 4.

Variants, measured in the same run, interleaved (rep r of each back to back), the same threads
for torch and fastemb:
    transformers       the model as transformers runs it (BitLinear, ``linear_class='bitlinear'``,
                       what packed checkpoints load as: unpack the 2-bit weights to the model dtype
                       on every call, then F.linear; its torch.compile'd helpers as shipped)
    transformers_dense the same weights in transformers' ``AutoBitLinear`` (offline): the ternary
                       weights stored unpacked in the model dtype (8x the memory of 2 bits), a dense
                       F.linear on the fake-quantized activations, then ``* weight_scale``: the
                       fastest way transformers itself runs these weights on CPU
    fastemb            the BitLinear model after ``fastemb.torch.patch_bitnet`` (packed 2-bit
                       kernel, int8 activations; scale_rule='reciprocal')

Timed: ``model.generate(prompt of 8 tokens, max_new_tokens=min_new_tokens=--tokens, do_sample=False)``
(one prefill + tokens - 1 decode steps); tokens/s = new tokens / median seconds. A warm-up
generate runs first (it compiles transformers' helpers). Before timing, the prompt logits of the
other variants are checked against the BitLinear model's (a sanity check).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import pytest

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

import fastemb

PROMPT = 8
VOCAB = 256


def build(layers: int, dtype, seed: int = 0):
    """The unpatched transformers model (see the module docstring)."""
    from transformers import BitNetConfig, BitNetForCausalLM, BitNetQuantConfig
    from transformers.integrations import bitnet

    torch.manual_seed(seed)
    cfg = BitNetConfig(vocab_size=VOCAB, num_hidden_layers=layers, bos_token_id=0, eos_token_id=None, pad_token_id=1)
    model = BitNetForCausalLM._from_config(cfg, dtype=dtype)  # built in dtype: 30 bf16 layers need ~4 GB here
    bitnet.replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"],
                                      quantization_config=BitNetQuantConfig())
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, bitnet.BitLinear):
                wq = torch.randint(-1, 2, (mod.out_features, mod.in_features), dtype=torch.int8)
                mod.weight.copy_(bitnet.pack_weights(wq))
                mod.weight_scale.fill_(mod.in_features ** 0.5 / 1.5)  # 1 / gamma, gamma = 1.5 / sqrt(k)
    return model.eval(), cfg


def packed_bytes(model) -> int:
    from transformers.integrations import bitnet

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, bitnet.BitLinear))


def dense_copy(hf, dtype):
    """The BitLinear model with every BitLinear replaced by transformers' AutoBitLinear (offline) holding
    the same ternary weights unpacked in ``dtype`` and weight_scale = gamma (it multiplies)."""
    from transformers.integrations import bitnet

    model = copy.deepcopy(hf)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, bitnet.BitLinear):
            new = bitnet.AutoBitLinear(mod.in_features, mod.out_features, bias=mod.bias is not None, dtype=dtype)
            with torch.no_grad(), torch.compiler.set_stance("force_eager"):
                new.weight.copy_(bitnet.unpack_weights(mod.weight, dtype)[:mod.out_features])
                new.weight_scale.copy_((1.0 / mod.weight_scale.float()).to(dtype))
            new.requires_grad_(False)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new.eval())
    return model


def make_variants(layers: int, dtype):
    import fastemb.torch as ft

    hf, cfg = build(layers, dtype)
    nbytes = packed_bytes(hf)
    models = {"transformers": hf, "transformers_dense": dense_copy(hf, dtype),
              "fastemb": ft.patch_bitnet(copy.deepcopy(hf))}
    prompt = torch.randint(2, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = hf(prompt).logits.float()
        errs = {name: float((m(prompt).logits.float() - a).abs().max() / a.abs().max()) for name, m in models.items()}
    # a sanity check against a wrong conversion (off by 100% or more), not a precision test (the tests are):
    # bf16 rounding differences grow with depth on random weights (4 layers ~7%, 30 layers ~17%)
    tol = 0.5 if dtype == torch.bfloat16 else 0.05
    for name, err in errs.items():
        if not err <= tol:
            raise AssertionError(f"{name}: logits differ from transformers' BitLinear model by {err:.3g} (relative), "
                                 f"over {tol}")
    return models, prompt, cfg, nbytes, errs["fastemb"]


def generate(model, prompt, tokens: int):
    with torch.inference_mode():
        return model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def run(layers: int, tokens: int, reps: int, threads: int, dtype) -> dict:
    torch.set_num_threads(threads)
    fastemb.set_num_threads(threads)
    models, prompt, cfg, nbytes, err = make_variants(layers, dtype)
    for m in models.values():  # warm-up: compiles transformers' helpers for the prefill and decode shapes
        generate(m, prompt, 3)
    times = {k: [] for k in models}
    for _ in range(reps):
        for name, m in models.items():
            t0 = time.perf_counter()
            out = generate(m, prompt, tokens)
            times[name].append(time.perf_counter() - t0)
            assert out.shape == (1, PROMPT + tokens)
    res = {name: {"median_s": statistics.median(t), "min_s": min(t), "tokens_per_s": tokens / statistics.median(t),
                  "times_s": t} for name, t in times.items()}
    return {"layers": layers, "tokens": tokens, "reps": reps, "threads": threads, "dtype": str(dtype).split(".")[1],
            "hidden": cfg.hidden_size, "intermediate": cfg.intermediate_size, "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads, "packed_weight_bytes": nbytes, "logits_rel_err": err,
            "ratio": res["transformers"]["median_s"] / res["fastemb"]["median_s"],
            "ratio_dense": res["transformers_dense"]["median_s"] / res["fastemb"]["median_s"], "variants": res}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=8, help="new tokens per generate()")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    import transformers

    print(f"# fastemb {fastemb.__version__} (isa {fastemb.info()['isa']}), torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads={args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    r = run(args.layers, args.tokens, args.reps, args.threads, getattr(torch, args.dtype))
    print(f"# {r['layers']} BitNet decoder layers (hidden {r['hidden']}, intermediate {r['intermediate']}, heads "
          f"{r['heads']}/{r['kv_heads']} kv), {r['dtype']}, {r['packed_weight_bytes'] / 1e6:.1f} MB packed weights; "
          f"prompt logits relative difference {r['logits_rel_err']:.3g}")
    print(f"# generate(): prompt {PROMPT} tokens, {r['tokens']} new tokens, batch 1, median of {r['reps']}\n")
    print("| variant | median s / generate | tokens/s | fastemb speedup |")
    print("|---|---|---|---|")
    fe = r["variants"]["fastemb"]["median_s"]
    for name, v in r["variants"].items():
        print(f"| {name} | {v['median_s']:.3f} | {v['tokens_per_s']:.2f} | {v['median_s'] / fe:.1f}x |")
    print(f"\n# load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **r}, f, indent=1)
    return 0


# ---- pytest-benchmark -------------------------------------------------------------------------------

# transformers' helpers are torch.compile'd: the first one imports inductor, whose torch/utils/mkldnn.py (torch 2.13)
# uses the deprecated torch.jit.script_method
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
BENCH_LAYERS = max(1, round(4 * SCALE))
BENCH_TOKENS = 8 if SCALE >= 1 else 2


@pytest.fixture(scope="module")
def variants():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    torch.set_num_threads(THREADS)
    fastemb.set_num_threads(THREADS)
    models, prompt, cfg, nbytes, _ = make_variants(BENCH_LAYERS, torch.bfloat16)
    for m in models.values():
        generate(m, prompt, 3)
    return models, prompt, nbytes


@pytest.mark.parametrize("variant", ["transformers", "transformers_dense", "fastemb"])
def test_bitnet_generate(benchmark, variants, variant):
    from fastemb.bench_cli import record

    models, prompt, nbytes = variants
    benchmark.group = f"BitNet 2B4T shapes, {BENCH_LAYERS} layers, bf16, generate {BENCH_TOKENS} tokens, batch 1"
    benchmark.extra_info.update(variant=variant, layers=BENCH_LAYERS, tokens=BENCH_TOKENS, threads=THREADS)
    record(benchmark, family="ternary", kernel="BitNet decoder generate() (transformers)",
           shape=f"{BENCH_LAYERS} layers 2560/6912, {BENCH_TOKENS} tokens",
           peer={"fastemb": "fastemb", "transformers": "transformers BitLinear",
                 "transformers_dense": "transformers AutoBitLinear bf16"}[variant],
           impl="model.generate(greedy, batch 1)", nbytes=nbytes * BENCH_TOKENS, limit_kind="read bandwidth")
    benchmark.pedantic(lambda: generate(models[variant], prompt, BENCH_TOKENS), rounds=3 if SCALE >= 1 else 1,
                       iterations=1, warmup_rounds=0)
    benchmark.extra_info["tokens_per_s"] = BENCH_TOKENS / benchmark.stats.stats.median


if __name__ == "__main__":
    sys.exit(main())
