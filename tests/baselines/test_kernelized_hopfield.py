"""KernelizedHopfield (KHM / U-Hop+): energy vs autograd, CCCP monotonicity, equivalence with the
modern Hopfield network, U-Hop+ separation, effective temperature, bad input, save/load."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch.nn.functional import normalize

import varmem
from varmem.baselines.kernelized_hopfield import (
    KernelizedHopfield,
    min_separation,
    separation_bounds,
    separation_loss,
)
from varmem.baselines.modern_hopfield import ModernHopfield

SEPARATIONS = ["softmax", "entmax15", "sparsemax"]


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("separation", SEPARATIONS)
def test_update_is_cccp_step_of_the_energy(separation):
    """Affine Φ = Wx + b with F ≥ D: ∇E(x) = WᵀW (x - x_new) (module docstring), checked by autograd."""
    X = _unit(12, 4, 0)
    khm = KernelizedHopfield(4, beta=3.0, feature_dim=6, separation=separation).write(X)
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (grad,) = torch.autograd.grad(khm.energy(z).sum(), z)
    with torch.no_grad():
        z_new, energy, _, _ = khm.step(z)
        torch.testing.assert_close(energy, khm.energy(z))
    W = khm.feature.weight.detach()
    torch.testing.assert_close(grad, (z.detach() - z_new) @ (W.T @ W), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("separation", SEPARATIONS)
def test_energy_never_increases_along_retrieval(separation):
    X = _unit(20, 5, 2)
    khm = KernelizedHopfield(5, beta=2.0, feature_dim=8, separation=separation).write(X)
    khm.fit(steps=10, lr=0.5)
    cue = torch.randn(50, 5, generator=torch.Generator().manual_seed(3))
    out = khm.retrieve(cue, max_steps=15, tol=0.0)
    assert out.trace.shape[1] == 50 and 2 <= out.trace.shape[0] <= 16
    assert (out.trace.diff(dim=0) <= 1e-10).all()


def test_identity_softmax_is_the_modern_hopfield_network():
    """Φ = identity + softmax: the same update as ModernHopfield(dot) and as the plain torch
    expression Xᵀ softmax(β X ξ); the energy differs by Ramsauer's constants β⁻¹ log N + ½ M²."""
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(4))
    beta = 0.7
    khm = KernelizedHopfield(6, beta=beta, feature_map="identity").write(X)
    mhn = ModernHopfield(6, beta=beta, similarity="dot", update_steps_max=3).write(X)
    cue = torch.randn(9, 6, generator=torch.Generator().manual_seed(5))
    plain = torch.softmax(beta * cue @ X.T, -1) @ X
    torch.testing.assert_close(khm.step(cue)[0], plain, atol=1e-12, rtol=0)
    ours = khm.retrieve(cue, max_steps=4, tol=0.0)
    theirs = mhn.retrieve(cue)
    torch.testing.assert_close(ours.pattern, theirs.pattern, atol=1e-12, rtol=0)
    constant = math.log(40) / beta + 0.5 * float(X.norm(dim=-1).max()) ** 2
    torch.testing.assert_close(khm.energy(cue) + constant, mhn.energy(cue), atol=1e-10, rtol=0)
    # hopfield-layers' association matrix: the softmax of the last update (one update: at the cue)
    torch.testing.assert_close(khm.association_matrix(cue, max_steps=1), torch.softmax(beta * cue @ X.T, -1))
    z = cue
    for _ in range(3):  # an independent 4-step read: the last update's softmax is taken at z_3
        z = torch.softmax(beta * z @ X.T, -1) @ X
    last = torch.softmax(beta * z @ X.T, -1)
    torch.testing.assert_close(khm.association_matrix(cue, max_steps=4, tol=0.0), last, atol=1e-12, rtol=0)
    assert not torch.allclose(last, torch.softmax(beta * cue @ X.T, -1), atol=1e-3)  # the state did move
    assert khm.effective_beta() == pytest.approx(beta)


def test_chunked_softmax_path_matches_dense_with_a_feature_map():
    X = torch.randn(300, 5, generator=torch.Generator().manual_seed(6))
    khm = KernelizedHopfield(5, beta=0.4, feature_dim=7, feature_map="mlp", chunk_size=64).write(X)
    cue = torch.randn(11, 5, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        keys, q = khm.features(X), khm.features(cue)
        w = torch.softmax(0.4 * q @ keys.T, -1)
        z_new, energy, _, index = khm.step(cue)
    torch.testing.assert_close(z_new, w @ X, atol=1e-12, rtol=0)
    dense_energy = 0.5 * (q * q).sum(-1) - torch.logsumexp(0.4 * q @ keys.T, -1) / 0.4
    torch.testing.assert_close(energy, dense_energy, atol=1e-10, rtol=0)
    assert torch.equal(index, w.argmax(-1))


def test_uhop_stage_one_separates_memories_and_sparse_retrieval_becomes_singletons():
    """Reference §3.3 synthetic setting (d = 5, M = 10 unit memories, D_Φ = 5, β = 1, 20 steps of
    Adam lr 1, τ = 0.1), fewer queries: the loss falls, Δ_min grows, metastable states shrink to 1."""
    X = _unit(10, 5, 42)
    queries = _unit(300, 5, 43)
    khm = KernelizedHopfield(5, beta=1.0, feature_dim=5, separation="entmax15").write(X)
    before = khm.min_separation()
    sizes_raw = (khm.retrieve(queries, max_steps=20, tol=0.0, trace=False).weights > 0).sum(-1)
    losses = khm.fit(steps=20, lr=1.0, tau=0.1)
    assert losses[-1] < 0.5 * losses[0]
    assert khm.min_separation() > before
    sizes = (khm.retrieve(queries, max_steps=20, tol=0.0, trace=False).weights > 0).sum(-1)
    assert (sizes == 1).all() and sizes_raw.float().mean() > 1.5
    # the pitfall: the learned Φ inflates the feature scale, so β_eff ≫ β
    assert khm.effective_beta() > 20 * khm.beta
    # matched-temperature control: a plain network at β_eff is also all singletons...
    plain = khm.matched_modern_hopfield()
    assert plain.feature_map_kind == "identity" and plain.beta == pytest.approx(khm.effective_beta())
    assert ((plain.retrieve(queries, max_steps=20, tol=0.0, trace=False).weights > 0).sum(-1) == 1).all()
    # ...and with the scale removed (β_eff = β) the learned Φ keeps some of its gain over raw
    khm.rescale_features()
    assert khm.effective_beta() == pytest.approx(1.0)
    sizes_rescaled = (khm.retrieve(queries, max_steps=20, tol=0.0, trace=False).weights > 0).sum(-1)
    raw_plain = KernelizedHopfield(5, beta=1.0, feature_map="identity", separation="entmax15").write(X)
    sizes_plain = (raw_plain.retrieve(queries, max_steps=20, tol=0.0, trace=False).weights > 0).sum(-1)
    assert sizes_rescaled.float().mean() < sizes_plain.float().mean()


def test_separation_loss_and_bounds_closed_forms():
    # a regular simplex (M = d + 1 points) is the optimal code: cos = -1/d, Δ = 1 + 1/d
    simplex = torch.eye(4) - 0.25
    assert min_separation(simplex) == pytest.approx(4 / 3)
    loss = separation_loss(simplex, tau=0.1)
    assert float(loss) == pytest.approx((-1 / 3) / 0.1 / 4, abs=1e-12)  # all pairs equal: (1/M)·cos/τ
    # Prop. 3.1 numbers from the reference (d = 3): M=4: 0.167 ≤ ... ≤ 2.000; M=24: 0.028 ≤ ... ≤ 0.817
    for m, lo, up in [(4, 0.167, 2.000), (6, 0.111, 1.633), (12, 0.056, 1.155), (24, 0.028, 0.817)]:
        lower, upper = separation_bounds(m, 3)
        assert lower == pytest.approx(lo, abs=1e-3) and upper == pytest.approx(up, abs=1e-3)  # 3 decimals
        # d = 3 closed forms (Γ(2) = 1, Γ(3/2) = √π/2, Γ(5/2) = 3√π/4): lower = 2/(3M), upper = 4/√M
        assert lower == pytest.approx(2 / (3 * m), rel=1e-12) and upper == pytest.approx(4 / math.sqrt(m), rel=1e-12)
    with pytest.raises(ValueError, match="num_points"):
        separation_bounds(1, 3)
    with pytest.raises(ValueError, match="at least 2"):
        separation_loss(torch.ones(1, 3))


def test_fixed_point_engine_weights_and_partial_cue():
    X = _unit(15, 6, 8)
    khm = KernelizedHopfield(6, beta=20.0, feature_map="identity", separation="sparsemax").write(X)
    mask = torch.tensor([True, True, True, True, False, False])
    cue = X[:4].clone()
    cue[:, 4:] = float("nan")
    out = khm.retrieve(cue, mask, max_steps=10)
    torch.testing.assert_close(out.pattern[:, :4], X[:4, :4])  # observed entries clamped
    assert out.weights.shape == (4, 15) and torch.equal(out.index, torch.arange(4))
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(4))


def test_model_is_the_boltzmann_density():
    X = _unit(6, 3, 9)
    khm = KernelizedHopfield(3, beta=2.0, separation="sparsemax").write(X)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(10))
    with pyro.poutine.trace() as tr, pyro.poutine.condition(data={"z": z}):
        khm.model(num_cues=4)
    tr.trace.compute_log_prob()
    torch.testing.assert_close(tr.trace.nodes["energy"]["log_prob"], -2.0 * khm.energy(z))
    torch.testing.assert_close(tr.trace.log_prob_sum(), -2.0 * khm.energy(z).sum())
    # with a partial cue the observed entries are clamped: the density of the clamped state
    cue, mask = torch.randn(4, 3), torch.tensor([True, False, False])
    with pyro.poutine.trace() as tr, pyro.poutine.condition(data={"z": z}):
        khm.model(cue, mask)
    torch.testing.assert_close(tr.trace.log_prob_sum(), -2.0 * khm.energy(torch.where(mask, cue, z)).sum())
    torch.testing.assert_close(khm.energy(z, cue, mask), khm.energy(torch.where(mask, cue, z)))


def test_save_load_round_trip(tmp_path):
    X = _unit(10, 4, 11)
    khm = KernelizedHopfield(4, beta=1.5, feature_dim=6, feature_map="mlp", separation="entmax15", seed=3).write(X)
    khm.fit(steps=5, lr=0.1)
    path = varmem.save(khm, tmp_path / "khm.safetensors")
    loaded = varmem.load(path)
    assert isinstance(loaded, KernelizedHopfield) and loaded.config() == khm.config()
    cue = torch.randn(5, 4, generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(loaded.retrieve(cue).pattern, khm.retrieve(cue).pattern)
    assert loaded.effective_beta() == pytest.approx(khm.effective_beta())


def test_bad_input_and_failed_fit_restores_state():
    with pytest.raises(ValueError, match="feature_map"):
        KernelizedHopfield(3, feature_map="rbf")
    with pytest.raises(ValueError, match="separation"):
        KernelizedHopfield(3, separation="relu")
    with pytest.raises(ValueError, match="beta"):
        KernelizedHopfield(3, beta=-1.0)
    with pytest.raises(ValueError, match="feature_dim"):
        KernelizedHopfield(3, feature_map="identity", feature_dim=4)
    khm = KernelizedHopfield(3)
    with pytest.raises(ValueError, match="empty"):
        khm.retrieve(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        khm.write(torch.ones(3)).fit()
    with pytest.raises(ValueError, match="NaN"):
        khm.write(torch.tensor([1.0, float("nan"), 0.0]))
    assert len(khm) == 1
    with pytest.raises(ValueError, match="shape"):
        khm.retrieve(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown option"):
        khm.retrieve(torch.zeros(3), steps=3)
    khm.write(torch.tensor([0.0, 1.0, 0.0]))
    before = {k: v.clone() for k, v in khm.state_dict().items()}
    with pytest.raises(FloatingPointError, match="restored"):
        khm.fit(steps=3, lr=float("1e308"))
    for k, v in khm.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="nothing to learn"):
        KernelizedHopfield(3, feature_map="identity").write(torch.eye(3)).fit()
