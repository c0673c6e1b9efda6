"""Reproduction: auto-associative recall in a learned code space (Annabi, Pitti & Quoy 2022).

Protocol (reference ``predictive-coding.md`` §3.3)
--------------------------------------------------
* A (β-)VAE :class:`varmem.LatentMemory` is trained once per seed on items that are never stored.
* ``--memories`` memories of ``N = 100`` held-out items each (one-shot ``write`` of the encoder
  means ``m_i = μ_enc(x_i)``); ``10`` queries per memory (``--queries``), each a corrupted stored item.
* Corruptions (``[0, 1]`` pixels): **noise** = additive Gaussian, std ``--noise`` (0.2), clipped
  to ``[0, 1]``; **square** = one grey (0.5) square of side ``H/2`` at a uniform position;
  **color** = channel rotation R←G, G←B, B←R (colour data only).
* Cue information (``--cue-info``), the same for every method: ``fill`` (default, Annabi's
  protocol) = the cue with the grey square fed whole, no mask (the grey pixels enter the
  likelihood of the iterative reads, as in the released code); ``mask`` = hidden pixels set to 0
  and the mask given to every method (the latent reads leave them out of the likelihood; the
  baselines, which cannot, see the zeros).  The retrieval guide and GMM* are trained on cues made
  the same way.
* Metrics per query: **rate** = ``‖z_retrieved − m_correct‖₂ < threshold`` (Annabi's retrieval rate
  by latent distance; they use 5 for a 64-d β-VAE code; here ``--threshold`` or, by default, half the
  median nearest-neighbour distance between the stored codes of that memory, recorded in the JSON,
  because a fixed 5 means nothing for another code scale); **nn** = the nearest stored code is
  the correct one (threshold-free; chance level ``1/N``); **rate_ref** = the rate at the reference's
  fixed threshold ``--ref-threshold`` (5; JSON only); **mse** = pixel MSE of the retrieved image
  against the clean item (whole image, ``[0, 1]`` units).  Methods that retrieve pixels are scored in
  code space through ``μ_enc(retrieved)``; code-space methods are scored in pixel space through
  ``g(z)``.

Methods (all on one trained LatentMemory per seed)
--------------------------------------------------
=================  ==============================================================================
encoder            ``"amortized"``, guide="encoder": ``z = μ_enc(x̃)``
retrieval guide    ``"amortized"``, guide="retrieval": a guide ``q_φ(z | x̃, m)`` fitted by SVI on
                   corrupted cues of what this memory holds (its decoded codes ``g(m_i)``), per
                   memory and corruption (``--guide-steps``)
VAE-GMM            ``"fixed_point"``: encoder mean, then 10 mean-shift (GMM) steps, ``s = 0.1``
BP-GMM             ``"iterative"``, scheme="bp": Annabi's VAE-BP-GMM as released, Adam (lr 0.5) on
                   ``mean (x̃ - g(z))² + 0.005·(-logsumexp_i(-‖z - m_i‖²/2s²))`` from the encoder
                   mean (prior weight ``λ = γ n_obs/2σ²`` relative to the posterior energy: 49 for
                   MNIST at σ = 0.2)
MAP                ``"iterative"``, scheme="map": the same backpropagation through the decoder from
                   the encoder mean, on the posterior energy (prior weight 1; L-BFGS): the effect of
                   the prior weight is BP-GMM minus this row
PC-GMM             ``"iterative"``, scheme="pc": VAE-PC-GMM, predictive-coding relaxation from the
                   encoder mean (per-node step sizes)
hybrid             ``"hybrid"``, start="guide": the retrieval guide's mean, then MAP refinement
MAP (prior mean)   ``"iterative"``, scheme="map", init="prior_mean": MAP from the mean of the stored
                   codes (no encoder), the former default start, as a control
GMM*               ``"learned_precision"``: diagonal precision fitted per seed and corruption on a
                   separate memory of ``N`` training items (1 step, 20 epochs, Adam 0.01), 10 steps
                   at reading on the test memories
MCHN code / pixel  :class:`varmem.ModernHopfield`, dot product, β = 100, 10 updates
MemN2N code/pixel  :class:`varmem.MemN2N` (1 hop, identity-initialised, α = 100), trained on clean
                   queries of the training items (``--reader-epochs``, reference 20)
NTM code / pixel   :class:`varmem.NTM` (read-only content addressing, learned sharpening), idem
random item        negative control: a uniformly random stored item (expected nn = 1/N)
=================  ==============================================================================

Bandwidth: with the reference's ``s = 0.1`` the code prior is so peaked (nearest-neighbour distance
between stored codes ≈ 4) that every encoder-started method ends at the stored code nearest to the
encoder mean (reference §3.4: "VAE-GMM ≈ 1-nearest-neighbour in encoder space"), so the masked
likelihood that the iterative methods add cannot change the answer; ``--bandwidth 0.5`` lets it
choose between basins (each PC node steps by the inverse of its own curvature; where a step would
raise the free energy the relaxation undoes it and halves that cue's step).

Data: ``mnist`` (:func:`varmem.datasets.load_mnist`, 5000 digits, 1×28×28) and ``photos``: seeded
random ``--patch``×``--patch`` (default 16) colour patches cut from scikit-learn's two sample photographs
(halved resolution; training patches from the top 2/3 of each photograph, stored patches from the
bottom 1/3, so no stored pixel was seen in training), or the CIFAR-10 test batch (stored) and
training batch 1 (VAE training) when ``--cifar10 FOLDER`` is given.

Outputs (``--output``, default ``results/latent_recall``): ``latent_recall.json`` (config, seeds,
versions, device, per-seed and mean ± std metrics, whether ``hybrid`` is the best on square-masked
cues) and ``latent_recall_<dataset>.png`` (cues and retrievals of every method).

Usage::

    python experiments/latent_recall.py                        # 3 seeds, 10 memories, both data sets
    python experiments/latent_recall.py --smoke                # seconds (used by the tests)
    python experiments/latent_recall.py --seeds 0 1 --memories 5 --vae-steps 1500
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

import varmem
from varmem import experiment

JSON_NAME = "latent_recall.json"
DATASETS = ("mnist", "photos")
METHODS = (
    "encoder", "retrieval guide", "VAE-GMM", "BP-GMM", "MAP", "PC-GMM", "hybrid", "MAP (prior mean)", "GMM*",
    "MCHN code", "MCHN pixel", "MemN2N code", "MemN2N pixel", "NTM code", "NTM pixel", "random item",
)
LATENT_METHODS = METHODS[:9]
CUE_INFO = ("fill", "mask")
CONTROL = "random item"
METRICS = ("rate", "nn", "mse", "rate_ref")
MASKED = "square"


def png_name(dataset: str) -> str:
    return f"latent_recall_{dataset}.png"


# --- data -------------------------------------------------------------------------------------
def photo_patches(count: int, patch: int, region: str, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``count`` random ``[3, patch, patch]`` patches (flat ``[count, 3·patch²]``) of scikit-learn's
    sample photographs at half resolution; ``region`` ``"train"`` = top 2/3, ``"memory"`` = bottom 1/3."""
    from sklearn.datasets import load_sample_images

    photos = []
    for img in load_sample_images().images:
        x = torch.tensor(img.copy(), dtype=torch.float64).permute(2, 0, 1) / 255.0  # [3, H, W]
        x = torch.nn.functional.avg_pool2d(x[None], 2)[0]
        cut = (2 * x.shape[1]) // 3
        photos.append(x[:, :cut] if region == "train" else x[:, cut:])
    which = torch.randint(len(photos), (count,), generator=generator)
    out = torch.empty(count, 3, patch, patch, dtype=torch.float64)
    for k in range(count):  # data preparation, once per seed
        p = photos[int(which[k])]
        top = int(torch.randint(p.shape[1] - patch + 1, (1,), generator=generator))
        left = int(torch.randint(p.shape[2] - patch + 1, (1,), generator=generator))
        out[k] = p[:, top : top + patch, left : left + patch]
    return out.reshape(count, -1).to(dtype)


def load_split(dataset: str, args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(train [T, D], stored [memories·N, D], (C, H, W))`` for one seed."""
    gen = torch.Generator().manual_seed(seed)
    n_mem = args.memories * args.items
    if dataset == "mnist":
        x = varmem.datasets.load_mnist(dtype=args.torch_dtype).flat()
        perm = torch.randperm(len(x), generator=gen)
        stored, train = x[perm[:n_mem]], x[perm[n_mem:][: args.train_items]]
        return train, stored, (1, 28, 28)
    if args.cifar10:
        test = varmem.datasets.load_cifar10(args.cifar10, "test", dtype=args.torch_dtype).flat()
        train_all = varmem.datasets.load_cifar10(args.cifar10, "train", batches=[1], dtype=args.torch_dtype).flat()
        stored = test[torch.randperm(len(test), generator=gen)[:n_mem]]
        train = train_all[torch.randperm(len(train_all), generator=gen)[: args.train_items]]
        return train, stored, (3, 32, 32)
    train = photo_patches(args.train_items, args.patch, "train", gen, args.torch_dtype)
    stored = photo_patches(n_mem, args.patch, "memory", gen, args.torch_dtype)
    return train, stored, (3, args.patch, args.patch)


def corruptions_for(shape: tuple[int, ...], args: argparse.Namespace) -> dict[str, Callable]:
    """``{name: f(x, generator) -> (cue, mask)}``: Annabi's noise / square / colour corruptions."""

    def noise(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cue, mask = varmem.corruptions.corrupt(x, "white", args.noise, generator=g)
        return cue.clamp(0.0, 1.0), mask

    def square(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return varmem.corruptions.corrupt(x, "square", shape[1] // 2, generator=g, image_shape=shape)

    def color(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return varmem.corruptions.corrupt(x, "color", 1, image_shape=shape)

    out = {"noise": noise, "square": square}
    if shape[0] >= 2:
        out["color"] = color
    return out


def present(cue: torch.Tensor, mask: torch.Tensor, cue_info: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What every method is given: ``fill`` = the cue as corrupted (grey square included) and no
    mask; ``mask`` = hidden pixels set to 0 and the mask (None when nothing is hidden: some readers,
    e.g. the modern Hopfield engine, clamp the entries a mask marks observed)."""
    if cue_info == "fill" or bool(mask.all()):
        return cue, None
    return torch.where(mask, cue, torch.zeros((), dtype=cue.dtype)), mask


def as_presented(corruption: Callable, cue_info: str) -> Callable:
    """The corruption as the training of the guide and of GMM* sees it: the same presentation as
    the queries (``fill``: an all-True mask)."""

    def corrupted(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cue, mask = present(*corruption(x, g), cue_info)
        return cue, torch.ones_like(cue, dtype=torch.bool) if mask is None else mask

    return corrupted


def fit_gmm_star(lm: varmem.LatentMemory, held_out: torch.Tensor, corruption: Callable, args: argparse.Namespace,
                 seed: int) -> torch.Tensor:
    """The GMM* precision for one corruption, fitted on a memory of ``held_out`` training items
    (never queried); the latent memory is emptied and its precision reset afterwards."""
    if len(lm):
        lm.forget(range(len(lm)))
    lm.write(held_out)
    fit = lm.fit_precision(held_out, corruption=as_presented(corruption, args.cue_info), copies=args.guide_copies,
                           seed=seed)
    lm.forget(range(len(lm)))
    lm.log_precision.zero_()
    return fit.precision.clone()


# --- one seed of one data set -----------------------------------------------------------------
def build_memory(shape: tuple[int, ...], args: argparse.Namespace) -> varmem.LatentMemory:
    code_dim = args.code_dim or (16 if shape[0] == 1 else 32)
    return varmem.LatentMemory(shape, code_dim, hidden=tuple(args.hidden), bandwidth=args.bandwidth,
                               noise_scale=args.noise_scale, beta=args.beta, dtype=args.torch_dtype)


def train_readers(lm: varmem.LatentMemory, train: torch.Tensor, args: argparse.Namespace, seed: int) -> dict:
    """MemN2N and NTM in code and pixel space, trained on clean queries (Annabi's non-star variants)."""
    readers = {}
    for name, cls in (("MemN2N", varmem.MemN2N), ("NTM", varmem.NTM)):
        code = cls(lm.code_dim, dtype=args.torch_dtype)
        code.fit(train[: args.reader_items], encoder=lm, epochs=args.reader_epochs, memory_size=args.items, seed=seed)
        pixel = cls(lm.dim, dtype=args.torch_dtype)
        pixel.fit(train[: args.reader_items], epochs=args.reader_epochs, memory_size=args.items, seed=seed)
        readers[f"{name} code"], readers[f"{name} pixel"] = code, pixel
    return readers


def run_methods(
    lm: varmem.LatentMemory, readers: dict, items: torch.Tensor, cue: torch.Tensor, mask: torch.Tensor | None,
    corruption: Callable, precision: torch.Tensor, args: argparse.Namespace, seed: int, seconds: dict[str, float],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{method: (code [Q, L], pattern [Q, D])}`` for the queries ``(cue, mask)`` (as :func:`present`
    gives them, the same for every method) of the memory holding ``items``; ``precision`` is the
    GMM* precision fitted elsewhere; adds the seconds spent per latent method (the fit of the
    guide included) to ``seconds``."""
    steps = args.iter_steps
    out: dict[str, Any] = {}

    def latent(name: str, **options: Any) -> None:
        t0 = time.perf_counter()
        r = lm.retrieve(cue, mask, return_weights=False, **options)
        out[name] = (r.code.detach(), r.pattern.detach())
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    latent("encoder", method="amortized")
    t0 = time.perf_counter()
    # on cues of what the memory holds (its decoded codes), never the clean queried items
    lm.fit_retrieval_guide(None, corruption=as_presented(corruption, args.cue_info), copies=args.guide_copies,
                           num_steps=args.guide_steps, batch_size=100, seed=seed)
    seconds["retrieval guide"] = seconds.get("retrieval guide", 0.0) + time.perf_counter() - t0
    latent("retrieval guide", method="amortized", guide="retrieval")
    latent("VAE-GMM", method="fixed_point", max_steps=10, trace=False)
    latent("BP-GMM", method="iterative", scheme="bp", max_steps=steps)
    latent("MAP", method="iterative", scheme="map", max_steps=steps)
    latent("PC-GMM", method="iterative", scheme="pc", max_steps=steps, lr=args.pc_lr)
    latent("hybrid", method="hybrid", start="guide", max_steps=steps)
    latent("MAP (prior mean)", method="iterative", scheme="map", init="prior_mean", max_steps=steps)
    latent("GMM*", method="learned_precision", max_steps=10, precision=precision)

    codes = lm.codes
    cue_codes = varmem.encode_codes(lm, cue)
    with torch.no_grad():
        hop = varmem.ModernHopfield(lm.code_dim, beta=100.0, update_steps_max=9, dtype=args.torch_dtype).write(codes)
        z = hop.retrieve(cue_codes, return_weights=False, trace=False).pattern
        out["MCHN code"] = (z, lm.decode(z))
        hop = varmem.ModernHopfield(lm.dim, beta=100.0, update_steps_max=9, dtype=args.torch_dtype).write(items)
        x = hop.retrieve(cue, mask, return_weights=False, trace=False).pattern
        out["MCHN pixel"] = (varmem.encode_codes(lm, x), x)
    for name, reader in readers.items():
        space = name.split()[-1]
        reader.write(codes if space == "code" else items)
        r = reader.retrieve(cue_codes) if space == "code" else reader.retrieve(cue, mask)
        p = r.pattern.detach()
        out[name] = (p, lm.decode(p).detach()) if space == "code" else (varmem.encode_codes(lm, p), p)
    pick = torch.randint(len(items), (len(cue),), generator=torch.Generator().manual_seed(seed + 7919 * len(cue)))
    out["random item"] = (codes[pick], items[pick])
    return out


def clear(reader: Any) -> None:
    """Empty a baseline reader between memories."""
    if hasattr(reader, "forget"):
        reader.forget(range(len(reader)))
    else:  # keep the learned reader, drop the stored items
        reader.items = reader.items[:0]


def run_dataset(dataset: str, args: argparse.Namespace, seed: int, bar: Any) -> tuple[dict, dict, dict]:
    """Metrics ``{corruption: {method: {metric: value}}}``, info, and examples for the figure."""
    torch.manual_seed(seed)
    train, stored, shape = load_split(dataset, args, seed)
    lm = build_memory(shape, args)
    t0 = time.perf_counter()
    fit = lm.fit_autoencoder(train, num_steps=args.vae_steps, batch_size=100, lr=args.lr, seed=seed, jit=True)
    info: dict[str, Any] = {"vae_seconds": time.perf_counter() - t0, "vae_final_loss": float(fit.losses[-1]),
                            "train_items": len(train), "data_shape": list(shape), "code_dim": lm.code_dim}
    t0 = time.perf_counter()
    readers = train_readers(lm, train, args, seed)
    info["reader_seconds"] = time.perf_counter() - t0
    corruptions = corruptions_for(shape, args)
    t0 = time.perf_counter()
    held_out = train[-args.items:]  # GMM* is fitted on a memory of these, never on a queried memory
    precisions = {c: fit_gmm_star(lm, held_out, f, args, seed) for c, f in corruptions.items()}
    info["gmm_star_seconds"] = time.perf_counter() - t0
    info["cue_info"] = args.cue_info
    sums: dict[str, dict[str, dict[str, list[float]]]] = {
        c: {m: {k: [] for k in METRICS} for m in METHODS} for c in corruptions
    }
    thresholds, examples, seconds = [], {}, {}
    t0 = time.perf_counter()
    for k in range(args.memories):
        items = stored[k * args.items : (k + 1) * args.items]
        if len(lm):
            lm.forget(range(len(lm)))
        for reader in readers.values():
            if len(reader):
                clear(reader)
        lm.write(items)
        codes = lm.codes
        dist = torch.cdist(codes, codes).fill_diagonal_(float("inf"))
        threshold = args.threshold or 0.5 * float(dist.min(1).values.median())
        thresholds.append(threshold)
        gen = torch.Generator().manual_seed(1000 * seed + k)
        target = torch.randperm(args.items, generator=gen)[: args.queries]
        for c_name, corruption in corruptions.items():
            cue, mask = present(*corruption(items[target], gen), args.cue_info)
            results = run_methods(lm, readers, items, cue, mask, corruption, precisions[c_name], args, seed, seconds)
            for reader in readers.values():
                clear(reader)
            for m_name, (z, x) in results.items():
                d = torch.linalg.vector_norm(z - codes[target], dim=1)
                hits = varmem.metrics.nearest_item(z, codes)[0] == target
                sums[c_name][m_name]["rate"].append(float((d < threshold).double().mean()))
                sums[c_name][m_name]["rate_ref"].append(float((d < args.ref_threshold).double().mean()))
                sums[c_name][m_name]["nn"].append(float(hits.double().mean()))
                sums[c_name][m_name]["mse"].append(float(varmem.metrics.mse(x, items[target]).mean()))
            if k == 0:
                examples[c_name] = {"clean": items[target], "cue": cue,
                                    **{m: x for m, (_, x) in results.items()}}
            bar.update(1)
    info["retrieval_seconds"] = time.perf_counter() - t0
    info["method_seconds"] = seconds
    info["threshold_mean"] = statistics.fmean(thresholds)
    metrics = {c: {m: {k: statistics.fmean(v) for k, v in ms.items()} for m, ms in cs.items()}
               for c, cs in sums.items()}
    return metrics, info, {"shape": shape, "examples": examples}


# --- aggregation, figure, printout ------------------------------------------------------------
def aggregate(per_seed: list[dict]) -> dict:
    """mean ± std (sample std, 0 for one seed) over seeds of every metric."""
    out: dict[str, Any] = {}
    for c in per_seed[0]:
        out[c] = {}
        for m in per_seed[0][c]:
            out[c][m] = {}
            for k in METRICS:
                values = [s[c][m][k] for s in per_seed]
                out[c][m][k] = {"mean": statistics.fmean(values),
                                "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def best_on_masked(summary: dict) -> dict[str, Any]:
    """Is ``hybrid`` the best method on square-masked cues?  Judged by rate (ties → nn, then lower
    mse), and separately by nn (ties → lower mse).  The negative control is not a candidate."""
    table = summary[MASKED]
    key = {m: (table[m]["rate"]["mean"], table[m]["nn"]["mean"], -table[m]["mse"]["mean"])
           for m in table if m != CONTROL}
    best = max(key, key=key.get)
    best_latent = max(LATENT_METHODS, key=key.get)
    nn = {m: (table[m]["nn"]["mean"], -table[m]["mse"]["mean"]) for m in key}
    best_nn = max(nn, key=nn.get)
    return {"best": best, "best_latent_method": best_latent, "hybrid_is_best": key["hybrid"] >= key[best],
            "hybrid_is_best_latent": key["hybrid"] >= key[best_latent],
            "hybrid_rate": table["hybrid"]["rate"]["mean"], "best_rate": table[best]["rate"]["mean"],
            "best_by_nn": best_nn, "hybrid_is_best_by_nn": nn["hybrid"] >= nn[best_nn],
            "hybrid_nn": table["hybrid"]["nn"]["mean"], "best_nn": table[best_nn]["nn"]["mean"]}


def format_table(dataset: str, summary: dict, seeds: int) -> str:
    corr = list(summary)
    head = f"{'method':<16}" + "".join(f"| {c + ' rate':<14}{c + ' nn':<14}{c + ' mse':<16}" for c in corr)
    lines = [f"\n{dataset}: mean ± std over {seeds} seed(s)", head, "-" * len(head)]
    for m in METHODS:
        row = f"{m:<16}"
        for c in corr:
            v = summary[c][m]
            row += (f"| {v['rate']['mean']:.2f}±{v['rate']['std']:.2f}".ljust(16)
                    + f"{v['nn']['mean']:.2f}±{v['nn']['std']:.2f}".ljust(14)
                    + f"{v['mse']['mean']:.4f}±{v['mse']['std']:.4f}".ljust(16))
        lines.append(row)
    return "\n".join(lines)


def plot(dataset: str, figure: dict, path: Path, per_corruption: int = 3) -> None:
    shape, examples = figure["shape"], figure["examples"]
    rows = ["clean", "cue", *METHODS]
    cols = [(c, q) for c in examples for q in range(min(per_corruption, len(examples[c]["cue"])))]
    size = (0.9 * len(cols) + 1.2, 0.9 * len(rows))
    fig, axes = experiment.subplots(len(rows), len(cols), figsize=size, squeeze=False)
    for j, (c, q) in enumerate(cols):
        for i, r in enumerate(rows):
            ax = axes[i][j]
            img = examples[c][r][q].detach().double().clamp(0, 1).reshape(shape).permute(1, 2, 0).cpu().numpy()
            ax.imshow(img[..., 0] if shape[0] == 1 else img, cmap="gray" if shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(r, rotation=0, ha="right", va="center", fontsize=7)
            if i == 0:
                ax.set_title(c, fontsize=7)
    fig.suptitle(f"{dataset}: cues and retrievals (memory 0, first seed)", fontsize=9)
    experiment.save_figure(fig, path, dpi=90)


# --- command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = experiment.parser(__doc__, "latent_recall", smoke="tiny run for tests (1 seed, few items and steps)",
                               seed_help="first seed (with --num-seeds)", dtype="float32", threads=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="explicit seeds (default 0 1 2)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--cifar10", default=None, help="CIFAR-10 python batches folder: replaces the photographs")
    parser.add_argument("--memories", type=int, default=10, help="memories per seed (default 10)")
    parser.add_argument("--items", type=int, default=100, help="items per memory N (reference 100)")
    parser.add_argument("--queries", type=int, default=10, help="queries per memory (reference 10)")
    parser.add_argument("--train-items", type=int, default=3000, help="VAE training items (default 3000)")
    parser.add_argument("--patch", type=int, default=16, help="photo patch side (default 16)")
    parser.add_argument("--noise", type=float, default=0.2, help="std of the additive noise (default 0.2)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="latent distance for a success (default: half the median NN distance of the codes)")
    parser.add_argument("--ref-threshold", type=float, default=5.0,
                        help="the reference's fixed latent threshold, reported as rate_ref (default 5)")
    parser.add_argument("--code-dim", type=int, default=None, help="code dimension (default 16 grey, 32 colour)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256], help="hidden widths of the dense VAE")
    parser.add_argument("--bandwidth", type=float, default=0.1, help="kernel width s of the code prior (ref. 0.1)")
    parser.add_argument("--noise-scale", type=float, default=0.2, help="decoder noise σ (default 0.2)")
    parser.add_argument("--beta", type=float, default=1.0, help="β of the β-VAE (default 1)")
    parser.add_argument("--vae-steps", type=int, default=2000, help="SVI steps of the VAE (default 2000)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the VAE (default 2e-3)")
    parser.add_argument("--guide-steps", type=int, default=200, help="SVI steps of each retrieval guide")
    parser.add_argument("--guide-copies", type=int, default=5, help="corrupted copies per item (guide, GMM*)")
    parser.add_argument("--iter-steps", type=int, default=100,
                        help="max iterations of BP/MAP/PC/hybrid (default 100, BP-GMM's)")
    parser.add_argument("--pc-lr", type=float, default=None,
                        help="inference rate α of the PC relaxation, in units of each node's inverse curvature "
                             "(default: the engine's 1; halved per cue where a step would raise the free energy)")
    parser.add_argument("--cue-info", choices=CUE_INFO, default="fill",
                        help="what every method gets of a square-masked cue: 'fill' = the grey square, no mask "
                             "(Annabi's protocol, default); 'mask' = hidden pixels 0 and the mask")
    parser.add_argument("--reader-epochs", type=int, default=20, help="MemN2N/NTM training epochs (reference 20)")
    parser.add_argument("--reader-items", type=int, default=1000, help="MemN2N/NTM training items (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    args = parser.parse_args(argv)
    if args.smoke:
        args.memories, args.items, args.queries = 1, 20, 10
        args.train_items, args.patch, args.hidden = 300, 8, [32]
        args.vae_steps, args.guide_steps, args.iter_steps, args.reader_epochs = 300, 5, 10, 1
        args.code_dim = args.code_dim or 4
        args.seeds = args.seeds or [args.seed]
    args.seeds = args.seeds or [args.seed, args.seed + 1, args.seed + 2]
    if min(args.memories, args.items, args.queries, args.train_items, args.vae_steps) < 1 or args.queries > args.items:
        parser.error("--memories, --items, --queries, --train-items, --vae-steps must be positive, queries <= items")
    return experiment.resolve(args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return experiment.main(parse_args, run, argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.output)
    n_corr = {d: 2 if d == "mnist" else 3 for d in args.datasets}
    total = sum(len(args.seeds) * args.memories * n_corr[d] for d in args.datasets)
    result: dict[str, Any] = {
        "experiment": "latent recall (Annabi, Pitti & Quoy 2022 protocol)",
        "config": experiment.settings(args),
        **experiment.record(args, seed=args.seeds[0]),
        "seeds": args.seeds,
        "methods": list(METHODS),
        "metrics": {"rate": "fraction with ||z - m_correct|| < threshold (info.threshold_mean)",
                    "nn": "nearest stored code is correct", "mse": "pixel MSE vs the clean item, [0, 1] units",
                    "rate_ref": "fraction with ||z - m_correct|| < ref_threshold (Annabi's 5)"},
        "chance_nn": 1.0 / args.items,
        "datasets": {},
    }
    start = time.perf_counter()
    with tqdm(total=total, desc="memories x corruptions", disable=args.no_progress) as bar:
        for dataset in args.datasets:
            per_seed, infos, figure = [], [], None
            for seed in args.seeds:
                metrics, info, fig = run_dataset(dataset, args, seed, bar)
                per_seed.append(metrics)
                infos.append(info)
                figure = figure or fig
            summary = aggregate(per_seed)
            name = "cifar10" if dataset == "photos" and args.cifar10 else dataset
            result["datasets"][name] = {"summary": summary, "per_seed": per_seed, "info": infos,
                                        "masked": best_on_masked(summary), "figure": png_name(name)}
            plot(name, figure, out / png_name(name))
    result["seconds"] = time.perf_counter() - start
    experiment.write_json(out / JSON_NAME, result)

    for name, data in result["datasets"].items():
        print(format_table(name, data["summary"], len(args.seeds)))
        masked, thr = data["masked"], statistics.fmean(i["threshold_mean"] for i in data["info"])
        info = data["info"][0]
        slow = sorted(info["method_seconds"].items(), key=lambda kv: -kv[1])[:4]
        print(f"first seed: VAE {info['vae_seconds']:.0f} s, MemN2N/NTM training {info['reader_seconds']:.0f} s, "
              f"retrieval {info['retrieval_seconds']:.0f} s (slowest: "
              + ", ".join(f"{m} {t:.0f} s" for m, t in slow) + ")")
        print(f"latent threshold (mean) {thr:.3f}; chance nn = {result['chance_nn']:.3f}")
        print(f"square-masked cues: best = {masked['best']} (rate {masked['best_rate']:.2f}); hybrid rate "
              f"{masked['hybrid_rate']:.2f}: hybrid is {'' if masked['hybrid_is_best'] else 'NOT '}the best overall, "
              f"{'' if masked['hybrid_is_best_latent'] else 'NOT '}the best latent method "
              f"(best latent: {masked['best_latent_method']}); by nn: best = {masked['best_by_nn']} "
              f"({masked['best_nn']:.2f}), hybrid {masked['hybrid_nn']:.2f}")
    print(f"wrote {out / JSON_NAME} and the figures; {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
