"""``varmem.fit``: stochastic variational inference for any Pyro model/guide pair, PyTorch-native.

The objective is Pyro's ``Trace_ELBO`` estimator of the negative evidence lower bound::

    L(θ, φ) = -E_{q_φ(z | x)}[log p_θ(x, z) - log q_φ(z | x)]        (a loss: lower is better)

estimated with ``num_particles`` samples of the guide; reparameterisable guide sites give pathwise
gradients, the others a score-function (REINFORCE) term with Pyro's ``log_r`` baseline-free
surrogate, exactly as :class:`pyro.infer.Trace_ELBO` does.  The loss module is an
:class:`pyro.infer.elbo.ELBOModule` (what ``Trace_ELBO()(model, guide)`` returns) whose
parameters are the model's and the guide's; it is optimised with a plain ``torch.optim``
optimiser, so it can be wrapped in ``DistributedDataParallel`` unchanged.

Minibatches
-----------
``data`` is a tensor or a tuple of tensors that are passed positionally to the model and the
guide (``model(*data, **kwargs)``).  With ``batch_size=B`` every tensor must have the same leading
size ``N`` and each step passes the rows ``idx`` of a random minibatch (``data[k][idx]``) instead.
The model says which plate indexes the data rows by declaring it with the **full** size::

    def model(x):                                   # x: the minibatch [B, D]
        with pyro.plate("data", N):                 # N = number of rows of the whole data set
            ...

``fit`` hands the minibatch indices ``idx`` to that plate (named by ``plate=``, default
``"data"``) as its subsample, in the model and in the guide, so Pyro scales every log-density
inside it by ``N / B`` (an unbiased estimate of the full-data ELBO) and guides with local
parameters (e.g. ``AutoNormal(model, create_plates=...)``) see the right rows.  A plate of the
wrong size, or no such plate in the model, is an error.  Minibatches are drawn without
replacement within an epoch from a seeded permutation; the remainder that does not fill a batch
is dropped in that epoch.

Under ``torch.distributed`` (initialised by the caller, e.g. by ``torchrun``) the same call
trains data-parallel: parameters are created, broadcast from rank 0 by
``DistributedDataParallel``, every rank takes a disjoint shard of each epoch's permutation (as
``DistributedSampler`` does), gradients are averaged across ranks (so the update is an unbiased
full-data gradient), and the recorded losses are averaged across ranks, so early stopping decides
identically everywhere.

Speed
-----
Parameters are module-local (``pyro.settings`` ``module_local_params=True`` during the fit: the
global param store is neither read nor written); Pyro's argument validation is off after the first
step (``validate=False``); the loss is never copied to the host per step (losses are read every
``log_every`` steps); ``jit=True`` traces the whole loss once per minibatch shape with
``torch.jit.trace`` (params, buffers, data and indices are inputs of the trace), which removes
Pyro's per-step Python overhead for models with a static structure.  Pyro's own
``JitTrace_ELBO`` reads the global param store and so cannot be used with module-local params.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyro
import torch
import torch.distributed as tdist
from pyro.infer import ELBO, JitTrace_ELBO, Trace_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import is_identically_zero
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor, nn
from torch.nn.utils.stateless import _reparametrize_module
from tqdm.auto import tqdm

from .validation import check_positive_int

__all__ = ["fit", "FitResult", "ELBOObjective"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        params: ``{name: tensor}`` detached copies of the loss module's ``state_dict()`` at the end
            (names ``model.<...>`` / ``guide.<...>``; for bound methods ``model_owner.<...>`` /
            ``guide_owner.<...>``).  Load them back with ``result.objective.load_state_dict``.
        losses: ``[steps]`` the loss estimate at every step (float64, CPU; averaged over ranks
            under ``torch.distributed``).  The loss is the negative ELBO, scaled to the full data.
        steps: number of optimiser steps taken.
        seconds: wall time of the optimisation loop (initialisation excluded).
        stopped_early: whether the early-stopping rule ended the fit before ``num_steps``.
        final_loss: mean loss over the last ``window`` steps.
        best_loss: the best windowed mean loss seen by the early-stopping rule (``nan`` if unused).
        objective: the trained loss module (an :class:`ELBOObjective`; not a copy).
        optimizer: the ``torch.optim`` optimiser (its state allows resuming).
        num_data, batch_size, world_size, jit, seed: how the fit ran.
    """

    params: dict[str, Tensor]
    losses: Tensor
    steps: int
    seconds: float
    stopped_early: bool
    final_loss: float
    best_loss: float
    objective: "ELBOObjective" = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    num_data: int | None = None
    batch_size: int | None = None
    world_size: int = 1
    jit: bool = False
    seed: int | None = None

    @property
    def time(self) -> float:
        """Alias of ``seconds``."""
        return self.seconds

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.seconds / max(self.steps, 1)


class _PlateSubsample(Messenger):
    """Give the plate ``name`` (declared with the full size ``size``) the subsample ``indices``."""

    def __init__(self, name: str, size: int, indices: Tensor) -> None:
        super().__init__()
        self.name, self.size, self.indices = name, size, indices
        self.seen = False

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if isinstance(fn, _Subsample) and msg["name"] == self.name:
            if fn.size != self.size:
                raise ValueError(
                    f"plate {self.name!r} has size {fn.size} but the data have {self.size} rows: declare it with the "
                    f"full data size, pyro.plate({self.name!r}, {self.size}), and fit passes the minibatch indices"
                )
            msg["value"] = self.indices
            self.seen = True


def _owner(fn: Callable) -> nn.Module | None:
    """The module holding ``fn``'s parameters: ``fn`` itself, or the module of a bound method."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class ELBOObjective(ELBOModule):
    """``Trace_ELBO()(model, guide)`` with minibatch indices, no host syncs, and optional tracing.

    ``forward(*args, subsample=None)`` returns a scalar whose value is the ELBO loss estimate
    ``-(Σ log p(x, z) - Σ log q(z))`` (averaged over particles) and whose gradient is the
    ``Trace_ELBO`` surrogate's gradient.  ``subsample`` (``[B]`` long) is handed to the plate
    ``plate`` (declared with ``size = num_data``) in the model and the guide.

    ``model`` and ``guide`` may be modules or bound methods of modules (``vae.model``,
    ``vae.guide``); the owning modules are registered as ``model_owner`` / ``guide_owner`` so that
    ``parameters()``, ``state_dict()`` and ``DistributedDataParallel`` see their parameters.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        elbo: ELBO,
        *,
        plate: str = "data",
        num_data: int | None = None,
        jit: bool = False,
    ) -> None:
        super().__init__(model, guide, elbo)
        registered: list[nn.Module] = [m for m in (model, guide) if isinstance(m, nn.Module)]
        for role, fn in (("model", model), ("guide", guide)):
            owner = _owner(fn)
            if owner is not None and not isinstance(fn, nn.Module) and all(owner is not m for m in registered):
                self.add_module(f"{role}_owner", owner)
                registered.append(owner)
        self.plate, self.num_data, self.jit = plate, num_data, jit
        self._fast = type(elbo) in (Trace_ELBO, JitTrace_ELBO)
        if jit and not self._fast:
            raise ValueError(f"jit=True supports Trace_ELBO only, got {type(elbo).__name__}")
        self._compiled: dict[tuple, Any] = {}
        self._layout: tuple[list, list] | None = None
        _enable_local_params(self)

    # --- the loss ------------------------------------------------------------------------------
    def _handlers(self, subsample: Tensor | None) -> tuple[Callable, Callable, _PlateSubsample | None]:
        if subsample is None:
            return self.model, self.guide, None
        if self.num_data is None:
            raise ValueError("a subsample needs num_data (the full data size)")
        handler = _PlateSubsample(self.plate, self.num_data, subsample)
        return handler(self.model), handler(self.guide), handler

    def _loss(self, args: tuple, kwargs: dict, subsample: Tensor | None) -> Tensor:
        model, guide, handler = self._handlers(subsample)
        if not self._fast:
            loss = self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        else:
            loss = _trace_elbo_loss(self.elbo, model, guide, args, kwargs)
        if handler is not None and not handler.seen:
            raise ValueError(
                f"batch_size was given but the model has no pyro.plate named {self.plate!r}: declare the data plate "
                f"as pyro.plate({self.plate!r}, num_data) or pass plate=<its name>"
            )
        return loss

    def forward(self, *args: Any, subsample: Tensor | None = None, **kwargs: Any) -> Tensor:
        if not self.jit:
            return self._loss(args, kwargs, subsample)
        return self._traced(args, kwargs, subsample)

    # --- tracing -------------------------------------------------------------------------------
    def _state(self) -> tuple[list[str], list[Tensor]]:
        """Names and current values of all parameters and buffers, the inputs of the trace.

        The module structure is read once (walking the module tree costs more than a small
        model's step); the values are read at every call, so reassigned buffers (a memory's
        ``write``) are seen.  Call :meth:`reset` after adding or removing parameters/buffers.
        """
        if self._layout is None:
            params = list(self.named_parameters())
            buffers = []
            for name, _ in self.named_buffers():
                prefix, _, attr = name.rpartition(".")
                buffers.append((name, self.get_submodule(prefix) if prefix else self, attr))
            self._layout = (params, buffers)
        params, buffers = self._layout
        names = [n for n, _ in params] + [n for n, _, _ in buffers]
        return names, [p for _, p in params] + [owner._buffers[attr] for _, owner, attr in buffers]

    def reset(self) -> None:
        """Forget compiled traces and the cached module layout."""
        self._compiled.clear()
        self._layout = None

    def _traced(self, args: tuple, kwargs: dict, subsample: Tensor | None) -> Tensor:
        names, state = self._state()
        tensors = tuple(args) + (() if subsample is None else (subsample,))
        if not all(torch.is_tensor(a) for a in args):
            raise TypeError("jit=True needs tensor positional arguments (pass non-tensors through kwargs=)")
        key = (
            tuple(names),
            tuple((a.shape, a.dtype, a.device) for a in tensors),
            subsample is None,
            _freeze(kwargs),
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            k, n_args = len(names), len(args)

            def loss_fn(*inputs: Tensor) -> Tensor:
                with _reparametrize_module(self, dict(zip(names, inputs[:k], strict=True))):
                    sub = inputs[k + n_args] if subsample is not None else None
                    return self._loss(inputs[k : k + n_args], kwargs, sub)

            with warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")  # TracerWarnings about Python values in Pyro's bookkeeping
                try:
                    compiled = torch.jit.trace(loss_fn, (*state, *tensors), check_trace=False)
                except Exception as e:  # name the cause: tracing needs a static model
                    raise RuntimeError(
                        f"jit=True could not trace the model/guide (it must have a static structure): "
                        f"{type(e).__name__}: {e}"
                    ) from e
            self._compiled[key] = compiled
        return compiled(*state, *tensors)


def _freeze(kwargs: dict) -> tuple:
    try:
        frozen = tuple(sorted(kwargs.items()))
        hash(frozen)
        return frozen
    except TypeError:
        return tuple((k, id(v)) for k, v in sorted(kwargs.items()))


def _trace_elbo_loss(elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Tensor:
    """``Trace_ELBO``'s loss with its surrogate gradient, with no ``.item()`` host syncs.

    Per particle (model trace replayed against the guide trace)::

        elbo      = Σ_model log p  - Σ_guide log q
        surrogate = Σ_model log p  - Σ_guide entropy_term + Σ_guide log_r · score_function_term

    returns ``-elbo + (-surrogate - (-surrogate).detach())`` averaged over particles: the value is
    the loss, the gradient the surrogate's (as ``JitTrace_ELBO.loss_and_surrogate_loss``).
    """
    loss = torch.zeros(())
    surrogate = torch.zeros(())
    first = True
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        elbo_particle: Any = 0.0
        surrogate_particle: Any = 0.0
        log_r = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo_particle = elbo_particle + site["log_prob_sum"]
                surrogate_particle = surrogate_particle + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                elbo_particle = elbo_particle - site["log_prob_sum"]
                if not is_identically_zero(entropy_term):
                    surrogate_particle = surrogate_particle - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    surrogate_particle = surrogate_particle + (
                        log_r.sum_to(site["cond_indep_stack"]) * score_function_term
                    ).sum()
        if first:  # put the accumulators where the traces live (device and dtype)
            ref = elbo_particle if torch.is_tensor(elbo_particle) else surrogate_particle
            if torch.is_tensor(ref):
                loss, surrogate = ref.new_zeros(()), ref.new_zeros(())
            first = False
        loss = loss - elbo_particle / elbo.num_particles
        surrogate = surrogate - surrogate_particle / elbo.num_particles
    if not torch.is_tensor(surrogate) or not surrogate.requires_grad:
        return loss
    return loss + (surrogate - surrogate.detach())


def _enable_local_params(module: nn.Module) -> None:
    """Give PyroModules built while ``module_local_params`` was off the local state it needs.

    ``pyro.nn.PyroModule`` creates its per-module parameter state only when the setting is on at
    construction time; modules built before ``fit`` switched it on get an empty one here.
    """
    for m in module.modules():
        context = m.__dict__.get("_pyro_context")
        if context is not None and not hasattr(context, "param_state"):
            context.param_state = {"params": {}, "constraints": {}}


# --- data -------------------------------------------------------------------------------------
def _as_data(data: Any) -> tuple[Tensor, ...]:
    if data is None:
        return ()
    if torch.is_tensor(data):
        return (data,)
    if isinstance(data, (tuple, list)):
        for i, d in enumerate(data):
            if not torch.is_tensor(d):
                raise TypeError(f"data[{i}] must be a tensor, got {type(d).__name__} (pass non-tensors via kwargs=)")
        return tuple(data)
    raise TypeError(f"data must be a tensor or a tuple of tensors, got {type(data).__name__}")


class _Batches:
    """Seeded minibatch indices: per epoch a permutation, this rank's shard, chunks of ``B``."""

    def __init__(self, num_data: int, batch_size: int, seed: int, rank: int, world: int, device: torch.device):
        self.num_data, self.batch_size, self.rank, self.world, self.device = num_data, batch_size, rank, world, device
        self.per_rank = num_data // world
        self.per_epoch = self.per_rank // batch_size
        if self.per_epoch < 1:
            shard = f" per rank ({world} ranks)" if world > 1 else ""
            raise ValueError(f"batch_size={batch_size} exceeds the {self.per_rank} data rows{shard}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.epoch: Tensor | None = None
        self.position = self.per_epoch

    def next(self) -> Tensor:
        if self.position == self.per_epoch:
            perm = torch.randperm(self.num_data, generator=self.generator, device="cpu")
            shard = perm[: self.per_rank * self.world][self.rank :: self.world]
            self.epoch = shard[: self.per_epoch * self.batch_size].reshape(self.per_epoch, self.batch_size)
            self.epoch = self.epoch.to(self.device)
            self.position = 0
        self.position += 1
        return self.epoch[self.position - 1]


# --- fit --------------------------------------------------------------------------------------
def fit(
    model: Callable,
    guide: Callable,
    data: Tensor | Sequence[Tensor] | None = None,
    *,
    num_steps: int = 1000,
    batch_size: int | None = None,
    plate: str = "data",
    kwargs: dict[str, Any] | None = None,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    lr: float = 1e-2,
    optimizer_kwargs: dict[str, Any] | None = None,
    elbo: ELBO | None = None,
    num_particles: int = 1,
    jit: bool = False,
    patience: int | None = None,
    rel_tol: float = 1e-3,
    window: int | None = None,
    log_every: int = 10,
    seed: int | None = 0,
    validate: bool = False,
    progress: bool = True,
    ddp_kwargs: dict[str, Any] | None = None,
) -> FitResult:
    """Fit ``model`` and ``guide`` by maximising the ELBO with a ``torch.optim`` optimiser.

    Args:
        model, guide: Pyro callables: ``PyroModule`` s / autoguides, or bound methods of modules
            (e.g. ``vae.model``, ``vae.guide``).  Their parameters are the optimised ones.
        data: a tensor or tuple of tensors passed positionally to both (``None``: no arguments).
        num_steps: maximum number of optimiser steps.
        batch_size: minibatch size ``B`` (``None`` = full data every step); see the module
            docstring for how the model declares its data plate.
        plate: name of the model's data plate (used with ``batch_size``).
        kwargs: constant keyword arguments for model and guide (non-tensors under ``jit``).
        optimizer, lr, optimizer_kwargs: called as ``optimizer(params, lr=lr, **optimizer_kwargs)``.
        elbo: the ELBO (default ``Trace_ELBO(num_particles=num_particles)``).  ``Trace_ELBO`` and
            ``JitTrace_ELBO`` use varmem's sync-free estimator; any other ELBO (e.g.
            ``TraceMeanField_ELBO``) uses its own ``differentiable_loss``.  ``JitTrace_ELBO``
            means ``jit=True``.
        num_particles: Monte Carlo samples per step (when ``elbo`` is not given).
        jit: trace the loss with ``torch.jit.trace`` (static model structure only).
        patience: stop when the windowed mean loss has not improved by a relative ``rel_tol``
            for ``patience`` steps (``None``: never stop early).  The rule is evaluated when the
            losses are read, every ``log_every`` steps, so a fit stops at a multiple of it.
        rel_tol: relative improvement that counts, ``best - mean > rel_tol · |best|``.
        window: number of recent steps averaged by the rule (default ``min(50, patience)``).
        log_every: steps between host reads of the loss (progress bar, early stopping).
        seed: seeds Pyro's global RNGs (``pyro.set_rng_seed``) before the parameters are created
            (the same initialisation on every rank), then ``seed + rank`` for the Monte Carlo
            draws, and the minibatch permutations; ``None`` leaves the RNGs alone.
        validate: keep Pyro's distribution validation on after the first step.
        progress: show a tqdm bar (rank 0 only).
        ddp_kwargs: extra arguments for ``DistributedDataParallel`` under ``torch.distributed``.

    Returns:
        a :class:`FitResult`.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer.autoguide import AutoNormal
        >>> from pyro.nn import PyroModule
        >>> class Model(PyroModule):
        ...     def forward(self, x):
        ...         mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 10.0))
        ...         with pyro.plate("data", 100):
        ...             pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> x = torch.randn(100) + 3.0
        >>> model = Model()
        >>> result = fit(model, AutoNormal(model), x, batch_size=20, num_steps=300, lr=0.05, progress=False)
        >>> abs(result.params["guide.locs.mu_unconstrained"].item() - x.mean().item()) < 0.3
        True
    """
    check_positive_int(num_steps, "num_steps")
    check_positive_int(log_every, "log_every")
    check_positive_int(num_particles, "num_particles")
    if patience is not None:
        check_positive_int(patience, "patience")
    if window is not None:
        check_positive_int(window, "window")
    if not (isinstance(rel_tol, (int, float)) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not callable(model) or not callable(guide):
        raise TypeError("model and guide must be callables (PyroModules, autoguides, or bound methods)")
    if elbo is None:
        elbo = Trace_ELBO(num_particles=num_particles)
    elif not isinstance(elbo, ELBO):
        raise TypeError(f"elbo must be a pyro.infer.ELBO, got {type(elbo).__name__}")
    jit = jit or isinstance(elbo, JitTrace_ELBO)
    kwargs = dict(kwargs or {})
    tensors = _as_data(data)

    distributed = tdist.is_available() and tdist.is_initialized()
    rank, world = (tdist.get_rank(), tdist.get_world_size()) if distributed else (0, 1)
    num_data = None
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
        if not tensors:
            raise ValueError("batch_size needs data to take minibatches of")
        sizes = {t.shape[0] if t.dim() else None for t in tensors}
        if len(sizes) != 1 or None in sizes:
            got = sorted(sizes, key=str)
            raise ValueError(f"with batch_size, every data tensor needs the same leading size, got {got}")
        (num_data,) = sizes
        batches = _Batches(num_data, batch_size, 0 if seed is None else seed, rank, world, tensors[0].device)

    def batch() -> tuple[tuple[Tensor, ...], Tensor | None]:
        if batch_size is None:
            return tensors, None
        idx = batches.next()
        return tuple(t.index_select(0, idx.to(t.device)) for t in tensors), idx

    with pyro.settings.context(module_local_params=True):
        objective = ELBOObjective(model, guide, elbo, plate=plate, num_data=num_data, jit=jit)
        if seed is not None:
            pyro.set_rng_seed(seed)
        args, idx = batch()
        with torch.no_grad():  # materialise lazy parameters (autoguides) before the optimiser / DDP; validated
            objective._loss(args, kwargs, idx)
        if jit:  # compile now, so that the timed loop does not include tracing
            objective(*args, subsample=idx, **kwargs) if idx is not None else objective(*args, **kwargs)
        params = [p for p in objective.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model and guide have no trainable parameters")
        module: nn.Module = objective
        if distributed:
            module = nn.parallel.DistributedDataParallel(objective, **(ddp_kwargs or {}))
        if seed is not None:
            pyro.set_rng_seed(seed + rank)
        opt = optimizer(params, lr=lr, **(optimizer_kwargs or {}))

        window = window or (min(50, patience) if patience else 50)
        losses: list[float] = []
        pending: list[Tensor] = []
        best, best_step, stopped = math.inf, 0, False
        bar = tqdm(total=num_steps, desc="fit", unit="step", disable=not progress or rank != 0, leave=False)
        start = time.perf_counter()
        step = 0
        with pyro.validation_enabled(validate):
            while step < num_steps:
                if step:  # the first minibatch was drawn for the initialisation
                    args, idx = batch()
                opt.zero_grad(set_to_none=True)
                loss = module(*args, subsample=idx, **kwargs) if idx is not None else module(*args, **kwargs)
                loss.backward()
                opt.step()
                pending.append(loss.detach())
                step += 1
                if step % log_every and step < num_steps:
                    continue
                chunk = torch.stack(pending).to(torch.float64)
                pending.clear()
                if distributed:
                    tdist.all_reduce(chunk)
                    chunk = chunk / world
                losses.extend(chunk.tolist())
                bar.update(len(chunk))
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if not math.isfinite(losses[-1]):
                    raise FloatingPointError(f"loss became {losses[-1]} at step {step}: lower lr / check the model")
                if patience is not None and len(losses) >= window:
                    current = sum(losses[-window:]) / window
                    if best - current > rel_tol * abs(best) or not math.isfinite(best):
                        best, best_step = current, step
                    elif step - best_step >= patience:
                        stopped = True
                        break
        seconds = time.perf_counter() - start
        bar.close()

    final = losses[-min(window, len(losses)) :]
    return FitResult(
        params={k: v.detach().clone() for k, v in objective.state_dict().items()},
        losses=torch.tensor(losses, dtype=torch.float64, device="cpu"),
        steps=step,
        seconds=seconds,
        stopped_early=stopped,
        final_loss=sum(final) / len(final),
        best_loss=best if patience is not None else math.nan,
        objective=objective,
        optimizer=opt,
        num_data=num_data,
        batch_size=batch_size,
        world_size=world,
        jit=jit,
        seed=seed,
    )
