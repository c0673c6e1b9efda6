"""The base classes of ``varmem.memory``: a prior and a likelihood are enough for energy, model,
MAP and NUTS; a mixture prior adds weights over the items; Gaussian components add the EM step."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _toy import StoredItems

import varmem
from varmem.helpers import masked_normal
from varmem.memory import GaussianMixtureMemory, MixturePriorMemory


class GaussianMemory(StoredItems, varmem.PriorLikelihoodMemory):
    """z ~ N(mean of the items, s² I), x_d ~ N(z_d, σ²): only the five hooks of the contract."""

    config_fields = ("s", "sigma")

    def __init__(self, dim, s=0.5, sigma=0.3, **kw):
        super().__init__(dim, **kw)
        self.s, self.sigma = s, sigma

    def prior(self):
        return dist.Normal(self.items.mean(0), self.s).to_event(1)

    def likelihood(self, z, mask=None):
        return masked_normal(z, self.sigma, mask)


def _posterior(memory, cue, mask):
    """Closed form: per dim, observed (σ²μ + s²x)/(σ² + s²) with variance s²σ²/(s² + σ²); unobserved μ, s²."""
    mu, s2, n2 = memory.items.mean(0), memory.s**2, memory.sigma**2
    mean = torch.where(mask, (n2 * mu + s2 * cue) / (n2 + s2), mu)
    var = torch.where(mask, torch.full_like(cue, s2 * n2 / (s2 + n2)), torch.full_like(cue, s2))
    return mean, var


@pytest.fixture
def gaussian():
    return GaussianMemory(3).write(torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]]))


def test_the_contract_gives_energy_model_and_reads(gaussian):
    assert gaussian.methods == ("map", "nuts") and gaussian.default_method == "map"
    cue = torch.tensor([[1.0, -1.0, 3.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    z = torch.randn(2, 3)
    tr = pyro.poutine.trace(pyro.poutine.condition(gaussian.model, data={"z": z})).get_trace(cue, mask)
    tr.compute_log_prob()
    torch.testing.assert_close(gaussian.energy(z, cue, mask), -(tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"]))
    expected = dist.Normal(gaussian.items.mean(0), 0.5).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian.energy(z), -expected)  # without a cue: the prior's energy
    mean, _ = _posterior(gaussian, cue, mask)
    r = gaussian.retrieve(cue, mask)
    torch.testing.assert_close(r.pattern, mean, atol=1e-7, rtol=0)  # Gaussian: the mode is the mean
    assert r.trace.shape[1] == 2 and r.weights is None and r.index is None  # no items to weigh
    starts = gaussian.init_latent(cue, mask, "cue")
    torch.testing.assert_close(starts, torch.where(mask, cue, gaussian.items.mean(0)))


@pytest.mark.parametrize("sigma_model, passes", [(0.3, True), (1.5, False)])
def test_nuts_samples_the_closed_form_posterior(gaussian, sigma_model, passes):
    """Mean and variance of the draws against the closed form, within 5 Monte Carlo standard
    errors; negative control: a model with the wrong cue noise fails the same check."""
    cue = torch.tensor([[1.0, -1.0, 3.0]])
    mask = torch.tensor([[True, False, True]])
    mean, var = _posterior(gaussian, cue, mask)
    wrong = GaussianMemory(3, sigma=sigma_model).write(gaussian.items)
    r = wrong.retrieve(cue, mask, method="nuts", num_samples=800, warmup_steps=200, seed=1)
    ess = r.info["ess"]
    ok_mean = ((r.pattern - mean).abs() <= 5 * (var / ess).sqrt()).all()
    ok_var = ((r.variance - var).abs() <= 5 * var * (2 / ess).sqrt()).all()
    assert bool(ok_mean and ok_var) == passes


def test_mixture_prior_weights_are_the_streamed_responsibilities():
    items = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    kde = varmem.KernelDensityMemory(4, bandwidth=0.7, noise_scale=0.5, chunk_size=7).write(items)
    z = torch.randn(5, 4)
    generic_w, generic_i = MixturePriorMemory.item_weights(kde, z, True)
    streamed_w, streamed_i = kde.item_weights(z, True)
    by_hand = torch.softmax(-((z[:, None] - items) ** 2).sum(-1) / (2 * 0.7**2), -1)
    torch.testing.assert_close(generic_w, by_hand)
    torch.testing.assert_close(streamed_w, by_hand)
    assert torch.equal(generic_i, streamed_i)


@pytest.mark.parametrize("partial", [False, True])
def test_the_generic_em_step_is_the_optimised_one(partial):
    """GaussianMixtureMemory's reference step (dense, from the prior's components) against the
    kernel-density memory's streamed step and the nonparametric memory's isotropic step."""
    g = torch.Generator().manual_seed(1)
    items = torch.randn(20, 3, generator=g)
    kde = varmem.KernelDensityMemory(3, bandwidth=0.6, noise_scale=0.4, chunk_size=6).write(items)
    crp = varmem.NonparametricMemory(3, alpha=1.0, bandwidth=0.5, noise_scale=0.4, prior_scale=2.0).write(items)
    cue = torch.randn(4, 3, generator=g)
    mask = torch.rand(4, 3, generator=g) > 0.4 if partial else None
    mask = None if mask is None else mask | torch.tensor([True, False, False])  # something observed
    z = torch.randn(4, 3, generator=g)
    for memory in (kde, crp):
        ref = GaussianMixtureMemory.fixed_point_step(memory, z, cue, mask, energy=True, weights=True, index=True)
        fast = memory.fixed_point_step(z, cue, mask, energy=True, weights=True, index=True)
        torch.testing.assert_close(fast.state, ref.state)
        torch.testing.assert_close(fast.energy, ref.energy)
        torch.testing.assert_close(fast.energy, memory.energy(z, cue, mask))
        torch.testing.assert_close(fast.weights, ref.weights)
        assert torch.equal(fast.index, ref.index)


def test_the_em_step_needs_gaussian_components():
    class StudentTKernels(StoredItems, GaussianMixtureMemory):
        def prior(self):
            return varmem.Mixture(dist.Categorical(logits=torch.zeros(len(self))),
                                  dist.StudentT(3.0, self.items, 0.5).to_event(1))

        def likelihood(self, z, mask=None):
            return masked_normal(z, 0.3, mask)

    m = StudentTKernels(2).write(torch.eye(2))
    with pytest.raises(TypeError, match="components must be Gaussian.*StudentT"):
        m.retrieve(torch.ones(1, 2), method="fixed_point")
    assert m.retrieve(torch.ones(1, 2), method="map").index.item() in (0, 1)  # MAP and weights still work


def test_mixture_has_a_support_autodelta_and_nuts_can_transform():
    comp = dist.Normal(torch.eye(2), 0.5).to_event(1)
    mix = dist.Categorical(logits=torch.zeros(2))
    support = varmem.Mixture(mix, comp).support
    assert support.base_constraint is dist.constraints.real and support.reinterpreted_batch_ndims == 1
    torch.testing.assert_close(varmem.Mixture(mix, comp).log_prob(torch.zeros(2)),
                               dist.MixtureSameFamily(mix, comp).log_prob(torch.zeros(2)))
    with pytest.raises(NotImplementedError):  # negative control: torch's own support cannot be transformed
        torch.distributions.biject_to(dist.MixtureSameFamily(mix, comp).support)
    torch.distributions.biject_to(varmem.Mixture(mix, comp).support)


def test_prior_likelihood_memory_counts_its_hooks():
    """The contract is five methods: write, __len__, config, prior, likelihood (the guide's memory)."""
    abstract = set(varmem.PriorLikelihoodMemory.__abstractmethods__)
    assert abstract == {"write", "__len__", "config", "prior", "likelihood"}
    assert math.isclose(GaussianMemory(2).energy_scale, 1.0)
