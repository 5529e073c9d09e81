"""Reading row-chunked arrays from disk into ``fastemb.dask`` without shipping data in the task graph.

``da.from_array(np.load(path, mmap_mode="r"))`` looks out of core but is not on a cluster: Dask treats the
memory map as one object of the graph and the distributed scheduler sends its whole contents to the
workers (a 1 GB file gave "Sending large graph of size 0.95 GiB" and 3 GB on one worker).
:func:`from_npy` puts only the file name, shape and dtype in the graph; each task reads its own rows
when it runs, on the worker, so memory stays at one chunk per task. The path must be visible to the
workers (a local disk for a LocalCluster, a shared file system otherwise). ``da.from_zarr`` does the
same for zarr stores.
"""
from __future__ import annotations

import os
from typing import Any, Tuple

import numpy as np
import dask.array as da

from ..binary_index import _npy_layout

LOADERS = ("pread", "mmap")


def _read_into(fd: int, buf: np.ndarray, offset: int) -> None:
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read at byte {offset + done}")
        done += got


class NpyRows:
    """A picklable array-like over the rows of a C-ordered ``.npy`` file (for ``da.from_array``).

    It holds the file name, shape and dtype only (a few hundred bytes in the task graph); each
    ``[r0:r1, ...]`` reads those rows when a task runs: into a fresh buffer (``loader="pread"``) or as a
    slice of a memory map opened for that call (``loader="mmap"``: its pages count in the worker's RSS
    while the task holds them).
    """

    def __init__(self, path: Any, loader: str = "pread"):
        if loader not in LOADERS:
            raise ValueError(f"loader must be 'pread' or 'mmap', got {loader!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.loader = loader
        try:
            shape, fortran, dtype, offset = _npy_layout(self.path)
        except OSError as exc:
            raise ValueError(f"path: cannot read {self.path!r} ({exc})") from exc
        except ValueError as exc:
            raise ValueError(f"path: {self.path!r}: {exc}") from exc
        if fortran and len(shape) > 1:
            raise ValueError(f"path: {self.path!r} holds a Fortran-ordered array; rows must be contiguous")
        if len(shape) < 1:
            raise ValueError(f"path: {self.path!r} holds a 0-d array; rows are needed")
        if dtype.hasobject:
            raise ValueError(f"path: {self.path!r} holds Python objects; not readable without pickle")
        self.shape: Tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.ndim = len(self.shape)
        st = os.stat(self.path)
        self._stamp = (st.st_size, st.st_mtime_ns)
        need = self.offset + self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        if st.st_size < need:
            raise ValueError(f"path: {self.path!r} is truncated ({st.st_size} bytes, the header needs {need})")

    def __dask_tokenize__(self):
        return ("fastemb.dask.NpyRows", self.path, self.loader, self._stamp)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        rows = key[0]
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise IndexError(f"NpyRows takes a contiguous row slice, got {key!r}")
        r0, r1, _ = rows.indices(self.shape[0])
        r1 = max(r0, r1)
        rest = tuple(key[1:])
        if self.loader == "mmap":
            out = np.load(self.path, mmap_mode="r")[r0:r1]
        else:
            out = np.empty((r1 - r0,) + self.shape[1:], self.dtype)
            if out.nbytes:
                row_bytes = out.nbytes // (r1 - r0)
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    _read_into(fd, out, self.offset + r0 * row_bytes)
                finally:
                    os.close(fd)
        return out[(slice(None),) + rest] if rest else out


def from_npy(path: Any, chunks: int, loader: str = "pread") -> "da.Array":
    """A dask array over a ``.npy`` file, chunked by rows (``chunks`` rows per chunk, whole rows), that
    reads each chunk on the worker running its task: nothing but the path travels in the graph.

    Args:
        path: a C-ordered ``.npy`` file (any dtype without Python objects), visible to the workers.
        chunks: rows per chunk (>= 1); the other axes are one chunk each (codes keep whole rows).
        loader: ``'pread'`` (default: read into a fresh buffer) or ``'mmap'`` (a memory map per task).
    """
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or int(chunks) < 1:
        raise ValueError(f"chunks must be a positive int (rows per chunk), got {chunks!r}")
    reader = NpyRows(path, loader)
    return da.from_array(reader, chunks=(int(chunks),) + reader.shape[1:], asarray=False, fancy=False, lock=False,
                         inline_array=True, meta=np.empty((0,) * reader.ndim, reader.dtype))
