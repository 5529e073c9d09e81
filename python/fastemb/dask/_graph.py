"""Task-graph building blocks of ``fastemb.dask``: row blocks of a dask array as Delayed objects and a
fixed-order tree reduction over them.

Why our own tree rather than ``dask.array.reduction``: the partial results here are not slices of
the input (a chunk's top-k ``[nq, k]``, a chunk's ``[K, D]`` group sums with counts), and the order in
which floating-point partials are added must be fixed by the chunking alone. The tree below is the
one ``dask.array.reduction`` builds (consecutive groups of ``split_every``, level after level), made
of ordinary Dask tasks: the scheduler still does all the moving, retries and recomputation.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

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


def consecutive_runs(groups: Sequence[Sequence[Tuple[int, int, int]]], chunks: Sequence[Tuple[int, int, int]]
                     ) -> List[List[int]]:
    """``groups`` of chunks (from :func:`placement_groups`) as positions in ``chunks``, each group cut into runs of
    consecutive positions: a tree node then lies inside one run or takes whole runs' results, never picks
    from a list of partials that mostly belong to other nodes (which a combine task would fetch whole)."""
    position = {c[0]: p for p, c in enumerate(chunks)}
    runs: List[List[int]] = []
    for g in groups:
        ps = sorted(position[c[0]] for c in g)
        start = 0
        for i in range(1, len(ps) + 1):
            if i == len(ps) or ps[i] != ps[i - 1] + 1:
                runs.append(ps[start:i])
                start = i
    return runs


def grouped_levels(leaves: Sequence[tuple], leaf_fn: Callable[..., Any], combine: Callable[..., Any],
                   groups: Sequence[Sequence[int]], split_every: int, name: str, token: str) -> List[tuple]:
    """:func:`tree_levels` (``keep=split_every``) over ``leaf_fn(*leaves[p])``, with every tree node whose leaves
    all lie in one of ``groups`` (a partition of the leaf positions ``0..len(leaves)-1``, e.g. from
    :func:`placement_groups`) computed inside that group's single task.

    The tree is the same one (consecutive runs of ``split_every`` nodes, level after level, fixed by the
    number of leaves alone) and every node is ``combine`` of the same children in the same order, wherever
    it runs: the results are the same bits as with one task per leaf, while a worker holding many chunks
    runs one task instead of one per chunk plus their combines. Returns the last level's nodes as
    references ``(task, index)`` (``index`` None: the task's value is the node; else its ``index``-th item);
    :func:`call_on_refs` builds a task on them."""
    token = key_token(token, [list(g) for g in groups])  # other groupings make other tasks: other keys
    group_of: List[Optional[int]] = [None] * len(leaves)
    for g, members in enumerate(groups):
        for p_ in members:
            group_of[p_] = g
    owners: List[List[Optional[int]]] = [group_of]  # per level, the group computing each node (None: a task)
    kids: List[List[List[int]]] = [[]]
    while len(owners[-1]) > split_every:
        below = owners[-1]
        runs = [list(range(j, min(j + split_every, len(below)))) for j in range(0, len(below), split_every)]
        owners.append([below[r[0]] if len({below[c] for c in r}) == 1 else None for r in runs])
        kids.append(runs)
    top = len(owners) - 1

    def parent_owner(level: int, j: int) -> Optional[int]:
        return owners[level + 1][j // split_every] if level < top else None

    refs: dict = {}
    for g, members in enumerate(groups):
        frontier = [(lv, j) for lv in range(top + 1) for j, o in enumerate(owners[lv])
                    if o == g and parent_owner(lv, j) != g]
        inner = {(lv, j): [(lv - 1, c) for c in kids[lv][j]] for lv in range(1, top + 1)
                 for j, o in enumerate(owners[lv]) if o == g}
        program = ({p_: i for i, p_ in enumerate(members)}, inner, frontier)
        args = [a for p_ in members for a in leaves[p_]]
        task = dask.delayed(_run_group, pure=True)(leaf_fn, combine, program, len(leaves[0]), *args,
                                                   dask_key_name=f"{name}-{token}-G{members[0]}")
        for i, node in enumerate(frontier):
            refs[node] = (task, i)
    for lv in range(1, top + 1):
        for j, o in enumerate(owners[lv]):
            if o is None:
                refs[(lv, j)] = (call_on_refs(combine, [refs[(lv - 1, c)] for c in kids[lv][j]],
                                              key=f"{name}-{token}-L{lv - 1}-{j}"), None)
    return [refs[(top, j)] for j in range(len(owners[top]))]


def _run_group(leaf_fn: Callable[..., Any], combine: Callable[..., Any], program: tuple, nargs: int,
               *args: Any) -> List[Any]:
    """One group's tree nodes (see grouped_levels): each frontier node computed depth first."""
    leaf_index, inner, frontier = program

    def node(n: Tuple[int, int]) -> Any:
        if n[0] == 0:
            i = leaf_index[n[1]]
            return leaf_fn(*args[i * nargs:(i + 1) * nargs])
        return combine(*[node(c) for c in inner[n]])

    return [node(n) for n in frontier]


def call_on_refs(fn: Callable[..., Any], refs: Sequence[tuple], *extra: Any, key: str) -> Any:
    """A task ``fn(*extra, *nodes)`` on the nodes behind ``refs`` (from :func:`grouped_levels`), no getitem
    tasks in between."""
    slot: dict = {}  # id(task) -> its position among the arguments (each source task passed once)
    sources: List[Any] = []
    for task, _ in refs:
        if id(task) not in slot:
            slot[id(task)] = len(sources)
            sources.append(task)
    spec = tuple((slot[id(task)], index) for task, index in refs)
    return dask.delayed(_apply_picked, pure=True)(fn, extra, spec, *sources, dask_key_name=key)


def _apply_picked(fn: Callable[..., Any], extra: tuple, spec: tuple, *sources: Any) -> Any:
    return fn(*extra, *[sources[s] if i is None else sources[s][i] for s, i in spec])


def key_token(*args: Any) -> str:
    """A short deterministic token for task names (graph keys) from the arguments that define a result."""
    return tokenize(*args)[:16]
