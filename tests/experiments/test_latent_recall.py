"""The latent-recall reproduction (experiments/latent_recall.py) runs and records what it should.

The smoke run is tiny (a 4-d code trained for a few hundred steps on 200 items, one memory of 20
items, 10 queries), so its numbers are checked for sanity, not against the paper: rates in
``[0, 1]``, every method and corruption present, the encoder-started methods at least at the chance
level on a mild corruption, and a negative control (a memory whose stored codes belong to other
items recalls nothing).  The protocol is checked by recording every ``retrieve`` and
``fit_precision`` call of the smoke run: each row runs the algorithm it is named after, every
method gets the same cue and the same mask (none, by default), and GMM* is fitted on items that
are never queried.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from _scripts import load_experiment

import varmem


@pytest.fixture(scope="module")
def script():
    return load_experiment("latent_recall")


@pytest.fixture(scope="module")
def recorded():
    """Every ``Memory.retrieve`` and ``LatentMemory.fit_precision`` call made while it is active."""
    calls: dict[str, list] = {"retrieve": [], "fit_precision": [], "write": []}
    retrieve = varmem.Memory.retrieve
    fit_precision, write = varmem.LatentMemory.fit_precision, varmem.LatentMemory.write

    def spy_retrieve(self, cue, mask=None, method=None, **options):
        calls["retrieve"].append((type(self).__name__, cue.detach().clone(), None if mask is None else mask.clone(),
                                  method, dict(options)))
        return retrieve(self, cue, mask, method, **options)

    def spy_fit_precision(self, items=None, **options):
        calls["fit_precision"].append((items.clone(), self.codes.clone(), dict(options)))
        return fit_precision(self, items, **options)

    def spy_write(self, items):
        calls["write"].append(items.clone())
        return write(self, items)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(varmem.Memory, "retrieve", spy_retrieve)
        mp.setattr(varmem.LatentMemory, "fit_precision", spy_fit_precision)
        mp.setattr(varmem.LatentMemory, "write", spy_write)
        yield calls


@pytest.fixture(scope="module")
def smoke(script, tmp_path_factory, recorded):
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


def test_rows_run_the_algorithms_they_are_named_after_on_the_same_cues(smoke, recorded):
    """Latent rows: BP-GMM = scheme "bp" (the released objective), MAP = "map", PC-GMM = "pc", all
    from the encoder (the engine default; no init given), MAP (prior mean) the only prior-mean
    start, hybrid from the retrieval guide.  Every pixel-space read of a batch of queries gets the
    same cue values and no mask (the default ``--cue-info fill``)."""
    latent = [c for c in recorded["retrieve"] if c[0] == "LatentMemory"]
    iterative = [(c[4].get("scheme"), c[4].get("init")) for c in latent if c[3] == "iterative"]
    assert set(iterative) == {("bp", None), ("map", None), ("pc", None), ("map", "prior_mean")}
    assert {c[4].get("start") for c in latent if c[3] == "hybrid"} == {"guide"}
    assert {c[3] for c in latent} == {"amortized", "fixed_point", "iterative", "hybrid", "learned_precision"}
    assert all(c[4]["precision"] is not None for c in latent if c[3] == "learned_precision")
    # 2 + 3 corruptions x (1 memory): one batch of queries each; every call in a batch sees one cue
    pixel = [c for c in recorded["retrieve"] if c[1].shape[-1] in (64, 784, 192)]
    assert all(c[2] is None for c in recorded["retrieve"])  # fill: nobody gets a mask
    batches: list[torch.Tensor] = []
    for c in pixel:
        if not any(b.shape == c[1].shape and torch.equal(b, c[1]) for b in batches):
            batches.append(c[1])
    assert len(batches) == 5, len(batches)
    readers = {c[0] for c in pixel}
    assert {"LatentMemory", "ModernHopfield", "MemN2N", "NTM"} <= readers


def test_gmm_star_is_fitted_on_a_memory_of_items_that_are_never_queried(smoke, recorded):
    """One fit per corruption and data set (5), each on a memory holding exactly the items it is
    fitted on, none of which is ever written to a queried memory."""
    fits = recorded["fit_precision"]
    assert len(fits) == 5
    fitted_sets = [items for items, _, _ in fits]
    queried = [w for w in recorded["write"] if not any(w.shape == f.shape and torch.equal(w, f) for f in fitted_sets)]
    assert queried  # the test memories
    for items, codes, options in fits:
        assert codes.shape[0] == items.shape[0]  # the memory holds the items it is fitted on
        assert callable(options["corruption"])
        for stored in queried:
            if stored.shape[-1] == items.shape[-1]:
                assert not (torch.cdist(items, stored) < 1e-9).any()


def test_every_method_gets_the_same_cue_information(script):
    """``fill``: the corrupted cue whole and no mask; ``mask``: hidden pixels 0 and the mask; the
    training corruption of the guide and GMM* presents cues the same way (``fill``: all observed)."""
    x = torch.rand(3, 64, generator=torch.Generator().manual_seed(0))
    cue, mask = varmem.corruptions.corrupt(x, "square", 4, image_shape=(1, 8, 8),
                                           generator=torch.Generator().manual_seed(1))
    filled, none = script.present(cue, mask, "fill")
    assert none is None and torch.equal(filled, cue) and bool((filled[~mask] == 0.5).all())
    zeroed, same = script.present(cue, mask, "mask")
    assert torch.equal(same, mask) and bool((zeroed[~mask] == 0).all()) and torch.equal(zeroed[mask], cue[mask])
    noisy, nothing_hidden = script.present(x + 0.1, torch.ones_like(mask), "mask")
    assert nothing_hidden is None and torch.equal(noisy, x + 0.1)

    def square(v, g):
        return varmem.corruptions.corrupt(v, "square", 4, image_shape=(1, 8, 8), generator=g)

    c, m = script.as_presented(square, "fill")(x, torch.Generator().manual_seed(1))
    assert bool(m.all()) and torch.equal(c, cue)
    c, m = script.as_presented(square, "mask")(x, torch.Generator().manual_seed(1))
    assert torch.equal(m, mask) and bool((c[~m] == 0).all())
    args = script.parse_args(["--smoke", "--cue-info", "mask"])
    assert args.cue_info == "mask"
    with pytest.raises(SystemExit):
        script.parse_args(["--cue-info", "grey"])
