"""Centroid aggregation: group means / sums / max / min of embeddings by label.

See ``centroid_aggregate``. The torch ops live in :mod:`fastemb.torch`.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple, Union

import numpy as np

from . import _backend
from ._out import check_out
from ._reference import centroid as _ref

REDUCE_CODES = {"sum": 0, "mean": 1, "amax": 2, "amin": 3}
# torch_geometric.utils.scatter / torch_scatter names, accepted as they are (drop-in)
REDUCE_ALIASES = {"max": "amax", "min": "amin"}


def canonical_reduce(reduce: Any) -> Any:
    """``'max'``/``'min'`` (PyG's names) -> ``'amax'``/``'amin'``; anything else unchanged (check_modes judges it)."""
    return REDUCE_ALIASES.get(reduce, reduce) if isinstance(reduce, str) else reduce
NORMALIZE_CODES = {"none": 0, "pre": 1, "post": 2, "both": 3}
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def check_modes(reduce: str, normalize: str, eps: float, leave_one_out: bool, has_weights: bool) -> None:
    """Checks the mode arguments shared by the NumPy API and the torch ops."""
    if not isinstance(reduce, str) or reduce not in REDUCE_CODES:
        raise ValueError(f"reduce must be one of {sorted(REDUCE_CODES)} (or the aliases 'max'/'min'), "
                         f"got {reduce!r}")
    if not isinstance(normalize, str) or normalize not in NORMALIZE_CODES:
        raise ValueError(f"normalize must be one of {sorted(NORMALIZE_CODES)}, got {normalize!r}")
    if (not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not math.isfinite(float(eps))
            or float(eps) <= 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if reduce in ("amax", "amin"):
        if has_weights:
            raise ValueError("weights: not supported with reduce='amax'/'amin'")
        if leave_one_out:
            raise ValueError("leave_one_out: supported with reduce='sum' or 'mean' only")


def _as_labels(index: Any, n: int) -> np.ndarray:
    if not isinstance(index, np.ndarray):
        index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"index must be an integer array, got dtype {index.dtype}")
    if index.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {index.shape}")
    if index.shape[0] != n:
        raise ValueError(f"index has {index.shape[0]} labels but x has {n} rows")
    if index.dtype == np.uint64 and index.size and int(index.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"index: label {int(index.max())} is out of range (num_groups is an int64)")
    if index.dtype not in (np.int32, np.int64):
        index = index.astype(np.int64)  # small copy: N labels
    return _backend.native_array(index)


def _as_offsets(offsets: Any, n: int) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"offsets must be an integer array, got dtype {offsets.dtype}")
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with at least one entry, got shape {offsets.shape}")
    offsets = _backend.native_array(offsets, np.int64)
    if offsets[0] != 0:
        raise ValueError(f"offsets must start at 0, got {offsets[0]}")
    if offsets[-1] != n:
        raise ValueError(f"offsets must end at the number of rows of x ({n}), got {offsets[-1]}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    return offsets


def _check_label_range(labels: np.ndarray, k: int) -> None:
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0:
            raise ValueError(f"index: negative label {lo}")
        if hi >= k:
            raise ValueError(f"index: label {hi} is out of range [0, num_groups={k})")


def centroid_aggregate(
    x: np.ndarray,
    index: Optional[np.ndarray] = None,
    *,
    offsets: Optional[np.ndarray] = None,
    num_groups: Optional[int] = None,
    weights: Optional[np.ndarray] = None,
    reduce: str = "mean",
    normalize: str = "none",
    eps: float = 1e-12,
    leave_one_out: bool = False,
    return_counts: bool = False,
    out: Optional[np.ndarray] = None,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Aggregates the rows of ``x`` by group.

    Args:
        x: ``[N, D]`` float16, float32 or float64 array (float16 accumulates in float32, float32
            in float32, float64 in float64). A non-contiguous ``x`` is copied once.
        index: ``[N]`` integer group label of each row, any order, ``0 <= label < num_groups``.
        offsets: instead of ``index``, a CSR pointer ``[K + 1]`` (non-decreasing, from 0 to N):
            rows ``offsets[g]:offsets[g+1]`` form group ``g``.
        num_groups: K. Defaults to ``index.max() + 1`` (or ``len(offsets) - 1``).
        weights: optional ``[N]`` finite row weights (sum/mean only): mean = sum(w x) / sum(w).
        reduce: ``'mean'`` | ``'sum'`` | ``'amax'`` | ``'amin'`` (``'max'``/``'min'``, PyG's names, are aliases).
        normalize: ``'none'``; ``'pre'`` L2-normalizes rows before reducing; ``'post'``
            normalizes each centroid as ``c / max(||c||, eps)``; ``'both'``.
        eps: floor of the norms used by ``normalize``.
        leave_one_out: return ``[N, D]``: for each row, its group's centroid without itself
            (``(S_y - w_i x_i) / (W_y - w_i)`` for mean); singletons give 0. sum/mean only.
        return_counts: also return the ``[K]`` int64 row count of each group.
        out: optional C-contiguous array of the result's dtype and shape (``[K, D]``, or ``[N, D]`` with
            ``leave_one_out``) the result is written to and returned, sharing no memory with ``x``;
            default: a new array.

    Returns:
        ``[K, D]`` (or ``[N, D]`` with ``leave_one_out``) array of ``x``'s dtype, and the counts
        when ``return_counts``. Empty groups give 0 for every reduction, never NaN or inf. NaN in
        ``x`` propagates to its group's result.

    Rows of a group are reduced in row order, so the result does not depend on the label order,
    the thread count or the CPU's ISA.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray (use fastemb.torch for tensors), got {type(x).__name__}")
    if x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))  # non-native byte order: one converted copy
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, float32 or float64, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {x.shape}")
    reduce = canonical_reduce(reduce)
    check_modes(reduce, normalize, eps, leave_one_out, weights is not None)
    n, d = x.shape
    if (index is None) == (offsets is None):
        raise ValueError("give exactly one of index (labels) or offsets")
    if num_groups is not None and (isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer))):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    labels = off = None
    if index is not None:
        labels = _as_labels(index, n)
        if num_groups is None:
            if n and int(labels.min()) < 0:
                raise ValueError(f"index: negative label {int(labels.min())}")
            num_groups = int(labels.max()) + 1 if n else 0
    else:
        off = _as_offsets(offsets, n)
        if num_groups is not None and int(num_groups) != len(off) - 1:
            raise ValueError(f"num_groups={num_groups} disagrees with len(offsets) - 1 = {len(off) - 1}")
        num_groups = len(off) - 1
    k = int(num_groups)
    if k < 0:
        raise ValueError(f"num_groups must be >= 0, got {k}")
    acc = _ref.acc_dtype(x.dtype)
    w = None
    if weights is not None:
        w = np.asarray(weights)
        if w.dtype.kind not in "fiu":
            raise TypeError(f"weights must be a real array, got dtype {w.dtype}")
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {w.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            w = _backend.native_array(w, acc)  # values past the dtype's range become inf
        if not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite (found NaN or inf)")
    if out is not None:
        check_out(out, (n if leave_one_out else k, d), x.dtype, {"x": x, "index": labels, "offsets": off, "weights": w})
    x = _backend.native_array(x)

    C = _backend.native()
    if C is None:
        if labels is not None:
            _check_label_range(labels, k)
        result, counts, *_ = _ref.forward(x, labels, off, k, w, reduce, normalize, eps, leave_one_out)
        if out is not None:
            out[...] = result
            result = out
    else:
        result, counts, *_ = native_forward(C, x, labels, off, k, w, reduce, normalize, eps, leave_one_out, out=out)
    return (result, counts) if return_counts else result


def native_forward(C, x, labels, offsets, k, weights, reduce, normalize, eps, leave_one_out, isa: str = "",
                   out: Optional[np.ndarray] = None):
    """Runs the C++ forward on validated NumPy inputs (``out``: a checked result buffer, or None); returns
    (out, counts, wsum, arg, out_norm)."""
    n, d = x.shape
    acc = _ref.acc_dtype(x.dtype)
    if out is None:
        out = np.empty((n if leave_one_out else k, d), dtype=x.dtype)
    counts = np.empty(k, dtype=np.int64)
    wsum = np.empty(k, dtype=acc)
    arg = np.empty((k, d), dtype=np.int64) if reduce in ("amax", "amin") else None
    out_norm = np.empty(out.shape[0], dtype=acc) if normalize in ("post", "both") else None
    A = _backend.address
    C.centroid_forward(
        A(x), _backend.DTYPE_CODES[x.dtype.name], n, d,
        A(labels), labels is not None and labels.dtype == np.int32, A(offsets), k, A(weights),
        REDUCE_CODES[reduce], NORMALIZE_CODES[normalize], float(eps), bool(leave_one_out),
        A(out), A(counts), A(wsum), A(arg), A(out_norm), isa,
    )
    return out, counts, wsum, arg, out_norm


def native_backward(C, grad_out, x, labels, offsets, k, weights, reduce, normalize, eps, leave_one_out,
                    out, counts, wsum, arg, out_norm, need_grad_x=True, need_grad_w=False, isa: str = ""):
    """Runs the C++ backward on NumPy inputs; returns (grad_x, grad_w)."""
    n, d = x.shape
    grad_x = np.empty_like(x) if need_grad_x else None
    grad_w = np.empty(n, dtype=_ref.acc_dtype(x.dtype)) if need_grad_w else None
    grad_out = _backend.native_array(grad_out)  # keep a reference: the kernel reads it by address
    A = _backend.address
    C.centroid_backward(
        A(x), _backend.DTYPE_CODES[x.dtype.name], n, d,
        A(labels), labels is not None and labels.dtype == np.int32, A(offsets), k, A(weights),
        REDUCE_CODES[reduce], NORMALIZE_CODES[normalize], float(eps), bool(leave_one_out),
        A(grad_out), A(out), A(counts), A(wsum), A(arg), A(out_norm),
        A(grad_x), A(grad_w), isa,
    )
    return grad_x, grad_w
