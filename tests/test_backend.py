"""Backend machinery: info, ISA forcing, thread count, NumPy fallback, the command line."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastemb
from fastemb import _backend

needs_native = pytest.mark.skipif(_backend.native() is None, reason="native module not in use")


def run_python(code, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_info_has_the_promised_fields():
    info = fastemb.info()
    for key in ("version", "backend", "native_module", "isa", "num_threads", "cuda_module", "cuda_devices"):
        assert key in info
    assert info["version"] == fastemb.__version__
    assert info["backend"] in ("native", "numpy")
    if info["backend"] == "native":
        assert set(info["kernel_isas"]) == {"centroid", "binary", "ternary", "graph", "multivector"}
        # A sub-variant (ternary avx2_vnni, dotprod_i8mm) starts with its ISA's name.
        assert all(v.split("_")[0] in info["supported_isas"] for v in info["kernel_isas"].values())
    else:
        assert info["kernel_isas"] == {}


def test_cli_info_json():
    res = subprocess.run([sys.executable, "-m", "fastemb", "info", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["version"] == fastemb.__version__


def test_cli_demo_small():
    res = subprocess.run([sys.executable, "-m", "fastemb", "demo", "--rows", "20000", "--groups", "50"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "demo: OK" in res.stdout


def test_backend_numpy_env_forces_fallback():
    res = run_python("import fastemb; print(fastemb.info()['backend'])", FASTEMB_BACKEND="numpy")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "numpy"


def test_bad_backend_env_is_an_error():
    res = run_python("import fastemb", FASTEMB_BACKEND="gpu-magic")
    assert res.returncode != 0 and "FASTEMB_BACKEND" in res.stderr


@needs_native
def test_force_isa_env():
    for isa in _backend.native().supported_isas():
        res = run_python("import fastemb; print(fastemb.info()['isa'])", FASTEMB_FORCE_ISA=isa)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == isa
    res = run_python("import fastemb", FASTEMB_FORCE_ISA="sse9")
    assert res.returncode != 0 and "FASTEMB_FORCE_ISA" in res.stderr


@needs_native
def test_num_threads_env_and_setter():
    res = run_python("import fastemb; print(fastemb.get_num_threads())", FASTEMB_NUM_THREADS="3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "3"
    before = fastemb.get_num_threads()
    try:
        fastemb.set_num_threads(1)
        assert fastemb.get_num_threads() == 1
    finally:
        fastemb.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastemb.set_num_threads(0)
    with pytest.raises(TypeError):
        fastemb.set_num_threads(2.5)


@pytest.mark.parametrize("value", ["abc", "0", "-2", "3 ", "2.5"])
def test_invalid_num_threads_env_warns(value):
    code = ("import warnings\nwarnings.simplefilter('error', RuntimeWarning)\n"
            "try:\n    import fastemb\nexcept RuntimeWarning as w:\n    print('WARNED', w)\n")
    res = run_python(code, FASTEMB_NUM_THREADS=value)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("WARNED"), res.stdout
    assert f"FASTEMB_NUM_THREADS={value!r}" in res.stdout and "ignored" in res.stdout
    # a warning, not an error: import still works and uses the default thread count
    res = run_python("import fastemb; print(fastemb.get_num_threads())", FASTEMB_NUM_THREADS=value)
    assert res.returncode == 0 and "FASTEMB_NUM_THREADS" in res.stderr, res.stderr


@pytest.mark.parametrize("value", ["2", " 2", "+2", ""])
def test_valid_num_threads_env_does_not_warn(value):
    res = run_python("import warnings\nwarnings.simplefilter('error')\nimport fastemb\nprint(fastemb.get_num_threads())",
                     FASTEMB_NUM_THREADS=value)
    assert res.returncode == 0, res.stderr
    if value and _backend.native() is not None:
        assert res.stdout.strip() == "2"


def test_fastemb_torch_without_torch_gives_an_install_hint():
    code = ("import sys\nsys.modules['torch'] = None  # as if torch were not installed\n"
            "import fastemb\n"
            "try:\n    import fastemb.torch\n"
            "except ImportError as e:\n"
            "    print(type(e).__name__, '|', e.name, '|', type(e.__cause__).__name__, '|', e)\n")
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    kind, name, cause, msg = res.stdout.strip().split(" | ", 3)
    assert kind == "ModuleNotFoundError" and name == "torch" and cause == "ModuleNotFoundError"
    assert "pip install torch" in msg and "[torch]" in msg


@needs_native
def test_concurrent_calls_match_serial_and_survive_thread_count_changes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    labels = rng.integers(0, 300, 20000)
    expected = fastemb.centroid_aggregate(x, labels, num_groups=300, normalize="both")
    errors = []
    before = fastemb.get_num_threads()

    def worker():
        try:
            for _ in range(10):
                got = fastemb.centroid_aggregate(x, labels, num_groups=300, normalize="both")
                np.testing.assert_array_equal(got, expected)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for n in (1, 3, 2, 1):
        fastemb.set_num_threads(n)
    for t in threads:
        t.join()
    fastemb.set_num_threads(before)
    assert not errors, errors[0]


def test_fork_after_threads_run():
    """The pool's workers do not survive fork(); the child must rebuild them, not hang."""
    code = (
        "import os, numpy as np, fastemb\n"
        "x = np.random.default_rng(0).standard_normal((50000, 16)).astype(np.float32)\n"
        "l = np.arange(50000) % 7\n"
        "a = fastemb.centroid_aggregate(x, l, num_groups=7)\n"
        "codes = []\n"
        "for _ in range(20):\n"
        "    a = fastemb.centroid_aggregate(x, l, num_groups=7)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        b = fastemb.centroid_aggregate(x, l, num_groups=7)\n"
        "        os._exit(0 if np.array_equal(a, b) else 3)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    codes.append(os.waitstatus_to_exitcode(status))\n"
        "print(max(codes))\n"
    )
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"
