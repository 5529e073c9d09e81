"""Task-graph building blocks of ``fastemb.dask``: row blocks of a dask array as Delayed objects and a
fixed-order tree reduction over them.

Why our own tree rather than ``dask.array.reduction``: the partial results here are not slices of
the input (a chunk's top-k ``[nq, k]``, a chunk's ``[K, D]`` group sums with counts), and the order in
which floating-point partials are added must be fixed by the chunking alone. The tree below is the
one ``dask.array.reduction`` builds (consecutive groups of ``split_every``, level after level), made
of ordinary Dask tasks: the scheduler still does all the moving, retries and recomputation.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

import dask
import dask.array as da
from dask.base import tokenize
from dask.delayed import Delayed

from ._checks import row_offsets


def row_blocks(a: da.Array) -> List[Delayed]:
    """The row chunks of ``a`` (one chunk along every other axis) as Delayed objects, in order."""
    blocks = a.to_delayed()
    return [blocks[(i,) + (0,) * (a.ndim - 1)] for i in range(a.numblocks[0])]


def placement_groups(a: da.Array, chunks: Sequence[Tuple[int, int, int]], client: Any) -> List[List[Tuple[int, int, int]]]:
    """``chunks`` (from :func:`nonempty`) grouped into tasks by where they already are.

    Each task of a distributed computation costs a few milliseconds of scheduler and worker round trips
    (about 3 ms per task on a 2-core box: 30 ms for 9 trivial tasks), which dominates calls of tens of
    milliseconds. When ``a``'s chunks are held by the cluster (persisted or scattered), the chunks held by
    the same worker are grouped, into as many groups as that worker has threads, so a call runs
    one task per worker thread instead of one per chunk; nothing moves between workers. Only for callers
    whose result does not depend on which chunks are combined (a merge by a total order). Chunks not held
    in memory (lazy inputs, e.g. read from disk), or without a client, stay one task each."""
    singles = [[c] for c in chunks]
    if client is None or len(chunks) <= 1:
        return singles
    keys = [(a.name, j) + (0,) * (a.ndim - 1) for j, _, _ in chunks]
    try:
        from distributed import futures_of

        held = {f.key: f for f in futures_of(a)}  # the chunks of a persisted / scattered array
        if not held:
            return singles
        who = client.who_has([held[k] for k in keys if k in held])
        nthreads = client.nthreads()
    except Exception:  # an old or unusual client: grouping is only an optimization
        return singles
    holders = []
    for key in keys:
        h = who.get(key, ()) if key in held else ()
        holders.append(h[0] if len(h) == 1 else None)  # replicated or missing: leave it alone
    # Per worker, its chunks (in order; any chunks: the callers' merges do not depend on which chunks go
    # together) into as many groups as it has threads; chunks with no single holder stay alone.
    by_worker: dict = {}
    groups: List[List[Tuple[int, int, int]]] = []
    for c, h in zip(chunks, holders):
        if h is None:
            groups.append([c])
        else:
            by_worker.setdefault(h, []).append(c)
    for h, run in by_worker.items():
        groups += _split_rows(run, min(len(run), max(1, int(nthreads.get(h, 1)))))
    groups.sort(key=lambda g: g[0][0])
    return groups


def _split_rows(run: List[Tuple[int, int, int]], parts: int) -> List[List[Tuple[int, int, int]]]:
    """``run`` cut into at most ``parts`` consecutive groups of about equal rows."""
    total = sum(c[2] for c in run)
    out: List[List[Tuple[int, int, int]]] = []
    cur: List[Tuple[int, int, int]] = []
    acc = 0
    for c in run:
        cur.append(c)
        acc += c[2]
        if len(out) + 1 < parts and acc * parts >= total * (len(out) + 1):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def nonempty(a: da.Array) -> List[Tuple[int, int, int]]:
    """``(block index, first row, rows)`` of each row chunk of ``a`` that holds at least one row.

    Empty chunks take no part in any reduction, so a result never depends on where empty chunks are."""
    sizes = [int(s) for s in a.chunks[0]]
    offs = row_offsets(sizes)
    return [(i, int(offs[i]), sizes[i]) for i in range(len(sizes)) if sizes[i] > 0]


def tree_reduce(parts: Sequence[Any], combine: Callable[..., Any], split_every: int, name: str,
                token: str) -> Any:
    """Reduces ``parts`` (Delayed objects) with ``combine(*group)`` over consecutive groups of at most
    ``split_every``, level after level, until one remains (returned; ``parts[0]`` when there is one).

    The tree's shape depends only on ``len(parts)`` and ``split_every``, and ``combine`` receives its
    group in increasing chunk order: a combine that adds floating-point partials left to right gives
    the same bits on any number of workers, whatever order the tasks run in."""
    parts = tree_levels(parts, combine, split_every, name, token, keep=1)
    return parts[0]


def tree_levels(parts: Sequence[Any], combine: Callable[..., Any], split_every: int, name: str, token: str,
                keep: int) -> List[Any]:
    """The levels of :func:`tree_reduce` until at most ``keep`` parts remain (``keep <= split_every``):
    the caller's root tasks then combine those last parts and produce the outputs directly, which
    saves a level of tasks (each level costs a scheduler round trip)."""
    parts = list(parts)
    if not parts:
        raise ValueError("tree_reduce needs at least one part")
    level = 0
    while len(parts) > keep:
        nxt = []
        for g, i in enumerate(range(0, len(parts), split_every)):
            group = parts[i:i + split_every]
            key = f"{name}-{token}-L{level}-{g}"
            nxt.append(dask.delayed(combine, pure=True)(*group, dask_key_name=key))
        parts = nxt
        level += 1
    return parts


def key_token(*args: Any) -> str:
    """A short deterministic token for task names (graph keys) from the arguments that define a result."""
    return tokenize(*args)[:16]
