"""The fixed-point engine: the trace and the weights are by-products of the updates, with
hopfield-layers' semantics for the weights (the last update's softmax)."""

import pytest
import torch

import varmem
from varmem.helpers import WEIGHTS_LIMIT


def _patterns(n=12, d=6, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


def test_weights_are_those_of_the_last_update_as_in_hopfield_layers():
    X, beta = _patterns(), 3.0
    cue = _patterns(4, 6, seed=1)
    hop = varmem.ModernHopfield(6, beta=beta, update_steps_max=2, update_steps_eps=1e-12).write(X)
    r = hop.retrieve(cue)
    z = cue  # independent computation: three updates, the last one from z_2
    for _ in range(2):
        z = torch.softmax(beta * z @ X.T, -1) @ X
    last = torch.softmax(beta * z @ X.T, -1)
    assert r.steps == 3 and r.weights_at == "last_update"
    torch.testing.assert_close(r.weights, last)
    torch.testing.assert_close(r.pattern, last @ X)
    assert torch.equal(r.index, last.argmax(-1))
    torch.testing.assert_close(hop.association_matrix(cue), last)
    first = torch.softmax(beta * cue @ X.T, -1)
    assert not torch.allclose(last, first, atol=1e-3)  # negative control: not the softmax at the cue
    one = varmem.ModernHopfield(6, beta=beta, update_steps_max=0).write(X)
    torch.testing.assert_close(one.association_matrix(cue), first)  # one update: at the cue


@pytest.mark.parametrize("memory", ["kde", "hopfield", "mixture"])
def test_the_trace_is_the_energy_before_each_update(memory):
    X = _patterns(20, 5)
    cue = _patterns(3, 5, seed=2) + 0.1
    mem = {
        "kde": lambda: varmem.KernelDensityMemory(5, bandwidth=0.4, noise_scale=0.5, chunk_size=7),
        "hopfield": lambda: varmem.ModernHopfield(5, beta=4.0, update_steps_max=None, chunk_size=7),
        "mixture": lambda: varmem.MixtureHopfieldMemory(5, sigma=0.4, chunk_size=7),
    }[memory]().write(X)
    r = mem.retrieve(cue, method="fixed_point", max_steps=6, tol=0.0)
    assert r.trace.shape == (6, 3) and r.steps == 6 and r.converged.shape == (3,)
    z = mem.init_latent(*mem.prepare_cue(cue), "cue")
    for t in range(6):
        torch.testing.assert_close(r.trace[t], mem.energy(z, cue))
        z = mem.fixed_point_step(z, cue, None, energy=False).state
    torch.testing.assert_close(r.code, z)
    assert (r.trace.diff(dim=0) <= 1e-10).all()  # CCCP / EM: the energy never goes up


def test_what_a_default_read_keeps():
    X = _patterns(40, 4)
    hop = varmem.ModernHopfield(4, beta=2.0).write(X)
    small = hop.retrieve(X[:3])
    assert small.weights.shape == (3, 40) and small.index.shape == (3,) and small.trace.shape == (1, 3)
    lean = hop.retrieve(X[:3], trace=False, return_weights=False)
    assert lean.trace is None and lean.weights is None and lean.index is None
    torch.testing.assert_close(lean.pattern, small.pattern, rtol=0, atol=0)  # the same read
    big_batch = WEIGHTS_LIMIT // 40 + 1  # B·N above the limit: no weights, no index by default
    cues = X[torch.arange(big_batch) % 40]
    big = hop.retrieve(cues)
    assert big.weights is None and big.index is None and big.trace.shape == (1, big_batch)
    forced = hop.retrieve(cues, return_weights=True)
    assert forced.weights.shape == (big_batch, 40) and torch.equal(forced.index, forced.weights.argmax(-1))


def test_no_update_gives_the_start_and_its_responsibilities():
    X = _patterns(10, 4)
    kde = varmem.KernelDensityMemory(4, bandwidth=0.5, noise_scale=0.5).write(X)
    r = kde.retrieve(X[:2] + 0.05, method="fixed_point", max_steps=0)
    assert r.steps == 0 and r.trace.shape == (0, 2) and r.weights_at == "final_state"
    torch.testing.assert_close(r.weights, kde.item_weights(r.code, True)[0])
    torch.testing.assert_close(r.pattern, X[:2] + 0.05)


def test_memories_without_items_refuse_weights():
    rf = varmem.RandomFeatureMemory(4, beta=10.0, num_features=64).write(_patterns(5, 4))
    r = rf.retrieve(_patterns(2, 4), max_steps=2)
    assert r.weights is None and r.index is None and r.weights_at is None
    with pytest.raises(ValueError, match="no weights over stored items"):
        rf.retrieve(_patterns(2, 4), return_weights=True)
