"""The retrieval benchmark script (experiments/bench_retrieval.py) runs and records what it should.

No timing assertions: the speed targets live in the benchmark's printed ratios only.
"""

from __future__ import annotations

import json

import pytest
import torch
from _scripts import load_experiment


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_retrieval")


def test_smoke_run_writes_json_table_and_plot(bench, tmp_path, device):
    result = bench.main(["--smoke", "--output", str(tmp_path), "--device", str(device)])

    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))  # what is returned is what is written
    assert data["seed"] == 0
    for package in ("python", "torch", "varmem"):
        assert isinstance(data["versions"][package], str) and data["versions"][package]
    assert data["device"] == str(torch.device(str(device)))
    assert data["cpu_count"] >= 1 and data["torch_threads"] >= 1
    assert data["settings"]["dim"] == 64 and data["settings"]["batch"] == 256 and data["settings"]["steps"] == 1

    rows = data["rows"]
    assert [row["N"] for row in rows] == list(bench.SMOKE_SIZES)
    for row in rows:
        for key in (
            "varmem_seconds",
            "reference_seconds",
            "varmem_retrievals_per_second",
            "reference_retrievals_per_second",
            "throughput_ratio",
        ):
            assert row[key] > 0, key
        for key in ("varmem_peak_mb", "reference_peak_mb", "memory_ratio"):
            assert row[key] is not None and row[key] > 0, key
        assert row["memory_method"] in ("cuda_max_memory_allocated", "subprocess_vmhwm", "subprocess_ru_maxrss")
        # the equality check ran before timing and its result is recorded
        assert row["check_passed"] is True
        assert 0 <= row["relative_diff"] <= row["tolerance"] <= 1e-4
        assert row["max_abs_diff"] >= 0
        assert row["varmem_steps"] == row["reference_steps"] == 1
    assert data["all_checks_passed"] is True

    png = tmp_path / bench.PNG_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_is_the_fixed_point_step_with_the_cue_term(bench):
    gen = torch.Generator(device="cpu").manual_seed(1)
    items = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    cue = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    s, sigma = 0.8, 0.6
    z, steps = bench.reference_fixed_point(items, cue, s, sigma, steps=3)
    expected = cue
    for _ in range(3):  # written out with the explicit [B, N, D] differences
        w = (-((expected.unsqueeze(1) - items) ** 2).sum(-1) / (2 * s**2)).softmax(-1)
        expected = (sigma**2 * w @ items + s**2 * cue) / (sigma**2 + s**2)
    assert steps == 3
    torch.testing.assert_close(z, expected, rtol=1e-10, atol=1e-10)


def test_sizes_accept_scientific_notation(bench):
    args = bench.parse_args(["--sizes", "1e3", "2500", "--steps", "2"])
    assert args.sizes == [1000, 2500] and args.steps == 2
    assert bench.parse_args([]).sizes == list(bench.DEFAULT_SIZES)
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "1.5"])
