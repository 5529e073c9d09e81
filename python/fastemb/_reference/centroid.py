"""NumPy reference for centroid aggregation (forward and backward).

Same internal contract as the native kernels: ``forward`` returns
``(out, counts, wsum, arg, out_norm)`` and ``backward`` returns ``(grad_x, grad_w)``.
Computation runs in the accumulation dtype: float64 for float64 input, float32 otherwise.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def acc_dtype(dtype: np.dtype) -> type:
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def labels_from_offsets(offsets: np.ndarray) -> np.ndarray:
    k = len(offsets) - 1
    return np.repeat(np.arange(k, dtype=np.int64), np.diff(offsets))


def _flags(normalize: str) -> Tuple[bool, bool]:
    return normalize in ("pre", "both"), normalize in ("post", "both")


def _norms(a: np.ndarray) -> np.ndarray:
    """||a_i|| per row, computed in float64 so float32 rows near the overflow limit stay finite."""
    a64 = a.astype(np.float64)
    return np.sqrt((a64 * a64).sum(axis=1)).astype(a.dtype)


def _row_norms(xa: np.ndarray, eps: float) -> np.ndarray:
    """max(||x_i||, eps) per row."""
    return np.maximum(_norms(xa), xa.dtype.type(eps))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den != 0, else 0 (den broadcast over trailing axes)."""
    ok = den != 0
    return np.where(ok, num / np.where(ok, den, 1), 0).astype(num.dtype, copy=False)


def forward(
    x: np.ndarray,
    labels: Optional[np.ndarray],
    offsets: Optional[np.ndarray],
    k: int,
    weights: Optional[np.ndarray],
    reduce: str,
    normalize: str,
    eps: float,
    leave_one_out: bool,
):
    acc = acc_dtype(x.dtype)
    xa = np.asarray(x, dtype=acc)
    n, d = xa.shape
    labels = labels_from_offsets(offsets) if labels is None else np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    pre, post = _flags(normalize)
    if pre:
        xa = xa / _row_norms(xa, eps)[:, None]
    arg = None
    if reduce in ("sum", "mean"):
        w = np.ones(n, dtype=acc) if weights is None else np.asarray(weights, dtype=acc)
        group_sum = np.zeros((k, d), dtype=acc)
        np.add.at(group_sum, labels, w[:, None] * xa)
        wsum = np.zeros(k, dtype=acc)
        np.add.at(wsum, labels, w)
        if not leave_one_out:
            result = group_sum if reduce == "sum" else _safe_div(group_sum, wsum[:, None])
        else:
            others = group_sum[labels] - w[:, None] * xa
            not_single = (counts[labels] > 1)[:, None]
            if reduce == "sum":
                result = np.where(not_single, others, 0).astype(acc)
            else:
                denom = (wsum[labels] - w)[:, None]
                result = np.where(not_single, _safe_div(others, denom), 0).astype(acc)
    else:
        wsum = counts.astype(acc)
        result, arg = _extreme(xa, labels, counts, k, reduce == "amax")
    out_norm = None
    if post:
        out_norm = _norms(result)
        result = result / np.maximum(out_norm, acc(eps))[:, None]
    return result.astype(x.dtype), counts, wsum, arg, out_norm


def _extreme(xa: np.ndarray, labels: np.ndarray, counts: np.ndarray, k: int, is_max: bool):
    """Group max/min per column with the row that holds it (ties: lowest row; NaN propagates)."""
    n, d = xa.shape
    result = np.zeros((k, d), dtype=xa.dtype)
    arg = np.full((k, d), -1, dtype=np.int64)
    nonempty = np.nonzero(counts)[0]
    if n == 0 or d == 0 or len(nonempty) == 0:
        return result, arg
    order = np.argsort(labels, kind="stable")  # rows grouped, increasing row order within a group
    xs = xa[order]
    starts = (np.cumsum(counts) - counts)[nonempty]
    reducer = np.maximum if is_max else np.minimum  # both propagate NaN
    best = reducer.reduceat(xs, starts, axis=0)
    best_per_row = np.zeros((k, d), dtype=xa.dtype)
    best_per_row[nonempty] = best
    best_per_row = best_per_row[labels[order]]
    hit = (xs == best_per_row) | (np.isnan(xs) & np.isnan(best_per_row))
    position = np.where(hit, np.arange(n, dtype=np.int64)[:, None], n)
    first = np.minimum.reduceat(position, starts, axis=0)
    arg[nonempty] = order[first]
    # the value of the lowest row among ties (-0.0 and +0.0 compare equal but differ in sign)
    result[nonempty] = xs[first, np.arange(d)]
    return result, arg


def backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    labels: Optional[np.ndarray],
    offsets: Optional[np.ndarray],
    k: int,
    weights: Optional[np.ndarray],
    reduce: str,
    normalize: str,
    eps: float,
    leave_one_out: bool,
    out: np.ndarray,
    counts: np.ndarray,
    wsum: np.ndarray,
    arg: Optional[np.ndarray],
    out_norm: Optional[np.ndarray],
    need_grad_x: bool = True,
    need_grad_w: bool = False,
):
    acc = acc_dtype(x.dtype)
    eps_a = acc(eps)
    xa = np.asarray(x, dtype=acc)
    n, d = xa.shape
    labels = labels_from_offsets(offsets) if labels is None else np.asarray(labels, dtype=np.int64)
    pre, post = _flags(normalize)
    g = np.asarray(grad_out, dtype=acc)
    c_hat = np.asarray(out, dtype=acc)
    if post:
        # d(c / max(||c||, eps)): (g - c_hat (c_hat . g)) / ||c|| when ||c|| > eps, else g / eps
        norm = np.asarray(out_norm, dtype=acc)[:, None]
        proj = (c_hat * g).sum(axis=1, keepdims=True)
        big = norm > eps_a
        g = np.where(big, (g - c_hat * proj) / np.where(big, norm, 1), g / eps_a).astype(acc)
        centroid = c_hat * np.maximum(norm, eps_a)  # before normalization
    else:
        centroid = c_hat
    rn = _row_norms(xa, eps) if pre else None
    xh = xa / rn[:, None] if pre else xa
    w = np.ones(n, dtype=acc) if weights is None else np.asarray(weights, dtype=acc)
    grad_w = None
    if reduce in ("sum", "mean") and not leave_one_out:
        gy = g[labels]
        if reduce == "sum":
            dxh = w[:, None] * gy
            grad_w = (xh * gy).sum(axis=1)
        else:
            wy = wsum[labels]
            dxh = _safe_div(w, wy)[:, None] * gy
            grad_w = _safe_div(((xh - centroid[labels]) * gy).sum(axis=1), wy)
    elif reduce in ("sum", "mean"):
        # o_i = (S - w_i x_i) / B_i; with Q_i = G_i / B_i and T = group sum of Q:
        # dx_j = w_j (T - Q_j), dw_j = x_j . (T - Q_j) - U + o_j . Q_j (U = group sum of o . Q)
        denom = wsum[labels] - w if reduce == "mean" else np.ones(n, dtype=acc)
        valid = (counts[labels] > 1) & (denom != 0)
        q = np.where(valid[:, None], g / np.where(valid, denom, 1)[:, None], 0).astype(acc)
        total = np.zeros((k, d), dtype=acc)
        np.add.at(total, labels, q)
        diff = total[labels] - q
        dxh = w[:, None] * diff
        grad_w = (xh * diff).sum(axis=1)
        if reduce == "mean":
            oq = (centroid * q).sum(axis=1)
            u = np.zeros(k, dtype=acc)
            np.add.at(u, labels, oq)
            grad_w = grad_w - u[labels] + oq
    else:
        dxh = np.zeros((n, d), dtype=acc)
        hit = arg >= 0
        cols = np.broadcast_to(np.arange(d), arg.shape)
        dxh[arg[hit], cols[hit]] = g[hit]
    if pre:
        proj = (xh * dxh).sum(axis=1, keepdims=True)
        big = rn[:, None] > eps_a
        dx = np.where(big, (dxh - xh * proj) / rn[:, None], dxh / eps_a)
    else:
        dx = dxh
    grad_x = dx.astype(x.dtype) if need_grad_x else None
    if not need_grad_w or grad_w is None:
        grad_w = None
    else:
        grad_w = grad_w.astype(acc)
    return grad_x, grad_w
