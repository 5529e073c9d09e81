"""FastRP and very sparse random projection (fastemb.graph).

Three levels of agreement:
* bitwise: the public API against the readable reference driver ``fastemb._reference.graph.fastrp``
  (same kernel rules; native kernels or the NumPy fallback). Column standardization sums in float64 and the
  native kernel may order a block's rows differently from the reference, so standardized outputs are
  compared to within 2 float32 ulps (of max(|x|, 1)) instead;
* float64 oracle: an independent scipy implementation of the spec given the same R (rtol 1e-4);
* statistical: JL distance preservation, nonzero rate 1/s, community separation on a stochastic block model.
"""
import math
import sys

import numpy as np
import pytest

import fastemb
from fastemb import graph as G
from fastemb._reference import graph as ref

sp = pytest.importorskip("scipy.sparse")

from hypothesis import given, settings, strategies as st  # noqa: E402


# ---- helpers ------------------------------------------------------------------------------------

def random_graph(rng, n, p=0.05, weighted=False, directed=False, isolated=0):
    """Random graph as a scipy CSR float64 matrix; the last ``isolated`` nodes have no edges at all."""
    m = n - isolated
    mask = rng.random((m, m)) < p
    np.fill_diagonal(mask, False)
    if not directed:
        mask = np.triu(mask)
        mask = mask | mask.T
    w = rng.uniform(0.25, 4.0, (m, m)).astype(np.float32).astype(np.float64) if weighted else np.ones((m, m))
    if not directed:
        w = np.triu(w) + np.triu(w, 1).T
    dense = np.zeros((n, n))
    dense[:m, :m] = np.where(mask, w, 0)
    return sp.csr_matrix(dense)


def rownorm(x):
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(nrm > 0, x / np.where(nrm > 0, nrm, 1), 0)


def oracle(A, dim, *, weights, beta, s, seed=0, normalize=True, propagate_normalized=False, self_influence=0.0,
           standardize=True, min_degree=0.0, features=None, feature_dim=0, feature_s=None, degree="weighted",
           feature_scaling="shared"):
    """The spec in float64 with scipy, given the same R (materialized from the reference generator)."""
    A = sp.csr_matrix(A, dtype=np.float64)
    n = A.shape[0]
    if degree == "count":  # the relationship count: stored entries per row (weights ignored)
        deg = np.diff(A.indptr).astype(np.float64)
    else:
        deg = np.asarray(A.sum(axis=1)).ravel()
    block = feature_scaling == "block" and feature_dim > 0
    threshold, value = ref.random_spec(s, dim - feature_dim if block and feature_dim < dim else dim)
    R = ref.random_rows(seed, threshold, value, dim, 0, n).astype(np.float64)
    scale0 = np.ones(n)
    scale0[deg > 0] = deg[deg > 0] ** beta
    init = R * scale0[:, None]
    if feature_dim:
        f = np.asarray(features, np.float64)
        ft, fv = ref.random_spec(feature_s, feature_dim if block else dim)
        Rf = ref.random_rows(seed ^ ref.FEATURE_SEED_XOR, ft, fv, feature_dim, 0, f.shape[1]).astype(np.float64)
        init[:, dim - feature_dim:] = f @ Rf
    den = np.maximum(deg, min_degree)
    inv = np.zeros(n)
    inv[den > 0] = 1.0 / den[den > 0]
    M = sp.diags(inv) @ A
    E = self_influence * rownorm(init)
    cur = init
    for a in weights:
        u = M @ cur
        v = rownorm(u) if normalize else u
        E = E + a * v
        cur = v if propagate_normalized else u
    if standardize:
        std = E.std(axis=0)
        E = (E - E.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return E


def assert_oracle_close(got, want, rtol=1e-4):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))


def assert_ulps(got, want, ulps=2):
    """|got - want| <= ulps float32 spacings of max(|want|, 1) (standardized outputs, float64 statistics)."""
    tol = ulps * np.spacing(np.maximum(np.abs(want), np.float32(1)))
    assert np.all(np.abs(got.astype(np.float64) - want) <= tol), float(np.max(np.abs(got - want)))


def csr_parts(A):
    A = sp.csr_matrix(A)
    return A.indptr.astype(np.int64), A.indices, A.data.astype(np.float32), A.shape[0]


def reference_fastrp(A, dim, preset="paper", **kw):
    p = dict(G.PRESETS[preset])
    p.update(kw)
    indptr, indices, data, n = csr_parts(A)
    s = G.resolve_s(p.pop("s"), n)
    features = p.pop("features", None)
    fr = p.pop("feature_ratio", 0.0)
    fd = int(math.floor(dim * fr)) if features is not None else 0
    fs = G.resolve_s(kw.get("s", G.PRESETS[preset]["s"]), features.shape[1]) if fd else 3.0
    weights = p.pop("weights")
    data = None if np.all(data == 1) else data
    return ref.fastrp(indptr, indices, data, n, dim, weights, p.pop("beta"), s, features=features, feature_dim=fd,
                      feature_s=fs, **p)


# ---- sparse random projection -------------------------------------------------------------------

@pytest.mark.parametrize("s", ["sqrt", 3, 1, 7.5])
def test_projection_matches_reference_bitwise(rng, s):
    x = rng.standard_normal((37, 129)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0
    seed = int(rng.integers(0, 2**63)) * 2 + 1
    got = fastemb.sparse_random_projection(x, 45, s=s, seed=seed)
    threshold, value = ref.random_spec(G.resolve_s(s, 129), 45)
    np.testing.assert_array_equal(got, ref.project_dense(seed, threshold, value, 45, x))
    # and the float64 product with the materialized R
    R = ref.random_rows(seed, threshold, value, 45, 0, 129).astype(np.float64)
    np.testing.assert_allclose(got, x.astype(np.float64) @ R, rtol=1e-5, atol=1e-5)


def test_projection_dense_and_sparse_equal(rng):
    x = rng.standard_normal((50, 300))
    x[rng.random(x.shape) < 0.9] = 0
    dense = fastemb.sparse_random_projection(x, 64, seed=3)
    for fmt in ("csr", "csc", "coo"):
        np.testing.assert_array_equal(fastemb.sparse_random_projection(sp.csr_matrix(x).asformat(fmt), 64, seed=3),
                                      dense)
    np.testing.assert_array_equal(fastemb.sparse_random_projection(x.astype(np.float32), 64, seed=3), dense)
    csr = sp.csr_matrix(x.astype(np.float32))
    threshold, value = ref.random_spec(math.sqrt(300), 64)
    np.testing.assert_array_equal(ref.project_csr(3, threshold, value, 64, csr.indptr, csr.indices, csr.data, 300),
                                  dense)


def test_projection_rows_independent_and_deterministic(rng):
    x = rng.standard_normal((40, 90)).astype(np.float32)
    full = fastemb.sparse_random_projection(x, 33, s=3, seed=11)
    np.testing.assert_array_equal(fastemb.sparse_random_projection(x[7:19], 33, s=3, seed=11), full[7:19])
    np.testing.assert_array_equal(fastemb.sparse_random_projection(x, 33, s=3, seed=11), full)
    assert not np.array_equal(fastemb.sparse_random_projection(x, 33, s=3, seed=12), full)


def test_projection_preserves_distances_jl(rng):
    n, f, d = 30, 2000, 1024
    x = rng.standard_normal((n, f))
    y = fastemb.sparse_random_projection(x, d, seed=5).astype(np.float64)
    i, j = np.triu_indices(n, 1)
    ratio = np.linalg.norm(y[i] - y[j], axis=1) / np.linalg.norm(x[i] - x[j], axis=1)
    assert 0.8 < ratio.min() and ratio.max() < 1.2, (ratio.min(), ratio.max())
    assert abs(np.mean(ratio**2) - 1) < 0.05


@pytest.mark.parametrize("s", [3.0, 10.0, 100.0])
def test_random_matrix_statistics(s):
    threshold, value = ref.random_spec(s, 256)
    r = fastemb.sparse_random_projection(np.eye(400, dtype=np.float32), 256, s=s, seed=1)  # rows of R
    assert set(np.unique(r)) <= {np.float32(0), value, -value}
    nz = r != 0
    rate = nz.mean()
    assert abs(rate - 1 / s) < 5 * math.sqrt(1 / s / nz.size) + 1e-4
    assert abs((r[nz] > 0).mean() - 0.5) < 0.05


def test_projection_edge_shapes():
    assert fastemb.sparse_random_projection(np.zeros((0, 5), np.float32), 4).shape == (0, 4)
    assert np.all(fastemb.sparse_random_projection(np.zeros((3, 0), np.float32), 4) == 0)
    one = fastemb.sparse_random_projection(np.ones((1, 1), np.float32), 1, s=1)
    assert one.shape == (1, 1) and abs(one[0, 0]) == 1


def test_projection_bad_inputs():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="dim"):
        fastemb.sparse_random_projection(x, 0)
    with pytest.raises(ValueError, match="s must be"):
        fastemb.sparse_random_projection(x, 4, s=0.5)
    with pytest.raises(ValueError, match="s must be"):
        fastemb.sparse_random_projection(x, 4, s="auto")
    with pytest.raises(ValueError, match="seed"):
        fastemb.sparse_random_projection(x, 4, seed=-1)
    with pytest.raises(TypeError, match="X must be float32"):
        fastemb.sparse_random_projection(x.astype(np.int64), 4)
    with pytest.raises(ValueError, match="X must be finite"):
        fastemb.sparse_random_projection(np.full((2, 2), np.nan), 4)
    with pytest.raises(ValueError, match="X must be 2-D"):
        fastemb.sparse_random_projection(np.ones(3), 4)
    with pytest.raises(TypeError, match="X must be"):
        fastemb.sparse_random_projection([[1.0]], 4)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 40), dim=st.integers(1, 40), s=st.floats(1.0, 50.0),
       seed=st.integers(0, 2**64 - 1), data=st.data())
def test_projection_property_matches_reference(rows, cols, dim, s, seed, data):
    vals = data.draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=rows * cols, max_size=rows * cols))
    x = np.array(vals, np.float32).reshape(rows, cols)
    got = fastemb.sparse_random_projection(x, dim, s=s, seed=seed)
    threshold, value = ref.random_spec(s, dim)
    np.testing.assert_array_equal(got, ref.project_dense(seed, threshold, value, dim, x))
    np.testing.assert_array_equal(fastemb.sparse_random_projection(sp.csr_matrix(x), dim, s=s, seed=seed), got)


# ---- FastRP: agreement with the reference and the oracle -----------------------------------------

CASES = [
    dict(preset="paper"),
    dict(preset="gds"),
    dict(preset="paper", normalize=False, weights=[1.0, 1.0, 7.81, 45.28], beta=-0.628),
    dict(preset="gds", self_influence=0.5, beta=-0.3),
    dict(preset="paper", propagate_normalized=True, s=3, standardize=False),
    dict(preset="gds", weights=[0.0, 0.0, 0.0]),  # nothing accumulated: the native path zero-fills at the end
    dict(preset="paper", weights=[2.5, 0.0, 1.0]),  # the first (fused) step initializes accum
    dict(preset="paper", degree="count", beta=-0.5),  # the relationship count in deg^beta and D^-1
    dict(preset="gds", degree="weighted", beta=0.4),  # the gds preset's earlier rule
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("weighted,directed", [(False, False), (True, False), (True, True)])
def test_fastrp_matches_reference_and_oracle(rng, case, weighted, directed):
    A = random_graph(rng, 120, p=0.06, weighted=weighted, directed=directed, isolated=3)
    seed = int(rng.integers(0, 2**32))
    kw = dict(case)
    preset = kw.pop("preset")
    got = fastemb.fastrp(A, 48, preset=preset, seed=seed, **kw)
    assert got.dtype == np.float32 and got.shape == (120, 48) and np.isfinite(got).all()
    want = reference_fastrp(A, 48, preset, seed=seed, **kw)
    p = dict(G.PRESETS[preset])
    p.update(kw)
    if p["standardize"]:
        assert_ulps(got, want)
        # the unstandardized result is the same bits
        np.testing.assert_array_equal(fastemb.fastrp(A, 48, preset=preset, seed=seed, **{**kw, "standardize": False}),
                                      reference_fastrp(A, 48, preset, seed=seed, **{**kw, "standardize": False}))
    else:
        np.testing.assert_array_equal(got, want)
    p["s"] = G.resolve_s(p["s"], 120)
    assert_oracle_close(got, oracle(A, 48, seed=seed, **p))


def test_fastrp_isolated_nodes_finite(rng):
    A = random_graph(rng, 60, p=0.1, isolated=5)
    for preset in ("paper", "gds"):
        e = fastemb.fastrp(A, 32, preset=preset, beta=-0.9, self_influence=0.0, standardize=False)
        assert np.isfinite(e).all()
        assert np.all(e[-5:] == 0)
        assert np.isfinite(fastemb.fastrp(A, 32, preset=preset, beta=-0.9)).all()
    # with self influence the isolated nodes keep their own (normalized) random vector
    e = fastemb.fastrp(A, 32, preset="gds", self_influence=1.0)
    np.testing.assert_allclose(np.linalg.norm(e[-5:], axis=1), 1, rtol=1e-5)
    # a graph with no edges at all, and a sink node in a directed graph
    assert np.isfinite(fastemb.fastrp(sp.csr_matrix((10, 10)), 8)).all()
    sink = sp.csr_matrix(([1.0, 1.0], ([0, 1], [2, 2])), shape=(3, 3))
    assert np.isfinite(fastemb.fastrp(sink, 8, beta=-1.0)).all()


def test_fastrp_directed_uses_out_neighbours(rng):
    A = random_graph(rng, 80, p=0.08, directed=True, weighted=True)
    a = fastemb.fastrp(A, 32, preset="gds", seed=4)
    b = fastemb.fastrp(A.T.tocsr(), 32, preset="gds", seed=4)
    assert not np.allclose(a, b)
    assert_oracle_close(a, oracle(A, 32, seed=4, **{**G.PRESETS["gds"], "s": 3.0}))


@pytest.mark.parametrize("sparse_features", [False, True])
def test_fastrp_features(rng, sparse_features):
    A = random_graph(rng, 90, p=0.07, weighted=True, isolated=2)
    f = rng.standard_normal((90, 13)).astype(np.float32)
    f[rng.random(f.shape) < 0.5] = 0
    feats = sp.csr_matrix(f) if sparse_features else f
    for preset, scaling in (("paper", None), ("gds", None), ("paper", "block"), ("gds", "shared")):
        kw = dict(features=feats, feature_ratio=0.25, seed=9, self_influence=0.7, feature_scaling=scaling)
        got = fastemb.fastrp(A, 40, preset=preset, **kw)
        opt = {} if scaling is None else {"feature_scaling": scaling}
        want = reference_fastrp(A, 40, preset, seed=9, self_influence=0.7, features=f, feature_ratio=0.25, **opt)
        if G.PRESETS[preset]["standardize"]:
            assert_ulps(got, want)
        else:
            np.testing.assert_array_equal(got, want)
        p = {**G.PRESETS[preset], "self_influence": 0.7, **opt}
        p["s"], fs = G.resolve_s(p["s"], 90), G.resolve_s(p["s"], 13)
        assert_oracle_close(got, oracle(A, 40, seed=9, features=f, feature_dim=10, feature_s=fs, **p))
        # the features change the result; without them it differs
        assert not np.allclose(got, fastemb.fastrp(A, 40, preset=preset, seed=9, self_influence=0.7))


def test_fastrp_features_inductive(rng):
    """Isolated nodes with equal features get parallel feature columns (self influence normalizes the whole
    initial row, whose random columns differ)."""
    A = random_graph(rng, 30, p=0.2, isolated=2)
    f = rng.standard_normal((30, 6)).astype(np.float32)
    f[-1] = f[-2]
    e = fastemb.fastrp(A, 16, preset="gds", features=f, feature_ratio=0.5, self_influence=1.0)
    u = e[-2:, 8:] / np.linalg.norm(e[-2:, 8:], axis=1, keepdims=True)
    np.testing.assert_allclose(u[0], u[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(e[-1, :8], e[-2, :8])


def test_fastrp_return_iterations(rng):
    A = random_graph(rng, 70, p=0.1, weighted=True)
    for preset in ("paper", "gds"):
        e, its = fastemb.fastrp(A, 24, preset=preset, seed=2, return_iterations=True, standardize=False)
        w = G.PRESETS[preset]["weights"]
        assert its.shape == (len(w), 70, 24) and its.dtype == np.float32
        acc = np.zeros((70, 24), np.float32)
        for a, v in zip(w, its):
            if a != 0:
                acc += np.float32(a) * v
        np.testing.assert_array_equal(e, acc)
        np.testing.assert_allclose(np.linalg.norm(its, axis=2)[np.linalg.norm(its, axis=2) > 0], 1, rtol=1e-5)
        # re-weighting without recomputing
        new = np.arange(1.0, len(w) + 1)
        e2 = fastemb.fastrp(A, 24, preset=preset, seed=2, weights=new, standardize=False)
        re = np.tensordot(new, its.astype(np.float64), 1)
        np.testing.assert_allclose(e2, re, rtol=1e-5, atol=1e-5)
    e_std, _ = fastemb.fastrp(A, 24, seed=2, return_iterations=True)
    np.testing.assert_array_equal(e_std, fastemb.fastrp(A, 24, seed=2))


def test_fastrp_deterministic_and_thread_count(rng):
    A = random_graph(rng, 300, p=0.03, weighted=True)
    old = fastemb.get_num_threads()
    try:
        fastemb.set_num_threads(1)
        one = fastemb.fastrp(A, 64, seed=7)
        one_gds = fastemb.fastrp(A, 64, seed=7, preset="gds", self_influence=0.3)
        one_p = fastemb.sparse_random_projection(A, 64, seed=7)
        fastemb.set_num_threads(2)
        np.testing.assert_array_equal(fastemb.fastrp(A, 64, seed=7), one)
        np.testing.assert_array_equal(fastemb.fastrp(A, 64, seed=7, preset="gds", self_influence=0.3), one_gds)
        np.testing.assert_array_equal(fastemb.sparse_random_projection(A, 64, seed=7), one_p)
    finally:
        fastemb.set_num_threads(old)
    assert not np.array_equal(fastemb.fastrp(A, 64, seed=8), one)


def test_fastrp_large_seed(rng):
    A = random_graph(rng, 40, p=0.1)
    e = fastemb.fastrp(A, 16, seed=2**64 - 1, standardize=False)
    np.testing.assert_array_equal(e, reference_fastrp(A, 16, seed=2**64 - 1, standardize=False))


@pytest.mark.skipif(not hasattr(fastemb._backend.native(), "graph_propagate"), reason="native graph kernels")
@pytest.mark.parametrize("kw", [dict(), dict(preset="gds", self_influence=0.5), dict(feature_ratio=0.25)])
def test_fastrp_memory_three_buffers(rng, kw):
    """Peak NumPy allocation (tracemalloc) of fastrp: three [N, d] float32 buffers plus O(N + nnz)."""
    import tracemalloc
    n, d = 4000, 256
    edges = (rng.integers(0, n, 8 * n), rng.integers(0, n, 8 * n))
    feats = rng.standard_normal((n, 4)).astype(np.float32) if "feature_ratio" in kw else None
    fastemb.fastrp(edges, 8, num_nodes=n, features=feats, **kw)  # warm up
    tracemalloc.start()
    try:
        fastemb.fastrp(edges, d, num_nodes=n, features=feats, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    buffer = n * d * 4
    assert peak < 3 * buffer + 100 * n + 40 * edges[0].size, peak / buffer


def _no_allocation(*args, **kwargs):
    raise AssertionError("fastrp allocated its buffers although the memory check should have refused")


@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_fastrp_memory_error_names_sizes(monkeypatch, preset):
    """2 nodes x dim 10**9: the three float32 buffers (24 GB, + 16 GB of float64 column statistics with
    standardize) are checked against the machine's memory before any is allocated (the OOM killer used to end
    the process); the machine's memory is pinned at 1 GB here, and nothing may be allocated."""
    monkeypatch.setattr(G.workspace, "available_memory", lambda: 10**9)
    monkeypatch.setattr(fastemb._backend, "aligned_empty", _no_allocation)
    edges = (np.array([0, 1]), np.array([1, 0]))
    with pytest.raises(MemoryError) as e:
        fastemb.fastrp(edges, 10**9, preset=preset)
    msg = str(e.value)
    need = "40.0 GB" if preset == "paper" else "24.0 GB"
    assert f"needs {need}" in msg and "3 float32 [2, 1000000000] buffers of 8.0 GB each" in msg, msg
    assert "1.0 GB available" in msg and ("standardize" in msg) == (preset == "paper"), msg
    with pytest.raises(MemoryError, match=r"7 float32 \[2, 1000000000\] buffers"):  # + the 4 iterations
        fastemb.fastrp(edges, 10**9, return_iterations=True)
    # what the machine really has: positive on Linux, and far below 3 buffers of 2 x 10**12 float32
    monkeypatch.undo()
    monkeypatch.setattr(fastemb._backend, "aligned_empty", _no_allocation)
    avail = G.workspace.available_memory()
    if sys.platform.startswith("linux"):
        assert isinstance(avail, int) and avail > 0
    if avail is not None:
        with pytest.raises(MemoryError, match=r"float32 \[2, 1000000000000\] buffers of 8.0 TB each"):
            fastemb.fastrp(edges, 10**12, preset="gds")


# ---- graph input forms --------------------------------------------------------------------------

def test_graph_input_forms_agree(rng):
    A = random_graph(rng, 50, p=0.1, weighted=True, directed=True, isolated=2)
    kw = dict(dim=16, seed=3, preset="gds", self_influence=0.2)
    base = fastemb.fastrp(A, **kw)
    for fmt in ("csc", "coo", "lil", "dok"):
        np.testing.assert_array_equal(fastemb.fastrp(A.asformat(fmt), **kw), base)
    np.testing.assert_array_equal(fastemb.fastrp(sp.csr_array(A), **kw), base)
    indptr, indices, data, n = csr_parts(A)
    np.testing.assert_array_equal(fastemb.fastrp((indptr, indices, data, n), **kw), base)
    np.testing.assert_array_equal(fastemb.fastrp((indptr.astype(np.int32), indices.astype(np.int64), data, n), **kw),
                                  base)
    coo = A.tocoo()
    perm = rng.permutation(coo.nnz)
    edges = (coo.row[perm], coo.col[perm], coo.data[perm])
    np.testing.assert_array_equal(fastemb.fastrp(edges, num_nodes=50, **kw), base)
    # duplicates are summed: split every weight in two halves (exact in binary)
    dup = (np.concatenate([coo.row, coo.row]), np.concatenate([coo.col, coo.col]), np.concatenate([coo.data, coo.data]) / 2)
    np.testing.assert_array_equal(fastemb.fastrp(dup, num_nodes=50, **kw), base)
    # unweighted: the CSR tuple without data and an edge list without weights equal the all-ones matrix
    B = (A != 0).astype(np.float64)
    ub = fastemb.fastrp(B, **kw)
    np.testing.assert_array_equal(fastemb.fastrp((indptr, indices, 50), **kw), ub)
    np.testing.assert_array_equal(fastemb.fastrp((coo.row, coo.col), num_nodes=50, **kw), ub)
    # unweighted duplicates count twice
    dup_u = fastemb.fastrp((np.concatenate([coo.row, coo.row]), np.concatenate([coo.col, coo.col])), num_nodes=50, **kw)
    np.testing.assert_array_equal(dup_u, fastemb.fastrp(2 * B, **kw))


def test_graph_symmetrize(rng):
    A = random_graph(rng, 40, p=0.1, weighted=True, directed=True)
    S = (A + A.T).tocsr()
    kw = dict(dim=16, seed=1, preset="paper")
    want = fastemb.fastrp(S, **kw)
    np.testing.assert_array_equal(fastemb.fastrp(A, symmetrize=True, **kw), want)
    coo = A.tocoo()
    np.testing.assert_array_equal(fastemb.fastrp((coo.row, coo.col, coo.data), num_nodes=40, symmetrize=True, **kw), want)
    indptr, indices, data, n = csr_parts(A)
    np.testing.assert_array_equal(fastemb.fastrp((indptr, indices, data, n), symmetrize=True, **kw), want)


def test_graph_unsorted_csr_tuple(rng):
    A = random_graph(rng, 30, p=0.2)
    indptr, indices, _, n = csr_parts(A)
    shuffled = indices.copy()
    for i in range(n):
        seg = shuffled[indptr[i]:indptr[i + 1]]
        shuffled[indptr[i]:indptr[i + 1]] = seg[::-1]
    got = fastemb.fastrp((indptr, shuffled, n), 16, standardize=False)
    np.testing.assert_array_equal(got, ref.fastrp(indptr, shuffled, None, n, 16, G.PRESETS["paper"]["weights"], -0.64,
                                                  math.sqrt(n), standardize=False))
    np.testing.assert_allclose(got, fastemb.fastrp(A, 16, standardize=False), rtol=1e-5, atol=1e-6)


def test_empty_graph():
    e = fastemb.fastrp((np.zeros(1, np.int64), np.zeros(0, np.int64), 0), 8)
    assert e.shape == (0, 8)
    e, its = fastemb.fastrp((np.array([], np.int64), np.array([], np.int64)), 8, num_nodes=0, return_iterations=True)
    assert e.shape == (0, 8) and its.shape == (4, 0, 8)


# ---- quality: stochastic block model ---------------------------------------------------------------

def sbm(rng, sizes, p_in, p_out):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = labels.size
    p = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < p, 1)
    src, dst = np.nonzero(upper)
    return (src, dst), labels, n


@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_sbm_communities_separate(rng, preset):
    edges, labels, n = sbm(rng, [100, 100, 100], 0.2, 0.01)
    weights = (0.0, 1.0, 1.0, 1.0) if preset == "paper" else None
    e = fastemb.fastrp(edges, 64, num_nodes=n, symmetrize=True, preset=preset, weights=weights,
                       seed=int(rng.integers(1000)))
    x = e / np.linalg.norm(e, axis=1, keepdims=True)
    centroids = np.stack([x[labels == k].mean(0) for k in range(3)])
    acc = (np.argmax(x @ centroids.T, axis=1) == labels).mean()
    assert acc > 0.9, acc


# ---- hypothesis: random small graphs ----------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 25), data=st.data(), dim=st.integers(1, 20), preset=st.sampled_from(["paper", "gds"]),
       beta=st.floats(-1.0, 0.5), weighted=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_fastrp_property(n, data, dim, preset, beta, weighted, seed):
    m = data.draw(st.integers(0, 3 * n))
    src = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    dst = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    w = np.array(data.draw(st.lists(st.floats(0.0, 100.0, width=32), min_size=m, max_size=m)), np.float32) \
        if weighted else None
    edges = (src, dst) if w is None else (src, dst, w)
    e = fastemb.fastrp(edges, dim, num_nodes=n, preset=preset, beta=beta, seed=seed, standardize=False,
                       self_influence=0.5)
    assert e.shape == (n, dim) and np.isfinite(e).all()
    A = sp.csr_matrix((np.ones(m) if w is None else w.astype(np.float64), (src, dst)), shape=(n, n))
    A.sum_duplicates()
    # degree='count' (gds) counts parallel edges: the edges as given, not the merged entries
    counts = np.bincount(src, minlength=n)
    np.testing.assert_array_equal(e, reference_fastrp(A, dim, preset, beta=beta, seed=seed, standardize=False,
                                                      self_influence=0.5, counts=counts))
    es = fastemb.fastrp(edges, dim, num_nodes=n, preset=preset, beta=beta, seed=seed, standardize=True)
    assert np.isfinite(es).all()
    assert np.all(np.abs(es.astype(np.float64).mean(0)) < 1e-4 * max(1.0, np.abs(es).max()))


# ---- options and bad inputs -----------------------------------------------------------------------

def test_presets_and_overrides(rng):
    A = random_graph(rng, 40, p=0.1)
    assert np.array_equal(fastemb.fastrp(A, 8), fastemb.fastrp(A, 8, preset="paper"))
    explicit = fastemb.fastrp(A, 8, weights=[0, 1, 1], beta=0.0, s=3, normalize=True, propagate_normalized=True,
                              standardize=False, min_degree=1.0)
    np.testing.assert_array_equal(explicit, fastemb.fastrp(A, 8, preset="gds"))
    assert not np.array_equal(fastemb.fastrp(A, 8, preset="gds", weights=[1.0]), fastemb.fastrp(A, 8, preset="gds"))


def test_progress_bar(rng, monkeypatch, capsys):
    A = random_graph(rng, 30, p=0.1)
    want = fastemb.fastrp(A, 8)
    np.testing.assert_array_equal(fastemb.fastrp(A, 8, progress=True), want)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.warns(UserWarning, match="tqdm"):
        np.testing.assert_array_equal(fastemb.fastrp(A, 8, progress=True), want)


def test_bad_inputs(rng):
    A = random_graph(rng, 10, p=0.3)
    with pytest.raises(ValueError, match="square"):
        fastemb.fastrp(sp.csr_matrix(np.ones((3, 4))), 8)
    with pytest.raises(ValueError, match="out of range"):
        fastemb.fastrp((np.array([0, 1]), np.array([1, 5])), 8, num_nodes=5)
    with pytest.raises(ValueError, match="negative"):
        fastemb.fastrp((np.array([0, -1]), np.array([1, 2])), 8, num_nodes=5)
    with pytest.raises(ValueError, match="out of range"):
        fastemb.fastrp((np.array([0, 1, 2]), np.array([0, 3]), 2), 8)
    with pytest.raises(ValueError, match="dim"):
        fastemb.fastrp(A, 0)
    with pytest.raises(TypeError, match="dim"):
        fastemb.fastrp(A, 8.0)
    with pytest.raises(ValueError, match="weights.*finite"):
        fastemb.fastrp((np.array([0, 1]), np.array([1, 2]), np.array([1.0, np.nan])), 8, num_nodes=3)
    bad = A.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fastemb.fastrp(bad, 8)
    bad.data[0] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        fastemb.fastrp(bad, 8)
    with pytest.raises(ValueError, match="weights must not be empty"):
        fastemb.fastrp(A, 8, weights=[])
    with pytest.raises(ValueError, match=r"weights\[1\] must be finite"):
        fastemb.fastrp(A, 8, weights=[1.0, np.inf])
    with pytest.raises(ValueError, match="beta must be finite"):
        fastemb.fastrp(A, 8, beta=np.nan)
    with pytest.raises(ValueError, match="s must be >= 1"):
        fastemb.fastrp(A, 8, s=0.5)
    with pytest.raises(ValueError, match="features must have one row per node"):
        fastemb.fastrp(A, 8, features=np.ones((9, 2)), feature_ratio=0.5)
    with pytest.raises(ValueError, match="feature_ratio"):
        fastemb.fastrp(A, 8, features=np.ones((10, 2)), feature_ratio=0.0)
    with pytest.raises(ValueError, match="feature_ratio"):
        fastemb.fastrp(A, 8, feature_ratio=0.5)
    with pytest.raises(ValueError, match="feature_ratio"):
        fastemb.fastrp(A, 8, features=np.ones((10, 2)), feature_ratio=1.5)
    with pytest.raises(ValueError, match="features must be finite"):
        fastemb.fastrp(A, 8, features=np.full((10, 2), np.nan), feature_ratio=0.5)
    with pytest.raises(ValueError, match="dtype"):
        fastemb.fastrp(A, 8, dtype="float64")
    with pytest.raises(ValueError, match="preset"):
        fastemb.fastrp(A, 8, preset="neo4j")
    with pytest.raises(ValueError, match="seed"):
        fastemb.fastrp(A, 8, seed=2**64)
    with pytest.raises(TypeError, match="graph"):
        fastemb.fastrp(np.ones((3, 3)), 8)
    with pytest.raises(TypeError, match="graph"):
        fastemb.fastrp("edges", 8)
    with pytest.raises(ValueError, match="num_nodes"):
        fastemb.fastrp(A, 8, num_nodes=11)
    with pytest.raises(ValueError, match="same length"):
        fastemb.fastrp((np.array([0, 1]), np.array([1])), 8)
    with pytest.raises(TypeError, match="normalize"):
        fastemb.fastrp(A, 8, normalize="yes")
    with pytest.raises(ValueError, match="indptr"):
        fastemb.fastrp((np.array([0, 2, 1]), np.array([0, 1]), 2), 8)


# ---- the scratch workspace kept between CPU calls --------------------------------------------------

def test_fastrp_workspace_reused_and_released(rng):
    """A CPU fastrp keeps its two [N, d] scratch buffers for the next call (results unchanged, the next
    call that fits takes them instead of allocating); release_workspace frees them."""
    A = random_graph(rng, 300, p=0.05, weighted=True, directed=False, isolated=2)
    G.release_workspace()
    first = fastemb.fastrp(A, 64, seed=4)
    kept = list(G.workspace._workspace)
    assert len(kept) == 2 and all(b.size >= 300 * 64 and b.ctypes.data % 64 == 0 for b in kept)
    assert not any(np.shares_memory(first, b) for b in kept)
    # a smaller run takes the same (dirty) buffers and is still exact
    np.testing.assert_array_equal(fastemb.fastrp(A, 32, seed=4, standardize=False),
                                  reference_fastrp(A, 32, "paper", seed=4, standardize=False))
    assert {id(b) for b in G.workspace._workspace} == {id(b) for b in kept}
    np.testing.assert_array_equal(fastemb.fastrp(A, 64, seed=4), first)
    assert G.release_workspace() == sum(b.nbytes for b in kept)
    assert G.workspace._workspace == [] and G.release_workspace() == 0


def test_fastrp_never_reuses_a_result_behind_the_callers_back(rng):
    """Results are the caller's: a later call never writes into an earlier result's memory, even once the caller
    dropped it (no reference counting); ``out=`` is how a caller reuses memory."""
    A = random_graph(rng, 200, p=0.05)
    G.release_workspace()
    want = fastemb.fastrp(A, 32, seed=8)
    first = fastemb.fastrp(A, 32, seed=8)
    view = first[5:]
    del first
    again = fastemb.fastrp(A, 32, seed=8)
    assert not np.shares_memory(again, view)
    np.testing.assert_array_equal(view, want[5:])


@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_fastrp_out(rng, preset):
    """out= receives the same bits as a fresh result, for any previous contents, and is returned."""
    A = random_graph(rng, 150, p=0.05, weighted=True)
    feats = rng.standard_normal((150, 7)).astype(np.float32)
    kw = dict(seed=3, preset=preset, features=feats, feature_ratio=0.25)
    want = fastemb.fastrp(A, 24, **kw)
    out = np.full((150, 24), np.nan, np.float32)
    assert fastemb.fastrp(A, 24, out=out, **kw) is out
    np.testing.assert_array_equal(out, want)
    emb, its = fastemb.fastrp(A, 24, out=out, return_iterations=True, **kw)
    assert emb is out
    np.testing.assert_array_equal(out, want)
    empty = np.zeros((0, 24), np.float32)
    assert fastemb.fastrp(sp.csr_matrix((0, 0), dtype=np.float32), 24, out=empty) is empty


def test_fastrp_and_projection_out_errors(rng):
    A = random_graph(rng, 50, p=0.1)
    with pytest.raises(TypeError, match="out must have dtype float32"):
        fastemb.fastrp(A, 8, out=np.zeros((50, 8), np.float64))
    with pytest.raises(ValueError, match=r"out must have shape \(50, 8\)"):
        fastemb.fastrp(A, 8, out=np.zeros((50, 9), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastemb.fastrp(A, 8, out=np.zeros((8, 50), np.float32).T)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        fastemb.fastrp(A, 8, out=[[0.0] * 8] * 50)
    ro = np.zeros((50, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastemb.fastrp(A, 8, out=ro)
    feats = np.zeros((50, 16), np.float32)
    with pytest.raises(ValueError, match="overlaps the input features"):
        fastemb.fastrp(A, 8, features=feats, feature_ratio=0.5, out=feats.reshape(-1)[:400].reshape(50, 8))
    X = rng.standard_normal((20, 30)).astype(np.float32)
    want = fastemb.sparse_random_projection(X, 30, seed=2)
    out = np.empty((20, 30), np.float32)
    assert fastemb.sparse_random_projection(X, 30, seed=2, out=out) is out
    np.testing.assert_array_equal(out, want)
    out2 = np.empty((20, 30), np.float32)
    assert fastemb.sparse_random_projection(sp.csr_matrix(X), 30, seed=2, out=out2) is out2
    np.testing.assert_array_equal(out2, want)
    with pytest.raises(ValueError, match="overlaps the input X"):
        fastemb.sparse_random_projection(X, 30, seed=2, out=X)
    with pytest.raises(ValueError, match=r"out must have shape \(20, 31\)"):
        fastemb.sparse_random_projection(X, 31, seed=2, out=out)
