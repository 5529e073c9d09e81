"""``torch.ops.fastemb.ternary_linear`` (packed ternary weights x activations) and
:class:`BitLinear`, a drop-in ``nn.Linear`` for BitNet b1.58 training and inference.

- ``ternary_linear(x, packed, scale, k, bias, activations, eps, scale_rule)`` takes the I2-packed
  weights of a :class:`fastemb.TernaryWeight` as tensors and returns float32 ``[m, n]``. CPU tensors run the
  native kernels (``fastemb._C``), CUDA tensors the ``fastemb._C_cuda`` kernels (data pointers +
  the current stream). Where a build lacks those kernels the op computes the same rules with the
  NumPy reference (CPU) or in torch on the device (CUDA); the integer path gives the same bits. It has a fake kernel, so it
  runs under ``torch.compile(fullgraph=True)``. Its backward is BitNet's straight-through estimator
  for x and bias (``grad_x = grad @ (gamma W_q)``); the packed weights and gamma get no gradient
  (inference weights: train with BitLinear in ``train()`` mode).
- :class:`BitLinear` trains in pure torch with straight-through fake quantization, on any
  device; in ``eval()`` it packs its weights once and calls the op.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _backend
from . import _checks
from .. import ternary as _tern
from .._reference import ternary as _ref

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TORCH_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                      torch.bfloat16: "bfloat16"}
EPS = _ref.EPS


# ---- validation (metadata only: valid on fake tensors too) -------------------------------------

def _check_meta(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor], activations: str,
                eps: float, scale_rule: str = "divide", format: str = "i2") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [m, k], got shape {tuple(x.shape)}")
    if isinstance(k, bool) or not isinstance(k, (int, torch.SymInt)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if x.shape[1] != k:
        raise ValueError(f"x has {x.shape[1]} features (last dim) but the weights expect k={k}")
    _tern._check_format(format)
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 torch.Tensor (packed codes), got "
                        f"{packed.dtype if isinstance(packed, Tensor) else type(packed).__name__}")
    rb = _ref.row_bytes(format, k)
    if packed.dim() != 2 or packed.shape[1] != rb:
        raise ValueError(f"packed must have shape (n, {rb}) for k={k} in format {format!r}, got {tuple(packed.shape)}")
    n = packed.shape[0]
    if not isinstance(scale, Tensor) or scale.dtype != torch.float32:
        raise TypeError(f"scale must be a float32 torch.Tensor (gamma), got "
                        f"{scale.dtype if isinstance(scale, Tensor) else type(scale).__name__}")
    if scale.dim() != 1 or scale.shape[0] not in (1, n):
        raise ValueError(f"scale must have shape (1,) or ({n},), got {tuple(scale.shape)}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"bias must be a floating-point torch.Tensor or None, got "
                            f"{bias.dtype if isinstance(bias, Tensor) else type(bias).__name__}")
        if bias.dim() != 1 or bias.shape[0] != n:
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    for name, t in (("packed", packed), ("scale", scale), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if activations not in ("int8", "float"):
        raise ValueError(f"activations must be 'int8' or 'float', got {activations!r}")
    if activations == "int8" and k > _tern.MAX_K_INT8:
        raise ValueError(f"k={k} is too large for the int8 path (int32 sums: k <= {_tern.MAX_K_INT8}); "
                         "use activations='float'")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    _tern._check_scale_rule(scale_rule)


# ---- the same rules in torch (fallback on any device; bit-exact on the integer path) -----------

_SHIFTS = (0, 2, 4, 6)


def unpack_torch(packed: Tensor, k: int, format: str = "i2") -> Tensor:
    """Packed uint8 (``[n, kp / 4]`` for 'i2', ``[n, kp / 5]`` for 't5') -> int8 ``[n, k]`` of
    -1 / 0 / +1, in torch (any device)."""
    if format == "t5":
        return _unpack_t5_torch(packed, k)
    n = packed.shape[0]
    kp = packed.shape[1] * 4
    p = packed.reshape(n, kp // _ref.BLOCK, 1, 64)
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device).reshape(1, 1, 4, 1)
    codes = torch.bitwise_and(torch.bitwise_right_shift(p, shifts), 3)
    return (codes.reshape(n, kp).to(torch.int8) - 1)[:, :k]


def _unpack_t5_torch(packed: Tensor, k: int) -> Tensor:
    n, nbytes = packed.shape
    q = packed.reshape(n, nbytes // 64, 1, 64).to(torch.int32)
    p3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32, device=packed.device).reshape(1, 1, 5, 1)
    codes = ((torch.bitwise_and(q * p3, 0xFF) * 3) >> 8).reshape(n, nbytes * 5)  # [n, block, t, j]
    return (codes.to(torch.int8) - 1)[:, :k]


def quantize_activations_torch(x: Tensor, eps: float = EPS, scale_rule: str = "divide") -> Tuple[Tensor, Tensor]:
    """Per-row absmax int8 (BitNet), the kernels' float32 rules in torch: ``(x_q int8, s float32)``;
    ``scale_rule`` as :func:`fastemb.quantize_activations`."""
    x32 = x.to(torch.float32)
    if x32.shape[1]:
        amax = x32.abs().amax(dim=1)
    else:
        amax = torch.zeros(x32.shape[0], dtype=torch.float32, device=x.device)
    a = amax.clamp_min(eps)
    if scale_rule == "reciprocal":
        s = torch.reciprocal(a) * 127.0  # two float32 roundings, as torch's `127 / a`
    else:
        s = torch.full_like(amax, 127.0) / a
    xq = torch.clamp(torch.round(x32 * s[:, None]), -128, 127).to(torch.int8)
    return xq, s


def _linear_torch(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor], activations: str,
                  eps: float, scale_rule: str = "divide", format: str = "i2") -> Tensor:
    wq = unpack_torch(packed, k, format).to(torch.float64)
    if activations == "int8":
        xq, s = quantize_activations_torch(x, eps, scale_rule)
        acc = (xq.to(torch.float64) @ wq.T).to(torch.int32)  # exact: |acc| <= 128 k < 2^53
        out = acc.to(torch.float32) * (scale.reshape(1, -1) / s.reshape(-1, 1))
        if bias is not None:
            out = out + bias.to(torch.float32).reshape(1, -1)
        return out
    out = (x.to(torch.float32).to(torch.float64) @ wq.T) * scale.to(torch.float64).reshape(1, -1)
    if bias is not None:
        out = out + bias.to(torch.float32).to(torch.float64).reshape(1, -1)
    return out.to(torch.float32)


def _linear_numpy(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor], activations: str,
                  eps: float, scale_rule: str = "divide", format: str = "i2") -> Tensor:
    """CPU fallback through the NumPy reference (faster than torch's uint8 ops on CPU); bf16 and
    float16 x convert to float32 exactly, as the kernels do."""
    x32 = x.detach().to(torch.float32).numpy()
    p, g = packed.numpy(), scale.detach().numpy()
    b = None if bias is None else bias.detach().to(torch.float32).numpy()
    if activations == "int8":
        xq, s = _ref.quantize_activations(x32, eps, scale_rule=scale_rule)
        out, _ = _ref.matmul_int8(xq, s, p, k, g, b, format)
    else:
        out = _ref.matmul_float(x32, p, k, g, b, format)
    return torch.from_numpy(np.ascontiguousarray(out))


# ---- the op ----------------------------------------------------------------------------------

def _kernel_args(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor], activations: str,
                 eps: float, scale_rule: str = "divide", format: str = "i2"):
    """Allocates the buffers of the native kernels and returns (calls, out): calls are
    (name, args, kwargs) tuples to run with the module's last positional argument (isa or stream) appended."""
    A = _backend.address
    m, n = x.shape[0], packed.shape[0]
    kp = _ref.padded_k_fmt(format, k)
    fmt = {"fmt": _tern._FORMAT_CODES[format]} if format != "i2" else {}  # CUDA's bindings take no fmt
    per_row = scale.shape[0] != 1
    out = torch.empty((m, n), dtype=torch.float32, device=x.device)
    b = None if bias is None else _as_float32(bias)
    keep = [b]
    if activations == "int8":
        xq = torch.empty((m, kp), dtype=torch.int8, device=x.device)
        s = torch.empty(m, dtype=torch.float32, device=x.device)
        keep += [xq, s]
        calls = [("ternary_quantize_activations",
                  (A(x), _backend.DTYPE_CODES[_TORCH_DTYPE_NAMES[x.dtype]], m, k, kp, float(eps), A(xq), A(s)),
                  {"scale_rule": _tern._SCALE_RULE_CODES[scale_rule]}),
                 ("ternary_matmul_int8",
                  (A(xq), A(s), m, A(packed), n, k, kp, A(scale), per_row, A(b), A(out), 0), fmt)]
    else:
        x32 = _as_float32(x)
        keep.append(x32)
        calls = [("ternary_matmul_float", (A(x32), m, A(packed), n, k, kp, A(scale), per_row, A(b), A(out)), fmt)]
    return calls, out, keep


def _all_finite(x: Tensor) -> bool:
    """Finiteness of a contiguous CPU x (CUDA uses ``_checks.require``: no host sync), through NumPy
    (one thread): a parallel torch op just before our kernels leaves torch's OpenMP threads spin-waiting on the cores our thread pool
    needs (measured: 32 x 5632 x 2048 int8 layer 4 ms -> 9-30 ms on 2 cores)."""
    if x.dtype == torch.bfloat16:
        bits = x.view(torch.int16).numpy()
        return not np.any((bits & 0x7F80) == 0x7F80)  # exponent all ones: inf or NaN
    return bool(np.isfinite(x.numpy()).all())


def _as_float32(x: Tensor) -> Tensor:
    """float32 contiguous copy of x (NumPy on CPU for float16 / float64: see _all_finite)."""
    if x.dtype == torch.float32:
        return _backend.native_tensor(x)
    if x.device.type == "cpu" and x.dtype != torch.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return _backend.native_tensor(x.to(torch.float32))


@torch.library.custom_op("fastemb::ternary_linear", mutates_args=())
def _ternary_linear_op(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor], activations: str,
                       eps: float, scale_rule: str = "divide", format: str = "i2") -> Tensor:
    _check_meta(x, packed, scale, k, bias, activations, eps, scale_rule, format)
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"x: unsupported device {x.device} (cpu and cuda are supported)")
    if format == "t5" and x.device.type == "cuda":
        raise NotImplementedError("format 't5' (1.6-bit) has no CUDA kernel yet: convert the weight with "
                                  "TernaryWeight.to_format('i2') for CUDA tensors")
    x, packed, scale = _backend.native_tensor(x), _backend.native_tensor(packed), _backend.native_tensor(scale)
    if x.numel():
        if x.device.type == "cuda":
            _checks.require(x.device, [(torch.isfinite(x).all(), "x must be finite (found NaN or inf)")])
        elif not _all_finite(x):
            raise ValueError("x must be finite (found NaN or inf)")
    m, n = x.shape[0], packed.shape[0]
    if m == 0 or n == 0 or k == 0:
        out = torch.zeros((m, n), dtype=torch.float32, device=x.device)
        return out if bias is None else out + bias.to(torch.float32)
    mod = _tern.cuda_kernels() if x.device.type == "cuda" else _tern.native_kernels()
    if mod is None and x.device.type == "cuda":
        return _linear_torch(x, packed, scale, k, bias, activations, eps, scale_rule, format)
    if mod is None:
        return _linear_numpy(x, packed, scale, k, bias, activations, eps, scale_rule, format)
    calls, out, keep = _kernel_args(x, packed, scale, k, bias, activations, eps, scale_rule, format)
    if x.device.type == "cuda":
        with torch.cuda.device(x.device):
            stream = torch.cuda.current_stream(x.device).cuda_stream
            for name, args, kwargs in calls:
                getattr(mod, name)(*args, stream, **kwargs)
    else:
        for name, args, kwargs in calls:
            getattr(mod, name)(*args, "", **kwargs)
    del keep  # the buffers lived until the kernels returned (CUDA: the caching allocator orders reuse on the stream)
    return out


@_ternary_linear_op.register_fake
def _(x, packed, scale, k, bias, activations, eps, scale_rule="divide", format="i2"):
    _check_meta(x, packed, scale, k, bias, activations, eps, scale_rule, format)
    return x.new_empty((x.shape[0], packed.shape[0]), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, packed, scale, k, bias, activations, eps = inputs[:7]
    if isinstance(scale, Tensor) and scale.requires_grad:
        raise ValueError("scale: ternary_linear is not differentiable in gamma (pass scale.detach())")
    ctx.save_for_backward(packed, scale)
    ctx.k = k
    ctx.format = inputs[8] if len(inputs) > 8 else "i2"
    ctx.x_dtype = x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    packed, scale = ctx.saved_tensors
    grad_x = grad_b = None
    if ctx.needs_input_grad[0]:
        w = unpack_torch(packed, ctx.k, ctx.format).to(torch.float32) * scale.reshape(-1, 1)
        grad_x = (grad.to(torch.float32) @ w).to(ctx.x_dtype)
    if ctx.needs_input_grad[4]:
        grad_b = grad.sum(dim=0).to(ctx.bias_dtype)
    return grad_x, None, None, None, grad_b, None, None, None, None


# Backward: the straight-through estimator of BitNet (the gradient of x W^T + b with the
# dequantized weight W = gamma W_q): exact for activations='float', identity through the
# activation quantizer for 'int8'. packed and scale get no gradient (to train the weights, use
# BitLinear in train() mode).
_ternary_linear_op.register_autograd(_backward, setup_context=_setup_context)


def ternary_linear(x: Tensor, packed: Tensor, scale: Tensor, k: int, bias: Optional[Tensor] = None,
                   activations: str = "int8", eps: float = EPS, scale_rule: str = "divide",
                   format: str = "i2") -> Tensor:
    """``y = x W^T + bias`` with packed ternary weights (see :class:`fastemb.TernaryWeight`).

    Args:
        x: ``[..., k]`` float16 / bfloat16 / float32 / float64 (CPU or CUDA), finite.
        packed: uint8 (``TernaryWeight.packed`` as a tensor: ``[n, kp / 4]`` for 'i2',
            ``[n, kp / 5]`` for 't5'), on x's device.
        scale: float32 gamma, ``[1]`` or ``[n]``. k: input features.
        bias: optional ``[n]``; activations: 'int8' (BitNet W1.58A8) or 'float'.
        scale_rule: the activation scale's formula on the int8 path, 'divide' (``127 / amax``,
            default) or 'reciprocal' (``(1 / amax) * 127``: transformers' BitNet bit for bit on
            float32 x); see :func:`fastemb.quantize_activations`.
        format: ``packed``'s layout, 'i2' (default) or 't5' (``TernaryWeight.format``; CPU only
            for now: CUDA tensors raise NotImplementedError).

    Returns:
        float32 ``[..., n]``. Differentiable in x (straight-through through the activation
        quantizer) and bias; not in packed / scale.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (features last)")
    for name, t in (("packed", packed), ("scale", scale), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    lead = x.shape[:-1]
    # reshape(-1, 0) is ambiguous for 0 features: give the row count explicitly.
    rows = 1
    for size in lead:
        rows *= size
    y = torch.ops.fastemb.ternary_linear(x.reshape(rows, x.shape[-1]), packed, scale, k, bias, activations, eps,
                                         scale_rule, format)
    return y.reshape(*lead, packed.shape[0])


def ternary_weight_tensors(tw: "_tern.TernaryWeight", device=None, keep_format: bool = False
                           ) -> Tuple[Tensor, Tensor, int]:
    """``(packed, scale, k)`` of a :class:`fastemb.TernaryWeight` as tensors on ``device``. The
    packed tensor is in the 'i2' layout (a 't5' weight is converted) unless ``keep_format``: then
    it is ``tw.packed`` as is, and callers pass ``format=tw.format`` to :func:`ternary_linear`."""
    if not isinstance(tw, _tern.TernaryWeight):
        raise TypeError(f"tw must be a fastemb.TernaryWeight, got {type(tw).__name__}")
    if not keep_format:
        tw = tw.to_format("i2")
    return torch.from_numpy(tw.packed).to(device), torch.from_numpy(tw.scale).to(device), tw.k


# ---- fake quantization (training) --------------------------------------------------------------

def weight_gamma(w: Tensor, scale: str) -> Tensor:
    """gamma of ``w`` as :func:`fastemb.quantize_ternary` computes it (float32 scalar tensor):
    absmean averages |w| in float64, absmedian is NumPy's median (mean of the two middle values)."""
    a = w.detach().to(torch.float32).abs().reshape(-1)
    if a.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=w.device)
    if scale == "absmean":
        return a.to(torch.float64).mean().to(torch.float32)
    if scale == "absmedian":
        srt = torch.sort(a).values
        n = srt.numel()
        return (srt[(n - 1) // 2] + srt[n // 2]) / 2
    raise ValueError(f"scale must be 'absmean' or 'absmedian', got {scale!r}")


def fake_quantize_weight(w: Tensor, scale: str = "absmean", eps: float = EPS) -> Tensor:
    """``gamma * clamp(round(w / max(gamma, eps)), -1, 1)`` in float32, cast to ``w``'s dtype
    (no gradient: wrap as ``w + (q - w).detach()`` for the straight-through estimator)."""
    g = weight_gamma(w, scale)
    wq = torch.clamp(torch.round(w.detach().to(torch.float32) / g.clamp_min(eps)), -1, 1)
    return (wq * g).to(w.dtype)


def fake_quantize_activations(x: Tensor, eps: float = EPS, scale_rule: str = "divide") -> Tensor:
    """``x_q / s`` with BitNet's per-row absmax int8 rules (float32), cast to ``x``'s dtype, over
    the last dim (no gradient)."""
    x2 = x.detach().reshape(-1, x.shape[-1]) if x.dim() else x.detach().reshape(1, 1)
    xq, s = quantize_activations_torch(x2, eps, scale_rule)
    return (xq.to(torch.float32) / s[:, None]).to(x.dtype).reshape(x.shape)


# ---- BitLinear ---------------------------------------------------------------------------------

class BitLinear(nn.Linear):
    """BitNet b1.58 linear layer, a drop-in ``nn.Linear`` (same parameters and state_dict).

    - ``train()`` mode: straight-through fake quantization in pure torch, any device:
      ``w~ = w + (Q(w) - w).detach()`` with ``Q(w) = gamma clamp(round(w / max(gamma, eps)), -1, 1)``
      (gamma = mean|w| or median|w| over the tensor), ``x~ = x + (Q8(x) - x).detach()`` (per-token
      absmax int8), ``y = x~ w~^T + b``. Gradients pass the quantizers unchanged (STE).
    - ``eval()`` mode: the weights are quantized and packed once (on ``eval()``; repacked when the
      weight tensor changes, e.g. after ``load_state_dict`` or an in-place update) and
      ``torch.ops.fastemb.ternary_linear`` computes ``float32(x_q W_q^T) gamma / s + b`` exactly
      in int32, then casts to x's dtype. Under ``torch.compile`` the cache is not re-checked:
      call ``eval()`` (or ``repack()``) after changing weights.

    The float master weight is the only state; the packed cache is not saved. No input norm is
    applied (add the RMSNorm of BitNet's BitLinear in front when the model wants it).

    Args:
        scale: 'absmean' (BitNet b1.58) or 'absmedian' (b1.58 Reloaded).
        activations: 'int8' (W1.58A8, default) or 'float' (activations are not quantized).
        eps: floor of gamma and of max|x|.
        scale_rule: the activation scale's formula, 'divide' (``127 / amax``) or 'reciprocal'
            (``(1 / amax) * 127``, as transformers' BitNet); see :func:`fastemb.quantize_activations`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, scale: str = "absmean",
                 device=None, dtype=None, *, activations: str = "int8", eps: float = EPS,
                 scale_rule: str = "divide"):
        if scale not in ("absmean", "absmedian"):
            raise ValueError(f"scale must be 'absmean' or 'absmedian', got {scale!r}")
        if activations not in ("int8", "float"):
            raise ValueError(f"activations must be 'int8' or 'float', got {activations!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        _tern._check_scale_rule(scale_rule)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scale = scale
        self.activations = activations
        self.eps = float(eps)
        self.scale_rule = scale_rule
        self.register_buffer("_packed", None, persistent=False)
        self.register_buffer("_gamma", None, persistent=False)
        self._packed_key = None
        self.register_load_state_dict_post_hook(BitLinear._after_load)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale: str = "absmean", *, activations: str = "int8",
                    eps: float = EPS, scale_rule: str = "divide") -> "BitLinear":
        """A BitLinear with a copy of ``linear``'s weight and bias (same device, dtype and mode)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, scale=scale,
                    device=linear.weight.device, dtype=linear.weight.dtype, activations=activations, eps=eps,
                    scale_rule=scale_rule)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def extra_repr(self) -> str:
        rule = "" if self.scale_rule == "divide" else f", scale_rule={self.scale_rule!r}"
        return f"{super().extra_repr()}, scale={self.scale!r}, activations={self.activations!r}{rule}"

    # -- packing cache
    def _weight_key(self):
        w = self.weight
        return (id(w), w.data_ptr(), w._version, w.dtype, w.device)

    def to_ternary_weight(self) -> "_tern.TernaryWeight":
        """The quantized weight as a :class:`fastemb.TernaryWeight` (NumPy, per-tensor gamma)."""
        w = self.weight.detach().to(torch.float32).cpu().numpy()
        return _tern.quantize_ternary(w, scale=self.scale, eps=self.eps)

    def repack(self) -> None:
        """Quantizes and packs the current weight (eval() does this; needed only after changing
        the weight of a compiled eval model)."""
        if self.weight.device.type == "meta":
            self._packed = self._gamma = None
            self._packed_key = None
            return
        tw = self.to_ternary_weight()
        dev = self.weight.device
        self._packed = torch.from_numpy(tw.packed).to(dev)
        self._gamma = torch.from_numpy(tw.scale).to(dev)
        self._packed_key = self._weight_key()

    def train(self, mode: bool = True) -> "BitLinear":
        super().train(mode)
        if mode:
            self._packed = self._gamma = None
            self._packed_key = None
        else:
            self.repack()
        return self

    @staticmethod
    def _after_load(module: "BitLinear", incompatible_keys) -> None:
        if not module.training:
            module.repack()

    # -- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            w = self.weight
            w_t = w + (fake_quantize_weight(w, self.scale, self.eps) - w).detach()
            if self.activations == "int8":
                x = x + (fake_quantize_activations(x, self.eps, self.scale_rule) - x).detach()
            return F.linear(x, w_t, self.bias)
        if not torch.compiler.is_compiling():
            if self._packed is None or self._packed_key != self._weight_key():
                self.repack()
        if self._packed is None:
            raise RuntimeError("BitLinear: no packed weights; call .eval() before torch.compile")
        y = ternary_linear(x, self._packed, self._gamma.to(torch.float32), self.in_features, self.bias,
                           self.activations, self.eps, self.scale_rule)
        return y.to(x.dtype)
