"""Multi-bit SDC top-k against 1-bit top-k over the same bytes per row (issue 17, "multi-bit SDC at 1-bit cost").

    python bench/sdc_ratio.py b1-256 b1-1024 b2-512 b1-768 b3-256 b4-256
    FASTEMB_FORCE_ISA=avx2 python bench/sdc_ratio.py b1-1024 b2-512 b1-768 b3-256

Cases ``b<bits>-<dims>``: random codes of that many bits per plane; b2-512 (2 x 64 bytes) has the bytes of
b1-1024, b3-256 (3 x 32) those of b1-768, b4-256 those of b1-1024. Every case runs ``fastemb.sdc_topk`` of
NQ queries (default 1000) against ND rows (default 200000), k = 10, ROUNDS times (default 7), the cases
interleaved round by round; the time is process CPU time / threads (robust on a shared machine, where wall
time swings; equal to wall time on an idle one). Prints medians, pairs/s, the share of the popcount limit
(pairs x row bytes / (141 GB/s per core x threads): the xor + vpopcnt + add rate measured on Zen 4) and the
same-bytes ratios. Timings only; correctness is tested in tests/test_binary.py.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import fastemb

CASES = {"b1-256": (1, 32), "b1-768": (1, 96), "b1-1024": (1, 128), "b2-512": (2, 64), "b3-256": (3, 32),
         "b4-256": (4, 32)}
SAME_BYTES = [("b2-512", "b1-1024"), ("b3-256", "b1-768"), ("b4-256", "b1-1024")]
POPCOUNT_BYTES_PER_S_PER_CORE = 141e9


def main(names) -> None:
    nq = int(os.environ.get("NQ", "1000"))
    nd = int(os.environ.get("ND", "200000"))
    rounds = int(os.environ.get("ROUNDS", "7"))
    threads = fastemb.get_num_threads()
    rng = np.random.default_rng(1)
    data = {}
    for name in names:
        bits, nbytes = CASES[name]
        d = rng.integers(0, 256, size=(nd, bits, nbytes), dtype=np.uint8)
        q = rng.integers(0, 256, size=(nq, bits, nbytes), dtype=np.uint8)
        data[name] = (q, d)
        fastemb.sdc_topk(q[:64], d[:20000], 10)  # warm-up
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            q, d = data[name]
            t0 = time.process_time()
            fastemb.sdc_topk(q, d, 10)
            times[name].append((time.process_time() - t0) / threads)
    med = {name: float(np.median(v)) for name, v in times.items()}
    print(f"isa {fastemb.info()['isa']}, {nq} queries x {nd} rows, k = 10, {threads} threads, {rounds} rounds")
    for name in names:
        bits, nbytes = CASES[name]
        limit = nq * nd * bits * nbytes / (POPCOUNT_BYTES_PER_S_PER_CORE * threads)
        print(f"{name:8s} {med[name] * 1e3:8.1f} ms (min {min(times[name]) * 1e3:7.1f})  "
              f"{nq * nd / med[name] / 1e9:5.2f} G pairs/s  {100 * limit / med[name]:5.1f}% of the popcount limit")
    for multi, one in SAME_BYTES:
        if multi in med and one in med:
            print(f"{multi} / {one} (same bytes) = {med[multi] / med[one]:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:] or ["b1-256", "b1-1024", "b2-512", "b1-768", "b3-256"])
