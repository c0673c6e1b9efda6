"""Where the unknown sensory entries of a predictive-coding read start (one rule for every PC reader:
``"pc"`` / ``"pc_pyro"``, ``"pcnet"`` / ``"pcnet_pyro"`` and :meth:`PCNet.read`).

``start`` is

* ``"zero"`` (the default, chosen by measurement in ``experiments/pc_read_options.py``),
* ``"prior_mean"``: the network's top-down prediction,
* a finite number (``-1``: the official BayesPCN code, whose hidden pixels hold -1), or
* a finite floating tensor ``[D]`` or ``[B, D]`` of start values, e.g. the cue's own content
  (``start=cue``): the protocol never reads what a cue holds where ``mask`` is False (it puts 0
  there), so a read starts from it only when asked to, through this option.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ...validation import check_choice, check_finite

__all__ = ["STARTS", "DEFAULT_START", "check_start", "start_fill"]

STARTS = ("zero", "prior_mean")
"""The named start values (a number or a tensor of values is also accepted)."""
DEFAULT_START = "zero"
"""Measured in ``experiments/pc_read_options.py`` (see the PC guide)."""


def check_start(start: Any, cue: Tensor | None = None) -> str | float | Tensor:
    """``start`` validated: a name of :data:`STARTS`, a finite number, or a finite floating tensor
    ``[D]`` or ``[B, D]`` (checked against ``cue [B, *sensory]`` when given, whether or not the
    read has unknown entries)."""
    if isinstance(start, str):
        return check_choice(start, "option start", STARTS)
    if torch.is_tensor(start):
        if not torch.is_floating_point(start) or start.dim() not in (1, 2):
            raise TypeError(f"option start as a tensor must hold floats with shape [D] or [B, D], got "
                            f"{start.dtype} of shape {tuple(start.shape)}")
        if not bool(torch.isfinite(start).all()):
            raise ValueError("option start contains NaN or inf")
        if cue is not None:
            _check_shape(start, cue)
        return start
    try:
        return check_finite(start, "option start")
    except TypeError:
        raise TypeError(f"option start must be one of {list(STARTS)}, a finite number or a tensor of start values, "
                        f"got {start!r}") from None


def start_fill(start: str | float | Tensor, cue: Tensor, prior_mean: Callable[[], Tensor]) -> Tensor:
    """The start values of the unknown entries, shaped like ``cue [B, *sensory]``; ``prior_mean()``
    gives the network's top-down prediction (called only for ``"prior_mean"``)."""
    if isinstance(start, str):
        if start == "prior_mean":
            return prior_mean().to(cue).reshape(-1, *cue.shape[1:]).expand_as(cue)
        return torch.zeros_like(cue)
    if torch.is_tensor(start):
        rows = _check_shape(start, cue)
        return start.to(cue).reshape(rows, *cue.shape[1:]).expand_as(cue)
    return torch.full_like(cue, float(start))


def _check_shape(start: Tensor, cue: Tensor) -> int:
    """The rows of a tensor ``start`` (1 or ``B``); ``ValueError`` unless it is ``[D]`` or ``[B, D]``."""
    B, D = cue.shape[0], math.prod(cue.shape[1:])
    rows = 1 if start.dim() == 1 else start.shape[0]
    if start.shape[-1] != D or rows not in (1, B):
        raise ValueError(f"option start as a tensor must have shape [{D}] or [{B}, {D}] (the cue's), "
                         f"got {tuple(start.shape)}")
    return rows
