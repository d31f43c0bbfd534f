"""Shared testbench pieces of the unit tests that serve buffer ports (tests/hw/sore,
tests/hw/wuve): a model of the banked buffers behind a unit's ports, and the payload bits of
an instruction.

pytest imports test modules by path (``--import-mode=importlib``), so a test module cannot
import a helper module beside it; the pieces reach the tests through the ``unit_bench``
fixture, as the harnesses of tests/hw/ctrl and tests/hw/stce do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from amaranth.hdl import Shape

from nmsat.hw import isa
from nmsat.hw.isa import Buffer
from nmsat.sim.model import Memory


class BufferServer:
    """A unit's buffer ports served from a :class:`Memory`, with BankedBuffer's timing.

    A read issued in cycle t (``en``) returns in cycle t + 1 the contents before the writes
    of cycle t; ``data`` holds while ``en`` is low; a write stores at the end of its cycle.
    Lanes past the end of a buffer read as 0 and are dropped on write. Call :meth:`present`
    at the start of every cycle and :meth:`clock` right before its clock edge;
    ``write_cycles`` lists the cycles in which any write port was enabled.

    Parameters
    ----------
    mem : Memory
        The buffer contents (changed in place by the writes).
    reads, writes : list of (port, Buffer)
        The unit's read and write ports (``addr``, ``en``, ``data`` an array of lanes; a
        write ``en`` has one bit per lane) and the buffer each one reaches.
    """

    def __init__(
        self, mem: Memory, reads: list[tuple[Any, Buffer]], writes: list[tuple[Any, Buffer]]
    ) -> None:
        self.mem = mem
        self.reads = reads
        self.writes = writes
        self.pending: list[int | None] = [None] * len(reads)
        self.write_cycles: list[int] = []

    @staticmethod
    def _bits(port: Any) -> tuple[int, int]:
        layout = port.data.shape()
        return Shape.cast(layout.elem_shape).width, layout.length

    def present(self, ctx: Any) -> None:
        """Drive the data of last cycle's reads."""
        for (port, _), word in zip(self.reads, self.pending, strict=True):
            if word is not None:
                ctx.set(port.data.as_value(), word)

    def clock(self, ctx: Any, cycle: int) -> None:
        """Sample this cycle's reads (old contents), then apply its writes."""
        for k, (port, buffer) in enumerate(self.reads):
            self.pending[k] = None
            if ctx.get(port.en):
                bits, lanes = self._bits(port)
                store = self.mem.buffers[buffer]
                addr = ctx.get(port.addr)
                chunk = [int(store[a]) if a < store.size else 0 for a in range(addr, addr + lanes)]
                self.pending[k] = sum(v << (bits * j) for j, v in enumerate(chunk))
        for port, buffer in self.writes:
            en = ctx.get(port.en)
            if not en:
                continue
            self.write_cycles.append(cycle)
            bits, lanes = self._bits(port)
            store = self.mem.buffers[buffer]
            addr = ctx.get(port.addr)
            word = ctx.get(port.data.as_value())
            for j in range(lanes):
                if en >> j & 1 and addr + j < store.size:
                    store[addr + j] = (word >> (bits * j)) & ((1 << bits) - 1)


def payload(instr: isa.Instruction) -> int:
    """The bits of ``instr`` after its header: what a unit's payload port receives."""
    layout = isa.PAYLOADS[instr.opcode]
    return (instr.encode() >> isa.HEADER.size) & ((1 << layout.size) - 1)


class UnitBench(NamedTuple):
    """The pieces above, for the test modules (conftest is not importable)."""

    Buffers: type[BufferServer]
    payload: Callable[[isa.Instruction], int]


@pytest.fixture(scope="session")
def unit_bench() -> UnitBench:
    """A buffer model for a unit's ports, and the payload bits of an instruction."""
    return UnitBench(BufferServer, payload)
