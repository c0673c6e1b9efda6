"""Safe checkpoints: a memory's configuration as JSON plus its tensors, in one safetensors file.

Nothing is ever unpickled: the file is a safetensors container (tensors + a string header), so a
corrupt or hostile file can at worst fail to load.  The header's metadata holds::

    format = "varmem-checkpoint", format_version = "2", class = <memory class name>,
    config = <JSON of memory.config()>, dtype = "float32" | "float64" | ..., varmem_version,
    checksum = "sha256:<hex>"

The checksum (:func:`checksum`) covers every other metadata entry and, in name order, each
tensor's name, dtype, shape and raw bytes, so a flipped bit anywhere in the data (or an edited
header that still parses) is refused as a corrupt file.

Format versions: ``"2"`` (with the checksum) is the only one read.  Files of format ``"1"`` came
from development versions before any release and carry no checksum; they are refused with a
message that says so (load them with the older varmem and save them again).

What :func:`load` guarantees: it returns a fully loaded object or raises, and nothing else is
changed.  Refusals are :class:`CheckpointError` (a ``ValueError``) for a file that is not a
readable, intact, consistent checkpoint: unreadable or truncated safetensors, a foreign or garbled
header, a checksum mismatch, an unknown class, a config that no longer builds, missing or
unexpected tensors, a tensor whose dtype or shape does not fit the config, NaN or inf in a
floating tensor, or a state its class's ``check_state()`` refuses; ``FileNotFoundError`` for a
missing file.  Memories are filled through :meth:`varmem.memory.Memory.load_state_dict` (the one
code path for their state); registered non-memory modules get the same checks here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__
from .memory import Memory, memory_class
from .validation import resolve_device, resolve_dtype

__all__ = ["save", "load", "checksum", "CheckpointError", "register_checkpoint_class"]

FORMAT = "varmem-checkpoint"
FORMAT_VERSION = "2"
_CHECKSUM_PREFIX = "sha256:"


class CheckpointError(ValueError):
    """A file that is not a readable, intact, consistent varmem checkpoint."""


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


def checksum(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` of a checkpoint's content: every metadata entry but ``checksum`` (sorted by
    key), then for each tensor in name order its name, dtype, shape and raw (little-endian) bytes.
    Every field is length-prefixed, so no two different contents hash the same stream."""
    h = hashlib.sha256()

    def field(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for key in sorted(k for k in metadata if k != "checksum"):
        field(key.encode())
        field(str(metadata[key]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        field(name.encode())
        field(str(t.dtype).removeprefix("torch.").encode())
        field(json.dumps(list(t.shape)).encode())
        h.update((t.numel() * t.element_size()).to_bytes(8, "little"))
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return _CHECKSUM_PREFIX + h.hexdigest()


def save(memory: Memory | torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``memory`` (configuration and stored state) to ``path`` (a ``.safetensors`` file).

    ``memory`` is any varmem memory, or a module of a class registered with
    :func:`register_checkpoint_class` (e.g. :class:`varmem.VAE`).  A state that :func:`load` would
    refuse (NaN or inf) is refused here (``ValueError``), so every file written can be read back.
    The file is written to a temporary name and then renamed: an interrupted or failed save leaves
    an existing checkpoint at ``path`` as it was.
    """
    if not isinstance(memory, Memory) and type(memory).__name__ not in _MODULE_CLASSES:
        raise TypeError(f"save expects a varmem Memory or a registered module class, got {type(memory).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a directory (give a file path)")
    # clones: compact tensors that share no storage (a stored buffer may view a larger block)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in memory.state_dict().items()}
    for name, value in tensors.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"cannot save {type(memory).__name__}: state entry {name!r} contains NaN or inf")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(memory).__name__,
        "config": json.dumps(memory.config()),
        "dtype": str(_module_dtype(memory)).removeprefix("torch."),
        "varmem_version": __version__,
    }
    metadata["checksum"] = checksum(metadata, tensors)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)
    except (SafetensorError, OSError) as e:
        raise OSError(f"cannot save to {path}: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return path


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file, or :class:`CheckpointError`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if info.st_size == 0:
        raise CheckpointError(f"{path} is an empty file, not a checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not safetensors): {e}") from None
    return metadata, tensors


def _parse_header(path: Path, metadata: dict[str, str]) -> tuple[type[torch.nn.Module], dict[str, Any], torch.dtype]:
    """The class, config and dtype named by a checksum-verified header."""
    absent = [key for key in ("class", "config", "dtype") if key not in metadata]
    if absent:
        raise CheckpointError(f"{path} has an invalid varmem header: no {', '.join(map(repr, absent))} entry")
    try:
        cls = _class_named(metadata["class"])
        config = json.loads(metadata["config"])
        if not isinstance(config, dict):
            raise TypeError(f"config must be a JSON object, got {type(config).__name__}")
        dtype = resolve_dtype(metadata["dtype"])
        if dtype is None:
            raise TypeError("no dtype")
    except KeyError as e:  # an unknown class name
        raise CheckpointError(f"{path} has an invalid varmem header: {e.args[0]}") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid varmem header ({type(e).__name__}: {e})") from None
    return cls, config, dtype


def load(path: str | os.PathLike, *, device: torch.device | str | None = None) -> Memory | torch.nn.Module:
    """Read a checkpoint written by :func:`save`; returns a memory (or module) of the saved class.

    Raises ``FileNotFoundError`` for a missing file, :class:`CheckpointError` for a corrupt,
    foreign or inconsistent one (see the module docstring), and ``ValueError`` / ``TypeError``
    for a bad ``device``.  A failed load changes nothing.
    """
    device = resolve_device(device)  # a device this machine lacks is refused here
    path = Path(path)
    metadata, tensors = _read(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a varmem checkpoint (no varmem header)")
    version = metadata.get("format_version")
    if version == "1":
        raise CheckpointError(
            f"{path} has checkpoint format '1' (a development version, without a checksum); this varmem reads "
            f"format {FORMAT_VERSION!r}: load it with the varmem that wrote it and save it again"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}; this varmem reads {FORMAT_VERSION!r}")
    stored = metadata.get("checksum")
    if not isinstance(stored, str) or not stored.startswith(_CHECKSUM_PREFIX):
        raise CheckpointError(f"{path} has no valid checksum in its header (got {stored!r})")
    if checksum(metadata, tensors) != stored:
        raise CheckpointError(f"{path} is corrupt: its content does not match the checksum saved with it")
    cls, config, dtype = _parse_header(path, metadata)
    try:
        module = cls(**config, device=device, dtype=dtype)
    except Exception as e:  # whatever the constructor refuses: the file's config does not build
        raise CheckpointError(
            f"{path}: cannot rebuild {cls.__name__} from its saved config ({type(e).__name__}: {e})"
        ) from e
    try:
        if isinstance(module, Memory):
            module.load_state_dict(tensors)
        else:
            _load_module_state(module, tensors)
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError) as e:
        raise CheckpointError(f"{path}: stored state does not fit {cls.__name__}: {e}") from e
    return module


def _load_module_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Fill a freshly built registered module with ``tensors``, with the checks
    :meth:`varmem.memory.Memory.load_state_dict` makes for memories: keys, dtypes, every size the
    fresh module has non-zero, finite values, then ``check_state()``.  The module is fresh and
    dropped by the caller on failure, so nothing half-loaded is ever visible."""
    fresh = module.state_dict()
    missing, unexpected = sorted(set(fresh) - set(tensors)), sorted(set(tensors) - set(fresh))
    if missing or unexpected:
        raise ValueError(f"state does not match {type(module).__name__}: missing {missing}, unexpected {unexpected}")
    for name, value in tensors.items():
        want = fresh[name]
        if value.dtype != want.dtype:
            raise ValueError(f"state entry {name!r} has dtype {value.dtype}, expected {want.dtype}")
        fixed = want.shape
        if value.dim() != len(fixed) or any(f and v != f for v, f in zip(value.shape, fixed, strict=True)):
            shape = "[" + ", ".join(str(f) if f else "*" for f in fixed) + "]"
            raise ValueError(f"state entry {name!r} has shape {list(value.shape)}, expected {shape}")
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"state entry {name!r} contains NaN or inf")
    for name, value in tensors.items():
        prefix, _, attr = name.rpartition(".")
        owner = module.get_submodule(prefix) if prefix else module
        value = value.to(fresh[name].device)
        if attr in owner._parameters:
            owner._parameters[attr].data = value
        else:
            setattr(owner, attr, value)
    module.check_state()
    refresh = getattr(module, "refresh_derived_state", None)
    if callable(refresh):
        refresh()
