"""A composed predictive-coding network (:class:`PCNet`) as a varmem memory (:class:`PCNetMemory`).

The memory holds a :class:`~varmem.memories.predictive_coding.PCNet` (nodes listed top-down,
``x_0`` the top, ``x_n`` the sensory node) and the items written to it; writing trains the
network on them, reading relaxes its activities from a cue.  Its latent state is the **code** of
all node activities side by side, sensory first and then upwards (the layout of
:class:`~varmem.memories.predictive_coding.PCNetwork`)::

    z = [x_n (D) | x_{n-1} | … | x_0 (top)]          (each node flattened, [B, D + Σ hidden sizes])

Energy (:meth:`PCNetMemory.energy`), a negative log-density with every constant kept::

    E(z) = ½‖x_0 − μ_top‖²/σ_top² + (d_0/2) log 2πσ_top²            (top_prior=True; 0 otherwise)
         + Σ_i  ½‖x_i − g_i(x_{i-1})‖²/σ_i² + (d_i/2) log 2πσ_i²   (Gaussian node i)
         + Σ_i  Σ softplus(g_i) − x_i·g_i                          (Bernoulli node i: −log Bernoulli)
         = PCNet.energy(x) + const

so that, for Gaussian nodes, ``E = −log p`` of the Pyro trace of :meth:`PCNetMemory.model`
(the top node without a prior is an improper flat site, log-density 0).  With a cue the observed
sensory entries (``mask``) are taken from the cue, the others from ``z`` (PCNetwork's convention).

Writing (:meth:`PCNetMemory.write`): ``training="offline"`` re-fits the network on every stored item
(``epochs`` epochs of :meth:`PCNet.fit`: ``T`` inference steps per minibatch, then a weight step;
``incremental=True``: a weight step after every inference step), ``"continual"`` fits on the
new items only (earlier ones may be forgotten: the online setting).  Reading is the engine
``"pcnet"`` (:func:`retrieve_pcnet`), with the read procedures of the PC family as explicit options,
or ``"pcnet_pyro"`` (:func:`retrieve_pcnet_pyro`), the same relaxation as autograd through the Pyro
model (Gaussian nodes).
:meth:`PCNetMemory.evidence` estimates ``log p(x_obs | θ)`` by Laplace importance sampling over the
hidden nodes (Gaussian nodes with a top prior).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor
from tqdm.auto import tqdm

from ...domains import SIGNED, UNIT
from ...engine import engine
from ...evidence import Evidence, importance_sampling
from ...helpers import make_generator
from ...memory import Memory
from ...retrieval import Retrieval
from ...validation import (
    DIVERGED,
    all_finite,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_seed,
    check_unit_interval,
    in_range,
)
from .composition import Conv2d, ConvTranspose2d, Dense, FitRecord, PCNet

__all__ = ["PCNetMemory", "retrieve_pcnet", "retrieve_pcnet_pyro", "PCNetReadable", "PCNetPyroReadable", "net_spec",
           "build_net", "OPTIMIZERS"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name.lower(): getattr(torch.optim, name)
    for name in ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop", "ASGD")
    if hasattr(torch.optim, name)
}
"""The ``torch.optim`` optimisers a :class:`PCNetMemory` takes by (lower-case) name, for the
activities and the weights (L-BFGS needs a closure and SparseAdam sparse gradients: left out)."""

PROCEDURES = ("clamp_predict", "joint", "relax_all")
STARTS = ("zero", "prior_mean")
INITS = ("randn", "zeros", "top_down")
TRAINING = ("offline", "continual")
_LAYERS = {"Dense": Dense, "Conv2d": Conv2d, "ConvTranspose2d": ConvTranspose2d}
_SPEC_KEYS = ("top_shape", "layers", "energies", "sigmas", "top_prior", "sigma_top", "seed")


# --- the network as JSON ------------------------------------------------------------------------
def _int_or_list(value: Any) -> Any:
    t = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)
    return t[0] if len(set(t)) == 1 else list(t)


def net_spec(net: PCNet) -> dict[str, Any]:
    """A JSON-able description of ``net``'s architecture (what :func:`build_net` rebuilds; the
    weights are not part of it).  ``TypeError`` for a layer that is not :class:`Dense`,
    :class:`Conv2d` or :class:`ConvTranspose2d` with a named activation (such a network works,
    but cannot be described, so a memory holding it cannot be saved)."""
    layers = []
    for i, layer in enumerate(net.layers):
        kind = type(layer).__name__
        if type(layer) not in _LAYERS.values() or not isinstance(layer.activation, str):
            raise TypeError(f"net layer {i} ({kind}) cannot be described as JSON: only Dense, Conv2d and "
                            "ConvTranspose2d layers with a named activation can be saved")
        inner = layer.inner
        entry: dict[str, Any] = {"type": kind}
        if kind == "Dense":
            entry.update(in_features=inner.in_features, out_features=inner.out_features)
        else:
            entry.update(in_channels=inner.in_channels, out_channels=inner.out_channels,
                         kernel_size=_int_or_list(inner.kernel_size), stride=_int_or_list(inner.stride),
                         padding=_int_or_list(inner.padding))
            if kind == "ConvTranspose2d":
                entry["output_padding"] = _int_or_list(inner.output_padding)
        entry.update(bias=inner.bias is not None, activation=layer.activation, where=layer.where)
        layers.append(entry)
    return {"top_shape": list(net.shapes[0]), "layers": layers, "energies": list(net.energies),
            "sigmas": [float(s) for s in net.sigmas], "top_prior": bool(net.top_prior),
            "sigma_top": float(net.sigma_top)}


def build_net(spec: Any, name: str = "net") -> PCNet:
    """The :class:`PCNet` described by ``spec`` (a dict as :func:`net_spec` returns, optionally with
    ``"seed"``, the seed of the initial weights, default 0); errors name ``name``."""
    if not isinstance(spec, dict):
        raise TypeError(f"{name} must be a PCNet or a dict describing one, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS), key=str)
    missing = [k for k in ("top_shape", "layers") if k not in spec]
    if unknown or missing:
        raise ValueError(f"{name} must be a dict with the keys {list(_SPEC_KEYS)} (top_shape and layers required); "
                         f"unknown {unknown}, missing {missing}")
    entries = spec["layers"]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{name}['layers'] must be a non-empty list of layer dicts, got {entries!r}")
    layers = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("type") not in _LAYERS:
            raise ValueError(f"{name}['layers'][{i}] must be a dict with 'type' one of {list(_LAYERS)}, got {entry!r}")
        kwargs = {k: v for k, v in entry.items() if k != "type"}
        for key, value in kwargs.items():  # JSON-able scalars only: no tensors, objects or callables
            if not (isinstance(value, (bool, int, float, str)) or (
                    isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))):
                raise TypeError(f"{name}['layers'][{i}][{key!r}] must be a number, a name or a list of ints, "
                                f"got {value!r}")
            if isinstance(value, list):
                kwargs[key] = tuple(value)
        try:
            layers.append(_LAYERS[entry["type"]](**kwargs))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}['layers'][{i}]: {e}") from None
        except RuntimeError as e:
            raise ValueError(f"{name}['layers'][{i}]: {e}") from None
    options = {k: spec[k] for k in ("energies", "sigmas", "top_prior", "sigma_top", "seed") if k in spec}
    if isinstance(options.get("sigmas"), list):
        options["sigmas"] = list(options["sigmas"])
    top = _shape(spec["top_shape"], name)
    try:
        return PCNet(top, layers, **options)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name}['top_shape'] must be a non-empty list of positive ints, got {value!r}")
    return tuple(value)


def _optimizer(value: Any, name: str, extra: Sequence[str] = ()) -> str:
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


@engine("pcnet", requires=(PCNetReadable,))
def retrieve_pcnet(
    memory: PCNetReadable,
    cue: Tensor,
    mask: Tensor | None,
    *,
    procedure: str | None = None,
    start: str | float = "zero",
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
            pass of means) or a number.
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
    proc = procedure
    if proc is None:
        proc = "clamp_predict" if mask is None else "joint"
    check_choice(proc, "option procedure", PROCEDURES)
    if isinstance(start, str):
        check_choice(start, "option start", STARTS)
    else:
        try:
            check_finite(start, "option start")
        except TypeError:
            raise TypeError(f"option start must be one of {list(STARTS)} or a finite number, got {start!r}") from None
    steps = check_positive_int(defaults.get("max_steps") if max_steps is None else max_steps, "option max_steps")
    lr = check_non_negative(defaults.get("lr") if lr is None else lr, "option lr")
    opt_name = _optimizer(defaults.get("optimizer") if optimizer is None else optimizer, "option optimizer")
    init = check_choice(defaults.get("hidden_init") if hidden_init is None else hidden_init, "option hidden_init",
                        INITS)
    n_repeat = check_positive_int(n_repeat, "option n_repeat")
    check_seed(seed, "option seed", allow_none=True)
    check_bool(progress, "option progress")
    net = memory.net
    const = memory.energy_constant()
    x_opt = functools.partial(OPTIMIZERS[opt_name], lr=lr)
    generator = make_generator(seed, cue.device)
    B, shape = cue.shape[0], net.shapes[-1]
    known = None if mask is None else mask.expand_as(cue)
    if known is None:
        x = cue.clone()
    else:
        if start == "prior_mean":
            fill = memory.prior_prediction().to(cue)
        else:
            fill = torch.full_like(cue, 0.0 if start == "zero" else float(start))
        x = torch.where(known, cue, fill)
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
    start: str | float = "zero",
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

    proc = procedure if procedure is not None else ("clamp_predict" if mask is None else "joint")
    check_choice(proc, "option procedure", PROCEDURES)
    defaults = memory.default_options("pcnet_pyro")
    if isinstance(start, str):
        check_choice(start, "option start", STARTS)
    else:
        try:
            check_finite(start, "option start")
        except TypeError:
            raise TypeError(f"option start must be one of {list(STARTS)} or a finite number, got {start!r}") from None
    steps = check_positive_int(defaults.get("max_steps") if max_steps is None else max_steps, "option max_steps")
    lr = check_non_negative(defaults.get("lr") if lr is None else lr, "option lr")
    init = check_choice(defaults.get("hidden_init") if hidden_init is None else hidden_init, "option hidden_init",
                        INITS)
    n_repeat = check_positive_int(n_repeat, "option n_repeat")
    check_seed(seed, "option seed", allow_none=True)
    check_bool(progress, "option progress")
    net, generator = memory.net, make_generator(seed, cue.device)
    B, D = cue.shape
    known = None if mask is None else mask.expand_as(cue)
    x = cue.clone()
    if known is not None:
        fill = memory.prior_prediction().to(cue) if start == "prior_mean" else torch.full_like(
            cue, 0.0 if start == "zero" else float(start))
        x = torch.where(known, cue, fill)
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


# --- the memory -----------------------------------------------------------------------------------
class PCNetMemory(Memory):
    """A predictive-coding network composed of layers (:class:`PCNet`) that stores items in its weights.

    Args:
        net: a :class:`PCNet` (copied: the caller's network is never trained) or a dict describing
            one (:func:`net_spec`, plus an optional ``"seed"`` for the initial weights);
            :meth:`dense` builds a dense one from widths.  ``D`` = its sensory node's size.
        training: ``"offline"`` (every write re-fits on all stored items) or ``"continual"`` (on
            the new items only).
        epochs: epochs of :meth:`PCNet.fit` per write.
        T: inference steps per minibatch.
        batch_size: minibatch size (None: the whole set).
        x_optimizer, x_lr: the activities' optimiser (a name of :data:`OPTIMIZERS`) and step.
        w_optimizer, w_lr: the weights' optimiser (``"hebbian"``: the local rule
            ``θ ← θ − w_lr ∂E/∂θ`` on the batch mean, or a name of :data:`OPTIMIZERS`; a fresh
            optimiser per write) and step.
        incremental: a weight step after every inference step (incremental PC).
        hidden_init: the hidden nodes' start in training and reads: ``"randn"``, ``"zeros"``,
            ``"top_down"`` (:meth:`PCNet.init_activities`).
        read_steps, read_lr, procedure, start: the read defaults (``max_steps``, ``lr`` (None:
            ``x_lr``), ``procedure``, ``start`` of :func:`retrieve_pcnet`; ``"pcnet"`` reads use
            ``x_optimizer``, ``"pcnet_pyro"`` Adam).
        seed: seeds the training (minibatch order and hidden starts; write ``k`` uses ``seed + N``,
            ``N`` the items stored before it).

    ``value_domain``: ``[-1, 1]`` (Gaussian sensory node); ``[0, 1]`` for a Bernoulli sensory node.

    Example:
        >>> m = PCNetMemory.dense(4, hidden=(8,), epochs=5, T=5)
        >>> m.write(torch.randn(3, 4)).retrieve(torch.zeros(1, 4), procedure="relax_all").pattern.shape
        torch.Size([1, 4])
    """

    methods = (retrieve_pcnet, retrieve_pcnet_pyro)
    default_method = "pcnet"
    value_domain = SIGNED
    latent_site = "x"
    observed_site = "x"

    def __init__(
        self,
        net: PCNet | dict[str, Any],
        *,
        training: str = "offline",
        epochs: int = 100,
        T: int = 20,
        batch_size: int | None = None,
        x_optimizer: str = "sgd",
        x_lr: float = 0.1,
        w_optimizer: str = "hebbian",
        w_lr: float = 1e-3,
        incremental: bool = False,
        hidden_init: str = "randn",
        read_steps: int = 100,
        read_lr: float | None = None,
        procedure: str | None = None,
        start: str | float = "zero",
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        if isinstance(net, PCNet):
            net = copy.deepcopy(net)
        else:
            net = build_net(net)
        if not isinstance(net, PCNet):
            raise TypeError(f"net must be a PCNet or a dict describing one, got {type(net).__name__}")
        super().__init__(net.dim, device=device, dtype=dtype)
        self.training_mode = check_choice(training, "training", TRAINING)
        self.epochs = check_positive_int(epochs, "epochs")
        self.T = check_positive_int(T, "T")
        self.batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
        self.x_optimizer = _optimizer(x_optimizer, "x_optimizer")
        self.x_lr = check_positive(x_lr, "x_lr")
        self.w_optimizer = _optimizer(w_optimizer, "w_optimizer", ("hebbian",))
        self.w_lr = check_positive(w_lr, "w_lr")
        self.incremental = check_bool(incremental, "incremental")
        self.hidden_init = check_choice(hidden_init, "hidden_init", INITS)
        self.read_steps = check_positive_int(read_steps, "read_steps")
        self.read_lr = None if read_lr is None else check_positive(read_lr, "read_lr")
        self.procedure = None if procedure is None else check_choice(procedure, "procedure", PROCEDURES)
        if isinstance(start, str):
            self.start = check_choice(start, "start", STARTS)
        else:
            try:
                self.start = check_finite(start, "start")
            except TypeError:
                raise TypeError(f"start must be one of {list(STARTS)} or a finite number, got {start!r}") from None
        self.seed = check_seed(seed)
        for i, s in enumerate([net.sigma_top, *net.sigmas]):
            if not torch.finfo(self.dtype).tiny < s * s < torch.finfo(self.dtype).max:
                raise ValueError(f"net sigma {s:g} (node {i}) squared is outside the range of {self.dtype}")
        self.net = net.to(device=self.device, dtype=self.dtype)
        if net.energies[-1] == "bernoulli":
            self.value_domain = UNIT  # binary / intensity data; the class default is the Gaussian case
        self.register_buffer("items", torch.empty(0, self.dim, device=self.device, dtype=self.dtype))
        self.last_fit: FitRecord | None = None
        """The :class:`FitRecord` of the last write or :meth:`fit` (energy per epoch, seconds, steps)."""

    @classmethod
    def dense(cls, dim: int, hidden: Sequence[int] | int = (256, 256), *, activation: str = "relu",
              where: str = "pre", bias: bool = True, sigma: float = 1.0, sigma_data: float | None = None,
              top_prior: bool = True, sigma_top: float = 1.0, net_seed: int = 0, **kwargs: Any) -> "PCNetMemory":
        """A memory over a dense network ``hidden[0] (top) → … → hidden[-1] → dim`` (widths listed
        top-down), every layer with ``activation`` on side ``where``, Gaussian nodes of std
        ``sigma`` (the sensory one ``sigma_data``, default ``sigma``); ``kwargs`` go to the constructor."""
        check_positive_int(dim, "dim")
        widths = (hidden,) if isinstance(hidden, int) and not isinstance(hidden, bool) else tuple(hidden)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints (widths, top first), "
                             f"got {hidden!r}")
        sizes = [*widths, int(dim)]
        sigmas = [float(sigma)] * (len(sizes) - 2) + [float(sigma if sigma_data is None else sigma_data)]
        layers = [{"type": "Dense", "in_features": a, "out_features": b, "bias": bias, "activation": activation,
                   "where": where} for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        spec = {"top_shape": [sizes[0]], "layers": layers, "sigmas": sigmas, "top_prior": top_prior,
                "sigma_top": sigma_top, "seed": net_seed}
        return cls(spec, **kwargs)

    # --- size, config, state -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"net": net_spec(self.net), "training": self.training_mode, "epochs": self.epochs, "T": self.T,
                "batch_size": self.batch_size, "x_optimizer": self.x_optimizer, "x_lr": self.x_lr,
                "w_optimizer": self.w_optimizer, "w_lr": self.w_lr, "incremental": self.incremental,
                "hidden_init": self.hidden_init, "read_steps": self.read_steps, "read_lr": self.read_lr,
                "procedure": self.procedure, "start": self.start, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"D={self.dim}, nodes={self.net.shapes}, training={self.training_mode}, stored={len(self)}"

    def check_state(self) -> None:
        self.check_parameters()
        self.check_stored_items()

    def default_options(self, method: str) -> dict[str, Any]:
        """``"pcnet"`` / ``"pcnet_pyro"`` read with ``max_steps = read_steps``, ``lr = read_lr`` (None:
        ``x_lr``), ``hidden_init``, ``procedure`` and ``start`` from the constructor, and ``"pcnet"``
        with ``optimizer = x_optimizer`` (``"pcnet_pyro"`` always uses Adam)."""
        out = {"procedure": self.procedure, "start": self.start, "max_steps": self.read_steps,
               "lr": self.x_lr if self.read_lr is None else self.read_lr, "hidden_init": self.hidden_init}
        if method == "pcnet":
            out["optimizer"] = self.x_optimizer
        return out

    # --- the code of all nodes ---------------------------------------------------------------------
    @property
    def node_sizes(self) -> list[int]:
        """Entries per node, top first (the sensory node last, ``D``)."""
        return [math.prod(s) for s in self.net.shapes]

    @property
    def latent_dim(self) -> int:
        """``L = Σ node sizes``: a read's code holds every node's activity."""
        return sum(self.node_sizes)

    def split_code(self, code: Tensor) -> list[Tensor]:
        """``[B, L]`` → node activities ``[B, *shape]``, top first (as :meth:`PCNet.energy` takes them)."""
        parts = code.split(self.node_sizes[::-1], dim=-1)[::-1]
        return [p.reshape(*code.shape[:-1], *s) for p, s in zip(parts, self.net.shapes, strict=True)]

    def join_code(self, nodes: list[Tensor]) -> Tensor:
        """Node activities (top first) → ``[B, L]``, sensory first."""
        return torch.cat([x.reshape(x.shape[0], -1) for x in nodes[::-1]], -1)

    def energy_constant(self) -> float:
        """``Σ_Gaussian nodes (d_i/2) log 2πσ_i²`` (+ the top prior's), the part of :meth:`energy`
        that :meth:`PCNet.energy` leaves out."""
        sizes, net = self.node_sizes, self.net
        c = 0.5 * sizes[0] * math.log(2 * math.pi * net.sigma_top**2) if net.top_prior else 0.0
        for i, (e, s) in enumerate(zip(net.energies, net.sigmas, strict=True)):
            if e == "gaussian":
                c += 0.5 * sizes[i + 1] * math.log(2 * math.pi * s * s)
        return c

    def prior_prediction(self) -> Tensor:
        """``[D]`` the top-down pass of means from ``μ_top`` (0 without a top prior): the start
        ``"prior_mean"`` of unknown sensory entries (``sigmoid`` of the logits for a Bernoulli node)."""
        with torch.no_grad():
            xs = self.net.init_activities(self.items.new_zeros(1, self.dim), "top_down")
            pred = self.net.layers[-1](xs[-2])
            if self.net.energies[-1] == "bernoulli":
                pred = torch.sigmoid(pred)
        return pred.reshape(-1)

    # --- energy ---------------------------------------------------------------------------------------
    def pc_energy(self, z: Any, cue: Any = None, mask: Any = None) -> Tensor:
        """``PCNet.energy`` at the code ``z``: :meth:`energy` without its constants (inputs checked)."""
        return self.energy(z, cue, mask) - self.energy_constant()

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``−log p(x_0, …, x_n | θ)`` ``[...]`` at the code ``z [..., L]`` (module docstring), all
        constants kept; with ``cue`` the observed sensory entries come from the cue."""
        batch = z.shape[:-1] if cue is None else torch.broadcast_shapes(z.shape[:-1], cue.shape[:-1])
        flat = z.expand(*batch, z.shape[-1]).reshape(-1, z.shape[-1])
        if cue is not None:
            c = cue.expand(*batch, cue.shape[-1]).reshape(-1, cue.shape[-1])
            sens = flat[:, :self.dim]
            if mask is None:
                sens = c
            else:
                sens = torch.where(mask.expand(*batch, mask.shape[-1]).reshape(-1, mask.shape[-1]), c, sens)
            flat = torch.cat([sens, flat[:, self.dim:]], -1)
        e = self.net.energy(self.split_code(flat)) + self.energy_constant()
        return e.reshape(batch)

    # --- the Pyro model -------------------------------------------------------------------------------
    def _site(self, i: int) -> str:
        """Site name of node ``i`` (top first): ``h{n-i}`` for hidden nodes, ``x`` for the sensory one."""
        n = len(self.net.layers)
        return "x" if i == n else f"h{n - i}"

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """Ancestral Pyro model of the nodes, top first (Gaussian nodes only).

        Sites (plate ``"cues"``, ``dim=-1``, each node flattened to ``[B, d]``): ``h{n}`` (the top:
        ``N(μ_top, σ_top²)``, or an improper flat site of log-density 0 without a top prior), …,
        ``h1``, and the sensory node ``x ~ N(g_n(x_{n-1}), σ_n²)`` observed at ``cue``; for a partial
        cue the unknown entries come from the flat site ``x_missing`` and ``x = where(mask, cue,
        x_missing)`` is observed (PCNetwork's convention).  Its log-density is ``−energy``."""
        self._check_not_empty()
        net = self.net
        if any(e != "gaussian" for e in net.energies):
            raise TypeError("PCNetMemory.model needs Gaussian nodes: a Bernoulli node's activity is continuous in "
                            "reads, so it has no proper Pyro likelihood here (use energy)")
        B = cue.shape[0] if cue is not None else num_cues
        sizes, n = self.node_sizes, len(net.layers)
        like = self.items
        with pyro.plate("cues", B, dim=-1):
            if net.top_prior:
                top = dist.Normal(net.mu_top.reshape(-1).expand(B, sizes[0]), net.sigma_top).to_event(1)
            else:
                top = dist.ImproperUniform(constraints.real, (B,), (sizes[0],))
            a = pyro.sample(self._site(0), top)
            for i, layer in enumerate(net.layers):
                mean = layer(a.reshape(B, *net.shapes[i])).reshape(B, -1)
                fn = dist.Normal(mean, torch.full_like(mean, net.sigmas[i])).to_event(1)
                if i + 1 < n:
                    a = pyro.sample(self._site(i + 1), fn)
                elif cue is None:
                    a = pyro.sample("x", fn)
                elif mask is None:
                    a = pyro.sample("x", fn, obs=cue)
                else:
                    free = pyro.sample("x_missing", dist.ImproperUniform(constraints.real, (B,), (self.dim,)))
                    a = pyro.sample("x", fn, obs=torch.where(mask, cue, free.to(like)))
        return a

    def site_values(self, z: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """The latent sites of :meth:`model` at the code ``z [B, L]`` (for ``poutine.condition``)."""
        nodes = self.split_code(z)
        values = {self._site(i): x.reshape(z.shape[0], -1) for i, x in enumerate(nodes[:-1])}
        if mask is not None:
            values["x_missing"] = z[:, :self.dim]
        return values

    def compute_evidence(self, cue: Tensor, mask: Tensor | None, *, num_samples: int = 256, seed: int | None = 0,
                         defensive: float = 0.1, newton_steps: int = 2, max_steps: int | None = None,
                         lr: float | None = None, optimizer: str | None = None) -> Evidence:
        """``log p(x_obs | θ) = log ∫ p(x_obs, h | θ) dh`` (Gaussian nodes and a top prior; the
        weights are point values), estimated by importance sampling over the hidden nodes ``h``.

        Exact parts: the unobserved sensory entries are integrated out in closed form (given the
        node above they are independent Gaussians, so they leave only the observed entries'
        terms).  The proposal is Laplace's: the mode of ``p(h | x_obs)`` (the ``"joint"`` read with
        ``max_steps`` / ``lr`` / ``optimizer``, then ``newton_steps`` Newton steps) and the inverse
        Hessian of ``E_obs(h) = −log p(x_obs, h)`` there (autograd, eigenvalues floored at 1e-6 of the
        largest), mixed with a share ``defensive`` of ancestral prior draws so the weights stay
        bounded.  ``num_samples`` draws per cue, seeded by ``seed``.  For linear activations the
        model is linear-Gaussian, the Laplace Gaussian is the exact posterior and, with
        ``defensive=0``, the estimate is exact to rounding.  Kind ``"estimate"``, with its standard
        error and effective sample size."""
        net = self.net
        if any(e != "gaussian" for e in net.energies) or not net.top_prior:
            raise TypeError("PCNetMemory has no evidence log p(x | M) here: it needs Gaussian nodes and a top prior "
                            "(top_prior=True; without it the model is improper)")
        S = check_int(num_samples, "option num_samples", minimum=2)
        check_seed(seed, "option seed", allow_none=True)
        delta = check_unit_interval(defensive, "option defensive")
        if delta == 1.0:
            raise ValueError("option defensive must be < 1 (a share of prior draws; 1 leaves no Laplace proposal)")
        newton = check_int(newton_steps, "option newton_steps", minimum=0)
        B, D = cue.shape
        known = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand(B, D)
        n_obs = known.sum(-1).to(cue.dtype)
        mode = retrieve_pcnet(self, cue, known, procedure="joint", max_steps=max_steps, lr=lr, optimizer=optimizer,
                              seed=seed).code[:, D:]
        c_unobs = 0.5 * math.log(2 * math.pi * net.sigmas[-1] ** 2)

        def e_obs(h: Tensor, x: Tensor, m: Tensor) -> Tensor:  # one cue: h [H], x [D], m [D]
            nodes = self.split_code(torch.cat([torch.zeros(D, dtype=h.dtype, device=h.device), h])[None])
            pred = net.layers[-1](nodes[-2]).reshape(1, D)  # unknown entries at their prediction: no energy
            z = torch.cat([pred, h[None]], -1)
            return self.compute_energy(z, x[None], m[None])[0] - c_unobs * (D - m.sum())

        grad_fn = torch.func.vmap(torch.func.grad(e_obs))
        hess_fn = torch.func.vmap(torch.func.jacrev(torch.func.jacrev(e_obs)))  # reverse over reverse: no forward AD
        with torch.no_grad():
            for _ in range(newton):
                hess = hess_fn(mode, cue, known)
                mode = mode - torch.linalg.solve(hess, grad_fn(mode, cue, known).unsqueeze(-1)).squeeze(-1)
            hess = hess_fn(mode, cue, known)  # [B, H, H]
            if not (all_finite(hess) and all_finite(mode)):
                raise FloatingPointError("the Laplace proposal of PCNetMemory.evidence is not finite for these cues")
            evals, evecs = torch.linalg.eigh(0.5 * (hess + hess.transpose(-1, -2)))
            evals = evals.clamp_min(1e-6 * evals.amax(-1, keepdim=True).clamp_min(1e-30))
            scale = evecs * evals.rsqrt().unsqueeze(-2)  # Σ^{1/2} = V Λ^{-1/2}: Σ = scale scaleᵀ
            g = make_generator(seed, "cpu")
            H = mode.shape[-1]
            eps = torch.randn(S, B, H, generator=g, dtype=cue.dtype).to(cue.device)
            laplace = mode + (scale @ eps.unsqueeze(-1)).squeeze(-1)  # [S, B, H]
            n_prior = int(round(delta * S))
            if n_prior:
                laplace[:n_prior] = self._prior_hidden(n_prior * B, g).reshape(n_prior, B, H)
            log_q_lap = (-0.5 * torch.linalg.vecdot(eps, eps) - 0.5 * H * math.log(2 * math.pi)
                         + 0.5 * evals.log().sum(-1))
            if n_prior:  # the draws' density under the mixture, for the Laplace part from its own formula
                diff = laplace - mode
                proj = (evecs.transpose(-1, -2).unsqueeze(0) @ diff.unsqueeze(-1)).squeeze(-1)
                log_q_lap = (-0.5 * (proj * proj * evals).sum(-1) - 0.5 * H * math.log(2 * math.pi)
                             + 0.5 * evals.log().sum(-1))
                log_q = torch.logaddexp(math.log1p(-delta) + log_q_lap,
                                        math.log(delta) - self._hidden_energy(laplace.reshape(S * B, H)).reshape(S, B))
            else:
                log_q = log_q_lap
            flat = laplace.reshape(S * B, H)
            e = torch.func.vmap(e_obs)(flat, cue.repeat(S, 1), known.repeat(S, 1)).reshape(S, B)
        return importance_sampling(-e - log_q, n_obs, method="laplace_importance_sampling")

    def _hidden_energy(self, h: Tensor) -> Tensor:
        """``−log p(h)`` ``[N]`` of the hidden nodes alone (top prior and the hidden layers, constants kept)."""
        net, D = self.net, self.dim
        nodes = self.split_code(torch.cat([h.new_zeros(h.shape[0], D), h], -1))
        sizes = self.node_sizes
        e = 0.5 * (nodes[0] - net.mu_top).pow(2).flatten(1).sum(-1) / net.sigma_top**2
        e = e + 0.5 * sizes[0] * math.log(2 * math.pi * net.sigma_top**2)
        for i in range(1, len(nodes) - 1):
            e = e + net.node_energy(i, nodes[i], net.layers[i - 1](nodes[i - 1]))
            e = e + 0.5 * sizes[i] * math.log(2 * math.pi * net.sigmas[i - 1] ** 2)
        return e

    def _prior_hidden(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``[n, H]`` ancestral draws of the hidden nodes from the network's prior (top first, flattened
        bottom-up as in the code)."""
        net = self.net
        like = self.items

        def noise(shape: Sequence[int]) -> Tensor:
            return torch.randn(n, *shape, generator=generator, dtype=like.dtype).to(like.device)

        x = net.mu_top.expand(n, *net.shapes[0]) + net.sigma_top * noise(net.shapes[0])
        nodes = [x]
        for i in range(1, len(net.shapes) - 1):
            x = net.layers[i - 1](x) + net.sigmas[i - 1] * noise(net.shapes[i])
            nodes.append(x)
        return torch.cat([a.reshape(n, -1) for a in nodes[::-1]], -1)

    # --- writing --------------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.state_dict().items()}

    def _restore(self, snapshot: dict[str, Tensor]) -> None:
        for name, value in snapshot.items():
            self._set_state_tensor(name, value)
        self.__dict__.pop("_growth", None)

    def write(self, items: Any, *, progress: bool = False) -> "PCNetMemory":
        """Store ``items`` (``[N, D]``, ``[D]`` or sensory-shaped ``[N, *shape]``) and train the
        network: ``training="offline"`` on every stored item, ``"continual"`` on these only
        (:attr:`last_fit` keeps the record).  A write that fails or diverges (``FloatingPointError``)
        leaves the memory as it was."""
        shape = tuple(self.net.shapes[-1])
        if len(shape) > 1 and hasattr(items, "shape") and tuple(items.shape[1:]) == shape:
            items = items.reshape(items.shape[0], -1)
        new = self.prepare_items(items)
        check_bool(progress, "progress")
        if self.net.energies[-1] == "bernoulli" and not bool(((new >= 0) & (new <= 1)).all()):
            raise ValueError("items must lie in [0, 1] for a Bernoulli sensory node (its energy is the binary "
                             "cross-entropy with the items as targets)")
        before, last = self._snapshot(), self.last_fit
        n_before = len(self)
        try:
            self.append_rows("items", new)
            data = self.items if self.training_mode == "offline" else new
            self._fit(data, self.epochs, progress, None, self.seed + n_before)
        except BaseException:
            self._restore(before)
            self.last_fit = last
            raise
        return self

    def fit(self, epochs: int | None = None, *, progress: bool = False,
            callback: Callable[[int, FitRecord], Any] | None = None) -> "PCNetMemory":
        """Train ``epochs`` (default ``self.epochs``) more epochs on every stored item;
        ``callback(epoch, record)`` after each.  Nothing changes if it fails."""
        epochs = check_positive_int(self.epochs if epochs is None else epochs, "epochs")
        check_bool(progress, "progress")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (epoch, record), got {callback!r}")
        self._check_not_empty()
        before, last = self._snapshot(), self.last_fit
        try:
            self._fit(self.items, epochs, progress, callback, self.seed + len(self))
        except BaseException:
            self._restore(before)
            self.last_fit = last
            raise
        return self

    def _fit(self, data: Tensor, epochs: int, progress: bool, callback: Any, seed: int) -> None:
        w_opt: Any = "hebbian" if self.w_optimizer == "hebbian" else functools.partial(
            OPTIMIZERS[self.w_optimizer], lr=self.w_lr)
        with torch.no_grad():
            record = self.net.fit(data.clone(), epochs=epochs, batch_size=self.batch_size, T=self.T,
                                  x_optimizer=functools.partial(OPTIMIZERS[self.x_optimizer], lr=self.x_lr),
                                  w_optimizer=w_opt, w_lr=self.w_lr, incremental=self.incremental,
                                  init=self.hidden_init, seed=seed, progress=progress, callback=callback)
        for p in self.net.parameters():
            p.grad = None
        bad = [name for name, p in self.net.named_parameters() if not in_range(p.detach())]
        if bad or not all(math.isfinite(e) for e in record.energy):
            raise FloatingPointError(
                f"PCNetMemory training on the stored items diverged (weights {bad or 'finite'}, energies "
                f"{record.energy[-3:]}): lower x_lr (now {self.x_lr}) or w_lr (now {self.w_lr}), fewer T / epochs, "
                "or rescale the items; nothing was changed")
        self.last_fit = record
