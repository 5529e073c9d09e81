"""Ternary (1.58-bit) weights and matmul: ``quantize_ternary`` -> :class:`TernaryWeight`,
``quantize_activations`` and ``ternary_matmul``.

Rules (BitNet b1.58, shared/specs/ternary.md), the same in every backend:

- weights: ``gamma = mean|W|`` ('absmean') or ``median|W|`` ('absmedian', b1.58 Reloaded), per
  tensor or per output row; ``W_q = clamp(round(W / max(gamma, eps)), -1, 1)``, round half to even;
- activations: per row ``s = 127 / max(max|x|, eps)``, ``x_q = clamp(round(x s), -128, 127)``
  (BitNet's clamp at -128, although absmax scaling alone never reaches it); with
  ``scale_rule='reciprocal'`` the scale is ``(1 / max(max|x|, eps)) * 127`` instead (two float32
  roundings), which is what transformers' BitNet computes (torch's ``127 / tensor``), bit for bit;
- integer path: ``y = float32(x_q W_q^T) * (gamma / s) + bias`` with an exact int32 product;
- float path: ``y = gamma (x W_q^T) + bias`` with float32 ``x`` (no activation quantization).

Packed layouts (``format``, see :class:`TernaryWeight`): 'i2' (2 bits per weight, default) and
't5' (1.6 bits, 5 base-3 digits per byte, TQ1_0's byte encoding); both give the same bits.

The native kernels (``fastemb._C``) run when they are built; otherwise the NumPy reference
(``fastemb._reference.ternary``) does, with the same results (bit for bit on the integer path).
Torch ops and ``BitLinear`` are in :mod:`fastemb.torch`.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from . import _backend
from ._out import check_out
from ._reference import ternary as _ref

EPS = _ref.EPS
BLOCK = _ref.BLOCK
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
MAX_K_INT8 = 2 ** 22  # int32 sums of k code x int8 products (kMaxK in src/cpp/ternary/ternary_validate.h)
_FORMAT = "fastemb.ternary.I2"
_FORMAT_T5 = "fastemb.ternary.T5"
_FORMAT_VERSION = 1
FORMATS = _ref.FORMATS  # ('i2', 't5'): the packed layouts of TernaryWeight
_FORMAT_CODES = {"i2": 0, "t5": 1}  # ternary::Format in src/cpp/ternary/ternary.h
_SERIAL_NAMES = {"i2": _FORMAT, "t5": _FORMAT_T5}
_KERNELS = ("ternary_quantize_activations", "ternary_matmul_int8", "ternary_matmul_float")
SCALE_RULES = _ref.SCALE_RULES  # ('divide', 'reciprocal'): the activation scale's formula
_SCALE_RULE_CODES = {"divide": 0, "reciprocal": 1}  # ternary::ScaleRule in src/cpp/ternary/ternary.h


def native_kernels() -> Optional[Any]:
    """The CPU native module when it has the ternary kernels, else None (NumPy fallback)."""
    C = _backend.native()
    if C is not None and all(hasattr(C, name) for name in _KERNELS):
        return C
    return None


def cuda_kernels() -> Optional[Any]:
    """The CUDA module when it has the ternary kernels, else None."""
    mod = _backend.cuda_module()
    if mod is not None and all(hasattr(mod, name) for name in _KERNELS):
        return mod
    return None


# ---- validation helpers ----------------------------------------------------------------------

def _as_float_array(name: str, a: Any, ndims: Tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (use fastemb.torch for tensors), got {type(a).__name__}")
    if a.dtype.kind == "f" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))  # non-native byte order: one converted copy
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, float32 or float64, got dtype {a.dtype}"
                        + (" (bfloat16: use fastemb.torch)" if "bfloat16" in str(a.dtype) else ""))
    if a.ndim not in ndims:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in ndims)}, got shape {a.shape}")
    return a


def _check_finite(name: str, a: np.ndarray) -> None:
    if a.size and not np.isfinite(a).all():
        what = "NaN" if np.isnan(a).any() else "inf"
        raise ValueError(f"{name} must be finite (found {what})")


def _check_eps(eps: Any) -> float:
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps))
            or float(eps) <= 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return float(eps)


def _check_scale_rule(scale_rule: Any) -> str:
    if not isinstance(scale_rule, str):
        raise TypeError(f"scale_rule must be a str ('divide' or 'reciprocal'), got {type(scale_rule).__name__}")
    if scale_rule not in _SCALE_RULE_CODES:
        raise ValueError(f"scale_rule must be 'divide' or 'reciprocal', got {scale_rule!r}")
    return scale_rule


def _check_gamma(name: str, gamma: Any, n: int) -> np.ndarray:
    g = np.asarray(gamma)
    if g.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {g.dtype}")
    g = _backend.native_array(np.atleast_1d(g).astype(np.float32))
    if g.ndim != 1 or g.shape[0] not in (1, n):
        raise ValueError(f"{name} must have shape (1,) or ({n},) (per tensor or per output row), got {g.shape}")
    if not np.isfinite(g).all() or (g < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {g[~(np.isfinite(g) & (g >= 0))][:3]}")
    return g


def _ternary_values(name: str, values: Any) -> np.ndarray:
    """Checks that ``values`` is a 2-D array of -1 / 0 / +1 and returns it as int8."""
    v = np.asarray(values)
    if v.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array of -1, 0, +1, got dtype {v.dtype}")
    if v.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, k], got shape {v.shape}")
    bad = ~np.isin(v, (-1, 0, 1))
    if bad.any():
        i, j = (int(t[0]) for t in np.nonzero(bad))
        raise ValueError(f"{name} must hold only -1, 0, +1 (ternary); found {v[i, j]!r} at [{i}, {j}]")
    return v.astype(np.int8)


def _check_format(format: Any) -> str:
    if not isinstance(format, str):
        raise TypeError(f"format must be a str ('i2' or 't5'), got {type(format).__name__}")
    if format not in _FORMAT_CODES:
        raise ValueError(f"format must be 'i2' (2 bits per weight) or 't5' (1.6 bits, 5 per byte), got {format!r}")
    return format


def _check_codes(name: str, codes: np.ndarray) -> None:
    if (codes == 3).any():
        i, j = (int(t[0]) for t in np.nonzero(codes == 3))
        raise ValueError(f"{name}: invalid 2-bit code 3 at weight [{i}, {j}] (codes are w + 1 in 0..2)")


# ---- TernaryWeight ---------------------------------------------------------------------------

def _check_packed(packed: np.ndarray, k: int, format: str) -> np.ndarray:
    """uint8 ``packed`` checked as rows of k weights in layout ``format`` (shape, codes / bytes, padding
    weights 0), C-contiguous."""
    t5 = format == "t5"
    kp, per_byte = (_ref.padded_k_t5(k), 5) if t5 else (_ref.padded_k(k), 4)
    if packed.ndim != 2 or packed.shape[1] != kp // per_byte:
        where = " in format 't5'" if t5 else ""
        raise ValueError(f"packed must have shape (n, {kp // per_byte}) for k={k}{where} (k padded to {kp}, "
                         f"{per_byte} weights per byte), got {packed.shape}")
    packed = _backend.native_array(packed)
    if not packed.size:
        return packed
    if t5:
        bad = ~_ref.T5_VALID_BYTES[packed]
        if bad.any():
            i, j = (int(t[0]) for t in np.nonzero(bad))
            raise ValueError(f"packed: byte {int(packed[i, j])} at [{i}, {j}] is not a 't5' encoding "
                             "(ceil(v * 256 / 243) of a base-3 value v < 243)")
        unpack, block = _ref.unpack_t5, _ref.T5_BLOCK
    else:
        # code 3 = both bits of a 2-bit slot set; checked on the bytes (no unpacked copy)
        if np.bitwise_and(np.bitwise_and(packed, packed >> 1), 0x55).any():
            _check_codes("packed", _ref.unpack(packed, kp) + 1)
        unpack, block = _ref.unpack, BLOCK
    if kp > k:  # the padding weights are all in the last 64-byte block of a row
        last = unpack(packed[:, -64:], block)[:, k - (kp - block):]
        if (last != 0).any():
            raise ValueError(f"packed: padding weights (columns {k}..{kp - 1}) must have code 1 (w = 0)")
    return packed


class TernaryWeight:
    """Ternary weights ``W = gamma * W_q`` (``W_q`` in {-1, 0, +1}) packed in one of two layouts
    (``src/cpp/ternary/ternary.h``), chosen by ``format``:

    - ``'i2'`` (default): 2 bits per weight. ``packed`` is uint8 ``[n, kp / 4]``, ``kp`` = ``k``
      rounded up to a multiple of 256. In each 64-byte block of a row, byte ``j`` holds weights
      ``64 s + j`` (s = 0..3) at bits ``2s``, as code ``w + 1``.
    - ``'t5'``: 1.6 bits per weight, 5 ternary digits per byte (base 3, the GGUF TQ1_0 idea).
      ``packed`` is uint8 ``[n, kp / 5]``, ``kp`` = ``k`` rounded up to a multiple of 320. In each
      64-byte block (320 weights) of a row, byte ``j`` holds the codes ``c_t = w + 1`` of weights
      ``64 t + j`` (t = 0..4) as ``v = sum_t c_t 3^(4 - t)``, stored as
      ``ceil(v * 256 / 243)`` (TQ1_0's byte encoding), so digit ``t`` is
      ``(3 * (byte * 3^t mod 256)) >> 8``: one 64-byte load gives 64 consecutive weights per
      digit, aligned with 64 consecutive activations.

    Padding weights have code 1 (w = 0) in both; both give the same bits in every kernel. When
    each wins (``bench/bench_ternary_t5.py``, single-row GEMV, weights from DRAM): 't5' holds 20%
    fewer bytes and matches TQ1_0's byte encoding, but its GEMV executes about twice the vector
    instructions of 'i2' per weight (AVX-512 VNNI: 10 vpdpbusd + 10 vpaddb per 320 weights, no
    unpacking; AVX2: per-digit extraction), so it is faster only where the 'i2' GEMV is pinned at
    the DRAM read floor (many cores sharing memory bandwidth). On a 2-core Zen 4 VM 'i2' was faster
    at every shape (t5: 0.73-0.93x on AVX-512, ~0.5x on AVX2; still 2.2-2.8x faster than ggml's
    TQ1_0). Batches of >= 16 rows run on 'i2' (a 't5' weight is transcoded per call: the i2 multi-row
    GEMV below 96 rows on AVX-512 VNNI / 32 on AVX2, the GEMM above), and
    CUDA computes on 'i2' only. Choose 't5' for memory / disk size or TQ1_0 interchange.

    Attributes:
        packed: uint8, the layout above.
        scale: gamma, float32 ``[1]`` (per tensor) or ``[n]`` (per output row). gamma itself is
            stored (the dequantized weight is ``gamma * W_q``), not ``1 / gamma``.
        n, k: output and input features; ``shape == (n, k)``.
        format: ``'i2'`` or ``'t5'``.

    Build one with :func:`quantize_ternary`, :meth:`from_ternary` or a converter
    (:meth:`from_hf_bitnet`, :meth:`from_gguf_tq2_0`, :meth:`from_gguf_tq1_0`).
    """

    __slots__ = ("packed", "scale", "n", "k", "format")

    def __init__(self, packed: np.ndarray, scale: Any, k: int, format: str = "i2"):
        """Wraps a packed array of layout ``format`` (checked: dtype, shape, valid codes / bytes,
        padding codes 1)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        k = int(k)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if not isinstance(packed, np.ndarray):
            raise TypeError(f"packed must be a numpy.ndarray, got {type(packed).__name__}")
        if packed.dtype != np.uint8:
            raise TypeError(f"packed must have dtype uint8, got {packed.dtype}")
        format = _check_format(format)
        packed = _check_packed(packed, k, format)
        n = packed.shape[0]
        self.packed = packed
        self.scale = _check_gamma("scale", scale, n)
        self.n = n
        self.k = k
        self.format = format

    # -- constructors
    @classmethod
    def from_ternary(cls, values: Any, scale: Any = 1.0, format: str = "i2") -> "TernaryWeight":
        """Packs ``values`` ([n, k] of -1 / 0 / +1, any numeric dtype) with gamma ``scale`` (a
        number, or ``[n]`` per output row) in layout ``format`` ('i2' or 't5'). Other values raise
        ValueError naming ``values``."""
        format = _check_format(format)
        wq = _ternary_values("values", values)
        packed = _ref.pack_t5(wq) if format == "t5" else _ref.pack(wq)
        return cls(packed, scale, wq.shape[1], format)

    def to_format(self, format: str) -> "TernaryWeight":
        """The same weights in layout ``format`` ('i2' or 't5'): ``self`` when it already is,
        else a repacked copy (same codes, same scale)."""
        format = _check_format(format)
        if format == self.format:
            return self
        tw = TernaryWeight.__new__(TernaryWeight)
        packed = _ref.pack_t5(self.ternary()) if format == "t5" else None
        if packed is None:
            C = native_kernels()
            packed = np.empty((self.n, self.kp_of("i2") // 4), np.uint8)
            if C is not None and hasattr(C, "ternary_t5_to_i2") and self.n and self.k:
                C.ternary_t5_to_i2(_backend.address(self.packed), self.n, self.k, _backend.address(packed))
            else:
                packed = _ref.pack(self.ternary())
        tw.packed, tw.scale, tw.n, tw.k, tw.format = packed, self.scale.copy(), self.n, self.k, format
        return tw

    # -- properties
    @property
    def shape(self) -> Tuple[int, int]:
        """``(n, k)``: output features, input features (the dequantized weight's shape)."""
        return (self.n, self.k)

    @property
    def kp(self) -> int:
        """``k`` padded to the format's block: a multiple of 256 for 'i2' (``kp / 4`` bytes per
        row), of 320 for 't5' (``kp / 5`` bytes per row)."""
        return _ref.padded_k_fmt(self.format, self.k)

    def kp_of(self, format: str) -> int:
        """``k`` padded for layout ``format``."""
        return _ref.padded_k_fmt(_check_format(format), self.k)

    @property
    def bits_per_weight(self) -> float:
        """Packed bits per weight, padding included (2.0 for 'i2', 1.6 for 't5' when k fills its blocks)."""
        return 8.0 * self.packed.shape[1] / self.k if self.k else 0.0

    @property
    def per_row(self) -> bool:
        """True when there is one gamma per output row."""
        return self.scale.shape[0] != 1

    @property
    def granularity(self) -> str:
        """'row' or 'tensor'."""
        return "row" if self.per_row else "tensor"

    @property
    def nbytes(self) -> int:
        """Bytes held: packed codes plus scales."""
        return int(self.packed.nbytes + self.scale.nbytes)

    def gamma(self) -> np.ndarray:
        """gamma per output row, float32 ``[n]`` (broadcast from the per-tensor scale)."""
        return np.broadcast_to(self.scale, (self.n,)).copy() if not self.per_row else self.scale.copy()

    def ternary(self) -> np.ndarray:
        """``W_q``: int8 ``[n, k]`` of -1 / 0 / +1."""
        return _ref.unpack_fmt(self.packed, self.k, self.format)

    def dequantize(self, dtype: Any = np.float32) -> np.ndarray:
        """``gamma * W_q`` as ``[n, k]`` of ``dtype`` (computed in float32)."""
        g = self.scale.reshape(-1, 1)
        return (self.ternary().astype(np.float32) * g).astype(dtype, copy=False)

    def __repr__(self) -> str:
        s = (f"{float(self.scale[0]):.6g}" if not self.per_row
             else f"[{self.n}] in [{float(self.scale.min()):.4g}, {float(self.scale.max()):.4g}]")
        fmt = "" if self.format == "i2" else f", format={self.format!r}"
        return (f"TernaryWeight(shape=({self.n}, {self.k}), granularity={self.granularity!r}, scale={s}, "
                f"nbytes={self.nbytes}{fmt})")

    # -- serialization
    def to_dict(self) -> Dict[str, np.ndarray]:
        """Arrays that describe this weight (for ``np.savez`` or any array store)."""
        return {"format": np.array(_SERIAL_NAMES[self.format]), "version": np.array(_FORMAT_VERSION, dtype=np.int64),
                "packed": self.packed, "scale": self.scale, "shape": np.array([self.n, self.k], dtype=np.int64)}

    @classmethod
    def from_dict(cls, d: Any) -> "TernaryWeight":
        """Inverse of :meth:`to_dict` (also takes an ``np.load`` result); the contents are checked."""
        for key in ("format", "packed", "scale", "shape"):
            if key not in d:
                raise ValueError(f"d: missing key {key!r} (not a TernaryWeight dictionary)")
        names = {v: k for k, v in _SERIAL_NAMES.items()}
        fmt = names.get(str(np.asarray(d["format"])))
        if fmt is None:
            raise ValueError(f"d: format is {str(np.asarray(d['format']))!r}, expected one of {sorted(names)!r}")
        version = int(np.asarray(d.get("version", 1)))
        if version != _FORMAT_VERSION:
            raise ValueError(f"d: format version {version} is not supported (this fastemb reads {_FORMAT_VERSION})")
        shape = np.asarray(d["shape"]).reshape(-1)
        if shape.shape != (2,):
            raise ValueError(f"d: shape must be (n, k), got {shape}")
        tw = cls(np.asarray(d["packed"]), np.asarray(d["scale"]), int(shape[1]), fmt)
        if tw.n != int(shape[0]):
            raise ValueError(f"d: shape says n={int(shape[0])} but packed has {tw.n} rows")
        return tw

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the weight with ``np.savez`` (``.npz``)."""
        np.savez(path, **self.to_dict())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "TernaryWeight":
        """Reads a file written by :meth:`save` (no pickles are loaded)."""
        with np.load(path, allow_pickle=False) as f:
            return cls.from_dict({key: f[key] for key in f.files})

    # -- Hugging Face transformers' BitNet
    def to_hf_bitnet(self, inverse_scale: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Packed uint8 weights and ``weight_scale`` as transformers' BitNet stores them
        (``transformers/integrations/bitnet.py``: ``pack_weights``, 4 codes per byte along the
        output dim, ``VALUES_PER_ITEM = 4``).

        Returns ``(weight uint8 [ceil(n/4), k], weight_scale float32)``. Scale convention:
        transformers' packed ``BitLinear`` (``linear_class='bitlinear'``, the one the published
        BitNet b1.58 2B4T checkpoint uses) computes ``y = (x_q W_q^T) / (s_x * weight_scale)``,
        so it stores ``weight_scale = 1 / gamma``; that is what ``inverse_scale=True`` (default)
        returns. ``AutoBitLinear`` in offline mode multiplies instead (``weight_scale = gamma``):
        pass ``inverse_scale=False`` for it. ``weight_scale`` is ``[1]`` for a per-tensor weight
        (the shape of transformers' buffer) and ``[n]`` per row. With ``n % 4 != 0`` the unused
        code slots are 0 (as ``pack_weights`` leaves them); transformers' own ``BitLinear`` needs
        ``n % 4 == 0``.
        """
        packed = _ref.hf_bitnet_pack(self.ternary())
        if inverse_scale:
            if (self.scale == 0).any():
                raise ValueError("scale: gamma is 0 (all-zero weights); 1 / gamma is not finite. "
                                 "Use inverse_scale=False")
            ws = (np.float32(1.0) / self.scale).astype(np.float32)
        else:
            ws = self.scale.copy()
        return packed, ws

    @classmethod
    def from_hf_bitnet(cls, weight: Any, weight_scale: Any, out_features: Optional[int] = None,
                       inverse_scale: bool = True) -> "TernaryWeight":
        """Reads transformers' BitNet packed weights (see :meth:`to_hf_bitnet` for the layout and
        the scale convention: ``inverse_scale=True`` means ``weight_scale = 1 / gamma``).

        Args:
            weight: uint8 ``[ceil(n/4), k]`` (NumPy; for a torch tensor pass ``t.cpu().numpy()``).
            weight_scale: a number, ``[1]`` or ``[n]`` (any float dtype; bf16 tensors: ``.float()``).
            out_features: n; defaults to ``4 * weight.shape[0]``.
        """
        w = np.asarray(weight)
        if w.dtype != np.uint8:
            raise TypeError(f"weight must have dtype uint8 (4 codes per byte), got {w.dtype}")
        if w.ndim != 2:
            raise ValueError(f"weight must be 2-D [ceil(n/4), k], got shape {w.shape}")
        rows = w.shape[0]
        n = 4 * rows if out_features is None else out_features
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"out_features must be an int, got {type(out_features).__name__}")
        n = int(n)
        if (n + 3) // 4 != rows:
            raise ValueError(f"out_features={n} needs {(n + 3) // 4} packed rows, weight has {rows}")
        codes = _ref.hf_bitnet_codes(w)[:n]
        _check_codes("weight", codes)
        ws = np.atleast_1d(np.asarray(weight_scale, dtype=np.float32))
        if ws.ndim != 1 or ws.shape[0] not in (1, n):
            raise ValueError(f"weight_scale must have shape (1,) or ({n},), got {ws.shape}")
        if inverse_scale:
            if not (np.isfinite(ws).all() and (ws > 0).all()):
                raise ValueError("weight_scale (1 / gamma) must be finite and > 0")
            gamma = (np.float32(1.0) / ws).astype(np.float32)
        else:
            gamma = ws
        return cls.from_ternary(codes.astype(np.int8) - 1, gamma)

    # -- llama.cpp / GGUF TQ2_0 and TQ1_0
    def _gguf_d(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        if self.k % _ref.QK_K:
            raise ValueError(f"{name} needs k to be a multiple of {_ref.QK_K} (GGUF rows are whole blocks), "
                             f"got k={self.k}")
        wq = self.ternary()
        with np.errstate(over="ignore"):
            g16 = self.gamma().astype(np.float16)
        if not np.isfinite(g16).all():
            raise ValueError(f"scale: gamma {float(self.scale.max())} does not fit float16 (the block scale of {name})")
        nb = self.k // _ref.QK_K
        d = np.repeat(g16.reshape(-1, 1), nb, axis=1)
        d[(wq.reshape(self.n, nb, _ref.QK_K) == 0).all(axis=2)] = 0  # all-zero block: d = 0, as llama.cpp writes
        return wq, d

    def to_gguf_tq2_0(self) -> np.ndarray:
        """llama.cpp TQ2_0 blocks: uint8 ``[n, k / 256 * 66]`` (per block of 256 weights along k:
        64 bytes of 2-bit codes, then the float16 scale ``d``), as ``gguf.quants.quantize`` writes
        them for ``self.dequantize()``. ``d`` is gamma rounded to float16 (0 for an all-zero block),
        so a round trip keeps the codes exactly and gamma to float16 precision. Needs k % 256 == 0."""
        wq, d = self._gguf_d("TQ2_0")
        return _ref.tq2_0_encode(wq, d)

    def to_gguf_tq1_0(self) -> np.ndarray:
        """llama.cpp TQ1_0 blocks (5 codes per byte, 1.69 bits per weight): uint8
        ``[n, k / 256 * 54]``; same scale rules as :meth:`to_gguf_tq2_0`. Works from either layout
        (a 't5' weight keeps its codes; TQ1_0 blocks are 256 weights, t5 blocks 320, so the bytes
        are regrouped)."""
        wq, d = self._gguf_d("TQ1_0")
        return _ref.tq1_0_encode(wq, d)

    @classmethod
    def _from_gguf(cls, name: str, data: Any, shape: Optional[Tuple[int, int]], bytes_per_block: int, decode,
                   granularity: Optional[str], format: str = "i2") -> "TernaryWeight":
        format = _check_format(format)
        a = np.asarray(data)
        if a.dtype != np.uint8:
            raise TypeError(f"data must be uint8 {name} blocks, got dtype {a.dtype}")
        if shape is not None:
            if len(shape) != 2:
                raise ValueError(f"shape must be (n, k), got {shape}")
            n, k = (int(s) for s in shape)
            if k % _ref.QK_K:
                raise ValueError(f"shape: k={k} is not a multiple of {_ref.QK_K}")
            if a.size != n * (k // _ref.QK_K) * bytes_per_block:
                raise ValueError(f"data has {a.size} bytes, {name} of shape ({n}, {k}) needs "
                                 f"{n * (k // _ref.QK_K) * bytes_per_block}")
            a = a.reshape(n, (k // _ref.QK_K) * bytes_per_block)
        elif a.ndim != 2 or a.shape[1] % bytes_per_block:
            raise ValueError(f"data must be [n, k / 256 * {bytes_per_block}] (or pass shape=(n, k)), got {a.shape}")
        codes, d = decode(_backend.native_array(a))
        _check_codes("data", codes)
        n, nb = d.shape
        wq = codes.astype(np.int8) - 1
        used = (wq.reshape(n, nb, _ref.QK_K) != 0).any(axis=2)  # a block's d matters only if it has a nonzero code
        d32 = d.astype(np.float32)
        if not np.isfinite(d32[used]).all():
            raise ValueError("data: a block scale d is not finite")
        gamma = np.zeros(n, np.float32)
        for i in range(n):
            vals = np.unique(d32[i][used[i]])
            if vals.size > 1:
                raise ValueError(f"data: row {i} has blocks with different scales d ({vals[:4]}); TernaryWeight keeps "
                                 f"one gamma per row or per tensor. Dequantize and call fastemb.quantize_ternary")
            if vals.size:
                gamma[i] = vals[0]
        if (gamma < 0).any():
            raise ValueError("data: negative block scale d")
        nonzero = gamma[used.any(axis=1)]
        same = nonzero.size == 0 or (nonzero == nonzero[0]).all()
        if granularity is None:
            granularity = "tensor" if same else "row"
        if granularity == "tensor":
            if not same:
                raise ValueError("data: rows have different scales; use granularity='row'")
            gamma = gamma[:1] if nonzero.size == 0 else nonzero[:1]
        elif granularity != "row":
            raise ValueError(f"granularity must be None, 'tensor' or 'row', got {granularity!r}")
        return cls.from_ternary(wq, gamma, format)

    @classmethod
    def from_gguf_tq2_0(cls, data: Any, shape: Optional[Tuple[int, int]] = None,
                        granularity: Optional[str] = None, format: str = "i2") -> "TernaryWeight":
        """Reads llama.cpp TQ2_0 blocks (``[n, k / 256 * 66]`` uint8, or any layout with
        ``shape=(n, k)``). Within a row, every block with a nonzero code must carry the same ``d``
        (what ``gguf.quants.quantize`` writes for a ternary-times-gamma weight); otherwise
        ValueError. ``granularity``: None picks 'tensor' when all rows agree, else 'row'.
        ``format``: the layout of the result ('i2' or 't5')."""
        return cls._from_gguf("TQ2_0", data, shape, _ref.TQ2_0_BYTES, _ref.tq2_0_decode, granularity, format)

    @classmethod
    def from_gguf_tq1_0(cls, data: Any, shape: Optional[Tuple[int, int]] = None,
                        granularity: Optional[str] = None, format: str = "i2") -> "TernaryWeight":
        """Reads llama.cpp TQ1_0 blocks (``[n, k / 256 * 54]`` uint8); rules as :meth:`from_gguf_tq2_0`.
        ``format='t5'`` keeps TQ1_0's density (5 codes per byte, the same byte encoding, 1.6 bits per
        weight); the default 'i2' is the 2-bit layout, as before."""
        return cls._from_gguf("TQ1_0", data, shape, _ref.TQ1_0_BYTES, _ref.tq1_0_decode, granularity, format)


# ---- quantizers ------------------------------------------------------------------------------

def quantize_ternary(w: np.ndarray, scale: Union[str, float, np.ndarray] = "absmean", granularity: str = "tensor",
                     eps: float = EPS, format: str = "i2") -> TernaryWeight:
    """Quantizes float weights ``w`` [n, k] (out x in, like ``nn.Linear.weight``) to ternary.

    ``W_q = clamp(round(W / max(gamma, eps)), -1, 1)`` (round half to even, float32 division).

    Args:
        w: float16 / float32 / float64 ``[n, k]``, finite.
        scale: 'absmean' (gamma = mean|W|, BitNet b1.58), 'absmedian' (gamma = median|W|, b1.58
            Reloaded), or gamma itself: a positive number, or ``[n]`` values with
            ``granularity='row'``.
        granularity: 'tensor' (one gamma) or 'row' (one gamma per output row).
        eps: floor of gamma in the division (all-zero weights quantize to 0 without NaN).
        format: the packed layout, 'i2' (2 bits per weight, default) or 't5' (1.6 bits, 5 per
            byte: 20% fewer bytes; see :class:`TernaryWeight` for when each is faster).

    Returns:
        :class:`TernaryWeight` storing gamma (not ``max(gamma, eps)``) as its scale.
    """
    w = _as_float_array("w", w, (2,))
    _check_finite("w", w)
    eps = _check_eps(eps)
    format = _check_format(format)
    if granularity not in ("tensor", "row"):
        raise ValueError(f"granularity must be 'tensor' or 'row', got {granularity!r}")
    n = w.shape[0]
    if isinstance(scale, str):
        if scale not in ("absmean", "absmedian"):
            raise ValueError(f"scale must be 'absmean', 'absmedian' or a number, got {scale!r}")
        if w.size == 0:
            gamma = np.zeros(n if granularity == "row" else 1, np.float32)
        else:
            gamma = _ref.weight_scale(w, scale, granularity == "row")
    else:
        if isinstance(scale, bool):
            raise TypeError("scale must be 'absmean', 'absmedian' or a number, got bool")
        gamma = np.atleast_1d(np.asarray(scale))
        if gamma.dtype.kind not in "fiu":
            raise TypeError(f"scale must be 'absmean', 'absmedian' or a number, got {type(scale).__name__}")
        gamma = gamma.astype(np.float32)
        expected = (n,) if granularity == "row" and gamma.size != 1 else (1,)
        if gamma.shape != expected:
            raise ValueError(f"scale must be a number{' or have shape (' + str(n) + ',)' if granularity == 'row' else ''}, "
                             f"got shape {gamma.shape}")
        if not (np.isfinite(gamma).all() and (gamma > 0).all()):
            raise ValueError("scale must be positive and finite")
        if granularity == "row" and gamma.size == 1:
            gamma = np.repeat(gamma, n)
    wq = _ref.quantize_weights(w, gamma, eps) if w.size else np.zeros(w.shape, np.int8)
    return TernaryWeight(_ref.pack_t5(wq) if format == "t5" else _ref.pack(wq), gamma, w.shape[1], format)


def native_quantize_activations(C: Any, x: np.ndarray, kp: int, eps: float, isa: str = "",
                                scale_rule: str = "divide") -> Tuple[np.ndarray, np.ndarray]:
    """Runs the native quantizer on a validated C-contiguous float ``x`` [m, k]: returns
    (xq int8 [m, kp], s float32 [m])."""
    m, k = x.shape
    xq = np.empty((m, kp), dtype=np.int8)
    s = np.empty(m, dtype=np.float32)
    A = _backend.address
    C.ternary_quantize_activations(A(x), _backend.DTYPE_CODES[x.dtype.name], m, k, kp, float(eps), A(xq), A(s), isa,
                                   scale_rule=_SCALE_RULE_CODES[scale_rule])
    return xq, s


def _fmt_kwargs(tw: TernaryWeight) -> Dict[str, int]:
    """The kernels' ``fmt`` keyword, passed only for a non-default layout (older builds and
    stand-ins without it keep working for 'i2')."""
    return {} if tw.format == "i2" else {"fmt": _FORMAT_CODES[tw.format]}


def native_matmul_int8(C: Any, xq: np.ndarray, s: np.ndarray, tw: TernaryWeight, bias: Optional[np.ndarray],
                       isa: str = "", with_acc: bool = False,
                       out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Runs the native integer matmul: xq int8 [m, kp], s float32 [m] -> (out float32 [m, n] (``out``: a
    checked result buffer, or None), acc int32 [m, n] when with_acc)."""
    m = xq.shape[0]
    out = np.empty((m, tw.n), dtype=np.float32) if out is None else out
    acc = np.empty((m, tw.n), dtype=np.int32) if with_acc else None
    A = _backend.address
    C.ternary_matmul_int8(A(xq), A(s), m, A(tw.packed), tw.n, tw.k, tw.kp, A(tw.scale), tw.per_row, A(bias),
                          A(out), A(acc), isa, **_fmt_kwargs(tw))
    return out, acc


def native_matmul_float(C: Any, x: np.ndarray, tw: TernaryWeight, bias: Optional[np.ndarray], isa: str = "",
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Runs the native float matmul on a C-contiguous float32 ``x`` [m, k] (``out``: a checked result buffer
    [m, n], or None)."""
    m = x.shape[0]
    out = np.empty((m, tw.n), dtype=np.float32) if out is None else out
    A = _backend.address
    C.ternary_matmul_float(A(x), m, A(tw.packed), tw.n, tw.k, tw.kp, A(tw.scale), tw.per_row, A(bias), A(out), isa,
                           **_fmt_kwargs(tw))
    return out


def _pick_backend(isa: Optional[str]) -> Tuple[Optional[Any], str]:
    """Test hook: None -> native kernels when built, else NumPy; 'numpy' -> the reference;
    an ISA name ('serial', 'avx2', 'avx512'; ARM64: 'neon', 'dotprod') -> that native variant (RuntimeError if not built)."""
    if isa is None:
        return native_kernels(), ""
    if isa == "numpy":
        return None, ""
    C = native_kernels()
    if C is None:
        raise RuntimeError("the native ternary kernels are not available in this build")
    return C, isa


def _quantize_rows(x: np.ndarray, kp: int, eps: float, C: Optional[Any], isa: str,
                   scale_rule: str = "divide") -> Tuple[np.ndarray, np.ndarray]:
    if C is not None and x.shape[0]:
        return native_quantize_activations(C, _backend.native_array(x), kp, eps, isa, scale_rule)
    return _ref.quantize_activations(x, eps, kp, scale_rule)


def quantize_activations(x: np.ndarray, eps: float = EPS, scale_rule: str = "divide") -> Tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8 quantization (BitNet): ``s = 127 / max(max|x|, eps)``,
    ``x_q = clamp(round(x s), -128, 127)`` in float32, round half to even.

    Args:
        x: float16 / float32 / float64 ``[m, k]`` (or ``[k]``: one row), finite.
        eps: floor of ``max|x|`` (an all-zero row gives ``s = 127 / eps`` and zeros).
        scale_rule: how ``s`` is computed from ``a = max(max|x|, eps)`` in float32. 'divide'
            (default): ``127 / a``, one rounding. 'reciprocal': ``(1 / a) * 127``, two roundings:
            what torch computes for ``127 / tensor`` and so what transformers' BitNet
            (``BitLinear.activation_quant``, ``ActQuant``) computes; with it ``s`` and ``x_q``
            equal transformers' bit for bit for float32 ``x``. The two differ by 1 ulp of ``s``
            on about a quarter of the rows (and then, rarely, by 1 in a code).

    Returns:
        ``(x_q int8 [m, k], s float32 [m])`` (``[k]`` and ``[1]`` for 1-D ``x``). The matmul uses
        ``x ~ x_q / s``.
    """
    return _quantize_activations(x, eps, None, scale_rule)


def _quantize_activations(x: np.ndarray, eps: float, isa: Optional[str],
                          scale_rule: str = "divide") -> Tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_activations` on a chosen backend (test hook, kept out of the public signature)."""
    x = _as_float_array("x", x, (1, 2))
    eps = _check_eps(eps)
    scale_rule = _check_scale_rule(scale_rule)
    one = x.ndim == 1
    x2 = x.reshape(1, -1) if one else x
    _check_finite("x", x2)
    C, isa = _pick_backend(isa)
    k = x2.shape[1]
    xq, s = _quantize_rows(x2, _ref.padded_k(k) if C is not None else k, eps, C, isa, scale_rule)
    if xq.shape[1] != k:
        xq = _backend.native_array(xq[:, :k])
    return (xq.reshape(-1), s) if one else (xq, s)


def ternary_matmul(x: np.ndarray, tw: TernaryWeight, activations: str = "int8", bias: Optional[np.ndarray] = None,
                   eps: float = EPS, scale_rule: str = "divide", *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``y = x W^T (+ bias)`` with ternary ``W = gamma W_q``: float32 ``[m, n]`` (``[n]`` for 1-D x).

    Args:
        x: float16 / float32 / float64 ``[m, k]`` or ``[k]``, finite (NaN / inf raise
            ValueError). bfloat16: use :mod:`fastemb.torch` (``torch.ops.fastemb.ternary_linear``).
        tw: a :class:`TernaryWeight` with ``tw.k == k``.
        activations: 'int8' quantizes ``x`` per row (absmax, BitNet) and multiplies exactly in
            int32: ``y = float32(x_q W_q^T) * (gamma / s) + bias``. 'float' multiplies float32
            ``x`` (converted: a copy for float16 / float64) by ``W_q`` without quantizing it:
            ``y = gamma (x W_q^T) + bias``, exact up to float32 rounding.
        bias: optional ``[n]`` finite, added in float32.
        eps: the activation quantizer's floor of ``max|x|``.
        scale_rule: the activation scale's formula with ``activations='int8'`` (see
            :func:`quantize_activations`): 'divide' (default) or 'reciprocal' (transformers'
            BitNet, bit for bit). Checked but unused with ``activations='float'``.
        out: optional float32 C-contiguous array of the result's shape (``[m, n]``, ``[n]`` for 1-D x) the
            result is written to and returned, sharing no memory with ``x``, ``bias`` or ``tw``; default: a new array.
    """
    return _ternary_matmul(x, tw, activations, bias, eps, None, scale_rule, out)


def _ternary_matmul(x: np.ndarray, tw: TernaryWeight, activations: str, bias: Optional[np.ndarray], eps: float,
                    isa: Optional[str], scale_rule: str = "divide", out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`ternary_matmul` on a chosen backend (test hook, kept out of the public signature):
    ``isa`` None -> the default, 'numpy' -> the reference, an ISA name -> that native variant."""
    if not isinstance(tw, TernaryWeight):
        raise TypeError(f"tw must be a fastemb.TernaryWeight (see fastemb.quantize_ternary), got {type(tw).__name__}")
    x = _as_float_array("x", x, (1, 2))
    if activations not in ("int8", "float"):
        raise ValueError(f"activations must be 'int8' or 'float', got {activations!r}")
    eps = _check_eps(eps)
    scale_rule = _check_scale_rule(scale_rule)
    one = x.ndim == 1
    x2 = x.reshape(1, -1) if one else x
    if x2.shape[1] != tw.k:
        raise ValueError(f"x has {x2.shape[1]} features (last dim) but tw expects k={tw.k} (tw.shape={tw.shape})")
    if activations == "int8" and tw.k > MAX_K_INT8:
        raise ValueError(f"tw: k={tw.k} is too large for the int8 path (int32 sums: k <= {MAX_K_INT8}); "
                         "use activations='float'")
    _check_finite("x", x2)
    b = None
    if bias is not None:
        if not isinstance(bias, np.ndarray):
            raise TypeError(f"bias must be a numpy.ndarray or None, got {type(bias).__name__}")
        if bias.dtype.kind not in "fiu":
            raise TypeError(f"bias must be a real array, got dtype {bias.dtype}")
        if bias.shape != (tw.n,):
            raise ValueError(f"bias must have shape ({tw.n},), got {bias.shape}")
        b = _backend.native_array(bias, dtype=np.float32)
        _check_finite("bias", b)
    C, isa = _pick_backend(isa)
    m = x2.shape[0]
    given = None  # the caller's out, viewed as [m, n]
    if out is not None:
        given = check_out(out, (tw.n,) if one else (m, tw.n), np.float32, {"x": x, "bias": bias, "tw": (tw.packed, tw.scale)}).reshape(m, tw.n)
    if m == 0 or tw.n == 0 or tw.k == 0:
        y = np.zeros((m, tw.n), np.float32) if given is None else given
        y[...] = 0
        if b is not None:
            y += b
    elif activations == "int8":
        xq, s = _quantize_rows(x2, tw.kp, eps, C, isa, scale_rule)
        if C is not None:
            y, _ = native_matmul_int8(C, xq, s, tw, b, isa, out=given)
        else:
            y, _ = _ref.matmul_int8(xq, s, tw.packed, tw.k, tw.scale, b, tw.format)
    else:
        x32 = _backend.native_array(x2, dtype=np.float32)
        if C is not None:
            y = native_matmul_float(C, x32, tw, b, isa, out=given)
        else:
            y = _ref.matmul_float(x32, tw.packed, tw.k, tw.scale, b, tw.format)
    if given is not None:
        if y is not given:  # the NumPy reference's new array
            given[...] = y
        return out
    return y.reshape(-1) if one else y
