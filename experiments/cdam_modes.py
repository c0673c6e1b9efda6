"""CDAM's four dynamical modes on a ring and on Zachary's karate club (reference §4).

Setting (ours; the paper's code is not public): ``n = 2000`` random ±1 patterns, one per graph node
(ring: ``p = 20``; karate club: ``p = 34``), row-normalised adjacency, ``β = 0.05`` (so ``β n = 100``),
``η = 0.5``, 60 updates from every stored pattern as cue.  The attention ``g = softmax(β X σ)`` is
averaged over the last 10 steps.  Modes and their parameters ``(a, h)``:

============================  ===========  =====================================================
mode                          ``(a, h)``   classified when (checked in this order)
============================  ===========  =====================================================
neutral quiescence            (0.05, 0.05) RMS activity ``‖σ‖/√n < 0.1``
auto-association              (1, 0)       attention on the cue ``≥ 0.9``
narrow hetero-association     (0, 1)       attention beyond graph distance 1 ``< 0.3``
wide hetero-association       (-0.5, 1)    otherwise (spreads past the neighbours)
============================  ===========  =====================================================

For the karate club the fraction of attention inside the cue's club (after the split) is reported:
wide hetero-association spreads over the cue's community.  A phase map over ``a × h`` is drawn too.

Outputs (``--output``, default ``results/cdam_modes``): ``cdam_modes.json``, ``cdam_modes.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from varmem import experiment
from varmem.baselines.cdam import CorrelatedDenseMemory, karate_club_graph, ring_graph

JSON_NAME, PNG_NAME = "cdam_modes.json", "cdam_modes.png"
MODES = {"quiescence": (0.05, 0.05), "auto": (1.0, 0.0), "narrow_hetero": (0.0, 1.0), "wide_hetero": (-0.5, 1.0)}
MODE_CODES = {"quiescence": 0, "auto": 1, "narrow_hetero": 2, "wide_hetero": 3}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "cdam_modes", smoke="coarse phase map (seconds)")
    p.add_argument("--dim", type=int, default=2000)
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--eta", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args(argv)
    args.grid_a = [-1.0, 0.0, 1.0] if args.smoke else [round(-1.0 + 0.25 * i, 2) for i in range(9)]
    args.grid_h = [0.0, 1.0] if args.smoke else [round(0.25 * i, 2) for i in range(5)]
    return args


def graph_distances(adjacency: torch.Tensor) -> torch.Tensor:
    """All-pairs hop distances (``inf`` if unreachable) by breadth-first frontier expansion."""
    p = adjacency.shape[0]
    edges = (adjacency > 0).to(torch.float64)
    dist = torch.full((p, p), float("inf"), dtype=torch.float64)
    dist.fill_diagonal_(0)
    reached = torch.eye(p, dtype=torch.bool)
    frontier, k = reached.clone(), 0
    while True:
        k += 1
        nxt = ((frontier.to(torch.float64) @ edges) > 0) & ~reached
        if not nxt.any():
            return dist
        dist[nxt] = k
        reached |= nxt
        frontier = nxt


def run_mode(memory: CorrelatedDenseMemory, distances: torch.Tensor, steps: int,
             clubs: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
    """Run from every stored pattern; return attention-by-distance, activity and the mode."""
    x = memory.items
    z = x.clone()
    attention = torch.zeros(len(x), len(x), dtype=x.dtype)
    with torch.no_grad():
        for t in range(steps):
            z = z + memory.eta * memory.drive(z)  # the fixed-point step without its energy
            if t >= steps - 10:
                attention += torch.softmax(memory.beta * z @ x.T, -1) / 10
    activity = float((z.norm(dim=-1) / x.shape[1] ** 0.5).mean())
    on_cue = float(attention.diagonal().mean())
    beyond_one = float((attention * (distances > 1)).sum(-1).mean())
    by_distance = [float((attention * (distances == k)).sum(-1).mean()) for k in range(5)]
    entropy = -(attention * attention.clamp_min(1e-300).log()).sum(-1)
    row = {"activity": activity, "attention_on_cue": on_cue, "attention_beyond_distance_1": beyond_one,
           "attention_by_distance": by_distance, "effective_memories": float(entropy.exp().mean()),
           "mode": classify(activity, on_cue, beyond_one)}  # fmt: skip
    if clubs is not None:
        same = (clubs.unsqueeze(0) == clubs.unsqueeze(1)).to(attention.dtype)
        row["attention_in_cue_club"] = float((attention * same).sum(-1).mean())
    return row


def classify(activity: float, on_cue: float, beyond_one: float) -> str:
    """The mode rule of the module docstring."""
    if activity < 0.1:
        return "quiescence"
    if on_cue >= 0.9:
        return "auto"
    return "narrow_hetero" if beyond_one < 0.3 else "wide_hetero"


def graphs() -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    karate, clubs = karate_club_graph(dtype=torch.float64)
    return {"ring": (ring_graph(20, dtype=torch.float64), None), "karate": (karate, clubs)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:

    args = parse_args(argv)
    result: dict[str, Any] = {
        **experiment.record(args, smoke=args.smoke),
        "settings": {"dim": args.dim, "beta": args.beta, "eta": args.eta, "steps": args.steps, "normalization": "row",
                     "patterns": "random ±1", "modes": {k: list(v) for k, v in MODES.items()},
                     "grid_a": args.grid_a, "grid_h": args.grid_h},
        "graphs": {},
    }  # fmt: skip
    for name, (adjacency, clubs) in graphs().items():
        gen = torch.Generator().manual_seed(args.seed)
        p = adjacency.shape[0]
        patterns = torch.where(torch.rand(p, args.dim, generator=gen, dtype=torch.float64) > 0.5, 1.0, -1.0)
        distances = graph_distances(adjacency)

        def memory(a: float, h: float, x: torch.Tensor = patterns, adj: torch.Tensor = adjacency):
            mem = CorrelatedDenseMemory(args.dim, a=a, h=h, beta=args.beta, eta=args.eta, dtype=torch.float64)
            return mem.write(x).set_graph(adj)

        modes = {mode: run_mode(memory(a, h), distances, args.steps, clubs) for mode, (a, h) in MODES.items()}
        phase = [[MODE_CODES[run_mode(memory(a, h), distances, args.steps)["mode"]] for a in args.grid_a]
                 for h in tqdm(args.grid_h, desc=f"phase map {name}", leave=False)]  # fmt: skip
        result["graphs"][name] = {"nodes": p, "edges": int((adjacency > 0).sum()) // 2, "modes": modes,
                                  "phase_map": phase}  # fmt: skip
    experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print(format_table(result))
    return result


TABLE = [
    ("graph", ">6", lambda t: t[0]), ("mode (a, h)", ">26", lambda t: f"{t[1]} {MODES[t[1]]}"), "|",
    ("activity", ">8.3f", lambda t: t[2]["activity"]), ("on cue", ">7.3f", lambda t: t[2]["attention_on_cue"]),
    ("dist>1", ">7.3f", lambda t: t[2]["attention_beyond_distance_1"]),
    ("n_eff", ">6.2f", lambda t: t[2]["effective_memories"]),
    ("club", ">5", lambda t: experiment.format_value(t[2].get("attention_in_cue_club"), ".2f")), "|",
    ("classified", "", lambda t: t[2]["mode"]),
]  # fmt: skip
"""The mode table; a row is ``(graph, mode, result of run_mode)``."""


def format_table(result: dict[str, Any]) -> str:
    rows = [(name, mode, row) for name, g in result["graphs"].items() for mode, row in g["modes"].items()]
    return experiment.format_table(rows, TABLE)


def plot(result: dict[str, Any], path: Path) -> None:
    names = list(result["graphs"])
    fig, axes = experiment.subplots(2, len(names), figsize=(6 * len(names), 8))
    s = result["settings"]
    for j, name in enumerate(names):
        g = result["graphs"][name]
        ax = axes[0, j]
        for mode, row in g["modes"].items():
            ax.plot(range(5), row["attention_by_distance"], "o-", label=f"{mode} {MODES[mode]}")
        ax.set(xlabel="graph distance from the cue", ylabel="mean attention", title=f"{name}: attention profile")
        ax.legend(fontsize=8)
        ax = axes[1, j]
        im = ax.imshow(g["phase_map"], origin="lower", cmap="viridis", vmin=0, vmax=3, aspect="auto",
                       extent=(s["grid_a"][0], s["grid_a"][-1], s["grid_h"][0], s["grid_h"][-1]))  # fmt: skip
        ax.set(xlabel="a (auto)", ylabel="h (hetero)", title=f"{name}: mode map")
        cbar = fig.colorbar(im, ax=ax, ticks=list(MODE_CODES.values()))
        cbar.ax.set_yticklabels(list(MODE_CODES))
    fig.suptitle(f"CDAM, n={s['dim']}, β={s['beta']}, η={s['eta']}, {s['steps']} steps")
    experiment.save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
