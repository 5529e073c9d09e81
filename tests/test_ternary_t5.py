"""The 't5' ternary layout (1.6 bits per weight, 5 base-3 digits per byte): the NumPy packer and
unpacker, every native ISA's GEMV / GEMM bit for bit against the reference (int32 sums and the
float32 epilogue), the same bits as the 'i2' layout, converters (GGUF TQ1_0 against the `gguf`
package, i2 <-> t5, save / load), the torch op, and bad inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastemb
from fastemb import TernaryWeight, quantize_ternary, ternary_matmul
from fastemb import ternary as tern
from fastemb._reference import ternary as ref

native = tern.native_kernels()
needs_native = pytest.mark.skipif(native is None, reason="native ternary kernels not built (NumPy fallback)")
ISAS = fastemb._backend.native_isas() if native is not None else []
A = fastemb._backend.address


def rand_ternary(rng, n, k, p_zero=0.3):
    return rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k), p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2])


def rand_weight(rng, n, k, per_row=False, fmt="t5"):
    gamma = rng.uniform(0.01, 2.0, n if per_row else 1).astype(np.float32)
    return TernaryWeight.from_ternary(rand_ternary(rng, n, k), gamma, format=fmt)


def digits_by_definition(q):
    """The 5 digits of byte q by the definition: v = round-down inverse of ceil(v * 256 / 243)."""
    for v in range(243):
        if (v * 256 + 242) // 243 == q:
            return [(v // 3 ** (4 - t)) % 3 for t in range(5)]
    return None


# ---- layout ---------------------------------------------------------------------------------------

def test_byte_encoding_decodes_every_value_and_matches_tq1_0():
    v = np.arange(243)
    q = ref.t5_encode_values(v)
    assert len(set(q.tolist())) == 243  # injective
    d = ref.t5_digits(q).astype(int)
    np.testing.assert_array_equal((d * np.array([81, 27, 9, 3, 1])).sum(axis=1), v)
    for b in (0, 1, 2, 85, 86, 128, 170, 171, 254, 255):
        want = digits_by_definition(b)
        if want is not None:
            assert ref.t5_digits(np.array([b], np.uint8))[0].tolist() == want
    assert ref.t5_digits(np.arange(256, dtype=np.uint8)).max() <= 2  # bytes no encoder writes: digits too
    assert ref.T5_VALID_BYTES.sum() == 243


@pytest.mark.parametrize("k", [0, 1, 5, 63, 64, 319, 320, 321, 640, 1000])
def test_pack_unpack_round_trip_and_layout(rng, k):
    n = 3
    wq = rand_ternary(rng, n, k)
    p = ref.pack_t5(wq)
    kp = ref.padded_k_t5(k)
    assert p.shape == (n, kp // 5) and p.dtype == np.uint8
    np.testing.assert_array_equal(ref.unpack_t5(p, k), wq)
    # byte j of block b holds weight b*320 + 64 t + j as digit t (most significant first)
    codes = np.ones((n, kp), np.int64)
    codes[:, :k] = wq + 1
    for b in range(kp // 320):
        for j in (0, 17, 63):
            v = sum(codes[:, b * 320 + 64 * t + j] * 3 ** (4 - t) for t in range(5))
            np.testing.assert_array_equal(p[:, b * 64 + j], (v * 256 + 242) // 243)


def test_bits_per_weight_and_sizes():
    tw = TernaryWeight.from_ternary(np.zeros((4, 2560), np.int8), format="t5")
    assert tw.packed.shape == (4, 512) and tw.bits_per_weight == 1.6 and tw.kp == 2560
    i2 = tw.to_format("i2")
    assert i2.packed.shape == (4, 640) and i2.bits_per_weight == 2.0
    assert tw.nbytes < i2.nbytes


# ---- native kernels vs the reference, every ISA ---------------------------------------------------

def native_int8(xq, s, tw, bias, isa):
    out, acc = tern.native_matmul_int8(native, xq, s, tw, bias, isa, with_acc=True)
    return out, acc


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 5, 3), (1, 320, 9), (1, 321, 5), (2, 1000, 7), (3, 64, 10),
                                   (5, 2560, 6), (1, 4096, 13), (16, 700, 50), (19, 333, 49)])
def test_every_isa_int8_bit_exact(rng, isa, m, k, n):
    for per_row in (False, True):
        tw = rand_weight(rng, n, k, per_row)
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        xq, s = tern.native_quantize_activations(native, x, tw.kp, ref.EPS, isa)
        rq, rs = ref.quantize_activations(x, kp=tw.kp)
        np.testing.assert_array_equal(xq, rq)
        np.testing.assert_array_equal(s, rs)
        for bias in (None, b):
            out, acc = native_int8(rq, rs, tw, bias, isa)
            r_out, r_acc = ref.matmul_int8(rq, rs, tw.packed, k, tw.scale, bias, "t5")
            np.testing.assert_array_equal(acc, r_acc, err_msg=isa)
            np.testing.assert_array_equal(out.view(np.int32), r_out.view(np.int32), err_msg=isa)
        # the same bits as the 2-bit layout
        i2 = tw.to_format("i2")
        out2, acc2 = native_int8(rq[:, :k] if i2.kp == k else np.pad(rq[:, :k], ((0, 0), (0, i2.kp - k))), rs, i2,
                                 b, isa)
        out5, acc5 = native_int8(rq, rs, tw, b, isa)
        np.testing.assert_array_equal(acc5, acc2)
        np.testing.assert_array_equal(out5.view(np.int32), out2.view(np.int32))


@needs_native
@pytest.mark.parametrize("isa", ISAS)
def test_extreme_activations_and_long_rows_do_not_overflow(rng, isa):
    # all weights +-1 and activations at +-127 / -128: the largest per-lane sums, k past one fold
    # of the AVX-512 accumulators (1024 blocks = 327680 weights) on one short row.
    for k in (5 * 320 + 7, 1024 * 320 + 320):
        n = 2
        wq = rng.choice(np.array([-1, 1], np.int8), size=(n, k))
        wq[0] = 1
        tw = TernaryWeight.from_ternary(wq, 1.0, format="t5")
        xq = np.zeros((1, tw.kp), np.int8)
        xq[0, :k] = rng.choice(np.array([-128, 127], np.int8), size=k)
        xq[0, :k:3] = 127
        s = np.ones(1, np.float32)
        out, acc = native_int8(xq, s, tw, None, isa)
        want = xq[:, :k].astype(np.int64) @ wq.T.astype(np.int64)
        np.testing.assert_array_equal(acc, want)


@needs_native
@pytest.mark.parametrize("isa", ISAS)
def test_float_path_every_isa(rng, isa):
    for m, k, n in [(1, 321, 5), (4, 700, 9), (17, 64, 3)]:
        tw = rand_weight(rng, n, k, per_row=True)
        x = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        got = tern.native_matmul_float(native, x, tw, b, isa)
        want = ref.matmul_float(x, tw.packed, k, tw.scale, b, "t5")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("isa", [None, "numpy"] + ISAS)
def test_public_api_same_bits_as_i2(rng, isa):
    w = rng.standard_normal((33, 500)).astype(np.float32)
    a, b = quantize_ternary(w), quantize_ternary(w, format="t5")
    assert b.format == "t5" and a.format == "i2"
    np.testing.assert_array_equal(a.ternary(), b.ternary())
    for m in (1, 3, 20):
        x = rng.standard_normal((m, 500))
        for rule in ("divide", "reciprocal"):
            ya = tern._ternary_matmul(x, a, "int8", None, ref.EPS, isa, rule)
            yb = tern._ternary_matmul(x, b, "int8", None, ref.EPS, isa, rule)
            np.testing.assert_array_equal(ya.view(np.int32), yb.view(np.int32))
        fa = tern._ternary_matmul(x, a, "float", None, ref.EPS, isa)
        fb = tern._ternary_matmul(x, b, "float", None, ref.EPS, isa)
        np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-4)
    y1 = ternary_matmul(x[0], b)
    assert y1.shape == (33,)


def test_empty_shapes(rng):
    for n, k in [(0, 10), (5, 0), (0, 0)]:
        tw = TernaryWeight.from_ternary(np.zeros((n, k), np.int8), 1.0, format="t5")
        y = ternary_matmul(np.ones((2, k), np.float32), tw, bias=np.ones(n, np.float32))
        np.testing.assert_array_equal(y, np.ones((2, n), np.float32))
    tw = rand_weight(rng, 4, 9)
    assert ternary_matmul(np.zeros((0, 9), np.float32), tw).shape == (0, 4)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 4), k=st.integers(1, 900), n=st.integers(1, 12), seed=st.integers(0, 2 ** 32 - 1),
       per_row=st.booleans())
def test_hypothesis_default_backend_vs_reference(m, k, n, seed, per_row):
    rng = np.random.default_rng(seed)
    tw = rand_weight(rng, n, k, per_row)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 100)).astype(np.float32)
    got = ternary_matmul(x, tw)
    rq, rs = ref.quantize_activations(x)
    want, _ = ref.matmul_int8(rq, rs, tw.packed, k, tw.scale, None, "t5")
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


# ---- converters -------------------------------------------------------------------------------------

def test_to_format_round_trip_and_native_transcode(rng):
    for k in (1, 255, 256, 320, 999):
        tw = rand_weight(rng, 7, k, per_row=True)
        i2 = tw.to_format("i2")
        np.testing.assert_array_equal(i2.packed, ref.pack(tw.ternary()))
        np.testing.assert_array_equal(i2.scale, tw.scale)
        back = i2.to_format("t5")
        np.testing.assert_array_equal(back.packed, tw.packed)
        assert tw.to_format("t5") is tw
    if native is not None:  # the binding directly
        tw = rand_weight(rng, 5, 700)
        dst = np.empty((5, ref.padded_k(700) // 4), np.uint8)
        native.ternary_t5_to_i2(A(tw.packed), 5, 700, A(dst))
        np.testing.assert_array_equal(dst, ref.pack(tw.ternary()))


def test_save_load_and_dict_keep_the_format(rng, tmp_path):
    tw = rand_weight(rng, 6, 333, per_row=True)
    tw.save(tmp_path / "w.npz")
    back = TernaryWeight.load(tmp_path / "w.npz")
    assert back.format == "t5"
    np.testing.assert_array_equal(back.packed, tw.packed)
    np.testing.assert_array_equal(back.scale, tw.scale)
    d = tw.to_dict()
    assert str(d["format"]) == "fastemb.ternary.T5"
    assert TernaryWeight.from_dict(d).format == "t5"
    assert TernaryWeight.from_dict(tw.to_format("i2").to_dict()).format == "i2"
    assert "format='t5'" in repr(tw)


def test_gguf_tq1_0_against_the_gguf_package(rng):
    gguf = pytest.importorskip("gguf")
    from gguf import quants
    for per_row in (False, True):
        tw = rand_weight(rng, 5, 512, per_row)
        blocks = tw.to_gguf_tq1_0()
        want = quants.quantize(tw.dequantize(), gguf.GGMLQuantizationType.TQ1_0)
        np.testing.assert_array_equal(blocks, want)
        back = TernaryWeight.from_gguf_tq1_0(want, format="t5")
        assert back.format == "t5"
        np.testing.assert_array_equal(back.packed, tw.packed)
        deq = quants.dequantize(want, gguf.GGMLQuantizationType.TQ1_0)
        np.testing.assert_array_equal(back.dequantize(), deq.astype(np.float32))
        assert TernaryWeight.from_gguf_tq1_0(want).format == "i2"  # the default layout is unchanged
        assert TernaryWeight.from_gguf_tq2_0(tw.to_gguf_tq2_0(), format="t5").format == "t5"


def test_quantize_ternary_with_format_matches_i2_codes(rng):
    w = rng.standard_normal((9, 650)).astype(np.float32)
    for scale, gran in [("absmean", "tensor"), ("absmedian", "row"), (0.7, "tensor")]:
        a = quantize_ternary(w, scale, gran)
        b = quantize_ternary(w, scale, gran, format="t5")
        np.testing.assert_array_equal(a.ternary(), b.ternary())
        np.testing.assert_array_equal(a.scale, b.scale)
        np.testing.assert_array_equal(a.dequantize(), b.dequantize())


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_format_and_packed_arrays(rng):
    w = rng.standard_normal((3, 10)).astype(np.float32)
    with pytest.raises(ValueError, match="format"):
        quantize_ternary(w, format="t3")
    with pytest.raises(TypeError, match="format"):
        quantize_ternary(w, format=5)
    with pytest.raises(ValueError, match="format"):
        TernaryWeight.from_ternary(np.zeros((2, 3)), format="tq1")
    tw = rand_weight(rng, 3, 10)
    with pytest.raises(ValueError, match="format"):
        tw.to_format("x")
    with pytest.raises(ValueError, match=r"packed must have shape \(n, 64\)"):
        TernaryWeight(np.zeros((3, 80), np.uint8), 1.0, 10, "t5")
    bad = tw.packed.copy()
    invalid = int(np.nonzero(~ref.T5_VALID_BYTES)[0][0])
    bad[1, 5] = invalid
    with pytest.raises(ValueError, match="not a 't5' encoding"):
        TernaryWeight(bad, 1.0, 10, "t5")
    pad = tw.packed.copy()
    pad[0, 20] = ref.t5_encode_values(np.array([0]))[0]  # weight 20 (padding) would be -1
    with pytest.raises(ValueError, match="padding"):
        TernaryWeight(pad, 1.0, 10, "t5")
    with pytest.raises(ValueError, match="shape"):
        TernaryWeight.from_dict({**tw.to_dict(), "packed": np.zeros((3, 5), np.uint8)})


@needs_native
def test_native_bindings_reject_bad_format_and_kp(rng):
    tw = rand_weight(rng, 2, 10)
    xq = np.zeros((1, 320), np.int8)
    s = np.ones(1, np.float32)
    out = np.empty((1, 2), np.float32)
    with pytest.raises(ValueError, match="format"):
        native.ternary_matmul_int8(A(xq), A(s), 1, A(tw.packed), 2, 10, 320, A(tw.scale), False, 0, A(out), 0, "",
                                   fmt=7)
    with pytest.raises(ValueError, match="kp must be padded_k_t5"):
        native.ternary_matmul_int8(A(xq), A(s), 1, A(tw.packed), 2, 10, 256, A(tw.scale), False, 0, A(out), 0, "",
                                   fmt=1)
    with pytest.raises(ValueError, match="kp"):
        native.ternary_matmul_float(A(xq), 1, A(tw.packed), 2, 10, 256, A(tw.scale), False, 0, A(out), "", fmt=1)


# ---- torch ----------------------------------------------------------------------------------------

def test_torch_op_t5(rng):
    torch = pytest.importorskip("torch")
    from fastemb.torch import ternary_linear
    from fastemb.torch._ternary import ternary_weight_tensors
    w = rng.standard_normal((21, 700)).astype(np.float32)
    a, b = quantize_ternary(w), quantize_ternary(w, format="t5")
    pa, sa, k = ternary_weight_tensors(a)
    pb, sb, _ = ternary_weight_tensors(b, keep_format=True)
    assert pb.shape == (21, 192) and tuple(ternary_weight_tensors(b)[0].shape) == (21, ref.padded_k(700) // 4)
    bias = torch.randn(21)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(5, 700).to(dtype)
        for act in ("int8", "float"):
            ya = ternary_linear(x, pa, sa, k, bias, act)
            yb = ternary_linear(x, pb, sb, k, bias, act, format="t5")
            if act == "int8":
                assert torch.equal(ya, yb)
            else:
                torch.testing.assert_close(ya, yb)
    x = torch.randn(3, 700, requires_grad=True)
    ternary_linear(x, pb, sb, k, format="t5").sum().backward()
    g5 = x.grad.clone()
    x.grad = None
    ternary_linear(x, pa, sa, k).sum().backward()
    assert torch.equal(g5, x.grad)
    torch.library.opcheck(torch.ops.fastemb.ternary_linear.default,
                          (torch.randn(4, 700), pb, sb, k, None, "int8", 1e-5, "divide", "t5"))
    # k = 600: 3 i2 blocks (192 bytes) but 2 t5 blocks (128 bytes); i2 bytes passed as t5 are rejected
    # (for k = 700 both layouts happen to hold 192 bytes per row: format must be given, not guessed)
    p6, s6, _ = ternary_weight_tensors(quantize_ternary(rng.standard_normal((3, 600)).astype(np.float32)))
    with pytest.raises(ValueError, match="format 't5'"):
        ternary_linear(torch.randn(2, 600), p6, s6, 600, format="t5")
    with pytest.raises(ValueError, match="format"):
        ternary_linear(torch.randn(2, 700), pb, sb, k, format="tq")
    # the torch fallback (any device) decodes t5 the same way
    from fastemb.torch._ternary import _linear_torch
    xx = torch.randn(3, 700)
    assert torch.equal(_linear_torch(xx, pb, sb, k, None, "int8", 1e-5, "divide", "t5"),
                       ternary_linear(xx, pa, sa, k))


def test_torch_compile_t5(rng):
    torch = pytest.importorskip("torch")
    from fastemb.torch import ternary_linear
    b = quantize_ternary(rng.standard_normal((8, 330)).astype(np.float32), format="t5")
    pb, sb = torch.from_numpy(b.packed), torch.from_numpy(b.scale)
    f = torch.compile(lambda x: ternary_linear(x, pb, sb, 330, format="t5"), fullgraph=True)
    x = torch.randn(2, 330)
    assert torch.equal(f(x), ternary_linear(x, pb, sb, 330, format="t5"))
