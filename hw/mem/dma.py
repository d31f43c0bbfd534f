# Ref: docs/isa.md, sections LOAD and STORE (4-D strided loop nest, buffer-side pitches
#      rounded up to odd by buf_pad; dma_cycles) and the queue rules (LOAD and STORE share
#      one memory port); sim/model/dma.py (the executable semantics: bits copied
#      unchanged, IDX keeps its low index_bits bits).
# Ref: DESIGN.md sections 4 and 9 (DMA engine; deterministic memory in simulation).
"""DMAEngine: executes LOAD and STORE over one memory bus and the five buffers' wide ports."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nmsat.hw import isa
from nmsat.hw.isa import Buffer
from nmsat.hw.params import BUFFER_ADDR_BITS, DRAM_ADDR_BITS, SATParams

from .buffer import WideReadPortSignature, WideWritePortSignature
from .bus import MAX_REQUEST_BYTES, MemoryBusSignature

__all__ = ["DMAEngine"]

_COUNT_BITS = isa.PAYLOADS[isa.Opcode.LOAD]["rows"].width
_STRIDE_BITS = isa.PAYLOADS[isa.Opcode.LOAD]["dram_stride"].width
_E_LOG2 = {buf: isa.element_bytes(buf).bit_length() - 1 for buf in Buffer}


class DMAEngine(wiring.Component):
    """The DMA engine: executes one LOAD or STORE at a time (docs/isa.md, LOAD and STORE).

    A transfer moves ``blocks x planes x rows`` contiguous runs of ``cols`` elements
    (``cols * E`` bytes, ``E = isa.element_bytes(buffer)``) between external memory and
    the buffer from ``buf_addr``, in loop order, at the row, plane and block pitches of
    :func:`nmsat.hw.isa.dma_buffer_pitches` (each level packed unless a bit of ``buf_pad``
    rounds its pitch up to odd; the one element such a rounding skips after a row, plane
    or block is left unwritten by a LOAD). Each run is one request on :attr:`bus`
    (:class:`~nmsat.hw.mem.bus.MemoryBusSignature`): ``ceil(cols * E / B)`` beats of
    ``B = params.dram_bytes_per_cycle`` bytes, aligned to the run's first byte, so the
    alignment of ``dram_addr`` never adds a beat. A beat therefore never spans two runs,
    nor two buffer rows: the pitches cost no cycle (the last beat of a run steps the buffer
    address past the skipped elements).

    **Timing.** A transfer started in cycle ``s`` raises :attr:`done` in cycle
    ``s + isa.cycles(instr, params)``, ``D + lines * ceil(cols * E / B)``
    (:func:`nmsat.hw.isa_timing.dma_cycles`), against a memory that follows the bus rules
    with ``req.ready`` always high and serves every beat as early as they allow (the
    simulation memory :class:`nmsat.sim.testing.DRAMModel`). The request generator issues
    the first run's request in cycle ``s`` (straight from the payload) and one more per
    cycle, so the memory streams the beats without a gap from ``s + D``:

    - LOAD: beat ``i`` arrives in cycle ``s + D + i`` and is written to the buffer in the
      same cycle; ``done`` follows the last beat, when every write is visible.
    - STORE: the buffer read for beat ``i`` is issued one cycle before its data goes out on
      ``w`` (read latency 1), the first in cycle ``s``; the engine holds one beat until the
      memory takes it (``w.ready``, cycle ``s + D + i``) and reads the next in that cycle.
      ``done`` follows the memory taking the last beat. This needs ``D >= 1``.

    A slower memory (``ready`` low, later beats) only delays ``done``; the data stay right.
    The engine accepts the next ``start`` in the cycle of ``done``.

    **Buffer ports.** One wide write port (LOAD) and one wide read port (STORE) per buffer,
    :meth:`port_lanes` elements wide: ``max(1, B // E)`` consecutive elements from any start
    element, enough for one beat per cycle (the ports of a
    :class:`~nmsat.hw.mem.BankedBuffer` with ``buffer_banks >= port_lanes``). When ``B < E``
    a LOAD collects an element over ``E / B`` beats and a STORE reads the element again for
    each of its beats. IDX elements are ``params.index_bits`` wide: a LOAD keeps the low bits
    of each byte, a STORE writes them zero-extended to a byte. The read ports must hold their
    data while ``en`` is low (:class:`~nmsat.hw.mem.WideReadPortSignature`).

    Parameters
    ----------
    params : SATParams
        Uses ``dram_bytes_per_cycle``, ``dram_latency_cycles`` (at least 1), the buffer sizes
        and ``index_bits``.

    Members
    -------
    start : ``In(1)``
        Start the transfer in :attr:`instr` this cycle; ignored while :attr:`busy`.
    store : ``In(1)``
        With ``start``: 1 for STORE (buffer to memory), 0 for LOAD.
    instr : ``In(isa.PAYLOADS[Opcode.LOAD])``
        The payload (LOAD and STORE share it); read only in the cycle of ``start``.
    done : ``Out(1)``
        One-cycle pulse when the transfer is complete.
    busy : ``Out(1)``
        A transfer is running (from the cycle after ``start`` to the cycle before ``done``).
    bus : ``Out(MemoryBusSignature(params))``
        The memory bus.
    act_write, wgt_write, idx_write, acc_write, vec_write : ``In(WideWritePortSignature)``
        Write port of each buffer (driven by a LOAD); ``port_lanes(buffer)`` lanes of
        ``element_bits(buffer)`` bits.
    act_read, wgt_read, idx_read, acc_read, vec_read : ``In(WideReadPortSignature)``
        Read port of each buffer (used by a STORE).

    Raises
    ------
    ValueError
        If ``params.dram_latency_cycles`` is 0 (a STORE could not read its first beat from
        the buffer in time).
    """

    def __init__(self, params: SATParams) -> None:
        if params.dram_latency_cycles < 1:
            raise ValueError(
                "DMAEngine: dram_latency_cycles must be at least 1 (a STORE reads its first "
                f"beat from the buffer one cycle after start), got {params.dram_latency_cycles}"
            )
        self._params = params
        members: dict[str, wiring.Member] = {
            "start": In(1),
            "store": In(1),
            "instr": In(isa.PAYLOADS[isa.Opcode.LOAD]),
            "done": Out(1),
            "busy": Out(1),
            "bus": Out(MemoryBusSignature(params)),
        }
        for buf in Buffer:
            shape = {
                "depth_entries": isa.buffer_entries(buf, params),
                "element_bits": self.element_bits(buf, params),
                "lanes": self.port_lanes(buf, params),
            }
            members[f"{buf.name.lower()}_write"] = In(WideWritePortSignature(**shape))
            members[f"{buf.name.lower()}_read"] = In(WideReadPortSignature(**shape))
        super().__init__(members)

    @property
    def params(self) -> SATParams:
        """The parameters the engine was built for."""
        return self._params

    @staticmethod
    def port_lanes(buffer: Buffer, params: SATParams) -> int:
        """Return the lanes of the engine's ports to ``buffer``: ``max(1, B // E)``."""
        return max(1, params.dram_bytes_per_cycle // isa.element_bytes(buffer))

    @staticmethod
    def element_bits(buffer: Buffer, params: SATParams) -> int:
        """Return the width of one ``buffer`` element on its port (IDX: ``index_bits``)."""
        if buffer is Buffer.IDX:
            return params.index_bits
        return 8 * isa.element_bytes(buffer)

    def port(self, buffer: Buffer, kind: str) -> wiring.PureInterface:
        """Return the ``"read"`` or ``"write"`` port interface of ``buffer``."""
        if kind not in ("read", "write"):
            raise ValueError(f"DMAEngine.port: kind must be 'read' or 'write', got {kind!r}")
        port: wiring.PureInterface = getattr(self, f"{buffer.name.lower()}_{kind}")
        return port

    def elaborate(self, platform: object) -> Module:
        m = Module()
        B = self._params.dram_bytes_per_cycle
        b_log2 = B.bit_length() - 1
        instr = self.instr
        bus = self.bus

        # -- the instruction, latched at start; `cur_*` is the value of this cycle ---------
        active = Signal()
        start = Signal()
        m.d.comb += start.eq(self.start & ~active)

        def held(name: str, shape: int | range, value: Value) -> Value:
            """``value`` in the cycle of start, its latched copy afterwards."""
            reg = Signal(shape, name=f"{name}_reg")
            with m.If(start):
                m.d.sync += reg.eq(value)
            return Mux(start, value, reg)

        e_log2_in = Signal(2)
        with m.Switch(instr.buffer):
            for buf in Buffer:
                with m.Case(buf):
                    m.d.comb += e_log2_in.eq(_E_LOG2[buf])
        is_store = held("store", 1, self.store)
        buffer = held("buffer", 3, instr.buffer.as_value())
        e_log2 = held("e_log2", 2, e_log2_in)
        rows = held("rows", _COUNT_BITS, instr.rows)
        planes = held("planes", _COUNT_BITS, instr.planes)
        run_bytes = held("run_bytes", range(MAX_REQUEST_BYTES + 1), instr.cols << e_log2_in)
        # Buffer elements skipped after each row, plane and block (isa.dma_buffer_pitches):
        # rounding a pitch up to odd adds 1 when the packed size below it is even.
        pad = instr.buf_pad
        row_odd = instr.cols[0] | pad[0]  # bit 0 of the row pitch
        plane_odd = (instr.rows[0] & row_odd) | pad[1]
        gaps = [
            held("row_gap", 1, pad[0] & ~instr.cols[0]),
            held("plane_gap", 1, pad[1] & ~(instr.rows[0] & row_odd)),
            held("block_gap", 1, pad[2] & ~(instr.planes[0] & plane_odd)),
        ]
        strides = [
            held(f"{name}_bytes", _STRIDE_BITS + 2, getattr(instr, name) << e_log2_in)
            for name in ("dram_stride", "plane_stride", "block_stride")
        ]
        row_step, plane_step, block_step = strides
        running = start | active

        # -- request generator: one request per run, in loop order -------------------------
        def state(name: str, shape: int | range, init: Value) -> tuple[Signal, Value]:
            """A register and its current value (``init`` in the cycle of start)."""
            reg = Signal(shape, name=name)
            return reg, Mux(start, init, reg)

        req_pending, cur_req_pending = state("req_pending", 1, Const(1))
        req_addr, cur_req_addr = state("req_addr", DRAM_ADDR_BITS, instr.dram_addr)
        plane_addr, cur_plane_addr = state("req_plane_addr", DRAM_ADDR_BITS, instr.dram_addr)
        block_addr, cur_block_addr = state("req_block_addr", DRAM_ADDR_BITS, instr.dram_addr)
        req_counts = [
            state(f"req_{name}_left", _COUNT_BITS, getattr(instr, name))
            for name in ("rows", "planes", "blocks")
        ]
        (req_rows, cur_req_rows), (req_planes, cur_req_planes), (req_blocks, cur_req_blocks) = (
            req_counts
        )

        m.d.comb += [
            bus.req.valid.eq(running & cur_req_pending),
            bus.req.write.eq(is_store),
            bus.req.addr.eq(cur_req_addr),
            bus.req.length_bytes.eq(run_bytes),
        ]
        req_fire = bus.req.valid & bus.req.ready

        def wrap(value: Value) -> Value:
            return value[:DRAM_ADDR_BITS]

        m.d.sync += [
            req_pending.eq(cur_req_pending & running),
            req_addr.eq(cur_req_addr),
            plane_addr.eq(cur_plane_addr),
            block_addr.eq(cur_block_addr),
            req_rows.eq(cur_req_rows),
            req_planes.eq(cur_req_planes),
            req_blocks.eq(cur_req_blocks),
        ]
        with m.If(req_fire):
            with m.If(cur_req_rows > 1):
                m.d.sync += [
                    req_addr.eq(wrap(cur_req_addr + row_step)),
                    req_rows.eq(cur_req_rows - 1),
                ]
            with m.Elif(cur_req_planes > 1):
                next_plane = wrap(cur_plane_addr + plane_step)
                m.d.sync += [
                    req_addr.eq(next_plane),
                    plane_addr.eq(next_plane),
                    req_rows.eq(rows),
                    req_planes.eq(cur_req_planes - 1),
                ]
            with m.Elif(cur_req_blocks > 1):
                next_block = wrap(cur_block_addr + block_step)
                m.d.sync += [
                    req_addr.eq(next_block),
                    plane_addr.eq(next_block),
                    block_addr.eq(next_block),
                    req_rows.eq(rows),
                    req_planes.eq(planes),
                    req_blocks.eq(cur_req_blocks - 1),
                ]
            with m.Else():
                m.d.sync += req_pending.eq(0)

        # -- beat walker: the buffer side of each beat, in bus order -----------------------
        # A LOAD steps it on each read beat, a STORE on each buffer read it issues.
        walk_pending, cur_walk_pending = state("walk_pending", 1, Const(1))
        left, cur_left = state("walk_left_bytes", range(MAX_REQUEST_BYTES + 1), run_bytes)
        sub, cur_sub = state("walk_sub_bytes", 2, Const(0, 2))
        elem, cur_elem = state("walk_elem", BUFFER_ADDR_BITS + 1, instr.buf_addr)
        walk_counts = [
            state(f"walk_{name}_left", _COUNT_BITS, getattr(instr, name))
            for name in ("rows", "planes", "blocks")
        ]
        (w_rows, cur_w_rows), (w_planes, cur_w_planes), (w_blocks, cur_w_blocks) = walk_counts

        beat_bytes = Signal(range(B + 1))
        run_end = Signal()
        last_beat = Signal()
        m.d.comb += [
            run_end.eq(cur_left <= B),
            beat_bytes.eq(Mux(run_end, cur_left, B)),
            last_beat.eq(run_end & (cur_w_rows == 1) & (cur_w_planes == 1) & (cur_w_blocks == 1)),
        ]

        w_valid = Signal()  # a STORE beat waits on `w`
        w_fire = bus.w.valid & bus.w.ready
        load_beat = Signal()
        store_issue = Signal()
        m.d.comb += [
            load_beat.eq(active & ~is_store & cur_walk_pending & bus.r.valid),
            store_issue.eq(running & is_store & cur_walk_pending & (~w_valid | w_fire)),
        ]
        step = load_beat | store_issue

        m.d.sync += [
            walk_pending.eq(cur_walk_pending & running),
            left.eq(cur_left),
            sub.eq(cur_sub),
            elem.eq(cur_elem),
            w_rows.eq(cur_w_rows),
            w_planes.eq(cur_w_planes),
            w_blocks.eq(cur_w_blocks),
        ]
        with m.If(step):
            # Runs start on element boundaries; with B < E an element spans E / B beats.
            # The last beat of a row, plane, block also skips that level's gap, if any.
            total = cur_sub + beat_bytes
            plane_end = run_end & (cur_w_rows == 1)
            block_end = plane_end & (cur_w_planes == 1)
            skip = (run_end & gaps[0]) + (plane_end & gaps[1]) + (block_end & gaps[2])
            m.d.sync += [
                elem.eq(cur_elem + (total >> e_log2) + skip),
                sub.eq(total & ((Const(1, 3) << e_log2) - 1)),
            ]
            with m.If(run_end):
                m.d.sync += left.eq(run_bytes)
                with m.If(cur_w_rows > 1):
                    m.d.sync += w_rows.eq(cur_w_rows - 1)
                with m.Elif(cur_w_planes > 1):
                    m.d.sync += [w_rows.eq(rows), w_planes.eq(cur_w_planes - 1)]
                with m.Elif(cur_w_blocks > 1):
                    m.d.sync += [
                        w_rows.eq(rows),
                        w_planes.eq(planes),
                        w_blocks.eq(cur_w_blocks - 1),
                    ]
                with m.Else():
                    m.d.sync += walk_pending.eq(0)
            with m.Else():
                m.d.sync += left.eq(cur_left - B)

        # -- LOAD: read beats into the buffer ----------------------------------------------
        sub_index = cur_sub >> b_log2 if B < 4 else Const(0)
        assembly = Signal(32)  # earlier beats of an element longer than a beat
        if B < 4:
            with m.If(load_beat):
                m.d.sync += assembly.word_select(sub_index, 8 * B).eq(bus.r.data)
        for buf in Buffer:
            port = self.port(buf, "write")
            size = isa.element_bytes(buf)
            bits = self.element_bits(buf, self._params)
            lanes = self.port_lanes(buf, self._params)
            selected = load_beat & (buffer == buf.value)
            m.d.comb += port.addr.eq(cur_elem)
            if size <= B:
                count = beat_bytes >> _E_LOG2[buf]
                m.d.comb += port.en.eq(Mux(selected, _thermometer(count, lanes), 0))
                for lane in range(lanes):
                    m.d.comb += port.data[lane].eq(bus.r.data.word_select(lane, 8 * size)[:bits])
            else:
                completes = cur_sub == size - B
                m.d.comb += [
                    port.en.eq(selected & completes),
                    port.data[0].eq(Cat(assembly[: 8 * (size - B)], bus.r.data)[:bits]),
                ]

        # -- STORE: buffer reads (latency 1) into write beats ------------------------------
        beat_count = Signal.like(beat_bytes)
        beat_sub = Signal(2)
        beat_last = Signal()
        with m.If(store_issue):
            m.d.sync += [
                w_valid.eq(1),
                beat_count.eq(beat_bytes),
                beat_sub.eq(sub_index),
                beat_last.eq(last_beat),
            ]
        with m.Elif(w_fire):
            m.d.sync += w_valid.eq(0)
        m.d.comb += [bus.w.valid.eq(w_valid), bus.w.strb.eq(_thermometer(beat_count, B))]
        beats = {}
        for buf in Buffer:
            port = self.port(buf, "read")
            size = isa.element_bytes(buf)
            lanes = self.port_lanes(buf, self._params)
            m.d.comb += [
                port.addr.eq(cur_elem),
                port.en.eq(store_issue & (buffer == buf.value)),
            ]
            # Each element zero-extended to its E bytes: lane j is bytes [jE, jE + E).
            pad = 8 * size - self.element_bits(buf, self._params)
            elements = Cat(*(Cat(port.data[lane], Const(0, pad)) for lane in range(lanes)))
            beats[buf] = elements if size <= B else elements.word_select(beat_sub, 8 * B)
        with m.Switch(buffer):
            for buf, beat in beats.items():
                with m.Case(buf.value):
                    m.d.comb += bus.w.data.eq(beat)

        # -- completion --------------------------------------------------------------------
        finish = (load_beat & last_beat) | (active & is_store & w_fire & beat_last)
        m.d.sync += self.done.eq(finish)
        with m.If(start):
            m.d.sync += active.eq(1)
        with m.Elif(finish):
            m.d.sync += active.eq(0)
        m.d.comb += self.busy.eq(active)
        return m


def _thermometer(count: Value, width: int) -> Value:
    """Return ``width`` bits, bit ``j`` set when ``j < count``."""
    return Cat(*(count > j for j in range(width)))
