"""The classical binary Hopfield network (Hopfield 1982) with Hebbian or Storkey learning.

States are spins ``s ∈ {-1, +1}^D``; ``W`` is symmetric with zero diagonal.  Energy (no thresholds)::

    E(s) = -½ sᵀ W s,            -∂E/∂s = W s = h  (the local field; w_ii = 0 so h_i does not contain s_i)

Learning (``n = D`` neurons, patterns ``ξ^ν ∈ {±1}^n`` written one after another):

* ``"hebbian"``: ``W = (1/n) Σ_ν ξ^ν ξ^νᵀ`` with ``w_ii = 0`` (order-free, one matrix product);
* ``"storkey"`` (Storkey 1997, local and incremental)::

      w_ij ← w_ij + (1/n) (ξ_i ξ_j - ξ_i h_ji - h_ij ξ_j),     h_ij = Σ_{k≠i,j} w_ik ξ_k,

  applied pattern by pattern (each step depends on the previous ``W``), then ``w_ii = 0``.

Dynamics (engines ``"async"``, ``"sync"``, ``"fixed_point"``; see :mod:`varmem.inference.sign_dynamics`):
``s_i ← sign(h_i)``, a tie ``h_i = 0`` (to rounding: ``|h_i| ≤ 10³ ε D max|w|``) keeps ``s_i``.
Asynchronously (one unit at a time, random order)
each flip changes the energy by ``ΔE = -Δs_i h_i ≤ 0``, so ``E`` never increases and the dynamics stop at a
fixed point; synchronously (all units at once) ``E`` can rise and the dynamics end in a fixed point or a
2-cycle (Goles et al. 1985).

Capacity (``n`` neurons, random patterns): Hebbian ≈ 0.138 n with a few % of bit errors (Amit, Gutfreund and
Sompolinsky 1985), ``n / (2 ln n)`` patterns exactly stable (McEliece et al. 1987); Storkey ``n / √(2 ln n)``.

Partial cues: observed entries (``mask``) are clamped to ``sign(cue)``; free entries start at 0 (no evidence)
and take ±1 at their first update.  Real-valued cues are read through their sign (0 → +1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..validation import check_choice
from .spin import SpinMemory, check_bipolar, sign_with_ties

__all__ = ["ClassicalHopfield"]

RULES = ("hebbian", "storkey")


class ClassicalHopfield(SpinMemory):
    """Binary Hopfield network with Hebbian or Storkey weights (see the module docstring).

    Args:
        dim: ``n``, the number of neurons.
        rule: ``"hebbian"`` or ``"storkey"``.
        device, dtype: where ``W`` lives.

    State: ``weight`` ``[n, n]`` (symmetric, zero diagonal) and ``count`` (patterns written).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> patterns = torch.randint(0, 2, (5, 100), generator=g).double() * 2 - 1
        >>> net = ClassicalHopfield(100).write(patterns)
        >>> cue = patterns[:1].clone(); cue[0, :10] *= -1                  # 10 % flipped bits
        >>> bool((net.retrieve(cue, method="async").pattern == patterns[:1]).all())
        True
    """

    def __init__(
        self,
        dim: int,
        rule: str = "hebbian",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.rule = check_choice(rule, "rule", RULES)
        self.register_buffer("weight", torch.zeros(dim, dim, device=self.device, dtype=self.dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=self.device))

    def __len__(self) -> int:
        return int(self.count)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "rule": self.rule}

    def check_state(self) -> None:
        w = self.weight
        if w.shape != (self.dim, self.dim):
            raise ValueError(f"weight must have shape [{self.dim}, {self.dim}], got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError("weight contains NaN or inf")
        if not torch.allclose(w, w.T) or bool(w.diagonal().ne(0).any()):
            raise ValueError("weight must be symmetric with a zero diagonal")
        if int(self.count) < 0:
            raise ValueError(f"count must be >= 0, got {int(self.count)}")

    def write(self, items: Any) -> "ClassicalHopfield":
        """Store bipolar patterns ``[K, n]`` (or one ``[n]``) with the memory's rule."""
        xi = check_bipolar(self.prepare_items(items))
        n = self.dim
        if self.rule == "hebbian":
            w = self.weight + xi.T @ xi / n
        else:
            w = self.weight.clone()
            for x in xi:  # Storkey's rule is sequential: each pattern sees the previous W
                # with h_ij = h_i - w_ij ξ_j (h = Wξ, w_ii = 0) and ξ_j² = 1 the rule is the rank-2 update
                # ΔW = (1/n)(ξ(ξ - h)ᵀ - hξᵀ) + (2/n) W
                h = w @ x
                w.mul_(1 + 2 / n).add_(torch.outer(x, x - h).sub_(torch.outer(h, x)), alpha=1 / n)
                w.fill_diagonal_(0.0)
        w.fill_diagonal_(0.0)
        self.weight = w
        self.count = self.count + xi.shape[0]
        return self

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(s) = -½ sᵀ W s`` for ``z [..., n]`` → ``[...]``, the observed units of a partial cue
        clamped to its signs (a full cue is only the initial state)."""
        z = self.clamped(z, cue, mask)
        return -0.5 * ((z @ self.weight) * z).sum(-1)

    def spin_cache(self, s: Tensor) -> Tensor:
        """Local fields ``h = s W`` ``[B, n]``."""
        return s @ self.weight

    def _tie_tol(self) -> float:
        """Fields within rounding of 0 are ties (so incremental and fresh fields agree on them).

        Hebbian fields are multiples of ``1/n`` (``w_ij`` are integers over ``n``, spins are 0 or ±1), so
        any ``|h| < 1/(2n)`` is an exact 0: the decision is exact in float32 as in float64.  Storkey
        weights have no lattice: the tolerance is a few times the typical rounding error of a field,
        ``4 √n ε max_i Σ_j |w_ij|``.
        """
        if getattr(self, "_tol_weight", None) is not self.weight:  # recomputed when W is replaced
            self._tol_weight = self.weight
            if self.rule == "hebbian":
                self._tol = 0.5 / self.dim
            else:
                row_sum = float(self.weight.abs().sum(-1).max()) if self.dim else 0.0
                self._tol = 4 * math.sqrt(self.dim) * torch.finfo(self.dtype).eps * row_sum
        return self._tol

    def preferred_spins(self, s: Tensor, cache: Tensor, units: Tensor | None = None) -> Tensor:
        if units is None:
            return sign_with_ties(cache, s, self._tie_tol())
        rows = torch.arange(s.shape[0], device=s.device)
        return sign_with_ties(cache[rows, units], s[rows, units], self._tie_tol())

    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None:
        cache.add_(delta.unsqueeze(-1) * self.weight[units])  # W symmetric: row = column
