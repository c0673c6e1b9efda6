"""Benchmark: Hopfield-family retrieval throughput and peak memory, varmem vs plain torch, on CPU.

Two comparisons, each timed alternately in one run (ratios are measured side by side):

**A. ModernHopfield vs the plain expression.**  ``varmem.ModernHopfield(D, β, similarity="dot",
update_steps_max=0)`` read two ways, one update streamed over the stored patterns in chunks:
the lean read ``retrieve(cue, trace=False, return_weights=False)`` and the default read
``retrieve(cue)`` (no options: the energy trace, the arg-max item and, while ``B·N`` is at most
``varmem.helpers.WEIGHTS_LIMIT``, the ``[B, N]`` weights, all as by-products of the update),
against the plain torch expression of the same update::

    softmax(β ξ Xᵀ) X                                   # [B, N] logits materialised

Data: ``N`` unit-norm Gaussian patterns in ``D = 64``, ``B = 256`` cues = stored patterns plus
noise (``--cue-noise``), renormalised; ``β = 8`` (on unit-norm patterns: a genuine mixture at
large ``N``).  Before timing, both outputs are compared (relative max difference ≤ 1e-4 in float32).
**Ratio A = plain seconds / ModernHopfield seconds** (> 1: varmem faster; target ≥ 0.9), and
**default / lean = default-read seconds / lean-read seconds** (the price of calling ``retrieve``
with no options; target ≤ 1.2).

**B. RandomFeatureMemory (DrDAM) vs the slot memory it approximates.**  ``K`` gradient-descent
steps ``x ← x - α ∇E`` on the random-feature energy (``RandomFeatureMemory.retrieve(cue,
max_steps=K, tol=0, trace=False)``) against the same steps on the exact L2 log-sum-exp energy
streamed over the ``N`` stored patterns (``slot_energy_grad``, :mod:`varmem.kernels`).  Data:
DrDAM's binary patterns in ``{0, 1/√D}``, ``D = 30``, ``β = 25``, ``α = 0.1``, ``K = 10``, cues =
stored patterns with 10 % of the bits flipped, ``Y = 2048`` SinCos features.  The random-feature
cost does not depend on ``N`` (writing does: its time is reported as ``rf_write_s``); the
divergence ``‖x_RF - x_slot‖`` after ``K`` steps is reported as the approximation's price.
**Ratio B = slot seconds / RF seconds**.

Timing, as in ``bench_retrieval.py``: ``time.perf_counter`` (CUDA synchronised), first call =
correctness check, warm-up below ``N = 1e6``, each repeat runs a variant enough times to last
``--min-time``, the median over ``--repeats`` (≤ 3 at ``N = 1e6``) is reported, the variants of a
pair alternate.  "retrievals/s" = cues per second.

**Page faults.**  On Linux/glibc a fresh multi-MiB tensor is often memory that the allocator gave
back to the OS on the previous ``free`` (heap trimming, or an ``mmap`` block), and touching it
again costs one minor page fault per 4 KiB page; for the plain expression at ``N = 10⁴`` that is
~5 000 faults and about half of its time, and whether it happens depends on the process's heap
history.  The table therefore shows the median minor page faults per call of each variant
(``faults H/p``), and ``--no-heap-trim`` re-runs the script under
``GLIBC_TUNABLES`` that keep freed memory (blocks up to 32 MiB, so ``N ≤ 3·10⁴`` at ``B = 256``),
where the plain expression pays few or no faults (the table says how many): judge the target
there as well.  varmem's own reads reuse two per-thread
blocks of the memory's workspace (``memory.workspace.nbytes``, at most ``2 · 2**19`` entries =
4 MiB in float32 with the default chunk), so they pay no faults in either regime; those blocks stay
resident between calls and are not counted in the per-call peak below
(``memory.workspace.release()`` frees them).

Peak additional memory of one call (MiB):
CPU = a fresh subprocess per (variant, N) reading ``VmHWM - VmRSS`` around one call after a
warm-up (``varmem.experiment.measure_cpu_peak_in_this_process``; the RF probe loads the written
memory from a ``varmem.save`` checkpoint); CUDA = ``max_memory_allocated``.

Outputs (``--output``, default ``results/bench_hopfield``): ``bench_hopfield.json`` and
``bench_hopfield.png``.

Usage::

    python experiments/bench_hopfield.py                  # N = 1e3 … 1e6
    python experiments/bench_hopfield.py --no-heap-trim   # the same without page faults (glibc)
    python experiments/bench_hopfield.py --smoke          # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.baselines.random_features import gradient_descent, slot_energy_grad

DEFAULT_SIZES = (10**3, 10**4, 10**5, 10**6)
SMOKE_SIZES = (10**3, 10**4)
TARGET_RATIO = 0.9
PAIRS = {"A": ("hopfield", "hopfield_default", "plain"), "B": ("rf", "slot")}
TARGET_DEFAULT_OVER_LEAN = 1.2
PROBE_MARKER = "BENCH_HOPFIELD_PROBE "
JSON_NAME, PNG_NAME = "bench_hopfield.json", "bench_hopfield.png"
# glibc: never give freed heap memory back to the OS; blocks up to 32 MiB (its maximum) from the heap
NO_TRIM_TUNABLES = "glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=33554432"


# --- the four variants ------------------------------------------------------------------------
def plain_update(items: torch.Tensor, cues: torch.Tensor, beta: float) -> torch.Tensor:
    """The plain torch expression ``softmax(β ξ Xᵀ) X`` (one modern-Hopfield update)."""
    with torch.no_grad():
        return torch.softmax(beta * cues @ items.T, dim=-1) @ items


def make_data(pair: str, n: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``(items [N, D], cues [B, D])`` of pair ``"A"`` or ``"B"`` (generated on the CPU)."""
    gen = torch.Generator().manual_seed(args.seed + (0 if pair == "A" else 1))
    if pair == "A":
        items = torch.randn(n, args.dim, generator=gen)
        items = items / items.norm(dim=-1, keepdim=True)
        which = torch.randint(n, (args.batch,), generator=gen)
        cues = items[which] + args.cue_noise / math.sqrt(args.dim) * torch.randn(args.batch, args.dim, generator=gen)
        cues = cues / cues.norm(dim=-1, keepdim=True)
    else:
        d = args.rf_dim
        items = (torch.rand(n, d, generator=gen) > 0.5).float() / math.sqrt(d)
        which = torch.randint(n, (args.batch,), generator=gen)
        flip = torch.rand(args.batch, d, generator=gen) < 0.1
        cues = torch.where(flip, 1 / math.sqrt(d) - items[which], items[which])
    return items.to(args.torch_device, args.torch_dtype), cues.to(args.torch_device, args.torch_dtype)


def make_rf_memory(items: torch.Tensor, args: argparse.Namespace) -> "varmem.RandomFeatureMemory":
    memory = varmem.RandomFeatureMemory(
        items.shape[1], args.rf_beta, args.rf_features, seed=args.seed, step_size=args.rf_step_size,
        device=items.device, dtype=items.dtype,
    )
    return memory.write(items)


def make_hopfield(items: torch.Tensor, args: argparse.Namespace) -> "varmem.ModernHopfield":
    return varmem.ModernHopfield(
        items.shape[1], args.beta, similarity="dot", update_steps_max=0, device=items.device, dtype=items.dtype
    ).write(items)


def make_runners(
    pair: str, items: torch.Tensor, cues: torch.Tensor, args: argparse.Namespace, rf_memory: Any = None,
    only: str | None = None, hopfield: Any = None,
) -> dict[str, Callable[[], torch.Tensor]]:
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    if pair == "A":
        if only in (None, "hopfield", "hopfield_default"):
            hop = hopfield if hopfield is not None else make_hopfield(items, args)
            if only in (None, "hopfield"):
                runners["hopfield"] = lambda: hop.retrieve(cues, trace=False, return_weights=False).pattern
            if only in (None, "hopfield_default"):
                runners["hopfield_default"] = lambda: hop.retrieve(cues).pattern
        if only in (None, "plain"):
            runners["plain"] = lambda: plain_update(items, cues, args.beta)
    else:
        first, second = PAIRS[pair]
        if only in (None, first):
            rf = rf_memory if rf_memory is not None else make_rf_memory(items, args)
            runners[first] = lambda: rf.retrieve(cues, max_steps=args.rf_steps, tol=0.0, trace=False).pattern

        if only in (None, second):

            def slot() -> torch.Tensor:
                with torch.no_grad():
                    grad_fn = lambda x: slot_energy_grad(x, items, args.rf_beta)  # noqa: E731
                    return gradient_descent(grad_fn, cues, args.rf_step_size, args.rf_steps)[0]

            runners[second] = slot
    return runners


# --- peak memory in fresh processes -----------------------------------------------------------
def probe_argv(args: argparse.Namespace, variant: str, n: int, checkpoint: Path | None) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--_probe", variant, "--sizes", str(n)]
    for flag in ("seed", "dim", "batch", "beta", "cue_noise", "rf_dim", "rf_beta", "rf_features", "rf_steps",
                 "rf_step_size", "dtype", "device"):
        argv += ["--" + flag.replace("_", "-"), repr(getattr(args, flag)) if isinstance(getattr(args, flag), float)
                 else str(getattr(args, flag))]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if checkpoint is not None:
        argv += ["--_checkpoint", str(checkpoint)]
    return argv


def run_probe(args: argparse.Namespace) -> None:
    (n,) = args.sizes
    pair = "A" if args.variant in PAIRS["A"] else "B"
    items, cues = make_data(pair, n, args)
    rf = varmem.load(args.checkpoint, device=args.torch_device) if args.variant == "rf" else None
    fn = make_runners(pair, items, cues, args, rf_memory=rf, only=args.variant)[args.variant]
    peak, method = experiment.measure_cpu_peak_in_this_process(fn)
    experiment.print_probe(PROBE_MARKER, variant=args.variant, N=n, peak_mb=peak, method=method)


def cpu_peaks(args: argparse.Namespace, n: int, checkpoint: Path | None) -> dict[str, tuple[float, str]]:
    """One subprocess per variant, two at a time (one pair), after the timings."""
    results = {}
    for names in PAIRS.values():
        commands = {v: probe_argv(args, v, n, checkpoint if v == "rf" else None) for v in names}
        for v, r in experiment.run_probes(commands, PROBE_MARKER, f"N={n}").items():
            results[v] = (r["peak_mb"], r["method"])
    return results


def time_pair(runners: dict[str, Callable[[], torch.Tensor]], pair: str, first: dict[str, float], n: int,
              args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds and minor page faults per call, per repeat, of the two variants of ``pair``, alternating."""
    times, faults, _ = experiment.time_alternating(
        runners, PAIRS[pair], first, args.torch_device, warmup=args.warmup, repeats=args.repeats,
        min_time=args.min_time, large=n >= experiment.LARGE_N,
    )
    return times, faults


# --- one size ---------------------------------------------------------------------------------
def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"N": n}
    times: dict[str, list[float]] = {}
    faults: dict[str, list[float]] = {}
    # A: ModernHopfield vs plain expression
    items, cues = make_data("A", n, args)
    hop = make_hopfield(items, args)
    runners = make_runners("A", items, cues, args, hopfield=hop)
    out, first = experiment.first_calls(runners, args.torch_device)
    assert torch.equal(out["hopfield"], out["hopfield_default"])  # the options change what is kept, not the read
    max_abs = float((out["hopfield"].double() - out["plain"].double()).abs().max())
    rel = max_abs / float(out["plain"].double().abs().max())
    tol = experiment.CHECK_TOLERANCE.get(args.torch_dtype, 1e-2)
    row.update(A_max_abs_diff=max_abs, A_relative_diff=rel, A_tolerance=tol, A_check_passed=rel <= tol)
    if rel > tol:
        raise AssertionError(f"ModernHopfield and softmax(β ξ Xᵀ) X disagree at N={n}: relative diff {rel:.3e}")
    pair_times, pair_faults = time_pair(runners, "A", first, n, args)
    times.update(pair_times)
    faults.update(pair_faults)
    row["scratch_mb_after_A"] = hop.workspace.nbytes / 2**20  # resident between calls (CPU)
    del runners, out, items, cues, hop
    # B: RandomFeatureMemory vs its slot memory
    items, cues = make_data("B", n, args)
    start = time.perf_counter()
    rf = make_rf_memory(items, args)
    row["rf_write_s"] = time.perf_counter() - start
    runners = make_runners("B", items, cues, args, rf_memory=rf)
    out, first = experiment.first_calls(runners, args.torch_device)
    div = (out["rf"].double() - out["slot"].double()).norm(dim=-1)
    moved = (out["slot"].double() - cues.double()).norm(dim=-1)
    row.update(B_divergence_mean=float(div.mean()), B_divergence_max=float(div.max()),
               B_slot_distance_moved_mean=float(moved.mean()))
    pair_times, pair_faults = time_pair(runners, "B", first, n, args)
    times.update(pair_times)
    faults.update(pair_faults)
    checkpoint = None
    if not args.skip_memory and args.torch_device.type == "cpu":
        checkpoint = varmem.save(rf, workdir / f"rf_{n}.safetensors")
    del out, runners

    sec = {k: statistics.median(v) for k, v in times.items()}
    for k, v in sec.items():
        row[f"{k}_seconds"] = v
        row[f"{k}_seconds_all"] = times[k]
        row[f"{k}_retrievals_per_second"] = args.batch / v
        row[f"{k}_page_faults_per_call"] = statistics.median(faults[k]) if faults.get(k) else None
    row["A_ratio_plain_over_hopfield"] = sec["plain"] / sec["hopfield"]
    row["A_ratio_plain_over_default"] = sec["plain"] / sec["hopfield_default"]
    row["A_ratio_default_over_lean"] = sec["hopfield_default"] / sec["hopfield"]
    row["B_ratio_slot_over_rf"] = sec["slot"] / sec["rf"]
    row["A_meets_target"] = row["A_ratio_plain_over_hopfield"] >= TARGET_RATIO
    row["A_default_meets_target"] = row["A_ratio_default_over_lean"] <= TARGET_DEFAULT_OVER_LEAN

    peaks: dict[str, float | None] = {k: None for k in sec}
    method = None
    if args.skip_memory:
        pass
    elif args.torch_device.type == "cuda":
        for pair in PAIRS:
            it, cu = (items, cues) if pair == "B" else make_data("A", n, args)
            for name, fn in make_runners(pair, it, cu, args, rf_memory=rf).items():
                peaks[name], method = experiment.measure_cuda_peak(fn, args.torch_device)
    else:
        del rf, items, cues
        for name, (peak, m) in cpu_peaks(args, n, checkpoint).items():
            peaks[name], method = peak, m
    for k, v in peaks.items():
        row[f"{k}_peak_mb"] = v
    row["memory_method"] = method
    return row


# --- reporting --------------------------------------------------------------------------------
LABELS = {"hopfield": "ModernHopfield, lean read (varmem)", "hopfield_default": "ModernHopfield, default read",
          "plain": "softmax(βξXᵀ)X (plain)",
          "rf": "RandomFeatureMemory (DrDAM)", "slot": "slot LSE energy (exact)"}


def _mb(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: experiment.format_value(row[key], ".1f")


def _faults(row: dict[str, Any]) -> str:
    h, p = row.get("hopfield_page_faults_per_call"), row.get("plain_page_faults_per_call")
    return "-" if h is None or p is None else f"{h:.0f}/{p:.0f}"


TABLE = [
    ("N", ">9,", "N"), "|",
    ("lean r/s", ">10,.0f", "hopfield_retrievals_per_second"),
    ("default r/s", ">11,.0f", "hopfield_default_retrievals_per_second"),
    ("plain r/s", ">10,.0f", "plain_retrievals_per_second"),
    ("plain/lean", ">10.2f", "A_ratio_plain_over_hopfield"), ("plain/def", ">9.2f", "A_ratio_plain_over_default"),
    ("def/lean", ">8.2f", "A_ratio_default_over_lean"), ("faults H/p", ">11", _faults), "|",
    ("Hop MB", ">7", _mb("hopfield_peak_mb")), ("plain MB", ">8", _mb("plain_peak_mb")), "|",
    ("RF r/s", ">9,.0f", "rf_retrievals_per_second"), ("slot r/s", ">9,.0f", "slot_retrievals_per_second"),
    ("slot/RF", ">8.2f", "B_ratio_slot_over_rf"), "|",
    ("RF MB", ">6", _mb("rf_peak_mb")), ("slot MB", ">7", _mb("slot_peak_mb")), "|",
    ("RF div", ">7.4f", "B_divergence_mean"), ("write s", ">7.2f", "rf_write_s"),
]  # fmt: skip


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    flag = lambda row: ("" if row["A_meets_target"] else "  plain/lean < target") + (
        "" if row["A_default_meets_target"] else "  default/lean > target")
    return experiment.format_table(rows, TABLE, rule=True, suffix=flag)


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(11, 4.2))
    experiment.plot_by_size(axes[0], rows, "{}_retrievals_per_second", LABELS, legend_size=8,
                            xlabel="stored patterns N", ylabel="retrievals / s",
                            title="throughput (A: 1 update; B: K GD steps)")
    experiment.plot_by_size(axes[1], rows, "{}_peak_mb", LABELS, floor=1e-2, legend_size=8,  # none: --skip-memory
                            xlabel="stored patterns N", ylabel="peak additional memory (MB)",
                            title="peak memory of one call")
    s = result["settings"]
    fig.suptitle(f"{result['device']} ({result['torch_threads']} threads), {s['dtype']}, B={s['batch']}; "
                 f"A: D={s['dim']}, β={s['beta']:g}; B: D={s['rf_dim']}, Y={s['rf_features']}, K={s['rf_steps']}")
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_hopfield", smoke="N in {1e3, 1e4}, 1 repeat, Y = 256", device="cpu",
                          dtype="float32", threads=None)
    p.add_argument("--sizes", type=experiment.parse_size, nargs="+",
                   help="stored patterns N (default 1e3 1e4 1e5 1e6)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median; at most 3 at N >= 1e6)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds a repeat lasts at least")
    p.add_argument("--batch", type=int, default=256, help="cues per call B")
    p.add_argument("--dim", type=int, default=64, help="A: pattern dimension")
    p.add_argument("--beta", type=float, default=8.0, help="A: β on unit-norm patterns")
    p.add_argument("--cue-noise", type=float, default=0.5, help="A: cue noise (per-dim std × √D)")
    p.add_argument("--rf-dim", type=int, default=30, help="B: dimension of the binary patterns")
    p.add_argument("--rf-beta", type=float, default=25.0)
    p.add_argument("--rf-features", type=int, default=2048, help="B: random projections Y")
    p.add_argument("--rf-steps", type=int, default=10, help="B: gradient-descent steps K")
    p.add_argument("--rf-step-size", type=float, default=0.1)
    p.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    p.add_argument("--no-heap-trim", action="store_true",
                   help=f"re-run under GLIBC_TUNABLES={NO_TRIM_TUNABLES} (glibc keeps freed memory: no page faults)")
    p.add_argument("--_probe", dest="variant", choices=["hopfield", "hopfield_default", "plain", "rf", "slot"],
                   default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--_checkpoint", dest="checkpoint", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes = args.sizes or list(SMOKE_SIZES)
        args.repeats, args.warmup, args.min_time = 1, 1, 0.0
        args.rf_features = 256
    args.sizes = list(args.sizes or DEFAULT_SIZES)
    if min(args.repeats, args.batch, args.dim, args.rf_dim, args.rf_features, args.rf_steps) < 1 or args.warmup < 0:
        p.error("--repeats, --batch, --dim, --rf-dim, --rf-features, --rf-steps must be >= 1, --warmup >= 0")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.no_heap_trim and os.environ.get("GLIBC_TUNABLES") != NO_TRIM_TUNABLES:
        # glibc reads its tunables at start-up only: run this script again with them set
        argv = sys.argv[1:] if argv is None else list(argv)
        env = {**os.environ, "GLIBC_TUNABLES": NO_TRIM_TUNABLES}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, check=True)
        return json.loads((Path(args.output) / JSON_NAME).read_text())
    with experiment.torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.variant is not None:  # a memory probe (a child process of cpu_peaks)
        run_probe(args)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_size(n, args, Path(tmp)) for n in tqdm(args.sizes, desc="sizes", unit="size")]
    settings = experiment.settings(args, "sizes", "batch", "dim", "beta", "cue_noise", "rf_dim", "rf_beta",
                                   "rf_features", "rf_steps", "rf_step_size", "dtype", "repeats", "warmup",
                                   "min_time", "smoke")
    result: dict[str, Any] = {
        "benchmark": "A: ModernHopfield vs softmax(beta xi X^T) X; B: RandomFeatureMemory vs exact slot LSE memory",
        **experiment.record(args),
        "settings": settings,
        "ratios": "A: plain/ModernHopfield seconds (>1: varmem faster), default/lean read seconds (<= 1.2); "
                  "B: slot/RF seconds (>1: RF faster)",
        "target_throughput_ratio_A": TARGET_RATIO,
        "target_default_over_lean_A": TARGET_DEFAULT_OVER_LEAN,
        "all_meet_default_target_A": all(r["A_default_meets_target"] for r in rows),
        "all_checks_passed": all(r["A_check_passed"] for r in rows),
        "all_meet_target_A": all(r["A_meets_target"] for r in rows),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})
    print(f"\n{result['device']} ({result['device_name']}), {result['torch_threads']} threads, {args.dtype}, "
          f"B={args.batch}; median of {args.repeats} (<= 3 at N >= 1e6); "
          f"GLIBC_TUNABLES={result['glibc_tunables'] or '(unset)'}; faults = minor page faults per call")
    print(format_table(rows))
    print(f"A target plain/Hopfield >= {TARGET_RATIO}: {'met' if result['all_meet_target_A'] else 'NOT met'} "
          "at every size")
    print(f"A target default/lean <= {TARGET_DEFAULT_OVER_LEAN}: "
          f"{'met' if result['all_meet_default_target_A'] else 'NOT met'} at every size")
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
