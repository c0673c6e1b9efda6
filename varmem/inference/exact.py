"""``"exact"``: the closed-form posterior of a memory that has one."""

from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import ClosedFormPosterior
from ..engine import engine
from ..retrieval import Retrieval
from ..validation import check_bool, check_int, check_positive_int, check_seed

__all__ = ["retrieve_exact"]


@engine("exact", requires=(ClosedFormPosterior,))
def retrieve_exact(
    memory: ClosedFormPosterior, cue: Tensor, mask: Tensor | None, *, return_weights: bool | None = None,
    chunk_size: int | None = None, num_samples: int = 0, seed: int | None = None,
) -> Retrieval:
    """Read with the closed-form posterior ``p(z | x, M) = memory.posterior(cue, mask)``.

    ``pattern`` is the decoded posterior mean, ``code`` the mean, ``variance`` the posterior
    variance, ``weights`` the posterior over stored items ``p(i | x, M)`` (``weights_at =
    "posterior"``; materialised when ``return_weights`` is True, or when None and ``B·N`` is at
    most :data:`varmem.helpers.WEIGHTS_LIMIT`), ``index`` its arg-max, ``posterior`` the
    posterior object (:class:`varmem.capabilities.Posterior`: ``log_prob``, ``sample``,
    ``log_evidence``).  No iteration: ``steps = 0``, ``trace`` and ``converged`` are None.

    With ``num_samples = S > 0``, ``samples`` ``[S, B, L]`` are exact independent posterior draws,
    ``posterior.sample(S)``: the item ``i ~ p(i | x)``, then ``z ~ p(z | x, i)`` (a Gaussian for the
    kernel-density and nonparametric memories); no chains, so no r_hat or ESS needed (ESS = S).

    Options:
        return_weights: keep the ``[B, N]`` weights (None = automatic, see above).
        chunk_size: stored items per chunk.
        num_samples: exact posterior draws to return in ``samples`` (0: none).
        seed: seed of those draws (None: the global RNG).
    """
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_positive_int(chunk_size, "option chunk_size", allow_none=True)
    num_samples = check_int(num_samples, "option num_samples", minimum=0)
    seed = check_seed(seed, "option seed", allow_none=True)
    post = memory.posterior(cue, mask, return_weights=return_weights, chunk_size=chunk_size)
    samples = None
    if num_samples:
        generator = None
        if seed is not None:
            generator = torch.Generator(device=cue.device).manual_seed(seed)
        samples = post.sample(num_samples, generator=generator)
    return Retrieval(
        pattern=memory.decode(post.mean),
        method="exact",
        code=post.mean,
        weights=post.weights,
        weights_at="posterior",
        index=post.index,
        variance=post.variance,
        posterior=post,
        samples=samples,
        steps=0,
    )

