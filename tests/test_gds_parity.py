"""``fastrp(preset="gds")`` against Neo4j GDS's FastRP, ported for this test.

``gds_fastrp`` below restates the algorithm of GDS's ``FastRP.java`` (org.neo4j.gds.embeddings.fastrp) in NumPy
(float64), written from reading it, given the random sign patterns as inputs (GDS draws them from its own
generator; fastemb from SplitMix64, so the test hands fastemb's signs to the port):

* ``propertyDimension = (int) (embeddingDimension * propertyRatio)``, base dimension the rest;
* initial vector of node n: base columns ``sign * degree(n)^normalizationStrength * sqrt(3) / sqrt(baseDim)``
  (degree = the node's relationship count, parallel relationships included, weights ignored; degree 0: scale 1),
  feature columns ``sum_j x_nj * propertyVector_j`` with entries ``sign * sqrt(3) / sqrt(propertyDimension)``;
* ``embedding = nodeSelfInfluence * initial / ||initial||`` (norm < 10 / Float.MAX_VALUE counts as 1);
* each iteration: ``cur_n = l2Normalize(1 / max(degree(n), 1) * sum_{relationships n->m} w * prev_m)``,
  ``embedding += iterationWeight * cur``; cur propagates.

fastemb must agree with it (float32 against float64) on weighted directed and undirected graphs with isolated
nodes, sinks, zero weights and parallel edges, for beta in {-0.5, 0, 0.3} and feature_ratio in
{0, 0.25, 0.5, 0.75}, on every backend: the NumPy fallback, the native CPU kernels with each ISA the machine
has, the torch API, the CUDA driver (``CudaOps`` + ``run_fastrp``) on host memory and, with a GPU, CUDA itself.
"""
import functools
import math

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import graph as G
from fastemb._reference import graph as ref

sp = pytest.importorskip("scipy.sparse")

FLOAT_MAX = float(np.finfo(np.float32).max)


# ---- the port --------------------------------------------------------------------------------------------

def gds_fastrp(num_nodes, source, target, weight, dim, property_ratio, base_signs, property_signs, features,
               iteration_weights, normalization_strength, node_self_influence):
    """GDS FastRP on the relationships ``source[e] -> target[e]`` (weight[e], or None: unweighted), in float64.

    base_signs: [num_nodes, baseDim] in {-1, 0, +1} (GDS's computeRandomEntry per node and column);
    property_signs: [num_features, propertyDimension] (initPropertyVectors); features: [num_nodes, num_features].
    """
    source = np.asarray(source, np.int64)
    target = np.asarray(target, np.int64)
    property_dim = int(dim * property_ratio)
    base_dim = dim - property_dim
    degree = np.bincount(source, minlength=num_nodes).astype(np.float64)  # graph.degree(nodeId)

    initial = np.zeros((num_nodes, dim))
    if base_dim:
        scaling = np.where(degree == 0, 1.0, np.power(np.where(degree == 0, 1.0, degree), normalization_strength))
        entry = scaling * math.sqrt(3) / math.sqrt(base_dim)
        initial[:, :base_dim] = base_signs * entry[:, None]
    if property_dim:
        property_vectors = property_signs * (math.sqrt(3) / math.sqrt(property_dim))
        initial[:, base_dim:] += np.asarray(features, np.float64) @ property_vectors

    embedding = np.zeros((num_nodes, dim))
    if node_self_influence != 0:
        norm = np.linalg.norm(initial, axis=1)
        adjusted = np.where(norm < 10 / FLOAT_MAX, 1.0, norm)
        embedding += initial * (node_self_influence / adjusted)[:, None]

    w = np.ones(len(source)) if weight is None else np.asarray(weight, np.float64)
    previous = initial
    for iteration_weight in iteration_weights:
        current = np.zeros((num_nodes, dim))
        np.add.at(current, source, previous[target] * w[:, None])  # combine the neighbours' embeddings
        current *= (1.0 / np.maximum(degree, 1.0))[:, None]
        norm = np.linalg.norm(current, axis=1)
        current = np.where(norm[:, None] > 0, current / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
        embedding += iteration_weight * current
        previous = current
    return embedding


def fastemb_signs(seed, dim, feature_dim, num_nodes, num_features):
    """The sign patterns fastemb draws for preset='gds' (s = 3): R's first dim - feature_dim columns, and the
    feature projection's stream (seed ^ FEATURE_SEED_XOR, feature_dim columns)."""
    threshold = ref.random_spec(3.0, dim)[0]
    base = ref.random_signs(seed, threshold, dim, 0, num_nodes)[:, : dim - feature_dim].astype(np.float64)
    prop = ref.random_signs(seed ^ ref.FEATURE_SEED_XOR, threshold, max(feature_dim, 1), 0, num_features)
    return base, prop[:, :feature_dim].astype(np.float64)


# ---- graphs ------------------------------------------------------------------------------------------------

def random_relationships(rng, n, directed):
    """A weighted relationship list as GDS stores it: undirected edges in both directions, a few parallel
    relationships, zero weights, a self loop; the last 3 nodes isolated and (directed) a few sinks."""
    m = 4 * n
    src = rng.integers(0, n - 3, m)
    dst = rng.integers(0, n - 3, m)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if directed:
        src = np.where(src < 4, src + 4, src)  # nodes 0..3 have no out-relationships (sinks)
    w = rng.uniform(0.1, 5.0, src.shape[0])
    w[rng.random(w.shape[0]) < 0.05] = 0.0
    dup = rng.integers(0, src.shape[0], 6)  # parallel relationships with their own weights
    src, dst = np.concatenate([src, src[dup], [5]]), np.concatenate([dst, dst[dup], [5]])
    w = np.concatenate([w, rng.uniform(0.1, 5.0, 6), [2.0]])
    if not directed:
        src, dst, w = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([w, w])
    w = w.astype(np.float32)  # fastemb's weights are float32: give the port the same values
    return src.astype(np.int64), dst.astype(np.int64), w


def port_for(rels, n, dim, seed, *, beta=0.0, feature_ratio=0.0, features=None, weights=(0.0, 1.0, 1.0),
             self_influence=0.0, weighted=True):
    src, dst, w = rels
    fd = int(math.floor(dim * feature_ratio)) if features is not None else 0
    nf = features.shape[1] if features is not None else 0
    base, prop = fastemb_signs(seed, dim, fd, n, nf)
    return gds_fastrp(n, src, dst, w if weighted else None, dim, feature_ratio if fd else 0.0, base, prop,
                      features if fd else None, weights, beta, self_influence)


def assert_gds_close(got, want):
    got = np.asarray(got, np.float64)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1.0, float(np.abs(want).max())))


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)))


BETAS = [-0.5, 0.0, 0.3]
RATIOS = [0.0, 0.25, 0.5, 0.75]


# ---- the public API (native CPU, default ISA) -----------------------------------------------------------

@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("ratio", RATIOS)
def test_gds_preset_matches_port(rng, directed, beta, ratio):
    n, dim = 70, int(rng.choice([37, 40, 64]))
    seed = int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed)
    f = rng.standard_normal((n, 5)).astype(np.float32) if ratio else None
    self_influence = float(rng.choice([0.0, 0.7]))
    weights = [0.0, 1.0, 1.0] if rng.random() < 0.5 else [0.5, 1.0, 2.0, 0.25]
    kw = dict(preset="gds", seed=seed, beta=beta, weights=weights, self_influence=self_influence)
    if ratio:
        kw.update(features=f, feature_ratio=ratio)
    got = fastemb.fastrp(rels, dim, num_nodes=n, **kw)
    want = port_for(rels, n, dim, seed, beta=beta, feature_ratio=ratio, features=f, weights=weights,
                    self_influence=self_influence)
    assert_gds_close(got, want)
    # the same graph as a scipy matrix (parallel relationships merged into one entry of summed weight): the
    # relationship count is then the stored entries, which the port sees as one relationship each
    A = sp.coo_matrix((rels[2], (rels[0], rels[1])), shape=(n, n)).tocsr()
    A.sum_duplicates()
    Ac = A.tocoo()
    assert_gds_close(fastemb.fastrp(A, dim, **kw),
                     port_for((Ac.row, Ac.col, Ac.data.astype(np.float32)), n, dim, seed, beta=beta,
                              feature_ratio=ratio, features=f, weights=weights, self_influence=self_influence))
    # a COO matrix keeps its parallel entries' count (scipy sums them on conversion)
    coo = sp.coo_matrix((rels[2], (rels[0], rels[1])), shape=(n, n))
    assert_gds_close(fastemb.fastrp(coo, dim, **kw), want)
    # unweighted: the weights are ignored by both
    got_u = fastemb.fastrp(rels[:2], dim, num_nodes=n, **kw)
    assert_gds_close(got_u, port_for(rels, n, dim, seed, beta=beta, feature_ratio=ratio, features=f,
                                     weights=weights, self_influence=self_influence, weighted=False))


@pytest.mark.parametrize("beta", [-0.5, 0.3])
def test_weighted_degree_option_is_the_earlier_rule(rng, beta):
    """degree='weighted' (the earlier gds preset) scales by the weighted degree: off GDS on weighted graphs with
    beta != 0, by far more than the float32 tolerance; it equals the port given the weighted degrees."""
    n, dim, seed = 60, 32, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=False)
    want = port_for(rels, n, dim, seed, beta=beta)
    old = fastemb.fastrp(rels, dim, num_nodes=n, preset="gds", seed=seed, beta=beta, degree="weighted")
    assert max_diff(old, want) > 1e-2
    assert_gds_close(fastemb.fastrp(rels, dim, num_nodes=n, preset="gds", seed=seed, beta=beta), want)
    # the earlier rule, restated: deg^beta with the weighted degree on the initial vectors
    src, dst, w = rels
    base, _ = fastemb_signs(seed, dim, 0, n, 0)
    wdeg = np.bincount(src, weights=w.astype(np.float64), minlength=n)
    cnt = np.bincount(src, minlength=n)
    factor = np.where(wdeg > 0, np.power(np.where(wdeg > 0, wdeg, 1), beta), 1.0) / \
        np.where(cnt > 0, np.power(np.where(cnt > 0, cnt, 1.0), beta), 1.0)
    assert_gds_close(old, gds_fastrp(n, src, dst, w, dim, 0.0, base * factor[:, None], None, None, (0.0, 1.0, 1.0),
                                     beta, 0.0))


@pytest.mark.parametrize("ratio", [0.25, 0.75])
def test_shared_feature_scaling_option_is_the_earlier_rule(rng, ratio):
    """feature_scaling='shared' (the earlier gds preset: sqrt(3/dim) for both blocks) is off GDS at
    feature_ratio != 0.5; with GDS's block scales rescaled to sqrt(3/dim) the port reproduces it."""
    n, dim, seed = 60, 40, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=True)
    f = rng.standard_normal((n, 4)).astype(np.float32)
    kw = dict(preset="gds", seed=seed, features=f, feature_ratio=ratio, self_influence=0.5)
    want = port_for(rels, n, dim, seed, feature_ratio=ratio, features=f, self_influence=0.5)
    old = fastemb.fastrp(rels, dim, num_nodes=n, feature_scaling="shared", **kw)
    assert max_diff(old, want) > 1e-2
    assert_gds_close(fastemb.fastrp(rels, dim, num_nodes=n, **kw), want)
    fd = int(dim * ratio)
    base, prop = fastemb_signs(seed, dim, fd, n, 4)
    # GDS's entries are sqrt(3/width); the shared rule's sqrt(3/dim): rescale the signs by sqrt(width/dim)
    src, dst, w = rels
    assert_gds_close(old, gds_fastrp(n, src, dst, w, dim, ratio, base * math.sqrt((dim - fd) / dim),
                                     prop * math.sqrt(fd / dim), f, (0.0, 1.0, 1.0), 0.0, 0.5))


def test_default_gds_case_unchanged(rng):
    """GDS's defaults (beta 0, no features): the port, and the earlier rule -- the same bits on unweighted
    graphs, float32 rounding on weighted ones (1/count instead of 1/weighted degree before the normalization)."""
    n, dim, seed = 80, 48, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=False)
    old_kw = dict(degree="weighted", feature_scaling="shared")
    got = fastemb.fastrp(rels, dim, num_nodes=n, preset="gds", seed=seed)
    assert_gds_close(got, port_for(rels, n, dim, seed))
    old = fastemb.fastrp(rels, dim, num_nodes=n, preset="gds", seed=seed, **old_kw)
    np.testing.assert_allclose(got, old, rtol=0, atol=1e-6)
    A = sp.csr_matrix((np.ones(len(rels[0])), (rels[0], rels[1])), shape=(n, n))
    A.data[:] = 1.0  # unweighted, no parallel entries
    np.testing.assert_array_equal(fastemb.fastrp(A, dim, preset="gds", seed=seed),
                                  fastemb.fastrp(A, dim, preset="gds", seed=seed, **old_kw))
    # the paper preset keeps its weighted degree and shared scaling
    assert G.PRESETS["paper"]["degree"] == "weighted" and G.PRESETS["paper"]["feature_scaling"] == "shared"
    f = rng.standard_normal((n, 3)).astype(np.float32)
    np.testing.assert_array_equal(fastemb.fastrp(rels, dim, num_nodes=n, seed=seed, beta=-0.4, features=f,
                                                 feature_ratio=0.25),
                                  fastemb.fastrp(rels, dim, num_nodes=n, seed=seed, beta=-0.4, features=f,
                                                 feature_ratio=0.25, **old_kw))


def test_options_validated(rng):
    A = sp.csr_matrix(np.ones((4, 4)))
    with pytest.raises(ValueError, match="degree"):
        fastemb.fastrp(A, 8, degree="out")
    with pytest.raises(ValueError, match="degree"):
        fastemb.fastrp(A, 8, degree=1)
    with pytest.raises(ValueError, match="feature_scaling"):
        fastemb.fastrp(A, 8, feature_scaling="gds")
    # feature_ratio 1: no random columns at all, only the features (GDS baseDim 0)
    f = rng.standard_normal((4, 3)).astype(np.float32)
    e = fastemb.fastrp(A, 8, preset="gds", features=f, feature_ratio=1.0, self_influence=1.0)
    src, dst = np.nonzero(np.ones((4, 4)))
    assert_gds_close(e, port_for((src, dst, np.ones(16, np.float32)), 4, 8, 0, feature_ratio=1.0, features=f,
                                 self_influence=1.0))


# ---- every backend ----------------------------------------------------------------------------------------

def _native_with_isa(isa):
    C = _backend.native()

    def get(name):
        fn = getattr(C, name, None)
        if fn is None or name == "graph_standardize_columns":  # no ISA variants
            return fn
        return functools.partial(fn, isa=isa)

    return get


BACKENDS = ["numpy"] + [f"isa-{isa}" for isa in _backend.native_isas()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta,ratio", [(-0.5, 0.25), (0.3, 0.75), (0.0, 0.5), (-0.5, 0.0)])
def test_backends_match_port(rng, monkeypatch, backend, beta, ratio):
    """The NumPy fallback and each native ISA (forced per kernel call, the ``isa`` argument of the bindings, as
    tests/test_graph_native.py does) give the same result as the port, and the same bits as each other."""
    if backend == "numpy":
        monkeypatch.setattr(G.ops, "_native", lambda name: None)
    else:
        monkeypatch.setattr(G.ops, "_native", _native_with_isa(backend[4:]))
    n, dim, seed = 50, 33, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=bool(rng.integers(0, 2)))
    f = rng.standard_normal((n, 6)).astype(np.float32) if ratio else None
    kw = dict(preset="gds", seed=seed, beta=beta, self_influence=0.3, weights=[0.2, 1.0, 1.0])
    if ratio:
        kw.update(features=f, feature_ratio=ratio)
    got = fastemb.fastrp(rels, dim, num_nodes=n, **kw)
    assert_gds_close(got, port_for(rels, n, dim, seed, beta=beta, feature_ratio=ratio, features=f,
                                   weights=[0.2, 1.0, 1.0], self_influence=0.3))
    monkeypatch.undo()
    np.testing.assert_array_equal(got, fastemb.fastrp(rels, dim, num_nodes=n, **kw))  # same bits as the default


def test_forced_isa_reaches_the_kernels(monkeypatch):
    """The ISA wrapper above is not a no-op: an unknown ISA name reaches the binding and raises."""
    if _backend.native() is None:
        pytest.skip("native module not built")
    monkeypatch.setattr(G.ops, "_native", _native_with_isa("no-such-isa"))
    with pytest.raises(ValueError, match="isa"):
        fastemb.fastrp(sp.csr_matrix(np.ones((3, 3))), 4, preset="gds", beta=0.5)


def test_torch_api_matches_port(rng):
    torch = pytest.importorskip("torch")
    import fastemb.torch as ft

    n, dim, seed = 45, 30, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=False)
    f = rng.standard_normal((n, 4)).astype(np.float32)
    ei = torch.from_numpy(np.stack([rels[0], rels[1]]))
    got = ft.fastrp(ei, dim, num_nodes=n, edge_weight=torch.from_numpy(rels[2]), features=torch.from_numpy(f),
                    preset="gds", seed=seed, beta=-0.5, feature_ratio=0.25)
    assert_gds_close(got.numpy(), port_for(rels, n, dim, seed, beta=-0.5, feature_ratio=0.25, features=f))


def test_cuda_driver_matches_port_on_host_memory(rng):
    """The CUDA path's driver (CudaOps + run_fastrp, fed by plan_fastrp: the GDS scales are computed there, on
    the host, for CPU and CUDA alike) with a stand-in module that forwards to the CPU kernels."""
    torch = pytest.importorskip("torch")
    C = _backend.native()
    if C is None or not hasattr(C, "graph_propagate"):
        pytest.skip("native graph kernels not built")
    from fastemb.torch import _graph as tg

    class HostModule:
        def __getattr__(self, name):
            fn = getattr(C, name)

            def call(*args, **kw):  # drop the stream argument and the CUDA-only nnz
                kw.pop("nnz", None)
                return fn(*args[:-1], **kw)

            return call

    ops = tg.CudaOps.__new__(tg.CudaOps)
    ops.mod, ops.device, ops.stream = HostModule(), torch.device("cpu"), 0
    n, dim, seed = 40, 28, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=True)
    f = rng.standard_normal((n, 3)).astype(np.float32)
    for beta, ratio in [(0.3, 0.75), (-0.5, 0.25)]:
        plan = G.plan_fastrp(rels, dim, num_nodes=n, num_features=3, preset="gds", seed=seed, beta=beta,
                             feature_ratio=ratio, self_influence=0.4)
        e = G.run_fastrp(ops, plan, torch.from_numpy(f), False, False)
        assert_gds_close(e.numpy(), port_for(rels, n, dim, seed, beta=beta, feature_ratio=ratio, features=f,
                                             self_influence=0.4))


@pytest.mark.cuda
def test_cuda_matches_port(rng):
    torch = pytest.importorskip("torch")
    if not (torch.cuda.is_available() and _backend.cuda_module() is not None):
        pytest.skip("needs a CUDA device and fastemb._C_cuda")
    import fastemb.torch as ft

    n, dim, seed = 300, 64, int(rng.integers(0, 2**63))
    rels = random_relationships(rng, n, directed=False)
    f = rng.standard_normal((n, 5)).astype(np.float32)
    ei = torch.from_numpy(np.stack([rels[0], rels[1]])).cuda()
    w = torch.from_numpy(rels[2]).cuda()
    for beta, ratio in [(-0.5, 0.25), (0.3, 0.75), (0.0, 0.5)]:
        got = ft.fastrp(ei, dim, num_nodes=n, edge_weight=w, features=torch.from_numpy(f).cuda(), preset="gds",
                        seed=seed, beta=beta, feature_ratio=ratio, self_influence=0.5)
        assert got.is_cuda
        want = port_for(rels, n, dim, seed, beta=beta, feature_ratio=ratio, features=f, self_influence=0.5)
        assert_gds_close(got.cpu().numpy(), want)
        cpu = fastemb.fastrp(rels, dim, num_nodes=n, features=f, preset="gds", seed=seed, beta=beta,
                             feature_ratio=ratio, self_influence=0.5)
        np.testing.assert_allclose(got.cpu().numpy(), cpu, rtol=0, atol=1e-6)
