"""Argument checks shared by the ``fastemb.dask`` functions.

Everything here runs on the client while the task graph is built, from metadata only (shape,
dtype, chunks): nothing is computed. Value checks (NaN, label ranges) run inside the tasks with the
single-machine functions' own checks, and name the argument and the rows of the chunk.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import dask.array as da

from fastemb.graph import _check_int

Chunks = Tuple[Tuple[float, ...], ...]


check_int = _check_int  # an int (not a bool), optionally >= lo: the one-machine functions' check


def reject_out(kwargs: dict) -> None:
    """``out=`` of the one-machine functions has no meaning here: the result is a lazy dask array."""
    if "out" in kwargs:
        raise TypeError("out= is not supported by fastemb.dask: the result is a lazy dask array (write it where it "
                        "should go with e.g. dask.array.store or .to_zarr)")


def check_split_every(split_every: Any) -> int:
    """The fan-in of the tree reductions (>= 2)."""
    return check_int("split_every", split_every, 2)


def _is_scipy_sparse(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith("scipy.sparse") and hasattr(obj, "tocsr")


def as_dask(name: str, a: Any, allow_sparse: bool = False) -> da.Array:
    """A dask array as given; a NumPy array (or a scipy.sparse matrix when ``allow_sparse``) becomes a
    dask array of one chunk. Anything else raises TypeError naming the argument."""
    if isinstance(a, da.Array):
        return a
    if isinstance(a, np.ndarray):
        return da.from_array(a, chunks=a.shape or (), name=False)
    if allow_sparse and _is_scipy_sparse(a):
        a = a.tocsr()
        return da.from_array(a, chunks=a.shape, asarray=False, name=False)
    kinds = "a dask.array.Array or a numpy.ndarray" + (" (or a scipy.sparse matrix)" if allow_sparse else "")
    raise TypeError(f"{name} must be {kinds}, got {type(a).__name__}")


def check_known_chunks(name: str, a: da.Array) -> None:
    """Chunk sizes must be known: the row offsets of every chunk (global ids, label rows) come from them."""
    for axis, sizes in enumerate(a.chunks):
        if any(isinstance(s, float) and math.isnan(s) for s in sizes):
            raise ValueError(f"{name} has unknown chunk sizes (nan) along axis {axis}: call "
                             f"{name}.compute_chunk_sizes() (or build it with known chunk sizes, e.g. "
                             "da.from_array / da.from_zarr) before passing it")


def check_ndim(name: str, a: da.Array, ndims: Sequence[int], what: str) -> None:
    if a.ndim not in ndims:
        raise ValueError(f"{name} must be {what}, got shape {a.shape}")


def whole_rows(a: da.Array) -> da.Array:
    """``a`` with one chunk along every axis but the first (rows split across chunks are joined: a
    rechunk, i.e. a shuffle of those columns; arrays already chunked by rows are returned as they are)."""
    if all(len(c) == 1 for c in a.chunks[1:]):
        return a
    return a.rechunk({axis: -1 for axis in range(1, a.ndim)})


def check_unsplit(name: str, a: da.Array, axis: int, what: str, fix: str) -> None:
    """Raises when ``a`` is chunked along ``axis`` (e.g. codes split across their bytes axis)."""
    if len(a.chunks[axis]) != 1:
        raise ValueError(f"{name} is chunked across its {what} (axis {axis}, chunks {a.chunks[axis]}): each row must "
                         f"lie in one chunk; rechunk with {name}.rechunk({fix})")


def check_aligned(name: str, a: da.Array, ref_name: str, ref: da.Array) -> None:
    """``a`` [n, ...] must be chunked along its rows exactly like ``ref``."""
    if a.shape[0] != ref.shape[0]:
        raise ValueError(f"{name} has {a.shape[0]} rows but {ref_name} has {ref.shape[0]}")
    if tuple(a.chunks[0]) != tuple(ref.chunks[0]):
        raise ValueError(f"{name} and {ref_name} are chunked differently along their rows ({name}: {a.chunks[0]}, "
                         f"{ref_name}: {ref.chunks[0]}): their chunks must line up row for row; use "
                         f"{name}.rechunk({{0: {ref_name}.chunks[0]}})")


def aligned_vector(name: str, v: Any, ref_name: str, ref: da.Array) -> da.Array:
    """A per-row vector (labels, weights, scales) as a dask array chunked like ``ref``'s rows: a NumPy
    array is split to match; a dask array must already match (a mismatch raises, naming ``name``)."""
    if isinstance(v, da.Array):
        check_known_chunks(name, v)
        if v.ndim != 1:
            raise ValueError(f"{name} must be 1-D [{ref.shape[0]}], got shape {v.shape}")
        check_aligned(name, v, ref_name, ref)
        return v
    if not isinstance(v, np.ndarray):
        v = np.asarray(v)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D [{ref.shape[0]}], got shape {v.shape}")
    if v.shape[0] != ref.shape[0]:
        raise ValueError(f"{name} has {v.shape[0]} entries but {ref_name} has {ref.shape[0]} rows")
    return da.from_array(v, chunks=(ref.chunks[0],), name=False)


def row_offsets(sizes: Sequence[int]) -> np.ndarray:
    """Global row offset of each chunk: [0, s0, s0 + s1, ...] (int64, len(sizes) + 1)."""
    out = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(np.asarray(sizes, dtype=np.int64), out=out[1:])
    return out


def current_client() -> Optional[Any]:
    """The distributed Client in use (``distributed.default_client()``), or None: with no client
    (or without distributed installed) the graphs run on dask's local schedulers."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is part of the extra
        return None
    try:
        return default_client()
    except ValueError:
        return None


def worker_addresses(client: Any) -> list:
    """The addresses of the client's workers, sorted (``Client.nthreads``: all of them, in every
    distributed version the extra allows)."""
    return sorted(client.nthreads())
