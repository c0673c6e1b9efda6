"""experiments/continual_recall.py and experiments/bench_bayespcn.py run and record what they should.

No timing assertions: speed targets live in the benchmark's printed ratios only.
"""

from __future__ import annotations

import json

import pytest
import torch
from _scripts import load_experiment

import varmem

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def continual():
    return load_experiment("continual_recall")


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_bayespcn")


def test_continual_smoke_writes_scores_claims_and_figures(continual, tmp_path):
    result = continual.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / continual.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))  # what is returned is what is written
    assert data["seed"] == 0 and data["seeds"] == [0] and data["device"] == "cpu"
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    assert data["checkpoints"] == [2, 4]
    assert set(data["results"]) == set(continual.MODELS)
    for per in data["results"].values():
        assert set(per) == set(continual.HEADLINE)
        for by_n in per.values():
            assert set(by_n) == {"2", "4"}
            for row in by_n.values():
                assert 0 <= row["acc_mean"] <= 1 and row["mse_mean"] >= 0 and row["acc_std"] == 0
    # the cue's own error is the corruption's: white noise 0.2 in [0, 1] units = 4·0.04 in [-1, 1] units
    white = data["results"]["kde"]["white0.2"]["4"]["cue_mse_mean"]
    assert abs(white - 0.16) < 0.02
    # a σ = 0.01 mixture holding 4 digits recalls each of them exactly (each is its own basin)
    for name in continual.HEADLINE:
        assert data["results"]["hopfield"][name]["4"]["acc_mean"] == 1.0
    # forgetting: β = 0 reuses the main K = 1 run, β = 0.5 was run; curves are indexed by age
    assert set(data["forgetting"]) == {"0.0", "0.5"}
    assert data["forgetting"]["0.0"]["white0.2"]["acc_all_mean"] == data["results"]["bayespcn_k1"]["white0.2"]["4"][
        "acc_mean"]
    assert data["forgetting"]["0.5"]["white0.2"]["age"] == [0, 2]
    assert data["forgetting"]["0.5"]["white0.2"]["age_last"] == [1, 3]
    statuses = {row["status"].split(" (")[0] for row in data["claims"]}
    assert "not reachable" in statuses and statuses <= {
        "reproduced", "not reproduced", "not reachable", "not reached in this run",
        "checked by the unit tests, not by this script"}
    for png in continual.FIGURES:
        assert (tmp_path / png).read_bytes()[:8] == PNG


def test_continual_corruption_names_and_age_curve(continual):
    assert continual.parse_corruption("drop0.75") == ("drop", 0.75)
    with pytest.raises(ValueError):
        continual.parse_corruption("blur0.1")
    assert continual.checkpoints(20) == [2, 4, 8, 16]
    # 6 items, bins of 2 by age: the newest two are recalled, the oldest two are not
    curve = continual.age_curve([1.0, 1.0, 0.0, 1.0, 0.0, 0.0], 0.01, 2)
    assert curve == {"age": [0, 2, 4], "age_last": [1, 3, 5], "acc": [1.0, 0.5, 0.0]}
    # 5 items in bins of 2: the oldest bin holds age 4 alone
    assert continual.age_curve([0.0] * 5, 0.01, 2)["age_last"] == [1, 3, 4]
    with pytest.raises(SystemExit):
        continual.parse_args(["--dataset", "cifar10"])  # needs --data-dir
    with pytest.raises(SystemExit):
        continual.parse_args(["--betas", "1.5"])


def test_continual_figures_have_plain_ticks_integer_ages_and_blue_unknown_pixels(continual, tmp_path,
                                                                                 monkeypatch):
    """Ticks read as numbers ("2", "0.75", never "2x10^0"), ages are whole writes, and a dropped pixel
    of the cue is drawn in the unknown colour, not black."""
    import matplotlib.pyplot as plt
    import numpy as np

    from varmem.experiment import UNKNOWN_COLOUR

    data = varmem.datasets.load_digits().subset(4)
    ns = [2, 4, 8, 16]
    per = {"drop0.5": {str(n): {"acc_mean": 1.0 - n / 32, "acc_std": 0.0, "mse_mean": 0.74 + n / 1000,
                                "mse_std": 0.001} for n in ns}}
    result = {"config": {"corruptions": ["drop0.5"], "examples": 2, "forget_corruptions": ["drop0.5"]},
              "results": {"kde": per},
              "forgetting": {"0.5": {"drop0.5": {"age": [0, 3, 6], "age_last": [2, 5, 7], "acc_mean": [1, 0.5, 0]}}}}
    cue = (data.flat()[:2] * 2 - 1)
    mask = torch.ones_like(cue, dtype=torch.bool)
    mask[:, :10] = False  # the first ten pixels are unknown; pixel 0 of a digit is dark (0 → -1)
    cue[:, :10] = -1.0
    raw = {"kde": {"drop0.5": {"cue": cue.tolist(), "mask": mask.tolist(), "recall": cue.tolist()}}}
    figures = []
    monkeypatch.setattr(continual.experiment, "save_figure", lambda fig, path, dpi=None: figures.append(fig))
    continual.plot_all(result, raw, data, tmp_path)
    curves, examples, forgetting = figures
    for fig in figures:
        fig.canvas.draw()
    labels = [t.get_text() for ax in curves.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert not any("10^" in t or "times" in t or "$" in t for t in labels), labels
    assert [t.get_text() for t in curves.axes[0].get_xticklabels()] == ["2", "4", "8", "16"]
    mse_labels = [t.get_text() for t in curves.axes[1].get_yticklabels() if t.get_text()]
    assert len(mse_labels) >= 2 and all(float(t) > 0 for t in mse_labels), mse_labels
    ax = forgetting.axes[0]
    ages = [float(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in ax.get_xticklabels()
            if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert ages and all(a.is_integer() and a >= 0 for a in ages), ages
    cue_image = examples.axes[1].images[0]  # row 0, column "cue"
    rgba = cue_image.to_rgba(cue_image.get_array())
    np.testing.assert_allclose(rgba[0, 0, :3], UNKNOWN_COLOUR)   # hidden pixel: blue
    np.testing.assert_allclose(rgba[1, 4, :3], (rgba[1, 4, 0],) * 3)  # pixel 12 is shown: grey
    original = examples.axes[0].images[0]
    assert not np.ma.is_masked(original.get_array())  # the original hides nothing: its dark pixel 0 is black
    np.testing.assert_allclose(original.to_rgba(original.get_array())[0, 0, :3], (0.0, 0.0, 0.0))
    for fig in figures:
        plt.close(fig)


def test_reference_energy_is_the_varmem_energy(bench):
    """The inline official algorithm and varmem.BayesPCN start from the same network and score
    activities identically (p_pred log-joint with every constant, K = 2 mixture)."""
    memory = varmem.BayesPCN(5, n_layers=3, h_dim=4, n_particles=2, sigma_obs=0.1, activation="gelu", seed=3)
    reference = bench.ReferenceBayesPCN(memory, steps=1)
    acts = memory.split_code(torch.randn(3, 5 + 2 * 4))
    energy, _, _ = memory.mixture_energy([a.unsqueeze(0) for a in acts])
    torch.testing.assert_close(reference.log_joint(acts), -energy, rtol=1e-10, atol=1e-10)
    # negative control: a reference built from a differently seeded network disagrees
    other = bench.ReferenceBayesPCN(varmem.BayesPCN(5, n_layers=3, h_dim=4, n_particles=2, sigma_obs=0.1,
                                                    activation="gelu", seed=4), steps=1)
    assert (other.log_joint(acts) + energy).abs().max() > 1e-3


def test_bench_smoke_records_ratios_recall_and_profiles(bench, tmp_path):
    result = bench.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["versions"]["varmem"] and data["target_ratio"] == 5.0
    assert [row["particles"] for row in data["rows"]] == [1, 2]
    for row in data["rows"]:
        for key in ("varmem_seconds_per_write", "reference_seconds_per_write", "varmem_seconds_per_read",
                    "reference_seconds_per_read", "write_ratio", "read_ratio"):
            assert row[key] > 0, key
        assert row["write_ratio"] == pytest.approx(row["reference_seconds_per_write"] / row["varmem_seconds_per_write"])
        assert set(row["recall"]) == {"white0.2", "mask0.25"}
        for r in row["recall"].values():
            accs = [r[w]["acc"] for w in ("varmem", "reference")]
            assert all(0 <= a <= 1 for a in accs)
            assert r["equal"] == (abs(accs[0] - accs[1]) <= data["settings"]["recall_tol"])
        assert row["equal_recall"] == all(r["equal"] for r in row["recall"].values())
        assert set(row["reference_write_phases_seconds"]) == {
            "map_inference", "importance_weights", "conjugate_update", "particle_copy"}
        assert row["varmem_write_profile"] and row["varmem_read_profile"]
    assert (tmp_path / bench.PNG_NAME).read_bytes()[:8] == PNG
