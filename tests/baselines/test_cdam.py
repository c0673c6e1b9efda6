"""CorrelatedDenseMemory (CDAM): the update as a preconditioned gradient of its energy (autograd),
monotone energy where the theory promises it, a limit cycle (no energy) on a directed graph, the
reference's toy modes, graphs, bad input and save/load."""

from __future__ import annotations

import networkx
import pyro
import pytest
import torch

import varmem
from varmem.baselines.cdam import CorrelatedDenseMemory, karate_club_graph, ring_graph


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _orthogonal_memory(a: float, h: float, eta: float = 1.0, beta: float = 0.3) -> CorrelatedDenseMemory:
    """8 exactly orthogonal ±1 patterns of dimension 16 (Hadamard rows 1..8) on an undirected ring."""
    X = _hadamard(16)[1:9]
    mem = CorrelatedDenseMemory(16, a=a, h=h, beta=beta, eta=eta, normalization="symmetric")
    return mem.write(X).set_graph(ring_graph(8))


def _random_pm1(p: int, n: int, seed: int) -> torch.Tensor:
    return torch.where(torch.rand(p, n, generator=torch.Generator().manual_seed(seed)) > 0.5, 1.0, -1.0)


@pytest.mark.parametrize("a,h", [(1.0, 0.4), (1.0, 0.0), (0.6, -0.3)])
def test_drive_is_minus_preconditioned_energy_gradient(a, h):
    mem = _orthogonal_memory(a, h)
    assert mem.is_conservative()
    z = (torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    (grad,) = torch.autograd.grad(mem.energy(z).sum(), z)
    torch.testing.assert_close(mem.drive(z.detach()), -grad @ mem.preconditioner().T, atol=1e-10, rtol=1e-9)


def test_drive_is_not_a_gradient_on_a_directed_graph():
    """Negative control for the test above: the same identity fails for a directed ring."""
    mem = _orthogonal_memory(1.0, 0.4)
    mem.set_graph(ring_graph(8, directed=True))
    assert not mem.is_conservative() and not mem.is_lyapunov()
    z = (torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    (grad,) = torch.autograd.grad(mem.energy(z).sum(), z)
    gap = (mem.drive(z.detach()) + grad @ mem.preconditioner().T).abs().max()
    assert gap > 1e-2


@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_energy_never_increases_when_lyapunov(eta):
    mem = _orthogonal_memory(1.0, 0.4, eta=eta)
    assert mem.is_lyapunov()
    cue = torch.randn(20, 16, generator=torch.Generator().manual_seed(1)) * 3
    out = mem.retrieve(cue, max_steps=25, tol=0.0)
    assert out.trace.shape[1] == 20
    assert (out.trace.diff(dim=0) <= 1e-10).all()


def test_directed_ring_is_a_limit_cycle_and_no_energy_decreases():
    """Sequence recall (a = 0, h = 1, directed ring): the state visits x_1, x_2, ... and returns to the
    cue after p steps, so no function of the state can decrease along it; ours increases."""
    p, n = 10, 400
    X = _random_pm1(p, n, 2)
    mem = CorrelatedDenseMemory(n, a=0.0, h=1.0, beta=0.05, eta=1.0).write(X).set_graph(ring_graph(p, directed=True))
    assert not mem.is_conservative()
    z, visited, energies = X[:1].clone(), [], []
    for _ in range(p):
        energies.append(float(mem.energy(z)))
        z = mem.fixed_point_step(z, z, None).state
        visited.append(int(mem.overlaps(z).argmax()))
    assert visited == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    torch.testing.assert_close(z, X[:1], atol=1e-6, rtol=0)  # back at the cue: a period-p cycle
    assert max(b - a for a, b in zip(energies, energies[1:] + energies[:1], strict=True)) > 1e-3


def test_anti_hebbian_symmetric_graph_is_not_lyapunov():
    mem = _orthogonal_memory(-0.5, 1.0)
    assert mem.is_conservative() and not mem.is_lyapunov()  # S indefinite


def test_reference_toy_modes_on_a_ring():
    """Reference §4.1 (ours): n = 200, p = 20, ±1 patterns, β = 0.1, η = 1, 30 steps:
    (a, h) = (1, 0) stays on the cue (overlap 1.0), (0, 1) moves to the ring neighbours, (0, 0) decays."""
    X = _random_pm1(20, 200, 3)
    def final(a: float, h: float, steps: int = 30) -> torch.Tensor:
        mem = CorrelatedDenseMemory(200, a=a, h=h, beta=0.1).write(X).set_graph(ring_graph(20))
        return mem.overlaps(mem.retrieve(X[0], max_steps=steps, tol=0.0, trace=False).pattern)[0]
    auto = final(1.0, 0.0)
    assert auto[0] == pytest.approx(1.0, abs=1e-6) and auto[1:].abs().max() < 0.3
    one_step = final(0.0, 1.0, steps=1)  # exactly the mean of the two neighbours, up to crosstalk
    assert one_step[1] == pytest.approx(0.5, abs=0.15) and one_step[19] == pytest.approx(0.5, abs=0.15)
    assert one_step[0].abs() < 0.2
    assert final(0.0, 0.0).abs().max() == 0


def test_graphs_match_networkx_and_normalisations():
    adjacency, clubs = karate_club_graph()
    G = networkx.karate_club_graph()
    expected = torch.as_tensor(networkx.to_numpy_array(G, weight=None))
    assert torch.equal(adjacency, expected.to(adjacency.dtype)) and int(adjacency.sum()) == 156
    assert clubs.tolist() == [int(G.nodes[i]["club"] != "Mr. Hi") for i in range(34)]
    ring = ring_graph(5, directed=True)
    assert ring.sum(-1).tolist() == [1.0] * 5 and ring[4, 0] == 1
    X = _random_pm1(34, 50, 4)
    for norm in ("row", "symmetric", "none"):
        mem = CorrelatedDenseMemory(50, a=0.5, h=1.0, normalization=norm).write(X).set_graph(adjacency)
        M = mem.transition()
        deg = adjacency.sum(-1)
        ref = {"row": adjacency / deg[:, None], "symmetric": adjacency / (deg[:, None] * deg[None]).sqrt(),
               "none": adjacency}[norm]  # fmt: skip
        torch.testing.assert_close(M, ref)
        torch.testing.assert_close(mem.targets(), (0.5 * torch.eye(34) + M) @ X)


def test_model_is_the_boltzmann_density_when_lyapunov():
    mem = _orthogonal_memory(1.0, 0.4)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    with pyro.poutine.trace() as tr, pyro.poutine.condition(data={"z": z}):
        mem.model(num_cues=3)
    tr.trace.compute_log_prob()
    torch.testing.assert_close(tr.trace.nodes["energy"]["log_prob"], -0.3 * mem.energy(z))
    mem.set_graph(ring_graph(8, directed=True))
    with pytest.raises(ValueError, match="Lyapunov"):
        mem.model()


def test_save_load_round_trip(tmp_path):
    adjacency, _ = karate_club_graph()
    mem = CorrelatedDenseMemory(40, a=-0.4, h=1.0, beta=0.2, eta=0.5, normalization="symmetric")
    mem.write(_random_pm1(34, 40, 6)).set_graph(adjacency)
    loaded = varmem.load(varmem.save(mem, tmp_path / "cdam.safetensors"))
    assert isinstance(loaded, CorrelatedDenseMemory) and loaded.config() == mem.config()
    assert torch.equal(loaded.adjacency, mem.adjacency)
    cue = _random_pm1(3, 40, 7)
    torch.testing.assert_close(loaded.retrieve(cue, max_steps=5).pattern, mem.retrieve(cue, max_steps=5).pattern)


def test_bad_input_leaves_state_unchanged():
    with pytest.raises(ValueError, match="eta"):
        CorrelatedDenseMemory(4, eta=1.5)
    with pytest.raises(ValueError, match="normalization"):
        CorrelatedDenseMemory(4, normalization="laplacian")
    with pytest.raises(ValueError, match="finite"):
        CorrelatedDenseMemory(4, a=float("nan"))
    mem = CorrelatedDenseMemory(4)
    with pytest.raises(ValueError, match="empty"):
        mem.retrieve(torch.ones(4))
    mem.write(torch.eye(4)[:3])
    before = {k: v.clone() for k, v in mem.state_dict().items()}
    with pytest.raises(ValueError, match="NaN"):
        mem.write(torch.tensor([1.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        mem.set_graph(torch.ones(4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        mem.set_graph(-torch.ones(3, 3))
    with pytest.raises(IndexError, match="endpoints"):
        mem.add_edges([(0, 3)])
    for k, v in mem.state_dict().items():
        assert torch.equal(v, before[k]), k
    mem.add_edges([(0, 1)], directed=True)
    assert mem.adjacency[0, 1] == 1 and mem.adjacency[1, 0] == 0
    with pytest.raises(ValueError, match="unknown retrieval method"):
        mem.retrieve(torch.ones(4), method="exact")
    singular = CorrelatedDenseMemory(4, a=0.0, h=0.0).write(torch.eye(4)[:2])
    assert torch.isnan(singular.energy(torch.ones(2, 4))).all() and not singular.is_conservative()
