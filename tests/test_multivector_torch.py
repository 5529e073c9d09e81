"""torch.ops.fastemb.maxsim / maxsim_backward / muvera_fde: the NumPy API's bits, autograd (float64
gradcheck, gradients equal to autograd through PyLate's padded einsum formula), opcheck, torch.compile, bad
input."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()
    return g


def sets(gen, n, max_len, dim, dtype=torch.float32, empty=True):
    lens = torch.randint(0 if empty else 1, max_len + 1, (n,), generator=gen)
    off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)])
    x = torch.randn(int(off[-1]), dim, generator=gen, dtype=dtype)
    return x, off


def padded_formula(q, qo, d, do):
    """PyLate's colbert_scores on padded tensors, masks applied as -inf / 0 (differentiable reference)."""
    def pad(x, off):
        n, lens = len(off) - 1, (off[1:] - off[:-1]).tolist()
        t = max(lens + [1])
        out = x.new_zeros((n, t, x.shape[1]))
        mask = torch.zeros((n, t), dtype=torch.bool)
        for i, ln in enumerate(lens):
            out[i, :ln] = x[off[i]:off[i] + ln]
            mask[i, :ln] = True
        return out, mask
    qp, qm = pad(q, qo)
    dp, dm = pad(d, do)
    s = torch.einsum("ash,bth->abst", qp, dp).masked_fill(~dm[None, :, None, :], float("-inf"))
    m = s.max(dim=-1).values
    m = torch.where(dm.any(1)[None, :, None] & qm[:, None, :], m, torch.zeros_like(m))
    return m.sum(-1)


def test_forward_float32_is_the_numpy_api(gen):
    q, qo = sets(gen, 5, 8, 24)
    d, do = sets(gen, 9, 20, 24)
    got = ft.maxsim(q, qo, d, do)
    expected = fastemb.maxsim(q.numpy(), qo.numpy(), d.numpy(), do.numpy())
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_allclose(got.numpy(), padded_formula(q.double(), qo, d.double(), do).numpy(), rtol=1e-5, atol=1e-4)


def test_float64_and_gradients_match_the_padded_formula(gen):
    q, qo = sets(gen, 4, 6, 10, torch.float64)
    d, do = sets(gen, 7, 9, 10, torch.float64)
    q.requires_grad_()
    d.requires_grad_()
    w = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    got = ft.maxsim(q, qo, d, do)
    gq, gd = torch.autograd.grad((got * w).sum(), (q, d))
    ref = padded_formula(q, qo, d, do)
    rq, rd = torch.autograd.grad((ref * w).sum(), (q, d))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(gq, rq)
    torch.testing.assert_close(gd, rd)


def test_gradcheck(gen):
    q, qo = sets(gen, 3, 4, 5, torch.float64)
    d, do = sets(gen, 4, 5, 5, torch.float64)
    q.requires_grad_()
    d.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ft.maxsim(a, qo, b, do), (q, d), eps=1e-6, atol=1e-5)


def test_float32_backward_and_only_q(gen):
    q, qo = sets(gen, 3, 5, 16, empty=False)
    d, do = sets(gen, 6, 7, 16)
    q.requires_grad_()
    g = torch.autograd.grad(ft.maxsim(q, qo, d, do).sum(), q)[0]
    qd = q.detach().double().requires_grad_()
    rg = torch.autograd.grad(padded_formula(qd, qo, d.double(), do).sum(), qd)[0]
    torch.testing.assert_close(g.double(), rg, rtol=1e-5, atol=1e-5)


def test_opcheck(gen):
    q, qo = sets(gen, 3, 5, 8, torch.float64)
    d, do = sets(gen, 5, 6, 8, torch.float64)
    q.requires_grad_()
    d.requires_grad_()
    torch.library.opcheck(torch.ops.fastemb.maxsim.default, (q, qo, d, do))
    torch.library.opcheck(torch.ops.fastemb.maxsim.default, (q.detach().float(), qo, d.detach().float(), do))
    grad = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastemb.maxsim_backward.default, (grad, q.detach(), qo, d.detach(), do))
    x, xo = sets(gen, 4, 6, 8)
    torch.library.opcheck(torch.ops.fastemb.muvera_fde.default, (x, xo, True, 2, 3, 4, 0, True, -5))


def test_torch_compile_fullgraph(gen):
    q, qo = sets(gen, 3, 5, 8, empty=False)
    d, do = sets(gen, 4, 6, 8, empty=False)
    q.requires_grad_()

    def step(q, d):
        s = ft.maxsim(q, qo, d, do)
        f = ft.muvera_fde(d, do, "document", repetitions=2, k_sim=2, d_proj=4)
        return torch.nn.functional.cross_entropy(s, torch.arange(3) % 4) + f.sum() * 0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    expected = step(q, d)
    (g,) = torch.autograd.grad(expected, (q,))
    got = compiled(q, d)
    (cg,) = torch.autograd.grad(got, (q,))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(cg, g)


def test_muvera_fde_op_is_the_numpy_api(gen):
    x, xo = sets(gen, 6, 12, 20)
    for kind in ("query", "document"):
        kw = dict(repetitions=3, k_sim=3, d_proj=5, final_dim=17, seed=2**64 - 3)
        got = ft.muvera_fde(x, xo, kind, **kw)
        np.testing.assert_array_equal(got.numpy(), fastemb.muvera_fde(x.numpy(), xo.numpy(), kind, **kw))


def test_bad_input(gen):
    q, qo = sets(gen, 3, 4, 6, empty=False)
    with pytest.raises(ValueError, match="d: token dimension 5 does not match q's 6"):
        ft.maxsim(q, qo, torch.zeros(3, 5), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="q_offsets must be int64"):
        ft.maxsim(q, qo.int(), q, qo)
    with pytest.raises(ValueError, match="d_offsets must be non-decreasing"):
        ft.maxsim(q, qo, q, torch.tensor([0, int(qo[-1]), 1, int(qo[-1])]))
    with pytest.raises(ValueError, match="q_offsets must end at the number of tokens"):
        ft.maxsim(q, qo[:-1], q, qo)
    bad = q.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="d: tokens must be finite"):
        ft.maxsim(q, qo, bad, qo)
    with pytest.raises(TypeError, match="d must have q's dtype"):
        ft.maxsim(q, qo, q.double(), qo)
    with pytest.raises(ValueError, match="k_sim must be <= 16"):
        ft.muvera_fde(q, qo, "query", k_sim=20)
    with pytest.raises(ValueError, match="kind must be"):
        ft.muvera_fde(q, qo, "doc")
    with pytest.raises(ValueError, match="x: token row"):
        ft.muvera_fde(bad, qo, "query")


def cuda(fn):
    """Both marks: selected by `pytest -m cuda` (bench/gpu_check.py), skipped without a device."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")(fn))


@cuda
def test_cuda_kernels_give_the_cpu_bits(gen):
    from fastemb import _backend

    mod = _backend.cuda_module()  # muvera_fde's fallback (CPU, moved back) would pass this test without the kernel
    assert mod is not None and hasattr(mod, "multivector_maxsim") and hasattr(mod, "multivector_fde")
    dev = torch.device("cuda")
    for dim in (1, 7, 128):
        q, qo = sets(gen, 7, 40, dim)
        d, do = sets(gen, 30, 140, dim)
        got = ft.maxsim(q.to(dev), qo.to(dev), d.to(dev), do.to(dev)).cpu()
        np.testing.assert_array_equal(got.numpy(), ft.maxsim(q, qo, d, do).numpy())
        for kw in (dict(repetitions=3, k_sim=4, d_proj=0), dict(repetitions=5, k_sim=3, d_proj=7, final_dim=29),
                   dict(repetitions=2, k_sim=0, d_proj=3)):
            for kind in ("query", "document"):
                got = ft.muvera_fde(d.to(dev), do.to(dev), kind, seed=9, **kw).cpu()
                np.testing.assert_array_equal(got.numpy(), fastemb.muvera_fde(d.numpy(), do.numpy(), kind, seed=9, **kw))


@cuda
def test_cuda_gradients(gen):
    dev = torch.device("cuda")
    q, qo = sets(gen, 3, 5, 8, torch.float64)
    d, do = sets(gen, 4, 6, 8, torch.float64)
    q = q.to(dev).requires_grad_()
    d = d.to(dev).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ft.maxsim(a, qo.to(dev), b, do.to(dev)), (q, d), eps=1e-6, atol=1e-5)
