# amaranth: UnusedElaboratable=no
"""SORE against nmsat.models.nm.compress and nmsat.hw.numerics.to_fp16, cycle by cycle."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from numpy.typing import NDArray

from nmsat.hw.isa_timing import sore_pipeline_cycles
from nmsat.hw.numerics import fp16_bits, fp32_from_bits, to_fp16
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.sore import SORE, bitonic_stages
from nmsat.models.nm import compress

# Magnitudes that make ties and special cases likely within a group: zero, the smallest and
# largest FP32 subnormals (ranked by their bits, flushed on output), 1.0 and its neighbour,
# FP16 rounding edges, the largest finite FP32, infinity and NaNs with different payloads.
_SPECIAL = (
    0x00000000, 0x00000001, 0x007FFFFF, 0x3F800000, 0x3F800001, 0x387FE000, 0x477FF000,
    0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF,
)  # fmt: skip


@dataclass(frozen=True)
class _Cycle:
    """Inputs of one cycle: the pattern and, per lane, a group (or None when idle)."""

    n: int
    m: int
    groups: tuple[NDArray[np.uint32] | None, ...]


def _random_group(rng: np.random.Generator, m: int, size: int) -> NDArray[np.uint32]:
    """A group of ``m`` FP32 patterns, padded to ``size`` with garbage the SORE must ignore."""
    kind = rng.integers(4)
    if kind == 0:
        words = rng.integers(0, 2**32, m, dtype=np.uint64).astype(np.uint32)
    elif kind == 1:
        words = rng.choice(np.asarray(_SPECIAL, dtype=np.uint32), m)
    elif kind == 2:
        # Few distinct magnitudes: many ties, some differing only in sign.
        pool = rng.standard_normal(3).astype(np.float32).view(np.uint32)
        words = rng.choice(pool, m)
    else:
        words = rng.standard_normal(m).astype(np.float32).view(np.uint32)
    signs = rng.integers(0, 2, m, dtype=np.uint64).astype(np.uint32) << np.uint32(31)
    words = (words & np.uint32(0x7FFF_FFFF)) | signs
    pad = rng.integers(0, 2**32, size - m, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([words, pad])


def _expected(words: NDArray[np.uint32], n: int, m: int, size: int) -> tuple[int, ...]:
    """Reference output of one group: FP16 values then indices, zero-padded to ``size``."""
    values, indices = compress(fp32_from_bits(words[:m])[None, :], n, m, axis=1)
    out_values = [int(v) for v in fp16_bits(to_fp16(values[0]))] + [0] * (size - n)
    out_indices = [int(i) for i in indices[0]] + [0] * (size - n)
    return (*out_values, *out_indices)


def _schedule(
    params: SATParams, patterns: list[tuple[int, int]], groups: int, seed: int
) -> list[_Cycle]:
    """Build input cycles: per pattern ``groups`` cycles (some lanes idle), then a drain.

    A pattern whose m is not smaller than the next one's follows without a gap (it cannot
    collide at the output); otherwise the pipeline drains first, as PRUNE does.
    """
    rng = np.random.default_rng(seed)
    lanes, size = params.sore_lanes, params.m_max
    cycles: list[_Cycle] = []
    for pos, (n, m) in enumerate(patterns):
        for step in range(groups):
            # The first half runs at full rate (throughput); then lanes idle at random.
            busy = [step < groups // 2 or rng.random() > 0.2 for _ in range(lanes)]
            cycles.append(
                _Cycle(n, m, tuple(_random_group(rng, m, size) if b else None for b in busy))
            )
        following = patterns[pos + 1][1] if pos + 1 < len(patterns) else 0
        if following < m:
            k = m.bit_length() - 1
            cycles += [_Cycle(n, m, (None,) * lanes)] * (k * (k + 1) // 2 + 1)
    return cycles


def _simulate(dut: SORE, cycles: list[_Cycle]) -> dict[tuple[int, int], tuple[int, ...]]:
    """Run the schedule; return every valid output as {(cycle, lane): values + indices}."""
    params = dut.params
    size, index_bits = params.m_max, params.index_bits
    outputs: dict[tuple[int, int], tuple[int, ...]] = {}

    async def bench(ctx: Any) -> None:
        for cycle, inputs in enumerate(cycles):
            ctx.set(dut.n, inputs.n)
            ctx.set(dut.m, inputs.m)
            for lane, words in enumerate(inputs.groups):
                ctx.set(dut.i[lane].valid, words is not None)
                if words is not None:
                    packed = sum(int(w) << (32 * u) for u, w in enumerate(words))
                    ctx.set(dut.i[lane].weights.as_value(), packed)
            # Outputs of this cycle (m = 1 passes combinationally), then the clock edge.
            for lane in range(params.sore_lanes):
                if ctx.get(dut.o[lane].valid):
                    packed_values = ctx.get(dut.o[lane].values.as_value())
                    packed_indices = ctx.get(dut.o[lane].indices.as_value())
                    values = [(packed_values >> (16 * u)) & 0xFFFF for u in range(size)]
                    mask = (1 << index_bits) - 1
                    indices = [(packed_indices >> (index_bits * u)) & mask for u in range(size)]
                    outputs[cycle, lane] = (*values, *indices)
            if clocked:
                await ctx.tick()
            else:
                await ctx.delay(1e-8)

    # A network for M = 1 has no register at all, hence no clock domain.
    clocked = dut.latency_cycles(params.m_max) > 0
    sim = Simulator(dut)
    if clocked:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outputs


def _check(dut: SORE, cycles: list[_Cycle]) -> None:
    """Every group's result appears exactly latency_cycles(m) later, and nothing else does."""
    outputs = _simulate(dut, cycles)
    size = dut.params.m_max
    expected: dict[tuple[int, int], tuple[int, ...]] = {}
    for cycle, inputs in enumerate(cycles):
        latency = dut.latency_cycles(inputs.m)
        for lane, words in enumerate(inputs.groups):
            if words is not None and cycle + latency < len(cycles):
                expected[cycle + latency, lane] = _expected(words, inputs.n, inputs.m, size)
    assert outputs.keys() == expected.keys()
    mismatches = [key for key in expected if outputs[key] != expected[key]]
    assert not mismatches, f"{len(mismatches)} groups differ, first at {mismatches[0]}"


def _all_patterns(params: SATParams) -> list[tuple[int, int]]:
    """The configuration's sparse patterns and dense for every group size, mixed order."""
    dense = [(m, m) for m in (1, 2, 4, 8, 16) if m <= params.m_max]
    return [*params.nm_patterns, *dense, *params.nm_patterns[::-1]]


# -- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("size_log2", [0, 1, 2, 3, 4])
def test_bitonic_stages_sort_descending(size_log2: int) -> None:
    """0-1 principle: a comparator network sorts everything iff it sorts every 0-1 input."""
    stages = bitonic_stages(size_log2)
    assert len(stages) == size_log2 * (size_log2 + 1) // 2
    size = 1 << size_log2
    for bits in itertools.product((0, 1), repeat=size):
        slots = list(bits)
        for done, pairs in enumerate(stages, start=1):
            assert sorted(a for pair in pairs for a in pair) == list(range(size))
            for high, low in pairs:
                if slots[low] > slots[high]:
                    slots[high], slots[low] = slots[low], slots[high]
            # After phase k the first block of 2**k slots is sorted descending on its own.
            k = next((k for k in range(size_log2 + 1) if k * (k + 1) // 2 == done), None)
            if k is not None:
                block = 1 << k
                assert slots[:block] == sorted(bits[:block], reverse=True)
        assert slots == sorted(bits, reverse=True)


def test_bitonic_stages_rejects_negative() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        bitonic_stages(-1)


@pytest.mark.parametrize("preset", ["tiny", "vcu1525"])
def test_latency_fits_isa_timing(preset: str) -> None:
    """Read cycle + compare stages + write cycle = sore_pipeline_cycles(m)."""
    dut = SORE(load_params(preset))
    assert dut.group_sizes == (1, 2, 4, 8)
    for m in dut.group_sizes:
        assert dut.latency_cycles(m) + 2 == sore_pipeline_cycles(m)
    with pytest.raises(ValueError, match="m=16 is not supported"):
        dut.latency_cycles(16)


# -- simulation ---------------------------------------------------------------------------------


@pytest.mark.sim
def test_tiny_all_patterns_match_reference() -> None:
    """Every tiny pattern and dense: values, indices, latency and one group/lane/cycle."""
    params = load_params("tiny")
    dut = SORE(params)
    cycles = _schedule(params, _all_patterns(params), groups=120, seed=1)
    _check(dut, cycles)
    # Throughput: in every full-rate cycle every lane's group came out, S cycles later.
    full = sum(all(g is not None for g in c.groups) for c in cycles)
    assert full >= 60 * len(_all_patterns(params))


@pytest.mark.sim
def test_pattern_changes_without_drain() -> None:
    """n and m travel with each group: a larger m may follow a smaller one back to back."""
    params = load_params("tiny")
    dut = SORE(params)
    rng = np.random.default_rng(2)
    cycles = []
    for _ in range(40):
        n_m = [(1, 1), (1, 2), (1, 4), (2, 4), (2, 8), (4, 8), (8, 8)]
        for n, m in n_m:
            groups = tuple(_random_group(rng, m, 8) for _ in range(params.sore_lanes))
            cycles.append(_Cycle(n, m, groups))
        cycles += [_Cycle(1, 8, (None,) * params.sore_lanes)] * 6
    _check(dut, cycles)


@pytest.mark.sim
@pytest.mark.parametrize(
    ("nm_patterns", "schedule"),
    [
        (((1, 16), (4, 16), (2, 4)), [(4, 16), (1, 16), (16, 16), (2, 4), (3, 8), (1, 1)]),
        (((1, 2),), [(1, 2), (2, 2), (1, 1), (1, 2)]),
        ((), [(1, 1)]),
    ],
    ids=["m16", "m2", "dense-only"],
)
def test_other_network_sizes(
    nm_patterns: tuple[tuple[int, int], ...], schedule: list[tuple[int, int]]
) -> None:
    """Networks for M = 16 (10 compare stages), M = 2 and M = 1 (no compare stage)."""
    params = load_params("tiny").replace(nm_patterns=nm_patterns, sore_lanes=1)
    dut = SORE(params)
    for m in dut.group_sizes:
        assert dut.latency_cycles(m) + 2 == sore_pipeline_cycles(m)
    _check(dut, _schedule(params, schedule, groups=40, seed=len(nm_patterns)))


def test_verilog_for_tiny() -> None:
    text = verilog.convert(SORE(load_params("tiny")), name="sore")
    assert "module sore" in text
    for name in ("i__0__weights", "i__1__valid", "o__1__values", "o__0__indices", " n;", " m;"):
        assert name in text


def test_vcu1525_builds_quickly() -> None:
    params = load_params("vcu1525")
    dut = SORE(params)
    Fragment.get(dut, None)
    assert len(dut.o) == params.sore_lanes == 32
