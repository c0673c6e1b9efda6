"""Diffusion model as an associative memory (Hoover et al. 2023, "Memory in Plain Sight").

A variance-exploding (VE) diffusion model of the ``N`` stored items ``ξ_i ∈ R^D`` noises an item
to the level ``σ`` as ``x = ξ_i + σ ε``; the noised data density is the kernel density

    p_σ(x | M) = (1/N) Σ_i N(x; ξ_i, σ² I)

(:class:`varmem.KernelDensityMemory`'s prior with bandwidth ``σ``).  Its exact score and its
ideal (MMSE) denoiser are, with ``w_i(x) = softmax_i(-‖x - ξ_i‖² / 2σ²)``::

    ∇ log p_σ(x) = (D*(x, σ) - x) / σ²          D*(x, σ) = E[ξ | x] = Σ_i w_i(x) ξ_i

(Tweedie's formula).  ``D*`` is the kernel-density memory's mean-shift step at bandwidth ``σ``,
i.e. the posterior mean of the stored item given the cue ``x`` observed with noise ``σ``; when all
items have the same norm, ``-‖x - ξ_i‖²/2σ² = x·ξ_i/σ² + const``, so ``D*`` is exactly one
modern Hopfield update ``Ξᵀ softmax(β Ξ x)`` with ``β = 1/σ²``.  These identities are asserted in
the tests; here ``D*`` is computed by :func:`varmem.kernels.kernel_stats`, the kernel memory's code.

**Reading is reverse-time diffusion** (the ``"diffusion"`` engine): start from noise at
``σ_max``, and step down a geometric schedule ``σ_0 = σ_max > … > σ_K = σ_min`` with the
probability-flow ODE (Euler, deterministic) or the ancestral VE sampler (stochastic)::

    ode:  x ← D + (σ'/σ) (x - D)                                 D = D(x, σ)
    sde:  x ← D + (σ'/σ)² (x - D) + σ' √(1 - (σ'/σ)²) ε          ε ~ N(0, I)

and return ``D(x, σ_min)``.  The cue is the item seen with noise ``ν`` (the memory's
``noise_scale``) on its observed entries; it conditions the process in one of two ways:

* ``"posterior"`` (ideal score): the exact conditional denoiser ``E[ξ | x, x_obs]``, whose weights
  are the kernel-density posterior ``w_i ∝ exp(-‖x - ξ_i‖²/2σ² - Σ_obs (x_obs,d - ξ_id)²/2ν²)``,
  so the process samples ``p(x_σ | x_obs)`` and ends on an item drawn from ``p(i | x_obs)``;
* ``"replacement"`` (any score; inpainting as in Song et al. 2021): while ``σ > ν`` the observed
  entries are set to ``x_obs + √(σ² - ν²) ε``, a draw of the noised item at level ``σ``; below ``ν``
  the score denoises them too.  Only an approximation of the conditional: fresh noise on the
  observed entries at every level weakens their pull on the rest.

With the ideal score and ``σ_min`` small next to the items' separation the read ends on a stored
item: the empirical optimum only memorises.

**A learned denoiser** ``D_θ(x, σ) = c_skip x + c_out F_θ(c_in x, log σ / 4)`` (Karras et al.
2022's preconditioning, ``σ_data = 0.5``; ``F_θ`` an MLP with three hidden layers of width
``hidden``) is trained by :meth:`DiffusionMemory.fit` with denoising score matching on the stored
items, ``σ`` log-uniform in ``[σ_min, σ_max]``, loss ``E ‖D_θ(ξ + σε, σ) - ξ‖² / c_out²``; read
with ``score="learned"``.  With few items it learns ``D*`` and memorises; with many it smooths
between them and generates new samples.  That memorisation → generalisation transition (and the
spurious states at its onset) is reported by later work (Pham et al. 2025, "Memorization to
generalization: emergence of diffusion models from associative memory", arXiv 2505.21777), not
by the survey; ``experiments/diffusion_memory.py`` shows it at a CPU size.

The memory's probabilistic model (energy, Pyro model, evidence, the ``"fixed_point"`` EM read and the
``"map"`` read) is
the kernel density at bandwidth ``σ_min`` (:class:`varmem.KernelDensity`, the prior of
:class:`varmem.KernelDensityMemory`), the density the reverse process ends in, with the cue
likelihood ``N(z, ν²)`` on observed entries: ``E(z; x) = -log p_{σ_min}(z | M) - log p(x | z)``
(all constants kept).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..distributions import KernelDensity
from ..domains import SIGNED
from ..engine import engine
from ..evidence import Evidence
from ..helpers import make_generator, masked_normal, match_rows, row_selection, want_weights
from ..inference import retrieve_fixed_point, retrieve_map
from ..kernels import kernel_stats
from ..memory import GaussianMixtureMemory
from ..retrieval import Retrieval
from ..validation import (
    as_state,
    check_bool,
    check_choice,
    check_positive,
    check_positive_int,
    check_seed,
)

__all__ = ["DiffusionMemory", "DiffusionFit", "Denoiser", "retrieve_diffusion", "reverse_diffusion", "SCORES",
           "SAMPLERS"]

SCORES = ("ideal", "learned")
SAMPLERS = ("ode", "sde")
CONDITIONINGS = ("auto", "posterior", "replacement")
SIGMA_DATA = 0.5
"""``σ_data`` of the learned denoiser's preconditioning (items in ``[-1, 1]``)."""
_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)


class Denoiser(nn.Module):
    """``D_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, e(σ))`` (Karras et al. 2022).

    ``c_skip = σ_d² / (σ² + σ_d²)``, ``c_out = σ σ_d / √(σ² + σ_d²)``, ``c_in = 1 / √(σ² + σ_d²)``;
    ``e(σ)`` = ``log σ / 4`` and its sines and cosines at frequencies 1, 2, 4, 8; ``F_θ`` an MLP
    ``[D + 9] → hidden → hidden → hidden → D`` with SiLU, initialised from ``seed`` (float64 draws:
    weights uniform with variance ``1/fan_in``, the output layer's ten times smaller, biases 0).
    ``x [B, D]``, ``sigma`` a float or ``[B]`` → ``[B, D]``.
    """

    def __init__(self, dim: int, hidden: int, seed: int, *, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sizes = [dim + 1 + 2 * len(_FREQUENCIES), hidden, hidden, hidden, dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layer = nn.Linear(n_in, n_out, device=device, dtype=dtype)
            with torch.no_grad():  # uniform with variance 1/fan_in from our generator; the last layer small
                bound = 1 / math.sqrt(n_in) * (0.1 if i == len(sizes) - 2 else math.sqrt(3))
                layer.weight.copy_((torch.rand(n_out, n_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
                layer.bias.zero_()
            layers += [layer, nn.SiLU()]
        self.net = nn.Sequential(*layers[:-1])
        self.register_buffer("frequencies", torch.tensor(_FREQUENCIES, device=device, dtype=dtype) * math.pi,
                             persistent=False)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0]).unsqueeze(-1)
        total = sigma.square() + SIGMA_DATA**2
        c_skip, c_out, c_in = SIGMA_DATA**2 / total, sigma * SIGMA_DATA / total.sqrt(), total.rsqrt()
        c_noise = sigma.log() / 4
        angles = c_noise * self.frequencies
        features = torch.cat([c_in * x, c_noise, angles.sin(), angles.cos()], -1)
        return c_skip * x + c_out * self.net(features)


@dataclass
class DiffusionFit:
    """What :meth:`DiffusionMemory.fit` returns: ``losses [steps]`` (weighted DSM loss per step,
    float64 CPU), ``steps``, ``seconds`` (wall time of the loop), ``lr``, ``batch_size``."""

    losses: Tensor
    steps: int
    seconds: float
    lr: float
    batch_size: int


@runtime_checkable
class ReverseDiffusion(Protocol):
    """What the ``"diffusion"`` engine needs: a noise schedule, a denoiser at every level, the
    energy ``-log p_σ(x | M)`` of the noised items, the cue noise ``noise_scale`` and the item
    weights at the final state."""

    def noise_levels(self, num_steps: int) -> list[float]: ...

    def compute_denoised(
        self, x: Tensor, sigma: float, score: str, cue: Tensor | None = None, observed: Tensor | None = None,
    ) -> Tensor: ...

    def noise_energy(self, x: Tensor, sigma: float) -> Tensor: ...

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]: ...


@engine("diffusion", requires=(ReverseDiffusion,))
def retrieve_diffusion(
    memory: Any, cue: Tensor, mask: Tensor | None, *, score: str = "ideal", sampler: str = "ode",
    num_steps: int = 50, conditioning: str = "auto", seed: int | None = 0, return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """``"diffusion"``: reverse-time diffusion from noise at ``σ_max`` to ``σ_min``, conditioned on
    the cue's observed entries by the exact posterior (ideal score) or by replacement (see
    :mod:`varmem.memories.diffusion`).

    ``pattern`` is ``D(x_K, σ_min)``, the denoised end state; ``weights`` the responsibilities
    ``p(i | z, M)`` at it under the kernel density of bandwidth ``σ_min`` (``weights_at =
    "final_state"``), ``index`` their arg-max; ``trace`` ``[K, B]`` the energy
    ``-log p_{σ_k}(x_k | M)`` of the state at each level before its step (the ideal model's, for
    both scores); ``steps = K``; no stopping rule (``converged`` None); ``info``: ``sigmas``
    (the ``K + 1`` levels), ``score``, ``sampler``, ``conditioning`` (the one used).

    Options:
        score: ``"ideal"`` (the exact score of the stored items) or ``"learned"`` (the trained
            network; :meth:`DiffusionMemory.fit` first).
        sampler: ``"ode"`` (probability flow, Euler) or ``"sde"`` (ancestral, stochastic).
        num_steps: ``K``, steps of the geometric schedule.
        conditioning: how the cue enters: ``"posterior"`` (the exact conditional denoiser
            ``E[ξ | x, x_obs]``, ideal score only), ``"replacement"`` (inpainting by replacing the
            observed entries, any score) or ``"auto"`` (posterior for the ideal score, replacement
            for the learned one).
        seed: seed of the start noise, the conditioning noise and the sampler (None: global RNG).
        return_weights: keep the ``[B, N]`` weights (None = automatic).
        progress: a tqdm bar over the steps.
    """
    score = check_choice(score, "option score", SCORES)
    sampler = check_choice(sampler, "option sampler", SAMPLERS)
    num_steps = check_positive_int(num_steps, "option num_steps")
    conditioning = check_choice(conditioning, "option conditioning", CONDITIONINGS)
    if conditioning == "auto":
        conditioning = "posterior" if score == "ideal" else "replacement"
    if conditioning == "posterior" and score != "ideal":
        raise ValueError("option conditioning='posterior' needs score='ideal' (a learned score has no exact "
                         "conditional); use conditioning='replacement'")
    seed = check_seed(seed, "option seed", allow_none=True)
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    if score == "learned" and int(memory.trained_steps) == 0:
        raise ValueError("option score='learned' needs a trained denoiser: call memory.fit() first")
    observed = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand_as(cue)
    return reverse_diffusion(memory, cue, observed, score=score, sampler=sampler, num_steps=num_steps,
                             conditioning=conditioning, generator=make_generator(seed, cue.device),
                             return_weights=return_weights, progress=progress)


def reverse_diffusion(
    memory: Any, cue: Tensor, observed: Tensor, *, score: str, sampler: str, num_steps: int, conditioning: str,
    generator: torch.Generator | None, return_weights: bool | None, progress: bool,
) -> Retrieval:
    """The reverse process of :func:`retrieve_diffusion` for validated inputs; ``observed [B, D]``
    may be all False (generation from noise, :meth:`DiffusionMemory.sample`)."""

    def noise() -> Tensor:
        return torch.randn(cue.shape, generator=generator, dtype=cue.dtype, device=cue.device)

    sigmas = memory.noise_levels(num_steps)
    nu = memory.noise_scale
    safe_cue = torch.where(observed, cue, torch.zeros_like(cue))  # unobserved entries may be NaN

    exact = conditioning == "posterior"
    given = (safe_cue, observed) if exact else (None, None)

    def condition(x: Tensor, sigma: float) -> Tensor:
        if exact or sigma <= nu:
            return x
        return torch.where(observed, safe_cue + math.sqrt(sigma**2 - nu**2) * noise(), x)

    trace = []
    with torch.no_grad():
        x = memory.items.mean(0) + sigmas[0] * noise()
        for k in tqdm(range(num_steps), desc="reverse diffusion", disable=not progress, leave=False):
            sigma, nxt = sigmas[k], sigmas[k + 1]
            x = condition(x, sigma)
            trace.append(memory.noise_energy(x, sigma))
            d = memory.compute_denoised(x, sigma, score, *given)
            r = nxt / sigma
            if sampler == "ode":
                x = d + r * (x - d)
            else:
                x = d + r * r * (x - d) + nxt * math.sqrt(1 - r * r) * noise()
        x = condition(x, sigmas[-1])
        pattern = memory.compute_denoised(x, sigmas[-1], score, *given)
        weights, index = memory.item_weights(pattern, want_weights(return_weights, cue.shape[0], len(memory)))
    return Retrieval(
        pattern=pattern,
        method="diffusion",
        weights=weights,
        weights_at="final_state",
        index=index,
        trace=torch.stack(trace),
        steps=num_steps,
        info={"sigmas": sigmas, "score": score, "sampler": sampler, "conditioning": conditioning},
    )


class DiffusionMemory(GaussianMixtureMemory):
    """A diffusion model of the stored items, read by reverse-time diffusion (module docstring).

    Args:
        dim: ``D``, the dimension of an item (items expected in ``[-1, 1]``).
        sigma_min: the last noise level of the reverse process, and the bandwidth of the memory's
            kernel-density model (its energy, evidence and ``"fixed_point"`` read).
        sigma_max: the first noise level (the start noise); must exceed ``sigma_min``.
        noise_scale: ``ν``, the noise of the cue's observed entries (likelihood ``N(z, ν²)``).
        hidden: width of the learned denoiser's three hidden layers.
        seed: seed of the learned denoiser's initialisation.
        chunk_size: stored items per chunk of the kernel computations.
        device, dtype: where and how items and the network are stored.

    Example:
        >>> items = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]])
        >>> memory = DiffusionMemory(2, sigma_min=0.01, sigma_max=5.0).write(items)
        >>> memory.retrieve(torch.tensor([[0.8, 1.3]])).pattern.round(decimals=3)
        tensor([[1., 1.]])
    """

    methods = (retrieve_diffusion, retrieve_fixed_point, retrieve_map)
    default_method = "diffusion"
    value_domain = SIGNED

    def __init__(
        self,
        dim: int,
        sigma_min: float = 0.01,
        sigma_max: float = 10.0,
        noise_scale: float = 0.1,
        hidden: int = 128,
        seed: int = 0,
        *,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        sigma_min = check_positive(sigma_min, "sigma_min")
        sigma_max = check_positive(sigma_max, "sigma_max")
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
        super().__init__(dim, device=device, dtype=dtype)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.noise_scale = check_positive(noise_scale, "noise_scale")
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self.hidden = check_positive_int(hidden, "hidden")
        self.seed = check_seed(seed, "seed")
        self.denoiser = Denoiser(self.dim, self.hidden, self.seed, device=self.device, dtype=self.dtype)
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long, device=self.device))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "noise_scale": self.noise_scale, "hidden": self.hidden, "seed": self.seed,
                "chunk_size": self.chunk_size}

    def __len__(self) -> int:
        return self.items.shape[0]

    def write(self, items: Any) -> "DiffusionMemory":
        """Append ``items`` (``[N, D]`` or ``[D]``); the learned denoiser is not retrained (:meth:`fit`)."""
        self.append_rows("items", self.prepare_items(items))
        return self

    def forget(self, index: Any) -> "DiffusionMemory":
        """Remove the stored items at ``index`` (an int, a sequence or tensor of ints, a slice, or a
        bool mask over the ``N`` items).  The learned denoiser keeps what it learned (:meth:`fit` again)."""
        self.items = self.items[~row_selection(index, len(self), self.device)]
        return self

    def delete(self, items: Any, *, atol: float = 0.0) -> "DiffusionMemory":
        """Remove one stored copy of each given item (matched within ``atol`` in max-norm); ``KeyError``
        (and nothing removed) if some item is not stored."""
        return self.forget(match_rows(self.items, self.prepare_items(items), atol))

    # --- the probabilistic model: the kernel density at the last noise level -------------------------
    def prior(self) -> KernelDensity:
        """``p(z | M) = p_{σ_min}(z | M) = (1/N) Σ_i N(z; ξ_i, σ_min² I)``, the noised items at the end
        of the reverse process (:class:`varmem.KernelDensity`)."""
        self._check_not_empty()
        return KernelDensity(self.items, self.sigma_min, chunk_size=self.chunk_size)

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``: ``N(z_d, ν²)`` on observed entries, masked through Pyro elsewhere."""
        return masked_normal(z, self.noise_scale, mask)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``p(i | z, M) = softmax_i(-‖z - ξ_i‖²/2σ_min²)`` at ``z [B, D]``, streamed over the items."""
        stats = kernel_stats(z, self.items, 1.0 / self.sigma_min**2, return_lse=False,
                             weights=want_weights(return_weights, z.shape[0], len(self)),
                             chunk_size=self.chunk_size, workspace=self.workspace)
        return stats.weights, stats.index

    def compute_evidence(self, cue: Tensor, mask: Tensor | None, **options: Any) -> Evidence:
        """``log p(x_obs | M) = log (1/N) Σ_i N(x_obs; ξ_i,obs, (σ_min² + ν²) I)`` in closed form."""
        if options:
            raise TypeError(f"the exact evidence of DiffusionMemory takes no options, got {sorted(options)}")
        c = self.sigma_min**2 + self.noise_scale**2
        m = cue.new_ones(()) if mask is None else mask.to(cue.dtype)
        lse = kernel_stats(cue, self.items, m / c, return_index=False, chunk_size=self.chunk_size).lse
        n_obs = (cue.new_full(cue.shape[:1], cue.shape[1]) if mask is None
                 else mask.expand_as(cue).sum(-1).to(cue.dtype))
        value = lse - math.log(len(self)) - 0.5 * n_obs * math.log(2 * math.pi * c)
        return Evidence(log_evidence=value, kind="exact", method="closed_form", stderr=torch.zeros_like(value),
                        n_observed=n_obs)

    def check_state(self) -> None:
        self.check_stored_items()
        self.check_parameters()
        if int(self.trained_steps) < 0:
            raise ValueError(f"trained_steps must be non-negative, got {int(self.trained_steps)}")

    # --- the reverse process -------------------------------------------------------------------
    def noise_levels(self, num_steps: int) -> list[float]:
        """``K + 1`` geometric levels ``σ_k = σ_max (σ_min / σ_max)^{k/K}``, from ``σ_max`` to ``σ_min``."""
        ratio = self.sigma_min / self.sigma_max
        return [self.sigma_max * ratio ** (k / num_steps) for k in range(num_steps)] + [self.sigma_min]

    def compute_denoised(
        self, x: Tensor, sigma: float, score: str = "ideal", cue: Tensor | None = None,
        observed: Tensor | None = None,
    ) -> Tensor:
        """``D(x, σ)`` for validated ``x [B, D]``: the ideal ``E[ξ | x] = Σ_i w_i ξ_i`` or the network's.

        With a ``cue`` (``observed [B, D]`` its observed entries, seen with noise ``ν``) the ideal
        denoiser is the exact conditional ``E[ξ | x, x_obs]``: the weights are the kernel-density
        posterior ``w_i ∝ exp(-‖x - ξ_i‖²/2σ² - Σ_obs (c_d - ξ_id)²/2ν²)``, one Gaussian kernel with
        per-entry precision ``p = 1/σ² + m/ν²`` at the precision-weighted query ``(x/σ² + m c/ν²)/p``.
        """
        if score == "learned":
            return self.denoiser(x, sigma)
        precision: Tensor | float = 1.0 / sigma**2
        query = x
        if cue is not None and observed is not None:
            m = observed.to(x.dtype) / self.noise_scale**2
            precision = m + 1.0 / sigma**2
            query = (x / sigma**2 + m * cue) / precision
        return kernel_stats(query, self.items, precision, return_index=False, return_lse=False,
                            chunk_size=self.chunk_size, workspace=self.workspace).mean

    def noise_energy(self, x: Tensor, sigma: float) -> Tensor:
        """``-log p_σ(x | M) = -log Σ_i exp(-‖x - ξ_i‖²/2σ²) + log N + (D/2) log 2πσ²`` ``[B]``."""
        n, d = self.items.shape
        lse = kernel_stats(x, self.items, 1.0 / sigma**2, return_index=False, chunk_size=self.chunk_size,
                           workspace=self.workspace).lse
        return -(lse - math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma**2))

    def denoise(self, x: Any, sigma: Any, score: str = "ideal") -> Tensor:
        """The denoiser ``D(x, σ)`` ``[B, D]`` at states ``x [B, D]`` (or ``[D]``) and level ``sigma``:
        ``"ideal"`` = ``E[ξ | x]`` of the stored items, ``"learned"`` = the trained network."""
        self._check_not_empty()
        x = as_state(x, self.dim, self.dtype, self.device, "x")
        squeeze = x.dim() == 1
        x = x.reshape(-1, self.dim)
        sigma = check_positive(sigma, "sigma")
        score = check_choice(score, "score", SCORES)
        with torch.no_grad():
            out = self.compute_denoised(x, sigma, score)
        return out[0] if squeeze else out

    def score(self, x: Any, sigma: Any, score: str = "ideal") -> Tensor:
        """The score ``∇ log p_σ(x) = (D(x, σ) - x) / σ²`` ``[B, D]`` (Tweedie)."""
        sigma = check_positive(sigma, "sigma")
        d = self.denoise(x, sigma, score)
        return (d - as_state(x, self.dim, self.dtype, self.device, "x").reshape(d.shape)) / sigma**2

    def sample(
        self, num_samples: int, *, score: str = "ideal", sampler: str = "ode", num_steps: int = 50,
        seed: int | None = 0, return_weights: bool | None = None, progress: bool = False,
    ) -> Retrieval:
        """Generate ``num_samples`` items from noise: the reverse process with no cue (the options
        of :func:`retrieve_diffusion`).  With the ideal score every sample ends on a stored item
        once ``σ_min`` is small next to their separation; a learned score may generate new ones."""
        num_samples = check_positive_int(num_samples, "num_samples")
        self._check_not_empty()
        blank = self.items.new_zeros(num_samples, self.dim)
        return retrieve_diffusion(self, blank, torch.zeros_like(blank, dtype=torch.bool), score=score,
                                  sampler=sampler, num_steps=num_steps, seed=seed, return_weights=return_weights,
                                  progress=progress)

    # --- training the denoiser ------------------------------------------------------------------
    def fit(
        self, steps: int = 2000, *, batch_size: int = 256, lr: float = 2e-3, seed: int = 0, progress: bool = False,
    ) -> DiffusionFit:
        """Train the denoiser on the stored items by denoising score matching (module docstring).

        Each step draws ``batch_size`` items with replacement, levels ``log σ ~ U(log σ_min,
        log σ_max)`` and noise; Adam (``lr``, cosine decay to ``lr/10``) on the mean of
        ``‖D_θ(ξ + σε, σ) - ξ‖² / c_out(σ)²``.  The stored items are not changed; a loss that
        becomes NaN, or weights beyond ``±1e6``, restore the parameters and raise ``ValueError``.
        """
        steps = check_positive_int(steps, "steps")
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_positive(lr, "lr")
        seed = check_seed(seed, "seed")
        check_bool(progress, "progress")
        self._check_not_empty()
        items = self.items
        gen = torch.Generator(device="cpu").manual_seed(seed)
        before = {k: v.detach().clone() for k, v in self.denoiser.named_parameters()}
        optimizer = torch.optim.Adam(self.denoiser.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
        log_lo, log_hi = math.log(self.sigma_min), math.log(self.sigma_max)
        losses: list[float] = []
        start = time.perf_counter()
        try:
            for _ in tqdm(range(steps), desc="fit denoiser", disable=not progress, leave=False):
                idx = torch.randint(len(items), (batch_size,), generator=gen).to(items.device)
                sigma = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(batch_size, generator=gen,
                                                                          dtype=torch.float64))
                eps = torch.randn(batch_size, self.dim, generator=gen, dtype=torch.float64)
                sigma, eps = sigma.to(items), eps.to(items)
                clean = items[idx]
                denoised = self.denoiser(clean + sigma[:, None] * eps, sigma)
                weight = (sigma.square() + SIGMA_DATA**2) / (sigma * SIGMA_DATA).square()
                loss = (weight * (denoised - clean).square().sum(-1)).mean() / self.dim
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the denoising loss became {loss.item()} at step {len(losses)}")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
            try:  # finite but huge weights (a too large lr) would turn every later read into NaN
                self.check_parameters()
            except ValueError as e:
                raise FloatingPointError(f"training diverged ({e})") from None
        except BaseException as e:
            with torch.no_grad():
                for k, p in self.denoiser.named_parameters():
                    p.copy_(before[k])
            if isinstance(e, FloatingPointError):
                raise ValueError(f"{e}; parameters restored (lower lr)") from None
            raise
        self.trained_steps += steps
        return DiffusionFit(losses=torch.tensor(losses, dtype=torch.float64), steps=steps,
                            seconds=time.perf_counter() - start, lr=lr, batch_size=batch_size)
