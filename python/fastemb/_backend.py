"""Loads the native modules and picks the backend.

``fastemb._C`` (CPU kernels) is used when it imports, unless ``FASTEMB_BACKEND=numpy`` forces the
pure-NumPy fallback; ``FASTEMB_BACKEND=native`` makes a missing native module an error.
``fastemb._C_cuda`` is imported lazily, on first CUDA use. ``FASTEMB_NATIVE_MODULE=<path to a _C
extension file>`` loads the CPU module from that file instead (used by the sanitizer CI job).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

_REQUESTED = os.environ.get("FASTEMB_BACKEND", "auto").strip().lower() or "auto"
if _REQUESTED not in ("auto", "native", "numpy"):
    raise ImportError(f"FASTEMB_BACKEND must be 'auto', 'native' or 'numpy', got {_REQUESTED!r}")


def _check_num_threads_env() -> None:
    """Warns when FASTEMB_NUM_THREADS is set but not a thread count. The native pool reads the
    variable itself (src/cpp/common/thread_pool.cpp: strtol, the whole value, >= 1) and silently falls
    back to all hardware threads otherwise; this mirrors that test so the fallback is no longer
    silent. A warning, not an ImportError: the value only tunes speed, the fallback is a working
    default, and such variables are often set machine-wide where a hard failure would break every
    program that imports fastemb (an invalid FASTEMB_BACKEND, which changes results, stays an error)."""
    import re
    import warnings

    value = os.environ.get("FASTEMB_NUM_THREADS")
    if not value:  # unset or empty: the default, as in the C++ pool
        return
    if re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", value) and int(value) >= 1:
        return
    uses = f"fastemb uses all {_C.get_num_threads()} hardware threads" if _C is not None else "the NumPy fallback is in use"
    warnings.warn(f"FASTEMB_NUM_THREADS={value!r} is not a positive integer and is ignored ({uses}); "
                  "set FASTEMB_NUM_THREADS=<n >= 1> or call fastemb.set_num_threads(n)", RuntimeWarning, stacklevel=2)


def _load_native_override(path: str) -> Any:
    """Loads the CPU module from a file instead of the installed one (FASTEMB_NATIVE_MODULE): the
    sanitizer CI job tests an ASan/UBSan build of ``_C`` without reinstalling the package."""
    import importlib.machinery
    import importlib.util
    import sys

    loader = importlib.machinery.ExtensionFileLoader(f"{__package__}._C", path)
    spec = importlib.util.spec_from_file_location(f"{__package__}._C", path, loader=loader)
    if spec is None:
        raise ImportError(f"FASTEMB_NATIVE_MODULE={path!r} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[f"{__package__}._C"] = module
    return module


_C: Optional[Any] = None
_C_import_error: Optional[BaseException] = None
_NATIVE_OVERRIDE = os.environ.get("FASTEMB_NATIVE_MODULE", "").strip()
if _REQUESTED != "numpy":
    try:
        if _NATIVE_OVERRIDE:
            _C = _load_native_override(_NATIVE_OVERRIDE)
        else:
            from . import _C  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the build
        _C_import_error = exc
        if _REQUESTED == "native":
            raise ImportError(f"FASTEMB_BACKEND=native but fastemb._C failed to import: {exc}") from exc

if _C is not None and _C.active_isa_error():
    raise ImportError(_C.active_isa_error())

_check_num_threads_env()

_C_cuda: Optional[Any] = None
_C_cuda_error: Optional[BaseException] = None
_C_cuda_tried = False

# Dtype codes shared with the C++ and CUDA kernels.
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}


def native() -> Optional[Any]:
    """The CPU native module, or None when the NumPy fallback is in use."""
    return _C


def native_isas() -> list:
    """The CPU kernel variants this machine can run (empty with the NumPy fallback)."""
    return list(_C.supported_isas()) if _C is not None else []


def backend_name() -> str:
    return "native" if _C is not None else "numpy"


def cuda_module() -> Optional[Any]:
    """The CUDA module, or None when it was not built or does not import."""
    global _C_cuda, _C_cuda_error, _C_cuda_tried
    if not _C_cuda_tried:
        _C_cuda_tried = True
        try:
            from . import _C_cuda as mod  # type: ignore[attr-defined]

            _C_cuda = mod
        except ImportError as exc:
            _C_cuda_error = exc
    return _C_cuda


def address(array: Any) -> int:
    """Data address of a NumPy array or torch tensor (0 for None), for the native kernels.

    A NumPy array whose data or strides are not a multiple of its item size is refused: the kernels
    load its elements as typed values, undefined behaviour at such addresses. Inputs reach this point
    through ``native_array`` (or a buffer fastemb allocated), which copies such arrays; this check
    makes a path that forgot to do so fail loudly instead of reading misaligned memory."""
    if array is None:
        return 0
    if isinstance(array, np.ndarray):
        if _array_address is not None:
            return _array_address(array)  # the same check, in C++
        if not array.flags.aligned:
            raise ValueError(f"internal error: a misaligned {array.dtype} array reached the native kernels "
                             "(fastemb should have copied it; please report this)")
        return int(array.ctypes.data)
    ptr = int(array.data_ptr())  # a torch tensor
    if ptr % array.element_size() and array.numel():
        raise ValueError(f"internal error: a misaligned {array.dtype} tensor reached the native kernels "
                         "(fastemb should have copied it; please report this)")
    return ptr


_array_address = getattr(_C, "array_address", None)  # None: the NumPy fallback, or a module built before it


def native_array(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a C-contiguous, aligned NumPy array (of ``dtype`` when given), copied only when needed.

    ``np.ascontiguousarray`` keeps a contiguous array that starts at an address that is not a multiple of
    its item size (``np.frombuffer`` at an odd offset, or buffers deserialized by ``distributed``); the
    native kernels may not read such arrays, so every input passed to them goes through here."""
    return np.require(a, dtype=dtype, requirements=("C", "A"))


def native_tensor(t: Any) -> Any:
    """A torch tensor as the kernels read it: contiguous, its data starting at a multiple of its element size
    (``torch.from_numpy`` / ``torch.frombuffer`` of a buffer at an odd offset is not); copied only when needed."""
    t = t.contiguous()
    if t.numel() and t.data_ptr() % t.element_size():
        t = t.clone()  # a new allocation: aligned
    return t


def aligned_view(raw: np.ndarray, shape: Any, dtype: Any = np.float32, align: int = 64) -> np.ndarray:
    """An array of ``shape`` / ``dtype`` inside the uint8 buffer ``raw`` (at least ``align`` bytes larger than
    the array), starting on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_empty(shape: Any, dtype: Any = np.float32, align: int = 64) -> np.ndarray:
    """``np.empty`` whose data starts on an ``align``-byte boundary. NumPy's large buffers start 16 bytes
    past a page, so every 512-byte row of a [N, 128] float32 matrix would straddle 9 cache lines and
    each 64-byte load two of them; the FastRP gathers ran 1.6x slower on such rows."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return aligned_view(np.empty(nbytes + align, np.uint8), shape, dtype, align)
