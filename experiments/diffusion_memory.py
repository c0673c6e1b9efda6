"""Diffusion models as associative memory (Hoover et al. 2023): identities, recall, memorisation vs generation.

Four parts, all seeded (reference: wave2-papers §5, hopfield-family §6):

1. **Identities.**  The ideal denoiser ``D*(x, σ) = E[ξ | x]`` of the stored items against (a) the
   kernel-density memory's posterior mean for a cue seen with noise ``σ`` (bandwidth → 0), (b) one
   modern Hopfield step with ``β = 1/σ²`` on equal-norm items (``d = 32``, ``N = 50``; reference
   check: max |MMSE - MHN step| = 1.4e-16 / 1.6e-14), and the negative control with unequal norms.
2. **The ideal reverse process ends on stored items**: ``σ`` annealed from 1.0 to 0.02, ``N`` = 5,
   50, 500 Gaussian items in ``d = 32`` (reference: "lands exactly on a training point for N = 5, 50,
   500"); the largest distance from a sample to its nearest item.
3. **Memorisation vs generation** with the learned denoiser: ``N`` points spread evenly (random
   phase and jitter) on the unit circle (the
   amtutorial setting, "K = 2 / 9 collapse onto the training points, K = 1000 cover the circle"),
   the same training budget for every ``N``; 256 samples from noise (probability-flow ODE).  A
   sample is *memorised* when its nearest training point is under a third of the distance to the
   second nearest (``d₁/d₂ < 1/3``, our criterion); the reference lines are the ideal score (always
   memorises) and fresh draws from the circle itself (a perfect generator).  The transition and the
   spurious states at its onset are reported by later work (Pham et al. 2025, arXiv 2505.21777),
   not by the survey; here it is only shown at a CPU size.
4. **Partial cues** (inpainting): 20 of scikit-learn's 8x8 digits in ``[-1, 1]``, half the pixels
   dropped; recall (the arg-max item is the cue's own) with the ideal score and the exact posterior
   conditioning, the ideal score with replacement conditioning, and the learned denoiser with
   replacement.

Outputs (``--output``, default ``results/diffusion_memory``): ``diffusion_memory.json``,
``diffusion_circle.png`` (samples per ``N``), ``diffusion_memorisation.png`` (the transition) and
``diffusion_inpainting.png``.  ``--smoke`` runs a tiny version (used by the tests).

Usage::

    python experiments/diffusion_memory.py            # full (several minutes on 2 cores)
    python experiments/diffusion_memory.py --smoke
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME = "diffusion_memory.json"
PNG_CIRCLE, PNG_CURVE, PNG_INPAINT = "diffusion_circle.png", "diffusion_memorisation.png", "diffusion_inpainting.png"
MEMORISED_RATIO = 1 / 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "diffusion_memory", smoke="tiny sizes (seconds)")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 256, 1024],
                   help="numbers of stored circle points")
    p.add_argument("--fit-steps", type=int, default=4000, help="training steps of every learned denoiser")
    p.add_argument("--hidden", type=int, default=128, help="width of the circle denoiser")
    p.add_argument("--samples", type=int, default=256, help="samples from noise per N")
    p.add_argument("--steps", type=int, default=100, help="reverse-process steps")
    p.add_argument("--digits", type=int, default=20, help="digits stored for the inpainting part")
    p.add_argument("--digit-fit-steps", type=int, default=4000)
    p.add_argument("--digit-hidden", type=int, default=256)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.fit_steps, args.hidden, args.samples, args.steps = [2, 16], 50, 16, 16, 10
        args.digits, args.digit_fit_steps, args.digit_hidden = 6, 30, 16
    return args


def identities(seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    d, n, sigma = 32, 50, 0.5
    items = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1) * 2.0
    x = items.repeat(4, 1) + sigma * torch.randn(4 * n, d, generator=gen, dtype=torch.float64)
    memory = varmem.DiffusionMemory(d, dtype=torch.float64).write(items)
    ideal = memory.denoise(x, sigma)
    kde = varmem.KernelDensityMemory(d, bandwidth=1e-6 * sigma, noise_scale=sigma, dtype=torch.float64).write(items)
    hopfield = varmem.ModernHopfield(d, beta=1 / sigma**2, update_steps_max=0, dtype=torch.float64).write(items)
    scaled = items * torch.linspace(0.5, 1.5, n, dtype=torch.float64)[:, None]
    ideal_scaled = varmem.DiffusionMemory(d, dtype=torch.float64).write(scaled).denoise(x, sigma)
    hop_scaled = varmem.ModernHopfield(d, beta=1 / sigma**2, update_steps_max=0, dtype=torch.float64).write(scaled)
    return {
        "d": d, "N": n, "sigma": sigma,
        "max_abs_vs_kde_posterior_mean": float((ideal - kde.posterior(x).mean).abs().max()),
        "max_abs_vs_hopfield_step": float((ideal - hopfield.retrieve(x).pattern).abs().max()),
        "max_abs_vs_hopfield_step_unequal_norms": float((ideal_scaled - hop_scaled.retrieve(x).pattern).abs().max()),
        "reference_max_abs_vs_hopfield_step": [1.4e-16, 1.6e-14],
    }  # fmt: skip


def ideal_end_on_items(seed: int, samples: int) -> list[dict[str, Any]]:
    rows = []
    for n in (5, 50, 500):
        gen = torch.Generator().manual_seed(seed + n)
        items = torch.randn(n, 32, generator=gen, dtype=torch.float64)
        memory = varmem.DiffusionMemory(32, sigma_min=0.02, sigma_max=1.0, dtype=torch.float64).write(items)
        r = memory.sample(samples, num_steps=50, seed=seed)
        gap = (r.pattern[:, None] - items[None]).norm(dim=-1).min(1).values  # not cdist: its mm path rounds
        rows.append({"N": n, "max_distance_to_nearest_item": float(gap.max()),
                     "distinct_items_reached": len(set(r.index.tolist()))})
    return rows


def circle_points(n: int, gen: torch.Generator, jitter: float = 0.5) -> torch.Tensor:
    """``n`` points on the unit circle at angles ``2π (k + φ + jitter·u_k) / n`` (``φ, u_k ~ U[0, 1)``):
    spread evenly with a random phase and jitter, so neighbouring points are never much closer than
    ``2π/n`` (two nearly equal stored points would be one memory; ``jitter = 1``: iid-uniform strata)."""
    phase = torch.rand((), generator=gen, dtype=torch.float64)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    angle = 2 * math.pi * (torch.arange(n, dtype=torch.float64) + phase + jitter * u) / n
    return torch.stack([angle.cos(), angle.sin()], -1)


def memorised(samples: torch.Tensor, items: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Fraction with ``d₁/d₂ < 1/3`` (with one item: ``d₁ < 0.05``) and the distances ``d₁``."""
    dist = torch.cdist(samples, items)
    if items.shape[0] == 1:
        d1 = dist[:, 0]
        return float((d1 < 0.05).double().mean()), d1
    two = dist.topk(2, largest=False).values
    return float((two[:, 0] < MEMORISED_RATIO * two[:, 1]).double().mean()), two[:, 0]


def circle_part(args: argparse.Namespace) -> dict[str, Any]:
    rows, shown = [], {}
    for n in tqdm(args.sizes, desc="circle sizes", leave=False):
        gen = torch.Generator().manual_seed(args.seed + n)
        items = circle_points(n, gen)
        memory = varmem.DiffusionMemory(2, sigma_min=1e-3, sigma_max=3.0, hidden=args.hidden, seed=args.seed,
                                        dtype=torch.float64).write(items)
        start = time.perf_counter()
        fit = memory.fit(args.fit_steps, batch_size=256, lr=2e-3, seed=args.seed)
        seconds = time.perf_counter() - start
        learned = memory.sample(args.samples, score="learned", num_steps=args.steps, seed=args.seed).pattern
        ideal = memory.sample(args.samples, num_steps=args.steps, seed=args.seed).pattern
        truth = circle_points(args.samples, gen, jitter=1.0)  # a perfect generator: fresh data points
        frac_learned, d1 = memorised(learned, items)
        frac_ideal, _ = memorised(ideal, items)
        frac_truth, _ = memorised(truth, items)
        rows.append({
            "N": n, "memorised_learned": frac_learned, "memorised_ideal": frac_ideal,
            "memorised_fresh_circle_points": frac_truth,
            "median_distance_to_nearest_item_learned": float(d1.median()),
            "mean_distance_to_circle_learned": float((learned.norm(dim=-1) - 1).abs().mean()),
            "distinct_nearest_items_learned": len(set(torch.cdist(learned, items).argmin(1).tolist())),
            "final_loss": float(fit.losses[-100:].mean()), "fit_seconds": seconds,
        })  # fmt: skip
        shown[n] = {"items": items, "learned": learned}
    return {"rows": rows, "shown": shown}


def digits_part(args: argparse.Namespace) -> dict[str, Any]:
    digits = varmem.datasets.load_digits(dtype=torch.float64)
    items01 = digits.flat()[: args.digits]
    items = 2 * items01 - 1
    memory = varmem.DiffusionMemory(64, sigma_min=0.01, sigma_max=10.0, noise_scale=0.1, hidden=args.digit_hidden,
                                    seed=args.seed, dtype=torch.float64).write(items)
    start = time.perf_counter()
    memory.fit(args.digit_fit_steps, batch_size=256, lr=2e-3, seed=args.seed)
    seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(args.seed)
    cue01, mask = varmem.corruptions.corrupt(items01, "drop", 0.5, generator=gen, image_shape=digits.image_shape)
    mask = mask.reshape(items.shape).bool()
    cue = torch.where(mask, 2 * cue01.reshape(items.shape) - 1, torch.nan)
    reads = {
        "ideal_posterior": memory.retrieve(cue, mask, num_steps=args.steps, conditioning="posterior"),
        "ideal_replacement": memory.retrieve(cue, mask, num_steps=args.steps, conditioning="replacement"),
        "learned_replacement": memory.retrieve(cue, mask, num_steps=args.steps, score="learned"),
    }
    kde = varmem.KernelDensityMemory(64, bandwidth=memory.sigma_min, noise_scale=memory.noise_scale,
                                     dtype=torch.float64).write(items)
    reads["exact_posterior_mean"] = kde.retrieve(cue, mask, method="exact")  # the same model in closed form
    target = torch.arange(len(items))
    results = {}
    for name, r in reads.items():
        results[name] = {
            "recall": float((r.index == target).double().mean()),
            "mse_to_target": float((r.pattern - items).square().mean()),
            "on_a_stored_item": float((torch.cdist(r.pattern, items).min(1).values < 0.5).double().mean()),
        }
    return {"N": len(items), "fit_seconds": seconds, "dropped": 0.5, "results": results,
            "examples": {"cue": cue[:6], "mask": mask[:6], "target": items[:6],
                         **{k: r.pattern[:6] for k, r in reads.items() if k != "exact_posterior_mean"}}}


def draw_circle(path: Path, circle: dict[str, Any]) -> None:
    shown = circle["shown"]
    cols = min(len(shown), 5)
    rows = math.ceil(len(shown) / cols)
    fig, axes = experiment.subplots(rows, cols, figsize=(3.0 * cols, 3.1 * rows), squeeze=False)
    t = torch.linspace(0, 2 * math.pi, 200)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (n, data) in zip(axes.flat, shown.items(), strict=False):
        ax.set_axis_on()
        ax.plot(t.cos(), t.sin(), color="0.8", lw=1)
        ax.scatter(*data["items"].T, s=30 if n <= 64 else 6, marker="x", color="tab:red", lw=1 if n <= 64 else 0.5,
                   label="stored", zorder=2)
        ax.scatter(*data["learned"].T, s=6, color="tab:blue", alpha=0.6, label="learned samples", zorder=3)
        ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal", title=f"N = {n}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("Reverse diffusion with a learned denoiser: stored points (x) and 2-D samples from noise")
    experiment.save_figure(fig, path)


def draw_curve(path: Path, circle: dict[str, Any]) -> None:
    rows = circle["rows"]
    ns = [r["N"] for r in rows]
    fig, (ax, ax2) = experiment.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(ns, [r["memorised_learned"] for r in rows], "o-", label="learned denoiser")
    ax.plot(ns, [r["memorised_ideal"] for r in rows], "s--", label="ideal score (reference: always)")
    ax.plot(ns, [r["memorised_fresh_circle_points"] for r in rows], "^:", label="fresh circle points (generator)")
    ax.set(xscale="log", xlabel="stored points N", ylabel=f"fraction memorised (d₁/d₂ < {MEMORISED_RATIO:.2g})",
           ylim=(-0.03, 1.03), title="Memorisation → generation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.plot(ns, [r["median_distance_to_nearest_item_learned"] for r in rows], "o-",
             label="to the nearest stored point")
    ax2.plot(ns, [r["mean_distance_to_circle_learned"] for r in rows], "s-", label="to the circle")
    ax2.set(xscale="log", yscale="log", xlabel="stored points N", ylabel="distance", title="Learned samples")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    experiment.save_figure(fig, path)


def draw_inpainting(path: Path, dig: dict[str, Any]) -> None:
    ex = dig["examples"]
    names = ["cue", "ideal_posterior", "ideal_replacement", "learned_replacement", "target"]
    titles = ["cue (blue: dropped)", "ideal, posterior", "ideal, replacement", "learned, replacement", "stored"]
    k = ex["cue"].shape[0]
    fig, axes = experiment.subplots(len(names), k, figsize=(1.3 * k, 1.45 * len(names)), squeeze=False)
    for row, (name, title) in enumerate(zip(names, titles, strict=True)):
        for col in range(k):
            ax = axes[row, col]
            img = torch.nan_to_num(ex[name][col], nan=0.0)
            hidden = ~ex["mask"][col] if name == "cue" else None
            experiment.show_image(ax, ((img + 1) / 2).numpy(), (1, 8, 8), hidden=None if hidden is None
                                  else hidden.numpy())
            if col == 0:
                ax.set_ylabel(title, fontsize=7)
    fig.suptitle("Inpainting 8x8 digits (half the pixels dropped) by reverse diffusion")
    experiment.save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    ident = identities(args.seed)
    ends = ideal_end_on_items(args.seed, args.samples)
    circle = circle_part(args)
    dig = digits_part(args)
    result = experiment.record(
        args, smoke=args.smoke, settings=experiment.settings(args), identities=ident, ideal_end_on_items=ends,
        circle={"rows": circle["rows"], "memorised_criterion": f"d1/d2 < {MEMORISED_RATIO:.4g}",
                "training": "DSM, log-uniform sigma in [0.001, 3], Adam 2e-3 cosine, batch 256",
                "transition_reference": "reported by Pham et al. 2025 (arXiv 2505.21777), not reproduced "
                                        "quantitatively here"},
        digits={k: v for k, v in dig.items() if k != "examples"},
    )
    figures = {PNG_CIRCLE: lambda p: draw_circle(p, circle), PNG_CURVE: lambda p: draw_curve(p, circle),
               PNG_INPAINT: lambda p: draw_inpainting(p, dig)}
    paths = experiment.save_results(args.output, JSON_NAME, result, figures)
    print(experiment.format_table(circle["rows"], [
        ("N", ">6", "N"), ("memorised learned", ">17.3f", "memorised_learned"),
        ("ideal", ">6.3f", "memorised_ideal"), ("fresh circle", ">12.3f", "memorised_fresh_circle_points"),
        ("to circle", ">10.4f", "mean_distance_to_circle_learned"), ("fit s", ">7.1f", "fit_seconds")]))
    print("identities:", ident)
    print("ideal end on items:", ends)
    print("digits:", dig["results"])
    print(experiment.wrote(paths))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    main()
