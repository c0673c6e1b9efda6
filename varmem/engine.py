"""Retrieval engines as named objects, and the registry that maps method names to them.

An engine is a function ``fn(memory, cue, mask, *, option=default, ...) -> Retrieval`` with the
capabilities it needs of the memory (:mod:`varmem.capabilities`).  It is registered under a name
with the :func:`engine` decorator; a memory lists the engines it can be read with in ``methods``
(engine objects or their names) and ``memory.retrieve(cue, mask, method=name, **options)``
validates the cue and the options and calls it.  Options are keyword-only: their defaults are the
documentation, and an unknown option is refused with the list of valid ones.

The engines of the common capabilities live in :mod:`varmem.inference`; readers that only one
family of memories has live in that family's package.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from .retrieval import Retrieval

__all__ = ["Engine", "engine", "register_engine", "get_engine", "available_engines"]


class Engine:
    """A named retrieval function with keyword-only options and the capabilities it requires.

    Attributes:
        name: the method name (``memory.retrieve(..., method=name)``).
        fn: ``fn(memory, cue [B, D], mask [D] / [B, D] / None, **options) -> Retrieval``; the cue
            and the mask are already validated.
        requires: capability protocols (or base classes) the memory must have.
        options: ``{option: default}`` from ``fn``'s keyword-only parameters.
    """

    def __init__(self, name: str, fn: Callable[..., Retrieval], requires: Iterable[type] = ()) -> None:
        self.name = name
        self.fn = fn
        self.requires = tuple(requires)
        params = inspect.signature(fn).parameters.items()
        self.options = {k: p.default for k, p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__module__ = getattr(fn, "__module__", __name__)

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for retrieval method {self.name!r}; valid options: {sorted(self.options)}"
            )

    def __call__(self, memory: Any, cue: Any, mask: Any, **options: Any) -> Retrieval:
        return self.fn(memory, cue, mask, **options)

    def __repr__(self) -> str:
        needs = ", ".join(r.__name__ for r in self.requires)
        return f"Engine({self.name!r}, requires=[{needs}], options={self.options})"


_ENGINES: dict[str, Engine] = {}


def register_engine(name: str, fn: Callable[..., Retrieval], requires: Iterable[type] = ()) -> Engine:
    """Register ``fn`` as the engine ``name`` (replacing any engine of that name); returns it."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"an engine name must be an identifier, got {name!r}")
    _ENGINES[name] = Engine(name, fn, requires)
    return _ENGINES[name]


def engine(name: str, *, requires: Iterable[type] = ()) -> Callable[[Callable[..., Retrieval]], Engine]:
    """Decorator: register the function as the engine ``name`` needing ``requires``."""

    def decorate(fn: Callable[..., Retrieval]) -> Engine:
        return register_engine(name, fn, requires)

    return decorate


def get_engine(name: str) -> Engine:
    """The engine registered under ``name``."""
    try:
        return _ENGINES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown retrieval method {name!r}; registered: {sorted(_ENGINES)}") from None


def available_engines() -> list[str]:
    """Names of every registered engine."""
    return sorted(_ENGINES)
