# Ref: docs/isa.md (GEMM); hw/stce/array.py (the array this cell tiles, its dataflows).
"""One cell of the STCE: a PE with its hop registers and its weight-bus select.

A cell is a component of its own so that the Verilog generator writes it once per kind
(:class:`nmsat.hw.shared.Shared`) instead of R x C times: the four kinds are the corner
(row 0, column 0), the rest of row 0, the rest of column 0, and the interior, which differ
in where their operation and activations come from.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..params import SATParams
from .pe import ProcessingElement

__all__ = ["Cell"]


class Cell(wiring.Component):
    """PE ``(r, c)`` of the array with its operation and activation hop registers.

    **Operation.** Column 0 takes the row's operation as is (``op_in``); every other column
    registers its left neighbour's (one cycle per column). The cell drives ``op``, the
    operation its PE executes this cycle, for the next column.

    **Activations** (``acts``, the group the PE sees this cycle): row 0, column 0 takes
    ``acts_edge`` (its row's group); column 0 below row 0: ``acts_edge`` in WS, the cell
    above's one cycle later in OS; row 0 right of column 0: the left cell's one cycle later
    in WS, ``acts_edge`` (its column's group) in OS; any other cell: the left cell's (WS) or
    the upper cell's (OS), one cycle later.

    **Weights** (WS): of the row's ``B`` weight buses the one whose ``col`` equals this
    cell's column ``col`` loads the PE (at most one does); OS loads from the operation.

    Parameters
    ----------
    params : SATParams
        The PE's parameters and the number of weight buses.
    op_layout, bus_layout : data.Layout
        The operation record and one weight bus's record (``valid``, ``col``, ``zero``).
    buses : int
        Weight buses per row.
    top, left : bool
        The cell is in row 0 / column 0.
    """

    def __init__(
        self,
        params: SATParams,
        op_layout: data.Layout,
        bus_layout: data.Layout,
        buses: int,
        *,
        top: bool,
        left: bool,
    ) -> None:
        self._params = params
        self._top, self._left = top, left
        acts = data.ArrayLayout(16, params.m_max)
        members = {
            "ws": In(1),
            "dense": In(1),
            "col": In(data.Layout.cast(bus_layout)["col"].shape),
            "op_in": In(op_layout),
            "op": Out(op_layout),
            "acts": Out(acts),
            "bus": In(data.ArrayLayout(bus_layout, buses)),
            "bus_values": In(data.ArrayLayout(16, buses)),
            "bus_indices": In(data.ArrayLayout(params.index_bits, buses)),
            "shadow_shift": In(1),
            "shadow_last": In(range(params.interleave), init=params.interleave - 1),
            "psum_in": In(32),
            "shadow_in": In(32),
            "psum_out": Out(32),
            "shadow_out": Out(32),
        }
        if top or left:
            members["acts_edge"] = In(acts)
        if not left:
            members["acts_left"] = In(acts)
        if not top:
            members["acts_up"] = In(acts)
        super().__init__(members)

    @property
    def kind(self) -> str:
        """``"corner"``, ``"top"`` (row 0), ``"left"`` (column 0) or ``"inner"``."""
        if self._top:
            return "corner" if self._left else "top"
        return "left" if self._left else "inner"

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        top, left = self._top, self._left
        m.submodules.pe = pe = ProcessingElement(params)

        op: Value = self.op_in
        if not left:
            hop = Signal.like(self.op_in, name="op_hop")
            m.d.sync += hop.eq(self.op_in)
            op = hop
        m.d.comb += self.op.eq(op)

        if top and left:
            m.d.comb += self.acts.eq(self.acts_edge)
        else:
            act_hop = Signal.like(self.acts, name="acts_hop")
            if top:
                m.d.sync += act_hop.eq(self.acts_left)
                m.d.comb += self.acts.eq(Mux(self.ws, act_hop, self.acts_edge))
            elif left:
                m.d.sync += act_hop.eq(self.acts_up)
                m.d.comb += self.acts.eq(Mux(self.ws, self.acts_edge, act_hop))
            else:
                m.d.sync += act_hop.eq(Mux(self.ws, self.acts_left, self.acts_up))
                m.d.comb += self.acts.eq(act_hop)

        # WS: the weight bus that loads this column this cycle (at most one does).
        bus_load: Value = Const(0, 1)
        bus_value: Value = self.bus_values[0]
        bus_index: Value = self.bus_indices[0]
        for b, bus in enumerate(self.bus):
            hit = bus.valid & (bus.col == self.col)
            bus_load = bus_load | hit
            if b:
                bus_value = Mux(hit, self.bus_values[b], bus_value)
                bus_index = Mux(hit, self.bus_indices[b], bus_index)
        ws = self.ws
        m.d.comb += [
            pe.mac.eq(op.mac),
            pe.next_weight.eq(op.next_weight),
            pe.chained.eq(op.chained),
            pe.acc_sel.eq(op.acc_sel),
            pe.acc_swap.eq(op.acc_swap),
            pe.acc_zero.eq(op.acc_zero),
            pe.w_load.eq(Mux(ws, bus_load, op.w_load)),
            pe.w_value.eq(Mux(ws, bus_value, op.w_value)),
            pe.w_index.eq(Mux(ws, bus_index, op.w_index)),
            pe.acts.eq(self.acts),
            pe.dense.eq(self.dense),
            pe.shadow_shift.eq(self.shadow_shift),
            pe.shadow_last.eq(self.shadow_last),
            pe.psum_in.eq(self.psum_in),
            pe.shadow_in.eq(self.shadow_in),
            self.psum_out.eq(pe.psum_out),
            self.shadow_out.eq(pe.shadow_out),
        ]
        return m
