"""Shared harness of the arithmetic-unit tests: stream operands through a pipeline in pysim.

``run_pipeline`` drives one operation per scheduled cycle through a unit with ports
``i.a``, ``i.b``, ``i.valid``, ``o.result``, ``o.valid`` and property ``latency_cycles``,
and checks in every cycle that ``o.valid`` is high exactly ``latency_cycles`` after an
operation entered (so latency and one-per-cycle throughput are asserted on every run).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from amaranth.sim import Simulator

RunPipeline = Callable[..., list[int]]


def _run_pipeline(
    dut: Any,
    operands: Sequence[tuple[int, int]],
    *,
    idle_fraction: float = 0.0,
    seed: int = 0,
    operand_bits: int = 32,
) -> list[int]:
    """Return the result bit patterns of ``operands`` (pairs of bit patterns), in order.

    With ``idle_fraction > 0`` idle cycles (``i.valid`` low, random operands) are mixed in;
    otherwise one operation enters every cycle.
    """
    rng = random.Random(seed)
    schedule: list[int | None] = []
    for index in range(len(operands)):
        while idle_fraction and rng.random() < idle_fraction:
            schedule.append(None)
        schedule.append(index)
    latency = dut.latency_cycles
    results: list[int | None] = [None] * len(operands)
    mask = (1 << operand_bits) - 1

    async def bench(ctx: Any) -> None:
        for cycle in range(len(schedule) + latency + 2):
            index = schedule[cycle] if cycle < len(schedule) else None
            if index is None:
                ctx.set(dut.i.valid, 0)
                ctx.set(dut.i.a, rng.getrandbits(operand_bits) & mask)
                ctx.set(dut.i.b, rng.getrandbits(operand_bits) & mask)
            else:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.a, operands[index][0])
                ctx.set(dut.i.b, operands[index][1])
            source = cycle - latency
            expected = schedule[source] if 0 <= source < len(schedule) else None
            valid = ctx.get(dut.o.valid)
            assert valid == (expected is not None), f"o.valid = {valid} in cycle {cycle}"
            if expected is not None:
                results[expected] = ctx.get(dut.o.result)
            if latency:
                await ctx.tick()
            else:
                await ctx.delay(1e-8)

    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert all(r is not None for r in results)
    return [int(r) for r in results if r is not None]


@pytest.fixture(scope="session")
def run_pipeline() -> RunPipeline:
    """The streaming harness, :func:`_run_pipeline`."""
    return _run_pipeline


def _assert_same_bits(
    operands: Sequence[tuple[int, int]], got: Sequence[int], want: Sequence[int]
) -> None:
    """Fail naming the first few operand pairs whose result bit patterns differ."""
    bad = [
        f"{x:#010x} {y:#010x}: got {g:#010x}, want {w:#010x}"
        for (x, y), g, w in zip(operands, got, want, strict=True)
        if g != w
    ]
    assert not bad, f"{len(bad)} of {len(got)} results differ:\n" + "\n".join(bad[:8])


@pytest.fixture(scope="session")
def assert_same_bits() -> Callable[..., None]:
    """The comparison of result bit patterns, :func:`_assert_same_bits`."""
    return _assert_same_bits
