"""The spiking low-rank experiment at its smoke size (K ≤ 64, one seed): JSON, figures and its checks.

No published number exists for this reconstruction; the checks are the brief's: the vertex-stability
identity (0 mismatches on all 2^10 vertices), the two engines agreeing on ≥ 95 % of final vertices, a
capacity line in N with R² ≥ 0.9 for both rules and a pseudo-inverse slope ≥ 2× the Hebbian one, Hebbian
completion within 0.1 of ClassicalHopfield on average and never above the pseudo-inverse rule.
"""

import json

import pytest
from _scripts import load_experiment

spiking_low_rank = load_experiment("spiking_low_rank")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("spiking_low_rank")
    return spiking_low_rank.main(["--smoke", "--output", str(out)]), out


def test_smoke_run_writes_json_and_figures_labelled_as_a_reconstruction(result):
    res, out = result
    saved = json.loads((out / spiking_low_rank.JSON_NAME).read_text())
    assert saved["seed"] == 0 and saved["config"]["smoke"] and "reconstruction" in saved["status"]
    assert set(saved["versions"]) >= {"python", "torch", "pyro", "varmem"}
    for name in spiking_low_rank.FIGURES:
        assert (out / name).stat().st_size > 10_000, name
    assert saved["raster"]["spikes"] > 0 and saved["raster"]["final_agree"]


def test_smoke_run_passes_its_checks(result):
    res, _ = result
    assert all(res["checks"].values()), res["checks"]
    assert all(r["mismatches"] == 0 for r in res["identity"])
    fits = res["capacity_fits"]["recall_capacity"]
    assert fits["pseudoinverse"]["slope_per_neuron"] > fits["hebbian"]["slope_per_neuron"] > 0
