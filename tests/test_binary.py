"""SDC binary codes: every backend and ISA variant against the NumPy reference (exact integers)."""
import numpy as np
import pytest

import fastemb
from fastemb import _backend
from fastemb import binary as B
from fastemb._backend import native_isas
from fastemb._reference import binary as ref

INT32_MIN = np.iinfo(np.int32).min
needs_native = pytest.mark.skipif(_backend.native() is None, reason="native module not in use")
DIMS = [1, 7, 64, 67, 130, 256, 300]


def codes(rng, n, bits, dim, garbage_padding=False):
    """Random codes [n, bits, ceil(dim/8)]; optionally with nonzero padding bits."""
    nbytes = (dim + 7) // 8
    c = fastemb.pack_levels(rng.integers(0, 2, size=(n, bits, dim)).astype(bool))
    if garbage_padding and 8 * nbytes > dim:
        pad_mask = np.uint8((1 << (8 * nbytes - dim)) - 1)
        c[..., -1] |= rng.integers(0, 256, size=c.shape[:-1]).astype(np.uint8) & pad_mask
    return c


def float_oracle(q, d, dim):
    """4^u <b_q, b_d> from the unpacked level values (independent of the integer formula)."""
    bits = q.shape[1]
    bq = ref.unpack_codes(q, dim).astype(np.float64)
    bd = ref.unpack_codes(d, dim).astype(np.float64)
    return np.rint(4.0 ** (bits - 1) * (bq @ bd.T)).astype(np.int64)


def full_sort_topk(s, k):
    """Top-k by a full stable sort: score descending, ties to the lower id, padded to k."""
    nq, nd = s.shape
    order = np.argsort(-s.astype(np.int64), axis=1, kind="stable")[:, :k]
    scores = np.full((nq, k), INT32_MIN, dtype=np.int32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    scores[:, :order.shape[1]] = np.take_along_axis(s, order, axis=1)
    ids[:, :order.shape[1]] = order
    return scores, ids


# ---- reference -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_reference_scores_match_level_vectors(rng, bits):
    for dim in (5, 64, 67):
        q, d = codes(rng, 9, bits, dim), codes(rng, 23, bits, dim)
        np.testing.assert_array_equal(ref.sdc_scores(q, d, dim), float_oracle(q, d, dim))


def test_binarize_follows_the_recurrence(rng):
    x = rng.standard_normal((20, 45)).astype(np.float32)
    x[3] = 0.0  # all-zero row: no division by zero (s = 1: d_0 = +1, then the residual -1 ...)
    x[4, :5] = 0.0
    for bits in (1, 2, 3, 4):
        c = fastemb.binarize(x, bits)
        assert c.dtype == np.uint8 and c.shape == (20, bits, 6)
        assert np.all(c[..., -1] & np.uint8(0b111) == 0)  # 45 dims: 3 padding bits, zero
        y = x.astype(np.float64) / np.abs(x.astype(np.float64)).mean(axis=1, keepdims=True).clip(1e-300)
        y[3] = 0.0
        recon = np.zeros_like(y)
        for i in range(bits):
            di = np.where(y - recon >= 0, 1.0, -1.0)
            plane = np.unpackbits(c[:, i], axis=-1, count=45, bitorder="big")
            np.testing.assert_array_equal(plane, (di > 0).astype(np.uint8), err_msg=f"bits={bits} plane {i}")
            recon += 2.0 ** -i * di
        np.testing.assert_array_equal(fastemb.unpack_codes(c, 45), recon.astype(np.float32))
    assert np.all(fastemb.unpack_codes(fastemb.binarize(x, 2), 45)[3] == 0.5)  # 1 - 1/2


def test_binarize_scale(rng):
    x = rng.standard_normal((6, 16))
    a = fastemb.binarize(x, 3, scale=2.0)
    b = fastemb.binarize(x, 3, scale=np.full(6, 2.0))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, fastemb.pack_levels(ref_levels(x / 2.0, 3)))
    # 1 bit does not depend on the scale
    np.testing.assert_array_equal(fastemb.binarize(x, 1, scale=7.0), fastemb.binarize(x, 1))


def ref_levels(y, bits):
    levels, recon = [], np.zeros_like(y)
    for i in range(bits):
        di = np.where(y - recon >= 0, 1, -1)
        levels.append(di)
        recon = recon + 2.0 ** -i * di
    return np.stack(levels, axis=1)


def test_pack_levels_layout(rng):
    lv = np.where(rng.random((4, 2, 13)) < 0.5, -1, 1).astype(np.int8)
    c = fastemb.pack_levels(lv)
    assert c.shape == (4, 2, 2) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, np.packbits(lv > 0, axis=-1, bitorder="big"))
    np.testing.assert_array_equal(fastemb.pack_levels(lv > 0), c)
    np.testing.assert_array_equal(fastemb.pack_levels(lv[:, 0]), c[:, :1])
    # first dimension = most significant bit of byte 0
    one = np.full((1, 1, 8), -1)
    one[0, 0, 0] = 1
    assert fastemb.pack_levels(one)[0, 0, 0] == 0x80


# ---- public API (whichever backend is in use) --------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_public_api_matches_reference(rng, bits):
    for dim in DIMS:
        q, d = codes(rng, 11, bits, dim), codes(rng, 157, bits, dim)
        s = fastemb.sdc_scores(q, d, dim)
        assert s.dtype == np.int32 and s.shape == (11, 157)
        np.testing.assert_array_equal(s, float_oracle(q, d, dim))
        h = fastemb.hamming(q, d)
        assert h.dtype == np.int32
        np.testing.assert_array_equal(h, ref.hamming(q, d))
        cos = fastemb.sdc_cosine(q, d, dim)
        assert cos.dtype == np.float32
        np.testing.assert_allclose(cos, ref.sdc_cosine(q, d, dim), rtol=1e-6, atol=1e-7)
        ts, ti = fastemb.sdc_topk(q, d, 10, dim)
        es, ei = full_sort_topk(s, 10)
        np.testing.assert_array_equal(ts, es)
        np.testing.assert_array_equal(ti, ei)


def test_one_bit_sdc_is_dim_minus_twice_hamming(rng):
    for dim in (3, 64, 67, 256):
        q, d = codes(rng, 8, 1, dim), codes(rng, 40, 1, dim)
        np.testing.assert_array_equal(fastemb.sdc_scores(q, d, dim), dim - 2 * fastemb.hamming(q, d))
        # 2-D [n, nbytes] codes are the same 1-bit codes
        np.testing.assert_array_equal(fastemb.sdc_scores(q[:, 0], d[:, 0], dim), fastemb.sdc_scores(q, d, dim))


def test_cosine_of_identical_codes_is_one(rng):
    c = codes(rng, 5, 3, 70)
    np.testing.assert_allclose(np.diag(fastemb.sdc_cosine(c, c, 70)), 1.0, rtol=1e-6)


def test_padding_bits_never_change_scores(rng):
    for bits in (1, 2, 4):
        for dim in (1, 67, 300):
            q, d = codes(rng, 7, bits, dim), codes(rng, 50, bits, dim)
            qg, dg = q.copy(), d.copy()
            pad = np.uint8((1 << (8 * q.shape[-1] - dim)) - 1)
            qg[..., -1] |= pad
            dg[..., -1] |= rng.integers(0, 256, dg.shape[:-1]).astype(np.uint8) & pad
            np.testing.assert_array_equal(fastemb.sdc_scores(qg, dg, dim), fastemb.sdc_scores(q, d, dim))
            np.testing.assert_array_equal(fastemb.hamming(qg, dg, dim), fastemb.hamming(q, d))
            for a, b in zip(fastemb.sdc_topk(qg, dg, 9, dim), fastemb.sdc_topk(q, d, 9, dim)):
                np.testing.assert_array_equal(a, b)


def test_topk_k_edge_cases_and_ties(rng):
    # few distinct scores -> many ties, broken by the lower id
    q, d = codes(rng, 6, 2, 3), codes(rng, 70, 2, 3)
    s = fastemb.sdc_scores(q, d, 3)
    for k in (1, 69, 70, 71, 100):
        ts, ti = fastemb.sdc_topk(q, d, k, 3)
        es, ei = full_sort_topk(s, k)
        np.testing.assert_array_equal(ts, es, err_msg=f"k={k}")
        np.testing.assert_array_equal(ti, ei, err_msg=f"k={k}")
    ts, ti = fastemb.sdc_topk(q, d, 75, 3)
    assert np.all(ti[:, 70:] == -1) and np.all(ts[:, 70:] == INT32_MIN)


def test_empty_and_single_rows(rng):
    q, d = codes(rng, 3, 2, 20), codes(rng, 5, 2, 20)
    assert fastemb.sdc_scores(q[:0], d, 20).shape == (0, 5)
    assert fastemb.sdc_scores(q, d[:0], 20).shape == (3, 0)
    assert fastemb.hamming(q[:0], d[:0]).shape == (0, 0)
    s, i = fastemb.sdc_topk(q[:0], d, 4, 20)
    assert s.shape == (0, 4) and i.shape == (0, 4)
    s, i = fastemb.sdc_topk(q, d[:0], 4, 20)
    assert np.all(s == INT32_MIN) and np.all(i == -1) and i.shape == (3, 4)
    s, i = fastemb.sdc_topk(q[:1], d[:1], 3, 20)
    np.testing.assert_array_equal(i, [[0, -1, -1]])
    assert s[0, 0] == fastemb.sdc_scores(q[:1], d[:1], 20)[0, 0]
    assert fastemb.binarize(np.zeros((0, 9)), 2).shape == (0, 2, 2)


def test_memmap_corpus(rng, tmp_path):
    d = codes(rng, 3000, 2, 100)
    path = tmp_path / "corpus.u8"
    d.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=d.shape)
    q = codes(rng, 5, 2, 100)
    for a, b in zip(fastemb.sdc_topk(q, mm, 17, 100), fastemb.sdc_topk(q, d, 17, 100)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fastemb.sdc_scores(q, mm, 100), fastemb.sdc_scores(q, d, 100))


def test_bad_inputs(rng):
    q, d = codes(rng, 3, 2, 20), codes(rng, 5, 2, 20)
    with pytest.raises(TypeError, match="q"):
        fastemb.sdc_scores(q.astype(np.int8), d)
    with pytest.raises(TypeError, match="d"):
        fastemb.sdc_scores(q, d.tolist())
    with pytest.raises(ValueError, match="q"):
        fastemb.sdc_scores(q[0, 0], d)
    with pytest.raises(ValueError, match="bits"):
        fastemb.sdc_scores(q, codes(rng, 5, 3, 20))
    with pytest.raises(ValueError, match="nbytes"):
        fastemb.sdc_scores(q, codes(rng, 5, 2, 30))
    with pytest.raises(ValueError, match="dim"):
        fastemb.sdc_scores(q, d, 16)
    with pytest.raises(ValueError, match="dim"):
        fastemb.sdc_scores(q, d, 25)
    with pytest.raises(TypeError, match="dim"):
        fastemb.sdc_scores(q, d, 20.0)
    with pytest.raises(ValueError, match="bits"):
        fastemb.sdc_scores(np.zeros((2, 5, 3), np.uint8), np.zeros((2, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="nbytes"):
        fastemb.hamming(np.zeros((2, 0), np.uint8), np.zeros((2, 0), np.uint8))
    with pytest.raises(ValueError, match="k"):
        fastemb.sdc_topk(q, d, 0)
    with pytest.raises(TypeError, match="k"):
        fastemb.sdc_topk(q, d, 2.0)
    with pytest.raises(TypeError, match="k"):
        fastemb.sdc_topk(q, d, True)
    x = rng.standard_normal((4, 10))
    with pytest.raises(ValueError, match="bits"):
        fastemb.binarize(x, 5)
    with pytest.raises(ValueError, match="bits"):
        fastemb.binarize(x, 0)
    with pytest.raises(TypeError, match="bits"):
        fastemb.binarize(x, 2.0)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fastemb.binarize(x, 2)
    with pytest.raises(ValueError, match="x"):
        fastemb.binarize(np.ones(5), 2)
    with pytest.raises(ValueError, match="scale"):
        fastemb.binarize(np.ones((2, 5)), 2, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        fastemb.binarize(np.ones((2, 5)), 2, scale=np.ones(3))
    with pytest.raises(ValueError, match="levels"):
        fastemb.pack_levels(np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match="dim"):
        fastemb.unpack_codes(q, 30)


# ---- native kernels: every ISA ------------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_every_isa_matches_reference(rng, isa, bits):
    C = _backend.native()
    for dim in DIMS:
        q = codes(rng, 13, bits, dim, garbage_padding=True)
        d = codes(rng, 203, bits, dim, garbage_padding=True)  # not a multiple of the 16-doc tile
        s = B.native_scores(C, q, d, dim, "sdc", isa)
        np.testing.assert_array_equal(s, ref.sdc_scores(q, d, dim), err_msg=f"{isa} dim={dim}")
        h = B.native_scores(C, q, d, dim, "hamming", isa)
        np.testing.assert_array_equal(h, ref.hamming(q, d, dim), err_msg=f"{isa} dim={dim}")
        h8 = B.native_scores(C, q, d, 8 * q.shape[-1], "hamming", isa)
        np.testing.assert_array_equal(h8, ref.hamming(q, d), err_msg=f"{isa} dim={dim}")
        for k in (1, 10, 203, 250):
            ts, ti = B.native_topk(C, q, d, k, dim, isa)
            es, ei = full_sort_topk(s, k)
            np.testing.assert_array_equal(ts, es, err_msg=f"{isa} dim={dim} k={k}")
            np.testing.assert_array_equal(ti, ei, err_msg=f"{isa} dim={dim} k={k}")
        # one or two queries take the direct (no tile) path for the XOR form (bits = 1)
        for nq_small in (1, 2):
            ts, ti = B.native_topk(C, q[:nq_small], d, 10, dim, isa)
            es, ei = full_sort_topk(s[:nq_small], 10)
            np.testing.assert_array_equal(ts, es, err_msg=f"{isa} dim={dim} nq={nq_small}")
            np.testing.assert_array_equal(ti, ei, err_msg=f"{isa} dim={dim} nq={nq_small}")


@needs_native
@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_group_topk_edge_cases(rng, isa, bits):
    # The query-group top-k kernels (avx512: 8 queries x 16-doc tiles; avx2: 3 queries x 64-doc
    # byte-major tiles for the 1-bit XOR form): group remainders, partial tiles, odd dims, k > nd and
    # many ties, each against the serial variant and the NumPy reference.
    C = _backend.native()
    nd = 203  # 3 full 64-doc tiles + 11, 12 full 16-doc tiles + 11
    for dim in (1, 63, 65, 257):
        q = codes(rng, 65, bits, dim, garbage_padding=True)
        d = codes(rng, nd, bits, dim, garbage_padding=True)
        d[100:140] = d[20]   # duplicated rows: ties broken by the lower id
        q[5] = d[20]         # a query equal to those rows (the best score, tied 41 times)
        s = ref.sdc_scores(q, d, dim)
        for nq in (1, 3, 4, 8, 9, 65):
            for k in (1, 10, nd + 5):
                es, ei = full_sort_topk(s[:nq], k)
                ts, ti = B.native_topk(C, q[:nq], d, k, dim, isa)
                ss, si = B.native_topk(C, q[:nq], d, k, dim, "serial")
                msg = f"{isa} bits={bits} dim={dim} nq={nq} k={k}"
                np.testing.assert_array_equal(ts, ss, err_msg=msg)
                np.testing.assert_array_equal(ti, si, err_msg=msg)
                np.testing.assert_array_equal(ts, es, err_msg=msg)
                np.testing.assert_array_equal(ti, ei, err_msg=msg)


@needs_native
@pytest.mark.parametrize("isa", native_isas())
def test_group_topk_long_rows(rng, isa):
    # 1-bit rows of 8191 bytes are the longest the avx2 table kernel sums in 16 bits (the largest
    # distance, 65528, is reached by the complement row); longer rows take the generic path.
    C = _backend.native()
    for dim in (65528, 65529, 66000):
        q = codes(rng, 4, 1, dim, garbage_padding=True)
        d = codes(rng, 67, 1, dim, garbage_padding=True)
        d[3] = q[0]
        d[7] = ~q[0]  # complement: every valid bit differs (padding bits are masked anyway)
        s = ref.sdc_scores(q, d, dim)
        assert s[0, 3] == dim and s[0, 7] == -dim
        for k in (1, 5, 70):
            es, ei = full_sort_topk(s, k)
            ts, ti = B.native_topk(C, q, d, k, dim, isa)
            np.testing.assert_array_equal(ts, es, err_msg=f"{isa} dim={dim} k={k}")
            np.testing.assert_array_equal(ti, ei, err_msg=f"{isa} dim={dim} k={k}")
        for nq in (1, 2):  # the direct path (no tile): chunk sums flushed every 31 vectors on avx2
            es, ei = full_sort_topk(s[:nq], 5)
            ts, ti = B.native_topk(C, q[:nq], d, 5, dim, isa)
            np.testing.assert_array_equal(ts, es, err_msg=f"{isa} dim={dim} nq={nq}")
            np.testing.assert_array_equal(ti, ei, err_msg=f"{isa} dim={dim} nq={nq}")
        # the worst match first: k = nd ranks the complement last
        ts, ti = B.native_topk(C, q[:1], d, 67, dim, isa)
        assert ti[0, -1] == 7 and ts[0, -1] == -dim


@needs_native
@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_multibit_group_topk_extremes(rng, isa, bits):
    # Multi-bit sdc through the query-group kernels (avx512: the fused form, B + B(B-1)/2 popcounts
    # per plane word with per-query z and per-doc e planes; avx2: nibble tables) and, for one or two
    # queries, the direct row-by-row kernels: rows of several
    # words, codes at the extremes (every level the same, complements), equal rows, and padding bits
    # set; scores against the float oracle, top-k against a full sort of them.
    C = _backend.native()
    L = 2 ** bits - 1
    for dim in (64, 333, 1000):
        q = codes(rng, 24, bits, dim, garbage_padding=True)
        d = codes(rng, 150, bits, dim, garbage_padding=True)
        top = fastemb.pack_levels(np.ones((1, bits, dim)))
        bottom = fastemb.pack_levels(-np.ones((1, bits, dim)))
        q[0], q[1], q[2] = top[0], bottom[0], q[3]
        d[10], d[11], d[40:60] = top[0], bottom[0], d[5]
        d[12] = ~q[3]  # every level negated (padding bits garbage, masked)
        q[4] = d[5]
        s = float_oracle(q, d, dim)
        assert s[0, 10] == dim * L * L and s[0, 11] == -dim * L * L
        assert s[3, 12] == -float_oracle(q[3:4], q[3:4], dim)[0, 0]
        np.testing.assert_array_equal(B.native_scores(C, q, d, dim, "sdc", isa), s, err_msg=f"{isa} dim={dim}")
        for nq in (8, 17, 24):
            for k in (1, 7, 160):
                ts, ti = B.native_topk(C, q[:nq], d, k, dim, isa)
                es, ei = full_sort_topk(s[:nq], k)
                msg = f"{isa} bits={bits} dim={dim} nq={nq} k={k}"
                np.testing.assert_array_equal(ts, es, err_msg=msg)
                np.testing.assert_array_equal(ti, ei, err_msg=msg)
        # one or two queries: the direct (row by row) path, several vector chunks per plane at
        # dim 1000; the last rows' loads pass the end of the corpus and go through the bounce buffer
        for rows in ((0,), (1,), (0, 1), (3, 4), (12,)):
            for k in (1, 7, 160):
                ts, ti = B.native_topk(C, q[list(rows)], d, k, dim, isa)
                es, ei = full_sort_topk(s[list(rows)], k)
                msg = f"{isa} bits={bits} dim={dim} query rows={rows} k={k}"
                np.testing.assert_array_equal(ts, es, err_msg=msg)
                np.testing.assert_array_equal(ti, ei, err_msg=msg)


@needs_native
def test_one_bit_topk_thread_counts(rng):
    # several corpus parts and query sub-blocks for the 1-bit group kernels; many ties (9 dims)
    q, d = codes(rng, 70, 1, 9, garbage_padding=True), codes(rng, 5000, 1, 9, garbage_padding=True)
    before = fastemb.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fastemb.set_num_threads(threads)
            results.append(fastemb.sdc_topk(q, d, 25, 9))
    finally:
        fastemb.set_num_threads(before)
    es, ei = full_sort_topk(ref.sdc_scores(q, d, 9), 25)
    for ts, ti in results:
        np.testing.assert_array_equal(ts, es)
        np.testing.assert_array_equal(ti, ei)


@needs_native
def test_extreme_scores_are_exact():
    # all-ones vs all-ones / all-zeros: |S| = dim * L^2 at its bound
    for bits in (1, 4):
        dim = 1000
        ones = fastemb.pack_levels(np.ones((1, bits, dim)))
        zeros = fastemb.pack_levels(-np.ones((1, bits, dim)))
        L = 2 ** bits - 1
        for isa in native_isas():
            C = _backend.native()
            both = np.concatenate([ones, zeros])
            np.testing.assert_array_equal(B.native_scores(C, ones, both, dim, "sdc", isa),
                                          [[dim * L * L, -dim * L * L]])


@needs_native
def test_thread_counts_give_identical_results(rng):
    # enough docs for several corpus parts, many ties (dim 9, 2 bits)
    q, d = codes(rng, 70, 2, 9), codes(rng, 5000, 2, 9)
    before = fastemb.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fastemb.set_num_threads(threads)
            results.append((fastemb.sdc_topk(q, d, 25, 9), fastemb.sdc_scores(q, d, 9)))
    finally:
        fastemb.set_num_threads(before)
    (t1, s1), (t2, s2) = results
    np.testing.assert_array_equal(s1, s2)
    for a, b in zip(t1, t2):
        np.testing.assert_array_equal(a, b)
    es, ei = full_sort_topk(s1, 25)
    np.testing.assert_array_equal(t1[0], es)
    np.testing.assert_array_equal(t1[1], ei)


@needs_native
def test_single_query_direct_path_thread_counts(rng):
    # one query, 1-bit codes with garbage padding and many ties: the direct path over corpus parts
    q, d = codes(rng, 1, 1, 13, garbage_padding=True), codes(rng, 9000, 1, 13, garbage_padding=True)
    before = fastemb.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fastemb.set_num_threads(threads)
            results.append(fastemb.sdc_topk(q, d, 40, 13))
    finally:
        fastemb.set_num_threads(before)
    es, ei = full_sort_topk(ref.sdc_scores(q, d, 13), 40)
    for ts, ti in results:
        np.testing.assert_array_equal(ts, es)
        np.testing.assert_array_equal(ti, ei)


@needs_native
def test_avx512_kernel_needs_vpopcntdq():
    C = _backend.native()
    if "avx512" in native_isas():
        expected = "avx512" if C.cpu_features()["avx512vpopcntdq"] else "avx2"
        assert C.binary_kernel_isa("avx512") == expected
    assert C.binary_kernel_isa("serial") == "serial"


@needs_native
def test_native_layer_rejects_bad_arguments(rng):
    C = _backend.native()
    q = codes(rng, 2, 2, 16)
    A = _backend.address
    out = np.empty((2, 2), np.int32)
    with pytest.raises(ValueError, match="bits"):
        C.binary_scores(A(q), 2, A(q), 2, 5, 2, 16, 1, A(out))
    with pytest.raises(ValueError, match="dim"):
        C.binary_scores(A(q), 2, A(q), 2, 2, 2, 17, 1, A(out))
    with pytest.raises(ValueError, match="k"):
        C.binary_topk(A(q), 2, A(q), 2, 2, 2, 16, 0, A(out), A(out))
    with pytest.raises(ValueError, match="isa"):
        C.binary_scores(A(q), 2, A(q), 2, 2, 2, 16, 1, A(out), isa="sse9")


# ---- threshold_rule: "ge" (bit = r >= 0, default) or "gt" (bit = r > 0, sentence-transformers ubinary) ----

def rule_oracle(x, bits, rule, scale=None):
    """The recurrence element by element in Python floats: d_0 from the sign of x, then the
    residuals of y = x / s; sign(0) = +1 for "ge", -1 for "gt". Returns packed codes."""
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    if scale is None:
        s = np.abs(x).mean(axis=1) if m else np.zeros(n)  # the same doubles as fastemb (NumPy's sum order)
        s = np.where(s > 0, s, 1.0)
    else:
        s = np.broadcast_to(np.asarray(scale, np.float64), (n,))
    positive = (lambda v: v > 0) if rule == "gt" else (lambda v: v >= 0)
    bits_out = np.zeros((n, bits, m), dtype=bool)
    for r in range(n):
        for j in range(m):
            xv = float(x[r, j])
            y = xv / float(s[r])
            recon = 0.0
            for i in range(bits):
                c = positive(xv if i == 0 else y - recon)
                bits_out[r, i, j] = c
                recon += 2.0 ** -i if c else -(2.0 ** -i)
    return np.packbits(bits_out, axis=-1, bitorder="big")


def _with_zeros(rng, x):
    """Puts exact 0.0 and -0.0 at random places (the only values the two rules treat apart at 1 bit)."""
    x = x.copy()
    mask = rng.random(x.shape) < 0.15
    x[mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0.0, -0.0).astype(x.dtype)
    return x


@pytest.mark.parametrize("rule", ["ge", "gt"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_binarize_threshold_rule_matches_oracle(rng, rule, bits):
    for n, m in ((1, 1), (1, 7), (13, 45), (40, 384), (3, 130)):
        for dtype in (np.float16, np.float32, np.float64):
            x = (rng.standard_normal((n, m)) * np.exp(rng.standard_normal((n, 1)))).astype(dtype)
            x = _with_zeros(rng, x)
            if n > 2:
                x[2] = 0.0  # all-zero row
            got = fastemb.binarize(x, bits, threshold_rule=rule)
            assert got.dtype == np.uint8 and got.shape == (n, bits, (m + 7) // 8)
            np.testing.assert_array_equal(got, rule_oracle(x, bits, rule), err_msg=f"{dtype.__name__} {n}x{m}")
            # plane 0 is np.packbits(x > 0) for "gt" (sentence-transformers ubinary), x >= 0 for "ge"
            np.testing.assert_array_equal(got[:, 0], np.packbits(x > 0 if rule == "gt" else x >= 0, axis=-1))
            if rule == "ge":
                np.testing.assert_array_equal(got, fastemb.binarize(x, bits))  # the default rule
    scale = rng.uniform(0.5, 2.0, 9)
    x = _with_zeros(rng, rng.standard_normal((9, 20)))
    np.testing.assert_array_equal(fastemb.binarize(x, bits, scale, threshold_rule=rule),
                                  rule_oracle(x, bits, rule, scale))
    assert fastemb.binarize(np.zeros((0, 9)), bits, threshold_rule=rule).shape == (0, bits, 2)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_threshold_rules_differ_only_midway_between_levels(rng, bits):
    # x/s exactly midway between two levels -- a multiple of 2^-(bits-2) inside (-2, 2) -- gets the
    # upper level x/s + 2^-(bits-1) under "ge" and the lower one under "gt"; every other value the same
    grid = np.arange(-24, 25) / 8.0  # multiples of 1/8 in [-3, 3]: ties and non-ties at every bits
    x = np.concatenate([grid, rng.uniform(-3, 3, 40)])[None, :]
    b_ge = fastemb.unpack_codes(fastemb.binarize(x, bits, scale=1.0), x.shape[1]).astype(np.float64)[0]
    b_gt = fastemb.unpack_codes(fastemb.binarize(x, bits, scale=1.0, threshold_rule="gt"),
                                x.shape[1]).astype(np.float64)[0]
    y = x[0]
    step = 2.0 ** -(bits - 1)
    tie = (np.abs(y) < 2) & (np.mod(y, 2.0 ** -(bits - 2)) == 0)
    assert tie.sum() >= 1 and (~tie).sum() >= 40
    np.testing.assert_array_equal(b_ge[tie], y[tie] + step)
    np.testing.assert_array_equal(b_gt[tie], y[tie] - step)
    np.testing.assert_array_equal(b_ge[~tie], b_gt[~tie])


def test_binarize_plane0_is_the_sign_of_x_even_when_x_over_s_underflows():
    # 5e-324 / (10/3) underflows to 0 in float64: plane 0 still follows x itself
    x = np.array([[5e-324, -5e-324, 10.0, 0.0, -0.0]])
    for bits in (1, 2):
        np.testing.assert_array_equal(fastemb.binarize(x, bits, threshold_rule="gt")[:, 0], np.packbits(x > 0, axis=-1))
        np.testing.assert_array_equal(fastemb.binarize(x, bits)[:, 0], np.packbits(x >= 0, axis=-1))
    # a huge given scale makes every x/s underflow
    np.testing.assert_array_equal(fastemb.binarize(x, 1, scale=1e300, threshold_rule="gt")[:, 0],
                                  np.packbits(x > 0, axis=-1))


def test_threshold_rule_bad_values():
    x = np.ones((2, 5))
    for bad in (1, None, True, b"gt"):
        with pytest.raises(TypeError, match="threshold_rule"):
            fastemb.binarize(x, 1, threshold_rule=bad)
    for bad in ("GT", "ubinary", "", "lt"):
        with pytest.raises(ValueError, match="threshold_rule"):
            fastemb.binarize(x, 1, threshold_rule=bad)


def test_int8_codes_get_a_conversion_hint(rng):
    u = np.packbits(rng.standard_normal((4, 64)) > 0, axis=-1)
    signed = (u.astype(np.int16) - 128).astype(np.int8)  # sentence-transformers precision="binary"
    with pytest.raises(TypeError, match=r"uint8.*view\(np.uint8\) \^ 0x80"):
        fastemb.hamming(signed, signed)
    np.testing.assert_array_equal(signed.view(np.uint8) ^ 0x80, u)  # the conversion the message gives


# ---- 1-bit codes packed by np.packbits(x > 0, axis=-1) (the ubinary layout) --------------------

def sign_hamming(xq, xd):
    """Hamming distances between the sign patterns x > 0 of float rows (no packing at all)."""
    return ((xq[:, None, :] > 0) != (xd[None, :, :] > 0)).sum(axis=-1)


@pytest.mark.parametrize("dim", [1, 7, 64, 67, 384])
def test_packbits_codes_work_in_hamming_and_topk(rng, dim):
    xq, xd = rng.standard_normal((9, dim)), rng.standard_normal((211, dim))
    xq, xd = _with_zeros(rng, xq), _with_zeros(rng, xd)
    q, d = np.packbits(xq > 0, axis=-1), np.packbits(xd > 0, axis=-1)  # 2-D uint8, zero padding bits
    np.testing.assert_array_equal(q, fastemb.binarize(xq, 1, threshold_rule="gt")[:, 0])
    want = sign_hamming(xq, xd)
    np.testing.assert_array_equal(fastemb.hamming(q, d), want)
    np.testing.assert_array_equal(fastemb.hamming(q, d, dim), want)
    np.testing.assert_array_equal(fastemb.sdc_scores(q, d, dim), dim - 2 * want)
    for k in (1, 10, 211, 300):
        ts, ti = fastemb.sdc_topk(q, d, k, dim)
        es, ei = full_sort_topk((dim - 2 * want).astype(np.int32), k)
        np.testing.assert_array_equal(ts, es)
        np.testing.assert_array_equal(ti, ei)
    if _backend.native() is not None:
        C = _backend.native()
        q3, d3 = q[:, None, :], d[:, None, :]
        for isa in native_isas():
            np.testing.assert_array_equal(B.native_scores(C, q3, d3, dim, "hamming", isa), want, err_msg=isa)
            ts, ti = B.native_topk(C, q3, d3, 10, dim, isa)
            es, ei = full_sort_topk((dim - 2 * want).astype(np.int32), 10)
            np.testing.assert_array_equal(ts, es, err_msg=isa)
            np.testing.assert_array_equal(ti, ei, err_msg=isa)
