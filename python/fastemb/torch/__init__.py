"""Torch integration: custom ops (``torch.ops.fastemb.*``) with autograd and fake kernels, so
they work under ``torch.compile(fullgraph=True)``, on CPU and CUDA tensors.

Importing this module imports torch and registers the ops.

Value checks on CUDA tensors (labels in range, finite inputs) run on the device without a host sync by
default and fail as a device-side assert, like torch's own indexing ops; ``set_cuda_checks("sync")``
(or ``FASTEMB_CUDA_CHECKS=sync``) makes them raise the CPU's ``ValueError`` at one host read per call.
"""
try:
    import torch as _torch  # noqa: F401  (first, so that a missing torch gets the hint below)
except ModuleNotFoundError as _exc:
    if _exc.name != "torch":
        raise
    raise ModuleNotFoundError(
        "fastemb.torch needs PyTorch (>= 2.4), which is not installed: install it with `pip install torch` "
        "(see https://pytorch.org/get-started/locally/ for CUDA builds), or install fastemb with its torch extra "
        "(`pip install \".[torch]\"` from a source checkout). The rest of fastemb works without torch.",
        name="torch") from _exc

from ._binary import binarize, hamming, sdc_scores, sdc_topk
from ._bitnet import TernaryLinear, patch_bitnet
from ._centroid import centroid_aggregate, centroid_triplet_loss
from ._checks import get_cuda_checks, set_cuda_checks
from ._graph import fastrp, sparse_random_projection
from ._multivector import maxsim, muvera_fde
from ._ternary import BitLinear, ternary_linear

__all__ = ["binarize", "centroid_aggregate", "centroid_triplet_loss", "fastrp", "get_cuda_checks", "hamming", "maxsim", "muvera_fde", "sdc_scores", "sdc_topk", "set_cuda_checks", "sparse_random_projection", "BitLinear", "ternary_linear", "TernaryLinear", "patch_bitnet"]
