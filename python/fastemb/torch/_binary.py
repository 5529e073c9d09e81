"""``torch.ops.fastemb.binarize / hamming / sdc_scores / sdc_topk``: SDC binary codes on torch
tensors (CPU and CUDA), with fake kernels for ``torch.compile(fullgraph=True)``.

- ``binarize`` runs the native C++ kernels on CPU tensors (float16 / bfloat16 / float32 /
  float64; the same bits as :func:`fastemb.binarize`). On other devices, or without the native
  module, it is written in torch ops and matches :func:`fastemb.binarize` bit for bit, for both
  threshold rules: it computes in float64 and sums ``|x|`` with NumPy's pairwise-summation order,
  so the per-row scale ``mean|x|`` is the same double as NumPy's.
- ``hamming`` / ``sdc_scores`` / ``sdc_topk`` call the native CPU kernels (``fastemb._C``) or the
  NumPy reference on CPU tensors, and the CUDA kernels of ``fastemb._C_cuda`` on CUDA tensors
  (data pointers + the current stream).

None of these ops is differentiable (integer codes and scores).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from . import _checks
from .._reference import binary as _ref
from ..binary import MODE_CODES, THRESHOLD_RULES, pair_mismatch_message

_INT32_MAX = 2 ** 31 - 1
_INT32_MIN = -2 ** 31
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---- validation (metadata only: valid on fake tensors too) -------------------------------------

def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def _check_threshold_rule(threshold_rule) -> None:
    if not isinstance(threshold_rule, str):
        raise TypeError(f"threshold_rule must be a str, \"ge\" or \"gt\", got {type(threshold_rule).__name__}")
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold_rule must be \"ge\" (bit = x >= 0, the default) or \"gt\" (bit = x > 0, "
                         f"sentence-transformers ubinary), got {threshold_rule!r}")


def _check_binarize_meta(x: Tensor, bits: int, scale: Optional[Tensor], threshold_rule: str = "ge") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [n, m], got shape {tuple(x.shape)}")
    _check_int("bits", bits)
    if not 1 <= bits <= 4:
        raise ValueError(f"bits must be in 1..4, got {bits}")
    _check_threshold_rule(threshold_rule)
    if scale is not None:
        if not isinstance(scale, Tensor):
            raise TypeError(f"scale must be a torch.Tensor, got {type(scale).__name__}")
        if scale.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"scale must be a floating-point tensor, got {scale.dtype}")
        if scale.dim() not in (0, 1) or (scale.dim() == 1 and scale.shape[0] != x.shape[0]):
            raise ValueError(f"scale must be a scalar or have shape ({x.shape[0]},), got {tuple(scale.shape)}")
        if scale.device != x.device:
            raise ValueError(f"scale is on {scale.device} but x is on {x.device}")


def _check_codes(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of uint8 codes, got {type(t).__name__}")
    if t.dtype != torch.uint8:
        raise TypeError(f"{name} must have dtype torch.uint8 (packed bits), got {t.dtype}")
    if t.dim() != 3:
        raise ValueError(f"{name} must be [n, bits, nbytes] (or [n, nbytes] for 1 bit), got shape {tuple(t.shape)}")
    if not 1 <= t.shape[1] <= 4:
        raise ValueError(f"{name}: bits (axis 1) must be in 1..4, got shape {tuple(t.shape)}")
    if t.shape[2] < 1:
        raise ValueError(f"{name}: nbytes (last axis) must be >= 1, got shape {tuple(t.shape)}")


def _check_pair(q: Tensor, d: Tensor, dim: int, mode: str) -> None:
    """Checks 3-D code tensors q, d and an explicit dim (as the ops receive them)."""
    _check_codes("q", q)
    _check_codes("d", d)
    if q.device != d.device:
        raise ValueError(f"q is on {q.device} but d is on {d.device}")
    if q.shape[1] != d.shape[1]:
        raise ValueError(pair_mismatch_message("bits", q.shape, d.shape))
    if q.shape[2] != d.shape[2]:
        raise ValueError(pair_mismatch_message("nbytes", q.shape, d.shape))
    _check_int("dim", dim)
    nbytes = q.shape[2]
    if not 8 * (nbytes - 1) < dim <= 8 * nbytes:
        raise ValueError(f"dim={dim} does not match the codes' {nbytes} bytes per plane "
                         f"(need {8 * (nbytes - 1) + 1} <= dim <= {8 * nbytes})")
    bits = q.shape[1]
    L = 2 ** bits - 1
    bound = dim * L * L if mode == "sdc" else dim * bits
    if bound > _INT32_MAX:
        raise ValueError(f"dim={dim} is too large for {bits}-bit codes: scores would overflow int32")


def _check_k(k: int) -> None:
    _check_int("k", k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


# ---- binarize ---------------------------------------------------------------------------------

def _pairwise_sum(a: Tensor, lo: int, n: int) -> Tensor:
    """Row sums of columns ``lo:lo+n`` of float64 ``a`` in NumPy's pairwise-summation order
    (numpy/_core/src/umath/loops_utils.h: 8 accumulators in blocks of <= 128, halves above),
    so the result is the same double as ``a.sum(axis=1)`` in NumPy."""
    if n < 8:
        res = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for i in range(n):
            res = res + a[:, lo + i]
        return res
    if n <= 128:
        r = a[:, lo:lo + 8]
        n8 = n - n % 8
        for i in range(8, n8, 8):
            r = r + a[:, lo + i:lo + i + 8]
        res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
        for i in range(n8, n):
            res = res + a[:, lo + i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def _binarize_out_shape(x: Tensor, bits: int):
    return (x.shape[0], bits, (x.shape[1] + 7) // 8)


@torch.library.custom_op("fastemb::binarize", mutates_args=())
def _binarize_op(x: Tensor, bits: int, scale: Optional[Tensor], threshold_rule: str = "ge") -> Tensor:
    _check_binarize_meta(x, bits, scale, threshold_rule)
    if x.device.type == "cpu":
        C = _backend.native()
        if C is not None:
            return _binarize_native_cpu(C, x, bits, scale, threshold_rule)
    elif x.device.type == "cuda":
        mod = _backend.cuda_module()
        if mod is not None and hasattr(mod, "binary_binarize"):
            return _binarize_native_cuda(mod, x, bits, scale, threshold_rule)
    n, m = x.shape
    x64 = y = x.to(torch.float64)
    _checks.require(x.device, [(torch.isfinite(y).all(), "x must be finite (found NaN or inf)")])
    if scale is None:
        if m:
            s = _pairwise_sum(y.abs().contiguous(), 0, m) / m
        else:
            s = torch.zeros(n, dtype=torch.float64, device=x.device)
        s = torch.where(s > 0, s, torch.ones_like(s))  # all-zero row: no division by zero
    else:
        s = scale.to(torch.float64).expand(n)
        _checks.require(x.device, [((torch.isfinite(s) & (s > 0)).all(), "scale must be positive and finite")])
    y = y / s[:, None]
    planes = []
    recon = torch.zeros_like(y)
    for i in range(bits):
        r = x64 if i == 0 else y - recon  # plane 0: the sign of x itself (= sign(x/s), no underflow)
        c = r > 0 if threshold_rule == "gt" else r >= 0  # "ge": sign(0) = +1; "gt": sign(0) = -1
        planes.append(c)
        recon = recon + torch.where(c, 2.0 ** -i, -(2.0 ** -i))
    c = torch.stack(planes, dim=1).to(torch.uint8)  # [n, bits, m] of 0/1
    nbytes = (m + 7) // 8
    pad = 8 * nbytes - m
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))  # padding bits are zero
    c = c.reshape(n, bits, nbytes, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=x.device)
    return (c * weights).sum(dim=-1, dtype=torch.uint8)  # at most 255: exact in uint8


_NATIVE_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _native_inputs(x: Tensor, scale: Optional[Tensor]):
    """What both native kernels take: ``(x, ld, s, sc, stride)``, x in a layout they read in place (one copy
    otherwise) and its row stride ld >= m; the scale as contiguous float64 ``s`` (the caller keeps it alive
    through the call; None without), its address ``sc`` (0 without) and ``stride`` (1 per row, 0 per tensor)."""
    n, m = x.shape
    if not ((x.stride(1) == 1 or m <= 1) and (n <= 1 or x.stride(0) >= m)) or x.data_ptr() % x.element_size():
        x = _backend.native_tensor(x)  # one copy of a layout the kernel cannot read in place (or misaligned)
    ld = max(x.stride(0) if n > 1 else m, m)
    sc, stride, s = 0, 0, None
    if scale is not None:
        s = _backend.native_tensor(scale.detach().to(torch.float64).reshape(-1))
        _checks.require(x.device, [((torch.isfinite(s) & (s > 0)).all(), "scale must be positive and finite")])
        sc, stride = _backend.address(s), (1 if scale.dim() == 1 else 0)
    return x, ld, s, sc, stride


def _binarize_native_cpu(C, x: Tensor, bits: int, scale: Optional[Tensor], threshold_rule: str) -> Tensor:
    """The native C++ kernels on a CPU tensor (same bits as the float64 torch / NumPy path)."""
    x, ld, s, sc, stride = _native_inputs(x, scale)  # s: the scale at address sc, alive through the call
    n, m = x.shape
    out = torch.empty(_binarize_out_shape(x, bits), dtype=torch.uint8)
    A = _backend.address
    ok = C.binary_binarize(A(x) if x.numel() else 0, _NATIVE_DTYPE_CODES[x.dtype], n, m, ld, bits, sc,
                           stride, threshold_rule == "gt", A(out) if out.numel() else 0, "")
    if not ok:
        raise ValueError("x must be finite (found NaN or inf)")
    return out


def _binarize_native_cuda(mod, x: Tensor, bits: int, scale: Optional[Tensor], threshold_rule: str) -> Tensor:
    """The CUDA kernels of fastemb._C_cuda (same bits as the CPU kernels and the reference)."""
    x, ld, s, sc, stride = _native_inputs(x, scale)  # s: the scale at address sc, alive through the call
    n, m = x.shape
    out = torch.empty(_binarize_out_shape(x, bits), dtype=torch.uint8, device=x.device)
    bad = torch.zeros((), dtype=torch.int32, device=x.device)
    A = _backend.address
    with torch.cuda.device(x.device):
        mod.binary_binarize(A(x) if x.numel() else 0, _NATIVE_DTYPE_CODES[x.dtype], n, m, ld, bits, sc,
                            stride, threshold_rule == "gt", A(out) if out.numel() else 0, A(bad),
                            torch.cuda.current_stream(x.device).cuda_stream)
    _checks.require(x.device, [(bad == 0, "x must be finite (found NaN or inf)")])
    return out


@_binarize_op.register_fake
def _(x, bits, scale, threshold_rule="ge"):
    _check_binarize_meta(x, bits, scale, threshold_rule)
    return x.new_empty(_binarize_out_shape(x, bits), dtype=torch.uint8)


# ---- scores and top-k ---------------------------------------------------------------------------

def _cuda_module(name: str):
    mod = _backend.cuda_module()
    if mod is None:
        raise RuntimeError(
            "fastemb was built without its CUDA module (fastemb._C_cuda); rebuild with nvcc on PATH "
            f"(FASTEMB_CUDA=ON) to use CUDA tensors ({_backend._C_cuda_error})")
    if not hasattr(mod, name):
        raise RuntimeError(f"this build of fastemb._C_cuda has no {name} kernel: binary codes on CUDA tensors "
                           "need a newer fastemb build (CPU tensors work)")
    return mod


def _scores_impl(q: Tensor, d: Tensor, dim: int, mode: str) -> Tensor:
    _check_pair(q, d, dim, mode)
    q, d = _backend.native_tensor(q), _backend.native_tensor(d)
    out = torch.empty((q.shape[0], d.shape[0]), dtype=torch.int32, device=q.device)
    if out.numel() == 0:
        return out
    A = _backend.address
    args = (A(q), q.shape[0], A(d), d.shape[0], q.shape[1], q.shape[2], dim, MODE_CODES[mode], A(out))
    if q.device.type == "cuda":
        mod = _cuda_module("binary_scores")
        with torch.cuda.device(q.device):
            mod.binary_scores(*args, torch.cuda.current_stream(q.device).cuda_stream)
        return out
    if q.device.type != "cpu":
        raise ValueError(f"q: unsupported device {q.device} (cpu and cuda are supported)")
    C = _backend.native()
    if C is not None:
        C.binary_scores(*args, "")
        return out
    qn, dn = q.numpy(), d.numpy()
    r = _ref.hamming(qn, dn, dim) if mode == "hamming" else _ref.sdc_scores(qn, dn, dim)
    out.copy_(torch.from_numpy(r))
    return out


@torch.library.custom_op("fastemb::hamming", mutates_args=())
def _hamming_op(q: Tensor, d: Tensor, dim: int) -> Tensor:
    return _scores_impl(q, d, dim, "hamming")


@_hamming_op.register_fake
def _(q, d, dim):
    _check_pair(q, d, dim, "hamming")
    return q.new_empty((q.shape[0], d.shape[0]), dtype=torch.int32)


@torch.library.custom_op("fastemb::sdc_scores", mutates_args=())
def _sdc_scores_op(q: Tensor, d: Tensor, dim: int) -> Tensor:
    return _scores_impl(q, d, dim, "sdc")


@_sdc_scores_op.register_fake
def _(q, d, dim):
    _check_pair(q, d, dim, "sdc")
    return q.new_empty((q.shape[0], d.shape[0]), dtype=torch.int32)


@torch.library.custom_op("fastemb::sdc_topk", mutates_args=())
def _sdc_topk_op(q: Tensor, d: Tensor, k: int, dim: int) -> Tuple[Tensor, Tensor]:
    _check_pair(q, d, dim, "sdc")
    _check_k(k)
    q, d = _backend.native_tensor(q), _backend.native_tensor(d)
    nq, nd = q.shape[0], d.shape[0]
    scores = torch.empty((nq, k), dtype=torch.int32, device=q.device)
    ids = torch.empty((nq, k), dtype=torch.int64, device=q.device)
    if nq == 0:
        return scores, ids
    if nd == 0:  # nothing to rank: every slot is padding
        scores.fill_(_INT32_MIN)
        ids.fill_(-1)
        return scores, ids
    A = _backend.address
    args = (A(q), nq, A(d), nd, q.shape[1], q.shape[2], dim, k, A(scores), A(ids))
    if q.device.type == "cuda":
        mod = _cuda_module("binary_topk")
        with torch.cuda.device(q.device):
            mod.binary_topk(*args, torch.cuda.current_stream(q.device).cuda_stream)
        return scores, ids
    if q.device.type != "cpu":
        raise ValueError(f"q: unsupported device {q.device} (cpu and cuda are supported)")
    C = _backend.native()
    if C is not None:
        C.binary_topk(*args, "")
        return scores, ids
    rs, ri = _ref.sdc_topk(q.numpy(), d.numpy(), k, dim)
    scores.copy_(torch.from_numpy(rs))
    ids.copy_(torch.from_numpy(ri))
    return scores, ids


@_sdc_topk_op.register_fake
def _(q, d, k, dim):
    _check_pair(q, d, dim, "sdc")
    _check_k(k)
    return (q.new_empty((q.shape[0], k), dtype=torch.int32), q.new_empty((q.shape[0], k), dtype=torch.int64))


# ---- public wrappers ----------------------------------------------------------------------------

def _as_codes3(name: str, t: Tensor) -> Tensor:
    """[n, nbytes] 1-bit codes -> [n, 1, nbytes] (a view); anything else is checked by the op."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of uint8 codes, got {type(t).__name__}")
    if t.dtype != torch.uint8:
        raise TypeError(f"{name} must have dtype torch.uint8 (packed bits), got {t.dtype}")
    if t.dim() == 2:
        return t.unsqueeze(1)
    if t.dim() != 3:
        raise ValueError(f"{name} must be [n, bits, nbytes] (or [n, nbytes] for 1 bit), got shape {tuple(t.shape)}")
    return t


def _pair(q: Tensor, d: Tensor, dim: Optional[int]) -> Tuple[Tensor, Tensor, int]:
    q_shape, d_shape = getattr(q, "shape", ()), getattr(d, "shape", ())
    q, d = _as_codes3("q", q), _as_codes3("d", d)
    for what, axis in (("bits", 1), ("nbytes", 2)):  # here, where the shapes as given are known
        if q.shape[axis] != d.shape[axis]:
            raise ValueError(pair_mismatch_message(what, q_shape, d_shape))
    if dim is None:
        dim = 8 * q.shape[2]
    return q, d, dim


def binarize(x: Tensor, bits: int = 1, scale=None, threshold_rule: str = "ge") -> Tensor:
    """Torch version of :func:`fastemb.binarize`: float ``[n, m]`` (any float dtype, any device)
    -> uint8 codes ``[n, bits, ceil(m / 8)]``, bit for bit equal to the NumPy function.

    ``scale``: None (``mean|x|`` per row), a positive number, or a tensor (scalar or ``[n]``) on
    ``x``'s device. ``threshold_rule``: "ge" (bit = ``r >= 0``, default) or "gt" (bit = ``r > 0``:
    plane 0 equals sentence-transformers' ``ubinary`` codes); see :func:`fastemb.binarize`.
    Checking for NaN / inf syncs with the device.
    """
    if not isinstance(x, Tensor):  # the op's schema check would raise RuntimeError
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if scale is not None and not isinstance(scale, Tensor):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number or a torch.Tensor, got {type(scale).__name__}")
        device = x.device if isinstance(x, Tensor) else None
        scale = torch.tensor(float(scale), dtype=torch.float64, device=device)
    _check_threshold_rule(threshold_rule)  # here too: the op's schema would raise RuntimeError for a non-str
    return torch.ops.fastemb.binarize(x, bits, scale, threshold_rule)


def hamming(q: Tensor, d: Tensor, dim: Optional[int] = None) -> Tensor:
    """Torch version of :func:`fastemb.hamming`: int32 ``[nq, nd]`` popcount of ``q XOR d`` over
    every plane (only the first ``dim`` bits of each plane; default ``8 * nbytes``)."""
    q, d, dim = _pair(q, d, dim)
    return torch.ops.fastemb.hamming(q, d, dim)


def sdc_scores(q: Tensor, d: Tensor, dim: Optional[int] = None) -> Tensor:
    """Torch version of :func:`fastemb.sdc_scores`: exact int32 ``[nq, nd]`` SDC scores."""
    q, d, dim = _pair(q, d, dim)
    return torch.ops.fastemb.sdc_scores(q, d, dim)


def sdc_topk(q: Tensor, d: Tensor, k: int, dim: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Torch version of :func:`fastemb.sdc_topk`: ``(scores int32 [nq, k], ids int64 [nq, k])``,
    descending score, ties to the lower id, padded with ``(INT32_MIN, -1)`` when ``k > nd``."""
    _check_k(k)
    q, d, dim = _pair(q, d, dim)
    return torch.ops.fastemb.sdc_topk(q, d, k, dim)
