"""``"exact"``: the closed-form posterior of a memory that has one."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..retrieval import Retrieval

__all__ = ["retrieve_exact"]


def retrieve_exact(
    memory: Any, cue: Tensor, mask: Tensor | None, *, return_weights: bool | None = None, chunk_size: int | None = None
) -> Retrieval:
    """Read with the closed-form posterior ``p(z | x, M) = memory.posterior(cue, mask)``.

    ``pattern`` is the posterior mean, ``variance`` the posterior variance, ``weights`` the
    posterior over stored items ``p(i | x)`` (materialised when ``return_weights`` is True, or
    when ``None`` and ``B·N ≤ 2**24``), ``posterior`` the posterior object (``log_prob``,
    ``sample``, ``log_evidence``).

    Options:
        return_weights: keep the ``[B, N]`` weights (None = automatic, see above).
        chunk_size: stored items per chunk.
    """
    post = memory.posterior(cue, mask, return_weights=return_weights, chunk_size=chunk_size)
    pattern = memory.decode(post.mean)
    return Retrieval(
        pattern=pattern,
        method="exact",
        code=post.mean,
        weights=post.weights,
        index=post.index,
        variance=post.variance,
        posterior=post,
        steps=0,
    )
