# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (WUVE: the FP32 weight update vector engine).
# Ref: docs/isa.md, sections VEC and UPDATE (loop nests, vec_cycles, update_cycles); the unit
#      contract of the execution units (start, payload, done at s + isa.cycles).
# Ref: sim/model/wuve.py (the executable semantics: FP16 sources widened with DAZ, FP32
#      sources read raw, FP16 destinations through to_fp16, UPDATE masks from FF indices).
"""The WUVE: the execution unit of VEC and UPDATE (the update queue)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arith.fp32_to_fp16 import FP32ToFP16
from ..isa import PAYLOADS, Buffer, Opcode, VecOp, buffer_entries
from ..isa_timing import update_pipeline_cycles, vec_pipeline_cycles
from ..mem.buffer import WideReadPortSignature, WideWritePortSignature
from ..numerics import FP32_CANONICAL_NAN_BITS
from ..params import SATParams
from ..shared import Shared
from ._lane import HP_FIELDS, HP_LAYOUT, Lane

__all__ = ["WUVE"]

_HP_WORDS = len(HP_FIELDS)
_GROUP_SIZES = (1, 2, 4, 8, 16)
# Two read ports per vector buffer: src0 (UPDATE: w, g) on port 0, src1 (UPDATE: v) on
# port 1, so that both sources of a binary VEC may lie in the same buffer.
_SOURCES = 2


def _widen(half: Value) -> Value:
    """FP16 pattern to FP32 pattern, exact: subnormals flushed, NaN canonical (to_fp32)."""
    sign, exponent, fraction = half[15], half[10:15], half[:10]
    infinity = Cat(Const(0, 23), Const(0xFF, 8), sign)
    special = Mux(fraction.any(), Const(FP32_CANONICAL_NAN_BITS, 32), infinity)
    normal = Cat(Const(0, 13), fraction, (exponent + (127 - 15))[:8], sign)
    return Mux(exponent == 0, Cat(Const(0, 31), sign), Mux(exponent == 0x1F, special, normal))


class WUVE(wiring.Component):
    """The weight update vector engine: executes VEC and UPDATE, one at a time.

    ``wuve_lanes`` lanes (:class:`~nmsat.hw.wuve._lane.Lane`) each take one FP32 element per
    cycle. VEC reads ``src0`` (and ``src1`` for RELU_GRAD and ADD) and writes ``dst``, any of
    ACT, WGT (FP16: sources widen exactly with subnormals flushed, results round with
    :class:`~nmsat.hw.arith.FP32ToFP16`), ACC and VEC (FP32: sources read raw, so COPY moves
    bits unchanged). UPDATE reads the four hyper-parameters (lr, momentum, weight decay,
    SR-STE lambda) from VEC at ``hp_addr``, then streams ``w`` and ``v`` (VEC), ``g`` (ACC)
    and the FF indices (IDX) that give each weight's N:M mask, and writes ``w`` and ``v``
    back in place, bit for bit :func:`nmsat.hw.numerics.sgd_update`.

    **Unit contract.** ``start`` is a one-cycle pulse with ``opcode`` (VEC or UPDATE) and
    its payload (``vec`` or ``update``) valid in that cycle, which latches them. If that is
    cycle ``s``, ``done`` pulses in cycle ``s + isa.cycles(instr)`` exactly; every write is
    then stored (a read issued in that cycle sees it), and ``start`` may pulse again in that
    same cycle.

    **Schedule.** Beat ``k`` (elements ``k * lanes .. k * lanes + lanes - 1``) reads its
    sources in cycle ``s + 1 + k`` (VEC) or ``s + 2 + k`` (UPDATE, after the hyper-parameter
    read in ``s + 1``); the data enter the lanes one cycle later (buffer read latency 1) and
    the lanes' results drive the write ports directly (FP16 rounding is combinational), so
    the last beat's write happens in cycle ``done - 1``: ``ceil(length / lanes)`` beats plus
    ``vec_pipeline_cycles`` (read, lane latency, write) or ``update_pipeline_cycles``
    (hyper-parameters, read, lane latency, write) of :mod:`nmsat.hw.isa_timing`. A beat's
    sources are read before any later write, so a destination that starts at or below a
    source of the same buffer (in place included) gives the loop nest's result; one that
    starts inside a source range does not (the compiler never emits it). UPDATE's ``w`` and
    ``v`` ranges must not overlap (they are written in the same cycle).

    Parameters
    ----------
    params : SATParams
        Uses ``wuve_lanes``, ``adder_latency``, ``multiplier_latency``, ``nm_patterns``,
        ``index_bits`` and the buffer sizes.

    Members
    -------
    start : ``In(1)``
        Start the instruction in ``opcode``/``vec``/``update`` (while not busy).
    opcode : ``In(Opcode)``
        ``Opcode.VEC`` or ``Opcode.UPDATE``.
    vec : ``In(isa.PAYLOADS[Opcode.VEC])``
        The VEC payload.
    update : ``In(isa.PAYLOADS[Opcode.UPDATE])``
        The UPDATE payload.
    busy : ``Out(1)``
        An instruction runs: from the cycle after ``start`` to the cycle before ``done``.
    done : ``Out(1)``
        One-cycle pulse: the instruction is complete.
    act_read, wgt_read : ``In(WideReadPortSignature(entries, 16, wuve_lanes)).array(2)``
        Read ports on ACT and WGT (port 0: ``src0``, port 1: ``src1``).
    acc_read : ``In(WideReadPortSignature(entries, 32, wuve_lanes)).array(2)``
        Read ports on ACC (port 0: ``src0`` or UPDATE's ``g``, port 1: ``src1``).
    vec_read : ``In(WideReadPortSignature(entries, 32, max(wuve_lanes, 4))).array(2)``
        Read ports on VEC (port 0: ``src0``, UPDATE's ``w`` and the four hyper-parameters;
        port 1: ``src1``, UPDATE's ``v``).
    idx_read : ``In(WideReadPortSignature(entries, index_bits, idx_lanes))``
        Read port on IDX for UPDATE's mask; ``idx_lanes = max(wuve_lanes, n)`` over the
        sparse patterns ``n:m`` (a beat inside a group of ``m > wuve_lanes`` needs all ``n``).
    act_write, wgt_write, acc_write : ``In(WideWritePortSignature(entries, bits, wuve_lanes))``
        Write ports of VEC's destination.
    vec_write : ``In(WideWritePortSignature(entries, 32, wuve_lanes)).array(2)``
        Write ports on VEC (port 0: VEC's destination, UPDATE's ``w``; port 1: UPDATE's ``v``).
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        lanes = params.wuve_lanes
        self._vec_read_lanes = max(lanes, _HP_WORDS)
        self._idx_read_lanes = max([lanes, *(n for n, _ in params.nm_patterns)])

        def read(buffer: Buffer, bits: int, width: int = lanes) -> wiring.Member:
            depth = buffer_entries(buffer, params)
            return In(WideReadPortSignature(depth_entries=depth, element_bits=bits, lanes=width))

        def write(buffer: Buffer, bits: int) -> wiring.Member:
            depth = buffer_entries(buffer, params)
            return In(WideWritePortSignature(depth_entries=depth, element_bits=bits, lanes=lanes))

        super().__init__(
            {
                "start": In(1),
                "opcode": In(Opcode),
                "vec": In(PAYLOADS[Opcode.VEC]),
                "update": In(PAYLOADS[Opcode.UPDATE]),
                "busy": Out(1),
                "done": Out(1),
                "act_read": read(Buffer.ACT, 16).array(_SOURCES),
                "wgt_read": read(Buffer.WGT, 16).array(_SOURCES),
                "acc_read": read(Buffer.ACC, 32).array(_SOURCES),
                "vec_read": read(Buffer.VEC, 32, self._vec_read_lanes).array(_SOURCES),
                "idx_read": read(Buffer.IDX, params.index_bits, self._idx_read_lanes),
                "act_write": write(Buffer.ACT, 16),
                "wgt_write": write(Buffer.WGT, 16),
                "acc_write": write(Buffer.ACC, 32),
                "vec_write": write(Buffer.VEC, 32).array(2),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameters the engine was built for."""
        return self._params

    @property
    def lanes(self) -> int:
        """Elements per cycle, ``wuve_lanes``: the width of every data port."""
        return self._params.wuve_lanes

    @property
    def vec_read_lanes(self) -> int:
        """Width of the VEC read ports, ``max(wuve_lanes, 4)`` (the hyper-parameter read)."""
        return self._vec_read_lanes

    @property
    def idx_read_lanes(self) -> int:
        """Width of the IDX read port, ``max(wuve_lanes, n)`` over the sparse patterns."""
        return self._idx_read_lanes

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        lanes = params.wuve_lanes
        lanes_log2 = lanes.bit_length() - 1

        # -- the latched instruction -------------------------------------------------------
        is_update = Signal()
        op = Signal(VecOp)
        src_bufs = [Signal(Buffer, name=f"src{k}_buf") for k in range(_SOURCES)]
        dst_buf = Signal(Buffer)
        src_bases = [Signal(24, name=f"src{k}_base") for k in range(_SOURCES)]
        grad_base = Signal(24)
        dst_bases = [Signal(24, name=f"dst{k}_base") for k in range(2)]
        hp_addr = Signal(24)
        idx_ptr = Signal(24)
        imm = Signal(32)
        pattern_n = Signal(5)
        pattern_m = Signal(5)
        vec, upd = self.vec, self.update
        starting_update = self.opcode == Opcode.UPDATE
        with m.If(self.start):
            m.d.sync += [is_update.eq(starting_update), op.eq(vec.op), imm.eq(vec.imm)]
            with m.If(starting_update):
                m.d.sync += [
                    *(b.eq(Buffer.VEC) for b in (*src_bufs, dst_buf)),
                    src_bases[0].eq(upd.w_addr),
                    src_bases[1].eq(upd.v_addr),
                    grad_base.eq(upd.g_addr),
                    dst_bases[0].eq(upd.w_addr),
                    dst_bases[1].eq(upd.v_addr),
                    hp_addr.eq(upd.hp_addr),
                    pattern_n.eq(upd.n),
                    pattern_m.eq(upd.m),
                ]
            with m.Else():
                m.d.sync += [
                    src_bufs[0].eq(vec.src0_buf),
                    src_bufs[1].eq(vec.src1_buf),
                    dst_buf.eq(vec.dst_buf),
                    src_bases[0].eq(vec.src0_addr),
                    src_bases[1].eq(vec.src1_addr),
                    dst_bases[0].eq(vec.dst_addr),
                ]

        # -- sequencing: done exactly after the formula's cycles ------------------------------
        length = Mux(starting_update, upd.length, vec.length)
        beat_count = (length + (lanes - 1)) >> lanes_log2
        remaining = Signal(range(2**24 + update_pipeline_cycles(params) + 1))
        hp_pending = Signal()
        beats_left = Signal(24)
        rd_offset = Signal(24)
        wr_offset = Signal(24)
        wr_left = Signal(24)
        m.d.comb += [
            self.done.eq(remaining == 1),
            self.busy.eq(remaining > 1),
        ]
        with m.If(remaining != 0):
            m.d.sync += remaining.eq(remaining - 1)
        issue = (remaining != 0) & ~hp_pending & (beats_left != 0)
        with m.If(hp_pending):
            m.d.sync += hp_pending.eq(0)
        with m.If(issue):
            m.d.sync += [beats_left.eq(beats_left - 1), rd_offset.eq(rd_offset + lanes)]
            m.d.sync += idx_ptr.eq(idx_ptr + self._idx_step(m, pattern_n, pattern_m, rd_offset))
        with m.If(self.start):
            m.d.sync += [
                remaining.eq(beat_count + self._pipeline_cycles(starting_update, vec.op)),
                hp_pending.eq(starting_update),
                beats_left.eq(beat_count),
                rd_offset.eq(0),
                wr_offset.eq(0),
                wr_left.eq(length),
                idx_ptr.eq(upd.idx_addr),
            ]

        # -- reads -------------------------------------------------------------------------
        binary = is_update | (op == VecOp.RELU_GRAD) | (op == VecOp.ADD)
        read_ports = {
            Buffer.ACT: self.act_read,
            Buffer.WGT: self.wgt_read,
            Buffer.ACC: self.acc_read,
            Buffer.VEC: self.vec_read,
        }
        for buffer, ports in read_ports.items():
            for k, port in enumerate(ports):
                wanted = issue & (src_bufs[k] == buffer) & (binary if k else 1)
                m.d.comb += [port.en.eq(wanted), port.addr.eq(src_bases[k] + rd_offset)]
        # ACC port 0 also streams UPDATE's gradient; VEC port 0 first reads the hp words.
        with m.If(is_update):
            m.d.comb += [
                self.acc_read[0].en.eq(issue),
                self.acc_read[0].addr.eq(grad_base + rd_offset),
            ]
        with m.If(hp_pending):
            m.d.comb += [self.vec_read[0].en.eq(1), self.vec_read[0].addr.eq(hp_addr)]
        sparse = pattern_n < pattern_m
        m.d.comb += [
            self.idx_read.en.eq(issue & is_update & sparse),
            self.idx_read.addr.eq(idx_ptr),
        ]

        # -- the data cycle: operands into the lanes ------------------------------------------
        data_valid = Signal()
        offset_in_group = Signal(4)
        hp_valid = Signal()
        m.d.sync += [
            data_valid.eq(issue),
            offset_in_group.eq(rd_offset[:4]),
            hp_valid.eq(hp_pending),
        ]
        hp = Signal(HP_LAYOUT)
        with m.If(hp_valid):
            m.d.sync += hp.eq(Cat(*(self.vec_read[0].data[k] for k in range(_HP_WORDS))))

        results = []
        velocities = []
        lane_valid: Value = Const(0)
        for j in range(lanes):
            lane = Lane(params)
            m.submodules[f"lane{j}"] = Shared(lane, (Lane, params), "wuve_lane")
            operands = [self._source(src_bufs[k], k, j) for k in range(_SOURCES)]
            m.d.comb += [
                lane.valid.eq(data_valid),
                lane.update.eq(is_update),
                lane.op.eq(op),
                lane.a.eq(operands[0]),
                lane.b.eq(operands[1]),
                lane.g.eq(self.acc_read[0].data[j]),
                lane.kept.eq(~sparse | self._kept(j, pattern_n, pattern_m, offset_in_group)),
                lane.imm.eq(imm),
                lane.hp.eq(hp),
            ]
            results.append(lane.o.result)
            velocities.append(lane.o.velocity)
            if j == 0:
                lane_valid = lane.o.valid

        # -- writes: straight from the lanes ---------------------------------------------------
        lane_mask = Cat(*((wr_left > j) for j in range(lanes))) & lane_valid.replicate(lanes)
        with m.If(lane_valid):
            m.d.sync += [wr_offset.eq(wr_offset + lanes), wr_left.eq(wr_left - lanes)]
        halves = []
        for j, result in enumerate(results):
            convert = FP32ToFP16(latency_cycles=0)
            m.submodules[f"to_fp16_{j}"] = Shared(convert, (FP32ToFP16, 0), "fp32_to_fp16")
            m.d.comb += [convert.i.a.eq(result), convert.i.valid.eq(lane_valid)]
            halves.append(convert.o.result)
        write_ports = {
            Buffer.ACT: (self.act_write, halves),
            Buffer.WGT: (self.wgt_write, halves),
            Buffer.ACC: (self.acc_write, results),
            Buffer.VEC: (self.vec_write[0], results),
        }
        for buffer, (port, values) in write_ports.items():
            m.d.comb += [
                port.addr.eq(dst_bases[0] + wr_offset),
                port.en.eq(Mux(dst_buf == buffer, lane_mask, 0)),
                *(port.data[j].eq(value) for j, value in enumerate(values)),
            ]
        velocity_port = self.vec_write[1]
        m.d.comb += [
            velocity_port.addr.eq(dst_bases[1] + wr_offset),
            velocity_port.en.eq(Mux(is_update, lane_mask, 0)),
            *(velocity_port.data[j].eq(v) for j, v in enumerate(velocities)),
        ]
        return m

    # -- helpers ---------------------------------------------------------------------------

    def _pipeline_cycles(self, starting_update: Value, vec_op: Value) -> Value:
        """The pipeline term of the instruction starting now (isa_timing)."""
        p = self._params
        vec_pipe = Const(vec_pipeline_cycles("COPY", p), 8)
        for name in ("ADD", "SCALE"):
            vec_pipe = Mux(vec_op == VecOp[name], vec_pipeline_cycles(name, p), vec_pipe)
        return Mux(starting_update, update_pipeline_cycles(p), vec_pipe)

    def _source(self, buffer: Value, port: int, lane: int) -> Value:
        """Lane ``lane`` of source ``port`` as FP32: FP16 buffers widened, FP32 ones raw."""
        act = _widen(self.act_read[port].data[lane])
        wgt = _widen(self.wgt_read[port].data[lane])
        acc = self.acc_read[port].data[lane]
        vec = self.vec_read[port].data[lane]
        return Mux(
            buffer == Buffer.ACT,
            act,
            Mux(buffer == Buffer.WGT, wgt, Mux(buffer == Buffer.ACC, acc, vec)),
        )

    def _idx_step(self, m: Module, n: Value, size: Value, rd_offset: Value) -> Value:
        """IDX entries to advance after a beat: the beat's ``lanes / m`` groups of ``n``
        indices, or, for ``m > lanes``, ``n`` after the beat that ends a group."""
        lanes = self._params.wuve_lanes
        step = Signal(13, name="idx_step")
        with m.Switch(size):
            for group in _GROUP_SIZES:
                with m.Case(group):
                    if group <= lanes:
                        m.d.comb += step.eq(n * (lanes // group))
                    else:
                        ends = ((rd_offset + lanes) & (group - 1)) == 0
                        m.d.comb += step.eq(Mux(ends, n, 0))
        return step

    def _kept(self, lane: int, n: Value, size: Value, offset_in_group: Value) -> Value:
        """Whether element ``lane`` of the beat is in the N:M mask (for a sparse pattern).

        A beat starts on a group boundary when ``m <= lanes`` (``lanes / m`` whole groups,
        whose ``n`` indices each lie side by side on the IDX port); otherwise it covers
        ``lanes`` positions from ``offset_in_group`` of one group. Each index counts by its
        low ``log2(m)`` bits, as the GEMM selector reads it.
        """
        lanes = self._params.wuve_lanes
        indices = self.idx_read.data
        kept: Value = Const(1)
        for pattern_n, group in self._params.nm_patterns:
            bits = group.bit_length() - 1
            if group <= lanes:
                first = (lane // group) * pattern_n
                position: Value = Const(lane % group, bits)
            else:
                first = 0
                position = (offset_in_group[:bits] + lane)[:bits]
            hits = [indices[first + t][:bits] == position for t in range(pattern_n)]
            match = (n == pattern_n) & (size == group)
            kept = Mux(match, Cat(*hits).any(), kept)
        return kept
