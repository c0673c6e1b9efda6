"""The diffusion-memory experiment runs at smoke size and reproduces its identities (reference
wave2-papers §5: max |MMSE - MHN step| = 1.4e-16 / 1.6e-14; the annealed empirical denoiser lands
exactly on a training point for N = 5, 50, 500)."""

from __future__ import annotations

import json

from _scripts import load_experiment


def test_diffusion_memory_smoke(tmp_path):
    exp = load_experiment("diffusion_memory")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["smoke"] is True and data["device"] == "cpu"
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    for name in (exp.PNG_CIRCLE, exp.PNG_CURVE, exp.PNG_INPAINT):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ident = data["identities"]
    assert ident["max_abs_vs_hopfield_step"] < 1e-13  # reference 1.4e-16 / 1.6e-14 (float64 rounding)
    assert ident["max_abs_vs_kde_posterior_mean"] < 1e-10  # the bandwidth 1e-6 σ leaves O(1e-12)
    assert ident["max_abs_vs_hopfield_step_unequal_norms"] > 0.1  # negative control
    for row in data["ideal_end_on_items"]:  # reference: lands exactly on a training point
        assert row["max_distance_to_nearest_item"] < 1e-6, row
    for row in data["circle"]["rows"]:
        assert row["memorised_ideal"] == 1.0  # the empirical optimum only memorises
    digits = data["digits"]["results"]
    assert digits["ideal_posterior"]["recall"] == 1.0 and digits["exact_posterior_mean"]["recall"] == 1.0
