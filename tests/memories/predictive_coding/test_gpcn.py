"""PredictiveCodingMemory (GPCN) against independent computations.

References:
* the predictive-coding energy ``F = ½ Σ_l ‖ε_l‖² / σ_l²`` written out here with explicit
  matrix products, and minus the log-density of the Pyro trace (``poutine.trace``);
* ``torch.autograd.grad`` of the energy for the activity update, and of ``F`` with respect to the
  weights for the local learning rule (``ΔW = −α ∂F/∂W``);
* recall on sklearn digits in [−1, 1] (white 0.2, drop 0.25, mask 0.25; threshold 0.01 of the
  BayesPCN protocol), offline and online, with a never-written network as negative control.
"""

import pyro.poutine as poutine
import pytest
import torch

import varmem
from varmem import corruptions
from varmem.inference import get_engine

SMALL = dict(n_layers=3, h_dim=5, sigma_obs=0.3, sigma_data=0.2, T_infer=20, weight_lr=1e-3)


def _small(**kw):
    return varmem.PredictiveCodingMemory(6, **{**SMALL, **kw})


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _F(m, code):
    """½ Σ_l ‖a_l − f(a_{l+1}) W_l‖² / σ_l², top: ‖a_{L-1} − b‖² / σ_x² (explicit)."""
    a = m.split_code(code)
    f = {"relu": torch.relu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu}[m.activation]
    sig = [m.sigma_data] + [m.sigma_obs] * (m.n_layers - 1)
    total = 0
    for i in range(m.n_layers):
        mean = f(a[i + 1]) @ m.weight(i) if i < m.n_layers - 1 else m.weight(i)
        total = total + 0.5 * ((a[i] - mean) ** 2).sum(-1) / sig[i] ** 2
    return total


def test_energy_is_F_plus_constants_and_minus_the_pyro_trace_log_density():
    m = _small().write(torch.randn(3, 6))
    code = torch.randn(4, m.code_dim)
    torch.testing.assert_close(m.pc_energy(code), _F(m, code))
    acts = m.split_code(code)
    data = {f"h{i}": acts[i] for i in range(1, m.n_layers)}
    tr = poutine.trace(poutine.condition(m.model, data=data)).get_trace(acts[0])
    torch.testing.assert_close(m.energy(code).sum(), -tr.log_prob_sum())
    mask = torch.rand(4, 6) > 0.5
    mask[:, 0] = True
    cue = torch.randn(4, 6)
    tr = poutine.trace(poutine.condition(m.model, data={**data, "x_missing": acts[0]})).get_trace(cue, mask)
    torch.testing.assert_close(m.energy(code, cue, mask).sum(), -tr.log_prob_sum())


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_hand_written_activity_update_is_the_autograd_gradient(activation):
    m = _small(activation=activation).write(torch.randn(2, 6))
    code = torch.randn(4, m.code_dim)
    z = code.clone().requires_grad_()
    (grad,) = torch.autograd.grad(m.energy(z).sum(), z)
    torch.testing.assert_close(m.energy_grad(code), grad, atol=1e-10, rtol=1e-10)
    cue, mask = torch.randn(4, 6), torch.rand(4, 6) > 0.5
    z = code.clone().requires_grad_()
    (grad,) = torch.autograd.grad(m.energy(z, cue, mask).sum(), z)
    torch.testing.assert_close(m.energy_grad(code, cue, mask), grad, atol=1e-10, rtol=1e-10)


def test_local_learning_rule_is_gradient_descent_on_F():
    m = _small(T_infer=15)
    x = torch.randn(2, 6)
    W0 = [m.weight(i).clone() for i in range(m.n_layers)]
    gen = torch.Generator().manual_seed(5)
    m._train_step(x, gen)  # relaxation + one weight step
    # recompute the relaxed activities with the same random start, then autograd of F in W
    ref = _small(T_infer=15)
    acts = [x.unsqueeze(0)] + ref.init_hidden(2, 1, torch.Generator().manual_seed(5))
    acts, _, _, _ = ref.relax(acts, None, steps=15, lr=ref.activation_lr, tol=ref.infer_tol)
    code = ref.join_code([a.squeeze(0) for a in acts])
    Ws = [w.clone().requires_grad_() for w in W0]
    for i, w in enumerate(Ws):
        setattr(ref, f"W{i}", w)
    grads = torch.autograd.grad(_F(ref, code).sum(), Ws)
    for i in range(m.n_layers):
        torch.testing.assert_close(m.weight(i), W0[i] - m.weight_lr / 2 * grads[i], atol=1e-12, rtol=1e-10)


def test_pyro_read_equals_the_hand_written_read():
    m = _small().write(torch.randn(3, 6))
    cue, mask = torch.randn(2, 6), torch.tensor([True, True, True, False, False, False])
    for mk in (None, mask):
        a = m.retrieve(cue, mk, method="pc", seed=1, max_steps=20, tol=0)
        b = m.retrieve(cue, mk, method="pc_pyro", seed=1, max_steps=20, tol=0)
        torch.testing.assert_close(a.code, b.code, atol=1e-6, rtol=1e-6)


# --- recall --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return (varmem.datasets.load_digits().images[:4].reshape(4, -1) * 2 - 1).to(torch.get_default_dtype())


def _recall(memory, X, direct=False):
    white, _ = corruptions.white_noise(X, 0.2, generator=torch.Generator().manual_seed(1))
    drop, dmask = corruptions.pixel_drop(X, 0.25, generator=torch.Generator().manual_seed(2), fill=-1.0,
                                         image_shape=(1, 8, 8))
    mask, mmask = corruptions.right_columns_mask(X, 0.25, fill=-1.0, image_shape=(1, 8, 8))
    out = {}
    for name, cue, known in (("white", white, None), ("drop", drop, dmask), ("mask", mask, mmask)):
        if direct:  # the engine itself, bypassing the "empty memory" guard (negative control)
            r = get_engine("pc")(memory, *memory.prepare_cue(cue, known), seed=0, max_steps=200, tol=0)
        else:
            r = memory.retrieve(cue, known, seed=0, max_steps=200, tol=0)
        err = (r.pattern - X) ** 2
        out[name] = err.mean(-1) if known is None else (err * ~known).sum(-1) / (~known).sum(-1)
    return out


RECALL = dict(n_layers=3, h_dim=32, T_infer=100)


def test_offline_gpcn_recalls_every_stored_digit_and_a_random_network_does_not(digits):
    m = varmem.PredictiveCodingMemory(64, training="offline", epochs=60, **RECALL).write(digits)
    mse = _recall(m, digits)
    for name, err in mse.items():
        assert (err < 0.01).all(), (name, err)  # white: the cue's own MSE is 0.16
    ctrl = _recall(varmem.PredictiveCodingMemory(64, **RECALL), digits, direct=True)
    for name, err in ctrl.items():
        assert (err > 0.1).all(), (name, err)


def test_online_gpcn_recalls_its_latest_item_and_forgets_older_ones(digits):
    m = varmem.PredictiveCodingMemory(64, training="online", **RECALL).write(digits)
    mse = _recall(m, digits)
    for name, err in mse.items():
        assert err[-1] < 0.02, (name, err)  # one local step per item: the latest is an attractor
    assert (mse["white"][0] > mse["white"][-1]) and (mse["mask"][0] > mse["mask"][-1])
    ctrl = _recall(varmem.PredictiveCodingMemory(64, **RECALL), digits, direct=True)
    assert all((err > 0.1).all() for err in ctrl.values()), ctrl


# --- bad input, nothing lost, save/load ---------------------------------------------------------
@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: m.write(torch.ones(2, 5)), ValueError, "shape"),
        (lambda m: m.write(torch.ones(0, 6)), ValueError, "empty"),
        (lambda m: m.write(torch.ones(2, 6, dtype=torch.int32)), TypeError, "floating dtype"),
        (lambda m: m.write(torch.tensor([[float("inf"), 0, 0, 0, 0, 0.0]])), ValueError, "inf"),
        (lambda m: m.fit(0), ValueError, "epochs"),
        (lambda m: m.retrieve(torch.ones(2, 6), torch.ones(2, 6)), TypeError, "bool"),
        (lambda m: m.retrieve(torch.ones(2, 6), n_repeat=0), ValueError, "n_repeat"),
        (lambda m: m.retrieve(torch.ones(2, 6), seed="x"), TypeError, "seed"),
        (lambda m: m.retrieve(torch.ones(2, 6), method="fixed_point"), ValueError, "unknown retrieval method"),
    ],
)
def test_bad_input_names_the_problem_and_loses_nothing(call, error, words):
    m = _small().write(torch.randn(3, 6))
    before = _state(m)
    with pytest.raises(error, match=words):
        call(m)
    after = _state(m)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_diverging_write_is_rolled_back():
    m = _small()
    m.write(torch.randn(2, 6))
    before = _state(m)
    m.weight_lr = 1e308  # the next weight step overflows
    with pytest.raises(FloatingPointError, match="weight update"):
        m.write(torch.randn(2, 6) * 10)
    after = _state(m)
    assert all(torch.equal(before[k], after[k]) for k in before) and len(m) == 2


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(training="batch"), ValueError, "training"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(weight_lr=0.0), ValueError, "weight_lr"),
        (dict(activation_optimizer="lbfgs"), ValueError, "activation_optimizer"),
        (dict(infer_tol=-1.0), ValueError, "infer_tol"),
        (dict(seed=1.5), TypeError, "seed"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        varmem.PredictiveCodingMemory(6, **kwargs)


def test_empty_memory_refuses_reads_and_save_load_round_trips(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        _small().retrieve(torch.zeros(1, 6))
    m = _small(training="offline", epochs=3, dtype=torch.float32).write(torch.randn(3, 6))
    loaded = varmem.load(varmem.save(m, tmp_path / "gpcn.safetensors"))
    assert type(loaded) is varmem.PredictiveCodingMemory and loaded.config() == m.config()
    assert loaded.dtype == torch.float32 and len(loaded) == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), m.state_dict().values(), strict=True))
    cue = torch.randn(2, 6, dtype=torch.float32)
    torch.testing.assert_close(loaded.retrieve(cue, seed=0).pattern, m.retrieve(cue, seed=0).pattern)


def test_offline_training_records_the_energy_per_epoch_and_calls_back():
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    m = _small(training="offline", epochs=3, T_infer=7, infer_tol=0.0, infer_rtol=0.0)
    start = [m.weight(i).clone() for i in range(m.n_layers)]
    seen = []
    m.write(x)  # three epochs, recorded
    assert len(m.fit_record.energy) == 3 and m.fit_record.steps == 3 * 7
    m.fit(2, callback=lambda epoch, rec: seen.append((epoch, len(rec.energy))))
    assert seen == [(0, 1), (1, 2)] and len(m.fit_record.seconds) == 2
    # independent: the first epoch's energy is the mean −log p(a | W) at the relaxed activities,
    # recomputed from the initial weights and the same random start
    ref = _small(training="offline", epochs=3, T_infer=7, infer_tol=0.0, infer_rtol=0.0)
    for i, w in enumerate(start):
        setattr(ref, f"W{i}", w)
    acts = [x.unsqueeze(0)] + ref.init_hidden(3, 1, torch.Generator().manual_seed(ref.seed))
    acts, _, _, _ = ref.relax(acts, None, steps=7, lr=ref.activation_lr, tol=0.0)
    code = ref.join_code([a.squeeze(0) for a in acts])
    first = _small(training="offline", epochs=1, T_infer=7, infer_tol=0.0, infer_rtol=0.0).write(x).fit_record
    assert first.energy[0] == pytest.approx(float(ref.compute_energy(code).mean()), rel=1e-9)
    with pytest.raises(TypeError, match="callback"):
        m.fit(1, callback=3)


def test_relaxation_without_a_record_takes_the_same_steps_and_ends_in_the_same_state():
    m = _small().write(torch.randn(3, 6))
    x = torch.randn(4, 6)
    runs = []
    for record in (True, False):
        acts = [x.unsqueeze(0)] + m.init_hidden(4, 1, torch.Generator().manual_seed(3))
        acts, trace, steps, _ = m.relax(acts, None, steps=25, lr=0.05, tol=0.0, rtol=0.0, record=record)
        runs.append((torch.cat([a.squeeze(0) for a in acts], -1), trace, steps))
    (a, full, n), (b, last, n2) = runs
    assert n == n2 == 25 and full.shape == (26, 4) and last.shape == (1, 4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(last[0], full[-1], atol=0, rtol=0)


def test_relaxation_without_the_final_evaluation_ends_in_the_same_state():
    m = _small().write(torch.randn(3, 6))
    x = torch.randn(4, 6)
    ends = []
    for final in (True, False):
        acts = [x.unsqueeze(0)] + m.init_hidden(4, 1, torch.Generator().manual_seed(3))
        acts, trace, steps, converged = m.relax(acts, None, steps=9, lr=0.05, tol=0.0, rtol=0.0, record=False,
                                                final=final)
        ends.append(torch.cat([a.squeeze(0) for a in acts], -1))
        assert steps == 9 and trace.shape == ((1, 4) if final else (0, 4)) and converged.shape == (4,)
    torch.testing.assert_close(ends[0], ends[1], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["dense", "strided"])
def test_activity_adam_equals_torch_adam(dtype, layout):
    """The relaxation's Adam (torch's fused kernel for dense tensors, the written-out formula for
    strided ones, which the kernel would mis-update) against ``torch.optim.Adam`` over 6 steps."""
    from varmem.memories.predictive_coding.network import Adam

    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (4, 7)]
    params = [torch.randn(*s, generator=gen, dtype=dtype) for s in shapes]
    if layout == "strided":
        params = [torch.randn(*reversed(s), generator=gen, dtype=dtype).T for s in shapes]
    ref = [p.clone() for p in params]
    ours, theirs = Adam(params, 0.05), torch.optim.Adam(ref, lr=0.05)
    assert ours.fused == (layout == "dense" and hasattr(torch, "_fused_adam_"))
    for _ in range(6):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in params]
        ours.step(params, grads)
        for r, g in zip(ref, grads, strict=True):
            r.grad = g
        theirs.step()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p, r, atol=tol, rtol=tol)
