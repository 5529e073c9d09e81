"""Centroid aggregation with unsorted labels and very many groups.

These shapes take the paths tuned for large K (src/cpp/centroid/centroid_dispatch.cpp,
centroid_kernels.h):
- forward: the row permutation is built by a two-pass radix sort (label blocks, then the low
  label bits inside each block) once K > 2^17 and n >= 65536;
- backward (sum/mean, no leave-one-out): rows are walked in row order and each row's group
  gradient is read from grad_out in place (or from the 'post'-projected copy), prefetched by label.

Every result must have the bits of the sorted-label path (rows of each group summed in increasing
row order, the design's summation rule), for every ISA variant and thread count, and match the
float64 NumPy reference.
"""
import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb._backend import native_isas
from fastemb._reference import centroid as ref
from fastemb.centroid import native_backward, native_forward

pytestmark = pytest.mark.skipif(_backend.native() is None,
                                reason="native module not in use (FASTEMB_BACKEND=numpy or not built)")

RADIX_MIN_GROUPS = 1 << 17  # kRadixMinGroups in centroid_dispatch.cpp
RADIX_MIN_ROWS = 65536  # kRadixMinRows
N = 70_001  # odd, past RADIX_MIN_ROWS
K = 150_001  # past RADIX_MIN_GROUPS, not a power of two: the last label block is partial


def _threads(values):
    before = fastemb.get_num_threads()
    try:
        for t in values:
            fastemb.set_num_threads(t)
            yield t
    finally:
        fastemb.set_num_threads(before)


def _labels(rng, n, k, dtype=np.int64):
    """Uniform labels in [0, k) (most groups empty or singletons), the last label always present."""
    labels = rng.integers(0, k, size=n).astype(dtype)
    labels[rng.integers(0, n)] = k - 1
    return labels


def _forward(x, labels, k, reduce="mean", normalize="none", loo=False, weights=None, isa=""):
    return native_forward(_backend.native(), x, labels, None, k, weights, reduce, normalize, 1e-12, loo, isa=isa)


def _sorted_twin(x, labels, weights=None):
    """The same problem with rows stably sorted by label: it takes the no-permutation path, and
    rows of each group keep their order, so group results must have the same bits."""
    order = np.argsort(labels, kind="stable")
    return order, x[order], labels[order], None if weights is None else weights[order]


def test_shapes_reach_the_large_k_paths():
    assert K > RADIX_MIN_GROUPS and N >= RADIX_MIN_ROWS


@pytest.mark.parametrize("reduce,normalize,loo", [("mean", "none", False), ("sum", "pre", False),
                                                  ("amax", "none", False), ("amin", "post", False),
                                                  ("mean", "both", True), ("sum", "none", True)])
def test_forward_radix_perm_same_bits_as_sorted_labels(rng, reduce, normalize, loo):
    d = 5
    x = rng.standard_normal((N, d)).astype(np.float32)
    labels = _labels(rng, N, K)
    weights = None if reduce in ("amax", "amin") else rng.uniform(0.5, 1.5, N).astype(np.float32)
    order, xs, ls, ws = _sorted_twin(x, labels, weights)
    want, want_counts, want_wsum, want_arg, want_norm = _forward(xs, ls, K, reduce, normalize, loo, ws)
    if loo:  # rows of the sorted twin come back in sorted order
        unsorted_rows = np.empty_like(want)
        unsorted_rows[order] = want
        want = unsorted_rows
        if want_norm is not None:
            unsorted_norm = np.empty_like(want_norm)
            unsorted_norm[order] = want_norm
            want_norm = unsorted_norm
    for _ in _threads((1, 2)):
        for isa in native_isas():
            out, counts, wsum, arg, out_norm = _forward(x, labels, K, reduce, normalize, loo, weights, isa=isa)
            msg = f"{isa} {reduce} {normalize} loo={loo}"
            np.testing.assert_array_equal(out, want, err_msg=msg)
            np.testing.assert_array_equal(counts, want_counts, err_msg=msg)
            np.testing.assert_array_equal(wsum, want_wsum, err_msg=msg)
            if arg is not None:  # arg holds row ids: map the sorted twin's back
                np.testing.assert_array_equal(arg, np.where(want_arg >= 0, order[want_arg], -1), err_msg=msg)
            if out_norm is not None:
                np.testing.assert_array_equal(out_norm, want_norm, err_msg=msg)


@pytest.mark.parametrize("reduce,normalize,loo", [("mean", "none", False), ("amax", "none", False),
                                                  ("mean", "pre", True)])
def test_forward_radix_perm_matches_reference(rng, reduce, normalize, loo):
    d = 3
    x = rng.standard_normal((N, d)).astype(np.float32)
    labels = _labels(rng, N, K)
    want, want_counts, *_ = ref.forward(x.astype(np.float64), labels, None, K, None, reduce, normalize, 1e-12, loo)
    out, counts, *_ = _forward(x, labels, K, reduce, normalize, loo)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
    if not loo:
        empty = counts == 0
        assert empty.any() and not out[empty].any()


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_radix_perm_label_blocks_at_the_edges(rng, label_dtype):
    """Labels in the first and the last (partial) block, int32 and int64 labels, K just past the
    threshold and a K whose block count is not a power of two."""
    d = 2
    for k in (RADIX_MIN_GROUPS + 1, 3 * RADIX_MIN_GROUPS + 7):
        x = rng.standard_normal((N, d)).astype(np.float32)
        labels = np.concatenate([rng.integers(0, 3, N // 3), rng.integers(k - 3, k, N // 3),
                                 rng.integers(0, k, N - 2 * (N // 3))]).astype(label_dtype)
        rng.shuffle(labels)
        _, xs, ls, _ = _sorted_twin(x, labels)
        want = _forward(xs, ls.astype(np.int64), k, "sum")[0]
        out, counts, *_ = _forward(x, labels, k, "sum")
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))


def test_radix_perm_bad_label_still_raises(rng):
    x = rng.standard_normal((N, 2)).astype(np.float32)
    labels = _labels(rng, N, K)
    labels[N // 2] = K
    with pytest.raises(ValueError, match="index"):
        fastemb.centroid_aggregate(x, labels, num_groups=K)
    labels[N // 2] = -1
    with pytest.raises(ValueError, match="index"):
        fastemb.centroid_aggregate(x, labels, num_groups=K)


@pytest.mark.parametrize("reduce,normalize,weighted", [("mean", "none", False), ("mean", "none", True),
                                                       ("sum", "pre", True), ("mean", "post", True),
                                                       ("mean", "both", False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_backward_rows_path_same_bits_as_sorted_labels(rng, reduce, normalize, weighted, dtype):
    """Unsorted backward (rows in row order, grad_out read in place without 'post') against the
    sorted-label segment path, every ISA and thread count; grad_w too when weighted."""
    n, d, k = 20_011, 24, 30_000
    x = rng.standard_normal((n, d)).astype(dtype)
    labels = _labels(rng, n, k)
    weights = rng.uniform(0.5, 1.5, n).astype(np.float32) if weighted else None
    C = _backend.native()
    args = (None, k, weights, reduce, normalize, 1e-12, False)
    saved = native_forward(C, x, labels, *args)
    g = rng.standard_normal(saved[0].shape).astype(dtype)
    order, xs, ls, ws = _sorted_twin(x, labels, weights)
    args_s = (None, k, ws, reduce, normalize, 1e-12, False)
    saved_s = native_forward(C, xs, ls, *args_s)
    np.testing.assert_array_equal(saved[0], saved_s[0])
    want_x, want_w = native_backward(C, g, xs, ls, *args_s, *saved_s, need_grad_w=weighted)
    for _ in _threads((1, 2)):
        for isa in native_isas():
            gx, gw = native_backward(C, g, x, labels, *args, *saved, need_grad_w=weighted, isa=isa)
            np.testing.assert_array_equal(gx[order], want_x, err_msg=isa)
            if weighted:
                np.testing.assert_array_equal(gw[order], want_w, err_msg=isa)
    # And the float64 reference.
    r_x, r_w = ref.backward(g.astype(np.float64), x.astype(np.float64), labels, None, k, weights, reduce, normalize,
                            1e-12, False, *[None if a is None else np.asarray(a, dtype=np.float64)
                                            if a.dtype.kind == "f" else a for a in saved],
                            need_grad_w=weighted)
    tol = 2e-5 if dtype == np.float32 else 3e-3
    np.testing.assert_allclose(gx.astype(np.float64), r_x, rtol=tol, atol=tol)
    if weighted:
        np.testing.assert_allclose(gw, r_w, rtol=1e-4, atol=1e-4)


def test_backward_one_row_and_empty_groups(rng):
    """One row, many empty groups: grad_x is the row's group gradient / 1; empty groups take no part."""
    C = _backend.native()
    x = rng.standard_normal((1, 7)).astype(np.float32)
    labels = np.array([K - 1])
    args = (labels, None, K, None, "mean", "none", 1e-12, False)
    saved = native_forward(C, x, *args)
    np.testing.assert_array_equal(saved[0][K - 1], x[0])
    assert not saved[0][:-1].any() and saved[1].sum() == 1
    g = rng.standard_normal((K, 7)).astype(np.float32)
    for isa in native_isas():
        gx, _ = native_backward(C, g, x, *args, *saved, isa=isa)
        np.testing.assert_array_equal(gx, g[K - 1:])
