"""Kernelized Hopfield model (KHM) with U-Hop+ feature learning (Hu, Wu & Liu, NeurIPS 2024;
Wu et al., ICML 2024).

Stored patterns ``Ξ = (ξ_1 … ξ_N)`` (``[N, D]`` rows), a feature map ``Φ: R^D → R^F`` and the kernel
``𝒦(x, y) = ⟨Φ(x), Φ(y)⟩``.  With a separation map ``α ∈ {softmax, 1.5-entmax, sparsemax}``
(:mod:`varmem.baselines.sparse_attention`, ``α = ∇Ψ*``), inverse temperature ``β`` and
``K(x) = Φ(Ξ) Φ(x) ∈ R^N``::

    E(x)    = ½ ‖Φ(x)‖² - β⁻¹ Ψ*(β K(x))                        (no additive constants)
    ∇E(x)   = J_Φ(x)ᵀ (Φ(x) - Φ(Ξ)ᵀ p),   p = α(β K(x))
    x ← Ξᵀ α(β Φ(Ξ) Φ(x))                                       (kernelised retrieval; output in data space)

For softmax ``Ψ* = logsumexp``, so ``Φ = identity`` gives Ramsauer's modern Hopfield energy minus
its constants ``β⁻¹ log N + ½ M²`` (and the same update).  For an affine ``Φ(x) = W x + b`` with
``WᵀW`` invertible (``F ≥ D``, full rank), ``½‖Φ(x)‖²`` is convex and ``Φ(Ξ)ᵀ p = W Ξᵀ p + b``
(``Σ p = 1``), so ``∇E(x) = WᵀW (x - x_new)``: the update is the CCCP step of ``E`` and never
increases it.  For the ``"mlp"`` map the same update is used (as in U-Hop+) but it is not CCCP,
so no monotone decrease is promised.

**Temperature.**  The logits are ``β ⟨Φ(ξ_μ), Φ(x)⟩``; a learned ``Φ`` changes their scale, so
``β`` alone is not comparable with a plain modern Hopfield network.  :meth:`effective_beta`
reports ``β_eff = β · mean_μ‖Φ(ξ_μ)‖² / mean_μ‖ξ_μ‖²`` (the inverse temperature of the
self-similarity logits in units of the raw patterns' scale); :meth:`matched_modern_hopfield`
builds the plain model (``Φ = identity``) at ``β_eff``, and :meth:`rescale_features` normalises
``Φ`` so that ``β_eff = β``.  Stage I of U-Hop+ with Adam at ``lr = 1`` inflates ``‖Φ‖`` by an order
of magnitude (the reference's pitfall), so compare at matched ``β_eff``.

**U-Hop+ stage I** (:meth:`fit`) minimises the separation loss of the normalised stored features
``Φ̂_μ = Φ(ξ_μ) / ‖Φ(ξ_μ)‖`` (:func:`separation_loss`)::

    L(Φ) = (1/N) log( (2 / (N(N-1))) Σ_{μ<ν} exp(⟨Φ̂_μ, Φ̂_ν⟩ / τ) ),

a smooth surrogate of ``-Δ_min^Φ = -min_{μ≠ν}(1 - ⟨Φ̂_μ, Φ̂_ν⟩)``: memories become a good spherical
code in feature space.  Stage II is retrieval with the learned ``Φ``.  :func:`separation_bounds`
gives Prop. 3.1's bounds on the optimal ``Δ_min`` of ``N`` points on ``S^{F-1}``.

Softmax retrieval streams over the patterns in chunks (:func:`varmem.kernels.kernel_stats` on
augmented items, see :meth:`KernelizedHopfield._stats`); sparse maps need the whole ``[B, N]``
logit row (a sort), so they materialise ``[chunk of cues, N]`` blocks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..capabilities import Step
from ..domains import SIGNED
from ..helpers import boltzmann_model, clamp, start_state, want_weights
from ..inference import retrieve_fixed_point
from ..kernels import default_chunk_size, kernel_stats
from ..memory import Memory
from ..validation import check_bool, check_choice, check_int, check_positive, check_positive_int, check_seed
from .sparse_attention import canonical_separation, separation_conjugate

__all__ = ["KernelizedHopfield", "separation_loss", "separation_bounds", "min_separation"]

FEATURE_MAPS = ("linear", "mlp", "identity")


def separation_loss(features: Tensor, tau: float = 0.1) -> Tensor:
    """U-Hop+'s average separation loss of ``features [N, F]`` (module docstring); needs ``N ≥ 2``."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"the separation loss needs at least 2 memories, got {n}")
    unit = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    iu = torch.triu_indices(n, n, offset=1, device=features.device)
    pairs = cos[iu[0], iu[1]] / tau
    return (torch.logsumexp(pairs, 0) + math.log(2.0 / (n * (n - 1)))) / n


def min_separation(features: Tensor) -> float:
    """``Δ_min = min_{μ≠ν} (1 - cos∠(f_μ, f_ν))`` of the rows of ``features [N, F]`` (``N ≥ 2``)."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"a minimum separation needs at least 2 points, got {n}")
    unit = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    cos.fill_diagonal_(-math.inf)
    return float(1 - cos.max())


def separation_bounds(num_points: int, dim: int) -> tuple[float, float]:
    """Prop. 3.1 of Hu et al. (2024): ``(lower, upper)`` bounds on the optimal minimal separation
    ``max_{codes} min_{μ≠ν}(1 - cos θ_μν)`` of ``M = num_points`` points on ``S^{d-1}``, ``d = dim ≥ 2``::

        upper = 2 ((2√π / M) Γ((d+1)/2) / Γ(d/2))^{1/(d-1)}
        lower = ½ ((√π / M) Γ((d+1)/2) / Γ(d/2 + 1))^{2/(d-1)}

    (``upper`` holds for every code; ``lower`` says a code at least that good exists.)
    """
    check_int(num_points, "num_points", minimum=2)
    check_int(dim, "dim", minimum=2)
    d, m = dim, num_points
    log_ratio_up = math.lgamma((d + 1) / 2) - math.lgamma(d / 2)
    log_ratio_lo = math.lgamma((d + 1) / 2) - math.lgamma(d / 2 + 1)
    upper = 2 * math.exp((math.log(2 * math.sqrt(math.pi) / m) + log_ratio_up) / (d - 1))
    lower = 0.5 * math.exp(2 * (math.log(math.sqrt(math.pi) / m) + log_ratio_lo) / (d - 1))
    return lower, upper


def _make_feature_map(
    kind: str, dim: int, feature_dim: int, hidden_dim: int, seed: int, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """``Φ``: identity, ``Linear(D, F)`` (Kaiming-normal weight, bias) or ``Linear → tanh → Linear``."""
    if kind == "identity":
        return nn.Identity()
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def linear(n_in: int, n_out: int) -> nn.Linear:
        layer = nn.Linear(n_in, n_out, device=device, dtype=dtype)
        with torch.no_grad():
            w = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / n_in)
            b = (torch.rand(n_out, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(n_in)
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        return layer

    if kind == "linear":
        return linear(dim, feature_dim)
    return nn.Sequential(linear(dim, hidden_dim), nn.Tanh(), linear(hidden_dim, feature_dim))


class KernelizedHopfield(Memory):
    """A kernelised Hopfield memory with a learnable feature map (see the module docstring).

    Args:
        dim: ``D``, the pattern dimension.
        beta: inverse temperature ``β > 0`` of the kernel logits (see :meth:`effective_beta`).
        feature_dim: ``F`` (default ``D``; must be ``D`` for ``"identity"``).
        feature_map: ``"linear"`` (affine ``W x + b``, the map Hu et al. analyse), ``"mlp"``
            (``Linear → tanh → Linear``) or ``"identity"`` (a plain modern Hopfield network).
        separation: ``"softmax"``, ``"entmax15"`` (``"1.5-entmax"``) or ``"sparsemax"``.
        hidden_dim: width of the ``"mlp"`` hidden layer (default ``max(D, F)``).
        seed: seed of ``Φ``'s initialisation.
        chunk_size: patterns per chunk for softmax, cues per block for sparse maps.
        device, dtype: where patterns and ``Φ`` live.

    Example:
        >>> X = torch.nn.functional.normalize(torch.randn(10, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
        >>> khm = KernelizedHopfield(5, beta=1.0, separation="sparsemax").write(X)
        >>> losses = khm.fit(steps=20, lr=1.0)
        >>> out = khm.retrieve(X, max_steps=20)
        >>> bool((out.weights > 0).sum(-1).eq(1).all())   # every memory is a singleton fixed point
        True
    """

    methods = (retrieve_fixed_point,)
    default_method = "fixed_point"
    value_domain = SIGNED

    def __init__(
        self,
        dim: int,
        beta: float = 1.0,
        feature_dim: int | None = None,
        feature_map: str = "linear",
        separation: str = "softmax",
        *,
        hidden_dim: int | None = None,
        seed: int = 0,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.beta = check_positive(beta, "beta")
        check_choice(feature_map, "feature_map", FEATURE_MAPS)
        feature_dim = dim if feature_dim is None else feature_dim
        feature_dim = check_positive_int(feature_dim, "feature_dim")
        if feature_map == "identity" and feature_dim != dim:
            raise ValueError(f"feature_map='identity' needs feature_dim == dim ({dim}), got {feature_dim}")
        hidden_dim = max(dim, feature_dim) if hidden_dim is None else hidden_dim
        hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        seed = check_seed(seed)
        chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.separation = canonical_separation(separation)
        self.feature_map_kind = feature_map
        self.feature_dim = feature_dim
        self.hidden_dim = hidden_dim
        self.seed = seed
        self.chunk_size = chunk_size
        self.feature = _make_feature_map(feature_map, dim, feature_dim, hidden_dim, seed, self.device, self.dtype)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self._cache: tuple[tuple, Tensor] | None = None

    # --- state ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "beta": self.beta,
            "feature_dim": self.feature_dim,
            "feature_map": self.feature_map_kind,
            "separation": self.separation,
            "hidden_dim": self.hidden_dim,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        self.check_stored_items()
        self.check_parameters()

    def write(self, items: Any) -> "KernelizedHopfield":
        """Append patterns ``[N, D]`` (or one ``[D]``).  ``Φ`` is not retrained: call :meth:`fit`."""
        self.append_rows("items", self.prepare_items(items))
        return self

    # --- features ------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """``Φ(x)`` for ``x [..., D]`` → ``[..., F]`` (differentiable in ``x`` and ``Φ``)."""
        return self.feature(x)

    def _keys(self) -> Tensor:
        """``[N, F]`` stored features ``Φ(ξ_μ)``, cached until the patterns or ``Φ`` change."""
        params = tuple((p.data_ptr(), p._version) for p in self.feature.parameters())
        key = (self.items.data_ptr(), self.items._version, self.items.shape, params)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.features(self.items))
        return self._cache[1]

    def _stats(self, q: Tensor, weights: bool = False, index: bool = True, lse: bool = True):
        """Softmax path: :func:`kernel_stats` of the logits ``β ⟨Φ(ξ_μ), q⟩`` for features ``q [B, F]``
        (dot-product kernel on the stored features as keys, the patterns as values): ``lse``, the
        read ``Ξᵀ softmax`` as ``mean``, the arg-max and the weights."""
        chunk = self.chunk_size or default_chunk_size(q.shape[0], q.device)
        return kernel_stats(q, self._keys(), self.beta, values=self.items, weights=weights, return_index=index,
                            return_lse=lse, kernel="dot", chunk_size=chunk, workspace=self.workspace)

    def _sparse(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Sparse path: ``(Ψ*(β K) [B], p [B, N])`` for features ``q [B, F]`` (blocks of cues)."""
        keys = self._keys()
        block = self.chunk_size or max(1, 2**22 // max(1, len(self)))
        values, probs = [], []
        for start in range(0, q.shape[0], block):
            v, p = separation_conjugate(self.beta * q[start : start + block] @ keys.T, self.separation)
            values.append(v)
            probs.append(p)
        return torch.cat(values), torch.cat(probs)

    # --- energy and the fast update --------------------------------------------------------------
    @property
    def energy_scale(self) -> float:
        """``β``: the model's log-density is ``-β E(z)``."""
        return self.beta

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(z) = ½‖Φ(z)‖² - β⁻¹ Ψ*(β Φ(Ξ) Φ(z))`` for ``z [..., D]`` → ``[...]`` (no constants), at the
        state with the observed entries of a partial cue clamped (a full cue is only the initial state).

        Differentiable in ``z``; the stored features are treated as constants.
        """
        z = clamp(z, cue, mask)
        shape = z.shape[:-1]
        q = self.features(z.reshape(-1, self.dim))
        if self.separation == "softmax" and not (torch.is_grad_enabled() and q.requires_grad):
            psi = self._stats(q, index=False).lse
        else:
            psi = separation_conjugate(self.beta * q @ self._keys().T, self.separation)[0]
        return (0.5 * (q * q).sum(-1) - psi / self.beta).reshape(shape)

    def step(self, z: Tensor, weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """One update at states ``z [B, D]``: ``(Ξᵀ α(β K(z)) [B, D], E(z) [B], p [B, N] or None, argmax [B])``
        (``p`` materialised for sparse maps always, for softmax when ``weights``)."""
        q = self.features(z)
        if self.separation == "softmax":
            s = self._stats(q, weights=weights)
            return s.mean, 0.5 * (q * q).sum(-1) - s.lse / self.beta, s.weights, s.index
        psi, p = self._sparse(q)
        return p @ self.items, 0.5 * (q * q).sum(-1) - psi / self.beta, p, p.argmax(-1)

    def association_matrix(self, cue: Any, mask: Any = None, **options: Any) -> Tensor:
        """``[B, N]`` the probabilities ``α(β Φ(Ξ) Φ(ξ))`` of the last update of a read of ``cue``
        (hopfield-layers' ``get_association_matrix``; one update: at the cue).  ``options`` are the
        read's (e.g. ``max_steps``)."""
        return self.retrieve(cue, mask, trace=False, return_weights=True, **options).weights

    # --- hooks of the "fixed_point" engine ---------------------------------------------------------
    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """``"cue"`` (free entries start at the mean pattern), ``"prior_mean"`` or a ``[B, D]`` tensor."""
        def mean_pattern() -> Tensor:
            return self.items.mean(0).expand_as(cue).clone()

        # with a mask, "cue" starts the free entries at the mean pattern too
        starts = {"cue": cue.clone if mask is None else mean_pattern, "prior_mean": mean_pattern}
        return clamp(start_state(init, cue, starts, self), cue, mask)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """``x_new = Ξᵀ α(β K(x))`` with ``E(x)`` and ``α``'s weights; observed entries (``mask``) are
        clamped to the cue (for a partial cue the monotone-energy guarantee holds only when ``WᵀW`` is
        a multiple of the identity)."""
        z_new, e, p, top = self.step(z, weights=weights)
        return Step(state=clamp(z_new, cue, mask), energy=e if energy else None, weights=p if weights else None,
                    index=top if index else None)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(α [B, N] or None, argmax [B])`` at states ``z`` (0 where a sparse map is 0)."""
        q = self.features(z)
        dense = want_weights(return_weights, z.shape[0], len(self))
        if self.separation == "softmax":
            s = self._stats(q, weights=dense, lse=False)
            return s.weights, s.index
        _, p = self._sparse(q)
        return (p if dense else None), p.argmax(-1)

    # --- U-Hop+ stage I -------------------------------------------------------------------------------
    def fit(
        self,
        steps: int = 20,
        lr: float = 1.0,
        tau: float = 0.1,
        *,
        batch_size: int | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Tensor:
        """Learn ``Φ`` by minimising :func:`separation_loss` of the stored patterns with Adam.

        Args:
            steps: optimiser steps (defaults follow U-Hop+'s synthetic script: 20 steps, lr 1).
            lr: Adam learning rate.
            tau: temperature ``τ`` of the loss (0.1 as in the paper's code).
            batch_size: memories per step, drawn without replacement by epochs from a generator
                seeded with ``seed`` (``None`` = all memories every step).
            progress: show a tqdm bar.

        Returns the ``[steps]`` loss history.  If the loss becomes non-finite, ``Φ`` is restored
        and ``FloatingPointError`` is raised.
        """
        if self.feature_map_kind == "identity":
            raise ValueError("feature_map='identity' has nothing to learn")
        check_positive_int(steps, "steps")
        lr, tau = check_positive(lr, "lr"), check_positive(tau, "tau")
        n = len(self)
        if n < 2:
            raise ValueError(f"fit needs at least 2 stored patterns, got {n}")
        batch_size = check_int(batch_size, "batch_size", minimum=2, allow_none=True)
        seed = check_seed(seed)
        check_bool(progress, "progress")
        saved = {k: v.detach().clone() for k, v in self.feature.state_dict().items()}
        gen = torch.Generator(device="cpu").manual_seed(seed)
        order, cursor = torch.randperm(n, generator=gen), 0
        opt = torch.optim.Adam(self.feature.parameters(), lr=lr)
        losses = []
        for _ in tqdm(range(steps), desc="U-Hop+ stage I", disable=not progress, leave=False):
            if batch_size is None or batch_size >= n:
                batch = self.items
            else:
                if cursor + batch_size > n:
                    order, cursor = torch.randperm(n, generator=gen), 0
                batch = self.items[order[cursor : cursor + batch_size].to(self.device)]
                cursor += batch_size
            opt.zero_grad()
            loss = separation_loss(self.features(batch), tau)
            if not torch.isfinite(loss):
                self.feature.load_state_dict(saved)
                raise FloatingPointError("the separation loss became non-finite; feature map restored")
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    # --- temperature --------------------------------------------------------------------------------
    def min_separation(self) -> float:
        """``Δ_min^Φ`` of the stored features (module docstring)."""
        self._check_not_empty()
        return min_separation(self._keys())

    def feature_scale(self) -> float:
        """``s = sqrt(mean_μ ‖Φ(ξ_μ)‖² / mean_μ ‖ξ_μ‖²)``: how much ``Φ`` scales the logits."""
        self._check_not_empty()
        keys = self._keys()
        return math.sqrt(float((keys * keys).sum(-1).mean() / (self.items * self.items).sum(-1).mean()))

    def effective_beta(self) -> float:
        """``β_eff = β s²`` (:meth:`feature_scale`): the matched plain-Hopfield inverse temperature."""
        return self.beta * self.feature_scale() ** 2

    def matched_modern_hopfield(self) -> "KernelizedHopfield":
        """The plain modern Hopfield network (``Φ = identity``, same separation map and patterns) at
        ``β = β_eff``, the control that separates U-Hop+'s gain from its temperature change."""
        plain = KernelizedHopfield(
            self.dim, beta=self.effective_beta(), feature_map="identity", separation=self.separation,
            chunk_size=self.chunk_size, device=self.device, dtype=self.dtype,
        )
        return plain.write(self.items)

    def rescale_features(self) -> "KernelizedHopfield":
        """Divide ``Φ``'s output layer (weight and bias) by :meth:`feature_scale`, so ``β_eff = β``."""
        if self.feature_map_kind == "identity":
            return self
        s = self.feature_scale()
        last = self.feature if isinstance(self.feature, nn.Linear) else self.feature[-1]
        with torch.no_grad():
            last.weight.div_(s)
            last.bias.div_(s)
        return self

    # --- the Boltzmann reading ------------------------------------------------------------------------
    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """The unnormalised Boltzmann density ``p(z | M) ∝ exp(-β E(z))``: an improper flat site ``"z"``
        plus ``pyro.factor("energy", -β E(z))`` (plate ``"cues"``), observed entries of a partial cue
        clamped (:func:`varmem.helpers.boltzmann_model`)."""
        self._check_not_empty()
        return boltzmann_model(self.latent_site, self.dim, lambda z: -self.beta * self.compute_energy(z),
                               cue, mask, num_cues)
