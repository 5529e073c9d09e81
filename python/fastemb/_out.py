"""The ``out=`` argument of the functions that return large arrays (``binarize``, ``centroid_aggregate``,
``ternary_matmul``, ``sparse_random_projection``, ``fastrp``).

A caller who computes the same shapes again and again (a serving loop, an epoch over a graph) passes the
buffer the result goes to, and fastemb allocates nothing of that size. fastemb does not reuse a result's
memory behind the caller's back: whether a result is still referenced is not something a library can know
reliably (``sys.getrefcount`` is a CPython detail that changes between versions and builds).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import numpy as np


def check_out(out: Any, shape: Tuple[int, ...], dtype: Any, inputs: Mapping[str, Any]) -> np.ndarray:
    """``out`` if it can take a result of ``shape`` / ``dtype``: a writeable, C-contiguous, aligned NumPy array of
    exactly that dtype and shape, sharing no memory with any of ``inputs`` (name -> array, or a sequence of
    arrays, or None). Raises TypeError / ValueError naming ``out`` otherwise."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if type(out) is not np.ndarray:  # a subclass (np.matrix, a masked array) would be returned as the result
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype} (the result's), got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape} (the result's), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError(f"out must start at a multiple of its item size ({dtype.itemsize} bytes)")
    for name, value in inputs.items():
        arrays = value if isinstance(value, (tuple, list)) else (value,)
        for a in arrays:
            if isinstance(a, np.ndarray) and np.may_share_memory(out, a):
                raise ValueError(f"out overlaps the input {name}: the result would overwrite it while it is read; "
                                 "pass a separate buffer")
    return out


def result_buffer(out: Optional[Any], shape: Tuple[int, ...], dtype: Any, inputs: Mapping[str, Any]) -> np.ndarray:
    """The array a result is written to: the caller's ``out`` (checked with :func:`check_out`), or a new one."""
    if out is not None:
        return check_out(out, shape, dtype, inputs)
    return np.empty(shape, dtype)
