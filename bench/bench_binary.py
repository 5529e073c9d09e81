"""SDC binary codes: Hamming / SDC top-k search, fastemb against its peers in the same run.

Run (full scale takes a few minutes; FASTEMB_BENCH_SCALE=0.01 is a seconds-long smoke run):

    OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_binary.py --benchmark-json=bench-binary.json
    python bench/report_binary.py bench-binary.json -o table.md

(This module also sets OMP_WAIT_POLICY=PASSIVE before it imports faiss; faiss-cpu bundles its own
libgomp, which reads the variable when faiss is imported. torch's libgomp is not affected.)

Cases (docs: /work/shared/specs/sdc.md, issue 3): random uint8 codes (any bit pattern is a valid
code at every bit count; timing does not depend on the values except through top-k heap
insertions, which random scores keep rare). N = 1M codes x FASTEMB_BENCH_SCALE;
NQ = 1k queries x FASTEMB_BENCH_NQ_MULT (e.g. 10 for the issue's 10k queries), also x SCALE when
SCALE < 1 (smoke runs);
k = 10; FASTEMB_BENCH_THREADS (default 2) threads for everyone.

    hamming-256    [N, 32] codes (256 bits), NQ queries
    hamming-1024   [N, 128] codes (1024 bits), NQ queries; the same bytes viewed as [N, 2, 64]
                   are the "sdc2-512d" peer (SDC, bits=2, 512 dims = 1024 bits of code), as
                   [N, 4, 32] the "sdc4-256d" one (bits=4, 256 dims)
    scan1-1024     one query over the 1024-bit corpus (memory-bound: the bandwidth floor)

Peers (label = benchmark "peer"):
    fastemb         fastemb.sdc_topk(q, d, 10) on 1-bit codes (= Hamming ranking, S = dim - 2 H)
    fastemb_sdc2    fastemb.sdc_topk on [N, 2, 64] codes (bits=2, 512 dims), hamming-1024 case only
    fastemb_sdc4    fastemb.sdc_topk on [N, 4, 32] codes (bits=4, 256 dims), hamming-1024 case only
                    (issue 17: multi-bit SDC at the 1-bit cost of the same bytes; its time / fastemb's)
    faiss           faiss.IndexBinaryFlat(bits).search(q, 10) (index built outside the timed call;
                    faiss.omp_set_num_threads(THREADS))
    numkong_topk    numkong.hammings_packed (uint32 distances; corpus pre-packed outside the timed
                    call) over corpus chunks, THREADS Python threads on query-row ranges (the
                    kernel releases the GIL), + np.argpartition / merge for the top-k.
                    SUBSET: timed on the first NSUB codes, extrapolated per pair.
    numkong_dist    the same without the top-k (distances only). SUBSET, extrapolated.
    simsimd_topk    simsimd.cdist(q, chunk, 'hamming', dtype='bin8', out_dtype='uint32',
                    threads=THREADS) over corpus chunks + np.argpartition / merge. SUBSET.
    simsimd_dist    the same without the top-k. SUBSET, extrapolated.
    numpy           (q ^ d) as uint64 words, np.bitwise_count, sum, argpartition: single-threaded
                    NumPy, timed on a small subset (NQSUB queries x NSUB_NP codes), extrapolated.

Every benchmark's extra_info records what was timed (pairs = queries x codes actually scored),
the full-size pairs it stands for (pairs_full), code bytes, and the limits: the popcount limit
(spec: xor+vpopcntq from L1 ~141 GB/s of code bytes per core, measured on this VM type, not in
this run) and, for the single-query scan, the read bandwidth conftest.py measures in this run.
bench/report_binary.py turns these into pairs/s, ratios and target verdicts.

Correctness (untimed, before timing): fastemb's top-k distances equal faiss's on a subset of the
queries (distances compared, not ids: faiss orders Hamming ties its own way; the ids faiss returns
are checked to have the distances it claims); fastemb's SDC top-k equals the NumPy reference on a
small subset; the subset peers' distances equal fastemb.hamming.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss (its own libgomp) is imported

from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastemb  # noqa: E402
from fastemb import _backend  # noqa: E402
from fastemb._reference import binary as ref  # noqa: E402
from fastemb.bench_cli import record  # noqa: E402

try:
    import faiss
except ImportError:
    faiss = None
try:
    import simsimd
except ImportError:
    simsimd = None
try:
    import numkong
except ImportError:
    numkong = None

# Read here rather than imported from conftest.py (tests/ has a conftest module of the same name).
SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
NQ_MULT = float(os.environ.get("FASTEMB_BENCH_NQ_MULT", "1.0"))
ROUNDS = int(os.environ.get("FASTEMB_BENCH_ROUNDS", "5"))  # batched calls take ~0.3-5 s at full scale
SCAN_ROUNDS = int(os.environ.get("FASTEMB_BENCH_SCAN_ROUNDS", "30"))  # single-query scan, ~10 ms
K = 10
CHUNK = 16384  # corpus chunk of the cdist-style peers (1k x 16k uint32 = 64 MB of distances)
POPCNT_GBS_PER_CORE = 141.0  # spec: xor+vpopcntq from L1, code bytes per core (not measured here)

if faiss is not None:
    faiss.omp_set_num_threads(THREADS)

N = max(2000, int(round(1_000_000 * SCALE)))
NQ = max(8, int(round(1000 * SCALE * NQ_MULT))) if SCALE < 1 else max(8, int(round(1000 * NQ_MULT)))
NSUB = min(N, max(1000, int(round(100_000 * SCALE))))  # subset for the distance-matrix peers
NQSUB, NSUB_NP = min(NQ, 16), min(N, max(1000, int(round(20_000 * SCALE))))  # numpy subset
NATIVE = _backend.native()


@dataclass(frozen=True)
class Case:
    name: str
    nbytes: int  # bytes per code (1-bit view)
    nq: int


CASES = [Case("hamming-256", 32, NQ), Case("hamming-1024", 128, NQ), Case("scan1-1024", 128, 1)]
PEERS = {
    "hamming-256": ["fastemb", "faiss", "numkong_topk", "numkong_dist", "simsimd_topk", "simsimd_dist", "numpy"],
    "hamming-1024": ["fastemb", "fastemb_sdc2", "fastemb_sdc4", "faiss", "numkong_topk", "numkong_dist",
                     "simsimd_topk", "simsimd_dist", "numpy"],
    "scan1-1024": ["fastemb", "fastemb_sdc2", "faiss"],
}


# ---------------------------------------------------------------------------------------------
# Inputs, generated once per session and shared by every peer.

class _Data:
    def __init__(self):
        self.codes = {}
        self.faiss = {}
        self.nk_packed = {}

    def get(self, nbytes: int):
        if nbytes not in self.codes:
            rng = np.random.default_rng(4321 + nbytes)
            d = rng.integers(0, 256, size=(N, nbytes), dtype=np.uint8)
            q = rng.integers(0, 256, size=(NQ, nbytes), dtype=np.uint8)
            self.codes[nbytes] = (q, d)
        return self.codes[nbytes]

    def faiss_index(self, nbytes: int):
        if nbytes not in self.faiss:
            idx = faiss.IndexBinaryFlat(8 * nbytes)
            idx.add(self.get(nbytes)[1])
            self.faiss[nbytes] = idx
        return self.faiss[nbytes]

    def numkong_chunks(self, nbytes: int):
        if nbytes not in self.nk_packed:
            d = self.get(nbytes)[1][:NSUB]
            self.nk_packed[nbytes] = [(s, numkong.hammings_pack(d[s:s + CHUNK])) for s in range(0, NSUB, CHUNK)]
        return self.nk_packed[nbytes]


@pytest.fixture(scope="session")
def data():
    return _Data()


def _params():
    return [pytest.param(c, p, id=f"{c.name}-{p}") for c in CASES for p in PEERS[c.name]]


# ---------------------------------------------------------------------------------------------
# Peer implementations of a top-k from a distance matrix (chunked; ties may differ from fastemb).

def _merge_topk(best_d, best_i, dist, offset):
    """Keeps the K smallest distances per row: argpartition on the chunk, then on the union."""
    kk = min(K, dist.shape[1])
    part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
    cd = np.take_along_axis(dist, part, axis=1).astype(np.int64)
    ci = part.astype(np.int64) + offset
    if best_d is None:
        return cd, ci
    ad, ai = np.concatenate([best_d, cd], axis=1), np.concatenate([best_i, ci], axis=1)
    sel = np.argpartition(ad, K - 1, axis=1)[:, :K] if ad.shape[1] > K else np.arange(ad.shape[1])[None].repeat(
        ad.shape[0], 0)
    return np.take_along_axis(ad, sel, axis=1), np.take_along_axis(ai, sel, axis=1)


def _finish(best_d, best_i):
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1)


_POOL = ThreadPoolExecutor(max(1, THREADS))


def numkong_search(q, chunks, topk=True):
    nq = q.shape[0]
    bounds = np.linspace(0, nq, THREADS + 1).astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    best_d = best_i = None
    last = None
    for start, packed in chunks:
        out = numkong.empty((nq, packed_width(packed)), dtype="uint32")
        list(_POOL.map(lambda r: numkong.hammings_packed(q, packed, out=out, start_row=r[0], end_row=r[1]), ranges))
        dist = np.asarray(out)
        if topk:
            best_d, best_i = _merge_topk(best_d, best_i, dist, start)
        last = dist
    return _finish(best_d, best_i) if topk else last


def packed_width(packed):
    w = getattr(packed, "width", None)
    if w is None:
        w = packed.shape[0]
    return int(w)


def simsimd_search(q, d, topk=True):
    best_d = best_i = None
    last = None
    for start in range(0, d.shape[0], CHUNK):
        dist = np.asarray(simsimd.cdist(q, d[start:start + CHUNK], metric="hamming", dtype="bin8",
                                        out_dtype="uint32", threads=THREADS))
        if topk:
            best_d, best_i = _merge_topk(best_d, best_i, dist, start)
        last = dist
    return _finish(best_d, best_i) if topk else last


def numpy_search(q, d):
    qw, dw = q.view(np.uint64), d.view(np.uint64)
    best_d = best_i = None
    step = 2048
    for start in range(0, dw.shape[0], step):
        dist = np.bitwise_count(qw[:, None, :] ^ dw[None, start:start + step, :]).sum(axis=2, dtype=np.int64)
        best_d, best_i = _merge_topk(best_d, best_i, dist, start)
    return _finish(best_d, best_i)


# ---------------------------------------------------------------------------------------------
# Correctness (untimed)

def _check_fastemb_vs_faiss(q, d, idx, nbytes):
    nchk = min(q.shape[0], 50)
    s, ids = fastemb.sdc_topk(q[:nchk], d, K)
    dist_fe = (8 * nbytes - s.astype(np.int64)) // 2
    D, I = idx.search(q[:nchk], K)
    np.testing.assert_array_equal(dist_fe, D.astype(np.int64), err_msg="fastemb vs faiss top-k distances")
    # the ids each returns have the distances each claims
    for j in range(nchk):
        hf = fastemb.hamming(q[j:j + 1], d[ids[j]])[0]
        hx = fastemb.hamming(q[j:j + 1], d[I[j]])[0]
        np.testing.assert_array_equal(hf, dist_fe[j])
        np.testing.assert_array_equal(hx, D[j])
    return nchk


def _check_sdc_vs_reference(qb, db):
    # 9 queries: one full 8-query group (the AVX-512 group kernels) and a remainder
    nsub = min(db.shape[0], 20_000)
    s, i = fastemb.sdc_topk(qb[:9], db[:nsub], K)
    rs, ri = ref.sdc_topk(qb[:9], db[:nsub], K, 8 * db.shape[2])
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(i, ri)


def _check_topk_distances(dist, q, d, nq_chk=8):
    s, _ = fastemb.sdc_topk(q[:nq_chk], d, K)
    want = (8 * d.shape[1] - s.astype(np.int64)) // 2
    np.testing.assert_array_equal(np.asarray(dist)[:nq_chk], want)


def _check_dist_matrix(dist, q, d):
    np.testing.assert_array_equal(np.asarray(dist)[:8].astype(np.int64),
                                  fastemb.hamming(q[:8], d[-dist.shape[1]:]).astype(np.int64))


# ---------------------------------------------------------------------------------------------

def _record(benchmark, case, peer, impl, nq, nd, bits, nbytes_plane, rounds, subset, verified):
    pairs = nq * nd
    pairs_full = case.nq * N
    code_bytes_pair = bits * nbytes_plane  # bytes of one corpus code
    benchmark.group = f"{case.name}"
    benchmark.extra_info.update({
        "case": case.name, "peer": peer, "impl": impl, "k": K, "threads": THREADS, "scale": SCALE,
        "n": N, "nq": case.nq, "bits": bits, "dim": 8 * nbytes_plane, "code_bits": 8 * code_bytes_pair,
        "timed_nq": nq, "timed_nd": nd, "pairs": pairs, "pairs_full": pairs_full, "subset": subset,
        # Bytes one call must read at least: the corpus codes once (the queries are tiny).
        "bytes": nd * code_bytes_pair + nq * code_bytes_pair,
        "popcount_bytes_per_pair": code_bytes_pair,
        "popcount_limit_gbs": POPCNT_GBS_PER_CORE * THREADS,
        "popcount_limit_pairs_per_s": POPCNT_GBS_PER_CORE * THREADS * 1e9 / code_bytes_pair,
        "rounds": rounds, "verified": verified,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    })
    # Common schema (python -m fastemb bench): one row per case; subset peers are extrapolated per pair.
    # Limits: the single-query scan is memory-bound (corpus bytes / measured read bandwidth); the batched
    # searches are bound by xor+popcount throughput (the spec's per-core figure, not measured here).
    full_bytes = N * code_bytes_pair
    if case.nq == 1:
        limit = dict(nbytes=full_bytes, limit_kind="read bandwidth")
    else:
        limit = dict(nbytes=full_bytes, limit_kind="popcount",
                     limit_s=pairs_full / (POPCNT_GBS_PER_CORE * THREADS * 1e9 / (case.nbytes)))
    record(benchmark, family="binary", kernel=COMMON_KERNEL[case.name],
           shape=f"{case.nq} quer{'y' if case.nq == 1 else 'ies'} x {N} codes, k={K}",
           peer=COMMON_PEER[peer], impl=impl, work_factor=pairs_full / pairs,
           reference=peer.endswith("_dist"), **limit)


COMMON_KERNEL = {"hamming-256": "hamming top-k 256-bit", "hamming-1024": "hamming top-k 1024-bit",
                 "scan1-1024": "hamming scan 1 query 1024-bit"}
COMMON_PEER = {"fastemb": "fastemb", "fastemb_sdc2": "fastemb SDC bits=2 512d",
               "fastemb_sdc4": "fastemb SDC bits=4 256d", "faiss": "faiss",
               "numkong_topk": "numkong", "numkong_dist": "numkong (dist only)", "simsimd_topk": "simsimd",
               "simsimd_dist": "simsimd (dist only)", "numpy": "numpy"}


@pytest.mark.parametrize("case,peer", _params())
def test_topk(benchmark, data, case: Case, peer: str):
    q_all, d = data.get(case.nbytes)
    q = q_all[:case.nq]
    rounds = SCAN_ROUNDS if case.nq == 1 else ROUNDS
    nq, nd, bits, nbp, subset, verified = case.nq, N, 1, case.nbytes, False, ""
    isa = fastemb.info()["isa"] if NATIVE else "numpy fallback"

    if peer == "fastemb":
        impl = f"fastemb.sdc_topk, 1-bit codes [n, {case.nbytes}] ({isa})"
        fn = lambda: fastemb.sdc_topk(q, d, K)  # noqa: E731
        if faiss is not None and case.nq > 1:
            verified = f"top-k distances == faiss on {_check_fastemb_vs_faiss(q, d, data.faiss_index(case.nbytes), case.nbytes)} queries"
    elif peer.startswith("fastemb_sdc"):
        bits = int(peer[len("fastemb_sdc"):])
        nbp = case.nbytes // bits
        qb = q.reshape(q.shape[0], bits, nbp)
        db = d.reshape(N, bits, nbp)
        impl = f"fastemb.sdc_topk, bits={bits} codes [n, {bits}, {nbp}] = {8 * nbp} dims ({isa})"
        fn = lambda: fastemb.sdc_topk(qb, db, K)  # noqa: E731
        _check_sdc_vs_reference(qb, db)
        verified = f"== NumPy reference sdc_topk on {min(9, qb.shape[0])} queries x 20k codes"
    elif peer == "faiss":
        if faiss is None:
            pytest.skip("faiss-cpu is not installed")
        idx = data.faiss_index(case.nbytes)
        impl = f"faiss {faiss.__version__} IndexBinaryFlat({8 * case.nbytes}).search, omp threads={THREADS}"
        fn = lambda: idx.search(q, K)  # noqa: E731
    elif peer.startswith("numkong"):
        if numkong is None:
            pytest.skip("numkong is not installed")
        topk = peer == "numkong_topk"
        chunks = data.numkong_chunks(case.nbytes)
        nd, subset = NSUB, True
        impl = (f"numkong {numkong.__version__} hammings_packed (pre-packed corpus, chunks of {CHUNK}, "
                f"{THREADS} Python threads on query rows)" + (" + argpartition top-k" if topk else ", distances only"))
        fn = lambda: numkong_search(q, chunks, topk)  # noqa: E731
        out = fn()
        if topk:
            _check_topk_distances(out[0], q, d[:NSUB])
        else:
            _check_dist_matrix(out, q, d[:NSUB])
        verified = "distances == fastemb on 8 queries"
    elif peer.startswith("simsimd"):
        if simsimd is None:
            pytest.skip("simsimd is not installed")
        topk = peer == "simsimd_topk"
        ds = d[:NSUB]
        nd, subset = NSUB, True
        impl = (f"simsimd {simsimd.__version__} cdist(hamming, bin8, uint32 out, threads={THREADS}), chunks of "
                f"{CHUNK}" + (" + argpartition top-k" if topk else ", distances only"))
        fn = lambda: simsimd_search(q, ds, topk)  # noqa: E731
        out = fn()
        if topk:
            _check_topk_distances(out[0], q, ds)
        else:
            _check_dist_matrix(out, q, ds)
        verified = "distances == fastemb on 8 queries"
    elif peer == "numpy":
        if not hasattr(np, "bitwise_count"):
            pytest.skip("numpy < 2.0 has no bitwise_count")
        qs, ds = q[:NQSUB], d[:NSUB_NP]
        nq, nd, subset = NQSUB, NSUB_NP, True
        impl = "numpy xor (uint64 words) + bitwise_count + sum + argpartition, 1 thread"
        fn = lambda: numpy_search(qs, ds)  # noqa: E731
        _check_topk_distances(fn()[0], qs, ds)
        verified = "distances == fastemb on 8 queries"
    else:
        raise AssertionError(peer)

    _record(benchmark, case, peer, impl, nq, nd, bits, nbp, rounds, subset, verified)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
