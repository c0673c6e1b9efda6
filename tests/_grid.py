"""Numeric integration on grids for the mixture-prior memories' posterior tests (independent of
varmem: explicit sums over components and the trapezoid rule)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal


def mixture_log_joint(
    grid: Tensor, log_weights: Tensor, means: Tensor, scales: Tensor, x: Tensor, mask: Tensor | None, sigma: float
) -> Tensor:
    """``log Σ_j w_j N(z; μ_j, s_j² I) + Σ_d m_d log N(x_d; z_d, σ²)`` at grid points ``z [G, D]``.

    ``log_weights [J]``, ``means [J, D]``, ``scales [J]``; unobserved entries (``mask`` False) of
    ``x`` add nothing.
    """
    comp = torch.stack([Normal(means[j], scales[j]).log_prob(grid).sum(-1) for j in range(len(means))], -1)
    lik = Normal(grid, sigma).log_prob(x)
    if mask is not None:
        lik = lik * mask
    return (comp + log_weights).logsumexp(-1) + lik.sum(-1)


def moments_1d(log_joint: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(evidence, mean, variance)`` of the density ``∝ exp(log_joint)`` on the 1-D grid ``z``."""
    evidence = torch.trapezoid(log_joint.exp(), z)
    density = log_joint.exp() / evidence
    mean = torch.trapezoid(density * z, z)
    return evidence, mean, torch.trapezoid(density * (z - mean) ** 2, z)


def moments_2d(log_joint: Tensor, grid: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(evidence, mean [2], variance [2])`` on the product grid ``grid = g × g`` (``[G², 2]``)."""
    n = len(g)
    dens = log_joint.exp().reshape(n, n)
    evidence = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g)
    p = (dens / evidence).reshape(-1)

    def expect(f: Tensor) -> Tensor:
        return torch.trapezoid(torch.trapezoid((p * f).reshape(n, n), g, dim=1), g)

    mean = torch.stack([expect(grid[:, 0]), expect(grid[:, 1])])
    var = torch.stack([expect((grid[:, 0] - mean[0]) ** 2), expect((grid[:, 1] - mean[1]) ** 2)])
    return evidence, mean, var
