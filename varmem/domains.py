"""The value domain a memory expects its items and cues in, and the maps to and from data in ``[0, 1]``.

A memory declares its domain (``Memory.value_domain``); a comparison (:func:`varmem.compare`) keeps
data, corruptions and metrics in ``[0, 1]`` and maps them for each memory with :meth:`ValueDomain.encode`
and back with :meth:`ValueDomain.decode`, so no adapter is written by hand:

============  ======================  ==========================  ===============================
domain        values                  ``encode(x)`` of ``x ∈ [0,1]``  ``decode(y)``
============  ======================  ==========================  ===============================
``UNIT``      ``[0, 1]``              ``x``                       ``y``
``SIGNED``    ``[-1, 1]``             ``2x - 1``                  ``(y + 1) / 2``
``SPIN``      ``{-1, +1}``            ``+1 if x ≥ ½ else -1``     ``(y + 1) / 2``
============  ======================  ==========================  ===============================

``SPIN`` loses information (grey levels are thresholded at ½): a binary memory stores and recalls
the binarised item, and a comparison scores it against that, :meth:`ValueDomain.represent`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ValueDomain", "UNIT", "SIGNED", "SPIN", "DOMAINS"]


@dataclass(frozen=True)
class ValueDomain:
    """A value domain: its name, its range ``[low, high]`` and whether values are binary."""

    name: str
    low: float
    high: float
    binary: bool = False

    def encode(self, x: Tensor) -> Tensor:
        """Data in ``[0, 1]`` → this domain (an affine map, or a threshold at ½ for a binary domain)."""
        if self.binary:
            return torch.where(x >= 0.5, self.high, self.low).to(x.dtype)
        return self.low + (self.high - self.low) * x

    def decode(self, y: Tensor) -> Tensor:
        """Values of this domain → ``[0, 1]`` (the inverse of the affine map)."""
        return (y - self.low) / (self.high - self.low)

    def represent(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: data as a memory of this domain can hold it (``x`` itself unless binary)."""
        return self.decode(self.encode(x))

    def __str__(self) -> str:
        return "{-1, +1}" if self.binary else f"[{self.low:g}, {self.high:g}]"


UNIT = ValueDomain("unit", 0.0, 1.0)
"""``[0, 1]``: pixel intensities as they are (the default)."""
SIGNED = ValueDomain("signed", -1.0, 1.0)
"""``[-1, 1]``: centred data (BayesPCN's and the Hopfield papers' convention)."""
SPIN = ValueDomain("spin", -1.0, 1.0, binary=True)
"""``{-1, +1}``: bipolar spins of the binary Hopfield memories."""

DOMAINS = {d.name: d for d in (UNIT, SIGNED, SPIN)}
