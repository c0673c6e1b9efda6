"""Retrieval engines: how a memory is read.

An engine is a function ``engine(memory, cue, mask, *, option=default, ...) -> Retrieval``
registered under a name; a memory lists the names that make sense for it in ``methods``.
``memory.retrieve(cue, mask, method=name, **options)`` validates the cue and the options and calls
the engine.  Engines use documented hooks of the memory, not its internals:

====================  ====================================================================
``exact``             ``memory.posterior(cue, mask)`` (a closed-form posterior)
``fixed_point``       ``memory.init_latent``, ``memory.fixed_point_step``,
                      ``memory.item_log_weights`` (optional: ``memory.fixed_point_update``,
                      the step without its energy, used when no trace is asked for)
``map``               ``memory.model`` (a Pyro model with latent site ``memory.latent_site``),
                      ``memory.init_latent``, ``memory.energy``
``nuts``              ``memory.model``, ``memory.init_latent``
``amortized``         ``memory.encode``, ``memory.guide_encode`` (a trained retrieval guide)
``iterative``         ``"map"`` hooks, or ``memory.decoder_stages`` / ``memory.latent_energy``
                      for the predictive-coding relaxation through a decoder
``hybrid``            ``amortized`` start, ``iterative`` refinement
``learned_precision`` ``memory.codes``, ``memory.precision`` (a trained diagonal precision)
``pc``, ``pc_pyro``   predictive-coding networks: ``memory.energy_grad`` (hand-written
                      local errors) or ``memory.model`` (``AutoDelta`` over activity sites)
``attention``         trained attention readers: ``memory.attend(z, items)``
``sync``, ``async``   binary memories: ``memory.init_spins``, ``memory.spin_cache``,
                      ``memory.preferred_spins``, ``memory.update_cache``
====================  ====================================================================
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


from .amortized import retrieve_amortized  # noqa: E402
from .attention import retrieve_attention  # noqa: E402
from .exact import retrieve_exact  # noqa: E402
from .fixed_point import retrieve_fixed_point  # noqa: E402
from .hybrid import retrieve_hybrid  # noqa: E402
from .iterative import retrieve_iterative  # noqa: E402
from .learned_precision import retrieve_learned_precision  # noqa: E402
from .map import retrieve_map  # noqa: E402
from .nuts import retrieve_nuts  # noqa: E402
from .predictive_coding import retrieve_pc, retrieve_pc_pyro  # noqa: E402
from .sign_dynamics import retrieve_async, retrieve_sync  # noqa: E402

_BUILT_IN = {
    "exact": retrieve_exact,
    "fixed_point": retrieve_fixed_point,
    "map": retrieve_map,
    "nuts": retrieve_nuts,
    "amortized": retrieve_amortized,
    "iterative": retrieve_iterative,
    "hybrid": retrieve_hybrid,
    "learned_precision": retrieve_learned_precision,
    "pc": retrieve_pc,
    "pc_pyro": retrieve_pc_pyro,
    "sync": retrieve_sync,
    "async": retrieve_async,
    "attention": retrieve_attention,
}
for _name, _fn in _BUILT_IN.items():
    register_engine(_name, _fn)

__all__ += [fn.__name__ for fn in _BUILT_IN.values()]
