"""Building blocks for writing a memory: the weights policy, start states, the masked likelihood,
clamping, seeded generators.

Everything a memory of varmem's own uses to honour the protocol is here and public, so a memory
written outside the package (``guides/new_memory.md``) has the same tools.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from .validation import check_bool, check_non_negative, check_seed, check_values

__all__ = [
    "WEIGHTS_LIMIT", "want_weights", "start_state", "posterior_start", "masked_normal", "clamp", "make_generator",
    "row_selection", "match_rows", "boltzmann_model",
]

WEIGHTS_LIMIT = 2**16
"""Largest ``B·N`` for which a read returns the ``[B, N]`` weights over stored items (and their
arg-max ``index``) by default (``return_weights=None``).  Above it a default read returns neither,
so that its cost stays within a few per cent of the leanest read: at ``D = 64`` the arg-max alone
costs about a sixth of a modern-Hopfield update on the CPU (``experiments/bench_hopfield.py``).  Ask
with ``return_weights=True`` to get them at any size."""


def want_weights(return_weights: bool | None, batch: int, num_items: int) -> bool:
    """Resolve a ``return_weights`` option: ``None`` means "if ``B·N ≤ WEIGHTS_LIMIT``"."""
    if return_weights is None:
        return batch * num_items <= WEIGHTS_LIMIT
    return check_bool(return_weights, "option return_weights", allow_none=True)


def start_state(
    init: Any, cue: Tensor, starts: Mapping[str, Callable[[], Tensor]], owner: Any,
    shape: tuple[int, ...] | None = None,
) -> Tensor:
    """The ``init`` option of an iterative engine resolved to a starting state.

    A tensor must have ``shape`` (default: the cue's) and a floating dtype, hold finite values within
    the supported range ``±MAX_ABS_VALUE`` (as cues do), and is copied to the cue's device and dtype
    (the caller's tensor is never the engine's state);
    a name is looked up in ``starts`` (name → function building the state).  Errors name ``owner``'s
    class and the valid choices.
    """
    shape = tuple(cue.shape) if shape is None else tuple(shape)
    if torch.is_tensor(init):
        if tuple(init.shape) != shape:
            raise ValueError(f"init tensor must have shape {list(shape)}, got {list(init.shape)}")
        if init.is_complex() or not init.is_floating_point():
            raise TypeError(f"init tensor must have a floating dtype, got {init.dtype}")
        start = init.detach().to(cue, copy=True).contiguous()  # a copy: engines may update it in place
        check_values(start, "init tensor")
        return start
    if not isinstance(init, str) or init not in starts:
        choices = ", ".join(repr(name) for name in starts)
        raise ValueError(f"unknown init {init!r} for {type(owner).__name__}; choose {choices} or a tensor")
    return starts[init]()


def masked_normal(loc: Tensor, scale: float | Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
    """``x ~ N(loc, scale² I)`` over the last dim; entries where ``mask`` is False are left out of
    the log-density through Pyro's own masking (``Distribution.mask``), never by zeroing by hand."""
    base = dist.Normal(loc, scale)
    if mask is not None:
        base = base.mask(mask)
    return base.to_event(1)


def clamp(z: Tensor, cue: Tensor | None, mask: Tensor | None) -> Tensor:
    """``m ⊙ x + (1 - m) ⊙ z``: the state with the observed entries of the cue put back (``z`` itself
    when there is no cue or no mask)."""
    return z if cue is None or mask is None else torch.where(mask, cue, z)


def make_generator(seed: int | None, device: torch.device | str | None = None) -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (None: no generator, the global RNG)."""
    if seed is None:
        return None
    return torch.Generator(device=device or "cpu").manual_seed(check_seed(seed))


def posterior_start(memory: Any, cue: Tensor, mask: Tensor | None, init: Any) -> Tensor:
    """The ``init`` option for a memory with a closed-form ``posterior`` and a ``prior_mean_batch``:
    ``"cue"`` (the cue on observed entries, the exact posterior mean elsewhere: for a full cue the
    cue itself, the Hopfield convention), ``"posterior_mean"``, ``"prior_mean"`` or a tensor."""
    def posterior_mean() -> Tensor:
        return memory.posterior(cue, mask, return_weights=False).mean

    def cue_start() -> Tensor:
        return cue.clone() if mask is None else torch.where(mask, cue, posterior_mean())

    starts = {"cue": cue_start, "posterior_mean": posterior_mean,
              "prior_mean": lambda: memory.prior_mean_batch(cue.shape[0])}
    return start_state(init, cue, starts, memory)


def row_selection(index: Any, num_rows: int, device: torch.device | str | None = None) -> Tensor:
    """``[num_rows]`` bool, True at the rows ``index`` names: an int, a sequence / ``range`` / tensor of
    ints, a ``slice``, or a bool mask of shape ``[num_rows]`` (what ``forget`` accepts).  Anything
    else (None, floats, strings, a lone bool) is refused with ``TypeError``; ints outside
    ``[-num_rows, num_rows)`` with ``IndexError``."""
    selected = torch.zeros(num_rows, dtype=torch.bool, device=device)
    if isinstance(index, slice):
        for part in (index.start, index.stop, index.step):
            if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
                raise TypeError(f"slice bounds must be ints or None, got {index!r}")
        selected[index] = True
        return selected
    if index is None or isinstance(index, (bool, str, float)):
        raise TypeError(f"index must be an int, a sequence of ints, a slice or a bool mask, got {index!r}")
    try:
        idx = torch.as_tensor(list(index) if isinstance(index, range) else index, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"index must be an int, a sequence of ints, a slice or a bool mask, got {index!r}") from None
    if idx.numel() == 0 and idx.dtype != torch.bool:  # [] (float by default in torch): nothing selected
        return selected
    if idx.dtype == torch.bool:
        if idx.shape != (num_rows,):
            raise ValueError(f"a bool index must have shape [{num_rows}], got {tuple(idx.shape)}")
        return idx.clone()
    if idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"index must hold integers, got dtype {idx.dtype}")
    idx = idx.reshape(-1)
    if idx.numel() and (int(idx.min()) < -num_rows or int(idx.max()) >= num_rows):
        raise IndexError(f"index out of range for a memory of {num_rows} items: {idx.tolist()[:5]}")
    selected[idx] = True
    return selected


def match_rows(stored: Tensor, targets: Tensor, atol: Any = 0.0, *, what: str = "not stored in this memory") -> Tensor:
    """``[M]`` row indices of ``stored [N, D]`` matching ``targets [M, D]`` within ``atol`` in max-norm,
    one distinct row per target (the first free match).  Raises ``KeyError`` naming the targets that
    have no match (then nothing should be deleted)."""
    atol = check_non_negative(atol, "atol")
    taken = torch.zeros(stored.shape[0], dtype=torch.bool, device=stored.device)
    rows, missing = [], []
    for j, target in enumerate(targets):  # deletions are few; the scan over items is vectorised
        hits = (((stored - target).abs().amax(-1) <= atol) & ~taken).nonzero().flatten()
        if hits.numel() == 0:
            missing.append(j)
        else:
            taken[hits[0]] = True
            rows.append(int(hits[0]))
    if missing:
        raise KeyError(f"items {missing[:5]} are {what} (atol={atol}); nothing was deleted")
    return torch.tensor(rows, dtype=torch.long, device=stored.device)


def boltzmann_model(
    site: str, dim: int, log_density: Callable[[Tensor], Tensor], cue: Tensor | None, mask: Tensor | None,
    num_cues: int = 1,
) -> Tensor:
    """The Pyro model of an energy-based memory: ``p(z | M) ∝ exp(log_density(z))`` with the
    observed entries of a partial cue clamped.

    ``z`` is an improper flat site ``site`` (``[B, dim]`` under the plate ``"cues"``) scored by
    ``pyro.factor("energy", log_density(m ⊙ x + (1 - m) ⊙ z))``; a full cue (``mask=None``) only
    sets the batch size: in Hopfield reading the cue is the initial state, not an observation.  The
    site cannot be sampled (it is improper): condition it, or read it with ``"map"`` / ``"nuts"``.
    """
    size = cue.shape[0] if cue is not None else num_cues
    with pyro.plate("cues", size, dim=-1):
        z = pyro.sample(site, dist.ImproperUniform(constraints.real_vector, (size,), (dim,)))
        pyro.factor("energy", log_density(clamp(z, cue, mask)))
    return z
