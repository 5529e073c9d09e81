"""Torch side of the multi-vector family.

* ``torch.ops.fastemb.maxsim(q, q_offsets, d, d_offsets)``: exact MaxSim scores ``[n_queries, n_docs]`` of
  token sets given as flat ``[tokens, dim]`` tensors + int64 offsets (the NumPy API's convention).
  Differentiable in ``q`` and ``d`` (for training late-interaction models): the gradient flows to the
  maximizing document token of every (query token, document) pair (``torch.max``'s subgradient; ties go to
  the first such token). float32 on CPU runs the native kernel (the same bits as :func:`fastemb.maxsim`);
  float64 (gradcheck) and CUDA tensors run a chunked torch formulation (``[query tokens, doc chunk,
  max doc tokens]`` dot products at a time, about 64 MiB). The backward
  (``torch.ops.fastemb.maxsim_backward``) recomputes the argmax the same way.
* ``torch.ops.fastemb.muvera_fde(x, offsets, document, repetitions, k_sim, d_proj, final_dim, fill_empty,
  seed)``: MUVERA FDEs, float32, the same bits as :func:`fastemb.muvera_fde`, on CUDA by the CUDA kernel
  (one host read: the longest set sizes its scratch), or computed on the CPU and moved back when
  ``fastemb._C_cuda`` lacks it. Not differentiable (the bucket assignment is piecewise constant).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import multivector as _mv
from . import _checks

_U64 = 1 << 64
_I64 = 1 << 63
_CHUNK_BYTES = 64 << 20


def _seed_to_i64(seed: int) -> int:
    return seed - _U64 if seed >= _I64 else seed


def _check_tokens(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [tokens, dim], got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: the token dimension must be >= 1, got {x.shape[1]}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: unsupported device {x.device} (cpu and cuda are supported)")


def _check_offsets_meta(name: str, off: Tensor, x: Tensor) -> None:
    if not isinstance(off, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(off).__name__}")
    if off.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {off.dtype}")
    if off.dim() != 1 or off.shape[0] < 1:
        raise ValueError(f"{name} must be 1-D with at least one entry, got shape {tuple(off.shape)}")
    if off.device != x.device:
        raise ValueError(f"{name} must be on {x.device} (the tokens' device), got {off.device}")


def _check_offsets_values(name: str, off: Tensor, rows: int) -> None:
    steps = off[1:] - off[:-1]
    _checks.require(off.device, [
        (off[0] == 0, lambda: f"{name} must start at 0, got {int(off[0])}"),
        ((steps >= 0).all(), f"{name} must be non-decreasing"),
        (off[-1] == rows, lambda: f"{name} must end at the number of tokens ({rows}), got {int(off[-1])}"),
    ])


def _check_finite(name: str, x: Tensor) -> None:
    _checks.require(x.device, [(torch.isfinite(x).all(), f"{name}: tokens must be finite (found NaN or inf)")])


def _check_pair(q, q_offsets, d, d_offsets) -> None:
    _check_tokens("q", q)
    _check_tokens("d", d)
    if d.dtype != q.dtype:
        raise TypeError(f"d must have q's dtype {q.dtype}, got {d.dtype}")
    if d.device != q.device:
        raise ValueError(f"d must be on q's device {q.device}, got {d.device}")
    if d.shape[1] != q.shape[1]:
        raise ValueError(f"d: token dimension {d.shape[1]} does not match q's {q.shape[1]}")
    _check_offsets_meta("q_offsets", q_offsets, q)
    _check_offsets_meta("d_offsets", d_offsets, d)


def _validate(q, q_offsets, d, d_offsets) -> None:
    _check_pair(q, q_offsets, d, d_offsets)
    _check_offsets_values("q_offsets", q_offsets, q.shape[0])
    _check_offsets_values("d_offsets", d_offsets, d.shape[0])
    _check_finite("q", q)
    _check_finite("d", d)


# ---- the chunked torch formulation (float64, CUDA, and the backward's argmax) -------------------------

def _doc_chunks(q_tokens: int, d_offsets: Tensor, dim: int, itemsize: int):
    """Yields (j0, j1, rows [B, L] int64, mask [B, L] bool) for chunks of B documents padded to L tokens,
    B chosen so that the chunk's dot products [q_tokens, B, L], gathered tokens [B, L, dim] and (backward)
    [q_tokens, B, dim] stay within about _CHUNK_BYTES. Padding rows point at row 0 (masked)."""
    lens = (d_offsets[1:] - d_offsets[:-1]).cpu()
    nd = lens.shape[0]
    j0 = 0
    while j0 < nd:
        lmax, j1 = 1, j0
        while j1 < nd:
            cand = max(lmax, int(lens[j1]))
            if j1 > j0 and (j1 - j0 + 1) * (q_tokens * (cand + dim) + cand * dim) * itemsize > _CHUNK_BYTES:
                break
            lmax = cand
            j1 += 1
        start = d_offsets[j0:j1].unsqueeze(1)
        steps = torch.arange(lmax, device=d_offsets.device).unsqueeze(0)
        mask = steps < (d_offsets[j0 + 1:j1 + 1] - d_offsets[j0:j1]).unsqueeze(1)
        rows = torch.where(mask, start + steps, torch.zeros_like(start))
        yield j0, j1, rows, mask
        j0 = j1


def _query_set_of_tokens(q_offsets: Tensor, q_tokens: int) -> Tensor:
    nq = q_offsets.shape[0] - 1
    lens = q_offsets[1:] - q_offsets[:-1]
    return torch.repeat_interleave(torch.arange(nq, device=q_offsets.device), lens, output_size=q_tokens)


def _chunk_max(q: Tensor, d: Tensor, rows: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(max [Tq, B], argmax rows [Tq, B], doc non-empty [B]) of one document chunk."""
    sim = torch.einsum("th,bsh->tbs", q, d[rows])
    sim = sim.masked_fill(~mask.unsqueeze(0), float("-inf"))
    m, a = sim.max(dim=2)
    nonempty = mask.any(dim=1)
    m = torch.where(nonempty.unsqueeze(0), m, torch.zeros_like(m))
    return m, torch.gather(rows.unsqueeze(0).expand(q.shape[0], -1, -1), 2, a.unsqueeze(2)).squeeze(2), nonempty


def _torch_maxsim(q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor) -> Tensor:
    nq, nd = q_offsets.shape[0] - 1, d_offsets.shape[0] - 1
    out = torch.zeros((nq, nd), dtype=q.dtype, device=q.device)
    if nq == 0 or nd == 0 or q.shape[0] == 0:
        return out
    qset = _query_set_of_tokens(q_offsets, q.shape[0])
    for j0, j1, rows, mask in _doc_chunks(q.shape[0], d_offsets, q.shape[1], q.element_size()):
        m, _, _ = _chunk_max(q, d, rows, mask)
        out[:, j0:j1] = torch.zeros((nq, j1 - j0), dtype=q.dtype, device=q.device).index_add_(0, qset, m)
    return out


def _native_maxsim(q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor) -> Tensor:
    """float32 CPU: the native kernel (or the NumPy reference), the bits of fastemb.maxsim."""
    qo, do = q_offsets.numpy(), d_offsets.numpy()
    na = _backend.native_array
    qs = _mv.TokenSets(na(q.numpy()), na(qo[:-1]), na(qo[1:]))
    ds = _mv.TokenSets(na(d.numpy()), na(do[:-1]), na(do[1:]))
    C = _backend.native()
    if C is not None:
        return torch.from_numpy(_mv.native_maxsim(C, qs, ds))
    from .._reference import multivector as _ref
    return torch.from_numpy(_ref.maxsim(qs.x, qs.begin, qs.end, ds.x, ds.begin, ds.end))


def _cuda_module(name: str):
    """fastemb._C_cuda when it has the multi-vector kernel ``name``, else None."""
    mod = _backend.cuda_module()
    return mod if mod is not None and hasattr(mod, name) else None


def _bounds(off: Tensor) -> Tuple[Tensor, Tensor]:
    return _backend.native_tensor(off[:-1]), _backend.native_tensor(off[1:])


def _cuda_maxsim(mod, q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor) -> Tensor:
    """float32 CUDA: the CUDA kernel (the CPU kernels' bits)."""
    out = torch.empty((q_offsets.shape[0] - 1, d_offsets.shape[0] - 1), dtype=torch.float32, device=q.device)
    if out.numel():
        (qb, qe), (db, de) = _bounds(q_offsets), _bounds(d_offsets)
        A = _backend.address
        with torch.cuda.device(q.device):
            mod.multivector_maxsim(A(q), q.shape[0], A(qb), A(qe), out.shape[0], A(d), d.shape[0], A(db), A(de),
                                   out.shape[1], q.shape[1], A(out), torch.cuda.current_stream(q.device).cuda_stream)
    return out


@torch.library.custom_op("fastemb::maxsim", mutates_args=())
def _maxsim_op(q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor) -> Tensor:
    _validate(q, q_offsets, d, d_offsets)
    q, d = _backend.native_tensor(q), _backend.native_tensor(d)
    q_offsets, d_offsets = _backend.native_tensor(q_offsets), _backend.native_tensor(d_offsets)
    if q.dtype == torch.float32:
        if q.device.type == "cpu":
            return _native_maxsim(q, q_offsets, d, d_offsets)
        mod = _cuda_module("multivector_maxsim")
        if mod is not None:
            return _cuda_maxsim(mod, q, q_offsets, d, d_offsets)
    return _torch_maxsim(q, q_offsets, d, d_offsets)


@_maxsim_op.register_fake
def _(q, q_offsets, d, d_offsets):
    _check_pair(q, q_offsets, d, d_offsets)
    return q.new_empty((q_offsets.shape[0] - 1, d_offsets.shape[0] - 1))


@torch.library.custom_op("fastemb::maxsim_backward", mutates_args=())
def _maxsim_backward_op(grad: Tensor, q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor
                        ) -> Tuple[Tensor, Tensor]:
    q, d, grad = _backend.native_tensor(q), _backend.native_tensor(d), _backend.native_tensor(grad)
    grad_q, grad_d = torch.zeros_like(q), torch.zeros_like(d)
    nq, nd = q_offsets.shape[0] - 1, d_offsets.shape[0] - 1
    if nq == 0 or nd == 0 or q.shape[0] == 0:
        return grad_q, grad_d
    qset = _query_set_of_tokens(q_offsets, q.shape[0])
    dim = q.shape[1]
    for j0, j1, rows, mask in _doc_chunks(q.shape[0], d_offsets, dim, q.element_size()):
        _, arg, nonempty = _chunk_max(q, d, rows, mask)
        w = grad[:, j0:j1].to(q.dtype)[qset] * nonempty.unsqueeze(0)  # [Tq, B]: d score / d <q_t, d_arg>
        grad_q += torch.einsum("tb,tbh->th", w, d[arg])
        grad_d.index_add_(0, arg.reshape(-1), (w.unsqueeze(2) * q.unsqueeze(1)).reshape(-1, dim))
    return grad_q, grad_d


@_maxsim_backward_op.register_fake
def _(grad, q, q_offsets, d, d_offsets):
    return torch.empty_like(q), torch.empty_like(d)


def _setup_context(ctx, inputs, output):
    q, q_offsets, d, d_offsets = inputs
    ctx.save_for_backward(q, q_offsets, d, d_offsets)


def _backward(ctx, grad):
    q, q_offsets, d, d_offsets = ctx.saved_tensors
    need_q, need_d = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    if not (need_q or need_d):
        return None, None, None, None
    grad_q, grad_d = torch.ops.fastemb.maxsim_backward(grad, q, q_offsets, d, d_offsets)
    return (grad_q if need_q else None), None, (grad_d if need_d else None), None


_maxsim_op.register_autograd(_backward, setup_context=_setup_context)


def maxsim(q: Tensor, q_offsets: Tensor, d: Tensor, d_offsets: Tensor) -> Tensor:
    """Exact MaxSim of every query set against every document set (see :func:`fastemb.maxsim`), as a
    differentiable torch op.

    Args:
        q: ``[query_tokens, dim]`` float32 / float64 tensor (CPU or CUDA).
        q_offsets: int64 ``[n_queries + 1]`` on q's device, non-decreasing from 0 to ``query_tokens``.
        d: ``[doc_tokens, dim]``, q's dtype and device.
        d_offsets: int64 ``[n_docs + 1]``.

    Returns:
        ``[n_queries, n_docs]`` in q's dtype; empty sets score 0. Gradients reach ``q`` and ``d``.
    """
    return torch.ops.fastemb.maxsim(q, q_offsets, d, d_offsets)


# ---- MUVERA ----------------------------------------------------------------------------------------

@torch.library.custom_op("fastemb::muvera_fde", mutates_args=())
def _muvera_fde_op(x: Tensor, offsets: Tensor, document: bool, repetitions: int, k_sim: int, d_proj: int,
                   final_dim: int, fill_empty: bool, seed: int) -> Tensor:
    _check_tokens("x", x)
    _check_offsets_meta("offsets", offsets, x)
    if x.dtype != torch.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    kind = "document" if document else "query"
    seed_u = seed % _U64
    mod = _cuda_module("multivector_fde") if x.device.type == "cuda" else None
    if mod is not None:
        spec = _mv.check_fde_args(kind, repetitions, k_sim, d_proj, final_dim, bool(fill_empty) and document, seed_u,
                                  x.shape[1])
        _check_offsets_values("offsets", offsets, x.shape[0])
        _check_finite("x", x)
        x, offsets = _backend.native_tensor(x), _backend.native_tensor(offsets)
        n = offsets.shape[0] - 1
        out = torch.empty((n, _mv.fde_dim(x.shape[1], spec.repetitions, spec.k_sim, spec.d_proj, spec.final_dim)),
                          dtype=torch.float32, device=x.device)
        if n:
            max_tokens = int((offsets[1:] - offsets[:-1]).max())  # one host read: the kernels' scratch size
            b, e = _bounds(offsets)
            A = _backend.address
            with torch.cuda.device(x.device):
                mod.multivector_fde(A(x), x.shape[0], A(b), A(e), n, x.shape[1], spec.repetitions, spec.k_sim,
                                    spec.d_proj, spec.final_dim, spec.document, spec.fill_empty, spec.seed, A(out),
                                    torch.cuda.current_stream(x.device).cuda_stream, max_tokens=max_tokens)
        return out
    # CPU, or CUDA without the CUDA module: computed on the CPU (same bits), moved back
    xs = _backend.native_tensor(x.detach()).cpu().numpy()
    out = _mv.muvera_fde(xs, offsets.cpu().numpy(), kind, repetitions=repetitions, k_sim=k_sim, d_proj=d_proj,
                         final_dim=final_dim, fill_empty=bool(fill_empty) and document, seed=seed_u)
    return torch.from_numpy(out).to(x.device)


@_muvera_fde_op.register_fake
def _(x, offsets, document, repetitions, k_sim, d_proj, final_dim, fill_empty, seed):
    _check_tokens("x", x)
    _check_offsets_meta("offsets", offsets, x)
    return x.new_empty((offsets.shape[0] - 1, _mv.fde_dim(x.shape[1], repetitions, k_sim, d_proj, final_dim)))


def muvera_fde(x: Tensor, offsets: Tensor, kind: str, *, repetitions: int = 20, k_sim: int = 5, d_proj: int = 16,
               final_dim: int = 0, fill_empty: bool = True, seed: int = 0) -> Tensor:
    """MUVERA FDEs of token sets (see :func:`fastemb.muvera_fde`) as a torch op (``torch.compile``-able; not
    differentiable). ``x``: float32 ``[tokens, dim]``; ``offsets``: int64 ``[n_sets + 1]`` on x's device.
    Returns float32 ``[n_sets, fde_dim]`` on x's device, the same bits as the NumPy API."""
    spec = _mv.check_fde_args(kind, repetitions, k_sim, d_proj, final_dim, fill_empty, seed,
                              x.shape[1] if isinstance(x, Tensor) and x.dim() == 2 else 1)
    return torch.ops.fastemb.muvera_fde(x, offsets, spec.document, spec.repetitions, spec.k_sim, spec.d_proj,
                                        spec.final_dim, spec.fill_empty, _seed_to_i64(spec.seed))
