# amaranth: UnusedElaboratable=no
"""Tests of nmsat.hw.arith.fp32_add: FP32Adder against nmsat.hw.numerics.fp32_add.

Operands stream through one simulation per run, one per cycle (or with idle cycles); the
harness (conftest.py) asserts that ``o.valid`` follows ``i.valid`` by exactly
``latency_cycles`` in every cycle, and results are compared as bit patterns.
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
from nmsat.hw.arith import FP32Adder

Pairs = list[tuple[int, int]]

MAX = 0x7F7F_FFFF
INF = 0x7F80_0000
NAN = nx.FP32_CANONICAL_NAN_BITS
MIN_NORMAL = 0x0080_0000
NEG = 0x8000_0000


def _bits(x: float) -> int:
    return int(nx.fp32_bits(np.float32(x)))


def _reference(pairs: Pairs) -> list[int]:
    a = nx.fp32_from_bits(np.array([p[0] for p in pairs], dtype=np.uint32))
    b = nx.fp32_from_bits(np.array([p[1] for p in pairs], dtype=np.uint32))
    return [int(x) for x in nx.fp32_bits(nx.fp32_add(a, b))]


# Exponents where things happen: zero/subnormal, the smallest normals, around 1.0, the
# largest finite values, inf/NaN.
_EXPONENTS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 24, 25, 26, 126, 127, 128, 229, 252, 253, 254, 255]),
    st.integers(0, 255),
)
_FRACTIONS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF]),
    st.integers(0, (1 << 23) - 1),
)


@st.composite
def fp32_bits(draw: st.DrawFn) -> int:
    """An FP32 bit pattern biased towards interesting exponents and fractions."""
    sign = draw(st.integers(0, 1))
    return (sign << 31) | (draw(_EXPONENTS) << 23) | draw(_FRACTIONS)


@st.composite
def close_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """Operand pairs whose exponents differ by little: cancellation, carries, ties."""
    a = draw(fp32_bits())
    exponent = (a >> 23) & 0xFF
    delta = draw(st.one_of(st.integers(-3, 3), st.integers(-30, 30)))
    exponent_b = min(255, max(0, exponent + delta))
    fraction = a & 0x7F_FFFF
    fraction_b = draw(
        st.one_of(
            st.integers(max(0, fraction - 4), min((1 << 23) - 1, fraction + 4)),
            _FRACTIONS,
        )
    )
    sign_b = draw(st.integers(0, 1))
    return a, (sign_b << 31) | (exponent_b << 23) | fraction_b


# Hundreds of pairs per example: one simulation checks them all, so a small example budget
# still covers thousands of operations (large batches are the point, hence the health-check
# exemption in BATCH).
PAIRS = st.lists(
    st.one_of(st.tuples(fp32_bits(), fp32_bits()), close_pairs()), min_size=200, max_size=400
)
BATCH = settings(max_examples=6, suppress_health_check=[HealthCheck.large_base_example])

CORNERS: Pairs = [
    # ties to even: 1 + 2**-24 stays 1 (even); (1 + 2**-23) + 2**-24 goes up to 1 + 2**-22
    (_bits(1.0), _bits(2.0**-24)),
    (_bits(1.0 + 2.0**-23), _bits(2.0**-24)),
    (_bits(1.0), _bits(2.0**-24 + 2.0**-47)),
    (_bits(1.0), _bits(-(2.0**-25))),  # 1 - 2**-25: tie between 1 - 2**-24 (odd) and 1
    (_bits(1.0), _bits(-(2.0**-25) - 2.0**-48)),
    (_bits(1.0), _bits(2.0**-30)),
    (_bits(1.0), _bits(-(2.0**-30))),
    (0x3FFF_FFFF, _bits(2.0**-23)),  # carry out of the rounding: exponent bumps
    (0x3F7F_FFFF, _bits(2.0**-25)),
    # exact cancellation gives +0, in both orders and signs; -0 + -0 = -0
    (_bits(1.5), _bits(-1.5)),
    (_bits(-3.25e-20), _bits(3.25e-20)),
    (MAX, MAX | NEG),
    (0, NEG),
    (NEG, 0),
    (NEG, NEG),
    (0, 0),
    # massive cancellation: normalisation shifts left by up to 23
    (_bits(1.0 + 2.0**-23), _bits(-1.0)),
    (0x4000_0001, 0xC000_0000),
    (0x3F80_0001, 0xBF7F_FFFF),
    # subnormal results are flushed after rounding, keeping their sign
    (_bits(1.5 * 2.0**-126), _bits(-(2.0**-126))),
    (_bits(-1.5 * 2.0**-126), _bits(2.0**-126)),
    (MIN_NORMAL | 1, MIN_NORMAL | NEG),
    (MIN_NORMAL, MIN_NORMAL),
    (0x0100_0000, 0x8080_0001),
    # subnormal operands count as signed zeros (DAZ)
    (0x0000_0001, NEG),
    (0x8000_0001, NEG),
    (0x8000_0001, 0x8000_0002),
    (0x007F_FFFF, MIN_NORMAL),
    (0x807F_FFFF, _bits(1.0)),
    (0x0000_0001, 0x8000_0001),
    # overflow: MAX + half an ulp is a tie that rounds to the even 2**128, i.e. inf
    (MAX, MAX),
    (MAX | NEG, MAX | NEG),
    (MAX, _bits(2.0**103)),
    (MAX, _bits(2.0**102)),
    (MAX, _bits(2.0**103 + 2.0**80)),
    # infinities and NaNs: canonical NaN whatever the payload or sign
    (INF, INF | NEG),
    (INF | NEG, INF),
    (INF, INF),
    (INF | NEG, _bits(1.0)),
    (INF, 0x0000_0001),
    (0x7F80_0001, _bits(1.0)),
    (0xFFFF_FFFF, INF),
    (_bits(2.0), 0xFFC0_0000),
    (NAN, NAN),
]


@pytest.mark.sim
def test_corner_cases_have_known_results(run_pipeline: Callable[..., list[int]]) -> None:
    """A few corner cases spelled out, independently of the reference."""
    got = dict(zip(CORNERS, run_pipeline(FP32Adder(3), CORNERS), strict=True))
    assert got[(_bits(1.0), _bits(2.0**-24))] == _bits(1.0)
    assert got[(_bits(1.0 + 2.0**-23), _bits(2.0**-24))] == _bits(1.0 + 2.0**-22)
    assert got[(_bits(1.0), _bits(-(2.0**-25)))] == _bits(1.0)
    assert got[(_bits(1.5), _bits(-1.5))] == 0
    assert got[(NEG, NEG)] == NEG
    assert got[(0, NEG)] == 0
    assert got[(_bits(1.5 * 2.0**-126), _bits(-(2.0**-126)))] == 0
    assert got[(_bits(-1.5 * 2.0**-126), _bits(2.0**-126))] == NEG
    assert got[(0x8000_0001, NEG)] == NEG
    assert got[(MAX, MAX)] == INF
    assert got[(MAX, _bits(2.0**103))] == INF
    assert got[(MAX, _bits(2.0**102))] == MAX
    assert got[(INF, INF | NEG)] == NAN
    assert got[(0xFFFF_FFFF, INF)] == NAN


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 2, 3, 4, 7])
def test_corner_cases_match_numerics(
    latency: int, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    assert_same_bits(CORNERS, run_pipeline(FP32Adder(latency), CORNERS), _reference(CORNERS))


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 3, 4])
@BATCH
@given(pairs=PAIRS, idle=st.sampled_from([0.0, 0.3]))
def test_random_operands_match_numerics(
    latency: int,
    pairs: Pairs,
    idle: float,
    run_pipeline: Callable[..., list[int]],
    assert_same_bits: Any,
) -> None:
    got = run_pipeline(FP32Adder(latency), pairs, idle_fraction=idle, seed=len(pairs))
    assert_same_bits(pairs, got, _reference(pairs))


def _seeded_pairs(seed: int, count: int) -> Pairs:
    """Random bit patterns: half fully random, half with nearby exponents (cancellation)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 32, size=count, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, size=count, dtype=np.uint64)
    near = (a & 0xFF80_0000) ^ (rng.integers(0, 4, size=count, dtype=np.uint64) << 23)
    near |= rng.integers(0, 2, size=count, dtype=np.uint64) << 31
    b = np.where(np.arange(count) % 2 == 0, b, near | (b & 0x7F_FFFF))
    return [(int(x), int(y)) for x, y in zip(a, b, strict=True)]


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 2, 3, 4, 5, 6, 8, 16])
def test_back_to_back_operations(
    latency: int, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    """One operation per cycle, no bubble, at every latency: throughput and exact latency."""
    pairs = _seeded_pairs(latency, 2000)
    assert_same_bits(pairs, run_pipeline(FP32Adder(latency), pairs), _reference(pairs))


def test_rejects_bad_latency() -> None:
    # The half-built components are never elaborated; line 1 silences Amaranth's warning.
    with pytest.raises(ValueError, match="at least 1"):
        FP32Adder(0)
    with pytest.raises(TypeError, match="integer"):
        FP32Adder(True)


@pytest.mark.sim
@pytest.mark.parametrize("latency", [3, 4])
def test_converts_to_verilog(latency: int) -> None:
    adder = FP32Adder(latency)
    assert adder.latency_cycles == latency
    text = verilog.convert(adder, name="fp32_add")
    assert "module fp32_add" in text
    assert "o__result" in text
