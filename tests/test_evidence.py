"""The log evidence ``log p(x_b | M)`` (``memory.evidence``): closed forms against numerical
integration, the importance-sampling estimator against the closed form, model comparison with
ArviZ, and empirical-Bayes selection of the bandwidth.

Theory used below:

* ``p(x_obs | M) = ∫ p(x_obs | z) p(z | M) dz``; on a grid in 1-2 D the integral is a sum
  (trapezoid, 2001 points per axis over ±8 standard deviations: error far below 1e-6).
* Importance sampling with the exact posterior as proposal has zero variance: every weight equals
  the evidence.
* For a kernel-density memory with well-separated items and cues ``x = ξ_j + √(s₀² + σ²) ε``, the
  evidence is ``Σ_b log (1/N) Σ_i N(x_b; ξ_i, (s² + σ²) I)``, maximised near ``s = s₀``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import varmem
from varmem.analysis import compare_evidence, evidence_elpd, evidence_grid
from varmem.evidence import Evidence, importance_sampling

F64 = torch.float64


def quadrature_evidence(memory, cue: torch.Tensor, mask: torch.Tensor | None = None, span: float = 8.0,
                        points: int = 2001) -> float:
    """log ∫ p(x_obs | z) p(z | M) dz for one cue by a trapezoid rule over ``[-span, span]^D``."""
    d = memory.dim
    lo, hi = -span, span
    axis = torch.linspace(lo, hi, points if d == 1 else 401, dtype=F64)
    grids = torch.meshgrid(*([axis] * d), indexing="ij")
    z = torch.stack([g.reshape(-1) for g in grids], -1)
    log_prior = memory.prior().log_prob(z)
    log_lik = memory.likelihood(z, None if mask is None else mask.expand(z.shape[0], d)).log_prob(
        cue.expand(z.shape[0], d))
    integrand = (log_prior + log_lik).exp().reshape([axis.shape[0]] * d)
    for _ in range(d):
        integrand = torch.trapezoid(integrand, axis, dim=0)
    return math.log(float(integrand))


@pytest.fixture
def kde_1d():
    items = torch.tensor([[-1.0], [0.3], [2.0]], dtype=F64)
    return varmem.KernelDensityMemory(1, bandwidth=0.4, noise_scale=0.3, dtype=F64).write(items)


def test_kernel_density_evidence_is_the_integral_in_1d(kde_1d) -> None:
    cues = torch.tensor([[0.0], [1.2], [-3.0]], dtype=F64)
    evidence = kde_1d.evidence(cues)
    assert evidence.kind == "exact" and evidence.method == "closed_form"
    assert torch.equal(evidence.stderr, torch.zeros(3, dtype=F64))
    by_quadrature = [quadrature_evidence(kde_1d, c) for c in cues]
    np.testing.assert_allclose(evidence.log_evidence.numpy(), by_quadrature, rtol=0, atol=1e-6)
    # negative control: a memory of other items gives other numbers
    other = varmem.KernelDensityMemory(1, bandwidth=0.4, noise_scale=0.3, dtype=F64).write(kde_1d.items + 0.5)
    assert (other.log_evidence(cues) - evidence.log_evidence).abs().max() > 0.1


def test_kernel_density_evidence_of_a_masked_cue_in_2d_ignores_the_hidden_entry() -> None:
    items = torch.tensor([[0.0, 1.0], [1.5, -0.5], [-1.0, -1.0]], dtype=F64)
    memory = varmem.KernelDensityMemory(2, bandwidth=0.5, noise_scale=0.4, dtype=F64).write(items)
    cue = torch.tensor([[0.4, 7.0]], dtype=F64)
    mask = torch.tensor([[True, False]])
    value = float(memory.log_evidence(cue, mask))
    assert value == pytest.approx(quadrature_evidence(memory, cue, mask), abs=1e-5)
    # the hidden entry does not matter; the 2-D evidence is the 1-D memory's of the first coordinate
    assert float(memory.log_evidence(cue.clone().fill_(0).add_(torch.tensor([0.4, -3.0], dtype=F64)), mask)) == \
        pytest.approx(value, abs=1e-12)
    first = varmem.KernelDensityMemory(1, bandwidth=0.5, noise_scale=0.4, dtype=F64).write(items[:, :1])
    assert float(first.log_evidence(cue[:, :1])) == pytest.approx(value, abs=1e-12)
    assert memory.evidence(cue, mask).n_observed.tolist() == [1.0]


def test_nonparametric_evidence_is_the_integral_of_its_crp_prior() -> None:
    items = torch.tensor([[-1.0], [-0.9], [1.5]], dtype=F64)
    memory = varmem.NonparametricMemory(1, alpha=1.0, bandwidth=0.3, noise_scale=0.2, dtype=F64).write(items)
    cues = torch.tensor([[-1.1], [0.4], [1.4]], dtype=F64)
    evidence = memory.evidence(cues)
    assert evidence.kind == "exact"
    for value, cue in zip(evidence.log_evidence.tolist(), cues, strict=True):
        assert value == pytest.approx(quadrature_evidence(memory, cue, span=10.0, points=8001), abs=1e-6)


def test_memories_that_are_not_generative_models_have_no_evidence_and_bad_cues_are_named() -> None:
    hopfield = varmem.ModernHopfield(4, beta=1.0).write(torch.randn(3, 4))
    with pytest.raises(TypeError, match="ModernHopfield has no evidence"):
        hopfield.evidence(torch.zeros(1, 4))
    kde = varmem.KernelDensityMemory(4, bandwidth=0.5, noise_scale=0.5).write(torch.rand(3, 4))
    with pytest.raises(ValueError, match="4"):
        kde.evidence(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="empty"):
        varmem.KernelDensityMemory(4, bandwidth=0.5, noise_scale=0.5).evidence(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="no options"):
        kde.evidence(torch.zeros(1, 4), num_samples=10)


# --------------------------------------------------------------------------- the estimator
def test_importance_sampling_with_the_exact_posterior_has_no_variance_and_the_prior_does(kde_1d) -> None:
    """Proposal = exact posterior: every weight is the evidence (stderr ≈ 0).  Proposal = prior:
    unbiased for p, the estimate lands within 4 standard errors and its error is much larger.
    Proposal that misses the modes: the estimate is far too low while its self-estimated error is
    small, the failure the docstring warns about."""
    cue = torch.tensor([[0.25]], dtype=F64)
    exact = float(kde_1d.log_evidence(cue))
    n_obs = torch.ones(1, dtype=F64)
    g = torch.Generator().manual_seed(0)

    def log_joint(z):  # [S, 1, 1] -> [S, 1]
        return kde_1d.prior().log_prob(z) + kde_1d.likelihood(z).log_prob(cue)

    posterior = kde_1d.posterior(cue)
    z = posterior.sample(4000, generator=g)
    perfect = importance_sampling(log_joint(z) - posterior.log_prob(z), n_obs)
    assert float(perfect.log_evidence) == pytest.approx(exact, abs=1e-9)
    assert float(perfect.stderr) < 1e-9
    assert float(perfect.ess) == pytest.approx(4000, rel=1e-9)  # equal weights: every draw counts

    z = kde_1d.prior().sample((4000, 1))
    prior_is = importance_sampling(log_joint(z) - kde_1d.prior().log_prob(z), n_obs)
    assert abs(float(prior_is.log_evidence) - exact) < 4 * float(prior_is.stderr)
    assert float(prior_is.stderr) > 1e3 * float(perfect.stderr) + 0.01

    q = torch.distributions.Normal(torch.tensor(5.0, dtype=F64), 0.1)
    z = q.sample((4000, 1, 1))
    missed = importance_sampling(log_joint(z) - q.log_prob(z).sum(-1), n_obs)
    assert float(missed.log_evidence) < exact - 20  # far off ...
    assert float(missed.stderr) < 5  # ... and the stderr does not know it; the ESS does
    assert float(missed.ess) < 0.01 * 4000 < float(prior_is.ess)


def test_evidence_record_totals_and_rejects_unknown_kinds() -> None:
    e = Evidence(torch.tensor([-1.0, -2.0]), "estimate", "x", torch.tensor([0.3, 0.4]), torch.tensor([2.0, 4.0]), 10)
    assert e.total() == pytest.approx((-3.0, 0.5))
    assert e.per_observed_entry().tolist() == [-0.5, -0.5]
    assert "± 0.5" in repr(e)
    with pytest.raises(ValueError, match="kind"):
        Evidence(torch.zeros(1), "guess", "x", torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match=r"\[S, B\]"):
        importance_sampling(torch.zeros(1, 3), torch.ones(3))


# --------------------------------------------------------------------------- comparing memories
@pytest.fixture(scope="module")
def separated():
    """30 items in 5-D, 10 apart; 120 held-out cues drawn from the s₀ = 0.3 density plus σ = 0.2."""
    g = torch.Generator().manual_seed(1)
    items = 10 * torch.randn(30, 5, generator=g, dtype=F64)
    pick = torch.randint(0, 30, (120,), generator=g)
    cues = items[pick] + math.sqrt(0.3**2 + 0.2**2) * torch.randn(120, 5, generator=g, dtype=F64)
    return items, cues


def kde(items: torch.Tensor, s: float) -> varmem.KernelDensityMemory:
    return varmem.KernelDensityMemory(items.shape[1], bandwidth=s, noise_scale=0.2, dtype=F64).write(items)


def test_compare_evidence_reports_the_exact_elpd_and_arviz_weights(separated) -> None:
    items, cues = separated
    evidences = {"s=0.3": kde(items, 0.3).evidence(cues), "s=0.1": kde(items, 0.1).evidence(cues)}
    table = compare_evidence(evidences)
    assert list(table.index) == ["s=0.3", "s=0.1"]  # the true bandwidth ranks first
    for name, e in evidences.items():
        values = e.log_evidence.numpy()
        assert table.loc[name, "elpd_loo"] == pytest.approx(values.sum(), rel=1e-12)
        assert table.loc[name, "se"] == pytest.approx(math.sqrt(len(values) * values.var()), rel=1e-12)
    diff = (evidences["s=0.3"].log_evidence - evidences["s=0.1"].log_evidence).numpy()
    assert table.loc["s=0.1", "elpd_diff"] == pytest.approx(diff.sum(), rel=1e-9)
    assert table.loc["s=0.1", "dse"] == pytest.approx(math.sqrt(len(diff) * diff.var()), rel=1e-9)
    assert table["weight"].sum() == pytest.approx(1.0) and table.loc["s=0.3", "weight"] > 0.9
    elpd = evidence_elpd(evidences["s=0.3"])
    assert np.isnan(elpd["p_loo"]) and (elpd["pareto_k"].values == 0).all()
    with pytest.raises(ValueError, match="same cues"):
        compare_evidence({"a": evidences["s=0.3"], "b": kde(items, 0.3).evidence(cues[:5])})
    with pytest.raises(TypeError, match="varmem.Evidence"):
        compare_evidence({"a": evidences["s=0.3"], "b": 1.0})


def test_evidence_grid_finds_the_generating_bandwidth_and_its_curve_is_informative(separated) -> None:
    items, cues = separated
    grid = evidence_grid(lambda s: kde(items, s), [0.1, 0.2, 0.3, 0.4, 0.6], cues)
    assert grid.loc[grid["best"], "value"].item() == 0.3
    by_value = grid.set_index("value")["log_evidence"]
    assert by_value[0.3] - by_value[0.1] > 100  # negative control: a wrong bandwidth costs evidence
    assert by_value[0.3] - by_value[0.6] > 20
    assert (grid["stderr"] == 0).all() and set(grid["kind"]) == {"exact"}


def test_evidence_elpd_takes_p_loo_from_the_log_likelihood_of_posterior_draws(kde_1d) -> None:
    """p_loo = lppd - elpd_loo with lppd_b = log mean_s p(x_b | z_s), z_s exact posterior draws."""
    cues = torch.tensor([[0.0], [1.2]], dtype=F64)
    evidence = kde_1d.evidence(cues)
    data = varmem.to_inference_data(retrieval=kde_1d.retrieve(cues), memory=kde_1d, data=cues, num_samples=500)
    ll = data.log_likelihood["x"].values[0]  # [S, B]
    lppd = (torch.logsumexp(torch.as_tensor(ll), 0) - math.log(500)).sum()
    elpd = evidence_elpd(evidence, log_likelihood=ll)
    assert elpd["p_loo"] == pytest.approx(float(lppd) - float(evidence.log_evidence.sum()), rel=1e-12)
    assert elpd["p_loo"] > 0  # the cue's own posterior predicts it better than the leave-one-out one
    assert elpd["n_samples"] == 500
    with pytest.raises(ValueError, match="one column per cue"):
        evidence_elpd(evidence, log_likelihood=ll[:, :1])
    with pytest.raises(TypeError, match="varmem.Evidence"):
        evidence_elpd(evidence.log_evidence)


# --------------------------------------------------------------------------- details (mutation testing)
def test_importance_sampling_fields_and_the_delta_method_stderr_by_hand() -> None:
    """Weights w = (1, 3): log mean = log 2; sd(w)/mean(w) with the unbiased sd is √2/2, over √S."""
    log_w = torch.log(torch.tensor([[1.0], [3.0]], dtype=F64))
    e = importance_sampling(log_w, torch.tensor([5.0], dtype=F64), method="m", kind="lower_bound")
    assert float(e.log_evidence) == pytest.approx(math.log(2.0), abs=1e-12)
    assert float(e.stderr) == pytest.approx(math.sqrt(2.0) / 2 / math.sqrt(2.0), abs=1e-12)
    assert float(e.ess) == pytest.approx(16 / 10, abs=1e-12)  # (1 + 3)² / (1 + 9)
    assert (e.kind, e.method, e.num_samples, e.n_observed.tolist()) == ("lower_bound", "m", 2, [5.0])


def test_evidence_record_details() -> None:
    exact = Evidence(torch.tensor([-3.0]), "exact", "closed_form", torch.zeros(1), torch.tensor([1.0]))
    assert "±" not in repr(exact) and "exact" in repr(exact)
    assert exact.per_observed_entry().tolist() == [-3.0]  # one observed entry: the evidence itself


def test_evidence_elpd_of_an_estimate_reports_no_pareto_k_and_warns_on_a_large_error() -> None:
    values = torch.tensor([-1.0, -2.0, -4.0], dtype=F64)
    small = Evidence(values, "estimate", "is", torch.full((3,), 0.1, dtype=F64), torch.ones(3), num_samples=64)
    large = Evidence(values, "estimate", "is", torch.full((3,), 0.3, dtype=F64), torch.ones(3), num_samples=64)
    for e, warn in ((small, False), (large, True)):  # total stderr √3·0.1 = 0.17 and √3·0.3 = 0.52
        elpd = evidence_elpd(e)
        assert np.isnan(elpd["pareto_k"].values).all() and elpd["warning"] is warn
        assert elpd["n_samples"] == 64 and elpd["n_data_points"] == 3 and elpd["good_k"] == 0.7
        assert elpd["loo_i"].name == "loo_i" and elpd["loo_i"].dims == ("query",)
        np.testing.assert_array_equal(elpd["loo_i"].values, values.numpy())
    exact = evidence_elpd(Evidence(values, "exact", "c", torch.zeros(3), torch.ones(3)))
    assert exact["n_samples"] == 0 and exact["pareto_k"].dims == ("query",)


def test_compare_evidence_passes_the_weighting_method_and_names_bad_entries(separated) -> None:
    items, cues = separated
    evidences = {"s=0.3": kde(items, 0.3).evidence(cues[:20]), "s=0.4": kde(items, 0.4).evidence(cues[:20])}
    table = compare_evidence(evidences, method="pseudo-BMA")
    elpd = table["elpd_loo"]
    z = np.exp(elpd - elpd.max())
    np.testing.assert_allclose(table["weight"].values, (z / z.sum()).values, rtol=1e-9)  # pseudo-BMA: ∝ exp(elpd)
    assert table.loc["s=0.4", "weight"] > 1e-6  # not stacking's all-or-nothing here
    with pytest.raises(ValueError, match="at least two"):
        compare_evidence({"s=0.3": evidences["s=0.3"]})
    with pytest.raises(ValueError, match="at least two"):
        compare_evidence([evidences["s=0.3"], evidences["s=0.4"]])
    with pytest.raises(TypeError, match=r"\['b'\]"):
        compare_evidence({"a": evidences["s=0.3"], "b": 1.0})


def test_evidence_grid_passes_the_mask_and_reports_the_mean_per_cue(separated) -> None:
    items, cues = separated
    mask = torch.ones_like(cues[:10], dtype=torch.bool)
    mask[:, 3:] = False
    grid = evidence_grid(lambda s: kde(items, s), [0.3], cues[:10], mask)
    exact = kde(items, 0.3).evidence(cues[:10], mask)
    assert grid.loc[0, "log_evidence"] == pytest.approx(exact.total()[0], rel=1e-12)
    assert grid.loc[0, "per_cue"] == pytest.approx(exact.total()[0] / 10, rel=1e-12)
    with pytest.raises(ValueError, match="at least one value"):
        evidence_grid(lambda s: kde(items, s), [], cues)


def test_on_arviz_1_the_evidence_becomes_arviz_stats_elpd_data(monkeypatch) -> None:
    """ArviZ ≥ 1 (not installable here: it needs Python ≥ 3.12) keeps ELPDData in arviz_stats.utils
    as a keyword-only dataclass (kind, elpd, se, p, n_samples, n_data_points, scale, warning,
    good_k, elpd_i, pareto_k), and its compare takes no ``ic``: a fake with that layout checks that
    varmem fills every field with the numbers it gives ArviZ 0.x."""
    import dataclasses
    import sys
    import types

    import varmem.analysis as analysis

    @dataclasses.dataclass(kw_only=True)
    class ELPDDataLOO:
        kind: str
        elpd: float
        se: float
        p: float
        n_samples: int
        n_data_points: int
        scale: str
        warning: bool
        good_k: float
        elpd_i: object = None
        pareto_k: object = None

    calls = {}

    def compare(compare_dict, method="stacking", var_name=None, reference=None):
        calls["args"] = (compare_dict, method)
        return "table"

    monkeypatch.setitem(sys.modules, "arviz_stats", types.ModuleType("arviz_stats"))
    monkeypatch.setitem(sys.modules, "arviz_stats.utils", types.SimpleNamespace(ELPDDataLOO=ELPDDataLOO))
    sys.modules["arviz_stats"].utils = sys.modules["arviz_stats.utils"]
    values = torch.tensor([-1.0, -2.0, -4.0], dtype=F64)
    e = Evidence(values, "estimate", "is", torch.full((3,), 0.3, dtype=F64), torch.ones(3), num_samples=64)
    old = evidence_elpd(e)  # the installed ArviZ 0.x
    monkeypatch.setattr(analysis, "_arviz", lambda: types.SimpleNamespace(__version__="1.1.0", compare=compare))
    new = evidence_elpd(e)
    assert isinstance(new, ELPDDataLOO) and new.kind == "loo" and new.scale == "log"
    assert (new.elpd, new.se, new.n_samples, new.n_data_points, new.warning, new.good_k) == (
        old["elpd_loo"], old["se"], old["n_samples"], old["n_data_points"], old["warning"], old["good_k"])
    assert np.isnan(new.p) and np.isnan(old["p_loo"])
    np.testing.assert_array_equal(new.elpd_i.values, old["loo_i"].values)
    np.testing.assert_array_equal(new.pareto_k.values, old["pareto_k"].values)
    assert compare_evidence({"a": e, "b": e}, method="pseudo-BMA") == "table"
    assert set(calls["args"][0]) == {"a", "b"} and calls["args"][1] == "pseudo-BMA"
