"""FastRP and very sparse random projection: fastemb against its peers, in the same run.

    python bench/bench_graph.py                       # both graphs, every peer (minutes)
    python bench/bench_graph.py --graph blogcatalog   # the real graph only
    python bench/bench_graph.py --graph chunglu --peers fastemb,fastrp_pypi,scipy_spmm
    python bench/bench_graph.py --json out.json       # also write the raw results

Every peer runs in its own subprocess (2 threads: FASTEMB_NUM_THREADS / RAYON_NUM_THREADS /
OMP_NUM_THREADS), which reports its time and its peak RSS (resource.getrusage ru_maxrss) after the
graph is loaded and after the computation, so "extra" memory is what the computation added.

Graphs: BlogCatalog (/work/shared/data/blogcatalog.mat, key 'network', 10,312 nodes, d = 512) and a
Chung-Lu power-law graph from bench/gen_graph.py (1M nodes / 20M nonzeros, d = 128, cached in
/tmp). FastRP setting (both graphs): q = 4 iterations, weights [0, 0, 1, 6.67], beta = -0.64,
row-L2 normalization, s = sqrt(N), column standardization (the paper's BlogCatalog setting).

Peers (FastRP):
    fastemb        the public fastemb.fastrp() (python/fastemb/graph/embedding.py) when it exists, else as below.
    fastemb_kernels  the kernels driven directly: propagate_random (step 1, U_1 = M diag(deg^beta) R
                   with R as sparse lists) -> propagate x 3 (fused D^-1 A SpMM + row-L2 + weighted
                   sum) -> standardize_columns; 3 N x d float32 buffers. Speedups are against this.
    fastemb_kernels_bands  (not in the default list) the same with the dense steps forced into
                   column bands of 8 MB of prev (FASTEMB_GRAPH_BAND_ROWS; same bits): shows what
                   the cache-blocked step costs where the automatic choice leaves it off.
    scipy_spmm     float32 re-implementation with scipy: M = D^-1 A (CSR), U = M @ (deg^beta R),
                   U = M @ U, sklearn-style normalize + weighted sum, column scaling.
    reference      the computation of the paper's public code (GTmac/FastRP, restated): sklearn
                   SparseRandomProjection fitted on M, components scaled by deg^beta, sparse x
                   sparse products M @ U, normalize, weighted sum, sklearn scale. Skipped on the
                   1M graph (13.5 GB RSS there).
    fastrp_pypi    PyPI `fastrp` (Rust, rayon): fastrp.fit_csr(indptr, indices, values, N, dim,
                   weights, seed, undirected=False) -- its own algorithm variant (GDS-like); a
                   speed peer, not a bit-for-bit one.
Peers (projection kernel alone, X = the graph's adjacency as CSR, and a dense X):
    fastemb_proj   _C.graph_project_csr / graph_project_dense (R never stored)
    sklearn_srp    SparseRandomProjection(n_components=d, density='auto').fit(X).transform(X)
                   (time of fit + transform; fit generates and stores R)

Bandwidth: a sequential-read probe (numpy sum over 1 GB) in the fastemb subprocess; each
propagate's bytes are reported two ways: "min" (every row of prev read once, indices, cur written,
accum read and written) and "gather" (every edge's row of prev read from memory).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BLOG = "/work/shared/data/blogcatalog.mat"
CHUNGLU = "/tmp/fastemb_chunglu_1m_20m.npz"
WEIGHTS = [0.0, 0.0, 1.0, 6.67]
BETA = -0.64
THREADS = 2
GRAPHS = {"blogcatalog": 512, "chunglu": 128}
PEERS = ["fastemb", "fastemb_kernels", "scipy_spmm", "reference", "fastrp_pypi", "fastemb_proj", "sklearn_srp", "fastemb_proj_dense",
         "sklearn_srp_dense"]


def rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (ru_maxrss would carry the parent's peak over fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_graph(name: str):
    """(indptr int64, indices int32, n) of a symmetric unweighted graph."""
    if name == "blogcatalog":
        import scipy.io
        import scipy.sparse as sp

        a = sp.csr_matrix(scipy.io.loadmat(BLOG)["network"])
        a.sum_duplicates()
        a.sort_indices()
        return a.indptr.astype(np.int64), a.indices.astype(np.int32), a.shape[0]
    sys.path.insert(0, HERE)
    from gen_graph import load_or_make

    indptr, indices = load_or_make(CHUNGLU, 1_000_000, 20_000_000, seed=0)
    return indptr, indices, len(indptr) - 1


def as_scipy(indptr, indices, n):
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, n))


# ---- peers ---------------------------------------------------------------------------------------------

def fastemb_kernels(indptr, indices, n, d, seed=0):
    """FastRP through the kernels (3 N x d float32 buffers)."""
    from fastemb import _C
    from fastemb._reference.graph import random_spec

    deg = np.diff(indptr).astype(np.float64)
    ok = deg > 0
    inv_deg = np.where(ok, 1.0 / np.where(ok, deg, 1.0), 0.0).astype(np.float32)
    deg_beta = np.where(ok, np.power(np.where(ok, deg, 1.0), BETA), 0.0).astype(np.float32)
    threshold, value = random_spec(max(1.0, float(np.sqrt(n))), d)
    bufs = [np.empty((n, d), np.float32) for _ in range(2)]
    accum = np.empty((n, d), np.float32)
    for b in bufs + [accum]:
        _C.graph_advise_huge_pages(b.ctypes.data, b.nbytes)
    accum[:] = 0.0
    prev, cur = bufs
    times = []
    t = time.perf_counter()
    # step 1: U_1 = M diag(deg^beta) R with R as sparse lists (never an N x d matrix)
    _C.graph_propagate_random(seed, threshold, float(value), d, deg_beta.ctypes.data, indptr.ctypes.data,
                              indices.ctypes.data, indices.dtype == np.int32, 0, n, inv_deg.ctypes.data,
                              prev.ctypes.data, True, False, WEIGHTS[0], accum.ctypes.data if WEIGHTS[0] else 0)
    times.append(time.perf_counter() - t)
    for w in WEIGHTS[1:]:
        t = time.perf_counter()
        _C.graph_propagate(indptr.ctypes.data, indices.ctypes.data, indices.dtype == np.int32, 0, n,
                           inv_deg.ctypes.data, prev.ctypes.data, d, cur.ctypes.data, True, False, w,
                           accum.ctypes.data if w != 0.0 else 0)
        times.append(time.perf_counter() - t)
        prev, cur = cur, prev
    mean, std = np.empty(d), np.empty(d)
    _C.graph_standardize_columns(accum.ctypes.data, n, d, mean.ctypes.data, std.ctypes.data)
    return accum, times


def run_fastemb_kernels(indptr, indices, n, d):
    import fastemb

    fastemb.set_num_threads(THREADS)
    e, times = fastemb_kernels(indptr, indices, n, d)
    return e, {"api": "kernels", "step_s": times}


def run_fastemb_kernels_bands(indptr, indices, n, d):
    """fastemb_kernels with the dense steps forced into column bands of 8 MB of prev (graph.h "Column bands";
    the automatic choice keeps them off on the benchmark graphs). Same bits as fastemb_kernels."""
    os.environ["FASTEMB_GRAPH_BAND_ROWS"] = str((8 << 20) // (4 * d))
    e, info = run_fastemb_kernels(indptr, indices, n, d)
    return e, {**info, "api": f"kernels, bands of {os.environ['FASTEMB_GRAPH_BAND_ROWS']} rows forced"}


def run_fastemb(indptr, indices, n, d):
    import fastemb

    fastemb.set_num_threads(THREADS)
    if hasattr(fastemb, "fastrp"):
        import scipy.sparse as sp

        g = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, n))
        return fastemb.fastrp(g, dim=d, weights=WEIGHTS, beta=BETA, s="sqrt", normalize=True, standardize=True,
                              seed=0), {"api": "fastemb.fastrp"}
    e, times = fastemb_kernels(indptr, indices, n, d)
    return e, {"api": "kernels", "step_s": times}


def run_scipy_spmm(indptr, indices, n, d):
    import scipy.sparse as sp

    a = as_scipy(indptr, indices, n)
    deg = np.asarray(a.sum(axis=1)).ravel()
    ok = deg > 0
    m = sp.diags(np.where(ok, 1.0 / np.where(ok, deg, 1), 0).astype(np.float32)) @ a
    m = m.tocsr().astype(np.float32)
    rng = np.random.default_rng(0)
    s = np.sqrt(n)
    r = rng.choice(np.array([-1, 0, 1], np.float32), size=(n, d), p=[0.5 / s, 1 - 1 / s, 0.5 / s]) * np.float32(
        np.sqrt(s / d))
    u = m @ (np.where(ok, np.power(np.where(ok, deg, 1), BETA), 0).astype(np.float32)[:, None] * r)
    e = np.zeros((n, d), np.float32)
    for i, w in enumerate(WEIGHTS):
        if i:
            u = m @ u
        norms = np.linalg.norm(u, axis=1, keepdims=True)
        if w:
            e += np.float32(w) * (u / np.where(norms > 0, norms, 1))
    e -= e.mean(axis=0)
    sd = e.std(axis=0)
    e /= np.where(sd > 0, sd, 1)
    return e, {}


def run_reference(indptr, indices, n, d):
    # The paper's public code (GTmac/FastRP fastrp_projection + fastrp_merge), restated.
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize, scale
    from sklearn.random_projection import SparseRandomProjection

    a = sp.csc_matrix(as_scipy(indptr, indices, n).astype(np.float64))
    rowsum = np.asarray(a.sum(axis=1)).ravel()
    m = sp.spdiags(1.0 / rowsum, 0, n, n) @ a
    transformer = SparseRandomProjection(n_components=d, random_state=42)
    y = transformer.fit(m)
    y.components_ = y.components_ @ sp.spdiags(np.power(rowsum, BETA), 0, n, n)
    cur = transformer.transform(m)
    us = [cur]
    for _ in range(2, len(WEIGHTS) + 1):
        cur = m @ cur
        us.append(cur)
    dense = [np.asarray(u.todense()) if sp.issparse(u) else u for u in us]
    dense = [normalize(u, norm="l2", axis=1) for u in dense]
    out = np.zeros_like(dense[0])
    for u, w in zip(dense, WEIGHTS):
        out += u * w
    return scale(out), {}


def run_fastrp_pypi(indptr, indices, n, d):
    import fastrp

    return fastrp.fit_csr(indptr, indices, np.ones(len(indices), np.float32), n, d, weights=WEIGHTS, seed=0,
                          undirected=False), {"version": __import__("importlib.metadata").metadata.version("fastrp")}


def run_fastemb_proj(indptr, indices, n, d):
    import fastemb
    from fastemb import _C
    from fastemb._reference.graph import random_spec

    fastemb.set_num_threads(THREADS)
    threshold, value = random_spec(float(np.sqrt(n)), d)
    out = np.empty((n, d), np.float32)
    _C.graph_project_csr(0, threshold, float(value), d, indptr.ctypes.data, indices.ctypes.data, True, 0, n, n,
                         out.ctypes.data)
    return out, {}


def run_sklearn_srp(indptr, indices, n, d):
    from sklearn.random_projection import SparseRandomProjection

    x = as_scipy(indptr, indices, n)
    return SparseRandomProjection(n_components=d, density="auto", random_state=0).fit(x).transform(x), {}


DENSE_SHAPE = (20000, 2000)


def dense_x():
    return np.random.default_rng(0).standard_normal(DENSE_SHAPE).astype(np.float32)


def run_fastemb_proj_dense(indptr, indices, n, d):
    import fastemb
    from fastemb import _C
    from fastemb._reference.graph import random_spec

    fastemb.set_num_threads(THREADS)
    x = dense_x()
    t = time.perf_counter()
    threshold, value = random_spec(float(np.sqrt(x.shape[1])), d)
    out = np.empty((x.shape[0], d), np.float32)
    _C.graph_project_dense(0, threshold, float(value), d, x.ctypes.data, x.shape[0], x.shape[1], out.ctypes.data)
    return out, {"time_override": time.perf_counter() - t, "shape": list(DENSE_SHAPE)}


def run_sklearn_srp_dense(indptr, indices, n, d):
    from sklearn.random_projection import SparseRandomProjection

    x = dense_x()
    t = time.perf_counter()
    out = SparseRandomProjection(n_components=d, density="auto", random_state=0).fit(x).transform(x)
    return out, {"time_override": time.perf_counter() - t, "shape": list(DENSE_SHAPE)}


def bandwidth_gbs() -> float:
    a = np.ones(1 << 28, np.float32)  # 1 GB
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def child(peer: str, graph: str) -> dict:
    d = GRAPHS[graph]
    indptr, indices, n = load_graph(graph)
    rss0 = rss_mb()
    fn = globals()["run_" + peer]
    t = time.perf_counter()
    e, info = fn(indptr, indices, n, d)
    dt = time.perf_counter() - t
    dt = info.pop("time_override", dt)
    res = {"peer": peer, "graph": graph, "n": n, "nnz": int(indptr[-1]), "d": d, "time_s": dt, "rss_loaded_mb": rss0,
           "rss_peak_mb": rss_mb(), **info}
    e = e.toarray() if hasattr(e, "toarray") else np.asarray(e)
    res["finite"] = bool(np.isfinite(e).all())
    if peer.startswith("fastemb") and "step_s" in res:
        res["bandwidth_gbs"] = bandwidth_gbs()
    return res


def run_peer(peer: str, graph: str, timeout: float) -> dict:
    env = dict(os.environ, FASTEMB_NUM_THREADS=str(THREADS), RAYON_NUM_THREADS=str(THREADS),
               OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", peer, "--graph", graph],
                           capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "graph": graph, "error": f"timeout after {timeout} s"}
    if p.returncode != 0:
        return {"peer": peer, "graph": graph, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def propagate_bytes(n: int, nnz: int, d: int):
    row = 4 * d
    base = nnz * 4 + (n + 1) * 8 + n * row + 2 * n * row  # indices, indptr, cur written, accum read + written
    return base + n * row, base + nnz * row


def report(results: list) -> str:
    lines = ["| graph | peer | time (s) | peak RSS (MB) | extra RSS (MB) | fastemb speedup | note |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["graph"], r["peer"]): r for r in results}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['graph']} | {r['peer']} | - | - | - | - | {r['error']} |")
            continue
        ref_peer = "fastemb_kernels" if not r["peer"].startswith(("fastemb_proj", "sklearn_srp")) else (
            "fastemb_proj_dense" if r["peer"].endswith("dense") else "fastemb_proj")
        f = by.get((r["graph"], ref_peer))
        speed = f"{r['time_s'] / f['time_s']:.1f}x" if f and "error" not in f and r["peer"] != ref_peer else ""
        note = ""
        if r["peer"] in ("fastemb", "fastemb_kernels", "fastemb_kernels_bands"):
            nd = r["n"] * r["d"] * 4 / 2**20
            note = f"N*d*4 = {nd:.0f} MB; {r.get('api', '')}"
            if "step_s" in r:
                lo, hi = propagate_bytes(r["n"], r["nnz"], r["d"])
                t = min(r["step_s"][1:])
                bw = r["bandwidth_gbs"]
                note += (f"; step 1 (sparse R) {r['step_s'][0] * 1e3:.0f} ms, dense propagate {t * 1e3:.0f} ms"
                         f" (best of {len(r['step_s']) - 1}): {lo / t / 1e9:.1f} GB/s of min bytes ({lo / t / 1e9 / bw:.0%}"
                         f" of the {bw:.1f} GB/s read probe), {hi / t / 1e9:.1f} GB/s of gather bytes"
                         f" ({hi / t / 1e9 / bw:.0%})")
        lines.append(f"| {r['graph']} | {r['peer']} | {r['time_s']:.3f} | {r['rss_peak_mb']:.0f} | "
                     f"{r['rss_peak_mb'] - r['rss_loaded_mb']:.0f} | {speed} | {note} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="FastRP benchmark: fastemb vs peers")
    ap.add_argument("--graph", default="all", choices=["all"] + list(GRAPHS))
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--child", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeout", type=float, default=1200)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.graph)))
        return
    graphs = list(GRAPHS) if a.graph == "all" else [a.graph]
    results = []
    for g in graphs:
        load_graph(g)  # generate / cache outside the timed children
        for peer in a.peers.split(","):
            if peer == "reference" and g == "chunglu":
                results.append({"peer": peer, "graph": g, "error": "skipped: needs ~13.5 GB RSS (spec anchor 314 s)"})
                continue
            r = run_peer(peer, g, a.timeout)
            print(json.dumps(r), flush=True)
            results.append(r)
    print(report(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
