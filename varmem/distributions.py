"""Pyro distributions that varmem's memories are built from."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Size, Tensor

from .kernels import kernel_log_sum_exp

__all__ = ["KernelDensity", "Mixture", "SelectedComponent", "select_component"]


class KernelDensity(dist.TorchDistribution):
    """Isotropic Gaussian kernel density over stored items (equal weights unless given).

    ``p(z) = Σ_i π_i N(z; ξ_i, s² I_D)`` with ``π_i = 1/N`` by default, event shape ``[D]``.

    ``log_prob`` streams over the items in chunks (see :mod:`varmem.kernels`), so it works for
    millions of items and any ``D ≥ 1`` (Pyro's ``MixtureOfDiagNormalsSharedCovariance`` needs
    ``D ≥ 2``; ``MixtureSameFamily`` breaks autoguides and NUTS).  Its gradient in ``z`` is
    ``(Σ_i w_i ξ_i - z) / s²`` with ``w = softmax_i(-‖z - ξ_i‖² / 2s²)``: one mean-shift step.

    Args:
        items: ``[N, D]`` kernel centres (``N ≥ 1``).
        bandwidth: kernel standard deviation ``s > 0``.
        log_weights: optional ``[N]`` normalised log mixture weights ``log π_i`` (constants, not
            parameters: they enter the logits as a per-item bias).
        chunk_size: items per chunk in ``log_prob``.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        items: Tensor,
        bandwidth: float,
        *,
        log_weights: Tensor | None = None,
        chunk_size: int | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if items.dim() != 2 or items.shape[0] == 0:
            raise ValueError(f"KernelDensity needs items of shape [N, D] with N >= 1, got {tuple(items.shape)}")
        if log_weights is not None and log_weights.shape != items.shape[:1]:
            raise ValueError(f"log_weights must have shape [{items.shape[0]}], got {tuple(log_weights.shape)}")
        self.items = items
        self.log_weights = log_weights
        self.bandwidth = float(bandwidth)
        self.chunk_size = chunk_size
        super().__init__(batch_shape=Size(), event_shape=items.shape[-1:], validate_args=validate_args)

    @property
    def mixture_distribution(self) -> dist.Categorical:
        """The weights over the items: ``Categorical`` with logits ``log π`` (uniform by default)."""
        logits = self.items.new_zeros(self.items.shape[0]) if self.log_weights is None else self.log_weights
        return dist.Categorical(logits=logits)

    @property
    def component_distribution(self) -> dist.TorchDistribution:
        """The kernels ``N(ξ_i, s² I)``: batch shape ``[N]``, event shape ``[D]``."""
        return dist.Normal(self.items, self.bandwidth).to_event(1)

    @property
    def mean(self) -> Tensor:
        return self.items.mean(0) if self.log_weights is None else self.log_weights.exp() @ self.items

    @property
    def variance(self) -> Tensor:
        if self.log_weights is None:
            return self.items.var(0, unbiased=False) + self.bandwidth**2
        return self.log_weights.exp() @ (self.items - self.mean) ** 2 + self.bandwidth**2

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(z)`` for ``value [..., D]``, constants included: returns ``[...]``."""
        if self._validate_args:
            self._validate_sample(value)
        n, d = self.items.shape
        s2 = self.bandwidth**2
        lse = kernel_log_sum_exp(value, self.items, 1.0 / s2, item_bias=self.log_weights, chunk_size=self.chunk_size)
        log_norm = math.log(n) if self.log_weights is None else 0.0
        return lse - log_norm - 0.5 * d * math.log(2 * math.pi * s2)

    def sample(self, sample_shape: Size = Size()) -> Tensor:  # noqa: B008 (torch's signature)
        shape = self._extended_shape(sample_shape)[:-1]
        with torch.no_grad():
            if self.log_weights is None:
                index = torch.randint(self.items.shape[0], shape, device=self.items.device)
            else:
                index = torch.distributions.Categorical(logits=self.log_weights).sample(shape)
            centre = self.items[index]
            return centre + self.bandwidth * torch.randn_like(centre)


class Mixture(dist.MixtureSameFamily):
    """``p(z) = Σ_i π_i p_i(z)``: ``torch``'s ``MixtureSameFamily`` with a support that Pyro's
    autoguides and NUTS can transform.

    torch gives ``MixtureSameFamily`` a ``MixtureSameFamilyConstraint`` support that
    ``biject_to`` / ``transform_to`` do not know (``AutoDelta`` and ``NUTS`` then fail with
    ``NotImplementedError``); here the support is the components' own (e.g. ``real_vector`` for
    ``Normal(...).to_event(1)`` or ``StudentT(...).to_event(1)`` components).

    Args:
        mixture_distribution: ``Categorical`` over the ``N`` components.
        component_distribution: batch shape ``[N]``, event shape ``[D]``.
    """

    @constraints.dependent_property
    def support(self):  # type: ignore[override]
        return self._component_distribution.support


class SelectedComponent(dist.TorchDistribution):
    """Component ``index`` of a batch of ``N`` components: ``p(z) = p_{index}(z)``.

    ``components`` has batch shape ``[N]`` and event shape ``[L]``; ``index`` is an integer tensor
    of any shape (e.g. ``[B]``, or ``[N, 1]`` when Pyro enumerates the item).  ``log_prob(z)``
    evaluates every component at ``z`` and gathers ``log p_{index}(z)`` (``O(N)`` per value: fine
    for the few items of a mixture model read by enumeration; Gaussian components are indexed
    directly by :func:`select_component`).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, components: dist.TorchDistribution, index: Tensor, *, validate_args: bool | None = None) -> None:
        if len(components.batch_shape) != 1:
            raise ValueError(f"components must have batch shape [N], got {tuple(components.batch_shape)}")
        self.components, self.index = components, index
        super().__init__(batch_shape=index.shape, event_shape=components.event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):  # type: ignore[override]
        return self.components.support

    def expand(self, batch_shape: Size, _instance: object = None) -> "SelectedComponent":
        return SelectedComponent(self.components, self.index.expand(batch_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p_{index}(value)``: ``[...]`` for ``value [..., L]``, broadcast with ``index``."""
        event = len(self.event_shape)
        every = self.components.log_prob(value.unsqueeze(-1 - event))  # [..., N]
        shape = torch.broadcast_shapes(every.shape[:-1], self.index.shape)
        every = every.expand(*shape, every.shape[-1])
        return every.gather(-1, self.index.expand(shape).unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape: Size = Size()) -> Tensor:  # noqa: B008 (torch's signature)
        with torch.no_grad():
            every = self.components.sample(Size(sample_shape) + self.index.shape)  # [..., *index, N, L]
            event = len(self.event_shape)
            index = self.index.expand(Size(sample_shape) + self.index.shape)
            index = index.reshape(*index.shape, 1, *([1] * event)).expand(*index.shape, 1, *self.event_shape)
            return every.gather(-1 - event, index).squeeze(-1 - event)


def select_component(components: dist.TorchDistribution, index: Tensor) -> dist.TorchDistribution:
    """The distribution of component ``index`` (an integer tensor of any shape) of ``components``
    (batch ``[N]``, event ``[L]``), batch shape ``index.shape``.

    Independent univariate components (``Normal``, ``StudentT``, ``Laplace``, ...
    ``.to_event(1)``) are rebuilt from their indexed parameters (``N(loc[index], diag
    scale[index]²)``), so a log-density costs ``O(L)``, not ``O(N L)``; any other family is wrapped
    in :class:`SelectedComponent`.
    """
    base = components.base_dist if isinstance(components, dist.Independent) else None
    if isinstance(base, torch.distributions.Normal) and components.reinterpreted_batch_ndims == 1:
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        return dist.Normal(loc[index], scale[index]).to_event(1)
    if base is not None and components.reinterpreted_batch_ndims == 1 and not base.event_shape:
        try:  # e.g. StudentT, Laplace: rebuild the family from its indexed parameters (O(1) per value)
            shape = base.batch_shape
            params = {k: torch.as_tensor(getattr(base, k)).expand(shape)[index] for k in base.arg_constraints}
            return type(base)(**params, validate_args=False).to_event(1)
        except (TypeError, ValueError, RuntimeError, AttributeError, NotImplementedError):
            pass  # several parametrisations, derived parameters, ...: the generic gather below
    return SelectedComponent(components, index)
