"""fastemb's packed ternary kernel inside Hugging Face transformers' BitNet models.

:func:`patch_bitnet` swaps the BitNet linear modules of a transformers model (``BitLinear`` and
``AutoBitLinear`` from ``transformers.integrations.bitnet``) for :class:`TernaryLinear`, an
inference module that holds the weights packed at 2 bits (:class:`fastemb.TernaryWeight`'s I2
layout) and calls ``torch.ops.fastemb.ternary_linear`` (int8 activations, exact int32 sums).

What transformers' modules compute, and how each is converted (transformers 5.x):

- ``BitLinear`` (``linear_class='bitlinear'``, the packed checkpoints such as
  microsoft/bitnet-b1.58-2B-4T): ``weight`` uint8 ``[n / 4, k]`` (4 codes per byte along the output
  dim) and ``weight_scale = 1 / gamma``; ``y = (x_q W_q^T) / (weight_scale * s) + bias``. Read with
  :meth:`fastemb.TernaryWeight.from_hf_bitnet` (``inverse_scale=True``).
- ``AutoBitLinear`` offline: ``weight`` holds -1 / 0 / +1 in the model's dtype and
  ``weight_scale = gamma`` multiplies the biased output: ``y = (x~ W_q^T + bias) * gamma``, so the
  patched bias is ``bias * gamma``.
- ``AutoBitLinear`` online (quantization-aware training): its float master weights are quantized
  on every call; with ``include_online=True`` they are quantized once, by transformers' own
  ``WeightQuant``, into a frozen inference copy. Otherwise patch_bitnet refuses them (use
  :class:`fastemb.torch.BitLinear` to train).

Activations use ``scale_rule='reciprocal'`` by default: transformers computes the per-token scale
as ``127 / amax`` with torch, which is ``reciprocal(amax) * 127`` (two float32 roundings), so the
int8 codes and scales equal transformers' bit for bit for float32 activations. The outputs agree
to float rounding (fastemb applies ``gamma / s`` to the exact int32 sums; transformers divides
``F.linear``'s result, rounded to the model's dtype, by ``weight_scale * s``). For bfloat16 /
float16 models transformers also rounds the scale to that dtype (its compiled ``activation_quant``
stores the scale in the activations' dtype) while fastemb keeps it in float32: a few codes per row
differ by 1 there, well inside the model's own bfloat16 rounding.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import ternary as _tern
from ._ternary import EPS, ternary_linear, ternary_weight_tensors


class TernaryLinear(nn.Module):
    """``y = x W^T + bias`` with a fixed ternary weight ``W = gamma W_q`` packed at 2 bits, on
    ``torch.ops.fastemb.ternary_linear`` (CPU and CUDA; works under ``torch.compile``).

    An inference module: the packed weight, gamma and bias are buffers (not parameters, not in
    the ``state_dict``: save the model before patching it). The output has the input's dtype
    (computed in float32). Gradients flow to ``x`` (straight-through), not to the weight.

    Args:
        tw: the weight, a :class:`fastemb.TernaryWeight` (``[out_features, in_features]``).
        bias: optional ``[out_features]`` (kept as float32).
        activations: 'int8' (W1.58A8, BitNet) or 'float'.
        eps: floor of ``max|x|`` in the activation quantizer.
        scale_rule: 'divide' or 'reciprocal' (see :func:`fastemb.quantize_activations`).
        norm: an optional module applied to ``x`` first (transformers' ``use_rms_norm``).
        device: where the buffers live (default CPU).
    """

    def __init__(self, tw: "_tern.TernaryWeight", bias: Optional[Tensor] = None, *, activations: str = "int8",
                 eps: float = EPS, scale_rule: str = "divide", norm: Optional[nn.Module] = None, device=None):
        super().__init__()
        if not isinstance(tw, _tern.TernaryWeight):
            raise TypeError(f"tw must be a fastemb.TernaryWeight, got {type(tw).__name__}")
        if activations not in ("int8", "float"):
            raise ValueError(f"activations must be 'int8' or 'float', got {activations!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        _tern._check_scale_rule(scale_rule)
        if norm is not None and not isinstance(norm, nn.Module):
            raise TypeError(f"norm must be a torch.nn.Module or None, got {type(norm).__name__}")
        packed, gamma, k = ternary_weight_tensors(tw, device)
        if bias is not None:
            if not isinstance(bias, Tensor) or not bias.is_floating_point():
                raise TypeError(f"bias must be a floating-point torch.Tensor or None, got "
                                f"{bias.dtype if isinstance(bias, Tensor) else type(bias).__name__}")
            if tuple(bias.shape) != (tw.n,):
                raise ValueError(f"bias must have shape ({tw.n},), got {tuple(bias.shape)}")
            bias = bias.detach().to(device=packed.device, dtype=torch.float32).clone()
        self.in_features = k
        self.out_features = tw.n
        self.activations = activations
        self.eps = float(eps)
        self.scale_rule = scale_rule
        self.norm = norm
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("gamma", gamma, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def _apply(self, fn, recurse=True):
        # dtype casts of the model (model.to(torch.bfloat16), .half()) must not round gamma or the bias:
        # they stay float32 (what the kernel takes) and only follow device moves
        kept = {name: self._buffers[name] for name in ("gamma", "bias") if self._buffers.get(name) is not None}
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after.dtype != torch.float32:
                self._buffers[name] = before.to(device=after.device)
        return self

    def ternary_weight(self) -> "_tern.TernaryWeight":
        """The weight as a :class:`fastemb.TernaryWeight` (NumPy copy)."""
        return _tern.TernaryWeight(self.packed.cpu().numpy(), self.gamma.cpu().numpy(), self.in_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activations={self.activations!r}, scale_rule={self.scale_rule!r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            x = self.norm(x)
        y = ternary_linear(x, self.packed, self.gamma, self.in_features, self.bias, self.activations, self.eps,
                           self.scale_rule)
        return y.to(x.dtype)


# ---- conversion of transformers' modules -----------------------------------------------------------

def _bitnet_classes() -> Tuple[type, type, Any]:
    try:
        from transformers.integrations import bitnet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastemb.torch.patch_bitnet needs Hugging Face transformers (`pip install transformers`)"
                          ) from exc
    return bitnet.BitLinear, bitnet.AutoBitLinear, bitnet


def _host(t: Tensor, name: str, what: str) -> np.ndarray:
    if t.device.type == "meta":
        raise ValueError(f"{name}: {what} is on the meta device (weights not loaded); load the model's weights "
                         "before patching it")
    return t.detach().cpu().numpy()


def _from_bitlinear(name: str, mod: nn.Module) -> Tuple["_tern.TernaryWeight", Optional[Tensor]]:
    """transformers' BitLinear: packed uint8 weight, weight_scale = 1 / gamma (divides)."""
    ws = _host(mod.weight_scale.float(), name, "weight_scale")
    try:
        tw = _tern.TernaryWeight.from_hf_bitnet(_host(mod.weight, name, "weight"), ws,
                                                out_features=mod.out_features, inverse_scale=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read the BitLinear weights: {exc}") from exc
    if tw.k != mod.in_features:
        raise ValueError(f"{name}: weight has {tw.k} columns but in_features is {mod.in_features}")
    return tw, mod.bias


def _from_autobitlinear(name: str, mod: nn.Module, bitnet: Any, include_online: bool
                        ) -> Tuple["_tern.TernaryWeight", Optional[Tensor]]:
    if getattr(mod, "online_quant", False):
        if not include_online:
            raise ValueError(f"{name}: AutoBitLinear with online quantization (quantization-aware training: float "
                             "master weights quantized on every call). Pass include_online=True to freeze a "
                             "quantized inference copy, or train with fastemb.torch.BitLinear")
        with torch.no_grad():
            # transformers' own weight quantizer: W~ = W_q * g with W_q in {-1, 0, 1}, g one value per tensor
            deq = bitnet.WeightQuant.apply(mod.weight.detach())
        w = torch.as_tensor(_host(deq.float(), name, "weight"))
        mags = w.abs()
        g = float(mags.max()) if w.numel() else 0.0
        if not bool(((mags == 0) | (mags == g)).all()):  # pragma: no cover - WeightQuant's contract
            raise ValueError(f"{name}: transformers' WeightQuant did not return one scale per tensor")
        tw = _tern.TernaryWeight.from_ternary(torch.sign(w).numpy(), g)
        return tw, mod.bias
    # offline: the weight holds -1 / 0 / +1 and weight_scale = gamma multiplies the biased output
    wq = _host(mod.weight.float(), name, "weight")
    gamma = _host(mod.weight_scale.float(), name, "weight_scale")
    try:
        tw = _tern.TernaryWeight.from_ternary(wq, gamma)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: AutoBitLinear (offline) weight must hold only -1, 0, +1 ({exc})") from exc
    bias = None
    if mod.bias is not None:
        bias = mod.bias.detach().float() * torch.from_numpy(np.ascontiguousarray(tw.gamma())).to(mod.bias.device)
    return tw, bias


def patch_bitnet(model: nn.Module, *, scale_rule: str = "reciprocal", include_online: bool = False) -> nn.Module:
    """Replaces the BitNet linear modules of a transformers model with :class:`TernaryLinear`
    (fastemb's packed 2-bit kernel, int8 activations), in place, and returns the model.

    Converts ``transformers.integrations.bitnet.BitLinear`` (packed weights) and
    ``AutoBitLinear`` (offline; online ones only with ``include_online=True``) with their bias and
    optional input RMSNorm; other modules (``lm_head``, embeddings, norms) are left as they are.
    The patched model keeps its device and dtype, runs under ``torch.compile``, and is meant for
    inference (no gradient reaches the ternary weights; their buffers are not in ``state_dict``).

    Args:
        model: a ``torch.nn.Module`` holding transformers BitNet linear modules (e.g. a
            ``BitNetForCausalLM`` loaded with its ``quantization_config``); a BitNet linear module
            itself is also accepted (then its replacement is returned).
        scale_rule: the activation scale's formula: 'reciprocal' (default; transformers' codes bit
            for bit) or 'divide' (fastemb's ``127 / amax``).
        include_online: also convert ``AutoBitLinear`` modules in online (QAT) mode, freezing
            their current weights quantized by transformers' ``WeightQuant``; False raises
            ValueError when the model has one.

    Returns:
        ``model`` (the same object, modules replaced), or the replacement when ``model`` is
        itself a BitNet linear module.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
        ValueError: the model has no BitNet linear module and none already patched; a module's
            weights are not loaded (meta device) or not ternary; an online AutoBitLinear without
            ``include_online``.
        ImportError: transformers is not installed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _tern._check_scale_rule(scale_rule)
    if not isinstance(include_online, bool):
        raise TypeError(f"include_online must be a bool, got {type(include_online).__name__}")
    BitLinearHF, AutoBitLinearHF, bitnet = _bitnet_classes()

    targets = [(name, mod) for name, mod in model.named_modules(remove_duplicate=False)
               if isinstance(mod, (BitLinearHF, AutoBitLinearHF))]
    if not targets:
        if any(isinstance(mod, TernaryLinear) for mod in model.modules()):
            return model  # already patched: a no-op
        raise ValueError(f"model ({type(model).__name__}) has no transformers BitNet linear module (BitLinear or "
                         "AutoBitLinear from transformers.integrations.bitnet) to patch. Load the model with its "
                         "BitNet quantization_config (or apply transformers.integrations.replace_with_bitnet_linear)")

    done: Dict[int, TernaryLinear] = {}  # a module shared by several parents is converted once
    for name, mod in targets:
        if id(mod) in done:
            continue
        label = name or type(mod).__name__
        norm = getattr(mod, "rms_norm", None)  # BitNetQuantConfig(use_rms_norm=True); absent in older transformers
        if norm is not None and any(t.device.type == "meta" for t in norm.parameters()):
            raise ValueError(f"{label}: rms_norm is on the meta device (weights not loaded); load the model's "
                             "weights before patching it")
        if isinstance(mod, BitLinearHF):
            tw, bias = _from_bitlinear(label, mod)
        else:
            tw, bias = _from_autobitlinear(label, mod, bitnet, include_online)
        done[id(mod)] = TernaryLinear(tw, bias, eps=EPS, scale_rule=scale_rule, norm=norm, device=mod.weight.device)

    if isinstance(model, (BitLinearHF, AutoBitLinearHF)):
        return done[id(model)]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, done[id(mod)])
    return model
