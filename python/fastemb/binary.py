"""SDC binary codes: binarize float embeddings into multi-bit binary codes and search them.

Codes are uint8 arrays ``[n, bits, nbytes]`` (bit plane after bit plane, ``np.packbits``
bitorder='big'); for ``bits = 1`` a 2-D ``[n, nbytes]`` array (sentence-transformers ``ubinary``,
faiss ``IndexBinaryFlat``) is accepted too. ``dim`` is the number of true dimensions per plane
(default ``8 * nbytes``); bits past ``dim`` are padding and never change a score.

sentence-transformers: ``quantize_embeddings(emb, precision="ubinary")`` is
``np.packbits(emb > 0, axis=-1)``: the same bit order and zero padding as fastemb's codes, so
those arrays go into :func:`hamming`, :func:`sdc_topk` and :meth:`fastemb.BinaryIndex.from_codes`
unchanged, and ``binarize(emb, threshold_rule="gt")[:, 0]`` reproduces them bit for bit. Its
signed ``precision="binary"`` codes are ``ubinary - 128`` as int8: ``codes.view(np.uint8) ^ 0x80``
turns them back into ``ubinary`` codes (a new array, one pass over the bytes).

Scores are exact integers: ``S(q, d) = sum_j (2 C_qj - L)(2 C_dj - L)`` with ``L = 2^bits - 1``
and ``C_j`` the ``bits``-bit integer code of dimension ``j`` (``S = dim - 2 * Hamming`` at 1 bit).
See shared/specs/sdc.md.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import numpy as np

from . import _backend
from ._out import check_out
from ._reference import binary as _ref

MODE_CODES = {"hamming": 0, "sdc": 1}
THRESHOLD_RULES = _ref.THRESHOLD_RULES  # "ge": bit = (r >= 0), the default; "gt": bit = (r > 0)
_INT32_MAX = np.iinfo(np.int32).max


# ---- validation -----------------------------------------------------------------------------

def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _check_bits(bits: Any) -> int:
    bits = _check_int("bits", bits)
    if not 1 <= bits <= 4:
        raise ValueError(f"bits must be in 1..4, got {bits}")
    return bits


def check_threshold_rule(threshold_rule: Any, name: str = "threshold_rule") -> str:
    """Validates a binarization threshold rule: "ge" (``x >= 0`` -> 1) or "gt" (``x > 0`` -> 1)."""
    if not isinstance(threshold_rule, str):
        raise TypeError(f"{name} must be a str, \"ge\" or \"gt\", got {type(threshold_rule).__name__}")
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"{name} must be \"ge\" (bit = x >= 0, the default) or \"gt\" (bit = x > 0, "
                         f"sentence-transformers ubinary), got {threshold_rule!r}")
    return threshold_rule


def as_codes(name: str, codes: Any) -> np.ndarray:
    """Validates a code array and returns it as C-contiguous uint8 ``[n, bits, nbytes]``.

    A C-contiguous input (np.memmap included) is used in place; any other layout is copied once.
    """
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of uint8 codes, got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        hint = ""
        if codes.dtype == np.int8:
            hint = ("; int8 codes such as sentence-transformers' precision=\"binary\" (ubinary - 128) convert "
                    "with codes.view(np.uint8) ^ 0x80")
        raise TypeError(f"{name} must have dtype uint8 (packed bits), got {codes.dtype}{hint}")
    if codes.ndim == 2:
        codes = codes.reshape(codes.shape[0], 1, codes.shape[1]) if codes.flags.c_contiguous else \
            codes[:, None, :]
    elif codes.ndim != 3:
        raise ValueError(f"{name} must be [n, bits, nbytes] (or [n, nbytes] for 1 bit), got shape {codes.shape}")
    if not 1 <= codes.shape[1] <= 4:
        raise ValueError(f"{name}: bits (axis 1) must be in 1..4, got shape {codes.shape}")
    if codes.shape[2] < 1:
        raise ValueError(f"{name}: nbytes (last axis) must be >= 1, got shape {codes.shape}")
    if not codes.flags.c_contiguous:
        codes = np.ascontiguousarray(codes)  # documented: one copy of a non-contiguous input
    return codes


def check_dim(dim: Any, nbytes: int, name: str = "dim") -> int:
    if dim is None:
        return 8 * nbytes
    dim = _check_int(name, dim)
    if not 8 * (nbytes - 1) < dim <= 8 * nbytes:
        raise ValueError(f"{name}={dim} does not match the codes' {nbytes} bytes per plane "
                         f"(need {8 * (nbytes - 1) + 1} <= {name} <= {8 * nbytes})")
    return dim


def _describe_codes(name: str, rows: str, shape: Tuple[int, ...]) -> str:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return f"{name} has shape {shape}, read as [{rows}={shape[0]}, nbytes={shape[1]}] (1 bit)"
    return f"{name} has shape {shape}: [{rows}={shape[0]}, bits={shape[1]}, nbytes={shape[2]}]"


def pair_mismatch_message(what: str, q_shape: Tuple[int, ...], d_shape: Tuple[int, ...]) -> str:
    """The error for codes q, d (shapes as the caller gave them) that disagree on bits or nbytes:
    says how each shape was read, what the shapes mean, and spots one row given without its axis."""
    q_shape, d_shape = tuple(q_shape), tuple(d_shape)
    msg = (f"q and d disagree on {what}: {_describe_codes('q', 'nq', q_shape)}; "
           f"{_describe_codes('d', 'nd', d_shape)}. Codes are q [nq, bits, nbytes] (the queries) and "
           "d [nd, bits, nbytes] (the corpus), with the same bits and nbytes; 2-D [n, nbytes] means 1-bit codes")
    for name, a, b in (("q", q_shape, d_shape), ("d", d_shape, q_shape)):
        if len(a) == 2 and len(b) == 3 and a == b[1:] and b[1] > 1:
            msg += (f". {name} looks like a single row's {b[1]}-bit codes [bits, nbytes]: "
                    f"pass {name}[None] (shape {(1,) + a}), e.g. codes[i:i + 1] instead of codes[i]")
    return msg


def prepare_pair(q: Any, d: Any, dim: Any, mode: str = "sdc") -> Tuple[np.ndarray, np.ndarray, int]:
    """Validates a (queries, corpus) pair of codes; returns (q, d, dim) with 3-D codes."""
    q_shape, d_shape = getattr(q, "shape", ()), getattr(d, "shape", ())
    q = as_codes("q", q)
    d = as_codes("d", d)
    if q.shape[1] != d.shape[1]:
        raise ValueError(pair_mismatch_message("bits", q_shape, d_shape))
    if q.shape[2] != d.shape[2]:
        raise ValueError(pair_mismatch_message("nbytes", q_shape, d_shape))
    dim = check_dim(dim, q.shape[2])
    L = 2 ** q.shape[1] - 1
    bound = dim * L * L if mode == "sdc" else dim * q.shape[1]
    if bound > _INT32_MAX:
        raise ValueError(f"dim={dim} is too large for {q.shape[1]}-bit codes: scores would overflow int32")
    return q, d, dim


# ---- native entry points (tests call these with isa=) ----------------------------------------

def native_scores(C, q: np.ndarray, d: np.ndarray, dim: int, mode: str = "sdc", isa: str = "") -> np.ndarray:
    """int32 [nq, nd] Hamming or SDC scores from the C++ kernels (validated 3-D inputs)."""
    out = np.empty((q.shape[0], d.shape[0]), dtype=np.int32)
    A = _backend.address
    C.binary_scores(A(q), q.shape[0], A(d), d.shape[0], q.shape[1], q.shape[2], dim, MODE_CODES[mode], A(out), isa)
    return out


def native_topk(C, q: np.ndarray, d: np.ndarray, k: int, dim: int, isa: str = "") -> Tuple[np.ndarray, np.ndarray]:
    """Fused top-k from the C++ kernels (validated 3-D inputs)."""
    scores = np.empty((q.shape[0], k), dtype=np.int32)
    ids = np.empty((q.shape[0], k), dtype=np.int64)
    A = _backend.address
    C.binary_topk(A(q), q.shape[0], A(d), d.shape[0], q.shape[1], q.shape[2], dim, k, A(scores), A(ids), isa)
    return scores, ids


# ---- public API -------------------------------------------------------------------------------

def binarize(x: np.ndarray, bits: int = 1, scale: Any = None, threshold_rule: str = "ge", *,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Training-free recurrent binarization of float rows into ``bits``-bit codes.

    Each row is scaled by ``s = mean|x|`` (or ``scale``: a positive scalar or ``[n]`` array);
    ``d_0 = sign(x/s)`` and ``d_i = sign(x/s - sum_{j<i} 2^-j d_j)``. An all-zero row uses
    ``s = 1`` (no division by zero). The result is the float64 reference's, bit for bit: the native
    kernels (float16 / float32 / float64 input) find per row the exact input-precision thresholds
    at which ``fl64(x / s)`` reaches each level, and compare the input with them (no per-element
    division); other dtypes, or a build without the native module, use the NumPy reference.

    Args:
        x: ``[n, m]`` real array without NaN or inf.
        bits: 1..4 bit planes.
        scale: optional positive finite scalar or ``[n]`` array replacing ``mean|x|``.
        threshold_rule: the sign of zero, on every bit plane. ``"ge"`` (default): bit =
            ``r >= 0``, sign(0) = +1. ``"gt"``: bit = ``r > 0``, sign(0) = -1; plane 0 then equals
            sentence-transformers' ``quantize_embeddings(x, precision="ubinary")`` bit for bit
            (``np.packbits(x > 0, axis=-1)``; ``-0.0`` gives 0 too), for any ``bits``. With
            ``bits > 1`` the rule also decides a value exactly midway between two levels
            (``x/s`` in ``{-1, 0, 1}`` at 2 bits, a multiple of 1/2 at 3 bits...): "ge" gives it
            the upper level ``x/s + 2^-(bits-1)``, "gt" the lower ``x/s - 2^-(bits-1)``; all
            other values get the same codes under both rules. Plane 0 compares ``x`` itself,
            which has the sign of ``x/s`` (also where ``x/s`` underflows to zero).
        out: optional uint8 ``[n, bits, ceil(m / 8)]`` C-contiguous array the codes are written to (and
            returned), sharing no memory with ``x``; default: a new array. When ``x`` holds NaN or inf the
            native kernels find it in their single pass: the ValueError then leaves ``out`` partly written.

    Returns:
        uint8 ``[n, bits, ceil(m / 8)]`` codes (padding bits zero).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x must be a real array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [n, m], got shape {x.shape}")
    bits = _check_bits(bits)
    threshold_rule = check_threshold_rule(threshold_rule)
    C = _backend.native()
    native = C is not None and x.dtype in _NATIVE_BINARIZE_DTYPES
    if x.dtype.kind == "f" and not native:
        _check_finite(x)
    if scale is not None:
        s = np.asarray(scale)
        if s.dtype.kind not in "fiu":
            raise TypeError(f"scale must be a real scalar or array, got dtype {s.dtype}")
        if s.ndim not in (0, 1) or (s.ndim == 1 and s.shape[0] != x.shape[0]):
            raise ValueError(f"scale must be a scalar or have shape ({x.shape[0]},), got shape {s.shape}")
        s = s.astype(np.float64)
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError("scale must be positive and finite")
        scale = s
    shape = (x.shape[0], bits, (x.shape[1] + 7) // 8)
    if out is not None:
        check_out(out, shape, np.uint8, {"x": x})
    if not native:
        codes = _ref.binarize(x, bits, scale, threshold_rule)
        if out is None:
            return codes
        out[...] = codes
        return out
    return native_binarize(C, x, bits, scale, threshold_rule, out=out)


_NATIVE_BINARIZE_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}


def _check_finite(x: np.ndarray) -> None:
    if np.isnan(x).any():
        raise ValueError("x contains NaN")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite (found inf)")


def native_binarize(C, x: np.ndarray, bits: int, scale: Optional[np.ndarray], threshold_rule: str,
                    isa: str = "", out: Optional[np.ndarray] = None) -> np.ndarray:
    """binarize with the C++ kernels (x: validated float16/32/64 ``[n, m]``; scale: None or a
    validated float64 scalar / ``[n]`` array). Rows with contiguous elements are read in place
    (any row stride >= m); any other layout is copied once. Raises the reference's errors for NaN
    or inf (detected inside the kernel's single pass). ``out``: a checked result buffer, or None."""
    n, m = x.shape
    item = x.itemsize
    if not x.flags.aligned or not (x.strides[1] == item or m <= 1) or x.strides[0] % item or \
            (n > 1 and x.strides[0] // item < m):
        # documented: one copy of a non-contiguous input; also of a misaligned one (e.g. rows deserialized
        # at an odd offset by dask), which the kernels must not read as float (UB; UBSan flags it)
        x = np.array(x, order="C")
    ld = x.strides[0] // item if n > 1 else m
    if out is None:
        out = np.empty((n, bits, (m + 7) // 8), dtype=np.uint8)
    A = _backend.address
    if scale is None:
        sc, stride = 0, 0
    else:
        stride = 1 if np.ndim(scale) else 0  # 0: one scalar for every row
        scale = np.ascontiguousarray(np.reshape(scale, -1), dtype=np.float64)
        sc = A(scale)
    ok = C.binary_binarize(A(x) if x.size else 0, _NATIVE_BINARIZE_DTYPES[x.dtype], n, m, max(ld, m), bits, sc,
                           stride, threshold_rule == "gt", A(out) if out.size else 0, isa)
    if not ok:
        _check_finite(x)
        raise ValueError("x must be finite")  # not reached: the kernel saw NaN or inf
    return out


def pack_levels(levels: np.ndarray) -> np.ndarray:
    """Packs sign levels from any model (``[n, bits, m]`` or ``[n, m]``, values +-1 or bool) into
    uint8 codes ``[n, bits, ceil(m / 8)]`` (plane i holds ``levels[:, i] > 0``; padding bits zero)."""
    if not isinstance(levels, np.ndarray):
        raise TypeError(f"levels must be a numpy.ndarray, got {type(levels).__name__}")
    if levels.dtype.kind not in "biuf":
        raise TypeError(f"levels must be bool or +-1 numbers, got dtype {levels.dtype}")
    if levels.ndim == 2:
        levels = levels[:, None, :]
    elif levels.ndim != 3:
        raise ValueError(f"levels must be [n, bits, m] (or [n, m]), got shape {levels.shape}")
    if not 1 <= levels.shape[1] <= 4:
        raise ValueError(f"levels: bits (axis 1) must be in 1..4, got shape {levels.shape}")
    if levels.shape[2] < 1:
        raise ValueError(f"levels: m (last axis) must be >= 1, got shape {levels.shape}")
    if levels.dtype.kind != "b" and not np.all((levels == 1) | (levels == -1)):
        raise ValueError("levels must contain only +1 and -1 (or be bool)")
    return _ref.pack_levels(levels)


def unpack_codes(codes: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """Level values ``b = sum_i 2^-i d_i`` (float32 ``[n, dim]``) of codes ``[n, bits, nbytes]``."""
    codes = as_codes("codes", codes)
    return _ref.unpack_codes(codes, check_dim(dim, codes.shape[2]))


def hamming(q: np.ndarray, d: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """int32 ``[nq, nd]`` Hamming distances: popcount of ``q XOR d`` over every bit plane.

    With ``dim``, only the first ``dim`` bits of each plane count (padding bits ignored); without
    it, all ``8 * nbytes`` bits (padding bits are zero in codes from ``binarize``/``pack_levels``
    and sentence-transformers ``ubinary``). 2-D ``[n, nbytes]`` codes (``ubinary``, faiss) are
    1-bit codes, used as they are.
    """
    q, d, dim = prepare_pair(q, d, dim, mode="hamming")
    C = _backend.native()
    if C is None:
        return _ref.hamming(q, d, dim)
    return native_scores(C, q, d, dim, "hamming")


def sdc_scores(q: np.ndarray, d: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """Exact int32 ``[nq, nd]`` SDC scores ``sum_j (2 C_qj - L)(2 C_dj - L)`` over the true dims
    (``= 4^(bits-1) <b_q, b_d>``; ``= dim - 2 * Hamming`` at 1 bit)."""
    q, d, dim = prepare_pair(q, d, dim)
    C = _backend.native()
    if C is None:
        return _ref.sdc_scores(q, d, dim)
    return native_scores(C, q, d, dim, "sdc")


def sdc_cosine(q: np.ndarray, d: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """float32 ``[nq, nd]`` cosine of the level vectors: ``S / sqrt(N_q N_d)`` with
    ``N_x = sum_j (2 C_xj - L)^2`` (norms computed with NumPy, in chunks of rows)."""
    q, d, dim = prepare_pair(q, d, dim)
    C = _backend.native()
    if C is None:
        return _ref.sdc_cosine(q, d, dim)
    s = native_scores(C, q, d, dim, "sdc")
    return _ref.cosine_from_scores(s, _ref.self_scores(q, dim), _ref.self_scores(d, dim))


def sdc_topk(q: np.ndarray, d: np.ndarray, k: int, dim: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best corpus rows for each query by SDC score, without the ``nq x nd`` matrix.

    Args:
        q: query codes ``[nq, bits, nbytes]`` (or ``[nq, nbytes]``).
        d: corpus codes, same bits and nbytes; may be an ``np.memmap`` (streamed, not copied).
        k: >= 1; may exceed ``nd``.
        dim: true dimensions per plane (default ``8 * nbytes``).

    Returns:
        (scores int32 ``[nq, k]``, ids int64 ``[nq, k]``): descending score, ties to the lower id;
        positions past ``nd`` hold score ``INT32_MIN`` and id ``-1``. The same on every thread count.
    """
    k = _check_int("k", k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q, d, dim = prepare_pair(q, d, dim)
    C = _backend.native()
    if C is None:
        return _ref.sdc_topk(q, d, k, dim)
    return native_topk(C, q, d, k, dim)
