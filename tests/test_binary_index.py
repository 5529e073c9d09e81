"""fastemb.BinaryIndex: SDC search and float rescoring against brute force, save/load (memmap
included), bad inputs."""
import json
import os
import zlib

import numpy as np
import pytest

import fastemb
from fastemb import BinaryIndex

INT32_MIN = np.iinfo(np.int32).min


def clustered(rng, n, dim, centers=20, noise=0.4, dtype=np.float32):
    c = rng.standard_normal((centers, dim))
    x = c[rng.integers(0, centers, n)] + noise * rng.standard_normal((n, dim))
    return x.astype(dtype)


def brute_rescore(index_floats, codes, qf, qcodes, k, r, dim):
    """Direct computation: SDC top-(k*r) from the full score matrix, then float64 dots per
    candidate rounded to float32, sorted by (score desc, id asc)."""
    s = fastemb.sdc_scores(qcodes, codes, dim=dim).astype(np.int64)
    kc = min(k * r, codes.shape[0])
    out_s = np.full((len(qf), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(qf), k), -1, dtype=np.int64)
    for i in range(len(qf)):
        cand = np.lexsort((np.arange(s.shape[1]), -s[i]))[:kc]
        dots = np.array([np.dot(index_floats[j].astype(np.float64), qf[i].astype(np.float64)) for j in cand],
                        dtype=np.float64).astype(np.float32)
        order = np.lexsort((cand, -dots))[:k]
        out_s[i, :len(order)] = dots[order]
        out_i[i, :len(order)] = cand[order]
    return out_s, out_i


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [64, 77])
def test_search_matches_sdc_topk(rng, bits, dim):
    x = clustered(rng, 600, dim)
    q = clustered(rng, 9, dim)
    index = BinaryIndex(dim, bits)
    index.add(x[:250])
    index.add(x[250:].astype(np.float64))
    assert index.ntotal == len(index) == 600 and index.has_floats
    codes = fastemb.binarize(x, bits)
    np.testing.assert_array_equal(index.codes, codes)
    np.testing.assert_array_equal(index.floats, x)
    s, i = index.search(q, 7)
    es, ei = fastemb.sdc_topk(fastemb.binarize(q, bits), codes, 7, dim=dim)
    assert s.dtype == np.int32 and i.dtype == np.int64
    np.testing.assert_array_equal(s, es)
    np.testing.assert_array_equal(i, ei)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_rescore_matches_direct_computation(rng, bits):
    dim = 45
    x = clustered(rng, 500, dim)
    q = clustered(rng, 6, dim, dtype=np.float64)
    index = BinaryIndex(dim, bits)
    index.add(x)
    s, i = index.search(q, 10, rescore=3)
    assert s.dtype == np.float32 and i.dtype == np.int64
    es, ei = brute_rescore(x, fastemb.binarize(x, bits), q, fastemb.binarize(q, bits), 10, 3, dim)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert np.all(np.diff(s, axis=1) <= 0)


def test_rescore_recall_improves(rng):
    dim, n, nq, k = 96, 3000, 40, 10
    x = clustered(rng, n, dim, centers=50, noise=0.8)
    q = clustered(rng, nq, dim, centers=50, noise=0.8)
    exact = np.argsort(-(q.astype(np.float64) @ x.astype(np.float64).T), axis=1, kind="stable")[:, :k]

    def recall(ids):
        return np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact)])

    index = BinaryIndex(dim, bits=2)
    index.add(x)
    r1 = recall(index.search(q, k)[1])
    r10 = recall(index.search(q, k, rescore=10)[1])
    rall = recall(index.search(q, k, rescore=n)[1])  # every row is a candidate: exact search
    assert rall == 1.0
    assert r10 >= r1 and r10 >= 0.8, (r1, r10)


def test_rescore_ties_lower_id_and_duplicates():
    dim = 16
    v = np.ones((1, dim), dtype=np.float32)
    x = np.concatenate([-v, v, v, v, 0.5 * v])
    index = BinaryIndex(dim, bits=2)
    index.add(x)
    s, i = index.search(v, 3, rescore=2)
    np.testing.assert_array_equal(i, [[1, 2, 3]])
    np.testing.assert_array_equal(s, [[16, 16, 16]])


def test_k_larger_than_ntotal_and_empty(rng):
    dim = 20
    x = rng.standard_normal((5, dim)).astype(np.float32)
    empty = BinaryIndex(dim, 2)
    s, i = empty.search(x[:2], 4)
    assert s.dtype == np.int32 and (s == INT32_MIN).all() and (i == -1).all() and i.shape == (2, 4)
    s, i = empty.search(x[:2], 4, rescore=3)
    assert s.dtype == np.float32 and np.isneginf(s).all() and (i == -1).all()
    index = BinaryIndex(dim, 2)
    index.add(x)
    s, i = index.search(x, 8)
    assert (i[:, 5:] == -1).all() and (s[:, 5:] == INT32_MIN).all()
    assert sorted(i[0, :5]) == list(range(5))
    s, i = index.search(x, 8, rescore=2)
    assert (i[:, 5:] == -1).all() and np.isneginf(s[:, 5:]).all()
    # all rows are candidates here: the exact float ranking
    exact = np.lexsort((np.broadcast_to(np.arange(5), (5, 5)), -(x.astype(np.float64) @ x.astype(np.float64).T)
                        .astype(np.float32)), axis=-1)
    np.testing.assert_array_equal(i[:, :5], exact)


def test_codes_only_index(rng):
    dim, bits = 30, 3
    x = rng.standard_normal((100, dim))
    codes = fastemb.binarize(x, bits)
    index = BinaryIndex(dim, bits)
    index.add(codes)
    assert not index.has_floats and index.floats is None
    s, i = index.search(x[:4], 5)
    es, ei = fastemb.sdc_topk(fastemb.binarize(x[:4], bits), codes, 5, dim=dim)
    np.testing.assert_array_equal(s, es)
    np.testing.assert_array_equal(i, ei)
    s2, i2 = index.search(codes[:4], 5)  # code queries
    np.testing.assert_array_equal(i2, ei)
    with pytest.raises(ValueError, match="cannot rescore"):
        index.search(x[:4], 5, rescore=2)
    # mixing: floats added later do not make rescoring possible again
    index.add(x[:10])
    assert index.ntotal == 110 and not index.has_floats
    with pytest.raises(ValueError, match="cannot rescore"):
        index.search(x[:4], 5, rescore=2)


def test_one_bit_2d_codes(rng):
    dim = 24
    x = rng.standard_normal((50, dim)).astype(np.float32)
    codes2 = fastemb.binarize(x, 1)[:, 0, :]
    index = BinaryIndex(dim, 1)
    index.add(codes2)
    s, i = index.search(codes2[:3], 4)
    np.testing.assert_array_equal(i, fastemb.sdc_topk(codes2[:3], codes2, 4, dim=dim)[1])
    with pytest.raises(ValueError, match="1-bit"):
        BinaryIndex(dim, 2).add(codes2)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, rng, mmap):
    dim, bits = 50, 2
    x = clustered(rng, 300, dim)
    q = clustered(rng, 5, dim)
    index = BinaryIndex(dim, bits)
    index.add(x)
    path = tmp_path / "idx"
    index.save(str(path))
    header = json.loads((path / "header.json").read_text())
    assert header["dim"] == dim and header["bits"] == bits and header["ntotal"] == 300 and header["version"] == 1
    loaded = BinaryIndex.load(path, mmap=mmap)
    assert (loaded.dim, loaded.bits, loaded.ntotal, loaded.has_floats) == (dim, bits, 300, True)
    assert isinstance(loaded.floats, np.memmap) == mmap
    assert isinstance(loaded.codes, np.memmap) == mmap
    for r in (1, 4):
        a, b = index.search(q, 8, rescore=r), loaded.search(q, 8, rescore=r)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # adding to a loaded (mapped, read-only) index copies it; the files stay as they were
    loaded.add(x[:7])
    assert loaded.ntotal == 307 and not isinstance(loaded.floats, np.memmap)
    np.testing.assert_array_equal(loaded.floats[300:], x[:7])
    assert BinaryIndex.load(path).ntotal == 300
    # saving over the directory it was loaded from (while still mapped) is safe
    again = BinaryIndex.load(path, mmap=True)
    loaded.save(path)
    np.testing.assert_array_equal(again.floats, x)
    assert BinaryIndex.load(path).ntotal == 307


def test_save_load_codes_only_and_empty(tmp_path, rng):
    dim, bits = 13, 4
    codes = fastemb.binarize(rng.standard_normal((20, dim)), bits)
    index = BinaryIndex(dim, bits)
    index.add(codes)
    index.save(tmp_path / "c")
    assert not (tmp_path / "c" / "floats.npy").exists()
    loaded = BinaryIndex.load(tmp_path / "c")
    assert not loaded.has_floats
    np.testing.assert_array_equal(loaded.codes, codes)
    BinaryIndex(dim, bits).save(tmp_path / "e")
    e = BinaryIndex.load(tmp_path / "e")
    assert e.ntotal == 0 and e.has_floats
    assert (e.search(rng.standard_normal((2, dim)), 3)[1] == -1).all()


def test_load_validates(tmp_path, rng):
    dim = 16
    index = BinaryIndex(dim, 1)
    index.add(rng.standard_normal((10, dim)).astype(np.float32))
    path = tmp_path / "idx"
    index.save(path)
    with pytest.raises(ValueError, match="header"):
        BinaryIndex.load(tmp_path / "nothing")
    hpath = path / "header.json"
    good = json.loads(hpath.read_text())
    for change, match in [({"version": 99}, "version"), ({"format": "other"}, "format|header"),
                          ({"ntotal": 11}, "expected"), ({"dim": 24}, "expected|inconsistent"), ({"bits": 2}, "expected")]:
        hpath.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=match):
            BinaryIndex.load(path)
    hpath.write_text(json.dumps(good))
    os.remove(path / "floats.npy")
    with pytest.raises(ValueError, match="floats.npy"):
        BinaryIndex.load(path)
    with pytest.raises(ValueError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        index.save(tmp_path / "file")


def _saved(tmp_path, rng, name="idx"):
    index = BinaryIndex(40, 2)
    index.add(rng.standard_normal((30, 40)).astype(np.float32))
    path = tmp_path / name
    index.save(path)
    return index, path


def _garbage_behind_npy_header(fpath, rng):
    data = bytearray(fpath.read_bytes())
    offset = len(data) - 30 * 2 * 5  # codes: 30 rows x 2 planes x 5 bytes behind the npy header
    data[offset:] = rng.integers(0, 256, len(data) - offset, dtype=np.uint8).tobytes()
    fpath.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, target, match", [
    ("garbage", "header.json", "unreadable header"),
    ("empty", "header.json", "unreadable header"),
    ("empty", "codes.npy", "empty"),
    ("garbage", "codes.npy", "not a .npy file"),
    ("garbage", "floats.npy", "not a .npy file"),
    ("bad npy header", "codes.npy", "damaged .npy header"),
    ("garbage data", "codes.npy", "checksum mismatch"),
    ("truncated", "floats.npy", "truncated"),
    ("appended", "codes.npy", "trailing bytes"),
])
@pytest.mark.parametrize("mmap", [True, False])
def test_load_damaged_files_raise_value_error_naming_the_file(tmp_path, rng, damage, target, match, mmap):
    _, path = _saved(tmp_path, rng)
    fpath = path / target
    if damage == "garbage":
        fpath.write_bytes(b"\xff\xfe\x00garbage" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif damage == "empty":
        fpath.write_bytes(b"")
    elif damage == "bad npy header":
        fpath.write_bytes(fpath.read_bytes()[:10] + b"{'descr': <|u1, oops" + b" " * 100)
    elif damage == "garbage data":
        _garbage_behind_npy_header(fpath, rng)
    elif damage == "truncated":
        fpath.write_bytes(fpath.read_bytes()[:-7])
    elif damage == "appended":
        fpath.write_bytes(fpath.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=match) as err:
        BinaryIndex.load(path, mmap=mmap)
    assert str(fpath) in str(err.value)
    assert "allow_pickle" not in str(err.value)


def test_header_records_checksums_and_verify_false_skips_them(tmp_path, rng):
    index, path = _saved(tmp_path, rng)
    files = json.loads((path / "header.json").read_text())["files"]
    assert set(files) == {"codes.npy", "floats.npy"}
    for name, record in files.items():
        data = (path / name).read_bytes()
        assert record == {"size": len(data), "crc32": zlib.crc32(data)}
    _garbage_behind_npy_header(path / "codes.npy", rng)
    with pytest.raises(ValueError, match="checksum"):
        BinaryIndex.load(path)
    # verify=False skips reading the data (same size: nothing else can tell)
    assert BinaryIndex.load(path, verify=False).ntotal == 30
    # the size is checked even without verify
    (path / "floats.npy").write_bytes((path / "floats.npy").read_bytes()[:-4])
    with pytest.raises(ValueError, match="floats.npy"):
        BinaryIndex.load(path, verify=False)
    # a header whose record is missing or malformed names the header
    _, path = _saved(tmp_path, rng, "other")
    header = json.loads((path / "header.json").read_text())
    del header["files"]["floats.npy"]
    (path / "header.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="header.json.*floats.npy"):
        BinaryIndex.load(path)


def test_index_saved_without_checksums_still_loads(tmp_path, rng):
    index, path = _saved(tmp_path, rng)
    header = json.loads((path / "header.json").read_text())
    del header["files"]  # as written before checksums were recorded
    (path / "header.json").write_text(json.dumps(header, indent=1))
    q = rng.standard_normal((3, 40)).astype(np.float32)
    for mmap in (True, False):
        loaded = BinaryIndex.load(path, mmap=mmap)
        np.testing.assert_array_equal(loaded.search(q, 5, rescore=3)[1], index.search(q, 5, rescore=3)[1])
    # re-saving adds the checksums
    loaded.save(path)
    assert "files" in json.loads((path / "header.json").read_text())


def test_header_with_bad_values_names_the_header(tmp_path, rng):
    _, path = _saved(tmp_path, rng)
    hpath = path / "header.json"
    good = json.loads(hpath.read_text())
    for change in ({"dim": 0}, {"bits": 9}, {"dim": "x"}, {"dim": 1e400}, {"files": [1]}):
        hpath.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match="header.json"):
            BinaryIndex.load(path)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="dim"):
        BinaryIndex(0)
    with pytest.raises(ValueError, match="bits"):
        BinaryIndex(8, bits=5)
    with pytest.raises(TypeError, match="dim"):
        BinaryIndex(8.0)
    index = BinaryIndex(32, 2)
    x = rng.standard_normal((10, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="dim"):
        index.add(rng.standard_normal((10, 31)).astype(np.float32))
    with pytest.raises(TypeError, match="dtype"):
        index.add(x.astype(np.int64))
    with pytest.raises(TypeError, match="numpy"):
        index.add(x.tolist())
    with pytest.raises(ValueError, match="codes"):
        index.add(fastemb.binarize(x, 3))
    with pytest.raises(ValueError, match="codes"):
        index.add(fastemb.binarize(rng.standard_normal((3, 40)), 2))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add(bad)
    assert index.ntotal == 0  # nothing half-added
    index.add(x)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(x, 0)
    with pytest.raises(ValueError, match="rescore must be >= 1"):
        index.search(x, 3, rescore=0)
    with pytest.raises(TypeError, match="k"):
        index.search(x, 2.5)
    with pytest.raises(ValueError, match="dim"):
        index.search(x[:, :30], 3)
    with pytest.raises(ValueError, match="float queries"):
        index.search(fastemb.binarize(x, 2), 3, rescore=2)
    with pytest.raises(TypeError, match="dtype"):
        index.search(x.astype(np.int32), 3)


# ---- BinaryIndex.from_codes and threshold_rule ---------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("dim", [1, 45, 64])
def test_from_codes_equals_an_index_built_by_add(rng, bits, dim):
    x = clustered(rng, 230, dim)
    q = clustered(rng, 7, dim)
    built = BinaryIndex(dim, bits)
    built.add(x)
    codes = fastemb.binarize(x, bits)
    idx = BinaryIndex.from_codes(codes, floats=x)
    assert (idx.dim, idx.bits, idx.ntotal, idx.has_floats, idx.threshold_rule) == (dim, bits, 230, True, "ge")
    np.testing.assert_array_equal(idx.codes, codes)
    np.testing.assert_array_equal(idx.floats, x)
    for r in (1, 3):
        for a, b in zip(idx.search(q, 6, rescore=r), built.search(q, 6, rescore=r)):
            np.testing.assert_array_equal(a, b)
    # dim / bits given explicitly agree; without floats: no rescoring
    idx2 = BinaryIndex.from_codes(codes, dim=dim, bits=bits)
    assert not idx2.has_floats and idx2.dim == dim
    np.testing.assert_array_equal(idx2.search(q, 6)[1], built.search(q, 6)[1])
    with pytest.raises(ValueError, match="cannot rescore"):
        idx2.search(q, 6, rescore=2)
    # the default dim without floats is 8 * nbytes
    assert BinaryIndex.from_codes(codes).dim == 8 * codes.shape[-1]


@pytest.mark.parametrize("dim", [20, 384])
def test_from_codes_ubinary_layout_with_rescoring(rng, dim):
    x = clustered(rng, 300, dim)
    x[:, :3] = 0.0  # exact zeros: the rules disagree on them
    q = clustered(rng, 8, dim)
    q[:, -2:] = 0.0
    codes = np.packbits(x > 0, axis=-1)  # what sentence-transformers' ubinary produces: 2-D uint8
    idx = BinaryIndex.from_codes(codes, floats=x, threshold_rule="gt")
    assert idx.threshold_rule == "gt" and idx.bits == 1 and "threshold_rule='gt'" in repr(idx)
    qcodes = np.packbits(q > 0, axis=-1)
    s, i = idx.search(q, 10)  # float queries are binarized with x > 0 like the corpus
    es, ei = fastemb.sdc_topk(qcodes, codes, 10, dim=dim)
    np.testing.assert_array_equal(s, es)
    np.testing.assert_array_equal(i, ei)
    s2, i2 = idx.search(qcodes, 10)  # code queries as given
    np.testing.assert_array_equal(i2, ei)
    for r in (2, 5):
        got = idx.search(q, 10, rescore=r)
        want = brute_rescore(x, codes[:, None, :], q, qcodes[:, None, :], 10, r, dim)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # "ge" binarizes the zero columns of the queries the other way: a different candidate pool
    ge = BinaryIndex.from_codes(codes, floats=x)
    np.testing.assert_array_equal(ge.search(q, 10)[1],
                                  fastemb.sdc_topk(np.packbits(q >= 0, axis=-1), codes, 10, dim=dim)[1])
    # rows added as floats later are binarized with the index's rule
    idx.add(x[:5])
    np.testing.assert_array_equal(idx.codes[300:, 0], codes[:5])


def test_from_codes_copy_semantics_and_memmap(rng, tmp_path):
    dim = 40
    x = rng.standard_normal((60, dim)).astype(np.float32)
    codes = fastemb.binarize(x, 2)
    q = x[:3].copy()
    idx = BinaryIndex.from_codes(codes, floats=x)  # copy=True: later writes to the inputs do not matter
    before = idx.search(q, 5, rescore=3)
    codes_w, x_w = codes.copy(), x.copy()
    view = BinaryIndex.from_codes(codes_w, floats=x_w, copy=False)
    assert np.shares_memory(view.codes, codes_w) and np.shares_memory(view.floats, x_w)
    assert not np.shares_memory(idx.codes, codes) and not np.shares_memory(idx.floats, x)
    codes[:] = 0
    x[:] = 0
    for a, b in zip(idx.search(q, 5, rescore=3), before):
        np.testing.assert_array_equal(a, b)
    # copy=False on memory maps: used in place, streamed by the search
    np.save(tmp_path / "c.npy", codes_w)
    np.save(tmp_path / "f.npy", x_w)
    mc, mf = np.load(tmp_path / "c.npy", mmap_mode="r"), np.load(tmp_path / "f.npy", mmap_mode="r")
    mapped = BinaryIndex.from_codes(mc, floats=mf, copy=False)
    assert np.shares_memory(mapped.codes, mc) and np.shares_memory(mapped.floats, mf)
    for a, b in zip(mapped.search(x_w[:3], 5, rescore=3), before):
        np.testing.assert_array_equal(a, b)
    mapped.add(x_w[:2])  # the first add copies the read-only maps
    assert mapped.ntotal == 62 and not np.shares_memory(mapped.codes, mc)
    # float64 floats are converted to float32 (a copy even with copy=False); growing an owned index
    idx64 = BinaryIndex.from_codes(codes_w, floats=x_w.astype(np.float64), copy=False)
    assert idx64.floats.dtype == np.float32
    np.testing.assert_array_equal(idx64.floats, x_w)
    idx.add(x_w)
    assert idx.ntotal == 120


def test_from_codes_edge_sizes(rng):
    dim = 13
    empty = BinaryIndex.from_codes(np.zeros((0, 2), np.uint8), floats=np.zeros((0, dim), np.float32))
    assert empty.ntotal == 0 and empty.dim == dim and empty.has_floats
    s, i = empty.search(rng.standard_normal((2, dim)), 3, rescore=2)
    assert (i == -1).all() and np.isneginf(s).all()
    x = rng.standard_normal((1, dim))
    one = BinaryIndex.from_codes(fastemb.binarize(x, 4), floats=x)
    assert one.bits == 4
    s, i = one.search(x, 2, rescore=2)
    np.testing.assert_array_equal(i, [[0, -1]])
    assert s[0, 0] == np.float32(np.dot(x[0].astype(np.float32).astype(np.float64), x[0]))
    # non-contiguous codes are accepted (copied)
    big = fastemb.binarize(rng.standard_normal((20, dim)), 2)
    nc = BinaryIndex.from_codes(big[::2])
    np.testing.assert_array_equal(nc.codes, big[::2])


def test_from_codes_bad_inputs(rng):
    dim = 30
    x = rng.standard_normal((12, dim)).astype(np.float32)
    c1, c2 = np.packbits(x > 0, axis=-1), fastemb.binarize(x, 2)
    cases = [
        (TypeError, "codes", dict(codes=c1.tolist())),
        (TypeError, "codes.*uint8", dict(codes=c1.astype(np.int16))),
        (TypeError, "codes.*0x80", dict(codes=c1.view(np.int8))),
        (ValueError, "codes", dict(codes=c1[0])),
        (ValueError, "codes", dict(codes=np.zeros((3, 5, 4), np.uint8))),
        (ValueError, "codes", dict(codes=np.zeros((3, 0), np.uint8))),
        (TypeError, "floats", dict(codes=c1, floats=x.tolist())),
        (TypeError, "floats", dict(codes=c1, floats=x.astype(np.int32))),
        (TypeError, "floats", dict(codes=c1, floats=x > 0)),
        (ValueError, "floats.*rows", dict(codes=c1, floats=x[:11])),
        (ValueError, "floats", dict(codes=c1, floats=x[0])),
        (ValueError, "floats has dim 40", dict(codes=c1, floats=np.zeros((12, 40), np.float32))),
        (ValueError, "dim=29 but floats", dict(codes=c1, floats=x, dim=29)),
        (ValueError, "dim=33", dict(codes=c1, dim=33)),
        (ValueError, "dim=24", dict(codes=c1, dim=24)),
        (TypeError, "dim", dict(codes=c1, dim=30.0)),
        (ValueError, "bits=2", dict(codes=c1, bits=2)),
        (ValueError, "bits=1", dict(codes=c2, bits=1)),
        (TypeError, "bits", dict(codes=c2, bits="2")),
        (ValueError, "threshold_rule", dict(codes=c1, threshold_rule="ubinary")),
        (TypeError, "threshold_rule", dict(codes=c1, threshold_rule=None)),
        (TypeError, "copy", dict(codes=c1, copy="no")),
        (ValueError, "overflow", dict(codes=np.zeros((1, 4, 2 ** 21), np.uint8))),
    ]
    for exc, match, kwargs in cases:
        with pytest.raises(exc, match=match):
            BinaryIndex.from_codes(**kwargs)
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[3, 4] = bad
        with pytest.raises(ValueError, match="floats must be finite"):
            BinaryIndex.from_codes(c1, floats=xb)
    with pytest.raises(ValueError, match="floats must be finite"):  # float64 beyond float32's range
        BinaryIndex.from_codes(c1, floats=np.full((12, dim), 1e300))
    with pytest.raises(ValueError, match="threshold_rule"):
        BinaryIndex(dim, 1, threshold_rule="x")


@pytest.mark.parametrize("mmap", [True, False])
def test_from_codes_save_load_round_trip_keeps_rule_and_floats(tmp_path, rng, mmap):
    dim = 52
    x = clustered(rng, 200, dim)
    q = clustered(rng, 6, dim)
    idx = BinaryIndex.from_codes(np.packbits(x > 0, axis=-1), floats=x, threshold_rule="gt")
    idx.save(tmp_path / "st")
    header = json.loads((tmp_path / "st" / "header.json").read_text())
    assert header["threshold_rule"] == "gt" and header["has_floats"] and header["ntotal"] == 200
    loaded = BinaryIndex.load(tmp_path / "st", mmap=mmap)
    assert loaded.threshold_rule == "gt" and loaded.has_floats and loaded.dim == dim
    np.testing.assert_array_equal(loaded.codes, idx.codes)
    np.testing.assert_array_equal(loaded.floats, x)
    for r in (1, 4):
        for a, b in zip(loaded.search(q, 9, rescore=r), idx.search(q, 9, rescore=r)):
            np.testing.assert_array_equal(a, b)
    # codes only
    BinaryIndex.from_codes(np.packbits(x > 0, axis=-1), dim=dim).save(tmp_path / "c")
    c = BinaryIndex.load(tmp_path / "c", mmap=mmap)
    assert not c.has_floats and c.threshold_rule == "ge" and c.ntotal == 200


def test_header_threshold_rule_absent_or_bad(tmp_path, rng):
    x = rng.standard_normal((20, 16)).astype(np.float32)
    BinaryIndex.from_codes(np.packbits(x > 0, axis=-1), floats=x, threshold_rule="gt").save(tmp_path / "i")
    hpath = tmp_path / "i" / "header.json"
    header = json.loads(hpath.read_text())
    del header["threshold_rule"]  # as saved before the option existed
    hpath.write_text(json.dumps(header))
    assert BinaryIndex.load(tmp_path / "i").threshold_rule == "ge"
    for bad in ("lt", 3, None):
        header["threshold_rule"] = bad
        hpath.write_text(json.dumps(header))
        with pytest.raises(ValueError, match="header.json.*threshold_rule"):
            BinaryIndex.load(tmp_path / "i")
