"""Entropic associative memory (EAM): the Associative Memory Register as a Pyro model.

Pineda, Fuentes & Morales, "An entropic associative memory", Sci. Rep. 11:6948 (2021) (binary
EAM, one register per class); Hernández, Morales & Pineda, "Entropic associative memory for real
world images" (arXiv 2405.12500; weighted EAM).  Operations as in the official code
(``LA-Pineda/Associative-Memory-Experiments``, ``eam-experiments/hetero:associative.py``), written
again here as batched tensor code (:mod:`.register` has the formulas).

State: ``counts [K, n, m]``, one register of ``n = dim`` columns by ``m = rows`` rows per class
(``K = registers``; the 2021 multi-memory system has one per class, the CIFAR paper one for all),
and ``sizes [K]``, the objects registered in each.  Cells saturate at ``2**16 - 1`` as in the
official code.  Items are feature vectors in ``[0, 1]`` (``value_domain = UNIT``): the register
quantises each feature into ``m`` rows over that fixed range, so a front-end scales its features
there first (the papers use the training set's min and max).

**The EAM's reads** (``method="beta"``): η-recognition of the cue by each register (ι, κ, ξ),
then β-retrieval from the recognising register of least entropy (2021's rule), one row per column:

* weighted (``weighted=True``): ``v_j ~ p(v) ∝ w(j, v) · N(g(v); g(q(x_j)), τ²)``, the Gaussian
  reweighting of W-EAM with ``τ = σ·m`` rows (``σ = sigma``);
* binary (``weighted=False``): ``round(T)``, ``T`` triangular on the run of marked cells around
  the cue's cell with its mode at the cue (2021); a cue cell that is not marked (possible with
  ``ξ > 0``) and an unobserved column are drawn from the binary posterior below.

A cue no register recognises is rejected: the read returns the cue as the register sees it
(``g(q(x))`` on observed entries, 0 elsewhere) and ``info["recognised"]`` is False there.

**The probabilistic reading** (``method="exact"``, the Pyro ``model``): the registers are a
mixture of factorised categorical priors, with a discretised Gaussian cue likelihood::

    k ~ Categorical(π),  π_k = sizes_k / N
    v_j | k ~ Categorical(p_kj),  p_kj(v) ∝ w_k(j, v) + α      (binary: [w_k(j, v) > 0] + α)
    x_j | v_j ~ N(g(v_j), τ²)  on observed columns, with the cue read as x_j = g(q(cue_j))

(``α = pseudo_count``: the posterior predictive of a Dirichlet(α) prior on each column; ``α = 0``
is the EAM).  Given ``k`` the posterior factorises over columns, ``p(v_j | x, k) ∝ p_kj(v_j)
N(x_j; g(v_j), τ²)``, so the exact posterior is a mixture over registers of products of
categoricals: weighted β-retrieval is one exact posterior draw from the register it picked.
:meth:`EntropicMemory.register_model` writes the same model with the discrete sites and a
``pyro.plate`` over columns: ``pyro.infer.infer_discrete`` on it draws exact posterior samples and
``TraceEnum_ELBO`` gives the exact log evidence (both tested against the closed form).

Energy (nats, all constants kept; ``z`` is read through the quantiser, so it is piecewise
constant in ``z``)::

    E(z; x) = -log Σ_k π_k Π_j p_kj(q(z_j)) - Σ_{j observed} log N(g(q(x_j)); z_j, τ²)

It is ``+inf`` where ``z`` falls in a cell no register holds and ``α = 0`` (an impossible state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from ...domains import UNIT
from ...engine import engine
from ...helpers import make_generator, masked_normal, want_weights
from ...inference import retrieve_exact  # noqa: F401 (registers the "exact" engine)
from ...memory import PriorLikelihoodMemory
from ...retrieval import Retrieval
from ...validation import (
    check_bool,
    check_int,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_representable,
    check_seed,
)
from .register import (
    RegisterPrior,
    column_means,
    column_probs,
    entropy_bits,
    gather_cells,
    grid,
    iota_filter,
    log_normal_rows,
    quantise,
    row_spacing,
    triangular_rows,
)

__all__ = ["EntropicMemory", "EntropicPosterior", "Recognition", "recognition_scores", "retrieve_beta", "BetaReadable",
           "MAX_COUNT"]

MAX_COUNT = 2**16 - 1
"""Cells saturate here (the official AMR's ``absolute_max``); exact in float32."""


@dataclass
class Recognition:
    """η-recognition of ``B`` cues by ``K`` registers.

    Attributes:
        recognised: ``[B, K]`` bool, ``mismatches ≤ ξ`` and the weight test passed.
        mismatches: ``[B, K]`` observed columns whose cue cell is empty in the ι-filtered register.
        weight: ``[B, K]`` ``mean_j w(j, q(x_j))`` (unobserved columns weigh 0).
    """

    recognised: Tensor
    mismatches: Tensor
    weight: Tensor


def _sample_rows(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One row per ``[..., m]`` categorical (rows sum to 1), by the inverse CDF with ``generator``."""
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


@runtime_checkable
class BetaReadable(Protocol):
    """What the β-retrieval engine needs: :meth:`EntropicMemory.beta_retrieve`."""

    def beta_retrieve(self, cue: Tensor, mask: Tensor | None,
                      generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]: ...


@engine("beta", requires=(BetaReadable,))
def retrieve_beta(memory: BetaReadable, cue: Tensor, mask: Tensor | None, *, seed: int | None = None) -> Retrieval:
    """The entropic memory's own read: η-recognition, then β-retrieval (one constructed object per
    cue) from the recognising register of least entropy (see :mod:`varmem.memories.entropic`).

    ``info["recognised"]`` (``[B]`` bool) says which cues were recognised (a rejected cue comes back
    as the register reads it) and ``info["register"]`` (``[B]``) which register answered (-1: none).

    Options:
        seed: seed of the draws (None: the global RNG).
    """
    seed = check_seed(seed, "option seed", allow_none=True)
    pattern, recognised, register = memory.beta_retrieve(cue, mask, make_generator(seed, cue.device))
    return Retrieval(pattern=pattern, method="beta", steps=0,
                     info={"recognised": recognised, "register": register})


class EntropicPosterior:
    """The exact posterior of an :class:`EntropicMemory` given ``B`` cues: a mixture over the ``K``
    registers of products of per-column categoricals.

    Attributes:
        weights: ``[B, K]`` ``p(k | x)`` (None if not materialised); ``index`` ``[B]`` its arg-max.
        rows: ``[B, K, n, m]`` ``p(v_j | x, k)``.
        mean, variance: ``[B, n]`` of ``g(v_j)`` under the posterior.
        log_evidence: ``[B]`` ``log p(x_obs | M)`` (nats; the cue read as ``g(q(x))``).
    """

    def __init__(self, memory: "EntropicMemory", cue: Tensor, mask: Tensor | None, *,
                 return_weights: bool | None = None, chunk_size: int | None = None) -> None:
        probs = memory.column_probs()  # [K, n, m]
        log_pi = memory.register_log_weights()  # [K]
        values = memory.values
        x = values[quantise(cue, memory.rows)]  # [B, n]
        loglik = log_normal_rows(x, values, memory.cue_scale)  # [B, n, m]
        if mask is not None:
            loglik = torch.where(mask.expand_as(x).unsqueeze(-1), loglik, torch.zeros_like(loglik))
        joint = probs.log().unsqueeze(0) + loglik.unsqueeze(1)  # [B, K, n, m]
        column_evidence = joint.logsumexp(-1)  # [B, K, n]
        log_joint_k = log_pi + column_evidence.sum(-1)  # [B, K]
        self.log_evidence = log_joint_k.logsumexp(-1)
        w = torch.softmax(log_joint_k, -1)
        self.rows = (joint - column_evidence.unsqueeze(-1)).exp()
        self._w = w
        self.values = values
        per_k = self.rows @ values  # [B, K, n]
        second = self.rows @ values**2
        self.mean = (w.unsqueeze(-1) * per_k).sum(1)
        self.variance = ((w.unsqueeze(-1) * second).sum(1) - self.mean**2).clamp_min(0)
        self.weights = w if want_weights(return_weights, cue.shape[0], w.shape[-1]) else None
        self.index = w.argmax(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z | x, M)`` of the grid point ``g(q(z))``, for ``z [..., B, n]`` → ``[..., B]``."""
        B, K, n, m = self.rows.shape
        r = quantise(z, m)  # [..., B, n]
        lead = r.shape[:-2]
        rows = self.rows.expand(*lead, B, K, n, m)
        picked = rows.gather(-1, r.unsqueeze(-2).expand(*lead, B, K, n).unsqueeze(-1)).squeeze(-1)
        return (self._w.log() + picked.log().sum(-1)).logsumexp(-1)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[S, B, n]`` exact draws: ``k ~ p(k | x)``, then ``v_j ~ p(v_j | x, k)``, returned as ``g(v)``."""
        B, K, n, m = self.rows.shape
        k = _sample_rows(self._w.expand(num_samples, B, K), generator)  # [S, B]
        chosen = self.rows[torch.arange(B, device=k.device), k]  # [S, B, n, m]
        return self.values[_sample_rows(chosen, generator)]


class EntropicMemory(PriorLikelihoodMemory):
    """Entropic associative memory: ``registers`` Associative Memory Registers of ``dim`` columns by
    ``rows`` rows (module docstring for the operations, the Pyro model and the energy).

    Args:
        dim: ``n``, features per object (columns).
        rows: ``m``, quantisation levels per feature (``m = 1``: every cue is recognised, entropy 0).
        registers: ``K``, one register per class (``write(..., labels=...)`` says which).
        weighted: counts (W-EAM, Gaussian-reweighted retrieval) or the binary relation (2021 EAM,
            triangular retrieval, containment).
        sigma: ``σ``, the retrieval / likelihood width as a fraction of the rows: ``τ = σ·m`` rows.
        iota: ``ι ≥ 0``, cells below ``ι`` times their column's mean non-zero weight are ignored by
            recognition.
        kappa: ``κ ≥ 0``, a cue's mean weight must reach ``κ`` times the register's mean.
        xi: ``ξ``, mismatching columns tolerated by recognition.
        pseudo_count: ``α ≥ 0`` added to every cell of the probabilistic reading (0: the EAM).

    Example:
        >>> import torch, varmem
        >>> memory = varmem.EntropicMemory(4, rows=8, registers=2)
        >>> memory = memory.write(torch.tensor([[0., .2, .4, 1.], [1., .8, .6, 0.]]), labels=[0, 1])
        >>> memory.recognise(torch.tensor([[0., .2, .4, 1.]])).recognised
        tensor([[ True, False]])
    """

    methods = ("beta", "exact")
    default_method = "beta"
    value_domain = UNIT

    def __init__(
        self, dim: int, rows: int = 16, *, registers: int = 1, weighted: bool = True, sigma: float = 0.25,
        iota: float = 0.0, kappa: float = 0.0, xi: int = 0, pseudo_count: float = 0.0,
        device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.rows = check_positive_int(rows, "rows")
        self.registers = check_positive_int(registers, "registers")
        self.weighted = check_bool(weighted, "weighted")
        self.sigma = check_positive(sigma, "sigma")
        self.iota = check_non_negative(iota, "iota")
        self.kappa = check_non_negative(kappa, "kappa")
        self.xi = check_int(xi, "xi", minimum=0)
        self.pseudo_count = check_non_negative(pseudo_count, "pseudo_count")
        self.cue_scale = self.sigma * self.rows * row_spacing(self.rows)  # τ in value units
        check_representable(self.cue_scale**2, "the cue variance (sigma · rows / (rows - 1))²", self.dtype)
        check_representable(self.pseudo_count * self.rows + MAX_COUNT, "pseudo_count · rows", self.dtype)
        self.register_buffer("counts", torch.zeros(self.registers, dim, self.rows, dtype=self.dtype,
                                                   device=self.device))
        self.register_buffer("sizes", torch.zeros(self.registers, dtype=torch.long, device=self.device))

    # --- protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.sizes.sum())

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "rows": self.rows, "registers": self.registers, "weighted": self.weighted,
                "sigma": self.sigma, "iota": self.iota, "kappa": self.kappa, "xi": self.xi,
                "pseudo_count": self.pseudo_count}

    @property
    def values(self) -> Tensor:
        """``[m]`` the value ``g(v)`` each row stands for."""
        return grid(self.rows, self.dtype, self.device)

    def _labels(self, labels: Any, n: int) -> Tensor:
        if labels is None:
            if self.registers > 1:
                raise ValueError(f"labels are needed to write into one of the {self.registers} registers")
            return torch.zeros(n, dtype=torch.long, device=self.device)
        if isinstance(labels, (bool, str, bytes, dict)) or not (torch.is_tensor(labels) or
                                                               isinstance(labels, (list, tuple, np.ndarray))):
            raise TypeError(f"labels must be a sequence or tensor of {n} ints, got {type(labels).__name__}")
        try:
            t = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"labels must be a sequence or tensor of {n} ints ({e})") from None
        if t.dtype in (torch.bool,) or t.is_floating_point() or t.is_complex():
            raise TypeError(f"labels must be ints, got dtype {t.dtype}")
        if t.shape != (n,):
            raise ValueError(f"labels must have shape [{n}] (one per item), got {tuple(t.shape)}")
        if n and (int(t.min()) < 0 or int(t.max()) >= self.registers):
            raise ValueError(f"labels must lie in [0, {self.registers - 1}] (one register each), "
                             f"got {int(t.min())} … {int(t.max())}")
        return t.to(device=self.device, dtype=torch.long)

    def write(self, items: Any, *, labels: Any = None) -> "EntropicMemory":
        """λ-register ``items`` (``[N, dim]`` in ``[0, 1]``; values beyond are clipped by the
        quantiser) into the registers ``labels`` (``[N]`` ints; may be None with one register):
        ``w_k(j, q(x_j)) += 1``."""
        items = self.prepare_items(items)
        labels = self._labels(labels, items.shape[0])
        rows = quantise(items, self.rows)
        cols = torch.arange(self.dim, device=self.device).expand_as(rows)
        delta = torch.zeros_like(self.counts).index_put_((labels.unsqueeze(-1).expand_as(rows), cols, rows),
                                                         torch.ones_like(items), accumulate=True)
        self.counts = (self.counts + delta).clamp_max(MAX_COUNT)
        self.sizes = self.sizes + torch.bincount(labels, minlength=self.registers)
        return self

    def check_state(self) -> None:
        c = self.counts
        if c.shape != (self.registers, self.dim, self.rows):
            raise ValueError(f"counts must have shape [{self.registers}, {self.dim}, {self.rows}], got "
                             f"{tuple(c.shape)}")
        if self.sizes.shape != (self.registers,):
            raise ValueError(f"sizes must have shape [{self.registers}], got {tuple(self.sizes.shape)}")
        if bool((c < 0).any()) or bool((c > MAX_COUNT).any()) or not torch.equal(c, c.round()):
            raise ValueError(f"counts must hold whole numbers in [0, {MAX_COUNT}]")
        if bool((self.sizes < 0).any()):
            raise ValueError("sizes must be >= 0")
        totals = c.sum(-1)  # [K, n]: every column of register k counts its objects (up to saturation)
        if bool((totals > self.sizes.unsqueeze(-1)).any()) or bool(
                ((totals != self.sizes.unsqueeze(-1)) & (c < MAX_COUNT).all(-1)).any()):
            raise ValueError("counts do not match sizes: every column of a register counts each of its objects once")

    # --- the register's own quantities -----------------------------------------------------------
    def table(self) -> Tensor:
        """``[K, n, m]`` the register's weights: the counts (weighted) or the relation ``w > 0`` (binary)."""
        return self.counts if self.weighted else (self.counts > 0).to(self.dtype)

    def entropy(self) -> Tensor:
        """``[K]`` each register's entropy in bits, ``mean_j H(p_j)`` (binary: ``mean_j log₂ ν_j``)."""
        table = self.table()
        probs = table / table.sum(-1, keepdim=True).clamp_min(1)  # an empty column has entropy 0, as in the papers
        return entropy_bits(probs).mean(-1)

    def column_probs(self) -> Tensor:
        """``[K, n, m]`` the prior's ``p_kj(v)`` (module docstring)."""
        return column_probs(self.table(), self.pseudo_count)

    def register_log_weights(self) -> Tensor:
        """``[K]`` ``log π_k = log(sizes_k / N)``."""
        sizes = self.sizes.to(self.dtype)
        return (sizes / sizes.sum()).log()

    def recognise(self, cue: Any, mask: Any = None) -> Recognition:
        """η-recognition of each cue by each register (module docstring; inputs checked as for
        :meth:`retrieve`)."""
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        return self._recognition(quantise(cue, self.rows), mask)

    def _recognition(self, rows: Tensor, mask: Tensor | None) -> Recognition:
        table = self.table()
        observed = torch.ones_like(rows, dtype=torch.bool) if mask is None else mask.expand_as(rows)
        filtered = gather_cells(iota_filter(table, self.iota), rows)  # [B, K, n]
        mismatches = ((filtered == 0) & observed.unsqueeze(1)).sum(-1)
        weight = (gather_cells(table, rows) * observed.unsqueeze(1)).mean(-1)
        threshold = self.kappa * column_means(table).mean(-1)  # [K]
        recognised = (mismatches <= self.xi) & (weight >= threshold)
        return Recognition(recognised=recognised, mismatches=mismatches, weight=weight)

    # --- reads ---------------------------------------------------------------------------------
    def beta_retrieve(self, cue: Tensor, mask: Tensor | None,
                      generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(pattern [B, n], recognised [B], register [B])`` of the EAM's read (module docstring)."""
        rows = quantise(cue, self.rows)
        observed = torch.ones_like(rows, dtype=torch.bool) if mask is None else mask.expand_as(rows)
        ok = self._recognition(rows, mask).recognised  # [B, K]
        score = torch.where(ok, self.entropy().unsqueeze(0), torch.full_like(ok, math.inf, dtype=self.dtype))
        register = score.argmin(-1)
        recognised = ok.any(-1)
        table = self.table()[register]  # [B, n, m]
        values = self.values
        loglik = log_normal_rows(values[rows], values, self.cue_scale)
        loglik = torch.where(observed.unsqueeze(-1), loglik, torch.zeros_like(loglik))
        post = column_probs(table, self.pseudo_count).log() + loglik
        post = torch.softmax(post, -1)
        out = _sample_rows(post, generator)
        if not self.weighted:
            u = torch.rand(rows.shape, generator=generator, device=rows.device, dtype=self.dtype)
            marked = table > 0  # [B, n, m]
            at_cue = marked.gather(-1, rows.unsqueeze(-1)).squeeze(-1) & observed
            out = torch.where(at_cue, triangular_rows(marked, rows, u), out)
        rejected = torch.where(observed, values[rows], torch.zeros((), dtype=self.dtype, device=self.device))
        pattern = torch.where(recognised.unsqueeze(-1), values[out], rejected)
        return pattern, recognised, torch.where(recognised, register, torch.full_like(register, -1))

    def posterior(self, cue: Tensor, mask: Tensor | None = None, *, return_weights: bool | None = None,
                  chunk_size: int | None = None) -> EntropicPosterior:
        """The exact posterior (:class:`EntropicPosterior`); ``chunk_size`` is accepted for the
        protocol (the ``[B, K, n, m]`` tables are built at once)."""
        return EntropicPosterior(self, cue, mask, return_weights=return_weights, chunk_size=chunk_size)

    # --- the Pyro model ------------------------------------------------------------------------
    def prior(self) -> RegisterPrior:
        return RegisterPrior(self.column_probs(), self.register_log_weights())

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        return masked_normal(z, self.cue_scale, mask)

    def read_cue(self, cue: Tensor) -> Tensor:
        """``g(q(x))``: the cue as the register reads it (what the likelihood observes)."""
        return self.values[quantise(cue, self.rows)]

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return super().compute_energy(z, None if cue is None else self.read_cue(cue), mask)

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """``z ~ RegisterPrior``, ``x ~ N(z, τ²)`` observed at ``g(q(cue))`` (sites ``"z"``, ``"x"``
        under the plate ``"cues"``)."""
        return super().model(None if cue is None else self.read_cue(cue), mask, num_cues)

    def register_model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """The same model with its discrete sites: ``"register"`` ``k`` (plate ``"cues"``, dim -2)
        and ``"row"`` ``v_j`` under ``pyro.plate("columns", n, dim=-1)``; ``"x"`` observed at
        ``g(q(cue))``.  Enumerate it (``config_enumerate``, ``max_plate_nesting=2``): ``TraceEnum_ELBO``
        with an empty guide gives ``-Σ_b log p(x_b | M)`` and ``infer_discrete`` exact posterior draws."""
        self._check_not_empty()
        B = cue.shape[0] if cue is not None else num_cues
        probs, values = self.column_probs(), self.values
        x = None if cue is None else self.read_cue(cue)
        with pyro.plate("cues", B, dim=-2):
            k = pyro.sample("register", dist.Categorical(logits=self.register_log_weights()))
            with pyro.plate("columns", self.dim, dim=-1):
                p = Vindex(probs)[k, torch.arange(self.dim, device=self.device)]
                v = pyro.sample("row", dist.Categorical(probs=p))
                obs = dist.Normal(values[v], self.cue_scale)
                if mask is not None:
                    obs = obs.mask(mask)
                pyro.sample("x", obs, obs=x)
        return values[v]


def recognition_scores(memory: EntropicMemory, cues: Any, labels: Any, mask: Any = None) -> dict[str, Any]:
    """The papers' recognition precision and recall of a multi-memory system (one register per
    class): register ``k`` should recognise the cues of class ``k`` and no other.

    ``TP_k`` = cues of class ``k`` that register ``k`` recognises, ``FP_k`` = cues of other classes it
    recognises; ``precision_k = TP_k / (TP_k + FP_k)`` (NaN when it recognises nothing, left out of
    the mean), ``recall_k = TP_k / n_k``; returns the means over registers, the per-register values
    and ``entropy``, the mean of the registers' entropies (bits).  With one row (``m = 1``) every
    register recognises every cue, so the mean precision is exactly ``1/K`` whatever the class
    sizes, the recall 1 and the entropy 0.
    """
    labels = memory._labels(labels, memory.prepare_cue(cues, mask)[0].shape[0])
    ok = memory.recognise(cues, mask).recognised  # [B, K]
    truth = torch.nn.functional.one_hot(labels, memory.registers).bool()
    tp = (ok & truth).sum(0).to(torch.float64)
    claimed = ok.sum(0).to(torch.float64)
    precision = tp / claimed  # NaN where nothing was recognised
    recall = tp / truth.sum(0).to(torch.float64)
    return {"precision": float(precision.nanmean()), "recall": float(recall.nanmean()),
            "entropy": float(memory.entropy().mean()), "precision_k": precision, "recall_k": recall}
