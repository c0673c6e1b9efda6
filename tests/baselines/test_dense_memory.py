"""DenseAssociativeMemory: Krotov-Hopfield energy and spin-flip update against autograd, asynchronous
energy descent, capacity beyond the classical network (negative control), and bad input."""

import math

import numpy as np
import pytest
import torch

import varmem
from varmem import ClassicalHopfield, DenseAssociativeMemory


def _spins(k, n, seed=0):
    bits = torch.randint(0, 2, (k, n), generator=torch.Generator().manual_seed(seed))
    return bits.to(torch.get_default_dtype()) * 2 - 1



CONFIGS = [
    {"power": 3},
    {"power": 4},
    {"power": 3, "rectified": True},
    {"interaction": "exponential", "beta": 0.3},
]


def test_energy_matches_the_formula():
    X, s = _spins(5, 12), _spins(4, 12, seed=1)
    overlaps = s @ X.T
    for kw, F in [
        ({"power": 3}, lambda m: m**3),
        ({"power": 2, "rectified": True}, lambda m: m.clamp_min(0) ** 2),
        ({"interaction": "exponential", "beta": 0.5}, lambda m: torch.exp(0.5 * m)),
    ]:
        dam = DenseAssociativeMemory(12, **kw).write(X)
        torch.testing.assert_close(dam.energy(s), -F(overlaps).sum(-1))


@pytest.mark.parametrize("kw", CONFIGS)
def test_spin_flip_update_is_the_sign_of_minus_the_integrated_autograd_gradient(kw):
    """The update picks the lower of E(σ_i = ±1), i.e. sign(-∫_{-1}^{1} ∂E/∂σ_i dσ_i), with ∂E/∂σ_i from
    torch.autograd at Gauss-Legendre nodes (exact for polynomials of degree ≤ 2·12 - 1; 1e-12 for exp)."""
    D = 14
    dam = DenseAssociativeMemory(D, **kw).write(_spins(6, D))
    s = _spins(3, D, seed=2)
    nodes, weights = (torch.as_tensor(a, dtype=s.dtype) for a in np.polynomial.legendre.leggauss(12))
    new = dam.preferred_spins(s, dam.spin_cache(s))
    for i in range(D):
        integral = torch.zeros(3)
        for t, w in zip(nodes, weights, strict=True):
            z = s.clone()
            z[:, i] = t
            z.requires_grad_(True)
            (grad,) = torch.autograd.grad(dam.energy(z).sum(), z)
            integral += w * grad[:, i]
        plus, minus = s.clone(), s.clone()
        plus[:, i], minus[:, i] = 1.0, -1.0
        difference = dam.energy(plus) - dam.energy(minus)  # E(+1) - E(-1)
        torch.testing.assert_close(integral, difference, rtol=1e-9, atol=1e-9)
        expected = torch.where(difference.abs() > 1e-9, -difference.sign(), s[:, i])  # else a tie
        torch.testing.assert_close(new[:, i], expected)
        rows = torch.arange(3)
        one_unit = dam.preferred_spins(s, dam.spin_cache(s), torch.full((3,), i))
        torch.testing.assert_close(one_unit, new[rows, i])


def test_power_two_is_the_classical_hebbian_network():
    """Σ_μ (ξ_μ·σ)² = n σᵀWσ + K n for W the zero-diagonal Hebbian matrix: E_dense = 2n E_classical - K n,
    and the two spin-flip rules agree."""
    X, s = _spins(6, 25), _spins(5, 25, seed=3)
    dam = DenseAssociativeMemory(25, power=2).write(X)
    net = ClassicalHopfield(25).write(X)
    torch.testing.assert_close(dam.energy(s), 2 * 25 * net.energy(s) - 6 * 25)
    torch.testing.assert_close(dam.preferred_spins(s, dam.spin_cache(s)), net.preferred_spins(s, net.spin_cache(s)))


@pytest.mark.parametrize("kw", CONFIGS)
def test_asynchronous_updates_never_increase_the_energy(kw):
    dam = DenseAssociativeMemory(24, **kw).write(_spins(30, 24))
    r = dam.retrieve(_spins(4, 24, seed=4), method="async", trace="unit", max_steps=20)
    assert (r.trace.diff(dim=0) <= 1e-9 * r.trace.abs().amax()).all()
    assert bool(r.converged.all())
    torch.testing.assert_close(dam.preferred_spins(r.pattern, dam.spin_cache(r.pattern)), r.pattern)


def test_dense_memories_store_what_the_classical_network_cannot():
    """K = 60 patterns in D = 40 (α = 1.5 ≫ 0.138): every pattern is a fixed point of the dense memories and
    is retrieved from 10 % flipped bits; the classical network (negative control) loses them."""
    X = _spins(60, 40, seed=5)
    noisy = X.clone()
    noisy[:, :4] *= -1
    classical = ClassicalHopfield(40).write(X).retrieve(X, method="sync")
    assert (classical.pattern == X).all(-1).double().mean() < 0.2
    for kw in ({"power": 6}, {"interaction": "exponential", "beta": 1.0}):
        dam = DenseAssociativeMemory(40, **kw).write(X)
        assert (dam.retrieve(X, method="sync").pattern == X).all(), kw
        r = dam.retrieve(noisy, method="async")
        assert (r.pattern == X).all(), kw
        assert (r.index == torch.arange(60)).all()
    fixed = DenseAssociativeMemory(40, interaction="exponential").write(X).retrieve(noisy, method="fixed_point")
    assert (fixed.pattern == X).all()
    torch.testing.assert_close(fixed.weights.sum(-1), torch.ones(60))  # softmax(β ξ·σ) for the exponential


def test_exponential_update_does_not_overflow_in_high_dimension():
    """Overlaps of 800 spins give exp(800) = inf in float64; the log-domain comparison still retrieves."""
    X = _spins(20, 800, seed=6)
    dam = DenseAssociativeMemory(800, interaction="exponential").write(X)
    noisy = X[:3].clone()
    noisy[:, :200] *= -1
    r = dam.retrieve(noisy, method="sync", trace=False)
    assert (r.pattern == X[:3]).all()
    assert math.isinf(dam.energy(X[:1]).item())


def test_bad_input_and_round_trip(tmp_path):
    for kw, match in [
        ({"power": 1}, "power"),
        ({"power": 2.5}, "power"),
        ({"interaction": "log"}, "interaction"),
        ({"beta": -1.0, "interaction": "exponential"}, "beta"),
        ({"rectified": 1}, "rectified"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            DenseAssociativeMemory(4, **kw)
    dam = DenseAssociativeMemory(4, power=3).write(_spins(2, 4))
    with pytest.raises(ValueError, match="bipolar"):
        dam.write(torch.tensor([[1.0, 1.0, 0.0, -1.0]]))
    assert len(dam) == 2
    with pytest.raises(ValueError, match="init"):
        dam.retrieve(torch.ones(1, 4), method="fixed_point", init="prior_mean")
    for kw in CONFIGS:
        dam = DenseAssociativeMemory(10, **kw).write(_spins(4, 10))
        back = varmem.load(varmem.save(dam, tmp_path / "dam.safetensors"))
        assert isinstance(back, DenseAssociativeMemory) and back.config() == dam.config()
        torch.testing.assert_close(back.items, dam.items)
        cue = _spins(2, 10, seed=8)
        assert torch.equal(back.retrieve(cue).pattern, dam.retrieve(cue).pattern)


@pytest.mark.parametrize("power,rectified", [(2, False), (3, False), (4, False), (3, True)])
def test_float32_memory_makes_the_float64_sign_decisions(power, rectified):
    """Polynomial preferences are integer sums: decided exactly (in float64), so a float32 memory follows
    the float64 trajectory even where preferences are tiny next to float32 rounding of the scaled terms."""
    n = 200
    g = torch.Generator().manual_seed(0)
    patterns = torch.where(torch.rand(30, n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    cue = patterns.clone()
    cue[:, :60] *= -1  # 30 % flipped
    runs = {}
    for dt in (torch.float32, torch.float64):
        mem = varmem.DenseAssociativeMemory(n, power=power, rectified=rectified, dtype=dt).write(patterns.to(dt))
        runs[dt] = mem.retrieve(cue.to(dt), method="sync", max_steps=20)
    assert torch.equal(runs[torch.float32].pattern.double(), runs[torch.float64].pattern)
