"""``"hybrid"``: an amortized start, then iterative refinement (Annabi et al.'s proposal).

The encoder (or the trained retrieval guide) gives ``z_0`` in one forward pass; the
``"iterative"`` engine then climbs ``log p(x, z | M)`` from there, by gradient steps through the
decoder (``scheme="map"``: VAE-BP-GMM on the posterior energy; ``"bp"``: VAE-BP-GMM as released)
or by a predictive-coding relaxation (``scheme="pc"``, VAE-PC-GMM).  With ``start="encoder"`` it
is ``"iterative"`` with its default start; ``start="guide"`` starts at the trained retrieval guide.
The encoder supplies the basin, the iterations use the memory prior and the exact
masked likelihood, which the encoder never saw.

Needs a :class:`~varmem.memories.latent.protocol.CodeSpace` memory (``init_latent`` with
``"encoder"`` / ``"guide"``, and what ``"iterative"`` needs).
"""

from __future__ import annotations

from torch import Tensor

from ...engine import engine
from ...retrieval import Retrieval
from ...validation import check_choice
from .iterative import retrieve_iterative
from .protocol import CodeSpace

__all__ = ["retrieve_hybrid"]


@engine("hybrid", requires=(CodeSpace,))
def retrieve_hybrid(
    memory: CodeSpace,
    cue: Tensor,
    mask: Tensor | None,
    *,
    start: str = "encoder",
    scheme: str = "map",
    optimizer: str | None = None,
    lr: float | None = None,
    max_steps: int = 200,
    tol: float | None = None,
    hidden_scale: float | None = None,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Encoder start, iterative refinement; ``info["start_code"]`` is the amortized ``z_0``.

    Options:
        start: ``"encoder"`` (the VAE encoder) or ``"guide"`` (the retrieval guide trained by
            ``memory.fit_retrieval_guide``).
        scheme, optimizer, lr, max_steps, tol, hidden_scale, return_weights, progress: as for
            ``"iterative"``.
    """
    check_choice(start, "option start", ("encoder", "guide"))
    check_choice(scheme, "option scheme", ("map", "bp", "pc"))
    z0 = memory.init_latent(cue, mask, start).detach()
    result = retrieve_iterative(memory, cue, mask, scheme=scheme, init=z0, optimizer=optimizer, lr=lr,
                                max_steps=max_steps, tol=tol, hidden_scale=hidden_scale,
                                return_weights=return_weights, progress=progress)
    result.method = "hybrid"
    result.info.update(start=start, start_code=z0)
    return result
