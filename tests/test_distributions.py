"""KernelDensity against the mixture density written out, and its normalisation."""

import math

import pyro.distributions as dist
import pytest
import torch

from varmem.distributions import KernelDensity


def test_log_prob_equals_explicit_mixture():
    items, s = torch.randn(9, 3), 0.7
    z = torch.randn(4, 5, 3)
    explicit = torch.stack(
        [dist.Normal(items[i], s).log_prob(z).sum(-1) for i in range(9)], dim=-1
    ).logsumexp(-1) - math.log(9)
    torch.testing.assert_close(KernelDensity(items, s, chunk_size=4).log_prob(z), explicit)


def test_one_dimensional_density_integrates_to_one():
    items = torch.tensor([[-1.0], [0.3], [2.0]])
    grid = torch.linspace(-8, 10, 20001).unsqueeze(-1)
    density = KernelDensity(items, 0.4).log_prob(grid).exp()
    integral = torch.trapezoid(density, grid.squeeze(-1))
    torch.testing.assert_close(integral, torch.tensor(1.0), rtol=1e-8, atol=1e-8)


def test_sample_moments_match_mean_and_variance():
    items = torch.tensor([[0.0, 1.0], [2.0, -1.0], [4.0, 0.0]])
    d = KernelDensity(items, 0.5)
    x = d.sample(torch.Size([200_000]))
    assert x.shape == (200_000, 2)
    # tolerance: 5 standard errors of the sample mean / variance
    se_mean = (d.variance / 200_000).sqrt()
    assert ((x.mean(0) - d.mean).abs() < 5 * se_mean).all()
    torch.testing.assert_close(x.var(0), d.variance, rtol=0.02, atol=0.0)


def test_expand_under_a_plate_broadcasts_log_prob():
    d = KernelDensity(torch.randn(4, 2), 1.0).expand([3])
    z = torch.randn(3, 2)
    assert d.batch_shape == (3,) and d.log_prob(z).shape == (3,)


def test_weighted_kernel_density_matches_the_written_out_mixture():
    # p(z) = Σ π_i N(z; ξ_i, s² I): log_prob, mean, variance and sample frequencies vs direct formulas
    items = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
    pi = torch.tensor([0.6, 0.3, 0.1])
    d = KernelDensity(items, 0.7, log_weights=pi.log())
    z = torch.randn(5, 2)
    comps = torch.distributions.Normal(items, 0.7)
    expected = (comps.log_prob(z.unsqueeze(-2)).sum(-1) + pi.log()).logsumexp(-1)
    torch.testing.assert_close(d.log_prob(z), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.mean, pi @ items)
    torch.testing.assert_close(d.variance, pi @ (items - pi @ items) ** 2 + 0.49)
    samples = d.sample((20000,))
    nearest = torch.cdist(samples, items).argmin(-1)
    freq = torch.bincount(nearest, minlength=3) / 20000.0
    assert (freq - pi).abs().max() < 0.02  # components are ≥ 3 s apart: nearest centre ≈ component
    with pytest.raises(ValueError, match="log_weights must have shape"):
        KernelDensity(items, 0.7, log_weights=pi[:2].log())
