"""Benchmark: milliseconds per SVI step of ``varmem.fit`` vs a hand-written torch loop.

What is compared
----------------
One model, a Gaussian VAE (:class:`varmem.models.VAE`, ``likelihood="normal"``, dense coders),
trained on minibatches of ``B`` rows out of ``N`` with Adam, one Monte Carlo sample per step:

* **torch**: the same reparameterised negative ELBO written by hand (:func:`torch_loss`)::

      loc, scale = encoder(x_b);  z = loc + scale · ε   (ε from ``Normal(loc, scale).rsample()``)
      loss = -(N / B) Σ_b [log N(x_b; decoder(z_b), σ²) + log N(z_b; 0, I) - log N(z_b; loc_b, scale_b)]

  with ``torch.optim.Adam``, minibatch indices from a permutation, losses kept on the device and
  read every 10 steps (as ``fit`` does).
* **fit**: ``varmem.fit(vae.model, vae.guide, x, batch_size=B, kwargs={"num_data": N})``.
* **fit_jit**: the same with ``jit=True``.
* **pyro_svi** (context): the classic ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` loop
  with ``svi.step`` (global param store, a host sync per site), as in Pyro's VAE example.

Before timing each size, the torch loss and varmem's loss (``fit``'s loss module) are evaluated
at the same weights and the same random draw; they must agree (relative 1e-5 in float32),
otherwise the script stops with an ``AssertionError``.

Sizes (``D`` data dims, ``H`` hidden widths, ``L`` code dims, ``B`` batch):

=============  =====  ===========  ====  =====
small             64  32              4     16
medium           784  256            16    128
compute          784  1024, 1024     32   1024
=============  =====  ===========  ====  =====

Timing: every variant runs ``--steps`` steps (after one untimed warm-up run; none with ``--smoke``) per repeat; the
variants alternate within each repeat; the reported time is the median over ``--repeats`` of the
time per step of the training loop (``fit``'s own ``seconds``, which excludes building the loss
module and compiling; the same span for the other loops).  **Ratios are variant / torch**: 1.0
means as fast as the hand-written loop.  Targets: ``fit`` (or ``fit_jit``) ≤ 1.3 at medium and
≤ 1.1 at compute size.  Pyro's argument validation is off inside ``fit`` (``validate=False``), and
off for ``pyro_svi`` too.

Outputs (``--output``, default ``results/bench_svi``): ``bench_svi.json`` (seed, versions,
device, threads, settings, one row per size) and ``bench_svi.png``.

Usage::

    python experiments/bench_svi.py                   # all three sizes
    python experiments/bench_svi.py --smoke           # seconds (used by the tests)
    python experiments/bench_svi.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pyro
import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.experiment import synchronize
from varmem.models import VAE
from varmem.training import ELBOObjective

SIZES: dict[str, dict[str, Any]] = {
    "small": {"dim": 64, "hidden": [32], "code_dim": 4, "batch": 16, "steps": 300},
    "medium": {"dim": 784, "hidden": [256], "code_dim": 16, "batch": 128, "steps": 100},
    "compute": {"dim": 784, "hidden": [1024, 1024], "code_dim": 32, "batch": 1024, "steps": 20},
}
SMOKE_SIZES: dict[str, dict[str, Any]] = {
    "small": {"dim": 16, "hidden": [8], "code_dim": 2, "batch": 8, "steps": 5},
    "medium": {"dim": 32, "hidden": [16], "code_dim": 4, "batch": 16, "steps": 5},
    "compute": {"dim": 64, "hidden": [32, 32], "code_dim": 4, "batch": 32, "steps": 5},
}
VARIANTS = ("torch", "fit", "fit_jit", "pyro_svi")
TARGETS = {"medium": 1.3, "compute": 1.1}
NOISE = 0.5  # σ of the Gaussian likelihood
LR = 1e-3
JSON_NAME, PNG_NAME = "bench_svi.json", "bench_svi.png"


# --- the hand-written loss -------------------------------------------------------------------
def torch_loss(vae: VAE, x: torch.Tensor, num_data: int) -> torch.Tensor:
    """The reparameterised negative ELBO of the VAE on a minibatch ``x [B, D]``, written by hand."""
    loc, scale = vae.encoder(x)
    q = torch.distributions.Normal(loc, scale)
    z = q.rsample()
    log_lik = torch.distributions.Normal(vae.decoder(z), NOISE).log_prob(x).sum()
    log_prior = torch.distributions.Normal(torch.zeros_like(z), 1.0).log_prob(z).sum()
    return -(num_data / x.shape[0]) * (log_lik + log_prior - q.log_prob(z).sum())


def make_vae(cfg: dict[str, Any], args: argparse.Namespace, state: dict | None = None) -> VAE:
    vae = VAE(cfg["dim"], code_dim=cfg["code_dim"], hidden=cfg["hidden"], noise_scale=NOISE,
              device=args.torch_device, dtype=args.torch_dtype)
    if state is not None:
        vae.load_state_dict(state)
    return vae


def make_data(cfg: dict[str, Any], args: argparse.Namespace) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    n = args.num_data or 8 * cfg["batch"]
    return torch.randn(n, cfg["dim"], generator=gen).to(device=args.torch_device, dtype=args.torch_dtype)


# --- one timed run of each variant -----------------------------------------------------------
def run_torch(vae: VAE, x: torch.Tensor, batch: int, steps: int, seed: int) -> float:
    """Seconds per step of the hand-written loop."""
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = x.shape[0]
    opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=LR)
    per_epoch = n // batch
    losses, pending = [], []
    synchronize(x.device)
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen)[: per_epoch * batch].reshape(per_epoch, batch).to(x.device)
        xb = x.index_select(0, order[step % per_epoch])
        opt.zero_grad(set_to_none=True)
        loss = torch_loss(vae, xb, n)
        loss.backward()
        opt.step()
        pending.append(loss.detach())
        if (step + 1) % 10 == 0 or step + 1 == steps:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()
    synchronize(x.device)
    return (time.perf_counter() - start) / steps


def run_fit(vae: VAE, x: torch.Tensor, batch: int, steps: int, seed: int, jit: bool) -> float:
    result = varmem.fit(vae.model, vae.guide, x, batch_size=batch, kwargs={"num_data": x.shape[0]},
                        num_steps=steps, lr=LR, seed=seed, jit=jit, progress=False)
    return result.seconds / result.steps


def run_pyro_svi(vae: VAE, x: torch.Tensor, batch: int, steps: int, seed: int) -> float:
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = x.shape[0]
    per_epoch = n // batch
    with pyro.settings.context(module_local_params=False):
        svi = SVI(vae.model, vae.guide, Adam({"lr": LR}), Trace_ELBO())
        synchronize(x.device)
        start = time.perf_counter()
        for step in range(steps):
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=gen)[: per_epoch * batch].reshape(per_epoch, batch).to(x.device)
            svi.step(x.index_select(0, order[step % per_epoch]), num_data=n)
        synchronize(x.device)
    pyro.clear_param_store()
    return (time.perf_counter() - start) / steps


def check_losses_agree(cfg: dict[str, Any], x: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    """The torch loss and varmem's loss module at the same weights and the same draw of ε."""
    vae = make_vae(cfg, args)
    xb = x[: cfg["batch"]]
    idx = torch.arange(cfg["batch"], device=x.device)
    with pyro.settings.context(module_local_params=True), torch.no_grad():
        objective = ELBOObjective(vae.model, vae.guide, pyro.infer.Trace_ELBO(), num_data=x.shape[0])
        pyro.set_rng_seed(args.seed)
        ours = objective(xb, subsample=idx, num_data=x.shape[0]).item()
        pyro.set_rng_seed(args.seed)
        theirs = torch_loss(vae, xb, x.shape[0]).item()
    rel = abs(ours - theirs) / abs(theirs)
    tol = 1e-5 if args.torch_dtype == torch.float32 else 1e-10
    if not rel <= tol:
        raise AssertionError(f"varmem's loss {ours} and the torch loss {theirs} differ (relative {rel:.2e} > {tol})")
    return {"fit_loss": ours, "torch_loss": theirs, "relative_diff": rel, "tolerance": tol}


def bench_size(name: str, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    x = make_data(cfg, args)
    check = check_losses_agree(cfg, x, args)
    init = make_vae(cfg, args).state_dict()
    steps = args.steps or cfg["steps"]
    runners: dict[str, Callable[[VAE], float]] = {
        "torch": lambda vae: run_torch(vae, x, cfg["batch"], steps, args.seed),
        "fit": lambda vae: run_fit(vae, x, cfg["batch"], steps, args.seed, jit=False),
        "fit_jit": lambda vae: run_fit(vae, x, cfg["batch"], steps, args.seed, jit=True),
        "pyro_svi": lambda vae: run_pyro_svi(vae, x, cfg["batch"], steps, args.seed),
    }
    variants = [v for v in VARIANTS if v in args.variants]
    with pyro.validation_enabled(False):
        for v in variants if not args.smoke else ():  # warm-up (allocator, thread pools, first-call costs)
            runners[v](make_vae(cfg, args, init))
        times: dict[str, list[float]] = {v: [] for v in variants}
        for v in experiment.alternating(variants, args.repeats):
            times[v].append(runners[v](make_vae(cfg, args, init)))
    ms = {v: 1e3 * statistics.median(t) for v, t in times.items()}
    ratios = {v: ms[v] / ms["torch"] for v in variants if v != "torch"}
    best = min(ratios.get("fit", float("inf")), ratios.get("fit_jit", float("inf")))
    target = TARGETS.get(name)
    return {
        "size": name,
        **{k: cfg[k] for k in ("dim", "hidden", "code_dim", "batch")},
        "num_data": x.shape[0],
        "steps": steps,
        "ms_per_step": ms,
        "ms_per_step_all": {v: [1e3 * s for s in t] for v, t in times.items()},
        "ratio_to_torch": ratios,
        "best_fit_ratio": best,
        "target": target,
        "meets_target": None if target is None else bool(best <= target),
        "check": check,
    }


# --- reporting ---------------------------------------------------------------------------------
def format_table(rows: Sequence[dict[str, Any]]) -> str:
    variants = [v for v in VARIANTS if v in rows[0]["ms_per_step"]]
    hidden = lambda row: "x".join(str(h) for h in row["hidden"])
    met = lambda row: "met" if row["meets_target"] else "NOT met"
    target = lambda row: "" if row["target"] is None else f"<= {row['target']}: {met(row)}"
    ratios = [(v + "/torch", ">15.2f", lambda row, v=v: row["ratio_to_torch"][v]) for v in variants if v != "torch"]
    columns = [
        ("size", ">8", "size"), ("D", ">5", "dim"), ("H", ">11", hidden), ("L", ">3", "code_dim"), ("B", ">5", "batch"),
        "|", *[(v + " ms", ">12.3f", lambda row, v=v: row["ms_per_step"][v]) for v in variants],
        "|", *(ratios or [""]), "|", ("target", "", target),
    ]  # fmt: skip
    return experiment.format_table(rows, columns, rule=True)


def plot(rows: Sequence[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    variants = [v for v in VARIANTS if v in rows[0]["ms_per_step"]]
    names = [row["size"] for row in rows]
    fig, (ax_t, ax_r) = experiment.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(variants)
    for k, v in enumerate(variants):
        xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(rows))]
        ax_t.bar(xs, [row["ms_per_step"][v] for row in rows], width, label=v)
        if v != "torch":
            ax_r.bar(xs, [row["ratio_to_torch"][v] for row in rows], width, label=v)
    for i, row in enumerate(rows):
        if row["target"] is not None:
            ax_r.hlines(row["target"], i - 0.45, i + 0.45, colors="k", linestyles="dashed")
    ax_r.axhline(1.0, color="gray", lw=0.8)
    ax_t.set(yscale="log", ylabel="ms per SVI step", title="time per step", xticks=range(len(rows)), xticklabels=names)
    ax_r.set(ylabel="variant / hand-written torch", title="overhead ratio (dashed: target)",
             xticks=range(len(rows)), xticklabels=names)
    for ax in (ax_t, ax_r):
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{result['device']} ({result['torch_threads']} threads), {result['settings']['dtype']}")
    experiment.save_figure(fig, path)


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = experiment.parser(__doc__, "bench_svi", smoke="tiny sizes, 5 steps, 1 repeat, no warm-up (for tests)",
                               device="cpu", dtype="float32", threads=1,
                               threads_help="torch.set_num_threads (default 1: stable timings on shared machines)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which loops to time (torch is always included)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (default: per size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant; the median is reported")
    parser.add_argument("--num-data", type=int, default=None, help="rows N of the data (default 8 batches)")
    args = parser.parse_args(argv)
    if "torch" not in args.variants:
        args.variants = ["torch", *args.variants]
    args.size_table = SMOKE_SIZES if args.smoke else SIZES
    if args.smoke:
        args.repeats = 1
    if args.repeats < 1 or (args.steps is not None and args.steps < 1) or args.threads < 1:
        parser.error("--repeats, --steps and --threads must be positive")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [bench_size(name, args.size_table[name], args) for name in tqdm(args.sizes, desc="sizes")]
    result: dict[str, Any] = {
        "benchmark": "ms per SVI step: varmem.fit vs a hand-written torch ELBO loop (VAE, Adam, minibatches)",
        **experiment.record(args),
        "settings": {**experiment.settings(args, "dtype", "repeats", "smoke"), "lr": LR, "noise_scale": NOISE,
                     "variants": args.variants},
        "ratios": "variant ms / torch ms (1.0 = as fast as the hand-written loop)",
        "targets": TARGETS,
        "rows": rows,
    }
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(rows, result, path)})
    print(f"\nSVI step time, {result['device']} ({result['device_name']}), {args.threads} thread(s), {args.dtype}, "
          f"median of {args.repeats}; load average {result['load_average']}")
    print(format_table(rows))
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
