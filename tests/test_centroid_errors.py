"""centroid_aggregate: bad inputs raise TypeError/ValueError whose message names the argument.

Runs on both backends (native and FASTEMB_BACKEND=numpy): the Python layer validates first, and
the native C++ layer re-checks label and offset values itself (tested directly at the end).
"""
import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb.centroid import native_backward, native_forward

from fastemb._backend import native_isas

N, D, K = 6, 3, 3


def agg(*args, **kwargs):
    return fastemb.centroid_aggregate(*args, **kwargs)


@pytest.fixture
def x():
    return np.arange(N * D, dtype=np.float32).reshape(N, D) / 7.0


@pytest.fixture
def labels():
    return np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)


@pytest.fixture
def offsets():
    return np.array([0, 2, 4, 6], dtype=np.int64)


# ---- x -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.complex64, np.complex128, object, bool,
                                   np.longdouble, "U3"])
def test_x_wrong_dtype(labels, dtype):
    bad = np.ones((N, D)).astype(dtype)
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        agg(bad, labels)


@pytest.mark.parametrize("bad", [
    [[1.0, 2.0]] * N,
    tuple((1.0, 2.0) for _ in range(N)),
    3.0,
    None,
])
def test_x_not_ndarray(labels, bad):
    with pytest.raises(TypeError, match=r"\bx\b.*ndarray"):
        agg(bad, labels)


@pytest.mark.parametrize("shape", [(N,), (N, D, 1), (1, N, D), ()])
def test_x_wrong_ndim(shape):
    bad = np.ones(shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"\bx\b.*2-D"):
        agg(bad, np.zeros(N, dtype=np.int64))


def test_x_dtype_checked_before_index(labels):
    with pytest.raises(TypeError, match=r"\bx\b"):
        agg(np.ones((N, D), dtype=np.int64), labels.astype(np.float64))


# ---- index ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, bool, object])
def test_index_wrong_dtype(x, labels, dtype):
    with pytest.raises(TypeError, match="index"):
        agg(x, labels.astype(dtype), num_groups=K)


def test_index_list_of_floats(x):
    with pytest.raises(TypeError, match="index"):
        agg(x, [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], num_groups=K)


def test_index_2d(x, labels):
    with pytest.raises(ValueError, match="index.*1-D"):
        agg(x, labels.reshape(2, 3), num_groups=K)
    with pytest.raises(ValueError, match="index.*1-D"):
        agg(x, labels[:, None], num_groups=K)


def test_index_0d(x):
    with pytest.raises(ValueError, match="index"):
        agg(x, np.int64(0), num_groups=K)


@pytest.mark.parametrize("length", [0, N - 1, N + 1])
def test_index_length_mismatch(x, length):
    with pytest.raises(ValueError, match="index"):
        agg(x, np.zeros(length, dtype=np.int64), num_groups=K)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.int8])
@pytest.mark.parametrize("bad_label", [K, K + 1, 1000])
def test_index_label_too_large(x, labels, dtype, bad_label):
    lab = labels.copy()
    lab[4] = bad_label
    with pytest.raises(ValueError, match="index"):
        agg(x, lab.astype(dtype), num_groups=K)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin"])
def test_index_negative_label(x, labels, dtype, reduce):
    lab = labels.copy()
    lab[2] = -1
    with pytest.raises(ValueError, match="index"):
        agg(x, lab.astype(dtype), num_groups=K, reduce=reduce)
    # num_groups left to default (max + 1): a negative label must still be refused.
    with pytest.raises(ValueError, match="index"):
        agg(x, lab.astype(dtype), reduce=reduce)


def test_index_labels_with_num_groups_zero(x):
    with pytest.raises(ValueError, match="index"):
        agg(x, np.zeros(N, dtype=np.int64), num_groups=0)


def test_index_all_negative_without_num_groups(x):
    with pytest.raises(ValueError, match="index"):
        agg(x, np.full(N, -3, dtype=np.int64))


def test_index_huge_uint64_label_reported_as_given(x):
    lab = np.zeros(N, dtype=np.uint64)
    lab[1] = np.iinfo(np.uint64).max
    with pytest.raises(ValueError, match="index.*18446744073709551615"):
        agg(x, lab, num_groups=K)


# ---- offsets -------------------------------------------------------------------------------------

def test_offsets_non_monotone(x):
    with pytest.raises(ValueError, match="offsets.*non-decreasing"):
        agg(x, offsets=np.array([0, 4, 2, N]))


def test_offsets_non_monotone_with_values_past_n(x):
    with pytest.raises(ValueError, match="offsets"):
        agg(x, offsets=np.array([0, N + 5, N]))


@pytest.mark.parametrize("first", [1, -1, N])
def test_offsets_not_starting_at_zero(x, first):
    with pytest.raises(ValueError, match="offsets.*start"):
        agg(x, offsets=np.array([first, 4, N]))


@pytest.mark.parametrize("last", [N - 1, N + 1, 0])
def test_offsets_not_ending_at_n(x, last):
    with pytest.raises(ValueError, match="offsets.*end"):
        agg(x, offsets=np.array([0, 0, last]))


def test_offsets_single_entry_must_be_n(x):
    with pytest.raises(ValueError, match="offsets"):
        agg(x, offsets=np.array([0]))


@pytest.mark.parametrize("bad", [np.zeros(0, dtype=np.int64), np.zeros((2, 2), dtype=np.int64),
                                 np.int64(0)])
def test_offsets_wrong_shape(x, bad):
    with pytest.raises(ValueError, match="offsets"):
        agg(x, offsets=bad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, bool, np.complex128])
def test_offsets_wrong_dtype(x, offsets, dtype):
    with pytest.raises(TypeError, match="offsets"):
        agg(x, offsets=offsets.astype(dtype))


# ---- index / offsets / num_groups ----------------------------------------------------------------

def test_both_index_and_offsets(x, labels, offsets):
    with pytest.raises(ValueError, match="index.*offsets"):
        agg(x, labels, offsets=offsets)


def test_neither_index_nor_offsets(x):
    with pytest.raises(ValueError, match="index.*offsets"):
        agg(x)
    with pytest.raises(ValueError, match="index.*offsets"):
        agg(x, num_groups=K)


@pytest.mark.parametrize("k", [-1, -100])
def test_num_groups_negative(x, labels, k):
    with pytest.raises(ValueError, match="num_groups"):
        agg(x, labels, num_groups=k)


def test_num_groups_negative_empty_input():
    with pytest.raises(ValueError, match="num_groups"):
        agg(np.zeros((0, D), np.float32), np.zeros(0, np.int64), num_groups=-1)


@pytest.mark.parametrize("k", [3.0, 3.5, "3", True, False, 3 + 0j, np.float64(3.0)])
def test_num_groups_not_an_int(x, labels, k):
    with pytest.raises(TypeError, match="num_groups"):
        agg(x, labels, num_groups=k)


def test_num_groups_numpy_int_accepted(x, labels):
    out = agg(x, labels, num_groups=np.int32(5))
    assert out.shape == (5, D)


@pytest.mark.parametrize("k", [2, 4, 0, -1, np.int64(4)])
def test_num_groups_disagrees_with_offsets(x, offsets, k):
    with pytest.raises(ValueError, match="num_groups"):
        agg(x, offsets=offsets, num_groups=k)


@pytest.mark.parametrize("k", [3.0, 3.7, "3"])
def test_num_groups_not_an_int_with_offsets(x, offsets, k):
    with pytest.raises(TypeError, match="num_groups"):
        agg(x, offsets=offsets, num_groups=k)


def test_num_groups_garbage_string_with_offsets_names_argument(x, offsets):
    with pytest.raises((TypeError, ValueError), match="num_groups"):
        agg(x, offsets=offsets, num_groups="abc")


# ---- weights -------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, N - 1, N + 1])
def test_weights_wrong_length(x, labels, length):
    with pytest.raises(ValueError, match="weights"):
        agg(x, labels, weights=np.ones(length))


@pytest.mark.parametrize("shape", [(N, 1), (1, N), ()])
def test_weights_wrong_shape(x, labels, shape):
    with pytest.raises(ValueError, match="weights"):
        agg(x, labels, weights=np.ones(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("loo", [False, True])
def test_weights_not_finite(x, labels, bad, reduce, loo):
    w = np.ones(N)
    w[3] = bad
    with pytest.raises(ValueError, match="weights.*finite"):
        agg(x, labels, weights=w, reduce=reduce, leave_one_out=loo)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_weights_overflowing_to_inf_in_float32(x, labels):
    # 1e300 is finite in float64 but is inf once cast to float32 (x's accumulation dtype).
    w = np.ones(N)
    w[0] = 1e300
    with pytest.raises(ValueError, match="weights"):
        agg(x, labels, weights=w)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, bool, object, "U2"])
def test_weights_wrong_dtype(x, labels, dtype):
    with pytest.raises(TypeError, match="weights"):
        agg(x, labels, weights=np.ones(N).astype(dtype))


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_weights_with_extreme_reduce(x, labels, reduce):
    with pytest.raises(ValueError, match="weights"):
        agg(x, labels, weights=np.ones(N), reduce=reduce)
    with pytest.raises(ValueError, match="weights"):
        agg(x, offsets=np.array([0, 2, 4, 6]), weights=np.ones(N), reduce=reduce)


# ---- modes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_leave_one_out_with_extreme_reduce(x, labels, reduce):
    with pytest.raises(ValueError, match="leave_one_out"):
        agg(x, labels, reduce=reduce, leave_one_out=True)


@pytest.mark.parametrize("reduce", ["avg", "maximum", "Mean", "SUM", " sum", "", None, 1, "prod"])
def test_unknown_reduce(x, labels, reduce):
    with pytest.raises(ValueError, match="reduce"):
        agg(x, labels, reduce=reduce)


@pytest.mark.parametrize("normalize", ["l2", "Pre", "POST", "", None, True, 0, "after"])
def test_unknown_normalize(x, labels, normalize):
    with pytest.raises(ValueError, match="normalize"):
        agg(x, labels, normalize=normalize)


@pytest.mark.parametrize("kw", [{"reduce": ["sum"]}, {"normalize": ["pre"]}])
def test_unhashable_mode_names_argument(x, labels, kw):
    (name,) = kw
    with pytest.raises((TypeError, ValueError), match=name):
        agg(x, labels, **kw)


@pytest.mark.parametrize("eps", [0, 0.0, -0.0, -1e-12, -1.0, float("nan"), float("inf"), float("-inf"), "1e-6",
                                 None, 1j])
def test_bad_eps(x, labels, eps):
    with pytest.raises(ValueError, match="eps"):
        agg(x, labels, eps=eps, normalize="both")


def test_bad_eps_checked_even_without_normalize(x, labels):
    with pytest.raises(ValueError, match="eps"):
        agg(x, labels, eps=-1.0)


@pytest.mark.parametrize("eps", [np.float32(1e-6), np.int64(1), np.float16(1e-3)])
def test_numpy_scalar_eps_accepted(x, labels, eps):
    out = agg(x, labels, eps=eps, normalize="post")
    assert np.all(np.isfinite(out))


def test_errors_do_not_depend_on_empty_input():
    # Validation also runs when there is nothing to reduce.
    x0 = np.zeros((0, D), np.float32)
    with pytest.raises(ValueError, match="reduce"):
        agg(x0, np.zeros(0, np.int64), reduce="median")
    with pytest.raises(ValueError, match="weights"):
        agg(x0, np.zeros(0, np.int64), weights=np.ones(1))
    with pytest.raises(ValueError, match="offsets"):
        agg(x0, offsets=np.array([0, 1]))


# ---- the native C++ layer checks values itself ---------------------------------------------------

needs_native = pytest.mark.skipif(_backend.native() is None,
                                  reason="native module not in use (FASTEMB_BACKEND=numpy or not built)")


def _isas():
    return native_isas() or ["-"]


@needs_native
@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", [K, K + 7, -1, np.iinfo(np.int32).min])
@pytest.mark.parametrize("reduce,loo", [("mean", False), ("sum", True), ("amax", False)])
def test_native_forward_bad_label_raises(x, labels, isa, label_dtype, bad, reduce, loo):
    C = _backend.native()
    lab = labels.copy()
    lab[-1] = bad
    lab = lab.astype(label_dtype)
    with pytest.raises(ValueError, match="index.*out of range"):
        native_forward(C, x, lab, None, K, None, reduce, "none", 1e-12, loo, isa=isa)


@needs_native
@pytest.mark.parametrize("isa", _isas())
def test_native_forward_bad_label_unsorted_first(x, isa):
    # The bad label comes first, before any sortedness is established.
    C = _backend.native()
    lab = np.array([K, 0, 2, 1, 0, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="index"):
        native_forward(C, x, lab, None, K, None, "mean", "both", 1e-12, False, isa=isa)


@needs_native
@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("bad,match", [
    ([0, 4, 2, N], "offsets.*non-decreasing"),
    ([0, N + 3, 1, N], "offsets"),
    ([1, 2, 4, N], "offsets.*start"),
    ([-2, 2, 4, N], "offsets.*start"),
    ([0, 2, 4, N - 1], "offsets.*end"),
    ([0, 2, 4, N + 1], "offsets.*end"),
])
@pytest.mark.parametrize("reduce", ["mean", "amin"])
def test_native_forward_bad_offsets_raises(x, isa, bad, match, reduce):
    C = _backend.native()
    off = np.array(bad, dtype=np.int64)
    with pytest.raises(ValueError, match=match):
        native_forward(C, x, None, off, K, None, reduce, "none", 1e-12, False, isa=isa)


@needs_native
@pytest.mark.parametrize("isa", _isas())
def test_native_backward_bad_label_raises(x, labels, isa):
    C = _backend.native()
    out, counts, wsum, arg, out_norm = native_forward(C, x, labels, None, K, None, "mean", "post", 1e-12, False,
                                                      isa=isa)
    bad = labels.copy()
    bad[0] = K
    with pytest.raises(ValueError, match="index"):
        native_backward(C, np.ones_like(out), x, bad, None, K, None, "mean", "post", 1e-12, False,
                        out, counts, wsum, arg, out_norm, isa=isa)
    bad[0] = -5
    with pytest.raises(ValueError, match="index"):
        native_backward(C, np.ones_like(out), x, bad, None, K, None, "mean", "post", 1e-12, False,
                        out, counts, wsum, arg, out_norm, isa=isa)


@needs_native
@pytest.mark.parametrize("isa", _isas())
def test_native_backward_bad_offsets_raises(x, offsets, isa):
    C = _backend.native()
    out, counts, wsum, arg, out_norm = native_forward(C, x, None, offsets, K, None, "amax", "none", 1e-12, False,
                                                      isa=isa)
    bad = np.array([0, 5, 3, N], dtype=np.int64)
    with pytest.raises(ValueError, match="offsets"):
        native_backward(C, np.ones_like(out), x, None, bad, K, None, "amax", "none", 1e-12, False,
                        out, counts, wsum, arg, out_norm, isa=isa)


@needs_native
def test_native_backward_missing_saved_tensors_raises(x, labels):
    C = _backend.native()
    out, counts, wsum, arg, out_norm = native_forward(C, x, labels, None, K, None, "amax", "post", 1e-12, False)
    with pytest.raises(ValueError, match="arg"):
        native_backward(C, np.ones_like(out), x, labels, None, K, None, "amax", "none", 1e-12, False,
                        out, counts, wsum, None, None)
    with pytest.raises(ValueError, match="out_norm"):
        native_backward(C, np.ones_like(out), x, labels, None, K, None, "amax", "post", 1e-12, False,
                        out, counts, wsum, arg, None)


@needs_native
def test_native_raw_entry_checks_modes_and_sizes(x, labels):
    """The raw binding validates before it touches any buffer (all outputs are null here)."""
    C = _backend.native()
    A = _backend.address
    code = _backend.DTYPE_CODES["float32"]

    def call(k=K, dtype=code, labels_addr=A(labels), offsets_addr=0, weights_addr=0, reduce=1, normalize=0,
             eps=1e-12, loo=False, isa=""):
        C.centroid_forward(A(x), dtype, N, D, labels_addr, False, offsets_addr, k, weights_addr, reduce, normalize,
                           eps, loo, 0, 0, 0, 0, 0, isa)

    with pytest.raises(ValueError, match="num_groups"):
        call(k=-1)
    with pytest.raises(ValueError, match="dtype"):
        call(dtype=7)
    with pytest.raises(ValueError, match="reduce"):
        call(reduce=9)
    with pytest.raises(ValueError, match="normalize"):
        call(normalize=4)
    with pytest.raises(ValueError, match="eps"):
        call(eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        call(eps=float("nan"))
    with pytest.raises(ValueError, match="index.*offsets"):
        call(labels_addr=0)
    with pytest.raises(ValueError, match="index.*offsets"):
        call(offsets_addr=A(np.array([0, 2, 4, 6], dtype=np.int64)))
    with pytest.raises(ValueError, match="weights"):
        call(reduce=2, weights_addr=A(np.ones(N, np.float32)))
    with pytest.raises(ValueError, match="leave_one_out"):
        call(reduce=3, loo=True)
    with pytest.raises(ValueError, match="isa"):
        call(isa="sse9")


@needs_native
def test_native_error_leaves_process_usable(x, labels):
    """After a refused call, the same inputs with a valid label run and match the public API."""
    C = _backend.native()
    bad = labels.copy()
    bad[1] = 99
    for _ in range(3):
        with pytest.raises(ValueError):
            native_forward(C, x, bad, None, K, None, "mean", "none", 1e-12, False)
    out, *_ = native_forward(C, x, labels, None, K, None, "mean", "none", 1e-12, False)
    np.testing.assert_array_equal(out, agg(x, labels, num_groups=K))
