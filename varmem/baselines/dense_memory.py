"""Dense associative memory of Krotov & Hopfield (2016) and its exponential form (Demircigil et al. 2017).

Spins ``σ ∈ {±1}^D``, stored bipolar patterns ``ξ_μ`` (``K`` rows of ``X``), interaction function ``F``::

    E(σ) = -Σ_μ F(ξ_μ · σ)

    F(x) = x^a                     interaction="polynomial"  (a ≥ 2 an integer; a = 2 is the classical
                                                              Hopfield energy up to scale and a constant)
    F(x) = max(x, 0)^a             interaction="polynomial", rectified=True (the rectified polynomial
                                                              Krotov & Hopfield use on MNIST)
    F(x) = exp(β x)                interaction="exponential" (Demircigil et al.; β = 1 is their model)

Update (the standard spin-flip rule, Krotov & Hopfield eq. 3): a unit takes the value of lower energy
given the others,

    σ_i ← sign( Σ_μ [F(ξ_μi + Σ_{j≠i} ξ_μj σ_j) - F(-ξ_μi + Σ_{j≠i} ξ_μj σ_j)] )  =  sign(E(σ_i=-1) - E(σ_i=+1)),

a tie (to rounding) keeps ``σ_i``.  The bracket is ``-∫_{-1}^{1} ∂E/∂σ_i dσ_i``: for ``a = 2`` this is ``-2 ∂E/∂σ_i`` at
``σ_i = 0``, in general the sign of a finite difference, not of the gradient.  Asynchronous updates never
increase ``E``; synchronous ones (all units from the same state, as in the paper's equation) may.  The
comparison is computed scale-free (overlaps divided by ``D`` for the polynomial, log-sum-exp for the
exponential), so it does not overflow; :meth:`DenseAssociativeMemory.energy` returns the raw energy.

Capacity (random patterns, ``D`` neurons): ``≈ D^{a-1} / (2 (2a-3)!! ln D)`` exactly-stable patterns for
``F = x^a``; exponential in ``D`` (``≈ 2^{D/2}``) for ``F = exp``.  Partial cues clamp observed entries
(see :mod:`varmem.baselines.classical_hopfield`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..helpers import want_weights
from ..validation import check_bool, check_choice, check_int, check_positive
from .spin import SpinMemory, check_bipolar, sign_with_ties

__all__ = ["DenseAssociativeMemory"]

INTERACTIONS = ("polynomial", "exponential")


class DenseAssociativeMemory(SpinMemory):
    """Krotov–Hopfield dense associative memory (see the module docstring).

    Args:
        dim: ``D``, the number of spins.
        power: ``a`` for ``interaction="polynomial"`` (an int ≥ 2; ignored for the exponential).
        interaction: ``"polynomial"`` or ``"exponential"``.
        rectified: use ``F(x) = max(x, 0)^a``.
        beta: the exponential's inverse temperature (overlaps of ±1 patterns are ``O(D)``).
        device, dtype: where the patterns live.

    Methods: ``"async"`` (default; never increases ``E``), ``"sync"`` and ``"fixed_point"`` (synchronous).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> patterns = torch.randint(0, 2, (40, 30), generator=g).double() * 2 - 1   # 40 > 0.14·30
        >>> dam = DenseAssociativeMemory(30, power=4).write(patterns)
        >>> bool((dam.retrieve(patterns).pattern == patterns).all())
        True
    """

    def __init__(
        self,
        dim: int,
        power: int = 3,
        interaction: str = "polynomial",
        *,
        rectified: bool = False,
        beta: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        check_choice(interaction, "interaction", INTERACTIONS)
        power = check_int(power, "power", minimum=2)
        rectified = check_bool(rectified, "rectified")
        self.interaction = interaction
        self.power = power
        self.rectified = rectified
        self.beta = check_positive(beta, "beta")
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "power": self.power,
            "interaction": self.interaction,
            "rectified": self.rectified,
            "beta": self.beta,
        }

    def check_state(self) -> None:
        self.check_stored_items()
        check_bipolar(self.items, "stored patterns")

    def write(self, items: Any) -> "DenseAssociativeMemory":
        """Append bipolar patterns ``[K, D]`` (or one ``[D]``)."""
        self.append_rows("items", check_bipolar(self.prepare_items(items)))
        return self

    # --- energy ------------------------------------------------------------------------------------
    def interaction_fn(self, x: Tensor) -> Tensor:
        """``F(x)`` elementwise (raw scale)."""
        if self.interaction == "exponential":
            return torch.exp(self.beta * x)
        return (x.clamp_min(0) if self.rectified else x) ** self.power

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(σ) = -Σ_μ F(ξ_μ·σ)`` for ``z [..., D]`` → ``[...]``, the observed units of a partial cue
        clamped to its signs.  Differentiable in ``z`` (the continuous extension used by the tests)."""
        return -self.interaction_fn(self.clamped(z, cue, mask) @ self.items.T).sum(-1)

    def _preference(self, base: Tensor, xi: Tensor) -> Tensor:
        """``E(σ_i=-1) - E(σ_i=+1)`` up to a positive factor, over the last (pattern) dim, in float64.

        ``base`` = overlaps without unit ``i`` and ``xi`` = ``ξ_μi``, broadcast together.  Overlaps are
        integers, so the polynomial preference ``Σ_μ F(b_μ + ξ_μ) - F(b_μ - ξ_μ)`` is computed exactly
        in float64 while ``(D + 1)^a < 2^53`` (then a tie is an exact 0 whatever the memory's dtype).
        """
        base, xi = base.double(), xi.double()
        if self.interaction == "exponential":
            return torch.logsumexp(self.beta * (base + xi), -1) - torch.logsumexp(self.beta * (base - xi), -1)
        scale = 1.0 if self._exact_polynomial else 1.0 / self.dim  # F homogeneous: scaling keeps the sign
        plus, minus = (base + xi) * scale, (base - xi) * scale
        if self.rectified:
            plus, minus = plus.clamp_min(0), minus.clamp_min(0)
        return (plus**self.power - minus**self.power).sum(-1)

    @property
    def _exact_polynomial(self) -> bool:
        """Whether integer polynomial preferences are exact in float64: ``K (D + 1)^a < 2^53``."""
        return self.interaction == "polynomial" and max(len(self), 1) * (self.dim + 1) ** self.power < 2**53

    def _tie_tol(self) -> float:
        """Preferences within rounding of 0 are ties: 0 when they are exact integers; otherwise (float64)
        each scaled polynomial term is at most 1 in size, the log-sum-exps at most ``β D + log K``."""
        if self._exact_polynomial:
            return 0.0
        k = max(len(self), 1)
        size = k if self.interaction == "polynomial" else self.beta * self.dim + math.log(k)
        return 1e3 * torch.finfo(torch.float64).eps * size

    # --- hooks of the sign-dynamics engines ---------------------------------------------------------
    def spin_cache(self, s: Tensor) -> Tensor:
        """Overlaps ``m = σ Xᵀ`` ``[B, K]``."""
        return s @ self.items.T

    def preferred_spins(self, s: Tensor, cache: Tensor, units: Tensor | None = None) -> Tensor:
        if units is None:  # all units: [B, D, K] overlaps without unit i (O(B·D·K) memory)
            xi = self.items.T.unsqueeze(0)  # [1, D, K]
            base = cache.unsqueeze(1) - xi * s.unsqueeze(-1)
            return sign_with_ties(self._preference(base, xi), s, self._tie_tol())
        rows = torch.arange(s.shape[0], device=s.device)
        xi = self.items.T[units]  # [B, K]
        current = s[rows, units]
        base = cache - xi * current.unsqueeze(-1)
        return sign_with_ties(self._preference(base, xi), current, self._tie_tol())

    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None:
        cache.add_(delta.unsqueeze(-1) * self.items.T[units])

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(softmax_μ(β ξ_μ·σ) [B, K] or None, argmax_μ ξ_μ·σ [B])``.  The weights are defined for the
        exponential interaction only (its energy is a log-sum-exp of ``β ξ_μ·σ``); the polynomial
        memory returns ``None`` (and refuses ``return_weights=True``) with the arg-max overlap."""
        overlaps = z @ self.items.T
        if self.interaction != "exponential":
            if return_weights:
                raise ValueError("weights over stored patterns are defined for interaction='exponential' only")
            return None, overlaps.argmax(-1)
        dense = want_weights(return_weights, z.shape[0], len(self))
        return (torch.softmax(self.beta * overlaps, -1) if dense else None), overlaps.argmax(-1)
