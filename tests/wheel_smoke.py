"""Smoke test of an installed fastemb (a built wheel): the native module loads, and every kernel family
gives the NumPy reference's answer on a small random input. Used by cibuildwheel's test-command and by
.ci/wheel; not collected by pytest (python_files is test_*.py / bench_*.py). Runs in about a second."""
import sys

import numpy as np

import fastemb
from fastemb._reference import ternary as ref_ternary

info = fastemb.info()
assert info["backend"] == "native" and info["native_module"], f"native module not loaded: {info}"
rng = np.random.default_rng(0)

x = rng.standard_normal((500, 48), dtype=np.float32)
labels = rng.integers(0, 7, 500)
want = np.stack([x[labels == g].astype(np.float64).mean(0) for g in range(7)])
np.testing.assert_allclose(fastemb.centroid_aggregate(x, labels, num_groups=7), want, rtol=1e-5, atol=1e-6)

codes = fastemb.binarize(x, bits=1)[:, 0]
bits = np.unpackbits(codes, axis=1).astype(np.int64)
want = (bits[:5, None, :] != bits[None, :, :]).sum(-1)
np.testing.assert_array_equal(fastemb.hamming(codes[:5], codes), want)

w = rng.standard_normal((64, 256), dtype=np.float32)
tw = fastemb.quantize_ternary(w)
a = rng.standard_normal((3, 256), dtype=np.float32)
wq = ref_ternary.unpack(tw.packed, tw.k)[:, :256].astype(np.float64)  # {-1, 0, 1}
want = (a.astype(np.float64) @ wq.T) * tw.scale.astype(np.float64)
np.testing.assert_allclose(fastemb.ternary_matmul(a, tw, activations="float"), want, rtol=1e-4, atol=1e-4)
assert np.abs(fastemb.ternary_matmul(a, tw) - want).max() < 0.05 * np.abs(want).max()  # int8 activations

edges = (rng.integers(0, 200, 1000), rng.integers(0, 200, 1000))
emb = fastemb.fastrp(edges, 32, num_nodes=200, symmetrize=True)
assert emb.shape == (200, 32) and np.isfinite(emb).all()

print(f"fastemb {info['version']} wheel smoke test passed: backend {info['backend']}, ISA {info['isa']}, "
      f"python {sys.version.split()[0]}")
