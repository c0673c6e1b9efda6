"""Correlated Dense Associative Memory (CDAM; T. F. Burns, ICML 2024, arXiv 2404.07123).

``p`` stored patterns ``X = (x_1 … x_p)`` (``[p, n]`` rows), a memory graph on them with adjacency
``A`` (``[p, p]``, ``A_μν`` = weight of the edge μ → ν; directed allowed) and its normalisation
``M``.  With auto-association strength ``a``, hetero-association strength ``h``, inverse
temperature ``β`` and step ``η``::

    S = a I + h M                                   ([p, p]; target of memory μ: q_μ = Σ_ν S_μν x_ν)
    g(σ) = softmax(β X σ)                           ([p], attention over the memories)
    σ ← σ + η (Sᵀ g(σ) X - σ)    i.e.   σ ← σ + η (Q g - σ),  Q = a Ξ + h Ξ Mᵀ  (columns Ξ = Xᵀ)

(the reference's form, without its mean-pattern term, whose definition we could not verify).
Four dynamical modes (Burns 2024, abstract), reproduced by ``experiments/cdam_modes.py``:
auto-association (``a > 0``, ``h = 0``: stays at the cue), narrow hetero-association (``h > 0``:
moves to graph neighbours), wide hetero-association (anti-Hebbian ``a < 0`` with ``h > 0``:
spreads over the cue's community) and neutral quiescence (weak drive: activity decays).

**Energy (ours).**  With the Gram matrix ``G = X Xᵀ`` (patterns linearly independent), write
``σ = Xᵀ c + σ⊥`` (``c = G⁻¹ X σ``, ``X σ⊥ = 0``) and define, for invertible ``S``,

    E(σ) = ½ ‖σ⊥‖² + ½ cᵀ K c - β⁻¹ log Σ_μ exp(β x_μᵀσ),      K = sym(G S⁻ᵀ)

(no additive constants).  When ``Sᵀ G⁻¹`` is symmetric (e.g. orthogonal patterns and a symmetric
``S``), ``Sᵀ g X - σ = -P ∇E(σ)`` exactly, with ``P = Xᵀ Sᵀ G⁻¹ X + (I - Xᵀ G⁻¹ X)``; if moreover
``Sᵀ G⁻¹ ≻ 0``, ``P = (∇²(½σᵀP⁻¹σ))⁻¹`` and the update with ``η = 1`` is the CCCP step of ``E``
(convex quadratic minus convex log-sum-exp), so for every ``η ∈ (0, 1]`` the energy never
increases (:meth:`CorrelatedDenseMemory.is_lyapunov`).  For ``h = 0`` this is the modern-Hopfield
energy with ``a`` as a gain.  For a directed (asymmetric) graph ``Sᵀ G⁻¹`` is not symmetric, the
field is not a gradient, and the dynamics can cycle (sequence recall): no energy decreases along
a limit cycle.  ``E`` is reported anyway (``NaN`` when ``S`` or ``G`` is singular) and the
conditions are checked by :meth:`is_conservative` / :meth:`is_lyapunov`.

:func:`ring_graph` and :func:`karate_club_graph` (Zachary 1977, the 78 edges and the two clubs as
networkx ships them) give the reference's test graphs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..capabilities import Step
from ..domains import SPIN
from ..helpers import boltzmann_model, clamp, start_state, want_weights
from ..inference import retrieve_fixed_point
from ..memory import Memory
from ..validation import check_bool, check_choice, check_finite, check_int, check_positive

__all__ = ["CorrelatedDenseMemory", "ring_graph", "karate_club_graph", "KARATE_EDGES", "KARATE_CLUBS"]

NORMALIZATIONS = ("row", "symmetric", "none")

KARATE_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (0, 8), (0, 10), (0, 11), (0, 12), (0, 13),
    (0, 17), (0, 19), (0, 21), (0, 31), (1, 2), (1, 3), (1, 7), (1, 13), (1, 17), (1, 19), (1, 21), (1, 30),
    (2, 3), (2, 7), (2, 8), (2, 9), (2, 13), (2, 27), (2, 28), (2, 32), (3, 7), (3, 12), (3, 13), (4, 6),
    (4, 10), (5, 6), (5, 10), (5, 16), (6, 16), (8, 30), (8, 32), (8, 33), (9, 33), (13, 33), (14, 32),
    (14, 33), (15, 32), (15, 33), (18, 32), (18, 33), (19, 33), (20, 32), (20, 33), (22, 32), (22, 33),
    (23, 25), (23, 27), (23, 29), (23, 32), (23, 33), (24, 25), (24, 27), (24, 31), (25, 31), (26, 29),
    (26, 33), (27, 33), (28, 31), (28, 33), (29, 32), (29, 33), (30, 32), (30, 33), (31, 32), (31, 33),
    (32, 33),
)  # fmt: skip
"""Zachary's karate club: 34 members, 78 undirected edges (0-based, networkx's numbering)."""

KARATE_CLUBS: tuple[int, ...] = (
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
)  # fmt: skip
"""Club after the split: 0 = "Mr. Hi", 1 = "Officer" (networkx's ``club`` node attribute)."""


def ring_graph(
    num_nodes: int, *, directed: bool = False, dtype: torch.dtype | None = None, device: Any = None
) -> Tensor:
    """``[p, p]`` adjacency of a ring: ``μ → μ+1`` (and ``μ+1 → μ`` unless ``directed``), mod ``p``."""
    check_int(num_nodes, "num_nodes (a ring needs at least 3)", minimum=3)
    a = torch.zeros(num_nodes, num_nodes, dtype=dtype or torch.get_default_dtype(), device=device)
    idx = torch.arange(num_nodes, device=device)
    a[idx, (idx + 1) % num_nodes] = 1
    if not directed:
        a = a + a.T
    return a


def karate_club_graph(*, dtype: torch.dtype | None = None, device: Any = None) -> tuple[Tensor, Tensor]:
    """``(adjacency [34, 34], clubs [34])`` of Zachary's karate club (undirected, unweighted)."""
    a = torch.zeros(34, 34, dtype=dtype or torch.get_default_dtype(), device=device)
    e = torch.tensor(KARATE_EDGES, device=device)
    a[e[:, 0], e[:, 1]] = 1
    a[e[:, 1], e[:, 0]] = 1
    return a, torch.tensor(KARATE_CLUBS, device=device)


class CorrelatedDenseMemory(Memory):
    """Auto- and hetero-association over a memory graph (see the module docstring).

    Args:
        dim: ``n``, the pattern dimension.
        a: auto-association strength (negative = anti-Hebbian).
        h: hetero-association strength.
        beta: inverse temperature ``β > 0`` of ``softmax(β X σ)`` (±1 patterns have overlaps of
            order ``n``: ``β = 0.1`` at ``n = 200`` is the reference's setting).
        eta: step ``η ∈ (0, 1]`` (1 = jump to the target).
        normalization: how ``A`` becomes ``M``: ``"row"`` (``D_out⁻¹ A``, rows without edges stay 0),
            ``"symmetric"`` (``D^{-1/2} A D^{-1/2}`` with ``D`` the out-degrees) or ``"none"``.
        device, dtype: where patterns and graph live.

    ``write(items)`` appends patterns as isolated nodes; :meth:`set_graph` / :meth:`add_edges` set
    the graph.  Reading: the ``"fixed_point"`` engine runs the update from the cue (observed
    entries of a partial cue are clamped); the trace holds :meth:`energy` before every step.

    Example:
        >>> X = torch.where(torch.randn(20, 200, generator=torch.Generator().manual_seed(0)) > 0, 1.0, -1.0)
        >>> mem = CorrelatedDenseMemory(200, a=0.0, h=1.0, beta=0.1).write(X).set_graph(ring_graph(20))
        >>> overlaps = mem.overlaps(mem.retrieve(X[0], max_steps=1, tol=0.0).pattern)
        >>> [round(v, 1) for v in overlaps[0, [19, 0, 1]].tolist()]   # one step moves to the neighbours
        [0.5, 0.0, 0.5]
    """

    methods = (retrieve_fixed_point,)
    default_method = "fixed_point"
    value_domain = SPIN

    def __init__(
        self,
        dim: int,
        a: float = 1.0,
        h: float = 0.0,
        beta: float = 1.0,
        eta: float = 1.0,
        normalization: str = "row",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.a = check_finite(a, "a")
        self.h = check_finite(h, "h")
        self.beta = check_positive(beta, "beta")
        self.eta = check_positive(eta, "eta")
        if self.eta > 1:
            raise ValueError(f"eta must lie in (0, 1], got {eta!r}")
        self.normalization = check_choice(normalization, "normalization", NORMALIZATIONS)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self.register_buffer("adjacency", torch.empty(0, 0, device=self.device, dtype=self.dtype))

    # --- state ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "a": self.a, "h": self.h, "beta": self.beta, "eta": self.eta,
                "normalization": self.normalization}  # fmt: skip

    def check_state(self) -> None:
        self.check_stored_items()
        p = len(self)
        if self.adjacency.shape != (p, p):
            raise ValueError(f"adjacency must have shape [{p}, {p}], got {tuple(self.adjacency.shape)}")
        if not torch.isfinite(self.adjacency).all():
            raise ValueError("stored graph contains NaN or inf")

    def write(self, items: Any) -> "CorrelatedDenseMemory":
        """Append patterns ``[k, n]`` (or one ``[n]``) as new graph nodes without edges."""
        new = self.prepare_items(items)
        p, k = len(self), new.shape[0]
        adjacency = self.adjacency.new_zeros(p + k, p + k)
        adjacency[:p, :p] = self.adjacency
        self.append_rows("items", new)
        self.adjacency = adjacency
        return self

    def set_graph(self, adjacency: Any) -> "CorrelatedDenseMemory":
        """Replace the graph by ``adjacency [p, p]`` (finite, non-negative weights; ``A_μν``: μ → ν)."""
        p = len(self)
        if not torch.is_tensor(adjacency):
            adjacency = torch.as_tensor(adjacency)
        if adjacency.is_complex():
            raise TypeError(f"adjacency must be real, got dtype {adjacency.dtype}")
        adjacency = adjacency.to(device=self.device, dtype=self.dtype)
        if adjacency.shape != (p, p):
            raise ValueError(f"adjacency must have shape [{p}, {p}] (one node per stored pattern), got "
                             f"{tuple(adjacency.shape)}")  # fmt: skip
        if not torch.isfinite(adjacency).all() or (adjacency < 0).any():
            raise ValueError("adjacency must hold finite, non-negative weights")
        self.adjacency = adjacency.clone()
        return self

    def add_edges(self, edges: Any, weight: float = 1.0, *, directed: bool = False) -> "CorrelatedDenseMemory":
        """Add edges ``[(μ, ν), ...]`` (both directions unless ``directed``) with ``weight``."""
        e = torch.as_tensor(edges, device=self.device)
        if e.dim() != 2 or e.shape[1] != 2 or e.is_floating_point():
            raise ValueError(f"edges must be integer pairs of shape [k, 2], got {tuple(e.shape)}")
        if e.numel() and (e.min() < 0 or e.max() >= len(self)):
            raise IndexError(f"edge endpoints must lie in [0, {len(self)}), got {e.min().item()}..{e.max().item()}")
        check_bool(directed, "directed")
        w = check_finite(weight, "weight")
        if w < 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        adjacency = self.adjacency.clone()
        adjacency[e[:, 0], e[:, 1]] += w
        if not directed:
            adjacency[e[:, 1], e[:, 0]] += w
        self.adjacency = adjacency
        return self

    # --- the model's matrices --------------------------------------------------------------------
    def transition(self) -> Tensor:
        """``M [p, p]``: the normalised adjacency (see ``normalization``)."""
        a = self.adjacency
        if self.normalization == "none":
            return a
        deg = a.sum(-1)
        if self.normalization == "row":
            return a / torch.where(deg > 0, deg, torch.ones_like(deg)).unsqueeze(-1)
        inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
        return inv_sqrt.unsqueeze(-1) * a * inv_sqrt

    def coupling(self) -> Tensor:
        """``S = a I + h M`` (``[p, p]``); memory μ's target is ``q_μ = Σ_ν S_μν x_ν``."""
        return self.a * torch.eye(len(self), dtype=self.dtype, device=self.device) + self.h * self.transition()

    def targets(self) -> Tensor:
        """``Q`` as rows ``[p, n]``: ``q_μ = a x_μ + h Σ_ν M_μν x_ν``."""
        return self.coupling() @ self.items

    def overlaps(self, z: Tensor) -> Tensor:
        """``m_μ = x_μᵀσ / ‖x_μ‖²`` for states ``z [..., n]`` → ``[..., p]`` (1 at ``σ = x_μ``)."""
        return (z @ self.items.T) / (self.items * self.items).sum(-1)

    def _metric(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(G⁻¹, Sᵀ G⁻¹, K = sym(G S⁻ᵀ))`` or None when ``G`` or ``S`` is singular."""
        g = self.items @ self.items.T
        s = self.coupling()
        try:
            g_inv = torch.linalg.inv(g)
            k = torch.linalg.solve(s, g).T  # G S⁻ᵀ
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            return None
        if not (torch.isfinite(g_inv).all() and torch.isfinite(k).all()):
            return None
        return g_inv, s.T @ g_inv, 0.5 * (k + k.T)

    def is_conservative(self, rtol: float = 1e-8) -> bool:
        """Whether the drive is ``-P ∇E`` (``S`` and ``G`` invertible and ``Sᵀ G⁻¹`` symmetric)."""
        metric = self._metric()
        if metric is None:
            return False
        sg = metric[1]
        return bool((sg - sg.T).abs().max() <= rtol * sg.abs().max().clamp_min(1e-300))

    def is_lyapunov(self, rtol: float = 1e-8) -> bool:
        """Whether :meth:`energy` provably never increases for every ``η ∈ (0, 1]`` (conservative and
        ``Sᵀ G⁻¹`` positive definite)."""
        if not self.is_conservative(rtol):
            return False
        sg = self._metric()[1]  # type: ignore[index]
        return bool(torch.linalg.eigvalsh(0.5 * (sg + sg.T)).min() > 0)

    # --- energy and the fast update ----------------------------------------------------------------
    @property
    def energy_scale(self) -> float:
        """``β``: the model's log-density is ``-β E(σ)`` (when :meth:`is_lyapunov`)."""
        return self.beta

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(σ)`` of the module docstring for ``z [..., n]`` → ``[...]`` (NaN if ``S`` or ``G`` is
        singular), at the state with the observed entries of a partial cue clamped.  Differentiable in
        ``z``.  A Lyapunov function only when :meth:`is_lyapunov`."""
        z = clamp(z, cue, mask)
        metric = self._metric()
        if metric is None:
            return torch.full(z.shape[:-1], float("nan"), dtype=z.dtype, device=z.device)
        g_inv, _, k = metric
        proj = z @ self.items.T  # X σ
        c = proj @ g_inv  # G⁻¹ X σ (G symmetric)
        perp = z - c @ self.items
        quad = 0.5 * (perp * perp).sum(-1) + 0.5 * ((c @ k) * c).sum(-1)
        return quad - torch.logsumexp(self.beta * proj, -1) / self.beta

    def drive(self, z: Tensor) -> Tensor:
        """``Sᵀ softmax(β X σ) X - σ`` at states ``z [B, n]`` (the update is ``σ + η · drive``)."""
        g = torch.softmax(self.beta * z @ self.items.T, -1)
        return g @ self.targets() - z

    def preconditioner(self) -> Tensor:
        """``P = Xᵀ Sᵀ G⁻¹ X + I - Xᵀ G⁻¹ X`` (``[n, n]``); ``drive = -P ∇E`` when conservative."""
        metric = self._metric()
        if metric is None:
            raise ValueError("S = aI + hM or the Gram matrix of the patterns is singular: no energy")
        g_inv, sg, _ = metric
        x = self.items
        return x.T @ sg @ x + torch.eye(self.dim, dtype=self.dtype, device=self.device) - x.T @ g_inv @ x

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """``"cue"`` (free entries 0) or a ``[B, n]`` tensor; observed entries hold the cue."""
        return clamp(start_state(init, cue, {"cue": cue.clone}, self), cue, mask)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """``σ + η (Sᵀ g X - σ)`` (observed entries clamped) with ``E(σ)``, and the attention ``g``
        over the memories at ``σ`` as the step's weights."""
        logits = self.beta * z @ self.items.T
        g = torch.softmax(logits, -1)
        z_new = z + self.eta * (g @ self.targets() - z)
        return Step(state=clamp(z_new, cue, mask), energy=self.compute_energy(z) if energy else None,
                    weights=g if weights else None, index=logits.argmax(-1) if index else None)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(softmax(β X σ) [B, p] or None, argmax [B])``: the attention over the memories."""
        logits = self.beta * z @ self.items.T
        dense = want_weights(return_weights, z.shape[0], len(self))
        return (torch.softmax(logits, -1) if dense else None), logits.argmax(-1)

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """The unnormalised Boltzmann density ``p(σ | M) ∝ exp(-β E(σ))`` (site ``"z"``, a flat improper
        prior plus ``pyro.factor``, observed entries of a partial cue clamped:
        :func:`varmem.helpers.boltzmann_model`); only defined when :meth:`is_lyapunov`."""
        self._check_not_empty()
        if not self.is_lyapunov():
            raise ValueError("this CDAM has no Lyapunov energy (see is_lyapunov), hence no Boltzmann model")
        return boltzmann_model(self.latent_site, self.dim, lambda z: -self.beta * self.compute_energy(z),
                               cue, mask, num_cues)
