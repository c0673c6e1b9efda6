"""The firing-rate experiment runs at smoke size and reproduces the official parameters' numbers."""

from __future__ import annotations

import json

import pytest
from _scripts import load_experiment


@pytest.mark.slow  # ~11 s (three figures, a 9 × 9 phase grid, an E/I sweep); the numbers are also unit-tested
def test_firing_rate_smoke(tmp_path):
    exp = load_experiment("firing_rate")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["smoke"] is True and data["versions"]["varmem"]
    for name in exp.FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = data["retrieval"]
    # issue 14 (official parameters, at N = 300 here): every memory recalled with max |x(10) - x̄| < 1e-2,
    # λ_max(J) < -0.9, random cues quiescent (reference mean rate 0.003), energy never increasing
    assert r["recalled"] == r["settings"]["P"] == 5
    assert r["max_error_all"] < 1e-2 and r["jacobian_max_all"] < -0.9 and r["overlap_cued_min"] > 0.99
    assert r["random_mean_rate_max"] < 0.01 and r["energy_increase_max"] <= 1e-9
    assert r["curves"]["cued"][-1] > 0.95 and abs(r["curves"]["others"][-1] - 0.2) < 0.05
    for name in ("inhibitory", "excitatory"):
        d = data["phase"][name]
        # PhaseDiagram.py's overlays bracket the numerical stability; the paper's markers fall on each side
        assert d["sufficient_implies_stable"] and d["unstable_implies_unstable"]
        assert d["markers"]["(0.2, 4.8)"] < 0 < d["markers"]["(0.8, 4.8)"]
        assert 0.2 < d["stable_fraction"] < 0.7
    sweep = data["balance"]["sweep"]
    # the E/I knob: every γ < 0 setting recalls all and quiets every random cue; the most excitatory loses both
    for row in sweep:
        if row["gamma"] < 0:
            assert row["recalled"] == 1.0 and row["quiescent"] == 1.0
    assert sweep[-1]["gamma"] > 0 and sweep[-1]["recalled"] == 0.0 and sweep[-1]["quiescent"] < 0.5
    c = data["correlated"]
    # HNN_Gen.py's dependent memories (pairwise overlap exactly r q N, r = 0.4): the correlated form makes
    # them exact equilibria, the independent form leaves cross-talk; the correlated form's γ turns positive
    assert c["correlated"]["equilibrium_residual"] < 1e-12 < c["independent"]["equilibrium_residual"]
    assert c["correlated"]["recalled"] == c["independent"]["recalled"] == 4
    assert c["correlated"]["synaptic"]["gamma"] > 0 > c["independent"]["synaptic"]["gamma"]
    assert c["independent"]["random_mean_rate_max"] < 0.01 < 0.5 < c["correlated"]["random_mean_rate_max"]
