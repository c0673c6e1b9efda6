"""Corrupted cues for retrieval experiments.

Every corruption takes a batch ``x`` laid out as ``[B, C, H, W]``, ``[B, H, W]`` (one channel) or
flat ``[B, D]`` with ``image_shape=(C, H, W)``, and returns ``(corrupted, mask)``, both in ``x``'s
shape; ``mask`` is bool with ``True`` = known (observed) entry.  ``x`` is never modified.
Randomness comes only from ``generator`` (same seed → same output); random numbers are drawn on
the generator's device and moved to ``x``'s.

=========  ===============================================  ==================  =============
name       corruption                                       level               default
=========  ===============================================  ==================  =============
white      ``x + std·ε``, ``ε ~ N(0, 1)``, not clipped       ``std``             0.2
drop       each pixel dropped with probability ``p``        ``p``               0.25
mask       right-most ``⌊p·W⌋`` columns hidden               ``p``               0.25
bottom     bottom ``⌊p·H⌋`` rows hidden (Salvatori, PCX)     ``p``               0.5
square     one ``size × size`` grey square per image        ``size``            ``H // 2``
color      cyclic channel shift (R←G, G←B, B←R)             ``shift``           1
=========  ===============================================  ==================  =============
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import torch
from torch import Tensor

from .validation import check_finite, check_int, check_unit_interval

__all__ = [
    "CORRUPTIONS",
    "white_noise",
    "pixel_drop",
    "right_columns_mask",
    "bottom_rows_mask",
    "square_occlusion",
    "channel_rotation",
    "corrupt",
]

CORRUPTIONS: tuple[str, ...] = ("white", "drop", "mask", "square", "color", "bottom")

_ImageShape = Sequence[int] | None


# --------------------------------------------------------------------------------------------
# Validation and layout helpers
# --------------------------------------------------------------------------------------------


def _check_batch(x: Any) -> Tensor:
    """``x`` must be a floating tensor with 2, 3 or 4 dimensions."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"x must have shape [B, C, H, W], [B, H, W] or [B, D], got {tuple(x.shape)}")
    return x


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(operator.index(s) for s in image_shape)
    except TypeError:
        raise TypeError(f"image_shape must be three integers (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    return shape  # type: ignore[return-value]


def _as_images(x: Any, image_shape: _ImageShape, *, geometry: bool = True) -> Tensor:
    """View ``x`` as ``[B, C, H, W]``.

    Flat ``[B, D]`` input needs ``image_shape`` unless ``geometry`` is False, in which case it is
    seen as ``[B, 1, 1, D]`` (every entry its own pixel).
    """
    x = _check_batch(x)
    batch = x.shape[0]
    if x.dim() == 2 and image_shape is None:
        if geometry:
            raise ValueError(f"flat input {tuple(x.shape)} needs image_shape=(C, H, W) for this corruption")
        return x.reshape(batch, 1, 1, x.shape[1])
    implied = {4: tuple(x.shape[1:]), 3: (1, *x.shape[1:])}.get(x.dim())
    shape = implied if image_shape is None else _check_image_shape(image_shape)
    if implied is not None and tuple(shape) != implied:
        raise ValueError(f"image_shape {tuple(shape)} does not match x of shape {tuple(x.shape)}")
    if math.prod(shape) != x[0].numel():
        raise ValueError(f"image_shape {tuple(shape)} has {math.prod(shape)} entries but x has {x[0].numel()} per item")
    return x.reshape(batch, *shape)




def _rand(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``U[0, 1)`` of ``shape`` drawn on the generator's device, returned on ``like``'s."""
    device = like.device if generator is None else generator.device
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def _randint(high: int, shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform integers in ``[0, high)`` of ``shape`` on ``like``'s device."""
    device = like.device if generator is None else generator.device
    return torch.randint(0, high, tuple(shape), generator=generator, device=device).to(like.device)


def _apply_pixel_mask(x4: Tensor, known: Tensor, fill: float, out_shape: torch.Size) -> tuple[Tensor, Tensor]:
    """Fill the pixels where ``known`` (``[B, H, W]`` bool) is False in every channel of ``x4``."""
    mask = known[:, None, :, :].expand_as(x4)
    corrupted = torch.where(mask, x4, fill)
    return corrupted.reshape(out_shape), mask.contiguous().reshape(out_shape)


# --------------------------------------------------------------------------------------------
# The corruptions
# --------------------------------------------------------------------------------------------


def white_noise(x: Tensor, std: float, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``x + std·ε`` with ``ε ~ N(0, I)`` (not clipped); the mask is all True."""
    x = _check_batch(x)
    try:
        std = float(std)
    except (TypeError, ValueError):
        raise TypeError(f"std must be a number, got {std!r}") from None
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be finite and >= 0, got {std!r}")
    device = x.device if generator is None else generator.device
    noise = torch.randn(tuple(x.shape), generator=generator, device=device, dtype=x.dtype).to(x.device)
    return x + std * noise, torch.ones(x.shape, dtype=torch.bool, device=x.device)


def pixel_drop(
    x: Tensor, p: float, *, generator: torch.Generator | None = None, fill: float = 0.0,
    image_shape: _ImageShape = None,
) -> tuple[Tensor, Tensor]:
    """Drop each pixel (all its channels together) i.i.d. with probability ``p``; set it to ``fill``.

    Flat ``[B, D]`` input without ``image_shape`` drops every entry independently.
    """
    p = check_unit_interval(p, "p")
    fill = check_finite(fill, "fill")
    x4 = _as_images(x, image_shape, geometry=False)
    b, _, h, w = x4.shape
    known = _rand((b, h, w), generator, x4) >= p  # P(dropped) = P(u < p) = p
    return _apply_pixel_mask(x4, known, fill, x.shape)


def right_columns_mask(
    x: Tensor, p: float, *, fill: float = 0.0, image_shape: _ImageShape = None
) -> tuple[Tensor, Tensor]:
    """Hide the right-most ``k = ⌊p·W⌋`` columns of every image (set to ``fill``)."""
    return _hide_last_lines(x, p, fill, image_shape, axis=3)


def bottom_rows_mask(
    x: Tensor, p: float = 0.5, *, fill: float = 0.0, image_shape: _ImageShape = None
) -> tuple[Tensor, Tensor]:
    """Hide the bottom ``k = ⌊p·H⌋`` rows of every image (set to ``fill``): the half-image cue of
    Salvatori et al. (2021) and of PCX's associative-memory example at ``p = 0.5``."""
    return _hide_last_lines(x, p, fill, image_shape, axis=2)


def _hide_last_lines(x: Tensor, p: float, fill: float, image_shape: _ImageShape, axis: int) -> tuple[Tensor, Tensor]:
    """Hide the last ``k = ⌊p·L⌋`` rows (``axis=2``, ``L = H``) or columns (``axis=3``, ``L = W``)."""
    p = check_unit_interval(p, "p")
    fill = check_finite(fill, "fill")
    x4 = _as_images(x, image_shape)
    b, _, h, w = x4.shape
    n = x4.shape[axis]
    k = math.floor(p * n + 1e-9)  # tolerate p·L landing just below an integer
    kept = torch.arange(n, device=x4.device) < n - k  # [L]
    known = kept[:, None] if axis == 2 else kept[None, :]
    return _apply_pixel_mask(x4, known.expand(b, h, w), fill, x.shape)


def square_occlusion(
    x: Tensor, size: int, *, generator: torch.Generator | None = None, fill: float = 0.5,
    image_shape: _ImageShape = None,
) -> tuple[Tensor, Tensor]:
    """Cover one ``size × size`` square per image, at a uniform position fully inside it, with ``fill``.

    The top-left corner ``(t, l)`` is uniform on ``{0..H-size} × {0..W-size}``; pixel ``(i, j)`` is
    hidden iff ``t ≤ i < t + size`` and ``l ≤ j < l + size``.
    """
    size = check_int(size, "size")
    fill = check_finite(fill, "fill")
    x4 = _as_images(x, image_shape)
    b, _, h, w = x4.shape
    if not 0 <= size <= min(h, w):
        raise ValueError(f"size must lie in [0, {min(h, w)}] for {h}x{w} images, got {size}")
    top = _randint(h - size + 1, (b, 1), generator, x4)
    left = _randint(w - size + 1, (b, 1), generator, x4)
    rows = torch.arange(h, device=x4.device)
    cols = torch.arange(w, device=x4.device)
    in_rows = (rows >= top) & (rows < top + size)  # [B, H]
    in_cols = (cols >= left) & (cols < left + size)  # [B, W]
    hidden = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
    return _apply_pixel_mask(x4, ~hidden, fill, x.shape)


def channel_rotation(x: Tensor, shift: int = 1, *, image_shape: _ImageShape = None) -> tuple[Tensor, Tensor]:
    """Cyclic channel permutation ``out[c] = x[(c + shift) mod C]`` (R←G, G←B, B←R for ``shift=1``).

    Needs ``C ≥ 2``.  The mask is all True: the values are observed, only wrong.
    """
    shift = check_int(shift, "shift")
    x4 = _as_images(x, image_shape)
    if x4.shape[1] < 2:
        raise ValueError(f"channel_rotation needs at least 2 channels, got C={x4.shape[1]}")
    rotated = torch.roll(x4, shifts=-shift, dims=1)
    return rotated.reshape(x.shape), torch.ones(x.shape, dtype=torch.bool, device=x.device)


def corrupt(
    x: Tensor, name: str, level: float | int | None = None, *, generator: torch.Generator | None = None,
    image_shape: _ImageShape = None,
) -> tuple[Tensor, Tensor]:
    """Apply the corruption ``name`` (one of :data:`CORRUPTIONS`) at ``level`` (see the module table)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names are {', '.join(CORRUPTIONS)}")
    if name == "white":
        return white_noise(x, 0.2 if level is None else level, generator=generator)
    if name == "drop":
        return pixel_drop(x, 0.25 if level is None else level, generator=generator, image_shape=image_shape)
    if name == "mask":
        return right_columns_mask(x, 0.25 if level is None else level, image_shape=image_shape)
    if name == "bottom":
        return bottom_rows_mask(x, 0.5 if level is None else level, image_shape=image_shape)
    if name == "square":
        size = _as_images(x, image_shape).shape[2] // 2 if level is None else level
        return square_occlusion(x, size, generator=generator, image_shape=image_shape)
    return channel_rotation(x, 1 if level is None else level, image_shape=image_shape)
