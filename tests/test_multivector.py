"""Multi-vector family (MaxSim, MUVERA FDE): every backend and ISA variant against the NumPy reference.

Runs on both backends (native and FASTEMB_BACKEND=numpy); the ISA and thread tests need the native
module. The reference FDE rules give the kernels' bits, so FDEs are compared exactly; MaxSim is
compared with a float64 oracle within float32 tolerance, and every ISA against the serial variant bit
for bit.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastemb
from fastemb import _backend
from fastemb import multivector as M
from fastemb._reference import multivector as ref

ISAS = _backend.native_isas()
needs_native = pytest.mark.skipif(_backend.native() is None,
                                  reason="native module not in use (FASTEMB_BACKEND=numpy or not built)")


def make_sets(rng, n, max_len, dim, empty=True):
    lo = 0 if empty else 1
    lens = rng.integers(lo, max_len + 1, n)
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    x = rng.standard_normal((int(off[-1]), dim)).astype(np.float32)
    return x, off


def oracle(q, qo, d, do):
    """MaxSim in float64 (per pair, straight from the definition)."""
    out = np.zeros((len(qo) - 1, len(do) - 1))
    for i in range(len(qo) - 1):
        for j in range(len(do) - 1):
            a, b = q[qo[i]:qo[i + 1]].astype(np.float64), d[do[j]:do[j + 1]].astype(np.float64)
            if len(a) and len(b):
                out[i, j] = (a @ b.T).max(axis=1).sum()
    return out


def assert_maxsim_close(got, q, qo, d, do):
    expected = oracle(q, qo, d, do)
    # float32 dot products of length dim summed over the query tokens: a few ulps of the magnitudes
    scale = np.abs(q).sum(axis=1).max(initial=1.0) * np.abs(d).max(initial=1.0) * max(1, int(np.diff(qo).max(initial=1)))
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=1e-5, atol=1e-6 * scale)


def fde_ref(x, off, kind, **kw):
    p = dict(repetitions=3, k_sim=3, d_proj=0, final_dim=0, fill_empty=True, seed=0)
    p.update(kw)
    return ref.muvera_fde(x, off[:-1], off[1:], document=kind == "document", repetitions=p["repetitions"],
                          k_sim=p["k_sim"], d_proj=p["d_proj"], final_dim=p["final_dim"],
                          fill_empty=p["fill_empty"] and kind == "document", seed=p["seed"])


# ---- MaxSim ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [1, 7, 16, 33, 128])
def test_maxsim_matches_oracle(rng, dim):
    q, qo = make_sets(rng, 6, 9, dim)
    d, do = make_sets(rng, 11, 30, dim)
    got = fastemb.maxsim(q, qo, d, do)
    assert got.dtype == np.float32 and got.shape == (6, 11)
    assert_maxsim_close(got, q, qo, d, do)
    empty_q, empty_d = np.diff(qo) == 0, np.diff(do) == 0
    assert np.all(got[empty_q] == 0) and np.all(got[:, empty_d] == 0)


def test_maxsim_one_token_sets(rng):
    q = rng.standard_normal((4, 12)).astype(np.float32)
    d = rng.standard_normal((5, 12)).astype(np.float32)
    got = fastemb.maxsim(q, np.arange(5), d, np.arange(6))
    np.testing.assert_allclose(got, q.astype(np.float64) @ d.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_maxsim_no_sets(rng):
    x = rng.standard_normal((0, 8)).astype(np.float32)
    d, do = make_sets(rng, 3, 4, 8)
    assert fastemb.maxsim(x, [0], d, do).shape == (0, 3)
    assert fastemb.maxsim(d, do, x, [0]).shape == (3, 0)
    s, i = fastemb.maxsim_topk(d, do, x, [0], 2)
    assert np.all(s == -np.inf) and np.all(i == -1)


def test_maxsim_doc_token_order_is_irrelevant(rng):
    """The max is exact: permuting a document's tokens changes no bit."""
    q, qo = make_sets(rng, 3, 8, 20, empty=False)
    d, do = make_sets(rng, 4, 25, 20, empty=False)
    perm = np.concatenate([rng.permutation(np.arange(do[j], do[j + 1])) for j in range(4)])
    np.testing.assert_array_equal(fastemb.maxsim(q, qo, d, do), fastemb.maxsim(q, qo, d[perm], do))


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_maxsim_topk(rng, k):
    q, qo = make_sets(rng, 5, 9, 24)
    d, do = make_sets(rng, 13, 20, 24)
    s, i = fastemb.maxsim_topk(q, qo, d, do, k)
    full = fastemb.maxsim(q, qo, d, do)
    assert s.shape == (5, k) and s.dtype == np.float32 and i.dtype == np.int64
    keep = min(k, 13)
    for r in range(5):
        order = np.lexsort((np.arange(13), -full[r].astype(np.float64)))[:keep]
        np.testing.assert_array_equal(i[r, :keep], order)
        np.testing.assert_array_equal(s[r, :keep], full[r, order])  # the same bits as maxsim
        assert np.all(i[r, keep:] == -1) and np.all(s[r, keep:] == -np.inf)


@pytest.mark.parametrize("backend", ["default", "numpy"])
def test_maxsim_candidates_rerank(rng, backend, monkeypatch):
    """maxsim(..., candidates=) scores each query against its own documents: the full matrix's entries (bit for
    bit with the native kernels), -inf for -1; e.g. reranking maxsim_topk's (padded) ids gives back its scores."""
    q, qo = make_sets(rng, 6, 9, 20)
    d, do = make_sets(rng, 15, 12, 20)
    if backend == "numpy":
        monkeypatch.setattr(_backend, "_C", None)
    native = _backend.native() is not None
    full = fastemb.maxsim(q, qo, d, do)
    cand = rng.integers(-1, 15, (6, 7))
    cand[2] = -1  # a query with no candidate at all
    cand[3, :3] = [4, 4, 0]  # repeats are scored again
    got = fastemb.maxsim(q, qo, d, do, candidates=cand)
    assert got.shape == (6, 7) and got.dtype == np.float32
    want = np.where(cand >= 0, full[np.arange(6)[:, None], np.maximum(cand, 0)], -np.inf).astype(np.float32)
    # native kernels: the same bits; the NumPy fallback's BLAS products depend on the batch: float32 rounding
    same = np.testing.assert_array_equal if native else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6))
    same(got, want)
    assert np.all(np.isneginf(got) == (cand < 0))
    s, ids = fastemb.maxsim_topk(q, qo, d, do, 20)  # k > n_docs: padded with -1
    same(fastemb.maxsim(q, qo, d, do, candidates=ids), s)
    assert fastemb.maxsim(q, qo, d, do, candidates=np.zeros((6, 0), np.int64)).shape == (6, 0)
    with pytest.raises(ValueError, match=r"candidates must be document indices in \[0, 15\)"):
        fastemb.maxsim(q, qo, d, do, candidates=np.full((6, 2), 15))
    with pytest.raises(ValueError, match=r"candidates must have shape \(6, C\)"):
        fastemb.maxsim(q, qo, d, do, candidates=np.zeros((5, 2), np.int64))
    with pytest.raises(TypeError, match="candidates must be an integer array"):
        fastemb.maxsim(q, qo, d, do, candidates=np.zeros((6, 2)))


def test_maxsim_topk_ties_go_to_the_lower_id(rng):
    d1, _ = make_sets(rng, 1, 6, 10, empty=False)
    d = np.concatenate([d1, d1, d1 * 0.5, d1])  # sets 0, 1, 3 identical
    n1 = len(d1)
    do = np.array([0, n1, 2 * n1, 3 * n1, 4 * n1])
    q = rng.standard_normal((3, 10)).astype(np.float32)
    s, i = fastemb.maxsim_topk(q, [0, 3], d, do, 4)
    full = fastemb.maxsim(q, [0, 3], d, do)[0]
    assert full[0] == full[1] == full[3]
    tied = [int(j) for j in i[0] if j in (0, 1, 3)]
    assert tied == [0, 1, 3]
    np.testing.assert_array_equal(i[0], np.lexsort((np.arange(4), -full.astype(np.float64))))


# ---- padded inputs ---------------------------------------------------------------------------------

def padded(x, off, t_max, fill=np.nan):
    n = len(off) - 1
    out = np.full((n, t_max, x.shape[1]), fill, np.float32)
    for i in range(n):
        out[i, : off[i + 1] - off[i]] = x[off[i]:off[i + 1]]
    return out


def test_padded_lengths_and_masks_equal_flat(rng):
    q, qo = make_sets(rng, 4, 6, 9)
    d, do = make_sets(rng, 5, 11, 9)
    flat = fastemb.maxsim(q, qo, d, do)
    qp, dp = padded(q, qo, 6), padded(d, do, 11)  # NaN padding: never read
    ql, dl = np.diff(qo), np.diff(do)
    np.testing.assert_array_equal(fastemb.maxsim(qp, None, dp, None, q_lengths=ql, d_lengths=dl), flat)
    qm = np.arange(6)[None, :] < ql[:, None]
    dm = (np.arange(11)[None, :] < dl[:, None]).astype(np.int64)
    np.testing.assert_array_equal(fastemb.maxsim(qp, None, dp, None, q_mask=qm, d_mask=dm), flat)
    fde = fastemb.muvera_fde(d, do, "document", repetitions=2, k_sim=2, d_proj=4)
    np.testing.assert_array_equal(
        fastemb.muvera_fde(dp, None, "document", repetitions=2, k_sim=2, d_proj=4, lengths=dl), fde)


def test_padded_scattered_and_left_padded_masks(rng):
    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    mask = rng.random((3, 7)) < 0.5
    mask[1] = False
    rows = [x[i][mask[i]] for i in range(3)]
    off = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    flat = np.concatenate(rows)
    q = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(fastemb.maxsim(q, [0, 2, 4], x, None, d_mask=mask), fastemb.maxsim(q, [0, 2, 4], flat, off))
    left = np.zeros((3, 7), bool)
    left[:, 3:] = True  # left padding: one contiguous run per row
    np.testing.assert_array_equal(fastemb.maxsim(q, [0, 4], x, None, d_mask=left),
                                  fastemb.maxsim(q, [0, 4], np.ascontiguousarray(x[:, 3:]).reshape(-1, 5), [0, 4, 8, 12]))
    full = fastemb.maxsim(q, [0, 4], x, None)
    np.testing.assert_array_equal(full, fastemb.maxsim(q, [0, 4], x.reshape(-1, 5), [0, 7, 14, 21]))


# ---- MUVERA FDE ------------------------------------------------------------------------------------

FDE_CASES = [
    dict(repetitions=3, k_sim=3, d_proj=0, final_dim=0),
    dict(repetitions=4, k_sim=2, d_proj=5, final_dim=0),
    dict(repetitions=2, k_sim=5, d_proj=16, final_dim=0),
    dict(repetitions=3, k_sim=4, d_proj=20, final_dim=37),
    dict(repetitions=2, k_sim=0, d_proj=0, final_dim=0),
    dict(repetitions=2, k_sim=0, d_proj=3, final_dim=11),
    dict(repetitions=1, k_sim=1, d_proj=0, final_dim=64),
]


@pytest.mark.parametrize("case", FDE_CASES)
@pytest.mark.parametrize("kind", ["query", "document"])
@pytest.mark.parametrize("dim", [1, 13, 40])
def test_fde_matches_reference_bits(rng, case, kind, dim):
    x, off = make_sets(rng, 5, 14, dim)
    seed = int(rng.integers(0, 2**63))
    got = fastemb.muvera_fde(x, off, kind, seed=seed, **case)
    expected = fde_ref(x, off, kind, seed=seed, **case)
    assert got.dtype == np.float32
    assert got.shape == (5, M.fde_dim(dim, case["repetitions"], case["k_sim"], case["d_proj"], case["final_dim"]))
    np.testing.assert_array_equal(got, expected)
    assert np.all(got[np.diff(off) == 0] == 0)  # empty sets: zeros


def test_fde_fill_empty(rng):
    """Documents fill every empty bucket (a set has fewer tokens than buckets); queries never do."""
    x, off = make_sets(rng, 4, 3, 12, empty=False)
    doc = fastemb.muvera_fde(x, off, "document", repetitions=2, k_sim=4, d_proj=0)
    blocks = doc.reshape(4, 2, 16, 12)
    assert np.all(np.any(blocks != 0, axis=3))  # every bucket of every document holds a token
    no_fill = fastemb.muvera_fde(x, off, "document", repetitions=2, k_sim=4, d_proj=0, fill_empty=False)
    query = fastemb.muvera_fde(x, off, "query", repetitions=2, k_sim=4, d_proj=0)
    nz = np.any(no_fill.reshape(4, 2, 16, 12) != 0, axis=3)
    assert np.array_equal(nz, np.any(query.reshape(4, 2, 16, 12) != 0, axis=3))
    assert nz.sum(axis=2).max() <= 3
    # a filled bucket holds exactly one of the set's tokens
    for s in range(4):
        toks = x[off[s]:off[s + 1]]
        for r in range(2):
            for b in np.nonzero(~nz[s, r])[0]:
                assert any(np.array_equal(blocks[s, r, b], t) for t in toks)


def test_fde_single_token_query_is_its_bucket(rng):
    x = rng.standard_normal((1, 9)).astype(np.float32)
    fde = fastemb.muvera_fde(x, [0, 1], "query", repetitions=3, k_sim=2, d_proj=0).reshape(3, 4, 9)
    for r in range(3):
        nonzero = np.nonzero(np.any(fde[r] != 0, axis=1))[0]
        assert len(nonzero) == 1 and np.array_equal(fde[r, nonzero[0]], x[0])


def test_fde_repetitions_are_a_prefix(rng):
    x, off = make_sets(rng, 3, 10, 16, empty=False)  # all-empty sets would make every seed give zeros
    a = fastemb.muvera_fde(x, off, "document", repetitions=2, k_sim=3, d_proj=6, seed=5)
    b = fastemb.muvera_fde(x, off, "document", repetitions=5, k_sim=3, d_proj=6, seed=5)
    np.testing.assert_array_equal(a, b[:, : a.shape[1]])
    c = fastemb.muvera_fde(x, off, "document", repetitions=2, k_sim=3, d_proj=6, seed=6)
    assert not np.array_equal(a, c)


def test_fde_approximates_maxsim(rng):
    """With one bucket and no projection the query FDE is the token sum and the document FDE the token
    mean: <fde_q, fde_d> = sum_q <q, mean(D)>."""
    q, qo = make_sets(rng, 3, 5, 8, empty=False)
    d, do = make_sets(rng, 4, 7, 8, empty=False)
    fq = fastemb.muvera_fde(q, qo, "query", repetitions=1, k_sim=0, d_proj=0)
    fd = fastemb.muvera_fde(d, do, "document", repetitions=1, k_sim=0, d_proj=0)
    expected = np.array([[q[qo[i]:qo[i + 1]].astype(np.float64).sum(0) @ d[do[j]:do[j + 1]].astype(np.float64).mean(0)
                          for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(fq.astype(np.float64) @ fd.T.astype(np.float64), expected, rtol=1e-4, atol=1e-4)


def test_numpy_fallback_equals_native(rng, monkeypatch):
    """The public API's NumPy fallback path (monkeypatched backend) gives the native FDE bits."""
    x, off = make_sets(rng, 4, 12, 10)
    kw = dict(repetitions=2, k_sim=3, d_proj=4, final_dim=9, seed=3)
    a = fastemb.muvera_fde(x, off, "document", **kw)
    s1 = fastemb.maxsim(x, off, x, off)
    monkeypatch.setattr(M._backend, "native", lambda: None)
    np.testing.assert_array_equal(fastemb.muvera_fde(x, off, "document", **kw), a)
    assert_maxsim_close(fastemb.maxsim(x, off, x, off), x, off, x, off)
    np.testing.assert_allclose(fastemb.maxsim(x, off, x, off), s1, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="x: token row"):
        bad = x.copy()
        bad[-1, 0] = np.nan
        fastemb.muvera_fde(bad, off, "query")


# ---- native: every ISA, threads ------------------------------------------------------------------

@needs_native
def test_isas_same_bits(rng):
    C = _backend.native()
    q, qo = make_sets(rng, 7, 40, 37)
    d, do = make_sets(rng, 30, 45, 37)
    qs, ds = M.token_sets(q, qo), M.token_sets(d, do)
    base = M.native_maxsim(C, qs, ds, "serial")
    bs, bi = M.native_maxsim_topk(C, qs, ds, 5, "serial")
    assert_maxsim_close(base, q, qo, d, do)
    spec = M.FdeSpec(3, 4, 7, 0, True, True, 11)
    fde = fde_ref(d, do, "document", repetitions=3, k_sim=4, d_proj=7, seed=11)
    for isa in ISAS:
        np.testing.assert_array_equal(M.native_maxsim(C, qs, ds, isa), base, err_msg=isa)
        s, i = M.native_maxsim_topk(C, qs, ds, 5, isa)
        np.testing.assert_array_equal(s, bs, err_msg=isa)
        np.testing.assert_array_equal(i, bi, err_msg=isa)
        np.testing.assert_array_equal(M.native_fde(C, ds, spec, isa), fde, err_msg=isa)


@needs_native
def test_threads_same_bits(rng):
    C = _backend.native()
    q, qo = make_sets(rng, 40, 33, 64)  # several query blocks and document chunks
    d, do = make_sets(rng, 300, 40, 64)
    qs, ds = M.token_sets(q, qo), M.token_sets(d, do)
    spec = M.FdeSpec(4, 5, 16, 0, True, True, 2)
    before = fastemb.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            fastemb.set_num_threads(n)
            results.append((M.native_maxsim(C, qs, ds), *M.native_maxsim_topk(C, qs, ds, 9), M.native_fde(C, ds, spec)))
    finally:
        fastemb.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    assert_maxsim_close(results[0][0][:5], q, qo[:6], d, do)


@needs_native
def test_native_layer_rejects_bad_bounds(rng):
    C = _backend.native()
    x = rng.standard_normal((10, 4)).astype(np.float32)
    begin, end = np.array([0, 6], np.int64), np.array([5, 11], np.int64)  # 11 > 10 rows
    out = np.empty((2, 2), np.float32)
    A = _backend.address
    with pytest.raises(ValueError, match="d: set 1 spans rows"):
        C.multivector_maxsim(A(x), 10, A(begin), A(begin + 1), 2, A(x), 10, A(begin), A(end), 2, 4, A(out))
    with pytest.raises(ValueError, match="x: set 1"):
        C.multivector_fde(A(x), 10, A(begin), A(end), 2, 4, 1, 2, 0, 0, True, True, 0, A(out))
    with pytest.raises(ValueError, match="k_sim"):
        C.multivector_fde(A(x), 10, A(begin), A(begin + 1), 2, 4, 1, 17, 0, 0, True, True, 0, A(out))
    with pytest.raises(ValueError, match="fill_empty"):
        C.multivector_fde(A(x), 10, A(begin), A(begin + 1), 2, 4, 1, 2, 0, 0, False, True, 0, A(out))
    with pytest.raises(ValueError, match="isa"):
        C.multivector_maxsim(A(x), 10, A(begin), A(begin + 1), 2, A(x), 10, A(begin), A(begin + 1), 2, 4, A(out), "sse9")


# ---- hypothesis ------------------------------------------------------------------------------------

@st.composite
def set_lists(draw, max_sets=5, max_len=6):
    lens = draw(st.lists(st.integers(0, max_len), min_size=0, max_size=max_sets))
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qo=set_lists(), do=set_lists(), dim=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_property_maxsim(qo, do, dim, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((int(qo[-1]), dim)).astype(np.float32)
    d = rng.standard_normal((int(do[-1]), dim)).astype(np.float32)
    got = fastemb.maxsim(q, qo, d, do)
    assert got.shape == (len(qo) - 1, len(do) - 1)
    assert_maxsim_close(got, q, qo, d, do)
    if len(do) > 1:
        s, i = fastemb.maxsim_topk(q, qo, d, do, 2)
        np.testing.assert_array_equal(s[:, 0], got.max(axis=1) if got.size else s[:, 0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(off=set_lists(max_sets=4, max_len=9), dim=st.integers(1, 24), reps=st.integers(1, 3), k_sim=st.integers(0, 5),
       d_proj=st.sampled_from([0, 1, 3, 8, 17]), final_dim=st.sampled_from([0, 5, 33]),
       kind=st.sampled_from(["query", "document"]), fill=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_property_fde_bits(off, dim, reps, k_sim, d_proj, final_dim, kind, fill, seed):
    x = np.random.default_rng(seed % 2**32).standard_normal((int(off[-1]), dim)).astype(np.float32)
    got = fastemb.muvera_fde(x, off, kind, repetitions=reps, k_sim=k_sim, d_proj=d_proj, final_dim=final_dim,
                             fill_empty=fill, seed=seed)
    np.testing.assert_array_equal(got, fde_ref(x, off, kind, repetitions=reps, k_sim=k_sim, d_proj=d_proj,
                                               final_dim=final_dim, fill_empty=fill, seed=seed))


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_offsets_and_shapes(rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="q_offsets must be non-decreasing"):
        fastemb.maxsim(x, [0, 6, 3, 10], x, [0, 10])
    with pytest.raises(ValueError, match=r"d_offsets must end at the number of tokens \(10\)"):
        fastemb.maxsim(x, [0, 10], x, [0, 4, 9])
    with pytest.raises(ValueError, match="d_offsets must start at 0"):
        fastemb.maxsim(x, [0, 10], x, [1, 10])
    with pytest.raises(TypeError, match="q_offsets must be an integer array"):
        fastemb.maxsim(x, [0.0, 10.0], x, [0, 10])
    with pytest.raises(ValueError, match="q_offsets is required"):
        fastemb.maxsim(x, None, x, [0, 10])
    with pytest.raises(ValueError, match="d: token dimension 5 does not match q's 4"):
        fastemb.maxsim(x, [0, 10], np.zeros((3, 5), np.float32), [0, 3])
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        fastemb.muvera_fde(x, [0, 5, 4, 10], "query")
    with pytest.raises(ValueError, match="x must be 2-D"):
        fastemb.muvera_fde(x[0], [0, 4], "query")
    with pytest.raises(TypeError, match="x must be a float array"):
        fastemb.muvera_fde(x.astype(np.int32), [0, 10], "query")
    with pytest.raises(TypeError, match="q must be a numpy.ndarray"):
        fastemb.maxsim(x.tolist(), [0, 10], x, [0, 10])
    x3 = x.reshape(2, 5, 4)
    with pytest.raises(ValueError, match="lengths must be in"):
        fastemb.muvera_fde(x3, None, "query", lengths=[2, 6])
    with pytest.raises(ValueError, match="mask must have shape"):
        fastemb.muvera_fde(x3, None, "query", mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="offsets is for a flat"):
        fastemb.muvera_fde(x3, [0, 5, 10], "query")
    with pytest.raises(ValueError, match="at most one of lengths and mask"):
        fastemb.muvera_fde(x3, None, "query", lengths=[1, 1], mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="the token dimension must be >= 1"):
        fastemb.muvera_fde(np.zeros((3, 0), np.float32), [0, 3], "query")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_tokens(rng, value):
    x, off = make_sets(rng, 4, 10, 19, empty=False)
    bad = x.copy()
    row = int(off[2]) + 1 if off[3] - off[2] > 1 else int(off[2])
    bad[row, 17] = value
    with pytest.raises(ValueError, match=f"x: token row {row} holds NaN or inf"):
        fastemb.muvera_fde(bad, off, "document")
    with pytest.raises(ValueError, match=f"q: token row {row} holds NaN or inf"):
        fastemb.maxsim(bad, off, x, off)
    with pytest.raises(ValueError, match=f"d: token row {row} holds NaN or inf"):
        fastemb.maxsim(x, off, bad, off)
    with pytest.raises(ValueError, match=f"d: token row {row}"):
        fastemb.maxsim_topk(x, off, bad, off, 2)
    # padding outside the sets is never read
    fastemb.maxsim(x, off, padded(x, off, 10), None, d_lengths=np.diff(off))


def test_bad_parameters(rng):
    x, off = make_sets(rng, 3, 5, 6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fastemb.maxsim_topk(x, off, x, off, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        fastemb.maxsim_topk(x, off, x, off, 2.0)
    for kw, err, msg in [
        (dict(kind="queries"), ValueError, "kind must be 'query' or 'document'"),
        (dict(repetitions=0), ValueError, "repetitions must be >= 1"),
        (dict(k_sim=17), ValueError, "k_sim must be <= 16"),
        (dict(k_sim=-1), ValueError, "k_sim must be >= 0"),
        (dict(d_proj=-2), ValueError, "d_proj must be >= 0"),
        (dict(final_dim=-1), ValueError, "final_dim must be >= 0"),
        (dict(seed=-1), ValueError, "seed must be in"),
        (dict(seed=2**64), ValueError, "seed must be in"),
        (dict(fill_empty=1), TypeError, "fill_empty must be a bool"),
        (dict(repetitions=2.5), TypeError, "repetitions must be an int"),
        (dict(k_sim=16, repetitions=2**23, d_proj=0), ValueError, "too large"),
    ]:
        args = dict(kind="document")
        args.update(kw)
        kind = args.pop("kind")
        with pytest.raises(err, match=msg):
            fastemb.muvera_fde(x, off, kind, **args)


# ---- binary-token MaxSim ---------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("dim", [5, 64, 100])
def test_maxsim_codes(rng, bits, dim):
    q, qo = make_sets(rng, 4, 6, dim)
    d, do = make_sets(rng, 9, 12, dim)
    qc, dc = fastemb.binarize(q, bits), fastemb.binarize(d, bits)
    got = fastemb.maxsim_codes(qc, qo, dc, do, dim=dim, block_bytes=4 * len(q) * 7)  # a few documents per tile
    assert got.dtype == np.int64 and got.shape == (4, 9)
    np.testing.assert_array_equal(got, ref.maxsim_codes(qc, qo, dc, do, dim))
    # = 4^(bits-1) x MaxSim of the level vectors (exact in float64)
    lq, ld = fastemb.unpack_codes(qc, dim), fastemb.unpack_codes(dc, dim)
    np.testing.assert_array_equal(got, np.rint(oracle(lq, qo, ld, do) * 4 ** (bits - 1)).astype(np.int64))
    np.testing.assert_array_equal(got, fastemb.maxsim_codes(qc, qo, dc, do, dim=dim))  # one tile


def test_maxsim_codes_bad_input(rng):
    q, qo = make_sets(rng, 3, 4, 16, empty=False)
    qc = fastemb.binarize(q, 1)
    with pytest.raises(ValueError, match="d_offsets must end at the number of tokens"):
        fastemb.maxsim_codes(qc, qo, qc, qo[:-1])
    with pytest.raises(ValueError, match="bits"):
        fastemb.maxsim_codes(qc, qo, fastemb.binarize(q, 2), qo)
