"""``python -m fastemb demo``: the kernels on built-in (generated, seeded) data.

Builds a labelled embedding set with known class structure, computes class centroids with
fastemb and with NumPy, checks they agree, times both, and classifies held-out rows by their
nearest centroid (cosine), which must recover the classes. Then indexes a clustered corpus as
2-bit codes (BinaryIndex) and checks that binary search with float rescoring finds the exact
float top-10. Then quantizes a layer to ternary weights (int8 x 2-bit matmul), and embeds a
planted-community graph with FastRP, whose embeddings must recover the communities.
"""
from __future__ import annotations

import time

import numpy as np

import fastemb
from ._reference import centroid as ref


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(rows: int = 200_000, dim: int = 128, groups: int = 1_000, seed: int = 0) -> int:
    if rows < 2 or dim < 1 or groups < 1:
        raise SystemExit("demo: rows >= 2, dim >= 1 and groups >= 1 are required")
    info = fastemb.info()
    print(f"fastemb {info['version']}  backend={info['backend']}  isa={info['isa']}  threads={info['num_threads']}")
    rng = np.random.default_rng(seed)
    class_means = rng.standard_normal((groups, dim)).astype(np.float32)
    labels = rng.integers(0, groups, size=rows)
    x = class_means[labels] + 0.8 * rng.standard_normal((rows, dim)).astype(np.float32)
    print(f"data: {rows} x {dim} float32 embeddings, {groups} classes (unsorted labels)")

    centroids = fastemb.centroid_aggregate(x, labels, num_groups=groups, normalize="post")
    expected, *_ = ref.forward(x.astype(np.float64), labels, None, groups, None, "mean", "post", 1e-12, False)
    err = float(np.max(np.abs(centroids - expected)))
    print(f"centroids (mean, post-normalized) vs NumPy float64: max abs error {err:.2e}")
    ok = err < 1e-4

    t_fast = _best_of(lambda: fastemb.centroid_aggregate(x, labels, num_groups=groups))
    t_numpy = _best_of(lambda: ref.forward(x, labels, None, groups, None, "mean", "none", 1e-12, False), repeat=1)
    bandwidth = x.nbytes / t_fast / 1e9
    print(f"time: fastemb {t_fast * 1e3:.1f} ms ({bandwidth:.1f} GB/s of x read)   numpy np.add.at {t_numpy * 1e3:.1f} ms"
          f"   speed-up {t_numpy / t_fast:.1f}x")

    loo = fastemb.centroid_aggregate(x[:20_000], labels[:20_000], num_groups=groups, leave_one_out=True)
    print(f"leave-one-out centroids: {loo.shape[0]} x {loo.shape[1]}, finite: {bool(np.isfinite(loo).all())}")
    ok = ok and bool(np.isfinite(loo).all())

    held_out = class_means[labels[:5000]] + 0.8 * rng.standard_normal((5000, dim)).astype(np.float32)
    held_out /= np.linalg.norm(held_out, axis=1, keepdims=True)
    accuracy = float(np.mean(np.argmax(held_out @ centroids.T, axis=1) == labels[:5000]))
    print(f"nearest-centroid accuracy on 5000 held-out rows: {accuracy:.3f}")
    ok = ok and accuracy > 0.9
    ok = _binary_search_demo(rng, min(rows, 50_000), dim) and ok
    ok = _ternary_demo(rng) and ok
    ok = _fastrp_demo(rng) and ok
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1


def _binary_search_demo(rng: np.random.Generator, rows: int, dim: int, queries: int = 200, k: int = 10) -> bool:
    """Binary-code search with float rescoring (BinaryIndex) against exact float search."""
    centers = rng.standard_normal((max(rows // 50, 1), dim)).astype(np.float32)
    corpus = centers[rng.integers(0, len(centers), rows)] + 0.5 * rng.standard_normal((rows, dim)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    q = corpus[rng.integers(0, rows, queries)] + 0.05 * rng.standard_normal((queries, dim)).astype(np.float32)
    exact = np.argsort(-(q @ corpus.T), axis=1, kind="stable")[:, :k]
    index = fastemb.BinaryIndex(dim, bits=2)
    index.add(corpus)
    t0 = time.perf_counter()
    _, ids = index.search(q, k, rescore=4)
    elapsed = time.perf_counter() - t0
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact)]))
    print(f"binary search: {rows} x {dim} 2-bit codes ({index.codes.nbytes / 1e6:.1f} MB vs "
          f"{corpus.nbytes / 1e6:.1f} MB float32), {queries} queries in {elapsed * 1e3:.1f} ms, "
          f"recall@{k} with 4x float rescoring: {recall:.3f}")
    return recall > 0.8


def _ternary_demo(rng: np.random.Generator, n: int = 1024, k: int = 1024, m: int = 8) -> bool:
    """Ternary weights (BitNet b1.58): int8 x 2-bit matmul against the dequantized float product."""
    tw = fastemb.quantize_ternary(rng.standard_normal((n, k)).astype(np.float32))
    x = rng.standard_normal((m, k)).astype(np.float32)
    exact = x @ tw.dequantize().T
    y = fastemb.ternary_matmul(x, tw)
    err = float(np.linalg.norm(y - exact) / np.linalg.norm(exact))
    print(f"ternary matmul: {n} x {k} weights in {tw.nbytes / 1e3:.0f} kB (float32: {n * k * 4 / 1e3:.0f} kB), "
          f"int8 activations vs float: relative error {err:.4f}")
    return err < 0.02


def _fastrp_demo(rng: np.random.Generator, communities: int = 8, size: int = 2_500, degree_in: int = 16,
                 degree_out: int = 4) -> bool:
    """FastRP (paper preset, d = 128) on a planted-partition graph: nodes classified by their nearest
    community centroid (computed with centroid_aggregate on half the nodes) must recover the communities."""
    n = communities * size
    community = np.repeat(np.arange(communities), size)
    src = np.repeat(np.arange(n), degree_in + degree_out)
    same = community[src] * size + rng.integers(0, size, src.size)   # a node of the same community
    other = rng.integers(0, n, src.size)                             # any node
    dst = np.where(np.tile(np.arange(degree_in + degree_out) < degree_in, n), same, other)
    keep = src != dst
    t0 = time.perf_counter()
    emb = fastemb.fastrp((src[keep], dst[keep]), dim=128, num_nodes=n, symmetrize=True, seed=1)
    seconds = time.perf_counter() - t0
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    train = rng.random(n) < 0.5
    centroids = fastemb.centroid_aggregate(emb[train], community[train], num_groups=communities, normalize="post")
    accuracy = float(np.mean(np.argmax(emb[~train] @ centroids.T, axis=1) == community[~train]))
    print(f"fastrp: {n} nodes / {2 * int(keep.sum())} edges, d=128 in {seconds * 1e3:.0f} ms; "
          f"community recovered for {accuracy:.3f} of held-out nodes")
    return accuracy > 0.9
