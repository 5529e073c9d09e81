"""Graph input: the validated CSR matrix the kernels read (:class:`Csr`) and the conversions to it from scipy
matrices, CSR tuples and edge lists.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import _backend
from ._checks import _check_bool, _check_int, _INT32_MAX


@dataclass
class Csr:
    """A validated CSR matrix for the kernels: indptr int64 [rows + 1], indices int32/int64 [nnz] in
    [0, cols), data float32 [nnz] or None (all ones), all C-contiguous. ``counts``: int64 [rows], the number of
    relationships (edges as given) of each row when merging duplicate edges made it differ from the stored
    entries per row, else None (``degree='count'`` reads it)."""
    indptr: np.ndarray
    indices: np.ndarray
    data: Optional[np.ndarray]
    rows: int
    cols: int
    counts: Optional[np.ndarray] = None
    # fastemb.dask's pieces only (propagate_block): int64 [rows], row k is row row_ids[k] of the row block
    row_ids: Optional[np.ndarray] = None

    @property
    def indices_int32(self) -> bool:
        return self.indices.dtype == np.int32

    def for_native(self) -> "Csr":
        """This matrix with every array aligned for the native kernels (itself when they are: arrays deserialized by
        ``distributed`` may start at any byte, see ``_backend.native_array``)."""
        fields = ("indptr", "indices", "data", "counts", "row_ids")
        if all(getattr(self, f) is None or getattr(self, f).flags.aligned for f in fields):
            return self
        return dataclasses.replace(self, **{f: _backend.native_array(getattr(self, f)) for f in fields
                                            if getattr(self, f) is not None})


def _is_scipy_sparse(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith("scipy.sparse") and hasattr(obj, "tocsr")


def _int_array(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _weight_values(name: str, w: Any, nnz: int) -> np.ndarray:
    """Edge weights as given, checked: real, one per edge, finite, >= 0."""
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {w.dtype}")
    if w.shape != (nnz,):
        raise ValueError(f"{name} must have shape ({nnz},) (one weight per edge), got {w.shape}")
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if nnz and w.min() < 0:
        raise ValueError(f"{name} must be >= 0 (FastRP's transition matrix needs non-negative weights)")
    return w


def _weights_array(name: str, w: Any, nnz: int) -> Optional[np.ndarray]:
    """float32 edge weights (finite, >= 0); None when all are 1 (the kernels skip the multiply)."""
    w = _weight_values(name, w, nnz)
    w32 = _backend.native_array(w, dtype=np.float32)
    if not np.isfinite(w32).all():
        raise ValueError(f"{name}: a weight overflows float32")
    if np.all(w32 == 1):
        return None
    return w32


def _index_dtype(n: int):
    return np.int32 if n <= _INT32_MAX else np.int64


def check_edge_indices(name: str, src: np.ndarray, dst: np.ndarray, num_nodes: Optional[int] = None) -> int:
    """The largest node index of an edge list (-1 when it is empty). ValueError naming ``name`` on a negative
    index or, with ``num_nodes``, on one >= num_nodes (fastemb.dask checks its edge partitions with it too)."""
    hi = -1
    if src.shape[0]:
        lo = min(int(src.min()), int(dst.min()))
        if lo < 0:
            raise ValueError(f"{name}: edge list node index {lo} is negative")
        hi = max(int(src.max()), int(dst.max()))
    if num_nodes is not None and hi >= num_nodes:
        raise ValueError(f"{name}: edge list node index {hi} is out of range [0, num_nodes={num_nodes})")
    return hi


def _edges_to_csr(src: np.ndarray, dst: np.ndarray, w: Optional[np.ndarray], n: int, symmetrize: bool,
                  rows: Optional[int] = None) -> Csr:
    """Canonical CSR from an edge list: rows sorted, columns sorted within a row, duplicates summed
    (weights summed in float64, then rounded to float32); symmetrize adds the reversed edges first
    (A + A^T: a self loop counts twice). ``rows``: a row block [rows, n] whose rows are ``src`` (local ids in
    [0, rows)), given its edges in their global order (fastemb.dask: the same bits as the rows of the whole)."""
    if rows is None:
        rows = n
    src = src.astype(np.int64, copy=False)
    dst = dst.astype(np.int64, copy=False)
    if symmetrize:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        if w is not None:
            w = np.concatenate([w, w])
    key = src * np.int64(n) + dst
    order = np.argsort(key, kind="stable")
    key = key[order]
    m = key.shape[0]
    first = np.ones(m, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    ukey = key[starts]
    if w is not None:
        data = np.add.reduceat(w.astype(np.float64)[order], starts) if m else np.zeros(0)
    elif starts.shape[0] != m:
        data = np.diff(np.append(starts, m)).astype(np.float64)  # duplicate unweighted edges: their count
    else:
        data = None
    row_of = ukey // n
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=indptr[1:])
    indices = np.ascontiguousarray((ukey % n).astype(_index_dtype(n)))
    # merged duplicates: keep each row's relationship count (GDS's degree counts parallel relationships)
    counts = np.bincount(src, minlength=rows).astype(np.int64) if starts.shape[0] != m else None
    if data is not None:
        data = _weights_array("graph: summed edge weights", data, data.shape[0])
    return Csr(indptr, indices, data, rows, n, counts)


def _csr_arrays(name: str, indptr: Any, indices: Any, data: Any, rows: int, cols: int) -> Csr:
    indptr = _int_array(f"{name} indptr", indptr)
    indices = _int_array(f"{name} indices", indices)
    if indptr.shape[0] != rows + 1:
        raise ValueError(f"{name}: indptr must have {rows + 1} entries (rows + 1), got {indptr.shape[0]}")
    indptr = _backend.native_array(indptr, dtype=np.int64)
    if indptr[0] != 0:
        raise ValueError(f"{name}: indptr must start at 0, got {indptr[0]}")
    if rows and np.any(indptr[1:] < indptr[:-1]):
        raise ValueError(f"{name}: indptr must be non-decreasing")
    nnz = int(indptr[-1])
    if indices.shape[0] < nnz:
        raise ValueError(f"{name}: indptr ends at {nnz} but indices has {indices.shape[0]} entries")
    indices = indices[:nnz]
    if nnz:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= cols:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: column index {bad} is out of range [0, {cols})")
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    indices = _backend.native_array(indices)
    w = None
    if data is not None:
        data = np.asarray(data)
        if data.ndim == 1 and data.shape[0] > nnz:
            data = data[:nnz]
        w = _weights_array(f"{name} data", data, nnz)
    return Csr(indptr, indices, w, rows, cols)


def as_graph(graph: Any, num_nodes: Optional[int] = None, symmetrize: bool = False) -> Csr:
    """Parses the ``graph`` argument of :func:`fastrp` into a validated :class:`Csr` (see there)."""
    symmetrize = _check_bool("symmetrize", symmetrize)
    if num_nodes is not None:
        num_nodes = _check_int("num_nodes", num_nodes, 0)
    if _is_scipy_sparse(graph):
        if len(graph.shape) != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"graph: the adjacency matrix must be square, got shape {graph.shape}")
        n = int(graph.shape[0])
        if num_nodes is not None and num_nodes != n:
            raise ValueError(f"num_nodes={num_nodes} disagrees with the adjacency matrix's {n} rows")
        if graph.dtype.kind not in "fiub":
            raise TypeError(f"graph: the adjacency matrix must be real, got dtype {graph.dtype}")
        if symmetrize:
            coo = graph.tocoo()
            w = _check_edge_weights(coo.data, coo.data.shape[0])
            return _edges_to_csr(np.asarray(coo.row), np.asarray(coo.col), w, n, True)
        csr = graph if graph.format == "csr" else graph.tocsr()  # other formats: converted once (scipy)
        out = _csr_arrays("graph", csr.indptr, csr.indices, csr.data, n, n)
        if graph.format == "coo":  # scipy sums a COO matrix's duplicate entries: keep the relationship counts
            counts = np.bincount(np.asarray(graph.row, dtype=np.int64), minlength=n).astype(np.int64)
            if not np.array_equal(counts, np.diff(out.indptr)):
                out.counts = counts
        return out
    if isinstance(graph, np.ndarray):
        raise TypeError("graph: a dense numpy array is ambiguous; pass a scipy.sparse matrix, a CSR tuple "
                        "(indptr, indices[, data], num_nodes) or an edge list tuple (src, dst[, weights])")
    if type(graph).__name__ == "ReorderedGraph":  # (by name: reorder.py imports this module)
        raise TypeError("graph: a ReorderedGraph (fastemb.reorder_graph) is accepted by fastemb.fastrp only; pass "
                        "the original graph here")
    if not isinstance(graph, (tuple, list)):
        raise TypeError("graph must be a scipy.sparse matrix/array, a CSR tuple (indptr, indices[, data], num_nodes) "
                        f"or an edge list (src, dst[, weights]), got {type(graph).__name__}")
    items = list(graph)
    last = items[-1] if items else None
    if len(items) in (3, 4) and isinstance(last, (numbers.Integral, np.integer)) and not isinstance(last, bool):
        # CSR tuple (indptr, indices[, data], n)
        n = _check_int("graph (CSR tuple) num_nodes", last, 0)
        if num_nodes is not None and num_nodes != n:
            raise ValueError(f"num_nodes={num_nodes} disagrees with the CSR tuple's {n} nodes")
        data = items[2] if len(items) == 4 else None
        csr = _csr_arrays("graph", items[0], items[1], data, n, n)
        if symmetrize:
            src = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr.indptr))
            return _edges_to_csr(src, csr.indices, csr.data, n, True)
        return csr
    if len(items) not in (2, 3):
        raise ValueError("graph: a tuple must be a CSR tuple (indptr, indices[, data], num_nodes) or an edge list "
                         f"(src, dst[, weights]); got {len(items)} items")
    src = _int_array("graph src", items[0])
    dst = _int_array("graph dst", items[1])
    if src.shape != dst.shape:
        raise ValueError(f"graph: src and dst must have the same length, got {src.shape[0]} and {dst.shape[0]}")
    m = src.shape[0]
    hi = check_edge_indices("graph", src, dst, num_nodes)
    if num_nodes is None:
        num_nodes = hi + 1  # documented: trailing isolated nodes need num_nodes
    w = _check_edge_weights(items[2], m) if len(items) == 3 and items[2] is not None else None
    return _edges_to_csr(src, dst, w, num_nodes, symmetrize)


def _check_edge_weights(w: Any, m: int) -> Optional[np.ndarray]:
    return _weight_values("graph: edge weights", w, m)
