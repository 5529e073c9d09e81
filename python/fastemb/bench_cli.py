"""``python -m fastemb bench``: fastemb's microbenchmark suites, with every installed peer, on this machine.

Runs the pytest-benchmark suites of ``bench/`` (a source checkout's ``bench/`` next to the package, else
the copy installed as ``fastemb/_bench``) in one subprocess per family, shows progress, and prints one
table per family (fastemb's median, each peer's median and its ratio to fastemb, the speed-up over the
best peer, and the physical limit: bytes / the memory bandwidth measured at the start and end of the run,
or an instruction-throughput bound where a benchmark defines one) plus the machine it ran on.

    python -m fastemb bench --quick                     # every family on small sizes (< 2 min, 2 cores)
    python -m fastemb bench --family binary --json a.json --plot a.png --markdown a.md
    python -m fastemb bench --compare a.json b.json     # per-kernel ratios between two runs

The common schema (:func:`record`) is what every benchmark writes into its ``extra_info["common"]``;
:func:`build_table` reads only that, so a new benchmark shows up in the table by calling ``record``.

This module imports only the standard library at the top: the benchmark files import :func:`record`
from it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

SCHEMA_VERSION = 1
RESULT_FORMAT = "fastemb-bench/1"

#: benchmark files of each family, relative to the bench directory
FAMILIES: Dict[str, List[str]] = {
    "centroid": ["bench_centroid.py"],
    "binary": ["bench_binary.py"],
    "ternary": ["bench_ternary.py"],
    "graph": ["bench_fastrp.py"],
    "multivector": ["bench_multivector.py"],
}
#: FASTEMB_BENCH_SCALE of ``--quick`` per family (sizes x scale; each family keeps its own floor on sizes)
QUICK_SCALE: Dict[str, float] = {"centroid": 0.02, "binary": 0.02, "ternary": 0.1, "graph": 0.01, "multivector": 0.02}
QUICK_BW_MB = 256  # bandwidth probe buffer of --quick (far above a 32 MB last-level cache)

#: (distribution name, import name) of the peers the suites look for
PEER_PACKAGES: List[Tuple[str, str]] = [
    ("torch", "torch"), ("faiss-cpu", "faiss"), ("numkong", "numkong"), ("simsimd", "simsimd"),
    ("ggml-python", "ggml"), ("scipy", "scipy"), ("scikit-learn", "sklearn"), ("fastrp", "fastrp"),
]

#: limit kinds computed from ``bytes`` and the bandwidth probe (bench/conftest.py), and the probe's key
BANDWIDTH_LIMITS = {"read bandwidth": "read_gbs", "write bandwidth": "write_gbs", "copy bandwidth": "copy_gbs"}

ROLES = ("fastemb", "fastemb-variant", "peer", "reference")


# ---------------------------------------------------------------------------------------------------
# The common schema

def record(benchmark: Any, *, family: str, kernel: str, shape: str, peer: str, impl: str = "",
           nbytes: Optional[int] = None, limit_kind: Optional[str] = None, limit_s: Optional[float] = None,
           work_factor: float = 1.0, reference: bool = False) -> Dict[str, Any]:
    """Records one benchmark in the schema ``python -m fastemb bench`` reads (``extra_info["common"]``).

    Args:
        benchmark: the pytest-benchmark fixture (anything with an ``extra_info`` dict).
        family: ``'centroid' | 'binary' | 'ternary' | 'graph'``.
        kernel: what is computed, e.g. ``'centroid mean forward'``; one table row per (kernel, shape).
        shape: the sizes actually run, e.g. ``'20000x128 K=20 sorted'``.
        peer: ``'fastemb'`` marks fastemb's main entry of the row (the one every ratio divides by);
            other names starting with ``'fastemb'`` are fastemb variants (shown, never "the best peer");
            anything else is a peer (its column label, e.g. ``'faiss'``).
        impl: free text: the call that is timed.
        nbytes: the minimal bytes one call moves (at the full size the row stands for).
        limit_kind: ``'read bandwidth' | 'write bandwidth' | 'copy bandwidth'`` (limit = nbytes / the
            bandwidth measured at the start of the run), or a name of an instruction limit given as
            ``limit_s`` (e.g. ``'popcount'``).
        limit_s: the physical lower bound of one call in seconds, when the bench computes it itself.
        work_factor: the timed call did 1/work_factor of the row's work (a peer timed on a subset and
            extrapolated): its median is multiplied by this and marked as an estimate.
        reference: a yardstick rather than a competitor (e.g. one read of x, distances without top-k):
            shown, but never counted as the best peer.

    Returns:
        the recorded dict.
    """
    for name, value in (("family", family), ("kernel", kernel), ("shape", shape), ("peer", peer)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"record: {name} must be a non-empty string, got {value!r}")
    if limit_kind is not None and limit_kind in BANDWIDTH_LIMITS and nbytes is None and limit_s is None:
        raise ValueError("record: a bandwidth limit needs nbytes")
    if not (work_factor > 0):
        raise ValueError(f"record: work_factor must be > 0, got {work_factor!r}")
    if peer == "fastemb":
        role = "fastemb"
    elif peer.startswith("fastemb"):
        role = "fastemb-variant"
    else:
        role = "reference" if reference else "peer"
    common = {
        "schema": SCHEMA_VERSION, "family": family, "kernel": kernel, "shape": shape, "peer": peer,
        "role": role, "impl": impl, "bytes": None if nbytes is None else int(nbytes), "limit_kind": limit_kind,
        "limit_s": None if limit_s is None else float(limit_s), "work_factor": float(work_factor),
    }
    benchmark.extra_info["common"] = common
    return common


# ---------------------------------------------------------------------------------------------------
# Locating the suites and the peers

def find_bench_dir() -> Optional[str]:
    """A source checkout's ``bench/`` (python/fastemb/../../bench), else the installed ``fastemb/_bench``."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, os.pardir, os.pardir, "bench"), os.path.join(here, "_bench")):
        cand = os.path.normpath(cand)
        if os.path.isfile(os.path.join(cand, "conftest.py")) and os.path.isfile(os.path.join(cand, "bench_centroid.py")):
            return cand
    return None


def peer_versions() -> Dict[str, Optional[str]]:
    """Installed version (or None) of every peer package, without importing them."""
    from importlib import metadata, util

    out: Dict[str, Optional[str]] = {}
    for dist, mod in PEER_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "installed" if util.find_spec(mod) is not None else None
    return out


# ---------------------------------------------------------------------------------------------------
# Running one family

class Progress:
    """Progress of the benchmark subprocesses: one rewritten line on a terminal, a line per benchmark
    otherwise."""

    def __init__(self, stream: Any = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self._width = shutil.get_terminal_size((100, 20)).columns

    def line(self, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            text = text[: self._width - 1]
            self.stream.write("\r" + text.ljust(self._width - 1) + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            if self.tty:
                self.stream.write("\r" + " " * (self._width - 1) + "\r")
            self.stream.write(text + "\n")
            self.stream.flush()


def _short(nodeid: str) -> str:
    return nodeid.split("::", 1)[-1]


def run_family(family: str, bench_dir: str, scale: float, threads: int, out_json: str, progress: Progress,
               extra_env: Optional[Dict[str, str]] = None, pytest_args: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs one family's suites in a pytest subprocess; returns its outcome (returncode, skips, log...)."""
    files = [os.path.join(bench_dir, f) for f in FAMILIES[family]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        return {"family": family, "returncode": None, "error": f"missing benchmark files: {missing}", "skipped": [],
                "failed": [], "elapsed_s": 0.0, "scale": scale}
    env = dict(os.environ)
    env.update({"FASTEMB_BENCH_SCALE": repr(float(scale)), "FASTEMB_BENCH_THREADS": str(threads)})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # faiss' and torch's OpenMP threads must not spin between calls
    env.update(extra_env or {})
    rfd, wfd = os.pipe()
    env["FASTEMB_BENCH_PROGRESS_FD"] = str(wfd)
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "-p", "fastemb._bench_progress",
           "-o", "python_files=bench_*.py", f"--rootdir={bench_dir}", f"--benchmark-json={out_json}",
           "--benchmark-columns=median,iqr,rounds", *pytest_args]
    log = tempfile.TemporaryFile(mode="w+")
    t0 = time.time()
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(wfd,),
                                cwd=bench_dir)
    finally:
        os.close(wfd)
    n_total, done, current = 0, set(), ""
    skipped: List[Dict[str, str]] = []
    failed: List[Dict[str, str]] = []

    def show(final: bool = False, extra: str = "") -> None:
        el = time.time() - t0
        progress.line(f"[{family} {len(done)}/{n_total or '?'} {int(el) // 60}:{int(el) % 60:02d}] "
                      f"{extra or current}", final)

    with os.fdopen(rfd, "r") as events:
        for raw in events:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "collected":
                n_total = int(ev["n"])
                show()
            elif kind == "start":
                current = _short(ev["nodeid"])
                show()
            elif kind == "report":
                nid = ev["nodeid"]
                done.add(nid)
                if ev["outcome"] == "skipped":
                    skipped.append({"test": _short(nid), "reason": ev.get("reason", "")})
                    if not progress.tty:
                        show(True, f"{_short(nid)} skipped: {ev.get('reason', '')}")
                elif ev["outcome"] == "failed":
                    failed.append({"test": _short(nid), "error": ev.get("error", "")})
                    progress.message(f"  FAILED {family}: {_short(nid)}: {ev.get('error', '')}")
                elif not progress.tty:
                    show(True, f"{_short(nid)} ({ev.get('duration', 0.0):.1f} s)")
                else:
                    show()
    rc = proc.wait()
    elapsed = time.time() - t0
    log.seek(0)
    text = log.read()
    log.close()
    show(True, f"done in {elapsed:.0f} s, {len(skipped)} skipped, {len(failed)} failed"
               + (f", pytest exit code {rc}" if rc not in (0,) else ""))
    return {"family": family, "returncode": rc, "elapsed_s": elapsed, "scale": scale, "threads": threads,
            "files": FAMILIES[family], "skipped": skipped, "failed": failed, "command": cmd[1:],
            "log_tail": text[-4000:] if (rc != 0 or failed) else ""}


# ---------------------------------------------------------------------------------------------------
# Tables

def _bandwidth(doc: Dict[str, Any]) -> Dict[str, Any]:
    return (doc.get("machine_info") or {}).get("fastemb_bench", {}).get("bandwidth", {}) or {}


def build_table(docs: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (family, kernel, shape) from pytest-benchmark JSON documents keyed by family.

    Each row: family, kernel, shape, fastemb (median seconds or None), fastemb_impl, peers
    ({label: {median_s, ratio (peer time / fastemb time: > 1 means fastemb is faster), estimated, role,
    impl}}), best_peer / best_peer_s / speedup (over the fastest competitor), limit_kind / limit_s /
    limit_fraction (limit_s / fastemb's median: 1.0 = at the physical limit). Benchmarks without
    ``extra_info["common"]`` are ignored.
    """
    rows: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    order: List[Tuple[str, str, str]] = []
    for family, doc in docs.items():
        bw = _bandwidth(doc)
        for b in doc.get("benchmarks", []):
            c = (b.get("extra_info") or {}).get("common")
            if not c:
                continue
            key = (c.get("family", family), c["kernel"], c["shape"])
            if key not in rows:
                rows[key] = {"family": key[0], "kernel": key[1], "shape": key[2], "fastemb": None,
                             "fastemb_impl": None, "peers": {}, "limit_kind": None, "limit_s": None}
                order.append(key)
            row = rows[key]
            med = float(b["stats"]["median"]) * float(c.get("work_factor", 1.0))
            if c["role"] == "fastemb":
                row["fastemb"] = med
                row["fastemb_impl"] = c.get("impl")
                row["fastemb_iqr_rel"] = (b["stats"]["iqr"] / b["stats"]["median"]) if b["stats"]["median"] else None
                limit_s, kind = c.get("limit_s"), c.get("limit_kind")
                if limit_s is None and kind in BANDWIDTH_LIMITS and c.get("bytes") and bw.get(BANDWIDTH_LIMITS[kind]):
                    limit_s = c["bytes"] / (bw[BANDWIDTH_LIMITS[kind]] * 1e9)
                if limit_s is not None:
                    row["limit_kind"], row["limit_s"] = kind, limit_s
            else:
                row["peers"][c["peer"]] = {"median_s": med, "estimated": float(c.get("work_factor", 1.0)) != 1.0,
                                           "role": c["role"], "impl": c.get("impl")}
    out = []
    for key in order:
        row = rows[key]
        fe = row["fastemb"]
        best, best_s = None, None
        for name, p in row["peers"].items():
            p["ratio"] = p["median_s"] / fe if fe else None
            if p["role"] == "peer" and (best_s is None or p["median_s"] < best_s):
                best, best_s = name, p["median_s"]
        row["best_peer"], row["best_peer_s"] = best, best_s
        row["speedup"] = best_s / fe if (fe and best_s) else None
        row["limit_fraction"] = row["limit_s"] / fe if (fe and row["limit_s"]) else None
        out.append(row)
    return out


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


TABLE_COLUMNS = ["kernel", "shape", "fastemb", "<peer columns: median (peer/fastemb)>", "best peer", "speed-up",
                 "limit", "% of limit"]


def family_table(rows: List[Dict[str, Any]], family: str) -> Tuple[List[str], List[List[str]]]:
    """Header and cells of one family's table (the console and markdown layouts share them)."""
    frows = [r for r in rows if r["family"] == family]
    peers: List[str] = []
    for r in frows:
        for name in r["peers"]:
            if name not in peers:
                peers.append(name)
    head = ["kernel", "shape", "fastemb"] + peers + ["best peer", "speed-up", "limit", "% of limit"]
    cells = []
    for r in frows:
        line = [r["kernel"], r["shape"], fmt_time(r["fastemb"])]
        for name in peers:
            p = r["peers"].get(name)
            if p is None:
                line.append("-")
            else:
                est = "~" if p["estimated"] else ""
                line.append(f"{est}{fmt_time(p['median_s'])} ({fmt_ratio(p['ratio'])})")
        line.append(r["best_peer"] or "-")
        line.append(fmt_ratio(r["speedup"]))
        line.append(f"{fmt_time(r['limit_s'])} {_limit_short(r['limit_kind'])}" if r["limit_s"] else "-")
        line.append(f"{100 * r['limit_fraction']:.0f}%" if r["limit_fraction"] else "-")
        cells.append(line)
    return head, cells


def _limit_short(kind: Optional[str]) -> str:
    return {"read bandwidth": "(read BW)", "write bandwidth": "(write BW)", "copy bandwidth": "(copy BW)"}.get(
        kind or "", f"({kind})" if kind else "")


def text_table(head: List[str], cells: List[List[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    sep = "  "
    lines = [sep.join(h.ljust(w) for h, w in zip(head, widths)), sep.join("-" * w for w in widths)]
    for c in cells:
        lines.append(sep.join(v.ljust(w) for v, w in zip(c, widths)))
    return "\n".join(line.rstrip() for line in lines)


def md_table(head: List[str], cells: List[List[str]]) -> str:
    esc = lambda v: v.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(v) for v in c) + " |" for c in cells]
    return "\n".join(lines)


LEGEND = ("Times are medians of one run. A peer cell is `median (peer time / fastemb time)`: > 1 means fastemb "
          "is faster; `~` marks a peer timed on a subset and extrapolated. speed-up = the fastest competitor's "
          "median / fastemb's (fastemb variants and yardsticks such as one read of x are not competitors). "
          "limit = the physical lower bound of one call: bytes / the memory bandwidth (the best of the probes "
          "at the start and the end of the family's run), or the instruction limit named; % of limit = limit / "
          "fastemb's median (over 100%: the data fit in a cache, as at --quick sizes).")


# ---------------------------------------------------------------------------------------------------
# Machine block

def _supported_isas() -> List[str]:
    """The CPU kernel variants this build and CPU can run (empty without the native module)."""
    from . import info

    return list(info().get("supported_isas") or [])


def machine_summary(result: Dict[str, Any]) -> Dict[str, Any]:
    """CPU, fastemb build, threads and the best bandwidth measured across the families' sessions."""
    fams = result.get("families", {})
    mi: Dict[str, Any] = {}
    bw_best: Dict[str, float] = {}
    bw_start: Dict[str, float] = {}
    for fam in fams.values():
        doc = fam.get("pytest_benchmark") or {}
        fb = (doc.get("machine_info") or {}).get("fastemb_bench")
        if not fb:
            continue
        if not mi:
            mi = dict(fb)
            mi["python"] = (doc.get("machine_info") or {}).get("python_version")
        for k in ("read", "write", "copy"):
            v = fb.get("bandwidth", {}).get(f"{k}_gbs")
            if v:
                bw_best[k] = max(bw_best.get(k, 0.0), v)
            v0 = fb.get("bandwidth", {}).get(f"{k}_gbs_start")
            if v0 and k not in bw_start:
                bw_start[k] = v0
    mi.pop("bandwidth", None)
    mi["bandwidth_gbs"] = bw_best
    mi["bandwidth_start_gbs"] = bw_start
    mi["peers"] = result.get("peers", {})
    return mi


def machine_lines(result: Dict[str, Any]) -> List[Tuple[str, str]]:
    m = machine_summary(result)
    bw, bw0 = m.get("bandwidth_gbs", {}), m.get("bandwidth_start_gbs", {})
    bwtext = ("; ".join(f"{k} {bw0.get(k, v):.1f} GB/s at start (best {v:.1f})" for k, v in bw.items())
              + " (limits use the best)") if bw else "-"
    peers = m.get("peers", {})
    have = ", ".join(f"{k} {v}" for k, v in peers.items() if v) or "none"
    miss = ", ".join(k for k, v in peers.items() if not v) or "none"
    return [
        ("CPU", f"{m.get('cpu_model', '?')} ({m.get('cpus_usable', '?')} usable of {m.get('cpu_count', '?')} cores)"),
        ("fastemb", f"{m.get('fastemb_version', '?')}, backend {m.get('fastemb_backend', '?')}, ISA "
                    f"{m.get('fastemb_isa', '?')}{' (forced)' if m.get('fastemb_forced_isa') else ''} (supported: "
                    f"{', '.join(m.get('fastemb_supported_isas') or [])}); kernels: "
                    + (", ".join(f"{k} {v}" for k, v in (m.get('fastemb_kernel_isas') or {}).items()) or "?")),
        ("threads", f"fastemb {m.get('fastemb_threads', '?')}, torch {m.get('torch_threads', '-')}"),
        ("memory bandwidth", bwtext),
        ("python / numpy / torch", f"{m.get('python', '?')} / {m.get('numpy_version', '?')} / "
                                   f"{m.get('torch_version') or '-'}"),
        ("transparent hugepages", str(m.get("transparent_hugepage", "?"))),
        ("peers installed", have),
        ("peers missing", miss),
        ("run", f"{result.get('created', '?')}, {'quick' if result.get('quick') else 'full'}, scales "
                + ", ".join(f"{f}={v.get('scale')}" for f, v in result.get("families", {}).items())),
    ]


def skipped_lines(result: Dict[str, Any]) -> List[str]:
    """Skip reasons, grouped (the missing peers are named here)."""
    out = []
    for fam, info in result.get("families", {}).items():
        counts: Dict[str, int] = {}
        for s in info.get("skipped", []):
            counts[s["reason"]] = counts.get(s["reason"], 0) + 1
        for reason, n in counts.items():
            out.append(f"{fam}: {reason} ({n} benchmark{'s' if n > 1 else ''} skipped)")
        for f in info.get("failed", []):
            out.append(f"{fam}: FAILED {f['test']}: {f['error']}")
        if info.get("error"):
            out.append(f"{fam}: {info['error']}")
        elif info.get("returncode") not in (0, None) and not info.get("failed"):
            out.append(f"{fam}: pytest exited with code {info.get('returncode')}")
    return out


def render_text(result: Dict[str, Any]) -> str:
    rows = result["table"]
    parts = ["Machine", "-------"]
    ml = machine_lines(result)
    w = max(len(k) for k, _ in ml)
    parts += [f"{k.ljust(w)}  {v}" for k, v in ml]
    for fam in result.get("families", {}):
        head, cells = family_table(rows, fam)
        parts += ["", f"{fam} ({result['families'][fam].get('elapsed_s', 0):.0f} s)", ""]
        parts.append(text_table(head, cells) if cells else "(no results)")
    sk = skipped_lines(result)
    if sk:
        parts += ["", "Skipped / missing:"] + [f"  {s}" for s in sk]
    parts += ["", LEGEND]
    return "\n".join(parts) + "\n"


def render_markdown(result: Dict[str, Any]) -> str:
    rows = result["table"]
    parts = [f"Command: `{result.get('command', 'python -m fastemb bench')}`", "", "#### Machine", "",
             "| | |", "|---|---|"]
    parts += [f"| {k} | {v} |" for k, v in machine_lines(result)]
    for fam in result.get("families", {}):
        head, cells = family_table(rows, fam)
        parts += ["", f"#### {fam}", "", md_table(head, cells) if cells else "(no results)"]
    sk = skipped_lines(result)
    if sk:
        parts += ["", "Skipped / missing:", ""] + [f"- {s}" for s in sk]
    parts += ["", LEGEND]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------
# Plot

def write_plot(result: Dict[str, Any], path: str) -> None:
    """PNG: speed-up over the best peer per (kernel, shape), a line at 1x, and a marker where fastemb
    would be at the physical limit (best peer's time / limit)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (or pip install '.[bench]' from the fastemb source checkout)") from e
    rows = [r for r in result["table"] if r.get("speedup")]
    if not rows:
        raise RuntimeError("--plot: no kernel has both a fastemb and a peer result")
    labels = [f"{r['family']}: {r['kernel']}\n{r['shape']} (vs {r['best_peer']})" for r in rows]
    ys = list(range(len(rows)))[::-1]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.6))
    colors = ["tab:green" if r["speedup"] >= 1 else "tab:red" for r in rows]
    ax.barh(ys, [r["speedup"] for r in rows], color=colors, height=0.6, label="fastemb speed-up over the best peer")
    lim = [(y, r["best_peer_s"] / r["limit_s"]) for y, r in zip(ys, rows) if r.get("limit_s")]
    if lim:
        ax.scatter([v for _, v in lim], [y for y, _ in lim], marker="|", s=300, color="black", zorder=3,
                   label="physical limit (best peer's time / limit)")
    for y, r in zip(ys, rows):
        ax.text(r["speedup"], y, f" {fmt_ratio(r['speedup'])}", va="center", fontsize=7)
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("speed-up (x, log scale; 1x = as fast as the best peer)")
    m = machine_summary(result)
    ax.set_title(f"fastemb {m.get('fastemb_version', '?')} ({m.get('fastemb_isa', '?')}, "
                 f"{m.get('fastemb_threads', '?')} threads) on {m.get('cpu_model', '?')}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Compare

def load_result(path: str) -> Dict[str, Any]:
    """A ``--json`` result, or a raw pytest-benchmark JSON of one suite (its table is built here)."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") == RESULT_FORMAT:
        return doc
    if "benchmarks" in doc:
        fams = {}
        for b in doc["benchmarks"]:
            c = (b.get("extra_info") or {}).get("common")
            if c:
                fams.setdefault(c["family"], None)
        fam = next(iter(fams), "unknown")
        return {"format": RESULT_FORMAT, "families": {fam: {"pytest_benchmark": doc, "skipped": []}},
                "table": build_table({fam: doc}), "peers": {}}
    raise ValueError(f"{path}: neither a 'python -m fastemb bench --json' result nor a pytest-benchmark JSON")


def compare(a: Dict[str, Any], b: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Per-kernel rows present in both: fastemb's median in A and B, B's speed relative to A (A time / B
    time: > 1 means B is faster), and each run's speed-up over its best peer."""
    rb = {(r["family"], r["kernel"], r["shape"]): r for r in b["table"]}
    head = ["family", "kernel", "shape", "fastemb A", "fastemb B", "A/B time", "speed-up A", "speed-up B"]
    cells = []
    for r in a["table"]:
        key = (r["family"], r["kernel"], r["shape"])
        s = rb.get(key)
        if s is None:
            continue
        ratio = r["fastemb"] / s["fastemb"] if (r["fastemb"] and s["fastemb"]) else None
        cells.append([r["family"], r["kernel"], r["shape"], fmt_time(r["fastemb"]), fmt_time(s["fastemb"]),
                      fmt_ratio(ratio), fmt_ratio(r["speedup"]), fmt_ratio(s["speedup"])])
    return head, cells


def _cmd_compare(paths: Sequence[str], out: Any) -> int:
    a, b = (load_result(p) for p in paths)
    head, cells = compare(a, b)
    for tag, r, p in (("A", a, paths[0]), ("B", b, paths[1])):
        m = machine_summary(r)
        out.write(f"{tag}: {p}: fastemb {m.get('fastemb_version', '?')} {m.get('fastemb_isa', '?')}, "
                  f"{m.get('cpu_model', '?')}, {m.get('fastemb_threads', '?')} threads, {r.get('created', '?')}\n")
    out.write("\n")
    if not cells:
        out.write("no (family, kernel, shape) in common: were both runs made at the same scale (--quick or not)?\n")
        return 1
    out.write(text_table(head, cells) + "\n\nA/B time > 1: B is faster. speed-up: over that run's best peer.\n")
    only_a = len(a["table"]) - len(cells)
    if only_a:
        out.write(f"({only_a} kernel/shape rows of A have no match in B)\n")
    return 0


# ---------------------------------------------------------------------------------------------------
# Command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", action="append", default=None,
                   help="family to run: " + "|".join(FAMILIES) + " (repeat or comma-separate; default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes (< 2 min on 2 cores); not for judging speed")
    p.add_argument("--scale", type=float, default=None, help="FASTEMB_BENCH_SCALE for every family (overrides --quick)")
    p.add_argument("--threads", type=int, default=None, help="threads for fastemb and every peer (default: usable cores)")
    p.add_argument("--isa", default=None,
                   help="pin fastemb's CPU kernel variant (FASTEMB_FORCE_ISA: serial, avx2, avx512; ARM64: neon, "
                        "dotprod); recorded in the results. On a CPU with a wider ISA this only approximates a CPU "
                        "that lacks it")
    p.add_argument("--json", metavar="PATH", help="write the raw pytest-benchmark JSON of each family plus the table")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the speed-ups (needs matplotlib)")
    p.add_argument("--markdown", metavar="PATH", help="write the machine block and the tables as markdown")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two --json results; runs nothing")
    p.add_argument("--from", dest="from_json", metavar="PATH",
                   help="print / write (--markdown, --plot) the tables of a saved --json result; runs nothing")
    p.add_argument("--bench-dir", default=None, help="where the bench_*.py suites are (default: found automatically)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")


def _families(arg: Optional[List[str]]) -> List[str]:
    if not arg:
        return list(FAMILIES)
    out = []
    for item in arg:
        for f in item.split(","):
            f = f.strip()
            if not f:
                continue
            if f not in FAMILIES:
                raise SystemExit(f"fastemb bench: unknown family {f!r} (choose from {', '.join(FAMILIES)})")
            if f not in out:
                out.append(f)
    return out


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(args: argparse.Namespace, argv_text: Optional[str] = None, out: Any = None) -> int:
    out = out or sys.stdout
    if args.compare:
        return _cmd_compare(args.compare, out)
    if args.plot:  # fail before a long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.stderr.write("fastemb bench: --plot needs matplotlib (pip install matplotlib, or pip install '.[bench]' from the fastemb source checkout)\n")
            return 2
    if args.from_json:
        result = load_result(args.from_json)
        out.write(render_text(result))
        return _write_outputs(result, args, out, rewrite_json=False)
    from importlib import util

    if util.find_spec("pytest") is None or util.find_spec("pytest_benchmark") is None:
        sys.stderr.write("fastemb bench: needs pytest and pytest-benchmark: pip install '.[bench]' (fastemb source checkout) "
                         "(or pip install pytest pytest-benchmark)\n")
        return 2
    bench_dir = args.bench_dir or find_bench_dir()
    if not bench_dir or not os.path.isdir(bench_dir):
        sys.stderr.write("fastemb bench: no benchmark suites found (neither a source checkout's bench/ nor "
                         "fastemb/_bench); pass --bench-dir\n")
        return 2
    families = _families(args.family)
    threads = args.threads or _usable_cores()
    if threads < 1:
        sys.stderr.write("fastemb bench: --threads must be >= 1\n")
        return 2
    progress = Progress(enabled=not args.no_progress)
    peers = peer_versions()
    missing = [k for k, v in peers.items() if not v]
    progress.message(f"fastemb bench: {', '.join(families)} from {bench_dir}, {threads} threads"
                     + (", quick" if args.quick else "") + (f"; peers not installed (skipped): {', '.join(missing)}"
                                                            if missing else ""))
    extra_env = {}
    if args.isa is not None:
        supported = _supported_isas()
        if args.isa not in supported:
            sys.stderr.write(f"fastemb bench: --isa {args.isa!r} is not available here (supported: "
                             f"{', '.join(supported) or 'none: the native module is not built'})\n")
            return 2
        extra_env["FASTEMB_FORCE_ISA"] = args.isa
    if args.quick and "FASTEMB_BENCH_BW_MB" not in os.environ:
        extra_env["FASTEMB_BENCH_BW_MB"] = str(QUICK_BW_MB)
    result: Dict[str, Any] = {
        "format": RESULT_FORMAT, "schema": SCHEMA_VERSION,
        "command": argv_text or "python -m fastemb bench",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": bool(args.quick), "threads": threads, "bench_dir": bench_dir, "peers": peers, "families": {},
        "isa": args.isa or os.environ.get("FASTEMB_FORCE_ISA") or None,
    }
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fastemb-bench-") as tmp:
        for fam in families:
            scale = args.scale if args.scale is not None else (QUICK_SCALE[fam] if args.quick else 1.0)
            path = os.path.join(tmp, f"{fam}.json")
            info = run_family(fam, bench_dir, scale, threads, path, progress, extra_env)
            doc = None
            if os.path.isfile(path):
                with open(path) as f:
                    doc = json.load(f)
            info["pytest_benchmark"] = doc
            result["families"][fam] = info
            if info.get("log_tail") and not doc:
                progress.message(f"--- {fam}: pytest output (tail) ---\n{info['log_tail']}")
    result["elapsed_s"] = time.time() - t0
    docs = {f: i["pytest_benchmark"] for f, i in result["families"].items() if i.get("pytest_benchmark")}
    result["table"] = build_table(docs)
    out.write(render_text(result))
    out.write(f"\nTotal {result['elapsed_s']:.0f} s.\n")
    rc = _write_outputs(result, args, out)
    bad = [f for f, i in result["families"].items() if i.get("returncode") not in (0,)]
    return rc or (1 if bad else 0)


def _write_outputs(result: Dict[str, Any], args: argparse.Namespace, out: Any, rewrite_json: bool = True) -> int:
    if args.json and rewrite_json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        out.write(f"JSON: {args.json}\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(result))
        out.write(f"Markdown: {args.markdown}\n")
    if args.plot:
        try:
            write_plot(result, args.plot)
            out.write(f"Plot: {args.plot}\n")
        except RuntimeError as e:
            sys.stderr.write(f"fastemb bench: {e}\n")
            return 2
    return 0


def cli(argv: Optional[Iterable[str]] = None) -> int:
    """Stand-alone entry (``python -m fastemb.bench_cli``); ``python -m fastemb bench`` is the usual one."""
    p = argparse.ArgumentParser(prog="python -m fastemb bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(p.parse_args(argv), "python -m fastemb bench " + " ".join(argv))


if __name__ == "__main__":
    sys.exit(cli())
