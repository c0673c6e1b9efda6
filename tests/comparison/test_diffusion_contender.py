"""The optional ``diffusion`` contender of ``varmem compare``: selectable with ``--memories``, never
in the default run, and it recalls the digits it stores (the kernel-density contender, which reads
the same posterior in closed form, is the reference)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import varmem
from varmem.cli import main
from varmem.comparison import FAMILIES, default_contenders
from varmem.comparison.presets import ALL_FAMILIES, OPTIONAL_FAMILIES


def test_diffusion_is_optional_and_selectable():
    assert "diffusion" in OPTIONAL_FAMILIES and "diffusion" not in FAMILIES and "diffusion" in ALL_FAMILIES
    assert "diffusion" not in [c.name for c in default_contenders(64)]
    (contender,) = default_contenders(64, families=["diffusion"])
    assert contender.methods == ("diffusion",) and contender.note
    picked = default_contenders(64, families=["diffusion"], methods={"diffusion": ["fixed_point"]})
    assert picked[0].methods == ("fixed_point",)
    with pytest.raises(ValueError, match="diffusion reads with"):
        default_contenders(64, families=["diffusion"], methods={"diffusion": ["exact"]})


def test_the_contender_recalls_half_dropped_digits_as_the_kernel_density_contender_does():
    data = varmem.datasets.load_digits()
    items = data.flat()[:10]
    cue, mask = varmem.corruptions.corrupt(items, "drop", 0.5, generator=torch.Generator().manual_seed(0),
                                           image_shape=data.image_shape)
    reads = {}
    for contender in default_contenders(64, families=["kde", "diffusion"]):
        memory = contender.build(64)
        domain = memory.value_domain
        memory.write(domain.encode(items))
        method = contender.methods[0]
        reads[contender.name] = memory.retrieve(domain.encode(cue), mask, method=method,
                                                **contender.options.get(method, {}))
    assert torch.equal(reads["diffusion"].index, torch.arange(10))
    assert torch.equal(reads["kde"].index, reads["diffusion"].index)


@pytest.mark.slow
def test_compare_command_runs_the_diffusion_memory(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--dataset", "digits", "--memories", "kde,diffusion", "--sizes", "10", "--seeds", "0",
                 "--queries", "4", "--train-items", "0", "--corruption", "drop=0.5", "--examples", "0",
                 "--no-progress", "--quiet", "--output", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["memory"]) == {"kde", "diffusion"}
    recall = table.groupby("memory")["accuracy"].mean()
    assert recall["diffusion"] == recall["kde"] == 1.0  # half-dropped digits among 10
