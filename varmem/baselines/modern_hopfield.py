"""Modern (continuous) Hopfield network of Ramsauer et al. (2021), "Hopfield Networks is All You Need".

Stored patterns ``X = (x_1 … x_N)`` (``[N, D]`` rows), state ``ξ ∈ R^D``, inverse temperature ``β``.

``similarity="dot"`` (the paper's energy, ``M = max_i ‖x_i‖``)::

    E(ξ) = -β⁻¹ log Σ_i exp(β x_iᵀξ) + ½ ξᵀξ + β⁻¹ log N + ½ M²          (0 ≤ E ≤ 2M² on the ball ‖ξ‖ ≤ M)
    ∇E(ξ) = ξ - Xᵀ softmax(β X ξ)
    ξ ← Xᵀ softmax(β X ξ)  =  ξ - ∇E(ξ)                                  (CCCP: E never increases)

``similarity="l2"`` (the L2 log-sum-exp energy of DrDAM / the kernel-density memory)::

    E(ξ) = -β⁻¹ log (1/N) Σ_i exp(-β ‖ξ - x_i‖² / 2)                     (≥ 0, = 0 only on a lone pattern)
    ξ ← Xᵀ softmax_i(-β ‖ξ - x_i‖² / 2)  =  ξ - ∇E(ξ)

The L2 update *is* :class:`varmem.KernelDensityMemory`'s mean-shift step with bandwidth
``s = β^{-1/2}`` and no cue term, and ``E_l2 = s² (E_KDE(ξ) - (D/2) log 2πs²)``; that step is
computed here by the same chunked code (:func:`varmem.kernels.kernel_stats`).  The two energies
coincide on a sphere: if every ``‖x_i‖ = M`` then ``E_dot = E_l2`` (expand ``‖ξ - x_i‖²``).

**β only means something together with the pattern scale.**  The logits are ``β x_iᵀξ``: for
unit-norm patterns (:func:`normalize_patterns` ``mode="unit"``) they lie in ``[-β, β]`` and one
update retrieves a single pattern once ``β·Δ ≳ log N`` (``Δ`` the gap between the best and the
second-best overlap, ≈ 1 for random unit patterns in high dimension); ±1 patterns of dimension
``D`` have overlaps of order ``D``, i.e. ``β_eff = β D`` on the unit scale (hopfield-layers'
demo divides by ``√D``).  Small β gives the global average, intermediate β metastable mixtures.

Reading follows hopfield-layers' static mode: the cue is the initial state and ``update_steps_max``
counts *extra* updates (``0`` = one update = one attention step; ``k`` = at most ``k + 1``;
``None`` = until converged).  For a partial cue (``mask``) the observed entries are clamped to
the cue and the free entries start at 0; the clamped update is CCCP on the energy restricted to
the free entries (so it still never increases ``E``), and for ``"l2"`` it equals the
kernel-density memory's step in the noise-free limit ``σ → 0`` on the observed entries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..capabilities import Step
from ..domains import SIGNED
from ..helpers import boltzmann_model, clamp, start_state, want_weights
from ..inference import retrieve_fixed_point
from ..kernels import default_chunk_size, kernel_log_sum_exp, kernel_stats
from ..memory import Memory
from ..validation import check_choice, check_int, check_positive, check_positive_int

__all__ = ["ModernHopfield", "normalize_patterns"]

SIMILARITIES = ("dot", "l2")
NORMALIZATIONS = ("unit", "layer", "sign")
_MAX_STEPS_UNBOUNDED = 10_000  # the cap used for update_steps_max=None


def normalize_patterns(x: Tensor, mode: str = "unit", *, radius: float = 1.0, eps: float = 1e-12) -> Tensor:
    """Put patterns ``x [..., D]`` on a known scale before storing them (or cueing with them).

    * ``"unit"``: ``radius · x / ‖x‖`` (a sphere; dot and L2 retrieval then agree up to β scaling),
    * ``"layer"``: ``(x - mean_d x) / std_d x`` per pattern (hopfield-layers' LayerNorm without
      affine terms; the norm becomes ``√D``),
    * ``"sign"``: ``sign(x)`` with 0 → +1 (bipolar ±1 patterns, for the binary memories).
    """
    if mode == "unit":
        return radius * x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    if mode == "layer":
        centred = x - x.mean(-1, keepdim=True)
        return centred / centred.pow(2).mean(-1, keepdim=True).add(eps).sqrt()
    if mode == "sign":
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    raise ValueError(f"unknown normalisation mode {mode!r}; choose from {list(NORMALIZATIONS)}")


class ModernHopfield(Memory):
    """Ramsauer et al.'s modern Hopfield network as a varmem memory (see the module docstring).

    Args:
        dim: ``D``.
        beta: inverse temperature ``β > 0`` (state it together with the pattern scale).
        similarity: ``"dot"`` (Ramsauer's energy) or ``"l2"`` (the kernel-density / DrDAM energy).
        update_steps_max: extra updates after the first (``0`` = one update, ``None`` = until the
            state moves by at most ``update_steps_eps``, capped at 10 000 updates).
        update_steps_eps: convergence threshold on ``max_d |Δξ_d|`` (> 0).
        chunk_size: stored patterns per chunk (default :func:`varmem.kernels.default_chunk_size`: about
            ``2**19 / B`` on the CPU, ``2**22 / B`` on a GPU), so ``N = 10⁶`` fits.
        device, dtype: where patterns are stored.

    ``retrieve(cue, mask, method="fixed_point", **options)`` runs the generic ``"fixed_point"``
    engine (:func:`varmem.inference.retrieve_fixed_point`) with ``max_steps =
    update_steps_max + 1`` and ``tol = update_steps_eps`` unless the call passes them
    (:meth:`default_options`).  Stopping rule: hopfield-layers stops on the L2 change of the
    association (softmax) matrix, maximised over the batch; here a cue is converged when its
    *state* moves by ``≤ eps`` in max-norm (which needs no second pass over ``N`` patterns).  With
    ``update_steps_max=0`` both are exactly one update.  The energy trace and the weights (those of
    the last update, as hopfield-layers' ``get_association_matrix``) are by-products of the
    updates: a default read costs one pass over the patterns per update, as the leanest one.

    Example:
        >>> X = normalize_patterns(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)))
        >>> hopfield = ModernHopfield(16, beta=30.0).write(X)
        >>> cue = X[:2] + 0.1 * torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
        >>> bool(torch.allclose(hopfield.retrieve(cue).pattern, X[:2], atol=1e-3))
        True
    """

    methods = (retrieve_fixed_point,)
    default_method = "fixed_point"
    value_domain = SIGNED
    shardable = True

    def __init__(
        self,
        dim: int,
        beta: float,
        similarity: str = "dot",
        update_steps_max: int | None = 0,
        update_steps_eps: float = 1e-4,
        *,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.beta = check_positive(beta, "beta")
        self.similarity = check_choice(similarity, "similarity", SIMILARITIES)
        self.update_steps_max = check_int(update_steps_max, "update_steps_max", minimum=0, allow_none=True)
        self.update_steps_eps = check_positive(update_steps_eps, "update_steps_eps")
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self._max_norm = 0.0

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "beta": self.beta,
            "similarity": self.similarity,
            "update_steps_max": self.update_steps_max,
            "update_steps_eps": self.update_steps_eps,
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        self.check_stored_items()

    def write(self, items: Any) -> "ModernHopfield":
        """Append patterns ``[N, D]`` (or one ``[D]``) as they are (normalise them first if needed)."""
        self.append_rows("items", self.prepare_items(items))
        self.refresh_derived_state()
        return self

    def refresh_derived_state(self) -> None:
        """Recompute the cached ``M = max_i ‖x_i‖`` from the stored patterns."""
        local = float(self.items.norm(dim=-1).max()) if len(self) else 0.0
        backend = self.kernel_backend
        self._max_norm = local if backend is None else backend.all_max(local)

    @property
    def max_norm(self) -> float:
        """``M = max_i ‖x_i‖`` (0 for an empty memory)."""
        return self._max_norm

    @property
    def energy_scale(self) -> float:
        """``β``: the model's log-density is ``-β E(z)`` (the Boltzmann distribution of the energy)."""
        return self.beta

    def default_options(self, method: str) -> dict[str, Any]:
        """``fixed_point`` reads with ``max_steps = update_steps_max + 1`` (10 000 for None) and
        ``tol = update_steps_eps``: hopfield-layers' step semantics."""
        steps = _MAX_STEPS_UNBOUNDED if self.update_steps_max is None else self.update_steps_max + 1
        return {"max_steps": steps, "tol": self.update_steps_eps} if method == "fixed_point" else {}

    # --- energy and the fast update ------------------------------------------------------------
    def _chunk(self, batch: int) -> int:
        return self.chunk_size or default_chunk_size(batch, self.device)

    @property
    def _kernel(self) -> str:
        return "dot" if self.similarity == "dot" else "gaussian"

    def _energy_from_lse(self, lse: Tensor, z: Tensor) -> Tensor:
        log_n = math.log(self.total_items())
        if self.similarity == "l2":
            return (log_n - lse) / self.beta
        return (log_n - lse) / self.beta + 0.5 * (z * z).sum(-1) + 0.5 * self.max_norm**2

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Ramsauer's energy ``E(ξ)`` (module docstring) for ``z [..., D]`` → ``[...]``, at the state
        with the observed entries of a partial cue clamped (``E(m ⊙ x + (1 - m) ⊙ z)``; a full cue
        does not enter: it is the initial state, not an observation).

        ``βE`` is the negative log-density of the Boltzmann model of :meth:`model`.  Differentiable
        in ``z`` (dense ``[B, N]`` logits when ``z`` requires grad, streamed otherwise).
        """
        self.require_all_items("the energy")
        z = clamp(z, cue, mask)
        shape = z.shape[:-1]
        flat = z.reshape(-1, self.dim)
        chunk = self._chunk(flat.shape[0])
        lse = kernel_log_sum_exp(flat, self.items, self.beta, kernel=self._kernel, chunk_size=chunk)
        return self._energy_from_lse(lse, flat).reshape(shape)

    def update(self, z: Tensor, mask: Tensor | None = None, cue: Tensor | None = None) -> Tensor:
        """One Hopfield update ``ξ ← Xᵀ softmax(β sim(X, ξ))`` (``= ξ - ∇E(ξ)``), observed entries
        (``mask``) reset to ``cue``."""
        return self.fixed_point_step(z, z if cue is None else cue, mask, energy=False).state

    def association_matrix(self, cue: Any, mask: Any = None) -> Tensor:
        """``[B, N]`` the softmax weights ``softmax_i(β sim(x_i, ξ))`` of the last update of a read of
        ``cue`` (hopfield-layers' ``get_association_matrix``: with ``update_steps_max=0`` the
        softmax at the cue; dense, so ``B·N`` must fit)."""
        return self.retrieve(cue, mask, trace=False, return_weights=True).weights

    # --- hooks of the "fixed_point" engine -------------------------------------------------------
    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """Initial state: ``"cue"`` (free entries 0), ``"prior_mean"`` (mean pattern on the free
        entries) or a ``[B, D]`` tensor; observed entries always hold the cue."""
        def prior_mean() -> Tensor:
            backend = self.kernel_backend
            mean = self.items.mean(0) if backend is None else backend.mean_item(self.items)
            return mean.expand_as(cue).clone()

        starts = {"cue": cue.clone, "prior_mean": prior_mean}
        return clamp(start_state(init, cue, starts, self), cue, mask)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One update ``Xᵀ softmax(β sim(X, z))`` (observed entries clamped), with the energy at ``z``
        and the update's softmax weights as by-products of the same pass."""
        s = kernel_stats(z, self.items, self.beta, weights=weights, return_index=index, return_lse=energy,
                         kernel=self._kernel, chunk_size=self._chunk(z.shape[0]), workspace=self.workspace,
                         backend=self.kernel_backend)
        e = self._energy_from_lse(s.lse, z) if energy else None
        return Step(state=clamp(s.mean, cue, mask), energy=e, weights=s.weights, index=s.index)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(softmax [B, N] or None, argmax [B])`` of the association at states ``z``."""
        s = kernel_stats(z, self.items, self.beta,
                         weights=want_weights(return_weights, z.shape[0], self.total_items()),
                         return_lse=False, kernel=self._kernel, chunk_size=self._chunk(z.shape[0]),
                         workspace=self.workspace, backend=self.kernel_backend)
        return s.weights, s.index

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """The Boltzmann density ``p(z | M) ∝ exp(-β E(z))`` (:func:`varmem.helpers.boltzmann_model`:
        an improper flat site ``"z"`` scored by ``pyro.factor("energy", -β E)``, observed entries of
        a partial cue clamped).  Hopfield reading has no cue likelihood: for a noisy-cue model use
        :class:`varmem.KernelDensityMemory` with ``bandwidth = β^{-1/2}``."""
        self._check_not_empty()
        return boltzmann_model(self.latent_site, self.dim, lambda z: -self.beta * self.compute_energy(z),
                               cue, mask, num_cues)
