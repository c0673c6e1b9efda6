"""The latent-recall reproduction (experiments/latent_recall.py) runs and records what it should.

The smoke run is tiny (a 4-d code trained for a few hundred steps on 200 items, one memory of 20
items, 10 queries), so its numbers are checked for sanity, not against the paper: rates in
``[0, 1]``, every method and corruption present, the encoder-started methods at least at the chance
level on a mild corruption, and a negative control (a memory whose stored codes belong to other
items recalls nothing).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from _scripts import load_experiment


@pytest.fixture(scope="module")
def script():
    return load_experiment("latent_recall")


@pytest.fixture(scope="module")
def smoke(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent_recall")
    threads = torch.get_num_threads()
    try:
        result = script.main(["--smoke", "--output", str(out), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    return script, out, result


def test_smoke_json_structure(smoke):
    script, out, result = smoke
    data = json.loads((out / script.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))  # what is returned is what is written
    assert data["seeds"] == [0] and data["seed"] == 0
    for package in ("python", "torch", "pyro", "varmem"):
        assert isinstance(data["versions"][package], str) and data["versions"][package]
    assert data["device"] == "cpu"
    assert data["config"]["smoke"] is True and data["config"]["items"] == 20
    assert data["methods"] == list(script.METHODS)
    assert set(data["datasets"]) == {"mnist", "photos"}
    expected_corruptions = {"mnist": {"noise", "square"}, "photos": {"noise", "square", "color"}}
    for name, ds in data["datasets"].items():
        assert set(ds["summary"]) == expected_corruptions[name]
        assert len(ds["per_seed"]) == len(ds["info"]) == 1
        for corruption, table in ds["summary"].items():
            assert set(table) == set(script.METHODS), (name, corruption)
            for method, metrics in table.items():
                for key in script.METRICS:
                    mean, std = metrics[key]["mean"], metrics[key]["std"]
                    assert math.isfinite(mean) and std == 0.0, (name, corruption, method, key)
                    if key in ("rate", "nn", "rate_ref"):
                        assert 0.0 <= mean <= 1.0
                        # with 10 queries, rates are multiples of 1/10
                        assert abs(mean * 10 - round(mean * 10)) < 1e-9
                    else:
                        assert 0.0 <= mean <= 1.0  # pixel MSE of [0, 1] images
        masked = ds["masked"]
        assert masked["best"] in script.METHODS and masked["best_latent_method"] in script.LATENT_METHODS
        assert isinstance(masked["hybrid_is_best"], bool)
        # hybrid is the best iff no method beats its (rate, nn, -mse) on square-masked cues
        table = ds["summary"]["square"]

        key = {m: (v["rate"]["mean"], v["nn"]["mean"], -v["mse"]["mean"]) for m, v in table.items()}
        candidates = [m for m in script.METHODS if m != script.CONTROL]
        assert masked["hybrid_is_best"] == all(key["hybrid"] >= key[m] for m in candidates)
        nn = {m: (v["nn"]["mean"], -v["mse"]["mean"]) for m, v in table.items()}
        assert masked["hybrid_is_best_by_nn"] == all(nn["hybrid"] >= nn[m] for m in candidates)
        assert masked["best_by_nn"] in script.METHODS and masked["best_by_nn"] != script.CONTROL
        info = ds["info"][0]
        assert info["threshold_mean"] > 0 and info["vae_seconds"] > 0
        png = out / ds["figure"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_rates_reach_chance_level(smoke):
    """On noisy MNIST digits the encoder-started methods recall at least at the chance level 1/N."""
    _, _, result = smoke
    chance = result["chance_nn"]
    assert chance == pytest.approx(1 / 20)
    noise = result["datasets"]["mnist"]["summary"]["noise"]
    for method in ("hybrid", "VAE-GMM", "encoder", "GMM*"):
        assert noise[method]["nn"]["mean"] >= chance, method
    # these, unlike a random guess, recall most noisy digits even with a tiny VAE
    assert noise["VAE-GMM"]["nn"]["mean"] >= 0.5


def test_negative_control_is_at_chance_and_beaten(smoke):
    """A random stored item is right about 1/N of the time; the memory's methods beat it."""
    script, _, result = smoke
    noise = result["datasets"]["mnist"]["summary"]["noise"]
    control = noise[script.CONTROL]["nn"]["mean"]
    assert control <= 0.3  # 10 draws at p = 1/20: P(>= 4 hits) < 0.002 (and the draw is seeded)
    assert noise["VAE-GMM"]["nn"]["mean"] > control and noise["hybrid"]["nn"]["mean"] > control


def test_aggregate_mean_and_sample_std(script):
    per_seed = [{"c": {"m": {"rate": r, "nn": r, "mse": 0.1, "rate_ref": 1.0}}} for r in (0.2, 0.4, 0.6)]
    out = script.aggregate(per_seed)["c"]["m"]
    assert out["rate"]["mean"] == pytest.approx(0.4)
    assert out["rate"]["std"] == pytest.approx(0.2)  # sample std of (0.2, 0.4, 0.6)
    assert out["mse"]["std"] == pytest.approx(0.0)


def test_photo_patches_are_seeded_and_in_range(script):
    a = script.photo_patches(5, 8, "train", torch.Generator().manual_seed(3), torch.float32)
    b = script.photo_patches(5, 8, "train", torch.Generator().manual_seed(3), torch.float32)
    c = script.photo_patches(5, 8, "memory", torch.Generator().manual_seed(3), torch.float32)
    assert a.shape == (5, 3 * 8 * 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_bad_arguments_are_refused(script):
    with pytest.raises(SystemExit):
        script.parse_args(["--queries", "20", "--items", "10"])
    with pytest.raises(SystemExit):
        script.parse_args(["--memories", "0"])
