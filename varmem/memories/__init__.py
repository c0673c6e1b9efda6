"""Probabilistic memories: Pyro models whose prior depends on what was stored."""

from .kernel_density import KernelDensityMemory, KernelDensityPosterior
from .nonparametric import NonparametricMemory, NonparametricPosterior

__all__ = ["KernelDensityMemory", "KernelDensityPosterior", "NonparametricMemory", "NonparametricPosterior"]
