"""The entropic-memory experiment (experiments/entropic.py) runs at a smoke size and records what
it should: the m = 1 invariants exactly, the published table beside ours, the three hetero reads."""

from __future__ import annotations

import json

import pytest
from _scripts import load_experiment


@pytest.fixture(scope="module")
def experiment():
    return load_experiment("entropic")


def test_smoke_run_writes_json_and_figures(experiment, tmp_path):
    result = experiment.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / experiment.JSON_NAME).read_text())
    assert data["seed"] == 0 and data["device"] == "cpu"
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    for name in (experiment.TRADEOFF_PNG, experiment.RECALL_PNG, experiment.HETERO_PNG):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    inv = data["tradeoff"]["m1_invariants"]
    assert inv["exact"] and inv["precision"] == pytest.approx(10.0, abs=1e-9) and inv["entropy"] == 0.0
    binary = data["tradeoff"]["binary"]
    assert [r["rows"] for r in binary] == [1, 4, 64]
    entropies = [r["entropy"] for r in binary]
    assert entropies == sorted(entropies) and entropies[-1] > 1  # entropy grows with the rows
    assert data["published_mnist"]["precision"][6] == 97.1  # m = 64, seed-systems.md §4.3
    hetero = data["hetero"]
    assert set(hetero["methods"]) == {"random", "sample_and_test", "search_and_test"}
    assert hetero["recognition"]["registered_recognised"] == 100.0  # ξ = 0: every registered pair fits
    for row in hetero["methods"].values():
        assert row["seconds_per_cue"] > 0 and 0 <= row["test_accuracy"] <= 100
    assert result["hetero"]["pairs"] == hetero["pairs"]
