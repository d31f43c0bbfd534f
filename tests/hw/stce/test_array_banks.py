# amaranth: UnusedElaboratable=no
# Ref: hw/stce/array.py (STCE docstring, "Buffer ports": every edge reads its group of one
#      vector, and every row its weight of one column, in the same cycle); docs/isa.md,
#      section GEMM (the operands' layouts and row pitches).
"""The STCE's activation and weight reads can be served by banked ACT and WGT/IDX buffers: in
every cycle of a GEMM program the *distinct* addresses that the enabled ``act_read`` (or
``wgt_read``) ports read fall in distinct banks (element ``e`` in bank ``e % banks``), while
results and cycles still match the model (the harness in conftest.py records the reads and
checks the rest).

- Weight-stationary: all rows read the groups of one vector of B in the same cycle, so with
  B transposed (``b_trans``: a vector's k are consecutive) or at an odd row pitch
  (``b_pad``: consecutive k an odd distance apart) the R groups, ``R * m_max`` elements at
  most, fall in distinct banks modulo ``R * m_max``. Several lanes may read one address
  (rows sharing an N:M group).
- Output-stationary, dense: all columns read in the same cycle, C consecutive j of one k,
  a row of B (``b_trans = 0``) or a column at an odd pitch (``b_trans = 1``, ``b_pad``):
  distinct banks modulo C.
- Negative control: weight-stationary with B packed row-major and ``cols`` a multiple of
  the bank count puts the rows' distinct k of one vector in one bank, so the check fails.

Weights (A, ``wgt_read``, and its indices, ``idx_read``: the same addresses, N:M only):

- Weight-stationary, every pattern: on each weight bus all rows that read in a cycle read
  the weights of one output row of the fold, ``A[i, q0 + r]`` for row ``r``: R consecutive
  elements, distinct banks modulo R whatever A's pitch.
- Output-stationary, A at an odd pitch (``a_pad``): all rows read ``A[i0 + r, q]`` of one
  reduction step in the same cycle, an odd pitch apart: distinct banks modulo R.
- Negative control: output-stationary with A packed and Kc a multiple of R puts all rows'
  reads in one bank.

Accumulators (``acc_read`` and ``acc_write``, one port per column; C banks):

- Weight-stationary, every pattern, C at an odd pitch (``c_pad``): in one cycle all
  columns read the partial sums ``C[i0 + c, j]`` of one vector, and in one cycle write one
  vector's sums, ``ldc`` apart: distinct banks modulo C, reads and writes alike.
- Output-stationary, dense: the shadow chains read and write C consecutive elements of one
  output row per cycle: distinct banks modulo C.
- Negative control: weight-stationary with C packed and ``cols`` a multiple of C puts the
  columns' sums of one vector in one bank.
- Reading a vector in column 0's cycle and writing it in column C-1's leaves the later
  reduction fold one cycle less slack: with the partial-sum dependency binding the fold,
  each sum's reads and writes still alternate (a read strictly after the write before it).
"""

from __future__ import annotations

import numpy as np
import pytest

from nmsat.hw import isa
from nmsat.hw.isa import Dataflow, Opcode
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.stce._control import weight_buses

TINY = load_params("tiny")

PARAMS = {
    "tiny": TINY,
    # n not dividing R: the rows' groups start at every phase within a group.
    "odd-nm": TINY.replace(nm_patterns=((3, 4), (1, 2), (3, 8)), adder_latency=2),
}


def _clashes(reads: list[list[tuple[int, int]]], banks: int) -> list[tuple[int, list[int]]]:
    """The cycles in which two distinct addresses fall in one bank, with those addresses."""
    found = []
    for cycle, ports in enumerate(reads):
        by_bank: dict[int, set[int]] = {}
        for _port, addr in ports:
            by_bank.setdefault(addr % banks, set()).add(addr)
        clash = sorted(a for same in by_bank.values() if len(same) > 1 for a in same)
        if clash:
            found.append((cycle, clash))
    return found


def _edges_per_cycle(reads: list[list[tuple[int, int]]], params: SATParams) -> int:
    """The most array edges that read in one cycle (the check is vacuous below 2)."""
    return max((len({port // params.m_max for port, _ in ports}) for ports in reads), default=0)


@pytest.mark.sim
@pytest.mark.parametrize("name", list(PARAMS))
def test_ws_reads_fall_in_distinct_banks(stce, name: str) -> None:
    """WS, every pattern (dense m = 1..16 and the N:M), B transposed (either pitch) or
    row-major at an odd pitch: distinct banks modulo ``R * m_max`` in every cycle."""
    params = PARAMS[name]
    rng = np.random.default_rng(list(map(ord, name)))
    program = []
    for nm in stce.patterns(params):
        for b_trans in (1, 0):
            pads = (
                int(rng.integers(2)),
                int(rng.integers(2)) | (1 - b_trans),
                int(rng.integers(2)),
            )
            program.append(stce.gemm(params, rng, Dataflow.WS, nm, pads=pads, b_trans=b_trans))
    reads: list[list[tuple[int, int]]] = []
    stce.run(params, [(stce.memory(params, 3), program)], act_reads=reads)
    assert _edges_per_cycle(reads, params) == params.array_rows
    banks = params.array_rows * params.m_max
    clashes = _clashes(reads, banks)
    assert not clashes, f"{len(clashes)} cycles, first {clashes[:3]}, banks {banks}"


@pytest.mark.sim
def test_os_reads_fall_in_distinct_banks(stce) -> None:
    """OS, dense m = 1..16, B row-major (either pitch) or transposed at an odd pitch:
    distinct banks modulo C in every cycle."""
    rng = np.random.default_rng(5)
    program = []
    for m in (1, 2, 4, 8, 16):
        for b_trans in (0, 1):
            pads = (int(rng.integers(2)), int(rng.integers(2)) | b_trans, int(rng.integers(2)))
            program.append(stce.gemm(TINY, rng, Dataflow.OS, (m, m), pads=pads, b_trans=b_trans))
    reads: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 5), program)], act_reads=reads)
    assert _edges_per_cycle(reads, TINY) == TINY.array_cols
    clashes = _clashes(reads, TINY.array_cols)
    assert not clashes, f"{len(clashes)} cycles, first {clashes[:3]}, banks {TINY.array_cols}"


@pytest.mark.sim
def test_packed_row_major_b_clashes(stce) -> None:
    """Negative control: WS, B row-major and packed with ``cols = 32``, dense: the rows'
    k of one vector are 32 elements apart, one bank of 32."""
    banks = TINY.array_rows * TINY.m_max
    instr = isa.make(
        Opcode.GEMM,
        n=1,
        m=1,
        dataflow=Dataflow.WS,
        accumulate=0,
        b_trans=0,
        interleave=1,
        rows=3,
        cols=banks,
        depth=2 * TINY.array_rows,
        a_addr=5,
        b_addr=9,
        c_addr=0,
        a_pad=0,
        b_pad=0,
        c_pad=0,
    )
    reads: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 9), [instr])], act_reads=reads)
    assert _clashes(reads, banks)


# -- weights ------------------------------------------------------------------------------

WGT_PARAMS = {
    "tiny": TINY,
    # C > R: two weight buses per row, each checked on its own.
    "R4-C8": TINY.replace(array_cols=8, adder_latency=2),
}


def _per_bus(
    reads: list[list[tuple[int, int]]], buses: int, bus: int
) -> list[list[tuple[int, int]]]:
    """Each cycle's reads of weight bus ``bus``, as (row, address) pairs."""
    return [[(p // buses, a) for p, a in ports if p % buses == bus] for ports in reads]


def _check_indices(wgt: list[list[tuple[int, int]]], idx: list[list[tuple[int, int]]]) -> None:
    """Every cycle's IDX reads are its WGT reads (N:M) or none (dense), and some occur."""
    assert len(idx) == len(wgt)
    wrong = [t for t, (w, i) in enumerate(zip(wgt, idx, strict=True)) if i and i != w]
    assert not wrong, f"IDX reads differ from WGT reads in cycles {wrong[:5]}"
    assert any(idx)


@pytest.mark.sim
@pytest.mark.parametrize("name", list(WGT_PARAMS))
def test_ws_weight_reads_are_one_column(stce, name: str) -> None:
    """WS, every pattern, A packed or padded: per weight bus, all rows that read in a cycle
    read one output row of the fold (``address - r`` is the same), so distinct banks modulo
    R; some cycle has all R rows reading."""
    params = WGT_PARAMS[name]
    R, buses = params.array_rows, weight_buses(params)
    rng = np.random.default_rng(list(map(ord, name)))
    program = [stce.gemm(params, rng, Dataflow.WS, nm) for nm in stce.patterns(params)]
    wgt: list[list[tuple[int, int]]] = []
    idx: list[list[tuple[int, int]]] = []
    stce.run(params, [(stce.memory(params, 11), program)], wgt_reads=wgt, idx_reads=idx)
    _check_indices(wgt, idx)
    for bus in range(buses):
        reads = _per_bus(wgt, buses, bus)
        mixed = [(t, rows) for t, rows in enumerate(reads) if len({a - r for r, a in rows}) > 1]
        assert not mixed, f"bus {bus}: rows read different columns, first {mixed[:3]}"
        assert max(len(rows) for rows in reads) == R, f"bus {bus}: never all rows in a cycle"
        clashes = _clashes(reads, R)
        assert not clashes, f"bus {bus}: {len(clashes)} cycles, first {clashes[:3]}, banks {R}"


@pytest.mark.sim
def test_os_weight_reads_fall_in_distinct_banks(stce) -> None:
    """OS, every pattern, A at an odd pitch (``a_pad``): all rows read in one cycle (some
    cycle has all R), distinct banks modulo R."""
    R, buses = TINY.array_rows, weight_buses(TINY)
    rng = np.random.default_rng(13)
    program = []
    for nm in stce.patterns(TINY):
        pads = (1, int(rng.integers(2)), int(rng.integers(2)))
        program.append(stce.gemm(TINY, rng, Dataflow.OS, nm, pads=pads))
    wgt: list[list[tuple[int, int]]] = []
    idx: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 13), program)], wgt_reads=wgt, idx_reads=idx)
    _check_indices(wgt, idx)
    reads = _per_bus(wgt, buses, 0)
    assert max(len(rows) for rows in reads) == R
    clashes = _clashes(reads, R)
    assert not clashes, f"{len(clashes)} cycles, first {clashes[:3]}, banks {R}"


@pytest.mark.sim
def test_os_packed_a_clashes(stce) -> None:
    """Negative control: OS, A packed with Kc = 2R, dense: the rows' reads of one step are
    2R elements apart, one bank of R."""
    R = TINY.array_rows
    instr = isa.make(
        Opcode.GEMM,
        n=1,
        m=1,
        dataflow=Dataflow.OS,
        accumulate=0,
        b_trans=0,
        interleave=1,
        rows=R,
        cols=5,
        depth=2 * R,
        a_addr=7,
        b_addr=3,
        c_addr=0,
        a_pad=0,
        b_pad=0,
        c_pad=0,
    )
    wgt: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 17), [instr])], wgt_reads=wgt)
    assert _clashes(wgt, R)


# -- accumulators -------------------------------------------------------------------------


def _columns_per_cycle(ports: list[list[tuple[int, int]]]) -> int:
    """The most ACC ports (one per column) enabled in one cycle."""
    return max((len(cycle) for cycle in ports), default=0)


def _check_acc_banks(reads: list[list[tuple[int, int]]], writes: list[list[tuple[int, int]]],
                     banks: int) -> None:  # fmt: skip
    """Every cycle's distinct ACC read addresses, and likewise its write addresses, fall in
    distinct banks modulo ``banks``; some cycle has all columns reading, and some writing."""
    for kind, ports in (("reads", reads), ("writes", writes)):
        assert _columns_per_cycle(ports) == banks, f"ACC {kind}: never all columns in a cycle"
        clashes = _clashes(ports, banks)
        assert not clashes, f"ACC {kind}: {len(clashes)} cycles, first {clashes[:3]}, banks {banks}"


@pytest.mark.sim
@pytest.mark.parametrize("name", list(PARAMS))
def test_ws_acc_ports_fall_in_distinct_banks(stce, name: str) -> None:
    """WS, every pattern (dense m = 1..16 and the N:M), C at an odd pitch (``c_pad``),
    accumulating (so every GEMM reads): all columns read the partial sums ``C[i0 + c, j]``
    of one vector in one cycle, and write one vector's in one cycle, an odd pitch apart:
    distinct banks modulo C, for the reads and for the writes. (B at an odd pitch too, so
    that its reads are conflict-free as well.)"""
    params = PARAMS[name]
    rng = np.random.default_rng([*map(ord, name), 1])
    program = []
    for nm in stce.patterns(params):
        pads = (int(rng.integers(2)), 1, 1)
        program.append(stce.gemm(params, rng, Dataflow.WS, nm, pads=pads, accumulate=1))
    reads: list[list[tuple[int, int]]] = []
    writes: list[list[tuple[int, int]]] = []
    stce.run(params, [(stce.memory(params, 19), program)], acc_reads=reads, acc_writes=writes)
    _check_acc_banks(reads, writes, params.array_cols)


@pytest.mark.sim
def test_os_acc_ports_fall_in_distinct_banks(stce) -> None:
    """OS, dense m = 1..16, accumulating, C packed or padded: per cycle the shadow chains of
    all columns read (and write) one output row's C consecutive elements: distinct banks
    modulo C. (A and B at odd pitches, so that their reads are conflict-free as well.)"""
    rng = np.random.default_rng(23)
    program = [
        stce.gemm(TINY, rng, Dataflow.OS, (m, m), accumulate=1, pads=(1, 1, c_pad))
        for m in (1, 2, 4, 8, 16)
        for c_pad in (0, 1)
    ]
    reads: list[list[tuple[int, int]]] = []
    writes: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 23), program)], acc_reads=reads, acc_writes=writes)
    _check_acc_banks(reads, writes, TINY.array_cols)


@pytest.mark.sim
def test_ws_packed_c_clashes(stce) -> None:
    """Negative control: WS, C packed with ``cols = 2C``, accumulating: the columns' partial
    sums of one vector are ``2C`` elements apart, one bank of C, for reads and writes."""
    C = TINY.array_cols
    instr = isa.make(
        Opcode.GEMM,
        n=1,
        m=1,
        dataflow=Dataflow.WS,
        accumulate=1,
        b_trans=0,
        interleave=1,
        rows=C,
        cols=2 * C,
        depth=2 * TINY.array_rows,
        a_addr=5,
        b_addr=9,
        c_addr=3,
        a_pad=0,
        b_pad=0,
        c_pad=0,
    )
    reads: list[list[tuple[int, int]]] = []
    writes: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 29), [instr])], acc_reads=reads, acc_writes=writes)
    assert _clashes(reads, C)
    assert _clashes(writes, C)


def _order_errors(
    reads: list[list[tuple[int, int]]], writes: list[list[tuple[int, int]]], want: str
) -> list[tuple[int, str]]:
    """Addresses whose ACC reads (R) and writes (W), in cycle order, are not ``want``; a read
    in a write's cycle sees the old value, so it counts as before the write. Returns
    (address, events) for the first few."""
    events: dict[int, list[tuple[int, int, str]]] = {}
    for kind, rank, ports in (("R", 0, reads), ("W", 1, writes)):
        for cycle, here in enumerate(ports):
            for addr in {a for _p, a in here}:
                events.setdefault(addr, []).append((cycle, rank, kind))
    seqs = {addr: "".join(kind for *_key, kind in sorted(evs)) for addr, evs in events.items()}
    return [(addr, seq) for addr, seq in sorted(seqs.items()) if seq != want][:5]


@pytest.mark.sim
@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("accumulate", [0, 1])
def test_ws_later_fold_reads_after_write(stce, blocks: int, accumulate: int) -> None:
    """WS with the partial-sum dependency binding the fold (``cols = 1``, ``Fi = interleave``,
    ``Fk = 3``): each partial sum is read back by the next reduction fold strictly after the
    cycle it was written in (reads and writes of each address alternate), and values and
    cycles match the model."""
    R, C = TINY.array_rows, TINY.array_cols
    instr = isa.make(
        Opcode.GEMM,
        n=1,
        m=1,
        dataflow=Dataflow.WS,
        accumulate=accumulate,
        b_trans=0,
        interleave=blocks,
        rows=blocks * C,
        cols=1,
        depth=3 * R,
        a_addr=0,
        b_addr=0,
        c_addr=7,
        a_pad=0,
        b_pad=0,
        c_pad=1,
    )
    reads: list[list[tuple[int, int]]] = []
    writes: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 31), [instr])], acc_reads=reads, acc_writes=writes)
    # Three reduction folds per element: read (with accumulate) and write, three times.
    want = "RW" * 3 if accumulate else "WRWRW"
    assert sum(map(len, writes)) == 3 * blocks * C
    bad = _order_errors(reads, writes, want)
    assert not bad, f"reads and writes out of order (R read, W write): {bad}"
