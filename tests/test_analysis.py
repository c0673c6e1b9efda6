"""``varmem.to_inference_data``: groups, shapes and values against independent computations.

Model: ``μ ~ N(0, τ²)``, ``x_i ~ N(μ, σ²)``; the log-likelihood of draw ``s`` and observation ``i``
must be ``Normal(μ_s, σ).log_prob(x_i)`` exactly.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule

import varmem
from varmem.analysis import _from_dict, arviz_major_version

TAU, SIGMA, N = 3.0, 1.5, 12



class Model(PyroModule):
    def forward(self, x):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), TAU))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, SIGMA), obs=x)


@pytest.fixture
def x():
    return 2.0 + SIGMA * torch.randn(N, generator=torch.Generator().manual_seed(3))


def exact_posterior(x):
    v = 1.0 / (1.0 / TAU**2 + len(x) / SIGMA**2)
    return v * x.sum().item() / SIGMA**2, math.sqrt(v)


def check_log_likelihood(data, x):
    """log_likelihood.x[c, s, i] == Normal(μ[c, s], σ).log_prob(x_i), computed independently."""
    mu = torch.as_tensor(data.posterior["mu"].values)
    expected = dist.Normal(mu[..., None], SIGMA).log_prob(x)
    np.testing.assert_allclose(data.log_likelihood["x"].values, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_mcmc_groups_shapes_and_log_likelihood(x):
    mcmc = MCMC(NUTS(Model()), num_samples=60, warmup_steps=40, disable_progbar=True)
    mcmc.run(x)
    data = varmem.to_inference_data(mcmc=mcmc)
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"} <= set(
        data.groups()
    )
    assert data.posterior["mu"].shape == (1, 60)
    assert data.log_likelihood["x"].shape == (1, 60, N)
    assert data.posterior_predictive["x"].shape == (1, 60, N)
    assert data.sample_stats["diverging"].shape == (1, 60)
    np.testing.assert_array_equal(data.posterior["mu"].values[0], mcmc.get_samples()["mu"].numpy())
    np.testing.assert_array_equal(data.observed_data["x"].values, x.numpy())
    check_log_likelihood(data, x)


def test_svi_guide_draws_predictive_and_prior(x):
    m, s = exact_posterior(x)
    model = Model()
    guide = AutoNormal(model)
    varmem.fit(model, guide, x, num_steps=300, lr=0.05, num_particles=2, progress=False)
    data = varmem.to_inference_data(model, (x,), guide=guide, num_samples=200, num_prior_samples=200, seed=1)
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "prior", "prior_predictive"} <= set(
        data.groups()
    )
    assert data.posterior["mu"].shape == (1, 200)  # no singleton plate dims (unlike Predictive)
    assert data.prior["mu"].shape == (1, 200) and data.prior_predictive["x"].shape == (1, 200, N)
    check_log_likelihood(data, x)

    mu = data.posterior["mu"].values.ravel()
    assert abs(mu.mean() - m) < 4 * s / math.sqrt(200) + 0.1 * s  # guide ≈ exact posterior
    # posterior predictive: x_new ~ N(μ, σ²), μ ~ posterior -> variance σ² + s²
    pp_var = data.posterior_predictive["x"].values.var()
    assert abs(pp_var / (SIGMA**2 + s**2) - 1) < 0.1
    # prior predictive: variance τ² + σ² (negative control: it is far from the posterior predictive's)
    prior_var = data.prior_predictive["x"].values.var()
    assert abs(prior_var / (TAU**2 + SIGMA**2) - 1) < 0.3
    assert prior_var > 2 * pp_var
    # reproducible with a seed, and the global RNG is left alone
    state = torch.get_rng_state()
    again = varmem.to_inference_data(model, (x,), guide=guide, num_samples=200, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(again.posterior["mu"].values, data.posterior["mu"].values)


def test_samples_dict_and_flags(x):
    draws = {"mu": torch.linspace(1.0, 3.0, 7)}
    data = varmem.to_inference_data(Model(), (x,), samples=draws, posterior_predictive=False)
    assert "posterior_predictive" not in data.groups()
    np.testing.assert_array_equal(data.posterior["mu"].values, draws["mu"].numpy()[None])
    check_log_likelihood(data, x)


@pytest.fixture
def memory():
    items = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    return varmem.KernelDensityMemory(dim=3, bandwidth=0.4, noise_scale=0.6).write(items)


def test_exact_retrieval_gives_the_posterior_over_items(memory):
    cue = memory.items[[1, 4]] + 0.3
    result = memory.retrieve(cue, method="exact")
    data = varmem.to_inference_data(retrieval=result, num_samples=4000, seed=0)
    np.testing.assert_allclose(data.item_posterior["prob"].values, result.weights.numpy(), rtol=0, atol=0)
    assert data.item_posterior["prob"].dims == ("query", "item")
    np.testing.assert_array_equal(data.item_posterior["index"].values, result.index.numpy())
    recalled = data.posterior["recalled"]
    assert recalled.dims == ("chain", "draw", "query") and recalled.shape == (1, 4000, 2)
    freq = np.stack([(recalled.values[0] == i).mean(0) for i in range(6)], -1)  # [query, item]
    p = result.weights.numpy()
    se = np.sqrt(p * (1 - p) / 4000)
    assert (np.abs(freq - p) <= 4 * se + 1e-3).all()  # draws follow p(i | x)
    assert np.abs(freq - 1 / 6).max() > 0.2  # negative control: not uniform


def test_nuts_retrieval_per_draw_item_probabilities_and_cue_log_likelihood(memory):
    cue = memory.items[[0, 3]] + 0.2
    mask = torch.tensor([[True, True, False], [True, False, True]])
    result = memory.retrieve(cue, mask, method="nuts", num_samples=40, warmup_steps=30, seed=0)
    data = varmem.to_inference_data(retrieval=result, memory=memory, data=(cue, mask))
    z = data.posterior["z"]
    assert z.dims == ("chain", "draw", "query", "z_dim") and z.shape == (1, 40, 2, 3)
    np.testing.assert_array_equal(z.values[0], result.samples.numpy())
    # p(i | z_s, M) = softmax_i(-‖z_s - ξ_i‖² / 2s²), computed here by hand
    zs = result.samples
    by_hand = torch.softmax(-((zs[..., None, :] - memory.items) ** 2).sum(-1) / (2 * 0.4**2), -1)
    np.testing.assert_allclose(data.posterior["item_prob"].values[0], by_hand.numpy(), rtol=1e-9, atol=1e-12)
    assert data.posterior["item_prob"].dims == ("chain", "draw", "query", "item")
    # log p(x_obs | z_s): masked entries contribute nothing
    ll = (dist.Normal(zs, 0.6).log_prob(cue) * mask).sum(-1)
    np.testing.assert_allclose(data.log_likelihood["x"].values[0], ll.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(data.item_posterior["prob"].values, result.weights.numpy())
    # the averaged per-draw probabilities are the retrieval's weights
    np.testing.assert_allclose(data.posterior["item_prob"].values[0].mean(0), result.weights.numpy(), rtol=1e-9)


def test_bad_arguments(x, memory):
    mcmc_like = SimpleNamespace()
    with pytest.raises(ValueError, match="at most one"):
        varmem.to_inference_data(Model(), (x,), mcmc=mcmc_like, samples={"mu": torch.zeros(3)})
    with pytest.raises(TypeError, match="Retrieval"):
        varmem.to_inference_data(retrieval={"weights": torch.ones(1, 2)})
    with pytest.raises(ValueError, match="needs the model"):
        varmem.to_inference_data(guide=AutoNormal(Model()))
    with pytest.raises(ValueError, match="num_samples"):
        varmem.to_inference_data(Model(), (x,), samples={"mu": torch.zeros(3)}, num_samples=0)


# --- the ArviZ 0.x / 1.x shim ------------------------------------------------------------------
def test_installed_arviz_is_handled():
    import arviz

    major = arviz_major_version()
    assert major == int(arviz.__version__.split(".")[0])
    groups = {"posterior": {"a": np.zeros((1, 4, 2))}, "observed_data": {"y": np.ones(2)}, "prior": {}}
    extra = {"item_posterior": xr.Dataset({"prob": (("query", "item"), np.full((2, 3), 1 / 3))})}
    out = _from_dict(arviz, groups, extra, None, {"a": ["query"], "y": ["query"]})
    assert out["posterior"]["a"].dims == ("chain", "draw", "query")
    assert out["observed_data"]["y"].dims == ("query",)
    assert out["item_posterior"]["prob"].shape == (2, 3)
    assert "prior" not in (out.groups() if hasattr(out, "groups") else out.children)  # empty groups dropped


def test_shim_uses_the_nested_form_on_arviz_1():
    calls = []

    def from_dict(data, *, coords=None, dims=None):  # the arviz_base signature: one nested dict
        calls.append((data, coords, dims))
        return xr.DataTree.from_dict({g: xr.Dataset({k: (tuple(f"{k}_{i}" for i in range(v.ndim)), v)
                                                      for k, v in d.items()}) for g, d in data.items()})

    fake = SimpleNamespace(__version__="1.3.0", from_dict=from_dict)
    extra = {"item_posterior": xr.Dataset({"prob": (("query", "item"), np.ones((2, 3)))})}
    tree = _from_dict(fake, {"posterior": {"a": np.zeros((1, 4))}, "prior": {}}, extra, {"q": [0]}, {"a": []})
    (data, coords, dims), = calls
    assert list(data) == ["posterior"] and coords == {"q": [0]} and dims == {"a": []}
    assert isinstance(tree, xr.DataTree)
    assert tree["item_posterior"]["prob"].shape == (2, 3)
    assert tree["posterior"]["a"].shape == (1, 4)


def test_shim_uses_keyword_groups_on_arviz_0():
    calls = {}

    class FakeData:
        def add_groups(self, groups):
            calls["extra"] = groups

    def from_dict(posterior=None, *, observed_data=None, coords=None, dims=None):
        calls["args"] = (posterior, observed_data, coords, dims)
        return FakeData()

    fake = SimpleNamespace(__version__="0.23.4", from_dict=from_dict)
    extra = {"item_posterior": xr.Dataset()}
    out = _from_dict(fake, {"posterior": {"a": 1}, "observed_data": {"y": 2}}, extra, None, None)
    assert isinstance(out, FakeData)
    assert calls["args"] == ({"a": 1}, {"y": 2}, None, None)
    assert calls["extra"] is extra


# --- arguments, sites and seeds -------------------------------------------------------------------
def scaled_model(x, *, scale):
    """μ ~ N(0, τ²), x_i ~ N(μ, (σ·scale)²), μ² reported as a deterministic site, plus a factor
    (neither an observation nor a latent).  ``scale`` is keyword-only: a call that drops the
    keyword arguments fails."""
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), TAU))
    pyro.deterministic("mu_sq", mu**2)
    pyro.factor("penalty", -0.5 * mu**2)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, SIGMA * scale), obs=x)


def centred_guide(x, *, scale):
    """A guide that reads its arguments: μ ~ N(mean(x), (0.1·scale)²), with a plate inside."""
    with pyro.plate("unused", 2):
        pass
    pyro.sample("mu", dist.Normal(x.mean(), 0.1 * scale))


def test_guide_draws_use_the_args_and_kwargs_and_skip_plates(x):
    data = varmem.to_inference_data(scaled_model, (x,), {"scale": 3.0}, guide=centred_guide, num_samples=400, seed=2)
    mu = data.posterior["mu"].values.ravel()
    assert set(data.posterior.data_vars) == {"mu", "mu_sq"}  # no plate, the deterministic site per draw
    assert abs(mu.mean() - x.mean().item()) < 5 * 0.3 / math.sqrt(400)
    assert abs(mu.std() / 0.3 - 1) < 0.15  # 0.1 · scale; negative control below
    np.testing.assert_allclose(data.posterior["mu_sq"].values, data.posterior["mu"].values ** 2, rtol=1e-12)
    expected = dist.Normal(torch.as_tensor(data.posterior["mu"].values)[..., None], SIGMA * 3.0).log_prob(x)
    np.testing.assert_allclose(data.log_likelihood["x"].values, expected.numpy(), rtol=1e-12, atol=1e-12)
    assert set(data.log_likelihood.data_vars) == {"x"} and set(data.observed_data.data_vars) == {"x"}
    assert set(data.posterior_predictive.data_vars) == {"x"}  # the factor is not an observation
    narrow = varmem.to_inference_data(scaled_model, (x,), {"scale": 1.0}, guide=centred_guide, num_samples=400)
    assert abs(narrow.posterior["mu"].values.std() / 0.1 - 1) < 0.15


def test_auxiliary_guide_sites_are_left_out():
    from pyro.infer.autoguide import AutoMultivariateNormal

    xs = torch.randn(N, generator=torch.Generator().manual_seed(1))
    guide = AutoMultivariateNormal(Model())
    data = varmem.to_inference_data(Model(), (xs,), guide=guide, num_samples=20)
    assert set(data.posterior.data_vars) == {"mu"} and data.posterior["mu"].shape == (1, 20)


def test_prior_groups_hold_latents_deterministic_sites_and_observations_only(x):
    data = varmem.to_inference_data(scaled_model, (x,), {"scale": 2.0}, num_prior_samples=300)
    assert set(data.prior.data_vars) == {"mu", "mu_sq"}
    assert set(data.prior_predictive.data_vars) == {"x"} and set(data.observed_data.data_vars) == {"x"}
    assert "posterior" not in data.groups() and "log_likelihood" not in data.groups()  # prior only: no draws
    np.testing.assert_allclose(data.prior["mu_sq"].values, data.prior["mu"].values ** 2, rtol=1e-12)
    var = data.prior_predictive["x"].values.var()
    assert abs(var / (TAU**2 + (2 * SIGMA) ** 2) - 1) < 0.25  # the kwargs reach the prior runs too
    assert "prior" not in varmem.to_inference_data(scaled_model, (x,), {"scale": 2.0},
                                                   samples={"mu": torch.zeros(3)}).groups()  # default: no prior


def test_a_single_draw_and_a_bare_argument(x):
    data = varmem.to_inference_data(Model(), x, samples={"mu": torch.tensor([1.25])})  # args not a tuple
    assert data.posterior["mu"].shape == (1, 1) and data.log_likelihood["x"].shape == (1, 1, N)
    check_log_likelihood(data, x)


class FakeMCMC:
    """What to_inference_data reads from a finished ``pyro.infer.MCMC``: the kernel's model, the
    run's arguments (optional attributes), grouped samples and diagnostics."""

    def __init__(self, samples, divergences=None, **run):
        divergences = {} if divergences is None else divergences
        self.kernel = SimpleNamespace(model=scaled_model if run else Model())
        self._samples, self._divergences = samples, divergences
        for k, v in run.items():
            setattr(self, k, v)

    def get_samples(self, group_by_chain=False):
        return self._samples

    def diagnostics(self):
        return {"divergences": self._divergences}


def test_mcmc_run_arguments_divergences_and_vector_sites(x):
    mu = torch.linspace(1.0, 3.0, 10).reshape(2, 5)
    fake = FakeMCMC({"mu": mu}, {"chain 0": [0, 4, 5, -1], "chain 1": [2]}, _args=(x,), _kwargs={"scale": 2.0})
    data = varmem.to_inference_data(mcmc=fake)
    div = data.sample_stats["diverging"].values
    assert div.dtype == bool and div.tolist() == [[True, False, False, False, True],
                                                  [False, False, True, False, False]]  # out-of-range ignored
    expected = dist.Normal(mu[..., None], SIGMA * 2.0).log_prob(x)  # the run's kwargs were used
    np.testing.assert_allclose(data.log_likelihood["x"].values, expected.numpy(), rtol=1e-12, atol=1e-12)
    one_chain = FakeMCMC({"mu": mu[:1]}, {"chain 1": [0]}, _args=(x,), _kwargs={"scale": 2.0})
    assert not varmem.to_inference_data(mcmc=one_chain).sample_stats["diverging"].values.any()
    # a run object without recorded arguments (a model that needs none) and a vector latent
    bare = FakeMCMC({"v": torch.zeros(1, 4, 2)})
    bare.kernel.model = lambda: pyro.sample("v", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    data = varmem.to_inference_data(mcmc=bare)
    assert data.posterior["v"].shape == (1, 4, 2) and data.sample_stats["diverging"].shape == (1, 4)


def test_seed_makes_draws_reproducible_and_leaves_the_global_rng_alone(memory):
    result = memory.retrieve(memory.items[[0, 2]] + 0.4, method="exact")
    state = torch.get_rng_state()
    a = varmem.to_inference_data(retrieval=result, num_samples=300, seed=11).posterior["recalled"].values
    assert torch.equal(state, torch.get_rng_state())
    torch.rand(5)  # another global state: a seeded call does not depend on it
    b = varmem.to_inference_data(retrieval=result, num_samples=300, seed=11).posterior["recalled"].values
    c = varmem.to_inference_data(retrieval=result, num_samples=300, seed=12).posterior["recalled"].values
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()  # negative control: another seed, other draws
    default = varmem.to_inference_data(retrieval=result).posterior["recalled"].values
    assert default.shape == (1, 500, 2)  # num_samples defaults to 500 ...
    np.testing.assert_array_equal(default, varmem.to_inference_data(retrieval=result, num_samples=500,
                                                                    seed=0).posterior["recalled"].values)  # seed 0
    # seed=None draws from (and advances) the global RNG
    pyro.set_rng_seed(4)
    before = torch.get_rng_state()
    d = varmem.to_inference_data(retrieval=result, num_samples=300, seed=None).posterior["recalled"].values
    assert not torch.equal(before, torch.get_rng_state())
    pyro.set_rng_seed(4)
    e = varmem.to_inference_data(retrieval=result, num_samples=300, seed=None).posterior["recalled"].values
    np.testing.assert_array_equal(d, e)


def test_retrieval_samples_site_names_dims_and_coords():
    from varmem.retrieval import Retrieval

    samples = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    r = Retrieval(pattern=samples.mean(0), method="nuts", samples=samples, weights=weights, weights_at="posterior",
                  index=weights.argmax(-1))
    data = varmem.to_inference_data(retrieval=r, coords={"query": ["a", "b"], "item": [10, 20], "other": [0]})
    assert data.posterior["z"].dims == ("chain", "draw", "query", "z_dim")  # default site name without a memory
    assert list(data.posterior["z"].coords["query"].values) == ["a", "b"]
    assert list(data.item_posterior["prob"].coords["item"].values) == [10, 20]
    assert list(data.item_posterior["prob"].coords["query"].values) == ["a", "b"]
    assert "other" not in data.item_posterior.coords
    named = varmem.to_inference_data(retrieval=r, memory=SimpleNamespace(latent_site="h"),
                                     dims={"prob": ["cue", "stored"]})
    assert named.posterior["h"].dims == ("chain", "draw", "query", "h_dim") and "z" not in named.posterior
    assert named.item_posterior["prob"].dims == ("cue", "stored")  # the caller's dims win


def test_per_draw_item_probabilities_beyond_the_default_weights_limit(memory):
    """S·B·N above WEIGHTS_LIMIT: the per-draw responsibilities are still computed (asked for)."""
    from varmem.helpers import WEIGHTS_LIMIT
    from varmem.retrieval import Retrieval

    samples = torch.randn(6000, 2, 3, generator=torch.Generator().manual_seed(1))
    assert 6000 * 2 * len(memory) > WEIGHTS_LIMIT
    r = Retrieval(pattern=samples.mean(0), method="nuts", samples=samples)
    data = varmem.to_inference_data(retrieval=r, memory=memory, num_samples=10)
    by_hand = torch.softmax(-((samples[..., None, :] - memory.items) ** 2).sum(-1) / (2 * 0.4**2), -1)
    np.testing.assert_allclose(data.posterior["item_prob"].values[0], by_hand.numpy(), rtol=1e-9, atol=1e-12)


def test_an_explicit_model_is_used_for_a_retrieval(memory):
    cue = memory.items[[1]] + 0.1
    result = memory.retrieve(cue, method="nuts", num_samples=5, warmup_steps=5, seed=0)
    data = varmem.to_inference_data(memory.model, (cue,), retrieval=result)  # model given, no memory
    ll = dist.Normal(result.samples, 0.6).log_prob(cue).sum(-1)
    np.testing.assert_allclose(data.log_likelihood["x"].values[0], ll.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_named_exactly(x):
    with pytest.raises(ValueError, match=r"^give at most one of mcmc=, guide=, samples=, retrieval=$"):
        varmem.to_inference_data(Model(), (x,), guide=AutoNormal(Model()), samples={"mu": torch.zeros(3)})
    with pytest.raises(TypeError, match=r"^retrieval must be a varmem.Retrieval, got dict$"):
        varmem.to_inference_data(retrieval={"weights": torch.ones(1, 2)})
    with pytest.raises(ValueError, match=r"^guide= needs the model \(and its data\) too$"):
        varmem.to_inference_data(guide=AutoNormal(Model()))
    with pytest.raises(ValueError, match=r"^num_samples must"):
        varmem.to_inference_data(Model(), (x,), samples={"mu": torch.zeros(3)}, num_samples=0)
    with pytest.raises(ValueError, match=r"^num_prior_samples must be an int >= 0"):
        varmem.to_inference_data(Model(), (x,), num_prior_samples=-1)


def test_shim_on_arviz_0_passes_coords_and_lets_other_warnings_through():
    import warnings

    calls = {}

    def from_dict(posterior=None, *, coords=None, dims=None):
        calls["coords"] = coords
        warnings.warn("default dims chain and draw will be added", UserWarning, stacklevel=2)
        warnings.warn("something else", RuntimeWarning, stacklevel=2)
        return SimpleNamespace()

    fake = SimpleNamespace(__version__="0.23.4", from_dict=from_dict)
    with pytest.warns(RuntimeWarning, match="something else") as record:
        _from_dict(fake, {"posterior": {"a": 1}}, {}, {"q": [0]}, None)
    assert calls["coords"] == {"q": [0]}
    assert not [w for w in record if issubclass(w.category, UserWarning)]  # the chain/draw notice is silenced


# --------------------------------------------------------------------------- memory conventions
def test_exact_read_exports_exact_draws_and_their_log_likelihood(memory):
    """An exact read has no samples: the export draws z from the closed-form posterior (the item, then
    its Gaussian); their mean is the posterior mean within Monte Carlo error, and the log-likelihood
    is log N(x | z_s, σ²) per cue, computed here by hand."""
    cue = memory.items[[1, 4]] + 0.3
    result = memory.retrieve(cue, method="exact")
    data = varmem.to_inference_data(retrieval=result, memory=memory, data=(cue,), num_samples=3000, seed=0)
    z = data.posterior["z"]
    assert z.dims == ("chain", "draw", "query", "z_dim") and z.shape == (1, 3000, 2, 3)
    sd = np.sqrt(result.variance.numpy() / 3000)
    assert (np.abs(z.values[0].mean(0) - result.pattern.numpy()) < 5 * sd).all()
    ll = dist.Normal(torch.as_tensor(z.values[0]), 0.6).log_prob(cue).sum(-1)
    assert data.log_likelihood["x"].dims == ("chain", "draw", "query")
    np.testing.assert_allclose(data.log_likelihood["x"].values[0], ll.numpy(), rtol=1e-10, atol=1e-10)
    # negative control: draws from the wrong cue's posterior miss its mean
    assert (np.abs(z.values[0].mean(0)[::-1] - result.pattern.numpy()) > 5 * sd).any()


def test_hidden_entries_are_nan_in_observed_and_predictive_data_and_absent_from_the_likelihood(memory):
    cue = memory.items[[0, 3]] + 0.2
    cue[0, 2] = 0.0  # a hidden entry, stored as 0 as a data loader would
    mask = torch.tensor([[True, True, False], [True, False, True]])
    result = memory.retrieve(cue, mask, method="exact")
    data = varmem.to_inference_data(retrieval=result, memory=memory, data=(cue, mask), num_samples=200, seed=1)
    observed = data.observed_data["x"]
    assert observed.dims == ("query", "x_dim")
    np.testing.assert_array_equal(np.isnan(observed.values), ~mask.numpy())
    np.testing.assert_array_equal(observed.values[mask.numpy()], cue[mask].numpy())
    np.testing.assert_array_equal(data.constant_data["observed"].values, mask.numpy())
    predictive = data.posterior_predictive["x"].values
    assert predictive.shape == (1, 200, 2, 3)
    np.testing.assert_array_equal(np.isnan(predictive[0]), np.broadcast_to(~mask.numpy(), (200, 2, 3)))
    z = torch.as_tensor(data.posterior["z"].values[0])
    by_hand = (dist.Normal(z, 0.6).log_prob(cue) * mask).sum(-1)  # observed entries only
    np.testing.assert_allclose(data.log_likelihood["x"].values[0], by_hand.numpy(), rtol=1e-10, atol=1e-10)


def test_every_path_names_a_memorys_dims_alike(memory):
    """MCMC on memory.model, a NUTS read and an exact read give the same dims (query, z_dim, x_dim)."""
    from pyro.infer import MCMC, NUTS

    cue = memory.items[[2]] + 0.1
    mcmc = MCMC(NUTS(memory.model), num_samples=5, warmup_steps=5, disable_progbar=True)
    pyro.set_rng_seed(0)
    with pytest.warns(varmem.MultimodalPosteriorWarning, match="one mode per stored item"):
        mcmc.run(cue)
    paths = {
        "mcmc": varmem.to_inference_data(mcmc=mcmc),
        "nuts": varmem.to_inference_data(retrieval=memory.retrieve(cue, method="nuts", num_samples=5,
                                                                   warmup_steps=5, seed=0), memory=memory, data=cue),
        "exact": varmem.to_inference_data(retrieval=memory.retrieve(cue), memory=memory, data=cue, num_samples=5),
    }
    for name, data in paths.items():
        assert data.posterior["z"].dims == ("chain", "draw", "query", "z_dim"), name
        assert data.observed_data["x"].dims == ("query", "x_dim"), name
        assert data.log_likelihood["x"].dims == ("chain", "draw", "query"), name


def test_data_is_the_argument_of_fit_and_args_its_deprecated_name(x):
    draws = {"mu": torch.tensor([1.0, 1.5])}
    new = varmem.to_inference_data(Model(), (x,), samples=draws)
    with pytest.warns(DeprecationWarning, match="pass data="):
        old = varmem.to_inference_data(Model(), args=(x,), samples=draws)
    np.testing.assert_array_equal(new.log_likelihood["x"].values, old.log_likelihood["x"].values)
    with pytest.raises(ValueError, match="not both"):
        varmem.to_inference_data(Model(), (x,), args=(x,), samples=draws)


def test_nuts_reads_export_their_chains_for_r_hat(memory):
    """A mode-split read's pooled draws are one chain (a mixture, not chains); its chains within
    each (cue, item) mode are in mode_chains, where ArviZ's R-hat is finite; a modes='none' read's
    chains are the posterior itself."""
    from varmem.analysis import _arviz

    az = _arviz()
    cue = memory.items[[1]] + 0.05
    split = memory.retrieve(cue, method="nuts", num_samples=40, warmup_steps=20, num_chains=4, seed=0)
    data = varmem.to_inference_data(retrieval=split, memory=memory, data=cue)
    chains = data.mode_chains["z"]
    assert chains.dims == ("chain", "draw", "mode", "z_dim") and chains.shape[:2] == (4, 10)
    np.testing.assert_array_equal(chains.values, split.info["chains"].numpy())
    pairs = np.stack([data.mode_chains["mode_query"].values, data.mode_chains["mode_item"].values], -1)
    np.testing.assert_array_equal(pairs, split.info["pairs"].numpy())
    r_hat = az.rhat(data.mode_chains)["z"].values
    assert np.isfinite(r_hat).all()
    assert data.posterior["z"].shape == (1, 40, 1, 3)  # pooled
    with pytest.warns(varmem.MultimodalPosteriorWarning):  # modes="none" is plain NUTS on memory.model
        plain = memory.retrieve(cue, method="nuts", num_samples=40, warmup_steps=20, num_chains=4, seed=0,
                                modes="none")
    data = varmem.to_inference_data(retrieval=plain, memory=memory, data=cue)
    assert data.posterior["z"].shape == (4, 10, 1, 3) and "mode_chains" not in data.groups()
    assert np.isfinite(az.rhat(data)["z"].values).all()


def test_exact_draws_of_a_masked_read_follow_the_masked_posterior(memory):
    """The exported exact draws come from p(z | x_obs): their mean on the hidden entries is the
    masked posterior's, not the full cue's (which would pull them to the hidden values)."""
    cue = memory.items[[2]] + 0.1
    cue[0, 1] = 5.0  # a hidden entry far from every item: an unmasked posterior would follow it
    mask = torch.tensor([[True, False, True]])
    result = memory.retrieve(cue, mask, method="exact")
    data = varmem.to_inference_data(retrieval=result, memory=memory, data=(cue, mask), num_samples=2000, seed=3)
    mean = data.posterior["z"].values[0].mean(0)
    sd = np.sqrt(result.variance.numpy() / 2000)
    assert (np.abs(mean - result.pattern.numpy()) < 5 * sd).all()
    assert mean[0, 1] < 2.0  # the hidden 5.0 did not enter
