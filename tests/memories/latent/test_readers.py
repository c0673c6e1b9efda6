"""Latent-space retrieval engines against closed forms and independent computations.

With a linear-Gaussian decoder ``p(x | z) = N(Wz + b, σ² I)`` and the kernel-density prior
``(1/N) Σ_i N(z; m_i, s² I)`` the posterior is a Gaussian mixture, written out below with
``torch.distributions.MultivariateNormal`` (no varmem code)::

    P = I/s² + W_oᵀ W_o / σ²,   μ_i = P⁻¹ (m_i / s² + W_oᵀ (x_o - b_o) / σ²),
    p(i | x) ∝ N(x_o; W_o m_i + b_o, σ² I + s² W_o W_oᵀ)          (o = observed rows)

Its mode is found with SciPy (Nelder-Mead from every component mean), its mean and variance by the
laws of total expectation / variance.
"""

import math

import pytest
import torch
from scipy.optimize import minimize
from torch.distributions import MultivariateNormal

import varmem
from varmem.memories.latent.learned_precision import precision_loss, precision_step

S, SIGMA = 0.5, 0.3
CODES = [[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]]
W = [[1.0, 0.2], [-0.3, 0.8], [0.5, 0.5]]
B = [0.1, -0.2, 0.05]
CUES = [[0.5, 0.3, 0.6], [0.9, -0.5, 0.2]]
MASKS = [[True, True, True], [True, False, True]]


def _linear_memory(s=S, w=W):
    memory = varmem.LatentMemory(3, 2, architecture="linear", bandwidth=s, noise_scale=SIGMA)
    with torch.no_grad():
        memory.decoder.stages[0].weight.copy_(torch.tensor(w))
        memory.decoder.stages[0].bias.copy_(torch.tensor(B))
    memory.append_rows("codes", torch.tensor(CODES))
    return memory


def _posterior(x, mask, s=S, w=W):
    """Closed-form mixture posterior of one cue: (weights [N], means [N, L], cov [L, L], mean, var)."""
    x, mask = torch.tensor(x), torch.tensor(mask)
    w, b, codes = torch.tensor(w)[mask], torch.tensor(B)[mask], torch.tensor(CODES)
    precision = torch.eye(2) / s**2 + w.T @ w / SIGMA**2
    cov = torch.linalg.inv(precision)
    means = (codes / s**2 + w.T @ (x[mask] - b) / SIGMA**2) @ cov.T
    evidence = MultivariateNormal(codes @ w.T + b, SIGMA**2 * torch.eye(len(b)) + s**2 * w @ w.T)
    weights = evidence.log_prob(x[mask]).softmax(-1)
    mean = weights @ means
    var = cov.diagonal() + (weights[:, None] * (means - mean) ** 2).sum(0)
    return weights, means, cov, mean, var


def _mode(x, mask):
    weights, means, cov, _, _ = _posterior(x, mask)
    comps = MultivariateNormal(means, cov)

    def f(z):
        return -(comps.log_prob(torch.tensor(z)).exp() @ weights).log().item()

    opts = {"xatol": 1e-11, "fatol": 1e-15, "maxiter": 10000}
    runs = [minimize(f, mu.numpy(), method="Nelder-Mead", options=opts) for mu in means]
    return torch.tensor(min(runs, key=lambda r: r.fun).x)


def _batch():
    memory = _linear_memory()
    return memory, *memory.prepare_cue(torch.tensor(CUES), torch.tensor(MASKS))


@pytest.mark.parametrize("method,options", [
    ("iterative", {}),                                   # BP-GMM to the mode, from the (untrained) encoder
    ("iterative", {"init": "prior_mean"}),               # the same from the mean of the stored codes
    ("hybrid", {}),                                      # encoder start (untrained encoder: any start)
    ("map", {}),
])
def test_iterative_and_hybrid_find_the_closed_form_mode(method, options):
    memory, cue, mask = _batch()
    result = memory.retrieve(cue, mask, method=method, **options)
    modes = torch.stack([_mode(x, m) for x, m in zip(CUES, MASKS, strict=True)])
    torch.testing.assert_close(result.code, modes, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.pattern, memory.decode(modes), rtol=0, atol=1e-5)


def test_predictive_coding_relaxation_reaches_the_mode_and_never_increases_the_free_energy():
    memory, cue, mask = _batch()
    # one decoder stage: ρ_z = 1/(1/s² + ‖W_o‖²/σ²) = 1/λ_max(P), the exact Hessian bound of each
    # cue's quadratic energy, so the stable Euler steps are α < 2; take α = 1 (the default)
    alpha = 1.0
    for method in ("iterative", "hybrid"):
        result = memory.retrieve(cue, mask, method=method, scheme="pc", lr=alpha, max_steps=3000, tol=1e-10)
        modes = torch.stack([_mode(x, m) for x, m in zip(CUES, MASKS, strict=True)])
        torch.testing.assert_close(result.code, modes, rtol=0, atol=1e-6)
        assert bool(result.converged.all())
        # with one decoder stage F is exactly the memory energy, and gradient steps below 1/L descend
        assert (result.trace[1:] <= result.trace[:-1] + 1e-12).all()
        torch.testing.assert_close(result.trace[-1], memory.energy(result.code, cue, mask))


def test_predictive_coding_step_too_large_for_plain_descent_backtracks_to_the_mode():
    """With α = 8 (α ρ_z λ_max = 8 > 2) plain Euler steps on the quadratic energy diverge; the relaxation
    undoes every step that raises F and halves that cue's step, so it still reaches the mode."""
    memory, cue, mask = _batch()
    lams = torch.tensor([torch.linalg.eigvalsh(torch.linalg.inv(_posterior(x, m)[2])).max().item()
                         for x, m in zip(CUES, MASKS, strict=True)])
    alpha = 8.0
    result = memory.retrieve(cue, mask, method="iterative", scheme="pc", lr=alpha, max_steps=3000, tol=1e-10)
    modes = torch.stack([_mode(x, m) for x, m in zip(CUES, MASKS, strict=True)])
    torch.testing.assert_close(result.code, modes, rtol=0, atol=1e-6)
    assert bool(result.converged.all())
    assert (result.trace[1:] <= result.trace[:-1] + 1e-12).all()
    # negative control: the same steps without the safeguard grow without bound
    z = memory.init_latent(cue, mask, "prior_mean").detach()
    for _ in range(200):
        z = z.detach().requires_grad_(True)
        # compute_energy: the unchecked energy (energy() refuses the diverging states, |z| > 1e6)
        (g,) = torch.autograd.grad(memory.compute_energy(z, cue, mask).sum(), z)
        z = z - alpha / lams[:, None] * g
    assert not bool(torch.isfinite(z).all()) or (z - modes).abs().max() > 1e3


def test_predictive_coding_update_is_local_the_data_reaches_the_top_one_stage_per_step():
    """Two-stage decoder: the hidden node starts at its feed-forward value (zero error), so the
    first step of the top node z sees only the memory prior, ``z_1 = z_0 - α ρ_z ∇E_prior(z_0)``
    (the pixel error has not yet propagated); the second step does feel the cue.  The per-node
    step ``ρ_z = 1 / (1/s² + ‖J_1‖²/τ²)`` uses the spectral norm of the first stage's Jacobian,
    computed here with ``torch.linalg.matrix_norm(ord=2)`` of the full Jacobian."""
    from varmem.memories.latent.iterative import pc_step_sizes, relax_pc

    torch.manual_seed(0)
    memory = varmem.LatentMemory(4, 2, architecture="dense", hidden=(3,), output="identity", bandwidth=0.7,
                                 noise_scale=0.5, dtype=torch.float64)
    memory.append_rows("codes", torch.randn(5, 2, dtype=torch.float64))
    cue = torch.randn(2, 4, dtype=torch.float64)
    z0 = torch.randn(2, 2, dtype=torch.float64)
    f1, f2 = memory.decoder_stages()
    gains = []
    for b in range(2):
        j1 = torch.autograd.functional.jacobian(f1, z0[b])                   # [3, 2]
        j2 = torch.autograd.functional.jacobian(f2, f1(z0[b]).detach())      # [4, 3]
        gains.append((torch.linalg.matrix_norm(j1, ord=2) ** 2, torch.linalg.matrix_norm(j2, ord=2) ** 2))
    rho_z = torch.stack([1 / (1 / 0.7**2 + g1 / 0.5**2) for g1, _ in gains])
    rho_h = torch.stack([1 / (1 / 0.5**2 + g2 / 0.5**2) for _, g2 in gains])
    with torch.no_grad():
        nodes = [z0, f1(z0)]
    ours = pc_step_sizes(memory, nodes, torch.ones_like(cue), 0.5**2)
    torch.testing.assert_close(ours[0], rho_z, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours[1], rho_h, rtol=1e-6, atol=0)

    z1, trace, steps, _ = relax_pc(memory, z0, cue, None, lr=0.1, max_steps=1, tol=0.0)
    prior_grad = torch.autograd.functional.jacobian(lambda z: memory.latent_energy(z).sum(), z0)
    torch.testing.assert_close(z1, z0 - 0.1 * rho_z[:, None] * prior_grad)
    torch.testing.assert_close(trace[0], memory.energy(z0, cue))  # zero hidden errors: F = E(z; x)
    assert steps == 1
    # the previous scheme, one shared scale per node type: ρ_z = s²
    z1_shared, *_ = relax_pc(memory, z0, cue, None, lr=0.1, max_steps=1, tol=0.0, step_sizes="shared")
    torch.testing.assert_close(z1_shared, z0 - 0.1 * 0.7**2 * prior_grad)
    z2, *_ = relax_pc(memory, z0, cue, None, lr=0.1, max_steps=2, tol=0.0)
    z2_other_cue, *_ = relax_pc(memory, z0, cue + 1.0, None, lr=0.1, max_steps=2, tol=0.0)
    assert (z2 - z2_other_cue).abs().max() > 1e-4


@pytest.mark.slow
def test_nuts_matches_the_closed_form_mean_and_variance_and_a_wrong_model_fails():
    memory, cue, mask = _batch()
    result = memory.retrieve(cue, mask, method="nuts", num_samples=800, warmup_steps=300, seed=1)
    ess = result.info["ess"]
    S_ = result.samples.shape[0]
    for b, (x, m) in enumerate(zip(CUES, MASKS, strict=True)):
        _, _, _, mean, var = _posterior(x, m)
        tol_mean = 5 * (var / ess[b]).sqrt()                        # 5 Monte Carlo standard errors
        tol_var = 5 * var * math.sqrt(2 / ess[b].min().item()) + 0.01  # Gaussian-approximate s.e. of a variance
        assert ((result.code[b] - mean).abs() <= tol_mean).all(), (result.code[b], mean, tol_mean)
        assert ((result.variance[b] - var).abs() <= tol_var).all(), (result.variance[b], var)
        # negative controls: the same check against a wrong bandwidth or a wrong decoder fails.  Each
        # wrong posterior differs from the true one by more than twice a tolerance (asserted first),
        # so a sampler within tolerance of the truth must be outside it for the wrong model.
        for kwargs in ({"s": S / 4}, {"w": [[0.5, 0.2], [-0.3, 0.8], [0.5, 1.0]]}):
            _, _, _, wrong_mean, wrong_var = _posterior(x, m, **kwargs)
            separated_mean = ((wrong_mean - mean).abs() > 2 * tol_mean).any()
            separated_var = ((wrong_var - var).abs() > 2 * tol_var).any()
            assert separated_mean or separated_var, ("control too close to the truth", kwargs)
            rejected = ((result.code[b] - wrong_mean).abs() > tol_mean).any() or (
                (result.variance[b] - wrong_var).abs() > tol_var).any()
            assert rejected, kwargs
    assert S_ == 800


def test_fixed_point_in_code_space_is_mean_shift_on_the_stored_codes():
    memory, cue, mask = _batch()
    result = memory.retrieve(cue, mask, method="fixed_point", max_steps=15, tol=0.0)
    z = memory.encode(cue)[0]
    codes = torch.tensor(CODES)
    for _ in range(15):  # the GMM update of Annabi et al., written out
        w = (-((z[:, None, :] - codes) ** 2).sum(-1) / (2 * S**2)).softmax(-1)
        z = w @ codes
    torch.testing.assert_close(result.code, z)
    torch.testing.assert_close(result.pattern, memory.decode(z))
    assert result.steps == 15


def test_fixed_point_with_code_noise_equals_the_kernel_density_memory_on_the_codes():
    memory = varmem.LatentMemory(3, 2, architecture="linear", bandwidth=S, noise_scale=SIGMA, code_noise=0.4)
    memory.append_rows("codes", torch.tensor(CODES))
    cue = torch.tensor(CUES)
    ours = memory.retrieve(cue, method="fixed_point", max_steps=50, tol=1e-12)
    kde = varmem.KernelDensityMemory(2, bandwidth=S, noise_scale=0.4).write(torch.tensor(CODES))
    theirs = kde.retrieve(memory.encode(cue)[0].detach(), method="fixed_point", max_steps=50, tol=1e-12)
    torch.testing.assert_close(ours.code, theirs.code)
    torch.testing.assert_close(ours.weights, theirs.weights)


def test_learned_precision_step_matches_a_written_out_softmax_and_improves_on_identity():
    # identity coders: code = data, so the corruption acts on the codes directly
    memory = varmem.LatentMemory(4, 4, architecture="linear", bandwidth=0.3, noise_scale=0.2)
    with torch.no_grad():
        memory.encoder.loc_head.weight.copy_(torch.eye(4))
        memory.encoder.loc_head.bias.zero_()
        memory.decoder.stages[0].weight.copy_(torch.eye(4))
        memory.decoder.stages[0].bias.zero_()
    items = torch.randn(30, 4)
    memory.write(items)
    torch.testing.assert_close(memory.codes, items)
    std = torch.tensor([1.5, 0.05, 0.05, 0.05])  # the corruption ruins dimension 0 only

    def noisy(x, generator):
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + std * eps, torch.ones_like(x, dtype=torch.bool)

    z = torch.randn(5, 4)
    p = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = (-0.5 * (p * (z[:, None] - items) ** 2).sum(-1)).softmax(-1)
    torch.testing.assert_close(precision_step(z, items, p), w @ items)

    fitted = memory.fit_precision(corruption=noisy, copies=10, epochs=20, lr=0.05, seed=0)
    assert fitted.final_loss < 0.5 * fitted.initial_loss
    assert memory.precision[0] < 0.2 * memory.precision[1:].min()  # the ruined direction is ignored
    # held-out cues of the same corruption: 10 GMM* steps beat 10 identity-precision steps
    gen = torch.Generator().manual_seed(123)
    cue, mask = noisy(items, gen)
    learned = memory.retrieve(cue, method="learned_precision")
    plain = memory.retrieve(cue, method="learned_precision", precision=torch.full((4,), 1 / 0.3**2))
    err = lambda r: (r.code - items).pow(2).mean().item()  # noqa: E731
    assert err(learned) < 0.5 * err(plain)
    assert (learned.index == torch.arange(30)).float().mean() > (plain.index == torch.arange(30)).float().mean()
    loss_id = precision_loss(cue, items, items, torch.full((4,), 1 / 0.3**2)).item()
    assert precision_loss(cue, items, items, memory.precision).item() < loss_id


@pytest.mark.slow
def test_amortized_retrieval_guide_approaches_the_exact_posterior_mean():
    """The guide is trained on noisy cues of the stored items against the memory model; on fresh
    cues its mean is within 0.1 of the closed-form posterior mean (posterior sd here ≈ 0.25-0.35),
    and much closer than the untrained encoder (negative control)."""
    memory = _linear_memory()

    def noisy(x, generator):
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + SIGMA * eps, torch.ones_like(x, dtype=torch.bool)

    items = memory.decode(memory.codes).detach()
    memory.fit_retrieval_guide(corruption=noisy, copies=200, num_steps=1500, batch_size=100, lr=5e-3, seed=0)
    gen = torch.Generator().manual_seed(7)
    cue = noisy(items.repeat(4, 1), gen)[0]
    result = memory.retrieve(cue, method="amortized", guide="retrieval")
    full = [True, True, True]
    exact = torch.stack([_posterior(x.tolist(), full)[3] for x in cue])
    err = (result.code - exact).norm(dim=-1)
    assert err.max() < 0.1, err
    untrained = memory.retrieve(cue, method="amortized", guide="encoder").code
    assert (untrained - exact).norm(dim=-1).mean() > 3 * err.mean()
    # hybrid started at the guide lands on the closed-form mode
    hybrid = memory.retrieve(cue[:2], method="hybrid", start="guide")
    torch.testing.assert_close(hybrid.code, torch.stack([_mode(x.tolist(), full) for x in cue[:2]]),
                               rtol=0, atol=1e-6)
