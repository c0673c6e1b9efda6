"""KHM / U-Hop+ reproduction: Prop. 3.1 separation bounds and metastable-state sizes (reference §3).

Three parts, all seeded:

1. **Separation bounds** (Hu et al. 2024, Prop. 3.1) for ``M`` points on ``S²`` (feature dimension
   3): the lower/upper bounds, the Tammes optimum ``1 - cos θ_M`` (literature angles), the minimal
   separation ``Δ_min`` of ``M`` random memories in ``R^32`` seen through a random linear ``Φ`` into
   ``R³``, and after U-Hop+ stage I (Adam, ``τ = 0.05``).  Expected: ``lower ≤ Tammes ≤ upper``
   and U-Hop+ within a few per cent of Tammes.
2. **Synthetic metastable states** (reference §3.3 setting): ``d = 5``, ``M = 10`` unit Gaussian
   memories, ``D_Φ = 5``, ``β = 1``, queries = fresh random unit vectors, 20 retrieval steps.  For
   softmax / 1.5-entmax / sparsemax, the distribution of ``‖p‖₀`` (threshold 0.01 for softmax,
   exact zeros otherwise) for the raw model, U-Hop+ (20 Adam steps, lr 1, ``τ = 0.1``), U-Hop+ with
   ``Φ`` rescaled so that ``β_eff = β``, and the plain model at the matched ``β_eff`` (the
   reference's pitfall: compare at matched temperature).
3. **MNIST metastable states**: ``varmem.datasets.load_mnist`` digits in ``[-1, 1]`` as memories,
   other digits as queries, ``β = 0.1``, ``D_Φ = 200``, 5 steps, U-Hop+ one epoch of batch 16 at
   lr 0.1 (reference's MNIST defaults, at a CPU size).

Outputs (``--output``, default ``results/khm_separation``): ``khm_separation.json`` and
``khm_separation.png``.  ``--smoke`` runs a tiny version (used by the tests).

Usage::

    python experiments/khm_separation.py            # full (a few minutes on 2 cores)
    python experiments/khm_separation.py --smoke
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.nn.functional import normalize
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.baselines.kernelized_hopfield import KernelizedHopfield, separation_bounds

JSON_NAME, PNG_NAME = "khm_separation.json", "khm_separation.png"
SEPARATIONS = ("softmax", "entmax15", "sparsemax")
TAMMES_ANGLE_DEG = {4: 109.4712, 5: 90.0, 6: 90.0, 8: 74.8585, 12: 63.4349, 24: 43.6908}
"""Optimal minimal angles of M points on S² (Tammes problem; Sloane's tables)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "khm_separation", smoke="tiny sizes (seconds)")
    p.add_argument("--queries", type=int, default=2000, help="synthetic queries")
    p.add_argument("--mnist-memories", type=int, default=1000)
    p.add_argument("--mnist-queries", type=int, default=500)
    p.add_argument("--code-steps", type=int, default=300, help="U-Hop+ steps for the spherical codes")
    args = p.parse_args(argv)
    if args.smoke:
        args.queries, args.mnist_memories, args.mnist_queries, args.code_steps = 100, 64, 32, 60
    args.code_sizes = (4, 6) if args.smoke else tuple(sorted(TAMMES_ANGLE_DEG))
    return args


def bounds_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for m in tqdm(args.code_sizes, desc="spherical codes", leave=False):
        gen = torch.Generator().manual_seed(args.seed + m)
        memories = torch.randn(m, 32, generator=gen, dtype=torch.float64)
        khm = KernelizedHopfield(32, feature_dim=3, seed=args.seed, dtype=torch.float64).write(memories)
        random_sep = khm.min_separation()
        khm.fit(steps=args.code_steps, lr=0.05, tau=0.05, seed=args.seed)
        lower, upper = separation_bounds(m, 3)
        rows.append({
            "M": m, "lower_bound": lower, "upper_bound": upper,
            "tammes_optimum": 1 - math.cos(math.radians(TAMMES_ANGLE_DEG[m])),
            "random_min_separation": random_sep, "uhop_min_separation": khm.min_separation(),
        })  # fmt: skip
    return rows


def _sizes(memory: KernelizedHopfield, queries: torch.Tensor, steps: int) -> list[int]:
    """Histogram of ‖p‖₀ (index k = number of memories with p > threshold) after ``steps`` updates."""
    out = memory.retrieve(queries, max_steps=steps, tol=0.0, trace=False, return_weights=True)
    threshold = 0.01 if memory.separation == "softmax" else 0.0
    size = (out.weights > threshold).sum(-1)
    return torch.bincount(size, minlength=len(memory) + 1).tolist()


def _summary(hist: list[int]) -> dict[str, Any]:
    total = sum(hist)
    mean = sum(k * c for k, c in enumerate(hist)) / total
    return {"histogram": hist, "singleton_fraction": hist[1] / total, "mean_size": mean}


def metastable(
    memories: torch.Tensor, queries: torch.Tensor, *, beta: float, feature_dim: int, steps: int,
    fit: dict[str, Any], seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Metastable-state sizes for every separation map and the four variants."""
    result: dict[str, Any] = {}
    for sep in tqdm(SEPARATIONS, desc="separations", leave=False):
        kw = {"separation": sep, "dtype": memories.dtype}
        raw = KernelizedHopfield(memories.shape[1], beta, feature_dim, seed=seed, **kw).write(memories)
        plain = KernelizedHopfield(memories.shape[1], beta, feature_map="identity", **kw).write(memories)
        row: dict[str, Any] = {"plain": _summary(_sizes(plain, queries, steps))}
        row["raw_feature_map"] = _summary(_sizes(raw, queries, steps))
        row["raw_feature_map"]["effective_beta"] = raw.effective_beta()
        row["raw_feature_map"]["min_separation"] = raw.min_separation()
        losses = raw.fit(seed=seed, **fit)
        row["uhop"] = _summary(_sizes(raw, queries, steps))
        row["uhop"].update(effective_beta=raw.effective_beta(), feature_scale=raw.feature_scale(),
                           min_separation=raw.min_separation(), loss_first=float(losses[0]),
                           loss_last=float(losses[-1]))  # fmt: skip
        row["matched_plain"] = _summary(_sizes(raw.matched_modern_hopfield(), queries, steps))
        row["matched_plain"]["beta"] = raw.effective_beta()
        raw.rescale_features()
        row["uhop_rescaled"] = _summary(_sizes(raw, queries, steps))
        row["uhop_rescaled"]["effective_beta"] = raw.effective_beta()
        result[sep] = row
    return result


def synthetic_part(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed + 42)
    memories = normalize(torch.randn(10, 5, generator=gen, dtype=torch.float64), dim=-1)
    queries = normalize(torch.randn(args.queries, 5, generator=gen, dtype=torch.float64), dim=-1)
    fit = {"steps": 20, "lr": 1.0, "tau": 0.1}
    out = metastable(memories, queries, beta=1.0, feature_dim=5, steps=20, fit=fit, seed=args.seed)
    return {"settings": {"d": 5, "M": 10, "feature_dim": 5, "beta": 1.0, "steps": 20, "queries": args.queries,
                         "fit": fit}, "results": out}  # fmt: skip


def mnist_part(args: argparse.Namespace) -> dict[str, Any]:
    data = varmem.datasets.load_mnist(dtype=torch.float32)
    x = data.images.reshape(len(data.images), -1) * 2 - 1  # pixels in [-1, 1]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    memories = x[perm[: args.mnist_memories]]
    queries = x[perm[args.mnist_memories : args.mnist_memories + args.mnist_queries]]
    fit = {"steps": math.ceil(args.mnist_memories / 16), "lr": 0.1, "tau": 0.1, "batch_size": 16}
    out = metastable(memories, queries, beta=0.1, feature_dim=200, steps=5, fit=fit, seed=args.seed)
    return {"settings": {"memories": args.mnist_memories, "queries": args.mnist_queries, "feature_dim": 200,
                         "beta": 0.1, "steps": 5, "pixel_range": [-1, 1], "dtype": "float32", "fit": fit},
            "results": out}  # fmt: skip


BOUNDS_TABLE = [
    ("M", ">3", "M"), "|", ("lower", ">7.4f", "lower_bound"), ("tammes", ">7.4f", "tammes_optimum"),
    ("upper", ">7.4f", "upper_bound"), "|", ("random", ">7.4f", "random_min_separation"),
    ("U-Hop+", ">7.4f", "uhop_min_separation"),
]  # fmt: skip


def _cell(variant: str) -> Any:
    """Singleton fraction / mean size of one variant of a metastable-state row ``(map, results)``."""
    return lambda t: f"{t[1][variant]['singleton_fraction']:.2f}/{t[1][variant]['mean_size']:.2f}"


SIZES_TABLE = [
    ("map", ">9", lambda t: t[0]), "|", ("plain β", ">12", _cell("plain")), ("raw Φ", ">12", _cell("raw_feature_map")),
    ("U-Hop+", ">12", _cell("uhop")), ("U-Hop+ β_eff=β", ">15", _cell("uhop_rescaled")),
    ("plain @β_eff", ">13", _cell("matched_plain")), "|", ("β_eff", ".1f", lambda t: t[1]["uhop"]["effective_beta"]),
]  # fmt: skip


def format_tables(result: dict[str, Any]) -> str:
    lines = ["Prop. 3.1 bounds on S² (d = 3) vs Tammes and U-Hop+:",
             experiment.format_table(result["bounds"], BOUNDS_TABLE)]  # fmt: skip
    for part in ("synthetic", "mnist"):
        lines.append(f"\nmetastable-state sizes ({part}): singleton fraction / mean ‖p‖₀")
        lines.append(experiment.format_table(list(result[part]["results"].items()), SIZES_TABLE))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = experiment.subplots(1, 3, figsize=(15, 4.2))
    rows = result["bounds"]
    ms = [r["M"] for r in rows]
    ax = axes[0]
    for key, label, style in [("lower_bound", "Prop. 3.1 lower", "--"), ("upper_bound", "Prop. 3.1 upper", "--"),
                              ("tammes_optimum", "Tammes optimum", "-"), ("uhop_min_separation", "U-Hop+", "o"),
                              ("random_min_separation", "random Φ", "x")]:  # fmt: skip
        ax.plot(ms, [r[key] for r in rows], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="M (points on S²)", ylabel="Δ_min = 1 - cos θ", title="separation")
    ax.legend(fontsize=8)
    for ax, part in zip(axes[1:], ("synthetic", "mnist"), strict=True):
        variants = ["plain", "raw_feature_map", "uhop", "uhop_rescaled", "matched_plain"]
        width = 0.8 / len(SEPARATIONS)
        for i, sep in enumerate(SEPARATIONS):
            vals = [result[part]["results"][sep][v]["mean_size"] for v in variants]
            ax.bar([j + i * width for j in range(len(variants))], vals, width, label=sep)
        ax.set_xticks([j + width for j in range(len(variants))])
        ax.set_xticklabels(["plain β", "raw Φ", "U-Hop+", "U-Hop+\nβ_eff=β", "plain\nβ_eff"], fontsize=8)
        ax.set(ylabel="mean ‖p‖₀ (metastable size)", title=f"{part}", yscale="log")
        ax.legend(fontsize=8)
    experiment.save_figure(fig, path, dpi=110)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    result: dict[str, Any] = experiment.record(args, smoke=args.smoke)
    result["settings"] = {"code_sizes": list(args.code_sizes), "code_steps": args.code_steps, "code_lr": 0.05,
                          "code_tau": 0.05, "code_input_dim": 32}  # fmt: skip
    result["bounds"] = bounds_part(args)
    result["synthetic"] = synthetic_part(args)
    result["mnist"] = mnist_part(args)
    experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print(format_tables(result))
    return result


if __name__ == "__main__":
    main()
