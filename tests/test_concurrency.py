"""Concurrency and determinism of every family (issue 7, "Hardening").

* Several Python threads call every entry point at once (the kernels release the GIL) while the
  main thread changes ``fastemb.set_num_threads``: every result is bitwise equal to the serial one.
* Same inputs and seed give the same bits for 1, 2 and 4 threads and for every ISA variant the
  machine runs (``fastemb._backend.native_isas()``; internal entry points take ``isa=``). The one
  documented exception is the ternary *float* path (``activations='float'``), whose float32 sums may
  be ordered differently per ISA: across ISAs it is compared with rtol 1e-6 (float32 rounding of a
  k-term sum of +-x); it must still be bitwise identical across thread counts for a fixed ISA.
"""
from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import binary as _binary
from fastemb import graph as _graph
from fastemb import ternary as _ternary
from fastemb.centroid import native_forward

sp = pytest.importorskip("scipy.sparse")

ISAS = _backend.native_isas()
needs_native = pytest.mark.skipif(_backend.native() is None, reason="needs the native module (NumPy fallback in use)")
THREAD_COUNTS = (1, 2, 4)


def _bits_equal(a, b, what=""):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _bits_equal(x, y, what)
        return
    try:
        import torch
        if isinstance(a, torch.Tensor):
            a, b = a.detach().cpu().numpy(), b.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.dtype.kind == "f":
        a, b = a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}")
    np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.fixture
def restore_threads():
    before = fastemb.get_num_threads()
    yield
    fastemb.set_num_threads(before)


def _problems():
    """One moderately sized call per entry point (big enough to split across threads)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6000, 48)).astype(np.float32)
    labels = rng.integers(0, 200, 6000)
    w = rng.uniform(0.5, 2, 6000)
    corpus = rng.standard_normal((3000, 96)).astype(np.float32)
    queries = rng.standard_normal((17, 96)).astype(np.float32)
    c2 = fastemb.binarize(corpus, 2)
    q2 = fastemb.binarize(queries, 2)
    c1 = fastemb.binarize(corpus, 1)
    index = fastemb.BinaryIndex(96, bits=2)
    index.add(corpus)
    A = sp.random(800, 800, density=0.01, random_state=3, format="csr", dtype=np.float32)
    A.data[:] = np.abs(A.data) + 0.1
    X = rng.standard_normal((500, 300)).astype(np.float32)
    X[rng.random(X.shape) < 0.7] = 0
    Xs = sp.csr_matrix(X)
    W = (rng.standard_normal((64, 300)) * 0.05).astype(np.float32)
    tw = fastemb.quantize_ternary(W)
    xa = rng.standard_normal((40, 300)).astype(np.float32)
    calls = {
        "centroid_mean_both": lambda: fastemb.centroid_aggregate(x, labels, num_groups=200, normalize="both"),
        "centroid_weighted_loo": lambda: fastemb.centroid_aggregate(x, labels, num_groups=200, weights=w,
                                                                    leave_one_out=True),
        "centroid_amax": lambda: fastemb.centroid_aggregate(x, labels, num_groups=200, reduce="amax"),
        "binarize": lambda: fastemb.binarize(corpus[:500], 3),
        "hamming": lambda: fastemb.hamming(c1[:50], c1),
        "sdc_scores": lambda: fastemb.sdc_scores(q2, c2),
        "sdc_cosine": lambda: fastemb.sdc_cosine(q2, c2),
        "sdc_topk": lambda: fastemb.sdc_topk(q2, c2, 10),
        "sdc_topk_1q": lambda: fastemb.sdc_topk(q2[:1], c2, 25),
        "index_search": lambda: index.search(queries, 5),
        "index_rescore": lambda: index.search(queries, 5, rescore=4),
        "srp_dense": lambda: fastemb.sparse_random_projection(X, 64, seed=5),
        "srp_csr": lambda: fastemb.sparse_random_projection(Xs, 64, seed=5),
        "fastrp_paper": lambda: fastemb.fastrp(A, 32, seed=11),
        "fastrp_gds": lambda: fastemb.fastrp(A, 32, seed=11, preset="gds", self_influence=0.3),
        "quantize_ternary": lambda: fastemb.quantize_ternary(W, "absmedian", "row").packed,
        "quantize_activations": lambda: fastemb.quantize_activations(xa),
        "ternary_int8": lambda: fastemb.ternary_matmul(xa, tw),
        "ternary_float": lambda: fastemb.ternary_matmul(xa, tw, "float"),
    }
    try:
        import torch
        import fastemb.torch as ft
    except ImportError:  # pragma: no cover
        return calls
    xt = torch.from_numpy(x)
    lt = torch.from_numpy(labels)
    packed, scale, k = ft._ternary.ternary_weight_tensors(tw)
    calls.update({
        "torch_centroid": lambda: ft.centroid_aggregate(xt, lt, num_groups=200, normalize="post"),
        "torch_sdc_topk": lambda: ft.sdc_topk(torch.from_numpy(q2), torch.from_numpy(c2), 7),
        "torch_hamming": lambda: ft.hamming(torch.from_numpy(c1[:20]), torch.from_numpy(c1)),
        "torch_binarize": lambda: ft.binarize(torch.from_numpy(corpus[:300]), 2),
        "torch_srp": lambda: ft.sparse_random_projection(torch.from_numpy(X), 64, seed=5),
        "torch_ternary_linear": lambda: ft.ternary_linear(torch.from_numpy(xa), packed, scale, k),
    })
    return calls


def test_threads_and_thread_count_changes_give_serial_results(restore_threads):
    calls = _problems()
    expected = {name: f() for name, f in calls.items()}
    names = sorted(calls)
    errors = []
    done = [0]
    lock = threading.Lock()

    def worker(offset):
        try:
            for rep in range(3):
                for i in range(len(names)):
                    name = names[(i + offset + rep) % len(names)]
                    _bits_equal(calls[name](), expected[name], name)
                    with lock:
                        done[0] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(j * 5,)) for j in range(4)]
    for t in threads:
        t.start()
    counts = (1, 3, 2, 4, 1, 2)
    i = 0
    while any(t.is_alive() for t in threads):
        fastemb.set_num_threads(counts[i % len(counts)])  # changed mid-run, from another thread
        i += 1
        threads[0].join(0.01)
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert done[0] == 4 * 3 * len(names)
    assert i > 1  # the thread count did change while the workers ran


@needs_native
def test_gil_is_released_inside_kernels(restore_threads):
    """A pure-Python thread makes progress while another thread runs a long kernel."""
    fastemb.set_num_threads(1)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (200000, 4, 32), dtype=np.uint8)
    q = codes[:64]
    ticks = [0]
    running = [True]

    def spin():
        while running[0]:
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = ticks[0]
        fastemb.sdc_scores(q, codes)  # ~0.1-1 s in one native call
        during = ticks[0] - before
    finally:
        running[0] = False
        t.join()
    assert during > 1000, f"the spinning thread advanced only {during} ticks during the kernel: GIL held?"


# ---- determinism: thread counts x ISAs -------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("reduce,normalize,weighted,loo", [
    ("mean", "both", False, False), ("sum", "pre", True, False), ("mean", "none", True, True),
    ("amax", "post", False, False), ("amin", "none", False, False)])
def test_centroid_same_bits_threads_isas(restore_threads, reduce, normalize, weighted, loo):
    C = _backend.native()
    rng = np.random.default_rng(1)
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.standard_normal((5000, 37)).astype(dtype)
        labels = rng.integers(0, 90, 5000)
        w = rng.uniform(0.5, 2, 5000).astype(np.float64 if dtype == np.float64 else np.float32) if weighted else None
        ref = None
        for isa in ISAS:
            for threads in THREAD_COUNTS:
                fastemb.set_num_threads(threads)
                out = native_forward(C, x, labels, None, 90, w, reduce, normalize, 1e-12, loo, isa=isa)
                out = tuple(a for a in out if a is not None)
                if ref is None:
                    ref = out
                _bits_equal(out, ref, f"{dtype.__name__} isa={isa} threads={threads}")


@needs_native
def test_binary_same_bits_threads_isas(restore_threads):
    C = _backend.native()
    rng = np.random.default_rng(2)
    for bits in (1, 2, 4):
        for dim in (61, 256, 1000):
            nb = (dim + 7) // 8
            d = fastemb.pack_levels(np.where(rng.random((4000, bits, dim)) < 0.5, -1, 1))
            q = np.ascontiguousarray(d[rng.integers(0, 4000, 9)])
            ref = None
            for isa in ISAS:
                for threads in THREAD_COUNTS:
                    fastemb.set_num_threads(threads)
                    got = (_binary.native_scores(C, q, d, dim, "hamming", isa=isa),
                           _binary.native_scores(C, q, d, dim, "sdc", isa=isa),
                           *_binary.native_topk(C, q, d, 50, dim, isa=isa),
                           *_binary.native_topk(C, q[:1], d, 5, dim, isa=isa))
                    if ref is None:
                        ref = got
                        # and equal to the NumPy reference
                        from fastemb._reference import binary as rb
                        np.testing.assert_array_equal(got[1], rb.sdc_scores(q, d, dim))
                        np.testing.assert_array_equal(got[2], rb.sdc_topk(q, d, 50, dim)[0])
                    _bits_equal(got, ref, f"bits={bits} dim={dim} nb={nb} isa={isa} threads={threads}")


@needs_native
def test_graph_same_bits_threads_isas(restore_threads, monkeypatch):
    rng = np.random.default_rng(3)
    A = sp.random(1500, 1500, density=0.004, random_state=4, format="csr", dtype=np.float32)
    A.data[:] = np.abs(A.data) + 0.1
    X = rng.standard_normal((700, 260)).astype(np.float32)
    X[rng.random(X.shape) < 0.8] = 0
    feats = rng.standard_normal((1500, 20)).astype(np.float32)
    real_native = _graph.ops._native

    def run():
        return (fastemb.fastrp(A, 48, seed=2 ** 63 + 5),
                fastemb.fastrp(A, 48, seed=9, preset="gds", self_influence=0.5, features=feats, feature_ratio=0.25),
                fastemb.sparse_random_projection(X, 70, seed=1),
                fastemb.sparse_random_projection(sp.csr_matrix(X), 70, seed=1))

    ref = None
    for isa in ISAS:
        def native_with_isa(name, isa=isa):
            fn = real_native(name)
            if fn is None or name == "graph_standardize_columns":  # no isa argument
                return fn
            return functools.partial(fn, isa=isa)
        monkeypatch.setattr(_graph.ops, "_native", native_with_isa)
        for threads in THREAD_COUNTS:
            fastemb.set_num_threads(threads)
            got = run()
            if ref is None:
                ref = got
            _bits_equal(got, ref, f"isa={isa} threads={threads}")
    # the dense and CSR projection of the same values: same bits (documented)
    _bits_equal(ref[2], ref[3], "dense vs CSR")


@pytest.mark.parametrize("activations", ["int8", "float"])
def test_ternary_same_bits_threads_isas(restore_threads, activations):
    rng = np.random.default_rng(5)
    W = (rng.standard_normal((96, 700)) * 0.05).astype(np.float32)
    tw = fastemb.quantize_ternary(W, granularity="row")
    x = rng.standard_normal((33, 700)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    numpy_out = _ternary._ternary_matmul(x, tw, activations, b, _ternary.EPS, "numpy")
    backends = ["numpy"] + (list(ISAS) if _ternary.native_kernels() is not None else [])
    for isa in backends:
        ref = None
        for threads in THREAD_COUNTS:
            fastemb.set_num_threads(threads)
            got = _ternary._ternary_matmul(x, tw, activations, b, _ternary.EPS, isa)
            if ref is None:
                ref = got
            _bits_equal(got, ref, f"isa={isa} threads={threads}")  # any ISA: same bits for every thread count
        if activations == "int8":
            _bits_equal(ref, numpy_out, f"isa={isa} vs numpy")  # integer path: same bits everywhere
        else:
            # float path: float32 sums in an ISA-dependent order (documented tolerance)
            np.testing.assert_allclose(ref, numpy_out, rtol=1e-6, atol=1e-6 * float(np.abs(numpy_out).max()))
    xq_ref = _ternary._quantize_activations(x, _ternary.EPS, "numpy")
    for isa in backends[1:]:
        _bits_equal(_ternary._quantize_activations(x, _ternary.EPS, isa), xq_ref, f"quantize_activations isa={isa}")
