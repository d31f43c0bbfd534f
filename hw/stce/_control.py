# Ref: docs/isa.md, section GEMM (loop nest; gemm_ws_cycles and gemm_os_cycles, whose fold
#      structure this schedule implements cycle by cycle); hw/isa_timing.py.
# Ref: sim/model/stce.py (operand addressing: A [rows, Kc] with indices at the same address,
#      B [depth, cols] or [cols, depth] with b_trans, C [rows, cols], each operand's rows
#      isa.gemm_pitches apart; k = (q // n) * m + idx).
# Ref: H. T. Kung, "Why systolic architectures?", IEEE Computer 1982 (skewed operand streams).
"""Private: the GEMM decode, the schedule records and the two master sequencers of the STCE.

The STCE is driven by one *master sequencer* per dataflow that runs the loop nest of the
instruction at the array's corner (row 0, column 0). Every cycle it emits *records*: what the
corner edge reads from the buffers this cycle and what it does one cycle later, when the data
has arrived. The row records travel down the array's left edge through register chains (one
stage per row, ``adder_latency`` stages per row in the weight-stationary dataflow) for the
rows' controls (an operation, a row's weight flags ``valid``, ``col`` and, from ``q``, its
zero weight). The timing of every record follows the fold structure that
``gemm_ws_cycles`` and ``gemm_os_cycles`` describe; see :class:`nmsat.hw.stce.STCE` for the
schedule.

No buffer address travels: every edge reads (and the columns write) in the corner's cycle.
Each master also emits the corner's activation read (:func:`ws_act_layout`,
:func:`os_act_layout`), and *every* edge reads its group in that same cycle, at the address
its record would have had: :func:`row_read` and :func:`col_read` step the corner's read
``r`` rows or ``c`` columns on in closed form (no chain of adders). Likewise every row reads
its weights (A and its indices) in row 0's cycle: :func:`weight_read` steps row 0's loader
record (WS) or A read (OS) ``r`` rows on. So in one cycle all rows read the groups of one
vector of B (WS), or all columns those of one reduction step (OS), and all rows the
weights of one output row of a fold (WS: ``A[i, q0 + r]``) or of one reduction step (OS:
``A[i0 + r, q]``), which banked ACT and WGT/IDX buffers can serve; the STCE delays the data
``r * adder_latency`` (WS) or ``r`` / ``c`` (OS) cycles to the cycle in which the edge's
record arrives. The accumulators likewise (:func:`acc_port`): all columns read in column 0's
cycle and write in column C-1's, one vector of partial sums ``C[i0 + c, j]`` (WS, ``ldc``
apart) or C consecutive elements of one output row (OS, the shadow chains), and the STCE
delays column ``c``'s read data ``c`` cycles and its write data ``C - 1 - c``.

Every cycle number below is a *read cycle*: a record emitted in cycle t reads in t, and the
array uses the data in t + 1 (an edge's activations and weights: in t + 1 plus its delay).

Operands (docs/isa.md, section GEMM): A ``[rows, Kc]`` in WGT (its indices at the same IDX
addresses), B ``[depth, cols]`` (``[cols, depth]`` with ``b_trans``) in ACT and C
``[rows, cols]`` in ACC, each row-major with its rows a *pitch* apart: ``lda``, ``ldb`` and
``ldc`` (:func:`nmsat.hw.isa.gemm_pitches`), the row length or, with the operand's pad bit,
the next odd number. Every address step from one row of an operand to the next is its
pitch; the counts (Kc, ``cols``, ``depth``) only bound loops and mask edges. So
``A[i, q]`` is at ``a_addr + i * lda + q``, ``B[k, j]`` at ``b_addr + k * kstride + j *
jstride`` and ``C[i, j]`` at ``c_addr + i * ldc + j``. The pitches change no cycle.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value
from amaranth.lib import data

from ..isa import Dataflow
from ..params import BUFFER_ADDR_BITS, SATParams

__all__ = [
    "ADDR_BITS",
    "COUNT_BITS",
    "Decoded",
    "acc_layout",
    "acc_port",
    "acc_write_layout",
    "col_layout",
    "col_read",
    "os_act_layout",
    "os_master",
    "row_layout",
    "row_read",
    "step_row",
    "weight_buses",
    "weight_read",
    "ws_act_layout",
    "ws_master",
]

#: Width of every buffer address inside the STCE (the ISA's; arithmetic wraps modulo 2**24,
#: which only ever affects reads that are disabled).
ADDR_BITS = BUFFER_ADDR_BITS
#: Width of row, column and reduction counters: the ISA's 16 bits plus headroom, so that an
#: index advanced past the last row or column of an array edge never wraps below the limit.
COUNT_BITS = 18


def _log2(value: int) -> int:
    return value.bit_length() - 1


def _bits(values: int) -> int:
    """Width of a field holding ``0 .. values - 1`` (at least 1 bit)."""
    return max(1, (values - 1).bit_length())


def weight_buses(params: SATParams) -> int:
    """Weight buses per row: ``ceil(C / R)``.

    A weight-stationary fold loads its C weight columns one per cycle per bus, and a fold
    may last only R cycles, so folds take turns on ``ceil(C / R)`` buses.
    """
    return -(-params.array_cols // params.array_rows)


def row_layout(params: SATParams) -> data.StructLayout:
    """Record of one array row (its left edge).

    ``op``: an operation enters the row (WS: a vector of B; OS: one MAC or, in the drain, one
    accumulator swap); ``mac``, ``first`` (WS: the fold's first vector switches weights; OS:
    a step's first operation loads A), ``acc_sel``, ``swap``, ``zero`` (OS). WS only: ``q``
    (the row's compressed position; its activations were read earlier, see
    :func:`ws_act_layout`). ``loads[b]``: WS: weight bus ``b`` loads column ``col``
    (``valid``), the weight of position ``q`` and output row ``i`` at ``addr``; OS:
    ``loads[0].addr`` and ``loads[0].i`` are the row's A address and output row. Only row
    0's ``addr`` and ``i`` are used (:func:`weight_read`); the rows below keep row 0's.
    """
    load = data.StructLayout(
        {
            "valid": 1,
            "col": _bits(params.array_cols),
            "q": COUNT_BITS,
            "addr": ADDR_BITS,
            "i": COUNT_BITS,
        }
    )
    return data.StructLayout(
        {
            "op": 1,
            "mac": 1,
            "first": 1,
            "acc_sel": _bits(params.interleave),
            "swap": 1,
            "zero": 1,
            "q": COUNT_BITS,
            "loads": data.ArrayLayout(load, weight_buses(params)),
        }
    )


def ws_act_layout() -> data.StructLayout:
    """Row 0's activation read in the weight-stationary dataflow (all rows read with it).

    ``op``: a vector of B is read; ``addr``: lane 0 of row 0's group; ``phase``: position of
    row 0's q in its N:M group; ``q``: row 0's compressed position.
    """
    return data.StructLayout({"op": 1, "addr": ADDR_BITS, "phase": 5, "q": COUNT_BITS})


def os_act_layout() -> data.StructLayout:
    """Column 0's activation read in the output-stationary dataflow (all columns read with
    it): ``op`` a MAC's group is read, ``addr`` its lane 0, ``j`` column 0's output column.
    """
    return data.StructLayout({"op": 1, "addr": ADDR_BITS, "j": COUNT_BITS})


def col_layout() -> data.StructLayout:
    """Record of column 0's shadow chain in the output-stationary dataflow (column ``c``
    does the same ``c`` cycles later, at output column ``j + c``).

    ``ch``: the shadow chain shifts one cycle later; ``rd``/``rd_*``: the value shifted in is
    read (a later fold's initial sum); ``wr``/``wr_*``: the value shifted out is written (an
    earlier fold's result); ``last``: the last write of the instruction.
    """
    return data.StructLayout(
        {
            "ch": 1,
            "rd": 1,
            "rd_addr": ADDR_BITS,
            "rd_i": COUNT_BITS,
            "rd_j": COUNT_BITS,
            "wr": 1,
            "wr_addr": ADDR_BITS,
            "wr_i": COUNT_BITS,
            "wr_j": COUNT_BITS,
            "last": 1,
        }
    )


def acc_layout() -> data.StructLayout:
    """Record of column 0's partial sums in the weight-stationary dataflow.

    ``valid``: a vector's sum enters (or leaves) the column; ``rd``: it starts from the
    accumulator buffer (a later reduction fold, or ``accumulate``), else from +0; ``addr``,
    ``i``: its element and output row; ``last``: the instruction's last sum.
    """
    return data.StructLayout({"valid": 1, "rd": 1, "addr": ADDR_BITS, "i": COUNT_BITS, "last": 1})


def acc_write_layout() -> data.StructLayout:
    """Column 0's ACC write as it waits for column C-1's write cycle (both dataflows).

    ``valid``: the columns write (WS: a vector's sums leave the bottom row; OS: the shadow
    chains shift out results of an existing output row); ``addr``: column 0's element;
    ``idx``: its output row (WS) or column (OS), which :func:`acc_port` steps per column and
    bounds; ``last``: the instruction's last write.
    """
    return data.StructLayout({"valid": 1, "addr": ADDR_BITS, "idx": COUNT_BITS, "last": 1})


def _sig(m: Module, shape: Any, name: str, value: Any) -> Signal:
    sig = Signal(shape, name=name)
    m.d.comb += sig.eq(value)
    return sig


def _max(a: Value, b: Value | int) -> Value:
    return Mux(a > b, a, b)


def _min(a: Value, b: Value | int) -> Value:
    return Mux(a < b, a, b)


class Decoded:
    """Values derived from a GEMM payload ``cfg``, as combinational signals.

    Common: ``ws``, ``dense`` (n == m), ``kc`` (Kc, a count), ``lda``/``ldb``/``ldc``
    (the row pitches of A, B and C: ``isa.row_pitch``), ``n_eff``/``m_eff`` (1/1 when
    dense, so that dense addressing is the N:M addressing of 1:1), ``kstride``/``jstride``
    (elements between consecutive k and consecutive j of B: 1 and ``ldb`` with ``b_trans``,
    else ``ldb`` and 1), ``grp_step`` (one N:M group of B), ``lane_off[u]`` (lane u of a
    group), ``idx_mask`` (m - 1).
    WS: ``ws_step`` and ``ws_tau0`` (first vector's offset in a fold), ``ws_fk_adv`` and
    ``ws_grem`` (B advance per reduction fold), ``ws_c_lda`` and ``ws_c_ldc`` (C rows of A
    and of C: the advance per output block), ``ws_row_off[r]`` and ``ws_row_phase[r]``
    (``r = a * n + b`` compressed positions: ``a`` groups of B, as an address step, and
    ``b``; :func:`row_read`), ``acc_col_off[c]`` (column ``c``'s ACC element past column
    0's: ``c`` rows of C, ``c * ldc``, in WS; ``c`` in OS; :func:`acc_port`).
    OS: ``os_ilv`` (I), ``os_period`` (max(I, L)), ``os_ri`` (R * I), ``os_fold``,
    ``os_ci`` (C * I), ``os_fj_bstep``, ``os_a_bstep``, ``os_r_lda`` and ``os_r_ldc`` (R rows
    of A and of C), ``os_a_row_off[r]`` (r rows of A: :func:`weight_read`), ``os_rm1_ldc``
    (R - 1 rows of C), ``os_col_off[c]`` (c columns of B).
    """

    def __init__(self, m: Module, cfg: Any, params: SATParams) -> None:
        R, C, L = params.array_rows, params.array_cols, params.adder_latency
        log2R, log2C = _log2(R), _log2(C)
        self.cfg = cfg
        self.ws = _sig(m, 1, "dec_ws", cfg.dataflow == Dataflow.WS)
        self.dense = _sig(m, 1, "dec_dense", cfg.n == cfg.m)
        log2m = Mux(cfg.m[4], 4, Mux(cfg.m[3], 3, Mux(cfg.m[2], 2, Mux(cfg.m[1], 1, 0))))
        log2m = _sig(m, 3, "dec_log2m", log2m)
        self.kc = _sig(m, COUNT_BITS, "dec_kc", (cfg.depth >> log2m) * cfg.n)
        self.n_eff = _sig(m, 5, "dec_n_eff", Mux(self.dense, 1, cfg.n))
        self.m_eff = _sig(m, 5, "dec_m_eff", Mux(self.dense, 1, cfg.m))
        log2m_eff = _sig(m, 3, "dec_log2m_eff", Mux(self.dense, 0, log2m))
        self.idx_mask = _sig(m, params.index_bits, "dec_idx_mask", cfg.m - 1)
        # Row pitches (isa.row_pitch): a row's length, or the next odd number with the pad.
        self.lda = _sig(m, COUNT_BITS, "dec_lda", Mux(cfg.a_pad, self.kc | 1, self.kc))
        b_row = Mux(cfg.b_trans, cfg.depth, cfg.cols)
        self.ldb = _sig(m, 16, "dec_ldb", Mux(cfg.b_pad, b_row | 1, b_row))
        self.ldc = _sig(m, 16, "dec_ldc", Mux(cfg.c_pad, cfg.cols | 1, cfg.cols))
        self.kstride = _sig(m, 16, "dec_kstride", Mux(cfg.b_trans, 1, self.ldb))
        self.jstride = _sig(m, 16, "dec_jstride", Mux(cfg.b_trans, self.ldb, 1))
        self.grp_step = _sig(m, ADDR_BITS, "dec_grp_step", self.kstride << log2m_eff)
        self.lane_off = [
            _sig(m, ADDR_BITS, f"dec_lane_off{u}", self.kstride * u) for u in range(params.m_max)
        ]

        # -- weight-stationary: gemm_ws_cycles' step, and B's advance per reduction fold ----
        row_folds = _sig(m, COUNT_BITS, "dec_ws_fi", (cfg.rows + (C - 1)) >> log2C)
        blocks = _sig(m, 5, "dec_ws_blocks", _min(cfg.interleave, row_folds))
        # ceil((R * L + C + 1) / g) for the g = min(interleave, Fi) <= 16 output blocks in
        # flight: a later reduction fold reads a partial sum back (column 0's read cycle)
        # strictly after the cycle it was written in (column C-1's write cycle, R * L + C
        # cycles after the read), so Fi * step >= g * step must exceed R * L + C.
        dependency = Array(Const(-(-(R * L + C + 1) // g) if g else 0, 16) for g in range(32))
        base = _max(cfg.cols, R)
        step = Mux((self.kc > R) & (dependency[blocks] > base), dependency[blocks], base)
        self.ws_step = _sig(m, COUNT_BITS, "dec_ws_step", step)
        self.ws_tau0 = _sig(m, COUNT_BITS, "dec_ws_tau0", self.ws_step - cfg.cols)
        # A fold of R compressed positions moves B by R // n whole groups, plus one more
        # when the position within the group wraps (R % n accumulates).
        groups = Array(Const(R // n if n else 0, 9) for n in range(32))[self.n_eff]
        self.ws_grem = _sig(
            m, 5, "dec_ws_grem", Array(Const(R % n if n else 0, 5) for n in range(32))[self.n_eff]
        )
        self.ws_fk_adv = _sig(m, ADDR_BITS, "dec_ws_fk_adv", (groups << log2m_eff) * self.kstride)
        self.ws_c_lda = _sig(m, ADDR_BITS, "dec_ws_c_lda", self.lda << log2C)
        self.ws_c_ldc = _sig(m, ADDR_BITS, "dec_ws_c_ldc", self.ldc << log2C)
        # Row r is r = a * n + b compressed positions past row 0: a whole groups, and b
        # positions within a group (row_read adds the group these may carry into).
        self.ws_row_off: list[Signal] = []
        self.ws_row_phase: list[Signal] = []
        for r in range(R):
            whole = Array(Const(r // n if n else 0, _bits(R)) for n in range(32))[self.n_eff]
            part = Array(Const(r % n if n else 0, 5) for n in range(32))[self.n_eff]
            self.ws_row_off.append(_sig(m, ADDR_BITS, f"dec_ws_row_off{r}", whole * self.grp_step))
            self.ws_row_phase.append(_sig(m, 5, f"dec_ws_row_phase{r}", part))
        self.acc_col_off = [
            _sig(m, ADDR_BITS, f"dec_acc_col_off{c}", Mux(self.ws, self.ldc * c, c))
            for c in range(C)
        ]

        # -- output-stationary: gemm_os_cycles' I and fold length ---------------------------
        col_groups = _sig(m, COUNT_BITS, "dec_os_ccols", (cfg.cols + (C - 1)) >> log2C)
        ilv = _sig(m, 5, "dec_os_ilv", _min(cfg.interleave, col_groups))
        self.os_ilv = ilv
        self.os_period = _sig(m, 5, "dec_os_period", _max(ilv, L))
        self.os_ri = _sig(m, 13, "dec_os_ri", ilv << log2R)
        compute = _sig(m, 22, "dec_os_compute", self.kc * self.os_period)
        self.os_fold = _sig(m, 22, "dec_os_fold", _max(compute, self.os_ri + (R - 1) + ilv))
        self.os_ci = _sig(m, 13, "dec_os_ci", ilv << log2C)
        self.os_fj_bstep = _sig(m, ADDR_BITS, "dec_os_fj_bstep", self.os_ci * self.jstride)
        self.os_a_bstep = _sig(m, ADDR_BITS, "dec_os_a_bstep", self.jstride << log2C)
        self.os_r_lda = _sig(m, ADDR_BITS, "dec_os_r_lda", self.lda << log2R)
        self.os_a_row_off = [
            _sig(m, ADDR_BITS, f"dec_os_a_row_off{r}", self.lda * r) for r in range(R)
        ]
        self.os_r_ldc = _sig(m, ADDR_BITS, "dec_os_r_ldc", self.ldc << log2R)
        self.os_rm1_ldc = _sig(m, ADDR_BITS, "dec_os_rm1_ldc", (self.ldc << log2R) - self.ldc)
        self.os_col_off = [
            _sig(m, ADDR_BITS, f"dec_os_col_off{c}", self.jstride * c) for c in range(C)
        ]


# -- the chains: how a record changes from one row or column to the next -------------------


def step_row(m: Module, rec: Any, d: Decoded, name: str) -> Any:
    """Return the record of the next row (combinational).

    WS: the next compressed position, of the row and of each loader (for the row's zero
    weights). OS: the same record. (The row's reads: :func:`row_read`, :func:`weight_read`.)
    """
    out = Signal.like(rec, name=name)
    m.d.comb += out.eq(rec)
    with m.If(d.ws):
        m.d.comb += out.q.eq(rec.q + 1)
        for b in range(len(rec.loads)):
            m.d.comb += out.loads[b].q.eq(rec.loads[b].q + 1)
    return out


def row_read(m: Module, act: Any, d: Decoded, r: int, name: str) -> tuple[Value, Value]:
    """Return row ``r``'s weight-stationary activation read in row 0's read cycle: whether
    it reads (all lanes below ``m``) and its lane 0's address (combinational).

    This is row 0's read ``act`` stepped ``r`` compressed positions on, in closed form: with
    ``r = a * n + b``, the group is ``a`` groups further (``ws_row_off[r]``), and one more
    when row 0's phase plus ``b`` (``ws_row_phase[r]``) reaches ``n``. It reads when row 0
    reads a vector and the row's ``q + r`` is below Kc.
    """
    carry = act.phase + d.ws_row_phase[r] >= d.n_eff
    step = Mux(carry, d.grp_step, 0)
    en = _sig(m, 1, f"{name}_en", d.ws & act.op & (act.q + r < d.kc))
    addr = _sig(m, ADDR_BITS, f"{name}_addr", act.addr + d.ws_row_off[r] + step)
    return en, addr


def col_read(m: Module, act: Any, d: Decoded, c: int, name: str) -> tuple[Value, Value]:
    """Return column ``c``'s output-stationary activation read in column 0's read cycle:
    whether it reads (all lanes below ``m``) and its lane 0's address (combinational): ``c``
    columns of B further, if output column ``j + c`` exists."""
    en = _sig(m, 1, f"{name}_en", ~d.ws & act.op & (act.j + c < d.cfg.cols))
    addr = _sig(m, ADDR_BITS, f"{name}_addr", act.addr + d.os_col_off[c])
    return en, addr


def weight_read(m: Module, row0: Any, d: Decoded, r: int, b: int, name: str) -> tuple[Value, Value]:
    """Return row ``r``'s read on weight bus ``b`` in row 0's read cycle: whether it reads
    and the address of A (and of its indices) (combinational).

    WS: row 0's loader ``b`` (``row0.loads[b]``) loads ``A[i, q]`` at ``addr`` into column
    ``col``; row ``r`` loads ``A[i, q + r]``, one element further, if ``q + r`` is below Kc
    and output row ``i`` exists. OS (bus 0): row 0 reads ``A[i, q]`` at ``loads[0].addr``
    with the first operation of a step; row ``r`` reads ``A[i + r, q]``, ``r`` rows of A
    further (``os_a_row_off[r]``), if output row ``i + r`` exists.
    """
    load = row0.loads[b]
    rows = d.cfg.rows
    ws_en = d.ws & load.valid & (load.q + r < d.kc) & (load.i < rows)
    if b:
        en = _sig(m, 1, f"{name}_en", ws_en)
        addr = _sig(m, ADDR_BITS, f"{name}_addr", load.addr + r)
    else:
        os_en = row0.op & row0.first & (load.i + r < rows)
        en = _sig(m, 1, f"{name}_en", Mux(d.ws, ws_en, os_en))
        addr = _sig(m, ADDR_BITS, f"{name}_addr", load.addr + Mux(d.ws, r, d.os_a_row_off[r]))
    return en, addr


def acc_port(
    m: Module, en: Value, addr: Value, idx: Value, d: Decoded, c: int, name: str
) -> tuple[Value, Value]:
    """Return column ``c``'s ACC access in column 0's cycle (a read) or column C-1's (a
    write): whether it accesses and its address (combinational).

    ``en``, ``addr`` and ``idx`` are column 0's access: WS, the partial sum ``C[i, j]`` with
    ``idx = i``; column ``c`` accesses ``C[i + c, j]``, ``c`` rows further, if output row
    ``i + c`` exists. OS, a shadow chain's element ``C[i, j]`` with ``idx = j`` (``en``
    already checks row ``i``); column ``c`` accesses ``C[i, j + c]`` if output column
    ``j + c`` exists.
    """
    limit = Mux(d.ws, d.cfg.rows, d.cfg.cols)
    en_c = _sig(m, 1, f"{name}_en", en & (idx + c < limit))
    addr_c = _sig(m, ADDR_BITS, f"{name}_addr", addr + d.acc_col_off[c])
    return en_c, addr_c


# -- the master sequencers ------------------------------------------------------------------


def _state(m: Module, start: Value, layout: data.StructLayout, name: str) -> tuple[Any, Any, Any]:
    """Return (init, reg, cur): the state is ``init`` in the start cycle, else ``reg``.

    The caller drives ``init`` combinationally; ``reg`` holds ``cur`` unless overridden, so
    the sequencer acts in the very cycle of ``start``.
    """
    init = Signal(layout, name=f"{name}_init")
    reg = Signal(layout, name=f"{name}_reg")
    cur = Signal(layout, name=f"{name}")
    m.d.comb += cur.eq(Mux(start, init, reg))
    m.d.sync += reg.eq(cur)
    return init, reg, cur


def ws_master(m: Module, start: Value, d: Decoded, params: SATParams) -> tuple[Any, Any, Any]:
    """Build the weight-stationary sequencer; return its (row 0, partial-sum, activation
    read) records.

    Folds (``fk`` outer, ``fi`` inner: ``Fi`` output blocks round robin) are windows of
    ``ws_step`` cycles, the first starting ``R - 1`` cycles after ``start``. A window's
    ``cols`` vectors come at its end (``tau >= ws_tau0``), so the last vector of the last
    fold is read in cycle ``start + R - 1 + Fi * Fk * step - 1``. With the first vector of
    each fold, a weight loader starts that loads column ``c`` in the fold's cycle
    ``tau0 + c`` (row 0), for the C columns; fold ``f`` uses loader and bus
    ``f % weight_buses``, so a loader is free again before its next fold.
    """
    R, C = params.array_rows, params.array_cols
    buses = weight_buses(params)
    cfg = d.cfg
    loader = data.StructLayout(
        {
            "valid": 1,
            "col": _bits(C),
            "q": COUNT_BITS,
            "addr": ADDR_BITS,
            "i": COUNT_BITS,
        }
    )
    layout = data.StructLayout(
        {
            "active": 1,
            "wait": _bits(R),
            "tau": COUNT_BITS,
            "act_vec": ADDR_BITS,
            "acc_vec": ADDR_BITS,
            "q0": COUNT_BITS,
            "phase0": 5,
            "act_fk": ADDR_BITS,
            "w_fk": ADDR_BITS,
            "i0": COUNT_BITS,
            "w_base": ADDR_BITS,
            "acc_row": ADDR_BITS,
            "bus": _bits(buses),
            "loads": data.ArrayLayout(loader, buses),
        }
    )
    init, reg, cur = _state(m, start, layout, "ws")
    m.d.comb += [
        init.active.eq(d.ws),
        init.wait.eq(R - 1),
        init.act_fk.eq(cfg.b_addr),
        init.w_fk.eq(cfg.a_addr),
        init.w_base.eq(cfg.a_addr),
        init.acc_row.eq(cfg.c_addr),
    ]

    window = cur.active & (cur.wait == 0)
    vec = _sig(m, 1, "ws_vec", window & (cur.tau >= d.ws_tau0))
    first = _sig(m, 1, "ws_first", window & (cur.tau == d.ws_tau0))
    act = _sig(m, ADDR_BITS, "ws_act", Mux(first, cur.act_fk, cur.act_vec))
    acc = _sig(m, ADDR_BITS, "ws_acc", Mux(first, cur.acc_row, cur.acc_vec))
    fi_last = _sig(m, 1, "ws_fi_last", cur.i0 + C >= cfg.rows)
    fk_last = _sig(m, 1, "ws_fk_last", cur.q0 + R >= d.kc)
    window_end = _sig(m, 1, "ws_window_end", window & (cur.tau == d.ws_step - 1))

    row = Signal(row_layout(params), name="ws_row0")
    psum = Signal(acc_layout(), name="ws_acc0")
    read = Signal(ws_act_layout(), name="ws_read0")
    m.d.comb += [
        read.op.eq(vec),
        read.addr.eq(act),
        read.phase.eq(cur.phase0),
        read.q.eq(cur.q0),
        row.op.eq(vec),
        row.mac.eq(vec),
        row.first.eq(first),
        row.q.eq(cur.q0),
        psum.valid.eq(vec),
        psum.rd.eq((cur.q0 != 0) | cfg.accumulate),
        psum.addr.eq(acc),
        psum.i.eq(cur.i0),
        psum.last.eq(window_end & fi_last & fk_last),
    ]
    # The loader of the current fold's bus starts with its first vector.
    for b in range(buses):
        mine = first & (cur.bus == b)
        load = Signal(loader, name=f"ws_load{b}")
        m.d.comb += [
            load.valid.eq(mine | cur.loads[b].valid),
            load.col.eq(Mux(mine, 0, cur.loads[b].col)),
            load.q.eq(Mux(mine, cur.q0, cur.loads[b].q)),
            load.addr.eq(Mux(mine, cur.w_base, cur.loads[b].addr)),
            load.i.eq(Mux(mine, cur.i0, cur.loads[b].i)),
            row.loads[b].eq(load),
        ]
        with m.If(load.valid):
            m.d.sync += [
                reg.loads[b].valid.eq(load.col != C - 1),
                reg.loads[b].col.eq(load.col + 1),
                reg.loads[b].q.eq(load.q),
                reg.loads[b].addr.eq(load.addr + d.lda),
                reg.loads[b].i.eq(load.i + 1),
            ]

    # -- next state ------------------------------------------------------------------------
    with m.If(cur.active & (cur.wait != 0)):
        m.d.sync += reg.wait.eq(cur.wait - 1)
    with m.If(vec):
        m.d.sync += [reg.act_vec.eq(act + d.jstride), reg.acc_vec.eq(acc + 1)]
    with m.If(window):
        m.d.sync += reg.tau.eq(cur.tau + 1)
    with m.If(window_end):
        m.d.sync += [reg.tau.eq(0), reg.bus.eq(Mux(cur.bus == buses - 1, 0, cur.bus + 1))]
        with m.If(fi_last & fk_last):
            m.d.sync += reg.active.eq(0)
        with m.Elif(fi_last):
            wrap = cur.phase0 + d.ws_grem >= d.n_eff
            m.d.sync += [
                reg.i0.eq(0),
                reg.acc_row.eq(cfg.c_addr),
                reg.q0.eq(cur.q0 + R),
                reg.w_fk.eq(cur.w_fk + R),
                reg.w_base.eq(cur.w_fk + R),
                reg.phase0.eq(Mux(wrap, cur.phase0 + d.ws_grem - d.n_eff, cur.phase0 + d.ws_grem)),
                reg.act_fk.eq(cur.act_fk + d.ws_fk_adv + Mux(wrap, d.grp_step, 0)),
            ]
        with m.Else():
            m.d.sync += [
                reg.i0.eq(cur.i0 + C),
                reg.w_base.eq(cur.w_base + d.ws_c_lda),
                reg.acc_row.eq(cur.acc_row + d.ws_c_ldc),
            ]
    return row, psum, read


def os_master(m: Module, start: Value, d: Decoded, params: SATParams) -> tuple[Any, Any, Any]:
    """Build the output-stationary sequencer; return its (row 0, column 0 shadow chain,
    activation read) records.

    Folds (``fi`` outer, ``fj`` inner) are windows of ``os_fold`` cycles; fold 0 starts in
    the cycle of ``start`` (``start + R * I`` with ``accumulate``). In a window, step q's
    operations on the I accumulators take cycles ``q * max(I, L) + a``. A pseudo fold after
    the last (the drain) only swaps the accumulators out. From cycle ``R + I`` of every
    window (and from ``start + 1`` with ``accumulate``) the shadow chains shift ``R * I``
    times: the previous fold's results go out, the next fold's initial sums come in, in
    chain order (row R-1, accumulator I-1 first).
    """
    R, C = params.array_rows, params.array_cols
    log2C = _log2(C)
    cfg = d.cfg
    layout = data.StructLayout(
        {
            "active": 1,
            "wait": 13,
            "drain": 1,
            "tau": 22,
            "a_cyc": 5,
            "q": COUNT_BITS,
            "nph": 5,
            "goff": ADDR_BITS,
            "aoff": ADDR_BITS,
            "i0": COUNT_BITS,
            "j0": COUNT_BITS,
            "a_base": ADDR_BITS,
            "b_base": ADDR_BITS,
            "acc_row": ADDR_BITS,
            "pv": 1,
            "p_i0": COUNT_BITS,
            "p_j0": COUNT_BITS,
            "p_acc_row": ADDR_BITS,
            "pre": 1,
        }
    )
    init, reg, cur = _state(m, start, layout, "os")
    m.d.comb += [
        init.active.eq(~d.ws),
        init.wait.eq(Mux(cfg.accumulate, d.os_ri, 0)),
        init.a_base.eq(cfg.a_addr),
        init.b_base.eq(cfg.b_addr),
        init.acc_row.eq(cfg.c_addr),
    ]
    ilv = d.os_ilv

    window = _sig(m, 1, "os_window", cur.active & (cur.wait == 0))
    kc = Mux(cur.drain, 1, d.kc)
    op = _sig(m, 1, "os_op", window & (cur.a_cyc < ilv) & (cur.q < kc))
    window_end = _sig(
        m,
        1,
        "os_window_end",
        window & Mux(cur.drain, cur.tau == R + ilv, cur.tau == d.os_fold - 1),
    )
    # The fold after the current one (fj inner, fi outer).
    nj0 = cur.j0 + d.os_ci
    wrap = _sig(m, 1, "os_next_wrap", nj0 >= cfg.cols)
    n_i0 = _sig(m, COUNT_BITS, "os_next_i0", Mux(wrap, cur.i0 + R, cur.i0))
    n_j0 = _sig(m, COUNT_BITS, "os_next_j0", Mux(wrap, 0, nj0))
    n_acc_row = _sig(
        m, ADDR_BITS, "os_next_acc_row", Mux(wrap, cur.acc_row + d.os_r_ldc, cur.acc_row)
    )
    is_last = _sig(m, 1, "os_is_last", wrap & (cur.i0 + R >= cfg.rows))

    row = Signal(row_layout(params), name="os_row0")
    col = Signal(col_layout(), name="os_col0")
    read = Signal(os_act_layout(), name="os_read0")
    m.d.comb += [
        row.op.eq(op),
        row.mac.eq(~cur.drain),
        row.first.eq((cur.a_cyc == 0) & ~cur.drain),
        row.acc_sel.eq(cur.a_cyc),
        row.swap.eq(cur.q == 0),
        row.zero.eq((cur.q == 0) & ~cfg.accumulate & ~cur.drain),
        row.loads[0].addr.eq(cur.a_base + cur.q),
        row.loads[0].i.eq(cur.i0),
        read.op.eq(op & ~cur.drain),
        read.addr.eq(cur.b_base + cur.goff + cur.aoff),
        read.j.eq(cur.j0 + (cur.a_cyc << log2C)),
    ]

    # -- the shadow-chain sequencer ----------------------------------------------------------
    chain = data.StructLayout(
        {
            "ch": 1,
            "r": _bits(R),
            "a": 5,
            "last": 1,
            "rd": 1,
            "rd_row": ADDR_BITS,
            "rd_i": COUNT_BITS,
            "rd_j0": COUNT_BITS,
            "wr": 1,
            "wr_row": ADDR_BITS,
            "wr_i": COUNT_BITS,
            "wr_j0": COUNT_BITS,
        }
    )
    trig_fold = window & (cur.tau == R + ilv)
    trigger = _sig(m, 1, "os_chain_trigger", cur.pre | trig_fold)
    ch_init, ch_reg, ch = _state(m, trigger, chain, "os_chain")
    # The preload reads fold 0 (the current fold, not yet started); a fold's chain reads the
    # next fold and writes the previous one; the drain's chain only writes.
    rd_row = Mux(cur.pre, cur.acc_row + cur.j0, n_acc_row + n_j0)
    m.d.comb += [
        ch_init.ch.eq(1),
        ch_init.r.eq(R - 1),
        ch_init.a.eq(ilv - 1),
        ch_init.last.eq(~cur.pre & cur.drain),
        ch_init.rd.eq(cur.pre | (cfg.accumulate & ~is_last & ~cur.drain)),
        ch_init.rd_row.eq(rd_row + d.os_rm1_ldc),
        ch_init.rd_i.eq(Mux(cur.pre, cur.i0, n_i0) + (R - 1)),
        ch_init.rd_j0.eq(Mux(cur.pre, cur.j0, n_j0)),
        ch_init.wr.eq(~cur.pre & cur.pv),
        ch_init.wr_row.eq(cur.p_acc_row + cur.p_j0 + d.os_rm1_ldc),
        ch_init.wr_i.eq(cur.p_i0 + (R - 1)),
        ch_init.wr_j0.eq(cur.p_j0),
    ]
    a_off = ch.a << log2C
    m.d.comb += [
        col.ch.eq(ch.ch),
        col.rd.eq(ch.ch & ch.rd),
        col.rd_addr.eq(ch.rd_row + a_off),
        col.rd_i.eq(ch.rd_i),
        col.rd_j.eq(ch.rd_j0 + a_off),
        col.wr.eq(ch.ch & ch.wr),
        col.wr_addr.eq(ch.wr_row + a_off),
        col.wr_i.eq(ch.wr_i),
        col.wr_j.eq(ch.wr_j0 + a_off),
        col.last.eq(ch.ch & ch.last & (ch.r == 0) & (ch.a == 0)),
    ]
    with m.If(ch.ch):
        with m.If(ch.a != 0):
            m.d.sync += ch_reg.a.eq(ch.a - 1)
        with m.Elif(ch.r != 0):
            m.d.sync += [
                ch_reg.a.eq(ilv - 1),
                ch_reg.r.eq(ch.r - 1),
                ch_reg.rd_row.eq(ch.rd_row - d.ldc),
                ch_reg.rd_i.eq(ch.rd_i - 1),
                ch_reg.wr_row.eq(ch.wr_row - d.ldc),
                ch_reg.wr_i.eq(ch.wr_i - 1),
            ]
        with m.Else():
            m.d.sync += ch_reg.ch.eq(0)

    # -- next state ------------------------------------------------------------------------
    m.d.sync += reg.pre.eq(start & cfg.accumulate & ~d.ws)
    with m.If(cur.active & (cur.wait != 0)):
        m.d.sync += reg.wait.eq(cur.wait - 1)
    with m.If(window):
        m.d.sync += reg.tau.eq(cur.tau + 1)
        with m.If(cur.a_cyc == d.os_period - 1):
            group_end = cur.nph == d.n_eff - 1
            m.d.sync += [
                reg.a_cyc.eq(0),
                reg.aoff.eq(0),
                reg.q.eq(cur.q + 1),
                reg.nph.eq(Mux(group_end, 0, cur.nph + 1)),
                reg.goff.eq(cur.goff + Mux(group_end, d.grp_step, 0)),
            ]
        with m.Else():
            m.d.sync += [reg.a_cyc.eq(cur.a_cyc + 1), reg.aoff.eq(cur.aoff + d.os_a_bstep)]
    with m.If(window_end):
        m.d.sync += [
            reg.tau.eq(0),
            reg.a_cyc.eq(0),
            reg.q.eq(0),
            reg.nph.eq(0),
            reg.goff.eq(0),
            reg.aoff.eq(0),
        ]
        with m.If(cur.drain):
            m.d.sync += reg.active.eq(0)
        with m.Else():
            m.d.sync += [
                reg.pv.eq(1),
                reg.p_i0.eq(cur.i0),
                reg.p_j0.eq(cur.j0),
                reg.p_acc_row.eq(cur.acc_row),
            ]
            with m.If(is_last):
                m.d.sync += reg.drain.eq(1)
            with m.Else():
                m.d.sync += [
                    reg.i0.eq(n_i0),
                    reg.j0.eq(n_j0),
                    reg.acc_row.eq(n_acc_row),
                    reg.a_base.eq(Mux(wrap, cur.a_base + d.os_r_lda, cur.a_base)),
                    reg.b_base.eq(Mux(wrap, cfg.b_addr, cur.b_base + d.os_fj_bstep)),
                ]
    return row, col, read
