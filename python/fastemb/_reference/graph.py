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


def spmm_csr_order(indptr: np.ndarray, indices: np.ndarray, data: Optional[np.ndarray], prev: np.ndarray,
                   start: Optional[np.ndarray] = None) -> np.ndarray:
    """sum over edges of each row, in stored order, of w_e * prev[col_e] (float32, starting at 0, or at the
    row's ``start`` [n, d]: the continuation of a partial sum)."""
    n = len(indptr) - 1
    d = prev.shape[1]
    out = np.zeros((n, d), np.float32) if start is None else np.array(start, dtype=np.float32, copy=True)
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
    return _epilogue(u, normalize, propagate_normalized, alpha, accum)


def propagate_block(indptr, indices, data, row_scale, prev, acc_in: Optional[np.ndarray], finish: bool,
                    normalize: bool, propagate_normalized: bool, alpha: float, accum: Optional[np.ndarray]) -> np.ndarray:
    """graph.h ``propagate_block``: one column block A[i, j] [rows, cols] (local columns) of a row block, prev =
    X[j] [cols, d]: acc = acc_in (0 when None) + the block's edges in stored order; without ``finish`` returns
    acc, with it the row scale (None = 1) and :func:`propagate`'s epilogue (accum updated in place). Chained
    over j in increasing order, the same bits as :func:`propagate` on rows ordered by column block."""
    acc = spmm_csr_order(indptr, indices, data, prev, acc_in)
    if not finish:
        return acc
    u = acc if row_scale is None else acc * np.asarray(row_scale, np.float32)[:, None]
    return _epilogue(u, normalize, propagate_normalized, alpha, accum)


def _epilogue(u: np.ndarray, normalize: bool, propagate_normalized: bool, alpha: float,
              accum: Optional[np.ndarray]) -> np.ndarray:
    """propagate's epilogue on the scaled sums u: row-L2, accumulation into accum, the propagated matrix."""
    if normalize:
        norm = norm_fixed_order(u)
        ok = norm > 0
        v = np.where(ok[:, None], u / np.where(ok, norm, np.float32(1))[:, None], np.float32(0)).astype(np.float32)
    else:
        v = u
    if accum is not None:
        accum += np.float32(alpha) * v
    return (v if propagate_normalized else u).astype(np.float32, copy=False)


# --- Additions for the Python layer (fastemb.graph): CSR projection, accumulate, standardize and a
# readable FastRP driver built only from the rules above. The public API and the native kernels are
# tested against these.

def project_csr(seed: int, threshold: int, value: np.float32, d: int, indptr: np.ndarray, indices: np.ndarray,
                data: Optional[np.ndarray], cols: int) -> np.ndarray:
    """X @ R for CSR X [rows, cols] (graph.h ``project_csr``): per row, +-x_ic added in stored order, then
    * value. ``data`` None means all ones."""
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    signs = random_signs(seed, threshold, d, 0, cols)
    # spmm_csr_order adds x_ic * sign in stored order: x * (+-1) is exact and x * 0 adds a signed zero,
    # which leaves a sum that starts at +0 unchanged, so this equals the kernel's skip-the-zeros rule.
    w = None if data is None else np.asarray(data, dtype=np.float32)
    acc = spmm_csr_order(indptr, indices, w, signs)
    return (acc * np.float32(value)).astype(np.float32, copy=False)


def accumulate(x: np.ndarray, normalize: bool, alpha: float, accum: np.ndarray) -> None:
    """graph.h ``accumulate``: accum += alpha * (row-L2-normalized x if normalize else x), in place."""
    x = np.asarray(x, dtype=np.float32)
    if normalize:
        norm = norm_fixed_order(x)
        ok = norm > 0
        v = np.where(ok[:, None], x / np.where(ok, norm, np.float32(1))[:, None], np.float32(0)).astype(np.float32)
    else:
        v = x
    accum += np.float32(alpha) * v


STANDARDIZE_BLOCK = 4096


def _blocked_column_sum(y: np.ndarray) -> np.ndarray:
    """Column sums in float64: rows added one after another inside fixed 4096-row blocks, block sums
    added in block order (graph.h ``standardize_columns``)."""
    total = np.zeros(y.shape[1], np.float64)
    for r0 in range(0, y.shape[0], STANDARDIZE_BLOCK):
        block = y[r0 : r0 + STANDARDIZE_BLOCK]
        total = total + np.cumsum(block, axis=0)[-1]  # cumsum: strictly sequential over the rows
    return total


def column_block_sums(x: np.ndarray, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """graph.h ``column_block_sums``: [ceil(rows / 4096), d] float64, per 4096-row block of x the column sums of x
    (or of (x - mean)^2) from 0 in row order."""
    x = np.asarray(x, dtype=np.float32)
    rows, d = x.shape
    out = np.zeros(((rows + STANDARDIZE_BLOCK - 1) // STANDARDIZE_BLOCK, d), np.float64)
    for b, r0 in enumerate(range(0, rows, STANDARDIZE_BLOCK)):
        block = x[r0 : r0 + STANDARDIZE_BLOCK].astype(np.float64)
        if mean is not None:
            block = (block - mean) ** 2
        out[b] = np.cumsum(block, axis=0)[-1]  # cumsum: strictly sequential over the rows
    return out


def standardize_apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """graph.h ``standardize_apply``: float32((x - mean) / (std > 0 ? std : 1)) in float64."""
    return ((np.asarray(x, np.float32).astype(np.float64) - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def standardize_columns(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn ``scale`` semantics on float32 x [rows, d]: (x - mean) / std with the population std and a
    zero std counted as 1; statistics in float64. Returns (standardized float32, mean, std)."""
    x = np.asarray(x, dtype=np.float32)
    rows, d = x.shape
    if rows == 0:
        return x.copy(), np.zeros(d), np.zeros(d)
    x64 = x.astype(np.float64)
    mean = _blocked_column_sum(x64) / rows
    std = np.sqrt(_blocked_column_sum((x64 - mean) ** 2) / rows)
    out = ((x64 - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return out, mean, std


def degrees(indptr: np.ndarray, data: Optional[np.ndarray], n: int) -> np.ndarray:
    """Weighted out-degrees (row sums) in float64 in stored order, cast to float32."""
    indptr = np.asarray(indptr, dtype=np.int64)
    counts = np.diff(indptr)
    if data is None:
        return counts.astype(np.float32)
    rows = np.repeat(np.arange(n), counts)
    return np.bincount(rows, weights=np.asarray(data, np.float32).astype(np.float64), minlength=n).astype(np.float32)


def relationship_counts(indptr: np.ndarray, counts: Optional[np.ndarray] = None) -> np.ndarray:
    """Unweighted out-degrees (the relationship count, GDS's ``graph.degree``) as float32: ``counts`` when given
    (edges as given, before duplicates were merged), else the stored entries per row."""
    if counts is not None:
        return np.asarray(counts).astype(np.float32)
    return np.diff(np.asarray(indptr, dtype=np.int64)).astype(np.float32)


def base_width(dim: int, feature_dim: int, feature_scaling: str) -> int:
    """The width whose sqrt(s / width) is the magnitude of the random columns: dim ('shared'), or the random
    block's own width dim - feature_dim ('block'; dim when there are no random columns, which is then unused)."""
    if feature_scaling == "block" and 0 < feature_dim < dim:
        return dim - feature_dim
    return dim


def feature_width(dim: int, feature_dim: int, feature_scaling: str) -> int:
    """The width whose sqrt(s_f / width) is the magnitude of the feature projection: dim ('shared') or
    feature_dim ('block')."""
    return feature_dim if feature_scaling == "block" and feature_dim > 0 else dim


def initial_scale(deg: np.ndarray, beta: float) -> np.ndarray:
    """deg^beta in float32 (float64 power, rounded once); degree 0 gives 1."""
    deg = np.asarray(deg, np.float32)
    pos = deg > 0
    return np.where(pos, np.power(np.where(pos, deg, 1).astype(np.float64), float(beta)), 1.0).astype(np.float32)


def propagation_scale(deg: np.ndarray, min_degree: float = 0.0) -> np.ndarray:
    """1 / max(deg, min_degree) in float32 (float64 division, rounded once); 0 where that is 0."""
    den = np.maximum(np.asarray(deg, np.float32).astype(np.float64), float(min_degree))
    pos = den > 0
    return np.where(pos, 1.0 / np.where(pos, den, 1.0), 0.0).astype(np.float32)


FEATURE_SEED_XOR = 0x6A09E667F3BCC909  # the feature projection's stream: seed ^ this (first 64 bits of frac(sqrt 2))


def fastrp(indptr, indices, data, n: int, dim: int, weights, beta: float, s: float, seed: int = 0,
           normalize: bool = True, propagate_normalized: bool = False, self_influence: float = 0.0,
           features: Optional[np.ndarray] = None, feature_dim: int = 0, feature_s: float = 3.0,
           standardize: bool = True, min_degree: float = 0.0, return_iterations: bool = False,
           degree: str = "weighted", feature_scaling: str = "shared", counts: Optional[np.ndarray] = None):
    """Readable FastRP on CSR (indptr, indices, data) [n, n] with the rules of fastemb.fastrp.

    deg: the weighted out-degree (``degree='weighted'``) or the relationship count (``'count'``: ``counts`` when
    given, else the stored entries per row). Initial vectors: random_rows * deg^beta (magnitude sqrt(s/w),
    w = base_width); the last ``feature_dim`` columns replaced by the projection of ``features`` (dense [n, f],
    seed ^ FEATURE_SEED_XOR, sparsity ``feature_s``, magnitude sqrt(feature_s/w_f), w_f = feature_width). Then
    E = self_influence * rowL2(initial) + sum_i weights[i] * V_i, V_i from propagate with 1/max(deg, min_degree);
    optional column standardization. Returns E (and the [q, n, dim] V_i when return_iterations).
    """
    threshold, value = random_spec(s, base_width(dim, feature_dim, feature_scaling))
    deg = relationship_counts(indptr, counts) if degree == "count" else degrees(indptr, data, n)
    prev = random_rows(seed, threshold, value, dim, 0, n, initial_scale(deg, beta))
    if feature_dim:
        f_threshold, f_value = random_spec(feature_s, feature_width(dim, feature_dim, feature_scaling))
        f_seed = (seed % (1 << 64)) ^ FEATURE_SEED_XOR
        prev[:, dim - feature_dim :] = project_dense(f_seed, f_threshold, f_value, feature_dim, features)
    scale = propagation_scale(deg, min_degree)
    accum = np.zeros((n, dim), np.float32)
    if self_influence != 0:
        accumulate(prev, True, self_influence, accum)
    data32 = None if data is None else np.asarray(data, np.float32)
    iterations = []
    for alpha in weights:
        cur = propagate(indptr, indices, data32, scale, prev, normalize, propagate_normalized, alpha, accum)
        if return_iterations:
            v = np.zeros((n, dim), np.float32)
            accumulate(cur, normalize and not propagate_normalized, 1.0, v)
            iterations.append(v)
        prev = cur
    if standardize:
        accum = standardize_columns(accum)[0]
    if return_iterations:
        return accum, np.stack(iterations) if iterations else np.zeros((0, n, dim), np.float32)
    return accum
