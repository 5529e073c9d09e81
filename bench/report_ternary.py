"""Turns a pytest-benchmark JSON of bench/bench_ternary.py into a markdown table.

    python bench/report_ternary.py bench-ternary.json [-o out.md]

Median ms per peer and case (same run), the 2-bit floor (packed bytes / read bandwidth measured by
bench/conftest.py in the same session), and the issue's targets (2 threads): GEMV >= 1.25x faster
than ggml TQ2_0, >= 6x faster than torch bf16, within 1.5x of the 2-bit floor; 8 rows no slower than
ggml TQ2_0; 128 rows within 1.3x of torch._int_mm. Targets use the fastemb_native time (the kernel)
and, in brackets, the public API's.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

PEERS = ["fastemb", "fastemb_native", "torch_fp32", "torch_bf16", "torch_int_mm", "ggml_tq2_0", "ggml_tq1_0"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("-o", "--out")
    a = ap.parse_args(argv)
    doc = json.load(open(a.json))
    bw = doc["machine_info"].get("fastemb_bench", {}).get("bandwidth", {})
    read_gbs = bw.get("read_gbs")
    t = defaultdict(dict)
    nbytes = {}
    for b in doc["benchmarks"]:
        e = b["extra_info"]
        case = (e["m"], e["k"], e["n"])
        t[case][e["peer"]] = b["stats"]["median"] * 1e3
        if e["peer"] == "fastemb_native":
            nbytes[case] = e["bytes"]
    lines = [f"Read bandwidth (best of start/end probes): {read_gbs:.1f} GB/s" if read_gbs else "", ""]
    lines.append("| M x K x N | " + " | ".join(PEERS) + " | 2-bit floor | targets |")
    lines.append("|---" * (len(PEERS) + 3) + "|")
    for case in sorted(t, key=lambda c: (c[0], c[1], c[2])):
        row = t[case]
        floor = nbytes.get(case, 0) / (read_gbs * 1e9) * 1e3 if read_gbs and case in nbytes else None
        cells = [f"{row[p]:.3f}" if p in row else "-" for p in PEERS]
        verdicts = []

        def check(name, ok):
            verdicts.append(f"{name} {'ok' if ok else 'MISS'}")

        f, api = row.get("fastemb_native"), row.get("fastemb")
        if f is not None:
            m = case[0]
            if m == 1:
                if "ggml_tq2_0" in row:
                    check(f"TQ2_0/{row['ggml_tq2_0'] / f:.2f}x(>=1.25)", row["ggml_tq2_0"] / f >= 1.25)
                if "torch_bf16" in row:
                    check(f"bf16/{row['torch_bf16'] / f:.1f}x(>=6)", row["torch_bf16"] / f >= 6)
                if floor:
                    check(f"floor {f / floor:.2f}x(<=1.5)", f / floor <= 1.5)
            elif m == 8 and "ggml_tq2_0" in row:
                check(f"TQ2_0/{row['ggml_tq2_0'] / f:.2f}x(>=1)", row["ggml_tq2_0"] / f >= 1.0)
            elif m >= 64 and "torch_int_mm" in row:
                check(f"vs int_mm {f / row['torch_int_mm']:.2f}x(<=1.3)", f / row["torch_int_mm"] <= 1.3)
            if api is not None:
                verdicts.append(f"[API {api / f:.2f}x native]")
        lines.append(f"| {case[0]}x{case[1]}x{case[2]} | " + " | ".join(cells) +
                     f" | {floor:.3f} | " if floor else " | - | ")
        lines[-1] += "; ".join(verdicts) + " |"
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
