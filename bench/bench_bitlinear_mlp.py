"""BitLinear end to end: tokens per second through a stack of transformer MLP blocks.

Run (the full size takes about a minute; numbers go in BENCHMARKS.md, "BitLinear end-to-end"):

    python bench/bench_bitlinear_mlp.py                      # 4 blocks, d=2048, ffn=5632, 2 threads
    python bench/bench_bitlinear_mlp.py --blocks 1 --reps 3  # quick look
    python bench/bench_bitlinear_mlp.py --json out.json

Model: ``blocks`` residual MLP blocks as in BitNet b1.58 2B4T (no bias, squared ReLU gate):
``x + down(relu(gate(x))^2 * up(x))`` with gate/up: d -> ffn, down: ffn -> d, so 3 d ffn weights
per block (4 blocks of d=2048, ffn=5632: 138M weights; 554 MB in float32, 277 MB in bf16, 35 MB
packed). Inputs are ``[batch, d]`` float32 (bf16 for the bf16 model); batch = tokens per call.

Variants, measured in the same run, the same thread count for torch and fastemb:
    float32_linear   torch nn.Linear, float32 weights and activations
    bf16_linear      torch nn.Linear, bfloat16 weights and activations
    bitlinear_int8   fastemb.torch.BitLinear in eval(): 2-bit packed weights, int8 activations
                     (W1.58A8), torch.ops.fastemb.ternary_linear
    bitlinear_float  the same with activations='float' (float32 x ternary weights)

Reported: median seconds per forward of the whole stack over ``reps`` calls after a warm-up,
and tokens per second = batch / median. The variants' calls are interleaved (rep r of every
variant back to back) so that load drifts on a shared machine hit them alike. torch's OpenMP
threads spin after each parallel op and compete with fastemb's pool on a small machine; running
with ``OMP_WAIT_POLICY=PASSIVE`` shows how much (both are worth recording). The kernels the packed variants ran on are printed
(native ISA, or "torch fallback" when the build has no ternary kernels yet: then the packed
numbers measure the fallback, not the kernels).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import fastemb
import fastemb.torch as ft
from fastemb import ternary as tern


class MLPBlock(nn.Module):
    def __init__(self, d: int, ffn: int, make):
        super().__init__()
        self.gate = make(d, ffn)
        self.up = make(d, ffn)
        self.down = make(ffn, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.gate(x)).square() * self.up(x))


def build(kind: str, blocks: int, d: int, ffn: int, src=None) -> nn.Module:
    if kind in ("float32_linear", "bf16_linear"):
        model = nn.Sequential(*[MLPBlock(d, ffn, lambda i, o: nn.Linear(i, o, bias=False)) for _ in range(blocks)])
        if src is not None:
            model.load_state_dict(src.state_dict())
        return model.to(torch.bfloat16 if kind == "bf16_linear" else torch.float32).eval()
    activations = "int8" if kind == "bitlinear_int8" else "float"
    model = nn.Sequential(*[MLPBlock(d, ffn, lambda i, o: ft.BitLinear(i, o, bias=False, activations=activations))
                            for _ in range(blocks)])
    if src is not None:
        model.load_state_dict(src.state_dict())
    return model.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--batches", default="1,32", help="tokens per forward, comma separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--variants", default="float32_linear,bf16_linear,bitlinear_int8,bitlinear_float")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    fastemb.set_num_threads(args.threads)
    torch.manual_seed(0)
    kernels = tern.native_kernels()
    packed_backend = f"native {fastemb.info()['isa']}" if kernels is not None else "torch fallback (no ternary kernels in this build)"
    print(f"# fastemb {fastemb.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, threads={args.threads}; packed variants run on: {packed_backend}")
    print(f"# {args.blocks} blocks, d={args.d}, ffn={args.ffn}, load average {os.getloadavg()[0]:.2f} at start")

    base = build("float32_linear", args.blocks, args.d, args.ffn)
    for mod in base.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.02)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    models = {kind: base if kind == "float32_linear" else build(kind, args.blocks, args.d, args.ffn, base)
              for kind in variants}
    results = []
    for batch in batches:
        xs = {kind: torch.randn(batch, args.d).to(torch.bfloat16 if kind == "bf16_linear" else torch.float32)
              for kind in variants}
        times = {kind: [] for kind in variants}
        with torch.inference_mode():
            for kind in variants:  # warm-up
                for _ in range(2):
                    models[kind](xs[kind])
            # interleaved: call r of every variant runs back to back, so load drifts on a shared
            # machine hit all variants alike
            for _ in range(args.reps):
                for kind in variants:
                    t0 = time.perf_counter()
                    models[kind](xs[kind])
                    times[kind].append(time.perf_counter() - t0)
        for kind in variants:
            med = statistics.median(times[kind])
            results.append({"variant": kind, "batch": batch, "median_s": med, "min_s": min(times[kind]),
                            "tokens_per_s": batch / med, "reps": args.reps})
            print(f"{kind:16s} batch {batch:3d}: median {med * 1e3:9.2f} ms  min {min(times[kind]) * 1e3:9.2f} ms  "
                  f"{batch / med:10.1f} tokens/s", flush=True)

    print("\n| batch | variant | median ms / forward | tokens/s | vs float32 | vs bf16 |")
    print("|---|---|---|---|---|---|")
    by = {(r["variant"], r["batch"]): r for r in results}
    for batch in batches:
        for kind in variants:
            r = by[(kind, batch)]
            f32 = by.get(("float32_linear", batch))
            bf = by.get(("bf16_linear", batch))
            ratio = lambda ref: f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "-"  # noqa: E731
            print(f"| {batch} | {kind} | {r['median_s'] * 1e3:.2f} | {r['tokens_per_s']:.1f} | {ratio(f32)} | {ratio(bf)} |")
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "packed_backend": packed_backend, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
