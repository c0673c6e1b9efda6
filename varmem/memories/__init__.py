"""Probabilistic memories: Pyro models whose prior depends on what was stored."""

from .kernel_density import KernelDensityMemory, KernelDensityPosterior

__all__ = ["KernelDensityMemory", "KernelDensityPosterior"]
