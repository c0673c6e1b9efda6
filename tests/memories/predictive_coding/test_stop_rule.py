"""BayesPCN's windowed early stop (``infer_window``) against a written-out reading of the rule.

Reference: the rule's definition (``StopRule``), applied by hand to the energy trace of a
relaxation that was never stopped: block sums ``S_j`` of ``W`` consecutive energies; a cue settles
at the end of the first block ``j ≥ 2`` with ``S_{j−1} − S_j ≤ rtol·W·|S_j|``; the relaxation stops
when its last cue has settled.  Relaxations are deterministic, so the stopped run must take exactly
that many steps and follow the full run's trajectory up to there.
"""

import pytest
import torch

import varmem
from varmem.memories.predictive_coding.stop_rule import StopRule

SMALL = dict(n_layers=3, h_dim=5, sigma_obs=0.1)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _block_stop_step(energies: torch.Tensor, rtol: float, window: int) -> int:
    """Written-out stop step of the windowed rule; ``energies [T, B]``: the energy fed after steps 1…T."""
    T = energies.shape[0]
    stops = []
    for col in energies.reshape(T, -1).T.tolist():
        sums = [sum(col[j * window:(j + 1) * window]) for j in range(T // window)]
        first = next((j + 1 for j in range(1, len(sums)) if sums[j - 1] - sums[j] <= rtol * window * abs(sums[j])),
                     None)
        stops.append(T if first is None else first * window)
    return max(stops)


@pytest.mark.parametrize("partial", [False, True])
def test_a_read_stops_where_the_last_cue_s_block_mean_stopped_falling(partial):
    W, rtol, T = 10, 3e-3, 400
    m = varmem.BayesPCN(6, **SMALL, T_infer=30, infer_window=W).write(_randn(3, 6))
    cue = _randn(3, 6, seed=1)
    mask = torch.tensor([True, True, True, True, False, False]) if partial else None
    full = m.retrieve(cue, mask, method="pc", procedure="joint", seed=4, max_steps=T, tol=0, rtol=0)
    assert full.steps == T
    expected = _block_stop_step(full.trace[:-1], rtol, W)
    early = m.retrieve(cue, mask, method="pc", procedure="joint", seed=4, max_steps=T, tol=0, rtol=rtol)
    assert 2 * W <= early.steps == expected < T and expected % W == 0
    assert early.converged.all()
    torch.testing.assert_close(early.trace[:-1], full.trace[:expected], atol=1e-9, rtol=1e-12)
    one_step = StopRule(0.0, rtol, 1)  # negative control: the one-step rule stops elsewhere on this trajectory
    assert next(t + 1 for t in range(T) if one_step.update(full.trace[t].clone())) != expected


def test_a_write_uses_the_memory_s_window():
    W, rtol, T = 20, 1e-3, 400
    x = _randn(1, 6)
    runs = {}
    for name, r in (("full", 0.0), ("early", rtol)):
        m = varmem.BayesPCN(6, **SMALL, T_infer=T, infer_tol=0.0, infer_rtol=r, infer_window=W)
        acts = [x.unsqueeze(0)] + m.init_hidden(1, 1, torch.Generator().manual_seed(0))
        _, trace, steps, _ = m.relax(acts, None, steps=T, lr=m.activation_lr, rtol=r, individual=True)
        runs[name] = (steps, trace)
    (n_full, full), (n_early, early) = runs["full"], runs["early"]
    expected = _block_stop_step(full[:-1], rtol, W)
    assert n_full == T and n_early == expected < T
    one_step = StopRule(0.0, rtol, 1)  # the window changes where it stops (negative control)
    n_one = next(t + 1 for t in range(T) if one_step.update(full[t].clone()))
    assert n_one != n_early
    torch.testing.assert_close(early[:-1], full[:n_early], atol=1e-9, rtol=1e-12)


def test_the_joint_batched_write_uses_the_same_rule():
    W, rtol, T = 10, 1e-3, 300
    x = _randn(2, 6)
    fed: dict[str, list[torch.Tensor]] = {}
    for name, r in (("full", 0.0), ("early", rtol)):
        m = varmem.BayesPCN(6, **SMALL, T_infer=T, infer_tol=0.0, infer_rtol=r, infer_window=W, write_batch=2,
                            write_objective="joint")
        orig = m.joint_energies
        fed[name] = []

        def recording(acts, layers=None, _orig=orig, _out=fed[name]):
            e = _orig(acts, layers)
            _out.append(e.detach().clone())
            return e

        m.joint_energies = recording
        m.write(x, seed=1)
    full = torch.stack(fed["full"][:-1])  # [T, K]: one energy per step (the last call scores the write)
    assert full.shape[0] == T
    expected = _block_stop_step(full, rtol, W)
    assert expected < T and len(fed["early"]) - 1 == expected


def test_the_stop_rule_step_by_step():
    """``StopRule`` on hand-made energies, blocks of 2 steps with sums S = 200, 180, 178, 179."""
    blocks = [100.0, 90.0, 89.0, 89.5]
    rule = StopRule(0.0, 1e-3, 2)  # settles when S_{j-1} − S_j ≤ 1e-3·2·|S_j|
    decisions = [rule.update(torch.tensor([v])) for v in [b for b in blocks for _ in range(2)]]
    assert decisions == [False] * 7 + [True]  # 20 > 0.36, 2 > 0.356, then −1: a rise settles it
    lenient = StopRule(0.0, 1e-2, 2)  # 2 ≤ 1e-2·2·178 = 3.56: block 3 settles
    assert [lenient.update(torch.tensor([v])) for v in [b for b in blocks for _ in range(2)]].index(True) == 5
    off = StopRule(0.0, 0.0, 2)
    assert not any(off.update(torch.tensor([v])) for v in blocks)
    with pytest.raises(ValueError, match="^infer_window"):
        varmem.BayesPCN(6, infer_window=0)


@pytest.mark.parametrize("partial", [False, True])
def test_the_pyro_read_stops_by_the_same_per_cue_rule(partial):
    """``pc_pyro`` feeds each cue's energy after every step to the memory's rule: it stops where the
    written-out block reading of its own never-stopped trace says, with ``converged`` per cue."""
    W, rtol, T = 10, 3e-3, 400
    m = varmem.BayesPCN(6, **SMALL, T_infer=30, infer_window=W).write(_randn(3, 6))
    cue = _randn(3, 6, seed=1)
    mask = torch.tensor([True, True, True, True, False, False]) if partial else None
    full = m.retrieve(cue, mask, method="pc_pyro", procedure="joint", seed=4, max_steps=T, tol=0, rtol=0)
    assert full.steps == T and full.converged is None
    expected = _block_stop_step(full.trace, rtol, W)
    early = m.retrieve(cue, mask, method="pc_pyro", procedure="joint", seed=4, max_steps=T, tol=0, rtol=rtol)
    assert 2 * W <= early.steps == expected < T
    assert early.converged.shape == (3,) and early.converged.all()
    torch.testing.assert_close(early.trace, full.trace[:expected], atol=1e-9, rtol=1e-12)
    summed = torch.stack([full.trace[t].sum() for t in range(T)])  # negative control: the old summed-loss test
    old = next((t + 1 for t in range(1, T) if abs(float(summed[t] - summed[t - 1])) <= rtol * abs(float(summed[t]))),
               T)
    assert old != expected
