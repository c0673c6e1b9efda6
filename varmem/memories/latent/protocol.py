"""What the code-space readers (``amortized``, ``iterative``, ``hybrid``, ``learned_precision``)
need of a memory: :class:`CodeSpace`."""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["CodeSpace"]


@runtime_checkable
class CodeSpace(Protocol):
    """A memory over the codes of an encoder / decoder pair.

    ``encode(x) -> (loc, scale)`` (``[B, L]`` each) is the VAE encoder; ``guide_encode(cue, mask)``
    the trained amortized retrieval guide; ``decode(z)`` the decoder mean and ``decoder_stages()``
    the decoder as ``[f_1, …, f_K]`` (``g = f_K ∘ … ∘ f_1``); ``latent_energy(z) = -log p(z | M)``;
    ``item_weights(z, return_weights)`` the responsibilities of the stored codes; ``init_latent``
    and ``model`` as for :class:`varmem.capabilities.PyroModel`.
    """

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def guide_encode(self, cue: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def decoder_stages(self) -> list[Callable[[Tensor], Tensor]]: ...

    def latent_energy(self, z: Tensor) -> Tensor: ...

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor | None]: ...

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor: ...

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...
