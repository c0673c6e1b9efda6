"""The public building blocks for memory authors."""

import pyro
import pytest
import torch

from varmem.helpers import (
    WEIGHTS_LIMIT,
    boltzmann_model,
    clamp,
    make_generator,
    masked_normal,
    match_rows,
    row_selection,
    start_state,
    want_weights,
)


def test_weights_policy():
    assert want_weights(None, 4, WEIGHTS_LIMIT // 4) and not want_weights(None, 4, WEIGHTS_LIMIT // 4 + 1)
    assert want_weights(True, 10**6, 10**6) and not want_weights(False, 1, 1)
    with pytest.raises(TypeError, match="return_weights"):
        want_weights("yes", 1, 1)


def test_row_selection_accepts_what_forget_documents_and_refuses_the_rest():
    sel = lambda i: row_selection(i, 5).nonzero().flatten().tolist()  # noqa: E731
    assert sel(0) == [0] and sel(-1) == [4] and sel([1, 3]) == [1, 3] and sel(range(2)) == [0, 1]
    assert sel(slice(3, None)) == [3, 4] and sel(torch.tensor([2])) == [2] and sel([]) == []
    assert sel(torch.tensor([True, False, True, False, False])) == [0, 2]
    for bad in (None, 1.0, "0", True, [0.5], slice(0.5, 2)):
        with pytest.raises(TypeError):
            row_selection(bad, 5)
    with pytest.raises(IndexError, match="out of range"):
        row_selection([0, 5], 5)
    with pytest.raises(ValueError, match=r"bool index must have shape \[5\]"):
        row_selection(torch.tensor([True, False]), 5)


def test_match_rows_takes_one_distinct_row_per_target():
    stored = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert match_rows(stored, torch.tensor([[0.0, 0.0], [0.0, 0.0]])).tolist() == [0, 2]
    assert match_rows(stored, torch.tensor([[1.0, 1.0 + 1e-9]]), atol=1e-6).tolist() == [1]
    with pytest.raises(KeyError, match=r"items \[1\] are not stored"):
        match_rows(stored, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))  # only one copy of it is stored
    for bad in ("x", None, True, -1.0):
        with pytest.raises((TypeError, ValueError), match="atol"):
            match_rows(stored, stored[:1], atol=bad)


def test_start_state_resolves_names_and_checks_tensors():
    cue = torch.ones(2, 3)
    owner = object()
    assert torch.equal(start_state("cue", cue, {"cue": cue.clone}, owner), cue)
    assert start_state(torch.zeros(2, 3, dtype=torch.float32), cue, {}, owner).dtype == cue.dtype
    with pytest.raises(ValueError, match=r"unknown init 'zeros' for object; choose 'cue' or a tensor"):
        start_state("zeros", cue, {"cue": cue.clone}, owner)
    with pytest.raises(ValueError, match="init tensor must have shape"):
        start_state(torch.zeros(3, 3), cue, {}, owner)
    with pytest.raises(ValueError, match="NaN or inf"):
        start_state(torch.full((2, 3), float("nan")), cue, {}, owner)


def test_masked_normal_leaves_unobserved_entries_out_and_clamp_puts_the_cue_back():
    z, x = torch.zeros(2, 3), torch.tensor([[1.0, 2.0, 100.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([True, True, False])
    lp = masked_normal(z, 1.0, mask).log_prob(x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x[:, :2]).sum(-1)
    torch.testing.assert_close(lp, expected)  # the 100 on the masked entry does not count
    assert torch.equal(clamp(z, x, mask), torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert clamp(z, x, None) is z


def test_boltzmann_model_scores_the_clamped_state():
    cue, mask = torch.tensor([[5.0, 6.0]]), torch.tensor([True, False])
    z = torch.tensor([[0.0, 1.0]])
    tr = pyro.poutine.trace(pyro.poutine.condition(boltzmann_model, data={"s": z})).get_trace(
        "s", 2, lambda v: -(v * v).sum(-1), cue, mask)
    torch.testing.assert_close(tr.log_prob_sum(), torch.tensor(-(25.0 + 1.0)))


def test_generators_are_seeded_or_absent():
    assert make_generator(None) is None
    a, b = make_generator(3), make_generator(3)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    with pytest.raises(TypeError, match="seed"):
        make_generator(1.5)
