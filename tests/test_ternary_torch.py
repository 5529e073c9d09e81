"""torch.ops.fastemb.ternary_linear and fastemb.torch.BitLinear: equality with the NumPy API,
the torch fallback bit for bit, opcheck, torch.compile(fullgraph=True), straight-through
training (loss goes down, gradients are the STE's, float64 gradcheck), eval vs training forward,
from_linear / state_dict / cache invalidation, bad inputs, and CUDA against CPU."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402
from fastemb import TernaryWeight  # noqa: E402
from fastemb import ternary as tern  # noqa: E402
from fastemb._reference import ternary as ref  # noqa: E402
from fastemb.torch import _ternary as tt  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
op = torch.ops.fastemb.ternary_linear


def rand_weight(rng, n, k, per_row=False):
    wq = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k))
    gamma = rng.uniform(0.01, 2.0, n if per_row else 1).astype(np.float32)
    return TernaryWeight.from_ternary(wq, gamma)


def tensors(tw, device="cpu"):
    return tt.ternary_weight_tensors(tw, device)


def seed_torch(rng):
    torch.manual_seed(int(rng.integers(0, 2**31)))


# ---- the op -------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 255, 7), (17, 300, 64), (2, 1000, 5)])
@pytest.mark.parametrize("per_row", [False, True])
def test_op_matches_numpy_api(rng, m, k, n, per_row):
    tw = rand_weight(rng, n, k, per_row)
    packed, scale, _ = tensors(tw)
    x = rng.standard_normal((m, k)) * 2
    b = rng.standard_normal(n).astype(np.float32)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        xt = torch.from_numpy(x).to(dtype)
        x_np = xt.float().numpy() if dtype == torch.bfloat16 else xt.numpy()  # bf16 -> f32 is exact
        for bias in (None, b):
            bt = None if bias is None else torch.from_numpy(bias)
            got = op(xt, packed, scale, k, bt, "int8", 1e-5)
            assert got.dtype == torch.float32 and got.shape == (m, n)
            np.testing.assert_array_equal(got.numpy(), fastemb.ternary_matmul(x_np, tw, bias=bias))
            gotf = op(xt, packed, scale, k, bt, "float", 1e-5).numpy()
            exact = tern._ternary_matmul(x_np, tw, "float", bias, ref.EPS, "numpy")
            np.testing.assert_allclose(gotf, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


def test_torch_fallback_is_bit_exact_with_the_reference(rng):
    # the path CUDA tensors take when _C_cuda has no ternary kernels (and CPU without _C)
    for per_row in (False, True):
        tw = rand_weight(rng, 33, 700, per_row)
        packed, scale, k = tensors(tw)
        x = rng.standard_normal((9, 700)).astype(np.float32)
        b = rng.standard_normal(33).astype(np.float32)
        got = tt._linear_torch(torch.from_numpy(x), packed, scale, k, torch.from_numpy(b), "int8", 1e-5)
        np.testing.assert_array_equal(got.numpy(), tern._ternary_matmul(x, tw, "int8", b, ref.EPS, "numpy"))
        xq, s = tt.quantize_activations_torch(torch.from_numpy(x))
        rq, rs = ref.quantize_activations(x)
        np.testing.assert_array_equal(xq.numpy(), rq)
        np.testing.assert_array_equal(s.numpy(), rs)
        np.testing.assert_array_equal(tt.unpack_torch(packed, k).numpy(), tw.ternary())


def test_op_uses_native_kernels_when_present(rng, monkeypatch):
    from test_ternary import FakeKernels  # stand-in with the _C signatures (reference by address)

    fake = FakeKernels()
    monkeypatch.setattr(tern, "native_kernels", lambda: fake)
    tw = rand_weight(rng, 12, 300, per_row=True)
    packed, scale, k = tensors(tw)
    x = rng.standard_normal((5, 300)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    got = op(torch.from_numpy(x), packed, scale, k, torch.from_numpy(b), "int8", 1e-5)
    np.testing.assert_array_equal(got.numpy(), tern._ternary_matmul(x, tw, "int8", b, ref.EPS, "numpy"))
    got = op(torch.from_numpy(x).double(), packed, scale, k, None, "float", 1e-5)
    np.testing.assert_array_equal(got.numpy(), ref.matmul_float(x, tw.packed, k, tw.scale))
    assert [c[0] for c in fake.calls] == ["quantize", "int8", "float"]


def test_op_leading_dims_and_empty(rng):
    tw = rand_weight(rng, 6, 40)
    packed, scale, k = tensors(tw)
    x = torch.randn(2, 3, 40)
    y = ft.ternary_linear(x, packed, scale, k)
    assert y.shape == (2, 3, 6)
    torch.testing.assert_close(y.reshape(6, 6), op(x.reshape(6, 40), packed, scale, k, None, "int8", 1e-5),
                               rtol=0, atol=0)
    assert op(torch.zeros(0, 40), packed, scale, k, None, "int8", 1e-5).shape == (0, 6)


def test_opcheck(rng):
    cases = [(False, torch.randn(4, 300), None, "int8"), (True, torch.randn(1, 300, dtype=torch.float64), "b", "float"),
             (True, torch.randn(3, 300, dtype=torch.bfloat16), "b", "int8"),
             (False, torch.randn(2, 300, requires_grad=True), "grad", "int8"),
             (True, torch.randn(2, 300, dtype=torch.float16, requires_grad=True), "grad", "float")]
    for per_row, x, bias, activations in cases:
        tw = rand_weight(rng, 10, 300, per_row)
        packed, scale, k = tensors(tw)
        b = None if bias is None else torch.randn(10, requires_grad=bias == "grad")
        torch.library.opcheck(op.default, (x, packed, scale, k, b, activations, 1e-5))


def test_op_backward_is_the_ste(rng):
    tw = rand_weight(rng, 7, 50, per_row=True)
    packed, scale, k = tensors(tw)
    x = torch.randn(3, 50, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    g = torch.randn(3, 7)
    op(x, packed, scale, k, b, "int8", 1e-5).backward(g)
    w = torch.from_numpy(tw.dequantize())
    torch.testing.assert_close(x.grad, (g @ w).double())
    torch.testing.assert_close(b.grad, g.sum(0))
    with pytest.raises(ValueError, match="scale"):
        op(x, packed, scale.clone().requires_grad_(), k, None, "int8", 1e-5)


def test_op_bad_inputs(rng):
    tw = rand_weight(rng, 5, 64)
    packed, scale, k = tensors(tw)
    x = torch.randn(3, 64)
    with pytest.raises(ValueError, match=r"x has 63 features.*k=64"):
        op(x[:, :63].contiguous(), packed, scale, k, None, "int8", 1e-5)
    with pytest.raises(TypeError, match="x must be float"):
        op(x.to(torch.int32), packed, scale, k, None, "int8", 1e-5)
    with pytest.raises(ValueError, match="x must be 2-D"):
        op(x[0], packed, scale, k, None, "int8", 1e-5)
    bad = x.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        op(bad, packed, scale, k, None, "int8", 1e-5)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        for value in (float("nan"), float("inf"), -float("inf")):
            bad = x.to(dtype)
            bad[1, 7] = value
            for activations in ("int8", "float"):
                with pytest.raises(ValueError, match="x must be finite"):
                    op(bad, packed, scale, k, None, activations, 1e-5)
        big = x.to(dtype) * 1e3 if dtype != torch.float16 else x.to(dtype) * 100  # large but finite: accepted
        op(big, packed, scale, k, None, "int8", 1e-5)
    with pytest.raises(ValueError, match="x must be finite"):
        op(bad.t().contiguous().t(), packed, scale, k, None, "int8", 1e-5)  # non-contiguous
    with pytest.raises(TypeError, match="packed"):
        op(x, packed.to(torch.int8), scale, k, None, "int8", 1e-5)
    with pytest.raises(ValueError, match="packed must have shape"):
        op(x, packed[:, :10], scale, k, None, "int8", 1e-5)
    with pytest.raises(TypeError, match="scale"):
        op(x, packed, scale.double(), k, None, "int8", 1e-5)
    with pytest.raises(ValueError, match="scale must have shape"):
        op(x, packed, torch.ones(3), k, None, "int8", 1e-5)
    with pytest.raises(ValueError, match="bias"):
        op(x, packed, scale, k, torch.zeros(4), "int8", 1e-5)
    with pytest.raises(ValueError, match="activations"):
        op(x, packed, scale, k, None, "int4", 1e-5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ft.ternary_linear(x.numpy(), packed, scale, k)
    big = 2 ** 22 + 256
    with pytest.raises(ValueError, match="too large for the int8 path"):
        op(torch.zeros(0, big), torch.zeros(0, big // 4, dtype=torch.uint8), scale, big, None, "int8", 1e-5)


# ---- BitLinear ----------------------------------------------------------------------------------

def test_bitlinear_is_a_linear_with_the_same_state(rng):
    seed_torch(rng)
    lin = torch.nn.Linear(40, 12)
    bl = ft.BitLinear.from_linear(lin, scale="absmedian")
    assert isinstance(bl, torch.nn.Linear) and bl.training and bl.scale == "absmedian"
    assert set(bl.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(bl.weight, lin.weight, rtol=0, atol=0)
    bl.eval()
    assert set(bl.state_dict()) == {"weight", "bias"}  # the packed cache is not state
    other = torch.nn.Linear(40, 12)
    other.load_state_dict(bl.state_dict())
    fresh = ft.BitLinear(40, 12, scale="absmedian").eval()
    fresh.load_state_dict(bl.state_dict())
    x = torch.randn(5, 40)
    torch.testing.assert_close(fresh(x), bl(x), rtol=0, atol=0)
    nb = ft.BitLinear(40, 12, bias=False)
    assert nb.bias is None and set(nb.state_dict()) == {"weight"}
    assert ft.BitLinear.from_linear(lin.eval()).training is False
    with pytest.raises(TypeError, match="linear"):
        ft.BitLinear.from_linear(torch.nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="scale"):
        ft.BitLinear(4, 4, scale="absmax")


@pytest.mark.parametrize("scale", ["absmean", "absmedian"])
@pytest.mark.parametrize("bias", [True, False])
def test_eval_matches_training_forward(rng, scale, bias):
    """Eval (packed, exact int32 product, then * gamma / s) equals training (float32 linear of the
    fake-quantized operands) up to float32 rounding: the training sum rounds each of k terms
    (x_q / s and the accumulation), the eval path rounds only acc * (gamma / s) + b. Bound:
    (k + 4) * 2^-24 * (|x~| |w~|^T + |b|), doubled for margin."""
    seed_torch(rng)
    layer = ft.BitLinear(300, 24, bias=bias, scale=scale)
    x = torch.randn(2, 5, 300) * 3
    with torch.no_grad():
        y_train = layer(x)
        xt = tt.fake_quantize_activations(x)
        wt = tt.fake_quantize_weight(layer.weight, scale)
        bound = xt.abs() @ wt.abs().T + (layer.bias.abs() if bias else 0)
        layer.eval()
        y_eval = layer(x)
    assert y_eval.shape == y_train.shape == (2, 5, 24)
    assert torch.all((y_eval - y_train).abs() <= 2 * (300 + 4) * 2.0 ** -24 * bound)
    # and the packed weights are fastemb.quantize_ternary's
    tw = fastemb.quantize_ternary(layer.weight.detach().numpy(), scale=scale)
    np.testing.assert_array_equal(layer._packed.numpy(), tw.packed)
    np.testing.assert_array_equal(layer._gamma.numpy(), tw.scale)
    np.testing.assert_array_equal(
        y_eval.reshape(10, 24).numpy(),
        fastemb.ternary_matmul(x.reshape(10, 300).numpy(), tw, bias=layer.bias.detach().numpy() if bias else None))


def test_training_lowers_the_loss(rng):
    seed_torch(rng)
    d_in, d_out = 64, 16
    w_true = torch.from_numpy(rng.choice([-1.0, 0.0, 1.0], size=(d_out, d_in)).astype(np.float32)) * 0.1
    model = torch.nn.Sequential(ft.BitLinear(d_in, 64), torch.nn.ReLU(), ft.BitLinear(64, d_out))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x_eval = torch.randn(256, d_in)
    y_eval = x_eval @ w_true.T

    def loss_now():
        with torch.no_grad():
            return F.mse_loss(model(x_eval), y_eval).item()

    start = loss_now()
    for _ in range(150):
        x = torch.randn(64, d_in)
        loss = F.mse_loss(model(x), x @ w_true.T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = loss_now()
    assert end < 0.3 * start, (start, end)  # ~0.13 over seeds 0..5
    model.eval()
    assert loss_now() < 0.35 * start  # the packed eval model keeps what was learned


def test_ste_gradients_float64_gradcheck(rng):
    """The STE forward equals F.linear(x + dx, w + dw, b) with the quantization offsets dx, dw
    frozen at the point; that function is smooth, so gradcheck verifies its gradient numerically,
    and BitLinear's autograd must give exactly that gradient (identity through the quantizers)."""
    seed_torch(rng)
    layer = ft.BitLinear(13, 5, dtype=torch.float64)
    x0 = torch.randn(4, 13, dtype=torch.float64)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    dx = tt.fake_quantize_activations(x0) - x0
    dw = tt.fake_quantize_weight(w0) - w0

    def frozen(x, w, b):
        return F.linear(x + dx, w + dw, b)

    args = (x0.clone().requires_grad_(), w0.clone().requires_grad_(), b0.clone().requires_grad_())
    assert torch.autograd.gradcheck(frozen, args)
    x = x0.clone().requires_grad_()
    y = layer(x)
    torch.testing.assert_close(y, frozen(*args), rtol=0, atol=0)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    expected = torch.autograd.grad(frozen(*args), args, g)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    # and the STE gradient in closed form
    torch.testing.assert_close(got[0], g @ (w0 + dw), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], g.T @ (x0 + dx), rtol=1e-12, atol=1e-12)


def test_cache_follows_weight_changes(rng):
    seed_torch(rng)
    layer = ft.BitLinear(50, 8).eval()
    x = torch.randn(3, 50)
    y0 = layer(x)
    packed0 = layer._packed
    with torch.no_grad():
        layer.weight.mul_(-1.0)  # in place: version counter moves
    y1 = layer(x)
    assert layer._packed is not packed0
    torch.testing.assert_close(y1 - layer.bias, -(y0 - layer.bias))
    layer.weight = torch.nn.Parameter(torch.randn(8, 50))  # new tensor
    tw = fastemb.quantize_ternary(layer.weight.detach().numpy())
    np.testing.assert_array_equal(layer(x).detach().numpy(),
                                  fastemb.ternary_matmul(x.numpy(), tw, bias=layer.bias.detach().numpy()))
    layer.train()
    assert layer._packed is None
    with torch.no_grad():
        layer.weight.zero_()
    layer.eval()
    torch.testing.assert_close(layer(x), layer.bias.expand(3, 8), rtol=0, atol=0)


# torch 2.13's own torch/utils/mkldnn.py decorates 14 methods with the deprecated torch.jit.script_method; they
# run when inductor (the default torch.compile backend, kept here on purpose) is first imported.
_INDUCTOR_IMPORT_WARNING = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@_INDUCTOR_IMPORT_WARNING
def test_compile_fullgraph_eval_model(rng):
    seed_torch(rng)
    model = torch.nn.Sequential(ft.BitLinear(96, 128), torch.nn.ReLU(), ft.BitLinear(128, 96, bias=False)).eval()
    x = torch.randn(7, 96)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(compiled(torch.randn(3, 96)).shape, torch.Size([3, 96]))
    # after a weight change in a compiled model, repack() (or eval()) refreshes the cache
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    model[0].repack()
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


@_INDUCTOR_IMPORT_WARNING
def test_compile_fullgraph_training_step(rng):
    seed_torch(rng)
    model = torch.nn.Sequential(ft.BitLinear(32, 32), torch.nn.ReLU(), ft.BitLinear(32, 4))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 32)
    loss = compiled(x).square().mean()
    loss.backward()
    assert model[0].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()


def test_half_dtypes(rng):
    seed_torch(rng)
    for dtype in (torch.bfloat16, torch.float16):
        layer = ft.BitLinear(64, 10, dtype=dtype)
        x = torch.randn(4, 64, dtype=dtype)
        y = layer(x)
        assert y.dtype == dtype
        y.float().sum().backward()
        assert layer.weight.grad.dtype == dtype
        layer.eval()
        ye = layer(x)
        assert ye.dtype == dtype
        torch.testing.assert_close(ye.float(), y.detach().float(), rtol=0.05, atol=0.05)


def test_bitlinear_float_activations(rng):
    seed_torch(rng)
    layer = ft.BitLinear(70, 9, activations="float")
    x = torch.randn(5, 70)
    y = layer(x)
    torch.testing.assert_close(y, F.linear(x, tt.fake_quantize_weight(layer.weight), layer.bias))
    layer.eval()
    torch.testing.assert_close(layer(x), y.detach(), rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    seed_torch(rng)
    layer = ft.BitLinear(300, 40).eval()
    x = torch.randn(6, 300)
    y_cpu = layer(x)
    layer = layer.cuda()
    y_gpu = layer(x.cuda())
    np.testing.assert_array_equal(y_gpu.cpu().numpy(), y_cpu.detach().numpy())
    for dtype in (torch.bfloat16, torch.float16):
        torch.testing.assert_close(layer(x.cuda().to(dtype)).float().cpu(), y_cpu.detach(), rtol=0.05, atol=0.05)
    compiled = torch.compile(layer, fullgraph=True)
    np.testing.assert_array_equal(compiled(x.cuda()).detach().cpu().numpy(), y_cpu.detach().numpy())
