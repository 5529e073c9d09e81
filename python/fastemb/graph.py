"""FastRP node embeddings and very sparse random projection (shared/specs/fastrp.md).

* :func:`sparse_random_projection` -- ``X @ R`` with a very sparse random ``R`` generated on the fly
  from a counter-based RNG (never stored): same seed, same bits, for any thread count and backend.
* :func:`fastrp` -- FastRP (Chen et al., CIKM 2019) on a graph given as a scipy.sparse matrix, a CSR
  tuple or an edge list, with the paper's and the Neo4j GDS variant as presets.

The random matrix: ``R[i, j] = +-sqrt(s/d)`` with probability ``1/(2s)`` each, else 0; entry ``(i, j)``
comes from SplitMix64 keyed on ``(seed, i * d + j)`` (src/cpp/graph/graph.h). The native kernels
(``fastemb._C.graph_*``) are used when the build has them; otherwise the NumPy reference
(``fastemb._reference.graph``), which gives the same bits, slower.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _backend
from ._memory import available_memory, format_bytes
from ._reference import graph as _ref

__all__ = ["fastrp", "sparse_random_projection", "PRESETS"]

_U64 = 1 << 64
_INT32_MAX = np.iinfo(np.int32).max

#: Defaults of the two variants (``preset=``); explicit arguments override them.
PRESETS: Dict[str, Dict[str, Any]] = {
    # Chen et al. reference code (BlogCatalog hyperparameters): unnormalized U_i propagate, V_i = rowL2(U_i),
    # E = sum alpha_i V_i, then column standardization (sklearn ``scale``).
    "paper": dict(weights=(0.0, 0.0, 1.0, 6.67), beta=-0.64, s="sqrt", normalize=True, propagate_normalized=False,
                  self_influence=0.0, standardize=True, min_degree=0.0, degree="weighted", feature_scaling="shared"),
    # Neo4j GDS (FastRP.java): s = 3, the normalized vectors propagate with 1/max(deg, 1), no column scaling; the
    # degree is the relationship count (weights ignored), and the random and the feature columns are each scaled
    # by sqrt(3 / their own width).
    "gds": dict(weights=(0.0, 1.0, 1.0), beta=0.0, s=3.0, normalize=True, propagate_normalized=True,
                self_influence=0.0, standardize=False, min_degree=1.0, degree="count", feature_scaling="block"),
}

DEGREES = ("weighted", "count")
FEATURE_SCALINGS = ("shared", "block")


# ---- argument checks ------------------------------------------------------------------------

def _check_int(name: str, value: Any, lo: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_seed(seed: Any) -> int:
    """A seed is an int in [0, 2^64)."""
    seed = _check_int("seed", seed)
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def resolve_s(s: Any, n_in: int) -> float:
    """``'sqrt'`` -> sqrt(n_in) (at least 1; sklearn ``density='auto'``), else a finite real >= 1."""
    if isinstance(s, str):
        if s != "sqrt":
            raise ValueError(f"s must be 'sqrt' or a number >= 1, got {s!r}")
        return max(1.0, math.sqrt(n_in))
    s = _check_real("s", s)
    if s < 1.0:
        raise ValueError(f"s must be >= 1 (nonzero probability 1/s), got {s}")
    return s


def _check_dtype(dtype: Any) -> None:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32', got {dtype!r}") from exc
    if dt != np.float32:
        raise ValueError(f"dtype: only float32 is supported (the kernels compute in float32), got {dt}")


# ---- graphs ---------------------------------------------------------------------------------

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


def _weights_array(name: str, w: Any, nnz: int) -> Optional[np.ndarray]:
    """float32 edge weights (finite, >= 0); None when all are 1 (the kernels skip the multiply)."""
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {w.dtype}")
    if w.shape != (nnz,):
        raise ValueError(f"{name} must have shape ({nnz},) (one weight per edge), got {w.shape}")
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if nnz and w.min() < 0:
        raise ValueError(f"{name} must be >= 0 (FastRP's transition matrix needs non-negative weights)")
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
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"graph: edge weights must be a real array, got dtype {w.dtype}")
    if w.shape != (m,):
        raise ValueError(f"graph: edge weights must have shape ({m},), got {w.shape}")
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        raise ValueError("graph: edge weights must be finite (found NaN or inf)")
    if m and w.min() < 0:
        raise ValueError("graph: edge weights must be >= 0")
    return w


# ---- kernels: native when the build has them, else the reference (same bits) -------------------

def _native(name: str):
    C = _backend.native()
    return getattr(C, name, None) if C is not None else None


_A = _backend.address


def _inputs(*arrays: Optional[np.ndarray]) -> Tuple[Optional[np.ndarray], ...]:
    """The arrays a kernel only reads, aligned for it (copies of misaligned ones, e.g. deserialized by
    ``distributed``). Buffers a kernel writes are fastemb's own, allocated aligned; ``_A`` refuses others."""
    return tuple(None if a is None else _backend.native_array(a) for a in arrays)


# ---- the FastRP scratch workspace ------------------------------------------------------------------
# A CPU fastrp keeps its two [N, d] ping-pong buffers (prev / cur) for the next call instead of
# returning them to the allocator. Fresh memory is not free: every 4 KB page is faulted in (and zeroed)
# on first touch, and on VMs whose freed memory goes back to the host (free page reporting) a fresh
# 512 MB buffer can cost 0.2-0.5 s, as much as a propagation step. A call takes the cached buffers
# (concurrent calls find none and allocate their own), and puts them back when done.

_workspace_lock = threading.Lock()
_workspace: list = []  # flat 64-byte-aligned float32 buffers, at most _WORKSPACE_BUFFERS
_WORKSPACE_BUFFERS = 2


def _take_scratch(count: int) -> np.ndarray:
    with _workspace_lock:
        for k, buf in enumerate(_workspace):
            if buf.size >= count:
                return _workspace.pop(k)
    return _backend.aligned_empty(count)


def _give_scratch(buf: np.ndarray) -> None:
    with _workspace_lock:
        _workspace.append(buf)
        _workspace.sort(key=lambda b: -b.size)
        del _workspace[_WORKSPACE_BUFFERS:]


# The memory of the last result: once nothing but this list refers to it (the caller dropped the result and
# every view of it), the next call writes its result there instead of into fresh pages.
_results: list = []  # uint8 owner arrays
_RESULT_BUFFERS = 1
_UNREFERENCED = 3  # sys.getrefcount of an entry that only _results refers to (list, local name, argument)


def _take_result(shape) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    with _workspace_lock:
        for k in range(len(_results)):
            raw = _results[k]
            if raw.nbytes >= count * 4 + 64 and sys.getrefcount(raw) <= _UNREFERENCED:
                del _results[k]
                return _backend.aligned_view(raw, shape)
            del raw
    return _backend.aligned_empty(shape)


def _keep_result(result: np.ndarray) -> None:
    raw = result.base
    if not (isinstance(raw, np.ndarray) and raw.base is None and raw.dtype == np.uint8):
        return
    with _workspace_lock:
        _results.insert(0, raw)
        del _results[_RESULT_BUFFERS:]


def release_workspace() -> int:
    """Frees what CPU :func:`fastrp` keeps between calls: its two float32 [N, d] scratch buffers (reused by later
    runs that fit) and its hold on the last result's memory (reused once the caller has dropped that result and
    every view of it). Returns the bytes released (the result's memory counted only when unreferenced)."""
    with _workspace_lock:
        freed = sum(b.nbytes for b in _workspace)
        _workspace.clear()
        for k in range(len(_results)):
            raw = _results[k]
            if sys.getrefcount(raw) <= _UNREFERENCED:
                freed += raw.nbytes
            del raw
        _results.clear()
    return freed


# ---- memory check before the N x d buffers (why: fastemb._memory) -----------------------------------------

def _reusable_bytes(count: int) -> int:
    """Bytes of the next call's [N, d] buffers (``count`` floats each) that the workspace already holds."""
    need = count * 4
    with _workspace_lock:
        held = sum(need for b in _workspace[:_WORKSPACE_BUFFERS] if b.size >= count)
        for k in range(len(_results)):
            raw = _results[k]
            if raw.nbytes >= need + 64 and sys.getrefcount(raw) <= _UNREFERENCED:
                held += need
            del raw
    return held


def check_fastrp_memory(n: int, d: int, q: int, return_iterations: bool, standardize: bool) -> None:
    """Raises MemoryError when a CPU :func:`fastrp` on N = ``n`` nodes, ``d`` columns would write more memory
    than the machine can give (see :func:`available_memory`); allocates nothing."""
    count = n * d
    buffers = 3 + (q if return_iterations else 0)  # prev, cur, result (+ the q iterations)
    stats = 16 * d if standardize else 0  # float64 column mean and std
    reused = _reusable_bytes(count)
    fresh = buffers * count * 4 + stats - reused
    avail = available_memory()
    if avail is not None and fresh > avail:
        parts = f"{buffers} float32 [{n}, {d}] buffers of {format_bytes(count * 4)} each"
        if stats:
            parts += f" + {format_bytes(stats)} of float64 column statistics (standardize)"
        if reused:
            parts += f" - {format_bytes(reused)} already held by the workspace"
        raise MemoryError(f"fastrp needs {format_bytes(fresh)} ({parts}) but this machine has {format_bytes(avail)} "
                          f"available (MemAvailable + SwapFree, memory cgroup limit); lower dim or the node count")


class NumpyOps:
    """Kernel calls on NumPy buffers (``fastemb._C`` or the reference)."""

    device = "cpu"

    def __init__(self) -> None:
        self._scratch_flat: Dict[int, np.ndarray] = {}  # id(view handed out) -> its workspace buffer

    def scratch(self, shape):
        """An uninitialized float32 buffer from the workspace; hand it back with release_scratch."""
        count = int(np.prod(shape, dtype=np.int64))
        flat = _take_scratch(count)
        view = flat[:count].reshape(shape)
        self._scratch_flat[id(view)] = flat
        return view

    def result(self, shape):
        """The buffer a result is written to: the last result's memory when the caller has dropped it (see
        keep_result), else fresh."""
        return _take_result(shape)

    def keep_result(self, result) -> None:
        _keep_result(result)

    def release_scratch(self, view) -> None:
        flat = self._scratch_flat.pop(id(view), None)
        if flat is not None:
            _give_scratch(flat)

    def empty(self, shape):
        return _backend.aligned_empty(shape)

    def zeros(self, shape):
        out = _backend.aligned_empty(shape)
        out.fill(0)
        return out

    def upload(self, a: Optional[np.ndarray]):
        return a

    def upload_csr(self, a: Csr) -> Csr:
        return a

    def random_rows(self, spec, row_scale, out, row0: int = 0) -> None:
        seed, threshold, value, d = spec
        fn = _native("graph_random_rows")
        if fn is not None:
            (row_scale,) = _inputs(row_scale)
            fn(seed, threshold, float(value), d, row0, out.shape[0], _A(row_scale), _A(out))
        else:
            out[...] = _ref.random_rows(seed, threshold, value, d, row0, out.shape[0], row_scale)

    def project_dense(self, spec, x, out) -> None:
        seed, threshold, value, d = spec
        fn = _native("graph_project_dense")
        if fn is not None:
            (x,) = _inputs(x)
            fn(seed, threshold, float(value), d, _A(x), x.shape[0], x.shape[1], _A(out))
        else:
            out[...] = _ref.project_dense(seed, threshold, value, d, x)

    def project_csr(self, spec, x: Csr, out) -> None:
        seed, threshold, value, d = spec
        fn = _native("graph_project_csr")
        if fn is not None:
            x = x.for_native()
            fn(seed, threshold, float(value), d, _A(x.indptr), _A(x.indices), x.indices_int32, _A(x.data), x.rows,
               x.cols, _A(out))
        else:
            out[...] = _ref.project_csr(seed, threshold, value, d, x.indptr, x.indices, x.data, x.cols)

    def propagate(self, a: Csr, row_scale, prev, cur, normalize, propagate_normalized, alpha, accum,
                  accum_init: bool = False) -> None:
        """One step (graph.h ``propagate``); ``accum_init``: the accumulation writes 0 + alpha * v without
        reading accum (same bits as a zero-filled accum)."""
        fn = _native("graph_propagate")
        if fn is not None:
            a, (row_scale, prev) = a.for_native(), _inputs(row_scale, prev)
            fn(_A(a.indptr), _A(a.indices), a.indices_int32, _A(a.data), a.rows, _A(row_scale), _A(prev),
               prev.shape[1], _A(cur), normalize, propagate_normalized, float(alpha), _A(accum), accum_init=accum_init)
        else:
            if accum_init and accum is not None:
                accum.fill(0)
            cur[...] = _ref.propagate(a.indptr, a.indices, a.data, row_scale, prev, normalize, propagate_normalized,
                                      alpha, accum)

    def can_propagate_random(self) -> bool:
        return _native("graph_propagate_random") is not None

    def propagate_random(self, spec, init_scale, a: Csr, row_scale, cur, normalize, propagate_normalized, alpha,
                         accum, accum_init: bool = False) -> None:
        """The first step ``propagate(diag(init_scale) R)`` without materializing the N x d initial matrix
        (native only; same bits as random_rows + propagate for finite weights)."""
        seed, threshold, value, d = spec
        a, (init_scale, row_scale) = a.for_native(), _inputs(init_scale, row_scale)
        _native("graph_propagate_random")(
            seed, threshold, float(value), d, _A(init_scale), _A(a.indptr), _A(a.indices), a.indices_int32,
            _A(a.data), a.rows, _A(row_scale), _A(cur), normalize, propagate_normalized, float(alpha), _A(accum),
            accum_init=accum_init)

    def propagate_block(self, a: Csr, row_scale, prev, acc_in, out, finish: bool, normalize: bool = True,
                        propagate_normalized: bool = False, alpha: float = 0.0, accum=None,
                        accum_init: bool = False) -> None:
        """One column block of a row block's step (graph.h ``propagate_block``): ``a`` = A[i, j] [rows, cols] with
        local columns, ``prev`` = X[j] [cols, d]; out = acc_in (zeros when None; may be out itself) + a @ prev in
        propagate's order; ``finish``: then the row scale and the epilogue (normalize, accum). With ``a.row_ids``
        the piece's rows are those rows of the row block's buffers (acc_in None or out; the other rows of out are
        left as they are)."""
        d = out.shape[1]
        fn = _native("graph_propagate_block")
        if fn is not None:
            a, (row_scale, prev, acc_in) = a.for_native(), _inputs(row_scale, prev, acc_in)
            fn(_A(a.indptr), _A(a.indices), a.indices_int32, _A(a.data), a.rows, a.cols, _A(row_scale), _A(prev), d,
               _A(acc_in), _A(out), finish, normalize, propagate_normalized, float(alpha), _A(accum),
               accum_init=accum_init, row_ids=_A(a.row_ids), out_rows=out.shape[0])
            return
        if finish and accum_init and accum is not None:
            accum.fill(0)
        prev_ = prev if prev is not None else np.zeros((a.cols, d), np.float32)
        if a.row_ids is None:
            out[...] = _ref.propagate_block(a.indptr, a.indices, a.data, row_scale, prev_, acc_in, finish, normalize,
                                            propagate_normalized, alpha, accum if finish else None)
            return
        # a piece listing its rows: the same on those rows of the row block, the other rows untouched
        r = a.row_ids
        sub_accum = accum[r] if (finish and accum is not None) else None
        start = out[r] if acc_in is not None else None
        out[r] = _ref.propagate_block(a.indptr, a.indices, a.data, None if row_scale is None else row_scale[r], prev_,
                                      start, finish, normalize, propagate_normalized, alpha, sub_accum)
        if sub_accum is not None:
            accum[r] = sub_accum

    def random_table(self, spec, row0: int, n: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """R rows [row0, row0 + n) as sparse lists ``(offsets int64 [n + 1], lists int32)`` (native only; None
        without the native module)."""
        seed, threshold, value, d = spec
        counts = _native("graph_random_table_offsets")
        fill = _native("graph_random_table_lists")
        if counts is None or fill is None:
            return None
        offsets = np.empty(n + 1, np.int64)
        counts(seed, threshold, float(value), d, row0, n, _A(offsets))
        lists = np.empty(int(offsets[-1]), np.int32)
        fill(seed, threshold, float(value), d, row0, n, _A(offsets), _A(lists), lists.shape[0])
        return offsets, lists

    def propagate_random_block(self, spec, row0: int, init_scale, table, a: Csr, row_scale, acc_in, out, finish: bool,
                               normalize: bool = True, propagate_normalized: bool = False, alpha: float = 0.0,
                               accum=None, accum_init: bool = False) -> None:
        """propagate_block with prev = diag(init_scale) R[row0 : row0 + a.cols] never materialized (``table``:
        :meth:`random_table` of those rows, or None). Without the native module: random_rows + propagate_block
        (the same bits)."""
        seed, threshold, value, d = spec
        fn = _native("graph_propagate_random_block")
        if fn is not None:
            if table is None:
                table = self.random_table(spec, row0, a.cols)
            offsets, lists = table
            a, (init_scale, offsets, lists, row_scale, acc_in) = a.for_native(), _inputs(init_scale, offsets, lists,
                                                                                         row_scale, acc_in)
            fn(seed, threshold, float(value), d, _A(init_scale), _A(offsets), _A(lists), lists.shape[0],
               _A(a.indptr), _A(a.indices), a.indices_int32, _A(a.data), a.rows, a.cols, _A(row_scale), _A(acc_in),
               _A(out), finish, normalize, propagate_normalized, float(alpha), _A(accum), accum_init=accum_init,
               row_ids=_A(a.row_ids), out_rows=out.shape[0])
            return
        prev = np.empty((a.cols, d), np.float32)
        self.random_rows(spec, init_scale, prev, row0)
        self.propagate_block(a, row_scale, prev, acc_in, out, finish, normalize, propagate_normalized, alpha, accum,
                             accum_init)

    def column_block_sums(self, x, mean=None) -> np.ndarray:
        """Per 4096-row block of x [rows, d] (rows from x's first), the column sums of x (or of (x - mean)^2)
        in float64 from 0, rows in order: [ceil(rows / 4096), d] (standardize's per-block sums)."""
        rows, d = x.shape
        out = np.empty((-(-rows // _ref.STANDARDIZE_BLOCK), d), np.float64)
        fn = _native("graph_column_block_sums")
        if fn is not None:
            if rows:
                x, mean = _inputs(x, mean)
                fn(_A(x), rows, d, _A(mean), _A(out))
        else:
            out[...] = _ref.column_block_sums(x, mean)
        return out

    def standardize_apply(self, x, mean, std, out) -> None:
        """out = float32((x - mean) / (std > 0 ? std : 1)) (standardize's last pass; out may be x)."""
        fn = _native("graph_standardize_apply")
        if fn is not None:
            if x.shape[0]:
                mean, std = _inputs(mean, std)
                if x is not out:
                    (x,) = _inputs(x)
                fn(_A(x), x.shape[0], x.shape[1], _A(mean), _A(std), _A(out))
        else:
            out[...] = _ref.standardize_apply(x, mean, std)

    def accumulate(self, x, normalize, alpha, accum) -> None:
        fn = _native("graph_accumulate")
        if fn is not None:
            (x,) = _inputs(x)
            fn(_A(x), x.shape[0], x.shape[1], normalize, float(alpha), _A(accum))
        else:
            _ref.accumulate(x, normalize, alpha, accum)

    def standardize(self, x) -> None:
        fn = _native("graph_standardize_columns")
        if fn is not None:
            mean = np.empty(x.shape[1], np.float64)
            std = np.empty(x.shape[1], np.float64)
            fn(_A(x), x.shape[0], x.shape[1], _A(mean), _A(std))
        else:
            x[...] = _ref.standardize_columns(x)[0]


def random_spec(s: float, dim: int) -> Tuple[int, np.float32]:
    """(threshold, value) of the generator for sparsity ``s`` and ``dim`` columns (graph.h)."""
    return _ref.random_spec(s, dim)


def random_matrix_rows(dim: int, s: float, seed: int, row0: int, rows: int) -> np.ndarray:
    """Rows ``row0 .. row0 + rows`` of R [n, dim] (float32) as :func:`sparse_random_projection` uses it
    (``s`` already resolved): e.g. to materialize R blockwise."""
    threshold, value = random_spec(s, dim)
    out = np.empty((rows, dim), np.float32)
    if rows:
        NumpyOps().random_rows((seed, threshold, value, dim), None, out, row0)
    return out


# ---- sparse random projection -----------------------------------------------------------------

def _as_dense_float32(name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    # float64 is rounded to float32 (one copy), like any non-contiguous input.
    return _backend.native_array(x, dtype=np.float32)


def _as_sparse_csr(name: str, x: Any) -> Csr:
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    csr = x if x.format == "csr" else x.tocsr()
    rows, cols = (int(v) for v in csr.shape)
    indptr = _backend.native_array(csr.indptr, dtype=np.int64)
    # scipy checks neither indptr's order nor the index range on construction: a malformed matrix
    # must raise here, naming the argument, not reach the kernels.
    if indptr[0] != 0 or (rows and np.any(indptr[1:] < indptr[:-1])):
        raise ValueError(f"{name}: malformed sparse matrix (indptr must start at 0 and be non-decreasing)")
    nnz = int(indptr[-1])
    data = np.asarray(csr.data[:nnz])
    if not np.isfinite(data).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    indices = np.asarray(csr.indices[:nnz])
    if nnz:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= cols:
            raise ValueError(f"{name}: column index {lo if lo < 0 else hi} is out of range [0, {cols})")
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return Csr(indptr, _backend.native_array(indices), _backend.native_array(data, dtype=np.float32), rows, cols)


def _project(ops: NumpyOps, spec, x: Union[np.ndarray, Csr], out) -> None:
    if isinstance(x, Csr):
        ops.project_csr(spec, x, out)
    else:
        ops.project_dense(spec, x, out)


def sparse_random_projection(X: Any, dim: int, s: Union[str, float] = "sqrt", seed: int = 0) -> np.ndarray:
    """Projects ``X`` [N, n] to ``X @ R`` [N, dim] with a very sparse random ``R`` [n, dim].

    Args:
        X: dense float32/float64 array or a scipy.sparse matrix/array (any format; non-CSR formats are
            converted once). float64 is rounded to float32 first (one copy); values must be finite.
        dim: output dimension d >= 1.
        s: sparsity: each entry of R is nonzero with probability 1/s, with magnitude sqrt(s/dim) and a random
            sign. ``'sqrt'`` (default) means sqrt(n) (sklearn ``SparseRandomProjection(density='auto')``,
            Li et al.'s "very sparse" choice); ``3`` is Achlioptas'. Must be >= 1.
        seed: int in [0, 2^64).

    Returns:
        float32 [N, dim]. R is generated on the fly from (seed, row, column) and never stored: the result is
        bitwise identical for any thread count, and dense and CSR inputs with the same values (CSR with sorted
        indices, no duplicates) give the same bits: every nonzero term is added in increasing feature order,
        then the sum is scaled by sqrt(s/dim). Distances are preserved in expectation
        (E ||x R||^2 = ||x||^2, Johnson-Lindenstrauss).
    """
    dim = _check_int("dim", dim, 1)
    seed = check_seed(seed)
    if _is_scipy_sparse(X):
        x: Union[np.ndarray, Csr] = _as_sparse_csr("X", X)
        rows, n_in = x.rows, x.cols
    elif isinstance(X, np.ndarray):
        x = _as_dense_float32("X", X)
        rows, n_in = x.shape
    else:
        raise TypeError(f"X must be a numpy.ndarray or a scipy.sparse matrix (use fastemb.torch for tensors), "
                        f"got {type(X).__name__}")
    s = resolve_s(s, n_in)
    threshold, value = random_spec(s, dim)
    out = np.empty((rows, dim), np.float32)
    if rows == 0:
        return out
    if n_in == 0:
        out.fill(0)
        return out
    _project(NumpyOps(), (seed, threshold, value, dim), x, out)
    return out


# ---- FastRP -----------------------------------------------------------------------------------

@dataclass
class FastRPPlan:
    """Everything :func:`fastrp` computes on the host before the N x d work (shared by the torch path)."""
    graph: Csr
    dim: int
    weights: Tuple[float, ...]
    seed: int
    threshold: int
    value: np.float32
    normalize: bool
    propagate_normalized: bool
    self_influence: float
    standardize: bool
    initial_scale: np.ndarray      # float32 [N]: deg^beta (degree 0 -> 1); deg as chosen by ``degree``
    propagation_scale: np.ndarray  # float32 [N]: 1 / max(deg, min_degree) (0 where that is 0)
    feature_dim: int
    feature_spec: Optional[Tuple[int, int, np.float32, int]]  # (seed, threshold, value, feature_dim)
    # ``value`` above is the magnitude of the random (first dim - feature_dim) columns: sqrt(s / dim), or with
    # feature_scaling='block' and features sqrt(s / (dim - feature_dim)).


def _resolve(preset: Optional[str], **given: Any) -> Dict[str, Any]:
    if preset is None:
        preset = "paper"
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}")
    out = dict(PRESETS[preset])
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _check_weights(weights: Any) -> Tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a sequence of numbers (one per iteration), got {type(weights).__name__}")
    w = np.asarray(weights, dtype=object).ravel() if not isinstance(weights, np.ndarray) else weights.ravel()
    if len(w) == 0:
        raise ValueError("weights must not be empty (one weight per iteration)")
    return tuple(_check_real(f"weights[{i}]", v) for i, v in enumerate(w))


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)} (or None for the preset's), "
                         f"got {value!r}")
    return value


@dataclass
class FastRPArgs:
    """The validated arguments of :func:`fastrp` that do not depend on the graph (presets applied)."""
    dim: int
    weights: Tuple[float, ...]
    seed: int
    beta: float
    self_influence: float
    min_degree: float
    normalize: bool
    propagate_normalized: bool
    standardize: bool
    degree: str
    feature_scaling: str
    s: Any               # as given ('sqrt' or a number); resolved against N / the feature count by fastrp_spec
    feature_ratio: float


@dataclass
class FastRPSpec:
    """The random matrices of a FastRP run on N nodes (graph-wide constants, no O(N) data)."""
    threshold: int
    value: np.float32
    feature_dim: int
    feature_spec: Optional[Tuple[int, int, np.float32, int]]  # (seed, threshold, value, feature_dim)


def check_fastrp_args(dim: int, *, weights=None, beta=None, s=None, normalize=None, propagate_normalized=None,
                      self_influence=None, feature_ratio: float = 0.0, standardize=None, min_degree=None, degree=None,
                      feature_scaling=None, seed: int = 0, dtype: Any = "float32",
                      preset: Optional[str] = None) -> FastRPArgs:
    """Validates :func:`fastrp`'s graph-independent arguments and applies the preset (errors name the argument)."""
    dim = _check_int("dim", dim, 1)
    seed = check_seed(seed)
    _check_dtype(dtype)
    p = _resolve(preset, weights=weights, beta=beta, s=s, normalize=normalize,
                 propagate_normalized=propagate_normalized, self_influence=self_influence, standardize=standardize,
                 min_degree=min_degree, degree=degree, feature_scaling=feature_scaling)
    degree_v = _check_choice("degree", p["degree"], DEGREES)
    scaling_v = _check_choice("feature_scaling", p["feature_scaling"], FEATURE_SCALINGS)
    w = _check_weights(p["weights"])
    beta_v = _check_real("beta", p["beta"])
    si = _check_real("self_influence", p["self_influence"])
    md = _check_real("min_degree", p["min_degree"])
    if md < 0:
        raise ValueError(f"min_degree must be >= 0, got {md}")
    norm = _check_bool("normalize", p["normalize"])
    pn = _check_bool("propagate_normalized", p["propagate_normalized"])
    std = _check_bool("standardize", p["standardize"])
    fr = _check_real("feature_ratio", feature_ratio)
    if not 0.0 <= fr <= 1.0:
        raise ValueError(f"feature_ratio must be in [0, 1], got {fr}")
    return FastRPArgs(dim, w, seed, beta_v, si, md, norm, pn, std, degree_v, scaling_v, p["s"], fr)


def fastrp_spec(args: FastRPArgs, n: int, num_features: Optional[int]) -> FastRPSpec:
    """The generator constants of a run on ``n`` nodes (``s='sqrt'`` -> sqrt(n)) with ``num_features`` feature
    columns (None: no features)."""
    dim = args.dim
    s_v = resolve_s(args.s, n)
    feature_dim = int(math.floor(dim * args.feature_ratio))
    feature_spec = None
    if num_features is None:
        if args.feature_ratio > 0:
            raise ValueError("feature_ratio > 0 needs features")
        feature_dim = 0
    else:
        if feature_dim < 1:
            raise ValueError(f"feature_ratio: floor(dim * feature_ratio) = {feature_dim} columns; with features it "
                             "must give at least one column")
        f_s = resolve_s(args.s, num_features)
        f_threshold, f_value = _ref.random_spec(f_s, _ref.feature_width(dim, feature_dim, args.feature_scaling))
        feature_spec = (args.seed ^ _ref.FEATURE_SEED_XOR, f_threshold, f_value, feature_dim)
    threshold, value = _ref.random_spec(s_v, _ref.base_width(dim, feature_dim, args.feature_scaling))
    return FastRPSpec(threshold, value, feature_dim, feature_spec)


def fastrp_row_scales(args: FastRPArgs, csr: Csr) -> Tuple[np.ndarray, np.ndarray]:
    """(initial_scale, propagation_scale) float32 [rows] of the rows of ``csr``: deg^beta and
    1/max(deg, min_degree). Row-local: a row block of the adjacency gives the same bits as the whole."""
    if args.degree == "count":
        deg = _ref.relationship_counts(csr.indptr, csr.counts)
    else:
        deg = _ref.degrees(csr.indptr, csr.data, csr.rows)
    return _ref.initial_scale(deg, args.beta), _ref.propagation_scale(deg, args.min_degree)


def plan_fastrp(graph: Any, dim: int, *, weights=None, beta=None, s=None, normalize=None, propagate_normalized=None,
                self_influence=None, feature_ratio: float = 0.0, num_features: Optional[int] = None,
                standardize=None, min_degree=None, degree=None, feature_scaling=None, seed: int = 0,
                dtype: Any = "float32", preset: Optional[str] = None, num_nodes: Optional[int] = None,
                symmetrize: bool = False) -> FastRPPlan:
    """Validates the arguments of :func:`fastrp` and computes degrees and row scales (host, O(N + nnz))."""
    args = check_fastrp_args(dim, weights=weights, beta=beta, s=s, normalize=normalize,
                             propagate_normalized=propagate_normalized, self_influence=self_influence,
                             feature_ratio=feature_ratio, standardize=standardize, min_degree=min_degree,
                             degree=degree, feature_scaling=feature_scaling, seed=seed, dtype=dtype, preset=preset)
    csr = as_graph(graph, num_nodes, symmetrize)
    spec = fastrp_spec(args, csr.rows, num_features)
    init, prop = fastrp_row_scales(args, csr)
    return FastRPPlan(csr, args.dim, args.weights, args.seed, spec.threshold, spec.value, args.normalize,
                      args.propagate_normalized, args.self_influence, args.standardize, init, prop, spec.feature_dim,
                      spec.feature_spec)


def _progress_range(q: int, progress: bool):
    if not progress:
        return range(q)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("progress=True needs tqdm (pip install tqdm); running without a progress bar", stacklevel=3)
        return range(q)
    return tqdm(range(q), desc="fastrp", unit="iter")


def run_fastrp(ops: Any, plan: FastRPPlan, features: Any, return_iterations: bool, progress: bool):
    """The N x d part of FastRP on ``ops``' buffers: at most three [N, d] buffers (prev, cur, accum), plus the
    [q, N, d] iterations when asked for. ``features`` is already on ops' device ([N, f] dense or a Csr)."""
    n, d = plan.graph.rows, plan.dim
    q = len(plan.weights)
    a = ops.upload_csr(plan.graph)
    spec = (plan.seed, plan.threshold, plan.value, d)
    # Plain random initial vectors (no feature columns, no self-influence term reading them): the first
    # step generates R's sparse rows on the fly instead of writing and gathering an N x d matrix.
    fused_first = (plan.feature_dim == 0 and plan.self_influence == 0
                   and getattr(ops, "can_propagate_random", lambda: False)())
    take_scratch = getattr(ops, "scratch", ops.empty)
    prev = take_scratch((n, d))
    if not fused_first:
        ops.random_rows(spec, ops.upload(plan.initial_scale), prev)
    if plan.feature_dim:
        block = ops.empty((n, plan.feature_dim))
        if isinstance(features, Csr):
            ops.project_csr(plan.feature_spec, features, block)
        else:
            ops.project_dense(plan.feature_spec, features, block)
        prev[:, d - plan.feature_dim:] = block
        del block
    # CPU buffers: accum is not zero-filled; the first step that accumulates writes 0 + alpha * v
    # (accum_init, the same bits) and a run with nothing to accumulate fills it at the end.
    lazy_zeros = isinstance(ops, NumpyOps)
    accum = ops.result((n, d)) if lazy_zeros else ops.zeros((n, d))
    accum_ready = not lazy_zeros
    if plan.self_influence != 0:
        if not accum_ready:
            accum.fill(0)
            accum_ready = True
        ops.accumulate(prev, True, plan.self_influence, accum)
    cur = take_scratch((n, d))
    scratch = (prev, cur)
    scale = ops.upload(plan.propagation_scale)
    iterations = ops.empty((q, n, d)) if return_iterations else None
    for i in _progress_range(q, progress):
        alpha = plan.weights[i]
        # alpha == 0 adds nothing (accum + 0 * v == accum bit for bit): skip the epilogue's writes.
        step_accum = accum if alpha != 0 else None
        init = {"accum_init": True} if step_accum is not None and not accum_ready else {}
        if i == 0 and fused_first:
            ops.propagate_random(spec, ops.upload(plan.initial_scale), a, scale, cur, plan.normalize,
                                 plan.propagate_normalized, alpha, step_accum, **init)
        else:
            ops.propagate(a, scale, prev, cur, plan.normalize, plan.propagate_normalized, alpha, step_accum, **init)
        accum_ready = accum_ready or step_accum is not None
        if iterations is not None:
            it = iterations[i]
            it[...] = 0
            ops.accumulate(cur, plan.normalize and not plan.propagate_normalized, 1.0, it)
        prev, cur = cur, prev
    del prev, cur
    for buf in scratch:
        getattr(ops, "release_scratch", lambda b: None)(buf)
    del scratch
    if not accum_ready:
        accum.fill(0)
    if plan.standardize:
        ops.standardize(accum)
    getattr(ops, "keep_result", lambda r: None)(accum)
    if return_iterations:
        return accum, iterations
    return accum


def feature_columns(features: Any) -> Optional[int]:
    """The column count f of :func:`fastrp`'s ``features`` [N, f] from its shape alone (None without features):
    ValueError unless 2-D. fastemb.dask.fastrp checks a dask array's shape with it before building anything."""
    if features is None:
        return None
    shape = getattr(features, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"features must be 2-D [N, f], got shape {shape}")
    return int(shape[1])


def _as_features(features: Any, n: int) -> Tuple[Union[np.ndarray, Csr], int]:
    if _is_scipy_sparse(features):
        f = _as_sparse_csr("features", features)
        rows, cols = f.rows, f.cols
    elif isinstance(features, np.ndarray):
        f = _as_dense_float32("features", features)
        rows, cols = f.shape
    else:
        raise TypeError(f"features must be a numpy.ndarray or a scipy.sparse matrix, got {type(features).__name__}")
    if rows != n:
        raise ValueError(f"features must have one row per node ({n}), got shape {(rows, cols)}")
    if cols < 1:
        raise ValueError(f"features must have at least one column, got shape {(rows, cols)}")
    return f, cols


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
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """FastRP node embeddings (Chen et al., CIKM 2019; Neo4j GDS variant as ``preset='gds'``).

    Args:
        graph: the adjacency A [N, N] (row i lists node i's out-neighbours; directed graphs use out-edges), as
            * a scipy.sparse matrix or array, any format (square; non-CSR formats are converted once);
            * a CSR tuple ``(indptr, indices, num_nodes)`` or ``(indptr, indices, data, num_nodes)`` (the last
              item an int): used as given, in stored order;
            * an edge list ``(src, dst)`` or ``(src, dst, weights)`` of integer arrays; ``num_nodes=`` gives N
              (default ``max index + 1``: trailing isolated nodes need it). Duplicate edges are summed.
            Edge weights must be finite and >= 0 (NaN raises). Unweighted edges weigh 1.
        dim: embedding dimension d >= 1.
        weights: ``alpha_1..alpha_q``, the weight of the i-th power V_i (q = len(weights) iterations).
        beta: normalization strength: the initial vectors are scaled by deg^beta (degree 0: scale 1; deg as chosen
            by ``degree``).
        s: sparsity of the random matrix: ``'sqrt'`` (sqrt(N), the reference code's choice), 3, or any
            number >= 1.
        normalize: V_i = rowL2(U_i) (rows of zeros stay zero) instead of U_i.
        propagate_normalized: propagate V_i (GDS) instead of the unnormalized U_i (paper).
        self_influence: w_0: adds ``w_0 * r_n / ||r_n||`` of the initial vectors r_n (GDS nodeSelfInfluence).
        features: optional node features [N, f] (dense float array or scipy.sparse). The last
            ``floor(dim * feature_ratio)`` columns of every initial vector are then the random projection of the
            node's features (sparsity ``s``, 'sqrt' meaning sqrt(f); magnitude per ``feature_scaling``; no degree
            scaling; an independent stream ``seed ^ 0x6A09E667F3BCC909``), so unseen nodes can be embedded from
            features.
        feature_ratio: share of the columns given to features, in [0, 1]; > 0 requires features.
        standardize: subtract each column's mean and divide by its population std (a zero std counts as 1;
            sklearn ``scale``). Statistics in float64 over fixed 4096-row blocks.
        min_degree: the propagation divides by max(deg, min_degree) (0 where that is 0): 0 for the paper's
            D^-1 A, 1 for GDS's 1/max(deg, 1).
        degree: the deg of ``beta`` and of the propagation's 1/max(deg, min_degree):
            * ``'weighted'``: the weighted out-degree (row sums of A; M = D^-1 A is the transition matrix);
            * ``'count'``: the number of relationships (out-edges as given: parallel edges and zero-weight
              edges counted, weights ignored; a scipy matrix's stored entries), as Neo4j GDS's FastRP.
            With ``normalize`` the propagation's scale cancels in the row normalization; deg^beta does not, on
            weighted graphs with beta != 0.
            Unweighted graphs: the same.
        feature_scaling: the magnitudes of the two blocks of the initial vectors with ``features``:
            * ``'shared'``: random and feature columns alike sqrt(s/dim) (one magnitude for every column, so the
              blocks' expected squared norms are in the ratio of their widths);
            * ``'block'``: the random columns sqrt(s/(dim - f_d)), the feature columns sqrt(s_f/f_d), with f_d the
              feature columns and s_f the features' sparsity (each block on its own preserves squared norms in
              expectation, whatever feature_ratio; Neo4j GDS's sqrt(3)/sqrt(width)).
            Without features, or with f_d = dim/2, the two differ by one factor for every initial vector, which
            ``normalize`` cancels: the same result either way then (up to float32 rounding).
        seed: int in [0, 2^64). Same seed, same bits (any thread count).
        dtype: only float32 (float64 raises ValueError).
        return_iterations: also return the q matrices V_1..V_q as one float32 array [q, N, d]. Costs q*N*d*4 bytes
            more (e.g. 4 x 10k x 512 -> 84 MB); ``(weights @ V.reshape(q, -1)).reshape(N, d)`` then re-weights them
            (standardize afterwards as needed) without recomputing. The self-influence term is not in it.
        preset: ``'paper'`` (default when None) or ``'gds'``; sets the defaults of every argument above that is
            left as None (see :data:`PRESETS`):
            * paper: weights (0, 0, 1, 6.67), beta -0.64, s 'sqrt', normalize, propagate U_i, standardize,
              min_degree 0, degree 'weighted', feature_scaling 'shared';
            * gds: weights (0, 1, 1), beta 0, s 3, normalize, propagate V_i, no standardization, min_degree 1,
              degree 'count', feature_scaling 'block' -- Neo4j GDS's FastRP (FastRP.java: iterationWeights,
              normalizationStrength, nodeSelfInfluence, propertyRatio, relationshipWeightProperty) up to the random
              numbers, which come from fastemb's generator. ``preset='gds', degree='weighted',
              feature_scaling='shared'`` is this preset's earlier behaviour, which differed from GDS on weighted
              graphs with beta != 0 and with features at feature_ratio != 0.5.
        progress: show a tqdm progress bar over the iterations (warns if tqdm is not installed).
        num_nodes: N for an edge list (checked against the other forms when given).
        symmetrize: use A + A^T (undirected graph from one direction of each edge; a self loop counts twice).

    Returns:
        float32 [N, d], or ``(embedding, iterations)`` with return_iterations. Isolated nodes get finite rows
        (zero before standardization).

    Memory: besides the graph and O(N) vectors, three [N, d] float32 buffers (previous, current, accumulator)
    for any q. On the CPU the previous/current pair is kept after the call and reused by the next call that
    fits, and the next call writes its result into this result's memory once the caller has dropped it and
    every view of it (fresh memory costs a page fault per 4 KB on first touch); :func:`release_workspace`
    frees both. Before writing anything, the memory a call needs is checked against what the machine has
    (/proc/meminfo MemAvailable + SwapFree, the memory cgroup's limit): MemoryError names both. The
    kernels run in fixed order without atomics: the result is the same bits for any thread count.
    """
    return_iterations = _check_bool("return_iterations", return_iterations)
    progress = _check_bool("progress", progress)
    num_features = feature_columns(features)  # shape only here; the values are checked in _as_features below
    plan = plan_fastrp(graph, dim, weights=weights, beta=beta, s=s, normalize=normalize,
                       propagate_normalized=propagate_normalized, self_influence=self_influence,
                       feature_ratio=feature_ratio, num_features=num_features, standardize=standardize,
                       min_degree=min_degree, degree=degree, feature_scaling=feature_scaling, seed=seed, dtype=dtype,
                       preset=preset, num_nodes=num_nodes, symmetrize=symmetrize)
    n = plan.graph.rows
    f = None
    if features is not None:
        f, _ = _as_features(features, n)
    if n == 0:
        empty = np.zeros((0, plan.dim), np.float32)
        return (empty, np.zeros((len(plan.weights), 0, plan.dim), np.float32)) if return_iterations else empty
    check_fastrp_memory(n, plan.dim, len(plan.weights), return_iterations, plan.standardize)
    return run_fastrp(NumpyOps(), plan, f, return_iterations, progress)
