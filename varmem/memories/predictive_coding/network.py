"""Shared machinery of the predictive-coding memories (GPCN and BayesPCN).

Network (``L`` activity layers, ``a_0 = x ∈ R^D`` sensory, ``a_1 … a_{L-1} ∈ R^h`` hidden)::

    inp_l = f(a_{l+1})  for l < L-1,   inp_{L-1} = 1        (the top layer is predicted by a bias)
    a_l | a_{l+1} ~ N(inp_l R_l, v_l I),   v_l = σ_l² + inp_l U_l inp_lᵀ   ("p_pred": weights
                                                                          ~ MN(R_l, U_l, I) integrated out)
                                           v_l = σ_l²                       ("map": point weights R_l)

``R_l`` is ``[K, d_in, d_out]`` (``K`` particles, ``K = 1`` for GPCN), ``U_l`` ``[K, d_in, d_in]``.
Per-particle energy (a negative log-density, all Gaussian constants kept)::

    E_k(a) = Σ_l [ ‖a_l − inp_l R_{l,k}‖² / (2 v_{l,k}) + (d_l / 2) log(2π v_{l,k}) ]
    E(a)   = −log Σ_k w_k exp(−E_k(a))                  (the memory's log-joint, ``w`` normalised)

With point weights, ``E_k − Σ_l (d_l/2) log 2πσ_l²`` is the predictive-coding energy
``F = ½ Σ_l ‖ε_l‖² / σ_l²``.  Its gradient (written by hand below, checked against autograd in the
tests), with ``ε_l = a_l − inp_l R_l`` and ``q_l = inp_l U_l``::

    ∂E_l/∂a_l     = ε_l / v_l
    ∂E_l/∂inp_l   = −ε_l R_lᵀ / v_l + q_l (d_l / v_l − ‖ε_l‖² / v_l²)
    ∂E_l/∂a_{l+1} = f'(a_{l+1}) ⊙ ∂E_l/∂inp_l
    ∂E/∂a         = Σ_k r_k ∂E_k/∂a,   r_k = softmax_k(log w_k − E_k)   (mixture over particles)

Relaxations (:meth:`PCNetwork.relax`) evaluate ``E_k`` and this gradient together in one pass
(:class:`FusedEnergy`) whose constant parts are prepared once per relaxation, and step the
activities with an in-place Adam on one flat buffer; :meth:`PCNetwork.particle_energies` is the
plain per-layer version (used for single evaluations, and as the reference in the tests).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from ...domains import SIGNED
from ...evidence import Evidence
from ...memory import Memory
from ...validation import (
    as_state,
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_representable,
    check_seed,
)
from .evidence import pc_evidence
from .readers import retrieve_pc, retrieve_pc_pyro
from .stop_rule import StopRule

__all__ = ["ACTIVATIONS", "PCNetwork", "Adam", "FusedEnergy"]


def _gelu_grad(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),
    "gelu": (torch.nn.functional.gelu, _gelu_grad),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "linear": (lambda x: x, torch.ones_like),
}


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)
"""The one-kernel Adam update behind ``torch.optim.Adam(fused=True)`` (CPU and CUDA), if this torch has it."""


class Adam:
    """Adam on a list of tensors with externally supplied gradients, in place (torch's defaults and
    its formula: ``p ← p − lr/c1 · m / (√v / √c2 + eps)``, ``c_i = 1 − β_i^t``).

    The update is torch's own fused kernel (the one ``torch.optim.Adam(fused=True)`` runs: one pass
    over each tensor instead of six) when this torch has it and the tensors are on a CPU or CUDA
    device and dense; otherwise the same formula as in-place ``lerp`` / ``addcdiv`` operations.  Both equal
    ``torch.optim.Adam`` (tested), without its per-step Python bookkeeping."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        # the fused kernel assumes dense (contiguous) tensors: it silently mis-updates strided ones
        self.fused = _FUSED_ADAM is not None and all(p.device.type in ("cpu", "cuda") and p.is_contiguous()
                                                     for p in params)
        self._steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]  # torch's counters
        self._eps = [p.new_tensor(eps) for p in params]  # 0-dim operands of the unfused formula, made once

    def step(self, params: list[Tensor], grads: list[Tensor]) -> None:
        b1, b2 = self.betas
        self.t += 1
        if self.fused and all(g.is_contiguous() for g in grads):
            for t in self._steps:
                t.fill_(self.t)
            _FUSED_ADAM(params, grads, self.m, self.v, [], self._steps, lr=self.lr, beta1=b1, beta2=b2,
                        weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
            return
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v, eps in zip(params, grads, self.m, self.v, self._eps, strict=True):
            m.lerp_(g, 1 - b1)
            v.lerp_(g * g, 1 - b2)  # = b2 v + (1 − b2) g²
            denom = torch.add(eps, v.sqrt(), alpha=1 / math.sqrt(c2))
            p.addcdiv_(m, denom, value=-self.lr / c1)


_COPY_LIMIT = 1 << 22
"""Largest ``R_lᵀ`` (entries, all particles) :class:`FusedEnergy` copies to make contiguous."""


class FusedEnergy:
    """One relaxation's constant terms and its fused energy + gradient pass (no autograd).

    Built once per relaxation from the layer statistics ``(R_l, U_l)`` (constant while the
    activities move): ``[R_l | U_l]`` is concatenated so that one matmul gives the prediction
    ``inp_l R_l`` and ``q_l = inp_l U_l``; the backward product uses the transposed view of the
    ``R_l`` block, made contiguous (a copy) when it has at most ``_COPY_LIMIT`` entries (faster
    products; larger ones, e.g. many particles, stay views so the working set stays what the memory
    holds); the top (bias) layer's mean and variance ``σ² + U_top`` are constants; layers whose
    inputs are all clamped (``free_hidden=False``) are evaluated once.  :meth:`__call__` returns
    the per-particle energies ``E_k`` ``[K, B]`` and the gradients of the free activities (the
    same formulas as :meth:`PCNetwork.particle_energies`, see the module docstring), written into
    preallocated buffers: ``g0 [K, B, D]`` (sensory, if free) and ``gh [K', B, (L-1)h]`` (hidden
    layers side by side, if free; ``K' = K`` per particle, views ``gh[..., (l-1)h : lh]``).
    """

    def __init__(self, net: "PCNetwork", layers: list, acts: list[Tensor], free0: bool, free_hidden: bool) -> None:
        L, h = net.n_layers, net.h_dim
        self.L, self.h, self.f, self.df = L, h, net._f, net._df
        self.free0, self.free_hidden = free0, free_hidden
        self._views_of: tuple[Tensor | None, Tensor | None] | None = None  # the buffers the views are of
        self._views: list[Tensor | None] = []
        self.d = [R.shape[-1] for R, _ in layers]
        R_top, U_top = layers[-1]
        self.K = R_top.shape[0]

        def scalar(x: float) -> Tensor:  # 0-dim operands: a Python float costs a tensor copy per op
            return torch.tensor(x, dtype=R_top.dtype, device=R_top.device)

        s2 = [net.layer_sigma2(i) for i in range(L)]
        self.s2, self.inv_s2 = [scalar(x) for x in s2], [scalar(1.0 / x) for x in s2]
        self.d_t = [scalar(float(d)) for d in self.d]
        self.pred = layers[0][1] is not None
        self.relu = net.activation == "relu"
        self.W = [R if U is None else torch.cat([R, U], -1) for R, U in layers[:-1]]
        # the backward product ε R_lᵀ: a contiguous copy of R_lᵀ is ~1.5x faster than the transposed view
        # (measured, one thread, [16, 784] @ [784, 256]); kept as a view when the copy would be large
        self.Rt = [W[..., :R.shape[-1]].transpose(-1, -2) for W, (R, _) in zip(self.W, layers, strict=False)]
        self.Rt = [t.contiguous() if t.numel() <= _COPY_LIMIT else t for t in self.Rt]
        self.mean_top = R_top  # [K, 1, h]
        v_top = s2[-1] + (U_top[:, 0, 0] if U_top is not None else torch.zeros_like(R_top[:, 0, 0]))
        self.inv_v_top = (1.0 / v_top).view(-1, 1, 1)  # [K, 1, 1]
        # every constant of E: (d_l / 2) log 2π for all layers, the top log-variance, and for
        # point weights ("map") the (d_l / 2) log σ_l² of the other layers
        const = 0.5 * sum(self.d) * math.log(2 * math.pi) + 0.5 * h * torch.log(v_top)
        if not self.pred:
            const = const + 0.5 * sum(d * math.log(s2[i]) for i, d in enumerate(self.d[:-1]))
        self.const = const.unsqueeze(-1)  # [K, 1]
        self.fixed0 = None
        if not free_hidden:  # every layer but the sensory one is constant
            rest = self._top(acts[-1], None)
            for i in range(1, L - 1):
                rest = rest + self._layer(i, acts, None, None)
            mean, v = self._predict(0, self.f(acts[1]))
            inv_v = self.inv_s2[0] if v is None else v.reciprocal()
            log_term = 0.0 if v is None else self.d[0] * torch.log(v)
            self.fixed0 = (mean, inv_v, torch.add(self.const, rest + log_term, alpha=0.5))

    def _predict(self, i: int, inp: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(inp R_i [K, B, d], v = σ² + q inpᵀ [K, B] or None for point weights)``; with
        ``q = inp U_i`` kept in ``self._q``."""
        y = inp @ self.W[i]
        if not self.pred:
            self._q = None
            return y, None
        d = self.d[i]
        self._q = y[..., d:]
        return y[..., :d], torch.linalg.vecdot(self._q, inp).add_(self.s2[i])

    def _top(self, a: Tensor, g: Tensor | None, energy: bool = True) -> Tensor | None:
        """``‖ε‖²/v`` of the top layer ``[K, B]`` (twice its energy, constants apart; None when
        ``energy`` is False)."""
        eps = a - self.mean_top
        if g is not None:
            torch.mul(eps, self.inv_v_top, out=g)
        return torch.linalg.vecdot(eps, eps) * self.inv_v_top.squeeze(-1) if energy else None

    def _layer(self, i: int, acts: list[Tensor], g_out: Tensor | None, g_in: Tensor | None,
               energy: bool = True) -> Tensor | None:
        """Twice the energy of layer ``i`` without its constants, ``‖ε‖²/v + d log v`` ``[K, B]``;
        sets ``g_out = ∂E_i/∂a_i`` and adds ``∂E_i/∂a_{i+1}`` to ``g_in``.  ``energy=False`` (point
        weights only, where the gradient does not need it): the energy is not computed (None)."""
        a_in = acts[i + 1]
        inp = self.f(a_in)
        if not self.pred:  # point weights: v = σ² is a constant; ε = a_i − inp R_i in one fused gemm
            W = self.W[i]
            eps = torch.baddbmm(acts[i], inp, W, alpha=-1) if inp.shape[0] == W.shape[0] else acts[i] - inp @ W
            inv_v = self.inv_s2[i]
            if g_out is not None:
                torch.mul(eps, inv_v, out=g_out)
            if g_in is not None:
                g_in.addcmul_(eps @ self.Rt[i], self._dact(a_in, inp), value=-float(inv_v))
            return torch.linalg.vecdot(eps, eps) * inv_v if energy else None
        mean, v = self._predict(i, inp)
        eps = acts[i] - mean
        sq = torch.linalg.vecdot(eps, eps)
        inv_v = v.reciprocal()
        r = sq * inv_v
        if g_out is not None:
            torch.mul(eps, inv_v.unsqueeze(-1), out=g_out)
        if g_in is not None:  # ∂E/∂inp = (q (d − ‖ε‖²/v) − ε Rᵀ) / v
            coef = torch.sub(self.d_t[i], r).unsqueeze(-1)
            g_inp = torch.baddbmm(self._q * coef, eps, self.Rt[i], alpha=-1)
            g_in.addcmul_(g_inp, self._dact(a_in, inp) * inv_v.unsqueeze(-1))
        return r.add_(torch.log(v), alpha=self.d[i])

    def _dact(self, a_in: Tensor, inp: Tensor) -> Tensor:
        """``f'(a)`` (for relu ``sign(relu(a))``, i.e. ``a > 0``, in one op)."""
        return torch.sign(inp) if self.relu else self.df(a_in)

    def __call__(self, acts: list[Tensor], g0: Tensor | None, gh: Tensor | None,
                 energy: bool = True) -> Tensor | None:
        """Per-particle energies ``[K, B]``; fills ``g0`` / ``gh`` (``None``: not wanted).
        ``energy=False`` with point weights: only the gradients (returns None; ~25 % fewer
        operations per step)."""
        energy = energy or self.pred
        if self.fixed0 is not None:  # only the sensory layer moves
            mean, inv_v, rest = self.fixed0
            eps = acts[0] - mean
            if g0 is not None:
                torch.mul(eps, inv_v.unsqueeze(-1) if inv_v.dim() else inv_v, out=g0)
            return torch.add(rest, torch.linalg.vecdot(eps, eps) * inv_v, alpha=0.5)
        if self._views_of is None or self._views_of[0] is not g0 or self._views_of[1] is not gh:
            # the per-layer views of the gradient buffers, made once per buffer pair
            h, L = self.h, self.L
            gv = [None] * L
            if gh is not None:
                gv[1:] = [gh[..., j * h:(j + 1) * h] for j in range(L - 1)]
            if g0 is not None:
                gv[0] = g0
            self._views, self._views_of = gv, (g0, gh)
        gv, L = self._views, self.L
        twice = self._top(acts[-1], gv[-1], energy)
        for i in range(L - 2, -1, -1):  # top-down: layer i sets ∂/∂a_i, then adds to ∂/∂a_{i+1}
            part = self._layer(i, acts, gv[i], gv[i + 1], energy)
            twice = twice + part if energy else None
        return torch.add(self.const, twice, alpha=0.5) if energy else None


class PCNetwork(Memory):
    """Base class: the hierarchical Gaussian network, its energy, gradient, relaxation and Pyro model.

    Subclasses provide ``layer_stats(dtype) -> [(R_l [K, d_in, d_out], U_l [K, d_in, d_in] or None)]``
    (layer 0 = sensory prediction, layer ``L-1`` = top bias with ``d_in = 1``) and
    ``particle_log_weights(dtype) -> [K]`` (normalised particle log-weights).
    """

    methods = (retrieve_pc, retrieve_pc_pyro)
    default_method = "pc"
    value_domain = SIGNED
    latent_site = "x"
    observed_site = "x"

    def _init_network(
        self, n_layers: int, h_dim: int, activation: str, sigma_obs: float, sigma_data: float | None,
        T_infer: int, activation_lr: float, infer_tol: float, seed: int,
    ) -> None:
        n_layers = check_int(n_layers, "n_layers (sensory + at least one hidden layer)", minimum=2)
        h_dim = check_positive_int(h_dim, "h_dim")
        check_choice(activation, "activation", sorted(ACTIVATIONS))
        T_infer = check_positive_int(T_infer, "T_infer")
        seed = check_seed(seed)
        self.n_layers, self.h_dim, self.activation = n_layers, h_dim, activation
        self.sigma_obs = check_positive(sigma_obs, "sigma_obs")
        self.sigma_data = None if sigma_data is None else check_positive(sigma_data, "sigma_data")
        self.T_infer = T_infer
        self.activation_lr = check_positive(activation_lr, "activation_lr")
        self.infer_tol = check_non_negative(infer_tol, "infer_tol")
        self.seed = seed
        self._f, self._df = ACTIVATIONS[activation]
        for layer, what in ((0, "sigma_data² (sigma_obs² when None)"), (1, "sigma_obs²")):
            check_representable(self.layer_sigma2(layer), what, self.dtype)  # relaxations run in this dtype

    # --- shapes ------------------------------------------------------------------------------
    def layer_dims(self) -> list[tuple[int, int]]:
        """``(d_in, d_out)`` of layers ``0 … L-1`` (layer ``L-1`` is the top bias, ``d_in = 1``)."""
        L, h = self.n_layers, self.h_dim
        return [(h if i < L - 1 else 1, self.dim if i == 0 else h) for i in range(L)]

    def layer_sigma2(self, layer: int) -> float:
        s = (self.sigma_data or self.sigma_obs) if layer == 0 else self.sigma_obs
        return s * s

    def initial_means(self, particles: int = 1, dtype: torch.dtype = torch.float64) -> list[Tensor]:
        """The random initial means ``[P, d_in, d_out]`` (``kaiming_normal_`` on ``[d_in, d_out]``:
        std ``1/√d_out``; top bias std ``1/√h``), one independent draw per particle, from ``seed``
        on the CPU so every device gets the same network."""
        g = torch.Generator().manual_seed(self.seed)
        return [
            (torch.randn(particles, d_in, d_out, generator=g, dtype=torch.float64) / math.sqrt(d_out)).to(
                self.device, dtype)
            for d_in, d_out in self.layer_dims()
        ]

    @property
    def code_dim(self) -> int:
        """``D + (L-1)h``: all activities side by side (sensory first)."""
        return self.dim + (self.n_layers - 1) * self.h_dim

    @property
    def latent_dim(self) -> int:
        """The latent state of a read is the code of all activities, ``D + (L-1)h``."""
        return self.code_dim

    def default_options(self, method: str) -> dict[str, Any]:
        """``pc`` / ``pc_pyro`` read with the write-time relaxation settings: ``max_steps = T_infer``,
        ``lr = activation_lr``, ``tol = infer_tol``, ``rtol = infer_rtol`` (0 when the memory has none)."""
        return {"max_steps": self.T_infer, "lr": self.activation_lr, "tol": self.infer_tol,
                "rtol": getattr(self, "infer_rtol", 0.0)}

    def split_code(self, code: Tensor) -> list[Tensor]:
        """``[…, D + (L-1)h]`` → ``[a_0 [… , D], a_1 [… , h], …, a_{L-1}]``."""
        return list(code.split([self.dim] + [self.h_dim] * (self.n_layers - 1), dim=-1))

    def join_code(self, acts: list[Tensor]) -> Tensor:
        return torch.cat(acts, -1)

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.state_dict().items()}

    def _restore(self, snapshot: dict[str, Tensor]) -> None:
        """Put back a :meth:`_snapshot` (buffers may have changed shape, so no ``load_state_dict``)."""
        for name, value in snapshot.items():
            setattr(self, name, value)

    # --- energy and gradient -------------------------------------------------------------------
    @abstractmethod
    def layer_stats(self, dtype: torch.dtype) -> list[tuple[Tensor, Tensor | None]]:
        """Per layer ``(weight mean, row covariance or None)``, batched over the particles."""

    @abstractmethod
    def particle_log_weights(self, dtype: torch.dtype) -> Tensor:
        """Particle log-weights ``[K]``."""

    def _inputs(self, acts: list[Tensor]) -> list[Tensor]:
        L = self.n_layers
        top = acts[-1].new_ones((*acts[-1].shape[:-1], 1))
        return [self._f(acts[i + 1]) for i in range(L - 1)] + [top]

    def particle_energies(self, acts: list[Tensor], layers: list | None = None, with_grad: bool = False,
                          sensory_mask: Tensor | None = None) -> tuple[Tensor, list[Tensor] | None]:
        """``E_k(a)`` as ``[K, B]`` for activities ``a_l`` of shape ``[P, B, d_l]`` (``P ∈ {1, K}``);
        with ``with_grad`` also ``∂E_k/∂a_l`` as ``[K, B, d_l]`` (hand-written, see module doc).

        ``sensory_mask`` (bool ``[B, D]`` or ``[D]``, ``True`` = observed): only the observed sensory
        entries enter (``d_0`` becomes their number), so ``E_k = −log p_k(x_obs, a_1, …, a_{L-1})``
        with the unobserved entries integrated out, exactly: given ``a_1`` the sensory entries are
        independent Gaussians.  All ``False``: ``E_k = −log p_k(a_1, …, a_{L-1})``."""
        layers = layers if layers is not None else self.layer_stats(acts[0].dtype)
        inputs = self._inputs(acts)
        total = 0
        grads: list[Tensor] | None = [0] * self.n_layers if with_grad else None  # type: ignore[list-item]
        for i, ((R, U), inp) in enumerate(zip(layers, inputs, strict=True)):
            d = R.shape[-1]
            eps = acts[i] - inp @ R  # [K, B, d]
            if i == 0 and sensory_mask is not None:
                eps = torch.where(sensory_mask, eps, torch.zeros((), dtype=eps.dtype, device=eps.device))
                d = sensory_mask.sum(-1).to(eps.dtype)  # [B] (or a scalar for a [D] mask)
            s2 = self.layer_sigma2(i)
            q = None
            if U is not None:
                q = inp @ U  # [K, B, d_in]
                v = s2 + (q * inp).sum(-1)  # [K, B]
            else:
                v = torch.full(eps.shape[:-1], s2, dtype=eps.dtype, device=eps.device)
            sq = (eps * eps).sum(-1)
            total = total + 0.5 * sq / v + 0.5 * d * torch.log(2 * math.pi * v)
            if grads is not None:
                grads[i] = grads[i] + eps / v.unsqueeze(-1)
                if i < self.n_layers - 1:
                    g_inp = -(eps @ R.transpose(-1, -2)) / v.unsqueeze(-1)
                    if q is not None:
                        g_inp = g_inp + q * (d / v - sq / v**2).unsqueeze(-1)
                    grads[i + 1] = grads[i + 1] + self._df(acts[i + 1]) * g_inp
        return total, grads  # type: ignore[return-value]

    def mixture_energy(self, acts: list[Tensor], layers: list | None = None, log_w: Tensor | None = None,
                       with_grad: bool = False) -> tuple[Tensor, list[Tensor] | None, Tensor]:
        """``E(a) = −logsumexp_k(log w_k − E_k(a))`` ``[B]`` for shared activities ``[1, B, d_l]``;
        optionally its gradient ``[1, B, d_l]``; and the responsibilities ``r`` ``[K, B]``."""
        e_k, g_k = self.particle_energies(acts, layers, with_grad)
        log_w = self.particle_log_weights(e_k.dtype) if log_w is None else log_w
        joint = log_w.unsqueeze(-1) - e_k
        lse = joint.logsumexp(0)
        r = (joint - lse).exp()
        grads = None
        if g_k is not None:
            grads = [(r.unsqueeze(-1) * g).sum(0, keepdim=True) for g in g_k]
        return -lse, grads, r

    def _as_acts(self, code: Tensor, cue: Tensor | None, mask: Tensor | None) -> list[Tensor]:
        """``[1, B, d_l]`` activities from a code ``[B, D + (L-1)h]``, observed sensory entries clamped."""
        acts = self.split_code(code)
        if cue is not None:
            acts[0] = cue.expand_as(acts[0]) if mask is None else torch.where(mask, cue, acts[0])
        return [a.unsqueeze(0) for a in acts]

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``−log p(a | M)`` ``[B]`` at the activities ``z = code [B, D + (L-1)h]`` (sensory first).

        All Gaussian constants are kept, so this equals minus the log-density of the Pyro trace of
        :meth:`model` at these values.  With ``cue`` the observed sensory entries (``mask``; all if
        ``None``) are taken from the cue (clamped), the others from ``z``.  Any batch shape
        ``z [..., B, D + (L-1)h]`` → ``[..., B]``: the states are flattened into one batch, so the
        particle dimension of the weights never broadcasts against a batch dimension of ``z``.
        """
        batch = z.shape[:-1] if cue is None else torch.broadcast_shapes(z.shape[:-1], cue.shape[:-1])
        flat = z.expand(*batch, z.shape[-1]).reshape(-1, z.shape[-1])
        if cue is not None:
            cue = cue.expand(*batch, cue.shape[-1]).reshape(-1, cue.shape[-1])
            if mask is not None:
                mask = mask.expand(*batch, mask.shape[-1]).reshape(-1, mask.shape[-1])
        e, _, _ = self.mixture_energy(self._as_acts(flat, cue, mask))
        return e.reshape(batch)

    def energy_grad(self, z: Any, cue: Any = None, mask: Any = None) -> Tensor:
        """Hand-written ``∂E/∂code`` ``[B, D + (L-1)h]`` (the local prediction-error update);
        entries clamped to the cue get gradient 0.  Inputs are checked as for :meth:`energy`."""
        self._check_not_empty()
        z = as_state(z, self.code_dim, self.dtype, self.device)
        if z.dim() != 2:
            raise ValueError(f"z must be a code of shape [B, {self.code_dim}], got {tuple(z.shape)}")
        if cue is not None:
            cue, mask = self.prepare_cue(cue, mask)
            if cue.shape[0] not in (1, z.shape[0]):
                raise ValueError(f"{cue.shape[0]} cues for {z.shape[0]} codes")
        elif mask is not None:
            raise ValueError("a mask needs a cue (mask says which entries of the cue are observed)")
        acts = self._as_acts(z, cue, mask)
        _, grads, _ = self.mixture_energy(acts, with_grad=True)
        g = self.join_code([gr.squeeze(0) for gr in grads])
        if cue is not None:
            free = torch.zeros_like(g, dtype=torch.bool)
            free[..., self.dim:] = True
            if mask is not None:
                free[..., : self.dim] = ~mask
            g = torch.where(free, g, torch.zeros((), dtype=g.dtype, device=g.device))
        return g

    # --- evidence ------------------------------------------------------------------------------
    def compute_evidence(self, cue: Tensor, mask: Tensor | None, **options: Any) -> Evidence:
        """``log p(x_obs | M)``: the particle index summed, the unobserved sensory entries
        integrated out exactly, the hidden activities by importance sampling around each particle's
        relaxed mode (kind ``"estimate"``) or, with ``estimator="elbo"``, the negative free energy
        of that Gaussian (kind ``"lower_bound"``); see
        :func:`varmem.memories.predictive_coding.evidence.pc_evidence` for the options."""
        return pc_evidence(self, cue, mask, **options)

    # --- relaxation ----------------------------------------------------------------------------
    def init_hidden(self, batch: int, particles: int, generator: torch.Generator | None,
                    dtype: torch.dtype | None = None) -> list[Tensor]:
        """Random hidden activities ``h^{-1/2} N(0, I)`` (official ``randn`` init): ``[P, B, h]`` each."""
        dtype = dtype or self.dtype
        dev = self.device if generator is None else generator.device
        return [
            (torch.randn(particles, batch, self.h_dim, generator=generator, device=dev, dtype=dtype)
             / math.sqrt(self.h_dim)).to(self.device)
            for _ in range(self.n_layers - 1)
        ]

    def relax(
        self, acts: list[Tensor], sensory_free: Tensor | None, *, steps: int, lr: float, optimizer: str = "adam",
        tol: float = 0.0, rtol: float = 0.0, individual: bool = False, layers: list | None = None,
        log_w: Tensor | None = None, free_hidden: bool = True, progress: Any = None, record: bool = True,
        window: int | None = None, final: bool = True,
    ) -> tuple[list[Tensor], Tensor, int, Tensor]:
        """Minimise the energy over the hidden activities (and sensory entries where
        ``sensory_free``) by at most ``steps`` optimiser steps; in place on ``acts`` (the hidden
        entries of the list are replaced by views of one flat ``[P, B, (L-1)h]`` buffer).

        ``individual``: activities are ``[K, B, d]`` and every particle minimises its own ``E_k``
        (BayesPCN write); otherwise ``[1, B, d]`` and the mixture energy is minimised.
        Early stop (``tol = rtol = 0``: never) when either

        * ``tol > 0`` and every energy changed by at most ``tol`` in the same step (the official
          absolute test; at σ = 0.01 the energies are 1e3–1e5, so 1e-3 hardly ever fires), or
        * ``rtol > 0`` and every energy has, at some step, changed by at most ``rtol·|E|`` (the
          scale-aware test; per cue and sticky, because with many cues Adam's oscillations make a
          simultaneous small step of all of them rare); with ``window = W > 1`` (default: the
          memory's ``infer_window``, 1 when it has none) the change is that of the mean energy
          over blocks of ``W`` steps, per step (:class:`StopRule`).
        The energy and its gradient come from one fused pass (:class:`FusedEnergy`, no autograd),
        Adam works in place on the flat buffers.  ``record=False`` (no stopping rule, one
        particle, point weights: GPCN training) skips the per-step energies, so the trace holds
        only the final one; ``final=False`` as well (the caller evaluates the relaxed state itself)
        returns an empty trace.
        Returns ``(acts, trace [T+1, B] or [T+1, K, B], steps, converged)``.
        """
        layers = layers if layers is not None else self.layer_stats(acts[0].dtype)
        L, h = self.n_layers, self.h_dim
        if free_hidden:
            hidden = torch.cat(acts[1:], -1)  # [P, B, (L-1)h], the optimised buffer
            acts[1:] = [hidden[..., j * h:(j + 1) * h] for j in range(L - 1)]
        fused = FusedEnergy(self, layers, acts, sensory_free is not None, free_hidden)
        K, B = fused.K, acts[0].shape[-2]
        like = acts[0]
        gh = like.new_empty(K, B, (L - 1) * h) if free_hidden else None
        g0 = like.new_empty(K, B, self.dim) if sensory_free is not None else None
        params = ([acts[0]] if g0 is not None else []) + ([hidden] if free_hidden else [])
        opt = Adam(params, lr) if optimizer == "adam" else None
        free = None if sensory_free is None else sensory_free.to(like.dtype)
        if not individual:
            log_w = self.particle_log_weights(like.dtype) if log_w is None else log_w
            log_w = log_w.unsqueeze(-1)
        shift = None if individual or K > 1 or not bool(log_w[0].any()) else log_w[0]
        trace: list[Tensor] = []
        window = getattr(self, "infer_window", 1) if window is None else window
        rule = StopRule(tol, rtol, window)
        done = 0
        quiet = not record and tol == 0 and rtol == 0 and K == 1 and not fused.pred
        for done in range(1, steps + 1):  # noqa: B007
            e = fused(acts, g0, gh, energy=not quiet)
            grads = [g for g in (g0, gh) if g is not None]
            if quiet:
                pass
            elif not individual and K > 1:  # mixture: E = −logsumexp(log w − E_k), ∂E = Σ_k r_k ∂E_k
                joint = log_w - e
                e = -joint.logsumexp(0)
                r = (joint + e).exp_().unsqueeze(-1)
                grads = [(g * r).sum(0, keepdim=True) for g in grads]
            elif not individual:  # K = 1: E = E_1 − log w_1 (log w_1 = 0 when normalised)
                e = e[0] if shift is None else e[0] - shift
            if free is not None:
                grads[0].mul_(free)  # g0 (or the mixture's fresh sum) is rewritten every step: in place
            if opt is not None:
                opt.step(params, grads)
            else:
                for p, gr in zip(params, grads, strict=True):
                    p.sub_(gr, alpha=lr)
            if not quiet:
                trace.append(e)
            if progress is not None:
                progress.update(1)
            if rule.update(e):  # no stopping rule: no per-step test either
                break
        converged = rule.converged
        if not final:
            shape = (K, B) if individual else (B,)
            if converged is None:
                converged = torch.zeros(shape, dtype=torch.bool, device=like.device)
            return acts, like.new_zeros(0, *shape), done, converged
        last = fused(acts, None, None)
        if not individual:
            last = -(log_w - last).logsumexp(0)
        trace.append(last)
        if converged is None:
            converged = torch.zeros_like(last, dtype=torch.bool)
        return acts, torch.stack(trace), done, converged

    def prior_prediction(self, dtype: torch.dtype | None = None) -> Tensor:
        """The top-down pass of means ``[D]``: ``a_{L-1} = b`` (the top mean), ``a_l = f(a_{l+1}) R_l``
        down to the sensory layer, averaged over the particles with their weights ``w_k``.  For
        ``activation="linear"`` this is the prior mean of the sensory layer exactly; otherwise the
        prediction from the hidden layers' means (the read option ``start="prior_mean"``)."""
        dtype = dtype or self.dtype
        layers = self.layer_stats(dtype)
        a = layers[-1][0]  # [K, 1, h]
        for i in range(self.n_layers - 2, -1, -1):
            a = self._f(a) @ layers[i][0]
        w = self.particle_log_weights(dtype).exp()
        return (w.view(-1, 1, 1) * a).sum(0).squeeze(0)

    def predict_sensory(self, acts: list[Tensor], layers: list | None = None) -> Tensor:
        """``[K, B, D]`` top-down sensory predictions ``f(a_1) R_{0,k}``."""
        layers = layers if layers is not None else self.layer_stats(acts[0].dtype)
        return self._f(acts[1]) @ layers[0][0]

    # --- the Pyro model ------------------------------------------------------------------------
    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """Ancestral Pyro model of the activities, top layer first.

        Sites (plate ``"cues"``, ``dim=-1``): ``particle`` (only for ``K > 1``; categorical with
        the particle weights, marked for parallel enumeration), ``h{L-1}``, …, ``h1`` (``[B, h]``),
        and the sensory layer ``x`` (``[B, D]``), observed at ``cue``.  For a partial cue the
        unknown entries come from the latent site ``x_missing`` (an improper flat site, log-density
        0) and ``x = where(mask, cue, x_missing)`` is observed: known entries are clamped.
        """
        layers = self.layer_stats(self.dtype)
        log_w = self.particle_log_weights(self.dtype)
        K = log_w.shape[0]
        B = cue.shape[0] if cue is not None else num_cues
        with pyro.plate("cues", B, dim=-1):
            k = None
            if K > 1:
                k = pyro.sample("particle", dist.Categorical(logits=log_w), infer={"enumerate": "parallel"})
            a = None
            for i in range(self.n_layers - 1, -1, -1):
                R, U = layers[i]
                inp = self._f(a) if a is not None else torch.ones(B, 1, dtype=self.dtype, device=self.device)
                if k is None:
                    mean = inp @ R[0]
                    var = self.layer_sigma2(i) + (0 if U is None else ((inp @ U[0]) * inp).sum(-1))
                else:
                    x = inp.unsqueeze(-2)
                    mean = (x @ R[k]).squeeze(-2)
                    var = self.layer_sigma2(i) + (0 if U is None else ((x @ U[k]) * x).sum(-1).squeeze(-1))
                scale = torch.as_tensor(var, dtype=mean.dtype, device=mean.device).sqrt()
                fn = dist.Normal(mean, scale.unsqueeze(-1).expand_as(mean)).to_event(1)
                if i > 0:
                    a = pyro.sample(f"h{i}", fn)
                elif cue is None:
                    a = pyro.sample("x", fn)
                elif mask is None:
                    a = pyro.sample("x", fn, obs=cue)
                else:
                    free = pyro.sample("x_missing", dist.ImproperUniform(constraints.real, (B,), (self.dim,)))
                    a = pyro.sample("x", fn, obs=torch.where(mask, cue, free))
        return a
