"""Measure the predictive-coding read options and stopping rules that pick varmem's defaults.

Three measurements on ``varmem.BayesPCN`` (camera-ready network: L = 4, h = 256, relu, σ = 0.01,
Adam 0.01, T = 500; MNIST digits in ``[-1, 1]``, written one at a time; corruptions applied in
``[0, 1]`` before scaling, so hidden pixels hold -1 in the cue, BayesPCN's protocol):

1. **start value** of the unknown entries of a partial cue (``start`` = zero, -1 (the official
   code's start: its hidden pixels hold -1), prior_mean) for
   the procedures ``joint`` (500 joint steps) and ``clamp_predict`` (5 rounds of 100 steps), on
   right-column masks 0.25 / 0.75, the bottom half and 50 % / 75 % dropped pixels;
2. **procedure** for noisy full cues (white 0.2 / 0.8): ``clamp_predict`` against ``relax_all``;
3. **stopping rules** on the hard protocol (mask 0.75, white 0.8) and the headline cues (mask
   0.25, white 0.2): a memory written *and* read with the official absolute rule
   (``|ΔF| ≤ 1e-3`` of every cue in the batch; writes one item per batch, reads all cues in one
   batch and also one cue per batch, as the official code can be run) against the relative rule
   ``rtol`` ∈ {1e-6, 1e-5, 1e-4} measured over one step (``infer_window=1``; BayesPCN's default
   windowed rule is measured by ``experiments/bayespcn_hard.py``) and no early stop.  Recall =
   accuracy at MSE < 0.01 (scored on the hidden entries for partial cues) and mean MSE; speed =
   relaxation steps (CPU seconds are noisy on a shared machine and are recorded too).

Usage::

    python experiments/pc_read_options.py               # N = 16 and 64
    python experiments/pc_read_options.py --smoke       # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME, PNG_NAME = "pc_read_options.json", "pc_read_options.png"
PARTIAL = (("mask", 0.25), ("mask", 0.75), ("bottom", 0.5), ("drop", 0.5), ("drop", 0.75))
NOISY = (("white", 0.2), ("white", 0.8))
HARD = (("mask", 0.75), ("white", 0.8), ("mask", 0.25), ("white", 0.2))
STARTS = ("zero", -1.0, "prior_mean")
RULES = {"official": (1e-3, 0.0), "none": (0.0, 0.0), "rtol1e-6": (1e-3, 1e-6), "rtol1e-5": (1e-3, 1e-5),
         "rtol1e-4": (1e-3, 1e-4)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "pc_read_options", smoke="N = 4, h = 32, T = 40 (seconds)", threads=1)
    p.add_argument("--items", type=int, nargs="+", default=[16, 64])
    p.add_argument("--h-dim", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threshold", type=float, default=0.01)
    args = p.parse_args(argv)
    if args.smoke:
        args.items, args.h_dim, args.steps = [4], 32, 40
    return args


def cues(items01: torch.Tensor, shape, specs, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, level in specs:
        cue, mask = varmem.corruptions.corrupt(items01, name, level, generator=g, image_shape=shape)
        out[f"{name}{level:g}"] = (cue * 2 - 1, None if name == "white" else mask)
    return out


def score(pattern: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, thr: float) -> dict[str, float]:
    err = varmem.metrics.mse(pattern, target, mask, scored="all" if mask is None else "unknown")
    return {"acc": float((err < thr).double().mean()), "mse": float(err.mean())}


def memory_for(items: torch.Tensor, args: argparse.Namespace, tol: float, rtol: float) -> tuple[Any, float, float]:
    m = varmem.BayesPCN(items.shape[1], n_layers=4, h_dim=args.h_dim, sigma_obs=0.01, T_infer=args.steps,
                        infer_tol=tol, infer_rtol=rtol, infer_window=1, seed=args.seed, dtype=torch.float32)
    t0 = time.perf_counter()
    with experiment.recording(m, "relax", lambda out: out[2]) as steps:
        m.write(items)
    seconds = time.perf_counter() - t0
    return m, seconds, sum(steps) / len(steps)


def read(m, cue, mask, target, thr, **options) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = m.retrieve(cue, mask, method="pc", seed=0, **options)
    return {**score(r.pattern, target, mask, thr), "steps": int(r.steps), "seconds": time.perf_counter() - t0}


def read_one_by_one(m, cue, mask, target, thr, **options) -> dict[str, Any]:
    t0 = time.perf_counter()
    pats, steps = [], []
    for i in range(cue.shape[0]):
        r = m.retrieve(cue[i:i + 1], None if mask is None else mask[i:i + 1], method="pc", seed=i, **options)
        pats.append(r.pattern)
        steps.append(int(r.steps))
    return {**score(torch.cat(pats), target, mask, thr), "steps": sum(steps) / len(steps),
            "seconds": time.perf_counter() - t0}


def run_size(n: int, data, args: argparse.Namespace, bar) -> dict[str, Any]:
    items01 = data.flat()[:n]
    items = items01 * 2 - 1
    shape = data.image_shape
    out: dict[str, Any] = {"N": n, "starts": {}, "noisy": {}, "rules": {}}
    memory, _, _ = memory_for(items, args, 0.0, 0.0)  # written without early stop
    for key, (cue, mask) in cues(items01, shape, PARTIAL, args.seed).items():
        for proc, opts in (("joint", {}), ("clamp_predict", {"n_repeat": 5, "max_steps": max(1, args.steps // 5)})):
            for start in STARTS:
                out["starts"][f"{key}/{proc}/{start}"] = read(memory, cue, mask, items, args.threshold, procedure=proc,
                                                             start=start, tol=0.0, rtol=0.0, **opts)
                bar.update(1)
    for key, (cue, mask) in cues(items01, shape, NOISY, args.seed).items():
        for proc in ("clamp_predict", "relax_all"):
            out["noisy"][f"{key}/{proc}"] = read(memory, cue, mask, items, args.threshold, procedure=proc, tol=0.0,
                                                 rtol=0.0)
            bar.update(1)
    hard = cues(items01, shape, HARD, args.seed)
    for rule, (tol, rtol) in RULES.items():
        m, write_s, write_steps = memory_for(items, args, tol, rtol)
        row = {"write_seconds": write_s, "write_steps": write_steps, "reads": {}}
        for key, (cue, mask) in hard.items():
            row["reads"][key] = read(m, cue, mask, items, args.threshold, tol=tol, rtol=rtol)
            if rule == "official":  # the official code's rule applies per batch: also one cue per batch
                row["reads"][key + "/one_per_batch"] = read_one_by_one(m, cue, mask, items, args.threshold,
                                                                      tol=tol, rtol=rtol)
            bar.update(1)
        out["rules"][rule] = row
    return out


def plot(rows: list[dict[str, Any]], path) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(12, 4.2))
    row = rows[-1]
    keys = sorted({k.rsplit("/", 1)[0] for k in row["starts"]})
    width = 0.8 / len(STARTS)
    for j, start in enumerate(STARTS):
        axes[0].bar([i + j * width for i in range(len(keys))], [row["starts"][f"{k}/{start}"]["mse"] for k in keys],
                    width, label=f"start={start}")
    axes[0].set_xticks([i + width for i in range(len(keys))], [k.replace("/", "\n") for k in keys], fontsize=6)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("MSE on hidden entries ([-1, 1] units)")
    axes[0].set_title(f"start value of unknown entries (N={row['N']})")
    axes[0].legend(fontsize=7)
    markers = {"mask0.75": "o", "white0.8": "s", "mask0.25": "^", "white0.2": "v"}
    for j, (rule, r) in enumerate(row["rules"].items()):
        for k, mk in markers.items():
            v = r["reads"][k]
            axes[1].scatter(v["steps"], v["mse"], marker=mk, color=f"C{j}",
                            label=f"{rule} (write {r['write_steps']:.0f} steps/item)" if k == "mask0.75" else None)
            axes[1].annotate(f"{k} acc {v['acc']:.2f}", (v["steps"], v["mse"]), fontsize=5)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("read relaxation steps")
    axes[1].set_ylabel("MSE ([-1, 1] units)")
    axes[1].set_title(f"stopping rules (N={row['N']}; o mask0.75, s white0.8, ^ mask0.25, v white0.2)")
    axes[1].legend(fontsize=6)
    experiment.save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    data = varmem.datasets.load_mnist(dtype=torch.float32)
    total = len(args.items) * (len(PARTIAL) * 2 * len(STARTS) + len(NOISY) * 2 + len(RULES) * len(HARD))
    with tqdm(total=total, desc="pc read options") as bar:
        rows = [run_size(n, data, args, bar) for n in args.items]
    result = {"experiment": "predictive-coding read options and stopping rules (BayesPCN, MNIST)",
              **experiment.record(args), "settings": experiment.settings(args), "rows": rows}
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda p: plot(rows, p)})
    for row in rows:
        print(f"\nN = {row['N']}: start values (acc / MSE)")
        for k, v in row["starts"].items():
            print(f"  {k:34s} acc {v['acc']:.3f}  mse {v['mse']:.5f}")
        for k, v in row["noisy"].items():
            print(f"  {k:34s} acc {v['acc']:.3f}  mse {v['mse']:.5f}")
        for rule, r in row["rules"].items():
            reads = "  ".join(f"{k} {v['acc']:.3f}/{v['steps']:.0f}" for k, v in r["reads"].items())
            print(f"  {rule:9s} write steps {r['write_steps']:.0f} ({r['write_seconds']:.1f}s); acc/steps {reads}")
    print(experiment.wrote(written))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    main()
