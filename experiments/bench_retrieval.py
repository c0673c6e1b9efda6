"""Benchmark: fixed-point retrieval throughput and peak memory of varmem vs. plain torch.

What is compared
----------------
* **varmem** (the lean read): ``KernelDensityMemory.retrieve(cue, method="fixed_point", max_steps=K,
  tol=0, trace=False, return_weights=False)``, which streams over the stored items in chunks
  (``varmem.kernels.kernel_stats``);
* **varmem default**: the same read with the options that only decide what is kept left at their
  defaults, ``retrieve(cue, method="fixed_point", max_steps=K, tol=0)``: the energy trace and,
  while ``B·N`` is at most ``varmem.helpers.WEIGHTS_LIMIT``, the weights of the last update and
  their arg-max, all by-products of the update (target: at most 1.2 times the lean read);
* **reference**: the same math written inline with dense torch ops (:func:`reference_fixed_point`)::

      w     = softmax(-cdist(z, X) ** 2 / (2 s²))              # [B, N], materialised
      z_new = (σ² · (w @ X) + s² · x) / (σ² + s²)               # the cue term, as varmem has it

  i.e. the mean-shift / modern-Hopfield update extended by the cue term exactly as
  ``KernelDensityMemory.fixed_point_step`` does it for a full cue, starting from ``z = x`` and
  with the same stopping rule (stop once every cue moved by ``<= tol`` in max-norm).

Before timing each size, both are run once on the same data and their results compared: the
maximum absolute difference (and the difference relative to ``max |z|``) is printed, stored in
the JSON and must be below a dtype-dependent tolerance (1e-4 relative in float32), otherwise the
script stops with an ``AssertionError``.
The difference is dominated by the reference's float32 rounding (against a float64 computation
varmem is off by ~5e-7 relative at ``N = 1e6``, the reference by ~4e-5), so it grows with ``N``.

Data: ``N`` items ``X ~ N(0, I_D)`` (seeded), ``B`` cues = randomly chosen stored items plus
Gaussian noise (``--cue-noise``).  Defaults: ``D = 64``, ``B = 256``, float32,
``N ∈ {1e3, 1e4, 1e5, 1e6}``, ``K = 1``, bandwidth ``s = 2``, memory noise scale ``σ = 1``,
cue noise 0.5.  With ``s = 2`` the softmax is a genuine mixture at every ``N`` (with ``s = 1``
it is one-hot to float precision, which makes the equality check trivial and drives ``exp``
into subnormals).

Timing
------
``time.perf_counter`` around each call, with ``torch.cuda.synchronize`` before and after on CUDA.
The correctness check is the first warm-up call; below ``N = 1e6`` each variant gets
``--warmup`` more.  Each repeat runs a variant ``n`` times in a row (``n`` chosen from the
warm-up so that a repeat lasts at least ``--min-time`` seconds) and records the mean; the reported
time per call is the **median over repeats** (``--repeats``, at most 3 at ``N >= 1e6``).  The two
variants alternate within each repeat so slow drifts affect both alike.  "retrievals/s" counts
cues: ``B / seconds per call``.  **Ratios are reference / varmem**: a throughput ratio > 1 means
varmem is faster (target >= 0.9 at every size); a memory ratio > 1 means varmem uses less.

Peak memory
-----------
"Peak additional memory of one call": the highest memory in use during the call minus what was
in use just before it (inputs, stored items and the process's baseline are excluded).

* CUDA: in-process, ``torch.cuda.max_memory_allocated()`` after
  ``torch.cuda.reset_peak_memory_stats()`` minus ``torch.cuda.memory_allocated()`` before
  (exact counts of the caching allocator; one extra call after the timings).
* CPU: ``tracemalloc`` does not see torch's allocations, and a sampling thread misses short
  peaks, so each (variant, size) runs in a **fresh subprocess** (this script with a hidden
  ``--_probe`` option; the two variants' processes run side by side after the timings) that
  builds the same data, runs one full-size warm-up call (so one-time
  costs such as thread pools and BLAS buffers are not counted), returns freed heap memory to the
  OS (glibc ``malloc_trim(0)``, where available), reads the current resident set ``VmRSS``,
  resets the kernel's resident high-water mark (``echo 5 > /proc/self/clear_refs``), makes the
  measured call and reads the high-water mark ``VmHWM``.  Peak growth = ``VmHWM - VmRSS``.
  Where ``/proc`` is unavailable (non-Linux) it falls back to the growth of
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which cannot be reset and so may undercount
  (recorded as ``memory_method`` in the JSON).  Resident memory is counted in pages, so tiny
  numbers (a few MB) are approximate.

MB here means MiB (2**20 bytes).  The reference at ``N = 1e6`` holds two dense ``[B, N]`` float32
matrices at once (``cdist`` output and its square, about 2 x 977 MB); varmem's peak does not
grow with ``N`` (a few ``[B, chunk]`` blocks; the exact figure varies by tens of MB from run to
run with the C allocator's heap reuse).

Outputs (in ``--output``, default ``results/bench_retrieval``): ``bench_retrieval.json`` (seed,
versions, device, threads, settings and one row per size) and ``bench_retrieval.png``
(throughput and peak memory vs ``N``).  The table is also printed.

Usage::

    python experiments/bench_retrieval.py                      # the full benchmark
    python experiments/bench_retrieval.py --smoke              # a few seconds (used by the tests)
    python experiments/bench_retrieval.py --sizes 1e5 1e6 --steps 5 --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

DEFAULT_SIZES = (10**3, 10**4, 10**5, 10**6)
SMOKE_SIZES = (10**3, 10**4)
TARGET_RATIO = 0.9
TARGET_DEFAULT_OVER_LEAN = 1.2
PROBE_MARKER = "BENCH_RETRIEVAL_PROBE "
JSON_NAME, PNG_NAME = "bench_retrieval.json", "bench_retrieval.png"


# --- the two variants -------------------------------------------------------------------------
def reference_fixed_point(
    items: torch.Tensor, cue: torch.Tensor, bandwidth: float, noise_scale: float, steps: int, tol: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Plain dense torch: ``z <- (σ² softmax(-‖z - X‖²/2s²) @ X + s² x) / (σ² + s²)``, from ``z = x``.

    Returns ``(z, steps_taken)``; stops early, like varmem, once no cue moves by more than ``tol``.
    """
    s2, n2 = bandwidth**2, noise_scale**2
    z, taken = cue, 0
    with torch.no_grad():
        for taken in range(1, steps + 1):  # noqa: B007 (``taken`` is returned)
            w = torch.softmax(-(torch.cdist(z, items) ** 2) / (2 * s2), dim=-1)
            z_new = (n2 * (w @ items) + s2 * cue) / (n2 + s2)
            done = bool(((z_new - z).abs().amax(-1) <= tol).all())
            z = z_new
            if done:
                break
    return z, taken


def make_memory(items: torch.Tensor, args: argparse.Namespace) -> "varmem.KernelDensityMemory":
    memory = varmem.KernelDensityMemory(
        dim=items.shape[1],
        bandwidth=args.bandwidth,
        noise_scale=args.noise_scale,
        chunk_size=args.chunk_size,
        device=items.device,
        dtype=items.dtype,
    )
    return memory.write(items)


def make_runners(
    items: torch.Tensor, cues: torch.Tensor, args: argparse.Namespace
) -> dict[str, Callable[[], tuple[torch.Tensor, int]]]:
    """``{"varmem": f, "varmem_default": f', "reference": g}``; each call returns ``(z [B, D], steps_taken)``."""
    runners: dict[str, Callable[[], tuple[torch.Tensor, int]]] = {}
    if args.variant in (None, "varmem", "varmem_default"):
        memory = make_memory(items, args)

        def run_varmem(**options: Any) -> Callable[[], tuple[torch.Tensor, int]]:
            def run() -> tuple[torch.Tensor, int]:
                out = memory.retrieve(cues, method="fixed_point", max_steps=args.steps, tol=0.0, **options)
                return out.pattern, out.steps

            return run

        if args.variant in (None, "varmem"):
            runners["varmem"] = run_varmem(trace=False, return_weights=False)
        if args.variant in (None, "varmem_default"):
            runners["varmem_default"] = run_varmem()
    if args.variant in (None, "reference"):
        runners["reference"] = lambda: reference_fixed_point(
            items, cues, args.bandwidth, args.noise_scale, args.steps, 0.0
        )
    return runners


# --- data -------------------------------------------------------------------------------------
def make_data(n: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``items [N, D]`` and ``cues [B, D]`` (stored items + noise), identical on any device.

    Generated on the CPU in float32, then moved/converted; no large temporaries (the memory probes
    rely on that).
    """
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    items = torch.randn(n, args.dim, generator=gen, dtype=torch.float32, device="cpu")
    which = torch.randint(n, (args.batch,), generator=gen, device="cpu")
    noise = torch.randn(args.batch, args.dim, generator=gen, dtype=torch.float32, device="cpu")
    cues = items[which] + args.cue_noise * noise
    return items.to(device=args.torch_device, dtype=args.torch_dtype), cues.to(
        device=args.torch_device, dtype=args.torch_dtype
    )


# --- peak memory in fresh processes -----------------------------------------------------------
def probe_argv(args: argparse.Namespace, variant: str, n: int) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--_probe", variant, "--sizes", str(n)]
    argv += ["--steps", str(args.steps), "--dtype", args.dtype, "--device", args.device, "--seed", str(args.seed)]
    argv += ["--dim", str(args.dim), "--batch", str(args.batch), "--bandwidth", repr(args.bandwidth)]
    argv += ["--noise-scale", repr(args.noise_scale), "--cue-noise", repr(args.cue_noise)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.chunk_size:
        argv += ["--chunk-size", str(args.chunk_size)]
    return argv


def measure_cpu_peaks_in_subprocesses(
    args: argparse.Namespace, variants: Sequence[str], n: int
) -> dict[str, tuple[float, str]]:
    """One fresh process per variant, run side by side (resident memory is per process; the
    timings are done by then)."""
    commands = {v: probe_argv(args, v, n) for v in variants}
    probes = experiment.run_probes(commands, PROBE_MARKER, f"N={n}")
    return {v: (r["peak_mb"], r["method"]) for v, r in probes.items()}


def run_probe(args: argparse.Namespace) -> None:
    """Child process: print the peak additional memory of one call of one variant."""
    (n,) = args.sizes
    items, cues = make_data(n, args)
    fn = make_runners(items, cues, args)[args.variant]
    peak_mb, method = experiment.measure_cpu_peak_in_this_process(fn)
    experiment.print_probe(PROBE_MARKER, variant=args.variant, N=n, peak_mb=peak_mb, method=method)


# --- one size ---------------------------------------------------------------------------------
def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    device = args.torch_device
    items, cues = make_data(n, args)
    runners = make_runners(items, cues, args)
    names = ("varmem", "varmem_default", "reference")

    # correctness check = first warm-up call
    outputs, first_time = experiment.first_calls({name: runners[name] for name in names}, device)
    (z_v, steps_v), (z_r, steps_r) = outputs["varmem"], outputs["reference"]
    assert torch.equal(outputs["varmem_default"][0], z_v)  # the options change what is kept, not the read
    max_abs = float((z_v.double() - z_r.double()).abs().max())
    scale = float(z_r.double().abs().max())
    rel = max_abs / scale if scale > 0 else max_abs
    tol = experiment.CHECK_TOLERANCE.get(args.torch_dtype, 1e-2)
    passed = bool(rel <= tol and steps_v == steps_r)
    tqdm.write(
        f"N={n:>9,}: max |varmem - reference| = {max_abs:.3e} (relative {rel:.3e}, tolerance {tol:.0e}); "
        f"steps {steps_v} vs {steps_r}"
    )
    if not passed:
        raise AssertionError(
            f"varmem and the reference disagree at N={n}: max abs diff {max_abs:.3e}, relative {rel:.3e} > {tol:.0e}, "
            f"or steps differ ({steps_v} vs {steps_r})"
        )
    del outputs, z_v, z_r

    times, _, number = experiment.time_alternating(
        runners, names, first_time, device, warmup=args.warmup, repeats=args.repeats, min_time=args.min_time,
        large=n >= experiment.LARGE_N,
    )

    memory: dict[str, float | None] = {name: None for name in names}
    memory_method = None
    if args.skip_memory:
        pass
    elif device.type == "cuda":
        for name in names:
            memory[name], memory_method = experiment.measure_cuda_peak(runners[name], device)
    else:
        for name, (peak, method) in measure_cpu_peaks_in_subprocesses(args, names, n).items():
            memory[name], memory_method = peak, method

    sec = {name: statistics.median(times[name]) for name in names}
    ratio = sec["reference"] / sec["varmem"]
    default_ratio = sec["varmem_default"] / sec["varmem"]
    mem_ratio = None
    if memory["varmem"] is not None and memory["reference"] is not None:
        mem_ratio = memory["reference"] / memory["varmem"] if memory["varmem"] > 0 else math.inf
    return {
        "N": n,
        "repeats": len(times["varmem"]),
        "calls_per_repeat": number,
        "varmem_seconds": sec["varmem"],
        "reference_seconds": sec["reference"],
        "varmem_seconds_all": times["varmem"],
        "reference_seconds_all": times["reference"],
        "varmem_retrievals_per_second": args.batch / sec["varmem"],
        "reference_retrievals_per_second": args.batch / sec["reference"],
        "throughput_ratio": ratio,
        "meets_target": ratio >= TARGET_RATIO,
        "varmem_default_seconds": sec["varmem_default"],
        "varmem_default_seconds_all": times["varmem_default"],
        "reference_over_default": sec["reference"] / sec["varmem_default"],
        "default_over_lean": default_ratio,
        "default_meets_target": default_ratio <= TARGET_DEFAULT_OVER_LEAN,
        "varmem_default_peak_mb": memory["varmem_default"],
        "varmem_peak_mb": memory["varmem"],
        "reference_peak_mb": memory["reference"],
        "memory_ratio": mem_ratio,
        "memory_method": memory_method,
        "max_abs_diff": max_abs,
        "relative_diff": rel,
        "tolerance": tol,
        "check_passed": passed,
        "varmem_steps": steps_v,
        "reference_steps": steps_r,
        "chunk_size": args.chunk_size or varmem.kernels.default_chunk_size(args.batch, args.torch_device),
    }


# --- reporting --------------------------------------------------------------------------------
def _mb(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: experiment.format_value(row[key], ".1f")


TABLE = [
    ("N", ">9,", "N"), "|",
    ("varmem s/call", ">13.4g", "varmem_seconds"), ("ref s/call", ">11.4g", "reference_seconds"), "|",
    ("varmem ret/s", ">12,.0f", "varmem_retrievals_per_second"),
    ("ref ret/s", ">11,.0f", "reference_retrievals_per_second"), "|",
    ("ratio ref/vm", ">12.2f", "throughput_ratio"), ("ref/default", ">11.2f", "reference_over_default"),
    ("default/lean", ">12.2f", "default_over_lean"), "|",
    ("varmem MB", ">9", _mb("varmem_peak_mb")), ("ref MB", ">9", _mb("reference_peak_mb")),
    ("mem ref/vm", ">10", _mb("memory_ratio")), "|",
    ("rel diff", ">8.1e", "relative_diff"),
]  # fmt: skip


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    flag = lambda row: ("" if row["meets_target"] else "  ref/vm < target") + (
        "" if row["default_meets_target"] else "  default/lean > target")
    return experiment.format_table(rows, TABLE, rule=True, suffix=flag)


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    fig, (ax_t, ax_m) = experiment.subplots(1, 2, figsize=(11, 4.2))
    labels = {"varmem": "varmem", "reference": "reference"}
    experiment.plot_by_size(ax_t, rows, "{}_retrievals_per_second", labels, xlabel="stored items N",
                            ylabel="retrievals / s (cues)", title="fixed-point retrieval throughput")
    experiment.plot_by_size(ax_m, rows, "{}_peak_mb", labels, floor=1e-2, xlabel="stored items N",
                            ylabel="peak additional memory (MB)", title="peak memory of one call")
    s = result["settings"]
    fig.suptitle(
        f"{result['device']} ({result['torch_threads']} threads), {s['dtype']}, "
        f"D={s['dim']}, B={s['batch']}, K={s['steps']}"
    )
    experiment.save_figure(fig, path)


# --- command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = experiment.parser(
        __doc__, "bench_retrieval", smoke="tiny run for tests: N in {1e3, 1e4}, 1 repeat, 1 warm-up",
        device="cpu", dtype="float32", dtypes=("float32", "float64", "float16", "bfloat16"), threads=None,
        threads_help="torch.set_num_threads (default: torch's default)",
    )
    parser.add_argument(
        "--sizes", type=experiment.parse_size, nargs="+", help="numbers of stored items N (default 1e3 1e4 1e5 1e6)"
    )
    parser.add_argument("--steps", type=int, default=1, help="fixed-point steps K per retrieval (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per size; the median is reported (at most 3 at N >= 1e6)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="extra warm-up calls per variant below N = 1e6 (default 1)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.2,
        help="a repeat loops over calls for at least this many seconds (default 0.2)",
    )
    parser.add_argument("--dim", type=int, default=64, help="item dimension D (default 64)")
    parser.add_argument("--batch", type=int, default=256, help="cues per retrieval call B (default 256)")
    parser.add_argument(
        "--bandwidth", type=float, default=2.0, help="kernel bandwidth s (default 2: a non-degenerate softmax)"
    )
    parser.add_argument("--noise-scale", type=float, default=1.0, help="cue noise scale σ of the memory (default 1)")
    parser.add_argument(
        "--cue-noise", type=float, default=0.5, help="std of the noise added to stored items to make cues (default 0.5)"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="varmem chunk size (default: varmem's own)")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument(
        "--_probe", dest="variant", choices=["varmem", "varmem_default", "reference"], default=None,
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = args.sizes or list(SMOKE_SIZES)
        args.repeats, args.warmup, args.min_time = 1, 1, 0.0
    args.sizes = list(args.sizes or DEFAULT_SIZES)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.dim < 1 or args.batch < 1:
        parser.error("--steps, --repeats, --dim and --batch must be positive and --warmup non-negative")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.variant is not None:  # a memory probe (a child process of measure_cpu_peaks_in_subprocesses)
        run_probe(args)
        return {}
    rows = []
    for n in tqdm(args.sizes, desc="sizes", unit="size"):
        rows.append(bench_size(n, args))
    result: dict[str, Any] = {
        "benchmark": "fixed-point retrieval: varmem.KernelDensityMemory vs dense torch reference",
        **experiment.record(args),
        "settings": {
            **experiment.settings(
                args, "sizes", "dim", "batch", "steps", "dtype", "bandwidth", "noise_scale", "cue_noise", "chunk_size"
            ),
            "default_chunk_size": varmem.kernels.default_chunk_size(args.batch, args.torch_device),
            **experiment.settings(args, "repeats", "warmup", "min_time", "smoke"),
        },
        "ratios": "reference / varmem (throughput: > 1 means varmem faster; memory: > 1 means varmem uses less)",
        "target_throughput_ratio": TARGET_RATIO,
        "all_checks_passed": all(row["check_passed"] for row in rows),
        "all_meet_target": all(row["meets_target"] for row in rows),
        "target_default_over_lean": TARGET_DEFAULT_OVER_LEAN,
        "all_meet_default_target": all(row["default_meets_target"] for row in rows),
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})

    print(
        f"\nfixed-point retrieval, {result['device']} ({result['device_name']}), {result['torch_threads']} threads, "
        f"{args.dtype}, D={args.dim}, B={args.batch}, K={args.steps}; median of {args.repeats} (<= 3 at N >= 1e6)"
    )
    print(format_table(rows))
    print(
        f"ratios are reference/varmem; throughput target >= {TARGET_RATIO}: "
        f"{'met' if result['all_meet_target'] else 'NOT met'} at every size"
    )
    print(f"default/lean target <= {TARGET_DEFAULT_OVER_LEAN}: "
          f"{'met' if result['all_meet_default_target'] else 'NOT met'} at every size")
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
