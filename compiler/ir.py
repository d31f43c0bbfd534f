"""The compiler's intermediate representation: immutable tensors, operations and programs.

A :class:`Program` is the lowered form of one BDWP training step: external-memory tensors
(:class:`Tensor`), and a sequence of :class:`Op` in program (fetch) order. An op is either one
accelerator instruction (its opcode and payload fields, the buffer regions and external
tensors it touches, and the earlier ops it depends on) or a host operation (:class:`HostOp`:
loss, pooling, normalisation, which end a device segment). Passes are pure functions from one
program to the next (STYLE.md G14); :mod:`nmsat.compiler.verify` checks the invariants after
each.

Ref: STYLE.md G14 (pure passes over an immutable IR, verified between passes);
     T. Moreau et al., VTA, IEEE Micro 2019 (dependency tokens between load, compute and store
     queues); DESIGN.md sections 4 and 5.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from nmsat.hw.isa import Buffer, Instruction, Opcode, Queue

__all__ = [
    "DTYPE_BYTES",
    "CompileOptions",
    "HostOp",
    "Op",
    "Phase",
    "Program",
    "Region",
    "Tensor",
]

#: Bytes per element of each external-memory element type.
DTYPE_BYTES = {"fp16": 2, "fp32": 4, "u8": 1}


class Phase(enum.Enum):
    """The part of a training step an operation serves (the report's columns)."""

    FF = "ff"  # forward GEMMs and their fused output conversion (ReLU)
    BP = "bp"  # activation-gradient GEMMs
    WU = "wu"  # weight-gradient GEMMs
    UPDATE = "update"  # the WUVE's SGD step and the master-weight traffic
    PRUNE = "prune"  # the SORE's compressed copies and their traffic
    VECTOR = "vector"  # element-wise passes on the WUVE (residual add, ReLU gradient)
    HOST = "host"  # work left to the host processor
    CONTROL = "control"  # HALT


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """The three dataflow optimisations of DESIGN.md section 5, each switchable.

    Members
    -------
    interleave : bool
        Interleave mapping: GEMMs carry ``params.interleave`` (off: 1, stalls on the adder).
    pregen : bool
        Pre-generation: the SORE makes next step's FF and BP copies right after each update
        (off: the copies are made at the start of the layer's FF and BP, from master weights
        loaded again).
    schedule : bool
        Offline scheduling: double-buffered tiles and tokens only where data flows (off: a
        single buffer per operand and every instruction waits for the previous one).
    """

    interleave: bool = True
    pregen: bool = True
    schedule: bool = True

    def describe(self) -> str:
        """Return e.g. ``"interleave, pregen, schedule"`` or ``"none"``."""
        on = [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]
        return ", ".join(on) or "none"


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor in external memory.

    Members
    -------
    name : str
        Unique in its program (``"act:layer1.0.conv1"``, ``"w:fc"``, ...).
    dtype : str
        ``"fp16"``, ``"fp32"`` or ``"u8"`` (N:M indices).
    shape : tuple of int
        Stored shape including padding, outermost first.
    layout : str
        The meaning of the axes, e.g. ``"C,H,W,B"`` (activations are channel-major).
    addr : int
        Byte address in external memory (-1 until allocated).
    padding : int
        Zero border on each side of H and W (activations and gradients of conv layers).
    role : str
        ``"activation"``, ``"gradient"``, ``"weight"``, ``"momentum"``, ``"ff_copy"``,
        ``"bp_copy"``, ``"hyper"`` or ``"input"``: how a runner initialises or checks it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    layout: str
    addr: int = -1
    padding: int = 0
    role: str = "activation"

    @property
    def elements(self) -> int:
        """Number of stored elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes in external memory."""
        return self.elements * DTYPE_BYTES[self.dtype]


@dataclasses.dataclass(frozen=True)
class Region:
    """A contiguous range of one on-chip buffer: ``count`` elements from ``start``."""

    buffer: Buffer
    start: int
    count: int

    def overlaps(self, other: Region) -> bool:
        """Return whether both regions share an element of the same buffer."""
        # WGT and IDX are distinct memories (at the same addresses); only one buffer conflicts.
        same = self.buffer is other.buffer
        return (
            same
            and self.start < other.start + other.count
            and other.start < self.start + self.count
        )


@dataclasses.dataclass(frozen=True)
class HostOp:
    """Work the host does between two device segments.

    Members
    -------
    kind : str
        ``"norm"``, ``"pool"``, ``"softmax_loss"``, ``"gelu"``, ``"softmax"`` ... and their
        backward forms (``"norm_bwd"``, ...).
    layer : str
        The zoo layer it implements.
    reads, writes : tuple of str
        Tensors it reads and writes.
    elements : int
        Elements it touches (for the report).
    """

    kind: str
    layer: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    elements: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostOp:
        """Rebuild a host operation from its manifest entry (``dataclasses.asdict``)."""
        return cls(
            str(data["kind"]),
            str(data["layer"]),
            tuple(data["reads"]),
            tuple(data["writes"]),
            int(data["elements"]),
        )


@dataclasses.dataclass(frozen=True)
class Op:
    """One operation of a program: an accelerator instruction or a host operation.

    Members
    -------
    opcode : Opcode or None
        The instruction's opcode; None for a host operation.
    fields : tuple of (str, value)
        Payload fields of the instruction (see docs/isa.md).
    layer : str
        The zoo layer this op serves (``""`` for control).
    phase : Phase
        The part of the step it serves.
    reads, writes : tuple of Region
        On-chip buffer regions read and written.
    dram_reads, dram_writes : tuple of str
        External tensors read and written.
    deps : tuple of int
        Indices of earlier ops whose results or buffers this op needs (data and reuse hazards).
    pop, push : tuple of Queue
        Dependency tokens, set by the scheduling pass.
    host : HostOp or None
        The host operation (opcode None).
    instr : Instruction or None
        The checked instruction (opcode, tokens, fields), kept so later passes need not
        rebuild it; not part of the op's identity.
    """

    opcode: Opcode | None
    fields: tuple[tuple[str, Any], ...] = ()
    layer: str = ""
    phase: Phase = Phase.CONTROL
    reads: tuple[Region, ...] = ()
    writes: tuple[Region, ...] = ()
    dram_reads: tuple[str, ...] = ()
    dram_writes: tuple[str, ...] = ()
    deps: tuple[int, ...] = ()
    pop: tuple[Queue, ...] = ()
    push: tuple[Queue, ...] = ()
    host: HostOp | None = None
    instr: Instruction | None = dataclasses.field(default=None, compare=False, repr=False)

    def field(self, name: str) -> Any:
        """Return one payload field."""
        return dict(self.fields)[name]


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled training step.

    Members
    -------
    model : str
        The model's name.
    batch : int
    nm : tuple of (int, int)
        The N:M pattern asked for ((1, 1): dense).
    params_name : str
        The SATParams configuration it was compiled for.
    options : CompileOptions
    tensors : tuple of Tensor
        External tensors, allocated when ``addr >= 0``.
    ops : tuple of Op
        In program order. Each device segment ends with a HALT op; host ops come between.
    layers : tuple of (str, tuple of bool)
        Per weight layer, whether FF and BP use the N:M pattern.
    """

    model: str
    batch: int
    nm: tuple[int, int]
    params_name: str
    options: CompileOptions
    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    layers: tuple[tuple[str, tuple[bool, bool]], ...] = ()

    def tensor(self, name: str) -> Tensor:
        """Return the tensor called ``name``."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def replace(self, **changes: Any) -> Program:
        """Return a copy with some members changed."""
        return dataclasses.replace(self, **changes)
