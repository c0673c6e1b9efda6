"""The one result record that every retrieval engine returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import Tensor

__all__ = ["Retrieval", "WEIGHTS_AT"]

WEIGHTS_AT = {
    "posterior": "the exact posterior over stored items given the cue, p(i | x, M)",
    "last_update": "the softmax of the last update, taken at the state before it (hopfield-layers' association "
                   "matrix)",
    "final_state": "the responsibilities p(i | z, M) at the returned code z",
    "samples": "the responsibilities averaged over the posterior draws, E[p(i | z, M) | x]",
    "read": "the addressing of the read (attention weights)",
}
"""Where ``Retrieval.weights`` are taken (the values of ``Retrieval.weights_at``)."""


@dataclass
class Retrieval:
    """What a read of a memory returns, whichever engine did it.

    Shapes use ``B`` cues, ``D`` data dimensions, ``L`` latent dimensions, ``N`` stored items,
    ``S`` samples, ``T`` recorded steps.

    Attributes:
        pattern: ``[B, D]`` the retrieved item in data space (the engine's point estimate:
            posterior mean for ``"exact"`` and ``"nuts"``, a mode for ``"fixed_point"`` / ``"map"``).
        method: name of the engine that produced it.
        code: ``[B, L]`` the latent the engine inferred; for a memory whose latent lives in data
            space this is the same tensor as ``pattern``.
        weights: ``[B, N]`` probabilities over stored items (rows sum to 1), where defined and asked
            for (``None`` otherwise: see the engine's ``return_weights`` option).
        weights_at: where ``weights`` were taken: a key of :data:`WEIGHTS_AT` (None without weights).
        index: ``[B]`` the most probable stored item, where defined.
        variance: ``[B, L]`` posterior variance per dimension, where known in closed form or
            estimated from samples.
        samples: ``[S, B, L]`` posterior samples, where drawn.
        trace: ``[T, B]`` energy (or loss) per recorded step and cue, or None; each engine says
            which steps it records.
        steps: number of iterations the engine ran (0 for closed forms).
        converged: ``[B]`` bool, whether each cue met the engine's stopping rule; ``None`` when the
            engine has no stopping rule (closed forms, samplers, fixed step counts).
        posterior: the closed-form posterior object, where one exists.
        info: engine-specific extras (e.g. effective sample sizes, the ``MCMC`` object).
    """

    pattern: Tensor
    method: str
    code: Tensor | None = None
    weights: Tensor | None = None
    weights_at: str | None = None
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
        B = self.pattern.shape[0]
        if self.trace is not None and (self.trace.dim() != 2 or self.trace.shape[1] != B):
            raise ValueError(f"Retrieval.trace must be [T, B={B}], got {tuple(self.trace.shape)}")
        if self.converged is not None and tuple(self.converged.shape) != (B,):
            raise ValueError(f"Retrieval.converged must be [B={B}], got {tuple(self.converged.shape)}")
        if self.weights is not None:
            if self.weights.dim() != 2 or self.weights.shape[0] != B:
                raise ValueError(f"Retrieval.weights must be [B={B}, N], got {tuple(self.weights.shape)}")
            if self.weights_at not in WEIGHTS_AT:
                raise ValueError(f"Retrieval.weights_at must be one of {sorted(WEIGHTS_AT)}, got {self.weights_at!r}")
        else:
            self.weights_at = None

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
