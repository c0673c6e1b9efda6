"""The one result record that every retrieval engine returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["Retrieval"]


@dataclass
class Retrieval:
    """What a read of a memory returns, whichever engine did it.

    Shapes use ``B`` cues, ``D`` data dimensions, ``N`` stored items, ``S`` samples, ``T`` steps.

    Attributes:
        pattern: ``[B, D]`` the retrieved item in data space (the engine's point estimate:
            posterior mean for ``"exact"`` and ``"nuts"``, a mode for ``"fixed_point"`` / ``"map"``).
        method: name of the engine that produced it.
        code: ``[B, L]`` the latent the engine inferred; for a memory whose latent lives in data
            space this is the same tensor as ``pattern``.
        weights: ``[B, N]`` posterior probabilities over stored items, where defined (``None`` when
            undefined, or when ``B * N`` is too large to materialise; see the engine's options).
        index: ``[B]`` the most probable stored item, where defined.
        variance: ``[B, D]`` posterior variance per dimension, where known in closed form or
            estimated from samples.
        samples: ``[S, B, D]`` posterior samples, where drawn.
        trace: ``[T]`` or ``[T, B]`` energy / loss per step of an iterative engine.
        steps: number of iterations the engine ran (0 for closed forms).
        converged: ``[B]`` bool, whether each cue met the engine's stopping rule.
        posterior: the closed-form posterior object, where one exists.
        info: engine-specific extras (e.g. effective sample sizes, the ``MCMC`` object).
    """

    pattern: Tensor
    method: str
    code: Tensor | None = None
    weights: Tensor | None = None
    index: Tensor | None = None
    variance: Tensor | None = None
    samples: Tensor | None = None
    trace: Tensor | None = None
    steps: int = 0
    converged: Tensor | None = None
    posterior: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code is None:
            self.code = self.pattern
        if self.converged is None:
            self.converged = torch.ones(self.pattern.shape[0], dtype=torch.bool, device=self.pattern.device)

    def __len__(self) -> int:
        return self.pattern.shape[0]

    def detach(self) -> "Retrieval":
        """A copy whose tensors are detached from any autograd graph."""
        changes = {
            f.name: getattr(self, f.name).detach()
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **changes)
