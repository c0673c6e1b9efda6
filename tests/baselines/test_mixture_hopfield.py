"""MixtureHopfieldMemory (BayesPCN's modern-Hopfield baseline) against independent computations.

References used below:
* the energy written out densely with ``torch.logsumexp`` over explicit ``[B, N, D]`` differences
  and explicitly normalised weights ``softmax(β‖ξ‖²)`` (no varmem code);
* ``torch.autograd.grad`` of that energy for the mean-shift update (``z - σ² ∇E``);
* minus the log-density of the Pyro trace for the energy;
* ``varmem.KernelDensityMemory`` for the Euclidean case (same prior; the same fixed-point read in
  the limits noise_scale → 0 on clamped entries and → ∞ for a full cue);
* recall on real MNIST digits at the sweep's σ = 0.01 with the official read (500 Adam steps of
  0.01), with a never-written digit and an over-weighted norm bonus as negative controls.
"""

import math

import pyro.poutine as poutine
import pytest
import torch

import varmem
from varmem.baselines import MixtureHopfieldMemory

SIGMA = 0.4


def _items(n=6, d=3, seed=1):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(n, d, generator=g).to(torch.get_default_dtype())


def _dense_energy(z, items, sigma, beta):
    """``-log Σ_i π_i N(z; ξ_i, σ²I)`` with explicit differences and explicit weights."""
    log_pi = torch.log_softmax(beta * (items**2).sum(-1), 0)
    sq = ((z.unsqueeze(-2) - items) ** 2).sum(-1)
    d = items.shape[1]
    log_comp = -sq / (2 * sigma**2) - 0.5 * d * math.log(2 * math.pi * sigma**2)
    return -torch.logsumexp(log_comp + log_pi, -1)


@pytest.mark.parametrize("metric,beta", [("dot", None), ("dot", 0.7), ("euclidean", None)])
def test_energy_matches_dense_computation_and_clamps_known_entries(metric, beta):
    items = _items()
    memory = MixtureHopfieldMemory(3, SIGMA, metric=metric, beta=beta).write(items)
    b = memory.beta
    assert b == {"dot": 1 / SIGMA if beta is None else beta, "euclidean": 0.0}[metric]
    z = torch.randn(5, 3)
    torch.testing.assert_close(memory.energy(z), _dense_energy(z, items, SIGMA, b), rtol=1e-12, atol=1e-12)
    cue = torch.randn(5, 3)
    mask = torch.tensor([True, False, True])
    clamped = torch.where(mask, cue, z)
    torch.testing.assert_close(memory.energy(z, cue, mask), _dense_energy(clamped, items, SIGMA, b), rtol=1e-12, atol=0)
    # a full cue (no mask) only starts the read: it does not enter the energy
    torch.testing.assert_close(memory.energy(z, cue, None), memory.energy(z))


@pytest.mark.parametrize("mask", [None, [False, True, True]])
def test_energy_is_minus_the_pyro_trace_log_density(mask):
    memory = MixtureHopfieldMemory(3, SIGMA, beta=0.3).write(_items())
    cue, mask = memory.prepare_cue(torch.randn(4, 3), None if mask is None else torch.tensor(mask))
    z = torch.randn(4, 3)
    tr = poutine.trace(poutine.condition(memory.model, data={"z": z})).get_trace(cue, mask)
    torch.testing.assert_close(tr.log_prob_sum(), -memory.energy(z, cue, mask).sum(), rtol=1e-12, atol=0)
    # without a cue the model samples z from the prior and the trace scores it with -E(z)
    tr = poutine.trace(memory.model).get_trace(None, None, 7)
    z = tr.nodes["z"]["value"]
    assert z.shape == (7, 3)
    torch.testing.assert_close(tr.log_prob_sum(), -memory.energy(z).sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_mean_shift_step_is_a_gradient_step_of_size_sigma2(metric):
    memory = MixtureHopfieldMemory(3, SIGMA, metric=metric).write(_items())
    z = torch.randn(5, 3, requires_grad=True)
    cue = torch.randn(5, 3)
    mask = torch.tensor([[True, False, False]] * 3 + [[False, True, True]] * 2)
    (grad,) = torch.autograd.grad(_dense_energy(torch.where(mask, cue, z), memory.items, SIGMA, memory.beta).sum(), z)
    assert torch.all(grad[mask] == 0)  # clamped entries feel no force
    step = memory.fixed_point_step(z.detach(), cue, mask)
    z_new, energy = step.state, step.energy
    expected = torch.where(mask, cue, z.detach() - SIGMA**2 * grad)
    torch.testing.assert_close(z_new, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(energy, memory.energy(z.detach(), cue, mask), rtol=1e-12, atol=0)
    # and without a mask: z ← Σ_i w_i ξ_i from wherever z is
    (grad,) = torch.autograd.grad(_dense_energy(z, memory.items, SIGMA, memory.beta).sum(), z)
    z_new = memory.fixed_point_step(z.detach(), cue, None).state
    torch.testing.assert_close(z_new, z.detach() - SIGMA**2 * grad, rtol=1e-10, atol=1e-12)
    # the EM step never increases the energy along a read
    trace = memory.retrieve(cue, mask, max_steps=20, tol=0).trace
    assert torch.all(trace[1:] <= trace[:-1] + 1e-10)


def test_euclidean_metric_is_the_kernel_density_memory_read_in_its_noise_limits():
    items = _items(n=8, d=4, seed=3)
    hop = MixtureHopfieldMemory(4, SIGMA, metric="euclidean").write(items)
    clamp = varmem.KernelDensityMemory(4, bandwidth=SIGMA, noise_scale=1e-9).write(items)
    free = varmem.KernelDensityMemory(4, bandwidth=SIGMA, noise_scale=1e9).write(items)
    z = torch.randn(6, 4)
    # same prior energy
    torch.testing.assert_close(hop.energy(z), clamp.energy(z), rtol=1e-12, atol=1e-12)
    # partial cue: KDE with noise -> 0 on observed entries = clamped mean shift
    cue = items[:6] + 0.3 * torch.randn(6, 4)
    mask = torch.rand(6, 4) < 0.5
    mask[:, 0] = True
    kwargs = dict(method="fixed_point", max_steps=30, tol=0, init=torch.where(mask, cue, z))
    a = hop.retrieve(cue, mask, **kwargs).pattern
    b = clamp.retrieve(cue, mask, **kwargs).pattern
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # full cue: KDE with noise -> infinity = pure mean shift started at the cue
    a = hop.retrieve(cue, method="fixed_point", max_steps=30, tol=0).pattern
    b = free.retrieve(cue, method="fixed_point", max_steps=30, tol=0).pattern
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # negative control: a moderate KDE noise scale is a different (Bayesian) read
    other = varmem.KernelDensityMemory(4, bandwidth=SIGMA, noise_scale=0.5).write(items)
    c = other.retrieve(cue, method="fixed_point", max_steps=30, tol=0).pattern
    assert (a - c).abs().max() > 1e-2


@pytest.fixture(scope="module")
def digits():
    data = varmem.datasets.load_mnist(dtype=torch.float64, device="cpu")
    return data.flat()[:41].to(torch.get_default_dtype()) * 2 - 1  # model space [-1, 1]


def test_recall_of_mnist_from_white_drop_and_mask_cues_with_the_official_read(digits):
    stored, novel = digits[:40], digits[40:41]
    memory = MixtureHopfieldMemory(784).write(stored)  # σ = 0.01, metric "dot", β = 100: the sweep
    g = torch.Generator(device="cpu").manual_seed(0)
    targets = stored[:8]
    to01 = (targets + 1) / 2
    for name in ("white", "drop", "mask"):
        cue, mask = varmem.corruptions.corrupt(to01.cpu(), name, generator=g, image_shape=(1, 28, 28))
        cue, mask = cue.to(targets) * 2 - 1, mask.to(targets.device)
        mask = None if name == "white" else mask
        scored = "all" if mask is None else "unknown"
        reads = [memory.retrieve(cue, mask, init=cue)]
        if name == "drop":  # the official read (costly: 500 Pyro steps) once, on a clamped cue
            reads.append(memory.retrieve(cue, mask, method="map", optimizer="adam", lr=0.01, max_steps=500, tol=0))
        for r in reads:
            assert varmem.metrics.recall_accuracy(r.pattern, targets, 0.01, mask=mask, scored=scored) == 1.0, name
            if mask is not None:  # known entries never move
                assert torch.equal(r.pattern[mask], cue[mask])
        assert torch.equal(reads[0].index, torch.arange(8))
    # negative control 1: a never-written digit is not "recalled": the read falls into a stored basin
    r = memory.retrieve(novel)
    assert varmem.metrics.mse(r.pattern, novel).item() > 0.01
    assert varmem.metrics.mse(r.pattern, stored[r.index]).item() < 1e-12
    # negative control 2: a norm bonus comparable to 1/(2σ²) makes the largest-norm digit win everywhere
    greedy = MixtureHopfieldMemory(784, beta=1e6).write(stored)
    cue, _ = varmem.corruptions.corrupt(to01.cpu(), "white", generator=g)
    r = greedy.retrieve(cue.to(targets) * 2 - 1)
    assert varmem.metrics.recall_accuracy(r.pattern, targets, 0.01) <= 0.25
    assert (r.index == (stored**2).sum(-1).argmax()).float().mean() >= 0.75


def test_weighted_density_mean_and_samples_follow_the_weights():
    items = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    memory = MixtureHopfieldMemory(2, 0.1, beta=0.2).write(items)
    pi = torch.softmax(0.2 * (items**2).sum(-1), 0)  # [1, e^1.8] / Z
    prior = memory.prior()
    torch.testing.assert_close(prior.mean, pi @ items)
    torch.manual_seed(0)
    samples = prior.sample(torch.Size([4000]))
    frac = (samples[:, 0] > 1.5).double().mean()
    se = math.sqrt(pi[1] * (1 - pi[1]) / 4000)
    assert abs(frac - pi[1]) < 4 * se
    assert abs(frac - 0.5) > 10 * se  # negative control: equal weights are clearly rejected


def test_bad_input_raises_and_leaves_the_state_unchanged():
    with pytest.raises(ValueError, match="sigma"):
        MixtureHopfieldMemory(3, 0.0)
    with pytest.raises(ValueError, match="metric"):
        MixtureHopfieldMemory(3, metric="cosine")
    with pytest.raises(ValueError, match="beta"):
        MixtureHopfieldMemory(3, metric="euclidean", beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        MixtureHopfieldMemory(3, beta=-1.0)
    memory = MixtureHopfieldMemory(3, SIGMA)
    with pytest.raises(ValueError, match="empty"):
        memory.retrieve(torch.zeros(3))
    memory.write(_items())
    before = memory.items.clone()
    for bad, err in [
        (torch.full((2, 3), float("nan")), ValueError),
        (torch.zeros(2, 4), ValueError),
        (torch.zeros(2, 3, dtype=torch.long), TypeError),
    ]:
        with pytest.raises(err):
            memory.write(bad)
        assert torch.equal(memory.items, before)
    with pytest.raises(ValueError, match="nothing observed"):
        memory.retrieve(torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown retrieval method"):
        memory.retrieve(torch.zeros(3), method="exact")
    with pytest.raises(ValueError, match="unknown option"):
        memory.retrieve(torch.zeros(3), steps=3)
    with pytest.raises(ValueError, match="init"):
        memory.retrieve(torch.zeros(3), init="nearest")


@pytest.mark.parametrize("kwargs", [{"beta": 2.5}, {"metric": "euclidean", "chunk_size": 2}])
def test_save_load_round_trip(tmp_path, kwargs):
    memory = MixtureHopfieldMemory(3, SIGMA, **kwargs).write(_items())
    path = varmem.save(memory, tmp_path / "hopfield.safetensors")
    again = varmem.load(path)
    assert type(again) is MixtureHopfieldMemory and again.config() == memory.config()
    assert torch.equal(again.items, memory.items)
    cue = torch.randn(4, 3)
    torch.testing.assert_close(again.retrieve(cue).pattern, memory.retrieve(cue).pattern, rtol=0, atol=0)
