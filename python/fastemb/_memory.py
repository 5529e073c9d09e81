"""What the machine can still give a new allocation, and byte counts for messages.

Pages of ``np.empty`` are only committed on first write: with Linux's overcommit, asking for far more than the
machine has succeeds and the process is then killed by the OOM killer part-way through the writes. Callers that
write large buffers (``fastemb.fastrp``) compare their need with :func:`available_memory` first.
"""
from __future__ import annotations

import os
from typing import Optional


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 "max" (no limit) -> None


def _cgroup_available() -> Optional[int]:
    """Bytes left under this process's memory cgroup limit (v2 memory.max, v1 memory.limit_in_bytes), page
    cache counted as free (the kernel reclaims it before an OOM kill); None without a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # v2
            root, files = "/sys/fs/cgroup", ("memory.max", "memory.current", "file")
        elif "memory" in parts[1].split(","):  # v1
            root, files = "/sys/fs/cgroup/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache")
        else:
            continue
        for d in (root + parts[2].rstrip("/"), root):  # the mount root when the cgroup namespace hides the path
            limit, usage = _read_int(os.path.join(d, files[0])), _read_int(os.path.join(d, files[1]))
            if limit is None or usage is None:
                continue
            if limit >= 1 << 60:  # v1 "no limit" (a page-rounded 2^63 - 1)
                return None
            cache = 0
            try:
                with open(os.path.join(d, "memory.stat")) as f:
                    for row in f:
                        key, _, value = row.partition(" ")
                        if key == files[2]:
                            cache = int(value)
                            break
            except (OSError, ValueError):
                pass
            return max(0, limit - max(0, usage - cache))
    return None


def available_memory() -> Optional[int]:
    """Bytes a new allocation can still be given before the process risks the OOM killer: Linux
    ``MemAvailable + SwapFree`` from /proc/meminfo, capped by the memory cgroup's limit when there is one;
    elsewhere the physical memory size from ``os.sysconf`` (free pages alone would leave out the file cache the
    OS gives back, so the total is the lenient bound); None when nothing is known (then no check is made)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            info = {}
            for row in f:
                key, _, rest = row.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    info[key] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
        if "MemAvailable" in info:
            avail = info["MemAvailable"] + info.get("SwapFree", 0)
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = None
        if avail is not None and avail <= 0:
            avail = None
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def format_bytes(n: int) -> str:
    """``n`` bytes as a short decimal figure: 40.0 GB, 8.0 KB, 12 B."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
