"""Ternary GEMV, the 1.6-bit 't5' layout against fastemb's own 2-bit 'i2' layout and ggml TQ1_0 /
TQ2_0, per ISA, in the same run, weights streamed from DRAM (every peer cycles through copies of
its weights totalling >= 3x the 32 MB L3).

    OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_ternary_t5.py --benchmark-json=bench-t5.json
    python bench/bench_ternary_t5.py            # the same cases as a table (medians, ratios, floors)

Peers (group = shape; extra_info["peer"]):
    fastemb_t5_<isa>  fastemb._C: quantize_activations + matmul_int8 on the t5 layout, FASTEMB ISA <isa>
    fastemb_i2_<isa>  the same on the 2-bit layout
    ggml_tq1_0 / ggml_tq2_0   ggml-python mul_mat (bench_ternary.GgmlMatmul), when installed
extra_info["bytes"] = the packed weight bytes a call reads; the read-bandwidth floor of each layout
is bytes / the read bandwidth bench/conftest.py measures (the table prints both).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb._reference import ternary as R

try:
    import ggml  # ggml-python
except ImportError:  # pragma: no cover
    ggml = None

THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
CYCLE_BYTES = 3 * (32 << 20)
CASES = [(1, 2560, 6912), (1, 4096, 4096)]
C = _backend.native()
ISAS = [i for i in ("avx512", "avx2") if C is not None and i in _backend.native_isas()]


def _copies(nbytes: int) -> int:
    return max(2, int(np.ceil(CYCLE_BYTES / max(nbytes, 1))))


def _data(case):
    m, k, n = case
    rng = np.random.default_rng(1234)
    return rng.standard_normal((n, k)).astype(np.float32), rng.standard_normal((m, k)).astype(np.float32)


class NativeGemv:
    """fastemb._C on one layout and ISA: quantize x, then the int8 matmul, into preallocated buffers;
    one of `copies` packed weight arrays per call."""

    def __init__(self, case, fmt: str, isa: str):
        m, k, n = case
        w, x = _data(case)
        tw = fastemb.quantize_ternary(w, format=fmt)
        self.tw, self.x, self.isa, self.m, self.n, self.k, self.kp = tw, x, isa, m, n, k, tw.kp
        self.fmt = {"fmt": 1} if fmt == "t5" else {}
        self.copies = [tw.packed] + [tw.packed.copy() for _ in range(_copies(tw.packed.nbytes) - 1)]
        self.xq = np.empty((m, tw.kp), np.int8)
        self.xs = np.empty(m, np.float32)
        self.out = np.empty((m, n), np.float32)
        self.nbytes = tw.packed.nbytes
        self.i = 0
        self(0)
        rq, rs = R.quantize_activations(x, kp=tw.kp)
        want, _ = R.matmul_int8(rq, rs, tw.packed, k, tw.scale, None, fmt)
        np.testing.assert_array_equal(self.out, want)

    def __call__(self, i=None):
        if i is None:
            self.i = i = (self.i + 1) % len(self.copies)
        A = _backend.address
        C.ternary_quantize_activations(A(self.x), 0, self.m, self.k, self.kp, R.EPS, A(self.xq), A(self.xs), self.isa)
        C.ternary_matmul_int8(A(self.xq), A(self.xs), self.m, A(self.copies[i]), self.n, self.k, self.kp,
                              A(self.tw.scale), False, 0, A(self.out), 0, self.isa, **self.fmt)


def _ggml(case, fmt):
    from bench_ternary import GgmlMatmul  # bench/ is on sys.path under pytest and when run as a script
    w, x = _data(case)
    gamma = R.weight_scale(w, "absmean", False)
    wt = R.quantize_weights(w, gamma).astype(np.float32) * gamma[0]
    typ = ggml.GGML_TYPE_TQ2_0 if fmt == "tq2_0" else ggml.GGML_TYPE_TQ1_0
    g = GgmlMatmul(typ, wt, x, _copies(ggml.ggml_row_size(typ, w.shape[1]) * w.shape[0]))
    return g


# ---- pytest-benchmark --------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _threads():
    fastemb.set_num_threads(THREADS)


def _run(benchmark, case, peer, fn, nbytes):
    m, k, n = case
    benchmark.group = f"{m}x{k}x{n}"
    benchmark.extra_info.update(peer=peer, m=m, k=k, n=n, bytes=int(nbytes), threads=THREADS)
    fn()
    benchmark.pedantic(fn, rounds=60, iterations=1, warmup_rounds=3)


@pytest.mark.skipif(C is None, reason="native module not in use")
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ["t5", "i2"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_fastemb(benchmark, case, fmt, isa):
    g = NativeGemv(case, fmt, isa)
    _run(benchmark, case, f"fastemb_{fmt}_{isa}", g, g.nbytes)


@pytest.mark.skipif(ggml is None, reason="ggml-python not installed")
@pytest.mark.parametrize("fmt", ["tq1_0", "tq2_0"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_ggml(benchmark, case, fmt):
    from bench_ternary import Cycle
    g = _ggml(case, fmt)
    try:
        _run(benchmark, case, f"ggml_{fmt}", Cycle(len(g.graphs), g), g.nbytes)
    finally:
        g.close()


# ---- table (python bench/bench_ternary_t5.py) ---------------------------------------------------------

def _median_us(fn, rounds: int) -> float:
    fn()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def main(rounds: int = 60, repeats: int = 3) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import measure_bandwidth
    fastemb.set_num_threads(THREADS)
    bw = measure_bandwidth()["read_gbs"]
    print(f"threads {THREADS}, read probe {bw:.1f} GB/s, medians of {rounds} calls, best of {repeats} passes "
          f"(interleaved)\n")
    print("| shape | peer | median us | bytes | floor us | % of floor | i2 / this (same ISA) |")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        peers = {}
        for isa in ISAS:
            for fmt in ("t5", "i2"):
                peers[f"fastemb_{fmt}_{isa}"] = NativeGemv(case, fmt, isa)
        ggmls = []
        if ggml is not None:
            from bench_ternary import Cycle
            for fmt in ("tq1_0", "tq2_0"):
                g = _ggml(case, fmt)
                ggmls.append(g)
                cyc = Cycle(len(g.graphs), g)
                cyc.nbytes = g.nbytes
                peers[f"ggml_{fmt}"] = cyc
        best = {name: float("inf") for name in peers}
        for _ in range(repeats):  # interleaved passes: drift on a shared machine hits every peer alike
            for name, fn in peers.items():
                best[name] = min(best[name], _median_us(fn, rounds))
        for name, fn in peers.items():
            floor = fn.nbytes / (bw * 1e9) * 1e6
            ratio = ""
            if name.startswith("fastemb_"):
                isa = name.rsplit("_", 1)[1]
                ratio = f"{best[f'fastemb_i2_{isa}'] / best[name]:.2f}x"
            print(f"| {'x'.join(map(str, case))} | {name} | {best[name]:.0f} | {fn.nbytes} | {floor:.0f} | "
                  f"{100 * floor / best[name]:.0f}% | {ratio} |")
        for g in ggmls:
            g.close()


if __name__ == "__main__":
    main()
