"""Metrics against independent computations (explicit loops, numpy, torch.cdist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varmem.metrics import SCORED, mse, nearest_item, recall_accuracy, recalled, retrieval_rate


def _rtol() -> float:
    return 1e-12 if torch.get_default_dtype() == torch.float64 else 1e-5


def _loop_mse(r: np.ndarray, t: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Per-item mean of (r - t)² over the entries where ``sel`` is True, item by item, entry by entry."""
    out = []
    for b in range(r.shape[0]):
        total, count = 0.0, 0
        for rv, tv, s in zip(r[b].ravel(), t[b].ravel(), sel[b].ravel(), strict=True):
            if s:
                total += (rv - tv) ** 2
                count += 1
        out.append(total / count)
    return np.array(out)


@pytest.fixture
def pair(generator):
    r = torch.rand(5, 2, 3, 4, generator=generator, device=generator.device)
    t = torch.rand(5, 2, 3, 4, generator=generator, device=generator.device)
    mask = torch.rand(5, 2, 3, 4, generator=generator, device=generator.device) < 0.5
    mask[:, 0, 0, 0] = True  # every item has known and unknown entries
    mask[:, 0, 0, 1] = False
    return r, t, mask


@pytest.mark.parametrize("scored", SCORED)
def test_mse_matches_loop(pair, scored):
    r, t, mask = pair
    m = mask.cpu().numpy()
    sel = {"all": np.ones_like(m), "known": m, "unknown": ~m}[scored]
    expected = _loop_mse(r.cpu().numpy(), t.cpu().numpy(), sel)
    got = mse(r, t, mask=mask, scored=scored)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=_rtol())


def test_mse_layouts_and_broadcast_mask(pair):
    r, t, mask = pair
    flat = mse(r.reshape(5, -1), t.reshape(5, -1), mask=mask.reshape(5, -1), scored="unknown")
    torch.testing.assert_close(flat, mse(r, t, mask=mask, scored="unknown"))
    # a mask of one item's shape applies to every item
    one = mask[0]
    expected = _loop_mse(r.cpu().numpy(), t.cpu().numpy(), np.broadcast_to(one.cpu().numpy(), r.shape))
    np.testing.assert_allclose(mse(r, t, mask=one, scored="known").cpu().numpy(), expected, rtol=_rtol())
    # 1-D: each item is a scalar
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 5.0])
    torch.testing.assert_close(mse(a, b), torch.tensor([0.0, 4.0, 4.0]))


def test_mse_unscored_nan_is_ignored_scored_nan_is_an_error(pair):
    r, t, mask = pair
    r_nan = torch.where(mask, r, torch.nan)
    torch.testing.assert_close(mse(r_nan, t, mask=mask, scored="known"), mse(r, t, mask=mask, scored="known"))
    with pytest.raises(ValueError, match="NaN"):
        mse(r_nan, t, mask=mask, scored="unknown")
    with pytest.raises(ValueError, match="NaN"):
        mse(r_nan, t)


def test_mse_errors(pair):
    r, t, mask = pair
    full = mask.clone()
    full[1] = True
    full[3] = True
    with pytest.raises(ValueError, match=r"2 of 5 items have no 'unknown' entries.*\[1, 3\]"):
        mse(r, t, mask=full, scored="unknown")
    with pytest.raises(ValueError, match="scored must be one of all, unknown, known"):
        mse(r, t, mask=mask, scored="hidden")
    with pytest.raises(ValueError, match="needs a mask"):
        mse(r, t, scored="unknown")
    with pytest.raises(ValueError, match="same shape"):
        mse(r, t[:, :1])
    with pytest.raises(TypeError, match="bool"):
        mse(r, t, mask=mask.long(), scored="known")
    with pytest.raises(ValueError, match="broadcast"):
        mse(r, t, mask=mask[:, :, :, :2], scored="known")
    with pytest.raises(TypeError, match="floating"):
        mse(r.long(), t)
    with pytest.raises(ValueError, match="empty"):
        mse(r[:0], t[:0])


def test_recalled_threshold_is_strict():
    target = torch.zeros(4, 8)
    c = torch.tensor([0.0, 0.0625, 0.125, 0.5])  # mse = c² = 0, 1/256, 1/64, 1/4 (exact in binary)
    retrieved = target + c[:, None]
    torch.testing.assert_close(mse(retrieved, target), c**2)
    assert recalled(retrieved, target, threshold=0.015625).tolist() == [True, True, False, False]
    assert recalled(retrieved, target, threshold=0.016).tolist() == [True, True, True, False]
    assert recalled(retrieved, target).tolist() == [True, True, False, False]  # default 0.01
    assert recall_accuracy(retrieved, target, threshold=0.016) == 0.75
    assert isinstance(recall_accuracy(retrieved, target), float)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[:, :4] = False
    bad = retrieved.clone()
    bad[:, 4:] = 10.0  # wrong only on the known half
    assert recall_accuracy(bad, target, threshold=0.016, mask=mask, scored="unknown") == 0.75
    assert recall_accuracy(bad, target, threshold=0.016, mask=mask, scored="known") == 0.0
    for bad_threshold in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            recalled(retrieved, target, threshold=bad_threshold)


@pytest.mark.parametrize("chunk_size", [None, 1, 10, 103, 500])
def test_nearest_item_matches_cdist(generator, chunk_size):
    x = torch.randn(7, 5, generator=generator, device=generator.device)
    stored = torch.randn(103, 5, generator=generator, device=generator.device)
    index, distance = nearest_item(x, stored, chunk_size=chunk_size)
    d = torch.cdist(x, stored)
    assert index.dtype == torch.int64 and index.shape == (7,)
    assert torch.equal(index, d.argmin(1))
    torch.testing.assert_close(distance, d.min(1).values)


def test_nearest_item_exact_matches_ties_and_layouts(generator):
    stored = torch.rand(20, 2, 3, 3, generator=generator, device=generator.device)
    stored[13] = stored[4]  # duplicate: the tie goes to the lower index
    query = stored[[7, 13, 0, 19]]
    index, distance = nearest_item(query, stored, chunk_size=3)
    assert index.tolist() == [7, 4, 0, 19]
    assert torch.equal(distance, torch.zeros(4))  # recomputed directly: exactly 0
    flat_index, _ = nearest_item(query.reshape(4, -1), stored.reshape(20, -1))
    assert torch.equal(flat_index, index)


def test_nearest_item_errors():
    stored = torch.rand(5, 4)
    with pytest.raises(ValueError, match="3 entries but stored items have 4"):
        nearest_item(torch.rand(2, 3), stored)
    with pytest.raises(ValueError, match="NaN"):
        nearest_item(torch.full((2, 4), torch.nan), stored)
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_item(torch.rand(2, 4), stored, chunk_size=0)
    with pytest.raises(ValueError, match="at least 2"):
        nearest_item(torch.rand(4), stored)
    with pytest.raises(ValueError, match="empty"):
        nearest_item(torch.rand(2, 4), stored[:0])


def test_retrieval_rate_with_threshold():
    stored = torch.eye(6, 10) * 3.0
    target = torch.tensor([0, 1, 2, 3, 4])
    offset = torch.zeros(5, 10)
    offset[:, 9] = torch.tensor([0.0, 0.1, 0.25, 0.4, 2.0])  # distances to the right item
    retrieved = stored[target] + offset
    assert retrieval_rate(retrieved, stored, target, threshold=0.3) == 0.6
    assert retrieval_rate(retrieved, stored, target, threshold=0.25) == 0.4  # strict: 0.25 is out
    assert retrieval_rate(retrieved, stored, target, threshold=10.0) == 1.0


def test_retrieval_rate_by_nearest_item(generator):
    stored = torch.randn(30, 8, generator=generator, device=generator.device)
    target = torch.randint(0, 30, (50,), generator=generator, device=generator.device)
    noise = torch.randn(50, 8, generator=generator, device=generator.device)
    retrieved = stored[target] + 1.2 * noise
    nearest = torch.cdist(retrieved, stored).argmin(1)
    expected = sum(int(n) == int(t) for n, t in zip(nearest.tolist(), target.tolist(), strict=True)) / 50
    assert 0.0 < expected < 1.0  # the test distinguishes hits from misses
    assert retrieval_rate(retrieved, stored, target) == pytest.approx(expected)
    assert retrieval_rate(stored[target], stored, target) == 1.0


def test_retrieval_rate_errors():
    stored, retrieved = torch.rand(5, 4), torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        retrieval_rate(retrieved, stored, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        retrieval_rate(retrieved, stored, torch.tensor([0, -1, 2]))
    with pytest.raises(TypeError, match="integer"):
        retrieval_rate(retrieved, stored, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        retrieval_rate(retrieved, stored, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="threshold"):
        retrieval_rate(retrieved, stored, torch.tensor([0, 1, 2]), threshold=-0.5)
