"""EntropicMemory and EntropicHeteroMemory against the EAM papers' definitions, the official code's
operations (re-derived by hand here), the exact invariants at m = 1, the 8×8-digits table of
``reference/seed-systems.md`` §4.4, and Pyro's enumeration of the same model."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate, infer_discrete

import varmem
from varmem.memories.entropic import EntropicHeteroMemory, EntropicMemory, recognition_scores
from varmem.memories.entropic.register import quantise, triangular_rows


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8×8 digits, split 2/3 fill, 1/3 test by a seeded permutation."""
    d = varmem.datasets.load_digits(dtype=torch.float64)
    x, y = d.flat(), d.labels
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_fill = 2 * len(x) // 3
    return x[perm[:n_fill]], y[perm[:n_fill]], x[perm[n_fill:]], y[perm[n_fill:]]


# --- the m = 1 invariants and the digits table ----------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_one_row_gives_precision_one_tenth_recall_one_entropy_zero_exactly(digits, weighted):
    """m = 1: every register recognises every cue, so mean precision = mean_k n_k / N = 1/10 exactly
    for any class sizes (seed-systems.md §4.3, the first column of the MNIST table), recall 1, H 0."""
    fx, fy, tx, ty = digits
    memory = EntropicMemory(64, rows=1, registers=10, weighted=weighted).write(fx, labels=fy)
    s = recognition_scores(memory, tx, ty)
    assert s["precision"] == pytest.approx(0.1, abs=1e-12)
    assert s["recall"] == 1.0 and s["entropy"] == 0.0
    assert not torch.allclose(s["precision_k"], torch.full((10,), 0.1, dtype=torch.float64))  # unequal classes


REFERENCE_DIGITS = {4: (44.6, 92.3, 1.34), 8: (57.4, 83.0, 2.03), 16: (76.3, 58.6, 2.70)}
"""seed-systems.md §4.4 [ours]: binary per-class EAM on the 8×8 digits, 2/3 fill, 1/3 test."""


@pytest.mark.parametrize("rows", sorted(REFERENCE_DIGITS))
def test_binary_eam_on_digits_matches_the_reference_table(digits, rows):
    """Precision / recall within 5 points (the reference's split is not ours), entropy within 0.05
    bits (it depends on the fill only through which 2/3 of the digits fill it)."""
    fx, fy, tx, ty = digits
    memory = EntropicMemory(64, rows=rows, registers=10, weighted=False).write(fx, labels=fy)
    s = recognition_scores(memory, tx, ty)
    p, r, h = REFERENCE_DIGITS[rows]
    assert 100 * s["precision"] == pytest.approx(p, abs=5)
    assert 100 * s["recall"] == pytest.approx(r, abs=5)
    assert s["entropy"] == pytest.approx(h, abs=0.05)


def test_precision_and_entropy_rise_and_recall_falls_with_the_rows(digits):
    """The papers' trade-off (seed-systems.md §4.3): monotone in m up to the 17 grey levels."""
    fx, fy, tx, ty = digits
    scores = [recognition_scores(EntropicMemory(64, rows=m, registers=10, weighted=False).write(fx, labels=fy),
                                 tx, ty) for m in (1, 2, 4, 8, 16)]
    for key, sign in (("precision", 1), ("entropy", 1), ("recall", -1)):
        values = [sign * s[key] for s in scores]
        assert values == sorted(values), key


# --- the register's operations, re-derived by hand ------------------------------------------------
def _by_hand(items: np.ndarray, m: int) -> np.ndarray:
    """An independent λ-register: a Python loop over items and columns."""
    table = np.zeros((items.shape[1], m))
    for x in items:
        for j, value in enumerate(x):
            table[j, int(np.floor(min(max(value, 0), 1) * (m - 1) + 0.5))] += 1
    return table


def test_register_counts_entropy_and_recognition_against_a_loop():
    rng = np.random.default_rng(0)
    items = rng.random((40, 6))
    memory = EntropicMemory(6, rows=5).write(torch.as_tensor(items))
    table = _by_hand(items, 5)
    np.testing.assert_array_equal(memory.counts[0].numpy(), table)
    p = table / table.sum(1, keepdims=True)
    h = np.mean([-sum(v * math.log2(v) for v in col if v > 0) for col in p])
    assert float(memory.entropy()) == pytest.approx(h, abs=1e-12)
    binary = EntropicMemory(6, rows=5, weighted=False).write(torch.as_tensor(items))
    assert float(binary.entropy()) == pytest.approx(np.mean(np.log2((table > 0).sum(1))), abs=1e-12)
    assert len(memory) == 40 and memory.recognise(torch.as_tensor(items)).recognised.all()


def test_recognition_counts_mismatches_and_applies_iota_kappa_xi():
    memory = EntropicMemory(3, rows=3).write(torch.tensor([[0.0, 0.0, 0.0]] * 3 + [[1.0, 0.0, 0.5]]))
    odd = torch.tensor([[1.0, 1.0, 0.5]])  # column 0 row 2 (weight 1), column 1 row 2 (empty), column 2 row 1 (1)
    r = memory.recognise(odd)
    assert r.mismatches.tolist() == [[1]] and not r.recognised.any()
    tolerant = EntropicMemory(3, rows=3, xi=1)
    tolerant.load_state_dict(memory.state_dict())
    assert tolerant.recognise(odd).recognised.all()
    # ι = 1: column means of the non-zero cells are 2, 4, 2, so the cells of weight 1 drop out
    strict = EntropicMemory(3, rows=3, iota=1.0, xi=3)
    strict.load_state_dict(memory.state_dict())
    assert strict.recognise(odd).mismatches.tolist() == [[3]]
    # κ: mean cue weight (1 + 0 + 1)/3 against κ times the mean of the column means (2 + 4 + 2)/3
    picky = EntropicMemory(3, rows=3, kappa=0.25, xi=1)
    picky.load_state_dict(memory.state_dict())
    assert picky.recognise(odd).recognised.all()  # 2/3 >= 0.25 · 8/3
    picky = EntropicMemory(3, rows=3, kappa=0.3, xi=1)
    picky.load_state_dict(memory.state_dict())
    assert not picky.recognise(odd).recognised.any()  # 2/3 < 0.3 · 8/3
    # an unobserved column is never a mismatch
    assert memory.recognise(odd, torch.tensor([True, False, True])).recognised.all()


def test_the_beta_read_picks_the_recognising_register_of_least_entropy():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    memory = EntropicMemory(2, rows=2, registers=3).write(x, labels=[0, 1, 1])
    assert memory.entropy().tolist() == [0.0, 0.5, 0.0]  # register 2 is empty (uniform, not used)
    r = memory.retrieve(torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), seed=0)
    assert r.info["register"].tolist() == [0, 1, -1] and r.info["recognised"].tolist() == [True, True, False]
    assert torch.equal(r.pattern[2], torch.tensor([1.0, 1.0]))  # rejected: the cue as the register reads it
    with pytest.raises(ValueError, match="labels"):
        memory.write(x)


# --- β-retrieval ----------------------------------------------------------------------------------
def test_weighted_beta_retrieval_draws_from_the_exact_posterior():
    """Frequencies of 20000 β-reads of one cue against ``p(v_j | x)`` of the closed form: within 5
    standard errors; negative control: the posterior of a memory with another σ is rejected."""
    g = torch.Generator().manual_seed(1)
    items = torch.rand(200, 3, generator=g)
    memory = EntropicMemory(3, rows=6, sigma=0.2).write(items)
    cue = torch.tensor([[0.4, 0.5, 0.9]])
    reads = memory.retrieve(cue.expand(20000, 3), seed=0).pattern
    rows = quantise(reads, 6)
    freq = torch.nn.functional.one_hot(rows, 6).to(torch.float64).mean(0)  # [3, 6]
    post = memory.posterior(cue).rows[0, 0]  # [3, 6]
    se = (post * (1 - post) / 20000).sqrt() + 1e-9
    assert ((freq - post).abs() / se).max() < 5
    other = EntropicMemory(3, rows=6, sigma=0.05).write(items).posterior(cue).rows[0, 0]
    assert ((freq - other).abs() / se).max() > 10


def test_binary_beta_retrieval_is_a_rounded_triangular_on_the_run_around_the_cue():
    marked = torch.tensor([[True, True, True, True, True, False, True, True]])  # run 0..4, then 6..7
    mode = torch.full((50000, 1), 3)
    u = torch.rand(50000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = triangular_rows(marked, mode, u)[:, 0]
    assert rows.min() >= 0 and rows.max() <= 4
    ref = np.round(np.random.default_rng(0).triangular(0, 3, 4, 200000))  # numpy's sampler, independently
    for v in range(5):
        assert float((rows == v).double().mean()) == pytest.approx(float((ref == v).mean()), abs=0.01)
    other_run = triangular_rows(marked, torch.full((1000, 1), 6), u[:1000])[:, 0]
    assert set(other_run.tolist()) == {6, 7}  # the run 6..7 around the cue, never across the gap at 5
    lone = torch.tensor([[False, False, True, False]])
    assert (triangular_rows(lone, torch.full((10, 1), 2), u[:10]) == 2).all()  # a run of one: the cue row


# --- the probabilistic reading: Pyro's enumeration agrees with the closed form ----------------------
def _small_memory() -> tuple[EntropicMemory, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    items = torch.rand(30, 4, generator=g)
    labels = torch.randint(0, 2, (30,), generator=g)
    memory = EntropicMemory(4, rows=5, registers=2, pseudo_count=0.3, sigma=0.3).write(items, labels=labels)
    cue = torch.rand(3, 4, generator=g)
    mask = torch.tensor([[True, True, False, True], [True, False, False, True], [True, True, True, True]])
    return memory, cue, mask


def test_trace_enum_elbo_of_the_register_model_is_minus_the_exact_log_evidence():
    memory, cue, mask = _small_memory()
    loss = TraceEnum_ELBO(max_plate_nesting=2).loss(config_enumerate(memory.register_model), lambda *a, **k: None,
                                                    cue, mask)
    exact = memory.evidence(cue, mask)
    assert exact.kind == "exact"
    assert loss == pytest.approx(-float(exact.log_evidence.sum()), rel=1e-9)


def test_infer_discrete_draws_match_the_closed_form_posterior():
    """4000 exact draws from Pyro (``infer_discrete`` on the enumerated register model) against the
    closed form's ``p(k | x)`` and column marginals: within 5 standard errors; negative control:
    the posterior of the cue without its mask is rejected."""
    memory, cue, mask = _small_memory()
    post = memory.posterior(cue, mask, return_weights=True)
    S = 4000
    model = infer_discrete(config_enumerate(memory.register_model), first_available_dim=-3, temperature=1)
    pyro.set_rng_seed(0)
    trace = poutine.trace(model).get_trace(cue.repeat(S, 1), mask.repeat(S, 1))  # S copies of each cue
    k = trace.nodes["register"]["value"].reshape(S, 3)
    v = trace.nodes["row"]["value"].reshape(S, 3, 4)
    freq_k = torch.nn.functional.one_hot(k, 2).double().mean(0)
    se = (post.weights * (1 - post.weights) / S).sqrt() + 1e-9
    assert ((freq_k - post.weights).abs() / se).max() < 5
    marg = torch.einsum("bk,bknm->bnm", post.weights, post.rows)
    freq_v = torch.nn.functional.one_hot(v, 5).double().mean(0)
    se_v = (marg * (1 - marg) / S).sqrt() + 1e-9
    assert ((freq_v - marg).abs() / se_v).max() < 5
    unmasked = memory.posterior(cue, None, return_weights=True)
    wrong = torch.einsum("bk,bknm->bnm", unmasked.weights, unmasked.rows)
    assert ((freq_v - wrong).abs() / se_v).max() > 10
    exact_draws = post.sample(S, torch.Generator().manual_seed(0))
    freq_exact = torch.nn.functional.one_hot(quantise(exact_draws, 5), 5).double().mean(0)
    assert ((freq_exact - marg).abs() / se_v).max() < 5


def test_energy_is_the_negative_log_joint_at_grid_points_and_exact_mean_is_the_posterior_mean():
    memory, cue, mask = _small_memory()
    post = memory.posterior(cue, mask)
    z = post.sample(1, torch.Generator().manual_seed(3))[0]
    # -log p(z, x) = -log p(z | x) - log p(x): the energy against the closed form's two parts
    torch.testing.assert_close(memory.energy(z, cue, mask), -post.log_prob(z) - post.log_evidence, rtol=1e-10,
                               atol=1e-10)
    draws = post.sample(20000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(draws.mean(0), post.mean, atol=0.02, rtol=0)
    read = memory.retrieve(cue, mask, method="exact")
    assert torch.equal(read.pattern, post.mean) and read.weights.shape == (3, 2)


# --- the hetero-associative memory ------------------------------------------------------------------
def _pairs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_hetero_register_recognise_and_entropy_against_loops():
    x = _pairs(30)
    memory = EntropicHeteroMemory(12, split=5, rows=4, rows_b=3).write(x)
    a = np.floor(x[:, :5].numpy() * 3 + 0.5).astype(int)
    b = np.floor(x[:, 5:].numpy() * 2 + 0.5).astype(int)
    table = np.zeros((5, 7, 4, 3))
    for t in range(30):
        for i in range(5):
            for j in range(7):
                table[i, j, a[t, i], b[t, j]] += 1
    np.testing.assert_array_equal(memory.counts.numpy(), table)
    p = table.reshape(5, 7, 12) / 30
    h = np.mean(-np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0), -1))
    assert float(memory.entropy()) == pytest.approx(h, abs=1e-12)
    ok, mismatches = memory.recognise(x)
    assert ok.all() and (mismatches == 0).all()
    ok, mismatches = memory.recognise(_pairs(30, seed=1))  # unregistered pairs: negative control
    assert (~ok).float().mean() > 0.5


def test_hetero_projection_and_the_three_reads_on_a_hand_example():
    """Two pairs sharing a[0]: the projection of the cue a = (0, 0) allows only b = pair 0's."""
    pairs = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    memory = EntropicHeteroMemory(4, split=2, rows=2).write(pairs)
    mask = torch.tensor([True, True, False, False])
    for method in ("random", "sample_and_test", "search_and_test"):
        r = memory.retrieve(pairs, mask, method=method, seed=0)
        assert torch.equal(r.pattern, pairs) and r.info["recognised"].all(), method
    # b from a: cue a = (1, 1) was never registered with anything: column b_0 of the projection is empty
    r = memory.retrieve(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), mask, method="random", seed=0)
    assert not r.info["recognised"].any()
    # a from b (the other direction)
    back = memory.retrieve(pairs, ~mask, method="search_and_test", seed=0)
    assert torch.equal(back.pattern, pairs)


def test_search_and_test_never_ends_farther_than_its_sample_and_sampling_beats_random():
    """On pairs whose b is a noisy copy of a reversed (b carries a), the back-projection distance
    finds better partners than one random draw; hill climbing never raises that distance."""
    g = torch.Generator().manual_seed(3)
    a = torch.rand(300, 6, generator=g, dtype=torch.float64)
    b = (a.flip(-1) + 0.1 * torch.randn(300, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    x = torch.cat([a, b], 1)
    memory = EntropicHeteroMemory(12, split=6, rows=6).write(x)
    cues, mask = x[:100], torch.arange(12) < 6
    sample = memory.retrieve(cues, mask, method="sample_and_test", seed=5, num_samples=16)
    search = memory.retrieve(cues, mask, method="search_and_test", seed=5, num_samples=16)
    assert (search.info["distance"] <= sample.info["distance"] + 1e-12).all() and search.converged.all()
    assert search.steps >= 1 and (search.info["distance"] < sample.info["distance"]).any()
    rand = memory.retrieve(cues, mask, method="random", seed=5)
    err = {name: float(((r.pattern - cues)[:, 6:] ** 2).mean()) for name, r in
           (("random", rand), ("sample", sample), ("search", search))}
    assert err["sample"] < 0.8 * err["random"] and err["search"] < 0.85 * err["random"]


def test_the_entropic_memory_is_an_optional_compare_family():
    from varmem.comparison.command import CompareConfig
    from varmem.comparison.presets import ALL_FAMILIES, FAMILIES, OPTIONAL_FAMILIES, default_contenders

    assert "entropic" in OPTIONAL_FAMILIES and "entropic" in ALL_FAMILIES and "entropic" not in FAMILIES
    assert "entropic" not in [c.name for c in default_contenders(64)]
    (contender,) = default_contenders(64, families=("entropic",), methods={"entropic": ["beta", "exact"]})
    memory = contender.build(64)
    assert isinstance(memory, EntropicMemory) and memory.rows == 16 and memory.sigma == 0.025
    assert contender.methods == ("beta", "exact")
    assert CompareConfig(memories=("entropic", "kde")).validate().memories == ("entropic", "kde")
    with pytest.raises(ValueError, match="reads with"):
        default_contenders(64, families=("entropic",), methods={"entropic": ["map"]})


def test_hetero_recognition_tells_registered_associations_from_others(digits):
    """Digits paired with their class's mean digit: an unseen digit with its own class's mean fits
    the relation far better than with another class's (mean mismatching cells of 4096: about 3
    against about 44 here; asserted: fewer than a quarter), and is recognised more often."""
    fx, fy, tx, ty = digits
    protos = torch.stack([fx[fy == c].mean(0) for c in range(10)])
    memory = EntropicHeteroMemory(128, split=64, rows=8).write(torch.cat([fx, protos[fy]], 1))
    same_ok, same = memory.recognise(torch.cat([tx, protos[ty]], 1))
    other_ok, other = memory.recognise(torch.cat([tx, protos[(ty + 3) % 10]], 1))
    assert same.double().mean() < 0.25 * other.double().mean()
    assert same_ok.double().mean() > other_ok.double().mean() + 0.2
