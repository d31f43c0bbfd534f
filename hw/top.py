# Ref: DESIGN.md section 4 (the accelerator: controller, STCE, SORE, WUVE, buffers, DMA) and
#      section 9 (cycles count from the first fetch; a fixed-latency memory in simulation).
# Ref: docs/isa.md, "Queues, tokens and the cycle count" (five queues, one unit each; LOAD and
#      STORE share the memory port) and the unit contract (start, payload, done at
#      s + isa.cycles).
# Ref: Amaranth 0.5 amaranth.lib.wiring (connect, flipped) and amaranth.lib.memory (Memory:
#      synchronous read ports, latency 1, not transparent).
"""Accelerator: the top level, the controller wired to the five units and the five banked
buffers."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._signature import ParameterizedSignature
from .ctrl import Controller, ErrorCause, TraceSignature
from .ctrl.controller import CYCLE_BITS
from .isa import INSTR_BITS, Buffer, bank_count, buffer_entries
from .mem.buffer import BankedBuffer, PortKind, PortSpec
from .mem.bus import MemoryBusSignature
from .mem.dma import DMAEngine
from .params import SATParams
from .sore.prune_unit import PruneUnit
from .stce._control import weight_buses
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
    :func:`nmsat.hw.isa.buffer_entries`) is a :class:`~nmsat.hw.mem.BankedBuffer`: element
    ``e`` in bank ``e % banks``, each bank one memory with one port per unit port (units of
    different queues run at the same time, so no port is shared). The STCE's one-element
    ports of an operand form one gather read (or scatter write) port, one per weight bus for
    A and its indices: in one cycle they read one vector of the operand (hw/stce/array.py,
    "Buffer ports"), which for every legal GEMM lies in distinct banks
    (:func:`nmsat.hw.isa.gemm_bank_conflict`; the controller rejects the others). Every other
    unit port is wide (consecutive elements; a rotation). ``banks`` is
    :func:`nmsat.hw.isa.bank_count` or the widest wide port, rounded up to a power of two
    (:attr:`bank_counts`): with tiny.yaml ACT 32, WGT 8, IDX 16, ACC 4, VEC 8; with
    vcu1525.yaml ACT 256, WGT 128, IDX 256, ACC 64, VEC 64. ACT's banks then have four read
    ports (STCE, WUVE x 2, DMA) and two write ports; an FPGA's two-port block RAM needs them
    replicated or multi-pumped (issue 7 measures it). With ``conflict_check`` (simulation),
    :attr:`bank_conflict` rises in any cycle where a gather or scatter port meets two rows
    of one bank, which a legal program never does.

    **Verilog.** The buffers and the instruction memory are
    :class:`amaranth.lib.memory.Memory` objects; :func:`nmsat.hw.gen.generate` replaces
    them through the platform's ``get_memory`` hook by instances of a generic RAM module
    (their zero initial contents would otherwise be written out word by word).

    Parameters
    ----------
    params : SATParams
        The configuration; every size comes from it.
    conflict_check : bool
        Build the buffers' bank-conflict detectors (default; ``nmsat build`` leaves them
        out, and :attr:`bank_conflict` is then 0).

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
    bank_conflict : ``Out(1)``
        A buffer port met two rows of one bank this cycle (a simulation check).
    """

    def __init__(self, params: SATParams, *, conflict_check: bool = True) -> None:
        self._params = params
        self._conflict_check = conflict_check
        #: Banks of each buffer, filled in by elaboration.
        self.bank_counts: dict[Buffer, int] = {}
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
                "bank_conflict": Out(1),
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

        # -- buffers: banked, one bank port per unit port ------------------------------------
        # The STCE's one-element ports of an edge group form one gather (scatter) port: its
        # reads in one cycle are one vector of the operand, conflict-free for every legal
        # GEMM (isa.gemm_bank_conflict); every other unit port is wide (consecutive lanes).
        buses = weight_buses(params)
        stce_wgt = [[stce.wgt_read[r * buses + b] for r in range(params.array_rows)]
                    for b in range(buses)]  # fmt: skip
        stce_idx = [[stce.idx_read[r * buses + b] for r in range(params.array_rows)]
                    for b in range(buses)]  # fmt: skip
        ports: dict[Buffer, tuple[list[Any], list[Any]]] = {
            Buffer.ACT: (
                [list(stce.act_read), *wuve.act_read, dma.act_read],
                [wuve.act_write, dma.act_write],
            ),
            Buffer.WGT: (
                [*stce_wgt, *wuve.wgt_read, dma.wgt_read],
                [prune.wgt_write, wuve.wgt_write, dma.wgt_write],
            ),
            Buffer.IDX: (
                [*stce_idx, wuve.idx_read, dma.idx_read],
                [prune.idx_write, dma.idx_write],
            ),
            Buffer.ACC: (
                [list(stce.acc_read), *wuve.acc_read, dma.acc_read],
                [list(stce.acc_write), wuve.acc_write, dma.acc_write],
            ),
            Buffer.VEC: (
                [prune.vec_read, *wuve.vec_read, dma.vec_read],
                [*wuve.vec_write, dma.vec_write],
            ),
        }
        conflicts: list[Any] = []
        for buffer, (readers, writers) in ports.items():
            name = buffer.name.lower()
            wide = [_lanes(port) for port in (*readers, *writers) if not isinstance(port, list)]
            banks = max(bank_count(buffer, params), *wide)
            banks = 1 << (banks - 1).bit_length()  # a power of two
            self.bank_counts[buffer] = banks
            store_ = BankedBuffer(
                depth_entries=buffer_entries(buffer, params),
                element_bits=DMAEngine.element_bits(buffer, params),
                banks=banks,
                read_ports=[_spec(port, PortKind.GATHER) for port in readers],
                write_ports=[_spec(port, PortKind.SCATTER) for port in writers],
                conflict_check=self._conflict_check,
            )
            m.submodules[f"{name}_buffer"] = store_
            for port, target in zip(readers, store_.read, strict=True):
                if isinstance(port, list):
                    for lane, unit in enumerate(port):
                        m.d.comb += [
                            target.addr[lane].eq(unit.addr),
                            target.en[lane].eq(unit.en),
                            unit.data[0].eq(target.data[lane]),
                        ]
                else:
                    wiring.connect(m, unit=port, buffer=target)
            for port, target in zip(writers, store_.write, strict=True):
                if isinstance(port, list):
                    for lane, unit in enumerate(port):
                        m.d.comb += [
                            target.addr[lane].eq(unit.addr),
                            target.en[lane].eq(unit.en[0]),
                            target.data[lane].eq(unit.data[0]),
                        ]
                else:
                    wiring.connect(m, unit=port, buffer=target)
            checks = (*store_.read_conflict, *store_.write_conflict)
            conflicts += [check for check in checks if check is not None]
        m.d.comb += self.bank_conflict.eq(Cat(*conflicts).any() if conflicts else 0)
        return m


def _spec(port: Any, indexed: PortKind) -> PortSpec:
    """The buffer port for a unit port: wide, or gather/scatter for a list of one-lane ports."""
    if isinstance(port, list):
        return PortSpec(indexed, len(port))
    return PortSpec.wide(_lanes(port))


def _lanes(port: Any) -> int:
    """Lanes of a unit's wide buffer port (the length of its data array)."""
    lanes: int = port.data.shape().length
    return lanes
