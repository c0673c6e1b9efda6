"""ConjugateDense and BayesPCN's conjugate layers on the PCNet composition.

References (all float64):
* the batch Bayesian-linear-regression posterior ``U = (U0⁻¹ + ZᵀZ/σ²)⁻¹``,
  ``R = U (U0⁻¹ R0 + ZᵀX/σ²)``, computed here with explicit inverses;
* BayesPCN's own energies (``particle_energies``, ``mixture_energy``, ``energy``) and its fused
  relaxation, against ``PCNet.energy`` / ``PCNet.relax`` (autograd) over the memory's layers.
"""

import functools

import pytest
import torch
from torch import nn

import varmem
from varmem.memories.predictive_coding import ConjugateDense, Dense, PCNet

F64 = torch.float64
SMALL = dict(n_layers=3, h_dim=5, sigma_obs=0.1, T_infer=40)


def _memory(K, **kw):
    torch.manual_seed(0)
    return varmem.BayesPCN(6, **{**SMALL, "n_particles": K, **kw}, dtype=F64).write(torch.randn(4, 6, dtype=F64))


def _nodes(acts):
    """BayesPCN activities (sensory first) as PCNet nodes (top first)."""
    return acts[::-1]


def _batch_posterior(layer, R0, chunks):
    """``(R, U)`` ``[K, …]`` of Bayesian linear regression over all chunks, by explicit inverses."""
    Z = torch.cat([z for z, _ in chunks], -2)
    X = torch.cat([x for _, x in chunks], -2)
    s2 = layer.sigma**2
    U0inv = torch.eye(Z.shape[-1], dtype=F64) / layer.sigma_prior**2
    U = torch.linalg.inv(U0inv + Z.transpose(-1, -2) @ Z / s2)
    return U @ (U0inv @ R0 + Z.transpose(-1, -2) @ X / s2), U


# --- PCNet's energy over the conjugate layers = BayesPCN's -----------------------------------
@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("log_prob", ["p_pred", "map"])
def test_pcnet_energy_over_the_conjugate_layers_equals_bayes_pcn_energies(K, log_prob):
    m = _memory(K, log_prob=log_prob)
    assert m.net.layers[-1] is m.conjugate_layer(0) and m.net.top_layer is m.conjugate_layer(2)
    g = torch.Generator().manual_seed(1)
    B = 3
    shared = [torch.randn(1, B, d, generator=g, dtype=F64) for d in (6, 5, 5)]
    own = [shared[0]] + [torch.randn(K, B, 5, generator=g, dtype=F64) for _ in range(2)]
    for acts in (shared, own):  # activities shared by the particles, and one set per particle
        want, _ = m.particle_energies(acts)  # [K, B]
        got = m.net.energy(_nodes([a if a.shape[0] == K else a.squeeze(0) for a in acts]))
        assert got.shape == (K, B)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    mixture, _, _ = m.mixture_energy(shared)
    torch.testing.assert_close(m.net.energy(_nodes([a.squeeze(0) for a in shared]), m.log_w), mixture,
                               atol=1e-10, rtol=0)
    code = torch.cat([a.squeeze(0) for a in shared], -1)
    torch.testing.assert_close(m.net.energy(_nodes(m.split_code(code)), m.log_w), m.energy(code),
                               atol=1e-10, rtol=0)
    # negative control: the same activities under the prior (a fresh memory) have another energy
    fresh = varmem.BayesPCN(6, **{**SMALL, "n_particles": K, "log_prob": log_prob}, dtype=F64)
    assert (fresh.net.energy(_nodes(m.split_code(code)), m.log_w) - m.energy(code)).abs().max() > 1e-3


def test_pcnet_gradient_over_the_conjugate_layers_equals_the_hand_written_one():
    m = _memory(2)
    code = torch.randn(3, m.code_dim, dtype=F64)
    nodes = [a.detach().requires_grad_() for a in _nodes(m.split_code(code))]
    grads = torch.autograd.grad(m.net.energy(nodes, m.log_w).sum(), nodes)
    torch.testing.assert_close(torch.cat(grads[::-1], -1), m.energy_grad(code), atol=1e-10, rtol=0)


# --- the closed-form learning of one layer -----------------------------------------------------
@pytest.mark.parametrize("top", [False, True])
def test_updates_equal_the_batch_closed_form_and_delete_inverts_them(top):
    g = torch.Generator().manual_seed(0)
    K, d_in, d_out = 2, 6, 4
    layer = ConjugateDense(d_in, d_out, sigma=0.3, sigma_prior=0.8, n_particles=K, top=top, generator=g)
    R0, U0 = layer.R.clone(), layer.U.clone()
    torch.testing.assert_close(U0, 0.64 * torch.eye(layer.in_features, dtype=F64).expand_as(U0), atol=1e-15, rtol=0)
    chunks = []
    for B in (1, 3, 2, 5):
        x_in = torch.randn(K, B, d_in, generator=g, dtype=F64)
        chunk = (layer.features(x_in), torch.randn(K, B, d_out, generator=g, dtype=F64))
        layer.update(*chunk)
        chunks.append(chunk)
    R, U = _batch_posterior(layer, R0, chunks)
    torch.testing.assert_close(layer.U, U, atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.R, R, atol=1e-10, rtol=0)
    # delete the second chunk: the posterior of the others, whatever the order of the writes
    layer.delete(*chunks[1])
    R, U = _batch_posterior(layer, R0, chunks[:1] + chunks[2:])
    torch.testing.assert_close(layer.U, U, atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.R, R, atol=1e-10, rtol=0)
    for chunk in chunks[:1] + chunks[2:]:
        layer.delete(*chunk)
    torch.testing.assert_close(layer.U, U0, atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.R, R0, atol=1e-10, rtol=0)
    assert (R - R0).abs().max() > 1e-2  # negative control: the writes had moved the posterior


def test_delete_of_an_unseen_chunk_is_refused_and_changes_nothing():
    layer = ConjugateDense(3, 2, sigma=0.1, activation="linear")
    R, U = layer.R, layer.U
    with pytest.raises(ValueError, match="cannot be removed"):  # the prior saw nothing to take away
        layer.delete(torch.ones(1, 4, 3, dtype=F64) * 5, torch.zeros(1, 4, 2, dtype=F64))
    assert layer.R is R and layer.U is U


def test_update_refuses_data_of_the_wrong_shape_or_dtype():
    layer = ConjugateDense(3, 2, sigma=0.1, n_particles=2)
    R = layer.R
    z, x = torch.zeros(2, 4, 3, dtype=F64), torch.zeros(2, 4, 2, dtype=F64)
    for bad, match in (((z[..., :2], x), r"Z must be a tensor \[2 or 1, B, 3\]"), ((z, x[:, :3]), "same number"),
                       ((z.float(), x), "dtype"), ((z[0], x), "Z must be"), ((z, torch.zeros(3, 4, 2)), "X must be")):
        with pytest.raises(ValueError, match=match):
            layer.update(*bad)
    assert layer.R is R
    layer.update(z[:1], x)  # one set of features for all particles broadcasts


def test_forget_diffuses_to_the_prior_and_replaces_the_buffers():
    layer = ConjugateDense(4, 3, sigma=0.2, sigma_prior=0.5, n_particles=2, activation="tanh")
    z = layer.features(torch.randn(2, 6, 4, dtype=F64))
    layer.update(z, torch.randn(2, 6, 3, dtype=F64))
    R, U = layer.R, layer.U
    layer.forget(0.36)
    assert layer.R is not R and layer.U is not U  # new tensors: the old ones are a snapshot
    torch.testing.assert_close(layer.R, 0.8 * R + 0.2 * layer.R_init, atol=1e-15, rtol=0)
    torch.testing.assert_close(layer.U, 0.64 * U + 0.36 * 0.25 * torch.eye(4, dtype=F64), atol=1e-15, rtol=0)
    layer.forget(1.0)
    torch.testing.assert_close(layer.R, layer.R_init, atol=0, rtol=0)
    with pytest.raises(ValueError, match="beta"):
        layer.forget(1.5)


def test_predictive_variance_and_point_prediction():
    layer = ConjugateDense(3, 2, sigma=0.5, n_particles=2, activation="relu")
    x = torch.randn(4, 3, dtype=F64)
    mean, var = layer.predictive(x)
    z = torch.relu(x)
    torch.testing.assert_close(mean, layer(x))
    torch.testing.assert_close(var, 0.25 + torch.einsum("bi,kij,bj->kb", z, layer.U, z), atol=1e-14, rtol=0)
    point = ConjugateDense(3, 2, sigma=0.5, n_particles=2, predictive_variance=False, init_mean=layer.R_init)
    torch.testing.assert_close(point.predictive(x)[1], torch.full((2, 4), 0.25, dtype=F64))
    assert layer(x.float()).dtype == torch.float32  # computed in the input's dtype


# --- relaxation: PCNet (autograd) reaches BayesPCN's fused MAP --------------------------------
@pytest.mark.parametrize("individual", [True, False])
def test_pcnet_relax_on_the_conjugate_layers_reaches_bayes_pcn_fused_map(individual):
    """Both run Adam (lr 0.01, torch's formula) from the same start for 300 steps without early stop:
    per particle (BayesPCN's write) or on the particle mixture (its read).  The energies (autograd
    through the layers' ``predictive`` vs the fused hand-written pass) and so the trajectories
    agree to rounding: activities and energies to 1e-8 (measured: below 1e-12)."""
    m = _memory(3)
    x = torch.randn(1, 2, 6, dtype=F64)
    P = 3 if individual else 1
    hidden = m.init_hidden(2, P, torch.Generator().manual_seed(2), dtype=F64)
    acts, trace, _, _ = m.relax([x] + [h.clone() for h in hidden], None, steps=300, lr=0.01,
                                individual=individual)
    nodes = _nodes([x.squeeze(0)] + [h.clone() if individual else h.squeeze(0).clone() for h in hidden])
    nodes, energies = m.net.relax(nodes, steps=300, x_optimizer=functools.partial(torch.optim.Adam, lr=0.01),
                                  log_w=None if individual else m.log_w)
    for got, want in zip(nodes[:-1], _nodes(acts)[:-1], strict=True):
        torch.testing.assert_close(got if individual else got.unsqueeze(0), want, atol=1e-8, rtol=0)
    torch.testing.assert_close(energies, trace[:-1], atol=1e-8, rtol=1e-12)
    assert (trace[-1] - trace[0]).abs().min() > 1.0  # negative control: the relaxation did move


# --- composition and state plumbing ------------------------------------------------------------
def test_pcnet_refuses_conjugate_layers_it_cannot_use():
    top, layer = ConjugateDense(1, 4, sigma=0.1, top=True), ConjugateDense(4, 3, sigma=0.1)
    with pytest.raises(TypeError, match="constant input"):
        PCNet((4,), [layer], top_prior=ConjugateDense(4, 4, sigma=0.1))
    with pytest.raises(ValueError, match="must be gaussian"):
        PCNet((4,), [layer], energies="bernoulli", top_prior=top)
    with pytest.raises(ValueError, match="top node's shape"):
        PCNet((5,), [ConjugateDense(5, 3, sigma=0.1)], top_prior=top)
    net = PCNet((4,), [layer], top_prior=top)
    assert net.shapes == [(4,), (3,)] and not net.fused and net.mu_top is None
    with pytest.raises(ValueError, match="autograd"):
        net.grads([torch.zeros(1, 4, dtype=F64), torch.zeros(1, 3, dtype=F64)], [True, False], False, "fused",
                  log_w=torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="closed form"):
        net.fit(torch.zeros(2, 3, dtype=F64), progress=False)
    with pytest.raises(ValueError, match="retrieve"):
        net.read(torch.zeros(2, 3, dtype=F64))
    plain = PCNet((4,), [Dense(4, 3)])  # a plain Dense stack keeps its fused path
    assert plain.fused and plain.top_layer is None


def test_layer_state_keeps_its_flat_names():
    """The layers' buffers are the memory's state: flat names, routed attributes, checkpoint keys
    (``R{l}``, ``U{l}``, ``R_init{l}``) and torch's own ``load_state_dict`` of an enclosing module."""
    m = _memory(2)
    keys = list(m.state_dict())
    assert keys[:3] == ["R_init0", "R0", "U0"] and not any(k.startswith("net.") for k in keys)
    assert m.R1 is m.conjugate_layer(1).R and m.state_dict()["U2"] is not None
    m.U0 = torch.zeros_like(m.U0)
    assert torch.equal(m.conjugate_layer(0).U, torch.zeros_like(m.U0))
    a, b = nn.ModuleDict({"m": _memory(2)}), nn.ModuleDict({"m": _memory(2, seed=5)})
    assert not torch.equal(a["m"].weight_mean(0), b["m"].weight_mean(0))
    b.load_state_dict(a.state_dict())
    for i in range(3):
        assert torch.equal(a["m"].weight_mean(i), b["m"].weight_mean(i))
        assert torch.equal(a["m"].weight_cov(i), b["m"].weight_cov(i))
