# Ref: docs/isa.md, "Queues, tokens and the cycle count", rule 1 (queue FIFOs of
#      queue_depths entries; a slot frees in the cycle its instruction starts).
"""InstructionFIFO: the instruction queue in front of one execution unit."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import INSTR

__all__ = ["InstructionFIFO", "entry_layout"]


def entry_layout(pc_bits: int) -> data.StructLayout:
    """Return the layout of a queue entry: the instruction word and its pc."""
    return data.StructLayout({"instr": INSTR, "pc": pc_bits})


class InstructionFIFO(wiring.Component):
    """A first-in first-out queue of fetched instructions, ``depth`` entries.

    The head (``r_data``) is read combinationally, so an instruction written in cycle t is
    the head from cycle t + 1 if the queue was empty. The entries are registers (a few
    hundred bits each, queue_depths of 4 to 16 in the presets: distributed RAM or flip-flops
    on an FPGA). A write and a read may happen in the
    same cycle, also when the queue is full: the read frees its slot for the write (the
    caller decides when writing is allowed, from ``level`` and ``r_en``).

    Parameters
    ----------
    depth : int
        Entries (1..1024).
    pc_bits : int
        Width of the pc stored with each instruction.

    Members
    -------
    clear : ``In(1)``
        Empty the queue (at the end of the cycle; overrides ``w_en`` and ``r_en``).
    w_en : ``In(1)``
        Append ``w_data``.
    w_data : ``In(entry_layout(pc_bits))``
        The entry to append.
    r_en : ``In(1)``
        Remove the head (only while ``level`` is not 0).
    r_data : ``Out(entry_layout(pc_bits))``
        The head entry, valid while ``level`` is not 0.
    level : ``Out(range(depth + 1))``
        Entries held.
    """

    def __init__(self, depth: int, pc_bits: int) -> None:
        self._depth = depth
        layout = entry_layout(pc_bits)
        super().__init__(
            {
                "clear": In(1),
                "w_en": In(1),
                "w_data": In(layout),
                "r_en": In(1),
                "r_data": Out(layout),
                "level": Out(range(depth + 1)),
            }
        )

    @property
    def depth(self) -> int:
        """Entries the queue holds."""
        return self._depth

    def elaborate(self, platform: object) -> Module:
        m = Module()
        depth = self._depth
        layout = self.w_data.shape()
        entries = Array(Signal(layout.size, name=f"entry{k}") for k in range(depth))
        w_ptr = Signal(range(depth))
        r_ptr = Signal(range(depth))

        def after(ptr: Signal) -> Mux:
            return Mux(ptr == depth - 1, 0, ptr + 1)

        m.d.comb += self.r_data.eq(entries[r_ptr])
        with m.If(self.w_en & ~self.clear):
            m.d.sync += entries[w_ptr].eq(self.w_data)
        with m.If(self.clear):
            m.d.sync += [w_ptr.eq(0), r_ptr.eq(0), self.level.eq(0)]
        with m.Else():
            with m.If(self.w_en):
                m.d.sync += w_ptr.eq(after(w_ptr))
            with m.If(self.r_en):
                m.d.sync += r_ptr.eq(after(r_ptr))
            m.d.sync += self.level.eq(self.level + self.w_en - self.r_en)
        return m
