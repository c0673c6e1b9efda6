"""``"pcnet"`` and ``"pcnet_pyro"``: read a :class:`~varmem.memories.predictive_coding.PCNetMemory`
by relaxing its composed network's activities from a cue.

The read procedures are explicit options, as for the other predictive-coding memories
(``"clamp_predict"``, ``"joint"``, ``"relax_all"``, see :mod:`.readers`); ``"pcnet"`` steps any
``torch.optim`` optimiser on the network's energy (autograd or its fused dense path),
``"pcnet_pyro"`` optimises an ``AutoDelta`` guide over the node sites of the memory's Pyro model.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol, Sequence, runtime_checkable

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...engine import engine
from ...helpers import make_generator
from ...retrieval import Retrieval
from ...validation import (
    DIVERGED,
    check_bool,
    check_choice,
    check_non_negative,
    check_positive_int,
    check_seed,
    in_range,
)
from .start_values import check_start, start_fill

__all__ = ["retrieve_pcnet", "retrieve_pcnet_pyro", "PCNetReadable", "PCNetPyroReadable", "OPTIMIZERS", "PROCEDURES",
           "INITS"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name.lower(): getattr(torch.optim, name)
    for name in ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop", "ASGD")
    if hasattr(torch.optim, name)
}
"""The ``torch.optim`` optimisers a :class:`PCNetMemory` takes by (lower-case) name, for the
activities and the weights (L-BFGS needs a closure and SparseAdam sparse gradients: left out)."""

PROCEDURES = ("clamp_predict", "joint", "relax_all")
INITS = ("randn", "zeros", "top_down")


def check_optimizer(value: Any, name: str, extra: Sequence[str] = ()) -> str:
    choices = (*extra, *OPTIMIZERS)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)} (torch.optim optimisers by lower-case name), "
                         f"got {value!r}")
    return value


# --- what the reader needs ----------------------------------------------------------------------
@runtime_checkable
class PCNetReadable(Protocol):
    """What ``"pcnet"`` needs of a memory: its :class:`PCNet` (``net``), the code layout
    (``split_code`` / ``join_code``), the constant of its energy, the start value of unknown
    sensory entries (``prior_prediction``) and its read defaults (``default_options``).  (The
    network itself is the attribute ``net``: instance attributes are not class members.)"""

    def split_code(self, code: Tensor) -> list[Tensor]: ...

    def join_code(self, nodes: list[Tensor]) -> Tensor: ...

    def energy_constant(self) -> float: ...

    def prior_prediction(self) -> Tensor: ...

    def default_options(self, method: str) -> dict[str, Any]: ...


def _hidden_start(memory: PCNetReadable, x: Tensor, how: str, generator: torch.Generator | None) -> list[Tensor]:
    """Node activities (top first) for the sensory estimate ``x [B, D]``: hidden nodes
    ``"randn"`` (``N(0, 1/d)`` per node, drawn bottom-up, the order of ``PCNetwork.init_hidden``, so
    the same seed gives GPCN's start), ``"zeros"`` or ``"top_down"`` (:meth:`PCNet.init_activities`)."""
    net = memory.net
    B = x.shape[0]
    if how != "randn":
        return net.init_activities(x, how)
    xs = [x.reshape(B, *net.shapes[-1]).clone()]
    for shape in reversed(net.shapes[:-1]):
        dev = x.device if generator is None else generator.device
        a = torch.randn(B, *shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
        xs.insert(0, a / math.sqrt(math.prod(shape)))
    return xs


def _read_options(memory: PCNetReadable, cue: Tensor, mask: Tensor | None, defaults: dict[str, Any],
                  procedure: Any, start: Any, max_steps: Any, lr: Any, hidden_init: Any, n_repeat: Any, seed: Any,
                  progress: Any) -> tuple[str, Any, int, float, str, int, Tensor]:
    """The options both readers share, validated and completed from ``defaults``, and the sensory
    estimate the read starts from (the cue, unknown entries at ``start``)."""
    proc = procedure if procedure is not None else ("clamp_predict" if mask is None else "joint")
    check_choice(proc, "option procedure", PROCEDURES)
    start = check_start(start, cue)
    steps = check_positive_int(defaults.get("max_steps") if max_steps is None else max_steps, "option max_steps")
    lr = check_non_negative(defaults.get("lr") if lr is None else lr, "option lr")
    init = check_choice(defaults.get("hidden_init") if hidden_init is None else hidden_init, "option hidden_init",
                        INITS)
    n_repeat = check_positive_int(n_repeat, "option n_repeat")
    check_seed(seed, "option seed", allow_none=True)
    check_bool(progress, "option progress")
    known = None if mask is None else mask.expand_as(cue)
    x = cue.clone() if known is None else torch.where(known, cue, start_fill(start, cue, memory.prior_prediction))
    return proc, start, steps, lr, init, n_repeat, x


@engine("pcnet", requires=(PCNetReadable,))
def retrieve_pcnet(
    memory: PCNetReadable,
    cue: Tensor,
    mask: Tensor | None,
    *,
    procedure: str | None = None,
    start: str | float | Tensor = "zero",
    max_steps: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    n_repeat: int = 1,
    hidden_init: str | None = None,
    seed: int | None = 0,
    progress: bool = False,
) -> Retrieval:
    """Relax a composed predictive-coding network from a cue (the procedures of the PC family).

    Options (None: the memory's defaults, :meth:`PCNetMemory.default_options`):
        procedure: ``"clamp_predict"`` (``n_repeat`` rounds: clamp the sensory node to the current
            estimate, relax the hidden nodes, replace the sensory node (its unknown entries) by the
            top-down prediction ``g_n(x_{n-1})``, ``sigmoid`` of it for a Bernoulli node;
            ``n_repeat = 30`` is Salvatori et al.'s iterated F), ``"joint"`` (observed entries clamped,
            unknown entries and hidden nodes relaxed together for ``n_repeat · max_steps`` steps; a
            full cue moves only the hidden nodes) or ``"relax_all"`` (every sensory entry free,
            started at the cue: noisy full cues).  None: ``"clamp_predict"`` for a full cue,
            ``"joint"`` for a partial one; the one that ran is ``info["procedure"]``.
        start: the start of unknown sensory entries: ``"zero"``, ``"prior_mean"`` (the top-down
            pass of means), a number or a tensor ``[D]`` / ``[B, D]`` of values (``start=cue``: the
            cue's own content), see :mod:`.start_values`.
        max_steps: optimiser steps per relaxation; lr, optimizer: the activities' ``torch.optim``
            optimiser (a name of :data:`OPTIMIZERS`) and its step size.
        hidden_init: the hidden nodes' start: ``"randn"`` (``N(0, 1/d)``), ``"zeros"`` or ``"top_down"``.
        seed: seeds ``"randn"`` (None: the global RNG).

    Returns ``pattern [B, D]``, ``code [B, L]`` (all nodes, sensory first), ``trace [T, B]`` (the
    energy :meth:`PCNetMemory.energy` before every step and at the end of each relaxation, as the
    ``"pc"`` read records it), ``steps``,
    ``converged = None`` (fixed step counts), ``info["energy"] [B]``, ``info["procedure"]``,
    ``info["start"]``.  Optimisers with weight decay (AdamW) also shrink clamped entries during
    the relaxation; they are put back at the end.
    """
    defaults = memory.default_options("pcnet")  # retrieve() has filled them in; a direct call gets them here
    proc, start, steps, lr, init, n_repeat, x = _read_options(memory, cue, mask, defaults, procedure, start,
                                                              max_steps, lr, hidden_init, n_repeat, seed, progress)
    opt_name = check_optimizer(defaults.get("optimizer") if optimizer is None else optimizer, "option optimizer")
    net = memory.net
    const = memory.energy_constant()
    x_opt = functools.partial(OPTIMIZERS[opt_name], lr=lr)
    generator = make_generator(seed, cue.device)
    B, shape = cue.shape[0], net.shapes[-1]
    known = None if mask is None else mask.expand_as(cue)
    traces: list[Tensor] = []
    total = 0
    bar = tqdm(total=steps * n_repeat, desc="pcnet read", disable=not progress, leave=False)

    def relax(xs: list[Tensor], n: int, free: Tensor | None) -> list[Tensor]:
        nonlocal total
        xs, trace = net.relax(xs, steps=n, x_optimizer=x_opt,
                              sensory_free=None if free is None else free.reshape(B, *shape))
        traces.extend([trace + const, (net.energy(xs) + const).unsqueeze(0)])
        total += n
        bar.update(n)
        return xs

    with torch.no_grad():
        if proc == "clamp_predict":
            for _ in range(n_repeat):
                xs = relax(_hidden_start(memory, x, init, generator), steps, None)
                pred = net.layers[-1](xs[-2])
                if net.energies[-1] == "bernoulli":
                    pred = torch.sigmoid(pred)
                pred = pred.reshape(B, -1)
                x = pred if known is None else torch.where(known, cue, pred)
                xs[-1] = x.reshape(B, *shape)
        else:
            free = None
            if proc == "relax_all":
                free = torch.ones_like(cue, dtype=torch.bool)
            elif known is not None:
                free = ~known
            xs = relax(_hidden_start(memory, x, init, generator), steps * n_repeat, free)
            out = xs[-1].reshape(B, -1)
            if proc == "joint":
                out = x if known is None else torch.where(known, cue, out)
            xs[-1] = out.reshape(B, *shape)
        final = net.energy(xs) + const
    bar.close()
    code = memory.join_code(xs)
    if not in_range(code, DIVERGED):
        raise FloatingPointError(f"the pcnet read diverged (activities beyond ±{DIVERGED:g}): lower option lr (now "
                                 f"{lr}; its default is the memory's read_lr, else x_lr) or use optimizer='adam' "
                                 f"(now {opt_name!r})")
    return Retrieval(pattern=code[:, :cue.shape[1]].clone(), method="pcnet", code=code, trace=torch.cat(traces),
                     steps=total, converged=None,
                     info={"energy": final, "procedure": proc, "start": start})


@runtime_checkable
class PCNetPyroReadable(PCNetReadable, Protocol):
    """What ``"pcnet_pyro"`` needs besides :class:`PCNetReadable`: the Pyro ``model`` of the nodes and
    the map from a code to its latent sites (``site_values``)."""

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...

    def site_values(self, z: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]: ...


@engine("pcnet_pyro", requires=(PCNetPyroReadable,))
def retrieve_pcnet_pyro(
    memory: PCNetPyroReadable,
    cue: Tensor,
    mask: Tensor | None,
    *,
    procedure: str | None = None,
    start: str | float | Tensor = "zero",
    max_steps: int | None = None,
    lr: float | None = None,
    n_repeat: int = 1,
    hidden_init: str | None = None,
    seed: int | None = 0,
    progress: bool = False,
) -> Retrieval:
    """The ``"pcnet"`` read written with Pyro: an ``AutoDelta`` guide over the node sites of
    ``memory.model`` (``h1 … h{n}``, and ``x_missing`` for the free sensory entries), started where
    ``"pcnet"`` starts (same ``seed`` → same start), loss ``Trace_ELBO`` = the energy summed over
    cues, minimised by ``torch.optim.Adam`` (autograd through the Pyro model; Gaussian nodes).  Same
    options as ``"pcnet"`` with Adam as the optimiser; with ``optimizer="adam"`` the two reads
    agree to rounding (tested).  ``trace [T, B]``: each cue's energy before every step and at the end
    of each relaxation."""
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoDelta, init_to_value

    proc, start, steps, lr, init, n_repeat, x = _read_options(
        memory, cue, mask, memory.default_options("pcnet_pyro"), procedure, start, max_steps, lr, hidden_init,
        n_repeat, seed, progress)
    net, generator = memory.net, make_generator(seed, cue.device)
    B, D = cue.shape
    known = None if mask is None else mask.expand_as(cue)
    traces: list[Tensor] = []
    total = 0
    bar = tqdm(total=steps * n_repeat, desc="pcnet_pyro read", disable=not progress, leave=False)

    def run(x: Tensor, m: Tensor | None, n_steps: int) -> Tensor:
        """Relax the sites from the start ``x`` (sensory, ``[B, D]``); ``m``: the observed
        sensory entries (None: all, clamped to ``x``).  Returns the final code."""
        nonlocal total
        with torch.no_grad():
            code0 = memory.join_code(_hidden_start(memory, x, init, generator))
        values = memory.site_values(code0, m)
        with pyro.settings.context(module_local_params=True):
            guide = AutoDelta(memory.model, init_loc_fn=init_to_value(values=values))
            loss_fn = Trace_ELBO().differentiable_loss
            loss_fn(memory.model, guide, x, m)  # builds the guide's parameters
            params = [p for p in guide.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=lr)

            def code_now() -> Tensor:
                with torch.no_grad():
                    med = guide.median(x, m)
                    sens = x if m is None else torch.where(m, x, med["x_missing"])
                    nodes = [med[memory._site(i)] for i in range(len(net.shapes) - 1)]
                    return torch.cat([sens] + [a.reshape(B, -1) for a in nodes[::-1]], -1)

            trace = []
            for _ in range(n_steps):
                opt.zero_grad()
                with torch.no_grad():
                    trace.append(memory.compute_energy(code_now()))
                loss_fn(memory.model, guide, x, m).backward()
                opt.step()
                bar.update(1)
            code = code_now()
        total += n_steps
        traces.extend([torch.stack(trace), memory.compute_energy(code).unsqueeze(0)])
        return code

    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():  # the network is a constant of the read (no gradients land on it)
        p.requires_grad_(False)
    try:
        if proc == "clamp_predict":
            for _ in range(n_repeat):
                code = run(x, None, steps)
                with torch.no_grad():
                    pred = net.layers[-1](memory.split_code(code)[-2]).reshape(B, -1)
                x = pred if known is None else torch.where(known, cue, pred)
                code = torch.cat([x, code[:, D:]], -1)
        elif proc == "relax_all":
            code = run(x, torch.zeros_like(cue, dtype=torch.bool), steps * n_repeat)
        else:
            code = run(x, known, steps * n_repeat)
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        bar.close()
    if not in_range(code, DIVERGED):
        raise FloatingPointError(f"the pcnet_pyro read diverged (activities beyond ±{DIVERGED:g}): lower option lr "
                                 f"(now {lr}; its default is the memory's read_lr, else x_lr)")
    with torch.no_grad():
        final = memory.compute_energy(code)
    return Retrieval(pattern=code[:, :D].clone(), method="pcnet_pyro", code=code, trace=torch.cat(traces),
                     steps=total, converged=None, info={"energy": final, "procedure": proc, "start": start})
