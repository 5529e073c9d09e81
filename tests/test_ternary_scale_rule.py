"""The activation scale rule of the ternary int8 path: ``scale_rule='divide'`` (``127 / a``, one
float32 rounding, the default) and ``'reciprocal'`` (``(1 / a) * 127``, two roundings: torch's
``127 / tensor`` and so transformers' BitNet), with ``a = max(max|x|, eps)``.

Every backend that quantizes activations (the NumPy reference, each native CPU ISA through the raw
binding and the public API, the torch op with the native kernels and with both of its fallbacks,
fastemb.torch.BitLinear, and CUDA where a device is present) against the reference, for both rules,
and the reference against an independent float64 restatement. transformers' own quantizer is the
peer in tests/test_bitnet_transformers.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastemb
from fastemb import TernaryWeight, quantize_activations, ternary_matmul
from fastemb import ternary as tern
from fastemb._reference import ternary as ref

native = tern.native_kernels()
needs_native = pytest.mark.skipif(native is None, reason="native ternary kernels not built (NumPy fallback)")
ISAS = fastemb._backend.native_isas() if native is not None else []
RULES = ("divide", "reciprocal")
RULE_CODE = {"divide": 0, "reciprocal": 1}
DT = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
SHAPES = [(1, 1), (1, 256), (3, 257), (7, 100), (20, 1000), (33, 64)]


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def scale_f64(amax, eps, rule):
    """The two rules restated in float64 (each float32 operation = exact float64 op, then one rounding
    to float32: exact for / and * of float32 operands, since 53 >= 2 * 24 + 2)."""
    a = np.maximum(np.asarray(amax, np.float32), np.float32(eps)).astype(np.float64)
    if rule == "divide":
        return (127.0 / a).astype(np.float32)
    r = (1.0 / a).astype(np.float32).astype(np.float64)
    return (r * 127.0).astype(np.float32)


def codes_f64(x32, s):
    """clamp(rint(float32(x * s))): the float64 product of two float32 values is exact, rounded once to float32."""
    prod = (x32.astype(np.float64) * s.astype(np.float64)[:, None]).astype(np.float32)
    return np.clip(np.rint(prod.astype(np.float64)), -128, 127).astype(np.int8)


def rand_x(rng, m, k, dtype=np.float32):
    # rows of very different magnitudes, plus an exact tie at a code .5 for the first row
    x = rng.standard_normal((m, k)) * np.exp(rng.uniform(-8, 8, (m, 1)))
    if k > 1:
        x[0, 1] = 2.5 / 127 * np.abs(x[0]).max()
    return x.astype(dtype)


# ---- the reference ------------------------------------------------------------------------------

def test_reference_rules_match_the_float64_restatement(rng):
    amax = np.abs(rng.standard_normal(200_000)).astype(np.float32) * np.exp(rng.uniform(-20, 20, 200_000)).astype(
        np.float32)
    amax[:5] = [0.0, 1e-7, 1e-5, 127.0, 3.0]
    for rule in RULES:
        np.testing.assert_array_equal(bits(ref.activation_scale(amax, 1e-5, rule)), bits(scale_f64(amax, 1e-5, rule)))
    d = ref.activation_scale(amax, 1e-5, "divide")
    r = ref.activation_scale(amax, 1e-5, "reciprocal")
    differ = d != r
    # the known effect: about a quarter of the scales differ, each by exactly 1 ulp
    assert 0.15 < differ.mean() < 0.35, differ.mean()
    assert (np.abs(bits(d)[differ].astype(np.int64) - bits(r)[differ]) == 1).all()
    # eps is the floor of amax under both rules
    assert d[0] == d[1] == d[2] == np.float32(127) / np.float32(1e-5)
    assert r[0] == r[1] == r[2] == (np.float32(1) / np.float32(1e-5)) * np.float32(127)


@pytest.mark.parametrize("rule", RULES)
def test_reference_quantizer_codes(rng, rule):
    x = rand_x(rng, 300, 77)
    xq, s = ref.quantize_activations(x, scale_rule=rule)
    np.testing.assert_array_equal(bits(s), bits(scale_f64(np.abs(x).max(axis=1), ref.EPS, rule)))
    np.testing.assert_array_equal(xq, codes_f64(x, s))


def test_default_rule_is_divide_same_bits(rng):
    x = rand_x(rng, 50, 300)
    for got, want in zip(quantize_activations(x), quantize_activations(x, scale_rule="divide")):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(bits(quantize_activations(x)[1]),
                                  bits(np.float32(127) / np.abs(x).max(axis=1).astype(np.float32)))
    # and the two rules do give different scales somewhere on 400 rows (a test that can fail)
    x = rand_x(rng, 400, 64)
    assert (quantize_activations(x)[1] != quantize_activations(x, scale_rule="reciprocal")[1]).any()


# ---- native kernels, every ISA -----------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rule", RULES)
def test_every_isa_quantizer_raw_binding(rng, isa, rule):
    for m, k in SHAPES + [(2, 0)]:
        x = rand_x(rng, m, k)
        kp = ref.padded_k(k)
        for dtype in ("float16", "float32", "float64", "bfloat16"):
            if dtype == "bfloat16":
                xb = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bf16 bits
                xin, x32 = xb, (xb.astype(np.uint32) << 16).view(np.float32)
            else:
                xin = np.ascontiguousarray(x.astype(dtype))
                x32 = xin.astype(np.float32)
            xq = np.full((m, kp), 77, np.int8)
            xs = np.full(m, np.nan, np.float32)
            native.ternary_quantize_activations(xin.ctypes.data, DT[dtype], m, k, kp, ref.EPS, xq.ctypes.data,
                                                xs.ctypes.data, isa, scale_rule=RULE_CODE[rule])
            rq, rs = ref.quantize_activations(x32, kp=kp, scale_rule=rule)
            np.testing.assert_array_equal(xq, rq, err_msg=f"{isa} {dtype} {m}x{k}")
            np.testing.assert_array_equal(bits(xs), bits(rs), err_msg=f"{isa} {dtype} {m}x{k}")


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rule", RULES)
def test_every_isa_public_api(rng, isa, rule):
    for m, k in SHAPES:
        x = rand_x(rng, m, k, np.float64)
        for got, want in zip(tern._quantize_activations(x, ref.EPS, isa, rule),
                             ref.quantize_activations(x, scale_rule=rule)):
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {m}x{k}")
        # GEMV and GEMM forms (AVX2: GEMM from 32 rows; AVX-512 VNNI: multi-row GEMV tiles below
        # 96 rows), per-tensor and per-row gamma, with a bias
        n = 37
        gamma = rng.uniform(0.01, 2, n if m % 2 else 1).astype(np.float32)
        tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (n, k)), gamma)
        b = rng.standard_normal(n).astype(np.float32)
        xq, s = ref.quantize_activations(x, scale_rule=rule)
        want, _ = ref.matmul_int8(xq, s, tw.packed, k, tw.scale, b)
        np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", b, ref.EPS, isa, rule), want,
                                      err_msg=f"{isa} {m}x{k}")
        np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", b, ref.EPS, "numpy", rule), want)


def test_public_matmul_uses_the_rule(rng):
    # a row whose two scales differ: the outputs differ (the rule reaches the epilogue), and each
    # equals the reference with that rule
    x = rand_x(rng, 64, 300)
    tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (16, 300)), 0.5)
    outs = {}
    for rule in RULES:
        xq, s = ref.quantize_activations(x, scale_rule=rule)
        outs[rule] = ternary_matmul(x, tw, scale_rule=rule)
        np.testing.assert_array_equal(outs[rule], ref.matmul_int8(xq, s, tw.packed, 300, tw.scale)[0])
    rows = ref.quantize_activations(x)[1] != ref.quantize_activations(x, scale_rule="reciprocal")[1]
    assert rows.any()
    assert (outs["divide"][rows] != outs["reciprocal"][rows]).any()
    # the float path ignores the rule
    np.testing.assert_array_equal(ternary_matmul(x, tw, "float", scale_rule="reciprocal"),
                                  ternary_matmul(x, tw, "float"))


# ---- torch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_torch_op_and_fallbacks(rng, rule, monkeypatch):
    torch = pytest.importorskip("torch")
    import fastemb.torch  # noqa: F401
    from fastemb.torch import _ternary as tt

    for m, k, n in [(1, 300, 9), (5, 1, 4), (40, 513, 21)]:
        x32 = rand_x(rng, m, k)
        gamma = rng.uniform(0.01, 2, n).astype(np.float32)
        tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (n, k)), gamma)
        b = rng.standard_normal(n).astype(np.float32)
        packed, scale = torch.from_numpy(tw.packed), torch.from_numpy(tw.scale)
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            x = torch.from_numpy(x32).to(dtype)
            xr = x.to(torch.float32).numpy()  # what every kernel quantizes (exact for bf16 / f16)
            rq, rs = ref.quantize_activations(xr, scale_rule=rule)
            want, _ = ref.matmul_int8(rq, rs, tw.packed, k, tw.scale, b)
            tq, ts = tt.quantize_activations_torch(x, scale_rule=rule)
            np.testing.assert_array_equal(tq.numpy(), rq)
            np.testing.assert_array_equal(bits(ts.numpy()), bits(rs))
            got = fastemb.torch.ternary_linear(x, packed, scale, k, torch.from_numpy(b), scale_rule=rule)
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{dtype} {m}x{k}")
            for fallback in (tt._linear_torch, tt._linear_numpy):
                got = fallback(x, packed, scale, k, torch.from_numpy(b), "int8", ref.EPS, rule)
                np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{fallback.__name__} {dtype}")
    # the op without native kernels (the NumPy fallback path inside the op)
    monkeypatch.setattr(tern, "native_kernels", lambda: None)
    got = fastemb.torch.ternary_linear(torch.from_numpy(x32), packed, scale, k, None, scale_rule=rule)
    rq, rs = ref.quantize_activations(x32, scale_rule=rule)
    np.testing.assert_array_equal(got.numpy(), ref.matmul_int8(rq, rs, tw.packed, k, tw.scale)[0])


# torch 2.13's torch/utils/mkldnn.py uses the deprecated torch.jit.script_method when inductor is first imported
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_op_opcheck_and_compile(rng):
    torch = pytest.importorskip("torch")
    import fastemb.torch  # noqa: F401

    tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (12, 300)), 0.3)
    packed, scale = torch.from_numpy(tw.packed), torch.from_numpy(tw.scale)
    x = torch.from_numpy(rand_x(rng, 6, 300)).requires_grad_(True)
    torch.library.opcheck(torch.ops.fastemb.ternary_linear.default,
                          (x, packed, scale, 300, None, "int8", ref.EPS, "reciprocal"))

    def f(x):
        return fastemb.torch.ternary_linear(x, packed, scale, 300, scale_rule="reciprocal")

    got = torch.compile(f, fullgraph=True)(x.detach())
    rq, rs = ref.quantize_activations(x.detach().numpy(), scale_rule="reciprocal")
    np.testing.assert_array_equal(got.numpy(), ref.matmul_int8(rq, rs, tw.packed, 300, tw.scale)[0])


def test_bitlinear_scale_rule(rng):
    torch = pytest.importorskip("torch")
    from fastemb.torch import BitLinear

    torch.manual_seed(int(rng.integers(1 << 31)))
    layer = BitLinear(300, 10, scale_rule="reciprocal")
    assert "scale_rule='reciprocal'" in repr(layer)
    x = torch.from_numpy(rand_x(rng, 40, 300))
    tw = layer.to_ternary_weight()
    layer.eval()
    with torch.no_grad():
        got = layer(x)
    rq, rs = ref.quantize_activations(x.numpy(), scale_rule="reciprocal")
    want, _ = ref.matmul_int8(rq, rs, tw.packed, 300, tw.scale, layer.bias.detach().numpy())
    np.testing.assert_array_equal(got.numpy(), want)
    # train mode: the fake quantizer uses the same rule
    layer.train()
    from fastemb.torch import _ternary as tt
    fq = tt.fake_quantize_activations(x, scale_rule="reciprocal")
    np.testing.assert_array_equal(fq.numpy(), (rq.astype(np.float32) / rs[:, None]).astype(np.float32))
    lin = torch.nn.Linear(300, 10)
    assert BitLinear.from_linear(lin, scale_rule="reciprocal").scale_rule == "reciprocal"


# ---- bad input --------------------------------------------------------------------------------

def test_bad_scale_rule(rng):
    x = rand_x(rng, 2, 10)
    tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (3, 10)), 1.0)
    for bad, exc in (("recip", ValueError), ("", ValueError), ("DIVIDE", ValueError), (1, TypeError),
                     (None, TypeError)):
        with pytest.raises(exc, match="scale_rule"):
            quantize_activations(x, scale_rule=bad)
        with pytest.raises(exc, match="scale_rule"):
            ternary_matmul(x, tw, scale_rule=bad)
        with pytest.raises(exc, match="scale_rule"):
            ternary_matmul(x, tw, "float", scale_rule=bad)
    with pytest.raises(ValueError, match="scale_rule"):
        ref.activation_scale(np.ones(2, np.float32), 1e-5, "nope")


@needs_native
def test_bad_scale_rule_raw_binding():
    xq = np.zeros((1, 256), np.int8)
    xs = np.zeros(1, np.float32)
    x = np.ones((1, 10), np.float32)
    for code in (-1, 2, 99):
        with pytest.raises(ValueError, match="scale_rule"):
            native.ternary_quantize_activations(x.ctypes.data, 0, 1, 10, 256, 1e-5, xq.ctypes.data, xs.ctypes.data,
                                                "", scale_rule=code)


def test_bad_scale_rule_torch(rng):
    torch = pytest.importorskip("torch")
    import fastemb.torch
    from fastemb.torch import BitLinear

    tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (4, 10)), 1.0)
    packed, scale = torch.from_numpy(tw.packed), torch.from_numpy(tw.scale)
    with pytest.raises(ValueError, match="scale_rule"):
        fastemb.torch.ternary_linear(torch.ones(2, 10), packed, scale, 10, scale_rule="rcp")
    with pytest.raises(ValueError, match="scale_rule"):
        BitLinear(10, 4, scale_rule="rcp")


# ---- CUDA -------------------------------------------------------------------------------------

def _cuda():
    try:
        import torch
    except ImportError:
        return None
    G = tern.cuda_kernels()
    return G if G is not None and torch.cuda.is_available() else None


@pytest.mark.cuda
@pytest.mark.skipif(_cuda() is None, reason="needs a CUDA device, torch and fastemb._C_cuda")
@pytest.mark.parametrize("rule", RULES)
def test_cuda_quantizer_and_op_match_the_reference(rng, rule):
    import torch

    import fastemb.torch

    G = _cuda()
    for m, k in SHAPES + [(2, 5000)]:
        x = rand_x(rng, m, k)
        kp = ref.padded_k(k)
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            xt = torch.from_numpy(x).to(dtype)
            xc = xt.cuda()
            xq = torch.empty((m, kp), dtype=torch.int8, device="cuda")
            xs = torch.empty(m, dtype=torch.float32, device="cuda")
            G.ternary_quantize_activations(xc.data_ptr(), DT[str(dtype).split(".")[1]], m, k, kp, ref.EPS,
                                           xq.data_ptr(), xs.data_ptr(), torch.cuda.current_stream().cuda_stream,
                                           scale_rule=RULE_CODE[rule])
            torch.cuda.synchronize()
            rq, rs = ref.quantize_activations(xt.to(torch.float32).numpy(), kp=kp, scale_rule=rule)
            np.testing.assert_array_equal(xq.cpu().numpy(), rq, err_msg=f"{dtype} {m}x{k}")
            np.testing.assert_array_equal(bits(xs.cpu().numpy()), bits(rs), err_msg=f"{dtype} {m}x{k}")
        tw = TernaryWeight.from_ternary(rng.integers(-1, 2, (19, k)), 0.7)
        got = fastemb.torch.ternary_linear(torch.from_numpy(x).cuda(), torch.from_numpy(tw.packed).cuda(),
                                           torch.from_numpy(tw.scale).cuda(), k, scale_rule=rule)
        rq, rs = ref.quantize_activations(x, scale_rule=rule)
        np.testing.assert_array_equal(got.cpu().numpy(), ref.matmul_int8(rq, rs, tw.packed, k, tw.scale)[0])
