"""``"amortized"``: read a memory with one forward pass of an encoder.

Two encoders can answer (option ``guide``):

* ``"encoder"``: the memory's own VAE encoder ``q(z | x)``, fitted to the *training* prior; it
  ignores the memory and the mask (unobserved entries are fed as 0).
* ``"retrieval"``: an amortized retrieval guide ``q_φ(z | x̃, m) = N(μ_φ(x̃ ⊙ m, m), diag σ_φ²)``
  trained by :func:`fit_retrieval_guide` with SVI on corrupted cues against the memory's own
  model ``p(x̃, z | M)``: it maximises ``E_cues[ELBO] = E[log p(x̃ | M)] - E[KL(q_φ ‖ p(z | x̃, M))]``,
  so it is the best Gaussian fit, in that KL, to this memory's posterior for that corruption.

Needs a :class:`~varmem.memories.latent.protocol.CodeSpace` memory; training also uses
``memory.retrieval_guide`` (a module with input ``[x̃ ⊙ m, m]``), ``memory.prior``,
``memory.likelihood`` and ``memory.prepare_items``.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ...corruptions import corrupt
from ...engine import engine
from ...retrieval import Retrieval
from ...training import FitResult, fit
from ...validation import check_bool, check_choice, check_positive_int
from .protocol import CodeSpace

__all__ = ["retrieve_amortized", "fit_retrieval_guide", "corrupted_cues", "warm_start"]

Corruption = str | Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]]


@engine("amortized", requires=(CodeSpace,))
def retrieve_amortized(
    memory: CodeSpace, cue: Tensor, mask: Tensor | None, *, guide: str = "encoder", return_weights: bool | None = None
) -> Retrieval:
    """One forward pass: ``code`` is the guide's mean, ``pattern = decode(code)``.

    ``info["code_scale"]`` is the guide's standard deviation ``[B, L]``; ``weights`` are the
    responsibilities ``p(i | z, M)`` of the stored items at the code (``weights_at =
    "final_state"``).  No iteration: ``trace`` and ``converged`` are None.

    Options:
        guide: ``"encoder"`` (the VAE encoder) or ``"retrieval"`` (the guide trained by
            ``memory.fit_retrieval_guide``).
        return_weights: keep the ``[B, N]`` responsibilities (None = if ``B·N`` is at most
            :data:`varmem.helpers.WEIGHTS_LIMIT`).
    """
    check_choice(guide, "option guide", ("encoder", "retrieval"))
    check_bool(return_weights, "option return_weights", allow_none=True)
    with torch.no_grad():
        loc, scale = memory.encode(cue) if guide == "encoder" else memory.guide_encode(cue, mask)
        weights = index = None
        if return_weights is not False:
            weights, index = memory.item_weights(loc, return_weights)
        pattern = memory.decode(loc)
    return Retrieval(pattern=pattern, method="amortized", code=loc, weights=weights, weights_at="final_state",
                     index=index, info={"guide": guide, "code_scale": scale})


# --- training ------------------------------------------------------------------------------
def corrupted_cues(
    memory: Any,
    items: Tensor,
    corruption: Corruption,
    level: float | int | None,
    copies: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """``copies`` corrupted versions of every item: ``(cue, mask, item_index)`` with ``[copies·N]``
    rows; unobserved entries are set to 0 (as ``memory.retrieve`` does); rows with nothing
    observed are dropped.  ``corruption`` is a name of :func:`varmem.corruptions.corrupt` or a
    callable ``(x, generator) -> (cue, mask)``."""
    check_positive_int(copies, "copies")
    index = torch.arange(items.shape[0], device=items.device).repeat(copies)
    x = items[index]
    if callable(corruption):
        cue, mask = corruption(x, generator)
    else:
        shape = getattr(memory, "data_shape", ())
        cue, mask = corrupt(x, corruption, level, generator=generator,
                            image_shape=shape if len(shape) == 3 else None)
    cue, mask = cue.reshape(x.shape).to(x), mask.reshape(x.shape).to(torch.bool)
    keep = mask.any(-1)
    cue = torch.where(mask, cue, torch.zeros((), dtype=cue.dtype, device=cue.device))
    return cue[keep], mask[keep], index[keep]


class _MemoryModel(torch.nn.Module):
    """The memory's model over a ``"data"`` plate of all training cues (for minibatches in
    :func:`varmem.fit`): ``z ~ memory.prior()``, ``x̃ ~ memory.likelihood(z, m)``.  It owns no
    parameters, so only the guide is trained."""

    def __init__(self, memory: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_memory", memory)

    def forward(self, cue: Tensor, mask: Tensor, num_data: int | None = None) -> None:
        memory, B = self._memory, cue.shape[0]
        with pyro.plate("data", num_data or B, subsample=torch.arange(B, device=cue.device), dim=-1):
            z = pyro.sample(memory.latent_site, memory.prior())
            pyro.sample(memory.observed_site, memory.likelihood(z, mask), obs=cue)


class _RetrievalGuide(torch.nn.Module):
    """``z ~ N(μ_φ([x̃ ⊙ m, m]), diag σ_φ²)`` under the same plate."""

    def __init__(self, net: torch.nn.Module, site: str) -> None:
        super().__init__()
        self.net = net
        self.site = site

    def forward(self, cue: Tensor, mask: Tensor, num_data: int | None = None) -> None:
        m = mask.to(cue.dtype)
        loc, scale = self.net(torch.cat([cue * m, m], -1))
        B = cue.shape[0]
        with pyro.plate("data", num_data or B, subsample=torch.arange(B, device=cue.device), dim=-1):
            pyro.sample(self.site, dist.Normal(loc, scale).to_event(1))


def warm_start(guide: torch.nn.Module, encoder: torch.nn.Module) -> bool:
    """Copy ``encoder``'s weights into ``guide`` (input ``[x ⊙ m, m]``) so that the guide starts as
    the encoder: the input layer gets the encoder's weights on the ``x`` half and zeros on the
    ``m`` half.  Returns False (and changes nothing) when the two architectures differ."""
    g_state, e_state = guide.state_dict(), encoder.state_dict()
    if set(g_state) != set(e_state):
        return False
    plan = {}
    for k, g in g_state.items():
        e = e_state[k]
        if g.shape == e.shape:
            plan[k] = e
        elif g.dim() >= 2 and g.shape[0] == e.shape[0] and g.shape[2:] == e.shape[2:] and g.shape[1] == 2 * e.shape[1]:
            plan[k] = torch.cat([e, torch.zeros_like(e)], 1)
        else:
            return False
    guide.load_state_dict(plan)
    return True


def fit_retrieval_guide(
    memory: Any,
    items: Any = None,
    *,
    corruption: Corruption = "drop",
    level: float | int | None = None,
    copies: int = 10,
    init_from_encoder: bool = True,
    num_steps: int = 500,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    **fit_options: Any,
) -> FitResult:
    """Train ``memory.retrieval_guide`` with :func:`varmem.fit` against the memory's model on
    corrupted cues (``Trace_ELBO``, Adam, minibatches of the ``"data"`` plate).

    Args:
        items: clean items ``[N, D]`` to corrupt (default: the decoded stored codes
            ``g(m_i)``, i.e. cues of what this memory holds).
        corruption, level: a :data:`varmem.corruptions.CORRUPTIONS` name and level, or a
            callable ``(x, generator) -> (cue, mask)``.
        copies: corrupted versions drawn per item (fixed before training).
        init_from_encoder: start the guide as the memory's encoder (:func:`warm_start`, when the
            architectures match), so SVI refines the encoder towards this memory's posterior.
        num_steps, batch_size, lr, seed, progress, **fit_options: passed to :func:`varmem.fit`.

    The decoder, encoder and stored codes are not changed.  Returns the :class:`varmem.FitResult`.
    """
    memory._check_not_empty()
    gen = torch.Generator(device=memory.device)
    gen.manual_seed(seed)
    with torch.no_grad():
        x = memory.decode(memory.codes) if items is None else memory.prepare_items(items)
    cue, mask, _ = corrupted_cues(memory, x, corruption, level, copies, gen)
    if init_from_encoder:
        warm_start(memory.retrieval_guide, memory.encoder)
    guide_params = {id(p) for p in memory.retrieval_guide.parameters()}
    frozen = [p for p in memory.parameters() if p.requires_grad and id(p) not in guide_params]
    for p in frozen:
        p.requires_grad_(False)
    try:
        result = fit(_MemoryModel(memory), _RetrievalGuide(memory.retrieval_guide, memory.latent_site),
                     (cue, mask), num_steps=num_steps, batch_size=min(batch_size, cue.shape[0]),
                     kwargs={"num_data": cue.shape[0]}, lr=lr, seed=seed, progress=progress, **fit_options)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    memory.guide_fitted.fill_(True)
    return result
