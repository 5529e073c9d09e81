"""NumPy reference for the multi-vector family: exact MaxSim (late interaction, ColBERT) and MUVERA
fixed-dimensional encodings (Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional
Encodings", 2024), with exactly the rules of ``src/cpp/multivector/multivector.h``.

Token sets are given as ``x [rows, dim]`` float32 plus ``begin`` / ``end`` int64 arrays: set ``s`` is
rows ``begin[s]:end[s]``. This module is the NumPy fallback of :mod:`fastemb.multivector` and the test
oracle of the native kernels.

MaxSim(Q, D) = sum over query tokens q of max over document tokens d of <q, d>; 0 when either set
is empty. The native kernels compute each dot product as a chain of fused multiply-adds; this
reference uses float32 matrix products (tests compare it within float32 tolerance, and every native
ISA against the others bit for bit).

MUVERA FDE (paper, section 2; the empty-bucket fill and the count-sketch projections as in Google's
reference implementation, graph-mining ``fixed_dimensional_encoding.cc``):

* SimHash: ``k_sim`` random hyperplanes per repetition; a token's bucket is the integer whose bit ``b``
  is ``<x, g_b> > 0`` (LSB first; the reference implementation's Gray-code numbering is a relabeling
  of the same buckets). Hyperplane entries are +-1, from the graph family's counter-based generator
  (``sparse_random_projection``'s R with ``s = 1``), never stored.
* Per repetition and bucket: the sum of its tokens (queries) or their mean (documents). A document's
  empty bucket takes the token whose bucket id is nearest in Hamming distance (ties: the first token),
  when ``fill_empty``.
* Inner projection ``d_proj > 0``: an AMS (count) sketch, one +-1 entry per input coordinate (the
  reference implementation's ``AMS_SKETCH``). It is linear, so it is applied once per bucket, to the
  bucket sum, before the division by the count (the reference implementation sketches each token).
* Final projection ``final_dim > 0``: a count sketch of the whole encoding.

Every float32 sum here runs in the kernels' order (rows in increasing order, coordinates in increasing
order, each step rounded), so the FDEs agree with the native kernels bit for bit.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .graph import GOLDEN, mix64, random_signs

STREAM_STEP = 0xD1B54A32D192ED03
STREAM_SIMHASH, STREAM_INNER, STREAM_FINAL = 0, 1, 2
MAX_K_SIM = 16
_U64 = 1 << 64


def stream_seed(seed: int, stream: int) -> int:
    """Seed of one random matrix: seed + stream * STREAM_STEP (mod 2^64)."""
    return (int(seed) + stream * STREAM_STEP) % _U64


def entry_bits(seed: int, counters: np.ndarray) -> np.ndarray:
    """The graph generator's bits of entries ``counters`` (uint64) for a stream seed."""
    key = mix64(np.uint64(seed))
    with np.errstate(over="ignore"):
        return mix64(key + (np.asarray(counters, dtype=np.uint64) + np.uint64(1)) * GOLDEN)


def simhash_signs(seed: int, hyperplanes: int, dim: int) -> np.ndarray:
    """+-1 float32 [hyperplanes, dim]: hyperplane h = r * k_sim + b."""
    return random_signs(stream_seed(seed, STREAM_SIMHASH), 1 << 53, dim, 0, hyperplanes)


def sketch(seed: int, stream: int, count: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Count-sketch entries 0..count of a stream: (column int64 in [0, width), negative bool)."""
    u = entry_bits(stream_seed(seed, stream), np.arange(count, dtype=np.uint64))
    col = (((u >> np.uint64(32)) * np.uint64(width)) >> np.uint64(32)).astype(np.int64)
    neg = ((u >> np.uint64(10)) & np.uint64(1)).astype(bool)
    return col, neg


def _signed_sum_columns(v: np.ndarray, col: np.ndarray, neg: np.ndarray, width: int) -> np.ndarray:
    """out[:, o] = sum over c with col[c] == o, in increasing c, of +-v[:, c] (float32, from 0)."""
    out = np.zeros((v.shape[0], width), np.float32)
    for c in range(v.shape[1]):
        if neg[c]:
            out[:, col[c]] -= v[:, c]
        else:
            out[:, col[c]] += v[:, c]
    return out


# ---- MaxSim ----------------------------------------------------------------------------------------

def _maxsim_blocks(qx, q_begin, q_end, dx, d_begin, d_end, dtype, block_tokens: int):
    """Yields (s0, s1, scores [nq, s1 - s0]) for consecutive blocks of document sets of about
    ``block_tokens`` tokens: only ``[query tokens, block tokens]`` dot products exist at a time."""
    nq, nd = len(q_begin), len(d_begin)
    q_lens = np.asarray(q_end, np.int64) - np.asarray(q_begin, np.int64)
    q_rows = np.concatenate([np.arange(b, e, dtype=np.int64) for b, e in zip(q_begin, q_end)] + [np.zeros(0, np.int64)])
    q_tok = np.asarray(qx)[q_rows].astype(dtype, copy=False)
    q_starts = np.concatenate([[0], np.cumsum(q_lens)])
    d_lens = np.asarray(d_end, np.int64) - np.asarray(d_begin, np.int64)
    s0 = 0
    while s0 < nd:
        s1, tokens = s0, 0
        while s1 < nd and (s1 == s0 or tokens + d_lens[s1] <= block_tokens):
            tokens += int(d_lens[s1])
            s1 += 1
        block = np.zeros((nq, s1 - s0), dtype)
        sets = [s for s in range(s0, s1) if d_lens[s] > 0]
        if sets and len(q_tok):
            d_rows = np.concatenate([np.arange(d_begin[s], d_end[s], dtype=np.int64) for s in sets])
            sim = q_tok @ np.asarray(dx)[d_rows].astype(dtype, copy=False).T  # [query tokens, block tokens]
            starts = np.concatenate([[0], np.cumsum(d_lens[sets])[:-1]])
            best = np.maximum.reduceat(sim, starts, axis=1)  # [query tokens, non-empty sets]
            cols = np.asarray(sets) - s0
            for i in range(nq):  # each query set's tokens in row order
                acc = np.zeros(len(sets), dtype)
                for t in range(q_starts[i], q_starts[i + 1]):
                    acc += best[t]
                block[i, cols] = acc
        yield s0, s1, block
        s0 = s1


def maxsim(qx: np.ndarray, q_begin: np.ndarray, q_end: np.ndarray, dx: np.ndarray, d_begin: np.ndarray,
           d_end: np.ndarray, dtype=np.float32, block_tokens: int = 1 << 15) -> np.ndarray:
    """Scores [nq, nd]: sum over each query set's tokens of the max dot product with a document set's
    tokens; 0 when either set is empty."""
    out = np.zeros((len(q_begin), len(d_begin)), dtype)
    for s0, s1, block in _maxsim_blocks(qx, q_begin, q_end, dx, d_begin, d_end, dtype, block_tokens):
        out[:, s0:s1] = block
    return out


def maxsim_topk(qx, q_begin, q_end, dx, d_begin, d_end, k: int, block_tokens: int = 1 << 15
                ) -> Tuple[np.ndarray, np.ndarray]:
    """(scores float32 [nq, k], ids int64 [nq, k]): descending score, ties to the lower id; positions
    past the number of document sets hold -inf and -1. Merged block by block (memory independent of
    the number of document sets)."""
    nq = len(q_begin)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_i = np.full((nq, k), -1, np.int64)
    for s0, s1, block in _maxsim_blocks(qx, q_begin, q_end, dx, d_begin, d_end, np.float32, block_tokens):
        ids = np.concatenate([best_i, np.broadcast_to(np.arange(s0, s1, dtype=np.int64), (nq, s1 - s0))], axis=1)
        scores = np.concatenate([best_s, block], axis=1)
        for i in range(nq):
            valid = ids[i] >= 0
            order = np.lexsort((ids[i][valid], -scores[i][valid].astype(np.float64)))[:k]
            best_s[i] = -np.inf
            best_i[i] = -1
            best_s[i, : len(order)] = scores[i][valid][order]
            best_i[i, : len(order)] = ids[i][valid][order]
    return best_s, best_i


def maxsim_codes(q_codes: np.ndarray, q_offsets: np.ndarray, d_codes: np.ndarray, d_offsets: np.ndarray,
                 dim: int) -> np.ndarray:
    """Binary-token MaxSim from the definition: int64 [nq, nd], per pair the max SDC score of each query
    token over the document's tokens, summed; 0 for empty sets."""
    from .binary import sdc_scores

    nq, nd = len(q_offsets) - 1, len(d_offsets) - 1
    out = np.zeros((nq, nd), np.int64)
    for i in range(nq):
        for j in range(nd):
            a, b = q_codes[q_offsets[i]:q_offsets[i + 1]], d_codes[d_offsets[j]:d_offsets[j + 1]]
            if len(a) and len(b):
                out[i, j] = sdc_scores(a, b, dim).astype(np.int64).max(axis=1).sum()
    return out


# ---- MUVERA ----------------------------------------------------------------------------------------

def fde_dims(dim: int, repetitions: int, k_sim: int, d_proj: int, final_dim: int) -> Tuple[int, int, int]:
    """(block width p, raw FDE length R * 2^k_sim * p, output length)."""
    p = d_proj if d_proj > 0 else dim
    raw = repetitions * (1 << k_sim) * p
    return p, raw, (final_dim if final_dim > 0 else raw)


def bucket_ids(x: np.ndarray, seed: int, repetitions: int, k_sim: int) -> np.ndarray:
    """int64 [rows, repetitions]: the SimHash bucket of every token row in every repetition."""
    rows, dim = x.shape
    if k_sim == 0:
        return np.zeros((rows, repetitions), np.int64)
    g = simhash_signs(seed, repetitions * k_sim, dim)  # [H, dim]
    z = np.zeros((rows, repetitions * k_sim), np.float32)
    for j in range(dim):  # increasing dimension; x * (+-1) is exact, so this is the fma chain
        z += x[:, j : j + 1] * g[None, :, j]
    bits = (z > 0).reshape(rows, repetitions, k_sim).astype(np.int64)
    return (bits << np.arange(k_sim, dtype=np.int64)).sum(axis=2)


def _bucket_sums(x: np.ndarray, members: list, dim: int) -> np.ndarray:
    """[len(members), dim]: sum of each member list's rows in list order (float32, from 0)."""
    out = np.zeros((len(members), dim), np.float32)
    longest = max((len(m) for m in members), default=0)
    for step in range(longest):  # the step-th member of every bucket that has one
        idx = [i for i, m in enumerate(members) if len(m) > step]
        out[idx] += x[[members[i][step] for i in idx]]
    return out


def muvera_fde(x: np.ndarray, begin: np.ndarray, end: np.ndarray, *, document: bool, repetitions: int, k_sim: int,
               d_proj: int, final_dim: int, fill_empty: bool, seed: int) -> np.ndarray:
    """FDEs float32 [n_sets, fde_dim] (multivector.h rules)."""
    x = np.asarray(x, np.float32)
    dim = x.shape[1]
    n = len(begin)
    nb = 1 << k_sim
    p, raw_dim, out_dim = fde_dims(dim, repetitions, k_sim, d_proj, final_dim)
    ids_all = bucket_ids(x, seed, repetitions, k_sim)
    inner = sketch(seed, STREAM_INNER, repetitions * dim, d_proj) if d_proj > 0 else None
    fde = np.zeros((n, raw_dim), np.float32)
    for s in range(n):
        rows = np.arange(begin[s], end[s])
        fill = document and fill_empty and k_sim > 0 and len(rows) > 0
        for r in range(repetitions):
            ids = ids_all[rows, r]
            members = [list(rows[ids == i]) for i in range(nb)]  # row order
            counts = np.array([len(m) for m in members], np.int64)
            if fill:
                nonempty = np.nonzero(counts)[0]
                for i in np.nonzero(counts == 0)[0]:
                    dist = np.array([bin(int(i) ^ int(b)).count("1") for b in nonempty])
                    firsts = np.array([members[b][0] for b in nonempty])
                    best = np.lexsort((firsts, dist))[0]  # nearest bucket, then the lowest row
                    members[i] = [firsts[best]]
                    counts[i] = 1
            sums = _bucket_sums(x, members, dim)
            if inner is not None:  # the count sketch of the bucket sums (before the division)
                col, neg = inner[0][r * dim : (r + 1) * dim], inner[1][r * dim : (r + 1) * dim]
                sums = _signed_sum_columns(sums, col, neg, d_proj)
            if document:
                nz = counts > 0
                sums[nz] = sums[nz] / counts[nz].astype(np.float32)[:, None]
            fde[s, r * nb * p : (r + 1) * nb * p] = sums.reshape(-1)
    if final_dim > 0:
        col, neg = sketch(seed, STREAM_FINAL, raw_dim, final_dim)
        return _signed_sum_columns(fde, col, neg, final_dim)
    return fde
