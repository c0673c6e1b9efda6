"""What a retrieval engine needs of a memory: one typed protocol per capability.

An engine declares the capabilities it needs (``Engine.requires``); a memory lists the engines it
can be read with (``methods``), and the class definition fails at import time when a listed
engine's capability is missing (:mod:`varmem.memory`).  Capabilities are structural
(:class:`typing.Protocol`): a memory has one when it defines the named methods.

==========================  ================================================  ====================
capability                  the memory provides                               engines
==========================  ================================================  ====================
:class:`PyroModel`          ``model(cue, mask)`` with the latent site          ``map``, ``nuts``
                            ``latent_site``; ``init_latent``; ``decode``
:class:`ClosedFormPosterior`  ``posterior(cue, mask, ...)`` → :class:`Posterior`  ``exact``
:class:`FixedPointStep`     ``fixed_point_step(z, cue, mask, ...)`` →          ``fixed_point``
                            :class:`Step`; ``init_latent``; ``decode``
:class:`SpinDynamics`       ``init_spins``, ``spin_cache``,                    ``sync``, ``async``
                            ``preferred_spins``, ``update_cache``
:class:`ItemWeights`        ``item_weights(z, return_weights)``               optional everywhere:
                                                                              weights over items
==========================  ================================================  ====================

Shapes: ``B`` cues, ``D`` data dims, ``L`` latent dims (``L = D`` for memories of data-space
items), ``N`` stored items.  Masks are bool, ``True`` = observed, ``[D]`` or ``[B, D]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "PyroModel",
    "ClosedFormPosterior",
    "Posterior",
    "FixedPointStep",
    "Step",
    "SpinDynamics",
    "ItemWeights",
    "capability_members",
    "missing_members",
]


@runtime_checkable
class ItemWeights(Protocol):
    """Probabilities over stored items at a latent state."""

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor | None]:
        """``(weights [B, N] or None, index [B] or None)`` at states ``z [B, L]``: ``p(i | z, M)``
        (rows sum to 1; materialised as :func:`varmem.helpers.want_weights` decides) and its arg-max."""
        ...


@runtime_checkable
class PyroModel(Protocol):
    """A Pyro model ``p(x, z | M)`` with the cue observed.

    ``model(cue, mask)`` samples the latent site named ``latent_site`` (``[B, L]`` under the plate
    ``"cues"``, ``dim=-1``) and observes the cue, unobserved entries masked through Pyro; its
    log-density is ``-compute_energy(z, cue, mask)``.  ``init_latent(cue, mask, init)`` resolves the
    ``init`` option (``"cue"``, ``"prior_mean"``, ..., or a tensor) to a ``[B, L]`` start;
    ``decode(z)`` maps a latent to data space.
    """

    latent_site: ClassVar[str]

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


class Posterior(Protocol):
    """The result type of :meth:`ClosedFormPosterior.posterior`: ``p(z | x, M)`` for ``B`` cues.

    Attributes:
        mean, variance: ``[B, L]`` posterior mean and variance.
        weights: ``[B, N]`` ``p(i | x, M)`` over stored items (None when not materialised).
        index: ``[B]`` the most probable stored item (None when undefined).
        log_evidence: ``[B]`` ``log p(x_obs | M)``, the log marginal likelihood of each cue.
    """

    mean: Tensor
    variance: Tensor
    weights: Tensor | None
    index: Tensor | None
    log_evidence: Tensor

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z | x, M)`` for ``z [..., B, L]`` → ``[..., B]``."""
        ...

    def sample(self, num_samples: int, generator: Any = None) -> Tensor:
        """``[S, B, L]`` exact posterior draws."""
        ...


@runtime_checkable
class ClosedFormPosterior(Protocol):
    """An exact posterior in closed form."""

    def posterior(
        self, cue: Tensor, mask: Tensor | None = None, *, return_weights: bool | None = None,
        chunk_size: int | None = None,
    ) -> Posterior: ...

    def decode(self, z: Tensor) -> Tensor: ...


@dataclass
class Step:
    """One fixed-point update at state ``z`` (what :meth:`FixedPointStep.fixed_point_step` returns).

    Attributes:
        state: ``[B, L]`` the updated state.
        energy: ``[B]`` ``E(z; x)`` at the state *before* the update (when asked for), a by-product
            of the update's log-sum-exp.
        weights: ``[B, N]`` the update's weights over stored items, at the state before it (when
            asked for); rows sum to 1.
        index: ``[B]`` their arg-max (when the memory has items to point at).
    """

    state: Tensor
    energy: Tensor | None = None
    weights: Tensor | None = None
    index: Tensor | None = None


@runtime_checkable
class FixedPointStep(Protocol):
    """A fast update ``z ← T(z; x)`` whose fixed points are the memory's retrieved states."""

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One update at ``z [B, L]``; ``energy`` / ``weights`` / ``index`` say which by-products to
        return (each is None in the :class:`Step` when not asked for, or when the memory has no items)."""
        ...

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class SpinDynamics(Protocol):
    """Binary (±1) units updated by sign (spin-flip) dynamics.

    ``init_spins(cue, mask)`` the start (free units 0); ``spin_cache(s)`` fields that make one
    unit's update cheap; ``preferred_spins(s, cache, units=None)`` the lower-energy value of every
    unit (``[B, D]``) or of one unit per cue (``units [B]`` → ``[B]``), ties keeping the current
    value; ``update_cache(cache, units, delta)`` in place for ``s[b, units[b]] += delta[b]``;
    ``compute_energy(s)`` the energy.
    """

    def init_spins(self, cue: Tensor, mask: Tensor | None) -> Tensor: ...

    def spin_cache(self, s: Tensor) -> Tensor: ...

    def preferred_spins(self, s: Tensor, cache: Tensor, units: Tensor | None = None) -> Tensor: ...

    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None: ...

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...


_PROTOCOL_INTERNALS = {"_is_protocol", "_is_runtime_protocol", "_abc_impl", "__protocol_attrs__",
                       "__non_callable_proto_members__"}


def capability_members(capability: type) -> list[str]:
    """The names a class must define to have ``capability`` (a :class:`typing.Protocol`: its
    methods and annotated attributes, inherited ones included)."""
    names: list[str] = []
    for base in capability.__mro__:
        if base in (Protocol, object) or base.__name__ in ("Generic", "Protocol"):
            continue
        for name in list(vars(base)) + list(getattr(base, "__annotations__", {})):
            if name.startswith("__") or name in _PROTOCOL_INTERNALS or name in names:
                continue
            names.append(name)
    return names


def missing_members(cls: type, capability: type) -> list[str]:
    """The members of ``capability`` that ``cls`` lacks or leaves abstract.  A capability that is
    an ordinary class (not a Protocol) is nominal: ``cls`` must subclass it."""
    if not getattr(capability, "_is_protocol", False):
        return [] if issubclass(cls, capability) else [f"(a subclass of {capability.__name__})"]
    missing = []
    for name in capability_members(capability):
        attr = getattr(cls, name, None)
        if attr is None or getattr(attr, "__isabstractmethod__", False):
            missing.append(name)
    return missing
