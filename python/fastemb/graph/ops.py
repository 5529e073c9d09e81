"""The graph kernels: native when the build has them, else the NumPy reference (the same bits).

:class:`NumpyOps` is the CPU implementation of the operations FastRP is made of; fastemb.torch and
fastemb.dask provide theirs with the same method names.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .. import _backend
from .._reference import graph as _ref
from .csr import Csr
from .workspace import _take_scratch, _give_scratch


def _native(name: str):
    C = _backend.native()
    return getattr(C, name, None) if C is not None else None


_A = _backend.address


def _inputs(*arrays: Optional[np.ndarray]) -> Tuple[Optional[np.ndarray], ...]:
    """The arrays a kernel only reads, aligned for it (copies of misaligned ones, e.g. deserialized by
    ``distributed``). Buffers a kernel writes are fastemb's own, allocated aligned; ``_A`` refuses others."""
    return tuple(None if a is None else _backend.native_array(a) for a in arrays)


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
        """A new, uninitialized buffer for a result (64-byte aligned)."""
        return _backend.aligned_empty(shape)

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


# ---- node order (fastemb.reorder_graph): native when the build has it, else None / NumPy ---------------------

def rcm_order_native(a: Csr) -> Optional[np.ndarray]:
    """Reverse Cuthill-McKee order of square ``a`` (int64 [n]), or None without the native module."""
    fn = _native("graph_rcm_order")
    if fn is None:
        return None
    a = a.for_native()
    order = np.empty(a.rows, np.int64)
    fn(_A(a.indptr), _A(a.indices), a.indices_int32, a.rows, _A(order))
    return order


def permute_csr_native(a: Csr, order: np.ndarray, inverse: np.ndarray, index_dtype) -> Optional[Csr]:
    """``a`` with node ``order[c]`` renamed ``c`` (rows in stored order), or None without the native module."""
    fn = _native("graph_permute_csr")
    if fn is None:
        return None
    a = a.for_native()
    order, inverse = _inputs(order, inverse)
    nnz = int(a.indptr[-1])
    indptr = np.empty(a.rows + 1, np.int64)
    indices = np.empty(nnz, index_dtype)
    data = None if a.data is None else np.empty(nnz, np.float32)
    fn(_A(a.indptr), _A(a.indices), a.indices_int32, _A(a.data), a.rows, _A(order), _A(inverse), _A(indptr),
       _A(indices), indices.dtype == np.int32, _A(data))
    return Csr(indptr, indices, data, a.rows, a.cols, None if a.counts is None else a.counts[order])


def gather_rows(src: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = src[idx[i]]`` for float32 rows (2-D, C-contiguous, not overlapping; ids in range)."""
    for name, a in (("src", src), ("out", out)):
        if a.dtype != np.float32 or a.ndim != 2 or not a.flags.c_contiguous:
            raise ValueError(f"gather_rows: {name} must be a C-contiguous 2-D float32 array")
    if idx.ndim != 1 or out.shape != (idx.shape[0], src.shape[1]):
        raise ValueError(f"gather_rows: out must have shape ({idx.shape[0]}, {src.shape[1]}), got {out.shape}")
    fn = _native("graph_gather_rows")
    if fn is None:
        np.take(src, idx, axis=0, out=out, mode="clip")  # (valid ids; mode="raise" would buffer out)
        return
    (idx,) = _inputs(idx.astype(np.int64, copy=False))
    fn(_A(src), src.shape[0], src.shape[1], _A(idx), idx.shape[0], _A(out))
