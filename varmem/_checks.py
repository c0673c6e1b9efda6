"""Input validation shared by memories and engines: clear errors that name the problem."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_items", "as_cue", "as_mask", "all_finite", "check_positive", "check_positive_int", "check_unit_interval",
    "start_state",
]


def _as_float_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not torch.is_tensor(x):
        if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
            x = torch.as_tensor(np.asarray(x))
        else:
            raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must have a floating dtype, got {x.dtype}; convert it first (e.g. x.float() / 255)"
        )
    return x.to(device=device, dtype=dtype)


def as_items(items: Any, dim: int, dtype: torch.dtype, device: torch.device, name: str = "items") -> Tensor:
    """Items to store or delete: ``[N, D]`` or one item ``[D]``, finite floats → ``[N, D]``."""
    x = _as_float_tensor(items, name, dtype, device)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape [N, {dim}] or [{dim}], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not all_finite(x):
        bad = ~torch.isfinite(x).all(-1)
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf (rows {rows}{'...' if int(bad.sum()) > 5 else ''})")
    return x


def as_mask(mask: Any, batch: int, dim: int, device: torch.device) -> Tensor | None:
    """A boolean mask (``True`` = observed) of shape ``[D]`` or ``[B, D]``."""
    if mask is None:
        return None
    if not torch.is_tensor(mask):
        mask = torch.as_tensor(np.asarray(mask))
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = observed), got dtype {mask.dtype}")
    if mask.shape not in ((dim,), (batch, dim)):
        raise ValueError(f"mask must have shape [{dim}] or [{batch}, {dim}], got {tuple(mask.shape)}")
    mask = mask.to(device)
    empty = ~mask.any(-1)
    if empty.any():
        which = "the mask" if mask.dim() == 1 else f"cues {empty.nonzero().flatten()[:5].tolist()}"
        raise ValueError(f"mask has nothing observed for {which}: at least one entry per cue must be True")
    return mask


def as_cue(
    cue: Any, mask: Any, dim: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """Validate a cue ``[B, D]`` (or ``[D]``) and its mask; return ``(cue, mask)``.

    Unobserved entries (mask ``False``) are never read: they may hold NaN and are replaced by 0.
    Observed entries must be finite.
    """
    x = _as_float_tensor(cue, "cue", dtype, device)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != dim:
        raise ValueError(f"cue must have shape [B, {dim}] or [{dim}], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("cue is empty (no cues in the batch)")
    m = as_mask(mask, x.shape[0], dim, device)
    if m is not None:
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if not all_finite(x):
        rows = (~torch.isfinite(x).all(-1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"cue contains NaN or inf in observed entries (cues {rows})")
    return x, m


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite.

    One reduction: a NaN or inf entry makes the sum non-finite; only when the sum is not finite
    (which a sum of huge finite entries can also be) is the elementwise test run.
    """
    return math.isfinite(x.sum().item()) or bool(torch.isfinite(x).all())


def check_positive(value: Any, name: str) -> float:
    """A finite, strictly positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """An int ``≥ 1`` (not a bool), or None where ``allow_none``; returned unchanged."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_unit_interval(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def start_state(
    init: Any, cue: Tensor, starts: Mapping[str, Callable[[], Tensor]], owner: Any,
    shape: tuple[int, ...] | None = None,
) -> Tensor:
    """The ``init`` option of an iterative engine resolved to a starting state.

    A tensor must have ``shape`` (default: the cue's) and is moved to the cue's device and dtype; a
    name is looked up in ``starts`` (name → function building the state).  Errors name ``owner``'s
    class and the valid choices.
    """
    shape = tuple(cue.shape) if shape is None else tuple(shape)
    if torch.is_tensor(init):
        if tuple(init.shape) != shape:
            raise ValueError(f"init tensor must have shape {list(shape)}, got {list(init.shape)}")
        return init.to(cue)
    if not isinstance(init, str) or init not in starts:
        choices = ", ".join(repr(name) for name in starts)
        raise ValueError(f"unknown init {init!r} for {type(owner).__name__}; choose {choices} or a tensor")
    return starts[init]()
