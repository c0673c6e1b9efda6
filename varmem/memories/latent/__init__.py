"""Latent memories: items stored as codes of a learned encoder / decoder, read in code space.

:class:`LatentMemory` and its family's readers: ``amortized`` (:mod:`.amortized`), ``iterative``
(:mod:`.iterative`: Annabi's encoder-started VAE-BP-GMM and VAE-PC-GMM through the decoder), ``hybrid``
(:mod:`.hybrid`) and ``learned_precision`` (:mod:`.learned_precision`, GMM*), with the training of
the amortized retrieval guide and of the GMM* precision.
"""

from .memory import LatentMemory
from .protocol import CodeSpace

__all__ = ["LatentMemory", "CodeSpace"]
