"""The indexed-read benchmark (experiments/bench_indexed.py) runs at smoke size and records what it
should; with its sharp kernel the indexed read must already recall the exact read's items."""

from __future__ import annotations

import json

import pytest
from _scripts import load_experiment


def _check(tmp_path, argv, data):
    bench = load_experiment("bench_indexed")
    result = bench.main(["--smoke", "--output", str(tmp_path), *argv])
    saved = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert saved == json.loads(json.dumps(result))
    assert [(r["data"], r["N"]) for r in saved["rows"]] == [(d, 10_000) for d in data]
    for r in saved["rows"]:
        assert r["speedup"] == pytest.approx(r["exact_seconds"] / r["indexed_seconds"])
        assert r["agreement"] >= 0.95 and r["pattern_error_max"] < 1e-3  # sharp kernel: the top-k holds the mass
        assert len(r["log10_bound"]) == len(r["log10_true_neglected"]) == 4
        assert max(r["log10_bound"]) < -3 and r["fallback_fraction"] == 0  # under tol: no exact fallback
    assert (tmp_path / bench.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return bench


def test_smoke_run_compares_exact_and_indexed_reads(tmp_path):
    _check(tmp_path, [], ["clustered"])


@pytest.mark.slow
def test_smoke_run_on_mnist_features(tmp_path):
    bench = _check(tmp_path, ["--data", "clustered", "mnist"], ["clustered", "mnist"])
    codes = bench.mnist_features(64)  # principal components: variance decreasing, mean 1
    var = codes.double().var(0)
    assert codes.shape == (5000, 64) and var.mean() == pytest.approx(1.0, rel=1e-4) and (var.diff() <= 1e-5).all()
