r"""Benchmark: varmem's predictive-coding memory against pcx and fabricpc on the same task, CPU time, one thread.

Task (the issue's protocol): MNIST digits in ``[-1, 1]``, a generative network 784-256-256 (two
hidden layers, relu pre-synaptic, no lower biases, a learned top bias), σ = 0.01, trained offline
(full batch, ``--epochs`` epochs of ``T`` Adam(0.01) relaxation steps then one SGD step with
α/σ² = 1 on the batch-mean weight gradient), then read on every stored digit with three cues:
the bottom half hidden and 50 % of the pixels dropped (``joint`` read, unknown entries start at 0)
and white noise 0.2 (``clamp_predict``), ``--read-steps`` steps each.

* **varmem**: ``PredictiveCodingMemory(training="offline", infer_tol=0)`` (every step runs),
  hand-written fused energy/gradient, in-place Adam;
* **pcx 0.6.3** (``experiments/peers/pcx_gpcn.py``, run by ``--pcx-python``, a separate
  environment: ``jax<0.5``): the same algorithm with pcx's ``Vode`` / ``EnergyModule`` / ``Optim``,
  the same initial weights, jitted, one XLA thread; its first call (compilation) is reported apart.
* **fabricpc 0.6.0** (``experiments/peers/fabricpc_gpcn.py``, run by ``--fabricpc-python``, a third
  environment: ``jax>=0.7``): fabricpc cannot run varmem's algorithm (its ``Linear`` node predicts
  from the *post-synaptic* activation, ``mu = relu(z W + b)``, with biases everywhere, Kaiming
  initialisation, no energy on the top node, SGD relaxation; plain SGD on the weights diverges), so it
  trains its own 784-256-256 relu model of the task with Adam(``--fabricpc-lr``) on the weights and
  **its own settings**: ``--fabricpc-epochs`` x ``--fabricpc-steps`` (default 2000 x 100, eta 0.03)
  and ``--fabricpc-read-steps`` (3000) -- about the fewest that reach its best recall at N = 16
  (1000 x 50 with 2000 read steps: bottom 0.94; 3000 epochs: Adam diverges; eta 0.1 or 0.05: the
  reads diverge).  ``--fabricpc-matched`` also runs it with varmem's schedule (``--epochs`` x
  ``--steps``, ``--read-steps``), where it recalls little.  Every column reports time per step, so the
  per-step speed can be compared apart from the schedules.

All are timed as CPU seconds of their process (``time.process_time``; the machine is shared, so
wall time would measure the neighbours).  Equal recall: every cue's accuracy (MSE < 0.01, scored
on the unknown entries of partial cues) differs by at most ``--recall-tol``.  ``--check`` first
runs a short training with the same random starts in varmem and pcx and compares the weights.

Environments (documented commands; no network at run time; the two JAX versions exclude each other)::

    python3.11 -m venv <venvs>/pcx && <venvs>/pcx/bin/pip install "jax<0.5" "pcx==0.6.3"
    python3.11 -m venv <venvs>/fabricpc && <venvs>/fabricpc/bin/pip install "jax>=0.7" "fabricpc==0.6.0"
    nice python experiments/bench_pc.py --pcx-python <venvs>/pcx/bin/python \
        --fabricpc-python <venvs>/fabricpc/bin/python --fabricpc-matched               # N = 16, 64
    python experiments/bench_pc.py --smoke                                        # varmem only, seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME, PNG_NAME = "bench_pc.json", "bench_pc.png"
TARGET_RATIO = 1.5
CUES = (("bottom", 0.5, "joint"), ("drop", 0.5, "joint"), ("white", 0.2, "clamp_predict"))
PEER = Path(__file__).resolve().parent / "peers" / "pcx_gpcn.py"
FABRICPC = Path(__file__).resolve().parent / "peers" / "fabricpc_gpcn.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_pc", smoke="N = 4, h = 32, 3 epochs, varmem only (seconds)", threads=1)
    p.add_argument("--items", type=int, nargs="+", default=[16, 64])
    p.add_argument("--h-dim", type=int, default=256)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--steps", type=int, default=20, help="T: relaxation steps per training epoch")
    p.add_argument("--read-steps", type=int, default=500)
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--recall-tol", type=float, default=0.1)
    p.add_argument("--pcx-python", default=None, help="python of an environment with pcx 0.6.3 (None: varmem only)")
    p.add_argument("--rtol", type=float, default=0.0,
                   help="also run varmem with this relative early stop (training and reads) against pcx's fixed T")
    p.add_argument("--check", action="store_true", help="also check that pcx reproduces varmem's weights")
    p.add_argument("--fabricpc-python", default=None,
                   help="python of an environment with fabricpc 0.6.0 (None: no fabricpc column)")
    p.add_argument("--fabricpc-epochs", type=int, default=2000, help="fabricpc's own setting (see the docstring)")
    p.add_argument("--fabricpc-steps", type=int, default=100, help="fabricpc: inference steps per training epoch")
    p.add_argument("--fabricpc-read-steps", type=int, default=3000)
    p.add_argument("--fabricpc-eta", type=float, default=0.03, help="fabricpc: InferenceSGD rate")
    p.add_argument("--fabricpc-lr", type=float, default=1e-3, help="fabricpc: Adam rate on the weights")
    p.add_argument("--fabricpc-matched", action="store_true",
                   help="also run fabricpc with varmem's epochs, steps and read steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.items, args.h_dim, args.epochs, args.steps, args.read_steps = [4], 32, 3, 5, 10
        for name, small in (("fabricpc_epochs", 3), ("fabricpc_steps", 5), ("fabricpc_read_steps", 10)):
            if getattr(args, name) == p.get_default(name):  # shrink only what was not given
                setattr(args, name, small)
    return args


def make_memory(args: argparse.Namespace, seed: int, rtol: float = 0.0) -> varmem.PredictiveCodingMemory:
    return varmem.PredictiveCodingMemory(784, n_layers=3, h_dim=args.h_dim, sigma_obs=0.01, weight_lr=1e-4,
                                         training="offline", epochs=args.epochs, T_infer=args.steps,
                                         activation_lr=0.01, infer_tol=0.0, infer_rtol=rtol, seed=seed,
                                         dtype=torch.float32)


def make_cues(items01: torch.Tensor, shape, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, str]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, level, proc in CUES:
        cue, mask = varmem.corruptions.corrupt(items01, name, level, generator=g, image_shape=shape)
        cue = torch.where(mask, cue * 2 - 1, torch.zeros((), dtype=cue.dtype))  # unknown entries start at 0
        out[f"{name}{level:g}"] = (cue, mask, proc)
    return out


def score(pattern: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, proc: str, thr: float) -> dict[str, float]:
    err = varmem.metrics.mse(pattern, target, None if proc == "clamp_predict" else mask,
                             scored="all" if proc == "clamp_predict" else "unknown")
    return {"acc": float((err < thr).double().mean()), "mse": float(err.mean())}


def run_varmem(items, cues, args, rtol: float = 0.0) -> dict[str, Any]:
    """Train and read with varmem; ``rtol > 0``: the relative early stop in training and reads."""
    m = make_memory(args, args.seed, rtol)
    t0 = time.process_time()
    with experiment.recording(m, "relax", lambda out: out[2]) as steps:
        m.write(items)
    out: dict[str, Any] = {"rtol": rtol, "train_seconds": time.process_time() - t0,
                           "train_steps_per_epoch": sum(steps) / len(steps), "reads": {}}
    for key, (cue, mask, proc) in cues.items():
        t0 = time.process_time()
        r = m.retrieve(cue, None if proc == "clamp_predict" else mask, procedure=proc, max_steps=args.read_steps,
                       tol=0, rtol=rtol, seed=args.seed)
        out["reads"][key] = {"seconds": time.process_time() - t0, "steps": int(r.steps),
                             **score(r.pattern, items, mask, proc, args.threshold)}
    return out


def matmul_floor(n: int, args: argparse.Namespace) -> float:
    """CPU seconds of only the four matrix products per training step (prediction and backward
    product of both weight layers, float32, contiguous operands), times the training steps: the
    part of the work neither implementation can avoid."""
    g = torch.Generator().manual_seed(0)
    h = args.h_dim
    a, e = torch.randn(n, h, generator=g), torch.randn(n, 784, generator=g)
    W0, W0t = torch.randn(h, 784, generator=g), torch.randn(784, h, generator=g)
    W1 = torch.randn(h, h, generator=g)
    reps = 200
    for _ in range(10):
        a @ W0
    t0 = time.process_time()
    for _ in range(reps):
        a @ W0
        e @ W0t
        a @ W1
        a @ W1
    per_step = (time.process_time() - t0) / reps
    return per_step * args.epochs * args.steps


def peer_input(m, items, cues, args, path: Path, hidden_train: np.ndarray | None = None) -> None:
    d = {f"W{i}": m.weight(i).numpy() for i in range(m.n_layers)}
    d.update(n_layers=m.n_layers, sigma=0.01, activation_lr=0.01, weight_lr=1e-4, items=items.numpy(), T=args.steps,
             T_read=args.read_steps, seed=args.seed, epochs=args.epochs, cue_names=np.array(list(cues)))
    for key, (cue, mask, proc) in cues.items():
        d[f"cue_{key}"], d[f"known_{key}"], d[f"procedure_{key}"] = cue.numpy(), mask.numpy(), proc
    if hidden_train is not None:
        d["hidden_train"] = hidden_train
    np.savez(path, **d)


def run_peer(python: str, inp: Path, out: Path, script: Path = PEER, extra: Sequence[str] = ()) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([python, str(script), "--input", str(inp), "--output", str(out), *extra], check=True, env=env)
    return dict(np.load(out, allow_pickle=False))


def check_same_algorithm(items, args, python: str, tmp: Path) -> float:
    """Two epochs from the same weights and the same random starts: the largest weight difference."""
    small = argparse.Namespace(**{**vars(args), "epochs": 2})
    m = make_memory(small, args.seed)
    before = [m.weight(i).clone() for i in range(m.n_layers)]
    g = torch.Generator().manual_seed(args.seed)  # GPCN's own generator, replayed for pcx
    starts = []
    for _ in range(2):
        hid = m.init_hidden(items.shape[0], 1, g)  # bottom-up: layer 1 … L-1
        starts.append(np.stack([h[0].numpy() for h in hid[::-1]]))  # pcx: top first
    m._generator = torch.Generator().manual_seed(args.seed)
    m.write(items)
    ref = make_memory(small, args.seed)
    for i, w in enumerate(before):
        setattr(ref, f"W{i}", w)
    peer_input(ref, items, {}, small, tmp / "check_in.npz", np.stack(starts))
    res = run_peer(python, tmp / "check_in.npz", tmp / "check_out.npz")
    return max(float(np.abs(res[f"W{i}"] - m.weight(i).numpy()).max()) for i in range(m.n_layers))


def total_seconds(res: dict[str, Any]) -> float:
    return res["train_seconds"] + sum(r["seconds"] for r in res["reads"].values())


def peer_record(res: dict[str, Any], cues, items, args, epochs: int, steps: int, read_steps: int) -> dict[str, Any]:
    """A peer's timings and recall, scored as varmem's; per-step seconds from its own schedule."""
    rec = {"train_seconds": float(res["seconds_train"]), "compile_seconds": float(res["first_call_seconds"]),
           "jax": str(res["jax_version"]), "epochs": epochs, "steps": steps, "read_steps": read_steps, "reads": {}}
    for key, (_cue, mask, proc) in cues.items():
        pat = torch.from_numpy(res[f"pattern_{key}"]).to(items.dtype)
        rec["reads"][key] = {"seconds": float(res[f"seconds_read_{key}"]),
                             **score(pat, items, mask, proc, args.threshold)}
    rec["train_ms_per_step"] = 1e3 * rec["train_seconds"] / (epochs * steps)
    rec["read_ms_per_step"] = 1e3 * sum(r["seconds"] for r in rec["reads"].values()) / (len(cues) * read_steps)
    return rec


def run_fabricpc(n: int, items, cues, args, inp: Path, tmp: Path, matched: bool) -> dict[str, Any]:
    if matched:
        e, t, r = args.epochs, args.steps, args.read_steps
    else:
        e, t, r = args.fabricpc_epochs, args.fabricpc_steps, args.fabricpc_read_steps
    extra = ["--epochs", str(e), "--steps", str(t), "--read-steps", str(r), "--eta", str(args.fabricpc_eta),
             "--lr", str(args.fabricpc_lr)]
    res = run_peer(args.fabricpc_python, inp, tmp / f"fabricpc{n}_{int(matched)}.npz", FABRICPC, extra)
    rec = peer_record(res, cues, items, args, e, t, r)
    rec.update(fabricpc=str(res["fabricpc_version"]), eta=args.fabricpc_eta, lr=args.fabricpc_lr,
               settings="varmem's schedule" if matched else "fabricpc's own")
    return rec


def run_size(n: int, data, args, tmp: Path) -> dict[str, Any]:
    items01 = data.flat()[:n]
    items = items01 * 2 - 1
    cues = make_cues(items01, data.image_shape, args.seed)
    row: dict[str, Any] = {"N": n}
    row["varmem"] = run_varmem(items, cues, args)
    v = row["varmem"]
    v["train_ms_per_step"] = 1e3 * v["train_seconds"] / (args.epochs * v["train_steps_per_epoch"])
    v["read_ms_per_step"] = 1e3 * sum(r["seconds"] for r in v["reads"].values()) / sum(
        r["steps"] for r in v["reads"].values())
    row["train_matmul_floor_seconds"] = matmul_floor(n, args)
    if args.rtol > 0:
        row["varmem_rtol"] = run_varmem(items, cues, args, args.rtol)
    if args.pcx_python or args.fabricpc_python:
        peer_input(make_memory(args, args.seed), items, cues, args, tmp / f"in{n}.npz")
    if args.fabricpc_python:
        row["fabricpc"] = run_fabricpc(n, items, cues, args, tmp / f"in{n}.npz", tmp, matched=False)
        row["fabricpc"]["ratio_over_varmem"] = total_seconds(row["fabricpc"]) / total_seconds(row["varmem"])
        if args.fabricpc_matched:
            row["fabricpc_matched"] = run_fabricpc(n, items, cues, args, tmp / f"in{n}.npz", tmp, matched=True)
            row["fabricpc_matched"]["ratio_over_varmem"] = (total_seconds(row["fabricpc_matched"])
                                                           / total_seconds(row["varmem"]))
        for k in ("fabricpc", "fabricpc_matched"):
            if k in row:
                row[k]["equal_recall"] = all(
                    abs(row["varmem"]["reads"][c]["acc"] - row[k]["reads"][c]["acc"]) <= args.recall_tol for c in cues)
    if args.pcx_python:
        res = run_peer(args.pcx_python, tmp / f"in{n}.npz", tmp / f"out{n}.npz")
        peer = peer_record(res, cues, items, args, args.epochs, args.steps, args.read_steps)
        row["pcx"] = peer
        v_total = row["varmem"]["train_seconds"] + sum(r["seconds"] for r in row["varmem"]["reads"].values())
        p_total = peer["train_seconds"] + sum(r["seconds"] for r in peer["reads"].values())
        row["ratio_pcx_over_varmem"] = p_total / v_total
        row["ratio_train"] = peer["train_seconds"] / row["varmem"]["train_seconds"]
        row["equal_recall"] = all(abs(row["varmem"]["reads"][k]["acc"] - peer["reads"][k]["acc"]) <= args.recall_tol
                                  for k in cues)
        if "varmem_rtol" in row:
            fast = row["varmem_rtol"]
            f_total = fast["train_seconds"] + sum(r["seconds"] for r in fast["reads"].values())
            row["ratio_pcx_over_varmem_rtol"] = p_total / f_total
            row["equal_recall_rtol"] = all(abs(fast["reads"][k]["acc"] - peer["reads"][k]["acc"]) <= args.recall_tol
                                           for k in cues)
    return row


COLUMNS = (("varmem", "varmem"), ("pcx", "pcx 0.6.3"), ("fabricpc", "fabricpc 0.6.0, own settings"),
           ("fabricpc_matched", "fabricpc 0.6.0, varmem's schedule"))


def plot(rows, path) -> None:
    fig, ax = experiment.subplots(1, 1, figsize=(7, 4))
    cols = [(k, lab) for k, lab in COLUMNS if any(k in r for r in rows)]
    xs = np.arange(len(rows))
    w = 0.8 / len(cols)
    for j, (k, lab) in enumerate(cols):
        ys = [total_seconds(r[k]) if k in r else float("nan") for r in rows]
        ax.bar(xs - 0.4 + w * (j + 0.5), ys, w, label=lab)
    ax.set_xticks(xs, [f"N={r['N']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("CPU seconds, 1 thread (train + 3 reads; compile apart)")
    ax.set_title("PC memory 784-256-256 on MNIST")
    ax.legend(fontsize=8)
    experiment.save_figure(fig, path)


def table(r: dict[str, Any]) -> str:
    """One size's results, every implementation side by side (each with the settings it ran with)."""
    cols = [(k, lab) for k, lab in COLUMNS if k in r]
    lines = [[f"N = {r['N']}"] + [lab for _, lab in cols]]

    def sched(x):
        if "epochs" in x:
            return f"{x['epochs']} x {x['steps']}, read {x['read_steps']}"
        return f"{r['_epochs']} x {x['train_steps_per_epoch']:g}, read {max(v['steps'] for v in x['reads'].values())}"

    lines.append(["epochs x steps, read steps"] + [sched(r[k]) for k, _ in cols])
    lines.append(["train CPU s"] + [f"{r[k]['train_seconds']:.2f}" for k, _ in cols])
    lines.append(["compile s (apart)"] + [f"{r[k]['compile_seconds']:.1f}" if "compile_seconds" in r[k] else "-"
                                          for k, _ in cols])
    lines.append(["ms / train step"] + [f"{r[k]['train_ms_per_step']:.3f}" for k, _ in cols])
    lines.append(["ms / read step"] + [f"{r[k]['read_ms_per_step']:.3f}" for k, _ in cols])
    for c in r["varmem"]["reads"]:
        lines.append([f"{c} acc / mse / s"] + [
            f"{r[k]['reads'][c]['acc']:.2f} / {r[k]['reads'][c]['mse']:.4f} / {r[k]['reads'][c]['seconds']:.2f}"
            for k, _ in cols])
    lines.append(["total CPU s (train + reads)"] + [f"{total_seconds(r[k]):.2f}" for k, _ in cols])
    lines.append(["x varmem's time"] + ["1.00"] + [f"{total_seconds(r[k]) / total_seconds(r['varmem']):.2f}"
                                                    for k, _ in cols[1:]])
    lines.append(["equal recall"] + ["-"] + [str(r["equal_recall"] if k == "pcx" else r[k]["equal_recall"])
                                             for k, _ in cols[1:]])
    widths = [max(len(line[j]) for line in lines) for j in range(len(lines[0]))]
    return "\n".join(" | ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) for line in lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    data = varmem.datasets.load_mnist(dtype=torch.float32)
    result: dict[str, Any] = {"benchmark": "predictive coding: varmem GPCN vs pcx and fabricpc",
                              **experiment.record(args),
                              "settings": experiment.settings(args), "target_ratio": TARGET_RATIO}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.check and args.pcx_python:
            result["check_max_weight_difference"] = check_same_algorithm(data.flat()[:4] * 2 - 1, args,
                                                                         args.pcx_python, tmp)
        rows = [run_size(n, data, args, tmp) for n in tqdm(args.items, desc="bench_pc sizes")]
    result["rows"] = rows
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda p: plot(rows, p)})
    if "check_max_weight_difference" in result:
        print(f"same algorithm: largest weight difference after 2 epochs = {result['check_max_weight_difference']:.2e}")
    for r in rows:
        print("\n" + table({**r, "_epochs": args.epochs}))
        print(f"  (varmem training: the four matrix products alone take {r['train_matmul_floor_seconds']:.2f} s)")
        if "varmem_rtol" in r:
            f = r["varmem_rtol"]
            print(f"  varmem rtol={f['rtol']:g}: train {f['train_seconds']:.2f} s, "
                  f"{f['train_steps_per_epoch']:.1f} steps/epoch; " + "; ".join(
                      f"{k} acc {v['acc']:.3f} mse {v['mse']:.4f} {v['steps']} steps" for k, v in f["reads"].items()))
        if "pcx" in r:
            print(f"  pcx/varmem CPU time: {r['ratio_pcx_over_varmem']:.2f}x (train {r['ratio_train']:.2f}x); "
                  f"equal recall: {r['equal_recall']}")
            if "ratio_pcx_over_varmem_rtol" in r:
                print(f"  pcx/varmem(rtol) CPU time: {r['ratio_pcx_over_varmem_rtol']:.2f}x; "
                      f"equal recall: {r['equal_recall_rtol']}")
    if any("fabricpc" in r for r in rows):
        print("\nfabricpc cannot run varmem's algorithm (post-synaptic activations, biases, Kaiming weights, no top"
              "\nprior; SGD on the weights diverges): its column uses its own settings (Adam on the weights, its own"
              "\nepochs, steps and read steps); compare its ms per step for speed and its recall for the schedule.")
    print(experiment.wrote(written))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main() and 0)
