"""PCNetMemory: a composed predictive-coding network read and written through varmem's protocol.

References:
* the energy against the node log-densities of ``torch.distributions`` (``Normal``,
  ``Bernoulli(logits=…)``) written out per node, every constant kept, for dense and convolutional
  networks; and against the log-density of the Pyro trace of ``memory.model``;
* one step of the ``"pcnet"`` read against ``torch.autograd.grad`` of the memory's energy;
* ``PredictiveCodingMemory`` (GPCN, an independent implementation: its own fused gradient and Adam)
  as the dense pre-synaptic special case: the same trained weights read the same (every procedure,
  to 1e-9), and the same initial weights trained with the same settings learn the same weights;
* recall of stored digits by a convolutional network, with an untrained network as negative control.
"""

import math

import pyro.poutine as poutine
import pytest
import torch

import varmem
from varmem.memories.predictive_coding import Conv2d, ConvTranspose2d, Dense, PCNet, PCNetMemory


def _dense_net(energies="gaussian", top_prior=True, where="pre"):
    return PCNet((3,), [Dense(3, 5, where=where), Dense(5, 4, activation="tanh", where=where)],
                 energies=["gaussian", energies], sigmas=[0.7, 0.4], top_prior=top_prior, sigma_top=1.3, seed=0)


def _conv_net():
    return PCNet((2, 2, 2), [ConvTranspose2d(2, 3, 4, stride=2, padding=1), Conv2d(3, 1, 3, padding=1, where="post",
                                                                                  activation="tanh")],
                 sigmas=[0.8, 0.3], sigma_top=1.1, seed=0)


def _code(memory, B=3, seed=1):
    return torch.randn(B, memory.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _written_out_log_joint(memory, z, binary=False):
    """``log p(all nodes)`` per node with torch.distributions, from the code layout of the docs."""
    net = memory.net
    sizes = [math.prod(s) for s in net.shapes]
    parts = list(z.split(sizes[::-1], -1))[::-1]  # top first
    nodes = [p.reshape(-1, *s) for p, s in zip(parts, net.shapes, strict=True)]
    total = torch.zeros(z.shape[0], dtype=z.dtype)
    if net.top_prior:
        total = total + torch.distributions.Normal(net.mu_top, net.sigma_top).log_prob(nodes[0]).flatten(1).sum(-1)
    for i, layer in enumerate(net.layers):
        g = layer(nodes[i])
        if net.energies[i] == "gaussian":
            lp = torch.distributions.Normal(g, net.sigmas[i]).log_prob(nodes[i + 1])
        else:
            lp = torch.distributions.Bernoulli(logits=g).log_prob(nodes[i + 1])
        total = total + lp.flatten(1).sum(-1)
    return total


@pytest.mark.parametrize("kind", ["dense", "post", "no_top_prior", "bernoulli", "conv"])
def test_energy_is_minus_the_written_out_log_joint_with_every_constant(kind):
    net = {"dense": _dense_net(), "post": _dense_net(where="post"), "no_top_prior": _dense_net(top_prior=False),
           "bernoulli": _dense_net("bernoulli"), "conv": _conv_net()}[kind]
    memory = PCNetMemory(net, epochs=1, T=1).write(torch.rand(2, net.dim))
    z = _code(memory)
    if kind == "bernoulli":  # binary sensory values, where Bernoulli(logits) is a density
        z[:, :4] = (z[:, :4] > 0).double()
    with torch.no_grad():
        torch.testing.assert_close(memory.energy(z), -_written_out_log_joint(memory, z), atol=1e-10, rtol=1e-12)
        torch.testing.assert_close(memory.pc_energy(z), memory.net.energy(memory.split_code(z)), atol=1e-10,
                                   rtol=1e-12)
    # a cue replaces the observed sensory entries of z, and only those
    cue, mask = torch.rand(3, net.dim), torch.rand(3, net.dim) > 0.5
    if kind == "bernoulli":
        cue = (cue > 0.5).double()
    clamped = torch.cat([torch.where(mask, cue, z[:, :net.dim]), z[:, net.dim:]], -1)
    with torch.no_grad():
        torch.testing.assert_close(memory.energy(z, cue, mask), memory.energy(clamped), atol=1e-12, rtol=0)
        assert not torch.allclose(memory.energy(z, cue, mask), memory.energy(z))  # negative control: it matters
    assert memory.value_domain is (varmem.domains.UNIT if kind == "bernoulli" else varmem.domains.SIGNED)
    if kind == "bernoulli":
        with pytest.raises(ValueError, match="items must lie in"):
            memory.write(torch.full((1, 4), 1.5))
        assert len(memory) == 2


@pytest.mark.parametrize("top_prior", [True, False])
@pytest.mark.parametrize("conv", [False, True])
def test_pyro_trace_log_density_is_minus_the_energy(top_prior, conv):
    net = _conv_net() if conv else _dense_net(top_prior=top_prior)
    if conv and not top_prior:
        net = PCNet((2, 2, 2), list(_conv_net().layers), sigmas=[0.8, 0.3], top_prior=False, seed=0)
    memory = PCNetMemory(net, epochs=1, T=1).write(torch.rand(2, net.dim))
    z, cue = _code(memory), torch.randn(3, net.dim)
    mask = torch.rand(3, net.dim) > 0.5
    for m in (None, mask):
        trace = poutine.trace(poutine.condition(memory.model, data=memory.site_values(z, m))).get_trace(cue, m)
        trace.compute_log_prob()
        log_p = sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")
        torch.testing.assert_close(-log_p.detach(), memory.energy(z, cue, m).detach(), atol=1e-10, rtol=1e-12)
    names = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "cues"]
    assert names == ["h2", "h1", "x_missing", "x"]  # top first; the unknown entries a flat site
    bern = PCNetMemory(_dense_net("bernoulli"), epochs=1, T=1).write(torch.rand(2, 4))
    with pytest.raises(TypeError, match="Gaussian nodes"):
        bern.model(cue[:, :4])


def test_one_read_step_is_a_gradient_step_on_the_energy():
    """``joint`` with SGD, one step: the free entries (hidden nodes, unknown pixels) move by
    ``−lr ∂E/∂z`` with ``E`` the memory's energy (autograd), the observed ones stay."""
    memory = PCNetMemory(_dense_net(), epochs=2, T=3).write(torch.rand(3, 4))
    cue, mask = torch.rand(2, 4), torch.tensor([[True, False, True, False], [False, True, True, True]])
    read = memory.retrieve(cue, mask, procedure="joint", max_steps=1, lr=0.05, optimizer="sgd", hidden_init="zeros")
    z0 = torch.cat([torch.where(mask, cue, 0.0), torch.zeros(2, memory.latent_dim - 4)], -1).requires_grad_()
    (grad,) = torch.autograd.grad(memory.energy(z0, cue, mask).sum(), z0)
    expected = (z0 - 0.05 * grad).detach()
    torch.testing.assert_close(read.code, expected, atol=1e-12, rtol=1e-12)
    assert torch.equal(read.pattern[mask], cue[mask]) and not torch.equal(read.code, z0.detach())
    torch.testing.assert_close(read.trace[0], memory.energy(z0, cue, mask).detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(read.trace[-1], memory.energy(read.code), atol=1e-12, rtol=0)


@pytest.mark.parametrize("conv", [False, True])
def test_the_pyro_read_autograd_through_the_model_equals_the_pcnet_read(conv):
    """``pcnet_pyro`` (AutoDelta over the model's sites, Trace_ELBO, Adam) against ``pcnet`` with
    Adam (PCNet's relaxation: the fused dense pass / autograd of ``PCNet.energy``): same start, same
    steps, the same trajectory to rounding, for every procedure."""
    net = _conv_net() if conv else _dense_net()
    memory = PCNetMemory(net, epochs=3, T=3).write(torch.rand(3, net.dim))
    g = torch.Generator().manual_seed(4)
    cue, mask = torch.randn(2, net.dim, generator=g), torch.rand(2, net.dim, generator=g) > 0.5
    for m, proc, n in ((mask, "joint", 1), (mask, "clamp_predict", 2), (None, "clamp_predict", 2),
                       (None, "relax_all", 1), (mask, "relax_all", 1)):
        a = memory.retrieve(cue, m, procedure=proc, n_repeat=n, optimizer="adam", lr=0.05, max_steps=15)
        b = memory.retrieve(cue, m, method="pcnet_pyro", procedure=proc, n_repeat=n, lr=0.05, max_steps=15)
        torch.testing.assert_close(b.code, a.code, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(b.trace, a.trace, atol=1e-9, rtol=1e-10)
        assert b.info["procedure"] == proc and b.steps == a.steps
    assert all(p.grad is None and p.requires_grad for p in memory.net.parameters())  # the read left no trace


# --- GPCN as the dense pre-synaptic special case ---------------------------------------------------------
def _gpcn_as_pcnet(gpcn, activation):
    """A PCNet with GPCN's weights: layers top-down, torch's ``[out, in]`` = varmem's ``[d_in, d_out]ᵀ``."""
    L, h = gpcn.n_layers, gpcn.h_dim
    widths = [h] * (L - 1) + [gpcn.dim]
    sig = [gpcn.sigma_obs] * (L - 2) + [gpcn.sigma_data or gpcn.sigma_obs]
    net = PCNet((h,), [Dense(a, b, bias=False, activation=activation) for a, b in zip(widths[:-1], widths[1:],
                                                                                       strict=True)],
                sigmas=sig, sigma_top=gpcn.sigma_obs)
    with torch.no_grad():
        net.mu_top.copy_(gpcn.weight(L - 1)[0])
        for i, layer in enumerate(net.layers):  # layer i predicts a_{L-2-i} from a_{L-1-i}
            layer.inner.weight.copy_(gpcn.weight(L - 2 - i).T)
    return net


def _digits(n, seed=0):
    items = varmem.datasets.load_digits(dtype=torch.float64).flat()[:n]
    return 2 * items - 1


def test_gpcn_weights_read_the_same_through_pcnet_memory_for_every_procedure():
    items = _digits(6)
    gpcn = varmem.PredictiveCodingMemory(64, n_layers=3, h_dim=16, sigma_obs=0.5, sigma_data=0.3, training="offline",
                                         epochs=20, weight_lr=0.05, T_infer=20, activation_lr=0.05, infer_tol=0.0,
                                         infer_rtol=0.0, seed=0).write(items)
    memory = PCNetMemory(_gpcn_as_pcnet(gpcn, "relu"), epochs=1, T=1, x_optimizer="adam", x_lr=0.05,
                         read_steps=20).write(items[:1])
    memory.net.load_state_dict(_gpcn_as_pcnet(gpcn, "relu").state_dict())  # undo the one-item training
    g = torch.Generator().manual_seed(2)
    cue, mask = varmem.corruptions.corrupt(items[:4], "mask", 0.5, generator=g, image_shape=(1, 8, 8))
    noisy = items[:4] + 0.3 * torch.randn(4, 64, generator=g, dtype=torch.float64)
    opts = dict(seed=0, tol=0.0, rtol=0.0)
    for c, m, proc, n_repeat in ((cue, mask, "joint", 1), (cue, mask, "clamp_predict", 2),
                                 (noisy, None, "clamp_predict", 3), (noisy, None, "relax_all", 1),
                                 (noisy, None, "joint", 1)):
        a = gpcn.retrieve(c, m, procedure=proc, n_repeat=n_repeat, **opts)
        b = memory.retrieve(c, m, procedure=proc, n_repeat=n_repeat, seed=0)
        assert b.info["procedure"] == proc and b.steps == a.steps
        torch.testing.assert_close(b.pattern, a.pattern, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(b.code, a.code, atol=1e-9, rtol=1e-9)  # the same code layout, sensory first
        torch.testing.assert_close(b.trace, a.trace, atol=1e-7, rtol=1e-9)  # the same energy, constants included
    other = memory.retrieve(cue, mask, procedure="joint", seed=1)  # negative control: another start differs
    assert (other.code - memory.retrieve(cue, mask, procedure="joint", seed=0).code).abs().max() > 1e-3


def test_gpcn_and_pcnet_memory_learn_the_same_weights_from_the_same_start():
    """Linear activation and SGD relaxation: the hidden optimum is unique, so the two random starts
    relax to the same activities and both local weight rules make the same steps."""
    items = _digits(5)
    kw = dict(n_layers=3, h_dim=6, activation="linear", sigma_obs=1.0, sigma_data=0.5, T_infer=150,
              activation_lr=0.1, activation_optimizer="sgd", infer_tol=0.0, infer_rtol=0.0, seed=3)
    gpcn = varmem.PredictiveCodingMemory(64, training="offline", epochs=4, weight_lr=0.02, **kw)
    memory = PCNetMemory(_gpcn_as_pcnet(gpcn, "linear"), epochs=4, T=150, x_optimizer="sgd", x_lr=0.1,
                         w_optimizer="hebbian", w_lr=0.02)
    gpcn.write(items)
    memory.write(items)
    trained = _gpcn_as_pcnet(gpcn, "linear")
    for (name, p), q in zip(memory.net.named_parameters(), trained.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-8, rtol=1e-8, msg=name)
    assert (memory.net.mu_top - _gpcn_as_pcnet(varmem.PredictiveCodingMemory(64, **kw), "linear").mu_top).abs().max() \
        > 1e-3  # negative control: training moved the weights
    # PCNet's record leaves out the Gaussian constants that GPCN's keeps
    torch.testing.assert_close(torch.tensor(memory.last_fit.energy) + memory.energy_constant(),
                               torch.tensor(gpcn.fit_record.energy), rtol=1e-8, atol=0)


# --- writing --------------------------------------------------------------------------------------------
def test_offline_writes_refit_every_item_and_continual_writes_only_the_new_ones():
    items = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for training, steps in (("offline", 2 * 5 * 3), ("continual", 2 * 2 * 3)):
        memory = PCNetMemory(_dense_net(), training=training, epochs=2, T=3, batch_size=1)
        memory.write(items[:3]).write(items[3:])
        assert len(memory) == 5 and memory.last_fit.steps == steps and len(memory.last_fit.energy) == 2
    seen = []
    memory.fit(epochs=3, callback=lambda epoch, record: seen.append((epoch, len(record.energy))))
    assert seen == [(0, 1), (1, 2), (2, 3)] and memory.last_fit.steps == 3 * 5 * 3  # every stored item
    with pytest.raises(TypeError, match="callback"):
        memory.fit(callback="print")
    fresh = _dense_net()
    memory = PCNetMemory(fresh, epochs=3, T=3, w_lr=0.1).write(items)
    assert torch.equal(fresh.layers[0].inner.weight, _dense_net().layers[0].inner.weight)  # the caller's net untouched
    assert not torch.equal(memory.net.layers[0].inner.weight, fresh.layers[0].inner.weight)


def test_a_diverging_write_is_refused_and_changes_nothing():
    memory = PCNetMemory(_dense_net(), epochs=3, T=3).write(torch.rand(2, 4))
    before = {k: v.clone() for k, v in memory.state_dict().items()}
    record = memory.last_fit
    memory.w_lr = 1e6  # a setting that only fails in combination with the data
    with pytest.raises(FloatingPointError, match="w_lr"):
        memory.write(torch.full((2, 4), 3.0))
    assert len(memory) == 2 and memory.last_fit is record
    for k, v in memory.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reads_record_their_procedure_and_take_the_memorys_defaults():
    memory = PCNetMemory(_dense_net(), epochs=2, T=3, read_steps=4, procedure="relax_all").write(torch.rand(3, 4))
    cue, mask = torch.rand(2, 4), torch.tensor([True, False, True, True])
    assert memory.retrieve(cue).info["procedure"] == "relax_all" and memory.retrieve(cue).steps == 4
    plain = PCNetMemory(_dense_net(), epochs=2, T=3, read_steps=4).write(torch.rand(3, 4))
    assert plain.retrieve(cue).info["procedure"] == "clamp_predict"
    assert plain.retrieve(cue, mask).info["procedure"] == "joint"
    r = plain.retrieve(cue, mask, procedure="clamp_predict", n_repeat=3, start="prior_mean")
    assert r.info["procedure"] == "clamp_predict" and r.info["start"] == "prior_mean" and r.steps == 12
    assert torch.equal(r.pattern[:, mask], cue[:, mask]) and r.trace.shape == (15, 2)  # 3 × (4 steps + the end)
    full = plain.retrieve(cue, procedure="joint")
    assert torch.equal(full.pattern, cue)  # a full cue: nothing sensory to infer


# --- convolutional memory on small images -----------------------------------------------------------------
def _image_net(seed=0):
    return PCNet((4, 2, 2), [ConvTranspose2d(4, 8, 4, stride=2, padding=1),
                             ConvTranspose2d(8, 1, 4, stride=2, padding=1, activation="tanh")],
                 sigmas=[1.0, 0.3], sigma_top=1.0, seed=seed)


def test_a_convolutional_memory_completes_the_digits_it_stored_and_an_untrained_one_does_not(tmp_path):
    digits = varmem.datasets.load_digits(dtype=torch.float64)
    items = 2 * digits.flat()[:4] - 1
    kw = dict(epochs=60, T=20, x_optimizer="sgd", x_lr=0.05, w_optimizer="adam", w_lr=0.02, read_steps=300)
    memory = PCNetMemory(_image_net(), **kw).write(items.reshape(4, 1, 8, 8))  # sensory-shaped items
    assert memory.last_fit.energy[-1] < 0.15 * memory.last_fit.energy[0]
    mask = torch.ones(4, 64, dtype=torch.bool)
    mask[:, 40:] = False  # the bottom three rows hidden
    read = memory.retrieve(torch.where(mask, items, 0.0), mask, procedure="joint", optimizer="adam", lr=0.05)
    err = ((read.pattern - items)[:, 40:] ** 2).mean()
    untrained = PCNetMemory(_image_net(), **kw)
    untrained.items = items.clone()  # stored but never trained: the negative control
    other = untrained.retrieve(torch.where(mask, items, 0.0), mask, procedure="joint", optimizer="adam", lr=0.05)
    base = ((other.pattern - items)[:, 40:] ** 2).mean()
    # measured: 0.093 against 0.78 (in [-1, 1] units; the hidden rows' variance is about 0.6)
    assert float(err) < 0.25 * float(base), (err, base)
    path = varmem.save(memory, tmp_path / "conv.safetensors")
    again = varmem.load(path)
    assert again.config() == memory.config() and again.net.shapes == memory.net.shapes
    assert torch.equal(again.retrieve(read.pattern, procedure="relax_all").code,
                       memory.retrieve(read.pattern, procedure="relax_all").code)


# --- construction ----------------------------------------------------------------------------------------------
def test_dense_builds_the_network_of_its_widths_and_a_spec_rebuilds_it():
    m = PCNetMemory.dense(6, hidden=(4, 5), activation="tanh", where="post", bias=False, sigma=0.5, sigma_data=0.2,
                          top_prior=False, epochs=1)
    assert m.net.shapes == [(4,), (5,), (6,)] and m.net.sigmas == [0.5, 0.2] and not m.net.top_prior
    assert all(layer.where == "post" and layer.inner.bias is None for layer in m.net.layers)
    assert m.latent_dim == 15 and m.dim == 6
    again = PCNetMemory(**m.config())
    assert again.config() == m.config()
    for bad, error, words in ((dict(hidden=()), ValueError, "hidden"), (dict(hidden=(0,)), ValueError, "hidden"),
                              (dict(activation="swish"), ValueError, "activation")):
        with pytest.raises(error, match=words):
            PCNetMemory.dense(6, **bad)
    custom = PCNet((3,), [Dense(3, 4, activation=torch.sin)])
    memory = PCNetMemory(custom, epochs=1, T=1).write(torch.rand(2, 4))  # any activation trains and reads ...
    assert torch.isfinite(memory.retrieve(torch.rand(1, 4)).pattern).all()
    with pytest.raises(TypeError, match="cannot be described"):  # ... but cannot be saved
        varmem.save(memory, "unused.safetensors")
    with pytest.raises(ValueError, match="x_optimizer"):
        PCNetMemory(custom, x_optimizer="lbfgs")


# --- evidence ---------------------------------------------------------------------------------------------------
def _linear_gaussian_log_evidence(memory, cue, mask):
    """Closed form for linear activations: every node is Gaussian, ``m_i = W_i m_{i-1} + b_i``,
    ``C_i = W_i C_{i-1} W_iᵀ + σ_i² I``; the observed entries of the sensory node are ``N(m[obs], C[obs, obs])``."""
    net = memory.net
    m = net.mu_top.detach().clone()
    C = net.sigma_top**2 * torch.eye(m.numel(), dtype=m.dtype)
    for i, layer in enumerate(net.layers):
        W, b = layer.inner.weight.detach(), layer.inner.bias.detach()
        m, C = W @ m + b, W @ C @ W.T + net.sigmas[i] ** 2 * torch.eye(W.shape[0], dtype=m.dtype)
    return torch.stack([torch.distributions.MultivariateNormal(m[k], C[k][:, k]).log_prob(x[k])
                        for x, k in zip(cue, mask, strict=True)])


def test_evidence_of_a_linear_gaussian_network_is_its_closed_form():
    net = PCNet((3,), [Dense(3, 5, activation="linear"), Dense(5, 4, activation="linear")], sigmas=[0.7, 0.4],
                sigma_top=1.3, seed=0)
    memory = PCNetMemory(net, epochs=5, T=5).write(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    cue, mask = torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) > 0.4
    mask[:, 0] = True
    for m in (mask, torch.ones_like(mask)):
        ev = memory.evidence(cue, m, defensive=0.0, num_samples=16)  # the Laplace proposal is the posterior
        torch.testing.assert_close(ev.log_evidence, _linear_gaussian_log_evidence(memory, cue, m), atol=1e-9, rtol=0)
        assert ev.kind == "estimate" and bool((ev.stderr < 1e-9).all()) and ev.n_observed.tolist() == m.sum(-1).tolist()
    mixed = memory.evidence(cue, mask, defensive=0.3, num_samples=2000)  # with prior draws: noisy, still unbiased
    err = (mixed.log_evidence - _linear_gaussian_log_evidence(memory, cue, mask)).abs()
    assert bool((err < 4 * mixed.stderr + 1e-3).all()) and bool((mixed.stderr > 0).all())


def test_evidence_of_a_relu_network_agrees_with_brute_force_prior_sampling():
    net = PCNet((2,), [Dense(2, 3), Dense(3, 2, activation="relu")], sigmas=[0.7, 0.5], sigma_top=1.0, seed=0)
    memory = PCNetMemory(net, epochs=20, T=10, w_lr=0.05).write(torch.randn(3, 2, generator=torch.Generator()
                                                                             .manual_seed(0)))
    cue = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    ev = memory.evidence(cue, num_samples=4000, defensive=0.3, seed=3)
    S = 200_000  # log (1/S) Σ_s p(x | h_s), h_s ~ p(h): the definition, by plain Monte Carlo
    with torch.no_grad():
        h = memory._prior_hidden(S, torch.Generator().manual_seed(5))
        pred = memory.net.layers[-1](memory.split_code(torch.cat([torch.zeros(S, 2), h], -1))[-2])
        lp = torch.distributions.Normal(pred.unsqueeze(1), 0.5).log_prob(cue.unsqueeze(0)).sum(-1)  # [S, B]
        brute = lp.logsumexp(0) - math.log(S)
        w = (lp - lp.amax(0)).exp()
        se = w.std(0) / w.mean(0) / math.sqrt(S)
    assert bool(((ev.log_evidence - brute).abs() < 4 * (ev.stderr**2 + se**2).sqrt()).all()), (ev, brute)
    far = memory.evidence(cue + 4.0, num_samples=400, seed=3)  # negative control: cues the model does not expect
    assert bool((far.log_evidence < brute - 5).all())
    with pytest.raises(TypeError, match="top prior"):
        PCNetMemory(_dense_net(top_prior=False), epochs=1, T=1).write(torch.rand(2, 4)).evidence(torch.rand(1, 4))
