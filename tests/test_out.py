"""``out=`` on binarize, centroid_aggregate and ternary_matmul (fastrp and sparse_random_projection: test_graph.py).

The result written to ``out`` has the same bits as a fresh result whatever ``out`` held before, ``out`` itself
is returned, and a buffer of the wrong dtype / shape / layout, read-only, or overlapping an input raises an
error naming ``out`` before anything is written.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastemb
from fastemb import _backend

rng = np.random.default_rng(11)


def poisoned(shape, dtype) -> np.ndarray:
    out = np.empty(shape, dtype)
    out.view(np.uint8)[...] = 0xA5  # any leftover byte would show
    return out


def check_errors(call, shape, dtype, overlapping: np.ndarray) -> None:
    """call(out) must reject every bad buffer and leave a good one untouched when it raises."""
    other = np.float64 if np.dtype(dtype) != np.float64 else np.float32
    with pytest.raises(TypeError, match="out must have dtype"):
        call(np.empty(shape, other))
    with pytest.raises(ValueError, match="out must have shape"):
        call(np.empty(tuple(shape[:-1]) + (shape[-1] + 1,), dtype))
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        call(np.empty(shape, dtype).tolist())
    if len(shape) >= 2 and shape[0] > 1 and shape[-1] > 1:
        with pytest.raises(ValueError, match="C-contiguous"):
            call(np.empty(tuple(reversed(shape)), dtype).T)
    ro = np.empty(shape, dtype)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(ro)
    with pytest.raises(ValueError, match="overlaps the input"):
        call(overlapping)
    if np.dtype(dtype).itemsize > 1:
        raw = np.zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize + 1, np.uint8)
        with pytest.raises(ValueError, match="must start at a multiple"):
            call(raw[1:].view(dtype).reshape(shape))


@pytest.mark.parametrize("bits", [1, 3])
@pytest.mark.parametrize("backend", ["default", "numpy"])
def test_binarize_out(bits, backend, monkeypatch):
    if backend == "numpy":
        monkeypatch.setattr(_backend, "_C", None)
    x = rng.standard_normal((33, 77)).astype(np.float32)
    want = fastemb.binarize(x, bits)
    out = poisoned(want.shape, np.uint8)
    assert fastemb.binarize(x, bits, out=out) is out
    np.testing.assert_array_equal(out, want)
    check_errors(lambda o: fastemb.binarize(x, bits, out=o), want.shape, np.uint8,
                 overlapping=x.view(np.uint8).reshape(-1)[:want.size].reshape(want.shape))
    empty = np.empty((0, bits, 10), np.uint8)
    assert fastemb.binarize(np.zeros((0, 77), np.float32), bits, out=empty) is empty


@pytest.mark.parametrize("reduce", ["mean", "sum", "amax"])
@pytest.mark.parametrize("backend", ["default", "numpy"])
def test_centroid_out(reduce, backend, monkeypatch):
    if backend == "numpy":
        monkeypatch.setattr(_backend, "_C", None)
    x = rng.standard_normal((60, 9)).astype(np.float32)
    labels = rng.integers(0, 7, 60)
    want = fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce)
    out = poisoned((7, 9), np.float32)
    got = fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce, out=out, return_counts=True)
    assert got[0] is out
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(got[1], np.bincount(labels, minlength=7))
    check_errors(lambda o: fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce, out=o), (7, 9),
                 np.float32, overlapping=x[:7])
    if reduce != "amax":
        loo = fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce, leave_one_out=True)
        out = poisoned((60, 9), np.float32)
        assert fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce, leave_one_out=True, out=out) is out
        np.testing.assert_array_equal(out, loo)
        with pytest.raises(ValueError, match=r"out must have shape \(60, 9\)"):
            fastemb.centroid_aggregate(x, labels, num_groups=7, reduce=reduce, leave_one_out=True,
                                       out=np.empty((7, 9), np.float32))


@pytest.mark.parametrize("fmt", ["i2", "t5"])
@pytest.mark.parametrize("activations", ["int8", "float"])
@pytest.mark.parametrize("backend", ["default", "numpy"])
def test_ternary_matmul_out(fmt, activations, backend, monkeypatch):
    w = rng.standard_normal((20, 70)).astype(np.float32)
    tw = fastemb.quantize_ternary(w, format=fmt)
    if backend == "numpy":
        monkeypatch.setattr(_backend, "_C", None)
    x = rng.standard_normal((6, 70)).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    want = fastemb.ternary_matmul(x, tw, activations, bias=bias)
    out = poisoned((6, 20), np.float32)
    assert fastemb.ternary_matmul(x, tw, activations, bias=bias, out=out) is out
    np.testing.assert_array_equal(out, want)
    one = poisoned((20,), np.float32)
    assert fastemb.ternary_matmul(x[2], tw, activations, out=one) is one
    np.testing.assert_array_equal(one, fastemb.ternary_matmul(x[2], tw, activations))
    check_errors(lambda o: fastemb.ternary_matmul(x, tw, activations, out=o), (6, 20), np.float32,
                 overlapping=x.reshape(-1)[:120].reshape(6, 20))
    zero = poisoned((0, 20), np.float32)
    assert fastemb.ternary_matmul(np.zeros((0, 70), np.float32), tw, activations, out=zero) is zero


def test_ternary_matmul_out_must_not_overlap_the_weight():
    """An out over the weight's own arrays would corrupt it for every later call."""
    tw = fastemb.quantize_ternary(rng.standard_normal((20, 64)).astype(np.float32), granularity="row")
    scale = tw.scale.copy()
    with pytest.raises(ValueError, match="overlaps the input tw"):
        fastemb.ternary_matmul(rng.standard_normal(64).astype(np.float32), tw, out=tw.scale)
    np.testing.assert_array_equal(tw.scale, scale)
    with pytest.raises(ValueError, match="overlaps the input tw"):
        fastemb.ternary_matmul(rng.standard_normal((1, 64)).astype(np.float32), tw,
                               out=tw.packed.reshape(-1)[:80].view(np.float32).reshape(1, 20))


def test_out_subclass_rejected():
    x = rng.standard_normal((4, 16)).astype(np.float32)
    class Sub(np.ndarray):
        pass

    with pytest.raises(TypeError, match="out must be a numpy.ndarray, got Sub"):
        fastemb.centroid_aggregate(x, np.array([0, 1, 0, 1]), num_groups=2, out=np.zeros((2, 16), np.float32).view(Sub))


def test_dask_functions_reject_out():
    da = pytest.importorskip("dask.array")
    import fastemb.dask as fd

    x = da.from_array(rng.standard_normal((10, 16)).astype(np.float32), chunks=5)
    with pytest.raises(TypeError, match="out= is not supported by fastemb.dask"):
        fd.binarize(x, 1, out=np.empty((10, 1, 2), np.uint8))
    tw = fastemb.quantize_ternary(rng.standard_normal((3, 16)).astype(np.float32))
    with pytest.raises(TypeError, match="out= is not supported by fastemb.dask"):
        fd.ternary_matmul(x, tw, out=np.empty((10, 3), np.float32))
