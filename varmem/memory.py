"""The protocol every varmem memory follows.

A memory is a Pyro generative model ``p(x, z | M) = p(z | M) p(x | z)``: ``write`` changes the
prior ``p(z | M)``; ``retrieve`` infers ``z`` from a cue ``x`` with a chosen engine; ``energy``
is a documented negative log-density; ``model`` is the Pyro model (also ``forward``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor

from ._checks import as_cue, as_items, check_positive_int
from .retrieval import Retrieval

__all__ = ["Memory", "PriorLikelihoodMemory", "masked_normal", "memory_class"]

_MEMORY_CLASSES: dict[str, type["Memory"]] = {}


def memory_class(name: str) -> type["Memory"]:
    """The memory class registered under ``name`` (its class name)."""
    try:
        return _MEMORY_CLASSES[name]
    except KeyError:
        raise KeyError(f"unknown memory class {name!r}; known: {sorted(_MEMORY_CLASSES)}") from None


class _MemoryMeta(type(PyroModule), ABCMeta):  # type: ignore[misc]
    """PyroModule's metaclass plus ABCMeta, so a memory missing a protocol method cannot exist."""


class Memory(PyroModule, metaclass=_MemoryMeta):
    """Base class of all memories.

    Subclasses define:

    * ``methods`` / ``default_method``: the retrieval engines that make sense for them;
    * ``write(items)``; ``model(cue, mask=None)``; ``energy(z, cue=None, mask=None)``;
    * ``config()``: the JSON-able constructor arguments (used by :func:`varmem.save`);
    * the hooks their engines use (e.g. ``posterior`` for ``"exact"``).

    Shapes: items and cues are ``[N, D]`` / ``[B, D]`` (a single ``[D]`` row is accepted);
    masks are bool, ``True`` = observed, ``[D]`` or ``[B, D]``.
    """

    methods: ClassVar[tuple[str, ...]] = ()
    default_method: ClassVar[str] = ""
    latent_site: ClassVar[str] = "z"
    observed_site: ClassVar[str] = "x"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _MEMORY_CLASSES[cls.__name__] = cls

    def __init__(self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        self.dim = dim
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.register_buffer("_anchor", torch.empty(0, device=device, dtype=dtype), persistent=False)

    # --- device, dtype, size ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

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
    def model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The Pyro model: ``z ~ p(z | M)``, ``x ~ p(x | z)`` observed at ``cue`` where ``mask``."""

    def forward(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.model(cue, mask)

    @abstractmethod
    def energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """A negative log-density per cue (``[B]``); each subclass states its sign and constants."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, enough to rebuild an empty memory of this kind."""

    def check_state(self) -> None:
        """Raise ``ValueError`` if the stored state is inconsistent (used after loading)."""

    def check_stored_items(self, name: str = "items") -> None:
        """Raise ``ValueError`` unless the buffer ``name`` is a finite ``[N, dim]`` tensor (the
        common part of :meth:`check_state` for memories that keep their items)."""
        items = getattr(self, name)
        if items.dim() != 2 or items.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape [N, {self.dim}], got {tuple(items.shape)}")
        if not torch.isfinite(items).all():
            raise ValueError(f"stored {name} contain NaN or inf")

    def refresh_derived_state(self) -> None:
        """Rebuild state derived from the saved tensors (caches); called after loading a checkpoint."""

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

    def decode(self, z: Tensor) -> Tensor:
        """Map a latent ``z`` to data space (the identity for memories of data-space items)."""
        return z

    def retrieve(
        self, cue: Any, mask: Any = None, method: str | None = None, **options: Any
    ) -> Retrieval:
        """Read the memory: infer the stored item behind ``cue``.

        Args:
            cue: ``[B, D]`` (or ``[D]``) corrupted or partial item.  Entries where ``mask`` is
                ``False`` are never read (they may be NaN).
            mask: bool ``[D]`` or ``[B, D]``, ``True`` = observed; ``None`` = all observed.
            method: one of ``self.methods`` (default ``self.default_method``).
            **options: options of that engine (see ``varmem.inference``).
        """
        from .inference import get_engine

        method = method or self.default_method
        if method not in self.methods:
            raise ValueError(
                f"unknown retrieval method {method!r} for {type(self).__name__}; choose from {list(self.methods)}"
            )
        engine = get_engine(method)
        engine.check_options(options)
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        return engine(self, cue, mask, **options)

    # --- helpers for subclasses -------------------------------------------------------------
    def prepare_cue(self, cue: Any, mask: Any = None) -> tuple[Tensor, Tensor | None]:
        """Validated ``(cue [B, D], mask)`` on this memory's device and dtype."""
        return as_cue(cue, mask, self.dim, self.dtype, self.device)

    def prepare_items(self, items: Any, name: str = "items") -> Tensor:
        """Validated ``[N, D]`` items on this memory's device and dtype."""
        return as_items(items, self.dim, self.dtype, self.device, name)

    def _check_not_empty(self) -> None:
        if len(self) == 0:
            raise ValueError(f"{type(self).__name__} is empty: write items before reading it")

    def extra_repr(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{cfg}, stored={len(self)}"


def masked_normal(loc: Tensor, scale: float | Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
    """``x ~ N(loc, scale² I)`` over the last dim; entries where ``mask`` is False are left out of
    the log-density through Pyro's own masking (``Distribution.mask``), never by zeroing by hand."""
    base = dist.Normal(loc, scale)
    if mask is not None:
        base = base.mask(mask)
    return base.to_event(1)


class PriorLikelihoodMemory(Memory):
    """A memory whose Pyro model is ``z ~ prior()``, ``x ~ likelihood(z, mask)``.

    Subclasses define :meth:`prior` (a distribution with event shape ``[D_z]``, which depends on
    what was stored) and :meth:`likelihood`; :meth:`model` is shared.
    """

    @abstractmethod
    def prior(self) -> dist.TorchDistribution:
        """``p(z | M)``."""

    @abstractmethod
    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)`` with unobserved entries (``mask`` False) masked out."""

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """``z ~ p(z | M)``; ``x ~ p(x | z)`` observed at ``cue`` (sampled when ``cue`` is None).

        Sites ``"z"`` and ``"x"`` (``[B, ·]``) under the plate ``"cues"`` (``dim=-1``).
        """
        size = cue.shape[0] if cue is not None else num_cues
        with pyro.plate("cues", size, dim=-1):
            z = pyro.sample(self.latent_site, self.prior())
            pyro.sample(self.observed_site, self.likelihood(z, mask), obs=cue)
        return z
