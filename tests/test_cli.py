"""``varmem recall``: the command line, the files it writes and the sanity of its metrics.

Everything runs at a tiny size (scikit-learn's 8×8 digits, a few dozen items, a few NUTS draws)
so the whole file takes seconds.  Theory used below, for a kernel-density memory with bandwidth
``s`` and likelihood ``σ`` equal to the white-noise std, when the posterior over items is
one-hot on the target ``ξ`` (items far apart compared with ``√(s² + σ²)``):

* the cue ``x = ξ + σε`` has MSE ``σ²`` (in expectation);
* the exact posterior mean is ``(σ²ξ + s²x)/(s² + σ²)``, so its error is ``s²/(s² + σ²)`` times
  the cue's, and its MSE is ``(s²/(s² + σ²))²`` times the cue's;
* for occlusions the posterior mean on unknown entries is ``ξ`` itself (MSE ≈ 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

from varmem.cli import main

REPO = Path(__file__).resolve().parents[1]
CORRUPTIONS = ("white", "drop", "mask")
METHODS = ("exact", "fixed_point", "map", "nuts")
BANDWIDTH, WHITE_STD = 0.1, 0.2


def tiny_args(output: Path, device: torch.device, *extra: str) -> list[str]:
    return [
        "recall",
        "--dataset",
        "digits",
        "--n-items",
        "30",
        "--n-queries",
        "10",
        "--corruption",
        "white,drop",
        "--corruption",
        "mask",
        "--method",
        ",".join(METHODS),
        "--nuts-queries",
        "2",
        "--nuts-samples",
        "25",
        "--nuts-warmup",
        "25",
        "--examples",
        "2",
        "--bandwidth",
        str(BANDWIDTH),
        "--level",
        f"white={WHITE_STD}",
        "--seed",
        "3",
        "--dtype",
        "float64",
        "--device",
        str(device),
        "--no-progress",
        "--output",
        str(output),
        *extra,
    ]


def metrics_only(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run of every corruption and method, through ``main``."""
    device = torch.device(os.environ.get("VARMEM_DEVICE", "cpu"))
    out = tmp_path_factory.mktemp("recall")
    assert main(tiny_args(out, device, "--quiet")) == 0
    return {"out": out, "device": device, "summary": json.loads((out / "results.json").read_text())}


def rows_by_key(summary: dict) -> dict[tuple[str, str], dict]:
    return {(r["corruption"], r["method"]): r for r in summary["rows"]}


def test_results_json_records_the_run(run: dict) -> None:
    summary = run["summary"]
    assert summary["seed"] == 3 and summary["config"]["seed"] == 3
    assert summary["config"]["dataset"] == "digits" and summary["config"]["n_items"] == 30
    assert set(summary["versions"]) >= {"python", "torch", "pyro", "numpy", "varmem"}
    assert all(isinstance(v, str) and v for v in summary["versions"].values())
    assert summary["device"]["type"] == run["device"].type
    assert summary["platform"] and summary["date"]
    assert len(summary["stored_indices"]) == 30 and len(set(summary["stored_indices"])) == 30
    rows = rows_by_key(summary)
    assert set(rows) == {(c, m) for c in CORRUPTIONS for m in METHODS}
    assert [r["corruption"] for r in summary["rows"]] == [c for c in CORRUPTIONS for _ in METHODS]
    for (corruption, method), row in rows.items():
        assert row["n_queries"] == (2 if method == "nuts" else 10)
        assert row["seconds"] >= 0
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["retrieval_rate"] <= 1.0
        assert (row["mse_unknown"] is None) == (corruption == "white")
    assert rows[("white", "exact")]["noise_scale"] == pytest.approx(WHITE_STD)
    assert rows[("drop", "exact")]["noise_scale"] == pytest.approx(0.05)


def test_figure_is_a_valid_png(run: dict) -> None:
    path = run["out"] / "examples.png"
    assert Path(run["summary"]["files"]["figure"]) == path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 50 and image.shape[1] > image.shape[0]  # rows = 3 corruptions, wide
    assert float(image[..., :3].std()) > 0.05  # not blank


def test_items_are_well_separated(run: dict) -> None:
    """The premise of the checks below: stored items lie far apart compared with the kernel."""
    from varmem.datasets import load_digits

    items = load_digits(dtype=torch.float64).flat()[run["summary"]["stored_indices"]]
    d2 = torch.cdist(items, items).square()
    d2.fill_diagonal_(float("inf"))
    # the item logits of a noise-free cue, ‖ξ_i - ξ_j‖² / 2(s² + σ²), differ by more than 10 nats
    assert float(d2.min()) > 20 * (BANDWIDTH**2 + WHITE_STD**2)


def test_metrics_agree_with_theory(run: dict) -> None:
    rows = rows_by_key(run["summary"])
    s2, n2 = BANDWIDTH**2, WHITE_STD**2
    white = rows[("white", "exact")]
    assert white["cue_mse"] == pytest.approx(n2, rel=0.2)  # 640 squared N(0, σ²) draws
    assert white["mse"] == pytest.approx((s2 / (s2 + n2)) ** 2 * white["cue_mse"], rel=1e-3)
    assert white["accuracy"] == 1.0 and white["retrieval_rate"] == 1.0
    assert rows[("white", "fixed_point")]["mse"] == pytest.approx(white["mse"], rel=1e-2)
    assert rows[("white", "map")]["mse"] == pytest.approx(white["mse"], rel=1e-2)
    for corruption in ("drop", "mask"):
        exact = rows[(corruption, "exact")]
        assert exact["mse_unknown"] < 1e-6 and exact["mse"] < 1e-6
        assert exact["accuracy"] == 1.0 and exact["retrieval_rate"] == 1.0
        assert exact["cue_mse_unknown"] > 0.01  # the cue itself is wrong where hidden
    for (corruption, method), row in rows.items():
        assert row["mse"] < row["cue_mse"], (corruption, method)
        assert row["mse"] < 0.01 and row["retrieval_rate"] == 1.0, (corruption, method)


def test_same_seed_gives_identical_metrics(run: dict, tmp_path: Path) -> None:
    assert main(tiny_args(tmp_path, run["device"], "--quiet")) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["stored_indices"] == run["summary"]["stored_indices"]
    assert again["query_indices"] == run["summary"]["query_indices"]
    assert metrics_only(again["rows"]) == metrics_only(run["summary"]["rows"])


def test_table_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture, device: torch.device) -> None:
    args = [
        "recall",
        "--dataset",
        "digits",
        "--n-items",
        "12",
        "--n-queries",
        "4",
        "--corruption",
        "square",
        "--method",
        "exact",
        "--device",
        str(device),
        "--no-progress",
        "--output",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "corruption" in out and "retrieval" in out and "square" in out and "exact" in out
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["rows"][0]["level"] == 4  # square side defaults to H // 2 for 8x8 digits


def test_no_subcommand_prints_help_and_returns_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "recall" in capsys.readouterr().err


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# A catalogue of bad command lines: (extra options, words the one error line must contain).
# "{file}" stands for an existing file, "{taken}" for a folder whose results.json is a folder.
BAD_COMMAND_LINES = [
    (["--n-items", "5000"], "exceeds the 1797 images"),
    (["--n-items", "0"], "must be >= 1"),
    (["--n-items", "ten"], "not an integer"),
    (["--n-items", "2.5"], "not an integer"),
    (["--n-items"], "expected one argument"),
    (["--n-items", "5", "--n-queries", "6"], "cannot exceed"),
    (["--n-queries", "-1"], "must be >= 1"),
    (["--output", "{file}"], "is an existing file"),
    (["--output", "{file}/sub"], "is a file"),
    (["--output", ""], "empty string"),
    (["--output", "{taken}"], "'results.json'"),
    (["--corruption", "blur"], "white, drop, mask, square, color"),
    (["--corruption", "white,nope"], "valid names"),
    (["--corruption", ","], "expected one or more names"),
    (["--corruption", "color"], "colour"),
    (["--method", "gibbs"], "exact, fixed_point, map, nuts"),
    (["--dataset", "cifar"], "invalid choice"),
    (["--level", "blur=1"], "valid names"),
    (["--level", "white"], "NAME=VALUE"),
    (["--level", "white=abc"], "is not a number"),
    (["--level", "white=-0.1"], ">= 0"),
    (["--level", "white=nan"], "finite"),
    (["--level", "white=1e9"], "at most"),
    (["--level", "drop=1.5"], "probability"),
    (["--level", "drop=1"], "(0, 1)"),
    (["--level", "mask=0"], "(0, 1)"),
    (["--level", "square=8"], "[1, 7] for 8x8 images"),
    (["--level", "square=0"], "[1, 7]"),
    (["--level", "square=2.5"], "must be an integer"),
    (["--corruption", "drop", "--level", "drop=0.99"], "nothing observed"),  # found only once the cues exist
    (["--bandwidth", "-1"], "> 0"),
    (["--bandwidth", "0"], "> 0"),
    (["--bandwidth", "nan"], "> 0"),
    (["--bandwidth", "inf"], "> 0"),
    (["--bandwidth", "1e-9"], "bandwidth must lie in"),
    (["--bandwidth", "1e9"], "bandwidth must lie in"),
    (["--noise-scale", "0.1", "--noise-scale", "white=0.2"], "not both"),
    (["--noise-scale", "white=0"], "must be finite and > 0"),
    (["--noise-scale", "1e-9"], "noise_scale must lie in"),
    (["--noise-scale", "blur=0.1"], "valid names"),
    (["--noise-scale", "white="], "is not a number"),
    (["--method", "nuts", "--nuts-queries", "0"], "nuts_queries"),
    (["--nuts-samples", "1"], "must be >= 2"),
    (["--nuts-warmup", "-1"], "must be >= 0"),
    (["--threshold", "0"], "> 0"),
    (["--threshold", "inf"], "> 0"),
    (["--scored", "some"], "invalid choice"),
    (["--examples", "-1"], "must be >= 0"),
    (["--examples", "41"], "at most 40"),
    (["--seed", "-3"], "must be >= 0"),
    (["--dtype", "float16"], "invalid choice"),
    (["--dtype", "int32"], "invalid choice"),
    (["--device", "gpu"], "not a torch device"),
    (["--device", "meta"], "'cpu', 'cuda' or 'cuda:N'"),
    (["--device", "cuda:99"], "'cuda:99' requested"),
    pytest.param(["--device", "cuda"], "CUDA is not available", marks=NO_CUDA),
    (["--bogus"], "unrecognized arguments"),
]


def assert_one_error_line(err: str, message: str) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("varmem recall: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("extra, message", BAD_COMMAND_LINES)
def test_every_user_error_is_one_line_and_exit_status_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "taken" / "results.json").mkdir(parents=True)
    out = tmp_path / "out"
    extra = [a.format(file=tmp_path / "file", taken=tmp_path / "taken") for a in extra]
    small = ["--n-items", "20", "--n-queries", "4", "--nuts-samples", "5", "--nuts-warmup", "5", "--no-progress", "-q"]
    with pytest.raises(SystemExit) as exc:
        main(["recall", "--dataset", "digits", *small, "--output", str(out), *extra])
    assert exc.value.code == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert not out.exists() and not (tmp_path / "taken" / "examples.png").exists()
    assert (tmp_path / "file").read_text() == "not a folder"


def test_the_catalogue_of_bad_command_lines_is_large() -> None:
    assert len(BAD_COMMAND_LINES) >= 50


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_an_output_folder_without_write_permission_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit):
            main(["recall", "--dataset", "digits", "--n-items", "5", "--n-queries", "2", "-o", str(locked / "out")])
    finally:
        locked.chmod(0o700)
    assert_one_error_line(capsys.readouterr().err, "not writable")


def test_output_checks_and_write_failures_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without write permission (simulated, so that it also runs as root), and a disk that fails
    while the results are written: one error line each, no traceback."""
    import errno

    import varmem.recall

    args = ["recall", "--dataset", "digits", "--n-items", "5", "--n-queries", "2", "--method", "exact",
            "--corruption", "white", "--no-progress", "-q", "-o", str(tmp_path / "out")]
    with monkeypatch.context() as m:
        m.setattr(varmem.validation.os, "access", lambda *a, **k: False)
        with pytest.raises(SystemExit):
            main(args)
    assert_one_error_line(capsys.readouterr().err, "not writable")

    def full_disk(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(varmem.recall, "_figure", full_disk)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert_one_error_line(capsys.readouterr().err, "cannot write the results to")
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_interrupt_is_one_line_and_status_130(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import varmem.recall

    def interrupted(config: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(varmem.recall, "run_recall", interrupted)
    assert main(["recall", "--dataset", "digits", "--n-items", "5", "--n-queries", "2", "-o", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "varmem: interrupted"


def test_dataset_sizes_match_the_data() -> None:
    """The table that validate() checks n_items and levels against is the data's real size."""
    from varmem import datasets
    from varmem.recall import DATASET_SIZES

    for name, load in (("digits", datasets.load_digits), ("mnist", datasets.load_mnist)):
        data = load()
        assert DATASET_SIZES[name] == (len(data), tuple(data.image_shape)), name


def test_console_entry_point(tmp_path: Path, device: torch.device) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [
        sys.executable,
        "-m",
        "varmem.cli",
        "recall",
        "--dataset",
        "digits",
        "--n-items",
        "10",
        "--n-queries",
        "3",
        "--corruption",
        "white",
        "--method",
        "exact,fixed_point",
        "--device",
        str(device),
        "--no-progress",
        "--output",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "fixed_point" in done.stdout
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["corruption"], r["method"]) for r in summary["rows"]] == [("white", "exact"), ("white", "fixed_point")]
    assert (tmp_path / "out" / "examples.png").is_file()
    bad = subprocess.run([*cmd[:3]], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "recall" in bad.stderr
    # user errors of the real console script: one line, status 2, no traceback
    for extra, words in ((["--n-items", "5000"], "exceeds"), (["--output", str(tmp_path / "out" / "results.json")],
                                                               "existing file")):
        bad = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, timeout=120)
        assert bad.returncode == 2, bad.stderr
        assert_one_error_line(bad.stderr, words)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("progress", "yes", TypeError),
        ("levels", [("white", 0.1)], TypeError),
        ("output", 3, TypeError),
        ("n_items", True, TypeError),
        ("n_queries", 2.0, TypeError),
        ("dtype", "float16", ValueError),
        ("noise_scale", {"white": float("nan")}, ValueError),
    ],
)
def test_recall_config_validate_refuses_bad_fields_from_python(field: str, value: object, error: type) -> None:
    from varmem.recall import RecallConfig

    with pytest.raises(error, match=field.rstrip("s") if field != "levels" else "levels"):
        RecallConfig(dataset="digits", **{field: value}).validate()
