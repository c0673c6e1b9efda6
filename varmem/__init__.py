"""varmem: associative memories as Pyro generative models; remembering is inference.

A memory is ``p(x, z | M) = p(z | M) p(x | z)``: writing changes the prior over the clean item
``z``; reading infers ``z`` from a corrupted or partial cue ``x``.
"""

from . import corruptions, datasets, inference, metrics
from ._version import __version__
from .checkpoint import CheckpointError, load, save
from .distributions import KernelDensity
from .memories import KernelDensityMemory, KernelDensityPosterior
from .memory import Memory
from .retrieval import Retrieval

__all__ = [
    "__version__",
    "Memory",
    "Retrieval",
    "KernelDensityMemory",
    "KernelDensityPosterior",
    "KernelDensity",
    "save",
    "load",
    "CheckpointError",
    "datasets",
    "corruptions",
    "metrics",
    "inference",
]
