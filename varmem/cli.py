"""The ``varmem`` command line.

``varmem compare [options]`` (the main job) runs every memory family on the same digits, the same
corruptions and the same metrics (:mod:`varmem.comparison.command`) and writes ``results.csv``,
``results.json`` and figures; ``varmem recall [options]`` runs the kernel-density demo
(:mod:`varmem.recall`): store images, corrupt some, retrieve them with each method, write
``results.json`` plus a figure.  ``varmem COMMAND --help`` lists every option; the defaults are
those of :class:`varmem.comparison.command.CompareConfig` and :class:`varmem.recall.RecallConfig`.

Every user error (a bad option, a setting ``validate`` refuses, a level that turns out to hide
whole cues, an output folder that cannot be written) ends the command with one line
``varmem COMMAND: error: ...`` on stderr and exit status 2, never a traceback; an interrupt
(Ctrl-C) prints ``varmem: interrupted`` and exits with 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

from .corruptions import CORRUPTIONS

__all__ = ["main", "build_parser"]


class _NameList(argparse.Action):
    """A repeatable option whose values may also be comma-separated lists of known names."""

    def __init__(self, option_strings: Sequence[str], dest: str, valid: Sequence[str] = (), **kwargs: Any) -> None:
        self.valid = tuple(valid)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        names = [n.strip() for n in str(values).split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentError(self, f"expected one or more names; valid names are {', '.join(self.valid)}")
        for name in names:
            if name not in self.valid:
                raise argparse.ArgumentError(self, f"invalid choice {name!r}; valid names are {', '.join(self.valid)}")
        current = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*current, *names])


class _NamedValues(argparse.Action):
    """A repeatable ``NAME=VALUE`` option (comma-separated pairs allowed); with ``allow_bare``, a
    bare ``VALUE`` sets the value for every name (stored under the key ``None``)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        valid: Sequence[str] = (),
        allow_bare: bool = False,
        **kwargs: Any,
    ) -> None:
        self.valid = tuple(valid)
        self.allow_bare = allow_bare
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = dict(getattr(namespace, self.dest, None) or {})
        for part in (p.strip() for p in str(values).split(",") if p.strip()):
            name, sep, text = part.partition("=")
            if not sep:
                if not self.allow_bare:
                    raise argparse.ArgumentError(
                        self, f"expected NAME=VALUE with NAME one of {', '.join(self.valid)}, got {part!r}"
                    )
                name, text = None, part
            elif name.strip() not in self.valid:
                raise argparse.ArgumentError(
                    self, f"invalid name {name.strip()!r}; valid names are {', '.join(self.valid)}"
                )
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentError(self, f"{text.strip()!r} is not a number") from None
            current[None if name is None else name.strip()] = value
        setattr(namespace, self.dest, current)


class _KeyedLists(argparse.Action):
    """A repeatable ``KEY=VALUE[,VALUE...]`` option (``KEY`` from ``valid``; repeats add values):
    ``{key: (value, ...)}``.  Subclasses name the parts (``key``, ``value``) and parse one value."""

    key, value = "NAME", "VALUE"

    def __init__(self, option_strings: Sequence[str], dest: str, valid: Sequence[str] = (), **kwargs: Any) -> None:
        self.valid = tuple(valid)
        super().__init__(option_strings, dest, **kwargs)

    def parse(self, text: str) -> Any:
        return text

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:
        current = dict(getattr(namespace, self.dest, None) or {})
        name, sep, text = str(values).partition("=")
        name = name.strip()
        parts = [p.strip() for p in text.split(",")]
        if not sep or name not in self.valid or not any(parts):
            raise argparse.ArgumentError(self, f"expected {self.key}={self.value}[,{self.value}...] with {self.key} "
                                               f"one of {', '.join(self.valid)}, got {values!r}")
        parsed = [self.parse(p) for p in parts]
        current[name] = tuple(dict.fromkeys([*current.get(name, ()), *parsed]))
        setattr(namespace, self.dest, current)


class _LevelLists(_KeyedLists):
    """``NAME=LEVEL[,LEVEL...]``: the levels of one corruption."""

    value = "LEVEL"

    def parse(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentError(self, f"{text!r} is not a number") from None


class _MethodLists(_KeyedLists):
    """``MEMORY=METHOD[,METHOD...]``: the read methods of one memory."""

    key, value = "MEMORY", "METHOD"

    def parse(self, text: str) -> str:
        if not text:
            raise argparse.ArgumentError(self, "a method name is empty")
        return text


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


_positive_float.__name__ = "float"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` only where it says something (not for flags or unset lists)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .recall import (
        CORRUPTIONS,
        DATASETS,
        DEFAULT_METHODS,
        DTYPES,
        MAX_EXAMPLES,
        METHODS,
        SCALE_RANGE,
        SCORED,
        RecallConfig,
    )

    d = RecallConfig()
    parser = argparse.ArgumentParser(
        prog="varmem",
        description="varmem: associative memories as Pyro generative models; remembering is inference.",
    )
    parser.add_argument("--version", action="version", version=f"varmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "recall",
        help="store images, corrupt some, retrieve them with each method; write results.json and a figure",
        description=(
            "Store N images in a kernel-density memory, corrupt Q of them with each corruption and "
            "retrieve them with each method (memory.retrieve). Prints a table of MSE, recall accuracy, "
            "retrieval rate and wall time, and writes OUTPUT/results.json and OUTPUT/examples.png."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset, help="image data set")
    p.add_argument(
        "--n-items", type=_int_at_least(1), default=d.n_items, metavar="N", help="images stored in the memory"
    )
    p.add_argument(
        "--n-queries",
        type=_int_at_least(1),
        default=d.n_queries,
        metavar="Q",
        help="stored images corrupted and retrieved",
    )
    p.add_argument(
        "--corruption",
        "--corruptions",
        dest="corruptions",
        action=_NameList,
        valid=CORRUPTIONS,
        default=None,
        metavar="NAME",
        help=f"corruption(s), repeatable or comma-separated; from {', '.join(CORRUPTIONS)} "
        f"(default: {','.join(d.corruptions)})",
    )
    p.add_argument(
        "--level",
        "--levels",
        dest="levels",
        action=_NamedValues,
        valid=CORRUPTIONS,
        default=None,
        metavar="NAME=VALUE",
        help="level of a corruption, repeatable (white: noise std 0.2, in [0, 1e4]; drop: p 0.25, in (0, 1); "
        "mask: fraction of columns 0.25, in (0, 1); square: side H//2, in [1, H-1]); "
        "default: the corruption's own default",
    )
    p.add_argument(
        "--method",
        "--methods",
        dest="methods",
        action=_NameList,
        valid=METHODS,
        default=None,
        metavar="NAME",
        help=f"retrieval method(s), repeatable or comma-separated; from {', '.join(METHODS)} (default: "
        f"{', '.join(DEFAULT_METHODS)}; nuts samples the posterior of --nuts-queries cues, about 2 minutes on MNIST)",
    )
    p.add_argument(
        "--bandwidth",
        type=_positive_float,
        default=d.bandwidth,
        help=f"kernel standard deviation s (pixel units, in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}])",
    )
    p.add_argument(
        "--noise-scale",
        dest="noise_scale",
        action=_NamedValues,
        valid=CORRUPTIONS,
        allow_bare=True,
        default=None,
        metavar="[NAME=]SIGMA",
        help="likelihood sigma: one value for all corruptions or NAME=SIGMA, repeatable, each in "
        f"[{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}] (default: the white-noise std for white, 0.05 for occlusions)",
    )
    p.add_argument(
        "--nuts-queries",
        type=_int_at_least(0),
        default=d.nuts_queries,
        metavar="K",
        help="NUTS reads only the first K cues",
    )
    p.add_argument(
        "--nuts-samples", type=_int_at_least(2), default=d.nuts_samples, metavar="S", help="NUTS draws kept (>= 2)"
    )
    p.add_argument(
        "--nuts-warmup", type=_int_at_least(0), default=d.nuts_warmup, metavar="W", help="NUTS warm-up steps"
    )
    p.add_argument(
        "--threshold", type=_positive_float, default=d.threshold, help="recall threshold on the per-query MSE"
    )
    p.add_argument("--scored", choices=SCORED, default=d.scored, help="entries the recall accuracy is scored on")
    p.add_argument(
        "--examples",
        dest="n_examples",
        type=_int_at_least(0),
        default=d.n_examples,
        metavar="E",
        help=f"example queries in the figure (at most {MAX_EXAMPLES})",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=d.seed, help="seed of every random choice")
    p.add_argument("--output", "-o", default=d.output, metavar="DIR", help="folder for results.json and examples.png")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype, help="floating dtype of the memory")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--quiet", "-q", dest="verbose", action="store_false", help="do not print the table")
    p.set_defaults(handler=_recall, command_parser=p)
    _add_compare(sub)
    return parser


def _add_compare(sub: Any) -> None:
    from .comparison import FAMILIES
    from .comparison.command import DATASETS, DEFAULT_CORRUPTIONS, CompareConfig
    from .comparison.presets import ALL_FAMILIES, OPTIONAL_FAMILIES

    d = CompareConfig()
    p = sub.add_parser(
        "compare",
        help="every memory family on the same digits, corruptions and metrics: results.csv, results.json, figures",
        description=(
            "Write the same items into every memory (each in its own value domain), read them back from the same "
            "corrupted cues with each memory's methods, and score all reads in [0, 1] units. Prints the recall "
            "accuracy at the largest size and writes OUTPUT/results.csv, OUTPUT/results.json and the figures "
            "capacity.png, recall_vs_level.png, examples.png, read_time.png. Finished cells are kept in "
            "OUTPUT/cells, so an interrupted run resumes."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--dataset", choices=tuple(DATASETS), default=d.dataset, help="image data set")
    p.add_argument("--memories", "--memory", dest="memories", action=_NameList, valid=ALL_FAMILIES, default=None,
                   metavar="NAME", help=f"memories, repeatable or comma-separated, from {', '.join(FAMILIES)} "
                   f"(default: all of these) and the optional {', '.join(OPTIONAL_FAMILIES)}")
    p.add_argument("--methods", "--method", dest="methods", action=_MethodLists, valid=ALL_FAMILIES, default=None,
                   metavar="MEMORY=METHOD[,METHOD]",
                   help="read methods of one memory, repeatable, e.g. kde=exact,fixed_point (default: each memory's "
                   "methods in varmem.comparison.presets)")
    defaults = " ".join(f"{k}={','.join(f'{v:g}' for v in levels)}" for k, levels in DEFAULT_CORRUPTIONS.items())
    p.add_argument("--corruption", dest="corruptions", action=_LevelLists, valid=CORRUPTIONS, default=None,
                   metavar="NAME=LEVEL[,LEVEL]", help=f"a corruption and its levels, repeatable (default: {defaults})")
    p.add_argument("--sizes", type=_int_at_least(1), nargs="+", default=list(d.sizes), metavar="N",
                   help="memory sizes")
    p.add_argument("--seeds", type=_int_at_least(0), nargs="+", default=list(d.seeds), metavar="S",
                   help="seeds (each: its own items, cues and reads)")
    p.add_argument("--queries", type=_int_at_least(1), default=d.queries, metavar="Q",
                   help="stored items read back per memory, size and seed")
    p.add_argument("--train-items", dest="train_items", type=_int_at_least(0), default=d.train_items, metavar="M",
                   help="items that train the latent VAE memory, MemN2N and NTM (never stored)")
    p.add_argument("--threshold", type=_positive_float, default=d.threshold,
                   help="a cue is recalled when its MSE (in [0, 1] units) is below this")
    p.add_argument("--full", dest="quick", action="store_false",
                   help="asynchronous spin updates (Hopfield 1982) for the classical and dense networks instead of "
                   "synchronous ones (much slower; recall within 0.02 on random patterns)")
    p.add_argument("--examples", type=_int_at_least(0), default=d.examples, metavar="E",
                   help="example cues per memory in the figure")
    p.add_argument("--output", "-o", default=d.output, metavar="DIR", help="folder for the results and figures")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="recompute every cell (default: reuse the finished cells in OUTPUT/cells)")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype, help="floating dtype of the memories")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--quiet", "-q", dest="verbose", action="store_false", help="do not print the summary")
    p.set_defaults(handler=_compare, command_parser=p)


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .comparison import ComparisonError
    from .comparison.command import CompareConfig, run_compare

    values = _config_values(CompareConfig, args)
    defaults = CompareConfig()
    values["memories"] = tuple(values["memories"]) if values["memories"] else defaults.memories
    values["corruptions"] = values["corruptions"] or defaults.corruptions
    values["methods"] = values["methods"] or {}
    values["sizes"], values["seeds"] = tuple(values["sizes"]), tuple(values["seeds"])
    return _validate_and_run(CompareConfig(**values), run_compare, ComparisonError, parser)


def _config_values(config_class: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options that are fields of ``config_class`` (a dataclass of command settings)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}


def _validate_and_run(config: Any, run: Any, run_error: type[Exception], parser: argparse.ArgumentParser) -> int:
    """Validate ``config`` and ``run`` it; a bad setting or a ``run_error`` becomes the command's one
    ``error:`` line (exit 2)."""
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        parser.error(_one_line(e))
    try:
        run(config)
    except run_error as e:
        parser.error(_one_line(e))
    return 0


def _one_line(error: BaseException) -> str:
    """The error's message on one line (argparse's ``error:`` line must stay one line)."""
    return " ".join(str(error).split()) or type(error).__name__


def _recall(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .recall import RecallConfig, RecallError, run_recall

    values = _config_values(RecallConfig, args)
    defaults = RecallConfig()
    for name in ("corruptions", "methods"):
        values[name] = tuple(values[name]) if values[name] else getattr(defaults, name)
    noise = values.get("noise_scale")
    if noise:
        values["noise_scale"] = noise[None] if list(noise) == [None] else noise
        if isinstance(values["noise_scale"], dict) and None in values["noise_scale"]:
            parser.error(
                "argument --noise-scale: give either one SIGMA for all corruptions or NAME=SIGMA pairs, not both"
            )
    else:
        values["noise_scale"] = None
    return _validate_and_run(RecallConfig(**values), run_recall, RecallError, parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``varmem`` console script; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "command", None) is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help(sys.stderr)
        return 2
    if unknown:  # reported by the subcommand, with its usage
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.handler(args, args.command_parser)
    except KeyboardInterrupt:
        print("varmem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
