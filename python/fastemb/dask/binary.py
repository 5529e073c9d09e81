"""SDC binary codes over Dask: :func:`binarize` (row-wise, per chunk) and :func:`sdc_topk` (per-chunk
top-k with global ids, then a tree merge under the same rule as the kernel).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import dask
import dask.array as da

import fastemb
from fastemb.binary import as_codes, check_dim

from . import _checks as ck
from ._graph import key_token, nonempty, placement_groups, row_blocks, tree_levels

INT32_MIN = np.iinfo(np.int32).min
_INT32_MAX = np.iinfo(np.int32).max
DEFAULT_SPLIT_EVERY = 8
_INLINE_QUERY_BYTES = 8 << 20  # query bytes x corpus chunks inlined into the graph at most


# ---- binarize ---------------------------------------------------------------------------------

def _binarize_block(x: np.ndarray, scale: Any, bits: int, kwargs: dict) -> np.ndarray:
    if isinstance(scale, np.ndarray) and scale.ndim == 2:  # a per-row scale, given as [rows, 1] blocks
        scale = scale[:, 0]
    return fastemb.binarize(x, bits, scale, **kwargs)


def binarize(x: Any, bits: int = 1, scale: Any = None, **kwargs: Any) -> da.Array:
    """:func:`fastemb.binarize` on every row chunk of ``x``: codes bit-identical to one machine.

    Args:
        x: dask array ``[n, m]`` of reals (a NumPy array is taken as one chunk). A row split across
            column chunks is first joined (``x.rechunk({1: -1})``: a shuffle of those columns), since
            each row's scale ``mean|x|`` needs the whole row.
        bits: 1..4 bit planes.
        scale: None (``mean|x|`` per row), a positive scalar, or ``[n]`` per row (NumPy, split to
            match ``x``'s row chunks, or a dask array chunked like them).
        **kwargs: passed to :func:`fastemb.binarize` (e.g. ``threshold_rule``), checked now.

    Returns:
        A lazy dask array of uint8 codes ``[n, bits, ceil(m / 8)]``, chunked like ``x``'s rows.
        NaN / inf in a chunk raise ValueError (naming ``x``) when computed.
    """
    ck.reject_out(kwargs)
    x = ck.as_dask("x", x)
    ck.check_ndim("x", x, (2,), "2-D [n, m]")
    ck.check_known_chunks("x", x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x must be a real array, got dtype {x.dtype}")
    m = int(x.shape[1])
    # the arguments (bits, kwargs) are checked by the function itself on an empty chunk
    codes0 = fastemb.binarize(np.zeros((0, m), x.dtype), bits, None, **kwargs)
    bits = int(codes0.shape[1])
    x = ck.whole_rows(x)
    nbytes = int(codes0.shape[2])
    chunks = (x.chunks[0], (bits,), (nbytes,))
    if scale is None or np.ndim(scale) == 0 and not isinstance(scale, da.Array):
        if scale is not None:  # a scalar: checked now with the function's own rules
            fastemb.binarize(np.zeros((1, m), x.dtype), bits, scale, **kwargs)
        return da.map_blocks(_binarize_block, x, scale, bits, kwargs, dtype=np.uint8, chunks=chunks,
                             new_axis=2, meta=np.empty((0, 0, 0), np.uint8))
    s = ck.aligned_vector("scale", scale, "x", x)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a real scalar or array, got dtype {s.dtype}")
    return da.map_blocks(_binarize_block, x, s[:, None], bits, kwargs, dtype=np.uint8, chunks=chunks,
                         new_axis=2, meta=np.empty((0, 0, 0), np.uint8))


# ---- sdc_topk -------------------------------------------------------------------------------------

def merge_topk(*parts: Tuple[np.ndarray, np.ndarray], k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Merges top-k lists ``(scores int32 [nq, m_i], ids int64 [nq, m_i])`` (global ids; ``-1`` marks a
    padded slot) into the best ``k``: score descending, ties to the lower id, padded with
    ``(INT32_MIN, -1)``. The rule is a total order on (score, id), so the result does not depend on how
    the candidates were split or in which order the parts are merged."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    nq, m = scores.shape
    out_s = np.full((nq, k), INT32_MIN, dtype=np.int32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if m == 0 or nq == 0:
        return out_s, out_i
    # Real scores are > INT32_MIN (|S| <= dim L^2 <= INT32_MAX), so padded slots sort last.
    if m > k:  # keep the k best of each row, then sort those: argpartition on one int64 key when ids allow
        if ids.max(initial=0) < (1 << 31) - 1:
            # (score desc, id asc) as one int64: (INT32_MAX - score) in [0, 2^32), ids + 1 in [0, 2^31)
            key = (_INT32_MAX - scores.astype(np.int64)) * (1 << 31) + (ids + 1)
            top = np.argpartition(key, k - 1, axis=1)[:, :k]
            key_top = np.take_along_axis(key, top, axis=1)
            order = np.take_along_axis(top, np.argsort(key_top, axis=1, kind="stable"), axis=1)
        else:
            order = np.lexsort((ids, -scores.astype(np.int64)), axis=-1)[:, :k]
    else:
        order = np.lexsort((ids, -scores.astype(np.int64)), axis=-1)
    w = order.shape[1]
    out_s[:, :w] = np.take_along_axis(scores, order, axis=1)
    out_i[:, :w] = np.take_along_axis(ids, order, axis=1)
    out_i[out_s == INT32_MIN] = -1  # padded slots carry id -1 whatever their position
    return out_s, out_i


def _chunk_topk(q: np.ndarray, d: np.ndarray, k: int, dim: int, row0: int) -> Tuple[np.ndarray, np.ndarray]:
    """The chunk's top-min(k, rows) with global ids (row0 + local id)."""
    kk = max(1, min(k, d.shape[0]))
    scores, ids = fastemb.sdc_topk(q, d, kk, dim)
    ids = np.where(ids >= 0, ids + row0, -1)
    return scores, ids


def _chunks_topk(q: np.ndarray, k: int, dim: int, row0s: Tuple[int, ...], *blocks: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """The top-k of a group of chunks (starting at rows ``row0s``), with global ids."""
    if len(blocks) == 1:
        return _chunk_topk(q, blocks[0], k, dim, row0s[0])
    return merge_topk(*[_chunk_topk(q, b, k, dim, r0) for b, r0 in zip(blocks, row0s)], k=k)


def _as_codes3(name: str, a: da.Array) -> da.Array:
    """Validates dask codes ``[n, bits, nbytes]`` (or ``[n, nbytes]`` for 1 bit) and returns them 3-D."""
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (packed bits), got {a.dtype}")
    ck.check_ndim(name, a, (2, 3), "[n, bits, nbytes] (or [n, nbytes] for 1 bit)")
    ck.check_known_chunks(name, a)
    if a.ndim == 2:
        ck.check_unsplit(name, a, 1, "bytes axis", "{1: -1}")
        a = a[:, None, :]
    else:
        ck.check_unsplit(name, a, 1, "bits axis", "{1: -1, 2: -1}")
        ck.check_unsplit(name, a, 2, "bytes axis", "{1: -1, 2: -1}")
    if not 1 <= a.shape[1] <= 4:
        raise ValueError(f"{name}: bits (axis 1) must be in 1..4, got shape {a.shape}")
    if a.shape[2] < 1:
        raise ValueError(f"{name}: nbytes (last axis) must be >= 1, got shape {a.shape}")
    return a


def sdc_topk(q: Any, d: Any, k: int, dim: Optional[int] = None, *,
             split_every: int = DEFAULT_SPLIT_EVERY, client: Any = None) -> Tuple[da.Array, da.Array]:
    """:func:`fastemb.sdc_topk` over a chunked corpus: the ``k`` best corpus rows of each query.

    Each corpus chunk gives its top-k with global ids (the chunk's first row + local id), and a tree
    of merges (``split_every`` lists at a time) keeps the best ``k`` under the kernel's rule: score
    descending, ties to the lower id. That rule is a total order, so the result is **identical** to
    ``fastemb.sdc_topk(q, concatenate(d), k, dim)`` for any chunking and any number of workers.

    Args:
        q: query codes ``[nq, bits, nbytes]`` (``[nq, nbytes]`` for 1 bit): a NumPy array (small query
            sets go inside each chunk's task, larger ones are sent once to each worker that needs them)
            or a dask array chunked by rows.
        d: corpus codes, a dask array chunked by rows only (e.g. ``da.from_zarr`` or
            :func:`fastemb.dask.from_npy` for a ``.npy`` file; not ``da.from_array`` over ``np.load(...,
            mmap_mode="r")``, whose whole contents the distributed scheduler ships in the task graph); chunk
            sizes must be known. Codes chunked across the bits or bytes axis raise ValueError (a row must lie
            in one chunk).
        k: >= 1 (may exceed the corpus size: padded).
        dim: true dimensions per plane (default ``8 * nbytes``).
        split_every: fan-in of the merge tree (>= 2).
        client: the distributed Client the result will be computed on (default: the current one, if any).
            When ``d``'s chunks are held by its workers (persisted or scattered), consecutive chunks on the
            same worker are scored by one task per worker thread instead of one task per chunk (each task
            costs milliseconds of scheduling); the result is the same.

    Returns:
        ``(scores, ids)``: lazy dask arrays int32 / int64 ``[nq, k]``, chunked like ``q``'s rows;
        compute both at once with ``dask.compute(scores, ids)``. Padded slots hold ``INT32_MIN`` / ``-1``.
    """
    k = ck.check_int("k", k, 1)
    split_every = ck.check_split_every(split_every)
    if isinstance(q, np.ndarray):
        q_np: Optional[np.ndarray] = as_codes("q", q)
        q_da = None
        q_shape = q_np.shape
    else:
        q_np = None
        q_da = _as_codes3("q", ck.as_dask("q", q))
        q_shape = q_da.shape
    d_given = ck.as_dask("d", d)
    d = _as_codes3("d", d_given)
    if q_shape[1] != d.shape[1]:
        raise ValueError(f"q and d disagree on bits: q has shape {q_shape} (bits={q_shape[1]}), d has shape "
                         f"{d.shape} (bits={d.shape[1]}); codes are [n, bits, nbytes]")
    if q_shape[2] != d.shape[2]:
        raise ValueError(f"q and d disagree on nbytes: q has shape {q_shape} (nbytes={q_shape[2]}), d has shape "
                         f"{d.shape} (nbytes={d.shape[2]}); codes are [n, bits, nbytes]")
    dim = check_dim(dim, int(d.shape[2]))
    L = 2 ** int(d.shape[1]) - 1
    if dim * L * L > _INT32_MAX:
        raise ValueError(f"dim={dim} is too large for {d.shape[1]}-bit codes: scores would overflow int32")

    token = key_token("sdc_topk", d.name, q_da.name if q_da is not None else q_np, k, dim, split_every)
    d_blocks = row_blocks(d)
    d_chunks = nonempty(d)
    # grouped by where the chunks already are (the chunk indices of d are d_given's: rows only)
    groups = placement_groups(d_given, d_chunks, client if client is not None else ck.current_client())
    if q_np is not None:
        # Small query sets travel inside each chunk task (a level of tasks fewer: each level costs a
        # scheduler round trip); larger ones are one task, sent once to each worker that needs them.
        inline = q_np.nbytes * max(1, len(d_chunks)) <= _INLINE_QUERY_BYTES
        q_parts = [(q_np if inline else dask.delayed(q_np, name=f"sdc-queries-{token}"), q_np.shape[0])]
    else:
        q_parts = list(zip(row_blocks(q_da), [int(s) for s in q_da.chunks[0]]))
    scores_out, ids_out = [], []
    for qi, (qb, nq_i) in enumerate(q_parts):
        if nq_i == 0 or not d_chunks:
            scores_out.append(da.full((nq_i, k), INT32_MIN, dtype=np.int32, chunks=(nq_i, k)))
            ids_out.append(da.full((nq_i, k), -1, dtype=np.int64, chunks=(nq_i, k)))
            continue
        parts = [dask.delayed(_chunks_topk, pure=True)(qb, k, dim, tuple(c[1] for c in group),
                                                       *[d_blocks[c[0]] for c in group],
                                                       dask_key_name=f"sdc-chunk-topk-{token}-{qi}-{group[0][0]}")
                 for group in groups]
        last = tree_levels(parts, _merge_k(k), split_every, f"sdc-merge-{qi}", token, keep=split_every)
        # the root: two tasks merge the last level, one keeping the scores, one the ids (no getitem level)
        for out, part, dtype in ((scores_out, 0, np.int32), (ids_out, 1, np.int64)):
            root = dask.delayed(_merge_part, pure=True)(k, part, *last, dask_key_name=f"sdc-root-{part}-{token}-{qi}")
            out.append(da.from_delayed(root, shape=(nq_i, k), dtype=dtype, meta=np.empty((0, 0), dtype)))
    if len(scores_out) == 1:
        return scores_out[0], ids_out[0]
    return da.concatenate(scores_out, axis=0), da.concatenate(ids_out, axis=0)


def _merge_part(k: int, part: int, *parts) -> np.ndarray:
    return merge_topk(*parts, k=k)[part]


class _merge_k:
    """``merge_topk(*parts, k=k)`` as a picklable callable with a stable token."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, *parts):
        return merge_topk(*parts, k=self.k)

    def __dask_tokenize__(self):
        return ("fastemb.dask.merge_topk", self.k)

    def __reduce__(self):
        return (_merge_k, (self.k,))
