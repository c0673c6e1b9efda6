"""Input validation for every public entry point: clear errors that name the argument and the problem.

One module for all checks (constructors, ``write`` / ``forget`` / ``delete``, ``retrieve`` and its
engine options, ``energy``), so that a value refused in one place is refused everywhere, with the
same words.  Numbers are checked for their type first: a bool is not a number here, a string is not
a tolerance, and a NaN is refused where a finite value is needed.

Supported range of values: entries of stored items, cues and states must be finite with
``|x| ≤ MAX_ABS_VALUE`` (``1e6``).  Memories square and sum such values (squared distances, dot
products over ``D`` dimensions); within this range that stays far from float32's overflow at
``3.4e38`` for any ``D`` a memory can hold, while a value like ``1e30`` would overflow to ``inf`` and
then turn into NaN inside a read.  Rescale data that is larger.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MAX_ABS_VALUE",
    "as_items",
    "as_cue",
    "as_mask",
    "as_state",
    "all_finite",
    "check_values",
    "in_range",
    "DIVERGED",
    "check_representable",
    "check_number",
    "check_positive",
    "check_non_negative",
    "check_finite",
    "check_int",
    "check_positive_int",
    "check_int_sequence",
    "check_bool",
    "check_choice",
    "check_unit_interval",
    "check_seed",
    "MAX_SEED",
    "check_generator",
    "resolve_dtype",
    "resolve_device",
    "check_names",
    "check_device",
    "check_output_folder",
]

MAX_ABS_VALUE = 1e6
"""Largest magnitude accepted in items, cues and states (see the module docstring)."""

_DTYPE_NAMES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                "float": torch.float32, "float64": torch.float64, "double": torch.float64}


# --- numbers and options ------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, str):
        return False
    if isinstance(value, numbers.Real):
        return True
    return torch.is_tensor(value) and value.numel() == 1 and not value.dtype == torch.bool and not value.is_complex()


def check_number(value: Any, name: str) -> float:
    """A real number (not a bool, not a string); returned as a float (may be inf or NaN)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_finite(value: Any, name: str) -> float:
    """A finite real number."""
    v = check_number(value, name)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def check_positive(value: Any, name: str) -> float:
    """A finite number ``> 0``."""
    v = check_number(value, name)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_non_negative(value: Any, name: str) -> float:
    """A finite number ``≥ 0``."""
    v = check_number(value, name)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_unit_interval(value: Any, name: str) -> float:
    """A number in ``[0, 1]``."""
    v = check_number(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def check_int(value: Any, name: str, *, minimum: int | None = None, allow_none: bool = False) -> Any:
    """An int (not a bool) ``≥ minimum``, or None where ``allow_none``; returned unchanged."""
    if allow_none and value is None:
        return None
    bound = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int{bound}{' or None' if allow_none else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int{bound}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """An int ``≥ 1`` (not a bool), or None where ``allow_none``."""
    return check_int(value, name, minimum=1, allow_none=allow_none)


def check_int_sequence(
    value: Any, name: str, *, minimum: int = 1, lengths: Sequence[int] | None = None, allow_empty: bool = False
) -> tuple:
    """A sequence of ints ``≥ minimum`` (a lone int counts as a sequence of one): shapes, layer
    widths.  ``lengths``: the allowed numbers of entries; empty only where ``allow_empty``.  Returned
    as a tuple of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    out = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in out):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    if (not out and not allow_empty) or (lengths is not None and len(out) not in lengths) or any(
            v < minimum for v in out):
        counts = "" if lengths is None else f" with {' or '.join(map(str, lengths))} entries"
        raise ValueError(f"{name} must be a non-empty sequence{counts} of ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in out)


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """``True`` or ``False`` (or None where ``allow_none``); ``"yes"``, ``1`` and arrays are refused."""
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (compared with ``==``, so unhashable values are refused cleanly)."""
    if any(value is c or (type(value) is type(c) and value == c) for c in choices):
        return value
    raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


MAX_SEED = 2**64 - 1
"""Largest seed a ``torch.Generator`` takes (seeds are unsigned 64-bit)."""


def check_seed(value: Any, name: str = "seed", *, allow_none: bool = False) -> Any:
    """An int in ``[0, 2**64 - 1]`` usable as a ``torch.Generator`` seed (or None where
    ``allow_none``); returned as a Python int (numpy ints included)."""
    seed = check_int(value, name, minimum=0, allow_none=allow_none)
    if seed is not None and seed > MAX_SEED:
        raise ValueError(f"{name} must be at most 2**64 - 1 (a torch.Generator seed), got {value!r}")
    return seed


def check_generator(value: Any, name: str = "generator") -> torch.Generator | None:
    """A ``torch.Generator`` or None."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_representable(value: float, name: str, dtype: torch.dtype) -> float:
    """A derived number (a variance ``σ²``, a precision ``1/s²``) that a memory stores or computes in
    ``dtype``: ``ValueError`` naming it when it overflows that dtype or underflows to 0 (float32
    holds ``1.2e-38 … 3.4e38``), instead of a RuntimeError or an inf later."""
    info = torch.finfo(dtype)
    if not (value == 0 or info.tiny <= abs(value) <= info.max):
        raise ValueError(f"{name} = {value:g} is outside the range of {dtype} ({info.tiny:g} … {info.max:g}): "
                         "moderate the settings or use float64")
    return value


def resolve_dtype(value: Any, name: str = "dtype") -> torch.dtype | None:
    """A floating ``torch.dtype`` (or its name, ``"float32"`` / ``"float64"`` ...), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        key = value.removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ValueError(f"{name} must be a floating dtype such as 'float32' or 'float64', got {value!r}")
        return _DTYPE_NAMES[key]
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch dtype or its name, got {type(value).__name__} {value!r}")
    if not value.is_floating_point:
        raise TypeError(f"{name} must be a floating dtype, got {value}")
    return value


def resolve_device(value: Any, name: str = "device") -> torch.device | None:
    """A ``torch.device`` (or its name, ``"cpu"``, ``"cuda:1"`` ...), or None.  A CUDA or MPS
    device that this machine does not have is refused here (``ValueError``), not by the first
    tensor created on it."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = torch.device(value)
        except RuntimeError as e:
            raise ValueError(f"{name} {value!r} is not a torch device ({e})") from None
    if not isinstance(value, torch.device):
        raise TypeError(f"{name} must be a torch.device or its name, got {type(value).__name__} {value!r}")
    if value.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(value)!r} requested but CUDA is not available on this machine")
        if value.index is not None and value.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(value)!r} requested but this machine has {torch.cuda.device_count()} "
                             "CUDA devices")
    elif value.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {str(value)!r} requested but MPS is not available on this machine")
    return value


# --- tensors ------------------------------------------------------------------------------------
def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite.

    One reduction: a NaN or inf entry makes the sum non-finite; only when the sum is not finite
    (which a sum of huge finite entries can also be) is the elementwise test run.
    """
    return math.isfinite(x.sum().item()) or bool(torch.isfinite(x).all())


def _as_float_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not torch.is_tensor(x):
        if isinstance(x, (np.ndarray, list, tuple)):
            try:
                x = torch.as_tensor(np.asarray(x))
            except (TypeError, ValueError) as e:
                raise TypeError(f"{name} must be a numeric tensor or array ({e})") from None
        else:
            raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.is_complex() or not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must have a floating dtype, got {x.dtype}; convert it first (e.g. x.float() / 255)"
        )
    return x.to(device=device, dtype=dtype).contiguous()


DIVERGED = MAX_ABS_VALUE**2
"""Iterative engines take a state beyond ``±DIVERGED`` (the square of the supported range, so its
squares still fit float32) for a diverged one and stop with ``FloatingPointError``."""


def in_range(x: Tensor, limit: float = MAX_ABS_VALUE) -> bool:
    """Whether every entry of ``x`` is finite and within ``±limit`` (default: the supported range)."""
    return all_finite(x) and (x.numel() == 0 or float(x.abs().max()) <= limit)


def check_values(x: Tensor, name: str, where: str = "") -> None:
    """Raise ``ValueError`` unless every entry of ``x`` is finite and within ``±MAX_ABS_VALUE`` (the
    supported range of items, cues, states and start states; the rows at fault are named)."""
    if in_range(x):
        return
    flat = x.reshape(-1, x.shape[-1]) if x.dim() else x.reshape(1, 1)
    bad_rows = (~torch.isfinite(flat).all(-1)).nonzero().flatten()
    if bad_rows.numel():
        rows = bad_rows[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf{where} (rows {rows}{'...' if bad_rows.numel() > 5 else ''})")
    rows = (flat.abs() > MAX_ABS_VALUE).any(-1).nonzero().flatten()[:5].tolist()
    raise ValueError(
        f"{name} has entries beyond ±{MAX_ABS_VALUE:g} (rows {rows}), outside the supported range; rescale the data"
    )


def as_items(items: Any, dim: int, dtype: torch.dtype, device: torch.device, name: str = "items") -> Tensor:
    """Items to store or delete: ``[N, D]`` or one item ``[D]``, finite, in range → ``[N, D]``."""
    x = _as_float_tensor(items, name, dtype, device)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape [N, {dim}] or [{dim}], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    check_values(x, name)
    return x


def as_mask(mask: Any, batch: int, dim: int, device: torch.device) -> Tensor | None:
    """A boolean mask (``True`` = observed) of shape ``[D]`` or ``[B, D]`` with something observed per cue."""
    if mask is None:
        return None
    if not torch.is_tensor(mask):
        if not isinstance(mask, (np.ndarray, list, tuple)):
            raise TypeError(f"mask must be a bool tensor (True = observed), got {type(mask).__name__}")
        try:
            mask = torch.as_tensor(np.asarray(mask))
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"mask must be a bool tensor or array (True = observed) ({e})") from None
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = observed), got dtype {mask.dtype}")
    if mask.shape not in ((dim,), (batch, dim)):
        raise ValueError(f"mask must have shape [{dim}] or [{batch}, {dim}], got {tuple(mask.shape)}")
    mask = mask.to(device).contiguous()
    empty = ~mask.any(-1)
    if empty.any():
        which = "the mask" if mask.dim() == 1 else f"cues {empty.nonzero().flatten()[:5].tolist()}"
        raise ValueError(f"mask has nothing observed for {which}: at least one entry per cue must be True")
    return mask


def as_cue(cue: Any, mask: Any, dim: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Validate a cue ``[B, D]`` (or ``[D]``) and its mask; return ``(cue, mask)`` (contiguous).

    Unobserved entries (mask ``False``) are never read: they may hold NaN and are replaced by 0.
    Observed entries must be finite and within ``±MAX_ABS_VALUE``.
    """
    x = _as_float_tensor(cue, "cue", dtype, device)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != dim:
        raise ValueError(f"cue must have shape [B, {dim}] or [{dim}], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("cue is empty (no cues in the batch)")
    m = as_mask(mask, x.shape[0], dim, device)
    if m is not None:
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if not all_finite(x):
        rows = (~torch.isfinite(x).all(-1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"cue contains NaN or inf in observed entries (cues {rows})")
    check_values(x, "cue")
    return x, m


def as_state(z: Any, dim: int, dtype: torch.dtype, device: torch.device, name: str = "z") -> Tensor:
    """A state (latent) ``[..., dim]`` at which an energy is evaluated: non-empty, finite, in range;
    returned contiguous, so that every spelling of the same states gives bit-identical energies.

    Keeps autograd: a ``z`` that requires grad is converted with differentiable ops only.
    """
    if not torch.is_tensor(z):
        z = _as_float_tensor(z, name, dtype, device)
    elif z.is_complex() or not torch.is_floating_point(z):
        raise TypeError(f"{name} must have a floating dtype, got {z.dtype}")
    else:
        z = z.to(device=device, dtype=dtype)
    if z.dim() == 0 or z.shape[-1] != dim:
        raise ValueError(f"{name} must have shape [..., {dim}], got {tuple(z.shape)}")
    if z.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(z.shape)}): give at least one state")
    check_values(z.detach(), name)
    return z.contiguous()


# --- the command line's settings -----------------------------------------------------------------
def check_names(names: Any, valid: Sequence[str], what: str) -> tuple[str, ...]:
    """One or more of ``valid`` (a name or a sequence), repeats dropped, order kept."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError(f"at least one {what} is needed; valid names are {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown {what} {name!r}; valid names are {', '.join(valid)}")
    return tuple(dict.fromkeys(names))  # drop repeats, keep the order


def check_device(device: Any) -> str:
    """``"cpu"`` or an available ``"cuda[:N]"`` (as a string)."""
    resolved = resolve_device(device)  # refuses non-devices and devices this machine lacks
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return str(device)


def check_output_folder(output: Any, files: Sequence[str] = ()) -> str:
    """A folder path that is not a file and can be created / written (it is created by the run), and
    in which none of ``files`` is a folder."""
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a folder path, got {type(output).__name__}")
    text = os.fspath(output)
    if not str(text).strip():
        raise ValueError("output must be a folder path, got an empty string")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"output {str(path)!r} is an existing file, not a folder")
        for name in files:
            if (path / name).is_dir():
                raise ValueError(f"output folder {str(path)!r} holds a folder named {name!r} where the file goes")
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"output {str(path)!r} cannot be created: {str(existing)!r} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"output {str(path)!r} is not writable (no write permission in {str(existing)!r})")
    except OSError as e:
        raise ValueError(f"output {str(path)!r} cannot be used: {e.strerror or e}") from None
    return str(text)
