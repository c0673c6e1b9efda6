"""The predictive-coding experiments run with --smoke and record what they should.

``pc_read_options`` (the measurement that picks the read defaults), ``pc_capacity`` (recall against
N by width, with the published values marked as read from a figure) and ``bench_pc`` (varmem
against pcx; without a pcx environment only varmem runs).  No timing or recall assertions at smoke
size beyond well-formed, finite records.
"""

from __future__ import annotations

import json
import math

import pytest
from _scripts import load_experiment

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_pc_read_options_smoke_records_every_start_procedure_and_rule(tmp_path):
    exp = load_experiment("pc_read_options")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result)) and data["seed"] == 0
    row = data["rows"][0]
    assert len(row["starts"]) == len(exp.PARTIAL) * 2 * len(exp.STARTS)
    assert set(row["rules"]) == set(exp.RULES)
    for r in row["rules"].values():
        assert 1 <= r["write_steps"] <= 40 and all(0 <= v["acc"] <= 1 for v in r["reads"].values())
    assert (tmp_path / exp.PNG_NAME).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_pc_capacity_smoke_has_dense_rows_a_conv_row_and_the_published_curves(tmp_path):
    exp = load_experiment("pc_capacity")
    exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert {(r["data"], r["N"], r["h"]) for r in data["rows"]} == {("mnist", 4, 32), ("patches", 4, 32)}
    for r in data["rows"] + [data["conv_patches"]]:
        assert all(math.isfinite(r[k]["mse01"]) and 0 <= r[k]["acc"] <= 1 for k in ("white", "bottom"))
    assert data["published_cifar10_read_from_figure_U"]["N"] == [100, 250, 500, 1000, 1500]
    assert (tmp_path / exp.PNG_NAME).read_bytes()[:8] == PNG


def test_bench_pc_smoke_runs_varmem_alone_without_a_pcx_environment(tmp_path):
    exp = load_experiment("bench_pc")
    exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    row = data["rows"][0]
    assert "pcx" not in row and row["varmem"]["train_seconds"] > 0
    assert row["varmem"]["train_steps_per_epoch"] == 5  # T steps, no early stop
    assert set(row["varmem"]["reads"]) == {"bottom0.5", "drop0.5", "white0.2"}
    assert (tmp_path / exp.PNG_NAME).read_bytes()[:8] == PNG
