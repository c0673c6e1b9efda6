"""Explicit read procedures, start values, the official stopping rule and the joint batched write.

References (independent computations written out here):
* every read procedure as a plain loop of ``torch.optim.Adam`` on ``torch.autograd.grad`` of the
  memory's energy (``memory.energy``, itself checked against the Pyro trace elsewhere) over exactly
  the entries the procedure frees, from the same random hidden start;
* the start value ``"prior_mean"`` as the top-down pass of means computed with explicit matrix
  products from the stored weights;
* the official BayesPCN stopping rule as its loop: stop once ``|F_t − F_{t−1}| ≤ 1e-3`` for every
  cue of the batch, ``F`` evaluated before each step;
* the joint batched write objective as a sum of ``torch.distributions.MultivariateNormal``
  log-densities, one per output column of every layer, covariance ``σ² I_B + Z U Zᵀ``.
"""

import math

import pytest
import torch

import varmem
from varmem.memories.predictive_coding.readers import PROCEDURES

SMALL = dict(n_layers=3, h_dim=5, sigma_obs=0.3, sigma_data=0.2, T_infer=20, weight_lr=1e-3)


def _gpcn(**kw):
    torch.manual_seed(0)
    return varmem.PredictiveCodingMemory(6, **{**SMALL, **kw}).write(torch.randn(3, 6))


def _bayes(K=1, **kw):
    torch.manual_seed(0)
    return varmem.BayesPCN(6, **{"n_layers": 3, "h_dim": 5, "sigma_obs": 0.1, "T_infer": 30, "n_particles": K,
                                 **kw}).write(torch.randn(3, 6))


def _reference_read(m, cue, mask, procedure, start, steps, lr, n_repeat, seed):
    """Each procedure written out with autograd on ``m.energy`` and ``torch.optim.Adam``."""
    B, D = cue.shape
    g = torch.Generator().manual_seed(seed)
    known = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand_as(cue)
    fill = torch.full_like(cue, float(start)) if not isinstance(start, str) else torch.zeros_like(cue)
    x = torch.where(known, cue, fill)

    def hidden():
        return torch.cat([h.squeeze(0) for h in m.init_hidden(B, 1, g)], -1)

    def run(x, free_sensory, n):
        h = hidden().requires_grad_()
        xs = x.clone().requires_grad_()
        params = [h] + ([xs] if free_sensory is not None else [])
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(n):
            opt.zero_grad()
            m.energy(torch.cat([xs, h], -1)).sum().backward()
            if free_sensory is not None:
                xs.grad *= free_sensory
            opt.step()
        return xs.detach(), h.detach()

    if procedure == "clamp_predict":
        for _ in range(n_repeat):
            _, h = run(x, None, steps)
            pred = torch.relu(h[:, : m.h_dim]) @ m.weight(0)
            x = pred if mask is None else torch.where(known, x, pred)
        return x
    free = (~known).to(cue.dtype) if procedure == "joint" else torch.ones_like(cue)
    x, _ = run(x, free, steps * n_repeat)
    return x


@pytest.mark.parametrize("procedure", PROCEDURES)
@pytest.mark.parametrize("partial", [False, True])
def test_every_procedure_is_its_written_out_autograd_loop(procedure, partial):
    m = _gpcn()
    cue = torch.randn(2, 6)
    mask = torch.tensor([True, True, True, True, False, False]) if partial else None
    start = -0.5
    r = m.retrieve(cue, mask, method="pc", procedure=procedure, start=start, max_steps=15, lr=0.05, n_repeat=2,
                   tol=0, rtol=0, seed=3)
    ref = _reference_read(m, cue, mask, procedure, start, 15, 0.05, 2, 3)
    torch.testing.assert_close(r.pattern, ref, atol=1e-6, rtol=1e-6)
    assert r.info["procedure"] == procedure and r.info["start"] == start
    if mask is not None and procedure != "relax_all":
        assert torch.equal(r.pattern[:, :4], cue[:, :4])  # observed entries stay clamped
    if procedure == "joint" and mask is None:
        assert torch.equal(r.pattern, cue)  # nothing sensory is unknown
    if procedure == "relax_all":
        assert not torch.equal(r.pattern[:, :4], cue[:, :4])  # the cue is only a start


def test_the_default_procedure_is_clamp_predict_for_full_and_joint_for_partial_cues():
    m = _bayes(2)
    cue = torch.randn(2, 6)
    mask = torch.tensor([True, True, True, False, False, False])
    for msk, proc in ((None, "clamp_predict"), (mask, "joint")):
        a = m.retrieve(cue, msk, seed=1, max_steps=10)
        b = m.retrieve(cue, msk, seed=1, max_steps=10, procedure=proc)
        assert a.info["procedure"] == proc and torch.equal(a.code, b.code)


@pytest.mark.parametrize("procedure", PROCEDURES)
def test_pyro_read_equals_the_hand_written_read_for_every_procedure(procedure):
    m = _bayes(2)
    cue = torch.randn(2, 6)
    mask = torch.tensor([True, True, True, True, False, False])
    a = m.retrieve(cue, mask, method="pc", procedure=procedure, start=0.3, seed=3, max_steps=12, tol=0, rtol=0)
    b = m.retrieve(cue, mask, method="pc_pyro", procedure=procedure, start=0.3, seed=3, max_steps=12, tol=0, rtol=0)
    torch.testing.assert_close(a.pattern, b.pattern, atol=1e-6, rtol=1e-6)


def _top_down_means(m):
    """``b → f(b) R_{L-2} → … → f(·) R_0``, per particle, weighted by the particle weights."""
    out = 0
    for k in range(m.n_particles):
        a = m.weight_mean(m.n_layers - 1)[k, 0]
        for i in range(m.n_layers - 2, -1, -1):
            a = torch.relu(a) @ m.weight_mean(i)[k]
        out = out + m.particle_weights[k] * a
    return out


@pytest.mark.parametrize("start", ["zero", "prior_mean", -1.0, 2])
def test_unknown_entries_start_at_the_chosen_value(start):
    m = _bayes(3)
    cue = torch.randn(2, 6)
    mask = torch.tensor([True, True, True, False, False, False])
    r = m.retrieve(cue, mask, procedure="joint", start=start, lr=0.0, max_steps=3, tol=0, rtol=0, seed=0)
    expected = {"zero": torch.zeros(6), "prior_mean": _top_down_means(m)}.get(start)
    expected = torch.full((6,), float(start)) if expected is None else expected
    torch.testing.assert_close(r.pattern[:, 3:], expected[3:].expand(2, 3), atol=1e-12, rtol=0)
    assert torch.equal(r.pattern[:, :3], cue[:, :3])
    torch.testing.assert_close(m.prior_prediction(torch.float64), _top_down_means(m), atol=1e-12, rtol=0)


def test_unknown_entries_start_at_the_cue_s_own_content_when_asked():
    """``start=tensor``: the protocol zeroes what a cue holds at its unknown entries, so a read
    starts from that content only through the option (``start=raw_cue``), per cue or shared;
    with ``lr = 0`` the pattern is the start itself (every reader: pc, pc_pyro, pcnet, PCNet.read)."""
    import functools

    m = _bayes(2)
    raw = torch.randn(2, 6)  # e.g. a corruption's own fill values at the hidden entries
    mask = torch.tensor([True, True, True, False, False, False])
    for method in ("pc", "pc_pyro"):
        r = m.retrieve(raw, mask, method=method, procedure="joint", start=raw, lr=0.0, max_steps=3, tol=0, rtol=0,
                       seed=0)
        torch.testing.assert_close(r.pattern, raw, atol=1e-12, rtol=0)
    zero = m.retrieve(raw, mask, procedure="joint", lr=0.0, max_steps=3, tol=0, rtol=0, seed=0)
    assert torch.equal(zero.pattern[:, 3:], torch.zeros(2, 3))  # negative control: the default never reads it
    shared = m.retrieve(raw, mask, procedure="joint", start=torch.full((6,), -1.0, dtype=torch.float64), lr=0.0,
                        max_steps=3, tol=0, rtol=0, seed=0)
    minus = m.retrieve(raw, mask, procedure="joint", start=-1.0, lr=0.0, max_steps=3, tol=0, rtol=0, seed=0)
    assert torch.equal(shared.pattern, minus.pattern)
    net = varmem.PCNetMemory.dense(6, hidden=(5,), seed=0).write(torch.rand(3, 6) * 2 - 1)
    r = net.retrieve(raw, mask, procedure="joint", start=raw, lr=0.0, max_steps=3, seed=0)
    torch.testing.assert_close(r.pattern, raw.to(r.pattern.dtype), atol=1e-6, rtol=0)
    sgd0 = functools.partial(torch.optim.SGD, lr=0.0)
    x = raw.to(next(net.net.parameters()).dtype)
    out = net.net.read(x, mask.expand(2, 6), procedure="joint", start=x, steps=2, x_optimizer=sgd0)
    torch.testing.assert_close(out, x, atol=0, rtol=0)


@pytest.mark.parametrize("value, error, words", [
    ("cue", ValueError, "option start"), ("Zero", ValueError, "option start"), (True, TypeError, "option start"),
    (float("nan"), ValueError, "option start"), (math.inf, ValueError, "option start"),
    ([0.0], TypeError, "option start"), ("relax", ValueError, "option procedure"),
    (torch.tensor([1, 2]), TypeError, "option start"), (torch.full((6,), math.nan), ValueError, "option start"),
    (torch.zeros(5), ValueError, r"option start .*\[6\]"), (torch.zeros(3, 6), ValueError, "option start"),
    (torch.zeros(1, 2, 6), TypeError, "option start"),
])
def test_bad_start_or_procedure_is_refused_by_name(value, error, words):
    m = _bayes()
    key = "procedure" if words.endswith("procedure") else "start"
    with pytest.raises(error, match=words):
        m.retrieve(torch.randn(1, 6), **{key: value})


# --- the official stopping rule -----------------------------------------------------------------
def test_absolute_tolerance_is_the_official_stopping_rule():
    """Official loop: F evaluated before each Adam step; stop after the step at which every cue's
    |F_t − F_{t−1}| ≤ tol.  Same start → same number of steps and the same activities."""
    m = _bayes(1, sigma_obs=0.3)
    cue = torch.randn(2, 6)
    tol = 1e-3
    r = m.retrieve(cue, procedure="joint", tol=tol, rtol=0, max_steps=400, lr=0.05, seed=7)
    h = torch.cat([a.squeeze(0) for a in m.init_hidden(2, 1, torch.Generator().manual_seed(7))], -1)
    h.requires_grad_()
    opt = torch.optim.Adam([h], lr=0.05)
    prev, steps = None, 0
    for _ in range(400):
        e = m.energy(torch.cat([cue, h], -1))
        opt.zero_grad()
        e.sum().backward()
        opt.step()
        steps += 1
        if prev is not None and bool(((e.detach() - prev).abs() <= tol).all()):
            break
        prev = e.detach()
    assert 2 < steps < 400
    assert r.steps == steps and bool(r.converged.all())
    torch.testing.assert_close(r.code[:, 6:], h.detach(), atol=1e-6, rtol=1e-6)


# --- the joint batched write ----------------------------------------------------------------------
def _written_out_joint(m, acts):
    """``−Σ_l Σ_j log N(X_l[:, j]; Z_l R_l[:, j], σ_l² I + Z_l U_l Z_lᵀ)`` per particle."""
    out = []
    for k in range(m.n_particles):
        total = 0
        for i in range(m.n_layers):
            X = acts[i]
            Z = torch.relu(acts[i + 1]) if i < m.n_layers - 1 else torch.ones(X.shape[0], 1, dtype=X.dtype)
            R, U = m.weight_mean(i)[k], m.weight_cov(i)[k]
            cov = m.layer_sigma2(i) * torch.eye(X.shape[0], dtype=X.dtype) + Z @ U @ Z.T
            mvn = torch.distributions.MultivariateNormal((Z @ R).T, covariance_matrix=cov)
            total = total - mvn.log_prob(X.T).sum()
        out.append(total)
    return torch.stack(out)


def test_joint_objective_is_the_written_out_matrix_normal_marginal():
    m = _bayes(2)
    B = 4
    acts = [torch.randn(B, 6)] + [torch.randn(B, 5) for _ in range(m.n_layers - 1)]
    e = m.joint_energies([a.unsqueeze(0) for a in acts])
    torch.testing.assert_close(e, _written_out_joint(m, acts), atol=1e-9, rtol=1e-10)
    # one item: the independent (per-item) energy; the batch couples items, so B items differ from the sum
    one = [a[:1].unsqueeze(0) for a in acts]
    torch.testing.assert_close(m.joint_energies(one), m.particle_energies(one)[0][:, 0], atol=1e-9, rtol=1e-10)
    indep = m.particle_energies([a.unsqueeze(0) for a in acts])[0].sum(-1)
    assert (e - indep).abs().min() > 1e-3


def test_joint_write_is_adam_on_the_official_objective_and_keeps_the_conjugate_posterior():
    torch.manual_seed(1)
    x = torch.randn(3, 6, dtype=torch.float64)
    kw = dict(n_layers=3, h_dim=5, sigma_obs=0.3, T_infer=25, activation_lr=0.05, infer_tol=0.0, infer_rtol=0.0,
              write_batch=3, seed=2)
    joint = varmem.BayesPCN(6, write_objective="joint", **kw).write(x)
    indep = varmem.BayesPCN(6, write_objective="independent", **kw).write(x)
    # reference: Adam on the written-out objective under the prior, from the write's random start
    prior = varmem.BayesPCN(6, **kw)
    hid = [h.squeeze(0).clone().requires_grad_() for h in prior.init_hidden(3, 1, torch.Generator().manual_seed(2))]
    opt = torch.optim.Adam(hid, lr=0.05)
    for _ in range(25):
        opt.zero_grad()
        _written_out_joint(prior, [x] + hid).sum().backward()
        opt.step()
    h = joint.history_hidden[:, 0]  # [B, L-1, h]
    torch.testing.assert_close(h, torch.stack([a.detach() for a in hid], 1), atol=1e-9, rtol=1e-9)
    assert float((indep.history_hidden[:, 0] - h).abs().max()) > 1e-3  # the items are coupled
    # the log-weight increment is the chunk's joint log-density (split evenly over its items)
    torch.testing.assert_close(joint.history_log_w.sum(0), -_written_out_joint(prior, [x] + hid).detach(),
                               atol=1e-9, rtol=1e-10)
    # the weight posterior is still the exact conjugate update at those activities
    Z = torch.relu(h[:, 0])
    U0inv = torch.eye(5) / prior.sigma_prior**2
    U = torch.linalg.inv(U0inv + Z.T @ Z / 0.09)
    R = U @ (U0inv @ prior.initial_mean(0)[0] + Z.T @ x / 0.09)
    torch.testing.assert_close(joint.weight_cov(0)[0], U, atol=1e-10, rtol=0)
    torch.testing.assert_close(joint.weight_mean(0)[0], R, atol=1e-9, rtol=0)
    # one item per write: both objectives are the same write
    a = varmem.BayesPCN(6, **{**kw, "write_batch": 1}, write_objective="joint").write(x)
    b = varmem.BayesPCN(6, **{**kw, "write_batch": 1}).write(x)
    torch.testing.assert_close(a.weight_mean(0), b.weight_mean(0), atol=0, rtol=0)
