"""Very sparse random projection ``X @ R`` with ``R`` generated on the fly.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .. import _backend
from .._out import result_buffer
from ._checks import _check_int, check_seed, resolve_s
from .csr import Csr, _is_scipy_sparse
from .ops import NumpyOps, random_spec


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


def sparse_random_projection(X: Any, dim: int, s: Union[str, float] = "sqrt", seed: int = 0, *,
                             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Projects ``X`` [N, n] to ``X @ R`` [N, dim] with a very sparse random ``R`` [n, dim].

    Args:
        X: dense float32/float64 array or a scipy.sparse matrix/array (any format; non-CSR formats are
            converted once). float64 is rounded to float32 first (one copy); values must be finite.
        dim: output dimension d >= 1.
        s: sparsity: each entry of R is nonzero with probability 1/s, with magnitude sqrt(s/dim) and a random
            sign. ``'sqrt'`` (default) means sqrt(n) (sklearn ``SparseRandomProjection(density='auto')``,
            Li et al.'s "very sparse" choice); ``3`` is Achlioptas'. Must be >= 1.
        seed: int in [0, 2^64).
        out: optional float32 C-contiguous [N, dim] array the result is written to (and returned), sharing no
            memory with ``X``; default: a new array.

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
    inputs = {"X": (x.indptr, x.indices, x.data) if isinstance(x, Csr) else (X, x)}
    out = result_buffer(out, (rows, dim), np.float32, inputs)
    if rows == 0:
        return out
    if n_in == 0:
        out.fill(0)
        return out
    _project(NumpyOps(), (seed, threshold, value, dim), x, out)
    return out
