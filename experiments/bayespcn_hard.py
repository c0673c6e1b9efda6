"""BayesPCN's early stop on the hard protocol: varmem's rules against the official code itself.

Task (camera-ready network, ``sweeps_camera/sweep_seq*.yaml`` of ``plai-group/bayes-pcn``): MNIST
digits in ``[-1, 1]``, L = 4 activity layers, h = 256, relu, σ_W = 1, σ = σ_data = 0.01, one particle,
one item per write, Adam 0.01, at most T = 500 steps per relaxation; N = 16 and 64 items written one
at a time and all read back in one batch per corruption.  Cues (applied in ``[0, 1]`` before the
scaling, as the official code does; hidden pixels hold -1, white 0.8 is 1.6 in model units): the
hard protocol, 75 % right-most columns masked (``mask0.75``) and white noise 0.8 (``white0.8``), and
the headline cues ``mask0.25`` and ``white0.2``.  Recall: per image the MSE over the scored pixels
(the hidden ones for a mask, all for white noise; ``[-1, 1]`` units) and the accuracy at MSE < 0.01
(the official ``score.py`` threshold).  Speed: mean Adam steps per write, steps per read batch (the
largest over its cues: a batch runs until its last cue stops), wall and CPU seconds (one thread;
CPU seconds are the comparable ones on a shared machine).

Columns:

* ``official_code``: the official code itself (``experiments/peers/bayespcn_official.py``, run by
  ``--official-python`` with ``--official-code`` on ``PYTHONPATH``) from varmem's initial weight means,
  on the same items and cues; its own stop rule (``|ΔF| ≤ 1e-3`` of every cue of the batch), its
  random activity starts, unknown pixels starting at -1, white-noise reads relaxing the hidden layers
  then the pixels (≤ 500 steps each).
* varmem, one memory written and read per rule (unknown pixels start at the read default 0, except
  the ``*_start-1`` rows, which start them at -1 as the official code does):

  - ``official``: ``infer_tol = 1e-3, infer_rtol = 0`` (the official rule);
  - ``none``: no early stop (all T steps);
  - ``rtol<r>``: the one-step relative rule ``|ΔE| ≤ r·|E|`` per cue, sticky (with the absolute
    rule too; ``rtol1e-6`` was the default before this measurement);
  - ``rtol<r>_w<W>``: the relative rule on the mean energy of blocks of ``W`` steps
    (``infer_window = W``: stop once the mean fell by at most ``r·|E|`` per step since the block
    before; see ``varmem.memories.predictive_coding.stop_rule.StopRule``; ``rtol1e-5_w100`` is
    the default it picked).

Measured (one thread, shared 2-core machine; mean over seeds; in brackets the accuracy difference
paired by seed against varmem's official-rule column, ± its standard error)::

    N   seeds  column           write steps, CPU s   mask0.75 acc / MSE         white0.2 acc
    16  0-2    official code    431   12.9           0.500 / 0.096              1.000
    16  0-2    official rule    433    3.0           0.500 / 0.067 (start -1: 0.500 / 0.095)
    16  3-10   official rule    445    3.1           0.492 / 0.070              1.000
    16  3-10   default (w100)   332    2.4           0.492 / 0.070 (+0.000 ± 0.021)   1.000
    16  0-10   rtol1e-6         402    2.8           (-0.011 ± 0.019)           1.000
    16  0-10   rtol1e-5_w25     145    1.0           (-0.057 ± 0.016)           1.000
    16  0-10   rtol1e-5_w50     218    1.5           (-0.028 ± 0.016)           1.000
    32  0-2    official code    451   26.5           0.198 / 0.155              0.969
    32  0-2    official rule    458    6.2           0.125 / 0.100 (start -1: 0.167 / 0.163)   0.958
    32  3-10   official rule    463    6.5           0.109 / 0.103              0.984
    32  3-10   default (w100)   343    5.0           0.098 / 0.104 (-0.012 ± 0.012)   0.980 (-0.004 ± 0.004)
    32  3-10   none             500    5.9           0.094 / 0.102 (-0.016 ± 0.013)   0.980
    64  0-2    official code    471   52.5           0.021 / 0.299              0.146
    64  0-5    official rule    474   12.5           0.000 / 0.191 (start -1: 0.021 / 0.301)   0.135
    64  0-5    default (w100)   360    9.9           0.000 / 0.190              0.128 (-0.008 ± 0.011)

White 0.8 has accuracy 0 in every column (MSE 0.05 / 0.09 / 0.17 at N = 16 / 32 / 64 for every
varmem rule, 0.07 / 0.11 / 0.19 for the official code); mask 0.25 has accuracy 1 everywhere.
Reads of masked cues run all 500 steps under every rule (the batch still descends); the default
shortens white-noise reads a little (white 0.2: 450–483 steps).  The commands::

    python experiments/bayespcn_hard.py --repeats 3 --official-python P --official-code C \\
        --rules official none rtol1e-6 rtol1e-5_w25 rtol1e-5_w50 rtol1e-4_w50
    python experiments/bayespcn_hard.py --items 16 32 --repeats 8 --seed 3 \\
        --rules official none rtol1e-6 rtol1e-5_w25 rtol1e-5_w50
    python experiments/bayespcn_hard.py --items 64 --repeats 3 --seed 3 \\
        --rules official rtol1e-6 rtol1e-5_w25 rtol1e-5_w50
    python experiments/bayespcn_hard.py --items 32 --repeats 3 --official-python P --official-code C \\
        --rules official rtol1e-6 rtol1e-5_w50
    python experiments/bayespcn_hard.py --items 16 32 --repeats 8 --seed 3 --rules official rtol1e-5_w100
    python experiments/bayespcn_hard.py --items 64 --repeats 6 --rules official rtol1e-5_w100

Commands (the official code in its own folder, the varmem venv's python has torch and pyro)::

    # once: the official code's snapshot (commit 89fb7a3 here), unpacked outside the repository
    git --git-dir=<mirror of plai-group/bayes-pcn> archive HEAD | tar -x -C <dir>/bayes-pcn
    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/bayespcn_hard.py \\
        --official-python "$(which python)" --official-code <dir>/bayes-pcn
    python experiments/bayespcn_hard.py --smoke     # seconds, varmem only (used by the tests)

The official code runs unpatched (``trainer.py`` / ``util.py`` need wandb and torchvision, so the
peer imports only ``bayes_pcn.pcnet`` and scores on this side with the same formula as its
``trainer.score``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME, PNG_NAME = "bayespcn_hard.json", "bayespcn_hard.png"
PEER = Path(__file__).resolve().parent / "peers" / "bayespcn_official.py"
CUES = (("mask", 0.75), ("white", 0.8), ("mask", 0.25), ("white", 0.2))
# name -> (infer_tol, infer_rtol, infer_window)
RULES: dict[str, tuple[float, float, int]] = {
    "official": (1e-3, 0.0, 1), "none": (0.0, 0.0, 1), "rtol1e-6": (1e-3, 1e-6, 1),
    "rtol1e-5_w25": (1e-3, 1e-5, 25), "rtol1e-5_w50": (1e-3, 1e-5, 50), "rtol1e-5_w100": (1e-3, 1e-5, 100),
}
"""The rules run by default: the official one, none, the previous default (one-step, 1e-6) and
windowed candidates; ``rtol1e-5_w100`` is BayesPCN's default now."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bayespcn_hard", smoke="N = 4, h = 32, T = 40, varmem only (seconds)", threads=1)
    p.add_argument("--items", type=int, nargs="+", default=[16, 64])
    p.add_argument("--h-dim", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=1, help="seeds seed, seed+1, …: initial weights, activity "
                   "starts and noise (the items stay the first N digits); the summary averages over them")
    p.add_argument("--rules", nargs="+", default=list(RULES), help=f"varmem rules among {list(RULES)} or "
                   "rtol<r>[_w<W>] (e.g. rtol1e-5_w50)")
    p.add_argument("--official-python", default=None, help="python of the official code's environment (omit: skip)")
    p.add_argument("--official-code", default=None, help="folder of the official code (put on PYTHONPATH)")
    args = p.parse_args(argv)
    if args.smoke:
        args.items, args.h_dim, args.steps = [4], 32, 40
    for r in args.rules:
        rule_spec(r)
    return args


def rule_spec(name: str) -> tuple[float, float, int]:
    """``(infer_tol, infer_rtol, infer_window)`` of a rule name (``RULES`` or ``rtol<r>[_w<W>]``)."""
    if name in RULES:
        return RULES[name]
    try:
        head, _, window = name.partition("_w")
        return 1e-3, float(head.removeprefix("rtol")), int(window) if window else 1
    except ValueError:
        raise SystemExit(f"unknown rule {name!r}: one of {list(RULES)} or rtol<r>[_w<W>]") from None


def make_cues(items01: torch.Tensor, shape, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``name -> (cue in [-1, 1], mask or None)``: corrupted in ``[0, 1]``, then scaled."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, level in CUES:
        cue, mask = varmem.corruptions.corrupt(items01, name, level, generator=g, image_shape=shape)
        out[f"{name}{level:g}"] = (cue * 2 - 1, None if name == "white" else mask)
    return out


def score(pattern: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, thr: float) -> dict[str, float]:
    """The official ``trainer.score``: per image the mean squared error over the pixels not fixed
    (all of them for a full cue), accuracy = fraction of images with MSE < ``thr``."""
    err = varmem.metrics.mse(pattern, target, mask, scored="all" if mask is None else "unknown")
    return {"acc": float((err < thr).double().mean()), "mse": float(err.mean())}


def new_memory(dim: int, args: argparse.Namespace, rule: tuple[float, float, int]) -> varmem.BayesPCN:
    tol, rtol, window = rule
    return varmem.BayesPCN(dim, n_layers=4, h_dim=args.h_dim, sigma_obs=0.01, sigma_data=0.01, T_infer=args.steps,
                           activation_lr=0.01, infer_tol=tol, infer_rtol=rtol, infer_window=window, seed=args.seed,
                           dtype=torch.float32)


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = clocks()
    return {"seconds": wall - start[0], "cpu_seconds": cpu - start[1]}


def run_varmem(items: torch.Tensor, cues, args: argparse.Namespace, name: str) -> dict[str, Any]:
    m = new_memory(items.shape[1], args, rule_spec(name))
    t = clocks()
    with experiment.recording(m, "relax", lambda out: out[2]) as steps:
        m.write(items)
    row: dict[str, Any] = {"write": {**since(t), "steps": sum(steps) / len(steps)}, "reads": {}}
    starts = [("", "zero")] + ([("_start-1", -1.0)] if name == "official" else [])
    for suffix, start in starts:
        for key, (cue, mask) in cues.items():
            t = clocks()
            r = m.retrieve(cue, mask, method="pc", seed=args.seed, start=start)
            row["reads"][key + suffix] = {**score(r.pattern, items, mask, args.threshold), **since(t),
                                          "steps": int(r.steps)}
    return row


def run_official(items: torch.Tensor, cues, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ref = new_memory(items.shape[1], args, RULES["official"])
    L = ref.n_layers
    arrays: dict[str, np.ndarray] = {"items": items.numpy(), "cue_names": np.array(list(cues))}
    for i in range(L - 1):
        arrays[f"R{i}"] = ref.initial_mean(i)[0].float().numpy()
    arrays["top"] = ref.initial_mean(L - 1)[0, 0].float().numpy()
    for key, (cue, mask) in cues.items():
        arrays[f"cue_{key}"] = cue.numpy()
        if mask is not None:
            arrays[f"fixed_{key}"] = mask.numpy()
    arrays["settings"] = np.array(json.dumps({
        "n_layers": L, "h_dim": args.h_dim, "sigma_prior": 1.0, "sigma_obs": 0.01, "sigma_data": 0.01,
        "T_infer": args.steps, "activation_lr": 0.01, "seed": args.seed}))
    inp, out = tmp / f"official_in{len(items)}.npz", tmp / f"official_out{len(items)}.json"
    np.savez(inp, **arrays)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.official_code:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.official_code, env.get("PYTHONPATH")) if p)
    subprocess.run([args.official_python, str(PEER), "--input", str(inp), "--output", str(out)], check=True, env=env)
    res = json.loads(out.read_text())
    row: dict[str, Any] = {"write": {"seconds": res["write_seconds"], "cpu_seconds": res["write_cpu_seconds"],
                                     "steps": res["write_steps"]}, "reads": {}, "torch": res["torch"]}
    for key, (_cue, mask) in cues.items():
        r = res["reads"][key]
        pattern = torch.tensor(r["pattern"], dtype=items.dtype)
        row["reads"][key] = {**score(pattern, items, mask, args.threshold), "seconds": r["seconds"],
                             "cpu_seconds": r["cpu_seconds"], "steps": r["steps"]}
    return row


def speedups(rows: dict[str, Any], base: str = "official") -> dict[str, dict[str, float]]:
    """Per rule: ``base``'s steps and CPU seconds over the rule's (> 1: the rule is faster), for the
    writes and every read."""
    b = rows[base]
    out = {}
    for name, r in rows.items():
        if name == "official_code":
            continue
        s = {"write_steps": b["write"]["steps"] / r["write"]["steps"],
             "write_cpu": b["write"]["cpu_seconds"] / r["write"]["cpu_seconds"]}
        for k, v in r["reads"].items():
            if k in b["reads"]:
                s[f"{k}_steps"] = b["reads"][k]["steps"] / max(v["steps"], 1)
                s[f"{k}_cpu"] = b["reads"][k]["cpu_seconds"] / v["cpu_seconds"]
        out[name] = s
    return out


def summarise(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ``N`` and rule: accuracy, MSE, steps and CPU seconds averaged over the seeds, and the
    accuracy's range over them."""
    out = []
    for n in sorted({s["N"] for s in sizes}):
        runs = [s for s in sizes if s["N"] == n]
        rows = {}
        for name in runs[0]["rows"]:
            rs = [s["rows"][name] for s in runs]
            row = {"write": {k: float(np.mean([r["write"][k] for r in rs])) for k in ("steps", "cpu_seconds")},
                   "reads": {}}
            for key in rs[0]["reads"]:
                v = [r["reads"][key] for r in rs]
                row["reads"][key] = {k: float(np.mean([x[k] for x in v]))
                                     for k in ("acc", "mse", "steps", "cpu_seconds")}
                row["reads"][key]["acc_range"] = [min(x["acc"] for x in v), max(x["acc"] for x in v)]
            rows[name] = row
        out.append({"N": n, "seeds": [s["seed"] for s in runs], "rows": rows,
                    "speedup_vs_official": speedups(rows) if "official" in rows else {}})
    return out


def plot(sizes: list[dict[str, Any]], path) -> None:
    """Accuracy (bars: mean over seeds, whiskers: their range) and MSE per cue, one column per N."""
    fig, axes = experiment.subplots(2, len(sizes), figsize=(6.5 * len(sizes), 9.0), squeeze=False)
    keys = [f"{n}{lv:g}" for n, lv in CUES]
    for col, size in enumerate(sizes):
        names = list(size["rows"])
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            r = size["rows"][name]
            xs = [i + j * width for i in range(len(keys))]
            acc = [r["reads"][k]["acc"] for k in keys]
            lo = [a - r["reads"][k]["acc_range"][0] for a, k in zip(acc, keys, strict=True)]
            hi = [r["reads"][k]["acc_range"][1] - a for a, k in zip(acc, keys, strict=True)]
            label = f"{name}: write {r['write']['steps']:.0f} steps, {r['write']['cpu_seconds']:.1f} s CPU"
            axes[0, col].bar(xs, acc, width, yerr=[lo, hi], color=f"C{j}", capsize=2)
            axes[1, col].bar(xs, [r["reads"][k]["mse"] for k in keys], width, color=f"C{j}", label=label)
        for row, ylabel in enumerate(("accuracy (MSE < 0.01)", "MSE ([-1, 1] units)")):
            ax = axes[row, col]
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys)
            ax.set_ylabel(ylabel)
        axes[0, col].set_ylim(0, 1.05)
        axes[1, col].set_yscale("log")
        axes[0, col].set_title(f"MNIST N = {size['N']}, mean of {len(size['seeds'])} seeds")
        axes[1, col].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.suptitle("BayesPCN early-stop rules (varmem) and the official code, camera-ready settings")
    fig.tight_layout()
    experiment.save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    data = varmem.datasets.load_mnist(dtype=torch.float32)
    sizes = []
    total = args.repeats * len(args.items) * (len(args.rules) + 1)
    with tempfile.TemporaryDirectory() as d, tqdm(total=total, desc="bayespcn hard") as bar:
        for seed in range(args.seed, args.seed + args.repeats):
            run_args = argparse.Namespace(**{**vars(args), "seed": seed})
            for n in args.items:
                items01 = data.flat()[:n]
                items = items01 * 2 - 1
                cues = make_cues(items01, data.image_shape, seed)
                rows: dict[str, Any] = {}
                if args.official_python:
                    rows["official_code"] = run_official(items, cues, run_args, Path(d))
                bar.update(1)
                for name in args.rules:
                    rows[name] = run_varmem(items, cues, run_args, name)
                    bar.update(1)
                sizes.append({"N": n, "seed": seed, "rows": rows,
                              "speedup_vs_official": speedups(rows) if "official" in rows else {}})
    summary = summarise(sizes)
    result = {"experiment": "BayesPCN early stop on the hard protocol, varmem against the official code (MNIST)",
              **experiment.record(args), "settings": experiment.settings(args), "summary": summary, "sizes": sizes}
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda p: plot(summary, p)})
    for size in summary:
        print(f"\nN = {size['N']}, mean of seeds {size['seeds']}: acc / mse / steps / CPU s per cue; "
              "write steps / CPU s")
        for name, r in size["rows"].items():
            reads = "  ".join(f"{k} {v['acc']:.3f}/{v['mse']:.4f}/{v['steps']:.0f}/{v['cpu_seconds']:.1f}"
                              for k, v in r["reads"].items())
            print(f"  {name:14s} write {r['write']['steps']:5.0f}/{r['write']['cpu_seconds']:6.1f}  {reads}")
    print(experiment.wrote(written))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    main()
