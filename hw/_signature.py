# Ref: Amaranth 0.5 amaranth.lib.wiring (Signature subclasses define __eq__ when their members
#      depend on constructor arguments; "Signature equality" in the wiring reference).
"""ParameterizedSignature: a wiring.Signature that is equal to another with equal parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amaranth.lib import wiring

__all__ = ["ParameterizedSignature"]


class ParameterizedSignature(wiring.Signature):
    """A signature whose members follow from a few keyword parameters.

    Two instances are equal (and hash equally) when they are of the same class and were built
    with equal parameters; ``repr`` shows the class and the parameters. Subclasses call
    ``super().__init__(members, name=value, ...)``.

    Parameters
    ----------
    members : mapping of str to wiring.Member
        The members, as for :class:`amaranth.lib.wiring.Signature`.
    **parameters
        The values the members were built from (their names and values, in order).
    """

    def __init__(self, members: Mapping[str, Any], **parameters: Any) -> None:
        self._parameters = tuple(parameters.items())
        super().__init__(members)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._parameters == self._parameters

    def __hash__(self) -> int:
        return hash((type(self), self._parameters))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self._parameters)
        return f"{type(self).__name__}({args})"
