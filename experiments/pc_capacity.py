"""Reproduction at CPU size: predictive-coding recall against the number of stored items by width.

Salvatori et al. (2021) store N images in a generative PC network (memory layer → hidden → sensory)
and recall them from noisy and from half-hidden cues; their Fig. 3 (CIFAR-10, read from the figure
by a third party, **[U]**, see the reference notes §2.4) shows recall falling with N sooner for
narrower networks.  Here, on the data this machine has:

* **MNIST** digits (784) and **photo patches** (16×16×3 = 768, random crops of scikit-learn's two
  sample photographs), model space ``[-1, 1]``;
* ``varmem.PredictiveCodingMemory`` with two hidden layers of width ``h`` (784-h-h), σ = 0.01,
  trained offline (``--epochs`` epochs of ``T`` Adam(0.01) steps and one local weight step);
* cues: white noise 0.2 (in ``[0, 1]`` units; ``clamp_predict`` iterated ``--repeats`` times,
  Salvatori's function F) and the bottom half hidden (``joint`` read);
* recall = fraction of cues with ``MSE < threshold`` in ``[0, 1]`` units (Salvatori: 0.005 noise,
  0.001 partial [U]) and mean MSE;
* a convolutional PC memory (:class:`varmem.memories.predictive_coding.PCNet`, transposed
  convolutions 8×4×4 → 16×8×8 → 3×16×16) on the photo patches at the smallest N.

Usage::

    python experiments/pc_capacity.py            # N ∈ {16, 64, 128}, h ∈ {256, 512, 1024}
    python experiments/pc_capacity.py --smoke    # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.memories.predictive_coding import ConvTranspose2d, PCNet

JSON_NAME, PNG_NAME = "pc_capacity.json", "pc_capacity.png"
PUBLISHED = {  # CIFAR-10 noise-retrieval accuracy vs N, read from Salvatori et al.'s Fig. 3 by FabricPC [U]
    "N": [100, 250, 500, 1000, 1500],
    "PCN-256": [1.0, 1.0, 0.7, 0.3, 0.15], "PCN-512": [1.0, 1.0, 0.9, 0.6, 0.35],
    "PCN-1024": [1.0, 1.0, 1.0, 0.95, 0.75], "PCN-2048": [1.0, 1.0, 1.0, 1.0, 1.0],
}
THRESHOLDS = {"white": 0.005, "bottom": 0.001}  # [0, 1] units


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "pc_capacity", smoke="N = 4, h = 32, 3 epochs (seconds)", threads=1)
    p.add_argument("--items", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--patch-widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--read-steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conv-epochs", type=int, default=300, help="0: no convolutional memory")
    args = p.parse_args(argv)
    if args.smoke:
        args.items, args.widths, args.patch_widths = [4], [32], [32]
        args.epochs, args.steps, args.read_steps, args.repeats, args.conv_epochs = 3, 5, 10, 2, 3
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


def cues(items01: torch.Tensor, shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    noisy, _ = varmem.corruptions.corrupt(items01, "white", 0.2, generator=g)
    half, mask = varmem.corruptions.corrupt(items01, "bottom", 0.5, image_shape=shape)
    return {"white": (noisy * 2 - 1, None), "bottom": (torch.where(mask, half * 2 - 1, torch.zeros(())), mask)}


def score(pattern: torch.Tensor, items: torch.Tensor, mask, name: str) -> dict[str, float]:
    err = varmem.metrics.mse(pattern, items, mask, scored="all" if mask is None else "unknown") / 4  # [0, 1] units
    return {"acc": float((err < THRESHOLDS[name]).double().mean()), "mse01": float(err.mean())}


def run_dense(items01: torch.Tensor, shape, h: int, args) -> dict[str, Any]:
    items = items01 * 2 - 1
    m = varmem.PredictiveCodingMemory(items.shape[1], n_layers=3, h_dim=h, sigma_obs=0.01, weight_lr=1e-4,
                                      training="offline", epochs=args.epochs, T_infer=args.steps, infer_tol=0.0,
                                      seed=args.seed, dtype=torch.float32)
    m.write(items)
    out = {}
    for name, (cue, mask) in cues(items01, shape, args.seed).items():
        if mask is None:
            r = m.retrieve(cue, procedure="clamp_predict", n_repeat=args.repeats, max_steps=args.read_steps, tol=0,
                           seed=args.seed)
        else:
            r = m.retrieve(cue, mask, procedure="joint", max_steps=args.read_steps * args.repeats, tol=0,
                           seed=args.seed)
        out[name] = score(r.pattern, items, mask, name)
    return out


def run_conv(items01: torch.Tensor, args) -> dict[str, Any]:
    items = items01 * 2 - 1
    net = PCNet((8, 4, 4), [ConvTranspose2d(8, 16, 4, stride=2, padding=1),
                            ConvTranspose2d(16, 3, 4, stride=2, padding=1)], sigmas=[1.0, 0.1],
                seed=args.seed).to(items.dtype)
    rec = net.fit(items, epochs=args.conv_epochs, T=args.steps,
                  x_optimizer=functools.partial(torch.optim.Adam, lr=0.05),
                  w_optimizer=functools.partial(torch.optim.Adam, lr=3e-3), progress=False, seed=args.seed)
    out: dict[str, Any] = {"energy_first": rec.energy[0], "energy_last": rec.energy[-1]}
    opt = functools.partial(torch.optim.Adam, lr=0.05)
    for name, (cue, mask) in cues(items01, (3, 16, 16), args.seed).items():
        if mask is None:
            pat = net.read(cue, None, procedure="clamp_predict", n_repeat=args.repeats, steps=args.read_steps,
                           x_optimizer=opt, seed=args.seed)
        else:
            pat = net.read(cue, mask, procedure="joint", steps=args.read_steps * args.repeats, x_optimizer=opt,
                           seed=args.seed)
        out[name] = score(pat, items, mask, name)
    return out


def plot(result: dict[str, Any], path) -> None:
    fig, axes = experiment.subplots(1, 3, figsize=(15, 4.2))
    for ax, (data, widths) in zip(axes[:2], (("mnist", result["settings"]["widths"]),
                                             ("patches", result["settings"]["patch_widths"])), strict=True):
        for h in widths:
            rows = [r for r in result["rows"] if r["data"] == data and r["h"] == h]
            ns = [r["N"] for r in rows]
            ax.plot(ns, [r["white"]["acc"] for r in rows], "o-", label=f"h={h} noise 0.2")
            ax.plot(ns, [r["bottom"]["acc"] for r in rows], "s--", label=f"h={h} bottom half")
        ax.set_xscale("log")
        experiment.plain_log_axis(ax, "x")
        ax.set_xlabel("stored items N")
        ax.set_ylabel("recall (MSE < 0.005 noise / 0.001 half, [0,1] units)")
        ax.set_title(f"varmem GPCN 2 hidden layers, {data}")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    ax = axes[2]
    for k, v in PUBLISHED.items():
        if k != "N":
            ax.plot(PUBLISHED["N"], v, "o-", label=k)
    ax.set_xscale("log")
    experiment.plain_log_axis(ax, "x")
    ax.set_xlabel("stored items N")
    ax.set_ylabel("noise-retrieval accuracy")
    ax.set_title("published: Salvatori et al. CIFAR-10 (read from the figure [U])")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    experiment.save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    mnist = varmem.datasets.load_mnist(dtype=torch.float32)
    patches = photo_patches(max(args.items), args.seed)
    jobs = [("mnist", n, h) for h in args.widths for n in args.items]
    jobs += [("patches", n, h) for h in args.patch_widths for n in args.items]
    rows = []
    for data, n, h in tqdm(jobs, desc="pc capacity"):
        items01 = mnist.flat()[:n] if data == "mnist" else patches[:n]
        shape = mnist.image_shape if data == "mnist" else (3, 16, 16)
        rows.append({"data": data, "N": n, "h": h, **run_dense(items01, shape, h, args)})
        r = rows[-1]
        tqdm.write(f"{data:7s} N={n:4d} h={h:5d}  noise acc {r['white']['acc']:.2f} (mse {r['white']['mse01']:.4f})"
                   f"  half acc {r['bottom']['acc']:.2f} (mse {r['bottom']['mse01']:.4f})")
    conv = run_conv(patches[:min(args.items)], args) if args.conv_epochs > 0 else None
    result = {"experiment": "PC recall vs stored items by width (Salvatori et al. 2021 at CPU size)",
              **experiment.record(args), "settings": experiment.settings(args), "rows": rows,
              "conv_patches": None if conv is None else {"N": min(args.items), **conv},
              "published_cifar10_read_from_figure_U": PUBLISHED}
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda p: plot(result, p)})
    if conv is not None:
        print(f"conv PC memory on {min(args.items)} patches: energy {conv['energy_first']:.1f} -> "
              f"{conv['energy_last']:.2f}; noise acc {conv['white']['acc']:.2f} (mse {conv['white']['mse01']:.4f}),"
              f" half acc {conv['bottom']['acc']:.2f} (mse {conv['bottom']['mse01']:.4f})")
    print(experiment.wrote(written))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


if __name__ == "__main__":
    main()
