"""Capacity of a Gaussian kernel-density memory vs dimension (reference §5.3; Schaeffer et al. 2024).

A KDE memory ``p(x) = (1/N) Σ_n N(x; x_n, σ² I)`` reads by mean-shift, ``x ← Σ_n softmax_n(-‖x - x_n‖²/2σ²) x_n``
(the modern-Hopfield L2 update with ``β = 1/σ²``; ``varmem.KernelDensityMemory``'s fixed-point step
without a cue term).  A stored point is *retrieved* if ``steps`` mean-shift steps started at it end
within ``radius`` of it, i.e. it is (close to) a local maximum of the density.

Protocol (reference §5.3, "ours"): ``N`` points uniform on the sphere ``S^{d-1}``, ``σ = 0.1``
(``β = 100``), 30 steps, radius 0.1, 256 probed stored points; the capacity at dimension ``d`` is
the largest ``N`` on the grid ``N_{k+1} = ⌈1.5 N_k⌉`` (from 2) at which ≥ 99 % of the probes are
retrieved (the search stops at the first failing ``N``; ``--cap`` bounds it).  The steps stop early
once no probe moves by more than 1e-7 (a fixed point: later steps would not change it).  Reference values
(one seed, noisy): d=3: 17, d=4: 17, d=6: 1 597, d=8: 27 308, d=10 and 12: ≥ 138 253 (the 2·10⁵ cap).
The claim to reproduce: growth exponential in ``d``.

The mean-shift steps stream over the items in chunks (:func:`varmem.kernels.kernel_stats`), so
``N ≈ 2·10⁵`` needs only ``O(B · chunk)`` memory.

Outputs (``--output``, default ``results/kde_capacity``): ``kde_capacity.json``, ``kde_capacity.png``.

Usage::

    python experiments/kde_capacity.py           # d = 3 … 12, cap 2·10⁵ (a few minutes on 2 cores)
    python experiments/kde_capacity.py --smoke   # d = 3 … 6, cap 3 000, 64 probes (seconds)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from varmem import experiment
from varmem.kernels import kernel_stats

JSON_NAME, PNG_NAME = "kde_capacity.json", "kde_capacity.png"
REFERENCE = {3: 17, 4: 17, 6: 1597, 8: 27308, 10: 138253, 12: 138253}  # 10, 12: lower bounds (cap reached)
REFERENCE_CAPPED = (10, 12)


def size_grid(cap: int, start: int = 2, factor: float = 1.5) -> list[int]:
    """``start, ⌈1.5·start⌉, …`` up to ``cap``."""
    sizes = [start]
    while math.ceil(sizes[-1] * factor) <= cap:
        sizes.append(math.ceil(sizes[-1] * factor))
    return sizes


def sphere(n: int, d: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def retrieved_fraction(
    items: torch.Tensor, probes: int, sigma: float, steps: int, radius: float, gen: torch.Generator
) -> float:
    """Fraction of ``probes`` stored points that ``steps`` mean-shift steps keep within ``radius``."""
    which = torch.randperm(items.shape[0], generator=gen)[:probes]
    start = items[which]
    z = start
    precision = 1.0 / sigma**2
    for _ in range(steps):
        z_new = kernel_stats(z, items, precision).mean
        moved = float((z_new - z).abs().max())
        z = z_new
        if moved <= 1e-7:  # every probe is at a fixed point: further steps change nothing
            break
    return float(((z - start).norm(dim=-1) <= radius).double().mean())


def capacity(d: int, args: argparse.Namespace) -> dict[str, Any]:
    """Walk up the size grid until the retrieved fraction drops below ``args.threshold``."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + d)
    dtype = args.torch_dtype
    tried = []
    best, capped = 0, True
    for n in size_grid(args.cap):
        items = sphere(n, d, gen, dtype)
        frac = retrieved_fraction(items, min(args.probes, n), args.sigma, args.steps, args.radius, gen)
        tried.append({"N": n, "retrieved": frac})
        if frac < args.threshold:
            capped = False
            break
        best = n
    return {"d": d, "capacity": best, "reached_cap": capped, "tried": tried}


def growth_rate(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares fit ``log N_cap = a + r·d`` over the uncapped rows with ``N_cap > 0``."""
    pts = [(r["d"], r["capacity"]) for r in rows if not r["reached_cap"] and r["capacity"] > 0]
    if len(pts) < 2:
        return None
    d = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    y = torch.log(torch.tensor([p[1] for p in pts], dtype=torch.float64))
    r, a = torch.linalg.lstsq(torch.stack([d, torch.ones_like(d)], -1), y.unsqueeze(-1)).solution.flatten().tolist()
    return {"rate_per_dim": r, "intercept": a, "factor_per_dim": math.exp(r)}


def plot(result: dict[str, Any], path: Path) -> None:
    rows = result["rows"]
    fig, ax = experiment.subplots(figsize=(6, 4.2))
    ds = [r["d"] for r in rows]
    caps = [max(r["capacity"], 1) for r in rows]
    ax.semilogy(ds, caps, "o-", label="varmem (this run)")
    for r in rows:
        if r["reached_cap"]:
            where = (r["d"], max(r["capacity"], 1))
            ax.annotate("≥ (cap)", where, textcoords="offset points", xytext=(0, 6), ha="center")
    ref_d = sorted(REFERENCE)
    ax.semilogy(ref_d, [REFERENCE[d] for d in ref_d], "k*", ms=9, label="reference §5.3 (one seed)")
    fit = result["growth"]
    if fit is not None:
        xs = torch.linspace(min(ds), max(ds), 50)
        ax.semilogy(xs, torch.exp(fit["intercept"] + fit["rate_per_dim"] * xs), "C1--",
                    label=f"fit: ×{fit['factor_per_dim']:.2f} per dimension")
    s = result["settings"]
    ax.axhline(s["cap"], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="dimension d", ylabel=f"largest N with ≥ {100 * s['threshold']:.0f} % retrieved",
           title=f"KDE memory capacity on S^(d-1), σ={s['sigma']}, {s['steps']} mean-shift steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    experiment.save_figure(fig, path)


def _capacity(row: dict[str, Any]) -> str:
    return f"≥{row['capacity']:,}" if row["reached_cap"] else f"{row['capacity']:,}"


def _reference(row: dict[str, Any]) -> str:
    ref = REFERENCE.get(row["d"])
    return "-" if ref is None else (f"≥{ref:,}" if row["d"] in REFERENCE_CAPPED else f"{ref:,}")


def _first_failing(row: dict[str, Any]) -> str:
    last = row["tried"][-1]
    return "" if row["reached_cap"] else f"{last['N']:,} ({100 * last['retrieved']:.1f} %)"


TABLE = [("d", ">3", "d"), ("capacity", ">10", _capacity), ("reference", ">10", _reference), "",
         ("first failing N (retrieved)", "", _first_failing)]  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "kde_capacity", smoke="d = 3 … 6, cap 3000, 64 probes, 1 thread",
                          dtype="float32", threads=None, threads_help="torch threads (default: torch's; --smoke: 1)")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="dimensions (default 3 … 12)")
    p.add_argument("--cap", type=int, default=200_000, help="largest N tried (default 2e5)")
    p.add_argument("--probes", type=int, default=256)
    p.add_argument("--sigma", type=float, default=0.1, help="kernel bandwidth σ (β = 1/σ²)")
    p.add_argument("--steps", type=int, default=30, help="mean-shift steps per probe")
    p.add_argument("--radius", type=float, default=0.1, help="success radius around the probed point")
    p.add_argument("--threshold", type=float, default=0.99, help="fraction of probes that must be retrieved")
    args = p.parse_args(argv)
    if args.smoke:
        args.dims = args.dims or [3, 4, 5, 6]
        args.cap, args.probes = 3000, 64
        args.threads = args.threads or 1  # tiny tensors: extra threads only contend
    args.dims = list(args.dims or range(3, 13))
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:

    start = time.perf_counter()
    rows = [capacity(d, args) for d in tqdm(args.dims, desc="dimensions", unit="d")]
    result: dict[str, Any] = {
        "experiment": "KDE (mean-shift) memory capacity vs dimension",
        **experiment.record(args),
        "settings": experiment.settings(args, "dims", "cap", "probes", "sigma", "steps", "radius", "threshold", "dtype",
                                        "smoke")
        | {"grid": "N_{k+1} = ceil(1.5 N_k) from 2"},
        "reference": {"capacity": REFERENCE, "capped_dims": REFERENCE_CAPPED},
        "rows": rows,
        "growth": growth_rate(rows),
        "seconds": time.perf_counter() - start,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    print(f"KDE capacity: σ={args.sigma}, {args.steps} steps, radius {args.radius}, {args.probes} probes, "
          f"≥{100 * args.threshold:.0f} % retrieved, cap {args.cap:,}")
    print(experiment.format_table(rows, TABLE, indent="  "))
    if result["growth"]:
        print(f"  growth: ×{result['growth']['factor_per_dim']:.2f} per dimension (fit over uncapped d)")
    print(f"  {result['seconds']:.0f} s; {experiment.wrote(written)}")
    return result


if __name__ == "__main__":
    main()
