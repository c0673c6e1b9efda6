"""The factual-recall memories join ``varmem compare`` as optional contenders, outside the default run."""

from __future__ import annotations

import pytest
import torch

import varmem
from varmem.comparison import FAMILIES, default_contenders
from varmem.comparison.command import CompareConfig
from varmem.comparison.presets import ALL_FAMILIES, OPTIONAL_FAMILIES


def test_linear_and_mlp_memories_are_optional_contenders_that_compare_can_run():
    assert {"linear_am", "mlp_am"} <= set(OPTIONAL_FAMILIES) and not set(OPTIONAL_FAMILIES) & set(FAMILIES)
    assert ALL_FAMILIES == FAMILIES + OPTIONAL_FAMILIES
    contenders = default_contenders(16, families=["linear_am", "mlp_am"], dtype=torch.float64)
    assert [c.name for c in contenders] == ["linear_am", "mlp_am"]
    assert isinstance(contenders[0].build(16), varmem.LinearAssociativeMemory)
    assert isinstance(contenders[1].build(16), varmem.MLPAssociativeMemory)
    assert CompareConfig(memories=("linear_am",)).validate().memories == ("linear_am",)
    with pytest.raises(ValueError, match="memor"):
        CompareConfig(memories=("no_such_memory",)).validate()
    data = torch.rand(40, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = varmem.compare(contenders[:1], data, corruptions=(("white", 0.05),), sizes=(10,), queries=5,
                           progress=False)
    assert list(table["memory"]) == ["linear_am"] and float(table["retrieval_rate"].iloc[0]) == 1.0
