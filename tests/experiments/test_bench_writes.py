"""The streaming-write benchmark (experiments/bench_writes.py) runs and records what it should
(no timing assertions: the ratios are printed, not tested)."""

from __future__ import annotations

import json

import pytest
import torch
from _scripts import load_experiment


def test_smoke_run_checks_equal_results_and_records_the_ratio(tmp_path):
    bench = load_experiment("bench_writes")
    result = bench.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["versions"]["varmem"] and data["device"] == "cpu"
    assert [r["N"] for r in data["rows"]] == list(bench.SMOKE_SIZES)
    for r in data["rows"]:
        assert r["varmem_seconds"] > 0 and r["cat_seconds"] > 0
        assert r["ratio_cat_over_varmem"] == pytest.approx(r["cat_seconds"] / r["varmem_seconds"])
    assert (tmp_path / bench.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_both_streams_store_the_items_in_order():
    bench = load_experiment("bench_writes")
    x = torch.randn(50, 4)
    for fn in bench.VARIANTS.values():
        assert torch.equal(fn(x), x)
