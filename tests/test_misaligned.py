"""Misaligned inputs: arrays whose data start at an address that is not a multiple of their item size.

``np.frombuffer`` at an odd offset makes them, and ``distributed`` hands such arrays to fastemb.dask's
tasks (deserialized frames). The native kernels load elements as typed values, undefined behaviour at
such addresses, so every public function must copy them first (``_backend.native_array``); the native
entry (``_backend.address``) refuses any that slip through, so a forgotten path fails here. Each case
compares the result on misaligned inputs with the result on the same values, aligned, bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastemb
from fastemb import _backend


def misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data start one byte past an aligned address."""
    a = np.ascontiguousarray(a)
    raw = np.zeros(a.nbytes + 1 + 64, np.uint8)
    start = (-raw.ctypes.data) % 64 + 1
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    if a.dtype.alignment > 1 and a.size:
        assert not out.flags.aligned
    return out


def assert_same(a, b) -> None:
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v)
        return
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def both(fn, *arrays, **kw):
    """fn on aligned arrays and on misaligned copies of them; asserts equal results."""
    expected = fn(*arrays, **kw)
    got = fn(*[misaligned(a) if isinstance(a, np.ndarray) else a for a in arrays], **kw)
    assert_same(got, expected)
    return expected


rng = np.random.default_rng(7)


def test_address_refuses_misaligned_arrays() -> None:
    x = misaligned(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="misaligned"):
        _backend.address(x)
    assert _backend.native_array(x).flags.aligned
    y = np.ones(4, np.float32)
    assert _backend.native_array(y) is y  # no copy when already fine


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_binary_functions(bits: int) -> None:
    x = rng.standard_normal((37, 70)).astype(np.float32)
    codes = both(fastemb.binarize, x, bits=bits)
    both(lambda a, s: fastemb.binarize(a, bits=bits, scale=s), x, np.abs(x).mean(1).astype(np.float64))
    q = codes[:5]
    both(fastemb.sdc_scores, q, codes, dim=70)
    both(fastemb.sdc_cosine, q, codes, dim=70)
    both(fastemb.sdc_topk, q, codes, 4, dim=70)
    both(fastemb.unpack_codes, codes, dim=70)
    if bits == 1:
        both(fastemb.hamming, q, codes, dim=70)


def test_binary_index() -> None:
    x = rng.standard_normal((50, 48)).astype(np.float32)

    def build_and_search(rows, queries):
        index = fastemb.BinaryIndex(48, bits=2)
        index.add(rows)
        return index.search(queries, 5, rescore=3)

    both(build_and_search, x, x[:4])


@pytest.mark.parametrize("reduce", ["mean", "sum", "amax"])
def test_centroid_aggregate(reduce: str) -> None:
    x = rng.standard_normal((41, 19)).astype(np.float32)
    labels = rng.integers(0, 6, 41).astype(np.int64)
    w = rng.random(41).astype(np.float32)
    both(lambda a, lb: fastemb.centroid_aggregate(a, lb, num_groups=6, reduce=reduce), x, labels)
    if reduce != "amax":  # weights are for sums and means
        both(lambda a, lb, ww: fastemb.centroid_aggregate(a, lb, num_groups=6, reduce=reduce, weights=ww,
                                                          leave_one_out=reduce == "mean"), x, labels, w)
    offsets = np.array([0, 5, 5, 20, 41], np.int64)
    both(lambda a, o: fastemb.centroid_aggregate(a, offsets=o, reduce=reduce, normalize="post"), x, offsets)
    both(lambda a, lb: fastemb.centroid_aggregate(a.astype(np.float64), lb, num_groups=6, reduce=reduce), x,
         labels.astype(np.int32))


def test_graph_functions() -> None:
    import scipy.sparse as sp

    n = 60
    a = sp.random(n, n, density=0.1, random_state=3, format="csr", dtype=np.float32)
    a = (a + a.T).tocsr()

    def run_fastrp(indptr, indices, data, feats):
        g = sp.csr_matrix((data, indices, indptr), shape=(n, n))
        return fastemb.fastrp(g, 16, weights=[0.0, 1.0, 1.0], features=feats, feature_ratio=0.5, seed=3)

    feats = rng.standard_normal((n, 9)).astype(np.float32)
    both(run_fastrp, a.indptr.astype(np.int64), a.indices.astype(np.int32), a.data, feats)
    both(lambda xx: fastemb.sparse_random_projection(xx, 16, seed=1), feats)

    def srp_sparse(indptr, indices, data):
        return fastemb.sparse_random_projection(sp.csr_matrix((data, indices, indptr), shape=(n, n)), 16, seed=1)

    both(srp_sparse, a.indptr.astype(np.int64), a.indices.astype(np.int32), a.data)


def test_ternary_functions() -> None:
    w = rng.standard_normal((24, 96)).astype(np.float32)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    for fmt in ("i2", "t5"):
        tw = fastemb.quantize_ternary(w, format=fmt)
        assert_same(fastemb.quantize_ternary(misaligned(w), format=fmt).packed, tw.packed)
        both(lambda xx, b: fastemb.ternary_matmul(xx, tw, bias=b), x, bias)
        both(lambda xx: fastemb.ternary_matmul(xx, tw, activations="float"), x)
        tw2 = fastemb.TernaryWeight(misaligned(tw.packed), misaligned(np.asarray(tw.scale, np.float32).reshape(-1)),
                                    tw.k, format=fmt)
        assert_same(fastemb.ternary_matmul(x, tw2), fastemb.ternary_matmul(x, tw))
    both(fastemb.quantize_activations, x)


def test_multivector_functions() -> None:
    q = rng.standard_normal((13, 24)).astype(np.float32)
    d = rng.standard_normal((40, 24)).astype(np.float32)
    qo = np.array([0, 4, 13], np.int64)
    do = np.array([0, 10, 10, 25, 40], np.int64)
    both(fastemb.maxsim, q, qo, d, do)
    both(lambda a, ao, b, bo: fastemb.maxsim_topk(a, ao, b, bo, 2), q, qo, d, do)
    both(lambda a, o: fastemb.muvera_fde(a, o, "document", repetitions=3, k_sim=2, d_proj=8), d, do)
    both(lambda a, o: fastemb.muvera_fde(a, o, "query", repetitions=3, k_sim=2, d_proj=0, final_dim=32), q, qo)
    qc = fastemb.binarize(q, bits=2)
    dc = fastemb.binarize(d, bits=2)
    both(fastemb.maxsim_codes, qc, qo, dc, do, 24)
    padded = rng.standard_normal((3, 5, 24)).astype(np.float32)
    lengths = np.array([5, 1, 3], np.int64)
    both(lambda a, ln: fastemb.maxsim(a, None, a, None, q_lengths=ln, d_lengths=ln), padded, lengths)


# ---- fastemb.torch: tensors made from misaligned NumPy buffers (torch.from_numpy keeps the address) ----------

def test_torch_ops() -> None:
    torch = pytest.importorskip("torch")
    import fastemb.torch as ft

    def t(a: np.ndarray):
        return torch.from_numpy(misaligned(a))

    def check(fn, *arrays) -> None:
        expected = fn(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        got = fn(*[t(a) for a in arrays])
        for u, v in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
            np.testing.assert_array_equal(u.detach().numpy(), v.detach().numpy())

    x = rng.standard_normal((30, 40)).astype(np.float32)
    labels = rng.integers(0, 5, 30)
    check(lambda a: ft.binarize(a, 2), x)
    check(lambda a, s: ft.binarize(a, 2, scale=s), x, np.abs(x).mean(1).astype(np.float64))
    codes = fastemb.binarize(x, 2)
    check(lambda q, d: ft.sdc_topk(q, d, 3, dim=40), codes[:4], codes)
    check(lambda a, lb: ft.centroid_aggregate(a, lb, num_groups=5), x, labels)
    check(lambda a, lb: ft.centroid_aggregate(a, lb, num_groups=5, reduce="amax"), x, labels.astype(np.int32))
    check(lambda a, lb: ft.centroid_triplet_loss(a, lb, num_groups=5), x, labels)
    tw = fastemb.quantize_ternary(rng.standard_normal((12, 40)).astype(np.float32))
    scale = np.asarray(tw.scale, np.float32).reshape(-1)
    bias = rng.standard_normal(12).astype(np.float32)
    check(lambda a, p, s, b: ft.ternary_linear(a, p, s, 40, b), x, tw.packed, scale, bias)
    check(lambda a, p, s: ft.ternary_linear(a, p, s, 40, activations="float"), x, tw.packed, scale)
    off = np.array([0, 4, 4, 30], np.int64)
    check(lambda q, qo, d, do: ft.maxsim(q, qo, d, do), x, off, x, off)
    check(lambda a, o: ft.muvera_fde(a, o, "document", repetitions=2, k_sim=2, d_proj=8), x, off)
    check(lambda a: ft.sparse_random_projection(a, 16, seed=2), x)
    # the native entry refuses a misaligned tensor that slipped through
    with pytest.raises(ValueError, match="misaligned"):
        _backend.address(t(x))
    assert _backend.native_tensor(t(x)).data_ptr() % 4 == 0
