# Ref: hw/isa.py (the same device for the ISA's enums); docs/decisions.md (Amaranth ships no
#      type information).
"""ShapedEnum: Amaranth's enum with a shape, typed for mypy as the standard enum it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ShapedEnum"]

if TYPE_CHECKING:
    import enum as _std_enum

    class ShapedEnum(_std_enum.Enum):
        def __init_subclass__(cls, *, shape: int = 0, **kwargs: Any) -> None: ...
else:
    from amaranth.lib.enum import Enum as ShapedEnum
