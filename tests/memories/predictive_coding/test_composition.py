"""PCNet: predictive-coding networks composed of layers, against independent computations.

References:
* the energy against ``torch.distributions`` log-densities (``Normal``, ``Bernoulli(logits=…)``)
  of every node, constants removed explicitly;
* the fused dense pass (energy, activity and weight gradients) against ``torch.autograd.grad`` of
  the energy, for pre- and post-synaptic activations, with and without biases, Gaussian and
  Bernoulli nodes;
* the local Hebbian weight step against ``torch.optim.SGD`` on the autograd gradient, and the
  weight gradient of a dense pre-synaptic Gaussian layer against ``−ε f(x)ᵀ / σ²`` written out;
* GPCN (``PredictiveCodingMemory``) as a special case: same weights → same energy and the same
  local weight update;
* training lowers the energy and makes stored items recallable (negative control: an untrained net).
"""

import functools
import math

import pytest
import torch

import varmem
from varmem.memories.predictive_coding import Conv2d, ConvTranspose2d, Dense, PCNet


def _net(where="pre", bias=True, energies="gaussian", top_prior=True, act="relu", seed=0):
    return PCNet((3,), [Dense(3, 5, bias=bias, activation=act, where=where),
                        Dense(5, 4, bias=bias, activation="tanh", where=where)],
                 energies=energies, sigmas=[0.7, 0.4], top_prior=top_prior, sigma_top=1.3, seed=seed).double()


def _acts(net, B=3, binary=False):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(B, *s, generator=g, dtype=torch.float64) for s in net.shapes]
    if binary:
        xs[-1] = (xs[-1] > 0).double()
    return xs


@pytest.mark.parametrize("energies", ["gaussian", "bernoulli"])
def test_energy_is_minus_the_node_log_densities_without_constants(energies):
    net = _net(energies=["gaussian", energies])
    xs = _acts(net, binary=energies == "bernoulli")
    with torch.no_grad():
        c = math.sqrt(2 * math.pi)
        top = torch.distributions.Normal(net.mu_top, 1.3).log_prob(xs[0]).sum(-1) + 3 * math.log(1.3 * c)
        mid = torch.distributions.Normal(net.layers[0](xs[0]), 0.7).log_prob(xs[1]).sum(-1)
        mid = mid + 5 * math.log(0.7 * math.sqrt(2 * math.pi))
        pred = net.layers[1](xs[1])
        if energies == "gaussian":
            low = torch.distributions.Normal(pred, 0.4).log_prob(xs[2]).sum(-1) + 4 * math.log(0.4 * c)
        else:
            low = torch.distributions.Bernoulli(logits=pred).log_prob(xs[2]).sum(-1)
        torch.testing.assert_close(net.energy(xs), -(top + mid + low), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("where", ["pre", "post"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("energies, top_prior, act", [("gaussian", True, "relu"), ("bernoulli", False, "gelu"),
                                                      ("gaussian", False, "sigmoid")])
def test_fused_dense_pass_equals_autograd(where, bias, energies, top_prior, act):
    net = _net(where, bias, ["gaussian", energies], top_prior, act)
    assert net.fused
    xs = _acts(net, binary=energies == "bernoulli")
    e, gx, gw = net.fused_energy_and_grads(xs)
    leaves = [x.clone().requires_grad_() for x in xs]
    params = list(net.parameters())
    ref = net.energy(leaves)
    grads = torch.autograd.grad(ref.sum(), leaves + params)
    torch.testing.assert_close(e, ref.detach(), atol=1e-12, rtol=1e-12)
    for a, b in zip(gx, grads[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    named = dict(zip([n for n, _ in net.named_parameters()], grads[3:], strict=True))
    for i, (gW, gb) in enumerate(gw):
        torch.testing.assert_close(gW, named[f"layers.{i}.inner.weight"], atol=1e-12, rtol=1e-10)
        if bias:
            torch.testing.assert_close(gb, named[f"layers.{i}.inner.bias"], atol=1e-12, rtol=1e-10)


def test_dense_pre_synaptic_weight_gradient_is_the_hebbian_product():
    net = _net("pre", True)
    xs = _acts(net)
    _, _, gw = net.fused_energy_and_grads(xs)
    layer = net.layers[1]
    eps = xs[2] - torch.tanh(xs[1]) @ layer.inner.weight.T - layer.inner.bias
    torch.testing.assert_close(gw[1][0], -(eps.T @ torch.tanh(xs[1])) / 0.4**2, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gw[1][1], -eps.sum(0) / 0.4**2, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("incremental", [False, True])
def test_hebbian_rule_equals_sgd_on_the_autograd_gradient_and_fused_equals_autograd_training(incremental):
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = dict(epochs=3, batch_size=4, T=6, incremental=incremental, progress=False, seed=3,
              x_optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    a, b, c = _net(), _net(), _net()
    ra = a.fit(x, w_optimizer="hebbian", w_lr=0.05, path="fused", **kw)
    rb = b.fit(x, w_optimizer=functools.partial(torch.optim.SGD, lr=0.05), path="autograd", **kw)
    rc = c.fit(x, w_optimizer="hebbian", w_lr=0.05, path="autograd", **kw)
    for other in (b, c):
        for p, q in zip(a.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(torch.tensor(ra.energy), torch.tensor(rb.energy), atol=1e-10, rtol=1e-10)
    assert ra.energy == pytest.approx(rc.energy, rel=1e-10) and ra.steps == 3 * 2 * 6
    assert not torch.equal(a.layers[0].inner.weight, _net().layers[0].inner.weight)  # it learned


def test_gpcn_is_the_dense_pre_synaptic_special_case():
    m = varmem.PredictiveCodingMemory(4, n_layers=3, h_dim=5, sigma_obs=0.5, sigma_data=0.3, T_infer=5, seed=1)
    m.write(torch.randn(2, 4))
    net = PCNet((5,), [Dense(5, 5, bias=False), Dense(5, 4, bias=False)], sigmas=[0.5, 0.3], sigma_top=0.5).double()
    with torch.no_grad():
        net.mu_top.copy_(m.weight(2)[0])
        net.layers[0].inner.weight.copy_(m.weight(1).T)  # varmem's [d_in, d_out] is torch's [out, in]ᵀ
        net.layers[1].inner.weight.copy_(m.weight(0).T)
    code = torch.randn(3, m.code_dim)
    a = m.split_code(code)
    xs = [a[2], a[1], a[0]]
    torch.testing.assert_close(net.energy(xs), m.pc_energy(code), atol=1e-10, rtol=1e-10)
    # GPCN's weight step W ← W + α/B f(a_{l+1})ᵀ ε_l / σ² is the Hebbian step on the batch mean
    _, _, gw = net.fused_energy_and_grads(xs)
    eps0 = a[0] - torch.relu(a[1]) @ m.weight(0)
    torch.testing.assert_close(-gw[1][0].T / 3, torch.relu(a[1]).T @ eps0 / 0.3**2 / 3, atol=1e-10, rtol=1e-10)


def _patterns(n=4, d=12):
    g = torch.Generator().manual_seed(5)
    return torch.where(torch.rand(n, d, generator=g, dtype=torch.float64) > 0.5, 1.0, -1.0).double()


def test_training_stores_items_that_a_joint_read_completes_and_an_untrained_net_does_not():
    x = _patterns()
    net = PCNet((8,), [Dense(8, 32, bias=True), Dense(32, 12, bias=True)], sigmas=1.0, seed=0).double()
    rec = net.fit(x, epochs=60, T=10, w_lr=0.2, progress=False)
    assert rec.energy[-1] < 0.15 * rec.energy[0]
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 6:] = False
    opt = functools.partial(torch.optim.SGD, lr=0.1)
    out = net.read(torch.where(mask, x, 0.0), mask, steps=200, x_optimizer=opt)
    err = ((out - x)[:, 6:] ** 2).mean(-1)
    assert torch.equal(out[:, :6], x[:, :6]) and bool((err < 0.15).all())
    fresh = PCNet((8,), [Dense(8, 32), Dense(32, 12)], sigmas=1.0, seed=0).double()
    err0 = ((fresh.read(torch.where(mask, x, 0.0), mask, steps=200, x_optimizer=opt) - x)[:, 6:] ** 2).mean(-1)
    assert bool((err0 > 0.5).all())


def test_convolutional_net_trains_on_minibatches_with_a_record_per_epoch():
    torch.manual_seed(0)
    net = PCNet((2, 3, 3), [ConvTranspose2d(2, 3, 3, stride=2, padding=1), Conv2d(3, 1, 3, padding=1,
                                                                                  where="post", activation="tanh")],
                sigmas=[1.0, 0.5], seed=0).double()
    assert net.shapes == [(2, 3, 3), (3, 5, 5), (1, 5, 5)] and not net.fused
    x = torch.randn(6, 25, dtype=torch.float64)
    seen = []
    rec = net.fit(x, epochs=8, batch_size=3, T=10, w_optimizer=functools.partial(torch.optim.Adam, lr=0.02),
                  x_optimizer=functools.partial(torch.optim.SGD, lr=0.1), progress=False,
                  callback=lambda e, r: seen.append((e, len(r.energy))))
    assert seen == [(e, e + 1) for e in range(8)] and len(rec.seconds) == 8
    assert rec.energy[-1] < 0.7 * rec.energy[0]
    for proc in ("clamp_predict", "joint", "relax_all"):
        out = net.read(x[:2], torch.rand(2, 25) > 0.5, procedure=proc, steps=5)
        assert out.shape == (2, 25) and torch.isfinite(out).all()


@pytest.mark.parametrize("build, error, words", [
    (lambda: PCNet((3,), []), TypeError, "layers"),
    (lambda: PCNet((0,), [Dense(3, 2)]), ValueError, "top_shape"),
    (lambda: PCNet((3,), [Dense(4, 2)]), ValueError, "layer 0"),
    (lambda: PCNet((3,), [Dense(3, 2)], energies="poisson"), ValueError, "energies"),
    (lambda: PCNet((3,), [Dense(3, 2)], sigmas=[1.0, 2.0]), ValueError, "one entry per layer"),
    (lambda: Dense(3, 2, where="middle"), ValueError, "where"),
    (lambda: Dense(3, 2, activation="swish"), ValueError, "activation"),
    (lambda: PCNet((3,), [Dense(3, 2)]).fit(torch.randn(2, 2), w_optimizer="adam", progress=False), ValueError,
     "w_optimizer"),
    (lambda: PCNet((3,), [Dense(3, 2)]).fit(torch.randn(2, 2), epochs=0, progress=False), ValueError, "epochs"),
    (lambda: PCNet((3,), [Dense(3, 2)]).read(torch.randn(2, 2), procedure="all"), ValueError, "procedure"),
    (lambda: PCNet((3,), [Dense(3, 2)]).fit(torch.randn(2, 3), progress=False), ValueError, "data must be"),
    (lambda: PCNet((3,), [Dense(3, 2)]).fit([[0.0, 1.0]], progress=False), TypeError, "data must be"),
    (lambda: PCNet((3,), [Dense(3, 2)]).fit(torch.tensor([[0.0, float("nan")]]), progress=False), ValueError,
     "NaN"),
    (lambda: PCNet((3,), [Dense(3, 2)]).read(torch.randn(2, 2), torch.ones(2, 2)), ValueError, "mask must be"),
])
def test_bad_arguments_name_the_problem(build, error, words):
    with pytest.raises(error, match=words):
        build()
