"""Torch integration: custom ops (``torch.ops.fastemb.*``) with autograd and fake kernels, so
they work under ``torch.compile(fullgraph=True)``, on CPU and CUDA tensors.

Importing this module imports torch and registers the ops.
"""
from ._binary import binarize, hamming, sdc_scores, sdc_topk
from ._centroid import centroid_aggregate, centroid_triplet_loss
from ._graph import fastrp, sparse_random_projection
from ._ternary import BitLinear, ternary_linear

__all__ = ["binarize", "centroid_aggregate", "centroid_triplet_loss", "fastrp", "hamming", "sdc_scores", "sdc_topk", "sparse_random_projection", "BitLinear", "ternary_linear"]
