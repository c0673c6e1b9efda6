"""KernelDensityMemory: every engine against independent computations.

References used below:
* numeric integration on a dense grid (1-D and 2-D) of prior × likelihood, written out with
  ``torch.distributions.Normal`` pdfs, for the posterior weights, mean, variance, normaliser;
* the posterior mode found on the grid and polished with SciPy's bounded optimiser;
* ``torch.autograd.grad`` of the energy for the fast update;
* minus the log-density of the Pyro trace (``poutine.trace``) for the energy.
"""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from _grid import mixture_log_joint, moments_1d, moments_2d
from scipy.optimize import minimize
from torch.distributions import Normal

import varmem

ITEMS_1D = [[-1.0], [0.5], [2.0]]
S, SIGMA = 0.6, 0.5


def _memory(items, s=S, sigma=SIGMA):
    return varmem.KernelDensityMemory(len(items[0]), bandwidth=s, noise_scale=sigma).write(torch.tensor(items))


def _grid_log_joint(grid, items, x, mask, s, sigma):
    """log p(z) + log p(x | z) on grid points ``[G, D]`` (explicit sums, no varmem code)."""
    items = torch.tensor(items)
    n = len(items)
    return mixture_log_joint(grid, torch.full((n,), -math.log(n)), items, torch.full((n,), s), x, mask, sigma)


def _grid_1d(lo=-6, hi=8, n=40001):
    return torch.linspace(lo, hi, n).unsqueeze(-1)


def _grid_2d(lo=-4, hi=5, n=701):
    g = torch.linspace(lo, hi, n)
    return torch.cartesian_prod(g, g), g


@pytest.mark.parametrize("x", [0.3, -2.0, 1.4])
def test_exact_posterior_matches_numeric_integration_1d(x):
    memory = _memory(ITEMS_1D)
    post = memory.posterior(torch.tensor([[x]]), None)
    grid = _grid_1d()
    log_joint = _grid_log_joint(grid, ITEMS_1D, torch.tensor([x]), None, S, SIGMA)
    evidence, mean, var = moments_1d(log_joint, grid.squeeze(-1))
    density = log_joint.exp() / evidence
    torch.testing.assert_close(post.log_evidence, evidence.log().reshape(1), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(post.mean, mean.reshape(1, 1), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(post.variance, var.reshape(1, 1), rtol=1e-6, atol=1e-7)
    # the posterior log-density is normalised and equals the grid's
    torch.testing.assert_close(post.log_prob(grid.unsqueeze(-2)).squeeze(-1), density.log(), rtol=1e-6, atol=1e-6)
    # p(i | x) by Bayes' rule written out: p(x | i) = N(x; xi_i, s^2 + sigma^2)
    lik_i = torch.tensor([Normal(it[0], math.sqrt(S**2 + SIGMA**2)).log_prob(torch.tensor(x)) for it in ITEMS_1D])
    torch.testing.assert_close(post.weights, lik_i.softmax(-1).unsqueeze(0))


def test_exact_posterior_with_mask_matches_numeric_integration_2d():
    items = [[-1.0, 1.0], [0.5, -0.5], [1.5, 2.0], [0.2, 0.1]]
    memory = _memory(items)
    x = torch.tensor([[0.4, 123.0], [0.9, -0.7]])  # second dim of cue 0 unobserved (junk value)
    mask = torch.tensor([[True, False], [True, True]])
    post = memory.posterior(*memory.prepare_cue(x, mask))
    grid, g = _grid_2d()
    for b in range(2):
        log_joint = _grid_log_joint(grid, items, memory.prepare_cue(x, mask)[0][b], mask[b], S, SIGMA)
        evidence, mean, var = moments_2d(log_joint, grid, g)
        torch.testing.assert_close(post.log_evidence[b], evidence.log(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(post.mean[b], mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(post.variance[b], var, rtol=1e-3, atol=1e-4)


def test_exact_retrieval_record_and_posterior_samples():
    memory = _memory([[-1.0, 1.0], [0.5, -0.5], [1.5, 2.0]])
    cue = torch.tensor([[0.0, 0.0], [1.2, 1.9]])
    r = memory.retrieve(cue, method="exact")
    assert r.method == "exact" and r.steps == 0 and r.converged is None and r.trace is None  # closed form
    assert r.weights.shape == (2, 3) and torch.allclose(r.weights.sum(-1), torch.ones(2))
    assert r.weights_at == "posterior"
    assert torch.equal(r.index, r.weights.argmax(-1))
    samples = r.posterior.sample(100_000, generator=torch.Generator(device=cue.device).manual_seed(1))
    assert samples.shape == (100_000, 2, 2)
    se = (r.variance / 100_000).sqrt()
    assert ((samples.mean(0) - r.pattern).abs() < 5 * se).all()
    torch.testing.assert_close(samples.var(0), r.variance, rtol=0.03, atol=0.0)


def _grid_mode(items, x, mask, s, sigma, grid):
    """Posterior mode: grid arg-max polished by SciPy (an independent optimiser)."""
    log_joint = _grid_log_joint(grid, items, x, mask, s, sigma)
    start = grid[log_joint.argmax()].cpu().double().numpy()

    def f(z):
        zt = torch.as_tensor(z, dtype=torch.float64, device=grid.device).unsqueeze(0)
        return -_grid_log_joint(zt, items, x, mask, s, sigma).item()

    res = minimize(f, start, method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-14, "maxiter": 20000})
    return torch.as_tensor(res.x, dtype=grid.dtype, device=grid.device)


@pytest.mark.parametrize("method", ["fixed_point", "map"])
def test_iterative_methods_reach_the_exact_posterior_mode(method):
    # 1-D, cue between two items: the posterior is bimodal; started at the cue both methods
    # climb to the mode of the basin, which here is the global one
    memory = _memory(ITEMS_1D)
    for x in (0.3, 1.6):
        r = memory.retrieve(torch.tensor([[x]]), method=method)
        mode = _grid_mode(ITEMS_1D, torch.tensor([x]), None, S, SIGMA, _grid_1d(n=4001))
        torch.testing.assert_close(r.pattern[0], mode, rtol=0, atol=1e-6)
        assert bool(r.converged.all())
    # 2-D with a partial cue
    items = [[-1.0, 1.0], [0.5, -0.5], [1.5, 2.0]]
    memory = _memory(items)
    cue, mask = torch.tensor([[1.1, 0.0]]), torch.tensor([True, False])
    r = memory.retrieve(cue, mask, method=method)
    grid, _ = _grid_2d(n=201)
    mode = _grid_mode(items, cue[0], mask, S, SIGMA, grid)
    torch.testing.assert_close(r.pattern[0], mode, rtol=0, atol=1e-5)


def test_fixed_points_are_stationary_points_of_the_log_joint():
    memory = _memory([[-1.0, 1.0, 0.0], [0.5, -0.5, 1.0], [1.5, 2.0, -1.0]], s=0.8, sigma=0.4)
    cue = torch.randn(6, 3)
    mask = torch.rand(6, 3) > 0.3
    mask[:, 0] = True
    cue, mask = memory.prepare_cue(cue, mask)
    r = memory.retrieve(cue, mask, method="fixed_point", tol=1e-13, max_steps=5000)
    z = r.pattern.clone().requires_grad_()
    (grad,) = torch.autograd.grad(memory.energy(z, cue, mask).sum(), z)
    assert grad.abs().max() < 1e-9
    # the energy trace never increases (every step is an EM step)
    diffs = r.trace.diff(dim=0)
    assert (diffs <= 1e-12).all()


def test_fast_update_equals_the_autograd_preconditioned_gradient_step():
    """z_new = z - ∇E(z; x) / (1/s² + m/σ²): the mean-shift step is a gradient step on the energy
    with a per-coordinate step size, with ∇E from autograd."""
    memory = _memory([[-1.0, 1.0], [0.5, -0.5], [1.5, 2.0], [0.0, 0.3]], s=0.7, sigma=0.3)
    z = torch.randn(5, 2, requires_grad=True)
    cue = torch.randn(5, 2)
    for mask in (None, torch.tensor([[True, False]] * 5)):
        (grad,) = torch.autograd.grad(memory.energy(z, cue, mask).sum(), z)
        m = 1.0 if mask is None else mask.double()
        expected = z.detach() - grad / (1 / 0.7**2 + m / 0.3**2)
        step = memory.fixed_point_step(z.detach(), cue, mask)
        z_new, energy = step.state, step.energy
        torch.testing.assert_close(z_new, expected)
        torch.testing.assert_close(energy, memory.energy(z.detach(), cue, mask))


def test_l2_hopfield_update_is_the_mean_shift_step_without_cue_term():
    """With σ → ∞ the step is the modern-Hopfield L2 update softmax(-β/2 ‖z - ξ‖²) Ξ, β = 1/s²."""
    items = torch.randn(20, 4)
    memory = varmem.KernelDensityMemory(4, bandwidth=0.5, noise_scale=1e12).write(items)
    z = torch.randn(3, 4)
    beta = 1 / 0.5**2
    hopfield = (-0.5 * beta * torch.cdist(z, items) ** 2).softmax(-1) @ items
    z_new = memory.fixed_point_step(z, z, None).state
    torch.testing.assert_close(z_new, hopfield)


def test_energy_equals_minus_pyro_trace_log_density_and_explicit_formula():
    items = torch.tensor([[-1.0, 1.0], [0.5, -0.5], [1.5, 2.0]])
    memory = varmem.KernelDensityMemory(2, bandwidth=S, noise_scale=SIGMA).write(items)
    z, cue = torch.randn(4, 2), torch.randn(4, 2)
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    tr = poutine.trace(poutine.condition(memory.model, data={"z": z})).get_trace(cue, mask)
    tr.compute_log_prob()
    per_cue = tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"]
    torch.testing.assert_close(memory.energy(z, cue, mask), -per_cue)
    # explicit formula from the docstring, with every constant
    d2 = torch.cdist(z, items) ** 2
    prior = -(-d2 / (2 * S**2)).logsumexp(-1) + math.log(3) + math.log(2 * math.pi * S**2)
    lik = (mask * ((cue - z) ** 2 / (2 * SIGMA**2) + 0.5 * math.log(2 * math.pi * SIGMA**2))).sum(-1)
    torch.testing.assert_close(memory.energy(z, cue, mask), prior + lik)
    torch.testing.assert_close(memory.energy(z), prior)


def test_masking_goes_through_pyro_and_unobserved_entries_are_ignored():
    memory = _memory([[-1.0, 1.0], [0.5, -0.5]])
    mask = torch.tensor([[True, False]])
    a = memory.retrieve(torch.tensor([[0.3, float("nan")]]), mask, method="exact")
    b = memory.retrieve(torch.tensor([[0.3, 99.0]]), mask, method="exact")
    torch.testing.assert_close(a.pattern, b.pattern)
    tr = poutine.trace(memory.model).get_trace(torch.tensor([[0.3, 0.0]]), mask)
    site = tr.nodes["x"]
    assert isinstance(site["fn"].base_dist, pyro.distributions.MaskedDistribution)


def _nuts_matches_exact(r, exact):
    """Sample mean and variance within 4.5 Monte-Carlo standard errors of the exact posterior,
    standard errors from the effective sample size (variance SE from the exact fourth moment)."""
    ess = r.info["ess"]
    mean_se = (exact["var"] / ess).sqrt()
    var_se = ((exact["m4"] - exact["var"] ** 2) / ess).sqrt()
    ok_mean = ((r.pattern - exact["mean"]).abs() <= 4.5 * mean_se).all()
    ok_var = ((r.variance - exact["var"]).abs() <= 4.5 * var_se).all()
    return bool(ok_mean and ok_var)


def test_nuts_samples_match_the_exact_posterior_with_negative_control():
    items = [[-0.6], [0.4], [1.2]]
    s, sigma = 0.5, 0.6
    # the cue beyond the last item makes the check sensitive to the bandwidth: there the exact
    # posteriors for s and 2s differ by > 10 Monte-Carlo standard errors at ESS 1000
    cue = torch.tensor([[0.1], [2.0]])
    memory = _memory(items, s, sigma)
    exact_post = memory.posterior(cue, None)
    grid = _grid_1d(-8, 9, 20001)
    z = grid.squeeze(-1)
    m4 = []
    for b in range(2):
        lj = _grid_log_joint(grid, items, cue[b], None, s, sigma)
        dens = lj.exp() / torch.trapezoid(lj.exp(), z)
        m4.append(torch.trapezoid(dens * (z - exact_post.mean[b, 0]) ** 4, z))
    exact = {"mean": exact_post.mean, "var": exact_post.variance, "m4": torch.stack(m4).unsqueeze(-1)}

    r = memory.retrieve(cue, method="nuts", num_samples=1500, warmup_steps=400, seed=3)
    assert r.samples.shape == (1500, 2, 1)
    assert (r.info["ess"] > 200).all()
    assert _nuts_matches_exact(r, exact)
    # weights averaged over samples estimate p(i | x)
    torch.testing.assert_close(r.weights, exact_post.weights, rtol=0, atol=0.08)

    wrong = _memory(items, 2 * s, sigma)  # negative control: wrong bandwidth
    r_wrong = wrong.retrieve(cue, method="nuts", num_samples=1500, warmup_steps=400, seed=3)
    assert not _nuts_matches_exact(r_wrong, exact)


def test_nuts_seed_makes_runs_reproducible_and_leaves_global_rng_alone():
    memory = _memory(ITEMS_1D)
    cue = torch.tensor([[0.2]])
    state = torch.get_rng_state()
    a = memory.retrieve(cue, method="nuts", num_samples=30, warmup_steps=20, seed=5)
    b = memory.retrieve(cue, method="nuts", num_samples=30, warmup_steps=20, seed=5)
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(state, torch.get_rng_state())


def test_retrieval_of_stored_items_from_noisy_cues_in_high_dimension():
    g = torch.Generator(device=torch.get_default_device()).manual_seed(0)
    items = torch.rand(200, 64, generator=g)
    memory = varmem.KernelDensityMemory(64, bandwidth=0.1, noise_scale=0.3).write(items)
    cue = items[:20] + 0.3 * torch.randn(20, 64, generator=g)
    for method in ("exact", "fixed_point"):
        r = memory.retrieve(cue, method=method)
        assert torch.equal(r.index, torch.arange(20))
        assert ((r.pattern - items[:20]) ** 2).mean() < 0.3**2 / 10


def test_chunked_retrieval_equals_unchunked():
    items = torch.randn(500, 6)
    cue = torch.randn(7, 6)
    mask = torch.rand(7, 6) > 0.4
    mask[:, 0] = True
    a = varmem.KernelDensityMemory(6, bandwidth=0.8, noise_scale=0.5).write(items)
    b = varmem.KernelDensityMemory(6, bandwidth=0.8, noise_scale=0.5, chunk_size=33).write(items)
    for method in ("exact", "fixed_point"):
        ra, rb = a.retrieve(cue, mask, method=method), b.retrieve(cue, mask, method=method)
        torch.testing.assert_close(ra.pattern, rb.pattern)
        torch.testing.assert_close(ra.weights, rb.weights)


def test_map_with_adam_also_reaches_the_mode():
    memory = _memory(ITEMS_1D)
    cue = torch.tensor([[0.3]])
    fp = memory.retrieve(cue, method="fixed_point", tol=1e-12)
    r = memory.retrieve(cue, method="map", optimizer="adam", lr=0.02, max_steps=3000, tol=1e-12)
    torch.testing.assert_close(r.pattern, fp.pattern, rtol=0, atol=1e-4)
    assert r.trace.shape == (r.steps, 1) and r.trace[-1, 0] <= r.trace[0, 0]  # [T, B]: energy per evaluation


def test_model_prior_predictive_samples_via_pyro_predictive():
    items = torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    memory = varmem.KernelDensityMemory(2, bandwidth=0.1, noise_scale=0.2).write(items)
    samples = pyro.infer.Predictive(memory.model, num_samples=4000)(None, None, 1)
    z, x = samples["z"].reshape(-1, 2), samples["x"].reshape(-1, 2)
    nearest = torch.cdist(z, items).argmin(-1).double()
    assert abs(nearest.mean().item() - 0.5) < 5 * math.sqrt(0.25 / 4000)
    torch.testing.assert_close((x - z).std(0), torch.full((2,), 0.2), rtol=0.05, atol=0)


def _posterior_by_hand(items, x, mask, s, sigma):
    """The module docstring's closed form written out: ``p(i | x)`` by Bayes' rule with
    ``p(x_obs | i) = N(x_obs; ξ_i,obs, (s² + σ²) I)``, and per component ``a``, ``b``, ``√v``."""
    c = s**2 + sigma**2
    obs = mask.expand_as(x) if mask is not None else torch.ones_like(x, dtype=torch.bool)
    log_lik = (Normal(items, math.sqrt(c)).log_prob(x.unsqueeze(-2)) * obs.unsqueeze(-2)).sum(-1)  # [B, N]
    a = torch.where(obs, sigma**2 / c, 1.0)
    b = torch.where(obs, s**2 * x / c, 0.0)
    scale = torch.where(obs, math.sqrt(s**2 * sigma**2 / c), s)
    return log_lik.softmax(-1), a, b, scale


def test_masked_posterior_log_prob_is_the_closed_form_mixture():
    items = torch.tensor([[-1.0, 1.0, 0.0], [0.5, -0.5, 1.0], [1.5, 2.0, -1.0]])
    memory = varmem.KernelDensityMemory(3, bandwidth=S, noise_scale=SIGMA).write(items)
    x = torch.tensor([[0.4, 0.0, 1.1], [0.9, -0.7, 0.2]])
    mask = torch.tensor([[True, False, True], [False, True, False]])
    post = memory.posterior(x, mask)
    w, a, b, scale = _posterior_by_hand(items, x, mask, S, SIGMA)
    torch.testing.assert_close(post.weights, w, rtol=1e-12, atol=1e-12)
    z = torch.randn(5, 2, 3)
    # log Σ_i w_i N(z; a ξ_i + b, diag(scale²)), per cue
    comp = Normal(a.unsqueeze(-2) * items + b.unsqueeze(-2), scale.unsqueeze(-2)).log_prob(z.unsqueeze(-2)).sum(-1)
    expected = (comp + w.log()).logsumexp(-1)  # [5, 2]
    torch.testing.assert_close(post.log_prob(z), expected, rtol=1e-10, atol=1e-10)
    full = memory.posterior(x, None)
    assert (full.log_prob(z) - post.log_prob(z)).abs().max() > 0.1  # negative control: the mask matters


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_posterior_samples_follow_the_documented_two_stage_draw(chunk_size):
    """``sample``: the component by :func:`varmem.kernels.sample_items` (Gumbel-max, chunked as the
    posterior's chunk_size), then ``z = a ⊙ ξ_i + b + √v ⊙ ε``, both from the caller's generator: so
    the draws are reproduced exactly from the same generator, and the global RNG is not used."""
    from varmem.kernels import sample_items

    items = torch.randn(7, 3, generator=torch.Generator().manual_seed(4))
    memory = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.4, chunk_size=3).write(items)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    post = memory.posterior(x, mask, chunk_size=chunk_size)
    state = torch.get_rng_state()
    z = post.sample(50, generator=torch.Generator().manual_seed(9))
    assert torch.equal(state, torch.get_rng_state())
    _, a, b, scale = _posterior_by_hand(items, x, mask, 0.5, 0.4)
    g = torch.Generator().manual_seed(9)
    precision = mask.double() / (0.5**2 + 0.4**2)
    index = sample_items(x, items, precision, 50, generator=g, chunk_size=chunk_size or 3)
    eps = torch.randn(50, 2, 3, generator=g)
    torch.testing.assert_close(z, a * items[index] + b + scale * eps, rtol=1e-12, atol=1e-12)
    again = post.sample(50, generator=torch.Generator().manual_seed(9))
    other = post.sample(50, generator=torch.Generator().manual_seed(10))
    assert torch.equal(z, again) and not torch.equal(z, other)


def test_float32_memory_computes_in_float32_with_and_without_a_mask():
    items = torch.randn(12, 3, generator=torch.Generator().manual_seed(2))
    m32 = varmem.KernelDensityMemory(3, bandwidth=0.6, noise_scale=0.4, dtype=torch.float32).write(items.float())
    m64 = varmem.KernelDensityMemory(3, bandwidth=0.6, noise_scale=0.4, dtype=torch.float64).write(items)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[True, False, True]] * 2 + [[True, True, True]] * 2)
    for m in (mask, None):
        p32, p64 = m32.posterior(x.float(), m), m64.posterior(x, m)
        for name in ("mean", "variance", "log_evidence", "weights"):
            got, want = getattr(p32, name), getattr(p64, name)
            assert got.dtype == torch.float32, name
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
        assert p32.sample(3, generator=torch.Generator().manual_seed(0)).dtype == torch.float32
        s32 = m32.fixed_point_step(x.float(), x.float(), m)
        s64 = m64.fixed_point_step(x, x, m)
        assert s32.state.dtype == s32.energy.dtype == torch.float32
        torch.testing.assert_close(s32.state.double(), s64.state, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s32.energy.double(), s64.energy, rtol=1e-4, atol=1e-4)


def test_steps_posteriors_and_item_weights_give_what_is_asked_and_nothing_more():
    items = torch.randn(30, 2, generator=torch.Generator().manual_seed(6))
    memory = varmem.KernelDensityMemory(2, bandwidth=0.5, noise_scale=0.3).write(items)
    z, x = torch.randn(4, 2), torch.randn(4, 2)
    w = (-torch.cdist(z, items) ** 2 / (2 * 0.5**2)).softmax(-1)  # p(i | z) by hand
    step = memory.fixed_point_step(z, x, None)  # default: the state and the energy
    assert step.energy is not None and step.weights is None and step.index is None
    lean = memory.fixed_point_step(z, x, None, energy=False)
    assert lean.energy is None and torch.equal(lean.state, step.state)
    full = memory.fixed_point_step(z, x, None, weights=True, index=True)
    torch.testing.assert_close(full.weights, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(full.index, w.argmax(-1))
    weights, index = memory.item_weights(z, True)
    torch.testing.assert_close(weights, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(index, w.argmax(-1))
    none, index = memory.item_weights(z, False)
    assert none is None and torch.equal(index, w.argmax(-1))
    assert memory.posterior(x, return_weights=False).weights is None
    torch.testing.assert_close(memory.posterior(x).weights.sum(-1), torch.ones(4))  # small B·N: by default


def test_item_weights_default_follows_the_batch_times_items_limit():
    from varmem.helpers import WEIGHTS_LIMIT

    items = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(7))
    memory = varmem.KernelDensityMemory(2, bandwidth=0.5, noise_scale=0.3).write(items)
    z = torch.randn(4, 2)
    assert 4 * len(items) > WEIGHTS_LIMIT >= 2 * len(items)  # B·N over the limit (D·N is not)
    weights, index = memory.item_weights(z)
    assert weights is None and torch.equal(index, torch.cdist(z, items).argmin(-1))
    assert memory.item_weights(z[:3])[0] is not None
    assert memory.posterior(z).weights is None and memory.posterior(z[:3]).weights is not None  # the same rule
