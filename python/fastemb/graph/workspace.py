"""The CPU FastRP scratch workspace and the memory check before the N x d buffers.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import _backend
from .._memory import available_memory, format_bytes


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


def release_workspace() -> int:
    """Frees what CPU :func:`fastrp` keeps between calls: its two float32 [N, d] scratch buffers, reused by later
    runs that fit. Returns the bytes released. (Results are the caller's: pass ``out=`` to reuse their memory.)"""
    with _workspace_lock:
        freed = sum(b.nbytes for b in _workspace)
        _workspace.clear()
    return freed


# ---- memory check before the N x d buffers (why: fastemb._memory) -----------------------------------------

def _reusable_bytes(count: int) -> int:
    """Bytes of the next call's [N, d] buffers (``count`` floats each) that the workspace already holds."""
    need = count * 4
    with _workspace_lock:
        return sum(need for b in _workspace[:_WORKSPACE_BUFFERS] if b.size >= count)


def check_fastrp_memory(n: int, d: int, q: int, return_iterations: bool, standardize: bool,
                        out_given: bool = False) -> None:
    """Raises MemoryError when a CPU :func:`fastrp` on N = ``n`` nodes, ``d`` columns would write more memory
    than the machine can give (see :func:`available_memory`); allocates nothing. ``out_given``: the result goes
    to the caller's buffer."""
    count = n * d
    # prev, cur, the result unless the caller gave it (+ the q iterations)
    buffers = (2 if out_given else 3) + (q if return_iterations else 0)
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
