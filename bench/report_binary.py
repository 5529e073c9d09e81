"""Turns a pytest-benchmark JSON of bench/bench_binary.py into markdown tables.

    python bench/report_binary.py bench-binary.json            # prints the markdown
    python bench/report_binary.py bench-binary.json -o out.md  # also writes it

Times are medians over the rounds of one run. Peers timed on a subset of the corpus (or of the
queries) are extrapolated per pair to the full case: est. ms = median x pairs_full / pairs; their
ratios compare per-pair rates and are marked "(est.)". "% popcnt limit" divides pairs/s by the
spec's xor+vpopcntq limit (141 GB/s of code bytes per core, x threads; not measured in the run).
The single-query scan is compared with the bandwidth floor: corpus bytes / the read bandwidth
that bench/conftest.py measured in the same session.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import fmt_ms, fmt_ratio, machine_section, run_cli  # noqa: E402

HAMMING_VS_FAISS = 2.0  # Hamming top-k >= 2x faster than faiss IndexBinaryFlat
SDC2_VS_FAISS_1024 = 1.0  # SDC bits=2 on 512 dims no slower than faiss Hamming on 1024 bits
SCAN_VS_FLOOR = 1.5  # single-query scan within 1.5x of the bandwidth floor


def load(path):
    with open(path) as f:
        doc = json.load(f)
    rows, order = defaultdict(dict), []
    for b in doc["benchmarks"]:
        ei = b.get("extra_info", {})
        if "case" not in ei:
            continue
        if ei["case"] not in rows:
            order.append(ei["case"])
        rows[ei["case"]][ei["peer"]] = b
    return doc, rows, order


def est_ms(b, stat="median"):
    ei = b["extra_info"]
    return b["stats"][stat] * 1e3 * ei["pairs_full"] / ei["pairs"]


def pairs_per_s(b):
    return b["extra_info"]["pairs"] / b["stats"]["median"]


def case_table(case, peers, read_gbs):
    fe = peers.get("fastemb")
    base = est_ms(fe) if fe else None
    lines = ["| peer | what is timed | timed pairs | median ms | est. full-size ms | G pairs/s | "
             "% popcnt limit | GB/s of codes (1 query) | vs fastemb (peer/fastemb time) | IQR/med | check |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in peers.items():
        ei = b["extra_info"]
        st = b["stats"]
        pps = pairs_per_s(b)
        timed = f"{ei['timed_nq']} x {ei['timed_nd']}" + (" (subset)" if ei["subset"] else "")
        ratio = "-" if name == "fastemb" or base is None else \
            fmt_ratio(est_ms(b) / base) + (" (est.)" if ei["subset"] else "")
        gb = ei["bytes"] / st["median"] / 1e9
        lines.append(f"| {name} | {ei['impl']} | {timed} | {fmt_ms(st['median'] * 1e3)} | {fmt_ms(est_ms(b))} | "
                     f"{pps / 1e9:.3f} | {100 * pps / ei['popcount_limit_pairs_per_s']:.1f}% | "
                     f"{(f'{gb:.1f}' + (f' ({100 * gb / read_gbs:.0f}% of read BW)' if read_gbs else '')) if ei['nq'] == 1 else '-'} | "
                     f"{ratio} | {100 * (st['q3'] - st['q1']) / st['median']:.0f}% | {ei.get('verified') or '-'} |")
    return lines


def targets(rows, bw):
    out = []
    for case in ("hamming-256", "hamming-1024"):
        p = rows.get(case, {})
        if "fastemb" in p and "faiss" in p:
            r = est_ms(p["faiss"]) / est_ms(p["fastemb"])
            rmin = est_ms(p["faiss"], "min") / est_ms(p["fastemb"], "min")
            out.append((f"Hamming top-k >= {HAMMING_VS_FAISS:.0f}x faster than faiss IndexBinaryFlat", case,
                        f"faiss time / fastemb time = {fmt_ratio(r)}", r >= HAMMING_VS_FAISS, fmt_ratio(rmin)))
    p = rows.get("hamming-1024", {})
    if "fastemb_sdc2" in p and "faiss" in p:
        r = est_ms(p["fastemb_sdc2"]) / est_ms(p["faiss"])
        rmin = est_ms(p["fastemb_sdc2"], "min") / est_ms(p["faiss"], "min")
        out.append(("SDC bits=2, 512 dims no slower than faiss Hamming on 1024-bit codes", "hamming-1024",
                    f"{r:.2f}x faiss's time", r <= SDC2_VS_FAISS_1024, f"{rmin:.2f}x"))
    p = rows.get("scan1-1024", {})
    read = bw.get("read_gbs")
    if read:
        for name in ("fastemb", "fastemb_sdc2"):
            if name not in p:
                continue
            ei = p[name]["extra_info"]
            floor_ms = ei["timed_nd"] * ei["popcount_bytes_per_pair"] / (read * 1e9) * 1e3
            r = est_ms(p[name]) / floor_ms
            label = "single-query scan 1M x 1024-bit within 1.5x of the bandwidth floor"
            if name != "fastemb":
                label = "(informative) the same with SDC bits=2 x 512 dims"
            out.append((label, f"scan1-1024 {name}", f"{r:.2f}x ({fmt_ms(floor_ms)} ms floor at {read:.1f} GB/s)",
                        r <= SCAN_VS_FLOOR, f"{est_ms(p[name], 'min') / floor_ms:.2f}x"))
    return out


def render(path):
    doc, rows, order = load(path)
    mlines, bw = machine_section(doc)
    lines = ["### Machine", ""] + mlines + [""]
    for case in order:
        lines += [f"### {case}", ""] + case_table(case, rows[case], bw.get("read_gbs")) + [""]
    tgt = targets(rows, bw)
    lines += ["### Targets (pass/fail on medians; the min-based ratio is a cross-check)", "",
              "| target | case | measured (medians) | result | same from min times |", "|---|---|---|---|---|"]
    for name, case, measured, ok, from_min in tgt:
        lines.append(f"| {name} | {case} | {measured} | {'PASS' if ok else '**MISS**'} | {from_min} |")
    core = [t for t in tgt if not t[0].startswith("(")]
    missed = [t for t in core if not t[3]]
    lines += ["", f"Issue targets: {len(core) - len(missed)}/{len(core)} met"
              + ("." if not missed else "; missed: " + "; ".join(f"{t[0]} ({t[1]}: {t[2]})" for t in missed) + ".")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    run_cli(render, __doc__, argv)


if __name__ == "__main__":
    main()
