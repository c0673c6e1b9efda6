"""Latent memory: items are stored as codes of a learned (β-)VAE; reading is inference in code space.

Generative model (``N`` stored codes ``m_i = μ_enc(x_i) ∈ R^L``, bandwidth ``s``, decoder mean
``g``, pixel noise ``σ``)::

    z ~ p(z | M) = (1/N) Σ_i N(z; m_i, s² I_L)            (kernel-density prior over the codes)
    x_d ~ N(g(z)_d, σ²)   for every observed dimension d    (the decoder likelihood)

so ``p(x, z | M) = (1/N) Σ_i N(z; m_i, s² I) · p(x | z)`` (Annabi, Pitti & Quoy 2022).  The prior
is a kernel density over the codes (:class:`~varmem.KernelDensity`, the prior of
:class:`~varmem.KernelDensityMemory` in code space), so its density,
mean-shift step and responsibilities are that memory's, not re-derived here.

Energy (a negative log-density, all constants kept, ``B`` cues, ``m`` the mask)::

    E(z; x) = -log p(z | M) - log p(x | z)
            = -log Σ_i exp(-‖z - m_i‖² / 2s²) + log N + (L/2) log(2π s²)
              + Σ_{d obs} [(x_d - g(z)_d)² / 2σ² + ½ log(2π σ²)]

which equals minus the log-density of the Pyro trace of :meth:`LatentMemory.model` at ``z``.

Learning: :meth:`LatentMemory.fit_autoencoder` trains encoder and decoder as a β-VAE (standard
normal training prior, the KL term scaled by ``β``) with SVI.  Writing stores ``μ_enc(x)`` in one
shot and never changes a weight.  :meth:`fit_retrieval_guide` trains an amortized guide
``q_φ(z | x̃)`` on corrupted cues against *this* memory's model; :meth:`fit_precision` trains the
diagonal precision of the GMM* fixed-point step.

Retrieval methods: ``"amortized"`` (encoder or retrieval guide, one forward pass),
``"fixed_point"`` (VAE-GMM: encoder mean, then mean-shift steps on the code prior),
``"iterative"`` (Annabi's encoder-started reads: VAE-BP-GMM, gradient steps through the
decoder to the posterior mode (``scheme="map"``) or on the released objective (``"bp"``), or
VAE-PC-GMM, a predictive-coding relaxation (``"pc"``); ``init="prior_mean"`` is an explicit other
start), ``"hybrid"`` (the same from the encoder or the trained retrieval guide),
``"learned_precision"`` (GMM*), ``"map"`` and ``"nuts"``.  :meth:`LatentMemory.evidence` estimates
``log p(x_obs | M)`` by importance sampling (proposal: half the amortized encoder, half the
stored codes' kernels weighted by the likelihood at their centres, plus a defensive prior share).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import Tensor

from ...capabilities import Step
from ...distributions import KernelDensity
from ...evidence import Evidence, importance_sampling
from ...helpers import masked_normal, row_selection, start_state, want_weights
from ...inference import retrieve_fixed_point, retrieve_map, retrieve_nuts
from ...kernels import kernel_stats
from ...memory import PriorLikelihoodMemory
from ...models.coders import ARCHITECTURES, OUTPUTS, Encoder, build_coders
from ...training import fit
from ...validation import (
    MAX_ABS_VALUE,
    check_choice,
    check_int,
    check_int_sequence,
    check_positive,
    check_positive_int,
    check_representable,
    check_seed,
    check_unit_interval,
    check_values,
)
from .amortized import fit_retrieval_guide, retrieve_amortized
from .hybrid import retrieve_hybrid
from .iterative import retrieve_iterative
from .learned_precision import fit_precision, retrieve_learned_precision

__all__ = ["LatentMemory"]


def _shape(data_shape: int | Sequence[int]) -> tuple[int, ...]:
    return check_int_sequence(data_shape, "data_shape (D,) or (C, H, W)", lengths=(1, 3))


def _widths(hidden: Sequence[int], name: str) -> tuple[int, ...]:
    return check_int_sequence(hidden, name, allow_empty=True)  # the linear architecture has no hidden layer


class _VAEModel(torch.nn.Module):
    """The β-VAE training model ``z ~ N(0, I)`` (KL scaled by β), ``x ~ N(g(z), σ²)``."""

    def __init__(self, memory: "LatentMemory") -> None:
        super().__init__()
        self.decoder = memory.decoder
        self.code_dim = memory.code_dim
        self.noise_scale = memory.noise_scale
        self.beta = memory.beta

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        B, L = x.shape[0], self.code_dim
        zeros = x.new_zeros(B, L)
        with pyro.plate("data", num_data or B, subsample=torch.arange(B, device=x.device)):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.noise_scale).to_event(1), obs=x)


class _VAEGuide(torch.nn.Module):
    """The β-VAE guide ``q(z | x) = N(μ_enc(x), diag σ_enc(x)²)`` (scaled by β like the prior)."""

    def __init__(self, encoder: Encoder, beta: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.beta = beta

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        B = x.shape[0]
        loc, scale = self.encoder(x)
        with pyro.plate("data", num_data or B, subsample=torch.arange(B, device=x.device)):
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class LatentMemory(PriorLikelihoodMemory):
    """An associative memory over the codes of a learned encoder/decoder pair.

    See the module docstring for the model and the energy.

    Args:
        data_shape: ``D`` (or ``(D,)``) for vectors, ``(C, H, W)`` for images; items and cues are
            always passed flat, ``[N, D]`` with ``D = C·H·W``.
        code_dim: ``L``, the dimension of a code.
        architecture: ``"dense"`` (MLP), ``"conv"`` (stride-2 convolutions, needs ``(C, H, W)``) or
            ``"linear"`` (``x̂ = Wz + b``: the latent posterior is then a Gaussian mixture in
            closed form).
        hidden: hidden widths (dense) or channels per conv stage (conv); unused for linear.
        output: ``"sigmoid"`` (data in ``[0, 1]``) or ``"identity"`` decoder output.
        bandwidth: ``s``, the kernel width of the prior over codes (Annabi: σ = 0.1).  Fixed, for
            the reason given in :class:`~varmem.KernelDensityMemory`.
        noise_scale: ``σ`` of the decoder likelihood (MSE reconstruction ⇔ Gaussian).
        beta: weight of the KL term when training the autoencoder (β-VAE).
        code_noise: ``None`` (default, Annabi's VAE-GMM): ``"fixed_point"`` trusts the encoder only
            as a starting point and runs mean-shift steps on the prior.  A number ``τ``: the encoder
            mean is a Gaussian observation ``N(μ_enc(x); z, τ²)`` in code space, and the step is
            exactly :meth:`KernelDensityMemory.fixed_point_step` of the code memory.
        guide_hidden: hidden widths / channels of the amortized retrieval guide (default:
            ``hidden``, or ``(64,)`` for the linear architecture).
        chunk_size: stored codes per chunk in kernel computations.
        device, dtype: where the networks and codes live.

    ``Retrieval.code`` is always the code ``z`` (``[B, L]``) and ``pattern = decode(z)``;
    ``variance`` (``"nuts"``) is the posterior variance of the code.

    Example:
        >>> import varmem
        >>> x = varmem.datasets.load_digits().flat()[:200]                  # [200, 64] in [0, 1]
        >>> memory = LatentMemory((1, 8, 8), code_dim=4, hidden=(32,), bandwidth=0.3)
        >>> result = memory.fit_autoencoder(x[50:], num_steps=20, batch_size=50)
        >>> memory = memory.write(x[:50])
        >>> cue, mask = varmem.corruptions.corrupt(x[:2], "mask", 0.5, image_shape=(1, 8, 8))
        >>> memory.retrieve(cue, mask, method="hybrid").pattern.shape
        torch.Size([2, 64])
    """

    methods = (retrieve_amortized, retrieve_fixed_point, retrieve_iterative, retrieve_hybrid,
               retrieve_learned_precision, retrieve_map, retrieve_nuts)
    default_method = "hybrid"

    def __init__(
        self,
        data_shape: int | Sequence[int],
        code_dim: int,
        *,
        architecture: str = "dense",
        hidden: Sequence[int] = (256,),
        output: str = "sigmoid",
        bandwidth: float = 0.1,
        noise_scale: float = 0.2,
        beta: float = 1.0,
        code_noise: float | None = None,
        guide_hidden: Sequence[int] | None = None,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        # every PyroModule gets module-local parameter state, so engines and varmem.fit (which run
        # with module_local_params=True) and code using Pyro's global param store can both call it
        with pyro.settings.context(module_local_params=True):
            self._build(data_shape, code_dim, architecture, hidden, output, bandwidth, noise_scale, beta,
                        code_noise, guide_hidden, chunk_size, device, dtype)

    def _build(self, data_shape: Any, code_dim: Any, architecture: str, hidden: Sequence[int], output: str,
               bandwidth: float, noise_scale: float, beta: float, code_noise: float | None,
               guide_hidden: Sequence[int] | None, chunk_size: int | None, device: Any, dtype: Any) -> None:
        shape = _shape(data_shape)
        super().__init__(math.prod(shape), device=device, dtype=dtype)
        code_dim = check_positive_int(code_dim, "code_dim")
        check_choice(architecture, "architecture", ARCHITECTURES)
        if architecture == "conv" and len(shape) != 3:
            raise ValueError(f"architecture 'conv' needs data_shape (C, H, W), got {shape}")
        self.data_shape = shape
        self.code_dim = code_dim
        self.architecture = architecture
        self.hidden = _widths(hidden, "hidden")
        self.output = check_choice(output, "output", OUTPUTS)
        self.noise_scale = check_positive(noise_scale, "noise_scale")
        self.beta = check_positive(beta, "beta")
        self.code_noise = None if code_noise is None else check_positive(code_noise, "code_noise")
        default_guide = self.hidden if architecture != "linear" else (64,)
        self.guide_hidden = _widths(default_guide if guide_hidden is None else guide_hidden, "guide_hidden")
        self.encoder, self.decoder = build_coders(
            architecture, shape, code_dim, self.hidden, output, device=self.device, dtype=self.dtype
        )
        guide_arch = "conv" if architecture == "conv" else "dense"
        self.retrieval_guide = Encoder(guide_arch, shape, code_dim, self.guide_hidden, in_channels_factor=2).to(
            device=self.device, dtype=self.dtype
        )
        self.bandwidth = check_positive(bandwidth, "bandwidth")
        for value, what in ((1 / self.bandwidth**2, "1/bandwidth²"), (1 / self.noise_scale**2, "1/noise_scale²")):
            check_representable(value, what, self.dtype)  # the kernel precision and the likelihood's
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.register_buffer("codes", torch.empty(0, code_dim, device=self.device, dtype=self.dtype))
        self.register_buffer("log_precision", torch.zeros(code_dim, device=self.device, dtype=self.dtype))
        self.register_buffer("guide_fitted", torch.zeros((), dtype=torch.bool, device=self.device))

    # --- configuration and state -------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """``L``, the code dimension."""
        return self.code_dim

    @property
    def precision(self) -> Tensor:
        """``[L]`` the GMM* precision ``exp(θ) / s²`` (``1/s²`` until :meth:`fit_precision`)."""
        return self.log_precision.exp() / self.bandwidth**2

    def __len__(self) -> int:
        return self.codes.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "data_shape": list(self.data_shape),
            "code_dim": self.code_dim,
            "architecture": self.architecture,
            "hidden": list(self.hidden),
            "output": self.output,
            "bandwidth": self.bandwidth,
            "noise_scale": self.noise_scale,
            "beta": self.beta,
            "code_noise": self.code_noise,
            "guide_hidden": list(self.guide_hidden),
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        if self.codes.dim() != 2 or self.codes.shape[1] != self.code_dim:
            raise ValueError(f"codes must be a [N, {self.code_dim}] tensor, got {tuple(self.codes.shape)}")
        check_values(self.codes, "stored codes")
        if self.log_precision.shape != (self.code_dim,) or not torch.isfinite(self.log_precision).all():
            raise ValueError(f"log_precision must be finite of shape [{self.code_dim}]")
        self.check_parameters()

    # --- writing -----------------------------------------------------------------------------
    def write(self, items: Any) -> "LatentMemory":
        """Store the encoder means ``μ_enc(x)`` of ``items`` (``[N, D]`` or ``[D]``), in one shot.

        Nothing is trained: every weight is left exactly as it was.
        """
        x = self.prepare_items(items)
        with torch.no_grad():
            codes = self.encoder(x)[0]
        if not torch.isfinite(codes).all() or not bool(codes.abs().max() <= MAX_ABS_VALUE):
            raise ValueError(f"the encoder gave codes that are not finite or beyond ±{MAX_ABS_VALUE:g} for these "
                             "items; nothing was stored")
        self.append_rows("codes", codes)
        return self

    def forget(self, index: Any) -> "LatentMemory":
        """Remove stored codes by position (see :meth:`KernelDensityMemory.forget`)."""
        self.codes = self.codes[~row_selection(index, len(self), self.device)]
        return self

    # --- the probabilistic model -------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ_enc(x), σ_enc(x))``, each ``[B, L]``, for flat items ``x [B, D]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``g(z)``: codes ``[..., L]`` → data-space means ``[..., D]``."""
        return self.decoder(z)

    def decoder_stages(self) -> list[Callable[[Tensor], Tensor]]:
        """The decoder as ``[f_1, …, f_K]`` with ``g = f_K ∘ … ∘ f_1`` (predictive coding)."""
        return list(self.decoder.stages)

    def prior(self) -> KernelDensity:
        """``p(z | M)``: the kernel density of the stored codes (event shape ``[L]``)."""
        self._check_not_empty()
        return KernelDensity(self.codes, self.bandwidth, chunk_size=self.chunk_size)

    def latent_energy(self, z: Tensor) -> Tensor:
        """``-log p(z | M)`` for ``z [..., L]`` → ``[...]`` (constants kept)."""
        return -self.prior().log_prob(z)

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``: independent ``N(g(z)_d, σ²)``, masked by Pyro where ``mask`` is False."""
        return masked_normal(self.decode(z), self.noise_scale, mask)

    # --- hooks used by the engines -----------------------------------------------------------
    def guide_encode(self, cue: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the amortized retrieval guide ``q_φ(z | x̃, m)``; its input is
        ``[x̃ ⊙ m, m]``.  Raises if :meth:`fit_retrieval_guide` has not been run."""
        if not bool(self.guide_fitted):
            raise ValueError("the retrieval guide is not trained: call memory.fit_retrieval_guide(...) first")
        return self.retrieval_guide(_guide_input(cue, mask))

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """Starting code ``[B, L]`` of iterative engines.

        ``"cue"`` or ``"encoder"``: ``μ_enc`` of the cue (unobserved entries are 0);
        ``"guide"``: the retrieval guide's mean; ``"prior_mean"``: the mean of the stored codes;
        or a ``[B, L]`` tensor.
        """
        def encoder() -> Tensor:
            with torch.no_grad():
                return self.encoder(cue)[0]

        def guide() -> Tensor:
            with torch.no_grad():
                return self.guide_encode(cue, mask)[0]

        starts = {"encoder": encoder, "cue": encoder, "guide": guide,
                  "prior_mean": lambda: self.codes.mean(0).expand(cue.shape[0], -1).clone()}
        return start_state(init, cue, starts, self, shape=(cue.shape[0], self.code_dim))

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One VAE-GMM step in code space, with the joint energy ``E(z; x)`` at ``z`` when asked.

        ``code_noise=None``: ``z_new = Σ_i w_i m_i``, ``w = softmax_i(-‖z - m_i‖²/2s²)`` (mean shift on
        the prior; the encoder only chose the start).  ``code_noise=τ``: the EM step of a
        kernel-density memory over the codes with the encoder mean as its cue,
        ``(τ² Σ_i w_i m_i + s² μ_enc(x)) / (τ² + s²)``.  ``weights`` are ``w``.
        """
        stats = kernel_stats(z, self.codes, 1.0 / self.bandwidth**2, weights=weights, return_index=index,
                             return_lse=False, chunk_size=self.chunk_size, workspace=self.workspace)
        z_new = stats.mean
        if self.code_noise is not None:
            t2, s2 = self.code_noise**2, self.bandwidth**2
            z_new = (t2 * z_new + s2 * self.encoder(cue)[0]) / (t2 + s2)
        e = self.compute_energy(z, cue, mask) if energy else None
        return Step(state=z_new, energy=e, weights=stats.weights, index=stats.index)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """Responsibilities ``p(i | z, M) = softmax_i(-‖z - m_i‖²/2s²)`` of the stored codes at
        ``z [B, L]``: ``(weights [B, N] or None, argmax [B])``."""
        dense = want_weights(return_weights, z.shape[0], len(self))
        stats = kernel_stats(z, self.codes, 1.0 / self.bandwidth**2, weights=dense, return_lse=False,
                             chunk_size=self.chunk_size, workspace=self.workspace)
        return stats.weights, stats.index

    # --- evidence ----------------------------------------------------------------------------
    def importance_log_weights(
        self,
        cue: Tensor,
        mask: Tensor | None,
        *,
        num_samples: int = 256,
        seed: int = 0,
        proposal: str = "mixture",
        scale: float = 1.0,
        defensive: float = 0.1,
    ) -> Tensor:
        """``[S, B]`` importance log-weights ``log p(z_s | M) + log p(x_obs | z_s) - log q(z_s)``
        with ``z_s ~ q`` for the cues ``[B, D]`` (checked by ``prepare_cue``; hidden entries never read).

        The proposal is ``q = (1 - ε) q_0 + ε p(z | M)`` (``ε = defensive``: the memory prior as a
        defensive share, so every weight is at most ``p(x_obs | z) / ε``), with ``q_0``:

        * ``"encoder"``: the amortized encoder ``N(μ(x_obs), diag (c·σ(x_obs))²)`` (``c = scale``);
        * ``"guide"``: the same with the trained retrieval guide's ``(μ, σ)``;
        * ``"codes"``: the stored-code kernels weighted by the likelihood at their centres,
          ``Σ_i π_i N(z; m_i, (c·s)² I)`` with ``π_i ∝ p(x_obs | z = m_i)``: the item posterior
          for narrow kernels, where an encoder-wide Gaussian wastes most draws;
        * ``"encoder_codes"``: the same kernels weighted by the encoder,
          ``π_i ∝ N(μ; m_i, diag(σ² + s²))``;
        * ``"mixture"`` (default): ``½ "encoder" + ½ "codes"``, good wherever either one is;
        * ``"prior"``: ``p(z | M)`` alone (``ε`` unused).

        The draws are allocated deterministically to the components (``round(share·S)`` each) and
        ``log q`` is the mixture density with those shares (the balance heuristic: unbiased).
        """
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        check_choice(proposal, "option proposal", ("mixture", "encoder", "codes", "encoder_codes", "guide", "prior"))
        s_total = check_int(num_samples, "option num_samples", minimum=2)
        seed = check_seed(seed, "option seed")
        scale = check_positive(scale, "option scale")
        eps = check_unit_interval(defensive, "option defensive")
        if eps >= 1.0:
            raise ValueError("option defensive must be below 1 (use proposal='prior' to sample the prior alone)")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        B, L, N = cue.shape[0], self.code_dim, len(self)
        m = torch.ones_like(cue) if mask is None else mask.expand_as(cue).to(cue.dtype)
        n2, s2 = self.noise_scale**2, self.bandwidth**2

        def randn(n: int) -> Tensor:
            return torch.randn(n, B, L, generator=gen, device=self.device, dtype=self.dtype)

        def kernels(log_pi: Tensor, width: float) -> tuple[Callable[[int], Tensor], Callable[[Tensor], Tensor]]:
            """Sampler and log-density of ``Σ_i π_bi N(z; m_i, width² I)`` (``log_pi [B, N]``)."""

            def draw(n: int) -> Tensor:
                item = torch.multinomial(log_pi.exp(), n, replacement=True, generator=gen).T  # [n, B]
                return self.codes[item] + width * randn(n)

            def log_density(v: Tensor) -> Tensor:
                sq = torch.cdist(v.reshape(-1, L), self.codes).pow(2).reshape(*v.shape[:2], N)  # [S, B, N]
                return (log_pi[None] - sq / (2 * width**2)).logsumexp(-1) - 0.5 * L * math.log(2 * math.pi * width**2)

            return draw, log_density

        def gaussian(loc: Tensor, sd: Tensor) -> tuple[Callable[[int], Tensor], Callable[[Tensor], Tensor]]:
            normal = torch.distributions.Normal(loc, sd)
            return (lambda n: loc + sd * randn(n)), (lambda v: normal.log_prob(v).sum(-1))

        with torch.no_grad():
            uniform = cue.new_full((B, N), -math.log(N))
            components: list[tuple[float, tuple[Callable[[int], Tensor], Callable[[Tensor], Tensor]]]] = []
            main = {"mixture": ("encoder", "codes")}.get(proposal, (proposal,))
            share = 1.0 if proposal == "prior" else eps
            if share > 0:  # the prior: the stored-code kernels with uniform weights, width s
                components.append((share, kernels(uniform, self.bandwidth)))
            for name in () if proposal == "prior" else main:
                if name in ("encoder", "guide"):
                    loc, sd = self.encode(cue * m) if name == "encoder" else self.guide_encode(cue, mask)
                    component = gaussian(loc, sd * scale)
                elif name == "encoder_codes":
                    loc, sd = self.encode(cue * m)
                    var = sd.pow(2) + s2                                                   # [B, L]
                    diff = loc[:, None, :] - self.codes[None]                              # [B, N, L]
                    log_pi = (-0.5 * (diff.pow(2) / var[:, None] + var[:, None].log())).sum(-1).log_softmax(-1)
                    component = kernels(log_pi, scale * self.bandwidth)
                else:  # "codes": p(x_obs | z = m_i) at every stored code
                    centres = self.decode(self.codes)                                      # [N, D]
                    sq = (m @ centres.pow(2).T - 2 * (cue * m) @ centres.T
                          + (cue * m).pow(2).sum(-1, keepdim=True))                         # [B, N]
                    component = kernels((-0.5 * sq / n2).log_softmax(-1), scale * self.bandwidth)
                components.append(((1 - share) / len(main), component))
            counts = [round(w * s_total) for w, _ in components]
            counts[-1] = s_total - sum(counts[:-1])
            z = torch.cat([draw(n) for n, (_, (draw, _)) in zip(counts, components, strict=True)], 0)
            log_q = torch.stack([math.log(n / s_total) + log_density(z)
                                 for n, (_, (_, log_density)) in zip(counts, components, strict=True) if n > 0]
                                ).logsumexp(0)
            log_prior = self.prior().log_prob(z)  # [S, B]
            log_lik = torch.empty_like(log_prior)
            chunk = max(1, (1 << 21) // max(1, B * self.dim))  # samples per decoder call
            const = 0.5 * m.sum(-1) * math.log(2 * math.pi * n2)
            for a in range(0, s_total, chunk):
                err = (cue - self.decode(z[a : a + chunk])) * m
                log_lik[a : a + chunk] = -0.5 * err.pow(2).sum(-1) / n2 - const
        return log_prior + log_lik - log_q

    def compute_evidence(self, cue: Tensor, mask: Tensor | None, **options: Any) -> Evidence:
        """``log p(x_obs | M) = log ∫ p(x_obs | z) p(z | M) dz`` per cue by importance sampling
        (kind ``"estimate"``, with the delta-method standard error), observed entries only.

        Options (see :meth:`importance_log_weights`): ``num_samples`` (256), ``seed`` (0),
        ``proposal`` (``"mixture"``: half the amortized encoder ``q(z | x_obs)``, half the stored
        codes' kernels weighted by the likelihood at their centres; ``"encoder"``, ``"codes"``,
        ``"encoder_codes"``, ``"guide"``, ``"prior"``),
        ``scale`` (1: widen or narrow the Gaussian proposal) and ``defensive`` (0.1, the prior's
        share of the proposal).  The estimate is biased low by about ``var(w)/(2 S mean(w)²)``
        (Jensen); the stderr understates the error when the effective sample size is small.
        """
        log_w = self.importance_log_weights(cue, mask, **options)
        observed = cue.new_full(cue.shape[:1], cue.shape[1]) if mask is None else mask.expand_as(cue).sum(-1)
        return importance_sampling(log_w, observed.to(cue.dtype), method="importance_sampling", kind="estimate")

    # --- learning ----------------------------------------------------------------------------
    def fit_autoencoder(
        self,
        data: Any,
        *,
        num_steps: int = 2000,
        batch_size: int = 100,
        lr: float = 1e-3,
        seed: int | None = 0,
        progress: bool = False,
        **fit_options: Any,
    ) -> Any:
        """Train encoder and decoder as a β-VAE on ``data`` (``[N, D]``) with :func:`varmem.fit`.

        The loss is ``-E_q[log p(x | z)] + β KL(q(z | x) ‖ N(0, I))`` per item, summed over the
        data (minibatches of the ``"data"`` plate).  Refused while codes are stored (they would go
        stale): train first, then write.  Returns the :class:`varmem.FitResult`.
        """
        if len(self):
            raise ValueError(
                f"this memory holds {len(self)} codes computed by the current encoder; train the autoencoder "
                "before writing (forget the codes first to retrain)"
            )
        x = self.prepare_items(data, "data")
        # the retrieval guide and the GMM* precision live in the old code space: reset them
        self.guide_fitted.fill_(False)
        self.log_precision.zero_()

        return fit(_VAEModel(self), _VAEGuide(self.encoder, self.beta), x, num_steps=num_steps,
                   batch_size=min(batch_size, len(x)), kwargs={"num_data": len(x)}, lr=lr, seed=seed,
                   progress=progress, **fit_options)

    def fit_retrieval_guide(self, items: Any = None, **options: Any) -> Any:
        """Train the amortized retrieval guide ``q_φ(z | x̃)`` on corrupted cues against this memory's
        model (see :func:`varmem.memories.latent.amortized.fit_retrieval_guide` for the options)."""
        return fit_retrieval_guide(self, items, **options)

    def fit_precision(self, items: Any = None, **options: Any) -> Any:
        """Train the GMM* diagonal precision for one corruption (see
        :func:`varmem.memories.latent.learned_precision.fit_precision` for the options)."""
        return fit_precision(self, items, **options)


def _guide_input(cue: Tensor, mask: Tensor | None) -> Tensor:
    """``[x̃ ⊙ m, m]`` (``[B, 2D]``): what the retrieval guide sees."""
    m = torch.ones_like(cue) if mask is None else mask.expand_as(cue).to(cue.dtype)
    return torch.cat([cue * m, m], -1)
