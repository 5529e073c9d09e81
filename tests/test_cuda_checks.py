"""Value checks of the torch ops on CUDA tensors (fastemb.torch._checks): async (device-side assert, no host
sync) by default, sync (one host read, the CPU's ValueError) or off. The mode logic is tested here on CPU
tensors posing as CUDA ones; the real device paths run in the ``cuda``-marked tests."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402
from fastemb.torch import _checks  # noqa: E402

CUDA = torch.device("cuda")


def has_cuda():
    return torch.cuda.is_available() and fastemb._backend.cuda_module() is not None


@pytest.fixture
def mode():
    previous = ft.get_cuda_checks()
    yield ft.set_cuda_checks
    ft.set_cuda_checks(previous)


@pytest.fixture
def no_capture(monkeypatch):
    # CPU builds of torch cannot answer is_current_stream_capturing; the logic under test does not depend on it
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)


def test_default_mode_is_async():
    env = {k: v for k, v in os.environ.items() if k != "FASTEMB_CUDA_CHECKS"}
    out = subprocess.run([sys.executable, "-c", "import fastemb.torch as ft; print(ft.get_cuda_checks())"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "async", out.stderr


def test_env_var_and_bad_modes(mode):
    env = dict(os.environ, FASTEMB_CUDA_CHECKS="sync")
    out = subprocess.run([sys.executable, "-c", "import fastemb.torch as ft; print(ft.get_cuda_checks())"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "sync", out.stderr
    env["FASTEMB_CUDA_CHECKS"] = "sometimes"
    out = subprocess.run([sys.executable, "-c", "import fastemb.torch"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode != 0 and "FASTEMB_CUDA_CHECKS" in out.stderr
    with pytest.raises(ValueError, match="mode"):
        mode("later")
    assert mode("off") in _checks.CUDA_CHECK_MODES and ft.get_cuda_checks() == "off"


def test_cpu_tensors_always_raise(mode):
    mode("off")  # the mode is for CUDA only
    with pytest.raises(ValueError, match="index: label 5"):
        _checks.require(torch.device("cpu"), [(torch.tensor(True), "no"), (torch.tensor(False), lambda: "index: label 5")])
    _checks.require(torch.device("cpu"), [(torch.tensor(True), "fine")])
    _checks.require(torch.device("cpu"), [])


def test_cuda_modes_logic(mode, no_capture):
    ok, bad = torch.tensor(True), torch.tensor(False)
    calls = []

    def msg():
        calls.append(1)
        return "weights must be finite"

    mode("sync")
    with pytest.raises(ValueError, match="weights must be finite"):
        _checks.require(CUDA, [(ok, "first"), (bad, msg)])
    assert calls == [1]
    _checks.require(CUDA, [(ok, msg), (ok.reshape(1), msg)])
    assert calls == [1]  # messages are built only on failure
    mode("async")  # torch._assert_async on these CPU tensors raises at once; on CUDA it is a device assert
    with pytest.raises(RuntimeError):
        _checks.require(CUDA, [(ok, "a"), (bad, "b")])
    _checks.require(CUDA, [(ok, "a")])
    mode("off")
    _checks.require(CUDA, [(bad, msg)])
    assert calls == [1]


# ---- on a real device ----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device and fastemb._C_cuda")


@pytest.mark.cuda
@cuda
def test_cuda_sync_mode_raises_value_errors(mode):
    mode("sync")
    dev = torch.device("cuda")
    x = torch.randn(10, 8, device=dev)
    with pytest.raises(ValueError, match="index: label 7 is out of range"):
        ft.centroid_aggregate(x, torch.arange(10, device=dev) % 8, num_groups=7)
    with pytest.raises(ValueError, match="index: negative label -1"):
        ft.centroid_aggregate(x, torch.arange(10, device=dev) - 1, num_groups=10)
    with pytest.raises(ValueError, match="offsets"):
        ft.centroid_aggregate(x, offsets=torch.tensor([0, 6, 4, 10], device=dev), num_groups=3)
    w = torch.ones(10, device=dev)
    w[3] = float("nan")
    with pytest.raises(ValueError, match="weights must be finite"):
        ft.centroid_aggregate(x, torch.arange(10, device=dev) % 3, num_groups=3, weights=w)
    xn = x.clone()
    xn[2, 2] = float("inf")
    with pytest.raises(ValueError, match="x must be finite"):
        ft.binarize(xn, 2)
    with pytest.raises(ValueError, match="x must be finite"):
        ft.sparse_random_projection(xn, 16)
    tw = fastemb.quantize_ternary(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    packed, scale = (torch.from_numpy(np.asarray(a)).to(dev) for a in (tw.packed, tw.scale))
    with pytest.raises(ValueError, match="x must be finite"):
        ft.ternary_linear(xn, packed, scale, 8)


@pytest.mark.cuda
@cuda
def test_cuda_async_mode_never_syncs(mode):
    # torch raises on any synchronizing call while sync debug mode is "error": the ops' checks must not sync
    mode("async")
    dev = torch.device("cuda")
    x = torch.randn(1000, 64, device=dev)
    labels = torch.randint(0, 50, (1000,), device=dev)
    w = torch.rand(1000, device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ft.centroid_aggregate(x, labels, num_groups=50, weights=w)
        codes = ft.binarize(x, 2)
        proj = ft.sparse_random_projection(x, 32)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out.cpu(), ft.centroid_aggregate(x.cpu(), labels.cpu(), num_groups=50, weights=w.cpu()),
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(codes.cpu(), ft.binarize(x.cpu(), 2))
    assert proj.shape == (1000, 32)


@pytest.mark.cuda
@cuda
def test_cuda_async_mode_fails_as_device_assert():
    # a device-side assert leaves the CUDA context unusable: run it in a fresh process
    script = textwrap.dedent("""
        import torch, fastemb.torch as ft
        x = torch.randn(10, 8, device="cuda")
        try:
            ft.centroid_aggregate(x, torch.arange(10, device="cuda"), num_groups=7)
            torch.cuda.synchronize()
        except RuntimeError as e:
            print("DEVICE ASSERT", "assert" in str(e).lower())
        else:
            print("NO ERROR")
    """)
    env = {k: v for k, v in os.environ.items() if k != "FASTEMB_CUDA_CHECKS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "DEVICE ASSERT True" in out.stdout, (out.stdout, out.stderr[-2000:])


@pytest.mark.cuda
@cuda
def test_cuda_off_mode_is_memory_safe(mode):
    # no checks: out-of-range labels are dropped by the kernels, nothing is read out of bounds
    mode("off")
    dev = torch.device("cuda")
    x = torch.randn(10, 8, device=dev)
    labels = torch.tensor([0, 1, 2, 9, -4, 1, 0, 2, 100, 1], device=dev)
    out, counts = ft.centroid_aggregate(x, labels, num_groups=3, return_counts=True)
    torch.cuda.synchronize()
    keep = (labels >= 0) & (labels < 3)
    assert counts.cpu().tolist() == torch.bincount(labels[keep], minlength=3).cpu().tolist()
    want = ft.centroid_aggregate(x[keep].cpu(), labels[keep].cpu(), num_groups=3)
    torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-6)
