# amaranth: UnusedElaboratable=no
"""WUVE against the Python model (sim.model vec/update, exact mode), bit for bit and cycle by
cycle: random VEC and UPDATE instructions on tiny.yaml, back to back in one simulation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from numpy.typing import NDArray

from nmsat.hw import isa
from nmsat.hw.isa import Buffer, Opcode, VecOp
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.wuve import WUVE
from nmsat.sim.model import Memory, update, vec

# Bit patterns that exercise the special cases: signed zeros, subnormals (flushed), the
# smallest normal, the largest finite value, infinities, NaNs with payloads and signs, and
# values whose FP16 rounding is a tie (even and odd neighbours) or overflows.
_FP32_SPECIAL = (
    0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F7FFFFF,
    0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x3F800000,
    0xBF800000, 0x3F801000, 0x3F803000, 0x387FE000, 0x387FC000, 0x33000000, 0x33800000,
    0x477FF000, 0x477FEFFF, 0xC77FF000, 0x38800000, 0x0C800000, 0x7E800000,
)  # fmt: skip
_FP16_SPECIAL = (
    0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x8400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7C01,
    0x7E00, 0xFFFF, 0x3C00, 0xBC00, 0x3C01, 0x0200,
)  # fmt: skip


def _fp32_words(rng: np.random.Generator, count: int) -> NDArray[np.uint32]:
    """A mix of random bits, specials and short-mantissa values (frequent rounding ties)."""
    kind = rng.integers(0, 4, count)
    raw = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    special = rng.choice(np.asarray(_FP32_SPECIAL, dtype=np.uint32), count)
    scale = np.ldexp(np.float32(1), rng.integers(-30, 30, count)).astype(np.float32)
    short = (rng.integers(-64, 64, count).astype(np.float32) * scale).view(np.uint32)
    normal = rng.standard_normal(count).astype(np.float32).view(np.uint32)
    return np.select([kind == 0, kind == 1, kind == 2], [raw, special, short], normal)


def _fp16_words(rng: np.random.Generator, count: int) -> NDArray[np.uint16]:
    kind = rng.integers(0, 3, count)
    raw = rng.integers(0, 2**16, count).astype(np.uint16)
    special = rng.choice(np.asarray(_FP16_SPECIAL, dtype=np.uint16), count)
    normal = rng.standard_normal(count).astype(np.float16).view(np.uint16)
    return np.select([kind == 0, kind == 1], [raw, special], normal)


def _fill(mem: Memory, rng: np.random.Generator) -> None:
    """Random contents for every buffer the WUVE touches."""
    for buffer in (Buffer.ACT, Buffer.WGT):
        store = mem.buffers[buffer]
        store[:] = _fp16_words(rng, store.size)
    for buffer in (Buffer.ACC, Buffer.VEC):
        store = mem.buffers[buffer]
        store[:] = _fp32_words(rng, store.size)
    idx = mem.buffers[Buffer.IDX]
    idx[:] = rng.integers(0, 256, idx.size).astype(np.uint8) & mem.idx_mask


def _ports(dut: WUVE) -> tuple[list[tuple[Any, Buffer]], list[tuple[Any, Buffer]]]:
    reads = [(dut.idx_read, Buffer.IDX)]
    for name, buffer in (("act", Buffer.ACT), ("wgt", Buffer.WGT), ("acc", Buffer.ACC),
                         ("vec", Buffer.VEC)):  # fmt: skip
        reads += [(port, buffer) for port in getattr(dut, f"{name}_read")]
    writes = [
        (dut.act_write, Buffer.ACT),
        (dut.wgt_write, Buffer.WGT),
        (dut.acc_write, Buffer.ACC),
        *((port, Buffer.VEC) for port in dut.vec_write),
    ]
    return reads, writes


def _run(
    bench_tools: Any,
    params: SATParams,
    make: Callable[[int], isa.Instruction],
    count: int,
    mem_rtl: Memory,
    mem_ref: Memory,
    gaps: list[int],
) -> None:
    """Run ``count`` instructions on the WUVE and on the model; compare buffers after each.

    ``bench_tools`` is the ``unit_bench`` fixture (tests/hw/conftest.py). ``make(i)`` builds
    instruction ``i`` right before it starts (it may also set up operands in both memories);
    ``gaps[i]`` idle cycles come before it (0: it starts in the cycle of the previous
    ``done``).
    """
    dut = WUVE(params)
    reads, writes = _ports(dut)
    bus = bench_tools.Buffers(mem_rtl, reads, writes)

    def issue(ctx: Any, instr: isa.Instruction) -> None:
        ctx.set(dut.opcode, instr.opcode)
        target = dut.update if instr.opcode is Opcode.UPDATE else dut.vec
        ctx.set(target.as_value(), bench_tools.payload(instr))

    def idle(ctx: Any, cycle: int) -> None:
        noise = cycle * 0x9E3779B97F4A7C15
        ctx.set(dut.vec.as_value(), noise % (1 << 140))
        ctx.set(dut.update.as_value(), noise % (1 << 154))
        ctx.set(dut.opcode, Opcode.UPDATE if cycle % 2 else Opcode.VEC)

    def model(instr: isa.Instruction) -> None:
        (update if instr.opcode is Opcode.UPDATE else vec)(instr, params, mem_ref, "exact")

    instrs, outcomes = bench_tools.run(dut, bus, count, gaps, make, issue, idle, model, mem_ref)
    for instr, outcome in zip(instrs, outcomes, strict=True):
        cycles = isa.cycles(instr, params)
        assert outcome.done - outcome.start == cycles, (instr, outcome, cycles)
        # Every write happens inside the instruction and before done.
        assert outcome.first_write is not None and outcome.first_write > outcome.start
        assert outcome.last_write == outcome.done - 1, (instr, outcome)


# -- random instructions -------------------------------------------------------------------

_VEC_BUFFERS = (Buffer.ACT, Buffer.WGT, Buffer.ACC, Buffer.VEC)


def _range(rng: np.random.Generator, size: int, length: int) -> int:
    return int(rng.integers(0, size - length + 1))


def _random_vec(rng: np.random.Generator, params: SATParams, max_length: int) -> isa.Instruction:
    op = VecOp(int(rng.integers(0, 5)))
    length = int(rng.integers(1, max_length + 1))
    bufs = [_VEC_BUFFERS[int(rng.integers(0, 4))] for _ in range(3)]
    size = {b: isa.buffer_entries(b, params) for b in bufs}
    src0 = _range(rng, size[bufs[1]], length)
    src1 = _range(rng, size[bufs[2]], length)
    sources = [(bufs[1], src0), (bufs[2], src1) if op in (VecOp.ADD, VecOp.RELU_GRAD) else None]
    choice = rng.random()
    if choice < 0.2:
        dst_buf, dst = bufs[1], src0  # in place
    elif choice < 0.3:
        dst_buf, dst = bufs[1], max(0, src0 - int(rng.integers(0, length + 1)))  # below src0
    else:
        dst_buf, dst = bufs[0], _range(rng, size[bufs[0]], length)

    # A destination may not start strictly inside a source range of its buffer (the model's
    # read-all-first result differs from the loop nest there; the compiler never emits it).
    def inside(buffer: Buffer, addr: int) -> bool:
        return any(
            source is not None and source[0] is buffer and source[1] < addr < source[1] + length
            for source in sources
        )

    if inside(dst_buf, dst):
        dst_buf = next(b for b in _VEC_BUFFERS if b not in (bufs[1], bufs[2]))
        dst = _range(rng, isa.buffer_entries(dst_buf, params), length)
    special = int(rng.choice(np.asarray(_FP32_SPECIAL, dtype=np.uint32)))
    imm = special if rng.random() < 0.3 else int(_fp32_words(rng, 1)[0])
    instr = isa.make(
        Opcode.VEC, op=op, length=length, dst_buf=dst_buf, dst_addr=dst, src0_buf=bufs[1],
        src0_addr=src0, src1_buf=bufs[2], src1_addr=src1, imm=imm,
    )  # fmt: skip
    isa.check_for_params(instr, params)
    return instr


def _random_update(
    rng: np.random.Generator, params: SATParams, mem_a: Memory, mem_b: Memory, max_groups: int
) -> isa.Instruction:
    patterns = [*params.nm_patterns, (1, 1), (2, 2), (4, 4), (8, 8)]
    n, m = patterns[int(rng.integers(0, len(patterns)))]
    length = m * int(rng.integers(1, max_groups + 1))
    vec_size = params.vec_buffer_entries
    # w, v and hp in disjoint thirds of VEC (hp may overlap w: it is read first).
    third = vec_size // 3
    w = int(rng.integers(0, third - length + 1))
    v = third + int(rng.integers(0, third - length + 1))
    hp = 2 * third + int(rng.integers(0, third - 4)) if rng.random() < 0.9 else w
    g = _range(rng, params.acc_buffer_entries, length)
    kept = length * n // m
    idx = _range(rng, params.wgt_buffer_entries, kept)
    # Realistic hyper-parameters most of the time, specials sometimes; valid N:M indices
    # (strictly increasing in a group) mostly, arbitrary ones sometimes (the low bits count).
    typical = np.array([0.1, 0.9, 5e-4, 2e-4], dtype=np.float32) * rng.uniform(0.2, 5, 4)
    words = typical.astype(np.float32).view(np.uint32)
    if rng.random() < 0.3:
        words = np.where(rng.random(4) < 0.5, _fp32_words(rng, 4), words)
    if n < m and rng.random() < 0.8:
        groups = np.sort(np.argsort(rng.random((kept // n, m)), axis=1)[:, :n], axis=1)
        for mem in (mem_a, mem_b):
            mem.write_idx(idx, groups.astype(np.uint8), "idx")
    for mem in (mem_a, mem_b):
        mem.buffers[Buffer.VEC][hp : hp + 4] = words
    instr = isa.make(
        Opcode.UPDATE, length=length, n=n, m=m, w_addr=w, v_addr=v, g_addr=g, idx_addr=idx,
        hp_addr=hp,
    )  # fmt: skip
    isa.check_for_params(instr, params)
    return instr


def _memories(params: SATParams, seed: int) -> tuple[Memory, Memory]:
    rng = np.random.default_rng(seed)
    mem_rtl, mem_ref = Memory(params, 4096), Memory(params, 4096)
    _fill(mem_rtl, rng)
    for buffer in Buffer:
        mem_ref.buffers[buffer][:] = mem_rtl.buffers[buffer]
    return mem_rtl, mem_ref


def _simulate(
    bench_tools: Any, params: SATParams, vec_count: int, update_count: int, seed: int
) -> None:
    """Run a random mix of VEC and UPDATE, mostly back to back, against the model."""
    mem_rtl, mem_ref = _memories(params, seed)
    rng = np.random.default_rng(seed + 100)
    kinds = rng.permutation([Opcode.VEC] * vec_count + [Opcode.UPDATE] * update_count)
    gaps = [0 if rng.random() < 0.8 else int(rng.integers(1, 3)) for _ in kinds]

    def make(index: int) -> isa.Instruction:
        if kinds[index] == Opcode.VEC:
            return _random_vec(rng, params, max_length=40)
        return _random_update(rng, params, mem_rtl, mem_ref, max_groups=8)

    _run(bench_tools, params, make, len(kinds), mem_rtl, mem_ref, gaps)


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.sim
def test_vec_matches_model(unit_bench: Any) -> None:
    """Random VEC (every op, every buffer pair, specials), mostly back to back."""
    params = load_params("tiny")
    _simulate(unit_bench, params, vec_count=300, update_count=0, seed=1)


@pytest.mark.sim
def test_update_matches_model(unit_bench: Any) -> None:
    """Random UPDATE over every pattern (sparse and dense), hyper-parameters and data."""
    params = load_params("tiny")
    _simulate(unit_bench, params, vec_count=0, update_count=150, seed=2)


@pytest.mark.sim
@pytest.mark.parametrize(
    "changes",
    [
        {"wuve_lanes": 1},
        {"wuve_lanes": 2, "nm_patterns": ((3, 4), (5, 8), (7, 8), (1, 2))},
        {"wuve_lanes": 8, "adder_latency": 1, "multiplier_latency": 1,
         "nm_patterns": ((1, 16), (4, 16), (3, 8), (2, 4))},
    ],
    ids=["one-lane", "odd-n", "m16-latency1"],
)  # fmt: skip
def test_other_configurations(changes: dict[str, Any], unit_bench: Any) -> None:
    """Lane counts below and above m, patterns with odd n and m = 16, unit latencies."""
    params = load_params("tiny").replace(**changes)
    _simulate(unit_bench, params, vec_count=40, update_count=40, seed=len(changes))


def test_port_widths() -> None:
    tiny = WUVE(load_params("tiny"))
    assert (tiny.lanes, tiny.vec_read_lanes, tiny.idx_read_lanes) == (4, 4, 4)
    narrow = WUVE(load_params("tiny").replace(wuve_lanes=1))
    assert (narrow.lanes, narrow.vec_read_lanes, narrow.idx_read_lanes) == (1, 4, 4)
    assert len(narrow.vec_write) == 2 and len(narrow.act_read) == 2


def test_verilog_for_tiny() -> None:
    text = verilog.convert(WUVE(load_params("tiny")), name="wuve")
    assert "module wuve" in text
    for name in (
        "vec_read__0__addr",
        "idx_read__data",
        "vec_write__1__en",
        "input [153:0] update;",
        "input [3:0] opcode;",
    ):
        assert name in text


def test_vcu1525_builds_quickly() -> None:
    params = load_params("vcu1525")
    dut = WUVE(params)
    Fragment.get(dut, None)
    assert dut.lanes == params.wuve_lanes
