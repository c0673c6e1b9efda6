"""Generative predictive-coding network memory ("GPCN", Salvatori et al. 2021).

The network of :mod:`varmem.memories.predictive_coding.network` with point weights ``W_l`` (``K = 1``, ``U = 0``)::

    a_{L-1} ~ N(b, σ_x² I),   a_l | a_{l+1} ~ N(f(a_{l+1}) W_l, σ_l² I),   a_0 = x (sensory)
    F(a)    = ½ Σ_l ‖ε_l‖² / σ_l²,   ε_l = a_l − f(a_{l+1}) W_l     (ε_{L-1} = a_{L-1} − b)
    energy  = −log p(a | W) = F(a) + Σ_l (d_l / 2) log(2π σ_l²)

Inference relaxes the hidden (and unknown sensory) activities down ``∂F/∂a`` (Adam, as in
BayesPCN's GPCN baselines, or plain gradient steps ``γ``); learning is the local rule, applied after
``T_infer`` relaxation steps with the sensory layer clamped to the items::

    W_l ← W_l + (α / B) f(a_{l+1})ᵀ ε_l / σ_l²        (α = weight_lr; α/σ² ≈ 1 in the camera runs)

``training="online"``: one pass, one item per step (catastrophic forgetting is expected);
``training="offline"``: every write trains ``epochs`` full-batch epochs over all stored items.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...evidence import Evidence
from ...validation import check_bool, check_choice, check_number, check_positive, check_positive_int, check_values
from .composition import FitRecord
from .network import PCNetwork

__all__ = ["PredictiveCodingMemory"]


class PredictiveCodingMemory(PCNetwork):
    """A hierarchical Gaussian predictive-coding network that stores items in its weights.

    Args:
        dim: ``D``, sensory dimension.
        n_layers: ``L`` activity layers including the sensory one (camera-ready 4).
        h_dim: hidden width ``h``.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"`` or ``"linear"`` (applied pre-synaptically).
        sigma_obs, sigma_data: hidden / sensory standard deviations (``sigma_data=None``: = sigma_obs).
        training: ``"online"`` or ``"offline"`` (see module docstring).
        epochs: offline epochs per :meth:`write`.
        weight_lr: ``α`` of the local weight rule.
        T_infer, activation_lr, activation_optimizer, infer_tol: relaxation during training
            (``"adam"`` or ``"sgd"``; early stop when every item's ``|ΔE| ≤ infer_tol``, the official
            absolute test).
        infer_rtol: scale-aware early stop of the training relaxations and the read default:
            stop once every item's energy has, at some step, changed by at most ``infer_rtol·|E|``
            (see :meth:`PCNetwork.relax`); 0 disables it.  The default 1e-6 was measured
            (``experiments/bench_pc.py`` settings, N = 16 and 64) to keep the recall of no early stop.
        seed: seeds the initial weights and the random hidden initialisations of training.

    Example:
        >>> m = PredictiveCodingMemory(4, n_layers=2, h_dim=8, sigma_obs=1.0, T_infer=20, weight_lr=0.5)
        >>> m = m.write(torch.randn(2, 4))
        >>> m.retrieve(torch.zeros(1, 4), seed=0).pattern.shape
        torch.Size([1, 4])
    """

    def __init__(
        self,
        dim: int,
        *,
        n_layers: int = 4,
        h_dim: int = 256,
        activation: str = "relu",
        sigma_obs: float = 0.01,
        sigma_data: float | None = None,
        training: str = "online",
        epochs: int = 4000,
        weight_lr: float = 1e-4,
        T_infer: int = 500,
        activation_lr: float = 0.01,
        activation_optimizer: str = "adam",
        infer_tol: float = 1e-3,
        infer_rtol: float = 1e-6,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self._init_network(n_layers, h_dim, activation, sigma_obs, sigma_data, T_infer, activation_lr,
                           infer_tol, seed)
        rtol = check_number(infer_rtol, "infer_rtol")
        if not 0.0 <= rtol < 1.0:
            raise ValueError(f"infer_rtol must lie in [0, 1), got {infer_rtol!r}")
        self.infer_rtol = rtol
        check_choice(training, "training", ("online", "offline"))
        epochs = check_positive_int(epochs, "epochs")
        check_choice(activation_optimizer, "activation_optimizer", ("adam", "sgd"))
        self.training_mode, self.epochs = training, epochs
        self.weight_lr = check_positive(weight_lr, "weight_lr")
        self.activation_optimizer = activation_optimizer
        for i, w in enumerate(self.initial_means(1, self.dtype)):
            self.register_buffer(f"W{i}", w[0])
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self.fit_record: FitRecord | None = None  # the energy per epoch of the last offline training
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "n_layers": self.n_layers, "h_dim": self.h_dim, "activation": self.activation,
            "sigma_obs": self.sigma_obs, "sigma_data": self.sigma_data, "training": self.training_mode,
            "epochs": self.epochs, "weight_lr": self.weight_lr, "T_infer": self.T_infer,
            "activation_lr": self.activation_lr, "activation_optimizer": self.activation_optimizer,
            "infer_tol": self.infer_tol, "infer_rtol": self.infer_rtol, "seed": self.seed,
        }

    def weight(self, layer: int) -> Tensor:
        """``W_l`` ``[d_in, d_out]`` (layer ``L-1``: the top bias ``[1, h]``)."""
        return getattr(self, f"W{layer}")

    def check_state(self) -> None:
        for i, (d_in, d_out) in enumerate(self.layer_dims()):
            w = self.weight(i)
            if tuple(w.shape) != (d_in, d_out):
                raise ValueError(f"W{i} must have shape {(d_in, d_out)}, got {tuple(w.shape)}")
            check_values(w, f"W{i}")  # finite and within ±MAX_ABS_VALUE, as learned weights are
        self.check_stored_items()

    def layer_stats(self, dtype: torch.dtype) -> list[tuple[Tensor, Tensor | None]]:
        return [(self.weight(i).to(dtype).unsqueeze(0), None) for i in range(self.n_layers)]

    def particle_log_weights(self, dtype: torch.dtype) -> Tensor:
        return torch.zeros(1, dtype=dtype, device=self.device)

    def pc_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``F = ½ Σ_l ‖ε_l‖² / σ_l²`` ``[B]`` (the energy without its Gaussian constants)."""
        const = sum(0.5 * d_out * torch.log(torch.tensor(2 * torch.pi * self.layer_sigma2(i), dtype=torch.float64))
                    for i, (_, d_out) in enumerate(self.layer_dims()))
        return self.energy(z, cue, mask) - float(const)

    # --- evidence ------------------------------------------------------------------------------
    def compute_evidence(self, cue: Tensor, mask: Tensor | None, **options: Any) -> Evidence:
        """``log p(x_obs | W) = log ∫ p(x_obs | a_1, W_0) p(a_1, …, a_{L-1} | W) da`` with the
        weights ``W`` the learned point values (no uncertainty about them is modelled).

        Exact parts: the unobserved sensory entries are integrated out in closed form (they never
        enter).  Approximated: the integral over the ``(L-1)·h`` hidden activities, by importance
        sampling (kind ``"estimate"``, with its standard error) with a Gaussian centred at the
        relaxed (then Newton-refined) mode with the Laplace covariance (the inverse Hessian of the
        energy, widened per cue where a pilot run shows it helps), mixed with 10 % prior draws so
        the weights stay bounded (``defensive``); or, with ``estimator="elbo"``, the negative free
        energy of that Gaussian, kind ``"lower_bound"``.
        For ``activation="linear"`` the model is linear-Gaussian, the Laplace Gaussian is the exact
        posterior and both are exact up to Monte Carlo noise (``defensive=0``: to rounding).  For
        ``relu`` the Hessian is that of the linear piece the mode lies on.
        Options: :func:`varmem.memories.predictive_coding.evidence.pc_evidence`."""
        return super().compute_evidence(cue, mask, **options)

    # --- learning ------------------------------------------------------------------------------
    def _train_step(self, x: Tensor, generator: torch.Generator) -> tuple[float, int]:
        """Relax the hidden layers with ``a_0 = x`` clamped, then one local weight update
        ``W_l ← W_l + (α / B) inp_lᵀ ε_l / σ_l²``; returns the mean energy ``−log p(a | W)`` per item
        at the relaxed activities (before the weight step) and the relaxation steps taken.  The
        prediction errors ``ε_l`` are computed once and serve both the energy and the update."""
        acts = [x.unsqueeze(0)] + self.init_hidden(x.shape[0], 1, generator)
        acts, _, steps, _ = self.relax(acts, None, steps=self.T_infer, lr=self.activation_lr,
                                       optimizer=self.activation_optimizer, tol=self.infer_tol,
                                       rtol=self.infer_rtol, record=False, final=False)
        inputs = [a.squeeze(0) for a in self._inputs(acts)]
        B = x.shape[0]
        twice = 0.0
        new = []
        for i in range(self.n_layers):
            W = self.weight(i)
            eps = torch.addmm(acts[i].squeeze(0), inputs[i], W, alpha=-1)  # ε_l = a_l − inp_l W_l
            inv_s2 = 1.0 / self.layer_sigma2(i)
            twice = twice + torch.linalg.vecdot(eps, eps) * inv_s2
            new.append(torch.addmm(W, inputs[i].T, eps, alpha=self.weight_lr / B * inv_s2))
        if not math.isfinite(float(sum(w.sum() for w in new))):  # one sum per layer, not an isfinite pass
            raise FloatingPointError("weight update produced NaN/inf: weight_lr / sigma_obs² (sigma_data² for the "
                                     "sensory layer) is too large, or activation_lr made the relaxation diverge")
        const = sum(0.5 * d_out * math.log(2 * math.pi * self.layer_sigma2(i))
                    for i, (_, d_out) in enumerate(self.layer_dims()))
        for i, w in enumerate(new):
            setattr(self, f"W{i}", w)
        return float(twice.mean()) / 2 + const, steps

    def write(self, items: Any, *, progress: bool = False) -> "PredictiveCodingMemory":
        """Store ``items`` (``[N, D]`` or ``[D]``): online, one local-learning step per item, in
        order; offline, append them and train ``epochs`` epochs over every stored item."""
        new = self.prepare_items(items)
        check_bool(progress, "progress")
        before = self._snapshot()
        try:
            with torch.no_grad():
                self.append_rows("items", new)
                if self.training_mode == "online":
                    for x in tqdm(new, desc="GPCN write", disable=not progress, leave=False):
                        self._train_step(x.unsqueeze(0), self._generator)
                else:
                    self._fit(self.epochs, progress)
        except BaseException:
            self._restore(before)
            raise
        return self

    def fit(self, epochs: int | None = None, *, progress: bool = False,
            callback: Callable[[int, FitRecord], Any] | None = None) -> "PredictiveCodingMemory":
        """Train ``epochs`` (default ``self.epochs``) more full-batch epochs over the stored items.

        The energy of every epoch (mean ``−log p(a | W)`` per item at the relaxed activities, before
        that epoch's weight step), its seconds and the relaxation steps are recorded in
        :attr:`fit_record` (a :class:`~varmem.memories.predictive_coding.FitRecord`, also kept by an
        offline :meth:`write`); ``callback(epoch, record)`` is called after each epoch and the
        progress bar shows the energy."""
        epochs = check_positive_int(self.epochs if epochs is None else epochs, "epochs")
        check_bool(progress, "progress")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (epoch, record), got {callback!r}")
        if len(self) == 0:
            raise ValueError("PredictiveCodingMemory is empty: write items before fitting")
        before = self._snapshot()
        try:
            with torch.no_grad():
                self._fit(epochs, progress, callback)
        except BaseException:
            self._restore(before)
            raise
        return self

    def _fit(self, epochs: int, progress: bool, callback: Callable[[int, FitRecord], Any] | None = None) -> None:
        record = FitRecord()
        bar = tqdm(range(epochs), desc="GPCN epochs", disable=not progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            energy, steps = self._train_step(self.items, self._generator)
            record.energy.append(energy)
            record.seconds.append(time.perf_counter() - t0)
            record.steps += steps
            bar.set_postfix(energy=f"{energy:.4g}")
            if callback is not None:
                callback(epoch, record)
        self.fit_record = record
