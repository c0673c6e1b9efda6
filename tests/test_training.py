"""``varmem.fit`` and ``varmem.models.VAE`` against closed forms and independent computations.

Conjugate model used throughout: ``μ ~ N(0, τ²)``, ``x_i ~ N(μ, σ²)`` (``i < N``); the exact
posterior is ``N(m, v)`` with ``v = 1 / (1/τ² + N/σ²)`` and ``m = v Σ x_i / σ²``.
"""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.nn import PyroModule, PyroParam

import varmem
from varmem.models import VAE
from varmem.training import ELBOObjective, _Batches

TAU, SIGMA, N = 3.0, 1.5, 60



class Conjugate(PyroModule):
    def __init__(self, size: int = N) -> None:
        super().__init__()
        self.size = size

    def forward(self, x):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), TAU))
        with pyro.plate("data", self.size):
            pyro.sample("x", dist.Normal(mu, SIGMA), obs=x)


class NormalGuide(PyroModule):
    """``q(μ) = N(loc, scale²)``, a hand-written guide."""

    def __init__(self, loc: float, scale: float) -> None:
        super().__init__()
        self.loc = PyroParam(torch.tensor(loc))
        self.scale = PyroParam(torch.tensor(scale), constraint=dist.constraints.positive)

    def forward(self, x):
        pyro.sample("mu", dist.Normal(self.loc, self.scale))


def data(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 + SIGMA * torch.randn(N, generator=g)


def exact_posterior(x: torch.Tensor) -> tuple[float, float]:
    v = 1.0 / (1.0 / TAU**2 + len(x) / SIGMA**2)
    return v * x.sum().item() / SIGMA**2, math.sqrt(v)


def guide_moments(result) -> tuple[float, float]:
    p = result.params
    scale = torch.nn.functional.softplus(p["guide.scales.mu_unconstrained"])
    return p["guide.locs.mu_unconstrained"].item(), scale.item()


# --- the fit reaches the analytic posterior ---------------------------------------------------
@pytest.mark.parametrize("batch_size, jit", [(None, False), (15, True)])
def test_fit_reaches_the_conjugate_posterior(batch_size, jit):
    x = data()
    m, s = exact_posterior(x)
    model = Conjugate()
    # eager: 3 vectorised particles through a user-given ELBO; traced: 3 particles in a Python loop
    elbo = None if jit else Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    result = varmem.fit(
        model, AutoNormal(model), x, batch_size=batch_size, num_steps=500, lr=0.03, num_particles=3, elbo=elbo,
        jit=jit, progress=False, optimizer_kwargs={"betas": (0.9, 0.99)},
    )
    loc, scale = guide_moments(result)
    # tolerances: a few stationary-noise widths of Adam at lr 0.03 (the posterior sd is 0.19)
    assert abs(loc - m) < 0.25 * s
    assert abs(scale / s - 1) < 0.25
    assert result.steps == 500 and result.losses.shape == (500,) and not result.stopped_early
    assert len(pyro.get_param_store()) == 0  # module-local parameters: the global store is untouched


def test_negative_control_a_short_fit_is_not_at_the_posterior():
    x = data()
    m, s = exact_posterior(x)
    model = Conjugate()
    result = varmem.fit(model, AutoNormal(model), x, num_steps=20, lr=0.02, progress=False)
    loc, scale = guide_moments(result)
    assert not (abs(loc - m) < 0.25 * s and abs(scale / s - 1) < 0.25)


# --- minibatch scaling is unbiased --------------------------------------------------------------
def _delta_objective(x: torch.Tensor, mu: float, size: int) -> ELBOObjective:
    model = Conjugate(size)
    guide = AutoDelta(model)
    with pyro.settings.context(module_local_params=True):
        objective = ELBOObjective(model, guide, Trace_ELBO(), num_data=N)
        objective(x)  # create the guide's parameters
        guide.mu = torch.tensor(mu)  # a point mass at μ: the ELBO is deterministic
    return objective


def test_minibatch_losses_and_gradients_average_to_the_full_data_ones():
    x, mu, B = data(), 1.3, 12
    objective = _delta_objective(x, mu, N)
    with pyro.settings.context(module_local_params=True):
        full = objective(x)
        (g_full,) = torch.autograd.grad(full, list(objective.parameters()))
        # independent computation: -[log N(μ; 0, τ²) + Σ_i log N(x_i; μ, σ²)]
        expected = -(dist.Normal(0.0, TAU).log_prob(torch.tensor(mu)) + dist.Normal(mu, SIGMA).log_prob(x).sum())
        torch.testing.assert_close(full.detach(), expected, rtol=1e-12, atol=1e-10)

        perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
        losses, grads = [], []
        for idx in perm.reshape(N // B, B):  # one epoch: every row in exactly one minibatch
            loss = objective(x[idx], subsample=idx)
            losses.append(loss.detach())
            grads.append(torch.autograd.grad(loss, list(objective.parameters()))[0])
            # each minibatch loss is -[log p(μ) + (N/B) Σ_{i in batch} log p(x_i | μ)]
            log_lik = dist.Normal(mu, SIGMA).log_prob(x[idx]).sum()
            hand = -(dist.Normal(0.0, TAU).log_prob(torch.tensor(mu)) + N / B * log_lik)
            torch.testing.assert_close(loss.detach(), hand, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(torch.stack(losses).mean(), full.detach(), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(torch.stack(grads).mean(0), g_full, rtol=1e-10, atol=1e-10)
        # negative control: a single minibatch is not the full-data loss
        assert not torch.allclose(losses[0], full.detach(), rtol=1e-3)


def test_stochastic_minibatch_elbo_is_unbiased():
    """With a Normal guide the minibatch loss is random in z and in the batch; its mean matches
    the full-data loss within 4 standard errors (and an unscaled minibatch loss does not)."""
    x, B = data(), 12
    with pyro.settings.context(module_local_params=True):
        model = Conjugate()
        objective = ELBOObjective(model, NormalGuide(1.9, 0.3), Trace_ELBO(), num_data=N)
        gen = torch.Generator().manual_seed(0)
        full = torch.stack([objective(x).detach() for _ in range(400)])
        mini, unscaled = [], []
        for _ in range(400):
            idx = torch.randperm(N, generator=gen)[:B]
            mini.append(objective(x[idx], subsample=idx).detach())
            unscaled.append(ELBOObjective(Conjugate(B), NormalGuide(1.9, 0.3), Trace_ELBO())(x[idx]).detach())
    mini, unscaled = torch.stack(mini), torch.stack(unscaled)
    se = (full.var() / len(full) + mini.var() / len(mini)).sqrt()
    assert abs(mini.mean() - full.mean()) < 4 * se
    assert abs(unscaled.mean() - full.mean()) > 20 * se  # negative control


def test_plate_must_be_declared_with_the_full_size():
    x = data()
    model = Conjugate(size=10)  # wrong: the plate has the minibatch size
    with pytest.raises(ValueError, match="full data size"):
        varmem.fit(model, AutoNormal(model), x[:40], batch_size=10, num_steps=2, progress=False)

    class NoPlate(PyroModule):
        def forward(self, x):
            mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), TAU))
            pyro.sample("x", dist.Normal(mu, SIGMA).expand(x.shape).to_event(1), obs=x)

    model = NoPlate()
    with pytest.raises(ValueError, match="no pyro.plate named 'data'"):
        varmem.fit(model, AutoNormal(model), x, batch_size=10, num_steps=2, progress=False)


def test_batches_shard_an_epoch_without_overlap():
    shards = [_Batches(103, 10, seed=4, rank=r, world=2, device=torch.device("cpu")) for r in range(2)]
    epochs = [torch.cat([b.next() for _ in range(b.per_epoch)]) for b in shards]
    assert [len(e) for e in epochs] == [50, 50]  # 51 rows per rank, 5 full batches each
    both = torch.cat(epochs)
    assert len(set(both.tolist())) == 100 and both.max() < 103  # disjoint, no repeats
    again = _Batches(103, 10, seed=4, rank=0, world=2, device=torch.device("cpu"))
    assert torch.equal(torch.cat([again.next() for _ in range(5)]), epochs[0])  # seeded
    assert not torch.equal(shards[0].next(), epochs[0][:10])  # the next epoch is a new permutation


# --- zero ELBO gradient at the exact posterior --------------------------------------------------
def _mean_gradient(guide: NormalGuide, x: torch.Tensor, repeats: int = 20, particles: int = 200):
    """Gradient of the loss in (loc, scale), averaged over ``repeats × particles`` draws; and the
    standard error of that mean from the spread over repeats."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with pyro.settings.context(module_local_params=True):
        objective = ELBOObjective(Conjugate(), guide, elbo)
        params = [guide.loc_unconstrained, guide.scale_unconstrained]
        grads = torch.stack([torch.stack(torch.autograd.grad(objective(x), params)) for _ in range(repeats)])
    return grads.mean(0), grads.std(0) / math.sqrt(repeats)


def test_elbo_gradient_vanishes_when_the_guide_is_the_exact_posterior():
    x = data()
    m, s = exact_posterior(x)
    mean, se = _mean_gradient(NormalGuide(m, s), x)
    assert (mean.abs() < 4 * se + 1e-8).all(), (mean, se)
    # negative control: a wrong guide (shifted by one posterior sd, 30% too wide) has a clear gradient
    mean_bad, se_bad = _mean_gradient(NormalGuide(m + s, 1.3 * s), x)
    assert (mean_bad.abs() > 10 * se_bad).all(), (mean_bad, se_bad)
    # and its sign points back toward the posterior: d loss / d loc > 0 when loc is too large
    assert mean_bad[0] > 0 and mean_bad[1] > 0


# --- early stopping, seeding, validation of arguments ------------------------------------------
def test_early_stopping_triggers_once_the_loss_is_flat():
    x = data()
    model = Conjugate()
    result = varmem.fit(model, AutoNormal(model), x, num_steps=5000, lr=0.05, patience=100, window=50, progress=False)
    assert result.stopped_early and result.steps < 5000
    assert result.losses.shape == (result.steps,)
    assert math.isfinite(result.best_loss)
    # negative control: without patience, the same fit runs all its steps
    model = Conjugate()
    full = varmem.fit(model, AutoNormal(model), x, num_steps=300, lr=0.05, progress=False)
    assert not full.stopped_early and full.steps == 300 and math.isnan(full.best_loss)


def test_early_stopping_does_not_trigger_while_the_loss_still_falls():
    x = data()
    model = Conjugate()
    # a tiny learning rate: the loss keeps decreasing by more than rel_tol per window
    result = varmem.fit(model, AutoNormal(model), x, num_steps=200, lr=1e-3, patience=60, window=20,
                        rel_tol=1e-4, progress=False, num_particles=2)
    assert not result.stopped_early and result.steps == 200
    assert result.losses[-20:].mean() < result.losses[:20].mean()


def test_fit_is_reproducible_with_a_seed():
    x = data()
    runs = []
    for seed in (5, 5, 6):
        model = Conjugate()
        runs.append(varmem.fit(model, AutoNormal(model), x, batch_size=20, num_steps=50, seed=seed, progress=False))
    assert torch.equal(runs[0].losses, runs[1].losses)
    assert all(torch.equal(runs[0].params[k], runs[1].params[k]) for k in runs[0].params)
    assert not torch.equal(runs[0].losses, runs[2].losses)


def test_jit_and_eager_compute_the_same_loss_and_gradient():
    x, idx = data(), torch.arange(10, 30)
    model = Conjugate()
    guide = AutoNormal(model)
    with pyro.settings.context(module_local_params=True):
        eager = ELBOObjective(model, guide, Trace_ELBO(), num_data=N)
        traced = ELBOObjective(model, guide, Trace_ELBO(), num_data=N, jit=True)
        eager(x[idx], subsample=idx)  # create the guide's parameters
        traced(x[idx], subsample=idx)  # compile (this call consumes random numbers)
        params = list(eager.parameters())
        out = []
        for objective in (eager, traced):
            pyro.set_rng_seed(11)  # the same Monte Carlo draw
            loss = objective(x[idx], subsample=idx)
            out.append((loss.detach(), torch.autograd.grad(loss, params)))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-10)
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the traced loss follows new data and new indices (they are inputs of the trace)
    pyro.set_rng_seed(12)
    other = traced(x[:20] + 1.0, subsample=torch.arange(20))
    pyro.set_rng_seed(12)
    torch.testing.assert_close(other.detach(), eager(x[:20] + 1.0, subsample=torch.arange(20)).detach())


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 61}, ValueError, "exceeds"),
        ({"patience": 0}, ValueError, "patience"),
        ({"rel_tol": -0.1}, ValueError, "rel_tol"),
        ({"log_every": 0}, ValueError, "log_every"),
        ({"elbo": "trace"}, TypeError, "elbo"),
    ],
)
def test_bad_arguments_are_named(options, error, match):
    model = Conjugate()
    with pytest.raises(error, match=match):
        varmem.fit(model, AutoNormal(model), data(), num_steps=options.pop("num_steps", 2), progress=False, **options)


def test_bad_data_and_parameterless_models_are_refused():
    model = Conjugate()
    with pytest.raises(TypeError, match="data"):
        varmem.fit(model, AutoNormal(model), [data(), "labels"], num_steps=2, progress=False)
    with pytest.raises(ValueError, match="same leading size"):
        varmem.fit(model, AutoNormal(model), (data(), torch.zeros(5)), batch_size=5, num_steps=2, progress=False)
    with pytest.raises(ValueError, match="same leading size"):
        varmem.fit(model, AutoNormal(model), (data(), torch.tensor(1.0)), batch_size=5, num_steps=2, progress=False)
    with pytest.raises(ValueError, match="needs data"):
        varmem.fit(model, AutoNormal(model), None, batch_size=5, num_steps=2, progress=False)
    with pytest.raises(ValueError, match="no trainable parameters"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pyro: "non-auxiliary vars in guide but not model"
        varmem.fit(model, model, data(), num_steps=2, progress=False)


# --- the VAE -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return varmem.datasets.load_digits(dtype=torch.get_default_dtype()).flat()[:256]


@pytest.mark.parametrize("likelihood", ["normal", "bernoulli"])
def test_vae_loss_is_the_beta_elbo_computed_by_hand(digits, likelihood):
    x, beta = digits[:8], 2.5
    vae = VAE(64, code_dim=3, hidden=(16,), likelihood=likelihood, beta=beta, noise_scale=0.3)
    with pyro.settings.context(module_local_params=True):
        objective = ELBOObjective(vae.model, vae.guide, Trace_ELBO())
        pyro.set_rng_seed(7)
        loss = objective(x)
        pyro.set_rng_seed(7)  # the guide runs first in Trace_ELBO: the same z
        z = pyro.poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    loc, scale = vae.encode(x)
    mean = vae.decode(z)
    if likelihood == "normal":
        log_lik = dist.Normal(mean, 0.3).log_prob(x).sum()
    else:
        p = mean.clamp(1e-6, 1 - 1e-6)
        log_lik = (x * p.log() + (1 - x) * (1 - p).log()).sum()
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum()
    log_q = dist.Normal(loc, scale).log_prob(z).sum()
    torch.testing.assert_close(loss, -(log_lik + beta * (log_prior - log_q)), rtol=1e-10, atol=1e-8)


def test_vae_trains_and_round_trips_through_its_config(digits, tmp_path):
    vae = VAE(64, code_dim=4, hidden=(32,), likelihood="bernoulli")
    before = vae.reconstruct(digits).detach()
    result = varmem.fit(vae.model, vae.guide, digits, batch_size=32, kwargs={"num_data": len(digits)},
                        num_steps=150, lr=1e-2, progress=False)
    assert result.losses[-20:].mean() < 0.8 * result.losses[:20].mean()
    err = ((vae.reconstruct(digits) - digits) ** 2).mean()
    assert err < ((before - digits) ** 2).mean()
    assert set(result.params) == {f"model_owner.{k}" for k in vae.state_dict()}  # shared coders counted once

    # a trained VAE goes through varmem.save / varmem.load (JSON config + safetensors, no pickle)
    twin = varmem.load(varmem.save(vae, tmp_path / "vae.safetensors"))
    assert type(twin) is VAE and twin.config() == json.loads(json.dumps(vae.config()))
    torch.testing.assert_close(twin.reconstruct(digits), vae.reconstruct(digits), rtol=0, atol=0)
    with pytest.raises(TypeError, match="registered module class"):
        varmem.save(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")


def test_vae_sites_plate_and_prior_sampling(digits):
    vae = VAE(64, code_dim=3, hidden=(8,))
    trace = pyro.poutine.trace(vae.model).get_trace(digits[:5], num_data=50)
    assert trace.nodes["z"]["value"].shape == (5, 3) and trace.nodes["x"]["is_observed"]
    assert trace.nodes["x"]["scale"] == 10.0  # N / B
    assert vae.model(num_data=4).shape == (4, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data_shape": 0}, "data_shape"),
        ({"data_shape": 4, "code_dim": 0}, "code_dim"),
        ({"data_shape": 4, "hidden": (8, -1)}, "hidden"),
        ({"data_shape": 4, "likelihood": "poisson"}, "likelihood"),
        ({"data_shape": 4, "beta": 0.0}, "beta"),
        ({"data_shape": 4, "architecture": "rnn"}, "architecture"),
    ],
)
def test_vae_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(**kwargs)


def test_vae_bad_input_shape():
    vae = VAE(4, code_dim=2, hidden=(3,))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        vae.model(torch.zeros(2, 5))


def test_traced_loss_reads_reassigned_buffers():
    """A memory's ``write`` replaces its buffers: the traced loss must use the new values."""

    class Shifted(PyroModule):
        def __init__(self):
            super().__init__()
            self.register_buffer("centre", torch.tensor(0.0))

        def forward(self, x):
            mu = pyro.sample("mu", dist.Normal(self.centre, TAU))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(mu, SIGMA), obs=x)

    x = data()
    model = Shifted()
    guide = NormalGuide(1.0, 0.5)
    with pyro.settings.context(module_local_params=True):
        eager = ELBOObjective(model, guide, Trace_ELBO())
        traced = ELBOObjective(model, guide, Trace_ELBO(), jit=True)
        traced(x)  # compile with centre = 0
        model.centre = torch.tensor(4.0)  # reassign the buffer (a new tensor object)
        values = []
        for objective in (eager, traced):
            pyro.set_rng_seed(3)
            values.append(objective(x).detach())
    torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=1e-10)
