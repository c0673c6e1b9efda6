"""Probabilistic memories: Pyro models whose prior depends on what was stored."""

from .diffusion import DiffusionFit, DiffusionMemory
from .entropic import EntropicHeteroMemory, EntropicMemory, EntropicPosterior
from .factual import LinearAssociativeMemory, MLPAssociativeMemory
from .firing_rate import FiringRateMemory
from .kernel_density import KernelDensityMemory, KernelDensityPosterior
from .latent import LatentMemory
from .nonparametric import NonparametricMemory, NonparametricPosterior
from .predictive_coding import BayesPCN, PredictiveCodingMemory
from .predictive_coding.pc_memory import PCNetMemory
from .sparse_recovery import SparseRecoveryMemory

__all__ = [
    "KernelDensityMemory",
    "KernelDensityPosterior",
    "NonparametricMemory",
    "NonparametricPosterior",
    "LatentMemory",
    "PredictiveCodingMemory",
    "BayesPCN",
    "FiringRateMemory",
    "EntropicMemory",
    "EntropicPosterior",
    "EntropicHeteroMemory",
    "DiffusionMemory",
    "DiffusionFit",
    "SparseRecoveryMemory",
    "LinearAssociativeMemory",
    "MLPAssociativeMemory",
    "PCNetMemory",
]
