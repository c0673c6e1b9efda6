"""A 784-256-256 relu generative PC network with fabricpc 0.6.0 (run in its own environment; see
bench_pc.py).

Reads ``--input`` (the ``.npz`` that ``experiments/bench_pc.py`` writes for pcx: items in ``[-1, 1]``,
cues, masks, procedures, seed) and ``--epochs/--steps/--read-steps/--eta/--lr`` (fabricpc's own
settings), trains and reads with fabricpc's public API, and writes ``--output`` (an ``.npz`` with the
recalled patterns, the first-call (compile) seconds and the CPU seconds of each phase).

fabricpc cannot run varmem's algorithm as it stands, so this is fabricpc's own model of the task:

* graph ``top (256, source) -> hidden (256, relu) -> image (784, identity)``; ``fabricpc.nodes.Linear``
  computes the prediction from the *post-synaptic* activation of its input node,
  ``mu = act(z_in W + b)`` (varmem and pcx: ``mu = relu(h_in) W``), with a bias in every node, Kaiming
  weights and no energy on the source node (no top prior);
* energy ``½ precision ‖z − mu‖²`` (``GaussianEnergy``, precision 1: fabricpc's default);
* training: ``make_train_step`` on the full batch (image node clamped through ``TaskMap(y=image)``),
  ``InferenceSGD(eta, steps)`` on the latents from ``FeedforwardStateInit``, then one
  ``optax.adam(lr)`` step on the weights (fabricpc's mean-per-prediction gradient).  Plain SGD on
  the weights (varmem's α/σ² = 1, or 0.1) diverges with this parameterisation;
* reads start from the same cues as varmem (unknown entries at 0, top and hidden from fabricpc's
  feed-forward initialiser) and run ``InferenceSGD.inference_step`` ``read_steps`` times: ``joint``
  relaxes the image node too and resets the known entries after every step; ``clamp_predict`` clamps
  the image node to the cue and returns the image node's prediction ``mu`` after relaxation.

Timing: CPU time of the process (``time.process_time``) with one XLA thread (``XLA_FLAGS`` set before
importing jax, as for pcx); every jitted function is called once first (compile, reported apart).
"""

import argparse
import functools
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import fabricpc  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from fabricpc.core.activations import ReLUActivation  # noqa: E402
from fabricpc.core.inference import InferenceSGD  # noqa: E402
from fabricpc.core.state_ops import update_node_in_state  # noqa: E402
from fabricpc.core.topology import Edge  # noqa: E402
from fabricpc.graph_assembly import TaskMap, graph  # noqa: E402
from fabricpc.graph_initialization import initialize_params  # noqa: E402
from fabricpc.graph_initialization.state_initializer import initialize_graph_state  # noqa: E402
from fabricpc.nodes import Linear  # noqa: E402
from fabricpc.training import make_train_step  # noqa: E402


def build(D: int, h: int, eta: float, steps: int):
    top = Linear(shape=(h,), name="top")
    hidden = Linear(shape=(h,), name="hidden", activation=ReLUActivation())
    image = Linear(shape=(D,), name="image")
    return graph(nodes=[top, hidden, image],
                 edges=[Edge(source=top, target=hidden.slot("in")), Edge(source=hidden, target=image.slot("in"))],
                 task_map=TaskMap(y=image), inference=InferenceSGD(eta_infer=eta, infer_steps=steps))


def make_reads(structure, eta: float):
    solver = structure.config["inference"]
    cfg = {**solver.config, "eta_infer": eta}
    step = type(solver).inference_step

    @functools.partial(jax.jit, static_argnums=0)
    def read_joint(T, params, cue, known, key):
        state = initialize_graph_state(structure, cue.shape[0], key, clamps={}, params=params)
        state = update_node_in_state(state, "image", z_latent=cue)

        def body(_, s):
            s = step(params, s, {}, structure, cfg)
            return update_node_in_state(s, "image", z_latent=jnp.where(known, cue, s.nodes["image"].z_latent))

        state = jax.lax.fori_loop(0, T, body, state)
        return jnp.where(known, cue, state.nodes["image"].z_latent)

    @functools.partial(jax.jit, static_argnums=0)
    def read_clamp_predict(T, params, cue, key):
        clamps = {"image": cue}
        state = initialize_graph_state(structure, cue.shape[0], key, clamps=clamps, params=params)
        state = jax.lax.fori_loop(0, T, lambda _, s: step(params, s, clamps, structure, cfg), state)
        state = type(solver).forward_value_and_grad(params, state, clamps, structure)  # mu after the last update
        return state.nodes["image"].z_mu

    return read_joint, read_clamp_predict


def run(data, args, structure, train_step, reads, epochs: int):
    items = jnp.asarray(data["items"])
    key = jax.random.PRNGKey(int(data["seed"]))
    key, sub = jax.random.split(key)
    params = initialize_params(structure, sub)
    opt = optax.adam(args.lr)
    opt_state = opt.init(params)
    seconds, out = {}, {}
    energy = jnp.zeros(())
    t0 = time.process_time()
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        params, opt_state, metrics, _ = train_step(params, opt_state, {"y": items}, sub)
        energy = metrics["energy"]
    jax.block_until_ready((params, energy))
    seconds["train"] = time.process_time() - t0
    read_joint, read_clamp_predict = reads
    for name in [str(n) for n in data["cue_names"]]:
        cue, known = jnp.asarray(data[f"cue_{name}"]), jnp.asarray(data[f"known_{name}"])
        key, sub = jax.random.split(key)
        t0 = time.process_time()
        if str(data[f"procedure_{name}"]) == "joint":
            pat = read_joint(args.read_steps, params, cue, known, sub)
        else:
            pat = read_clamp_predict(args.read_steps, params, cue, sub)
        out[name] = np.asarray(jax.block_until_ready(pat))
        seconds[f"read_{name}"] = time.process_time() - t0
    return out, seconds, float(energy)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20, help="inference steps per training batch")
    p.add_argument("--read-steps", type=int, default=500)
    p.add_argument("--eta", type=float, default=0.1, help="InferenceSGD eta_infer (training and reads)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate on the weights")
    args = p.parse_args()
    data = dict(np.load(args.input, allow_pickle=False))
    D, h = data["items"].shape[1], data["W0"].shape[0]
    t0 = time.process_time()
    structure = build(D, h, args.eta, args.steps)
    train_step = make_train_step(structure, optax.adam(args.lr))
    reads = make_reads(structure, args.eta)
    run(data, args, structure, train_step, reads, 1)  # compiles every jitted function
    first = time.process_time() - t0
    patterns, seconds, energy = run(data, args, structure, train_step, reads, args.epochs)
    np.savez(args.output, first_call_seconds=first, jax_version=jax.__version__, fabricpc_version=fabricpc.__version__,
             final_energy=energy, epochs=args.epochs, steps=args.steps, read_steps=args.read_steps, eta=args.eta,
             lr=args.lr, **{f"seconds_{k}": v for k, v in seconds.items()},
             **{f"pattern_{k}": v for k, v in patterns.items()})


if __name__ == "__main__":
    main()
