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
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from ..capabilities import Step
from ..helpers import start_state
from ..inference import retrieve_async, retrieve_fixed_point, retrieve_sync
from ..memory import Memory
from ..validation import check_choice

__all__ = ["ClassicalHopfield", "SpinMemory"]

RULES = ("hebbian", "storkey")


def _sign(x: Tensor, current: Tensor, tol: float = 0.0) -> Tensor:
    """``sign(x)``; where ``|x| ≤ tol`` (a tie) keep ``current`` (and +1 where that is 0 too)."""
    keep = torch.where(current == 0, torch.ones_like(current), current)
    return torch.where(x > tol, 1.0, torch.where(x < -tol, -1.0, keep)).to(current.dtype)


def check_bipolar(x: Tensor, name: str = "items") -> Tensor:
    """Raise ``ValueError`` unless every entry of ``x`` is exactly ±1."""
    if not (x.abs() == 1).all():
        raise ValueError(
            f"{name} must be bipolar: every entry exactly -1 or +1 (convert with varmem.normalize_patterns(x, 'sign'))"
        )
    return x


class SpinMemory(Memory):
    """Shared hooks of the binary (±1) memories, used by the ``"sync"``, ``"async"`` and ``"fixed_point"``
    engines (:class:`varmem.capabilities.SpinDynamics`).  Subclasses define ``compute_energy``,
    ``spin_cache``, ``preferred_spins`` and ``update_cache``.  No Pyro model: the Boltzmann
    distribution over ``2^D`` states is not tractable to normalise; reading is the sign dynamics."""

    methods = (retrieve_async, retrieve_sync, retrieve_fixed_point)
    default_method = "async"

    def init_spins(self, cue: Tensor, mask: Tensor | None) -> Tensor:
        """``[B, D]`` start state: ``sign(cue)`` (0 → +1) on observed entries, 0 on free ones."""
        s = torch.where(cue >= 0, 1.0, -1.0).to(cue.dtype)
        return s if mask is None else torch.where(mask, s, torch.zeros((), dtype=s.dtype, device=s.device))

    @abstractmethod
    def spin_cache(self, s: Tensor) -> Tensor:
        """Fields that make one unit's update cheap (kept up to date by :meth:`update_cache`)."""

    @abstractmethod
    def preferred_spins(self, s: Tensor, cache: Tensor, units: Tensor | None = None) -> Tensor:
        """The energy-minimising value of each unit given all the others: ``[B, D]`` for ``units=None``,
        else ``[B]`` for one unit per cue (``units [B]``).  Ties keep the current value."""

    @abstractmethod
    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None:
        """In place: account for ``s[b, units[b]] += delta[b]``."""

    def clamped(self, z: Tensor, cue: Tensor | None, mask: Tensor | None) -> Tensor:
        """``z`` with the observed units of a partial cue set to the cue's signs (0 → +1)."""
        if cue is None or mask is None:
            return z
        return torch.where(mask, torch.where(cue >= 0, 1.0, -1.0).to(z.dtype), z)

    # --- hooks of the generic "fixed_point" engine (synchronous updates) ---------------------------
    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        start = start_state(init, cue, {"cue": lambda: self.init_spins(cue, mask)}, self)
        if not torch.is_tensor(init):
            return start
        s = self.init_spins(start, None)  # a given state: its signs, observed entries from the cue
        return s if mask is None else torch.where(mask, self.init_spins(cue, None), s)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One synchronous update (observed entries stay clamped), with ``E(z)`` when asked; weights and
        index where the memory defines them over its stored patterns."""
        new = self.preferred_spins(z, self.spin_cache(z))
        if mask is not None:
            new = torch.where(mask, z, new)
        w = top = None
        if (weights or index) and hasattr(self, "item_weights"):
            w, top = self.item_weights(z, None if weights else False)
        return Step(state=new, energy=self.compute_energy(z) if energy else None, weights=w, index=top)


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
            return _sign(cache, s, self._tie_tol())
        rows = torch.arange(s.shape[0], device=s.device)
        return _sign(cache[rows, units], s[rows, units], self._tie_tol())

    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None:
        cache.add_(delta.unsqueeze(-1) * self.weight[units])  # W symmetric: row = column
