"""binarize: float32 embeddings -> 1- and 2-bit SDC codes, fastemb's native kernels against
``np.packbits(x > 0, axis=1)`` and the read-bandwidth floor, in the same run.

Run:

    python -m pytest bench/bench_binarize.py --benchmark-json=bench-binarize.json
    python bench/bench_binarize.py bench-binarize.json          # the ratio table (markdown)

Cases: N = 1M rows x FASTEMB_BENCH_SCALE of 768 float32 dims (3.1 GB at full scale), standard
normal values; FASTEMB_BENCH_THREADS (default 2) threads.

    fastemb[<isa>]   fastemb.binary.native_binarize(..., isa=<isa>): every ISA variant this CPU
                     has (the same as FASTEMB_FORCE_ISA=<isa> fastemb.binarize), bits = 1 and 2
                     (bits = 2 with scale=None: the per-row mean|x| pass included); a new result
                     array per call
    fastemb, out=    fastemb.binarize(x, bits, out=buf): the default ISA writing into a
                     preallocated result
    packbits         np.packbits(x > 0, axis=1) (single-threaded NumPy; = bits 1, rule "gt")
    numpy_ref        the float64 NumPy reference (fastemb before native kernels), timed on
                     N_REF rows and extrapolated
    index_add        BinaryIndex(768, bits).add(100k rows): native binarize vs the NumPy reference

Limit: one read of x (N * 768 * 4 bytes) at the read bandwidth bench/conftest.py measures in this
run (the output codes are 1/32 or 1/16 of that).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import binary as B
from fastemb._reference import binary as R
from fastemb.bench_cli import record

SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
DIM = 768
N = max(1000, int(1_000_000 * SCALE))
N_REF = min(N, 20_000)
N_ADD = max(1000, int(100_000 * min(SCALE, 1.0)))
C = _backend.native()
ISAS = _backend.native_isas()

_DATA = {}


def data(n=N):
    if n not in _DATA:
        _DATA[n] = np.random.default_rng(0).standard_normal((n, DIM), dtype=np.float32)
    return _DATA[n]


def _bench(benchmark, group, peer, fn, nbytes, rounds=7, work_factor=1.0, reference=False):
    benchmark.group = group
    benchmark.extra_info.update(peer=peer, rows=N, dim=DIM, bytes=int(nbytes), threads=THREADS)
    record(benchmark, family="binary", kernel=group, shape=f"{N}x{DIM} float32", peer=peer, nbytes=int(nbytes),
           limit_kind="read bandwidth", work_factor=work_factor, reference=reference)
    fn()  # warm-up (page faults of the output)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    fastemb.set_num_threads(THREADS)


@pytest.mark.skipif(C is None, reason="native module not built")
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("isa", ISAS)
def test_fastemb(benchmark, isa, bits):
    x = data()
    # correctness before timing: a slice against the float64 reference
    np.testing.assert_array_equal(B.native_binarize(C, x[:2000], bits, None, "ge", isa), R.binarize(x[:2000], bits))
    peer = "fastemb" if isa == C.binary_kernel_isa("") else f"fastemb {isa}"
    _bench(benchmark, f"binarize bits={bits}", peer, lambda: B.native_binarize(C, x, bits, None, "ge", isa), x.nbytes)


@pytest.mark.skipif(C is None, reason="native module not built")
@pytest.mark.parametrize("bits", [1, 2])
def test_fastemb_out(benchmark, bits):
    """The public call writing into a preallocated result (`out=`): no fresh pages to fault in and zero
    per call (1M x 768: a 96 or 192 MB result)."""
    x = data()
    buf = np.empty((N, bits, (DIM + 7) // 8), np.uint8)
    fastemb.binarize(x[:2000], bits, out=buf[:2000])
    np.testing.assert_array_equal(buf[:2000], R.binarize(x[:2000], bits))
    _bench(benchmark, f"binarize bits={bits}", "fastemb, out=", lambda: fastemb.binarize(x, bits, out=buf), x.nbytes)


@pytest.mark.parametrize("bits", [1, 2])
def test_packbits(benchmark, bits):
    x = data()
    if bits == 1:
        np.testing.assert_array_equal(np.packbits(x[:2000] > 0, axis=1), fastemb.binarize(x[:2000], 1, threshold_rule="gt")[:, 0])
    _bench(benchmark, f"binarize bits={bits}", "np.packbits(x > 0)", lambda: np.packbits(x > 0, axis=1), x.nbytes, rounds=3)


@pytest.mark.parametrize("bits", [1, 2])
def test_numpy_reference(benchmark, bits):
    xs = data()[:N_REF]
    _bench(benchmark, f"binarize bits={bits}", "fastemb NumPy reference (before)", lambda: R.binarize(xs, bits),
           data().nbytes, rounds=3, work_factor=N / N_REF)


@pytest.mark.parametrize("native", [True, False], ids=["native", "numpy"])
@pytest.mark.parametrize("bits", [1, 2])
def test_index_add(benchmark, bits, native, monkeypatch):
    x = data()[:N_ADD]
    if not native:
        monkeypatch.setattr(_backend, "native", lambda: None)

    def run():
        fastemb.BinaryIndex(DIM, bits=bits).add(x)

    benchmark.group = f"BinaryIndex.add bits={bits} {N_ADD} rows"
    benchmark.extra_info.update(peer="native" if native else "numpy", rows=N_ADD, dim=DIM, bytes=int(x.nbytes))
    run()
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


# ---- report: python bench/bench_binarize.py bench-binarize.json ---------------------------------

def report(path: str) -> str:
    with open(path) as f:
        js = json.load(f)
    bw = js["machine_info"].get("fastemb_bench", {}).get("bandwidth", {}) or js["machine_info"].get("fastemb_bench", {})
    read_gbs = bw.get("read_gbs")
    rows = {}
    for b in js["benchmarks"]:
        rows.setdefault(b["group"], []).append(b)
    lines = [f"read bandwidth (bench/conftest.py, best of start/end): {read_gbs:.1f} GB/s" if read_gbs else ""]
    for group, bs in rows.items():
        lines += ["", f"### {group}", "", "| impl | median s | GB/s of x | % of read floor | speed-up vs packbits |",
                  "|---|---|---|---|---|"]
        pk = [b for b in bs if b["extra_info"].get("peer", "").startswith("np.packbits")]
        pk_t = pk[0]["stats"]["median"] if pk else None
        for b in bs:
            ei = b["extra_info"]
            wf = ei.get("common", {}).get("work_factor", 1.0)
            t = b["stats"]["median"] * wf
            gbs = ei["bytes"] / t / 1e9
            floor = f"{100 * gbs / read_gbs:.0f}%" if read_gbs and "add" not in group else ""
            sp = f"{pk_t / t:.1f}x" if pk_t else ""
            est = " (extrapolated)" if wf != 1.0 else ""
            lines.append(f"| {ei.get('peer')}{est} | {t:.4f} | {gbs:.1f} | {floor} | {sp} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
