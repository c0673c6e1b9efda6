"""Firing-rate associative memory with an excitatory/inhibitory knob (Betteti, Baggio, Bullo, Zampieri).

"Firing Rate Models as Associative Memory: Excitatory-Inhibitory Balance for Robust Retrieval"
(arXiv 2411.07388; Neural Computation 2025 as "... Synaptic Design for Robust Retrieval").  The
formulas below follow the authors' official code (``sim1bet/FiringRate``), re-implemented; the
stability conditions are our reading of that code, not the paper's theorem statements.

Rates ``x ∈ [0, 1]^N`` follow (Euler, or Euler–Maruyama with noise ``σ``)::

    dx/dt = -x + Φ(W x + u)  (+ σ dB)

with a shifted logistic ``Φ(h) = 1 / (1 + exp(-4ρ (h - x* - 1/(2ρ))))`` (slope ``ρ`` at its
midpoint ``x* + 1/(2ρ)``) or a rectified tanh ``Φ(h) = max(0, tanh(ρ (h - x*)))``.

**Storage.**  Binary memories ``ξ^μ ∈ {0, 1}^N`` (items in ``[0, 1]`` are binarised at ½) of coding
level ``q`` are stored as the *re-scaled* states ``x̄^μ = Φ(a) 1 + (Φ(b) - Φ(a)) ξ^μ``, equilibria
of the dynamics because the synaptic matrix (covariance rule plus a uniform term)::

    W = α/N (Ξ - β)(Ξ - β)ᵀ + γ/N 11ᵀ             (Ξ = [ξ^1 … ξ^P], N × P)

maps them to the target fields ``W x̄^ν = a 1 + (b - a) ξ^ν`` (up to cross-talk), with
``Δ = Φ(b) - Φ(a)`` and ``m̄ = (1 - q) Φ(a) + q Φ(b)`` (the mean rate of a stored state)::

    independent memories:  α = (b - a) / (q (1 - q) Δ),   β = q,   γ = ((1 - q) a + q b) / m̄
    correlation r:         α = (b - a) / (q (1 - r) Δ),   β = q ((1 - r) Φ(a) + r Φ(b)) / m̄,
                           γ = ((1 - β) a + β b) / m̄

(``r = P(ξ^ν_i = 1 | ξ^μ_i = 1)`` for two distinct memories; ``r = q`` gives the independent
form).  The sign of ``γ`` is the excitatory/inhibitory balance: the paper's ``a = -0.3, b = 0.95``
gives ``γ < 0`` (global inhibition), ``a = 0.1`` gives ``γ > 0``.  ``W`` is kept factored, so a
write and every matrix-vector product cost ``O(NP)``.

**Energy.**  For symmetric ``W`` (this one is),

    E(x) = -½ xᵀ W x - uᵀ x + Σ_i F(x_i),          F(x) = ∫_0^x Φ⁻¹(s) ds,

is a Lyapunov function of the deterministic dynamics on ``[0, 1]^N``:
``dE/dt = Σ_i (Φ⁻¹(x_i) - h_i)(Φ(h_i) - x_i) ≤ 0`` (``h = W x + u``; ``Φ`` increasing), zero only at
equilibria.  In closed form, with ``c = x* + 1/(2ρ)``::

    logistic:  F(x) = c x + (x log x + (1 - x) log(1 - x)) / (4ρ)
    tanh:      F(x) = x* x + ((1 + x) log(1 + x) + (1 - x) log(1 - x)) / (2ρ)

Its Gibbs density ``p(x | M) ∝ exp(-E(x) / T)`` on ``(0, 1)^N`` (temperature ``T``) is the Pyro
model (:meth:`FiringRateMemory.model`: an improper flat site on the unit box scored by
``pyro.factor``), read with the generic ``"map"`` and ``"nuts"`` engines on small ``N``.  Outside the
box (where the model has no mass: Pyro moves in the box's unconstrained coordinates) the energy is
extended continuously by ``F(clip(x)) + ½ dist(x, [0, 1])²``, so that it is finite everywhere.

**Reading** (``method="rate_dynamics"``, the default) integrates the dynamics from the cue for all
cues at once with a fixed-step Euler(–Maruyama) scheme, the paper's own integrator (``dt = 0.01``
on ``[0, 10]``).  Why not ``torchdiffeq``: the noisy dynamics needs a fixed-step SDE scheme anyway,
the paper's numbers are defined by this scheme, the flow near a memory is contracting at rate ≈ 1
(``λ_max(J) ≈ -1``) and not stiff, and the cost is known in advance (``t_max / dt`` products with
``W``) on CPU and GPU alike; the scheme is tested to converge at order 1 against SciPy's adaptive
solver.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..domains import UNIT
from ..engine import engine
from ..helpers import clamp, make_generator, start_state
from ..memory import Memory
from ..retrieval import Retrieval
from ..validation import (
    MAX_ABS_VALUE,
    as_state,
    check_bool,
    check_choice,
    check_finite,
    check_non_negative,
    check_positive,
    check_seed,
    check_values,
)

__all__ = [
    "FiringRateMemory",
    "ACTIVATIONS",
    "activation",
    "activation_derivative",
    "activation_inverse",
    "activation_integral",
    "synaptic_parameters",
    "stability_conditions",
    "retrieve_rate_dynamics",
    "RateDynamics",
]

ACTIVATIONS = ("logistic", "tanh")
"""``"logistic"``: the shifted logistic; ``"tanh"``: the rectified tanh (module docstring)."""

MAX_STEPS = 10**6
"""Most Euler steps one read may take (``t_max / dt``)."""

START_MARGIN = 1e-6
"""Start states are clipped into ``[ε, 1 - ε]``: Pyro's MAP and NUTS move in the logit of the rates."""


# --- the activation and its inverse -------------------------------------------------------------------
def activation(h: Tensor, kind: str, gain: Any, threshold: Any) -> Tensor:
    """``Φ(h)`` (module docstring); ``gain`` ``ρ`` and ``threshold`` ``x*`` may be tensors (grids)."""
    if kind == "logistic":
        return torch.sigmoid(4 * gain * (h - threshold) - 2)
    return torch.tanh(gain * (h - threshold)).clamp_min(0)


activation_fn = activation  # the memory's constructor argument ``activation`` shadows the function there


def activation_derivative(h: Tensor, kind: str, gain: Any, threshold: Any) -> Tensor:
    """``Φ'(h)``: ``4ρ Φ(1 - Φ)`` (logistic, at most ``ρ``) or ``ρ (1 - tanh²)`` from ``x*`` on, else 0
    (at the kink ``h = x*`` the right derivative ``ρ``, as the official code takes it)."""
    if kind == "logistic":
        s = torch.sigmoid(4 * gain * (h - threshold) - 2)
        return 4 * gain * s * (1 - s)
    t = torch.tanh(gain * (h - threshold))
    return torch.where(h >= threshold, gain * (1 - t * t), torch.zeros_like(t))


def activation_inverse(x: Tensor, kind: str, gain: float, threshold: float) -> Tensor:
    """``Φ⁻¹(x)`` for rates in ``(0, 1)``: ``x* + 1/(2ρ) + logit(x)/(4ρ)`` or ``x* + atanh(x)/ρ``
    (``x*`` at ``x = 0``, the smallest field that keeps a rectified unit silent)."""
    if kind == "logistic":
        return threshold + 1 / (2 * gain) + torch.logit(x) / (4 * gain)
    return threshold + torch.atanh(x) / gain


def activation_integral(x: Tensor, kind: str, gain: float, threshold: float) -> Tensor:
    """``F(x) = ∫_0^x Φ⁻¹(s) ds`` elementwise for ``x ∈ [0, 1]`` (closed forms in the module
    docstring; finite on the closed interval, ``0 log 0 = 0``)."""
    tiny = torch.finfo(x.dtype).tiny

    def xlogx(y: Tensor) -> Tensor:
        return y * y.clamp_min(tiny).log()

    if kind == "logistic":
        c = threshold + 1 / (2 * gain)
        return c * x + (xlogx(x) + xlogx(1 - x)) / (4 * gain)
    return threshold * x + (xlogx(1 + x) + xlogx(1 - x)) / (2 * gain)


def _extended_integral(x: Tensor, kind: str, gain: float, threshold: float) -> Tensor:
    """``F(clip(x)) + ½ dist(x, [0, 1])²``: ``F`` on the box, continued finitely outside it, with
    gradients that stay finite (the inside branch never sees an outside value)."""
    inside = (x > 0) & (x < 1)
    safe = torch.where(inside, x, torch.full_like(x, 0.5))
    edge = x.detach().clamp(0, 1)
    at_edge = activation_integral(edge, kind, gain, threshold)
    outside = at_edge + 0.5 * (x - edge) ** 2
    return torch.where(inside, activation_integral(safe, kind, gain, threshold), outside)


def synaptic_parameters(
    a: float, b: float, phi_a: float, phi_b: float, q: float, correlation: float | None = None,
) -> tuple[float, float, float]:
    """``(α, β, γ)`` of ``W`` from the target fields ``a < b``, their rates ``Φ(a) < Φ(b)``, the
    coding level ``q`` and (correlated form) ``r``; ``correlation=None`` is the independent form
    ``r = q`` (module docstring).  ``W x̄^ν = a 1 + (b - a) ξ^ν`` holds exactly when the centred
    overlaps ``(ξ^μ - β)ᵀ x̄^ν`` vanish for ``μ ≠ ν`` and ``|ξ^ν| = qN``."""
    r = q if correlation is None else correlation
    delta = phi_b - phi_a
    mean_rate = (1 - q) * phi_a + q * phi_b
    alpha = (b - a) / (q * (1 - r) * delta)
    beta = q * ((1 - r) * phi_a + r * phi_b) / mean_rate
    gamma = ((1 - beta) * a + beta * b) / mean_rate
    return alpha, beta, gamma


def stability_conditions(
    a: float, b: float, q: float, kind: str, gain: Tensor | float, threshold: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """``(sufficient, unstable)`` bool tensors (broadcast over ``gain`` / ``threshold`` grids) for the
    independent form, as the official ``PhaseDiagram.py`` codes them (our reading; the paper's
    theorem wording is not verified).  With ``α' = (b - a)/(Φ(b) - Φ(a)) = α q (1 - q)``,
    ``η = max(Φ'(a), Φ'(b))``:

    * sufficient for local stability of every memory: ``η · max(α', γ) < 1``;
    * instability: ``max(q(γ - α')(Φ'(b) - Φ'(a)) - (1 - Φ'(b) α')(1 - Φ'(a) γ),
      q Φ'(b) ((1 - q) α' + q γ) - 1) > 0``.
    """
    gain = torch.as_tensor(gain, dtype=torch.float64)
    threshold = torch.as_tensor(threshold, dtype=torch.float64)
    fa, fb = (torch.full_like(gain + threshold, v) for v in (a, b))
    phi_a, phi_b = activation(fa, kind, gain, threshold), activation(fb, kind, gain, threshold)
    da, db = activation_derivative(fa, kind, gain, threshold), activation_derivative(fb, kind, gain, threshold)
    alpha = (b - a) / (phi_b - phi_a)
    gamma = (q * b + (1 - q) * a) / (q * phi_b + (1 - q) * phi_a)
    sufficient = torch.maximum(da, db) * torch.maximum(alpha, gamma) < 1
    first = q * (gamma - alpha) * (db - da) - (1 - db * alpha) * (1 - da * gamma)
    second = q * db * ((1 - q) * alpha + q * gamma) - 1
    return sufficient, torch.maximum(first, second) > 0


# --- the memory ---------------------------------------------------------------------------------------
@runtime_checkable
class RateDynamics(Protocol):
    """What the ``"rate_dynamics"`` engine needs: the recurrent field ``W x`` (``_field``), the
    activation ``Φ`` (``_phi``), the energy from the field, an input check, start states, the
    decoding of rates and the overlaps of rates with the stored patterns (the underscored members
    take validated tensors: they run at every Euler step)."""

    def _field(self, x: Tensor) -> Tensor: ...

    def _phi(self, h: Tensor) -> Tensor: ...

    def _energy_from_field(self, x: Tensor, h: Tensor, u: Tensor | None = None) -> Tensor: ...

    def check_drive(self, drive: Any, batch: int) -> Tensor | None: ...

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def _overlaps(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


@engine("rate_dynamics", requires=(RateDynamics,))
def retrieve_rate_dynamics(
    memory: Any,
    cue: Tensor,
    mask: Tensor | None,
    *,
    t_max: float = 10.0,
    dt: float = 0.01,
    noise: float = 0.0,
    seed: int | None = None,
    drive: Tensor | None = None,
    clamp: bool = False,
    init: str | Tensor = "cue",
    tol: float = 1e-6,
    trace: bool = True,
    progress: bool = False,
) -> Retrieval:
    """Integrate ``dx/dt = -x + Φ(W x + u)`` (+ ``σ dB``) from the cue, all cues at once.

    Euler steps ``x ← x + dt (-x + Φ(W x + u)) + σ √dt ε`` (``ε ~ N(0, I)``), ``round(t_max / dt)`` of
    them; with noise the rates are clipped to ``[0, 1]`` after each step (the official code does not
    clip; rates outside ``[0, 1]`` have no meaning and no energy).  ``trace`` ``[T + 1, B]``: the
    Lyapunov energy ``E(x(t))`` at the start and after each step (non-increasing without noise,
    for ``dt`` small enough); ``converged``: ``max_i |dx_i/dt| ≤ tol`` at the end; the read stops
    early once every cue has converged (``tol = 0``: it runs to ``t_max``, as the paper does).
    ``index``: the stored memory nearest to the read item; ``info``: ``"overlap"`` ``[B, P]``
    ``⟨x, ξ^μ⟩ / |ξ^μ|`` (1 for the stored state), ``"mean_rate"`` ``[B]``, ``"speed"`` ``[B]`` the
    final ``max |dx/dt|``, ``"time"``.

    Options:
        t_max: integration horizon (the paper's 10).
        dt: step, in ``(0, 1]`` (the paper's 0.01).
        noise: ``σ ≥ 0`` of Euler–Maruyama.
        seed: seed of the noise (None: the global RNG).
        drive: a constant external input ``u``, ``[N]`` or ``[B, N]`` (None: 0).
        clamp: keep the observed units of a partial cue at their cue rates.
        init: ``"cue"``, ``"quiescent"`` or a ``[B, N]`` tensor of rates.
        tol: stop when every cue's ``max |dx/dt| ≤ tol`` (near a memory ``|x - x̄| ≈ tol``, the flow
            contracting at rate ≈ 1); 0: integrate to ``t_max``.
        trace: record the energies.
        progress: show a progress bar.
    """
    t_max = check_positive(t_max, "option t_max")
    dt = check_positive(dt, "option dt")
    if dt > 1:
        raise ValueError(f"option dt must lie in (0, 1] (Euler leaves [0, 1]^N beyond), got {dt!r}")
    noise = check_non_negative(noise, "option noise")
    seed = check_seed(seed, "option seed", allow_none=True)
    check_bool(clamp, "option clamp")
    tol = check_non_negative(tol, "option tol")
    check_bool(trace, "option trace")
    check_bool(progress, "option progress")
    steps = t_max / dt
    if not steps <= MAX_STEPS:
        raise ValueError(f"option t_max / option dt = {steps:.3g} Euler steps; at most {MAX_STEPS:g} per read")
    steps = int(round(steps))
    u = memory.check_drive(drive, cue.shape[0])
    x = memory.init_latent(cue, mask, init)
    start = x.clone()
    generator = make_generator(seed, cue.device) if noise > 0 else None
    root_dt = math.sqrt(dt)

    def velocity(x: Tensor) -> tuple[Tensor, Tensor]:
        h = memory._field(x)
        return -x + memory._phi(h if u is None else h + u), h

    energies = []
    taken = 0
    bar = tqdm(total=steps, desc="rate dynamics", leave=False) if progress else None
    v, h = velocity(x)
    while True:
        if trace:
            energies.append(memory._energy_from_field(x, h, u))
        if taken == steps or (tol > 0 and bool((v.abs().amax(-1) <= tol).all())):
            break
        x = x + dt * v
        if noise > 0:
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = (x + noise * root_dt * eps).clamp(0, 1)
        if clamp and mask is not None:
            x = torch.where(mask, start, x)
        v, h = velocity(x)
        taken += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    speed = (v if not (clamp and mask is not None) else torch.where(mask, torch.zeros_like(v), v)).abs().amax(-1)
    pattern = memory.decode(x)
    overlap, index = memory._overlaps(x)
    return Retrieval(
        pattern=pattern,
        method="rate_dynamics",
        code=x,
        index=index,
        trace=torch.stack(energies) if trace else None,
        steps=taken,
        converged=speed <= tol,
        info={"overlap": overlap, "mean_rate": x.mean(-1), "speed": speed, "time": taken * dt},
    )


class FiringRateMemory(Memory):
    """Betteti et al.'s firing-rate associative memory (module docstring has the math).

    Args:
        dim: ``N``, the number of units.
        activation: ``"logistic"`` (shifted logistic, default) or ``"tanh"`` (rectified tanh).
        gain: ``ρ > 0``, the activation's maximal slope (the paper's 4.8).
        threshold: ``x*``, the activation's shift (the paper's 0.2).
        inactive_field, active_field: the target fields ``a < b`` of inactive and active units
            (``-0.3`` and ``0.95``: ``γ < 0``; ``a = 0.1`` makes ``γ > 0``).
        coding_level: ``q ∈ (0, 1)``, the fraction of active units of a memory; ``None`` estimates
            it as the mean activity of the stored patterns (recomputed, with ``W``, at each write).
        correlation: ``None`` for the independent form, or ``r ∈ [0, 1)`` for the correlated one.
        temperature: ``T > 0`` of the Gibbs density ``exp(-E/T)`` of the Pyro model.
        device, dtype: where the patterns live.

    Items are ``[P, N]`` in ``[0, 1]``, binarised at ½ (``value_domain`` ``[0, 1]``); a read returns
    the rates as ``code`` and the item they encode, ``(x - Φ(a))/(Φ(b) - Φ(a))`` clipped to
    ``[0, 1]``, as ``pattern``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> xi = (torch.rand(5, 200, generator=g) < 0.2).double()
        >>> memory = FiringRateMemory(200, coding_level=0.2, dtype=torch.float64).write(xi)
        >>> cue = xi * (torch.rand(5, 200, generator=g) < 0.6)       # 40 % of the active units deleted
        >>> read = memory.retrieve(cue)
        >>> bool((read.pattern - xi).abs().max() < 1e-2)
        True
    """

    methods = (retrieve_rate_dynamics, "map", "nuts")
    default_method = "rate_dynamics"
    value_domain = UNIT

    def __init__(
        self,
        dim: int,
        activation: str = "logistic",
        gain: float = 4.8,
        threshold: float = 0.2,
        inactive_field: float = -0.3,
        active_field: float = 0.95,
        coding_level: float | None = None,
        correlation: float | None = None,
        temperature: float = 1.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.gain = check_positive(gain, "gain")
        self.threshold = check_finite(threshold, "threshold")
        self.inactive_field = check_finite(inactive_field, "inactive_field")
        self.active_field = check_finite(active_field, "active_field")
        if not self.inactive_field < self.active_field:
            raise ValueError(f"inactive_field a = {inactive_field!r} must be below active_field b = {active_field!r}")
        for value, name in ((self.threshold, "threshold"), (self.inactive_field, "inactive_field"),
                            (self.active_field, "active_field")):
            if abs(value) > MAX_ABS_VALUE:
                raise ValueError(f"{name} must lie within ±{MAX_ABS_VALUE:g}, got {value!r}")
        if coding_level is not None:
            coding_level = check_finite(coding_level, "coding_level")
            if not 0 < coding_level < 1:
                raise ValueError(f"coding_level must lie in (0, 1) or be None (estimated), got {coding_level!r}")
        self.coding_level = coding_level
        if correlation is not None:
            correlation = check_finite(correlation, "correlation")
            if not 0 <= correlation < 1:
                raise ValueError(f"correlation must lie in [0, 1) or be None (independent form), got {correlation!r}")
        self.correlation = correlation
        self.temperature = check_positive(temperature, "temperature")
        fields = torch.tensor([self.inactive_field, self.active_field], dtype=torch.float64)
        phi_a, phi_b = activation_fn(fields, self.activation, self.gain, self.threshold).tolist()
        if not phi_b - phi_a > 1e-8:
            raise ValueError(
                f"the activation does not separate the two fields: Φ(active_field) - Φ(inactive_field) = "
                f"{phi_b - phi_a:.3g} with gain {self.gain!r}, threshold {self.threshold!r}, inactive_field "
                f"{self.inactive_field!r}, active_field {self.active_field!r}; move the threshold between them")
        self.phi_inactive, self.phi_active = phi_a, phi_b
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))
        self._params: tuple[float, float, float, float] | None = None
        self._centred = self.items

    # --- protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "activation": self.activation, "gain": self.gain, "threshold": self.threshold,
                "inactive_field": self.inactive_field, "active_field": self.active_field,
                "coding_level": self.coding_level, "correlation": self.correlation, "temperature": self.temperature}

    @property
    def energy_scale(self) -> float:
        """``1 / T``: the model's log-density is ``-E(x) / T``."""
        return 1.0 / self.temperature

    def write(self, items: Any) -> "FiringRateMemory":
        """Store ``[P, N]`` items in ``[0, 1]`` (binarised at ½) and recompute ``α, β, γ`` and the
        factored ``W`` (``O(NP)``).  Refused (nothing stored) for items outside ``[0, 1]`` or, with an
        estimated coding level, patterns that are all silent or all active."""
        x = self.prepare_items(items)
        if bool(((x < 0) | (x > 1)).any()):
            rows = ((x < 0) | (x > 1)).any(-1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"items must lie in [0, 1] (rows {rows} do not); they are binarised at 1/2")
        patterns = (x >= 0.5).to(self.dtype)
        all_patterns = torch.cat([self.items, patterns])
        self._synaptic(all_patterns)  # raises before anything is stored
        self.append_rows("items", patterns)
        self.refresh_derived_state()
        return self

    def check_state(self) -> None:
        self.check_stored_items()
        if not bool(((self.items == 0) | (self.items == 1)).all()):
            raise ValueError("stored items must be binary patterns (0 or 1)")
        if len(self):
            self._synaptic(self.items)

    def refresh_derived_state(self) -> None:
        """Recompute ``q``, ``α, β, γ`` and the centred patterns ``Ξ - β`` from the stored patterns."""
        if len(self) == 0:
            self._params, self._centred = None, self.items
            return
        self._params = self._synaptic(self.items)
        self._centred = self.items - self._params[2]

    def _apply(self, fn: Any, recurse: bool = True) -> "FiringRateMemory":
        out = super()._apply(fn, recurse)
        self.refresh_derived_state()  # the centred patterns follow the stored ones to a new device / dtype
        return out

    def _synaptic(self, patterns: Tensor) -> tuple[float, float, float, float]:
        """``(q, α, β, γ)`` for ``patterns`` (``ValueError`` when the coding level is degenerate)."""
        q = self.coding_level
        if q is None:
            q = float(patterns.mean())
            if not 0 < q < 1:
                never = "active" if q == 0 else "silent"
                raise ValueError(f"the stored patterns have coding level q = {q:g} (no unit is ever {never}): "
                                 "α = (b - a)/(q(1 - q)Δ) is undefined; give coding_level or other items")
        alpha, beta, gamma = synaptic_parameters(self.inactive_field, self.active_field, self.phi_inactive,
                                                 self.phi_active, q, self.correlation)
        return q, alpha, beta, gamma

    def _require_params(self) -> tuple[float, float, float, float]:
        self._check_not_empty()
        if self._params is None:
            self.refresh_derived_state()
        assert self._params is not None
        return self._params

    @property
    def synaptic(self) -> dict[str, float]:
        """``{"q", "alpha", "beta", "gamma"}`` of the current ``W`` (empty memory: ``ValueError``)."""
        q, alpha, beta, gamma = self._require_params()
        return {"q": q, "alpha": alpha, "beta": beta, "gamma": gamma}

    # --- W, the field, the dynamics -------------------------------------------------------------
    def _phi(self, h: Tensor) -> Tensor:
        return activation_fn(h, self.activation, self.gain, self.threshold)

    def _field(self, x: Tensor) -> Tensor:
        _, alpha, _, gamma = self._require_params()
        c = self._centred
        return (alpha / self.dim) * ((x @ c.T) @ c) + (gamma / self.dim) * x.sum(-1, keepdim=True)

    def transfer(self, h: Any) -> Tensor:
        """``Φ(h)`` elementwise, for fields ``h [..., N]``."""
        return self._phi(as_state(h, self.dim, self.dtype, self.device, "h"))

    def recurrent_field(self, x: Any) -> Tensor:
        """``W x`` for rates ``x [..., N]``, from the factors: ``α/N (x Cᵀ) C + γ/N (Σ x) 1``,
        ``C = Ξᵀ - β`` (``O(NP)`` per state)."""
        self._check_not_empty()
        return self._field(self._rates(x))

    def weight_matrix(self) -> Tensor:
        """The dense ``[N, N]`` ``W`` (for inspection and small ``N``; reads never build it)."""
        _, alpha, _, gamma = self._require_params()
        c = self._centred
        return (alpha / self.dim) * (c.T @ c) + gamma / self.dim

    def vector_field(self, x: Any, drive: Any = None) -> Tensor:
        """``dx/dt = -x + Φ(W x + u)`` at rates ``x [..., N]`` (``drive`` ``u``: ``[N]`` / ``[B, N]``)."""
        self._check_not_empty()
        x = self._rates(x)
        u = self.check_drive(drive, x.shape[0] if x.dim() > 1 else 1)
        h = self._field(x)
        return -x + self._phi(h if u is None else h + u)

    def stored_states(self) -> Tensor:
        """``[P, N]`` the re-scaled memories ``x̄^μ = Φ(a) + (Φ(b) - Φ(a)) ξ^μ`` (the rates stored)."""
        self._check_not_empty()
        return self.phi_inactive + (self.phi_active - self.phi_inactive) * self.items

    def equilibrium_residual(self) -> Tensor:
        """``[P]`` ``max_i |x̄^μ_i - Φ((W x̄^μ)_i)|``: how far each stored state is from an equilibrium
        (cross-talk between memories; 0 for exactly orthogonal centred patterns)."""
        xbar = self.stored_states()
        return (xbar - self._phi(self._field(xbar))).abs().amax(-1)

    def jacobian_max_eigenvalue(self, x: Any = None, drive: Any = None) -> Tensor:
        """``[B]`` the largest eigenvalue of the Jacobian ``J = -I + diag(Φ'(W x + u)) W`` at rates ``x``
        (default: the stored states ``x̄``), in ``O(NP²)``.

        ``diag(Φ') W`` has the eigenvalues of ``D^{1/2} W D^{1/2} = A S Aᵀ`` with
        ``A = [√(α/N) D^{1/2} C, √(|γ|/N) D^{1/2} 1]`` (``N × (P + 1)``), ``S = diag(1, …, 1, sign γ)``;
        its non-zero eigenvalues are those of ``G^{1/2} S G^{1/2}``, ``G = AᵀA``, and the other
        ``N - P - 1`` are 0 (so ``J`` has the eigenvalue ``-1`` there).
        """
        _, alpha, _, gamma = self._require_params()
        x = self.stored_states() if x is None else self._rates(x)
        x = x.reshape(-1, self.dim)
        u = self.check_drive(drive, x.shape[0])
        h = self._field(x)
        d = activation_derivative(h if u is None else h + u, self.activation, self.gain, self.threshold).sqrt()
        cols = torch.cat([math.sqrt(alpha / self.dim) * d.unsqueeze(-2) * self._centred,
                          math.sqrt(abs(gamma) / self.dim) * d.unsqueeze(-2)], dim=-2)  # [B, P + 1, N]
        gram = cols @ cols.transpose(-1, -2)
        vals, vecs = torch.linalg.eigh(gram)
        root = vecs @ torch.diag_embed(vals.clamp_min(0).sqrt()) @ vecs.transpose(-1, -2)
        signs = torch.ones(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        signs[-1] = 1.0 if gamma >= 0 else -1.0
        top = torch.linalg.eigvalsh(root @ torch.diag(signs) @ root)[..., -1]
        if self.dim > gram.shape[-1]:
            top = top.clamp_min(0)
        return top - 1

    # --- energy and the Pyro model --------------------------------------------------------------
    def lyapunov(self, x: Any, drive: Any = None) -> Tensor:
        """``E(x) = -½ xᵀWx - uᵀx + Σ F(x_i)`` for rates ``x [..., N]`` (→ ``[...]``) with a constant input
        ``drive`` ``u`` (``[N]`` or ``[B, N]``; None: 0), the Lyapunov function of the read with that
        input; extended outside ``[0, 1]^N`` as the module docstring says."""
        self._check_not_empty()
        x = self._rates(x)
        u = self.check_drive(drive, x.shape[-2] if x.dim() > 1 else 1)
        return self._lyapunov(x, u)

    def _lyapunov(self, x: Tensor, drive: Tensor | None = None) -> Tensor:
        cx = x @ self._centred.T
        _, alpha, _, gamma = self._require_params()
        quad = (alpha / self.dim) * (cx * cx).sum(-1) + (gamma / self.dim) * x.sum(-1) ** 2
        e = -0.5 * quad + _extended_integral(x, self.activation, self.gain, self.threshold).sum(-1)
        if drive is not None:
            e = e - (x * drive).sum(-1)
        return e

    def _energy_from_field(self, x: Tensor, h: Tensor, u: Tensor | None = None) -> Tensor:
        """``E(x)`` for rates ``x`` in ``[0, 1]^N`` from the recurrent field ``h = W x`` a dynamics step
        has already computed."""
        e = -0.5 * (x * h).sum(-1) + activation_integral(x, self.activation, self.gain, self.threshold).sum(-1)
        return e if u is None else e - (x * u).sum(-1)

    def overlaps(self, x: Any) -> tuple[Tensor, Tensor]:
        """``([B, P] ⟨x, ξ^μ⟩ / |ξ^μ|, [B] index)`` for rates ``x [B, N]``: the overlap with each stored
        pattern (1 at its stored state, up to ``Φ(b)``) and the stored pattern nearest (Euclidean)
        to the decoded item."""
        self._check_not_empty()
        return self._overlaps(self._rates(x).reshape(-1, self.dim))

    def _overlaps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        items = self.items
        sizes = items.sum(-1).clamp_min(1)
        pattern = self.decode(x)
        distance = (pattern * pattern).sum(-1, keepdim=True) - 2 * pattern @ items.T + items.sum(-1)
        return (x @ items.T) / sizes, distance.argmin(-1)

    def encode(self, cue: Tensor) -> Tensor:
        """Items in ``[0, 1]`` → rates: ``Φ(a) + (Φ(b) - Φ(a)) x``."""
        return self.phi_inactive + (self.phi_active - self.phi_inactive) * cue

    def decode(self, z: Tensor) -> Tensor:
        """Rates → items: ``(x - Φ(a)) / (Φ(b) - Φ(a))`` clipped to ``[0, 1]``."""
        return ((z - self.phi_inactive) / (self.phi_active - self.phi_inactive)).clamp(0, 1)

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The Lyapunov energy ``E(z)`` (module docstring) of rates ``z [..., N]`` → ``[...]``, with the
        observed entries of a partial cue clamped to their rates (``E(m ⊙ x̃ + (1 - m) ⊙ z)``,
        ``x̃`` the encoded cue); a full cue does not enter (it is the initial state of a read).
        ``E / T`` is the negative log-density of :meth:`model`."""
        self._require_params()
        return self._lyapunov(clamp(z, None if cue is None else self.encode(cue), mask))

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """The Gibbs density ``p(z | M) ∝ exp(-E(z)/T)`` of the rates on the unit box: site ``"z"``
        (``[B, N]`` under the plate ``"cues"``: a uniform distribution on ``[0, 1]^N`` with its
        log-density masked to 0, so that Pyro knows the support and can trace the model) scored by
        ``pyro.factor("energy", -E/T)``, observed entries of a partial cue clamped."""
        self._require_params()
        size = cue.shape[0] if cue is not None else num_cues
        zeros = torch.zeros(size, self.dim, dtype=self.dtype, device=self.device)
        flat = dist.Uniform(zeros, zeros + 1).to_event(1).mask(False)  # log-density 0; support the unit box
        with pyro.plate("cues", size, dim=-1):
            z = pyro.sample(self.latent_site, flat)
            pyro.factor("energy", -self.compute_energy(z, cue, mask) / self.temperature)
        return z

    def init_latent(self, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor:
        """Start rates: ``"cue"`` (the encoded cue, unobserved units at the quiescent rate ``Φ(a)``),
        ``"quiescent"`` (every unit at ``Φ(a)``) or a ``[B, N]`` tensor of rates in ``[0, 1]``; clipped
        into ``[ε, 1 - ε]`` (:data:`START_MARGIN`)."""
        def from_cue() -> Tensor:
            rates = self.encode(cue)
            return rates if mask is None else torch.where(mask, rates, torch.full_like(rates, self.phi_inactive))

        starts = {"cue": from_cue, "quiescent": lambda: torch.full_like(cue, self.phi_inactive)}
        x = start_state(init, cue, starts, self, shape=(cue.shape[0], self.dim))
        if torch.is_tensor(init) and bool(((x < 0) | (x > 1)).any()):
            raise ValueError("init rates must lie in [0, 1]")
        return x.clamp(START_MARGIN, 1 - START_MARGIN)

    # --- input checks ---------------------------------------------------------------------------
    def _rates(self, x: Any) -> Tensor:
        return as_state(x, self.dim, self.dtype, self.device, "x")

    def check_drive(self, drive: Any, batch: int) -> Tensor | None:
        """``None`` or a validated ``[N]`` / ``[B, N]`` input ``u`` on this memory's device and dtype."""
        if drive is None:
            return None
        if not torch.is_tensor(drive):
            raise TypeError(f"drive must be a tensor [N] or [B, N] (the external input u), got {type(drive).__name__}")
        if drive.is_complex() or not drive.is_floating_point():
            raise TypeError(f"drive must have a floating dtype, got {drive.dtype}")
        if drive.shape not in ((self.dim,), (batch, self.dim)):
            raise ValueError(f"drive must have shape [{self.dim}] or [{batch}, {self.dim}], got {list(drive.shape)}")
        drive = drive.detach().to(self.device, self.dtype).contiguous()
        check_values(drive.reshape(-1, self.dim), "drive")
        return drive


