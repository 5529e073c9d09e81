"""Argument checks shared by the graph family (ints, reals, bools, seeds, sparsity, dtypes).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np



_U64 = 1 << 64
_INT32_MAX = np.iinfo(np.int32).max


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
