"""Multi-vector retrieval: exact MaxSim (late interaction) and MUVERA fixed-dimensional encodings.

Late-interaction models (ColBERT, ColPali, PyLate) keep one vector per token and score a query
against a document with MaxSim, the sum over query tokens of the best dot product with any document
token. MUVERA (Dhulipala et al., 2024) turns each token set into one fixed-dimensional encoding (FDE)
whose dot product approximates MaxSim, so a single-vector index can do the first stage.

* :func:`maxsim` -- exact MaxSim scores ``[n_queries, n_docs]``;
* :func:`maxsim_topk` -- the ``k`` best documents per query, fused: never more than a tile of token
  dot products in memory;
* :func:`muvera_fde` -- MUVERA FDEs of queries or documents;
* :func:`maxsim_codes` -- MaxSim of binary-coded tokens (1-bit or multi-bit SDC codes of
  :func:`fastemb.binarize`), scored with the binary family's SDC kernels.

Token sets: a flat float array ``x [total_tokens, dim]`` plus ``offsets [n_sets + 1]`` (set ``i`` is
rows ``offsets[i]:offsets[i+1]``; the convention of ``centroid_aggregate``), or a padded
``[n_sets, max_tokens, dim]`` array with ``lengths [n_sets]`` or a boolean ``mask [n_sets,
max_tokens]`` (PyLate / sentence-transformers attention masks), or neither (every row counts).
Tokens are float32 (float16 / float64 are converted, one copy) and must be finite. An empty set is
allowed and scores 0 against anything.

The native kernels (``fastemb._C.multivector_*``) are used when the build has them; otherwise the
NumPy reference (``fastemb._reference.multivector``), which gives the same FDE bits, slower. The rules
(bucket numbering, random streams, summation orders) are in ``src/cpp/multivector/multivector.h``.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from . import _backend
from ._reference import multivector as _ref

__all__ = ["maxsim", "maxsim_topk", "maxsim_codes", "muvera_fde", "fde_dim"]

_U64 = 1 << 64
MAX_K_SIM = _ref.MAX_K_SIM
KINDS = ("query", "document")


class TokenSets(NamedTuple):
    """Validated token sets for the kernels: x float32 C-contiguous [rows, dim], begin / end int64 [n]."""
    x: np.ndarray
    begin: np.ndarray
    end: np.ndarray

    @property
    def n(self) -> int:
        return int(self.begin.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])


# ---- argument checks ------------------------------------------------------------------------

def _check_int(name: str, value: Any, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")
    return value


def _float_tokens(name: str, x: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array (float32; float16/float64 are converted), got dtype {x.dtype}")
    if x.dtype != np.float32:
        x = x.astype(np.float32)  # documented: one converted copy
    return x


def _offsets(name: str, offsets: Any, rows: int) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {offsets.dtype}")
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"{name} must be 1-D with at least one entry, got shape {offsets.shape}")
    if offsets.dtype == np.uint64 and offsets.size and int(offsets.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: entry {int(offsets.max())} is out of range")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0:
        raise ValueError(f"{name} must start at 0, got {int(offsets[0])}")
    steps = np.diff(offsets)
    if np.any(steps < 0):
        i = int(np.argmax(steps < 0))
        raise ValueError(f"{name} must be non-decreasing (entry {i + 1} = {int(offsets[i + 1])} < entry {i} = "
                         f"{int(offsets[i])})")
    if offsets[-1] != rows:
        raise ValueError(f"{name} must end at the number of tokens ({rows}), got {int(offsets[-1])}")
    return offsets


def token_sets(x: Any, offsets: Any = None, lengths: Any = None, mask: Any = None, *, name: str = "x",
               offsets_name: str = "offsets", lengths_name: str = "lengths", mask_name: str = "mask") -> TokenSets:
    """Validates token sets given flat (``x [rows, dim]`` + offsets) or padded (``x [n, T, dim]`` with
    lengths, a mask, or neither). A padded array whose mask is not one contiguous run per row is
    compacted (one copy of the masked tokens); otherwise nothing is copied unless ``x`` is not float32
    or not C-contiguous."""
    x = _float_tokens(name, x)
    if x.ndim == 2:
        if lengths is not None or mask is not None:
            raise ValueError(f"{lengths_name}/{mask_name} are for a padded 3-D {name}; a 2-D {name} takes {offsets_name}")
        if offsets is None:
            raise ValueError(f"{offsets_name} is required for a 2-D {name} [total_tokens, dim]")
        rows, dim = x.shape
        off = _offsets(offsets_name, offsets, rows)
        begin, end = off[:-1].copy(), off[1:].copy()
    elif x.ndim == 3:
        if offsets is not None:
            raise ValueError(f"{offsets_name} is for a flat 2-D {name}; a padded 3-D {name} takes {lengths_name} or {mask_name}")
        if lengths is not None and mask is not None:
            raise ValueError(f"give at most one of {lengths_name} and {mask_name}")
        n, t, dim = x.shape
        starts = np.arange(n, dtype=np.int64) * t
        if lengths is not None:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise TypeError(f"{lengths_name} must be an integer array, got dtype {lens.dtype}")
            if lens.shape != (n,):
                raise ValueError(f"{lengths_name} must have shape ({n},), got {lens.shape}")
            if lens.size and (int(lens.min()) < 0 or int(lens.max()) > t):
                raise ValueError(f"{lengths_name} must be in [0, {t}] (the padded length), got values in "
                                 f"[{int(lens.min())}, {int(lens.max())}]")
            begin, end = starts, starts + lens.astype(np.int64)
        elif mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.bool_ and m.dtype.kind not in "iu":
                raise TypeError(f"{mask_name} must be a boolean (or 0/1 integer) array, got dtype {m.dtype}")
            if m.shape != (n, t):
                raise ValueError(f"{mask_name} must have shape ({n}, {t}), got {m.shape}")
            if m.dtype != np.bool_:
                if m.size and (int(m.min()) < 0 or int(m.max()) > 1):
                    raise ValueError(f"{mask_name} must hold 0/1 (or booleans)")
                m = m.astype(bool)
            count = m.sum(axis=1).astype(np.int64)
            first = np.where(count > 0, np.argmax(m, axis=1), 0).astype(np.int64)
            last = np.where(count > 0, t - 1 - np.argmax(m[:, ::-1], axis=1), -1).astype(np.int64)
            if np.all((count == 0) | (last - first + 1 == count)):  # one run per row: no copy
                begin, end = starts + first, starts + first + count
            else:  # scattered tokens: compact them (one copy)
                flat = x.reshape(n * t, dim)[m.reshape(-1)]
                off = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
                return TokenSets(_backend.native_array(flat), off[:-1].copy(), off[1:].copy())
        else:
            begin, end = starts, starts + t
        x = _backend.native_array(x).reshape(n * t, dim)
    else:
        raise ValueError(f"{name} must be 2-D [total_tokens, dim] (with {offsets_name}) or 3-D "
                         f"[n_sets, max_tokens, dim] (padded), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: the token dimension must be >= 1, got {x.shape[1]}")
    return TokenSets(_backend.native_array(x), _backend.native_array(begin, np.int64),
                     _backend.native_array(end, np.int64))


def _check_finite(name: str, t: TokenSets) -> None:
    """NumPy backend: every token of every set finite (the native kernels check while they read)."""
    for s in range(t.n):
        rows = t.x[t.begin[s]:t.end[s]]
        if not np.all(np.isfinite(rows)):
            bad = int(t.begin[s]) + int(np.nonzero(~np.all(np.isfinite(rows), axis=1))[0][0])
            raise ValueError(f"{name}: token row {bad} holds NaN or inf (tokens must be finite)")


def _pair(q, q_offsets, d, d_offsets, q_lengths, q_mask, d_lengths, d_mask) -> Tuple[TokenSets, TokenSets]:
    qs = token_sets(q, q_offsets, q_lengths, q_mask, name="q", offsets_name="q_offsets", lengths_name="q_lengths",
                    mask_name="q_mask")
    ds = token_sets(d, d_offsets, d_lengths, d_mask, name="d", offsets_name="d_offsets", lengths_name="d_lengths",
                    mask_name="d_mask")
    if qs.dim != ds.dim:
        raise ValueError(f"d: token dimension {ds.dim} does not match q's {qs.dim}")
    return qs, ds


# ---- native calls (tests pass isa to run each variant) -----------------------------------------------

def native_maxsim(C: Any, q: TokenSets, d: TokenSets, isa: str = "") -> np.ndarray:
    out = np.empty((q.n, d.n), np.float32)
    A = _backend.address
    C.multivector_maxsim(A(q.x), q.x.shape[0], A(q.begin), A(q.end), q.n, A(d.x), d.x.shape[0], A(d.begin),
                         A(d.end), d.n, q.dim, A(out), isa)
    return out


def native_maxsim_topk(C: Any, q: TokenSets, d: TokenSets, k: int, isa: str = "") -> Tuple[np.ndarray, np.ndarray]:
    scores = np.empty((q.n, k), np.float32)
    ids = np.empty((q.n, k), np.int64)
    A = _backend.address
    C.multivector_maxsim_topk(A(q.x), q.x.shape[0], A(q.begin), A(q.end), q.n, A(d.x), d.x.shape[0], A(d.begin),
                              A(d.end), d.n, q.dim, k, A(scores), A(ids), isa)
    return scores, ids


def native_fde(C: Any, x: TokenSets, spec: "FdeSpec", isa: str = "") -> np.ndarray:
    out = np.empty((x.n, fde_dim(x.dim, spec.repetitions, spec.k_sim, spec.d_proj, spec.final_dim)), np.float32)
    A = _backend.address
    C.multivector_fde(A(x.x), x.x.shape[0], A(x.begin), A(x.end), x.n, x.dim, spec.repetitions, spec.k_sim,
                      spec.d_proj, spec.final_dim, spec.document, spec.fill_empty, spec.seed, A(out), isa)
    return out


# ---- MaxSim ---------------------------------------------------------------------------------

def maxsim(q: np.ndarray, q_offsets: Optional[np.ndarray], d: np.ndarray, d_offsets: Optional[np.ndarray], *,
           q_lengths: Optional[np.ndarray] = None, q_mask: Optional[np.ndarray] = None,
           d_lengths: Optional[np.ndarray] = None, d_mask: Optional[np.ndarray] = None,
           candidates: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact MaxSim (ColBERT late interaction) of every query set against every document set, or against each
    query's own candidate documents (``candidates``: the rerank after a first stage such as FDE search).

    ``score(Q, D) = sum over q in Q of max over t in D of <q, t>``.

    Args:
        q: query tokens, ``[total_query_tokens, dim]`` with ``q_offsets``, or padded
            ``[n_queries, max_tokens, dim]`` with ``q_lengths`` / ``q_mask`` (or neither: all rows).
        q_offsets: ``[n_queries + 1]`` non-decreasing from 0 to the token count (None when ``q`` is 3-D).
        d: document tokens, the same layouts (``d_offsets`` / ``d_lengths`` / ``d_mask``).
        d_offsets: ``[n_docs + 1]``.
        candidates: optional integer ``[n_queries, C]``: document indices per query (e.g. the ids of
            :func:`fastemb.sdc_topk` or :func:`maxsim_topk`), ``-1`` for none (the padding those functions
            use). The documents' tokens are read where they are (no gather copy).

    Returns:
        float32 ``[n_queries, n_docs]``, or ``[n_queries, C]`` with ``candidates`` (``score[i, j]`` =
        MaxSim of query i and document ``candidates[i, j]``, the same bits as the full matrix's entry with the
        native kernels;
        ``-inf`` where the candidate is -1). An empty query or document set scores 0. Native kernels: dot
        products are float32 fused multiply-add chains over the dimensions, the same bits on every ISA and
        thread count (and on CUDA, via :func:`fastemb.torch.maxsim`); the NumPy fallback (BLAS products)
        agrees within float32 rounding.

    Raises:
        ValueError: bad offsets / lengths / mask, mismatched dims, NaN or inf tokens (named argument).
        TypeError: non-array or non-float tokens, non-integer offsets.
    """
    qs, ds = _pair(q, q_offsets, d, d_offsets, q_lengths, q_mask, d_lengths, d_mask)
    C = _backend.native()
    if C is None:
        _check_finite("q", qs)
        _check_finite("d", ds)
    if candidates is not None:
        return _maxsim_candidates(C, qs, ds, _candidates(candidates, qs.n, ds.n))
    if C is None:
        return _ref.maxsim(qs.x, qs.begin, qs.end, ds.x, ds.begin, ds.end)
    return native_maxsim(C, qs, ds)


def _candidates(candidates: Any, n_queries: int, n_docs: int) -> np.ndarray:
    c = np.asarray(candidates)
    if c.dtype.kind not in "iu":
        raise TypeError(f"candidates must be an integer array, got dtype {c.dtype}")
    if c.ndim != 2 or c.shape[0] != n_queries:
        raise ValueError(f"candidates must have shape ({n_queries}, C) (one row per query), got {c.shape}")
    if c.size and (int(c.min()) < -1 or int(c.max()) >= n_docs):
        raise ValueError(f"candidates must be document indices in [0, {n_docs}) or -1 (none), got values in "
                         f"[{int(c.min())}, {int(c.max())}]")
    return c.astype(np.int64, copy=False)


def _maxsim_candidates(C: Any, qs: TokenSets, ds: TokenSets, cand: np.ndarray) -> np.ndarray:
    """score[i, j] = MaxSim(query i, document cand[i, j]): one kernel call per query over the candidates'
    (begin, end) token ranges, so their tokens are never copied."""
    out = np.full(cand.shape, -np.inf, np.float32)
    for i in range(qs.n):
        valid = np.nonzero(cand[i] >= 0)[0]
        if not len(valid):
            continue
        docs = cand[i, valid]
        q1 = TokenSets(qs.x, qs.begin[i:i + 1], qs.end[i:i + 1])
        d1 = TokenSets(ds.x, _backend.native_array(ds.begin[docs]), _backend.native_array(ds.end[docs]))
        if C is None:
            row = _ref.maxsim(q1.x, q1.begin, q1.end, d1.x, d1.begin, d1.end)
        else:
            row = native_maxsim(C, q1, d1)
        out[i, valid] = row[0]
    return out


def maxsim_topk(q: np.ndarray, q_offsets: Optional[np.ndarray], d: np.ndarray, d_offsets: Optional[np.ndarray],
                k: int, *, q_lengths: Optional[np.ndarray] = None, q_mask: Optional[np.ndarray] = None,
                d_lengths: Optional[np.ndarray] = None, d_mask: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best document sets for every query set by exact MaxSim, without the score matrix.

    Same arguments as :func:`maxsim`, plus ``k >= 1`` (may exceed the number of documents). Document
    sets are scored tile by tile and kept in per-query heaps: extra memory grows with
    ``n_queries * k`` and the thread count, never with the number of documents.

    Returns:
        (scores float32 ``[n_queries, k]``, ids int64 ``[n_queries, k]``): descending score, ties to the
        lower document index; positions past ``n_docs`` hold ``-inf`` and ``-1``. Scores are the same
        bits as :func:`maxsim`'s.
    """
    k = _check_int("k", k, lo=1)
    qs, ds = _pair(q, q_offsets, d, d_offsets, q_lengths, q_mask, d_lengths, d_mask)
    C = _backend.native()
    if C is None:
        _check_finite("q", qs)
        _check_finite("d", ds)
        return _ref.maxsim_topk(qs.x, qs.begin, qs.end, ds.x, ds.begin, ds.end, k)
    return native_maxsim_topk(C, qs, ds, k)


def maxsim_codes(q_codes: np.ndarray, q_offsets: np.ndarray, d_codes: np.ndarray, d_offsets: np.ndarray,
                 dim: Optional[int] = None, *, block_bytes: int = 64 << 20) -> np.ndarray:
    """MaxSim of binary-coded token sets (residual-free binary late interaction), scored with SDC.

    ``score(Q, D) = sum over q in Q of max over t in D of S(q, t)`` with ``S`` the exact integer SDC score of
    :func:`fastemb.sdc_scores` (``dim - 2 * Hamming`` for 1-bit codes; ``4^(bits-1) <b_q, b_t>`` of the level
    vectors in general).

    Args:
        q_codes: query token codes ``[query_tokens, bits, nbytes]`` (or ``[query_tokens, nbytes]`` at 1 bit),
            e.g. ``fastemb.binarize(tokens, bits)``.
        q_offsets: ``[n_queries + 1]`` offsets into the query tokens.
        d_codes: document token codes, same bits and nbytes.
        d_offsets: ``[n_docs + 1]``.
        dim: true dimensions per plane (default ``8 * nbytes``).
        block_bytes: the int32 token-score tile of one step (``query_tokens x block`` document tokens) stays
            within about this many bytes.

    Returns:
        int64 ``[n_queries, n_docs]``, exact; 0 when either set is empty. The same on every backend.
    """
    from . import binary as _bin

    q, d, dim = _bin.prepare_pair(q_codes, d_codes, dim)
    qo = _offsets("q_offsets", q_offsets, q.shape[0])
    do = _offsets("d_offsets", d_offsets, d.shape[0])
    nq, nd = len(qo) - 1, len(do) - 1
    out = np.zeros((nq, nd), np.int64)
    q_lens, d_lens = np.diff(qo), np.diff(do)
    if nq == 0 or nd == 0 or q.shape[0] == 0:
        return out
    q_starts = qo[:-1][q_lens > 0]
    q_nonempty = np.nonzero(q_lens > 0)[0]
    budget = max(1, int(block_bytes) // (4 * q.shape[0]))  # document tokens per tile
    s0 = 0
    while s0 < nd:
        s1, tokens = s0, 0
        while s1 < nd and (s1 == s0 or tokens + d_lens[s1] <= budget):
            tokens += int(d_lens[s1])
            s1 += 1
        sets = s0 + np.nonzero(d_lens[s0:s1] > 0)[0]
        if len(sets):
            tile = _bin.sdc_scores(q, d[do[s0]:do[s1]], dim)  # [query tokens, block tokens] int32
            best = np.maximum.reduceat(tile, do[sets] - do[s0], axis=1).astype(np.int64)
            out[np.ix_(q_nonempty, sets)] = np.add.reduceat(best, q_starts, axis=0)
        s0 = s1
    return out


# ---- MUVERA ---------------------------------------------------------------------------------

class FdeSpec(NamedTuple):
    repetitions: int
    k_sim: int
    d_proj: int
    final_dim: int
    document: bool
    fill_empty: bool
    seed: int


def fde_dim(dim: int, repetitions: int, k_sim: int, d_proj: int = 0, final_dim: int = 0) -> int:
    """Length of an FDE: ``final_dim`` if > 0, else ``repetitions * 2**k_sim * (d_proj or dim)``."""
    return _ref.fde_dims(dim, repetitions, k_sim, d_proj, final_dim)[2]


def check_fde_args(kind: Any, repetitions: Any, k_sim: Any, d_proj: Any, final_dim: Any, fill_empty: Any,
                   seed: Any, dim: int) -> FdeSpec:
    """Validates the MUVERA parameters (shared by the NumPy API and the torch op)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    repetitions = _check_int("repetitions", repetitions, lo=1, hi=(1 << 24) - 1)
    k_sim = _check_int("k_sim", k_sim, lo=0, hi=MAX_K_SIM)
    d_proj = _check_int("d_proj", d_proj, lo=0, hi=(1 << 30) - 1)
    final_dim = _check_int("final_dim", final_dim, lo=0, hi=(1 << 30) - 1)
    if not isinstance(fill_empty, (bool, np.bool_)):
        raise TypeError(f"fill_empty must be a bool, got {type(fill_empty).__name__}")
    seed = _check_int("seed", seed)
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    raw = _ref.fde_dims(dim, repetitions, k_sim, d_proj, final_dim)[1]
    if raw >= 1 << 40:
        raise ValueError(f"repetitions * 2**k_sim * {'d_proj' if d_proj else 'dim'} = {raw} is too large (>= 2**40)")
    document = kind == "document"
    return FdeSpec(repetitions, k_sim, d_proj, final_dim, document, bool(fill_empty) and document, seed)


def muvera_fde(x: np.ndarray, offsets: Optional[np.ndarray], kind: str, *, repetitions: int = 20, k_sim: int = 5,
               d_proj: int = 16, final_dim: int = 0, fill_empty: bool = True, seed: int = 0,
               lengths: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """MUVERA fixed-dimensional encodings (Dhulipala et al., 2024) of token sets.

    ``<muvera_fde(Q, kind='query'), muvera_fde(D, kind='document')>`` approximates MaxSim(Q, D) when both
    use the same parameters and seed.

    Args:
        x: tokens ``[total_tokens, dim]`` with ``offsets``, or padded ``[n_sets, max_tokens, dim]`` with
            ``lengths`` / ``mask`` (or neither).
        offsets: ``[n_sets + 1]`` (None for a padded ``x``).
        kind: ``'query'`` (bucket sums) or ``'document'`` (bucket means, empty buckets filled).
        repetitions: independent partitions (the paper's R_reps), >= 1.
        k_sim: SimHash bits per repetition (2**k_sim buckets), 0 <= k_sim <= 16.
        d_proj: inner projection width (an AMS / count sketch of each bucket vector); 0 = none (the
            block is the full ``dim``).
        final_dim: width of a final count sketch of the whole encoding; 0 = none.
        fill_empty: documents only (ignored for queries, as in the paper): an empty bucket takes the
            token whose bucket id is nearest in Hamming distance (ties: the first such token).
        seed: int in [0, 2**64); the random matrices come from a counter-based generator and are never
            stored (the SimHash signs are ``sparse_random_projection``'s R with ``s=1``).

    Returns:
        float32 ``[n_sets, fde_dim]`` with ``fde_dim = final_dim or repetitions * 2**k_sim * (d_proj or
        dim)``, laid out repetition, bucket, coordinate. The same bits for every thread count and ISA
        and for the NumPy fallback. An empty set gives zeros.
    """
    t = token_sets(x, offsets, lengths, mask)
    spec = check_fde_args(kind, repetitions, k_sim, d_proj, final_dim, fill_empty, seed, t.dim)
    out_bytes = t.n * fde_dim(t.dim, spec.repetitions, spec.k_sim, spec.d_proj, spec.final_dim) * 4
    if out_bytes >= 1 << 46:
        raise ValueError(f"the output would take {out_bytes} bytes; lower repetitions, k_sim or d_proj")
    C = _backend.native()
    if C is None:
        _check_finite("x", t)
        return _ref.muvera_fde(t.x, t.begin, t.end, document=spec.document, repetitions=spec.repetitions,
                               k_sim=spec.k_sim, d_proj=spec.d_proj, final_dim=spec.final_dim,
                               fill_empty=spec.fill_empty, seed=spec.seed)
    return native_fde(C, t, spec)
