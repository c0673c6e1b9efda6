"""``"latent"`` and ``"spiking"``: the two reads of :class:`~varmem.SpikingLowRankMemory` (a reconstruction).

Both start at ``y₀ = start_scale · sign(cue)`` (0 on unobserved entries; observed entries are not
clamped), integrate ``τ dy/dt = A y`` with Euler steps of ``dt`` seconds, and read the pattern as
``sign(y)`` (0 → +1), the vertex of the box ``[-1, 1]^K`` the state ends at.

* ``"latent"`` (rate / brain-state-in-a-box limit): ``y ← clip(y + (dt/τ) A y, -1, 1)``.  For symmetric
  ``A`` this is projected gradient descent on ``E(y) = -½ yᵀ A y`` with step ``dt/τ``; by the descent lemma
  ``E`` never increases while ``dt/τ ≤ 2 / ‖A‖₂``.  A cue stops (``converged``) at a vertex ``ξ`` that is a
  stable fixed point, ``ξ_k (A ξ)_k > 0`` for all ``k``.
* ``"spiking"``: the framework's Euler simulator in latent coordinates.  Each step: the slow flow
  ``y ← y + (dt/τ) A y``; the voltage noise ``η ← (1 - dt/τ) η + √(2 dt/τ) σ ξ`` (``ξ ~ N(0, 1)`` per neuron,
  the framework's ``sqrt(2 dt λ) σ_v``); voltages ``V = E y + b + η``; spikes: at most one per step, the
  neuron with the largest ``V - 1 ≥ 0`` (the framework's default), or with ``one_spike_per_step=False``
  every neuron with ``V ≥ 1``; each spike of neuron ``i`` moves ``y`` by ``D[:, i]``.  There is no stopping
  rule (``converged`` is None): the network runs ``max_steps`` steps.

Engines for memories with the box geometry (:class:`LatentBox`, :class:`SpikingNetwork`); they live in
the family's package (no other memory has them).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...engine import engine
from ...helpers import make_generator
from ...retrieval import Retrieval
from ...validation import check_bool, check_int, check_non_negative, check_number, check_positive, check_seed

__all__ = ["LatentBox", "SpikingNetwork", "retrieve_latent", "retrieve_spiking", "sign_pattern"]


@runtime_checkable
class LatentBox(Protocol):
    """A latent flow ``τ dy/dt = latent_flow(y)`` on the box ``[-1, 1]^K`` with an energy."""

    tau: float

    def latent_flow(self, y: Tensor) -> Tensor: ...

    def init_latent(self, cue: Tensor, mask: Tensor | None, start_scale: float) -> Tensor: ...

    def compute_energy(self, z: Tensor, cue: Any = None, mask: Any = None) -> Tensor: ...


@runtime_checkable
class SpikingNetwork(LatentBox, Protocol):
    """The framework's geometry: encoders ``E [N, K]``, decoders ``D [K, N]`` and biases ``b = 1 - T [N]``."""

    def encoders(self) -> Tensor: ...

    def decoders(self) -> Tensor: ...

    def bias(self) -> Tensor: ...


def sign_pattern(y: Tensor) -> Tensor:
    """``sign(y)`` with 0 → +1: the vertex a latent state is read as."""
    return torch.where(y >= 0, 1.0, -1.0).to(y.dtype)


def _check_common(memory: Any, dt: Any, max_steps: Any, start_scale: Any, trace: Any, progress: Any) -> tuple:
    dt = check_positive(dt, "option dt")
    if dt > memory.tau:
        raise ValueError(f"option dt = {dt!r} s must be at most tau = {memory.tau!r} s (one Euler step per time "
                         "constant at most)")
    max_steps = check_int(max_steps, "option max_steps", minimum=0)
    start_scale = check_number(start_scale, "option start_scale")
    if not 0 < start_scale <= 1:
        raise ValueError(f"option start_scale must lie in (0, 1] (the start inside the box), got {start_scale!r}")
    return dt, max_steps, start_scale, check_bool(trace, "option trace"), check_bool(progress, "option progress")


@engine("latent", requires=(LatentBox,))
def retrieve_latent(
    memory: LatentBox, cue: Tensor, mask: Tensor | None, *, dt: float = 1e-3, max_steps: int = 1000,
    start_scale: float = 0.5, trace: bool = True, progress: bool = False,
) -> Retrieval:
    """``"latent"``: the projected latent flow (module docstring), vectorised over cues.

    Options:
        dt: Euler step in seconds (``≤ τ``; ``dt/τ`` is the step of projected gradient descent on ``E``).
        max_steps: most steps; a cue stops when it sits at a stable vertex.
        start_scale: ``y₀ = start_scale · sign(cue)`` in ``(0, 1]``.
        trace: record ``E(y)`` at the start and after every step (``trace [T, B]``).
        progress: show a progress bar.
    """
    dt, max_steps, start_scale, trace, progress = _check_common(memory, dt, max_steps, start_scale, trace, progress)
    h = dt / memory.tau
    energies: list[Tensor] = []
    steps = 0
    with torch.no_grad():
        y = memory.init_latent(cue, mask, start_scale)
        if trace:
            energies.append(memory.compute_energy(y))
        for _ in tqdm(range(max_steps + 1), disable=not progress, desc="latent", leave=False):
            flow = memory.latent_flow(y)
            converged = (y.abs() == 1).all(-1) & (y * flow > 0).all(-1)
            if steps == max_steps or bool(converged.all()):
                break
            y = torch.where(converged.unsqueeze(-1), y, (y + h * flow).clamp(-1.0, 1.0))
            steps += 1
            if trace:
                energies.append(memory.compute_energy(y))
    return Retrieval(
        pattern=sign_pattern(y), method="latent", code=y, trace=torch.stack(energies) if trace else None,
        steps=steps, converged=converged, info={"dt": dt, "tau": memory.tau},
    )


@engine("spiking", requires=(SpikingNetwork,))
def retrieve_spiking(
    memory: SpikingNetwork, cue: Tensor, mask: Tensor | None, *, dt: float = 1e-4, max_steps: int = 1000,
    start_scale: float = 0.5, noise: float = 0.0, one_spike_per_step: bool = True, seed: int | None = None,
    trace: bool = True, record: bool = False, progress: bool = False,
) -> Retrieval:
    """``"spiking"``: the low-rank spiking network (module docstring), batched over cues (trials).

    Options:
        dt: Euler step in seconds (the framework's 1e-4; ``≤ τ``).
        max_steps: steps simulated (default 1000 = 0.1 s = 10 τ).
        start_scale: ``y₀ = start_scale · sign(cue)`` in ``(0, 1]`` (the framework's start
            ``V(0) = E y₀ + b``).
        noise: ``σ_v ≥ 0``, the voltage noise (the framework's ``sigma_v``; 0 = deterministic).
        one_spike_per_step: at most one spike per step (the framework's default) or every neuron above
            threshold.
        seed: seed of the noise (None: the global RNG).
        trace: record ``E(y)`` at the start and after every step (``trace [T, B]``).
        record: keep the spikes (``info["spikes"]``, bool ``[T, B, N]``) and the latent states
            (``info["states"]``, ``[T + 1, B, K]``, the start first) of every step.
        progress: show a progress bar.

    ``info``: ``spike_counts [B, N]``, ``rates_hz [B, N]``, ``max_excursion`` (the largest ``E_i·y - T_i``
    after a step's spikes: how far the state left the box; near 0 when the spikes keep up with the flow).  A
    ``RuntimeWarning`` says when it exceeds one spike's jump: the network then lost the box (the slow flow
    outran one spike per step), and the read is no longer the spiking network's.
    """
    dt, max_steps, start_scale, trace, progress = _check_common(memory, dt, max_steps, start_scale, trace, progress)
    noise = check_non_negative(noise, "option noise")
    one_spike_per_step = check_bool(one_spike_per_step, "option one_spike_per_step")
    record = check_bool(record, "option record")
    seed = check_seed(seed, "option seed", allow_none=True)
    h = dt / memory.tau
    encoders, bias = memory.encoders(), memory.bias()
    kicks = memory.decoders().T.contiguous()  # [N, K]: row i is the jump of y when neuron i spikes
    generator = make_generator(seed, cue.device) if noise > 0 else None
    energies: list[Tensor] = []
    with torch.no_grad():
        y = memory.init_latent(cue, mask, start_scale)
        B, N = y.shape[0], encoders.shape[0]
        eta = y.new_zeros(B, N)
        counts = y.new_zeros(B, N)
        rows = torch.arange(B, device=y.device)
        excursion = y.new_full((), -math.inf)
        if trace:
            energies.append(memory.compute_energy(y))
        states, spike_record = [y], []
        for _ in tqdm(range(max_steps), disable=not progress, desc="spiking", leave=False):
            y = y + h * memory.latent_flow(y)
            if noise > 0:
                xi = torch.randn(B, N, generator=generator, device=y.device, dtype=y.dtype)
                eta = (1 - h) * eta + math.sqrt(2 * h) * noise * xi
            over = y @ encoders.T + bias + eta - 1.0  # V - 1
            if one_spike_per_step:
                top, idx = over.max(-1)
                fire = (top >= 0).to(y.dtype)
                y = y + fire.unsqueeze(-1) * kicks[idx]
                counts[rows, idx] += fire
                if record:
                    spikes = torch.zeros_like(over, dtype=torch.bool)
                    spikes[rows, idx] = fire > 0
                    spike_record.append(spikes)
            else:
                spikes = (over >= 0).to(y.dtype)
                y = y + spikes @ kicks
                counts += spikes
                if record:
                    spike_record.append(spikes > 0)
            if record:
                states.append(y)
            excursion = torch.maximum(excursion, (y @ encoders.T + bias - 1.0).max())
            if trace:
                energies.append(memory.compute_energy(y))
    seconds = max_steps * dt
    if float(excursion) > kicks.abs().sum(-1).max():
        warnings.warn(
            f"the spikes did not keep the state in the box (it left by {float(excursion):.3g}, more than one spike "
            f"moves it): with one spike per step they keep up only while spike_size >= (dt/tau) * sum_k |(A y)_k| "
            f"(about K dt/tau = {y.shape[-1] * h:.3g} at a vertex); use a smaller dt or one_spike_per_step=False",
            RuntimeWarning, stacklevel=3)
    result = Retrieval(
        pattern=sign_pattern(y), method="spiking", code=y, trace=torch.stack(energies) if trace else None,
        steps=max_steps, converged=None,
        info={"dt": dt, "tau": memory.tau, "spike_counts": counts,
              "rates_hz": counts / seconds if seconds > 0 else counts, "max_excursion": float(excursion),
              "one_spike_per_step": one_spike_per_step},
    )
    if record:
        result.info["spikes"] = torch.stack(spike_record) if spike_record else counts.new_zeros(0, B, N).bool()
        result.info["states"] = torch.stack(states)
    return result
