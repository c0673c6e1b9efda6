"""Probabilistic memories: Pyro models whose prior depends on what was stored."""

from .kernel_density import KernelDensityMemory, KernelDensityPosterior
from .latent import LatentMemory
from .nonparametric import NonparametricMemory, NonparametricPosterior
from .predictive_coding import BayesPCN, PredictiveCodingMemory
from .sparse_recovery import SparseRecoveryMemory

__all__ = [
    "KernelDensityMemory",
    "KernelDensityPosterior",
    "NonparametricMemory",
    "NonparametricPosterior",
    "LatentMemory",
    "PredictiveCodingMemory",
    "BayesPCN",
    "SparseRecoveryMemory",
]
