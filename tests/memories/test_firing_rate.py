"""FiringRateMemory (Betteti, Baggio, Bullo, Zampieri) against its closed forms, an independent dense
computation, SciPy's quadrature and ODE solver, and the numbers of the official parameters
(``../shared/reference/seed-systems.md`` §3.3)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad, solve_ivp

import varmem
from varmem.memories.firing_rate import (
    activation,
    activation_derivative,
    activation_integral,
    activation_inverse,
    stability_conditions,
    synaptic_parameters,
)

F64 = torch.float64


def _patterns(p: int, n: int, q: float, seed: int) -> torch.Tensor:
    return (torch.rand(p, n, generator=torch.Generator().manual_seed(seed), dtype=F64) < q).to(F64)


def _orthogonal(n: int, q: float) -> torch.Tensor:
    """PhaseDiagram.py's deterministic memories: centred patterns exactly orthogonal, |ξ| = qN."""
    p = int(math.floor(1 + 1 / q))
    shared, blocks = int(q * q * n), int(math.floor(q * (1 - q) * n))
    xi = torch.zeros(p, n, dtype=F64)
    xi[:, :shared] = 1
    for i in range(blocks):
        xi[:, shared + i * p: shared + (i + 1) * p] = torch.eye(p, dtype=F64)
    return xi


@pytest.fixture(scope="module")
def official():
    """N = 1000, q = 0.2, P = ⌊N/(10 ln N)⌋ = 14, logistic ρ = 4.8, x* = 0.2, a = -0.3, b = 0.95."""
    n, q = 1000, 0.2
    p = int(math.floor(n / (10 * math.log(n))))
    xi = _patterns(p, n, q, 0)
    memory = varmem.FiringRateMemory(n, coding_level=q, dtype=F64).write(xi)
    return memory, xi


# --- the official parameters ------------------------------------------------------------------------
def test_official_parameters_give_the_reference_constants(official):
    memory, xi = official
    assert xi.shape == (14, 1000)
    s = memory.synaptic
    # seed-systems.md §3.3: Φ(a) = 9.17e-6, Φ(b) = 0.999996, α = 7.8126, γ = -0.2500 (closed forms)
    assert memory.phi_inactive == pytest.approx(9.166e-6, rel=1e-3)
    assert memory.phi_active == pytest.approx(0.999996, abs=1e-6)
    assert s["alpha"] == pytest.approx(7.8126, abs=1e-4) and s["gamma"] == pytest.approx(-0.2500, abs=1e-4)
    assert s["beta"] == 0.2 and s["q"] == 0.2


def test_official_parameters_recall_all_14_memories_and_random_cues_fall_quiescent(official):
    """Issue 14: all 14 recalled from cues with 40 % of the active units deleted, max |x(10) - x̄| < 1e-2
    (reference run 6.1e-3), λ_max(J) < -0.9 (reference -0.9937), random cues decay (mean rate 0.003)."""
    memory, xi = official
    g = torch.Generator().manual_seed(1)
    cues = xi * (torch.rand(xi.shape, generator=g, dtype=F64) < 0.6)
    read = memory.retrieve(cues, tol=0.0, trace=False)
    assert read.steps == 1000 and read.info["time"] == pytest.approx(10.0)
    assert (read.code - memory.stored_states()).abs().max() < 1e-2
    assert torch.equal(read.index, torch.arange(14))
    assert read.info["overlap"].diagonal().min() > 0.99  # ⟨x, ξ⟩/|ξ|; reference ≥ 0.99994
    assert memory.jacobian_max_eigenvalue().max() < -0.9
    # 3 random non-memory patterns with 70 % of their active units kept (MainHNN_SHB.py): quiescence
    probes = _patterns(3, 1000, 0.2, 2) * (torch.rand(3, 1000, generator=g, dtype=F64) < 0.7)
    quiet = memory.retrieve(probes, trace=False)
    assert quiet.info["mean_rate"].max() < 0.01 and quiet.info["overlap"].max() < 0.01
    # at t = 10 the flow still moves (max |dx/dt| ≈ e^-10 ≈ 5e-5): not converged at the default tol 1e-6
    assert not bool(read.converged.any()) and float(read.info["speed"].max()) < 1e-4
    # negative control: a cue that keeps nothing of its memory is not "recalled"
    assert (memory.retrieve(torch.zeros(1, 1000), trace=False).code - memory.stored_states()[0]).abs().max() > 0.9


# --- storage: α, β, γ and the factored W -------------------------------------------------------------
def test_synaptic_parameters_make_orthogonal_memories_exact_equilibria():
    """W x̄^ν = a + (b - a) ξ^ν exactly when the centred overlaps vanish (deterministic patterns)."""
    xi = _orthogonal(100, 0.2)
    for activation_kind, a in (("logistic", -0.3), ("logistic", 0.1), ("tanh", -0.3)):
        memory = varmem.FiringRateMemory(100, activation=activation_kind, inactive_field=a, coding_level=0.2,
                                         dtype=F64).write(xi)
        field = memory.recurrent_field(memory.stored_states())
        torch.testing.assert_close(field, a + (0.95 - a) * xi, atol=1e-12, rtol=0)
        assert memory.equilibrium_residual().max() < 1e-12


def _correlated(n: int, q: float, r: float, p: int) -> torch.Tensor:
    """|ξ^μ| = qN and every pair shares exactly rqN active units (the correlated form's assumption)."""
    active, shared = int(q * n), int(r * q * n)
    private = active - shared
    xi = torch.zeros(p, n, dtype=F64)
    xi[:, :shared] = 1
    for mu in range(p):
        xi[mu, shared + mu * private: shared + (mu + 1) * private] = 1
    return xi


def test_correlated_form_makes_correlated_memories_exact_equilibria_and_the_independent_form_does_not():
    xi = _correlated(200, 0.2, 0.4, 6)
    exact = varmem.FiringRateMemory(200, coding_level=0.2, correlation=0.4, dtype=F64).write(xi)
    target = -0.3 + 1.25 * xi
    torch.testing.assert_close(exact.recurrent_field(exact.stored_states()), target, atol=1e-12, rtol=0)
    naive = varmem.FiringRateMemory(200, coding_level=0.2, dtype=F64).write(xi)  # the negative control
    assert (naive.recurrent_field(naive.stored_states()) - target).abs().max() > 0.1
    # r = q is the independent form
    assert synaptic_parameters(-0.3, 0.95, 0.01, 0.99, 0.2, 0.2) == pytest.approx(
        synaptic_parameters(-0.3, 0.95, 0.01, 0.99, 0.2))


def test_write_recomputes_w_from_all_stored_patterns_and_keeps_it_factored():
    xi = _patterns(6, 50, 0.3, 3)
    one = varmem.FiringRateMemory(50, dtype=F64).write(xi)
    two = varmem.FiringRateMemory(50, dtype=F64).write(xi[:2]).write(xi[2:])
    assert one.synaptic["q"] == pytest.approx(float(xi.mean()))  # coding level estimated from all patterns
    torch.testing.assert_close(two.weight_matrix(), one.weight_matrix(), atol=1e-12, rtol=0)
    s = one.synaptic
    c = xi - s["beta"]
    dense = s["alpha"] / 50 * c.T @ c + s["gamma"] / 50 * torch.ones(50, 50, dtype=F64)
    torch.testing.assert_close(one.weight_matrix(), dense)
    x = torch.rand(3, 50, dtype=F64)
    torch.testing.assert_close(one.recurrent_field(x), x @ dense.T)
    assert torch.equal(one.items, (xi >= 0.5).to(F64))


def test_write_refuses_bad_items_and_degenerate_patterns_keeping_the_state():
    memory = varmem.FiringRateMemory(10, dtype=F64).write(_patterns(2, 10, 0.5, 0))
    before = memory.items.clone()
    for bad, word in ((torch.full((1, 10), 1.5), "[0, 1]"), (torch.full((1, 10), -0.1), "[0, 1]")):
        with pytest.raises(ValueError, match=word.replace("[", r"\[").replace("]", r"\]")):
            memory.write(bad)
    with pytest.raises(ValueError, match="coding level"):
        varmem.FiringRateMemory(10, dtype=F64).write(torch.zeros(2, 10))
    assert torch.equal(memory.items, before)
    with pytest.raises(ValueError, match="separate"):
        varmem.FiringRateMemory(10, threshold=5.0, activation="tanh")  # Φ(a) = Φ(b) = 0
    with pytest.raises(ValueError, match="below"):
        varmem.FiringRateMemory(10, inactive_field=1.0, active_field=0.5)


# --- activation, inverse and integral -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logistic", "tanh"])
def test_activation_inverse_derivative_and_integral_match_independent_computations(kind):
    rho, star = 4.8, 0.2
    h = torch.linspace(0.25, 1.2, 9, dtype=F64)  # above x*: Φ is invertible there for both
    x = activation(h, kind, rho, star)
    torch.testing.assert_close(activation_inverse(x, kind, rho, star), h)
    hg = h.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(activation(hg, kind, rho, star).sum(), hg)
    torch.testing.assert_close(activation_derivative(h, kind, rho, star), grad)
    for value in (0.05, 0.3, 0.7, 0.95):  # F(x) = ∫_0^x Φ⁻¹ by adaptive quadrature
        exact, _ = quad(lambda s: float(activation_inverse(torch.tensor(s, dtype=F64), kind, rho, star)), 0, value)
        assert float(activation_integral(torch.tensor(value, dtype=F64), kind, rho, star)) == pytest.approx(
            exact, abs=1e-9)
    if kind == "logistic":  # the maximal slope is ρ, at x* + 1/(2ρ)
        assert float(activation_derivative(torch.tensor(star + 1 / (2 * rho)), kind, rho, star)) == pytest.approx(rho)


# --- energy: Lyapunov function, gradient, Jacobian ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["logistic", "tanh"])
def test_energy_gradient_is_the_inverse_activation_minus_the_field_and_the_dynamics_descend_it(kind):
    """∇E(x) = Φ⁻¹(x) - W x (autograd of the energy), hence x + dx/dt = Φ(Φ⁻¹(x) - ∇E(x)) and
    ∇E · dx/dt ≤ 0 coordinate by coordinate (Φ increasing)."""
    xi = _patterns(4, 40, 0.25, 5)
    memory = varmem.FiringRateMemory(40, activation=kind, coding_level=0.25, dtype=F64).write(xi)
    x = (0.05 + 0.9 * torch.rand(6, 40, dtype=F64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(memory.energy(x).sum(), x)
    x = x.detach()
    torch.testing.assert_close(grad, activation_inverse(x, kind, 4.8, 0.2) - x @ memory.weight_matrix().T)
    f = memory.vector_field(x)
    torch.testing.assert_close(x + f, activation(activation_inverse(x, kind, 4.8, 0.2) - grad, kind, 4.8, 0.2))
    assert (grad * f <= 1e-12).all() and (grad * f).sum() < -1e-3


@pytest.mark.parametrize("kind, a", [("logistic", -0.3), ("logistic", 0.1), ("tanh", -0.3)])
def test_energy_never_increases_along_the_rate_dynamics(kind, a):
    xi = _patterns(5, 200, 0.2, 6)
    memory = varmem.FiringRateMemory(200, activation=kind, inactive_field=a, coding_level=0.2, dtype=F64).write(xi)
    cues = torch.cat([xi * (torch.rand(5, 200, dtype=F64) < 0.6), torch.rand(3, 200, dtype=F64)])
    read = memory.retrieve(cues, t_max=5.0, tol=0.0)
    assert read.trace.shape == (501, 8)
    steps = read.trace.diff(dim=0)
    assert (steps <= 1e-9).all() and (read.trace[-1] < read.trace[0] - 1e-3).all()
    torch.testing.assert_close(read.trace[-1], memory.energy(read.code))  # the trace is E(x(t))
    # negative control: with noise the energy is no longer monotone
    noisy = memory.retrieve(cues, t_max=1.0, noise=0.2, seed=0)
    assert (noisy.trace.diff(dim=0) > 1e-3).any()


@pytest.mark.parametrize("kind, a", [("logistic", -0.3), ("logistic", 0.1), ("tanh", -0.3), ("tanh", 0.1)])
def test_jacobian_max_eigenvalue_matches_the_dense_jacobian(kind, a):
    xi = _patterns(5, 60, 0.2, 7)
    memory = varmem.FiringRateMemory(60, activation=kind, gain=2.0, inactive_field=a, coding_level=0.2,
                                     dtype=F64).write(xi)
    w = memory.weight_matrix()
    states = torch.cat([memory.stored_states(), torch.rand(3, 60, dtype=F64)])
    fast = memory.jacobian_max_eigenvalue(states)
    for k, x in enumerate(states):
        d = activation_derivative(w @ x, kind, 2.0, 0.2)
        jac = -torch.eye(60, dtype=F64) + d[:, None] * w
        assert float(fast[k]) == pytest.approx(float(torch.linalg.eigvals(jac).real.max()), abs=1e-9)


# --- the integrator ---------------------------------------------------------------------------------------
def test_euler_read_converges_at_order_one_to_scipys_solution():
    """Fixed-step Euler against SciPy's adaptive RK45 (rtol 1e-10) on t ∈ [0, 2]: the error halves
    with the step (order 1) and is below 1e-3 at dt = 1e-3."""
    xi = _patterns(3, 30, 0.3, 8)
    memory = varmem.FiringRateMemory(30, gain=2.0, coding_level=0.3, dtype=F64).write(xi)
    cue = xi[:1] * (torch.rand(1, 30, dtype=F64) < 0.6)
    x0 = memory.init_latent(cue, None, "cue")[0]

    def rhs(_t, y):
        return memory.vector_field(torch.as_tensor(y, dtype=F64)).numpy()

    exact = torch.as_tensor(solve_ivp(rhs, (0, 2), x0.numpy(), rtol=1e-10, atol=1e-12).y[:, -1])
    errors = [float((memory.retrieve(cue, t_max=2.0, dt=dt, tol=0.0, trace=False).code[0] - exact).abs().max())
              for dt in (0.02, 0.01, 0.001)]
    assert 1.8 < errors[0] / errors[1] < 2.2 and errors[2] < 1e-3


# --- read options -------------------------------------------------------------------------------------------
def test_the_default_read_stops_once_every_cue_is_slower_than_tol():
    xi = _patterns(3, 100, 0.2, 15)
    memory = varmem.FiringRateMemory(100, coding_level=0.2, dtype=F64).write(xi)
    full = memory.retrieve(xi, t_max=30.0, tol=0.0, trace=False)
    early = memory.retrieve(xi, t_max=30.0, trace=False)  # tol = 1e-6
    assert bool(early.converged.all()) and early.steps < full.steps == 3000
    assert early.info["speed"].max() <= 1e-6 and (early.code - full.code).abs().max() < 1e-5


def test_noise_is_seeded_and_keeps_rates_in_the_unit_box():
    xi = _patterns(3, 50, 0.2, 9)
    memory = varmem.FiringRateMemory(50, coding_level=0.2, dtype=F64).write(xi)
    a = memory.retrieve(xi, t_max=1.0, noise=0.5, seed=3, trace=False)
    b = memory.retrieve(xi, t_max=1.0, noise=0.5, seed=3, trace=False)
    c = memory.retrieve(xi, t_max=1.0, noise=0.5, seed=4, trace=False)
    assert torch.equal(a.code, b.code) and not torch.equal(a.code, c.code)
    assert (a.code >= 0).all() and (a.code <= 1).all()
    assert torch.equal(memory.retrieve(xi, t_max=1.0, noise=0.0, seed=3).code, memory.retrieve(xi, t_max=1.0).code)


def test_clamp_holds_the_observed_units_and_drive_moves_the_equilibrium():
    xi = _patterns(3, 50, 0.2, 10)
    memory = varmem.FiringRateMemory(50, coding_level=0.2, dtype=F64).write(xi)
    mask = torch.rand(3, 50) < 0.5
    read = memory.retrieve(xi, mask, clamp=True, t_max=2.0)
    start = memory.init_latent(xi, mask, "cue")
    assert torch.equal(read.code[mask], start[mask])
    u = torch.full((50,), 0.3, dtype=F64)
    driven = memory.retrieve(xi, drive=u, tol=1e-10, t_max=100.0, dt=0.1)
    assert bool(driven.converged.all()) and driven.steps < 1000
    torch.testing.assert_close(driven.code, memory.transfer(memory.recurrent_field(driven.code) + u), atol=1e-9,
                               rtol=0)
    assert (driven.code - memory.retrieve(xi).code).abs().max() > 0.1  # the input matters
    assert (driven.trace.diff(dim=0) <= 1e-9).all()  # E(x) - uᵀx is the Lyapunov function with input


def _small_memory(temperature: float = 1.0) -> tuple[varmem.FiringRateMemory, torch.Tensor, torch.Tensor]:
    xi = _patterns(2, 12, 0.3, 11)
    memory = varmem.FiringRateMemory(12, coding_level=0.3, temperature=temperature, dtype=F64).write(xi)
    cue = xi * (torch.rand(2, 12, generator=torch.Generator().manual_seed(0), dtype=F64) < 0.7)
    return memory, cue, memory.retrieve(cue, tol=1e-12, t_max=200.0, dt=0.2).code


def test_map_reads_the_mode_of_the_gibbs_density_which_is_the_equilibrium_of_the_dynamics():
    """MAP of exp(-E/T) from a cue lands on the equilibrium the dynamics reach (∇E = 0 there; the mode
    does not depend on T)."""
    memory, cue, equilibrium = _small_memory()
    torch.testing.assert_close(memory.vector_field(equilibrium), torch.zeros_like(equilibrium), atol=1e-10, rtol=0)
    mode = memory.retrieve(cue, method="map", max_steps=200)
    torch.testing.assert_close(mode.code, equilibrium, atol=1e-6, rtol=0)


@pytest.mark.slow  # two NUTS runs, ~3 s (conformance runs a tiny NUTS read of this memory by default)
def test_nuts_draws_stay_in_the_unit_box_and_concentrate_at_a_low_temperature():
    cold, cue, equilibrium = _small_memory(temperature=0.01)
    draws = cold.retrieve(cue, method="nuts", num_samples=20, warmup_steps=20, num_chains=1, max_tree_depth=3, seed=0)
    assert draws.samples.shape == (20, 2, 12) and (draws.samples > 0).all() and (draws.samples < 1).all()
    assert (draws.code - equilibrium).abs().max() < 0.15
    hot, _, _ = _small_memory(temperature=1.0)  # the negative control: a hot density spreads
    spread = hot.retrieve(cue, method="nuts", num_samples=20, warmup_steps=20, num_chains=1, max_tree_depth=3, seed=0)
    assert spread.samples.std(0).mean() > 3 * draws.samples.std(0).mean()


# --- stability conditions and the E/I knob --------------------------------------------------------------
def test_stability_conditions_bracket_the_numerical_stability_of_orthogonal_memories():
    """PhaseDiagram.py's overlays: the sufficient condition implies λ_max(J) < 0 and the instability
    condition implies λ_max(J) ≥ 0, on a grid (N = 100, P = 6, rectified tanh, both signs of γ); the
    paper's two markers: (x*, ρ) = (0.2, 4.8) stable, (0.8, 4.8) unstable."""
    xi = _orthogonal(100, 0.2)
    rhos, stars = torch.linspace(0.3, 5.0, 6, dtype=F64), torch.linspace(0.02, 0.88, 6, dtype=F64)
    for a in (-0.3, 0.1):
        sufficient, unstable = stability_conditions(a, 0.95, 0.2, "tanh", rhos[:, None], stars[None, :])
        stable = torch.zeros(6, 6, dtype=torch.bool)
        for i, rho in enumerate(rhos.tolist()):
            for j, star in enumerate(stars.tolist()):
                memory = varmem.FiringRateMemory(100, activation="tanh", gain=rho, threshold=star, inactive_field=a,
                                                 coding_level=0.2, dtype=F64).write(xi)
                stable[i, j] = memory.jacobian_max_eigenvalue().max() < 0
        assert (stable | ~sufficient).all() and (~stable | ~unstable).all()
        assert sufficient.any() and unstable.any() and stable.any() and not stable.all()  # not vacuous
        for star, expect in ((0.2, True), (0.8, False)):
            memory = varmem.FiringRateMemory(100, activation="tanh", gain=4.8, threshold=star, inactive_field=a,
                                             coding_level=0.2, dtype=F64).write(xi)
            assert bool(memory.jacobian_max_eigenvalue().max() < 0) is expect


def test_the_sign_of_gamma_decides_between_quiescence_and_runaway_excitation():
    """The E/I knob: with global inhibition (a = -0.3, γ < 0) dense random states fall quiescent and the
    memories are recalled; with γ > 0 (a = 0.1) the same states run away to full activity and the
    memories are mostly lost (cross-talk pushes inactive units over threshold)."""
    xi = _patterns(6, 400, 0.2, 12)
    cues = xi * (torch.rand(6, 400, dtype=F64) < 0.6)
    dense = (torch.rand(4, 400, dtype=F64) < 0.5).to(F64)
    inhibitory = varmem.FiringRateMemory(400, inactive_field=-0.3, coding_level=0.2, dtype=F64).write(xi)
    excitatory = varmem.FiringRateMemory(400, inactive_field=0.1, coding_level=0.2, dtype=F64).write(xi)
    assert inhibitory.synaptic["gamma"] < 0 < excitatory.synaptic["gamma"]
    assert inhibitory.retrieve(dense, trace=False).info["mean_rate"].max() < 0.01
    assert excitatory.retrieve(dense, trace=False).info["mean_rate"].min() > 0.9
    assert torch.equal(inhibitory.retrieve(cues, trace=False).index, torch.arange(6))
    assert ((inhibitory.retrieve(cues, trace=False).pattern - xi).abs().max() < 0.05)
    lost = (excitatory.retrieve(cues, trace=False).pattern - xi).abs().amax(-1) > 0.5
    assert lost.sum() >= 4  # 5 of 6 here; 14 of 14 at N = 1000, P = 14 (experiments/firing_rate.py)
    assert excitatory.jacobian_max_eigenvalue().max() > inhibitory.jacobian_max_eigenvalue().max() + 0.5


# --- varmem compare ------------------------------------------------------------------------------------------
def test_compare_runs_the_firing_rate_memory_only_when_named():
    from varmem.comparison import FAMILIES, default_contenders
    from varmem.comparison.command import CompareConfig
    from varmem.comparison.presets import ALL_FAMILIES, OPTIONAL_FAMILIES

    assert "firing_rate" in OPTIONAL_FAMILIES and "firing_rate" in ALL_FAMILIES and "firing_rate" not in FAMILIES
    assert "firing_rate" not in [c.name for c in default_contenders(16)]
    (contender,) = default_contenders(16, families=["firing_rate"], methods={"firing_rate": ["map"]})
    memory = contender.build(16)
    assert isinstance(memory, varmem.FiringRateMemory) and contender.methods == ("map",)
    assert memory.value_domain is varmem.domains.UNIT
    assert CompareConfig(memories=("firing_rate",)).validate().memories == ("firing_rate",)


def test_the_analysis_methods_validate_their_inputs():
    memory = varmem.FiringRateMemory(10, coding_level=0.2, dtype=F64).write(_patterns(2, 10, 0.3, 13))
    x = torch.full((2, 10), 0.3, dtype=F64)
    calls = {"recurrent_field": memory.recurrent_field, "vector_field": memory.vector_field,
             "lyapunov": memory.lyapunov, "jacobian_max_eigenvalue": memory.jacobian_max_eigenvalue,
             "overlaps": memory.overlaps, "transfer": memory.transfer}
    for fn in calls.values():
        for bad, error in ((torch.full((2, 11), 0.3), ValueError), (x.clone().fill_(math.nan), ValueError),
                           (x.long(), TypeError), ("x", TypeError)):
            with pytest.raises(error):
                fn(bad)
    for fn in (memory.vector_field, memory.lyapunov, memory.jacobian_max_eigenvalue):
        with pytest.raises(ValueError, match="drive"):
            fn(x, torch.zeros(9, dtype=F64))
        with pytest.raises(TypeError, match="drive"):
            fn(x, [0.1] * 10)
    u = torch.full((10,), 0.2, dtype=F64)
    torch.testing.assert_close(memory.lyapunov(x, u), memory.energy(x) - (x * u).sum(-1))
    for name in calls:  # Φ needs no stored pattern; everything else does
        if name != "transfer":
            with pytest.raises(ValueError, match="empty"):
                getattr(varmem.FiringRateMemory(10), name)(x.float())


def test_moving_the_memory_moves_its_factored_w():
    xi = _patterns(3, 40, 0.25, 14)
    memory = varmem.FiringRateMemory(40, coding_level=0.25, dtype=F64).write(xi)
    reference = memory.retrieve(xi, trace=False).code
    memory.to(torch.float32)
    assert memory._centred.dtype == torch.float32 and memory.dtype == torch.float32
    read = memory.retrieve(xi.float(), trace=False)
    assert read.code.dtype == torch.float32
    torch.testing.assert_close(read.code.double(), reference, atol=1e-4, rtol=0)
