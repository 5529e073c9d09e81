"""Native binarize kernels (every ISA variant) against the float64 NumPy reference, bit for bit."""
import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import binary as B
from fastemb._backend import native_isas
from fastemb._reference import binary as ref

C = _backend.native()
pytestmark = pytest.mark.skipif(C is None, reason="native module not built (FASTEMB_BACKEND=numpy)")

DTYPES = (np.float32, np.float64, np.float16)
RULES = ("ge", "gt")
# Not multiples of 8 / 16 / 64, around the 64-element blocks and the 128-element pairwise leaves.
DIMS = (1, 3, 8, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 257, 768, 1030)


def _scales(rng, n):
    return (None, 0.37, rng.uniform(0.05, 3.0, n))


def _native(x, bits, scale, rule, isa):
    s = None if scale is None else np.asarray(scale, dtype=np.float64)
    return B.native_binarize(C, x, bits, s, rule, isa)


def _check(x, bits, scale, rule, isa, msg=""):
    got = _native(x, bits, scale, rule, isa)
    exp = ref.binarize(x, bits, scale, rule)
    assert got.shape == exp.shape, msg
    np.testing.assert_array_equal(got, exp, err_msg=f"{isa} {x.dtype} m={x.shape[1]} bits={bits} {rule} {msg}")


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_isa_random(rng, isa, dtype):
    for m in DIMS:
        x = (rng.standard_normal((9, m)) * rng.uniform(0.01, 100, (9, 1))).astype(dtype)
        x[0] = 0  # all-zero row: s = 1
        x[1, ::3] = 0
        x[2, ::2] = -0.0
        for bits in (1, 2, 3, 4):
            for rule in RULES:
                for scale in _scales(rng, x.shape[0]):
                    _check(x, bits, scale, rule, isa, f"scale={type(scale).__name__}")


def _dyadic_rows(rng, n, m, bits, s0):
    """Rows whose mean|x| is exactly s0 (a power of two) and whose values x / s0 sit on the level
    boundaries of every plane (multiples of 2^-(bits-1)), so every decision is a tie."""
    step = 2.0 ** -(bits - 1)
    v = rng.integers(-2 ** bits, 2 ** bits + 1, (n, m)).astype(np.float64) * step
    v[:, -1] = 0
    total = np.abs(v).sum(axis=1)
    # last element tops sum|v| up to a multiple of m (so that mean|v| = an integer power... of 2)
    target = np.maximum(2.0 ** np.ceil(np.log2(np.maximum(total, 1) / m + 1)), 1.0) * m
    v[:, -1] = np.where(rng.random(n) < 0.5, -1, 1) * (target - total)
    mean = np.abs(v).sum(axis=1) / m  # a power of two
    return v / mean[:, None] * s0


@pytest.mark.parametrize("isa", native_isas())
def test_values_exactly_on_levels(rng, isa):
    for bits in (2, 3, 4):
        for dtype, s0s in ((np.float64, (1.0, 2.0 ** -1060, 2.0 ** 1000, 2.0 ** -30)),
                           (np.float32, (1.0, 2.0 ** -140, 2.0 ** 100)), (np.float16, (1.0, 2.0 ** -20, 2.0 ** 8))):
            for s0 in s0s:
                for m in (8, 16, 70):
                    x = _dyadic_rows(rng, 6, m, bits, s0).astype(dtype)
                    # neighbours one ulp away from the ties
                    up = np.nextafter(x, np.array(np.inf, dtype))
                    down = np.nextafter(x, np.array(-np.inf, dtype))
                    for arr in (x, up, down):
                        arr = np.ascontiguousarray(arr)
                        for rule in RULES:
                            _check(arr, bits, None, rule, isa, f"s0={s0}")
                            _check(arr, bits, s0 * 0.5, rule, isa, f"s0={s0} scalar")
                            # explicit scale: ties against scale * level
                            xs = (_dyadic_rows(rng, 6, m, bits, 1.0) * 0.75).astype(dtype)
                            _check(xs, bits, 0.75, rule, isa, "scale=0.75")
    # the two rules really differ on ties, and plane 0 of "gt" is ubinary
    x = np.array([[1.0, -1.0, 0.0, -0.0, 0.5, 2.0, -3.0, 0.25]], dtype=np.float32)
    ge, gt = fastemb.binarize(x, 2, threshold_rule="ge"), fastemb.binarize(x, 2, threshold_rule="gt")
    assert not np.array_equal(ge, gt)
    np.testing.assert_array_equal(gt[:, 0], np.packbits(x > 0, axis=-1))


@pytest.mark.parametrize("isa", native_isas())
def test_special_values(isa):
    f32 = np.finfo(np.float32)
    rows32 = np.array([
        [-0.0, 0.0, f32.smallest_subnormal, -f32.smallest_subnormal, f32.tiny, -f32.tiny, 1.0, -1.0],
        [f32.max, -f32.max, 1.0, 0.0, -0.0, 3e38, -3e38, 1e-40],
        [1e-45, -1e-45, 2e-45, 0.0, -0.0, 0.0, 0.0, 1e-44],
        [0.0] * 8,
        [-0.0] * 8,
    ], dtype=np.float32)
    f64 = np.finfo(np.float64)
    rows64 = np.array([
        [f64.max, -f64.max, f64.max, 1.0, -1.0, 1e300, -1e300, 0.0],  # sum|x| overflows: s = inf
        [5e-324, -5e-324, 1e-320, -1e-310, 0.0, -0.0, 2e-323, 3e-322],  # subnormal s
        [1e-300, -2e-300, 3e-300, 1.0, -1.0, 1e-320, 0.0, -0.0],
    ], dtype=np.float64)
    rows16 = np.array([[6e-8, -6e-8, 65504.0, -65504.0, 0.0, -0.0, 1e-7, 1.0]], dtype=np.float16)
    for x in (rows32, rows64, rows16):
        for m in (3, 8):
            xm = np.ascontiguousarray(x[:, :m])
            for bits in (1, 2, 3, 4):
                for rule in RULES:
                    for scale in (None, 1e-30, 1e30, 1.0):
                        _check(xm, bits, scale, rule, isa, f"scale={scale}")
    # huge explicit scales against float64's extremes
    for bits in (2, 4):
        _check(rows64, bits, f64.max, "ge", isa)
        _check(rows64, bits, 5e-324, "gt", isa)


def test_shapes_and_layouts(rng):
    for bits in (1, 3):
        for shape in ((0, 5), (4, 0), (0, 0), (1, 1), (1, 9), (3, 1)):
            x = rng.standard_normal(shape).astype(np.float32)
            got = fastemb.binarize(x, bits)
            assert got.shape == (shape[0], bits, (shape[1] + 7) // 8)
            np.testing.assert_array_equal(got, ref.binarize(x, bits))
    base = rng.standard_normal((40, 300))
    for dtype in DTYPES:
        b = base.astype(dtype)
        for view in (b[:, ::2], b.T[:70], b[::-1], b[:, ::-1], b[:, 5:205], b[3::3, 1:], np.asfortranarray(b),
                     b[:, :1], b[:1]):
            before = view.copy()
            for bits in (1, 2, 4):
                for rule in RULES:
                    np.testing.assert_array_equal(fastemb.binarize(view, bits, threshold_rule=rule),
                                                  ref.binarize(np.ascontiguousarray(view), bits, None, rule))
            np.testing.assert_array_equal(view, before)  # input never modified


@pytest.mark.parametrize("isa", native_isas())
def test_long_rows(rng, isa):
    # past the kernel's leaf table (512 pairwise leaves): the recursive sum
    for m in (40_000, 70_001):
        x = rng.standard_normal((2, m)).astype(np.float32) * np.float32(3.5)
        for bits in (2, 3):
            _check(x, bits, None, "ge", isa, f"m={m}")


def test_row_stride_read_in_place(rng):
    big = rng.standard_normal((20, 100)).astype(np.float32)
    view = big[:, 10:73]  # rows with contiguous elements and stride 100: no copy needed
    got = B.native_binarize(C, view, 2, None, "ge")
    np.testing.assert_array_equal(got, ref.binarize(np.ascontiguousarray(view), 2))


def test_padding_bits_zero(rng):
    for m in (1, 5, 9, 63, 65, 100):
        x = np.abs(rng.standard_normal((5, m))).astype(np.float32) + 1  # every true bit set on plane 0
        codes = fastemb.binarize(x, 4)
        valid = m - 8 * (codes.shape[-1] - 1)
        assert not (codes[..., -1] & np.uint8((1 << (8 - valid)) - 1)).any()


def test_thread_count_does_not_change_bits(rng):
    x = rng.standard_normal((3000, 100)).astype(np.float32)
    before = fastemb.get_num_threads()
    try:
        fastemb.set_num_threads(1)
        one = fastemb.binarize(x, 3)
        fastemb.set_num_threads(2)
        two = fastemb.binarize(x, 3)
    finally:
        fastemb.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, ref.binarize(x, 3))


def test_fallback_without_native_module(rng, monkeypatch):
    x = rng.standard_normal((30, 77)).astype(np.float32)
    native = fastemb.binarize(x, 2, 0.5, "gt")
    monkeypatch.setattr(_backend, "native", lambda: None)
    np.testing.assert_array_equal(fastemb.binarize(x, 2, 0.5, "gt"), native)
    with pytest.raises(ValueError, match="NaN"):
        fastemb.binarize(np.array([[np.nan, 1.0]]), 2)


def test_other_dtypes_use_reference(rng):
    for dtype in (np.int32, np.int8, np.uint8, np.bool_, np.dtype(">f4")):
        x = rng.integers(-3, 4, (6, 19)).astype(dtype)
        for bits in (1, 2):
            np.testing.assert_array_equal(fastemb.binarize(x, bits), ref.binarize(x, bits))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_input(dtype):
    for bad, msg in ((np.nan, "NaN"), (np.inf, "finite"), (-np.inf, "finite")):
        for bits in (1, 2):
            for m in (3, 64, 130):
                x = np.ones((4, m), dtype=dtype)
                x[2, m - 1] = bad
                before = x.copy()
                with pytest.raises(ValueError, match=msg):
                    fastemb.binarize(x, bits)
                np.testing.assert_array_equal(x, before)
    x = np.ones((3, 4), dtype=dtype)
    with pytest.raises(ValueError, match="scale"):
        fastemb.binarize(x, 2, scale=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="scale"):
        fastemb.binarize(x, 2, scale=np.ones(2))
    with pytest.raises(TypeError, match="bits"):
        fastemb.binarize(x, 2.0)
    with pytest.raises(ValueError, match="threshold_rule"):
        fastemb.binarize(x, 2, threshold_rule="gte")
    with pytest.raises(ValueError, match="isa"):
        B.native_binarize(C, x, 2, None, "ge", isa="sse9")


def test_native_argument_checks():
    out = np.empty((2, 1, 1), np.uint8)
    x = np.ones((2, 4), np.float32)
    A = _backend.address
    with pytest.raises(ValueError, match="bits"):
        C.binary_binarize(A(x), 0, 2, 4, 4, 5, 0, 0, False, A(out))
    with pytest.raises(ValueError, match="dtype"):
        C.binary_binarize(A(x), 7, 2, 4, 4, 1, 0, 0, False, A(out))
    with pytest.raises(ValueError, match="stride"):
        C.binary_binarize(A(x), 0, 2, 4, 3, 1, 0, 0, False, A(out))
    bad = np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="scale"):
        C.binary_binarize(A(x), 0, 2, 4, 4, 2, A(bad), 1, False, A(out))
    with pytest.raises(ValueError, match="null"):
        C.binary_binarize(0, 0, 2, 4, 4, 1, 0, 0, False, A(out))


def _torch_cases(rng):
    x = rng.standard_normal((13, 150)) * rng.uniform(0.01, 10, (13, 1))
    x[0] = 0
    x[1, ::2] = -0.0
    x[2] = _dyadic_rows(rng, 1, 150, 3, 0.5)[0]
    x[3, :7] = [1e-40, -1e-40, 1e-45, 3e38, -3e38, 0.0, 1e-8]
    return x


def test_torch_cpu_uses_native_and_matches(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    import fastemb.torch as ft
    x = _torch_cases(rng)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        xt = torch.from_numpy(np.clip(x, -6e4, 6e4) if dtype == torch.float16 else x).to(dtype)
        for bits in (1, 2, 3, 4):
            for rule in RULES:
                for scale in (None, 0.3, torch.from_numpy(rng.uniform(0.1, 2, 13)).to(dtype)):
                    got = ft.binarize(xt, bits, scale, rule)
                    with monkeypatch.context() as mp:  # the torch-ops float64 path (the one CUDA used)
                        mp.setattr(_backend, "native", lambda: None)
                        exp = ft.binarize(xt, bits, scale, rule)
                    assert torch.equal(got, exp), (dtype, bits, rule, type(scale))
                    if dtype != torch.bfloat16:
                        sc = scale.double().numpy() if isinstance(scale, torch.Tensor) else scale
                        np.testing.assert_array_equal(got.numpy(), ref.binarize(xt.numpy(), bits, sc, rule))
        # a strided view is read without error and gives the contiguous copy's codes
        view = xt[:, 3:140:2]
        assert torch.equal(ft.binarize(view, 2), ft.binarize(view.contiguous(), 2))
    with pytest.raises(ValueError, match="finite"):
        ft.binarize(torch.tensor([[1.0, float("inf")] * 40]), 2)
    with pytest.raises(ValueError, match="scale"):
        ft.binarize(torch.ones(2, 8), 2, torch.tensor([1.0, 0.0]))


def test_torch_opcheck_native_cpu(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_torch_cases(rng)).float()
    torch.library.opcheck(torch.ops.fastemb.binarize, (x, 2, None, "gt"))
    torch.library.opcheck(torch.ops.fastemb.binarize, (x, 3, torch.ones(13, dtype=torch.float64), "ge"))


@pytest.mark.cuda
def test_cuda_kernel_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    mod = _backend.cuda_module()
    if mod is None or not hasattr(mod, "binary_binarize"):
        pytest.fail("CUDA device present but fastemb._C_cuda has no binary_binarize")
    import fastemb.torch as ft
    x = _torch_cases(rng)
    for m in (1, 7, 150):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            xm = np.ascontiguousarray(x[:, :m])
            xt = torch.from_numpy(np.clip(xm, -6e4, 6e4) if dtype == torch.float16 else xm).to(dtype)
            for bits in (1, 2, 3, 4):
                for rule in RULES:
                    for scale in (None, 0.3):
                        got = ft.binarize(xt.cuda(), bits, scale, rule)
                        assert torch.equal(got.cpu(), ft.binarize(xt, bits, scale, rule)), (m, dtype, bits, rule)
    # the default "async" checks fail through a device-side assert (no ValueError, and the CUDA context of the
    # whole pytest process is lost): read the flag on the host here
    previous = ft.set_cuda_checks("sync")
    try:
        with pytest.raises(ValueError, match="finite"):
            ft.binarize(torch.tensor([[1.0, float("nan")]], device="cuda"), 2)
    finally:
        ft.set_cuda_checks(previous)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(data=st.data(), bits=st.integers(1, 4), rule=st.sampled_from(RULES),
       dtype=st.sampled_from(DTYPES), use_scale=st.booleans())
def test_hypothesis_matches_reference(data, bits, rule, dtype, use_scale):
    shape = data.draw(st.tuples(st.integers(0, 5), st.integers(0, 140)))
    width = np.dtype(dtype).itemsize * 8
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(allow_nan=False, allow_infinity=False, width=width)))
    scale = None
    if use_scale:
        scale = data.draw(st.floats(min_value=5e-324, max_value=1e308, allow_nan=False, allow_infinity=False,
                                    exclude_min=False).filter(lambda v: v > 0))
    isa = data.draw(st.sampled_from(native_isas()))
    np.testing.assert_array_equal(_native(x, bits, scale, rule, isa), ref.binarize(x, bits, scale, rule))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_input_is_copied_not_read_in_place(rng, dtype):
    """Rows at an odd byte offset (as distributed may deserialize them) are copied before the kernel reads them
    (reading them as float is undefined behaviour; UBSan in .ci/sanitize flags it)."""
    x = rng.standard_normal((9, 37)).astype(dtype)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    odd = raw[1:].view(dtype).reshape(x.shape)
    odd[...] = x
    assert not odd.flags.aligned
    for bits in (1, 2, 3):
        np.testing.assert_array_equal(fastemb.binarize(odd, bits), ref.binarize(x, bits))
