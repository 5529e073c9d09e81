"""fastemb inside Hugging Face transformers' BitNet, checked against the installed transformers:

- transformers' own activation quantizers (``BitLinear.activation_quant`` and ``ActQuant``, as
  shipped: compiled) against ``fastemb.quantize_activations(scale_rule='reciprocal')`` on every
  backend: the same int8 codes and float32 scales, bit for bit;
- ``fastemb.torch.patch_bitnet`` on a ``BitNetForCausalLM`` built from a small local
  ``BitNetConfig`` (no hub) whose linear layers are made BitNet layers by transformers' own
  ``replace_with_bitnet_linear`` (what its BitNet quantizer does when loading a checkpoint), with
  random ternary weights packed by transformers' ``pack_weights``:
  greedy ``generate()`` of 32 tokens gives the same tokens patched and unpatched (float32), and
  the logits agree within the model's own tolerance:
    * float32: max |patched - unpatched| <= 1e-5 * max |unpatched| (float32 rounding through the
      layers; both quantize to the same codes, only the epilogue's rounding order differs);
    * bfloat16: the patched bf16 model is no further from the float32 model than transformers' own
      bf16 model is (max error <= 2x the unpatched bf16 model's own error against float32);
- AutoBitLinear (offline and online), bias, input RMSNorm, torch.compile, and bad inputs.

transformers wraps its BitNet quantizers in ``torch.compile``, which costs seconds per shape and
dtype on CPU. The quantizer tests run them compiled, as shipped, and check that eager mode gives the
same float32 bits; the model-level tests then run transformers' side eagerly (``hf_eager``), which
in float32 computes the same values.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
bitnet = pytest.importorskip("transformers.integrations.bitnet")

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402
from fastemb import ternary as tern  # noqa: E402
from fastemb._reference import ternary as ref  # noqa: E402
from fastemb.torch import _ternary as tt  # noqa: E402

# transformers' BitNet helpers are torch.compile'd: the first one imports inductor, whose torch/utils/mkldnn.py
# (torch 2.13) uses the deprecated torch.jit.script_method
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

BitNetConfig = transformers.BitNetConfig
BitNetForCausalLM = transformers.BitNetForCausalLM
BitNetQuantConfig = transformers.BitNetQuantConfig

def hf_eager():
    """transformers' torch.compile-decorated BitNet functions run eagerly inside this context."""
    return torch.compiler.set_stance("force_eager")


BACKENDS = ["numpy"] + (list(fastemb._backend.native_isas()) if tern.native_kernels() is not None else [])


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def rand_act(rng, shape):
    """Activations with rows of very different magnitudes (as per-token scales see them)."""
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-6, 6, shape[:-1] + (1,)))
    return x.astype(np.float32)


# ---- transformers' activation quantizers ----------------------------------------------------------

def test_activation_quant_matches_transformers_bit_for_bit(rng):
    layer = bitnet.BitLinear(300, 8, bias=False, dtype=torch.float32)
    x = rand_act(rng, (3, 97, 300))  # [batch, tokens, features], as the model calls it
    q_hf, s_hf = layer.activation_quant(torch.from_numpy(x))
    with hf_eager():  # eager transformers: the same bits (the model tests below rely on it)
        q_e, s_e = layer.activation_quant(torch.from_numpy(x))
    assert torch.equal(q_e, q_hf) and torch.equal(s_e, s_hf)
    q_hf, s_hf = q_hf.numpy().reshape(-1, 300), s_hf.numpy().reshape(-1)
    x2 = x.reshape(-1, 300)
    for backend in BACKENDS:
        q, s = tern._quantize_activations(x2, ref.EPS, backend, "reciprocal")
        np.testing.assert_array_equal(q, q_hf, err_msg=backend)
        np.testing.assert_array_equal(bits(s), bits(s_hf), err_msg=backend)
    q, s = tt.quantize_activations_torch(torch.from_numpy(x2), scale_rule="reciprocal")
    np.testing.assert_array_equal(q.numpy(), q_hf)
    np.testing.assert_array_equal(bits(s.numpy()), bits(s_hf))
    # the default rule is not transformers': about a quarter of the scales differ by 1 ulp
    s_div = fastemb.quantize_activations(x2)[1]
    assert 0.1 < (s_div != s_hf).mean() < 0.4
    # ... and the matmul with the reciprocal rule is transformers' formula on the same codes
    tw = fastemb.TernaryWeight.from_ternary(rng.integers(-1, 2, (16, 300)), 0.25)
    want = (q_hf.astype(np.int64) @ tw.ternary().T.astype(np.int64)).astype(np.float32) * (
        np.float32(0.25) / s_hf[:, None])
    np.testing.assert_array_equal(fastemb.ternary_matmul(x2, tw, scale_rule="reciprocal"), want)


def test_actquant_of_autobitlinear_matches(rng):
    x = rand_act(rng, (64, 200))
    y_hf = bitnet.ActQuant.apply(torch.from_numpy(x)).numpy()  # x_q / s, float32
    with hf_eager():
        assert torch.equal(bitnet.ActQuant.apply(torch.from_numpy(x)), torch.from_numpy(y_hf))
    q, s = fastemb.quantize_activations(x, scale_rule="reciprocal")
    # equal values (transformers' rounding keeps the sign of zero: -0.0 where fastemb's int8 code is 0)
    np.testing.assert_array_equal(q.astype(np.float32) / s[:, None], y_hf)
    np.testing.assert_array_equal(np.rint(y_hf * s[:, None]), q)


def test_bf16_activations_transformers_rounds_the_scale_to_bf16(rng):
    # documented difference (fastemb/torch/_bitnet.py): for bf16 activations transformers' compiled
    # activation_quant returns the scale in bf16; it is fastemb's float32 reciprocal scale rounded to bf16
    layer = bitnet.BitLinear(256, 8, bias=False, dtype=torch.bfloat16)
    x = torch.from_numpy(rand_act(rng, (50, 256))).to(torch.bfloat16)
    q_hf, s_hf = layer.activation_quant(x)
    assert s_hf.dtype == torch.bfloat16
    _, s = tt.quantize_activations_torch(x, scale_rule="reciprocal")
    np.testing.assert_array_equal(s.to(torch.bfloat16).float().numpy(), s_hf.float().reshape(-1).numpy())


# ---- a small BitNet model -----------------------------------------------------------------------

def small_config(**kw):
    args = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=None,
                pad_token_id=1)
    args.update(kw)
    return BitNetConfig(**args)


def bitnet_model(seed, dtype=torch.float32, quant=None, **config):
    """BitNetForCausalLM with transformers' BitNet layers (replace_with_bitnet_linear, as its BitNet
    quantizer does before loading a checkpoint) and random ternary weights."""
    torch.manual_seed(seed)
    model = BitNetForCausalLM(small_config(**config))
    quant = quant or BitNetQuantConfig()
    bitnet.replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    with torch.no_grad():
        for mod in model.modules():
            gamma = 1.5 / getattr(mod, "in_features", 1) ** 0.5
            if isinstance(mod, bitnet.BitLinear):
                wq = torch.randint(-1, 2, (mod.out_features, mod.in_features))
                mod.weight.copy_(bitnet.pack_weights(wq.clone()))
                mod.weight_scale.fill_(1.0 / gamma)  # BitLinear divides by weight_scale
            elif isinstance(mod, bitnet.AutoBitLinear) and not mod.online_quant:
                mod.weight.copy_(torch.randint(-1, 2, mod.weight.shape).to(mod.weight.dtype))
                mod.weight_scale.fill_(gamma)  # AutoBitLinear multiplies by it
            if isinstance(mod, (bitnet.BitLinear, bitnet.AutoBitLinear)) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.out_features) * 0.1)
            if isinstance(mod, (bitnet.BitLinear, bitnet.AutoBitLinear)) and mod.rms_norm is not None:
                # replace_with_bitnet_linear builds the optional input norm on the meta device (a checkpoint
                # fills it): give it weights here
                mod.rms_norm.to_empty(device="cpu")
                mod.rms_norm.weight.uniform_(0.5, 1.5)
    model = model.to(dtype).eval()
    for mod in model.modules():
        if isinstance(mod, bitnet.BitLinear):
            mod.dtype = dtype  # BitLinear keeps the dtype it was built with for its unpacked weights
    return model


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.fixture(scope="module")
def fp32_pair():
    model = bitnet_model(0, attention_bias=True)
    return model, ft.patch_bitnet(copy.deepcopy(model))


def test_patch_replaces_every_bitnet_layer(fp32_pair):
    model, patched = fp32_pair
    n_layers = count(model, bitnet.BitLinear)
    assert n_layers == 2 * 7
    assert count(patched, bitnet.BitLinear) == 0 and count(patched, ft.TernaryLinear) == n_layers
    assert isinstance(patched.lm_head, torch.nn.Linear)  # not a BitNet layer: left alone
    q = patched.model.layers[0].self_attn.q_proj
    hf = model.model.layers[0].self_attn.q_proj
    assert q.scale_rule == "reciprocal" and q.bias is not None
    # the packed weight is transformers' ternary weight, gamma = 1 / weight_scale
    with hf_eager():
        w_hf = bitnet.unpack_weights(hf.weight, dtype=torch.float32).numpy()
    tw = q.ternary_weight()
    np.testing.assert_array_equal(tw.ternary(), w_hf)
    np.testing.assert_array_equal(tw.scale, np.float32(1) / hf.weight_scale.numpy())


def test_fp32_logits_and_greedy_generate_match(fp32_pair):
    model, patched = fp32_pair
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 256, (2, 12), generator=gen)
    with torch.no_grad(), hf_eager():
        a = model(ids).logits
        b = patched(ids).logits
        assert b.dtype == a.dtype == torch.float32
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (a - b).abs().max()
        prompt = ids[:1, :8]
        ga = model.generate(prompt, max_new_tokens=32, do_sample=False)
        gb = patched.generate(prompt, max_new_tokens=32, do_sample=False)
    assert ga.shape == (1, 40)
    assert torch.equal(ga, gb)
    assert len(set(ga[0, 8:].tolist())) > 3  # not a degenerate repetition


def test_bf16_logits_within_the_models_own_tolerance():
    ref32 = bitnet_model(3)
    m16 = bitnet_model(3, torch.bfloat16)
    p16 = ft.patch_bitnet(copy.deepcopy(m16))
    ids = torch.randint(2, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), hf_eager():
        l32 = ref32(ids).logits
        l16 = m16(ids).logits.float()
        lp = p16(ids).logits
    assert lp.dtype == torch.bfloat16
    own = (l16 - l32).abs().max()
    assert (lp.float() - l32).abs().max() <= 2 * own, ((lp.float() - l32).abs().max(), own)


def test_patched_model_under_torch_compile(fp32_pair):
    _, patched = fp32_pair
    ids = torch.randint(2, 256, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = patched(ids).logits
        torch._dynamo.reset()
        # the whole model in one graph (fullgraph: no break at the fastemb op), traced through AOT autograd
        got = torch.compile(patched, fullgraph=True, backend="aot_eager")(ids).logits
        assert torch.equal(got, want)
        # inductor on one decoder MLP (three patched layers)
        mlp = patched.model.layers[1].mlp
        x = torch.randn(1, 5, 128)
        np.testing.assert_allclose(torch.compile(mlp, fullgraph=True)(x).numpy(), mlp(x).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_autobitlinear_offline_with_bias_and_rms_norm():
    quant = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="offline", use_rms_norm=True)
    model = bitnet_model(4, quant=quant, attention_bias=True, num_hidden_layers=1)
    assert count(model, bitnet.AutoBitLinear) == 7
    patched = ft.patch_bitnet(copy.deepcopy(model))
    assert count(patched, bitnet.AutoBitLinear) == 0 and count(patched, ft.TernaryLinear) == 7
    assert patched.model.layers[0].self_attn.q_proj.norm is not None
    ids = torch.randint(2, 256, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), hf_eager():
        a, b = model(ids).logits, patched(ids).logits
    # AutoBitLinear multiplies the dequantized float product by weight_scale (bias included): float32
    # rounding only, the codes are the same
    assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (a - b).abs().max()


def test_autobitlinear_online_needs_include_online():
    quant = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="online")
    model = bitnet_model(5, quant=quant, num_hidden_layers=1)
    with pytest.raises(ValueError, match="include_online"):
        ft.patch_bitnet(copy.deepcopy(model))
    with hf_eager():
        patched = ft.patch_bitnet(copy.deepcopy(model), include_online=True)
    assert count(patched, ft.TernaryLinear) == 7
    ids = torch.randint(2, 256, (1, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), hf_eager():
        a, b = model(ids).logits, patched(ids).logits
        # the frozen weight is transformers' WeightQuant of the master weight
        deq = bitnet.WeightQuant.apply(model.model.layers[0].mlp.up_proj.weight)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (a - b).abs().max()
    np.testing.assert_array_equal(patched.model.layers[0].mlp.up_proj.ternary_weight().dequantize(), deq.numpy())


def test_a_single_layer_and_scale_rule_divide(rng):
    layer = bitnet.BitLinear(300, 12, bias=True, dtype=torch.float32)
    wq = torch.randint(-1, 2, (12, 300))
    with torch.no_grad():
        layer.weight.copy_(bitnet.pack_weights(wq.clone()))
        layer.weight_scale.fill_(8.0)
        layer.bias.copy_(torch.randn(12))
    x = torch.from_numpy(rand_act(rng, (2, 7, 300)))
    new = ft.patch_bitnet(layer)
    assert isinstance(new, ft.TernaryLinear)
    with torch.no_grad(), hf_eager():
        y_hf = layer(x)
        y = new(x)
    assert y.shape == y_hf.shape == (2, 7, 12)
    np.testing.assert_allclose(y.numpy(), y_hf.numpy(), rtol=1e-6, atol=1e-6 * float(y_hf.abs().max()))
    # fastemb's own rule is available too (codes may differ by 1 from transformers')
    y_div = ft.patch_bitnet(layer, scale_rule="divide")(x)
    xq, s = fastemb.quantize_activations(x.reshape(-1, 300).numpy())
    want = (xq.astype(np.int64) @ wq.numpy().T).astype(np.float32) * (np.float32(1 / np.float32(8.0)) / s[:, None])
    np.testing.assert_array_equal(y_div.detach().reshape(-1, 12).numpy(), want + layer.bias.numpy())


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_inputs():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ft.patch_bitnet("not a model")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ft.patch_bitnet(None)
    with pytest.raises(ValueError, match="no transformers BitNet linear module"):
        ft.patch_bitnet(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    plain = BitNetForCausalLM(small_config(num_hidden_layers=1))  # nn.Linear layers: not BitNet-quantized
    with pytest.raises(ValueError, match="no transformers BitNet linear module"):
        ft.patch_bitnet(plain)
    model = bitnet_model(6, num_hidden_layers=1)
    with pytest.raises(ValueError, match="scale_rule"):
        ft.patch_bitnet(model, scale_rule="exact")
    with pytest.raises(TypeError, match="include_online"):
        ft.patch_bitnet(model, include_online="yes")
    # patching twice: the second call is a no-op returning the model
    patched = ft.patch_bitnet(model)
    assert ft.patch_bitnet(patched) is patched
    # weights not loaded (meta device)
    with torch.device("meta"):
        meta = bitnet.BitLinear(256, 8, bias=False, device="meta")
    with pytest.raises(ValueError, match="meta"):
        ft.patch_bitnet(meta)
    # a corrupt packed weight (code 3) names the module
    bad = bitnet_model(7, num_hidden_layers=1)
    bad.model.layers[0].mlp.up_proj.weight[0, 0] = 0xFF
    with pytest.raises(ValueError, match="up_proj"):
        ft.patch_bitnet(bad)
    # AutoBitLinear offline holding non-ternary values
    quant = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="offline")
    auto = bitnet_model(8, quant=quant, num_hidden_layers=1)
    with torch.no_grad():
        auto.model.layers[0].mlp.down_proj.weight[0, 0] = 0.5
    with pytest.raises(ValueError, match="down_proj"):
        ft.patch_bitnet(auto)


def test_ternary_linear_module_bad_inputs():
    tw = fastemb.TernaryWeight.from_ternary(np.ones((4, 8)), 0.5)
    with pytest.raises(TypeError, match="tw"):
        ft.TernaryLinear(np.ones((4, 8)))
    with pytest.raises(ValueError, match="bias"):
        ft.TernaryLinear(tw, torch.zeros(5))
    with pytest.raises(TypeError, match="bias"):
        ft.TernaryLinear(tw, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="scale_rule"):
        ft.TernaryLinear(tw, scale_rule="x")
    with pytest.raises(ValueError, match="activations"):
        ft.TernaryLinear(tw, activations="int4")
    layer = ft.TernaryLinear(tw, torch.ones(4))
    assert "packed" not in layer.state_dict()
    # a dtype cast of the model keeps gamma and the bias in float32 (the output follows x's dtype)
    x = torch.randn(3, 8).to(torch.bfloat16)
    want = layer(x.float())  # the kernels quantize bf16 x exactly as its float32 value
    layer.to(torch.bfloat16)
    assert layer.gamma.dtype == layer.bias.dtype == torch.float32 and layer.packed.dtype == torch.uint8
    got = layer(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want.to(torch.bfloat16), rtol=0, atol=0)
    with pytest.raises(ValueError, match="features"):
        layer(torch.ones(2, 9))
