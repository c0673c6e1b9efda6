"""The predictive-coding experiments run with --smoke and record what they should.

``pc_read_options`` (the measurement that picks the read defaults), ``pc_capacity`` (recall against
N by width, with the published values marked as read from a figure) and ``bench_pc`` (varmem
against pcx and fabricpc; without their environments only varmem runs, and a stand-in peer checks
the fabricpc wiring).  No timing or recall assertions at smoke size beyond well-formed, finite
records.
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
    assert {r["data"]: r["gamma_tried"][0] for r in data["rows"]} == {"mnist": 0.05, "patches": 0.025}
    conv = data["conv_patches"]
    assert conv["N"] == 4 and conv["conv"]["weights"] < conv["conv_dense_memory"]["weights"]
    for r in data["rows"] + [conv["conv"], conv["conv_dense_memory"]]:
        assert all(math.isfinite(r[k]["mse01"]) and 0 <= r[k]["acc"] <= 1 for k in ("white", "bottom"))
        assert 0 < r["energy_last"] < r["energy_first"]  # 3 epochs already lower the training energy
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


FAKE_PEER = '''
import argparse, numpy as np
p = argparse.ArgumentParser()
for a in ("--input", "--output", "--epochs", "--steps", "--read-steps", "--eta", "--lr"):
    p.add_argument(a)
a = p.parse_args()
d = np.load(a.input, allow_pickle=False)
names = [str(n) for n in d["cue_names"]]
np.savez(a.output, first_call_seconds=1.0, jax_version="x", fabricpc_version="fake", seconds_train=2.0,
         settings=np.array([a.epochs, a.steps, a.read_steps]),
         **{f"seconds_read_{k}": 0.5 for k in names},
         **{f"pattern_{k}": (d["items"] if k.startswith("bottom") else -d["items"]) for k in names})
'''


def test_bench_pc_fabricpc_column_scores_the_peer_patterns_with_its_own_and_matched_settings(tmp_path, monkeypatch):
    """A stand-in peer (returns the items for the bottom-half cue and their negatives elsewhere)
    checks the wiring: its patterns are scored as varmem's, each run gets its own schedule, and the
    table shows the columns side by side."""
    import sys

    exp = load_experiment("bench_pc")
    fake = tmp_path / "fake_peer.py"
    fake.write_text(FAKE_PEER)
    monkeypatch.setattr(exp, "FABRICPC", fake)
    exp.main(["--smoke", "--output", str(tmp_path), "--fabricpc-python", sys.executable, "--fabricpc-matched",
              "--fabricpc-epochs", "7", "--fabricpc-steps", "11", "--fabricpc-read-steps", "13"])
    row = json.loads((tmp_path / exp.JSON_NAME).read_text())["rows"][0]
    own, matched = row["fabricpc"], row["fabricpc_matched"]
    assert (own["epochs"], own["steps"], own["read_steps"]) == (7, 11, 13)
    assert (matched["epochs"], matched["steps"], matched["read_steps"]) == (3, 5, 10)  # varmem's smoke schedule
    assert own["reads"]["bottom0.5"] == {"seconds": 0.5, "acc": 1.0, "mse": 0.0}
    assert own["reads"]["drop0.5"]["acc"] == 0.0 and own["reads"]["drop0.5"]["mse"] > 1  # (-x - x)² = 4x²
    assert own["train_ms_per_step"] == pytest.approx(1e3 * 2.0 / (7 * 11))
    assert own["compile_seconds"] == 1.0 and "pcx" not in row
    text = exp.table({**row, "_epochs": 3})
    assert "fabricpc 0.6.0, own settings" in text and "7 x 11, read 13" in text and "3 x 5, read 10" in text


_FAKE_OFFICIAL = '''
import argparse, json
import numpy as np
p = argparse.ArgumentParser()
p.add_argument("--input"); p.add_argument("--output")
a = p.parse_args()
d = np.load(a.input, allow_pickle=False)
s = json.loads(str(d["settings"]))
assert d["R0"].shape == (s["h_dim"], d["items"].shape[1]) and d["top"].shape == (s["h_dim"],)
reads = {}
for n in d["cue_names"]:
    n = str(n)
    fixed = d["fixed_" + n] if "fixed_" + n in d.files else None
    pattern = d["items"] if n.startswith("mask") else d["cue_" + n]  # masks perfect, noise left as is
    assert fixed is None or fixed.dtype == bool
    reads[n] = {"seconds": 1.0, "cpu_seconds": 1.0, "steps": 7, "pattern": pattern.tolist()}
json.dump({"torch": "fake", "write_seconds": 2.0, "write_cpu_seconds": 2.0, "write_steps": 3.0, "reads": reads},
          open(a.output, "w"))
'''


def test_bayespcn_hard_smoke_scores_varmem_rules_and_the_official_peer_s_patterns(tmp_path, monkeypatch):
    """Varmem's rules (a windowed one included) and a stand-in for the official code, whose
    patterns are the items for masked cues (accuracy 1) and the noisy cue itself for white noise
    (MSE = the noise's, 4·0.8² in model units, so accuracy 0)."""
    import sys

    exp = load_experiment("bayespcn_hard")
    fake = tmp_path / "fake_official.py"
    fake.write_text(_FAKE_OFFICIAL)
    monkeypatch.setattr(exp, "PEER", fake)
    out = tmp_path / "out"
    result = exp.main(["--smoke", "--output", str(out), "--rules", "official", "rtol1e-5_w10",
                       "--official-python", sys.executable])
    data = json.loads((out / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result)) and data["seed"] == 0
    rows = data["summary"][0]["rows"]
    assert set(rows) == {"official_code", "official", "rtol1e-5_w10"}
    official = rows["official_code"]["reads"]
    assert official["mask0.75"]["acc"] == official["mask0.25"]["acc"] == 1.0
    assert official["white0.8"]["acc"] == 0.0 and official["white0.8"]["mse"] == pytest.approx(4 * 0.8**2, rel=0.3)
    for r in rows.values():
        assert 1 <= r["write"]["steps"] <= 40
        assert all(0 <= v["acc"] <= 1 and math.isfinite(v["mse"]) for v in r["reads"].values())
    assert "mask0.75_start-1" in rows["official"]["reads"]
    speed = data["summary"][0]["speedup_vs_official"]
    assert speed["official"]["write_steps"] == 1.0 and "official_code" not in speed
    assert (out / exp.PNG_NAME).read_bytes()[:8] == PNG
