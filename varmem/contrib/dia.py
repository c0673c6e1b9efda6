"""DIA: one LSTM-gated channel-attention unit shared by all residual blocks of a CNN stage.

After Huang, Liang, Liang & Lin, "A Generic Shared Attention Mechanism for Various Backbone Neural
Networks" (arXiv 2210.16101; the AAAI-20 DIANet).  What was verified (reference §6): the abstract
(attention maps of different layers correlate, so one module is shared across layers and an LSTM
bridges them) and the official code's DIA-LSTM cell, described below and re-implemented here (no
code copied).  **Not an associative memory**: DIA is SE-style channel gating from a block's own
pooled features; it stores no patterns and has no keys, values, content-addressed retrieval or
capacity.  The LSTM state is a recurrent state across depth; sharing is across layers only.

For block ``t`` of a stage with residual-branch output ``X_t ∈ R^{C×H×W}`` and shortcut ``S_t``::

    s_t = GAP(X_t) ∈ R^C                                          (global average pool)
    [i; f; g; o] = W_ih(s_t) + W_hh(h_{t-1})                       (each W: C → C/r → 4C, ReLU between)
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
    h_t = σ(o) ⊙ σ(c_t)  ∈ (0, 1)^C                                (sigmoid, not tanh, on c_t)
    out_t = ReLU(X_t ⊙ h_t + S_t)

with ``h_0 = c_0 = 0`` [U: the official code's first-step state was not checked].  Parameters of one
unit (``r = 4``, biases on every linear map): two maps of ``C·C/4 + C/4 + C/4·4C + 4C``, i.e.
``2.5 C² + 8.5 C`` per stage (776 at ``C = 16``), **independent of the number of blocks**.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..validation import check_bool, check_positive_int

__all__ = ["DIALSTMCell", "DIAStage", "DIAResNet", "dia_parameter_count"]


def dia_parameter_count(channels: Sequence[int], reduction: int = 4) -> int:
    """The parameters of one DIA unit per stage, ``Σ_C 2 (C·C/r + C/r + (C/r)·4C + 4C)`` (two
    bottleneck maps with biases); for ``r = 4`` this is ``Σ_C (2.5 C² + 8.5 C)``."""
    total = 0
    for c in channels:
        hidden = c // reduction
        total += 2 * (c * hidden + hidden + hidden * 4 * c + 4 * c)
    return total


class DIALSTMCell(nn.Module):
    """The DIA-LSTM cell: ``(s [B, C], (h, c)) -> h_t, (h_t, c_t)`` (module docstring).

    Args:
        channels: ``C`` (divisible by ``reduction``).
        reduction: ``r``, the bottleneck ``C → C/r → 4C`` of both maps.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.reduction = check_positive_int(reduction, "reduction")
        if channels % reduction:
            raise ValueError(f"channels ({channels}) must be divisible by reduction ({reduction})")
        hidden = channels // reduction
        self.input_map = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 4 * channels))
        self.hidden_map = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 4 * channels))

    def forward(self, s: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if state is None:
            zero = s.new_zeros(s.shape)
            state = (zero, zero)
        h, c = state
        i, f, g, o = (self.input_map(s) + self.hidden_map(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.sigmoid(c)
        return h, (h, c)


class DIAStage(nn.Module):
    """Residual blocks ``out_t = ReLU(F_t(x) ⊙ h_t + S_t(x))`` sharing one :class:`DIALSTMCell`.

    Args:
        branches: the residual branches ``F_t`` (each ``[B, C_in, H, W] → [B, C, H', W']``).
        shortcuts: the shortcuts ``S_t`` (``None`` entries: identity); default all identity.
        channels: ``C``, the branches' output channels.
        reduction: the cell's bottleneck ``r``.
        attention: ``False`` gives the plain residual stage (``h_t = 1``, no cell).

    After a forward pass, ``last_attention`` is ``[T, B, C]``: the ``h_t`` of each block.
    """

    def __init__(self, branches: Sequence[nn.Module], channels: int,
                 shortcuts: Sequence[nn.Module | None] | None = None, reduction: int = 4,
                 attention: bool = True) -> None:
        super().__init__()
        if len(branches) == 0:
            raise ValueError("a stage needs at least one residual branch")
        shortcuts = [None] * len(branches) if shortcuts is None else list(shortcuts)
        if len(shortcuts) != len(branches):
            raise ValueError(f"{len(branches)} branches but {len(shortcuts)} shortcuts")
        self.branches = nn.ModuleList(branches)
        self.shortcuts = nn.ModuleList(nn.Identity() if s is None else s for s in shortcuts)
        self.attention = check_bool(attention, "attention")
        self.cell = DIALSTMCell(channels, reduction) if self.attention else None
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        state, gates = None, []
        for branch, shortcut in zip(self.branches, self.shortcuts, strict=True):
            out = branch(x)
            if self.cell is not None:
                h, state = self.cell(out.mean(dim=(-2, -1)), state)
                gates.append(h.detach())
                out = out * h[..., None, None]
            x = torch.relu(out + shortcut(x))
        self.last_attention = torch.stack(gates) if gates else None
        return x


def _branch(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))


def _projection(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    if c_in == c_out and stride == 1:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class DIAResNet(nn.Module):
    """A small CIFAR-style ResNet (basic blocks, 3 stages) with one shared DIA unit per stage.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        widths: channels of the stages (default 16, 32, 64: reference §6.4's demo).
        blocks_per_stage: ``n`` residual blocks in each stage (the DIA parameters do not grow with it).
        attention: ``False`` gives the same network without DIA (the baseline).
        reduction: the DIA bottleneck ``r``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64),
                 blocks_per_stage: int = 1, attention: bool = True, reduction: int = 4) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        n = check_positive_int(blocks_per_stage, "blocks_per_stage")
        widths = [check_positive_int(w, "widths entry") for w in widths]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages, c_in = [], widths[0]
        for i, c in enumerate(widths):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            branches = [_branch(c_in if t == 0 else c, c, s) for t, s in enumerate(strides)]
            shortcuts = [_projection(c_in if t == 0 else c, c, s) for t, s in enumerate(strides)]
            stages.append(DIAStage(branches, c, shortcuts, reduction=reduction, attention=attention))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(-2, -1)))

    def dia_parameters(self) -> int:
        """Number of parameters in the DIA units (0 without attention)."""
        return sum(p.numel() for s in self.stages if s.cell is not None for p in s.cell.parameters())
