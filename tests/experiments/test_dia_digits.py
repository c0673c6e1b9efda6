"""experiments/dia_digits.py at smoke size: JSON, figure, and the parameter identity at every depth."""

from __future__ import annotations

import json

from _scripts import load_experiment


def test_dia_digits_smoke(tmp_path):
    exp = load_experiment("dia_digits")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["settings"]["smoke"] is True and data["versions"]["torch"]
    assert (tmp_path / exp.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["dia_parameter_count"] == 14392  # Σ 2.5C² + 8.5C over C = 16, 32, 64
    assert all(r["dia_parameters"] == r["formula"] == 14392 for r in data["depth"])
    dia, plain = data["runs"]
    assert dia["parameters"] - plain["parameters"] == 14392 and plain["dia_parameters"] == 0
    for run in (dia, plain):  # both learn: the epoch-mean training loss falls (3 epochs of 5 steps)
        assert run["train_loss"][-1] < run["train_loss"][0] and 0 <= run["test_accuracy"] <= 1
    assert all(-1 <= c <= 1 for c in dia["mean_block_attention_correlation"])
