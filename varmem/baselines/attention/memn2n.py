"""End-to-end memory network (MemN2N, Sukhbaatar et al. 2015) as configured by Annabi, Pitti & Quoy (2022).

Annabi et al. use MemN2N (and a read-only NTM, :mod:`varmem.baselines.ntm`) as *auto-associative*
baselines: the memory holds ``N`` clean items ``X = (x_1 … x_N)`` (``[N, D]`` rows: VAE codes or
flattened images), the query ``z`` is a corrupted item, and the read should be the clean item.
Their module (``sino7/predictive_coding_associative_memories``, ``models.py: MemN2N``), one hop::

    keys    m_i = W_m x_i            W_m = I / √D   (no biases anywhere)
    values  c_i = W_c x_i            W_c = I
    query   u   = W_u z              W_u = I / √D
    address p   = softmax_i(β α m_iᵀ u)                       β learnable (init 0.1)
    read    o   = Σ_i p_i c_i
    output  a   = W_a o              W_a = I        (variant "annabi": o only, the released code)
            a   = W_a (o + u)                       (variant "textbook": Sukhbaatar et al.'s o + u)

``α = 1`` while training (:meth:`MemN2N.fit`) and ``α = 100`` when reading (``retrieve``).  At the
identity initialisation the read is the one-step modern Hopfield (dot-product) update
``a = Xᵀ softmax(κ X z)`` with ``κ = β α / D`` (``= 0.1·100/D``).

Energy (nats, lower = better match; ``ℓ_i(z) = β α m_iᵀ W_u z`` the addressing logits at reading)::

    E(z) = log N - log Σ_i exp ℓ_i(z)          ∇E(z) = -β α W_uᵀ W_m Xᵀ p(z)

so ``-max_i ℓ_i ≤ E ≤ log N - max_i ℓ_i`` and, at the identity initialisation,
``a = -∇E / κ`` (equivalently ``a = z - ∇(E/κ + ½‖z‖²)``, Ramsauer's CCCP step at ``β = κ``).
MemN2N is a trained deterministic reader, not a density: it has no Pyro model.

What both attention readers share (the stored items, the training loop, :func:`encode_codes`) is in
:mod:`varmem.baselines.attention.reader`; they are read with the ``"attention"`` engine.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from torch import Tensor

from ...validation import check_choice, check_finite, check_positive
from .reader import VARIANTS, AttentionReader

__all__ = ["MemN2N"]


class MemN2N(AttentionReader):
    """One-hop MemN2N auto-associative reader of Annabi et al. (module docstring for the math).

    Args:
        dim: ``D`` (code dimension or pixels).
        alpha: ``α`` at reading (100 in Annabi et al.).
        train_alpha: ``α`` in :meth:`fit` (1 in Annabi et al.).
        beta_init: initial learnable ``β`` (0.1).
        variant: ``"annabi"`` (output ``W_a o``) or ``"textbook"`` (output ``W_a (o + u)``).
        device, dtype: where items and parameters live.

    Parameters (``nn.Linear`` convention ``y = W x``): ``W_m, W_c, W_u, W_a`` ``[D, D]``, ``beta`` ``[]``.
    ``fit`` learning rates in Annabi's ``options.py``: CLEVR code 1e-2, CLEVR pixels 1e-7, CIFAR-10
    code 1e-4 (the default here), CIFAR-10 pixels 2e-5; 20 epochs, batches of 100.

    Example:
        >>> X = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
        >>> mem = MemN2N(8).write(X)
        >>> r = mem.retrieve(X[:3])
        >>> r.weights.shape, r.index.tolist()
        (torch.Size([3, 20]), [0, 1, 2])
    """

    default_lr = 1e-4

    def __init__(
        self,
        dim: int,
        alpha: float = 100.0,
        train_alpha: float = 1.0,
        beta_init: float = 0.1,
        variant: str = "annabi",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        with pyro.settings.context(module_local_params=True):
            super().__init__(dim, device=device, dtype=dtype)
            self.alpha = check_positive(alpha, "alpha")
            self.train_alpha = check_positive(train_alpha, "train_alpha")
            self.beta_init = check_finite(beta_init, "beta_init")
            self.variant = check_choice(variant, "variant", VARIANTS)
            eye = torch.eye(dim)
            self.W_m = self._param(eye / math.sqrt(dim))
            self.W_c = self._param(eye.clone())
            self.W_u = self._param(eye / math.sqrt(dim))
            self.W_a = self._param(eye.clone())
            self.beta = self._param(torch.tensor(self.beta_init))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "alpha": self.alpha, "train_alpha": self.train_alpha,
                "beta_init": self.beta_init, "variant": self.variant}

    def logits(self, z: Tensor, items: Tensor, alpha: float) -> Tensor:
        """``[B, N]`` addressing logits ``ℓ_i = β α (W_m x_i)ᵀ (W_u z)``."""
        return self.beta * alpha * (z @ self.W_u.T) @ (items @ self.W_m.T).T

    def attend(self, z: Tensor, items: Tensor | None = None, training: bool = False) -> tuple[Tensor, Tensor]:
        items = self.items if items is None else items
        log_p = torch.log_softmax(self.logits(z, items, self.train_alpha if training else self.alpha), -1)
        o = log_p.exp() @ (items @ self.W_c.T)
        if self.variant == "textbook":
            o = o + z @ self.W_u.T
        return o @ self.W_a.T, log_p

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(z) = log N - logsumexp_i ℓ_i(z)`` at reading ``α`` (nats; module docstring), ``z [..., D]``
        → ``[...]``; differentiable in ``z`` and the parameters.  ``cue``/``mask`` do not enter: the
        query is the (zero-filled) cue itself, not clamped."""
        shape = z.shape[:-1]
        ell = self.logits(z.reshape(-1, self.dim), self.items, self.alpha)
        return (math.log(len(self)) - torch.logsumexp(ell, -1)).reshape(shape)
