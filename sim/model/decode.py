# Ref: docs/isa.md (the instruction word: header bits [0, 16), payload from bit 16; illegal
#      instructions); STYLE.md G4 (decode masks derived from the layouts, never hand-typed).
"""A fast instruction decoder derived from the ISA's Amaranth layouts.

:func:`nmsat.hw.isa.decode` reads a word through ``Layout.from_bits`` views, about 200 us per
word; a training step of 10^5 instructions would spend most of its simulation time there.
:func:`decode_fast` extracts the same fields with shifts and masks computed once, at import,
by iterating the layouts (each field's ``offset`` and ``width``), and then builds the
:class:`~nmsat.hw.isa.Instruction` with :func:`nmsat.hw.isa.make`, so the opcode rules and
their messages are the contract's own. It returns what ``isa.decode`` returns and raises
what it raises, message included, for every word (tests/sim/model/test_decode.py checks this
with hypothesis on legal and illegal words).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nmsat.hw import isa
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Opcode, Queue

__all__ = ["decode_fast", "opcode_of"]

# A field as the decoder reads it: name, bit offset in the word, mask after the shift, and the
# enum members by value (None for an unsigned field).
_Field = tuple[str, int, int, Mapping[int, Any] | None]


def _enum_values(shape: Any) -> Mapping[int, Any] | None:
    members = getattr(shape, "__members__", None)
    if members is None:
        return None
    return {member.value: member for member in members.values()}


def _fields(layout: Any, base: int) -> tuple[_Field, ...]:
    """Return the fields of a struct layout placed at bit ``base`` of the word."""
    return tuple(
        (name, base + field.offset, (1 << field.width) - 1, _enum_values(field.shape))
        for name, field in layout
    )


_HEADER_OFFSET: int = dict(isa.INSTR)["header"].offset
_PAYLOAD_OFFSET: int = dict(isa.INSTR)["payload"].offset
_HEADER = {
    name: (offset, mask, values)
    for name, offset, mask, values in _fields(isa.HEADER, _HEADER_OFFSET)
}
_OPCODE_OFFSET, _OPCODE_MASK, _opcode_values = _HEADER["opcode"]
_POP_OFFSET, _POP_MASK, _ = _HEADER["pop"]
_PUSH_OFFSET, _PUSH_MASK, _ = _HEADER["push"]
_RESERVED_OFFSET, _RESERVED_MASK, _ = _HEADER["reserved"]
assert _opcode_values is not None
_OPCODE_VALUES: Mapping[int, Opcode] = _opcode_values

# Per opcode: its payload fields (at their word offsets) and the number of payload bits used;
# every payload bit at or above that must be zero.
_PAYLOAD_FIELDS: dict[Opcode, tuple[_Field, ...]] = {
    op: _fields(layout, _PAYLOAD_OFFSET) for op, layout in isa.PAYLOADS.items()
}
_PAYLOAD_USED = {op: layout.size for op, layout in isa.PAYLOADS.items()}

# Queue tuples of every 5-bit token mask, in the order isa.decode lists them.
_MASK_QUEUES = tuple(
    tuple(q for q in Queue if mask >> q.value & 1) for mask in range(_POP_MASK + 1)
)
_WORD_LIMIT = 1 << isa.INSTR_BITS


def decode_fast(word: int) -> isa.Instruction:
    """Decode a 256-bit instruction word exactly as :func:`nmsat.hw.isa.decode` does.

    Parameters
    ----------
    word : int
        The instruction word, an unsigned integer below ``2**256``.

    Returns
    -------
    Instruction
        Equal to ``isa.decode(word)``.

    Raises
    ------
    IsaError
        With the message ``isa.decode`` gives: an undefined opcode or enum value, reserved or
        unused bits set, or a field breaking its opcode's rules.
    """
    if not 0 <= word < _WORD_LIMIT:
        raise IsaError(f"instruction word {word:#x} does not fit {isa.INSTR_BITS} bits")
    code = word >> _OPCODE_OFFSET & _OPCODE_MASK
    opcode = _OPCODE_VALUES.get(code)
    if opcode is None:
        raise IsaError(f"illegal instruction: opcode {code} is not defined")
    if word >> _RESERVED_OFFSET & _RESERVED_MASK:
        raise IsaError(f"illegal instruction: {opcode.name} has reserved header bits set")
    if word >> (_PAYLOAD_OFFSET + _PAYLOAD_USED.get(opcode, 0)):
        raise IsaError(f"illegal instruction: {opcode.name} has unused payload bits set")
    fields: dict[str, Any] = {}
    for name, offset, mask, values in _PAYLOAD_FIELDS.get(opcode, ()):
        value = word >> offset & mask
        if values is not None:
            member = values.get(value)
            if member is None:
                raise IsaError(
                    f"illegal instruction: {opcode.name} field {name} has an undefined value"
                )
            fields[name] = member
        else:
            fields[name] = value
    return isa.make(
        opcode,
        pop=_MASK_QUEUES[word >> _POP_OFFSET & _POP_MASK],
        push=_MASK_QUEUES[word >> _PUSH_OFFSET & _PUSH_MASK],
        **fields,
    )


def opcode_of(word: int) -> Opcode | None:
    """Return the opcode field of a word, or None when it is undefined or the word too wide."""
    if not 0 <= word < _WORD_LIMIT:
        return None
    return _OPCODE_VALUES.get(word >> _OPCODE_OFFSET & _OPCODE_MASK)
