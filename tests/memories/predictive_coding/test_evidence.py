"""``evidence`` of the predictive-coding memories against independent computations.

References (computed here, not with varmem's energy):
* linear activation, point weights (GPCN): the network is linear-Gaussian, so
  ``x ~ N(b W_{L-2} ⋯ W_0, Σ)`` with ``Σ`` propagated layer by layer (``C_l = W_lᵀ C_{l+1} W_l + σ² I``);
  a hidden entry is marginalised by dropping its row and column;
* a 1-D latent (``n_layers=2, h_dim=1``) with ``tanh``: ``Σ_k w_k ∫ p_k(a) Π_d p_k(x_d | a) da`` by
  the trapezoid rule on a fine grid (the ``p_pred`` layers of BayesPCN written out from the
  reference: variance ``σ² + f(a)² U``);
* hiding an entry equals removing it from the network (a copy whose sensory weights lack that column).
"""

import warnings

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import varmem

F64 = torch.float64


def _gpcn(dim, activation, **kw):
    cfg = dict(n_layers=3, h_dim=2, sigma_obs=0.5, T_infer=50, weight_lr=0.02, activation_lr=0.05, seed=1)
    m = varmem.PredictiveCodingMemory(dim, activation=activation, dtype=F64, **{**cfg, **kw})
    return m.write(torch.tensor([[0.8, -0.5, 0.3], [0.6, -0.3, -0.9], [-0.7, 0.9, 0.1]], dtype=F64)[:, :dim])


def _bayes(dim, K, activation="tanh", **kw):
    cfg = dict(n_layers=2, h_dim=1, sigma_obs=0.3, T_infer=100, activation_lr=0.05, seed=0)
    m = varmem.BayesPCN(dim, activation=activation, n_particles=K, dtype=F64, **{**cfg, **kw})
    return m.write(torch.tensor([[0.8, -0.5, 0.3], [0.6, -0.3, -0.9], [-0.7, 0.9, 0.1]], dtype=F64)[:, :dim])


def _linear_gaussian(m):
    """``(mean [D], Σ [D, D])`` of x under a linear GPCN."""
    W = [m.weight(i) for i in range(m.n_layers)]
    s2 = [m.layer_sigma2(i) for i in range(m.n_layers)]
    mean, cov = W[-1][0], s2[-1] * torch.eye(m.h_dim, dtype=F64)
    for i in range(m.n_layers - 2, -1, -1):
        mean, cov = mean @ W[i], W[i].T @ cov @ W[i] + s2[i] * torch.eye(W[i].shape[1], dtype=F64)
    return mean, cov


def _quadrature(m, x, mask=None):
    """``log p(x_obs | M)`` of a 1-D-latent network (``n_layers=2, h_dim=1``) by the trapezoid rule."""
    a = torch.linspace(-12, 12, 120_001, dtype=F64)
    z = torch.tanh(a)
    if isinstance(m, varmem.BayesPCN):
        parts = [(m.log_w[k], m.weight_mean(1)[k, 0, 0], m.weight_cov(1)[k, 0, 0], m.weight_mean(0)[k, 0],
                  m.weight_cov(0)[k, 0, 0]) for k in range(m.n_particles)]
    else:
        parts = [(torch.zeros((), dtype=F64), m.weight(1)[0, 0], 0.0, m.weight(0)[0], 0.0)]
    s2 = m.sigma_obs**2
    out = []
    for log_w, top, u_top, R0, U0 in parts:
        log_joint = Normal(top, (s2 + u_top) ** 0.5).log_prob(a)
        lik = Normal(z[:, None] * R0, (s2 + z[:, None] ** 2 * U0).sqrt()).log_prob(x)
        log_joint = log_joint + (lik if mask is None else lik * mask).sum(-1)
        top_value = log_joint.max()
        out.append(log_w + top_value + torch.trapezoid((log_joint - top_value).exp(), a).log())
    return torch.stack(out).logsumexp(0)


CUES = torch.tensor([[0.3, -0.2, 0.5], [1.0, 0.0, -1.0], [-1.5, 1.2, 0.4]], dtype=F64)


def test_linear_gpcn_evidence_is_the_gaussian_marginal_and_its_laplace_bound_is_tight():
    m = _gpcn(3, "linear")
    mean, cov = _linear_gaussian(m)
    exact = MultivariateNormal(mean, cov).log_prob(CUES)
    # the Laplace Gaussian is the exact posterior of the hidden layers: every weight is the evidence
    pure = m.evidence(CUES, num_samples=200, seed=0, defensive=0.0, proposal_scale=1.0)
    assert pure.kind == "estimate" and pure.method == "importance[laplace, scale=1]"
    torch.testing.assert_close(pure.log_evidence, exact, atol=1e-9, rtol=0)
    assert float(pure.stderr.max()) < 1e-9
    # the default mixes in 10 % prior draws: unbiased, with a (small) standard error
    ev = m.evidence(CUES, num_samples=2000, seed=0)
    assert ev.kind == "estimate" and ev.num_samples == 2000
    assert bool(((ev.log_evidence - exact).abs() <= 4 * ev.stderr).all()), (ev.log_evidence - exact, ev.stderr)
    assert float(ev.stderr.max()) < 0.02
    # the free energy of the Laplace Gaussian: a bound, tight because the posterior is Gaussian
    bound = m.evidence(CUES, num_samples=200, seed=0, estimator="elbo", proposal_scale=1.0)
    assert bound.kind == "lower_bound"
    torch.testing.assert_close(bound.log_evidence, exact, atol=1e-9, rtol=0)
    # the pilot of proposal_scale="auto" (the default) finds that width 1 is best
    auto = m.evidence(CUES, num_samples=200, seed=0, estimator="elbo")
    assert auto.method == "elbo[laplace, scale=auto]"
    torch.testing.assert_close(auto.log_evidence, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(ev.n_observed, torch.full((3,), 3.0, dtype=F64))


def test_linear_gpcn_masked_evidence_is_the_marginal_of_the_observed_entries():
    m = _gpcn(3, "linear")
    mean, cov = _linear_gaussian(m)
    mask = torch.tensor([[True, False, True], [False, True, True], [True, True, False]])
    cue = torch.where(mask, CUES, torch.nan)  # hidden entries are never read
    exact = torch.stack([MultivariateNormal(mean[row], cov[row][:, row]).log_prob(c[row])
                         for c, row in zip(CUES, mask, strict=True)])
    ev = m.evidence(cue, mask, num_samples=200, seed=0, defensive=0.0, proposal_scale=1.0)
    torch.testing.assert_close(ev.log_evidence, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(ev.n_observed, torch.full((3,), 2.0, dtype=F64))
    full = MultivariateNormal(mean, cov).log_prob(CUES)
    assert bool((ev.log_evidence > full).all())  # a marginal of fewer entries, not the full density


@pytest.mark.parametrize("kind, K", [("gpcn", 1), ("bayes", 1), ("bayes", 3)])
def test_tanh_evidence_matches_quadrature_within_its_standard_error(kind, K):
    m = _gpcn(2, "tanh", n_layers=2, h_dim=1, sigma_obs=0.3) if kind == "gpcn" else _bayes(2, K)
    cue = CUES[:, :2]
    ref = torch.stack([_quadrature(m, c) for c in cue])
    ev = m.evidence(cue, num_samples=4000, seed=0)
    z = (ev.log_evidence - ref) / ev.stderr
    assert bool((z.abs() <= 4).all()), (ev.log_evidence - ref, ev.stderr)
    assert float(ev.stderr.max()) < 0.03
    # the Gaussian's free energy is a lower bound (up to its Monte Carlo error); for BayesPCN's
    # p_pred layers (variance σ² + f(a)² U) the posterior is visibly not Gaussian and it is strict
    bound = m.evidence(cue, num_samples=4000, seed=0, estimator="elbo")
    assert bool((bound.log_evidence <= ref + 3 * bound.stderr).all()), (bound.log_evidence - ref)
    assert bool((bound.log_evidence > ref - 0.3).all()), (bound.log_evidence - ref)
    if kind == "bayes":
        assert bool((bound.log_evidence + 3 * bound.stderr < ref).all()), (bound.log_evidence - ref)
    # the pilot-chosen width is no worse than the plain Laplace width
    plain = m.evidence(cue, num_samples=4000, seed=0, estimator="elbo", proposal_scale=1.0)
    assert bool((bound.log_evidence >= plain.log_evidence - 3 * (bound.stderr + plain.stderr)).all())
    # a hidden entry: the marginal of the observed one
    mask = torch.tensor([True, False])
    ref_m = torch.stack([_quadrature(m, c, mask) for c in cue])
    ev_m = m.evidence(cue, mask, num_samples=4000, seed=0)
    assert bool((((ev_m.log_evidence - ref_m) / ev_m.stderr).abs() <= 4).all()), (ev_m.log_evidence - ref_m)


def test_a_poor_proposal_shows_in_its_standard_error_and_its_bound():
    m = _gpcn(3, "linear", sigma_obs=0.2, h_dim=3)
    exact = MultivariateNormal(*_linear_gaussian(m)).log_prob(CUES)
    good = m.evidence(CUES, num_samples=2000, seed=0)
    with pytest.warns(RuntimeWarning, match="degenerate for cues"):  # it says so itself
        prior = m.evidence(CUES, num_samples=2000, seed=0, proposal="prior")
    assert prior.method == "importance[prior]"
    assert bool((prior.stderr > 10 * good.stderr).all()), (prior.stderr, good.stderr)
    tight = m.evidence(CUES, num_samples=2000, seed=0, estimator="elbo")
    narrow = m.evidence(CUES, num_samples=2000, seed=0, estimator="elbo", proposal_scale=0.3)
    wide = m.evidence(CUES, num_samples=2000, seed=0, estimator="elbo", proposal="isotropic", proposal_scale=3.0)
    for loose in (narrow, wide):
        assert bool((loose.log_evidence < tight.log_evidence - 1.0).all()), (loose.log_evidence - exact)
        assert bool((loose.log_evidence + 3 * loose.stderr < exact).all())


@pytest.mark.parametrize("kind", ["gpcn", "bayes"])
def test_hiding_an_entry_equals_removing_it_from_the_network(kind):
    """Sensory entry 1 hidden vs. a copy of the network without it (weights of that column dropped).

    Same seed, same draws: equal up to rounding once both Laplace proposals sit at the same mode
    (a smooth activation; at a relu kink the two Newton refinements may stop on different sides)."""
    keep = [0, 2]
    if kind == "gpcn":
        m = _gpcn(3, "tanh", h_dim=3)
        small = varmem.PredictiveCodingMemory(**{**m.config(), "dim": 2}, dtype=F64)
        state = {k: v[:, keep] if k in ("W0", "items") else v for k, v in m.state_dict().items()}
    else:
        m = _bayes(3, 2, activation="gelu", n_layers=3, h_dim=3)
        small = varmem.BayesPCN(**{**m.config(), "dim": 2}, dtype=F64)
        state = {k: v[..., keep] if k in ("R0", "R_init0") else v for k, v in m.state_dict().items()}
        state["items"] = m.items[:, keep]
    small.load_state_dict(state)
    mask = torch.tensor([True, False, True])
    for estimator in ("importance", "elbo"):
        hidden = m.evidence(CUES, mask, num_samples=300, seed=3, estimator=estimator)
        removed = small.evidence(CUES[:, keep], num_samples=300, seed=3, estimator=estimator)
        torch.testing.assert_close(hidden.log_evidence, removed.log_evidence, atol=1e-8, rtol=0)
        torch.testing.assert_close(hidden.stderr, removed.stderr, atol=1e-8, rtol=1e-6)


def test_masked_particle_energies_and_their_gradient():
    """``sensory_mask`` leaves the hidden entries out of E_k (value and hand-written gradient)."""
    m = _bayes(3, 2, activation="gelu", n_layers=3, h_dim=3)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    g = torch.Generator().manual_seed(0)
    acts = [CUES[:2].unsqueeze(0)] + [torch.randn(2, 2, 3, generator=g, dtype=F64) for _ in range(2)]
    e, grads = m.particle_energies(acts, with_grad=True, sensory_mask=mask)
    # reference: the full energy minus each hidden entry's own Gaussian term
    full, _ = m.particle_energies(acts)
    R0, U0 = m.weight_mean(0), m.weight_cov(0)
    inp = torch.nn.functional.gelu(acts[1])
    v = m.sigma_obs**2 + ((inp @ U0) * inp).sum(-1, keepdim=True)
    own = -Normal(inp @ R0, v.sqrt()).log_prob(acts[0].expand(2, 2, 3))
    torch.testing.assert_close(e, full - (own * ~mask).sum(-1), atol=1e-10, rtol=0)
    leaves = [a.clone().requires_grad_(True) for a in acts]
    auto = torch.autograd.grad(m.particle_energies(leaves, sensory_mask=mask)[0].sum(), leaves)
    for hand, ref in zip(grads[1:], auto[1:], strict=True):
        torch.testing.assert_close(hand, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(grads[0].sum(0), auto[0].sum(0), atol=1e-10, rtol=0)
    assert bool((grads[0][:, ~mask] == 0).all())


def test_evidence_options_are_checked_and_a_seed_repeats():
    m = _gpcn(3, "linear")
    a = m.evidence(CUES, num_samples=50, seed=5)
    b = m.evidence(CUES, num_samples=50, seed=5)
    torch.testing.assert_close(a.log_evidence, b.log_evidence, atol=0, rtol=0)
    for options, error in [({"num_samples": 1}, ValueError), ({"proposal": "uniform"}, ValueError),
                           ({"defensive": 1.0}, ValueError), ({"estimator": "exact"}, ValueError),
                           ({"proposal_scale": 0.0}, ValueError), ({"temperature": 1.0}, TypeError)]:
        with pytest.raises(error):
            m.evidence(CUES, **options)
    with pytest.raises(ValueError, match="empty"):
        varmem.BayesPCN(3, n_layers=2, h_dim=2).evidence(CUES)


def test_restarts_mix_several_relaxed_modes_of_a_relu_posterior():
    """relu: the posterior's modes sit on kinks and random starts find different ones; the mixture
    over 16 relaxations agrees with a long prior-proposal run (independent draws) within 4 joint
    standard errors, and ``restarts=1`` is the default proposal draw for draw."""
    g = torch.Generator().manual_seed(0)
    items, cue = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    m = varmem.BayesPCN(3, n_layers=3, h_dim=4, sigma_obs=0.1, T_infer=50, n_particles=2, log_prob="map",
                        dtype=F64).write(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = m.evidence(cue, num_samples=100_000, seed=1, proposal="prior")
    mixed = m.evidence(cue, num_samples=4000, seed=2, restarts=16)
    z = (mixed.log_evidence - ref.log_evidence) / (mixed.stderr**2 + ref.stderr**2).sqrt()
    assert bool((z.abs() <= 4).all()), (mixed.log_evidence, ref.log_evidence, mixed.stderr, ref.stderr)
    one = m.evidence(cue, num_samples=100, seed=0, restarts=1)
    torch.testing.assert_close(one.log_evidence, m.evidence(cue, num_samples=100, seed=0).log_evidence, atol=0, rtol=0)
