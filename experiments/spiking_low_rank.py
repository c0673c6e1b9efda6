"""The spiking low-rank memory (our reconstruction of Podlaski & Machens 2024): identity, engines, capacity, completion.

**Reconstruction.**  The paper's body (arXiv 2411.17485) was not readable; ``varmem.SpikingLowRankMemory``
builds the predecessor framework's spiking simulator (``V = F x + E y + b``, ``W = E D``, one spike per Euler
step, ``dt = 0.1 ms``, ``τ = 10 ms``, voltage noise) around a box-shaped latent polytope whose vertices hold
±1 patterns, with Hebbian and pseudo-inverse latent weights (our choices, marked [U] in its docstring).  No
number below is the paper's; the only published claim tested is qualitative (abstract): storage capacity
grows linearly with the number of neurons.

1. **Vertex-stability identity** (exact): on all ``2^K`` vertices (``K = 10``), the geometric stability
   (the latent flow leaves every active face) equals the Hopfield fixed-point condition ``ξ_k (A ξ)_k > 0``;
   we count mismatches (expected 0) for both rules and several pattern sets.
2. **Spiking vs latent engine**: the same cues (flipped bits) read by both engines for the same simulated
   time at a small ``dt`` (one spike per step; ``δ ≥ K dt/τ`` so the spikes can hold the box); fraction of
   cues ending at the same vertex (brief: ≥ 95 %), overall and among the cues the latent engine has settled.
3. **Capacity against N** (``N = 2K`` neurons): the largest ``P`` (bisection) at which ≥ 90 % of the stored
   patterns are recalled with overlap ≥ 0.98 from cues with 10 % of their bits flipped (latent engine), and
   the largest ``P`` at which every stored pattern is a stable vertex; mean over seeds; a least-squares line
   ``P_c = slope · N + c`` per rule with its R².  The slopes are ours, not the paper's.
4. **Pattern completion against ``varmem.ClassicalHopfield``**: the same ±1 patterns and the same cues with
   a fraction of bits flipped; exact recall for the latent reads (both rules), the spiking read (Hebbian,
   every neuron above threshold spikes, ``dt = 0.1 ms``) and the classical network (Hebbian, asynchronous).

Outputs (``--output``, default ``results/spiking_low_rank``): ``spiking_low_rank.json`` (config, seed,
versions, device, every table, the checks) and the figures ``spiking_low_rank_capacity.png``,
``spiking_low_rank_completion.png``, ``spiking_low_rank_raster.png``.

Usage::

    python experiments/spiking_low_rank.py            # K up to 256, 3 seeds: a few minutes on one CPU thread
    python experiments/spiking_low_rank.py --smoke    # K up to 64, one seed, fewer cues: ~10 s (used by the tests)
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME = "spiking_low_rank.json"
FIGURES = ("spiking_low_rank_capacity.png", "spiking_low_rank_completion.png", "spiking_low_rank_raster.png")
RULES = ("hebbian", "pseudoinverse")
STATUS = ("reconstruction of Podlaski & Machens (arXiv 2411.17485): the paper's body was not readable; the "
          "geometry, learning rules and protocols are ours; only the framework simulator is verified")
F64 = torch.float64


def _patterns(P: int, K: int, generator: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(P, K, generator=generator, dtype=F64) > 0.5, 1.0, -1.0).to(F64)


def _flip(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    out = x.clone()
    out[torch.rand(x.shape, generator=generator, dtype=F64) < fraction] *= -1
    return out


# --- 1. the identity -----------------------------------------------------------------------------------
def identity_check(K: int = 10, pattern_counts: Sequence[int] = (1, 2, 3, 5), seed: int = 0) -> list[dict[str, Any]]:
    """Mismatches between ``vertex_stable`` (geometry) and ``ξ_k (A ξ)_k > 0`` (Hopfield) on all vertices."""
    vertices = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=K)), dtype=F64)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for rule, P in itertools.product(RULES, pattern_counts):
        xi = _patterns(P, K, g)
        memory = varmem.SpikingLowRankMemory(K, rule=rule, dtype=F64).write(xi)
        geometric = memory.vertex_stable(vertices)
        hopfield = (vertices * (vertices @ memory.latent_weight) > 0).all(-1)
        rows.append({"rule": rule, "K": K, "P": P, "vertices": len(vertices), "stable": int(geometric.sum()),
                     "mismatches": int((geometric != hopfield).sum()),
                     "stored_stable": int(memory.vertex_stable(xi).sum())})
    return rows


# --- 2. the two engines --------------------------------------------------------------------------------
def agreement(K: int, P: int, cues: int, flips: Sequence[float], dt: float, seconds: float, spike_size: float,
              seed: int) -> list[dict[str, Any]]:
    """Final vertices of the spiking (one spike per step) and the latent engine, same cues, same time."""
    g = torch.Generator().manual_seed(seed)
    steps = round(seconds / dt)
    rows = []
    for rule, flip in itertools.product(RULES, flips):
        xi = _patterns(P, K, g)
        target = xi[torch.arange(cues) % P]
        cue = _flip(target, flip, g)
        memory = varmem.SpikingLowRankMemory(K, rule=rule, spike_size=spike_size, dtype=F64).write(xi)
        start = time.perf_counter()
        spiking = memory.retrieve(cue, method="spiking", dt=dt, max_steps=steps, trace=False)
        spiking_seconds = time.perf_counter() - start
        latent = memory.retrieve(cue, method="latent", dt=dt, max_steps=steps, trace=False)
        agree = (latent.pattern == spiking.pattern).all(-1)
        rows.append({
            "rule": rule, "K": K, "P": P, "flip": flip, "cues": cues, "dt": dt, "steps": steps,
            "spike_size": spike_size, "agreement": float(agree.double().mean()),
            "latent_settled": float(latent.converged.double().mean()),
            "agreement_settled": float(agree[latent.converged].double().mean()) if latent.converged.any() else None,
            "latent_recall": float((latent.pattern == target).all(-1).double().mean()),
            "spiking_recall": float((spiking.pattern == target).all(-1).double().mean()),
            "max_excursion": spiking.info["max_excursion"],
            "mean_rate_hz": float(spiking.info["rates_hz"].mean()), "spiking_seconds": spiking_seconds,
        })
    return rows


# --- 3. capacity ------------------------------------------------------------------------------------------
def recall_fraction(K: int, P: int, rule: str, seed: int, flip: float) -> tuple[float, bool]:
    """(fraction of the P stored patterns recalled with overlap ≥ 0.98 from ``flip``-corrupted cues, whether
    every stored pattern is a stable vertex), for one pattern set drawn from ``(seed, K, P)``."""
    g = torch.Generator().manual_seed(1_000_003 * seed + 10_007 * K + P)
    xi = _patterns(P, K, g)
    memory = varmem.SpikingLowRankMemory(K, rule=rule, dtype=F64).write(xi)
    read = memory.retrieve(_flip(xi, flip, g), method="latent", dt=2e-3, max_steps=500, trace=False)
    overlap = (read.pattern * xi).mean(-1)
    return float((overlap >= 0.98).double().mean()), bool(memory.vertex_stable(xi).all())


def _largest_passing(K: int, passes: Any) -> int:
    """Largest P in [0, K] with ``passes(P)`` by bisection (assumes passing up to a threshold)."""
    lo, hi = 0, K  # passes(0) by convention; passes(K) is tested
    if passes(K):
        return K
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def capacity_sweep(Ks: Sequence[int], seeds: Sequence[int], flip: float = 0.1,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Recall and exact-stability capacities per rule, ``K`` and seed (module docstring, part 3)."""
    rows = []
    jobs = list(itertools.product(RULES, Ks, seeds))
    for rule, K, seed in tqdm(jobs, disable=not progress, desc="capacity"):
        cache: dict[int, tuple[float, bool]] = {}

        def result(P: int, K: int = K, rule: str = rule, seed: int = seed,
                   cache: dict[int, tuple[float, bool]] = cache) -> tuple[float, bool]:
            if P not in cache:
                cache[P] = recall_fraction(K, P, rule, seed, flip)
            return cache[P]

        recall = _largest_passing(K, lambda P, result=result: result(P)[0] >= 0.9)
        stable = _largest_passing(K, lambda P, result=result: result(P)[1])
        rows.append({"rule": rule, "K": K, "N": 2 * K, "seed": seed, "recall_capacity": recall,
                     "stable_capacity": stable, "evaluations": len(cache)})
    return rows


def _line(x: list[float], y: list[float]) -> dict[str, float]:
    X = torch.tensor([[xi, 1.0] for xi in x], dtype=F64)
    Y = torch.tensor(y, dtype=F64)
    coef = torch.linalg.lstsq(X, Y.unsqueeze(-1)).solution.squeeze(-1)
    resid = Y - X @ coef
    ss_tot = float(((Y - Y.mean()) ** 2).sum())
    return {"slope": float(coef[0]), "intercept": float(coef[1]),
            "r2": 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")}


def fit_slopes(rows: list[dict[str, Any]], key: str = "recall_capacity") -> dict[str, dict[str, Any]]:
    """Per rule: the least-squares line of the seed-mean ``key`` against ``N``; slopes per neuron and per
    latent unit (``K = N/2``)."""
    out = {}
    for rule in RULES:
        Ns = sorted({r["N"] for r in rows if r["rule"] == rule})
        means = [sum(r[key] for r in rows if r["rule"] == rule and r["N"] == n)
                 / sum(1 for r in rows if r["rule"] == rule and r["N"] == n) for n in Ns]
        line = _line([float(n) for n in Ns], means)
        out[rule] = {"N": Ns, "mean": means, "slope_per_neuron": line["slope"], "slope_per_latent_unit":
                     2 * line["slope"], "intercept": line["intercept"], "r2": line["r2"]}
    return out


# --- 4. pattern completion -----------------------------------------------------------------------------
def completion(K: int, Ps: Sequence[int], flips: Sequence[float], cues: int, seed: int) -> list[dict[str, Any]]:
    """Exact recall of the same cues by the latent reads, the spiking read and ClassicalHopfield."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for P in Ps:
        xi = _patterns(P, K, g)
        target = xi[torch.arange(cues) % P]
        hebbian = varmem.SpikingLowRankMemory(K, dtype=F64).write(xi)
        pinv = varmem.SpikingLowRankMemory(K, rule="pseudoinverse", dtype=F64).write(xi)
        hopfield = varmem.ClassicalHopfield(K, dtype=F64).write(xi)
        for flip in flips:
            cue = _flip(target, flip, g)
            reads = {
                "latent_hebbian": hebbian.retrieve(cue, trace=False),
                "latent_pseudoinverse": pinv.retrieve(cue, trace=False),
                "spiking_hebbian": hebbian.retrieve(cue, method="spiking", one_spike_per_step=False, trace=False),
                "hopfield_async": hopfield.retrieve(cue, method="async", seed=seed),
            }
            row = {"K": K, "P": P, "load": P / K, "flip": flip, "cues": cues}
            for name, read in reads.items():
                row[name] = float((read.pattern == target).all(-1).double().mean())
                row[name + "_overlap"] = float((read.pattern * target).mean())
            rows.append(row)
    return rows


# --- figures ---------------------------------------------------------------------------------------------
def plot_capacity(result: dict[str, Any], path: Any) -> None:
    fig, ax = experiment.subplots(1, 1, figsize=(6.2, 4.2))
    for i, rule in enumerate(RULES):
        for key, marker, ls in (("recall_capacity", "o", "-"), ("stable_capacity", "s", ":")):
            fit = result["capacity_fits"][key][rule]
            label = f"{rule}, {'recall' if key == 'recall_capacity' else 'all stored stable'}"
            ax.plot(fit["N"], fit["mean"], marker, color=f"C{i}", ls="none",
                    label=f"{label}: slope {fit['slope_per_neuron']:.3f}/neuron, R² {fit['r2']:.3f}")
            xs = [min(fit["N"]), max(fit["N"])]
            ax.plot(xs, [fit["slope_per_neuron"] * x + fit["intercept"] for x in xs], color=f"C{i}", ls=ls, lw=1)
    ax.set(xlabel="neurons N = 2K", ylabel="patterns P_c",
           title="Capacity of the reconstruction (latent engine, 10 % flips)")
    ax.legend(fontsize=7)
    experiment.save_figure(fig, path)


def plot_completion(result: dict[str, Any], path: Any) -> None:
    rows = result["completion"]
    Ps = sorted({r["P"] for r in rows})
    fig, axes = experiment.subplots(1, len(Ps), figsize=(4.0 * len(Ps), 3.6), squeeze=False)
    names = {"latent_hebbian": "latent, Hebbian", "latent_pseudoinverse": "latent, pseudo-inverse",
             "spiking_hebbian": "spiking, Hebbian", "hopfield_async": "ClassicalHopfield (async)"}
    for ax, P in zip(axes[0], Ps, strict=True):
        sub = [r for r in rows if r["P"] == P]
        for (key, label), style in zip(names.items(), ("o-", "s-", "^--", "kx:"), strict=True):
            ax.plot([r["flip"] for r in sub], [r[key] for r in sub], style, label=label)
        ax.set(xlabel="fraction of bits flipped", ylabel="exact recall", ylim=(-0.03, 1.03),
               title=f"K = {sub[0]['K']}, P = {P} (load {P / sub[0]['K']:.2f})")
    fig.suptitle("Pattern completion: the spiking low-rank reconstruction against ClassicalHopfield", fontsize=10)
    axes[0][0].legend(fontsize=7)
    experiment.save_figure(fig, path)


def plot_raster(memory: Any, cue: torch.Tensor, dt: float, steps: int, path: Any) -> dict[str, Any]:
    """Spike raster and latent trajectories of one trial, with the latent engine's trajectory overlaid."""
    read = memory.retrieve(cue, method="spiking", dt=dt, max_steps=steps, record=True)
    spikes, states = read.info["spikes"][:, 0], read.info["states"][:, 0]  # [T, N], [T + 1, K]
    h = dt / memory.tau
    y = memory.init_latent(cue, None, 0.5)
    latent = [y[0]]
    for _ in range(steps):  # the latent engine's update, step by step (no early stop) for the overlay
        y = (y + h * memory.latent_flow(y)).clamp(-1, 1)
        latent.append(y[0])
    latent = torch.stack(latent)
    t_ms = torch.arange(steps + 1, dtype=F64) * dt * 1e3
    fig, axes = experiment.subplots(2, 1, figsize=(7, 6), sharex=True)
    times, neurons = spikes.nonzero(as_tuple=True)
    axes[0].plot((times + 1) * dt * 1e3, neurons, "|", ms=4, color="k")
    K = memory.dim
    axes[0].axhline(K - 0.5, color="grey", lw=0.5)
    axes[0].set(ylabel="neuron (0..K-1: faces y=+1, K..2K-1: y=-1)",
                title="spikes of one trial, one per step (the reconstruction, K = 16)")
    for k in range(K):
        axes[1].plot(t_ms, states[:, k], color=f"C{k % 10}", lw=0.8)
        axes[1].plot(t_ms, latent[:, k], color=f"C{k % 10}", lw=0.8, ls=":")
    axes[1].set(xlabel="time (ms)", ylabel="latent y_k", title="spiking (solid) and latent engine (dotted)")
    experiment.save_figure(fig, path)
    return {"spikes": int(spikes.sum()), "final_agree": bool(torch.equal(read.pattern[0],
                                                                             varmem.baselines.spiking.sign_pattern(y[0])))}


# --- run -----------------------------------------------------------------------------------------------
def checks(result: dict[str, Any]) -> dict[str, bool]:
    fits = result["capacity_fits"]["recall_capacity"]
    agree = result["agreement"]
    comp = {(r["P"], r["flip"]): r for r in result["completion"]}
    return {
        "identity: no mismatch on any vertex": all(r["mismatches"] == 0 for r in result["identity"]),
        "engines agree on >= 95 % of final vertices (every rule and flip level)": all(
            r["agreement"] >= 0.95 for r in agree),
        "capacity linear in N: R² >= 0.9 for both rules": all(fits[r]["r2"] >= 0.9 for r in RULES),
        "pseudo-inverse slope >= 2x Hebbian slope": fits["pseudoinverse"]["slope_per_neuron"]
        >= 2 * fits["hebbian"]["slope_per_neuron"] > 0,
        "latent Hebbian within 0.1 of ClassicalHopfield, mean |difference| over the completion cells": sum(
            abs(r["latent_hebbian"] - r["hopfield_async"]) for r in comp.values()) / len(comp) <= 0.1,
        "pseudo-inverse recalls at least as well as Hebbian on every completion cell": all(
            r["latent_pseudoinverse"] >= r["latent_hebbian"] for r in comp.values()),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = experiment.parser(__doc__, "spiking_low_rank", smoke="small run (K <= 64, one seed) for the tests",
                               threads=1, threads_help="torch CPU threads (small ops: 1 is fastest)")
    parser.add_argument("--Ks", type=int, nargs="+", default=None, help="latent sizes K of the capacity sweep")
    parser.add_argument("--seeds", type=int, default=None, help="pattern sets per (rule, K) in the capacity sweep")
    parser.add_argument("--completion-K", type=int, default=None, help="K of the completion comparison")
    parser.add_argument("--cues", type=int, default=None, help="cues per cell (agreement, completion)")
    args = parser.parse_args(argv)
    args.Ks = tuple(args.Ks or ((16, 32, 64) if args.smoke else (32, 64, 128, 256)))
    args.seeds = args.seeds or (1 if args.smoke else 3)
    args.completion_K = args.completion_K or (64 if args.smoke else 100)
    args.cues = args.cues or (30 if args.smoke else 200)
    if min(args.Ks) < 4 or args.seeds < 1 or args.cues < 1 or args.completion_K < 10:
        parser.error("--Ks >= 4, --seeds >= 1, --cues >= 1, --completion-K >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {"status": STATUS, "config": experiment.settings(args), **experiment.record(args)}
    timings = result["part_seconds"] = {}
    clock = time.perf_counter()
    result["identity"] = identity_check(seed=args.seed)
    timings["identity"], clock = time.perf_counter() - clock, time.perf_counter()
    result["agreement"] = agreement(
        K=32, P=4, cues=args.cues, flips=(0.25,) if args.smoke else (0.1, 0.25), dt=1e-5,
        seconds=0.05 if args.smoke else 0.1, spike_size=0.05, seed=args.seed)
    timings["agreement"], clock = time.perf_counter() - clock, time.perf_counter()
    seeds = tuple(args.seed + i for i in range(args.seeds))
    result["capacity"] = capacity_sweep(args.Ks, seeds, flip=0.1)
    result["capacity_fits"] = {key: fit_slopes(result["capacity"], key)
                               for key in ("recall_capacity", "stable_capacity")}
    timings["capacity"], clock = time.perf_counter() - clock, time.perf_counter()
    K = args.completion_K
    result["completion"] = completion(K, (round(0.05 * K), round(0.1 * K), round(0.2 * K)),
                                      (0.2,) if args.smoke else (0.1, 0.2, 0.3), args.cues, args.seed)
    timings["completion"] = time.perf_counter() - clock
    g = torch.Generator().manual_seed(args.seed)
    xi = _patterns(3, 16, g)
    raster_memory = varmem.SpikingLowRankMemory(16, spike_size=0.05, dtype=F64).write(xi)
    result["checks"] = checks(result)
    result["raster"] = {}

    def draw_raster(path: Any) -> None:
        result["raster"] = plot_raster(raster_memory, _flip(xi[:1], 0.25, g), 1e-5, 2500 if args.smoke else 4000,
                                       path)

    figures = {FIGURES[0]: lambda p: plot_capacity(result, p), FIGURES[1]: lambda p: plot_completion(result, p),
               FIGURES[2]: draw_raster}
    result["seconds"] = time.perf_counter() - start
    written = experiment.save_results(args.output, JSON_NAME, result, figures)
    experiment.write_json(written[0], result)  # again, with the raster's numbers
    print(format_summary(result))
    print(f"\n{result['seconds']:.1f} s; {experiment.wrote(written)}")
    return result


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"STATUS: {result['status']}", "", "identity (geometric stability vs Hopfield condition, all vertices):"]
    for r in result["identity"]:
        lines.append(f"  {r['rule']:13s} K={r['K']} P={r['P']}: {r['stable']} stable vertices, "
                     f"{r['mismatches']} mismatches, {r['stored_stable']}/{r['P']} stored stable")
    lines.append("spiking vs latent (same cues, same time):")
    for r in result["agreement"]:
        settled = "-" if r["agreement_settled"] is None else f"{r['agreement_settled']:.3f}"
        lines.append(f"  {r['rule']:13s} flip {r['flip']:.2f}: agree {r['agreement']:.3f} (settled "
                     f"{r['latent_settled']:.2f}: {settled}), excursion {r['max_excursion']:.3f}, "
                     f"rate {r['mean_rate_hz']:.0f} Hz, {r['spiking_seconds']:.1f} s")
    for key, fits in result["capacity_fits"].items():
        lines.append(f"{key} against N:")
        for rule, f in fits.items():
            pairs = ", ".join(f"N={n}: {m:.1f}" for n, m in zip(f["N"], f["mean"], strict=True))
            lines.append(f"  {rule:13s} {pairs}; slope {f['slope_per_neuron']:.4f} per neuron "
                         f"({f['slope_per_latent_unit']:.4f} per latent unit), R² {f['r2']:.4f}")
    lines.append("completion (exact recall): P flip  latent-heb latent-pinv spiking-heb hopfield")
    for r in result["completion"]:
        lines.append(f"  {r['P']:3d} {r['flip']:.1f}  {r['latent_hebbian']:10.3f} {r['latent_pseudoinverse']:11.3f} "
                     f"{r['spiking_hebbian']:11.3f} {r['hopfield_async']:8.3f}")
    lines += ["checks:"] + [f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in result["checks"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
