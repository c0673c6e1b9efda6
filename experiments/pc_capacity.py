"""Reproduction at CPU size: predictive-coding recall against the number of stored items by width.

Salvatori et al. (2021) store N images in a generative PC network (memory layer → hidden →
sensory) and recall them from noisy and from half-hidden cues; their Fig. 3 (CIFAR-10, read from
the figure by a third party, **[U]**, reference notes §2.4) shows recall falling with N sooner for
narrower hidden layers.  Here, on the data this machine has:

* **MNIST** digits (784) and **photo patches** (16×16×3 = 768, random crops of scikit-learn's two
  sample photographs), pixels in ``[0, 1]`` (PCX's associative-memory example);
* :class:`varmem.memories.predictive_coding.PCNet`: memory layer (``--top`` = 64 free value nodes,
  no prior, PCX) → hidden ``h`` → sensory, tanh pre-synaptic, unit variances (Salvatori's 2-layer
  net); fused dense path;
* training: ``--epochs`` epochs of ``--batches`` minibatches of at least ``--min-batch`` items,
  per batch ``T`` SGD(γ) activity steps from zero (γ halved, up to twice, where the training energy
  diverges: Salvatori et al. pick γ from a grid; γ = ``--x-lr`` on MNIST, ``--x-lr-patches`` on
  patches, ``--conv-x-lr`` for the conv memories) then one AdamW weight step of ``--w-lr`` for every
  width (``--fan-in0`` scales it by fan-in0 / fan-in as μP and PCX's tuned rates do; measured, the
  wide nets then trained slower: MNIST, N = 64, h = 1024, 80 epochs: energy 0.73 against 0.14);
  the final training energy per item is recorded per cell;
* cues: white noise σ = 0.2 (unclipped), read by Salvatori's iterated F (``clamp_predict``:
  ``--repeats`` rounds of ``--read-steps`` relaxation steps, the sensory node replaced by its
  prediction), and the bottom half hidden (``joint``: hidden nodes and unknown pixels relaxed
  together for ``--joint-steps`` SGD steps with momentum 0.9);
* recall = fraction of cues with ``MSE < 0.005`` (noise, all pixels) / ``< 0.001`` (bottom half,
  hidden pixels), outputs clipped to ``[0, 1]`` (Salvatori's thresholds, pixel range [U]), and mean MSE;
* convolutional PC memories on the photo patches at ``--conv-items`` (PCNet's autograd path; see
  :func:`conv_nets`), beside the dense nets at the same N.

Usage::

    python experiments/pc_capacity.py            # N ∈ {16, 64, 256}, h ∈ {256, 512, 1024, 2048}
    python experiments/pc_capacity.py --smoke    # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.memories.predictive_coding import ConvTranspose2d, Dense, PCNet

JSON_NAME, PNG_NAME = "pc_capacity.json", "pc_capacity.png"
PUBLISHED = {  # CIFAR-10 noise-retrieval accuracy vs N, read from Salvatori et al.'s Fig. 3 by FabricPC [U]
    "N": [100, 250, 500, 1000, 1500],
    "PCN-256": [1.0, 1.0, 0.7, 0.3, 0.15], "PCN-512": [1.0, 1.0, 0.9, 0.6, 0.35],
    "PCN-1024": [1.0, 1.0, 1.0, 0.95, 0.75], "PCN-2048": [1.0, 1.0, 1.0, 1.0, 1.0],
}
THRESHOLDS = {"white": 0.005, "bottom": 0.001}  # MSE in [0, 1] pixel units
CUE_LABELS = {"white": "white noise 0.2 (iterated F)", "bottom": "bottom half hidden (joint)"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "pc_capacity", smoke="N = 4, h = 32, 3 epochs (seconds)", threads=1)
    p.add_argument("--items", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--data", nargs="*", default=["mnist", "patches"], choices=["mnist", "patches"])
    p.add_argument("--top", type=int, default=64, help="memory-layer width")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batches", type=int, default=8, help="minibatches per epoch")
    p.add_argument("--min-batch", type=int, default=8,
                   help="smallest minibatch (AdamW on batches of 2 spiked the energy on photo patches, N = 16)")
    p.add_argument("--steps", type=int, default=20, help="T: activity steps per training batch")
    p.add_argument("--x-lr", type=float, default=0.05, help="γ: activity SGD step")
    p.add_argument("--x-lr-patches", type=float, default=0.025,
                   help="γ on photo patches (at 0.05 their training energy spiked: 0.06 -> 7, N = 16, h = 256)")
    p.add_argument("--w-lr", type=float, default=1e-3, help="AdamW weight rate")
    p.add_argument("--fan-in0", type=int, default=0, help="rates scale by fan-in0 / fan-in above it (0: none)")
    p.add_argument("--read-steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10, help="rounds of F (noisy cues)")
    p.add_argument("--joint-steps", type=int, default=4000, help="relaxation steps of the bottom-half read")
    p.add_argument("--resume", action="store_true",
                   help="reuse the cells of results/.../pc_capacity.partial.json measured with the same settings")
    p.add_argument("--conv-items", type=int, default=64, help="N of the convolutional memory; 0: none")
    p.add_argument("--conv-epochs", type=int, default=100)
    p.add_argument("--conv-x-lr", type=float, default=0.05,
                   help="γ of the conv memories (at 0.025: energy 0.43 and noise recall 0.78 for conv+dense, N = 64)")
    args = p.parse_args(argv)
    if args.smoke:
        args.items, args.widths, args.top, args.conv_items = [4], [32], 8, 4
        args.epochs, args.batches, args.steps, args.read_steps, args.repeats, args.conv_epochs = 3, 2, 5, 10, 2, 3
        args.joint_steps = 20
    return args


def photo_patches(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """``n`` random ``size × size`` RGB crops of scikit-learn's sample photographs, ``[n, 3·size²]`` in [0, 1]."""
    from sklearn.datasets import load_sample_images

    images = [torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
              for im in load_sample_images().images]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        im = images[i % len(images)]
        top = int(torch.randint(0, im.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(0, im.shape[2] - size + 1, (1,), generator=g))
        out.append(im[:, top:top + size, left:left + size].reshape(-1))
    return torch.stack(out)


def cues(items: torch.Tensor, shape, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Noisy (``x + 0.2 ε``, unclipped) and bottom-half cues (hidden entries 0) of ``items [N, D]`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    noisy, _ = varmem.corruptions.corrupt(items, "white", 0.2, generator=g)
    half, mask = varmem.corruptions.corrupt(items, "bottom", 0.5, image_shape=shape)
    return {"white": (noisy, None), "bottom": (torch.where(mask, half, torch.zeros(())), mask)}


def score(pattern: torch.Tensor, items: torch.Tensor, mask, name: str) -> dict[str, float]:
    err = varmem.metrics.mse(pattern.clamp(0, 1), items, mask, scored="all" if mask is None else "unknown")
    return {"acc": float((err < THRESHOLDS[name]).double().mean()), "mse01": float(err.mean()),
            "mse01_median": float(err.median())}


def adamw_by_fan_in(net: PCNet, lr: float, fan_in0: int = 256):
    """AdamW factory whose rate per layer is ``lr · min(1, fan_in0 / fan_in)`` (Adam moves every weight
    by about its rate, so a layer's output moves ∝ fan-in · rate: μP's 1/fan-in scaling keeps the
    step in function space the same for every width; PCX's tuned rates shrink the same way)."""
    def make(params):
        ids = {id(p) for p in params}
        groups = []
        for layer in net.layers:
            fan_in = layer.inner.weight[0].numel()
            ps = [p for p in layer.parameters() if id(p) in ids]
            groups.append({"params": ps, "lr": lr * (min(1.0, fan_in0 / fan_in) if fan_in0 > 0 else 1.0)})
        return torch.optim.AdamW(groups, lr=lr)
    return make


def converged(cell: dict[str, Any]) -> bool:
    """The training energy fell to below a tenth of its first epoch's (a diverged run ends above)."""
    return bool(np.isfinite(cell["energy_last"]) and cell["energy_last"] < 0.1 * cell["energy_first"])


def batch_size_for(n: int, args) -> int:
    """``--batches`` minibatches per epoch, each of at least ``--min-batch`` items (or all ``n``)."""
    return max(min(n, args.min_batch), -(-n // args.batches))


def train_and_read(net: PCNet, items: torch.Tensor, shape, args, *, w_lr: float, batch_size: int,
                   epochs: int, x_lr: float) -> dict[str, Any]:
    """Fit ``net`` on ``items``, then read both cues (activity step ``x_lr`` = γ); the record of the cell."""
    args = argparse.Namespace(**{**vars(args), "x_lr": x_lr})
    t0 = time.perf_counter()
    rec = net.fit(items, epochs=epochs, batch_size=batch_size, T=args.steps, init="zeros",
                  x_optimizer=functools.partial(torch.optim.SGD, lr=args.x_lr),
                  w_optimizer=adamw_by_fan_in(net, w_lr, args.fan_in0), progress=False, seed=args.seed)
    out: dict[str, Any] = {"x_lr": x_lr, "w_lr": w_lr, "batch_size": batch_size,
                           "train_seconds": time.perf_counter() - t0,
                           "energy_first": rec.energy[0], "energy_last": rec.energy[-1],
                           "energy_curve": rec.energy[:: max(1, len(rec.energy) // 20)] + [rec.energy[-1]]}
    t0 = time.perf_counter()
    for name, (cue, mask) in cues(items, shape, args.seed).items():
        if mask is None:
            pat = net.read(cue, None, procedure="clamp_predict", n_repeat=args.repeats, steps=args.read_steps,
                           x_optimizer=functools.partial(torch.optim.SGD, lr=args.x_lr), init="zeros",
                           seed=args.seed)
        else:  # momentum: 800 steps of it recalled as much as 3000 plain ones (MNIST, N = 64, h = 256)
            pat = net.read(cue, mask, procedure="joint", steps=args.joint_steps, init="zeros", seed=args.seed,
                           x_optimizer=functools.partial(torch.optim.SGD, lr=args.x_lr, momentum=0.9))
        out[name] = score(pat, items, mask, name)
    out["read_seconds"] = time.perf_counter() - t0
    return out


def dense_net(dim: int, h: int, args) -> PCNet:
    """Memory layer (``top``, free) → hidden ``h`` → sensory ``dim``; tanh pre-synaptic, unit variances."""
    return PCNet((args.top,), [Dense(args.top, h, activation="tanh"), Dense(h, dim, activation="tanh")],
                 top_prior=False, seed=args.seed)


class DenseToMap(nn.Module):
    """``g(x) = reshape(W tanh(x) + b)``: a dense memory layer predicting a ``[C, H, W]`` feature map."""

    def __init__(self, in_features: int, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.inner = nn.Linear(in_features, int(np.prod(self.shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.tanh(x.flatten(1))).view(x.shape[0], *self.shape)


def conv_nets(args) -> dict[str, PCNet]:
    """Two convolutional PC memories for 3×16×16 patches (tanh pre-synaptic, free top, unit variances):

    * ``"conv"``: all transposed convolutions, 16×2×2 → 64×4×4 → 32×8×8 → 3×16×16 (51 k weights);
    * ``"conv_dense_memory"``: a dense memory layer of 64 → a 32×8×8 map → transposed convolution
      → 3×16×16 (135 k weights; every memory unit reaches every pixel).
    """
    conv = PCNet((16, 2, 2), [ConvTranspose2d(16, 64, 4, stride=2, padding=1, activation="tanh"),
                              ConvTranspose2d(64, 32, 4, stride=2, padding=1, activation="tanh"),
                              ConvTranspose2d(32, 3, 4, stride=2, padding=1, activation="tanh")],
                 top_prior=False, seed=args.seed)
    hybrid = PCNet((64,), [DenseToMap(64, (32, 8, 8)),
                           ConvTranspose2d(32, 3, 4, stride=2, padding=1, activation="tanh")],
                   top_prior=False, seed=args.seed)
    return {"conv": conv, "conv_dense_memory": hybrid}


def plot(result: dict[str, Any], path) -> None:
    datas = result["settings"]["data"]
    widths = result["settings"]["widths"]
    colors = {h: c for h, c in zip(widths, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                                             "tab:brown"], strict=False)}
    fig, axes = experiment.subplots(len(datas), 3, figsize=(16, 4.6 * len(datas)), squeeze=False)
    conv = result.get("conv_patches")
    for row, data in zip(axes, datas, strict=True):
        for ax, cue in zip(row[:2], ("white", "bottom"), strict=True):
            if cue == "white":
                for k, v in PUBLISHED.items():
                    if k != "N":
                        h = int(k.split("-")[1])
                        ax.plot(PUBLISHED["N"], v, ":", color=colors.get(h, "grey"), alpha=0.7, lw=1.5,
                                label=f"{k} CIFAR-10, published, read from figure [U]")
            for h in widths:
                rows = [r for r in result["rows"] if r["data"] == data and r["h"] == h]
                ax.plot([r["N"] for r in rows], [r[cue]["acc"] for r in rows], "o-", color=colors[h], lw=2,
                        label=f"h={h} measured")
            if conv is not None and data == "patches":
                ax.plot([conv["N"]], [conv["conv"][cue]["acc"]], "kX", ms=11, label="all-conv PC memory (measured)")
                ax.plot([conv["N"]], [conv["conv_dense_memory"][cue]["acc"]], "k*", ms=14,
                        label="conv + dense memory layer (measured)")
            ax.set_xscale("log")
            ax.set_xlim(0.8 * min([r["N"] for r in result["rows"]] + [100]), 1.2 * max(PUBLISHED["N"]))
            experiment.plain_log_axis(ax, "x")
            ax.set_xlabel("stored items N")
            ax.set_ylabel(f"recall (MSE < {THRESHOLDS[cue]} in [0,1] units)")
            ax.set_title(f"{data}: {CUE_LABELS[cue]}" + ("" if cue == "white" else "\n(no published curve)"))
            ax.set_ylim(-0.05, 1.05)
            ax.legend(fontsize=6.5, loc="lower left" if cue == "white" else "upper right")
        ax = row[2]
        for h in widths:
            rows = [r for r in result["rows"] if r["data"] == data and r["h"] == h]
            ax.plot([r["N"] for r in rows], [r["energy_last"] for r in rows], "o-", color=colors[h], label=f"h={h}")
        D = 784 if data == "mnist" else 768  # 28×28 digits, 16×16×3 patches
        for thr, ls in ((THRESHOLDS["white"], "--"), (THRESHOLDS["bottom"], ":")):
            ax.axhline(0.5 * D * thr, color="grey", ls=ls, lw=1, label=f"½·{D}·{thr}: a pixel MSE of {thr}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        experiment.plain_log_axis(ax, "x")
        ax.set_xlabel("stored items N")
        ax.set_ylabel("final training energy per item")
        ax.set_title(f"{data}: is training converged?")
        ax.legend(fontsize=7)
    experiment.save_figure(fig, path)


def markdown_tables(result: dict[str, Any]) -> str:
    """The measured recall (and mean MSE) by width × N per data × cue, the final training energy, and
    the published [U] CIFAR-10 curve, as Markdown."""
    rows, ns = result["rows"], sorted({r["N"] for r in result["rows"]})
    head = "| h | " + " | ".join(f"N = {n}" for n in ns) + " |\n|---|" + "---|" * len(ns)

    def by_width(data: str, title: str, cell: Callable[[dict[str, Any]], str]) -> str:
        """A width × N table of ``cell(row)`` for one data set ("-" where a cell was not run)."""
        lines = [f"{title}\n\n{head}"]
        for h in result["settings"]["widths"]:
            cells = {r["N"]: r for r in rows if r["data"] == data and r["h"] == h}
            lines.append(f"| {h} | " + " | ".join(cell(cells[n]) if n in cells else "-" for n in ns) + " |")
        return "\n".join(lines)

    out = []
    for data in result["settings"]["data"]:
        for cue in ("white", "bottom"):
            out.append(by_width(data, f"{data}, {CUE_LABELS[cue]}: recall (mean MSE)",
                                lambda r, cue=cue: f"{r[cue]['acc']:.2f} ({r[cue]['mse01']:.4f})"))
        out.append(by_width(data, f"{data}: final training energy per item (first epoch → last)",
                            lambda r: f"{r['energy_first']:.3g} → {r['energy_last']:.3g}"))
    pub = PUBLISHED
    out.append("Published, CIFAR-10, white noise, read from Salvatori et al.'s Fig. 3 by a third party [U]\n\n"
               "| model | " + " | ".join(f"N = {n}" for n in pub["N"]) + " |\n|---|" + "---|" * len(pub["N"]) + "".join(
                   f"\n| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for k, vals in pub.items() if k != "N"))
    conv = result.get("conv_patches")
    if conv is not None:
        dense = {r["h"]: r for r in rows if r["data"] == "patches" and r["N"] == conv["N"]}
        table = (f"Photo patches, N = {conv['N']}: recall (mean MSE), noise / bottom half, final training energy\n\n"
                 "| memory | weights | noise 0.2 | bottom half | energy |\n|---|---|---|---|---|")
        for name in ("conv", "conv_dense_memory"):
            c = conv[name]
            table += (f"\n| {name} | {c['weights']} | {c['white']['acc']:.2f} ({c['white']['mse01']:.4f}) | "
                      f"{c['bottom']['acc']:.2f} ({c['bottom']['mse01']:.4f}) | {c['energy_last']:.3g} |")
        for h, c in sorted(dense.items()):
            table += (f"\n| dense h={h} | - | {c['white']['acc']:.2f} ({c['white']['mse01']:.4f}) | "
                      f"{c['bottom']['acc']:.2f} ({c['bottom']['mse01']:.4f}) | {c['energy_last']:.3g} |")
        out.append(table)
    return "\n\n".join(out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    mnist = varmem.datasets.load_mnist(dtype=torch.float32)
    n_max = max(args.items + [args.conv_items])
    patches = photo_patches(n_max, args.seed)
    data = {"mnist": (mnist.flat(), mnist.image_shape), "patches": (patches, (3, 16, 16))}
    jobs = [(d, n, h) for d in args.data for h in args.widths for n in args.items]
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    settings = experiment.settings(args)
    dense_keys = [k for k in settings if not k.startswith("conv") and k not in ("resume", "output", "items", "widths",
                                                                                  "data", "min_batch", "x_lr_patches")]
    partial = out_dir / "pc_capacity.partial.json"
    done: dict[tuple, dict[str, Any]] = {}
    done_conv = None
    if args.resume and partial.exists():
        old = json.loads(partial.read_text())
        if all(old["settings"].get(k) == settings[k] for k in dense_keys):
            done = {(r["data"], r["N"], r["h"]): r for r in old["rows"]}
            if all(old["settings"].get(k) == settings[k] for k in ("conv_items", "conv_epochs", "conv_x_lr")):
                done_conv = old.get("conv_patches")

    def save_partial(conv: dict[str, Any] | None) -> None:  # every measured cell, the cells reused included
        keys = {(q["data"], q["N"], q["h"]) for q in rows}
        experiment.write_json(partial, {"settings": settings, "conv_patches": conv,
                                        "rows": rows + [q for k, q in done.items() if k not in keys]})

    for d, n, h in tqdm(jobs, desc="pc capacity"):
        batch_size = batch_size_for(n, args)
        x_lr = args.x_lr_patches if d == "patches" else args.x_lr
        old = done.get((d, n, h), {})
        tried = old.get("gamma_tried", [old.get("x_lr", args.x_lr)])
        if old.get("batch_size") == batch_size and tried[0] == x_lr and (len(tried) > 1 or converged(old)):
            rows.append(old)  # the same cell
            continue
        items, shape = data[d][0][:n], data[d][1]
        tried = []
        while True:  # Salvatori et al. pick γ from a grid; here: halve it while training diverges
            tried.append(x_lr)
            r = {"data": d, "N": n, "h": h, **train_and_read(dense_net(items.shape[1], h, args), items, shape, args,
                                                             w_lr=args.w_lr, batch_size=batch_size, x_lr=x_lr,
                                                             epochs=args.epochs)}
            if converged(r) or len(tried) == 3:
                break
            tqdm.write(f"{d} N={n} h={h}: training diverged at γ = {x_lr} (energy {r['energy_first']:.3g} -> "
                       f"{r['energy_last']:.3g}); again at γ = {x_lr / 2}")
            x_lr /= 2
        r["gamma_tried"] = tried
        rows.append(r)
        tqdm.write(f"{d:7s} N={n:4d} h={h:5d}  energy {r['energy_first']:.3g} -> {r['energy_last']:.3g}  noise acc "
                   f"{r['white']['acc']:.2f} (mse {r['white']['mse01']:.4f})  half acc {r['bottom']['acc']:.2f} "
                   f"(mse {r['bottom']['mse01']:.4f})  [{r['train_seconds']:.0f}+{r['read_seconds']:.0f} s]",
                   )
        save_partial(done_conv)
    conv = done_conv if args.conv_items > 0 else None
    if args.conv_items > 0 and conv is None:
        items = patches[:args.conv_items]
        conv = {"N": args.conv_items}
        for name, net in conv_nets(args).items():
            c = {"weights": sum(p.numel() for p in net.parameters()),
                 **train_and_read(net, items, (3, 16, 16), args, w_lr=args.w_lr,
                                  batch_size=batch_size_for(args.conv_items, args), x_lr=args.conv_x_lr,
                                  epochs=args.conv_epochs)}
            conv[name] = c
            print(f"{name} PC memory on {args.conv_items} patches: energy {c['energy_first']:.1f} -> "
                  f"{c['energy_last']:.3g}; noise acc {c['white']['acc']:.2f} (mse {c['white']['mse01']:.4f}),"
                  f" half acc {c['bottom']['acc']:.2f} (mse {c['bottom']['mse01']:.4f})")
        save_partial(conv)
    result = {"experiment": "PC recall vs stored items by width (Salvatori et al. 2021 at CPU size)",
              **experiment.record(args), "settings": settings, "rows": rows, "conv_patches": conv,
              "published_cifar10_read_from_figure_U": PUBLISHED}
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda p: plot(result, p)})
    print(markdown_tables(result))
    print(experiment.wrote(written))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    main()
