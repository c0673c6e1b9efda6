"""Benchmark: seconds per write and per read of ``varmem.BayesPCN`` vs the official algorithm inline.

What is compared
----------------
* **varmem**: ``varmem.BayesPCN`` (camera-ready defaults: Adam 0.01, at most ``T = 500`` steps;
  early stop by the official absolute test ``|ΔF| ≤ 1e-3`` or by the scale-aware relative test
  ``infer_rtol`` (default 1e-5 on the mean energy of 100-step windows, ``infer_window``: every
  cue's block mean fell by at most ``1e-5·|F|`` per step; ``--rtol 0`` turns it off); energy and
  hand-written local-error gradient in one fused pass (``FusedEnergy``: constant layer terms
  prepared once per relaxation, ``[R | U]`` in one matmul, no autograd), in-place Adam on one flat
  activity buffer, the ``K`` particles as one batched ``[K, …]`` tensor, white-noise
  reads finish with the closed-form sensory argmax).
* **reference**: :class:`ReferenceBayesPCN` below, a straightforward port of
  ``plai-group/bayes-pcn`` (``pcnet/layers.py``, ``updater``, ``ensemble.py``): every particle is a
  separate ``deepcopy``'d network, activities are optimised with ``torch.optim.Adam`` on the
  autograd gradient of the ``p_pred`` log-joint for exactly ``T`` steps (no early stop), the
  conjugate update is done per layer in float64, and a white-noise read runs ``T`` steps on the
  hidden layers then ``T`` steps on the sensory layer (a masked read: ``T`` joint steps with the
  known pixels reset after every step).

Both start from the same initial weight means (copied from the varmem memory), store the same
``N`` MNIST digits one write at a time, and are read on all of them with the headline corruptions
(white 0.2, mask 0.25; model space ``[-1, 1]``).  Recall (accuracy at MSE < 0.01 and mean MSE)
is recorded and printed for both; the run is at **equal recall** when the accuracies differ by
at most ``--recall-tol`` for every corruption (random activity initialisations differ, so the states are
not bit-identical).  Ratios are **reference / varmem** seconds (> 1: varmem faster; target ≥ 5).

Where the time goes: the reference is timed phase by phase (MAP inference, importance weights,
conjugate update, particle copies); varmem's write and read are run once under ``cProfile`` and
the functions with the largest own time are listed, with the number of relaxation steps taken.

Usage::

    python experiments/bench_bayespcn.py                 # N = 16, K ∈ {1, 4}, h = 256, L = 4
    python experiments/bench_bayespcn.py --smoke         # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import inspect
import math
import pstats
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.experiment import synchronize as sync

JSON_NAME, PNG_NAME = "bench_bayespcn.json", "bench_bayespcn.png"
TARGET_RATIO = 5.0
CORRUPTIONS = (("white", 0.2), ("mask", 0.25))
ACT = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "linear": lambda x: x}


# --- the official algorithm, written out --------------------------------------------------------
class _RefNet:
    """One particle: per layer the posterior mean ``R_l [d_in, d_out]`` and row covariance
    ``U_l [d_in, d_in]`` (float64), plus float copies used by the energy."""

    def __init__(self, means: list[torch.Tensor], sigma_prior: float, sigma2: list[float], act: str, dtype):
        self.R = [r.to(torch.float64).clone() for r in means]
        self.U = [sigma_prior**2 * torch.eye(r.shape[0], dtype=torch.float64, device=r.device) for r in means]
        self.sigma2, self.f, self.dtype = sigma2, ACT[act], dtype
        self._cast()

    def _cast(self) -> None:
        self.Rf = [r.to(self.dtype) for r in self.R]
        self.Uf = [u.to(self.dtype) for u in self.U]

    def inputs(self, acts: list[torch.Tensor]) -> list[torch.Tensor]:
        top = acts[-1].new_ones(acts[-1].shape[0], 1)
        return [self.f(acts[i + 1]) for i in range(len(acts) - 1)] + [top]

    def log_prob(self, acts: list[torch.Tensor]) -> torch.Tensor:
        """``log p_pred(a_0, …, a_{L-1})`` per datapoint ``[B]`` (weights integrated out)."""
        total = 0.0
        for i, inp in enumerate(self.inputs(acts)):
            mean = inp @ self.Rf[i]
            var = self.sigma2[i] + ((inp @ self.Uf[i]) * inp).sum(-1)
            d = mean.shape[-1]
            total = total - 0.5 * ((acts[i] - mean) ** 2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)
        return total

    def update(self, acts: list[torch.Tensor]) -> None:
        """Closed-form conjugate update of every layer (float64), as ``layers.py`` does it."""
        acts = [a.detach().to(torch.float64) for a in acts]
        for i, Z in enumerate(self.inputs(acts)):
            X, R, U = acts[i], self.R[i], self.U[i]
            Sc = Z @ U
            Sx = Sc @ Z.T + self.sigma2[i] * torch.eye(Z.shape[0], dtype=torch.float64, device=Z.device)
            self.R[i] = R + Sc.T @ torch.linalg.solve(Sx, X - Z @ R)
            self.U[i] = U - Sc.T @ torch.linalg.solve(Sx, Sc)
        self._cast()


class ReferenceBayesPCN:
    """BayesPCN as the official code runs it (particles as separate copies, fixed ``T`` Adam steps)."""

    def __init__(self, memory: "varmem.BayesPCN", steps: int, lr: float = 0.01) -> None:
        K, L = memory.n_particles, memory.n_layers
        sigma2 = [memory.layer_sigma2(i) for i in range(L)]
        self.nets = [
            _RefNet([memory.initial_mean(i)[k] for i in range(L)], memory.sigma_prior, sigma2, memory.activation,
                    memory.dtype)
            for k in range(K)
        ]
        self.log_w = torch.full((K,), -math.log(K), dtype=torch.float64)
        self.h, self.L, self.steps, self.lr = memory.h_dim, L, steps, lr
        self.phase = {"map_inference": 0.0, "importance_weights": 0.0, "conjugate_update": 0.0, "particle_copy": 0.0}

    def _hidden(self, batch: int, like: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        return [
            (torch.randn(batch, self.h, generator=generator, dtype=like.dtype) / math.sqrt(self.h)).to(like.device)
            for _ in range(self.L - 1)
        ]

    def _maximise(self, log_joint, params: list[torch.Tensor], after_step=None) -> None:
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            opt.zero_grad()
            (-log_joint().sum()).backward()
            opt.step()
            if after_step is not None:
                after_step()

    def write(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Store one item ``x [1, D]`` (``--n-batch 1``)."""
        t0 = time.perf_counter()
        nets = copy.deepcopy(self.nets)  # the updater copies the particles on every write
        self.phase["particle_copy"] += time.perf_counter() - t0
        log_w = self.log_w.clone()
        for k, net in enumerate(nets):
            t0 = time.perf_counter()
            hidden = [h.requires_grad_() for h in self._hidden(x.shape[0], x, generator)]
            self._maximise(lambda net=net, hidden=hidden: net.log_prob([x] + hidden), hidden)
            t1 = time.perf_counter()
            with torch.no_grad():
                log_w[k] += net.log_prob([x] + hidden).sum().to(torch.float64)
            t2 = time.perf_counter()
            net.update([x] + hidden)
            t3 = time.perf_counter()
            self.phase["map_inference"] += t1 - t0
            self.phase["importance_weights"] += t2 - t1
            self.phase["conjugate_update"] += t3 - t2
        self.nets, self.log_w = nets, log_w - log_w.logsumexp(0)

    def log_joint(self, acts: list[torch.Tensor]) -> torch.Tensor:
        lps = torch.stack([net.log_prob(acts) for net in self.nets], -1)  # a Python loop over particles
        return (lps + self.log_w.to(lps)).logsumexp(-1)

    def read(self, cue: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        hidden = [h.requires_grad_() for h in self._hidden(cue.shape[0], cue, generator)]
        if mask is None:  # auto-associative: hidden with x_0 clamped, then x_0 with hidden clamped
            self._maximise(lambda: self.log_joint([cue] + hidden), hidden)
            x0 = cue.clone().requires_grad_()
            fixed = [h.detach() for h in hidden]
            self._maximise(lambda: self.log_joint([x0] + fixed), [x0])
            return x0.detach()
        x0 = torch.where(mask, cue, -torch.ones_like(cue)).requires_grad_()

        def clamp() -> None:
            with torch.no_grad():
                x0[mask] = cue[mask]

        self._maximise(lambda: self.log_joint([x0] + hidden), hidden + [x0], clamp)
        return x0.detach()


# --- helpers ------------------------------------------------------------------------------------
def load_items(args: argparse.Namespace) -> tuple[torch.Tensor, tuple[int, int, int]]:
    data = varmem.datasets.load_digits() if args.dataset == "digits" else varmem.datasets.load_mnist()
    data = data.to(args.torch_device, args.torch_dtype)
    return data.flat()[: args.items], data.image_shape


def make_cues(items01: torch.Tensor, shape, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    cues = {}
    for name, level in CORRUPTIONS:
        cue, mask = varmem.corruptions.corrupt(items01.cpu(), name, level, generator=g, image_shape=shape)
        cues[f"{name}{level}"] = (cue.to(items01) * 2 - 1, None if name == "white" else mask.to(items01.device))
    return cues


def score(pattern: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, thr: float) -> dict[str, float]:
    scored = "all" if mask is None else "unknown"
    err = varmem.metrics.mse(pattern, target, mask, scored=scored)
    return {"mse": float(err.mean()), "acc": float((err < thr).double().mean())}


def profile_top(fn, n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` functions with the largest own time in one call of ``fn`` (cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values()) or 1.0
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:n]
    return [
        {"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1], "own_seconds": v[2],
         "share": v[2] / total}
        for k, v in rows
    ]


# --- one configuration --------------------------------------------------------------------------
def bench_particles(K: int, items: torch.Tensor, shape, args: argparse.Namespace) -> dict[str, Any]:
    device = args.torch_device
    D = items.shape[1]
    x = items * 2 - 1  # model space
    memory = varmem.BayesPCN(
        D, n_layers=args.n_layers, h_dim=args.h_dim, activation=args.activation, n_particles=K,
        T_infer=args.steps, infer_rtol=args.rtol, seed=args.seed, device=device, dtype=args.torch_dtype,
    )
    reference = ReferenceBayesPCN(memory, args.steps)
    gen_v = args.seed
    gen_r = torch.Generator(device="cpu").manual_seed(args.seed)

    write_steps: list[int] = []
    relax = memory.relax

    def counted_relax(*a, **kw):  # records the write-time relaxation steps (the write does not return them)
        out = relax(*a, **kw)
        write_steps.append(out[2])
        return out

    memory.relax = counted_relax
    times = {"varmem_write": 0.0, "reference_write": 0.0}
    for i in tqdm(range(len(x)), desc=f"writes K={K}", leave=False):
        item = x[i : i + 1]
        sync(device)
        t0 = time.perf_counter()
        memory.write(item, seed=gen_v + i)
        sync(device)
        t1 = time.perf_counter()
        reference.write(item, gen_r)
        sync(device)
        times["varmem_write"] += t1 - t0
        times["reference_write"] += time.perf_counter() - t1
    del memory.relax
    reads, recall = {}, {}
    for name, (cue, mask) in make_cues(items, shape, args.seed).items():
        sync(device)
        t0 = time.perf_counter()
        read_v = memory.retrieve(cue, mask, seed=args.seed)
        pat_v = read_v.pattern
        sync(device)
        t1 = time.perf_counter()
        pat_r = reference.read(cue, mask, torch.Generator(device="cpu").manual_seed(args.seed))
        sync(device)
        t2 = time.perf_counter()
        reads[name] = {"varmem_seconds": t1 - t0, "reference_seconds": t2 - t1, "varmem_steps": read_v.steps,
                       "reference_steps": args.steps * (2 if mask is None else 1)}
        sv, sr = score(pat_v, x, mask, args.threshold), score(pat_r, x, mask, args.threshold)
        recall[name] = {"varmem": sv, "reference": sr, "equal": abs(sv["acc"] - sr["acc"]) <= args.recall_tol}
    n = len(x)
    write_v, write_r = times["varmem_write"] / n, times["reference_write"] / n
    read_v = sum(r["varmem_seconds"] for r in reads.values()) / len(reads)
    read_r = sum(r["reference_seconds"] for r in reads.values()) / len(reads)
    cue, mask = next(iter(make_cues(items[:1], shape, args.seed).values()))
    spare = varmem.BayesPCN(
        D, n_layers=args.n_layers, h_dim=args.h_dim, activation=args.activation, n_particles=K,
        T_infer=args.steps, infer_rtol=args.rtol, seed=args.seed, device=device, dtype=args.torch_dtype,
    ).write(x[:1])
    return {
        "particles": K,
        "items": n,
        "varmem_seconds_per_write": write_v,
        "reference_seconds_per_write": write_r,
        "write_ratio": write_r / write_v,
        "varmem_seconds_per_read": read_v,
        "reference_seconds_per_read": read_r,
        "read_ratio": read_r / read_v,
        "read_batch": n,
        "reads": reads,
        "recall": recall,
        "equal_recall": all(r["equal"] for r in recall.values()),
        "meets_target": min(write_r / write_v, read_r / read_v) >= TARGET_RATIO,
        "varmem_mean_write_steps": sum(write_steps) / len(write_steps),
        "reference_write_steps": args.steps,
        "reference_write_phases_seconds": {k: v / n for k, v in reference.phase.items()},
        "varmem_write_profile": profile_top(lambda: spare.write(x[1:2], seed=0)),
        "varmem_read_profile": profile_top(lambda: memory.retrieve(cue, mask, seed=0)),
    }


def _recall(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['varmem']['acc']:.2f}/{v['reference']['acc']:.2f} "
                     f"(mse {v['varmem']['mse']:.1e}/{v['reference']['mse']:.1e})" for k, v in row["recall"].items())


TABLE = [
    ("K", ">2", "particles"), "|",
    ("write s (vm)", ">12.4f", "varmem_seconds_per_write"), ("write s (ref)", ">13.4f", "reference_seconds_per_write"),
    ("ratio", ">6.1f", "write_ratio"), "|",
    ("read s (vm)", ">11.4f", "varmem_seconds_per_read"), ("read s (ref)", ">12.4f", "reference_seconds_per_read"),
    ("ratio", ">6.1f", "read_ratio"), "|",
    ("recall acc (mean MSE) vm/ref per corruption", "", _recall),
]  # fmt: skip


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    differs = lambda row: "" if row["equal_recall"] else "  (recall differs)"
    return experiment.format_table(rows, TABLE, rule=True, suffix=differs)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(9, 3.6))
    labels = [f"K={r['particles']}" for r in rows]
    pos = torch.arange(len(rows)).tolist()
    for ax, what in zip(axes, ("write", "read"), strict=True):
        ax.bar([p - 0.2 for p in pos], [r[f"varmem_seconds_per_{what}"] for r in rows], 0.4, label="varmem")
        ax.bar([p + 0.2 for p in pos], [r[f"reference_seconds_per_{what}"] for r in rows], 0.4, label="reference")
        ax.set(xticks=pos, xticklabels=labels, yscale="log", ylabel="seconds", title=f"seconds per {what}")
        ax.legend()
    experiment.save_figure(fig, path, dpi=110)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "bench_bayespcn",
                          smoke="a few seconds: 8x8 digits, N=2, h=8, L=2, T=20, K in {1, 2}",
                          device="cpu", dtype="float32", threads=0)
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--items", type=int, default=16, help="items written one at a time, then all read")
    p.add_argument("--particles", type=int, nargs="+", default=[1, 4])
    p.add_argument("--h-dim", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--activation", default="relu", choices=sorted(ACT))
    p.add_argument("--steps", type=int, default=500, help="T: Adam steps per inference (reference: always T)")
    p.add_argument("--rtol", type=float, default=inspect.signature(varmem.BayesPCN).parameters["infer_rtol"].default,
                   help="varmem's relative early stop infer_rtol (0: only the official |dF| <= 1e-3)")
    p.add_argument("--threshold", type=float, default=0.01, help="accuracy threshold on the MSE ([-1, 1] units)")
    p.add_argument("--recall-tol", type=float, default=0.1, help="largest accuracy difference called 'equal'")
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset, args.items, args.h_dim, args.n_layers, args.steps = "digits", 2, 8, 2, 20
        args.particles = [1, 2]
        args.threads = args.threads or 1  # tiny tensors: threads only add overhead
    if args.items < 1 or args.steps < 1 or min(args.particles) < 1:
        p.error("--items, --steps and --particles must be positive")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    items, shape = load_items(args)
    rows = [bench_particles(K, items, shape, args) for K in tqdm(args.particles, desc="particles")]
    result = {
        "benchmark": "BayesPCN write/read: varmem.BayesPCN vs the official algorithm written inline",
        **experiment.record(args),
        "settings": experiment.settings(args),
        "ratios": "reference seconds / varmem seconds (> 1: varmem faster)",
        "target_ratio": TARGET_RATIO,
        "all_equal_recall": all(r["equal_recall"] for r in rows),
        "all_meet_target": all(r["meets_target"] for r in rows),
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, path)})
    print(f"\nBayesPCN on {args.dataset}: N={args.items}, h={args.h_dim}, L={args.n_layers}, T={args.steps}, "
          f"{args.dtype}, {result['device']}, {result['torch_threads']} threads")
    print(format_table(rows))
    for r in rows:
        st = ", ".join(f"{k} {v['varmem_steps']}/{v['reference_steps']}" for k, v in r["reads"].items())
        print(f"K={r['particles']} relaxation steps varmem/reference: write {r['varmem_mean_write_steps']:.0f}/"
              f"{r['reference_write_steps']} (mean), read {st}")
        ph = ", ".join(f"{k} {v:.3f}s" for k, v in r["reference_write_phases_seconds"].items())
        print(f"K={r['particles']} reference write phases per item: {ph}")
        top = "; ".join(f"{e['function']} {100 * e['share']:.0f}%" for e in r["varmem_write_profile"][:4])
        print(f"K={r['particles']} varmem write, largest own time: {top}")
        top = "; ".join(f"{e['function']} {100 * e['share']:.0f}%" for e in r["varmem_read_profile"][:4])
        print(f"K={r['particles']} varmem read, largest own time: {top}")
    print(f"target ratio >= {TARGET_RATIO}: {'met' if result['all_meet_target'] else 'NOT met'}; "
          f"equal recall: {'yes' if result['all_equal_recall'] else 'NO'}")
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
