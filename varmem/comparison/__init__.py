"""Comparing memories: every memory on the same items, corruptions and metrics (:func:`compare`),
the default memories configured as their papers do (:func:`default_contenders`), and the figures."""

from .presets import FAMILIES, default_contenders
from .run import ROW_COLUMNS, ComparisonError, Contender, compare

__all__ = ["compare", "Contender", "ComparisonError", "default_contenders", "FAMILIES", "ROW_COLUMNS"]
