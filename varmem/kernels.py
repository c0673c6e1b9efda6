"""Streaming Gaussian-kernel statistics over a large set of stored items.

Every kernel-density computation in varmem reduces to the same quantities.  For queries
``q`` (``[B, D]``), stored items ``ξ`` (``[N, D]``) and a diagonal precision ``p`` (a scalar,
``[D]`` shared by all queries, or ``[B, D]`` per query), the logits are

    ℓ_bi = -½ Σ_d p_bd (q_bd - ξ_id)² + c_i,

with an optional per-item bias ``c`` (``[N]``: log mixture weights, or the ``β‖ξ_i‖²/2`` that turns
Gaussian-kernel logits into the dot-product logits ``β ξ_iᵀq`` up to a per-query constant), and
we need ``lse_b = log Σ_i exp(ℓ_bi)``, the softmax-weighted moments ``Σ_i w_bi ξ_i`` and
``Σ_i w_bi ξ_i²`` (``w = softmax_i ℓ``), the arg-max item and sometimes the full ``w``.

They are computed chunk by chunk over the items with an online (running-max) log-sum-exp, as in
flash attention, so memory is ``O(B·chunk + B·D)``: a ``[B, N, D]`` tensor is never formed and a
``[B, N]`` one only when the caller asks for the weights.  The quadratic form is expanded as
``p·q² - 2 (p⊙q)·ξ + p·ξ²`` so each chunk costs two matrix products.

``kernel_log_sum_exp`` wraps the log-sum-exp in an autograd function whose backward pass uses
``∂ lse / ∂q = p ⊙ (ξ̄ - q)`` (``ξ̄`` the softmax mean) instead of storing the ``[B, N]`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["KernelStats", "kernel_stats", "kernel_log_sum_exp", "default_chunk_size", "KERNELS"]

_BLOCK_ELEMENTS = 2**22  # target size of one [B, chunk] block of logits


def default_chunk_size(num_queries: int) -> int:
    """Items per chunk so that one ``[B, chunk]`` block holds about 4M entries."""
    return max(1024, _BLOCK_ELEMENTS // max(1, num_queries))


@dataclass
class KernelStats:
    """Results of :func:`kernel_stats` (``B`` queries, ``D`` dims, ``N`` items).

    Attributes:
        lse: ``[B]`` ``log Σ_i exp(ℓ_bi)`` including the ``-½ Σ_d p q²`` term.
        mean: ``[B, D]`` ``Σ_i w_bi ξ_i``.
        second_moment: ``[B, D]`` ``Σ_i w_bi ξ_i²`` (only if requested).
        index: ``[B]`` ``argmax_i ℓ_bi`` (None when not requested).
        log_weights: ``[B, N]`` ``log w_bi`` (only if requested).
    """

    lse: Tensor
    mean: Tensor
    index: Tensor | None
    second_moment: Tensor | None = None
    log_weights: Tensor | None = None


KERNELS = ("gaussian", "dot")


def _precision_terms(query: Tensor, precision: Tensor, kernel: str) -> tuple[Tensor, Tensor, bool]:
    """Return ``(p, query constant [B], per_query)`` with ``p`` broadcast to ``[D]`` or ``[B, D]``.

    The query constant is ``-½ Σ_d p q²`` for the Gaussian kernel and 0 for the dot kernel.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    per_query = precision.dim() == 2
    p = precision if precision.dim() > 0 else precision.expand(query.shape[-1])
    const = -0.5 * (p * query * query).sum(-1) if kernel == "gaussian" else query.new_zeros(query.shape[0])
    return p, const, per_query


def _logit_chunks(
    query: Tensor, items: Tensor, p: Tensor, per_query: bool, chunk_size: int, item_bias: Tensor | None,
    kernel: str,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(start, logits_without_query_constant [B, C], items_chunk [C, D])``.

    Logits are ``(p ⊙ q)·ξ_i + c_i`` (dot) or that minus ``½ Σ_d p ξ_id²`` (Gaussian).
    """
    pq = p * query
    for start in range(0, items.shape[0], chunk_size):
        chunk = items[start : start + chunk_size]
        bias = None if item_bias is None else item_bias[start : start + chunk_size]
        if kernel == "gaussian" and per_query:
            logits = pq @ chunk.T - 0.5 * (p @ (chunk * chunk).T)
            if bias is not None:
                logits = logits + bias
            yield start, logits, chunk
            continue
        if kernel == "gaussian":  # the item norms, one chunk at a time (memory stays O(chunk · D))
            norms = -0.5 * ((chunk * chunk) @ p)
            bias = norms if bias is None else norms + bias
        if bias is None:
            logits = pq @ chunk.T
        else:
            logits = torch.addmm(bias.unsqueeze(0), pq, chunk.T)
        yield start, logits, chunk


def kernel_stats(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    *,
    second_moment: bool = False,
    log_weights: bool = False,
    item_bias: Tensor | None = None,
    return_index: bool = True,
    kernel: str = "gaussian",
    chunk_size: int | None = None,
) -> KernelStats:
    """Log-normaliser, softmax moments and arg-max of the Gaussian-kernel logits (see module doc).

    Args:
        query: ``[B, D]``.
        items: ``[N, D]`` with ``N ≥ 1``.
        precision: scalar, ``[D]`` or ``[B, D]``; non-negative.
        second_moment: also return ``Σ_i w_bi ξ_i²``.
        log_weights: also return the dense ``[B, N]`` log-softmax.
        item_bias: ``[N]`` per-item term ``c_i`` added to the logits (a constant, not differentiated).
        return_index: track the arg-max item (``index`` is None otherwise; slightly cheaper).
        kernel: ``"gaussian"`` (the logits above) or ``"dot"``: ``ℓ_bi = Σ_d p_bd q_bd ξ_id + c_i``
            (the exponential dot-product kernel of modern Hopfield networks / attention).
        chunk_size: items per chunk (default :func:`default_chunk_size`).
    """
    if not torch.is_tensor(precision):
        precision = torch.as_tensor(precision, dtype=query.dtype, device=query.device)
    p, const, per_query = _precision_terms(query, precision, kernel)
    B, D = query.shape
    N = items.shape[0]
    chunk_size = chunk_size or default_chunk_size(B)
    if N <= chunk_size:  # one block: no running-max bookkeeping
        _, logits, _ = next(_logit_chunks(query, items, p, per_query, N, item_bias, kernel))
        index = logits.argmax(-1) if return_index else None
        dense = logits.clone() if log_weights else None
        top = logits.amax(-1, keepdim=True)
        expo = logits.sub_(top).exp_()
        total = expo.sum(-1, keepdim=True)
        lse_shifted = (top + total.log()).squeeze(-1)
        return KernelStats(
            lse=lse_shifted + const,
            mean=(expo @ items) / total,
            index=index,
            second_moment=(expo @ (items * items)) / total if second_moment else None,
            log_weights=None if dense is None else dense - lse_shifted.unsqueeze(-1),
        )

    running_max = query.new_full((B,), float("-inf"))
    total = query.new_zeros(B)
    mean = query.new_zeros(B, D)
    second = query.new_zeros(B, D) if second_moment else None
    index = torch.zeros(B, dtype=torch.long, device=query.device) if return_index else None
    dense = query.new_empty(B, N) if log_weights else None

    for start, logits, chunk in _logit_chunks(query, items, p, per_query, chunk_size, item_bias, kernel):
        if dense is not None:
            dense[:, start : start + chunk.shape[0]] = logits
        if index is not None:
            chunk_max, chunk_arg = logits.max(-1)
            index = torch.where(chunk_max > running_max, chunk_arg + start, index)
        else:
            chunk_max = logits.amax(-1)
        new_max = torch.maximum(running_max, chunk_max)
        rescale = torch.exp(running_max - new_max)
        expo = logits.sub_(new_max.unsqueeze(-1)).exp_()
        total = total * rescale + expo.sum(-1)
        mean = torch.addmm(mean * rescale.unsqueeze(-1), expo, chunk)
        if second is not None:
            second = torch.addmm(second * rescale.unsqueeze(-1), expo, chunk * chunk)
        running_max = new_max

    lse_shifted = running_max + total.log()
    mean = mean / total.unsqueeze(-1)
    if second is not None:
        second = second / total.unsqueeze(-1)
    if dense is not None:
        dense = dense - lse_shifted.unsqueeze(-1)
    return KernelStats(
        lse=lse_shifted + const, mean=mean, index=index, second_moment=second, log_weights=dense
    )


class _KernelLogSumExp(torch.autograd.Function):
    """``lse(q) = log Σ_i exp(-½ p ‖q - ξ_i‖²)`` with the analytic, memory-light gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, query: Tensor, items: Tensor, precision: Tensor, item_bias: Tensor | None, kernel: str,
        chunk_size: int | None,
    ):
        stats = kernel_stats(
            query, items, precision, item_bias=item_bias, return_index=False, kernel=kernel, chunk_size=chunk_size
        )
        ctx.save_for_backward(query, stats.mean, precision)
        ctx.kernel = kernel
        return stats.lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        query, mean, precision = ctx.saved_tensors
        direction = mean - query if ctx.kernel == "gaussian" else mean
        grad = grad_output.unsqueeze(-1) * precision * direction
        return grad, None, None, None, None, None


def kernel_log_sum_exp(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    *,
    item_bias: Tensor | None = None,
    kernel: str = "gaussian",
    chunk_size: int | None = None,
) -> Tensor:
    """``log Σ_i exp(-½ p ‖q - ξ_i‖² + c_i)`` (or ``log Σ_i exp(p q·ξ_i + c_i)`` for
    ``kernel="dot"``) for ``query [..., D]``, differentiable in ``query``.

    ``precision`` is a scalar or ``[D]``; ``item_bias`` ``c`` is ``[N]`` or None.  When ``items``,
    ``precision`` or ``item_bias`` require gradients the plain (memory-hungry, ``[B, N]``) autograd
    path is used instead of the streaming one.
    """
    if not torch.is_tensor(precision):
        precision = torch.as_tensor(precision, dtype=query.dtype, device=query.device)
    batch_shape = query.shape[:-1]
    flat = query.reshape(-1, query.shape[-1])
    bias_grad = item_bias is not None and item_bias.requires_grad
    if torch.is_grad_enabled() and (items.requires_grad or precision.requires_grad or bias_grad):
        if kernel == "gaussian":
            diff = flat.unsqueeze(-2) - items
            logits = -0.5 * (precision * diff * diff).sum(-1)
        else:
            logits = (precision * flat) @ items.T
        lse = torch.logsumexp(logits if item_bias is None else logits + item_bias, dim=-1)
    else:
        lse = _KernelLogSumExp.apply(flat, items, precision, item_bias, kernel, chunk_size)
    return lse.reshape(batch_shape)
