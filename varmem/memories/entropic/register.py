"""The Associative Memory Register (AMR) of the entropic memories, as batched tensor operations.

An AMR (Pineda, Fuentes & Morales 2021; Hernández, Morales & Pineda 2024) is a table of ``n``
columns (features) by ``m`` rows (quantised values); ``w(j, v) ≥ 0`` counts how often feature ``j``
took the value ``v`` in the registered objects.  A feature ``x ∈ [0, 1]`` is read through the
quantiser ``q(x) = round((m - 1) · clamp(x, 0, 1))`` (values beyond ``[0, 1]`` fall into the end
rows, as the official code's ``validate`` clips them); row ``v`` stands for the value
``g(v) = v / (m - 1)`` (``½`` when ``m = 1``).

* **λ-register**: ``w(j, q(x_j)) += 1`` for every column (the binary EAM keeps ``w > 0`` only).
* **ι-filter**: ``w_ι(j, v) = w(j, v) · [w(j, v) ≥ ι · μ_j]``, ``μ_j`` the mean of the non-zero
  cells of column ``j``.
* **η-recognition**: ``mismatches = #{j observed : w_ι(j, q(x_j)) = 0}``; recognised iff
  ``mismatches ≤ ξ`` and ``mean_j w(j, q(x_j)) ≥ κ · mean_j μ_j`` (an unobserved column weighs 0,
  as the official code's undefined row does).
* **entropy** (bits): ``mean_j H(p_j)`` with ``p_j(v) = w(j, v) / Σ_v w(j, v)``; for the binary
  register (``w ∈ {0, 1}``) this is ``mean_j log₂ ν_j``, ``ν_j`` the marked cells of column ``j``.

Everything here works on ``[..., n, m]`` tables (a leading register dim for the multi-memory
system), on any device and floating dtype.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Size, Tensor

__all__ = [
    "quantise",
    "grid",
    "row_spacing",
    "column_means",
    "iota_filter",
    "column_probs",
    "entropy_bits",
    "gather_cells",
    "triangular_rows",
    "RegisterPrior",
]


def quantise(x: Tensor, rows: int) -> Tensor:
    """``q(x) = round((rows - 1) · clamp(x, 0, 1))`` as a long tensor of the same shape."""
    return torch.round(x.clamp(0.0, 1.0) * (rows - 1)).long()


def grid(rows: int, dtype: torch.dtype | None = None, device: Any = None) -> Tensor:
    """``[rows]`` the value ``g(v)`` of each row: ``v / (rows - 1)``, or ``[½]`` for one row."""
    if rows == 1:
        return torch.full((1,), 0.5, dtype=dtype, device=device)
    return torch.arange(rows, dtype=dtype, device=device) / (rows - 1)


def row_spacing(rows: int) -> float:
    """``Δ = 1 / (rows - 1)``, the distance between two rows in value units (1 for one row)."""
    return 1.0 / max(rows - 1, 1)


def column_means(counts: Tensor) -> Tensor:
    """``[..., n]`` ``μ_j``: the mean of the non-zero cells of each column (0 for an empty column)."""
    nonzero = (counts > 0).sum(-1).clamp_min(1)
    return counts.sum(-1) / nonzero


def iota_filter(counts: Tensor, iota: float) -> Tensor:
    """``w_ι = w · [w ≥ ι μ_j]`` (``counts [..., n, m]``); ``ι = 0`` keeps the table as it is."""
    if iota == 0:
        return counts
    threshold = iota * column_means(counts)
    return torch.where(counts >= threshold.unsqueeze(-1), counts, torch.zeros_like(counts))


def column_probs(table: Tensor, pseudo_count: float = 0.0) -> Tensor:
    """``p_j(v) = (w(j, v) + α) / Σ_v (w(j, v) + α)`` over the last dim (uniform for an empty column
    with ``α = 0``)."""
    table = table + pseudo_count
    total = table.sum(-1, keepdim=True)
    uniform = torch.full_like(table, 1.0 / table.shape[-1])
    return torch.where(total > 0, table / total.clamp_min(torch.finfo(table.dtype).tiny), uniform)


def entropy_bits(probs: Tensor) -> Tensor:
    """``H(p) = -Σ_v p(v) log₂ p(v)`` over the last dim (``0 log 0 = 0``)."""
    logs = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logs).sum(-1)


def gather_cells(table: Tensor, rows: Tensor) -> Tensor:
    """``w(j, rows[..., j])`` for ``table [K, n, m]`` and ``rows [B, n]`` → ``[B, K, n]``."""
    K, n, m = table.shape
    index = rows.unsqueeze(1).expand(rows.shape[0], K, n).unsqueeze(-1)  # [B, K, n, 1]
    return table.unsqueeze(0).expand(rows.shape[0], K, n, m).gather(-1, index).squeeze(-1)


def triangular_rows(marked: Tensor, mode: Tensor, u: Tensor) -> Tensor:
    """The binary EAM's β-retrieval of one row per column (Pineda et al. 2021).

    ``marked [..., n, m]`` (bool) is the binary register (one per cue, or shared), ``mode [..., n]``
    the cue's rows, ``u [..., n]`` uniforms.  For a marked cue cell the contiguous run
    ``[lo, hi]`` of marked cells containing it is found, and the row is ``round(T)`` with ``T``
    triangular on ``[lo, hi]`` with its mode at the cue (drawn by the inverse CDF); ``lo = hi``
    gives the cue row itself.  Returns rows shaped like ``mode``.
    """
    m = marked.shape[-1]
    ar = torch.arange(m, device=marked.device)
    # run start: one past the last unmarked cell at or before v; run end: one before the first after
    last_gap = torch.where(~marked, ar, torch.full_like(ar, -1)).cummax(-1).values  # [..., n, m]
    next_gap = torch.where(~marked, ar, torch.full_like(ar, m)).flip(-1).cummin(-1).values.flip(-1)
    shape = torch.broadcast_shapes(last_gap.shape[:-1], mode.shape)
    index = mode.expand(shape).unsqueeze(-1)
    lo = last_gap.expand(*shape, m).gather(-1, index).squeeze(-1) + 1
    hi = next_gap.expand(*shape, m).gather(-1, index).squeeze(-1) - 1
    a, b, c = lo.to(u.dtype), hi.to(u.dtype), mode.to(u.dtype)
    width = (b - a).clamp_min(1e-12)
    left = (c - a) / width
    low = a + torch.sqrt((u * width * (c - a)).clamp_min(0))
    high = b - torch.sqrt(((1 - u) * width * (b - c)).clamp_min(0))
    t = torch.where(u < left, low, high)
    return torch.where(hi > lo, torch.round(t).long().clamp(0, m - 1), mode.expand(shape))


class RegisterPrior(dist.TorchDistribution):
    """The AMR read as a prior over feature vectors: ``K`` registers, each a product of per-column
    categoricals, mixed with weights ``π``.

    ``p(z) = Σ_k π_k Π_j p_kj(q(z_j))`` on the grid values ``g(v)`` (event shape ``[n]``).  A value
    off the grid is read through the quantiser, as the register reads every feature: ``log_prob``
    of ``z`` is that of the grid point ``g(q(z))`` (so it is piecewise constant in ``z``, with a zero
    gradient).  ``sample`` draws a register ``k ~ π``, then a row per column ``v_j ~ p_kj``, and
    returns ``g(v)``.

    Args:
        probs: ``[K, n, m]`` per-column row probabilities (rows sum to 1; zeros allowed).
        log_weights: ``[K]`` normalised ``log π``.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, probs: Tensor, log_weights: Tensor, validate_args: bool | None = None) -> None:
        self.probs = probs
        self.log_weights = log_weights
        self.values = grid(probs.shape[-1], probs.dtype, probs.device)
        super().__init__(batch_shape=Size(), event_shape=probs.shape[1:2], validate_args=validate_args)

    def register_log_probs(self, value: Tensor) -> Tensor:
        """``[K, ...]`` ``log π_k + Σ_j log p_kj(q(z_j))`` for ``value [..., n]``."""
        K, n, m = self.probs.shape
        rows = quantise(value, m)  # [..., n]
        cols = torch.arange(n, device=rows.device).expand_as(rows)
        logp = self.probs.log()[:, cols, rows]  # [K, ..., n]
        return logp.sum(-1) + self.log_weights.reshape(K, *([1] * (rows.dim() - 1)))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.register_log_probs(value).logsumexp(0)

    @property
    def mean(self) -> Tensor:
        w = self.log_weights.exp()
        return torch.einsum("k,knm,m->n", w, self.probs, self.values)

    def sample(self, sample_shape: Size = Size()) -> Tensor:  # noqa: B008 (torch's signature)
        with torch.no_grad():
            shape = Size(sample_shape) + self.batch_shape
            k = torch.distributions.Categorical(logits=self.log_weights).sample(shape)  # [*shape]
            rows = torch.distributions.Categorical(probs=self.probs[k]).sample()  # [*shape, n]
            return self.values[rows]


def log_normal_rows(x: Tensor, values: Tensor, scale: float) -> Tensor:
    """``[B, n, m]`` ``log N(x_j; g(v), τ²)`` for cues ``x [B, n]`` and row values ``[m]``."""
    d = x.unsqueeze(-1) - values
    return -0.5 * (d / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
