"""varmem.experiment: the scaffolding the scripts in experiments/ share (parser, results files,
tables, timing, peak memory, figures)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from varmem import experiment

PNG = b"\x89PNG\r\n\x1a\n"


# --- command line -----------------------------------------------------------------------------
def test_parser_has_the_shared_flags_with_their_defaults():
    p = experiment.parser("Title line.\n\nMore text.", "demo", smoke="tiny", device="cpu", dtype="float32",
                          threads=None)
    assert p.description == "Title line."
    args = p.parse_args([])
    assert vars(args) == {"smoke": False, "seed": 0, "device": "cpu", "dtype": "float32", "threads": None,
                          "output": str(Path("results") / "demo")}
    args = p.parse_args(["--smoke", "--seed", "3", "--dtype", "float64", "--threads", "2", "--output", "x"])
    assert (args.smoke, args.seed, args.dtype, args.threads, args.output) == (True, 3, "float64", 2, "x")
    with pytest.raises(SystemExit):
        p.parse_args(["--dtype", "float16"])  # not among the default choices


def test_parser_leaves_out_the_flags_a_script_does_not_have():
    p = experiment.parser(None, "plain", smoke="tiny")
    assert vars(p.parse_args([])) == {"smoke": False, "seed": 0, "output": str(Path("results") / "plain")}
    for flag in ("--device", "--dtype", "--threads"):
        with pytest.raises(SystemExit):
            p.parse_args([flag, "1"])
    # threads=0 is a default (torch's setting), not "no flag"
    p = experiment.parser(None, "zero", smoke="tiny", threads=0, dtype="float64",
                          dtypes=("float32", "float64", "bfloat16"))
    args = p.parse_args(["--dtype", "bfloat16"])
    assert args.threads == 0 and args.dtype == "bfloat16"


def test_resolve_adds_torch_objects_only_for_the_flags_present():
    args = experiment.resolve(argparse.Namespace(device="cpu", dtype="float64", seed=0))
    assert args.torch_device == torch.device("cpu") and args.torch_dtype is torch.float64
    args = experiment.resolve(argparse.Namespace(dtype="float32"))
    assert args.torch_dtype is torch.float32 and not hasattr(args, "torch_device")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            experiment.resolve(argparse.Namespace(device="cuda"))


def test_main_runs_with_the_requested_threads_and_restores_them():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    p = experiment.parser(None, "demo", smoke="tiny", threads=None)
    argv = ["--seed", "4", "--threads", str(wanted)]
    seen = experiment.main(p.parse_args, lambda args: (args.seed, torch.get_num_threads()), argv)
    assert seen == (4, wanted) and torch.get_num_threads() == before
    # no --threads flag (or 0 / None): torch's setting is left alone
    p = experiment.parser(None, "demo", smoke="tiny")
    assert experiment.main(p.parse_args, lambda args: torch.get_num_threads(), []) == before


def test_parse_size_accepts_scientific_notation_only_for_whole_numbers():
    assert experiment.parse_size("1e3") == 1000 and experiment.parse_size("2500") == 2500
    for bad in ("1.5", "0", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            experiment.parse_size(bad)


# --- results files ----------------------------------------------------------------------------
def test_record_and_settings():
    args = argparse.Namespace(seed=7, n=3, output=Path("out/x"), torch_device=torch.device("cpu"))
    rec = experiment.record(args, kind="demo")
    assert rec["seed"] == 7 and rec["device"] == "cpu" and rec["kind"] == "demo"
    assert rec["versions"]["varmem"] and rec["versions"]["torch"] == torch.__version__
    assert experiment.record(args, seed=11)["seed"] == 11
    # every argument but the torch objects (and the excluded ones); paths as strings
    assert experiment.settings(args) == {"seed": 7, "n": 3, "output": str(Path("out/x"))}
    assert experiment.settings(args, exclude=("output",)) == {"seed": 7, "n": 3}
    assert experiment.settings(args, "n") == {"n": 3}


def test_to_json_converts_tensors_numpy_and_paths_and_keeps_nan():
    obj = {"t": torch.tensor([[1.0, 2.0]]), "s": torch.tensor(3), "a": np.arange(3), "f": np.float32(0.5),
           "p": Path("a/b"), "d": torch.float32, "tup": (1, 2), "nan": float("nan"), "inf": math.inf, 4: "four"}
    out = experiment.to_json(obj)
    assert out["t"] == [[1.0, 2.0]] and out["s"] == 3 and out["a"] == [0, 1, 2] and out["f"] == 0.5
    assert out["p"] == str(Path("a/b")) and out["d"] == "torch.float32" and out["tup"] == [1, 2]
    assert math.isnan(out["nan"]) and out["inf"] == math.inf
    text = json.dumps(out)
    assert "NaN" in text and "Infinity" in text and '"4": "four"' in text
    with pytest.raises(TypeError):
        experiment.to_json({"x": object()})


def test_write_json_creates_the_folder_and_round_trips(tmp_path):
    path = experiment.write_json(tmp_path / "new" / "r.json", {"x": torch.arange(3), "y": {"z": 1.5}})
    assert path.exists() and json.loads(path.read_text()) == {"x": [0, 1, 2], "y": {"z": 1.5}}
    assert path.read_text().startswith("{\n  ")  # indented like the scripts' files


def test_save_results_writes_the_json_then_the_figures(tmp_path):
    drawn = []

    def draw(path):
        assert (tmp_path / "out" / "r.json").exists()  # the JSON is written first
        drawn.append(path)
        path.write_bytes(b"figure")

    paths = experiment.save_results(tmp_path / "out", "r.json", {"a": 1}, {"f.png": draw, "g.png": draw})
    assert paths == [tmp_path / "out" / n for n in ("r.json", "f.png", "g.png")] and drawn == paths[1:]
    assert json.loads(paths[0].read_text()) == {"a": 1} and paths[2].read_bytes() == b"figure"
    assert experiment.save_results(str(tmp_path), "only.json", []) == [tmp_path / "only.json"]


def test_wrote():
    assert experiment.wrote([Path("a.json")]) == "wrote a.json"
    assert experiment.wrote(["a", "b"]) == "wrote a and b"
    assert experiment.wrote(["a", "b", "c"]) == "wrote a, b and c"


# --- tables -----------------------------------------------------------------------------------
def test_format_table_aligns_titles_to_the_cell_widths():
    rows = [{"N": 1000, "s": 0.5, "mb": None}, {"N": 20000, "s": 12.25, "mb": 3.0}]
    mb = lambda r: experiment.format_value(r["mb"], ".1f")
    columns = [("N", ">7,", "N"), "|", ("sec", ">6.2f", "s"), ("MB", ">5", mb)]
    text = experiment.format_table(rows, columns, rule=True, suffix=lambda r: "  !" if r["s"] > 1 else "")
    assert text.split("\n") == [
        "      N |    sec    MB",
        "-" * 22,
        "  1,000 |   0.50     -",
        " 20,000 |  12.25   3.0  !",
    ]
    # a title without width, an empty separator (a wider gap) and an indent
    text = experiment.format_table([{"a": 1}], [("a", ">3", "a"), "", ("note", "", lambda r: "x")], indent="  ")
    assert text.split("\n") == ["    a  note", "    1  x"]


def test_format_value():
    assert experiment.format_value(None, ".1f") == "-"
    assert experiment.format_value(2.345, ".1f") == "2.3"
    assert experiment.format_value(None, missing="n/a") == "n/a"


# --- timing -----------------------------------------------------------------------------------
def test_alternating_order():
    assert list(experiment.alternating(["a", "b", "c"], 3)) == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert list(experiment.alternating(["a"], 0)) == []


def test_time_call_and_first_calls_measure_a_sleep():
    cpu = torch.device("cpu")
    assert 0.01 <= experiment.time_call(lambda: time.sleep(0.01), cpu, number=2) < 1.0
    outputs, seconds = experiment.first_calls({"one": lambda: 1, "nap": lambda: time.sleep(0.02) or 2}, cpu)
    assert outputs == {"one": 1, "nap": 2}
    assert 0 <= seconds["one"] < seconds["nap"] and seconds["nap"] >= 0.02


def test_time_alternating_runs_each_variant_enough_times():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.005)

    runners = {"fast": fast, "slow": slow}
    cpu = torch.device("cpu")
    times, faults, number = experiment.time_alternating(runners, ["fast", "slow"], {"fast": 1e-6, "slow": 5e-3}, cpu,
                                                        warmup=1, repeats=3, min_time=0.02)
    assert [len(times[n]) for n in runners] == [3, 3]
    assert all(t > 0 for t in times["fast"]) and min(times["slow"]) >= 0.005
    assert max(times["fast"]) < min(times["slow"])
    assert 2 <= number["slow"] <= 5 and number["fast"] > number["slow"]  # a repeat lasts about min_time
    assert calls["slow"] == 1 + 3 * number["slow"]  # one warm-up call, then the repeats
    if experiment.minor_page_faults() is not None:
        assert len(faults["fast"]) == 3 and all(f >= 0 for f in faults["fast"])
    # the large-size rule: no warm-up, at most 3 repeats; min_time 0: one call per repeat
    calls["slow"] = 0
    times, _, number = experiment.time_alternating(runners, ["slow"], {"slow": 5e-3}, cpu, warmup=4, repeats=10,
                                                   min_time=0, large=True)
    assert len(times["slow"]) == 3 and number == {"slow": 1} and calls["slow"] == 3


def test_cpu_peak_sees_a_large_allocation():
    if not sys.platform.startswith("linux"):
        pytest.skip("the resident-set probe is exact on Linux only")
    peak, method = experiment.measure_cpu_peak_in_this_process(lambda: torch.ones(64 * 2**20 // 4).sum())
    assert method in ("subprocess_vmhwm", "subprocess_ru_maxrss")
    if method == "subprocess_vmhwm":
        assert 48 <= peak <= 200  # a 64 MiB tensor, touched page by page


def test_run_probes_reads_the_marked_line_and_reports_failures():
    marker = "TEST_PROBE "
    code = "from varmem.experiment import print_probe; print('noise'); print_probe('TEST_PROBE ', value={v})"
    out = experiment.run_probes({f"p{v}": [sys.executable, "-c", code.format(v=v)] for v in (1, 2)}, marker)
    assert out == {"p1": {"value": 1}, "p2": {"value": 2}}
    with pytest.raises(RuntimeError, match=r"memory probe \(bad, N=5\) failed"):
        experiment.run_probes({"bad": [sys.executable, "-c", "raise SystemExit(3)"]}, marker, "N=5")


# --- figures ----------------------------------------------------------------------------------
def test_plot_by_size_and_save_figure(tmp_path):
    rows = [{"N": 10, "a_v": 1.0, "b_v": None}, {"N": 100, "a_v": 0.0, "b_v": 2.0}]
    fig, ax = experiment.subplots(figsize=(3, 2))
    experiment.plot_by_size(ax, rows, "{}_v", {"a": "A", "b": "B"}, xlabel="N", ylabel="v", title="t", floor=0.01)
    (line,) = ax.get_lines()  # "b" has a missing value: left out
    assert list(line.get_xdata()) == [10, 100] and list(line.get_ydata()) == [1.0, 0.01]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_legend() is not None
    path = experiment.save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == PNG

    import matplotlib.pyplot as plt

    assert not plt.fignum_exists(fig.number)  # closed


def test_plain_log_axis_labels_are_numbers_within_the_limits() -> None:
    """A narrow log range (0.728..0.746, inside one decade) gets at least two plain labels where
    matplotlib's default labels minor ticks "7.3x10^-1"; a wide one gets the 1-2-5 values or the
    powers of ten; ticks given (the sizes) are used as they are."""
    import matplotlib.pyplot as plt

    from varmem.experiment import plain_log_axis, subplots

    fig, (narrow, wide, sizes) = subplots(1, 3)
    narrow.plot([1, 2], [0.728, 0.746])
    wide.plot([1, 2], [3e-5, 0.4])
    sizes.plot([2, 16], [1, 2])
    plain_log_axis(narrow, "y")
    plain_log_axis(wide, "y")
    plain_log_axis(sizes, "x", [2, 4, 8, 16])
    fig.canvas.draw()

    def shown(ax, axis):
        labels = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
        low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
        return [t.get_text() for t in labels if t.get_text() and low <= t.get_position()[axis == "y"] <= high]

    assert len(shown(narrow, "y")) >= 2 and all(0.72 < float(t) < 0.75 for t in shown(narrow, "y"))
    assert shown(wide, "y") == ["0.0001", "0.001", "0.01", "0.1"]
    assert shown(sizes, "x") == ["2", "4", "8", "16"]
    with pytest.raises(ValueError, match="axis"):
        plain_log_axis(wide, "z")
    plt.close(fig)


def test_save_figure_gives_default_log_axes_plain_labels(tmp_path) -> None:
    """A script that only says ``yscale="log"`` gets plain labels from save_figure, where matplotlib
    alone writes mathtext ("$\\mathdefault{7.3\\times10^{-1}}$"); a formatter the script set is kept."""
    from matplotlib.ticker import FuncFormatter

    from varmem.experiment import save_figure, subplots

    fig, (default, custom) = subplots(1, 2)
    default.plot([1, 2], [0.728, 0.746])
    default.set(xscale="log", yscale="log")
    custom.plot([1, 2], [1, 10])
    custom.set_yscale("log")
    custom.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"<{v:g}>"))
    save_figure(fig, tmp_path / "f.png")
    labels = [t.get_text() for t in default.get_yticklabels() + default.get_xticklabels() if t.get_text()]
    assert labels and not any("$" in t or "times" in t for t in labels), labels
    assert {t.get_text() for t in custom.get_yticklabels() if t.get_text()} <= {"<1>", "<10>", "<0.1>", "<100>"}
    assert (tmp_path / "f.png").stat().st_size > 0


def test_recording_collects_each_call_including_the_object_s_own_and_restores_the_method():
    class Counter:
        def step(self, k: int) -> tuple[int, int]:
            return k, 2 * k

        def run(self) -> int:  # calls step itself: those calls are recorded too
            return sum(self.step(k)[1] for k in range(3))

    c = Counter()
    with experiment.recording(c, "step", lambda out: out[1]) as seen:
        assert c.run() == 6
        c.step(5)
    assert seen == [0, 2, 4, 10]
    assert "step" not in vars(c) and c.step(1) == (1, 2)
    with pytest.raises(RuntimeError), experiment.recording(c, "step") as seen:  # removed on an error too
        raise RuntimeError("boom")
    assert "step" not in vars(c)
