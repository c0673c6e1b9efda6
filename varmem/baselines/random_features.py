"""DrDAM: a dense associative memory distributed over random features (Hoover et al., NeurIPS 2024).

The slot memory it approximates (MrDAM) stores ``K`` patterns ``ξ_μ ∈ R^D`` and has the L2
log-sum-exp energy (no other constants: DrDAM's convention)::

    E_β(x; Ξ) = -(1/β) log Σ_μ exp(-(β/2) ‖x - ξ_μ‖²),     ∇E_β = x - Σ_μ softmax_μ(-(β/2)‖x - ξ_μ‖²) ξ_μ.

The Gaussian kernel ``κ(x, y) = exp(-(β/2)‖x - y‖²)`` is approximated by ``⟨φ(x), φ(y)⟩`` with ``Y``
random features, ``u = √β S x (+ b)``, ``S ∈ R^{Y×D}`` rows ~ N(0, I), ``b ~ U[0, 2π]``:

==========  =================================================================  ===========
kernel      ``φ(x)``                                                           ``dim φ``
==========  =================================================================  ===========
"sincos"    ``Y^{-1/2} [cos u, sin u]``  (``u = √β S x``)                       ``2Y``
"cos"       ``(2/Y)^{1/2} cos(u)``       (``u = √β S x + b``)                   ``Y``
"exp"       ``Y^{-1/2} exp(u - β‖x‖²)``  (Performer positive features)          ``Y``
"expexp"    ``(2Y)^{-1/2} [exp(u - β‖x‖²), exp(-u - β‖x‖²)]``  (hyperbolic)     ``2Y``
==========  =================================================================  ===========

(For sin/cos pairs a phase ``b`` cancels, so "sincos" uses none.)  The memory is the feature sum
``T = Σ_μ φ(ξ_μ)``: writing adds ``φ(ξ)``, deleting subtracts it, and the state has ``dim φ``
numbers whatever the number of memories (``S`` and ``b`` are regenerated from ``seed``).  Energy::

    Ẽ_β(x; T) = -(1/β) log max(⟨φ(x), T⟩, ε)
    ∇Ẽ_β      = -(1/β) ∇⟨φ(x), T⟩ / ⟨φ(x), T⟩   (0 where the floor ε is active)
    ∇⟨φ, T⟩   = √β Sᵀ ∂⟨φ, T⟩/∂u  [- 2β x ⟨φ, T⟩ for the exp kernels]

The floor ``ε`` (1e-5 as in the authors' code) applies to the trigonometric kernels, whose kernel
sum can be ≤ 0 far from every memory (the dynamics then stall); the exp kernels are positive and
are floored only at the smallest normal number.  Retrieval is DrDAM's gradient descent
``x ← x - α ∇Ẽ_β(x)`` (``α = step_size``), with the observed coordinates of a partial cue clamped.

Probabilistic reading: ``exp(-β Ẽ_β(z)) = ⟨φ(z), T⟩ ≈ Σ_μ κ(z, ξ_μ)`` is, up to normalisation, the
Gaussian kernel density of :class:`varmem.KernelDensityMemory` with bandwidth ``1/√β``: the Pyro
model puts that unnormalised density on ``z`` (a ``pyro.factor`` on an improper flat site) and
observes a partial cue exactly (its observed coordinates are clamped).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..capabilities import Step
from ..helpers import boltzmann_model, clamp, start_state
from ..inference import retrieve_fixed_point, retrieve_map
from ..kernels import default_chunk_size, kernel_log_sum_exp, kernel_stats
from ..memory import Memory
from ..validation import check_bool, check_choice, check_non_negative, check_positive, check_positive_int, check_seed

__all__ = [
    "RandomFeatureMemory",
    "item_digests",
    "KERNELS",
    "random_feature_matrix",
    "slot_energy",
    "slot_energy_grad",
    "gradient_descent",
]

KERNELS = ("sincos", "cos", "exp", "expexp")
_FEATURE_FACTOR = {"sincos": 2, "cos": 1, "exp": 1, "expexp": 2}


def random_feature_matrix(
    num_features: int, dim: int, seed: int, *, orthogonal: bool = False
) -> tuple[Tensor, Tensor]:
    """``(S [Y, D], b [Y])`` in float64 on the CPU, a deterministic function of the arguments.

    ``S`` has i.i.d. N(0, 1) entries, or (``orthogonal=True``) blocks of ``D`` orthogonal rows whose
    norms are drawn from the chi distribution of a Gaussian row (orthogonal random features);
    ``b ~ U[0, 2π]``.  Generated on the CPU, so every device and dtype sees the same features.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if orthogonal:
        blocks = -(-num_features // dim)
        q, _ = torch.linalg.qr(torch.randn(blocks, dim, dim, generator=gen, dtype=torch.float64))
        norms = torch.randn(blocks, dim, dim, generator=gen, dtype=torch.float64).norm(dim=-1)
        s = (q.mT * norms.unsqueeze(-1)).reshape(-1, dim)[:num_features]
    else:
        s = torch.randn(num_features, dim, generator=gen, dtype=torch.float64)
    b = 2 * math.pi * torch.rand(num_features, generator=gen, dtype=torch.float64)
    return s, b


def slot_energy(x: Tensor, items: Tensor, beta: float, *, chunk_size: int | None = None) -> Tensor:
    """The exact (slot, MrDAM) energy ``-(1/β) log Σ_μ exp(-(β/2)‖x - ξ_μ‖²)``: ``[...]`` for ``x [..., D]``.

    Streams over ``items [K, D]`` with :func:`varmem.kernels.kernel_log_sum_exp` (differentiable in x).
    """
    return -kernel_log_sum_exp(x, items, beta, chunk_size=chunk_size) / beta


def slot_energy_grad(
    x: Tensor, items: Tensor, beta: float, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """``(E [B], ∇E [B, D])`` of :func:`slot_energy`: ``∇E = x - Σ_μ softmax_μ ξ_μ`` (one streaming pass).

    Gradient descent with ``α = 1`` is therefore one modern-Hopfield / mean-shift step.
    """
    stats = kernel_stats(x, items, beta, chunk_size=chunk_size)
    return -stats.lse / beta, x - stats.mean


def gradient_descent(
    grad_fn: Any, x: Tensor, step_size: float, steps: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``steps`` updates ``x ← x - α ∇E(x)`` with ``(E, ∇E) = grad_fn(x)``, ``mask`` (True) coordinates
    clamped; returns ``(x_T [B, D], energies [T + 1, B])`` (the energy before each step and at the end)."""
    energies = []
    for _ in range(steps):
        energy, grad = grad_fn(x)
        if mask is not None:
            grad = grad.masked_fill(mask, 0.0)
        energies.append(energy)
        x = x - step_size * grad
    energies.append(grad_fn(x)[0])
    return x, torch.stack(energies)


def item_digests(items: Tensor) -> Tensor:
    """``[N]`` 64-bit fingerprints of the exact values of ``items [N, D]`` (of any float dtype).

    Each entry's float64 bit pattern (``-0.0`` folded into ``0.0``) is multiplied by a fixed odd
    64-bit constant per coordinate and the products are summed with wrap-around; two different items
    share a fingerprint with probability about ``2^-64``.
    """
    bits = (items.to(torch.float64) + 0.0).contiguous().view(torch.int64)
    gen = torch.Generator(device="cpu").manual_seed(0x5EED)
    coeff = torch.randint(-(2**62), 2**62, (items.shape[-1],), generator=gen, dtype=torch.int64) | 1
    h = (bits * coeff.to(bits.device)).sum(-1)
    return h ^ (h >> 29)


class RandomFeatureMemory(Memory):
    """DrDAM: a Gaussian-kernel dense associative memory stored as a sum of random features.

    See the module docstring for the features, the energy and its gradient.

    Args:
        dim: ``D``.
        beta: inverse temperature ``β`` of the kernel ``exp(-(β/2)‖x - y‖²)``.  DrDAM's values
            (10–80) assume patterns with ``‖x - y‖² ∈ [0, 1]``, e.g. binary entries in ``{0, 1/√D}``.
        num_features: ``Y``, the number of random projections (the state has ``Y`` or ``2Y`` numbers).
        kernel: ``"sincos"`` (default, the most accurate), ``"cos"``, ``"exp"`` or ``"expexp"``.
        seed: seed of the random projections; only the seed and sizes are saved.
        step_size: ``α`` of the gradient-descent retrieval.
        eps: floor ``ε`` of ``⟨φ(x), T⟩`` inside the log (trigonometric kernels).
        orthogonal: draw orthogonal random features.
        chunk_size: random features (and items, when writing) per chunk (default: about
            ``2**19 / B`` features for ``B`` cues on the CPU, ``2**22 / B`` on a GPU).
        device, dtype: where the state lives (default: CPU, the default float dtype).

    Example:
        >>> memory = RandomFeatureMemory(dim=4, beta=25.0, num_features=20000, seed=0)
        >>> patterns = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.5, 0.0, 0.5, 0.0]])
        >>> memory = memory.write(patterns)
        >>> cue = torch.tensor([[0.1, 0.4, 0.0, 0.5]])
        >>> memory.retrieve(cue, max_steps=200, tol=0.0).pattern.round(decimals=1)
        tensor([[0.0000, 0.5000, 0.0000, 0.5000]])
    """

    methods = (retrieve_fixed_point, retrieve_map)
    default_method = "fixed_point"

    def __init__(
        self,
        dim: int,
        beta: float,
        num_features: int = 10_000,
        *,
        kernel: str = "sincos",
        seed: int = 0,
        step_size: float = 0.1,
        eps: float = 1e-5,
        orthogonal: bool = False,
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.beta = check_positive(beta, "beta")
        num_features = check_positive_int(num_features, "num_features")
        check_choice(kernel, "kernel", KERNELS)
        seed = check_seed(seed)
        self.step_size = check_positive(step_size, "step_size")
        eps = check_non_negative(eps, "eps")
        chunk_size = check_positive_int(chunk_size, "chunk_size", allow_none=True)
        self.num_features, self.kernel, self.seed, self.eps = num_features, kernel, seed, eps
        self.orthogonal, self.chunk_size = check_bool(orthogonal, "orthogonal"), chunk_size
        s, b = random_feature_matrix(num_features, dim, seed, orthogonal=self.orthogonal)
        # regenerated from the seed, so not part of the saved state
        self.register_buffer("projection", s.to(device=self.device, dtype=self.dtype), persistent=False)
        self.register_buffer("phase", b.to(device=self.device, dtype=self.dtype), persistent=False)
        self.register_buffer("feature_sum", torch.zeros(self.feature_dim, device=self.device, dtype=self.dtype))
        # a fingerprint of every item written, so delete can refuse items that were never stored
        self.register_buffer("digests", torch.empty(0, dtype=torch.long, device=self.device))

    # --- size and state ----------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """``dim φ``: ``2Y`` for "sincos"/"expexp", ``Y`` for "cos"/"exp"."""
        return _FEATURE_FACTOR[self.kernel] * self.num_features

    @property
    def num_parameters(self) -> int:
        """Numbers that define the stored memories (``dim φ``), independent of how many were written."""
        return self.feature_sum.numel()

    def __len__(self) -> int:
        return self.digests.shape[0]

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "beta": self.beta,
            "num_features": self.num_features,
            "kernel": self.kernel,
            "seed": self.seed,
            "step_size": self.step_size,
            "eps": self.eps,
            "orthogonal": self.orthogonal,
            "chunk_size": self.chunk_size,
        }

    def check_state(self) -> None:
        if self.feature_sum.shape != (self.feature_dim,):
            raise ValueError(f"feature_sum must have shape [{self.feature_dim}], got {tuple(self.feature_sum.shape)}")
        if not torch.isfinite(self.feature_sum).all():
            raise ValueError("feature_sum contains NaN or inf")
        if self.digests.dim() != 1:
            raise ValueError(f"digests must have shape [N], got {tuple(self.digests.shape)}")

    # --- features ----------------------------------------------------------------------------
    def _chunks(self, rows: int) -> range:
        return range(0, self.num_features, self.chunk_size or default_chunk_size(rows, self.device))

    def _projections(self, x: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """``(S_c, u = √β x S_cᵀ (+ b_c))`` for the feature chunk starting at ``start``."""
        stop = start + (self.chunk_size or default_chunk_size(x.shape[0], self.device))
        s = self.projection[start:stop]
        u = math.sqrt(self.beta) * (x @ s.T)
        if self.kernel == "cos":
            u = u + self.phase[start:stop]
        return s, u

    def _split(self, t: Tensor, start: int, size: int) -> tuple[Tensor, Tensor]:
        """The two halves of ``T`` belonging to features ``start : start + size`` (2Y kernels)."""
        y = self.num_features
        return t[start : start + size], t[y + start : y + start + size]

    def features(self, x: Tensor) -> Tensor:
        """``φ(x)``: ``[B, dim φ]`` for ``x [B, D]`` (see the module table)."""
        y = self.num_features
        parts_a, parts_b = [], []
        sq = (x * x).sum(-1, keepdim=True)
        for start in self._chunks(x.shape[0]):
            _, u = self._projections(x, start)
            if self.kernel == "sincos":
                parts_a.append(u.cos() / math.sqrt(y))
                parts_b.append(u.sin() / math.sqrt(y))
            elif self.kernel == "cos":
                parts_a.append(u.cos() * math.sqrt(2 / y))
            elif self.kernel == "exp":
                parts_a.append((u - self.beta * sq).exp() / math.sqrt(y))
            else:
                parts_a.append((u - self.beta * sq).exp() / math.sqrt(2 * y))
                parts_b.append((-u - self.beta * sq).exp() / math.sqrt(2 * y))
        return torch.cat(parts_a + parts_b, dim=-1)

    def kernel_sum(self, x: Tensor, *, grad: bool = False) -> tuple[Tensor, Tensor | None]:
        """``s(x) = ⟨φ(x), T⟩`` (``[B]``) and, if ``grad``, ``∇s`` (``[B, D]``), streaming over features.

        Differentiable by autograd too (used to test the hand-written gradient).
        """
        y, t = self.num_features, self.feature_sum
        total = x.new_zeros(x.shape[0])
        ds_dx = x.new_zeros(x.shape) if grad else None
        sq = (x * x).sum(-1, keepdim=True)
        for start in self._chunks(x.shape[0]):
            s, u = self._projections(x, start)
            size = u.shape[-1]
            if self.kernel == "sincos":
                tc, ts = self._split(t, start, size)
                cos, sin = u.cos(), u.sin()
                total = total + (cos @ tc + sin @ ts) / math.sqrt(y)
                ds_du = (cos * ts - sin * tc) / math.sqrt(y) if grad else None
            elif self.kernel == "cos":
                tc = t[start : start + size]
                total = total + (u.cos() @ tc) * math.sqrt(2 / y)
                ds_du = -(u.sin() * tc) * math.sqrt(2 / y) if grad else None
            elif self.kernel == "exp":
                terms = (u - self.beta * sq).exp() * (t[start : start + size] / math.sqrt(y))
                total = total + terms.sum(-1)
                ds_du = terms
            else:
                tp, tm = self._split(t, start, size)
                plus = (u - self.beta * sq).exp() * (tp / math.sqrt(2 * y))
                minus = (-u - self.beta * sq).exp() * (tm / math.sqrt(2 * y))
                total = total + plus.sum(-1) + minus.sum(-1)
                ds_du = plus - minus
            if grad:
                ds_dx = ds_dx + math.sqrt(self.beta) * (ds_du @ s)
        if grad and self.kernel in ("exp", "expexp"):
            ds_dx = ds_dx - 2 * self.beta * x * total.unsqueeze(-1)
        return total, ds_dx

    def _floor(self, dtype: torch.dtype) -> float:
        return self.eps if self.kernel in ("sincos", "cos") else torch.finfo(dtype).tiny

    def energy_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(Ẽ_β(z) [B], ∇Ẽ_β(z) [B, D])`` in one pass over the features (no autograd)."""
        s, ds = self.kernel_sum(z, grad=True)
        floor = self._floor(z.dtype)
        active = s > floor
        energy = -torch.log(s.clamp_min(floor)) / self.beta
        grad = torch.where(active.unsqueeze(-1), -ds / (self.beta * s.clamp_min(floor)).unsqueeze(-1), 0.0 * ds)
        return energy, grad

    # --- writing -----------------------------------------------------------------------------
    def _feature_total(self, items: Tensor) -> Tensor:
        """``Σ_μ φ(ξ_μ)`` over ``items [N, D]``, chunked over items so a block has about 2**22 entries."""
        rows = max(1, 2**22 // self.feature_dim)
        total = items.new_zeros(self.feature_dim)
        for start in range(0, items.shape[0], rows):
            total = total + self.features(items[start : start + rows]).sum(0)
        return total

    def write(self, items: Any) -> "RandomFeatureMemory":
        """Add ``φ(ξ)`` of each item (``[N, D]`` or ``[D]``) to the feature sum ``T``."""
        new = self.prepare_items(items)
        with torch.no_grad():
            update = self._feature_total(new)
        if not torch.isfinite(update).all():
            raise ValueError("the features of these items overflow (inf/NaN); rescale the items or lower beta")
        self.feature_sum = self.feature_sum + update
        self.append_rows("digests", item_digests(new))
        return self

    def delete(self, items: Any) -> "RandomFeatureMemory":
        """Subtract ``φ(ξ)`` of each item from ``T`` (DrDAM's forgetting).

        The feature sum cannot tell whether an item was stored, so the memory keeps a 64-bit
        fingerprint of every item written (:func:`item_digests`, 8 bytes per item): an item whose
        exact values were never written (or were already deleted as often) is refused with
        ``KeyError`` and nothing changes.
        """
        old = self.prepare_items(items)
        digests = item_digests(old)
        positions: dict[int, list[int]] = {}
        for i, d in enumerate(self.digests.tolist()):
            positions.setdefault(d, []).append(i)
        removed, missing = [], []
        for j, d in enumerate(digests.tolist()):
            slots = positions.get(d)
            if slots:
                removed.append(slots.pop())
            else:
                missing.append(j)
        if missing:
            raise KeyError(f"items {missing[:5]} were never written to this memory (or already deleted); "
                           "nothing was deleted")
        with torch.no_grad():
            update = self._feature_total(old)
        if not torch.isfinite(update).all():
            raise ValueError("the features of these items overflow (inf/NaN); nothing was deleted")
        self.feature_sum = self.feature_sum - update
        keep = torch.ones(len(self), dtype=torch.bool, device=self.device)
        keep[removed] = False
        self.digests = self.digests[keep]
        return self

    # --- energy and the probabilistic model --------------------------------------------------
    @property
    def energy_scale(self) -> float:
        """``β``: the model's log-density is ``-β Ẽ_β(z) = log ⟨φ(z), T⟩``."""
        return self.beta

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``Ẽ_β(z) = -(1/β) log max(⟨φ(z), T⟩, ε)`` (``[...]`` for ``z [..., D]``).

        With a ``cue`` and a ``mask`` the observed coordinates of ``z`` are first set to the cue's
        (the cue is observed exactly); a full cue (``mask=None``) is only the starting point of
        retrieval and does not enter the energy.  ``-β Ẽ_β`` is the log of the model's
        unnormalised prior density.  Differentiable in ``z``.
        """
        z = clamp(z, cue, mask)
        flat = z.reshape(-1, self.dim)
        s, _ = self.kernel_sum(flat)
        return (-torch.log(s.clamp_min(self._floor(z.dtype))) / self.beta).reshape(z.shape[:-1])

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """``p(z | M) ∝ ⟨φ(z), T⟩``: an improper flat site ``"z"`` scored by ``pyro.factor("energy",
        -β Ẽ_β(z))``, the cue's observed coordinates clamped (:func:`varmem.helpers.boltzmann_model`)."""
        self._check_not_empty()
        return boltzmann_model(self.latent_site, self.dim, lambda z: -self.beta * self.compute_energy(z),
                               cue, mask, num_cues)

    # --- hooks used by the engines -----------------------------------------------------------
    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        """``"cue"`` (unobserved entries start at 0) or a ``[B, D]`` tensor (observed entries are
        replaced by the cue's)."""
        return clamp(start_state(init, cue, {"cue": cue.clone}, self), cue, mask)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One DrDAM step ``z ← z - α ∇Ẽ_β(z)`` (observed coordinates clamped), with ``Ẽ(z)`` (one pass
        over the features gives both).  The memory stores no items: no weights, no index."""
        e, grad = self.energy_and_grad(z)
        if mask is not None:
            grad = grad.masked_fill(mask, 0.0)
        return Step(state=z - self.step_size * grad, energy=e if energy else None)

    def exact_energy_and_grad(self, z: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """The slot memory this one approximates, given the ``items [K, D]`` it stored:
        ``(E_β(z; Ξ), ∇E_β)`` (:func:`slot_energy_grad`, same ``β``)."""
        return slot_energy_grad(z, self.prepare_items(items), self.beta)
