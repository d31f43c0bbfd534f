# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (SORE; BDWP needs the FF and the transposed BP copy
#      of every pruned weight matrix).
# Ref: docs/isa.md, section PRUNE (loop nest, prune_cycles, sore_pipeline_cycles); the unit
#      contract of the execution units (start, payload, done at s + cycles).
# Ref: sim/model/sore.py (the executable semantics); hw/sore/sore.py (the network's timing).
"""The prune unit: PRUNE's sequencer around the SORE, from VEC to WGT and IDX."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import isa_timing
from ..arith._stages import delay
from ..isa import PAYLOADS, Buffer, Direction, Opcode, buffer_entries
from ..isa_timing import prune_cycles
from ..mem.buffer import WideReadPortSignature, WideWritePortSignature
from ..params import SATParams
from .sore import SORE

__all__ = ["PruneUnit", "prune_bp_cycles", "prune_groups_per_cycle"]

_ADDR_BITS = 24


def prune_groups_per_cycle(m: int, params: SATParams) -> int:
    """Return G, the groups of ``m`` that enter the SORE per cycle (``prune_cycles``' G)."""
    return isa_timing.prune_groups_per_cycle(m, params)


def prune_bp_cycles(rows: int, cols: int, m: int, params: SATParams) -> int:
    """Return the cycles of a BP PRUNE: :func:`nmsat.hw.isa_timing.prune_cycles`, transposed."""
    return isa_timing.prune_cycles(rows, cols, m, params, transposed=True)


def _by_size(size: Value, table: Mapping[int, Value | int], width: int | None = None) -> Value:
    """Return ``table[size]`` for the group size ``size`` (0 for a size not in the table)."""
    result: Value = Const(0, width) if width is not None else Const(0)
    for group, value in table.items():
        result = Mux(size == group, value, result)
    return result


def _min(a: Value, b: Value) -> Value:
    return Mux(a < b, a, b)


class PruneUnit(wiring.Component):
    """Executes PRUNE: FP32 master weights in VEC to an N:M-compressed FP16 copy in WGT/IDX.

    The unit reads the ``[rows, cols]`` source through one wide VEC read port, feeds ``G``
    groups per cycle (``G = max(1, min(sore_lanes, buffer_banks // m))``, see
    :func:`nmsat.hw.isa_timing.prune_cycles`) to the :class:`~nmsat.hw.sore.SORE` lanes and
    writes the lanes' ``G * n`` FP16 values and indices side by side through one wide WGT
    and one wide IDX write port, bit for bit :func:`nmsat.sim.model.prune`.

    - **FF**: the groups are consecutive in VEC and their outputs consecutive in WGT/IDX:
      ``G * m`` weights are read per cycle, from cycle ``s + 1`` (``s``: the start cycle),
      and the last group is written in cycle ``done - 1``, so ``done`` comes exactly
      ``prune_cycles(rows, cols, m)`` after ``start``.
    - **BP**: a group is ``m`` rows of one column, and the ``G`` groups of one write must be
      consecutive groups of one column (the output is transposed). The unit reads tiles of
      ``W = G * m`` rows by ``W`` columns, one row segment per cycle, into one half of a
      double-buffered ``W x W`` register array (the corner turn), while the other half,
      holding the previous tile, shifts out one column (``G`` groups) per cycle into the
      SORE. The fill of the first tile costs about ``W`` cycles more than a pass over the
      groups; the contract's BP formula includes that term, so ``done`` comes exactly
      ``isa.cycles`` (:func:`prune_bp_cycles`) after ``start``.

    **Unit contract.** ``start`` is a one-cycle pulse with the payload ``prune`` valid in
    that cycle, which latches it; ``done`` pulses in cycle ``s + isa.cycles`` (for BP the
    same as :func:`prune_bp_cycles`), every write is stored by then, and
    ``start`` may pulse again in that cycle.

    Parameters
    ----------
    params : SATParams
        Uses ``sore_lanes``, ``buffer_banks``, ``m_max``, ``index_bits`` and the buffer sizes.

    Members
    -------
    start : ``In(1)``
        Start the PRUNE in ``prune`` (while not busy).
    prune : ``In(isa.PAYLOADS[Opcode.PRUNE])``
        The payload.
    busy : ``Out(1)``
        A PRUNE runs: from the cycle after ``start`` to the cycle before ``done``.
    done : ``Out(1)``
        One-cycle pulse: the PRUNE is complete.
    vec_read : ``In(WideReadPortSignature(vec entries, 32, lanes))``
        Reads the source; :attr:`lanes` ``= max(G * m)`` over the group sizes ``m``, which
        exceeds ``buffer_banks`` when ``m_max > buffer_banks`` (G is at least 1).
    wgt_write : ``In(WideWritePortSignature(wgt entries, 16, lanes))``
        Writes the kept FP16 values.
    idx_write : ``In(WideWritePortSignature(wgt entries, index_bits, lanes))``
        Writes their indices, at the same addresses.
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        self._sizes = tuple(1 << k for k in range(params.m_max.bit_length()))
        self._groups = {m: prune_groups_per_cycle(m, params) for m in self._sizes}
        self._lanes = max(g * m for m, g in self._groups.items())
        wgt_entries = buffer_entries(Buffer.WGT, params)
        super().__init__(
            {
                "start": In(1),
                "prune": In(PAYLOADS[Opcode.PRUNE]),
                "busy": Out(1),
                "done": Out(1),
                "vec_read": In(
                    WideReadPortSignature(
                        depth_entries=buffer_entries(Buffer.VEC, params),
                        element_bits=32,
                        lanes=self._lanes,
                    )
                ),
                "wgt_write": In(
                    WideWritePortSignature(
                        depth_entries=wgt_entries, element_bits=16, lanes=self._lanes
                    )
                ),
                "idx_write": In(
                    WideWritePortSignature(
                        depth_entries=wgt_entries,
                        element_bits=params.index_bits,
                        lanes=self._lanes,
                    )
                ),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameters the unit was built for."""
        return self._params

    @property
    def lanes(self) -> int:
        """Width of the three buffer ports: the most weights one cycle reads, ``max(G * m)``."""
        return self._lanes

    def cycles(self, direction: Direction, rows: int, cols: int, m: int) -> int:
        """Return the cycles of a PRUNE on this unit (FF: ``isa_timing.prune_cycles``)."""
        if direction is Direction.BP:
            return prune_bp_cycles(rows, cols, m, self._params)
        return prune_cycles(rows, cols, m, self._params)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        sore = SORE(params)
        m.submodules.sore = sore
        payload = self.prune

        # -- the latched instruction ---------------------------------------------------------
        bp = Signal()
        n = Signal(5)
        size = Signal(5)
        cols = Signal(16)
        with m.If(self.start):
            m.d.sync += [
                bp.eq(payload.direction == Direction.BP),
                n.eq(payload.n),
                size.eq(payload.m),
                cols.eq(payload.cols),
            ]
        m.d.comb += [sore.n.eq(n), sore.m.eq(size)]

        ff = self._elaborate_ff(m, size, n)
        bp_in = self._elaborate_bp(m, size, cols)
        # The read port belongs to whichever sequencer runs (the other one is idle).
        m.d.comb += [
            self.vec_read.en.eq(ff["read"] | bp_in["read"]),
            self.vec_read.addr.eq(Mux(bp, bp_in["read_addr"], ff["read_addr"])),
        ]

        # -- the SORE's inputs: the read data (FF) or the corner turn's column (BP) ----------
        feed = {key: Mux(bp, bp_in[key], ff[key]) for key in ("valid", "groups", "addr", "last")}
        read_data = self.vec_read.data
        words = [Mux(bp, bp_in["words"][row], read_data[row]) for row in range(self._lanes)]
        for lane, port in enumerate(sore.i):
            m.d.comb += port.valid.eq(feed["valid"] & (lane < feed["groups"]))
            for u in range(params.m_max):
                table = {
                    group: words[lane * group + u]
                    for group, count in self._groups.items()
                    if u < group and lane < count
                }
                m.d.comb += port.weights[u].eq(_by_size(size, table, 32))

        self._elaborate_write(m, sore, size, n, feed["addr"], feed["last"])
        return m

    # -- FF: groups straight from the read port ----------------------------------------------

    def _elaborate_ff(self, m: Module, size: Value, n: Value) -> dict[str, Value]:
        payload = self.prune
        groups_per_cycle = _by_size(size, self._groups)
        read_step = _by_size(size, {g: c * g for g, c in self._groups.items()})
        write_step = _by_size(size, {g: n * c for g, c in self._groups.items()})
        groups_left = Signal(32)
        read_ptr = Signal(_ADDR_BITS)
        write_ptr = Signal(_ADDR_BITS)
        issue = groups_left != 0
        taken = _min(groups_left, groups_per_cycle)
        with m.If(issue):
            m.d.sync += [
                groups_left.eq(groups_left - taken),
                read_ptr.eq(read_ptr + read_step),
                write_ptr.eq(write_ptr + write_step),
            ]
        with m.If(self.start):
            elements = payload.rows * payload.cols
            groups = _by_size(payload.m, {g: elements >> (g.bit_length() - 1) for g in self._sizes})
            m.d.sync += [
                groups_left.eq(Mux(payload.direction == Direction.FF, groups, 0)),
                read_ptr.eq(payload.src_addr),
                write_ptr.eq(payload.dst_addr),
            ]
        # The data cycle, one after the read: its groups enter the SORE.
        valid = Signal(name="ff_valid")
        groups_in = Signal(range(self._params.sore_lanes + 1), name="ff_groups")
        last = Signal(name="ff_last")
        addr = Signal(_ADDR_BITS, name="ff_addr")
        m.d.sync += [
            valid.eq(issue),
            groups_in.eq(taken),
            last.eq(groups_left <= groups_per_cycle),
            addr.eq(write_ptr),
        ]
        return {
            "read": issue,
            "read_addr": read_ptr,
            "valid": valid,
            "groups": groups_in,
            "addr": addr,
            "last": valid & last,
        }

    # -- BP: tiles through the corner turn ---------------------------------------------------

    def _elaborate_bp(self, m: Module, size: Value, cols: Value) -> dict[str, Any]:
        params = self._params
        payload = self.prune
        lanes = self._lanes
        widths = {g: c * g for g, c in self._groups.items()}
        log2 = {g: g.bit_length() - 1 for g in self._sizes}
        width = _by_size(size, widths)

        # Position of the tile being read: rows and columns left from its corner, and the
        # source and destination addresses of its corner and of its row block's first tile.
        rows_left, cols_left = Signal(16), Signal(16)
        rd_row = Signal(_ADDR_BITS, name="tile_rd_row")
        rd_tile = Signal(_ADDR_BITS, name="tile_rd")
        wr_row = Signal(_ADDR_BITS, name="tile_wr_row")
        wr_tile = Signal(_ADDR_BITS, name="tile_wr")
        stride_out = Signal(16)  # rows * n / m: distance of two output columns
        width_cols = Signal(_ADDR_BITS)  # W * cols: source distance of two row blocks
        width_stride = Signal(_ADDR_BITS)  # W * stride_out: output distance of two strips
        groups_n = Signal(range(lanes + 1))  # G * n: output distance of two row blocks

        # The tile being read (cur) and the one draining into the SORE (prev).
        def descriptor(prefix: str) -> dict[str, Signal]:
            return {
                "valid": Signal(name=f"{prefix}_valid"),
                "r": Signal(range(lanes + 1), name=f"{prefix}_r"),
                "c": Signal(range(lanes + 1), name=f"{prefix}_c"),
                "groups": Signal(range(params.sore_lanes + 1), name=f"{prefix}_groups"),
                "wr": Signal(_ADDR_BITS, name=f"{prefix}_wr"),
                "bank": Signal(name=f"{prefix}_bank"),
                "last": Signal(name=f"{prefix}_last"),
            }

        cur, prev = descriptor("cur"), descriptor("prev")
        phase_cycle = Signal(range(lanes + 1))
        read_ptr = Signal(_ADDR_BITS)

        def tile(rows: Value, columns: Value, tile_width: Value, group: Value) -> dict[str, Value]:
            r = _min(tile_width, rows)
            return {
                "r": r,
                "c": _min(tile_width, columns),
                "groups": _by_size(group, {g: r >> k for g, k in log2.items()}),
                "last": (rows <= tile_width) & (columns <= tile_width),
            }

        cur_rows = Mux(cur["valid"], cur["r"], 0)
        prev_cols = Mux(prev["valid"], prev["c"], 0)
        phase_len = Mux(cur_rows > prev_cols, cur_rows, prev_cols)
        active = cur["valid"] | prev["valid"]
        phase_end = active & (phase_cycle == phase_len - 1)

        # Read engine: row `phase_cycle` of the current tile, one per cycle.
        read = cur["valid"] & (phase_cycle < cur["r"])
        with m.If(read):
            m.d.sync += read_ptr.eq(read_ptr + cols)

        # Next tile: the next strip of the row block, else the next row block's first strip.
        more_cols = cols_left > width
        more_rows = rows_left > width
        next_rows = Mux(more_cols, rows_left, rows_left - width)
        next_cols = Mux(more_cols, cols_left - width, cols)
        next_rd_row = Mux(more_cols, rd_row, rd_row + width_cols)
        next_rd = Mux(more_cols, rd_tile + width, next_rd_row)
        next_wr_row = Mux(more_cols, wr_row, wr_row + groups_n)
        next_wr = Mux(more_cols, wr_tile + width_stride, next_wr_row)
        following = tile(next_rows, next_cols, width, size)
        with m.If(phase_end):
            m.d.sync += [prev[key].eq(cur[key]) for key in prev]
            m.d.sync += [
                cur["valid"].eq(cur["valid"] & (more_cols | more_rows)),
                *(cur[key].eq(following[key]) for key in ("r", "c", "groups", "last")),
                cur["wr"].eq(next_wr),
                cur["bank"].eq(~cur["bank"]),
                rows_left.eq(next_rows),
                cols_left.eq(next_cols),
                rd_row.eq(next_rd_row),
                rd_tile.eq(next_rd),
                wr_row.eq(next_wr_row),
                wr_tile.eq(next_wr),
                read_ptr.eq(next_rd),
                phase_cycle.eq(0),
            ]
        with m.Elif(active):
            m.d.sync += phase_cycle.eq(phase_cycle + 1)

        with m.If(self.start):
            is_bp = payload.direction == Direction.BP
            first_width = _by_size(payload.m, widths)
            first = tile(payload.rows, payload.cols, first_width, payload.m)
            rows, columns, kept = payload.rows, payload.cols, payload.n
            stride = _by_size(payload.m, {g: (rows >> k) * kept for g, k in log2.items()})
            m.d.sync += [
                cur["valid"].eq(is_bp),
                *(cur[key].eq(first[key]) for key in ("r", "c", "groups", "last")),
                cur["wr"].eq(payload.dst_addr),
                cur["bank"].eq(0),
                prev["valid"].eq(0),
                phase_cycle.eq(0),
                read_ptr.eq(payload.src_addr),
                rows_left.eq(payload.rows),
                cols_left.eq(payload.cols),
                rd_row.eq(payload.src_addr),
                rd_tile.eq(payload.src_addr),
                wr_row.eq(payload.dst_addr),
                wr_tile.eq(payload.dst_addr),
                stride_out.eq(stride),
                width_cols.eq(_by_size(payload.m, {g: columns * w for g, w in widths.items()})),
                width_stride.eq(_by_size(payload.m, {g: stride * w for g, w in widths.items()})),
                groups_n.eq(_by_size(payload.m, {g: kept * c for g, c in self._groups.items()})),
            ]

        # Drain engine: loads the previous tile in the first cycle of a phase and feeds one
        # of its columns per cycle from the next cycle on (the last column may fall into the
        # first cycle of the next phase, before that phase's load takes effect).
        left = Signal(range(lanes + 1), name="drain_left")
        groups = Signal(range(params.sore_lanes + 1), name="drain_groups")
        addr = Signal(_ADDR_BITS, name="drain_addr")
        bank = Signal(name="drain_bank")
        last_tile = Signal(name="drain_last_tile")
        feed = left != 0
        with m.If(feed):
            m.d.sync += [left.eq(left - 1), addr.eq(addr + stride_out)]
        with m.If(active & (phase_cycle == 0) & prev["valid"]):
            m.d.sync += [
                left.eq(prev["c"]),
                groups.eq(prev["groups"]),
                addr.eq(prev["wr"]),
                bank.eq(prev["bank"]),
                last_tile.eq(prev["last"]),
            ]

        # The corner turn: a row is stored in the cycle its data arrive; a drain shifts every
        # row of its half by one element, so column 0 is always the one to feed.
        fill = Signal(name="fill_valid")
        fill_row = Signal(range(lanes), name="fill_row")
        fill_bank = Signal(name="fill_bank")
        m.d.sync += [fill.eq(read), fill_row.eq(phase_cycle), fill_bank.eq(cur["bank"])]
        column = []
        for row in range(lanes):
            halves = []
            for half in range(2):
                reg = Signal(32 * lanes, name=f"turn{half}_row{row}", reset_less=True)
                with m.If(fill & (fill_bank == half) & (fill_row == row)):
                    m.d.sync += reg.eq(self.vec_read.data.as_value())
                with m.Elif(feed & (bank == half)):
                    m.d.sync += reg.eq(reg >> 32)
                halves.append(reg[:32])
            column.append(Mux(bank, halves[1], halves[0]))

        return {
            "read": read,
            "read_addr": read_ptr,
            "valid": feed,
            "groups": groups,
            "addr": addr,
            "last": feed & last_tile & (left == 1),
            "words": column,
        }

    # -- write side ------------------------------------------------------------------------

    def _elaborate_write(
        self, m: Module, sore: SORE, size: Value, n: Value, addr: Value, last: Value
    ) -> None:
        params = self._params
        lanes = self._lanes
        # The write address and the last flag wait for the group's S = latency_cycles(m).
        taps = [Cat(addr, last)]
        for stage in range(sore.latency_cycles(params.m_max)):
            taps.append(delay(m, taps[-1], 1, f"write_tag{stage}"))
        tag = _by_size(size, {g: taps[sore.latency_cycles(g)] for g in self._sizes}, _ADDR_BITS + 1)
        write_valid = sore.o[0].valid
        write_last = write_valid & tag[_ADDR_BITS]

        # Lane q's n kept values go to write lanes q * n .. q * n + n - 1.
        enables = []
        for k in range(lanes):
            enable: Value = Const(0)
            value: Value = Const(0, 16)
            index: Value = Const(0, params.index_bits)
            for count in range(1, params.m_max + 1):
                lane, t = divmod(k, count)
                if lane >= params.sore_lanes:
                    continue
                chosen = n == count
                enable = Mux(chosen, sore.o[lane].valid, enable)
                value = Mux(chosen, sore.o[lane].values[t], value)
                index = Mux(chosen, sore.o[lane].indices[t], index)
            enables.append(enable)
            m.d.comb += [self.wgt_write.data[k].eq(value), self.idx_write.data[k].eq(index)]
        for port in (self.wgt_write, self.idx_write):
            m.d.comb += [port.addr.eq(tag[:_ADDR_BITS]), port.en.eq(Cat(*enables))]

        busy = Signal()
        m.d.sync += self.done.eq(write_last)
        with m.If(write_last):
            m.d.sync += busy.eq(0)
        with m.If(self.start):
            m.d.sync += busy.eq(1)
        m.d.comb += self.busy.eq(busy)
