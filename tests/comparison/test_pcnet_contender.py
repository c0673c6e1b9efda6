"""The optional ``pcnet`` contender of ``varmem compare`` (a composed predictive-coding network,
:class:`varmem.PCNetMemory`): selectable with ``--memories``, never in the default run, and it
recalls the digits it stores as the kernel-density contender (exact posterior) does."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import varmem
from varmem.cli import main
from varmem.comparison import FAMILIES, default_contenders
from varmem.comparison.presets import ALL_FAMILIES, FAMILY_CLASSES, OPTIONAL_FAMILIES


def test_pcnet_is_optional_and_selectable():
    assert "pcnet" in OPTIONAL_FAMILIES and "pcnet" not in FAMILIES and "pcnet" in ALL_FAMILIES
    assert FAMILY_CLASSES["pcnet"] is varmem.PCNetMemory
    assert "pcnet" not in [c.name for c in default_contenders(64)]
    (contender,) = default_contenders(64, families=["pcnet"])
    assert contender.methods == ("pcnet",) and contender.note
    with pytest.raises(ValueError, match="pcnet reads with"):
        default_contenders(64, families=["pcnet"], methods={"pcnet": ["pc"]})


@pytest.mark.slow  # about 9 s: 100 epochs of training at h = 256
def test_the_contender_recalls_half_dropped_digits_as_the_kernel_density_contender_does():
    data = varmem.datasets.load_digits()
    items = data.flat()[:5]
    cue, mask = varmem.corruptions.corrupt(items, "drop", 0.5, generator=torch.Generator().manual_seed(0),
                                           image_shape=data.image_shape)
    err = {}
    for contender in default_contenders(64, families=["kde", "pcnet"]):
        memory = contender.build(64)
        domain = memory.value_domain
        memory.write(domain.encode(items))
        method = contender.methods[0]
        read = memory.retrieve(domain.encode(cue), mask, method=method, **contender.options.get(method, {}))
        err[contender.name] = varmem.metrics.mse(domain.decode(read.pattern), items, mask, scored="unknown")
    assert bool((err["kde"] < 0.01).all()) and bool((err["pcnet"] < 0.01).all()), err  # the comparison's threshold


@pytest.mark.slow
def test_compare_command_runs_the_pcnet_memory(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--dataset", "digits", "--memories", "kde,pcnet", "--sizes", "5", "10", "--seeds", "0",
                 "--queries", "4", "--train-items", "0", "--corruption", "drop=0.5", "--examples", "0",
                 "--no-progress", "--quiet", "--output", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["memory"]) == {"kde", "pcnet"}
    recall = table.groupby("memory")["accuracy"].mean()
    assert recall["pcnet"] == recall["kde"] == 1.0  # half-dropped digits among 5 and 10
