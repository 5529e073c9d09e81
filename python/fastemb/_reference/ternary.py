"""NumPy reference for ternary (1.58-bit) matmul: quantizers, the 2-bit packed layout, and the
integer and float matmul paths.

The same rules as the native kernels (``src/cpp/ternary/ternary.h``), so the integer path agrees
bit for bit: int32 accumulation, then float32 ops in the same order without FMA.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

BLOCK = 256  # weights per packed block (64 bytes)
EPS = 1e-5


def padded_k(k: int) -> int:
    return (k + BLOCK - 1) // BLOCK * BLOCK


def weight_scale(w: np.ndarray, method: str, per_row: bool) -> np.ndarray:
    """gamma: mean|W| ('absmean', BitNet b1.58) or median|W| ('absmedian', b1.58 Reloaded), per
    tensor ([1]) or per output row ([n]), float32."""
    a = np.abs(w.astype(np.float32, copy=False))
    axis = 1 if per_row else None
    if method == "absmean":
        g = a.mean(axis=axis, dtype=np.float64)
    elif method == "absmedian":
        g = np.median(a, axis=axis)
    else:
        raise ValueError(f"scale must be 'absmean' or 'absmedian', got {method!r}")
    return np.atleast_1d(np.asarray(g, dtype=np.float32))


def quantize_weights(w: np.ndarray, gamma: np.ndarray, eps: float = EPS) -> np.ndarray:
    """W_q = clamp(round(W / max(gamma, eps)), -1, 1), round half to even, float32 division.
    gamma: [1] or [n]. Returns int8 [n, k]."""
    w32 = w.astype(np.float32, copy=False)
    g = np.maximum(gamma.astype(np.float32), np.float32(eps))
    g = g.reshape(-1, 1) if g.size > 1 else g.reshape(1, 1)
    return np.clip(np.rint(w32 / g), -1, 1).astype(np.int8)


def pack(wq: np.ndarray) -> np.ndarray:
    """int8 ternary [n, k] -> uint8 [n, kp / 4] in the I2 layout (see ternary.h)."""
    wq = np.asarray(wq)
    n, k = wq.shape
    kp = padded_k(k)
    codes = np.ones((n, kp), dtype=np.uint8)  # padding: code 1 = weight 0
    codes[:, :k] = (wq.astype(np.int16) + 1).astype(np.uint8)
    # [n, blocks, s, j] -> byte j of block b holds weight b*256 + 64*s + j at bits 2s.
    c = codes.reshape(n, kp // BLOCK, 4, 64)
    packed = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    return np.ascontiguousarray(packed.reshape(n, kp // 4))


def unpack(packed: np.ndarray, k: int) -> np.ndarray:
    """uint8 [n, kp / 4] -> int8 ternary [n, k]."""
    n, nb = packed.shape
    kp = nb * 4
    p = packed.reshape(n, kp // BLOCK, 1, 64)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = (p >> shifts) & 3
    return (codes.reshape(n, kp).astype(np.int8) - 1)[:, :k]


def quantize_activations(x: np.ndarray, eps: float = EPS, kp: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per-row absmax (BitNet): s = 127 / max(max|x|, eps), xq = clamp(rint(x * s), -128, 127).
    Returns (xq int8 [m, kp or k], s float32 [m])."""
    x32 = x.astype(np.float32, copy=False)
    m, k = x32.shape
    amax = np.abs(x32).max(axis=1) if k else np.zeros(m, np.float32)
    s = (np.float32(127.0) / np.maximum(amax, np.float32(eps))).astype(np.float32)
    xq = np.clip(np.rint(x32 * s[:, None]), -128, 127).astype(np.int8)
    if kp is not None and kp > k:
        xq = np.concatenate([xq, np.zeros((m, kp - k), np.int8)], axis=1)
    return xq, s


def matmul_int8(
    xq: np.ndarray,
    x_scale: np.ndarray,
    packed: np.ndarray,
    k: int,
    gamma: np.ndarray,
    bias: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Integer path: acc = xq @ W_q^T (int32), out = float32(acc) * (gamma / x_scale) + bias.
    Returns (out float32 [m, n], acc int32 [m, n])."""
    wq = unpack(packed, k).astype(np.int32)
    acc = xq[:, :k].astype(np.int32) @ wq.T
    g = gamma.astype(np.float32).reshape(1, -1)
    combined = g / x_scale.astype(np.float32).reshape(-1, 1)
    out = acc.astype(np.float32) * combined
    if bias is not None:
        out = out + bias.astype(np.float32).reshape(1, -1)
    return out.astype(np.float32, copy=False), acc.astype(np.int32, copy=False)


def matmul_float(
    x: np.ndarray, packed: np.ndarray, k: int, gamma: np.ndarray, bias: Optional[np.ndarray] = None
) -> np.ndarray:
    """Float path: out = gamma * (x @ W_q^T) + bias, float32 result (computed in float64)."""
    wq = unpack(packed, k).astype(np.float64)
    out = (x.astype(np.float64) @ wq.T) * gamma.astype(np.float64).reshape(1, -1)
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(1, -1)
    return out.astype(np.float32)
