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


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--corruption", "blur"], "white, drop, mask, square, color"),
        (["--corruption", "white,nope"], "valid names"),
        (["--method", "gibbs"], "exact, fixed_point, map, nuts"),
        (["--dataset", "cifar"], "invalid choice"),
        (["--n-items", "0"], "must be >= 1"),
        (["--n-items", "5", "--n-queries", "6"], "cannot exceed"),
        (["--bandwidth", "-1"], "> 0"),
        (["--level", "blur=1"], "valid names"),
        (["--level", "drop=1.5"], "probability"),
        (["--noise-scale", "0.1", "--noise-scale", "white=0.2"], "not both"),
        (["--corruption", "color"], "colour"),
        (["--method", "nuts", "--nuts-queries", "0"], "nuts_queries"),
    ],
)
def test_bad_options_are_argparse_errors(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recall", "--dataset", "digits", "--output", str(tmp_path), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


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
