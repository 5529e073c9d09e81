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

import numpy as np
import dask
import dask.array as da
from dask.base import tokenize
from dask.delayed import Delayed

from ._checks import row_offsets


def row_blocks(a: da.Array) -> List[Delayed]:
    """The row chunks of ``a`` (one chunk along every other axis) as Delayed objects, in order."""
    blocks = a.to_delayed()
    return [blocks[(i,) + (0,) * (a.ndim - 1)] for i in range(a.numblocks[0])]


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
