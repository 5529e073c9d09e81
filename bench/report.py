"""Turns a pytest-benchmark JSON of bench/bench_centroid.py into markdown tables.

    python bench/report.py bench-centroid.json            # prints the markdown
    python bench/report.py bench-centroid.json -o out.md  # also writes it

Every time is the median over the rounds of one run; every ratio compares two medians of the same
run (peer / fastemb: > 1 means fastemb is faster). GB/s counts the minimal bytes a call must move
(``extra_info["bytes"]``) over the median time; "% BW" divides that by the machine's bandwidth
measured in the same session (bench/conftest.py): read bandwidth for the forward, write
bandwidth for the backward (whose traffic is the [N, D] gradient it writes).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

FORWARD_PEERS = [
    ("fastemb_torch", "fastemb torch op"),
    ("index_add_div", "index_add_+div"),
    ("scatter_reduce_mean", "scatter_reduce mean"),
    ("segment_reduce", "segment_reduce"),
    ("np_add_at", "np.add.at"),
    ("read_x_sum0", "x.sum(0)"),
    ("read_x_flat", "x.sum()"),
]
BACKWARD_PEERS = [
    ("fastemb_native", "fastemb native_backward"),
    ("scatter_reduce_mean", "scatter_reduce mean bwd"),
    ("index_add_div", "index_add_+div bwd"),
]

# Targets from the issue.
FWD_VS_SCATTER_UNSORTED = 1.5  # forward >= 1.5x faster than scatter_reduce(mean), unsorted labels
FWD_VS_READ_SORTED = 1.3  # forward within 1.3x of one read of x, sorted labels
BWD_VS_SCATTER = 3.0  # backward >= 3x faster than scatter_reduce(mean)'s backward


def load(path):
    with open(path) as f:
        doc = json.load(f)
    rows = defaultdict(dict)  # (case, direction) -> peer -> benchmark
    order = []
    for b in doc["benchmarks"]:
        ei = b.get("extra_info", {})
        if "case" not in ei:
            continue
        key = (ei["case"], ei["direction"])
        if key not in rows:
            order.append(key)
        rows[key][ei["peer"]] = b
    return doc, rows, order


def med_ms(b):
    return b["stats"]["median"] * 1e3


def min_ms(b):
    return b["stats"]["min"] * 1e3


def fmt_ms(ms):
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_ratio(r):
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def gbs(b):
    return b["extra_info"]["bytes"] / b["stats"]["median"] / 1e9


def noise(b):
    s = b["stats"]
    return s["iqr"] / s["median"] if s["median"] else 0.0


def peer_cell(peers, name, base_ms):
    b = peers.get(name)
    if b is None:
        return "-"
    ms = med_ms(b)
    return f"{fmt_ms(ms)} ({fmt_ratio(ms / base_ms)})"


def machine_section(doc):
    mi = doc.get("machine_info", {})
    fb = mi.get("fastemb_bench", {})
    bw = fb.get("bandwidth", {})
    lines = ["| | |", "|---|---|"]
    lines.append(f"| CPU | {fb.get('cpu_model', mi.get('processor', '?'))}, {fb.get('cpus_usable', '?')} usable cores "
                 f"(os.cpu_count={fb.get('cpu_count', '?')}) |")
    lines.append(f"| fastemb | {fb.get('fastemb_version', '?')}, backend {fb.get('fastemb_backend', '?')}, "
                 f"ISA {fb.get('fastemb_isa', '?')} (supported: {', '.join(fb.get('fastemb_supported_isas', []))}), "
                 f"{fb.get('fastemb_threads', '?')} threads |")
    lines.append(f"| torch | {fb.get('torch_version', '?')}, {fb.get('torch_threads', '?')} threads |")
    lines.append(f"| numpy / python | {fb.get('numpy_version', '?')} / {mi.get('python_implementation', '')} "
                 f"{mi.get('python_version', '?')} |")
    if bw:
        def both(kind):
            s, e = bw.get(f"{kind}_gbs_start"), bw.get(f"{kind}_gbs_end")
            extra = f" (start {s:.1f}, end {e:.1f})" if s is not None and e is not None else ""
            return f"{bw[kind + '_gbs']:.1f} GB/s{extra}"
        lines.append(f"| measured bandwidth ({bw.get('buffer_bytes', 0) / 2**20:.0f} MiB float32, "
                     f"best of {bw.get('repeats', '?')}, {bw.get('threads', '?')} threads, {bw.get('method', '?')}) | "
                     f"read {both('read')}; write {both('write')}; copy {both('copy')}; "
                     f"numpy single-thread sum {bw.get('read_numpy_gbs', 0):.1f} GB/s |")
        lb, la = bw.get("loadavg_before"), bw.get("loadavg_after")
        if lb and la:
            lines.append(f"| load average (1/5/15 min) | before {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, "
                         f"after {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} |")
    lines.append(f"| transparent hugepages | {fb.get('transparent_hugepage', '?')} |")
    lines.append(f"| scale (FASTEMB_BENCH_SCALE) | {fb.get('scale', '?')} |")
    lines.append(f"| run | {doc.get('datetime', '?')}, commit {doc.get('commit_info', {}).get('id', '?')}"
                 f"{' (dirty)' if doc.get('commit_info', {}).get('dirty') else ''} |")
    return lines, bw


def forward_table(rows, order, bw):
    read_bw = bw.get("read_gbs")
    head = ["case", "fastemb ms", "GB/s", "% read BW", "IQR/med"] + [label for _, label in FORWARD_PEERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in order:
        case, direction = key
        if direction != "forward":
            continue
        peers = rows[key]
        fe = peers.get("fastemb")
        if fe is None:
            continue
        base = med_ms(fe)
        cells = [case, fmt_ms(base), f"{gbs(fe):.1f}",
                 f"{100 * gbs(fe) / read_bw:.0f}%" if read_bw else "-", f"{100 * noise(fe):.0f}%"]
        cells += [peer_cell(peers, name, base) for name, _ in FORWARD_PEERS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def backward_table(rows, order, bw):
    write_bw = bw.get("write_gbs")
    head = ["case", "fastemb ms", "fastemb path", "GB/s", "% write BW", "IQR/med"] + [l for _, l in BACKWARD_PEERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in order:
        case, direction = key
        if direction != "backward":
            continue
        peers = rows[key]
        fe = peers.get("fastemb")
        if fe is None:
            continue
        base = med_ms(fe)
        path = "torch op" if "torch op" in fe["extra_info"].get("impl", "") else "native_backward"
        cells = [case, fmt_ms(base), path, f"{gbs(fe):.1f}",
                 f"{100 * gbs(fe) / write_bw:.0f}%" if write_bw else "-", f"{100 * noise(fe):.0f}%"]
        cells += [peer_cell(peers, name, base) for name, _ in BACKWARD_PEERS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(rows, order, bw):
    """Rows: (target, case, variant, measured text (medians), required text, passed, same ratio from the
    fastest rounds (a cross-check on a noisy machine; pass/fail uses the medians))."""
    out = []
    read_bw = bw.get("read_gbs")
    for key in order:
        case, direction = key
        peers = rows[key]
        sorted_ = None
        for b in peers.values():
            sorted_ = b["extra_info"]["sorted"]
            break
        for variant in ("fastemb", "fastemb_torch"):
            fe = peers.get(variant)
            if fe is None:
                continue
            label = "numpy API" if variant == "fastemb" else "torch op"
            if direction == "backward":
                label = "torch op" if "torch op" in fe["extra_info"].get("impl", "") else "native_backward"
            t = med_ms(fe)
            if direction == "forward" and not sorted_ and "scatter_reduce_mean" in peers:
                r = med_ms(peers["scatter_reduce_mean"]) / t
                rmin = min_ms(peers["scatter_reduce_mean"]) / min_ms(fe)
                out.append(("fwd >= 1.5x faster than scatter_reduce mean (unsorted)", case, label,
                            f"{fmt_ratio(r)} faster", f">= {FWD_VS_SCATTER_UNSORTED}x", r >= FWD_VS_SCATTER_UNSORTED,
                            fmt_ratio(rmin)))
            if direction == "forward" and sorted_:
                if "read_x_sum0" in peers:
                    r = t / med_ms(peers["read_x_sum0"])
                    rmin = min_ms(fe) / min_ms(peers["read_x_sum0"])
                    out.append(("fwd within 1.3x of one read of x = torch x.sum(0) (sorted)", case, label,
                                f"{r:.2f}x the time of x.sum(0)", f"<= {FWD_VS_READ_SORTED}x", r <= FWD_VS_READ_SORTED,
                                f"{rmin:.2f}x"))
                if "read_x_flat" in peers:
                    r = t / med_ms(peers["read_x_flat"])
                    rmin = min_ms(fe) / min_ms(peers["read_x_flat"])
                    out.append(("(stricter, informative) fwd within 1.3x of torch x.sum() flat (sorted)", case, label,
                                f"{r:.2f}x the time of x.sum()", f"<= {FWD_VS_READ_SORTED}x", r <= FWD_VS_READ_SORTED,
                                f"{rmin:.2f}x"))
                if read_bw:
                    ideal_ms = fe["extra_info"]["n"] * fe["extra_info"]["d"] * 4 / (read_bw * 1e9) * 1e3
                    r = t / ideal_ms
                    out.append(("(stricter, informative) fwd within 1.3x of x's bytes / measured peak read BW "
                                "(sorted)", case, label,
                                f"{r:.2f}x ({fmt_ms(ideal_ms)} ms ideal)", f"<= {FWD_VS_READ_SORTED}x",
                                r <= FWD_VS_READ_SORTED, f"{min_ms(fe) / ideal_ms:.2f}x"))
            if direction == "backward" and "scatter_reduce_mean" in peers:
                r = med_ms(peers["scatter_reduce_mean"]) / t
                rmin = min_ms(peers["scatter_reduce_mean"]) / min_ms(fe)
                out.append(("bwd >= 3x faster than scatter_reduce mean's backward", case, label,
                            f"{fmt_ratio(r)} faster", f">= {BWD_VS_SCATTER}x", r >= BWD_VS_SCATTER, fmt_ratio(rmin)))
    return out


def render(path):
    doc, rows, order = load(path)
    mlines, bw = machine_section(doc)
    lines = ["### Machine", ""] + mlines + [""]
    lines += ["### Forward (reduce='mean', float32), median ms; peers as `ms (peer/fastemb)`", ""]
    lines += forward_table(rows, order, bw) + [""]
    lines += ["### Backward (grad_x of reduce='mean'), median ms; peers as `ms (peer/fastemb)`", ""]
    lines += backward_table(rows, order, bw) + [""]
    tgt = targets(rows, order, bw)
    lines += ["### Targets (pass/fail on medians; the min-based ratio is a cross-check)", "",
              "| target | case | fastemb | measured (medians) | required | result | same from min times |",
              "|---|---|---|---|---|---|---|"]
    for name, case, variant, measured, required, ok, from_min in tgt:
        lines.append(f"| {name} | {case} | {variant} | {measured} | {required} | {'PASS' if ok else '**MISS**'} "
                     f"| {from_min} |")
    lines.append("")
    core = [t for t in tgt if not t[0].startswith("(")]
    missed = [t for t in core if not t[5]]
    lines.append(f"Issue targets: {len(core) - len(missed)}/{len(core)} met"
                 + ("." if not missed else "; missed: " + "; ".join(f"{t[0]} on {t[1]} ({t[2]}: {t[3]})" for t in missed)
                    + "."))
    return "\n".join(lines) + "\n"


def run_cli(render_fn, doc, argv=None):
    """Command line shared by the report scripts: JSON in, markdown to stdout (and -o FILE)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("json", help="pytest-benchmark JSON (--benchmark-json=...)")
    ap.add_argument("-o", "--output", help="also write the markdown here")
    args = ap.parse_args(argv)
    md = render_fn(args.json)
    sys.stdout.write(md)
    if args.output:
        with open(args.output, "w") as f:
            f.write(md)


def main(argv=None):
    run_cli(render, __doc__, argv)


if __name__ == "__main__":
    main()
