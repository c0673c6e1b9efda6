"""The figures of a comparison (``varmem compare``), drawn from its table.

* ``capacity.png``: recall accuracy against the memory size ``N``, one line per memory (the mean over
  seeds) with a band from the lowest to the highest seed, one panel per corruption;
* ``recall_vs_level.png``: recall accuracy against the corruption level at the largest ``N``;
* ``examples.png``: cues (unknown entries in blue), each memory's read and the original;
* ``read_time.png``: seconds per cue against ``N``, log-log.

Tick labels are plain numbers (``10``, ``100``, ``0.25``) and times carry their unit (``1 ms``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..experiment import format_seconds, plain_log_axis, save_figure, show_image, subplots

__all__ = ["plot_capacity", "plot_recall_vs_level", "plot_examples", "plot_read_time", "plot_all", "FIGURES"]

FIGURES = ("capacity.png", "recall_vs_level.png", "examples.png", "read_time.png")
_STYLES = ["-o", "-s", "-^", "-v", "-D", "-P", "-X", "-*", "--o", "--s", "--^", "--v", "--D", "--P"]


def _label(row_memory: str, method: str, methods_per_memory: dict[str, int]) -> str:
    return row_memory if methods_per_memory.get(row_memory, 1) == 1 else f"{row_memory} ({method})"


def _curves(table: Any) -> list[tuple[str, Any]]:
    """``[(label, rows of one memory and method)]`` in the table's order."""
    per = table.groupby("memory", sort=False)["method"].nunique().to_dict()
    out = []
    for (memory, method), rows in table.groupby(["memory", "method"], sort=False):
        out.append((_label(memory, method, per), rows))
    return out


def _legend(fig: Any, axes: Any) -> None:
    """One legend for all panels, right of them (each curve once)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)


def _grid(count: int, width: float = 4.2, height: float = 3.6) -> tuple[Any, list[Any]]:
    """A figure with ``count`` panels in rows of at most three; the unused panels are hidden."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _colours(count: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the dark shades first: neighbours differ in hue
    return [cmap(order[i % 20]) for i in range(count)]


def plot_capacity(table: Any, path: str | Path) -> Path:
    """Accuracy against ``N`` per memory and corruption (mean over seeds, band min..max).  Curves are
    offset vertically by up to ±0.02 so that memories with equal accuracy stay visible."""
    panels = list(dict.fromkeys(zip(table["corruption"], table["level"], strict=True)))
    fig, axes = _grid(len(panels))
    sizes = sorted(table["N"].unique())
    curves = _curves(table)
    offsets = np.linspace(-0.02, 0.02, len(curves)) if len(curves) > 1 else [0.0]
    colours = _colours(len(curves))
    for ax, (corruption, level) in zip(axes, panels, strict=True):
        sub = table[(table["corruption"] == corruption) & (table["level"] == level)]
        panel = dict(_curves(sub))
        for k, (label, _) in enumerate(curves):
            rows = panel.get(label)
            if rows is None:
                continue
            stats = rows.groupby("N")["accuracy"].agg(["mean", "min", "max"]).reindex(sizes)
            ax.plot(sizes, stats["mean"] + offsets[k], _STYLES[k % len(_STYLES)], color=colours[k], label=label,
                    markersize=4)
            if rows["seed"].nunique() > 1:
                ax.fill_between(sizes, stats["min"] + offsets[k], stats["max"] + offsets[k], color=colours[k],
                                alpha=0.12, lw=0)
        plain_log_axis(ax, "x", sizes)
        ax.set(ylim=(-0.05, 1.05), xlabel="stored items N", ylabel="recall accuracy", title=f"{corruption} {level:g}")
        ax.grid(True, alpha=0.3)
    _legend(fig, axes)
    fig.suptitle("capacity: fraction of cues recalled (MSE < threshold) against memory size; mean over seeds, "
                 "band: lowest..highest seed")
    return save_figure(fig, path)


def plot_recall_vs_level(table: Any, path: str | Path) -> Path:
    """Accuracy against the corruption level at the largest ``N`` (mean over seeds), one panel per
    corruption (offsets as in :func:`plot_capacity`)."""
    largest = table[table["N"] == table["N"].max()]
    names = list(dict.fromkeys(largest["corruption"]))
    fig, axes = _grid(len(names))
    curves = [label for label, _ in _curves(table)]
    offsets = np.linspace(-0.02, 0.02, len(curves)) if len(curves) > 1 else [0.0]
    colours = _colours(len(curves))
    for ax, name in zip(axes, names, strict=True):
        sub = largest[largest["corruption"] == name]
        levels = sorted(sub["level"].unique())
        for label, rows in _curves(sub):
            k = curves.index(label)
            stats = rows.groupby("level")["accuracy"].mean().reindex(levels)
            ax.plot(levels, stats.values + offsets[k], _STYLES[k % len(_STYLES)], color=colours[k], label=label,
                    markersize=4)
        ax.set_xticks(levels, [f"{v:g}" for v in levels])
        if len(levels) == 1:
            ax.set_xlim(levels[0] - 0.5 * max(levels[0], 0.1), levels[0] + 0.5 * max(levels[0], 0.1))
        ax.set(ylim=(-0.05, 1.05), xlabel=f"{name} level", ylabel="recall accuracy", title=name)
        ax.grid(True, alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"recall against corruption level at N = {int(table['N'].max())} (mean over seeds)")
    return save_figure(fig, path)


def plot_read_time(table: Any, path: str | Path) -> Path:
    """Seconds per cue against ``N`` (mean over seeds and corruptions), log-log."""
    fig, ax = subplots(figsize=(6.5, 4.2))
    sizes = sorted(table["N"].unique())
    curves = _curves(table)
    for k, ((label, rows), colour) in enumerate(zip(curves, _colours(len(curves)), strict=True)):
        stats = rows.groupby("N")["seconds_per_cue"].mean().reindex(sizes)
        ax.plot(sizes, stats.values, _STYLES[k % len(_STYLES)], color=colour, label=label, markersize=4)
    plain_log_axis(ax, "x", sizes)
    plain_log_axis(ax, "y")
    ax.yaxis.set_major_formatter(lambda v, _p: format_seconds(v))
    ax.set(xlabel="stored items N", ylabel="read time per cue", title="read time (mean over seeds and corruptions)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return save_figure(fig, path)


def plot_examples(examples: dict[str, Any], image_shape: Sequence[int], path: str | Path, *,
                  corruption: str | None = None, count: int = 4) -> Path | None:
    """A grid, one row per example cue of one corruption (``"name|level"``): the cue (unknown entries
    in blue), each memory's read, and the original; ``None`` when there are no examples."""
    if not examples:
        return None
    keys = list(examples)
    corruption = corruption or "|".join(keys[0].split("|")[2:])
    chosen = [k for k in keys if "|".join(k.split("|")[2:]) == corruption]
    if not chosen:
        raise ValueError(f"no examples of corruption {corruption!r}")
    first = examples[chosen[0]]
    n = min(count, len(first["target"]))
    memories = [k.split("|")[0] for k in chosen]
    columns = [("cue", first["cue"], first["mask"])]
    columns += [(k.split("|")[0] if memories.count(k.split("|")[0]) == 1 else "{}\n({})".format(*k.split("|")[:2]),
                 examples[k]["pattern"], None) for k in chosen]
    columns.append(("original", first["target"], None))
    fig, axes = subplots(n, len(columns), figsize=(0.95 * len(columns) + 0.4, 1.05 * n + 0.9), squeeze=False)
    for col, (label, images, mask) in enumerate(columns):
        for e in range(n):
            ax = axes[e][col]
            show_image(ax, images[e], image_shape, None if mask is None else ~np.asarray(mask[e], dtype=bool))
            if e == 0:
                ax.set_title(label, fontsize=7, rotation=45, ha="left", va="bottom", loc="left")
    name, level = corruption.split("|")
    fig.suptitle(f"{name} {float(level):g}: the cue (unknown entries in blue), each memory's read, the original",
                 fontsize=9, y=1.0)
    return save_figure(fig, path)


def plot_all(table: Any, output: str | Path, image_shape: Sequence[int] | None) -> list[Path]:
    """Every figure of :data:`FIGURES` that the table supports, into ``output``; returns the paths."""
    output = Path(output)
    paths = [plot_capacity(table, output / FIGURES[0]), plot_recall_vs_level(table, output / FIGURES[1])]
    examples = table.attrs.get("examples") or {}
    if image_shape is not None and examples:
        corruptions = list(dict.fromkeys("|".join(k.split("|")[2:]) for k in examples))
        hiding = [c for c in corruptions if any(examples[k]["mask"] is not None for k in examples if k.endswith(c))]
        pool = hiding or corruptions
        drawn = plot_examples(examples, image_shape, output / FIGURES[2], corruption=pool[len(pool) // 2])
        if drawn is not None:
            paths.append(drawn)
    paths.append(plot_read_time(table, output / FIGURES[3]))
    return paths

