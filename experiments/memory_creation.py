"""Memory creation by a Chinese-restaurant-process memory: how many memories are created as items are written.

Three runs of :class:`varmem.NonparametricMemory`:

1. **Gaussian mixture with known K** (well separated: centres ``N(0, spread² I)``, items
   ``N(centre, width² I)``): the number of memories ``K_n`` after ``n`` items, over the CRP
   concentration ``α`` and the kernel width ``s`` (in units of the true width), for ``"crp_map"``
   and ``"proportional"`` assignment; the adjusted Rand index of the memories against the true
   components; and a duplicate write (all items again), which must create nothing.
2. **Check of the prior**: ``"crp_sample"`` on data that carry no information about the partition
   (``s₀ ≪ s``, items ``N(μ₀, s²)``): the mean ``K_n`` over runs against the CRP expectation
   ``Σ_{i<n} α/(α+i)`` and its asymptote ``α log(1 + n/α)``; ``"crp_map"`` on the same data for contrast.
3. **Digits** (scikit-learn's 8×8 digits, 10 classes, centred): ``K_n`` over kernel widths in units of
   the pooled within-class standard deviation, with ``s₀`` = the RMS spread of the class means
   (both estimated with the labels, an oracle choice stated as such); ARI and purity of the memories.

Writes JSON (config, seed, versions, device, every curve) and a PNG into ``--output``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from sklearn.metrics import adjusted_rand_score
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.memories.nonparametric import expected_num_memories

JSON_NAME = "memory_creation.json"
PNG_NAME = "memory_creation.png"


# --- helpers -------------------------------------------------------------------------------------
def checkpoints(n: int, num: int = 25) -> list[int]:
    """About ``num`` log-spaced item counts from 1 to ``n`` (always including ``n``)."""
    pts = {max(1, round(math.exp(t))) for t in torch.linspace(0, math.log(n), num).tolist()}
    return sorted(pts | {n})


def write_and_count(memory: varmem.NonparametricMemory, items: torch.Tensor, at: Sequence[int], generator=None) -> list:
    """Write ``items`` in order and return ``K_n`` at each count in ``at`` (chunked writes are
    exactly sequential writes, so this equals writing one item at a time)."""
    counts, done = [], 0
    for n in at:
        memory.write(items[done:n], generator=generator)
        done = n
        counts.append(len(memory))
    return counts


def purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of items whose memory's majority label is their own."""
    k, c = int(assignments.max()) + 1, int(labels.max()) + 1
    table = torch.zeros(k, c, dtype=torch.float64)
    table.index_put_((assignments.cpu(), labels.cpu()), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    return float(table.max(-1).values.sum() / len(labels))


def duplicate_check(memory: varmem.NonparametricMemory, items: torch.Tensor) -> int:
    """Write every item again; return how many memories that created (expected: 0)."""
    before = len(memory)
    memory.write(items)
    return len(memory) - before


# --- the three runs ------------------------------------------------------------------------------
def run_mixture(args: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    k, d, n = args.mix_k, args.mix_dim, args.mix_items
    centres = args.mix_spread * torch.randn(k, d, generator=gen, dtype=args.dtype)
    labels = torch.randint(k, (n,), generator=gen)
    items = (centres[labels] + args.mix_width * torch.randn(n, d, generator=gen, dtype=args.dtype)).to(args.device)
    at = checkpoints(n)
    rows = []
    grid = [(a, w, asg) for a in args.alphas for w in args.width_factors for asg in ("crp_map", "proportional")]
    for alpha, factor, assignment in tqdm(grid, desc="mixture", leave=False):
        memory = varmem.NonparametricMemory(
            d, alpha=alpha, bandwidth=factor * args.mix_width, noise_scale=args.mix_width,
            prior_scale=args.mix_spread, assignment=assignment, device=args.device, dtype=args.dtype,
        )
        curve = write_and_count(memory, items, at)
        row = {
            "alpha": alpha, "width_factor": factor, "bandwidth": factor * args.mix_width, "assignment": assignment,
            "num_memories": curve, "final_num_memories": curve[-1],
            "ari": adjusted_rand_score(labels.numpy(), memory.assignments.cpu().numpy()),
        }
        row["duplicate_write_new_memories"] = duplicate_check(memory, items)
        rows.append(row)
    return {"true_k": k, "dim": d, "items": n, "spread": args.mix_spread, "width": args.mix_width,
            "checkpoints": at, "rows": rows}


def run_prior(args: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    n, runs = args.prior_items, args.prior_runs
    at = checkpoints(n)
    sampler = torch.Generator(device=args.device).manual_seed(args.seed + 1)  # drives crp_sample's draws
    rows = []
    for alpha in tqdm(args.prior_alphas, desc="prior", leave=False):
        curves = {"crp_sample": [], "crp_map": []}
        for r in range(runs):
            data = torch.randn(n, 2, generator=gen, dtype=args.dtype).to(args.device)
            for assignment in curves:
                if assignment == "crp_map" and r >= max(1, runs // 5):
                    continue  # deterministic rich-get-richer: a few runs suffice
                memory = varmem.NonparametricMemory(
                    2, alpha=alpha, bandwidth=1.0, noise_scale=1.0, prior_scale=1e-4, assignment=assignment,
                    device=args.device, dtype=args.dtype,
                )
                curves[assignment].append(write_and_count(memory, data, at, generator=sampler))
        sample = torch.tensor(curves["crp_sample"], dtype=torch.float64)
        expected = [expected_num_memories(m, alpha) for m in at]
        sd = math.sqrt(sum(alpha * i / (alpha + i) ** 2 for i in range(n)))
        rows.append({
            "alpha": alpha,
            "mean_num_memories": sample.mean(0).tolist(),
            "std_num_memories": sample.std(0).tolist() if runs > 1 else [0.0] * len(at),
            "expected_num_memories": expected,
            "asymptote_alpha_log": [alpha * math.log(1 + m / alpha) for m in at],
            "final_z_score": (sample[:, -1].mean().item() - expected[-1]) / (sd / math.sqrt(runs)),
            "crp_map_mean_num_memories": torch.tensor(curves["crp_map"], dtype=torch.float64).mean(0).tolist(),
        })
    return {"items": n, "runs": runs, "checkpoints": at, "rows": rows}


def run_digits(args: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    data = varmem.datasets.load_digits(dtype=args.dtype)
    perm = torch.randperm(len(data), generator=gen)[: args.digits_items]
    x, y = data.flat()[perm], data.labels[perm]
    x = x - x.mean(0)
    classes = sorted(set(y.tolist()))
    means = torch.stack([x[y == c].mean(0) for c in classes])
    within = torch.cat([x[y == c] - means[i] for i, c in enumerate(classes)]).pow(2).mean().sqrt().item()
    between = means.pow(2).mean().sqrt().item()
    x = x.to(args.device)
    at = checkpoints(len(x))
    rows = []
    grid = [(1.0, f) for f in args.digit_width_factors] + [(a, args.digit_alpha_width) for a in args.alphas if a != 1.0]
    for alpha, factor in tqdm(grid, desc="digits", leave=False):
        memory = varmem.NonparametricMemory(
            x.shape[1], alpha=alpha, bandwidth=factor * within, noise_scale=within, prior_scale=between,
            device=args.device, dtype=args.dtype,
        )
        curve = write_and_count(memory, x, at)
        big = int((memory.counts >= 0.01 * len(x)).sum())
        rows.append({
            "alpha": alpha, "width_factor": factor, "bandwidth": factor * within, "num_memories": curve,
            "final_num_memories": curve[-1], "memories_with_1pct_of_items": big,
            "ari": adjusted_rand_score(y.numpy(), memory.assignments.cpu().numpy()),
            "purity": purity(memory.assignments, y),
            "duplicate_write_new_memories": duplicate_check(memory, x),
        })
    return {"true_k": len(classes), "items": len(x), "within_class_std": within, "class_mean_rms": between,
            "checkpoints": at, "rows": rows}


# --- reporting -----------------------------------------------------------------------------------
def _last(key: str) -> Any:
    return lambda row: row[key][-1]


MIXTURE_TABLE = [
    ("alpha", ">6g", "alpha"), ("s/width", ">8g", "width_factor"), ("assignment", ">13", "assignment"),
    ("K_n", ">6", "final_num_memories"), ("ARI", ">6.3f", "ari"), ("dup new", ">7", "duplicate_write_new_memories"),
]  # fmt: skip
PRIOR_TABLE = [
    ("alpha", ">6g", "alpha"), ("mean K_n", ">9.2f", _last("mean_num_memories")),
    ("sum a/(a+i)", ">11.2f", _last("expected_num_memories")),
    ("a log(1+n/a)", ">12.2f", _last("asymptote_alpha_log")), ("z", ">6.2f", "final_z_score"),
    ("crp_map K_n", ">11.2f", _last("crp_map_mean_num_memories")),
]  # fmt: skip
DIGITS_TABLE = [
    ("alpha", ">6g", "alpha"), ("s/within", ">8g", "width_factor"), ("K_n", ">6", "final_num_memories"),
    ("K(>=1%)", ">8", "memories_with_1pct_of_items"), ("ARI", ">6.3f", "ari"), ("purity", ">7.3f", "purity"),
    ("dup new", ">7", "duplicate_write_new_memories"),
]  # fmt: skip


def format_tables(result: dict[str, Any]) -> str:
    mix, prior, dig = result["mixture"], result["prior"], result["digits"]
    return "\n".join([
        f"Gaussian mixture: true K = {mix['true_k']}, D = {mix['dim']}, n = {mix['items']}",
        experiment.format_table(mix["rows"], MIXTURE_TABLE),
        f"\nCRP prior check (crp_sample, uninformative data): n = {prior['items']}, {prior['runs']} runs",
        experiment.format_table(prior["rows"], PRIOR_TABLE),
        f"\nDigits: true K = {dig['true_k']}, n = {dig['items']}, within-class std {dig['within_class_std']:.3f}, "
        f"class-mean RMS {dig['class_mean_rms']:.3f}",
        experiment.format_table(dig["rows"], DIGITS_TABLE),
    ])  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = experiment.subplots(1, 3, figsize=(16, 4.6))
    mix, prior, dig = result["mixture"], result["prior"], result["digits"]
    ax = axes[0]
    widths = sorted({r["width_factor"] for r in mix["rows"]})
    alphas = sorted({r["alpha"] for r in mix["rows"]})
    for r in mix["rows"]:
        if r["assignment"] != "crp_map":
            continue
        ax.plot(
            mix["checkpoints"], r["num_memories"], color=f"C{widths.index(r['width_factor'])}",
            ls=("-", "--", ":", "-.")[alphas.index(r["alpha"]) % 4],
            label=f"α={r['alpha']:g}, s={r['width_factor']:g}·w",
        )
    ax.axhline(mix["true_k"], color="k", ls="--", lw=1, label=f"true K = {mix['true_k']}")
    ax.set(xscale="log", yscale="log", xlabel="items written n", ylabel="memories K_n",
           title="Gaussian mixture (crp_map)")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    for r in prior["rows"]:
        label = f"crp_sample α={r['alpha']:g}"
        line = ax.plot(prior["checkpoints"], r["mean_num_memories"], marker="o", ms=3, label=label)
        ax.plot(prior["checkpoints"], r["expected_num_memories"], color=line[0].get_color(), ls="--", lw=1)
        ax.plot(prior["checkpoints"], r["asymptote_alpha_log"], color=line[0].get_color(), ls=":", lw=1)
    ax.set(xscale="log", xlabel="items written n", ylabel="mean memories K_n",
           title="prior check: dashed Σα/(α+i), dotted α log(1+n/α)")
    ax.legend(fontsize=7)
    ax = axes[2]
    for r in dig["rows"]:
        ax.plot(dig["checkpoints"], r["num_memories"], label=f"α={r['alpha']:g}, s={r['width_factor']:g}·within")
    ax.axhline(dig["true_k"], color="k", ls="--", lw=1, label="10 classes")
    ax.set(xscale="log", yscale="log", xlabel="items written n", ylabel="memories K_n", title="digits (crp_map)")
    ax.legend(fontsize=6)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"varmem.NonparametricMemory: memories created vs items written (seed {result['seed']})")
    experiment.save_figure(fig, path, dpi=110)


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "memory_creation", smoke="tiny sizes for the tests (seconds)", device="cpu",
                          dtype="float64", threads=1,
                          threads_help="torch threads (default 1: a write is a loop of small ops, which extra threads "
                                       "slow down)")  # fmt: skip
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    p.add_argument("--width-factors", type=float, nargs="+", default=[0.1, 0.33, 1.0, 3.0, 10.0],
                   help="mixture kernel widths s in units of the true component width")
    p.add_argument("--mix-k", type=int, default=10)
    p.add_argument("--mix-dim", type=int, default=16)
    p.add_argument("--mix-items", type=int, default=3000)
    p.add_argument("--mix-spread", type=float, default=3.0, help="std of the component centres")
    p.add_argument("--mix-width", type=float, default=0.3, help="std of the items around their centre")
    p.add_argument("--prior-alphas", type=float, nargs="+", default=[0.5, 2.0, 10.0])
    p.add_argument("--prior-items", type=int, default=1000)
    p.add_argument("--prior-runs", type=int, default=40)
    p.add_argument("--digits-items", type=int, default=1797)
    p.add_argument("--digit-width-factors", type=float, nargs="+", default=[0.75, 1.0, 1.25, 1.5, 2.0],
                   help="digits kernel widths in units of the pooled within-class std")
    p.add_argument("--digit-alpha-width", type=float, default=1.25, help="width factor of the digits α sweep")
    args = p.parse_args(argv)
    if args.smoke:
        args.alphas, args.width_factors = [0.1, 1.0], [0.1, 1.0, 10.0]
        args.mix_k, args.mix_dim, args.mix_items = 4, 8, 200
        args.prior_alphas, args.prior_items, args.prior_runs = [1.0], 100, 5
        args.digits_items, args.digit_width_factors = 300, [1.0, 1.5]
    args.device = torch.device(args.device)  # this script's memories take args.device and args.dtype
    args.dtype = getattr(torch, args.dtype)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    result: dict[str, Any] = {
        "experiment": "memory creation by varmem.NonparametricMemory (CRP prior over memories)",
        **experiment.record(args, args.device),
        "dtype": str(args.dtype).removeprefix("torch."),
        "config": experiment.settings(args, exclude=("device", "dtype")),
    }
    result["mixture"] = run_mixture(args, gen)
    result["prior"] = run_prior(args, gen)
    result["digits"] = run_digits(args, gen)
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print(format_tables(result))
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
