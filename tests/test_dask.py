"""fastemb.dask against the single-machine functions, on a real LocalCluster (a scheduler, worker
processes, real serialization): odd chunkings, 1 / 2 / 3 workers, a worker killed mid-computation,
bad input. The sharded index is in test_dask_index.py.

Sizes are small; starting worker processes is most of the time, so the module shares one 2-worker
cluster, and the last test (test_worker_counts_and_a_killed_worker) rescales it to 3 and 1 workers.
Every computation waits at most TIMEOUT seconds: a hang fails the test.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
sp = pytest.importorskip("scipy.sparse")

import fastemb  # noqa: E402
import fastemb.dask as fd  # noqa: E402

from _dask_cluster import TIMEOUT, cluster_fixtures, compute  # noqa: E402

cluster, client = cluster_fixtures()


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        a, b = a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")
    return np.array_equal(a, b)


def gamma(m, u):
    m = np.asarray(m, dtype=np.float64)
    return m * u / (1 - m * u)


# Row chunkings of N = 61 rows: one chunk, chunks of one row, empty chunks, uneven sizes.
N = 61
CHUNKINGS = [(61,), (1,) * 10 + (0, 51), (0, 30, 0, 0, 31, 0), (1, 2, 3, 50, 5)]


# ---- import isolation ------------------------------------------------------------------------------

def test_import_fastemb_does_not_import_dask():
    code = ("import sys, fastemb; bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
            "assert not bad, bad; assert 'fastemb.dask' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT)


def test_missing_dask_gives_a_clear_import_error():
    code = ("import sys; sys.modules['dask'] = None; import fastemb\n"
            "try:\n    import fastemb.dask\nexcept ImportError as e:\n    assert 'fastemb[dask]' in str(e), e\n"
            "else:\n    raise SystemExit('no ImportError')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT)


# ---- binarize / sdc_topk --------------------------------------------------------------------------

def test_binarize_bit_identical(client, rng):
    x = rng.standard_normal((N, 19)).astype(np.float32)
    x[3] = 0  # an all-zero row
    scale = rng.random(N) + 0.5
    graphs = []
    for chunks in CHUNKINGS:
        X = da.from_array(x, chunks=(chunks, 19))
        graphs += [fd.binarize(X, 3), fd.binarize(X, 2, scale=scale), fd.binarize(X, 1, scale=2.0)]
    got = compute(client, *graphs)
    refs = [fastemb.binarize(x, 3), fastemb.binarize(x, 2, scale=scale), fastemb.binarize(x, 1, scale=2.0)]
    for i, g in enumerate(got):
        assert same_bits(g, refs[i % 3]), (i // 3, i % 3)


def test_binarize_joins_split_rows_and_passes_options(rng):
    x = rng.standard_normal((20, 30))
    x[:, :3] = 0  # zeros: where the threshold rule matters
    X = da.from_array(x, chunks=(7, 11))  # rows split across column chunks: rechunked
    got, got_gt = compute(None, fd.binarize(X, 2), fd.binarize(X, 2, threshold_rule="gt"))
    assert same_bits(got, fastemb.binarize(x, 2))
    assert same_bits(got_gt, fastemb.binarize(x, 2, threshold_rule="gt"))
    with pytest.raises(ValueError, match="threshold_rule"):  # options are checked when the graph is built
        fd.binarize(X, 2, threshold_rule="nope")


def test_sdc_topk_identical(client, rng):
    bits, dim = 2, 37
    d = fastemb.binarize(rng.standard_normal((N, dim)), bits)
    d[10] = d[20]  # exact ties: the lower id must win in every chunking
    d[40] = d[20]
    q = np.concatenate([d[20:21], fastemb.binarize(rng.standard_normal((6, dim)), bits)])
    cases, graphs = [], []
    for chunks in CHUNKINGS:
        D = da.from_array(d, chunks=(chunks, bits, d.shape[2]))
        for k, split_every in ((1, 2), (5, 8), (100, 3)):  # 100 > N: padded
            cases.append(k)
            graphs += list(fd.sdc_topk(q, D, k, dim=dim, split_every=split_every))
    got = compute(client, *graphs)
    for c, k in enumerate(cases):
        s1, i1 = fastemb.sdc_topk(q, d, k, dim=dim)
        assert same_bits(got[2 * c], s1) and same_bits(got[2 * c + 1], i1), (c, k)


def test_sdc_topk_groups_chunks_held_by_a_worker(client, rng):
    # A persisted corpus: each worker's chunks are scored by one task per worker thread (any chunks of the
    # worker, not only neighbours: the merge is a total order), with the same result for every chunking.
    from distributed import futures_of, wait
    from fastemb.dask._graph import nonempty, placement_groups

    bits, dim = 2, 37
    d = fastemb.binarize(rng.standard_normal((N, dim)), bits)
    d[10] = d[20]
    d[40] = d[20]  # ties across chunks that may land in different groups
    q = np.concatenate([d[20:21], fastemb.binarize(rng.standard_normal((6, dim)), bits)])
    for chunks in CHUNKINGS:
        D = client.persist(da.from_array(d, chunks=(chunks, bits, d.shape[2])))
        with client.as_current():
            wait(futures_of(D))
        groups = placement_groups(D, nonempty(D), client)
        flat = sorted(c[0] for g in groups for c in g)
        assert flat == [c[0] for c in nonempty(D)]  # every nonempty chunk exactly once
        assert len(groups) <= sum(client.nthreads().values())  # one task per worker thread at most
        for k in (1, 5, 100):
            s, i = compute(client, *fd.sdc_topk(q, D, k, dim=dim, client=client))
            s1, i1 = fastemb.sdc_topk(q, d, k, dim=dim)
            assert same_bits(s, s1) and same_bits(i, i1), (chunks, k)
    assert placement_groups(da.from_array(d, chunks=7), nonempty(da.from_array(d, chunks=7)), client) == \
        [[c] for c in nonempty(da.from_array(d, chunks=7))]  # not held by the cluster: one task per chunk


def test_sdc_topk_dask_queries_and_1bit_2d_codes(client, rng):
    d = np.packbits(rng.random((N, 40)) > 0.5, axis=1)  # [n, nbytes]: 1-bit codes
    q = np.packbits(rng.random((9, 40)) > 0.5, axis=1)
    Q = da.from_array(q, chunks=((2, 0, 7), 5))
    D = da.from_array(d, chunks=((0, 13, 48), 5))
    s, i = compute(client, *fd.sdc_topk(Q, D, 7))
    s1, i1 = fastemb.sdc_topk(q, d, 7)
    assert same_bits(s, s1) and same_bits(i, i1)


def test_sdc_topk_empty_corpus_and_queries(rng):
    d = np.zeros((0, 1, 4), np.uint8)
    q = fastemb.binarize(rng.standard_normal((3, 32)))
    s, i = compute(None, *fd.sdc_topk(q, da.from_array(d, chunks=(0, 1, 4)), 4))
    s1, i1 = fastemb.sdc_topk(q, d, 4)
    assert same_bits(s, s1) and same_bits(i, i1)
    s, i = compute(None, *fd.sdc_topk(q[:0], da.from_array(fastemb.binarize(rng.standard_normal((5, 32)))), 2))
    assert s.shape == (0, 2) and i.shape == (0, 2)


@pytest.mark.parametrize("loader", ["pread", "mmap"])
def test_from_npy_reads_rows_on_the_workers(client, rng, tmp_path, loader):
    d = fastemb.binarize(rng.standard_normal((N, 70)), 2)
    path = tmp_path / "codes.npy"
    np.save(path, d)
    D = fd.from_npy(path, 7, loader=loader)
    assert D.shape == d.shape and D.dtype == d.dtype and D.chunks[1:] == ((2,), (9,))
    # only the path travels: the graph stays small whatever the file size
    assert len(__import__("pickle").dumps(dict(D.__dask_graph__()))) < 20_000
    q = d[:5]
    s, i = compute(client, *fd.sdc_topk(q, D, 6, dim=70))
    s1, i1 = fastemb.sdc_topk(q, d, 6, dim=70)
    assert same_bits(s, s1) and same_bits(i, i1)
    assert same_bits(D[3:17].compute(), d[3:17])


def test_from_npy_bad_input(tmp_path):
    with pytest.raises(ValueError, match="path"):
        fd.from_npy(tmp_path / "missing.npy", 4)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="path"):
        fd.from_npy(tmp_path / "junk.npy", 4)
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((4, 3), np.float32)))
    with pytest.raises(ValueError, match="Fortran"):
        fd.from_npy(tmp_path / "f.npy", 2)
    np.save(tmp_path / "ok.npy", np.ones((4, 3), np.float32))
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        fd.from_npy(tmp_path / "cut.npy", 2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunks"):
            fd.from_npy(tmp_path / "ok.npy", bad)
    with pytest.raises(ValueError, match="loader"):
        fd.from_npy(tmp_path / "ok.npy", 2, loader="read")


def test_merge_topk_is_order_free(rng):
    """The merge rule is a total order: any split of the candidates, merged in any order, gives one result."""
    scores = rng.integers(-5, 5, (4, 40)).astype(np.int32)  # many ties
    ids = np.tile(rng.permutation(40).astype(np.int64), (4, 1))
    for big_ids in (False, True):  # ids >= 2^31 take the lexsort path
        ids_b = ids + (1 << 40) if big_ids else ids
        whole = fd.merge_topk((scores, ids_b), k=12)
        cut = [0, 3, 3, 17, 40]
        parts = [(scores[:, a:b], ids_b[:, a:b]) for a, b in zip(cut[:-1], cut[1:])]
        assert all(same_bits(x, y) for x, y in zip(whole, fd.merge_topk(*parts[::-1], k=12)))
        order = np.lexsort((ids_b, -scores.astype(np.int64)), axis=-1)[:, :12]
        assert same_bits(whole[0], np.take_along_axis(scores, order, 1))
        assert same_bits(whole[1], np.take_along_axis(ids_b, order, 1))


# ---- centroid_aggregate -----------------------------------------------------------------------------

def _one_machine(x, labels, k, **kw):
    return fastemb.centroid_aggregate(x, labels, num_groups=k, return_counts=True, **kw)


def test_centroid_extremes_and_counts_bit_identical(client, rng):
    x = rng.standard_normal((N, 9)).astype(np.float32)
    x[5, 2] = np.nan  # NaN propagates to its group
    x[7:12, 4] = 0.0
    x[9, 4] = -0.0  # ties of +0 / -0: the lowest row's value wins
    labels = rng.integers(0, 8, N)  # 8 groups: some may be empty
    cases, graphs = [], []
    for reduce in ("amax", "amin"):
        for normalize in ("none", "pre", "post", "both"):
            for chunks in CHUNKINGS[1:]:
                X = da.from_array(x, chunks=(chunks, 9))
                cases.append(_one_machine(x, labels, 8, reduce=reduce, normalize=normalize))
                graphs += list(fd.centroid_aggregate(X, labels, 8, reduce=reduce, normalize=normalize,
                                                     return_counts=True, split_every=3))
    got = compute(client, *graphs)
    for c, (ref, rc) in enumerate(cases):
        assert same_bits(got[2 * c], ref), c
        assert same_bits(got[2 * c + 1], rc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_centroid_one_chunk_is_bit_identical(rng, dtype):
    x = rng.standard_normal((N, 10)).astype(dtype)
    labels = rng.integers(0, 6, N)
    w = rng.random(N) + 0.1
    X = da.from_array(x, chunks=((0, N, 0), 10))  # one non-empty chunk (empty ones take no part)
    for reduce, normalize, loo, weighted in [("mean", "none", False, False), ("sum", "pre", False, True),
                                             ("mean", "both", True, True), ("sum", "none", True, False),
                                             ("mean", "post", False, True)]:
        kw = dict(reduce=reduce, normalize=normalize, leave_one_out=loo, weights=w if weighted else None)
        ref, rc = _one_machine(x, labels, 6, **kw)
        out, counts = compute(None, *fd.centroid_aggregate(X, labels, 6, return_counts=True, **kw))
        assert same_bits(out, ref) and same_bits(counts, rc), kw


def _centroid_bound(x, labels, k, w, reduce, normalize, loo, ref_unnormalized):
    """The documented bound (fastemb.dask.centroid module docstring) per output element, in float64."""
    u = 2.0 ** -53 if x.dtype == np.float64 else 2.0 ** -24
    x64 = x.astype(np.float64)
    if normalize in ("pre", "both"):
        x64 = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)
    w64 = np.ones(len(x)) if w is None else w.astype(np.float64)
    t = np.abs(w64[:, None] * x64)
    A = np.zeros((k, x.shape[1]))
    np.add.at(A, labels, t)
    n = np.bincount(labels, minlength=k).astype(np.float64)
    W = np.bincount(labels, weights=w64, minlength=k)
    if not loo:
        if reduce == "sum":
            E = 2 * gamma(np.maximum(n - 1, 0), u)[:, None] * A
        else:
            E = 2 * gamma(2 * n + 1, u)[:, None] * A / np.where(W > 0, W, 1)[:, None]
    else:
        ng = n[labels][:, None]
        if reduce == "sum":
            E = 2 * gamma(ng + 1, u) * (A[labels] + t)
        else:
            E = 2 * gamma(ng + 2, u) * (A[labels] + t) / np.maximum(ng - 1, 1)
    E = E * (1 + 1e-6)  # A itself is computed in float64
    if normalize in ("post", "both"):
        c = np.linalg.norm(ref_unnormalized.astype(np.float64), axis=1, keepdims=True)
        e = np.linalg.norm(E, axis=1, keepdims=True)
        E = 2 * e / np.maximum(c - e, 1e-300) + 2 * (x.shape[1] + 3) * u
    return E


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_centroid_sums_within_stated_bound(client, rng, dtype):
    n, d, k = 400, 12, 5
    x = (rng.standard_normal((n, d)) * rng.choice([1e-3, 1.0, 1e3], (n, 1))).astype(dtype)
    labels = rng.integers(0, k, n)
    w = rng.random(n) + 0.05
    X = da.from_array(x, chunks=((1, 0, 150, 3, 246), d))
    modes = [("sum", "none", False, False), ("mean", "none", False, False), ("mean", "pre", False, True),
             ("mean", "post", False, False), ("sum", "none", True, False), ("mean", "pre", True, False),
             ("sum", "both", False, True)]
    kws = [dict(reduce=r, normalize=nm, leave_one_out=loo, weights=w if wt else None) for r, nm, loo, wt in modes]
    # labels and weights as dask arrays chunked like x, or as NumPy arrays (split to match)
    L, W = da.from_array(labels, chunks=(X.chunks[0],)), da.from_array(w, chunks=(X.chunks[0],))
    graphs = [a for c, kw in enumerate(kws) for a in fd.centroid_aggregate(
        X, L if c % 2 else labels, k, return_counts=True, **dict(kw, weights=W if kw["weights"] is not None and c % 2
                                                                  else kw["weights"]))]
    got = compute(client, *graphs)
    for c, kw in enumerate(kws):
        ref, rc = _one_machine(x, labels, k, **kw)
        assert same_bits(got[2 * c + 1], rc)
        normalize = kw["normalize"]
        unnorm = None
        if normalize in ("post", "both"):
            unnorm = _one_machine(x, labels, k, **dict(kw, normalize="pre" if normalize == "both" else "none"))[0]
        bound = _centroid_bound(x, labels, k, kw["weights"], kw["reduce"], normalize, kw["leave_one_out"], unnorm)
        diff = np.abs(got[2 * c].astype(np.float64) - ref.astype(np.float64))
        assert np.all(diff <= bound), (kw, float((diff - bound).max()))
        # and the bound means something: typically far below the values themselves (looser after 'post':
        # the bound of c / ||c|| grows as the centroid's norm shrinks, and these groups mix magnitudes 1e-3..1e3
        # whose means can cancel; seen at 1.4e-3 in float32 on one draw)
        rel = np.median(bound) / np.median(np.abs(ref.astype(np.float64)))
        loose = 10.0 if normalize in ("post", "both") else 1.0
        assert rel < loose * (1e-3 if dtype == np.float32 else 1e-11), (kw, rel)


def test_grouped_levels_is_the_same_tree_for_any_grouping(rng):
    """The tree of grouped_levels, whatever the grouping (contiguous or not, singles, one group), is the tree of
    tree_levels: every combine gets the same children in the same order (nested tuples record it)."""
    from fastemb.dask._graph import call_on_refs, grouped_levels, tree_levels

    def leaf(i):
        return i

    def combine(*parts):
        return tuple(parts)

    for n in (1, 2, 3, 5, 9, 17, 40):
        for split_every in (2, 3, 4, 8):
            want = dask.compute(*tree_levels([dask.delayed(leaf)(i) for i in range(n)], combine, split_every,
                                             "t", f"ref{n}-{split_every}", keep=split_every), scheduler="sync")
            partitions = [[[i] for i in range(n)], [list(range(n))]]
            for _ in range(4):  # random partitions, groups not contiguous
                owner = rng.integers(0, max(1, n // 3), n)
                partitions.append([list(np.flatnonzero(owner == g)) for g in np.unique(owner)])
            for groups in partitions:
                last = grouped_levels([(i,) for i in range(n)], leaf, combine, groups, split_every, "g",
                                      f"{n}-{split_every}-{len(groups)}-{rng.integers(1 << 30)}")
                got = dask.compute(call_on_refs(combine, last, key=f"root-{rng.integers(1 << 30)}"),
                                   scheduler="sync")[0]
                assert got == tuple(want), (n, split_every, groups)


def test_grouped_graphs_of_the_same_inputs_do_not_share_keys(rng):
    """Two groupings of the same leaves make different tasks: their keys differ, so computing both graphs together
    gives each its own (correct) tree."""
    from fastemb.dask._graph import call_on_refs, grouped_levels, tree_levels

    def leaf(i):
        return i

    def combine(*parts):
        return tuple(parts)

    n, se = 12, 2
    want = tuple(dask.compute(*tree_levels([dask.delayed(leaf)(i) for i in range(n)], combine, se, "t", "tok",
                                           keep=se), scheduler="sync"))
    roots = [call_on_refs(combine, grouped_levels([(i,) for i in range(n)], leaf, combine, groups, se, "g", "TOK"),
                          key=f"root-{j}")
             for j, groups in enumerate(([list(range(6)), list(range(6, 12))], [[i] for i in range(n)],
                                         [list(range(0, 12, 2)), list(range(1, 12, 2))]))]
    assert dask.compute(*roots, scheduler="sync") == (want,) * 3


def test_centroid_groups_chunks_held_by_a_worker(client, rng):
    """Persisted x: one task per worker thread reduces the chunks it holds along the same tree: the same bits as
    the graph of one task per chunk (itself checked against one machine above), for sums and means too."""
    from distributed import futures_of, wait
    from fastemb.dask._graph import nonempty, placement_groups

    x = (rng.standard_normal((N, 7)) * rng.choice([1e-3, 1.0, 1e3], (N, 1))).astype(np.float32)
    labels = rng.integers(0, 5, N)
    w = rng.random(N) + 0.1
    for chunks in CHUNKINGS:
        X0 = da.from_array(x, chunks=(chunks, 7))
        X = client.persist(X0)
        with client.as_current():
            wait(futures_of(X))
        assert len(placement_groups(X, nonempty(X), client)) <= sum(client.nthreads().values())  # grouped
        cases = [(split_every, kw) for split_every in (2, 3, 4)
                 for kw in (dict(reduce="mean"), dict(reduce="sum", weights=w), dict(reduce="mean", normalize="both"),
                            dict(reduce="amax"), dict(reduce="mean", leave_one_out=True))]
        graphs = [g for split_every, kw in cases for data, cl in ((X, client), (X0, None))
                  for g in fd.centroid_aggregate(data, labels, 5, split_every=split_every, client=cl,
                                                 return_counts=True, **kw)]
        got = compute(client, *graphs)
        for c, case in enumerate(cases):
            grouped, plain = got[4 * c:4 * c + 2], got[4 * c + 2:4 * c + 4]
            assert all(same_bits(u, v) for u, v in zip(grouped, plain)), (chunks, case)


def test_centroid_empty_input_and_no_groups():
    x = np.zeros((0, 4), np.float32)
    out, counts = compute(None, *fd.centroid_aggregate(da.from_array(x, chunks=(0, 4)), np.zeros(0, np.int64), 3,
                                                       return_counts=True))
    ref, rc = _one_machine(x, np.zeros(0, np.int64), 3)
    assert same_bits(out, ref) and same_bits(counts, rc)
    (out,) = compute(None, fd.centroid_aggregate(da.ones((5, 2), chunks=2), np.zeros(5, np.int64), 1, reduce="amax"))
    assert same_bits(out, np.ones((1, 2)))
    (out,) = compute(None, fd.centroid_aggregate(da.ones((5, 2), chunks=2), np.zeros(5, np.int64), 0 + 1,
                                                 leave_one_out=True))
    assert same_bits(out, np.ones((5, 2)))


# ---- sparse_random_projection ------------------------------------------------------------------------

def test_projection_row_chunks_bit_identical(client, rng):
    x = rng.standard_normal((N, 50)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0
    ref = fastemb.sparse_random_projection(x, 24, "sqrt", 11)
    graphs = []
    for chunks in CHUNKINGS:
        graphs.append(fd.sparse_random_projection(da.from_array(x, chunks=(chunks, 50)), 24, "sqrt", 11))
        graphs.append(fd.sparse_random_projection(da.from_array(sp.csr_matrix(x), chunks=(chunks, 50), asarray=False),
                                                  24, "sqrt", 11))
    for g in compute(client, *graphs):
        assert same_bits(g, ref)


def test_projection_column_chunks_fixed_order_within_bound(client, rng):
    x = rng.standard_normal((N, 50)).astype(np.float64)
    x[rng.random(x.shape) < 0.5] = 0
    s, dim = 3.0, 16
    ref = fastemb.sparse_random_projection(x, dim, s, 4)
    x32 = np.abs(x.astype(np.float32).astype(np.float64)).sum(1)
    for col_chunks in [(1,) * 50, (20, 0, 30), (7, 43)]:
        X = da.from_array(x, chunks=((30, 31), col_chunks))
        Xs = da.from_array(sp.csr_matrix(x), chunks=((30, 31), col_chunks), asarray=False)
        got, got_s, got_2 = compute(client, fd.sparse_random_projection(X, dim, s, 4),
                                    fd.sparse_random_projection(Xs, dim, s, 4),
                                    fd.sparse_random_projection(X, dim, s, 4, split_every=2))
        assert same_bits(got, got_s)  # dense and CSR chunks: the same bits
        assert same_bits(got, compute(None, fd.sparse_random_projection(X, dim, s, 4))[0])  # any scheduler
        j = sum(1 for c in col_chunks if c)
        bound = 2 * gamma(50 + j, 2.0 ** -24) * np.sqrt(s / dim) * x32
        for g in (got, got_2):
            assert np.all(np.abs(g.astype(np.float64) - ref) <= bound[:, None])
        assert np.median(bound) < 1e-4 * np.abs(ref).max()


# ---- ternary_matmul ------------------------------------------------------------------------------------

def test_ternary_matmul_bit_identical(client, rng):
    w = rng.standard_normal((33, 300)).astype(np.float32)
    tw = fastemb.quantize_ternary(w, granularity="row")
    x = rng.standard_normal((N, 300)).astype(np.float32)
    bias = rng.standard_normal(33).astype(np.float32)
    for activations in ("int8", "float"):
        ref = fastemb.ternary_matmul(x, tw, activations, bias)
        graphs = []
        for chunks in CHUNKINGS[1:]:
            X = da.from_array(x, chunks=(chunks, 300))
            graphs += [fd.ternary_matmul(X, tw, activations, bias, client=client),
                       fd.ternary_matmul(X, tw, activations, bias)]
        for g in compute(client, *graphs):
            assert same_bits(g, ref)


def test_ternary_weight_is_scattered_once(client, rng):
    tw = fastemb.quantize_ternary(rng.standard_normal((8, 64)).astype(np.float32))
    x = rng.standard_normal((40, 64)).astype(np.float32)
    before = {w: set(keys) for w, keys in client.has_what().items()}
    y = fd.ternary_matmul(da.from_array(x, chunks=(4, 64)), tw, client=client)  # 10 tasks
    new = {w: set(keys) - before.get(w, set()) for w, keys in client.has_what().items()}
    # one object, already on every worker before anything runs (Client.scatter(broadcast=True))
    assert len(new) == 2 and all(len(v) == 1 for v in new.values()) and len(set.union(*new.values())) == 1
    (got,) = compute(client, y)
    assert same_bits(got, fastemb.ternary_matmul(x, tw))


# ---- bad input --------------------------------------------------------------------------------------------

def test_misaligned_chunks_name_the_argument():
    X = da.ones((10, 3), chunks=(5, 3))
    labels = da.zeros(10, dtype=np.int64, chunks=4)
    with pytest.raises(ValueError, match="labels and x are chunked differently"):
        fd.centroid_aggregate(X, labels, 2)
    with pytest.raises(ValueError, match="weights and x are chunked differently"):
        fd.centroid_aggregate(X, np.zeros(10, np.int64), 2, weights=da.ones(10, chunks=3))
    with pytest.raises(ValueError, match="labels has 9 entries"):
        fd.centroid_aggregate(X, np.zeros(9, np.int64), 2)
    with pytest.raises(ValueError, match="scale and x are chunked differently"):
        fd.binarize(X, 1, scale=da.ones(10, chunks=2))


def test_unknown_chunk_sizes_name_the_argument():
    X = da.ones((10, 3), chunks=(5, 3))
    unknown = X[X[:, 0] > 0]  # boolean indexing: nan chunk sizes
    with pytest.raises(ValueError, match=r"x has unknown chunk sizes \(nan\)"):
        fd.centroid_aggregate(unknown, np.zeros(10, np.int64), 2)
    lab = da.zeros(10, dtype=np.int64, chunks=5)
    with pytest.raises(ValueError, match=r"labels has unknown chunk sizes"):
        fd.centroid_aggregate(X, lab[lab >= 0], 2)
    codes = da.zeros((10, 1, 4), dtype=np.uint8, chunks=(5, 1, 4))
    with pytest.raises(ValueError, match=r"d has unknown chunk sizes"):
        fd.sdc_topk(np.zeros((1, 1, 4), np.uint8), codes[codes[:, 0, 0] == 0], 3)
    with pytest.raises(ValueError, match=r"X has unknown chunk sizes"):
        fd.sparse_random_projection(unknown, 4)
    with pytest.raises(ValueError, match=r"x has unknown chunk sizes"):
        fd.binarize(unknown)


def test_codes_split_across_bytes_axis_raise():
    q = np.zeros((2, 2, 8), np.uint8)
    with pytest.raises(ValueError, match=r"d is chunked across its bytes axis"):
        fd.sdc_topk(q, da.zeros((10, 2, 8), dtype=np.uint8, chunks=(5, 2, 4)), 3)
    with pytest.raises(ValueError, match=r"d is chunked across its bits axis"):
        fd.sdc_topk(q, da.zeros((10, 2, 8), dtype=np.uint8, chunks=(5, 1, 8)), 3)
    with pytest.raises(ValueError, match=r"d is chunked across its bytes axis"):
        fd.sdc_topk(q[:, 0], da.zeros((10, 8), dtype=np.uint8, chunks=(5, 3)), 3)
    with pytest.raises(ValueError, match=r"q is chunked across its bytes axis"):
        fd.sdc_topk(da.zeros((2, 2, 8), dtype=np.uint8, chunks=(1, 2, 4)), da.zeros((10, 2, 8), dtype=np.uint8), 3)
    with pytest.raises(ValueError, match="q and d disagree on nbytes"):
        fd.sdc_topk(q, da.zeros((10, 2, 7), dtype=np.uint8, chunks=(5, 2, 7)), 3)
    with pytest.raises(TypeError, match="d must have dtype uint8"):
        fd.sdc_topk(q, da.zeros((10, 2, 8), dtype=np.int8), 3)


def test_label_out_of_range_in_one_chunk_raises_on_the_cluster(client):
    x = np.ones((30, 2), np.float32)
    labels = np.zeros(30, np.int64)
    labels[17] = 3  # in the third chunk only
    X = da.from_array(x, chunks=(7, 2))
    with pytest.raises(ValueError, match=r"labels: label 3 at row 17 .* out of range \[0, num_groups=3\)"):
        compute(client, fd.centroid_aggregate(X, labels, 3))
    labels[17] = -1
    with pytest.raises(ValueError, match=r"labels: label -1 at row 17"):
        compute(client, fd.centroid_aggregate(X, labels, 3, leave_one_out=True))


def test_other_bad_arguments():
    X = da.ones((10, 3), chunks=(5, 3))
    lab = np.zeros(10, np.int64)
    with pytest.raises(TypeError, match="x must be a dask.array.Array or a numpy.ndarray"):
        fd.centroid_aggregate([[1.0]], lab, 2)
    with pytest.raises(TypeError, match="x must be float16, float32 or float64"):
        fd.centroid_aggregate(da.ones((10, 3), dtype=np.int32), lab, 2)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        fd.centroid_aggregate(X, lab.astype(np.float32), 2)
    with pytest.raises(ValueError, match="num_groups must be >= 0"):
        fd.centroid_aggregate(X, lab, -1)
    with pytest.raises(ValueError, match="weights: not supported with reduce='amax'"):
        fd.centroid_aggregate(X, lab, 2, reduce="amax", weights=np.ones(10))
    with pytest.raises(ValueError, match="split_every must be >= 2"):
        fd.centroid_aggregate(X, lab, 2, split_every=1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fd.sdc_topk(np.zeros((1, 1, 4), np.uint8), da.zeros((3, 1, 4), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match="bits must be in 1..4"):
        fd.binarize(X, 5)
    with pytest.raises(ValueError, match="x contains NaN"):
        compute(None, fd.binarize(da.from_array(np.array([[np.nan, 1.0]]), chunks=1), 1))
    with pytest.raises(ValueError, match="dim must be >= 1"):
        fd.sparse_random_projection(X, 0)
    with pytest.raises(TypeError, match="tw must be a fastemb.TernaryWeight"):
        fd.ternary_matmul(X, np.ones((2, 3)))
    tw = fastemb.quantize_ternary(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="tw expects k=4"):
        fd.ternary_matmul(X, tw)
    with pytest.raises(ValueError, match="activations must be 'int8' or 'float'"):
        fd.ternary_matmul(da.ones((3, 4), chunks=2), tw, "int4")


# ---- 3 workers, a killed worker, 1 worker (last: it rescales the session's cluster) ------------------------

def test_worker_counts_and_a_killed_worker(cluster, client, rng):
    """The same bits on 2, 3 and 1 workers and on the local scheduler; a worker killed by its pid while
    the graphs run leaves the results identical (Dask recomputes what was lost)."""
    x = rng.standard_normal((240, 16)).astype(np.float32)
    labels = rng.integers(0, 6, 240)
    w = rng.random(240) + 0.1
    codes = fastemb.binarize(x, 2)
    q = codes[:5]

    def slow(b):  # a closure: pickled by value to the workers; 33 such tasks: >= 0.5 s on 3 workers
        time.sleep(0.05)
        return b

    X = da.from_array(x, chunks=((37, 0, 100, 1, 102), 16)).map_blocks(slow, dtype=x.dtype)
    D = da.from_array(codes, chunks=(10, 2, 2)).map_blocks(slow, dtype=np.uint8)
    Xc = da.from_array(x, chunks=((100, 140), (5, 0, 11))).map_blocks(slow, dtype=x.dtype)

    def graphs():
        return (fd.centroid_aggregate(X, labels, 6, weights=w, normalize="post"),
                fd.centroid_aggregate(X, labels, 6, reduce="sum"),
                fd.centroid_aggregate(X, labels, 6, leave_one_out=True, normalize="pre"),
                *fd.sdc_topk(q, D, 7, split_every=3),
                fd.sparse_random_projection(Xc, 8, 3.0, 5))

    ref = compute(None, *graphs())
    assert same_bits(ref[3], fastemb.sdc_topk(q, codes, 7)[0]) and same_bits(ref[4], fastemb.sdc_topk(q, codes, 7)[1])
    assert all(same_bits(a, b) for a, b in zip(compute(client, *graphs()), ref))  # 2 workers

    cluster.scale(3)
    client.wait_for_workers(3, timeout=TIMEOUT)
    assert all(same_bits(a, b) for a, b in zip(compute(client, *graphs()), ref))  # 3 workers
    futures = client.compute(list(graphs()))
    time.sleep(0.2)
    assert not all(f.done() for f in futures), "finished before the kill: make the tasks slower"
    pids = client.run(os.getpid)
    busy = client.processing()
    victim = max(pids, key=lambda a: len(busy.get(a, ())))
    os.kill(pids[victim], signal.SIGKILL)
    got = [f.result(timeout=TIMEOUT) for f in futures]
    assert all(same_bits(a, b) for a, b in zip(got, ref))
    assert victim not in client.nthreads()  # the worker really died

    cluster.scale(1)
    deadline = time.time() + TIMEOUT
    while len(client.nthreads()) != 1:
        assert time.time() < deadline, "the cluster did not shrink to 1 worker"
        time.sleep(0.1)
    assert all(same_bits(a, b) for a, b in zip(compute(client, *graphs()), ref))  # 1 worker
