"""Plain Pyro on a memory's multimodal posterior: what works and what does not.

The posterior of a kernel-density memory is a Gaussian mixture with one mode per stored item.
``memory.mixture_model`` (the item as a discrete site) sums out to ``memory.model``; with it, the
recipe of guides/bayesian_reading.md -- ``TraceEnum_ELBO`` with a guide that is a mixture over the
items, then NUTS within each item -- recovers the exact mode weights p(i | x).  Negative controls:
one NUTS chain on ``memory.model`` started in the wrong mode, and an ``AutoNormal`` guide, fail the
same check; both are warned about (``MultimodalPosteriorWarning``, once per memory).

Tolerances: a fraction of n independent draws is within 4 binomial standard errors
sqrt(p(1 - p) / n) (plus 1/n) of p; the SVI weights within 0.02 of the exact ones (the optimum of
this guide family is the exact posterior; 0.02 covers the optimiser's noise: measured 0.004).
"""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from _toy import StoredItems
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, TraceEnum_ELBO, config_enumerate, infer_discrete
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from pyro.ops.indexing import Vindex
from pyro.optim import Adam, ClippedAdam

import varmem
from varmem.distributions import Mixture, SelectedComponent, select_component
from varmem.memory import MultimodalPosteriorWarning

ITEMS = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
CUES = torch.tensor([[0.95, 0.95], [0.3, 0.1]])  # p(i | x) = (0.683, 0.317) and (1 - 4.5e-6, 4.5e-6)


def _memory():
    return varmem.KernelDensityMemory(2, bandwidth=0.1, noise_scale=0.5).write(ITEMS)


def nearest_fractions(samples, items):
    near = ((samples[:, :, None, :] - items) ** 2).sum(-1).argmin(-1)
    return torch.stack([(near == i).to(samples.dtype).mean(0) for i in range(items.shape[0])], -1)


def weights_recovered(samples, weights, extra=0.0):
    """The fraction of draws nearest each item within 4 binomial standard errors (+ 1/n + extra)."""
    n = samples.shape[0]
    se = (weights * (1 - weights) / n).sqrt()
    return bool(((nearest_fractions(samples, ITEMS) - weights).abs() <= 4 * se + 1.0 / n + extra).all())


def _log_joint(model, cue, data):
    tr = poutine.trace(poutine.condition(model, data=data)).get_trace(cue)
    tr.compute_log_prob()
    return sum(node["log_prob"] for node in tr.nodes.values() if node["type"] == "sample")


# --- the mixture model ---------------------------------------------------------------------------
def _student_t_memory():
    class StudentTKernels(StoredItems, varmem.MixturePriorMemory):
        def prior(self):
            n = len(self)
            return Mixture(dist.Categorical(logits=torch.zeros(n)), dist.StudentT(3.0, self.items, 0.3).to_event(1))

        def likelihood(self, z, mask=None):
            return varmem.memory.masked_normal(z, 0.5, mask)

    return StudentTKernels(2).write(torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 2.0]]))


@pytest.mark.parametrize("make", [
    _memory,
    lambda: varmem.NonparametricMemory(2, alpha=1.0, bandwidth=0.3, noise_scale=0.5).write(ITEMS),
    _student_t_memory,
], ids=["kernel_density", "nonparametric", "student_t"])
def test_summing_out_the_item_site_gives_the_model_density(make):
    memory = make()
    z = torch.tensor([[0.3, 0.2], [1.5, 2.5]])
    J = memory.mixture_size()
    per_item = torch.stack([_log_joint(memory.mixture_model, CUES, {"item": torch.full((2,), i), "z": z})
                            for i in range(J)])
    torch.testing.assert_close(per_item.logsumexp(0), _log_joint(memory.model, CUES, {"z": z}))
    torch.testing.assert_close(per_item.logsumexp(0), -memory.energy(z, CUES))
    # and the density is not the same for a wrong item set (the check can fail)
    assert not torch.allclose(per_item[0], _log_joint(memory.model, CUES, {"z": z}))


def test_a_memory_without_a_mixture_prior_has_no_item_site():
    class OneGaussian(varmem.PriorLikelihoodMemory):
        def write(self, items):
            return self

        def __len__(self):
            return 1

        def config(self):
            return {"dim": self.dim}

        def prior(self):
            return dist.Normal(torch.zeros(2), 1.0).to_event(1)

        def likelihood(self, z, mask=None):
            return varmem.memory.masked_normal(z, 0.5, mask)

    memory = OneGaussian(2)
    assert memory.mixture_size() is None
    with pytest.raises(TypeError, match="not a mixture"):
        memory.mixture_model(CUES)


def test_selected_components_are_the_components_they_name():
    comps = dist.StudentT(3.0, torch.randn(4, 2), torch.rand(4, 2) + 0.5).to_event(1)
    index = torch.tensor([[0], [1], [3]])  # as Pyro enumerates an item: [J, 1]
    z = torch.randn(5, 2)
    by_hand = torch.stack([dist.StudentT(3.0, comps.base_dist.loc[i], comps.base_dist.scale[i]).to_event(1).log_prob(z)
                           for i in (0, 1, 3)])
    rebuilt, gathered = select_component(comps, index), SelectedComponent(comps, index)
    assert isinstance(rebuilt.base_dist, dist.StudentT) and rebuilt.batch_shape == gathered.batch_shape == (3, 1)
    torch.testing.assert_close(rebuilt.log_prob(z), by_hand)
    torch.testing.assert_close(gathered.log_prob(z), by_hand)
    assert not torch.allclose(gathered.log_prob(z)[0], by_hand[1])
    draws = SelectedComponent(comps, torch.tensor([3])).sample((4000,)).squeeze(1)
    assert (draws.median(0).values - comps.base_dist.loc[3]).abs().max() < 0.1  # from component 3
    gaussian = select_component(dist.Normal(torch.randn(4, 2), 0.3).to_event(1), torch.tensor([2, 0]))
    assert isinstance(gaussian.base_dist, dist.Normal) and gaussian.batch_shape == (2,)
    full = dist.MultivariateNormal(torch.randn(4, 2), scale_tril=torch.eye(2).expand(4, 2, 2))
    assert isinstance(select_component(full, torch.tensor([1])), SelectedComponent)  # the generic fallback
    torch.testing.assert_close(select_component(full, torch.tensor([1])).log_prob(z[:1]), full.log_prob(z[:1])[1:2])


def test_infer_discrete_gives_the_responsibilities_at_a_state():
    memory = _memory()
    z = torch.tensor([[0.9, 0.9], [1.1, 1.05]])
    model = config_enumerate(poutine.condition(memory.mixture_model, data={"z": z}))
    tr = poutine.trace(infer_discrete(model, first_available_dim=-2, temperature=0)).get_trace(CUES)
    _, index = memory.item_weights(z)
    assert torch.equal(tr.nodes["item"]["value"], index) and index.tolist() == [0, 1]


# --- plain Pyro: the recipe that works, and what does not ----------------------------------------------
def mixture_guide(memory):
    """A guide that is a mixture over the items: q(i) q(z | i), q(z | i) a diagonal Gaussian per
    (cue, item); the item is enumerated (TraceEnum_ELBO sums it out exactly)."""
    items = memory.prior().component_distribution.mean  # [N, L]
    N, L = items.shape

    def guide(cue, mask=None):
        B = cue.shape[0]
        logits = pyro.param("item_logits", torch.zeros(B, N))
        loc = pyro.param("loc", items.expand(B, N, L).clone())
        scale = pyro.param("scale", torch.full((B, N, L), 0.1), constraint=dist.constraints.positive)
        with pyro.plate("cues", B, dim=-1):
            i = pyro.sample("item", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            b = torch.arange(B)
            pyro.sample("z", dist.Normal(Vindex(loc)[b, i], Vindex(scale)[b, i]).to_event(1))

    return guide


def test_the_plain_pyro_recipe_recovers_the_exact_mode_weights_and_one_wrong_chain_does_not():
    memory = _memory()
    exact = memory.posterior(CUES, return_weights=True).weights
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultimodalPosteriorWarning)  # the recipe is not warned about
        # 1. the mode weights: TraceEnum_ELBO with a mixture guide on memory.mixture_model
        guide = mixture_guide(memory)
        elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=4, vectorize_particles=True)
        svi = SVI(memory.mixture_model, guide, ClippedAdam({"lr": 0.05, "lrd": 0.99}), elbo)
        for _ in range(400):
            svi.step(CUES)
        q = pyro.param("item_logits").detach().softmax(-1)
        assert (q - exact).abs().max() <= 0.02
        guide_draws = Predictive(guide, num_samples=400, return_sites=["z"])(CUES)["z"]
        assert weights_recovered(guide_draws, exact, extra=0.02)
        # 2. NUTS within each item (the item site conditioned), pooled with the weights q
        n = 200
        labels = dist.Categorical(probs=q).sample((n,))  # [n, B]
        pooled = torch.empty(n, *CUES.shape)
        for i in range(len(memory)):
            conditioned = pyro.condition(memory.mixture_model, data={"item": torch.full((2,), i)})
            mcmc = MCMC(NUTS(conditioned), num_samples=n, warmup_steps=100, disable_progbar=True)
            mcmc.run(CUES)
            draws = mcmc.get_samples()["z"]
            pooled[labels == i] = draws[:, :][labels == i]
        assert weights_recovered(pooled, exact, extra=0.02)

    # negative control: one NUTS chain on memory.model, started in item 1's mode, fails the same check
    start = ITEMS[1].expand(2, 2).clone()
    with pytest.warns(MultimodalPosteriorWarning, match="NUTS"):
        mcmc = MCMC(NUTS(memory.model, init_strategy=init_to_value(values={"z": start})), num_samples=n,
                    warmup_steps=100, disable_progbar=True)
        mcmc.run(CUES)
    plain = mcmc.get_samples()["z"]
    assert nearest_fractions(plain, ITEMS)[0, 1] == 1.0
    assert not weights_recovered(plain, exact, extra=0.02)


def test_a_unimodal_guide_fails_the_check_and_is_warned_about_once():
    memory = _memory()
    exact = memory.posterior(CUES, return_weights=True).weights
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(memory.model)
    with pytest.warns(MultimodalPosteriorWarning, match="AutoNormal"):
        svi = SVI(memory.model, guide, Adam({"lr": 0.05}), Trace_ELBO())
        svi.step(CUES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultimodalPosteriorWarning)  # once per memory
        for _ in range(300):
            svi.step(CUES)
    draws = Predictive(guide, num_samples=400, return_sites=["z"])(CUES)["z"]
    assert not weights_recovered(draws, exact, extra=0.02)


def test_the_warning_is_for_one_mode_inference_on_a_multi_item_model_only():
    memory = _memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultimodalPosteriorWarning)
        poutine.trace(memory.model).get_trace(CUES)  # tracing, MAP, sampling the prior: fine
        AutoDelta(memory.model)(CUES)
        memory.model()
        memory.retrieve(CUES, method="nuts", num_samples=4, warmup_steps=2, seed=0)  # mode-split: fine
        one = varmem.KernelDensityMemory(2, bandwidth=0.1, noise_scale=0.5).write(ITEMS[:1])
        MCMC(NUTS(one.model), num_samples=2, warmup_steps=2, disable_progbar=True).run(CUES)  # unimodal
    with pytest.warns(MultimodalPosteriorWarning):
        MCMC(NUTS(memory.model), num_samples=2, warmup_steps=2, disable_progbar=True).run(CUES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultimodalPosteriorWarning)  # once per memory
        MCMC(NUTS(memory.model), num_samples=2, warmup_steps=2, disable_progbar=True).run(CUES)
    with pytest.warns(MultimodalPosteriorWarning):  # another memory warns again
        MCMC(NUTS(_memory().model), num_samples=2, warmup_steps=2, disable_progbar=True).run(CUES)
