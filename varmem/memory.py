"""The protocol every varmem memory follows, and the base classes that implement most of it.

A memory is a Pyro generative model ``p(x, z | M) = p(z | M) p(x | z)``: ``write`` changes the
prior ``p(z | M)``; ``retrieve`` infers ``z`` from a cue ``x`` with one of the engines the memory
lists in ``methods``; ``energy`` is a documented negative log-density.

* :class:`Memory`: the base of all memories.  A subclass defines ``write``, ``__len__``,
  ``config`` and ``compute_energy``, lists its ``methods``, and has the capabilities those
  engines require (:mod:`varmem.capabilities`); the class definition fails at import time
  otherwise.
* :class:`PriorLikelihoodMemory`: a ``prior()`` and a ``likelihood(z, mask)`` are enough; the
  energy, the Pyro model, the start states and the ``"map"`` / ``"nuts"`` reads come with it.
* :class:`MixturePriorMemory`: a prior that is a mixture over stored items (it exposes
  ``mixture_distribution`` and ``component_distribution``, as ``torch``'s ``MixtureSameFamily``
  does) adds weights over the items; :class:`GaussianMixtureMemory` (Gaussian components, a
  Gaussian cue likelihood) adds the EM fixed-point step.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor

from . import capabilities
from .capabilities import ClosedFormPosterior, Step, missing_members
from .distributions import select_component
from .domains import UNIT, ValueDomain
from .engine import Engine, get_engine
from .evidence import Evidence
from .helpers import clamp, masked_normal, start_state, want_weights
from .kernels import Workspace
from .retrieval import Retrieval
from .validation import (
    all_finite,
    as_cue,
    as_items,
    as_state,
    check_bool,
    check_positive_int,
    check_values,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "Memory",
    "PriorLikelihoodMemory",
    "MixturePriorMemory",
    "GaussianMixtureMemory",
    "masked_normal",
    "memory_class",
    "registered_memories",
    "methods_table",
    "MultimodalPosteriorWarning",
]

_MEMORY_CLASSES: dict[str, type["Memory"]] = {}


def memory_class(name: str) -> type["Memory"]:
    """The memory class registered under ``name`` (its class name)."""
    try:
        return _MEMORY_CLASSES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown memory class {name!r}; known: {sorted(_MEMORY_CLASSES)}") from None


def registered_memories(*, package: str | None = "varmem") -> list[type["Memory"]]:
    """Every concrete memory class defined so far (those of ``package``'s modules, or all with
    ``package=None``), sorted by name."""
    classes = [
        cls for cls in _MEMORY_CLASSES.values()
        if not inspect.isabstract(cls) and (package is None or cls.__module__.split(".")[0] == package)
    ]
    return sorted(classes, key=lambda c: c.__name__)


def methods_table(classes: list[type["Memory"]] | None = None) -> str:
    """A Markdown table of memories, the methods they can be read with (the default first) and the
    capabilities those methods require of them (:mod:`varmem.capabilities`, plus ``ItemWeights``
    where the memory has weights over its items), made from the class declarations; the README's
    table is this, checked by a test."""
    rows = ["| memory | read with (`method=`; default first) | capabilities |", "| --- | --- | --- |"]
    for cls in classes if classes is not None else registered_memories():
        names = [cls.default_method] + [m for m in cls.methods if m != cls.default_method]
        has = list(dict.fromkeys(r.__name__ for m in names for r in cls._engines[m].requires))
        if not missing_members(cls, capabilities.ItemWeights):
            has.append("ItemWeights")
        rows.append(f"| `{cls.__name__}` | {', '.join(f'`{m}`' for m in names)} | {', '.join(has)} |")
    return "\n".join(rows)


def _resolve_methods(cls: type) -> dict[str, Engine]:
    """``{name: Engine}`` of a concrete class's ``methods`` (engine objects or registered names),
    with every capability each engine requires checked on the class."""
    engines: dict[str, Engine] = {}
    for entry in cls.methods:
        eng = entry if isinstance(entry, Engine) else get_engine(entry)
        for capability in eng.requires:
            missing = missing_members(cls, capability)
            if missing:
                raise TypeError(
                    f"{cls.__name__} lists method {eng.name!r}, which needs the capability {capability.__name__}, "
                    f"but does not define {missing}"
                )
        engines[eng.name] = eng
    default = cls.default_method.name if isinstance(cls.default_method, Engine) else cls.default_method
    if default not in engines and (engines or default):  # a memory without methods has no default either
        raise TypeError(f"{cls.__name__}.default_method {default!r} is not one of its methods {list(engines)}")
    return engines


class _MemoryMeta(type(PyroModule), ABCMeta):  # type: ignore[misc]
    """PyroModule's metaclass plus ABCMeta: a memory missing a protocol method cannot be instantiated,
    and a concrete memory whose listed methods lack a capability cannot even be defined."""

    def __init__(cls, name: str, bases: tuple, namespace: dict, **kwargs: Any) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        methods = tuple(m.name if isinstance(m, Engine) else m for m in cls.methods)
        if not inspect.isabstract(cls):
            cls._engines = _resolve_methods(cls)
        cls.methods = methods
        if isinstance(cls.default_method, Engine):
            cls.default_method = cls.default_method.name


class Memory(PyroModule, metaclass=_MemoryMeta):
    """Base class of all memories.

    Subclasses define ``write(items)``, ``__len__``, ``config()`` (the JSON-able constructor
    arguments, used by :func:`varmem.save`), ``compute_energy(z, cue, mask)`` (the energy without
    input checks; :meth:`energy` validates and calls it), ``methods`` / ``default_method`` (the
    engines they can be read with: :class:`varmem.engine.Engine` objects or registered names) and
    the capabilities those engines require.  Engine defaults that depend on the memory are declared
    in :meth:`default_options` (one place; ``retrieve`` is never overridden).  ``value_domain``
    (:mod:`varmem.domains`: ``UNIT`` ``[0, 1]`` by default, ``SIGNED`` ``[-1, 1]``, ``SPIN``
    ``{-1, +1}``) is the range its items and cues are expected in; comparisons map data to it.

    Shapes: items and cues are ``[N, D]`` / ``[B, D]`` (a single ``[D]`` row is accepted); latent
    states ``[B, L]`` with ``L = latent_dim`` (``= D`` unless the memory has a code space); masks
    are bool, ``True`` = observed, ``[D]`` or ``[B, D]``.
    """

    methods: ClassVar[tuple[Any, ...]] = ()
    default_method: ClassVar[Any] = ""
    latent_site: ClassVar[str] = "z"
    observed_site: ClassVar[str] = "x"
    value_domain: ClassVar[ValueDomain] = UNIT
    shardable: ClassVar[bool] = False
    """True for a memory whose state is the ``items`` buffer ``[N, D]`` and whose reads are kernel
    sums through :attr:`kernel_backend` (:mod:`varmem.sharding`, :mod:`varmem.indexed`)."""
    _engines: ClassVar[dict[str, Engine]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _MEMORY_CLASSES[cls.__name__] = cls

    def __init__(
        self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        self.dim = int(dim)
        dtype = resolve_dtype(dtype) or torch.get_default_dtype()
        device = resolve_device(device)
        self.register_buffer("_anchor", torch.empty(0, device=device, dtype=dtype), persistent=False)

    # --- device, dtype, size ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def latent_dim(self) -> int:
        """``L``, the dimension of a latent state ``z`` (``D`` for memories of data-space items)."""
        return self.dim

    @property
    def energy_scale(self) -> float:
        """Nats per unit of energy: the log-density of the memory's Pyro model (where it has one) is
        ``-energy_scale · energy(z) + const``; 1 for probabilistic memories, ``β`` for the
        Boltzmann densities of energy-based ones."""
        return 1.0

    @property
    def workspace(self) -> Workspace:
        """This memory's reusable kernel blocks (:class:`varmem.kernels.Workspace`)."""
        ws = self.__dict__.get("_workspace")
        if ws is None:
            ws = self.__dict__["_workspace"] = Workspace()
        return ws

    @property
    def kernel_backend(self) -> Any:
        """The :class:`varmem.kernels.KernelBackend` that computes this memory's kernel sums (None:
        over its own ``items``); set by :class:`varmem.ShardedMemory` / :class:`varmem.IndexedMemory`."""
        return self.__dict__.get("_kernel_backend")

    def total_items(self) -> int:
        """The number of items the reads sum over: ``len(self)``, or all shards' under a backend."""
        backend = self.kernel_backend
        return len(self) if backend is None else backend.total(len(self))

    def item_rows(self, index: Tensor, name: str = "items") -> Tensor:
        """``[..., D]`` the stored rows at ``index`` (positions among :meth:`total_items`)."""
        backend = self.kernel_backend
        return getattr(self, name)[index] if backend is None else backend.rows(getattr(self, name), index)

    def require_all_items(self, what: str) -> None:
        """``NotImplementedError`` if this memory holds one shard of its items (``what`` needs all)."""
        backend = self.kernel_backend
        if backend is not None and not backend.holds_all_items:
            raise NotImplementedError(
                f"{what} of {type(self).__name__} needs all stored items, and this one holds one shard: a sharded "
                "memory reads with retrieve(method='exact' or 'fixed_point') and evidence (kernel sums merged "
                "across the group); its energies are in the fixed-point trace")

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored items."""

    def __bool__(self) -> bool:  # a memory object is always truthy, even when empty
        return True

    # --- protocol ----------------------------------------------------------------------------
    @abstractmethod
    def write(self, items: Tensor) -> "Memory":
        """Store ``items`` (``[N, D]``); a failed write leaves the memory as it was."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, enough to rebuild an empty memory of this kind."""

    @abstractmethod
    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The energy of :meth:`energy` for validated inputs (what engines call)."""

    def energy(self, z: Any, cue: Any = None, mask: Any = None) -> Tensor:
        """A negative log-density per state: ``[...]`` for ``z [..., L]``; each subclass states its
        formula, sign and constants.

        ``cue`` (``[B, D]`` or ``[D]``) and ``mask`` (as for :meth:`retrieve`) condition it where the
        memory has a cue term; ``z``'s batch shape must broadcast with ``[B]``.  Inputs are checked
        (shapes, dtypes, finite values in the supported range); ``z`` keeps its autograd graph.
        """
        self._check_not_empty()
        z = as_state(z, self.latent_dim, self.dtype, self.device)
        if cue is None:
            if mask is not None:
                raise ValueError("a mask needs a cue (mask says which entries of the cue are observed)")
        else:
            cue, mask = self.prepare_cue(cue, mask)
            try:
                torch.broadcast_shapes(z.shape[:-1], cue.shape[:1])
            except RuntimeError:
                raise ValueError(
                    f"z of shape {tuple(z.shape)} does not broadcast with {cue.shape[0]} cues (z must be [..., B, L])"
                ) from None
        return self.compute_energy(z, cue, mask)

    def decode(self, z: Tensor) -> Tensor:
        """Map a latent ``z`` to data space (the identity for memories of data-space items)."""
        return z

    def default_options(self, method: str) -> dict[str, Any]:
        """Engine options whose defaults this memory sets (from its constructor arguments), for the
        engine ``method``; ``retrieve`` fills them in unless the call passes them."""
        return {}

    def retrieve(self, cue: Any, mask: Any = None, method: str | None = None, **options: Any) -> Retrieval:
        """Read the memory: infer the stored item behind ``cue``.

        Args:
            cue: ``[B, D]`` (or ``[D]``) corrupted or partial item.  Entries where ``mask`` is
                ``False`` are never read (they may be NaN).
            mask: bool ``[D]`` or ``[B, D]``, ``True`` = observed; ``None`` = all observed.
            method: one of ``self.methods`` (default ``self.default_method``).
            **options: options of that engine (``varmem.engine.get_engine(method).options``).

        A read whose pattern or code is not finite (an option or a setting so extreme that the
        arithmetic overflows the memory's dtype) raises ``FloatingPointError`` naming them, instead
        of returning NaN.
        """
        method = self.default_method if method is None else method
        engine = self._engines.get(method) if isinstance(method, str) else None
        if engine is None:
            raise ValueError(
                f"unknown retrieval method {method!r} for {type(self).__name__}; choose from {list(self.methods)}"
            )
        options = {**self.default_options(method), **options}
        engine.check_options(options)
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        result = engine(self, cue, mask, **options)
        if not (all_finite(result.pattern) and all_finite(result.code)):  # never hand out NaN silently
            raise FloatingPointError(
                f"{type(self).__name__}.retrieve(method={method!r}) gave NaN or inf: with options {options} and "
                f"settings {self.config()} the read overflows {self.dtype}; moderate them (nothing was changed)"
            )
        return result

    # --- evidence -----------------------------------------------------------------------------
    def evidence(self, cue: Any, mask: Any = None, **options: Any) -> Evidence:
        """The log evidence ``log p(x_b | M)`` of each cue's observed entries, as an
        :class:`varmem.evidence.Evidence` (value ``[B]``, kind: exact / estimate / lower bound, and
        a standard error).  Inputs are checked as in :meth:`retrieve`; ``options`` go to the
        memory's :meth:`compute_evidence` (e.g. ``num_samples``, ``seed`` for an estimator).

        Memories with a closed-form posterior give it exactly; others estimate it where they are
        probabilistic models; memories that are not (energy-based networks) raise ``TypeError``.
        A value that is not finite (a cue so extreme that the arithmetic overflows the memory's
        dtype) raises ``FloatingPointError`` naming the cues, instead of returning NaN or -inf."""
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        result = self.compute_evidence(cue, mask, **options)
        bad = (~torch.isfinite(result.log_evidence)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(
                f"{type(self).__name__}.evidence gave NaN or inf for cues {bad}: their values overflow {self.dtype} "
                "in the computation (nothing was changed); rescale the cue or use float64"
            )
        return result

    def log_evidence(self, cue: Any, mask: Any = None, **options: Any) -> Tensor:
        """``[B]`` ``log p(x_b | M)``: the value of :meth:`evidence` (whose record also says whether
        it is exact and gives the standard error of an estimate)."""
        return self.evidence(cue, mask, **options).log_evidence

    def compute_evidence(self, cue: Tensor, mask: Tensor | None, **options: Any) -> Evidence:
        """:meth:`evidence` for validated inputs.  The default uses the closed-form posterior's
        ``log_evidence`` where the memory has one; other memories override it or have none."""
        if isinstance(self, ClosedFormPosterior):
            if options:
                raise TypeError(f"the exact evidence of {type(self).__name__} takes no options, got {sorted(options)}")
            observed = cue.new_full(cue.shape[:1], cue.shape[1]) if mask is None else mask.expand_as(cue).sum(-1)
            value = self.posterior(cue, mask, return_weights=False).log_evidence
            return Evidence(log_evidence=value, kind="exact", method="closed_form", stderr=torch.zeros_like(value),
                            n_observed=observed.to(cue.dtype))
        raise TypeError(f"{type(self).__name__} has no evidence log p(x | M): it defines no normalised generative "
                        "model of its cues (an energy-based network or a trained reader)")

    # --- state --------------------------------------------------------------------------------
    def check_state(self) -> None:
        """Raise ``ValueError`` if the stored state is inconsistent (used after loading)."""

    def check_stored_items(self, name: str = "items") -> None:
        """Raise ``ValueError`` unless the buffer ``name`` is a ``[N, dim]`` tensor of finite values
        within ``±MAX_ABS_VALUE``, the range :meth:`write` accepts (the common part of
        :meth:`check_state` for memories that keep their items)."""
        items = getattr(self, name)
        if items.dim() != 2 or items.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape [N, {self.dim}], got {tuple(items.shape)}")
        check_values(items, f"stored {name}")

    def check_parameters(self) -> None:
        """Raise ``ValueError`` unless every learned parameter (``self.parameters()``) is finite and
        within ``±MAX_ABS_VALUE`` (a network weight of 1e30 is finite but turns a read into NaN);
        the common part of :meth:`check_state` for memories with trained networks."""
        for name, p in self.named_parameters():
            check_values(p.detach().reshape(1, -1), f"parameter {name}")

    def refresh_derived_state(self) -> None:
        """Rebuild state derived from the saved tensors (caches); called after loading."""

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Replace the memory's state by ``state_dict`` (from :meth:`state_dict`), atomically.

        Unlike ``nn.Module.load_state_dict`` the stored items may differ in number.  Refused with
        ``ValueError`` (and nothing changed): missing or unexpected keys, a tensor whose dtype or
        number of dims differs from this memory's, a size that this configuration fixes (every
        size a freshly built memory has non-zero), non-finite values, or a state that fails
        :meth:`check_state`.  ``strict`` and ``assign`` (bools) are accepted for torch's signature;
        loading is always strict and always replaces the tensors (copies of the given ones).
        """
        check_bool(strict, "strict")
        check_bool(assign, "assign")
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
        current = self.state_dict()
        missing, unexpected = sorted(set(current) - set(state_dict)), sorted(set(state_dict) - set(current))
        if missing or unexpected:
            raise ValueError(f"state does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}")
        template = type(self)(**self.config(), device=self.device, dtype=self.dtype).state_dict()
        for name, value in state_dict.items():
            if not torch.is_tensor(value):
                raise TypeError(f"state entry {name!r} must be a tensor, got {type(value).__name__}")
            now = current[name]
            if value.dtype != now.dtype:
                raise ValueError(f"state entry {name!r} has dtype {value.dtype}, expected {now.dtype}")
            fixed = template[name].shape
            if value.dim() != len(fixed) or any(f and v != f for v, f in zip(value.shape, fixed, strict=True)):
                want = "[" + ", ".join(str(f) if f else "*" for f in fixed) + "]"
                raise ValueError(f"state entry {name!r} has shape {list(value.shape)}, expected {want}")
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
                raise ValueError(f"state entry {name!r} contains NaN or inf")
        before = {name: self._state_tensor(name) for name in state_dict}
        try:
            for name, value in state_dict.items():
                self._set_state_tensor(name, value.detach().to(self.device).clone())
            self.__dict__.pop("_growth", None)
            self.check_state()
            self.refresh_derived_state()
        except BaseException:
            for name, value in before.items():
                self._set_state_tensor(name, value)
            self.refresh_derived_state()
            raise
        return torch.nn.modules.module._IncompatibleKeys([], [])

    def _state_tensor(self, name: str) -> Tensor:
        prefix, _, attr = name.rpartition(".")
        owner = self.get_submodule(prefix) if prefix else self
        value = getattr(owner, attr)
        return value.data if isinstance(value, torch.nn.Parameter) else value

    def _set_state_tensor(self, name: str, value: Tensor) -> None:
        prefix, _, attr = name.rpartition(".")
        owner = self.get_submodule(prefix) if prefix else self
        if attr in owner._parameters:
            owner._parameters[attr].data = value
        else:
            setattr(owner, attr, value)

    def append_rows(self, name: str, rows: Tensor) -> Tensor:
        """Set the buffer ``name`` to ``cat([buffer, rows])`` in amortised ``O(len(rows))`` time.

        The buffer becomes a view of a larger block whose capacity doubles when it runs out, so a
        stream of ``N`` single-row writes copies ``O(N)`` rows in all instead of ``O(N²)``.  The
        spare rows are only ever written beyond every view handed out before, and a buffer that
        was replaced meanwhile (forget, ``load_state_dict``, ``.to()``, assignment) is copied into
        a fresh block first, so no tensor a caller holds changes.  Returns the new buffer.
        """
        current = getattr(self, name)
        growth = self.__dict__.setdefault("_growth", {})
        block, length = growth.get(name, (None, -1))
        n, need = current.shape[0], current.shape[0] + rows.shape[0]
        ours = (
            block is not None and length == n and current.data_ptr() == block.data_ptr()
            and current.shape[1:] == block.shape[1:] and current.dtype == block.dtype
        )
        if not ours or block.shape[0] < need:
            fresh = current.new_empty((max(need, 2 * n, 16), *current.shape[1:]))
            fresh[:n] = current
            block = fresh
        block[n:need] = rows
        setattr(self, name, block[:need])
        growth[name] = (block, need)
        return block[:need]

    def _apply(self, fn: Any, recurse: bool = True) -> "Memory":
        self.__dict__.pop("_growth", None)  # spare capacity stays behind on the old device / dtype
        return super()._apply(fn, recurse)

    # --- helpers for subclasses -------------------------------------------------------------
    def prepare_cue(self, cue: Any, mask: Any = None) -> tuple[Tensor, Tensor | None]:
        """Validated ``(cue [B, D], mask)`` on this memory's device and dtype."""
        return as_cue(cue, mask, self.dim, self.dtype, self.device)

    def prepare_items(self, items: Any, name: str = "items") -> Tensor:
        """Validated ``[N, D]`` items on this memory's device and dtype."""
        return as_items(items, self.dim, self.dtype, self.device, name)

    def _check_not_empty(self) -> None:
        if self.total_items() == 0:
            raise ValueError(f"{type(self).__name__} is empty: write items before reading it")

    def extra_repr(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{cfg}, stored={len(self)}"


class PriorLikelihoodMemory(Memory):
    """A memory whose Pyro model is ``z ~ prior()``, ``x ~ likelihood(z, mask)``.

    A subclass implements ``write``, ``__len__``, ``config``, :meth:`prior` (a Pyro distribution over
    the clean item, ``event_shape == (D,)``, that depends on what was stored) and
    :meth:`likelihood`; it then has the energy ``E(z; x) = -log p(z | M) - log p(x | z)``, the Pyro
    :meth:`model`, the start states of :meth:`init_latent` and the reads ``"map"`` and ``"nuts"``.
    """

    methods = ("map", "nuts")
    default_method = "map"

    @abstractmethod
    def prior(self) -> dist.TorchDistribution:
        """``p(z | M)``, event shape ``[L]``."""

    @abstractmethod
    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``, event shape ``[D]``, with unobserved entries (``mask`` False) masked out
        through Pyro (e.g. :func:`varmem.helpers.masked_normal`)."""

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``-log p(z | M)``, or ``-log p(x, z | M) = -log p(z | M) - log p(x | z)`` given a cue, all
        constants kept: minus the log-density of the Pyro trace of :meth:`model` at ``z``."""
        e = -self.prior().log_prob(z)
        if cue is not None:
            e = e - self.likelihood(z, mask).log_prob(cue)
        return e

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """``z ~ p(z | M)``; ``x ~ p(x | z)`` observed at ``cue`` (sampled when ``cue`` is None).

        Sites ``"z"`` and ``"x"`` (``[B, ·]``) under the plate ``"cues"`` (``dim=-1``).

        When the prior is a mixture over the stored items the posterior has one mode per item:
        Pyro's HMC / NUTS on this model stays in the mode it starts in, and a unimodal guide
        (``AutoNormal``, ``AutoMultivariateNormal``, ...) fits one mode, so both get the mode
        weights wrong.  The first time this model is traced by one of them a
        :class:`MultimodalPosteriorWarning` says so (once per memory); :meth:`mixture_model` and
        ``guides/bayesian_reading.md`` give what works.
        """
        self._check_not_empty()
        size = cue.shape[0] if cue is not None else num_cues
        prior = self.prior()
        if cue is not None and not self.__dict__.get("_multimodal_warned"):
            self._warn_if_multimodal(prior)
        with pyro.plate("cues", size, dim=-1):
            z = pyro.sample(self.latent_site, prior)
            pyro.sample(self.observed_site, self.likelihood(z, mask), obs=cue)
        return z

    # --- the mixture over stored items --------------------------------------------------------
    item_site: ClassVar[str] = "item"

    def mixture_size(self) -> int | None:
        """``J``, the number of components of :meth:`prior` when it is a mixture (it has
        ``mixture_distribution`` and ``component_distribution``), else None."""
        mix = getattr(self.prior(), "mixture_distribution", None)
        return None if mix is None else int(mix.logits.shape[-1])

    def mixture_model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """:meth:`model` with the mixture component as a discrete site:
        ``i ~ Categorical(π)`` (site ``item_site``), ``z ~ p_i(z)``, ``x ~ p(x | z)``.

        Summing out ``i`` gives :meth:`model`'s density, ``Σ_i π_i p_i(z) p(x | z)``.  Pyro can
        enumerate ``i`` (``config_enumerate`` / ``TraceEnum_ELBO`` / ``infer_discrete``), and
        ``pyro.condition(memory.mixture_model, data={"item": i})`` is the posterior restricted to
        component ``i``, ``p(z | x, i) ∝ p_i(z) p(x | z)`` (unimodal for Gaussian components),
        which NUTS samples well.  ``TypeError`` if the prior is not a mixture.
        """
        self._check_not_empty()
        prior = self.prior()
        if not hasattr(prior, "mixture_distribution") or not hasattr(prior, "component_distribution"):
            raise TypeError(f"{type(self).__name__}.prior() is not a mixture (no mixture_distribution / "
                            "component_distribution): it has no item site to condition on")
        size = cue.shape[0] if cue is not None else num_cues
        with pyro.plate("cues", size, dim=-1):
            i = pyro.sample(self.item_site, prior.mixture_distribution)
            z = pyro.sample(self.latent_site, select_component(prior.component_distribution, i))
            pyro.sample(self.observed_site, self.likelihood(z, mask), obs=cue)
        return z

    def _warn_if_multimodal(self, prior: Any) -> None:
        """Warn (once per memory) when :meth:`model` of a multi-item mixture is being traced by an
        inference that finds one mode: Pyro's HMC / NUTS or a Gaussian / unimodal autoguide
        (recognised from the calling frames)."""
        mix = getattr(prior, "mixture_distribution", None)
        if mix is None or mix.logits.shape[-1] < 2:
            return
        culprit = _unimodal_inference()
        if culprit is None:
            return
        self.__dict__["_multimodal_warned"] = True
        warnings.warn(MultimodalPosteriorWarning(
            f"{culprit} on {type(self).__name__}.model: the posterior p(z | x, M) has one mode per stored item "
            f"({mix.logits.shape[-1]} components) and {culprit} explores only the mode it starts in (or fits one "
            "mode), so the mode weights p(i | x) come out wrong.  Read with method='nuts' (mode-split chains), "
            "method='exact' (closed form, with num_samples), or use memory.mixture_model with the recipe in "
            "guides/bayesian_reading.md"), stacklevel=_caller_level())

    def prior_mean_batch(self, batch: int) -> Tensor:
        """``[batch, L]`` copies of the prior mean ``E[z | M]`` (the start ``"prior_mean"``)."""
        return self.prior().mean.expand(batch, self.latent_dim).clone()

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor:
        """Start of iterative engines: ``"cue"`` (the cue on observed entries, the prior mean
        elsewhere), ``"prior_mean"`` or a ``[B, L]`` tensor."""
        def cue_start() -> Tensor:
            return cue.clone() if mask is None else clamp(self.prior_mean_batch(cue.shape[0]), cue, mask)

        starts = {"cue": cue_start, "prior_mean": lambda: self.prior_mean_batch(cue.shape[0])}
        return start_state(init, cue, starts, self, shape=(cue.shape[0], self.latent_dim))


class MultimodalPosteriorWarning(UserWarning):
    """Plain NUTS or a unimodal guide on a memory's multimodal ``model`` (one mode per stored
    item) gets the posterior's mode weights wrong (see :meth:`PriorLikelihoodMemory.model`)."""


_UNIMODAL_GUIDES = frozenset({
    "AutoNormal", "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
    "AutoLaplaceApproximation", "AutoStructured", "AutoGaussian", "AutoIAFNormal", "AutoNormalizingFlow",
})


def _unimodal_inference() -> str | None:
    """The name of the Pyro inference on the call stack that explores one mode only (``"NUTS"`` /
    ``"HMC"`` from ``pyro.infer.mcmc``, or an autoguide in :data:`_UNIMODAL_GUIDES`), else None."""
    frame, mcmc = sys._getframe(2), False
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("pyro.infer.mcmc"):
            mcmc = True
            name = type(frame.f_locals.get("self")).__name__
            if name in ("NUTS", "HMC"):
                return name
        elif module.startswith("pyro.infer.autoguide") and not mcmc:
            guide = type(frame.f_locals.get("self")).__name__
            if guide in _UNIMODAL_GUIDES:
                return guide
        frame = frame.f_back
    return "HMC / NUTS" if mcmc else None


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside varmem.memory, pyro and torch (the user's call
    that started the inference), for warnings raised from inside a Pyro trace."""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == __name__ or module.split(".")[0] in ("pyro", "torch")):
            return level
        frame, level = frame.f_back, level + 1
    return 2


class MixturePriorMemory(PriorLikelihoodMemory):
    """A :class:`PriorLikelihoodMemory` whose prior is a mixture with one component per stored item.

    :meth:`prior` returns a distribution with ``mixture_distribution`` (a ``Categorical`` over the
    ``N`` items) and ``component_distribution`` (batch shape ``[N]``, event shape ``[L]``), as
    ``torch``'s ``MixtureSameFamily`` and :class:`varmem.distributions.Mixture` do; the memory then
    has :meth:`item_weights`, ``p(i | z, M) ∝ π_i p_i(z)``, and its reads report them.
    """

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(p(i | z, M) [B, N] or None, argmax [B])``: the responsibilities at ``z [B, L]``."""
        prior = self.prior()
        logits = prior.mixture_distribution.logits + prior.component_distribution.log_prob(z.unsqueeze(-2))
        w = torch.softmax(logits, -1)
        return (w if want_weights(return_weights, z.shape[0], w.shape[-1]) else None), w.argmax(-1)


def _gaussian_parts(d: Any, what: str) -> tuple[Tensor, Tensor]:
    """``(loc, scale)`` of a (masked, independent) Normal distribution, else ``TypeError``."""
    while True:
        if isinstance(d, (torch.distributions.Independent, pyro.distributions.MaskedDistribution)):
            d = d.base_dist
        else:
            break
    if not isinstance(d, torch.distributions.Normal):
        raise TypeError(f"{what} must be Gaussian (a Normal, possibly masked / .to_event), got {type(d).__name__}")
    return d.loc, d.scale


class GaussianMixtureMemory(MixturePriorMemory):
    """A :class:`MixturePriorMemory` with Gaussian components ``N(μ_i, diag v_i)`` and a Gaussian cue
    likelihood ``x_d ~ N(z_d, σ_d²)`` on observed entries; it adds the ``"fixed_point"`` read, the
    EM step :meth:`fixed_point_step`.

    With the responsibilities ``r_i = p(i | z, M)`` held fixed, ``log p(x, z | M)`` is a concave
    quadratic in ``z``, maximised at ``z_d ← (Σ_i r_i μ_id / v_id + m_d x_d / σ_d²) / (Σ_i r_i / v_id +
    m_d / σ_d²)``: an EM step, so the energy never increases.
    """

    methods = ("fixed_point", "map", "nuts")
    default_method = "fixed_point"

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One EM step (class docstring) with the energy at ``z`` and the step's weights."""
        prior = self.prior()
        loc, scale = _gaussian_parts(prior.component_distribution, "the prior's components")
        n_loc, n_scale = _gaussian_parts(self.likelihood(z, mask), "the cue likelihood")
        if not torch.equal(torch.broadcast_to(n_loc, z.shape), z):
            raise TypeError("the fixed-point step needs a likelihood centred at z (x ~ N(z, σ²) on observed entries)")
        logits = prior.mixture_distribution.logits + prior.component_distribution.log_prob(z.unsqueeze(-2))
        r = torch.softmax(logits, -1)  # [B, N]
        inv_v = torch.broadcast_to(scale, loc.shape).pow(-2)  # [N, L]
        m = torch.ones((), dtype=z.dtype, device=z.device) if mask is None else mask.to(z.dtype)
        inv_n = torch.broadcast_to(n_scale, z.shape).pow(-2) * m
        state = (r @ (loc * inv_v) + inv_n * cue) / (r @ inv_v + inv_n)
        e = None
        if energy:
            e = -logits.logsumexp(-1) - self.likelihood(z, mask).log_prob(cue)
        return Step(state=state, energy=e, weights=r if weights else None, index=r.argmax(-1) if index else None)
