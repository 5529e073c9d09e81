"""Ternary (1.58-bit) matmul, fastemb against its peers in the same run.

Run (a few minutes; FASTEMB_BENCH_SCALE=0.1 shrinks K and N for a smoke run):

    OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_ternary.py --benchmark-json=bench-ternary.json
    python bench/report_ternary.py bench-ternary.json -o table.md

Cases (M x K x N, spec /work/shared/specs/ternary.md): 1x2560x6912, 1x6912x2560, 1x4096x4096,
8x2560x6912, 8x4096x4096, 128x4096x4096; and, fastemb_native only (the multi-row GEMV tiles
against the single-row time; issue 17: "8 rows within 2x of one row"): M = 2, 4, 16 on 2560x6912
and 4096x4096. Weights come from DRAM, not cache: every peer cycles through enough copies of its
weights to exceed 3x the last-level cache (32 MB here, lscpu), one copy per call.
FASTEMB_BENCH_THREADS (default 2) threads for everyone.

Peers (benchmark group = case, extra_info["peer"]):
    fastemb         fastemb.ternary_matmul(x, tw) (public API: validation, activation quantization,
                    int8 kernel, float32 output)
    fastemb_native  the same through fastemb._C directly (quantize_activations + matmul_int8 into
                    preallocated buffers): the kernel without the Python API's overhead
    torch_fp32      torch.nn.functional.linear(x, W) with float32 W
    torch_bf16      the same with bf16 x and W
    torch_int_mm    torch._int_mm(x_int8, W_int8^T) (int8 x int8 -> int32; no quantization counted)
    ggml_tq2_0      ggml-python: mul_mat of a TQ2_0 tensor (2.06 bits/weight) with float32 x (ggml
                    quantizes x to Q8_K inside), graph_compute_with_ctx(THREADS)
    ggml_tq1_0      the same with TQ1_0 (1.69 bits/weight)
Every fastemb result is checked against the NumPy reference before timing; ggml's against x W^T
(within its Q8_K activation rounding).

extra_info records the packed weight bytes a call must read ("bytes"); bench/report_ternary.py
divides them by the read bandwidth bench/conftest.py measures in the same session: the 2-bit floor.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb._reference import ternary as R
from fastemb.bench_cli import record

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import ggml  # ggml-python
except ImportError:  # pragma: no cover
    ggml = None

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
LLC_BYTES = 32 << 20
CYCLE_BYTES = 3 * LLC_BYTES  # weights touched between two uses of one copy

BASE_CASES = [(1, 2560, 6912), (1, 6912, 2560), (1, 4096, 4096), (8, 2560, 6912), (8, 4096, 4096), (128, 4096, 4096)]
ROW_CASES = [(m, k, n) for k, n in ((2560, 6912), (4096, 4096)) for m in (2, 4, 16)]


def _scaled(v):
    return max(256, int(round(v * SCALE / 256)) * 256)


CASES = [(m, _scaled(k), _scaled(n)) for m, k, n in BASE_CASES]
ROWS = [(m, _scaled(k), _scaled(n)) for m, k, n in ROW_CASES]


def _copies(nbytes):
    return max(2, int(np.ceil(CYCLE_BYTES / max(nbytes, 1))))


class Cycle:
    """Calls fn(i) with i cycling over range(n)."""

    def __init__(self, n, fn):
        self.n, self.fn, self.i = n, fn, 0

    def __call__(self):
        self.i = (self.i + 1) % self.n
        return self.fn(self.i)


_DATA = {}


def data(case):
    if case not in _DATA:
        m, k, n = case
        rng = np.random.default_rng(1234)
        w = rng.standard_normal((n, k)).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        _DATA.clear()  # one case's weights at a time
        _DATA[case] = (w, x)
    return _DATA[case]


_COMMON_PEER = {"fastemb_native": "fastemb native", "torch_fp32": "torch fp32", "torch_bf16": "torch bf16",
                "torch_int_mm": "torch _int_mm int8", "ggml_tq2_0": "ggml TQ2_0", "ggml_tq1_0": "ggml TQ1_0"}


def _bench(benchmark, case, peer, fn, nbytes):
    m, k, n = case
    benchmark.group = f"{m}x{k}x{n}"
    benchmark.extra_info.update(peer=peer, m=m, k=k, n=n, bytes=int(nbytes), threads=THREADS)
    # common schema (python -m fastemb bench); the limit: fastemb's packed 2-bit weights / read bandwidth
    record(benchmark, family="ternary", kernel="ternary matmul W1.58A8" + (" (GEMV)" if m == 1 else ""),
           shape=f"{m}x{k}x{n}", peer=_COMMON_PEER.get(peer, peer), nbytes=int(nbytes), limit_kind="read bandwidth")
    fn()  # warm-up (also page-faults any lazily touched buffer)
    benchmark.pedantic(fn, rounds=60, iterations=1, warmup_rounds=3)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    fastemb.set_num_threads(THREADS)
    if torch is not None:
        torch.set_num_threads(THREADS)


# ---- fastemb ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES + ROWS, ids=lambda c: "x".join(map(str, c)))
def test_fastemb(benchmark, case):  # every row of the table has the public API's entry (the ratios' base)
    w, x = data(case)
    tw = fastemb.quantize_ternary(w)
    ref_xq, ref_s = R.quantize_activations(x, kp=tw.kp)
    ref, _ = R.matmul_int8(ref_xq, ref_s, tw.packed, tw.k, np.asarray(tw.scale, np.float32).reshape(-1))
    got = fastemb.ternary_matmul(x, tw)
    np.testing.assert_array_equal(got, ref)
    copies = [tw]
    for _ in range(_copies(tw.packed.nbytes) - 1):  # independent packed arrays (to_dict shares them)
        d = {key: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for key, v in tw.to_dict().items()}
        copies.append(fastemb.TernaryWeight.from_dict(d))
    _bench(benchmark, case, "fastemb", Cycle(len(copies), lambda i: fastemb.ternary_matmul(x, copies[i])), tw.packed.nbytes)


@pytest.mark.skipif(_backend.native() is None, reason="native module not in use")
@pytest.mark.parametrize("case", CASES + ROWS, ids=lambda c: "x".join(map(str, c)))
def test_fastemb_native(benchmark, case):
    C = _backend.native()
    m, k, n = case
    w, x = data(case)
    gamma = R.weight_scale(w, "absmean", False)
    packed = R.pack(R.quantize_weights(w, gamma))
    kp = R.padded_k(k)
    copies = [packed] + [packed.copy() for _ in range(_copies(packed.nbytes) - 1)]
    xq = np.empty((m, kp), np.int8)
    xs = np.empty(m, np.float32)
    out = np.empty((m, n), np.float32)

    def call(i):
        C.ternary_quantize_activations(x.ctypes.data, 0, m, k, kp, R.EPS, xq.ctypes.data, xs.ctypes.data)
        C.ternary_matmul_int8(xq.ctypes.data, xs.ctypes.data, m, copies[i].ctypes.data, n, k, kp, gamma.ctypes.data,
                              False, 0, out.ctypes.data, 0)
        return out

    call(0)
    rq, rs = R.quantize_activations(x, kp=kp)
    np.testing.assert_array_equal(out, R.matmul_int8(rq, rs, packed, k, gamma)[0])
    _bench(benchmark, case, "fastemb_native", Cycle(len(copies), call), packed.nbytes)


# ---- torch ------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_torch_linear(benchmark, case, dtype):
    w, x = data(case)
    td = torch.float32 if dtype == "fp32" else torch.bfloat16
    tw = torch.from_numpy(w).to(td)
    tx = torch.from_numpy(x).to(td)
    copies = [tw] + [tw.clone() for _ in range(_copies(tw.numel() * tw.element_size()) - 1)]
    f = torch.nn.functional.linear
    with torch.inference_mode():
        _bench(benchmark, case, f"torch_{dtype}", Cycle(len(copies), lambda i: f(tx, copies[i])),
               tw.numel() * tw.element_size())


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_torch_int_mm(benchmark, case):
    w, x = data(case)
    wq = torch.from_numpy(np.clip(np.rint(w), -1, 1).astype(np.int8)).t().contiguous()  # [K, N]
    xq = torch.from_numpy(np.clip(np.rint(x * 40), -128, 127).astype(np.int8))
    copies = [wq] + [wq.clone() for _ in range(_copies(wq.numel()) - 1)]
    with torch.inference_mode():
        _bench(benchmark, case, "torch_int_mm", Cycle(len(copies), lambda i: torch._int_mm(xq, copies[i])), wq.numel())


# ---- ggml (ggml-python) ------------------------------------------------------------------------------

class GgmlMatmul:
    """mul_mat of a quantized [N, K] weight (copies, one graph each) with float32 x [M, K]."""

    def __init__(self, typ, w, x, copies):
        m, k = x.shape
        n = w.shape[0]
        self.row_bytes = ggml.ggml_row_size(typ, k)
        wq = np.empty(n * self.row_bytes, np.uint8)
        ggml.ggml_quantize_chunk(typ, w.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                 wq.ctypes.data_as(ctypes.c_void_p), 0, n, k, None)
        self.nbytes = wq.nbytes
        mem = copies * (wq.nbytes + x.nbytes + m * n * 4 + (1 << 16) + ggml.ggml_graph_overhead()) + (64 << 20)
        self.ctx = ggml.ggml_init(ggml.ggml_init_params(mem_size=mem, mem_buffer=None, no_alloc=False))
        b = ggml.ggml_new_tensor_2d(self.ctx, ggml.GGML_TYPE_F32, k, m)
        ctypes.memmove(ggml.ggml_get_data(b), x.ctypes.data, x.nbytes)
        self.graphs, self.outs = [], []
        for _ in range(copies):
            a = ggml.ggml_new_tensor_2d(self.ctx, typ, k, n)
            ctypes.memmove(ggml.ggml_get_data(a), wq.ctypes.data, wq.nbytes)
            c = ggml.ggml_mul_mat(self.ctx, a, b)
            gf = ggml.ggml_new_graph(self.ctx)
            ggml.ggml_build_forward_expand(gf, c)
            self.graphs.append(gf)
            self.outs.append(c)
        self.m, self.n = m, n

    def __call__(self, i):
        ggml.ggml_graph_compute_with_ctx(self.ctx, self.graphs[i], THREADS)

    def result(self, i):
        p = ctypes.cast(ggml.ggml_get_data(self.outs[i]), ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(p, shape=(self.m, self.n)).copy()

    def close(self):
        ggml.ggml_free(self.ctx)


@pytest.mark.skipif(ggml is None, reason="ggml-python not installed")
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_ggml(benchmark, case, fmt):
    w, x = data(case)
    gamma = R.weight_scale(w, "absmean", False)
    wt = R.quantize_weights(w, gamma).astype(np.float32) * gamma[0]  # exactly ternary x gamma
    typ = ggml.GGML_TYPE_TQ2_0 if fmt == "tq2_0" else ggml.GGML_TYPE_TQ1_0
    bytes_per = ggml.ggml_row_size(typ, w.shape[1]) * w.shape[0]
    g = GgmlMatmul(typ, wt, x, _copies(bytes_per))
    try:
        g(0)
        ref = x.astype(np.float64) @ wt.T.astype(np.float64)
        err = np.abs(g.result(0) - ref).max()
        assert err <= 0.02 * np.abs(x).max() * gamma[0] * np.sqrt(w.shape[1]) + 1e-3, err  # Q8_K activations
        _bench(benchmark, case, f"ggml_{fmt}", Cycle(len(g.graphs), g), g.nbytes)
    finally:
        g.close()
