"""varmem's GPCN algorithm written with pcx 0.6.3 (run in its own environment; see bench_pc.py).

Reads ``--input`` (an ``.npz`` written by ``experiments/bench_pc.py``: initial weights in varmem's
layout, items, cues, masks, settings), trains and reads with pcx, and writes ``--output`` (an
``.npz`` with the recalled patterns and the first-call (compile) and second-call seconds).

Model (top-down, as varmem's ``PredictiveCodingMemory``): top node ``u = b`` (a learned bias), hidden
nodes ``u = relu(h_above) W``, sensory ``u = relu(h_1) W_0``; no lower biases; every node's energy
is ``½‖h − u‖² / σ²``.  Training per epoch: hidden nodes start at ``h^{-1/2} N(0, 1)``, ``T``
Adam(lr) steps on them with the sensory node clamped, then one SGD(``α``) step on the batch-mean
weight gradient.  Reads: ``joint`` (unknown sensory entries and hidden nodes relaxed together, known
entries reset after each step) and ``clamp_predict`` (hidden nodes relaxed with the cue clamped, then
the sensory prediction).  Timing: CPU time of the process (``time.process_time``), one thread
(``XLA_FLAGS`` set before importing jax); each jitted function is run once to compile (reported
apart), then the whole run is timed again from the same initial state.  ``hidden_train`` in the
input (optional) gives the training starts of the hidden nodes (then the run is varmem's exactly).
"""

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pcx.functional as pxf  # noqa: E402
import pcx.nn as pxnn  # noqa: E402
import pcx.predictive_coding as pxc  # noqa: E402
import pcx.utils as pxu  # noqa: E402


class GPCN(pxc.EnergyModule):
    def __init__(self, D: int, h: int, n_hidden: int, sigma: float) -> None:
        super().__init__()
        inv = 1.0 / sigma**2

        def energy(vode, rkg=None):
            e = vode.get("h") - vode.get("u")
            return 0.5 * inv * (e * e)

        self.b = pxnn.LayerParam(jnp.zeros((h,)))
        self.layers = [pxnn.Linear(h, h, bias=False) for _ in range(n_hidden - 1)] + [pxnn.Linear(h, D, bias=False)]
        self.vodes = [pxc.Vode(energy_fn=energy) for _ in range(n_hidden)] + [pxc.Vode(energy_fn=energy)]
        self.vodes[-1].h.frozen = True

    def __call__(self, y=None):
        x = self.vodes[0](self.b.get())
        for i, layer in enumerate(self.layers):
            x = self.vodes[i + 1](layer(jax.nn.relu(x)))
        if y is not None:
            self.vodes[-1].set("h", y)
        return self.vodes[-1].get("u")


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=0, out_axes=0)
def forward(y, *, model):
    return model(y)


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), out_axes=(None, 0), axis_name="batch")
def energy(*, model):
    y_ = model(None)
    return jax.lax.psum(model.energy(), "batch"), y_


def _set_hidden(model, hidden):
    for v, h in zip(model.vodes[:-1], hidden, strict=True):
        v.h.set(h)


def _relax(model, optim_h, T, known=None, cue=None):
    step = pxf.value_and_grad(pxu.M_hasnot(pxc.VodeParam, frozen=True).to([False, True]), has_aux=True)(energy)
    optim_h.init(pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))

    def body(i, carry, *, model, optim_h):
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            (_, _), g = step(model=model)
        optim_h.step(model, g["model"])
        if known is not None:
            model.vodes[-1].h.set(jnp.where(known, cue, model.vodes[-1].h.get()))
        return carry, None

    pxf.scan(body, xs=jnp.arange(T))(0, model=model, optim_h=optim_h)
    optim_h.clear()


@pxf.jit(static_argnums=0)
def train_epoch(T, y, hidden, *, model, optim_w, optim_h):
    model.train()
    model.vodes[-1].h.frozen = True
    with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
        forward(y, model=model)
    _set_hidden(model, hidden)
    _relax(model, optim_h, T)
    learn = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)
    with pxu.step(model, clear_params=pxc.VodeParam.Cache):
        (e, _), g = learn(model=model)
    optim_w.step(model, g["model"], scale_by=1.0 / y.shape[0])
    return e


@pxf.jit(static_argnums=0)
def read_joint(T, cue, known, hidden, *, model, optim_h):
    model.eval()
    with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
        forward(cue, model=model)
    _set_hidden(model, hidden)
    model.vodes[-1].h.frozen = False
    _relax(model, optim_h, T, known, cue)
    model.vodes[-1].h.frozen = True
    return jnp.where(known, cue, model.vodes[-1].h.get())


@pxf.jit(static_argnums=0)
def read_clamp_predict(T, cue, hidden, *, model, optim_h):
    model.eval()
    model.vodes[-1].h.frozen = True
    with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
        forward(cue, model=model)
    _set_hidden(model, hidden)
    _relax(model, optim_h, T)
    with pxu.step(model, clear_params=pxc.VodeParam.Cache):
        _, pred = energy(model=model)
    return pred


def build(data):
    """The model and optimisers (built once: the jitted functions are traced for these objects)."""
    W0 = data["W0"]
    D, h = W0.shape[1], W0.shape[0]
    model = GPCN(D, h, int(data["n_layers"]) - 1, float(data["sigma"]))
    with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
        forward(jnp.zeros((int(data["items"].shape[0]), D)), model=model)
    lr = float(data["activation_lr"])
    optim_h = pxu.Optim(lambda: optax.adam(lr), pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))
    optim_w = pxu.Optim(lambda: optax.sgd(float(data["weight_lr"])), pxu.M(pxnn.LayerParam)(model))
    return model, optim_h, optim_w


def reset(model, optim_w, data) -> None:
    """The initial weights (varmem layout ``[d_in, d_out]``, ``W_{L-1}`` the top bias)."""
    W = [data[f"W{i}"] for i in range(int(data["n_layers"]))]
    model.b.set(jnp.asarray(W[-1][0]))
    for j, layer in enumerate(model.layers):  # layers top-down: W_{L-2} … W_0, equinox layout [out, in]
        layer.nn.weight.set(jnp.asarray(W[len(W) - 2 - j].T))
    # optim_w (plain SGD) has no state to reset; calling its init would also make a new optax object
    # and so force every jitted function to be traced again


def hidden_init(key, B, n_hidden, h):
    keys = jax.random.split(key, n_hidden)
    return [jax.random.normal(k, (B, h)) / np.sqrt(h) for k in keys]


def run(data, epochs: int, model, optim_h, optim_w):
    """Train for ``epochs`` from the initial weights and read every cue set; returns the patterns,
    the CPU seconds per phase and the trained weights."""
    reset(model, optim_w, data)
    items = jnp.asarray(data["items"])
    B, h = items.shape[0], data["W0"].shape[0]
    nh = int(data["n_layers"]) - 1
    T, T_read = int(data["T"]), int(data["T_read"])
    key = jax.random.PRNGKey(int(data["seed"]))
    seconds = {}
    given = data.get("hidden_train")  # [epochs, n_hidden, B, h] top first: the same starts as varmem
    t0 = time.process_time()
    for ep in range(epochs):
        key, sub = jax.random.split(key)
        hid = hidden_init(sub, B, nh, h) if given is None else [jnp.asarray(a) for a in given[ep]]
        e = train_epoch(T, items, hid, model=model, optim_w=optim_w, optim_h=optim_h)
    jax.block_until_ready(e)
    seconds["train"] = time.process_time() - t0
    out = {}
    for name in [str(n) for n in data["cue_names"]]:
        cue = jnp.asarray(data[f"cue_{name}"])
        known = jnp.asarray(data[f"known_{name}"])
        key, sub = jax.random.split(key)
        hid = hidden_init(sub, cue.shape[0], nh, h)
        t0 = time.process_time()
        if str(data[f"procedure_{name}"]) == "joint":
            pat = read_joint(T_read, cue, known, hid, model=model, optim_h=optim_h)
        else:
            pat = read_clamp_predict(T_read, cue, hid, model=model, optim_h=optim_h)
        pat = jax.block_until_ready(pat)
        seconds[f"read_{name}"] = time.process_time() - t0
        out[name] = np.asarray(pat)
    weights = [np.asarray(layer.nn.weight.get()).T for layer in model.layers[::-1]] + [np.asarray(model.b.get())[None]]
    return out, seconds, weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    args = p.parse_args()
    data = dict(np.load(args.input, allow_pickle=False))
    epochs = int(data["epochs"])
    t0 = time.process_time()
    objects = build(data)
    for _ in range(2):  # compiles every jitted function for every state it is called in (train / eval modes)
        run(data, 2, *objects)
    first = time.process_time() - t0
    patterns, seconds, weights = run(data, epochs, *objects)
    np.savez(args.output, first_call_seconds=first, jax_version=jax.__version__,
             **{f"seconds_{k}": v for k, v in seconds.items()}, **{f"pattern_{k}": v for k, v in patterns.items()},
             **{f"W{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main()
