"""``"iterative"``: inference by many small steps through the decoder, started at the encoder.

The encoder-started iterative reads of Annabi, Pitti & Quoy (2022) (option ``scheme``); every one
starts at ``μ_enc`` of the cue (option ``init``; a prior-mean or other start is an explicit choice):

* ``"map"`` (default; VAE-BP-GMM on the posterior energy): ``argmax_z log p(x, z | M)`` by
  backpropagation through the decoder, i.e. the ``"map"`` engine (``AutoDelta`` + ``Trace_ELBO``
  + L-BFGS or Adam) from the encoder mean.  Prior weight 1: the mode of the memory's posterior.
* ``"bp"`` (VAE-BP-GMM as released): Adam (lr 0.5, 100 steps) on the code of
  ``mean_obs (x - g(z))² + γ·(-logsumexp_i(-‖z - m_i‖²/2s²))``, γ = 0.005 (:func:`descend_bp`);
  relative to the posterior energy its prior weight is ``λ = γ n_obs / 2σ²``.
* ``"pc"`` (VAE-PC-GMM): a predictive-coding relaxation.  The decoder ``g = f_K ∘ … ∘ f_1``
  gets one value node per stage, ``h_0 = z, h_1, …, h_{K-1}`` (started at the feed-forward pass
  from ``z_0``), and the free energy is a sum of local terms::

      F(z, h) = -log p(z | M)                                  (memory prior, top node)
                + Σ_{k<K} ‖h_k - f_k(h_{k-1})‖² / 2τ²           (hidden prediction errors)
                + Σ_{d obs} (x_d - f_K(h_{K-1})_d)² / 2σ² + ½ n_obs log 2πσ²

  so ``F = E(z; x)`` (the memory's energy) whenever every hidden error is zero.  Every node moves
  down its own gradient, ``v_k ← v_k - α ρ_k ∂F/∂v_k``, with a per-node step ``ρ_k = 1/L_k``, the
  inverse curvature of ``F`` in that node (:func:`pc_step_sizes`; ``L_0 = 1/s² + ‖J_1‖²/τ²``):
  the update of ``h_k`` involves only its own error ``ε_k`` and the error of the stage below it
  (``∂F/∂h_k = ε_k/τ² - J_{k+1}ᵀ ε_{k+1}/τ²``), the predictive-coding locality; for ``z`` the
  prior part is ``(z - Σ_i w_i m_i)/s²``, Annabi's "complexity" error.  With ``K = 1`` (a linear
  decoder) this is gradient descent on ``E(z; x)`` with step ``α/λ_max`` of its Hessian bound.

Needs a :class:`~varmem.memories.latent.protocol.CodeSpace` memory (and ``memory.bandwidth``,
``memory.noise_scale`` for ``"pc"``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...engine import engine
from ...inference import retrieve_map
from ...retrieval import Retrieval
from ...validation import check_bool, check_choice, check_non_negative, check_positive, check_positive_int
from .protocol import CodeSpace

__all__ = ["retrieve_iterative", "relax_pc", "descend_bp", "pc_step_sizes", "BP_GAMMA", "BP_LR"]

BP_GAMMA = 0.005
"""γ, the prior weight of the released VAE-BP-GMM objective (Annabi et al., ``options.py``)."""
BP_LR = 0.5
"""The released VAE-BP-GMM Adam step size."""


def _stage_gain(stage: Any, h: Tensor, rows: Tensor | None, iters: int, seed: int) -> Tensor:
    """``[B]`` estimate of ``‖J‖²`` (squared spectral norm of the Jacobian of ``stage`` at each
    cue's ``h``; rows where ``rows`` is 0 left out) by ``iters`` power iterations on ``JᵀJ``."""
    gen = torch.Generator(device=h.device).manual_seed(seed)
    v = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
    v = v / v.flatten(1).norm(dim=-1).clamp_min(1e-30).view(-1, *[1] * (h.dim() - 1))
    gain = h.new_zeros(h.shape[0])
    with torch.enable_grad():
        x = h.detach().requires_grad_(True)
        y = stage(x)
        # Jv by the double-backward trick: J v = d/du (uᵀ J v) with u a dummy cotangent
        u = torch.zeros_like(y, requires_grad=True)
        (vjp_u,) = torch.autograd.grad(y, x, grad_outputs=u, create_graph=True)
        for _ in range(iters):
            (jv,) = torch.autograd.grad(vjp_u, u, grad_outputs=v, retain_graph=True)
            if rows is not None:
                jv = jv * rows
            (jtjv,) = torch.autograd.grad(y, x, grad_outputs=jv, retain_graph=True)
            gain = jtjv.flatten(1).norm(dim=-1)
            v = (jtjv / gain.clamp_min(1e-30).view(-1, *[1] * (h.dim() - 1))).detach()
    return gain.detach()


def pc_step_sizes(memory: Any, nodes: list[Tensor], mask: Tensor, tau2: float, *, iters: int = 20,
                  seed: int = 0) -> list[Tensor]:
    """Per-node, per-cue step sizes ``ρ_k = 1 / L_k`` (``[B]`` each) of the relaxation: ``L_k``
    bounds the curvature of ``F`` in node ``k`` alone (a block-Jacobi preconditioner)::

        L_0 = 1/s²  + ‖J_1‖² / τ_1²           (memory prior; the error of the stage below)
        L_k = 1/τ²  + ‖J_{k+1}‖² / τ_{k+1}²   (own error; the error of the stage below)

    with ``τ_K = σ`` and ``J_K`` restricted to the observed rows; ``‖J‖²`` is estimated at the
    start by power iteration (``1/s²`` bounds the Hessian of ``-log p(z | M)`` of a kernel density).
    """
    stages = memory.decoder_stages()
    s2, n2 = memory.bandwidth**2, memory.noise_scale**2
    out = []
    for k, h in enumerate(nodes):
        own = 1.0 / s2 if k == 0 else 1.0 / tau2
        last = k + 1 == len(stages)
        gain = _stage_gain(stages[k], h, mask if last else None, iters, seed + k)
        out.append(1.0 / (own + gain / (n2 if last else tau2)))
    return out


def relax_pc(
    memory: Any,
    z0: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    *,
    lr: float = 1.0,
    max_steps: int = 200,
    tol: float = 1e-6,
    hidden_scale: float | None = None,
    step_sizes: str = "local",
    progress: bool = False,
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Predictive-coding relaxation (see the module docstring) from ``z0 [B, L]``.

    Each node ``v_k`` moves by ``v_k ← v_k - α ρ_k ∂F/∂v_k``.  ``step_sizes="local"`` (default):
    ``ρ_k = 1/L_k`` from :func:`pc_step_sizes`, each node's own curvature, so that ``α ≈ 1`` suits
    the code and every hidden layer alike; ``"shared"``: ``ρ_z = s²``, ``ρ_h = τ²`` (one scale for
    all nodes, the node's own precision only; slow when the layers below are stiff).

    Returns ``(z, trace [T + 1, B] of F, steps, converged [B])``; a cue has converged when no
    node moved by more than ``tol`` in the last step.

    Safeguard: a step that raises a cue's ``F`` (or makes it non-finite) is undone and that cue's
    ``α`` halved (backtracking), so ``F`` never increases along the trace whatever ``lr``.
    """
    check_choice(step_sizes, "step_sizes", ("local", "shared"))
    stages = memory.decoder_stages()
    tau2 = float(hidden_scale if hidden_scale is not None else memory.noise_scale) ** 2
    s2, n2 = memory.bandwidth**2, memory.noise_scale**2
    m = torch.ones_like(cue) if mask is None else mask.expand_as(cue).to(cue.dtype)
    const = 0.5 * m.sum(-1) * math.log(2 * math.pi * n2)
    with torch.no_grad():
        nodes = [z0.detach().clone()]
        for f in stages[:-1]:
            nodes.append(f(nodes[-1]))
    if step_sizes == "local":
        rho: list[Tensor | float] = list(pc_step_sizes(memory, nodes, m, tau2))
    else:
        rho = [s2] + [tau2] * (len(nodes) - 1)

    def free_energy(values: list[Tensor]) -> Tensor:
        f_total = memory.latent_energy(values[0]) + const
        for k in range(1, len(values)):
            err = values[k] - stages[k - 1](values[k - 1])
            f_total = f_total + 0.5 * err.pow(2).flatten(1).sum(-1) / tau2
        err_x = m * (cue - stages[-1](values[-1]))
        return f_total + 0.5 * err_x.pow(2).sum(-1) / n2

    slack = 10 * torch.finfo(cue.dtype).eps

    def per_cue(flags: Tensor, like: Tensor) -> Tensor:
        """``[B]`` flags (or step sizes) shaped to broadcast against a node ``[B, ...]``."""
        return flags.view(-1, *[1] * (like.dim() - 1))

    def rose(energy: Tensor, before: Tensor) -> Tensor:
        """Cues whose free energy went up (beyond rounding) or stopped being finite."""
        return ~(energy <= before + slack * (before.abs() + 1))

    def undo(flags: Tensor, old: list[Tensor] | tuple[Tensor, ...], new: list[Tensor] | tuple[Tensor, ...]) -> list:
        return [torch.where(per_cue(flags, n), o, n) for o, n in zip(old, new, strict=True)]

    trace: list[Tensor] = []
    batch = cue.shape[0]
    alpha = torch.full((batch,), float(lr), dtype=cue.dtype, device=cue.device)  # per-cue step size
    accepted: tuple[list[Tensor], Tensor, tuple[Tensor, ...]] | None = None
    converged = torch.zeros(batch, dtype=torch.bool, device=cue.device)
    steps = 0
    for steps in tqdm(range(1, max_steps + 1), desc="pc", disable=not progress, leave=False):  # noqa: B007
        values = [v.detach().requires_grad_(True) for v in nodes]
        energy = free_energy(values)
        grads = torch.autograd.grad(energy.sum(), values)
        energy = energy.detach()
        rejected = torch.zeros_like(converged)
        if accepted is None:
            if not bool(torch.isfinite(energy).all()):
                raise FloatingPointError("the predictive-coding free energy is not finite at the start")
        else:  # a step that raised F (or overflowed) is undone and retried with half the step
            old_nodes, old_energy, old_grads = accepted
            rejected = rose(energy, old_energy)
            if bool(rejected.any()):
                alpha = torch.where(rejected, alpha / 2, alpha)
                nodes = undo(rejected, old_nodes, [v.detach() for v in values])
                grads = tuple(undo(rejected, old_grads, grads))
                energy = torch.where(rejected, old_energy, energy)
        trace.append(energy)
        accepted = ([v.detach() for v in nodes], energy, grads)
        with torch.no_grad():
            moved = torch.zeros(batch, dtype=cue.dtype, device=cue.device)
            for k, g in enumerate(grads):
                delta = per_cue(alpha * rho[k], g) * g
                nodes[k] = accepted[0][k] - delta
                moved = torch.maximum(moved, delta.abs().flatten(1).amax(-1))
            converged = (moved <= tol) & ~rejected
        if bool(converged.all()):
            break
    with torch.enable_grad():
        final = free_energy([v.detach() for v in nodes]).detach()
    if accepted is not None:  # the last step is kept only where it did not raise F either
        worse = rose(final, accepted[1])
        nodes = undo(worse, accepted[0], nodes)
        final = torch.where(worse, accepted[1], final)
        converged = converged & ~worse
    trace.append(final)
    return nodes[0], torch.stack(trace), steps, converged


def descend_bp(
    memory: Any,
    z0: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    *,
    optimizer: str = "adam",
    lr: float = BP_LR,
    max_steps: int = 100,
    tol: float = 0.0,
    gamma: float = BP_GAMMA,
    progress: bool = False,
) -> tuple[Tensor, Tensor, int, Tensor]:
    """VAE-BP-GMM as released by Annabi et al.: gradient steps on the code ``z`` of

        ℓ(z) = (1/n_obs) Σ_{d obs} (x_d - g(z)_d)² + γ · (-log Σ_i exp(-‖z - m_i‖² / 2s²))

    (their ``MSE + γ·mean(-logsumexp)``, γ = 0.005, Adam lr 0.5, 100 steps, from the encoder).
    Up to constants ``ℓ = (2σ²/n_obs) [E_lik(z) + λ E_prior(z)]`` with prior weight
    ``λ = γ n_obs / 2σ²`` (``E_prior = -log p(z | M)``): at ``λ = 1`` it is the posterior energy
    ``E(z; x)`` (scheme ``"map"``); for 784 MNIST pixels and ``σ = 0.2`` the released ``λ`` is 49.

    Returns ``(z, trace [T + 1, B] of ℓ, steps, converged [B])``; Adam stops when no cue's ``ℓ``
    changed by more than ``tol`` (relative); ``"lbfgs"`` minimises ``ℓ`` to high precision.
    """
    n_obs = (cue.new_full(cue.shape[:1], cue.shape[1]) if mask is None
             else mask.expand_as(cue).to(cue.dtype).sum(-1))
    m = None if mask is None else mask.expand_as(cue).to(cue.dtype)

    def objective(z: Tensor) -> Tensor:
        err = cue - memory.decode(z)
        if m is not None:
            err = err * m
        return err.pow(2).sum(-1) / n_obs.clamp_min(1) + gamma * memory.latent_energy(z)

    z = z0.detach().clone().requires_grad_(True)
    trace = [objective(z).detach()]
    converged = torch.zeros(cue.shape[0], dtype=torch.bool, device=cue.device)
    steps = 0
    if optimizer == "lbfgs":
        opt: Any = torch.optim.LBFGS([z], lr=lr, max_iter=max_steps, tolerance_grad=1e-12,
                                     tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = objective(z).sum()
            loss.backward()
            return loss

        opt.step(closure)
        steps = int(opt.state[z]["n_iter"])
        converged[:] = steps < max_steps
    else:
        opt = torch.optim.Adam([z], lr=lr)
        for steps in tqdm(range(1, max_steps + 1), desc="bp", disable=not progress, leave=False):  # noqa: B007
            opt.zero_grad()
            objective(z).sum().backward()
            opt.step()
            with torch.no_grad():
                trace.append(objective(z))
            converged = (trace[-1] - trace[-2]).abs() <= tol * (1 + trace[-2].abs())
            if not bool(torch.isfinite(z).all()):
                raise FloatingPointError(f"bp diverged (non-finite code): lower option lr (now {lr})")
            if tol > 0 and bool(converged.all()):
                break
    with torch.no_grad():
        trace.append(objective(z))
    return z.detach(), torch.stack(trace), steps, converged


@engine("iterative", requires=(CodeSpace,))
def retrieve_iterative(
    memory: CodeSpace,
    cue: Tensor,
    mask: Tensor | None,
    *,
    scheme: str = "map",
    init: str | Tensor = "encoder",
    optimizer: str | None = None,
    lr: float | None = None,
    max_steps: int = 200,
    tol: float | None = None,
    hidden_scale: float | None = None,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Iterative inference of the code behind ``cue``, started at the encoder mean (Annabi et al.).

    ``code`` is the final ``z``, ``pattern = decode(code)``, ``trace`` per cue: the energy
    ``E(z; x)`` per evaluation (``"map"``, ``[T, B]``), the objective ``ℓ`` per step (``"bp"``,
    ``[T + 1, B]``) or the free energy ``F`` per step (``"pc"``, ``[T + 1, B]``).

    Options:
        scheme: ``"map"`` (default; VAE-BP-GMM on the posterior energy: backprop through the
            decoder to the mode of ``p(z | x, M)``, prior weight 1), ``"bp"`` (VAE-BP-GMM as
            released: the objective of :func:`descend_bp`, prior weight ``λ = γ n_obs / 2σ²``) or
            ``"pc"`` (VAE-PC-GMM: the predictive-coding relaxation of :func:`relax_pc`).
        init: start: ``"encoder"`` (default, as in the paper: ``μ_enc`` of the cue, hidden
            entries 0), ``"guide"`` (the trained retrieval guide), ``"prior_mean"`` (the mean of the
            stored codes: no encoder; at ``s = 0.1`` every cue then lands on the code nearest that
            mean) or a ``[B, L]`` tensor (see ``memory.init_latent``).
        optimizer: map: ``"lbfgs"`` (default) or ``"adam"``; bp: ``"adam"`` (default, the paper's)
            or ``"lbfgs"`` (the minimum of ``ℓ``).  Not for pc.
        lr: step size: map L-BFGS 1, Adam 0.01; bp Adam 0.5 (paper), L-BFGS 1; pc the inference
            rate ``α = 1`` (of the per-node steps ``1/L_k``, see :func:`relax_pc`).
        max_steps: most iterations (the paper's BP-GMM: 100).
        tol: map: relative loss change (default 1e-9); bp: relative change of ``ℓ`` (default 0:
            all ``max_steps``); pc: largest node change (default 1e-6).
        hidden_scale: ``τ`` of the hidden prediction errors (pc; default ``memory.noise_scale``).
        return_weights: keep the ``[B, N]`` responsibilities at the result (None = if small).
        progress: show a progress bar.
    """
    check_choice(scheme, "option scheme", ("map", "bp", "pc"))
    if optimizer is not None:
        check_choice(optimizer, "option optimizer", ("lbfgs", "adam"))
    check_positive_int(max_steps, "option max_steps")
    if hidden_scale is not None:
        check_positive(hidden_scale, "option hidden_scale")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    if scheme != "pc" and hidden_scale is not None:
        raise ValueError(f"option hidden_scale applies to scheme='pc' only, not {scheme!r}")
    if scheme == "map":
        result = retrieve_map.fn(memory, cue, mask, optimizer=optimizer or "lbfgs", lr=lr, max_steps=max_steps,
                              tol=1e-9 if tol is None else tol, init=init, return_weights=return_weights,
                              progress=progress)
        result.method = "iterative"
        result.info["scheme"] = "map"
        return result
    z0 = memory.init_latent(cue, mask, init).detach()
    if scheme == "bp":
        optimizer = optimizer or "adam"
        lr = check_non_negative((BP_LR if optimizer == "adam" else 1.0) if lr is None else lr, "option lr")
        tol = check_non_negative(0.0 if tol is None else tol, "option tol")
        z, trace, steps, converged = descend_bp(memory, z0, cue, mask, optimizer=optimizer, lr=lr,
                                                max_steps=max_steps, tol=tol, progress=progress)
    else:
        if optimizer is not None:
            raise ValueError("option optimizer applies to schemes 'map' and 'bp' only (pc takes plain local steps)")
        lr = check_non_negative(1.0 if lr is None else lr, "option lr")
        tol = check_non_negative(1e-6 if tol is None else tol, "option tol")
        z, trace, steps, converged = relax_pc(memory, z0, cue, mask, lr=lr, max_steps=max_steps, tol=tol,
                                              hidden_scale=hidden_scale, progress=progress)
    weights = index = None
    with torch.no_grad():
        if return_weights is not False:
            weights, index = memory.item_weights(z, return_weights)
        pattern = memory.decode(z)
    return Retrieval(pattern=pattern, method="iterative", code=z, weights=weights, weights_at="final_state",
                     index=index, trace=trace, steps=steps, converged=converged, info={"scheme": scheme})
