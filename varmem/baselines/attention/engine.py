"""``"attention"``: one read of a trained attention reader (MemN2N, NTM); no iteration."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ...engine import engine
from ...retrieval import Retrieval
from ...validation import check_bool

__all__ = ["retrieve_attention", "Attends"]


@runtime_checkable
class Attends(Protocol):
    """An attention reader: ``attend(z) -> (read [B, D], log addressing [B, N])`` over its stored
    items, and the energy at a query (``compute_energy(z) [B]``)."""

    def attend(self, z: Tensor, items: Tensor | None = None, training: bool = False) -> tuple[Tensor, Tensor]: ...

    def compute_energy(self, z: Tensor, cue: Any = None, mask: Any = None) -> Tensor: ...


@engine("attention", requires=(Attends,))
def retrieve_attention(memory: Attends, cue: Tensor, mask: Tensor | None, *, return_weights: bool = True) -> Retrieval:
    """``"attention"``: one read of an attention reader (MemN2N, NTM) — no iteration.

    ``weights`` are the addressing ``p`` (rows sum to 1, ``weights_at = "read"``), ``index`` its
    arg-max, ``trace`` ``[1, B]`` the energy at the cue, ``steps = 1``; no stopping rule
    (``converged`` is None).  Unobserved cue entries (``mask`` False) are 0 in the query; the read
    is not clamped to the cue.

    Options:
        return_weights: keep the ``[B, N]`` addressing (``index`` is always returned).
    """
    check_bool(return_weights, "option return_weights")
    with torch.no_grad():
        pattern, log_w = memory.attend(cue)
        energy = memory.compute_energy(cue)
    return Retrieval(
        pattern=pattern,
        method="attention",
        weights=log_w.exp() if return_weights else None,
        weights_at="read",
        index=log_w.argmax(-1),
        trace=energy.unsqueeze(0),
        steps=1,
        info={"reader": type(memory).__name__},
    )
