"""FastRP node embeddings and very sparse random projection (shared/specs/fastrp.md).

* :func:`sparse_random_projection` -- ``X @ R`` with a very sparse random ``R`` generated on the fly
  from a counter-based RNG (never stored): same seed, same bits, for any thread count and backend.
* :func:`fastrp` -- FastRP (Chen et al., CIKM 2019) on a graph given as a scipy.sparse matrix, a CSR
  tuple or an edge list, with the paper's and the Neo4j GDS variant as presets.

The random matrix: ``R[i, j] = +-sqrt(s/d)`` with probability ``1/(2s)`` each, else 0; entry ``(i, j)``
comes from SplitMix64 keyed on ``(seed, i * d + j)`` (src/cpp/graph/graph.h). The native kernels
(``fastemb._C.graph_*``) are used when the build has them; otherwise the NumPy reference
(``fastemb._reference.graph``), which gives the same bits, slower.

One module per concern: ``_checks`` (argument checks), ``csr`` (graph input), ``ops`` (the kernels),
``workspace`` (CPU scratch buffers, memory check), ``projection`` (sparse random projection), ``embedding``
(FastRP), ``reorder`` (node renumbering for locality). The names below are re-exported for fastemb.torch,
fastemb.dask and the tests.
"""
from ._checks import _check_bool, _check_int, check_seed, resolve_s
from .csr import (Csr, _check_edge_weights, _csr_arrays, _edges_to_csr, _int_array, _is_scipy_sparse, as_graph,
                  check_edge_indices)
from .embedding import (PRESETS, FastRPArgs, FastRPPlan, FastRPSpec, check_fastrp_args, fastrp, fastrp_row_scales,
                        fastrp_spec, feature_columns, plan_fastrp, run_fastrp)
from .ops import NumpyOps, random_matrix_rows, random_spec
from .projection import _as_dense_float32, _as_sparse_csr, sparse_random_projection
from .reorder import ReorderedGraph, reorder_graph
from .workspace import check_fastrp_memory, release_workspace

__all__ = ["fastrp", "sparse_random_projection", "release_workspace", "PRESETS", "ReorderedGraph", "reorder_graph"]
