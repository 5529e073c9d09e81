"""A binary index sharded over workers: :func:`save_sharded`, :class:`ShardedBinaryIndex`.

On disk (a directory)::

    <path>/manifest.json   {"format": "fastemb.ShardedBinaryIndex", "version": 1, "dim", "bits", "ntotal",
                            "has_floats", "shards": [{"path": "shard-00000", "offset": 0, "ntotal": n0}, ...]}
    <path>/shard-00000/    a fastemb.BinaryIndex directory (header.json, codes.npy[, floats.npy])
    ...

Shard ``i`` holds global rows ``offset_i .. offset_i + ntotal_i``; shard paths are relative to the
index directory (or absolute, for shards elsewhere). Every worker that searches must see the same
paths (a shared or network file system; on a ``LocalCluster`` the local disk).

Searching (:meth:`ShardedBinaryIndex.search`) is the two phases of :meth:`fastemb.BinaryIndex.search`
spread over the shards, each task pinned to the worker that holds its shard open:

1. each shard's SDC top-``kc`` with global ids (``kc = k``, or ``min(k * rescore, ntotal)`` when
   rescoring), then a tree merge under the kernel's rule (score descending, ties to the lower id):
   exactly the candidates of one index holding all rows;
2. with ``rescore > 1``, each shard computes the exact float scores of the candidates it holds, where
   its floats are (only the candidates' float rows are read from the memory map), with the same
   arithmetic as ``BinaryIndex``; the client sorts the ``[nq, kc]`` scores as ``BinaryIndex`` does.

The results are identical to one :class:`fastemb.BinaryIndex` holding the same rows. A worker
memory-maps a shard on its first search and keeps it open (a per-process cache keyed by the shard's
path, reopened only when the shard's header file changes); nothing is re-read per query batch. If a
worker dies, its shards move to the remaining workers and are opened there.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import dask

import fastemb
from fastemb.binary_index import BinaryIndex

from . import _checks as ck
from ._graph import nonempty, row_blocks
from .binary import merge_topk

FORMAT_NAME = "fastemb.ShardedBinaryIndex"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HEADER = "header.json"
_INT32_MIN = np.iinfo(np.int32).min
_RESCORE_BATCH_BYTES = 64 << 20  # float64 bytes gathered per batch of (query, candidate) pairs
DEFAULT_SPLIT_EVERY = 8


# ---- the per-process shard cache (lives in each worker process) -----------------------------------

_cache_lock = threading.Lock()
_path_locks: Dict[str, threading.Lock] = {}
_open_shards: Dict[str, Tuple[Tuple[int, int], BinaryIndex]] = {}
_load_counts: Dict[str, int] = {}


def _stamp(path: str) -> Tuple[int, int]:
    st = os.stat(os.path.join(path, _HEADER))
    return (st.st_mtime_ns, st.st_size)


def open_shard(path: str, verify: bool = True) -> BinaryIndex:
    """The shard at ``path``, memory-mapped once per process and kept open (reopened when its header
    file changes, i.e. the shard was saved again). Thread-safe; concurrent first uses load it once."""
    stamp = _stamp(path)
    with _cache_lock:
        hit = _open_shards.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        lock = _path_locks.setdefault(path, threading.Lock())
    with lock:
        with _cache_lock:
            hit = _open_shards.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        index = BinaryIndex.load(path, mmap=True, verify=verify)
        with _cache_lock:
            _open_shards[path] = (stamp, index)
            _load_counts[path] = _load_counts.get(path, 0) + 1
        return index


def cache_info() -> Dict[str, int]:
    """``{shard path: times loaded}`` for the shards this process holds open (run it on the workers
    with ``client.run(fastemb.dask.index.cache_info)``)."""
    with _cache_lock:
        return {p: _load_counts.get(p, 0) for p in _open_shards}


def evict(paths: Optional[Sequence[str]] = None) -> int:
    """Closes cached shards (all, or those in ``paths``); returns how many were dropped."""
    with _cache_lock:
        keys = list(_open_shards) if paths is None else [p for p in paths if p in _open_shards]
        for p in keys:
            del _open_shards[p]
            _load_counts.pop(p, None)
        return len(keys)


# ---- shard tasks -----------------------------------------------------------------------------------

def _shard_topk(path: str, offset: int, payload: Tuple[np.ndarray, Any], kc: int, dim: int,
                verify: bool) -> Tuple[np.ndarray, np.ndarray]:
    qcodes = payload[0]
    index = open_shard(path, verify)
    n = index.ntotal
    if n == 0:
        return np.empty((qcodes.shape[0], 0), np.int32), np.empty((qcodes.shape[0], 0), np.int64)
    scores, ids = fastemb.sdc_topk(qcodes, index.codes, min(kc, n), dim)
    return scores, np.where(ids >= 0, ids + offset, -1)


def _shard_rescore(path: str, offset: int, merged: Tuple[np.ndarray, np.ndarray], payload: Tuple[np.ndarray, Any],
                   verify: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float scores of the candidates this shard holds: ``(query, slot, score float32)`` triples,
    computed as :meth:`BinaryIndex.search` computes them (float64 products, rounded to float32)."""
    cand = merged[1]
    qfloat = payload[1]
    index = open_shard(path, verify)
    n = index.ntotal
    local = cand - offset
    qi, ci = np.nonzero((cand >= offset) & (local < n))
    scores = np.empty(qi.shape[0], np.float32)
    if qi.shape[0] == 0:
        return qi, ci, scores
    floats = index.floats
    batch = max(1, _RESCORE_BATCH_BYTES // (8 * max(1, index.dim)))
    for a in range(0, qi.shape[0], batch):
        rows_id = local[qi[a:a + batch], ci[a:a + batch]]
        uniq, inverse = np.unique(rows_id, return_inverse=True)  # sorted reads of the memory map
        rows = np.asarray(floats[uniq], dtype=np.float64)[inverse]
        q = np.asarray(qfloat, dtype=np.float64)[qi[a:a + batch]]
        scores[a:a + batch] = np.einsum("pd,pd->p", rows, q).astype(np.float32)
    return qi, ci, scores


def _write_shard(block: np.ndarray, path: str, dim: int, bits: int, threshold_rule: str) -> Tuple[int, bool]:
    index = BinaryIndex(dim, bits, threshold_rule)
    index.add(np.asarray(block))
    index.save(path)
    return index.ntotal, index.has_floats


# ---- building ----------------------------------------------------------------------------------------

def _write_manifest(path: str, manifest: dict) -> None:
    tmp = os.path.join(path, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(path, MANIFEST))


def save_sharded(x: Any, path: str, bits: int = 1, dim: Optional[int] = None, *,
                 threshold_rule: str = "ge", client: Any = None) -> "ShardedBinaryIndex":
    """Writes one :class:`fastemb.BinaryIndex` shard per non-empty row chunk of ``x`` (in the tasks, on
    the workers) and a manifest, and opens the result.

    Args:
        x: dask array of float vectors ``[n, dim]`` (binarized with ``fastemb.binarize(x, bits)`` and kept
            as float32 for rescoring, as :meth:`BinaryIndex.add` does), or of uint8 codes
            ``[n, bits, nbytes]`` (``[n, nbytes]`` for 1 bit; no rescoring). Chunked by rows; a row split
            across column chunks is joined for floats and raises for codes.
        path: the index directory (created; the workers must see it).
        bits: bit planes for float vectors (codes carry their own).
        dim: true dimensions of codes (default ``8 * nbytes``); floats use ``x.shape[1]``.
        threshold_rule: how float vectors (and later float queries) are binarized, as in
            :func:`fastemb.binarize`: ``"ge"`` (x >= 0 -> 1) or ``"gt"`` (x > 0 -> 1, sentence-transformers'
            ubinary). For codes it records the rule they were made with (the queries' rule). Saved in the
            manifest and in every shard's header.
        client: the distributed Client that writes the shards and searches them later (default: the
            current client, if any; none: the shards are written by dask's local scheduler).
    """
    x = ck.as_dask("x", x)
    ck.check_known_chunks("x", x)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path!r} exists and is not a directory")
    if x.dtype == np.uint8:
        from .binary import _as_codes3
        x = _as_codes3("x", x)
        bits = int(x.shape[1])
        dim = fastemb.binary.check_dim(dim, int(x.shape[2]))
    elif x.dtype.kind == "f":
        ck.check_ndim("x", x, (2,), "2-D [n, dim] float vectors (or uint8 codes)")
        if dim is not None and dim != x.shape[1]:
            raise ValueError(f"dim={dim} disagrees with the float vectors' {x.shape[1]} columns")
        dim = int(x.shape[1])
        x = ck.whole_rows(x)
    else:
        raise TypeError(f"x must hold float vectors or uint8 codes, got dtype {x.dtype}")
    BinaryIndex(dim, bits, threshold_rule)  # checks dim, bits and threshold_rule
    os.makedirs(path, exist_ok=True)
    blocks = row_blocks(x)
    chunks = nonempty(x)
    names = [f"shard-{s:05d}" for s in range(len(chunks))]
    tasks = [dask.delayed(_write_shard, pure=False)(blocks[i], os.path.join(path, names[s]), dim, bits,
                                                       threshold_rule)
             for s, (i, _, _) in enumerate(chunks)]
    client = client if client is not None else ck.current_client()
    results = client.gather(client.compute(tasks)) if client is not None else dask.compute(*tasks)
    shards = [{"path": names[s], "offset": row0, "ntotal": int(results[s][0])}
              for s, (_, row0, _) in enumerate(chunks)]
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dim": dim, "bits": bits,
                "threshold_rule": threshold_rule, "ntotal": int(sum(r[0] for r in results)),
                "has_floats": bool(results) and all(r[1] for r in results), "shards": shards}
    if not results:
        manifest["has_floats"] = x.dtype.kind == "f"
    _write_manifest(path, manifest)
    return ShardedBinaryIndex.open(path, client=client)


# ---- the index -----------------------------------------------------------------------------------

def _read_json(fpath: str, what: str) -> dict:
    try:
        with open(fpath, "rb") as f:
            out = json.loads(f.read())
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{fpath!r}: unreadable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(out, dict):
        raise ValueError(f"{fpath!r}: not a {what}")
    return out


class ShardedBinaryIndex:
    """A :class:`fastemb.BinaryIndex` split into shards that workers search in place (see the module
    docstring). Open one with :meth:`open`, build one with :func:`save_sharded` or :meth:`from_shards`.

    Example::

        index = fastemb.dask.save_sharded(da.from_array(emb, chunks=(250_000, 384)), "/shared/idx", bits=2)
        scores, ids = index.search(queries, k=10, rescore=4)   # NumPy results
    """

    def __init__(self, path: str, manifest: dict, shards: List[dict], client: Any = None, verify: bool = True):
        self.path = path
        self.dim = int(manifest["dim"])
        self.bits = int(manifest["bits"])
        self.threshold_rule = str(manifest.get("threshold_rule", "ge"))  # manifests before the key: "ge"
        self.ntotal = int(manifest["ntotal"])
        self.has_floats = bool(manifest["has_floats"])
        self.shards = shards  # [{"path": absolute path, "offset", "ntotal"}]
        self.verify = bool(verify)
        self._client = client
        self._placement: Dict[int, str] = {}  # shard number -> worker address

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"ShardedBinaryIndex(path={self.path!r}, dim={self.dim}, bits={self.bits}, ntotal={self.ntotal}, "
                f"shards={len(self.shards)}, has_floats={self.has_floats})")

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, client: Any = None, verify: bool = True) -> "ShardedBinaryIndex":
        """Reads and checks the manifest and each shard's header (shapes only: the workers map the data).

        Args:
            path: the index directory.
            client: the distributed Client to search with (default: the current one at search time;
                none: the shards are searched in this process).
            verify: workers check each shard's CRC-32 when they first map it (see
                :meth:`fastemb.BinaryIndex.load`).
        """
        path = os.path.abspath(os.fspath(path))
        mpath = os.path.join(path, MANIFEST)
        if not os.path.isfile(mpath):
            raise ValueError(f"{path!r} is not a sharded index (missing {MANIFEST})")
        manifest = _read_json(mpath, "manifest")
        if manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{mpath!r}: not a {FORMAT_NAME} manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{mpath!r}: unsupported version {manifest.get('version')!r} (this fastemb reads "
                             f"{FORMAT_VERSION})")
        try:
            dim, bits, ntotal = int(manifest["dim"]), int(manifest["bits"]), int(manifest["ntotal"])
            entries = list(manifest["shards"])
            bool(manifest["has_floats"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{mpath!r}: incomplete manifest ({type(exc).__name__}: {exc})") from exc
        rule = manifest.get("threshold_rule", "ge")
        if rule not in fastemb.binary.THRESHOLD_RULES:
            raise ValueError(f"{mpath!r}: threshold_rule must be \"ge\" or \"gt\", got {rule!r}")
        shards, expect, floats = [], 0, True
        for s, e in enumerate(entries):
            try:
                spath = os.path.join(path, str(e["path"]))  # absolute paths stay absolute
                offset, n = int(e["offset"]), int(e["ntotal"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{mpath!r}: shard {s}: incomplete entry {e!r}") from exc
            if offset != expect:
                raise ValueError(f"{mpath!r}: shard {s} starts at row {offset}, expected {expect} (shards must "
                                 "cover the rows in order, without gaps)")
            header = _read_json(os.path.join(spath, _HEADER), "shard header")
            if (header.get("dim"), header.get("bits"), header.get("ntotal")) != (dim, bits, n):
                raise ValueError(f"{spath!r}: shard header (dim={header.get('dim')}, bits={header.get('bits')}, "
                                 f"ntotal={header.get('ntotal')}) disagrees with the manifest (dim={dim}, bits={bits}, "
                                 f"ntotal={n})")
            if header.get("threshold_rule", "ge") != rule:
                raise ValueError(f"{spath!r}: shard threshold_rule={header.get('threshold_rule', 'ge')!r} disagrees "
                                 f"with the manifest's {rule!r}")
            floats = floats and bool(header.get("has_floats"))
            shards.append({"path": spath, "offset": offset, "ntotal": n})
            expect += n
        if expect != ntotal:
            raise ValueError(f"{mpath!r}: the shards hold {expect} rows but the manifest says ntotal={ntotal}")
        manifest = dict(manifest, has_floats=bool(manifest["has_floats"]) and floats)
        return cls(path, manifest, shards, client=client, verify=verify)

    @classmethod
    def from_shards(cls, path: str, shard_paths: Sequence[str], client: Any = None,
                    verify: bool = True) -> "ShardedBinaryIndex":
        """Writes a manifest in ``path`` over existing :class:`fastemb.BinaryIndex` directories (rows in
        the order given) and opens it. Shards inside ``path`` are recorded relative to it."""
        path = os.path.abspath(os.fspath(path))
        os.makedirs(path, exist_ok=True)
        if not shard_paths:
            raise ValueError("shard_paths must name at least one BinaryIndex directory")
        entries, offset, dims = [], 0, set()
        floats = True
        for sp in shard_paths:
            sp = os.path.abspath(os.fspath(sp))
            header = _read_json(os.path.join(sp, _HEADER), "shard header")
            try:
                dim, bits, n = int(header["dim"]), int(header["bits"]), int(header["ntotal"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{sp!r}: not a BinaryIndex directory ({exc})") from exc
            dims.add((dim, bits, str(header.get("threshold_rule", "ge"))))
            floats = floats and bool(header.get("has_floats"))
            rel = os.path.relpath(sp, path)
            entries.append({"path": rel if not rel.startswith("..") else sp, "offset": offset, "ntotal": n})
            offset += n
        if len(dims) != 1:
            raise ValueError(f"shard_paths: the shards disagree on (dim, bits, threshold_rule): {sorted(dims)}")
        dim, bits, rule = dims.pop()
        _write_manifest(path, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dim": dim, "bits": bits,
                               "threshold_rule": rule,
                               "ntotal": offset, "has_floats": floats, "shards": entries})
        return cls.open(path, client=client, verify=verify)

    # ---- searching --------------------------------------------------------------------------------

    def _queries(self, queries: Any, rescore: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if not isinstance(queries, np.ndarray):
            raise TypeError(f"queries must be a numpy.ndarray (float vectors or uint8 codes), "
                            f"got {type(queries).__name__}")
        nbytes = (self.dim + 7) // 8
        if queries.dtype == np.uint8:
            if queries.ndim == 2 and self.bits != 1:
                raise ValueError(f"queries: 2-D codes [n, nbytes] are only valid for a 1-bit index; this index has "
                                 f"bits={self.bits}, expected [n, {self.bits}, {nbytes}]")
            qcodes = fastemb.binary.as_codes("queries", queries)
            if qcodes.shape[1:] != (self.bits, nbytes):
                raise ValueError(f"queries: expected codes of shape [n, {self.bits}, {nbytes}] (bits={self.bits}, "
                                 f"dim={self.dim}), got {queries.shape}")
            if rescore > 1:
                raise ValueError("rescore > 1 needs float queries (the exact scores are float dot products); "
                                 "got uint8 codes")
            return qcodes, None
        if queries.dtype.kind != "f":
            raise TypeError(f"queries must be floating-point vectors [nq, {self.dim}] or uint8 codes, "
                            f"got dtype {queries.dtype}")
        if queries.ndim != 2:
            raise ValueError(f"queries must be 2-D [n, dim={self.dim}], got shape {queries.shape}")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries has dim {queries.shape[1]}, but the index has dim={self.dim}")
        return fastemb.binarize(queries, bits=self.bits, threshold_rule=self.threshold_rule), queries

    def _live_shards(self) -> List[int]:
        return [s for s, e in enumerate(self.shards) if e["ntotal"] > 0]

    def _place(self, client: Any, shards: List[int]) -> Dict[int, str]:
        """Shard -> worker, kept across searches; shards of workers that left move to the least loaded."""
        workers = ck.worker_addresses(client)
        if not workers:
            raise RuntimeError("the distributed cluster has no workers")
        live = set(workers)
        load = {w: 0 for w in workers}
        for s in shards:
            w = self._placement.get(s)
            if w in live:
                load[w] += 1
        for s in shards:
            if self._placement.get(s) not in live:
                w = min(workers, key=lambda a: (load[a], workers.index(a)))
                self._placement[s] = w
                load[w] += 1
        return {s: self._placement[s] for s in shards}

    def search(self, queries: np.ndarray, k: int, rescore: int = 1, *,
               split_every: int = DEFAULT_SPLIT_EVERY) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query: the same arguments and the same results as
        :meth:`fastemb.BinaryIndex.search` on one index holding all the rows.

        Args:
            queries: float vectors ``[nq, dim]`` or uint8 codes (``rescore == 1`` only), NumPy.
            k: >= 1. rescore: >= 1 (> 1 needs float queries and an index with floats).
            split_every: fan-in of the candidate merge tree.

        Returns:
            NumPy ``(scores, ids)`` ``[nq, k]``, as :meth:`fastemb.BinaryIndex.search`.
        """
        k = ck.check_int("k", k, 1)
        rescore = ck.check_int("rescore", rescore, 1)
        split_every = ck.check_split_every(split_every)
        qcodes, qfloat = self._queries(queries, rescore)
        if rescore > 1 and not self.has_floats:
            raise ValueError("this index cannot rescore: it holds rows added as codes, without float vectors "
                             "(use rescore=1)")
        nq, n = qcodes.shape[0], self.ntotal
        if rescore == 1:
            if n == 0:
                return np.full((nq, k), _INT32_MIN, np.int32), np.full((nq, k), -1, np.int64)
            return self._candidates(qcodes, qfloat, k, split_every, None)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        if n == 0 or nq == 0:
            return scores, ids
        kc = min(k * rescore, n)
        cand, s = self._candidates(qcodes, qfloat, kc, split_every, rescore)
        kk = min(k, kc)
        order = np.lexsort((cand, -s), axis=-1)[:, :kk]  # score descending, then id ascending
        scores[:, :kk] = np.take_along_axis(s, order, axis=1)
        ids[:, :kk] = np.take_along_axis(cand, order, axis=1)
        return scores, ids

    def _candidates(self, qcodes: np.ndarray, qfloat: Optional[np.ndarray], kc: int, split_every: int,
                    rescore: Optional[int]):
        """Phase 1 (SDC top-kc merged over shards) and, with ``rescore``, phase 2: returns the merged
        ``(scores, ids)``, or ``(candidate ids [nq, kc], float32 scores [nq, kc])``."""
        shards = self._live_shards()
        payload = (qcodes, qfloat)
        client = self._client if self._client is not None else ck.current_client()
        nq = qcodes.shape[0]
        if client is None:
            parts = [_shard_topk(self.shards[s]["path"], self.shards[s]["offset"], payload, kc, self.dim, self.verify)
                     for s in shards]
            merged = merge_topk(*parts, k=kc)
            if rescore is None:
                return merged
            s = np.empty((nq, kc), np.float32)
            for sh in shards:
                qi, ci, sc = _shard_rescore(self.shards[sh]["path"], self.shards[sh]["offset"], merged, payload,
                                            self.verify)
                s[qi, ci] = sc
            return merged[1], s
        place = self._place(client, shards)
        holders = sorted(set(place.values()))
        q_f = client.scatter([payload], workers=holders, broadcast=True, hash=False)[0]
        futs = [client.submit(_shard_topk, self.shards[s]["path"], self.shards[s]["offset"], q_f, kc, self.dim,
                              self.verify, workers=[place[s]], allow_other_workers=True, pure=False)
                for s in shards]
        while len(futs) > 1:
            futs = [client.submit(_merge_parts, kc, *futs[i:i + split_every], pure=False)
                    for i in range(0, len(futs), split_every)]
        merged = futs[0] if len(shards) > 1 else client.submit(_merge_parts, kc, futs[0], pure=False)
        if rescore is None:
            return merged.result()
        rescored = [client.submit(_shard_rescore, self.shards[s]["path"], self.shards[s]["offset"], merged, q_f,
                                  self.verify, workers=[place[s]], allow_other_workers=True, pure=False)
                    for s in shards]
        cand = merged.result()[1]
        s = np.empty((nq, kc), np.float32)
        for qi, ci, sc in client.gather(rescored):
            s[qi, ci] = sc
        return cand, s

    # ---- cache ----------------------------------------------------------------------------------

    def worker_cache(self) -> Dict[str, Dict[str, int]]:
        """``{worker: {shard path: times loaded}}`` for this index's shards (or ``{"local": ...}`` without
        a client)."""
        mine = {e["path"] for e in self.shards}
        client = self._client if self._client is not None else ck.current_client()
        if client is None:
            return {"local": {p: c for p, c in cache_info().items() if p in mine}}
        info = client.run(cache_info)
        return {w: {p: c for p, c in d.items() if p in mine} for w, d in info.items()}

    def close(self) -> None:
        """Closes this index's shards on the workers (and in this process)."""
        paths = [e["path"] for e in self.shards]
        evict(paths)
        client = self._client if self._client is not None else ck.current_client()
        if client is not None:
            client.run(evict, paths)
        self._placement.clear()


def _merge_parts(kc: int, *parts):
    return merge_topk(*parts, k=kc)
