"""Probabilistic memories: Pyro models whose prior depends on what was stored."""

from .factual import LinearAssociativeMemory, MLPAssociativeMemory
from .kernel_density import KernelDensityMemory, KernelDensityPosterior
from .latent import LatentMemory
from .nonparametric import NonparametricMemory, NonparametricPosterior
from .predictive_coding import BayesPCN, PredictiveCodingMemory

__all__ = [
    "KernelDensityMemory",
    "KernelDensityPosterior",
    "NonparametricMemory",
    "NonparametricPosterior",
    "LatentMemory",
    "PredictiveCodingMemory",
    "BayesPCN",
    "LinearAssociativeMemory",
    "MLPAssociativeMemory",
]
