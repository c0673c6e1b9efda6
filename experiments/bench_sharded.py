"""Benchmark: a sharded read over 1-4 localhost gloo ranks against the single-process read.

What is measured
----------------
The exact posterior read of a :class:`varmem.KernelDensityMemory` (``retrieve(method="exact")``:
one streamed kernel sum with first and second moments, ``B`` cues, ``D`` dims), float32, one torch
thread per process:

* **single**: one process holding all ``N`` items (the plain memory);
* **sharded**: :class:`varmem.ShardedMemory` on ``W`` forked ranks (gloo on localhost), each
  holding ``N / W`` items; every rank reads the same cues and the group merges the per-shard
  log-sum-exps and moments (one ``all_gather`` of ``W × B × (3 + 2D)`` float64 numbers).

*Weak scaling*: ``N/W`` fixed (``--per-rank``), ``N`` grows with ``W``; *strong scaling*: ``N``
fixed (``--total``).  For each ``W`` the single-process read of the same ``N`` is timed in the
parent, so **speed-up = single seconds / sharded seconds** (ideal ``W``) and **efficiency =
speed-up / W**.  **Communication share** = the time rank 0 spends in the merge's collectives
(waiting for the slowest rank included) over its whole read.  Times: median of ``--repeats`` reads
after one warm-up, each read started after a barrier.  Each sharded read is checked against the
single-process read of the same items (pattern within 1e-4).

The ranks are processes on *this* machine: speed-up beyond its free cores is not possible, and
other load on the cores shows as "communication" (waiting for the slowest rank).

Outputs (``--output``, default ``results/bench_sharded``): ``bench_sharded.json`` and
``bench_sharded.png``.

Usage::

    python experiments/bench_sharded.py            # weak 2.5e5 items per rank, strong N = 1e6, W = 1..4
    python experiments/bench_sharded.py --smoke    # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME, PNG_NAME = "bench_sharded.json", "bench_sharded.png"
_BLOCK = 1 << 14  # items are generated in seeded blocks, so each rank draws only its own rows
BANDWIDTH, NOISE = 0.5, 0.5


def item_rows(start: int, stop: int, dim: int, seed: int) -> torch.Tensor:
    """Rows ``start:stop`` of the benchmark's item sequence (standard normal, float32), the same
    whoever draws them."""
    out = []
    for b in range(start // _BLOCK, (stop - 1) // _BLOCK + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        block = torch.randn(_BLOCK, dim, generator=g, dtype=torch.float32)
        lo, hi = max(start, b * _BLOCK) - b * _BLOCK, min(stop, (b + 1) * _BLOCK) - b * _BLOCK
        out.append(block[lo:hi])
    return torch.cat(out)


def cues(batch: int, dim: int, seed: int) -> torch.Tensor:
    noise = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return item_rows(0, batch, dim, seed) + 0.3 * noise


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, total: int, args: dict, out: str) -> None:
    """One rank: hold rows ``[rank N / W, (rank + 1) N / W)``, time the sharded read, rank 0 writes."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    lo, hi = rank * total // world, (rank + 1) * total // world
    local = varmem.KernelDensityMemory(args["dim"], BANDWIDTH, NOISE, dtype=torch.float32)
    local.append_rows("items", item_rows(lo, hi, args["dim"], args["seed"]))
    memory = varmem.ShardedMemory(local)
    group = local.kernel_backend
    comm = [0.0]
    gather = group.all_gather

    def timed_gather(t: torch.Tensor, what: str) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return gather(t, what)
        finally:
            comm[0] += time.perf_counter() - t0

    group.all_gather = timed_gather
    q = cues(args["batch"], args["dim"], args["seed"])
    pattern = memory.retrieve(q, method="exact", return_weights=False).pattern  # warm-up
    seconds, comm_seconds = [], []
    for _ in range(args["repeats"]):
        dist.barrier()
        comm[0] = 0.0
        t0 = time.perf_counter()
        memory.retrieve(q, method="exact", return_weights=False)
        seconds.append(time.perf_counter() - t0)
        comm_seconds.append(comm[0])
    if rank == 0:
        torch.save({"seconds": torch.tensor(seconds), "comm": torch.tensor(comm_seconds), "pattern": pattern}, out)
    dist.barrier()
    dist.destroy_process_group()


def sharded_read(world: int, total: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.pt")
        settings = {"dim": args.dim, "batch": args.batch, "repeats": args.repeats, "seed": args.seed}
        mp.start_processes(_rank_main, args=(world, _port(), total, settings, out), nprocs=world, start_method="fork")
        return torch.load(out, weights_only=True)


def single_read(total: int, args: argparse.Namespace) -> tuple[list[float], torch.Tensor]:
    memory = varmem.KernelDensityMemory(args.dim, BANDWIDTH, NOISE, dtype=torch.float32)
    memory.append_rows("items", item_rows(0, total, args.dim, args.seed))
    q = cues(args.batch, args.dim, args.seed)
    pattern = memory.retrieve(q, method="exact", return_weights=False).pattern
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        memory.retrieve(q, method="exact", return_weights=False)
        seconds.append(time.perf_counter() - t0)
    return seconds, pattern


def bench(mode: str, world: int, total: int, args: argparse.Namespace) -> dict[str, Any]:
    single, want = single_read(total, args)
    got = sharded_read(world, total, args)
    err = float((got["pattern"] - want).abs().max())
    if err > 1e-4:
        raise AssertionError(f"sharded read differs from the single-process read by {err} ({mode}, W={world})")
    t_single, t_sharded = statistics.median(single), float(got["seconds"].median())
    comm = float(got["comm"].median())
    return {
        "mode": mode, "W": world, "N": total, "N_per_rank": total // world,
        "single_seconds": t_single, "sharded_seconds": t_sharded,
        "speedup": t_single / t_sharded, "efficiency": t_single / t_sharded / world,
        "comm_seconds": comm, "comm_share": comm / t_sharded, "max_pattern_error": err,
        "single_seconds_all": single, "sharded_seconds_all": got["seconds"].tolist(),
    }  # fmt: skip


TABLE = [
    ("mode", "<6", "mode"), ("W", ">2", "W"), ("N", ">10,", "N"), "|",
    ("single s", ">9.3f", "single_seconds"), ("sharded s", ">9.3f", "sharded_seconds"), "|",
    ("speed-up", ">8.2f", "speedup"), ("effic.", ">6.2f", "efficiency"), ("comm share", ">10.1%", "comm_share"),
    ("max err", ">9.1e", "max_pattern_error"),
]  # fmt: skip


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("weak", "strong"), strict=True):
        part = [r for r in rows if r["mode"] == mode]
        ws = [r["W"] for r in part]
        ax.plot(ws, [r["speedup"] for r in part], "o-", label="speed-up (single s / sharded s)")
        ax.plot(ws, ws, "k:", label="ideal")
        share = ax.twinx()
        share.bar(ws, [100 * r["comm_share"] for r in part], alpha=0.25, color="C3", width=0.5)
        share.set(ylim=(0, 100), ylabel="communication share of the read, % (bars)")
        n = f"{part[0]['N_per_rank']:,} items per rank" if mode == "weak" else f"N = {part[0]['N']:,}"
        ax.set(xlabel="ranks W (processes on one machine)", ylabel="speed-up", xticks=ws,
               title=f"{mode} scaling, {n}")
        ax.legend(fontsize=8)
    fig.suptitle(f"sharded exact read, B = {result['settings']['batch']}, D = {result['settings']['dim']}, "
                 f"1 thread per rank, {os.cpu_count()} cores shared")
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_sharded", smoke="W in {1, 2}, 4,000 items, 1 repeat")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3, 4], help="group sizes W")
    p.add_argument("--per-rank", type=experiment.parse_size, default=250_000, help="weak scaling: items per rank")
    p.add_argument("--total", type=experiment.parse_size, default=1_000_000, help="strong scaling: N")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.smoke:
        args.ranks, args.per_rank, args.total, args.batch, args.repeats = [1, 2], 2_000, 4_000, 16, 1
    if min(args.ranks) < 1 or min(args.dim, args.batch, args.repeats) < 1:
        p.error("--ranks, --dim, --batch and --repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    jobs = [("weak", w, w * args.per_rank) for w in args.ranks] + [("strong", w, args.total) for w in args.ranks]
    rows = [bench(mode, w, n, args) for mode, w, n in tqdm(jobs, desc="configurations")]
    result: dict[str, Any] = {
        "benchmark": "exact KernelDensityMemory read: ShardedMemory on W gloo ranks vs one process",
        **experiment.record(args, "cpu"),
        "settings": experiment.settings(args, "ranks", "per_rank", "total", "dim", "batch", "repeats", "smoke"),
        "cores": os.cpu_count(),
        "ratios": "speedup = single-process seconds / sharded seconds (ideal W); comm_share = rank 0's time in the "
                  "merge collectives (waiting included) / its read time",
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})
    print(f"\ncpu ({os.cpu_count()} cores), 1 thread per rank, float32, B = {args.batch}, D = {args.dim}; "
          f"median of {args.repeats}")
    print(experiment.format_table(rows, TABLE))
    print(experiment.wrote(written))
    print(json.dumps({"note": "no GPU was used"}))
    return result


if __name__ == "__main__":
    main()
