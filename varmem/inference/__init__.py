"""Retrieval engines: how a memory is read.

An engine is a function ``engine(memory, cue, mask, *, option=default, ...) -> Retrieval``
registered under a name; a memory lists the names that make sense for it in ``methods``.
``memory.retrieve(cue, mask, method=name, **options)`` validates the cue and the options and calls
the engine.  Engines use documented hooks of the memory, not its internals:

==============  ==========================================================================
``exact``       ``memory.posterior(cue, mask)`` (a closed-form posterior)
``fixed_point`` ``memory.init_latent``, ``memory.fixed_point_step``, ``memory.item_log_weights``
``map``         ``memory.model`` (a Pyro model with latent site ``memory.latent_site``),
                ``memory.init_latent``, ``memory.energy``
``nuts``        ``memory.model``, ``memory.init_latent``
==============  ==========================================================================
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..retrieval import Retrieval

__all__ = ["Engine", "register_engine", "get_engine", "available_engines"]


class Engine:
    """A named retrieval function with keyword-only options (their defaults are the documentation)."""

    def __init__(self, name: str, fn: Callable[..., Retrieval]) -> None:
        self.name = name
        self.fn = fn
        params = inspect.signature(fn).parameters.items()
        self.options = {k: p.default for k, p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        self.__doc__ = fn.__doc__

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for retrieval method {self.name!r}; valid options: {sorted(self.options)}"
            )

    def __call__(self, memory: Any, cue: Any, mask: Any, **options: Any) -> Retrieval:
        return self.fn(memory, cue, mask, **options)

    def __repr__(self) -> str:
        return f"Engine({self.name!r}, options={self.options})"


_ENGINES: dict[str, Engine] = {}


def register_engine(name: str, fn: Callable[..., Retrieval]) -> Engine:
    """Register ``fn`` as the engine ``name`` (replacing any engine of that name)."""
    _ENGINES[name] = Engine(name, fn)
    return _ENGINES[name]


def get_engine(name: str) -> Engine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown retrieval method {name!r}; registered: {sorted(_ENGINES)}") from None


def available_engines() -> list[str]:
    return sorted(_ENGINES)


from .exact import retrieve_exact  # noqa: E402
from .fixed_point import retrieve_fixed_point  # noqa: E402
from .map import retrieve_map  # noqa: E402
from .nuts import retrieve_nuts  # noqa: E402

register_engine("exact", retrieve_exact)
register_engine("fixed_point", retrieve_fixed_point)
register_engine("map", retrieve_map)
register_engine("nuts", retrieve_nuts)

__all__ += ["retrieve_exact", "retrieve_fixed_point", "retrieve_map", "retrieve_nuts"]
