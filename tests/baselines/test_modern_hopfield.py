"""ModernHopfield: Ramsauer's energy and update, hopfield-layers' step semantics, and the L2 form as the
kernel-density memory's fixed-point step (one piece of math, two readings)."""

import math

import pyro.poutine as poutine
import pytest
import torch

import varmem
from varmem import ModernHopfield, normalize_patterns


def _patterns(n=40, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_update_is_minus_the_autograd_gradient_step_and_the_plain_expression(similarity, chunk_size):
    """ξ_new = ξ - ∇E(ξ) (CCCP with unit step), ∇E from torch.autograd; and it equals the plain torch
    expression softmax(β Xξ) X (dot) / softmax(-β‖ξ - x‖²/2) X (l2), chunked or not, to 1e-12."""
    X, beta = _patterns(), 0.8
    hop = ModernHopfield(6, beta=beta, similarity=similarity, chunk_size=chunk_size).write(X)
    z = torch.randn(5, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(hop.energy(z).sum(), z)
    z = z.detach()
    new = hop.update(z)
    torch.testing.assert_close(new, z - grad, atol=1e-12, rtol=0)
    logits = beta * z @ X.T if similarity == "dot" else -0.5 * beta * torch.cdist(z, X) ** 2
    torch.testing.assert_close(new, torch.softmax(logits, -1) @ X, atol=1e-12, rtol=0)
    torch.testing.assert_close(hop.association_matrix(z), torch.softmax(logits, -1), atol=1e-12, rtol=0)


def test_dot_energy_matches_ramsauers_formula_and_bounds():
    """E = -β⁻¹ lse(β Xᵀξ) + ½ξᵀξ + β⁻¹ log N + ½M², and 0 ≤ E ≤ 2M² for ‖ξ‖ ≤ M (Ramsauer Lemma A1)."""
    X, beta = _patterns(), 2.0
    hop = ModernHopfield(6, beta=beta).write(X)
    M = X.norm(dim=-1).max()
    z = normalize_patterns(torch.randn(200, 6), radius=1.0) * M * torch.rand(200, 1)
    expected = -torch.logsumexp(beta * z @ X.T, -1) / beta + 0.5 * (z * z).sum(-1) + math.log(40) / beta + 0.5 * M**2
    energy = hop.energy(z)
    torch.testing.assert_close(energy, expected)
    assert (energy >= -1e-12).all() and (energy <= 2 * M**2).all()


def test_l2_energy_is_the_scaled_kde_energy_and_equals_dot_energy_on_a_sphere():
    X = normalize_patterns(_patterns(), radius=1.5)
    s = 0.6
    z = torch.randn(7, 6)
    l2 = ModernHopfield(6, beta=1 / s**2, similarity="l2").write(X)
    kde = varmem.KernelDensityMemory(6, bandwidth=s, noise_scale=1.0).write(X)
    torch.testing.assert_close(l2.energy(z), s**2 * (kde.energy(z) - 3 * math.log(2 * math.pi * s**2)))
    dot = ModernHopfield(6, beta=1 / s**2, similarity="dot").write(X)  # ‖x_i‖ = M = 1.5 for all i
    torch.testing.assert_close(dot.energy(z), l2.energy(z))
    torch.testing.assert_close(dot.update(z), l2.update(z))
    # negative control: off the sphere the two differ
    off = ModernHopfield(6, beta=1 / s**2).write(_patterns())
    off_l2 = ModernHopfield(6, beta=1 / s**2, similarity="l2").write(_patterns())
    assert (off.update(z) - off_l2.update(z)).abs().max() > 1e-2


def test_l2_hopfield_is_the_kernel_density_fixed_point_step():
    """ModernHopfield(similarity="l2", β = 1/s²) is KernelDensityMemory(bandwidth=s)'s fixed-point step:
    full cue = the cue-free limit σ → ∞ (the cue only starts the dynamics), partial cue = the noise-free
    limit σ → 0 on the observed entries (they are clamped).  Whole retrievals agree too."""
    X, s = _patterns(), 0.7
    hop = ModernHopfield(6, beta=1 / s**2, similarity="l2", update_steps_max=4).write(X)
    z, cue = torch.randn(5, 6), torch.randn(5, 6)
    far = varmem.KernelDensityMemory(6, bandwidth=s, noise_scale=1e9).write(X)
    torch.testing.assert_close(hop.fixed_point_step(z, cue, None).state, far.fixed_point_step(z, cue, None).state)
    mask = torch.rand(5, 6) < 0.5
    mask[:, 0] = True
    exact = varmem.KernelDensityMemory(6, bandwidth=s, noise_scale=1e-9).write(X)
    torch.testing.assert_close(hop.fixed_point_step(z, cue, mask).state, exact.fixed_point_step(z, cue, mask).state)
    # five steps of each engine from the same start give the same state
    r_hop = hop.retrieve(cue, tol=0.0)
    r_kde = far.retrieve(cue, method="fixed_point", init=cue, max_steps=5, tol=0.0)
    assert r_hop.steps == r_kde.steps == 5
    torch.testing.assert_close(r_hop.pattern, r_kde.pattern)
    # negative control: with a finite noise scale the KDE step pulls towards the cue
    near = varmem.KernelDensityMemory(6, bandwidth=s, noise_scale=1.0).write(X)
    assert (hop.fixed_point_step(z, cue, None).state - near.fixed_point_step(z, cue, None).state).abs().max() > 1e-2


def test_step_semantics_of_hopfield_layers():
    X = normalize_patterns(_patterns(n=30, d=8))
    cue = X[:4] + 0.3 * torch.randn(4, 8)
    one = ModernHopfield(8, beta=3.0, update_steps_max=0).write(X)
    r = one.retrieve(cue, trace=False, return_weights=False)
    assert r.steps == 1  # 0 extra steps = exactly one update
    torch.testing.assert_close(r.pattern, one.update(cue))
    three = ModernHopfield(8, beta=3.0, update_steps_max=2, update_steps_eps=1e-300).write(X)
    assert three.retrieve(cue).steps == 3  # k extra steps = k + 1 updates (eps too small to stop early)
    free = ModernHopfield(8, beta=3.0, update_steps_max=None, update_steps_eps=1e-10).write(X)
    r = free.retrieve(cue)
    assert r.steps > 3 and bool(r.converged.all())
    assert (free.update(r.pattern) - r.pattern).abs().max() < 1e-8  # a fixed point to tolerance
    # CCCP: the energy never increases along the iteration (also with clamped entries)
    assert (r.trace.diff(dim=0) <= 1e-12).all()
    mask = torch.rand(4, 8) < 0.6
    mask[:, 0] = True
    rm = free.retrieve(cue, mask)
    assert (rm.trace.diff(dim=0) <= 1e-12).all()
    torch.testing.assert_close(rm.pattern[mask], cue[mask])  # observed entries stay clamped
    # the options of the call override the constructor's defaults
    assert free.retrieve(cue, max_steps=2, tol=0.0).steps == 2


def test_beta_and_pattern_scale_select_the_fixed_point_regime():
    """Large β on unit patterns: one update retrieves the pattern (Ramsauer Thm 5: exponentially small error);
    small β: the global average (first regime); the same β on patterns scaled ×10 acts like β·100."""
    X = normalize_patterns(_patterns(n=20, d=32))
    cue = X[:5] + 0.05 * torch.randn(5, 32)
    sharp = ModernHopfield(32, beta=50.0).write(X).retrieve(cue)
    torch.testing.assert_close(sharp.pattern, X[:5], atol=1e-6, rtol=0)
    assert (sharp.index == torch.arange(5)).all()
    flat = ModernHopfield(32, beta=1e-3, update_steps_max=None).write(X).retrieve(cue)
    torch.testing.assert_close(flat.pattern, X.mean(0).expand(5, 32), atol=1e-3, rtol=0)
    scaled = ModernHopfield(32, beta=0.5).write(10 * X).retrieve(10 * cue)  # β_eff = 0.5 · 100 = 50
    torch.testing.assert_close(scaled.pattern / 10, X[:5], atol=1e-6, rtol=0)


def test_boltzmann_model_log_density_is_minus_beta_energy():
    """log p(z) = -βE(z): the Pyro model is the Boltzmann density of the energy (a flat site scored
    by a factor), with the observed entries of a partial cue clamped."""
    X = _patterns(n=10, d=3)
    for similarity in ("dot", "l2"):
        hop = ModernHopfield(3, beta=1.3, similarity=similarity).write(X)
        z = torch.randn(4, 3)
        tr = poutine.trace(poutine.condition(hop.model, data={"z": z})).get_trace(num_cues=4)
        torch.testing.assert_close(tr.log_prob_sum(), -1.3 * hop.energy(z).sum())
        cue, mask = torch.randn(4, 3), torch.tensor([True, False, True])
        tr = poutine.trace(poutine.condition(hop.model, data={"z": z})).get_trace(cue, mask)
        torch.testing.assert_close(tr.log_prob_sum(), -1.3 * hop.energy(torch.where(mask, cue, z)).sum())
        full = poutine.trace(poutine.condition(hop.model, data={"z": z})).get_trace(cue)  # a full cue: no term
        torch.testing.assert_close(full.log_prob_sum(), -1.3 * hop.energy(z).sum())


def test_normalize_patterns():
    x = torch.randn(5, 8)
    torch.testing.assert_close(normalize_patterns(x, "unit", radius=2.0).norm(dim=-1), torch.full((5,), 2.0))
    torch.testing.assert_close(normalize_patterns(x).norm(dim=-1), torch.ones(5))  # default: the unit sphere
    ln = normalize_patterns(x, "layer")
    torch.testing.assert_close(ln.mean(-1), torch.zeros(5), atol=1e-12, rtol=0)
    torch.testing.assert_close(ln.norm(dim=-1), torch.full((5,), math.sqrt(8)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="normalisation mode"):
        normalize_patterns(x, "max")


def test_normalize_patterns_works_on_the_last_dim_of_any_batch_shape():
    """``x [..., D]``: a [2, 3, 4] batch is normalised per pattern (the last dim), as a loop would."""
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5)) + 0.5
    for mode in ("unit", "layer"):
        by_row = torch.stack([torch.stack([normalize_patterns(r, mode) for r in block]) for block in x])
        torch.testing.assert_close(normalize_patterns(x, mode), by_row, rtol=1e-12, atol=1e-12)
    row = x[1, 2]
    torch.testing.assert_close(normalize_patterns(row, radius=3.0), 3.0 * row / row.norm())  # by hand
    centred = row - row.mean()
    torch.testing.assert_close(normalize_patterns(row, "layer"), centred / centred.pow(2).mean().sqrt())


def test_normalize_patterns_sign_rule_maps_zero_to_plus_one_and_keeps_the_dtype():
    x = torch.tensor([-2.0, -0.5, -1e-30, 0.0, -0.0, 1e-30, 0.5, 2.0])
    expected = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # sign(0) = +1, also for -0.0
    assert torch.equal(normalize_patterns(x, "sign"), expected)
    for dtype in (torch.float32, torch.float64):
        out = normalize_patterns(x.to(dtype), "sign")
        assert out.dtype == dtype and torch.equal(out, expected.to(dtype))
    # bipolar patterns are fixed points of the rule
    assert torch.equal(normalize_patterns(expected, "sign"), expected)


def test_bad_input_raises_and_failed_write_keeps_state():
    for kwargs, match in [
        ({"beta": 0.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": 1.0, "similarity": "cosine"}, "similarity"),
        ({"beta": 1.0, "update_steps_max": -1}, "update_steps_max"),
        ({"beta": 1.0, "update_steps_max": True}, "update_steps_max"),
        ({"beta": 1.0, "update_steps_eps": 0.0}, "update_steps_eps"),
        ({"beta": 1.0, "chunk_size": 0}, "chunk_size"),
    ]:
        with pytest.raises((ValueError, TypeError), match=rf"^{match} must"):  # the message names the argument
            ModernHopfield(4, **kwargs)
    hop = ModernHopfield(4, beta=1.0)
    with pytest.raises(ValueError, match="empty"):
        hop.retrieve(torch.zeros(1, 4))
    hop.write(torch.randn(3, 4))
    before = hop.items.clone()
    with pytest.raises(ValueError, match="NaN"):
        hop.write(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        hop.write(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="floating"):
        hop.write(torch.zeros(2, 4, dtype=torch.long))
    torch.testing.assert_close(hop.items, before)
    with pytest.raises(ValueError, match="shape"):
        hop.retrieve(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown option"):
        hop.retrieve(torch.zeros(2, 4), steps=3)
    with pytest.raises(ValueError, match="unknown retrieval method"):
        hop.retrieve(torch.zeros(2, 4), method="async")
    with pytest.raises(ValueError, match="nothing observed"):
        hop.retrieve(torch.zeros(2, 4), torch.zeros(4, dtype=torch.bool))


def test_save_load_round_trip(tmp_path):
    hop = ModernHopfield(5, beta=4.0, similarity="l2", update_steps_max=None, update_steps_eps=1e-6).write(
        torch.randn(9, 5)
    )
    path = varmem.save(hop, tmp_path / "hop.safetensors")
    back = varmem.load(path)
    assert isinstance(back, ModernHopfield) and back.config() == hop.config()
    torch.testing.assert_close(back.items, hop.items)
    cue = torch.randn(3, 5)
    torch.testing.assert_close(back.retrieve(cue).pattern, hop.retrieve(cue).pattern)


def _dot_energy(z, X, beta):
    """Ramsauer's energy written out (module docstring), for ``z [..., D]``."""
    M = X.norm(dim=-1).max()
    lse = torch.logsumexp(beta * z @ X.T, -1)
    return -lse / beta + 0.5 * (z * z).sum(-1) + math.log(len(X)) / beta + 0.5 * M**2


def test_documented_defaults_dtype_and_the_empty_memory(tmp_path):
    hop = ModernHopfield(4, beta=1.5)
    assert hop.config() == {"dim": 4, "beta": 1.5, "similarity": "dot", "update_steps_max": 0,
                            "update_steps_eps": 1e-4, "chunk_size": None}
    assert len(hop) == 0 and hop.max_norm == 0.0  # M = 0 for an empty memory
    assert hop.default_options("fixed_point") == {"max_steps": 1, "tol": 1e-4}
    assert ModernHopfield(4, beta=1.0, update_steps_max=None).default_options("fixed_point")["max_steps"] == 10_000
    assert hop.default_options("nuts") == {}  # only the fixed-point engine has Hopfield step semantics
    back = varmem.load(varmem.save(hop, tmp_path / "empty.safetensors"))
    assert len(back) == 0 and back.max_norm == 0.0
    f32 = ModernHopfield(4, beta=1.5, dtype=torch.float32)
    assert f32.items.dtype == torch.float32 and f32.dtype == torch.float32
    X = _patterns(n=6, d=4).float()
    r = f32.write(X).retrieve(X[:2] + 0.01)
    assert r.pattern.dtype == torch.float32 and f32.max_norm == pytest.approx(float(X.norm(dim=-1).max()))


def test_compute_energy_clamps_the_observed_entries_and_keeps_batch_dims():
    X, beta = _patterns(n=10, d=3), 1.3
    hop = ModernHopfield(3, beta=beta).write(X)
    z, cue = torch.randn(2, 4, 3), torch.randn(4, 3)
    mask = torch.tensor([True, False, True])
    energy = hop.compute_energy(z, cue, mask)
    assert energy.shape == (2, 4)
    torch.testing.assert_close(energy, _dot_energy(torch.where(mask, cue, z), X, beta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hop.compute_energy(z, cue), _dot_energy(z, X, beta), rtol=1e-12, atol=1e-12)
    assert (energy - hop.compute_energy(z)).abs().max() > 1e-3  # negative control: clamping matters


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_update_resets_the_observed_entries(similarity):
    X, beta = _patterns(n=15, d=4), 0.9
    hop = ModernHopfield(4, beta=beta, similarity=similarity).write(X)
    z, cue = torch.randn(3, 4), torch.randn(3, 4)
    mask = torch.tensor([[True, False, False, True], [False, True, False, False], [True, True, True, False]])
    logits = beta * z @ X.T if similarity == "dot" else -0.5 * beta * torch.cdist(z, X) ** 2
    plain = torch.softmax(logits, -1) @ X
    torch.testing.assert_close(hop.update(z), plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hop.update(z, mask, cue), torch.where(mask, cue, plain), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hop.update(z, mask), torch.where(mask, z, plain), rtol=1e-12, atol=1e-12)


def test_association_matrix_of_a_partial_cue_and_beyond_the_default_weights_limit():
    X, beta = _patterns(n=12, d=4), 2.0
    hop = ModernHopfield(4, beta=beta).write(X)
    cue = torch.randn(3, 4)
    mask = torch.tensor([True, True, False, False])
    start = torch.where(mask, cue, torch.zeros(()))  # free entries start at 0
    torch.testing.assert_close(hop.association_matrix(cue, mask), torch.softmax(beta * start @ X.T, -1),
                               rtol=1e-12, atol=1e-12)
    # B·N above WEIGHTS_LIMIT: still the dense weights (association_matrix always asks for them)
    big = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(1))
    wide = ModernHopfield(2, beta=1.0).write(big)
    q = torch.randn(2, 2)
    torch.testing.assert_close(wide.association_matrix(q), torch.softmax(q @ big.T, -1), rtol=1e-10, atol=1e-15)


def test_init_latent_starts():
    X = _patterns(n=8, d=4)
    hop = ModernHopfield(4, beta=1.0).write(X)
    cue = torch.randn(3, 4)
    mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(hop.init_latent(cue, mask, "prior_mean"), torch.where(mask, cue, X.mean(0)),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hop.init_latent(cue, None, "prior_mean"), X.mean(0).expand(3, 4), rtol=1e-12,
                               atol=1e-12)
    start = hop.init_latent(cue, None, "cue")
    assert torch.equal(start, cue) and start.data_ptr() != cue.data_ptr()  # a copy: the engine owns its state
    own = torch.zeros(3, 4)
    assert torch.equal(hop.init_latent(cue, mask, own), torch.where(mask, cue, own))


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_fixed_point_step_and_item_weights_give_what_is_asked_and_nothing_more(similarity):
    X, beta = _patterns(n=20, d=4), 1.7
    hop = ModernHopfield(4, beta=beta, similarity=similarity).write(X)
    z, cue = torch.randn(5, 4), torch.randn(5, 4)
    logits = beta * z @ X.T if similarity == "dot" else -0.5 * beta * torch.cdist(z, X) ** 2
    w = torch.softmax(logits, -1)
    step = hop.fixed_point_step(z, cue, None)  # default: the state and the energy at z
    torch.testing.assert_close(step.state, w @ X, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step.energy, hop.compute_energy(z), rtol=1e-12, atol=1e-12)
    assert step.weights is None and step.index is None
    full = hop.fixed_point_step(z, cue, None, energy=False, weights=True, index=True)
    assert full.energy is None
    torch.testing.assert_close(full.weights, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(full.index, logits.argmax(-1))
    weights, index = hop.item_weights(z, True)
    torch.testing.assert_close(weights, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(index, logits.argmax(-1))
    none, index = hop.item_weights(z, False)
    assert none is None and torch.equal(index, logits.argmax(-1))
    torch.testing.assert_close(hop.item_weights(z)[0], w, rtol=1e-12, atol=1e-12)  # small B·N: by default


def test_item_weights_default_follows_the_batch_times_items_limit():
    from varmem.helpers import WEIGHTS_LIMIT

    X = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(3))
    hop = ModernHopfield(2, beta=1.0).write(X)
    z = torch.randn(4, 2)
    assert 4 * len(X) > WEIGHTS_LIMIT >= 2 * len(X)  # B·N over the limit (D·N is not)
    weights, index = hop.item_weights(z)
    assert weights is None and torch.equal(index, (z @ X.T).argmax(-1))
    assert hop.item_weights(z[:3])[0] is not None  # 3·N under the limit


def test_model_has_one_cue_by_default():
    X = _patterns(n=6, d=3)
    hop = ModernHopfield(3, beta=0.7).write(X)
    z = torch.randn(1, 3)
    tr = poutine.trace(poutine.condition(hop.model, data={"z": z})).get_trace()
    assert tr.nodes["cues"]["value"].shape == (1,) and tr.nodes["z"]["fn"].event_shape == (3,)
    torch.testing.assert_close(tr.log_prob_sum(), -0.7 * _dot_energy(z, X, 0.7).sum())
