"""DrDAM reproduction: random-feature (distributed) vs slot dense associative memory.

Two parts, both with :class:`varmem.RandomFeatureMemory` (SinCos features) against the exact L2
log-sum-exp slot energy it approximates (:func:`varmem.baselines.random_features.slot_energy_grad`):

1. **Tutorial setting** (Hoover et al., "Modern methods in associative memory", ch. "Distributed
   Memory"; reference §2.2): ``D = 30``, ``K = 20`` binary memories with entries in ``{0, 1/√D}``,
   ``Y = 10⁵`` random projections (``T ∈ R^{2·10⁵}``), ``β = 25``, random binary queries, 10
   gradient-descent steps ``x ← x - α ∇E`` with ``α = 0.1`` on both energies.  Reported: the
   divergence ``‖x^(10) - x̃^(10)‖`` per query (published, first 10 queries: 0.0238 … 0.0436), the
   initial energies (published 0.095 … 0.128) and their absolute error.
2. **1/√Y scaling**: energy error ``|Ẽ(q) - E(q)|`` averaged over queries and feature seeds, for a
   grid of ``Y``, at the memories, near them (10 % of the bits flipped) and at random queries; the
   slope of ``log MAE`` against ``log Y`` is fitted (theory: ``-1/2``).

Outputs (``--output``, default ``results/drdam``): ``drdam.json`` and ``drdam.png``.

Usage::

    python experiments/drdam.py            # full (about a minute on 2 CPU cores)
    python experiments/drdam.py --smoke    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.baselines.random_features import gradient_descent, slot_energy_grad

PUBLISHED_DIVERGENCES = [0.0238, 0.0269, 0.0436, 0.0285, 0.0306, 0.0352, 0.0269, 0.0383, 0.0325, 0.0356]
PUBLISHED_RANGE = (0.02, 0.045)
PUBLISHED_INITIAL_ENERGY_RANGE = (0.095, 0.128)
JSON_NAME, PNG_NAME = "drdam.json", "drdam.png"
DEFAULT_GRID = (1000, 2000, 4000, 8000, 16000, 32000, 64000)
SMOKE_GRID = (1000, 4000, 16000)


def binary_patterns(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, dim]`` entries in ``{0, 1/√D}`` (so ``‖x - y‖² ∈ [0, 1]``), float64."""
    return (torch.rand(n, dim, generator=gen, dtype=torch.float64) > 0.5).double() / math.sqrt(dim)


def flip_bits(x: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape, generator=gen, dtype=torch.float64) < fraction
    return torch.where(flip, 1 / math.sqrt(x.shape[1]) - x, x)


def tutorial(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    memories = binary_patterns(args.memories, args.dim, gen)
    queries = binary_patterns(args.queries, args.dim, gen)
    memory = varmem.RandomFeatureMemory(
        args.dim, args.beta, args.features, seed=args.seed, step_size=args.step_size, eps=1e-10, dtype=torch.float64
    ).write(memories)
    x_rf, e_rf = gradient_descent(memory.energy_and_grad, queries, args.step_size, args.steps)
    retrieval = memory.retrieve(queries, max_steps=args.steps, tol=0.0)  # the same dynamics through the protocol
    assert torch.allclose(retrieval.pattern, x_rf)
    exact = lambda x: slot_energy_grad(x, memories, args.beta)
    x_ex, e_ex = gradient_descent(exact, queries, args.step_size, args.steps)
    divergence = (x_rf - x_ex).norm(dim=-1)
    lo, hi = PUBLISHED_RANGE
    first = divergence[:10]
    return {
        "divergences": divergence.tolist(),
        "divergence_first10": first.tolist(),
        "divergence_min": float(divergence.min()),
        "divergence_median": float(divergence.median()),
        "divergence_max": float(divergence.max()),
        "fraction_in_published_range": float(((divergence >= lo) & (divergence <= hi)).double().mean()),
        "first10_min": float(first.min()),
        "first10_max": float(first.max()),
        "initial_energy_exact": e_ex[0].tolist(),
        "initial_energy_rf": e_rf[0].tolist(),
        "initial_energy_mae": float((e_rf[0] - e_ex[0]).abs().mean()),
        "final_energy_mae": float((e_rf[-1] - e_ex[-1]).abs().mean()),
        "distance_moved_exact_mean": float((x_ex - queries).norm(dim=-1).mean()),
    }


def fit_slope(ys: Sequence[int], errors: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``log err = a + slope · log Y``; returns ``(slope, a)``."""
    x = torch.log(torch.tensor(ys, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    design = torch.stack([x, torch.ones_like(x)], -1)
    slope, intercept = torch.linalg.lstsq(design, y.unsqueeze(-1)).solution.flatten().tolist()
    return slope, intercept


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed + 1)
    memories = binary_patterns(args.memories, args.dim, gen)
    probes = {
        "at_memories": memories,
        "near_memories": flip_bits(memories, 0.1, gen),
        "random": binary_patterns(args.memories, args.dim, gen),
    }
    exact = {k: slot_energy_grad(q, memories, args.beta)[0] for k, q in probes.items()}
    mae: dict[str, list[float]] = {k: [] for k in probes}
    for y in tqdm(args.grid, desc="Y grid", unit="Y"):
        per_seed: dict[str, list[float]] = {k: [] for k in probes}
        for s in range(args.feature_seeds):
            memory = varmem.RandomFeatureMemory(
                args.dim, args.beta, y, seed=1000 + s, eps=1e-10, dtype=torch.float64
            ).write(memories)
            for k, q in probes.items():
                per_seed[k].append(float((memory.energy(q) - exact[k]).abs().mean()))
        for k in probes:
            mae[k].append(sum(per_seed[k]) / len(per_seed[k]))
    fits = {k: dict(zip(("slope", "intercept"), fit_slope(args.grid, v), strict=True)) for k, v in mae.items()}
    return {
        "Y": list(args.grid),
        "mae": mae,
        "sqrtY_times_mae_at_memories": [math.sqrt(y) * e for y, e in zip(args.grid, mae["at_memories"], strict=True)],
        "fits": fits,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    fig, (ax_d, ax_s) = experiment.subplots(1, 2, figsize=(11, 4.2))
    tut = result["tutorial"]
    div = tut["divergences"]
    ax_d.bar(range(len(div)), div, color="C0", label="varmem (this run)")
    ax_d.plot(range(10), PUBLISHED_DIVERGENCES, "k*", ms=9, label="published (first 10 queries)")
    ax_d.axhspan(*PUBLISHED_RANGE, color="C2", alpha=0.15, label="published range")
    s = result["settings"]
    ax_d.set(
        xlabel="query",
        ylabel="‖x(T) − x̃(T)‖",
        title=f"D={s['dim']}, K={s['memories']}, Y={s['features']:,}, β={s['beta']:g}, {s['steps']}×α={s['step_size']}",
    )
    ax_d.legend(fontsize=8)
    sc = result["scaling"]
    for i, (k, v) in enumerate(sc["mae"].items()):
        fit = sc["fits"][k]
        ax_s.loglog(sc["Y"], v, "o-", color=f"C{i}", label=f"{k} (slope {fit['slope']:.2f})")
    y0 = sc["Y"][0]
    e0 = sc["mae"]["at_memories"][0]
    ax_s.loglog(sc["Y"], [e0 * math.sqrt(y0 / y) for y in sc["Y"]], "k--", label="∝ 1/√Y")
    ax_s.set(xlabel="random projections Y", ylabel="mean |Ẽ − E|", title="energy error vs Y")
    ax_s.grid(True, which="both", alpha=0.3)
    ax_s.legend(fontsize=8)
    experiment.save_figure(fig, path)


def format_scaling(sc: dict[str, Any]) -> str:
    """The energy error table of the scaling part, one line per ``Y``."""
    columns = [("Y", ">7", lambda i: sc["Y"][i]),
               *[(k, ">14.5f", lambda i, k=k: sc["mae"][k][i]) for k in sc["mae"]],
               ("√Y·MAE(mem)", ">12.4f", lambda i: sc["sqrtY_times_mae_at_memories"][i])]  # fmt: skip
    return experiment.format_table(range(len(sc["Y"])), columns, indent="  ")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "drdam", smoke="tiny run: 10 queries, Y grid 1e3..1.6e4, 1 feature seed",
                          seed_help="seed of the data and the tutorial's features", threads=None,
                          threads_help="torch threads (default: torch's; --smoke: 1)")
    p.add_argument("--dim", type=int, default=30)
    p.add_argument("--memories", type=int, default=20)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--features", type=int, default=100_000, help="Y of the tutorial part")
    p.add_argument("--beta", type=float, default=25.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument("--grid", type=int, nargs="+", default=None, help="Y values of the scaling part")
    p.add_argument("--feature-seeds", type=int, default=5, help="feature seeds averaged per Y")
    args = p.parse_args(argv)
    if args.smoke:
        args.queries, args.feature_seeds = 10, 1
        args.threads = args.threads or 1  # tiny tensors: extra threads only contend
        args.grid = args.grid or list(SMOKE_GRID)
    args.grid = list(args.grid or DEFAULT_GRID)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tut = tutorial(args)
    sc = scaling(args)
    result = {
        "experiment": "DrDAM random-feature vs slot memory (tutorial setting + 1/sqrt(Y) scaling)",
        **experiment.record(args),
        "settings": experiment.settings(args, "dim", "memories", "queries", "features", "beta", "steps", "step_size",
                                        "grid", "feature_seeds")
        | {"smoke": args.smoke, "kernel": "sincos", "eps": 1e-10, "dtype": "float64"},
        "published": {
            "divergences_first10": PUBLISHED_DIVERGENCES,
            "range": PUBLISHED_RANGE,
            "initial_energy_range": PUBLISHED_INITIAL_ENERGY_RANGE,
            "theory_slope": -0.5,
        },
        "tutorial": tut,
        "scaling": sc,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print(
        f"tutorial (D={args.dim}, K={args.memories}, Y={args.features:,}, β={args.beta:g}, "
        f"{args.steps} steps α={args.step_size}, {args.queries} queries):"
    )
    print("  divergences, first 10: " + ", ".join(f"{d:.4f}" for d in tut["divergence_first10"]))
    print("  published,   first 10: " + ", ".join(f"{d:.4f}" for d in PUBLISHED_DIVERGENCES))
    print(
        f"  all queries: min {tut['divergence_min']:.4f}  median {tut['divergence_median']:.4f}  "
        f"max {tut['divergence_max']:.4f}; in [{PUBLISHED_RANGE[0]}, {PUBLISHED_RANGE[1]}]: "
        f"{100 * tut['fraction_in_published_range']:.0f} %"
    )
    e = tut["initial_energy_exact"]
    print(f"  initial energies {min(e):.3f} … {max(e):.3f}; |Ẽ − E| mean {tut['initial_energy_mae']:.4f}")
    print("energy error vs Y (mean over queries and feature seeds):")
    print(format_scaling(sc))
    print("  fitted slopes: " + ", ".join(f"{k} {v['slope']:.3f}" for k, v in sc["fits"].items()) + " (theory -0.5)")
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
