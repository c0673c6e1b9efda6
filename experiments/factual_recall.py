"""Factual recall in a one-layer transformer with frozen embeddings (Nichani, Lee & Bietti, ICLR 2025).

Three runs on the synthetic task of ``varmem.memories.factual.recall`` (subjects, relations, noise
tokens, an EOS query; answers in per-relation blocks of ``D``):

1. **Sequential learning** (Fig. 5, ``sequential-learning.ipynb``): one-hot embeddings (``d = 41``),
   one linear attention head, ``A = V = 1e-5``, plain GD lr 0.1, batch 1024, 8192 steps, ``S = 16``,
   ``R = 4``, ``D = 8``, 20 noise tokens, structured facts.  The test loss starts at ``ln 32``,
   stays on a plateau near ``ln 8`` (the right relation's block, uniformly) and then falls to ≈ 0
   with accuracy 1.0.  Reference (seed-systems.md §1.4, ours): plateau 2.09–2.13 from ≈ 2.0k to
   ≈ 3.6k steps, accuracy 1.000 at step 4096, final loss 0.009.
2. **Trade-off heat map** (Fig. 4 right at a CPU size): test accuracy over a grid of heads ``H`` and
   MLP widths ``m`` at the paper's ``d = 32``, ``d_h = 8``, on ``S = R = 8`` (64 facts, ``D = 8``,
   ``S + R`` noise tokens) with sequences of ``T = 8`` instead of 32 (fewer noise tokens to ignore:
   a CPU-size change).  The paper's grid (``S = R = 32``, 1024 facts, 2^14 steps of batch 1024) has
   the boundary ``MLP params ≈ 2300 − attn params / 2`` (``attn = d·d_h·H``, ``MLP = d·m``); it is not
   asserted here.
3. **Parameters scale with facts** (Fig. 4's claim): for ``S = R`` = 4, 8, 16 (16, 64, 256 facts)
   the fewest heads (``--scale-heads``, no MLP) and, behind ``--mlp-heads`` heads, the narrowest MLP
   (``--scale-widths``) whose test accuracy reaches exactly 1.0 (all 1024 test sequences) within
   ``--tf-steps`` Adam steps (lr 1e-2, cosine decay, batches of 256 fresh sequences).

Outputs (``--output``, default ``results/factual_recall``): ``factual_recall.json``,
``sequential_learning.png``, ``tradeoff.png``, ``scaling.png``.

Usage::

    python experiments/factual_recall.py           # the three runs (≈ 15 minutes on one core)
    python experiments/factual_recall.py --smoke   # shorter: 4608 GD steps, a 2 × 2 grid, 16 facts scaled
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from varmem import experiment
from varmem.memories.factual.recall import FactualRecallTask, LinearAttentionRecall, OneLayerTransformer, train_recall

JSON_NAME = "factual_recall.json"
SEQ_PNG, GRID_PNG, SCALE_PNG = "sequential_learning.png", "tradeoff.png", "scaling.png"


def sequential(args: argparse.Namespace) -> dict[str, Any]:
    task = FactualRecallTask(16, 4, 8, noise_tokens=20, length=32, structured=True, seed=args.seed)
    model = LinearAttentionRecall(task, init=1e-5)
    r = train_recall(model, task, steps=args.seq_steps, lr=0.1, optimizer="sgd", batch=1024,
                     eval_every=args.seq_eval, test_size=args.seq_test, target=None, seed=args.seed,
                     progress=not args.smoke)
    loss = torch.tensor(r.loss, dtype=torch.float64)
    steps = torch.tensor(r.steps)
    ln8 = math.log(8)
    # the plateau: loss within 0.1 of ln 8 while the model still only knows the relation (accuracy ≤ 0.5;
    # the accuracy jumps a few hundred steps before the loss leaves the band)
    recalled = torch.tensor(r.accuracy) > 0.5
    on_plateau = (((loss - ln8).abs() < 0.1) & ~recalled).nonzero().flatten()
    plateau = None
    if len(on_plateau):
        first, last = int(on_plateau[0]), int(on_plateau[-1])
        plateau = {"first_step": int(steps[first]), "last_step": int(steps[last]),
                   "loss_min": float(loss[first:last + 1].min()), "loss_max": float(loss[first:last + 1].max()),
                   "accuracy_max": max(r.accuracy[first:last + 1]),
                   "relation_accuracy_min": min(r.relation_accuracy[first:last + 1])}

    def first_step(values: list[float], level: float = 1.0) -> int | None:
        return next((s for s, v in zip(r.steps, values, strict=True) if v >= level), None)

    return {"task": {"S": 16, "R": 4, "D": 8, "noise": 20, "T": 32, "vocab": task.vocab_size},
            "steps": r.steps, "loss": r.loss, "accuracy": r.accuracy, "relation_accuracy": r.relation_accuracy,
            "subject_accuracy": r.subject_accuracy, "initial_loss": r.loss[0], "final_loss": r.loss[-1],
            "final_accuracy": r.final_accuracy, "plateau": plateau,
            "first_step_relation_accuracy_1": first_step(r.relation_accuracy),
            "first_step_accuracy_1": first_step(r.accuracy), "ln32": math.log(32), "ln8": ln8,
            "seconds": r.seconds}


def recall_task(side: int, args: argparse.Namespace) -> FactualRecallTask:
    """``S = R = side``, ``D = 8``, ``S + R`` noise tokens (the official default), length ``--length``."""
    return FactualRecallTask(side, side, 8, noise_tokens=2 * side, length=args.length, seed=args.seed)


def transformer_run(task: FactualRecallTask, heads: int, width: int, args: argparse.Namespace) -> dict[str, Any]:
    """Adam lr 1e-2 with a cosine decay over ``--tf-steps``, fresh batches; stops at test accuracy 1.0
    (1024 fresh test sequences: every fact about 1024 / (S·R) times, in random noise contexts)."""
    model = OneLayerTransformer(task, args.dim, heads, args.head_dim, width, seed=args.seed)
    r = train_recall(model, task, steps=args.tf_steps, lr=1e-2, batch=args.batch, eval_every=50, test_size=1024,
                     target=1.0, seed=args.seed, schedule="cosine")
    return {"facts": task.num_facts, "heads": heads, "mlp_width": width,
            "attention_params": args.dim * args.head_dim * heads, "mlp_params": args.dim * width,
            "params_paper": model.attention_parameters + model.mlp_parameters,
            "accuracy": r.final_accuracy, "steps": r.steps_run, "seconds": r.seconds}


def smallest(task: FactualRecallTask, sizes: Sequence[int], make: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Try ``make(size) = (heads, width)`` for ``sizes`` in increasing order until one reaches accuracy
    1.0; returns every run and the smallest size that stored all facts (None: none did)."""
    runs = []
    for size in sizes:
        runs.append(transformer_run(task, *make(size), args))
        if runs[-1]["accuracy"] == 1.0:
            return {"smallest": size, "runs": runs}
    return {"smallest": None, "runs": runs}


def parameter_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """For each fact count: the fewest heads that store every fact with attention alone (no MLP), and
    the narrowest MLP that stores them behind ``--mlp-heads`` heads that only copy s and r."""
    rows = []
    for side in tqdm(args.scale_sides, desc="fact counts", leave=False):
        task = recall_task(side, args)
        attn = smallest(task, args.scale_heads, lambda h: (h, 0), args)
        mlp = smallest(task, args.scale_widths, lambda m: (args.mlp_heads, m), args)
        rows.append({"facts": task.num_facts, "S": side, "R": side,
                     "attention_only": {"heads": attn["smallest"], "runs": attn["runs"],
                                        "attention_params": None if attn["smallest"] is None
                                        else args.dim * args.head_dim * attn["smallest"]},
                     "mlp": {"heads": args.mlp_heads, "mlp_width": mlp["smallest"], "runs": mlp["runs"],
                             "mlp_params": None if mlp["smallest"] is None else args.dim * mlp["smallest"]}})
    return {"dim": args.dim, "head_dim": args.head_dim, "length": args.length, "D": 8, "steps": args.tf_steps,
            "rows": rows}


def plot_sequential(seq: dict[str, Any], path: Any) -> None:
    fig, (ax, ax2) = experiment.subplots(1, 2, figsize=(11, 4))
    ax.plot(seq["steps"], seq["loss"], "C0-", label="test loss")
    ax.axhline(seq["ln32"], color="grey", ls="--", lw=0.8, label="ln 32 (uniform over answers)")
    ax.axhline(seq["ln8"], color="k", ls="--", lw=0.8, label="ln 8 (uniform over the relation's block)")
    ax.set(xlabel="gradient step", ylabel="cross-entropy (nats)",
           title="linear attention, one-hot embeddings: loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for key, label in (("accuracy", "accuracy"), ("relation_accuracy", "relation (right answer block)"),
                       ("subject_accuracy", "subject (right place in the block)")):
        ax2.plot(seq["steps"], seq[key], label=label)
    ax2.set(xlabel="gradient step", ylabel="test accuracy", title="relation first, subject later")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    experiment.save_figure(fig, path)


def plot_grid(grid: dict[str, Any], path: Any) -> None:
    heads, widths = grid["heads"], grid["widths"]
    acc = torch.tensor([[next(c["accuracy"] for c in grid["cells"] if c["heads"] == h and c["mlp_width"] == m)
                         for h in heads] for m in widths])
    fig, ax = experiment.subplots(figsize=(6.5, 4.8))
    im = ax.imshow(acc.tolist(), origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(heads)), [f"{h}\n({grid['dim'] * grid['head_dim'] * h})" for h in heads])
    ax.set_yticks(range(len(widths)), [f"{m} ({grid['dim'] * m})" for m in widths])
    for i in range(len(widths)):
        for j in range(len(heads)):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", color="w" if acc[i, j] < 0.6 else "k",
                    fontsize=8)
    ax.set(xlabel="heads H (attention params d·d_h·H)", ylabel="MLP width m (MLP params d·m)",
           title=f"test accuracy, {grid['facts']} facts, d={grid['dim']}, d_h={grid['head_dim']}")
    fig.colorbar(im, ax=ax, label="accuracy")
    experiment.save_figure(fig, path)


def plot_scaling(scale: dict[str, Any], path: Any) -> None:
    fig, ax = experiment.subplots(figsize=(6, 4.5))
    behind = scale["rows"][0]["mlp"]["heads"]
    for key, count, label, colour in (("attention_only", "attention_params", "attention only: d·d_h·H", "C0"),
                                      ("mlp", "mlp_params", f"MLP behind {behind} heads: d·m", "C1")):
        facts = [r["facts"] for r in scale["rows"]]
        need = [r[key][count] for r in scale["rows"]]
        ax.plot(facts, [float("nan") if n is None or n == 0 else n for n in need], "o-", color=colour,
                label=f"{label} (smallest at accuracy 1.0)")
        for r in scale["rows"]:  # the sizes that failed, as crosses
            tried = [run_ for run_ in r[key]["runs"] if run_["accuracy"] < 1.0]
            sizes = [run_["attention_params"] if key == "attention_only" else run_["mlp_params"] for run_ in tried]
            sizes = [s for s in sizes if s > 0]  # "no MLP" has no place on a log axis
            ax.plot([r["facts"]] * len(sizes), sizes, "x", color=colour, alpha=0.6)
    ax.set(xscale="log", yscale="log", xlabel="facts S·R", ylabel="parameters",
           title=f"parameters needed for 100 % recall (d={scale['dim']}, d_h={scale['head_dim']}; x: failed)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "factual_recall", smoke="4608 GD steps, a 2 × 2 grid, 16 facts scaled", threads=1)
    p.add_argument("--seq-steps", type=int, default=8192)
    p.add_argument("--seq-eval", type=int, default=128, help="evaluate the sequential run every this many steps")
    p.add_argument("--seq-test", type=int, default=4096)
    p.add_argument("--facts-side", type=int, default=8, help="S = R for the trade-off grid (S + R noise tokens)")
    p.add_argument("--length", type=int, default=8, help="sequence length T of the transformer task")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=8)
    p.add_argument("--heads", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--widths", type=int, nargs="+", default=[0, 16, 64])
    p.add_argument("--scale-sides", type=int, nargs="+", default=[4, 8, 16],
                   help="S = R of the parameter-scaling runs (S·R facts)")
    p.add_argument("--scale-heads", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                   help="heads tried (in order) for attention-only storage")
    p.add_argument("--scale-widths", type=int, nargs="+", default=[0, 16, 64, 256, 512],
                   help="MLP widths tried (in order) for MLP storage")
    p.add_argument("--mlp-heads", type=int, default=2, help="heads in front of the MLP in the MLP-storage runs")
    p.add_argument("--tf-steps", type=int, default=2000, help="most Adam steps per transformer")
    p.add_argument("--batch", type=int, default=256, help="fresh sequences per transformer step")
    args = p.parse_args(argv)
    if args.smoke:
        args.seq_steps, args.seq_eval, args.seq_test = 4608, 256, 1024
        args.heads, args.widths, args.tf_steps = [1, 8], [0, 64], 600
        args.scale_sides, args.scale_heads, args.scale_widths = [4], [1, 2], [0, 16]
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    seq = sequential(args)
    task = recall_task(args.facts_side, args)
    cells = []
    for m in tqdm(args.widths, desc="MLP widths", leave=False):
        for h in args.heads:
            cells.append(transformer_run(task, h, m, args))
    grid = {"facts": task.num_facts, "S": task.subjects, "R": task.relations, "D": 8, "noise": task.noise_tokens,
            "length": args.length, "dim": args.dim, "head_dim": args.head_dim, "heads": args.heads,
            "widths": args.widths, "cells": cells}

    def cell(h: int, m: int) -> dict[str, Any]:
        return next(c for c in cells if c["heads"] == h and c["mlp_width"] == m)

    scaling = {"attention_only": cell(max(args.heads), 0), "mlp_with_fewest_heads": cell(min(args.heads),
                                                                                          max(args.widths)),
               "small_in_both": cell(min(args.heads), min(args.widths))}
    scale = parameter_scaling(args)
    result: dict[str, Any] = {
        "experiment": "factual recall: sequential learning, attention vs MLP storage (Nichani, Lee & Bietti)",
        **experiment.record(args), "settings": experiment.settings(args, exclude=("output",)),
        "sequential": seq, "tradeoff": grid, "scaling": scaling, "parameter_scaling": scale,
        "seconds": time.perf_counter() - start,
    }
    figures = {SEQ_PNG: lambda p: plot_sequential(seq, p), GRID_PNG: lambda p: plot_grid(grid, p),
               SCALE_PNG: lambda p: plot_scaling(scale, p)}
    written = experiment.save_results(args.output, JSON_NAME, result, figures)
    pl = seq["plateau"]
    plateau = "none"
    if pl:
        plateau = f"{pl['loss_min']:.3f}–{pl['loss_max']:.3f} at steps {pl['first_step']}–{pl['last_step']}"
    print(f"sequential learning: loss {seq['initial_loss']:.3f} (ln 32 = {math.log(32):.3f}) → plateau {plateau}"
          + f" (ln 8 = {math.log(8):.3f}) → {seq['final_loss']:.3f}; accuracy 1.0 from step "
          f"{seq['first_step_accuracy_1']}, relation accuracy 1.0 from step {seq['first_step_relation_accuracy_1']}")
    print(f"trade-off grid ({grid['facts']} facts): accuracy by (H, m)")
    for c in cells:
        print(f"  H={c['heads']:<3} m={c['mlp_width']:<4} attn={c['attention_params']:<5} mlp={c['mlp_params']:<5} "
              f"accuracy={c['accuracy']:.3f} ({c['steps']} steps)")
    print(f"parameters needed for accuracy 1.0 (d = {args.dim}, d_h = {args.head_dim}, T = {args.length}, "
          f"≤ {args.tf_steps} steps):")
    for row in scale["rows"]:
        a, m = row["attention_only"], row["mlp"]
        print(f"  {row['facts']:>4} facts: attention only H = {a['heads']} (attn params {a['attention_params']}); "
              f"H = {m['heads']} + MLP m = {m['mlp_width']} (MLP params {m['mlp_params']})")
        for run_ in a["runs"] + m["runs"]:
            print(f"      H={run_['heads']:<3} m={run_['mlp_width']:<4} accuracy={run_['accuracy']:.4f} "
                  f"({run_['steps']} steps)")
    print(f"  {result['seconds']:.0f} s; {experiment.wrote(written)}")
    return result


if __name__ == "__main__":
    main()
