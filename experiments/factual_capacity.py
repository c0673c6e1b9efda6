"""Capacity of the linear and MLP associative memories (Nichani, Lee & Bietti, ICLR 2025, Fig. 1).

For each memory size, the largest number ``N`` of random unit-norm keys that the memory maps to
their own random output embedding with ≥ 99 % accuracy (binary search, ``hi/lo ≤ 1.01``;
``varmem.memories.factual.capacity``), for three memories on the same embeddings:

* trained linear ``W ∈ ℝ^{d×d}`` (Adam lr 1e-2, ≤ 2^12 full-batch steps; the paper's lr 1000 gives
  the same capacity within ~10 %, reference §1.5): guide line of the official plot ``d² = 1.3 N ln N``;
* Hebbian linear ``W = Σ_i u_i e_iᵀ``: the same ``N ln N`` scaling with a larger constant
  (reference §1.4, ours: ``d²/(N ln N) ≈ 6–8``);
* trained ReLU MLP of width ``m = d`` (Adam lr 3e-2, ≤ 2^15 steps): guide line ``m d = 0.35 N ln N``.

Reference numbers (seed-systems.md §1.4, ours): trained d = 8 → 22 / 20, d = 16 → 64.5 / 55.5,
d = 32 → 171 / 165.5 (lr 1000 / lr 0.01); Hebbian d = 32 → ≈ 35, d = 64 → ≈ 114, d = 128 → ≈ 447.

Outputs (``--output``, default ``results/factual_capacity``): ``factual_capacity.json``,
``factual_capacity.png`` (capacity against parameters with the guide lines).

Usage::

    python experiments/factual_capacity.py           # linear d ≤ 32 (2 seeds), Hebbian d ≤ 128, MLP d = 8
    python experiments/factual_capacity.py --smoke   # linear d = 8, Hebbian d ≤ 32, MLP d = 4, fewer steps
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, Sequence

from tqdm.auto import tqdm

from varmem import LinearAssociativeMemory, MLPAssociativeMemory, experiment
from varmem.memories.factual.capacity import max_capacity, n_log_n

JSON_NAME, PNG_NAME = "factual_capacity.json", "factual_capacity.png"
GUIDE = {"trained": 1.3, "mlp": 0.35}  # parameters = c · N ln N, the official plots' guide lines
REFERENCE = {"trained": {8: 21.0, 16: 60.0, 32: 168.25}, "hebbian": {32: 35, 64: 114, 128: 447}}
"""§1.4 (ours): trained = mean of the lr 1000 / lr 0.01 values; Hebbian = mean over 3 seeds."""


def solve_n_log_n(c: float) -> float:
    """``N`` with ``N ln N = c`` (Newton's method on ``N ln N − c``)."""
    n = max(c / max(math.log(max(c, 3.0)), 1.0), 2.0)
    for _ in range(50):
        n = max(n - (n * math.log(n) - c) / (math.log(n) + 1), 1.0001)
    return n


def sweep(kind: str, dims: Sequence[int], seeds: Sequence[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for d in tqdm(dims, desc=kind, unit="d", leave=False):
        for seed in seeds:
            dtype = args.torch_dtype
            if kind == "mlp":
                m = args.mlp_ratio * d

                def build(d=d, m=m, seed=seed, dtype=dtype):
                    return MLPAssociativeMemory(d, hidden=m, max_steps=args.mlp_steps, seed=seed, dtype=dtype)

                params, lo, hi = m * d, d, m * d
            else:
                def build(d=d, seed=seed, rule=("hebbian" if kind == "hebbian" else "trained"), dtype=dtype):
                    return LinearAssociativeMemory(d, rule=rule, max_steps=args.linear_steps, seed=seed, dtype=dtype)

                params, lo, hi = d * d, d, max(d * d // 2, 2 * d)
            start = time.perf_counter()
            r = max_capacity(build, lo, hi, seed=seed, threshold=args.threshold, ratio=args.ratio)
            rows.append({"kind": kind, "d": d, "m": args.mlp_ratio * d if kind == "mlp" else None, "seed": seed,
                         "params": params, "capacity": r.capacity, "first_failing": r.first_failing,
                         "N_ln_N": n_log_n(r.capacity),
                         "params_over_N_ln_N": params / n_log_n(r.capacity) if r.capacity > 1 else None,
                         "tried": [{"N": n, "accuracy": a, "steps": s} for n, a, s in r.tried],
                         "seconds": time.perf_counter() - start})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("trained", "hebbian", "mlp"):
        ratios = [r["params_over_N_ln_N"] for r in rows if r["kind"] == kind and r["params_over_N_ln_N"]]
        if not ratios:
            continue
        per_d: dict[int, list[int]] = {}
        for r in rows:
            if r["kind"] == kind:
                per_d.setdefault(r["d"], []).append(r["capacity"])
        out[kind] = {"params_over_N_ln_N_min": min(ratios), "params_over_N_ln_N_max": max(ratios),
                     "params_over_N_ln_N_median": sorted(ratios)[len(ratios) // 2],
                     "guide": GUIDE.get(kind), "mean_capacity": {d: sum(v) / len(v) for d, v in per_d.items()}}
    return out


def plot(result: dict[str, Any], path: Any) -> None:
    rows, summary = result["rows"], result["summary"]
    fig, axes = experiment.subplots(1, 2, figsize=(11, 4.3))
    colours = {"trained": "C0", "hebbian": "C3", "mlp": "C2"}
    labels = {"trained": "linear, trained (CE)", "hebbian": "linear, Hebbian Σ u eᵀ", "mlp": "MLP m = d, trained"}
    for ax, kinds in zip(axes, (("trained", "hebbian"), ("mlp",)), strict=True):
        xs_all = []
        for kind in kinds:
            by_p: dict[int, list[int]] = {}
            for r in rows:
                if r["kind"] == kind:
                    by_p.setdefault(r["params"], []).append(r["capacity"])
            if not by_p:
                continue
            ps = sorted(by_p)
            xs_all += ps
            mean = [sum(by_p[p]) / len(by_p[p]) for p in ps]
            ax.plot(ps, mean, "o-", color=colours[kind], label=f"{labels[kind]} (mean of seeds)")
            ax.fill_between(ps, [min(by_p[p]) for p in ps], [max(by_p[p]) for p in ps], color=colours[kind],
                            alpha=0.2)
            if kind == "hebbian" and kind in summary:
                c = summary[kind]["params_over_N_ln_N_median"]
                grid = [min(ps) * (max(ps) / min(ps)) ** (i / 40) for i in range(41)]
                ax.plot(grid, [solve_n_log_n(p / c) for p in grid], ":", color=colours[kind],
                        label=f"fit d² = {c:.1f} N ln N (Hebbian)")
        if not xs_all:
            continue
        lo_x, hi_x = 0.7 * min(xs_all), 1.4 * max(xs_all)
        grid = [lo_x * (hi_x / lo_x) ** (i / 40) for i in range(41)]
        guide = "trained" if "trained" in kinds else "mlp"
        c = GUIDE[guide]
        name = "d²" if guide == "trained" else "m d"
        ax.plot(grid, [solve_n_log_n(p / c) for p in grid], "k--", label=f"paper's guide line {name} = {c} N ln N")
        if guide == "trained":
            for kind, ref in REFERENCE.items():
                ax.plot([d * d for d in ref], list(ref.values()), "*", color=colours[kind], ms=10, mec="k",
                        label=f"reference §1.4 ({kind}, ours)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ys = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
        ax.set_ylim(0.8 * min(ys), 1.25 * max(ys))
        ax.set(xlabel="parameters (d² linear, m·d MLP)", ylabel="largest N stored at ≥ 99 % accuracy",
               title="linear associative memory" if guide == "trained" else "MLP associative memory (m = d)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "factual_capacity",
                          smoke="linear d = 8 (≤ 1024 steps), Hebbian d ≤ 32, MLP d = 4 (≤ 512 steps)",
                          dtype="float32", threads=1)
    p.add_argument("--linear-dims", type=int, nargs="*", default=[8, 11, 16, 22, 32])
    p.add_argument("--hebbian-dims", type=int, nargs="*", default=[16, 32, 64, 128])
    p.add_argument("--mlp-dims", type=int, nargs="*", default=[8])
    p.add_argument("--mlp-ratio", type=int, default=1, help="m = ratio · d")
    p.add_argument("--seeds", type=int, default=2, help="seeds per trained size (Hebbian: 3)")
    p.add_argument("--linear-steps", type=int, default=4096, help="most Adam steps per trained linear write")
    p.add_argument("--mlp-steps", type=int, default=2**15, help="most Adam steps per MLP write")
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--ratio", type=float, default=1.01, help="binary search stops at hi/lo ≤ ratio")
    args = p.parse_args(argv)
    if args.smoke:
        args.linear_dims, args.hebbian_dims, args.mlp_dims = [8], [16, 32], [4]
        args.seeds, args.linear_steps, args.mlp_steps, args.ratio = 1, 1024, 512, 1.1
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    seeds = [args.seed + i for i in range(args.seeds)]
    rows = (sweep("trained", args.linear_dims, seeds, args)
            + sweep("hebbian", args.hebbian_dims, [args.seed + i for i in range(max(args.seeds, 3))], args)
            + sweep("mlp", args.mlp_dims, seeds[:1], args))
    result: dict[str, Any] = {
        "experiment": "capacity of linear / MLP associative memories (Nichani, Lee & Bietti, Fig. 1)",
        **experiment.record(args),
        "settings": experiment.settings(args, exclude=("output",)),
        "guide_lines": GUIDE, "reference": REFERENCE, "rows": rows, "summary": summarise(rows),
        "seconds": time.perf_counter() - start,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print("capacity at ≥ 99 % accuracy (params / (N ln N); guide: trained 1.3, MLP 0.35)")
    for r in rows:
        ratio = r["params_over_N_ln_N"]
        print(f"  {r['kind']:<8} d={r['d']:<4} seed={r['seed']}  N_max={r['capacity']:<6} "
              f"params/(N ln N)={'-' if ratio is None else f'{ratio:.2f}'}  ({r['seconds']:.0f} s)")
    print(f"  {result['seconds']:.0f} s; {experiment.wrote(written)}")
    return result


if __name__ == "__main__":
    main()
