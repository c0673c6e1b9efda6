"""Factual recall with associative memories (Nichani, Lee & Bietti, ICLR 2025): the linear and MLP
associative memories with frozen random embeddings, their capacity sweeps, the synthetic
factual-recall task and the one-layer transformer that solves it."""

from .associative import (
    AssociativeMemory,
    CategoricalReadout,
    LinearAssociativeMemory,
    MLPAssociativeMemory,
    random_embeddings,
    retrieve_categorical,
)

__all__ = [
    "AssociativeMemory",
    "CategoricalReadout",
    "LinearAssociativeMemory",
    "MLPAssociativeMemory",
    "random_embeddings",
    "retrieve_categorical",
]
