"""Sparse probability maps for Hopfield retrieval: sparsemax and 1.5-entmax (exact, sort-based).

All three "separation" maps used by kernelised / sparse Hopfield models are gradients of a convex
conjugate ``Ψ*(z) = max_{p ∈ Δ} ⟨p, z⟩ - Ω(p)`` over the probability simplex ``Δ``:

===============  =======================================  ==================================
name             regulariser ``Ω(p)`` (0 at the vertices)  map ``p = ∇Ψ*(z)``
===============  =======================================  ==================================
``softmax``      ``Σ_j p_j log p_j``                       ``exp(z_j) / Σ_k exp(z_k)``
``entmax15``     ``(Σ_j p_j^{3/2} - 1) / 0.75``            ``[z_j/2 - τ]_+²``, ``Σ_j p_j = 1``
``sparsemax``    ``½ (Σ_j p_j² - 1)``                      ``[z_j - τ]_+``, ``Σ_j p_j = 1``
===============  =======================================  ==================================

(1.5-entmax is the Tsallis-α map with α = 3/2, ``Ω = (Σ p^α - 1)/(α(α-1))``; Peters, Niculae &
Martins 2019.  Sparsemax: Martins & Astudillo 2016.)  Because ``Ω`` vanishes at the vertices,
``Ψ*(z) → max_j z_j`` as the logits are scaled up, like ``logsumexp``.

The threshold ``τ`` is found exactly by sorting the logits once (``O(n log n)`` per row, fully
vectorised over all leading dimensions).  Both maps are wrapped in autograd functions whose
backward pass uses the closed-form Jacobians

* sparsemax: ``J = diag(s) - s sᵀ / |S|`` (``s`` the support indicator);
* 1.5-entmax: ``J = diag(g) - g gᵀ / Σ g`` with ``g = √p``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["sparsemax", "entmax15", "SEPARATIONS", "separation_map", "separation_conjugate", "canonical_separation"]

SEPARATIONS: tuple[str, ...] = ("softmax", "entmax15", "sparsemax")
_ALIASES = {"1.5-entmax": "entmax15", "entmax": "entmax15", "entmax-1.5": "entmax15"}


def canonical_separation(name: str) -> str:
    """``"softmax"``, ``"entmax15"`` (alias ``"1.5-entmax"``) or ``"sparsemax"``; else ``ValueError``."""
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in SEPARATIONS:
        raise ValueError(f"unknown separation {name!r}; choose from {list(SEPARATIONS)} (or '1.5-entmax')")
    return key


def _ranks(z: Tensor) -> Tensor:
    """``[1, 2, ..., n]`` shaped to broadcast along the last dim of ``z``."""
    n = z.shape[-1]
    return torch.arange(1, n + 1, dtype=z.dtype, device=z.device)


def _sparsemax_forward(z: Tensor) -> Tensor:
    """Sparsemax along the last dim: ``argmin_{p ∈ Δ} ‖p - z‖²``."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = _ranks(z)
    cs = zs.cumsum(-1) - 1
    support = (k * zs > cs).sum(-1, keepdim=True)  # |S| >= 1 always (the top entry)
    tau = cs.gather(-1, support - 1) / support.to(z.dtype)
    return (z - tau).clamp_min(0)


def _entmax15_forward(z: Tensor) -> Tensor:
    """1.5-entmax along the last dim: ``p = [z/2 - τ]_+²`` with ``Σ p = 1``.

    For a support of the ``k`` largest entries ``t_1..t_k`` of ``t = z/2``, ``Σ_j (t_j - τ)² = 1``
    gives ``τ_k = mean_k - sqrt((1 - k·var_k)/k)``; the support is the largest ``k`` with
    ``τ_k ≤ t_k`` (Peters et al. 2019, Alg. 2).
    """
    t = z / 2
    ts, _ = torch.sort(t, dim=-1, descending=True)
    k = _ranks(z)
    mean = ts.cumsum(-1) / k
    mean_sq = (ts * ts).cumsum(-1) / k
    var = (mean_sq - mean * mean).clamp_min(0)
    delta = ((1 - k * var) / k).clamp_min(0)
    tau = mean - delta.sqrt()
    support = (tau <= ts).sum(-1, keepdim=True).clamp_min(1)
    tau_star = tau.gather(-1, support - 1)
    return (t - tau_star).clamp_min(0).square()


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        p = _sparsemax_forward(z)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        s = (p > 0).to(grad.dtype)
        mean = (grad * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)
        return s * (grad - mean)


class _Entmax15(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        p = _entmax15_forward(z)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        g = p.sqrt()
        mean = (grad * g).sum(-1, keepdim=True) / g.sum(-1, keepdim=True)
        return g * (grad - mean)


def _along(fn: Callable[[Tensor], Tensor], z: Tensor, dim: int) -> Tensor:
    if not torch.is_tensor(z) or not z.is_floating_point():
        raise TypeError(f"logits must be a floating tensor, got {type(z).__name__}")
    if z.dim() == 0 or z.shape[dim] == 0:
        raise ValueError(f"logits must have a non-empty dimension {dim}, got shape {tuple(z.shape)}")
    if torch.isnan(z).any() or torch.isposinf(z).any():
        raise ValueError("logits contain NaN or +inf")
    return fn(z.movedim(dim, -1)).movedim(-1, dim)


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Euclidean projection of ``z`` onto the simplex along ``dim`` (exact; ``-inf`` entries get 0).

    Example:
        >>> sparsemax(torch.tensor([1.0, 0.5, -1.0]))
        tensor([0.7500, 0.2500, 0.0000])
    """
    return _along(_Sparsemax.apply, z, dim)


def entmax15(z: Tensor, dim: int = -1) -> Tensor:
    """1.5-entmax of ``z`` along ``dim`` (exact; between softmax and sparsemax in sparsity).

    Example:
        >>> entmax15(torch.tensor([2.0, 0.0, -2.0]))
        tensor([1., 0., 0.])
    """
    return _along(_Entmax15.apply, z, dim)


def separation_map(name: str) -> Callable[[Tensor], Tensor]:
    """The map ``z ↦ p`` (along the last dim) for ``name`` in :data:`SEPARATIONS`."""
    name = canonical_separation(name)
    if name == "softmax":
        return lambda z: torch.softmax(z, dim=-1)
    return entmax15 if name == "entmax15" else sparsemax


def separation_conjugate(z: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """``(Ψ*(z), p)`` along the last dim: the conjugate value ``⟨p, z⟩ - Ω(p)`` and ``p = ∇Ψ*(z)``.

    ``Ψ*`` is convex and its gradient is ``p`` (Danskin), so ``-Ψ*(β·similarities)/β`` is the
    log-sum-exp term of a Hopfield energy with softmax replaced by ``name``.
    """
    name = canonical_separation(name)
    if name == "softmax":
        return torch.logsumexp(z, dim=-1), torch.softmax(z, dim=-1)
    p = separation_map(name)(z)
    zp = torch.where(p > 0, z, torch.zeros((), dtype=z.dtype, device=z.device))  # 0·(-inf) → 0
    if name == "sparsemax":
        omega = 0.5 * ((p * p).sum(-1) - 1)
    else:
        omega = (p.pow(1.5).sum(-1) - 1) / 0.75
    return (p * zp).sum(-1) - omega, p
