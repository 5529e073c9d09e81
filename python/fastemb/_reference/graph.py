"""NumPy reference for the graph family's kernels: the counter-based random matrix, the projection
X @ R and one fused FastRP propagation step, with exactly the rules of ``src/cpp/graph/graph.h``
(so the native kernels agree bit for bit).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
LANES = 16


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * _M1
        z = z ^ (z >> np.uint64(27))
        z = z * _M2
        z = z ^ (z >> np.uint64(31))
    return z


def random_spec(s: float, d: int) -> Tuple[int, np.float32]:
    """(threshold, value) for sparsity s: nonzero with probability 1/s, magnitude sqrt(s/d)."""
    if not s >= 1.0:
        raise ValueError(f"s must be >= 1, got {s}")
    threshold = int(math.floor(math.ldexp(1.0, 53) / s))
    return threshold, np.float32(math.sqrt(s / d))


def random_signs(seed: int, threshold: int, d: int, row0: int, rows: int) -> np.ndarray:
    """R's signs for rows row0 .. row0 + rows: float32 [rows, d] in {-1, 0, +1}."""
    key = mix64(np.uint64(seed % (1 << 64)))
    c = (np.arange(row0, row0 + rows, dtype=np.uint64)[:, None] * np.uint64(d)) + np.arange(d, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        u = mix64(key + (c + np.uint64(1)) * GOLDEN)
    nonzero = (u >> np.uint64(11)) < np.uint64(threshold)
    negative = ((u >> np.uint64(10)) & np.uint64(1)).astype(bool)
    return np.where(nonzero, np.where(negative, np.float32(-1), np.float32(1)), np.float32(0)).astype(np.float32)


def random_rows(seed: int, threshold: int, value: np.float32, d: int, row0: int, rows: int,
                row_scale: Optional[np.ndarray] = None) -> np.ndarray:
    """out[i, j] = R[row0 + i, j] * row_scale[i] (float32)."""
    r = random_signs(seed, threshold, d, row0, rows) * np.float32(value)
    if row_scale is not None:
        r = r * row_scale.astype(np.float32)[:, None]
    return r.astype(np.float32, copy=False)


def project_dense(seed: int, threshold: int, value: np.float32, d: int, x: np.ndarray) -> np.ndarray:
    """X @ R with the kernels' order: per output row, +-x_ic added in increasing c, then * value."""
    x = np.asarray(x, dtype=np.float32)
    rows, n_in = x.shape
    signs = random_signs(seed, threshold, d, 0, n_in)
    acc = np.zeros((rows, d), np.float32)
    for c in range(n_in):  # sequential in c: the kernels' summation order
        nz = signs[c] != 0
        if nz.any():
            # x * (+-1) is exact, so acc + x * sign == acc +- x bit for bit (up to the sign of zero).
            acc[:, nz] += x[:, c : c + 1] * signs[c, nz][None, :]
    return (acc * np.float32(value)).astype(np.float32, copy=False)


def norm_fixed_order(u: np.ndarray) -> np.ndarray:
    """Row L2 norms of u [rows, d] in the fixed 16-lane order of graph.h (float32)."""
    u = np.asarray(u, dtype=np.float32)
    rows, d = u.shape
    lanes = np.zeros((rows, LANES), np.float32)
    for c0 in range(0, d, LANES):
        chunk = u[:, c0 : c0 + LANES]
        lanes[:, : chunk.shape[1]] += chunk * chunk
    width = LANES
    while width > 1:
        width //= 2
        lanes = lanes[:, :width] + lanes[:, width : 2 * width]
    return np.sqrt(lanes[:, 0]).astype(np.float32)


def spmm_csr_order(indptr: np.ndarray, indices: np.ndarray, data: Optional[np.ndarray], prev: np.ndarray) -> np.ndarray:
    """sum over edges of each row, in stored order, of w_e * prev[col_e] (float32, starting at 0)."""
    n = len(indptr) - 1
    d = prev.shape[1]
    out = np.zeros((n, d), np.float32)
    deg = np.diff(indptr)
    max_deg = int(deg.max()) if n else 0
    # Step t adds the t-th stored edge of every row that has one: the same order as a row loop.
    for t in range(max_deg):
        rows = np.nonzero(deg > t)[0]
        e = indptr[rows] + t
        contrib = prev[indices[e]]
        if data is not None:
            contrib = contrib * data[e].astype(np.float32)[:, None]
        out[rows] += contrib
    return out


def propagate(indptr, indices, data, row_scale, prev, normalize: bool, propagate_normalized: bool,
              alpha: float, accum: Optional[np.ndarray]) -> np.ndarray:
    """One fused FastRP step (graph.h ``propagate``); returns cur and updates accum in place."""
    u = spmm_csr_order(indptr, indices, data, prev) * np.asarray(row_scale, np.float32)[:, None]
    if normalize:
        norm = norm_fixed_order(u)
        ok = norm > 0
        v = np.where(ok[:, None], u / np.where(ok, norm, np.float32(1))[:, None], np.float32(0)).astype(np.float32)
    else:
        v = u
    if accum is not None:
        accum += np.float32(alpha) * v
    return (v if propagate_normalized else u).astype(np.float32, copy=False)
