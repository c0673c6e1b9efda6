"""What a results file records about the run: package versions, device, threads, platform.

Every experiment and benchmark writes :func:`environment` into its JSON next to its seed and
settings, so a number can always be traced to the software and the machine that produced it.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator

import torch

__all__ = ["versions", "environment", "torch_threads"]


def versions() -> dict[str, str]:
    """Versions of Python and of the packages varmem's results depend on."""
    import matplotlib
    import numpy
    import pyro

    from ._version import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "varmem": __version__,
    }


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """``versions``, ``device`` (and its name), ``platform``, CPU count, torch threads, load average."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "versions": versions(),
        "device": str(device),
        "device_name": name,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``None``: leave torch's setting), then restore."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
