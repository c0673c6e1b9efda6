"""BayesPCN against independent computations.

References:
* the batch Bayesian-linear-regression posterior ``U = (U0⁻¹ + ZᵀZ/σ²)⁻¹``,
  ``R = U (U0⁻¹ R0 + ZᵀX/σ²)`` computed here with explicit inverses from the recorded activities
  (reference §1.2: sequential rank-1 updates equal it to 4e-13);
* the forget semigroup ``β1 ⊕ β2 = β1 + β2 − β1β2`` and its fixed point, the initial prior (§1.4);
* minus the log-density of the Pyro trace (``poutine.trace``) for the energy; ``torch.autograd.grad``
  of the energy for the hand-written activity update;
* recall on sklearn digits in [−1, 1] with the protocol's corruptions and its threshold 0.01
  (§1.6), with a never-written network as the negative control.
"""

import copy

import pyro.poutine as poutine
import pytest
import torch

import varmem
from varmem import corruptions
from varmem.inference import get_engine
from varmem.memories.predictive_coding.network import FusedEnergy

SMALL = dict(n_layers=3, h_dim=5, sigma_obs=0.1, T_infer=30)


def _small(K=1, **kw):
    return varmem.BayesPCN(6, **{**SMALL, "n_particles": K, **kw})


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_state_equal(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


# --- conjugate write, delete, forget ----------------------------------------------------------
def _assert_blr_posterior(m, atol=1e-10):
    """Batch Bayesian linear regression over the recorded (Z, X) of every layer and particle."""
    N, K, L, s2 = len(m), m.n_particles, m.n_layers, m.sigma_obs**2
    hid = m.history_hidden.to(torch.float64)  # [N, K, L-1, h]
    acts = [m.items.unsqueeze(1).expand(N, K, m.dim)] + [hid[:, :, j] for j in range(L - 1)]
    for i in range(L):
        Z = torch.relu(acts[i + 1]) if i < L - 1 else torch.ones(N, K, 1)
        for k in range(K):
            U0inv = torch.eye(Z.shape[-1]) / m.sigma_prior**2
            U = torch.linalg.inv(U0inv + Z[:, k].T @ Z[:, k] / s2)
            R = U @ (U0inv @ m.initial_mean(i)[k] + Z[:, k].T @ acts[i][:, k] / s2)
            torch.testing.assert_close(m.weight_cov(i)[k], U, atol=atol, rtol=0)
            torch.testing.assert_close(m.weight_mean(i)[k], R, atol=atol, rtol=0)


@pytest.mark.parametrize("write_batch, K", [(1, 1), (1, 3), (4, 2)])
def test_sequential_writes_equal_the_batch_linear_regression_posterior(write_batch, K):
    m = _small(K, write_batch=write_batch)
    X = torch.randn(8, 6)
    m.write(X[:3]).write(X[3:])
    assert len(m) == 8 and torch.equal(m.items, X)
    _assert_blr_posterior(m)


def test_conjugate_statistics_stay_float64_in_a_float32_memory():
    m = varmem.BayesPCN(6, **SMALL, dtype=torch.float32).write(torch.randn(3, 6))
    assert m.weight_mean(0).dtype == m.weight_cov(0).dtype == m.log_w.dtype == torch.float64
    assert m.retrieve(torch.randn(2, 6), seed=0, max_steps=5).pattern.dtype == torch.float32


@pytest.mark.parametrize("K", [1, 3])
def test_delete_after_write_restores_the_state(K):
    m = _small(K).write(torch.randn(4, 6))
    before = _state(m)
    new = torch.randn(3, 6)
    m.write(new).delete(new[[2, 0, 1]])
    _assert_state_equal(_state(m), before, atol=1e-10)
    # deleting an older item gives the posterior of the other records (the posterior is order-free)
    rest = m.items[[0, 2, 3]].clone()
    m.delete(m.items[1].clone())
    assert torch.equal(m.items, rest)
    _assert_blr_posterior(m)


def test_forget_composes_as_a_semigroup_and_returns_to_the_initial_prior():
    m = _small(2).write(torch.randn(5, 6))
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    a.forget(0.3).forget(0.5)
    b.forget(0.3 + 0.5 - 0.3 * 0.5)
    _assert_state_equal(_state(a), _state(b), atol=1e-14)
    start = _state(m.forget(0.0))
    for _ in range(2000):
        m.forget(0.01)
    # after n steps: U − σ_W² I = 0.99ⁿ (U_0 − σ_W² I),  R − R_init = 0.99^(n/2) (R_0 − R_init)
    for i in range(m.n_layers):
        eye = torch.eye(m.weight_cov(i).shape[-1]).expand_as(m.weight_cov(i))
        torch.testing.assert_close(m.weight_cov(i) - eye, 0.99**2000 * (start[f"U{i}"] - eye), atol=1e-13, rtol=0)
        torch.testing.assert_close(m.weight_cov(i), eye, atol=1e-8, rtol=0)
        r_init = m.initial_mean(i)
        torch.testing.assert_close(m.weight_mean(i) - r_init, 0.99**1000 * (start[f"R{i}"] - r_init),
                                   atol=1e-13, rtol=0)
        torch.testing.assert_close(m.weight_mean(i), r_init, atol=1e-3, rtol=0)
        assert (start[f"R{i}"] - r_init).abs().max() > 1e-2  # the write had moved it
        assert r_init.abs().max() > 0.1  # the target is the random initial mean, not 0
    c = _small(2).write(torch.randn(2, 6)).forget(1.0)
    fresh = _small(2)
    for i in range(c.n_layers):
        torch.testing.assert_close(c.weight_mean(i), fresh.weight_mean(i), atol=1e-15, rtol=0)
        torch.testing.assert_close(c.weight_cov(i), fresh.weight_cov(i), atol=1e-15, rtol=0)


def test_particle_log_weights_are_the_normalised_log_joints_at_the_modes():
    m = _small(3)
    x = torch.randn(1, 6)
    m.write(x)
    inc = m.history_log_w[0]  # log p_k(x, ĥ_k) under the prior
    torch.testing.assert_close(m.log_w, inc - inc.logsumexp(0))
    fresh = _small(3)  # recompute log p_k(x, ĥ_k) with the prior network, particle by particle
    hid = m.history_hidden[0]
    for k in range(3):
        acts = [x.unsqueeze(0)] + [hid[k, j].view(1, 1, -1) for j in range(2)]
        e_k, _ = fresh.particle_energies(acts)
        torch.testing.assert_close(-e_k[k], inc[k : k + 1])


# --- energy, Pyro model, gradient --------------------------------------------------------------
def _trace_log_joint(m, code, cue, mask, K):
    acts = m.split_code(code)
    data = {f"h{i}": acts[i] for i in range(1, m.n_layers)}
    if mask is not None:
        data["x_missing"] = acts[0]
    per_k = []
    for k in range(K):
        d = dict(data, particle=torch.full((code.shape[0],), k)) if K > 1 else data
        tr = poutine.trace(poutine.condition(m.model, data=d)).get_trace(cue, mask)
        tr.compute_log_prob()
        per_k.append(sum(s["log_prob"] for s in tr.nodes.values() if s["type"] == "sample"))
        if K == 1:
            assert torch.allclose(tr.log_prob_sum(), per_k[0].sum())
    return torch.stack(per_k).logsumexp(0)


@pytest.mark.parametrize("K, log_prob", [(1, "p_pred"), (3, "p_pred"), (2, "map")])
@pytest.mark.parametrize("partial", [False, True])
def test_energy_is_minus_the_pyro_trace_log_density(K, log_prob, partial):
    m = _small(K, log_prob=log_prob).write(torch.randn(4, 6))
    code = torch.randn(3, m.code_dim)
    cue = torch.randn(3, 6)
    mask = torch.rand(3, 6) > 0.4 if partial else None
    mask = None if mask is None else mask | torch.eye(3, 6, dtype=torch.bool)
    expected = -_trace_log_joint(m, code, cue, mask, K)
    torch.testing.assert_close(m.energy(code, cue, mask), expected, atol=1e-9, rtol=1e-12)
    if not partial:  # the sensory part of ``code`` itself, no cue
        torch.testing.assert_close(m.energy(code), -_trace_log_joint(m, code, code[:, :6], None, K))


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("K, log_prob", [(1, "p_pred"), (3, "p_pred"), (3, "map")])
def test_hand_written_activity_update_is_the_autograd_gradient(activation, K, log_prob):
    m = _small(K, activation=activation, log_prob=log_prob).write(torch.randn(3, 6))
    code = torch.randn(4, m.code_dim)
    z = code.clone().requires_grad_()
    (grad,) = torch.autograd.grad(m.energy(z).sum(), z)
    torch.testing.assert_close(m.energy_grad(code), grad, atol=1e-9, rtol=1e-9)
    cue, mask = torch.randn(4, 6), torch.rand(4, 6) > 0.5
    z = code.clone().requires_grad_()
    (grad,) = torch.autograd.grad(m.energy(z, cue, mask).sum(), z)
    torch.testing.assert_close(m.energy_grad(code, cue, mask), grad, atol=1e-9, rtol=1e-9)
    assert (grad[:, :6][mask] == 0).all()


@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("partial", [False, True])
def test_pyro_read_equals_the_hand_written_read(K, partial):
    m = _small(K).write(torch.randn(3, 6))
    cue = torch.randn(2, 6)
    mask = torch.tensor([True, True, True, True, False, False]) if partial else None
    a = m.retrieve(cue, mask, method="pc", seed=3, max_steps=12, tol=0)
    b = m.retrieve(cue, mask, method="pc_pyro", seed=3, max_steps=12, tol=0)
    torch.testing.assert_close(a.code, b.code, atol=1e-6, rtol=1e-6)
    assert a.trace.shape == (13, 2) and b.trace.shape == (12, 2)  # pc: before every step and at the end
    torch.testing.assert_close(a.trace[1:], b.trace, atol=1e-6, rtol=1e-8)  # pc_pyro: after every step


# --- the fused relaxation pass and the scale-aware early stop ---------------------------------------
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("K, log_prob", [(1, "p_pred"), (3, "p_pred"), (2, "map")])
@pytest.mark.parametrize("mode", ["individual", "mixture", "sensory_only"])
def test_fused_pass_equals_the_per_layer_energy_and_gradient(activation, K, log_prob, mode):
    """``FusedEnergy`` (used by every relaxation) against ``particle_energies``, whose gradient the
    test above checks against autograd: same ``E_k`` and the same gradient of every free layer."""
    m = _small(K, activation=activation, log_prob=log_prob).write(torch.randn(3, 6))
    B, h, L = 4, m.h_dim, m.n_layers
    P = K if mode == "individual" else 1
    acts = [torch.randn(1, B, 6)] + [torch.randn(P, B, h) for _ in range(L - 1)]
    layers = m.layer_stats(torch.float64)
    free0, free_hidden = mode != "individual", mode != "sensory_only"
    fused = FusedEnergy(m, layers, acts, free0, free_hidden)
    g0 = torch.full((K, B, 6), float("nan")) if free0 else None
    gh = torch.full((K, B, (L - 1) * h), float("nan")) if free_hidden else None
    e = fused(acts, g0, gh)
    e_ref, g_ref = m.particle_energies(acts, layers, with_grad=True)
    torch.testing.assert_close(e, e_ref, atol=1e-10, rtol=1e-12)
    if free0:
        torch.testing.assert_close(g0, g_ref[0].expand(K, B, 6), atol=1e-10, rtol=1e-10)
    if free_hidden:
        torch.testing.assert_close(gh, torch.cat(g_ref[1:], -1), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fused(acts, None, None), e_ref, atol=1e-10, rtol=1e-12)


def _first_settled_step(trace, rtol):
    """Independent reading of the sticky relative test on a full (never stopped) energy trace."""
    rel_ok = (trace[1:] - trace[:-1]).abs() <= rtol * trace[1:].abs()  # step t+1 vs step t
    first = torch.stack([col.nonzero()[0, 0] for col in rel_ok.reshape(rel_ok.shape[0], -1).T])
    return int(first.max()) + 2  # rel_ok[j] is tested after optimiser step j + 2


@pytest.mark.parametrize("partial", [False, True])
def test_relative_early_stop_stops_where_every_cue_first_settled(partial):
    m = _small(2, infer_window=1).write(torch.randn(3, 6))  # the one-step rule (windows: test_stop_rule.py)
    cue = torch.randn(3, 6)
    mask = torch.tensor([True, True, True, True, False, False]) if partial else None
    full = m.retrieve(cue, mask, seed=4, max_steps=400, tol=0, rtol=0)
    assert full.steps == 400 and full.converged is None  # no stopping rule
    rtol = 1e-3
    expected = _first_settled_step(full.trace[:-1], rtol)
    early = m.retrieve(cue, mask, seed=4, max_steps=400, tol=0, rtol=rtol)
    assert 2 < early.steps == expected < 400
    assert early.converged.all()
    n = early.trace.shape[0] - 1  # the same trajectory up to the stop (deterministic)
    torch.testing.assert_close(early.trace[:n], full.trace[:n], atol=1e-9, rtol=1e-12)


def test_write_uses_the_relative_early_stop_and_zero_disables_it():
    x = torch.randn(1, 6)
    stops = []
    for rtol in (0.0, 1e-3):
        m = _small(1, T_infer=400, infer_tol=0.0, infer_rtol=rtol, infer_window=1)
        acts = [x.unsqueeze(0)] + m.init_hidden(1, 1, torch.Generator().manual_seed(0))
        _, trace, steps, _ = m.relax(acts, None, steps=400, lr=m.activation_lr, rtol=rtol, individual=True)
        stops.append((steps, trace))
    (n_full, full), (n_early, _) = stops
    assert n_full == 400 and n_early == _first_settled_step(full[:-1], 1e-3) < 400
    default = varmem.BayesPCN(6)  # the windowed default (picked by experiments/bayespcn_hard.py)
    assert (default.infer_tol, default.infer_rtol, default.infer_window) == (1e-3, 1e-5, 100)


# --- recall --------------------------------------------------------------------------------------
RECALL = dict(n_layers=3, h_dim=32, sigma_obs=0.01, T_infer=300)


def _cues(X):
    white, _ = corruptions.white_noise(X, 0.2, generator=torch.Generator().manual_seed(1))
    drop, dmask = corruptions.pixel_drop(X, 0.25, generator=torch.Generator().manual_seed(2), fill=-1.0,
                                         image_shape=(1, 8, 8))
    mask, mmask = corruptions.right_columns_mask(X, 0.25, fill=-1.0, image_shape=(1, 8, 8))
    return {"white": (white, None), "drop": (drop, dmask), "mask": (mask, mmask)}


def _mse(pattern, X, mask):
    err = (pattern - X) ** 2
    return err.mean(-1) if mask is None else (err * ~mask).sum(-1) / (~mask).sum(-1)


def recall_mse(memory, X, read):
    return {name: _mse(read(memory, cue, mask).pattern, X, mask) for name, (cue, mask) in _cues(X).items()}


@pytest.fixture(scope="module")
def digits():
    return (varmem.datasets.load_digits().images[:4].reshape(4, -1) * 2 - 1).to(torch.get_default_dtype())


def test_stored_digits_are_recalled_and_a_never_written_network_fails(digits):
    m = varmem.BayesPCN(64, **RECALL).write(digits)
    mse = recall_mse(m, digits, lambda m, c, k: m.retrieve(c, k, seed=0))
    # white: the cue's own MSE is 4·0.2² = 0.16 in [−1, 1] units; drop / mask: unknown pixels only
    assert (mse["white"] < 0.01).all(), mse
    assert (mse["drop"] < 0.01).all() and (mse["mask"] < 0.01).all(), mse  # the protocol's accuracy
    empty = varmem.BayesPCN(64, **RECALL)  # negative control: same read, nothing written
    engine = get_engine("pc")
    ctrl = recall_mse(empty, digits, lambda m, c, k: engine(m, *m.prepare_cue(c, k), seed=0))
    for name in mse:
        assert (ctrl[name] > 0.1).all(), (name, ctrl[name])


# --- bad input, nothing lost ---------------------------------------------------------------------
@pytest.fixture
def memory():
    return _small(2).write(torch.randn(3, 6))


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: m.write(torch.ones(2, 5)), ValueError, "shape"),
        (lambda m: m.write(torch.ones(0, 6)), ValueError, "empty"),
        (lambda m: m.write(torch.ones(2, 6, dtype=torch.int64)), TypeError, "floating dtype"),
        (lambda m: m.write(torch.tensor([[0.0, float("nan"), 0, 0, 0, 0]])), ValueError, "NaN"),
        (lambda m: m.write("abc"), TypeError, "tensor or array"),
        (lambda m: m.write(torch.ones(2, 6), seed=1.5), TypeError, "seed"),
        (lambda m: m.forget(1.5), ValueError, r"beta must lie in \[0, 1\]"),
        (lambda m: m.forget(-0.1), ValueError, r"beta must lie in \[0, 1\]"),
        (lambda m: m.forget(float("nan")), ValueError, r"beta must lie in \[0, 1\]"),
        (lambda m: m.forget("a lot"), TypeError, "beta"),
        (lambda m: m.delete(torch.full((6,), 9.0)), KeyError, "never written"),
        (lambda m: m.delete(torch.cat([m.items[:1], torch.full((1, 6), 9.0)])), KeyError, "never written"),
        (lambda m: m.delete(torch.ones(6, 2)), ValueError, "shape"),
        (lambda m: m.retrieve(torch.ones(2, 5)), ValueError, "shape"),
        (lambda m: m.retrieve(torch.ones(2, 6), torch.zeros(6, dtype=torch.bool)), ValueError, "nothing observed"),
        (lambda m: m.retrieve(torch.ones(2, 6), method="exact"), ValueError, "unknown retrieval method"),
        (lambda m: m.retrieve(torch.ones(2, 6), iterations=3), ValueError, r"unknown option\(s\)"),
        (lambda m: m.retrieve(torch.ones(2, 6), max_steps=0), ValueError, "steps"),
        (lambda m: m.retrieve(torch.ones(2, 6), optimizer="lbfgs"), ValueError, "optimizer"),
        (lambda m: m.retrieve(torch.ones(2, 6), rtol=-1.0), ValueError, "rtol"),
        (lambda m: m.energy(torch.ones(2, 7)), ValueError, r"z must have shape \[\.\.\., 16\]"),
    ],
)
def test_bad_input_names_the_problem_and_loses_nothing(memory, call, error, words):
    before = _state(memory)
    with pytest.raises(error, match=words):
        call(memory)
    _assert_state_equal(_state(memory), before)


def test_a_write_failing_in_a_later_chunk_rolls_back_the_earlier_chunks(memory, monkeypatch):
    before = _state(memory)
    ids = {k: id(v) for k, v in memory.state_dict(keep_vars=True).items()}
    calls = []
    original = memory._write_chunk

    def failing(chunk, generator):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("diverged")
        original(chunk, generator)

    monkeypatch.setattr(memory, "_write_chunk", failing)
    with pytest.raises(FloatingPointError, match="diverged"):
        memory.write(torch.randn(3, 6))  # write_batch = 1: the first item is stored, the second fails
    assert len(calls) == 2
    _assert_state_equal(_state(memory), before)
    assert {k: id(v) for k, v in memory.state_dict(keep_vars=True).items()} == ids


def test_delete_needs_the_history_and_an_empty_memory_refuses_reads():
    m = _small(keep_history=False).write(torch.randn(2, 6))
    with pytest.raises(ValueError, match="keep_history"):
        m.delete(m.items[0])
    with pytest.raises(ValueError, match="empty"):
        _small().retrieve(torch.zeros(1, 6))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(n_layers=1), ValueError, "n_layers"),
        (dict(h_dim=0), ValueError, "h_dim"),
        (dict(activation="swish"), ValueError, "activation"),
        (dict(sigma_obs=0.0), ValueError, "sigma_obs"),
        (dict(sigma_prior=-1.0), ValueError, "sigma_prior"),
        (dict(n_particles=0), ValueError, "n_particles"),
        (dict(log_prob="elbo"), ValueError, "log_prob"),
        (dict(ensemble_log_joint="joint"), ValueError, "ensemble_log_joint"),
        (dict(write_batch=0), ValueError, "write_batch"),
        (dict(T_infer=0), ValueError, "T_infer"),
        (dict(resample_threshold=2.0), ValueError, "resample_threshold"),
        (dict(infer_rtol=-1e-4), ValueError, "infer_rtol"),
        (dict(infer_rtol=1.0), ValueError, "infer_rtol"),
        (dict(infer_rtol="small"), TypeError, "infer_rtol"),
        (dict(infer_window=0), ValueError, "infer_window"),
        (dict(infer_window=2.5), TypeError, "infer_window"),
        (dict(resample="yes"), TypeError, "resample"),
        (dict(keep_history=1), TypeError, "keep_history"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=rf"^{words}\b"):  # the message starts with the argument's name
        varmem.BayesPCN(6, **kwargs)


def test_resampling_keeps_a_valid_state():
    m = _small(4, resample=True, resample_threshold=1.0).write(torch.randn(3, 6))
    torch.testing.assert_close(m.log_w, torch.full((4,), -torch.log(torch.tensor(4.0)).item()))
    m.check_state()


def test_save_load_round_trip_with_particles_and_history(tmp_path):
    m = _small(3, ensemble_log_joint="shared").write(torch.randn(4, 6))
    loaded = varmem.load(varmem.save(m, tmp_path / "bpcn.safetensors"))
    assert type(loaded) is varmem.BayesPCN and loaded.config() == m.config() and len(loaded) == 4
    _assert_state_equal(_state(loaded), _state(m))
    cue = torch.randn(2, 6)
    read = dict(seed=0, max_steps=20)
    torch.testing.assert_close(loaded.retrieve(cue, **read).pattern, m.retrieve(cue, **read).pattern)
    loaded.delete(m.items[0])  # the history came back too
    assert len(loaded) == 3
    m.forget(0.25)
    _assert_state_equal(_state(varmem.load(varmem.save(m, tmp_path / "f.safetensors"))), _state(m))


# --- defaults, dtypes and the layout of the state -------------------------------------------------
def test_camera_ready_defaults():
    m = varmem.BayesPCN(6)
    assert m.config() == {
        "dim": 6, "n_layers": 4, "h_dim": 256, "activation": "relu", "sigma_prior": 1.0, "sigma_obs": 0.01,
        "sigma_data": None, "n_particles": 1, "log_prob": "p_pred", "ensemble_log_joint": "individual",
        "T_infer": 500, "activation_lr": 0.01, "infer_tol": 1e-3, "infer_rtol": 1e-5, "infer_window": 100,
        "write_batch": 1, "write_objective": "independent",
        "resample": False, "resample_threshold": 0.5, "keep_history": True, "seed": 0,
    }
    assert m.layer_sigma2(0) == m.layer_sigma2(1) == 0.01**2
    data = varmem.BayesPCN(6, sigma_obs=0.1, sigma_data=0.3)
    assert data.sigma_data == 0.3
    assert data.layer_sigma2(0) == pytest.approx(0.09) and data.layer_sigma2(1) == pytest.approx(0.01)


def test_a_fresh_memory_holds_the_prior_with_uniform_particle_weights():
    m = _small(3, sigma_prior=0.5)
    torch.testing.assert_close(m.particle_weights, torch.full((3,), 1 / 3), rtol=1e-15, atol=0)
    m.check_state()
    for i, (d_in, _) in enumerate(m.layer_dims()):
        assert torch.equal(m.weight_cov(i), 0.25 * torch.eye(d_in).expand(3, d_in, d_in))  # σ_W² I
        assert torch.equal(m.weight_mean(i), m.initial_mean(i))
    assert torch.equal(_small(3, sigma_prior=0.5).forget(1.0).weight_cov(0), m.weight_cov(0))


def test_buffer_dtypes_whatever_the_default_dtype():
    """Items and activities in the memory's dtype, the conjugate statistics in float64, also when
    torch's default dtype is float32 (and a float32 default must not leak into float64 state)."""
    previous = torch.get_default_dtype()
    try:
        for default in (torch.float32, torch.float64):
            torch.set_default_dtype(default)
            for dtype in (torch.float32, torch.float64):
                m = varmem.BayesPCN(6, **SMALL, n_particles=2, dtype=dtype)
                state = m.state_dict()
                for name in ("items", "history_hidden"):
                    assert state[name].dtype == dtype, (default, dtype, name)
                for name in ("log_w", "history_log_w", "R0", "U0", "R_init0", "U2"):
                    assert state[name].dtype == torch.float64, (default, dtype, name)
    finally:
        torch.set_default_dtype(previous)


def test_write_and_delete_are_exact_with_a_float32_default_dtype():
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        m = varmem.BayesPCN(6, **SMALL, n_particles=2, dtype=torch.float64).write(torch.randn(3, 6).double())
        before = _state(m)
        new = torch.randn(2, 6).double()
        m.write(new).delete(new)
        _assert_state_equal(_state(m), before, atol=1e-10)
    finally:
        torch.set_default_dtype(previous)
    _assert_blr_posterior(m, atol=1e-10)  # (the reference computed in the suite's float64)


def test_the_state_without_history_is_empty():
    m = _small(2, keep_history=False).write(torch.randn(3, 6))
    assert m.history_hidden.shape == (0, 0, 0, 0) and m.history_log_w.shape == (0, 0)


def test_float32_memory_energies_are_float32():
    m = varmem.BayesPCN(6, **SMALL, n_particles=2, dtype=torch.float32).write(torch.randn(3, 6))
    code = torch.randn(4, m.code_dim, dtype=torch.float32)
    assert m.energy(code).dtype == torch.float32
    assert m.particle_log_weights(torch.float32).dtype == torch.float32


def test_map_log_prob_drops_the_weight_covariance():
    """``log_prob="map"``: the energy of the posterior-mean weights, i.e. the ``p_pred`` energy with
    every ``U`` set to 0 (the predictive variance is then σ² alone)."""
    pred = _small(2).write(torch.randn(3, 6))
    mapped = _small(2, log_prob="map")
    mapped.load_state_dict(pred.state_dict())
    zero_u = copy.deepcopy(pred)
    for i in range(pred.n_layers):
        setattr(zero_u, f"U{i}", torch.zeros_like(pred.weight_cov(i)))
    code = torch.randn(4, pred.code_dim)
    torch.testing.assert_close(mapped.energy(code), zero_u.energy(code), rtol=1e-12, atol=1e-12)
    assert (mapped.energy(code) - pred.energy(code)).abs().max() > 1e-3  # negative control


# --- write: particles, stopping rules, generator, progress ----------------------------------------
@pytest.mark.parametrize("mode", ["individual", "shared"])
def test_write_time_activities_per_particle_or_shared(mode):
    m = _small(2, ensemble_log_joint=mode).write(torch.randn(3, 6))
    same = torch.equal(m.history_hidden[:, 0], m.history_hidden[:, 1])
    assert same == (mode == "shared")  # individual: each particle relaxes its own energy from its own start


def test_write_honours_the_stopping_rules():
    x = torch.randn(1, 6)

    def hidden(**kw):
        return _small(1, T_infer=300, **kw).write(x).history_hidden

    full = hidden(infer_tol=0.0, infer_rtol=0.0)
    assert not torch.equal(hidden(infer_tol=1e9, infer_rtol=0.0), full)  # stops at its first test
    assert not torch.equal(hidden(infer_tol=0.0, infer_rtol=1e-3, infer_window=1), full)
    assert torch.equal(hidden(infer_tol=0.0, infer_rtol=0.0), full)  # negative control: deterministic


def test_write_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone():
    x = torch.randn(3, 6)
    state = torch.get_rng_state()
    a = _small(2, resample=True, resample_threshold=1.0).write(x, seed=7)
    torch.rand(3)
    b = _small(2, resample=True, resample_threshold=1.0).write(x, seed=7)
    _assert_state_equal(_state(a), _state(b))
    c = _small(2, resample=True, resample_threshold=1.0).write(x, seed=8)
    assert not torch.equal(a.history_hidden, c.history_hidden)
    assert not torch.equal(state, torch.get_rng_state())  # (the torch.rand above)
    state = torch.get_rng_state()
    _small(2, resample=True, resample_threshold=1.0).write(x, seed=7)
    assert torch.equal(state, torch.get_rng_state())


def test_progress_bar_only_on_request(capsys):
    _small().write(torch.randn(2, 6))
    assert capsys.readouterr().err == ""
    _small().write(torch.randn(2, 6), progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rBayesPCN write:") and "/2 [" in err
    assert not err.endswith("\n")  # leave=False: the bar is cleared, not left behind
    with pytest.raises(TypeError, match=r"^progress must be True or False"):
        _small().write(torch.randn(2, 6), progress="yes")


def test_covariances_stay_exactly_symmetric_through_writes_and_deletes():
    m = _small(2, write_batch=2).write(torch.randn(5, 6))
    for i in range(m.n_layers):
        assert torch.equal(m.weight_cov(i), m.weight_cov(i).transpose(-1, -2))
    m.delete(m.items[[1, 3]].clone())
    for i in range(m.n_layers):
        assert torch.equal(m.weight_cov(i), m.weight_cov(i).transpose(-1, -2))


def test_sensory_noise_scale_enters_the_first_layers_regression():
    """With ``sigma_data`` ≠ ``sigma_obs`` the sensory layer's regression uses σ_data² (and delete
    inverts exactly that update)."""
    m = varmem.BayesPCN(6, n_layers=2, h_dim=4, sigma_obs=0.1, sigma_data=0.4, T_infer=30).write(torch.randn(4, 6))
    N, s2 = len(m), 0.4**2
    Z = torch.relu(m.history_hidden[:, 0, 0].double())  # [N, h]
    U0inv = torch.eye(4) / m.sigma_prior**2
    U = torch.linalg.inv(U0inv + Z.T @ Z / s2)
    R = U @ (U0inv @ m.initial_mean(0)[0] + Z.T @ m.items / s2)
    torch.testing.assert_close(m.weight_cov(0)[0], U, atol=1e-10, rtol=0)
    torch.testing.assert_close(m.weight_mean(0)[0], R, atol=1e-10, rtol=0)
    assert N == 4
    before = _state(m)
    new = torch.randn(1, 6)
    m.write(new).delete(new)
    _assert_state_equal(_state(m), before, atol=1e-10)


def test_a_non_positive_definite_predictive_covariance_is_refused_and_rolled_back():
    m = _small(1, log_prob="map").write(torch.randn(2, 6))  # "map": the relaxation never reads U
    m.U0 = -100.0 * torch.eye(m.weight_cov(0).shape[-1]).expand_as(m.weight_cov(0)).clone()
    before = _state(m)
    with pytest.raises(FloatingPointError, match=r"^layer 0: predictive covariance is not positive definite$"):
        m.write(torch.randn(1, 6))
    _assert_state_equal(_state(m), before)


def test_a_diverging_write_is_refused_with_advice():
    m = _small(1, activation_lr=1e200, infer_tol=0.0, infer_rtol=0.0, T_infer=5)
    with pytest.raises(FloatingPointError, match=r"^write produced a non-finite log-joint \(the activations "
                       r"diverged: lower activation_lr, raise sigma_obs / sigma_data or lower sigma_prior\)$"):
        m.write(torch.randn(1, 6))
    assert len(m) == 0


# --- resampling ---------------------------------------------------------------------------------
def _ess_after_one_write(x, K):
    m = _small(K).write(x, seed=1)
    w = m.particle_weights
    return float(1.0 / (w * w).sum()), m


@pytest.mark.parametrize("K", [2, 4])
def test_resampling_happens_exactly_when_the_ess_is_below_the_threshold(K):
    x = torch.randn(1, 6)
    ess, plain = _ess_after_one_write(x, K)
    assert 1.0 <= ess < 0.9 * K  # the write made the weights uneven
    kept = _small(K, resample=True, resample_threshold=0.99 * ess / K).write(x, seed=1)
    _assert_state_equal(_state(kept), _state(plain))  # ESS above the threshold: nothing resampled
    resampled = _small(K, resample=True, resample_threshold=min(1.0, 1.01 * ess / K)).write(x, seed=1)
    torch.testing.assert_close(resampled.log_w, torch.full((K,), -torch.log(torch.tensor(float(K))).item()))
    # multinomial resampling with replacement: every new particle is a copy of an old one
    for i in range(plain.n_layers):
        for k in range(K):
            assert any(torch.equal(resampled.weight_mean(i)[k], plain.weight_mean(i)[j]) for j in range(K))
    resampled.check_state()


def test_resampling_draws_with_replacement_so_negligible_particles_die_out():
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    _, plain = _ess_after_one_write(x, 4)
    w = plain.particle_weights
    negligible = [j for j in range(4) if w[j] < 1e-30]
    assert negligible and w.max() < 0.99  # one particle is negligible, none dominates
    m = _small(4, resample=True, resample_threshold=1.0).write(x, seed=1)
    picked = []
    for k in range(4):
        (j,) = [j for j in range(4) if torch.equal(m.weight_mean(0)[k], plain.weight_mean(0)[j])]
        picked.append(j)
        for i in range(m.n_layers):  # a particle moves as a whole: means, covariances, initial means
            assert torch.equal(m.weight_mean(i)[k], plain.weight_mean(i)[j])
            assert torch.equal(m.weight_cov(i)[k], plain.weight_cov(i)[j])
            assert torch.equal(m.initial_mean(i)[k], plain.initial_mean(i)[j])
        assert torch.equal(m.history_hidden[:, k], plain.history_hidden[:, j])
        assert torch.equal(m.history_log_w[:, k], plain.history_log_w[:, j])
    assert not set(picked) & set(negligible)


# --- delete and check_state messages ------------------------------------------------------------
def test_delete_matches_exactly_by_default_and_within_atol_on_request():
    m = _small(1).write(torch.randn(3, 6))
    near = m.items[1] + 0.5
    with pytest.raises(KeyError, match=r"^'items \[0\] are never written to this memory \(atol=0.0\); nothing was "
                       r"deleted'$"):
        m.delete(near)
    assert len(m) == 3
    m.delete(near, atol=0.6)
    assert len(m) == 2


def test_delete_messages():
    with pytest.raises(ValueError, match=r"^delete needs keep_history=True \(the written activities are not "
                       r"recorded\)$"):
        _small(keep_history=False).write(torch.randn(1, 6)).delete(torch.zeros(6))
    m = _small(1).write(torch.randn(2, 6)).forget(1.0)
    before = _state(m)
    with pytest.raises(ValueError, match=r"^layer \d: these items cannot be removed from the current posterior "
                       r"\(not positive definite: was it forgotten or resampled since\?\); nothing deleted$"):
        m.delete(m.items[0].clone())
    _assert_state_equal(_state(m), before)


def _with(m, **tensors):
    for name, value in tensors.items():
        setattr(m, name, value)
    return m


def test_check_state_symmetry_tolerance():
    """``U`` must equal its transpose within ``rtol=1e-10`` and ``atol=1e-12·max|U|``."""
    m = _small(1, sigma_prior=3.0).write(torch.randn(3, 6))  # max|U| ≈ 9
    U = m.weight_cov(1).clone()
    m.check_state()
    scale = float(U.abs().max())
    assert scale > 2

    def bumped(i, j, delta):
        V = U.clone()
        V[0, i, j] += delta
        return V

    off = U[0] - torch.diag(torch.diagonal(U[0]))
    i, j = divmod(int(off.abs().argmax()), U.shape[-1])
    b = float(U[0, i, j])
    zero = (U[0] == 0).nonzero()
    zi, zj = (int(v) for v in zero[0]) if len(zero) else (None, None)
    assert abs(b) > 1e-6 * scale and zi is not None  # a non-zero and a zero entry to perturb
    for (r, c), delta, ok in (((zi, zj), 0.5e-12 * scale, True), ((zi, zj), 5e-10, False),
                              ((i, j), 1e-7 * abs(b), False), ((i, j), 1e-11 * abs(b), True),
                              ((i, j), 1e-8 * scale, False)):
        _with(m, U1=bumped(r, c, delta))
        if ok:
            m.check_state()
        else:
            with pytest.raises(ValueError, match=r"^U1 must be symmetric \(a row covariance\)$"):
                m.check_state()


@pytest.mark.parametrize("sigma_prior", [0.5, 3.0])
def test_check_state_positive_semi_definite_tolerance(sigma_prior):
    """The smallest eigenvalue may be down to ``-1e-10·max(1, max|U|)``, not below."""
    m = _small(1, sigma_prior=sigma_prior)
    d = m.weight_cov(0).shape[-1]
    top = sigma_prior**2
    bound = 1e-10 * max(1.0, top)
    for lowest, ok in ((0.0, True), (-bound, True), (-0.5 * bound, True), (-1.5 * bound, False), (-1e-3, False)):
        diag = torch.full((d,), top)
        diag[0] = lowest
        _with(m, U0=torch.diag(diag).unsqueeze(0))
        if ok:
            m.check_state()
        else:
            with pytest.raises(ValueError, match=r"^U0 must be positive semi-definite \(a row covariance\)$"):
                m.check_state()


def test_check_state_messages_name_the_tensor_and_the_rows():
    m = _small(2).write(torch.randn(2, 6))
    good = _state(m)
    big = good["R1"].clone()
    big[1, 0, 0] = 2e6
    cases = [
        ({"R1": big}, r"^R1 has entries beyond ±1e\+06 \(rows \[1\]\)"),
        ({"R_init0": good["R_init0"][:, :-1]}, r"^R_init0 must have shape \(2, \d+, \d+\), got \(2, \d+, \d+\)$"),
        ({"U2": torch.full_like(good["U2"], float("nan"))}, r"^U2 contains NaN or inf$"),
        ({"log_w": good["log_w"] + 1.0}, r"^log_w must be \[K\] normalised log-weights$"),
        ({"history_log_w": good["history_log_w"][:1]}, r"^history buffers do not match the number of stored items$"),
    ]
    for change, words in cases:
        fresh = copy.deepcopy(m)
        with pytest.raises(ValueError, match=words):
            _with(fresh, **change).check_state()
    m.check_state()  # negative control
