"""Seeded synthetic graphs for the FastRP benchmarks: a Chung-Lu power-law graph as a symmetric CSR.

Node i gets weight w_i ~ (i + 1) ** (-1 / (gamma - 1)) (expected degrees follow a power law with
exponent gamma); edge endpoints are drawn independently with probability proportional to w (the
continuous inverse CDF, O(1) per draw), self
loops dropped, duplicate pairs merged, the pairs symmetrized, and node ids randomly permuted (so
high-degree nodes are scattered, as in real graphs). Vectorized NumPy: 1M nodes / 20M stored
nonzeros in a few seconds.

    python bench/gen_graph.py --nodes 1000000 --nnz 20000000 --out /tmp/chunglu_1m.npz
"""
from __future__ import annotations

import argparse
import time
from typing import Tuple

import numpy as np


def chung_lu(nodes: int, nnz: int, gamma: float = 2.5, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric unweighted CSR (indptr int64 [nodes + 1], indices int32, sorted within rows) with
    about ``nnz`` stored entries (an even number; no self loops, no duplicates)."""
    if nodes < 2 or nnz < 2:
        raise ValueError("nodes and nnz must be >= 2")
    rng = np.random.default_rng(seed)
    a = 1.0 / (gamma - 1.0)
    top = float(nodes + 1) ** (1.0 - a) - 1.0

    def endpoints(k: int) -> np.ndarray:
        # inverse CDF of the continuous density x^-a on [1, nodes + 1): node floor(x) - 1
        x = (1.0 + rng.random(k) * top) ** (1.0 / (1.0 - a))
        return np.minimum(x.astype(np.int64) - 1, nodes - 1)

    want = nnz // 2
    keys = np.empty(0, np.int64)
    draw = int(want * 1.15) + 16
    while True:
        src, dst = endpoints(draw), endpoints(draw)
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        ok = lo != hi
        keys = np.sort(np.concatenate([keys, lo[ok] * nodes + hi[ok]]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        if len(keys) >= want:
            break
        draw = int((want - len(keys)) * 1.5) + 16
    if len(keys) > want:
        drop = rng.choice(len(keys), len(keys) - want, replace=False)
        mask = np.ones(len(keys), bool)
        mask[drop] = False
        keys = keys[mask]
    perm = rng.permutation(nodes).astype(np.int64)
    lo = perm[keys // nodes]
    hi = perm[keys % nodes]
    return symmetric_csr(lo, hi, nodes)


def symmetric_csr(src: np.ndarray, dst: np.ndarray, nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """The CSR (indptr int64, indices int32 sorted within rows) of the edges src-dst in both directions,
    duplicates merged."""
    keys = np.unique(np.concatenate([src * nodes + dst, dst * nodes + src]))
    rows = keys // nodes
    indices = (keys - rows * nodes).astype(np.int32)
    indptr = np.zeros(nodes + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=nodes), out=indptr[1:])
    return indptr, indices


def shuffled_lattice(nodes: int, nnz: int, window: int = 20_000, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """A graph with locality its ids hide: node i linked to random nodes among the next ``window`` on a ring
    (about ``nnz`` stored entries after symmetrizing and merging duplicates), then node ids randomly permuted,
    as ids assigned by hash or insertion order do to meshes, road networks and community graphs. Same CSR
    conventions as :func:`chung_lu`."""
    if nodes < 2 or nnz < 2:
        raise ValueError("nodes and nnz must be >= 2")
    rng = np.random.default_rng(seed)
    per = max(1, nnz // (2 * nodes))
    src = np.repeat(np.arange(nodes, dtype=np.int64), per)
    dst = (src + rng.integers(1, max(2, min(window, nodes)), src.shape[0])) % nodes
    perm = rng.permutation(nodes).astype(np.int64)
    return symmetric_csr(perm[src], perm[dst], nodes)


def load_or_make(path: str, nodes: int, nnz: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a cached graph from ``path`` (npz) or generates and saves it."""
    import os

    if os.path.exists(path):
        z = np.load(path)
        if int(z["nodes"]) == nodes and int(z["seed"]) == seed and int(z["nnz_target"]) == nnz:
            return z["indptr"], z["indices"]
    indptr, indices = chung_lu(nodes, nnz, seed=seed)
    np.savez(path, indptr=indptr, indices=indices, nodes=nodes, seed=seed, nnz_target=nnz)
    return indptr, indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--nnz", type=int, default=20_000_000)
    ap.add_argument("--gamma", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    indptr, indices = chung_lu(a.nodes, a.nnz, a.gamma, a.seed)
    dt = time.perf_counter() - t
    deg = np.diff(indptr)
    print(f"{a.nodes} nodes, {indptr[-1]} nnz, max degree {deg.max()}, isolated {(deg == 0).sum()}, {dt:.2f} s")
    if a.out:
        np.savez(a.out, indptr=indptr, indices=indices, nodes=a.nodes, seed=a.seed, nnz_target=a.nnz)


if __name__ == "__main__":
    main()
