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


# ---- t5: 1.6 bits per weight, 5 codes per byte (src/cpp/ternary/ternary.h, "Packed formats") -----
# Block b of a row = 64 bytes = weights b*320 .. b*320+319; byte j holds the codes c_t (t = 0..4) of
# weights b*320 + 64 t + j as v = sum_t c_t 3^(4-t), stored as q = ceil(v * 256 / 243) (TQ1_0's byte
# encoding); digit t = (3 (q 3^t mod 256)) >> 8.
T5_BLOCK = 320
FORMATS = ("i2", "t5")
_T5_POW_ENC = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_T5_POW_DEC = np.array([1, 3, 9, 27, 81], dtype=np.uint16)


def padded_k_t5(k: int) -> int:
    return (k + T5_BLOCK - 1) // T5_BLOCK * T5_BLOCK


def padded_k_fmt(fmt: str, k: int) -> int:
    """k padded to the format's block (256 for 'i2', 320 for 't5')."""
    return padded_k_t5(k) if fmt == "t5" else padded_k(k)


def row_bytes(fmt: str, k: int) -> int:
    """Packed bytes per weight row."""
    return padded_k_t5(k) // 5 if fmt == "t5" else padded_k(k) // 4


def t5_encode_values(v: np.ndarray) -> np.ndarray:
    """base-3 values v (0..242) -> t5 / TQ1_0 bytes ceil(v * 256 / 243)."""
    return ((v.astype(np.uint32) * 256 + 242) // 243).astype(np.uint8)


def t5_digits(q: np.ndarray) -> np.ndarray:
    """t5 bytes [...] -> their 5 digits [..., 5] (0..2 for every byte value), digit 0 first."""
    r = (q.astype(np.uint16)[..., None] * _T5_POW_DEC) & 0xFF
    return ((r * 3) >> 8).astype(np.uint8)


# The 243 byte values the encoder writes (the other 13 decode to digits too, but no packer makes them).
T5_VALID_BYTES = np.zeros(256, dtype=bool)
T5_VALID_BYTES[t5_encode_values(np.arange(243))] = True


def pack_t5(wq: np.ndarray) -> np.ndarray:
    """int8 ternary [n, k] -> uint8 [n, kp / 5] in the t5 layout (kp = padded_k_t5(k))."""
    wq = np.asarray(wq)
    n, k = wq.shape
    kp = padded_k_t5(k)
    codes = np.ones((n, kp), dtype=np.uint16)  # padding: code 1 = weight 0
    codes[:, :k] = wq.astype(np.int16) + 1
    c = codes.reshape(n, kp // T5_BLOCK, 5, 64)  # [n, block, digit t, byte j]
    v = (c * _T5_POW_ENC.reshape(1, 1, 5, 1)).sum(axis=2)
    return np.ascontiguousarray(t5_encode_values(v).reshape(n, kp // 5))


def unpack_t5(packed: np.ndarray, k: int) -> np.ndarray:
    """uint8 [n, kp / 5] (t5) -> int8 ternary [n, k]."""
    n, nbytes = packed.shape
    d = t5_digits(packed.reshape(n, nbytes // 64, 64))  # [n, block, j, t]
    codes = d.transpose(0, 1, 3, 2).reshape(n, nbytes * 5)
    return (codes.astype(np.int8) - 1)[:, :k]


def unpack_fmt(packed: np.ndarray, k: int, fmt: str = "i2") -> np.ndarray:
    """Either layout -> int8 ternary [n, k]."""
    return unpack_t5(packed, k) if fmt == "t5" else unpack(packed, k)


SCALE_RULES = ("divide", "reciprocal")


def activation_scale(amax: np.ndarray, eps: float = EPS, scale_rule: str = "divide") -> np.ndarray:
    """Per-row activation scale from ``amax = max|x|`` (float32), with ``a = max(amax, eps)``:

    - 'divide': ``s = 127 / a``, one float32 rounding (fastemb's default);
    - 'reciprocal': ``s = (1 / a) * 127``, two float32 roundings. This is what torch computes for
      ``127 / tensor`` (``Tensor.__rdiv__`` is ``reciprocal() * 127``), hence what transformers'
      BitNet ``activation_quant`` / ``ActQuant`` compute; it differs from 'divide' by 1 ulp on
      about a quarter of the values.
    """
    a = np.maximum(np.asarray(amax, dtype=np.float32), np.float32(eps))
    if scale_rule == "divide":
        return (np.float32(127.0) / a).astype(np.float32)
    if scale_rule == "reciprocal":
        return ((np.float32(1.0) / a).astype(np.float32) * np.float32(127.0)).astype(np.float32)
    raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {scale_rule!r}")


def quantize_activations(x: np.ndarray, eps: float = EPS, kp: Optional[int] = None,
                         scale_rule: str = "divide") -> Tuple[np.ndarray, np.ndarray]:
    """Per-row absmax (BitNet): s = activation_scale(max|x|, eps, scale_rule) (127 / max(max|x|, eps)
    for 'divide'), xq = clamp(rint(x * s), -128, 127). Returns (xq int8 [m, kp or k], s float32 [m])."""
    x32 = x.astype(np.float32, copy=False)
    m, k = x32.shape
    amax = np.abs(x32).max(axis=1) if k else np.zeros(m, np.float32)
    s = activation_scale(amax, eps, scale_rule)
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
    fmt: str = "i2",
) -> Tuple[np.ndarray, np.ndarray]:
    """Integer path: acc = xq @ W_q^T (int32), out = float32(acc) * (gamma / x_scale) + bias.
    ``packed`` in layout ``fmt`` ('i2' or 't5'). Returns (out float32 [m, n], acc int32 [m, n])."""
    wq = unpack_fmt(packed, k, fmt).astype(np.int32)
    acc = xq[:, :k].astype(np.int32) @ wq.T
    g = gamma.astype(np.float32).reshape(1, -1)
    combined = g / x_scale.astype(np.float32).reshape(-1, 1)
    out = acc.astype(np.float32) * combined
    if bias is not None:
        out = out + bias.astype(np.float32).reshape(1, -1)
    return out.astype(np.float32, copy=False), acc.astype(np.int32, copy=False)


def matmul_float(
    x: np.ndarray, packed: np.ndarray, k: int, gamma: np.ndarray, bias: Optional[np.ndarray] = None,
    fmt: str = "i2",
) -> np.ndarray:
    """Float path: out = gamma * (x @ W_q^T) + bias, float32 result (computed in float64)."""
    wq = unpack_fmt(packed, k, fmt).astype(np.float64)
    out = (x.astype(np.float64) @ wq.T) * gamma.astype(np.float64).reshape(1, -1)
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(1, -1)
    return out.astype(np.float32)


# ---- interchange formats (additions for fastemb.TernaryWeight's converters) -------------------
# Codes are c = w + 1 in {0, 1, 2} in every format below; c = 3 is invalid everywhere.

HF_VALUES_PER_ITEM = 4  # Hugging Face transformers' BitNet: 4 codes per uint8, packed along the output dim
QK_K = 256  # llama.cpp super-block size (TQ1_0 / TQ2_0)
TQ2_0_BYTES = QK_K // 4 + 2  # 64 bytes of codes + f16 d
TQ1_0_BYTES = (QK_K - 4 * QK_K // 64) // 5 + QK_K // 64 + 2  # 48 + 4 bytes of base-3 codes + f16 d = 54


def hf_bitnet_pack(wq: np.ndarray) -> np.ndarray:
    """int8 ternary [n, k] -> uint8 [ceil(n / 4), k] as transformers' ``pack_weights``: with
    R = ceil(n / 4), row r of the result holds output rows r, R + r, 2R + r, 3R + r at bits
    0-1, 2-3, 4-5, 6-7 (code = w + 1). Slots past row n - 1 stay 0 (as transformers leaves them)."""
    n, k = wq.shape
    rows = (n + HF_VALUES_PER_ITEM - 1) // HF_VALUES_PER_ITEM
    packed = np.zeros((rows, k), dtype=np.uint8)
    codes = (wq.astype(np.int16) + 1).astype(np.uint8)
    for i in range(HF_VALUES_PER_ITEM):
        start, end = i * rows, min((i + 1) * rows, n)
        if start < end:
            packed[: end - start] |= codes[start:end] << np.uint8(2 * i)
    return packed


def hf_bitnet_codes(packed: np.ndarray) -> np.ndarray:
    """uint8 [R, k] -> uint8 codes [4 R, k] as transformers' ``unpack_weights`` orders them
    (row i R + r from bits 2i of row r), before subtracting 1."""
    shifts = np.arange(0, 8, 2, dtype=np.uint8).reshape(HF_VALUES_PER_ITEM, 1, 1)
    codes = (packed[None, :, :] >> shifts) & np.uint8(3)
    return codes.reshape(HF_VALUES_PER_ITEM * packed.shape[0], packed.shape[1])


def tq2_0_encode(wq: np.ndarray, d: np.ndarray) -> np.ndarray:
    """llama.cpp TQ2_0 rows: wq int8 [n, k] (k % 256 == 0), d float16 [n, k / 256] (one scale per
    block) -> uint8 [n, k / 256 * 66]. Block layout: 64 bytes qs then d (f16, little endian);
    within each half of 128 weights, byte j (0..31) of that half's 32 bytes holds weight
    128 h + 32 s + j at bits 2s (code = w + 1)."""
    n, k = wq.shape
    nb = k // QK_K
    codes = (wq.astype(np.int16) + 1).astype(np.uint8).reshape(n, nb, 2, 4, 32)
    qs = codes[:, :, :, 0] | (codes[:, :, :, 1] << 2) | (codes[:, :, :, 2] << 4) | (codes[:, :, :, 3] << 6)
    d16 = np.ascontiguousarray(d, dtype="<f2").reshape(n, nb, 1).view(np.uint8)
    return np.concatenate([qs.reshape(n, nb, 64), d16], axis=2).reshape(n, nb * TQ2_0_BYTES)


def tq2_0_decode(data: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of tq2_0_encode: uint8 [n, nb * 66] -> (codes uint8 [n, nb * 256], d float16 [n, nb])."""
    n = data.shape[0]
    blocks = data.reshape(n, -1, TQ2_0_BYTES)
    nb = blocks.shape[1]
    qs = blocks[:, :, :64].reshape(n, nb, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    codes = ((qs >> shifts) & np.uint8(3)).reshape(n, nb * QK_K)
    d = np.ascontiguousarray(blocks[:, :, 64:]).view("<f2").reshape(n, nb).astype(np.float16)
    return codes, d


_POW3_5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)


def tq1_0_encode(wq: np.ndarray, d: np.ndarray) -> np.ndarray:
    """llama.cpp TQ1_0 rows: wq int8 [n, k] (k % 256 == 0), d float16 [n, k / 256] -> uint8
    [n, k / 256 * 54]. A block: qs (48 bytes) then qh (4 bytes) then d (f16). Base-3 digits of
    codes c = w + 1, most significant first, five per byte: byte j of qs[0:32] holds weights
    j + 32 t (t = 0..4), byte j of qs[32:48] holds weights 160 + j + 16 t, byte j of qh holds
    weights 240 + j + 4 t (t = 0..3, the fifth digit 0). A byte stores the base-3 value v (< 243)
    as ceil(v * 256 / 243), so that digit t is ((byte * 3^t mod 256) * 3) >> 8."""
    n, k = wq.shape
    nb = k // QK_K
    c = (wq.astype(np.int16) + 1).astype(np.uint16).reshape(n, nb, QK_K)
    v0 = (c[:, :, :160].reshape(n, nb, 5, 32) * _POW3_5.reshape(5, 1)).sum(axis=2)
    v1 = (c[:, :, 160:240].reshape(n, nb, 5, 16) * _POW3_5.reshape(5, 1)).sum(axis=2)
    v2 = (c[:, :, 240:].reshape(n, nb, 4, 4) * _POW3_5[:4].reshape(4, 1)).sum(axis=2)
    v = np.concatenate([v0, v1, v2], axis=2)  # [n, nb, 52], each < 243
    q = ((v * 256 + 242) // 243).astype(np.uint8)
    d16 = np.ascontiguousarray(d, dtype="<f2").reshape(n, nb, 1).view(np.uint8)
    return np.concatenate([q, d16], axis=2).reshape(n, nb * TQ1_0_BYTES)


def tq1_0_decode(data: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of tq1_0_encode: uint8 [n, nb * 54] -> (codes uint8 [n, nb * 256], d float16 [n, nb]).
    Bytes that no encoder writes decode to some digits in 0..2 (never 3)."""
    n = data.shape[0]
    blocks = data.reshape(n, -1, TQ1_0_BYTES)
    nb = blocks.shape[1]
    q = blocks[:, :, :52].astype(np.uint16)

    def digits(b: np.ndarray, count: int) -> np.ndarray:  # b [n, nb, w] -> [n, nb, count, w]
        p3 = (3 ** np.arange(count, dtype=np.uint16)).reshape(1, 1, count, 1)
        return (((b[:, :, None, :] * p3) & 0xFF) * 3) >> 8

    c0 = digits(q[:, :, :32], 5).reshape(n, nb, 160)
    c1 = digits(q[:, :, 32:48], 5).reshape(n, nb, 80)
    c2 = digits(q[:, :, 48:52], 4).reshape(n, nb, 16)
    codes = np.concatenate([c0, c1, c2], axis=2).astype(np.uint8).reshape(n, nb * QK_K)
    d = np.ascontiguousarray(blocks[:, :, 52:]).view("<f2").reshape(n, nb).astype(np.float16)
    return codes, d
