"""Encoders ``q(z | x)`` and decoders ``p(x | z)`` sized by the data shape.

Every encoder maps flat data ``x [B, D]`` (``D = C·H·W`` for images) to the parameters of a
diagonal Gaussian over codes: ``(loc [B, L], scale [B, L])``.  Every decoder maps codes
``z [..., L]`` to the mean of the data ``[..., D]``, and is a sequence of *stages*
``x̂ = f_K(… f_1(z))`` (``decoder.stages``) so that iterative engines can run a predictive-coding
relaxation with one value node per stage.

=============  ===============================================================================
``"linear"``   ``q(z|x) = N(Ax + c, diag(exp(2u)))``;  ``x̂ = Wz + b`` (a linear-Gaussian
               decoder: the latent posterior under a kernel-density prior is in closed form)
``"dense"``    MLPs with ReLU hidden layers; decoder output squashed by ``output``
``"conv"``     stride-2 ``Conv2d`` stages (kernel 4, padding 1), then a linear head; the decoder
               mirrors it with ``ConvTranspose2d`` stages whose output sizes replay the encoder's
=============  ===============================================================================

All modules are ``PyroModule`` s (their parameters are module-local under
``pyro.settings.set(module_local_params=True)``, the mode varmem trains in).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

__all__ = ["ARCHITECTURES", "OUTPUTS", "Encoder", "Decoder", "build_coders"]

ARCHITECTURES: tuple[str, ...] = ("linear", "dense", "conv")
OUTPUTS: tuple[str, ...] = ("identity", "sigmoid")
_MIN_SCALE = 1e-4


def _conv_sizes(height: int, width: int, depth: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2, kernel-4, padding-1 convolution: ``⌊n/2⌋``."""
    sizes = [(height, width)]
    for _ in range(depth):
        h, w = sizes[-1]
        sizes.append(((h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1))
    return sizes


def _check_conv_shape(image_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"a conv coder needs image_shape (C, H, W), got {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    smallest = _conv_sizes(h, w, len(channels))[-1]
    if min(smallest) < 1:
        raise ValueError(f"{h}x{w} images are too small for {len(channels)} stride-2 conv stages")
    return c, h, w


class _Squash(nn.Module):
    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) if self.output == "sigmoid" else x


class _Unflatten(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], *self.shape)


class _UpConv(nn.Module):
    """``ConvTranspose2d`` (kernel 4, stride 2, padding 1) to an exact output size, then ReLU
    (or the output squash for the last stage, which also flattens)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], last: bool, output: str) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        self.size = size
        self.last = last
        self.squash = _Squash(output)

    def forward(self, h: Tensor) -> Tensor:
        batch = h.shape[:-3]
        h = h.reshape(-1, *h.shape[-3:])
        y = self.conv(h, output_size=list(self.size))
        if self.last:
            return self.squash(y).reshape(*batch, -1)
        return F.relu(y).reshape(*batch, *y.shape[-3:])


class _Conv(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return F.relu(self.conv(h))


class Encoder(PyroModule):
    """``x [B, in_dim] ↦ (loc [B, L], scale [B, L])`` of a diagonal Gaussian ``q(z | x)``.

    ``scale = softplus(·) + 1e-4`` (``exp`` of a free log-scale for ``"linear"``).

    Args:
        architecture: ``"linear"``, ``"dense"`` or ``"conv"``.
        data_shape: ``(D,)`` or ``(C, H, W)`` of one item (``"conv"`` needs ``(C, H, W)``).
        code_dim: ``L``.
        hidden: hidden widths (dense) or channels per conv stage (conv).
        in_channels_factor: the input holds this many stacked copies of an item (2 for the
            retrieval guide, whose input is ``[x ⊙ m, m]``).
    """

    def __init__(
        self,
        architecture: str,
        data_shape: Sequence[int],
        code_dim: int,
        hidden: Sequence[int] = (256,),
        *,
        in_channels_factor: int = 1,
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.data_shape = tuple(int(s) for s in data_shape)
        self.code_dim = code_dim
        self.factor = in_channels_factor
        dim = 1
        for s in self.data_shape:
            dim *= s
        self.in_dim = dim * in_channels_factor
        if architecture == "linear":
            body: nn.Module = nn.Identity()
            width = self.in_dim
        elif architecture == "dense":
            layers: list[nn.Module] = []
            width = self.in_dim
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            body = nn.Sequential(*layers)
        elif architecture == "conv":
            c, h, w = _check_conv_shape(self.data_shape, hidden)
            layers = [_Unflatten((c * in_channels_factor, h, w))]
            c_in = c * in_channels_factor
            for c_out in hidden:
                layers.append(_Conv(c_in, c_out))
                c_in = c_out
            layers.append(nn.Flatten(-3))
            body = nn.Sequential(*layers)
            hh, ww = _conv_sizes(h, w, len(hidden))[-1]
            width = c_in * hh * ww
        else:
            raise ValueError(f"unknown architecture {architecture!r}; choose from {list(ARCHITECTURES)}")
        self.body = body
        self.loc_head = nn.Linear(width, code_dim)
        self.scale_head = nn.Linear(width, code_dim)
        to_pyro_module_(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        raw = self.scale_head(h)
        scale = raw.exp() if self.architecture == "linear" else F.softplus(raw)
        return self.loc_head(h), scale + _MIN_SCALE


class Decoder(PyroModule):
    """``z [..., L] ↦ x̂ [..., D]``, the mean of ``p(x | z)``, as a sequence of ``stages``.

    Args:
        architecture: ``"linear"``, ``"dense"`` or ``"conv"``.
        data_shape: ``(D,)`` or ``(C, H, W)``.
        code_dim: ``L``.
        hidden: hidden widths (dense, used in reverse) or conv channels (conv, used in reverse).
        output: ``"identity"`` or ``"sigmoid"`` (data in ``[0, 1]``); ignored for ``"linear"``.
    """

    def __init__(
        self,
        architecture: str,
        data_shape: Sequence[int],
        code_dim: int,
        hidden: Sequence[int] = (256,),
        output: str = "sigmoid",
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose from {list(OUTPUTS)}")
        self.architecture = architecture
        self.data_shape = tuple(int(s) for s in data_shape)
        dim = 1
        for s in self.data_shape:
            dim *= s
        stages: list[nn.Module] = []
        if architecture == "linear":
            stages.append(nn.Linear(code_dim, dim))
        elif architecture == "dense":
            width = code_dim
            for h in reversed(tuple(hidden)):
                stages.append(nn.Sequential(nn.Linear(width, h), nn.ReLU()))
                width = h
            stages.append(nn.Sequential(nn.Linear(width, dim), _Squash(output)))
        elif architecture == "conv":
            c, h, w = _check_conv_shape(self.data_shape, hidden)
            sizes = _conv_sizes(h, w, len(hidden))
            chans = list(hidden)
            hh, ww = sizes[-1]
            stages.append(nn.Sequential(nn.Linear(code_dim, chans[-1] * hh * ww), nn.ReLU(),
                                        _Unflatten((chans[-1], hh, ww))))
            for k in range(len(chans) - 1, -1, -1):
                c_out = chans[k - 1] if k > 0 else c
                stages.append(_UpConv(chans[k], c_out, sizes[k], last=k == 0, output=output))
        else:
            raise ValueError(f"unknown architecture {architecture!r}; choose from {list(ARCHITECTURES)}")
        self.stages = nn.ModuleList(stages)
        to_pyro_module_(self)

    def forward(self, z: Tensor) -> Tensor:
        h = z
        for stage in self.stages:
            h = stage(h)
        return h


def build_coders(
    architecture: str,
    data_shape: Sequence[int],
    code_dim: int,
    hidden: Sequence[int],
    output: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Encoder, Decoder]:
    """An ``(Encoder, Decoder)`` pair of one architecture, on ``device`` with ``dtype``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {list(ARCHITECTURES)}")
    if architecture == "conv" and not hidden:
        raise ValueError("a conv coder needs at least one conv stage (hidden=(channels, ...))")
    enc = Encoder(architecture, data_shape, code_dim, hidden).to(device=device, dtype=dtype)
    dec = Decoder(architecture, data_shape, code_dim, hidden, output).to(device=device, dtype=dtype)
    return enc, dec
