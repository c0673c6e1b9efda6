"""Corruptions: statistics, exact geometry, reproducibility, layouts and errors."""

from __future__ import annotations

import math

import pytest
import torch

from varmem.corruptions import (
    CORRUPTIONS,
    bottom_rows_mask,
    channel_rotation,
    corrupt,
    pixel_drop,
    right_columns_mask,
    square_occlusion,
    white_noise,
)

RANDOM = ("white", "drop", "square")


def _images(generator, *shape):
    return torch.rand(*shape, generator=generator, device=generator.device)


def _seeded(seed):
    return torch.Generator(device=torch.get_default_device()).manual_seed(seed)


def test_white_noise_statistics(generator):
    x = _images(generator, 64, 3, 16, 16)
    std = 0.3
    y, mask = white_noise(x, std, generator=generator)
    n = x.numel()
    residual = y - x
    # standard errors: mean std/√n, sample std ≈ std/√(2n); allow 5 of them
    assert abs(residual.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(residual.std().item() - std) < 5 * std / math.sqrt(2 * n)
    assert mask.dtype == torch.bool and mask.shape == x.shape and bool(mask.all())
    assert y.min() < 0 and y.max() > 1  # not clipped
    y0, _ = white_noise(x, 0.0, generator=generator)
    assert torch.equal(y0, x) and y0.data_ptr() != x.data_ptr()


def test_pixel_drop_fraction_and_shared_channels(generator):
    x = _images(generator, 200, 3, 16, 16)
    p = 0.3
    y, mask = pixel_drop(x, p, generator=generator, fill=-1.0)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    assert torch.equal(mask[:, 0], mask[:, 1]) and torch.equal(mask[:, 0], mask[:, 2])
    n = 200 * 16 * 16  # pixels
    dropped = (~mask[:, 0]).double().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[mask], x[mask])
    assert bool((y[~mask] == -1.0).all())
    assert bool(pixel_drop(x, 0.0, generator=generator)[1].all())
    y1, m1 = pixel_drop(x, 1.0, generator=generator)
    assert not bool(m1.any()) and bool((y1 == 0).all())


def test_pixel_drop_flat_without_geometry_drops_entries_independently(generator):
    x = _images(generator, 4000, 12)
    y, mask = pixel_drop(x, 0.5, generator=generator)
    assert mask.shape == (4000, 12)
    frac = (~mask).double().mean().item()
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / mask.numel())
    per_channel = mask.reshape(4000, 3, 4)
    assert not torch.equal(per_channel[:, 0], per_channel[:, 1])  # entries, not pixels
    _, shared = pixel_drop(x, 0.5, generator=generator, image_shape=(3, 2, 2))
    shared = shared.reshape(4000, 3, 4)
    assert torch.equal(shared[:, 0], shared[:, 1]) and torch.equal(shared[:, 0], shared[:, 2])


@pytest.mark.parametrize("p, width, hidden", [(0.25, 16, 4), (0.3, 10, 3), (0.7, 10, 7), (0.29, 100, 29),
                                              (0.0, 8, 0), (1.0, 8, 8), (0.1, 8, 0)])
def test_right_columns_mask_geometry(generator, p, width, hidden):
    x = _images(generator, 3, 2, 5, width)
    y, mask = right_columns_mask(x, p, fill=0.25)
    assert bool(mask[..., : width - hidden].all())
    assert not bool(mask[..., width - hidden :].any())
    assert torch.equal(y[..., : width - hidden], x[..., : width - hidden])
    assert bool((y[..., width - hidden :] == 0.25).all())


def test_square_occlusion_geometry(generator):
    b, c, h, w, size = 300, 3, 12, 10, 4
    x = _images(generator, b, c, h, w)
    y, mask = square_occlusion(x, size, generator=generator)
    hidden = ~mask
    assert torch.equal(hidden.sum((1, 2, 3)), torch.full((b,), size * size * c))
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and torch.equal(hidden[:, 0], hidden[:, 2])
    rows = hidden[:, 0].any(2)  # [B, H]
    cols = hidden[:, 0].any(1)  # [B, W]
    tops, lefts = rows.int().argmax(1), cols.int().argmax(1)
    for i in range(b):  # independent rebuild of each square from its corner
        top, left = int(tops[i]), int(lefts[i])
        assert top + size <= h and left + size <= w
        expected = torch.zeros(h, w, dtype=torch.bool, device=hidden.device)
        expected[top : top + size, left : left + size] = True
        assert torch.equal(hidden[i, 0], expected)
    assert bool((y[hidden] == 0.5).all()) and torch.equal(y[mask], x[mask])
    # every admissible corner shows up (uniform over 9 × 7 positions, 300 draws)
    assert set(tops.tolist()) == set(range(h - size + 1))
    assert set(lefts.tolist()) == set(range(w - size + 1))


def test_square_occlusion_edge_sizes(generator):
    x = _images(generator, 5, 1, 6, 8)
    _, full_height = square_occlusion(x, 6, generator=generator)
    assert torch.equal((~full_height).sum((1, 2, 3)), torch.full((5,), 36))
    y0, none = square_occlusion(x, 0, generator=generator)
    assert bool(none.all()) and torch.equal(y0, x)


def test_channel_rotation_is_exact(generator):
    x = _images(generator, 4, 3, 5, 5)
    y, mask = channel_rotation(x)
    assert torch.equal(y[:, 0], x[:, 1]) and torch.equal(y[:, 1], x[:, 2]) and torch.equal(y[:, 2], x[:, 0])
    assert bool(mask.all()) and mask.shape == x.shape
    y2, _ = channel_rotation(x, 2)
    assert torch.equal(y2[:, 0], x[:, 2]) and torch.equal(y2[:, 1], x[:, 0])
    assert torch.equal(channel_rotation(x, -1)[0], y2)
    for channels in (2, 3, 4):
        z = _images(generator, 2, channels, 3, 3)
        out = z
        for _ in range(channels):
            out = channel_rotation(out)[0]
        assert torch.equal(out, z)


@pytest.mark.parametrize("name", RANDOM)
def test_reproducible_with_seeded_generators(generator, name):
    x = _images(generator, 6, 3, 8, 8)
    a, ma = corrupt(x, name, generator=_seeded(1))
    b, mb = corrupt(x, name, generator=_seeded(1))
    c, mc = corrupt(x, name, generator=_seeded(2))
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_input_untouched(generator, name):
    x = _images(generator, 4, 3, 8, 8)
    before = x.clone()
    y, mask = corrupt(x, name, generator=generator)
    assert torch.equal(x, before)
    assert y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_layouts_round_trip(generator, name):
    x4 = _images(generator, 5, 3, 6, 7)
    y4, m4 = corrupt(x4, name, generator=_seeded(3))
    yf, mf = corrupt(x4.reshape(5, -1), name, generator=_seeded(3), image_shape=(3, 6, 7))
    assert yf.shape == mf.shape == (5, 126)
    assert torch.equal(yf, y4.reshape(5, -1)) and torch.equal(mf, m4.reshape(5, -1))
    if name == "color":
        with pytest.raises(ValueError, match="at least 2 channels"):
            corrupt(x4[:, 0], name)
        return
    y1, m1 = corrupt(x4[:, :1], name, generator=_seeded(3))
    y3, m3 = corrupt(x4[:, 0], name, generator=_seeded(3))
    assert y3.shape == m3.shape == (5, 6, 7)
    assert torch.equal(y3, y1[:, 0]) and torch.equal(m3, m1[:, 0])


def test_corrupt_defaults(generator):
    x = _images(generator, 4, 3, 16, 16)
    noisy = corrupt(x, "white", generator=_seeded(0))[0]
    torch.testing.assert_close(noisy, white_noise(x, 0.2, generator=_seeded(0))[0])
    assert torch.equal(corrupt(x, "drop", generator=_seeded(0))[1], pixel_drop(x, 0.25, generator=_seeded(0))[1])
    _, mask = corrupt(x, "mask")
    assert torch.equal((~mask).sum((1, 2, 3)), torch.full((4,), 3 * 16 * 4))
    y, mask = corrupt(x, "square", generator=generator)
    assert torch.equal((~mask).sum((1, 2, 3)), torch.full((4,), 3 * 8 * 8))
    assert bool((y[~mask] == 0.5).all())
    assert torch.equal(corrupt(x, "color")[0], x[:, [1, 2, 0]])
    assert torch.equal(corrupt(x, "color", 2)[0], x[:, [2, 0, 1]])
    _, mask = corrupt(x, "mask", 0.5)
    assert not bool(mask[..., 8:].any()) and bool(mask[..., :8].all())
    assert CORRUPTIONS == ("white", "drop", "mask", "square", "color", "bottom")
    _, mask = corrupt(x, "bottom")  # Salvatori / PCX: the bottom half hidden
    assert not bool(mask[..., 8:, :].any()) and bool(mask[..., :8, :].all())


def test_errors(generator):
    x = _images(generator, 2, 3, 8, 8)
    with pytest.raises(ValueError, match="white, drop, mask, square, color, bottom"):
        corrupt(x, "blur")
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            pixel_drop(x, p)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            right_columns_mask(x, p)
    with pytest.raises(ValueError, match="std"):
        white_noise(x, -0.1)
    with pytest.raises(TypeError, match="floating"):
        white_noise((x * 255).long(), 0.1)
    with pytest.raises(TypeError, match="tensor"):
        pixel_drop(x.tolist(), 0.1)
    with pytest.raises(ValueError, match="shape"):
        pixel_drop(x[None], 0.1)
    flat = x.reshape(2, -1)
    needs_geometry = (
        lambda: right_columns_mask(flat, 0.2), lambda: square_occlusion(flat, 2), lambda: channel_rotation(flat),
    )
    for fn in needs_geometry:
        with pytest.raises(ValueError, match="needs image_shape"):
            fn()
    with pytest.raises(ValueError, match="does not match"):
        pixel_drop(x, 0.1, image_shape=(3, 4, 16))
    with pytest.raises(ValueError, match="192 per item"):
        pixel_drop(flat, 0.1, image_shape=(3, 8, 7))
    with pytest.raises(ValueError, match="image_shape"):
        pixel_drop(flat, 0.1, image_shape=(3, 64))
    with pytest.raises(ValueError, match=r"size must lie in \[0, 8\]"):
        square_occlusion(x, 9)
    with pytest.raises(TypeError, match="size"):
        square_occlusion(x, 2.5)
    with pytest.raises(TypeError, match="shift"):
        channel_rotation(x, 1.0)


def test_bottom_rows_mask_hides_floor_p_h_rows_whatever_the_layout():
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float64).reshape(2, 3, 5, 4)
    for p, k in ((0.0, 0), (0.2, 1), (0.5, 2), (0.6, 3), (1.0, 5)):
        y, mask = bottom_rows_mask(x, p, fill=-1.0)
        hidden = ~mask
        assert int(hidden.sum()) == 2 * 3 * k * 4  # ⌊p·H⌋ rows, every column and channel
        if k:
            assert bool(hidden[..., 5 - k:, :].all()) and bool((y[..., 5 - k:, :] == -1).all())
        assert torch.equal(y[mask], x[mask])
    yf, mf = bottom_rows_mask(x.reshape(2, -1), 0.5, image_shape=(3, 5, 4))
    assert torch.equal(yf, bottom_rows_mask(x, 0.5)[0].reshape(2, -1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bottom_rows_mask(x, 1.5)
