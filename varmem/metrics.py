"""Retrieval quality: per-item errors, recall decisions and nearest stored items.

Items may have any layout ``[B, ...]``; every dimension but the first is flattened to ``D``.
Masks follow the corruptions' convention: ``True`` = known (observed) entry.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .kernels import default_chunk_size
from .validation import check_positive, check_positive_int

__all__ = ["SCORED", "mse", "recalled", "recall_accuracy", "nearest_item", "retrieval_rate"]

SCORED: tuple[str, ...] = ("all", "unknown", "known")


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_float_tensor(x: Any, name: str, min_dim: int = 1) -> Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) [B, ...], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _check_pair(retrieved: Any, target: Any) -> tuple[Tensor, Tensor]:
    """Two floating tensors of the same shape ``[B, ...]`` on the same device."""
    r = _check_float_tensor(retrieved, "retrieved")
    t = _check_float_tensor(target, "target")
    if r.shape != t.shape:
        raise ValueError(f"retrieved {tuple(r.shape)} and target {tuple(t.shape)} must have the same shape")
    if r.device != t.device:
        raise ValueError(f"retrieved is on {r.device} but target on {t.device}")
    return r, t


def _selection(mask: Any, scored: str, shape: torch.Size, device: torch.device) -> Tensor | None:
    """The scored entries as a ``[B, D]`` bool tensor, or ``None`` when all entries are scored."""
    if scored not in SCORED:
        raise ValueError(f"scored must be one of {', '.join(SCORED)}, got {scored!r}")
    if mask is None:
        if scored != "all":
            raise ValueError(f"scored={scored!r} needs a mask (True = known entry)")
        return None
    if not torch.is_tensor(mask) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = known), got {getattr(mask, 'dtype', type(mask).__name__)}")
    try:
        full = mask.to(device).expand(shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(shape)}") from None
    if scored == "all":
        return None
    full = full.reshape(shape[0], -1)
    return full if scored == "known" else ~full


def _as_rows(x: Any, name: str) -> Tensor:
    """``[B, ...]`` → ``[B, D]``, finite."""
    x = _check_float_tensor(x, name, min_dim=2)
    rows = x.reshape(x.shape[0], -1)
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} contains NaN or inf")
    return rows


def _rows_pair(x: Any, stored: Any) -> tuple[Tensor, Tensor]:
    """Queries ``[B, D]`` and stored items ``[N, D]`` in a common dtype on one device."""
    q, s = _as_rows(x, "x"), _as_rows(stored, "stored")
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"items of x have {q.shape[1]} entries but stored items have {s.shape[1]}")
    if q.device != s.device:
        raise ValueError(f"x is on {q.device} but stored on {s.device}")
    dtype = torch.promote_types(q.dtype, s.dtype)
    return q.to(dtype), s.to(dtype)


# --------------------------------------------------------------------------------------------
# Error-based metrics
# --------------------------------------------------------------------------------------------


def mse(retrieved: Tensor, target: Tensor, mask: Tensor | None = None, scored: str = "all") -> Tensor:
    """Per-item mean squared error ``[B]`` over the scored entries.

    ``mse_b = Σ_d s_bd (r_bd - t_bd)² / Σ_d s_bd`` with ``s`` the scored entries: all of them
    (``"all"``), those where ``mask`` is False (``"unknown"``) or True (``"known"``).  ``mask``
    must broadcast to the items' shape.  Unscored entries may hold NaN; scored ones may not.
    """
    r, t = _check_pair(retrieved, target)
    sel = _selection(mask, scored, r.shape, r.device)
    batch = r.shape[0]
    sq = (r - t).reshape(batch, -1).square()
    if sel is None:
        count = torch.full((batch,), sq.shape[1], device=sq.device)
    else:
        count = sel.sum(1)
        sq = torch.where(sel, sq, torch.zeros((), dtype=sq.dtype, device=sq.device))
    empty = count == 0
    if empty.any():
        items = empty.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{int(empty.sum())} of {batch} items have no {scored!r} entries to score (items {items}"
            f"{'...' if int(empty.sum()) > 5 else ''})"
        )
    if not torch.isfinite(sq).all():
        raise ValueError("retrieved or target contains NaN or inf in scored entries")
    return sq.sum(1) / count


def recalled(
    retrieved: Tensor, target: Tensor, threshold: float = 0.01, mask: Tensor | None = None, scored: str = "all"
) -> Tensor:
    """``[B]`` bool: ``mse(retrieved, target, mask, scored) < threshold``."""
    threshold = check_positive(threshold, "threshold")
    return mse(retrieved, target, mask=mask, scored=scored) < threshold


def recall_accuracy(
    retrieved: Tensor, target: Tensor, threshold: float = 0.01, mask: Tensor | None = None, scored: str = "all"
) -> float:
    """Fraction of items recalled (see :func:`recalled`)."""
    hits = recalled(retrieved, target, threshold=threshold, mask=mask, scored=scored)
    return int(hits.sum()) / hits.numel()


# --------------------------------------------------------------------------------------------
# Distance-based metrics
# --------------------------------------------------------------------------------------------


def nearest_item(x: Tensor, stored: Tensor, *, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Euclidean nearest stored item of every query: ``(index [B] int64, distance [B])``.

    Squared distances ``‖x‖² - 2 x·ξ + ‖ξ‖²`` (clamped at 0) are formed one ``[B, chunk]`` block
    at a time, so no ``[B, N, D]`` tensor is allocated; ties go to the lowest index.  The returned
    distance ``‖x - ξ_index‖`` is recomputed directly (exact 0 for an exact match).
    """
    q, s = _rows_pair(x, stored)
    batch, num = q.shape[0], s.shape[0]
    if chunk_size is None:
        chunk = default_chunk_size(batch, q.device)
    else:
        chunk = check_positive_int(chunk_size, "chunk_size")
    q_sq = q.square().sum(1, keepdim=True)  # [B, 1]
    best = torch.full((batch,), math.inf, dtype=q.dtype, device=q.device)
    index = torch.zeros(batch, dtype=torch.int64, device=q.device)
    for start in range(0, num, chunk):  # loop over chunks of items, not over items
        block = s[start : start + chunk]
        d2 = (q_sq - 2.0 * q @ block.T + block.square().sum(1)).clamp_min(0.0)  # [B, chunk]
        value, arg = d2.min(1)
        better = value < best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    distance = torch.linalg.vector_norm(q - s[index], dim=1)
    return index, distance


def retrieval_rate(
    retrieved: Tensor, stored: Tensor, target_index: Tensor, threshold: float | None = None
) -> float:
    """Fraction of queries retrieved correctly, judged by distance to the right stored item.

    With ``threshold``: fraction with ``‖retrieved_b - stored[target_index_b]‖ < threshold``
    (the protocol of Annabi et al.).  Without: fraction whose nearest stored item (Euclidean) is
    ``stored[target_index_b]``.
    """
    r, s = _rows_pair(retrieved, stored)
    if not torch.is_tensor(target_index) or target_index.dtype.is_floating_point or target_index.dtype == torch.bool:
        kind = getattr(target_index, "dtype", type(target_index).__name__)
        raise TypeError(f"target_index must be an integer tensor, got {kind}")
    target = target_index.to(device=r.device, dtype=torch.int64)
    if target.shape != (r.shape[0],):
        raise ValueError(f"target_index must have shape [{r.shape[0]}], got {tuple(target.shape)}")
    if bool(((target < 0) | (target >= s.shape[0])).any()):
        raise ValueError(f"target_index must lie in [0, {s.shape[0] - 1}]")
    if threshold is None:
        hits = nearest_item(r, s)[0] == target
    else:
        hits = torch.linalg.vector_norm(r - s[target], dim=1) < check_positive(threshold, "threshold")
    return int(hits.sum()) / hits.numel()
