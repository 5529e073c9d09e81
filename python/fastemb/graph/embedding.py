"""FastRP (Chen et al., CIKM 2019; the Neo4j GDS variant as a preset): argument resolution, the
plan (degrees, row scales) and the run over a kernels object.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .._out import check_out
from .._reference import graph as _ref
from ._checks import _check_bool, _check_dtype, _check_int, _check_real, check_seed, resolve_s
from .csr import Csr, as_graph, _is_scipy_sparse
from .ops import NumpyOps, gather_rows
from .projection import _as_dense_float32, _as_sparse_csr
from .reorder import ReorderedGraph, check_reordered, permute_table, take_csr_rows
from .workspace import check_fastrp_memory


#: Defaults of the two variants (``preset=``); explicit arguments override them.
PRESETS: Dict[str, Dict[str, Any]] = {
    # Chen et al. reference code (BlogCatalog hyperparameters): unnormalized U_i propagate, V_i = rowL2(U_i),
    # E = sum alpha_i V_i, then column standardization (sklearn ``scale``).
    "paper": dict(weights=(0.0, 0.0, 1.0, 6.67), beta=-0.64, s="sqrt", normalize=True, propagate_normalized=False,
                  self_influence=0.0, standardize=True, min_degree=0.0, degree="weighted", feature_scaling="shared"),
    # Neo4j GDS (FastRP.java): s = 3, the normalized vectors propagate with 1/max(deg, 1), no column scaling; the
    # degree is the relationship count (weights ignored), and the random and the feature columns are each scaled
    # by sqrt(3 / their own width).
    "gds": dict(weights=(0.0, 1.0, 1.0), beta=0.0, s=3.0, normalize=True, propagate_normalized=True,
                self_influence=0.0, standardize=False, min_degree=1.0, degree="count", feature_scaling="block"),
}

DEGREES = ("weighted", "count")
FEATURE_SCALINGS = ("shared", "block")


# ---- FastRP -----------------------------------------------------------------------------------

@dataclass
class FastRPPlan:
    """Everything :func:`fastrp` computes on the host before the N x d work (shared by the torch path)."""
    graph: Csr
    dim: int
    weights: Tuple[float, ...]
    seed: int
    threshold: int
    value: np.float32
    normalize: bool
    propagate_normalized: bool
    self_influence: float
    standardize: bool
    initial_scale: np.ndarray      # float32 [N]: deg^beta (degree 0 -> 1); deg as chosen by ``degree``
    propagation_scale: np.ndarray  # float32 [N]: 1 / max(deg, min_degree) (0 where that is 0)
    feature_dim: int
    feature_spec: Optional[Tuple[int, int, np.float32, int]]  # (seed, threshold, value, feature_dim)
    # ``value`` above is the magnitude of the random (first dim - feature_dim) columns: sqrt(s / dim), or with
    # feature_scaling='block' and features sqrt(s / (dim - feature_dim)).


def _resolve(preset: Optional[str], **given: Any) -> Dict[str, Any]:
    if preset is None:
        preset = "paper"
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}")
    out = dict(PRESETS[preset])
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _check_weights(weights: Any) -> Tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a sequence of numbers (one per iteration), got {type(weights).__name__}")
    w = np.asarray(weights, dtype=object).ravel() if not isinstance(weights, np.ndarray) else weights.ravel()
    if len(w) == 0:
        raise ValueError("weights must not be empty (one weight per iteration)")
    return tuple(_check_real(f"weights[{i}]", v) for i, v in enumerate(w))


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)} (or None for the preset's), "
                         f"got {value!r}")
    return value


@dataclass
class FastRPArgs:
    """The validated arguments of :func:`fastrp` that do not depend on the graph (presets applied)."""
    dim: int
    weights: Tuple[float, ...]
    seed: int
    beta: float
    self_influence: float
    min_degree: float
    normalize: bool
    propagate_normalized: bool
    standardize: bool
    degree: str
    feature_scaling: str
    s: Any               # as given ('sqrt' or a number); resolved against N / the feature count by fastrp_spec
    feature_ratio: float


@dataclass
class FastRPSpec:
    """The random matrices of a FastRP run on N nodes (graph-wide constants, no O(N) data)."""
    threshold: int
    value: np.float32
    feature_dim: int
    feature_spec: Optional[Tuple[int, int, np.float32, int]]  # (seed, threshold, value, feature_dim)


def check_fastrp_args(dim: int, *, weights=None, beta=None, s=None, normalize=None, propagate_normalized=None,
                      self_influence=None, feature_ratio: float = 0.0, standardize=None, min_degree=None, degree=None,
                      feature_scaling=None, seed: int = 0, dtype: Any = "float32",
                      preset: Optional[str] = None) -> FastRPArgs:
    """Validates :func:`fastrp`'s graph-independent arguments and applies the preset (errors name the argument)."""
    dim = _check_int("dim", dim, 1)
    seed = check_seed(seed)
    _check_dtype(dtype)
    p = _resolve(preset, weights=weights, beta=beta, s=s, normalize=normalize,
                 propagate_normalized=propagate_normalized, self_influence=self_influence, standardize=standardize,
                 min_degree=min_degree, degree=degree, feature_scaling=feature_scaling)
    degree_v = _check_choice("degree", p["degree"], DEGREES)
    scaling_v = _check_choice("feature_scaling", p["feature_scaling"], FEATURE_SCALINGS)
    w = _check_weights(p["weights"])
    beta_v = _check_real("beta", p["beta"])
    si = _check_real("self_influence", p["self_influence"])
    md = _check_real("min_degree", p["min_degree"])
    if md < 0:
        raise ValueError(f"min_degree must be >= 0, got {md}")
    norm = _check_bool("normalize", p["normalize"])
    pn = _check_bool("propagate_normalized", p["propagate_normalized"])
    std = _check_bool("standardize", p["standardize"])
    fr = _check_real("feature_ratio", feature_ratio)
    if not 0.0 <= fr <= 1.0:
        raise ValueError(f"feature_ratio must be in [0, 1], got {fr}")
    return FastRPArgs(dim, w, seed, beta_v, si, md, norm, pn, std, degree_v, scaling_v, p["s"], fr)


def fastrp_spec(args: FastRPArgs, n: int, num_features: Optional[int]) -> FastRPSpec:
    """The generator constants of a run on ``n`` nodes (``s='sqrt'`` -> sqrt(n)) with ``num_features`` feature
    columns (None: no features)."""
    dim = args.dim
    s_v = resolve_s(args.s, n)
    feature_dim = int(math.floor(dim * args.feature_ratio))
    feature_spec = None
    if num_features is None:
        if args.feature_ratio > 0:
            raise ValueError("feature_ratio > 0 needs features")
        feature_dim = 0
    else:
        if feature_dim < 1:
            raise ValueError(f"feature_ratio: floor(dim * feature_ratio) = {feature_dim} columns; with features it "
                             "must give at least one column")
        f_s = resolve_s(args.s, num_features)
        f_threshold, f_value = _ref.random_spec(f_s, _ref.feature_width(dim, feature_dim, args.feature_scaling))
        feature_spec = (args.seed ^ _ref.FEATURE_SEED_XOR, f_threshold, f_value, feature_dim)
    threshold, value = _ref.random_spec(s_v, _ref.base_width(dim, feature_dim, args.feature_scaling))
    return FastRPSpec(threshold, value, feature_dim, feature_spec)


def fastrp_row_scales(args: FastRPArgs, csr: Csr) -> Tuple[np.ndarray, np.ndarray]:
    """(initial_scale, propagation_scale) float32 [rows] of the rows of ``csr``: deg^beta and
    1/max(deg, min_degree). Row-local: a row block of the adjacency gives the same bits as the whole."""
    if args.degree == "count":
        deg = _ref.relationship_counts(csr.indptr, csr.counts)
    else:
        deg = _ref.degrees(csr.indptr, csr.data, csr.rows)
    return _ref.initial_scale(deg, args.beta), _ref.propagation_scale(deg, args.min_degree)


def plan_fastrp(graph: Any, dim: int, *, weights=None, beta=None, s=None, normalize=None, propagate_normalized=None,
                self_influence=None, feature_ratio: float = 0.0, num_features: Optional[int] = None,
                standardize=None, min_degree=None, degree=None, feature_scaling=None, seed: int = 0,
                dtype: Any = "float32", preset: Optional[str] = None, num_nodes: Optional[int] = None,
                symmetrize: bool = False, checked_csr: Optional[Csr] = None) -> FastRPPlan:
    """Validates the arguments of :func:`fastrp` and computes degrees and row scales (host, O(N + nnz)).
    ``checked_csr``: the graph already parsed and checked (fastrp's reordered graph); ``graph`` is then unused."""
    args = check_fastrp_args(dim, weights=weights, beta=beta, s=s, normalize=normalize,
                             propagate_normalized=propagate_normalized, self_influence=self_influence,
                             feature_ratio=feature_ratio, standardize=standardize, min_degree=min_degree,
                             degree=degree, feature_scaling=feature_scaling, seed=seed, dtype=dtype, preset=preset)
    csr = checked_csr if checked_csr is not None else as_graph(graph, num_nodes, symmetrize)
    spec = fastrp_spec(args, csr.rows, num_features)
    init, prop = fastrp_row_scales(args, csr)
    return FastRPPlan(csr, args.dim, args.weights, args.seed, spec.threshold, spec.value, args.normalize,
                      args.propagate_normalized, args.self_influence, args.standardize, init, prop, spec.feature_dim,
                      spec.feature_spec)


def _progress_range(q: int, progress: bool):
    if not progress:
        return range(q)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("progress=True needs tqdm (pip install tqdm); running without a progress bar", stacklevel=3)
        return range(q)
    return tqdm(range(q), desc="fastrp", unit="iter")


_SMALL_TABLE_THRESHOLD = 1 << 48  # threshold = floor(2^53 / s): s >= 32


def run_fastrp(ops: Any, plan: FastRPPlan, features: Any, return_iterations: bool, progress: bool,
               out: Optional[np.ndarray] = None, renumbered: Optional[ReorderedGraph] = None):
    """The N x d part of FastRP on ``ops``' buffers: at most three [N, d] buffers (prev, cur, accum), plus the
    [q, N, d] iterations when asked for. ``features`` is already on ops' device ([N, f] dense or a Csr).
    ``out``: a checked [N, d] float32 result buffer (NumpyOps only), or None. ``renumbered`` (NumpyOps only):
    ``plan.graph`` and ``features`` are in its new node order; R's rows come from the original ids, and the
    result (and iterations) are put back in the original order before standardization."""
    n, d = plan.graph.rows, plan.dim
    q = len(plan.weights)
    a = ops.upload_csr(plan.graph)
    spec = (plan.seed, plan.threshold, plan.value, d)
    # Plain random initial vectors (no feature columns, no self-influence term reading them): the first
    # step generates R's sparse rows on the fly instead of writing and gathering an N x d matrix.
    fused_first = (plan.feature_dim == 0 and plan.self_influence == 0
                   and getattr(ops, "can_propagate_random", lambda: False)())
    table = None
    if fused_first and renumbered is not None:
        # R's sparse rows of the original ids, in the new order: ~24 bytes per nonzero of R, so only when R is
        # sparse (s >= 32: at most ~1/8 of an N x d buffer); otherwise R's rows are written and gathered
        # (below), in the buffers already counted.
        table = ops.random_table(spec, 0, n) if plan.threshold <= _SMALL_TABLE_THRESHOLD else None
        fused_first = table is not None
        if fused_first:
            table = permute_table(table, renumbered.order)
    take_scratch = getattr(ops, "scratch", ops.empty)
    prev = take_scratch((n, d))
    cur = take_scratch((n, d))
    if not fused_first:
        if renumbered is None:
            ops.random_rows(spec, ops.upload(plan.initial_scale), prev)
        else:  # original order (row v: R(v) deg(v)^beta) into cur, then moved to the new order
            ops.random_rows(spec, plan.initial_scale[renumbered.inverse], cur)
            gather_rows(cur, renumbered.order, prev)
    if plan.feature_dim:
        block = ops.empty((n, plan.feature_dim))
        if isinstance(features, Csr):
            ops.project_csr(plan.feature_spec, features, block)
        else:
            ops.project_dense(plan.feature_spec, features, block)
        prev[:, d - plan.feature_dim:] = block
        del block
    # CPU buffers: accum is not zero-filled; the first step that accumulates writes 0 + alpha * v
    # (accum_init, the same bits) and a run with nothing to accumulate fills it at the end.
    lazy_zeros = isinstance(ops, NumpyOps)
    if out is not None:
        accum = out
    else:
        accum = ops.result((n, d)) if lazy_zeros else ops.zeros((n, d))
    accum_ready = not lazy_zeros
    if plan.self_influence != 0:
        if not accum_ready:
            accum.fill(0)
            accum_ready = True
        ops.accumulate(prev, True, plan.self_influence, accum)
    scratch = (prev, cur)
    scale = ops.upload(plan.propagation_scale)
    iterations = ops.empty((q, n, d)) if return_iterations else None
    for i in _progress_range(q, progress):
        alpha = plan.weights[i]
        # alpha == 0 adds nothing (accum + 0 * v == accum bit for bit): skip the epilogue's writes.
        step_accum = accum if alpha != 0 else None
        init = {"accum_init": True} if step_accum is not None and not accum_ready else {}
        if i == 0 and table is not None:
            ops.propagate_random_block(spec, 0, plan.initial_scale, table, a, scale, None, cur, True, plan.normalize,
                                       plan.propagate_normalized, alpha, step_accum, **init)
        elif i == 0 and fused_first:
            ops.propagate_random(spec, ops.upload(plan.initial_scale), a, scale, cur, plan.normalize,
                                 plan.propagate_normalized, alpha, step_accum, **init)
        else:
            ops.propagate(a, scale, prev, cur, plan.normalize, plan.propagate_normalized, alpha, step_accum, **init)
        accum_ready = accum_ready or step_accum is not None
        if iterations is not None:
            it = iterations[i]
            it[...] = 0
            ops.accumulate(cur, plan.normalize and not plan.propagate_normalized, 1.0, it)
        prev, cur = cur, prev
    del prev, cur
    if not accum_ready:
        accum.fill(0)
    if renumbered is not None:  # back to the original order, through a free scratch buffer (no 4th N x d)
        for result in [accum] + ([] if iterations is None else list(iterations)):
            gather_rows(result, renumbered.inverse, scratch[0])
            result[...] = scratch[0]
    for buf in scratch:
        getattr(ops, "release_scratch", lambda b: None)(buf)
    del scratch
    if plan.standardize:
        ops.standardize(accum)
    if return_iterations:
        return accum, iterations
    return accum


def feature_columns(features: Any) -> Optional[int]:
    """The column count f of :func:`fastrp`'s ``features`` [N, f] from its shape alone (None without features):
    ValueError unless 2-D. fastemb.dask.fastrp checks a dask array's shape with it before building anything."""
    if features is None:
        return None
    shape = getattr(features, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"features must be 2-D [N, f], got shape {shape}")
    return int(shape[1])


def _as_features(features: Any, n: int) -> Tuple[Union[np.ndarray, Csr], int]:
    if _is_scipy_sparse(features):
        f = _as_sparse_csr("features", features)
        rows, cols = f.rows, f.cols
    elif isinstance(features, np.ndarray):
        f = _as_dense_float32("features", features)
        rows, cols = f.shape
    else:
        raise TypeError(f"features must be a numpy.ndarray or a scipy.sparse matrix, got {type(features).__name__}")
    if rows != n:
        raise ValueError(f"features must have one row per node ({n}), got shape {(rows, cols)}")
    if cols < 1:
        raise ValueError(f"features must have at least one column, got shape {(rows, cols)}")
    return f, cols


def fastrp(
    graph: Any,
    dim: int = 128,
    *,
    weights: Optional[Sequence[float]] = None,
    beta: Optional[float] = None,
    s: Union[str, float, None] = None,
    normalize: Optional[bool] = None,
    propagate_normalized: Optional[bool] = None,
    self_influence: Optional[float] = None,
    features: Any = None,
    feature_ratio: float = 0.0,
    standardize: Optional[bool] = None,
    min_degree: Optional[float] = None,
    degree: Optional[str] = None,
    feature_scaling: Optional[str] = None,
    seed: int = 0,
    dtype: Any = "float32",
    return_iterations: bool = False,
    preset: Optional[str] = None,
    progress: bool = False,
    num_nodes: Optional[int] = None,
    symmetrize: bool = False,
    out: Optional[np.ndarray] = None,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """FastRP node embeddings (Chen et al., CIKM 2019; Neo4j GDS variant as ``preset='gds'``).

    Args:
        graph: the adjacency A [N, N] (row i lists node i's out-neighbours; directed graphs use out-edges), as
            * a :class:`fastemb.ReorderedGraph` from :func:`fastemb.reorder_graph` (nodes renumbered for memory
              locality; the result is the same bits, in the original node order; ``features`` are then copied
              once in the new order);
            * a scipy.sparse matrix or array, any format (square; non-CSR formats are converted once);
            * a CSR tuple ``(indptr, indices, num_nodes)`` or ``(indptr, indices, data, num_nodes)`` (the last
              item an int): used as given, in stored order;
            * an edge list ``(src, dst)`` or ``(src, dst, weights)`` of integer arrays; ``num_nodes=`` gives N
              (default ``max index + 1``: trailing isolated nodes need it). Duplicate edges are summed.
            Edge weights must be finite and >= 0 (NaN raises). Unweighted edges weigh 1.
        dim: embedding dimension d >= 1.
        weights: ``alpha_1..alpha_q``, the weight of the i-th power V_i (q = len(weights) iterations).
        beta: normalization strength: the initial vectors are scaled by deg^beta (degree 0: scale 1; deg as chosen
            by ``degree``).
        s: sparsity of the random matrix: ``'sqrt'`` (sqrt(N), the reference code's choice), 3, or any
            number >= 1.
        normalize: V_i = rowL2(U_i) (rows of zeros stay zero) instead of U_i.
        propagate_normalized: propagate V_i (GDS) instead of the unnormalized U_i (paper).
        self_influence: w_0: adds ``w_0 * r_n / ||r_n||`` of the initial vectors r_n (GDS nodeSelfInfluence).
        features: optional node features [N, f] (dense float array or scipy.sparse). The last
            ``floor(dim * feature_ratio)`` columns of every initial vector are then the random projection of the
            node's features (sparsity ``s``, 'sqrt' meaning sqrt(f); magnitude per ``feature_scaling``; no degree
            scaling; an independent stream ``seed ^ 0x6A09E667F3BCC909``), so unseen nodes can be embedded from
            features.
        feature_ratio: share of the columns given to features, in [0, 1]; > 0 requires features.
        standardize: subtract each column's mean and divide by its population std (a zero std counts as 1;
            sklearn ``scale``). Statistics in float64 over fixed 4096-row blocks.
        min_degree: the propagation divides by max(deg, min_degree) (0 where that is 0): 0 for the paper's
            D^-1 A, 1 for GDS's 1/max(deg, 1).
        degree: the deg of ``beta`` and of the propagation's 1/max(deg, min_degree):
            * ``'weighted'``: the weighted out-degree (row sums of A; M = D^-1 A is the transition matrix);
            * ``'count'``: the number of relationships (out-edges as given: parallel edges and zero-weight
              edges counted, weights ignored; a scipy matrix's stored entries), as Neo4j GDS's FastRP.
            With ``normalize`` the propagation's scale cancels in the row normalization; deg^beta does not, on
            weighted graphs with beta != 0.
            Unweighted graphs: the same.
        feature_scaling: the magnitudes of the two blocks of the initial vectors with ``features``:
            * ``'shared'``: random and feature columns alike sqrt(s/dim) (one magnitude for every column, so the
              blocks' expected squared norms are in the ratio of their widths);
            * ``'block'``: the random columns sqrt(s/(dim - f_d)), the feature columns sqrt(s_f/f_d), with f_d the
              feature columns and s_f the features' sparsity (each block on its own preserves squared norms in
              expectation, whatever feature_ratio; Neo4j GDS's sqrt(3)/sqrt(width)).
            Without features, or with f_d = dim/2, the two differ by one factor for every initial vector, which
            ``normalize`` cancels: the same result either way then (up to float32 rounding).
        seed: int in [0, 2^64). Same seed, same bits (any thread count).
        dtype: only float32 (float64 raises ValueError).
        return_iterations: also return the q matrices V_1..V_q as one float32 array [q, N, d]. Costs q*N*d*4 bytes
            more (e.g. 4 x 10k x 512 -> 84 MB); ``(weights @ V.reshape(q, -1)).reshape(N, d)`` then re-weights them
            (standardize afterwards as needed) without recomputing. The self-influence term is not in it.
        preset: ``'paper'`` (default when None) or ``'gds'``; sets the defaults of every argument above that is
            left as None (see :data:`PRESETS`):
            * paper: weights (0, 0, 1, 6.67), beta -0.64, s 'sqrt', normalize, propagate U_i, standardize,
              min_degree 0, degree 'weighted', feature_scaling 'shared';
            * gds: weights (0, 1, 1), beta 0, s 3, normalize, propagate V_i, no standardization, min_degree 1,
              degree 'count', feature_scaling 'block' -- Neo4j GDS's FastRP (FastRP.java: iterationWeights,
              normalizationStrength, nodeSelfInfluence, propertyRatio, relationshipWeightProperty) up to the random
              numbers, which come from fastemb's generator. ``preset='gds', degree='weighted',
              feature_scaling='shared'`` is this preset's earlier behaviour, which differed from GDS on weighted
              graphs with beta != 0 and with features at feature_ratio != 0.5.
        progress: show a tqdm progress bar over the iterations (warns if tqdm is not installed).
        num_nodes: N for an edge list (checked against the other forms when given).
        symmetrize: use A + A^T (undirected graph from one direction of each edge; a self loop counts twice).
        out: optional float32 C-contiguous [N, d] array the embedding is written to (and returned), sharing no
            memory with the graph or the features: repeated runs then allocate no result memory. Default: a new
            array.

    Returns:
        float32 [N, d], or ``(embedding, iterations)`` with return_iterations. Isolated nodes get finite rows
        (zero before standardization).

    Memory: besides the graph and O(N) vectors, three [N, d] float32 buffers (previous, current, accumulator)
    for any q (two with ``out``). On the CPU the previous/current pair is kept after the call and reused by the
    next call that fits (fresh memory costs a page fault per 4 KB on first touch); :func:`release_workspace`
    frees it. Before writing anything, the memory a call needs is checked against what the machine has
    (/proc/meminfo MemAvailable + SwapFree, the memory cgroup's limit): MemoryError names both. The
    kernels run in fixed order without atomics: the result is the same bits for any thread count.
    """
    return_iterations = _check_bool("return_iterations", return_iterations)
    progress = _check_bool("progress", progress)
    num_features = feature_columns(features)  # shape only here; the values are checked in _as_features below
    renumbered = _check_renumbered(graph, num_nodes, symmetrize)
    plan = plan_fastrp(graph, dim, weights=weights, beta=beta, s=s, normalize=normalize,
                       propagate_normalized=propagate_normalized, self_influence=self_influence,
                       feature_ratio=feature_ratio, num_features=num_features, standardize=standardize,
                       min_degree=min_degree, degree=degree, feature_scaling=feature_scaling, seed=seed, dtype=dtype,
                       preset=preset, num_nodes=num_nodes, symmetrize=symmetrize,
                       checked_csr=None if renumbered is None else renumbered.csr)
    n = plan.graph.rows
    f = None
    if features is not None:
        f, _ = _as_features(features, n)
        if renumbered is not None:  # the features of node order[c] in row c
            f = take_csr_rows(f, renumbered.order) if isinstance(f, Csr) else np.take(f, renumbered.order, axis=0)
    if out is not None:
        g = plan.graph
        check_out(out, (n, plan.dim), np.float32, {"graph": (g.indptr, g.indices, g.data, g.counts),
                                                    "features": (f.indptr, f.indices, f.data) if isinstance(f, Csr)
                                                    else f})
    if n == 0:
        empty = np.zeros((0, plan.dim), np.float32) if out is None else out
        return (empty, np.zeros((len(plan.weights), 0, plan.dim), np.float32)) if return_iterations else empty
    check_fastrp_memory(n, plan.dim, len(plan.weights), return_iterations, plan.standardize, out is not None)
    return run_fastrp(NumpyOps(), plan, f, return_iterations, progress, out, renumbered)


def _check_renumbered(graph: Any, num_nodes: Optional[int], symmetrize: Any) -> Optional[ReorderedGraph]:
    """``graph`` checked, when it is a :class:`ReorderedGraph` (num_nodes / symmetrize were applied when it was
    built)."""
    if not isinstance(graph, ReorderedGraph):
        return None
    if num_nodes is not None and num_nodes != graph.num_nodes:
        raise ValueError(f"num_nodes={num_nodes} disagrees with the reordered graph's {graph.num_nodes} nodes")
    if _check_bool("symmetrize", symmetrize):
        raise ValueError("symmetrize: a ReorderedGraph is already built; pass symmetrize=True to reorder_graph")
    return check_reordered(graph)
