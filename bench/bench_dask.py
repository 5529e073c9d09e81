"""fastemb.dask on a LocalCluster: overhead against plain fastemb, scaling from 1 to 2 workers, and
dask.dataframe's groupby-mean as a peer (issue 14).

    python bench/bench_dask.py                 # the table (markdown) on stdout; minutes at full scale
    python -m pytest bench/bench_dask.py --benchmark-json=bench-dask.json

Clusters: ``distributed.LocalCluster(processes=True, threads_per_worker=1)``; every worker process
runs the native kernels with ``FASTEMB_NUM_THREADS`` threads. 2 threads in total on a 2-core box:

* overhead: 1 worker with FASTEMB_NUM_THREADS=2 against plain fastemb with 2 threads in this
  process, on the same in-memory data (the cluster's copy generated and kept on the worker);
* scaling: 1 worker x 1 thread, then 2 workers x 1 thread (FASTEMB_NUM_THREADS=1), the data split
  into contiguous row blocks kept on the workers;
* peer: on the 2-worker cluster, ``fastemb.dask.centroid_aggregate(x, labels, K)`` against
  ``dask.dataframe`` ``ddf.groupby("label").mean()`` over the same 128 columns (both from data
  already held by the workers: the dask array's blocks, and a persisted dataframe of the same blocks).

Each timed call builds the graph, runs it and brings the result back to this process (what a user
waits for). Sizes (FASTEMB_BENCH_SCALE multiplies the rows):
    sdc_topk                  1M x 1024-bit 1-bit codes, 100 queries, k = 10, 8 row chunks
    centroid_aggregate        N x 128 float32, K = 1000 (issue: 10M; FASTEMB_BENCH_CENTROID_N, default 10M)
    sparse_random_projection  100k x 1000 dense float32 -> 256, s = sqrt(n), 8 row chunks
(FASTEMB_BENCH_DASK_CHUNKS sets the 8: e.g. 2, which is coarser than dask's default of 128 MiB chunks would
give for the codes, where the fixed latency of each task weighs less)
    groupby peer              FASTEMB_BENCH_PEER_N (default 5M) x 128, K = 1000
Timings never assert anything; results are checked against the single-machine functions once.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest

try:
    import dask
    import dask.array as da
    import distributed
except ImportError:  # the suite is skipped without the extra
    dask = da = distributed = None

import fastemb

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
ROUNDS = int(os.environ.get("FASTEMB_BENCH_ROUNDS", "7"))
CHUNKS = int(os.environ.get("FASTEMB_BENCH_DASK_CHUNKS", "8"))  # row chunks of every dask array
SDC_N, SDC_NBYTES, NQ, K = max(CHUNKS, int(1_000_000 * SCALE)), 128, 100, 10
CENT_N = max(CHUNKS, int(int(os.environ.get("FASTEMB_BENCH_CENTROID_N", "10000000")) * SCALE))
CENT_D, CENT_K = 128, 1000
PEER_N = max(CHUNKS, int(int(os.environ.get("FASTEMB_BENCH_PEER_N", "5000000")) * SCALE))
SRP_N, SRP_M, SRP_DIM = max(CHUNKS, int(100_000 * SCALE)), 1000, 256


# ---- data: blocks generated from (seed, first row), identical wherever they are made ------------------

def gen_codes(seed: int, row0: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, row0]).integers(0, 256, (n, 1, SDC_NBYTES), dtype=np.uint8)


def gen_floats(seed: int, row0: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng([seed, row0]).standard_normal((n, d), dtype=np.float32)


def gen_labels(seed: int, row0: int, n: int, k: int) -> np.ndarray:
    return np.random.default_rng([seed, row0, 1]).integers(0, k, n)


def bounds(n: int, chunks: int = CHUNKS) -> List[int]:
    return [n * i // chunks for i in range(chunks + 1)]


def local_rows(gen: Callable, n: int, *args: Any) -> np.ndarray:
    b = bounds(n)
    return np.concatenate([gen(args[0], b[i], b[i + 1] - b[i], *args[1:]) for i in range(CHUNKS)])


class Env:
    """A LocalCluster of ``n_workers`` worker processes x ``per_worker`` threads, FASTEMB_NUM_THREADS=``threads``."""

    def __init__(self, n_workers: int, threads: int, per_worker: int = 1):
        self.n_workers, self.threads = n_workers, threads
        self.cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=per_worker, processes=True,
                                                dashboard_address=":0", env={"FASTEMB_NUM_THREADS": str(threads)})
        self.client = distributed.Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(n_workers, timeout=120)
        self.workers = sorted(self.client.nthreads())

    def rows(self, gen: Callable, n: int, shape: tuple, dtype: Any, *args: Any) -> "da.Array":
        """A dask array of CHUNKS row blocks made on the workers (contiguous runs of blocks per worker)."""
        b = bounds(n)
        parts = []
        for i in range(CHUNKS):
            w = self.workers[i * len(self.workers) // CHUNKS]
            fut = self.client.submit(gen, args[0], b[i], b[i + 1] - b[i], *args[1:], workers=[w], pure=False)
            parts.append(da.from_delayed(fut, shape=(b[i + 1] - b[i],) + shape, dtype=dtype))
        out = self.client.persist(da.concatenate(parts, axis=0))
        with self.client.as_current():
            distributed.wait(distributed.futures_of(out))
        return out

    def run(self, *graphs: Any) -> tuple:
        """Computes and brings the results to this process."""
        return tuple(self.client.gather(self.client.compute(list(graphs))))

    def keep(self, *graphs: Any) -> None:
        """Computes and keeps the results on the workers (persist + wait), as before writing them out."""
        out = self.client.persist(list(graphs))
        with self.client.as_current():
            distributed.wait(distributed.futures_of(out))

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


_ENV: Dict[tuple, Env] = {}


def env(n_workers: int, threads: int, per_worker: int = 1, alone: bool = True) -> Env:
    """The cluster of that shape (cached); ``alone`` closes the others first (their data needs memory)."""
    key = (n_workers, threads, per_worker)
    if key not in _ENV:
        if alone:
            close_all()
        _ENV[key] = Env(n_workers, threads, per_worker)
    return _ENV[key]


def close_all() -> None:
    for key in list(_ENV):
        _ENV.pop(key).close()


def median_time(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    return interleaved({"fn": fn}, rounds)["fn"]


def interleaved(fns: Dict[str, Callable[[], Any]], rounds: int = ROUNDS) -> Dict[str, float]:
    """Median seconds of each callable, run in alternating order round after round, so that all of them
    see the same share of whatever else the (shared) machine is doing."""
    for fn in fns.values():
        fn()  # warm-up
    times: Dict[str, List[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with fastemb's pool in this process set to ``n`` threads."""
    def run():
        fastemb.set_num_threads(n)
        return fn()
    return run


# ---- the cases: (name, setup) -> a callable to time ------------------------------------------------------

def case_sdc(e: Optional[Env], nq: int = NQ) -> Callable[[], Any]:
    import fastemb.dask as fd

    q = gen_codes(99, 0, nq)
    if e is None:
        codes = local_rows(gen_codes, SDC_N, 7)
        return lambda: fastemb.sdc_topk(q, codes, K)
    D = e.rows(gen_codes, SDC_N, (1, SDC_NBYTES), np.uint8, 7)
    return lambda: e.run(*fd.sdc_topk(q, D, K, client=e.client))  # the client: tasks grouped by placement


def case_centroid(e: Optional[Env], n: int = CENT_N) -> Callable[[], Any]:
    import fastemb.dask as fd

    if e is None:
        x = local_rows(gen_floats, n, 11, CENT_D)
        labels = local_rows(gen_labels, n, 11, CENT_K)
        return lambda: fastemb.centroid_aggregate(x, labels, num_groups=CENT_K)
    X = e.rows(gen_floats, n, (CENT_D,), np.float32, 11, CENT_D)
    L = e.rows(gen_labels, n, (), np.int64, 11, CENT_K)
    return lambda: e.run(fd.centroid_aggregate(X, L, CENT_K, client=e.client))  # the client: tasks grouped by placement


def case_srp(e: Env) -> Callable[[], Any]:
    import fastemb.dask as fd

    X = e.rows(gen_floats, SRP_N, (SRP_M,), np.float32, 13, SRP_M)
    seeds = iter(range(1 << 30))
    # The [N, 256] result (100 MB) stays on the workers: gathering it would time the TCP copy. A new seed
    # per call: the same work under new task keys (persisting the keys of a result still held would
    # just return it).
    return lambda: e.keep(fd.sparse_random_projection(X, SRP_DIM, "sqrt", next(seeds)))


def _frame(x: np.ndarray, labels: np.ndarray):
    import pandas as pd

    df = pd.DataFrame(x, columns=[f"c{j}" for j in range(x.shape[1])])
    df["label"] = labels
    return df


def case_groupby(e: Env) -> Callable[[], Any]:
    import dask.dataframe as dd

    X = e.rows(gen_floats, PEER_N, (CENT_D,), np.float32, 17, CENT_D)
    L = e.rows(gen_labels, PEER_N, (), np.int64, 17, CENT_K)
    frames = [dask.delayed(_frame)(xb, lb) for xb, lb in zip(X.to_delayed()[:, 0], L.to_delayed())]
    meta = _frame(np.zeros((0, CENT_D), np.float32), np.zeros(0, np.int64))
    ddf = e.client.persist(dd.from_delayed(frames, meta=meta))
    with e.client.as_current():
        distributed.wait(distributed.futures_of(ddf))
    return lambda: e.client.compute(ddf.groupby("label").mean()).result()


def check(e: Env) -> None:
    """The dask results equal the single-machine ones (outside the timed region, small inputs)."""
    import fastemb.dask as fd

    q = gen_codes(99, 0, 7)
    codes = gen_codes(5, 0, 5000)
    s, i = e.run(*fd.sdc_topk(q, da.from_array(codes, chunks=(700, 1, SDC_NBYTES)), K))
    assert np.array_equal(i, fastemb.sdc_topk(q, codes, K)[1])
    x = gen_floats(5, 0, 5000, 64)
    (p,) = e.run(fd.sparse_random_projection(da.from_array(x, chunks=(700, 64)), 32, "sqrt", 3))
    assert np.array_equal(p, fastemb.sparse_random_projection(x, 32, "sqrt", 3))


# ---- pytest-benchmark ----------------------------------------------------------------------------------

needs_dask = pytest.mark.skipif(distributed is None, reason="needs the dask extra (dask[array], distributed)")


def _bench(benchmark, fn, kernel, shape, peer, family):
    from fastemb.bench_cli import record

    record(benchmark, family=family, kernel=kernel, shape=shape, peer=peer)
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)


@needs_dask
@pytest.mark.parametrize("impl", ["fastemb", "fastemb.dask 1 worker x 2 threads"])
def test_overhead_sdc_topk(benchmark, impl):
    fastemb.set_num_threads(2)
    fn = case_sdc(None if impl == "fastemb" else env(1, 1, 2))
    _bench(benchmark, fn, "dask overhead: sdc_topk", f"{SDC_N}x1024-bit nq={NQ} k={K}", impl, "binary")


@needs_dask
@pytest.mark.parametrize("impl", ["fastemb", "fastemb.dask 1 worker x 2 threads"])
def test_overhead_centroid(benchmark, impl):
    fastemb.set_num_threads(2)
    fn = case_centroid(None if impl == "fastemb" else env(1, 1, 2))
    _bench(benchmark, fn, "dask overhead: centroid mean", f"{CENT_N}x{CENT_D} K={CENT_K}", impl, "centroid")


@needs_dask
@pytest.mark.parametrize("workers", [1, 2])
def test_scaling_sdc_topk(benchmark, workers):
    e = env(workers, 1)
    check(e)
    peer = "fastemb" if workers == 2 else "fastemb.dask 1 worker"
    _bench(benchmark, case_sdc(e), "dask scaling: sdc_topk", f"{SDC_N}x1024-bit nq={NQ} k={K}", peer, "binary")


@needs_dask
@pytest.mark.parametrize("workers", [1, 2])
def test_scaling_srp(benchmark, workers):
    peer = "fastemb" if workers == 2 else "fastemb.dask 1 worker"
    _bench(benchmark, case_srp(env(workers, 1)), "dask scaling: sparse_random_projection",
           f"{SRP_N}x{SRP_M} -> {SRP_DIM}", peer, "graph")


@needs_dask
@pytest.mark.parametrize("impl", ["fastemb", "dask.dataframe"])
def test_peer_groupby_mean(benchmark, impl):
    pytest.importorskip("dask.dataframe")
    e = env(2, 1)
    fn = case_centroid(e, PEER_N) if impl == "fastemb" else case_groupby(e)
    _bench(benchmark, fn, "dask: group means (2 workers)", f"{PEER_N}x{CENT_D} K={CENT_K}", impl, "centroid")


# ---- the table ------------------------------------------------------------------------------------------

def local_threads(fn_dask: Callable[[], Any]) -> Callable[[], Any]:
    """Runs a graph-building callable on dask's local threaded scheduler (no distributed)."""
    def run():
        with dask.config.set(scheduler="threads", num_workers=2):
            return fn_dask()
    return run


def case_sdc_local(nq: int = NQ) -> Callable[[], Any]:
    import fastemb.dask as fd

    q = gen_codes(99, 0, nq)
    D = da.from_array(local_rows(gen_codes, SDC_N, 7), chunks=(SDC_N // CHUNKS, 1, SDC_NBYTES))
    return local_threads(lambda: dask.compute(*fd.sdc_topk(q, D, K)))


def main() -> None:
    rows = []

    def add(what, shape, label_ref, t_ref, label, t, target):
        rows.append((what, shape, label_ref, t_ref, label, t, target))
        print(f"{what}: {label_ref} {t_ref * 1e3:.1f} ms, {label} {t * 1e3:.1f} ms", file=sys.stderr, flush=True)

    plain_label = "fastemb, 2 threads"
    w1 = "fastemb.dask, 1 worker x 1 thread, FASTEMB_NUM_THREADS=2"
    w2 = "fastemb.dask, 1 worker x 2 threads, FASTEMB_NUM_THREADS=1"
    local = "fastemb.dask, dask's threaded scheduler (2 threads, FASTEMB_NUM_THREADS=1)"
    # overhead: plain fastemb against one worker, 2 threads in total either way, interleaved
    sdc_shape = f"{SDC_N} x 1024-bit, {NQ} queries, k={K}, {CHUNKS} chunks"
    e1, e2 = env(1, 2, 1, alone=False), env(1, 1, 2, alone=False)
    check(e1)
    t = interleaved({"plain": with_threads(2, case_sdc(None)), "w1": case_sdc(e1), "w2": case_sdc(e2),
                     "local": with_threads(1, case_sdc_local())})
    for key, label in (("w1", w1), ("w2", w2), ("local", local)):
        add("overhead sdc_topk", sdc_shape, plain_label, t["plain"], label, t[key], "<= 1.15x")
    # the same with 10x the queries: the fixed cost of a distributed computation amortized
    t = interleaved({"plain": with_threads(2, case_sdc(None, 10 * NQ)), "w2": case_sdc(e2, 10 * NQ)}, rounds=3)
    add("overhead sdc_topk", sdc_shape.replace(f"{NQ} queries", f"{10 * NQ} queries"), plain_label, t["plain"], w2,
        t["w2"], "<= 1.15x")
    close_all()
    cent_shape = f"{CENT_N} x {CENT_D} float32, K={CENT_K}, {CHUNKS} chunks"
    plain = with_threads(2, case_centroid(None))
    for key, args, label in (("w2", (1, 1, 2), w2), ("w1", (1, 2, 1), w1)):
        t = interleaved({"plain": plain, key: case_centroid(env(*args))})
        add("overhead centroid_aggregate mean", cent_shape, plain_label, t["plain"], label, t[key], "<= 1.15x")
    del plain
    close_all()
    # scaling: 1 worker x 1 thread -> 2 workers x 1 thread (FASTEMB_NUM_THREADS=1), interleaved
    one, two = env(1, 1, 1, alone=False), env(2, 1, 1, alone=False)
    check(two)
    t = interleaved({"one": case_sdc(one), "two": case_sdc(two)})
    add("scaling sdc_topk", sdc_shape, "1 worker x 1 thread", t["one"], "2 workers x 1 thread", t["two"], ">= 1.7x")
    t = interleaved({"one": case_srp(one), "two": case_srp(two)})
    add("scaling sparse_random_projection", f"{SRP_N} x {SRP_M} dense -> {SRP_DIM}, {CHUNKS} chunks, result kept on "
        "the workers", "1 worker x 1 thread", t["one"], "2 workers x 1 thread", t["two"], ">= 1.7x")
    close_all()
    two = env(2, 1, 1)
    t = interleaved({"fd": case_centroid(two, PEER_N), "ddf": case_groupby(two)}, rounds=max(3, ROUNDS // 2))
    add("group means, 2 workers x 1 thread", f"{PEER_N} x {CENT_D}, K={CENT_K}, {CHUNKS} chunks",
        "dask.dataframe groupby(label).mean()", t["ddf"], "fastemb.dask centroid_aggregate", t["fd"], ">= 10x faster")
    close_all()
    print("| case | shape | baseline | baseline ms | fastemb.dask | ms | ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    for what, shape, lr, tr, lab, tm, target in rows:
        ratio = f"{tm / tr:.2f}x the time" if what.startswith("overhead") else f"{tr / tm:.2f}x faster"
        print(f"| {what} | {shape} | {lr} | {tr * 1e3:.1f} | {lab} | {tm * 1e3:.1f} | {ratio} | {target} |")


if __name__ == "__main__":
    main()
