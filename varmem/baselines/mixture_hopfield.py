"""The mixture-energy modern Hopfield baseline of BayesPCN's sweeps (``--layer-update-strat mhn``).

Every stored item ``ξ_i ∈ R^D`` becomes one component of a Gaussian mixture with a small, fixed
standard deviation ``σ`` (0.01 in the sweeps)::

    p(z | M) = Σ_i π_i N(z; ξ_i, σ² I),     log π_i = β‖ξ_i‖² - log Σ_j exp(β‖ξ_j‖²)   (metric "dot")
                                            log π_i = -log N                          (metric "euclidean")

with ``β = 1/σ`` by default for ``"dot"`` (the official code's ``Σ^{-1/2}``).  Energy (a negative
log-density, all constants kept)::

    E(z) = -log p(z | M) = -log Σ_i exp(-‖z - ξ_i‖²/2σ² + log π_i) + (D/2) log(2πσ²).

Reading is **not** posterior inference given a noisy cue: the cue is the *initial state*, and for a
partial cue (a mask) the known entries are *clamped* to it.  The read descends ``E`` over the free
entries (the official read: 500 Adam steps of size 0.01, reproduced by ``method="map",
optimizer="adam", lr=0.01, max_steps=500, tol=0``).  With the cue folded in, the energy of a read is

    E(z; x, m) = E(m ⊙ x + (1 - m) ⊙ z)        (``m = 1`` everywhere when there is no mask).

With ``1/(2σ²) = 5000`` against a norm bonus ``β = 100`` this is essentially a Euclidean GMM
mode-seeker, **not** the one-step softmax update of Ramsauer et al.: ``σ²`` is tiny compared with
the squared distances between images, so the responsibilities are one-hot and each stored item is
its own basin.

Fast update (the mean-shift / EM step, = one gradient step of size ``σ²``)::

    w_i(z) = softmax_i(-‖z - ξ_i‖²/2σ² + log π_i)
    z ← m ⊙ x + (1 - m) ⊙ Σ_i w_i ξ_i  =  z - σ² ∇_z E(z; x, m)   on the free entries.

**Relation to the kernel-density memory.**  With ``metric="euclidean"``, ``p(z | M)`` *is*
:class:`varmem.KernelDensityMemory`'s prior with bandwidth ``s = σ``, and the read above is that
memory's ``"fixed_point"`` read in the limits of its cue-noise scale: ``noise_scale → 0`` on
observed entries (clamp) and ``noise_scale → ∞`` for a full cue (the cue only starts the
iteration).  The test-suite checks both limits numerically.  The ``"dot"`` weights are the only
new ingredient; they enter the shared chunked kernel code (:mod:`varmem.kernels`) as the per-item
logit bias ``log π_i`` (``item_bias``), and the prior is :class:`varmem.KernelDensity` with
``log_weights``.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Size, Tensor

from ..capabilities import Step
from ..distributions import KernelDensity
from ..domains import SIGNED
from ..helpers import clamp, start_state, want_weights
from ..inference import retrieve_fixed_point, retrieve_map
from ..kernels import kernel_stats
from ..memory import Memory
from ..validation import check_choice, check_non_negative, check_positive, check_positive_int

__all__ = ["MixtureHopfieldMemory"]

METRICS = ("dot", "euclidean")


class MixtureHopfieldMemory(Memory):
    """BayesPCN's modern-Hopfield baseline: a Gaussian mixture with one sharp component per item.

    See the module docstring for the energy, the clamped read and the relation to
    :class:`varmem.KernelDensityMemory`.

    Args:
        dim: ``D``.
        sigma: component standard deviation ``σ`` (``--sigma-data``, 0.01 in the sweeps).
        metric: ``"dot"`` (the official default: ``log π_i ∝ β‖ξ_i‖²``) or ``"euclidean"``
            (uniform weights).
        beta: the norm-bonus coefficient of ``"dot"`` (default ``1/σ``); must be ``None`` or 0
            for ``"euclidean"``.
        chunk_size: stored items per chunk (default :func:`varmem.kernels.default_chunk_size`).
        device, dtype: where and how items are stored.

    Reads (``retrieve``):
        ``"fixed_point"`` (default): the mean-shift step above until nothing moves (a few steps);
        ``"map"``: descent with Pyro (``AutoDelta`` on the free entries); with
        ``optimizer="adam", lr=0.01, max_steps=500, tol=0`` it is the official read.

    Example:
        >>> memory = MixtureHopfieldMemory(dim=2, sigma=0.1).write(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        >>> memory.retrieve(torch.tensor([[0.9, 1.2]])).pattern
        tensor([[1., 1.]])
    """

    methods = (retrieve_fixed_point, retrieve_map)
    default_method = "fixed_point"
    value_domain = SIGNED

    def __init__(
        self,
        dim: int,
        sigma: float = 0.01,
        *,
        metric: str = "dot",
        beta: float | None = None,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.sigma = check_positive(sigma, "sigma")
        self.metric = check_choice(metric, "metric", METRICS)
        b = None if beta is None else check_non_negative(beta, "beta")
        if metric == "euclidean":
            if b not in (None, 0.0):
                raise ValueError(f"beta (the 'dot' norm bonus) must be None or 0 for 'euclidean', got {beta!r}")
            self.beta = 0.0
        else:
            self.beta = 1.0 / self.sigma if b is None else b
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "sigma": self.sigma,
            "metric": self.metric,
            "beta": self.beta if self.metric == "dot" else None,
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        self.check_stored_items()

    def write(self, items: Any) -> "MixtureHopfieldMemory":
        """Append ``items`` (``[N, D]`` or ``[D]``) as new mixture components, in one shot."""
        self.append_rows("items", self.prepare_items(items))
        return self

    # --- the energy and the Pyro model ---------------------------------------------------------
    def log_mixture_weights(self) -> Tensor:
        """``[N]`` normalised ``log π_i`` (see the module docstring)."""
        self._check_not_empty()
        if self.metric == "euclidean":
            return self.items.new_full((len(self),), -math.log(len(self)))
        score = self.beta * (self.items * self.items).sum(-1)
        return score - score.logsumexp(0)

    def prior(self) -> KernelDensity:
        """``p(z | M)`` as a Pyro distribution with event shape ``[D]``."""
        return KernelDensity(self.items, self.sigma, log_weights=self.log_mixture_weights(), chunk_size=self.chunk_size)

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(z; x, m) = -log p(m ⊙ x + (1 - m) ⊙ z | M)`` (``E(z)`` without a mask): ``[...]``.

        The cue only clamps known entries; a full cue (no mask) does not enter the energy.
        Equals minus the log-density of the Pyro trace of :meth:`model`.  Gradient on the free
        entries: ``(z - Σ_i w_i ξ_i)/σ²``; zero on clamped ones.
        """
        return -self.prior().log_prob(clamp(z, cue, mask))

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """Without a cue: ``z ~ p(z | M)``.  With a cue: the read's target density.

        ``z`` (site ``"z"``, ``[B, D]`` under the plate ``"cues"``) is an improper flat site and
        ``pyro.factor("hopfield", log p(m ⊙ x + (1 - m) ⊙ z | M))`` scores it, so ``AutoDelta``
        MAP (the ``"map"`` engine) is gradient descent on :meth:`energy` over the free entries
        (Adam never moves an entry whose gradient is always 0).
        """
        prior = self.prior()
        size = cue.shape[0] if cue is not None else num_cues
        with pyro.plate("cues", size, dim=-1):
            if cue is None:
                return pyro.sample(self.latent_site, prior)
            flat = dist.ImproperUniform(constraints.real_vector, Size([size]), Size([self.dim]))
            z = pyro.sample(self.latent_site, flat)
            pyro.factor("hopfield", prior.log_prob(clamp(z, cue, mask)))
        return z

    # --- hooks used by the engines -------------------------------------------------------------
    def _stats(self, z: Tensor, weights: bool = False, index: bool = True, lse: bool = True):
        return kernel_stats(z, self.items, 1.0 / self.sigma**2, weights=weights, return_index=index, return_lse=lse,
                            item_bias=self.log_mixture_weights(), chunk_size=self.chunk_size, workspace=self.workspace)

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """``"cue"``: the cue itself (unknown entries hold what the validated cue holds there, 0);
        ``"prior_mean"``: ``Σ_i π_i ξ_i`` on the unknown entries; or a ``[B, D]`` tensor (clamped)."""
        starts = {"cue": cue.clone, "prior_mean": lambda: self.prior().mean.expand_as(cue).clone()}
        return clamp(start_state(init, cue, starts, self), cue, mask)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """``m ⊙ x + (1 - m) ⊙ Σ_i w_i(z) ξ_i``: one mean-shift (EM) step, with ``E(z; x, m)`` and the
        step's weights ``w`` as by-products.

        With the responsibilities held fixed the step minimises the energy's quadratic bound, so
        the energy never increases; it equals ``z - σ² ∇_z E(z; x, m)`` on the free entries.
        """
        z = clamp(z, cue, mask)
        stats = self._stats(z, weights=weights, index=index, lse=energy)
        e = None
        if energy:
            e = -(stats.lse - 0.5 * self.dim * math.log(2 * math.pi * self.sigma**2))
        return Step(state=clamp(stats.mean, cue, mask), energy=e, weights=stats.weights, index=stats.index)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """Responsibilities ``w_i(z)`` at ``z [B, D]``: ``(weights [B, N] or None, argmax [B])``."""
        stats = self._stats(z, weights=want_weights(return_weights, z.shape[0], len(self)), lse=False)
        return stats.weights, stats.index
