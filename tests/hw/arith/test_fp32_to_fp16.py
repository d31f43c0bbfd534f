# amaranth: UnusedElaboratable=no
"""FP32ToFP16 against nmsat.hw.numerics.to_fp16, bit for bit, in the Amaranth simulator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from amaranth.sim import Simulator
from numpy.typing import NDArray

from nmsat.hw.arith.fp32_to_fp16 import FP32ToFP16
from nmsat.hw.numerics import fp16_bits, fp32_from_bits, to_fp16

# Fractions that sit on the rounding decisions of the 13 dropped bits: exact, ties with an
# even and an odd kept part, one ulp either side of a tie, all ones (carry into the exponent).
_FRACTIONS = (
    0x000000, 0x000001, 0x000FFF, 0x001000, 0x001001, 0x001FFF, 0x002000, 0x002FFF,
    0x003000, 0x003001, 0x400000, 0x5FF000, 0x7FC000, 0x7FDFFF, 0x7FE000, 0x7FEFFF,
    0x7FF000, 0x7FF001, 0x7FFFFF,
)  # fmt: skip

_NAMED = (
    0x477FE000,  # 65504, the largest finite FP16
    0x477FEFFF,  # just below 65520: rounds down to 65504
    0x477FF000,  # 65520: a tie that rounds to the even neighbour, infinity
    0x477FFFFF,  # between 65520 and 65536: infinity
    0x47800000,  # 65536
    0x7F7FFFFF,  # the largest finite FP32
    0x38800000,  # 2**-14, the smallest normal FP16
    0x387FE000,  # 2**-14 - 2**-25: a tie that rounds up to the even 2**-14 (kept)
    0x387FDFFF,  # just below that tie: rounds to a subnormal, flushed
    0x387FF000,  # 2**-14 - 2**-26: rounds up to 2**-14
    0x38000000,  # 2**-15: subnormal in FP16, flushed
    0x33800000,  # 2**-24, the smallest FP16 subnormal: flushed
    0x00000001,  # the smallest FP32 subnormal (DAZ)
    0x007FFFFF,  # the largest FP32 subnormal (DAZ)
    0x00800000,  # the smallest FP32 normal
    0x7F800000,  # infinity
    0x7F800001,  # signalling NaN
    0x7FC00000,  # canonical FP32 NaN
    0x7FFFFFFF,  # NaN with a full payload
    0x3F800000,  # 1.0
    0x3F801000,  # 1 + 2**-11: a tie that rounds down to 1.0
    0x3F803000,  # 1 + 3 * 2**-11: a tie that rounds up
)


def _corner_bits() -> NDArray[np.uint32]:
    """Every exponent with every rounding-critical fraction, both signs, plus named values."""
    exps = np.arange(256, dtype=np.uint32)[:, None] << np.uint32(23)
    fracs = np.asarray(_FRACTIONS, dtype=np.uint32)[None, :]
    positive = np.concatenate([(exps | fracs).ravel(), np.asarray(_NAMED, dtype=np.uint32)])
    return np.concatenate([positive, positive | np.uint32(0x8000_0000)])


def _random_bits(count: int, seed: int) -> NDArray[np.uint32]:
    """Uniform bit patterns, half of them with an exponent near the FP16 range."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    near = rng.integers(100, 150, count // 2, dtype=np.uint64).astype(np.uint32)
    bits[: count // 2] = (bits[: count // 2] & np.uint32(0x807F_FFFF)) | (near << np.uint32(23))
    return bits


def _run(dut: FP32ToFP16, inputs: NDArray[np.uint32], gap_every: int = 0) -> list[int]:
    """Drive ``inputs`` one per cycle (with an idle cycle every ``gap_every``); collect results.

    Checks ``o.valid`` and, for the registered unit, that the result holds while idle.
    """
    results: list[int] = []
    latency = dut.latency_cycles

    async def bench(ctx: Any) -> None:
        for step, value in enumerate(inputs):
            if gap_every and step % gap_every == gap_every - 1:
                ctx.set(dut.i.valid, 0)
                ctx.set(dut.i.a, 0xDEAD_BEEF)
                await _settle(ctx, latency)
                assert ctx.get(dut.o.valid) == 0
                if latency and results:
                    assert ctx.get(dut.o.result) == results[-1]
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.a, int(value))
            # After the clock edge (latency 1) or the settling delay (latency 0) the outputs
            # show the result of the input just applied.
            await _settle(ctx, latency)
            assert ctx.get(dut.o.valid) == 1
            results.append(ctx.get(dut.o.result))

    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


async def _settle(ctx: Any, latency: int) -> None:
    """Advance one clock edge for a registered unit; only settle a combinational one."""
    if latency:
        await ctx.tick()
    else:
        await ctx.delay(1e-9)


def _reference(bits: NDArray[np.uint32]) -> list[int]:
    return [int(b) for b in fp16_bits(to_fp16(fp32_from_bits(bits)))]


@pytest.mark.sim
def test_corner_cases_match_to_fp16() -> None:
    bits = _corner_bits()
    assert _run(FP32ToFP16(), bits) == _reference(bits)


@pytest.mark.sim
def test_random_patterns_match_to_fp16() -> None:
    bits = _random_bits(20000, seed=5)
    assert _run(FP32ToFP16(), bits, gap_every=7) == _reference(bits)


@pytest.mark.sim
def test_combinational_variant() -> None:
    bits = np.concatenate([_corner_bits()[::3], _random_bits(3000, seed=6)])
    dut = FP32ToFP16(latency_cycles=0)
    assert dut.latency_cycles == 0
    assert _run(dut, bits, gap_every=5) == _reference(bits)


def test_named_values() -> None:
    """The reference itself behaves as the corner comments say (guards the test data)."""
    named = dict(zip(_NAMED, _reference(np.asarray(_NAMED, dtype=np.uint32)), strict=True))
    assert named[0x477FEFFF] == 0x7BFF
    assert named[0x477FF000] == 0x7C00
    assert named[0x387FE000] == 0x0400
    assert named[0x387FDFFF] == 0x0000
    assert named[0x387FF000] == 0x0400
    assert named[0x7F800001] == 0x7E00
    assert named[0x3F801000] == 0x3C00
    assert named[0x3F803000] == 0x3C02


def test_rejects_bad_latency() -> None:
    with pytest.raises(ValueError, match="latency_cycles must be 0 or 1"):
        FP32ToFP16(latency_cycles=2)
