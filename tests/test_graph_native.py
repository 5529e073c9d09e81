"""Native graph kernels (fastemb._C graph_*, every CPU ISA; fastemb._C_cuda on a GPU) against the
NumPy reference (fastemb._reference.graph), bit for bit, on fresh random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastemb
from fastemb import _backend
from fastemb._reference import graph as ref

C = _backend.native()
pytestmark = pytest.mark.skipif(C is None, reason="native module fastemb._C not available")
ISAS = _backend.native_isas()

U64 = (1 << 64) - 1


def addr(a):
    return 0 if a is None else int(a.ctypes.data)


def random_csr(rng, rows, cols, density=0.1, weighted=True, int32=True, unsorted=True, duplicates=True,
               empty_rows=True):
    """CSR with unsorted and duplicate indices in stored order (what the kernels must honour)."""
    deg = rng.binomial(max(cols, 1), density, size=rows) if cols else np.zeros(rows, np.int64)
    if empty_rows and rows:
        deg[rng.random(rows) < 0.2] = 0
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = rng.integers(0, max(cols, 1), size=nnz)
    if not unsorted:
        for i in range(rows):
            indices[indptr[i]:indptr[i + 1]].sort()
    if duplicates and nnz > 2:
        k = max(1, nnz // 10)
        pos = rng.integers(1, nnz, size=k)
        indices[pos] = indices[pos - 1]
    indices = indices.astype(np.int32 if int32 else np.int64)
    data = rng.standard_normal(nnz).astype(np.float32) if weighted else None
    return indptr, indices, data


def ref_project_csr(seed, threshold, value, d, indptr, indices, data, cols):
    rows = len(indptr) - 1
    signs = ref.random_signs(seed, threshold, d, 0, cols)
    acc = np.zeros((rows, d), np.float32)
    deg = np.diff(indptr)
    for t in range(int(deg.max()) if rows else 0):
        r = np.nonzero(deg > t)[0]
        e = indptr[r] + t
        xv = data[e] if data is not None else np.ones(len(e), np.float32)
        acc[r] += xv[:, None] * signs[indices[e]]  # x * (+-1 or 0): exact, so == acc +- x
    return (acc * np.float32(value)).astype(np.float32)


def spec(rng, d, s=None):
    s = float(rng.choice([1.0, 3.0, 7.5, 40.0])) if s is None else s
    threshold, value = ref.random_spec(s, d)
    seed = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2))  # full 64-bit range
    return seed, threshold, value


@pytest.fixture
def threads():
    before = fastemb.get_num_threads()
    yield
    fastemb.set_num_threads(before)


# ---- random rows -----------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 16, 100, 513])
def test_random_rows(rng, isa, d):
    seed, threshold, value = spec(rng, d)
    row0, rows = int(rng.integers(0, 10**6)), int(rng.integers(1, 70))
    scale = rng.standard_normal(rows).astype(np.float32)
    scale[0] = 0.0
    out = np.full((rows, d), np.nan, np.float32)
    C.graph_random_rows(seed, threshold, float(value), d, row0, rows, addr(scale), addr(out), isa)
    np.testing.assert_array_equal(out, ref.random_rows(seed, threshold, value, d, row0, rows, scale))
    C.graph_random_rows(seed, threshold, float(value), d, row0, rows, 0, addr(out), isa)
    np.testing.assert_array_equal(out, ref.random_rows(seed, threshold, value, d, row0, rows))


@pytest.mark.parametrize("isa", ISAS)
def test_random_rows_sharding_and_extremes(rng, isa):
    d, n = 37, 300
    for seed in (0, U64, int(rng.integers(0, 1 << 62))):
        threshold, value = ref.random_spec(3.0, d)
        whole = np.empty((n, d), np.float32)
        C.graph_random_rows(seed, threshold, float(value), d, 0, n, 0, addr(whole), isa)
        a, b = sorted(int(v) for v in rng.integers(0, n, size=2))
        part = np.empty((b - a, d), np.float32)
        C.graph_random_rows(seed, threshold, float(value), d, a, b - a, 0, addr(part), isa)
        np.testing.assert_array_equal(part, whole[a:b])
        density = np.count_nonzero(whole) / whole.size
        assert abs(density - 1 / 3) < 0.03
    # s = 1: every entry nonzero; threshold 0: none
    out = np.empty((5, d), np.float32)
    C.graph_random_rows(1, 1 << 53, 0.5, d, 0, 5, 0, addr(out), isa)
    assert np.all(np.abs(out) == 0.5)
    C.graph_random_rows(1, 0, 0.5, d, 0, 5, 0, addr(out), isa)
    assert not out.any()


def test_random_rows_isas_agree(rng):
    d, n = 130, 257
    seed, threshold, value = spec(rng, d)
    outs = []
    for isa in ISAS:
        out = np.empty((n, d), np.float32)
        C.graph_random_rows(seed, threshold, float(value), d, 5, n, 0, addr(out), isa)
        outs.append(out)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


# ---- projection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100, 513])
def test_project_dense(rng, isa, d):
    rows, n_in = int(rng.integers(1, 40)), int(rng.integers(1, 90))
    seed, threshold, value = spec(rng, d)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0.0
    out = np.full((rows, d), np.nan, np.float32)
    C.graph_project_dense(seed, threshold, float(value), d, addr(x), rows, n_in, addr(out), isa)
    np.testing.assert_array_equal(out, ref.project_dense(seed, threshold, value, d, x))


@pytest.mark.parametrize("isa", ISAS)
def test_project_dense_many_blocks(rng, isa):
    # n_in * d above one R block (2^20 entries): the blocks must keep c increasing.
    d, rows, n_in = 700, 3, 1600
    seed, threshold, value = spec(rng, d, s=40.0)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    out = np.empty((rows, d), np.float32)
    C.graph_project_dense(seed, threshold, float(value), d, addr(x), rows, n_in, addr(out), isa)
    np.testing.assert_array_equal(out, ref.project_dense(seed, threshold, value, d, x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("int32", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("cols", [5, 60, 3000])
def test_project_csr(rng, isa, int32, weighted, cols):
    # cols = 3000 with few nonzeros takes the on-the-fly path; small cols the R table.
    d = int(rng.choice([1, 7, 64, 130]))
    rows = int(rng.integers(1, 50))
    indptr, indices, data = random_csr(rng, rows, cols, density=min(0.5, 8 / cols), weighted=weighted, int32=int32)
    seed, threshold, value = spec(rng, d)
    out = np.full((rows, d), np.nan, np.float32)
    C.graph_project_csr(seed, threshold, float(value), d, addr(indptr), addr(indices), int32, addr(data), rows, cols,
                        addr(out), isa)
    expect = ref_project_csr(seed, threshold, value, d, indptr, indices, data, cols)
    np.testing.assert_array_equal(out, expect)
    if data is None:  # dense and CSR agree when the CSR is sorted without duplicates
        return


@pytest.mark.parametrize("isa", ISAS)
def test_project_csr_matches_dense(rng, isa):
    d, rows, cols = 48, 20, 70
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.count_nonzero(x, axis=1), out=indptr[1:])
    r, c = np.nonzero(x)
    seed, threshold, value = spec(rng, d)
    dense = np.empty((rows, d), np.float32)
    sparse = np.empty((rows, d), np.float32)
    C.graph_project_dense(seed, threshold, float(value), d, addr(x), rows, cols, addr(dense), isa)
    idx = c.astype(np.int64)
    vals = x[r, c].astype(np.float32)
    C.graph_project_csr(seed, threshold, float(value), d, addr(indptr), addr(idx), False, addr(vals), rows, cols,
                        addr(sparse), isa)
    np.testing.assert_array_equal(sparse, dense)


# ---- propagate -------------------------------------------------------------------------------------

def run_propagate(isa, indptr, indices, data, row_scale, prev, normalize, pn, alpha, accum):
    n, d = prev.shape
    cur = np.full_like(prev, np.nan)
    C.graph_propagate(addr(indptr), addr(indices), indices.dtype == np.int32, addr(data), n, addr(row_scale),
                      addr(prev), d, addr(cur), normalize, pn, alpha, addr(accum), isa)
    return cur


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 16, 100, 513])
@pytest.mark.parametrize("weighted", [True, False])
def test_propagate(rng, isa, d, weighted):
    n = int(rng.integers(1, 120))
    indptr, indices, data = random_csr(rng, n, n, density=min(1.0, 6 / n), weighted=weighted,
                                       int32=bool(rng.integers(0, 2)))
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, rng.random(n) + 0.5, 0.0).astype(np.float32)  # isolated rows: 0
    prev = rng.standard_normal((n, d)).astype(np.float32)
    for normalize, pn in [(True, False), (True, True), (False, False), (False, True)]:
        alpha = float(np.float32(rng.standard_normal() * 3))
        with_accum = bool(rng.integers(0, 2))
        accum = rng.standard_normal((n, d)).astype(np.float32) if with_accum else None
        accum_ref = None if accum is None else accum.copy()
        cur = run_propagate(isa, indptr, indices, data, row_scale, prev, normalize, pn, alpha, accum)
        expect = ref.propagate(indptr, indices, data, row_scale, prev, normalize, pn, alpha, accum_ref)
        np.testing.assert_array_equal(cur, expect)
        if accum is not None:
            np.testing.assert_array_equal(accum, accum_ref)


@pytest.mark.parametrize("isa", ISAS)
def test_propagate_directed_and_power_law(rng, isa):
    # Directed graph with a few very high out-degree rows (several prefetch windows, row tasks of
    # very different costs), d with a partial last chunk.
    n, d = 400, 300
    deg = rng.integers(0, 4, size=n)
    deg[rng.integers(0, n, size=3)] = 700
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = rng.integers(0, n, size=int(indptr[-1])).astype(np.int64)
    data = rng.random(len(indices)).astype(np.float32)
    row_scale = (1.0 / np.maximum(deg, 1)).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    accum = np.zeros((n, d), np.float32)
    accum_ref = accum.copy()
    cur = run_propagate(isa, indptr, indices, data, row_scale, prev, True, False, 0.25, accum)
    np.testing.assert_array_equal(cur, ref.propagate(indptr, indices, data, row_scale, prev, True, False, 0.25,
                                                     accum_ref))
    np.testing.assert_array_equal(accum, accum_ref)


@pytest.mark.parametrize("isa", ISAS)
def test_propagate_zero_rows_finite(rng, isa):
    n, d = 10, 20
    indptr = np.zeros(n + 1, np.int64)  # no edges at all
    indices = np.zeros(0, np.int32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    accum = np.ones((n, d), np.float32)
    cur = run_propagate(isa, indptr, indices, None, np.zeros(n, np.float32), prev, True, True, 2.0, accum)
    assert not cur.any() and np.all(accum == 1.0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), normalize=st.booleans(),
       pn=st.booleans(), weighted=st.booleans())
def test_propagate_property(n, d, seed, normalize, pn, weighted):
    rng = np.random.default_rng(seed)
    indptr, indices, data = random_csr(rng, n, n, density=0.3, weighted=weighted)
    row_scale = rng.random(n).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    for isa in ISAS:
        accum = np.zeros((n, d), np.float32)
        accum_ref = accum.copy()
        cur = run_propagate(isa, indptr, indices, data, row_scale, prev, normalize, pn, 1.5, accum)
        np.testing.assert_array_equal(cur, ref.propagate(indptr, indices, data, row_scale, prev, normalize, pn, 1.5,
                                                         accum_ref))
        np.testing.assert_array_equal(accum, accum_ref)
        if normalize and pn:
            norms = np.linalg.norm(cur.astype(np.float64), axis=1)
            assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_propagate_threads_same_bits(rng, threads):
    n, d = 3000, 64
    indptr, indices, data = random_csr(rng, n, n, density=10 / n)
    row_scale = rng.random(n).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    results = []
    for t in (1, 2, 1):
        fastemb.set_num_threads(t)
        accum = np.zeros((n, d), np.float32)
        cur = run_propagate("", indptr, indices, data, row_scale, prev, True, False, 1.0, accum)
        results.append((cur, accum))
    for cur, accum in results[1:]:
        np.testing.assert_array_equal(cur, results[0][0])
        np.testing.assert_array_equal(accum, results[0][1])


# ---- propagate in column bands (FASTEMB_GRAPH_BAND_ROWS forces them on small graphs) -----------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 100, 513])
@pytest.mark.parametrize("weighted", [True, False])
def test_propagate_bands_same_bits(rng, monkeypatch, isa, d, weighted):
    # Bands of 1 row up to more rows than the graph: the bits of the one-pass step and of the reference, with
    # unsorted and duplicate indices (the stored order is kept), empty rows, both index types, every epilogue.
    n = int(rng.integers(2, 150))
    indptr, indices, data = random_csr(rng, n, n, density=min(1.0, 8 / n), weighted=weighted,
                                       int32=bool(rng.integers(0, 2)), unsorted=bool(rng.integers(0, 2)))
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, rng.random(n) + 0.5, 0.0).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    for normalize, pn in [(True, False), (True, True), (False, False), (False, True)]:
        alpha = float(np.float32(rng.standard_normal() * 3))
        accum0 = rng.standard_normal((n, d)).astype(np.float32)
        want_accum = accum0.copy()
        want = ref.propagate(indptr, indices, data, row_scale, prev, normalize, pn, alpha, want_accum)
        for band in ["0", "1", str(int(rng.integers(2, n + 1))), str(n + 5)]:
            monkeypatch.setenv("FASTEMB_GRAPH_BAND_ROWS", band)
            accum = accum0.copy()
            cur = run_propagate(isa, indptr, indices, data, row_scale, prev, normalize, pn, alpha, accum)
            np.testing.assert_array_equal(cur.view(np.uint32), want.view(np.uint32), err_msg=f"bands of {band}")
            np.testing.assert_array_equal(accum.view(np.uint32), want_accum.view(np.uint32))


def test_propagate_bands_threads_and_accum_init(rng, monkeypatch, threads):
    # A power-law-like graph (a few rows with hundreds of edges across every band), any thread count, accum_init.
    n, d = 2000, 40
    deg = rng.integers(0, 12, size=n)
    deg[rng.integers(0, n, size=5)] = 900
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = np.concatenate([np.sort(rng.integers(0, n, size=k)) for k in deg]).astype(np.int32)
    data = rng.random(len(indices)).astype(np.float32)
    row_scale = (1.0 / np.maximum(deg, 1)).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    results = []
    for band, t in [("0", 1), ("0", 2), ("37", 1), ("37", 2), ("512", 2)]:
        monkeypatch.setenv("FASTEMB_GRAPH_BAND_ROWS", band)
        fastemb.set_num_threads(t)
        accum = np.full((n, d), np.nan, np.float32)
        cur = np.full((n, d), np.nan, np.float32)
        C.graph_propagate(addr(indptr), addr(indices), True, addr(data), n, addr(row_scale), addr(prev), d, addr(cur),
                          True, False, 0.5, addr(accum), "", accum_init=True)
        results.append((cur, accum))
    want_accum = np.zeros((n, d), np.float32)
    want = ref.propagate(indptr, indices, data, row_scale, prev, True, False, 0.5, want_accum)
    for cur, accum in results:
        np.testing.assert_array_equal(cur.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(accum.view(np.uint32), want_accum.view(np.uint32))


@pytest.mark.parametrize("value", ["-1", "abc", "12x", ""])
def test_band_rows_env_bad(rng, monkeypatch, value):
    indptr, indices, data = random_csr(rng, 5, 5, density=0.5)
    prev = rng.standard_normal((5, 3)).astype(np.float32)
    monkeypatch.setenv("FASTEMB_GRAPH_BAND_ROWS", value)
    with pytest.raises(ValueError, match="FASTEMB_GRAPH_BAND_ROWS"):
        run_propagate("", indptr, indices, data, None, prev, True, False, 1.0, None)


# ---- accumulate, norm -------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 16, 100, 513])
def test_accumulate(rng, isa, d):
    rows = int(rng.integers(1, 60))
    x = rng.standard_normal((rows, d)).astype(np.float32)
    x[0] = 0.0
    for normalize in (True, False):
        alpha = float(np.float32(rng.standard_normal()))
        accum = rng.standard_normal((rows, d)).astype(np.float32)
        expect = accum.copy()
        if normalize:
            norm = ref.norm_fixed_order(x)
            ok = norm > 0
            v = np.where(ok[:, None], x / np.where(ok, norm, np.float32(1))[:, None], np.float32(0)).astype(np.float32)
        else:
            v = x
        expect += np.float32(alpha) * v
        C.graph_accumulate(addr(x), rows, d, normalize, alpha, addr(accum), isa)
        np.testing.assert_array_equal(accum, expect)


@pytest.mark.parametrize("d", [1, 5, 16, 17, 100, 513])
def test_norm_fixed_order(rng, d):
    u = rng.standard_normal(d).astype(np.float32)
    assert np.float32(C.graph_norm_fixed_order(addr(u), d)) == ref.norm_fixed_order(u[None, :])[0]


# ---- standardize --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 5, 4096, 9000])
def test_standardize_columns(rng, rows, threads):
    d = 13
    x = (rng.standard_normal((rows, d)) * rng.random(d) * 10 + rng.standard_normal(d) * 5).astype(np.float32)
    x[:, 3] = 2.5  # constant column: std 0 -> divided by 1
    outs = []
    for t in (1, 2):
        fastemb.set_num_threads(t)
        y = x.copy()
        mean = np.empty(d)
        std = np.empty(d)
        C.graph_standardize_columns(addr(y), rows, d, addr(mean), addr(std))
        outs.append((y, mean, std))
    x64 = x.astype(np.float64)
    m64, s64 = x64.mean(axis=0), x64.std(axis=0)
    y, mean, std = outs[0]
    np.testing.assert_allclose(mean, m64, rtol=1e-12, atol=1e-12 * np.abs(x64).max())
    np.testing.assert_allclose(std, s64, rtol=1e-12, atol=1e-12 * np.abs(x64).max())
    assert std[3] == 0.0
    expect = ((x64 - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    np.testing.assert_array_equal(y, expect)
    np.testing.assert_allclose(y, ((x64 - m64) / np.where(s64 > 0, s64, 1.0)), rtol=1e-5, atol=1e-5)
    for y2, mean2, std2 in outs[1:]:
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(mean2, mean)
        np.testing.assert_array_equal(std2, std)


def test_standardize_empty():
    mean, std = np.full(3, np.nan), np.full(3, np.nan)
    C.graph_standardize_columns(0, 0, 3, addr(mean), addr(std))
    assert not mean.any() and not std.any()


# ---- bad arguments ------------------------------------------------------------------------------------

def test_bad_arguments(rng):
    n, d = 6, 4
    indptr = np.array([0, 1, 2, 3, 4, 5, 6], np.int64)
    indices = np.array([1, 2, 3, 4, 5, 0], np.int32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    cur = np.empty_like(prev)
    scale = np.ones(n, np.float32)

    def prop(ip, ix, p=prev, c=cur, dd=d, isa=""):
        C.graph_propagate(addr(ip), addr(ix), ix.dtype == np.int32, 0, n, addr(scale), addr(p), dd, addr(c), True,
                          False, 1.0, 0, isa)

    prop(indptr, indices)  # fine
    with pytest.raises(ValueError, match="indices"):
        prop(indptr, np.array([1, 2, 3, 4, 6, 0], np.int32))
    with pytest.raises(ValueError, match="indices"):
        prop(indptr, np.array([1, 2, -1, 4, 5, 0], np.int64))
    with pytest.raises(ValueError, match="indptr"):
        prop(np.array([0, 2, 1, 3, 4, 5, 6], np.int64), indices)
    with pytest.raises(ValueError, match="indptr"):
        prop(np.array([1, 2, 3, 4, 5, 6, 6], np.int64), indices)
    with pytest.raises(ValueError, match="cur"):
        prop(indptr, indices, c=prev)
    with pytest.raises(ValueError, match="d must be"):
        prop(indptr, indices, dd=0)
    with pytest.raises(ValueError, match="isa"):
        prop(indptr, indices, isa="sse9")
    with pytest.raises(ValueError, match="prev"):
        C.graph_propagate(addr(indptr), addr(indices), True, 0, n, addr(scale), 0, d, addr(cur), True, False, 1.0, 0)
    out = np.empty((3, d), np.float32)
    with pytest.raises(ValueError, match="d must be"):
        C.graph_random_rows(0, 1 << 50, 1.0, 0, 0, 3, 0, addr(out))
    with pytest.raises(ValueError, match="rows"):
        C.graph_random_rows(0, 1 << 50, 1.0, d, 0, -1, 0, addr(out))
    with pytest.raises(ValueError, match="out"):
        C.graph_random_rows(0, 1 << 50, 1.0, d, 0, 3, 0, 0)
    with pytest.raises(ValueError, match="threshold"):
        C.graph_random_rows(0, (1 << 53) + 1, 1.0, d, 0, 3, 0, addr(out))
    with pytest.raises(ValueError, match="indices"):
        C.graph_project_csr(0, 1 << 50, 1.0, d, addr(indptr), addr(indices), True, 0, n, 5, addr(prev))
    with pytest.raises((TypeError, OverflowError)):
        C.graph_random_rows(-1, 1 << 50, 1.0, d, 0, 3, 0, addr(out))


# ---- CUDA -------------------------------------------------------------------------------------------

def _cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    mod = _backend.cuda_module()
    if mod is None:
        pytest.skip("fastemb._C_cuda not built")
    return torch, mod


@pytest.mark.cuda
@pytest.mark.parametrize("d", [1, 7, 16, 100, 513])
def test_cuda_matches_reference(rng, d):
    torch, G = _cuda()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    n = 150
    seed, threshold, value = spec(rng, d)
    scale = rng.standard_normal(n).astype(np.float32)
    out = torch.empty((n, d), device=dev)
    G.graph_random_rows(seed, threshold, float(value), d, 7, n, torch.from_numpy(scale).to(dev).data_ptr(),
                        out.data_ptr(), stream)
    np.testing.assert_array_equal(out.cpu().numpy(), ref.random_rows(seed, threshold, value, d, 7, n, scale))

    x = rng.standard_normal((9, 33)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0
    o = torch.empty((9, d), device=dev)
    G.graph_project_dense(seed, threshold, float(value), d, torch.from_numpy(x).to(dev).data_ptr(), 9, 33,
                          o.data_ptr(), stream)
    np.testing.assert_array_equal(o.cpu().numpy(), ref.project_dense(seed, threshold, value, d, x))

    ip, ix, w = random_csr(rng, n, 40, density=0.1)
    t_ip, t_ix, t_w = (torch.from_numpy(a).to(dev) for a in (ip, ix, w))
    o = torch.empty((n, d), device=dev)
    G.graph_project_csr(seed, threshold, float(value), d, t_ip.data_ptr(), t_ix.data_ptr(), True, t_w.data_ptr(), n,
                        40, o.data_ptr(), stream, nnz=len(ix))
    np.testing.assert_array_equal(o.cpu().numpy(), ref_project_csr(seed, threshold, value, d, ip, ix, w, 40))

    ip, ix, w = random_csr(rng, n, n, density=0.05)
    t_ip, t_ix, t_w = (torch.from_numpy(a).to(dev) for a in (ip, ix, w))
    rs = rng.random(n).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    for normalize, pn in [(True, False), (True, True), (False, False)]:
        accum = rng.standard_normal((n, d)).astype(np.float32)
        t_acc = torch.from_numpy(accum).to(dev)
        cur = torch.empty((n, d), device=dev)
        G.graph_propagate(t_ip.data_ptr(), t_ix.data_ptr(), True, t_w.data_ptr(), n, torch.from_numpy(rs).to(dev).data_ptr(),
                          torch.from_numpy(prev).to(dev).data_ptr(), d, cur.data_ptr(), normalize, pn, 0.7,
                          t_acc.data_ptr(), stream, nnz=len(ix))
        expect = ref.propagate(ip, ix, w, rs, prev, normalize, pn, 0.7, accum)
        np.testing.assert_array_equal(cur.cpu().numpy(), expect)
        np.testing.assert_array_equal(t_acc.cpu().numpy(), accum)

    init = rng.random(n).astype(np.float32)
    cur = torch.empty((n, d), device=dev)
    G.graph_propagate_random(seed, threshold, float(value), d, torch.from_numpy(init).to(dev).data_ptr(),
                             t_ip.data_ptr(), t_ix.data_ptr(), True, t_w.data_ptr(), n,
                             torch.from_numpy(rs).to(dev).data_ptr(), cur.data_ptr(), True, False, 0.7, 0, stream,
                             nnz=len(ix))
    expect = ref.propagate(ip, ix, w, rs, ref.random_rows(seed, threshold, value, d, 0, n, init), True, False, 0.7,
                           None)
    np.testing.assert_array_equal(cur.cpu().numpy(), expect)

    y = (rng.standard_normal((5000, d)) * 3 + 1).astype(np.float32)
    t_y = torch.from_numpy(y).to(dev)
    mean_d, std_d = torch.empty(d, dtype=torch.float64, device=dev), torch.empty(d, dtype=torch.float64, device=dev)
    G.graph_standardize_columns(t_y.data_ptr(), 5000, d, mean_d.data_ptr(), std_d.data_ptr(), stream)
    mean, std = np.empty(d), np.empty(d)
    C.graph_standardize_columns(addr(y), 5000, d, addr(mean), addr(std))
    np.testing.assert_array_equal(t_y.cpu().numpy(), y)
    np.testing.assert_array_equal(mean_d.cpu().numpy(), mean)

    # The compute calls do not validate the CSR (no sync per call); graph_validate_csr does.
    bad = torch.from_numpy(np.array([0, 1, 5], np.int32)).to(dev)
    bad_ip = torch.tensor([0, 1, 2, 3], device=dev)
    with pytest.raises(ValueError, match="indices"):
        G.graph_validate_csr(bad_ip.data_ptr(), bad.data_ptr(), True, 3, 3, 3, stream)


@pytest.mark.cuda
def test_cuda_validate_csr():
    torch, G = _cuda()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream

    def validate(indptr, indices, rows, cols, nnz=None, int32=True):
        t_ip = torch.tensor(indptr, dtype=torch.int64, device=dev)
        t_ix = torch.tensor(list(indices) or [0], dtype=torch.int32 if int32 else torch.int64, device=dev)
        G.graph_validate_csr(t_ip.data_ptr(), t_ix.data_ptr(), int32, rows, cols,
                             len(indices) if nnz is None else nnz, stream)

    validate([0, 1, 3, 3], [2, 0, 2], 3, 3)  # valid: no error
    validate([0, 1, 3, 3], [2, 0, 2], 3, 3, int32=False)
    validate([0, 0], [], 1, 5)
    validate([0], [], 0, 0)
    with pytest.raises(ValueError, match=r"indices: an index is out of range \[0, 3\)"):
        validate([0, 1, 2, 3], [0, 1, 5], 3, 3)
    with pytest.raises(ValueError, match="indices: an index is out of range"):
        validate([0, 1, 2, 3], [0, -1, 2], 3, 3)
    with pytest.raises(ValueError, match="indices: an index is out of range"):
        validate([0, 1, 2, 3], [0, 1 << 40, 2], 3, 3, int32=False)
    with pytest.raises(ValueError, match="indptr: must start at 0"):
        validate([1, 2, 3], [0, 1, 2], 2, 3)
    with pytest.raises(ValueError, match="indptr: must be nondecreasing"):
        validate([0, 2, 1, 3], [0, 1, 2], 3, 3)
    with pytest.raises(ValueError, match="indptr: indptr\\[rows\\] = 3 must equal nnz = 2"):
        validate([0, 1, 2, 3], [0, 1, 2], 3, 3, nnz=2)
    with pytest.raises(ValueError, match="indptr: indptr\\[rows\\] = 2 must equal nnz = 3"):
        validate([0, 1, 2, 2], [0, 1, 2], 3, 3)
    # host checks, before any device read
    with pytest.raises(ValueError, match="negative number of rows"):
        validate([0], [], -1, 3)
    with pytest.raises(ValueError, match="negative number of columns"):
        validate([0], [], 0, -3)
    with pytest.raises(ValueError, match="nnz: must be >= 0"):
        validate([0], [], 0, 3, nnz=-1)
    with pytest.raises(ValueError, match="indptr: null pointer"):
        G.graph_validate_csr(0, 0, True, 0, 3, 0, stream)
    one_row = torch.tensor([0, 1], device=dev)
    with pytest.raises(ValueError, match="indices: null pointer"):
        G.graph_validate_csr(one_row.data_ptr(), 0, True, 1, 3, 1, stream)
    torch.cuda.synchronize()


def _clamped_csr(indptr, indices, data, n, nnz):
    """The valid CSR the CUDA kernels compute with on any indptr / indices: row i's edges are
    [clamp(indptr[i]), clamp(max(indptr[i + 1], e0))) within [0, nnz], columns outside [0, n) dropped."""
    ip, ix, w = [0], [], []
    for i in range(n):
        e0 = min(max(int(indptr[i]), 0), nnz)
        e1 = min(max(int(indptr[i + 1]), e0), nnz)
        for e in range(e0, e1):
            if 0 <= int(indices[e]) < n:
                ix.append(int(indices[e]))
                if data is not None:
                    w.append(data[e])
        ip.append(len(ix))
    return (np.array(ip, np.int64), np.array(ix, np.int64),
            None if data is None else np.array(w, np.float32).reshape(-1))


@pytest.mark.cuda
@pytest.mark.parametrize("int32", [True, False])
def test_cuda_bad_csr_no_crash(rng, int32):
    # Unvalidated garbage CSR: indptr negative, decreasing, past nnz, huge; indices out of range both ways.
    # The kernels must not read out of bounds (an illegal access would surface at the synchronize and
    # break every later call); the result is then that of the clamped CSR (documented, not promised).
    torch, G = _cuda()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    n = 7
    indptr = np.array([-3, 2, 100, 1, (1 << 62), 4, 5, -(1 << 62)], np.int64)
    big = (1 << 31) - 1 if int32 else (1 << 62)
    indices = np.array([0, -1, 6, big, 3, -big - 1, 2, n], np.int32 if int32 else np.int64)
    nnz = len(indices)
    data = rng.random(nnz).astype(np.float32)
    t_ip, t_ix, t_w = (torch.from_numpy(a).to(dev) for a in (indptr, indices, data))
    rs = torch.from_numpy(rng.random(n).astype(np.float32)).to(dev)
    seed, threshold, value = spec(rng, 16)
    for d in (7, 16, 128, 260):
        prev_np = rng.standard_normal((n, d)).astype(np.float32)
        prev = torch.from_numpy(prev_np).to(dev)
        for weighted in (True, False):
            w_ptr = t_w.data_ptr() if weighted else 0
            accum_np = rng.standard_normal((n, d)).astype(np.float32)
            accum = torch.from_numpy(accum_np).to(dev)
            cur, cur_r, out_p = (torch.empty((n, d), device=dev) for _ in range(3))
            G.graph_propagate(t_ip.data_ptr(), t_ix.data_ptr(), int32, w_ptr, n, rs.data_ptr(), prev.data_ptr(), d,
                              cur.data_ptr(), True, False, 0.5, accum.data_ptr(), stream, nnz=nnz)
            G.graph_propagate_random(seed, threshold, float(value), d, rs.data_ptr(), t_ip.data_ptr(),
                                     t_ix.data_ptr(), int32, w_ptr, n, rs.data_ptr(), cur_r.data_ptr(),
                                     True, True, 0.5, 0, stream, nnz=nnz)
            G.graph_project_csr(seed, threshold, float(value), d, t_ip.data_ptr(), t_ix.data_ptr(), int32, w_ptr, n,
                                n, out_p.data_ptr(), stream, nnz=nnz)
            torch.cuda.synchronize()
            ip, ix, w = _clamped_csr(indptr, indices, data if weighted else None, n, nnz)
            expect = ref.propagate(ip, ix, w, rs.cpu().numpy(), prev_np, True, False, 0.5, accum_np)
            np.testing.assert_array_equal(cur.cpu().numpy(), expect)
            np.testing.assert_array_equal(accum.cpu().numpy(), accum_np)
        # nnz = 0: every row empty, indices never read (null allowed)
        cur = torch.empty((n, d), device=dev)
        G.graph_propagate(t_ip.data_ptr(), 0, int32, 0, n, 0, prev.data_ptr(), d, cur.data_ptr(), False, False, 1.0, 0,
                          stream, nnz=0)
        np.testing.assert_array_equal(cur.cpu().numpy(), np.zeros((n, d), np.float32))
    cur = torch.empty((n, 260), device=dev)  # prev: the last one, [n, 260]
    with pytest.raises(ValueError, match="nnz: must be >= 0"):
        G.graph_propagate(t_ip.data_ptr(), t_ix.data_ptr(), int32, 0, n, 0, prev.data_ptr(), 260, cur.data_ptr(),
                          False, False, 1.0, 0, stream, nnz=-1)
    with pytest.raises(ValueError, match="indices: null pointer"):
        G.graph_propagate(t_ip.data_ptr(), 0, int32, 0, n, 0, prev.data_ptr(), 260, cur.data_ptr(), False, False,
                          1.0, 0, stream, nnz=nnz)
    with pytest.raises(TypeError):  # nnz is a required keyword: a call without it fails, nothing shifts
        G.graph_propagate(t_ip.data_ptr(), t_ix.data_ptr(), int32, 0, n, 0, prev.data_ptr(), 260, cur.data_ptr(),
                          False, False, 1.0, 0, stream)
    torch.cuda.synchronize()


@pytest.mark.cuda
@pytest.mark.parametrize("d", [4, 100, 128, 132, 260, 513])
@pytest.mark.parametrize("int32", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_propagate_paths(rng, d, int32, weighted, offset):
    # Both column mappings (float4 lanes when d % 4 == 0 and prev / cur are 16-byte aligned, else 4-byte
    # lanes; offset 1 shifts prev and cur by one float), rows of 0 to ~100 edges (several 32-edge batches,
    # counts not multiples of the unroll), duplicates and unsorted indices: the reference's bits.
    torch, G = _cuda()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    n = 300
    deg = rng.integers(0, 100, size=n)
    deg[rng.random(n) < 0.2] = 0
    deg[:4] = [40, 33, 32, 1]
    ip = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=ip[1:])
    ix = rng.integers(0, n, size=int(ip[-1])).astype(np.int32 if int32 else np.int64)
    w = rng.random(len(ix)).astype(np.float32) if weighted else None
    t_ip, t_ix = torch.from_numpy(ip).to(dev), torch.from_numpy(ix).to(dev)
    t_w = None if w is None else torch.from_numpy(w).to(dev)
    rs = rng.random(n).astype(np.float32)
    t_rs = torch.from_numpy(rs).to(dev)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    buf_prev = torch.empty(n * d + offset, device=dev)
    buf_cur = torch.empty(n * d + offset, device=dev)
    t_prev = buf_prev[offset:].view(n, d)
    t_prev.copy_(torch.from_numpy(prev))
    t_cur = buf_cur[offset:].view(n, d)
    for normalize, pn in [(True, False), (True, True), (False, False)]:
        accum = rng.standard_normal((n, d)).astype(np.float32)
        t_acc = torch.from_numpy(accum).to(dev)
        G.graph_propagate(t_ip.data_ptr(), t_ix.data_ptr(), int32, 0 if t_w is None else t_w.data_ptr(), n,
                          t_rs.data_ptr(), t_prev.data_ptr(), d, t_cur.data_ptr(), normalize,
                          pn, 0.7, t_acc.data_ptr(), stream, nnz=len(ix))
        expect = ref.propagate(ip, ix, w, rs, prev, normalize, pn, 0.7, accum)
        np.testing.assert_array_equal(t_cur.cpu().numpy(), expect)
        np.testing.assert_array_equal(t_acc.cpu().numpy(), accum)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100, 513])
@pytest.mark.parametrize("weighted", [True, False])
def test_propagate_random(rng, isa, d, weighted):
    # The first FastRP step without materializing diag(init_scale) R: same bits as random_rows +
    # propagate, and as the reference.
    n = int(rng.integers(1, 150))
    indptr, indices, data = random_csr(rng, n, n, density=min(1.0, 8 / n), weighted=weighted,
                                       int32=bool(rng.integers(0, 2)))
    seed, threshold, value = spec(rng, d)
    deg = np.diff(indptr)
    init_scale = np.where(deg > 0, rng.random(n) + 0.1, 0).astype(np.float32)
    row_scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0).astype(np.float32)
    prev = ref.random_rows(seed, threshold, value, d, 0, n, init_scale)
    for normalize, pn, with_accum in [(True, False, True), (False, False, False), (True, True, True)]:
        accum = rng.standard_normal((n, d)).astype(np.float32) if with_accum else None
        accum_ref = None if accum is None else accum.copy()
        cur = np.full((n, d), np.nan, np.float32)
        C.graph_propagate_random(seed, threshold, float(value), d, addr(init_scale), addr(indptr), addr(indices),
                                 indices.dtype == np.int32, addr(data), n, addr(row_scale), addr(cur), normalize, pn,
                                 0.5, addr(accum), isa)
        expect = ref.propagate(indptr, indices, data, row_scale, prev, normalize, pn, 0.5, accum_ref)
        np.testing.assert_array_equal(cur, expect)
        if accum is not None:
            np.testing.assert_array_equal(accum, accum_ref)


def test_projection_threads_same_bits(rng, threads):
    d, rows, cols = 96, 700, 300
    seed, threshold, value = spec(rng, d, s=3.0)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    indptr, indices, data = random_csr(rng, rows, cols, density=0.05)
    outs = []
    for t in (1, 2):
        fastemb.set_num_threads(t)
        a = np.empty((rows, d), np.float32)
        b = np.empty((rows, d), np.float32)
        r = np.empty((rows, d), np.float32)
        C.graph_project_dense(seed, threshold, float(value), d, addr(x), rows, cols, addr(a))
        C.graph_project_csr(seed, threshold, float(value), d, addr(indptr), addr(indices), True, addr(data), rows,
                            cols, addr(b))
        C.graph_random_rows(seed, threshold, float(value), d, 11, rows, 0, addr(r))
        outs.append((a, b, r))
    for u, v in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100])
@pytest.mark.parametrize("weighted", [True, False])
def test_propagate_random_same_bits_as_dense(rng, isa, d, weighted):
    # Bit for bit (signs of zeros included): the terms propagate_random skips are +-0 added to sums that
    # start at +0.0f, which round-to-nearest never turns into -0.
    n = int(rng.integers(1, 150))
    indptr, indices, data = random_csr(rng, n, n, density=min(1.0, 8 / n), weighted=weighted,
                                       int32=bool(rng.integers(0, 2)))
    seed, threshold, value = spec(rng, d, s=3.0)
    deg = np.diff(indptr)
    init_scale = np.where(deg > 0, rng.random(n) + 0.1, 0).astype(np.float32)
    row_scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0).astype(np.float32)
    prev = np.empty((n, d), np.float32)
    C.graph_random_rows(seed, threshold, float(value), d, 0, n, addr(init_scale), addr(prev), isa)
    for normalize, pn in [(True, False), (False, False), (True, True)]:
        dense = run_propagate(isa, indptr, indices, data, row_scale, prev, normalize, pn, 0.0, None)
        fused = np.full((n, d), np.nan, np.float32)
        C.graph_propagate_random(seed, threshold, float(value), d, addr(init_scale), addr(indptr), addr(indices),
                                 indices.dtype == np.int32, addr(data), n, addr(row_scale), addr(fused), normalize,
                                 pn, 0.0, 0, isa)
        np.testing.assert_array_equal(fused.view(np.uint32), dense.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100, 513])
def test_accum_init(rng, isa, d):
    # accum_init writes 0 + alpha * v without reading accum: the same bits as a zero-filled accum, for
    # both steps, every normalization mode, and rows whose norm is 0 (isolated nodes).
    n = int(rng.integers(2, 120))
    indptr, indices, data = random_csr(rng, n, n, density=min(1.0, 4 / n), weighted=bool(rng.integers(0, 2)),
                                       int32=bool(rng.integers(0, 2)))
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, rng.random(n) + 0.5, 0.0).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    seed, threshold, value = spec(rng, d)
    init_scale = (rng.random(n) + 0.1).astype(np.float32)
    for normalize, pn in [(True, False), (True, True), (False, False)]:
        alpha = float(np.float32(rng.standard_normal() * 3))
        zeroed = np.zeros((n, d), np.float32)
        garbage = np.full((n, d), np.nan, np.float32)
        cur_a = np.empty((n, d), np.float32)
        cur_b = np.empty((n, d), np.float32)
        for out, acc, init in [(cur_a, zeroed, False), (cur_b, garbage, True)]:
            C.graph_propagate(addr(indptr), addr(indices), indices.dtype == np.int32, addr(data), n,
                              addr(row_scale), addr(prev), d, addr(out), normalize, pn, alpha, addr(acc), isa,
                              accum_init=init)
        np.testing.assert_array_equal(garbage.view(np.uint32), zeroed.view(np.uint32))
        np.testing.assert_array_equal(cur_b.view(np.uint32), cur_a.view(np.uint32))
        zeroed[...] = 0
        garbage[...] = np.nan
        for acc, init in [(zeroed, False), (garbage, True)]:
            C.graph_propagate_random(seed, threshold, float(value), d, addr(init_scale), addr(indptr),
                                     addr(indices), indices.dtype == np.int32, addr(data), n, addr(row_scale),
                                     addr(cur_a), normalize, pn, alpha, addr(acc), isa, accum_init=init)
        np.testing.assert_array_equal(garbage.view(np.uint32), zeroed.view(np.uint32))
