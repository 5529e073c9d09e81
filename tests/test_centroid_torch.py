"""torch.ops.fastemb.centroid_aggregate: autograd (float64 gradcheck), opcheck, torch.compile,
low-precision dtypes, the centroid triplet loss, and bad inputs."""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastemb.torch as ft  # noqa: E402
from fastemb._reference import centroid as ref  # noqa: E402

REDUCES = ["sum", "mean", "amax", "amin"]
NORMALIZES = ["none", "pre", "post", "both"]


def modes():
    for reduce, normalize, loo in itertools.product(REDUCES, NORMALIZES, [False, True]):
        if loo and reduce in ("amax", "amin"):
            continue
        yield reduce, normalize, loo


def labels_with_empty_group(n, k, gen):
    labels = torch.randint(0, k - 1, (n,), generator=gen)  # group k-1 stays empty
    labels[:k - 1] = torch.arange(k - 1)  # and the others are not
    return labels[torch.randperm(n, generator=gen)]


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()
    return g


@pytest.mark.parametrize("reduce,normalize,loo", list(modes()))
def test_gradcheck_float64(gen, reduce, normalize, loo):
    n, d, k = 13, 5, 4
    x = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = labels_with_empty_group(n, k, gen)
    if reduce in ("amax", "amin"):
        # distinct values: the max is not at a tie, where the derivative does not exist
        x = (torch.randperm(n * d, generator=gen).double().reshape(n, d) / 7 - 3).requires_grad_()
        fn = lambda x: ft.centroid_aggregate(x, labels, num_groups=k, reduce=reduce, normalize=normalize)
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)
        return
    w = torch.rand(n, dtype=torch.float64, generator=gen).add(0.5).requires_grad_()
    fn = lambda x, w: ft.centroid_aggregate(x, labels, num_groups=k, weights=w, reduce=reduce, normalize=normalize,
                                            leave_one_out=loo)
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5)


def test_gradcheck_offsets_unweighted(gen):
    x = torch.randn(9, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    offsets = torch.tensor([0, 2, 2, 6, 9])
    fn = lambda x: ft.centroid_aggregate(x, offsets=offsets, normalize="both")
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("reduce,normalize,loo", [("mean", "none", False), ("sum", "both", True),
                                                  ("amax", "post", False), ("mean", "pre", True)])
def test_opcheck(gen, reduce, normalize, loo):
    n, d, k = 11, 6, 4
    x = torch.randn(n, d, generator=gen, requires_grad=True)
    labels = labels_with_empty_group(n, k, gen)
    w = None if reduce in ("amax", "amin") else torch.rand(n, generator=gen).add(0.5).requires_grad_()
    torch.library.opcheck(torch.ops.fastemb.centroid_aggregate.default,
                          (x, labels, None, w, k, reduce, normalize, 1e-12, loo))
    offsets = torch.tensor([0, 3, 3, 8, n])
    torch.library.opcheck(torch.ops.fastemb.centroid_aggregate.default,
                          (x, None, offsets, w, k, reduce, normalize, 1e-12, loo))


def test_opcheck_backward_op(gen):
    x = torch.randn(10, 4, generator=gen)
    labels = labels_with_empty_group(10, 3, gen)
    w = torch.rand(10, generator=gen)
    outs = torch.ops.fastemb.centroid_aggregate(x, labels, None, w, 3, "mean", "post", 1e-12, False)
    g = torch.randn_like(outs[0])
    torch.library.opcheck(torch.ops.fastemb.centroid_aggregate_backward.default,
                          (g, x, labels, None, w, *outs, 3, "mean", "post", 1e-12, False, True, True))


def test_torch_compile_fullgraph(gen):
    n, d, k = 64, 16, 5
    labels = labels_with_empty_group(n, k, gen)

    def step(x, w):
        c = ft.centroid_aggregate(x, labels, num_groups=k, weights=w, normalize="post")
        loo = ft.centroid_aggregate(x, labels, num_groups=k, leave_one_out=True)
        return (c.square().sum() + (loo * x).sum()) * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = torch.randn(n, d, generator=gen, requires_grad=True)
    w = torch.rand(n, generator=gen, requires_grad=True)
    expected = step(x, w)
    gx, gw = torch.autograd.grad(expected, (x, w))
    got = compiled(x, w)
    cgx, cgw = torch.autograd.grad(got, (x, w))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(cgx, gx)
    torch.testing.assert_close(cgw, gw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("reduce", ["mean", "amax"])
def test_low_precision_matches_reference(gen, dtype, reduce):
    n, d, k = 300, 33, 9
    x = torch.randn(n, d, generator=gen).to(dtype).requires_grad_()
    labels = labels_with_empty_group(n, k, gen)
    out = ft.centroid_aggregate(x, labels, num_groups=k, reduce=reduce, normalize="post")
    assert out.dtype == dtype
    expected, *_ = ref.forward(x.detach().double().numpy(), labels.numpy(), None, k, None, reduce, "post", 1e-12,
                               False)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_matches_torch_scatter_reduce_mean(gen):
    n, d, k = 500, 20, 30
    x = torch.randn(n, d, generator=gen, requires_grad=True)
    labels = torch.randint(0, k, (n,), generator=gen)
    ours = ft.centroid_aggregate(x, labels, num_groups=k)
    theirs = torch.zeros(k, d).scatter_reduce(0, labels[:, None].expand(n, d), x, "mean", include_self=False)
    torch.testing.assert_close(ours, theirs)
    g = torch.randn(k, d, generator=gen)
    (ga,) = torch.autograd.grad(ours, x, g)
    (gb,) = torch.autograd.grad(theirs, x, g)
    torch.testing.assert_close(ga, gb)


def reference_ctl(features, labels, num_instance, margin):
    """A direct port of the reference training loop's centroid triplet term: P classes x M
    samples, class-major batch; round i: query = i-th sample of each class, centroid = mean of
    the class's other samples; batch-hard triplet loss over [queries; centroids]."""
    p = features.shape[0] // num_instance
    feats = features.reshape(p, num_instance, -1)
    losses = []
    for i in range(num_instance):
        query = feats[:, i]
        others = torch.cat([feats[:, :i], feats[:, i + 1:]], dim=1)
        centroids = others.mean(dim=1)
        emb = torch.cat([query, centroids])
        lab = torch.cat([labels.reshape(p, num_instance)[:, i]] * 2)
        sq = (emb * emb).sum(1)
        dist = (sq[:, None] + sq[None, :] - 2 * emb @ emb.T).clamp(min=1e-12).sqrt()
        is_pos = lab[:, None] == lab[None, :]
        d_ap = torch.stack([dist[a][is_pos[a]].max() for a in range(len(lab))])
        d_an = torch.stack([dist[a][~is_pos[a]].min() for a in range(len(lab))])
        losses.append(torch.relu(d_ap - d_an + margin).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centroid_triplet_loss_matches_reference_code(gen, dtype):
    p, m, d = 6, 4, 10
    x = torch.randn(p * m, d, generator=gen, dtype=dtype, requires_grad=True)
    class_ids = torch.randperm(50, generator=gen)[:p]
    labels = class_ids.repeat_interleave(m)
    expected = reference_ctl(x, labels, m, margin=0.5)
    got = ft.centroid_triplet_loss(x, labels, margin=0.5)
    torch.testing.assert_close(got, expected)
    (ge,) = torch.autograd.grad(expected, x)
    (gg,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(gg, ge)
    # batch order must not matter beyond which sample is the query of which round
    perm = torch.randperm(p * m, generator=gen)
    got_perm = ft.centroid_triplet_loss(x[perm], labels[perm], margin=0.5)
    assert torch.isfinite(got_perm)


def test_centroid_triplet_loss_gradcheck_and_edge_cases(gen):
    x = torch.randn(8, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])  # class 3 is a singleton: no centroid
    assert torch.autograd.gradcheck(lambda x: ft.centroid_triplet_loss(x, labels, 0.5, num_groups=4), (x,))
    one_class = ft.centroid_triplet_loss(x, torch.zeros(8, dtype=torch.long))
    assert one_class.item() == 0.0  # no round has two classes: nothing to contrast


def test_bad_inputs():
    x = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(TypeError, match="x"):
        ft.centroid_aggregate(x.long(), labels, num_groups=3)
    with pytest.raises(TypeError, match="index"):
        ft.centroid_aggregate(x, labels.float(), num_groups=3)
    with pytest.raises(ValueError, match="index"):
        ft.centroid_aggregate(x, labels[:5], num_groups=3)
    with pytest.raises(ValueError, match="index"):
        ft.centroid_aggregate(x, labels, num_groups=2)
    with pytest.raises(ValueError, match="index"):
        ft.centroid_aggregate(x, labels - 1, num_groups=3)
    with pytest.raises(ValueError, match="num_groups"):
        ft.centroid_aggregate(x, labels)
    with pytest.raises(ValueError, match="offsets"):
        ft.centroid_aggregate(x, offsets=torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match="offsets"):
        ft.centroid_aggregate(x, offsets=torch.tensor([0, 2, 5]))
    with pytest.raises(ValueError, match="weights"):
        ft.centroid_aggregate(x, labels, num_groups=3, weights=torch.tensor([1.0, float("nan"), 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="weights"):
        ft.centroid_aggregate(x, labels, num_groups=3, weights=torch.ones(6), reduce="amax")
    with pytest.raises(ValueError, match="reduce"):
        ft.centroid_aggregate(x, labels, num_groups=3, reduce="median")
    with pytest.raises(ValueError, match="device|index"):
        ft.centroid_aggregate(x, labels.to("meta"), num_groups=3)
    with pytest.raises(ValueError, match="x"):
        ft.centroid_aggregate(torch.randn(6), labels, num_groups=3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_matches_cpu(gen, deterministic, dtype):
    n, d, k = 1001, 67, 37
    x = torch.randn(n, d, generator=gen).to(dtype)
    labels = labels_with_empty_group(n, k, gen)
    torch.use_deterministic_algorithms(deterministic)
    try:
        for reduce, normalize, loo in modes():
            xc = x.clone().requires_grad_()
            xg = x.cuda().requires_grad_()
            a = ft.centroid_aggregate(xc, labels, num_groups=k, reduce=reduce, normalize=normalize, leave_one_out=loo)
            b = ft.centroid_aggregate(xg, labels.cuda(), num_groups=k, reduce=reduce, normalize=normalize,
                                      leave_one_out=loo)
            tol = 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2
            torch.testing.assert_close(b.cpu().float(), a.float(), rtol=tol, atol=tol)
            g = torch.randn(a.shape, generator=gen).to(dtype)
            (ga,) = torch.autograd.grad(a, xc, g)
            (gb,) = torch.autograd.grad(b, xg, g.cuda())
            torch.testing.assert_close(gb.cpu().float(), ga.float(), rtol=tol * 10, atol=tol * 10)
            if deterministic:
                b2 = ft.centroid_aggregate(xg, labels.cuda(), num_groups=k, reduce=reduce, normalize=normalize,
                                           leave_one_out=loo)
                assert torch.equal(b, b2)
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("reduce,normalize,loo", [("mean", "post", True), ("amax", "both", False),
                                                  ("sum", "none", False)])
def test_empty_tensors_forward_and_backward(reduce, normalize, loo):
    """Empty torch tensors have data_ptr 0: the native layer must take them as empty, not missing."""
    x = torch.empty(0, 4, requires_grad=True)
    labels = torch.empty(0, dtype=torch.long)
    out = ft.centroid_aggregate(x, labels, num_groups=3, reduce=reduce, normalize=normalize, leave_one_out=loo)
    assert out.shape == ((0 if loo else 3), 4) and torch.all(out == 0)
    (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    assert g is None or g.shape == (0, 4)
    z = ft.centroid_aggregate(torch.empty(0, 4), offsets=torch.zeros(3, dtype=torch.long), reduce=reduce,
                              normalize=normalize)
    assert z.shape == (2, 4) and torch.all(z == 0)


@pytest.mark.parametrize("weighted", [False, True])
def test_backward_with_strided_labels_and_weights(weighted):
    # regression: the backward op read the saved (strided) labels / weights as if they were dense
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 8, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (100,), generator=g)[::2]
    w = torch.rand(100, dtype=torch.float64, generator=g)[::2] if weighted else None

    def grads(lab, wt):
        wt = None if wt is None else wt.detach().clone().requires_grad_()
        y = ft.centroid_aggregate(x, lab, num_groups=5, weights=wt)
        inputs = (x,) if wt is None else (x, wt)
        return torch.autograd.grad((y ** 2).sum(), inputs)

    strided = grads(labels, w)
    dense = grads(labels.contiguous(), None if w is None else w.contiguous())
    for a, b in zip(strided, dense):
        assert torch.equal(a, b)
