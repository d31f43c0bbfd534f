"""Shared testbench pieces of the unit tests that serve buffer ports (tests/hw/sore,
tests/hw/wuve): a model of the banked buffers behind a unit's ports, the payload bits of an
instruction, and the loop that runs a program on a unit against the model.

pytest imports test modules by path (``--import-mode=importlib``), so a test module cannot
import a helper module beside it; the pieces reach the tests through the ``unit_bench``
fixture, as the harnesses of tests/hw/ctrl and tests/hw/stce do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator

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


class Outcome(NamedTuple):
    """What the unit did for one instruction: its start and done cycles, and the first and
    last cycle in which it wrote a buffer (None if it wrote none)."""

    start: int
    done: int
    first_write: int | None
    last_write: int | None


def run_unit_program(
    dut: Any,
    bus: BufferServer,
    count: int,
    gaps: list[int],
    make: Callable[[int], isa.Instruction],
    issue: Callable[[Any, isa.Instruction], None],
    idle: Callable[[Any, int], None],
    model: Callable[[isa.Instruction], None],
    mem_ref: Memory,
) -> tuple[list[isa.Instruction], list[Outcome]]:
    """Run ``count`` instructions on a unit (the unit contract: ``start``, ``busy``,
    ``done``) in pysim, and on the model; compare all buffers after each.

    ``make(i)`` builds instruction ``i`` right before it starts (it may set up operands in
    both memories); ``gaps[i]`` idle cycles come before it (0: it starts in the cycle of the
    previous ``done``). ``issue(ctx, instr)`` drives the payload in the start cycle,
    ``idle(ctx, cycle)`` drives garbage while idle (the unit must ignore it),
    ``model(instr)`` runs the instruction on ``mem_ref`` in exact mode when the RTL is
    done. ``busy`` is checked every cycle; a buffer that differs fails the test after the
    run (naming the instruction and the first element) and is reset to the model's.
    """
    instrs: list[isa.Instruction] = []
    outcomes: list[Outcome] = []
    failures: list[str] = []

    def compare(index: int) -> None:
        for buffer in Buffer:
            got, want = bus.mem.buffers[buffer], mem_ref.buffers[buffer]
            bad = np.flatnonzero(got != want)
            if bad.size:
                e = int(bad[0])
                failures.append(
                    f"instr {index} {instrs[index]}: {buffer.name}[{e}] = {int(got[e]):#x}, "
                    f"model {int(want[e]):#x} ({bad.size} elements differ)"
                )
                bus.mem.buffers[buffer][:] = want  # go on from the model's state

    async def bench(ctx: Any) -> None:
        cycle = index = started = 0
        wait = gaps[0]
        running: isa.Instruction | None = None
        while index < count or running is not None:
            bus.present(ctx)
            done = ctx.get(dut.done)
            if running is not None and done:
                seen = [c for c in bus.write_cycles if c >= started]
                outcomes.append(Outcome(started, cycle, min(seen, default=None),
                                        max(seen, default=None)))  # fmt: skip
                bus.write_cycles.clear()
                model(running)
                compare(index - 1)
                running = None
                if index < count:
                    wait = gaps[index]
            start = running is None and index < count and wait == 0
            ctx.set(dut.start, start)
            if start:
                instr = make(index)
                instrs.append(instr)
                issue(ctx, instr)
                running, started = instr, cycle
                index += 1
            elif running is None:
                wait -= 1
                idle(ctx, cycle)
            assert ctx.get(dut.busy) == (running is not None and not start and not done)
            bus.clock(ctx, cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, "\n".join(failures[:5])
    return instrs, outcomes


class UnitBench(NamedTuple):
    """The pieces above, for the test modules (conftest is not importable)."""

    Buffers: type[BufferServer]
    payload: Callable[[isa.Instruction], int]
    run: Callable[..., tuple[list[isa.Instruction], list[Outcome]]]


@pytest.fixture(scope="session")
def unit_bench() -> UnitBench:
    """A buffer model for a unit's ports, the payload bits of an instruction, and the loop
    that runs a program of instructions on a unit against the model."""
    return UnitBench(BufferServer, payload, run_unit_program)
