"""SDC binary codes in plain NumPy: the fallback backend and the test oracle.

Layout and math: shared/specs/sdc.md. Codes are uint8 ``[n, B, nbytes]``: bit plane after bit
plane, plane ``i`` holds ``d_i > 0`` packed with ``np.packbits(..., bitorder='big')``. With
``c_ij = (d_ij > 0)``, ``C_j = sum_i 2^(u-i) c_ij`` (``u = B - 1``, ``L = 2^B - 1``):

    S(q, d) = sum_j (2 C_qj - L)(2 C_dj - L)        (exact int32, over the true dims only)

Inputs are assumed validated (see ``fastemb.binary``); these functions take 3-D codes and an
explicit ``dim``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# popcount of every byte value
_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
INT32_MIN = np.iinfo(np.int32).min


THRESHOLD_RULES = ("ge", "gt")


def binarize(x: np.ndarray, bits: int = 1, scale=None, threshold_rule: str = "ge") -> np.ndarray:
    """Training-free recurrent residual binarization of float rows ``x [n, m]`` -> codes.

    ``y = x / s`` with ``s = mean|x|`` per row (or ``scale``: a scalar or ``[n]``); an all-zero
    row keeps ``s = 1`` (no division by zero). ``d_0 = sign(y)``, ``d_i = sign(y - sum_{j<i} 2^-j d_j)``.
    ``threshold_rule`` says where a zero goes on every plane: "ge" -> bit = (r >= 0), sign(0) = +1;
    "gt" -> bit = (r > 0), sign(0) = -1 (plane 0 is then sentence-transformers' ``ubinary`` code).
    Plane 0 compares ``x`` itself (``s > 0``: the same sign as ``x / s``, also where ``x / s``
    underflows to zero). Computed in float64.
    """
    positive = np.greater if threshold_rule == "gt" else np.greater_equal
    if bits == 1:  # plane 0 alone: the sign of x, no scale needed (any real dtype keeps its sign)
        return np.packbits(positive(np.asarray(x), 0), axis=-1, bitorder="big")[:, None, :]
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    if scale is None:
        s = np.abs(x).mean(axis=1) if m else np.zeros(n)
        s = np.where(s > 0, s, 1.0)  # all-zero row: no division by zero
    else:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    y = x / s[:, None]
    levels = np.empty((n, bits, m), dtype=np.int8)
    recon = np.zeros_like(y)
    for i in range(bits):
        r = x if i == 0 else y - recon
        d_i = np.where(positive(r, 0), 1, -1).astype(np.int8)
        levels[:, i] = d_i
        recon = recon + (2.0 ** -i) * d_i
    return pack_levels(levels)


def pack_levels(levels: np.ndarray) -> np.ndarray:
    """``[n, B, m]`` of +-1 (or bool) -> uint8 ``[n, B, ceil(m / 8)]`` (padding bits zero)."""
    return np.packbits(np.asarray(levels) > 0, axis=-1, bitorder="big")


def unpack_bits(codes: np.ndarray, dim: int) -> np.ndarray:
    """uint8 ``[n, B, nbytes]`` -> bool-valued uint8 ``[n, B, dim]`` (the c_ij)."""
    return np.unpackbits(codes, axis=-1, count=dim, bitorder="big")


def integer_codes(codes: np.ndarray, dim: int) -> np.ndarray:
    """``C_j = sum_i 2^(u-i) c_ij`` as int64 ``[n, dim]``."""
    c = unpack_bits(codes, dim).astype(np.int64)
    bits = codes.shape[1]
    weights = 2 ** np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.einsum("nbm,b->nm", c, weights)


def unpack_codes(codes: np.ndarray, dim: int) -> np.ndarray:
    """Level values ``b = sum_i 2^-i d_i`` as float32 ``[n, dim]`` (exact: dyadic numbers)."""
    d = unpack_bits(codes, dim).astype(np.float64) * 2 - 1
    bits = codes.shape[1]
    weights = 2.0 ** -np.arange(bits)
    return np.einsum("nbm,b->nm", d, weights).astype(np.float32)


def _signed(codes: np.ndarray, dim: int) -> np.ndarray:
    """``2 C - L`` as float64 ``[n, dim]`` (odd integers; float64 matmuls of them stay exact)."""
    L = 2 ** codes.shape[1] - 1
    return (2 * integer_codes(codes, dim) - L).astype(np.float64)


def _mask_padding(codes: np.ndarray, dim: int) -> np.ndarray:
    """A copy of codes with every bit past ``dim`` cleared."""
    out = np.array(codes, dtype=np.uint8, copy=True)
    valid = dim - 8 * (codes.shape[-1] - 1)
    out[..., -1] &= np.uint8((0xFF << (8 - valid)) & 0xFF)
    return out


def hamming(q: np.ndarray, d: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """int32 ``[nq, nd]``: popcount of ``q XOR d`` over every plane (only the first ``dim`` bits
    of each plane when ``dim`` is given)."""
    if dim is not None:
        q, d = _mask_padding(q, dim), _mask_padding(d, dim)
    nq, nd = q.shape[0], d.shape[0]
    row = q.shape[1] * q.shape[2]
    qf, df = q.reshape(nq, row), d.reshape(nd, row)
    out = np.empty((nq, nd), dtype=np.int32)
    for i in range(nq):  # one query at a time keeps the [nd, bytes] temporary small
        out[i] = _POPCOUNT8[qf[i] ^ df].sum(axis=1, dtype=np.int64)
    return out


def sdc_scores(q: np.ndarray, d: np.ndarray, dim: int) -> np.ndarray:
    """Exact int32 ``S = sum_j (2 C_qj - L)(2 C_dj - L)`` over the true dims, ``[nq, nd]``."""
    return np.rint(_signed(q, dim) @ _signed(d, dim).T).astype(np.int32)


def self_scores(codes: np.ndarray, dim: int, chunk: int = 65536) -> np.ndarray:
    """``N = sum_j (2 C_j - L)^2`` per row (int64), in row chunks (memmap friendly)."""
    out = np.empty(codes.shape[0], dtype=np.int64)
    for a in range(0, codes.shape[0], chunk):
        v = _signed(np.asarray(codes[a:a + chunk]), dim)
        out[a:a + chunk] = np.rint((v * v).sum(axis=1)).astype(np.int64)
    return out


def cosine_from_scores(s: np.ndarray, nq_: np.ndarray, nd_: np.ndarray) -> np.ndarray:
    """``S / sqrt(N_q N_d)`` as float32 (0 where a norm is 0)."""
    denom = np.sqrt(nq_.astype(np.float64)[:, None] * nd_.astype(np.float64)[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, s / np.where(denom > 0, denom, 1.0), 0.0)
    return cos.astype(np.float32)


def sdc_cosine(q: np.ndarray, d: np.ndarray, dim: int) -> np.ndarray:
    """float32 ``[nq, nd]``: ``S / sqrt(N_q N_d)``, ``N_x = sum_j (2 C_xj - L)^2``."""
    return cosine_from_scores(sdc_scores(q, d, dim), self_scores(q, dim), self_scores(d, dim))


def sdc_topk(q: np.ndarray, d: np.ndarray, k: int, dim: int, chunk: int = 16384) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` SDC scores per query: (int32 ``[nq, k]``, int64 ids ``[nq, k]``), descending
    score, ties to the lower id, padded with (INT32_MIN, -1) when ``k > nd``.

    The corpus is scored ``chunk`` rows at a time and merged, so ``d`` may be a large memmap.
    """
    nq, nd = q.shape[0], d.shape[0]
    best_s = np.full((nq, 0), INT32_MIN, dtype=np.int64)
    best_i = np.full((nq, 0), -1, dtype=np.int64)
    for a in range(0, nd, chunk):
        block = np.asarray(d[a:a + chunk])
        s = sdc_scores(q, block, dim).astype(np.int64)
        ids = np.broadcast_to(np.arange(a, a + block.shape[0], dtype=np.int64), s.shape)
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, ids], axis=1)
        # lexsort: last key is primary -> score descending, then id ascending
        order = np.lexsort((cand_i, -cand_s), axis=-1)[:, :k]
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    scores = np.full((nq, k), INT32_MIN, dtype=np.int32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    kk = best_s.shape[1]
    scores[:, :kk] = best_s
    ids[:, :kk] = best_i
    return scores, ids
