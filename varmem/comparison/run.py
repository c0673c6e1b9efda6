"""``varmem.compare``: every memory on the same items, the same corruptions and the same metrics.

For each contender (a named memory, :class:`Contender`), each seed and each memory size ``N``:

1. the first ``N`` items of a seeded permutation of the data are written (the sizes nest: a memory
   of ``N₂ > N₁`` items holds the ``N₁`` first ones, written in one growing memory);
2. the first ``min(queries, N)`` stored items are corrupted in ``[0, 1]`` by each corruption at each
   level (:func:`varmem.corruptions.corrupt`, seeded per seed, corruption and level, so every
   memory sees exactly the same cues);
3. each read method answers every cue; data go to the memory's value domain and back
   (:mod:`varmem.domains`), so no adapter is written by hand;
4. a row per (memory, method, corruption, level, N, seed) records, in ``[0, 1]`` units and against
   the item as the memory can hold it (``domain.represent``: binarised for ``{-1, +1}`` memories):

   ============================  ==================================================================
   ``mse``, ``mse_hidden``       mean per-cue MSE over all entries / over the entries the cue hid
                                 (NaN when it hid none)
   ``accuracy``                  fraction of cues with ``mse < threshold`` (0.01: BayesPCN's rule)
   ``retrieval_rate``            fraction whose nearest stored item (Euclidean) is the right one
   ``cue_mse``                   the corrupted cue's own MSE (the baseline to beat)
   ``write_seconds``             time to write the ``N`` items (all writes up to this size)
   ``read_seconds``              time of the read of all cues; ``seconds_per_cue``
   ``log_evidence``              mean ``log p(x | M)`` of the cues where the read has a closed-form
                                 posterior (NaN otherwise)
   ============================  ==================================================================

With ``output`` the rows of every finished (memory, seed, N) cell are kept in
``output/cells/<key>.json``, and a later call with the same settings reads them instead of
recomputing (a cell is keyed by the contender's name and ``key``, the data, the corruptions, the
methods and their options, the number of queries and the threshold).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..corruptions import CORRUPTIONS, corrupt
from ..memory import Memory
from ..validation import check_bool, check_int, check_positive, check_positive_int

__all__ = ["Contender", "compare", "ComparisonError", "Examples", "ROW_COLUMNS"]


class ComparisonError(ValueError):
    """A setting that turns out to be unusable while the comparison runs (a corruption level that
    hides every entry of a cue, an output folder that cannot be written)."""

ROW_COLUMNS = (
    "memory", "method", "corruption", "level", "N", "seed", "queries", "value_domain", "mse", "mse_hidden",
    "accuracy", "retrieval_rate", "cue_mse", "write_seconds", "read_seconds", "seconds_per_cue", "log_evidence",
    "steps", "converged",
)
"""The columns of :func:`compare`'s table, in order."""


@dataclass
class Contender:
    """A named memory in a comparison.

    Attributes:
        name: the label in the table and the figures.
        build: ``build(dim) -> Memory``: a fresh, empty memory for items of dimension ``dim`` (or pass
            a memory instance to :func:`compare`: it is deep-copied for every seed).
        methods: read methods (default: the memory's ``default_method``).
        options: ``{method: {option: value}}`` passed to ``retrieve``.
        after_write: ``after_write(memory, rows)`` after each batch of writes, with ``rows`` the
            ``[N]`` indices (into ``data``) of every item the memory holds, in writing order (e.g.
            fit a feature map, or set a graph between the stored items from their labels).
        key: what identifies this configuration for resuming (change it when ``build`` changes).
        note: the configuration and its reference, for the report.
    """

    name: str
    build: Callable[[int], Memory]
    methods: tuple[str, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    after_write: Callable[[Memory, Tensor], Any] | None = None
    key: str = ""
    note: str = ""


class Examples(dict):
    """The example cues and reads a comparison kept (``table.attrs["examples"]``): ``{"memory|method|
    corruption|level": {"cue", "mask", "pattern", "target"}}``.  Shared, not copied, when pandas
    copies a table's ``attrs`` (it deep-copies them on every operation)."""

    def __deepcopy__(self, memo: dict) -> "Examples":
        return self


def _as_contenders(memories: Any) -> list[Contender]:
    if isinstance(memories, Mapping):
        entries = list(memories.items())
    else:
        entries = [(getattr(m, "name", None), m) for m in memories]
    out = []
    for name, spec in entries:
        if isinstance(spec, Contender):
            out.append(spec)
        elif isinstance(spec, Memory):
            template = spec
            out.append(Contender(type(spec).__name__ if name is None else name,
                                 lambda _dim, t=template: copy.deepcopy(t),
                                 key=json.dumps(spec.config(), sort_keys=True, default=str)))
        elif callable(spec):
            out.append(Contender(getattr(spec, "__name__", "memory") if name is None else name, spec))
        else:
            raise TypeError(f"memory {name!r} must be a varmem Memory, a callable dim -> Memory or a Contender, "
                            f"got {type(spec).__name__}")
        if not isinstance(out[-1].name, str) or not out[-1].name:
            raise ValueError(f"every memory needs a name (a non-empty string), got {out[-1].name!r}")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"memory names must be distinct, got {names}")
    if not out:
        raise ValueError("compare needs at least one memory")
    return out


def _corruption_list(corruptions: Any) -> list[tuple[str, float]]:
    """``{"drop": [0.25, 0.5], "white": 0.2}`` or ``[("drop", 0.25), ...]`` → ``[(name, level), ...]``."""
    pairs: list[tuple[str, Any]] = []
    items = corruptions.items() if isinstance(corruptions, Mapping) else corruptions
    for entry in items:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"corruptions must map names to levels or list (name, level) pairs, got {entry!r}")
        name, levels = entry
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; valid names are {', '.join(CORRUPTIONS)}")
        for level in levels if isinstance(levels, (list, tuple)) else [levels]:
            pairs.append((name, level))
    if not pairs:
        raise ValueError("compare needs at least one corruption")
    return pairs


def _fingerprint(x: Tensor) -> str:
    return hashlib.sha1(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:12], 16)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file, so that an interrupted run never leaves half a cell."""
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except OSError as e:
        raise ComparisonError(f"cannot write {str(path)!r}: {e.strerror or e}") from None


def _row_metrics(pattern01: Tensor, target: Tensor, mask: Tensor | None, stored: Tensor, index: Tensor,
                 cue01: Tensor, threshold: float) -> dict[str, float]:
    per_cue = (pattern01 - target).pow(2).mean(-1)
    hidden = None if mask is None else ~mask.expand_as(target)
    mse_hidden = math.nan
    if hidden is not None and bool(hidden.any()):
        counts = hidden.sum(-1)
        rows = counts > 0
        sq = ((pattern01 - target).pow(2) * hidden).sum(-1)
        mse_hidden = float((sq[rows] / counts[rows]).mean())
    nearest = torch.cdist(pattern01, stored).argmin(-1)
    return {
        "mse": float(per_cue.mean()),
        "mse_hidden": mse_hidden,
        "accuracy": float((per_cue < threshold).to(torch.float64).mean()),
        "retrieval_rate": float((nearest == index).to(torch.float64).mean()),
        "cue_mse": float((cue01 - target).pow(2).mean(-1).mean()),
    }


def compare(
    memories: Any,
    data: Tensor,
    *,
    image_shape: Sequence[int] | None = None,
    corruptions: Any = (("white", 0.2), ("drop", 0.5)),
    sizes: Iterable[int] = (50,),
    seeds: Iterable[int] = (0,),
    queries: int = 20,
    threshold: float = 0.01,
    output: str | Path | None = None,
    examples: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> "Any":
    """Write and read every memory on the same items and cues; return a tidy ``pandas.DataFrame``.

    Args:
        memories: ``{name: memory}`` (a ``Memory`` instance, deep-copied per seed; a callable
            ``dim -> Memory``; or a :class:`Contender`), or a sequence of :class:`Contender`.
        data: ``[M, D]`` items in ``[0, 1]`` (e.g. ``varmem.datasets.load_mnist().flat()``).
        image_shape: ``(C, H, W)`` of the items, for the image corruptions (``drop``, ``mask``,
            ``square``).
        corruptions: ``{name: level or [levels]}`` or ``[(name, level), ...]`` (names of
            :data:`varmem.corruptions.CORRUPTIONS`).
        sizes: memory sizes ``N`` (at most ``M``).
        seeds: each seed draws its own items, cues and reads.
        queries: stored items read back per cell (the first ``min(queries, N)``).
        threshold: a cue is recalled when its MSE is below this.
        output: a folder that keeps finished cells (``cells/*.json``) so that a later call resumes.
        examples: keep this many example cues and reads per (memory, method, corruption, level) of
            the largest size and first seed in ``table.attrs["examples"]`` (for figures).
        progress: show a progress bar over the cells.
        device: where the data go (default: the data's device); memories are built by their
            contenders.

    Returns a DataFrame with the columns :data:`ROW_COLUMNS`, one row per (memory, method,
    corruption, level, N, seed).
    """
    import pandas as pd

    contenders = _as_contenders(memories)
    pairs = _corruption_list(corruptions)
    if not torch.is_tensor(data) or data.dim() != 2 or not data.is_floating_point():
        got = tuple(data.shape) if torch.is_tensor(data) else type(data).__name__
        raise TypeError(f"data must be a floating [M, D] tensor of items in [0, 1], got {got}")
    if data.numel() == 0 or not bool(torch.isfinite(data).all()) or float(data.min()) < 0 or float(data.max()) > 1:
        raise ValueError("data must be non-empty, finite and within [0, 1] (rescale pixel values first)")
    sizes = sorted({check_positive_int(n, "sizes entry") for n in sizes})
    seeds = [check_int(s, "seeds entry", minimum=0) for s in seeds]
    if not sizes or not seeds:
        raise ValueError("compare needs at least one size and one seed")
    if sizes[-1] > data.shape[0]:
        raise ValueError(f"the largest size {sizes[-1]} exceeds the {data.shape[0]} items of the data")
    check_positive_int(queries, "queries")
    threshold = check_positive(threshold, "threshold")
    check_int(examples, "examples", minimum=0)
    check_bool(progress, "progress")
    data = data.to(device) if device is not None else data
    shape = tuple(image_shape) if image_shape is not None else None
    cells_dir = None if output is None else Path(output) / "cells"
    if cells_dir is not None:
        try:
            cells_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ComparisonError(f"cannot keep finished cells in {str(cells_dir)!r}: {e.strerror or e}") from None
    fingerprint = _fingerprint(data)

    rows: list[dict[str, Any]] = []
    kept = Examples()
    bar = tqdm(total=len(contenders) * len(seeds) * len(sizes), desc="compare", unit="cell", disable=not progress)
    for contender in contenders:
        for seed in seeds:
            order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed)).to(data.device)
            memory: Memory | None = None
            written, write_seconds = 0, 0.0
            for n in sizes:
                key = {"memory": contender.name, "key": contender.key, "data": fingerprint, "N": n, "seed": seed,
                       "corruptions": pairs, "methods": contender.methods, "options": contender.options,
                       "queries": queries, "threshold": threshold, "image_shape": shape, "examples": examples}
                digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
                path = None if cells_dir is None else cells_dir / f"{digest}.json"
                if path is not None and path.is_file():
                    cached = json.loads(path.read_text())
                    rows += cached["rows"]
                    kept.update(cached.get("examples", {}))
                    bar.update()
                    continue
                if memory is None:
                    memory = contender.build(data.shape[1])
                    if not isinstance(memory, Memory):
                        raise TypeError(f"contender {contender.name!r} built {type(memory).__name__}, not a Memory")
                domain = memory.value_domain
                items01 = data[order[:n]]
                if written < n:  # grow the memory to n items (replaying writes a resumed run skipped)
                    start = time.perf_counter()
                    memory.write(domain.encode(items01[written:]))
                    if contender.after_write is not None:
                        contender.after_write(memory, order[:n])
                    write_seconds += time.perf_counter() - start
                    written = n
                cell_rows, cell_examples = _read_cell(contender, memory, items01, pairs, n, seed, queries, threshold,
                                                      shape, write_seconds, examples if n == sizes[-1]
                                                      and seed == seeds[0] else 0)
                rows += cell_rows
                kept.update(cell_examples)
                if path is not None:
                    _write_atomic(path, json.dumps({"key": key, "rows": cell_rows, "examples": cell_examples},
                                                   default=_jsonable))
                bar.update()
    bar.close()
    table = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    table = table.astype({"level": float, "mse_hidden": float, "log_evidence": float})
    table.attrs["examples"] = kept
    table.attrs["notes"] = Examples({c.name: c.note for c in contenders})  # shared as well
    return table


def _read_cell(contender: Contender, memory: Memory, items01: Tensor, pairs: list[tuple[str, float]], n: int,
               seed: int, queries: int, threshold: float, shape: tuple | None, write_seconds: float,
               examples: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (and examples) of one (memory, N, seed) cell: every corruption, level and method."""
    domain = memory.value_domain
    q = min(queries, n)
    stored = domain.represent(items01)
    target = stored[:q]
    index = torch.arange(q, device=items01.device)
    methods = contender.methods or (memory.default_method,)
    rows, kept = [], {}
    for name, level in pairs:
        gen = torch.Generator().manual_seed(_seed_of(seed, name, level))
        cue01, mask = corrupt(items01[:q].to("cpu"), name, level, generator=gen, image_shape=shape)
        cue01, mask = cue01.reshape(q, -1).to(items01), mask.reshape(q, -1).to(items01.device)
        if not bool(mask.any(-1).all()):
            raise ComparisonError(f"corruption {name!r} at level {level:g} hides every entry of some cues; "
                                  "lower the level")
        mask = None if bool(mask.all()) else mask
        cue = domain.encode(cue01)
        for method in methods:
            start = time.perf_counter()
            result = memory.retrieve(cue, mask, method=method, **contender.options.get(method, {}))
            seconds = time.perf_counter() - start
            pattern01 = domain.decode(result.pattern.detach()).to(items01)
            evidence = getattr(result.posterior, "log_evidence", None)
            rows.append({
                "memory": contender.name, "method": method, "corruption": name, "level": float(level), "N": n,
                "seed": seed, "queries": q, "value_domain": str(domain),
                **_row_metrics(pattern01, target, mask, stored, index, domain.represent(cue01), threshold),
                "write_seconds": write_seconds, "read_seconds": seconds, "seconds_per_cue": seconds / q,
                "log_evidence": math.nan if evidence is None else float(evidence.mean()),
                "steps": int(result.steps),
                "converged": math.nan if result.converged is None else float(result.converged.double().mean()),
            })
            if examples:
                k = min(examples, q)
                kept[f"{contender.name}|{method}|{name}|{float(level):g}"] = {
                    "cue": cue01[:k].tolist(), "mask": None if mask is None else mask[:k].tolist(),
                    "pattern": pattern01[:k].tolist(), "target": target[:k].tolist(),
                }
    return rows, kept

