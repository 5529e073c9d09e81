"""Ternary matmul over Dask: the packed weight goes to every worker once, each row chunk of ``x`` runs
the native kernel. Rows are independent (per-row activation scale, exact int32 products, or a float
product per output element), so the result is bit-identical to :func:`fastemb.ternary_matmul`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import dask
import dask.array as da

import fastemb
from fastemb.ternary import EPS, TernaryWeight

from . import _checks as ck
from ._graph import key_token


def _matmul_block(xb: np.ndarray, payload: Any, activations: str, eps: float, kwargs: dict) -> np.ndarray:
    tw, bias = payload
    return fastemb.ternary_matmul(xb, tw, activations, bias, eps, **kwargs)


def _is_future(obj: Any) -> bool:
    try:
        from distributed import Future
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Future)


def ternary_matmul(x: Any, tw: TernaryWeight, activations: str = "int8", bias: Optional[np.ndarray] = None,
                   eps: float = EPS, *, client: Any = None, **kwargs: Any) -> da.Array:
    """:func:`fastemb.ternary_matmul` on every row chunk of ``x``: ``y = x W^T (+ bias)``, float32 [m, n].

    Args:
        x: dask array ``[m, k]`` (float16/32/64; a NumPy array is one chunk), known chunk sizes. Rows split
            across column chunks are joined first (``x.rechunk({1: -1})``): the int8 path's scale is
            per whole row.
        tw: a :class:`fastemb.TernaryWeight`.
        activations, bias, eps, **kwargs: as in :func:`fastemb.ternary_matmul` (checked now on an empty
            chunk).
        client: the distributed Client to send the weight with; default: the current one, if any.
            With a client, ``(tw, bias)`` is sent to every worker once (``Client.scatter(...,
            broadcast=True)``) and the tasks refer to it; without one, it is a single task of the
            graph (dask's local schedulers share it in memory).

    Returns:
        A lazy float32 dask array ``[m, n]`` chunked like ``x``'s rows; bit-identical to one machine.
    """
    ck.reject_out(kwargs)
    if not isinstance(tw, TernaryWeight):
        raise TypeError(f"tw must be a fastemb.TernaryWeight (see fastemb.quantize_ternary), got {type(tw).__name__}")
    x = ck.as_dask("x", x)
    ck.check_ndim("x", x, (2,), "2-D [m, k]")
    ck.check_known_chunks("x", x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be float16, float32 or float64, got dtype {x.dtype}")
    if x.shape[1] != tw.k:
        raise ValueError(f"x has {x.shape[1]} features (last dim) but tw expects k={tw.k} (tw.shape={tw.shape})")
    # every other argument is checked by the function itself, on an empty chunk
    fastemb.ternary_matmul(np.zeros((0, tw.k), x.dtype), tw, activations, bias, eps, **kwargs)
    if bias is not None:
        bias = np.ascontiguousarray(bias)
    x = ck.whole_rows(x)
    client = client if client is not None else ck.current_client()
    payload: Any = (tw, bias)
    if client is not None:
        payload = client.scatter([payload], broadcast=True, hash=False)[0]  # a list: the tuple is one item
    else:
        payload = dask.delayed(payload, name="ternary-weight-" + key_token(tw.packed, tw.scale, tw.k, bias))
    return da.map_blocks(_matmul_block, x, payload, activations, float(eps), kwargs, dtype=np.float32,
                         chunks=(x.chunks[0], (tw.n,)), meta=np.empty((0, 0), np.float32))
