"""Centroid aggregation over Dask: per-chunk partials with the native kernels, a fixed-order tree
combine, a finalize step, and leave-one-out as a second blockwise pass.

Guarantees (``u`` is the unit roundoff of the accumulation dtype: 2^-24 for float32 and float16
inputs, 2^-53 for float64; ``gamma(m) = m u / (1 - m u)``; ``n_g`` rows in group ``g``;
``A_gj = sum_{i in g} |t_ij|`` with ``t_i = w_i x_i`` -- ``x_i`` L2-normalized first under 'pre' --
the terms both sides add; ``W_g`` the group's weight sum):

* counts, ``amax`` and ``amin`` (with any ``normalize``): bit-identical to one machine;
* with one non-empty row chunk, every reduction is bit-identical to one machine;
* ``sum`` and ``mean``: the same bits for any number of workers and any task order, given the
  non-empty row chunks and ``split_every``; against one machine (which sums in its own blocked row
  order) every element is within
    - sum:  ``2 gamma(n_g - 1) A_gj``
    - mean: ``2 gamma(2 n_g + 1) A_gj / W_g``   (unweighted, or weights >= 0)
    - 'post' normalization on top: ``2 ||E_g|| / (||c_g|| - ||E_g||) + 2 (D + 2) u``, with ``E_g``
      the bound vector above and ``c_g`` the centroid before normalization (when ``||c_g|| > eps``);
    - leave-one-out sum: ``2 gamma(n_g + 1) (A_gj + |t_ij|)``; leave-one-out mean (unweighted):
      ``2 gamma(n_g + 2) (A_gj + |t_ij|) / (n_g - 1)``;
  plus, for float16 inputs, one float16 rounding of the output. Why: any tree of additions over the
  same ``n_g`` terms is within ``gamma(n_g - 1) A`` of the exact sum (adding an exact zero, e.g. the
  partial of a chunk without the group, is exact), the products ``t_i`` are the same bits on both
  sides, and each division adds one rounding. Weights of mixed sign can cancel in ``W_g``: no useful
  bound exists for the mean then (the partial sums are still deterministic).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np
import dask
import dask.array as da

import fastemb
from fastemb.centroid import canonical_reduce, check_modes

from . import _checks as ck
from ._graph import (call_on_refs, consecutive_runs, grouped_levels, key_token, nonempty, placement_groups,
                     row_blocks)

DEFAULT_SPLIT_EVERY = 4
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _acc(dtype: np.dtype) -> type:
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _as_labels(lb: np.ndarray, k: int, row0: int) -> np.ndarray:
    lb = np.asarray(lb)
    if lb.dtype == np.uint64 and lb.size and int(lb.max()) >= k:
        _raise_label_error(lb, k, row0)
    if lb.dtype not in (np.int32, np.int64):
        lb = lb.astype(np.int64)
    return lb


def _raise_label_error(lb: np.ndarray, k: int, row0: int) -> None:
    """The error for a chunk with a label out of range: names ``labels``, the label and its global row."""
    lb = np.asarray(lb)
    bad_rows = np.flatnonzero((lb < 0) | (lb >= k)) if lb.dtype.kind == "i" else np.flatnonzero(lb >= k)
    if bad_rows.size:
        at = int(bad_rows[0])
        raise ValueError(f"labels: label {int(lb[at])} at row {at + row0} (chunk of rows {row0}..{row0 + lb.shape[0]}) "
                         f"is out of range [0, num_groups={k})")


def _aggregate(x: np.ndarray, lb: np.ndarray, k: int, row0: int, **kw: Any):
    """fastemb.centroid_aggregate on one chunk; the kernels check the labels (no extra pass), and a label
    out of range is reported as the ``labels`` argument's, with its global row."""
    try:
        return fastemb.centroid_aggregate(x, lb, num_groups=k, **kw)
    except ValueError as exc:
        if str(exc).startswith("index"):
            _raise_label_error(lb, k, row0)
        raise


def _weights(wb: Optional[np.ndarray], acc: type) -> Optional[np.ndarray]:
    if wb is None:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.ascontiguousarray(wb, dtype=acc)  # as fastemb.centroid_aggregate converts them
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite (found NaN or inf)")
    return w


def _partial(xb: np.ndarray, lb: np.ndarray, wb: Optional[np.ndarray], k: int, reduce: str, normalize: str,
             eps: float, row0: int) -> dict:
    """One chunk's partial result, from the native kernels: group sums (accumulation dtype), weight
    sums and counts for sum/mean; group extremes and counts for amax/amin."""
    lb = _as_labels(lb, k, row0)
    pre = "pre" if normalize in ("pre", "both") else "none"
    acc = _acc(xb.dtype)
    # float16 -> float32 is exact and the kernels work in float32 for float16: partials stay in float32
    xa = xb.astype(acc) if xb.dtype == np.float16 else xb
    if reduce in ("amax", "amin"):
        vals, counts = _aggregate(xa, lb, k, row0, reduce=reduce, normalize=pre, eps=eps, return_counts=True)
        return {"vals": vals, "counts": counts}
    w = _weights(wb, acc)
    sums, counts = _aggregate(xa, lb, k, row0, weights=w, reduce="sum", normalize=pre, eps=eps, return_counts=True)
    if w is None:
        wsum = None  # the counts (exact integers)
    else:
        wsum = fastemb.centroid_aggregate(w.reshape(-1, 1), lb, num_groups=k, reduce="sum")[:, 0]
    return {"sums": sums, "wsum": wsum, "counts": counts}


def _extreme_merge(cur: np.ndarray, cur_n: np.ndarray, v: np.ndarray, v_n: np.ndarray, is_max: bool) -> np.ndarray:
    """The kernel's rule across chunks, earlier chunk first: a strictly better later value replaces,
    a NaN wins and stays, ties keep the earlier (lower) row; groups a chunk lacks take no part."""
    better = (v > cur) if is_max else (v < cur)
    replace = ~np.isnan(cur) & (better | np.isnan(v))
    has_cur = (cur_n > 0)[:, None]
    has_v = (v_n > 0)[:, None]
    take_v = has_v & (~has_cur | replace)
    return np.where(take_v, v, cur)


class _Combine:
    """Adds / merges partials left to right (chunk order): fixed order, same bits on any worker."""

    def __init__(self, reduce: str):
        self.reduce = reduce

    def __call__(self, *parts: dict) -> dict:
        first = parts[0]
        if self.reduce in ("amax", "amin"):
            vals, counts = first["vals"].copy(), first["counts"].copy()
            for p in parts[1:]:
                vals = _extreme_merge(vals, counts, p["vals"], p["counts"], self.reduce == "amax")
                counts += p["counts"]
            return {"vals": vals, "counts": counts}
        sums, counts = first["sums"].copy(), first["counts"].copy()
        wsum = None if first["wsum"] is None else first["wsum"].copy()
        for p in parts[1:]:
            sums += p["sums"]
            counts += p["counts"]
            if wsum is not None:
                wsum += p["wsum"]
        return {"sums": sums, "wsum": wsum, "counts": counts}

    def __dask_tokenize__(self):
        return ("fastemb.dask.centroid.combine", self.reduce)


def _post_normalize(c: np.ndarray, eps: float) -> np.ndarray:
    """Rows ``c / max(||c||, eps)`` computed by the native kernel itself (each row its own group, amax of
    one row is the row's exact bits), so the norm follows the kernel's fixed order bit for bit."""
    n = c.shape[0]
    if n == 0:
        return c.copy()
    return fastemb.centroid_aggregate(np.ascontiguousarray(c), offsets=np.arange(n + 1, dtype=np.int64),
                                      reduce="amax", normalize="post", eps=eps)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den != 0, else 0 (the kernels' safe_div), in num's dtype."""
    ok = den != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = num / np.where(ok, den, 1).astype(num.dtype)
    return np.where(ok, q, num.dtype.type(0)).astype(num.dtype, copy=False)


def _wsum(stats: dict, acc: type) -> np.ndarray:
    return stats["counts"].astype(acc) if stats["wsum"] is None else stats["wsum"]


def _finalize(stats: dict, reduce: str, normalize: str, eps: float, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    post = normalize in ("post", "both")
    if reduce in ("amax", "amin"):
        vals = np.where((stats["counts"] > 0)[:, None], stats["vals"], stats["vals"].dtype.type(0))
        out = _post_normalize(vals, eps) if post else vals
        return out.astype(dtype, copy=False), stats["counts"]
    acc = _acc(dtype)
    sums = stats["sums"]
    c = _safe_div(sums, _wsum(stats, acc)[:, None]) if reduce == "mean" else sums
    if post:
        c = _post_normalize(c, eps)
    return c.astype(dtype, copy=False), stats["counts"]


def _empty_stats(k: int, d: int, dtype: np.dtype, reduce: str, weighted: bool) -> dict:
    acc = _acc(dtype)
    if reduce in ("amax", "amin"):
        return {"vals": np.zeros((k, d), acc), "counts": np.zeros(k, np.int64)}
    return {"sums": np.zeros((k, d), acc), "wsum": np.zeros(k, acc) if weighted else None,
            "counts": np.zeros(k, np.int64)}


def _loo_block(xb: np.ndarray, lb: np.ndarray, wb: Optional[np.ndarray], stats: dict, reduce: str,
               normalize: str, eps: float, k: int, row0: int) -> np.ndarray:
    """Leave-one-out rows of one chunk: ``(S_y - t_i) / (W_y - w_i)`` (mean) or ``S_y - t_i`` (sum),
    0 for singletons and zero denominators, with ``t_i = w_i x_i`` (normalized first under 'pre'): the
    kernels' formula, each operation rounded as they round it."""
    lb = _as_labels(lb, k, row0)
    _raise_label_error(lb, k, row0)  # the rows index the statistics below: check them first
    n, d = xb.shape
    acc = _acc(xb.dtype)
    if n == 0:
        return np.zeros((0, d), xb.dtype)
    w = _weights(wb, acc)
    pre = normalize in ("pre", "both")
    xa = xb.astype(acc)
    if pre or w is not None:
        # t_i as the kernel forms it (w_i / ||x_i|| times x_i, one rounding), by the kernel: one row per group
        t = fastemb.centroid_aggregate(xa, offsets=np.arange(n + 1, dtype=np.int64), weights=w, reduce="sum",
                                       normalize="pre" if pre else "none", eps=eps)
    else:
        t = xa
    others = stats["sums"][lb] - t
    single = (stats["counts"][lb] == 1)[:, None]
    if reduce == "mean":
        wi = np.ones(n, acc) if w is None else w
        denom = (_wsum(stats, acc)[lb] - wi)[:, None]
        out = np.where(single | (denom == 0), acc(0), _safe_div(others, denom))
    else:
        out = np.where(single, acc(0), others)
    out = out.astype(acc, copy=False)
    if normalize in ("post", "both"):
        out = _post_normalize(out, eps)
    return out.astype(xb.dtype, copy=False)


def centroid_aggregate(
    x: Any,
    labels: Any,
    num_groups: int,
    *,
    reduce: str = "mean",
    weights: Any = None,
    normalize: str = "none",
    eps: float = 1e-12,
    leave_one_out: bool = False,
    return_counts: bool = False,
    split_every: int = DEFAULT_SPLIT_EVERY,
    client: Any = None,
) -> Union[da.Array, Tuple[da.Array, da.Array]]:
    """:func:`fastemb.centroid_aggregate` over row chunks: group means / sums / max / min of ``x`` by label.

    Each row chunk is reduced by the native kernels into partial group sums, weight sums and counts
    (or group extremes); the partials are combined ``split_every`` at a time, in chunk order, along a
    tree fixed by the number of non-empty chunks; the finalize step divides (mean) and normalizes
    ('post'). ``leave_one_out`` then runs a second blockwise pass over the chunks of ``x``.
    What is bit-identical and the float bound for the rest: see the module docstring
    (``fastemb.dask.centroid``).

    Args:
        x: dask array ``[N, D]`` float16/32/64 (a NumPy array is one chunk); known chunk sizes. Rows split
            across column chunks are joined first (``x.rechunk({1: -1})``).
        labels: ``[N]`` integer labels, ``0 <= label < num_groups``: a dask array chunked like ``x``'s
            rows (otherwise ValueError) or a NumPy array (split to match). A label out of range
            raises ValueError naming ``labels`` and the row, when computed.
        num_groups: K (>= 0), required: deriving it would need a pass over the labels.
        reduce, weights, normalize, eps, leave_one_out, return_counts: as in
            :func:`fastemb.centroid_aggregate` (``weights`` chunked like ``labels``).
        split_every: fan-in of the combine tree (>= 2); part of what fixes the bits of sum/mean.
        client: the distributed Client the result will be computed on (default: the current one, if any).
            When ``x``'s chunks are held by its workers (persisted or scattered), each worker's chunks are
            reduced by one task per worker thread, which computes the tree nodes (the same combines in the
            same order) whose chunks it holds: fewer tasks, each costing milliseconds of scheduling; the
            same bits.

    Returns:
        Lazy dask arrays: ``[K, D]`` (one chunk) or, with ``leave_one_out``, ``[N, D]`` chunked like
        ``x``; and the int64 ``[K]`` counts when ``return_counts``.
    """
    x = ck.as_dask("x", x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, float32 or float64, got dtype {x.dtype}")
    ck.check_ndim("x", x, (2,), "2-D [N, D]")
    ck.check_known_chunks("x", x)
    reduce = canonical_reduce(reduce)
    check_modes(reduce, normalize, eps, leave_one_out, weights is not None)
    if isinstance(leave_one_out, (np.bool_,)):
        leave_one_out = bool(leave_one_out)
    k = ck.check_int("num_groups", num_groups, 0)
    split_every = ck.check_split_every(split_every)
    eps = float(eps)
    x = ck.whole_rows(x)
    lab = ck.aligned_vector("labels", labels, "x", x)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}")
    w = None
    if weights is not None:
        w = ck.aligned_vector("weights", weights, "x", x)
        if w.dtype.kind not in "fiu":
            raise TypeError(f"weights must be a real array, got dtype {w.dtype}")
    d = int(x.shape[1])
    dtype = x.dtype
    token = key_token("centroid", x.name, lab.name, None if w is None else w.name, k, reduce, normalize, eps,
                      leave_one_out, split_every)

    xb, lbb = row_blocks(x), row_blocks(lab)
    wbb = row_blocks(w) if w is not None else [None] * len(xb)
    chunks = nonempty(x)
    combine = _Combine(reduce)
    if chunks:
        # the chunks a worker holds are reduced by one task per worker thread, along the same tree
        held = placement_groups(x, chunks, client if client is not None else ck.current_client())
        groups = consecutive_runs(held, chunks)
        # the grouping is part of the keys: graphs of the same inputs grouped differently hold different tasks
        token = key_token(token, groups)
        leaves = [(xb[i], lbb[i], wbb[i], k, reduce, normalize, eps, row0) for i, row0, _ in chunks]
        last = grouped_levels(leaves, _partial, combine, groups, split_every, "centroid-combine", token)
    else:
        last = [(dask.delayed(_empty_stats, pure=True)(k, d, dtype, reduce, w is not None,
                                                       dask_key_name=f"centroid-empty-{token}"), None)]
    # root tasks combine the last level and produce the outputs directly (no getitem level)
    counts = da.from_delayed(call_on_refs(_root_counts, last, key=f"centroid-counts-{token}"),
                             shape=(k,), dtype=np.int64, meta=np.empty((0,), np.int64))
    if not leave_one_out:
        fin = call_on_refs(_root_finalize, last, combine, normalize, eps, dtype, key=f"centroid-finalize-{token}")
        out = da.from_delayed(fin, shape=(k, d), dtype=dtype, meta=np.empty((0, 0), dtype))
    else:
        only, index = last[0]
        stats = only if len(last) == 1 and index is None else call_on_refs(
            combine, last, key=f"centroid-combine-{token}-root")
        offs = ck.row_offsets([int(s) for s in x.chunks[0]])
        row0s = da.from_array(offs[:-1], chunks=1, name=False)
        args = (x, "ij", lab, "i", None if w is None else w, None if w is None else "i", stats, None, reduce, None,
                normalize, None, eps, None, k, None, row0s, "i")
        out = da.blockwise(_loo_apply, "ij", *args, dtype=dtype, meta=np.empty((0, 0), dtype),
                           name=f"centroid-loo-{token}", align_arrays=False)
    return (out, counts) if return_counts else out


def _root_counts(*parts: dict) -> np.ndarray:
    counts = parts[0]["counts"].copy()
    for p in parts[1:]:
        counts += p["counts"]
    return counts


def _root_finalize(combine: "_Combine", normalize: str, eps: float, dtype: np.dtype, *parts: dict) -> np.ndarray:
    stats = combine(*parts) if len(parts) > 1 else parts[0]
    return _finalize(stats, combine.reduce, normalize, eps, dtype)[0]


def _loo_apply(xb, lb, wb, stats, reduce, normalize, eps, k, row0):
    return _loo_block(xb, lb, wb, stats, reduce, normalize, eps, k, int(np.asarray(row0).reshape(-1)[0]))
