"""The sparse tensor computing engine (STCE): the systolic array and its processing elements."""

from .array import STCE
from .pe import ProcessingElement

__all__ = ["STCE", "ProcessingElement"]
