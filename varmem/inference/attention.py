"""``"attention"``: one read of a trained attention reader (MemN2N, NTM); no iteration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..retrieval import Retrieval

__all__ = ["retrieve_attention"]


def retrieve_attention(memory: Any, cue: Tensor, mask: Tensor | None, *, return_weights: bool = True) -> Retrieval:
    """``"attention"``: one read of an attention reader (MemN2N, NTM) — no iteration.

    Hook: ``memory.attend(z, items) -> (pattern [B, D], log_weights [B, N])`` at reading time.
    ``weights`` are the addressing ``p`` (rows sum to 1), ``index`` its argmax, ``trace`` ``[1, B]``
    the energy at the cue, ``steps = 1``, ``converged`` all True.  Unobserved cue entries (``mask``
    False) are 0 in the query; the read is not clamped to the cue.

    Options:
        return_weights: keep the ``[B, N]`` addressing (``index`` is always returned).
    """
    if not isinstance(return_weights, bool):
        raise ValueError(f"option return_weights must be a bool, got {return_weights!r}")
    with torch.no_grad():
        pattern, log_w = memory.attend(cue, memory.items)
        energy = memory.energy(cue)
    return Retrieval(
        pattern=pattern,
        method="attention",
        weights=log_w.exp() if return_weights else None,
        index=log_w.argmax(-1),
        trace=energy.unsqueeze(0),
        steps=1,
        info={"reader": type(memory).__name__},
    )
