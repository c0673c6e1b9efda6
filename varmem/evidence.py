"""The log evidence of cues, ``log p(x_b | M)``: the record every memory's :meth:`~varmem.Memory.evidence`
returns, and the importance-sampling estimator that memories without a closed form share.

The evidence of cue ``b`` is the marginal likelihood of its *observed* entries,
``p(x_b,obs | M) = ∫ p(x_b,obs | z) p(z | M) dz``; hidden entries do not enter it.  For independent
cues the evidence of a set is the sum over cues, and each cue's leave-one-out predictive density is
its own evidence (the memory does not learn from its cues), which is what model comparison needs
(:func:`varmem.analysis.compare_evidence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Evidence", "EVIDENCE_KINDS", "importance_sampling"]

EVIDENCE_KINDS = {
    "exact": "computed in closed form (up to floating-point rounding)",
    "estimate": "a Monte Carlo estimate of log p(x | M) with the standard error `stderr`",
    "lower_bound": "a lower bound on log p(x | M) (or an estimate whose expectation is one, with `stderr`)",
}
"""What :attr:`Evidence.kind` says about the value."""


@dataclass
class Evidence:
    """``log p(x_b | M)`` for ``B`` cues, with what kind of number it is.

    Attributes:
        log_evidence: ``[B]`` the log marginal likelihood of each cue's observed entries (nats).
        kind: a key of :data:`EVIDENCE_KINDS`: ``"exact"``, ``"estimate"`` or ``"lower_bound"``.
        method: how it was computed (``"closed_form"``, ``"importance_sampling"``, ...).
        stderr: ``[B]`` Monte Carlo standard error of ``log_evidence`` (zeros when exact).
        num_samples: samples per cue behind an estimate (``None`` when exact).
        n_observed: ``[B]`` the number of observed entries of each cue.
        ess: ``[B]`` the effective sample size ``(Σ w)² / Σ w²`` of an importance-sampling
            estimate's weights (``None`` otherwise); far below ``num_samples``, the weights are
            dominated by a few draws and ``stderr`` is not to be trusted.
    """

    log_evidence: Tensor
    kind: str
    method: str
    stderr: Tensor
    n_observed: Tensor
    num_samples: int | None = None
    ess: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVIDENCE_KINDS:
            raise ValueError(f"kind must be one of {list(EVIDENCE_KINDS)}, got {self.kind!r}")

    def total(self) -> tuple[float, float]:
        """``(Σ_b log p(x_b | M), its standard error)``: the evidence of the cues taken together
        (independent cues), with the errors of independent estimates added in quadrature."""
        return float(self.log_evidence.sum()), float(self.stderr.double().pow(2).sum().sqrt())

    def per_observed_entry(self) -> Tensor:
        """``[B]`` log evidence per observed entry (nats per pixel), for cues with different masks."""
        return self.log_evidence / self.n_observed.clamp_min(1)

    def __repr__(self) -> str:
        total, err = self.total()
        stderr = f" ± {err:.3g}" if self.kind != "exact" else ""
        return f"Evidence({self.kind}, {self.method}, B={self.log_evidence.shape[0]}, sum={total:.6g}{stderr})"


def importance_sampling(log_weights: Tensor, n_observed: Tensor, *, method: str = "importance_sampling",
                        kind: str = "estimate") -> Evidence:
    """The importance-sampling estimate from ``log_weights [S, B]`` =
    ``log p(x_b, z_s | M) - log q(z_s | x_b)`` with ``z_s ~ q``: ``log (1/S) Σ_s exp(log_weights)``.

    The standard error is the delta method's, ``sd(w) / (√S · mean(w))`` with ``w`` the weights
    (computed stably in log space); it is itself estimated from the same draws and underestimates
    the error when the proposal misses mass (a heavy-tailed weight distribution: check the
    effective sample size ``(Σ w)² / Σ w²``).  By Jensen's inequality the expectation of the
    estimate lies below ``log p(x | M)``: pass ``kind="lower_bound"`` where that bias is material.
    """
    if log_weights.dim() != 2 or log_weights.shape[0] < 2:
        raise ValueError(f"log_weights must be [S, B] with S >= 2 draws, got {tuple(log_weights.shape)}")
    s = log_weights.shape[0]
    lse = torch.logsumexp(log_weights, 0)
    log_mean = lse - math.log(s)
    normalised = (log_weights - log_mean).exp()  # w_s / mean(w)
    stderr = normalised.std(0, unbiased=True) / math.sqrt(s)
    ess = (2 * lse - torch.logsumexp(2 * log_weights, 0)).exp()  # (Σ w)² / Σ w²
    return Evidence(log_evidence=log_mean, kind=kind, method=method, stderr=stderr, n_observed=n_observed,
                    num_samples=s, ess=ess)
