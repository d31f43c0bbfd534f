# amaranth: UnusedElaboratable=no
"""Tests of nmsat.hw.arith.fp16_mul: FP16Multiplier against nmsat.hw.numerics.fp16_mul_fp32.

Every FP16 bit pattern enters once as each operand (two runs of 65,536 operations, one per
cycle), plus hypothesis-drawn and hand-picked pairs; the harness (conftest.py) asserts that
``o.valid`` follows ``i.valid`` by exactly ``latency_cycles`` in every cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmsat.hw import numerics as nx
from nmsat.hw.arith import FP16Multiplier

Pairs = list[tuple[int, int]]

INF16 = 0x7C00
NEG16 = 0x8000
MAX16 = 0x7BFF
MIN16 = 0x0400
NAN32 = nx.FP32_CANONICAL_NAN_BITS


def _reference(pairs: Pairs) -> list[int]:
    a = nx.fp16_from_bits(np.array([p[0] for p in pairs], dtype=np.uint16))
    b = nx.fp16_from_bits(np.array([p[1] for p in pairs], dtype=np.uint16))
    return [int(x) for x in nx.fp32_bits(nx.fp16_mul_fp32(a, b))]


def _bits32(x: float) -> int:
    return int(nx.fp32_bits(np.float32(x)))


@st.composite
def fp16_bits(draw: st.DrawFn) -> int:
    """An FP16 bit pattern biased towards zero/subnormal, extreme and special exponents."""
    sign = draw(st.integers(0, 1))
    exponent = draw(
        st.one_of(st.sampled_from([0, 1, 2, 14, 15, 16, 29, 30, 31]), st.integers(0, 31))
    )
    fraction = draw(st.one_of(st.sampled_from([0, 1, 0x1FF, 0x200, 0x3FF]), st.integers(0, 0x3FF)))
    return (sign << 15) | (exponent << 10) | fraction


# Hundreds of pairs per example: one simulation checks them all (hence the health-check
# exemption for large examples).
PAIRS = st.lists(st.tuples(fp16_bits(), fp16_bits()), min_size=200, max_size=400)
BATCH = settings(max_examples=6, suppress_health_check=[HealthCheck.large_base_example])

CORNERS: Pairs = [
    (MAX16, MAX16),  # 65504**2, exact in FP32
    (MAX16 | NEG16, MAX16),
    (MIN16, MIN16),  # 2**-28, the smallest product
    (MIN16 | NEG16, MIN16 | NEG16),
    (0x3C01, 0x3C01),  # (1 + 2**-10)**2 = 1 + 2**-9 + 2**-20: exact, no rounding
    (0x3FFF, 0x3FFF),  # largest significand product
    (0x3C00, 0x3C00),
    # signed zeros, and subnormal operands as signed zeros (DAZ)
    (0x0000, 0x3C00),
    (NEG16, 0x3C00),
    (NEG16, NEG16),
    (0x0001, 0xBC00),
    (0x83FF, 0x83FF),
    (0x03FF, MAX16),
    # infinities and NaNs
    (INF16, 0x3C00),
    (INF16, 0xC000),
    (INF16 | NEG16, INF16 | NEG16),
    (INF16, 0x0000),
    (INF16, 0x0001),  # inf * subnormal = inf * 0 = NaN
    (NEG16, INF16),
    (0x7C01, 0x3C00),
    (0xFFFF, INF16),
    (0x7E00, 0x0000),
]


@pytest.mark.sim
def test_corner_cases_have_known_results(run_pipeline: Callable[..., list[int]]) -> None:
    """A few corner cases spelled out, independently of the reference."""
    got = dict(zip(CORNERS, run_pipeline(FP16Multiplier(), CORNERS, operand_bits=16), strict=True))
    assert got[(MAX16, MAX16)] == _bits32(65504.0**2)
    assert got[(MIN16, MIN16)] == _bits32(2.0**-28)
    assert got[(0x3C01, 0x3C01)] == _bits32(1 + 2.0**-9 + 2.0**-20)
    assert got[(NEG16, 0x3C00)] == 0x8000_0000
    assert got[(0x0001, 0xBC00)] == 0x8000_0000
    assert got[(INF16, 0xC000)] == 0xFF80_0000
    assert got[(INF16, 0x0001)] == NAN32
    assert got[(0xFFFF, INF16)] == NAN32


@pytest.mark.sim
@pytest.mark.parametrize("latency", [0, 1, 2, 3, 5])
def test_corner_cases_match_numerics(
    latency: int, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    got = run_pipeline(FP16Multiplier(latency), CORNERS, operand_bits=16)
    assert_same_bits(CORNERS, got, _reference(CORNERS))


@pytest.mark.sim
@pytest.mark.parametrize("latency", [0, 1, 2])
@BATCH
@given(pairs=PAIRS, idle=st.sampled_from([0.0, 0.3]))
def test_random_operands_match_numerics(
    latency: int,
    pairs: Pairs,
    idle: float,
    run_pipeline: Callable[..., list[int]],
    assert_same_bits: Any,
) -> None:
    dut = FP16Multiplier(latency)
    got = run_pipeline(dut, pairs, idle_fraction=idle, seed=len(pairs), operand_bits=16)
    assert_same_bits(pairs, got, _reference(pairs))


@pytest.mark.sim
@pytest.mark.parametrize("swap", [False, True], ids=["every_a", "every_b"])
def test_every_fp16_value(
    swap: bool, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    """Each of the 65,536 patterns once, against random partners, one per cycle."""
    rng = np.random.default_rng(int(swap))
    partners = rng.integers(0, 1 << 16, size=1 << 16)
    pairs = [(x, int(y)) for x, y in enumerate(partners)]
    if swap:
        pairs = [(y, x) for x, y in pairs]
    assert_same_bits(
        pairs, run_pipeline(FP16Multiplier(1), pairs, operand_bits=16), _reference(pairs)
    )


def test_rejects_bad_latency() -> None:
    # The half-built components are never elaborated; line 1 silences Amaranth's warning.
    with pytest.raises(ValueError, match="at least 0"):
        FP16Multiplier(-1)
    with pytest.raises(TypeError, match="integer"):
        FP16Multiplier(None)  # type: ignore[arg-type]


@pytest.mark.sim
@pytest.mark.parametrize("latency", [0, 1, 3])
def test_converts_to_verilog(latency: int) -> None:
    multiplier = FP16Multiplier(latency)
    assert multiplier.latency_cycles == latency
    text = verilog.convert(multiplier, name="fp16_mul")
    assert "module fp16_mul" in text
    assert "o__result" in text
