"""Node reordering for FastRP: renumber a graph's nodes so that neighbours sit close in memory.

A propagation step gathers one d-float row of the previous iterate per edge. When the node ids hide the
graph's locality (ids assigned at random, by insertion time or by hash, as in most real data), those gathers
land anywhere in an N x d matrix that does not fit in cache. Reverse Cuthill-McKee numbering puts the
neighbours of a node near it, so the gathers of consecutive rows hit the same cached window.

:func:`reorder_graph` returns a :class:`ReorderedGraph`, which :func:`fastemb.fastrp` accepts in place of the
graph. The embedding comes back in the original node order and is **the same bits** as on the original
graph: every row keeps its edges in their stored order (only the ids are renumbered), and the random
initial vector of a node is still generated from its original id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np

from .csr import Csr, _csr_arrays, _index_dtype, _int_array, as_graph
from .ops import permute_csr_native, rcm_order_native

METHODS = ("rcm", "degree")


@dataclass(frozen=True)
class ReorderedGraph:
    """A graph with its nodes renumbered (from :func:`reorder_graph`).

    Attributes:
        csr: the renumbered adjacency: row ``c`` is node ``order[c]``, its edges in their original stored order,
            the neighbour ids renumbered.
        order: int64 [N], ``order[c]`` = the original id of the node at position ``c``.
        inverse: int64 [N], ``inverse[v]`` = the position of original node ``v`` (``order[inverse] == arange(N)``).
        method: ``'rcm'``, ``'degree'`` or ``'given'``.
    """

    csr: Csr
    order: np.ndarray
    inverse: np.ndarray
    method: str

    @property
    def num_nodes(self) -> int:
        return self.csr.rows

    def bandwidth(self) -> Tuple[int, int]:
        """``(before, after)``: the largest ``|row - column|`` over the edges, in original and in new ids (a
        cheap look at how local the new numbering is; the mean gather distance matters more for speed)."""
        return _bandwidth(self.csr, self.order), _bandwidth(self.csr, None)


def _bandwidth(csr: Csr, order: Optional[np.ndarray]) -> int:
    if csr.indptr[-1] == 0:
        return 0
    rows = np.repeat(np.arange(csr.rows, dtype=np.int64), np.diff(csr.indptr))
    cols = csr.indices.astype(np.int64)
    if order is not None:
        rows, cols = order[rows], order[cols]
    return int(np.abs(rows - cols).max())


def reorder_graph(graph: Any, method: Union[str, Any] = "rcm", *, num_nodes: Optional[int] = None,
                  symmetrize: bool = False) -> ReorderedGraph:
    """Renumbers the nodes of ``graph`` for memory locality; pass the result to :func:`fastemb.fastrp` in place of
    the graph: the same embedding bits, in the original node order.

    Args:
        graph: as :func:`fastemb.fastrp`'s ``graph`` (scipy.sparse matrix, CSR tuple or edge list).
        method:
            * ``'rcm'`` (default): reverse Cuthill-McKee over the stored edges (fastemb's native code; scipy's
              ``reverse_cuthill_mckee`` without the native module). Pays when the graph has locality that its ids
              hide: meshes, road and geometric graphs, community-structured graphs.
            * ``'degree'``: by degree (stored entries per row), highest first, ties by id.
            * a permutation of ``range(N)`` (integer array): ``order[c]`` = the original node placed at ``c``.
        num_nodes, symmetrize: as :func:`fastemb.fastrp` (applied here; fastrp then takes them from the graph).

    Returns:
        A :class:`ReorderedGraph`, holding a renumbered copy of the graph (the memory of the CSR once more) and
        two int64 [N] vectors. Building it costs about a third of a FastRP run (native RCM on 1M nodes / 20M
        edges: 0.35-0.46 s here), so it pays when the embedding is computed more than once on the same graph (a
        parameter or seed sweep) of a graph whose ids hide its locality. Random power-law graphs (Chung-Lu)
        have no locality to find: no gain there. BENCHMARKS.md ("Node reordering") has the measurements.
    """
    csr = as_graph(graph, num_nodes, symmetrize)
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} or a permutation array, got {method!r}")
        order = rcm_order(csr) if method == "rcm" else degree_order(csr)
    else:
        order = _check_permutation(method, csr.rows)
        method = "given"
    return permute_graph(csr, order, method)


def degree_order(csr: Csr) -> np.ndarray:
    """Node ids by stored entries per row, highest first, ties by lower id."""
    return np.argsort(-np.diff(csr.indptr), kind="stable").astype(np.int64)


def rcm_order(csr: Csr) -> np.ndarray:
    """Reverse Cuthill-McKee order, breadth first over the stored edges: a row's out-neighbours, the rows a
    propagation step gathers, end up near it. fastemb's native order (graph.h ``rcm_order``); scipy's without
    the native module."""
    order = rcm_order_native(csr)
    return order if order is not None else rcm_order_scipy(csr)


def rcm_order_scipy(csr: Csr) -> np.ndarray:
    """scipy's reverse Cuthill-McKee over the stored edges. (``symmetric_mode=False`` would first form A + A^T,
    +50% time on 1M nodes / 20M edges; an undirected graph gets the same order either way.)"""
    try:
        import scipy.sparse as sp
        from scipy.sparse.csgraph import reverse_cuthill_mckee
    except ImportError as e:
        raise ImportError("reorder_graph(method='rcm') without fastemb's native module needs scipy (pip install "
                          "scipy); method='degree' or an explicit permutation work without it") from e
    n = csr.rows
    if n == 0:  # (scipy's raises on an empty matrix)
        return np.zeros(0, np.int64)
    pattern = sp.csr_matrix((np.ones(csr.indices.shape[0], np.int8), csr.indices, csr.indptr), shape=(n, n))
    return np.asarray(reverse_cuthill_mckee(pattern, symmetric_mode=True), dtype=np.int64)


def _check_permutation(order: Any, n: int) -> np.ndarray:
    order = _int_array("method (a permutation)", order)
    if order.shape[0] != n:
        raise ValueError(f"method: a permutation must have one entry per node ({n}), got {order.shape[0]}")
    seen = np.zeros(n, dtype=bool)
    if n:
        lo, hi = int(order.min()), int(order.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"method: permutation entry {lo if lo < 0 else hi} is out of range [0, {n})")
        seen[order] = True
    if not seen.all():
        raise ValueError(f"method: not a permutation of range({n}) (node {int(np.argmin(seen))} is missing)")
    return order.astype(np.int64)


def take_segments(indptr: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For rows ``order`` of a CSR layout: ``(new indptr, positions)``, the positions of their entries in the
    old arrays, row after row in ``order``, each row's entries in stored order."""
    counts = np.diff(indptr)[order]
    new_indptr = np.zeros(order.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=new_indptr[1:])
    positions = np.arange(int(new_indptr[-1]), dtype=np.int64)
    positions += np.repeat(indptr[:-1][order] - new_indptr[:-1], counts)
    return new_indptr, positions


def take_csr_rows(csr: Csr, order: np.ndarray, renumber: Optional[np.ndarray] = None) -> Csr:
    """Rows ``order`` of ``csr``, entries in stored order; ``renumber``: new column ids (``renumber[old]``)."""
    indptr, positions = take_segments(csr.indptr, order)
    indices = csr.indices[positions]
    if renumber is not None:
        indices = renumber[indices].astype(_index_dtype(csr.cols))
    return Csr(indptr, np.ascontiguousarray(indices), None if csr.data is None else csr.data[positions],
               order.shape[0], csr.cols, None if csr.counts is None else csr.counts[order])


def permute_graph(csr: Csr, order: np.ndarray, method: str = "given") -> ReorderedGraph:
    """``csr`` with node ``order[c]`` renamed ``c`` (rows and column ids), each row's edges in stored order."""
    if csr.rows != csr.cols:
        raise ValueError(f"graph: the adjacency matrix must be square, got {csr.rows} x {csr.cols}")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.shape[0], dtype=np.int64)
    renumbered = permute_csr_native(csr, order, inverse, _index_dtype(csr.cols))
    if renumbered is None:
        renumbered = take_csr_rows(csr, order, inverse)
    for a in (renumbered.indptr, renumbered.indices, renumbered.data, renumbered.counts, order, inverse):
        if a is not None:
            a.flags.writeable = False  # fastrp trusts them after check_reordered; keep them as built
    return ReorderedGraph(renumbered, order, inverse, method)


def check_reordered(g: ReorderedGraph) -> ReorderedGraph:
    """``g`` checked before fastrp uses it (the class is public and its fields can be replaced): a valid square
    CSR, ``order`` a permutation and ``inverse`` its inverse. ValueError / TypeError name the field. O(N + nnz)."""
    csr = g.csr
    if not isinstance(csr, Csr):
        raise TypeError(f"graph.csr must be a fastemb.graph.Csr, got {type(csr).__name__}")
    n = int(csr.rows)
    if csr.cols != n:
        raise ValueError(f"graph.csr: the adjacency matrix must be square, got {csr.rows} x {csr.cols}")
    checked = _csr_arrays("graph.csr", csr.indptr, csr.indices, csr.data, n, n)
    if csr.counts is not None:
        counts = _int_array("graph.csr.counts", csr.counts)
        if counts.shape != (n,) or (n and counts.min() < 0):
            raise ValueError(f"graph.csr.counts must be {n} non-negative integers, got shape {counts.shape}")
        checked.counts = counts.astype(np.int64, copy=False)
    order, inverse = (_int_array(f"graph.{name}", a) for name, a in (("order", g.order), ("inverse", g.inverse)))
    if order.shape != (n,) or inverse.shape != (n,):
        raise ValueError(f"graph.order and graph.inverse must have {n} entries, got {order.shape} and {inverse.shape}")
    order, inverse = order.astype(np.int64, copy=False), inverse.astype(np.int64, copy=False)
    if n and (order.min() < 0 or order.max() >= n or not np.array_equal(inverse[order], np.arange(n))):
        raise ValueError("graph.order must be a permutation of range(N) and graph.inverse its inverse")
    return ReorderedGraph(checked, order, inverse, g.method)


def permute_table(table: Tuple[np.ndarray, np.ndarray], order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The sparse lists of R rows ``order`` (``ops.random_table`` layout: offsets [n + 1], lists)."""
    offsets, lists = table
    new_offsets, positions = take_segments(offsets, order)
    return new_offsets, lists[positions]
