"""fastemb.dask.ShardedBinaryIndex: shards in the BinaryIndex format plus a manifest, searched by the
workers that hold them open; results identical to one BinaryIndex holding the same rows."""
import json
import os
import signal
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastemb  # noqa: E402
import fastemb.dask as fd  # noqa: E402
from fastemb.dask import index as fdi  # noqa: E402

from _dask_cluster import TIMEOUT, cluster_fixtures  # noqa: E402

DIM, BITS = 40, 2
CASES = [(1, 1), (5, 1), (200, 1), (5, 3), (7, 50)]  # (k, rescore): k past ntotal, kc capped at ntotal

cluster, client = cluster_fixtures()


def same(a, b):
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def corpus(rng, n=130):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x[n // 3] = x[7]  # duplicate rows: ties in both phases, the lower id must win
    x[2 * n // 3] = x[7]
    q = np.concatenate([x[7:8], rng.standard_normal((12, DIM)).astype(np.float32)])
    return x, q


def test_sharded_search_identical_to_one_index(client, rng, tmp_path):
    x, q = corpus(rng)
    one = fastemb.BinaryIndex(DIM, BITS)
    one.add(x)
    X = da.from_array(x, chunks=((1, 0, 60, 9, 60), DIM))  # a 1-row shard; the empty chunk makes no shard
    index = fd.save_sharded(X, tmp_path / "idx", bits=BITS, client=client)
    assert (index.ntotal, len(index.shards), index.has_floats) == (130, 4, True)
    for name in ("shard-00000", "shard-00003"):  # each shard is a plain BinaryIndex
        assert fastemb.BinaryIndex.load(str(tmp_path / "idx" / name)).ntotal in (1, 60)
    qcodes = fastemb.binarize(q, BITS)
    for _ in range(3):  # repeated searches reuse the open shards
        for k, r in CASES:
            assert same(index.search(q, k, rescore=r), one.search(q, k, rescore=r)), (k, r)
        assert same(index.search(qcodes, 9), one.search(qcodes, 9))
        assert same(index.search(q[:0], 4, rescore=2), one.search(q[:0], 4, rescore=2))
    # each shard was mapped exactly once, by the worker it is placed on, and kept open
    cache = index.worker_cache()
    loads = {}
    for worker, held in cache.items():
        for path, count in held.items():
            loads[path] = loads.get(path, 0) + count
            assert index._placement[[e["path"] for e in index.shards].index(path)] == worker
    assert loads == {e["path"]: 1 for e in index.shards}
    assert len({w for w, held in cache.items() if held}) == 2  # spread over both workers
    # the same index searched in this process (no client): the same results
    local = fd.ShardedBinaryIndex.open(tmp_path / "idx")
    for k, r in CASES[:4]:
        assert same(local.search(q, k, rescore=r), one.search(q, k, rescore=r))
    index.close()
    assert all(not held for held in index.worker_cache().values())


def test_a_killed_worker_loses_no_shard(cluster, client, rng, tmp_path):
    x, q = corpus(rng)
    one = fastemb.BinaryIndex(DIM, BITS)
    one.add(x)
    index = fd.save_sharded(da.from_array(x, chunks=(30, DIM)), tmp_path / "idx", bits=BITS, client=client)
    assert same(index.search(q, 6, rescore=4), one.search(q, 6, rescore=4))
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    deadline = time.time() + TIMEOUT
    while victim in client.nthreads():
        assert time.time() < deadline
        time.sleep(0.05)
    # the dead worker's shards move to a live worker and are opened there
    assert same(index.search(q, 6, rescore=4), one.search(q, 6, rescore=4))
    assert victim not in index._placement.values()
    client.wait_for_workers(2, timeout=TIMEOUT)  # the nanny restarts it: the next tests have 2 workers
    index.close()


def test_from_shards_codes_only_and_local_search(rng, tmp_path):
    x, q = corpus(rng, 70)
    a = fastemb.BinaryIndex(DIM, BITS)
    a.add(x[:40])
    a.save(str(tmp_path / "a"))
    b = fastemb.BinaryIndex(DIM, BITS)
    b.add(fastemb.binarize(x[40:], BITS))  # codes only: this shard cannot rescore
    b.save(str(tmp_path / "b"))
    index = fd.ShardedBinaryIndex.from_shards(tmp_path / "idx", [tmp_path / "a", tmp_path / "b"])
    one = fastemb.BinaryIndex(DIM, BITS)
    one.add(x[:40])
    one.add(fastemb.binarize(x[40:], BITS))
    assert (index.ntotal, index.has_floats, one.has_floats) == (70, False, False)
    for k in (1, 10, 100):
        assert same(index.search(q, k), one.search(q, k))
    with pytest.raises(ValueError, match="cannot rescore"):
        index.search(q, 3, rescore=2)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert [s["offset"] for s in manifest["shards"]] == [0, 40]
    index.close()


def test_threshold_rule_is_kept_and_used_for_queries(rng, tmp_path):
    # exact zeros: the two rules give different codes, so queries binarized by the wrong rule would differ
    x = np.round(rng.standard_normal((50, DIM))).astype(np.float32)
    q = np.round(rng.standard_normal((6, DIM))).astype(np.float32)
    assert (x == 0).any() and (q == 0).any()
    one = fastemb.BinaryIndex(DIM, 1, threshold_rule="gt")
    one.add(x)
    index = fd.save_sharded(da.from_array(x, chunks=(20, DIM)), tmp_path / "idx", bits=1, threshold_rule="gt")
    assert index.threshold_rule == "gt"
    assert fastemb.BinaryIndex.load(str(tmp_path / "idx" / "shard-00001")).threshold_rule == "gt"
    assert same(index.search(q, 5), one.search(q, 5))
    assert same(index.search(q, 5, rescore=3), one.search(q, 5, rescore=3))
    ge = fastemb.BinaryIndex(DIM, 1)
    ge.add(x)
    assert not same(index.search(q, 50), ge.search(q, 50))  # the rule matters on this data
    reopened = fd.ShardedBinaryIndex.open(tmp_path / "idx")
    assert reopened.threshold_rule == "gt" and same(reopened.search(q, 5), one.search(q, 5))
    # from_shards: shards made under different rules are refused
    a = fastemb.BinaryIndex(DIM, 1, threshold_rule="gt")
    a.add(x[:10])
    a.save(str(tmp_path / "a"))
    b = fastemb.BinaryIndex(DIM, 1)
    b.add(x[10:])
    b.save(str(tmp_path / "b"))
    with pytest.raises(ValueError, match="threshold_rule"):
        fd.ShardedBinaryIndex.from_shards(tmp_path / "mixed", [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="threshold_rule"):
        fd.save_sharded(da.from_array(x, chunks=(20, DIM)), tmp_path / "bad", threshold_rule="gte")
    reopened.close()
    index.close()


def test_codes_input_and_bad_arguments(rng, tmp_path):
    x, q = corpus(rng, 50)
    codes = fastemb.binarize(x, BITS)
    index = fd.save_sharded(da.from_array(codes, chunks=(20, BITS, codes.shape[2])), tmp_path / "c", dim=DIM)
    one = fastemb.BinaryIndex(DIM, BITS)
    one.add(codes)
    assert not index.has_floats and same(index.search(q, 8), one.search(q, 8))
    with pytest.raises(ValueError, match="x is chunked across its bytes axis"):
        fd.save_sharded(da.from_array(codes, chunks=(20, BITS, 2)), tmp_path / "bad")
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(q, 0)
    with pytest.raises(ValueError, match="rescore must be >= 1"):
        index.search(q, 1, rescore=0)
    with pytest.raises(ValueError, match="queries has dim 39"):
        index.search(q[:, :39], 1)
    with pytest.raises(ValueError, match="rescore > 1 needs float queries"):
        fd.save_sharded(da.from_array(x, chunks=20), tmp_path / "f", bits=BITS).search(fastemb.binarize(q, BITS), 2,
                                                                                       rescore=2)
    with pytest.raises(TypeError, match="queries must be a numpy.ndarray"):
        index.search(q.tolist(), 1)
    with pytest.raises(ValueError, match="missing manifest.json"):
        fd.ShardedBinaryIndex.open(tmp_path)
    mpath = tmp_path / "c" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shards"][1]["ntotal"] += 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="disagrees with the manifest"):
        fd.ShardedBinaryIndex.open(tmp_path / "c")
    mpath.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest"):
        fd.ShardedBinaryIndex.open(tmp_path / "c")
    index.close()
    fdi.evict()
