"""fastemb.dask.fastrp against fastemb.fastrp, bit for bit, on a real LocalCluster (2 worker processes,
one thread each): both presets, weights, features, self-influence, standardization across 4096-row
blocks, 1 / 2 / 3 / uneven row blocks, blocks without edges, a one-row block, edge lists as a dask
DataFrame and as dask arrays, a dask array of sparse row chunks; what moves between workers; bad input.

Sizes are small: starting the worker processes is most of the time, so the module shares one cluster.
Every computation waits at most TIMEOUT seconds: a hang fails the test.
"""
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
sp = pytest.importorskip("scipy.sparse")
pd = pytest.importorskip("pandas")

import fastemb  # noqa: E402
import importlib  # noqa: E402

# the module (fastemb.dask exports the function fastrp under the same name)
dfr = importlib.import_module("fastemb.dask._fastrp")

from _dask_cluster import TIMEOUT, cluster_fixtures, compute  # noqa: E402

D = 16

cluster, client = cluster_fixtures()


def assert_same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def graph(rng, n, weighted, isolated=0, sorted_=True):
    """A random symmetric-ish CSR with sorted indices; the first ``isolated`` nodes have no edges."""
    m = 4 * n
    src = rng.integers(isolated, n, size=m)
    dst = rng.integers(isolated, n, size=m)
    w = (rng.random(m) * 2 + 0.1) if weighted else np.ones(m)
    a = sp.csr_matrix((w.astype(np.float32), (src, dst)), shape=(n, n))
    a.sum_duplicates()
    a.sort_indices()
    return a


def split(a, sizes):
    offs = np.concatenate([[0], np.cumsum(sizes)])
    return [a[int(offs[k]):int(offs[k + 1])] for k in range(len(sizes))]


N = 120
BLOCKINGS = [[N], [60, 60], [40, 40, 40], [1, 50, 0, 69], [13, 1, 106], [10] * 12]  # 12: pieces list their rows


@pytest.mark.parametrize("preset", ["paper", "gds"])
@pytest.mark.parametrize("weighted", [True, False])
def test_row_blocks_bit_identical(client, rng, preset, weighted):
    a = graph(rng, N, weighted, isolated=14)  # block [1, 13) of the uneven blockings has no edges
    want = fastemb.fastrp(a, D, preset=preset, seed=5)
    blockings = BLOCKINGS if (preset, weighted) == ("paper", True) else BLOCKINGS[3:]  # time: the odd ones
    results = [dfr.fastrp(split(a, sizes), D, preset=preset, seed=5, client=client) for sizes in blockings]
    for got in compute(client, *results):
        assert_same_bits(got, want)
    assert results[-3].chunks[0] == (1, 50, 69)  # dask drops the empty block from the concatenation


@pytest.mark.parametrize("options", [
    dict(normalize=False, weights=[1.0, 0.5]),
    dict(propagate_normalized=True, self_influence=0.7, beta=-0.3),
    dict(preset="gds", degree="weighted", feature_scaling="shared", min_degree=0.0, standardize=True),
    dict(weights=[0.0, 0.0, 0.0]),
])
def test_options_bit_identical(client, rng, options):
    a = graph(rng, N, True, isolated=3)
    want = fastemb.fastrp(a, D, seed=11, **options)
    got = dfr.fastrp(split(a, [50, 1, 69]), D, seed=11, client=client, **options)
    assert_same_bits(compute(client, got)[0], want)


@pytest.mark.parametrize("sparse_features", [False, True])
@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_features(client, rng, sparse_features, preset):
    a = graph(rng, N, True)
    f = rng.standard_normal((N, 9)).astype(np.float32)
    if sparse_features:
        f[rng.random(f.shape) < 0.6] = 0
        f = sp.csr_matrix(f)
    want = fastemb.fastrp(a, D, features=f, feature_ratio=0.25, preset=preset, self_influence=0.3)
    got = dfr.fastrp(a, D, features=f, feature_ratio=0.25, preset=preset, self_influence=0.3, blocks=[70, 0, 50],
                     client=client)
    assert_same_bits(compute(client, got)[0], want)
    if not sparse_features:  # features as a dask array chunked differently from the row blocks
        fd = da.from_array(f, chunks=(33, 9))
        got = dfr.fastrp(a, D, features=fd, feature_ratio=0.25, preset=preset, self_influence=0.3, blocks=3,
                         client=client)
        assert_same_bits(compute(client, got)[0], want)


def test_standardize_across_4096_row_blocks(client, rng):
    # Column statistics over fixed 4096-row blocks: row blocks that split them (3000 rows) and one that is
    # aligned (4096) give one machine's float64 sums.
    n = 9000
    a = graph(rng, n, True, isolated=10)
    want, want_it = fastemb.fastrp(a, 8, weights=[1.0, 2.0], return_iterations=True)
    for sizes in ([3000, 3000, 3000], [4096, 4904], [1, 8191, 808]):
        got, it = dfr.fastrp(split(a, sizes), 8, weights=[1.0, 2.0], return_iterations=True, client=client)
        got, it = compute(client, got, it)
        assert_same_bits(got, want)
        assert_same_bits(it, want_it)


def test_edge_list_dataframe(client, rng):
    # Duplicate edges (summed), self loops, symmetrize, weights in float64 (summed before rounding), trailing
    # isolated nodes (num_nodes); the DataFrame's partitions are split by node block on the workers.
    n, m = 150, 700
    src = rng.integers(0, n - 5, size=m)
    dst = rng.integers(0, n - 5, size=m)
    src[:40], dst[:40] = src[40:80], dst[40:80]  # duplicates
    w = rng.random(m) * 3
    df = pd.DataFrame({"src": src, "dst": dst, "weight": w})
    ddf = dd.from_pandas(df, npartitions=3)
    for preset, symmetrize in [("paper", True), ("gds", True), ("gds", False)]:
        want = fastemb.fastrp((src, dst, w), D, preset=preset, num_nodes=n, symmetrize=symmetrize)
        got = dfr.fastrp(ddf, D, preset=preset, num_nodes=n, symmetrize=symmetrize, blocks=[40, 1, 0, 109],
                         client=client)
        assert_same_bits(compute(client, got)[0], want)
    # unweighted, N from the data, default blocks (one per partition)
    want = fastemb.fastrp((src, dst), D, preset="gds")
    got = dfr.fastrp(ddf[["src", "dst"]], D, preset="gds", client=client)
    assert got.shape == (int(max(src.max(), dst.max())) + 1, D)
    assert_same_bits(compute(client, got)[0], want)
    assert len(got.chunks[0]) == 3


def test_edge_list_dask_arrays_and_sparse_dask_array(client, rng):
    n, m = 100, 500
    src = rng.integers(0, n, size=m)
    dst = rng.integers(0, n, size=m)
    w = (rng.random(m) + 0.5).astype(np.float32)
    want = fastemb.fastrp((src, dst, w), D, num_nodes=n, symmetrize=True)
    arrs = tuple(da.from_array(x, chunks=170) for x in (src, dst, w))
    got = dfr.fastrp(arrs, D, num_nodes=n, symmetrize=True, blocks=2, client=client)
    assert_same_bits(compute(client, got)[0], want)
    a = graph(rng, n, True)
    darr = da.from_array(a, chunks=(30, n), asarray=False)
    want = fastemb.fastrp(a, D, preset="gds")
    got = dfr.fastrp(darr, D, preset="gds", client=client)
    assert_same_bits(compute(client, got)[0], want)
    assert got.chunks[0] == (30, 30, 30, 10)
    # symmetrize a scipy adjacency given in row blocks: A + A^T needs every block's columns (a shuffle)
    want = fastemb.fastrp(a, D, symmetrize=True)
    got = dfr.fastrp(split(a, [33, 67]), D, symmetrize=True, client=client)
    assert_same_bits(compute(client, got)[0], want)


def test_local_scheduler_and_coo_blocks(rng):
    # No distributed client: dask's threaded scheduler; COO blocks keep their relationship counts (degree='count').
    n = 80
    src = rng.integers(0, n, size=300)
    dst = rng.integers(0, n, size=300)
    coo = sp.coo_matrix((np.ones(300, np.float32), (src, dst)), shape=(n, n))
    want = fastemb.fastrp(coo, D, preset="gds")
    order = np.lexsort((dst, src))  # COO blocks with rows in order (duplicates adjacent)
    blocks = []
    for r0, r1 in [(0, 30), (30, n)]:
        sel = order[(src[order] >= r0) & (src[order] < r1)]
        blocks.append(sp.coo_matrix((np.ones(len(sel), np.float32), (src[sel] - r0, dst[sel])), shape=(r1 - r0, n)))
    got = dfr.fastrp(blocks, D, preset="gds", client=None)
    assert_same_bits(compute(None, got)[0], want)


def test_traffic_at_most_the_minimum(client, rng):
    # Each step ships each needed X block once to each other worker whose row blocks have edges into it; the
    # partial sums and accumulators never move.
    n = 400
    a = graph(rng, n, False)
    res = dfr.fastrp(split(a, [100] * 4), 64, weights=[1.0, 1.0, 1.0], standardize=False, client=client)
    compute(client, res)
    rep = dfr.traffic(client, res)
    owners = dfr._RUNS[dfr._token_of(res)]["owners"]
    assert len(set(owners)) == 2
    steps = rep["steps"]
    for t in (1, 2):
        assert steps[t]["x_min"] == 2 * 2 * 100 * 64 * 4  # every block has edges into every block
        assert steps[t]["x"] <= steps[t]["x_min"], rep
        assert steps[t]["other"] == 0, rep
    assert steps.get(0, {"x": 0})["x"] < 100 * 64 * 4  # the first step ships tables, not X^0


def test_bad_input(client, rng):
    a = graph(rng, 40, True)
    with pytest.raises(ValueError, match=r"graph\[1\] has 39 columns"):
        dfr.fastrp([a[:20], a[20:, :39]], D, client=client)
    with pytest.raises(ValueError, match=r"graph\[1\] starts at row 15, inside graph\[0\].*overlap"):
        dfr.fastrp([(0, a[:20]), (15, a[15:40])], D, client=client)
    with pytest.raises(ValueError, match=r"graph\[1\] starts at row 0, before graph\[0\].*increasing row order"):
        dfr.fastrp([(20, a[20:]), (0, a[:20])], D, client=client)
    with pytest.raises(ValueError, match=r"graph\[1\] starts at row 25.*rows 20..25 are in no block"):
        dfr.fastrp([(0, a[:20]), (25, a[25:])], D, client=client)
    with pytest.raises(ValueError, match=r"graph: the row blocks cover rows 0..20"):
        dfr.fastrp([a[:20]], D, client=client)
    with pytest.raises(TypeError, match=r"graph\[1\] must be a scipy.sparse matrix"):
        dfr.fastrp([a[:20], a[20:].toarray()], D, client=client)
    with pytest.raises(ValueError, match="blocks: the row blocks are given by graph"):
        dfr.fastrp([a], D, blocks=2, client=client)
    with pytest.raises(ValueError, match="blocks: the row counts add up to 30"):
        dfr.fastrp(a, D, blocks=[10, 20], client=client)
    with pytest.raises(ValueError, match="features must have one row per node"):
        dfr.fastrp(a, D, features=np.ones((39, 3), np.float32), feature_ratio=0.5, client=client)
    with pytest.raises(ValueError, match="weights"):
        dfr.fastrp(a, D, weights=[], client=client)
    # errors found on the workers while the row blocks are built still raise at the call, naming the argument
    top = a[:20].tolil()
    top.rows[0], top.data[0] = [3, 25], [1.0, 2.0]
    top = top.tocsr()
    top.indices[top.indptr[0]:top.indptr[1]] = [25, 3]  # row 0 stores column block 1 before column block 0
    top.data[top.indptr[0]:top.indptr[1]] = [2.0, 1.0]
    top.has_sorted_indices = False
    with pytest.raises(ValueError, match=r"graph\[0\]: row 0 stores column 3 \(node block 0\) after column 25"):
        dfr.fastrp([top, a[20:]], D, client=client)
    # one node block: a single column block, so any stored order is one machine's order
    rest = a[20:]
    whole = sp.csr_matrix((np.concatenate([top.data, rest.data]), np.concatenate([top.indices, rest.indices]),
                           np.concatenate([top.indptr, rest.indptr[1:] + top.indptr[-1]])), shape=(40, 40))
    assert list(whole.indices[:2]) == [25, 3]
    got = dfr.fastrp([whole], D, client=client)
    assert_same_bits(compute(client, got)[0], fastemb.fastrp(whole, D))
    bad = a[:20].copy()
    bad.data[0] = -1.0
    with pytest.raises(ValueError, match=r"graph\[0\] data must be >= 0"):
        dfr.fastrp([bad, a[20:]], D, client=client)
    src = da.from_array(np.array([0, 1, 45]), chunks=2)
    dst = da.from_array(np.array([1, 2, 3]), chunks=2)
    with pytest.raises(ValueError, match=r"graph \(partition 1\): edge list node index 45 is out of range"):
        dfr.fastrp((src, dst), D, num_nodes=40, client=client)
    with pytest.raises(ValueError, match="graph weights and graph src are chunked differently"):
        dfr.fastrp((src, dst, da.ones(3, chunks=3)), D, num_nodes=40, client=client)
    nan_chunks = da.from_array(a, chunks=(20, 40), asarray=False)[da.ones(40, chunks=20) > 0]
    with pytest.raises(ValueError, match="graph has unknown chunk sizes"):
        dfr.fastrp(nan_chunks, D, client=client)


def test_killed_worker_same_bits(client, rng):
    # A worker killed by its pid mid-computation: Dask recomputes what was lost (row blocks from the dask
    # array's chunks, the chains and accumulators from them) and the result is still one machine's bits. The
    # accumulators continued in place are each used by exactly one task, so a recomputation never sees a
    # mutated one.
    import os
    import signal

    n = 40000
    a = graph(rng, n, True)
    weights = [1.0] * 24
    want = fastemb.fastrp(a, 32, weights=weights)
    darr = da.from_array(a, chunks=(n // 4, n), asarray=False)
    got = dfr.fastrp(darr, 32, weights=weights, client=client)  # started on the workers
    time.sleep(0.3)
    futures = client.compute([got])
    assert not futures[0].done(), "finished before the kill: make the graph larger"
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    assert_same_bits(futures[0].result(timeout=TIMEOUT), want)
    client.wait_for_workers(2, timeout=TIMEOUT)  # the nanny restarts it


def test_local_scheduler_numpy_fallback(rng, monkeypatch):
    # Without the native module (the NumPy reference behind fastemb.graph.NumpyOps): the block steps, the first
    # step's random rows and the split statistics still give the native one-machine bits.
    from fastemb import graph as g

    n = 4200  # two 4096-row statistics blocks, one split between the row blocks
    a = graph(rng, n, True, isolated=2)
    want = fastemb.fastrp(a, 8, weights=[0.5, 1.0])
    monkeypatch.setattr(g.ops, "_native", lambda name: None)
    got = dfr.fastrp(split(a, [2000, 2200]), 8, weights=[0.5, 1.0], client=None)
    assert_same_bits(compute(None, got)[0], want)


def test_degenerate_graphs_and_arguments():
    # No nodes, one node with a self loop, no edges at all (local scheduler); argument errors raised at the call.
    for a in (sp.csr_matrix((0, 0), dtype=np.float32), sp.csr_matrix(np.array([[2.0]], np.float32)),
              sp.csr_matrix((7, 7), dtype=np.float32)):
        got = dfr.fastrp(a, D, blocks=min(2, a.shape[0]) or 1, client=None)
        assert_same_bits(compute(None, got)[0], fastemb.fastrp(a, D))
    a = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(TypeError, match="blocks must be an int"):
        dfr.fastrp(a, D, blocks="2", client=None)
    with pytest.raises(ValueError, match=r"blocks\[1\] must be >= 0"):
        dfr.fastrp(a, D, blocks=[5, -1], client=None)
    with pytest.raises(ValueError, match="dtype"):
        dfr.fastrp(a, D, dtype="float64", client=None)
    with pytest.warns(UserWarning, match="progress"):
        dfr.fastrp(a, D, progress=True, client=None)


def test_three_and_one_workers(cluster, client, rng):
    # The same bits on 3 workers and on 1 (the module's last test: it resizes the cluster).
    a = graph(rng, N, True, isolated=5)
    want = fastemb.fastrp(a, D, preset="gds", seed=3)
    for workers in (3, 1):
        cluster.scale(workers)
        deadline = time.time() + TIMEOUT
        while len(client.scheduler_info(n_workers=-1)["workers"]) != workers:
            assert time.time() < deadline, f"the cluster did not reach {workers} workers"
            time.sleep(0.1)
        got = dfr.fastrp(split(a, [30, 1, 29, 60]), D, preset="gds", seed=3, client=client)
        assert_same_bits(compute(client, got)[0], want)
