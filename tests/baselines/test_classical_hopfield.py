"""ClassicalHopfield: Hebbian/Storkey weights against their formulas, sign dynamics against the autograd
gradient of E(s) = -½ sᵀWs, asynchronous energy descent, and the synchronous 2-cycle (negative control)."""

import pytest
import torch

import varmem
from varmem import ClassicalHopfield


def _spins(k, n, seed=0):
    bits = torch.randint(0, 2, (k, n), generator=torch.Generator().manual_seed(seed))
    return bits.to(torch.get_default_dtype()) * 2 - 1



def _net(weight):
    net = ClassicalHopfield(weight.shape[0])
    net.weight = weight.clone()
    net.count = net.count + 1
    return net


def test_hebbian_weights_are_the_outer_product_rule_with_zero_diagonal():
    X = _spins(7, 20)
    net = ClassicalHopfield(20).write(X[:3]).write(X[3:])  # incremental = one shot
    expected = X.T @ X / 20
    expected.fill_diagonal_(0)
    torch.testing.assert_close(net.weight, expected)
    assert len(net) == 7


def test_storkey_weights_follow_the_literal_rule():
    """w_ij += (1/n)(ξ_iξ_j - ξ_i h_ji - h_ij ξ_j), h_ij = Σ_{k≠i,j} w_ik ξ_k, pattern by pattern (loops)."""
    n, X = 10, _spins(6, 10, seed=1)
    w = torch.zeros(n, n)
    for x in X:
        h = torch.tensor([[sum(float(w[i, k] * x[k]) for k in range(n) if k not in (i, j)) for j in range(n)]
                          for i in range(n)])
        w = w + (torch.outer(x, x) - x[:, None] * h.T - h * x[None, :]) / n
        w.fill_diagonal_(0)
    net = ClassicalHopfield(n, rule="storkey").write(X)
    torch.testing.assert_close(net.weight, w)
    torch.testing.assert_close(net.weight, net.weight.T)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_update_is_the_sign_of_minus_the_autograd_gradient(rule):
    """s_i ← sign(-∂E/∂s_i) with E(s) = -½ sᵀWs (autograd), ties keep s_i; and a flip changes E by -Δs_i h_i."""
    net = ClassicalHopfield(30, rule=rule).write(_spins(8, 30))
    s = _spins(5, 30, seed=2).requires_grad_(True)
    (grad,) = torch.autograd.grad(net.energy(s).sum(), s)
    s = s.detach()
    new = net.preferred_spins(s, net.spin_cache(s))
    torch.testing.assert_close(new, torch.where(grad.abs() > 1e-9, -grad.sign(), s))  # |h| ≤ 1e-9: a tie
    energy = net.energy(s)
    for i in range(3):
        flipped = s.clone()
        flipped[:, i] *= -1
        torch.testing.assert_close(net.energy(flipped) - energy, 2 * s[:, i] * (s @ net.weight)[:, i])


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_every_asynchronous_update_does_not_increase_the_energy(rule):
    net = ClassicalHopfield(40, rule=rule).write(_spins(12, 40))  # α = 0.3: overloaded, many flips
    cue = _spins(6, 40, seed=3)
    r = net.retrieve(cue, method="async", trace="unit", max_steps=20)
    assert r.trace.shape[1] == 6 and r.trace.shape[0] == 40 * r.steps + 1
    assert (r.trace.diff(dim=0) <= 1e-12).all()
    assert (r.trace[-1] < r.trace[0]).all()
    assert bool(r.converged.all())
    s = r.pattern
    torch.testing.assert_close(net.preferred_spins(s, net.spin_cache(s)), s)  # a fixed point


def test_synchronous_dynamics_can_cycle_where_asynchronous_converge():
    """Negative control for the Lyapunov property: an antiferromagnetic pair from (+1, +1) flips both
    spins forever under synchronous updates (a 2-cycle, energy not decreasing); asynchronously it
    reaches the ground state E = -1 in one sweep."""
    net = _net(torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))
    cue = torch.tensor([[1.0, 1.0]])
    sync = net.retrieve(cue, method="sync", max_steps=10)
    assert bool(sync.info["two_cycle"].all()) and not bool(sync.converged.any())
    assert sync.trace[-1].item() == sync.trace[0].item() == 1.0
    async_ = net.retrieve(cue, method="async")
    assert bool(async_.converged.all()) and async_.trace[-1].item() == -1.0


def test_retrieval_from_noisy_and_partial_cues_at_low_load():
    X = _spins(10, 200)  # α = 0.05
    net = ClassicalHopfield(200).write(X)
    noisy = X.clone()
    flips = torch.rand(10, 200, generator=torch.Generator().manual_seed(4)) < 0.1
    noisy[flips] *= -1
    for method in ("async", "sync", "fixed_point"):
        r = net.retrieve(noisy, method=method)
        assert (r.pattern == X).all(), method
    mask = torch.zeros(200, dtype=torch.bool)
    mask[:80] = True  # 40 % observed, the rest unknown (NaN is allowed there)
    cue = torch.where(mask, X, torch.nan)
    r = net.retrieve(cue, mask, method="async")
    assert (r.pattern == X).all()
    r1, r2 = net.retrieve(noisy, method="async", seed=5), net.retrieve(noisy, method="async", seed=5)
    assert torch.equal(r1.trace, r2.trace) and r1.info["seed"] == 5


def test_observed_entries_stay_clamped():
    X = _spins(3, 50)
    net = ClassicalHopfield(50).write(X)
    cue = _spins(2, 50, seed=6)  # unrelated cues; clamp the first 10 entries to them
    mask = torch.zeros(2, 50, dtype=torch.bool)
    mask[:, :10] = True
    for method in ("async", "sync"):
        r = net.retrieve(cue, mask, method=method)
        assert torch.equal(r.pattern[:, :10], cue[:, :10])


def test_bad_input_raises_and_failed_write_keeps_state():
    with pytest.raises(ValueError, match="rule"):
        ClassicalHopfield(5, rule="oja")
    with pytest.raises(ValueError, match="dim"):
        ClassicalHopfield(0)
    net = ClassicalHopfield(6, rule="storkey")
    with pytest.raises(ValueError, match="empty"):
        net.retrieve(torch.ones(1, 6))
    net.write(_spins(2, 6))
    before = net.weight.clone()
    with pytest.raises(ValueError, match="bipolar"):
        net.write(torch.tensor([[1.0, -1.0, 0.5, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        net.write(torch.tensor([[1.0, -1.0, float("nan"), 1.0, 1.0, 1.0]]))
    torch.testing.assert_close(net.weight, before)
    assert len(net) == 2
    cue = torch.ones(1, 6)
    with pytest.raises(ValueError, match="unknown option"):
        net.retrieve(cue, method="async", max_sweeps=3)
    with pytest.raises(ValueError, match="trace"):
        net.retrieve(cue, method="async", trace="step")
    with pytest.raises(ValueError, match="seed"):
        net.retrieve(cue, method="async", seed=-1)
    with pytest.raises(ValueError, match="max_steps"):
        net.retrieve(cue, method="sync", max_steps=-1)
    with pytest.raises(ValueError, match="unknown retrieval method"):
        net.retrieve(cue, method="exact")
    with pytest.raises(ValueError, match="NaN"):
        net.retrieve(torch.full((1, 6), float("nan")))
    assert not hasattr(net, "model")  # no Pyro model (2^D states), and no stub pretending to have one
    with pytest.raises(TypeError, match="option trace"):
        net.retrieve(cue, method="async", trace=1)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_save_load_round_trip(tmp_path, rule):
    net = ClassicalHopfield(16, rule=rule).write(_spins(3, 16))
    back = varmem.load(varmem.save(net, tmp_path / "net.safetensors"))
    assert isinstance(back, ClassicalHopfield) and back.config() == net.config() and len(back) == 3
    torch.testing.assert_close(back.weight, net.weight)
    cue = _spins(2, 16, seed=7)
    assert torch.equal(back.retrieve(cue).pattern, net.retrieve(cue).pattern)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_float32_and_float64_networks_take_the_same_steps_in_the_collapse_regime(rule):
    """At load 0.2 many fields are small (Hebbian ones are multiples of 1/n); a float32 network must make
    the same sign decisions as a float64 one: same sync trajectory, and the same async one for a seed."""
    n = 200
    g = torch.Generator().manual_seed(0)
    patterns = torch.where(torch.rand(40, n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    nets = {dt: varmem.ClassicalHopfield(n, rule=rule, dtype=dt).write(patterns.to(dt))
            for dt in (torch.float32, torch.float64)}
    runs = {dt: net.retrieve(patterns.to(dt), method="sync", max_steps=20) for dt, net in nets.items()}
    assert torch.equal(runs[torch.float32].pattern.double(), runs[torch.float64].pattern)
    assert runs[torch.float32].steps == runs[torch.float64].steps
    cues = patterns[:10]
    runs = {dt: net.retrieve(cues.to(dt), method="async", max_steps=20, seed=3) for dt, net in nets.items()}
    assert torch.equal(runs[torch.float32].pattern.double(), runs[torch.float64].pattern)
