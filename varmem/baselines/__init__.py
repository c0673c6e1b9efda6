"""Baselines that follow the memory protocol (write / retrieve / energy / model / config)."""

from .cdam import CorrelatedDenseMemory, karate_club_graph, ring_graph
from .classical_hopfield import ClassicalHopfield
from .dense_memory import DenseAssociativeMemory
from .kernelized_hopfield import KernelizedHopfield, separation_bounds, separation_loss
from .modern_hopfield import ModernHopfield, normalize_patterns
from .random_features import RandomFeatureMemory
from .sparse_attention import entmax15, sparsemax

__all__ = [
    "ClassicalHopfield",
    "CorrelatedDenseMemory",
    "DenseAssociativeMemory",
    "KernelizedHopfield",
    "ModernHopfield",
    "RandomFeatureMemory",
    "entmax15",
    "karate_club_graph",
    "normalize_patterns",
    "ring_graph",
    "separation_bounds",
    "separation_loss",
    "sparsemax",
]
