"""The Retrieval record's shape contract is enforced where it is built."""

import pytest
import torch

from varmem.retrieval import WEIGHTS_AT, Retrieval


def test_trace_is_two_dimensional_with_one_column_per_cue():
    p = torch.zeros(3, 2)
    assert Retrieval(p, "m", trace=torch.zeros(5, 3)).trace.shape == (5, 3)
    assert Retrieval(p, "m", trace=torch.zeros(0, 3)).trace.shape == (0, 3)
    for bad in (torch.zeros(5), torch.zeros(5, 2), torch.zeros(5, 3, 1)):
        with pytest.raises(ValueError, match=r"trace must be \[T, B=3\]"):
            Retrieval(p, "m", trace=bad)


def test_converged_is_none_or_one_flag_per_cue():
    p = torch.zeros(3, 2)
    assert Retrieval(p, "m").converged is None  # no stopping rule: not silently all True
    assert Retrieval(p, "m", converged=torch.ones(3, dtype=torch.bool)).converged.all()
    with pytest.raises(ValueError, match="converged"):
        Retrieval(p, "m", converged=torch.ones(2, dtype=torch.bool))


def test_weights_say_where_they_were_taken():
    p, w = torch.zeros(2, 4), torch.full((2, 5), 0.2)
    r = Retrieval(p, "m", weights=w, weights_at="last_update")
    assert r.weights_at == "last_update" and set(WEIGHTS_AT) >= {"posterior", "last_update", "final_state"}
    with pytest.raises(ValueError, match="weights_at"):
        Retrieval(p, "m", weights=w)
    with pytest.raises(ValueError, match=r"weights must be \[B=2, N\]"):
        Retrieval(p, "m", weights=torch.ones(3, 5), weights_at="posterior")
    assert Retrieval(p, "m", weights_at="posterior").weights_at is None  # no weights: nowhere


def test_code_defaults_to_the_pattern_and_detach_drops_the_graph():
    p = torch.zeros(2, 3, requires_grad=True) * 2
    r = Retrieval(p, "m", trace=p.sum(-1, keepdim=True).T.expand(4, 2))
    assert r.code is r.pattern and len(r) == 2
    d = r.detach()
    assert not d.pattern.requires_grad and not d.trace.requires_grad and d.method == "m"
