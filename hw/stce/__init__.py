"""The sparse tensor computing engine (STCE): the systolic array and its processing elements."""

from .pe import ProcessingElement

__all__ = ["ProcessingElement"]
