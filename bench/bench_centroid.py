"""Centroid aggregation (reduce='mean'): fastemb against its peers, forward and backward, in the
same run so that the ratios are fair on a noisy, shared machine.

Run (full scale takes a few minutes; FASTEMB_BENCH_SCALE=0.01 is a seconds-long smoke run):

    python -m pytest bench/bench_centroid.py --benchmark-json=bench-centroid.json
    python bench/report.py bench-centroid.json -o table.md

Cases (docs: /work/shared/specs/centroid.md, "Measured anchors"): float32 x, int64 labels drawn
uniformly from [0, K), sorted or not; N and K are multiplied by FASTEMB_BENCH_SCALE.

Forward peers (all get the same x and labels and return the [K, D] means; group counts are
computed inside the timed call wherever the peer needs them, as fastemb computes them too):
    fastemb              fastemb.centroid_aggregate(x, labels, num_groups=K, reduce='mean') (NumPy API)
    fastemb_torch        fastemb.torch.centroid_aggregate(...) on tensors (needs torch)
    index_add_div        torch.zeros(K, D).index_add_(0, labels, x) / bincount(labels).clamp(1)
    scatter_reduce_mean  torch.zeros(K, D).scatter_reduce(0, labels[:, None].expand(N, D), x, 'mean',
                         include_self=False)
    segment_reduce       torch.segment_reduce(x, 'mean', lengths=bincount(labels)) (sorted cases only)
    np_add_at            np.add.at(out, labels, x); out /= counts (~1 s per call: 2 rounds)
    read_x_sum0          torch x.sum(0): the issue's "one read of x" reference
    read_x_flat          torch x.sum(): a flat reduction, closer to the bandwidth limit than
                         x.sum(0) is on this machine (both are recorded; see BENCHMARKS.md)

Backward peers (grad_x only; index is not differentiable). The graph is built outside the timed
region and each timed call runs only ``torch.autograd.grad(out, x, grad_outputs=g,
retain_graph=True)``, which is the gradient of loss = (out * g).sum() without the two tiny
loss nodes and without accumulating into x.grad:
    fastemb              the torch op's backward when torch is installed,
                         otherwise fastemb.centroid.native_backward on NumPy arrays (the outputs
                         of native_forward are computed once, outside the timed region)
    fastemb_native       native_backward, recorded beside the torch op once the op exists
    scatter_reduce_mean  backward of the scatter_reduce forward above
    index_add_div        backward of the index_add_ forward above
Every timed backward allocates a fresh [N, D] gradient, as a training step does.

Each benchmark's ``extra_info`` records the minimal bytes one call must move (forward: read x and
the labels, write the [K, D] output; backward: read grad_out and the labels, write grad_x), which
``bench/report.py`` turns into GB/s and a fraction of the bandwidth measured in conftest.py.

Timings never assert anything; a cheap correctness check outside the timed region makes sure
fastemb's numbers are for the right answer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb.bench_cli import record
from fastemb.centroid import native_backward, native_forward

try:
    import torch
except ImportError:
    torch = None

# Read here rather than imported from conftest.py: tests/ has a conftest module of the same name,
# and `from conftest import ...` would pick whichever pytest loaded last. conftest.py applies the
# thread counts.
SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))

ROUNDS = int(os.environ.get("FASTEMB_BENCH_ROUNDS", "15"))  # fast calls (~10-200 ms at full scale)
SLOW_ROUNDS = int(os.environ.get("FASTEMB_BENCH_SLOW_ROUNDS", "5"))  # scatter_reduce backward (~1.5 s)
ADD_AT_ROUNDS = int(os.environ.get("FASTEMB_BENCH_ADD_AT_ROUNDS", "2"))  # np.add.at (~1.3 s)


def _fastemb_torch_op():
    """fastemb.torch.centroid_aggregate, or None when torch is not installed."""
    if torch is None:
        return None
    try:
        import fastemb.torch as ft
    except Exception:
        return None
    return getattr(ft, "centroid_aggregate", None)


FASTEMB_TORCH_OP = _fastemb_torch_op()
NATIVE = _backend.native()


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    d: int
    k: int
    sorted: bool

    @property
    def id(self) -> str:
        return self.name


def _case(name, n, d, k, sorted_):
    return Case(name, max(1, int(round(n * SCALE))), d, max(1, int(round(k * SCALE))), sorted_)


CASES = [
    _case("1Mx128-K1k-sorted", 1_000_000, 128, 1_000, True),
    _case("1Mx128-K1k-unsorted", 1_000_000, 128, 1_000, False),
    _case("1Mx128-K100k-sorted", 1_000_000, 128, 100_000, True),
    _case("1Mx128-K100k-unsorted", 1_000_000, 128, 100_000, False),
    _case("100kx768-K1k-unsorted", 100_000, 768, 1_000, False),
]

FORWARD_PEERS = ["fastemb", "fastemb_torch", "index_add_div", "scatter_reduce_mean", "segment_reduce",
                 "np_add_at", "read_x_sum0", "read_x_flat"]
BACKWARD_PEERS = ["fastemb", "fastemb_native", "scatter_reduce_mean", "index_add_div"]


# ---------------------------------------------------------------------------------------------
# Inputs: generated once per session, shared by every peer of a case.

class _Data:
    def __init__(self):
        self._x = {}
        self._labels = {}

    def get(self, case: Case):
        xkey = (case.n, case.d)
        if xkey not in self._x:
            # Keep at most one x alive: the cases are ordered so that each shape is used in one run.
            self._x.clear()
            x = np.random.default_rng(1234).standard_normal((case.n, case.d), dtype=np.float32)
            self._x[xkey] = x
        lkey = (case.n, case.k, case.sorted)
        if lkey not in self._labels:
            labels = np.random.default_rng(5678 + case.k).integers(0, case.k, size=case.n, dtype=np.int64)
            if case.sorted:
                labels = np.sort(labels)
            self._labels[lkey] = labels
        return self._x[xkey], self._labels[lkey]


@pytest.fixture(scope="session")
def data():
    return _Data()


def _params(peers):
    out = []
    for case in CASES:
        for peer in peers:
            out.append(pytest.param(case, peer, id=f"{case.id}-{peer}"))
    return out


def _fwd_bytes(c: Case) -> int:
    return 4 * c.n * c.d + 8 * c.n + 4 * c.k * c.d


def _bwd_bytes(c: Case) -> int:
    return 4 * c.k * c.d + 8 * c.n + 4 * c.n * c.d


# Column labels of the common schema (python -m fastemb bench); "fastemb" is the row's baseline.
COMMON_PEER = {
    "fastemb": "fastemb", "fastemb_torch": "fastemb op", "fastemb_native": "fastemb native",
    "index_add_div": "torch index_add_", "scatter_reduce_mean": "torch scatter_reduce",
    "segment_reduce": "torch segment_reduce", "np_add_at": "numpy add.at",
    "read_x_sum0": "x.sum(0)", "read_x_flat": "x.sum()",
}


def _num(v: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if v >= div and v % (div // 10) == 0:
            return f"{v / div:g}{suffix}"
    return str(v)


def _record(benchmark, case: Case, direction: str, peer: str, nbytes: int, bw_kind: str, impl: str, rounds: int):
    benchmark.group = f"{case.id} {direction}"
    benchmark.extra_info.update({
        "case": case.id, "direction": direction, "peer": peer, "impl": impl,
        "n": case.n, "d": case.d, "k": case.k, "sorted": case.sorted, "dtype": "float32",
        "bytes": nbytes, "bw_kind": bw_kind, "rounds": rounds, "threads": THREADS, "scale": SCALE,
    })
    record(benchmark, family="centroid", kernel=f"centroid mean {direction}",
           shape=f"{_num(case.n)}x{case.d} K={_num(case.k)} {'sorted' if case.sorted else 'unsorted'}",
           peer=COMMON_PEER[peer], impl=impl, nbytes=nbytes, limit_kind=f"{bw_kind} bandwidth",
           reference=peer.startswith("read_x"))


def _need_torch():
    if torch is None:
        pytest.skip("torch is not installed")


def _counts_np(labels, k):
    return np.bincount(labels, minlength=k)


# ---------------------------------------------------------------------------------------------
# Forward

@pytest.mark.parametrize("case,peer", _params(FORWARD_PEERS))
def test_forward(benchmark, data, case: Case, peer: str):
    x, labels = data.get(case)
    n, d, k = case.n, case.d, case.k
    rounds, warmup = ROUNDS, 1
    nbytes, bw_kind, impl = _fwd_bytes(case), "read", peer

    if peer == "fastemb":
        impl = f"centroid_aggregate (numpy API, {'native ' + fastemb.info()['isa'] if NATIVE else 'numpy fallback'})"
        fn = lambda: fastemb.centroid_aggregate(x, labels, num_groups=k, reduce="mean")  # noqa: E731
        _check_forward(fn(), x, labels, k)
    elif peer == "fastemb_torch":
        if FASTEMB_TORCH_OP is None:
            pytest.skip("torch is not installed (fastemb.torch needs it)")
        xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
        impl = "fastemb.torch.centroid_aggregate"
        fn = lambda: FASTEMB_TORCH_OP(xt, lt, num_groups=k, reduce="mean")  # noqa: E731
        _check_forward(fn().numpy(), x, labels, k)
    elif peer == "np_add_at":
        rounds, warmup = ADD_AT_ROUNDS, 0

        def fn():
            out = np.zeros((k, d), dtype=np.float32)
            np.add.at(out, labels, x)
            out /= np.maximum(np.bincount(labels, minlength=k), 1)[:, None]
            return out
    else:
        _need_torch()
        xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
        if peer == "index_add_div":
            def fn():
                counts = torch.bincount(lt, minlength=k).clamp_(min=1).to(xt.dtype)
                return torch.zeros(k, d, dtype=xt.dtype).index_add_(0, lt, xt) / counts[:, None]
        elif peer == "scatter_reduce_mean":
            idx = lt[:, None].expand(n, d)  # a view: no copy

            def fn():
                return torch.zeros(k, d, dtype=xt.dtype).scatter_reduce(0, idx, xt, "mean", include_self=False)
        elif peer == "segment_reduce":
            if not case.sorted:
                pytest.skip("segment_reduce needs sorted labels (lengths)")

            def fn():
                lengths = torch.bincount(lt, minlength=k)
                return torch.segment_reduce(xt, "mean", lengths=lengths, axis=0, unsafe=True)
        elif peer == "read_x_sum0":
            nbytes = 4 * n * d
            fn = lambda: xt.sum(0)  # noqa: E731
        elif peer == "read_x_flat":
            nbytes = 4 * n * d
            fn = lambda: xt.sum()  # noqa: E731
        else:
            raise AssertionError(peer)

    _record(benchmark, case, "forward", peer, nbytes, bw_kind, impl, rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


def _check_forward(got, x, labels, k):
    """fastemb's answer against a float64 bincount-based mean (outside the timed region)."""
    counts = _counts_np(labels, k)
    if x.shape[0] * x.shape[1] <= 4_000_000:
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, x.astype(np.float64))
    else:  # np.add.at is slow at full scale: check a sample of groups instead
        groups = np.unique(labels[:: max(1, labels.size // 64)])[:64]
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        for g in groups:
            sums[g] = x[labels == g].sum(0, dtype=np.float64)
        got = got[groups]
        sums, counts = sums[groups], counts[groups]
    expected = sums / np.maximum(counts, 1)[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Backward

@pytest.mark.parametrize("case,peer", _params(BACKWARD_PEERS))
def test_backward(benchmark, data, case: Case, peer: str):
    x, labels = data.get(case)
    n, d, k = case.n, case.d, case.k
    g = np.random.default_rng(99).standard_normal((k, d), dtype=np.float32)
    rounds, warmup = ROUNDS, 1
    counts = _counts_np(labels, k)

    use_native = peer == "fastemb_native" or (peer == "fastemb" and FASTEMB_TORCH_OP is None)
    if peer == "fastemb_native" and FASTEMB_TORCH_OP is None:
        pytest.skip("without torch, 'fastemb' already times the native backward")
    if use_native:
        if NATIVE is None:
            pytest.skip("the native module is not in use (FASTEMB_BACKEND=numpy or not built)")
        args = (labels, None, k, None, "mean", "none", 1e-12, False)
        saved = native_forward(NATIVE, x, *args)  # (out, counts, wsum, arg, out_norm), untimed
        impl = f"fastemb.centroid.native_backward ({fastemb.info()['isa']})"

        def fn():
            return native_backward(NATIVE, g, x, *args, *saved)[0]
        got = fn()
    else:
        _need_torch()
        xt = torch.from_numpy(x).requires_grad_(True)
        lt, gt = torch.from_numpy(labels), torch.from_numpy(g)
        if peer == "fastemb":
            impl = "fastemb.torch.centroid_aggregate backward (torch op)"
            out = FASTEMB_TORCH_OP(xt, lt, num_groups=k, reduce="mean")
        elif peer == "scatter_reduce_mean":
            impl = "scatter_reduce(mean, include_self=False) backward"
            rounds = SLOW_ROUNDS
            out = torch.zeros(k, d).scatter_reduce(0, lt[:, None].expand(n, d), xt, "mean", include_self=False)
        elif peer == "index_add_div":
            impl = "index_add_ / counts backward"
            cnt = torch.bincount(lt, minlength=k).clamp_(min=1).to(xt.dtype)
            out = torch.zeros(k, d).index_add_(0, lt, xt) / cnt[:, None]
        else:
            raise AssertionError(peer)

        def fn():
            return torch.autograd.grad(out, xt, grad_outputs=gt, retain_graph=True)[0]
        got = fn().numpy()

    # Untimed check: d mean / d x_i = g[y_i] / n_{y_i}. Sampled rows at full scale.
    rows = np.arange(n) if n <= 200_000 else np.random.default_rng(7).choice(n, 4096, replace=False)
    expected = g[labels[rows]] / counts[labels[rows]][:, None]
    np.testing.assert_allclose(got[rows], expected, rtol=1e-5, atol=1e-7)
    del got

    _record(benchmark, case, "backward", peer, _bwd_bytes(case), "write", impl, rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
