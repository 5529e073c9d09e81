"""PyTorch Geometric drop-in: ``fastemb.torch.centroid_aggregate`` against the installed
``torch_geometric.utils.scatter`` (sum / mean / max / min, empty groups, gradients), and
``fastemb.torch.fastrp`` on a ``torch_geometric.data.Data`` against the same call with explicit arrays.

The reduce names map as scatter ``'sum' 'mean' 'max' 'min'`` -> fastemb ``'sum' 'mean' 'amax' 'amin'``;
``scatter(x, index, dim=0, dim_size=K, reduce=r)`` == ``centroid_aggregate(x, index, num_groups=K,
reduce=FASTEMB[r])``. Both give 0 for an empty group under every reduction (scatter's max/min on
CPU: ``scatter_reduce_(..., include_self=False)`` into zeros).
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():  # torch_geometric's import uses torch.jit.script_method, deprecated in torch 2.13
    warnings.simplefilter("ignore", DeprecationWarning)
    pyg = pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data  # noqa: E402
    from torch_geometric.utils import scatter  # noqa: E402

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402

FASTEMB = {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin"}
TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.float64: dict(rtol=1e-13, atol=1e-13)}


def sum_tol(x, labels, k):
    """Tolerance for sums/means in a possibly different order: a few ulps of each group's sum of |x|."""
    eps = torch.finfo(x.dtype).eps
    return dict(rtol=0, atol=8 * eps * max(1.0, float(scatter(x.abs(), labels, 0, dim_size=k).max())))


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()
    print(f"torch generator seed {g.initial_seed()}")
    return g


def random_case(gen, dtype, *, sort=False):
    """x [N, D], int64 labels in [0, K) with at least one empty group (often several), N and D random."""
    n = int(torch.randint(1, 300, (1,), generator=gen))
    d = int(torch.randint(1, 70, (1,), generator=gen))
    k = int(torch.randint(2, 40, (1,), generator=gen))
    used = torch.randperm(k, generator=gen)[: max(1, int(torch.randint(1, k, (1,), generator=gen)))]
    labels = used[torch.randint(0, used.numel(), (n,), generator=gen)]
    if sort:
        labels = labels.sort().values
    x = torch.randn(n, d, dtype=dtype, generator=gen) * 3
    return x, labels, k


def empty_groups(labels, k):
    return torch.bincount(labels, minlength=k) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("sort", [False, True])
def test_forward_matches_scatter(gen, dtype, reduce, sort):
    for _ in range(5):
        x, labels, k = random_case(gen, dtype, sort=sort)
        want = scatter(x, labels, dim=0, dim_size=k, reduce=reduce)
        got = ft.centroid_aggregate(x, labels, num_groups=k, reduce=FASTEMB[reduce])
        assert got.dtype == want.dtype and got.shape == want.shape
        if reduce in ("max", "min"):
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # a max is exact: same bits
        else:
            torch.testing.assert_close(got, want, **sum_tol(x, labels, k))
        empty = empty_groups(labels, k)
        assert empty.any()
        assert torch.all(got[empty] == 0) and torch.all(want[empty] == 0)
        # int32 labels (scatter needs int64) give the same result
        torch.testing.assert_close(ft.centroid_aggregate(x, labels.int(), num_groups=k, reduce=FASTEMB[reduce]), got,
                                   rtol=0, atol=0)
        # PyG's own reduce names are accepted as aliases (drop-in), by the torch and the NumPy API
        torch.testing.assert_close(ft.centroid_aggregate(x, labels, num_groups=k, reduce=reduce), got, rtol=0, atol=0)
        np.testing.assert_array_equal(
            fastemb.centroid_aggregate(x.numpy(), labels.numpy(), num_groups=k, reduce=reduce),
            fastemb.centroid_aggregate(x.numpy(), labels.numpy(), num_groups=k, reduce=FASTEMB[reduce]))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_edge_cases_match_scatter(gen, reduce):
    r = FASTEMB[reduce]
    # no rows at all: every group empty
    x = torch.zeros(0, 4)
    labels = torch.zeros(0, dtype=torch.int64)
    torch.testing.assert_close(ft.centroid_aggregate(x, labels, num_groups=3, reduce=r),
                               scatter(x, labels, 0, dim_size=3, reduce=reduce))
    # one row; one column; all rows in the last group; negative-only groups for max (the max is < 0, not 0)
    for n, d, k in [(1, 5, 4), (17, 1, 3), (9, 6, 1)]:
        x = -torch.rand(n, d, generator=gen) - 0.5
        labels = torch.full((n,), k - 1, dtype=torch.int64)
        want = scatter(x, labels, 0, dim_size=k, reduce=reduce)
        got = ft.centroid_aggregate(x, labels, num_groups=k, reduce=r)
        torch.testing.assert_close(got, want, **sum_tol(x, labels, k))
        if reduce == "max":
            assert torch.all(got[k - 1] < 0)
    # no groups at all
    x = torch.zeros(0, 2)
    labels = torch.zeros(0, dtype=torch.int64)
    assert ft.centroid_aggregate(x, labels, num_groups=0, reduce=r).shape == scatter(x, labels, 0, dim_size=0,
                                                                                    reduce=reduce).shape == (0, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_gradients_match_scatter(gen, dtype, reduce):
    """Gradients with respect to x for a random upstream gradient. Continuous random values have no ties, so
    max/min have a unique derivative (ties: see test_max_ties_gradient_convention)."""
    for _ in range(3):
        x, labels, k = random_case(gen, dtype)
        upstream = torch.randn(k, x.shape[1], dtype=dtype, generator=gen)
        xa = x.clone().requires_grad_()
        xb = x.clone().requires_grad_()
        (scatter(xa, labels, 0, dim_size=k, reduce=reduce) * upstream).sum().backward()
        (ft.centroid_aggregate(xb, labels, num_groups=k, reduce=FASTEMB[reduce]) * upstream).sum().backward()
        torch.testing.assert_close(xb.grad, xa.grad, **TOL[dtype])  # products with 1/count: a few ulps
        assert xb.grad.abs().sum() > 0


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_ties_gradient_convention(gen, reduce):
    """At a tie the derivative of max does not exist; the two pick different subgradients, with the same total
    per (group, column): torch's scatter_reduce splits the gradient evenly among the tied rows, fastemb gives it
    to the lowest tied row (documented in shared/specs/centroid.md). The forward is the same."""
    x = torch.tensor([[1.0, 2.0], [1.0, -1.0], [0.5, 2.0], [3.0, 3.0]], dtype=torch.float64)
    if reduce == "min":
        x = -x
    labels = torch.tensor([0, 0, 0, 2])
    upstream = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = scatter(xa, labels, 0, dim_size=3, reduce=reduce)
    yb = ft.centroid_aggregate(xb, labels, num_groups=3, reduce=FASTEMB[reduce])
    torch.testing.assert_close(yb, ya, rtol=0, atol=0)
    (ya * upstream).sum().backward()
    (yb * upstream).sum().backward()
    torch.testing.assert_close(scatter(xb.grad, labels, 0, dim_size=3), scatter(xa.grad, labels, 0, dim_size=3))
    g = upstream[0]
    # column 0: rows 0 and 1 tie; column 1: rows 0 and 2 tie
    torch.testing.assert_close(xa.grad[:3], torch.stack([g / 2, torch.stack([g[0] / 2, g[0] * 0]),
                                                         torch.stack([g[0] * 0, g[1] / 2])]))
    torch.testing.assert_close(xb.grad[:3], torch.stack([g, torch.zeros_like(g), torch.zeros_like(g)]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")  # torch.compile's own imports (torch 2.13)
def test_compiled_matches_scatter(gen):
    x, labels, k = random_case(gen, torch.float32)
    fn = torch.compile(lambda x, i: ft.centroid_aggregate(x, i, num_groups=k, reduce="mean"), fullgraph=True)
    torch.testing.assert_close(fn(x, labels), scatter(x, labels, 0, dim_size=k, reduce="mean"),
                               **sum_tol(x, labels, k))


# ---- fastrp on a torch_geometric Data ---------------------------------------------------------------------

def random_edge_index(gen, n, m):
    ei = torch.randint(0, n, (2, m), generator=gen)
    return ei[:, ei[0] != ei[1]]


@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_fastrp_accepts_data(gen, preset):
    n = int(torch.randint(20, 60, (1,), generator=gen))
    ei = random_edge_index(gen, n - 2, 4 * n)  # the last two nodes are isolated: num_nodes must carry them
    w = torch.rand(ei.shape[1], generator=gen) + 0.25
    x = torch.randn(n, 7, generator=gen)
    kw = dict(preset=preset, seed=11)
    # edge_index only (num_nodes from the Data)
    got = ft.fastrp(Data(edge_index=ei, num_nodes=n), 24, **kw)
    want = ft.fastrp(ei, 24, num_nodes=n, **kw)
    assert got.shape == (n, 24)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # with edge weights
    got = ft.fastrp(Data(edge_index=ei, edge_weight=w, num_nodes=n), 24, **kw)
    torch.testing.assert_close(got, ft.fastrp(ei, 24, num_nodes=n, edge_weight=w, **kw), rtol=0, atol=0)
    assert not torch.equal(got, want)
    # with x as the node features (feature_ratio > 0): num_nodes comes from x
    data = Data(x=x, edge_index=ei, edge_weight=w)
    got = ft.fastrp(data, 24, feature_ratio=np.float32(0.25), **kw)
    want = ft.fastrp(ei, 24, num_nodes=n, edge_weight=w, features=x, feature_ratio=0.25, **kw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and the NumPy API on the same arrays
    np.testing.assert_array_equal(got.numpy(), fastemb.fastrp((ei[0].numpy(), ei[1].numpy(), w.numpy()), 24,
                                                              num_nodes=n, features=x.numpy(), feature_ratio=0.25,
                                                              **kw))
    # x is ignored without feature_ratio; explicit features= override x
    torch.testing.assert_close(ft.fastrp(data, 24, **kw), ft.fastrp(ei, 24, num_nodes=n, edge_weight=w, **kw),
                               rtol=0, atol=0)
    x2 = torch.randn(n, 3, generator=gen)
    torch.testing.assert_close(ft.fastrp(data, 24, features=x2, feature_ratio=0.5, **kw),
                               ft.fastrp(ei, 24, num_nodes=n, edge_weight=w, features=x2, feature_ratio=0.5, **kw),
                               rtol=0, atol=0)
    # symmetrize and return_iterations pass through
    e1, it1 = ft.fastrp(Data(edge_index=ei, num_nodes=n), 16, symmetrize=True, return_iterations=True, **kw)
    e2, it2 = ft.fastrp(ei, 16, num_nodes=n, symmetrize=True, return_iterations=True, **kw)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    torch.testing.assert_close(it1, it2, rtol=0, atol=0)


def test_fastrp_data_num_nodes_inferred_without_warning(gen):
    ei = random_edge_index(gen, 30, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ft.fastrp(Data(edge_index=ei), 8, seed=2)
    torch.testing.assert_close(got, ft.fastrp(ei, 8, seed=2), rtol=0, atol=0)


def test_fastrp_data_bad_inputs(gen):
    ei = random_edge_index(gen, 10, 30)
    with pytest.raises(ValueError, match="num_nodes"):
        ft.fastrp(Data(edge_index=ei, num_nodes=10), 8, num_nodes=12)
    with pytest.raises(ValueError, match="edge_weight"):
        ft.fastrp(Data(edge_index=ei, edge_weight=torch.ones(ei.shape[1])), 8, edge_weight=torch.ones(ei.shape[1]))
    with pytest.raises(ValueError, match="edge_index"):
        ft.fastrp(Data(x=torch.randn(10, 2)), 8)
    with pytest.raises(ValueError, match="x"):
        ft.fastrp(Data(edge_index=ei, num_nodes=10), 8, feature_ratio=0.5)
    with pytest.raises(ValueError, match="edge_weight"):
        ft.fastrp(Data(edge_index=ei, edge_weight=torch.ones(3)), 8)
    with pytest.raises(TypeError, match="HeteroData"):
        ft.fastrp(pyg.data.HeteroData(), 8)


def test_fastrp_duck_typed_graph_object_without_torch_geometric(gen):
    """Any object with edge_index (and optional edge_weight, x, num_nodes attributes) works, and fastemb.torch
    does not import torch_geometric, neither at import nor in the call."""
    import subprocess
    import sys

    code = (
        "import sys, types, torch, fastemb.torch as ft\n"
        "g = types.SimpleNamespace(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),\n"
        "                          edge_weight=torch.tensor([1.0, 1.0, 2.0, 2.0]), num_nodes=4)\n"
        "e = ft.fastrp(g, 8, seed=1)\n"
        "want = ft.fastrp(g.edge_index, 8, num_nodes=4, edge_weight=g.edge_weight, seed=1)\n"
        "assert e.shape == (4, 8) and torch.equal(e, want)\n"
        "assert 'torch_geometric' not in sys.modules, 'torch_geometric was imported'\n"
        "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
