"""FastRP past one machine: fastemb.dask.fastrp on a LocalCluster against fastemb.fastrp on one machine,
and the Dask peer (scipy SpMM under map_blocks with X broadcast whole each step), in the same run.

    python bench/bench_dask_fastrp.py                     # the report (markdown) on stdout
    python bench/bench_dask_fastrp.py --rounds 3 --out /tmp/notes/daskfastrp_bench.md
    python -m pytest bench/bench_dask_fastrp.py --benchmark-json=bench-dask-fastrp.json
    FASTEMB_BENCH_SCALE=0.01 python -m pytest bench/bench_dask_fastrp.py   # seconds

Graph: the Chung-Lu power-law graph of bench_fastrp.py (bench/gen_graph.py, gamma 2.5, seed 0; 1M nodes /
20M stored nonzeros x FASTEMB_BENCH_SCALE, cached in /tmp at full scale), d = 128, the paper preset (q = 4,
weights [0, 0, 1, 6.67], beta = -0.64, s = sqrt(N), row-L2, column standardization), in 4 row blocks of
equal size on a LocalCluster of 2 worker processes x 1 thread (FASTEMB_NUM_THREADS=1 each): 2 threads in
all, as the one-machine run (fastemb.fastrp with 2 threads).

Measured (medians over the rounds):
    fastemb.fastrp            one machine, 2 threads, the graph as a CSR tuple.
    fastemb.dask.fastrp       the row blocks (scipy CSR) scattered and prepared on the workers ("place"),
                              then the q steps and the standardization ("compute": until the result is
                              in the workers' memory); "gather" brings the [N, d] result to the client.
                              Bit-identical to the one-machine result (checked).
    scipy under map_blocks    the peer: M = D^-1 A as a dask array of 4 scipy CSR row chunks; each step
                              U = M @ U with U rechunked to one chunk (X broadcast whole to every task),
                              row-L2 and the weighted sum blockwise, dask.array mean/std for the
                              standardization. Same initial matrix (fastemb's R), float32.
Bytes shipped between workers, per step, from the workers' transfer logs (fastemb.dask._fastrp.traffic;
the peer: every transfer during its run), against the minimum: each X block sent once to each other
worker whose row blocks have edges into it. Peak RSS per worker process (VmHWM, reset before each run).
The per-block rates (seconds per chain link against its edges) give the scaling estimate for 1B nodes /
20B edges printed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

D = 128
BLOCKS = 4
WORKERS = 2
NODES = max(1000, int(round(1_000_000 * SCALE)))
NNZ = max(10 * NODES, int(round(20_000_000 * SCALE)))
CHUNGLU = "/tmp/fastemb_chunglu_1m_20m.npz"
WEIGHTS = [0.0, 0.0, 1.0, 6.67]
BETA = -0.64


def load_graph() -> Tuple[np.ndarray, np.ndarray, int]:
    from gen_graph import chung_lu, load_or_make

    if NODES == 1_000_000 and NNZ == 20_000_000:
        indptr, indices = load_or_make(CHUNGLU, NODES, NNZ, seed=0)
    else:
        indptr, indices = chung_lu(NODES, NNZ, seed=0)
    return np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(indices, np.int32), len(indptr) - 1


def row_blocks(indptr, indices, n, k=BLOCKS):
    import scipy.sparse as sp

    a = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, n))
    offs = [n * i // k for i in range(k + 1)]
    return [a[offs[i]:offs[i + 1]] for i in range(k)], a


def start_cluster(work_stealing: bool = True):
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.work-stealing": work_stealing}):  # read when the scheduler starts
        cluster = _local_cluster()
    client = distributed.Client(cluster)
    client.wait_for_workers(WORKERS)
    return cluster, client


def _local_cluster():
    import distributed

    return distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", env={"FASTEMB_NUM_THREADS": "1"},
                                       memory_limit=0)


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _incoming_log(dask_worker) -> List[dict]:
    return list(dask_worker.transfer_incoming_log)


def transfers_since(client, marks: Dict[str, int]) -> List[dict]:
    """Incoming-transfer log entries of every worker after ``marks`` (entries counted per worker)."""
    logs = client.run(_incoming_log)
    out = []
    for w, entries in logs.items():
        out.extend(entries[marks.get(w, 0):])
    return out


def log_marks(client) -> Dict[str, int]:
    return {w: len(e) for w, e in client.run(_incoming_log).items()}


# ---- the runs ------------------------------------------------------------------------------------------

def run_one_machine(indptr, indices, n):
    import fastemb

    fastemb.set_num_threads(WORKERS)
    t = time.perf_counter()
    e = fastemb.fastrp((indptr, indices, n), dim=D, seed=0)
    return e, time.perf_counter() - t


def run_dask_fastemb(client, blocks) -> Dict[str, Any]:
    import distributed
    import importlib

    dfr = importlib.import_module("fastemb.dask._fastrp")  # the module (fastemb.dask.fastrp is the function)

    client.run(_reset_peak_rss)
    stream = distributed.get_task_stream(client=client)
    with stream:
        t0 = time.perf_counter()
        res = dfr.fastrp(blocks, D, seed=0, client=client)  # places the blocks, starts the steps
        t1 = time.perf_counter()
        distributed.wait(res)
        t2 = time.perf_counter()
    out = res.compute()
    t3 = time.perf_counter()
    peak = client.run(_peak_rss)
    rep = dfr.traffic(client, res)
    token = dfr._token_of(res)
    run = dfr._RUNS[token]
    # the chain links of steps 2..q (dense X[j]; step 1 generates R's rows from tables)
    links = [s for s in stream.data
             if str(s["key"]).startswith(("fastrp-part-" + token, "fastrp-step-" + token))
             and int(str(s["key"]).split("-")[3]) >= 2]
    return dict(result=out, place=t1 - t0, compute=t2 - t1, gather=t3 - t2, total=t2 - t0, peak=peak, traffic=rep,
                run=run, links=links, token=token)


def run_dask_scipy(client, a, n) -> Dict[str, Any]:
    """The peer: FastRP (paper preset) with scipy SpMM under map_blocks, X broadcast whole each step."""
    import dask.array as da
    import distributed
    import scipy.sparse as sp
    from fastemb import graph as g

    client.run(_reset_peak_rss)
    marks = log_marks(client)
    t0 = time.perf_counter()
    deg = np.asarray(a.sum(axis=1)).ravel().astype(np.float32)
    ok = deg > 0
    m = (sp.diags(np.where(ok, 1.0 / np.where(ok, deg, 1), 0).astype(np.float32)) @ a).tocsr().astype(np.float32)
    init = np.where(ok, np.power(np.where(ok, deg, 1).astype(np.float64), BETA), 1.0).astype(np.float32)
    s = max(1.0, np.sqrt(n))
    threshold, value = g.random_spec(s, D)
    offs = [n * i // BLOCKS for i in range(BLOCKS + 1)]
    chunks = (tuple(offs[i + 1] - offs[i] for i in range(BLOCKS)),)
    import dask

    parts = [client.scatter(m[offs[i]:offs[i + 1]], hash=False) for i in range(BLOCKS)]
    M = da.concatenate([da.from_delayed(dask.delayed(p), shape=(chunks[0][i], n), dtype=np.float32,
                                        meta=sp.csr_matrix((0, 0), dtype=np.float32))
                        for i, p in enumerate(parts)])
    init_d = da.from_array(init, chunks=chunks)

    def r0(scale_blk, block_info=None):
        lo = block_info[0]["array-location"][0][0]
        out = np.empty((scale_blk.shape[0], D), np.float32)
        g.NumpyOps().random_rows((0, threshold, value, D), scale_blk, out, lo)
        return out

    u = da.map_blocks(r0, init_d, dtype=np.float32, chunks=(chunks[0], (D,)), new_axis=1)
    e = None
    for i, w in enumerate(WEIGHTS):
        whole = u.rechunk({0: -1})  # X broadcast whole to every row block's task
        u = da.map_blocks(lambda mb, x: (mb @ x).astype(np.float32), M, whole, dtype=np.float32,
                          chunks=(chunks[0], (D,)))
        u = u.persist()
        distributed.wait(u)
        if w:
            v = u / da.maximum(da.sqrt((u * u).sum(axis=1, keepdims=True)), np.float32(1e-38))
            e = np.float32(w) * v if e is None else e + np.float32(w) * v
            e = e.persist()
    mean = e.mean(axis=0)
    sd = e.std(axis=0)
    e = ((e - mean) / da.where(sd > 0, sd, 1)).astype(np.float32).persist()
    distributed.wait(e)
    t1 = time.perf_counter()
    entries = transfers_since(client, marks)
    peak = client.run(_peak_rss)
    out = e.compute()
    return dict(result=out, total=t1 - t0, shipped=sum(x["total"] for x in entries), peak=peak)


# ---- the report ----------------------------------------------------------------------------------------

def _gb(b: float) -> str:
    return f"{b / 1e9:.3f} GB"


def scaling_estimate(per_edge_s: float, n_b: int = 1_000_000_000, e_b: int = 20_000_000_000, d: int = D,
                     workers=(16, 64, 256), touched=None, net_gbit: float = 25.0) -> str:
    """Markdown: memory per worker, bytes per step and time per step for N = ``n_b`` nodes / ``e_b`` edges on W
    workers, one row block per worker (B = W node blocks), 1 thread per worker at ``per_edge_s``; ``touched``:
    node blocks each row block has edges into (None: all W, a graph without locality)."""
    lines = ["| workers | graph / worker | vectors / worker | X received / worker / step | step compute | "
             f"step transfer ({net_gbit:g} Gb/s) | step time | q = 4 steps |",
             "|---|---|---|---|---|---|---|---|"]
    for w in workers:
        rows = n_b / w
        k = w if touched is None else min(w, touched)
        # int32 local column indices, and per (row block, touched node block) piece an int64 indptr over the block's
        # rows, or (pieces touching fewer than half the rows) an indptr and the ids of the rows it touches: at most
        # 2 int64 per edge
        graph_b = (e_b / w) * 4 + min(k * rows * 8, 2 * (e_b / w) * 8)
        vec = 4 * rows * d * 4 + rows * d * 4  # prev, cur, accum, partial + the X block being added
        x_in = (k - 1) * rows * d * 4
        compute = (e_b / w) * per_edge_s
        transfer = x_in / (net_gbit * 1e9 / 8)
        step = max(compute, transfer)
        lines.append(f"| {w} | {graph_b / 1e9:.1f} GB | {vec / 1e9:.0f} GB | {x_in / 1e9:.0f} GB | {compute:.0f} s | "
                     f"{transfer:.0f} s | {step:.0f} s | {4 * step / 60:.1f} min |")
    return "\n".join(lines)


def report(rounds: int, out_path: str | None) -> str:
    import fastemb

    indptr, indices, n = load_graph()
    nnz = int(indptr[-1])
    blocks, a = row_blocks(indptr, indices, n)
    cluster, client = start_cluster()
    try:
        one, dsk, peer = [], [], []
        ref = None
        for r in range(rounds):
            ref, t = run_one_machine(indptr, indices, n)
            one.append(t)
            res = run_dask_fastemb(client, blocks)
            same = np.array_equal(res.pop("result").view(np.uint32), ref.view(np.uint32))
            assert same, "fastemb.dask.fastrp differs from fastemb.fastrp"
            dsk.append(res)
            pr = run_dask_scipy(client, a, n)
            pr.pop("result")
            peer.append(pr)
        client.close()
        cluster.close()
        cluster, client = start_cluster(work_stealing=False)
        no_steal = run_dask_fastemb(client, blocks)
        assert np.array_equal(no_steal.pop("result").view(np.uint32), ref.view(np.uint32))
        med = statistics.median
        t_one = med(one)
        t_place = med(x["place"] for x in dsk)
        t_comp = med(x["compute"] for x in dsk)
        t_tot = med(x["total"] for x in dsk)
        t_gather = med(x["gather"] for x in dsk)
        t_peer = med(x["total"] for x in peer)
        last = dsk[-1]
        steps = last["traffic"]["steps"]
        blk_bytes = [(n * (i + 1) // BLOCKS - n * i // BLOCKS) * D * 4 for i in range(BLOCKS)]
        # per-block rates: seconds of each chain link over its edges (the links of steps 2..q: dense X)
        links = last["links"]
        secs = [sum(ss["stop"] - ss["start"] for ss in x["startstops"] if ss["action"] == "compute") for x in links]
        link_s = sum(secs)
        q = len(WEIGHTS)
        per_edge = link_s / (nnz * (q - 1))
        lines = [
            "# fastemb.dask.fastrp: benchmark",
            "",
            f"Command: `python bench/bench_dask_fastrp.py --rounds {rounds}` (FASTEMB_BENCH_SCALE={SCALE}); "
            f"machine: {os.cpu_count()} cores ({fastemb.info()['isa']}), shared with other jobs: ratios only.",
            f"Graph: Chung-Lu {n:,} nodes / {nnz:,} stored nonzeros, d = {D}, paper preset (q = {q}), "
            f"{BLOCKS} row blocks of {n // BLOCKS:,} rows on a LocalCluster of {WORKERS} workers x 1 thread "
            f"(FASTEMB_NUM_THREADS=1); one machine: fastemb.fastrp with {WORKERS} threads. Medians of {rounds} "
            "rounds.",
            "",
            "| run | time | vs one machine |",
            "|---|---|---|",
            f"| fastemb.fastrp, one machine, {WORKERS} threads | {t_one:.2f} s | 1.00x |",
            f"| fastemb.dask.fastrp: place (scatter + build row blocks) | {t_place:.2f} s | |",
            f"| fastemb.dask.fastrp: compute (q steps + standardize, result on the workers) | {t_comp:.2f} s | |",
            f"| fastemb.dask.fastrp: place + compute | {t_tot:.2f} s | {t_tot / t_one:.2f}x |",
            f"| fastemb.dask.fastrp: gather the [N, d] result to the client | {t_gather:.2f} s | |",
            f"| peer: scipy SpMM under map_blocks, X broadcast whole each step | {t_peer:.2f} s | "
            f"{t_peer / t_one:.2f}x |",
            "",
            "Result: bit-identical to fastemb.fastrp (checked every round).",
            "",
            "## Bytes shipped between workers (last round)",
            "",
            "| step | X blocks shipped | minimum | ratio | partial sums / accumulators shipped |",
            "|---|---|---|---|---|",
        ]
        for t, st in steps.items():
            what = "tables of R's nonzeros (step 1 input)" if t == 0 and st["x_min"] == 0 else f"X^{t} (step {t + 1})"
            ratio = f"{st['x'] / st['x_min']:.2f}x" if st["x_min"] else "-"
            lines.append(f"| {what} | {_gb(st['x'])} | {_gb(st['x_min']) if st['x_min'] else '-'} | {ratio} | "
                         f"{_gb(st['other'])} |")
        lines += [
            f"| building the row blocks (setup) | {_gb(last['traffic']['setup'])} | | | |",
            f"| standardization statistics | {_gb(last['traffic']['stats'])} | | | |",
            f"| all of fastemb.dask.fastrp | {_gb(last['traffic']['total'])} | | | |",
            f"| peer (scipy, X broadcast whole), whole run | {_gb(peer[-1]['shipped'])} | | | |",
            "",
            "Partial sums / accumulators move only when Dask's work stealing hands a chain link to the other "
            "worker (the links are placed at their row block's worker with allow_other_workers=True, which "
            "stealing may override). The same run on a scheduler started with "
            "`distributed.scheduler.work-stealing: False` "
            f"({no_steal['total']:.2f} s place + compute):",
            "",
            "| step | X blocks shipped | minimum | partial sums / accumulators shipped |",
            "|---|---|---|---|",
            *[f"| {t} | {_gb(st['x'])} | {_gb(st['x_min']) if st['x_min'] else '-'} | {_gb(st['other'])} |"
              for t, st in no_steal["traffic"]["steps"].items()],
            "",
            f"An X block is {blk_bytes[0] / 1e6:.0f} MB ({n // BLOCKS:,} x {D} float32); each worker holds 2 row "
            "blocks, each with edges into all 4 node blocks, so each step must bring the 2 remote blocks to each "
            f"worker: {_gb(2 * 2 * blk_bytes[0])} per step.",
            "",
            "## Peak RSS per worker process (last round)",
            "",
            f"- fastemb.dask.fastrp: " + ", ".join(_gb(v) for v in last["peak"].values()),
            f"- peer: " + ", ".join(_gb(v) for v in peer[-1]["peak"].values()),
            "",
            "## Per-block rates (last round, task stream)",
            "",
            f"- {len(links)} chain links (A[i, j] @ X[j], one thread each): {link_s:.2f} s of compute in all, "
            f"{per_edge * 1e9:.1f} ns per edge at d = {D} ({nnz * (q - 1) / link_s / 1e6:.0f} M edges/s per thread; "
            f"steps 2..{q}, whose links add dense X blocks).",
            "",
            "## Scaling estimate: 1B nodes / 20B edges, d = 128, q = 4",
            "",
            "Assumptions: one row block per worker (B = W node blocks of N/W rows), 1 thread per worker at the "
            "per-edge rate measured above, 25 Gb/s of network per worker, the step time the larger of compute and "
            "transfer (Dask fetches the next X block while a link runs). Memory per worker: int32 local column "
            "indices (weights add 4 B per edge) and per (row block, node block) piece an int64 indptr over the "
            "block's rows, or, for a piece touching fewer than half of them, over the rows it touches plus their "
            "ids (at most 16 B per edge); 5 float32 [N/W, d] buffers (previous and current rows, "
            "the embedding accumulator, the chain's partial sum, the X block being added; Dask may prefetch one "
            "more X block). More row blocks than workers (B = k W) divide the buffers and the X block in flight by "
            "k, and leave the bytes per step unchanged.",
            "",
            "A graph without locality (node ids random, as the Chung-Lu graph here: every row block has edges into "
            "every node block, so each worker receives every other X block every step, (W-1)/W x N x d x 4 bytes):",
            "",
            scaling_estimate(per_edge),
            "",
            "A graph in a locality-preserving node order (graph partitioning such as METIS, or community / BFS "
            "order), each row block touching 8 node blocks:",
            "",
            scaling_estimate(per_edge, touched=8),
            "",
            "Bytes per step dominate without locality: the 1D row partition ships each X block to every worker, "
            "N x d x 4 = 512 GB received per worker per step at 1B nodes whatever W.",
        ]
        text = "\n".join(lines) + "\n"
        if out_path:
            with open(out_path, "w") as f:
                f.write(text)
        return text
    finally:
        client.close()
        cluster.close()


# ---- pytest-benchmark cases -----------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def dask_setup():
        pytest.importorskip("dask")
        pytest.importorskip("distributed")
        indptr, indices, n = load_graph()
        blocks, a = row_blocks(indptr, indices, n)
        cluster, client = start_cluster()
        yield indptr, indices, n, blocks, a, client
        client.close()
        cluster.close()

    @pytest.mark.parametrize("peer", ["fastemb", "fastemb.dask", "dask_scipy"])
    def test_dask_fastrp(benchmark, dask_setup, peer):
        from fastemb.bench_cli import record

        indptr, indices, n, blocks, a, client = dask_setup
        nnz = int(indptr[-1])
        shape = f"Chung-Lu {n} nodes {nnz} nnz d={D}, {BLOCKS} row blocks, {WORKERS} workers x 1 thread"
        if peer == "fastemb":
            fn = lambda: run_one_machine(indptr, indices, n)  # noqa: E731
            impl = f"fastemb.fastrp, one machine, {WORKERS} threads"
        elif peer == "fastemb.dask":
            def fn():
                res = run_dask_fastemb(client, blocks)
                benchmark.extra_info["traffic"] = {str(k): v for k, v in res["traffic"]["steps"].items()}
                return res
            impl = "fastemb.dask.fastrp on a LocalCluster (place + compute + gather)"
        else:
            def fn():
                res = run_dask_scipy(client, a, n)
                benchmark.extra_info["shipped_bytes"] = res["shipped"]
                return res
            impl = "scipy SpMM under dask map_blocks, X broadcast whole each step"
        record(benchmark, family="graph", kernel=f"fastrp over dask q={len(WEIGHTS)}", shape=shape,
               peer="fastemb" if peer == "fastemb.dask" else ("fastemb one machine" if peer == "fastemb"
                                                              else "dask + scipy"), impl=impl)
        benchmark.pedantic(fn, rounds=1 if SCALE >= 0.5 else 2, iterations=1, warmup_rounds=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    a = ap.parse_args()
    print(report(a.rounds, a.out))


if __name__ == "__main__":
    main()
