"""Kernel-density memory: stored items are the centres of a Gaussian kernel density prior.

Generative model (``N`` stored items ``ξ_i ∈ R^D``, bandwidth ``s``, cue noise ``σ``)::

    z ~ p(z | M) = (1/N) Σ_i N(z; ξ_i, s² I)          (the memory prior)
    x_d ~ N(z_d, σ²)   for every observed dimension d   (the cue likelihood)

Energy (a negative log-density, all constants kept, ``B`` cues)::

    E(z)    = -log p(z | M)
            = -log Σ_i exp(-‖z - ξ_i‖² / 2s²) + log N + (D/2) log(2π s²)
    E(z; x) = E(z) - log p(x | z)
            = E(z) + Σ_{d obs} [(x_d - z_d)² / 2σ² + ½ log(2π σ²)]

With ``β = 1/s²``, ``s² E(z)`` is the L2 log-sum-exp (modern Hopfield) energy up to a constant,
and the fixed-point step below is the modern-Hopfield update extended by the cue term.

Closed-form posterior (``c = s² + σ²``, ``m`` the mask)::

    p(i | x)   ∝ exp(-Σ_{d obs} (x_d - ξ_id)² / 2c)
    z | i, x   ~ N(a ⊙ ξ_i + b, diag(v))     with, on observed dims, a = σ²/c, b = s² x / c,
                                              v = s²σ²/c, and on unobserved dims a = 1, b = 0, v = s².
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor

from ..capabilities import Step
from ..distributions import KernelDensity
from ..helpers import masked_normal, match_rows, posterior_start, row_selection, want_weights
from ..inference import retrieve_exact, retrieve_fixed_point, retrieve_map, retrieve_nuts
from ..kernels import kernel_stats, sample_items
from ..memory import GaussianMixtureMemory
from ..validation import check_positive, check_positive_int

__all__ = ["KernelDensityMemory", "KernelDensityPosterior"]


class KernelDensityPosterior:
    """The exact posterior ``p(z | x, M)`` of a :class:`KernelDensityMemory`: a Gaussian mixture.

    Attributes (``B`` cues, ``N`` items, ``D`` dims):
        weights: ``[B, N]`` ``p(i | x)`` (``None`` if not materialised).
        index: ``[B]`` the most probable item.
        mean: ``[B, D]`` posterior mean ``Σ_i w_i (a ⊙ ξ_i + b)``.
        variance: ``[B, D]`` posterior variance (law of total variance).
        component_scale: ``[B, D]`` ``sqrt(v)``, shared by all components of one cue.
        log_evidence: ``[B]`` ``log p(x_obs | M)``.
    """

    def __init__(
        self,
        memory: "KernelDensityMemory",
        cue: Tensor,
        mask: Tensor | None,
        *,
        return_weights: bool | None = None,
        chunk_size: int | None = None,
    ) -> None:
        s2, n2 = memory.bandwidth**2, memory.noise_scale**2
        c = s2 + n2
        observed = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand_as(cue)
        # p(i | x) ∝ exp(-Σ_obs (x - ξ_i)² / 2c): a kernel with precision m / c
        precision = (mask.to(cue.dtype) if mask is not None else cue.new_ones(())) / c
        stats = kernel_stats(
            cue,
            memory.items,
            precision,
            second_moment=True,
            weights=want_weights(return_weights, cue.shape[0], memory.total_items()),
            chunk_size=chunk_size or memory.chunk_size,
            workspace=memory.workspace,
            backend=memory.kernel_backend,
        )
        one = cue.new_ones(())
        self.memory = memory
        self.cue, self.mask = cue, mask
        self._precision, self._chunk_size = precision, chunk_size or memory.chunk_size
        self.scale_factor = torch.where(observed, one * (n2 / c), one)  # a
        self.shift = torch.where(observed, s2 * cue / c, 0 * one)  # b
        self.component_scale = torch.where(observed, one * math.sqrt(s2 * n2 / c), one * math.sqrt(s2))
        n_obs = observed.sum(-1).to(cue.dtype)
        self.log_evidence = stats.lse - math.log(memory.total_items()) - 0.5 * n_obs * math.log(2 * math.pi * c)
        self.weights = stats.weights
        self.index = stats.index
        self.mean = self.scale_factor * stats.mean + self.shift
        item_var = (stats.second_moment - stats.mean**2).clamp_min(0)  # Var_w[ξ_i]
        self.variance = self.component_scale**2 + self.scale_factor**2 * item_var

    @property
    def log_weights(self) -> Tensor | None:
        """``[B, N]`` ``log p(i | x)`` (None if the weights were not materialised)."""
        return None if self.weights is None else self.weights.log()

    def component_mean(self, index: Tensor) -> Tensor:
        """``[..., B, D]`` mean of component ``index`` (``[..., B]`` item indices) for each cue."""
        return self.scale_factor * self.memory.item_rows(index) + self.shift

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z | x, M)`` for ``z [..., B, D]`` → ``[..., B]`` (Bayes' rule, normalised)."""
        self.memory.require_all_items("the posterior density")
        joint = -self.memory.energy(z, self.cue, self.mask)
        return joint - self.log_evidence

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[S, B, D]`` exact posterior samples: the component ``i ~ p(i | x)`` by Gumbel-max
        streamed over the items (:func:`varmem.kernels.sample_items`, no ``[S, B, N]`` tensor),
        then ``z ~ N(a ⊙ ξ_i + b, v)``."""
        cue = self.cue
        index = sample_items(cue, self.memory.items, self._precision, num_samples, generator=generator,
                             chunk_size=self._chunk_size, backend=self.memory.kernel_backend)
        eps = torch.randn((num_samples, *cue.shape), generator=generator, dtype=cue.dtype, device=cue.device)
        return self.component_mean(index) + self.component_scale * eps


class KernelDensityMemory(GaussianMixtureMemory):
    """An associative memory whose prior is a Gaussian kernel density over the stored items.

    See the module docstring for the model, the energy and the closed-form posterior.

    Args:
        dim: ``D``, the dimension of an item.
        bandwidth: kernel standard deviation ``s`` (``β = 1/s²`` in Hopfield terms).  Fixed: a
            learnable bandwidth collapses to 0 under MAP, because ``p(z = ξ_i | M)`` grows without
            bound as ``s → 0``.
        noise_scale: standard deviation ``σ`` of the cue likelihood on observed entries.
        chunk_size: stored items processed per chunk (default :func:`varmem.kernels.default_chunk_size`).
        device, dtype: where and how items are stored (default: CPU, the default float dtype).

    Example:
        >>> memory = KernelDensityMemory(dim=2, bandwidth=0.1, noise_scale=0.3)
        >>> memory = memory.write(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        >>> memory.retrieve(torch.tensor([[0.9, 1.2]]), method="fixed_point").pattern.round(decimals=1)
        tensor([[1., 1.]])
    """

    methods = (retrieve_exact, retrieve_fixed_point, retrieve_map, retrieve_nuts)
    default_method = "exact"
    shardable = True

    def __init__(
        self,
        dim: int,
        bandwidth: float,
        noise_scale: float,
        *,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.bandwidth = check_positive(bandwidth, "bandwidth")
        self.noise_scale = noise_scale
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))

    @property
    def noise_scale(self) -> float:
        return self._noise_scale

    @noise_scale.setter
    def noise_scale(self, value: float) -> None:
        self._noise_scale = check_positive(value, "noise_scale")

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "bandwidth": self.bandwidth,
            "noise_scale": self.noise_scale,
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        self.check_stored_items()

    # --- writing -----------------------------------------------------------------------------
    def write(self, items: Any) -> "KernelDensityMemory":
        """Append ``items`` (``[N, D]`` or ``[D]``) as new kernel centres, in one shot."""
        new = self.prepare_items(items)
        self.append_rows("items", new)
        return self

    def forget(self, index: int | Sequence[int] | slice | Tensor) -> "KernelDensityMemory":
        """Remove the stored items at ``index`` (an int, a sequence or tensor of ints, a slice, or a
        bool mask over the ``N`` items).  ``forget(range(k))`` forgets the ``k`` oldest items."""
        self.items = self.items[~row_selection(index, len(self), self.device)]
        return self

    def delete(self, items: Any, *, atol: float = 0.0) -> "KernelDensityMemory":
        """Remove one stored copy of each given item (matched within ``atol`` in max-norm).

        Raises ``KeyError`` (and removes nothing) if some item is not stored.
        """
        return self.forget(match_rows(self.items, self.prepare_items(items), atol))

    # --- the probabilistic model -------------------------------------------------------------
    def prior(self) -> KernelDensity:
        """``p(z | M)`` as a Pyro distribution with event shape ``[D]``."""
        self._check_not_empty()
        self.require_all_items("prior()")
        return KernelDensity(self.items, self.bandwidth, chunk_size=self.chunk_size)

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``: independent ``N(z_d, σ²)`` on observed entries, masked by Pyro elsewhere."""
        return masked_normal(z, self.noise_scale, mask)

    # --- hooks used by the engines -----------------------------------------------------------
    def posterior(
        self,
        cue: Tensor,
        mask: Tensor | None = None,
        *,
        return_weights: bool | None = None,
        chunk_size: int | None = None,
    ) -> KernelDensityPosterior:
        """The exact posterior ``p(z | x, M)`` (see :class:`KernelDensityPosterior`)."""
        self._check_not_empty()
        return KernelDensityPosterior(self, cue, mask, return_weights=return_weights, chunk_size=chunk_size)

    def prior_mean_batch(self, batch: int) -> Tensor:
        """``[batch, D]`` copies of the prior mean, the mean stored item (over all shards)."""
        backend = self.kernel_backend
        mean = self.items.mean(0) if backend is None else backend.mean_item(self.items)
        return mean.expand(batch, self.dim).clone()

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """Starting point of iterative engines.

        ``"cue"``: the cue on observed entries and the exact posterior mean elsewhere (so for a
        full cue it is the cue itself, the Hopfield convention); ``"posterior_mean"``: the exact
        posterior mean; ``"prior_mean"``: the mean of the stored items; or a ``[B, D]`` tensor.
        """
        return posterior_start(self, cue, mask, init)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One mean-shift / modern-Hopfield step with the cue term, streamed over the items.

        Setting the gradient of ``log p(x, z | M)`` to zero with the responsibilities
        ``w = softmax_i(-‖z - ξ_i‖²/2s²)`` held fixed gives
        ``z_new = (σ² Σ_i w_i ξ_i + s² m ⊙ x) / (σ² + s² m)``, an EM step, so the energy never
        increases.  Without a cue term (σ → ∞) it is ``Ξᵀ softmax(-β‖z - ξ‖²/2)``, β = 1/s².
        ``energy`` is ``E(z; x)`` at the state before the step, from the step's log-sum-exp;
        ``weights`` the ``w`` of the step.
        """
        stats = kernel_stats(z, self.items, 1.0 / self.bandwidth**2, return_index=index, return_lse=energy,
                             weights=weights, chunk_size=self.chunk_size, workspace=self.workspace,
                             backend=self.kernel_backend)
        e = None
        if energy:
            n, d = self.total_items(), self.dim
            s2 = self.bandwidth**2
            prior_energy = -(stats.lse - math.log(n) - 0.5 * d * math.log(2 * math.pi * s2))
            e = prior_energy + self._cue_energy(z, cue, mask)
        return Step(state=self._em_update(stats.mean, cue, mask), energy=e, weights=stats.weights, index=stats.index)

    def _cue_energy(self, z: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
        """``-log p(x | z) = Σ_{d obs} [(x_d - z_d)² / 2σ² + ½ log 2πσ²]`` ``[B]``: the likelihood's
        log-density written out (no distribution objects in the hot loop; tested against it)."""
        n2 = self.noise_scale**2
        sq = (cue - z).square_()
        if mask is None:
            return 0.5 * sq.sum(-1) / n2 + 0.5 * z.shape[-1] * math.log(2 * math.pi * n2)
        m = mask.to(z.dtype)
        return 0.5 * (sq * m).sum(-1) / n2 + 0.5 * m.sum(-1) * math.log(2 * math.pi * n2)

    def _em_update(self, mean: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
        """``(σ² ξ̄ + s² m ⊙ x) / (σ² + s² m)`` for the softmax mean ``ξ̄ [B, D]``."""
        s2, n2 = self.bandwidth**2, self.noise_scale**2
        m = torch.ones((), dtype=mean.dtype, device=mean.device) if mask is None else mask.to(mean.dtype)
        return (n2 * mean + s2 * m * cue) / (n2 + s2 * m)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """Responsibilities ``p(i | z, M) = softmax_i(-‖z - ξ_i‖²/2s²)`` at a latent ``z [B, D]``:
        returns ``(weights [B, N] or None, argmax index [B])``, streamed over the items."""
        dense = want_weights(return_weights, z.shape[0], self.total_items())
        stats = kernel_stats(z, self.items, 1.0 / self.bandwidth**2, weights=dense, return_lse=False,
                             chunk_size=self.chunk_size, workspace=self.workspace, backend=self.kernel_backend)
        return stats.weights, stats.index
