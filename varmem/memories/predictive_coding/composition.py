"""Predictive-coding networks as a composition of layers (:class:`PCNet`).

A generative chain of value nodes, listed **top-down** (the order in which data is generated)::

    x_top ~ N(μ_top, σ_top² I)          (``top_prior=True``; no prior energy otherwise)
    x_i   | x_{i-1} ~ p_i(· ; g_i(x_{i-1})),   i = 1 … n,   x_n = the sensory node

where ``g_i`` is a layer (:class:`Dense`, :class:`Conv2d`, :class:`ConvTranspose2d`) with its own
activation applied **pre-synaptically** (``g(x) = W f(x) + b``, Salvatori et al., BayesPCN) or
**post-synaptically** (``g(x) = f(W x + b)``, PCX / FabricPC), and ``p_i`` is a Gaussian
(``mean = g``, std ``σ_i``) or a Bernoulli node (``logit = g``; activities in ``[0, 1]``).  The
energy (negative log-joint without the constants) is::

    E(x, θ) = ½‖x_top − μ_top‖²/σ_top² + Σ_i e_i(x_i, g_i(x_{i-1}))
    e_i     = ½‖x_i − g_i‖² / σ_i²                        (Gaussian)
            = Σ softplus(g_i) − x_i · g_i                 (Bernoulli, = BCE with logits)

Its gradients are local: with ``δ_i = ∂e_i/∂g_i`` (``−(x_i − g_i)/σ_i²`` or ``sigmoid(g_i) − x_i``)::

    ∂E/∂x_i   = ∂e_i/∂x_i + J_{g_{i+1}}(x_i)ᵀ δ_{i+1}      (own error + the error it predicts)
    ∂E/∂W_i   = δ_iᵀ f(x_{i-1}),  ∂E/∂b_i = Σ_batch δ_i     (dense, pre-synaptic: the Hebbian rule)

Every layer has an **autograd** path (any ``torch.nn`` layer and activation);
dense stacks also have a **fused** path that evaluates the energy and both gradients in one
hand-written pass (no graph; tested equal to autograd).  Activities and weights are optimised by
any ``torch.optim`` optimiser, given separately (``x_optimizer`` / ``w_optimizer``: an optimiser
class or a factory ``params -> optimiser``, e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``);
``w_optimizer="hebbian"`` is the local rule ``θ ← θ − α ∂E/∂θ`` with ``∂E/∂θ`` computed per layer
from its own input and output nodes only.  :meth:`PCNet.fit` trains on minibatches (standard PC:
``T`` inference steps, then one weight step; ``incremental=True``: a weight step after every
inference step, Salvatori et al.'s incremental PC) and returns a :class:`FitRecord` with the
energy per epoch; :meth:`PCNet.read` runs the three read procedures of :mod:`.readers`.

Layers with a weight posterior (:class:`~varmem.memories.predictive_coding.conjugate.ConjugateDense`,
BayesPCN's layers; any layer with a ``predictive(x) -> (mean [K, B, d], var [K, B])`` method) give
their node the Gaussian negative log-density with that variance, constants kept and per particle
``k``::

    e_i = ‖x_i − mean_k‖² / (2 v_k) + (d_i / 2) log(2π v_k)      (v_k = σ_i² + f(x_{i-1}) U_k f(x_{i-1})ᵀ)

so :meth:`PCNet.energy` is ``E_k [K, B]`` (activities ``[B, d]`` shared by the particles, or
``[K, B, d]`` one set per particle), and with the particle log-weights ``log_w`` the mixture
``−log Σ_k w_k exp(−E_k)`` ``[B]``.  ``top_prior`` may be such a layer with a constant input (the
top variant, ``ConjugateDense(top=True)``: BayesPCN's bias ``N(b̄, U_b)`` on the top node).  These
energies go through the autograd path (conjugate layers learn in closed form, not by :meth:`fit`).
"""

from __future__ import annotations

import functools
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...helpers import make_generator
from ...validation import check_bool, check_choice, check_positive, check_positive_int, check_seed
from .start_values import check_start, start_fill

__all__ = ["Dense", "Conv2d", "ConvTranspose2d", "PCNet", "FitRecord", "PC_ACTIVATIONS", "gaussian_nll"]


def _gelu_grad(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


PC_ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),
    "gelu": (nn.functional.gelu, _gelu_grad),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "sigmoid": (torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    "linear": (lambda x: x, torch.ones_like),
}
"""Named activations ``name -> (f, f')`` (the fused path needs ``f'``; autograd takes any callable)."""


def gaussian_nll(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``−log N(x; mean, var I)`` summed over the last dim, all constants kept:
    ``‖x − mean‖² / (2 var) + (d/2) log(2π var)``; ``x``, ``mean`` ``[…, d]``, ``var`` ``[…]``."""
    eps = x - mean
    d = eps.shape[-1]
    return 0.5 * (eps * eps).sum(-1) / var + 0.5 * d * torch.log(2 * math.pi * var)


def _is_predictive(layer: nn.Module) -> bool:
    """Whether ``layer`` gives its node a predictive variance (``predictive(x) -> (mean, var)``)."""
    return callable(getattr(layer, "predictive", None))


class _PCLayer(nn.Module, ABC):
    """A layer ``g(x)`` with its activation pre- or post-synaptic."""

    def __init__(self, activation: str | Callable[[Tensor], Tensor], where: str) -> None:
        super().__init__()
        check_choice(where, "where (the side of the activation)", ("pre", "post"))
        if isinstance(activation, str):
            check_choice(activation, "activation", sorted(PC_ACTIVATIONS))
            self.f, self.df = PC_ACTIVATIONS[activation]
        elif callable(activation):
            self.f, self.df = activation, None
        else:
            raise TypeError(f"activation must be a name from {sorted(PC_ACTIVATIONS)} or a callable, "
                            f"got {activation!r}")
        self.activation, self.where = activation, where

    @abstractmethod
    def linear(self, x: Tensor) -> Tensor:
        """The layer's affine map (dense or convolution), applied before or after the activation."""

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.f(x)) if self.where == "pre" else self.f(self.linear(x))


class Dense(_PCLayer):
    """``g(x) = W f(x) + b`` (pre) or ``f(W x + b)`` (post); ``W`` is ``[out, in]`` (torch / pcx
    layout), the input is flattened, initialisation is ``nn.Linear``'s."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str | Callable[[Tensor], Tensor] = "relu", where: str = "pre") -> None:
        super().__init__(activation, where)
        self.inner = nn.Linear(check_positive_int(in_features, "in_features"),
                               check_positive_int(out_features, "out_features"), bias=check_bool(bias, "bias"))

    def linear(self, x: Tensor) -> Tensor:
        return self.inner(x.flatten(1))


class Conv2d(_PCLayer):
    """``nn.Conv2d`` with a pre- or post-synaptic activation (nodes ``[C, H, W]``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 bias: bool = True, activation: str | Callable[[Tensor], Tensor] = "relu", where: str = "pre") -> None:
        super().__init__(activation, where)
        self.inner = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)

    def linear(self, x: Tensor) -> Tensor:
        return self.inner(x)


class ConvTranspose2d(_PCLayer):
    """``nn.ConvTranspose2d`` with a pre- or post-synaptic activation (upsamples a coarse node)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 output_padding: int = 0, bias: bool = True, activation: str | Callable[[Tensor], Tensor] = "relu",
                 where: str = "pre") -> None:
        super().__init__(activation, where)
        self.inner = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                        output_padding=output_padding, bias=bias)

    def linear(self, x: Tensor) -> Tensor:
        return self.inner(x)


@dataclass
class FitRecord:
    """What :meth:`PCNet.fit` returns: ``energy[e]`` = mean energy per item of epoch ``e`` (after
    each batch's inference, before its weight step), seconds per epoch, inference steps run."""

    energy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    steps: int = 0


def _optimizer_factory(spec: Any, name: str) -> Callable[[list[Tensor]], torch.optim.Optimizer] | str:
    if isinstance(spec, str):
        if name == "w_optimizer" and spec == "hebbian":
            return spec
        extra = ' or "hebbian"' if name == "w_optimizer" else ""
        raise ValueError(f"{name} must be a torch.optim optimiser class or factory{extra}, got {spec!r}")
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return spec
    if callable(spec):
        return spec
    raise TypeError(f"{name} must be a torch.optim optimiser class or a factory params -> optimiser, got {spec!r}")


class PCNet(nn.Module):
    """A predictive-coding network built from layers (see the module docstring).

    Args:
        top_shape: shape of the top node (e.g. ``(64,)`` or ``(8, 4, 4)``).
        layers: the layers, top-down; layer ``i`` predicts node ``i + 1`` from node ``i``.
        energies: per predicted node ``"gaussian"`` or ``"bernoulli"`` (one name: all).
        sigmas: per predicted node the Gaussian std (one number: all; unused for Bernoulli).
        top_prior: a learnable Gaussian prior ``N(μ_top, σ_top²)`` on the top node (``μ_top``
            starts at 0); ``False``: the top node is free (PCX's associative memory); or a layer
            with ``predictive`` and a constant input (``ConjugateDense(top=True)``), whose
            predictive density is the top node's prior.  A predictive layer's own variance
            replaces its node's ``sigmas`` entry.
        sigma_top: ``σ_top``.
        seed: seeds the initial weights (``nn`` defaults, drawn under this seed).

    Example:
        >>> net = PCNet((8,), [Dense(8, 16), Dense(16, 4)], sigmas=1.0)
        >>> rec = net.fit(torch.randn(5, 4), epochs=2, T=5, progress=False)
        >>> len(rec.energy)
        2
    """

    def __init__(self, top_shape: Sequence[int] | int, layers: Sequence[nn.Module], *,
                 energies: str | Sequence[str] = "gaussian", sigmas: float | Sequence[float] = 1.0,
                 top_prior: bool = True, sigma_top: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        top = (top_shape,) if isinstance(top_shape, int) else tuple(top_shape)
        if not top or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in top):
            raise ValueError(f"top_shape must be positive ints, got {top_shape!r}")
        layers = list(layers)
        if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
            raise TypeError("layers must be a non-empty sequence of torch.nn modules (e.g. Dense, Conv2d)")
        n = len(layers)
        energies = [energies] * n if isinstance(energies, str) else list(energies)
        sigmas = [sigmas] * n if not isinstance(sigmas, (list, tuple)) else list(sigmas)
        if len(energies) != n or len(sigmas) != n:
            raise ValueError(f"energies and sigmas need one entry per layer ({n})")
        for e in energies:
            check_choice(e, "energies", ("gaussian", "bernoulli"))
        self.energies = energies
        self.sigmas = [check_positive(s, "sigmas") for s in sigmas]
        top_layer = None
        if isinstance(top_prior, nn.Module):
            if not _is_predictive(top_prior) or not getattr(top_prior, "top", False):
                raise TypeError("a top_prior layer must have predictive() and a constant input "
                                "(e.g. ConjugateDense(..., top=True))")
            top_layer, top_prior = top_prior, True
        for i, (layer, e) in enumerate(zip(layers, energies, strict=True)):
            if _is_predictive(layer) and e != "gaussian":
                raise ValueError(f"layer {i} has a predictive variance, so its node must be gaussian, got {e!r}")
        self.top_prior = check_bool(top_prior, "top_prior")
        self.sigma_top = check_positive(sigma_top, "sigma_top")
        seed = check_seed(seed)
        resettable = [m for layer in layers for m in layer.modules()
                      if hasattr(m, "reset_parameters") and m is not layer]
        if resettable:  # (conjugate layers have none: skip torch.manual_seed, ~1 ms)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for m in resettable:  # re-draw under the seed: the same network for the same seed
                    m.reset_parameters()
        self.layers = nn.ModuleList(layers)
        self.top_layer = top_layer
        self.mu_top = nn.Parameter(torch.zeros(top)) if self.top_prior and top_layer is None else None
        shapes = [top]
        like = next((t for t in self.parameters() if t.is_floating_point()), None)
        if like is None:  # e.g. conjugate layers: their buffers' dtype (a float64 posterior)
            like = next((t for t in self.buffers() if t.is_floating_point()), torch.zeros(()))
        with torch.no_grad():
            x = torch.zeros(1, *top, dtype=like.dtype, device=like.device)
            if top_layer is not None and tuple(top_layer(x).shape[2:]) != top:
                raise ValueError(f"the top_prior layer predicts {tuple(top_layer(x).shape[2:])}, "
                                 f"not the top node's shape {top}")
            for i, layer in enumerate(self.layers):
                try:
                    x = layer(x)
                except RuntimeError as err:
                    raise ValueError(f"layer {i} does not accept node {i} of shape {shapes[-1]}: {err}") from None
                if _is_predictive(layer):  # [K, 1, d]: the particles' predictions
                    x = x[0]
                shapes.append(tuple(x.shape[1:]))
        self.shapes = shapes
        self.fused = all(isinstance(layer, Dense) and layer.df is not None for layer in self.layers) and all(
            len(s) == 1 for s in shapes) and top_layer is None

    # --- energy and gradients -----------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of sensory entries (the bottom node, flattened)."""
        return math.prod(self.shapes[-1])

    def node_energy(self, i: int, x: Tensor, pred: Tensor) -> Tensor:
        """``e_i`` per item ``[B]`` of node ``i ≥ 1`` given its prediction."""
        if self.energies[i - 1] == "gaussian":
            return 0.5 * (x - pred).pow(2).flatten(1).sum(-1) / self.sigmas[i - 1] ** 2
        return (nn.functional.softplus(pred) - x * pred).flatten(1).sum(-1)

    def energy(self, xs: Sequence[Tensor], log_w: Tensor | None = None) -> Tensor:
        """``E(x, θ)`` per item ``[B]`` for node activities ``xs`` (top first, ``[B, *shape]``),
        through the layers' ``forward`` (differentiable: the autograd path).

        With layers that have ``predictive`` (module doc) the energy is per particle, ``E_k``
        ``[K, B]`` (nodes ``[B, d]`` or ``[K, B, d]``), Gaussian constants kept for those nodes;
        ``log_w`` (normalised particle log-weights ``[K]``): the mixture ``−logsumexp_k(log w_k −
        E_k)`` ``[B]``."""
        total = 0.0
        if self.top_layer is not None:
            total = gaussian_nll(xs[0], *self.top_layer.predictive(xs[0]))
        elif self.top_prior:
            total = 0.5 * (xs[0] - self.mu_top).pow(2).flatten(1).sum(-1) / self.sigma_top**2
        for i, layer in enumerate(self.layers):
            if _is_predictive(layer):
                total = total + gaussian_nll(xs[i + 1], *layer.predictive(xs[i]))
            else:
                total = total + self.node_energy(i + 1, xs[i + 1], layer(xs[i]))
        if log_w is not None:
            total = -(log_w.to(total.dtype).unsqueeze(-1) - total).logsumexp(0)
        return total

    def fused_energy_and_grads(self, xs: Sequence[Tensor], want_w: bool = True
                               ) -> tuple[Tensor, list[Tensor], list[tuple[Tensor, Tensor | None]] | None]:
        """Dense stacks only: ``E [B]``, ``∂(ΣE)/∂x_i`` for every node and (``want_w``)
        ``(∂/∂W_i, ∂/∂b_i)`` per layer, in one hand-written pass (formulas in the module doc)."""
        if not self.fused:
            raise ValueError("the fused path needs a stack of Dense layers with named activations")
        gx = [torch.zeros_like(x) for x in xs]
        gw: list[tuple[Tensor, Tensor | None]] | None = [] if want_w else None
        total = xs[0].new_zeros(xs[0].shape[0])
        if self.top_prior:
            eps = xs[0] - self.mu_top
            total = total + 0.5 * (eps * eps).sum(-1) / self.sigma_top**2
            gx[0] += eps / self.sigma_top**2
        for i, layer in enumerate(self.layers):
            W, b = layer.inner.weight, layer.inner.bias
            x_in, x = xs[i], xs[i + 1]
            if layer.where == "pre":
                inp = layer.f(x_in)
                g = inp @ W.T
                u = None
            else:
                inp = x_in
                u = x_in @ W.T
                if b is not None:
                    u = u + b
                g = layer.f(u)
            if layer.where == "pre" and b is not None:
                g = g + b
            if self.energies[i] == "gaussian":
                s2 = self.sigmas[i] ** 2
                eps = x - g
                total = total + 0.5 * (eps * eps).sum(-1) / s2
                gx[i + 1] += eps / s2
                delta = -eps / s2  # ∂e/∂g
            else:
                total = total + (nn.functional.softplus(g) - x * g).sum(-1)
                gx[i + 1] -= g
                delta = torch.sigmoid(g) - x
            if layer.where == "pre":
                gx[i] += layer.df(x_in) * (delta @ W)
                d_lin = delta
            else:
                d_lin = delta * layer.df(u)
                gx[i] += d_lin @ W
            if gw is not None:
                gw.append((d_lin.T @ inp, None if b is None else d_lin.sum(0)))
        return total, gx, gw

    def grads(self, xs: Sequence[Tensor], free: Sequence[bool], with_weights: bool, path: str,
              log_w: Tensor | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """``(E [B], ∂ΣE/∂x_i for the free nodes)``; with ``with_weights`` the parameters' ``.grad``
        are set too.  ``path``: ``"fused"`` or ``"autograd"``.  With particle layers ``E`` is
        ``[K, B]`` (the sum is differentiated: each particle's activities follow their own ``E_k``)
        or, given ``log_w``, the mixture ``[B]`` (autograd path only)."""
        if path == "fused" and log_w is not None:
            raise ValueError("log_w (a particle mixture) needs the autograd path")
        if path == "fused":
            e, gx, gw = self.fused_energy_and_grads(xs, with_weights)
            if with_weights:
                for layer, (gW, gb) in zip(self.layers, gw, strict=True):
                    layer.inner.weight.grad = gW
                    if gb is not None:
                        layer.inner.bias.grad = gb
                if self.mu_top is not None:
                    self.mu_top.grad = -((xs[0] - self.mu_top) / self.sigma_top**2).sum(0)
            return e.detach(), [g if f else None for g, f in zip(gx, free, strict=True)]
        leaves = [x.detach().requires_grad_(f) for x, f in zip(xs, free, strict=True)]
        params = list(self.parameters()) if with_weights else []
        with torch.enable_grad():
            e = self.energy(leaves, log_w)
            wanted = [x for x in leaves if x.requires_grad] + params
            out = torch.autograd.grad(e.sum(), wanted, allow_unused=True) if wanted else []
        it = iter(out)
        gx = [next(it) if f else None for f in free]
        for p in params:
            g = next(it)
            p.grad = torch.zeros_like(p) if g is None else g
        return e.detach(), gx

    # --- activities ---------------------------------------------------------------------------
    def init_activities(self, x: Tensor, how: str = "top_down", generator: torch.Generator | None = None
                        ) -> list[Tensor]:
        """Node activities for sensory ``x [B, *shape]``: hidden nodes ``"randn"`` (``N(0, 1/d)``
        per node, BayesPCN's start and the default of :meth:`fit` / :meth:`read`), ``"zeros"`` or
        ``"top_down"`` (the chain of predictions from the top, which starts at ``μ_top`` or 0; with
        a pre-synaptic relu and ``μ_top = 0`` the top node then has zero gradient and never
        moves); the sensory node is ``x``."""
        check_choice(how, "init", ("top_down", "zeros", "randn"))
        B = x.shape[0]
        kw = dict(dtype=x.dtype, device=x.device)
        xs: list[Tensor] = []
        with torch.no_grad():
            top = self.mu_top.detach().expand(B, *self.shapes[0]).clone() if self.mu_top is not None else \
                torch.zeros(B, *self.shapes[0], **kw)
            if self.top_layer is not None and how == "top_down":
                top = self.top_layer(top)  # [K, B, d]: each particle's top mean
            for i, shape in enumerate(self.shapes[:-1]):
                if how == "randn":
                    dev = kw["device"] if generator is None else generator.device
                    a = torch.randn(B, *shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
                    a = a / math.sqrt(math.prod(shape))
                elif how == "zeros":
                    a = torch.zeros(B, *shape, **kw)
                else:
                    a = top if i == 0 else self.layers[i - 1](xs[-1])
                xs.append(a)
        return xs + [x.reshape(B, *self.shapes[-1]).clone()]

    def relax(self, xs: list[Tensor], *, steps: int, x_optimizer: Any, sensory_free: Tensor | None = None,
              weight_step: Callable[[], None] | None = None, path: str | None = None,
              log_w: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """Minimise ``ΣE`` over the hidden nodes (and the sensory entries where ``sensory_free``)
        for ``steps`` steps of ``x_optimizer``; ``weight_step`` (incremental PC) is called after
        every step with the parameters' gradients set.  Returns ``(xs, energies [steps, B])``
        (``[steps, K, B]`` with particle layers and no ``log_w``, see :meth:`energy`; a particle
        mixture, ``log_w``, takes the autograd path)."""
        path = path or ("fused" if self.fused and log_w is None else "autograd")
        n = len(xs)
        free = [True] * (n - 1) + [sensory_free is not None]
        params = [x for x, f in zip(xs, free, strict=True) if f]
        opt = _optimizer_factory(x_optimizer, "x_optimizer")(params)
        mask = None if sensory_free is None else sensory_free.to(xs[-1].dtype)
        trace = []
        for _ in range(steps):
            e, gx = self.grads(xs, free, weight_step is not None, path, log_w)
            if mask is not None:
                gx[-1] = gx[-1] * mask
            for p, g in zip(params, [g for g in gx if g is not None], strict=True):
                p.grad = g
            opt.step()
            if weight_step is not None:
                weight_step()
            trace.append(e)
        return xs, torch.stack(trace) if trace else xs[0].new_zeros(0, xs[0].shape[0])

    def _no_particle_layers(self, what: str, instead: str) -> None:
        if self.top_layer is not None or any(_is_predictive(layer) for layer in self.layers):
            raise ValueError(f"PCNet.{what} is for learned layers, not for layers with weight posteriors: {instead}")

    # --- learning -------------------------------------------------------------------------------
    def _weight_stepper(self, w_optimizer: Any, w_lr: float) -> Callable[[], None]:
        spec = _optimizer_factory(w_optimizer, "w_optimizer")
        if spec == "hebbian":
            def step() -> None:
                with torch.no_grad():
                    for p in self.parameters():
                        if p.grad is not None:
                            p.sub_(p.grad, alpha=w_lr)
            return step
        opt = spec(list(self.parameters()))
        return opt.step

    def fit(self, data: Tensor, *, epochs: int = 1, batch_size: int | None = None, T: int = 20,
            x_optimizer: Any = None, w_optimizer: Any = None, w_lr: float = 1e-3, incremental: bool = False,
            init: str = "randn", mean_batch: bool = True, shuffle: bool = True, seed: int | None = 0,
            path: str | None = None, progress: bool = True,
            callback: Callable[[int, FitRecord], Any] | None = None) -> FitRecord:
        """Train on ``data [N, *sensory shape]`` (or flat ``[N, D]``) for ``epochs`` epochs of
        minibatches of ``batch_size`` (None: the whole set).

        Per batch: activities from ``init``; ``T`` steps of ``x_optimizer`` (default SGD 0.1) on
        the hidden nodes with the sensory node clamped; then one weight step (``w_optimizer``:
        an optimiser class / factory, default ``"hebbian"`` with step ``w_lr``) on the gradient of
        the batch energy (its mean over the batch when ``mean_batch``, else its sum); with
        ``incremental`` a weight step after every inference step instead.  ``path``: ``"fused"``
        (dense stacks, default there) or ``"autograd"``.  ``callback(epoch, record)`` after each
        epoch; a tqdm bar shows the energy.  Returns the :class:`FitRecord`."""
        self._no_particle_layers("fit", "they learn in closed form (ConjugateDense.update, BayesPCN.write)")
        epochs = check_positive_int(epochs, "epochs")
        T = check_positive_int(T, "T")
        w_lr = check_positive(w_lr, "w_lr")
        check_bool(incremental, "incremental")
        check_bool(progress, "progress")
        if path is not None:
            check_choice(path, "path", ("fused", "autograd"))
        data = self._as_sensory(data, "data")
        N = data.shape[0]
        batch_size = N if batch_size is None else check_positive_int(batch_size, "batch_size")
        x_optimizer = x_optimizer or functools.partial(torch.optim.SGD, lr=0.1)
        w_spec = "hebbian" if w_optimizer is None else w_optimizer
        raw_step = self._weight_stepper(w_spec, w_lr)
        generator = make_generator(seed, "cpu")
        record = FitRecord()

        def scale_and_step(n_items: int) -> Callable[[], None]:
            def step() -> None:
                if mean_batch:
                    for p in self.parameters():
                        if p.grad is not None:
                            p.grad = p.grad / n_items
                raw_step()
            return step

        bar = tqdm(range(epochs), desc="PCNet fit", disable=not progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            order = torch.randperm(N, generator=generator) if shuffle else torch.arange(N)
            total = 0.0
            for chunk in order.split(batch_size):
                x = data[chunk.to(data.device)]
                xs = self.init_activities(x, init, generator)
                step = scale_and_step(x.shape[0])
                xs, trace = self.relax(xs, steps=T, x_optimizer=x_optimizer, weight_step=step if incremental else None,
                                       path=path)
                record.steps += T
                e, _ = self.grads(xs, [False] * len(xs), True, path or ("fused" if self.fused else "autograd"))
                if not incremental:
                    step()
                total += float(e.sum())
            record.energy.append(total / N)
            record.seconds.append(time.perf_counter() - t0)
            bar.set_postfix(energy=f"{record.energy[-1]:.4g}")
            if callback is not None:
                callback(epoch, record)
        return record

    def _as_sensory(self, x: Any, name: str) -> Tensor:
        """``x`` as ``[B, *sensory shape]`` (flat ``[B, D]`` accepted) in the network's dtype and
        device, with a clear error for anything else."""
        if not torch.is_tensor(x) or not torch.is_floating_point(x):
            raise TypeError(f"{name} must be a floating tensor, got {type(x).__name__}"
                            f"{'' if not torch.is_tensor(x) else ' of ' + str(x.dtype)}")
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(f"{name} must be [B, {self.dim}] or [B, *{self.shapes[-1]}], got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or inf")
        p = next(self.parameters(), None)
        like = p if p is not None else x
        return x.reshape(x.shape[0], *self.shapes[-1]).to(like.device, like.dtype)

    # --- reading -------------------------------------------------------------------------------
    @torch.no_grad()
    def read(self, cue: Tensor, mask: Tensor | None = None, *, procedure: str | None = None,
             start: str | float | Tensor = "zero", steps: int = 100, n_repeat: int = 1, x_optimizer: Any = None,
             init: str = "randn", seed: int | None = 0, path: str | None = None) -> Tensor:
        """Recall from ``cue [B, *sensory]`` (``mask`` True = observed) by the procedures of
        :mod:`varmem.memories.predictive_coding.readers`: ``"clamp_predict"`` (``n_repeat``
        rounds: relax the hidden nodes with the sensory node clamped, then replace it (its unknown
        entries) by the prediction), ``"joint"`` (unknown entries and hidden nodes relaxed together,
        observed ones clamped) or ``"relax_all"`` (every sensory entry free, started at the cue).
        None: clamp_predict for a full cue, joint for a partial one.  ``start``: ``"zero"``,
        ``"prior_mean"`` (the top-down prediction), a number or a tensor of values (``start=cue``:
        the cue's own content) for the unknown entries (:mod:`.start_values`)."""
        self._no_particle_layers("read", "read their memory instead (BayesPCN.retrieve)")
        proc = procedure or ("clamp_predict" if mask is None else "joint")
        check_choice(proc, "procedure", ("clamp_predict", "joint", "relax_all"))
        steps, n_repeat = check_positive_int(steps, "steps"), check_positive_int(n_repeat, "n_repeat")
        x_optimizer = x_optimizer or functools.partial(torch.optim.SGD, lr=0.1)
        if torch.is_tensor(cue) and torch.is_tensor(mask) and mask.dtype == torch.bool and mask.shape == cue.shape:
            cue = torch.where(mask, cue, torch.zeros((), dtype=cue.dtype, device=cue.device))  # unknown: never read
        cue = self._as_sensory(cue, "cue")
        start = check_start(start, cue)
        B = cue.shape[0]
        if mask is not None and (not torch.is_tensor(mask) or mask.dtype != torch.bool
                                 or mask.numel() != cue.numel()):
            raise ValueError(f"mask must be a bool tensor with the cue's {tuple(cue.shape)} entries")
        known = None if mask is None else mask.reshape(B, *self.shapes[-1]).to(cue.device)
        generator = make_generator(seed, "cpu")
        x = cue.clone()
        if known is not None:
            fill = start_fill(start, cue, lambda: self.layers[-1](self.init_activities(cue, "top_down")[-2]))
            x = torch.where(known, cue, fill)
        if proc == "clamp_predict":
            for _ in range(n_repeat):
                xs = self.init_activities(x, init, generator)
                xs, _ = self.relax(xs, steps=steps, x_optimizer=x_optimizer, path=path)
                pred = self.layers[-1](xs[-2])
                if self.energies[-1] == "bernoulli":
                    pred = torch.sigmoid(pred)
                x = pred if known is None else torch.where(known, cue, pred)
            return x.reshape(B, -1)
        free = torch.ones_like(cue, dtype=torch.bool) if proc == "relax_all" or known is None else ~known
        if proc == "joint" and known is None:
            return x.reshape(B, -1)
        xs = self.init_activities(x, init, generator)
        xs, _ = self.relax(xs, steps=steps * n_repeat, x_optimizer=x_optimizer, sensory_free=free, path=path)
        out = xs[-1] if known is None or proc == "relax_all" else torch.where(known, cue, xs[-1])
        return out.reshape(B, -1)
