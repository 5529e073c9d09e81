"""Shared setup of the benchmark suites: thread counts, scale, and a once-per-session measure of
the machine's memory bandwidth, written into the pytest-benchmark JSON's ``machine_info`` so that
``bench/report.py`` can turn each benchmark's bytes moved into GB/s and a fraction of what the
machine can do.

Environment:
    FASTEMB_BENCH_SCALE    multiplies N and K of every case (default 1.0; 0.01 = quick smoke run).
    FASTEMB_BENCH_THREADS  threads for torch and fastemb (default 2).
    FASTEMB_BENCH_BW_MB    size of the bandwidth probe buffer in MB (default 512; keep it far
                           above the last-level cache).
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np
import pytest

import fastemb

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
BW_MB = int(os.environ.get("FASTEMB_BENCH_BW_MB", "512"))

try:
    import torch
except ImportError:  # the torch peers are skipped; fastemb alone still runs
    torch = None

if torch is not None:
    torch.set_num_threads(THREADS)
fastemb.set_num_threads(THREADS)

_BW_KEY = pytest.StashKey[dict]()


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_bandwidth(mb: int = BW_MB, repeats: int = 10) -> dict:
    """Best-of-``repeats`` read, write and copy bandwidth (GB/s, 1 GB = 1e9 B) over ``mb`` MB
    float32 buffers, with the suite's thread count. The best (not the median) estimates what the
    machine can do; the benchmarks themselves report medians.

    read:  torch ``buf.sum()`` (a flat reduction, vectorized and threaded: bandwidth-bound);
           NumPy's single-threaded pairwise ``np.sum`` is recorded beside it for reference.
    write: ``buf.fill_(1)`` into an already touched buffer (no page faults).
    copy:  ``dst.copy_(src)``, counted as read + write (2 x size).
    """
    n = mb * (1 << 20) // 4
    nbytes = n * 4
    a = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    b = np.empty_like(a)
    b.fill(0.0)  # touch every page before timing
    out = {"buffer_bytes": nbytes, "repeats": repeats, "threads": THREADS}
    out["read_numpy_gbs"] = nbytes / _best_seconds(lambda: a.sum(), repeats) / 1e9
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["read_gbs"] = nbytes / _best_seconds(lambda: ta.sum(), repeats) / 1e9
        out["write_gbs"] = nbytes / _best_seconds(lambda: tb.fill_(1.0), repeats) / 1e9
        out["copy_gbs"] = 2 * nbytes / _best_seconds(lambda: tb.copy_(ta), repeats) / 1e9
        out["method"] = "torch"
    else:
        out["read_gbs"] = out["read_numpy_gbs"]
        out["write_gbs"] = nbytes / _best_seconds(lambda: b.fill(1.0), repeats) / 1e9
        out["copy_gbs"] = 2 * nbytes / _best_seconds(lambda: np.copyto(b, a), repeats) / 1e9
        out["method"] = "numpy"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _thp() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _bandwidth(config) -> dict:
    bw = config.stash.get(_BW_KEY, None)
    if bw is None:
        bw = measure_bandwidth()
        config.stash[_BW_KEY] = bw
    return bw


@pytest.fixture(scope="session", autouse=True)
def memory_bandwidth(request):
    """Measured once, before the first benchmark, while the machine is otherwise as idle as the
    suite can make it."""
    bw = dict(_bandwidth(request.config))
    bw["loadavg_before"] = os.getloadavg()
    request.config.stash[_BW_KEY] = bw
    return bw


@pytest.fixture(scope="session")
def bench_scale() -> float:
    return SCALE


def pytest_benchmark_update_machine_info(config, machine_info):
    info = fastemb.info()
    bw = dict(_bandwidth(config))
    bw["loadavg_after"] = os.getloadavg()
    # Measured again at the end: on a shared machine either measure can be disturbed. The
    # report uses the best of the two (what the machine can do), and both are kept.
    end = measure_bandwidth(repeats=5)
    for kind in ("read", "write", "copy"):
        bw[f"{kind}_gbs_start"] = bw[f"{kind}_gbs"]
        bw[f"{kind}_gbs_end"] = end[f"{kind}_gbs"]
        bw[f"{kind}_gbs"] = max(bw[f"{kind}_gbs"], end[f"{kind}_gbs"])
    machine_info["fastemb_bench"] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "transparent_hugepage": _thp(),
        "fastemb_version": info["version"],
        "fastemb_backend": info["backend"],
        "fastemb_isa": info["isa"],
        "fastemb_supported_isas": info["supported_isas"],
        "fastemb_forced_isa": info.get("forced_isa"),
        "fastemb_kernel_isas": info.get("kernel_isas"),
        "fastemb_threads": info["num_threads"],
        "torch_version": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "numpy_version": np.__version__,
        "scale": SCALE,
        "bandwidth": bw,
    }


def pytest_report_header(config):
    info = fastemb.info()
    tv = None if torch is None else f"{torch.__version__} threads={torch.get_num_threads()}"
    return (f"fastemb bench: scale={SCALE} fastemb isa={info['isa']} threads={info['num_threads']} "
            f"torch={tv} cpu={_cpu_model()}")
