"""Streaming kernel statistics over a large set of stored items.

Every kernel computation in varmem reduces to the same quantities.  For queries ``q`` (``[B, D]``),
stored items ``ξ`` (``[N, D]``), a kernel parameter ``p`` (a scalar, ``[D]`` or ``[B, D]``) and an
optional per-item bias ``c`` (``[N]``: log mixture weights), a :class:`Kernel` gives the logits
``ℓ_bi = k(q_b, ξ_i; p) + c_i``, and we need ``lse_b = log Σ_i exp(ℓ_bi)``, the softmax-weighted
moments ``Σ_i w_bi ξ_i`` and ``Σ_i w_bi ξ_i²`` (``w = softmax_i ℓ``), the arg-max item and
sometimes the full ``[B, N]`` weights.  The two built-in kernels:

* :class:`GaussianKernel` (``"gaussian"``): ``ℓ_bi = -½ Σ_d p_bd (q_bd - ξ_id)²``, expanded as
  ``-½ p·q² + (p⊙q)·ξ - ½ p·ξ²`` so each chunk costs two matrix products (the first term is a
  per-query constant, added to ``lse`` at the end; it cancels in the softmax);
* :class:`DotProductKernel` (``"dot"``): ``ℓ_bi = Σ_d p_bd q_bd ξ_id`` (the exponential
  dot-product kernel of modern Hopfield networks and attention).

A new kernel subclasses :class:`Kernel` and defines :meth:`Kernel.block_logits` (the logits of one
chunk of items); it then gets chunked streaming, sampling and a memory-light gradient of the
log-sum-exp (by autograd on one chunk at a time) with no other code.

The quantities are computed chunk by chunk over the items: each chunk's logits go through torch's
fused softmax, and the per-chunk log-normalisers and moments are merged with ``logaddexp`` (an
online log-sum-exp, as in flash attention), so memory is ``O(B·chunk + B·D)``: a ``[B, N, D]``
tensor is never formed and a ``[B, N]`` one only when the caller asks for the weights.  On the CPU
chunks are cache-sized and, with a :class:`Workspace` (memories own one each), their blocks are
written into reused per-thread buffers, so a read allocates no large tensor.

:func:`kernel_log_sum_exp` wraps the log-sum-exp in an autograd function whose backward pass
streams over the items again (for the built-in kernels it is the closed form
``∂ lse / ∂q = p ⊙ (ξ̄ - q)`` resp. ``p ⊙ ξ̄``, ``ξ̄`` the softmax mean, from the forward pass), so
no ``[B, N]`` logits are stored.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .validation import check_positive_int

__all__ = [
    "Kernel", "GaussianKernel", "DotProductKernel", "KERNELS", "as_kernel", "Prepared", "Workspace",
    "KernelStats", "kernel_stats", "kernel_log_sum_exp", "sample_items", "default_chunk_size", "KernelBackend",
    "gumbel_max_items",
]

# Target entries of one [B, chunk] block of logits.  On the CPU a block should stay in the L2 / L3
# cache (2**19 float32 = 2 MiB: 5-15 % faster than 2**22 at N ≥ 10⁴ on a 2-core EPYC, and 8× less
# scratch memory); on a GPU bigger blocks mean fewer kernel launches.
_BLOCK_ELEMENTS = {"cpu": 2**19}
_BLOCK_ELEMENTS_DEFAULT = 2**22


def default_chunk_size(num_queries: int, device: torch.device | str | None = None) -> int:
    """Items per chunk so that one ``[B, chunk]`` block holds about ``2**19`` entries on the CPU
    (``device`` None or ``"cpu"``) and ``2**22`` elsewhere; at least 1024 items."""
    kind = "cpu" if device is None else torch.device(device).type
    block = _BLOCK_ELEMENTS.get(kind, _BLOCK_ELEMENTS_DEFAULT)
    return max(1024, block // max(1, num_queries))


# --- reusable blocks ------------------------------------------------------------------------------
class Workspace:
    """Reusable CPU buffers for the ``[B, chunk]`` logits and weights blocks, one set per thread.

    A fresh multi-MiB tensor per call is returned to the OS by glibc's heap trimming and
    page-faulted back in on the next call (measured: up to half the time of a one-update read at
    N = 10⁴); reusing one buffer per role avoids that.  Each memory that streams over its items
    owns one (``memory.workspace``); off the CPU the caching allocator already does this, so plain
    allocations are used there.  Copying or pickling a workspace gives an empty one.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _state(self) -> tuple[dict, dict]:
        local = self._local
        if not hasattr(local, "buffers"):
            local.buffers, local.views = {}, {}
        return local.buffers, local.views

    def block(self, role: str, rows: int, cols: int, like: Tensor) -> Tensor:
        """A ``[rows, cols]`` tensor of ``like``'s dtype whose contents are garbage."""
        if like.device.type != "cpu":
            return like.new_empty(rows, cols)
        buffers, views = self._state()
        view = views.get((role, like.dtype, rows, cols))
        if view is not None:
            return view
        buf = buffers.get((role, like.dtype))
        if buf is None or buf.numel() < rows * cols:
            buf = buffers[role, like.dtype] = like.new_empty(rows * cols)
            for key in [k for k in views if k[:2] == (role, like.dtype)]:
                del views[key]
        if len(views) > 64:  # many shapes seen: forget the views (the buffers stay)
            views.clear()
        view = views[role, like.dtype, rows, cols] = buf[: rows * cols].view(rows, cols)
        return view

    @property
    def nbytes(self) -> int:
        """Bytes this thread's buffers hold (at most two ``[B, chunk]`` blocks per dtype: ``2 · 2**19``
        entries, 4 MiB in float32, with the default chunk size)."""
        return sum(b.numel() * b.element_size() for b in self._state()[0].values())

    def release(self) -> None:
        """Free this thread's buffers (they are allocated again by the next call that needs them)."""
        buffers, views = self._state()
        buffers.clear()
        views.clear()

    def __deepcopy__(self, memo: dict) -> "Workspace":
        return Workspace()

    def __reduce__(self) -> tuple:
        return (Workspace, ())


# --- kernels ---------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A query batch prepared for one kernel: ``query [B, D]``, the parameter ``p`` (a float, or a
    tensor broadcast to ``[D]`` or ``[B, D]``), ``pq = p ⊙ q``, whether ``p`` is per query, and the
    per-query constant added to ``lse`` (``[B]`` or None)."""

    query: Tensor
    p: Tensor | float
    pq: Tensor
    per_query: bool
    const: Tensor | None


class Kernel(ABC):
    """Logits ``ℓ_bi = k(q_b, ξ_i; p) + c_i`` of queries against stored items (see the module doc).

    Subclasses define :meth:`block_logits`; :meth:`prepare` (precomputations per query batch, the
    per-query constant) and :meth:`lse_grad` (a closed-form gradient of the log-sum-exp from the
    softmax mean) are optional.
    """

    name: str = "kernel"

    def prepare(self, query: Tensor, precision: Tensor | float) -> Prepared:
        """``p`` broadcast, ``p ⊙ q``, and no per-query constant."""
        if not torch.is_tensor(precision):  # a number: no tensor to build or broadcast
            p: Tensor | float = float(precision)
            return Prepared(query, p, p * query, False, None)
        per_query = precision.dim() == 2
        p = precision if precision.dim() > 0 else precision.expand(query.shape[-1])
        return Prepared(query, p, p * query, per_query, None)

    @abstractmethod
    def block_logits(self, prep: Prepared, chunk: Tensor, bias: Tensor | None, out: Tensor | None) -> Tensor:
        """Logits ``[B, C]`` of the chunk of items ``[C, D]`` (without ``prep.const``), plus ``bias``
        (``[C]``) when given; written into ``out`` when given.  Differentiable in the query."""

    def lse_grad(self, prep: Prepared, mean: Tensor) -> Tensor | None:
        """``∂ lse / ∂q`` ``[B, D]`` from the softmax mean ``ξ̄`` (None: no closed form, stream again)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianKernel(Kernel):
    """``ℓ_bi = -½ Σ_d p_bd (q_bd - ξ_id)²``: the Gaussian (squared-distance) kernel."""

    name = "gaussian"

    def prepare(self, query: Tensor, precision: Tensor | float) -> Prepared:
        prep = super().prepare(query, precision)
        if isinstance(prep.p, float):
            prep.const = (-0.5 * prep.p) * (query * query).sum(-1)
        else:
            prep.const = -0.5 * (prep.p * query * query).sum(-1)
        return prep

    def block_logits(self, prep: Prepared, chunk: Tensor, bias: Tensor | None, out: Tensor | None) -> Tensor:
        p = prep.p
        if prep.per_query:
            logits = torch.mm(prep.pq, chunk.T, out=out).addmm_(p, (chunk * chunk).T, alpha=-0.5)
            return logits if bias is None else logits.add_(bias)
        # the item norms, one chunk at a time (memory stays O(chunk · D))
        norms = -0.5 * ((chunk * chunk) @ p) if torch.is_tensor(p) else (-0.5 * p) * (chunk * chunk).sum(-1)
        norms = norms if bias is None else norms + bias
        return torch.addmm(norms.unsqueeze(0), prep.pq, chunk.T, out=out)

    def lse_grad(self, prep: Prepared, mean: Tensor) -> Tensor:
        return prep.p * (mean - prep.query)


class DotProductKernel(Kernel):
    """``ℓ_bi = Σ_d p_bd q_bd ξ_id``: the exponential dot-product kernel."""

    name = "dot"

    def block_logits(self, prep: Prepared, chunk: Tensor, bias: Tensor | None, out: Tensor | None) -> Tensor:
        if bias is None:
            return torch.mm(prep.pq, chunk.T, out=out)
        return torch.addmm(bias.unsqueeze(0), prep.pq, chunk.T, out=out)

    def lse_grad(self, prep: Prepared, mean: Tensor) -> Tensor:
        return prep.p * mean


KERNELS: dict[str, Kernel] = {"gaussian": GaussianKernel(), "dot": DotProductKernel()}
"""The built-in kernels by name."""


def as_kernel(kernel: str | Kernel) -> Kernel:
    """A :class:`Kernel` instance from a kernel or its name (``"gaussian"``, ``"dot"``)."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str) and kernel in KERNELS:
        return KERNELS[kernel]
    raise ValueError(f"kernel must be a varmem.kernels.Kernel or one of {sorted(KERNELS)}, got {kernel!r}")


# --- streaming statistics ------------------------------------------------------------------------
@dataclass
class KernelStats:
    """Results of :func:`kernel_stats` (``B`` queries, ``D`` dims, ``N`` items).

    Attributes:
        lse: ``[B]`` ``log Σ_i exp(ℓ_bi)`` including the kernel's per-query constant (None when not
            requested).
        mean: ``[B, D]`` ``Σ_i w_bi ξ_i`` (``[B, Dv]`` ``Σ_i w_bi v_i`` with ``values``).
        index: ``[B]`` ``argmax_i ℓ_bi`` (None when not requested).
        second_moment: ``[B, D]`` ``Σ_i w_bi ξ_i²`` (only if requested; of ``v`` with ``values``).
        weights: ``[B, N]`` ``w_bi`` (only if requested; rows sum to 1).
        top: ``[B]`` ``max_i ℓ_bi`` without the per-query constant (with ``index``; None otherwise):
            what a :class:`KernelBackend` compares to find the arg-max across parts of the items.
    """

    lse: Tensor | None
    mean: Tensor
    index: Tensor | None
    second_moment: Tensor | None = None
    weights: Tensor | None = None
    top: Tensor | None = None


class KernelBackend:
    """Computes the kernel sums of a memory whose items are not (only) one local tensor.

    A memory hands its backend (``memory.kernel_backend``, None for a plain memory) to
    :func:`kernel_stats` and :func:`sample_items`, which then delegate the whole call to
    :meth:`kernel_stats` / :meth:`sample_items` here, with the same arguments.  A backend returns
    what the plain call would return on *all* the items the memory stands for: a sharded backend
    (:mod:`varmem.sharding`) merges the per-process log-sum-exps and weighted sums with collective
    operations; an indexed backend (:mod:`varmem.indexed`) sums over nearest-neighbour candidates.
    The defaults below are the plain local computation.
    """

    def kernel_stats(self, query: Tensor, items: Tensor, precision: Tensor | float, **options) -> KernelStats:
        return kernel_stats(query, items, precision, **options)

    def sample_items(self, query: Tensor, items: Tensor, precision: Tensor | float, num_samples: int,
                     **options) -> Tensor:
        return sample_items(query, items, precision, num_samples, **options)

    def total(self, local: int) -> int:
        """The number of items the memory stands for, given the ``local`` number it holds."""
        return local

    def rows(self, items: Tensor, index: Tensor) -> Tensor:
        """``items[index]`` for indices ``[...]`` into all the items (``[..., D]``)."""
        return items[index]

    def all_max(self, value: float) -> float:
        """The maximum of a per-part number over all parts (the identity for one part)."""
        return value

    def mean_item(self, items: Tensor) -> Tensor:
        """``[D]`` the mean of all the items."""
        return items.mean(0)

    holds_all_items: bool = True
    """Whether ``items`` are all the items (False for a shard: then only kernel sums are global)."""


def _check_items(items: Tensor, what: str) -> int:
    if items.dim() != 2 or items.shape[0] == 0:
        raise ValueError(f"{what} needs at least one item (items of shape [N >= 1, D]), got {tuple(items.shape)}")
    return items.shape[0]


def kernel_stats(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    *,
    kernel: str | Kernel = "gaussian",
    second_moment: bool = False,
    weights: bool = False,
    item_bias: Tensor | None = None,
    values: Tensor | None = None,
    return_index: bool = True,
    return_lse: bool = True,
    chunk_size: int | None = None,
    workspace: Workspace | None = None,
    backend: KernelBackend | None = None,
) -> KernelStats:
    """Log-normaliser, softmax moments, arg-max and (optionally) weights of the kernel logits.

    Args:
        query: ``[B, D]``.
        items: ``[N, D]`` with ``N ≥ 1``.
        precision: the kernel parameter ``p``: scalar, ``[D]`` or ``[B, D]``; non-negative.
        kernel: a :class:`Kernel` or its name (``"gaussian"``, ``"dot"``).
        second_moment: also return ``Σ_i w_bi ξ_i²``.
        weights: also return the dense ``[B, N]`` softmax weights.
        item_bias: ``[N]`` per-item term ``c_i`` added to the logits (a constant, not differentiated;
            ``-inf`` for items of zero weight).
        values: ``[N, Dv]`` rows to average instead of the items (attention with separate keys and
            values): ``mean`` is then ``Σ_i w_bi v_i`` and ``second_moment`` ``Σ_i w_bi v_i²``.
        return_index: track the arg-max item (``index`` is None otherwise; slightly cheaper).
        return_lse: compute ``lse`` (None otherwise: with one chunk and no index that saves two
            ``[B, N]`` reductions, for callers that only need the softmax mean).
        chunk_size: items per chunk (default :func:`default_chunk_size`).
        workspace: reusable blocks for the chunk logits and weights (CPU, no autograd).
        backend: a :class:`KernelBackend` that computes the whole call instead (sharded or indexed
            items); None: the items are this tensor.

    Each chunk goes through torch's fused softmax; its log-normaliser is ``ℓ_max - log w_max``
    (the largest weight is ``1 / Σ_i exp(ℓ_i - ℓ_max) ≥ 1/C``, so its log is accurate), and chunks
    are merged with ``logaddexp`` as in flash attention.
    """
    if backend is not None:
        return backend.kernel_stats(
            query, items, precision, kernel=kernel, second_moment=second_moment, weights=weights,
            item_bias=item_bias, values=values, return_index=return_index, return_lse=return_lse,
            chunk_size=chunk_size, workspace=workspace)
    kernel = as_kernel(kernel)
    N = _check_items(items, "kernel_stats")
    prep = kernel.prepare(query, precision)
    B = query.shape[0]
    if values is not None and (values.dim() != 2 or values.shape[0] != N):
        raise ValueError(f"values must have shape [N={N}, Dv], got {tuple(values.shape)}")
    chunk_size = chunk_size or default_chunk_size(B, query.device)
    bias_grad = item_bias is not None and item_bias.requires_grad
    precision_grad = torch.is_tensor(precision) and precision.requires_grad
    values_grad = values is not None and values.requires_grad
    needs_grad = torch.is_grad_enabled() and (
        query.requires_grad or items.requires_grad or precision_grad or bias_grad or values_grad
    )
    scratch = workspace if not needs_grad else None
    one_block = N <= chunk_size
    need_top = return_index or return_lse or weights or not one_block or item_bias is not None
    dense = query.new_empty(B, N) if weights else None
    chunk_lses: list[tuple[int, int, Tensor]] = []
    lse = mean = second = index = best = None
    for start in range(0, N, chunk_size):
        chunk = items[start : start + chunk_size]
        size = chunk.shape[0]
        bias = None if item_bias is None else item_bias[start : start + chunk_size]
        out = scratch.block("logits", B, size, query) if scratch is not None else None
        logits = kernel.block_logits(prep, chunk, bias, out)
        if return_index:
            top, arg = logits.max(-1)
        else:
            top, arg = (logits.amax(-1) if need_top else None), None
        if dense is not None and one_block:
            w = torch.softmax(logits, -1, out=dense)
        elif scratch is not None:
            w = torch.softmax(logits, -1, out=scratch.block("weights", B, size, query))
        else:
            w = torch.softmax(logits, -1)
        chunk_lse = None if top is None else top - w.amax(-1).log()
        averaged = chunk if values is None else values[start : start + chunk_size]
        chunk_mean = w @ averaged
        chunk_second = w @ (averaged * averaged) if second_moment else None
        if item_bias is not None:  # a row whose chunk logits are all -inf (zero-weight items) adds nothing
            empty = torch.isneginf(top)
            chunk_lse = chunk_lse.masked_fill(empty, float("-inf"))
            chunk_mean = chunk_mean.masked_fill(empty.unsqueeze(-1), 0.0)
            if chunk_second is not None:
                chunk_second = chunk_second.masked_fill(empty.unsqueeze(-1), 0.0)
            if dense is not None:
                w.masked_fill_(empty.unsqueeze(-1), 0.0)
        if dense is not None and not one_block:
            dense[:, start : start + size] = w
            chunk_lses.append((start, size, chunk_lse))
        if mean is None:
            lse, mean, second, index, best = chunk_lse, chunk_mean, chunk_second, arg, top
            continue
        merged = torch.logaddexp(lse, chunk_lse)
        old_share = (lse - merged).exp_().unsqueeze(-1)
        new_share = (chunk_lse - merged).exp_().unsqueeze(-1)
        if item_bias is not None:  # -inf - (-inf) = NaN for rows with no weight yet: they share 0
            # (out of place: exp_'s backward needs its output unchanged when the moments need grad)
            old_share, new_share = old_share.nan_to_num(0.0), new_share.nan_to_num(0.0)
        mean = mean * old_share + chunk_mean * new_share
        if second is not None:
            second = second * old_share + chunk_second * new_share
        if arg is not None:
            index = torch.where(top > best, arg + start, index)
            best = torch.maximum(best, top)
        lse = merged

    for start, size, c_lse in chunk_lses:  # each chunk's softmax rescaled to the whole set's
        share = (c_lse - lse).exp_().nan_to_num_(0.0).unsqueeze(-1)
        dense[:, start : start + size].mul_(share)
    if lse is not None and prep.const is not None:
        lse = lse + prep.const
    return KernelStats(lse=lse if return_lse else None, mean=mean, index=index, second_moment=second,
                       weights=dense, top=best if return_index else None)


def sample_items(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    num_samples: int,
    *,
    kernel: str | Kernel = "gaussian",
    item_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    backend: KernelBackend | None = None,
) -> Tensor:
    """``[S, B]`` item indices drawn from ``softmax_i ℓ_bi`` (the logits of :func:`kernel_stats`),
    ``S = num_samples`` independent draws per query.

    Gumbel-max streamed over the items: each chunk's logits plus Gumbel noise ``-log(-log u)`` are
    maxed and the running arg-max kept, so memory is ``O(S·B·chunk)`` split further over blocks
    of samples (about ``2**22`` noise entries at a time); no ``[B, N]`` or ``[S, B, N]`` tensor is
    formed.  The draws depend on ``generator`` and on the chunking.  With a ``backend``
    (:class:`KernelBackend`) the backend draws them.
    """
    if backend is not None:
        return backend.sample_items(query, items, precision, num_samples, kernel=kernel, item_bias=item_bias,
                                    generator=generator, chunk_size=chunk_size)
    return gumbel_max_items(query, items, precision, num_samples, kernel=kernel, item_bias=item_bias,
                            generator=generator, chunk_size=chunk_size)[1]


def gumbel_max_items(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    num_samples: int,
    *,
    kernel: str | Kernel = "gaussian",
    item_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`sample_items` returning ``(value [S, B], index [S, B])``: the winning perturbed logit
    ``max_i (ℓ_bi + g_sbi)`` (without the kernel's per-query constant) and its item; the maximum
    over several disjoint sets of items of their winners is a draw from the union."""
    check_positive_int(num_samples, "num_samples")
    kernel = as_kernel(kernel)
    N = _check_items(items, "sample_items")
    prep = kernel.prepare(query, precision)
    B = query.shape[0]
    chunk_size = chunk_size or default_chunk_size(B, query.device)
    block = max(1, _BLOCK_ELEMENTS_DEFAULT // max(1, B * min(chunk_size, N)))  # samples per noise block
    tiny = torch.finfo(query.dtype).tiny
    best = query.new_full((num_samples, B), float("-inf"))
    index = torch.zeros(num_samples, B, dtype=torch.long, device=query.device)
    with torch.no_grad():
        for start in range(0, N, chunk_size):
            chunk = items[start : start + chunk_size]
            bias = None if item_bias is None else item_bias[start : start + chunk_size]
            logits = kernel.block_logits(prep, chunk, bias, None)  # [B, C]
            for s0 in range(0, num_samples, block):
                s1 = min(num_samples, s0 + block)
                noise = torch.empty((s1 - s0, B, chunk.shape[0]), dtype=query.dtype, device=query.device)
                gumbel = noise.uniform_(generator=generator).clamp_min_(tiny).log_().neg_().log_().neg_()
                value, arg = gumbel.add_(logits).max(-1)  # [s, B]
                better = value > best[s0:s1]
                index[s0:s1] = torch.where(better, arg + start, index[s0:s1])
                best[s0:s1] = torch.where(better, value, best[s0:s1])
    return best, index


class _KernelLogSumExp(torch.autograd.Function):
    """``lse(q) = log Σ_i exp(ℓ_i(q))`` with a streaming, memory-light gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, query: Tensor, items: Tensor, precision: Tensor, item_bias: Tensor | None, kernel: Kernel,
        chunk_size: int | None,
    ):
        stats = kernel_stats(query, items, precision, item_bias=item_bias, return_index=False, kernel=kernel,
                             chunk_size=chunk_size)
        ctx.save_for_backward(query, items, precision, stats.mean, stats.lse)
        ctx.item_bias, ctx.kernel, ctx.chunk_size = item_bias, kernel, chunk_size
        return stats.lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        query, items, precision, mean, lse = ctx.saved_tensors
        kernel: Kernel = ctx.kernel
        grad = kernel.lse_grad(kernel.prepare(query, precision), mean)
        if grad is None:
            grad = _streamed_lse_grad(kernel, query, items, precision, ctx.item_bias, lse, ctx.chunk_size)
        return grad_output.unsqueeze(-1) * grad, None, None, None, None, None


def _streamed_lse_grad(kernel: Kernel, query: Tensor, items: Tensor, precision: Tensor, item_bias: Tensor | None,
                       lse: Tensor, chunk_size: int | None) -> Tensor:
    """``Σ_i w_bi ∂ℓ_bi/∂q_b`` by autograd on one chunk at a time (any kernel)."""
    chunk_size = chunk_size or default_chunk_size(query.shape[0], query.device)
    grad = torch.zeros_like(query)
    for start in range(0, items.shape[0], chunk_size):
        chunk = items[start : start + chunk_size]
        bias = None if item_bias is None else item_bias[start : start + chunk_size]
        with torch.enable_grad():
            q = query.detach().requires_grad_(True)
            prep = kernel.prepare(q, precision)
            logits = kernel.block_logits(prep, chunk, bias, None)
            if prep.const is not None:
                logits = logits + prep.const.unsqueeze(-1)
            w = (logits.detach() - lse.unsqueeze(-1)).exp()
            (g,) = torch.autograd.grad((logits * w).sum(), q)
        grad += g
    return grad


def kernel_log_sum_exp(
    query: Tensor,
    items: Tensor,
    precision: Tensor | float,
    *,
    kernel: str | Kernel = "gaussian",
    item_bias: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """``log Σ_i exp(ℓ_i(q) + c_i)`` for ``query [..., D]`` → ``[...]``, differentiable in ``query``
    (e.g. the Gaussian kernel's ``log Σ_i exp(-½ p ‖q - ξ_i‖² + c_i)``).

    ``precision`` is a scalar or ``[D]``; ``item_bias`` ``c`` is ``[N]`` or None.  When ``items``,
    ``precision`` or ``item_bias`` require gradients the plain autograd path over the dense
    ``[B, N]`` logits is used instead of the streaming one.
    """
    kernel = as_kernel(kernel)
    _check_items(items, "kernel_log_sum_exp")
    if not torch.is_tensor(precision):
        precision = torch.as_tensor(precision, dtype=query.dtype, device=query.device)
    batch_shape = query.shape[:-1]
    flat = query.reshape(-1, query.shape[-1])
    bias_grad = item_bias is not None and item_bias.requires_grad
    if torch.is_grad_enabled() and (items.requires_grad or precision.requires_grad or bias_grad):
        prep = kernel.prepare(flat, precision)
        logits = kernel.block_logits(prep, items, item_bias, None)
        lse = torch.logsumexp(logits, dim=-1)
        if prep.const is not None:
            lse = lse + prep.const
    else:
        lse = _KernelLogSumExp.apply(flat, items, precision, item_bias, kernel, chunk_size)
    return lse.reshape(batch_shape)

