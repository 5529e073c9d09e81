"""fastemb: fast embedding kernels.

C++ (SIMD with run-time ISA dispatch, its own thread pool) and CUDA kernels behind a thin NumPy
API, with a pure-NumPy fallback. Torch ops (autograd, torch.compile) are in ``fastemb.torch``,
imported only on use: importing ``fastemb`` never imports torch.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from . import _backend
from .binary import binarize, hamming, pack_levels, sdc_cosine, sdc_scores, sdc_topk, unpack_codes
from .binary_index import BinaryIndex
from .centroid import centroid_aggregate
from .graph import ReorderedGraph, fastrp, reorder_graph, sparse_random_projection
from .multivector import maxsim, maxsim_codes, maxsim_topk, muvera_fde
from .ternary import TernaryWeight, quantize_activations, quantize_ternary, ternary_matmul

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BinaryIndex",
    "centroid_aggregate",
    "fastrp",
    "get_num_threads",
    "info",
    "maxsim",
    "maxsim_codes",
    "maxsim_topk",
    "muvera_fde",
    "ReorderedGraph",
    "reorder_graph",
    "set_num_threads",
    "sparse_random_projection",
    "binarize",
    "hamming",
    "pack_levels",
    "sdc_cosine",
    "sdc_scores",
    "sdc_topk",
    "unpack_codes",
    "TernaryWeight",
    "quantize_activations",
    "quantize_ternary",
    "ternary_matmul",
]


def set_num_threads(n: int) -> None:
    """Sets the number of threads the native CPU kernels use (``FASTEMB_NUM_THREADS`` sets the
    initial value; default: all hardware threads). Safe while other threads run kernels."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    C = _backend.native()
    if C is not None:
        C.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the native CPU kernels use (1 with the NumPy fallback)."""
    C = _backend.native()
    return C.get_num_threads() if C is not None else 1


def _kernel_isas(C: Any) -> Dict[str, str]:
    """The variant each family runs: binary codes need AVX512-VPOPCNTDQ and ternary AVX512-VNNI for
    their avx512 variant (avx2 runs without them); the other families run the active ISA, except
    on ARM64 where centroid, graph and multivector have no dotprod variant and run the neon one.
    Ternary may name a sub-variant that starts with its ISA's name: avx2_vnni (avx2 kernels with
    AVX-VNNI vpdpbusd) or dotprod_i8mm."""
    if C is None:
        return {}
    isa = C.active_isa()
    shared = "neon" if isa == "dotprod" else isa
    return {"centroid": shared, "binary": C.binary_kernel_isa(""), "ternary": C.ternary_kernel_isa(""), "graph": shared,
            "multivector": shared}


def info() -> Dict[str, Any]:
    """Describes the build and the machine: version, backend, ISA, threads, CUDA."""
    C = _backend.native()
    result: Dict[str, Any] = {
        "version": __version__,
        "backend": _backend.backend_name(),
        "native_module": C is not None,
        "native_import_error": None if _backend._C_import_error is None else str(_backend._C_import_error),
        "isa": C.active_isa() if C is not None else None,
        "supported_isas": list(C.supported_isas()) if C is not None else [],
        "forced_isa": os.environ.get("FASTEMB_FORCE_ISA") or None,
        "cpu_features": dict(C.cpu_features()) if C is not None else {},
        "kernel_isas": _kernel_isas(C),
        "num_threads": get_num_threads(),
    }
    cuda = _backend.cuda_module()
    result["cuda_module"] = cuda is not None
    result["cuda_devices"] = cuda.device_count() if cuda is not None else 0
    return result
