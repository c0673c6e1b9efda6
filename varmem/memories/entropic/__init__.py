"""Entropic associative memories (Pineda, Morales, Hernández et al.): the Associative Memory
Register as a Pyro model (:class:`EntropicMemory`, read with ``"beta"`` or ``"exact"``) and the 4-D
hetero-associative relation (:class:`EntropicHeteroMemory`, read with ``"search_and_test"``,
``"sample_and_test"`` or ``"random"``)."""

from .hetero import EntropicHeteroMemory
from .memory import EntropicMemory, EntropicPosterior, Recognition, recognition_scores

__all__ = ["EntropicMemory", "EntropicPosterior", "EntropicHeteroMemory", "Recognition", "recognition_scores"]
