"""``"iterative"``: inference by many small steps through the decoder.

Two schemes (option ``scheme``):

* ``"map"`` (BP-GMM): ``argmax_z log p(x, z | M)`` by gradient steps through the decoder; this
  is the ``"map"`` engine (``AutoDelta`` + ``Trace_ELBO`` + L-BFGS or Adam) from another start.
* ``"pc"`` (VAE-PC-GMM): a predictive-coding relaxation.  The decoder ``g = f_K ∘ … ∘ f_1``
  gets one value node per stage, ``h_0 = z, h_1, …, h_{K-1}`` (started at the feed-forward pass
  from ``z_0``), and the free energy is a sum of local terms::

      F(z, h) = -log p(z | M)                                  (memory prior, top node)
                + Σ_{k<K} ‖h_k - f_k(h_{k-1})‖² / 2τ²           (hidden prediction errors)
                + Σ_{d obs} (x_d - f_K(h_{K-1})_d)² / 2σ² + ½ n_obs log 2πσ²

  so ``F = E(z; x)`` (the memory's energy) whenever every hidden error is zero.  Every node moves
  down its own gradient, ``v ← v - α ρ_v ∂F/∂v`` with ``ρ_z = s²`` and ``ρ_h = τ²``: the update of
  ``h_k`` involves only its own error ``ε_k`` and the error of the stage below it
  (``∂F/∂h_k = ε_k/τ² - J_{k+1}ᵀ ε_{k+1}/τ²``), the predictive-coding locality; for ``z`` the
  prior part is ``α (z - Σ_i w_i m_i)``, Annabi's "complexity" error.  With ``K = 1`` (a linear
  decoder) this is preconditioned gradient descent on ``E(z; x)``.

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

__all__ = ["retrieve_iterative", "relax_pc"]


def relax_pc(
    memory: Any,
    z0: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    *,
    lr: float = 0.1,
    max_steps: int = 200,
    tol: float = 1e-6,
    hidden_scale: float | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Predictive-coding relaxation (see the module docstring) from ``z0 [B, L]``.

    Returns ``(z, trace [T + 1, B] of F, steps, converged [B])``; a cue has converged when no
    node moved by more than ``tol`` in the last step.

    Safeguard: a step that raises a cue's ``F`` (or makes it non-finite) is undone and that cue's
    step size halved (backtracking), so ``F`` never increases along the trace whatever ``lr``;
    with a step size below ``2/L`` no step is ever undone and this is the plain relaxation.
    """
    stages = memory.decoder_stages()
    tau2 = float(hidden_scale if hidden_scale is not None else memory.noise_scale) ** 2
    s2, n2 = memory.bandwidth**2, memory.noise_scale**2
    m = torch.ones_like(cue) if mask is None else mask.expand_as(cue).to(cue.dtype)
    const = 0.5 * m.sum(-1) * math.log(2 * math.pi * n2)
    with torch.no_grad():
        nodes = [z0.detach().clone()]
        for f in stages[:-1]:
            nodes.append(f(nodes[-1]))
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


@engine("iterative", requires=(CodeSpace,))
def retrieve_iterative(
    memory: CodeSpace,
    cue: Tensor,
    mask: Tensor | None,
    *,
    scheme: str = "map",
    init: str | Tensor = "prior_mean",
    optimizer: str | None = None,
    lr: float | None = None,
    max_steps: int = 200,
    tol: float | None = None,
    hidden_scale: float | None = None,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Iterative inference of the code behind ``cue`` (no amortization unless ``init`` says so).

    ``code`` is the final ``z`` (a local mode of ``log p(x, z | M)`` for ``"map"``, the relaxed top
    node for ``"pc"``), ``pattern = decode(code)``, ``trace`` the loss per evaluation (``"map"``,
    ``[T, B]``, each cue's energy per evaluation) or the free energy per step (``"pc"``, ``[T + 1, B]``).

    Options:
        scheme: ``"map"`` (BP-GMM) or ``"pc"`` (predictive-coding relaxation).
        init: start: ``"prior_mean"`` (default: the mean of the stored codes, no encoder),
            ``"encoder"``, ``"guide"`` or a ``[B, L]`` tensor (see ``memory.init_latent``).
        optimizer: ``"lbfgs"`` (default) or ``"adam"`` (``"map"`` only).
        lr: step size: L-BFGS 1, Adam 0.01 (map); the inference rate ``α = 0.1`` (pc).
        max_steps: most iterations.
        tol: map: relative loss change (default 1e-9); pc: largest node change (default 1e-6).
        hidden_scale: ``τ`` of the hidden prediction errors (pc; default ``memory.noise_scale``).
        return_weights: keep the ``[B, N]`` responsibilities at the result (None = if small).
        progress: show a progress bar.
    """
    check_choice(scheme, "option scheme", ("map", "pc"))
    if optimizer is not None:
        check_choice(optimizer, "option optimizer", ("lbfgs", "adam"))
    check_positive_int(max_steps, "option max_steps")
    if hidden_scale is not None:
        check_positive(hidden_scale, "option hidden_scale")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    if scheme == "map":
        if hidden_scale is not None:
            raise ValueError("option hidden_scale applies to scheme='pc' only")
        result = retrieve_map.fn(memory, cue, mask, optimizer=optimizer or "lbfgs", lr=lr, max_steps=max_steps,
                              tol=1e-9 if tol is None else tol, init=init, return_weights=return_weights,
                              progress=progress)
        result.method = "iterative"
        result.info["scheme"] = "map"
        return result
    if optimizer is not None:
        raise ValueError("option optimizer applies to scheme='map' only (pc takes plain local steps)")
    lr = check_non_negative(0.1 if lr is None else lr, "option lr")
    tol = check_non_negative(1e-6 if tol is None else tol, "option tol")
    z0 = memory.init_latent(cue, mask, init).detach()
    z, trace, steps, converged = relax_pc(memory, z0, cue, mask, lr=lr, max_steps=max_steps, tol=tol,
                                          hidden_scale=hidden_scale, progress=progress)
    weights = index = None
    with torch.no_grad():
        if return_weights is not False:
            weights, index = memory.item_weights(z, return_weights)
        pattern = memory.decode(z)
    return Retrieval(pattern=pattern, method="iterative", code=z, weights=weights, weights_at="final_state",
                     index=index, trace=trace, steps=steps, converged=converged, info={"scheme": "pc"})
