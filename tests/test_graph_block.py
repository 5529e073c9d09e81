"""The block form of the FastRP step (graph.h propagate_block / propagate_random_block, fastemb.dask's
kernels): chaining a row block's column blocks in increasing order, continuing one float32 accumulator,
gives the one-machine propagate's bits, on every ISA, native and NumPy reference alike."""
from __future__ import annotations

import numpy as np
import pytest

from fastemb import _backend
from fastemb import graph as g
from fastemb._reference import graph as ref

C = _backend.native()
ISAS = _backend.native_isas() if C is not None else []
native = pytest.mark.skipif(C is None, reason="native module fastemb._C not available")


def addr(a):
    return 0 if a is None else int(a.ctypes.data)


def bits(a):
    return np.asarray(a).view(np.uint32)


def sorted_csr(rng, n, density, weighted, int32=True):
    """CSR [n, n] with sorted indices, duplicates, empty rows (rows ordered by column block for any blocks)."""
    deg = rng.binomial(n, density, size=n)
    deg[rng.random(n) < 0.2] = 0
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = rng.integers(0, n, size=nnz)
    for i in range(n):
        indices[indptr[i]:indptr[i + 1]].sort()
    if nnz > 2:  # duplicates next to each other
        pos = rng.integers(1, nnz, size=max(1, nnz // 10))
        same_row = np.searchsorted(indptr, pos, side="right") == np.searchsorted(indptr, pos - 1, side="right")
        indices[pos[same_row]] = indices[pos[same_row] - 1]
    data = (rng.random(nnz) * 3).astype(np.float32) if weighted else None
    return indptr, indices.astype(np.int32 if int32 else np.int64), data


def random_blocks(rng, n, k):
    """k node-block boundaries over [0, n], some blocks empty."""
    cuts = np.sort(rng.integers(0, n + 1, size=k - 1))
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


def column_piece(indptr, indices, data, r0, r1, c0, c1):
    """A[r0:r1, c0:c1] with local columns, stored order kept (a Csr)."""
    rows = r1 - r0
    e0, e1 = indptr[r0], indptr[r1]
    idx = indices[e0:e1].astype(np.int64)
    row_of = np.repeat(np.arange(rows), np.diff(indptr[r0:r1 + 1]))
    keep = (idx >= c0) & (idx < c1)
    ip = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(row_of[keep], minlength=rows), out=ip[1:])
    local = (idx[keep] - c0).astype(indices.dtype)
    w = None if data is None else np.ascontiguousarray(data[e0:e1][keep])
    return g.Csr(ip, np.ascontiguousarray(local), w, rows, c1 - c0)


def run_block(isa, a, row_scale, prev, d, acc_in, out, finish, normalize, pn, alpha, accum, init=False):
    C.graph_propagate_block(addr(a.indptr), addr(a.indices), a.indices_int32, addr(a.data), a.rows, a.cols,
                            addr(row_scale), addr(prev), d, addr(acc_in), addr(out), finish, normalize, pn, alpha,
                            addr(accum), accum_init=init, isa=isa)


@native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100, 513])
@pytest.mark.parametrize("weighted", [True, False])
def test_chain_equals_propagate(rng, isa, d, weighted):
    n = int(rng.integers(2, 140))
    indptr, indices, data = sorted_csr(rng, n, min(1.0, 6 / n), weighted, int32=bool(rng.integers(0, 2)))
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, rng.random(n) + 0.5, 0.0).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    bounds = random_blocks(rng, n, int(rng.integers(1, 6)))
    for normalize, pn in [(True, False), (True, True), (False, False), (False, True)]:
        alpha = float(np.float32(rng.standard_normal() * 3))
        accum0 = rng.standard_normal((n, d)).astype(np.float32)
        want_accum = accum0.copy()
        want = np.empty((n, d), np.float32)
        C.graph_propagate(addr(indptr), addr(indices), indices.dtype == np.int32, addr(data), n, addr(row_scale),
                          addr(prev), d, addr(want), normalize, pn, alpha, addr(want_accum), isa)
        got_accum = accum0.copy()
        got = np.empty((n, d), np.float32)
        for i in range(len(bounds) - 1):
            r0, r1 = int(bounds[i]), int(bounds[i + 1])
            acc = None
            links = [j for j in range(len(bounds) - 1)]
            for k, j in enumerate(links):
                c0, c1 = int(bounds[j]), int(bounds[j + 1])
                a = column_piece(indptr, indices, data, r0, r1, c0, c1)
                in_place = bool(rng.integers(0, 2))
                out = acc if (acc is not None and in_place) else np.full((r1 - r0, d), np.nan, np.float32)
                finish = k == len(links) - 1
                expect = ref.spmm_csr_order(a.indptr, a.indices, a.data, prev[c0:c1],
                                            None if acc is None else acc.copy())
                run_block(isa, a, row_scale[r0:r1], prev[c0:c1], d, acc, out, finish, normalize, pn, alpha,
                          got_accum[r0:r1])
                if not finish:  # the raw partial sums: the reference continuation
                    np.testing.assert_array_equal(bits(out), bits(expect))
                acc = out
            got[r0:r1] = acc
        np.testing.assert_array_equal(bits(got), bits(want))
        np.testing.assert_array_equal(bits(got_accum), bits(want_accum))


@native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100])
def test_block_accum_init_and_no_edges(rng, isa, d):
    # accum_init writes 0 + alpha * v (accum not read); a row block with no edges finishes from a [rows, 0] block.
    rows = int(rng.integers(1, 50))
    row_scale = (rng.random(rows) + 0.5).astype(np.float32)
    acc = rng.standard_normal((rows, d)).astype(np.float32)
    empty = g.Csr(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), None, rows, 0)
    for normalize, pn in [(True, False), (True, True), (False, False)]:
        want_accum = np.zeros((rows, d), np.float32)
        want = ref.propagate_block(empty.indptr, empty.indices, None, row_scale, np.zeros((0, d), np.float32),
                                   acc, True, normalize, pn, 1.5, want_accum)
        garbage = np.full((rows, d), np.nan, np.float32)
        out = np.empty((rows, d), np.float32)
        run_block(isa, empty, row_scale, None, d, acc, out, True, normalize, pn, 1.5, garbage, init=True)
        np.testing.assert_array_equal(bits(out), bits(want))
        np.testing.assert_array_equal(bits(garbage), bits(want_accum))
        zeros = np.empty((rows, d), np.float32)
        run_block(isa, empty, row_scale, None, d, None, zeros, True, normalize, pn, 0.0, None)
        np.testing.assert_array_equal(zeros, 0)


@native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100])
def test_random_table(rng, isa, d):
    seed = int(rng.integers(0, 1 << 62))
    s = float(rng.choice([1.0, 3.0, 40.0]))
    threshold, value = ref.random_spec(s, d)
    row0, n = int(rng.integers(0, 10**6)), int(rng.integers(0, 300))
    offsets = np.empty(n + 1, np.int64)
    C.graph_random_table_offsets(seed, threshold, float(value), d, row0, n, addr(offsets), isa)
    lists = np.empty(int(offsets[-1]), np.int32)
    C.graph_random_table_lists(seed, threshold, float(value), d, row0, n, addr(offsets), addr(lists), len(lists), isa)
    signs = ref.random_signs(seed, threshold, d, row0, n)
    for k in range(n):
        cols = np.flatnonzero(signs[k])
        expect = (cols << 1) | (signs[k, cols] < 0)
        np.testing.assert_array_equal(lists[offsets[k]:offsets[k + 1]], expect)
    table = g.NumpyOps().random_table((seed, threshold, value, d), row0, n)
    np.testing.assert_array_equal(table[0], offsets)
    np.testing.assert_array_equal(table[1], lists)


@native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 100])
@pytest.mark.parametrize("weighted", [True, False])
def test_random_chain_equals_propagate_random(rng, isa, d, weighted):
    n = int(rng.integers(2, 150))
    indptr, indices, data = sorted_csr(rng, n, min(1.0, 8 / n), weighted)
    threshold, value = ref.random_spec(3.0, d)
    seed = int(rng.integers(0, 1 << 62))
    deg = np.diff(indptr)
    init_scale = np.where(deg > 0, rng.random(n) + 0.1, 1).astype(np.float32)
    row_scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0).astype(np.float32)
    bounds = random_blocks(rng, n, int(rng.integers(1, 5)))
    want = np.empty((n, d), np.float32)
    want_accum = np.empty((n, d), np.float32)
    C.graph_propagate_random(seed, threshold, float(value), d, addr(init_scale), addr(indptr), addr(indices), True,
                             addr(data), n, addr(row_scale), addr(want), True, False, 0.75, addr(want_accum), isa,
                             accum_init=True)
    got = np.empty((n, d), np.float32)
    got_accum = np.empty((n, d), np.float32)
    nb = len(bounds) - 1
    for i in range(nb):
        r0, r1 = int(bounds[i]), int(bounds[i + 1])
        acc = None
        for j in range(nb):
            c0, c1 = int(bounds[j]), int(bounds[j + 1])
            a = column_piece(indptr, indices, data, r0, r1, c0, c1)
            offsets = np.empty(c1 - c0 + 1, np.int64)
            C.graph_random_table_offsets(seed, threshold, float(value), d, c0, c1 - c0, addr(offsets), isa)
            lists = np.empty(int(offsets[-1]), np.int32)
            C.graph_random_table_lists(seed, threshold, float(value), d, c0, c1 - c0, addr(offsets), addr(lists),
                                       len(lists), isa)
            out = acc if acc is not None else np.empty((r1 - r0, d), np.float32)
            C.graph_propagate_random_block(seed, threshold, float(value), d, addr(init_scale[c0:c1]), addr(offsets),
                                           addr(lists), len(lists), addr(a.indptr), addr(a.indices), True,
                                           addr(a.data), r1 - r0, c1 - c0, addr(row_scale[r0:r1]), addr(acc),
                                           addr(out), j == nb - 1, True, False, 0.75, addr(got_accum[r0:r1]), True,
                                           isa)
            acc = out
        got[r0:r1] = acc
    np.testing.assert_array_equal(bits(got), bits(want))
    np.testing.assert_array_equal(bits(got_accum), bits(want_accum))


@pytest.mark.parametrize("weighted", [True, False])
def test_numpy_ops_fallback_same_bits(rng, monkeypatch, weighted):
    # NumpyOps without the native module (the reference path) against the native path: propagate_block and
    # propagate_random_block (materialized random rows), chained over two column blocks.
    n, d = 90, 24
    indptr, indices, data = sorted_csr(rng, n, 0.08, weighted)
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0).astype(np.float32)
    init_scale = (rng.random(n) + 0.2).astype(np.float32)
    threshold, value = ref.random_spec(3.0, d)
    spec = (7, threshold, value, d)
    prev = rng.standard_normal((n, d)).astype(np.float32)

    def chain(random):
        ops = g.NumpyOps()
        out_all, accum = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
        for r0, r1 in [(0, 40), (40, n)]:
            acc = None
            for c0, c1, last in [(0, 55, False), (55, n, True)]:
                a = column_piece(indptr, indices, data, r0, r1, c0, c1)
                out = acc if acc is not None else np.empty((r1 - r0, d), np.float32)
                if random:
                    ops.propagate_random_block(spec, c0, init_scale[c0:c1], None, a, row_scale[r0:r1], acc, out, last,
                                               True, False, 2.0, accum[r0:r1], accum_init=True)
                else:
                    ops.propagate_block(a, row_scale[r0:r1], prev[c0:c1], acc, out, last, True, True, 2.0,
                                        accum[r0:r1], accum_init=True)
                acc = out
            out_all[r0:r1] = acc
        return out_all, accum

    results = {}
    for backend in (["native"] if C is not None else []) + ["numpy"]:
        if backend == "numpy":
            monkeypatch.setattr(g.ops, "_native", lambda name: None)
        results[backend] = (chain(False), chain(True))
    whole = g.Csr(indptr, indices, data, n, n)
    want_cur, want_acc = np.empty((n, d), np.float32), np.zeros((n, d), np.float32)
    want_cur[...] = ref.propagate(whole.indptr, whole.indices, whole.data, row_scale, prev, True, True, 2.0, want_acc)
    rcur, racc = np.zeros((n, d), np.float32), np.zeros((n, d), np.float32)
    x0 = ref.random_rows(7, threshold, value, d, 0, n, init_scale)
    rcur[...] = ref.propagate(whole.indptr, whole.indices, whole.data, row_scale, x0, True, False, 2.0, racc)
    for (dense, rand) in results.values():
        np.testing.assert_array_equal(bits(dense[0]), bits(want_cur))
        np.testing.assert_array_equal(bits(dense[1]), bits(want_acc))
        np.testing.assert_array_equal(bits(rand[0]), bits(rcur))
        np.testing.assert_array_equal(bits(rand[1]), bits(racc))


@native
def test_block_bad_arguments(rng):
    d, rows, cols = 8, 5, 6
    a = g.Csr(np.array([0, 1, 2, 2, 3, 4], np.int64), np.array([0, 5, 1, 2], np.int32), None, rows, cols)
    prev = np.ones((cols, d), np.float32)
    out = np.empty((rows, d), np.float32)

    def call(**kw):
        p = dict(indptr=addr(a.indptr), indices=addr(a.indices), indices_int32=True, data=0, rows=rows, cols=cols,
                 row_scale=0, prev=addr(prev), d=d, acc_in=0, out=addr(out), finish=True, normalize=True,
                 propagate_normalized=False, alpha=1.0, accum=0)
        p.update(kw)
        C.graph_propagate_block(**p)

    call()
    with pytest.raises(ValueError, match="indices"):
        call(cols=5)  # column 5 out of range
    with pytest.raises(ValueError, match="prev"):
        call(prev=0)
    with pytest.raises(ValueError, match="out: must not overlap prev"):
        call(out=addr(prev))
    with pytest.raises(ValueError, match="acc_in"):
        call(acc_in=addr(out[1:]))
    with pytest.raises(ValueError, match="accum"):
        call(accum=addr(out))
    with pytest.raises(ValueError, match="d must be"):
        call(d=0)
    call(acc_in=addr(out))  # in place is fine
    threshold, value = ref.random_spec(3.0, d)
    offsets = np.empty(cols + 1, np.int64)
    C.graph_random_table_offsets(1, threshold, float(value), d, 10, cols, addr(offsets))
    lists = np.empty(int(offsets[-1]), np.int32)
    with pytest.raises(ValueError, match="row0"):
        C.graph_random_table_offsets(1, threshold, float(value), d, -1, cols, addr(offsets))
    counts = np.diff(offsets)
    bad = np.concatenate([[0], np.cumsum(counts[::-1])]).astype(np.int64)  # the right total, wrong rows
    assert not np.array_equal(bad, offsets)  # counts [4 2 4 1 3 4] for this seed / row0
    with pytest.raises(ValueError, match="offsets: row"):
        C.graph_random_table_lists(1, threshold, float(value), d, 10, cols, addr(bad), addr(lists), len(lists))
    with pytest.raises(ValueError, match="offsets: ends at"):
        C.graph_random_table_lists(1, threshold, float(value), d, 10, cols, addr(offsets), addr(lists), len(lists) + 1)
    C.graph_random_table_lists(1, threshold, float(value), d, 10, cols, addr(offsets), addr(lists), len(lists))
    if len(lists):
        broken = lists.copy()
        broken[0] = (d + 3) << 1
        with pytest.raises(ValueError, match="lists"):
            C.graph_propagate_random_block(1, threshold, float(value), d, 0, addr(offsets), addr(broken), len(broken),
                                           addr(a.indptr), addr(a.indices), True, 0, rows, cols, 0, 0, addr(out),
                                           True, True, False, 1.0, 0)
    # cols + 1 columns: a table one entry longer (a raw pointer must cover cols + 1 entries; reading past the
    # array would be the test's own out-of-bounds read, which ASan aborts on), whose last row disagrees
    longer = np.concatenate([offsets, [offsets[-1] + 7]]).astype(np.int64)
    with pytest.raises(ValueError, match="offsets"):
        C.graph_propagate_random_block(1, threshold, float(value), d, 0, addr(longer), addr(lists), len(lists),
                                       addr(a.indptr), addr(a.indices), True, 0, rows, cols + 1, 0, 0, addr(out),
                                       True, True, False, 1.0, 0)


@pytest.mark.parametrize("rows", [0, 1, 4095, 4096, 9000])
def test_column_block_sums_and_apply(rng, monkeypatch, rows):
    # standardize's pieces (fastemb.dask splits the statistics across row blocks): per 4096-row block sums of x
    # and of (x - mean)^2 from 0 in row order, and the apply pass; native and reference alike, and together
    # the one-machine standardize_columns.
    d = 5
    x = (rng.standard_normal((rows, d)) * 3 + 1).astype(np.float32)
    backends = (["native"] if C is not None else []) + ["numpy"]
    results = {}
    for backend in backends:
        if backend == "numpy":
            monkeypatch.setattr(g.ops, "_native", lambda name: None)
        ops = g.NumpyOps()
        s1 = ops.column_block_sums(x)
        total = np.zeros(d)
        for b in range(s1.shape[0]):  # standardize_columns' combination: from 0, block order
            total = total + s1[b]
        mean = total / max(rows, 1)
        s2 = ops.column_block_sums(x, mean)
        total = np.zeros(d)
        for b in range(s2.shape[0]):
            total = total + s2[b]
        std = np.sqrt(total / max(rows, 1))
        out = np.empty_like(x)
        ops.standardize_apply(x, mean, std, out)
        results[backend] = (s1, s2, out)
        assert s1.shape == (-(-rows // 4096), d)
    want = ref.standardize_columns(x)[0]
    for s1, s2, out in results.values():
        np.testing.assert_array_equal(s1, results[backends[0]][0])
        np.testing.assert_array_equal(s2, results[backends[0]][1])
        np.testing.assert_array_equal(bits(out), bits(want))
    if C is not None and rows:
        whole = x.copy()
        mean, std = np.empty(d), np.empty(d)
        C.graph_standardize_columns(addr(whole), rows, d, addr(mean), addr(std))
        np.testing.assert_array_equal(bits(whole), bits(want))


@native
def test_stats_bad_arguments():
    x = np.ones((3, 4), np.float32)
    out = np.empty((1, 4))
    with pytest.raises(ValueError, match="d must be"):
        C.graph_column_block_sums(addr(x), 3, 0, 0, addr(out))
    with pytest.raises(ValueError, match="x: null"):
        C.graph_column_block_sums(0, 3, 4, 0, addr(out))
    mean = np.zeros(4)
    with pytest.raises(ValueError, match="out: must be x itself or not overlap it"):
        C.graph_standardize_apply(addr(x), 3, 4, addr(mean), addr(mean), addr(x[1:]))
    with pytest.raises(ValueError, match="std: null"):
        C.graph_standardize_apply(addr(x), 3, 4, addr(mean), 0, addr(x))


def compress(a):
    """The piece storing only the rows it has edges in (row_ids)."""
    per_row = np.diff(a.indptr)
    ids = np.flatnonzero(per_row).astype(np.int64)
    ip = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(per_row[ids], out=ip[1:])
    return g.Csr(ip, a.indices, a.data, len(ids), a.cols, row_ids=ids)


@pytest.mark.parametrize("isa", ISAS + ["numpy"])
@pytest.mark.parametrize("d", [3, 100])
def test_chain_with_row_ids(rng, monkeypatch, isa, d):
    # Pieces that list their rows (row_ids): a chain over them (out zeroed first, in place, the epilogue over every
    # row by an empty [rows, 0] piece) equals propagate; the dense and the random first step alike.
    if isa == "numpy":
        monkeypatch.setattr(g.ops, "_native", lambda name: None)
    else:  # NumpyOps with the native calls pinned to this ISA
        for name in ("graph_propagate_block", "graph_propagate_random_block"):
            fn = getattr(C, name)
            monkeypatch.setattr(C, name, lambda *a, _fn=fn, **k: _fn(*a, **{**k, "isa": isa}), raising=True)
    n = int(rng.integers(20, 120))
    indptr, indices, data = sorted_csr(rng, n, min(1.0, 3 / n), True)
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0).astype(np.float32)
    init_scale = (rng.random(n) + 0.2).astype(np.float32)
    threshold, value = ref.random_spec(3.0, d)
    spec = (3, threshold, value, d)
    prev = ref.random_rows(3, threshold, value, d, 0, n, init_scale)
    bounds = random_blocks(rng, n, 6)
    nb = len(bounds) - 1
    want_acc = np.zeros((n, d), np.float32)
    want = ref.propagate(indptr, indices, data, row_scale, prev, True, False, 1.5, want_acc)
    ops = g.NumpyOps()
    for random in (False, True):
        got = np.empty((n, d), np.float32)
        got_acc = np.empty((n, d), np.float32)
        for i in range(nb):
            r0, r1 = int(bounds[i]), int(bounds[i + 1])
            out = np.zeros((r1 - r0, d), np.float32)
            for j in range(nb):
                c0, c1 = int(bounds[j]), int(bounds[j + 1])
                a = compress(column_piece(indptr, indices, data, r0, r1, c0, c1))
                if random:
                    ops.propagate_random_block(spec, c0, init_scale[c0:c1], None, a, row_scale[r0:r1], out, out, False)
                else:
                    ops.propagate_block(a, row_scale[r0:r1], prev[c0:c1], out, out, False)
            empty = g.Csr(np.zeros(r1 - r0 + 1, np.int64), np.zeros(0, np.int32), None, r1 - r0, 0)
            ops.propagate_block(empty, row_scale[r0:r1], None, out, out, True, True, False, 1.5, got_acc[r0:r1],
                                accum_init=True)
            got[r0:r1] = out
        np.testing.assert_array_equal(bits(got), bits(want))
        np.testing.assert_array_equal(bits(got_acc), bits(want_acc))


@native
def test_row_ids_bad_arguments():
    d = 4
    ip = np.array([0, 1, 2], np.int64)
    idx = np.array([0, 1], np.int32)
    prev = np.ones((2, d), np.float32)
    out = np.zeros((5, d), np.float32)
    other = np.zeros((5, d), np.float32)

    def call(ids, acc_in=None, out_rows=5):
        ids = np.asarray(ids, np.int64)
        C.graph_propagate_block(addr(ip), addr(idx), True, 0, 2, 2, 0, addr(prev), d, addr(acc_in), addr(out), False,
                                True, False, 0.0, 0, row_ids=addr(ids), out_rows=out_rows)

    call([1, 3])
    np.testing.assert_array_equal(out[[0, 2, 4]], 0)
    np.testing.assert_array_equal(out[[1, 3]], 1)
    for ids in ([3, 1], [2, 2], [-1, 2], [1, 5]):
        with pytest.raises(ValueError, match="row_ids: must be strictly increasing"):
            call(ids)
    with pytest.raises(ValueError, match="acc_in: with row_ids it must be null or out itself"):
        call([0, 1], acc_in=other)
    call([0, 1], acc_in=out)


@native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 16, 300])
def test_chain_in_bands_equals_propagate(rng, monkeypatch, isa, d):
    # Every link in column bands (FASTEMB_GRAPH_BAND_ROWS forces them): pieces with and without row_ids, acc_in in
    # place or not, continuing from acc_in -- the one-pass propagate's bits.
    n = int(rng.integers(30, 160))
    indptr, indices, data = sorted_csr(rng, n, min(1.0, 10 / n), bool(rng.integers(0, 2)))
    deg = np.diff(indptr)
    row_scale = np.where(deg > 0, rng.random(n) + 0.5, 0.0).astype(np.float32)
    prev = rng.standard_normal((n, d)).astype(np.float32)
    monkeypatch.setenv("FASTEMB_GRAPH_BAND_ROWS", "0")
    want_accum = rng.standard_normal((n, d)).astype(np.float32)
    accum0 = want_accum.copy()
    want = np.empty((n, d), np.float32)
    C.graph_propagate(addr(indptr), addr(indices), indices.dtype == np.int32, addr(data), n, addr(row_scale),
                      addr(prev), d, addr(want), True, False, 0.75, addr(want_accum), isa)
    bounds = random_blocks(rng, n, int(rng.integers(1, 4)))
    nb = len(bounds) - 1
    for band in ["1", "2", str(int(rng.integers(3, n)))]:
        monkeypatch.setenv("FASTEMB_GRAPH_BAND_ROWS", band)
        got = np.empty((n, d), np.float32)
        got_accum = accum0.copy()
        for i in range(nb):
            r0, r1 = int(bounds[i]), int(bounds[i + 1])
            acc = None
            with_ids = bool(rng.integers(0, 2))
            if with_ids:  # pieces listing their rows, out zeroed first, finished by an empty piece
                acc = np.zeros((r1 - r0, d), np.float32)
            for j in range(nb):
                c0, c1 = int(bounds[j]), int(bounds[j + 1])
                a = column_piece(indptr, indices, data, r0, r1, c0, c1)
                if with_ids:
                    a = compress(a)
                    C.graph_propagate_block(addr(a.indptr), addr(a.indices), a.indices_int32, addr(a.data), a.rows,
                                            a.cols, 0, addr(prev[c0:c1]), d, addr(acc), addr(acc), False, True,
                                            False, 0.0, 0, isa=isa, row_ids=addr(a.row_ids), out_rows=r1 - r0)
                    continue
                finish = j == nb - 1
                out = acc if (acc is not None and rng.integers(0, 2)) else np.full((r1 - r0, d), np.nan, np.float32)
                run_block(isa, a, row_scale[r0:r1], prev[c0:c1], d, acc, out, finish, True, False, 0.75,
                          got_accum[r0:r1])
                acc = out
            if with_ids:
                empty = g.Csr(np.zeros(r1 - r0 + 1, np.int64), np.zeros(0, np.int32), None, r1 - r0, 0)
                run_block(isa, empty, row_scale[r0:r1], None, d, acc, acc, True, True, False, 0.75, got_accum[r0:r1])
            got[r0:r1] = acc
        np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"bands of {band}")
        np.testing.assert_array_equal(bits(got_accum), bits(want_accum))
