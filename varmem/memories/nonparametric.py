"""Nonparametric memory: a Dirichlet-process (Chinese-restaurant-process) mixture whose memories
are created when the data call for them.

Generative model of the items written (``D`` dims; concentration ``α``, kernel width ``s``, prior
over centres ``N(μ₀, s₀² I)``)::

    t_i | t_<i ~ CRP(α):  P(t_i = k) = n_k / (i - 1 + α),   P(t_i = new) = α / (i - 1 + α)
    μ_k       ~ N(μ₀, s₀² I)                     (one centre per memory)
    ξ_i | t_i ~ N(μ_{t_i}, s² I)                 (an item scatters around its memory's centre)

A memory ``k`` is summarised by its sufficient statistics, the count ``n_k`` and the sum
``S_k = Σ_{i∈k} ξ_i``.  Its centre has the conjugate Gaussian posterior::

    μ_k | items ~ N(m_k, τ_k² I),   τ_k² = (1/s₀² + n_k/s²)⁻¹,   m_k = τ_k² (μ₀/s₀² + S_k/s²),

and the predictive density of one more item in it is ``N(m_k, v_k I)``, ``v_k = s² + τ_k²``; a
fresh memory predicts ``N(μ₀, v₀ I)``, ``v₀ = s² + s₀²``.

**Writing** (``assignment``; items are processed in row order, exactly as if written one by one):
the posterior over the table of the next item ``ξ`` is::

    p(t = k | ξ, M)   ∝ n_k N(ξ; m_k, v_k I),      p(t = new | ξ, M) ∝ α N(ξ; μ₀, v₀ I).

* ``"crp_map"``: the item joins the most probable table (MAP assignment, DP-means-like): a new
  memory is created iff ``α N(ξ; μ₀, v₀ I) > max_k n_k N(ξ; m_k, v_k I)``, else the winner's
  ``n_k += 1, S_k += ξ`` (its centre moves to the new conjugate posterior mean).
* ``"proportional"``: the ELBO / proportional-assignment variant (Schaeffer et al. 2024, CLAM+CRP+ELBO;
  Lin 2013's sequential variational approximation): the same rule decides whether a memory is
  created; then the item is split over the tables with responsibilities ``r_k = p(t = k | ξ, M)``
  (over the ``K + 1`` tables if one was created, renormalised over the ``K`` existing ones if not):
  ``n_k += r_k, S_k += r_k ξ`` for every ``k``.  Counts become fractional; ``Σ_k n_k`` is still the
  number of items written.
* ``"crp_sample"``: the table is drawn from ``p(t | ξ, M)`` (the one-particle sequential sampler of
  the DP mixture).  On data that carry no information about the partition the number of memories
  then follows the CRP prior, ``E[K_n] = Σ_{i<n} α/(α + i) ≈ α log(1 + n/α)``.

Duplicates (``"crp_map"``): writing an item ``ξ`` again right after it was written never opens a
memory when ``α ≤ 1``.  Adding ``ξ`` to its memory ``k`` moves ``m_k`` towards ``ξ`` by the factor
``τ_k'²/τ_k² < 1`` and shrinks ``v_k``, so ``n_k N(ξ; m_k, v_k I)`` grows while every other table's
score, the new one included, stays put; and a memory opened by ``ξ`` alone predicts ``ξ`` better than
a fresh one, ``N(ξ; m_k, v_k I) > N(ξ; μ₀, v₀ I)``, which beats ``α N(ξ; μ₀, v₀ I)`` if ``α ≤ 1``
(for ``α > 1`` it needs that likelihood ratio to exceed ``α``; it is at least ``(v₀/v_k)^{D/2}``).  A
duplicate written after many other items is judged against the memories as they are then, so an item
that has become an outlier of its memory can open a new one.

The loop over items is sequential (each decision depends on all earlier ones); everything inside
one step is vectorised over the memories, and the item-independent terms (the new-table
likelihoods) are computed for the whole batch at once.  ``len(memory)`` is the number of memories
``K``; :attr:`num_items` the number of items written; :attr:`counts` the ``n_k``.

**Reading**: the clean item ``z`` is a draw from the CRP predictive of the next item, and the cue
``x`` a noisy (``σ``), possibly partial, view of it::

    z ~ p(z | M) = Σ_k n_k/(n+α) N(z; m_k, v_k I) + α/(n+α) N(z; μ₀, v₀ I)
    x_d ~ N(z_d, σ²)   for every observed dimension d

The ``J = K + 1`` components are the ``K`` memories and, last, the "new memory" component, so
``weights[:, -1]`` is the posterior probability that the cue comes from no stored memory.

Energy (all constants kept): ``E(z) = -log p(z | M)``, ``E(z; x) = E(z) - log p(x | z)``, equal to
minus the log-density of the Pyro trace of :meth:`NonparametricMemory.model`.

Closed-form posterior (component ``j`` with weight ``π_j``, centre ``c_j``, variance ``v_j``;
``c = v_j + σ²``)::

    p(j | x)   ∝ π_j Π_{d obs} N(x_d; c_jd, v_j + σ²)
    z | j, x   ~ N(a_j c_j + b_j x, σ² b_j)  on observed dims (a_j = σ²/c, b_j = v_j/c),
                 N(c_j, v_j)                 on unobserved dims.

With all ``n_k`` equal and ``α → 0`` this is the kernel-density memory with bandwidth
``sqrt(s² + τ²)`` over the centres ``m_k`` (:class:`~varmem.KernelDensityMemory`).  The math is
that memory's with per-component weights and variances; :func:`varmem.kernels.kernel_stats` assumes
equal weights and one precision shared by all items, so the ``[B, K + 1]`` logits are formed here
by :func:`mixture_logits` (two matrix products, dense in the number of memories ``K``, which is
typically far below the number of items written).

References: Aldous (1985) / Pitman (2006) for the CRP and Ewens' formula; Schaeffer et al.,
"Bridging Associative Memory and Probabilistic Modeling", arXiv 2402.10202 (CLAM+CRP+ELBO, as
summarised in varmem's reference notes: responsibilities ``r_k ∝ π_k N(ξ; ξ_k, s² I)``, a new memory
when a fresh component explains the item better; the paper's own protocol was not available);
Lin, "Online learning of nonparametric mixture models via sequential variational approximation",
NeurIPS 2013.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Size, Tensor

from ..capabilities import Step
from ..helpers import masked_normal, posterior_start, want_weights
from ..inference import retrieve_exact, retrieve_fixed_point, retrieve_map, retrieve_nuts
from ..memory import GaussianMixtureMemory
from ..validation import (
    check_choice,
    check_finite,
    check_generator,
    check_int,
    check_positive,
    check_representable,
)

__all__ = ["NonparametricMemory", "NonparametricPosterior", "CRPPredictive", "expected_num_memories"]

ASSIGNMENTS = ("crp_map", "proportional", "crp_sample")


def expected_num_memories(num_items: int, alpha: float) -> float:
    """``E[K_n] = Σ_{i=0}^{n-1} α/(α + i)``: expected number of tables of a CRP(α) after ``n`` customers
    (``≈ α log(1 + n/α)`` for large ``n``)."""
    alpha = check_positive(alpha, "alpha")
    check_int(num_items, "num_items", minimum=0)
    i = torch.arange(num_items, dtype=torch.float64)
    return float((alpha / (alpha + i)).sum())


def mixture_logits(
    z: Tensor, centres: Tensor, variances: Tensor, log_weights: Tensor, mask: Tensor | None = None
) -> Tensor:
    """``ℓ_j = log w_j + log Π_{d obs} N(z_d; c_jd, v_j)`` for ``z [..., D]`` → ``[..., J]``.

    ``centres [J, D]``, ``variances [J]`` (isotropic per component), ``log_weights [J]``, ``mask``
    (bool ``[D]`` or ``[..., D]``, ``True`` = observed) restricts the product to observed dims.
    The squared distance is expanded as ``m·z² - 2 (m⊙z)·c + m·c²`` (two matrix products, no
    ``[..., J, D]`` tensor).
    """
    if mask is None:
        sq = (z * z).sum(-1, keepdim=True) - 2 * z @ centres.T + (centres * centres).sum(-1)
        n_obs = z.new_full((), z.shape[-1])
    else:
        m = mask.to(z.dtype)
        sq = (m * z * z).sum(-1, keepdim=True) - 2 * (m * z) @ centres.T + m @ (centres * centres).T
        n_obs = m.sum(-1, keepdim=True)
    sq = sq.clamp_min(0)
    return log_weights - 0.5 * sq / variances - 0.5 * n_obs * torch.log(2 * math.pi * variances)


class CRPPredictive(dist.TorchDistribution):
    """The memory prior ``p(z | M) = Σ_j w_j N(z; c_j, v_j I)``, event shape ``[D]``.

    ``log_prob`` is a log-sum-exp over the ``J`` components (differentiable in ``z``; its gradient is
    ``Σ_j r_j (c_j - z)/v_j`` with ``r = softmax_j ℓ_j``).

    Args:
        log_weights: ``[J]`` normalised log mixture weights.
        centres: ``[J, D]``.
        variances: ``[J]`` isotropic component variances.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self, log_weights: Tensor, centres: Tensor, variances: Tensor, *, validate_args: bool | None = None
    ) -> None:
        self.log_weights, self.centres, self.variances = log_weights, centres, variances
        super().__init__(batch_shape=Size(), event_shape=centres.shape[-1:], validate_args=validate_args)

    @property
    def mixture_distribution(self) -> dist.Categorical:
        """The component weights ``w_j`` as a ``Categorical``."""
        return dist.Categorical(logits=self.log_weights)

    @property
    def component_distribution(self) -> dist.TorchDistribution:
        """The components ``N(c_j, v_j I)``: batch shape ``[J]``, event shape ``[D]``."""
        scale = self.variances.sqrt().unsqueeze(-1).expand_as(self.centres)
        return dist.Normal(self.centres, scale).to_event(1)

    @property
    def mean(self) -> Tensor:
        return self.log_weights.exp() @ self.centres

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return mixture_logits(value, self.centres, self.variances, self.log_weights).logsumexp(-1)

    def sample(self, sample_shape: Size = Size()) -> Tensor:  # noqa: B008 (torch's signature)
        shape = self._extended_shape(sample_shape)[:-1]
        with torch.no_grad():
            index = torch.multinomial(self.log_weights.exp(), max(1, shape.numel()), replacement=True)
            index = index[: shape.numel()].reshape(shape)
            centre = self.centres[index]
            return centre + self.variances[index].sqrt().unsqueeze(-1) * torch.randn_like(centre)


class NonparametricPosterior:
    """The exact posterior ``p(z | x, M)`` of a :class:`NonparametricMemory`: a Gaussian mixture
    over the ``J = K + 1`` components (the memories, then "new").

    Attributes (``B`` cues, ``D`` dims):
        log_weights / weights: ``[B, J]`` ``p(j | x)``; ``weights`` is ``None`` if not requested.
        novelty: ``[B]`` ``p(j = new | x)``, the probability that the cue comes from no stored memory.
        index: ``[B]`` the most probable component (``K`` means "new").
        mean, variance: ``[B, D]`` posterior mean and variance (law of total variance).
        log_evidence: ``[B]`` ``log p(x_obs | M)``.
    """

    def __init__(
        self, memory: "NonparametricMemory", cue: Tensor, mask: Tensor | None, *, return_weights: bool | None = None
    ) -> None:
        log_w, centres, var = memory.components()
        n2 = memory.noise_scale**2
        logits = mixture_logits(cue, centres, var + n2, log_w, mask)  # [B, J]
        self.memory, self.cue, self.mask = memory, cue, mask
        self.log_evidence = logits.logsumexp(-1)
        self.log_weights = logits - self.log_evidence.unsqueeze(-1)
        w = self.log_weights.exp()
        self.weights = w if want_weights(return_weights, cue.shape[0], len(memory) + 1) else None
        self.novelty = w[:, -1]
        self.index = self.log_weights.argmax(-1)
        self.observed = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand_as(cue)
        self.a, self.b = n2 / (var + n2), var / (var + n2)  # [J]
        self.var = var
        # mixture moments by matrix products over the components (no [B, J, D] tensor)
        c, c2 = centres, centres * centres
        mean_obs = (w * self.a) @ c + (w @ self.b).unsqueeze(-1) * cue
        second_obs = (
            (w * self.a**2) @ c2
            + 2 * cue * ((w * self.a * self.b) @ c)
            + cue * cue * (w @ self.b**2).unsqueeze(-1)
            + n2 * (w @ self.b).unsqueeze(-1)
        )
        mean_un = w @ c
        second_un = w @ c2 + (w @ var).unsqueeze(-1)
        self.mean = torch.where(self.observed, mean_obs, mean_un)
        second = torch.where(self.observed, second_obs, second_un)
        self.variance = (second - self.mean**2).clamp_min(0)
        self._centres = centres

    def component_mean(self, index: Tensor) -> Tensor:
        """``[..., B, D]`` mean of component ``index`` (``[..., B]``) for each cue."""
        a, b = self.a[index].unsqueeze(-1), self.b[index].unsqueeze(-1)
        centre = self._centres[index]
        return torch.where(self.observed, a * centre + b * self.cue, centre)

    def component_scale(self, index: Tensor) -> Tensor:
        """``[..., B, D]`` standard deviation of component ``index`` for each cue."""
        v, b = self.var[index].unsqueeze(-1), self.b[index].unsqueeze(-1)
        n2 = self.memory.noise_scale**2
        return torch.where(self.observed, (n2 * b).sqrt(), v.sqrt())

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z | x, M)`` for ``z [..., B, D]`` → ``[..., B]`` (Bayes' rule, normalised)."""
        return -self.memory.energy(z, self.cue, self.mask) - self.log_evidence

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[S, B, D]`` exact posterior samples (component by Gumbel-max, then the Gaussian)."""
        cue = self.cue
        u = torch.rand((num_samples, *self.log_weights.shape), generator=generator, dtype=cue.dtype, device=cue.device)
        index = (self.log_weights - torch.log(-torch.log(u.clamp_min(torch.finfo(cue.dtype).tiny)))).argmax(-1)
        eps = torch.randn((num_samples, *cue.shape), generator=generator, dtype=cue.dtype, device=cue.device)
        return self.component_mean(index) + self.component_scale(index) * eps


class NonparametricMemory(GaussianMixtureMemory):
    """An associative memory that creates a new memory when no stored one explains an item.

    See the module docstring for the model, the three write rules, the energy and the posterior.

    Args:
        dim: ``D``, the dimension of an item.
        alpha: CRP concentration ``α > 0`` (larger: new memories are created more readily; the
            threshold of the MAP rule moves by ``log α``).
        bandwidth: kernel width ``s``: the spread of the items of one memory around its centre.
        noise_scale: standard deviation ``σ`` of the cue likelihood (reading only).
        prior_scale: ``s₀``, the spread of memory centres around ``prior_mean`` (default 1).
        prior_mean: ``μ₀`` (a number, the same in every dimension; default 0).
        assignment: ``"crp_map"`` (default), ``"proportional"`` or ``"crp_sample"``.
        device, dtype: where and how the state is stored.

    State (buffers, saved by :func:`varmem.save`): ``counts [K]``, ``sums [K, D]`` and
    ``assignments [n]`` (the table each written item was assigned to: for ``"proportional"`` its
    most probable one).

    Example:
        >>> memory = NonparametricMemory(dim=2, alpha=1.0, bandwidth=0.1, noise_scale=0.3, prior_scale=3.0)
        >>> memory = memory.write(torch.tensor([[0.0, 0.0], [0.05, 0.0], [2.0, 2.0], [2.0, 1.95]]))
        >>> len(memory), memory.num_items, memory.counts.tolist()
        (2, 4, [2.0, 2.0])
    """

    methods = (retrieve_exact, retrieve_fixed_point, retrieve_map, retrieve_nuts)
    default_method = "exact"

    def __init__(
        self,
        dim: int,
        alpha: float,
        bandwidth: float,
        noise_scale: float,
        *,
        prior_scale: float = 1.0,
        prior_mean: float = 0.0,
        assignment: str = "crp_map",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.alpha = check_positive(alpha, "alpha")
        self.bandwidth = check_positive(bandwidth, "bandwidth")
        self.noise_scale = check_positive(noise_scale, "noise_scale")
        self.prior_scale = check_positive(prior_scale, "prior_scale")
        self.prior_mean = check_finite(prior_mean, "prior_mean")
        self.assignment = check_choice(assignment, "assignment", ASSIGNMENTS)
        for value, what in ((self.bandwidth**2, "bandwidth²"), (self.noise_scale**2, "noise_scale²"),
                            (self.new_variance, "bandwidth² + prior_scale²")):
            check_representable(value, what, self.dtype)  # the variances are formed in the memory's dtype
        self.register_buffer("counts", torch.empty(0, device=self.device, dtype=self.dtype))
        self.register_buffer("sums", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self.register_buffer("assignments", torch.empty(0, device=self.device, dtype=torch.long))

    # --- size and state ---------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of memories ``K`` (not the number of items written: see :attr:`num_items`)."""
        return self.counts.shape[0]

    @property
    def num_items(self) -> int:
        """Number of items written, ``n``."""
        return self.assignments.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "alpha": self.alpha,
            "bandwidth": self.bandwidth,
            "noise_scale": self.noise_scale,
            "prior_scale": self.prior_scale,
            "prior_mean": self.prior_mean,
            "assignment": self.assignment,
        }

    def check_state(self) -> None:
        k, n = len(self), self.num_items
        if self.counts.dim() != 1 or self.sums.shape != (k, self.dim) or self.assignments.dim() != 1:
            raise ValueError(
                f"counts [K], sums [K, {self.dim}], assignments [n] expected, got {tuple(self.counts.shape)}, "
                f"{tuple(self.sums.shape)}, {tuple(self.assignments.shape)}"
            )
        if not (torch.isfinite(self.counts).all() and torch.isfinite(self.sums).all()):
            raise ValueError("counts or sums contain NaN or inf")
        if k and not bool((self.counts > 0).all()):
            raise ValueError("counts must be positive (every memory holds a positive number of items)")
        if n and (int(self.assignments.min()) < 0 or int(self.assignments.max()) >= k):
            raise ValueError(f"assignments must lie in [0, {k})")
        if abs(float(self.counts.sum()) - n) > 1e-3 * max(1, n):
            raise ValueError(f"counts sum to {float(self.counts.sum())}, but {n} items were written")
        if self.assignment != "proportional":
            hard = torch.bincount(self.assignments, minlength=k).to(self.counts)
            if not torch.equal(hard, self.counts):
                raise ValueError("counts do not match the stored assignments")

    # --- the conjugate centre posterior -------------------------------------------------------
    def _centre_posterior(self, counts: Tensor, sums: Tensor) -> tuple[Tensor, Tensor]:
        """``(m_k [K, D], v_k = s² + τ_k² [K])`` from counts and sums (see the module docstring)."""
        s2, p2 = self.bandwidth**2, self.prior_scale**2
        tau2 = 1.0 / (1.0 / p2 + counts / s2)
        centres = tau2.unsqueeze(-1) * (self.prior_mean / p2 + sums / s2)
        return centres, s2 + tau2

    @property
    def centres(self) -> Tensor:
        """``[K, D]`` posterior means ``m_k`` of the memory centres."""
        return self._centre_posterior(self.counts, self.sums)[0]

    @property
    def centre_variance(self) -> Tensor:
        """``[K]`` posterior variances ``τ_k²`` of the centres (per dimension)."""
        return self._centre_posterior(self.counts, self.sums)[1] - self.bandwidth**2

    @property
    def new_variance(self) -> float:
        """``v₀ = s² + s₀²``, the predictive variance of a fresh memory."""
        return self.bandwidth**2 + self.prior_scale**2

    def crp_log_prior(self) -> Tensor:
        """``[K + 1]`` log CRP probabilities of the next item's table: ``log n_k/(n+α)``, then
        ``log α/(n+α)`` for a new one (``n = Σ_k n_k``)."""
        total = self.counts.sum() + self.alpha
        new = torch.full((1,), self.alpha, dtype=self.dtype, device=self.device)
        return torch.cat([self.counts, new]).log() - total.log()

    def partition_log_prob(self) -> Tensor:
        """Ewens' formula: ``log P(partition) = K log α + log Γ(α) - log Γ(α + n) + Σ_k log Γ(n_k)``,
        the CRP probability of the stored partition (meaningful for the hard assignments)."""
        a = torch.tensor(self.alpha, dtype=self.dtype, device=self.device)
        n = self.counts.sum()
        return len(self) * a.log() + torch.lgamma(a) - torch.lgamma(a + n) + torch.lgamma(self.counts).sum()

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """The reading prior's ``J = K + 1`` components: ``(log weights [J], centres [J, D], variances [J])``,
        the memories first and the new-memory component ``N(μ₀, v₀ I)`` last."""
        centres, var = self._centre_posterior(self.counts, self.sums)
        mu0 = torch.full((1, self.dim), self.prior_mean, dtype=self.dtype, device=self.device)
        v0 = torch.full((1,), self.new_variance, dtype=self.dtype, device=self.device)
        return self.crp_log_prior(), torch.cat([centres, mu0]), torch.cat([var, v0])

    def table_log_probs(self, items: Any) -> Tensor:
        """``[N, K + 1]`` ``log p(t = j | ξ, M)`` of each item against the *current* state (not
        sequential): the posterior over tables that decides a single-item write."""
        x = self.prepare_items(items)
        log_w, centres, var = self.components()
        logits = mixture_logits(x, centres, var, log_w)
        return logits - logits.logsumexp(-1, keepdim=True)

    # --- writing ------------------------------------------------------------------------------
    def write(self, items: Any, *, generator: torch.Generator | None = None) -> "NonparametricMemory":
        """Assign ``items`` (``[N, D]`` or ``[D]``) to memories in row order, creating new ones
        when the rule of ``assignment`` says so.  ``write(cat([a, b]))`` equals ``write(a); write(b)``.

        ``generator`` drives ``"crp_sample"`` (default: the global RNG).  Atomic: the state is
        assigned only at the end, so a failed write leaves the memory as it was.  Each step is a few
        small tensor operations over the ``K`` memories; on a busy CPU ``torch.set_num_threads(1)``
        can make a long write many times faster.
        """
        x = self.prepare_items(items)
        check_generator(generator)
        n_new, K = x.shape[0], len(self)
        cap = K + n_new  # at most one new memory per item
        counts = self.counts.new_zeros(cap)
        sums = self.sums.new_zeros(cap, self.dim)
        counts[:K], sums[:K] = self.counts, self.sums
        centres, var = x.new_zeros(cap, self.dim), x.new_zeros(cap)
        centres[:K], var[:K] = self._centre_posterior(counts[:K], sums[:K])
        assign = torch.empty(n_new, dtype=torch.long, device=self.device)
        # item-independent terms for the whole batch: log α + log N(ξ; μ₀, v₀ I)
        v0, half_d = self.new_variance, 0.5 * self.dim
        log_new = (
            math.log(self.alpha) - 0.5 * ((x - self.prior_mean) ** 2).sum(-1) / v0 - half_d * math.log(2 * math.pi * v0)
        )
        log_2pi_var = torch.log(2 * math.pi * var)
        soft = self.assignment == "proportional"
        for i in range(n_new):  # sequential by nature: each decision depends on the earlier ones
            xi = x[i]
            existing = counts[:K].log() - 0.5 * ((centres[:K] - xi) ** 2).sum(-1) / var[:K] - half_d * log_2pi_var[:K]
            logits = torch.cat([existing, log_new[i : i + 1]])
            if self.assignment == "crp_sample":
                u = torch.rand(K + 1, generator=generator, dtype=x.dtype, device=x.device)
                j = int((logits - torch.log(-torch.log(u.clamp_min(torch.finfo(x.dtype).tiny)))).argmax())
            else:
                j = int(logits.argmax())
            assign[i] = j
            created = j == K
            if soft:
                J = K + 1 if created else K
                r = logits[:J].softmax(-1)
                counts[:J] += r
                sums[:J] += r.unsqueeze(-1) * xi
                centres[:J], var[:J] = self._centre_posterior(counts[:J], sums[:J])
                log_2pi_var[:J] = torch.log(2 * math.pi * var[:J])
            else:
                counts[j] += 1
                sums[j] += xi
                centres[j : j + 1], var[j : j + 1] = self._centre_posterior(counts[j : j + 1], sums[j : j + 1])
                log_2pi_var[j] = torch.log(2 * math.pi * var[j])
            K += created
        self.counts, self.sums = counts[:K].clone(), sums[:K].clone()
        self.append_rows("assignments", assign)
        return self

    # --- the probabilistic model -------------------------------------------------------------
    def prior(self) -> CRPPredictive:
        """``p(z | M)``, the CRP predictive mixture, as a Pyro distribution with event shape ``[D]``."""
        self._check_not_empty()
        return CRPPredictive(*self.components())

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``: independent ``N(z_d, σ²)`` on observed entries, masked by Pyro elsewhere."""
        return masked_normal(z, self.noise_scale, mask)

    # --- hooks used by the engines -----------------------------------------------------------
    def posterior(
        self, cue: Tensor, mask: Tensor | None = None, *, return_weights: bool | None = None, chunk_size: Any = None
    ) -> NonparametricPosterior:
        """The exact posterior ``p(z | x, M)`` (``chunk_size`` is accepted for the engine's
        signature and unused: the ``[B, K + 1]`` logits are formed densely)."""
        self._check_not_empty()
        return NonparametricPosterior(self, cue, mask, return_weights=return_weights)

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """Starting point of iterative engines: ``"cue"`` (the cue on observed entries, the exact
        posterior mean elsewhere), ``"posterior_mean"``, ``"prior_mean"`` or a ``[B, D]`` tensor."""
        return posterior_start(self, cue, mask, init)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One EM step on ``log p(x, z | M)`` (the :class:`varmem.GaussianMixtureMemory` step with
        isotropic components): ``Step`` with ``E(z; x)`` and the responsibilities at ``z``.

        With the responsibilities ``r_j = p(j | z, M)`` held fixed the log-joint is a concave
        quadratic in ``z``, maximised at
        ``z_new = (Σ_j r_j c_j / v_j + m ⊙ x/σ²) / (Σ_j r_j / v_j + m/σ²)``,
        so the energy never increases; equivalently ``z_new = z - ∇E(z; x) / (Σ_j r_j/v_j + m/σ²)``.
        With equal ``v_j`` and equal weights it is the kernel-density memory's mean-shift step.
        """
        log_w, centres, var = self.components()
        logits = mixture_logits(z, centres, var, log_w)
        lse = logits.logsumexp(-1)
        r = (logits - lse.unsqueeze(-1)).exp()
        rp = r / var  # [B, J]
        m = torch.ones((), dtype=z.dtype, device=z.device) if mask is None else mask.to(z.dtype)
        n2 = self.noise_scale**2
        z_new = (rp @ centres + m * cue / n2) / (rp.sum(-1, keepdim=True) + m / n2)
        e = -lse - self.likelihood(z, mask).log_prob(cue) if energy else None
        return Step(state=z_new, energy=e, weights=r if weights else None, index=r.argmax(-1) if index else None)

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """Responsibilities ``p(j | z, M)`` over the ``K + 1`` components at a latent ``z [B, D]``:
        ``(weights [B, K + 1] or None, argmax index [B])``."""
        log_w, centres, var = self.components()
        w = torch.softmax(mixture_logits(z, centres, var, log_w), -1)
        dense = want_weights(return_weights, z.shape[0], len(self) + 1)
        return (w if dense else None), w.argmax(-1)
