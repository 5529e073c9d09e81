"""FastRP over Dask: the graph in row blocks, each propagation step a block-sparse SpMM, bit-identical
to :func:`fastemb.fastrp` on one machine.

The nodes are split into B consecutive blocks; row block i of the adjacency A (its rows, all columns)
lives on one worker, split there into the pieces A[i, j] (the columns of node block j, local indices).
A step U' = M U runs, for each row block i, a chain of tasks over the column blocks j that hold edges
of block i, in increasing j:

    acc = A[i, j0] @ X[j0];  acc = acc + A[i, j1] @ X[j1];  ...;  last j: scale, row-L2, accumulate

with the native ``propagate_block`` kernel, which continues a row's float32 sum from the accumulator
in the one-machine kernel's order. A row whose stored edges are ordered by column block (sorted
indices, or any edge list: it is sorted when converted) then adds its edges in the same order as one
machine: the same bits, for any block count, worker count or placement. Rows not ordered so raise
ValueError (``scipy``: ``.sort_indices()``).

What moves: X[j] (= the previous step's rows of block j, [n_j, d] float32) goes to each worker whose
row blocks have edges into block j, once (Dask keeps the copy there while its tasks need it); the
accumulators stay where their row block is: each row block's tasks are placed at its worker with
``dask.annotate(workers=..., allow_other_workers=True)`` (a lost worker's blocks are recomputed
elsewhere; Dask's work stealing may still hand a chain link to an idle worker, which then fetches
the partial sum: no traffic beyond the minimum with ``distributed.scheduler.work-stealing: False``).
With a distributed client the computation is started (persisted) by the call, from the graph as
built: dask.array's low-level optimization would otherwise fuse the chains and drop the annotations.
The first step of a run without features or self-influence ships no X at all: R's rows are
generated where they are needed, from a small per-block table (the sparse lists of R's nonzeros, as
one machine's fused first step).

Degrees, deg^beta and 1/max(deg, min_degree) are row-local (computed on the row block's worker).
Column standardization reproduces one machine's float64 statistics over fixed 4096-row blocks: each
row block sums the 4096-row blocks it holds whole; the rows of a 4096-row block split between row
blocks (at most two pieces of < 4096 rows per row block: none when row blocks are multiples of 4096
rows) are sent to the combining task and summed there in row order.
"""
from __future__ import annotations

import math
import numbers
import operator
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import dask
import dask.array as da
from dask.sizeof import sizeof

from fastemb import _backend
from fastemb import graph as _g
from fastemb._reference import graph as _ref

from . import _checks as ck

__all__ = ["fastrp", "traffic"]

STANDARDIZE_BLOCK = _ref.STANDARDIZE_BLOCK  # the one-machine statistics' row blocks (4096)


# ---- the row blocks, as held on their workers -------------------------------------------------------

@dataclass
class RowBlock:
    """Row block i of the adjacency, prepared on its worker: rows [row0, row0 + rows), split by column
    block (``pieces[j]`` = A[i, j], columns local to node block j), and its rows' scales."""
    index: int
    row0: int
    rows: int
    pieces: Dict[int, _g.Csr]
    initial_scale: np.ndarray      # float32 [rows]: deg^beta
    propagation_scale: np.ndarray  # float32 [rows]: 1 / max(deg, min_degree)
    nnz: int = 0

    def column_blocks(self) -> List[int]:
        return sorted(self.pieces)


def _csr_nbytes(c: _g.Csr) -> int:
    return int(c.indptr.nbytes + c.indices.nbytes + (c.data.nbytes if c.data is not None else 0)
               + (c.row_ids.nbytes if c.row_ids is not None else 0))


@sizeof.register(RowBlock)
def _sizeof_row_block(b: RowBlock) -> int:  # the scheduler's locality decisions weigh this
    return sum(_csr_nbytes(c) for c in b.pieces.values()) + b.initial_scale.nbytes + b.propagation_scale.nbytes


@dataclass
class Table:
    """What a worker needs to generate X^0[j] = diag(deg^beta) R[rows of block j] itself: R's nonzeros of
    those rows as sparse lists (None without the native module) and deg^beta of the block's rows."""
    row0: int
    rows: int
    initial_scale: np.ndarray
    table: Optional[Tuple[np.ndarray, np.ndarray]]


@sizeof.register(Table)
def _sizeof_table(t: Table) -> int:
    return t.initial_scale.nbytes + (sum(a.nbytes for a in t.table) if t.table is not None else 0)


@dataclass(frozen=True)
class _Ctx:
    """Per-run constants every task needs (small; pickled into each task)."""
    dim: int
    spec: Tuple[int, int, Any, int]  # (seed, threshold, value, dim)
    normalize: bool
    propagate_normalized: bool
    feature_spec: Optional[Tuple[int, int, Any, int]] = None
    feature_dim: int = 0
    self_influence: float = 0.0


def _split_columns(name: str, csr: _g.Csr, row0: int, offs: np.ndarray) -> Dict[int, _g.Csr]:
    """A[i, j] for every node block j that holds an edge of this row block (stored order kept within each
    row); raises when a row's edges are not ordered by column block (no chain over increasing j could then
    add them in stored order)."""
    nnz = int(csr.indptr[-1])
    if nnz == 0:
        return {}
    indices = csr.indices[:nnz]
    bid = np.searchsorted(offs, indices, side="right") - 1
    row_of = np.repeat(np.arange(csr.rows, dtype=np.int64), np.diff(csr.indptr))
    if nnz > 1:
        bad = (bid[1:] < bid[:-1]) & (row_of[1:] == row_of[:-1])
        if bad.any():
            e = int(np.argmax(bad)) + 1
            raise ValueError(
                f"{name}: row {row0 + int(row_of[e])} stores column {int(indices[e])} (node block {int(bid[e])}) after "
                f"column {int(indices[e - 1])} (node block {int(bid[e - 1])}); fastemb.dask.fastrp adds each row's "
                "edges column block by column block, so a row's stored edges must be ordered by column block to give "
                "one machine's bits: sort each row's indices (scipy: .sort_indices()) or pass an edge list")
    # a stable counting sort by block (NumPy's stable sort of 8/16-bit integers is a radix sort)
    small = np.uint8 if len(offs) <= 256 else (np.uint16 if len(offs) <= 65536 else np.int64)
    order = np.argsort(bid.astype(small), kind="stable")
    counts = np.bincount(bid, minlength=len(offs) - 1)
    out: Dict[int, _g.Csr] = {}
    start = 0
    for j in np.flatnonzero(counts):
        j = int(j)
        sel = order[start:start + counts[j]]
        start += counts[j]
        cols = int(offs[j + 1] - offs[j])
        local = indices[sel].astype(np.int64) - int(offs[j])
        idx = np.ascontiguousarray(local.astype(np.int32 if cols <= np.iinfo(np.int32).max else np.int64))
        per_row = np.bincount(row_of[sel], minlength=csr.rows)
        data = np.ascontiguousarray(csr.data[:nnz][sel]) if csr.data is not None else None
        row_ids = np.flatnonzero(per_row)
        if 2 * len(row_ids) < csr.rows:  # few rows: store those rows only (an indptr over them and their ids)
            indptr = np.zeros(len(row_ids) + 1, np.int64)
            np.cumsum(per_row[row_ids], out=indptr[1:])
            out[j] = _g.Csr(indptr, idx, data, len(row_ids), cols, row_ids=row_ids.astype(np.int64))
        else:
            indptr = np.zeros(csr.rows + 1, np.int64)
            np.cumsum(per_row, out=indptr[1:])
            out[j] = _g.Csr(indptr, idx, data, csr.rows, cols)
    return out


def _finish_block(name: str, index: int, csr: _g.Csr, row0: int, offs: np.ndarray, args: _g.FastRPArgs) -> RowBlock:
    init, prop = _g.fastrp_row_scales(args, csr)
    pieces = _split_columns(name, csr, row0, offs)
    return RowBlock(index, row0, csr.rows, pieces, init, prop, int(csr.indptr[-1]))


def _block_from_matrix(name: str, index: int, block: Any, row0: int, rows: int, n: int, offs: np.ndarray,
                       args: _g.FastRPArgs) -> RowBlock:
    """A scipy.sparse row block [rows, n] (any format; CSR used as stored) -> RowBlock, with
    fastemb.fastrp's checks of a scipy adjacency."""
    if not _g._is_scipy_sparse(block):
        raise TypeError(f"{name} must be a scipy.sparse matrix (a row block of the adjacency), got "
                        f"{type(block).__name__}")
    if tuple(int(v) for v in block.shape) != (rows, n):
        raise ValueError(f"{name} has shape {tuple(block.shape)}, expected ({rows}, {n}) (rows {row0}..{row0 + rows} "
                         f"of the [{n}, {n}] adjacency)")
    if block.dtype.kind not in "fiub":
        raise TypeError(f"{name}: the adjacency must be real, got dtype {block.dtype}")
    csr = block if block.format == "csr" else block.tocsr()
    out = _g._csr_arrays(name, csr.indptr, csr.indices, csr.data, rows, n)
    if block.format == "coo":  # as fastemb.fastrp: scipy sums a COO matrix's duplicates; keep the counts
        counts = np.bincount(np.asarray(block.row, dtype=np.int64), minlength=rows).astype(np.int64)
        if not np.array_equal(counts, np.diff(out.indptr)):
            out.counts = counts
    return _finish_block(name, index, out, row0, offs, args)


def _block_from_csr_arrays(index: int, indptr: np.ndarray, indices: np.ndarray, data: Optional[np.ndarray],
                           counts: Optional[np.ndarray], row0: int, rows: int, n: int, offs: np.ndarray,
                           args: _g.FastRPArgs) -> RowBlock:
    """Rows of a graph already parsed by fastemb.graph.as_graph (values checked there)."""
    csr = _g.Csr(indptr, indices, data, rows, n, counts)
    return _finish_block(f"graph (rows {row0}..{row0 + rows})", index, csr, row0, offs, args)


def _matrix_edges(name: str, block: Any, row0: int, rows: int, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scipy row block as (src, dst, weights) in its COO order (what fastemb.fastrp symmetrizes)."""
    if not _g._is_scipy_sparse(block):
        raise TypeError(f"{name} must be a scipy.sparse matrix, got {type(block).__name__}")
    if tuple(int(v) for v in block.shape) != (rows, n):
        raise ValueError(f"{name} has shape {tuple(block.shape)}, expected ({rows}, {n})")
    if block.dtype.kind not in "fiub":
        raise TypeError(f"{name}: the adjacency must be real, got dtype {block.dtype}")
    coo = block.tocoo()
    w = _g._check_edge_weights(coo.data, coo.data.shape[0])
    return np.asarray(coo.row, np.int64) + row0, np.asarray(coo.col, np.int64), w


def _edge_partition(name: str, part: Any, columns: Optional[Tuple[Any, ...]]) -> Tuple[np.ndarray, np.ndarray,
                                                                                     Optional[np.ndarray]]:
    """(src, dst, weights or None) of one partition: a pandas DataFrame (``columns`` names them) or a tuple of
    arrays."""
    if columns is not None:
        items = [np.asarray(part[c].to_numpy()) if c is not None else None for c in columns]
    else:
        items = list(part)
    src = _g._int_array(f"{name} src", items[0])
    dst = _g._int_array(f"{name} dst", items[1])
    if src.shape != dst.shape:
        raise ValueError(f"{name}: src and dst must have the same length, got {src.shape[0]} and {dst.shape[0]}")
    w = items[2] if len(items) > 2 else None
    if w is not None:
        w = _g._check_edge_weights(w, src.shape[0])
    return src, dst, w


def _split_edges(name: str, part: Any, columns: Optional[Tuple[Any, ...]], n: int, offs: np.ndarray,
                 symmetrize: bool, row0: int = 0, rows: int = -1):
    """One partition's edges by node block of their source: a list over blocks of (src, dst, w) for the edges
    as given and, with symmetrize, for the reversed edges. ``part`` is a partition of an edge list, or
    (for a symmetrized row block) a scipy row block [rows, n] starting at ``row0``."""
    if columns == ("matrix",):
        src, dst, w = _matrix_edges(name, part, row0, rows, n)
    else:
        src, dst, w = _edge_partition(name, part, columns)
    _g.check_edge_indices(name, src, dst, n)
    src = src.astype(np.int64, copy=False)
    dst = dst.astype(np.int64, copy=False)
    nb = len(offs) - 1

    small = np.uint8 if len(offs) <= 256 else (np.uint16 if len(offs) <= 65536 else np.int64)

    def by_block(s: np.ndarray, t: np.ndarray):
        bid = np.searchsorted(offs, s, side="right") - 1
        order = np.argsort(bid.astype(small), kind="stable")
        counts = np.bincount(bid, minlength=nb)
        out, start = [], 0
        for j in range(nb):
            sel = order[start:start + counts[j]]
            start += counts[j]
            out.append((s[sel], t[sel], w[sel] if w is not None else None))
        return out

    forward = by_block(src, dst)
    backward = by_block(dst, src) if symmetrize else None
    return [(forward[j], backward[j] if backward is not None else None) for j in range(nb)]


def _block_from_edges(index: int, row0: int, rows: int, n: int, offs: np.ndarray, args: _g.FastRPArgs,
                      symmetrize: bool, *pieces) -> RowBlock:
    """Row block ``index`` from its edges, given per input partition in partition order: the edges as given
    from every partition, then (symmetrize) the reversed ones, i.e. the order of fastemb.fastrp's
    concatenation restricted to these rows, so its stable sort and duplicate sums give the same bits."""
    fw = [p[0] for p in pieces]
    bw = [p[1] for p in pieces] if symmetrize else []
    parts = fw + bw
    src = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    dst = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    ws = [p[2] for p in parts]
    if any(w is not None for w in ws):
        if any(w is None for w in ws):  # pragma: no cover - the weights column is all or nothing
            raise ValueError("graph: some partitions have edge weights and some do not")
        w = np.concatenate(ws) if len(ws) > 1 else ws[0]
    else:
        w = None
    csr = _g._edges_to_csr(src - row0, dst, w, n, False, rows=rows)
    return _finish_block(f"graph (rows {row0}..{row0 + rows})", index, csr, row0, offs, args)


def _block_meta(b: RowBlock) -> Tuple[int, int, List[int], int]:
    return b.index, b.rows, b.column_blocks(), b.nnz


# ---- the step tasks ---------------------------------------------------------------------------------

def _writable(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """``a`` itself when this task may write into it; a copy when it arrived read-only or at an address the
    kernels may not use (deserialized: frames can start at any byte)."""
    if a is None or a.flags.writeable and a.flags.c_contiguous and a.flags.aligned:
        return a
    out = _backend.aligned_empty(a.shape)
    out[...] = a
    return out


def _no_edges(rows: int) -> _g.Csr:
    return _g.Csr(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), None, rows, 0)


def _make_table(b: RowBlock, c: _Ctx) -> Table:
    """Node block j's part of the first step's input (when no X^0 is shipped): R's nonzeros of its rows."""
    return Table(b.row0, b.rows, b.initial_scale, _g.NumpyOps().random_table(c.spec, b.row0, b.rows))


def _initial(b: RowBlock, features: Any, c: _Ctx) -> np.ndarray:
    """X^0 of node block j: diag(deg^beta) R[rows] with the feature projection in its last columns."""
    ops = _g.NumpyOps()
    x0 = _backend.aligned_empty((b.rows, c.dim))
    if b.rows:
        ops.random_rows(c.spec, b.initial_scale, x0, b.row0)
    if c.feature_dim:
        f, _ = _features_block(features, b)
        block = np.empty((b.rows, c.feature_dim), np.float32)
        if b.rows:
            if isinstance(f, _g.Csr):
                ops.project_csr(c.feature_spec, f, block)
            else:
                ops.project_dense(c.feature_spec, f, block)
        x0[:, c.dim - c.feature_dim:] = block
    return x0


def _features_block(features: Any, b: RowBlock) -> Tuple[Union[np.ndarray, _g.Csr], int]:
    name = f"features (rows {b.row0}..{b.row0 + b.rows})"
    if _g._is_scipy_sparse(features):
        f = _g._as_sparse_csr(name, features)
        rows, cols = f.rows, f.cols
    else:
        f = _g._as_dense_float32(name, np.asarray(features))
        rows, cols = f.shape
    if rows != b.rows:
        raise ValueError(f"{name}: expected {b.rows} rows, got {rows}")
    return f, cols


def _self_accum(x0: np.ndarray, c: _Ctx) -> np.ndarray:
    accum = _backend.aligned_empty(x0.shape)
    accum.fill(0)
    if x0.shape[0]:
        _g.NumpyOps().accumulate(x0, True, c.self_influence, accum)
    return accum


def _step(b: RowBlock, j: Optional[int], src: Any, acc: Optional[np.ndarray], accum: Optional[np.ndarray],
          c: _Ctx, finish: bool, alpha: float):
    """One link of row block i's chain: acc (+)= A[i, j] @ X[j]; on the last link (finish) the row scale and the
    epilogue, returning (cur, accum). ``src``: X[j] [n_j, d], or a :class:`Table` (the first step)."""
    ops = _g.NumpyOps()
    a = b.pieces[j] if j is not None else _no_edges(b.rows)
    acc = _writable(acc)  # this task is acc's only consumer: continued in place
    if acc is None:
        acc = out = _backend.aligned_empty((b.rows, c.dim))
        if a.row_ids is None:
            acc = None  # the kernel starts every row from 0 (and writes every row)
        else:
            out.fill(0)  # a piece listing its rows leaves the others: they start at 0
    else:
        out = acc
    if finish and a.row_ids is not None:
        # the piece's rows first; then the epilogue over every row of the block (an empty [rows, 0] piece)
        _step_links(ops, a, src, b, out, c)
        a, src = _no_edges(b.rows), None
    step_accum, init = None, False
    if finish and alpha != 0:
        accum = _writable(accum)  # the previous step's accum: its only consumer is this task
        init = accum is None  # the first step that accumulates writes 0 + alpha * v (one machine's accum_init)
        step_accum = accum if accum is not None else _backend.aligned_empty((b.rows, c.dim))
    flags = (finish, c.normalize, c.propagate_normalized, float(alpha), step_accum)
    if isinstance(src, Table):
        ops.propagate_random_block(c.spec, src.row0, src.initial_scale, src.table, a, b.propagation_scale, acc, out,
                                   *flags, accum_init=init)
    else:
        ops.propagate_block(a, b.propagation_scale, src, acc, out, *flags, accum_init=init)
    if not finish:
        return out
    return out, (step_accum if step_accum is not None else accum)


def _step_links(ops: _g.NumpyOps, a: _g.Csr, src: Any, b: RowBlock, out: np.ndarray, c: _Ctx) -> None:
    """out (+)= a @ src in place, no epilogue."""
    if isinstance(src, Table):
        ops.propagate_random_block(c.spec, src.row0, src.initial_scale, src.table, a, b.propagation_scale, out, out,
                                   False, c.normalize, c.propagate_normalized, 0.0, None)
    else:
        ops.propagate_block(a, b.propagation_scale, src, out, out, False, c.normalize, c.propagate_normalized, 0.0,
                            None)


def _zeros_if_none(accum: Optional[np.ndarray], rows: int, d: int) -> np.ndarray:
    if accum is not None:
        return accum
    out = _backend.aligned_empty((rows, d))
    out.fill(0)
    return out


def _iteration(cur: np.ndarray, normalize: bool) -> np.ndarray:
    """V_t of these rows for return_iterations (as fastemb.fastrp: 0 + rowL2(cur) when cur is unnormalized)."""
    v = np.zeros(cur.shape, np.float32)
    if cur.shape[0]:
        _g.NumpyOps().accumulate(cur, normalize, 1.0, v)
    return v


# ---- column standardization with one machine's statistics ----------------------------------------------

def _std_pieces(x: np.ndarray, row0: int, n: int, mean: Optional[np.ndarray]):
    """This row block's share of the column statistics, one entry per 4096-row block b it touches, in b order:
    ``(b, sum)`` (float64 [d]: the rows of b in order, from 0; with ``mean`` the squared deviations) when it holds
    b whole, else ``(b, rows)`` (its float32 rows of b, summed by the combining task; only in the pass without
    mean: the pass with mean reuses them)."""
    rows = x.shape[0]
    if rows == 0:
        return []
    B = STANDARDIZE_BLOCK
    blocks = range(row0 // B, (row0 + rows - 1) // B + 1)
    whole = [b for b in blocks if b * B >= row0 and min((b + 1) * B, n) <= row0 + rows]
    sums = {}
    if whole:  # contiguous; one native call sums them all (in parallel), aligned with the global blocks
        lo, hi = whole[0] * B, min((whole[-1] + 1) * B, n)
        part = _g.NumpyOps().column_block_sums(np.ascontiguousarray(x[lo - row0:hi - row0]), mean)
        sums = {b: part[k] for k, b in enumerate(whole)}
    out = []
    for b in blocks:
        if b in sums:
            out.append((b, sums[b]))
        elif mean is None:
            a, e = max(b * B, row0), min((b + 1) * B, row0 + rows)
            out.append((b, np.array(x[a - row0:e - row0], dtype=np.float32, copy=True)))
    return out


def _seq_sum(seg: np.ndarray, mean: Optional[np.ndarray]) -> np.ndarray:
    """Column sums of seg's rows (< 4096) one after another from 0 in float64, of the values or, with mean, of
    their squared deviations: one machine's per-block sums."""
    return _g.NumpyOps().column_block_sums(np.ascontiguousarray(seg, dtype=np.float32), mean)[0]


def _std_total(d: int, pieces_per_block: Sequence[list], mean: Optional[np.ndarray],
               raw_per_block: Optional[Sequence[list]] = None) -> np.ndarray:
    """sum over the 4096-row blocks in block order (from 0), each block's sum from the row block holding it
    whole or from its rows gathered in row order."""
    total = np.zeros(d, np.float64)
    sums: Dict[int, np.ndarray] = {}
    split: Dict[int, List[np.ndarray]] = {}
    for part in pieces_per_block:
        for blk, v in part:
            if v.dtype == np.float64:
                sums[blk] = v
    for part in (raw_per_block if raw_per_block is not None else pieces_per_block):
        for blk, v in part:
            if v.dtype == np.float32:
                split.setdefault(blk, []).append(v)
    for blk in sorted(set(sums) | set(split)):
        if blk in sums:
            s = sums[blk]
        else:
            s = _seq_sum(np.concatenate(split[blk]) if len(split[blk]) > 1 else split[blk][0], mean)
        total = total + s
    return total


def _std_mean(n: int, d: int, *parts) -> np.ndarray:
    return _std_total(d, parts, None) / n


def _std_std(n: int, d: int, mean: np.ndarray, nparts: int, *parts) -> np.ndarray:
    first, second = parts[:nparts], parts[nparts:]
    return np.sqrt(_std_total(d, second, mean, raw_per_block=first) / n)


def _std_apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = _backend.aligned_empty(x.shape)
    _g.NumpyOps().standardize_apply(np.ascontiguousarray(x), np.ascontiguousarray(mean, np.float64),
                                   np.ascontiguousarray(std, np.float64), out)
    return out


# ---- input parsing (client side: metadata only, plus the small lists of row offsets) -------------------

def _is_dask_df(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith("dask") and hasattr(obj, "columns") and hasattr(obj, "to_delayed") \
        and hasattr(obj, "npartitions")


def _block_sizes(blocks: Any, n: int, default: int) -> List[int]:
    if blocks is None:
        blocks = default
    if isinstance(blocks, (numbers.Integral, np.integer)) and not isinstance(blocks, bool):
        k = ck.check_int("blocks", blocks, 1)
        base, extra = divmod(n, k)
        return [base + (1 if i < extra else 0) for i in range(k)]
    if isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__len__"):
        raise TypeError(f"blocks must be an int (the number of row blocks) or a sequence of row counts, got "
                        f"{type(blocks).__name__}")
    sizes = [ck.check_int(f"blocks[{i}]", v, 0) for i, v in enumerate(blocks)]
    if not sizes:
        raise ValueError("blocks must not be empty")
    if sum(sizes) != n:
        raise ValueError(f"blocks: the row counts add up to {sum(sizes)}, but the graph has {n} nodes")
    return sizes


def _list_blocks(graph: Sequence[Any], num_nodes: Optional[int]) -> Tuple[List[Any], List[int], List[int], int]:
    """A list of row blocks (scipy.sparse matrices or (row0, matrix) pairs) -> (matrices, row0s, sizes, N)."""
    if len(graph) == 0:
        raise ValueError("graph: the list of row blocks is empty")
    mats, row0s, sizes = [], [], []
    n = num_nodes
    end = 0
    for k, item in enumerate(graph):
        name = f"graph[{k}]"
        if isinstance(item, tuple) and len(item) == 2 and not _g._is_scipy_sparse(item[0]):
            r0 = ck.check_int(f"{name} row0", item[0], 0)
            mat = item[1]
        else:
            r0, mat = end, item
        if not _g._is_scipy_sparse(mat):
            raise TypeError(f"{name} must be a scipy.sparse matrix (a row block of the adjacency) or a "
                            f"(row0, matrix) pair, got {type(mat).__name__}")
        shape = mat.shape
        if len(shape) != 2:
            raise ValueError(f"{name}: a row block must be 2-D, got shape {shape}")
        rows, cols = int(shape[0]), int(shape[1])
        if n is None:
            n = cols
        if cols != n:
            first = "num_nodes" if num_nodes is not None else "graph[0]"
            raise ValueError(f"{name} has {cols} columns but {first} gives N = {n}: every row block of the [N, N] "
                             "adjacency has N columns")
        mats.append(mat)
        row0s.append(r0)
        sizes.append(rows)
        end = r0 + rows
    for k in range(1, len(row0s)):
        if row0s[k] < row0s[k - 1]:
            raise ValueError(f"graph[{k}] starts at row {row0s[k]}, before graph[{k - 1}] (row {row0s[k - 1]}): row "
                             "blocks must be given in increasing row order")
    end = 0
    for k in range(len(row0s)):
        if row0s[k] < end:
            raise ValueError(f"graph[{k}] starts at row {row0s[k]}, inside graph[{k - 1}] (rows {row0s[k - 1]}..{end}): "
                             "row blocks must not overlap")
        if row0s[k] > end:
            raise ValueError(f"graph[{k}] starts at row {row0s[k]} but the blocks before it end at row {end}: rows "
                             f"{end}..{row0s[k]} are in no block (the row blocks must cover 0..N in order)")
        end = row0s[k] + sizes[k]
    if end != n:
        raise ValueError(f"graph: the row blocks cover rows 0..{end} but the adjacency has N = {n} columns (it must "
                         "be square: the blocks must cover every node's row)")
    return mats, row0s, sizes, n


def _is_block_list(graph: Any) -> bool:
    """A list (or tuple) of row blocks: some item is a scipy.sparse matrix or a (row0, matrix) pair."""
    if not isinstance(graph, (list, tuple)) or not graph:
        return False
    return any(_g._is_scipy_sparse(x) or (isinstance(x, tuple) and len(x) == 2 and _g._is_scipy_sparse(x[1]))
               for x in graph)


# ---- the public function ----------------------------------------------------------------------------

@dataclass
class _Placed:
    blocks: List[Any]                 # persisted RowBlock per row block (Futures or Delayed)
    sizes: List[int]
    cols: List[List[int]]             # column blocks with edges, per row block
    owners: List[Optional[str]]       # worker address holding each row block (None: local scheduler)
    client: Any = None
    token: str = ""
    nnz: int = 0


def fastrp(
    graph: Any,
    dim: int = 128,
    *,
    weights: Optional[Sequence[float]] = None,
    beta: Optional[float] = None,
    s: Union[str, float, None] = None,
    normalize: Optional[bool] = None,
    propagate_normalized: Optional[bool] = None,
    self_influence: Optional[float] = None,
    features: Any = None,
    feature_ratio: float = 0.0,
    standardize: Optional[bool] = None,
    min_degree: Optional[float] = None,
    degree: Optional[str] = None,
    feature_scaling: Optional[str] = None,
    seed: int = 0,
    dtype: Any = "float32",
    return_iterations: bool = False,
    preset: Optional[str] = None,
    progress: bool = False,
    num_nodes: Optional[int] = None,
    symmetrize: bool = False,
    blocks: Any = None,
    client: Any = None,
) -> Union[da.Array, Tuple[da.Array, da.Array]]:
    """:func:`fastemb.fastrp` on a graph in row blocks over Dask: the same arguments, presets and bits.

    Args:
        graph: the adjacency A [N, N] (row i: node i's out-edges), as
            * a list of row blocks, in row order: scipy.sparse matrices [n_i, N] (any format; CSR used as stored),
              or ``(row0, matrix)`` pairs naming each block's first row (blocks must tile 0..N in order:
              overlapping, misordered or missing rows raise ValueError naming the block);
            * a dask array [N, N] whose chunks are scipy.sparse matrices, chunked by rows (e.g.
              ``da.from_array(csr, chunks=(rows, N), asarray=False)``; column chunks are joined);
            * an edge list: a dask DataFrame with columns ``src``, ``dst`` and optionally ``weight`` (else its
              first two / three columns, in order), or a tuple ``(src, dst[, weights])`` of 1-D dask arrays with
              the same chunks. Its rows are sorted, duplicates summed and (``symmetrize``) reversed edges added
              exactly as fastemb.fastrp does, per node block: the edges are split by source block (one pass per
              partition) and each block built where it will stay. ``num_nodes`` gives N (default: the largest
              index + 1, computed with one pass over the edges);
            * anything :func:`fastemb.fastrp` takes (a scipy.sparse matrix, a CSR tuple, a NumPy edge list):
              parsed here, then split into ``blocks`` row blocks.
            Each row's stored edges must be ordered by column block (sorted indices are; edge lists always are):
            the sums then run in one machine's order. Other rows raise ValueError.
        blocks: the node blocks (= row blocks = the column blocks of A) for an edge list or a one-machine graph:
            an int (that many blocks of equal size, +-1) or a sequence of row counts. Default: an edge list's
            partition count; one block per worker of the client for a one-machine graph. Not with a list of row
            blocks or a dask array (their blocks are used).
        client: the ``distributed.Client`` to run on (default: the current one; with none, dask's local
            scheduler and a lazy result). The row blocks are built and persisted on its workers when this function
            is called (their column-block pattern shapes the task graph), so input errors raise here; then the
            steps are started (persisted), and the result's chunks fill in the workers' memory as they finish.
            In-memory inputs (scipy blocks, NumPy arrays) are scattered to the workers: like any scattered data,
            a worker lost before the row blocks are built loses them; dask collections (a dask array of sparse
            chunks, an edge-list DataFrame, chunks loaded by tasks) are recomputed instead.
        progress: not supported here (a lazy result): use ``distributed.progress(result.persist())``.
        The other arguments: as :func:`fastemb.fastrp` (``features``: a NumPy array or scipy.sparse matrix
        [N, f], or a dask array chunked by rows; it is split or rechunked to the row blocks).

    Returns:
        A float32 dask array [N, dim] chunked by the (non-empty) row blocks (persisted with a client, lazy
        without), bit-identical to ``fastemb.fastrp`` on the whole graph (``(embedding, iterations)`` with
        return_iterations, iterations [q, N, dim] chunked ``(1, row blocks, dim)``).

    Memory per worker: its row blocks (the CSR pieces and two [n_i] scales), and per row block being propagated
    the previous and the current [n_i, d] rows, the accumulator [n_i, d] (the embedding sum), the chain's
    partial sum [n_i, d] and the X[j] [n_j, d] it is adding. Shipped per step: each X[j] once to every other
    worker whose row blocks have edges into block j; the partial sums and accumulators stay in place.
    """
    return_iterations = _g._check_bool("return_iterations", return_iterations)
    progress = _g._check_bool("progress", progress)
    if progress:
        warnings.warn("fastemb.dask.fastrp(progress=True): the result is lazy; use distributed.progress on the "
                      "persisted result instead", stacklevel=2)
    symmetrize = _g._check_bool("symmetrize", symmetrize)
    if num_nodes is not None:
        num_nodes = ck.check_int("num_nodes", num_nodes, 0)
    args = _g.check_fastrp_args(dim, weights=weights, beta=beta, s=s, normalize=normalize,
                                propagate_normalized=propagate_normalized, self_influence=self_influence,
                                feature_ratio=feature_ratio, standardize=standardize, min_degree=min_degree,
                                degree=degree, feature_scaling=feature_scaling, seed=seed, dtype=dtype, preset=preset)
    num_features = _g.feature_columns(features)
    if num_features is not None and num_features < 1:
        raise ValueError(f"features must have at least one column, got shape {tuple(features.shape)}")
    if client is None:
        client = ck.current_client()
    placed = _place_graph(graph, args, num_nodes, symmetrize, blocks, client)
    n = sum(placed.sizes)
    spec = _g.fastrp_spec(args, n, num_features)
    if features is not None and int(features.shape[0]) != n:
        raise ValueError(f"features must have one row per node ({n}), got shape {tuple(features.shape)}")
    result = _build(placed, args, spec, features, return_iterations)
    arrays = list(result) if isinstance(result, tuple) else [result]
    if placed.client is not None:
        # Started now, on the workers, from the graph as built: a compute would first fuse the graph's linear
        # chains (dask.array's low-level optimization), dropping the worker annotations that keep each row
        # block's chain where its data is, and merging the chain links that hold one X block each.
        arrays = placed.client.persist(arrays, optimize_graph=False)
    for arr in arrays:
        _NAMES[arr.name] = placed.token
    while len(_NAMES) > 128:
        _NAMES.pop(next(iter(_NAMES)))
    return tuple(arrays) if return_iterations else arrays[0]


def _annotate(owner: Optional[str]):
    if owner is None:
        return dask.annotate()
    return dask.annotate(workers=[owner], allow_other_workers=True)


def _workers(client: Any) -> List[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else []


def _persist(client: Any, tasks: List[Any], owners: Optional[List[Optional[str]]] = None) -> List[Any]:
    """Runs ``tasks`` (Delayed) now and keeps their results where they are (Futures with a client)."""
    if client is None:
        return list(dask.persist(*tasks, scheduler="threads"))
    if owners is not None and any(o is not None for o in owners):
        futs = []
        for t, o in zip(tasks, owners):
            kw = {"workers": [o], "allow_other_workers": True} if o is not None else {}
            futs.append(client.compute(t, **kw))
        return futs
    return client.compute(tasks)


def _gather(client: Any, values: List[Any]) -> List[Any]:
    metas = [dask.delayed(_block_meta, pure=True)(b) for b in values]
    if client is None:
        return list(dask.compute(*metas, scheduler="threads"))
    return client.gather(client.compute(metas))


def _round_robin(client: Any, k: int) -> List[Optional[str]]:
    ws = _workers(client)
    return [ws[i * len(ws) // k] if ws else None for i in range(k)] if ws else [None] * k


def _place_graph(graph: Any, args: _g.FastRPArgs, num_nodes: Optional[int], symmetrize: bool, blocks: Any,
                 client: Any) -> _Placed:
    """Builds every row block on a worker (persisted) and returns where they are and their column blocks."""
    token = uuid.uuid4().hex[:12]  # a fresh name per call: its persisted blocks are its own
    if _is_block_list(graph):
        if blocks is not None:
            raise ValueError("blocks: the row blocks are given by graph (a list of row blocks); leave blocks=None")
        mats, row0s, sizes, n = _list_blocks(list(graph), num_nodes)
        offs = ck.row_offsets(sizes)
        if symmetrize:
            parts = [(f"graph[{k}]", m, ("matrix",), row0s[k], sizes[k]) for k, m in enumerate(mats)]
            return _place_edges(parts, n, offs, sizes, args, True, client, token)
        owners = _round_robin(client, len(mats))
        if client is not None:
            sources = [client.scatter(m, workers=[o], hash=False) if o is not None else m
                       for m, o in zip(mats, owners)]
        else:
            sources = mats
        tasks = [dask.delayed(_block_from_matrix, pure=False)(f"graph[{k}]", k, src, row0s[k], sizes[k], n, offs, args,
                                                             dask_key_name=f"fastrp-block-{token}-{k}")
                 for k, src in enumerate(sources)]
        return _finish_place(client, tasks, sizes, owners, token)
    if isinstance(graph, da.Array):
        if blocks is not None:
            raise ValueError("blocks: the row blocks are the dask array's row chunks; leave blocks=None (or rechunk)")
        ck.check_ndim("graph", graph, (2,), "2-D [N, N]")
        ck.check_known_chunks("graph", graph)
        n = int(graph.shape[1])
        if int(graph.shape[0]) != n:
            raise ValueError(f"graph: the adjacency must be square, got shape {graph.shape}")
        if num_nodes is not None and num_nodes != n:
            raise ValueError(f"num_nodes={num_nodes} disagrees with the adjacency's {n} rows")
        g = ck.whole_rows(graph)
        sizes = [int(c) for c in g.chunks[0]]
        offs = ck.row_offsets(sizes)
        chunks = [row[0] for row in g.to_delayed()] if g.ndim == 2 else []
        if symmetrize:
            parts = [(f"graph (rows {offs[k]}..{offs[k + 1]})", c, ("matrix",), int(offs[k]), sizes[k])
                     for k, c in enumerate(chunks)]
            return _place_edges(parts, n, offs, sizes, args, True, client, token)
        tasks = [dask.delayed(_block_from_matrix, pure=False)(f"graph (rows {offs[k]}..{offs[k + 1]})", k, c,
                                                             int(offs[k]), sizes[k], n, offs, args,
                                                             dask_key_name=f"fastrp-block-{token}-{k}")
                 for k, c in enumerate(chunks)]
        return _finish_place(client, tasks, sizes, _round_robin(client, len(tasks)), token)
    edge_parts = _dask_edge_parts(graph)
    if edge_parts is not None:
        parts, columns, npart, n_from_data = edge_parts
        n = num_nodes
        if n is None:
            n = int(dask.compute(n_from_data)[0]) if client is None else int(client.compute(n_from_data).result())
        sizes = _block_sizes(blocks, n, max(1, npart))
        offs = ck.row_offsets(sizes)
        items = [(f"graph (partition {p})", part, columns, 0, -1) for p, part in enumerate(parts)]
        return _place_edges(items, n, offs, sizes, args, symmetrize, client, token)
    # a one-machine graph: parsed here, split into row blocks
    csr = _g.as_graph(graph, num_nodes, symmetrize)
    n = csr.rows
    workers = _workers(client)
    sizes = _block_sizes(blocks, n, max(1, len(workers)))
    offs = ck.row_offsets(sizes)
    owners = _round_robin(client, len(sizes))
    tasks = []
    for k in range(len(sizes)):
        r0, r1 = int(offs[k]), int(offs[k + 1])
        e0, e1 = int(csr.indptr[r0]), int(csr.indptr[r1])
        payload = (csr.indptr[r0:r1 + 1] - e0, csr.indices[e0:e1],
                   csr.data[e0:e1] if csr.data is not None else None,
                   csr.counts[r0:r1] if csr.counts is not None else None)
        if client is not None:
            payload = client.scatter([payload], workers=[owners[k]], hash=False)[0]
        tasks.append(dask.delayed(_block_from_payload, pure=False)(k, payload, r0, r1 - r0, n, offs, args,
                                                                  dask_key_name=f"fastrp-block-{token}-{k}"))
    return _finish_place(client, tasks, sizes, owners, token)


def _block_from_payload(index, payload, row0, rows, n, offs, args):
    indptr, indices, data, counts = payload
    return _block_from_csr_arrays(index, np.ascontiguousarray(indptr), np.ascontiguousarray(indices),
                                  None if data is None else np.ascontiguousarray(data), counts, row0, rows, n, offs,
                                  args)


def _dask_edge_parts(graph: Any):
    """(partitions as Delayed, column names or None, partition count, Delayed max index + 1) of an edge list
    given as a dask DataFrame or a tuple of dask arrays; None for other inputs."""
    if _is_dask_df(graph):
        cols = list(graph.columns)
        if "src" in cols and "dst" in cols:
            columns = ("src", "dst", "weight" if "weight" in cols else None)
        elif len(cols) in (2, 3):
            columns = tuple(cols) + ((None,) if len(cols) == 2 else ())
        else:
            raise ValueError(f"graph: an edge list DataFrame needs columns 'src', 'dst' (and optionally 'weight'), or "
                             f"exactly 2 or 3 columns; got {cols}")
        if columns[2] is None:
            columns = columns[:2]
        parts = graph.to_delayed()
        hi = dask.delayed(_max_plus_one)(graph[columns[0]].max(), graph[columns[1]].max(), graph.npartitions)
        return parts, columns, graph.npartitions, hi
    if isinstance(graph, tuple) and len(graph) in (2, 3) and any(isinstance(a, da.Array) for a in graph):
        names = ["src", "dst", "weights"]
        arrs = []
        for k, a in enumerate(graph):
            if a is None and k == 2:
                continue
            a = ck.as_dask(f"graph {names[k]}", a)
            ck.check_known_chunks(f"graph {names[k]}", a)
            ck.check_ndim(f"graph {names[k]}", a, (1,), "1-D")
            arrs.append(a)
        for k in range(1, len(arrs)):
            ck.check_aligned(f"graph {names[k]}", arrs[k], "graph src", arrs[0])
        delayed_cols = [a.to_delayed().ravel().tolist() for a in arrs]
        parts = [dask.delayed(tuple)(list(p)) for p in zip(*delayed_cols)]
        hi = dask.delayed(_max_plus_one)(arrs[0].max() if arrs[0].size else -1,
                                         arrs[1].max() if arrs[1].size else -1, len(parts))
        return parts, None, len(parts), hi
    return None


def _max_plus_one(a: Any, b: Any, _npart: int) -> int:
    vals = [int(v) for v in (a, b) if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return max(vals) + 1 if vals else 0


def _place_edges(items, n: int, offs: np.ndarray, sizes: List[int], args: _g.FastRPArgs, symmetrize: bool,
                 client: Any, token: str) -> _Placed:
    """Row blocks from edge partitions: each partition split by source block where it is, each block built from
    its pieces (partition order, as given then reversed) on its worker."""
    nb = len(sizes)
    splits = [dask.delayed(_split_edges, pure=False)(name, part, columns, n, offs, symmetrize, r0, rows,
                                                                dask_key_name=f"fastrp-split-{token}-{p}")
              for p, (name, part, columns, r0, rows) in enumerate(items)]
    owners = _round_robin(client, nb)
    tasks = []
    for i in range(nb):
        pieces = [dask.delayed(operator.getitem, pure=True)(sp, i, dask_key_name=f"fastrp-piece-{token}-{p}-{i}")
                  for p, sp in enumerate(splits)]
        tasks.append(dask.delayed(_block_from_edges, pure=False)(i, int(offs[i]), sizes[i], n, offs, args, symmetrize,
                                                                *pieces, dask_key_name=f"fastrp-block-{token}-{i}"))
    return _finish_place(client, tasks, sizes, owners, token)


def _finish_place(client: Any, tasks: List[Any], sizes: List[int], owners: Optional[List[Optional[str]]],
                  token: str) -> _Placed:
    blocks = _persist(client, tasks, owners)
    metas = _gather(client, blocks)
    cols = [m[2] for m in metas]
    nnz = sum(m[3] for m in metas)
    if client is not None:
        who = client.who_has(blocks)
        where = [sorted(who.get(b.key, ()))[:1] for b in blocks]
        owners = [w[0] if w else None for w in where]
    else:
        owners = [None] * len(blocks)
    return _Placed(blocks, sizes, cols, owners, client, token, nnz)


def _features_parts(features: Any, sizes: List[int]) -> List[Any]:
    offs = ck.row_offsets(sizes)
    if isinstance(features, da.Array):
        ck.check_known_chunks("features", features)
        f = features.rechunk({0: tuple(sizes), 1: -1}) if tuple(features.chunks[0]) != tuple(sizes) \
            or len(features.chunks[1]) != 1 else features
        return [row[0] for row in f.to_delayed()]
    if _g._is_scipy_sparse(features):
        csr = features.tocsr()
        return [csr[int(offs[k]):int(offs[k + 1])] for k in range(len(sizes))]
    if isinstance(features, np.ndarray):
        return [features[int(offs[k]):int(offs[k + 1])] for k in range(len(sizes))]
    raise TypeError(f"features must be a numpy.ndarray, a scipy.sparse matrix or a dask array, got "
                    f"{type(features).__name__}")


def _build(p: _Placed, args: _g.FastRPArgs, spec: _g.FastRPSpec, features: Any, return_iterations: bool):
    """The lazy task graph of the q steps (and the standardization) over the persisted row blocks."""
    d = args.dim
    nb = len(p.sizes)
    n = sum(p.sizes)
    tok = p.token
    ctx = _Ctx(d, (args.seed, spec.threshold, spec.value, d), args.normalize, args.propagate_normalized,
               spec.feature_spec, spec.feature_dim, args.self_influence)
    delayed = dask.delayed
    q = len(args.weights)
    owners = p.owners
    fused_first = spec.feature_dim == 0 and args.self_influence == 0
    _RUNS[p.token] = dict(sizes=list(p.sizes), cols=[list(c) for c in p.cols], owners=list(p.owners), dim=d,
                          steps=len(args.weights), dense_x0=not fused_first)
    while len(_RUNS) > 64:
        _RUNS.pop(next(iter(_RUNS)))
    needed = sorted({j for cols in p.cols for j in cols})
    feats = _features_parts(features, p.sizes) if features is not None else None
    if features is not None and p.client is not None:
        feats = [p.client.scatter(f, workers=[owners[k]], hash=False)
                 if isinstance(f, np.ndarray) or _g._is_scipy_sparse(f) else f for k, f in enumerate(feats)]
    # X^0 (a table per needed block, or the dense initial rows) and the accumulators
    x: List[Any] = [None] * nb
    accum: List[Any] = [None] * nb
    for j in range(nb):
        with _annotate(owners[j]):
            if fused_first:
                if j in needed:
                    x[j] = delayed(_make_table, pure=True)(p.blocks[j], ctx, dask_key_name=f"fastrp-x-{tok}-0-{j}")
            else:
                x[j] = delayed(_initial, pure=True)(p.blocks[j], feats[j] if feats is not None else None, ctx,
                                                   dask_key_name=f"fastrp-x-{tok}-0-{j}")
                if args.self_influence != 0:
                    accum[j] = delayed(_self_accum, pure=True)(x[j], ctx, dask_key_name=f"fastrp-acc-{tok}-0-{j}")
    iterations: List[List[Any]] = []
    for t in range(1, q + 1):
        alpha = args.weights[t - 1]
        nxt: List[Any] = [None] * nb
        its: List[Any] = []
        for i in range(nb):
            cols = p.cols[i]
            with _annotate(owners[i]):
                acc = None
                chain = cols if cols else [None]
                for k, j in enumerate(chain):
                    last = k == len(chain) - 1
                    src = x[j] if j is not None else None
                    if not last:
                        acc = delayed(_step, pure=True)(p.blocks[i], j, src, acc, None, ctx, False, alpha,
                                                        dask_key_name=f"fastrp-part-{tok}-{t}-{i}-{k}")
                    else:
                        res = delayed(_step, pure=True)(p.blocks[i], j, src, acc, accum[i], ctx, True, alpha,
                                                                dask_key_name=f"fastrp-step-{tok}-{t}-{i}")
                nxt[i] = delayed(operator.getitem, pure=True)(res, 0, dask_key_name=f"fastrp-x-{tok}-{t}-{i}")
                accum[i] = delayed(operator.getitem, pure=True)(res, 1, dask_key_name=f"fastrp-acc-{tok}-{t}-{i}")
                if return_iterations:
                    its.append(delayed(_iteration, pure=True)(
                        nxt[i], args.normalize and not args.propagate_normalized,
                        dask_key_name=f"fastrp-iter-{tok}-{t}-{i}"))
        x = nxt
        if return_iterations:
            iterations.append(its)
    out = []
    for i in range(nb):
        with _annotate(owners[i]):
            out.append(delayed(_zeros_if_none, pure=True)(accum[i], p.sizes[i], d,
                                                          dask_key_name=f"fastrp-emb-{tok}-{i}"))
    if args.standardize and n > 0:
        offs = ck.row_offsets(p.sizes)
        first = []
        for i in range(nb):
            with _annotate(owners[i]):
                first.append(delayed(_std_pieces, pure=True)(out[i], int(offs[i]), n, None,
                                                             dask_key_name=f"fastrp-std1-{tok}-{i}"))
        mean = delayed(_std_mean, pure=True)(n, d, *first, dask_key_name=f"fastrp-mean-{tok}")
        second = []
        for i in range(nb):
            with _annotate(owners[i]):
                second.append(delayed(_std_pieces, pure=True)(out[i], int(offs[i]), n, mean,
                                                              dask_key_name=f"fastrp-std2-{tok}-{i}"))
        std = delayed(_std_std, pure=True)(n, d, mean, nb, *first, *second, dask_key_name=f"fastrp-std-{tok}")
        for i in range(nb):
            with _annotate(owners[i]):
                out[i] = delayed(_std_apply, pure=True)(out[i], mean, std, dask_key_name=f"fastrp-out-{tok}-{i}")
    meta = np.empty((0, 0), np.float32)
    emb = _concat([da.from_delayed(o, shape=(p.sizes[i], d), dtype=np.float32, meta=meta)
                   for i, o in enumerate(out)])
    if not return_iterations:
        return emb
    its_arr = da.stack([_concat([da.from_delayed(v, shape=(p.sizes[i], d), dtype=np.float32, meta=meta)
                                 for i, v in enumerate(step)]) for step in iterations]) if q else \
        da.zeros((0, n, d), np.float32)
    return emb, its_arr


def _concat(parts: List[da.Array]) -> da.Array:
    return da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


# ---- traffic accounting (benchmarks, tests) -----------------------------------------------------------

_RUNS: Dict[str, Dict[str, Any]] = {}  # token -> the placement of a recent call (for traffic())


_NAMES: Dict[str, str] = {}  # result array name -> token


def _token_of(result: Any) -> str:
    arr = result[0] if isinstance(result, tuple) else result
    if getattr(arr, "name", None) in _NAMES:
        return _NAMES[arr.name]
    for key in dict(arr.__dask_graph__()):
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(name, str) and name.startswith("fastrp-emb-"):
            return name.split("-")[2]
    raise ValueError("result: not a fastemb.dask.fastrp result")


def traffic(client: Any, result: Any) -> Dict[str, Any]:
    """Bytes moved between workers by the tasks of ``result`` (a :func:`fastrp` result, computed on ``client``),
    from the workers' incoming-transfer logs (sizes as Dask measures them: an array's nbytes).

    Returns a dict: ``steps`` {t: {"x": bytes of X blocks fetched for step t (t = 0: the first step's inputs,
    tables or X^0), "x_min": the minimum, each needed X block sent once to each other worker that holds a row
    block with edges into it (at the row blocks' home workers), "other": anything else of step t (partial sums,
    accumulators: 0 when every chain ran at home)}}, ``setup`` (building the row blocks), ``stats`` (the
    standardization), ``total``. Reads every transfer the workers have logged (Dask keeps the last 100k per
    worker); the keys of ``result`` are told apart by their names."""
    import re

    token = _token_of(result)
    run = _RUNS.get(token)
    logs = client.run(lambda dask_worker: list(dask_worker.transfer_incoming_log))
    steps: Dict[int, Dict[str, int]] = {}
    setup = stats = total = 0
    pat = re.compile(r"^fastrp-([a-z0-9]+)-" + token + r"(?:-(\d+))?")
    for entries in logs.values():
        for e in entries:
            for key, nbytes in e["keys"].items():
                name = key[0] if isinstance(key, tuple) else key
                m = pat.match(name) if isinstance(name, str) else None
                if m is None:
                    continue
                kind, first = m.group(1), m.group(2)
                nbytes = int(nbytes)
                total += nbytes
                if kind in ("x", "part", "acc", "step", "iter") and first is not None:
                    t = int(first)
                    st = steps.setdefault(t, {"x": 0, "x_min": 0, "other": 0})
                    st["x" if kind == "x" else "other"] += nbytes
                elif kind in ("std1", "std2", "mean", "std", "out"):
                    stats += nbytes
                else:
                    setup += nbytes
    if run is not None:
        owners, cols, sizes, d = run["owners"], run["cols"], run["sizes"], run["dim"]
        needed = {}
        for i, cs in enumerate(cols):
            for j in cs:
                if owners[i] != owners[j]:
                    needed.setdefault(owners[i], set()).add(j)
        x_min = sum(sizes[j] * d * 4 for js in needed.values() for j in js)
        for t in range(0 if run["dense_x0"] else 1, run["steps"]):
            steps.setdefault(t, {"x": 0, "x_min": 0, "other": 0})["x_min"] = x_min
    return {"steps": dict(sorted(steps.items())), "setup": setup, "stats": stats, "total": total}
