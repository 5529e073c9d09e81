"""No leaks (issue 7, "Hardening"): thousands of calls of every entry point keep memory flat.

Each entry point runs ``WARMUP`` calls (caches, allocator pools, torch's dispatcher), then
``CALLS`` more (``FASTEMB_LEAK_CALLS``, default 1000) while tracemalloc watches Python allocations and glibc's
``mallinfo2`` the malloc'd bytes in use (native buffers; the resident set from ``/proc/self/statm`` is printed too). Inputs are tiny but each call allocates at least a few KB of output, so a
leaked output or temporary buffer per call would grow it by megabytes. Error paths (a C++
exception turned into ValueError, a Python check) are included: unwinding must free too.
"""
from __future__ import annotations

import ctypes
import gc
import os
import tempfile
import tracemalloc

import numpy as np
import pytest

import fastemb
from fastemb import _backend

sp = pytest.importorskip("scipy.sparse")

WARMUP = 100
CALLS = int(os.environ.get("FASTEMB_LEAK_CALLS", "1000"))
PY_GROWTH_LIMIT = 32 * 1024         # bytes of Python objects that stay alive over CALLS / 2 calls (64 B per call)
NATIVE_GROWTH_LIMIT = 512 * 1024   # bytes of malloc'd memory still in use after CALLS / 2 calls (1 KB per call)
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


try:
    _libc = ctypes.CDLL(None)
    _libc.mallinfo2.restype = _Mallinfo2
except (OSError, AttributeError):  # not glibc >= 2.33
    _libc = None


def native_in_use() -> int:
    """Bytes malloc has handed out and not got back (glibc mallinfo2, summed over arenas: NumPy data,
    torch CPU tensors, C++ buffers), or the resident set where mallinfo2 is missing. Unlike RSS it is not
    hidden by free heap pages that earlier tests left behind."""
    if _libc is None:
        return rss()
    m = _libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


def _swallow(fn, exc=(TypeError, ValueError)):
    def call():
        try:
            fn()
        except exc:
            return None
        raise AssertionError("expected an error")
    return call


def _entry_points():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    labels = rng.integers(0, 40, 64)
    codes = fastemb.binarize(rng.standard_normal((300, 64)), 2)
    q = codes[:4]
    index = fastemb.BinaryIndex(64, bits=2)
    index.add(rng.standard_normal((300, 64)).astype(np.float32))
    A = sp.random(60, 60, density=0.1, random_state=1, format="csr", dtype=np.float32)
    A.data[:] = np.abs(A.data) + 0.1
    X = rng.standard_normal((50, 40)).astype(np.float32)
    W = (rng.standard_normal((32, 256)) * 0.05).astype(np.float32)
    tw = fastemb.quantize_ternary(W)
    xa = rng.standard_normal((16, 256)).astype(np.float32)
    levels = np.where(rng.random((20, 2, 64)) < 0.5, -1, 1)
    tmp = tempfile.mkdtemp(prefix="fastemb-leak-")
    index.save(os.path.join(tmp, "idx"))
    tw.save(os.path.join(tmp, "w.npz"))
    bad_labels = labels.copy()
    bad_labels[3] = 99
    eps = {
        "centroid_aggregate": lambda: fastemb.centroid_aggregate(x, labels, num_groups=40, normalize="both"),
        "centroid_aggregate_loo": lambda: fastemb.centroid_aggregate(x, labels, num_groups=40, leave_one_out=True,
                                                                     return_counts=True),
        "centroid_aggregate_error": _swallow(lambda: fastemb.centroid_aggregate(x, bad_labels, num_groups=40)),
        "binarize": lambda: fastemb.binarize(x, 3),
        "pack_levels": lambda: fastemb.pack_levels(levels),
        "unpack_codes": lambda: fastemb.unpack_codes(codes[:40]),
        "hamming": lambda: fastemb.hamming(q, codes),
        "sdc_scores": lambda: fastemb.sdc_scores(q, codes),
        "sdc_cosine": lambda: fastemb.sdc_cosine(q, codes),
        "sdc_topk": lambda: fastemb.sdc_topk(q, codes, 100),
        "sdc_topk_error": _swallow(lambda: fastemb.sdc_topk(q, codes, 0)),
        "BinaryIndex.add+search": lambda: (fastemb.BinaryIndex(32, 1).add(x), index.search(x[:3, :32].repeat(2, 1), 8)),
        "BinaryIndex.search_rescore": lambda: index.search(x[:3].repeat(2, 1), 8, rescore=3),
        "BinaryIndex.load": lambda: fastemb.BinaryIndex.load(os.path.join(tmp, "idx")).search(q, 5),
        "sparse_random_projection": lambda: fastemb.sparse_random_projection(X, 64, seed=3),
        "sparse_random_projection_csr": lambda: fastemb.sparse_random_projection(sp.csr_matrix(X), 64, seed=3),
        "fastrp": lambda: fastemb.fastrp(A, 32, seed=1),
        "fastrp_error": _swallow(lambda: fastemb.fastrp(A, 0)),
        "quantize_ternary": lambda: fastemb.quantize_ternary(W, "absmedian", "row"),
        "TernaryWeight.roundtrips": lambda: (fastemb.TernaryWeight.from_dict(tw.to_dict()),
                                             fastemb.TernaryWeight.from_hf_bitnet(*tw.to_hf_bitnet()),
                                             fastemb.TernaryWeight.from_gguf_tq2_0(tw.to_gguf_tq2_0()),
                                             fastemb.TernaryWeight.load(os.path.join(tmp, "w.npz"))),
        "quantize_activations": lambda: fastemb.quantize_activations(xa),
        "ternary_matmul_int8": lambda: fastemb.ternary_matmul(xa, tw),
        "ternary_matmul_float": lambda: fastemb.ternary_matmul(xa, tw, "float"),
        "ternary_matmul_error": _swallow(lambda: fastemb.ternary_matmul(xa[:, :-1], tw)),
    }
    try:
        import torch
        import fastemb.torch as ft
    except ImportError:  # pragma: no cover
        return eps
    xt = torch.from_numpy(x).requires_grad_(True)
    lt = torch.from_numpy(labels)
    packed, scale, k = ft._ternary.ternary_weight_tensors(tw)
    layer = ft.BitLinear(256, 32).eval()
    ct, qt = torch.from_numpy(codes), torch.from_numpy(q)
    eps.update({
        "torch.centroid_aggregate+backward": lambda: ft.centroid_aggregate(xt, lt, num_groups=40,
                                                                           normalize="post").sum().backward(),
        "torch.centroid_triplet_loss": lambda: ft.centroid_triplet_loss(xt.detach(), lt % 5, num_groups=5),
        "torch.binarize": lambda: ft.binarize(xt.detach(), 2),
        "torch.hamming": lambda: ft.hamming(qt, ct),
        "torch.sdc_scores": lambda: ft.sdc_scores(qt, ct),
        "torch.sdc_topk": lambda: ft.sdc_topk(qt, ct, 50),
        "torch.sparse_random_projection+backward": lambda: ft.sparse_random_projection(
            xt, 64, seed=2).sum().backward(),
        "torch.fastrp": lambda: ft.fastrp(torch.stack([lt, lt.flip(0)]), 16, num_nodes=40),
        "torch.ternary_linear": lambda: ft.ternary_linear(torch.from_numpy(xa), packed, scale, k),
        "torch.BitLinear": lambda: layer(torch.from_numpy(xa)),
        "torch.centroid_error": _swallow(lambda: ft.centroid_aggregate(xt, lt, num_groups=3)),
    })
    return eps


ENTRY_POINTS = _entry_points()
SLOW = {"BinaryIndex.load": 5, "TernaryWeight.roundtrips": 5, "fastrp": 2, "torch.fastrp": 4,
        "torch.centroid_triplet_loss": 2}  # file / multi-step calls: CALLS // factor


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_repeated_calls_keep_memory_flat(name):
    """Growth is measured over the second half of the calls, so one-time caches filled during the first
    half (scipy's, torch's dispatcher, NumPy's small-array cache) do not count as leaks; a per-call leak
    grows both halves alike."""
    fn = ENTRY_POINTS[name]
    half = max(100, CALLS // SLOW.get(name, 1)) // 2
    for _ in range(WARMUP):
        fn()
    tracemalloc.start()
    try:
        for _ in range(half):
            fn()
        gc.collect()
        py0, nat0, rss0 = tracemalloc.get_traced_memory()[0], native_in_use(), rss()
        for _ in range(half):
            fn()
        gc.collect()
        py1, nat1, rss1 = tracemalloc.get_traced_memory()[0], native_in_use(), rss()
    finally:
        tracemalloc.stop()
    print(f"{name}: {2 * half} calls, second half: python +{py1 - py0} B, malloc +{nat1 - nat0} B, "
          f"rss +{rss1 - rss0} B")
    assert py1 - py0 < PY_GROWTH_LIMIT, f"{name}: Python memory grew by {py1 - py0} bytes over {half} calls"
    assert nat1 - nat0 < NATIVE_GROWTH_LIMIT, f"{name}: malloc'd memory grew by {nat1 - nat0} bytes over {half} calls"


def test_leak_detector_detects_a_leak():
    """The native check above can fail: a deliberate 4 KB-per-call leak over CALLS / 2 calls trips it."""
    kept = []
    nat0 = native_in_use()
    for _ in range(CALLS // 2):
        kept.append(np.ones(4096 // 8))  # 4 KB of malloc'd NumPy data, kept alive
    assert native_in_use() - nat0 >= NATIVE_GROWTH_LIMIT
    del kept


def test_backend_reported():
    assert _backend.backend_name() in ("native", "numpy")
