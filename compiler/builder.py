"""Program builder: appends ops in program order and finds the hazards between them.

The lowering (:mod:`nmsat.compiler.lower`) allocates on-chip buffer regions and external
tensors and calls :meth:`ProgramBuilder.instr` for each instruction with the regions and
tensors it reads and writes. The builder derives each op's dependencies from them:
read-after-write, write-after-read and write-after-write on buffer regions (element ranges)
and read-after-write and write-after-read on external tensors. A HALT ends a device segment:
every op before it has completed, so no dependency reaches across it.

With offline scheduling off, every instruction depends on the one before it instead
(the serial baseline of DESIGN.md section 5).

Ref: J. L. Hennessy and D. A. Patterson, Computer Architecture, 6th ed., section 3.1 (data
     hazards RAW, WAR, WAW); T. Moreau et al., VTA, IEEE Micro 2019 (explicit dependencies).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nmsat.hw import isa
from nmsat.hw.isa import OPCODE_QUEUE, Buffer, Opcode, Queue

from .ir import CompileOptions, HostOp, Op, Phase, Region, Tensor

__all__ = ["ProgramBuilder"]


@dataclasses.dataclass
class _Access:
    region: Region
    writer: int
    readers: dict[Queue, int]  # latest reader per queue (earlier ones finished before it)


class ProgramBuilder:
    """Accumulates the ops and tensors of one program; see the module docstring."""

    def __init__(self, options: CompileOptions) -> None:
        self.options = options
        self.ops: list[Op] = []
        self.tensors: dict[str, Tensor] = {}
        self._segment_start = 0
        self._buffers: dict[Buffer, list[_Access]] = {b: [] for b in Buffer}
        # Per external tensor, the latest writer and reader of each queue: a queue runs in
        # order, so depending on its latest access covers the earlier ones.
        self._writers: dict[str, dict[Queue, int]] = {}
        self._readers: dict[str, dict[Queue, int]] = {}
        self.segments: list[tuple[int, str]] = []  # (index of the HALT op, segment kind)
        self.kind = "step"

    # -- tensors -------------------------------------------------------------------------
    def tensor(self, tensor: Tensor) -> Tensor:
        """Declare ``tensor`` (or return the one already declared under its name)."""
        known = self.tensors.get(tensor.name)
        if known is not None:
            return known
        self.tensors[tensor.name] = tensor
        return tensor

    # -- ops -----------------------------------------------------------------------------
    def instr(
        self,
        opcode: Opcode,
        fields: dict[str, Any],
        *,
        layer: str,
        phase: Phase,
        reads: tuple[Region, ...] = (),
        writes: tuple[Region, ...] = (),
        dram_reads: tuple[str, ...] = (),
        dram_writes: tuple[str, ...] = (),
    ) -> int:
        """Append one instruction; return its index. Fields are checked by the ISA."""
        instr = isa.make(opcode, **fields)  # raises IsaError for an illegal instruction
        index = len(self.ops)
        queue = OPCODE_QUEUE[opcode]
        deps: set[int] = set()
        for region in reads:
            for acc in self._overlapping(region):
                deps.add(acc.writer)
                acc.readers[queue] = index
        for region in writes:
            for acc in self._overlapping(region):
                deps.add(acc.writer)
                deps.update(acc.readers.values())
            self._record_write(region, index)
        for name in dram_reads:
            deps.update(self._writers.get(name, {}).values())
            self._readers.setdefault(name, {})[queue] = index
        for name in dram_writes:
            deps.update(self._readers.get(name, {}).values())
            self._writers.setdefault(name, {})[queue] = index
        if not self.options.schedule and index > self._segment_start:
            deps = {index - 1}  # the segment's previous instruction: the serial baseline
        deps = {d for d in deps if self._segment_start <= d < index}
        self.ops.append(
            Op(
                opcode,
                tuple(fields.items()),
                layer,
                phase,
                reads,
                writes,
                dram_reads,
                dram_writes,
                tuple(sorted(deps)),
                instr=instr,
            )
        )
        return index

    def host(self, host: HostOp) -> None:
        """End the device segment (if it has instructions) and append a host operation."""
        self.halt()
        self.ops.append(
            Op(
                None,
                layer=host.layer,
                phase=Phase.HOST,
                host=host,
                dram_reads=host.reads,
                dram_writes=host.writes,
            )
        )
        self._segment_start = len(self.ops)

    def halt(self) -> None:
        """End the current device segment with a HALT, unless it is empty."""
        if not any(op.opcode is not None for op in self.ops[self._segment_start :]):
            return
        self.ops.append(Op(Opcode.HALT, phase=Phase.CONTROL, instr=isa.make(Opcode.HALT)))
        self.segments.append((len(self.ops) - 1, self.kind))
        self._segment_start = len(self.ops)
        self._buffers = {b: [] for b in Buffer}
        self._writers.clear()
        self._readers.clear()

    # -- hazards -------------------------------------------------------------------------
    def _overlapping(self, region: Region) -> list[_Access]:
        return [a for a in self._buffers[region.buffer] if a.region.overlaps(region)]

    def _record_write(self, region: Region, index: int) -> None:
        entries = self._buffers[region.buffer]
        lo, hi = region.start, region.start + region.count
        # A write that covers an older access entirely replaces it; partly covered ones stay
        # (conservative: a later access to their remainder also waits for this write).
        entries[:] = [
            a
            for a in entries
            if not (lo <= a.region.start and a.region.start + a.region.count <= hi)
        ]
        entries.append(_Access(region, index, {}))
