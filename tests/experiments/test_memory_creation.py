"""The memory-creation experiment (experiments/memory_creation.py) runs at a smoke size and records
what it should: K tracks the true number of components, the prior check agrees with the CRP."""

from __future__ import annotations

import json

import pytest
from _scripts import load_experiment


@pytest.fixture(scope="module")
def experiment():
    return load_experiment("memory_creation")


def test_smoke_run_writes_json_and_figure(experiment, tmp_path):
    result = experiment.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / experiment.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["device"] == "cpu"
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    assert (tmp_path / experiment.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mix = data["mixture"]
    for row in mix["rows"]:
        assert len(row["num_memories"]) == len(mix["checkpoints"])
        assert row["num_memories"] == sorted(row["num_memories"])  # memories are only ever created
        if row["width_factor"] == 1.0:  # the right kernel width: K = true K, the true partition
            assert row["final_num_memories"] == mix["true_k"] and row["ari"] == pytest.approx(1.0)
            assert row["duplicate_write_new_memories"] == 0
        elif row["width_factor"] > 1:  # negative control: far too wide merges components
            assert row["final_num_memories"] < mix["true_k"]
        else:  # far too narrow splits them
            assert row["final_num_memories"] > 10 * mix["true_k"]
    prior = data["prior"]["rows"][0]
    assert abs(prior["final_z_score"]) < 4
    assert prior["crp_map_mean_num_memories"][-1] == 1.0
    assert data["digits"]["true_k"] == 10 and len(data["digits"]["rows"]) == 3


def test_checkpoints_are_increasing_and_end_at_n(experiment):
    at = experiment.checkpoints(1000)
    assert at[0] == 1 and at[-1] == 1000 and at == sorted(set(at))
