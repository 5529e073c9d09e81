"""Native ternary kernels (fastemb._C / fastemb._C_cuda) against the NumPy reference.

Calls the raw bindings (buffer addresses as ints), so every CPU ISA variant is checked on its own:
the int8 path's int32 sums and float32 outputs bit for bit, quantize_activations bit for bit
(ties and extremes included), the float path within float tolerance, the same bits for 1 and 2
threads, and argument checks. The serial variant runs the scalar helpers of
src/cpp/ternary/ternary_math.h that the CUDA kernels share. CUDA tests compare with the CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb._backend import native_isas
from fastemb._reference import ternary as R

C = _backend.native()
needs_native = pytest.mark.skipif(C is None, reason="native module not in use")
pytestmark = needs_native

DT = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}


def addr(a):
    return 0 if a is None else int(a.ctypes.data)


# ---- thin wrappers over the bindings -------------------------------------------------------------

def n_quantize(x, isa="", dtype=None, eps=R.EPS, bits=None):
    """x: float array (or uint16 bf16 bits with dtype='bfloat16')."""
    m, k = x.shape
    kp = R.padded_k(k)
    xq = np.full((m, kp), 77, np.int8)  # garbage: the kernel must write every byte
    xs = np.full(m, np.nan, np.float32)
    C.ternary_quantize_activations(addr(x), DT[dtype or x.dtype.name], m, k, kp, eps, addr(xq), addr(xs), isa)
    return xq, xs


def n_int8(xq, xs, packed, k, gamma, bias=None, isa="", with_acc=True):
    m = xq.shape[0]
    n = packed.shape[0]
    kp = R.padded_k(k)
    out = np.full((m, n), np.nan, np.float32)
    acc = np.full((m, n), -7, np.int32) if with_acc else None
    C.ternary_matmul_int8(addr(xq), addr(xs), m, addr(packed), n, k, kp, addr(gamma), gamma.size > 1, addr(bias),
                          addr(out), addr(acc), isa)
    return out, acc


def n_float(x, packed, k, gamma, bias=None, isa=""):
    m = x.shape[0]
    n = packed.shape[0]
    out = np.full((m, n), np.nan, np.float32)
    C.ternary_matmul_float(addr(x), m, addr(packed), n, k, R.padded_k(k), addr(gamma), gamma.size > 1, addr(bias),
                           addr(out), isa)
    return out


def rand_problem(rng, m, n, k, per_row, with_bias):
    wq = rng.integers(-1, 2, (n, k)).astype(np.int8)
    packed = R.pack(wq)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    gamma = rng.uniform(0.01, 2.0, n if per_row else 1).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    return x, packed, gamma, bias


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else a.dtype)


# ---- int8 path -----------------------------------------------------------------------------------

SHAPES_M = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33]
SHAPES_KN = [(1, 7), (255, 13), (257, 51), (1000, 97)]


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("m", SHAPES_M)
def test_int8_every_isa_matches_reference(rng, isa, m):
    for idx, (k, n) in enumerate(SHAPES_KN):
        per_row, with_bias = bool((idx + m) % 2), bool(idx % 2 == 0)
        x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row, with_bias)
        xq, xs = R.quantize_activations(x, kp=R.padded_k(k))
        out, acc = n_int8(xq, xs, packed, k, gamma, bias, isa)
        ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma, bias)
        msg = f"isa={isa} m={m} k={k} n={n} per_row={per_row} bias={with_bias}"
        np.testing.assert_array_equal(acc, ref_acc, err_msg=msg)
        np.testing.assert_array_equal(bits(out), bits(ref_out), err_msg=msg)
        # acc is optional
        out2, _ = n_int8(xq, xs, packed, k, gamma, bias, isa, with_acc=False)
        np.testing.assert_array_equal(bits(out2), bits(out), err_msg=msg)


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("m,n,k", [(100, 50, 300), (260, 49, 257), (130, 100, 1024), (96, 1, 33), (32, 7, 300)])
def test_int8_gemm_sizes(rng, isa, m, n, k):
    # m >= 96 (AVX-512 VNNI) / m >= 32 (AVX2) takes the GEMM form: several row groups, a partial last
    # group, more than one 256-row pass, panels with missing columns; each crossover itself.
    x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row=True, with_bias=True)
    xq, xs = R.quantize_activations(x, kp=R.padded_k(k))
    out, acc = n_int8(xq, xs, packed, k, gamma, bias, isa)
    ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma, bias)
    np.testing.assert_array_equal(acc, ref_acc)
    np.testing.assert_array_equal(bits(out), bits(ref_out))


@pytest.mark.parametrize("isa", native_isas())
def test_int8_extreme_activations_and_code_3(rng, isa):
    # Saturated activations (-128 and 127 everywhere) bound the accumulators; a corrupt code 3
    # (never written by pack) decodes to weight 2 like the reference's unpack on every ISA.
    m, n, k = 3, 9, 1000
    kp = R.padded_k(k)
    xq = np.where(rng.random((m, kp)) < 0.5, -128, 127).astype(np.int8)
    xq[:, k:] = 0
    xq[1, :k] = -128
    xs = rng.uniform(0.5, 2.0, m).astype(np.float32)
    packed = rng.integers(0, 256, (n, kp // 4), dtype=np.uint8)  # codes 0..3 everywhere
    # padding weights must be code 1 (pack's contract); keep them
    pad = R.pack(np.zeros((n, k), np.int8))
    codes = R.unpack(packed, kp).astype(np.int16) + 1
    codes[:, k:] = 1
    repacked = codes.reshape(n, kp // 256, 4, 64).astype(np.uint8)
    packed = (repacked[:, :, 0] | (repacked[:, :, 1] << 2) | (repacked[:, :, 2] << 4) | (repacked[:, :, 3] << 6))
    packed = np.ascontiguousarray(packed.reshape(n, kp // 4))
    assert packed.shape == pad.shape
    gamma = np.array([0.75], np.float32)
    out, acc = n_int8(xq, xs, packed, k, gamma, None, isa)
    ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma)
    np.testing.assert_array_equal(acc, ref_acc)
    np.testing.assert_array_equal(bits(out), bits(ref_out))


# Tile and loop tails of every variant (AVX-512 VNNI: m >= 2 in groups of <= 8 rows, 4 or 3 weight
# rows per tile; AVX2: m = 1 takes 2 weight rows per tile and sums 2 blocks in int16, m >= 2 groups of
# <= 4 rows x 3 or 2 weight rows summing 4 blocks, m >= 32 the 16 x 6 GEMM micro-kernel over
# 48-column panels): n = 1, 2, 3, 5 and odd n, k not a multiple of 256 and 1 to 9 blocks; m with
# unequal row groups (9, 10, 17, 31, 33, 63) and both sides of each GEMM crossover.
TAIL_NK = [(1, 1), (2, 255), (3, 257), (5, 520), (97, 1000), (10, 2304)]


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17, 31, 32, 33, 63, 95, 96, 128])
def test_int8_tile_tails(rng, isa, m):
    for idx, (n, k) in enumerate(TAIL_NK):
        x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row=bool(idx % 2), with_bias=bool((idx + m) % 2))
        xq, xs = R.quantize_activations(x, kp=R.padded_k(k))
        out, acc = n_int8(xq, xs, packed, k, gamma, bias, isa)
        ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma, bias)
        msg = f"isa={isa} m={m} n={n} k={k}"
        np.testing.assert_array_equal(acc, ref_acc, err_msg=msg)
        np.testing.assert_array_equal(bits(out), bits(ref_out), err_msg=msg)


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("m", [1, 2, 3, 4, 16, 20])
def test_int8_accumulator_bounds(isa, m):
    # The largest int16 partial sums the SIMD variants allow: every code 3 (corrupt, decoded as
    # weight 2) or 2 against activations all -128 or all 127, over 9 blocks (every int16 group
    # full, plus a partial one); rows mix the cases.
    n, k = 8, 2304
    codes = np.array([3, 2, 3, 0, 1, 3, 2, 3], np.uint8)
    packed = np.ascontiguousarray(np.repeat((codes * 0x55)[:, None], k // 4, axis=1))
    xq = np.where(np.arange(m)[:, None] % 2 == 0, -128, 127).astype(np.int8) * np.ones((1, k), np.int8)
    xs = np.full(m, 0.5, np.float32)
    gamma = np.array([1.25], np.float32)
    out, acc = n_int8(xq, xs, packed, k, gamma, None, isa)
    ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma)
    assert np.abs(ref_acc).max() == 2 * 128 * k
    np.testing.assert_array_equal(acc, ref_acc)
    np.testing.assert_array_equal(bits(out), bits(ref_out))


_FORCED_FORM = """
import numpy as np
from fastemb import _backend
from fastemb._reference import ternary as R
C = _backend.native()
rng = np.random.default_rng(5)
for isa in _backend.native_isas():
    for m, n, k in [(1, 97, 1000), (3, 50, 520), (9, 7, 257), (15, 49, 300), (128, 13, 2304), (600, 7, 300)]:
        w = rng.integers(-1, 2, (n, k)).astype(np.int8)
        packed = R.pack(w)
        kp = R.padded_k(k)
        x = rng.standard_normal((m, k)).astype(np.float32)
        xq, xs = R.quantize_activations(x, kp=kp)
        gamma = rng.uniform(0.1, 2, n).astype(np.float32)
        out = np.empty((m, n), np.float32)
        acc = np.empty((m, n), np.int32)
        C.ternary_matmul_int8(xq.ctypes.data, xs.ctypes.data, m, packed.ctypes.data, n, k, kp, gamma.ctypes.data, True,
                              0, out.ctypes.data, acc.ctypes.data, isa)
        ref_out, ref_acc = R.matmul_int8(xq, xs, packed, k, gamma)
        assert (acc == ref_acc).all(), (isa, m, n, k)
        assert (out.view(np.uint32) == ref_out.view(np.uint32)).all(), (isa, m, n, k)
print("ok")
"""


@pytest.mark.parametrize("min_rows", ["1", "1000000"])
def test_int8_forced_gemm_or_gemv(min_rows):
    # FASTEMB_TERNARY_GEMM_MIN_ROWS (read once per process): 1 runs the GEMM form for every m
    # (m = 1 included), 1000000 the GEMV form for m = 128 and 600 (more than 64 row groups: several
    # passes over the weight rows); both must give the reference's bits.
    import os
    import subprocess
    import sys
    env = dict(os.environ, FASTEMB_TERNARY_GEMM_MIN_ROWS=min_rows)
    r = subprocess.run([sys.executable, "-c", _FORCED_FORM], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.parametrize("isa", native_isas())
def test_int8_k_zero_and_empty(isa):
    gamma = np.array([1.0], np.float32)
    packed = np.zeros((5, 0), np.uint8)
    xq = np.zeros((2, 0), np.int8)
    xs = np.ones(2, np.float32)
    bias = np.arange(5, dtype=np.float32)
    out, acc = n_int8(xq, xs, packed, 0, gamma, bias, isa)
    np.testing.assert_array_equal(acc, np.zeros((2, 5), np.int32))
    np.testing.assert_array_equal(out, np.broadcast_to(bias, (2, 5)))
    # m = 0 and n = 0 are no-ops (null pointers allowed)
    C.ternary_matmul_int8(0, 0, 0, addr(R.pack(np.ones((3, 10), np.int8))), 3, 10, 256, addr(gamma), False, 0, 0, 0, isa)
    C.ternary_matmul_int8(addr(np.zeros((2, 256), np.int8)), addr(xs), 2, 0, 0, 10, 256, 0, False, 0, 0, 0, isa)
    C.ternary_matmul_float(0, 0, 0, 0, 10, 256, 0, False, 0, 0, isa)
    C.ternary_quantize_activations(0, 0, 0, 10, 256, 1e-5, 0, 0, isa)


@pytest.mark.parametrize("threads_path", ["gemv", "gemv_groups", "gemm", "float"])
def test_same_bits_for_1_and_2_threads(rng, threads_path):
    m = {"gemv": 3, "gemv_groups": 11, "gemm": 100, "float": 5}[threads_path]
    n, k = 517, 700
    x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row=True, with_bias=True)
    xq, xs = R.quantize_activations(x, kp=R.padded_k(k))
    before = fastemb.get_num_threads()
    try:
        results = []
        for t in (1, 2):
            fastemb.set_num_threads(t)
            if threads_path == "float":
                results.append((n_float(x, packed, k, gamma, bias),))
            else:
                results.append(n_int8(xq, xs, packed, k, gamma, bias))
    finally:
        fastemb.set_num_threads(before)
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(bits(a), bits(b))


# ---- float path ----------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("m", [1, 2, 5, 9, 16, 33])
def test_float_every_isa_close_to_reference(rng, isa, m):
    for idx, (k, n) in enumerate(SHAPES_KN):
        x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row=bool(idx % 2), with_bias=bool(m % 2))
        out = n_float(x, packed, k, gamma, bias, isa)
        ref = R.matmul_float(x, packed, k, gamma, bias)
        # float32 sums of k terms: error <= ~k * eps * sum|x| * gamma
        scale = (np.abs(x).sum(axis=1, keepdims=True) * gamma.reshape(1, -1)).astype(np.float64) + np.abs(ref)
        err = np.abs(out.astype(np.float64) - ref)
        assert (err <= 1e-6 * scale + 1e-6).all(), f"isa={isa} m={m} k={k} max err {err.max()}"


# ---- quantize_activations ------------------------------------------------------------------------

@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_quantize_every_isa_and_dtype(rng, isa, dtype):
    for m, k in [(1, 1), (3, 17), (4, 255), (2, 257), (5, 1000)]:
        x = (rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-3, 3, (m, 1))).astype(np.float32)
        if dtype == "bfloat16":
            b = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncated bf16 bits
            xin, xref = b, (b.astype(np.uint32) << 16).view(np.float32)
        else:
            xin = x.astype(dtype)
            xref = xin
        xq, xs = n_quantize(xin, isa, dtype=dtype)
        rq, rs = R.quantize_activations(xref, kp=R.padded_k(k))
        np.testing.assert_array_equal(xq, rq, err_msg=f"isa={isa} dtype={dtype} m={m} k={k}")
        np.testing.assert_array_equal(bits(xs), bits(rs), err_msg=f"isa={isa} dtype={dtype} m={m} k={k}")


@pytest.mark.parametrize("isa", native_isas())
def test_quantize_ties_and_extremes(rng, isa):
    k = 300
    rows = []
    # amax 127 -> s = 1 exactly: x.5 values are exact ties (half to even)
    r = np.round(rng.uniform(-126, 126, k)) + np.where(rng.random(k) < 0.5, 0.5, 0.0)
    r[0] = 127.0
    r[1:9] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 125.5, -126.5]
    rows.append(r)
    # amax 254 -> s = 0.5: odd integers are ties
    r = rng.integers(-253, 254, k).astype(np.float64)
    r[0] = -254.0
    rows.append(r)
    rows.append(np.zeros(k))  # amax < eps: s = 127 / eps
    rows.append(rng.standard_normal(k) * 1e-30)  # tiny (and subnormal) values
    rows.append(rng.standard_normal(k) * 1e30)  # huge values
    r = rng.standard_normal(k)
    r[5] = -1e38
    rows.append(r)  # one dominating negative value
    x = np.array(rows, dtype=np.float32)
    xq, xs = n_quantize(x, isa)
    rq, rs = R.quantize_activations(x, kp=R.padded_k(k))
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(bits(xs), bits(rs))
    assert (xq[:, k:] == 0).all()
    # the tie row really rounds half to even
    assert list(xq[0, 1:9]) == [0, 2, 2, 0, -2, -2, 126, -126]
    # other eps
    xq2, xs2 = n_quantize(x, isa, eps=0.5)
    rq2, rs2 = R.quantize_activations(x, eps=0.5, kp=R.padded_k(k))
    np.testing.assert_array_equal(xq2, rq2)
    np.testing.assert_array_equal(bits(xs2), bits(rs2))


@pytest.mark.parametrize("isa", native_isas())
def test_quantize_k_zero(isa):
    xq, xs = n_quantize(np.zeros((3, 0), np.float32), isa)
    assert xq.shape == (3, 0)
    np.testing.assert_array_equal(xs, np.full(3, np.float32(127.0) / np.float32(R.EPS)))


# ---- ISA choice and argument checks ----------------------------------------------------------------

def test_kernel_isa():
    """The variant a requested ISA runs, from the CPU features: avx512 needs AVX512-VNNI (else the avx2
    kernels run), and the avx2 kernels are the AVX-VNNI sub-variant avx2_vnni on CPUs with AVX-VNNI
    (built wherever the compiler takes -mavxvnni: GCC 11+, Clang 12+)."""
    feats = C.cpu_features()
    avx2_kernels = "avx2_vnni" if feats["avxvnni"] else "avx2"
    assert C.ternary_kernel_isa("serial") == "serial"
    if "avx2" in native_isas():
        assert C.ternary_kernel_isa("avx2") == avx2_kernels
    if "avx512" in native_isas():
        expected = "avx512" if feats["avx512vnni"] else avx2_kernels
        assert C.ternary_kernel_isa("avx512") == expected
    assert C.ternary_kernel_isa().split("_")[0] in native_isas()
    with pytest.raises(ValueError, match="isa"):
        C.ternary_kernel_isa("sse9")


def test_avxvnni_flag_matches_the_kernel():
    """cpu_features()["avxvnni"] (CPUID.(EAX=7,ECX=1):EAX[4] and OS-saved ymm state) agrees with the
    flag Linux reports in /proc/cpuinfo (avx_vnni), and is never set without AVX2."""
    feats = C.cpu_features()
    assert isinstance(feats["avxvnni"], bool)
    if feats["avxvnni"]:
        assert feats["avx2"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None or "avx2" not in flags:
        pytest.skip("no x86 /proc/cpuinfo flags to compare with")
    assert feats["avxvnni"] == ("avx_vnni" in flags)


def test_bad_arguments_raise_value_error(rng):
    m, n, k = 2, 3, 10
    kp = R.padded_k(k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    xq = np.zeros((m, kp), np.int8)
    xs = np.ones(m, np.float32)
    packed = R.pack(np.ones((n, k), np.int8))
    g = np.ones(1, np.float32)
    out = np.zeros((m, n), np.float32)
    A = addr

    def q(**kw):
        a = dict(x=A(x), dtype=0, m=m, k=k, kp=kp, eps=1e-5, xq=A(xq), x_scale=A(xs))
        a.update(kw)
        C.ternary_quantize_activations(**a)

    def mi(**kw):
        a = dict(xq=A(xq), x_scale=A(xs), m=m, packed=A(packed), n=n, k=k, kp=kp, scale=A(g), per_row=False, bias=0,
                 out=A(out), acc=0)
        a.update(kw)
        C.ternary_matmul_int8(**a)

    def mf(**kw):
        a = dict(x=A(x), m=m, packed=A(packed), n=n, k=k, kp=kp, scale=A(g), per_row=False, bias=0, out=A(out))
        a.update(kw)
        C.ternary_matmul_float(**a)

    q(), mi(), mf()  # the valid calls work
    cases = [
        (q, dict(m=-1), "m must be"), (q, dict(k=-1), "k must be"), (q, dict(kp=512), "kp must be"),
        (q, dict(dtype=7), "dtype"), (q, dict(eps=0.0), "eps"), (q, dict(eps=float("nan")), "eps"),
        (q, dict(x=0), "x: null"), (q, dict(xq=0), "xq: null"), (q, dict(x_scale=0), "x_scale: null"),
        (q, dict(isa="sse9"), "isa"),
        (mi, dict(m=-1), "m must be"), (mi, dict(n=-2), "n must be"), (mi, dict(kp=0), "kp must be"),
        (mi, dict(k=300), "kp must be"), (mi, dict(k=1 << 23, kp=1 << 23), "k must be <="),
        (mi, dict(xq=0), "xq: null"), (mi, dict(x_scale=0), "x_scale: null"), (mi, dict(packed=0), "packed: null"),
        (mi, dict(scale=0), "scale: null"), (mi, dict(out=0), "out: null"), (mi, dict(isa="avx9"), "isa"),
        (mf, dict(m=-3), "m must be"), (mf, dict(kp=768), "kp must be"), (mf, dict(x=0), "x: null"),
        (mf, dict(packed=0), "packed: null"), (mf, dict(scale=0), "scale: null"), (mf, dict(out=0), "out: null"),
    ]
    for fn, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            fn(**kw)


# ---- hypothesis: random small shapes on every ISA ----------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 20), n=st.integers(1, 40), k=st.integers(1, 600), seed=st.integers(0, 2**32 - 1),
       per_row=st.booleans(), with_bias=st.booleans())
def test_property_all_isas_agree_with_reference(m, n, k, seed, per_row, with_bias):
    rng = np.random.default_rng(seed)
    x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row, with_bias)
    rq, rs = R.quantize_activations(x, kp=R.padded_k(k))
    ref_out, ref_acc = R.matmul_int8(rq, rs, packed, k, gamma, bias)
    for isa in native_isas():
        xq, xs = n_quantize(x, isa)
        np.testing.assert_array_equal(xq, rq)
        out, acc = n_int8(xq, xs, packed, k, gamma, bias, isa)
        np.testing.assert_array_equal(acc, ref_acc)
        np.testing.assert_array_equal(bits(out), bits(ref_out))


# ---- CUDA against the CPU -----------------------------------------------------------------------------

def _cuda_ready():
    mod = _backend.cuda_module()
    if mod is None or not hasattr(mod, "ternary_matmul_int8"):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or mod.device_count() == 0:
        return None
    return mod


cuda = pytest.mark.skipif(_cuda_ready() is None, reason="needs a CUDA device, torch and fastemb._C_cuda")


def _dev(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_cuda_quantize_matches_cpu(rng, dtype):
    import torch

    G = _cuda_ready()
    for m, k in [(1, 1), (3, 255), (6, 257), (2, 5000)]:
        x = torch.from_numpy((rng.standard_normal((m, k)) * 3).astype(np.float32)).to(getattr(torch, dtype))
        x[0, 0] = 2.5 / 127 * x.abs().max().float()  # a near-tie
        kp = R.padded_k(k)
        xq = torch.empty((m, kp), dtype=torch.int8, device="cuda")
        xs = torch.empty(m, dtype=torch.float32, device="cuda")
        xc = x.cuda()
        G.ternary_quantize_activations(xc.data_ptr(), DT[dtype], m, k, kp, 1e-5, xq.data_ptr(), xs.data_ptr(),
                                       torch.cuda.current_stream().cuda_stream)
        cq = np.empty((m, kp), np.int8)
        cs = np.empty(m, np.float32)
        xcpu = x.contiguous()
        C.ternary_quantize_activations(xcpu.data_ptr(), DT[dtype], m, k, kp, 1e-5, addr(cq), addr(cs))
        torch.cuda.synchronize()
        np.testing.assert_array_equal(xq.cpu().numpy(), cq)
        np.testing.assert_array_equal(bits(xs.cpu().numpy()), bits(cs))


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 9, 16, 33, 70, 130])
def test_cuda_int8_and_float_match_cpu(rng, m):
    import torch

    G = _cuda_ready()
    for k, n in [(1, 7), (257, 51), (1000, 97), (4096, 130)]:
        x, packed, gamma, bias = rand_problem(rng, m, n, k, per_row=bool(m % 2), with_bias=bool(n % 2))
        kp = R.padded_k(k)
        xq, xs = R.quantize_activations(x, kp=kp)
        out_c, acc_c = n_int8(xq, xs, packed, k, gamma, bias)
        d = {name: _dev(v) for name, v in dict(xq=xq, xs=xs, packed=packed, gamma=gamma, x=x).items()}
        db = _dev(bias) if bias is not None else None
        out = torch.empty((m, n), dtype=torch.float32, device="cuda")
        acc = torch.empty((m, n), dtype=torch.int32, device="cuda")
        s = torch.cuda.current_stream().cuda_stream
        G.ternary_matmul_int8(d["xq"].data_ptr(), d["xs"].data_ptr(), m, d["packed"].data_ptr(), n, k, kp,
                              d["gamma"].data_ptr(), gamma.size > 1, 0 if db is None else db.data_ptr(),
                              out.data_ptr(), acc.data_ptr(), s)
        torch.cuda.synchronize()
        np.testing.assert_array_equal(acc.cpu().numpy(), acc_c, err_msg=f"m={m} k={k}")
        np.testing.assert_array_equal(bits(out.cpu().numpy()), bits(out_c), err_msg=f"m={m} k={k}")
        outf = torch.empty((m, n), dtype=torch.float32, device="cuda")
        G.ternary_matmul_float(d["x"].data_ptr(), m, d["packed"].data_ptr(), n, k, kp, d["gamma"].data_ptr(),
                               gamma.size > 1, 0 if db is None else db.data_ptr(), outf.data_ptr(), s)
        torch.cuda.synchronize()
        ref = R.matmul_float(x, packed, k, gamma, bias)
        scale = np.abs(x).sum(axis=1, keepdims=True) * gamma.reshape(1, -1) + np.abs(ref)
        assert (np.abs(outf.cpu().numpy().astype(np.float64) - ref) <= 1e-6 * scale + 1e-6).all()


@pytest.mark.cuda
@cuda
def test_cuda_bad_arguments():
    G = _cuda_ready()
    with pytest.raises(ValueError, match="kp must be"):
        G.ternary_matmul_int8(0, 0, 1, 0, 1, 10, 512, 0, False, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="xq: null"):
        G.ternary_matmul_int8(0, 1, 1, 1, 1, 10, 256, 1, False, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="dtype"):
        G.ternary_quantize_activations(1, 9, 1, 10, 256, 1e-5, 1, 1, 0)
