"""``torch.ops.fastemb.centroid_aggregate`` and ``centroid_aggregate_backward``, and the
centroid triplet loss built on them.

The op returns ``(out, counts, wsum, arg, out_norm)``: the result, and what the backward needs
(``arg`` is empty unless reduce is amax/amin; ``out_norm`` is empty unless normalize has 'post').
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from . import _checks
from .._reference import centroid as _ref
from ..centroid import NORMALIZE_CODES, REDUCE_CODES, canonical_reduce, check_modes

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TORCH_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                      torch.bfloat16: "bfloat16"}


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_meta(x: Tensor, index: Optional[Tensor], offsets: Optional[Tensor], weights: Optional[Tensor],
                num_groups: int, reduce: str, normalize: str, eps: float, leave_one_out: bool) -> None:
    """Dtype / shape / device checks (metadata only: also valid on fake tensors)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {tuple(x.shape)}")
    check_modes(reduce, normalize, eps, leave_one_out, weights is not None)
    if (index is None) == (offsets is None):
        raise ValueError("give exactly one of index (labels) or offsets")
    if num_groups < 0:
        raise ValueError(f"num_groups must be >= 0, got {num_groups}")
    if index is not None:
        if index.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"index must be int32 or int64, got {index.dtype}")
        if index.dim() != 1 or index.shape[0] != x.shape[0]:
            raise ValueError(f"index must have shape ({x.shape[0]},) to match x, got {tuple(index.shape)}")
        if index.device != x.device:
            raise ValueError(f"index is on {index.device} but x is on {x.device}")
    if offsets is not None:
        if offsets.dtype != torch.int64:
            raise TypeError(f"offsets must be int64, got {offsets.dtype}")
        if offsets.dim() != 1 or offsets.shape[0] != num_groups + 1:
            raise ValueError(f"offsets must have shape (num_groups + 1,) = ({num_groups + 1},), got {tuple(offsets.shape)}")
        if offsets.device != x.device:
            raise ValueError(f"offsets is on {offsets.device} but x is on {x.device}")
    if weights is not None:
        if weights.dtype != _acc_dtype(x.dtype):
            raise TypeError(f"weights must be {_acc_dtype(x.dtype)} for x of {x.dtype}, got {weights.dtype}")
        if weights.dim() != 1 or weights.shape[0] != x.shape[0]:
            raise ValueError(f"weights must have shape ({x.shape[0]},) to match x, got {tuple(weights.shape)}")
        if weights.device != x.device:
            raise ValueError(f"weights is on {weights.device} but x is on {x.device}")


def _check_values(x: Tensor, index: Optional[Tensor], offsets: Optional[Tensor], weights: Optional[Tensor],
                  num_groups: int) -> None:
    """Value checks on real tensors (the C++ CPU kernel checks labels itself). On CUDA they run on the device
    without a host sync by default (see :mod:`fastemb.torch._checks`)."""
    checks = []
    if index is not None and index.numel() and (index.device.type != "cpu" or _backend.native() is None):
        lo, hi = torch.aminmax(index)
        checks.append((lo >= 0, lambda: f"index: negative label {int(lo)}"))
        checks.append((hi < num_groups, lambda: f"index: label {int(hi)} is out of range [0, num_groups={num_groups})"))
    if offsets is not None:
        checks.append(((offsets[0] == 0) & (offsets[-1] == x.shape[0]),
                       f"offsets must run from 0 to the number of rows of x ({x.shape[0]})"))
        if num_groups:
            checks.append(((offsets[1:] >= offsets[:-1]).all(), "offsets must be non-decreasing"))
    if weights is not None:
        checks.append((torch.isfinite(weights).all(), "weights must be finite (found NaN or inf)"))
    _checks.require(x.device, checks)


def _out_shapes(x: Tensor, num_groups: int, reduce: str, normalize: str, leave_one_out: bool):
    n, d = x.shape
    rows = n if leave_one_out else num_groups
    arg_shape = (num_groups, d) if reduce in ("amax", "amin") else (0,)
    norm_shape = (rows,) if normalize in ("post", "both") else (0,)
    return (rows, d), arg_shape, norm_shape


def _alloc_outputs(x, num_groups, reduce, normalize, leave_one_out):
    out_shape, arg_shape, norm_shape = _out_shapes(x, num_groups, reduce, normalize, leave_one_out)
    acc = _acc_dtype(x.dtype)
    return (
        x.new_empty(out_shape),
        torch.empty(num_groups, dtype=torch.int64, device=x.device),
        torch.empty(num_groups, dtype=acc, device=x.device),
        torch.empty(arg_shape, dtype=torch.int64, device=x.device),
        torch.empty(norm_shape, dtype=acc, device=x.device),
    )


def _cuda_module():
    mod = _backend.cuda_module()
    if mod is None:
        raise RuntimeError(
            "fastemb was built without its CUDA module (fastemb._C_cuda); rebuild with nvcc on PATH "
            f"(FASTEMB_CUDA=ON) to use CUDA tensors ({_backend._C_cuda_error})")
    return mod


def _to_numpy(t: Optional[Tensor]) -> Optional[np.ndarray]:
    if t is None:
        return None
    if t.dtype == torch.bfloat16:
        t = t.float()  # NumPy has no bfloat16: the fallback computes in float32
    return t.detach().cpu().numpy()


def _native_args(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out):
    A = _backend.address
    return (A(x), _backend.DTYPE_CODES[_TORCH_DTYPE_NAMES[x.dtype]], x.shape[0], x.shape[1],
            A(index), index is not None and index.dtype == torch.int32, A(offsets), num_groups, A(weights),
            REDUCE_CODES[reduce], NORMALIZE_CODES[normalize], float(eps), bool(leave_one_out))


def _opt(t: Tensor) -> Optional[Tensor]:
    """Empty placeholder outputs (arg, out_norm) stand for None."""
    return t if t.numel() or t.dim() > 1 else None


@torch.library.custom_op("fastemb::centroid_aggregate", mutates_args=())
def _centroid_aggregate_op(x: Tensor, index: Optional[Tensor], offsets: Optional[Tensor], weights: Optional[Tensor],
                           num_groups: int, reduce: str, normalize: str, eps: float,
                           leave_one_out: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_meta(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out)
    _check_values(x, index, offsets, weights, num_groups)
    x = _backend.native_tensor(x)
    index = None if index is None else _backend.native_tensor(index)
    offsets = None if offsets is None else _backend.native_tensor(offsets)
    weights = None if weights is None else _backend.native_tensor(weights)
    outs = _alloc_outputs(x, num_groups, reduce, normalize, leave_one_out)
    out, counts, wsum, arg, out_norm = outs
    A = _backend.address
    args = _native_args(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out)
    if x.device.type == "cuda":
        mod = _cuda_module()
        with torch.cuda.device(x.device):
            stream = torch.cuda.current_stream(x.device).cuda_stream
            mod.centroid_forward(*args, A(out), A(counts), A(wsum), A(_opt(arg)), A(_opt(out_norm)),
                                 torch.are_deterministic_algorithms_enabled(), stream)
        return outs
    if x.device.type != "cpu":
        raise ValueError(f"x: unsupported device {x.device} (cpu and cuda are supported)")
    C = _backend.native()
    if C is not None:
        C.centroid_forward(*args, A(out), A(counts), A(wsum), A(_opt(arg)), A(_opt(out_norm)), "")
        return outs
    r_out, r_counts, r_wsum, r_arg, r_norm = _ref.forward(
        _to_numpy(x), _to_numpy(index), _to_numpy(offsets), num_groups, _to_numpy(weights), reduce, normalize, eps,
        leave_one_out)
    out.copy_(torch.from_numpy(np.ascontiguousarray(r_out)))
    counts.copy_(torch.from_numpy(r_counts))
    wsum.copy_(torch.from_numpy(np.asarray(r_wsum)))
    if r_arg is not None:
        arg.copy_(torch.from_numpy(r_arg))
    if r_norm is not None:
        out_norm.copy_(torch.from_numpy(r_norm))
    return outs


@_centroid_aggregate_op.register_fake
def _(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out):
    _check_meta(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out)
    return _alloc_outputs(x, num_groups, reduce, normalize, leave_one_out)


@torch.library.custom_op("fastemb::centroid_aggregate_backward", mutates_args=())
def _centroid_backward_op(grad_out: Tensor, x: Tensor, index: Optional[Tensor], offsets: Optional[Tensor],
                          weights: Optional[Tensor], out: Tensor, counts: Tensor, wsum: Tensor, arg: Tensor,
                          out_norm: Tensor, num_groups: int, reduce: str, normalize: str, eps: float,
                          leave_one_out: bool, need_grad_x: bool, need_grad_w: bool) -> Tuple[Tensor, Tensor]:
    x = _backend.native_tensor(x)
    grad_out = _backend.native_tensor(grad_out)
    # The saved inputs are the caller's tensors, strides included: the kernels read them densely.
    index = None if index is None else _backend.native_tensor(index)
    offsets = None if offsets is None else _backend.native_tensor(offsets)
    weights = None if weights is None else _backend.native_tensor(weights)
    grad_x = torch.empty_like(x) if need_grad_x else x.new_empty((0,))
    acc = _acc_dtype(x.dtype)
    grad_w = torch.empty(x.shape[0], dtype=acc, device=x.device) if need_grad_w else torch.empty(0, dtype=acc, device=x.device)
    A = _backend.address
    args = _native_args(x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out)
    saved = (A(grad_out), A(out), A(counts), A(wsum), A(_opt(arg)), A(_opt(out_norm)))
    grads = (A(grad_x) if need_grad_x else 0, A(grad_w) if need_grad_w else 0)
    if x.device.type == "cuda":
        mod = _cuda_module()
        with torch.cuda.device(x.device):
            stream = torch.cuda.current_stream(x.device).cuda_stream
            mod.centroid_backward(*args, *saved, *grads, torch.are_deterministic_algorithms_enabled(), stream)
        return grad_x, grad_w
    C = _backend.native()
    if C is not None:
        C.centroid_backward(*args, *saved, *grads, "")
        return grad_x, grad_w
    gx, gw = _ref.backward(
        _to_numpy(grad_out), _to_numpy(x), _to_numpy(index), _to_numpy(offsets), num_groups, _to_numpy(weights),
        reduce, normalize, eps, leave_one_out, _to_numpy(out), _to_numpy(counts), _to_numpy(wsum),
        _to_numpy(arg) if reduce in ("amax", "amin") else None,
        _to_numpy(out_norm) if normalize in ("post", "both") else None, need_grad_x, need_grad_w)
    if need_grad_x:
        grad_x.copy_(torch.from_numpy(np.ascontiguousarray(gx)))
    if need_grad_w:
        grad_w.copy_(torch.from_numpy(gw))
    return grad_x, grad_w


@_centroid_backward_op.register_fake
def _(grad_out, x, index, offsets, weights, out, counts, wsum, arg, out_norm, num_groups, reduce, normalize, eps,
      leave_one_out, need_grad_x, need_grad_w):
    acc = _acc_dtype(x.dtype)
    grad_x = torch.empty_like(x) if need_grad_x else x.new_empty((0,))
    grad_w = x.new_empty((x.shape[0],), dtype=acc) if need_grad_w else x.new_empty((0,), dtype=acc)
    return grad_x, grad_w


def _setup_context(ctx, inputs, output):
    x, index, offsets, weights, num_groups, reduce, normalize, eps, leave_one_out = inputs
    out, counts, wsum, arg, out_norm = output
    ctx.save_for_backward(x, index, offsets, weights, out, counts, wsum, arg, out_norm)
    ctx.params = (num_groups, reduce, normalize, eps, leave_one_out)


def _backward(ctx, grad_out, _grad_counts, _grad_wsum, _grad_arg, _grad_out_norm):
    x, index, offsets, weights, out, counts, wsum, arg, out_norm = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
    if not (need_x or need_w):
        return None, None, None, None, None, None, None, None, None
    grad_x, grad_w = torch.ops.fastemb.centroid_aggregate_backward(
        grad_out, x, index, offsets, weights, out, counts, wsum, arg, out_norm, *ctx.params, need_x, need_w)
    return (grad_x if need_x else None), None, None, (grad_w if need_w else None), None, None, None, None, None


_centroid_aggregate_op.register_autograd(_backward, setup_context=_setup_context)


def centroid_aggregate(
    x: Tensor,
    index: Optional[Tensor] = None,
    *,
    offsets: Optional[Tensor] = None,
    num_groups: Optional[int] = None,
    weights: Optional[Tensor] = None,
    reduce: str = "mean",
    normalize: str = "none",
    eps: float = 1e-12,
    leave_one_out: bool = False,
    return_counts: bool = False,
):
    """Torch version of :func:`fastemb.centroid_aggregate` (CPU and CUDA, float16 / bfloat16 /
    float32 / float64), differentiable in ``x`` and ``weights``, usable under
    ``torch.compile(fullgraph=True)``.

    ``num_groups`` is required with ``index``: deriving it would need a device-to-host sync,
    which breaks torch.compile. ``weights`` are cast to the accumulation dtype (float64 for
    float64 ``x``, float32 otherwise). Returns the ``[K, D]`` (or ``[N, D]`` with
    ``leave_one_out``) result, and the int64 counts when ``return_counts``. ``reduce`` also takes
    ``'max'``/``'min'``, the names of ``torch_geometric.utils.scatter``.
    """
    reduce = canonical_reduce(reduce)
    for name, t in (("x", x), ("index", index), ("offsets", offsets)):
        if t is not None and not isinstance(t, Tensor):  # the op's schema check would raise RuntimeError
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if index is not None and num_groups is None:
        raise ValueError("num_groups is required with index (deriving it would need a host sync)")
    if offsets is not None:
        if num_groups is not None and num_groups != offsets.shape[0] - 1:
            raise ValueError(f"num_groups={num_groups} disagrees with len(offsets) - 1 = {offsets.shape[0] - 1}")
        num_groups = offsets.shape[0] - 1
    if num_groups is None:
        raise ValueError("give exactly one of index (labels) or offsets")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if weights is not None and isinstance(x, Tensor) and x.dtype in _FLOAT_DTYPES:
        if not isinstance(weights, Tensor) or not weights.is_floating_point():
            raise TypeError("weights must be a floating-point torch.Tensor")
        weights = weights.to(_acc_dtype(x.dtype))
    out, counts, _, _, _ = torch.ops.fastemb.centroid_aggregate(
        x, index, offsets, weights, num_groups, reduce, normalize, float(eps), bool(leave_one_out))
    return (out, counts) if return_counts else out


def _pairwise_distance(a: Tensor) -> Tensor:
    """sqrt(max(||a||^2 + ||b||^2 - 2 a.b, 1e-12)), as in the reference training code."""
    sq = (a * a).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    return d2.clamp(min=1e-12).sqrt()


def centroid_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.5,
                          num_groups: Optional[int] = None) -> Tensor:
    """Centroid triplet loss (Wieczorek et al. 2021), as the reference training code computes it.

    The batch holds several samples per class. Round ``r`` takes the ``r``-th sample of every
    class (in batch order) as the query and that class's other samples' mean as its centroid
    (the leave-one-out centroid, from :func:`centroid_aggregate`). Over the round's queries and
    centroids together, each point's hardest positive (farthest point of its class) and hardest
    negative (nearest point of another class) give ``max(d_ap - d_an + margin, 0)``; the loss is
    the mean over points, then over rounds. Rounds with fewer than two classes that have a
    centroid are skipped (as in the reference); classes with a single sample have no centroid.

    Args:
        embeddings: ``[N, D]`` float tensor.
        labels: ``[N]`` int tensor of class ids in ``[0, num_groups)``.
        margin: triplet margin (0.5 in the reference code).
        num_groups: number of classes; when omitted, labels are compacted with ``torch.unique``
            (a host sync: pass it under ``torch.compile``).
    """
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or not embeddings.is_floating_point():
        raise TypeError("embeddings must be a 2-D floating-point torch.Tensor")
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int32, torch.int64) or labels.dim() != 1:
        raise TypeError("labels must be a 1-D int32/int64 torch.Tensor")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but embeddings has {embeddings.shape[0]} rows")
    labels = labels.long()
    if num_groups is None:
        _, labels = torch.unique(labels, return_inverse=True)
        num_groups = int(labels.max()) + 1 if labels.numel() else 0
    n = embeddings.shape[0]
    loo, counts = centroid_aggregate(embeddings, labels, num_groups=num_groups, leave_one_out=True,
                                     return_counts=True)
    # rank of each sample within its class, in batch order: the round it is the query of
    order = torch.sort(labels, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(n, device=labels.device) - starts[labels[order]]
    has_centroid = counts[labels] > 1
    points = torch.cat([embeddings, loo])
    point_label = torch.cat([labels, labels])
    point_round = torch.cat([rank, rank])
    point_valid = torch.cat([torch.ones_like(has_centroid), has_centroid])
    # a round counts when at least two classes have a centroid in it
    round_classes = torch.zeros(n + 1, dtype=torch.int64, device=labels.device)
    round_classes.index_add_(0, rank, has_centroid.long())
    round_ok = round_classes[point_round] >= 2
    active = point_valid & round_ok
    dist = _pairwise_distance(points)
    same_round = (point_round[:, None] == point_round[None, :]) & active[:, None] & active[None, :]
    same_label = point_label[:, None] == point_label[None, :]
    pos = same_round & same_label
    neg = same_round & ~same_label
    big = torch.finfo(dist.dtype).max
    d_ap = torch.where(pos, dist, torch.zeros_like(dist)).amax(dim=1)
    d_an = torch.where(neg, dist, torch.full_like(dist, big)).amin(dim=1)
    per_point = torch.relu(d_ap - d_an + margin) * active
    # mean over the points of each round, then over rounds
    round_count = torch.zeros(n + 1, dtype=dist.dtype, device=dist.device).index_add_(0, point_round, active.to(dist.dtype))
    round_sum = torch.zeros(n + 1, dtype=dist.dtype, device=dist.device).index_add_(0, point_round, per_point)
    rounds = round_count > 0
    round_mean = torch.where(rounds, round_sum / round_count.clamp(min=1), torch.zeros_like(round_sum))
    return round_mean.sum() / rounds.sum().clamp(min=1).to(dist.dtype)
