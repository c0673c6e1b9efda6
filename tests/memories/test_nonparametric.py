"""NonparametricMemory: CRP memory creation and posterior reading against independent computations.

References used below:
* the CRP conditionals ``n_k/(n+α)``, ``α/(n+α)``, Ewens' formula for the probability of a partition,
  and ``E[K_n] = Σ_{i<n} α/(α+i)``, ``Var[K_n] = Σ_{i<n} α i/(α+i)²`` (Pitman 2006, ch. 3);
* the conjugate Gaussian posterior of a centre, checked by numeric integration on a grid;
* the table posterior and the new-memory rule written out with ``torch.distributions.Normal``;
* numeric integration of prior × likelihood for the exact reading posterior (1-D and 2-D);
* ``torch.autograd.grad`` of the energy for the fixed-point step, and minus the Pyro trace's
  log-density for the energy.
"""

import copy
import math

import pyro.poutine as poutine
import pytest
import torch
from _grid import mixture_log_joint, moments_1d, moments_2d
from torch.distributions import Normal

import varmem
from varmem.memories.nonparametric import expected_num_memories

ITEMS_1D = [[-2.0], [-1.8], [1.0], [1.3], [-2.1], [4.0]]
ALPHA, S, S0, SIGMA, MU0 = 0.7, 0.4, 2.0, 0.5, 0.3


def _memory(items=ITEMS_1D, alpha=ALPHA, s=S, s0=S0, sigma=SIGMA, mu0=MU0, assignment="crp_map"):
    m = varmem.NonparametricMemory(
        len(items[0]), alpha=alpha, bandwidth=s, noise_scale=sigma, prior_scale=s0, prior_mean=mu0,
        assignment=assignment,
    )
    return m.write(torch.tensor(items))


def _written_out_components(memory, items, s=S, s0=S0, mu0=MU0, alpha=ALPHA):
    """``(weights [J], means [J, D], variances [J])`` of the CRP predictive, from the raw items and
    the stored hard assignments, with the conjugate formulas written out (no varmem code)."""
    items = torch.as_tensor(items)
    n = len(items)
    weights, means, variances = [], [], []
    for k in range(int(memory.assignments.max()) + 1):
        members = items[memory.assignments == k]
        prec = 1 / s0**2 + len(members) / s**2
        means.append((mu0 / s0**2 + members.sum(0) / s**2) / prec)
        variances.append(s**2 + 1 / prec)
        weights.append(len(members) / (n + alpha))
    weights.append(alpha / (n + alpha))
    means.append(torch.full((items.shape[1],), mu0))
    variances.append(s**2 + s0**2)
    return torch.tensor(weights), torch.stack(means), torch.tensor(variances)


def _grid_log_joint(grid, comps, x, mask, sigma):
    """log p(z | M) + log p(x | z) on grid points ``[G, D]`` (explicit sum over components)."""
    w, mu, v = comps
    return mixture_log_joint(grid, w.log(), mu, v.sqrt(), x, mask, sigma)


# --- writing: the CRP prior, the conjugate centres, the decision rule ----------------------------
def test_crp_prior_probabilities_and_ewens_formula():
    memory = _memory()
    n, counts = memory.num_items, memory.counts
    assert len(memory) == 3 and n == 6 and counts.tolist() == [3.0, 2.0, 1.0]
    expected = torch.tensor([3 / (6 + ALPHA), 2 / (6 + ALPHA), 1 / (6 + ALPHA), ALPHA / (6 + ALPHA)])
    torch.testing.assert_close(memory.crp_log_prior().exp(), expected)
    # Ewens' formula equals the product of the sequential CRP conditionals of the stored assignments
    log_p, seen = 0.0, []
    for i, t in enumerate(memory.assignments.tolist()):
        log_p += math.log(ALPHA / (i + ALPHA)) if t == len(seen) else math.log(seen[t] / (i + ALPHA))
        if t == len(seen):
            seen.append(0)
        seen[t] += 1
    assert memory.partition_log_prob().item() == pytest.approx(log_p, rel=1e-12)
    # an empty memory opens a new table with probability 1
    empty = varmem.NonparametricMemory(1, alpha=ALPHA, bandwidth=S, noise_scale=SIGMA)
    torch.testing.assert_close(empty.crp_log_prior(), torch.zeros(1))


def test_expected_number_of_memories_closed_form():
    assert expected_num_memories(1, 2.0) == 1.0
    assert expected_num_memories(3, 1.0) == pytest.approx(1 + 1 / 2 + 1 / 3)
    for alpha in (0.5, 3.0):  # the asymptote α log(1 + n/α) is within α·(0.6) of the exact sum
        exact = expected_num_memories(5000, alpha)
        assert abs(exact - alpha * math.log(1 + 5000 / alpha)) < 0.6 * alpha + 0.6
    with pytest.raises(ValueError, match="alpha"):
        expected_num_memories(3, 0.0)


def test_centres_are_the_conjugate_posterior_checked_by_numeric_integration():
    memory = _memory()
    _, means, variances = _written_out_components(memory, ITEMS_1D)
    torch.testing.assert_close(memory.centres, means[:-1])
    torch.testing.assert_close(memory.centre_variance + S**2, variances[:-1])
    # p(μ | items of memory 0) ∝ N(μ; μ0, s0²) Π N(ξ; μ, s²) integrated on a grid
    items = torch.tensor(ITEMS_1D)[memory.assignments == 0].squeeze(-1)
    mu = torch.linspace(-8, 8, 200001)
    log_post = Normal(MU0, S0).log_prob(mu) + Normal(mu.unsqueeze(-1), S).log_prob(items).sum(-1)
    dens = (log_post - log_post.max()).exp()
    dens = dens / torch.trapezoid(dens, mu)
    mean = torch.trapezoid(dens * mu, mu)
    var = torch.trapezoid(dens * (mu - mean) ** 2, mu)
    torch.testing.assert_close(memory.centres[0, 0], mean, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(memory.centre_variance[0], var, rtol=1e-6, atol=1e-9)


def test_new_memory_decision_follows_the_written_out_posterior_odds():
    memory = _memory()
    w, mu, v = _written_out_components(memory, ITEMS_1D)
    xs = torch.linspace(-6, 9, 301)
    log_table = torch.stack([w[j].log() + Normal(mu[j, 0], v[j].sqrt()).log_prob(xs) for j in range(4)], -1)
    # the table posterior p(t | ξ, M) by Bayes' rule
    torch.testing.assert_close(memory.table_log_probs(xs.unsqueeze(-1)), log_table.log_softmax(-1))
    log_odds = log_table[:, -1] - log_table[:, :-1].max(-1).values  # new vs the best existing memory
    created = []
    for x in xs:
        m = copy.deepcopy(memory).write(x.reshape(1, 1))
        created.append(len(m) == len(memory) + 1)
    created = torch.tensor(created)
    assert torch.equal(created, log_odds > 0)
    assert 20 < int(created.sum()) < 280  # both outcomes occur on this range
    # raising α by a factor f shifts every log-odds by log f: more items now open a memory
    bolder = _memory(alpha=ALPHA * 50)
    assert int((bolder.table_log_probs(xs.unsqueeze(-1)).argmax(-1) == len(bolder)).sum()) > int(created.sum())


def test_a_duplicate_write_creates_no_new_memory():
    for assignment in ("crp_map", "proportional", "crp_sample"):
        memory = _memory(assignment=assignment)
        k, before = len(memory), memory.counts.clone()
        memory.write(torch.tensor(ITEMS_1D), generator=torch.Generator().manual_seed(0))
        assert len(memory) == k and memory.num_items == 2 * len(ITEMS_1D)
        assert memory.counts.sum().item() == pytest.approx(2 * before.sum().item())
        single = varmem.NonparametricMemory(3, alpha=1.0, bandwidth=0.5, noise_scale=0.5, assignment=assignment)
        item = torch.tensor([0.3, -1.0, 2.0])
        single.write(item).write(item).write(torch.stack([item, item]))
        assert len(single) == 1 and single.counts.tolist() == [4.0]


def test_an_item_written_again_at_once_never_opens_a_memory_when_alpha_is_at_most_one():
    # crp_map: re-writing ξ right after it was written raises its own memory's score
    # n_k N(ξ; m_k, v_k) and leaves every other table's score unchanged (see the module docstring)
    g = torch.Generator().manual_seed(5)
    for alpha in (0.3, 1.0):
        memory = varmem.NonparametricMemory(5, alpha=alpha, bandwidth=0.7, noise_scale=0.5, prior_scale=2.0)
        memory.write(2 * torch.randn(40, 5, generator=g))
        for item in 3 * torch.randn(60, 5, generator=g):
            k = len(memory.write(item))
            assert len(memory.write(item)) == k
    # negative control: with α ≫ 1 and s comparable to s0 the second copy may open a memory too
    memory = varmem.NonparametricMemory(5, alpha=1e4, bandwidth=1.0, noise_scale=0.5, prior_scale=1.0)
    item = torch.ones(5)
    assert len(memory.write(item).write(item)) == 2


@pytest.mark.parametrize("assignment", ["crp_map", "proportional", "crp_sample"])
def test_a_batch_write_equals_writing_the_rows_one_by_one(assignment):
    g = torch.Generator().manual_seed(3)
    items = torch.cat([torch.randn(15, 2, generator=g), 4 + torch.randn(15, 2, generator=g)])[torch.randperm(30)]
    batch = _memory(items=[[0.0, 0.0]], s=0.8, assignment=assignment)
    one_by_one = copy.deepcopy(batch)
    batch.write(items, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    for row in items:
        one_by_one.write(row, generator=gen)
    assert len(batch) == len(one_by_one) and len(batch) >= 2
    for name in ("counts", "sums", "assignments"):
        torch.testing.assert_close(getattr(batch, name), getattr(one_by_one, name), rtol=1e-12, atol=1e-12)


def _mixture(k=6, d=8, n=600, spread=3.0, width=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, d, generator=g)
    labels = torch.randint(k, (n,), generator=g)
    return centres[labels] + width * torch.randn(n, d, generator=g), labels


@pytest.mark.parametrize("assignment", ["crp_map", "proportional"])
def test_number_of_memories_tracks_k_on_a_well_separated_mixture(assignment):
    items, labels = _mixture()
    made = []
    for alpha in (0.1, 1.0, 10.0):
        memory = varmem.NonparametricMemory(
            8, alpha=alpha, bandwidth=0.3, noise_scale=0.3, prior_scale=3.0, assignment=assignment
        ).write(items)
        made.append(len(memory))
        # the partition is the true one: every memory holds the items of exactly one component
        table = torch.zeros(len(memory), 6)
        table.index_put_((memory.assignments, labels), torch.ones(len(labels)), accumulate=True)
        assert ((table > 0).sum(-1) == 1).all() and ((table > 0).sum(0) == 1).all()
    assert made == [6, 6, 6]
    # negative controls: a far too wide kernel merges components, a far too narrow one splits them
    wide = varmem.NonparametricMemory(8, alpha=1.0, bandwidth=30.0, noise_scale=0.3, prior_scale=3.0).write(items)
    narrow = varmem.NonparametricMemory(8, alpha=1.0, bandwidth=0.03, noise_scale=0.3, prior_scale=3.0).write(items)
    assert len(wide) < 6 and len(narrow) > 60


def test_crp_sample_on_uninformative_data_follows_the_crp_prior():
    # s0 ≪ s: every table predicts ~N(μ0, s²), so the data say nothing about the partition and the
    # number of tables after n items is that of the CRP: mean Σ α/(α+i), variance Σ α i/(α+i)²
    n, runs, alpha = 60, 40, 2.0
    mean = expected_num_memories(n, alpha)
    sd = math.sqrt(sum(alpha * i / (alpha + i) ** 2 for i in range(n)))
    g = torch.Generator().manual_seed(0)
    data = torch.randn(runs, n, 2, generator=g)

    def count(assignment, a, runs=runs):
        ks = []
        for r in range(runs):
            m = varmem.NonparametricMemory(
                2, alpha=a, bandwidth=1.0, noise_scale=1.0, prior_scale=1e-4, assignment=assignment
            )
            ks.append(len(m.write(data[r], generator=g)))
        return torch.tensor(ks, dtype=torch.float64)

    ks = count("crp_sample", alpha)
    assert abs(ks.mean().item() - mean) < 4 * sd / math.sqrt(runs)
    assert 0.5 < ks.std().item() / sd < 1.6
    # negative controls: the wrong concentration, and MAP assignment (rich get richer: one table)
    wrong = count("crp_sample", 2 * alpha)
    assert abs(wrong.mean().item() - mean) > 4 * sd / math.sqrt(runs)
    assert count("crp_map", 0.5, runs=10).eq(1).all()


# --- reading: the posterior and the engines --------------------------------------------------------
@pytest.mark.parametrize("x", [-1.5, 1.1, 7.0])
def test_exact_posterior_matches_numeric_integration_1d(x):
    memory = _memory()
    comps = _written_out_components(memory, ITEMS_1D)
    post = memory.posterior(torch.tensor([[x]]), None)
    grid = torch.linspace(-12, 14, 30001).unsqueeze(-1)
    lj = _grid_log_joint(grid, comps, torch.tensor([x]), None, SIGMA)
    evidence, mean, var = moments_1d(lj, grid.squeeze(-1))
    torch.testing.assert_close(post.log_evidence, evidence.log().reshape(1), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(post.mean, mean.reshape(1, 1), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(post.variance, var.reshape(1, 1), rtol=1e-6, atol=1e-7)
    log_dens = lj - evidence.log()
    torch.testing.assert_close(post.log_prob(grid.unsqueeze(-2)).squeeze(-1), log_dens, rtol=1e-6, atol=1e-6)
    # p(j | x) by Bayes' rule: π_j N(x; c_j, v_j + σ²)
    w, mu, v = comps
    lik = torch.stack([Normal(mu[j, 0], (v[j] + SIGMA**2).sqrt()).log_prob(torch.tensor(x)) for j in range(4)])
    torch.testing.assert_close(post.weights, (w.log() + lik).softmax(-1).unsqueeze(0))


def test_exact_posterior_with_mask_matches_numeric_integration_2d():
    items = [[-1.0, 1.0], [-0.9, 1.1], [1.5, -1.0], [1.4, -1.2], [0.0, 2.5]]
    memory = _memory(items=items, s=0.3, s0=1.5, mu0=0.0)
    comps = _written_out_components(memory, items, s=0.3, s0=1.5, mu0=0.0)
    cue = torch.tensor([[0.9, float("nan")], [-0.5, 0.4]])
    cue, mask = memory.prepare_cue(cue, torch.tensor([[True, False], [True, True]]))
    post = memory.posterior(cue, mask)
    g = torch.linspace(-9, 9, 601)
    grid = torch.cartesian_prod(g, g)
    for b in range(2):
        evidence, mean, var = moments_2d(_grid_log_joint(grid, comps, cue[b], mask[b], SIGMA), grid, g)
        torch.testing.assert_close(post.log_evidence[b], evidence.log(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(post.mean[b], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(post.variance[b], var, rtol=1e-4, atol=1e-5)


def test_exact_retrieval_record_novelty_and_posterior_samples():
    memory = _memory()
    cue = torch.tensor([[-1.9], [1.2], [30.0]])
    r = memory.retrieve(cue, method="exact")
    assert r.weights.shape == (3, 4) and torch.allclose(r.weights.sum(-1), torch.ones(3))
    assert r.index.tolist() == [0, 1, 3]  # a cue far from every memory is "new" (component K)
    novelty = r.posterior.novelty
    assert novelty[0] < 0.1 and novelty[1] < 0.1 and novelty[2] > 0.999
    samples = r.posterior.sample(100_000, generator=torch.Generator().manual_seed(1))
    se = (r.variance / 100_000).sqrt()
    assert ((samples.mean(0) - r.pattern).abs() < 5 * se).all()
    torch.testing.assert_close(samples.var(0), r.variance, rtol=0.03, atol=0.0)


def test_reduces_to_the_kernel_density_memory_with_equal_counts_and_tiny_alpha():
    items = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]
    memory = _memory(items=items, alpha=1e-14, s=0.5, s0=3.0, mu0=0.0)
    assert len(memory) == 4
    width = math.sqrt(0.25 + memory.centre_variance[0].item())
    kde = varmem.KernelDensityMemory(2, bandwidth=width, noise_scale=SIGMA).write(memory.centres)
    cue = torch.tensor([[1.0, 1.5], [8.5, 1.0], [9.0, 9.5]])
    for method in ("exact", "fixed_point"):
        a, b = memory.retrieve(cue, method=method), kde.retrieve(cue, method=method)
        torch.testing.assert_close(a.pattern, b.pattern, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a.weights[:, :-1], b.weights, rtol=1e-9, atol=1e-9)
    z = torch.randn(5, 2)
    torch.testing.assert_close(memory.energy(z), kde.energy(z), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("masked", [False, True])
def test_energy_is_minus_the_pyro_trace_log_density(masked):
    memory = _memory(items=[[0.0, 1.0, 2.0], [0.1, 1.1, 2.0], [3.0, -1.0, 0.0]])
    cue = torch.randn(4, 3)
    mask = torch.tensor([True, False, True]) if masked else None
    z = torch.randn(4, 3)
    tr = poutine.trace(poutine.condition(memory.model, data={"z": z})).get_trace(cue, mask)
    torch.testing.assert_close(memory.energy(z, cue, mask).sum(), -tr.log_prob_sum())
    # the prior alone: minus the trace's "z" site
    torch.testing.assert_close(memory.energy(z), -tr.nodes["z"]["fn"].log_prob(z))


def test_fixed_point_step_is_the_preconditioned_autograd_gradient_step_and_never_raises_energy():
    memory = _memory(items=[[0.0, 1.0, 2.0], [0.1, 1.1, 2.0], [3.0, -1.0, 0.0], [-2.0, 2.0, 2.0]])
    cue, mask = memory.prepare_cue(torch.randn(6, 3), torch.rand(6, 3) > 0.3)
    z = torch.randn(6, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(memory.energy(z, cue, mask).sum(), z)
    step = memory.fixed_point_step(z.detach(), cue, mask)
    z_new, energy = step.state, step.energy
    torch.testing.assert_close(energy, memory.energy(z.detach(), cue, mask))
    log_w, centres, var = memory.components()
    r, _ = memory.item_weights(z.detach(), return_weights=True)
    precision = (r / var).sum(-1, keepdim=True) + mask.double() / SIGMA**2
    torch.testing.assert_close((z.detach() - z_new) * precision, grad, rtol=1e-9, atol=1e-12)
    # iterating: energy never increases, and the end point is stationary
    out = memory.retrieve(cue, mask, method="fixed_point", tol=1e-13, max_steps=5000)
    assert (out.trace.diff(dim=0) <= 1e-12).all()
    zs = out.pattern.clone().requires_grad_()
    (g,) = torch.autograd.grad(memory.energy(zs, cue, mask).sum(), zs)
    assert g.abs().max() < 1e-8


def test_fixed_point_and_map_reach_the_grid_mode():
    memory = _memory()
    comps = _written_out_components(memory, ITEMS_1D)
    for x in (-1.7, 1.05):
        grid = torch.linspace(-6, 8, 14001).unsqueeze(-1)  # coarse grid, then a fine one around its arg-max
        coarse = grid[_grid_log_joint(grid, comps, torch.tensor([x]), None, SIGMA).argmax()]
        grid = torch.linspace(-1e-3, 1e-3, 2001).unsqueeze(-1) + coarse
        mode = grid[_grid_log_joint(grid, comps, torch.tensor([x]), None, SIGMA).argmax()]
        for method in ("fixed_point", "map"):
            r = memory.retrieve(torch.tensor([[x]]), method=method)
            torch.testing.assert_close(r.pattern[0], mode, rtol=0, atol=5e-6)
            assert r.weights.shape == (1, 4)


def test_nuts_matches_the_exact_posterior_with_negative_control():
    memory = _memory()
    cue = torch.tensor([[-1.5], [1.1]])
    exact = memory.posterior(cue, None)
    r = memory.retrieve(cue, method="nuts", num_samples=300, warmup_steps=150, seed=2)
    assert (r.info["ess"] > 100).all()
    se = (exact.variance / r.info["ess"]).sqrt()
    assert ((r.pattern - exact.mean).abs() < 4.5 * se).all()
    torch.testing.assert_close(r.variance, exact.variance, rtol=0.35, atol=0)
    torch.testing.assert_close(r.weights, exact.weights, rtol=0, atol=0.1)
    # negative control: the same check against the exact posterior of a memory with another kernel
    # width fails (it has the power to tell them apart)
    wrong = _memory(s=1.2).posterior(cue, None)
    assert not ((r.pattern - wrong.mean).abs() < 4.5 * se).all()


# --- bad input, state, save / load -------------------------------------------------------------------
@pytest.mark.parametrize(
    "items, kwargs, error, words",
    [
        (torch.ones(2, 2), {}, ValueError, "shape"),
        (torch.ones(0, 1), {}, ValueError, "empty"),
        (torch.ones(2, 1, dtype=torch.int64), {}, TypeError, "floating dtype"),
        (torch.tensor([[0.0], [float("nan")]]), {}, ValueError, "NaN"),
        (torch.tensor([[float("inf")]]), {}, ValueError, "inf"),
        ("abc", {}, TypeError, "tensor or array"),
        (torch.ones(2, 1), {"generator": 3}, TypeError, "generator"),
    ],
)
def test_failed_write_names_the_problem_and_leaves_the_memory_unchanged(items, kwargs, error, words):
    memory = _memory()
    before = {k: v.clone() for k, v in memory.state_dict().items()}
    with pytest.raises(error, match=words):
        memory.write(items, **kwargs)
    after = memory.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(alpha=float("inf")), ValueError, "alpha"),
        (dict(bandwidth=-1.0), ValueError, "bandwidth"),
        (dict(noise_scale=0.0), ValueError, "noise_scale"),
        (dict(prior_scale=float("nan")), ValueError, "prior_scale"),
        (dict(prior_mean="middle"), TypeError, "prior_mean"),
        (dict(prior_mean=float("inf")), ValueError, "prior_mean"),
        (dict(assignment="greedy"), ValueError, "assignment"),
        (dict(dim=0), ValueError, "dim"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, words):
    args = dict(dim=2, alpha=1.0, bandwidth=1.0, noise_scale=1.0) | kwargs
    with pytest.raises(error, match=words):
        varmem.NonparametricMemory(**args)


@pytest.mark.parametrize("method", ["exact", "fixed_point", "map", "nuts"])
def test_bad_cues_and_empty_memories_are_refused(method):
    memory = _memory()
    with pytest.raises(ValueError, match="shape"):
        memory.retrieve(torch.ones(2, 3), method=method)
    with pytest.raises(ValueError, match="nothing observed"):
        memory.retrieve(torch.ones(2, 1), torch.tensor([False]), method=method)
    with pytest.raises(ValueError, match="NaN or inf"):
        memory.retrieve(torch.tensor([[float("nan")]]), method=method)
    with pytest.raises(ValueError, match="unknown option"):
        memory.retrieve(torch.ones(1, 1), method=method, bogus=1)
    empty = varmem.NonparametricMemory(1, alpha=1.0, bandwidth=1.0, noise_scale=1.0)
    with pytest.raises(ValueError, match="empty"):
        empty.retrieve(torch.ones(1, 1), method=method)


@pytest.mark.parametrize("assignment", ["crp_map", "proportional", "crp_sample"])
def test_save_load_round_trip_then_continue_writing(assignment, tmp_path):
    memory = _memory(items=[[0.0, 0.0], [0.1, 0.0], [3.0, 3.0]], s=0.5, assignment=assignment)
    loaded = varmem.load(varmem.save(memory, tmp_path / "np.safetensors"))
    assert type(loaded) is varmem.NonparametricMemory and loaded.config() == memory.config()
    for name in ("counts", "sums", "assignments"):
        assert torch.equal(getattr(loaded, name), getattr(memory, name))
    cue = torch.tensor([[0.2, -0.1], [2.0, 2.5]])
    torch.testing.assert_close(loaded.retrieve(cue).pattern, memory.retrieve(cue).pattern)
    more = torch.tensor([[3.1, 2.9], [-3.0, 0.0]])
    loaded.write(more, generator=torch.Generator().manual_seed(1))
    memory.write(more, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.counts, memory.counts) and torch.equal(loaded.assignments, memory.assignments)


def test_inconsistent_checkpoint_is_refused(tmp_path):
    memory = _memory()
    memory.counts = memory.counts + torch.tensor([1.0, 0.0, 0.0])  # no longer the assignments' counts
    path = varmem.save(memory, tmp_path / "bad.safetensors")
    with pytest.raises(varmem.CheckpointError, match="counts"):
        varmem.load(path)


def test_float32_memory_keeps_its_dtype():
    m = varmem.NonparametricMemory(2, alpha=1.0, bandwidth=0.5, noise_scale=0.5, dtype=torch.float32)
    m.write(torch.randn(20, 2, dtype=torch.float64))
    r = m.retrieve(torch.randn(3, 2, dtype=torch.float64), method="fixed_point")
    assert m.counts.dtype == m.sums.dtype == r.pattern.dtype == torch.float32
