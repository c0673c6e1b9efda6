"""``"pc"`` and ``"pc_pyro"``: read a predictive-coding memory by MAP inference of its activities.

Both engines compute the same thing.  The read *procedure* is an explicit option
(``procedure``); left at None it is ``"clamp_predict"`` for a full cue and ``"joint"`` for a
partial one (BayesPCN's read, Yoo & Wood 2022, §1.3 of the reference), and the one that ran is
recorded in ``info["procedure"]``:

* ``"clamp_predict"``: ``n_repeat`` rounds of (a) clamp the whole sensory layer to the current
  estimate (first the cue, unknown entries at their start value), draw the hidden activities
  ``h^{-1/2} N(0, I)`` and maximise ``log p(a | M)`` over them; (b) set the sensory layer (its
  unknown entries, for a partial cue) to its most probable value given the hidden ones: the
  top-down prediction ``f(a_1) R_0`` for ``K = 1`` (the exact argmax, which the official code
  approaches with 500 more Adam steps), for ``K > 1`` the responsibility-weighted prediction
  polished by ``steps`` Adam steps.  ``n_repeat = 30`` is Salvatori et al.'s iterated function F.
* ``"joint"``: the observed sensory entries clamped to the cue; the hidden activities and the
  unknown sensory entries are optimised jointly for ``n_repeat · steps`` steps (for a full cue
  only the hidden ones move and the pattern is the cue).
* ``"relax_all"``: every sensory entry is free, started at the cue (unknown entries at their start
  value), and optimised jointly with the hidden activities for ``n_repeat · steps`` steps: the
  noisy cue is only a starting point (PCX's noisy-cue read).

``start`` is the start value of the unknown sensory entries (``mask`` False): ``"zero"``,
``"prior_mean"`` (the network's top-down pass of means, see ``PCNetwork.prior_prediction``) or a
number (``-1``: the official BayesPCN code, whose hidden pixels hold -1) or a tensor of values
``[D]`` / ``[B, D]`` (:mod:`.start_values`).  What a cue holds at its unknown entries is never read
(the protocol replaces it by 0) unless it is passed as the start (``start=cue``: the cue's own
content).  The default, ``"zero"``, was chosen by measurement (``experiments/pc_read_options.py``).

``"pc"`` uses the memory's hand-written local-error gradient (vectorised over cues and particles);
``"pc_pyro"`` optimises an ``AutoDelta`` guide over the activity sites of ``memory.model`` with the
``TraceEnum_ELBO`` loss (``Trace_ELBO`` for ``K = 1``), i.e. autograd through the Pyro model.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, init_to_value
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
from .start_values import DEFAULT_START, check_start, start_fill
from .stop_rule import StopRule

__all__ = ["retrieve_pc", "retrieve_pc_pyro", "PCReadable"]


@runtime_checkable
class PCReadable(Protocol):
    """What the predictive-coding readers need (:class:`varmem.memories.predictive_coding.PCNetwork`
    has it): random hidden starts, the fused relaxation, the mixture energy over particles, the
    top-down sensory prediction, the per-layer weight statistics and particle log-weights, the
    activity-site Pyro model and the read defaults."""

    def init_hidden(self, batch: int, particles: int, generator: Any, dtype: Any = None) -> list[Tensor]: ...

    def relax(self, acts: list[Tensor], sensory_free: Tensor | None, **options: Any) -> tuple: ...

    def mixture_energy(self, acts: list[Tensor], layers: Any = None, log_w: Any = None,
                       with_grad: bool = False) -> tuple: ...

    def predict_sensory(self, acts: list[Tensor], layers: Any = None) -> Tensor: ...

    def layer_stats(self, dtype: torch.dtype) -> list: ...

    def particle_log_weights(self, dtype: torch.dtype) -> Tensor: ...

    def join_code(self, acts: list[Tensor]) -> Tensor: ...

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...

    def default_options(self, method: str) -> dict[str, Any]: ...

    def prior_prediction(self, dtype: torch.dtype) -> Tensor: ...


PROCEDURES = ("clamp_predict", "joint", "relax_all")
"""The read procedures of ``"pc"`` / ``"pc_pyro"`` (see the module docstring)."""
def _procedure(procedure: Any, mask: Tensor | None) -> str:
    if procedure is None:
        return "clamp_predict" if mask is None else "joint"
    return check_choice(procedure, "option procedure", PROCEDURES)


def _start(memory: Any, cue: Tensor, mask: Tensor | None, start: Any) -> Tensor:
    """The sensory estimate a read starts from ``[B, D]``: the cue, unknown entries at ``start``."""
    if mask is None:
        return cue.clone()
    return torch.where(mask, cue, start_fill(start, cue, lambda: memory.prior_prediction(cue.dtype)))


def _resolve(memory: Any, method: str, max_steps: int | None, lr: float | None, tol: float | None,
             rtol: float | None, n_repeat: int, seed: Any, progress: Any) -> tuple[int, float, float, float]:
    """The options, with the memory's read defaults (``default_options``) where None."""
    defaults = memory.default_options(method)
    check_positive_int(n_repeat, "option n_repeat")
    check_seed(seed, "option seed", allow_none=True)
    check_bool(progress, "option progress")
    steps = check_positive_int(defaults["max_steps"] if max_steps is None else max_steps, "option max_steps")
    lr = check_non_negative(defaults["lr"] if lr is None else lr, "option lr")
    tol = check_non_negative(defaults["tol"] if tol is None else tol, "option tol")
    rtol = check_non_negative(defaults.get("rtol", 0.0) if rtol is None else rtol, "option rtol")
    return steps, lr, tol, rtol


def _result(memory: Any, method: str, acts: list[Tensor], traces: list[Tensor], steps: int,
            converged: Tensor | None, procedure: str, start: Any) -> Retrieval:
    with torch.no_grad():
        energy, _, r = memory.mixture_energy(acts)
    code = memory.join_code([a.squeeze(0) for a in acts])
    return Retrieval(
        pattern=acts[0].squeeze(0).clone(), method=method, code=code,
        trace=torch.cat(traces) if traces else None, steps=steps, converged=converged,
        info={"energy": energy, "particle_weights": r.T, "procedure": procedure, "start": start},
    )


def _polish_sensory(memory: Any, acts: list[Tensor], steps: int, lr: float, optimizer: str, tol: float,
                    rtol: float = 0.0, mask: Tensor | None = None) -> Tensor:
    """Most probable sensory layer given the hidden ones (closed form for K = 1); with ``mask``
    only the unknown entries move, the known ones keep their values in ``acts[0]``."""
    pred = memory.predict_sensory(acts)  # [K, B, D]
    if pred.shape[0] == 1:
        return pred if mask is None else torch.where(mask, acts[0], pred)
    _, _, r = memory.mixture_energy(acts)
    mean = (r.unsqueeze(-1) * pred).sum(0, keepdim=True)
    acts[0] = mean if mask is None else torch.where(mask, acts[0], mean)
    free = torch.ones_like(acts[0][0], dtype=torch.bool) if mask is None else ~mask.expand_as(acts[0][0])
    memory.relax(acts, free, steps=steps, lr=lr, optimizer=optimizer, tol=tol, rtol=rtol, free_hidden=False)
    return acts[0]


@engine("pc", requires=(PCReadable,))
def retrieve_pc(
    memory: PCReadable,
    cue: Tensor,
    mask: Tensor | None,
    *,
    procedure: str | None = None,
    start: str | float | Tensor = DEFAULT_START,
    max_steps: int | None = None,
    lr: float | None = None,
    optimizer: str = "adam",
    n_repeat: int = 1,
    tol: float | None = None,
    rtol: float | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> Retrieval:
    """Predictive-coding read with hand-written local-error gradients (see module docstring).

    Options (None: the memory's :meth:`~varmem.Memory.default_options`, its write-time settings):
        procedure: ``"clamp_predict"``, ``"joint"`` or ``"relax_all"`` (module docstring); None:
            ``"clamp_predict"`` for a full cue, ``"joint"`` for a partial one.
        start: start value of the unknown sensory entries: ``"zero"`` (default), ``"prior_mean"``,
            a number, or a tensor ``[D]`` / ``[B, D]`` of values (``start=cue``: the cue's own
            content), see :mod:`.start_values`.
        max_steps: optimiser steps per relaxation (default ``T_infer``; camera-ready 500).
        lr: activity step size (default ``activation_lr``; camera-ready 0.01 with Adam).
        optimizer: ``"adam"`` (official BayesPCN) or ``"sgd"`` (plain ``a ← a − lr ∂E/∂a``).
        n_repeat: clamp / relax / predict rounds (``"clamp_predict"``); multiplies ``max_steps``
            for the other procedures.
        tol: early stop when every cue's energy changed by at most ``tol`` in the same step
            (default ``infer_tol``; the official absolute test).
        rtol: early stop once every cue's energy has, at some step, changed by at most
            ``rtol·|E|`` (default ``infer_rtol``); see ``PCNetwork.relax``.  ``tol = rtol = 0``:
            never stop early (``converged`` is None).
        seed: seeds the random hidden initialisation (``None``: the global RNG).
        progress: show a progress bar.

    Returns a :class:`Retrieval` with ``pattern [B, D]``, ``code [B, D + (L-1)h]`` (all
    activities), ``trace [T, B]`` (energy per step), ``info["energy"] [B]``,
    ``info["particle_weights"] [B, K]`` (responsibilities at the final state),
    ``info["procedure"]`` and ``info["start"]``.
    """
    check_choice(optimizer, "option optimizer", ("adam", "sgd"))
    proc = _procedure(procedure, mask)
    start = check_start(start, cue)
    steps, lr, tol, rtol = _resolve(memory, "pc", max_steps, lr, tol, rtol, n_repeat, seed, progress)
    generator = make_generator(seed, cue.device)
    B = cue.shape[0]
    traces: list[Tensor] = []
    total = 0
    with torch.no_grad():
        layers = memory.layer_stats(cue.dtype)
        x = _start(memory, cue, mask, start).unsqueeze(0)
        bar = tqdm(total=steps * n_repeat, desc="pc read", disable=not progress, leave=False)
        if proc == "clamp_predict":
            for _ in range(n_repeat):
                acts = [x] + memory.init_hidden(B, 1, generator)
                acts, trace, done, converged = memory.relax(acts, None, steps=steps, lr=lr, optimizer=optimizer,
                                                            tol=tol, rtol=rtol, layers=layers, progress=bar)
                traces.append(trace)
                total += done
                x = _polish_sensory(memory, acts, steps, lr, optimizer, tol, rtol, mask)
                acts[0] = x
        else:
            free = torch.ones_like(cue, dtype=torch.bool) if proc == "relax_all" or mask is None else ~mask
            if proc == "joint" and mask is None:
                free = None  # a full cue: nothing sensory to infer
            acts = [x.clone()] + memory.init_hidden(B, 1, generator)
            acts, trace, total, converged = memory.relax(acts, free, steps=steps * n_repeat, lr=lr,
                                                         optimizer=optimizer, tol=tol, rtol=rtol, layers=layers,
                                                         progress=bar)
            if proc == "joint" and mask is not None:
                acts[0] = torch.where(mask, cue, acts[0])
            traces.append(trace)
        bar.close()
    return _result(memory, "pc", acts, traces, total, converged if tol > 0 or rtol > 0 else None, proc, start)


@engine("pc_pyro", requires=(PCReadable,))
def retrieve_pc_pyro(
    memory: PCReadable,
    cue: Tensor,
    mask: Tensor | None,
    *,
    procedure: str | None = None,
    start: str | float | Tensor = DEFAULT_START,
    max_steps: int | None = None,
    lr: float | None = None,
    n_repeat: int = 1,
    tol: float | None = None,
    rtol: float | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> Retrieval:
    """The ``"pc"`` read written with Pyro: an ``AutoDelta`` guide over the sites ``h1 … h{L-1}``
    (and ``x_missing`` for a partial cue) of ``memory.model``, started at the same random
    activities as ``"pc"`` (same ``seed`` → same start), loss ``(TraceEnum_)ELBO`` = the energy
    summed over cues, minimised with ``torch.optim.Adam``.  Same options as ``"pc"`` (Adam only) and
    the same early stop (``StopRule`` with the memory's ``infer_window``, fed each cue's energy
    after every step; ``converged`` per cue).  ``trace [T, B]``: each cue's energy after every step.
    ``"relax_all"`` makes every sensory entry the latent site ``x_missing`` (started at the cue).
    """
    proc = _procedure(procedure, mask)
    start = check_start(start, cue)
    steps, lr, tol, rtol = _resolve(memory, "pc_pyro", max_steps, lr, tol, rtol, n_repeat, seed, progress)
    generator = make_generator(seed, cue.device)
    B, L = cue.shape[0], len(memory.layer_stats(cue.dtype))
    K = memory.particle_log_weights(cue.dtype).shape[0]
    traces: list[Tensor] = []
    total = 0
    converged = torch.zeros(B, dtype=torch.bool, device=cue.device)
    bar = tqdm(total=steps * n_repeat, desc="pc_pyro read", disable=not progress, leave=False)

    def run(x: Tensor, m: Tensor | None, n_steps: int) -> list[Tensor]:
        nonlocal total, converged
        hidden = [h.squeeze(0) for h in memory.init_hidden(B, 1, generator)]
        values = {f"h{i}": hidden[i - 1] for i in range(1, L)}
        if m is not None:
            values["x_missing"] = x.clone()
        model = poutine.block(memory.model, hide=["particle"]) if K > 1 else memory.model
        elbo = TraceEnum_ELBO(max_plate_nesting=1) if K > 1 else Trace_ELBO()
        rule = StopRule(tol, rtol, getattr(memory, "infer_window", 1))  # the "pc" read's rule, per cue
        with pyro.settings.context(module_local_params=True):
            guide = AutoDelta(model, init_loc_fn=init_to_value(values=values))
            loss_fn = elbo(memory.model, guide)
            loss_fn(x, m)
            opt = torch.optim.Adam([p for p in guide.parameters() if p.requires_grad], lr=lr)

            def acts_now() -> list[Tensor]:
                with torch.no_grad():
                    med = guide.median(x, m)
                acts = [x if m is None else torch.where(m, x, med["x_missing"])]
                acts += [med[f"h{i}"] for i in range(1, L)]
                return [a.detach().unsqueeze(0) for a in acts]

            for _ in range(n_steps):
                opt.zero_grad()
                if not all(in_range(p.detach(), DIVERGED) for p in guide.parameters()):
                    raise FloatingPointError(f"pc_pyro diverged (the activities went beyond ±{DIVERGED:g}): lower "
                                             f"option lr (now {lr})")
                loss = loss_fn(x, m)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    e = memory.mixture_energy(acts_now())[0]
                traces.append(e.unsqueeze(0))
                bar.update(1)
                total += 1
                if rule.update(e.clone()):
                    break
            if rule.converged is not None:
                converged = rule.converged
            return acts_now()

    x = _start(memory, cue, mask, start)
    if proc == "clamp_predict":
        for _ in range(n_repeat):
            acts = run(x, None, steps)
            with torch.no_grad():
                x = _polish_sensory(memory, acts, steps, lr, "adam", tol, rtol, mask).squeeze(0)
            acts[0] = x.unsqueeze(0)
    elif proc == "relax_all":
        acts = run(x, torch.zeros_like(cue, dtype=torch.bool), steps * n_repeat)
    elif mask is None:
        acts = run(x, None, steps * n_repeat)
    else:
        acts = run(x, mask.expand_as(cue), steps * n_repeat)
        acts[0] = torch.where(mask, cue, acts[0])
    bar.close()
    return _result(memory, "pc_pyro", acts, traces, total, converged if tol > 0 or rtol > 0 else None, proc, start)
