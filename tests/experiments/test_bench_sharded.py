"""The sharded-read benchmark (experiments/bench_sharded.py) runs on 1 and 2 ranks and records what
it should (each sharded read is checked inside the script against the single-process read; the
ratios are printed, not tested)."""

from __future__ import annotations

import json

import pytest
from _scripts import load_experiment


def test_smoke_run_records_weak_and_strong_scaling(tmp_path):
    bench = load_experiment("bench_sharded")
    result = bench.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["versions"]["varmem"]
    assert [(r["mode"], r["W"]) for r in data["rows"]] == [("weak", 1), ("weak", 2), ("strong", 1), ("strong", 2)]
    for r in data["rows"]:
        assert r["N"] == (2_000 * r["W"] if r["mode"] == "weak" else 4_000)
        assert r["speedup"] == pytest.approx(r["single_seconds"] / r["sharded_seconds"])
        assert 0 <= r["comm_share"] <= 1 and r["max_pattern_error"] <= 1e-4
    assert (tmp_path / bench.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_item_rows_are_the_same_whoever_draws_them():
    bench = load_experiment("bench_sharded")
    whole = bench.item_rows(0, 40_000, 3, 7)
    assert whole.shape == (40_000, 3)
    assert (bench.item_rows(16_000, 33_000, 3, 7) == whole[16_000:33_000]).all()
