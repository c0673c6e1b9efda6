"""Scaffolding for the small memories tests define: a growing ``items`` buffer.

``class M(StoredItems, varmem.MixturePriorMemory)`` then needs only its ``prior`` / ``likelihood``
(or ``compute_energy``); ``config_fields`` names the constructor arguments ``config()`` reports.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class StoredItems:
    """``items [N, dim]`` appended by ``write``; ``len`` is ``N``; ``config`` is ``dim`` plus
    ``config_fields`` (attributes of the same names)."""

    config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int, **kw: Any) -> None:
        super().__init__(dim, **kw)
        self.register_buffer("items", torch.empty(0, dim))

    def write(self, items: Any) -> "StoredItems":
        self.items = torch.cat([self.items, self.prepare_items(items)])
        return self

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, **{name: getattr(self, name) for name in self.config_fields}}
