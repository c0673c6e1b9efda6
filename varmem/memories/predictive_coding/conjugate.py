"""Conjugate (Bayesian) dense layers for predictive-coding networks: BayesPCN's layers.

A :class:`ConjugateDense` layer predicts its output node ``y ∈ R^{d_out}`` from its input node
``x ∈ R^{d_in}`` with matrix-normal weights, one posterior per particle ``k = 1 … K``::

    W_k ~ MN(R_k, U_k, I)        R_k [d_in, d_out] (mean),  U_k [d_in, d_in] (row covariance)
    z = f(x)                     (activation pre-synaptic; top variant: z = 1, a bias)
    y | x, W_k ~ N(z W_k, σ² I)

Integrating the weights out gives the ``p_pred`` node (:meth:`ConjugateDense.predictive`)::

    y | x ~ N(z R_k, (σ² + z U_k zᵀ) I)          (per item; ``predictive_variance=False``: σ² only)

and :meth:`forward` is the point (posterior-mean) prediction ``z R_k``, so the layer drops into
:class:`~varmem.memories.predictive_coding.composition.PCNet` (whose energy then uses the
predictive variance, per particle).  Learning is closed-form, in float64 (Bayesian linear
regression with features ``Z [K, B, d_in]`` and targets ``X [K, B, d_out]``):

* :meth:`~ConjugateDense.update` (one conjugate step for a chunk of ``B`` items)::

      Σ_c = Z U,  Σ_x = Z U Zᵀ + σ² I_B,   R ← R + Σ_cᵀ Σ_x⁻¹ (X − Z R),   U ← U − Σ_cᵀ Σ_x⁻¹ Σ_c

  so after any sequence of updates ``U = (U_0⁻¹ + ZᵀZ/σ²)⁻¹`` and ``R = U (U_0⁻¹ R_0 + ZᵀX/σ²)``
  over all recorded ``(Z, X)``;
* :meth:`~ConjugateDense.delete` (the exact inverse of an update, a downdate)::

      U_old = U + (Z U)ᵀ (σ² I − Z U Zᵀ)⁻¹ (Z U),   R_old = R − U_old Zᵀ (X − Z R) / σ²

* :meth:`~ConjugateDense.forget` (diffusion towards the prior ``MN(R_init, σ_W² I, I)``)::

      R ← √(1−β) R + (1 − √(1−β)) R_init,   U ← (1−β) U + β σ_W² I

Every method replaces the buffers by new tensors and never modifies one in place (so a reference
to the old buffers is a complete snapshot, which :class:`~varmem.memories.predictive_coding.BayesPCN`
uses to roll a failed write back).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ...validation import check_bool, check_choice, check_positive, check_positive_int, check_unit_interval
from .composition import PC_ACTIVATIONS, gaussian_nll

__all__ = ["ConjugateDense", "gaussian_nll"]


class ConjugateDense(nn.Module):
    """A dense layer with matrix-normal weight posteriors ``MN(R_k, U_k, I)`` (see the module doc).

    Args:
        in_features, out_features: ``d_in`` (ignored by the top variant, where ``d_in = 1``) and ``d_out``.
        sigma: ``σ``, the std of the output node given the weights.
        sigma_prior: ``σ_W``; the prior (and :meth:`forget` target) row covariance is ``σ_W² I``.
        n_particles: ``K``; every buffer has a leading particle dimension.
        activation: a name from :data:`~varmem.memories.predictive_coding.composition.PC_ACTIVATIONS`
            or a callable, applied pre-synaptically (``z = f(x)``).
        top: the top variant: ``z = 1`` whatever the input (a bias ``b ~ N(R, U)`` predicting the
            top node; its ``x`` only gives the batch shape), ``d_in = 1``.
        init_mean: the initial (prior) mean ``R_init [K, d_in, d_out]``; None: ``N(0, 1/d_out)``
            entries drawn from ``generator`` (BayesPCN's ``kaiming_normal_`` initialisation).
        predictive_variance: ``True`` (``p_pred``: the weights integrated out, variance
            ``σ² + z U zᵀ``) or ``False`` (``map``: the posterior-mean weights, variance ``σ²``).

    Buffers (float64 unless ``dtype`` says otherwise): ``R``, ``U``, ``R_init``.

    Example:
        >>> layer = ConjugateDense(3, 2, sigma=0.1, activation="linear")
        >>> z, x = torch.randn(1, 5, 3, dtype=torch.float64), torch.randn(1, 5, 2, dtype=torch.float64)
        >>> _ = layer.update(z, x)
        >>> mean, var = layer.predictive(torch.randn(4, 3, dtype=torch.float64))
        >>> tuple(mean.shape), tuple(var.shape)
        ((1, 4, 2), (1, 4))
    """

    def __init__(self, in_features: int, out_features: int, *, sigma: float, sigma_prior: float = 1.0,
                 n_particles: int = 1, activation: str | Callable[[Tensor], Tensor] = "relu", top: bool = False,
                 init_mean: Tensor | None = None, predictive_variance: bool = True,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.top = check_bool(top, "top")
        d_in = 1 if self.top else check_positive_int(in_features, "in_features")
        d_out = check_positive_int(out_features, "out_features")
        K = check_positive_int(n_particles, "n_particles")
        self.sigma = check_positive(sigma, "sigma")
        self.sigma_prior = check_positive(sigma_prior, "sigma_prior")
        self.predictive_variance = check_bool(predictive_variance, "predictive_variance")
        if isinstance(activation, str):
            check_choice(activation, "activation", sorted(PC_ACTIVATIONS))
            self.f = PC_ACTIVATIONS[activation][0]
        elif callable(activation):
            self.f = activation
        else:
            raise TypeError(f"activation must be a name from {sorted(PC_ACTIVATIONS)} or a callable, "
                            f"got {activation!r}")
        self.activation, self.where = activation, "pre"
        if init_mean is None:
            init_mean = torch.randn(K, d_in, d_out, generator=generator, dtype=torch.float64) / math.sqrt(d_out)
        if not torch.is_tensor(init_mean) or tuple(init_mean.shape) != (K, d_in, d_out):
            raise ValueError(f"init_mean must be a tensor of shape {(K, d_in, d_out)}, got "
                             f"{tuple(init_mean.shape) if torch.is_tensor(init_mean) else type(init_mean).__name__}")
        init_mean = init_mean.to(device=device, dtype=dtype)
        self.register_buffer("R_init", init_mean)
        self.register_buffer("R", init_mean.clone())
        self.register_buffer("U", self.prior_cov(d_in, init_mean).expand(K, d_in, d_in).clone())

    # --- shapes and the prior ------------------------------------------------------------------
    @property
    def n_particles(self) -> int:
        return self.R.shape[0]

    @property
    def in_features(self) -> int:
        return self.R.shape[1]

    @property
    def out_features(self) -> int:
        return self.R.shape[2]

    @property
    def sigma2(self) -> float:
        """``σ²`` (as ``σ·σ``, the same float the fused relaxation uses)."""
        return self.sigma * self.sigma

    def prior_cov(self, d_in: int | None = None, like: Tensor | None = None) -> Tensor:
        """``σ_W² I`` ``[d_in, d_in]`` in the dtype and device of ``like`` (default ``U``)."""
        like = self.U if like is None else like
        d_in = self.in_features if d_in is None else d_in
        return self.sigma_prior**2 * torch.eye(d_in, dtype=like.dtype, device=like.device)

    def extra_repr(self) -> str:
        kind = "top, " if self.top else ""
        return (f"{kind}in_features={self.in_features}, out_features={self.out_features}, "
                f"n_particles={self.n_particles}, sigma={self.sigma}, activation={self.activation!r}")

    # --- prediction ----------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """``z = f(x)`` ``[…, d_in]`` (top variant: ones ``[…, 1]``, from ``x``'s batch shape)."""
        return x.new_ones((*x.shape[:-1], 1)) if self.top else self.f(x)

    def forward(self, x: Tensor) -> Tensor:
        """Point (posterior-mean) prediction ``f(x) R_k`` ``[K, B, d_out]`` for ``x`` ``[B, d_in]``
        or per particle ``[K, B, d_in]`` (computed in ``x``'s dtype)."""
        return self.features(x) @ self.R.to(x.dtype)

    def predictive(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The ``p_pred`` node: ``(mean f(x) R_k [K, B, d_out], variance σ² + f(x) U_k f(x)ᵀ [K, B])``
        (``predictive_variance=False``: the variance is ``σ²``), in ``x``'s dtype."""
        z = self.features(x)
        mean = z @ self.R.to(x.dtype)
        if not self.predictive_variance:
            return mean, torch.full(mean.shape[:-1], self.sigma2, dtype=mean.dtype, device=mean.device)
        var = ((z @ self.U.to(x.dtype)) * z).sum(-1) + self.sigma2
        return mean, var

    def energy(self, y: Tensor, x: Tensor) -> Tensor:
        """``−log p_k(y | x)`` ``[K, B]`` under :meth:`predictive` (all constants kept)."""
        mean, var = self.predictive(x)
        return gaussian_nll(y, mean, var)

    # --- conjugate learning (closed form, float64) ---------------------------------------------
    def _check_data(self, Z: Tensor, X: Tensor) -> None:
        """``Z [K or 1, B, d_in]`` and ``X [K or 1, B, d_out]`` in the posterior's dtype."""
        K, d_in, d_out = self.R.shape
        for name, t, d in (("Z", Z, d_in), ("X", X, d_out)):
            if not torch.is_tensor(t) or t.dim() != 3 or t.shape[0] not in (1, K) or t.shape[-1] != d:
                raise ValueError(f"{name} must be a tensor [{K} or 1, B, {d}], got "
                                 f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
            if t.dtype != self.R.dtype:
                raise ValueError(f"{name} must have the posterior's dtype {self.R.dtype}, got {t.dtype}")
        if Z.shape[1] != X.shape[1]:
            raise ValueError(f"Z and X must have the same number of items, got {Z.shape[1]} and {X.shape[1]}")

    def updated(self, Z: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior ``(R, U)`` after observing ``X [K, B, d_out]`` at features ``Z [K, B, d_in]``
        (see the module doc), without changing the layer.  Raises ``FloatingPointError`` when
        ``Σ_x`` is not positive definite."""
        self._check_data(Z, X)
        R, U = self.R, self.U
        B = Z.shape[-2]
        Sc = Z @ U  # [K, B, d_in]
        Sx = Sc @ Z.transpose(-1, -2) + self.sigma2 * torch.eye(B, dtype=U.dtype, device=U.device)
        chol, info = torch.linalg.cholesky_ex(Sx)
        if bool(info.any()):
            raise FloatingPointError("predictive covariance is not positive definite")
        A = torch.cholesky_solve(Sc, chol)  # Σ_x⁻¹ Σ_c
        R_new = R + A.transpose(-1, -2) @ (X - Z @ R)
        U_new = U - Sc.transpose(-1, -2) @ A
        return R_new, 0.5 * (U_new + U_new.transpose(-1, -2))

    def update(self, Z: Tensor, X: Tensor) -> "ConjugateDense":
        """Conjugate update with ``(Z, X)`` (Bayesian linear regression; see :meth:`updated`)."""
        self.R, self.U = self.updated(Z, X)
        return self

    def downdated(self, Z: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior ``(R, U)`` before the update with ``(Z, X)``, without changing the layer.
        Raises ``ValueError`` when ``σ² I − Z U Zᵀ`` is not positive definite (``(Z, X)`` was not
        observed by this posterior, e.g. it was forgotten or resampled since)."""
        self._check_data(Z, X)
        R, U = self.R, self.U
        m, s2 = Z.shape[-2], self.sigma2
        ZU = Z @ U
        S = s2 * torch.eye(m, dtype=U.dtype, device=U.device) - ZU @ Z.transpose(-1, -2)
        chol, info = torch.linalg.cholesky_ex(S)
        if bool(info.any()):
            raise ValueError("these items cannot be removed from the current posterior (not positive definite: "
                             "was it forgotten or resampled since?)")
        U_old = U + ZU.transpose(-1, -2) @ torch.cholesky_solve(ZU, chol)
        U_old = 0.5 * (U_old + U_old.transpose(-1, -2))
        return R - U_old @ Z.transpose(-1, -2) @ (X - Z @ R) / s2, U_old

    def delete(self, Z: Tensor, X: Tensor) -> "ConjugateDense":
        """Exact inverse of :meth:`update` with the same ``(Z, X)`` (see :meth:`downdated`)."""
        self.R, self.U = self.downdated(Z, X)
        return self

    def forget(self, beta: float) -> "ConjugateDense":
        """Diffuse the posterior towards the prior by ``β ∈ [0, 1]``:
        ``R ← √(1−β) R + (1−√(1−β)) R_init``, ``U ← (1−β) U + β σ_W² I`` (all particles)."""
        b = check_unit_interval(beta, "forget strength beta")
        keep = math.sqrt(1.0 - b)
        self.R = keep * self.R + (1.0 - keep) * self.R_init
        self.U = (1.0 - b) * self.U + b * self.prior_cov()
        return self

    def select_particles(self, index: Tensor) -> "ConjugateDense":
        """Keep the particles ``index`` (``[K']``, repeats allowed: resampling)."""
        self.R, self.U, self.R_init = self.R[index], self.U[index], self.R_init[index]
        return self
