"""Storage capacity of the associative memories: the largest ``N`` stored at ≥ 99 % accuracy.

The paper's protocol (``linear_AM.ipynb``, ``mlp_sweep.py``): for a memory of fixed size, write
``N`` random unit-norm keys (:func:`~varmem.memories.factual.random_embeddings`, identity map) and
call it stored when the accuracy ``(1/N) Σ_i [argmax_j u_jᵀ F(e_i) = i]`` is at least 0.99; binary
search over ``N`` in ``[lo, hi]`` until ``hi / lo ≤ 1.01``.  Reference lines of the official
plots: trained linear ``d² = 1.3 N ln N``, MLP ``m d = 0.35 N ln N`` (eyeballed guide lines, not
fitted constants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ...validation import check_int, check_positive, check_seed
from .associative import AssociativeMemory, random_embeddings

__all__ = ["CapacityResult", "stores", "max_capacity", "n_log_n"]


def n_log_n(n: float) -> float:
    """``N ln N`` (natural log, as in the paper's guide lines)."""
    return n * math.log(n) if n > 1 else 0.0


@dataclass
class CapacityResult:
    """What :func:`max_capacity` returns: ``capacity`` (the largest ``N`` found stored; 0 if none),
    ``first_failing`` (the smallest ``N`` found not stored, or None), ``tried`` (``(N, accuracy,
    training steps)`` per trial, in order)."""

    capacity: int
    first_failing: int | None
    tried: list[tuple[int, float, int]] = field(default_factory=list)


def stores(build: Callable[[], AssociativeMemory], n: int, seed: int = 0,
           threshold: float = 0.99) -> tuple[bool, float, int]:
    """``(stored, accuracy, steps)``: write ``n`` keys from ``random_embeddings(n, D, seed)`` into
    ``build()`` and compare its accuracy with ``threshold``."""
    memory = build()
    keys = random_embeddings(n, memory.dim, seed, dtype=memory.dtype, device=memory.device)
    memory.write(keys)
    acc = memory.accuracy()
    return acc >= threshold, acc, int(memory.last_fit.get("steps", 0))


def max_capacity(
    build: Callable[[], AssociativeMemory], lo: int, hi: int, *, seed: int = 0, threshold: float = 0.99,
    ratio: float = 1.01, on_trial: Callable[[int, float], None] | None = None,
) -> CapacityResult:
    """Binary search of the largest stored ``N`` in ``[lo, hi]`` (stop when ``hi/lo ≤ ratio``).

    ``lo`` is halved until it is stored (down to 1), and ``hi`` doubled while it is stored (the
    search assumes accuracy falls with ``N``, which holds up to sampling noise)."""
    lo = check_int(lo, "lo", minimum=1)
    hi = check_int(hi, "hi", minimum=lo)
    seed = check_seed(seed)
    check_positive(threshold, "threshold")
    if check_positive(ratio, "ratio") <= 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    tried: list[tuple[int, float, int]] = []
    known: dict[int, bool] = {}

    def trial(n: int) -> bool:
        if n not in known:
            ok, acc, steps = stores(build, n, seed, threshold)
            tried.append((n, acc, steps))
            known[n] = ok
            if on_trial is not None:
                on_trial(n, acc)
        return known[n]

    while not trial(lo):
        if lo == 1:
            return CapacityResult(0, 1, tried)
        hi, lo = lo, max(1, lo // 2)
    while trial(hi):
        lo, hi = hi, 2 * hi
    while hi / lo > ratio and hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return CapacityResult(lo, hi, tried)
