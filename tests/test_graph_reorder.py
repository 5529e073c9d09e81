"""Node reordering (fastemb.reorder_graph): FastRP on a ReorderedGraph is the same bits as on the graph, in the
original node order, for every preset, input form and option; bad input raises errors that name the argument."""
import builtins

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastemb
from fastemb.graph import reorder as R

sp = pytest.importorskip("scipy.sparse")


def random_graph(rng, n, p=0.05, weighted=True, directed=False, isolated=2):
    """scipy CSR [n, n] with the last ``isolated`` nodes edge-free and each row's entries in shuffled stored order
    (the kernels sum in stored order, so the renumbered rows must keep it)."""
    m = max(n - isolated, 0)
    mask = rng.random((m, m)) < p
    np.fill_diagonal(mask, False)
    if not directed:
        mask = np.triu(mask)
        mask = mask | mask.T
    rows, cols = np.nonzero(mask)
    if not weighted:
        w = np.ones(rows.shape[0])
    elif directed:
        w = rng.uniform(0.25, 4.0, rows.shape[0])
    else:  # a weight that depends on the pair only: A[i, j] == A[j, i]
        w = 0.5 + 0.01 * np.minimum(rows, cols) + 0.003 * np.maximum(rows, cols)
    A = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
    for i in range(n):
        s, e = A.indptr[i], A.indptr[i + 1]
        order = rng.permutation(e - s)
        A.indices[s:e] = A.indices[s:e][order]
        A.data[s:e] = A.data[s:e][order]
    A.has_sorted_indices = False
    return A


def local_graph(rng, n, per=4, window=20):
    """A ring lattice (neighbours within ``window`` ids) with shuffled ids: locality that only a reordering finds."""
    src = np.repeat(np.arange(n), per)
    dst = (src + rng.integers(1, window, src.shape[0])) % n
    perm = rng.permutation(n)
    return (perm[src], perm[dst])


def assert_same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    else:
        np.testing.assert_array_equal(a, b)


KWARGS = [
    dict(preset="paper"),
    dict(preset="gds"),
    dict(preset="gds", self_influence=0.5),  # the non-fused first step: R rows moved to the new order
    dict(preset="paper", standardize=True, weights=(1.0, 0.0, 2.0)),  # standardized after the order is restored
    dict(preset="paper", return_iterations=True),
    dict(preset="gds", degree="weighted", beta=0.3),
    dict(preset="paper", weights=(0.0, 0.0)),  # nothing accumulated
]


@pytest.mark.parametrize("kw", KWARGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("method", ["rcm", "degree", "given"])
@pytest.mark.parametrize("directed", [False, True])
def test_reordered_fastrp_same_bits(rng, kw, method, directed):
    A = random_graph(rng, 140, p=0.05, directed=directed)
    order = rng.permutation(140) if method == "given" else method
    G = fastemb.reorder_graph(A, order)
    assert G.method == method
    assert_same(fastemb.fastrp(G, 24, seed=5, **kw), fastemb.fastrp(A, 24, seed=5, **kw))


@pytest.mark.parametrize("sparse_features", [False, True])
def test_reordered_fastrp_features(rng, sparse_features):
    """Feature rows follow their nodes (dense and scipy.sparse features)."""
    A = random_graph(rng, 120, p=0.06)
    f = rng.standard_normal((120, 9)).astype(np.float32)
    if sparse_features:
        f[rng.random(f.shape) < 0.6] = 0
        f = sp.csr_matrix(f)
    G = fastemb.reorder_graph(A, "rcm")
    for preset in ("paper", "gds"):
        kw = dict(features=f, feature_ratio=0.25, preset=preset, seed=11)
        assert_same(fastemb.fastrp(G, 32, **kw), fastemb.fastrp(A, 32, **kw))


def test_reordered_edge_list_with_duplicates_and_counts(rng):
    """An edge list with parallel edges (relationship counts differ from stored entries) and symmetrize."""
    src = rng.integers(0, 60, 400)
    dst = rng.integers(0, 60, 400)
    w = rng.uniform(0.5, 2.0, 400)
    for preset in ("paper", "gds"):
        want = fastemb.fastrp((src, dst, w), 16, preset=preset, symmetrize=True, num_nodes=64)
        G = fastemb.reorder_graph((src, dst, w), "degree", symmetrize=True, num_nodes=64)
        assert G.csr.counts is not None
        assert_same(fastemb.fastrp(G, 16, preset=preset), want)
        assert_same(fastemb.fastrp(G, 16, preset=preset, num_nodes=64), want)


def test_reordered_fastrp_out(rng):
    A = random_graph(rng, 100, p=0.08)
    G = fastemb.reorder_graph(A)
    out = np.full((100, 16), np.nan, np.float32)
    assert fastemb.fastrp(G, 16, out=out) is out
    np.testing.assert_array_equal(out, fastemb.fastrp(A, 16))
    emb, its = fastemb.fastrp(G, 16, out=out, return_iterations=True)
    assert emb is out
    assert_same((emb, its), fastemb.fastrp(A, 16, return_iterations=True))


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_reordered_tiny_graphs(rng, n):
    A = sp.csr_matrix((n, n), dtype=np.float32)
    if n >= 2:
        A = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(n, n))
    for method in ("rcm", "degree"):
        G = fastemb.reorder_graph(A, method)
        assert G.order.shape == (n,) and G.inverse.shape == (n,)
        assert_same(fastemb.fastrp(G, 8), fastemb.fastrp(A, 8))


def test_reorder_order_and_inverse(rng):
    A = random_graph(rng, 90)
    for method in ("rcm", "degree"):
        G = fastemb.reorder_graph(A, method)
        np.testing.assert_array_equal(np.sort(G.order), np.arange(90))
        np.testing.assert_array_equal(G.order[G.inverse], np.arange(90))
        # row c of the renumbered graph is row order[c] of A, renumbered, in stored order
        for c in rng.integers(0, 90, 10):
            v = G.order[c]
            s, e = A.indptr[v], A.indptr[v + 1]
            np.testing.assert_array_equal(G.csr.indices[G.csr.indptr[c]:G.csr.indptr[c + 1]], G.inverse[A.indices[s:e]])
            np.testing.assert_array_equal(G.csr.data[G.csr.indptr[c]:G.csr.indptr[c + 1]], A.data[s:e].astype(np.float32))
    deg = np.diff(A.indptr)
    d_sorted = deg[fastemb.reorder_graph(A, "degree").order]
    assert np.all(d_sorted[:-1] >= d_sorted[1:])


def test_rcm_finds_hidden_locality(rng):
    """On a ring lattice with shuffled ids, RCM brings the bandwidth down from ~N to about the lattice's width."""
    n = 3000
    G = fastemb.reorder_graph(local_graph(rng, n), "rcm", num_nodes=n, symmetrize=True)
    before, after = G.bandwidth()
    assert before > n // 2
    assert after < n // 10
    src, dst = local_graph(rng, n)
    assert_same(fastemb.fastrp(fastemb.reorder_graph((src, dst), num_nodes=n, symmetrize=True), 16),
                fastemb.fastrp((src, dst), 16, num_nodes=n, symmetrize=True))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), p=st.floats(0.0, 0.4), seed=st.integers(0, 2**64 - 1),
       preset=st.sampled_from(["paper", "gds"]), directed=st.booleans(), data=st.data())
def test_reordered_property(n, p, seed, preset, directed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    A = random_graph(rng, n, p=p, directed=directed, isolated=min(n, 1))
    order = rng.permutation(n)
    assert_same(fastemb.fastrp(fastemb.reorder_graph(A, order), 8, seed=seed, preset=preset),
                fastemb.fastrp(A, 8, seed=seed, preset=preset))


# ---- bad input ----------------------------------------------------------------------------------

def test_reorder_errors(rng, monkeypatch):
    A = random_graph(rng, 30)
    with pytest.raises(ValueError, match="method must be one of"):
        fastemb.reorder_graph(A, "metis")
    with pytest.raises(ValueError, match="method: a permutation must have one entry per node"):
        fastemb.reorder_graph(A, np.arange(29))
    with pytest.raises(ValueError, match="method: not a permutation"):
        fastemb.reorder_graph(A, np.zeros(30, np.int64))
    with pytest.raises(ValueError, match="out of range"):
        fastemb.reorder_graph(A, np.arange(30) + 1)
    with pytest.raises(TypeError, match="must be an integer array"):
        fastemb.reorder_graph(A, np.arange(30, dtype=np.float64))
    with pytest.raises(ValueError, match="must be square"):
        fastemb.reorder_graph(sp.csr_matrix((3, 4)))
    G = fastemb.reorder_graph(A)
    with pytest.raises(ValueError, match="num_nodes=31 disagrees"):
        fastemb.fastrp(G, 8, num_nodes=31)
    with pytest.raises(ValueError, match="symmetrize"):
        fastemb.fastrp(G, 8, symmetrize=True)
    with pytest.raises(ValueError, match="features must have one row per node"):
        fastemb.fastrp(G, 8, features=np.ones((29, 3), np.float32), feature_ratio=0.5)

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(ImportError, match=r"reorder_graph\(method='rcm'\) without fastemb's native module needs scipy"):
        R.rcm_order_scipy(G.csr)
    fastemb.reorder_graph(A, "degree")  # no scipy needed


def test_hand_built_reordered_graph_is_checked(rng):
    """ReorderedGraph is public: fastrp checks a hand-built or edited one (no crash, no silent wrong order)."""
    import dataclasses

    A = random_graph(rng, 40)
    G = fastemb.reorder_graph(A)
    for a in (G.order, G.inverse, G.csr.indptr, G.csr.indices):
        assert not a.flags.writeable  # kept as built
    with pytest.raises(ValueError, match="read-only"):
        G.order[0] = 1
    bad = [
        (dataclasses.replace(G, order=np.r_[G.order, 0]), ValueError, "graph.order and graph.inverse must have 40"),
        (dataclasses.replace(G, inverse=G.inverse[::-1].copy()), ValueError, "a permutation of range"),
        (dataclasses.replace(G, order=G.order.astype(np.float64)), TypeError, "graph.order must be an integer"),
        (dataclasses.replace(G, csr=dataclasses.replace(G.csr, indptr=G.csr.indptr[:-1])), ValueError,
         "graph.csr: indptr must have 41 entries"),
        (dataclasses.replace(G, csr=dataclasses.replace(G.csr, indices=G.csr.indices + 40)), ValueError,
         "out of range"),
        (dataclasses.replace(G, csr=dataclasses.replace(G.csr, counts=np.ones(39, np.int64))), ValueError,
         "graph.csr.counts must be 40"),
        (dataclasses.replace(G, csr="nope"), TypeError, "graph.csr must be a fastemb.graph.Csr"),
    ]
    for g, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            fastemb.fastrp(g, 8)
    with pytest.raises(TypeError, match="got Csr"):  # a bare Csr is not a graph argument (it would skip the checks)
        fastemb.fastrp(G.csr, 8)


def test_reordered_dense_random_matrix_uses_no_big_table(rng, monkeypatch):
    """s < 32 (e.g. GDS's s = 3): R's rows are written and gathered instead of a permuted table of ~24 bytes
    per nonzero; s >= 32 takes the table. Same bits either way."""
    from fastemb.graph.ops import NumpyOps

    calls = []
    real = NumpyOps.random_table
    monkeypatch.setattr(NumpyOps, "random_table", lambda self, *a: calls.append(a) or real(self, *a))
    A = random_graph(rng, 200, p=0.05)
    G = fastemb.reorder_graph(A)
    for s, table in ((3.0, False), (31.0, False), (64.0, True)):
        calls.clear()
        assert_same(fastemb.fastrp(G, 16, s=s), fastemb.fastrp(A, 16, s=s))
        assert bool(calls) == (table and fastemb._backend.native() is not None), s


@pytest.mark.parametrize("isa", fastemb._backend.native_isas() or ["none"])
def test_reordered_same_bits_on_every_isa(rng, isa):
    C = fastemb._backend.native()
    if C is None:
        pytest.skip("native module fastemb._C not available (the NumPy backend runs the other tests)")
    before = C.active_isa()
    C.set_active_isa(isa)
    try:
        A = random_graph(rng, 300, p=0.03, directed=True)
        G = fastemb.reorder_graph(A)
        f = rng.standard_normal((300, 5)).astype(np.float32)
        for kw in (dict(), dict(preset="gds", self_influence=0.3), dict(features=f, feature_ratio=0.25),
                   dict(return_iterations=True, standardize=True)):
            assert_same(fastemb.fastrp(G, 40, seed=2, **kw), fastemb.fastrp(A, 40, seed=2, **kw))
    finally:
        C.set_active_isa(before)


def test_reordered_graph_rejected_where_unsupported(rng):
    """Only fastemb.fastrp knows how to put the rows back: the other graph entry points say so."""
    G = fastemb.reorder_graph(random_graph(rng, 20))
    with pytest.raises(TypeError, match="ReorderedGraph"):
        fastemb.graph.as_graph(G)


# ---- the native node-order kernels (graph.h rcm_order, permute_csr, gather_rows) ------------------------------

from fastemb import _backend  # noqa: E402
from fastemb.graph import ops as graph_ops  # noqa: E402

native = pytest.mark.skipif(_backend.native() is None, reason="native module fastemb._C not available")


def rcm_reference(indptr, indices, n):
    """graph.h's rcm_order restated: components from the lowest-degree unvisited node (ties: id), neighbours appended
    by (degree, id), the order reversed."""
    deg = np.diff(indptr)
    seen = np.zeros(n, bool)
    order = []
    for s in sorted(range(n), key=lambda v: (deg[v], v)):
        if seen[s]:
            continue
        seen[s] = True
        order.append(s)
        head = len(order) - 1
        while head < len(order):
            v = order[head]
            head += 1
            new = []
            for j in indices[indptr[v]:indptr[v + 1]]:
                if not seen[j]:
                    seen[j] = True
                    new.append(int(j))
            order += sorted(new, key=lambda u: (deg[u], u))
    return np.array(order[::-1], np.int64)


@native
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_native_rcm_order_matches_reference(rng, index_dtype):
    for n, p, directed in ((1, 0.0, False), (9, 0.0, False), (50, 0.05, True), (120, 0.03, False), (200, 0.01, True)):
        A = random_graph(rng, n, p=p, directed=directed, isolated=min(n, 3))
        csr = fastemb.graph.as_graph((A.indptr, A.indices.astype(index_dtype), n))
        got = graph_ops.rcm_order_native(csr)
        np.testing.assert_array_equal(got, rcm_reference(A.indptr, A.indices, n))


@native
def test_native_rcm_order_self_loops_duplicates_components(rng):
    # stored order with a self loop, a repeated neighbour, and three components (one isolated node)
    indptr = np.array([0, 3, 5, 6, 6, 8, 9], np.int64)
    indices = np.array([0, 1, 1, 0, 2, 1, 5, 5, 4], np.int32)
    csr = fastemb.graph.as_graph((indptr, indices, 6))
    np.testing.assert_array_equal(graph_ops.rcm_order_native(csr), rcm_reference(indptr, indices, 6))


@native
@pytest.mark.parametrize("weighted", [False, True])
def test_native_permute_csr_matches_numpy(rng, weighted):
    from fastemb.graph.reorder import take_csr_rows

    A = random_graph(rng, 150, p=0.04, weighted=weighted, directed=True)
    src, dst = A.nonzero()
    csr = fastemb.graph.as_graph((np.r_[src, src[:7]], np.r_[dst, dst[:7]]), num_nodes=150)  # counts differ
    assert csr.counts is not None
    order = rng.permutation(150).astype(np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(150)
    for dtype in (np.int32, np.int64):
        got = graph_ops.permute_csr_native(csr, order, inverse, dtype)
        want = take_csr_rows(csr, order, inverse)
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        assert got.indices.dtype == dtype
        np.testing.assert_array_equal(got.counts, want.counts)
        if want.data is None:
            assert got.data is None
        else:
            np.testing.assert_array_equal(got.data, want.data)
    bad = order.copy()
    bad[0], bad[1] = bad[1], bad[0]  # no longer the inverse of `inverse`
    with pytest.raises(ValueError, match="order: not a permutation"):
        graph_ops.permute_csr_native(csr, bad, inverse, np.int32)


@native
def test_native_gather_rows(rng):
    src = rng.standard_normal((50, 19)).astype(np.float32)
    idx = rng.integers(0, 50, 80).astype(np.int64)
    out = np.empty((80, 19), np.float32)
    graph_ops.gather_rows(src, idx, out)
    np.testing.assert_array_equal(out, src[idx])
    with pytest.raises(ValueError, match="idx: entry 50 at position 3"):
        graph_ops.gather_rows(src, np.array([0, 1, 2, 50], np.int64), np.empty((4, 19), np.float32))
    with pytest.raises(ValueError, match="dst: must not overlap src"):
        graph_ops.gather_rows(src, np.arange(10, dtype=np.int64), src[5:15])
