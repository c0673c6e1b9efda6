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
    data = varmem.to_inference_data(retrieval=result, memory=memory, args=(cue, mask))
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
