"""Benchmark: a stream of single-item writes, varmem vs the plain ``torch.cat`` append.

What is compared
----------------
``N`` items written one at a time (``memory.write(x_i)``, ``x_i`` of shape ``[D]``), the way an
online / continual protocol feeds a memory:

* **varmem**: ``varmem.KernelDensityMemory.write``: input validation, then
  :meth:`varmem.Memory.append_rows` (the stored buffer is a view of a block whose capacity doubles,
  so the stream copies ``O(N)`` rows in all);
* **cat**: the plain append ``items = torch.cat([items, x_i[None]])`` (no validation), which copies
  the whole buffer on every write: ``O(N²)`` rows in all.

Both end with the same ``[N, D]`` tensor (checked before the timings are reported).  Timing:
``time.perf_counter`` around the whole stream, the two variants alternating, median over
``--repeats``.  **Ratio = cat seconds / varmem seconds** (> 1: varmem faster); the quadratic
baseline makes it grow with ``N``.  No target is set by an issue; the figure shows seconds per
write against ``N``.

Outputs (``--output``, default ``results/bench_writes``): ``bench_writes.json`` (seed, versions,
device, threads, settings, one row per ``N``) and ``bench_writes.png``.

Usage::

    python experiments/bench_writes.py                 # N = 1e3, 1e4, 3e4, D = 64
    python experiments/bench_writes.py --smoke         # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME, PNG_NAME = "bench_writes.json", "bench_writes.png"
DEFAULT_SIZES = (1_000, 10_000, 30_000)
SMOKE_SIZES = (200, 1_000)


def stream_varmem(x: torch.Tensor) -> torch.Tensor:
    memory = varmem.KernelDensityMemory(x.shape[1], 1.0, 0.5, device=x.device, dtype=x.dtype)
    for row in x:
        memory.write(row)
    return memory.items


def stream_cat(x: torch.Tensor) -> torch.Tensor:
    items = x.new_empty(0, x.shape[1])
    for row in x:
        items = torch.cat([items, row.unsqueeze(0)])
    return items


VARIANTS = {"varmem": stream_varmem, "cat": stream_cat}


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n, args.dim, generator=gen, dtype=args.torch_dtype).to(args.torch_device)
    runners = {name: lambda fn=fn: fn(x) for name, fn in VARIANTS.items()}
    outputs, first = experiment.first_calls(runners, args.torch_device)  # also the warm-up
    if not all(torch.equal(out, x) for out in outputs.values()):
        raise AssertionError(f"a variant did not store the {n} items in order")
    times, _, _ = experiment.time_alternating(runners, list(VARIANTS), first, args.torch_device, warmup=0,
                                              repeats=args.repeats, min_time=0)  # one stream per repeat
    sec = {name: statistics.median(v) for name, v in times.items()}
    return {
        "N": n,
        **{f"{name}_seconds": s for name, s in sec.items()},
        **{f"{name}_seconds_all": v for name, v in times.items()},
        **{f"{name}_microseconds_per_write": 1e6 * s / n for name, s in sec.items()},
        "ratio_cat_over_varmem": sec["cat"] / sec["varmem"],
    }


TABLE = [
    ("N", ">8,", "N"), "|", ("varmem s", ">9.3f", "varmem_seconds"), ("cat s", ">9.3f", "cat_seconds"), "|",
    ("varmem µs/write", ">15.1f", "varmem_microseconds_per_write"),
    ("cat µs/write", ">12.1f", "cat_microseconds_per_write"), "|",
    ("cat/varmem", ">10.2f", "ratio_cat_over_varmem"),
]  # fmt: skip


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    fig, ax = experiment.subplots(figsize=(6, 4))
    labels = {"varmem": "varmem write (append_rows)", "cat": "torch.cat append"}
    experiment.plot_by_size(ax, rows, "{}_microseconds_per_write", labels, xlabel="items written one at a time, N",
                            ylabel="µs per write",
                            title=f"{result['device']} ({result['torch_threads']} threads), "
                                  f"D = {result['settings']['dim']}")  # fmt: skip
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_writes", smoke="N in {200, 1000}, 1 repeat", device="cpu",
                          dtype="float32", threads=1)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="stream lengths N (default 1e3 1e4 3e4)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats = args.sizes or list(SMOKE_SIZES), 1
    args.sizes = list(args.sizes or DEFAULT_SIZES)
    if min(args.sizes) < 1 or args.dim < 1 or args.repeats < 1:
        p.error("--sizes, --dim and --repeats must be >= 1")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [bench_size(n, args) for n in tqdm(args.sizes, desc="sizes", unit="size")]
    result: dict[str, Any] = {
        "benchmark": "N single-item writes: KernelDensityMemory.write vs a torch.cat append loop",
        **experiment.record(args),
        "settings": experiment.settings(args, "sizes", "dim", "repeats", "dtype", "smoke"),
        "ratios": "cat seconds / varmem seconds (> 1: varmem faster)",
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})
    print(f"\n{result['device']}, {result['torch_threads']} threads, {args.dtype}, D = {args.dim}; "
          f"median of {args.repeats}")
    print(experiment.format_table(rows, TABLE))
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
