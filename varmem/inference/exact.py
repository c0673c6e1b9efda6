"""``"exact"``: the closed-form posterior of a memory that has one."""

from __future__ import annotations

from torch import Tensor

from ..capabilities import ClosedFormPosterior
from ..engine import engine
from ..retrieval import Retrieval
from ..validation import check_bool, check_positive_int

__all__ = ["retrieve_exact"]


@engine("exact", requires=(ClosedFormPosterior,))
def retrieve_exact(
    memory: ClosedFormPosterior, cue: Tensor, mask: Tensor | None, *, return_weights: bool | None = None,
    chunk_size: int | None = None,
) -> Retrieval:
    """Read with the closed-form posterior ``p(z | x, M) = memory.posterior(cue, mask)``.

    ``pattern`` is the decoded posterior mean, ``code`` the mean, ``variance`` the posterior
    variance, ``weights`` the posterior over stored items ``p(i | x, M)`` (``weights_at =
    "posterior"``; materialised when ``return_weights`` is True, or when None and ``B·N`` is at
    most :data:`varmem.helpers.WEIGHTS_LIMIT`), ``index`` its arg-max, ``posterior`` the
    posterior object (:class:`varmem.capabilities.Posterior`: ``log_prob``, ``sample``,
    ``log_evidence``).  No iteration: ``steps = 0``, ``trace`` and ``converged`` are None.

    Options:
        return_weights: keep the ``[B, N]`` weights (None = automatic, see above).
        chunk_size: stored items per chunk.
    """
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_positive_int(chunk_size, "option chunk_size", allow_none=True)
    post = memory.posterior(cue, mask, return_weights=return_weights, chunk_size=chunk_size)
    return Retrieval(
        pattern=memory.decode(post.mean),
        method="exact",
        code=post.mean,
        weights=post.weights,
        weights_at="posterior",
        index=post.index,
        variance=post.variance,
        posterior=post,
        steps=0,
    )

