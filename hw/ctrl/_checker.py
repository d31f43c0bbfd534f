# Ref: docs/isa.md (illegal instructions: undefined opcode or enum value, reserved or unused
#      bits set, a field breaking its opcode's rules; buffer addresses count elements).
# Ref: hw/isa.py: decode, _check_rules and check_for_params, the checks this pipeline
#      computes in gateware, in the same order of precedence (the cause the model reports);
#      _buffer_ranges, dma_buffer_pitches and gemm_pitches (operand extents with the row,
#      plane and block pitches rounded up to odd by buf_pad, a_pad, b_pad, c_pad).
# Ref: sim/model/machine.py (_decode: an access beyond external memory is illegal).
"""The instruction checker: decides in two pipeline stages whether a fetched word is legal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import (
    INSTR,
    INSTR_BITS,
    OPCODE_QUEUE,
    PAYLOADS,
    Buffer,
    Dataflow,
    Opcode,
    Queue,
    VecOp,
    bank_count,
    buffer_entries,
    element_bytes,
)
from ..params import SATParams
from ._shaped import ShapedEnum

__all__ = ["CHECK_STAGES", "Illegal", "InstructionChecker"]

#: Register stages between the instruction word and the checked result.
CHECK_STAGES = 2

# Element counts are clamped to this many (more than any buffer holds: at most 2**24
# elements, BUFFER_ADDR_BITS), so no product needs more than 2 x 26 bits.
_CLAMP = 1 << 25
_GROUP_SIZES = (1, 2, 4, 8, 16)
_ENUM_LIMIT = len(Buffer)  # Buffer, Queue and VecOp all define the values 0..4
assert len(Queue) == len(VecOp) == _ENUM_LIMIT


class Illegal(ShapedEnum, shape=2):
    """Why an instruction word is illegal, in the model's order of precedence."""

    NONE = 0
    OPCODE = 1  # undefined opcode
    FIELD = 2  # reserved or unused bits, undefined enum value, an opcode or configuration rule
    RANGE = 3  # a buffer operand or the external-memory block out of range


def _select(key: Value, table: Mapping[int, Value | int], default: Value | int = 0) -> Value:
    """Return ``table[key]`` (``default`` for a key not in the table)."""
    result = Value.cast(default)
    for value, entry in table.items():
        result = Mux(key == value, entry, result)
    return result


def _any(values: Sequence[Value]) -> Value:
    return Cat(*values).any() if values else Const(0)


def _clamp(value: Value) -> Value:
    return Mux(value >= _CLAMP, _CLAMP, value)[: _CLAMP.bit_length()]


class InstructionChecker(wiring.Component):
    """Checks fetched instruction words against the ISA rules and a configuration.

    A pipeline of :data:`CHECK_STAGES` register stages, all enabled by ``advance``: the word,
    its pc and ``valid`` presented in cycle t come out checked in cycle t + 2 if ``advance``
    was high in t and t + 1 (a stall holds every stage). The result names the queue of the
    instruction, whether it is HALT, and why it is illegal, with the precedence of
    :func:`nmsat.hw.isa.decode` followed by :func:`nmsat.hw.isa.check_for_params`: undefined
    opcode; reserved, unused or undefined fields and the opcode's own rules; buffer ranges;
    unsupported N:M pattern, PRUNE group size and GEMM interleave; the external-memory
    range (``params.dram_bytes``). The first stage decodes the fields and computes the
    products of two fields; the second the products of those (element counts are clamped to
    2**25, more than any buffer holds, so none is wider than 52 bits), the sums and the
    comparisons.

    Parameters
    ----------
    params : SATParams
        Buffer sizes, ``dram_bytes``, ``nm_patterns``, ``interleave``.
    pc_bits : int
        Width of a pc.

    Members
    -------
    advance : ``In(1)``
        Move every stage on by one.
    clear : ``In(1)``
        Mark every stage empty (overrides ``advance``).
    program_length : ``In(pc_bits)``
        A word at ``pc >= program_length`` is past the end of the program.
    i_word, i_pc, i_valid : ``In(INSTR_BITS)``, ``In(pc_bits)``, ``In(1)``
        The word entering the pipeline.
    o_word, o_pc, o_valid : ``Out(INSTR)``, ``Out(pc_bits)``, ``Out(1)``
        The checked word.
    o_queue : ``Out(Queue)``
        Its queue (for a legal word other than HALT).
    o_halt : ``Out(1)``
        A legal HALT.
    o_illegal : ``Out(Illegal)``
        Why the word is illegal (NONE for a legal word).
    o_past_end : ``Out(1)``
        Its pc is at or past ``program_length`` (the word is not an instruction).
    """

    def __init__(self, params: SATParams, pc_bits: int) -> None:
        self._params = params
        super().__init__(
            {
                "advance": In(1),
                "clear": In(1),
                "program_length": In(pc_bits),
                "i_word": In(INSTR_BITS),
                "i_pc": In(pc_bits),
                "i_valid": In(1),
                "o_word": Out(INSTR),
                "o_pc": Out(pc_bits),
                "o_valid": Out(1),
                "o_queue": Out(Queue),
                "o_halt": Out(1),
                "o_illegal": Out(Illegal),
                "o_past_end": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()

        def stage(value: Value, name: str) -> Value:
            """Register ``value`` when the pipeline advances."""
            reg = Signal(Shape.cast(Value.cast(value).shape()), name=name)
            with m.If(self.advance):
                m.d.sync += reg.eq(value)
            return reg

        # -- stage A: field decode, the rules that need no product, the products --------------
        word = data.View(INSTR, self.i_word)
        a = self._stage_a(m, word)
        a_word = data.View(INSTR, stage(self.i_word, "a_word"))
        a_regs = {name: stage(value, f"a_{name}") for name, value in a.items()}
        a_pc = stage(self.i_pc, "a_pc")
        a_valid = stage(self.i_valid, "a_valid")
        a_past_end = stage(self.i_pc >= self.program_length, "a_past_end")

        # -- stage B: sums and comparisons, the cause --------------------------------------
        range_bad, dram_bad, stride_bad = self._stage_b(a_word, a_regs)
        is_gemm = a_word.header.opcode == Opcode.GEMM
        bank_bad = is_gemm & self._bank_conflict(a_word.payload.gemm, a_regs)
        illegal = Mux(
            a_regs["opcode_bad"],
            Illegal.OPCODE,
            Mux(
                a_regs["field_bad"] | stride_bad,
                Illegal.FIELD,
                Mux(
                    range_bad,
                    Illegal.RANGE,
                    Mux(
                        a_regs["config_bad"] | bank_bad,
                        Illegal.FIELD,
                        Mux(dram_bad, Illegal.RANGE, 0),
                    ),
                ),
            ),
        )
        opcode = a_word.header.opcode
        queue = _select(
            opcode.as_value(),
            {op.value: q.value for op, q in OPCODE_QUEUE.items()}
            | {Opcode.NOP.value: a_word.payload.nop.queue.as_value()},
        )
        with m.If(self.advance):
            m.d.sync += [
                self.o_word.eq(a_word),
                self.o_pc.eq(a_pc),
                self.o_valid.eq(a_valid),
                self.o_queue.eq(queue),
                self.o_halt.eq((opcode == Opcode.HALT) & (illegal == Illegal.NONE)),
                self.o_illegal.eq(illegal),
                self.o_past_end.eq(a_past_end),
            ]
        with m.If(self.clear):
            m.d.sync += [a_valid.eq(0), self.o_valid.eq(0)]
        return m

    def _stage_a(self, m: Module, word: data.View) -> dict[str, Value]:
        """Return the first stage's results (registered by the caller)."""
        params = self._params
        header, payload = word.header, word.payload
        code = header.opcode.as_value()
        is_op = {op: code == op.value for op in Opcode}
        dma = is_op[Opcode.LOAD] | is_op[Opcode.STORE]
        opcode_bad = ~_any(list(is_op.values()))

        # Unused payload bits: everything above the opcode's layout must be zero.
        raw = payload.raw
        used = {op: PAYLOADS[op].size if op in PAYLOADS else 0 for op in Opcode}
        unused_bad = _select(code, {op.value: raw[used[op] :].any() for op in Opcode})

        ls, gemm, prune = payload.load, payload.gemm, payload.prune
        vec, update, nop = payload.vec, payload.update, payload.nop

        def undefined(*fields: data.View) -> Value:
            return _any([f.as_value() >= _ENUM_LIMIT for f in fields])

        enum_bad = _select(
            code,
            {
                Opcode.NOP.value: undefined(nop.queue),
                Opcode.LOAD.value: undefined(ls.buffer),
                Opcode.STORE.value: undefined(ls.buffer),
                Opcode.VEC.value: undefined(vec.op, vec.dst_buf, vec.src0_buf, vec.src1_buf),
            },
        )

        # N:M fields of GEMM, PRUNE and UPDATE (the other opcodes have none).
        n = _select(code, {Opcode.GEMM.value: gemm.n, Opcode.PRUNE.value: prune.n}, update.n)
        m_ = _select(code, {Opcode.GEMM.value: gemm.m, Opcode.PRUNE.value: prune.m}, update.m)
        m_log2 = _select(m_, {size: size.bit_length() - 1 for size in _GROUP_SIZES})
        group_mask = m_ - 1  # the low bits a multiple of m has clear (m a power of two)
        nm_bad = ~_any([m_ == size for size in _GROUP_SIZES]) | (n == 0) | (n > m_)
        supported = [m_ == n] + [(n == pn) & (m_ == pm) for pn, pm in params.nm_patterns]
        nm_unsupported = ~_any(supported)

        # Rules of _check_rules that need no product.
        def zero(*fields: Value) -> Value:
            return _any([f == 0 for f in fields])

        grouped = Mux(prune.direction.as_value(), prune.rows, prune.cols)
        binary = (vec.op == VecOp.RELU_GRAD) | (vec.op == VecOp.ADD)
        idx = Buffer.IDX.value

        def starts_inside(buf: data.View, addr: Value) -> Value:
            return (
                (buf.as_value() == vec.dst_buf.as_value())
                & (addr < vec.dst_addr)
                & (vec.dst_addr < addr + vec.length)
            )

        distance = Mux(
            update.w_addr >= update.v_addr,
            update.w_addr - update.v_addr,
            update.v_addr - update.w_addr,
        )
        rule_bad = _select(
            code,
            {
                Opcode.LOAD.value: zero(ls.rows, ls.cols, ls.planes, ls.blocks),
                Opcode.STORE.value: zero(ls.rows, ls.cols, ls.planes, ls.blocks),
                Opcode.GEMM.value: nm_bad
                | zero(gemm.rows, gemm.cols, gemm.depth, gemm.interleave)
                | (gemm.depth & group_mask).any(),
                Opcode.PRUNE.value: nm_bad | zero(prune.rows, prune.cols)
                | (grouped & group_mask).any(),
                Opcode.VEC.value: zero(vec.length)
                | _any([b.as_value() == idx for b in (vec.dst_buf, vec.src0_buf, vec.src1_buf)])
                | starts_inside(vec.src0_buf, vec.src0_addr)
                | (binary & starts_inside(vec.src1_buf, vec.src1_addr)),
                Opcode.UPDATE.value: nm_bad | zero(update.length)
                | (update.length & group_mask).any()
                | (distance < update.length),
            },
        )  # fmt: skip
        config_bad = _select(
            code,
            {
                Opcode.GEMM.value: nm_unsupported | (gemm.interleave > params.interleave),
                Opcode.PRUNE.value: nm_unsupported | (prune.m > params.m_max),
                Opcode.UPDATE.value: nm_unsupported,
            },
        )

        # Products. rows * pitch is shared by LOAD/STORE (one plane: rows at the buffer's row
        # pitch), GEMM (C at its row pitch ldc) and PRUNE (rows * cols, packed).
        by_shape = (Opcode.GEMM.value, Opcode.PRUNE.value)
        rows = _select(code, dict(zip(by_shape, (gemm.rows, prune.rows), strict=True)), ls.rows)
        pitches = (gemm.cols | gemm.c_pad, prune.cols)
        pitch = _select(code, dict(zip(by_shape, pitches, strict=True)), ls.cols | ls.buf_pad[0])
        # GEMM B: lines * ldb, (lines, row) = (cols, depth) if b_trans else (depth, cols).
        b_lines = Mux(gemm.b_trans, gemm.cols, gemm.depth)
        b_row = Mux(gemm.b_trans, gemm.depth, gemm.cols)
        # DMA levels (rows, planes, blocks): extent (count - 1) * stride of each, in elements.
        levels = [
            (ls.rows, ls.dram_stride),
            (ls.planes, ls.plane_stride),
            (ls.blocks, ls.block_stride),
        ]
        result: dict[str, Value] = {
            "opcode_bad": opcode_bad,
            "field_bad": ~opcode_bad & (header.reserved.any() | unused_bad | enum_bad | rule_bad),
            "config_bad": config_bad,
            "dma": dma,
            "rc": rows * pitch,
            "pb": ls.planes * ls.blocks,
            # GEMM: compressed reduction length depth * n / m; UPDATE: kept indices.
            "kc": (gemm.depth >> m_log2) * n,
            "kept": (update.length >> m_log2) * n,
            "dc": b_lines * (b_row | gemm.b_pad),
            "b_row_odd": b_row[0],
            "m_log2": m_log2,
        }
        for j, (count, stride) in enumerate(levels):
            result[f"extent{j}"] = (count - 1)[:16] * stride
            result[f"active{j}"] = count > 1
            for i, (_, other) in enumerate(levels):
                if i != j:
                    result[f"below{i}{j}"] = other < stride
        return result

    def _stage_b(self, word: data.View, a: Mapping[str, Value]) -> tuple[Value, Value, Value]:
        """Return (buffer range bad, external memory range bad, DMA stride rule bad)."""
        params = self._params
        code = word.header.opcode.as_value()
        payload = word.payload
        ls, gemm, prune = payload.load, payload.gemm, payload.prune
        vec, update = payload.vec, payload.update

        def entries(buffer: Buffer | data.View) -> Value:
            if isinstance(buffer, Buffer):
                return Const(buffer_entries(buffer, params))
            table = {b.value: buffer_entries(b, params) for b in Buffer}
            return _select(buffer.as_value(), table)

        def over(
            addr: Value, count: Value, buffer: Buffer | data.View, slack: Value | int = 0
        ) -> Value:
            """``addr + count - slack`` elements overrun ``buffer`` (``slack <= count``)."""
            return addr + count > entries(buffer) + slack

        def gap(pad: Value, size_odd: Value) -> Value:
            """``row_pitch(size, pad) - size``: 1 where ``pad`` rounds an even size up."""
            return pad & ~size_odd

        # LOAD/STORE: the buffer block, the external-memory block, the stride rule.
        # With row, plane, block pitches rp = cols + g0, pp = rows * rp + g1 and
        # bp = planes * pp + g2 (isa.dma_buffer_pitches; each gap g 0 or 1) the extent
        # (blocks-1)*bp + (planes-1)*pp + (rows-1)*rp + cols is blocks*bp - (g0 + g1 + g2),
        # and blocks*bp = (rows*rp) * (planes*blocks) + g1 * planes*blocks + g2 * blocks.
        pad = ls.buf_pad
        row_odd = ls.cols[0] | pad[0]
        plane_odd = (ls.rows[0] & row_odd) | pad[1]
        dma_gaps = [
            gap(pad[0], ls.cols[0]),
            gap(pad[1], ls.rows[0] & row_odd),
            gap(pad[2], ls.planes[0] & plane_odd),
        ]
        total = (
            _clamp(a["rc"]) * _clamp(a["pb"])
            + Mux(dma_gaps[1], a["pb"], 0)
            + Mux(dma_gaps[2], ls.blocks, 0)
        )
        dma_slack = dma_gaps[0] + dma_gaps[1] + dma_gaps[2]
        extents = [a[f"extent{j}"] for j in range(3)]
        span = extents[0] + extents[1] + extents[2] + ls.cols
        shift = _select(
            ls.buffer.as_value(), {b.value: element_bytes(b).bit_length() - 1 for b in Buffer}
        )
        dram_bad = a["dma"] & (ls.dram_addr + (span << shift) > params.dram_bytes)
        strides = [ls.dram_stride, ls.plane_stride, ls.block_stride]
        # isa._check_rules sorts the levels with more than one element by stride and needs
        # each stride to clear the extent of the levels below it. Equivalent without a sort:
        # strides of active levels pairwise distinct (equal ones always fail the sorted check)
        # and each active stride at least cols plus the extents of the levels below it.
        stride_fail = []
        for j in range(3):
            below = [Mux(a[f"below{i}{j}"], extents[i], 0) for i in range(3) if i != j]
            need = ls.cols + below[0] + below[1]
            stride_fail.append(a[f"active{j}"] & (strides[j] < need))
            for i in range(j):
                stride_fail.append(a[f"active{i}"] & a[f"active{j}"] & (strides[i] == strides[j]))
        stride_bad = a["dma"] & _any(stride_fail)

        kept_prune = (a["rc"] >> a["m_log2"]) * prune.n
        # GEMM: rows * lda, lines * ldb, rows * ldc, each less its gap (isa.gemm_pitches).
        lda = a["kc"] | gemm.a_pad
        binary = (vec.op == VecOp.RELU_GRAD) | (vec.op == VecOp.ADD)
        length = update.length
        range_bad = _select(
            code,
            {
                Opcode.LOAD.value: over(ls.buf_addr, total, ls.buffer, dma_slack),
                Opcode.STORE.value: over(ls.buf_addr, total, ls.buffer, dma_slack),
                Opcode.GEMM.value: over(
                    gemm.a_addr, gemm.rows * lda, Buffer.WGT, gap(gemm.a_pad, a["kc"][0])
                )
                | over(gemm.b_addr, a["dc"], Buffer.ACT, gap(gemm.b_pad, a["b_row_odd"]))
                | over(gemm.c_addr, a["rc"], Buffer.ACC, gap(gemm.c_pad, gemm.cols[0])),
                # IDX has as many entries as WGT: its check at the same address is the same.
                Opcode.PRUNE.value: over(prune.src_addr, a["rc"], Buffer.VEC)
                | over(prune.dst_addr, kept_prune, Buffer.WGT),
                Opcode.VEC.value: over(vec.dst_addr, vec.length, vec.dst_buf)
                | over(vec.src0_addr, vec.length, vec.src0_buf)
                | (binary & over(vec.src1_addr, vec.length, vec.src1_buf)),
                Opcode.UPDATE.value: over(update.w_addr, length, Buffer.VEC)
                | over(update.v_addr, length, Buffer.VEC)
                | over(update.g_addr, length, Buffer.ACC)
                | over(update.hp_addr, 4, Buffer.VEC)
                | ((update.n < update.m) & over(update.idx_addr, a["kept"], Buffer.WGT)),
            },
        )
        return range_bad, dram_bad, stride_bad

    def _bank_conflict(self, gemm: data.View, a: Mapping[str, Value]) -> Value:
        """Whether a GEMM's per-cycle STCE reads clash in a bank: the cases of
        :func:`nmsat.hw.isa.gemm_bank_conflict`, from the fields and stage A's ``kc``."""
        params = self._params
        rows_r, cols_c = params.array_rows, params.array_cols
        act, wgt, acc = (bank_count(b, params) for b in (Buffer.ACT, Buffer.WGT, Buffer.ACC))
        dense = gemm.n == gemm.m
        m_eff = Mux(dense, 1, gemm.m)
        lda = a["kc"] | gemm.a_pad
        b_row = Mux(gemm.b_trans, gemm.depth, gemm.cols)
        ldb = b_row | gemm.b_pad
        ldc = gemm.cols | gemm.c_pad

        def lowest(value: Value, bound: int) -> Value:
            return Mux(value < bound, value, bound)

        def spread(stride: Value, banks: int) -> Value:
            """Banks a run at ``stride`` reaches: banks / gcd(stride, banks)."""
            result: Value = Const(banks)
            for t in range(1, banks.bit_length()):
                result = Mux(stride[:t] == 0, banks >> t, result)
            return result

        def clash(x: Value | int, y: Value, y_max: int, stride: Value, banks: int) -> Value:
            """The elements i + j * stride (i < x, j < y <= y_max) miss distinct banks."""
            bits = banks.bit_length() - 1
            low = stride[:bits] if bits else Const(0)
            terms = []
            for dj in range(1, y_max):
                rest = (low * dj)[:bits] if bits else Const(0)
                near = Mux(rest < banks - rest, rest, banks - rest)
                terms.append((dj < y) & (near < x))
            return _any(terms)

        # WS: a fold's N:M groups (R positions from any phase; R for dense), times m.
        groups = _select(
            gemm.n,
            {n: (n - math.gcd(rows_r, n) + rows_r + n - 1) // n for n in range(1, 17)},
        )
        ws_groups = Mux(dense, rows_r, groups)
        fold_k = ws_groups * m_eff
        ws_k = Mux(fold_k < gemm.depth, fold_k, gemm.depth)
        ws_bad = (~gemm.b_trans & (ws_k > spread(ldb, act))) | (
            lowest(gemm.rows, cols_c) > spread(ldc, acc)
        )
        # OS: min(C, cols) columns times the m k of a group; A's rows.
        lanes = lowest(gemm.cols, cols_c)
        os_b = Mux(
            gemm.b_trans,
            clash(m_eff, lanes, cols_c, ldb, act),
            clash(lanes, m_eff, params.m_max, ldb, act),
        )
        os_bad = os_b | (lowest(gemm.rows, rows_r) > spread(lda, wgt))
        return Mux(gemm.dataflow == Dataflow.WS, ws_bad, os_bad)
