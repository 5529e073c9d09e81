"""GPU check (issue 8): builds or loads ``fastemb._C_cuda``, runs the CUDA tests, checks every
timed kernel against the CPU result, and times each kernel family on the device against its
natural torch peer and against the roofline of a measured device-to-device copy. One table
(kernel, shape, time, peer, peer time, ratio, bytes, % of copy bandwidth, target, result) goes
to stdout, to ``--out`` (Markdown) and to ``--json``.

Steps
  1. environment: torch / CUDA versions, device name, SMs, memory, L2.
  2. ``fastemb._C_cuda``: imported (``--build`` first runs ``pip install --no-build-isolation
     --no-deps --no-index -e .`` with ``FASTEMB_CUDA=ON`` and ``CMAKE_CUDA_ARCHITECTURES`` of the
     device).
  3. ``python -m pytest -m cuda -q tests`` in a subprocess (summary in the report).
  4. kernels (the raw ``_C_cuda`` launches on the current stream, the way the torch ops call them),
     each first compared with the CPU result on a subset of fresh random inputs, then timed:
       centroid forward / backward 1M x 128 float32, K = 1k / 100k  vs  index_add_, scatter_reduce,
         index_select (backward);
       Hamming top-k (1-bit SDC top-k: S = dim - 2 * hamming), 1000 queries x 1M 1024-bit codes,
         k = 10; single-query Hamming scan and top-k  vs  a torch popcount (torch.bitwise_count if
         the build has it, else an int64 SWAR popcount) + topk, and a bf16 matmul on the +-1 bits;
       ternary W1.58A8 (activation quantization + int8 matmul) M x K x N = 1x4096x4096,
         1x2560x6912, 8x4096x4096, 128x4096x4096  vs  torch bf16 matmul and torch._int_mm
         (rows padded to 32: _int_mm needs more than 16); plus the torch op for 1x4096x4096;
       FastRP propagation (row-scaled SpMM, and the fused step with normalization and
         accumulation) on a random 1M-node, 20M-edge graph, d = 128  vs  torch sparse CSR @ dense.
  5. roofline: median of a 1 GiB device-to-device copy, bytes read + written / time.
  6. the table, with the issue's targets: memory-bound kernels (centroid, SpMM, single-query
     Hamming scan, ternary GEMV) >= 60% of the copy bandwidth; ternary GEMV (both shapes) >= 3x
     torch bf16; ternary GEMM at 128 rows within 1.3x of torch._int_mm; Hamming top-k >= 5x the
     torch popcount; centroid forward >= 2x index_add_ and scatter_reduce.

Timing: CUDA events; warm-up; median of up to 50 timed iterations (fewer for slow peers, at most
~1.5 s per measurement); a ``torch.cuda._sleep`` before each iteration so that the host enqueues
ahead of the device (launch overhead stays out of the kernel time); inputs smaller than 3x the L2
are rotated among copies, so every timed call reads from device memory. A budget guard skips the
remaining cases (with a note) when the deadline (``--budget-s`` from start, or ``--deadline``
epoch seconds) comes near; the whole script stays under 8 minutes.

On the GPU machine (H100/H200, CUDA 13, PyTorch, pytest, scikit-build-core, pybind11, cmake and
ninja are in its image; no network), one call of the device tool, timeout_s=600:

    set -o pipefail; T0=$(date +%s); export PYTHONUNBUFFERED=1; nvidia-smi -L; python3 -m pip show cmake scikit-build-core pybind11 ninja 2>/dev/null | grep -E '^(Name|Version)'; python3 bench/gpu_check.py --build --deadline $((T0+560)) --out $OUT/gpu_check.md --json $OUT/gpu_check.json --log-dir $OUT 2>&1 | tee $OUT/gpu_check.log

(one line, 328 characters; README.md "GPU check" has it too). $OUT gets five files:
gpu_check.md, gpu_check.json, gpu_check.log, build.log, pytest_cuda.log. Expected: build ~1-2 min (four .cu
files for one arch plus the CPU module on 16 cores; 42 s for centroid.cu alone for five archs on
a 2-core VM), CUDA tests ~1-2 min, timings ~3-4 min; the deadline stops new work at T0 + 560 s.
If the build fails on the CMake version (pyproject asks for >= 3.31.10, not 4.0.x), carry a cmake
wheel as the device README says (``.whl``) and prefix the command with its install line.

Here, without a GPU: ``python bench/gpu_check.py --self-test`` exercises the case registry at
tiny sizes on CPU tensors, the timing harness, the target logic and the table (tests/
test_gpu_check.py runs it in CI), and checks that the full mode exits with a clear message.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 470.0   # the whole script (build and tests included) stays under 8 minutes
RESERVE_S = 25.0           # kept free at the end for the table, JSON and cleanup
NO_CUDA_EXIT = 2

BW_TARGET = 0.60
GEMV_VS_BF16 = 3.0
GEMM_VS_INT_MM = 1 / 1.3   # GEMM at 128 rows: time within 1.3x of torch._int_mm
TOPK_VS_POPCOUNT = 5.0
CENTROID_VS_TORCH = 2.0    # centroid forward vs index_add_ and scatter_reduce


# ---- results ---------------------------------------------------------------------------------

@dataclass
class Target:
    """``kind='bw'``: our time reaches ``value`` of the copy bandwidth (bytes / time / copy_bw);
    ``kind='speedup'``: peer time / our time >= ``value`` on the row of peer ``peer``."""
    kind: str
    value: float
    peer: str = ""

    def describe(self) -> str:
        if self.kind == "bw":
            return f">= {self.value * 100:.0f}% copy BW"
        if self.value < 1:  # "within 1.3x of the peer's time"
            return f"time <= {1 / self.value:.3g}x {self.peer}"
        return f">= {self.value:g}x {self.peer}"


@dataclass
class Row:
    kernel: str
    shape: str
    time_s: Optional[float] = None
    peer: str = ""
    peer_time_s: Optional[float] = None
    bytes: int = 0
    target: str = ""
    result: str = ""          # pass / FAIL / wrong / skipped / error / "" (no target)
    note: str = ""
    time_min_s: Optional[float] = None
    peer_time_min_s: Optional[float] = None
    reps: int = 0

    @property
    def ratio(self) -> Optional[float]:
        if self.time_s and self.peer_time_s:
            return self.peer_time_s / self.time_s
        return None

    def bw_fraction(self, copy_bw: Optional[float]) -> Optional[float]:
        if not (self.time_s and self.bytes and copy_bw):
            return None
        return self.bytes / self.time_s / copy_bw


def evaluate(rows: List[Row], targets: Dict[int, Target], copy_bw: Optional[float]) -> None:
    """Sets ``target`` / ``result`` of the rows a target is attached to (by row index). A row whose
    correctness check failed keeps ``wrong``; a missing time gives ``n/a``."""
    for i, t in targets.items():
        row = rows[i]
        row.target = t.describe()
        if row.result in ("wrong", "error", "skipped"):
            continue
        if t.kind == "bw":
            frac = row.bw_fraction(copy_bw)
            row.result = "n/a" if frac is None else ("pass" if frac >= t.value else "FAIL")
        else:
            r = row.ratio
            row.result = "n/a" if r is None else ("pass" if r >= t.value else "FAIL")


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_bytes(b: int) -> str:
    if not b:
        return "-"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{b} B"


def render_table(rows: List[Row], copy_bw: Optional[float]) -> str:
    head = ["kernel", "shape", "time", "peer", "peer time", "ratio", "bytes", "% copy BW", "target", "result", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        frac = r.bw_fraction(copy_bw)
        cells = [r.kernel, r.shape, fmt_time(r.time_s), r.peer or "-", fmt_time(r.peer_time_s),
                 "-" if r.ratio is None else f"{r.ratio:.2f}x", fmt_bytes(r.bytes),
                 "-" if frac is None else f"{frac * 100:.0f}%", r.target or "-", r.result or "-",
                 r.note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- timing ----------------------------------------------------------------------------------

@dataclass
class Measurement:
    median_s: float
    min_s: float
    reps: int


class CudaTimer:
    """CUDA-event timing: warm-up, then up to ``max_reps`` iterations of ``inner`` calls (each call
    gets the next rotation index), each iteration after a short device sleep so that the host runs
    ahead; the median per-call time. Slow functions get fewer iterations (about ``max_s``)."""

    def __init__(self, torch, max_reps: int = 50, min_reps: int = 5, max_s: float = 1.5, warmup: int = 3):
        self.torch, self.max_reps, self.min_reps, self.max_s, self.warmup = torch, max_reps, min_reps, max_s, warmup
        self.calls = 0

    def measure(self, fn: Callable[[int], Any], inner: int = 1) -> Measurement:
        torch = self.torch
        ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        s, e = ev(), ev()
        s.record()
        fn(self._next())  # first call: module load, handles, allocations; also the cost estimate
        e.record()
        torch.cuda.synchronize()
        if s.elapsed_time(e) / 1e3 < 0.05:
            for _ in range(self.warmup - 1):
                fn(self._next())
        s, e = ev(), ev()
        s.record()
        for _ in range(inner):
            fn(self._next())
        e.record()
        torch.cuda.synchronize()
        est = s.elapsed_time(e) / 1e3
        reps = int(max(self.min_reps, min(self.max_reps, self.max_s / max(est, 1e-7))))
        if est > 0.3:  # slow (peers at full size): a few iterations only
            reps = 1 if est > 4 * self.max_s else (2 if est > self.max_s else 3)
        sleep_cycles = int((30e-6 + 15e-6 * inner) * 2e9)  # slack for the host to enqueue the iteration
        starts = [ev() for _ in range(reps)]
        ends = [ev() for _ in range(reps)]
        for r in range(reps):
            if est < 2e-3:
                torch.cuda._sleep(sleep_cycles)
            starts[r].record()
            for _ in range(inner):
                fn(self._next())
            ends[r].record()
        torch.cuda.synchronize()
        ts = [a.elapsed_time(b) / 1e3 / inner for a, b in zip(starts, ends)]
        if reps < 3:
            ts.append(est / inner)
        return Measurement(statistics.median(ts), min(ts), len(ts))

    def _next(self) -> int:
        self.calls += 1
        return self.calls


class CpuTimer:
    """Host clock timing with the same interface (CPU tensors: the self-test)."""

    def __init__(self, max_reps: int = 5, min_reps: int = 2, max_s: float = 0.2, warmup: int = 1):
        self.max_reps, self.min_reps, self.max_s, self.warmup = max_reps, min_reps, max_s, warmup
        self.calls = 0

    def measure(self, fn: Callable[[int], Any], inner: int = 1) -> Measurement:
        for _ in range(self.warmup):
            fn(self._next())
        ts: List[float] = []
        t_end = time.perf_counter() + self.max_s
        while len(ts) < self.max_reps and (len(ts) < self.min_reps or time.perf_counter() < t_end):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn(self._next())
            ts.append((time.perf_counter() - t0) / inner)
        return Measurement(statistics.median(ts), min(ts), len(ts))

    def _next(self) -> int:
        self.calls += 1
        return self.calls


class FakeTimer:
    """Returns preset times by function name (``fn.__name__`` or ``fn.label``): tests the target
    logic without timing anything real. Calls ``fn`` once so the code path still runs."""

    def __init__(self, times: Dict[str, float], default: float = 1e-3):
        self.times, self.default = times, default

    def measure(self, fn: Callable[[int], Any], inner: int = 1) -> Measurement:
        fn(0)
        t = self.times.get(getattr(fn, "label", getattr(fn, "__name__", "")), self.default)
        return Measurement(t, t, 1)


# ---- cases -----------------------------------------------------------------------------------

@dataclass
class Env:
    torch: Any
    device: Any
    tiny: bool
    mod: Any                      # fastemb._C_cuda on CUDA, None on CPU
    l2_bytes: int
    seed: int
    log: Callable[[str], None] = print
    raw_on_cpu: bool = False      # self-test: the raw-launch code paths against fastemb._C (CpuRawModule)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def raw(self) -> bool:
        """Call the kernel module directly (the GPU mode) rather than the public torch ops."""
        return self.cuda or self.raw_on_cpu

    def stream(self) -> int:
        return self.torch.cuda.current_stream(self.device).cuda_stream if self.cuda else 0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def copies(self, nbytes: int, cap: int = 64) -> int:
        """How many copies of an input of ``nbytes`` make the rotation exceed 3x the L2."""
        if nbytes <= 0:
            return 1
        return int(min(cap, max(1, math.ceil(3 * self.l2_bytes / nbytes))))


@dataclass
class Prepared:
    ours: Callable[[int], Any]
    peers: Dict[str, Callable[[int], Any]]
    check: Callable[[], str]          # raises on a wrong result; returns a short note
    bytes: int
    inner: int = 1
    bw_target: bool = False
    speedups: List[Target] = field(default_factory=list)  # each on the row of its peer
    note: str = ""
    keep: List[Any] = field(default_factory=list)


@dataclass
class Case:
    family: str
    kernel: str
    shape: str
    tiny_shape: str
    build: Callable[[Env], Prepared]


def _labelled(fn: Callable, label: str) -> Callable:
    fn.label = label  # type: ignore[attr-defined]
    return fn


def _assert_close(name: str, got, want, rtol: float, atol: float) -> str:
    torch = sys.modules["torch"]
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != CPU {tuple(want.shape)}")
    if not bool(torch.isfinite(got).all()):
        raise AssertionError(f"{name}: non-finite values")
    err = (got - want).abs()
    bad = err > atol + rtol * want.abs()
    if bool(bad.any()):
        raise AssertionError(f"{name}: {int(bad.sum())} of {bad.numel()} elements differ from the CPU result "
                             f"(max abs err {float(err.max()):.3g})")
    return "exact" if bool((err == 0).all()) else f"max err {float(err.max()):.2g}"


# -- centroid ------------------------------------------------------------------------------------

def _centroid(n: int, d: int, k: int, backward: bool) -> Callable[[Env], Prepared]:
    def build(env: Env) -> Prepared:
        import fastemb.torch as ft
        from fastemb import _backend
        from fastemb.torch import _centroid as C

        torch, dev = env.torch, env.device
        g = torch.Generator(device=dev).manual_seed(env.seed)
        x = torch.randn(n, d, device=dev, generator=g)
        labels = torch.randint(0, k, (n,), device=dev, generator=g)
        counts = torch.bincount(labels, minlength=k)
        inv = 1.0 / counts.clamp(min=1).to(torch.float32)
        A = _backend.address
        out, cnt, wsum, _, _ = C._alloc_outputs(x, k, "mean", "none", False)
        args = C._native_args(x, labels, None, None, k, "mean", "none", 1e-12, False)
        grad_out = torch.randn(k, d, device=dev, generator=g)
        grad_x = torch.empty_like(x)
        # the subset for the CPU check: every row of the first groups (their results are complete)
        gsub = min(k, 64)
        sub = labels < gsub

        if env.raw:
            stream = env.stream()
            mod = env.mod

            def fwd(_i):
                mod.centroid_forward(*args, A(out), A(cnt), A(wsum), 0, 0, False, stream)

            def bwd(_i):
                mod.centroid_backward(*args, A(grad_out), A(out), A(cnt), A(wsum), 0, 0, A(grad_x), 0, False, stream)
        else:
            def fwd(_i):
                o, c = ft.centroid_aggregate(x, labels, num_groups=k, return_counts=True)
                out.copy_(o)
                cnt.copy_(c)

            def bwd(_i):
                o, c, ws, arg, on = torch.ops.fastemb.centroid_aggregate(x, labels, None, None, k, "mean", "none",
                                                                         1e-12, False)
                gx, _ = torch.ops.fastemb.centroid_aggregate_backward(grad_out, x, labels, None, None, o, c, ws, arg,
                                                                      on, k, "mean", "none", 1e-12, False, True, False)
                grad_x.copy_(gx)

        def check() -> str:
            fwd(0)
            xs, ls = x[sub].cpu(), labels[sub].cpu()
            want = ft.centroid_aggregate(xs, ls, num_groups=k)
            env.sync()
            note = _assert_close("centroid forward", out[:gsub], want[:gsub], 1e-5, 1e-6)
            if not torch.equal(cnt[:gsub].cpu(), torch.bincount(ls, minlength=k)[:gsub]):
                raise AssertionError("centroid forward: counts differ from the CPU")
            if not backward:
                return note
            bwd(0)
            xc = xs.clone().requires_grad_()
            (gx_cpu,) = torch.autograd.grad(ft.centroid_aggregate(xc, ls, num_groups=k), xc, grad_out.cpu())
            env.sync()
            return _assert_close("centroid backward", grad_x[sub], gx_cpu, 1e-5, 1e-7)

        peers: Dict[str, Callable[[int], Any]] = {}
        if not backward:
            acc = torch.empty(k, d, device=dev)
            idx2 = labels[:, None].expand(n, d)

            def index_add(_i):
                acc.zero_()
                acc.index_add_(0, labels, x)
                acc.mul_(inv[:, None])

            def scatter_reduce(_i):
                acc.zero_()
                acc.scatter_reduce_(0, idx2, x, "mean", include_self=False)

            peers = {"torch index_add_ (+scale)": index_add, "torch scatter_reduce mean": scatter_reduce}
            speedups = [Target("speedup", CENTROID_VS_TORCH, name) for name in peers]
            nbytes = n * d * 4 + n * 8 + k * d * 4 + 2 * k * 8
        else:
            row_inv = inv[labels]

            def index_select(_i):
                torch.mul(grad_out.index_select(0, labels), row_inv[:, None])

            peers = {"torch index_select (+scale)": index_select}
            speedups = []
            nbytes = k * d * 4 + n * 8 + n * d * 4 + k * 8
        return Prepared(ours=_labelled(bwd if backward else fwd, "ours"), peers=peers, check=check, bytes=nbytes,
                        bw_target=True, speedups=speedups, keep=[x, labels, out, grad_out, grad_x],
                        note="labels int64, unsorted; reduce=mean")

    return build


# -- binary codes ----------------------------------------------------------------------------------

def _popcount64(torch, x):
    """popcount of every int64 (torch.bitwise_count when the build has it, else SWAR)."""
    if hasattr(torch, "bitwise_count"):
        return torch.bitwise_count(x)
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56) & 0xFF


def _popcount_name(torch) -> str:
    return "torch bitwise_count" if hasattr(torch, "bitwise_count") else "torch SWAR popcount"


def _binary(nq: int, nd: int, dim: int, k: Optional[int]) -> Callable[[Env], Prepared]:
    """k None: single-query Hamming scores (the scan); else top-k of the 1-bit SDC score."""

    def build(env: Env) -> Prepared:
        import fastemb.torch as ft
        from fastemb import _backend

        torch, dev = env.torch, env.device
        nbytes = dim // 8
        g = torch.Generator(device=dev).manual_seed(env.seed)
        d_codes = torch.randint(0, 256, (nd, 1, nbytes), dtype=torch.uint8, device=dev, generator=g)
        q = torch.randint(0, 256, (nq, 1, nbytes), dtype=torch.uint8, device=dev, generator=g)
        ncopies = env.copies(d_codes.numel()) if k is None else 1
        dbs = [d_codes] + [d_codes.clone() for _ in range(ncopies - 1)]
        A = _backend.address
        if k is None:
            out = torch.empty((nq, nd), dtype=torch.int32, device=dev)
        else:
            scores = torch.empty((nq, k), dtype=torch.int32, device=dev)
            ids = torch.empty((nq, k), dtype=torch.int64, device=dev)

        if env.raw:
            mod, stream = env.mod, env.stream()
            if k is None:
                def ours(i):
                    mod.binary_scores(A(q), nq, A(dbs[i % ncopies]), nd, 1, nbytes, dim, 0, A(out), stream)
            else:
                def ours(i):
                    mod.binary_topk(A(q), nq, A(d_codes), nd, 1, nbytes, dim, k, A(scores), A(ids), stream)
        else:
            if k is None:
                def ours(i):
                    out.copy_(ft.hamming(q, dbs[i % ncopies]))
            else:
                def ours(i):
                    s, j = ft.sdc_topk(q, d_codes, k)
                    scores.copy_(s)
                    ids.copy_(j)

        def check() -> str:
            ours(0)
            qs = q[: min(nq, 4)].cpu()
            dc = d_codes.cpu()
            env.sync()
            if k is None:
                want = ft.hamming(qs, dc)
                if not torch.equal(out[: qs.shape[0]].cpu(), want):
                    raise AssertionError("hamming scores differ from the CPU")
                return "exact"
            ws, wi = ft.sdc_topk(qs, dc, k)
            if not (torch.equal(scores[: qs.shape[0]].cpu(), ws) and torch.equal(ids[: qs.shape[0]].cpu(), wi)):
                raise AssertionError("top-k scores / ids differ from the CPU")
            return "exact"

        q64 = q.reshape(nq, nbytes).view(torch.int64)
        d64s = [db.reshape(nd, nbytes).view(torch.int64) for db in dbs]
        qc = max(1, min(nq, (1 << 30) // max(1, nd * nbytes)))  # query chunk: ~1 GiB of xor temporaries

        def popcount_peer(i):
            d64 = d64s[i % ncopies]
            res = []
            for a in range(0, nq, qc):
                dist = _popcount64(torch, q64[a:a + qc, None, :] ^ d64[None, :, :]).sum(-1, dtype=torch.int32)
                if k is None:
                    res.append(dist)
                else:
                    res.append(torch.topk(dist, min(k, nd), dim=1, largest=False))
            return res

        peers = {_popcount_name(torch) + ("" if k is None else " + topk"): popcount_peer}
        if k is not None and nq > 1:
            # a strong torch peer: +-1 bits as bf16, one matmul, topk (not the popcount peer)
            shifts = torch.arange(7, -1, -1, device=dev, dtype=torch.uint8)

            def pm1(c):
                bits = (c.reshape(c.shape[0], nbytes, 1) >> shifts) & 1
                return (bits.reshape(c.shape[0], dim).to(torch.bfloat16) * 2 - 1)

            qb, db_b = pm1(q), pm1(d_codes)
            dc_chunk = max(1, min(nd, (1 << 31) // max(1, nq * 4)))

            def matmul_peer(_i):
                best = []
                for a in range(0, nd, dc_chunk):
                    s = qb @ db_b[a:a + dc_chunk].T
                    best.append(torch.topk(s.float(), min(k, s.shape[1]), dim=1))
                return best

            peers["torch bf16 matmul on +-1 bits + topk"] = matmul_peer
        if k is None:
            nbytes_moved = nq * nbytes + nd * nbytes + nq * nd * 4
        else:
            nbytes_moved = nq * nbytes + nd * nbytes + nq * k * 12
        speed = [Target("speedup", TOPK_VS_POPCOUNT, next(iter(peers)))] if (k is not None and nq > 1) else []
        return Prepared(ours=_labelled(ours, "ours"), peers=peers, check=check, bytes=nbytes_moved,
                        inner=ncopies if k is None else 1, bw_target=(k is None), speedups=speed,
                        keep=[q, dbs], note="1-bit codes" + (f", {ncopies} database copies rotated" if ncopies > 1 else ""))

    return build


# -- ternary -------------------------------------------------------------------------------------

def _ternary(m: int, kdim: int, n: int, op_level: bool = False) -> Callable[[Env], Prepared]:
    def build(env: Env) -> Prepared:
        import numpy as np

        import fastemb
        import fastemb.torch as ft
        from fastemb import _backend
        from fastemb._reference import ternary as R

        torch, dev = env.torch, env.device
        rng = np.random.default_rng(env.seed)
        values = rng.integers(-1, 2, size=(n, kdim), dtype=np.int8)
        tw = fastemb.TernaryWeight.from_ternary(values, 0.0371)
        kp = R.padded_k(kdim)
        packed0 = torch.from_numpy(tw.packed).to(dev)
        scale = torch.from_numpy(np.ascontiguousarray(tw.scale, dtype=np.float32)).to(dev)
        x = torch.from_numpy(rng.standard_normal((m, kdim)).astype(np.float32)).to(dev).to(torch.bfloat16)
        nc = env.copies(packed0.numel())
        packs = [packed0] + [packed0.clone() for _ in range(nc - 1)]
        out = torch.empty((m, n), dtype=torch.float32, device=dev)
        xq = torch.empty((m, kp), dtype=torch.int8, device=dev)
        xs = torch.empty(m, dtype=torch.float32, device=dev)
        A = _backend.address

        if env.raw and not op_level:
            mod, stream = env.mod, env.stream()

            def ours(i):
                mod.ternary_quantize_activations(A(x), 3, m, kdim, kp, float(R.EPS), A(xq), A(xs), stream)
                mod.ternary_matmul_int8(A(xq), A(xs), m, A(packs[i % nc]), n, kdim, kp, A(scale), False, 0, A(out),
                                        0, stream)
        else:
            def ours(i):
                out.copy_(ft.ternary_linear(x, packs[i % nc], scale, kdim))

        def check() -> str:
            ours(0)
            want = ft.ternary_linear(x.cpu(), packed0.cpu(), scale.cpu(), kdim)
            env.sync()
            got = out.cpu()
            if not torch.equal(got, want):
                _assert_close("ternary int8", got, want, 1e-6, 1e-6)
                return "not bit-exact (within 1e-6)"
            return "exact"

        wq = torch.from_numpy(values).to(dev)
        wb0 = (wq.to(torch.float32) * 0.0371).to(torch.bfloat16)
        nb = env.copies(wb0.numel() * 2)
        wbs = [wb0] + [wb0.clone() for _ in range(nb - 1)]
        mp = max(m, 32)
        xq_pad = torch.zeros((mp, kdim), dtype=torch.int8, device=dev)
        xq_pad[:m] = torch.clamp(torch.round(x.float() * 20), -127, 127).to(torch.int8)
        ni = env.copies(wq.numel())
        wis = [wq] + [wq.clone() for _ in range(ni - 1)]

        def bf16_peer(i):
            return torch.nn.functional.linear(x, wbs[i % nb])

        def int_mm_peer(i):
            return torch._int_mm(xq_pad, wis[i % ni].t())

        peers = {"torch bf16 matmul": bf16_peer,
                 "torch._int_mm" + (f" (rows padded to {mp})" if mp != m else ""): int_mm_peer}
        nbytes = n * kp // 4 + m * kdim * 2 + m * n * 4 + 4
        gemv = m == 1
        speed = []
        if gemv:
            speed = [Target("speedup", GEMV_VS_BF16, "torch bf16 matmul")]
        elif m == 128:
            speed = [Target("speedup", GEMM_VS_INT_MM, "torch._int_mm")]
        note = f"{nc} weight copies rotated" if nc > 1 else ""
        if op_level:
            note = "torch op: Python + device-side finiteness check (no host sync) included; " + note
            speed = []
        return Prepared(ours=_labelled(ours, "ours"), peers=peers, check=check, bytes=nbytes, inner=min(nc, 16),
                        bw_target=gemv and not op_level, speedups=speed, keep=[packs, wbs, wis], note=note.strip("; "))

    return build


# -- graph ---------------------------------------------------------------------------------------

def _graph(n: int, nnz: int, d: int, fused: bool) -> Callable[[Env], Prepared]:
    def build(env: Env) -> Prepared:
        from fastemb import _backend
        from fastemb import graph as G
        from fastemb._reference import graph as RG

        torch, dev = env.torch, env.device
        g = torch.Generator(device=dev).manual_seed(env.seed)
        rows = torch.randint(0, n, (nnz,), device=dev, generator=g)
        cols = torch.randint(0, n, (nnz,), device=dev, generator=g)
        rows, order = torch.sort(rows, stable=True)
        cols = cols[order].to(torch.int32)
        deg = torch.bincount(rows, minlength=n)
        indptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
        indptr[1:] = torch.cumsum(deg, 0)
        row_scale = (1.0 / deg.clamp(min=1).to(torch.float32)).contiguous()
        prev = torch.randn(n, d, device=dev, generator=g)
        cur = torch.empty_like(prev)
        accum = torch.zeros_like(prev)
        A = _backend.address
        alpha = 0.5

        if env.raw:
            mod, stream = env.mod, env.stream()

            if hasattr(mod, "graph_validate_csr"):  # once, outside the timing (CpuRawModule: fastemb._C checks)
                mod.graph_validate_csr(A(indptr), A(cols), True, n, n, nnz, stream)

            def ours(_i):
                mod.graph_propagate(A(indptr), A(cols), True, 0, n, A(row_scale), A(prev), d, A(cur), fused, fused,
                                    alpha, A(accum) if fused else 0, stream, nnz=nnz)
        else:
            csr = G.Csr(indptr.numpy(), cols.numpy(), None, n, n)
            ops = G.NumpyOps()

            def ours(_i):
                ops.propagate(csr, row_scale.numpy(), prev.numpy(), cur.numpy(), fused, fused, alpha,
                              accum.numpy() if fused else None)

        def check() -> str:
            r = min(n, 2000)
            ip = indptr[: r + 1].cpu().numpy()
            acc0 = accum[:r].cpu().numpy().copy()
            ours(0)
            env.sync()
            want = RG.propagate(ip, cols[: int(ip[-1])].cpu().numpy(), None, row_scale[:r].cpu().numpy(),
                                prev.cpu().numpy(), fused, fused, alpha, acc0 if fused else None)
            note = _assert_close("propagate", cur[:r], torch.from_numpy(want), 1e-5, 1e-6)
            if fused:
                _assert_close("propagate accum", accum[:r], torch.from_numpy(acc0), 1e-5, 1e-6)
            return note

        vals = row_scale[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta", "invariant checks disabled"
            try:
                adj = torch.sparse_csr_tensor(indptr.to(torch.int32), cols, vals, size=(n, n))
                adj @ prev[:, :1].contiguous()  # probe: int32 indices supported here
                peer_note = "int32 indices"
            except Exception:  # noqa: BLE001 - fall back to int64 indices
                adj = torch.sparse_csr_tensor(indptr, cols.to(torch.int64), vals, size=(n, n))
                peer_note = "int64 indices"

        def spmm_peer(_i):
            return adj @ prev

        nbytes = 8 * (n + 1) + 4 * nnz + nnz * d * 4 + n * d * 4 + 4 * n
        if fused:
            nbytes += 2 * n * d * 4
        note = "bytes count each gathered row once per edge; sparse CSR peer: " + peer_note
        if env.cuda:
            note += "; CSR validated once before timing (graph_validate_csr), no per-call check or sync"
        return Prepared(ours=_labelled(ours, "ours"), peers={"torch sparse CSR @ dense": spmm_peer}, check=check,
                        bytes=nbytes, bw_target=not fused, keep=[adj, prev, cur, accum, cols, indptr], note=note)

    return build


# -- multi-vector (maxsim, muvera_fde) and binarize: correctness first, op-level timing ----------------

def _token_sets(torch, dev, g, n: int, max_len: int, dim: int):
    """n sets of 0..max_len random tokens (empty sets and partial tiles included): (x [T, dim], offsets [n+1])."""
    lens = torch.randint(0, max_len + 1, (n,), device=dev, generator=g)
    off = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    off[1:] = torch.cumsum(lens, 0)
    x = torch.randn(int(off[-1]), dim, device=dev, generator=g)
    return x, off


def _multivector(nq: int, nd: int, q_len: int, d_len: int, dim: int, fde: bool) -> Callable[[Env], Prepared]:
    """fde False: ft.maxsim [nq, nd]; True: ft.muvera_fde of the nd document sets (defaults + final_dim)."""

    def build(env: Env) -> Prepared:
        import numpy as np

        import fastemb
        import fastemb.torch as ft

        torch, dev = env.torch, env.device
        g = torch.Generator(device=dev).manual_seed(env.seed)
        q, qo = _token_sets(torch, dev, g, nq, q_len, dim)
        d, do = _token_sets(torch, dev, g, nd, d_len, dim)
        kw = dict(repetitions=20, k_sim=5, d_proj=16, final_dim=1024, seed=7)
        holder = {}

        if fde:
            def ours(_i):
                holder["out"] = ft.muvera_fde(d, do, "document", **kw)
        else:
            def ours(_i):
                holder["out"] = ft.maxsim(q, qo, d, do)

        def check() -> str:
            ours(0)
            env.sync()
            got = holder["out"].cpu().numpy()
            sub = min(nd, 64)  # the first document sets: exact CPU bits expected
            oc = do[: sub + 1].cpu().numpy()
            dc = d[: int(oc[-1])].cpu().numpy()
            if fde:
                for kind in ("document", "query"):
                    ours_k = ft.muvera_fde(d, do, kind, **kw).cpu().numpy()[:sub]
                    want = fastemb.muvera_fde(dc, oc, kind, fill_empty=kind == "document", **kw)
                    if not np.array_equal(ours_k, want):
                        raise AssertionError(f"muvera_fde ({kind}) differs from the CPU")
            else:
                want = fastemb.maxsim(q.cpu().numpy(), qo.cpu().numpy(), dc, oc)
                if not np.array_equal(got[:, :sub], want):
                    raise AssertionError("maxsim differs from the CPU")
            return "exact"

        tokens = int(d.shape[0]) + (0 if fde else int(q.shape[0]))
        return Prepared(ours=_labelled(ours, "ours"), peers={}, check=check, bytes=tokens * dim * 4,
                        keep=[q, d, qo, do], note="op level (validation included)")

    return build


def _binarize(n: int, m: int, bits: int) -> Callable[[Env], Prepared]:
    def build(env: Env) -> Prepared:
        import fastemb.torch as ft

        torch, dev = env.torch, env.device
        g = torch.Generator(device=dev).manual_seed(env.seed)
        x = torch.randn(n, m, device=dev, generator=g)
        x[0] = 0.0  # an all-zero row (s = 1)
        holder = {}

        def ours(_i):
            holder["out"] = ft.binarize(x, bits)

        def check() -> str:
            ours(0)
            r = min(n, 4096)
            for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                xs = x[:r].to(dtype)
                for rule in ("ge", "gt"):
                    for scale in (None, xs.float().abs().amax(1).clamp_min(1e-3).to(torch.float64) / 3):
                        got = ft.binarize(xs, bits, scale, rule).cpu()
                        want = ft.binarize(xs.cpu(), bits, None if scale is None else scale.cpu(), rule)
                        if not torch.equal(got, want):
                            raise AssertionError(f"binarize {dtype} {rule} scale={scale is not None} differs from the CPU")
            return "exact"

        return Prepared(ours=_labelled(ours, "ours"), peers={}, check=check, bytes=n * m * 4 + n * bits * ((m + 7) // 8),
                        keep=[x], note="op level")

    return build


def registry() -> List[tuple]:
    """(Case, tiny builder): the full-size builder runs on the GPU, the tiny one in the self-test."""
    cases = []

    def add(family, kernel, shape, tiny_shape, full, tiny):
        cases.append((Case(family, kernel, shape, tiny_shape, full), tiny))

    for k, kt in ((1000, 7), (100_000, 300)):
        add("centroid", "centroid forward (mean)", f"1Mx128 K={k}", f"2000x33 K={kt}",
            _centroid(1 << 20, 128, k, False), _centroid(2000, 33, kt, False))
    for k, kt in ((1000, 7), (100_000, 300)):
        add("centroid", "centroid backward (mean)", f"1Mx128 K={k}", f"2000x33 K={kt}",
            _centroid(1 << 20, 128, k, True), _centroid(2000, 33, kt, True))
    add("binary", "hamming top-k (1-bit sdc_topk)", "1000q x 1M x 1024b k=10", "9q x 3000 x 64b k=5",
        _binary(1000, 1 << 20, 1024, 10), _binary(9, 3000, 64, 5))
    add("binary", "hamming scan, 1 query (scores)", "1q x 1M x 1024b", "1q x 3000 x 64b",
        _binary(1, 1 << 20, 1024, None), _binary(1, 3000, 64, None))
    add("binary", "hamming top-k, 1 query", "1q x 1M x 1024b k=10", "1q x 3000 x 64b k=5",
        _binary(1, 1 << 20, 1024, 10), _binary(1, 3000, 64, 5))
    for m, kk, nn in ((1, 4096, 4096), (1, 2560, 6912), (8, 4096, 4096), (128, 4096, 4096)):
        add("ternary", "ternary W1.58A8 " + ("GEMV" if m == 1 else "GEMM"), f"{m}x{kk}x{nn}", f"{m}x{kk // 16}x{nn // 64}",
            _ternary(m, kk, nn), _ternary(m, kk // 16, nn // 64))
    add("ternary", "ternary_linear torch op", "1x4096x4096", "1x300x70", _ternary(1, 4096, 4096, True),
        _ternary(1, 300, 70, True))
    add("graph", "FastRP SpMM (propagate)", "1M nodes, 20M edges, d=128", "3000 nodes, 30k edges, d=16",
        _graph(1 << 20, 20_000_000, 128, False), _graph(3000, 30_000, 16, False))
    add("graph", "FastRP step (propagate+normalize+accum)", "1M nodes, 20M edges, d=128",
        "3000 nodes, 30k edges, d=16", _graph(1 << 20, 20_000_000, 128, True), _graph(3000, 30_000, 16, True))
    add("multivector", "maxsim", "32q (<=32 tok) x 20k docs (<=300 tok), d=128", "5q x 70 docs, d=33",
        _multivector(32, 20_000, 32, 300, 128, False), _multivector(5, 70, 9, 40, 33, False))
    add("multivector", "muvera_fde (document)", "20k docs (<=300 tok), d=128", "70 docs, d=33",
        _multivector(1, 20_000, 1, 300, 128, True), _multivector(1, 70, 1, 40, 33, True))
    add("binary", "binarize (2-bit, mean|x| scale)", "256k x 1024 float32", "300 x 1000",
        _binarize(1 << 18, 1024, 2), _binarize(300, 1000, 2))
    return cases


class CpuRawModule:
    """fastemb._C behind fastemb._C_cuda's call signatures (same arguments, with ``stream`` and,
    for centroid, ``deterministic`` in place of ``isa``; the graph CSR functions' keyword ``nnz`` is
    dropped, fastemb._C reads it from indptr and validates the CSR itself): lets the self-test run the
    raw-launch code of every case, argument order included, on the CPU."""

    def __init__(self, C):
        self.C = C

    def __getattr__(self, name: str):
        fn = getattr(self.C, name)
        drop = 2 if name.startswith("centroid_") else 1

        def call(*args, nnz=None):
            return fn(*args[:-drop], "")

        return call


# ---- running ---------------------------------------------------------------------------------

def copy_bandwidth(torch, device, timer, nbytes: int) -> Optional[float]:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    m = timer.measure(_labelled(lambda _i: dst.copy_(src), "copy"))
    del src, dst
    return 2 * nbytes / m.median_s if m.median_s > 0 else None


def run_cases(env: Env, timer, cases: Sequence, deadline: float, only: Sequence[str] = ()) -> tuple:
    """Runs every case: check, then time ours and each peer. Returns (rows, targets by row index)."""
    torch = env.torch
    rows: List[Row] = []
    targets: Dict[int, Target] = {}
    lost = ""  # set when a case left the CUDA context unusable
    for case, tiny_build in cases:
        if only and case.family not in only:
            continue
        shape = case.tiny_shape if env.tiny else case.shape
        if lost or time.time() > deadline:
            rows.append(Row(case.kernel, shape, result="skipped", note=lost or "time budget spent"))
            continue
        t0 = time.time()
        env.seed = int.from_bytes(os.urandom(4), "little")
        try:
            prep = (tiny_build if env.tiny else case.build)(env)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append(Row(case.kernel, shape, result="error", note=f"setup: {type(exc).__name__}: {exc}"[:300]))
            env.log(f"[{case.kernel} {shape}] setup failed: {exc!r}")
            lost = _free(torch, env)
            continue
        try:
            check_note = prep.check()
            result = ""
        except Exception as exc:  # noqa: BLE001
            check_note, result = f"CHECK FAILED: {type(exc).__name__}: {exc}"[:300], "wrong"
        base = Row(case.kernel, shape, bytes=prep.bytes, result=result,
                   note="; ".join(s for s in (f"check vs CPU: {check_note}", f"seed {env.seed}", prep.note) if s))
        try:
            m = timer.measure(prep.ours, prep.inner)
            base.time_s, base.time_min_s, base.reps = m.median_s, m.min_s, m.reps
        except Exception as exc:  # noqa: BLE001
            base.result, base.note = "error", f"timing: {type(exc).__name__}: {exc}"[:300]
        first = len(rows)
        peer_rows = []
        pfn = pm = None
        for j, (pname, pfn) in enumerate(prep.peers.items()):
            r = Row(**{**asdict(base), "peer": pname, "note": base.note if j == 0 else ""})
            if time.time() > deadline:
                r.note = "peer skipped: time budget"
            else:
                try:
                    pm = timer.measure(_labelled(pfn, pname), prep.inner)
                    r.peer_time_s, r.peer_time_min_s = pm.median_s, pm.min_s
                except Exception as exc:  # noqa: BLE001
                    r.note = f"peer failed: {type(exc).__name__}: {exc}"[:200]
            peer_rows.append(r)
        rows.extend(peer_rows or [base])
        # one target per row: each speed-up sits on its peer's row, the bandwidth target on another
        speed_js = set()
        for t in prep.speedups:
            j = next((j for j, r in enumerate(peer_rows) if r.peer == t.peer), None)
            if j is not None:
                targets[first + j] = t
                speed_js.add(j)
        if prep.bw_target:
            bw_j = next((j for j in range(max(1, len(peer_rows))) if j not in speed_js), None)
            if bw_j is None:  # a single peer row that already carries the speed-up: add a row without peer
                rows.append(Row(**{**asdict(base), "peer": ""}))
                bw_j = len(rows) - 1 - first
            targets[first + bw_j] = Target("bw", BW_TARGET)
        env.log(f"[{case.kernel} {shape}] ours {fmt_time(base.time_s)}; "
                + "; ".join(f"{r.peer} {fmt_time(r.peer_time_s)}" for r in peer_rows)
                + f"; check: {check_note} ({time.time() - t0:.1f} s)")
        del prep, pfn, pm  # the closures hold the case's device buffers
        lost = _free(torch, env)
        if lost:
            env.log(f"[{case.kernel} {shape}] {lost}; the remaining cases are skipped")
            rows[first].note = f"{lost}; " + rows[first].note
            if rows[first].result not in ("wrong",):
                rows[first].result = "error"
    return rows, targets


def _free(torch, env: Env) -> str:
    """Frees the case's buffers; returns "" or, after a sticky CUDA error (illegal address, device-side
    assert: every later CUDA call fails), a note saying so (the remaining cases are then skipped)."""
    gc.collect()
    if env.cuda:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except RuntimeError as exc:  # the context is unusable from here on
            return f"CUDA context lost: {type(exc).__name__}: {exc}"[:300]
    return ""


def run_tests(timeout_s: float, log_dir: Optional[Path]) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "--durations=12", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "tests"]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(10.0, timeout_s))
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text += f"\n[gpu_check] pytest stopped after {timeout_s:.0f} s (time budget)"
        rc = -1
    if log_dir is not None:
        (log_dir / "pytest_cuda.log").write_text(text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else "(no output)"
    return {"cmd": " ".join(cmd), "returncode": rc, "summary": summary, "seconds": round(time.time() - t0, 1),
            "tail": "\n".join(lines[-40:])}


def build_module(arch: str, timeout_s: float, log_dir: Optional[Path]) -> Dict[str, Any]:
    env = dict(os.environ, FASTEMB_CUDA="ON",
               CMAKE_ARGS=(os.environ.get("CMAKE_ARGS", "") + f" -DCMAKE_CUDA_ARCHITECTURES={arch}").strip())
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(30.0, timeout_s))
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired:
        text, rc = "build timed out", -1
    if log_dir is not None:
        (log_dir / "build.log").write_text(text)
    return {"cmd": f"CMAKE_ARGS='{env['CMAKE_ARGS']}' FASTEMB_CUDA=ON " + " ".join(cmd), "returncode": rc,
            "seconds": round(time.time() - t0, 1), "tail": "\n".join(text.strip().splitlines()[-25:])}


def environment(torch) -> Dict[str, Any]:
    info: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "host": platform.node(),
                            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1),
                    l2_mb=round(getattr(p, "L2_cache_size", 0) / 1e6, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            pass
    return info


def write_report(path: Optional[Path], json_path: Optional[Path], env_info: Dict[str, Any], rows: List[Row],
                 copy_bw: Optional[float], extra: Dict[str, Any]) -> str:
    table = render_table(rows, copy_bw)
    head = [f"# fastemb GPU check ({env_info.get('date', '')})", ""]
    head.append("Device: " + ", ".join(f"{k}={env_info[k]}" for k in ("device", "capability", "sms", "memory_gib",
                                                                     "l2_mb", "driver") if k in env_info))
    head.append("Software: " + ", ".join(f"{k}={env_info[k]}" for k in ("python", "torch", "torch_cuda", "git_commit")
                                         if k in env_info))
    head.append(f"Copy bandwidth (D2D, read + write): {copy_bw / 1e9:.0f} GB/s" if copy_bw else "Copy bandwidth: -")
    for key in ("build", "tests"):
        if key in extra:
            head.append(f"{key}: rc={extra[key].get('returncode')} {extra[key].get('summary', '')} "
                        f"({extra[key].get('seconds')} s)")
    head.append("Times are medians of CUDA-event timings; ratio = peer time / our time; "
                "% copy BW = our bytes / time / copy bandwidth.")
    text = "\n".join(head) + "\n\n" + table + "\n"
    if path is not None:
        path.write_text(text)
    if json_path is not None:
        json_path.write_text(json.dumps({"env": env_info, "copy_bw_bytes_per_s": copy_bw,
                                         "rows": [dict(asdict(r), ratio=r.ratio, bw_fraction=r.bw_fraction(copy_bw))
                                                  for r in rows], **extra}, indent=1, default=str))
    return text


# ---- self-test (CPU, no GPU needed) ----------------------------------------------------------

def self_test() -> int:
    t_start = time.time()
    import torch

    # 1. target logic on fake times
    rows = [Row("gemv", "1x4096x4096", peer="torch bf16 matmul", bytes=4_000_000),
            Row("gemv", "1x4096x4096", peer="torch._int_mm", bytes=4_000_000),
            Row("scan", "1q", peer="popcount", bytes=3_000_000)]
    fake = FakeTimer({"ours": 2e-6, "torch bf16 matmul": 7e-6, "torch._int_mm": 5e-6})
    rows[0].time_s = rows[1].time_s = fake.measure(_labelled(lambda i: None, "ours")).median_s
    rows[0].peer_time_s = fake.measure(_labelled(lambda i: None, "torch bf16 matmul")).median_s
    rows[1].peer_time_s = fake.measure(_labelled(lambda i: None, "torch._int_mm")).median_s
    rows[2].time_s, rows[2].peer_time_s = 1e-3, 2e-3
    copy_bw = 2.5e12  # 4 MB in 2 us = 2 TB/s = 80 %; 3 MB in 1 ms: far under
    evaluate(rows, {0: Target("bw", 0.6), 1: Target("speedup", 3.0, "torch bf16 matmul"), 2: Target("bw", 0.6)},
             copy_bw)
    assert rows[0].result == "pass", rows[0]
    assert abs(rows[0].bw_fraction(copy_bw) - 0.8) < 1e-9
    assert rows[1].result == "FAIL" and abs(rows[1].ratio - 2.5) < 1e-9, rows[1]
    assert rows[2].result == "FAIL"
    wrong = Row("x", "s", time_s=1e-6, bytes=10**9, result="wrong")
    evaluate([wrong], {0: Target("bw", 0.6)}, copy_bw)
    assert wrong.result == "wrong"
    missing = Row("x", "s")
    evaluate([missing], {0: Target("speedup", 5, "p")}, copy_bw)
    assert missing.result == "n/a"
    table = render_table(rows, copy_bw)
    assert "80%" in table and "| pass |" in table and "| FAIL |" in table and "3.50x" in table, table
    assert fmt_time(2e-6) == "2.0 us" and fmt_time(0.0123) == "12.3 ms" and fmt_bytes(4_000_000) == "4 MB"

    # 2. the CPU timer and the budget guard
    m = CpuTimer(max_reps=4, min_reps=2, max_s=0.01).measure(lambda i: sum(range(1000)), inner=2)
    assert m.reps >= 2 and 0 < m.min_s <= m.median_s
    env = Env(torch=torch, device=torch.device("cpu"), tiny=True, mod=None, l2_bytes=1 << 16, seed=0, log=lambda s: None)
    assert env.copies(1 << 10) == 64 and env.copies(1 << 20) == 1
    cases = registry()
    skipped, _ = run_cases(env, CpuTimer(), cases[:2], deadline=time.time() - 1)
    assert [r.result for r in skipped] == ["skipped", "skipped"]

    # 3. every case of the registry at tiny scale on CPU tensors: setup, CPU check, timing, peers
    logs: List[str] = []
    env.log = logs.append
    rows, targets = run_cases(env, CpuTimer(max_reps=2, min_reps=1, max_s=0.01, warmup=0), cases,
                              deadline=time.time() + 600)
    evaluate(rows, targets, copy_bandwidth(torch, torch.device("cpu"), CpuTimer(max_reps=3), 8 << 20))
    kernels = {c.kernel for c, _ in cases}
    assert kernels <= {r.kernel for r in rows}, "a case produced no row"
    bad = [r for r in rows if r.result in ("wrong", "error") or "peer failed" in r.note and "_int_mm" not in r.peer]
    assert not bad, "\n".join(f"{r.kernel} {r.shape} {r.peer}: {r.result} {r.note}" for r in bad)
    assert all(r.time_s and r.time_s > 0 for r in rows)
    tgt_rows = [rows[i] for i in targets]
    assert any(t.kind == "speedup" for t in targets.values()) and any(t.kind == "bw" for t in targets.values())
    assert all(r.result in ("pass", "FAIL") for r in tgt_rows), [(r.kernel, r.result) for r in tgt_rows]
    with tempfile.TemporaryDirectory() as tmp:
        md, js = Path(tmp) / "t.md", Path(tmp) / "t.json"
        text = write_report(md, js, environment(torch), rows, 1e10, {"tests": {"returncode": 0, "summary": "ok"}})
        data = json.loads(js.read_text())
        assert md.read_text() == text and len(data["rows"]) == len(rows) and "bw_fraction" in data["rows"][0]
    print(render_table(rows, 1e10))
    print("\n".join(logs))

    # 3b. the raw-launch code paths (what the GPU mode calls) against the CPU module's twins
    from fastemb import _backend

    if _backend.native() is not None:
        env_raw = Env(torch=torch, device=torch.device("cpu"), tiny=True, mod=CpuRawModule(_backend.native()),
                      l2_bytes=1 << 16, seed=0, log=logs.append, raw_on_cpu=True)
        raw_rows, _ = run_cases(env_raw, FakeTimer({}), cases, deadline=time.time() + 600)
        bad = [r for r in raw_rows if r.result in ("wrong", "error")]
        assert not bad, "\n".join(f"raw {r.kernel} {r.shape}: {r.result} {r.note}" for r in bad)
        print(f"raw-launch paths on the CPU module: {len(raw_rows)} rows, every check passed")

    # 4. the full mode on a machine without CUDA: a clear message and exit code, no traceback
    if not torch.cuda.is_available():
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--skip-tests", "--out", os.devnull],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == NO_CUDA_EXIT, (p.returncode, p.stdout, p.stderr)
        assert "no CUDA device" in p.stdout + p.stderr and "Traceback" not in p.stderr, p.stderr
    print(f"gpu_check self-test passed ({len(rows)} rows, {len(targets)} targets, {time.time() - t_start:.1f} s)")
    return 0


# ---- main ------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--self-test", action="store_true", help="CPU-only check of this script (CI)")
    ap.add_argument("--build", action="store_true", help="pip install -e . with FASTEMB_CUDA=ON for this GPU first")
    ap.add_argument("--arch", default="", help="CMAKE_CUDA_ARCHITECTURES for --build (default: the device's, e.g. 90)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    ap.add_argument("--tests-s", type=float, default=300.0, help="at most this many seconds for pytest -m cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run of the harness on the GPU)")
    ap.add_argument("--only", default="", help="comma-separated families: centroid,binary,ternary,graph")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds from start for all work")
    ap.add_argument("--deadline", type=float, default=0.0, help="epoch seconds: stop starting work after this")
    ap.add_argument("--out", default="gpu_check.md", help="Markdown report path")
    ap.add_argument("--json", default="", help="JSON report path")
    ap.add_argument("--log-dir", default="", help="folder for build.log / pytest_cuda.log")
    ap.add_argument("--build-result", default="", help=argparse.SUPPRESS)  # set by the re-exec after --build
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()

    t_start = time.time()
    deadline = t_start + args.budget_s
    if args.deadline:
        deadline = min(deadline, args.deadline)
    stop_at = deadline - RESERVE_S
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError as exc:
        print(f"gpu_check: torch is not importable ({exc}); the GPU check needs PyTorch with CUDA")
        return NO_CUDA_EXIT
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch (torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}); run this on the GPU machine, or "
              "`python bench/gpu_check.py --self-test` here")
        return NO_CUDA_EXIT
    env_info = environment(torch)
    print("environment: " + json.dumps(env_info))
    extra: Dict[str, Any] = {}
    if args.build_result:
        extra["build"] = json.loads(Path(args.build_result).read_text())
    if args.build:
        p = torch.cuda.get_device_properties(0)
        arch = args.arch or f"{p.major}{p.minor}"
        print(f"building fastemb for sm_{arch} ...", flush=True)
        extra["build"] = build_module(arch, max(60.0, stop_at - time.time() - 120), log_dir)
        print(f"build: rc={extra['build']['returncode']} in {extra['build']['seconds']} s\n{extra['build']['tail']}",
              flush=True)
        if extra["build"]["returncode"] != 0:
            write_report(Path(args.out), Path(args.json) if args.json else None, env_info, [], None,
                         dict(extra, error="build failed"))
            print("gpu_check: the build failed (see above / build.log)")
            return 1
        # a fresh interpreter sees the new editable install (its .pth is read at start-up only)
        fd, build_json = tempfile.mkstemp(suffix=".json", prefix="gpu_check_build_")
        with os.fdopen(fd, "w") as f:
            json.dump(extra["build"], f)
        rest = [a for a in (sys.argv[1:] if argv is None else list(argv)) if a != "--build"]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *rest,
                                  "--build-result", build_json, "--deadline", repr(deadline)])
    if not _importable("fastemb"):
        sys.path.insert(0, str(ROOT / "python"))
    from fastemb import _backend

    mod = _backend.cuda_module()
    if mod is None or mod.device_count() == 0:
        print(f"gpu_check: fastemb._C_cuda is not available ({_backend._C_cuda_error}); build with "
              "`python bench/gpu_check.py --build` (FASTEMB_CUDA=ON, nvcc on PATH)")
        write_report(Path(args.out), Path(args.json) if args.json else None, env_info, [], None,
                     dict(extra, error="fastemb._C_cuda not available"))
        return 1
    extra["cuda_module"] = getattr(mod, "__file__", "")
    if not args.skip_tests:
        print("running pytest -m cuda ...", flush=True)
        extra["tests"] = run_tests(min(args.tests_s, stop_at - time.time() - 150), log_dir)
        print(f"tests: {extra['tests']['summary']} ({extra['tests']['seconds']} s)\n{extra['tests']['tail']}",
              flush=True)

    device = torch.device("cuda", torch.cuda.current_device())
    l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or (50 << 20)
    timer = CudaTimer(torch)
    copy_bw = copy_bandwidth(torch, device, timer, (1 << 20) if args.tiny else (1 << 30))
    print(f"copy bandwidth: {copy_bw / 1e9:.0f} GB/s (read + write)", flush=True)
    env = Env(torch=torch, device=device, tiny=args.tiny, mod=mod, l2_bytes=l2, seed=0,
              log=lambda s: print(s, flush=True))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    rows, targets = run_cases(env, timer, registry(), stop_at, only)
    evaluate(rows, targets, copy_bw)
    extra["seconds"] = round(time.time() - t_start, 1)
    extra["targets"] = {str(i): asdict(t) for i, t in targets.items()}
    text = write_report(Path(args.out), Path(args.json) if args.json else None, env_info, rows, copy_bw, extra)
    print()
    print(text)
    print(f"gpu_check finished in {extra['seconds']} s")
    failed_tests = extra.get("tests", {}).get("returncode", 0) not in (0,)
    wrong = any(r.result in ("wrong", "error") for r in rows)
    return 1 if (failed_tests or wrong) else 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
