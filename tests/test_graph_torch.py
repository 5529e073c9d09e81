"""Torch side of the graph family: the sparse_random_projection op (opcheck, torch.compile, autograd,
gradcheck) and fastemb.torch.fastrp on sparse tensors / edge_index, against the NumPy API."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sp = pytest.importorskip("scipy.sparse")

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402
from fastemb import graph as G  # noqa: E402
from fastemb._reference import graph as ref  # noqa: E402


def has_cuda():
    return torch.cuda.is_available() and fastemb._backend.cuda_module() is not None


def materialized_r(n_in, dim, s, seed):
    threshold, value = ref.random_spec(s, dim)
    return torch.from_numpy(ref.random_rows(seed, threshold, value, dim, 0, n_in))


# ---- the projection op ------------------------------------------------------------------------------

def test_projection_matches_numpy_api(rng):
    x = rng.standard_normal((23, 70)).astype(np.float32)
    for s, seed in [("sqrt", 0), (3, 5), (2.5, 2**64 - 1), (1, 2**63)]:
        got = ft.sparse_random_projection(torch.from_numpy(x), 19, s=s, seed=seed)
        assert got.dtype == torch.float32 and got.shape == (23, 19)
        np.testing.assert_array_equal(got.numpy(), fastemb.sparse_random_projection(x, 19, s=s, seed=seed))


def test_projection_float64_and_backward(rng):
    x = torch.from_numpy(rng.standard_normal((9, 40)))
    R = materialized_r(40, 12, 3.0, 7).double()
    y = ft.sparse_random_projection(x, 12, s=3, seed=7)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x @ R, rtol=1e-12, atol=1e-12)
    x32 = x.float().requires_grad_()
    g = torch.from_numpy(rng.standard_normal((9, 12)).astype(np.float32))
    (gx,) = torch.autograd.grad(ft.sparse_random_projection(x32, 12, s=3, seed=7), x32, g)
    torch.testing.assert_close(gx, g @ R.float().T, rtol=1e-5, atol=1e-5)


def test_projection_gradcheck(rng):
    x = torch.from_numpy(rng.standard_normal((5, 17))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ft.sparse_random_projection(t, 6, s=2, seed=3), (x,))


def test_projection_backward_blocks(rng, monkeypatch):
    """R is materialized in row blocks: a tiny block size gives the same gradient."""
    from fastemb.torch import _graph as tg
    x = torch.from_numpy(rng.standard_normal((4, 33))).requires_grad_()
    g = torch.from_numpy(rng.standard_normal((4, 8)))
    (want,) = torch.autograd.grad(ft.sparse_random_projection(x, 8, seed=1), x, g)
    monkeypatch.setattr(tg, "_BLOCK_BYTES", 4 * 8 * 5)
    (got,) = torch.autograd.grad(ft.sparse_random_projection(x, 8, seed=1), x, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ft.sparse_random_projection(x, 8, seed=1),
                               x.detach() @ materialized_r(33, 8, G.resolve_s("sqrt", 33), 1).double())


def test_opcheck(rng):
    x32 = torch.from_numpy(rng.standard_normal((6, 21)).astype(np.float32))
    x64 = torch.from_numpy(rng.standard_normal((6, 21))).requires_grad_()
    torch.library.opcheck(torch.ops.fastemb.sparse_random_projection.default, (x32, 10, 3.0, 4))
    torch.library.opcheck(torch.ops.fastemb.sparse_random_projection.default, (x32.requires_grad_(), 10, 4.5, -3))
    torch.library.opcheck(torch.ops.fastemb.sparse_random_projection.default, (x64, 7, 1.0, 0))
    torch.library.opcheck(torch.ops.fastemb.sparse_random_projection_backward.default,
                          (torch.randn(6, 10), 21, 3.0, 4))


def test_torch_compile_fullgraph(rng):
    x = torch.from_numpy(rng.standard_normal((8, 30)).astype(np.float32))

    def f(t):
        return torch.relu(ft.sparse_random_projection(t * 2, 16, s=3, seed=9)).sum(1)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    xe = x.clone().requires_grad_()
    f(xe).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)


def test_projection_bad_inputs():
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        ft.sparse_random_projection(torch.ones(3, 4, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ft.sparse_random_projection(torch.ones(3), 4)
    with pytest.raises(ValueError, match="dim"):
        ft.sparse_random_projection(torch.ones(3, 4), 0)
    with pytest.raises(ValueError, match="s must be"):
        ft.sparse_random_projection(torch.ones(3, 4), 4, s=0.1)
    with pytest.raises(ValueError, match="seed"):
        ft.sparse_random_projection(torch.ones(3, 4), 4, seed=-1)
    with pytest.raises(ValueError, match="x must be finite"):
        ft.sparse_random_projection(torch.full((3, 4), float("nan")), 4)


# ---- fastrp on torch graphs ----------------------------------------------------------------------

def random_adjacency(rng, n, p=0.08):
    a = (rng.random((n, n)) < p) * rng.uniform(0.5, 2.0, (n, n))
    np.fill_diagonal(a, 0)
    a[-2:] = 0
    a[:, -2:] = 0
    return sp.csr_matrix(a.astype(np.float32))


@pytest.mark.parametrize("preset", ["paper", "gds"])
def test_fastrp_graph_forms(rng, preset):
    A = random_adjacency(rng, 60)
    want = fastemb.fastrp(A, 32, preset=preset, seed=3)
    dense = torch.from_numpy(A.toarray())
    for g in (dense.to_sparse_csr(), dense.to_sparse()):
        got = ft.fastrp(g, 32, preset=preset, seed=3)
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        np.testing.assert_array_equal(got.numpy(), want)
    coo = A.tocoo()
    ei = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    got = ft.fastrp(ei, 32, num_nodes=60, edge_weight=torch.from_numpy(coo.data), preset=preset, seed=3)
    np.testing.assert_array_equal(got.numpy(), want)
    unweighted = ft.fastrp(ei, 32, num_nodes=60, preset=preset, seed=3, symmetrize=True)
    np.testing.assert_array_equal(unweighted.numpy(),
                                  fastemb.fastrp((coo.row, coo.col), 32, num_nodes=60, preset=preset, seed=3,
                                                 symmetrize=True))


def test_fastrp_features_and_iterations(rng):
    A = random_adjacency(rng, 40)
    f = rng.standard_normal((40, 5)).astype(np.float32)
    kw = dict(preset="gds", seed=1, feature_ratio=0.25, self_influence=0.5, return_iterations=True)
    e, its = ft.fastrp(torch.from_numpy(A.toarray()).to_sparse_csr(), 16, features=torch.from_numpy(f), **kw)
    we, wits = fastemb.fastrp(A, 16, features=f, **kw)
    np.testing.assert_array_equal(e.numpy(), we)
    np.testing.assert_array_equal(its.numpy(), wits)


def test_fastrp_torch_bad_inputs(rng):
    with pytest.raises(TypeError, match="graph"):
        ft.fastrp(np.zeros((2, 3), np.int64), 8)
    with pytest.raises(ValueError, match="edge_index"):
        ft.fastrp(torch.zeros(3, 4, dtype=torch.int64), 8)
    with pytest.raises(ValueError, match="square"):
        ft.fastrp(torch.ones(3, 4).to_sparse_csr(), 8)
    with pytest.raises(ValueError, match="out of range"):
        ft.fastrp(torch.tensor([[0, 1], [1, 7]]), 8, num_nodes=3)
    with pytest.raises(ValueError, match="edge_weight"):
        ft.fastrp(torch.tensor([[0, 1], [1, 2]]), 8, edge_weight=torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        ft.fastrp(torch.tensor([[0, 1], [1, 2]]), 8, edge_weight=torch.tensor([1.0, float("nan")]))


@pytest.mark.cuda
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device and fastemb._C_cuda")
def test_cuda_matches_cpu(rng):
    x = rng.standard_normal((50, 80)).astype(np.float32)
    got = ft.sparse_random_projection(torch.from_numpy(x).cuda(), 24, seed=4)
    np.testing.assert_array_equal(got.cpu().numpy(), fastemb.sparse_random_projection(x, 24, seed=4))
    A = random_adjacency(rng, 70)
    for preset in ("paper", "gds"):
        g = torch.from_numpy(A.toarray()).to_sparse_csr().cuda()
        e = ft.fastrp(g, 32, preset=preset, seed=2, standardize=False)
        np.testing.assert_array_equal(e.cpu().numpy(), fastemb.fastrp(A, 32, preset=preset, seed=2,
                                                                       standardize=False))
        e = ft.fastrp(g, 32, preset=preset, seed=2)
        np.testing.assert_allclose(e.cpu().numpy(), fastemb.fastrp(A, 32, preset=preset, seed=2), rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.skipif(not hasattr(fastemb._backend.native(), "graph_propagate"), reason="native graph kernels")
def test_cuda_ops_driver_on_host_memory(rng):
    """The CUDA driver (CudaOps + run_fastrp on torch buffers) with a stand-in _C_cuda that forwards to the CPU
    kernels on CPU tensors: checks argument order and the torch-buffer path without a GPU."""
    from fastemb.torch import _graph as tg

    C = fastemb._backend.native()

    csr_fns = ("graph_propagate", "graph_propagate_random", "graph_project_csr")
    nnz_seen = []

    class HostModule:
        def __getattr__(self, name):
            fn = getattr(C, name)

            def call(*args, **kw):  # drop the stream; the CSR calls' nnz (required on CUDA) is recorded
                if name in csr_fns:
                    nnz_seen.append(kw.pop("nnz"))
                assert not kw, kw
                return fn(*args[:-1])

            return call

    ops = tg.CudaOps.__new__(tg.CudaOps)
    ops.mod, ops.device, ops.stream = HostModule(), torch.device("cpu"), 0
    A = random_adjacency(rng, 50)
    f = rng.standard_normal((50, 6)).astype(np.float32)
    for preset in ("paper", "gds"):
        kw = dict(preset=preset, seed=5, feature_ratio=0.25, self_influence=0.3)
        plan = G.plan_fastrp(A, 24, num_features=6, **kw)
        nnz_seen.clear()
        e, its = G.run_fastrp(ops, plan, torch.from_numpy(f), True, False)
        assert nnz_seen and set(nnz_seen) == {len(plan.graph.indices)}
        we, wits = fastemb.fastrp(A, 24, features=f, return_iterations=True, **kw)
        np.testing.assert_array_equal(e.numpy(), we)
        np.testing.assert_array_equal(its.numpy(), wits)
