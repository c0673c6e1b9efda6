"""The spiking low-rank memory in ``varmem compare``: selectable by name, not in the default run, and its
two reads run end to end on 8×8 digits (MSE-scored in [0, 1] units like every other memory)."""

from __future__ import annotations

import pytest

import varmem
from varmem.comparison import FAMILIES, default_contenders
from varmem.comparison.command import CompareConfig
from varmem.comparison.presets import ALL_FAMILIES, FAMILY_CLASSES, OPTIONAL_FAMILIES


def test_spiking_is_selectable_but_not_a_default_contender():
    assert "spiking" in OPTIONAL_FAMILIES and "spiking" in ALL_FAMILIES and "spiking" not in FAMILIES
    assert "spiking" not in [c.name for c in default_contenders(64)]
    assert CompareConfig().memories == FAMILIES
    (contender,) = default_contenders(64, families=["spiking"])
    assert contender.methods == ("latent",) and "reconstruction" in contender.note
    assert FAMILY_CLASSES["spiking"].methods == ("latent", "spiking")
    assert CompareConfig(memories=("spiking",), dataset="digits").validate().memories == ("spiking",)
    with pytest.raises(ValueError, match="spiking reads with latent, spiking"):
        CompareConfig(memories=("spiking",), methods={"spiking": "exact"}, dataset="digits").validate()


def test_compare_runs_both_reads_of_the_spiking_memory():
    """Pseudo-inverse weights on 10 binarised 8×8 digits (K = 64): both reads complete cues with 10 % white
    noise (accuracy ≥ 0.5 at N = 10); the classical Hebbian network beside them, a negative control on these
    correlated items, stays ≤ 0.5."""
    data = varmem.datasets.load_digits()
    contenders = default_contenders(64, families=["spiking", "classical"], methods={"spiking": ["latent", "spiking"]})
    table = varmem.compare(contenders, data.flat(), image_shape=data.image_shape, corruptions={"white": 0.1},
                           sizes=(10,), seeds=(0,), queries=10, progress=False).set_index(["memory", "method"])
    print(table["accuracy"])
    assert table.loc[("spiking", "latent"), "accuracy"] >= 0.5
    assert table.loc[("spiking", "spiking"), "accuracy"] >= 0.5
    assert table.loc[("classical", "sync"), "accuracy"] <= 0.5
