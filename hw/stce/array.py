# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (STCE: a systolic array of N:M PEs, weight- and
#      output-stationary dataflows, interleave mapping).
# Ref: H. T. Kung, "Why systolic architectures?", IEEE Computer 1982 (skewed streams, fill
#      and drain); N. P. Jouppi et al., "In-datacenter performance analysis of a tensor
#      processing unit", ISCA 2017 (weight-stationary array, partial sums down the columns).
# Ref: docs/isa.md, section GEMM (loop nest, gemm_ws_cycles, gemm_os_cycles) and the unit
#      contract of the execution units (start, payload, done at s + isa.cycles).
# Ref: sim/model/stce.py (the executable semantics, bit for bit, operand row pitches
#      included); docs/numerics.md.
"""The STCE: the systolic GEMM engine, the execution unit of the compute queue."""

from __future__ import annotations

from typing import Any, NamedTuple

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arith._stages import delay
from ..isa import PAYLOADS, Buffer, Opcode, buffer_entries
from ..mem.buffer import WideReadPortSignature, WideWritePortSignature
from ..params import SATParams
from ..shared import Shared
from ._cell import Cell
from ._control import (
    Decoded,
    acc_layout,
    acc_port,
    acc_write_layout,
    col_read,
    os_master,
    row_layout,
    row_read,
    step_row,
    weight_buses,
    weight_read,
    ws_master,
)

__all__ = ["STCE"]

_NEGATIVE_ZERO_FP16 = 0x8000


def _op_layout(params: SATParams) -> data.StructLayout:
    """One PE operation as it moves right along a row (one register per PE)."""
    return data.StructLayout(
        {
            "mac": 1,
            "next_weight": 1,
            "chained": 1,
            "acc_sel": max(1, (params.interleave - 1).bit_length()),
            "acc_swap": 1,
            "acc_zero": 1,
            "w_load": 1,
            "w_value": 16,
            "w_index": params.index_bits,
        }
    )


def _edge_layout(params: SATParams) -> data.StructLayout:
    """What a row's left edge registers between its read cycle and its operation cycle."""
    return data.StructLayout(
        {
            "mac": 1,
            "next_weight": 1,
            "chained": 1,
            "acc_sel": max(1, (params.interleave - 1).bit_length()),
            "acc_swap": 1,
            "acc_zero": 1,
            "w_load": 1,
            "act_zero": 1,
            "buses": data.ArrayLayout(
                data.StructLayout(
                    {
                        "valid": 1,
                        "col": max(1, (params.array_cols - 1).bit_length()),
                        "zero": 1,
                    }
                ),
                weight_buses(params),
            ),
        }
    )


class _Edge(NamedTuple):
    """A row's left edge: its registered controls, the operation entering column 0, and its
    weight buses' values and indices (WS)."""

    regs: Any
    op: Any
    bus_values: list[Value]
    bus_indices: list[Value]


class _AccReads(NamedTuple):
    """The ACC reads' results: each column's sum as it enters row 0 (WS ``psum_in``, OS
    ``shadow_in``), each column's shadow shift (OS), and column 0's partial-sum record in
    its read cycle (WS)."""

    tops: list[Value]
    shifts: list[Value]
    psum0: Any


class STCE(wiring.Component):
    """Executes GEMM: ``ACC[C] = WGT[A] . ACT[B] (+ ACC[C])`` on an R x C systolic array.

    The array is ``array_rows x array_cols`` :class:`~nmsat.hw.stce.ProcessingElement`\\ s.
    It computes exactly :func:`nmsat.sim.model.gemm` in exact mode, dense or N:M (every
    pattern ``n <= m`` with ``m <= m_max``), with B in either layout (``b_trans``), and takes
    exactly :func:`nmsat.hw.isa.cycles` cycles: ``gemm_ws_cycles`` or ``gemm_os_cycles``.

    **Operands** (docs/isa.md, section GEMM). A is ``[rows, Kc]`` in WGT with its N:M
    indices at the same IDX addresses, B ``[depth, cols]`` in ACT (``[cols, depth]`` with
    ``b_trans``), C ``[rows, cols]`` in ACC, each row-major with its rows a pitch apart
    (:func:`nmsat.hw.isa.gemm_pitches`): ``A[i, q]`` at ``a_addr + i * lda + q``, ``B[k, j]``
    at ``b_addr + k * ldb + j`` (``b_addr + j * ldb + k`` with ``b_trans``), ``C[i, j]`` at
    ``c_addr + i * ldc + j``. A pitch is the row length, or with the operand's ``a_pad``,
    ``b_pad`` or ``c_pad`` the next odd number. The elements between a row's end and the
    next row's start are never written, and the pitches change no cycle.

    **Unit contract.** ``start`` is a one-cycle pulse with the payload ``gemm`` valid in that
    cycle (it is latched). If that is cycle ``s``, ``done`` pulses in cycle
    ``s + isa.cycles(instr)``; every write to ACC is stored by then (a read issued in that
    cycle sees it), and ``start`` may pulse again in that same cycle.

    **Weight-stationary** (``dataflow = WS``). PE ``(r, c)`` holds ``A[i, q]`` with
    ``q = fk * R + r`` and ``i = fi * C + c``; B's column ``j`` streams through as one
    vector per cycle, partial sums flow down the columns (``R * L`` cycles through the
    chained adders, ``L = adder_latency``) and leave the bottom row into ACC. Folds run
    ``fk`` outer and ``fi`` inner (all output blocks round robin, at least the
    ``min(interleave, Fi)`` the formula assumes), each a window of ``step`` cycles
    (``gemm_ws_cycles``) whose ``cols`` vectors come at its end; the first window starts
    ``R`` cycles after ``start``. Row ``r`` sees everything ``r * L`` cycles after row 0
    (the adder skew; its activations and weights are read with row 0's and delayed, see
    "Buffer ports"), column ``c`` one cycle later than column ``c - 1`` (its partial sums
    are read with column 0's and delayed, and its sums wait for column C-1's to be
    written with them). A fold's weights load column by column through a per-row weight
    bus, each in the cycle of the fold's first vector at that PE (the PE's bypass), so no
    fold waits for weights; a fold may last only R cycles, so with ``C > R`` folds take
    turns on ``B = ceil(C / R)`` buses per row. Rows past ``Kc`` in the last reduction
    fold multiply ``-0`` by ``+0``: adding ``-0`` leaves every partial sum unchanged,
    ``-0`` included. All columns read a vector's partial sums in
    column 0's read cycle and write its sums ``R * L + C`` cycles later, in column C-1's
    write cycle; a later reduction fold reads them back ``Fi * step`` cycles after the
    earlier one read them, so ``Fi * step >= R * L + C + 1`` (the formula's dependency
    term) puts the read at least one cycle after the write, which it then sees.

    **Output-stationary** (``dataflow = OS``). PE ``(r, c)`` accumulates outputs
    ``(fi * R + r, fj * C * I + a * C + c)`` for its ``I = min(interleave, ceil(cols / C))``
    accumulators ``a``, round robin, one step of the reduction per ``max(I, L)`` cycles; A
    moves right (loaded through the PE's weight bypass), the activation groups move down.
    A fold's results leave, and the next fold's initial sums (``accumulate``) enter, through
    each column's chain of shadow registers while the next fold computes; the drain after
    the last fold swaps the accumulators out and shifts them down. Column ``c``'s chain
    shifts one cycle after column ``c - 1``'s; all columns read their chains' initial sums
    in column 0's read cycle and write their results in column C-1's write cycle (see
    "Buffer ports"). A fold's chains read the next fold's sums and write the previous
    fold's results, other elements of C, so moving the reads earlier and the writes later
    changes no cycle: the last write is still in the cycle before ``done``.

    **Buffer ports.** Every array edge reads its own operands through ports one element wide
    that read at most once per cycle. All edges read in the same cycle, the corner's, and
    the data waits in a shift register per edge (``m_max * 16`` bits wide per edge for the
    activations, ``16 + index_bits`` per row and weight bus for A, 32 per column for the
    sums; no reset, no enable) until the edge needs it; the columns' results likewise wait
    for the last column's and are written with it:

    - ``act_read``: ``max(R, C) * m_max`` ports, ``m_max`` per edge: row ``r``'s activation
      group (WS) or column ``c``'s (OS). WS: in one cycle all rows read the groups of one
      vector of B, and row ``r``'s data is delayed ``r * L`` cycles. OS: in one cycle all
      columns read the groups of one reduction step for C consecutive output columns, and
      column ``c``'s data is delayed ``c`` cycles. So one cycle's distinct addresses fall
      in distinct banks of an ACT buffer of ``R * m_max`` banks (WS, when B is transposed,
      ``b_trans``, or at an odd pitch, ``b_pad``: at most ``R * m_max`` consecutive k of one
      vector, 1 or an odd pitch apart) or of ``C`` banks (OS, dense, B row-major or
      transposed at an odd pitch: C consecutive j of one k). N:M needs all ``m``
      activations of a group for one compressed weight, hence ``m / n`` times the dense
      bandwidth; rows that share a group read the same addresses.
    - ``wgt_read`` and ``idx_read``: ``R * B`` ports, one per row and weight bus (A is
      read per row; ``B = ceil(C / R)``, 1 for square arrays; OS uses bus 0), the IDX port
      at the WGT port's address (N:M only). WS: in one cycle all rows that read on a bus
      read the weights of one output row ``i`` of the fold, ``A[i, q0 + r]`` for row ``r``,
      and row ``r``'s data is delayed ``r * L`` cycles; OS: in one cycle all rows read
      ``A[i0 + r, q]`` of one reduction step, and row ``r``'s data is delayed ``r`` cycles.
      So one bus's distinct addresses in one cycle fall in distinct banks of a WGT (and
      IDX) buffer of ``R`` banks: always in WS (R consecutive elements), and in OS when A
      is at an odd pitch (``a_pad``).
    - ``acc_read`` and ``acc_write``: ``C`` ports each, one per column (partial sums in and
      out of the columns, or the shadow chains). WS: in one cycle (column 0's read cycle)
      all columns read the partial sums ``C[i0 + c, j]`` of one vector ``j``, and column
      ``c``'s data is delayed ``c`` cycles; in one cycle (column C-1's write cycle) all
      columns write the sums ``C[i0 + c, j]`` of one vector, column ``c``'s delayed
      ``C - 1 - c`` cycles. OS: likewise, the chains read (``accumulate``) and write one
      output row's C consecutive elements ``C[i, j0 + c]`` per cycle. So one cycle's
      distinct read (and write) addresses fall in distinct banks of an ACC buffer of ``C``
      banks: WS when C is at an odd pitch (``c_pad``: ``ldc`` apart), OS always.

    Parameters
    ----------
    params : SATParams
        The array size, ``adder_latency``, ``interleave``, ``m_max``, ``index_bits`` and the
        buffer sizes.

    Members
    -------
    start : ``In(1)``
        Start the GEMM in ``gemm`` (when idle, or in the cycle of ``done``).
    gemm : ``In(isa.PAYLOADS[Opcode.GEMM])``
        The payload, valid with ``start``.
    busy : ``Out(1)``
        A GEMM runs: from the cycle after ``start`` to the cycle before ``done``.
    done : ``Out(1)``
        One-cycle pulse in cycle ``s + isa.cycles(instr)``.
    act_read : ``In(WideReadPortSignature(act entries, 16, 1)).array(max(R, C) * m_max)``
        Activations (B); port ``e * m_max + u`` is lane ``u`` of edge ``e``'s group.
    wgt_read : ``In(WideReadPortSignature(wgt entries, 16, 1)).array(R * B)``
        A's values; port ``r * B + b`` is row ``r``'s weight bus ``b``.
    idx_read : ``In(WideReadPortSignature(wgt entries, index_bits, 1)).array(R * B)``
        A's N:M indices (the same addresses as ``wgt_read``); unused when dense.
    acc_read : ``In(WideReadPortSignature(acc entries, 32, 1)).array(C)``
        Initial and partial sums, one port per column.
    acc_write : ``In(WideWritePortSignature(acc entries, 32, 1)).array(C)``
        Results and partial sums, one port per column.
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        rows, cols = params.array_rows, params.array_cols
        buses = weight_buses(params)
        act = buffer_entries(Buffer.ACT, params)
        wgt = buffer_entries(Buffer.WGT, params)
        acc = buffer_entries(Buffer.ACC, params)

        def read(depth: int, bits: int) -> WideReadPortSignature:
            return WideReadPortSignature(depth_entries=depth, element_bits=bits, lanes=1)

        super().__init__(
            {
                "start": In(1),
                "gemm": In(PAYLOADS[Opcode.GEMM]),
                "busy": Out(1),
                "done": Out(1),
                "act_read": In(read(act, 16)).array(self.act_port_count),
                "wgt_read": In(read(wgt, 16)).array(rows * buses),
                "idx_read": In(read(wgt, params.index_bits)).array(rows * buses),
                "acc_read": In(read(acc, 32)).array(cols),
                "acc_write": In(
                    WideWritePortSignature(depth_entries=acc, element_bits=32, lanes=1)
                ).array(cols),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameter set the STCE was built for."""
        return self._params

    @property
    def act_port_count(self) -> int:
        """Activation read ports: ``max(R, C) * m_max``."""
        p = self._params
        return max(p.array_rows, p.array_cols) * p.m_max

    def elaborate(self, platform: object) -> Module:
        # The logic is split into one submodule per row, column, edge and PE: the simulator
        # re-evaluates a module's combinational logic as a whole when any input changes.
        m = Module()
        params = self._params

        # -- the instruction: latched, and visible in the start cycle itself ---------------
        top = Module()
        m.submodules.decode = top
        layout = PAYLOADS[Opcode.GEMM]
        cfg_reg = Signal(layout, name="cfg_reg")
        cfg = Signal(layout, name="cfg")
        with top.If(self.start):
            top.d.sync += cfg_reg.eq(self.gemm)
        top.d.comb += cfg.eq(Mux(self.start, self.gemm, cfg_reg))
        d = Decoded(top, cfg, params)

        ws_module, os_module = Module(), Module()
        m.submodules.ws_master = ws_module
        m.submodules.os_master = os_module
        ws_row0, ws_acc0, ws_read0 = ws_master(ws_module, self.start, d, params)
        os_row0, os_col0, os_read0 = os_master(os_module, self.start, d, params)
        row0 = Signal(row_layout(params), name="row0")
        top.d.comb += row0.eq(Mux(d.ws, ws_row0, os_row0))

        edges = self._build_rows(m, d, row0)
        reads = self._build_acc_reads(m, d, ws_acc0, os_col0)
        groups = self._build_act_ports(m, d, ws_read0, os_read0)
        pes = self._build_cells(m, d, edges, groups, reads.shifts, reads.tops)
        done_next = self._build_acc_writes(m, d, reads.psum0, os_col0, pes)
        top.d.sync += self.done.eq(done_next)
        with top.If(self.start):
            top.d.sync += self.busy.eq(1)
        with top.Elif(done_next):
            top.d.sync += self.busy.eq(0)
        return m

    def _build_rows(self, m: Module, d: Decoded, row0: Any) -> list[_Edge]:
        """Build the row chain; drive the WGT and IDX ports; return each row's edge.

        Every row reads its weights in row 0's read cycle (:func:`weight_read`); row ``r``'s
        value and index then wait in a shift register, ``r * L`` cycles (WS) or ``r`` (OS),
        the delay with which its record reaches it.
        """
        params = self._params
        R, L, bits = params.array_rows, params.adder_latency, params.index_bits
        buses = weight_buses(params)
        ws = d.ws
        edges = []
        rec = row0
        for r in range(R):
            rm = Module()
            m.submodules[f"row{r}"] = rm
            if r:
                # Row r sees row r - 1's records L cycles later (WS) or 1 cycle later (OS).
                stage = step_row(rm, rec, d, f"row{r}_next")
                stages = [stage]
                for k in range(L):
                    reg = Signal.like(stage, name=f"row{r}_d{k + 1}")
                    rm.d.sync += reg.eq(stages[-1])
                    stages.append(reg)
                rec = Signal.like(stage, name=f"row{r}")
                rm.d.comb += rec.eq(Mux(ws, stages[L], stages[1]))
            q_ok = Signal(name=f"row{r}_q_ok")
            rm.d.comb += q_ok.eq(rec.q < d.kc)
            regs = Signal(_edge_layout(params), name=f"row{r}_edge")
            bus_values, bus_indices = [], []
            weights = []
            for b in range(buses):
                load = rec.loads[b]
                w_en, w_addr = weight_read(rm, row0, d, r, b, f"row{r}_w{b}")
                wgt, idx = self.wgt_read[r * buses + b], self.idx_read[r * buses + b]
                rm.d.comb += [
                    wgt.en.eq(w_en),
                    wgt.addr.eq(w_addr),
                    idx.en.eq(w_en & ~d.dense),
                    idx.addr.eq(w_addr),
                ]
                # One shift register per row and bus (no reset, no enable), tapped at r * L
                # (WS) and, on bus 0, at r (OS); stages[k] is the data read k + 1 cycles ago.
                stages = [Cat(wgt.data[0], idx.data[0])]
                for k in range(r * L):
                    stage = Signal(16 + bits, name=f"row{r}_w{b}_d{k + 1}", reset_less=True)
                    rm.d.sync += stage.eq(stages[-1])
                    stages.append(stage)
                arrived = Signal(16 + bits, name=f"row{r}_w{b}_data")
                rm.d.comb += arrived.eq(Mux(ws, stages[r * L], stages[r]) if b == 0 else stages[-1])
                value = Signal(16, name=f"row{r}_bus{b}_value")
                index = Signal(bits, name=f"row{r}_bus{b}_index")
                rm.d.comb += [
                    index.eq(arrived[16:] & d.idx_mask),
                    value.eq(Mux(regs.buses[b].zero, _NEGATIVE_ZERO_FP16, arrived[:16])),
                ]
                rm.d.sync += [
                    regs.buses[b].valid.eq(ws & load.valid),
                    regs.buses[b].col.eq(load.col),
                    regs.buses[b].zero.eq(~(load.q < d.kc)),
                ]
                weights.append(arrived[:16])
                bus_values.append(value)
                bus_indices.append(index)
            rm.d.sync += [
                regs.mac.eq(rec.op & rec.mac),
                regs.next_weight.eq(rec.op & rec.first),
                regs.chained.eq(ws),
                regs.acc_sel.eq(rec.acc_sel),
                regs.acc_swap.eq(rec.op & rec.swap & ~ws),
                regs.acc_zero.eq(rec.op & rec.zero & ~ws),
                regs.w_load.eq(rec.op & rec.first & ~ws),
                regs.act_zero.eq(ws & ~q_ok),
            ]
            # The operation entering column 0 in the cycle the data arrives.
            op = Signal(_op_layout(params), name=f"op_{r}_0")
            rm.d.comb += [
                op.mac.eq(regs.mac),
                op.next_weight.eq(regs.next_weight),
                op.chained.eq(regs.chained),
                op.acc_sel.eq(regs.acc_sel),
                op.acc_swap.eq(regs.acc_swap),
                op.acc_zero.eq(regs.acc_zero),
                op.w_load.eq(regs.w_load),
                op.w_value.eq(weights[0]),
                op.w_index.eq(bus_indices[0]),
            ]
            edges.append(_Edge(regs, op, bus_values, bus_indices))
        return edges

    def _build_acc_reads(self, m: Module, d: Decoded, ws_acc0: Any, os_col0: Any) -> _AccReads:
        """Drive the ACC read ports; return each column's sum as it enters row 0, each
        column's shadow shift (OS), and column 0's partial-sum record (WS).

        All columns read in column 0's read cycle (:func:`acc_port`): WS, the partial sums
        ``C[i0 + c, j]`` of one vector (``psum0``, one cycle after the master's record, as
        the sums enter a cycle after the activations); OS, one shadow-chain element of C
        consecutive output columns (``os_col0``). Column ``c``'s data then waits ``c``
        cycles in a shift register (no reset, no enable), the delay with which the column
        sees column 0's schedule.
        """
        params = self._params
        C = params.array_cols
        cfg = d.cfg
        cm = Module()
        m.submodules.acc_corner = cm
        psum0 = Signal(acc_layout(), name="psum0")
        cm.d.sync += psum0.eq(ws_acc0)
        rd_en = Signal(name="acc_rd_en")
        rd_addr = Signal.like(psum0.addr, name="acc_rd_addr")
        rd_idx = Signal.like(psum0.i, name="acc_rd_idx")
        cm.d.comb += [
            rd_en.eq(Mux(d.ws, psum0.valid & psum0.rd, os_col0.rd & (os_col0.rd_i < cfg.rows))),
            rd_addr.eq(Mux(d.ws, psum0.addr, os_col0.rd_addr)),
            rd_idx.eq(Mux(d.ws, psum0.i, os_col0.rd_j)),
        ]
        # The data arrives a cycle after the read; a WS sum that starts afresh takes +0.
        from_acc = Signal(name="acc_from_buffer")
        cm.d.sync += from_acc.eq(~d.ws | psum0.rd)
        tops: list[Value] = []
        shifts: list[Value] = []
        for c in range(C):
            am = Module()
            m.submodules[f"acc_read{c}"] = am
            en, addr = acc_port(am, rd_en, rd_addr, rd_idx, d, c, f"acc{c}_rd")
            port = self.acc_read[c]
            value = Signal(32, name=f"acc{c}_rd_value")
            am.d.comb += [
                port.en.eq(en),
                port.addr.eq(addr),
                value.eq(Mux(from_acc, port.data[0], 0)),
            ]
            tops.append(delay(am, value, c, f"acc{c}_rd"))
            # Column c's shadow chain shifts c + 1 cycles after column 0's record.
            shift = Signal(name=f"acc{c}_shift")
            am.d.sync += shift.eq(shifts[-1] if c else os_col0.ch)
            shifts.append(shift)
        return _AccReads(tops, shifts, psum0)

    def _build_acc_writes(
        self, m: Module, d: Decoded, psum0: Any, os_col0: Any, pes: list[list[Cell]]
    ) -> Value:
        """Drive the ACC write ports; return ``done`` one cycle early.

        All columns write in column C-1's write cycle (:func:`acc_port`): WS, the sums
        ``C[i0 + c, j]`` of one vector, ``R * L + C`` cycles after column 0 read them (a sum
        leaves column 0's bottom ``1 + R * L`` cycles after its read, column C-1's ``C - 1``
        later); OS, one element of the shadow chains, C consecutive output columns, ``C``
        cycles after column 0's record (column 0 shifts it out a cycle after its record).
        Column ``c``'s result waits ``C - 1 - c`` cycles in a shift register (no reset, no
        enable). The last write is in the cycle before ``done``.
        """
        params = self._params
        R, C, L = params.array_rows, params.array_cols, params.adder_latency
        cfg = d.cfg
        wm = Module()
        m.submodules.acc_write = wm
        ws_rec = Signal(acc_write_layout(), name="ws_write0")
        os_rec = Signal(acc_write_layout(), name="os_write0")
        wm.d.comb += [
            ws_rec.valid.eq(psum0.valid),
            ws_rec.addr.eq(psum0.addr),
            ws_rec.idx.eq(psum0.i),
            ws_rec.last.eq(psum0.valid & psum0.last),
            os_rec.valid.eq(os_col0.wr & (os_col0.wr_i < cfg.rows)),
            os_rec.addr.eq(os_col0.wr_addr),
            os_rec.idx.eq(os_col0.wr_j),
            os_rec.last.eq(os_col0.last),
        ]
        rec = Signal(acc_write_layout(), name="acc_write0")
        ws_late = delay(wm, ws_rec, R * L + C, "ws_write", reset_less=False)
        os_late = delay(wm, os_rec, C, "os_write", reset_less=False)
        wm.d.comb += rec.eq(Mux(d.ws, ws_late, os_late))
        for c in range(C):
            wc = Module()
            m.submodules[f"acc_write{c}"] = wc
            en, addr = acc_port(wc, rec.valid, rec.addr, rec.idx, d, c, f"acc{c}_wr")
            bottom = pes[R - 1][c]
            value = Signal(32, name=f"acc{c}_wr_value")
            wc.d.comb += value.eq(Mux(d.ws, bottom.psum_out, bottom.shadow_out))
            port = self.acc_write[c]
            wc.d.comb += [
                port.en.eq(en),
                port.addr.eq(addr),
                port.data[0].eq(delay(wc, value, C - 1 - c, f"acc{c}_wr")),
            ]
        done_next = Signal(name="done_next")
        wm.d.comb += done_next.eq(rec.last)
        return done_next

    def _build_act_ports(self, m: Module, d: Decoded, ws_read: Any, os_read: Any) -> list[Any]:
        """Drive the activation ports; return each edge's group as it arrives.

        Every edge reads in the corner's read cycle (``ws_read``: row 0's, ``os_read``:
        column 0's); edge ``e``'s data then waits in a shift register, ``e * L`` cycles for
        row ``e`` (WS) and ``e`` for column ``e`` (OS), the delay with which its record
        reaches it.
        """
        params = self._params
        R, C, L, lanes = params.array_rows, params.array_cols, params.adder_latency, params.m_max
        ws = d.ws
        groups = []
        for e in range(max(R, C)):
            am = Module()
            m.submodules[f"act{e}"] = am
            ws_en: Value | int = 0
            ws_addr: Value | int = 0
            os_en: Value | int = 0
            os_addr: Value | int = 0
            if e < R:
                ws_en, ws_addr = row_read(am, ws_read, d, e, f"act{e}_ws")
            if e < C:
                os_en, os_addr = col_read(am, os_read, d, e, f"act{e}_os")
            read = Signal(data.ArrayLayout(16, lanes), name=f"act{e}_read")
            for u in range(lanes):
                port = self.act_read[e * lanes + u]
                lane = d.m_eff > u
                am.d.comb += [
                    port.en.eq((ws_en | os_en) & lane),
                    port.addr.eq(Mux(ws, ws_addr, os_addr) + d.lane_off[u]),
                    read[u].eq(port.data[0]),
                ]
            # One shift register per edge (no reset, no enable), tapped at e * L for row e
            # (WS) and at e for column e (OS); stages[k] is the data read k + 1 cycles ago.
            stages = [read.as_value()]
            for k in range(max(e * L if e < R else 0, e if e < C else 0)):
                stage = Signal(lanes * 16, name=f"act{e}_d{k + 1}", reset_less=True)
                am.d.sync += stage.eq(stages[-1])
                stages.append(stage)
            group = Signal(data.ArrayLayout(16, lanes), name=f"act_group{e}")
            if e < R and e < C:
                am.d.comb += group.eq(Mux(ws, stages[e * L], stages[e]))
            else:
                am.d.comb += group.eq(stages[e * L if e < R else e])
            groups.append(group)
        return groups

    def _build_cells(
        self,
        m: Module,
        d: Decoded,
        edges: list[_Edge],
        groups: list[Any],
        shifts: list[Value],
        tops: list[Value],
    ) -> list[list[Cell]]:
        """Build the PEs with their hop registers (operations right, activations right in WS
        and down in OS) and chain them down the columns."""
        params = self._params
        R, C, lanes = params.array_rows, params.array_cols, params.m_max
        buses = weight_buses(params)
        op_layout = _op_layout(params)
        bus_layout = _edge_layout(params)["buses"].shape.elem_shape
        cells = [
            [Cell(params, op_layout, bus_layout, buses, top=r == 0, left=c == 0) for c in range(C)]
            for r in range(R)
        ]
        shadow_last = Signal(range(params.interleave), name="shadow_last")
        m.submodules.cells_common = common = Module()
        common.d.comb += shadow_last.eq(d.os_ilv - 1)
        for r in range(R):
            edge = edges[r]
            forced = Signal(data.ArrayLayout(16, lanes), name=f"row{r}_acts")
            m.submodules[f"row{r}_acts"] = fm = Module()
            fm.d.comb += forced.eq(Mux(edge.regs.act_zero, 0, groups[r]))
            links = Module()
            m.submodules[f"row{r}_links"] = links
            for c in range(C):
                cell = cells[r][c]
                # One Verilog module per kind of cell (nmsat.hw.shared).
                name = f"stce_cell_{cell.kind}"
                m.submodules[f"cell_{r}_{c}"] = Shared(cell, (Cell, params, cell.kind), name)
                links.d.comb += [
                    cell.ws.eq(d.ws),
                    cell.dense.eq(d.dense),
                    cell.col.eq(c),
                    cell.op_in.eq(edge.op if c == 0 else cells[r][c - 1].op),
                    cell.bus.eq(edge.regs.buses),
                    cell.shadow_shift.eq(shifts[c]),
                    cell.shadow_last.eq(shadow_last),
                    *(cell.bus_values[b].eq(edge.bus_values[b]) for b in range(buses)),
                    *(cell.bus_indices[b].eq(edge.bus_indices[b]) for b in range(buses)),
                ]
                if r == 0 or c == 0:
                    links.d.comb += cell.acts_edge.eq(forced if c == 0 else groups[c])
                if c:
                    links.d.comb += cell.acts_left.eq(cells[r][c - 1].acts)
                if r:
                    links.d.comb += cell.acts_up.eq(cells[r - 1][c].acts)
                if r == 0:
                    links.d.comb += [cell.psum_in.eq(tops[c]), cell.shadow_in.eq(tops[c])]
                else:
                    above = cells[r - 1][c]
                    links.d.comb += [
                        cell.psum_in.eq(above.psum_out),
                        cell.shadow_in.eq(above.shadow_out),
                    ]
        return cells
