"""Validation of engine options (clear errors naming the option)."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int", "non_negative", "choice"]


def positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"option {name} must be an int {bound}, got {value!r}")
    return value


def non_negative(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"option {name} must be a number, got {value!r}") from None
    if not v >= 0:
        raise ValueError(f"option {name} must be >= 0, got {value!r}")
    return v


def choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"option {name} must be one of {list(choices)}, got {value!r}")
    return value
