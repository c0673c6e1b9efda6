"""Generic retrieval engines: how a memory is read, written against capabilities only.

Each engine is a function ``engine(memory, cue, mask, *, option=default, ...) -> Retrieval``
registered under a name (:mod:`varmem.engine`) with the capabilities it needs
(:mod:`varmem.capabilities`).  A memory lists the engines it can be read with in ``methods``;
``memory.retrieve(cue, mask, method=name, **options)`` validates the cue and the options and
calls the engine.  The engines here depend on the protocol alone:

================  ==================================================  ============================
engine            needs                                               result
================  ==================================================  ============================
``exact``         :class:`~varmem.capabilities.ClosedFormPosterior`   posterior mean, variance,
                                                                      ``p(i | x)``, the posterior;
                                                                      exact draws (``num_samples``)
``fixed_point``   :class:`~varmem.capabilities.FixedPointStep`        a fixed point of the update
``map``           :class:`~varmem.capabilities.PyroModel`             the mode of ``p(z | x, M)``
                                                                      (``AutoDelta``)
``nuts``          :class:`~varmem.capabilities.PyroModel`             posterior draws: the item
                                                                      from ``p(i | x)`` (exact or
                                                                      estimated, ``modes``), NUTS
                                                                      within it (``num_chains``)
``sync``,         :class:`~varmem.capabilities.SpinDynamics`          a fixed point (or 2-cycle)
``async``                                                             of the sign dynamics
================  ==================================================  ============================

Readers that only one family has live in that family's package: ``pc`` / ``pc_pyro``
(:mod:`varmem.memories.predictive_coding`), ``amortized`` / ``iterative`` / ``hybrid`` /
``learned_precision`` (:mod:`varmem.memories.latent`), ``attention``
(:mod:`varmem.baselines.attention`).  Every engine uses one vocabulary of options: ``max_steps``,
``tol``, ``lr``, ``init``, ``trace``, ``return_weights``, ``seed``, ``progress``.
"""

from ..engine import Engine, available_engines, engine, get_engine, register_engine
from .exact import retrieve_exact
from .fixed_point import retrieve_fixed_point
from .map import per_cue_loss, retrieve_map
from .nuts import retrieve_nuts
from .sign_dynamics import retrieve_async, retrieve_sync

__all__ = [
    "Engine",
    "engine",
    "register_engine",
    "get_engine",
    "available_engines",
    "retrieve_exact",
    "retrieve_fixed_point",
    "retrieve_map",
    "retrieve_nuts",
    "retrieve_sync",
    "retrieve_async",
    "per_cue_loss",
]
