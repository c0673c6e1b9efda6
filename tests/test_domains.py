"""Value domains: what each memory expects, and the maps to and from data in [0, 1]."""

import pytest
import torch

import varmem
from varmem.domains import DOMAINS, SIGNED, SPIN, UNIT
from varmem.memory import registered_memories


def test_the_maps_round_trip():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.equal(UNIT.encode(x), x) and torch.equal(UNIT.decode(x), x)
    torch.testing.assert_close(SIGNED.encode(x), torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    torch.testing.assert_close(SIGNED.decode(SIGNED.encode(x)), x)
    assert torch.equal(SPIN.encode(x), torch.tensor([-1.0, -1.0, 1.0, 1.0]))  # thresholded at ½
    assert torch.equal(SPIN.represent(x), torch.tensor([0.0, 0.0, 1.0, 1.0]))  # what a spin memory can hold
    assert str(SPIN) == "{-1, +1}" and str(SIGNED) == "[-1, 1]" and set(DOMAINS) == {"unit", "signed", "spin"}
    assert SPIN.encode(x.double()).dtype == torch.float64


@pytest.mark.parametrize("name, domain", [("KernelDensityMemory", UNIT), ("BayesPCN", SIGNED),
                                          ("PredictiveCodingMemory", SIGNED), ("ClassicalHopfield", SPIN),
                                          ("DenseAssociativeMemory", SPIN), ("ModernHopfield", SIGNED),
                                          ("MemN2N", UNIT), ("LatentMemory", UNIT)])
def test_memories_declare_their_domain(name, domain):
    assert getattr(varmem, name).value_domain is domain


def test_every_memory_declares_a_known_domain_and_binary_memories_accept_its_values():
    for cls in registered_memories():
        assert cls.value_domain in DOMAINS.values(), cls.__name__
    hop = varmem.ClassicalHopfield(4)
    hop.write(SPIN.encode(torch.tensor([[0.9, 0.1, 0.6, 0.2]])))  # bipolar after the map
    with pytest.raises(ValueError, match="bipolar"):
        hop.write(torch.tensor([[0.9, 0.1, 0.6, 0.2]]))  # not without it
