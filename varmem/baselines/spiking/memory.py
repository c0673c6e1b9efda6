"""A spiking low-rank memory on a box-shaped latent polytope: a **reconstruction** of Podlaski & Machens (2024).

**Status: reconstruction, not the published model.**  The body of "Storing overlapping associative memories
on latent manifolds in low-rank spiking networks" (arXiv 2411.17485, NeurReps 2024) could not be read.  What
is verified is the abstract (memories at the vertices of a hypercubic latent manifold, a direct
correspondence to the Hopfield model, several learning rules, capacity linear in the number of neurons) and
the spiking framework of the predecessor paper (Podlaski & Machens, Neural Computation 36(5), 2024; its
official simulator): voltages ``V = F x + E y + b``, recurrent weights ``W = E D``, thresholds rescaled to 1
(``b = 1 - T``), at most one spike per Euler step, ``dt = 0.1 ms``, ``τ = 10 ms``, voltage noise.  Everything
marked [U] below is our construction; each such choice is one function or constant of this module, so it is
easy to replace once the paper's equations are known.

Geometry (``K = dim`` latent units, ``N = 2K`` neurons; neuron ``k`` bounds the face ``y_k ≤ 1``, neuron
``K + k`` the face ``-y_k ≤ 1``) [U]::

    E = [I; -I]  [N, K]        D = δ [-I, I]  [K, N]        T = 1  [N]        b = 1 - T = 0
    V = E y + b (+ η)          neuron i silent while E_i·y < T_i: the box  [-1, 1]^K  is the polytope
    W = E D = δ [[-I, I], [I, -I]]   (fast: the diagonal -δ is each neuron's self-reset; opposite faces of one
                                      axis excite each other, so the network is E/I, not all-inhibitory)

Memories: ``P`` patterns ``ξ^μ ∈ {±1}^K`` are vertices of the box.  The latent weights ``A`` [U]:

* ``"hebbian"``: ``A = (1/K) Σ_μ ξ^μ ξ^μᵀ``, diagonal set to 0 (exactly ``ClassicalHopfield``'s Hebbian ``W``);
* ``"pseudoinverse"``: ``A = Ξᵀ (Ξ Ξᵀ)⁺ Ξ`` (the projection onto the span of the patterns; Personnaz et al.
  1985, Kanter & Sompolinsky 1987), diagonal set to 0.

Dynamics (latent form; ``y = D r``, ``r`` the filtered spike trains) [U: the slow connections]::

    τ dy/dt = A y + τ D s(t)                      (spiking engine: s(t) the spikes of the neurons)
    τ dy/dt = A y   inside the box, projected on it (latent engine: the brain-state-in-a-box model)

The slow latent flow ``A y = (G - I) y`` with ``G = A + I`` is the network's slow recurrent current through
the rank-``K`` weights ``W_slow = E G D``: the self-coupling ``I`` cancels the leak.  In voltage form
``τ dV/dt = -(V - b) + E G y + τ W s``, the framework's equation with its slow input.

Vertex stability (exact identity): at a vertex ``ξ`` every face ``i`` with ``E_i·ξ = T_i`` is active; ``ξ`` is
a stable fixed point of the latent flow iff the flow points out of every active face,
``E_i·(A ξ) > 0`` — for the box this is ``ξ_k (A ξ)_k > 0`` for all ``k``, the Hopfield fixed-point condition
``sign(A ξ) = ξ`` with strict fields.  :meth:`SpikingLowRankMemory.vertex_stable` computes it from the
geometry (``E``, ``T``) and the flow; the tests compare it with the Hopfield condition.

The cue sets the start, ``y₀ = start_scale · sign(cue)`` (the framework's ``V(0) = F x(0) + E y₀ + b`` with
no input afterwards, ``F x = 0``) [U].

Where to correct it when the paper is read: the geometry is :meth:`~SpikingLowRankMemory.encoders`,
:meth:`~SpikingLowRankMemory.decoders` and :meth:`~SpikingLowRankMemory.thresholds` (the spiking engine
uses only ``E``, ``D`` and ``b``, for any polytope); the rules are :func:`learning_rule`; the slow flow is
:meth:`~SpikingLowRankMemory.latent_flow`; the start is :meth:`~SpikingLowRankMemory.init_latent`.  The
latent engine's projection (``clip`` to ``[-1, 1]``) is specific to the box.

Energy: ``E(y) = -½ yᵀ A y`` (no constant; ``-∂E/∂y = A y`` is the latent flow, so the projected flow never
raises it for symmetric ``A``).  There is no Pyro model: the memory is a dynamical system, not a density.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...domains import SPIN
from ...memory import Memory
from ...validation import as_state, check_choice, check_positive
from ..spin import check_bipolar
from .engines import retrieve_latent, retrieve_spiking

__all__ = ["SpikingLowRankMemory", "RULES", "learning_rule"]

RULES = ("hebbian", "pseudoinverse")


def learning_rule(patterns: Tensor, rule: str) -> Tensor:
    """``A [K, K]`` from ``patterns [P, K]`` (±1) by ``rule`` (module docstring), zero diagonal [U]."""
    K = patterns.shape[-1]
    if patterns.shape[0] == 0:
        return patterns.new_zeros(K, K)
    if rule == "hebbian":
        a = patterns.T @ patterns / K
    else:
        gram = patterns @ patterns.T  # [P, P]
        a = patterns.T @ torch.linalg.pinv(gram, hermitian=True) @ patterns
        a = 0.5 * (a + a.T)  # symmetric to rounding
    return a.fill_diagonal_(0.0)


class SpikingLowRankMemory(Memory):
    """±1 patterns stored at the vertices of a box in latent space, read by a low-rank spiking network
    (``method="spiking"``) or by its latent rate limit (``method="latent"``).  **A reconstruction** of
    Podlaski & Machens (2024): see the module docstring for what is verified and what is ours.

    Args:
        dim: ``K``, the latent dimension (= the pattern length; the network has ``N = 2K`` neurons).
        rule: ``"hebbian"`` or ``"pseudoinverse"`` (the latent weights ``A``).
        spike_size: ``δ ∈ (0, 1]``, the norm of each decoder column: one spike moves ``y`` by ``δ`` back into
            the box.  With one spike per Euler step the network holds the box only while
            ``δ ≥ (dt/τ) Σ_k |(A y)_k|`` (about ``K dt/τ`` at a vertex): use a small ``dt`` for large ``K``, or
            the engine option ``one_spike_per_step=False``.
        tau: ``τ`` in seconds (membrane and synaptic time constant; the framework's 10 ms).
        device, dtype: where the state lives.

    State: ``items`` ``[P, K]`` (the stored patterns); ``A`` is derived from them.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> patterns = torch.randint(0, 2, (3, 64), generator=g).double() * 2 - 1
        >>> memory = SpikingLowRankMemory(64, dtype=torch.float64).write(patterns)
        >>> cue = patterns.clone(); cue[:, :10] *= -1                           # 10 of 64 bits flipped
        >>> bool((memory.retrieve(cue, method="latent").pattern == patterns).all())
        True
    """

    methods = (retrieve_latent, retrieve_spiking)
    default_method = "latent"
    value_domain = SPIN

    def __init__(
        self,
        dim: int,
        rule: str = "hebbian",
        spike_size: float = 0.1,
        tau: float = 0.01,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.rule = check_choice(rule, "rule", RULES)
        self.spike_size = check_positive(spike_size, "spike_size")
        if self.spike_size > 1:
            raise ValueError(f"spike_size must lie in (0, 1] (a spike moves y by at most the box half-width), "
                             f"got {spike_size!r}")
        self._tau = check_positive(tau, "tau")
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self.register_buffer("latent_weight", torch.zeros(dim, dim, device=self.device, dtype=self.dtype),
                             persistent=False)

    @property
    def tau(self) -> float:
        """``τ`` in seconds."""
        return self._tau

    # --- protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "rule": self.rule, "spike_size": self.spike_size, "tau": self.tau}

    def write(self, items: Any) -> "SpikingLowRankMemory":
        """Store bipolar patterns ``[P, K]`` (or one ``[K]``); ``A`` is recomputed from all stored patterns."""
        xi = check_bipolar(self.prepare_items(items))
        stored = torch.cat([self.items, xi])
        weight = learning_rule(stored, self.rule)
        if not bool(torch.isfinite(weight).all()):
            raise FloatingPointError(f"the {self.rule} rule gave NaN or inf in {self.dtype} (nothing was stored)")
        self.items, self.latent_weight = stored, weight
        return self

    def check_state(self) -> None:
        self.check_stored_items()
        check_bipolar(self.items, "stored items")

    def refresh_derived_state(self) -> None:
        self.latent_weight = learning_rule(self.items, self.rule)

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(y) = -½ yᵀ A y`` for ``z [..., K]`` → ``[...]``.  The cue only sets the start of a read (the
        dynamics do not clamp it), so it does not enter the energy."""
        return -0.5 * ((z @ self.latent_weight) * z).sum(-1)

    # --- geometry (the parts of the framework; [U] for the box) ----------------------------------------
    @property
    def num_neurons(self) -> int:
        """``N = 2K``."""
        return 2 * self.dim

    def encoders(self) -> Tensor:
        """``E = [I; -I]`` ``[N, K]``: neuron ``i``'s voltage is ``E_i·y + b_i``."""
        eye = torch.eye(self.dim, device=self.device, dtype=self.dtype)
        return torch.cat([eye, -eye])

    def decoders(self) -> Tensor:
        """``D = δ [-I, I]`` ``[K, N]``: a spike of neuron ``i`` moves ``y`` by ``D[:, i]`` (into the box)."""
        return -self.spike_size * self.encoders().T

    def thresholds(self) -> Tensor:
        """``T = 1`` ``[N]``: the box ``{y : E y ≤ T} = [-1, 1]^K``."""
        return torch.ones(self.num_neurons, device=self.device, dtype=self.dtype)

    def bias(self) -> Tensor:
        """``b = 1 - T`` ``[N]`` (thresholds rescaled to 1, as in the framework)."""
        return 1.0 - self.thresholds()

    def voltages(self, y: Tensor, noise: Tensor | None = None) -> Tensor:
        """``V = E y + b (+ η)`` ``[B, N]`` at latent states ``y [B, K]`` (no external input: ``F x = 0``)."""
        v = y @ self.encoders().T + self.bias()
        return v if noise is None else v + noise

    def recurrent_weights(self) -> tuple[Tensor, Tensor]:
        """``(W, W_slow)`` ``[N, N]``: the fast ``W = E D`` (diagonal: the self-reset ``-δ``) and the slow
        ``W_slow = E (A + I) D``, both of rank ``K``."""
        e, d = self.encoders(), self.decoders()
        g = self.latent_weight + torch.eye(self.dim, device=self.device, dtype=self.dtype)
        return e @ d, e @ g @ d

    def latent_flow(self, y: Tensor) -> Tensor:
        """``τ dy/dt = A y`` (without spikes): ``[B, K]`` (``= -∂E/∂y``)."""
        return y @ self.latent_weight  # A symmetric

    def vertex_stable(self, vertices: Any) -> Tensor:
        """``[B]`` bool: is each vertex ``ξ`` ``[B, K]`` (±1) a stable fixed point of the latent flow?

        Computed from the geometry: the faces active at ``ξ`` are the neurons at threshold, ``E_i·ξ = T_i``;
        the vertex is stable iff the flow ``A ξ`` points strictly out of each of them, ``E_i·(A ξ) > 0``
        (for the box: ``ξ_k (A ξ)_k > 0`` for all ``k``, the Hopfield fixed-point condition).
        """
        xi = check_bipolar(as_state(vertices, self.dim, self.dtype, self.device, "vertices"), "vertices")
        if xi.dim() == 1:
            xi = xi.unsqueeze(0)
        e, t = self.encoders(), self.thresholds()
        active = (xi @ e.T) == t  # [B, N]: exactly the faces whose neuron sits at threshold
        outward = self.latent_flow(xi) @ e.T > 0  # [B, N]
        return (outward | ~active).all(-1)

    def init_latent(self, cue: Tensor, mask: Tensor | None, start_scale: float) -> Tensor:
        """Start of a read: ``y₀ = start_scale · sign(cue)`` on observed entries (0 → +1), 0 on free ones."""
        y = torch.where(cue >= 0, 1.0, -1.0).to(cue.dtype) * start_scale
        return y if mask is None else torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
