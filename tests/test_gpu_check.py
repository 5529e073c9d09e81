"""bench/gpu_check.py (issue 8) in CI: its CPU self-test runs the case registry at tiny sizes on
CPU tensors (each kernel checked against the CPU result, timed with its peers), the target logic
and the report, and checks that the full GPU mode exits with a clear message where there is no
CUDA device. The GPU mode itself runs on the GPU machine (see the script's docstring)."""
import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("fastemb_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def test_self_test_passes(capsys):
    gc = _load()
    assert gc.main(["--self-test"]) == 0
    out = capsys.readouterr().out
    assert "gpu_check self-test passed" in out
    assert "| kernel | shape | time | peer |" in out


def test_targets_attach_to_the_right_rows():
    gc = _load()
    rows = [gc.Row("k", "s", time_s=1e-3, peer="a", peer_time_s=6e-3, bytes=10**6),
            gc.Row("k", "s", time_s=1e-3, peer="b", peer_time_s=2e-3, bytes=10**6)]
    gc.evaluate(rows, {0: gc.Target("speedup", 5.0, "a"), 1: gc.Target("bw", 0.6)}, copy_bw=1e9)
    assert rows[0].result == "pass" and rows[0].target == ">= 5x a"
    assert rows[1].result == "pass" and abs(rows[1].bw_fraction(1e9) - 1.0) < 1e-12
    gc.evaluate(rows, {1: gc.Target("bw", 0.6)}, copy_bw=3e9)  # 33% of the copy bandwidth
    assert rows[1].result == "FAIL"
