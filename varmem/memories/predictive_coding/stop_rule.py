"""The early stop of a predictive-coding relaxation (:class:`StopRule`), shared by the ``"pc"`` and
``"pc_pyro"`` reads and by BayesPCN's writes."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["StopRule"]


class StopRule:
    """The early stop of a relaxation, fed the energies ``E_t`` (``[B]`` or ``[K, B]``, one entry
    per cue) after every step; :meth:`update` returns True when the relaxation should stop.

    * ``tol > 0``: stop when every energy changed by at most ``tol`` in the same step (the official
      BayesPCN test ``|E_t − E_{t−1}| ≤ tol``).
    * ``rtol > 0``, ``window = 1``: a cue is *settled* once, at some step, ``|E_t − E_{t−1}| ≤
      rtol·|E_t|`` (sticky); stop when every cue is settled.
    * ``rtol > 0``, ``window = W > 1``: the energies are averaged over consecutive blocks of ``W``
      steps (steps 1…W, W+1…2W, …); at the end of block ``j ≥ 2`` a cue is settled (sticky) when
      its mean fell by at most ``rtol·W·|mean_j|`` since block ``j−1`` (an average descent of at
      most ``rtol·|E|`` per step): ``S_{j−1} − S_j ≤ rtol·W·|S_j|`` with ``S`` the block sums.
      Adam at a fixed step size never settles; its energies oscillate by ~1e-3 relative per step
      around a slow descent, so a one-step test fires on a chance crossing, the block means
      measure the descent itself.

    ``converged`` (after the last update): the cues whose last step passed the absolute test or
    that are settled.
    """

    def __init__(self, tol: float = 0.0, rtol: float = 0.0, window: int = 1) -> None:
        self.tol, self.rtol, self.window = float(tol), float(rtol), int(window)
        self.active = self.tol > 0 or self.rtol > 0
        self.prev: Tensor | None = None
        self.settled: Tensor | None = None
        self.converged: Tensor | None = None
        self.block: Tensor | None = None
        self.prev_block: Tensor | None = None
        self.t = 0

    def update(self, e: Tensor) -> bool:
        if not self.active:
            return False
        self.t += 1
        if self.settled is None:
            self.settled = torch.zeros_like(e, dtype=torch.bool)
        stop = False
        if self.prev is not None:
            change = (e - self.prev).abs_()
            self.converged = change <= self.tol
            stop = self.tol > 0 and bool(self.converged.all())
            if self.rtol > 0 and self.window == 1:
                self.settled = torch.le(change, e.abs().mul_(self.rtol)).logical_or_(self.settled)
        if self.rtol > 0 and self.window > 1:
            self.block = e.clone() if self.block is None else self.block.add_(e)
            if self.t % self.window == 0:
                if self.prev_block is not None:
                    drop = self.prev_block - self.block
                    self.settled = torch.le(drop, self.block.abs().mul_(self.rtol * self.window)).logical_or_(
                        self.settled)
                self.prev_block, self.block = self.block, None
        if self.converged is not None and self.rtol > 0:
            self.converged = self.converged.logical_or_(self.settled)
        if self.rtol > 0 and bool(self.settled.all()):
            stop = True
        self.prev = e
        return stop
