"""FastRP and very sparse random projection as pytest-benchmark cases (the graph family of
``python -m fastemb bench``), fastemb against its peers in the same process.

    python -m pytest bench/bench_fastrp.py --benchmark-json=bench-fastrp.json
    FASTEMB_BENCH_SCALE=0.01 python -m pytest bench/bench_fastrp.py   # seconds

bench/bench_graph.py is the fuller driver (every peer in its own subprocess, peak RSS, BlogCatalog);
this file reuses its peer implementations (run_scipy_spmm, run_reference, run_fastrp_pypi) so both time
the same code, and times fastemb through the public API.

Graph: a Chung-Lu power-law graph (bench/gen_graph.py, gamma 2.5, seed 0): 1M nodes / 20M stored
nonzeros x FASTEMB_BENCH_SCALE (the 1M graph is cached in /tmp at full scale), d = 128, the paper's
setting (q = 4, weights [0, 0, 1, 6.67], beta = -0.64, row-L2 normalization, s = sqrt(N), column
standardization). FASTEMB_BENCH_THREADS threads for fastemb, and for the peers through
RAYON/OMP/OPENBLAS_NUM_THREADS set before they load.

Peers:
    fastemb            fastemb.fastrp((indptr, indices, n), dim=128)  (paper preset; a new result each call)
    fastemb, out=      the same with out=buf, a [N, 128] buffer kept across calls (no fresh result pages)
    scipy SpMM         bench_graph.run_scipy_spmm: float32 D^-1 A @ U with scipy.sparse
    fastrp (PyPI)      fastrp.fit_csr (Rust, rayon; its own variant of the algorithm: a speed peer)
    paper code         bench_graph.run_reference (sklearn SparseRandomProjection + sparse products;
                       only up to 200k nodes: about 13.5 GB of RSS at 1M)
Projection alone (X @ R with R never stored, against sklearn fit + transform, which stores R):
    CSR X  = the graph's adjacency (n x n), d = 128
    dense X = 20000 x 2000 float32 (rows x SCALE), d = 128

Node reordering (fastemb.reorder_graph, issue 17): fastrp(..., out=buf) on the graph as given and on the
graph renumbered by RCM / by degree (the same bits), on the Chung-Lu graph and on a graph whose locality
the ids hide (bench/gen_graph.py shuffled_lattice: ring neighbours within 20k ids, ids shuffled; same
node and edge counts); the renumbering itself (median of ROUNDS builds) is in extra_info reorder_graph_s.

Limits (copy bandwidth, i.e. bytes read + written / the copy bandwidth measured by conftest.py):
FastRP: q propagations each reading prev rows once, the CSR, and writing cur + accum, plus the column
standardization; projection: the input read once and the output written.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_graph as bg  # noqa: E402
from gen_graph import chung_lu, shuffled_lattice  # noqa: E402

import fastemb  # noqa: E402
from fastemb.bench_cli import record  # noqa: E402

D = 128
NODES = max(1000, int(round(1_000_000 * SCALE)))
NNZ = max(10 * NODES, int(round(20_000_000 * SCALE)))
DENSE_ROWS = max(200, int(round(20_000 * SCALE)))
DENSE_COLS = 2000
FULL = SCALE >= 0.5
ROUNDS = int(os.environ.get("FASTEMB_BENCH_GRAPH_ROUNDS", "3"))
PEER_ROUNDS = 1 if FULL else ROUNDS  # scipy / PyPI fastrp take ~40 s a call on the 1M graph
REFERENCE_MAX_NODES = 200_000


def _num(v: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return str(v)


_GRAPH = {}


def graph():
    """(indptr int64, indices int32, n), generated once per session."""
    if "g" not in _GRAPH:
        if FULL and NODES == 1_000_000:
            from gen_graph import load_or_make

            indptr, indices = load_or_make(bg.CHUNGLU, NODES, NNZ, seed=0)
        else:
            indptr, indices = chung_lu(NODES, NNZ, seed=0)
        _GRAPH["g"] = (np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(indices, np.int32),
                       len(indptr) - 1)
    return _GRAPH["g"]


def _fastrp_bytes(n: int, nnz: int, d: int) -> int:
    lo, _ = bg.propagate_bytes(n, nnz, d)
    return len(bg.WEIGHTS) * lo + 2 * n * d * 4  # q propagations + standardization (read + write)


def _need(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        pytest.skip(f"{package} is not installed")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    fastemb.set_num_threads(THREADS)


FASTRP_PEERS = ["fastemb", "fastemb_out", "scipy_spmm", "fastrp_pypi", "reference"]
LABEL = {"fastemb": "fastemb", "fastemb_out": "fastemb, out=", "scipy_spmm": "scipy SpMM", "fastrp_pypi": "fastrp (PyPI)",
         "reference": "paper code (sklearn)", "sklearn_srp": "sklearn SRP"}


@pytest.mark.parametrize("peer", FASTRP_PEERS)
def test_fastrp(benchmark, peer):
    indptr, indices, n = graph()
    nnz = int(indptr[-1])
    rounds, warmup = (ROUNDS, 1) if peer.startswith("fastemb") else (PEER_ROUNDS, 0 if FULL else 1)
    if peer == "fastemb":
        impl = f"fastemb.fastrp (paper preset, {fastemb.info()['isa']}, {THREADS} threads)"

        def fn():
            return fastemb.fastrp((indptr, indices, n), dim=D, seed=0)
        e = fn()
        assert e.shape == (n, D) and np.isfinite(e).all()
    elif peer == "fastemb_out":
        # the same call writing into a buffer the caller keeps (out=): no fresh N x d result pages per call
        impl = f"fastemb.fastrp(..., out=buf) (paper preset, {fastemb.info()['isa']}, {THREADS} threads)"
        buf = np.empty((n, D), np.float32)

        def fn():
            return fastemb.fastrp((indptr, indices, n), dim=D, seed=0, out=buf)
        e = fn()
        assert e is buf and np.isfinite(e).all()
    elif peer == "scipy_spmm":
        _need("scipy", "scipy")
        impl = "float32 D^-1 A @ U with scipy.sparse (bench_graph.run_scipy_spmm)"
        fn = lambda: bg.run_scipy_spmm(indptr, indices, n, D)  # noqa: E731
    elif peer == "fastrp_pypi":
        fr = _need("fastrp", "fastrp (PyPI)")
        from importlib.metadata import version

        impl = f"fastrp {version('fastrp')} fit_csr (Rust, rayon)"
        fn = lambda: fr.fit_csr(indptr, indices, np.ones(len(indices), np.float32), n, D,  # noqa: E731
                                weights=bg.WEIGHTS, seed=0, undirected=False)
    elif peer == "reference":
        _need("scipy", "scipy")
        _need("sklearn", "scikit-learn")
        if n > REFERENCE_MAX_NODES:
            pytest.skip(f"paper code: skipped above {REFERENCE_MAX_NODES} nodes (about 13.5 GB RSS at 1M)")
        impl = "the paper's code (GTmac/FastRP) restated: sklearn SRP + scipy sparse products"
        fn = lambda: bg.run_reference(indptr, indices, n, D)  # noqa: E731
    else:
        raise AssertionError(peer)
    record(benchmark, family="graph", kernel=f"fastrp q={len(bg.WEIGHTS)}",
           shape=f"Chung-Lu {_num(n)} nodes {_num(nnz)} nnz d={D}", peer=LABEL[peer], impl=impl,
           nbytes=_fastrp_bytes(n, nnz, D), limit_kind="copy bandwidth")
    benchmark.extra_info.update(n=n, nnz=nnz, d=D, threads=THREADS, scale=SCALE)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


@pytest.mark.parametrize("peer", ["fastemb", "sklearn_srp"])
@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_projection(benchmark, layout, peer):
    if layout == "csr":
        _need("scipy", "scipy")
        import scipy.sparse as sp

        indptr, indices, n = graph()
        x = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, n))
        nbytes = x.indices.nbytes + x.indptr.nbytes + x.data.nbytes + n * D * 4
        shape = f"CSR adjacency {_num(n)} x {_num(n)}, {_num(x.nnz)} nnz -> d={D}"
    else:
        x = np.random.default_rng(0).standard_normal((DENSE_ROWS, DENSE_COLS)).astype(np.float32)
        nbytes = x.nbytes + DENSE_ROWS * D * 4
        shape = f"dense {_num(DENSE_ROWS)} x {_num(DENSE_COLS)} -> d={D}"
    if peer == "fastemb":
        impl = "fastemb.sparse_random_projection (s = sqrt(n), R generated on the fly)"

        def fn():
            return fastemb.sparse_random_projection(x, D, seed=0)
        out = fn()
        assert out.shape == (x.shape[0], D) and np.isfinite(out).all()
    else:
        _need("sklearn", "scikit-learn")
        from sklearn.random_projection import SparseRandomProjection

        impl = "sklearn SparseRandomProjection(density='auto').fit(X).transform(X)"

        def fn():
            return SparseRandomProjection(n_components=D, density="auto", random_state=0).fit(x).transform(x)
    record(benchmark, family="graph", kernel=f"sparse random projection ({layout})", shape=shape,
           peer=LABEL[peer], impl=impl, nbytes=nbytes, limit_kind="copy bandwidth")
    benchmark.extra_info.update(layout=layout, threads=THREADS, scale=SCALE)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def lattice():
    """The shuffled ring lattice (indptr, indices, n) with the Chung-Lu graph's node and edge counts."""
    if "lattice" not in _GRAPH:
        indptr, indices = shuffled_lattice(NODES, NNZ, seed=0)
        _GRAPH["lattice"] = (indptr, indices, len(indptr) - 1)
    return _GRAPH["lattice"]


GRAPHS = {"chung-lu": graph, "lattice": lattice}
GRAPH_LABEL = {"chung-lu": "Chung-Lu", "lattice": "shuffled ring lattice"}


def _reordered(kind: str, method: str):
    """(ReorderedGraph, median seconds of reorder_graph over ROUNDS builds): the one-time cost, reported with
    the timed runs (extra_info reorder_graph_s)."""
    key = ("reordered", kind, method)
    if key not in _GRAPH:
        times = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            G = fastemb.reorder_graph(GRAPHS[kind](), method)
            times.append(time.perf_counter() - t)
        _GRAPH[key] = (G, float(np.median(times)))
    return _GRAPH[key]


@pytest.mark.parametrize("order", ["given", "rcm", "degree"])
@pytest.mark.parametrize("kind", ["chung-lu", "lattice"])
def test_fastrp_reordered(benchmark, kind, order):
    """fastrp(out=buf) on the graph with its ids as given, or renumbered (reorder_graph timed apart, not here)."""
    if order == "rcm" and fastemb._backend.native() is None:  # (the native module has its own RCM)
        _need("scipy", "scipy")
    g = GRAPHS[kind]()
    indptr, _, n = g
    G, reorder_s = (g, 0.0) if order == "given" else _reordered(kind, order)
    buf = np.empty((n, D), np.float32)

    def fn():
        return fastemb.fastrp(G, dim=D, seed=0, out=buf)
    fn()
    if order != "given":  # the same bits as on the graph as given
        assert np.array_equal(buf, fastemb.fastrp(g, dim=D, seed=0))
    label = "fastemb" if order == "given" else f"fastemb, reorder_graph({order!r})"
    record(benchmark, family="graph", kernel=f"fastrp q={len(bg.WEIGHTS)}, node order",
           shape=f"{GRAPH_LABEL[kind]} {_num(n)} nodes {_num(int(indptr[-1]))} nnz d={D}", peer=label,
           impl=f"fastemb.fastrp(graph, out=buf) ({fastemb.info()['isa']}, {THREADS} threads)",
           nbytes=_fastrp_bytes(n, int(indptr[-1]), D), limit_kind="copy bandwidth")
    benchmark.extra_info.update(threads=THREADS, scale=SCALE, order=order, graph=kind, reorder_graph_s=reorder_s)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
