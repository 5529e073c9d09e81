"""Torch side of the graph family.

* ``torch.ops.fastemb.sparse_random_projection(x, dim, s, seed)``: ``x @ R`` with the very sparse random R of
  :func:`fastemb.sparse_random_projection` (same bits for float32 on CPU). Differentiable in ``x``: the
  projection is linear, so ``grad_x = grad @ R^T``, computed by
  ``torch.ops.fastemb.sparse_random_projection_backward`` with R materialized in row blocks from the same
  generator (never whole). float64 inputs are computed as a blockwise dense product in float64 (this is what
  makes a float64 gradcheck possible); float32 uses the sparse kernel.
* :func:`fastrp`: FastRP on a torch sparse CSR/COO adjacency, a PyG-style ``edge_index`` or a
  ``torch_geometric.data.Data`` (duck-typed: torch_geometric is never imported here).

CUDA: when ``fastemb._C_cuda`` has the graph kernels they run on the device (data pointers + the current
stream). Without them, float32 work is moved to the CPU, computed there and moved back (same bits as the CPU
path; a host round trip of the inputs and the result).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from . import _checks
from .. import graph as _graph

_U64 = 1 << 64
_I64 = 1 << 63
_BLOCK_BYTES = 16 << 20  # materialize R in blocks of at most 16 MiB
_CUDA_FNS = ("graph_random_rows", "graph_project_dense", "graph_project_csr", "graph_propagate", "graph_accumulate",
             "graph_standardize_columns")


def _seed_to_i64(seed: int) -> int:
    """The op schema's int is int64: a seed in [0, 2^64) travels as its two's complement."""
    return seed - _U64 if seed >= _I64 else seed


def _seed_from_i64(seed: int) -> int:
    return seed % _U64


def _cuda_graph_module(require: Sequence[str] = _CUDA_FNS):
    """fastemb._C_cuda when it has the graph kernels named in ``require``, else None."""
    mod = _backend.cuda_module()
    if mod is None or not all(hasattr(mod, name) for name in require):
        return None
    return mod


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _check_meta(x: Tensor, dim: int, s: float, seed: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [N, n], got shape {tuple(x.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if not s >= 1.0 or s == float("inf"):
        raise ValueError(f"s must be a finite number >= 1, got {s}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"x: unsupported device {x.device} (cpu and cuda are supported)")


def _r_block(dim: int, s: float, seed: int, row0: int, rows: int, device: torch.device) -> Tensor:
    """Rows row0 .. row0 + rows of R as a float32 tensor on ``device``."""
    if device.type == "cuda":
        mod = _cuda_graph_module(("graph_random_rows",))
        if mod is not None:
            threshold, value = _graph.random_spec(s, dim)
            out = torch.empty((rows, dim), dtype=torch.float32, device=device)
            if rows:
                with torch.cuda.device(device):
                    mod.graph_random_rows(seed, threshold, float(value), dim, row0, rows, 0, out.data_ptr(),
                                          _stream(device))
            return out
    return torch.from_numpy(_graph.random_matrix_rows(dim, s, seed, row0, rows)).to(device)


def _block_rows(dim: int) -> int:
    return max(1, _BLOCK_BYTES // (4 * dim))


def _dense_product(x: Tensor, dim: int, s: float, seed: int) -> Tensor:
    """x @ R with R materialized in row blocks, in x's dtype (float64 path)."""
    n, n_in = x.shape
    out = torch.zeros((n, dim), dtype=x.dtype, device=x.device)
    step = _block_rows(dim)
    for r0 in range(0, n_in, step):
        rows = min(step, n_in - r0)
        out += x[:, r0:r0 + rows] @ _r_block(dim, s, seed, r0, rows, x.device).to(x.dtype)
    return out


def _project_float32(x: Tensor, dim: int, s: float, seed: int) -> Tensor:
    n, n_in = x.shape
    if x.device.type == "cuda":
        mod = _cuda_graph_module(("graph_project_dense",))
        if mod is None:  # documented: computed on the CPU, same bits
            return _project_float32(x.cpu(), dim, s, seed).to(x.device)
        out = torch.empty((n, dim), dtype=torch.float32, device=x.device)
        if n and n_in:
            threshold, value = _graph.random_spec(s, dim)
            with torch.cuda.device(x.device):
                mod.graph_project_dense(seed, threshold, float(value), dim, x.data_ptr(), n, n_in, out.data_ptr(),
                                        _stream(x.device))
        elif n:
            out.zero_()
        return out
    out = torch.empty((n, dim), dtype=torch.float32)
    if n and n_in:
        threshold, value = _graph.random_spec(s, dim)
        _graph.NumpyOps().project_dense((seed, threshold, value, dim), x.numpy(), out.numpy())
    elif n:
        out.zero_()
    return out


@torch.library.custom_op("fastemb::sparse_random_projection", mutates_args=())
def _srp_op(x: Tensor, dim: int, s: float, seed: int) -> Tensor:
    _check_meta(x, dim, s, seed)
    seed_u = _seed_from_i64(seed)
    x = _backend.native_tensor(x.detach())
    if x.numel():
        _checks.require(x.device, [(torch.isfinite(x).all(), "x must be finite (found NaN or inf)")])
    if x.dtype == torch.float64:
        return _dense_product(x, dim, s, seed_u)
    return _project_float32(x, dim, s, seed_u)


@_srp_op.register_fake
def _(x, dim, s, seed):
    _check_meta(x, dim, s, seed)
    return x.new_empty((x.shape[0], dim))


@torch.library.custom_op("fastemb::sparse_random_projection_backward", mutates_args=())
def _srp_backward_op(grad: Tensor, n_in: int, s: float, seed: int) -> Tensor:
    """grad_x [N, n_in] = grad [N, dim] @ R^T, R materialized in row blocks."""
    seed_u = _seed_from_i64(seed)
    grad = _backend.native_tensor(grad)
    n, dim = grad.shape
    out = torch.empty((n, n_in), dtype=grad.dtype, device=grad.device)
    step = _block_rows(dim)
    for r0 in range(0, n_in, step):
        rows = min(step, n_in - r0)
        out[:, r0:r0 + rows] = grad @ _r_block(dim, s, seed_u, r0, rows, grad.device).to(grad.dtype).T
    return out


@_srp_backward_op.register_fake
def _(grad, n_in, s, seed):
    return grad.new_empty((grad.shape[0], n_in))


def _setup_context(ctx, inputs, output):
    x, dim, s, seed = inputs
    ctx.params = (x.shape[1], s, seed)


def _backward(ctx, grad):
    n_in, s, seed = ctx.params
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    return torch.ops.fastemb.sparse_random_projection_backward(grad, n_in, s, seed), None, None, None


_srp_op.register_autograd(_backward, setup_context=_setup_context)


def sparse_random_projection(x: Tensor, dim: int, s: Union[str, float] = "sqrt", seed: int = 0) -> Tensor:
    """``x @ R`` for a dense tensor ``x`` [N, n] (float32 or float64, CPU or CUDA); see
    :func:`fastemb.sparse_random_projection` for R, ``s`` ('sqrt' = sqrt(n)) and ``seed`` (int in [0, 2^64)).

    float32 uses the sparse kernel (same bits as the NumPy API on CPU); float64 a blockwise dense product with the
    same R. Differentiable in ``x`` (``grad_x = grad @ R^T``). Runs under ``torch.compile(fullgraph=True)``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [N, n], got shape {tuple(x.shape)}")
    dim = _graph._check_int("dim", dim, 1)
    seed = _graph.check_seed(seed)
    s_v = _graph.resolve_s(s, int(x.shape[1]))
    return torch.ops.fastemb.sparse_random_projection(x, dim, s_v, _seed_to_i64(seed))


# ---- FastRP -------------------------------------------------------------------------------------

class _DeviceCsr:
    """A Csr whose arrays are torch tensors on a CUDA device."""

    def __init__(self, a: "_graph.Csr", device: torch.device):
        self.indptr = torch.from_numpy(a.indptr).to(device)
        self.indices = torch.from_numpy(a.indices).to(device)
        self.data = None if a.data is None else torch.from_numpy(a.data).to(device)
        self.rows, self.cols = a.rows, a.cols
        self.indices_int32 = a.indices_int32
        # The length of indices (and data): the kernels clamp every row's edge range into [0, nnz], so they
        # need no per-call validation (``a`` was validated on the host by plan_fastrp).
        self.nnz = int(self.indices.numel())


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else int(t.data_ptr())


class CudaOps:
    """run_fastrp's kernel calls on CUDA tensors (fastemb._C_cuda, current stream)."""

    def __init__(self, mod, device: torch.device):
        self.mod, self.device = mod, device
        self.stream = _stream(device)

    def empty(self, shape):
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def zeros(self, shape):
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def upload(self, a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def upload_csr(self, a):
        return _DeviceCsr(a, self.device)

    def random_rows(self, spec, row_scale, out, row0: int = 0):
        seed, threshold, value, d = spec
        self.mod.graph_random_rows(seed, threshold, float(value), d, row0, out.shape[0], _ptr(row_scale), _ptr(out),
                                   self.stream)

    def project_dense(self, spec, x, out):
        seed, threshold, value, d = spec
        self.mod.graph_project_dense(seed, threshold, float(value), d, _ptr(x), x.shape[0], x.shape[1], _ptr(out),
                                     self.stream)

    def project_csr(self, spec, x, out):
        raise TypeError("features: sparse features are not supported on CUDA; pass a dense tensor")

    def propagate(self, a, row_scale, prev, cur, normalize, propagate_normalized, alpha, accum):
        self.mod.graph_propagate(_ptr(a.indptr), _ptr(a.indices), a.indices_int32, _ptr(a.data), a.rows,
                                 _ptr(row_scale), _ptr(prev), prev.shape[1], _ptr(cur), normalize,
                                 propagate_normalized, float(alpha), _ptr(accum), self.stream, nnz=a.nnz)

    def accumulate(self, x, normalize, alpha, accum):
        self.mod.graph_accumulate(_ptr(x), x.shape[0], x.shape[1], normalize, float(alpha), _ptr(accum), self.stream)

    def standardize(self, x):
        mean = torch.empty(x.shape[1], dtype=torch.float64, device=self.device)
        std = torch.empty_like(mean)
        self.mod.graph_standardize_columns(_ptr(x), x.shape[0], x.shape[1], _ptr(mean), _ptr(std), self.stream)


def _is_graph_data(graph: Any) -> bool:
    """A PyTorch Geometric ``Data`` (or any object with an ``edge_index`` attribute): duck-typed, so that
    torch_geometric is never imported here."""
    return not isinstance(graph, Tensor) and hasattr(graph, "edge_index")


def _data_num_nodes(data: Any) -> Tuple[Optional[int], bool]:
    """The Data's node count and whether it is known (stored ``num_nodes`` or the rows of ``x``) rather than
    guessed from ``edge_index`` (PyG's guess, max index + 1, is fastemb's own default; PyG warns when it guesses,
    which is why the guess is not asked for)."""
    try:
        stored = "num_nodes" in data  # torch_geometric Data: stored attributes only
    except TypeError:  # another object with attributes
        n = getattr(data, "num_nodes", None)
        return (None, False) if n is None else (int(n), True)
    if stored:
        n = data.num_nodes
        if n is not None:
            return int(n), True
    x = getattr(data, "x", None)
    if isinstance(x, Tensor) and x.dim() >= 1:
        return int(x.shape[0]), True
    return None, False


def _from_graph_data(data: Any, num_nodes: Optional[int], edge_weight: Optional[Tensor], features: Optional[Tensor],
                     feature_ratio: Any) -> Tuple[Tensor, Optional[int], Optional[Tensor], Optional[Tensor]]:
    """(edge_index, num_nodes, edge_weight, features) of a PyG-style Data, merged with the explicit arguments."""
    edge_index = getattr(data, "edge_index", None)
    if edge_index is None:
        raise ValueError(f"graph: the {type(data).__name__} has no edge_index")
    data_weight = getattr(data, "edge_weight", None)
    if data_weight is not None:
        if edge_weight is not None:
            raise ValueError(f"edge_weight: given twice (the {type(data).__name__} has edge_weight)")
        edge_weight = data_weight
    n, known = _data_num_nodes(data)
    if num_nodes is None:
        num_nodes = n
    elif known and int(num_nodes) != n:
        raise ValueError(f"num_nodes={num_nodes} disagrees with the {type(data).__name__}'s {n} nodes")
    if features is None and isinstance(feature_ratio, numbers.Real) and not isinstance(feature_ratio, bool) \
            and feature_ratio > 0:
        features = getattr(data, "x", None)
        if features is None:
            raise ValueError(f"feature_ratio > 0 needs node features: the {type(data).__name__} has no x "
                             "(pass features=)")
    return edge_index, num_nodes, edge_weight, features


def _host_graph(graph: Any, num_nodes: Optional[int],
                edge_weight: Optional[Tensor]) -> Tuple[Any, torch.device, Optional[int]]:
    """The torch graph as a NumPy CSR tuple or edge list (host copy of the structure, O(nnz)), its device and
    its node count (None: num_nodes as given)."""
    if not isinstance(graph, Tensor):
        hint = ""
        if (type(graph).__module__ or "").startswith("torch_geometric"):
            hint = "; a heterogeneous graph (HeteroData) must be converted first: data.to_homogeneous()"
        raise TypeError("graph must be a torch sparse CSR/COO tensor, an edge_index tensor [2, E] or a "
                        f"torch_geometric Data, got {type(graph).__name__} (use fastemb.fastrp for scipy/NumPy "
                        f"graphs){hint}")
    device = graph.device
    if graph.layout == torch.sparse_csr:
        if edge_weight is not None:
            raise ValueError("edge_weight: only with an edge_index graph (a sparse tensor carries its values)")
        if graph.dim() != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"graph: the adjacency matrix must be square, got shape {tuple(graph.shape)}")
        vals = graph.values().detach()
        if vals.is_complex() or not (vals.is_floating_point() or vals.dtype in (torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"graph: the adjacency values must be real, got {vals.dtype}")
        n = int(graph.shape[0])
        if num_nodes is not None and int(num_nodes) != n:
            raise ValueError(f"num_nodes={num_nodes} disagrees with the adjacency matrix's {n} rows")
        return (graph.crow_indices().cpu().numpy(), graph.col_indices().cpu().numpy(),
                vals.cpu().double().numpy(), n), device, n
    if graph.layout == torch.sparse_coo:
        if edge_weight is not None:
            raise ValueError("edge_weight: only with an edge_index graph (a sparse tensor carries its values)")
        if graph.dim() != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"graph: the adjacency matrix must be square, got shape {tuple(graph.shape)}")
        n = int(graph.shape[0])
        if num_nodes is not None and int(num_nodes) != n:
            raise ValueError(f"num_nodes={num_nodes} disagrees with the adjacency matrix's {n} rows")
        idx = graph._indices().cpu().numpy()
        return (idx[0], idx[1], graph._values().detach().cpu().double().numpy()), device, n
    if graph.layout != torch.strided:
        raise TypeError(f"graph: unsupported layout {graph.layout}")
    if graph.dtype not in (torch.int32, torch.int64) or graph.dim() != 2 or graph.shape[0] != 2:
        raise ValueError(f"graph: an edge_index must be an int32/int64 tensor [2, E], got {graph.dtype} "
                         f"{tuple(graph.shape)}")
    ei = graph.cpu().numpy()
    if edge_weight is None:
        return (ei[0], ei[1]), device, num_nodes
    if not isinstance(edge_weight, Tensor):
        raise TypeError(f"edge_weight must be a torch.Tensor, got {type(edge_weight).__name__}")
    if edge_weight.dim() != 1 or edge_weight.shape[0] != ei.shape[1]:
        raise ValueError(f"edge_weight must have shape ({ei.shape[1]},), got {tuple(edge_weight.shape)}")
    return (ei[0], ei[1], edge_weight.detach().cpu().double().numpy()), device, num_nodes


def fastrp(
    graph: Any,
    dim: int = 128,
    *,
    num_nodes: Optional[int] = None,
    edge_weight: Optional[Tensor] = None,
    features: Optional[Tensor] = None,
    return_iterations: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """FastRP on torch inputs; the result is a float32 tensor on the graph's device.

    Args:
        graph: a square torch sparse CSR or COO adjacency tensor (out-neighbours in rows), a PyG-style
            ``edge_index`` int tensor [2, E] (``edge_index[0]`` = source) with ``num_nodes`` (default
            max index + 1) and optional ``edge_weight`` [E], or a ``torch_geometric.data.Data`` (any object with
            an ``edge_index`` attribute; torch_geometric is not imported): its ``edge_index``, its ``edge_weight``
            when set, its ``num_nodes`` (stored, else the rows of ``x``, else max index + 1; a ``num_nodes=``
            argument must agree with a stored one) and, when ``feature_ratio > 0`` and ``features`` is not
            given, its ``x`` as the node features (``x`` is ignored otherwise; ``edge_attr`` is never read).
            Duplicate edges are summed. CPU or CUDA.

            Direction: row ``edge_index[0][e]`` gathers from ``edge_index[1][e]`` (node i aggregates its
            out-neighbours), the reverse of PyG's default message flow (``source_to_target``); for PyG's flow
            on a directed graph pass ``edge_index.flip(0)``. Undirected graphs (both directions stored, PyG's
            usual form) are unaffected.
        features: optional dense node features [N, f] (with ``feature_ratio=``).
        **kwargs: every other argument of :func:`fastemb.fastrp` (``weights``, ``beta``, ``s``, ``normalize``,
            ``propagate_normalized``, ``self_influence``, ``feature_ratio``, ``standardize``, ``min_degree``,
            ``degree``, ``feature_scaling``, ``seed``, ``dtype``, ``preset``, ``symmetrize``).

    The graph's structure is copied to the host once (degrees, validation and canonical CSR are computed there,
    O(N + nnz)). On CUDA the N x d work runs in ``fastemb._C_cuda``'s kernels when the build has them; otherwise
    everything is computed on the CPU and the result moved to the device (a documented fallback, same bits as
    the CPU). Not differentiable (the output is detached).
    """
    if _is_graph_data(graph):
        graph, num_nodes, edge_weight, features = _from_graph_data(graph, num_nodes, edge_weight, features,
                                                                   kwargs.get("feature_ratio", 0.0))
    host, device, num_nodes = _host_graph(graph, num_nodes, edge_weight)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"graph: unsupported device {device}")
    if features is not None:
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.layout != torch.strided:
            raise TypeError("features must be a dense tensor")
        if features.device != device:
            raise ValueError(f"features is on {features.device} but the graph is on {device}")
    mod = _cuda_graph_module() if device.type == "cuda" else None
    if mod is None:
        f_np = None if features is None else features.detach().cpu().numpy()
        res = _graph.fastrp(host, dim, num_nodes=num_nodes, features=f_np, return_iterations=return_iterations,
                            progress=progress, **kwargs)
        if return_iterations:
            return torch.from_numpy(res[0]).to(device), torch.from_numpy(res[1]).to(device)
        return torch.from_numpy(res).to(device)
    num_features = None
    if features is not None:
        if features.dim() != 2:
            raise ValueError(f"features must be 2-D [N, f], got shape {tuple(features.shape)}")
        num_features = int(features.shape[1])
    plan = _graph.plan_fastrp(host, dim, num_nodes=num_nodes, num_features=num_features, **kwargs)
    n = plan.graph.rows
    f = None
    if features is not None:
        if features.shape[0] != n:
            raise ValueError(f"features must have one row per node ({n}), got shape {tuple(features.shape)}")
        if features.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"features must be float32 or float64, got {features.dtype}")
        f = _backend.native_tensor(features.detach().to(torch.float32))
        if not bool(torch.isfinite(f).all()):
            raise ValueError("features must be finite (found NaN or inf)")
    if n == 0:
        empty = torch.zeros((0, plan.dim), device=device)
        return (empty, torch.zeros((len(plan.weights), 0, plan.dim), device=device)) if return_iterations else empty
    with torch.cuda.device(device):
        return _graph.run_fastrp(CudaOps(mod, device), plan, f, return_iterations, progress)
