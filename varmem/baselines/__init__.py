"""Baselines that follow the memory protocol (write / retrieve / energy / model / config)."""

from .attention import NTM, MemN2N, encode_codes
from .cdam import CorrelatedDenseMemory, karate_club_graph, ring_graph
from .classical_hopfield import ClassicalHopfield
from .dense_memory import DenseAssociativeMemory
from .kernelized_hopfield import KernelizedHopfield, separation_bounds, separation_loss
from .mixture_hopfield import MixtureHopfieldMemory
from .modern_hopfield import ModernHopfield, normalize_patterns
from .random_features import RandomFeatureMemory
from .sparse_attention import entmax15, sparsemax
from .spiking import SpikingLowRankMemory

__all__ = [
    "ClassicalHopfield",
    "DenseAssociativeMemory",
    "ModernHopfield",
    "normalize_patterns",
    "RandomFeatureMemory",
    "KernelizedHopfield",
    "separation_loss",
    "separation_bounds",
    "sparsemax",
    "entmax15",
    "CorrelatedDenseMemory",
    "ring_graph",
    "karate_club_graph",
    "MixtureHopfieldMemory",
    "MemN2N",
    "NTM",
    "encode_codes",
    "SpikingLowRankMemory",
]
