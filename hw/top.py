# Ref: DESIGN.md section 4 (the accelerator: controller, STCE, SORE, WUVE, buffers, DMA) and
#      section 9 (cycles count from the first fetch; a fixed-latency memory in simulation).
# Ref: docs/isa.md, "Queues, tokens and the cycle count" (five queues, one unit each; LOAD and
#      STORE share the memory port) and the unit contract (start, payload, done at
#      s + isa.cycles).
# Ref: Amaranth 0.5 amaranth.lib.wiring (connect, flipped) and amaranth.lib.memory (Memory:
#      synchronous read ports, latency 1, not transparent).
"""Accelerator: the top level, the controller wired to the five units and the five buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._signature import ParameterizedSignature
from .ctrl import Controller, ErrorCause, TraceSignature
from .ctrl.controller import CYCLE_BITS
from .isa import INSTR_BITS, Buffer, buffer_entries
from .mem.buffer import WideReadPortSignature, WideWritePortSignature
from .mem.bus import MemoryBusSignature
from .mem.dma import DMAEngine
from .params import SATParams
from .sore.prune_unit import PruneUnit
from .stce.array import STCE
from .wuve.wuve import WUVE

__all__ = ["IMEM_ADDR_BITS", "Accelerator", "ProgramPortSignature"]

#: Address bits of the instruction memory: 2**14 = 16384 words of 256 bits (512 KiB, about
#: 114 of the XCVU9P's 2160 BRAM36). SATParams has no field for it; a longer program runs
#: from a host that reloads the memory between segments.
IMEM_ADDR_BITS = 14


class ProgramPortSignature(ParameterizedSignature):
    """Signature of the instruction memory's write port, seen from the host that drives it.

    Parameters
    ----------
    addr_bits : int
        Width of a word address.

    Members
    -------
    addr : ``Out(addr_bits)``
        Word (instruction index) to write.
    data : ``Out(INSTR_BITS)``
        The 256-bit instruction word (bit ``i`` of the word is bit ``i`` of the integer
        :func:`nmsat.hw.isa.encode` returns).
    en : ``Out(1)``
        Write ``data`` at ``addr`` at the end of this cycle.
    """

    def __init__(self, addr_bits: int) -> None:
        members = {"addr": Out(addr_bits), "data": Out(INSTR_BITS), "en": Out(1)}
        super().__init__(members, addr_bits=addr_bits)


class Accelerator(wiring.Component):
    """The accelerator: controller, STCE, prune unit, WUVE, DMA engine and five buffers.

    A host loads a program into the instruction memory through :attr:`program` (one word
    per cycle, while no run is in progress), writes the data into external memory, and
    pulses :attr:`start` with ``start_pc`` and ``program_length``. The controller
    (:class:`~nmsat.hw.ctrl.Controller`) fetches from ``start_pc`` to the first HALT and
    issues each queue's instructions to its unit; the run ends with :attr:`done` or
    :attr:`error`, and :attr:`elapsed_cycles` then holds its cycle count, counted from the
    first fetch as docs/isa.md defines it (the cycles between ``start`` and that first fetch,
    :data:`~nmsat.hw.ctrl.PRIME_CYCLES` or more, are not counted). Buffers and external
    memory keep their contents between runs, so a host runs a compiled program segment by
    segment like :meth:`nmsat.sim.model.Machine.run`.

    Queues to units: load and store share the :class:`~nmsat.hw.mem.DMAEngine` (the
    controller never runs both at once), compute drives the :class:`~nmsat.hw.stce.STCE`,
    prune the :class:`~nmsat.hw.sore.PruneUnit`, update the :class:`~nmsat.hw.wuve.WUVE`
    (VEC and UPDATE). The DMA's memory bus is the top-level :attr:`bus`; simulation connects
    :class:`nmsat.sim.testing.DRAMModel` to it, a board an AXI adapter.

    **Buffers.** Each buffer (ACT, WGT, IDX, ACC, VEC; sizes from SATParams through
    :func:`nmsat.hw.isa.buffer_entries`) is one flat memory with a port for every unit
    port that uses it, of the width that unit asks for; units of different queues run at
    the same time, so no port is shared. With tiny.yaml: ACT has 35 read ports (32 one-wide
    for the STCE's edges, 2 x 4 for the WUVE, 8 for the DMA) and 2 write ports. A wide port
    of ``k`` lanes is ``k`` one-element memory ports at ``addr + j``, so that any start
    address works. This serves simulation and Verilog alike, but not an FPGA: block RAM has
    two ports, so synthesis needs the buffers banked (``buffer_banks``) and the STCE's
    read ports replicated; the board issue measures what that costs.

    **Verilog.** The buffers and the instruction memory are
    :class:`amaranth.lib.memory.Memory` objects; :func:`nmsat.hw.gen.generate` replaces
    them through the platform's ``get_memory`` hook by instances of a generic RAM module
    (their zero initial contents would otherwise be written out word by word).

    Parameters
    ----------
    params : SATParams
        The configuration; every size comes from it.

    Members
    -------
    program : ``In(ProgramPortSignature(IMEM_ADDR_BITS))``
        Write port of the instruction memory (2**IMEM_ADDR_BITS words).
    start : ``In(1)``
        Start a run (ignored while ``running``).
    start_pc : ``In(IMEM_ADDR_BITS + 1)``
        First pc of the run, sampled with ``start``.
    program_length : ``In(IMEM_ADDR_BITS + 1)``
        Words in the program, sampled with ``start``; fetching pc ``program_length`` is an
        error (PAST_END).
    running : ``Out(1)``
        From the cycle after ``start`` until ``done`` or ``error`` rises.
    done, error : ``Out(1)``
        The run ended (high from the cycle after its last cycle until the next ``start``).
    error_pc : ``Out(IMEM_ADDR_BITS + 1)``
        The pc the error names (docs/isa.md rule 6).
    error_cause : ``Out(ErrorCause)``
        Why the run ended with ``error``.
    elapsed_cycles : ``Out(CYCLE_BITS)``
        Cycle number within the run; after it, its cycle count.
    trace : ``Out(TraceSignature(IMEM_ADDR_BITS + 1))``
        The controller's fetch, start and completion events of each cycle.
    bus : ``Out(MemoryBusSignature(params))``
        The memory bus to external memory.
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        pc_bits = IMEM_ADDR_BITS + 1
        super().__init__(
            {
                "program": In(ProgramPortSignature(IMEM_ADDR_BITS)),
                "start": In(1),
                "start_pc": In(pc_bits),
                "program_length": In(pc_bits),
                "running": Out(1),
                "done": Out(1),
                "error": Out(1),
                "error_pc": Out(pc_bits),
                "error_cause": Out(ErrorCause),
                "elapsed_cycles": Out(CYCLE_BITS),
                "trace": Out(TraceSignature(pc_bits)),
                "bus": Out(MemoryBusSignature(params)),
            }
        )

    @property
    def params(self) -> SATParams:
        """The configuration the accelerator was built for."""
        return self._params

    @property
    def imem_words(self) -> int:
        """Words of the instruction memory, ``2**IMEM_ADDR_BITS``."""
        return 1 << IMEM_ADDR_BITS

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        m.submodules.ctrl = ctrl = Controller(params, pc_bits=IMEM_ADDR_BITS + 1)
        m.submodules.stce = stce = STCE(params)
        m.submodules.prune = prune = PruneUnit(params)
        m.submodules.wuve = wuve = WUVE(params)
        m.submodules.dma = dma = DMAEngine(params)

        # -- instruction memory: the host writes, the controller reads (latency 1) ---------
        m.submodules.imem = imem = Memory(shape=INSTR_BITS, depth=self.imem_words, init=[])
        write = imem.write_port()
        read = imem.read_port()
        m.d.comb += [
            write.addr.eq(self.program.addr),
            write.data.eq(self.program.data),
            write.en.eq(self.program.en),
            read.addr.eq(ctrl.imem_addr[:IMEM_ADDR_BITS]),
            ctrl.imem_data.eq(read.data),
        ]

        # -- status and trace ----------------------------------------------------------------
        m.d.comb += [
            ctrl.start.eq(self.start),
            ctrl.start_pc.eq(self.start_pc),
            ctrl.program_length.eq(self.program_length),
            self.running.eq(ctrl.running),
            self.done.eq(ctrl.done),
            self.error.eq(ctrl.error),
            self.error_pc.eq(ctrl.error_pc),
            self.error_cause.eq(ctrl.error_cause),
            self.elapsed_cycles.eq(ctrl.elapsed_cycles),
        ]
        wiring.connect(m, trace=wiring.flipped(self.trace), ctrl=ctrl.trace)
        wiring.connect(m, bus=wiring.flipped(self.bus), dma=dma.bus)

        # -- issue ports to the units --------------------------------------------------------
        compute, prune_q, update = ctrl.compute, ctrl.prune, ctrl.update
        m.d.comb += [
            stce.start.eq(compute.start),
            stce.gemm.eq(compute.instr.payload.gemm),
            compute.done.eq(stce.done),
            prune.start.eq(prune_q.start),
            prune.prune.eq(prune_q.instr.payload.prune),
            prune_q.done.eq(prune.done),
            wuve.start.eq(update.start),
            wuve.opcode.eq(update.instr.header.opcode),
            wuve.vec.eq(update.instr.payload.vec),
            wuve.update.eq(update.instr.payload.update),
            update.done.eq(wuve.done),
        ]
        # LOAD and STORE share the DMA; the controller never starts both in one cycle nor
        # one while the other runs, so `done` goes to the queue that started last.
        load, store = ctrl.load, ctrl.store
        storing = Signal()
        with m.If(load.start | store.start):
            m.d.sync += storing.eq(store.start)
        m.d.comb += [
            dma.start.eq(load.start | store.start),
            dma.store.eq(store.start),
            dma.instr.eq(Mux(store.start, store.instr.payload.store, load.instr.payload.load)),
            load.done.eq(dma.done & ~storing),
            store.done.eq(dma.done & storing),
        ]

        # -- buffers: one port per unit port -------------------------------------------------
        ports: dict[Buffer, tuple[list[Any], list[Any]]] = {
            Buffer.ACT: (
                [*stce.act_read, *wuve.act_read, dma.act_read],
                [wuve.act_write, dma.act_write],
            ),
            Buffer.WGT: (
                [*stce.wgt_read, *wuve.wgt_read, dma.wgt_read],
                [prune.wgt_write, wuve.wgt_write, dma.wgt_write],
            ),
            Buffer.IDX: (
                [*stce.idx_read, wuve.idx_read, dma.idx_read],
                [prune.idx_write, dma.idx_write],
            ),
            Buffer.ACC: (
                [*stce.acc_read, *wuve.acc_read, dma.acc_read],
                [*stce.acc_write, wuve.acc_write, dma.acc_write],
            ),
            Buffer.VEC: (
                [prune.vec_read, *wuve.vec_read, dma.vec_read],
                [*wuve.vec_write, dma.vec_write],
            ),
        }
        for buffer, (readers, writers) in ports.items():
            name = buffer.name.lower()
            bits = DMAEngine.element_bits(buffer, params)
            store_ = _PortedBuffer(
                depth_entries=buffer_entries(buffer, params),
                element_bits=bits,
                read_lanes=[_lanes(port) for port in readers],
                write_lanes=[_lanes(port) for port in writers],
            )
            m.submodules[f"{name}_buffer"] = store_
            for port, target in zip(readers, store_.read, strict=True):
                wiring.connect(m, unit=port, buffer=target)
            for port, target in zip(writers, store_.write, strict=True):
                wiring.connect(m, unit=port, buffer=target)
        return m


def _lanes(port: Any) -> int:
    """Lanes of a unit's wide buffer port (the length of its data array)."""
    lanes: int = port.data.shape().length
    return lanes


class _PortedBuffer(wiring.Component):
    """One on-chip buffer: a flat memory with wide ports of any widths (read latency 1).

    Read port ``i`` has ``read_lanes[i]`` lanes: ``en`` and ``addr`` in cycle t give element
    ``addr + j`` in lane ``j`` in cycle t + 1, held while ``en`` is low; a read sees the
    contents before the writes of its cycle. Write port ``i`` stores lane ``j`` at
    ``addr + j`` at the end of the cycle where ``en`` bit ``j`` is set; lanes past the end
    are dropped, read lanes past the end wrap (unspecified data, as for
    :class:`~nmsat.hw.mem.BankedBuffer`). Two writes of one element in one cycle leave it
    unspecified.

    Members
    -------
    read0, read1, ... : ``Out(WideReadPortSignature(depth_entries, element_bits, lanes))``
        The read ports, ``lanes = read_lanes[i]``; also the tuple :attr:`read`.
    write0, write1, ... : ``Out(WideWritePortSignature(depth_entries, element_bits, lanes))``
        The write ports, ``lanes = write_lanes[i]``; also the tuple :attr:`write`.
    """

    def __init__(
        self,
        *,
        depth_entries: int,
        element_bits: int,
        read_lanes: Sequence[int],
        write_lanes: Sequence[int],
    ) -> None:
        self._depth = depth_entries
        self._bits = element_bits
        shape = {"depth_entries": depth_entries, "element_bits": element_bits}
        super().__init__(
            {
                **{
                    f"read{i}": Out(WideReadPortSignature(**shape, lanes=lanes))
                    for i, lanes in enumerate(read_lanes)
                },
                **{
                    f"write{i}": Out(WideWritePortSignature(**shape, lanes=lanes))
                    for i, lanes in enumerate(write_lanes)
                },
            }
        )
        self.read = tuple(getattr(self, f"read{i}") for i in range(len(read_lanes)))
        self.write = tuple(getattr(self, f"write{i}") for i in range(len(write_lanes)))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        depth = self._depth
        m.submodules.memory = memory = Memory(shape=self._bits, depth=depth, init=[])
        wraps = depth & (depth - 1) != 0  # a power of two wraps by truncation

        def element(addr: Any, lane: int) -> Any:
            at = addr + lane
            return Mux(at >= depth, at - depth, at) if wraps and lane else at

        for port in self.write:
            for lane in range(_lanes(port)):
                mem_port = memory.write_port()
                m.d.comb += [
                    mem_port.addr.eq(element(port.addr, lane)),
                    mem_port.data.eq(port.data[lane]),
                    mem_port.en.eq(port.en[lane] & (port.addr + lane < depth)),
                ]
        for port in self.read:
            for lane in range(_lanes(port)):
                mem_port = memory.read_port()
                m.d.comb += [
                    mem_port.addr.eq(element(port.addr, lane)),
                    mem_port.en.eq(port.en),
                    port.data[lane].eq(mem_port.data),
                ]
        return m
