"""``python -m fastemb bench``: the common extra_info schema, the table builder, --compare, --markdown,
--plot, and one quick run of every family on tiny sizes (not timed, not judged by speed)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from fastemb import bench_cli
from fastemb.__main__ import main as fastemb_main

HEAD_START = ["kernel", "shape", "fastemb"]
HEAD_END = ["best peer", "speed-up", "limit", "% of limit"]
ROW_KEYS = {"family", "kernel", "shape", "fastemb", "fastemb_impl", "peers", "best_peer", "best_peer_s", "speedup",
            "limit_kind", "limit_s", "limit_fraction"}
COMMON_KEYS = {"schema", "family", "kernel", "shape", "peer", "role", "impl", "bytes", "limit_kind", "limit_s",
               "work_factor"}


class FakeBenchmark:
    def __init__(self):
        self.extra_info = {}


def _bench(family, kernel, shape, peer, median, iqr=0.0, **kw):
    fb = FakeBenchmark()
    bench_cli.record(fb, family=family, kernel=kernel, shape=shape, peer=peer, **kw)
    return {"name": f"{kernel}-{shape}-{peer}", "extra_info": fb.extra_info,
            "stats": {"median": median, "iqr": iqr, "min": median, "mean": median}}


def _doc(benchmarks, read_gbs=10.0, write_gbs=5.0, copy_gbs=8.0):
    return {"benchmarks": benchmarks, "machine_info": {"python_version": "3.x", "fastemb_bench": {
        "cpu_model": "Test CPU", "cpus_usable": 2, "cpu_count": 2, "fastemb_version": "0.0", "fastemb_backend": "native",
        "fastemb_isa": "avx2", "fastemb_supported_isas": ["serial", "avx2"], "fastemb_threads": 2,
        "bandwidth": {"read_gbs": read_gbs, "write_gbs": write_gbs, "copy_gbs": copy_gbs, "read_gbs_start": read_gbs}}}}


def _result(docs, skipped=()):
    return {"format": bench_cli.RESULT_FORMAT, "command": "python -m fastemb bench (synthetic)", "created": "now",
            "quick": True, "peers": {"torch": "2.0", "faiss-cpu": None},
            "families": {f: {"pytest_benchmark": d, "skipped": list(skipped), "failed": [], "returncode": 0,
                             "scale": 0.01, "elapsed_s": 1.0} for f, d in docs.items()},
            "table": bench_cli.build_table(docs)}


SYNTH = _doc([
    _bench("centroid", "mean forward", "100x8", "fastemb", 0.002, nbytes=10_000_000, limit_kind="read bandwidth"),
    _bench("centroid", "mean forward", "100x8", "torch scatter", 0.004),
    _bench("centroid", "mean forward", "100x8", "numpy add.at", 0.100),
    _bench("centroid", "mean forward", "100x8", "x.sum()", 0.001, reference=True),
    _bench("centroid", "mean forward", "100x8", "fastemb op", 0.0005),
    _bench("centroid", "mean backward", "100x8", "fastemb", 0.010, limit_kind="popcount", limit_s=0.005),
    _bench("centroid", "mean backward", "100x8", "faiss", 0.001, work_factor=4.0),
])


# ---------------------------------------------------------------------------------------------------
# Schema and table builder (synthetic JSON)

def test_record_schema_and_roles():
    fb = FakeBenchmark()
    c = bench_cli.record(fb, family="binary", kernel="k", shape="s", peer="fastemb", nbytes=12.0,
                         limit_kind="read bandwidth")
    assert set(c) == COMMON_KEYS and fb.extra_info["common"] is c
    assert c["role"] == "fastemb" and c["bytes"] == 12 and c["work_factor"] == 1.0
    roles = {p: bench_cli.record(FakeBenchmark(), family="f", kernel="k", shape="s", peer=p, reference=ref)["role"]
             for p, ref in (("fastemb native", False), ("faiss", False), ("x.sum()", True))}
    assert roles == {"fastemb native": "fastemb-variant", "faiss": "peer", "x.sum()": "reference"}


@pytest.mark.parametrize("kw, match", [
    (dict(kernel=""), "kernel"),
    (dict(peer=None), "peer"),
    (dict(limit_kind="read bandwidth"), "nbytes"),
    (dict(work_factor=0.0), "work_factor"),
    (dict(work_factor=float("nan")), "work_factor"),
])
def test_record_rejects_bad_arguments(kw, match):
    args = dict(family="f", kernel="k", shape="s", peer="fastemb")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        bench_cli.record(FakeBenchmark(), **args)


def test_build_table_ratios_best_peer_and_limits():
    rows = bench_cli.build_table({"centroid": SYNTH})
    assert [r["kernel"] for r in rows] == ["mean forward", "mean backward"]
    fwd, bwd = rows
    assert ROW_KEYS <= set(fwd)
    assert fwd["fastemb"] == pytest.approx(0.002)
    assert fwd["peers"]["torch scatter"]["ratio"] == pytest.approx(2.0)
    assert fwd["peers"]["numpy add.at"]["ratio"] == pytest.approx(50.0)
    # the yardstick (x.sum()) and the fastemb variant are faster but never "the best peer"
    assert fwd["best_peer"] == "torch scatter" and fwd["speedup"] == pytest.approx(2.0)
    assert fwd["peers"]["x.sum()"]["role"] == "reference"
    # limit = bytes / read bandwidth = 1e7 / 10e9 = 1 ms; fraction = 1 ms / 2 ms
    assert fwd["limit_s"] == pytest.approx(1e-3) and fwd["limit_fraction"] == pytest.approx(0.5)
    # explicit instruction limit; a subset peer extrapolated by work_factor (0.001 x 4) and marked
    assert bwd["limit_kind"] == "popcount" and bwd["limit_fraction"] == pytest.approx(0.5)
    assert bwd["peers"]["faiss"]["median_s"] == pytest.approx(0.004) and bwd["peers"]["faiss"]["estimated"]
    assert bwd["speedup"] == pytest.approx(0.4)


def test_build_table_ignores_benchmarks_without_schema_and_rows_without_fastemb():
    doc = _doc([{"name": "old", "extra_info": {"case": "x"}, "stats": {"median": 1.0, "iqr": 0.0}},
                _bench("graph", "k", "s", "scipy", 0.5)])
    rows = bench_cli.build_table({"graph": doc})
    assert len(rows) == 1 and rows[0]["fastemb"] is None and rows[0]["speedup"] is None
    assert rows[0]["peers"]["scipy"]["ratio"] is None
    head, cells = bench_cli.family_table(rows, "graph")
    assert cells[0][2] == "-" and cells[0][-2:] == ["-", "-"]


def test_text_and_markdown_tables_have_the_columns():
    result = _result({"centroid": SYNTH}, skipped=[{"test": "t[faiss]", "reason": "faiss-cpu is not installed"}] * 2)
    head, cells = bench_cli.family_table(result["table"], "centroid")
    assert head[:3] == HEAD_START and head[-4:] == HEAD_END
    assert {"torch scatter", "numpy add.at", "x.sum()", "fastemb op", "faiss"} <= set(head)
    assert len(cells) == 2 and all(len(c) == len(head) for c in cells)
    text = bench_cli.render_text(result)
    assert "Test CPU" in text and "ISA avx2" in text and "read 10.0 GB/s" in text
    header = next(line for line in text.splitlines() if line.startswith("kernel"))
    assert header.split()[:3] == HEAD_START and header.endswith("% of limit")
    assert "2.00x" in text and "~4 ms (0.40x)" in text and "50%" in text
    assert "faiss-cpu is not installed (2 benchmarks skipped)" in text
    assert re.search(r"^peers missing +faiss-cpu$", text, re.M)
    md = bench_cli.render_markdown(result)
    assert "| " + " | ".join(head) + " |" in md
    assert "`python -m fastemb bench (synthetic)`" in md and "| CPU | Test CPU" in md


def test_compare_two_results(tmp_path, capsys):
    slow = _doc([_bench("binary", "top-k", "s", "fastemb", 0.004), _bench("binary", "top-k", "s", "faiss", 0.008),
                 _bench("binary", "scan", "s1", "fastemb", 0.001)])
    fast = _doc([_bench("binary", "top-k", "s", "fastemb", 0.002), _bench("binary", "top-k", "s", "faiss", 0.008),
                 _bench("binary", "other", "s", "fastemb", 0.001)])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result({"binary": slow})))
    b.write_text(json.dumps(fast))  # a raw pytest-benchmark JSON is accepted too
    head, cells = bench_cli.compare(bench_cli.load_result(str(a)), bench_cli.load_result(str(b)))
    assert head == ["family", "kernel", "shape", "fastemb A", "fastemb B", "A/B time", "speed-up A", "speed-up B"]
    assert cells == [["binary", "top-k", "s", "4 ms", "2 ms", "2.00x", "2.00x", "4.00x"]]
    assert fastemb_main(["bench", "--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "2.00x" in out and "1 kernel/shape rows of A have no match in B" in out
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_result({"binary": _doc([_bench("binary", "x", "y", "fastemb", 1.0)])})))
    assert fastemb_main(["bench", "--compare", str(a), str(c)]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="neither"):
        bench_cli.load_result(str(bad))


def test_unknown_family_is_an_error():
    with pytest.raises(SystemExit, match="unknown family 'nope'"):
        bench_cli._families(["centroid,nope"])
    assert bench_cli._families(["binary,centroid", "binary"]) == ["binary", "centroid"]
    assert bench_cli._families(None) == list(bench_cli.FAMILIES)


def test_isa_flag_rejects_what_the_build_or_cpu_lacks(capsys):
    assert fastemb_main(["bench", "--isa", "sse9", "--family", "centroid", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--isa 'sse9' is not available here" in err and "supported:" in err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match="needs matplotlib"):
        bench_cli.write_plot(_result({"centroid": SYNTH}), str(tmp_path / "x.png"))


def test_bench_suites_are_found():
    d = bench_cli.find_bench_dir()
    assert d is not None
    for files in bench_cli.FAMILIES.values():
        for f in files:
            assert os.path.isfile(os.path.join(d, f)), f


# ---------------------------------------------------------------------------------------------------
# One quick run of every family, tiny sizes (correct columns and keys; the timings are not judged)

TINY_ENV = {"FASTEMB_BENCH_BW_MB": "32", "FASTEMB_BENCH_ROUNDS": "3", "FASTEMB_BENCH_SCAN_ROUNDS": "3",
            "FASTEMB_BENCH_ADD_AT_ROUNDS": "1", "FASTEMB_BENCH_GRAPH_ROUNDS": "1", "FASTEMB_BENCH_SLOW_ROUNDS": "1"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("pytest_benchmark")
    tmp = tmp_path_factory.mktemp("bench")
    js, md = tmp / "run.json", tmp / "run.md"
    env = dict(os.environ, **TINY_ENV)
    cmd = [sys.executable, "-m", "fastemb", "bench", "--quick", "--scale", "0.002", "--threads", "2",
           "--json", str(js), "--markdown", str(md)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p, json.loads(js.read_text()), md.read_text(), js


def test_quick_run_json(quick_run):
    _, result, _, _ = quick_run
    assert result["format"] == bench_cli.RESULT_FORMAT and result["quick"] is True
    assert result["isa"] == (os.environ.get("FASTEMB_FORCE_ISA") or None)
    mi = result["families"]["centroid"]["pytest_benchmark"]["machine_info"]["fastemb_bench"]
    assert set(mi["fastemb_kernel_isas"]) == set(bench_cli.FAMILIES) or mi["fastemb_backend"] != "native"
    assert set(result["families"]) == set(bench_cli.FAMILIES)
    assert set(result["peers"]) == {d for d, _ in bench_cli.PEER_PACKAGES}
    for fam, info in result["families"].items():
        assert info["returncode"] == 0 and info["scale"] == 0.002 and not info["failed"], fam
        doc = info["pytest_benchmark"]
        bw = doc["machine_info"]["fastemb_bench"]["bandwidth"]
        assert bw["read_gbs"] > 0 and bw["write_gbs"] > 0 and bw["copy_gbs"] > 0
        assert doc["benchmarks"], fam
        for b in doc["benchmarks"]:  # every benchmark records the common schema
            c = b["extra_info"]["common"]
            assert set(c) == COMMON_KEYS and c["family"] == fam, b["name"]
            assert c["role"] in bench_cli.ROLES
    rows = result["table"]
    assert {r["family"] for r in rows} == set(bench_cli.FAMILIES)
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["fastemb"] is not None and r["fastemb"] > 0, r
        assert r["limit_s"] is not None and r["limit_s"] > 0 and r["limit_fraction"] > 0, r
        for p in r["peers"].values():
            assert p["median_s"] > 0 and p["ratio"] == pytest.approx(p["median_s"] / r["fastemb"])


def test_quick_run_table_and_progress(quick_run):
    p, result, md, _ = quick_run
    out = p.stdout
    assert out.startswith("Machine") and "memory bandwidth" in out and "ISA" in out and "kernels:" in out
    for fam in bench_cli.FAMILIES:
        head, cells = bench_cli.family_table(result["table"], fam)
        assert head[:3] == HEAD_START and head[-4:] == HEAD_END and cells
        assert f"\n{fam} (" in out
        assert f"#### {fam}" in md
        assert "| " + " | ".join(head) + " |" in md
    # progress went to stderr, one line per benchmark when not on a terminal
    assert "[centroid " in p.stderr and "done in" in p.stderr
    missing = [k for k, v in result["peers"].items() if not v]
    headers = [x for x in out.splitlines() if x.startswith("kernel")]
    assert len(headers) == len(bench_cli.FAMILIES)
    assert all(h.split()[:3] == HEAD_START and h.endswith("% of limit") for h in headers)
    line = next(x for x in out.splitlines() if x.startswith("peers missing"))
    assert line.split(None, 2)[2] == (", ".join(missing) or "none")


def test_quick_run_from_json_plot(quick_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, _, js = quick_run
    png = tmp_path / "s.png"
    buf = io.StringIO()
    args = _parse(["--from", str(js), "--plot", str(png)])
    assert bench_cli.main(args, out=buf) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Plot:" in buf.getvalue() and "best peer" in buf.getvalue()


def _parse(argv):
    import argparse

    ap = argparse.ArgumentParser()
    bench_cli.add_arguments(ap)
    return ap.parse_args(argv)
