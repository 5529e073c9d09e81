"""Huge sizes (issue 7, "Hardening"): index arithmetic is 64-bit where N x D passes 2^31.

Each test plants known rows *past* the 2^31-th element (or byte) of an input that is otherwise
zeros (``np.zeros`` maps the kernel-shared zero page lazily, so reading it costs address space, not
resident memory) and checks that the kernels find them: 32-bit offsets would wrap and read other
rows (or crash). Opt-in: ``FASTEMB_TEST_HUGE=1`` (each test also needs enough MemAvailable in
/proc/meminfo and the native kernels: the NumPy fallback does no offset arithmetic of its own).

    FASTEMB_TEST_HUGE=1 python -m pytest -q tests/test_huge.py
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import binary as _binary
from fastemb import ternary as _ternary
from fastemb.centroid import native_forward

GIB = 1 << 30
ENABLED = os.environ.get("FASTEMB_TEST_HUGE") == "1"


def mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def needs(resident_bytes: int):
    """Skip unless opted in, the native module is loaded and MemAvailable covers the resident need."""
    avail = mem_available()
    return [
        pytest.mark.slow,
        pytest.mark.skipif(not ENABLED, reason="huge-size test (> 2^31 elements or bytes, ~10-60 s): opt in with "
                                               "FASTEMB_TEST_HUGE=1"),
        pytest.mark.skipif(_backend.native() is None, reason="checks the native kernels' 64-bit offsets"),
        pytest.mark.skipif(avail < resident_bytes + GIB,
                           reason=f"needs {(resident_bytes + GIB) / GIB:.1f} GiB MemAvailable, "
                                  f"have {avail / GIB:.1f} GiB"),
    ]


def _apply(marks):
    def deco(fn):
        for m in marks:
            fn = m(fn)
        return fn
    return deco


@_apply(needs(int(0.1 * GIB)))
def test_sdc_topk_and_scores_past_2_31_bytes_of_codes():
    nbytes = 256                      # 2048-bit 1-plane codes
    nd = (1 << 31) // nbytes + 4096   # 2^31 + 1 MiB bytes of corpus
    d = np.zeros((nd, 1, nbytes), np.uint8)
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, nbytes, dtype=np.uint8)
    pattern[0] = 0xFF                 # not all-zero
    near = pattern.copy()
    near[5] ^= 0x01                   # one bit off: second best
    i_last = nd - 1
    i_near = (1 << 31) // nbytes + 3  # first byte past 2^31
    d[i_last, 0] = pattern
    d[i_near, 0] = near
    q = pattern.reshape(1, 1, nbytes).copy()
    dim = 8 * nbytes
    pop = int(np.unpackbits(pattern).sum())
    C = _backend.native()
    for isa in _backend.native_isas():
        scores, ids = _binary.native_topk(C, q, d, 3, dim, isa=isa)
        assert ids[0].tolist() == [i_last, i_near, 0], isa
        assert scores[0].tolist() == [dim, dim - 2, dim - 2 * pop], isa
    ham = fastemb.hamming(q, d)
    assert ham.shape == (1, nd)
    assert ham[0, i_last] == 0 and ham[0, i_near] == 1 and ham[0, 0] == pop and ham[0, i_near - 1] == pop
    s = fastemb.sdc_scores(q, d)
    assert s[0, i_last] == dim and s[0, i_near] == dim - 2


@_apply(needs(int(0.2 * GIB)))
def test_centroid_past_2_31_elements():
    d = 2048
    n = (1 << 31) // d + 5            # N x D = 2^31 + 10240 elements (float16: 4 GiB, zero pages)
    x = np.zeros((n, d), np.float16)
    rng = np.random.default_rng(1)
    tail = rng.standard_normal((5, d)).astype(np.float16)
    x[-5:] = tail                     # every element of these rows is past 2^31
    labels = np.zeros(n, np.int32)
    labels[-5:] = 1
    labels[-2] = 2
    want1 = tail[[0, 1, 2, 4]].astype(np.float32).mean(axis=0)
    C = _backend.native()
    for isa in _backend.native_isas():
        out, counts, *_ = native_forward(C, x, labels, None, 3, None, "mean", "none", 1e-12, False, isa=isa)
        assert counts.tolist() == [n - 5, 4, 1], isa
        np.testing.assert_array_equal(out[0], 0)
        np.testing.assert_allclose(out[1].astype(np.float32), want1, rtol=2e-3, atol=2e-3, err_msg=isa)
        np.testing.assert_array_equal(out[2], tail[3])
    amax = fastemb.centroid_aggregate(x, labels, num_groups=3, reduce="amax")
    np.testing.assert_array_equal(amax[2], tail[3])


@pytest.mark.skipif(_ternary.native_kernels() is None,
                    reason="the native ternary kernels are not in this build (the NumPy fallback converts x to "
                           "float32: 8 GiB)")
@_apply(needs(int(2.5 * GIB)))
def test_ternary_matmul_past_2_31_activation_elements():
    k = 4096
    m = (1 << 31) // k + 3            # m x k = 2^31 + 12288 elements (float16: 4 GiB of zero pages; int8 xq 2 GiB)
    x = np.zeros((m, k), np.float16)
    rng = np.random.default_rng(2)
    x[-1] = rng.standard_normal(k).astype(np.float16)
    W = (rng.standard_normal((8, k)) * 0.05).astype(np.float32)
    tw = fastemb.quantize_ternary(W)
    y = fastemb.ternary_matmul(x, tw)
    want = fastemb.ternary_matmul(x[-1:].copy(), tw)
    np.testing.assert_array_equal(y[-1:], want)
    np.testing.assert_array_equal(y[:-1][-4:], 0)
