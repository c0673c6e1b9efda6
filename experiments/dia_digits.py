"""A tiny DIA demo: a 3-stage ResNet with and without one shared DIA unit per stage, on 8×8 digits.

``varmem.contrib.DIAResNet`` (Huang et al.'s shared LSTM-gated channel attention; reference §6: not
an associative memory, so not a varmem memory) against the same network without DIA, both trained
with Adam on scikit-learn's 8×8 digits (1 797 images: a fixed random split, 1 200 train / 597 test).
Reported, not claimed: test accuracies of both (the paper's gains are ImageNet/CIFAR-scale, GPU;
nothing here tests them), the DIA parameter count against ``Σ 2.5 C² + 8.5 C`` at several depths,
and the mean Pearson correlation between the attention vectors ``h_t`` of the blocks of a stage.

Outputs (``--output``, default ``results/dia_digits``): ``dia_digits.json``, ``dia_digits.png``.

Usage::

    python experiments/dia_digits.py           # 2 blocks per stage, 15 epochs (a minute or two)
    python experiments/dia_digits.py --smoke   # 2 blocks, 3 epochs on 300 images
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from varmem import datasets, experiment
from varmem.contrib import DIAResNet, dia_parameter_count

JSON_NAME, PNG_NAME = "dia_digits.json", "dia_digits.png"
WIDTHS = (16, 32, 64)


def split(seed: int, train_size: int = 1200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = datasets.load_digits(dtype=torch.float32)
    x = digits.flat().reshape(-1, 1, 8, 8)
    y = torch.as_tensor(digits.labels).long()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    train, test = order[:train_size], order[1200:]
    return x[train], y[train], x[test], y[test]


def train(attention: bool, data: tuple, args: argparse.Namespace) -> dict[str, Any]:
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(args.seed)
    net = DIAResNet(1, 10, WIDTHS, blocks_per_stage=args.blocks, attention=attention).float()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    curve, losses = [], []
    for _ in tqdm(range(args.epochs), desc=f"{'DIA' if attention else 'plain'} epochs", leave=False):
        net.train()
        total = 0.0
        for idx in torch.randperm(x_tr.shape[0], generator=gen).split(args.batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / x_tr.shape[0])
        net.eval()
        with torch.no_grad():
            curve.append(float((net(x_te).argmax(-1) == y_te).double().mean()))
    correlations = None
    if attention and args.blocks > 1:
        with torch.no_grad():
            net(x_te)
        correlations = []
        for stage in net.stages:
            h = stage.last_attention  # [T, B, C]
            per_pair = [float(torch.corrcoef(torch.stack([h[a].flatten(), h[b].flatten()]))[0, 1])
                        for a in range(h.shape[0]) for b in range(a + 1, h.shape[0])]
            correlations.append(sum(per_pair) / len(per_pair))
    return {"attention": attention, "test_accuracy": curve[-1], "curve": curve, "train_loss": losses,
            "parameters": sum(p.numel() for p in net.parameters()), "dia_parameters": net.dia_parameters(),
            "mean_block_attention_correlation": correlations}


def plot(result: dict[str, Any], path: Any) -> None:
    fig, axes = experiment.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for run in result["runs"]:
        label = f"{'with DIA' if run['attention'] else 'plain ResNet'} ({run['parameters']:,} parameters)"
        ax.plot(range(1, len(run["curve"]) + 1), run["curve"], "o-", label=label)
    blocks = result["settings"]["blocks"]
    ax.set(xlabel="epoch", ylabel="test accuracy", title=f"8×8 digits, 3 stages × {blocks} blocks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    rows = result["depth"]
    ax.plot([r["blocks"] for r in rows], [r["dia_parameters"] for r in rows], "o-", label="DIA units (counted)")
    ax.plot([r["blocks"] for r in rows], [r["formula"] for r in rows], "k--", label="Σ 2.5C² + 8.5C")
    ax.plot([r["blocks"] for r in rows], [r["network_parameters"] for r in rows], "s-", label="whole network")
    ax.set(xlabel="blocks per stage", ylabel="parameters", yscale="log",
           title="DIA's parameters do not grow with depth")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    experiment.save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "dia_digits", smoke="3 epochs on 300 training images", threads=1)
    p.add_argument("--blocks", type=int, default=2, help="residual blocks per stage")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-size", dest="train_size", type=int, default=1200, help="training images (at most 1200)")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_size = 3, 300
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    data = split(args.seed, args.train_size)
    depth = [{"blocks": n, "dia_parameters": DIAResNet(1, 10, WIDTHS, blocks_per_stage=n).dia_parameters(),
              "formula": sum(2.5 * c**2 + 8.5 * c for c in WIDTHS),
              "network_parameters": sum(p.numel() for p in DIAResNet(1, 10, WIDTHS, blocks_per_stage=n).parameters())}
             for n in (1, 3, 9)]
    result: dict[str, Any] = {
        "experiment": "DIA shared attention on 8x8 digits (not an associative memory; no accuracy claim)",
        **experiment.record(args),
        "settings": experiment.settings(args, "blocks", "epochs", "batch", "lr", "train_size", "smoke")
        | {"widths": WIDTHS},
        "dia_parameter_count": dia_parameter_count(WIDTHS), "depth": depth,
        "runs": [train(True, data, args), train(False, data, args)],
    }
    result["seconds"] = time.perf_counter() - start
    written = experiment.save_results(args.output, JSON_NAME, result, {PNG_NAME: lambda path: plot(result, path)})
    for r in result["runs"]:
        print(f"  {'DIA  ' if r['attention'] else 'plain'}: test accuracy {r['test_accuracy']:.3f}, "
              f"{r['parameters']:,} parameters ({r['dia_parameters']:,} in DIA units); block-attention "
              f"correlation per stage {r['mean_block_attention_correlation']}")
    print(f"  {result['seconds']:.0f} s; {experiment.wrote(written)}")
    return result


if __name__ == "__main__":
    main()
