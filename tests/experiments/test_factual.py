"""Smoke runs of experiments/factual_capacity.py and factual_recall.py against reference §1.4."""

from __future__ import annotations

import json
import math

import pytest
from _scripts import load_experiment


def _record(data: dict, tmp_path, *pngs: str) -> None:
    assert data["seed"] == 0 and data["device"].startswith("cpu")
    assert all(isinstance(data["versions"][p], str) for p in ("python", "torch", "pyro", "varmem"))
    for png in pngs:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_factual_capacity_smoke_orders_trained_above_hebbian(tmp_path):
    exp = load_experiment("factual_capacity")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    _record(data, tmp_path, exp.PNG_NAME)
    rows = {(r["kind"], r["d"], r["seed"]): r for r in data["rows"]}
    # trained d = 8 (≤ 1024 steps at smoke size): reference 20–22 with 4096 steps; d²/(N ln N) within [0.8, 2]
    trained = rows[("trained", 8, 0)]
    assert 12 <= trained["capacity"] <= 24 and 0.8 <= trained["params_over_N_ln_N"] <= 2.0
    # Hebbian d = 32: reference ≈ 35 (3 seeds); constant several times the trained 1.3
    hebb = [rows[("hebbian", 32, s)]["capacity"] for s in range(3)]
    assert 15 <= sum(hebb) / 3 <= 50
    assert data["summary"]["hebbian"]["params_over_N_ln_N_median"] > 3 * 1.3
    assert exp.solve_n_log_n(100 * math.log(100)) == pytest.approx(100, rel=1e-9)


@pytest.mark.slow
def test_factual_recall_smoke_plateau_recall_and_attention_storage(tmp_path):
    """About 35 CPU seconds: the sequential run (4608 steps), a 2 × 2 grid on 64 facts and the parameter
    search at 16 facts."""
    exp = load_experiment("factual_recall")
    exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    _record(data, tmp_path, exp.SEQ_PNG, exp.GRID_PNG, exp.SCALE_PNG)
    seq = data["sequential"]
    assert abs(seq["initial_loss"] - math.log(32)) < 0.01
    pl = seq["plateau"]  # reference: 2.09–2.13 from ≈ 2.0k to ≈ 3.6k steps
    assert pl["last_step"] - pl["first_step"] >= 1000 and pl["accuracy_max"] <= 0.25
    assert pl["relation_accuracy_min"] >= 0.99
    assert seq["first_step_relation_accuracy_1"] < seq["first_step_accuracy_1"] <= 4608
    assert seq["final_accuracy"] == 1.0
    sc = data["scaling"]
    assert sc["attention_only"]["accuracy"] >= 0.99  # 8 heads, no MLP: attention stores the 64 facts
    assert sc["small_in_both"]["accuracy"] < 0.7  # negative control: 1 head, no MLP (measured 0.596)
    assert sc["mlp_with_fewest_heads"]["accuracy"] == 1.0  # 1 head + MLP m = 64 (attention only copies s, r)
    assert sc["attention_only"]["accuracy"] == 1.0
    (row,) = data["parameter_scaling"]["rows"]  # 16 facts, ≤ 600 steps: one head fails (0.75), two store all
    assert row["facts"] == 16 and row["attention_only"]["heads"] == 2
    assert [r["accuracy"] == 1.0 for r in row["attention_only"]["runs"]] == [False, True]
