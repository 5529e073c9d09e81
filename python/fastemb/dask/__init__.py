"""fastemb past one machine: the same native kernels inside Dask tasks (``pip install 'fastemb[dask]'``).

Dask does all the moving -- task graphs, ``map_blocks`` / ``blockwise``, tree reductions
(``split_every``), ``Client.scatter`` -- on its local schedulers, a ``distributed.LocalCluster`` or
a real cluster (``distributed.Client("scheduler:8786")``, dask-jobqueue, Kubernetes) alike.

=====================================  =========================================================
function                               result against one machine
=====================================  =========================================================
:func:`binarize`                       bit-identical (rows are independent)
:func:`sdc_topk`                       identical for any chunking and any number of workers
:class:`ShardedBinaryIndex`            identical to one ``fastemb.BinaryIndex`` with the same rows
:func:`centroid_aggregate`             counts, amax, amin: bit-identical; sum / mean: the same bits
                                       for any number of workers given the chunking, within a
                                       stated bound of one machine (``fastemb.dask.centroid``)
:func:`sparse_random_projection`       row chunks: bit-identical; column chunks: fixed order,
                                       stated bound (``fastemb.dask.projection``)
:func:`ternary_matmul`                 bit-identical
:func:`fastrp`                         bit-identical (block-sparse SpMM, each row's edges in CSR
                                       order; rows' edges must be sorted by column block)
=====================================  =========================================================

Inputs are dask arrays (NumPy arrays are taken as one chunk) with known chunk sizes, chunked by
rows; results are lazy dask arrays, except :meth:`ShardedBinaryIndex.search` (NumPy). Importing
``fastemb`` never imports dask; this subpackage does.

Threads: each task runs the native kernels with fastemb's own pool (``FASTEMB_NUM_THREADS``, all
cores by default). Give the workers ``FASTEMB_NUM_THREADS`` = cores / worker threads, e.g.
``LocalCluster(n_workers=2, threads_per_worker=1, env={"FASTEMB_NUM_THREADS": "1"})``.
"""
from __future__ import annotations

try:
    import dask  # noqa: F401
    import dask.array  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastemb.dask needs dask[array] and distributed: pip install 'fastemb[dask]'") from exc

from .binary import binarize, merge_topk, sdc_topk
from ._fastrp import fastrp, traffic as fastrp_traffic
from .centroid import centroid_aggregate
from .index import ShardedBinaryIndex, save_sharded
from .io import from_npy
from .projection import sparse_random_projection
from .ternary import ternary_matmul

__all__ = [
    "binarize",
    "centroid_aggregate",
    "fastrp",
    "fastrp_traffic",
    "from_npy",
    "merge_topk",
    "save_sharded",
    "sdc_topk",
    "ShardedBinaryIndex",
    "sparse_random_projection",
    "ternary_matmul",
]
