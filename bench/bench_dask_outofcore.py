"""Out-of-core ``fastemb.dask.sdc_topk`` on one machine (issue 14, "Out-of-core on one machine").

A corpus of 1024-bit codes bigger than this machine's memory (default 250M rows x 128 bytes = 32 GB
on a 23 GB box) is written as one ``.npy`` file in a temporary folder, searched by
``fastemb.dask.sdc_topk`` on a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
and checked against a chunk-by-chunk single-process scan. The file is always removed afterwards.

    python bench/bench_dask_outofcore.py                  # full size: writes 32 GB, reads it ~3 times
    FASTEMB_BENCH_SCALE=0.002 python bench/bench_dask_outofcore.py   # smoke run, a few seconds
    python bench/bench_dask_outofcore.py --scale 0.002 --json out.json
    python -m pytest bench/bench_dask_outofcore.py -s     # the same run as one test (scale from env)

Run the full size under ``flock /tmp/bench.lock nice ...`` on a shared machine. It is not part of
the default tests (``testpaths = ["tests"]``).

How the corpus reaches the workers (``--loader``):

* ``pread`` (default): :func:`fastemb.dask.from_npy`, ``da.from_array`` over its ``NpyRows``, a small picklable array-like that
  holds only the file name and, per task, reads its row range with ``readinto`` into a fresh
  NumPy buffer. A worker holds the chunks it is working on and nothing else, so its RSS is bounded
  by ~(chunk bytes x chunks in flight) + the interpreter.
* ``mmap``: the same, but each task returns a slice of ``np.load(path, mmap_mode="r")`` opened in
  that task; the kernel streams the mapped pages. Pages the kernel touched count toward the
  worker's RSS (as RssFile) until the task's chunk is released and the mapping closed.

``da.from_array(np.load(path, mmap_mode="r"), chunks=...)`` itself does **not** work on a
distributed cluster: ``np.memmap`` is not a plain ``np.ndarray`` for dask, so the whole memmap
becomes one graph key and distributed serializes its *contents* to ship it (dask warns "Large
object of size ... detected in task graph"): 32 GB pickled through the client. Hence the wrapper.

Peak RSS: every worker runs a sampler thread (a ``WorkerPlugin``) reading ``/proc/self/status``
(VmRSS, RssAnon, RssFile) every 20 ms; the kernel's own high-water mark ``VmHWM`` is reset
(``/proc/self/clear_refs`` = 5) just before the search and read after it, so it covers the search
only and misses nothing between samples.

Disk rate: this file's pages are dropped from the page cache (``posix_fadvise(DONTNEED)`` after an
``fsync``; ``/proc/sys/vm/drop_caches`` is not touched, other processes share the machine), then
the whole file is read sequentially in 16 MiB ``readinto`` calls (buffered, like ``dd bs=16M``);
``dd iflag=direct`` (O_DIRECT, no page cache) over the first 4 GB is recorded beside it when ``dd``
exists. The page cache is dropped the same way before the cluster's scan and before the reference
scan, so every scan starts cold.

Environment: FASTEMB_BENCH_SCALE (multiplies the 250M rows; default 1.0), FASTEMB_BENCH_TMPDIR
(where the temporary folder goes; default the system temporary directory).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import fastemb

try:
    import dask
    import dask.array as da
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin

    from fastemb.dask.io import NpyRows, _read_into
except ImportError:  # the pytest entry point is skipped without the extra
    dask = da = distributed = None
    WorkerPlugin = object  # type: ignore[misc,assignment]

if __name__ != "__main__" and dask is not None:
    # Imported (e.g. by pytest): ship this module's classes (RssSampler) by value, so that
    # worker processes need not import bench/ themselves.
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

NBYTES = 128  # 1024-bit codes, 1 bit plane
FULL_ROWS = 250_000_000  # 32.0 GB
CHUNK_ROWS = 1 << 20  # 128 MiB per chunk
GEN_ROWS = 1 << 20  # rows generated and written per step
SEED = 20261204
GB = 1e9


# ---- the corpus on disk -------------------------------------------------------------------------

def _flip_bits(code: np.ndarray, nbits: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for b in rng.choice(8 * code.size, nbits, replace=False):
        out[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def make_plan(n: int, nq: int, seed: int) -> Dict[str, Any]:
    """Queries and the near-duplicates planted for them.

    Per query: the query with 2 bits flipped at two positions (an exact tie: the lower id must come
    first), with 5 bits flipped at a third and 9 bits at a fourth position. Random 1024-bit rows
    differ from a query in ~512 +- 16 bits (>= ~420 over 250M rows), so these four are the query's
    top 4, in that order.
    """
    if n < 4 * nq:
        raise ValueError(f"n={n} rows is too few to plant 4 near-duplicates for each of {nq} queries")
    rng = np.random.default_rng([seed, 1])
    queries = rng.integers(0, 256, (nq, NBYTES), dtype=np.uint8)
    pos = rng.choice(n, size=(nq, 4), replace=False)
    rows: Dict[int, np.ndarray] = {}
    expected = np.empty((nq, 4), np.int64)
    for i in range(nq):
        twin = _flip_bits(queries[i], 2, rng)
        variants = [twin, twin, _flip_bits(queries[i], 5, rng), _flip_bits(queries[i], 9, rng)]
        for p, v in zip(pos[i], variants):
            rows[int(p)] = v
        a, b = sorted(int(p) for p in pos[i, :2])
        expected[i] = (a, b, int(pos[i, 2]), int(pos[i, 3]))
    return {"queries": queries, "planted": rows, "expected_top4": expected}


def write_corpus(path: str, n: int, plan: Dict[str, Any], seed: int) -> float:
    """Writes ``[n, 128]`` uint8 codes as ``.npy``, ``GEN_ROWS`` rows at a time (bounded memory:
    one block in this process; the kernel's dirty page cache is flushed by the final fsync).
    Returns the seconds taken, fsync included."""
    t0 = time.perf_counter()
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, NBYTES))
    del header  # only the header (the file is sparse until written)
    offset = NpyRows(path).offset
    planted = sorted(plan["planted"].items())
    fd = os.open(path, os.O_WRONLY)
    try:
        for r0 in range(0, n, GEN_ROWS):
            r1 = min(n, r0 + GEN_ROWS)
            block = np.random.default_rng([seed, 0, r0]).integers(0, 256, (r1 - r0, NBYTES), dtype=np.uint8)
            for p, v in planted:
                if r0 <= p < r1:
                    block[p - r0] = v
            view = memoryview(block).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + r0 * NBYTES + done)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def drop_file_cache(path: str) -> None:
    """Drops this file's clean pages from the page cache (fsync first so that all pages are clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def page_cache_bytes() -> int:
    """Bytes in the page cache now (``Cached`` of /proc/meminfo), for the report."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    return -1


def measure_disk(path: str) -> Dict[str, Any]:
    """Cold sequential read rate of ``path``: buffered 16 MiB reads of the whole file after dropping
    its pages, and ``dd iflag=direct`` over (at most) its first 4 GB."""
    out: Dict[str, Any] = {}
    size = os.path.getsize(path)
    drop_file_cache(path)
    out["cached_bytes_after_drop"] = page_cache_bytes()
    buf = bytearray(16 << 20)
    t0 = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                break
            total += got
    dt = time.perf_counter() - t0
    out["buffered_bytes"] = total
    out["buffered_s"] = dt
    out["buffered_gbs"] = total / dt / GB
    dd = shutil.which("dd")
    if dd is not None:
        count = max(1, min(size, 4 << 30) // (16 << 20))
        drop_file_cache(path)
        t0 = time.perf_counter()
        r = subprocess.run([dd, f"if={path}", "of=/dev/null", "bs=16M", f"count={count}", "iflag=direct"],
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode == 0:
            nread = min(size, count * (16 << 20))
            out["direct_bytes"] = nread
            out["direct_gbs"] = nread / dt / GB
            out["direct_dd_line"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        else:
            out["direct_error"] = r.stderr.strip()[-300:]
    return out


# ---- peak RSS of the workers ----------------------------------------------------------------------

_STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def _proc_status() -> Dict[str, int]:
    vals: Dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in _STATUS_KEYS:
                vals[key] = int(line.split()[1]) * 1024
    return vals


class RssSampler(WorkerPlugin):
    """Samples the worker process's ``/proc/self/status`` every ``interval`` s and keeps the maxima."""

    name = "fastemb-rss-sampler"

    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def setup(self, worker: Any) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self._thread = threading.Thread(target=self._loop, name="fastemb-rss", daemon=True)
        self._thread.start()

    def teardown(self, worker: Any) -> None:
        self._stop.set()

    def reset(self) -> None:
        try:  # resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        with self._lock:
            self.max = {k: 0 for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}
            self.samples = 0
            self.hwm_reset = hwm_reset
            self.start = _proc_status()
            self.cpu0 = os.times()
            self.t0 = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            s = _proc_status()
            with self._lock:
                for k in self.max:
                    self.max[k] = max(self.max[k], s.get(k, 0))
                self.samples += 1

    def report(self) -> Dict[str, Any]:
        s = _proc_status()
        cpu = os.times()
        with self._lock:
            return {"pid": os.getpid(), "max": dict(self.max), "samples": self.samples, "VmHWM": s["VmHWM"],
                    "hwm_reset": self.hwm_reset, "start": self.start, "end": s,
                    "user_s": cpu.user - self.cpu0.user, "sys_s": cpu.system - self.cpu0.system,
                    "wall_s": time.perf_counter() - self.t0}


def _sampler_reset(dask_worker: Any) -> int:
    dask_worker.plugins[RssSampler.name].reset()
    return os.getpid()


def _sampler_report(dask_worker: Any) -> Dict[str, Any]:
    return dask_worker.plugins[RssSampler.name].report()


# ---- the two scans -------------------------------------------------------------------------------

def numpy_merge(a: Tuple[np.ndarray, np.ndarray], b: Tuple[np.ndarray, np.ndarray], k: int):
    """The best k of two top lists, score descending then id ascending (plain NumPy, kept apart from
    ``fastemb.dask.merge_topk`` so that the check does not lean on the code it checks)."""
    s = np.concatenate([a[0], b[0]], axis=1).astype(np.int64)
    i = np.concatenate([a[1], b[1]], axis=1)
    order = np.lexsort((i, -s), axis=-1)[:, :k]
    return (np.take_along_axis(s, order, axis=1).astype(np.int32), np.take_along_axis(i, order, axis=1))


def reference_scan(path: str, queries: np.ndarray, k: int,
                   chunk_rows: int) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """Chunk-by-chunk single-process scan: ``fastemb.sdc_topk`` on each chunk read with ``preadv``,
    ids shifted to global rows, merged with :func:`numpy_merge` (reads and searches in turn, no
    overlap). Returns (scores, ids, seconds, seconds spent reading)."""
    reader = NpyRows(path)
    n, offset = reader.shape[0], reader.offset
    nq = queries.shape[0]
    best = (np.full((nq, 0), 0, np.int32), np.full((nq, 0), 0, np.int64))
    buf = np.empty((chunk_rows, NBYTES), np.uint8)
    t0 = time.perf_counter()
    read_s = 0.0
    fd = os.open(path, os.O_RDONLY)
    try:
        for r0 in range(0, n, chunk_rows):
            r1 = min(n, r0 + chunk_rows)
            block = buf[: r1 - r0]
            t1 = time.perf_counter()
            _read_into(fd, block, offset + r0 * NBYTES)
            read_s += time.perf_counter() - t1
            s, i = fastemb.sdc_topk(queries, block, min(k, r1 - r0))
            best = numpy_merge(best, (s, i + r0), k)
    finally:
        os.close(fd)
    return best[0], best[1], time.perf_counter() - t0, read_s


def kernel_rate(queries: np.ndarray, k: int, rows: int, threads: int) -> float:
    """GB/s of ``fastemb.sdc_topk`` on an in-memory block with ``threads`` threads (best of 3):
    what the CPU can scan when the disk is not in the way."""
    block = np.random.default_rng([SEED, 7]).integers(0, 256, (rows, NBYTES), dtype=np.uint8)
    old = fastemb.get_num_threads() if hasattr(fastemb, "get_num_threads") else None
    fastemb.set_num_threads(threads)
    try:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fastemb.sdc_topk(queries, block, k)
            best = min(best, time.perf_counter() - t0)
    finally:
        if old is not None:
            fastemb.set_num_threads(old)
    return block.nbytes / best / GB


def dask_scan(path: str, queries: np.ndarray, k: int, chunk_rows: int, workers: int, memory_limit: str,
              loader: str) -> Dict[str, Any]:
    """``fastemb.dask.sdc_topk`` on a LocalCluster over the file; result, seconds and worker RSS."""
    import fastemb.dask as fd

    d = fd.from_npy(path, chunk_rows, loader=loader)
    out: Dict[str, Any] = {"chunks": len(d.chunks[0]), "chunk_rows": chunk_rows}
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  memory_limit=memory_limit, dashboard_address=None,
                                  env={"FASTEMB_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(RssSampler())
        client.wait_for_workers(workers)
        pids_before = client.run(_sampler_reset)
        drop_file_cache(path)
        t0 = time.perf_counter()
        scores, ids = dask.compute(*fd.sdc_topk(queries, d, k))
        out["seconds"] = time.perf_counter() - t0
        reports = client.run(_sampler_report)
        pids_after = {a: r["pid"] for a, r in reports.items()}
        out["workers"] = list(reports.values())
        out["same_worker_processes"] = pids_before == pids_after
    out["scores"], out["ids"] = scores, ids
    return out


# ---- the run -------------------------------------------------------------------------------------

def run(scale: float = 1.0, tmpdir: Optional[str] = None, nq: int = 100, k: int = 10,
        chunk_rows: Optional[int] = None, workers: int = 2, memory_limit: str = "4GB",
        loader: str = "pread", whole_check: Optional[bool] = None) -> Dict[str, Any]:
    """Writes the corpus, measures the disk, scans it both ways, compares; removes the folder."""
    if dask is None:
        raise RuntimeError("needs dask[array] and distributed: pip install 'fastemb[dask]'")
    n = max(8 * nq, int(round(FULL_ROWS * scale)))
    if chunk_rows is None:
        chunk_rows = min(CHUNK_ROWS, max(1, -(-n // 8)))
    if whole_check is None:
        whole_check = n * NBYTES <= (1 << 30)
    nbytes = n * NBYTES
    base = tmpdir or os.environ.get("FASTEMB_BENCH_TMPDIR") or tempfile.gettempdir()
    free = shutil.disk_usage(base).free
    if free < nbytes + (2 << 30):
        raise RuntimeError(f"{base} has {free / GB:.1f} GB free; the corpus needs {nbytes / GB:.1f} GB + 2 GB")
    # bench/conftest.py's (bench/ is on sys.path, run as a script or by pytest); imported here, not at the top:
    # the workers get this module's classes by value and must not run conftest's setup.
    from conftest import _cpu_model

    res: Dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "rows": n, "nbytes": nbytes, "queries": nq, "k": k, "workers": workers,
        "memory_limit": memory_limit, "loader": loader, "seed": SEED,
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "mem_total": _mem_total(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "dask": dask.__version__, "distributed": distributed.__version__,
                    "fastemb": fastemb.__version__ if hasattr(fastemb, "__version__") else "?",
                    "isa": fastemb.info().get("isa"), "loadavg_start": os.getloadavg()},
    }
    folder = tempfile.mkdtemp(prefix="fastemb-ooc-", dir=base)
    path = os.path.join(folder, "codes.npy")
    try:
        plan = make_plan(n, nq, SEED)
        queries = plan["queries"]
        res["write_s"] = write_corpus(path, n, plan, SEED)
        res["write_gbs"] = nbytes / res["write_s"] / GB
        res["file_bytes"] = os.path.getsize(path)
        res["disk"] = measure_disk(path)
        res["kernel_gbs_1thread"] = kernel_rate(queries, k, min(n, 1 << 20), 1)

        dres = dask_scan(path, queries, k, chunk_rows, workers, memory_limit, loader)
        res["dask"] = {key: v for key, v in dres.items() if key not in ("scores", "ids")}
        res["dask"]["gbs"] = nbytes / dres["seconds"] / GB

        drop_file_cache(path)
        ref_chunk = max(1, (chunk_rows * 3) // 4 + 1)  # a different chunking from the cluster's
        fastemb.set_num_threads(workers)
        rs, ri, rsec, rread = reference_scan(path, queries, k, ref_chunk)
        res["reference"] = {"seconds": rsec, "read_s": rread, "gbs": nbytes / rsec / GB, "chunk_rows": ref_chunk,
                            "threads": workers}

        res["identical_ids"] = bool(np.array_equal(dres["ids"], ri))
        res["identical_scores"] = bool(np.array_equal(dres["scores"], rs))
        res["planted_top4_found"] = bool(np.array_equal(ri[:, :4], plan["expected_top4"]))
        if whole_check:  # the single-machine function on the whole file, memory-mapped
            ws, wi = fastemb.sdc_topk(queries, np.load(path, mmap_mode="r"), k)
            res["identical_to_whole_file_sdc_topk"] = bool(np.array_equal(wi, ri) and np.array_equal(ws, rs))
        rss = [w["VmHWM"] for w in res["dask"]["workers"]]
        res["peak_rss_per_worker"] = rss
        res["peak_rss_under_4GB"] = bool(max(rss) < 4 * GB)
        res["machine"]["loadavg_end"] = os.getloadavg()
        return res
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        res["cleaned_up"] = not os.path.exists(folder)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return -1


def markdown(res: Dict[str, Any]) -> str:
    m, dk, disk = res["machine"], res["dask"], res["disk"]
    lines = [
        f"Command: `{res['command']}`",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['mem_total'] / 2**30:.1f} GiB RAM, Python {m['python']}, "
        f"numpy {m['numpy']}, dask/distributed {m['dask']}/{m['distributed']}, fastemb isa {m['isa']}; "
        f"load average {m['loadavg_start'][0]:.1f} at start, {m.get('loadavg_end', (float('nan'),))[0]:.1f} at end.",
        "",
        f"Corpus: {res['rows']:,} x 1024-bit codes (uint8 [n, 128]) = {res['nbytes'] / GB:.2f} GB in one .npy "
        f"({res['file_bytes'] / GB:.2f} GB on disk), written in {res['write_s']:.1f} s ({res['write_gbs']:.2f} GB/s, "
        f"fsync included); {res['queries']} queries, k = {res['k']}, 4 near-duplicates planted per query.",
        f"Cluster: LocalCluster(n_workers={res['workers']}, threads_per_worker=1, processes=True, "
        f"memory_limit={res['memory_limit']!r}), FASTEMB_NUM_THREADS=1; loader `{res['loader']}`; "
        f"{dk['chunks']} chunks of {dk['chunk_rows']:,} rows ({dk['chunk_rows'] * NBYTES / 2**20:.0f} MiB).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| disk, cold sequential read of the whole file (16 MiB reads) | {disk['buffered_gbs']:.2f} GB/s "
        f"({disk['buffered_bytes'] / GB:.1f} GB in {disk['buffered_s']:.1f} s) |",
    ]
    if "direct_gbs" in disk:
        lines.append(f"| disk, `dd iflag=direct bs=16M` over the first {disk['direct_bytes'] / GB:.1f} GB | "
                     f"{disk['direct_gbs']:.2f} GB/s |")
    lines += [
        f"| sdc_topk kernel in memory, 1 thread ({min(res['rows'], 1 << 20):,} rows) | {res['kernel_gbs_1thread']:.2f} GB/s |",
        f"| **fastemb.dask.sdc_topk, {res['workers']} workers, cold file** | **{dk['gbs']:.2f} GB/s** "
        f"({dk['seconds']:.1f} s) = {dk['gbs'] / disk['buffered_gbs']:.2f}x the disk rate |",
        f"| single-process chunk-by-chunk scan ({res['reference']['threads']} threads, "
        f"{res['reference']['chunk_rows']:,}-row chunks), cold file | {res['reference']['gbs']:.2f} GB/s "
        f"({res['reference']['seconds']:.1f} s, of which reading {res['reference']['read_s']:.1f} s) |",
    ]
    for i, w in enumerate(dk["workers"]):
        mx = w["max"]
        lines.append(f"| worker {i} peak RSS (VmHWM over the search{'' if w['hwm_reset'] else ', NOT reset'}) | "
                     f"**{w['VmHWM'] / 2**30:.2f} GiB**; sampled max RssAnon {mx['RssAnon'] / 2**30:.2f} GiB, "
                     f"RssFile {mx['RssFile'] / 2**30:.2f} GiB ({w['samples']} samples); "
                     f"before the search {w['start']['VmRSS'] / 2**30:.2f} GiB; CPU {w['user_s']:.1f} s user + "
                     f"{w['sys_s']:.1f} s sys in {w['wall_s']:.1f} s |")
    lines += [
        f"| peak RSS per worker under 4 GB | {'yes' if res['peak_rss_under_4GB'] else 'NO'} |",
        f"| worker processes unchanged (none killed or restarted) | {'yes' if dk['same_worker_processes'] else 'NO'} |",
        f"| identical ids to the single-process scan | {'yes' if res['identical_ids'] else 'NO'} |",
        f"| identical scores | {'yes' if res['identical_scores'] else 'NO'} |",
        f"| planted near-duplicates are each query's top 4, ties by lower id | "
        f"{'yes' if res['planted_top4_found'] else 'NO'} |",
    ]
    if "identical_to_whole_file_sdc_topk" in res:
        lines.append(f"| identical to fastemb.sdc_topk on the whole memory-mapped file | "
                     f"{'yes' if res['identical_to_whole_file_sdc_topk'] else 'NO'} |")
    lines.append(f"| temporary folder removed | {'yes' if res.get('cleaned_up') else 'NO'} |")
    return "\n".join(lines)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0")),
                   help="multiplies the 250M rows (default FASTEMB_BENCH_SCALE or 1.0; 0.002 = smoke run)")
    p.add_argument("--dir", default=None, help="where the temporary folder goes")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--chunk-rows", type=int, default=None, help=f"rows per dask chunk (default {CHUNK_ROWS})")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GB")
    p.add_argument("--loader", choices=("pread", "mmap"), default="pread")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    a = p.parse_args(argv)
    res = run(a.scale, a.dir, a.queries, a.k, a.chunk_rows, a.workers, a.memory_limit, a.loader)
    print(markdown(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_jsonable(res), f, indent=1)
    ok = res["identical_ids"] and res["identical_scores"] and res["planted_top4_found"] and res["peak_rss_under_4GB"]
    return 0 if ok else 1


# ---- pytest entry point (bench/ only; the default suite collects tests/) --------------------------

def test_outofcore_sdc_topk(tmp_path):
    import pytest

    pytest.importorskip("distributed")
    if "FASTEMB_BENCH_SCALE" not in os.environ:  # a bare `pytest bench/` must not write 32 GB
        pytest.skip("set FASTEMB_BENCH_SCALE (1.0 = the 32 GB run, 0.002 = a smoke run) to run this benchmark")
    scale = float(os.environ["FASTEMB_BENCH_SCALE"])
    need = max(800, int(round(FULL_ROWS * scale))) * NBYTES + (2 << 30)
    if shutil.disk_usage(tmp_path).free < need:
        pytest.skip(f"needs {need / GB:.1f} GB free under {tmp_path} for scale {scale}")
    res = run(scale, str(tmp_path))
    print("\n" + markdown(res))
    assert res["identical_ids"] and res["identical_scores"]
    assert res["planted_top4_found"]
    assert res["peak_rss_under_4GB"], res["peak_rss_per_worker"]
    assert res["dask"]["same_worker_processes"]
    assert res["cleaned_up"]


if __name__ == "__main__":
    sys.exit(main())
