# amaranth: UnusedElaboratable=no
"""PruneUnit against the Python model (sim.model.prune, exact mode), bit for bit and cycle by
cycle: random FF and BP PRUNE instructions on tiny.yaml, back to back in one simulation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from nmsat.hw import isa
from nmsat.hw.isa import Buffer, Direction, Opcode
from nmsat.hw.isa_timing import sore_pipeline_cycles
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.sore import PruneUnit, prune_bp_cycles, prune_groups_per_cycle
from nmsat.sim.model import Memory, prune

# Magnitudes that make ties and special cases likely within a group (as in test_sore.py):
# zeros, FP32 subnormals (ranked by their bits, flushed on output), 1.0 and its neighbour,
# FP16 rounding edges and ties, the largest finite FP32, infinity and NaNs.
_SPECIAL = (
    0x00000000, 0x00000001, 0x007FFFFF, 0x3F800000, 0x3F800001, 0x387FE000, 0x477FF000,
    0x3F801000, 0x3F803000, 0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF,
)  # fmt: skip


def _words(rng: np.random.Generator, count: int) -> NDArray[np.uint32]:
    """FP32 patterns: random bits, specials, few distinct magnitudes (ties), normals."""
    kind = rng.integers(0, 4, count)
    raw = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    special = rng.choice(np.asarray(_SPECIAL, dtype=np.uint32), count)
    pool = rng.standard_normal(3).astype(np.float32).view(np.uint32)
    tied = rng.choice(pool, count)
    normal = rng.standard_normal(count).astype(np.float32).view(np.uint32)
    words = np.select([kind == 0, kind == 1, kind == 2], [raw, special, tied], normal)
    signs = rng.integers(0, 2, count, dtype=np.uint64).astype(np.uint32) << np.uint32(31)
    return (words & np.uint32(0x7FFF_FFFF)) | signs


def _run(
    bench_tools: Any,
    params: SATParams,
    make: Callable[[int], isa.Instruction],
    count: int,
    mem_rtl: Memory,
    mem_ref: Memory,
    gaps: list[int],
) -> list[tuple[isa.Instruction, Any]]:
    """Run ``count`` PRUNEs on the unit and on the model; compare buffers after each.

    ``bench_tools`` is the ``unit_bench`` fixture (tests/hw/conftest.py). ``make(i)`` builds
    instruction ``i`` right before it starts; ``gaps[i]`` idle cycles come before it (0: it
    starts in the cycle of the previous ``done``).
    """
    dut = PruneUnit(params)
    writes = [(dut.wgt_write, Buffer.WGT), (dut.idx_write, Buffer.IDX)]
    bus = bench_tools.Buffers(mem_rtl, [(dut.vec_read, Buffer.VEC)], writes)

    def issue(ctx: Any, instr: isa.Instruction) -> None:
        ctx.set(dut.prune.as_value(), bench_tools.payload(instr))

    def idle(ctx: Any, cycle: int) -> None:
        ctx.set(dut.prune.as_value(), cycle * 0x9E3779B97F4A7C15 % (1 << 91))

    def model(instr: isa.Instruction) -> None:
        prune(instr, params, mem_ref, "exact")

    instrs, outcomes = bench_tools.run(dut, bus, count, gaps, make, issue, idle, model, mem_ref)
    for instr, outcome in zip(instrs, outcomes, strict=True):
        f = instr.fields
        expected = dut.cycles(f["direction"], f["rows"], f["cols"], f["m"])
        assert outcome.done - outcome.start == expected, (instr, outcome, expected)
        assert outcome.last_write == outcome.done - 1, (instr, outcome)
    return list(zip(instrs, outcomes, strict=True))


# -- random instructions -------------------------------------------------------------------


def _random_prune(
    rng: np.random.Generator, params: SATParams, mems: tuple[Memory, Memory], max_side: int
) -> isa.Instruction:
    """A random PRUNE (any supported pattern or dense, FF or BP) with fresh source data."""
    patterns = [*params.nm_patterns, *((m, m) for m in (1, 2, 4, 8) if m <= params.m_max)]
    n, m = patterns[int(rng.integers(0, len(patterns)))]
    direction = Direction(int(rng.integers(0, 2)))
    grouped = m * int(rng.integers(1, max(1, max_side // m) + 1))
    other = int(rng.integers(1, max_side + 1))
    rows, cols = (other, grouped) if direction is Direction.FF else (grouped, other)
    size = rows * cols
    kept = size * n // m
    src = int(rng.integers(0, params.vec_buffer_entries - size + 1))
    dst = int(rng.integers(0, params.wgt_buffer_entries - kept + 1))
    words = _words(rng, size)
    for mem in mems:
        mem.buffers[Buffer.VEC][src : src + size] = words
    instr = isa.make(
        Opcode.PRUNE, direction=direction, n=n, m=m, rows=rows, cols=cols, src_addr=src,
        dst_addr=dst,
    )  # fmt: skip
    isa.check_for_params(instr, params)
    return instr


def _memories(params: SATParams, seed: int) -> tuple[Memory, Memory]:
    rng = np.random.default_rng(seed)
    mem_rtl, mem_ref = Memory(params, 4096), Memory(params, 4096)
    mem_rtl.buffers[Buffer.WGT][:] = rng.integers(0, 2**16, params.wgt_buffer_entries)
    indices = rng.integers(0, 2**params.index_bits, params.wgt_buffer_entries)
    mem_rtl.buffers[Buffer.IDX][:] = indices
    for buffer in Buffer:
        mem_ref.buffers[buffer][:] = mem_rtl.buffers[buffer]
    return mem_rtl, mem_ref


def _simulate(
    bench_tools: Any, params: SATParams, count: int, max_side: int, seed: int
) -> list[Any]:
    mems = _memories(params, seed)
    rng = np.random.default_rng(seed + 1)
    gaps = [0 if rng.random() < 0.8 else int(rng.integers(1, 3)) for _ in range(count)]

    def make(_: int) -> isa.Instruction:
        return _random_prune(rng, params, mems, max_side)

    return _run(bench_tools, params, make, count, *mems, gaps)


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.sim
def test_tiny_matches_model(unit_bench: Any) -> None:
    """FF and BP, every pattern of tiny and dense, many shapes (partial tiles), specials."""
    params = load_params("tiny")
    runs = _simulate(unit_bench, params, count=150, max_side=20, seed=1)
    ff = [instr for instr, _ in runs if instr["direction"] is Direction.FF]
    assert len(ff) > 40 and len(runs) - len(ff) > 40
    # FF meets the ISA formula exactly (the BP gap is test_bp_meets_isa_formula).
    for instr, outcome in runs:
        if instr["direction"] is Direction.FF:
            assert outcome.done - outcome.start == isa.cycles(instr, params)


@pytest.mark.sim
@pytest.mark.parametrize(
    "changes",
    [
        {"sore_lanes": 1, "buffer_banks": 1},
        {"sore_lanes": 4, "buffer_banks": 16, "nm_patterns": ((1, 16), (4, 16), (2, 4))},
        {"nm_patterns": ()},
        {"nm_patterns": ((3, 4), (5, 8), (7, 8), (3, 8))},
    ],
    ids=["one-lane", "m16-wide", "dense-only", "odd-n"],
)
def test_other_configurations(changes: dict[str, Any], unit_bench: Any) -> None:
    """One lane and one bank; 16-wide groups over 4 lanes; a dense-only SORE (m = 1); odd n."""
    params = load_params("tiny").replace(**changes)
    _simulate(unit_bench, params, count=40, max_side=18, seed=len(changes))


@given(
    rows_groups=st.integers(1, 40),
    cols=st.integers(1, 80),
    m=st.sampled_from([1, 2, 4, 8]),
    sore_lanes=st.sampled_from([1, 2, 4, 32]),
    banks=st.sampled_from([1, 4, 32]),
)
def test_bp_formula_is_the_phase_sum(
    rows_groups: int, cols: int, m: int, sore_lanes: int, banks: int
) -> None:
    """prune_bp_cycles equals the sum of the corner turn's phases, tile by tile."""
    params = load_params("tiny").replace(sore_lanes=sore_lanes, buffer_banks=banks)
    rows = rows_groups * m
    width = prune_groups_per_cycle(m, params) * m
    tiles = [
        (min(width, rows - r0), min(width, cols - c0))
        for r0 in range(0, rows, width)
        for c0 in range(0, cols, width)
    ]
    phases = [tiles[0][0]]
    phases += [max(r, tiles[p - 1][1]) for p, (r, _) in enumerate(tiles) if p]
    phases.append(tiles[-1][1])
    assert prune_bp_cycles(rows, cols, m, params) == sum(phases) + sore_pipeline_cycles(m)
    # Whole tiles cost W cycles each; the drain adds one more W.
    if rows % width == 0 and cols % width == 0:
        groups = rows * cols // m
        G = prune_groups_per_cycle(m, params)
        assert sum(phases) == groups // G + width


def test_bp_meets_isa_formula() -> None:
    """The contract's BP formula is the corner-turn timing of the unit."""
    params = load_params("tiny")
    instr = isa.make(Opcode.PRUNE, direction=Direction.BP, n=2, m=4, rows=8, cols=8)
    assert prune_bp_cycles(8, 8, 4, params) == isa.cycles(instr, params)


def test_port_widths() -> None:
    """Ports are max(G * m) wide: tiny needs 8 lanes for a group of 8 on 4 banks."""
    assert PruneUnit(load_params("tiny")).lanes == 8
    assert PruneUnit(load_params("vcu1525")).lanes == 32
    # Two lanes of 8 on 16 banks; one lane of 16 on 4 banks.
    assert PruneUnit(load_params("tiny").replace(buffer_banks=16)).lanes == 16
    wide = load_params("tiny").replace(nm_patterns=((4, 16),), sore_lanes=1)
    assert PruneUnit(wide).lanes == 16


def test_verilog_for_tiny() -> None:
    text = verilog.convert(PruneUnit(load_params("tiny")), name="prune_unit")
    assert "module prune_unit" in text
    for name in (
        "vec_read__addr",
        "wgt_write__en",
        "idx_write__data",
        "input [90:0] prune;",
        "output done;",
    ):
        assert name in text


def test_vcu1525_builds_quickly() -> None:
    params = load_params("vcu1525")
    Fragment.get(PruneUnit(params), None)
