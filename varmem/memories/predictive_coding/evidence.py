"""The log evidence ``log p(x_obs | M)`` of a cue under a predictive-coding network.

The network is a hierarchical Gaussian model of the activities ``a = (x, h)``, ``x = a_0`` sensory,
``h = (a_1, …, a_{L-1})`` hidden, with ``K`` particles of log-weight ``log w_k`` (``K = 1`` for GPCN)
and per-particle density ``p_k(x, h) = exp(−E_k)`` (:meth:`PCNetwork.particle_energies`, all
Gaussian constants kept)::

    p(x_obs | M) = Σ_k w_k ∫ p_k(x_obs, h) dh,     p_k(x_obs, h) = ∫ p_k(x, h) dx_hidden

* the **unobserved sensory entries** are integrated out exactly: given ``a_1`` the sensory entries
  are independent Gaussians, so they are simply left out of the sensory layer's term;
* the **particle index** is summed exactly (every particle is integrated on its own);
* the **hidden activities** ``h`` (``(L-1)·h_dim`` numbers) are integrated by importance sampling
  with a proposal ``q_k(h)`` per particle and cue::

      p̂(x_obs | M) = (1/S) Σ_s Σ_k w_k p_k(x_obs, h_ks) / q_k(h_ks),   h_ks ~ q_k   (independent over k)

  (the ``s``-th draws of all particles form one weight, so the weights are i.i.d. over ``s`` and
  :func:`varmem.evidence.importance_sampling` gives the estimate and its delta-method standard
  error).  Its expectation is ``p(x_obs | M)``; the log of it is biased low by about ``stderr²/2``.

  Proposals (option ``proposal``):

  - ``"laplace"`` (default): ``N(ĥ_k, scale² · H_k⁻¹)`` with ``ĥ_k`` the mode of ``p_k(x_obs, h)``
    (the read's Adam relaxation from a random start, with the unknown sensory entries free, then
    ``newton_steps`` damped Newton steps on the marginal energy ``E_k(x_obs, h)``) and ``H_k`` its
    Hessian there (autograd; used through its Cholesky factor; one that is not positive definite
    has its eigenvalues replaced by their absolute values, floored at ``1e-10`` times the
    largest).  Where ``p_k(x_obs, h)`` is Gaussian in ``h`` (linear activation, point weights) this
    is the exact posterior: with ``defensive=0`` every weight equals the evidence and
    ``stderr ≈ 0``.
  - ``"isotropic"``: ``N(ĥ_k, (scale · σ_obs)² I)`` around the relaxed state (no Hessian; for
    networks too wide for one).
  - ``"prior"``: ancestral samples of ``p_k(h)`` (weight ``p_k(x_obs | a_1)``): a poor proposal
    whose standard error shows it, kept as the negative control.

  ``proposal_scale="auto"`` (default) widens the Gaussian per cue where that helps: a pilot run
  tries the factors :data:`AUTO_SCALES` and keeps the one whose Gaussian has the largest bound (the
  smallest ``KL(q ‖ posterior)``; the pilot's standard errors are no guide, as a proposal that
  misses mass reports a small one); fresh draws then give the value.  The Laplace Gaussian is too
  narrow when the posterior has heavier tails than its curvature says, as BayesPCN's ``p_pred``
  layers make it (their variance ``σ² + f U fᵀ`` grows with the activities).  Measured on a
  BayesPCN with ``D = 64, h = 32, L = 3, K = 2``, gelu, after 6 writes: scale 1 gave 40.54 ± 0.20
  and 40.28 ± 0.43 (S = 2000) against 42.89 and 41.80 (scale 1.5, S = 50000, stderr 0.02, 0.03),
  and its bound was 5 nats low (37.67, 36.64); "auto" gave 42.90 ± 0.04 and 41.81 ± 0.04
  (S = 4000) and bounds 42.24 and 41.10.

  ``defensive = α`` (default 0.1 for the estimate) draws from ``(1 − α) q_k + α p_k(h)``
  (Hesterberg's defensive mixture): the weights are then at most ``p_k(x_obs | a_1) / α``.
  Without it the weights of a saturating activation (tanh, and the ``p_pred`` layers) are
  heavy-tailed, since the posterior keeps the prior's tails, wider than the Laplace Gaussian:
  measured on a 1-D tanh BayesPCN (K = 3), pure Laplace at scale 1 gave errors of −3.5 and −3.8
  reported standard errors (S = 1000, 20000); with the defaults, 45 estimates (GPCN, BayesPCN
  K = 1, 3; 5 seeds × 3 cues, S = 4000) were within 2.8 standard errors of quadrature.

  The reported standard error is the delta method's estimate from the same draws: where the
  proposal misses mass it is too small and the estimate too low.  A ``RuntimeWarning`` names the
  cues whose effective sample size ``(Σ w)² / Σ w²`` is below ``max(10, S / 100)``; wide networks
  get there easily, and their bound (``estimator="elbo"``) is then the number to trust: on a
  BayesPCN with ``D = 784`` (half observed), ``h = 128, L = 3, K = 2`` (256 hidden activities), the
  effective sample sizes were 1.6–7 of 500 and of 4000 draws, the estimates moved by up to 5 nats
  between the two (836.2, 842.8 → 836.5, 837.4) while the bounds agreed within 0.3 (833.0, 835.3
  → 832.9, 835.6).

  ``relu`` is the hardest case: the posterior's modes sit on the kinks (units at ≈ 0), where the
  Hessian is one side's and Newton cannot converge, and different random starts find different
  modes.  ``restarts = R`` relaxes from ``R`` random starts and mixes their Gaussians equally.  On
  a BayesPCN (``log_prob="map"``, ``h = 4, L = 3, K = 2``, σ = 0.1) the bound of one cue ranged
  from −63.6 to −12.6 over six seeds (R = 1; −37 to −23 with R = 16: the Gaussians fit kinked
  posteriors badly), while the estimates were −11.37 ± 0.22, −10.74 ± 0.17, −11.02 ± 0.07 with
  R = 1 (too low for their stderr) and −10.81 ± 0.06, −10.60 ± 0.07, −10.57 ± 0.10 with R = 16,
  against −10.61 ± 0.10 from 200000 prior draws (S = 4000, 3 seeds).

  Cost: a Hessian costs ``H`` Hessian-vector products and a Cholesky factorisation per cue and
  particle (``newton_steps + 1`` of them), a draw ``O(H²)`` plus one pass through the network;
  ``"auto"`` adds ``1.25 · num_samples`` pilot draws.  For ``D = 784, h = 256, L = 4`` (H = 768),
  2 cues and S = 1000 took 13 s on 2 CPU cores.

With ``estimator="elbo"`` the draws give the negative variational free energy of the proposal
(``q(k) ∝ w_k exp(ELBO_k)``, the best particle distribution for the ``q_k``)::

    log p(x_obs | M) ≥ log Σ_k w_k exp(E_{q_k}[log p_k(x_obs, h) − log q_k(h)])

reported as ``kind="lower_bound"`` (each ``E_{q_k}`` is a Monte Carlo mean with its standard error);
it is tight exactly when ``q_k`` is the posterior.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from ...evidence import Evidence, importance_sampling
from ...helpers import make_generator
from ...validation import check_choice, check_int, check_number, check_positive, check_positive_int, check_seed

__all__ = ["pc_evidence", "PROPOSALS", "AUTO_SCALES"]

PROPOSALS = ("laplace", "isotropic", "prior")
ESTIMATORS = ("importance", "elbo")
AUTO_SCALES = (1.0, 1.25, 1.5, 2.0, 3.0)
"""The ``proposal_scale`` candidates of ``"auto"``."""
_BUDGET = 1 << 22  # numbers per [K, S·B, max(D, H)] block of samples evaluated at once


def pc_evidence(
    net: Any,
    cue: Tensor,
    mask: Tensor | None,
    *,
    num_samples: int = 1000,
    seed: int | None = None,
    proposal: str = "laplace",
    proposal_scale: float | str = "auto",
    defensive: float | None = None,
    estimator: str = "importance",
    newton_steps: int = 3,
    restarts: int = 1,
    max_steps: int | None = None,
    lr: float | None = None,
) -> Evidence:
    """``log p(x_obs | M)`` of every cue of a :class:`PCNetwork` (module docstring), in float64.

    Options:
        num_samples: draws per cue and particle (``≥ 2``).
        seed: seeds the relaxation's random start and the draws (``None``: the global RNG).
        proposal: ``"laplace"``, ``"isotropic"`` or ``"prior"``.
        proposal_scale: multiplies the proposal's standard deviations (Laplace: of ``H⁻¹``;
            isotropic: of ``σ_obs``); ignored by ``"prior"``.  ``"auto"`` (default): for each cue
            the candidate of :data:`AUTO_SCALES` whose proposal has the largest bound (the smallest
            ``KL(q ‖ posterior)``) on a pilot of ``max(50, num_samples // 4)`` draws per candidate;
            the reported value then uses ``num_samples`` fresh draws, so the choice does not bias it.
        defensive: ``α ∈ [0, 1)``, the weight of the prior in the proposal mixture
            ``(1 − α) q_k + α p_k(h)`` (default 0.1 for ``estimator="importance"``, 0 for ``"elbo"``).
        estimator: ``"importance"`` (kind ``"estimate"``) or ``"elbo"`` (kind ``"lower_bound"``).
        newton_steps: damped Newton steps that refine the mode of the Laplace proposal.
        restarts: ``R`` relaxations from independent random starts; the proposal is the equal
            mixture of their ``R`` Gaussians (for posteriors with several modes, e.g. relu).
        max_steps, lr: the Adam relaxation to the mode (default: the read's, ``T_infer`` and
            ``activation_lr``).
    """
    num_samples = check_int(num_samples, "option num_samples", minimum=2)
    seed = check_seed(seed, "option seed", allow_none=True)
    check_choice(proposal, "option proposal", PROPOSALS)
    auto = isinstance(proposal_scale, str) and proposal_scale == "auto"
    scale = 1.0 if auto else check_positive(proposal_scale, "option proposal_scale (a number or 'auto')")
    check_choice(estimator, "option estimator", ESTIMATORS)
    alpha = (0.1 if estimator == "importance" else 0.0) if defensive is None else check_number(
        defensive, "option defensive")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"option defensive must lie in [0, 1), got {defensive!r}")
    alpha = 1.0 if proposal == "prior" else alpha
    newton_steps = check_int(newton_steps, "option newton_steps", minimum=0)
    restarts = check_int(restarts, "option restarts", minimum=1)
    defaults = net.default_options("pc")
    steps = check_positive_int(defaults["max_steps"] if max_steps is None else max_steps, "option max_steps")
    lr = check_positive(defaults["lr"] if lr is None else lr, "option lr")
    stop = {"tol": defaults["tol"], "rtol": defaults.get("rtol", 0.0)}

    f64 = torch.float64
    generator = make_generator(seed, cue.device)
    layers = net.layer_stats(f64)
    log_w = net.particle_log_weights(f64)
    K, (B, D) = log_w.shape[0], cue.shape
    H, h = (net.n_layers - 1) * net.h_dim, net.h_dim
    x = cue.to(f64)
    m = None if mask is None else mask.expand(B, D)
    n_obs = x.new_full((B,), float(D)) if m is None else m.sum(-1).to(f64)

    def energy(hidden: Tensor, xs: Tensor, ms: Tensor | None) -> Tensor:
        """``E_k(x_obs, h)`` ``[K, N]`` for ``hidden [K, N, H]``, ``xs [N, D]``."""
        acts = [xs.unsqueeze(0)] + list(hidden.split(h, -1))
        return net.particle_energies(acts, layers, sensory_mask=ms)[0]

    centre = chol = diag = None  # R Gaussians per particle and cue: [R, K, B, H], L [R, K, B, H, H]
    if proposal != "prior":  # the R relaxations run side by side as R·B cues
        xr, mr = x.repeat(restarts, 1), None if m is None else m.repeat(restarts, 1)
        centre = _relaxed_mode(net, xr, mr, layers, K, generator, steps=steps, lr=lr, **stop)  # [K, R·B, H]
    if proposal == "laplace":
        for _ in range(newton_steps):
            g, hess = _hessian(energy, centre, xr, mr)
            centre = _newton_step(energy, centre, xr, mr, g, _precision_factor(hess))
        chol = _precision_factor(_hessian(energy, centre, xr, mr)[1])  # precision L Lᵀ
        chol = chol.view(K, restarts, B, H, H).transpose(0, 1)
        half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [R, K, B]
    elif proposal == "isotropic":
        diag = torch.full((restarts, K, B, H), 1.0 / net.sigma_obs, dtype=f64, device=x.device)  # a diagonal L
        half_log_det = diag.log().sum(-1)
    if centre is not None:
        centre = centre.view(K, restarts, B, H).transpose(0, 1)

    def log_weights(n: int, scale_b: Tensor) -> Tensor:
        """``log p_k(x_obs, h) − log q_k(h)`` ``[n, K, B]`` for ``n`` draws per cue and particle,
        the Gaussians ``N(ĥ_r, c_b² (L_r L_rᵀ)⁻¹)`` with ``c_b = scale_b [B]``, equally mixed."""
        c = scale_b.view(1, B, 1)
        chunk = max(1, min(n, _BUDGET // max(1, restarts * K * B * max(D, H))))
        out = []
        for start in range(0, n, chunk):
            s = min(chunk, n - start)
            xs, ms = x.repeat(s, 1), None if m is None else m.repeat(s, 1)
            draws = []
            if alpha > 0:  # ancestral draws of p_k(h), [s, K, B, H]
                draws.append(_sample_prior(net, layers, s * B, generator).reshape(K, s, B, H).transpose(0, 1))
            if alpha < 1:  # Gaussian draws around a mode: ĥ_r + c L_r⁻ᵀ ε
                eps = torch.randn(s, K, B, H, generator=generator, dtype=f64, device=x.device)
                comp = None
                if restarts > 1:
                    comp = torch.randint(restarts, (s, K, B, 1), generator=generator, device=x.device)
                gauss = None
                for r in range(restarts):
                    if chol is None:
                        u = eps / diag[r]
                    else:
                        u = torch.linalg.solve_triangular(chol[r].transpose(-1, -2), eps.permute(1, 2, 3, 0),
                                                          upper=True).permute(3, 0, 1, 2)
                    u = centre[r] + c * u
                    gauss = u if comp is None or gauss is None else torch.where(comp == r, u, gauss)
                draws.append(gauss)
            hid = draws[0]
            if len(draws) == 2:
                pick = torch.rand(s, K, B, 1, generator=generator, dtype=f64, device=x.device) < alpha
                hid = torch.where(pick, draws[0], draws[1])
            hidden = hid.transpose(0, 1).reshape(K, s * B, H)
            log_q = None
            if alpha > 0:  # log p_k(h): the energy with no sensory entry observed
                no_entry = torch.zeros_like(xs, dtype=torch.bool)
                log_q = -energy(hidden, xs, no_entry).reshape(K, s, B).transpose(0, 1) + math.log(alpha)
            if alpha < 1:  # y_r = L_rᵀ (h − ĥ_r) / c ~ N(0, I) under component r
                parts = []
                for r in range(restarts):
                    d = (hid - centre[r]) / c
                    y = d * diag[r] if chol is None else (
                        chol[r].transpose(-1, -2) @ d.permute(1, 2, 3, 0)).permute(3, 0, 1, 2)
                    parts.append(-0.5 * y.pow(2).sum(-1) + half_log_det[r])
                log_g = torch.stack(parts).logsumexp(0) - math.log(restarts)
                log_g = log_g - H * scale_b.log() - 0.5 * H * math.log(2 * math.pi)
                log_g = log_g + math.log1p(-alpha)
                log_q = log_g if log_q is None else torch.logaddexp(log_q, log_g)
            out.append(-energy(hidden, xs, ms).reshape(K, s, B).transpose(0, 1) - log_q)
        return torch.cat(out)

    def bound(lw: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """``(log Σ_k w_k exp(ELBO_k), its standard error)`` ``[B]`` from ``lw [n, K, B]``."""
        elbo_k, se_k = lw.mean(0), lw.std(0) / math.sqrt(n)  # [K, B]
        joint = log_w.unsqueeze(-1) + elbo_k
        value = joint.logsumexp(0)
        rho = (joint - value).exp()  # ∂ value / ∂ ELBO_k (delta method for the standard error)
        return value, (rho.pow(2) * se_k.pow(2)).sum(0).sqrt()

    scale_b = x.new_full((B,), scale)
    method = f"{estimator}[{proposal}"
    with torch.no_grad():
        if auto and centre is not None:  # the width whose Gaussian has the largest bound on a pilot
            pilot = max(50, num_samples // 4)
            score = torch.stack([bound(log_weights(pilot, x.new_full((B,), c)), pilot)[0] for c in AUTO_SCALES])
            score = torch.where(torch.isfinite(score), score, torch.full_like(score, -math.inf))
            scale_b = x.new_tensor(AUTO_SCALES)[score.argmax(0)]
            method += ", scale=auto"
        elif centre is not None:
            method += f", scale={scale:g}"
        method += f", defensive={alpha:g}]" if 0 < alpha < 1 else "]"
        lw = log_weights(num_samples, scale_b)
    if estimator == "elbo":
        value, stderr = bound(lw, num_samples)
        return Evidence(log_evidence=value, kind="lower_bound", method=method, stderr=stderr, n_observed=n_obs,
                        num_samples=num_samples)
    combined = (log_w.view(1, K, 1) + lw).logsumexp(1)  # [S, B]: Σ_k w_k p_k / q_k per draw
    result = importance_sampling(combined, n_obs, method=method, kind="estimate")
    ess = result.ess  # [B], (Σ w)² / Σ w²
    poor = (ess < max(10.0, 0.01 * num_samples)).nonzero().flatten().tolist()
    if poor:
        warnings.warn(
            f"{type(net).__name__}.evidence: importance sampling is degenerate for cues {poor[:10]} (effective "
            f"sample size {[round(float(ess[b]), 1) for b in poor[:10]]} of {num_samples}): the estimate is likely "
            "too low and its stderr too small; use more samples, or estimator='elbo' for a bound",
            RuntimeWarning, stacklevel=5)
    return result


def _relaxed_mode(net: Any, x: Tensor, m: Tensor | None, layers: list, K: int, generator: Any,
                  **relax: Any) -> Tensor:
    """Per particle the relaxed hidden state ``[K, B, H]``: the read's Adam relaxation of
    ``E_k`` from a random start, the unknown sensory entries free (its hidden part is the mode of
    ``p_k(x_obs, h)`` for point weights; a good start otherwise)."""
    B = x.shape[0]
    acts = [x.unsqueeze(0).expand(K, *x.shape).clone()] + net.init_hidden(B, K, generator, x.dtype)
    with torch.no_grad():
        acts, _, _, _ = net.relax(acts, None if m is None else ~m, individual=True, layers=layers, **relax)
    return torch.cat(acts[1:], -1)


def _hessian(energy: Any, hid: Tensor, x: Tensor, m: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(∇E [K, B, H], ∇²E [K, B, H, H])`` of every ``E_k(x_b, ·)`` at ``hid`` (autograd; one
    Hessian-vector product per direction, applied to all blocks at once as they are independent)."""
    K, B, H = hid.shape

    def total(t: Tensor) -> Tensor:
        return energy(t, x, m).sum()

    grad = torch.func.grad(total)

    def column(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (hid,), (v.expand_as(hid),))[1]

    chunk = max(1, min(H, _BUDGET // max(1, K * B * max(x.shape[1], H))))
    cols = torch.func.vmap(column, chunk_size=chunk)(torch.eye(H, dtype=hid.dtype, device=hid.device))
    hess = cols.permute(1, 2, 3, 0)  # [K, B, H, H]
    return grad(hid).detach(), (0.5 * (hess + hess.transpose(-1, -2))).detach()


def _precision_factor(hess: Tensor) -> Tensor:
    """Lower Cholesky factor ``L`` ``[K, B, H, H]`` of the Hessians, those that are not positive
    definite first repaired: eigenvalues replaced by their absolute values, floored at ``1e-10``
    times the largest."""
    L, info = torch.linalg.cholesky_ex(hess)
    bad = info != 0
    if bool(bad.any()):
        lam, V = torch.linalg.eigh(hess[bad])
        lam = lam.abs()
        lam = lam.clamp_min(1e-10 * lam.amax(-1, keepdim=True).clamp_min(1e-300))
        fixed = (V * lam.unsqueeze(-2)) @ V.transpose(-1, -2)
        L[bad] = torch.linalg.cholesky(0.5 * (fixed + fixed.transpose(-1, -2)))
    return L


def _newton_step(energy: Any, hid: Tensor, x: Tensor, m: Tensor | None, g: Tensor, L: Tensor) -> Tensor:
    """One damped Newton step ``−(L Lᵀ)⁻¹ ∇E`` per ``(k, b)``: of the step sizes ``1, ½, …, 2⁻¹⁰``
    and 0, the one with the lowest energy (the energy never increases)."""
    step = -torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
    with torch.no_grad():
        sizes = [0.0] + [0.5**i for i in range(11)]
        e = torch.stack([energy(hid + t * step, x, m) for t in sizes])  # [T, K, B]
        e = torch.where(torch.isfinite(e), e, torch.full_like(e, math.inf))
        best = torch.tensor(sizes, dtype=hid.dtype, device=hid.device)[e.argmin(0)]  # [K, B]
    return hid + best.unsqueeze(-1) * step


def _sample_prior(net: Any, layers: list, n: int, generator: Any) -> Tensor:
    """``n`` ancestral draws of the hidden activities per particle, ``[K, n, H]`` (top layer first)."""
    R_top, U_top = layers[-1]
    K = R_top.shape[0]
    a = None
    out = []
    for i in range(net.n_layers - 1, 0, -1):
        R, U = layers[i]
        inp = torch.ones(K, n, 1, dtype=R.dtype, device=R.device) if a is None else net._f(a)
        mean = inp @ R
        var = net.layer_sigma2(i) + (0.0 if U is None else ((inp @ U) * inp).sum(-1, keepdim=True))
        noise = torch.randn(mean.shape, generator=generator, dtype=R.dtype, device=R.device)
        a = mean + noise * torch.as_tensor(var, dtype=R.dtype, device=R.device).sqrt()
        out.append(a)
    return torch.cat(out[::-1], -1)
