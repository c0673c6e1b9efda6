"""Safe checkpoints: a memory's configuration as JSON plus its tensors, in one safetensors file.

Nothing is ever unpickled: the file is a safetensors container (tensors + a string header), so a
corrupt or hostile file can at worst fail to load.  The header's metadata holds::

    format = "varmem-checkpoint", format_version = "1", class = <memory class name>,
    config = <JSON of memory.config()>, dtype = "float32" | "float64" | ..., varmem_version
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__
from .memory import Memory, memory_class

__all__ = ["save", "load", "CheckpointError", "register_checkpoint_class"]

FORMAT = "varmem-checkpoint"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A file that is not a readable, consistent varmem checkpoint."""


# Modules other than memories that checkpoints may hold (trained models such as varmem.VAE).  Like
# a memory, such a class is rebuilt as ``cls(**config, device=..., dtype=...)`` and must define
# ``config()`` (JSON-able constructor arguments) and ``check_state()``.
_MODULE_CLASSES: dict[str, type[torch.nn.Module]] = {}


def register_checkpoint_class(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Let :func:`save` / :func:`load` handle ``cls`` (memories are registered automatically)."""
    for hook in ("config", "check_state"):
        if not callable(getattr(cls, hook, None)):
            raise TypeError(f"{cls.__name__} needs a {hook}() method to be checkpointed")
    _MODULE_CLASSES[cls.__name__] = cls
    return cls


def _class_named(name: str) -> type[torch.nn.Module]:
    return _MODULE_CLASSES[name] if name in _MODULE_CLASSES else memory_class(name)


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    if isinstance(module, Memory):
        return module.dtype
    floating = [t.dtype for t in module.state_dict().values() if t.is_floating_point()]
    return floating[0] if floating else torch.get_default_dtype()


def save(memory: Memory | torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``memory`` (configuration and stored state) to ``path`` (a ``.safetensors`` file).

    ``memory`` is any varmem memory, or a module of a class registered with
    :func:`register_checkpoint_class` (e.g. :class:`varmem.VAE`).
    """
    if not isinstance(memory, Memory) and type(memory).__name__ not in _MODULE_CLASSES:
        raise TypeError(f"save expects a varmem Memory or a registered module class, got {type(memory).__name__}")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in memory.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(memory).__name__,
        "config": json.dumps(memory.config()),
        "dtype": str(_module_dtype(memory)).removeprefix("torch."),
        "varmem_version": __version__,
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not safetensors): {e}") from None
    return metadata, tensors


def load(path: str | os.PathLike, *, device: torch.device | str | None = None) -> Memory | torch.nn.Module:
    """Read a checkpoint written by :func:`save`; returns a memory (or module) of the saved class.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a corrupt,
    foreign or inconsistent one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    metadata, tensors = _read(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a varmem checkpoint (no varmem header)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {metadata.get('format_version')!r}; this varmem reads {FORMAT_VERSION!r}"
        )
    try:
        cls = _class_named(metadata["class"])
        config: dict[str, Any] = json.loads(metadata["config"])
        dtype = getattr(torch, metadata["dtype"])
        if not isinstance(dtype, torch.dtype):
            raise TypeError(metadata["dtype"])
    except (KeyError, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{path} has an invalid varmem header ({type(e).__name__}: {e})") from None
    try:
        memory = cls(**config, device=device, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild {cls.__name__} from its saved config: {e}") from None
    _assign_state(memory, tensors, path)
    return memory


def _assign_state(memory: Memory | torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(memory.state_dict())
    if set(tensors) != expected:
        raise CheckpointError(
            f"{path} does not match {type(memory).__name__}: missing {sorted(expected - set(tensors))}, "
            f"unexpected {sorted(set(tensors) - expected)}"
        )
    for name, value in tensors.items():
        prefix, _, attr = name.rpartition(".")
        owner = memory.get_submodule(prefix) if prefix else memory
        current = getattr(owner, attr)
        if value.dtype != current.dtype:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {value.dtype}, expected {current.dtype}")
        if value.dim() != current.dim():
            raise CheckpointError(f"{path}: tensor {name!r} has {value.dim()} dims, expected {current.dim()}")
        value = value.to(current.device)
        if name in dict(owner.named_buffers(recurse=False)):
            setattr(owner, attr, value)
        else:
            with torch.no_grad():
                current.data = value
    try:
        memory.check_state()
    except ValueError as e:
        raise CheckpointError(f"{path}: stored state is invalid: {e}") from None
    if hasattr(memory, "refresh_derived_state"):
        memory.refresh_derived_state()
