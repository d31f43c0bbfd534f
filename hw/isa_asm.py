"""Text assembly, disassembly and the binary program file of the nmsat ISA.

Assembly is one instruction per line: the opcode, optional token masks, then ``field=value``
pairs in any order; fields left out are zero; ``#`` starts a comment::

    LOAD pop=compute buffer=ACT buf_addr=0 dram_addr=0x1000 dram_stride=64 rows=4 cols=64
    GEMM push=store n=2 m=8 dataflow=WS interleave=3 rows=4 cols=16 depth=32
    HALT

Enum values are written by name (any case), numbers in decimal or ``0x`` hex. The
disassembler writes every field in layout order, so ``assemble(disassemble(words)) == words``.

A program file (``.nmsb``) is a 16-byte header (magic ``NMSATPRG``, format version and
instruction count, little-endian 32-bit integers) followed by the 32-byte instruction words,
little endian. Writers go through a temporary file and a rename, never half-written.

Ref: STYLE.md G4 (assembler beside the ISA), G18 (atomic writes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import IsaError
from .files import write_atomic
from .isa import INSTR_BITS, INSTR_BYTES, PAYLOADS, Instruction, Opcode, Queue, decode, make

__all__ = [
    "PROGRAM_MAGIC",
    "PROGRAM_VERSION",
    "assemble",
    "assemble_line",
    "disassemble",
    "format_instruction",
    "program_from_bytes",
    "program_to_bytes",
    "read_program",
    "write_program",
]

PROGRAM_MAGIC = b"NMSATPRG"
PROGRAM_VERSION = 1
_HEADER = struct.Struct("<8sII")

# Fields shown in hexadecimal by the disassembler.
_HEX_FIELDS = frozenset({"dram_addr", "imm"})


def _format_queues(queues: Iterable[Queue]) -> str:
    return ",".join(q.name.lower() for q in queues)


def format_instruction(instr: Instruction) -> str:
    """Return the assembly text of one instruction (all fields, in layout order)."""
    parts = [instr.opcode.name]
    if instr.pop:
        parts.append(f"pop={_format_queues(instr.pop)}")
    if instr.push:
        parts.append(f"push={_format_queues(instr.push)}")
    for name, value in instr.args:
        if hasattr(value, "name"):
            text = value.name
        elif name in _HEX_FIELDS:
            text = f"{value:#x}"
        else:
            text = str(value)
        parts.append(f"{name}={text}")
    return " ".join(parts)


def disassemble(words: Iterable[int]) -> str:
    """Return the assembly text of a sequence of instruction words, one per line."""
    return "".join(format_instruction(decode(word)) + "\n" for word in words)


def _parse_queues(text: str) -> list[Queue]:
    queues = []
    for name in filter(None, text.split(",")):
        try:
            queues.append(Queue[name.strip().upper()])
        except KeyError:
            allowed = ", ".join(q.name.lower() for q in Queue)
            raise IsaError(f"unknown queue {name!r}; queues: {allowed}") from None
    return queues


def _parse_value(opcode: Opcode, name: str, text: str) -> Any:
    layout = PAYLOADS.get(opcode)
    fields = dict(layout) if layout is not None else {}
    if name not in fields:
        names = ", ".join(fields) or "none"
        raise IsaError(f"{opcode.name}: unknown field {name!r}; fields: {names}")
    shape = fields[name].shape
    members = getattr(shape, "__members__", None)
    if members is not None:
        try:
            return members[text.upper()]
        except KeyError:
            allowed = ", ".join(members)
            raise IsaError(f"{opcode.name}: {name}={text} is not one of {allowed}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise IsaError(f"{opcode.name}: {name}={text!r} is not an integer") from None


def assemble_line(line: str) -> Instruction | None:
    """Parse one line of assembly; return None for a blank or comment-only line."""
    code = line.split("#", 1)[0].strip()
    if not code:
        return None
    head, *items = code.split()
    try:
        opcode = Opcode[head.upper()]
    except KeyError:
        allowed = ", ".join(op.name for op in Opcode)
        raise IsaError(f"unknown opcode {head!r}; opcodes: {allowed}") from None
    pop: list[Queue] = []
    push: list[Queue] = []
    fields: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not text:
            raise IsaError(f"{opcode.name}: expected field=value, got {item!r}")
        if name in fields or (name in ("pop", "push") and (pop if name == "pop" else push)):
            raise IsaError(f"{opcode.name}: field {name!r} given twice")
        if name == "pop":
            pop = _parse_queues(text)
        elif name == "push":
            push = _parse_queues(text)
        else:
            fields[name] = _parse_value(opcode, name, text)
    return make(opcode, pop=pop, push=push, **fields)


def assemble(text: str) -> list[int]:
    """Assemble a program; errors name the line.

    Raises
    ------
    IsaError
        ``line N: <what is wrong>``.
    """
    words = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            instr = assemble_line(line)
        except IsaError as exc:
            raise IsaError(f"line {number}: {exc}") from None
        if instr is not None:
            words.append(instr.encode())
    return words


def program_to_bytes(words: Sequence[int]) -> bytes:
    """Return the program file contents for ``words``."""
    body = b"".join(word.to_bytes(INSTR_BYTES, "little") for word in words)
    return _HEADER.pack(PROGRAM_MAGIC, PROGRAM_VERSION, len(words)) + body


def program_from_bytes(blob: bytes, *, check: bool = True) -> list[int]:
    """Parse program file contents; with ``check``, decode every word too.

    Raises
    ------
    IsaError
        For a wrong magic or version, a truncated file, or (with ``check``) an illegal
        instruction, naming the instruction's index.
    """
    if len(blob) < _HEADER.size:
        raise IsaError(f"not an nmsat program: {len(blob)} bytes, shorter than its header")
    magic, version, count = _HEADER.unpack_from(blob)
    if magic != PROGRAM_MAGIC:
        raise IsaError(f"not an nmsat program: magic {magic!r}, expected {PROGRAM_MAGIC!r}")
    if version != PROGRAM_VERSION:
        raise IsaError(f"program format version {version} is not supported (only 1)")
    expected = _HEADER.size + count * INSTR_BYTES
    if len(blob) != expected:
        raise IsaError(
            f"corrupt program: header says {count} instructions ({expected} bytes), "
            f"file has {len(blob)} bytes"
        )
    words = [
        int.from_bytes(blob[offset : offset + INSTR_BYTES], "little")
        for offset in range(_HEADER.size, expected, INSTR_BYTES)
    ]
    if check:
        for index, word in enumerate(words):
            try:
                decode(word)
            except IsaError as exc:
                raise IsaError(f"instruction {index}: {exc}") from None
    return words


def write_program(path: str | Path, words: Sequence[int]) -> None:
    """Write a program file atomically (temporary file, then rename)."""
    for word in words:
        if not 0 <= word < 1 << INSTR_BITS:
            raise IsaError(f"instruction word {word:#x} does not fit {INSTR_BITS} bits")
    write_atomic(path, program_to_bytes(words))


def read_program(path: str | Path) -> list[int]:
    """Read and check a program file (see :func:`program_from_bytes`)."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise IsaError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return program_from_bytes(blob)
    except IsaError as exc:
        raise IsaError(f"{path}: {exc}") from None
