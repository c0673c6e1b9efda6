"""``"learned_precision"`` (GMM*): the code-space fixed point with a learned diagonal precision.

The VAE-GMM step ``z ← Σ_i softmax_i(-½ Σ_d p_d (z_d - m_id)²) m_i`` with ``p = exp(θ) / s²``
(``θ = 0``: the plain step with bandwidth ``s``).  Following Annabi et al.'s ``GMMStar``, ``θ`` is
trained per corruption by :func:`fit_precision`: start at the encoder mean of a corrupted cue,
take ``steps`` updates (1 in the reference), and minimise the mean squared distance to the stored
code of the clean item, with Adam (reference: 20 epochs, lr 0.01, batch 100; evaluation with 10
steps).  Directions in which the corruption moves codes get a small precision (they are ignored),
directions it leaves alone a large one.

Needs a :class:`~varmem.memories.latent.protocol.CodeSpace` memory with ``memory.codes``
(``[N, L]``), ``memory.bandwidth``, ``memory.chunk_size``, ``memory.precision`` and
``memory.log_precision`` (``θ``, a ``[L]`` buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...engine import engine
from ...helpers import want_weights
from ...kernels import kernel_stats
from ...retrieval import Retrieval
from ...validation import check_bool, check_int, check_positive, check_positive_int, check_seed
from .amortized import Corruption, corrupted_cues
from .protocol import CodeSpace

__all__ = ["retrieve_learned_precision", "fit_precision", "precision_step", "precision_loss", "PrecisionFit"]


@dataclass
class PrecisionFit:
    """What :func:`fit_precision` returns.

    Attributes:
        losses: the minibatch loss at every Adam step.
        steps: number of Adam steps.
        initial_loss, final_loss: the loss on all training cues with ``θ = 0`` and at the end.
        precision: the learned ``[L]`` precision ``exp(θ) / s²``.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    precision: Tensor | None = None


def precision_step(z: Tensor, codes: Tensor, precision: Tensor) -> Tensor:
    """One differentiable GMM* step ``Σ_i softmax_i(-½ Σ_d p_d (z_d - m_id)²) m_i`` (dense ``[B, N]``).

    The logits are expanded as ``(p ⊙ z)·m_i - ½ p·m_i² - ½ p·z²`` (the last term cancels in the
    softmax) so no ``[B, N, L]`` tensor is formed.
    """
    logits = (z * precision) @ codes.T - 0.5 * (codes * codes) @ precision
    return logits.softmax(-1) @ codes


def precision_loss(z0: Tensor, targets: Tensor, codes: Tensor, precision: Tensor, steps: int = 1) -> Tensor:
    """Mean squared distance ``mean ‖z_steps - m_target‖²/L`` after ``steps`` GMM* steps from ``z0``."""
    z = z0
    for _ in range(steps):
        z = precision_step(z, codes, precision)
    return (z - targets).pow(2).mean()


@engine("learned_precision", requires=(CodeSpace,))
def retrieve_learned_precision(
    memory: CodeSpace,
    cue: Tensor,
    mask: Tensor | None,
    *,
    max_steps: int = 10,
    precision: Tensor | None = None,
    init: str | Tensor = "encoder",
    return_weights: bool | None = None,
) -> Retrieval:
    """``max_steps`` GMM* steps from ``memory.init_latent(init)`` (reference: 10).

    Options:
        max_steps: number of steps.
        precision: a ``[L]`` positive precision (default ``memory.precision``, the one learned by
            the last ``fit_precision``; keep one per corruption and pass it here).
        init: ``"encoder"``, ``"guide"``, ``"prior_mean"`` or a ``[B, L]`` tensor.
        return_weights: keep the ``[B, N]`` responsibilities (under the learned precision).
    """
    check_int(max_steps, "option max_steps", minimum=0)
    check_bool(return_weights, "option return_weights", allow_none=True)
    codes = memory.codes
    if precision is None:
        p = memory.precision
    else:
        if not torch.is_tensor(precision) or not precision.is_floating_point():
            raise TypeError(f"option precision must be a floating tensor, got {type(precision).__name__}")
        p = precision.to(codes)
        if p.shape != (codes.shape[1],) or not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
            raise ValueError(f"option precision must be a finite, positive [{codes.shape[1]}] tensor")
    z = memory.init_latent(cue, mask, init).detach()
    with torch.no_grad():
        for _ in range(max_steps):
            z = kernel_stats(z, codes, p, chunk_size=memory.chunk_size).mean
        dense = want_weights(return_weights, z.shape[0], codes.shape[0])
        stats = kernel_stats(z, codes, p, weights=dense, chunk_size=memory.chunk_size)
        pattern = memory.decode(z)
    return Retrieval(pattern=pattern, method="learned_precision", code=z, weights=stats.weights,
                     weights_at="final_state", index=stats.index, steps=max_steps, info={"precision": p})


def fit_precision(
    memory: Any,
    items: Any = None,
    *,
    corruption: Corruption = "drop",
    level: float | int | None = None,
    copies: int = 10,
    epochs: int = 20,
    batch_size: int = 100,
    lr: float = 0.01,
    steps: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> PrecisionFit:
    """Train ``memory.log_precision`` (``θ``, from 0) for one corruption; returns a
    :class:`PrecisionFit` (losses, loss on all training cues before and after, the precision).

    Args:
        items: clean items ``[N, D]`` whose stored codes are the targets (default: the decoded
            stored codes ``g(m_i)``, with targets ``m_i``).  Given items, the targets are their
            encoder means, which are the stored codes when these items were written.
        corruption, level, copies: as for :func:`varmem.memories.latent.amortized.fit_retrieval_guide`.
        seed: seeds the corruptions and the minibatch order.
        epochs, batch_size, lr: Adam over minibatches of corrupted cues (reference: 20, 100, 0.01).
        steps: GMM* steps inside the loss (reference: 1).
    """
    memory._check_not_empty()
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(steps, "steps")
    lr = check_positive(lr, "lr")
    seed = check_seed(seed)
    check_bool(progress, "progress")
    gen = torch.Generator(device=memory.device)
    gen.manual_seed(seed)
    codes = memory.codes
    with torch.no_grad():
        if items is None:
            x, targets = memory.decode(codes), codes
        else:
            x = memory.prepare_items(items)
            targets = memory.encode(x)[0]
        cue, mask, index = corrupted_cues(memory, x, corruption, level, copies, gen)
        z0 = memory.init_latent(cue, mask, "encoder")
    targets = targets[index]
    s2 = memory.bandwidth**2
    theta = torch.zeros_like(memory.log_precision, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    record = PrecisionFit()
    with torch.no_grad():
        initial = precision_loss(z0, targets, codes, theta.exp() / s2, steps).item()
    order_gen = torch.Generator(device="cpu")
    order_gen.manual_seed(seed)
    n = z0.shape[0]
    for _ in tqdm(range(epochs), desc="precision", disable=not progress, leave=False):
        order = torch.randperm(n, generator=order_gen).to(z0.device)
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            opt.zero_grad()
            loss = precision_loss(z0[idx], targets[idx], codes, theta.exp() / s2, steps)
            loss.backward()
            opt.step()
            record.losses.append(loss.item())
            record.steps += 1
    with torch.no_grad():
        final = precision_loss(z0, targets, codes, theta.exp() / s2, steps).item()
        memory.log_precision.copy_(theta.detach())
    record.initial_loss, record.final_loss, record.precision = initial, final, memory.precision.clone()
    return record
