"""The DIA shared-attention layer: the parameter-count identity, the cell against its equations,
and the plain network it reduces to (reference §6.4).  DIA is not a memory: it is not registered."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import varmem
from varmem.contrib import DIALSTMCell, DIAResNet, DIAStage, dia_parameter_count
from varmem.memory import registered_memories


@pytest.mark.parametrize("channels, expected", [(16, 776), (64, 10784)])
def test_one_unit_has_2_5_c_squared_plus_8_5_c_parameters(channels, expected):
    """Reference §6.1 [ours/code]: 776 at C = 16 and 10 784 at C = 64 (= 2.5 C² + 8.5 C)."""
    cell = DIALSTMCell(channels)
    assert sum(p.numel() for p in cell.parameters()) == expected == 2.5 * channels**2 + 8.5 * channels


@pytest.mark.parametrize("blocks", [1, 3, 9])
def test_the_dia_parameters_of_a_network_do_not_grow_with_depth(blocks):
    widths = (16, 32, 64)
    net = DIAResNet(1, 10, widths, blocks_per_stage=blocks)
    assert net.dia_parameters() == dia_parameter_count(widths) == sum(2.5 * c**2 + 8.5 * c for c in widths) == 14392
    plain = DIAResNet(1, 10, widths, blocks_per_stage=blocks, attention=False)
    total = sum(p.numel() for p in net.parameters())
    assert total - sum(p.numel() for p in plain.parameters()) == 14392  # DIA adds exactly that, at any depth
    assert sum(isinstance(m, DIALSTMCell) for m in net.modules()) == 3  # one shared unit per stage


def test_the_cell_follows_its_equations_and_gates_lie_in_0_1():
    torch.manual_seed(0)
    cell = DIALSTMCell(8, reduction=2).double()
    s, h0, c0 = (torch.randn(5, 8, dtype=torch.float64) for _ in range(3))
    h, (h_again, c) = cell(s, (h0, c0))

    def bottleneck(seq, x):  # Linear -> ReLU -> Linear, written out
        return torch.relu(x @ seq[0].weight.T + seq[0].bias) @ seq[2].weight.T + seq[2].bias

    gates = bottleneck(cell.input_map, s) + bottleneck(cell.hidden_map, h0)
    i, f, g, o = gates[:, :8], gates[:, 8:16], gates[:, 16:24], gates[:, 24:]
    c_ref = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(h, torch.sigmoid(o) * torch.sigmoid(c_ref))
    assert h is h_again and bool(((h > 0) & (h < 1)).all())
    with pytest.raises(ValueError, match="divisible"):
        DIALSTMCell(10, reduction=4)


def test_with_gates_forced_to_one_the_stage_is_the_plain_residual_stage():
    torch.manual_seed(1)
    branches = [nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)]
    dia = DIAStage(branches, 4, attention=True)
    plain = DIAStage(branches, 4, attention=False)  # the same branch modules
    x = torch.randn(2, 4, 5, 5)
    assert not torch.allclose(dia(x), plain(x))
    assert dia.last_attention.shape == (3, 2, 4) and plain.last_attention is None

    class Ones(nn.Module):
        def forward(self, s, state=None):
            return torch.ones_like(s), (s, s)

    dia.cell = Ones()
    torch.testing.assert_close(dia(x), plain(x))


def test_dia_resnet_classifies_8x8_digits_shapes_and_is_not_a_memory():
    net = DIAResNet(1, 10, blocks_per_stage=2)
    out = net(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)
    assert all(s.last_attention.shape == (2, 3, c) for s, c in zip(net.stages, (16, 32, 64), strict=True))
    assert not any("DIA" in cls.__name__ for cls in registered_memories(package=None))
    assert not hasattr(varmem, "DIAResNet")  # optional: only under varmem.contrib
