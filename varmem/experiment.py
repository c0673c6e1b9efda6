"""Scaffolding shared by the scripts in ``experiments/``: command line, results files, tables,
timing, peak memory and figures.

Every experiment and benchmark script builds its command line with :func:`parser` (the flags all
of them share: ``--smoke``, ``--seed``, ``--device``, ``--dtype``, ``--threads``, ``--output``),
turns the device and dtype names into torch objects with :func:`resolve`, runs with its
``--threads`` through :func:`main`, records its seed, environment and settings with
:func:`record` and :func:`settings`, writes its JSON and figures with :func:`save_results`
(:func:`write_json`; figures drawn with :func:`subplots` and saved with :func:`save_figure`) and
prints its tables with :func:`format_table`.  The benchmarks time their variants with
:func:`first_calls` and :func:`time_alternating` and measure the peak memory of one call with
:func:`measure_cpu_peak_in_this_process` (in a fresh process, see :func:`run_probes`) or
:func:`measure_cuda_peak`.

This module sits on top of the package: it uses only the standard library, torch, matplotlib
(imported inside the functions that draw) and :mod:`varmem.provenance`, never a memory or an
engine.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, TypeVar, Union

import torch

from .provenance import environment, torch_threads

__all__ = [
    "CHECK_TOLERANCE",
    "LARGE_N",
    "parser",
    "parse_size",
    "resolve",
    "main",
    "torch_threads",
    "record",
    "settings",
    "to_json",
    "write_json",
    "save_results",
    "wrote",
    "format_value",
    "format_table",
    "synchronize",
    "time_call",
    "first_calls",
    "alternating",
    "time_alternating",
    "minor_page_faults",
    "measure_cpu_peak_in_this_process",
    "measure_cuda_peak",
    "print_probe",
    "run_probes",
    "subplots",
    "save_figure",
    "plot_by_size",
    "plain_log_axis",
    "plain_number",
    "format_seconds",
    "show_image",
    "UNKNOWN_COLOUR",
]

CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
"""Largest relative difference a benchmark accepts between varmem and its reference, by dtype."""

LARGE_N = 10**6
"""From this size on a benchmark makes no extra warm-up call and at most 3 repeats."""

T = TypeVar("T")


# --- command line -----------------------------------------------------------------------------
def parser(
    doc: str | None,
    name: str,
    *,
    smoke: str,
    seed_help: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    dtypes: Sequence[str] = ("float32", "float64"),
    threads: int | None | Literal[False] = False,
    threads_help: str | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with the flags the scripts share, for the script ``name``.

    The description is the first paragraph of ``doc`` (the script's docstring).  Always added:
    ``--smoke`` (help ``smoke``), ``--seed`` (default 0) and ``--output`` (default
    ``results/<name>``, a string).  ``--device`` (default ``device``) and ``--dtype`` (default
    ``dtype``, one of ``dtypes``) only when given; ``--threads`` (an int, default ``threads``) unless
    ``threads`` is ``False``: ``None`` or ``0`` leave torch's own setting (see :func:`torch_threads`).
    """
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help=smoke)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    if device is not None:
        p.add_argument("--device", default=device, help=f"torch device (default {device})")
    if dtype is not None:
        p.add_argument("--dtype", default=dtype, choices=list(dtypes), help=f"torch dtype (default {dtype})")
    if threads is not False:
        if threads_help is None:
            threads_help = "torch threads (default: torch's)" if not threads else f"torch threads (default {threads})"
        p.add_argument("--threads", type=int, default=threads, help=threads_help)
    default_output = str(Path("results") / name)
    p.add_argument("--output", default=default_output, help=f"output folder (default {default_output})")
    return p


def parse_size(text: str) -> int:
    """An ``argparse`` type: a positive integer, also written ``1e6``."""
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"a size must be a positive integer (e.g. 1000 or 1e6), got {text!r}")
    return int(value)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Add ``args.torch_device`` (from ``--device``) and ``args.torch_dtype`` (from ``--dtype``) where
    the script has those flags; exit with a message when CUDA is asked for but not available."""
    if isinstance(getattr(args, "device", None), str):
        args.torch_device = torch.device(args.device)
        if args.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device} requested but CUDA is not available")
    if isinstance(getattr(args, "dtype", None), str):
        args.torch_dtype = getattr(torch, args.dtype)
    return args


def main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace], run: Callable[[argparse.Namespace], T],
    argv: Sequence[str] | None = None,
) -> T:
    """A script's ``main``: ``run(parse_args(argv))`` with ``--threads`` torch threads where the
    script has that flag (torch's setting is restored afterwards, see :func:`torch_threads`)."""
    args = parse_args(argv)
    with torch_threads(getattr(args, "threads", None)):
        return run(args)


# --- results files ----------------------------------------------------------------------------
def record(
    args: argparse.Namespace, device: torch.device | str | None = None, *, seed: int | None = None, **fields: Any
) -> dict[str, Any]:
    """``{"seed": ..., **environment(device), **fields}``: what every results file records.

    ``seed`` defaults to ``args.seed`` and ``device`` to ``args.torch_device`` (the CPU where the
    script has no ``--device``).
    """
    if device is None:
        device = getattr(args, "torch_device", None)
    return {"seed": args.seed if seed is None else seed, **environment(device), **fields}


def settings(args: argparse.Namespace, *names: str, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The arguments ``names`` of ``args`` (all of them when none is named, less those in ``exclude``
    and the ``torch_*`` objects :func:`resolve` adds); paths become strings."""
    keys = names or [k for k in vars(args) if not k.startswith("torch_") and k not in exclude]
    out = {}
    for key in keys:
        value = getattr(args, key)
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def to_json(obj: Any) -> Any:
    """``obj`` with tensors and numpy values as (nested) lists and numbers, paths, devices and
    dtypes as strings, tuples and sets as lists (for :func:`json.dumps`; NaN and infinities are kept
    and written as ``NaN`` / ``Infinity``, as :mod:`json` does)."""
    if isinstance(obj, Mapping):  # keys: as json writes them (numbers and booleans it converts itself)
        return {k if isinstance(k, (str, int, float)) or k is None else str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return to_json(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (converted by :func:`to_json`) to ``path`` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(obj), indent=2))
    return path


def save_results(
    output: str | Path, json_name: str, result: Any, figures: Mapping[str, Callable[[Path], Any]] | None = None
) -> list[Path]:
    """Write ``result`` to ``output/json_name`` (:func:`write_json`), then call ``draw(output/name)``
    for every ``name: draw`` in ``figures``; return the paths written, the JSON file first."""
    out = Path(output)
    paths = [write_json(out / json_name, result)]
    for name, draw in (figures or {}).items():
        draw(out / name)
        paths.append(out / name)
    return paths


def wrote(paths: Sequence[str | Path]) -> str:
    """``"wrote a and b"`` (``"wrote a, b and c"``): the line a script ends with."""
    names = [str(p) for p in paths]
    return "wrote " + (" and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1])


# --- tables -----------------------------------------------------------------------------------
Column = Union[str, tuple[str, str, Union[str, Callable[[Any], Any]]]]
"""A table column ``(title, spec, value)`` or a separator string such as ``"|"``."""


def format_value(value: Any, spec: str = "", missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` when ``value`` is ``None``."""
    return missing if value is None else format(value, spec)


def _width(spec: str) -> str:
    match = re.match(r"([<>^]?)(\d*)", spec)
    return f"{match.group(1) or '>'}{match.group(2)}" if match.group(2) else ""


def format_table(
    rows: Sequence[Any], columns: Sequence[Column], *, rule: bool = False, indent: str = "",
    suffix: Callable[[Any], str] | None = None,
) -> str:
    """A header line (and a rule of ``-`` when ``rule``) and one line per row.

    Each column is ``(title, spec, value)``: the cell is ``format(value, spec)`` where ``value`` is
    ``row[value]`` for a string or ``value(row)`` for a callable; the title is aligned to the
    width of ``spec`` (``">9,"``: right, 9 characters).  A plain string in ``columns`` is a
    separator written as is in every line (``"|"``; ``""`` widens the gap).  Cells are joined by
    one space; ``suffix(row)`` is appended to the row's line, ``indent`` starts every line.
    """
    head, cells = [], []
    for col in columns:
        if isinstance(col, str):
            head.append(col)
            cells.append(lambda row, col=col: col)
            continue
        title, spec, value = col
        head.append(format(title, _width(spec)))
        get = value if callable(value) else (lambda row, key=value: row[key])
        cells.append(lambda row, get=get, spec=spec: format(get(row), spec))
    header = indent + " ".join(head)
    lines = [header] + (["-" * len(header)] if rule else [])
    for row in rows:
        lines.append(indent + " ".join(cell(row) for cell in cells) + (suffix(row) if suffix else ""))
    return "\n".join(lines)


# --- timing -----------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, number: int = 1) -> float:
    """Seconds per call, averaged over ``number`` consecutive calls (synchronised before and after)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / number


def first_calls(runners: Mapping[str, Callable[[], Any]], device: torch.device) -> tuple[dict, dict[str, float]]:
    """``(outputs, seconds)`` of one call of each variant (the correctness check and first timing)."""
    outputs, seconds = {}, {}
    for name, fn in runners.items():
        synchronize(device)
        start = time.perf_counter()
        outputs[name] = fn()
        synchronize(device)
        seconds[name] = time.perf_counter() - start
    return outputs, seconds


@contextlib.contextmanager
def recording(obj: Any, method: str, pick: Callable[[Any], Any] = lambda out: out) -> Iterator[list]:
    """Within the block, every call of ``obj.<method>`` (also the calls the object makes itself)
    appends ``pick(result)`` to the list it yields, e.g. the relaxation steps of a write::

        with recording(memory, "relax", lambda out: out[2]) as steps:
            memory.write(items)

    (an instance attribute shadows the method for the block and is removed afterwards)."""
    original = getattr(obj, method)
    seen: list = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        seen.append(pick(out))
        return out

    setattr(obj, method, wrapped)
    try:
        yield seen
    finally:
        delattr(obj, method)


def alternating(names: Sequence[str], repeats: int) -> Iterator[str]:
    """The variants in the order a timing loop runs them: forward in even repeats, backward in odd
    ones, so that slow drifts of the machine affect every variant alike."""
    names = list(names)
    for r in range(repeats):
        yield from names if r % 2 == 0 else names[::-1]


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` is unavailable).

    A fresh multi-MiB tensor that glibc has returned to the OS (heap trimming) is faulted back in
    page by page; counting faults per call shows when a variant's time is mostly that.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_alternating(
    runners: Mapping[str, Callable[[], Any]], names: Sequence[str], first: Mapping[str, float],
    device: torch.device, *, warmup: int = 1, repeats: int = 5, min_time: float = 0.2, large: bool = False,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """``(seconds per call per repeat, minor page faults per call per repeat, calls per repeat)`` of
    each variant in ``names`` (no faults where ``resource`` is unavailable).

    ``warmup`` more calls of each variant (``first``: the seconds of the first call), then each
    repeat runs a variant enough times in a row to last ``min_time`` seconds (once when
    ``min_time`` is 0), the variants alternating (:func:`alternating`).  ``large``: no warm-up and
    at most 3 repeats (the benchmarks' rule from :data:`LARGE_N` on).
    """
    if large:
        warmup, repeats = 0, min(repeats, 3)
    number = {}
    for name in names:
        last = first[name]
        for _ in range(warmup):
            last = time_call(runners[name], device)
        number[name] = max(1, math.ceil(min_time / max(last, 1e-9))) if min_time > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[float]] = {name: [] for name in names}
    for name in alternating(names, repeats):
        before = minor_page_faults()
        times[name].append(time_call(runners[name], device, number[name]))
        if before is not None:
            faults[name].append((minor_page_faults() - before) / number[name])
    return times, faults, number


# --- peak memory ------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _ru_maxrss_kb() -> int:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # bytes on macOS, kB on Linux


def measure_cpu_peak_in_this_process(fn: Callable[[], Any]) -> tuple[float, str]:
    """``(MiB, method)``: peak additional resident memory of one call of ``fn``.

    One full-size warm-up call first (one-time allocations are not the call's), then freed heap
    memory goes back to the OS (glibc ``malloc_trim(0)``), the resident set ``VmRSS`` is read, the
    kernel's high-water mark is reset (``/proc/self/clear_refs``) and the call's peak is
    ``VmHWM - VmRSS`` (method ``"subprocess_vmhwm"``).  Without ``/proc`` it is the growth of
    ``ru_maxrss``, which cannot be reset and may undercount (``"subprocess_ru_maxrss"``).  Run it
    in a fresh process (:func:`run_probes`): the high-water mark is the process's.
    """
    fn()
    _malloc_trim()
    before = _proc_status_kb("VmRSS")
    if before is not None and _reset_rss_peak():
        fn()
        peak = _proc_status_kb("VmHWM")
        if peak is not None:
            return max(0, peak - before) / 1024, "subprocess_vmhwm"
    before = _ru_maxrss_kb()
    fn()
    return max(0, _ru_maxrss_kb() - before) / 1024, "subprocess_ru_maxrss"


def measure_cuda_peak(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """``(MiB, "cuda_max_memory_allocated")``: the caching allocator's peak during one call of ``fn``
    minus what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return max(0, peak - before) / 2**20, "cuda_max_memory_allocated"


def print_probe(marker: str, **fields: Any) -> None:
    """In a probe process: print ``fields`` as one JSON line after ``marker`` (read by :func:`run_probes`)."""
    print(marker + json.dumps(fields), flush=True)


def run_probes(commands: Mapping[str, Sequence[str]], marker: str, label: str = "") -> dict[str, dict[str, Any]]:
    """Run one process per command, side by side, and return the last line each printed with
    ``marker`` (:func:`print_probe`), decoded; a failed process raises ``RuntimeError`` with the end
    of its standard error (``label`` says which size it was)."""
    procs = {
        name: subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith(marker)]
        if proc.returncode != 0 or not lines:
            where = f"{name}, {label}" if label else name
            raise RuntimeError(f"memory probe ({where}) failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        results[name] = json.loads(lines[-1][len(marker) :])
    return results


# --- figures ----------------------------------------------------------------------------------
def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``matplotlib.pyplot.subplots`` on the non-interactive Agg backend (scripts draw to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay ``fig`` out tightly, save it to ``path`` (creating the folder) and close it.  Log axes
    still on matplotlib's default labels get plain ones (:func:`plain_log_axis`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatterSciNotation

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:  # log axes left to matplotlib's "2×10⁰" labels get plain ones
        for name, which in (("x", ax.xaxis), ("y", ax.yaxis)):
            if which.get_scale() == "log" and isinstance(which.get_major_formatter(), LogFormatterSciNotation):
                plain_log_axis(ax, name)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")  # legends placed outside the axes stay in
    plt.close(fig)
    return path


UNKNOWN_COLOUR = (0.25, 0.45, 0.9)
"""The colour of unknown (hidden) cue entries in image figures: blue, never confused with a dark pixel."""


def format_seconds(value: float, _position: Any = None) -> str:
    """``2 s``, ``15.3 ms``, ``4 µs``: a time with its unit and no exponent (a matplotlib tick
    formatter as well)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-6:.3g} µs"


def _nice_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis from ``low`` to ``high`` (both > 0): the 1-2-5 values of each decade in the
    range, or, when fewer than two fall in it, three linearly spaced round values."""
    from matplotlib.ticker import MaxNLocator

    ticks = [m * 10.0**k for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    ticks = [t for t in ticks if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]
    if len(ticks) > 8:  # many decades: the powers of ten only
        ticks = [t for t in ticks if f"{t:.0e}".startswith("1")]
    if len(ticks) < 2:
        ticks = [float(t) for t in MaxNLocator(nbins=3).tick_values(low, high) if low <= t <= high and t > 0]
    return ticks


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def plain_number(value: float, _position: Any = None) -> str:
    """A tick label without mathtext: ``0.745``, ``16``, ``25,000``; powers of ten beyond
    ``[1e-4, 1e5]`` as ``10⁶`` / ``10⁻⁵`` (a matplotlib tick formatter as well)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.log10(abs(value))
    if abs(exponent - round(exponent)) < 1e-9 and not -4 <= round(exponent) <= 5:
        return ("-" if value < 0 else "") + "10" + str(round(exponent)).translate(_SUPERSCRIPT)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}"


def plain_log_axis(ax: Any, axis: str = "x", ticks: Sequence[float] | None = None) -> None:
    """Log-scale ``ax``'s ``axis`` (``"x"`` or ``"y"``) with plain tick labels (``10``, ``0.745``,
    never ``2×10⁰``): ticks at ``ticks`` when given (e.g. the memory sizes), else round values within
    the current limits (call it after plotting); no minor-tick labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    getattr(ax, f"set_{axis}scale")("log")
    which = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is None:
        low, high = sorted(getattr(ax, f"get_{axis}lim")())
        ticks = _nice_ticks(max(low, 1e-300), high)
    which.set_major_locator(FixedLocator(sorted(set(float(t) for t in ticks))))
    which.set_minor_locator(NullLocator())
    which.set_major_formatter(FuncFormatter(plain_number))
    which.set_minor_formatter(NullFormatter())


def show_image(ax: Any, image: Any, shape: Sequence[int], hidden: Any = None) -> None:
    """Draw one image (``C·H·W`` values in ``[0, 1]``, grey for ``C = 1``) on ``ax`` without ticks; the
    entries where ``hidden`` (same size, bool) is true are drawn in :data:`UNKNOWN_COLOUR`."""
    import matplotlib
    import numpy as np

    c, h, w = shape
    img = np.clip(np.asarray(image, dtype=float).reshape(c, h, w), 0.0, 1.0)
    mask = None if hidden is None else np.asarray(hidden, dtype=bool).reshape(c, h, w)
    if c == 1:
        grey = np.ma.masked_array(img[0], mask=None if mask is None else mask[0])
        cmap = matplotlib.colormaps["gray"].with_extremes(bad=UNKNOWN_COLOUR)
        ax.imshow(grey, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        rgb = np.transpose(img, (1, 2, 0)).copy()
        if mask is not None:
            rgb[np.transpose(mask, (1, 2, 0)).any(-1)] = UNKNOWN_COLOUR
        ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_by_size(
    ax: Any, rows: Sequence[Mapping[str, Any]], key: str, labels: Mapping[str, str], *, xlabel: str,
    ylabel: str, title: str, markers: str = "os^v", floor: float | None = None, legend_size: float | None = None,
) -> None:
    """A log-log plot of ``row[key.format(name)]`` against ``row["N"]`` for every ``name`` in
    ``labels`` (a curve with a missing value, ``None``, is left out; values are raised to ``floor``),
    with a grid and a legend when a curve was drawn."""
    ns = [row["N"] for row in rows]
    for marker, (name, label) in zip(markers, labels.items(), strict=False):
        values = [row[key.format(name)] for row in rows]
        if any(v is None for v in values):
            continue
        if floor is not None:
            values = [max(v, floor) for v in values]
        ax.plot(ns, values, marker=marker, label=label)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)
