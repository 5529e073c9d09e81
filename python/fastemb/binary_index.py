"""``BinaryIndex``: a flat index of SDC binary codes with optional exact float rescoring.

The binary-then-rescore pipeline (sentence-transformers ``rescore_multiplier`` practice) in one
object: candidates come from the fused SDC top-k over the codes (:func:`fastemb.sdc_topk`), then,
when the index keeps the float vectors, exact float dot products of the float query with the
candidates re-rank them. See shared/specs/sdc.md.

Codes made elsewhere go in with :meth:`BinaryIndex.from_codes`, e.g. sentence-transformers'
``quantize_embeddings(emb, precision="ubinary")`` (same bit order and padding as fastemb's 1-bit
codes), optionally with the float embeddings for rescoring; ``threshold_rule="gt"`` then
binarizes float queries exactly as ``ubinary`` does.

On-disk format (a directory, see :meth:`BinaryIndex.save`)::

    <path>/header.json   {"format": "fastemb.BinaryIndex", "version": 1, "dim", "bits", "ntotal",
                          "nbytes", "has_floats", "threshold_rule": "ge" | "gt",
                          "files": {"codes.npy": {"size": <bytes>, "crc32": <int>}, "floats.npy": ...}}
    <path>/codes.npy     uint8 [ntotal, bits, ceil(dim / 8)]
    <path>/floats.npy    float32 [ntotal, dim]   (only when has_floats)

Both arrays are plain ``.npy`` files, so :meth:`BinaryIndex.load` can memory-map them: the codes
are streamed by the top-k kernel and only the candidates' float rows are read when rescoring.

``files`` records each data file's size and the CRC-32 (``zlib.crc32``) of its whole content, npy
header included. :meth:`BinaryIndex.load` checks the sizes always and the checksums unless
``verify=False``. CRC-32 because it only has to catch accidental damage (truncated or partly
written files, disk or copy errors), not tampering: zlib's runs at about 4 GB/s here against
0.9 GB/s for ``hashlib.blake2b`` and 1.9 GB/s for sha1, so verifying a 1.5 GB float file costs
about 0.4 s. ``files`` was added without a version change (readers ignore unknown keys): indexes
saved before it have none and load without the size and checksum checks. ``threshold_rule`` was
added the same way: a header without it means ``"ge"`` (the only rule before it).
"""
from __future__ import annotations

import json
import mmap
import os
import zlib
from typing import Any, Optional, Tuple

import numpy as np

from .binary import _check_int, as_codes, binarize, check_dim, check_threshold_rule, sdc_topk

FORMAT_NAME = "fastemb.BinaryIndex"
FORMAT_VERSION = 1
_HEADER = "header.json"
_CODES = "codes.npy"
_FLOATS = "floats.npy"
_INT32_MIN = np.iinfo(np.int32).min
_NPY_MAGIC = b"\x93NUMPY"
_CRC_CHUNK = 16 << 20  # bytes read per zlib.crc32 call (zlib releases the GIL on large buffers)
# Rescoring gathers [queries, candidates, dim] floats; queries are processed in batches that keep
# that temporary (in float64) under about this many bytes: small enough to stay in the L2 cache.
_RESCORE_BATCH_BYTES = 2 << 20


def _file_crc32(fpath: str) -> int:
    """CRC-32 of a whole file, read in chunks (see the module docstring for why CRC-32)."""
    crc = 0
    buf = bytearray(_CRC_CHUNK)
    view = memoryview(buf)
    with open(fpath, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


def _npy_layout(fpath: str) -> Tuple[Tuple[int, ...], bool, np.dtype, int]:
    """Reads a ``.npy`` file's header: ``(shape, fortran_order, dtype, data offset)``. Raises
    ValueError with a plain reason (the caller adds the path) for an empty file, a file that is not
    ``.npy`` or a damaged header; never unpickles anything."""
    with open(fpath, "rb") as f:
        magic = f.read(len(_NPY_MAGIC) + 2)
        if not magic:
            raise ValueError("the file is empty")
        if len(magic) < len(_NPY_MAGIC) + 2 or not magic.startswith(_NPY_MAGIC):
            raise ValueError(f"not a .npy file (it starts with {magic[:8]!r}, not the NumPy magic {_NPY_MAGIC!r})")
        version = (magic[-2], magic[-1])
        if version == (1, 0):
            read_header = np.lib.format.read_array_header_1_0
        elif version == (2, 0):
            read_header = np.lib.format.read_array_header_2_0
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        try:
            shape, fortran, dtype = read_header(f)
        except Exception as exc:  # ValueError, SyntaxError, tokenize.TokenError, ...: numpy parses a literal
            raise ValueError(f"damaged .npy header ({type(exc).__name__}: {exc})") from None
        return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()


def _is_mapped(a: np.ndarray) -> bool:
    """True when ``a`` views a memory map (np.memmap, or an ndarray whose base chain holds one)."""
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


class _Rows:
    """A growable row store: ``data[:n]`` is the content, capacity doubles on append.

    ``data`` may be a read-only memory map (after :meth:`BinaryIndex.load`); the first append then
    copies it into memory.
    """

    def __init__(self, row_shape: Tuple[int, ...], dtype: Any):
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.data = np.empty((0,) + self.row_shape, dtype=self.dtype)
        self.n = 0
        self.owned = True  # False while data is a loaded array (possibly a read-only memmap)

    @classmethod
    def wrap(cls, array: np.ndarray) -> "_Rows":
        rows = cls(array.shape[1:], array.dtype)
        rows.data = array
        rows.n = array.shape[0]
        rows.owned = False
        return rows

    def view(self) -> np.ndarray:
        return self.data[:self.n]  # leading-row slice of a C-contiguous array: C-contiguous

    def append(self, block: np.ndarray) -> None:
        need = self.n + block.shape[0]
        if not self.owned or need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0] if self.owned else need, 16)
            new = np.empty((cap,) + self.row_shape, dtype=self.dtype)
            new[:self.n] = self.data[:self.n]
            self.data = new
            self.owned = True
        self.data[self.n:need] = block
        self.n = need


class BinaryIndex:
    """Flat index of ``bits``-bit SDC codes of ``dim``-dimensional embeddings.

    Args:
        dim: embedding dimension (>= 1).
        bits: bit planes per dimension, 1..4 (``bits=1`` is a plain Hamming index).
        threshold_rule: how float vectors (added rows and queries) are binarized:
            ``fastemb.binarize(x, bits, threshold_rule=...)``; "ge" (default, ``x >= 0`` -> 1) or
            "gt" (``x > 0`` -> 1, as sentence-transformers ``ubinary``).

    Float vectors given to :meth:`add` are binarized with :func:`fastemb.binarize` and also kept
    as float32 for rescoring; codes given to :meth:`add` are stored as they are, and an index that
    holds any such rows cannot rescore (``has_floats`` is False). :meth:`from_codes` builds an
    index from existing codes, with or without their float vectors.

    Example::

        index = fastemb.BinaryIndex(384, bits=2)
        index.add(corpus_embeddings)                  # float32 [n, 384]
        scores, ids = index.search(queries, k=10, rescore=4)

        # sentence-transformers ubinary codes, float embeddings kept for rescoring
        codes = quantize_embeddings(corpus_embeddings, precision="ubinary")   # uint8 [n, 48]
        index = fastemb.BinaryIndex.from_codes(codes, floats=corpus_embeddings, threshold_rule="gt")
        scores, ids = index.search(query_embeddings, k=10, rescore=4)
    """

    def __init__(self, dim: int, bits: int = 1, threshold_rule: str = "ge"):
        dim = _check_int("dim", dim)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        bits = _check_int("bits", bits)
        if not 1 <= bits <= 4:
            raise ValueError(f"bits must be in 1..4, got {bits}")
        L = 2 ** bits - 1
        if dim * L * L > np.iinfo(np.int32).max:
            raise ValueError(f"dim={dim} is too large for {bits}-bit codes: SDC scores would overflow int32")
        self.dim = dim
        self.bits = bits
        self.threshold_rule = check_threshold_rule(threshold_rule)
        self.nbytes = (dim + 7) // 8
        self._codes = _Rows((bits, self.nbytes), np.uint8)
        self._floats: Optional[_Rows] = _Rows((dim,), np.float32)

    # ---- properties ------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return self._codes.n

    def __len__(self) -> int:
        return self._codes.n

    @property
    def has_floats(self) -> bool:
        """True when every row's float vector is stored, i.e. :meth:`search` can rescore."""
        return self._floats is not None

    @property
    def codes(self) -> np.ndarray:
        """The stored codes, uint8 ``[ntotal, bits, ceil(dim / 8)]`` (a view: do not modify)."""
        return self._codes.view()

    @property
    def floats(self) -> Optional[np.ndarray]:
        """The stored float32 vectors ``[ntotal, dim]`` (a view), or None when not kept."""
        return None if self._floats is None else self._floats.view()

    def __repr__(self) -> str:
        rule = "" if self.threshold_rule == "ge" else f", threshold_rule={self.threshold_rule!r}"
        return (f"BinaryIndex(dim={self.dim}, bits={self.bits}, ntotal={self.ntotal}, "
                f"has_floats={self.has_floats}{rule})")

    # ---- construction from existing codes ------------------------------------------------------

    @classmethod
    def from_codes(cls, codes: np.ndarray, dim: Optional[int] = None, floats: Optional[np.ndarray] = None,
                   bits: Optional[int] = None, threshold_rule: str = "ge", copy: bool = True) -> "BinaryIndex":
        """An index over codes made elsewhere, optionally with their float vectors for rescoring.

        Args:
            codes: uint8 ``[n, bits, nbytes]``, or ``[n, nbytes]`` for 1-bit codes such as
                sentence-transformers ``quantize_embeddings(emb, precision="ubinary")`` or faiss
                binary codes (``np.packbits`` big-endian bit order, first dimension = most
                significant bit of byte 0). Padding bits past ``dim`` never change a score.
            dim: true dimensions per plane; default ``floats.shape[1]`` when ``floats`` is given,
                else ``8 * nbytes``. Must satisfy ``8 * (nbytes - 1) < dim <= 8 * nbytes``.
            floats: optional real ``[n, dim]`` vectors, row ``i`` belonging to ``codes[i]``, kept as
                float32 so that :meth:`search` can rescore (``rescore > 1``). They are not
                re-binarized or compared with the codes. Must be finite.
            bits: optional check: the bit planes the codes must have (inferred from ``codes``).
            threshold_rule: how float queries (and float rows added later) are binarized, see
                :class:`BinaryIndex`; use "gt" for sentence-transformers ``ubinary`` codes.
            copy: True (default) copies the arrays into the index. False uses them in place (an
                ``np.memmap`` is then streamed, not read into memory) when ``codes`` is
                C-contiguous and ``floats`` is C-contiguous float32; other layouts and dtypes are
                still copied or converted once. The index then sees later writes to the arrays;
                a later :meth:`add` copies them.

        Raises:
            TypeError: ``codes`` not a uint8 ndarray, ``floats`` not a real ndarray, or a
                non-int ``dim`` / ``bits``, a non-bool ``copy``.
            ValueError: naming the argument: shapes that disagree (row counts, ``dim`` against
                ``nbytes`` or ``floats``, ``bits`` against ``codes``), non-finite ``floats``.
        """
        if not isinstance(codes, np.ndarray):
            raise TypeError(f"codes must be a numpy.ndarray of uint8 codes, got {type(codes).__name__}")
        if not isinstance(copy, (bool, np.bool_)):
            raise TypeError(f"copy must be a bool, got {type(copy).__name__}")
        given_shape = codes.shape
        codes3 = as_codes("codes", codes)  # dtype / ndim / axis checks; 2-D -> [n, 1, nbytes]
        n, cbits, nbytes = codes3.shape
        if bits is not None:
            bits = _check_int("bits", bits)
            if bits != cbits:
                layout = "[n, nbytes] (1 bit)" if len(given_shape) == 2 else "[n, bits, nbytes]"
                raise ValueError(f"bits={bits} does not match codes of shape {tuple(given_shape)}, read as "
                                 f"{layout}: {cbits} bit plane(s)")
        if floats is not None:
            if not isinstance(floats, np.ndarray):
                raise TypeError(f"floats must be a numpy.ndarray or None, got {type(floats).__name__}")
            if floats.dtype.kind != "f":
                raise TypeError(f"floats must be a floating-point array, got dtype {floats.dtype}")
            if floats.ndim != 2:
                raise ValueError(f"floats must be 2-D [n, dim], got shape {floats.shape}")
            if floats.shape[0] != n:
                raise ValueError(f"floats has {floats.shape[0]} rows but codes has {n}: row i of floats must "
                                 "be the float vector of codes[i]")
            fdim = floats.shape[1]
            if dim is None:
                if not 8 * (nbytes - 1) < fdim <= 8 * nbytes:
                    raise ValueError(f"floats has dim {fdim}, which does not fit codes with {nbytes} bytes per "
                                     f"plane (need {8 * (nbytes - 1) + 1} <= dim <= {8 * nbytes})")
                dim = fdim
            else:
                dim = check_dim(dim, nbytes)
                if dim != fdim:
                    raise ValueError(f"dim={dim} but floats has {fdim} columns")
        dim = check_dim(dim, nbytes)
        index = cls(dim, cbits, threshold_rule)
        f32 = None
        if floats is not None:
            # one conversion / copy at most (none with copy=False for C-contiguous float32)
            with np.errstate(over="ignore"):  # values past float32's range become inf, rejected below
                f32 = np.array(floats, dtype=np.float32, order="C", copy=True if copy else None)
            if not np.isfinite(f32).all():
                raise ValueError("floats must be finite (found NaN or inf, or values that overflow float32)")
        if copy and np.may_share_memory(codes3, codes):  # as_codes made no copy of its own
            codes3 = codes3.copy()
        index._codes = _Rows.wrap(codes3)
        index._floats = None if f32 is None else _Rows.wrap(f32)
        if copy:  # the index owns these arrays: appends may grow them in place
            index._codes.owned = True
            if index._floats is not None:
                index._floats.owned = True
        return index

    # ---- adding ----------------------------------------------------------------------------------

    def _check_codes(self, name: str, codes: np.ndarray) -> np.ndarray:
        if codes.ndim == 2 and self.bits != 1:
            raise ValueError(f"{name}: 2-D codes [n, nbytes] are only valid for a 1-bit index; this index has "
                             f"bits={self.bits}, expected [n, {self.bits}, {self.nbytes}]")
        codes = as_codes(name, codes)
        if codes.shape[1] != self.bits or codes.shape[2] != self.nbytes:
            raise ValueError(f"{name}: expected codes of shape [n, {self.bits}, {self.nbytes}] "
                             f"(bits={self.bits}, dim={self.dim}), got {codes.shape}")
        return codes

    def _check_floats(self, name: str, x: np.ndarray) -> None:
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D [n, dim={self.dim}], got shape {x.shape}")
        if x.shape[1] != self.dim:
            raise ValueError(f"{name} has dim {x.shape[1]}, but the index has dim={self.dim}")

    def add(self, vectors_or_codes: np.ndarray) -> None:
        """Adds rows to the index; their ids continue from ``ntotal``.

        Args:
            vectors_or_codes: either floating-point vectors ``[n, dim]`` (binarized with
                ``fastemb.binarize(x, bits)``; a float32 copy is kept for rescoring), or uint8
                codes ``[n, bits, ceil(dim / 8)]`` (``[n, ceil(dim / 8)]`` for 1 bit), stored as
                given. Adding codes turns rescoring off for the whole index, since those rows
                have no float vectors.

        Copies the input (documented: the index owns its data). After :meth:`load`, the first
        ``add`` copies the memory-mapped arrays into memory.
        """
        x = vectors_or_codes
        if not isinstance(x, np.ndarray):
            raise TypeError(f"vectors_or_codes must be a numpy.ndarray (float vectors or uint8 codes), "
                            f"got {type(x).__name__}")
        if x.dtype == np.uint8:
            codes = self._check_codes("codes", x)
            self._codes.append(codes)
            self._floats = None  # these rows have no floats: rescoring is no longer possible
            return
        if x.dtype.kind != "f":
            raise TypeError(f"vectors_or_codes must be floating-point vectors [n, {self.dim}] or uint8 codes, "
                            f"got dtype {x.dtype}")
        self._check_floats("vectors", x)
        codes = binarize(x, bits=self.bits, threshold_rule=self.threshold_rule)  # validates NaN / inf
        self._codes.append(codes)
        if self._floats is not None:
            self._floats.append(x.astype(np.float32, copy=False))

    # ---- search ----------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, rescore: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query.

        Args:
            queries: float vectors ``[nq, dim]`` (binarized like the corpus), or uint8 codes
                ``[nq, bits, ceil(dim / 8)]`` (only with ``rescore == 1``).
            k: results per query, >= 1 (may exceed ``ntotal``: padded).
            rescore: >= 1. With ``rescore == 1`` the result is the SDC top-k. With ``rescore > 1``
                the SDC top ``k * rescore`` candidates are re-ranked by the exact dot product of
                the float query with their stored float vectors (accumulated in float64, rounded
                to float32, then sorted: descending score, ties to the lower id). Needs float
                queries and an index that stores floats.

        Returns:
            ``(scores, ids)``, both ``[nq, k]``: ids int64 (``-1`` past ``ntotal``); scores int32
            SDC scores (``INT32_MIN`` in padded slots) when ``rescore == 1``, float32 dot
            products (``-inf`` in padded slots) when ``rescore > 1``.
        """
        k = _check_int("k", k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rescore = _check_int("rescore", rescore)
        if rescore < 1:
            raise ValueError(f"rescore must be >= 1, got {rescore}")
        if not isinstance(queries, np.ndarray):
            raise TypeError(f"queries must be a numpy.ndarray (float vectors or uint8 codes), "
                            f"got {type(queries).__name__}")
        qfloat = None
        if queries.dtype == np.uint8:
            qcodes = self._check_codes("queries", queries)
            if rescore > 1:
                raise ValueError("rescore > 1 needs float queries (the exact scores are float dot products); "
                                 "got uint8 codes")
        elif queries.dtype.kind == "f":
            self._check_floats("queries", queries)
            qcodes = binarize(queries, bits=self.bits, threshold_rule=self.threshold_rule)
            qfloat = queries
        else:
            raise TypeError(f"queries must be floating-point vectors [nq, {self.dim}] or uint8 codes, "
                            f"got dtype {queries.dtype}")
        if rescore > 1 and self._floats is None:
            raise ValueError("this index cannot rescore: it holds rows added as codes, without float vectors "
                             "(use rescore=1, or add float vectors only)")

        nq, n = qcodes.shape[0], self.ntotal
        if rescore == 1:
            if n == 0:
                return (np.full((nq, k), _INT32_MIN, dtype=np.int32), np.full((nq, k), -1, dtype=np.int64))
            return sdc_topk(qcodes, self.codes, k, dim=self.dim)

        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        if n == 0 or nq == 0:
            return scores, ids
        kc = min(k * rescore, n)  # candidates per query (never more than the corpus)
        _, cand = sdc_topk(qcodes, self.codes, kc, dim=self.dim)
        floats = self.floats
        batch = max(1, _RESCORE_BATCH_BYTES // (8 * kc * self.dim))
        kk = min(k, kc)
        mapped = _is_mapped(floats)
        for a in range(0, nq, batch):
            c = cand[a:a + batch]  # [b, kc], all valid ids since kc <= n
            if mapped:  # sorted, deduplicated reads: kind to a memory map that is not in the page cache
                uniq, inverse = np.unique(c, return_inverse=True)
                rows = np.asarray(floats[uniq], dtype=np.float64)[inverse.reshape(c.shape)]  # [b, kc, dim]
            else:  # in memory: one direct gather (np.unique's sort cost 3-4x the whole rescoring)
                rows = floats[c].astype(np.float64)  # [b, kc, dim], the same values as above
            q = np.asarray(qfloat[a:a + batch], dtype=np.float64)
            s = np.einsum("bcd,bd->bc", rows, q).astype(np.float32)
            # last key is primary: score descending, then id ascending
            order = np.lexsort((c, -s), axis=-1)[:, :kk]
            scores[a:a + batch, :kk] = np.take_along_axis(s, order, axis=1)
            ids[a:a + batch, :kk] = np.take_along_axis(c, order, axis=1)
        return scores, ids

    # ---- persistence -----------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Writes the index to the directory ``path`` (created if missing; existing index files in
        it are replaced). Each file is written under a temporary name and then renamed, so saving
        over the directory a memory-mapped index was loaded from is safe. The header records each
        data file's size and CRC-32, which :meth:`load` checks."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"path {path!r} exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dim": self.dim, "bits": self.bits,
                  "nbytes": self.nbytes, "ntotal": self.ntotal, "has_floats": self.has_floats,
                  "threshold_rule": self.threshold_rule}

        files = header["files"] = {}

        def write_npy(name: str, array: np.ndarray) -> None:
            tmp = os.path.join(path, name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            # read back from the page cache: the checksum covers the bytes as written, npy header included
            files[name] = {"size": os.path.getsize(tmp), "crc32": _file_crc32(tmp)}
            os.replace(tmp, os.path.join(path, name))

        write_npy(_CODES, self.codes)
        if self.has_floats:
            write_npy(_FLOATS, self.floats)
        elif os.path.exists(os.path.join(path, _FLOATS)):
            os.remove(os.path.join(path, _FLOATS))
        tmp = os.path.join(path, _HEADER + ".tmp")
        with open(tmp, "w") as f:
            json.dump(header, f, indent=1)
        os.replace(tmp, os.path.join(path, _HEADER))  # the header last: it marks a complete save

    @classmethod
    def load(cls, path: str, mmap: bool = True, verify: bool = True) -> "BinaryIndex":
        """Reads an index written by :meth:`save`.

        Args:
            path: the directory given to :meth:`save`.
            mmap: memory-map the codes and floats read-only (default) instead of reading them
                into memory. Searching streams the mapped codes; rescoring reads only the
                candidates' float rows. A later :meth:`add` copies the arrays into memory.
            verify: compare each data file's CRC-32 with the one the header recorded at save time
                (default). This reads every byte once (about 4 GB/s when the files are in the page
                cache); ``verify=False`` skips it, e.g. to open a huge memory-mapped index without
                reading it. The cheap checks (npy headers, shapes, dtypes, file sizes) run either
                way. Indexes saved before checksums were recorded have none: they load without the
                checksum and size checks, whatever ``verify`` says.

        Raises:
            ValueError: naming the file: missing files, an unreadable or inconsistent header, an
                unknown format or version, a data file that is empty, not ``.npy``, truncated, or
                whose checksum does not match, or arrays that disagree with the header.
        """
        path = os.fspath(path)
        hpath = os.path.join(path, _HEADER)
        if not os.path.isfile(hpath):
            raise ValueError(f"{path!r} is not a saved BinaryIndex (missing {_HEADER})")
        try:
            with open(hpath, "rb") as f:
                header = json.loads(f.read())  # bytes: json detects the encoding, bad bytes raise here
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{hpath!r}: unreadable header ({type(exc).__name__}: {exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise ValueError(f"{hpath!r}: not a {FORMAT_NAME} header")
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{hpath!r}: unsupported format version {header.get('version')!r} "
                             f"(this fastemb reads version {FORMAT_VERSION})")
        try:
            dim, bits, ntotal = int(header["dim"]), int(header["bits"]), int(header["ntotal"])
            has_floats = bool(header["has_floats"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{hpath!r}: incomplete header ({type(exc).__name__}: {exc})") from exc
        try:
            index = cls(dim, bits, header.get("threshold_rule", "ge"))  # absent before the option: "ge"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{hpath!r}: invalid header ({exc})") from exc
        if ntotal < 0 or header.get("nbytes", index.nbytes) != index.nbytes:
            raise ValueError(f"{hpath!r}: inconsistent header {header}")
        files = header.get("files")  # absent in indexes saved before checksums were recorded
        if files is not None and not isinstance(files, dict):
            raise ValueError(f"{hpath!r}: invalid header: 'files' must be an object, got {files!r}")
        mode = "r" if mmap else None

        def read(name: str, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
            fpath = os.path.join(path, name)
            if not os.path.isfile(fpath):
                raise ValueError(f"{path!r}: missing {name}")
            dtype = np.dtype(dtype)
            try:
                fshape, fortran, fdtype, offset = _npy_layout(fpath)
                size = os.path.getsize(fpath)
            except OSError as exc:
                raise ValueError(f"{fpath!r}: unreadable ({exc})") from exc
            except ValueError as exc:
                raise ValueError(f"{fpath!r}: {exc}") from None
            if fdtype != dtype or fshape != shape or fortran:
                raise ValueError(f"{fpath!r}: expected C-contiguous {dtype} {shape}, "
                                 f"got {'Fortran-ordered ' if fortran else ''}{fdtype} {fshape}")
            need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if size != need:
                raise ValueError(f"{fpath!r}: {'truncated' if size < need else 'trailing bytes'}: the file has "
                                 f"{size} bytes, its npy header describes {need}")
            if files is not None:
                record = files.get(name)
                try:
                    want_size, want_crc = int(record["size"]), int(record["crc32"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{hpath!r}: invalid header: no size and crc32 for {name} "
                                     f"in 'files' ({exc!r})") from exc
                if size != want_size:
                    raise ValueError(f"{fpath!r}: the file has {size} bytes, but {_HEADER} recorded {want_size} "
                                     "(damaged, or not the file saved with this header)")
                if verify:
                    try:
                        crc = _file_crc32(fpath)
                    except OSError as exc:
                        raise ValueError(f"{fpath!r}: unreadable ({exc})") from exc
                    if crc != want_crc:
                        raise ValueError(f"{fpath!r}: checksum mismatch (CRC-32 {crc:#010x}, {_HEADER} recorded "
                                         f"{want_crc:#010x}): the file is damaged or not the one saved with this "
                                         "header")
            try:
                arr = np.load(fpath, mmap_mode=mode, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise ValueError(f"{fpath!r}: unreadable ({exc})") from exc
            return arr  # dtype, shape and order were checked on its npy header above

        index._codes = _Rows.wrap(read(_CODES, (ntotal, bits, index.nbytes), np.uint8))
        index._floats = _Rows.wrap(read(_FLOATS, (ntotal, dim), np.float32)) if has_floats else None
        return index
