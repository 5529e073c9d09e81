"""Value checks of the torch ops (labels in range, finite inputs, ...) without host syncs on CUDA.

A value check needs the data, so on CUDA reading its result on the host would synchronize the stream
on every call (and breaks CUDA-graph capture). The mode, for CUDA tensors only:

* ``"async"`` (default): the checks run on the device and fail through a device-side assert
  (``torch._assert_async``), like torch's own indexing ops (``index_add_``, ``scatter_reduce``,
  ``embedding``) do. No host sync. A failure surfaces at a later synchronization as
  ``RuntimeError: CUDA error: device-side assert triggered`` and leaves the CUDA context unusable,
  so use ``"sync"`` while debugging. fastemb's CUDA kernels are memory-safe on any value (out-of-range
  labels are skipped, not read past), so nothing is read out of bounds before the assert fires.
* ``"sync"``: all checks of one call are read with a single host copy and raise the same
  ``ValueError`` naming the argument as on the CPU.
* ``"off"``: no value checks on CUDA (kernels stay memory-safe; results for invalid values, e.g.
  out-of-range labels, are unspecified: such rows are dropped).

Set with ``fastemb.torch.set_cuda_checks(mode)`` or the environment variable ``FASTEMB_CUDA_CHECKS``.
While a CUDA graph is being captured, ``"sync"`` acts as ``"async"`` (no host reads are possible).
On CPU every check raises ``ValueError`` at once (reading a CPU tensor costs no sync).
"""
from __future__ import annotations

import os
from typing import Callable, List, Sequence, Tuple, Union

import torch
from torch import Tensor

CUDA_CHECK_MODES = ("async", "sync", "off")

Message = Union[str, Callable[[], str]]


def _mode_from_env() -> str:
    mode = os.environ.get("FASTEMB_CUDA_CHECKS", "async").strip().lower() or "async"
    if mode not in CUDA_CHECK_MODES:
        raise ValueError(f"FASTEMB_CUDA_CHECKS must be one of {', '.join(CUDA_CHECK_MODES)}, got {mode!r}")
    return mode


_mode = _mode_from_env()


def set_cuda_checks(mode: str) -> str:
    """Sets how the torch ops check values of CUDA tensors (``"async"``, ``"sync"`` or ``"off"``; see
    this module's docstring); returns the previous mode."""
    global _mode
    if mode not in CUDA_CHECK_MODES:
        raise ValueError(f"mode must be one of {', '.join(CUDA_CHECK_MODES)}, got {mode!r}")
    previous, _mode = _mode, mode
    return previous


def get_cuda_checks() -> str:
    """The current CUDA value-check mode."""
    return _mode


def require(device: torch.device, checks: Sequence[Tuple[Tensor, Message]]) -> None:
    """Each check is (0-d bool tensor on ``device`` that must be true, the ValueError message or a callable
    that builds it; called only on failure, it may read tensors)."""
    if not checks:
        return
    if device.type != "cuda":
        for ok, msg in checks:
            if not bool(ok):
                raise ValueError(msg() if callable(msg) else msg)
        return
    mode = _mode
    if mode == "off":
        return
    conds: List[Tensor] = [ok.reshape(()) for ok, _ in checks]
    if mode == "sync" and not torch.cuda.is_current_stream_capturing():
        flags = torch.stack(conds).cpu()  # the one host read of this call
        for i, (_, msg) in enumerate(checks):
            if not bool(flags[i]):
                raise ValueError(msg() if callable(msg) else msg)
        return
    torch._assert_async(torch.stack(conds).all() if len(conds) > 1 else conds[0])
