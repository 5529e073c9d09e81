"""Very sparse random projection over Dask: ``X @ R`` with R generated on the worker, never shipped.

R's entry (i, j) is a pure function of (seed, i, j) (a counter-based generator, see
:mod:`fastemb.graph`), so a task needs nothing but ``(seed, s, dim)`` and its column range of X:

* a row chunk holding whole rows runs :func:`fastemb.sparse_random_projection` as it is: the same
  bits as one machine (rows are independent and each sums its features in increasing order);
* with X also split across columns, the column chunk starting at feature ``c0`` needs rows
  ``c0 ..`` of R. The native entry points have no row-offset argument, so the chunk goes to the
  kernel as a CSR matrix whose column indices are shifted by ``c0`` (the kernel draws R's entries
  only for stored features: no cost for the offset). The partial products ``sqrt(s/dim) * sum`` of
  the column chunks are then added ``split_every`` at a time in increasing column order: the same
  bits for any number of workers given the chunking, and within
  ``2 gamma(n + J) sqrt(s/dim) sum_c |x_ic|`` of one machine (n features, J column chunks,
  ``gamma(m) = m u / (1 - m u)``, ``u = 2^-24``). Bit-identity there needs a kernel entry point that
  takes R's first row and continues from a partial (unscaled) accumulator.
"""
from __future__ import annotations

from typing import Any, List, Union

import numpy as np
import dask
import dask.array as da

import fastemb
from fastemb.graph import check_seed, resolve_s

from . import _checks as ck
from ._graph import key_token, tree_reduce

DEFAULT_SPLIT_EVERY = 4


def _block_project(xb: Any, dim: int, s: float, seed: int) -> np.ndarray:
    return fastemb.sparse_random_projection(xb, dim, s, seed)


def _shifted_csr(xb: Any, c0: int, n: int) -> Any:
    """The chunk as a CSR matrix [rows, n] with its features at columns c0 .. (scipy)."""
    import scipy.sparse as sp

    csr = xb.tocsr(copy=True) if ck._is_scipy_sparse(xb) else sp.csr_matrix(np.asarray(xb))  # never the chunk
    csr.sum_duplicates()
    csr.sort_indices()
    indices = csr.indices.astype(np.int64) + c0
    return sp.csr_matrix((csr.data, indices, csr.indptr), shape=(csr.shape[0], n))


def _column_partial(xb: Any, dim: int, s: float, seed: int, c0: int, n: int) -> np.ndarray:
    """sqrt(s/dim) * sum over this chunk's features c0.. of x_ic R[c, :], in increasing c."""
    if c0 == 0:
        return fastemb.sparse_random_projection(xb, dim, s, seed)
    if not ck._is_scipy_sparse(xb):
        xb = np.asarray(xb)
        if xb.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must be float32 or float64, got dtype {xb.dtype}")
        if not np.isfinite(xb).all():
            raise ValueError("X must be finite (found NaN or inf)")
    return fastemb.sparse_random_projection(_shifted_csr(xb, c0, n), dim, s, seed)


def _sum_in_order(*parts: np.ndarray) -> np.ndarray:
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def sparse_random_projection(X: Any, dim: int, s: Union[str, float] = "sqrt", seed: int = 0, *,
                             split_every: int = DEFAULT_SPLIT_EVERY) -> da.Array:
    """:func:`fastemb.sparse_random_projection` of a chunked ``X`` [N, n] -> ``X @ R`` [N, dim].

    Args:
        X: dask array whose chunks are NumPy arrays (float32/float64) or scipy.sparse matrices (e.g.
            ``da.from_array(csr, chunks=(rows, n), asarray=False)``); a NumPy array or scipy.sparse matrix
            is taken as one chunk. Known chunk sizes.
        dim: output dimension >= 1.
        s: sparsity (``'sqrt'`` means sqrt(n) of the whole X, as on one machine), or a number >= 1.
        seed: int in [0, 2^64).
        split_every: fan-in of the sum over column chunks (>= 2).

    Returns:
        A lazy float32 dask array [N, dim] chunked like X's rows. Chunked by rows only: bit-identical to
        one machine; also split across columns: see the module docstring (fixed order, stated bound).
        R is never shipped: each task generates the part of R it needs.
    """
    dim = ck.check_int("dim", dim, 1)
    seed = check_seed(seed)
    split_every = ck.check_split_every(split_every)
    X = ck.as_dask("X", X, allow_sparse=True)
    ck.check_ndim("X", X, (2,), "2-D [N, n]")
    ck.check_known_chunks("X", X)
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"X must be float32 or float64, got dtype {X.dtype}")
    n = int(X.shape[1])
    s_val = float(resolve_s(s, n))
    out_chunks = (X.chunks[0], (dim,))
    meta = np.empty((0, 0), np.float32)
    if len(X.chunks[1]) == 1:
        return da.map_blocks(_block_project, X, dim, s_val, seed, dtype=np.float32, chunks=out_chunks, meta=meta)
    token = key_token("srp", X.name, dim, s_val, seed, split_every)
    col_offs = ck.row_offsets([int(c) for c in X.chunks[1]])
    blocks = X.to_delayed()
    rows: List[da.Array] = []
    for i, nr in enumerate(X.chunks[0]):
        nr = int(nr)
        parts = [dask.delayed(_column_partial, pure=True)(blocks[i, j], dim, s_val, seed, int(col_offs[j]), n,
                                                         dask_key_name=f"srp-part-{token}-{i}-{j}")
                 for j in range(X.numblocks[1]) if X.chunks[1][j] > 0]
        if not parts or nr == 0:
            rows.append(da.zeros((nr, dim), np.float32, chunks=(nr, dim)))
            continue
        total = tree_reduce(parts, _sum_in_order, split_every, f"srp-sum-{i}", token)
        rows.append(da.from_delayed(total, shape=(nr, dim), dtype=np.float32, meta=meta))
    return da.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
