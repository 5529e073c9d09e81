"""Ternary (1.58-bit) NumPy API: quantizer formulas, the I2 packed layout, converters (Hugging
Face BitNet, llama.cpp TQ2_0 / TQ1_0 against the `gguf` package), the integer path bit for bit
against the reference (and every native ISA when the kernels are built), the float path within
tolerance, and bad inputs."""
import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastemb
from fastemb import TernaryWeight, quantize_activations, quantize_ternary, ternary_matmul
from fastemb import ternary as tern
from fastemb._reference import ternary as ref

native = tern.native_kernels()
needs_native = pytest.mark.skipif(native is None, reason="native ternary kernels not built (NumPy fallback)")
ISAS = fastemb._backend.native_isas() if native is not None else []


def rand_ternary(rng, n, k, p_zero=0.3):
    return rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k), p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2])


def rand_weight(rng, n, k, per_row=False):
    gamma = rng.uniform(0.01, 2.0, n if per_row else 1).astype(np.float32)
    return TernaryWeight.from_ternary(rand_ternary(rng, n, k), gamma)


# ---- quantizer formulas -------------------------------------------------------------------------

def test_weight_quantizer_rounds_half_to_even_and_clamps():
    # gamma = 2 exactly: w / gamma lands on the listed values
    ratios = np.array([0.49, 0.5, 0.51, 1.5, 2.5, -0.5, -1.49, -0.51, 100.0, -7.0, 0.0, -1.5], np.float32)
    expected = np.array([0, 0, 1, 1, 1, 0, -1, -1, 1, -1, 0, -1], np.int8)
    tw = quantize_ternary((ratios * 2).reshape(2, 6), scale=2.0)
    np.testing.assert_array_equal(tw.ternary().reshape(-1), expected)
    np.testing.assert_array_equal(tw.scale, [2.0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_absmean_and_absmedian_follow_bitnet(rng, dtype):
    w = (rng.standard_normal((37, 300)) * rng.uniform(0.1, 3, (37, 1))).astype(dtype)
    a = np.abs(w.astype(np.float32))
    for method, per_row in [("absmean", False), ("absmean", True), ("absmedian", False), ("absmedian", True)]:
        tw = quantize_ternary(w, scale=method, granularity="row" if per_row else "tensor")
        axis = 1 if per_row else None
        g = a.mean(axis=axis, dtype=np.float64) if method == "absmean" else np.median(a, axis=axis)
        g = np.atleast_1d(np.asarray(g, np.float32))
        np.testing.assert_array_equal(tw.scale, g)
        # BitNet: W_q = clamp(round(W / gamma), -1, 1), round half to even
        expected = np.clip(np.round(w.astype(np.float32) / g.reshape(-1, 1)), -1, 1)
        np.testing.assert_array_equal(tw.ternary(), expected.astype(np.int8))
        assert tw.granularity == ("row" if per_row else "tensor")


def test_absmedian_even_count_averages_the_middle_pair():
    w = np.array([[1.0, -3.0, 2.0, -8.0]], np.float32)
    assert quantize_ternary(w, "absmedian").scale[0] == 2.5


def test_all_zero_and_tiny_weights_use_eps():
    with np.errstate(all="raise"):
        tw = quantize_ternary(np.zeros((3, 10), np.float32))
        assert tw.scale[0] == 0 and not tw.ternary().any()
        tw = quantize_ternary(np.zeros((3, 10), np.float32), "absmedian", "row")
        np.testing.assert_array_equal(tw.scale, np.zeros(3))
        # gamma = 4e-6 < eps = 1e-5: W / eps = 0.4 -> 0; a larger eps floor changes nothing else
        w = np.full((2, 4), 4e-6, np.float32)
        assert not quantize_ternary(w).ternary().any()
        assert quantize_ternary(w, eps=1e-6).ternary().all()
    np.testing.assert_array_equal(quantize_ternary(np.zeros((2, 3)), "absmean").dequantize(), np.zeros((2, 3)))


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("scale", ["absmean", "absmedian", 0.5])
def test_quantize_empty_weights(shape, granularity, scale):
    tw = quantize_ternary(np.zeros(shape, np.float32), scale, granularity)
    assert tw.shape == shape and tw.ternary().shape == shape and np.isfinite(tw.scale).all()
    y = ternary_matmul(np.ones((2, shape[1]), np.float32), tw)
    np.testing.assert_array_equal(y, np.zeros((2, shape[0]), np.float32))


def test_explicit_scale_and_per_row_scale(rng):
    w = rng.standard_normal((4, 50)).astype(np.float32)
    g = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    tw = quantize_ternary(w, scale=g, granularity="row")
    np.testing.assert_array_equal(tw.ternary(), np.clip(np.rint(w / g[:, None]), -1, 1))
    assert tw.per_row and tw.scale.shape == (4,)
    tw = quantize_ternary(w, scale=0.7, granularity="row")
    np.testing.assert_array_equal(tw.scale, np.full(4, 0.7, np.float32))


def test_activation_quantizer_rounds_half_to_even_and_clamps():
    # max|x| = 127: s = 1 exactly
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, -127.0, 126.5]], np.float32)
    xq, s = quantize_activations(x)
    np.testing.assert_array_equal(xq, [[127, 0, 2, 2, 0, -2, -127, 126]])
    np.testing.assert_array_equal(s, [1.0])
    # absmax scaling maps max|x| to +-127: -128 is reachable only through rounding ties never hit,
    # so the clamp bounds are checked on random data as [-127, 127] plus the reference's clip.
    rng = np.random.default_rng(0)
    xq, s = quantize_activations(rng.standard_normal((20, 100)) * 50)
    assert xq.min() >= -128 and xq.max() <= 127 and (np.abs(xq).max(axis=1) == 127).all()
    # all-zero row: s = 127 / eps, zeros, no NaN
    xq, s = quantize_activations(np.zeros((2, 5), np.float16))
    assert not xq.any() and np.allclose(s, 127 / 1e-5)


def test_activation_quantizer_1d_and_dtypes(rng):
    x = rng.standard_normal(77)
    xq, s = quantize_activations(x)
    assert xq.shape == (77,) and xq.dtype == np.int8 and s.shape == (1,) and s.dtype == np.float32
    for dtype in (np.float16, np.float32, np.float64):
        xd = x.reshape(7, 11).astype(dtype)
        rq, rs = ref.quantize_activations(xd)
        gq, gs = quantize_activations(xd)
        np.testing.assert_array_equal(gq, rq)
        np.testing.assert_array_equal(gs, rs)


# ---- packed layout ------------------------------------------------------------------------------

def test_packed_layout_matches_the_header(rng):
    wq = rand_ternary(rng, 3, 600)
    packed = TernaryWeight.from_ternary(wq).packed
    assert packed.shape == (3, 768 // 4)
    for i in range(3):
        for c in range(768):
            b, r = divmod(c, 256)
            s, j = divmod(r, 64)
            code = (int(packed[i, b * 64 + j]) >> (2 * s)) & 3
            assert code == (wq[i, c] + 1 if c < 600 else 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 9), k=st.integers(0, 700), seed=st.integers(0, 2**32 - 1), per_row=st.booleans())
def test_pack_roundtrip(n, k, seed, per_row):
    rng = np.random.default_rng(seed)
    wq = rand_ternary(rng, n, k)
    g = rng.uniform(0.1, 2, n if per_row and n else 1).astype(np.float32)
    tw = TernaryWeight.from_ternary(wq, g)
    assert tw.shape == (n, k) and tw.kp == ref.padded_k(k)
    np.testing.assert_array_equal(tw.ternary(), wq)
    np.testing.assert_array_equal(tw.dequantize(), wq.astype(np.float32) * g.reshape(-1, 1))
    tw2 = TernaryWeight(tw.packed.copy(), tw.scale, k)
    np.testing.assert_array_equal(tw2.ternary(), wq)
    assert tw.nbytes == tw.packed.nbytes + tw.scale.nbytes


def test_to_dict_save_load_repr(rng, tmp_path):
    tw = rand_weight(rng, 5, 300, per_row=True)
    back = TernaryWeight.from_dict(tw.to_dict())
    np.testing.assert_array_equal(back.packed, tw.packed)
    np.testing.assert_array_equal(back.scale, tw.scale)
    tw.save(tmp_path / "w.npz")
    back = TernaryWeight.load(tmp_path / "w.npz")
    assert back.shape == (5, 300) and back.per_row
    np.testing.assert_array_equal(back.ternary(), tw.ternary())
    assert "TernaryWeight(shape=(5, 300)" in repr(tw) and "row" in repr(tw)
    bad = tw.to_dict()
    bad["format"] = np.array("other")
    with pytest.raises(ValueError, match="format"):
        TernaryWeight.from_dict(bad)
    bad = tw.to_dict()
    bad["shape"] = np.array([6, 300])
    with pytest.raises(ValueError, match="n=6"):
        TernaryWeight.from_dict(bad)


def test_non_ternary_values_and_bad_packed_raise(rng):
    with pytest.raises(ValueError, match="values.*ternary.*2"):
        TernaryWeight.from_ternary(np.array([[1, 0, 2]]))
    with pytest.raises(ValueError, match="values.*0.5"):
        TernaryWeight.from_ternary(np.array([[1.0, 0.5]]))
    with pytest.raises(TypeError, match="values"):
        TernaryWeight.from_ternary(np.array([["a"]]))
    with pytest.raises(ValueError, match="values.*2-D"):
        TernaryWeight.from_ternary(np.array([1, 0]))
    packed = TernaryWeight.from_ternary(rand_ternary(rng, 2, 256)).packed.copy()
    packed[1, 5] |= 3  # code 3 at weight [1, 5]
    with pytest.raises(ValueError, match=r"packed: invalid 2-bit code 3 at weight \[1, 5\]"):
        TernaryWeight(packed, 1.0, 256)
    with pytest.raises(TypeError, match="packed.*uint8"):
        TernaryWeight(packed.astype(np.int8), 1.0, 256)
    with pytest.raises(ValueError, match="packed must have shape"):
        TernaryWeight(np.ones((2, 10), np.uint8), 1.0, 256)
    ok = TernaryWeight.from_ternary(rand_ternary(rng, 2, 200)).packed.copy()
    ok[0, 63] &= 0x3F  # padding weight 255 -> code 0
    with pytest.raises(ValueError, match="padding"):
        TernaryWeight(ok, 1.0, 200)
    with pytest.raises(ValueError, match="scale"):
        TernaryWeight.from_ternary(np.zeros((2, 3)), np.nan)
    with pytest.raises(ValueError, match="scale"):
        TernaryWeight.from_ternary(np.zeros((2, 3)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="scale"):
        TernaryWeight.from_ternary(np.zeros((2, 3)), -1.0)


def test_quantize_ternary_bad_inputs(rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="w must be a numpy"):
        quantize_ternary(w.tolist())
    with pytest.raises(TypeError, match="w must be float"):
        quantize_ternary(w.astype(np.int32))
    with pytest.raises(ValueError, match="w must be 2-D"):
        quantize_ternary(w[0])
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="w must be finite"):
        quantize_ternary(bad)
    with pytest.raises(ValueError, match="scale"):
        quantize_ternary(w, "absmax")
    with pytest.raises(ValueError, match="scale"):
        quantize_ternary(w, -1.0)
    with pytest.raises(ValueError, match="scale"):
        quantize_ternary(w, np.ones(3), granularity="tensor")
    with pytest.raises(ValueError, match="granularity"):
        quantize_ternary(w, granularity="block")
    with pytest.raises(ValueError, match="eps"):
        quantize_ternary(w, eps=0)


# ---- Hugging Face BitNet ------------------------------------------------------------------------

def hf_pack_as_transformers(wq):
    """transformers' integrations/bitnet.py pack_weights, restated with the same loop bounds."""
    n = wq.shape[0]
    row_dim = (n + 3) // 4
    packed = np.zeros((row_dim, wq.shape[1]), np.uint8)
    unpacked = (wq.astype(np.int16) + 1).astype(np.uint8)
    for i in range(min(4, n // row_dim + 1)):
        start, end = i * row_dim, min(i * row_dim + row_dim, n)
        packed[: end - start] |= unpacked[start:end] << (2 * i)
    return packed


def hf_unpack_as_transformers(packed):
    rows = packed.shape[0]
    out = np.zeros((rows * 4, packed.shape[1]), np.uint8)
    for i in range(4):
        out[i * rows:(i + 1) * rows] = (packed & (3 << (2 * i))) >> (2 * i)
    return out.astype(np.int16) - 1


@pytest.mark.parametrize("n", [4, 8, 12, 5, 7, 1])
def test_hf_bitnet_layout_and_roundtrip(rng, n):
    wq = rand_ternary(rng, n, 37)
    tw = TernaryWeight.from_ternary(wq, 0.25)
    packed, ws = tw.to_hf_bitnet()
    np.testing.assert_array_equal(packed, hf_pack_as_transformers(wq))
    np.testing.assert_array_equal(hf_unpack_as_transformers(packed)[:n], wq)
    assert ws.dtype == np.float32 and ws.shape == (1,) and ws[0] == 4.0  # 1 / gamma
    back = TernaryWeight.from_hf_bitnet(packed, ws, out_features=n)
    np.testing.assert_array_equal(back.ternary(), wq)
    assert back.scale[0] == 0.25
    back = TernaryWeight.from_hf_bitnet(*tw.to_hf_bitnet(inverse_scale=False), out_features=n, inverse_scale=False)
    assert back.scale[0] == 0.25


def test_hf_bitnet_scale_convention_reproduces_transformers_forward(rng):
    # transformers' BitLinear: y = F.linear(x_q, W_q) / (input_scale * weight_scale)
    tw = rand_weight(rng, 16, 300)
    packed, ws = tw.to_hf_bitnet()
    x = rng.standard_normal((5, 300)).astype(np.float32)
    xq, s = ref.quantize_activations(x)
    w_hf = hf_unpack_as_transformers(packed).astype(np.float32)
    y_hf = (xq.astype(np.float32) @ w_hf.T) / (s[:, None] * ws)
    np.testing.assert_allclose(ternary_matmul(x, tw), y_hf, rtol=1e-5, atol=1e-5)


def test_hf_bitnet_bad_inputs(rng):
    packed, ws = rand_weight(rng, 8, 10).to_hf_bitnet()
    with pytest.raises(TypeError, match="weight.*uint8"):
        TernaryWeight.from_hf_bitnet(packed.astype(np.int8), ws)
    with pytest.raises(ValueError, match="out_features=9"):
        TernaryWeight.from_hf_bitnet(packed, ws, out_features=9)
    bad = packed.copy()
    bad[0, 0] = 0xFF
    with pytest.raises(ValueError, match="weight: invalid 2-bit code 3"):
        TernaryWeight.from_hf_bitnet(bad, ws)
    with pytest.raises(ValueError, match="weight_scale"):
        TernaryWeight.from_hf_bitnet(packed, np.zeros(1))
    with pytest.raises(ValueError, match="inverse_scale"):
        TernaryWeight.from_ternary(np.zeros((4, 3)), 0.0).to_hf_bitnet()


# ---- llama.cpp TQ2_0 / TQ1_0 against the gguf package --------------------------------------------

try:
    from gguf import GGMLQuantizationType as QT
    from gguf import quants as gq
    GGUF_CASES = [(QT.TQ2_0, "tq2_0"), (QT.TQ1_0, "tq1_0")]
except ImportError:  # the oracle is a test extra; only these tests skip without it
    gq = None
    GGUF_CASES = []
needs_gguf = pytest.mark.skipif(gq is None, reason="needs the gguf package (test extra)")


@pytest.mark.parametrize("qtype,name", GGUF_CASES)
@pytest.mark.parametrize("per_row", [False, True])
def test_gguf_export_matches_the_gguf_quantizer(rng, qtype, name, per_row):
    wq = rand_ternary(rng, 6, 768)
    wq[2, 256:512] = 0  # an all-zero block: d = 0 as llama.cpp writes it
    wq[4] = 0  # an all-zero row
    g = rng.uniform(0.01, 3.0, 6 if per_row else 1).astype(np.float16).astype(np.float32)
    tw = TernaryWeight.from_ternary(wq, g)
    data = getattr(tw, f"to_gguf_{name}")()
    expected = gq.quantize(tw.dequantize(), qtype)
    assert data.dtype == np.uint8 and data.shape == expected.shape
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(gq.dequantize(data, qtype), tw.dequantize())
    back = getattr(TernaryWeight, f"from_gguf_{name}")(data)
    np.testing.assert_array_equal(back.ternary(), wq)
    np.testing.assert_array_equal(back.gamma()[[0, 1, 2, 3, 5]], tw.gamma()[[0, 1, 2, 3, 5]])
    assert back.per_row == per_row


@pytest.mark.parametrize("qtype,name", GGUF_CASES)
def test_gguf_import_of_gguf_quantized_weights(rng, qtype, name):
    # a BitNet weight as llama.cpp's converter sees it: ternary x per-tensor gamma, quantized by gguf
    wq = rand_ternary(rng, 5, 512)
    gamma = np.float32(0.0371)
    data = gq.quantize(wq.astype(np.float32) * gamma, qtype)
    tw = getattr(TernaryWeight, f"from_gguf_{name}")(data.reshape(-1), shape=(5, 512))
    np.testing.assert_array_equal(tw.ternary(), wq)
    assert tw.scale.shape == (1,) and tw.scale[0] == np.float32(np.float16(gamma))
    # gamma keeps float16 precision only: the round trip is exact from then on
    np.testing.assert_array_equal(getattr(tw, f"to_gguf_{name}")(), data)


@pytest.mark.parametrize("qtype,name", GGUF_CASES)
def test_gguf_bad_inputs(rng, qtype, name):
    tw = rand_weight(rng, 3, 300)
    with pytest.raises(ValueError, match="multiple of 256"):
        getattr(tw, f"to_gguf_{name}")()
    w = rng.standard_normal((2, 512)).astype(np.float32)  # not ternary: per-block d differ
    with pytest.raises(ValueError, match="different scales"):
        getattr(TernaryWeight, f"from_gguf_{name}")(gq.quantize(w, qtype))
    with pytest.raises(TypeError, match="data"):
        getattr(TernaryWeight, f"from_gguf_{name}")(np.zeros((2, 66), np.int8))
    with pytest.raises(ValueError, match="data"):
        getattr(TernaryWeight, f"from_gguf_{name}")(np.zeros((2, 65), np.uint8))
    with pytest.raises(ValueError, match="fit float16"):
        getattr(TernaryWeight.from_ternary(np.ones((1, 256)), 1e6), f"to_gguf_{name}")()


@needs_gguf
def test_tq2_0_invalid_code_raises():
    data = gq.quantize(np.ones((1, 256), np.float32), gq.GGMLQuantizationType.TQ2_0)
    data[0, 0] = 0xFF
    with pytest.raises(ValueError, match="data: invalid 2-bit code 3"):
        TernaryWeight.from_gguf_tq2_0(data)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 11), k=st.sampled_from([1, 37, 256, 512]), seed=st.integers(0, 2**32 - 1),
       per_row=st.booleans())
def test_converters_roundtrip(n, k, seed, per_row):
    rng = np.random.default_rng(seed)
    wq = rand_ternary(rng, n, k, p_zero=float(rng.uniform(0, 1)))
    g = rng.uniform(0.01, 4, n if per_row else 1).astype(np.float16).astype(np.float32)  # float16-exact
    tw = TernaryWeight.from_ternary(wq, g)
    back = TernaryWeight.from_hf_bitnet(*tw.to_hf_bitnet(inverse_scale=False), out_features=n, inverse_scale=False)
    np.testing.assert_array_equal(back.ternary(), wq)
    np.testing.assert_array_equal(back.scale, tw.scale)
    if k % 256 == 0:
        for name in ("tq2_0", "tq1_0"):
            back = getattr(TernaryWeight, f"from_gguf_{name}")(getattr(tw, f"to_gguf_{name}")(), granularity="row")
            np.testing.assert_array_equal(back.ternary(), wq)
            used = (wq != 0).any(axis=1)  # an all-zero row's gamma is not recoverable (llama.cpp writes d = 0)
            np.testing.assert_array_equal(back.gamma()[used], tw.gamma()[used])


# ---- matmul -------------------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (3, 255, 7), (4, 256, 64), (33, 257, 5), (2, 1000, 17), (5, 512, 1)]


def int_reference(x, tw, bias, scale_rule="divide"):
    """Independent restatement: int64 dot of the quantized operands, then the kernel's float32 ops."""
    xq, s = ref.quantize_activations(x, scale_rule=scale_rule)
    acc = xq.astype(np.int64) @ tw.ternary().astype(np.int64).T
    out = acc.astype(np.float32) * (tw.gamma()[None, :] / s[:, None])
    if bias is not None:
        out = out + bias.astype(np.float32)
    return out.astype(np.float32), acc


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_int8_path_bit_exact(rng, m, k, n, per_row):
    tw = rand_weight(rng, n, k, per_row)
    x = (rng.standard_normal((m, k)) * np.exp(rng.standard_normal((m, 1)))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for b in (None, bias):
        expected, acc = int_reference(x, tw, b)
        out_ref, acc_ref = ref.matmul_int8(*ref.quantize_activations(x, kp=tw.kp), tw.packed, k, tw.scale, b)
        np.testing.assert_array_equal(acc_ref, acc)
        np.testing.assert_array_equal(out_ref, expected)
        got = ternary_matmul(x, tw, bias=b)
        assert got.dtype == np.float32 and got.shape == (m, n)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", b, ref.EPS, "numpy"), expected)


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_float_path_within_tolerance(rng, m, k, n, per_row):
    tw = rand_weight(rng, n, k, per_row)
    x = rng.standard_normal((m, k))
    bias = rng.standard_normal(n)
    exact = x.astype(np.float32).astype(np.float64) @ tw.dequantize(np.float64).T + bias.astype(np.float32)
    for dtype in (np.float16, np.float32, np.float64):
        xd = x.astype(dtype)
        exact = xd.astype(np.float32).astype(np.float64) @ tw.dequantize(np.float64).T + bias.astype(np.float32)
        got = ternary_matmul(xd, tw, "float", bias)
        scale = np.abs(xd.astype(np.float64)) @ np.abs(tw.dequantize(np.float64)).T + np.abs(bias)
        assert np.all(np.abs(got - exact) <= 1e-6 * k * scale + 1e-30)


def test_int8_close_to_float(rng):
    tw = rand_weight(rng, 40, 512)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    y8, yf = ternary_matmul(x, tw), ternary_matmul(x, tw, "float")
    assert np.abs(y8 - yf).max() < 0.02 * np.abs(yf).max()


def tie_rows(rng, m, k):
    """Rows whose scaled values land exactly on .5 (max|x| = 2 * 127, so s = 0.5)."""
    x = (2.0 * (rng.integers(-127, 127, (m, k)) + 0.5)).astype(np.float32)
    x[:, 0] = 254.0
    return x


def test_ties_round_half_to_even_in_every_backend(rng):
    x = tie_rows(rng, 5, 300)
    xq, s = quantize_activations(x)
    np.testing.assert_array_equal(s, np.full(5, 0.5, np.float32))
    np.testing.assert_array_equal(xq, np.rint(x * 0.5).astype(np.int8))
    assert (np.abs(x * 0.5 - np.trunc(x * 0.5)) == 0.5).mean() > 0.9  # nearly all ties
    tw = rand_weight(rng, 9, 300)
    np.testing.assert_array_equal(ternary_matmul(x, tw), int_reference(x, tw, None)[0])
    for isa in ISAS:
        np.testing.assert_array_equal(tern._quantize_activations(x, ref.EPS, isa)[0], xq, err_msg=isa)
        np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", None, ref.EPS, isa), int_reference(x, tw, None)[0], err_msg=isa)


def test_matmul_1d_empty_and_dtypes(rng):
    tw = rand_weight(rng, 9, 130)
    x = rng.standard_normal((4, 130))
    y = ternary_matmul(x, tw)
    np.testing.assert_array_equal(ternary_matmul(x[2], tw), y[2])
    assert ternary_matmul(x[2], tw).shape == (9,)
    for dtype in (np.float16, np.float32):
        np.testing.assert_array_equal(ternary_matmul(x.astype(dtype), tw),
                                      int_reference(x.astype(dtype), tw, None)[0])
    assert ternary_matmul(np.zeros((0, 130), np.float32), tw).shape == (0, 9)
    empty_n = TernaryWeight.from_ternary(np.zeros((0, 130)))
    assert ternary_matmul(x, empty_n).shape == (4, 0)
    zero_k = TernaryWeight.from_ternary(np.zeros((3, 0)))
    b = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(ternary_matmul(np.zeros((2, 0)), zero_k, bias=b), np.tile(b, (2, 1)))
    # non-contiguous and byte-swapped inputs
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(ternary_matmul(xt, tw), y)
    np.testing.assert_array_equal(ternary_matmul(x.astype(">f8"), tw), y)


def test_matmul_bad_inputs(rng):
    tw = rand_weight(rng, 5, 64)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=r"x has 63 features.*k=64"):
        ternary_matmul(x[:, :63], tw)
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="x must be finite.*NaN"):
        ternary_matmul(bad, tw)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="x must be finite"):
        ternary_matmul(bad, tw)
    with pytest.raises(TypeError, match="x must be float"):
        ternary_matmul(x.astype(np.int32), tw)
    with pytest.raises(TypeError, match="x must be a numpy"):
        ternary_matmul(x.tolist(), tw)
    with pytest.raises(TypeError, match="tw must be a fastemb.TernaryWeight"):
        ternary_matmul(x, tw.dequantize())
    with pytest.raises(ValueError, match="x must be 1-D or 2-D"):
        ternary_matmul(x[None], tw)
    with pytest.raises(ValueError, match="activations"):
        ternary_matmul(x, tw, "int4")
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        ternary_matmul(x, tw, bias=np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="bias"):
        ternary_matmul(x, tw, bias=[0.0] * 5)
    with pytest.raises(ValueError, match="bias must be finite"):
        ternary_matmul(x, tw, bias=np.full(5, np.nan))
    with pytest.raises(ValueError, match="x must be finite"):
        quantize_activations(np.array([[1.0, np.nan]]))



def test_int8_path_rejects_k_that_overflows_int32():
    k = 2 ** 22 + 256  # past the kernels' int32 bound; zero rows keep the test small
    big = TernaryWeight(np.full((0, k // 4), 0x55, np.uint8), 1.0, k)
    with pytest.raises(ValueError, match="tw: k=4194560 is too large"):
        ternary_matmul(np.zeros((0, k), np.float32), big)
    assert ternary_matmul(np.zeros((0, k), np.float32), big, "float").shape == (0, 0)


# ---- the native plumbing, checked with a stand-in module until (and after) the kernels exist ---

def _view(addr, dtype, shape):
    count = int(np.prod(shape))
    if count == 0:
        return np.empty(shape, dtype)
    buf = (ctypes.c_uint8 * (count * np.dtype(dtype).itemsize)).from_address(addr)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


class FakeKernels:
    """Implements the _C signatures of the ternary kernels with the reference, by address."""
    NAMES = {0: np.float32, 1: np.float64, 2: np.float16}

    def __init__(self):
        self.calls = []

    def ternary_quantize_activations(self, x, dtype, m, k, kp, eps, xq, x_scale, isa="", scale_rule=0):
        self.calls.append(("quantize", isa))
        assert kp == ref.padded_k(k)
        rule = {0: "divide", 1: "reciprocal"}[scale_rule]
        q, s = ref.quantize_activations(_view(x, self.NAMES[dtype], (m, k)), eps, kp, scale_rule=rule)
        _view(xq, np.int8, (m, kp))[:] = q
        _view(x_scale, np.float32, (m,))[:] = s

    def ternary_matmul_int8(self, xq, x_scale, m, packed, n, k, kp, scale, per_row, bias, out, acc, isa=""):
        self.calls.append(("int8", isa))
        o, a = ref.matmul_int8(_view(xq, np.int8, (m, kp)), _view(x_scale, np.float32, (m,)),
                               _view(packed, np.uint8, (n, kp // 4)), k,
                               _view(scale, np.float32, (n if per_row else 1,)),
                               _view(bias, np.float32, (n,)) if bias else None)
        _view(out, np.float32, (m, n))[:] = o
        if acc:
            _view(acc, np.int32, (m, n))[:] = a

    def ternary_matmul_float(self, x, m, packed, n, k, kp, scale, per_row, bias, out, isa=""):
        self.calls.append(("float", isa))
        _view(out, np.float32, (m, n))[:] = ref.matmul_float(
            _view(x, np.float32, (m, k)), _view(packed, np.uint8, (n, kp // 4)), k,
            _view(scale, np.float32, (n if per_row else 1,)), _view(bias, np.float32, (n,)) if bias else None)


def test_native_call_plumbing_with_a_stand_in(rng, monkeypatch):
    fake = FakeKernels()
    monkeypatch.setattr(tern, "native_kernels", lambda: fake)
    for per_row in (False, True):
        tw = rand_weight(rng, 11, 300, per_row)
        x = rng.standard_normal((4, 300))
        b = rng.standard_normal(11).astype(np.float32)
        np.testing.assert_array_equal(ternary_matmul(x, tw, bias=b), int_reference(x, tw, b)[0])
        np.testing.assert_array_equal(ternary_matmul(x, tw, "float", b),
                                      ref.matmul_float(x.astype(np.float32), tw.packed, 300, tw.scale, b))
        np.testing.assert_array_equal(quantize_activations(x)[0], ref.quantize_activations(x)[0])
        for rule in ("divide", "reciprocal"):
            for got, want in zip(quantize_activations(x, scale_rule=rule), ref.quantize_activations(x, scale_rule=rule)):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(ternary_matmul(x, tw, bias=b, scale_rule=rule),
                                          int_reference(x, tw, b, scale_rule=rule)[0])
    assert [c[0] for c in fake.calls[:3]] == ["quantize", "int8", "float"]
    tern._ternary_matmul(x, tw, "int8", None, ref.EPS, "avx2")
    assert fake.calls[-1] == ("int8", "avx2")


# ---- native kernels, every ISA ------------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,k,n", SHAPES + [(8, 2048, 40), (70, 384, 33)])
def test_every_isa_int8_bit_exact(rng, isa, m, k, n):
    for per_row in (False, True):
        tw = rand_weight(rng, n, k, per_row)
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        for dtype in (np.float16, np.float32, np.float64):
            xd = np.ascontiguousarray(x.astype(dtype))
            xq, s = tern.native_quantize_activations(native, xd, tw.kp, ref.EPS, isa)
            rq, rs = ref.quantize_activations(xd, kp=tw.kp)
            np.testing.assert_array_equal(xq, rq, err_msg=f"{isa} {dtype}")
            np.testing.assert_array_equal(s, rs, err_msg=f"{isa} {dtype}")
        for bias in (None, b):
            out, acc = tern.native_matmul_int8(native, rq, rs, tw, bias, isa, with_acc=True)
            r_out, r_acc = ref.matmul_int8(rq, rs, tw.packed, k, tw.scale, bias)
            np.testing.assert_array_equal(acc, r_acc, err_msg=isa)
            np.testing.assert_array_equal(out, r_out, err_msg=isa)
            np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", bias, ref.EPS, isa), r_out)


@needs_native
@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_float_path(rng, isa):
    for m, k, n in SHAPES + [(8, 2048, 40)]:
        tw = rand_weight(rng, n, k, per_row=bool(m % 2))
        x = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        got = tern.native_matmul_float(native, x, tw, b, isa)
        exact = ref.matmul_float(x, tw.packed, k, tw.scale, b).astype(np.float64)
        bound = np.abs(x.astype(np.float64)) @ np.abs(tw.dequantize(np.float64)).T + np.abs(b)
        assert np.all(np.abs(got - exact) <= 1e-6 * k * bound), isa


@needs_native
def test_native_same_bits_for_every_thread_count(rng):
    tw = rand_weight(rng, 300, 1000, per_row=True)
    x = rng.standard_normal((9, 1000)).astype(np.float32)
    before = fastemb.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            fastemb.set_num_threads(t)
            outs.append((ternary_matmul(x, tw), ternary_matmul(x, tw, "float")))
    finally:
        fastemb.set_num_threads(before)
    for o8, of in outs[1:]:
        np.testing.assert_array_equal(o8, outs[0][0])
        np.testing.assert_array_equal(of, outs[0][1])


def test_public_signatures_hide_the_isa_test_hook():
    import inspect

    params = inspect.signature(fastemb.ternary_matmul).parameters
    assert list(params) == ["x", "tw", "activations", "bias", "eps", "scale_rule", "out"]
    assert list(inspect.signature(fastemb.quantize_activations).parameters) == ["x", "eps", "scale_rule"]
    with pytest.raises(TypeError):
        fastemb.ternary_matmul(np.zeros((1, 4), np.float32), quantize_ternary(np.ones((2, 4), np.float32)), _isa="numpy")
    # the hook itself still picks the backend
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    tw = quantize_ternary(np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32))
    np.testing.assert_array_equal(tern._ternary_matmul(x, tw, "int8", None, ref.EPS, "numpy"), ternary_matmul(x, tw))
