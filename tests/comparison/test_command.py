"""``varmem compare``: the command on the 8×8 digits writes its files with their provenance, every
default memory can be built, bad command lines get one ``error:`` line (exit 2) and the figures'
tick labels are plain numbers and times with units."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import varmem
from varmem.cli import main
from varmem.comparison import FAMILIES, ComparisonError, default_contenders
from varmem.comparison.command import CompareConfig, format_summary, run_compare
from varmem.comparison.figures import plot_capacity, plot_read_time
from varmem.experiment import format_seconds as _seconds

SMALL = ["--dataset", "digits", "--sizes", "10", "20", "--seeds", "0", "--queries", "4", "--train-items", "300",
         "--examples", "2", "--no-progress", "--quiet"]


# ------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    assert main(["compare", *SMALL, "--memories", "kde,modern,classical,latent", "--output", str(out)]) == 0
    return out


def test_command_writes_table_record_and_figures(run: Path) -> None:
    names = {p.name for p in run.iterdir()}
    assert {"results.csv", "results.json", "capacity.png", "recall_vs_level.png", "examples.png",
            "read_time.png", "cells"} <= names
    table = pd.read_csv(run / "results.csv")
    # kde (exact), modern, classical, latent (fixed_point, hybrid): 5 reads × 5 corruption levels × 2 sizes
    assert set(table["memory"]) == {"kde", "modern", "classical", "latent"}
    assert len(table) == 5 * 5 * 2
    assert table["accuracy"].between(0, 1).all()
    record = json.loads((run / "results.json").read_text())
    assert record["seeds"] == [0] and record["config"]["dataset"] == "digits"
    assert record["config"]["sizes"] == [10, 20]
    assert {"torch", "pyro", "varmem"} <= set(record["versions"])
    assert record["device"].startswith("cpu")
    assert set(record["memories"]) == {"kde", "modern", "classical", "latent"}
    assert len(record["rows"]) == len(table)


def test_kde_recalls_digits_it_stores_and_random_cues_are_a_negative_control(run: Path) -> None:
    """8×8 digits with white noise 0.2 are read back by the exact kernel-density read (N ≤ 20 items
    are far apart compared with s = 0.1), while the classical Hebbian network at N = 20, D = 64 is
    past its capacity 0.138·64 ≈ 9 and fails: the two bound the table's range."""
    table = pd.read_csv(run / "results.csv")
    white = table[(table["corruption"] == "white") & (table["N"] == 20)].set_index("memory")
    assert white.loc["kde", "accuracy"] >= 0.75
    assert white.loc["classical", "accuracy"] <= 0.25


def test_summary_lists_every_memory_at_the_largest_size(run: Path) -> None:
    text = format_summary(pd.read_csv(run / "results.csv"))
    assert text.splitlines()[0].startswith("recall accuracy (MSE < threshold) at N = 20, mean over 1 seed(s)")
    assert "right item" in text.splitlines()[1]
    for name in ("kde (exact)", "modern (fixed_point)", "classical", "latent"):
        assert name in text


def test_rerun_resumes_from_the_cells(run: Path, capsys) -> None:
    before = (run / "results.csv").read_text()
    cells = sorted(p.name for p in (run / "cells").iterdir())
    assert main(["compare", *SMALL, "--memories", "kde,modern,classical,latent", "--output", str(run)]) == 0
    assert sorted(p.name for p in (run / "cells").iterdir()) == cells
    after = pd.read_csv(run / "results.csv")
    pd.testing.assert_frame_equal(pd.read_csv(pd.io.common.StringIO(before)).drop(columns=["read_seconds",
                                  "write_seconds", "seconds_per_cue"]),
                                  after.drop(columns=["read_seconds", "write_seconds", "seconds_per_cue"]))


def test_methods_option_picks_each_memorys_reads(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["compare", "--dataset", "digits", "--memories", "kde,classical", "--methods", "kde=exact",
                 "--methods", "kde=fixed_point", "--method", "classical=async", "--sizes", "10", "--seeds", "0",
                 "--queries", "3", "--train-items", "0", "--corruption", "white=0.1", "--examples", "0",
                 "--no-progress", "--quiet", "--output", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert sorted(map(tuple, table[["memory", "method"]].values)) == [
        ("classical", "async"), ("kde", "exact"), ("kde", "fixed_point")]


def test_module_entry_point_prints_help() -> None:
    done = subprocess.run([sys.executable, "-m", "varmem", "compare", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert "results.csv" in done.stdout and "--memories" in done.stdout


# ------------------------------------------------------------------------------------ bad command lines
@pytest.mark.parametrize("args, words", [
    (["--memories", "foo"], "foo"),
    (["--corruption", "drop=1.5"], "drop"),
    (["--corruption", "nope=0.1"], "nope"),
    (["--corruption", "drop=abc"], "abc"),
    (["--corruption", "drop"], "drop"),
    (["--sizes", "0"], "0"),
    (["--sizes", "5000"], "5000"),
    (["--seeds", "-1"], "-1"),
    (["--queries", "0"], "0"),
    (["--dataset", "cifar"], "cifar"),
    (["--threshold", "-1"], "-1"),
    (["--train-items", "50", "--memories", "latent"], "train_items"),
    (["--examples", "11"], "examples"),
    (["--device", "gpu"], "gpu"),
    (["--dtype", "float16"], "float16"),
    (["--memories", "kde", "--corruption", "drop=0.99", "--train-items", "0"], "hides every entry"),
    (["--methods", "kde=bogus"], "bogus"),
    (["--methods", "foo=exact"], "foo"),
    (["--methods", "kde="], "kde="),
    (["--memories", "kde", "--methods", "modern=fixed_point", "--train-items", "0"], "modern"),
])
def test_bad_command_lines_get_one_error_line(args, words, tmp_path, capsys) -> None:
    base = ["compare", "--dataset", "digits", "--sizes", "10", "--seeds", "0", "--queries", "2", "--no-progress",
            "--quiet", "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("varmem compare: error:"), err
    assert words in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_output_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--dataset", "digits", "--memories", "kde", "--sizes", "10", "--seeds", "0",
              "--train-items", "0", "--no-progress", "--quiet", "--output", str(target)])
    assert exit_info.value.code == 2
    assert "varmem compare: error:" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_config_validate_refusals() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CompareConfig(corruptions={}).validate()
    with pytest.raises(ValueError, match="needs at least one level"):
        CompareConfig(corruptions={"drop": ()}).validate()
    with pytest.raises(ValueError, match="fractions"):
        CompareConfig(corruptions={"mask": (1.0,)}).validate()
    with pytest.raises(ValueError, match="at least one size"):
        CompareConfig(sizes=()).validate()
    with pytest.raises(ValueError, match="exceeds"):
        CompareConfig(dataset="digits", sizes=(1000,)).validate()
    with pytest.raises((ValueError, TypeError), match="quick"):
        CompareConfig(quick="yes").validate()
    config = CompareConfig(dataset="digits", sizes=(30, 10, 10), seeds=(1, 0, 1), corruptions={"white": 0.1},
                           output="somewhere").validate()
    assert config.sizes == (10, 30) and config.seeds == (1, 0) and config.corruptions == {"white": (0.1,)}


def test_unwritable_results_folder_is_a_comparison_error(tmp_path, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse)
    config = CompareConfig(dataset="digits", memories=("kde",), sizes=(10,), seeds=(0,), queries=2, train_items=0,
                           corruptions={"white": 0.1}, examples=0, output=str(tmp_path / "o"), progress=False,
                           verbose=False)
    with pytest.raises(ComparisonError, match="Permission denied"):
        run_compare(config)


# ------------------------------------------------------------------------------------ the default memories
def test_every_family_is_built_writes_and_reads_a_digit() -> None:
    """Each default memory stores 5 digits in its own value domain and reads one back to a finite
    pattern of the item's shape."""
    data = varmem.datasets.load_digits()
    flat = data.flat()
    train, pool = flat[:200], flat[200:]
    contenders = default_contenders(flat.shape[1], image_shape=data.image_shape, train=train,
                                    labels=data.labels[200:], quick=True)
    assert [c.name for c in contenders] == list(FAMILIES)
    rows = torch.arange(5)
    for contender in contenders:
        memory = contender.build(flat.shape[1])
        memory.write(memory.value_domain.encode(pool[rows]))
        if contender.after_write is not None:
            contender.after_write(memory, rows)
        method = (contender.methods or (memory.default_method,))[0]
        read = memory.retrieve(memory.value_domain.encode(pool[:1]), method=method,
                               **contender.options.get(method, {}))
        assert read.pattern.shape == (1, flat.shape[1]), contender.name
        assert bool(torch.isfinite(read.pattern).all()), contender.name
        assert contender.note, contender.name


def test_learning_and_correlated_families_need_their_data() -> None:
    names = [c.name for c in default_contenders(64)]
    assert "latent" not in names and "memn2n" not in names and "ntm" not in names and "cdam" not in names
    assert "kde" in names and "modern" in names


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown memories"):
        default_contenders(64, families=["kde", "nope"])


# ------------------------------------------------------------------------------------ figure ticks
def test_seconds_labels_carry_units_and_no_exponent() -> None:
    assert _seconds(2.0) == "2 s"
    assert _seconds(0.0153) == "15.3 ms"
    assert _seconds(4e-6) == "4 µs"
    assert _seconds(1e-8) == "0.01 µs"


def _table() -> pd.DataFrame:
    rows = []
    for memory, base in (("a", 1e-4), ("b", 3e-3)):
        for n in (10, 30, 100):
            for seed in (0, 1):
                rows.append({"memory": memory, "method": "exact", "corruption": "drop", "level": 0.5, "N": n,
                             "seed": seed, "accuracy": 1.0 - n / 200 - 0.01 * seed, "seconds_per_cue": base * n})
    return pd.DataFrame(rows)


def test_capacity_and_read_time_ticks_are_plain(tmp_path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr("varmem.comparison.figures.save_figure", lambda fig, path: figures.append(fig) or Path(path))
    plot_capacity(_table(), tmp_path / "c.png")
    plot_read_time(_table(), tmp_path / "t.png")
    capacity, read_time = figures
    for fig in figures:
        fig.canvas.draw()
    x_labels = [t.get_text() for t in capacity.axes[0].get_xticklabels()]
    assert x_labels == ["10", "30", "100"]
    ax = read_time.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "30", "100"]
    y_labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert y_labels and all(label.endswith((" s", " ms", " µs")) for label in y_labels), y_labels
    assert not any("10^" in label or "$" in label for label in y_labels)
    for fig in figures:
        plt.close(fig)


def test_default_contenders_take_read_methods_from_each_class() -> None:
    picked = {c.name: c.methods for c in default_contenders(64, methods={"kde": ["exact", "map"]})}
    assert picked["kde"] == ("exact", "map")
    with pytest.raises(ValueError, match="modern reads with"):
        default_contenders(64, methods={"modern": ["async"]})
    with pytest.raises(ValueError, match="not among the memories"):
        default_contenders(64, methods={"hopfield": ["sync"]})
    with pytest.raises(TypeError, match="must map"):
        default_contenders(64, methods=["exact"])
