"""The NUTS engine: reproducible with a seed, in the memory's own dtype whatever torch's default; its
pooled draws carry the exact mode weights of a multimodal posterior (the item drawn from
p(i | x), z sampled within it), with finite r_hat / ESS; the exact sampler of closed-form reads.

Monte Carlo bounds: a fraction of n draws estimating p has standard error sqrt(p(1 - p) / n) (the
items are drawn independently); a mean has standard error sqrt(Var / ESS).  Checks allow 4 to 4.5
standard errors, and each has a negative control that the same check rejects."""

import math

import pytest
import torch
from _toy import StoredItems

import varmem
from varmem.distributions import KernelDensity
from varmem.helpers import masked_normal

ITEMS = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
S, SIGMA = 0.1, 0.5
# p(i | x) = (0.683, 0.317) for the first cue, (1 - 4.5e-6, 4.5e-6) for the second; the modes are
# 20 posterior standard deviations apart, so no NUTS chain crosses between them
CUES = torch.tensor([[0.95, 0.95], [0.3, 0.1]])
FAST = {"num_samples": 200, "warmup_steps": 100, "num_chains": 2}


def _memory(s=S, sigma=SIGMA, items=ITEMS):
    return varmem.KernelDensityMemory(items.shape[1], bandwidth=s, noise_scale=sigma).write(items)


class KernelsWithoutClosedForm(StoredItems, varmem.MixturePriorMemory):
    """The kernel-density model without its posterior: mode weights must be estimated."""

    config_fields = ("s", "sigma")

    def __init__(self, dim, s=S, sigma=SIGMA, **kw):
        super().__init__(dim, **kw)
        self.s, self.sigma = s, sigma

    def prior(self):
        return KernelDensity(self.items, self.s)

    def likelihood(self, z, mask=None):
        return masked_normal(z, self.sigma, mask)


def nearest_fractions(samples, items):
    """``[B, N]`` fraction of the draws ``[S, B, L]`` nearest each item."""
    near = ((samples[:, :, None, :] - items) ** 2).sum(-1).argmin(-1)  # [S, B]
    return torch.stack([(near == i).to(samples.dtype).mean(0) for i in range(items.shape[0])], -1)


def fractions_match(samples, items, weights, k=4.0):
    """Each fraction within ``k`` binomial standard errors of ``weights`` (plus 1/n: a fraction is a
    multiple of 1/n, so a weight of 1e-6 may show as one draw)."""
    n = samples.shape[0]
    se = (weights * (1 - weights) / n).sqrt()
    return bool(((nearest_fractions(samples, items) - weights).abs() <= k * se + 1.0 / n).all())


def test_a_float32_memory_samples_under_a_float64_default_and_the_default_is_restored():
    assert torch.get_default_dtype() == torch.float64  # conftest's default
    items = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    memory = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.3, dtype=torch.float32).write(items)
    r = memory.retrieve(items[:2] + 0.05, method="nuts", num_samples=30, warmup_steps=30, num_chains=1, seed=0)
    assert r.samples.dtype == torch.float32 and r.samples.shape == (30, 2, 3)
    assert torch.get_default_dtype() == torch.float64
    again = memory.retrieve(items[:2] + 0.05, method="nuts", num_samples=30, warmup_steps=30, num_chains=1, seed=0)
    assert torch.equal(again.samples, r.samples)  # same seed, same draws
    assert r.converged is None and r.trace is None and r.weights_at == "samples"


def test_pooled_draws_carry_the_exact_mode_weights_of_a_split_posterior_and_plain_nuts_does_not():
    memory = _memory()
    exact = memory.posterior(CUES, return_weights=True)
    r = memory.retrieve(CUES, method="nuts", seed=0, **FAST)
    assert r.samples.shape == (200, 2, 2) and r.info["modes"] == "exact"
    torch.testing.assert_close(r.info["mode_weights"], exact.weights)
    assert fractions_match(r.samples, ITEMS, exact.weights)
    # moments of the mixture within 4.5 Monte Carlo standard errors (ESS of the pooled mean)
    ess = r.info["ess"]
    assert torch.isfinite(ess).all() and (ess > 50).all()
    assert ((r.pattern - exact.mean).abs() <= 4.5 * (exact.variance / ess).sqrt()).all()
    r_hat = r.info["r_hat"]
    assert torch.isfinite(r_hat).all() and (r_hat < 1.1).all()
    assert r.info["chains"].shape[:2] == (2, 100) and r.info["mode_r_hat"].shape == r.info["mode_ess"].shape
    # negative control: plain NUTS on memory.model, chains started in the wrong mode (item 1): the
    # same check fails (the chains never leave item 1, whose exact weight is 0.32)
    wrong = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    with pytest.warns(varmem.memory.MultimodalPosteriorWarning):
        plain = memory.retrieve(CUES, method="nuts", modes="none", init=wrong, seed=0, **FAST)
    assert nearest_fractions(plain.samples, ITEMS)[0, 1] == 1.0
    assert not fractions_match(plain.samples, ITEMS, exact.weights)
    assert torch.isfinite(plain.info["r_hat"]).all()  # r_hat cannot see the missing mode


def test_a_partial_cue_and_a_shared_mask_read_the_right_modes():
    memory = _memory()
    mask = torch.tensor([True, False])
    cue = torch.tensor([[1.2, math.nan], [0.1, math.nan]])
    exact = memory.posterior(*memory.prepare_cue(cue, mask), return_weights=True)
    r = memory.retrieve(cue, mask, method="nuts", seed=1, **FAST)
    assert fractions_match(r.samples, ITEMS, exact.weights)
    assert ((r.pattern - exact.mean).abs() <= 4.5 * (exact.variance / r.info["ess"]).sqrt()).all()


def test_estimated_mode_weights_match_the_exact_ones_within_their_standard_errors():
    """A mixture memory without a closed form gets its mode weights from per-mode importance
    estimates; they agree with the closed form of the same model within 4 standard errors, and
    the check rejects the weights of a model with another cue noise."""
    memory = KernelsWithoutClosedForm(2).write(ITEMS)
    r = memory.retrieve(CUES[:1], method="nuts", seed=2, **FAST)
    assert r.info["modes"] == "importance"
    w, se = r.info["mode_weights"][0], r.info["log_mass_se"][0]
    assert torch.isfinite(se).all() and (se < 0.05).all()
    tol = 4 * w[0] * w[1] * se.square().sum().sqrt()  # delta method on the logit log Ẑ_0 - log Ẑ_1

    def agrees(reference):
        return bool((w - reference).abs().max() <= tol)

    assert agrees(_memory().posterior(CUES[:1], return_weights=True).weights[0])
    assert not agrees(_memory(sigma=0.6).posterior(CUES[:1], return_weights=True).weights[0])
    assert fractions_match(r.samples, ITEMS, _memory().posterior(CUES[:1], return_weights=True).weights)


def test_importance_runs_chains_in_the_modes_whose_items_explain_the_cue_best():
    """A partial cue x_0 = 0: items A = (0, 0) and B = (0, 5) explain it, C = (1, 2.5) less
    (p = 0.46, 0.46, 0.07).  The screen picks A and B; the responsibilities at the start state
    (x_0, prior mean 2.5) would have picked C."""
    items = torch.tensor([[0.0, 0.0], [0.0, 5.0], [1.0, 2.5]])
    memory = KernelsWithoutClosedForm(2).write(items)
    cue, mask = torch.tensor([[0.0, 0.0]]), torch.tensor([True, False])
    start = memory.init_latent(cue, mask, "cue")
    assert memory.item_weights(start)[1].item() == 2  # the start state is nearest C
    r = memory.retrieve(cue, mask, method="nuts", max_modes=2, num_samples=20, warmup_steps=20, seed=0)
    exact = _memory(items=items).posterior(cue, mask, return_weights=True).weights[0]
    assert sorted(r.info["pairs"][:, 1].tolist()) == sorted(exact.topk(2).indices.tolist()) == [0, 1]
    assert r.info["mode_weights"][0, 2] == 0  # not estimated: weight 0


def test_a_seed_makes_the_mode_split_read_reproducible_and_leaves_the_global_rng_alone():
    memory = _memory()
    state = torch.get_rng_state()
    a = memory.retrieve(CUES[:1], method="nuts", num_samples=10, warmup_steps=10, num_chains=2, seed=5)
    b = memory.retrieve(CUES[:1], method="nuts", num_samples=10, warmup_steps=10, num_chains=2, seed=5)
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(state, torch.get_rng_state())


def test_max_modes_keeps_the_most_probable_modes_and_reports_the_rest():
    items = torch.tensor([[0.0], [0.3], [0.6], [5.0]])
    memory = _memory(s=0.2, sigma=0.5, items=items)
    cue = torch.tensor([[0.3]])
    exact = memory.posterior(cue, return_weights=True).weights
    with pytest.warns(UserWarning, match="max_modes"):
        r = memory.retrieve(cue, method="nuts", max_modes=2, num_samples=10, warmup_steps=10, num_chains=2, seed=0)
    kept = exact[0].topk(2).values.sum()
    torch.testing.assert_close(r.info["dropped_mass"], (1 - kept).reshape(1))
    assert set(r.info["pairs"][:, 1].tolist()) <= set(exact[0].topk(2).indices.tolist())


@pytest.mark.parametrize("options, message", [
    ({"num_chains": 0}, "num_chains"),
    ({"modes": "bogus"}, "modes"),
    ({"max_modes": 0}, "max_modes"),
    ({"importance_samples": 1}, "importance_samples"),
])
def test_bad_options_are_refused_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        _memory().retrieve(CUES, method="nuts", **options)


def test_modes_that_the_memory_cannot_support_are_refused():
    with pytest.raises(ValueError, match="closed-form posterior"):
        KernelsWithoutClosedForm(2).write(ITEMS).retrieve(CUES, method="nuts", modes="exact")


# --- exact sampling ------------------------------------------------------------------------------
def _exact_moments_match(samples, mean, var, m4, k=4.5):
    """Sample mean and variance within ``k`` standard errors of independent draws."""
    n = samples.shape[0]
    ok_mean = ((samples.mean(0) - mean).abs() <= k * (var / n).sqrt()).all()
    ok_var = ((samples.var(0) - var).abs() <= k * ((m4 - var**2) / n).sqrt()).all()
    return bool(ok_mean and ok_var)


def test_exact_draws_have_the_closed_form_moments_and_mode_weights():
    memory = _memory()
    exact = memory.posterior(CUES, return_weights=True)
    r = memory.retrieve(CUES, method="exact", num_samples=4000, seed=0)
    assert r.samples.shape == (4000, 2, 2)
    assert torch.equal(r.samples, memory.retrieve(CUES, method="exact", num_samples=4000, seed=0).samples)
    assert memory.retrieve(CUES, method="exact").samples is None
    # the fourth central moment of the Gaussian mixture, per coordinate, in closed form
    a, b, v = exact.scale_factor, exact.shift, exact.component_scale**2
    mu_i = a * ITEMS[:, None, :] + b  # [N, B, D]
    d = mu_i - exact.mean
    m4 = (exact.weights.T[..., None] * (d**4 + 6 * d**2 * v + 3 * v**2)).sum(0)
    assert _exact_moments_match(r.samples, exact.mean, exact.variance, m4)
    assert fractions_match(r.samples, ITEMS, exact.weights)
    other = _memory(s=0.2).posterior(CUES, return_weights=True)  # negative control: another bandwidth
    assert not _exact_moments_match(r.samples, other.mean, other.variance, m4)


def test_exact_sampling_refuses_a_negative_count():
    with pytest.raises(ValueError, match="num_samples"):
        _memory().retrieve(CUES, method="exact", num_samples=-1)


@pytest.mark.slow
def test_on_200_digits_the_pooled_draws_carry_the_exact_split_and_plain_nuts_does_not():
    """sklearn's first 200 digits (D = 64), a partial cue between digits 0 and 1 (p = 0.26 / 0.74,
    0.0007 elsewhere): mode-split NUTS matches the exact weights; one plain chain from the cue does
    not (measured: all draws at item 1)."""
    items = varmem.datasets.load_digits(dtype=torch.float64).flat()[:200]
    memory = _memory(s=0.1, sigma=0.1, items=items)
    mask = ((items[0] - items[1]).abs() <= 0.4).unsqueeze(0)
    cue = (0.49 * items[0] + 0.51 * items[1]).unsqueeze(0)
    exact = memory.posterior(cue, mask, return_weights=True).weights
    assert 0.2 < exact[0, 0] < 0.3 and exact[0, :2].sum() > 0.999
    r = memory.retrieve(cue, mask, method="nuts", num_samples=400, warmup_steps=150, seed=0)
    assert fractions_match(r.samples, items, exact)
    assert torch.isfinite(r.info["r_hat"]).all() and (r.info["r_hat"] < 1.1).all()
    plain = memory.retrieve(cue, mask, method="nuts", modes="none", num_chains=1, num_samples=100,
                            warmup_steps=100, seed=0)
    assert not fractions_match(plain.samples, items, exact)
