"""Read-only Neural Turing Machine head (Graves et al. 2014) as configured by Annabi, Pitti & Quoy (2022).

Content-based addressing only ("interpolation, shifting and writing are not implemented" in
``sino7/predictive_coding_associative_memories``, ``models.py: NTM``).  Memory ``X = (x_1 … x_N)``
(``[N, D]``), query ``z`` (a corrupted item)::

    key        k = W_k z                                   W_k = I
    content    c_i = cos(x_i, k) = x_iᵀk / (‖x_i‖ ‖k‖)      (a zero vector has cosine 0 with everything)
               w_i = softmax_i(c_i)                        (key strength 1)
    gates      g = exp(W_g z + b_g) ∈ R^G                  W_g = 0, b_g = 0  →  g = 1
    sharpen    w̃_ij = softmax_i(g_j log(ε + w_i))          ε = 1e-5, one column per gate j
    read       r = (1/G) Σ_j Σ_i w̃_ij x_i = Xᵀ p,   p_i = (1/G) Σ_j w̃_ij

Variant ``"annabi"``: ``G = D`` gates — the released code overwrites the gate layer with a ``D × D``
zero matrix, so ``D`` reads with separate sharpenings are averaged; ``"textbook"``: one scalar
gate ``G = 1``.  At initialisation ``w̃ ≈ w`` (``g = 1``; exactly ``w̃ ∝ ε + w``), a near-uniform
average of the items (cosines lie in ``[-1, 1]``).  The addressing reported by ``retrieve`` is ``p``
(rows sum to 1).  :meth:`NTM.fit` learns ``W_k, W_g, b_g`` (Annabi: Adam 1e-3 on codes, 1e-6 on
pixels, 20 epochs of batches of 100; NTM* on corrupted queries).

Energy (nats, lower = better match), the log-partition of the content logits::

    E(z) = log N - log Σ_i exp c_i(z)   ∈ [-1, 1]
    ∇E(z) = -Σ_i w_i W_kᵀ (x̂_i - c_i k̂) / ‖k‖      (x̂, k̂ unit vectors)

The sharpening is a learned readout of ``w`` and is not part of ``E``.  No probability model.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from torch import Tensor

from ...validation import check_choice, check_positive
from .reader import VARIANTS, AttentionReader

__all__ = ["NTM"]

_TINY = 1e-12  # norm floor: a zero key or item gets cosine 0


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_TINY)


class NTM(AttentionReader):
    """Read-only NTM head with learned sharpening (module docstring for the math).

    Args:
        dim: ``D`` (code dimension or pixels).
        variant: ``"annabi"`` (``D`` gates, reads averaged) or ``"textbook"`` (one scalar gate).
        eps: ``ε`` inside the sharpening logarithm (1e-5).
        device, dtype: where items and parameters live.

    Parameters: ``W_k`` ``[D, D]`` (identity), ``W_g`` ``[G, D]`` (zero), ``b_g`` ``[G]`` (zero).

    Example:
        >>> X = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
        >>> r = NTM(8).write(X).retrieve(X[:3])
        >>> r.index.tolist(), bool(torch.allclose(r.weights.sum(-1), torch.ones(3)))
        ([0, 1, 2], True)
    """

    default_lr = 1e-3

    def __init__(
        self,
        dim: int,
        variant: str = "annabi",
        eps: float = 1e-5,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        with pyro.settings.context(module_local_params=True):
            super().__init__(dim, device=device, dtype=dtype)
            self.variant = check_choice(variant, "variant", VARIANTS)
            self.eps = check_positive(eps, "eps")
            gates = dim if variant == "annabi" else 1
            self.W_k = self._param(torch.eye(dim))
            self.W_g = self._param(torch.zeros(gates, dim))
            self.b_g = self._param(torch.zeros(gates))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "variant": self.variant, "eps": self.eps}

    def content_logits(self, z: Tensor, items: Tensor) -> Tensor:
        """``[B, N]`` cosines ``c_i = cos(x_i, W_k z)``."""
        return _unit(z @ self.W_k.T) @ _unit(items).T

    def gates(self, z: Tensor) -> Tensor:
        """``[B, G]`` sharpening exponents ``g = exp(W_g z + b_g)``."""
        return torch.exp(z @ self.W_g.T + self.b_g)

    def attend(self, z: Tensor, items: Tensor | None = None, training: bool = False) -> tuple[Tensor, Tensor]:
        items = self.items if items is None else items
        w = torch.softmax(self.content_logits(z, items), -1)  # [B, N]
        sharp = torch.softmax(self.gates(z).unsqueeze(1) * torch.log(self.eps + w).unsqueeze(-1), dim=1)  # [B, N, G]
        p = sharp.mean(-1)
        return p @ items, torch.log(p)

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(z) = log N - logsumexp_i cos(x_i, W_k z)`` (nats; module docstring), ``z [..., D]`` →
        ``[...]``; differentiable.  ``cue``/``mask`` do not enter (the query is the cue itself)."""
        shape = z.shape[:-1]
        c = self.content_logits(z.reshape(-1, self.dim), self.items)
        return (math.log(len(self)) - torch.logsumexp(c, -1)).reshape(shape)
