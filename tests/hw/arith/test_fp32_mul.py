# amaranth: UnusedElaboratable=no
"""Tests of nmsat.hw.arith.fp32_mul: FP32Multiplier against nmsat.hw.numerics.fp32_mul.

Operands stream through one simulation per run, one per cycle (or with idle cycles); the
harness (conftest.py) asserts that ``o.valid`` follows ``i.valid`` by exactly
``latency_cycles`` in every cycle, and results are compared as bit patterns. Products near
the bottom of the normal range get extra weight: there the contract rounds with gradual
underflow first and flushes afterwards.
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
from nmsat.hw.arith import FP32Multiplier

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
    return [int(x) for x in nx.fp32_bits(nx.fp32_mul(a, b))]


_EXPONENTS = st.one_of(
    st.sampled_from([0, 1, 2, 63, 64, 126, 127, 128, 190, 191, 253, 254, 255]),
    st.integers(0, 255),
)
_FRACTIONS = st.one_of(
    st.sampled_from([0, 1, 2, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF]),
    st.integers(0, (1 << 23) - 1),
)


@st.composite
def fp32_bits(draw: st.DrawFn) -> int:
    """An FP32 bit pattern biased towards interesting exponents and fractions."""
    sign = draw(st.integers(0, 1))
    return (sign << 31) | (draw(_EXPONENTS) << 23) | draw(_FRACTIONS)


@st.composite
def edge_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """Pairs whose product lands near 2**-126 (underflow) or 2**128 (overflow)."""
    exponent_a = draw(st.integers(1, 254))
    target = draw(st.sampled_from([127, 127 + 127, 127 + 128]))
    exponent_b = min(254, max(1, target - exponent_a + draw(st.integers(-2, 1))))
    fraction_a, fraction_b = draw(_FRACTIONS), draw(_FRACTIONS)
    sign_a, sign_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    a = (sign_a << 31) | (exponent_a << 23) | fraction_a
    return a, (sign_b << 31) | (exponent_b << 23) | fraction_b


# Hundreds of pairs per example: one simulation checks them all (hence the health-check
# exemption for large examples).
PAIRS = st.lists(
    st.one_of(st.tuples(fp32_bits(), fp32_bits()), edge_pairs()), min_size=200, max_size=400
)
BATCH = settings(max_examples=6, suppress_health_check=[HealthCheck.large_base_example])

CORNERS: Pairs = [
    # round to nearest, ties to even
    (_bits(1.0 + 2.0**-23), _bits(1.0 + 2.0**-23)),  # 1 + 2**-22 + 2**-46: rounds down
    (_bits(1.0 + 2.0**-12), _bits(1.0 + 2.0**-12)),  # 1 + 2**-11 + 2**-24: exact
    (_bits(1.0 + 2.0**-23), _bits(1.5)),  # 1.5 + 1.5 * 2**-23: a tie, rounds to even
    (_bits(1.0 + 3 * 2.0**-23), _bits(1.5)),
    (0x3FFF_FFFF, 0x3FFF_FFFF),  # carry out of the rounding
    # round first, then flush: (1 - 2**-24) * 2**-126 is a tie that rounds to 2**-126
    (_bits(1.0 - 2.0**-24), MIN_NORMAL),
    (_bits(-(1.0 - 2.0**-24)), MIN_NORMAL),
    (_bits(1.0 - 2.0**-23), MIN_NORMAL),  # rounds to the subnormal 2**-126 - 2**-149: 0
    (_bits(0.5), MIN_NORMAL),  # 2**-127: subnormal, flushed to +0
    (_bits(-0.5), MIN_NORMAL),  # -0
    (_bits(1.0 - 2.0**-24), _bits(2.0**-126 + 2.0**-149)),
    (_bits(2.0**-63), _bits(2.0**-63)),  # exactly 2**-126
    (_bits(2.0**-64), _bits(2.0**-63)),  # 2**-127: flushed
    (0x3FFF_FFFF, 0x0000_0001 | 0x0080_0000),
    (MIN_NORMAL, MIN_NORMAL),
    # overflow to signed infinity, and the largest finite products
    (MAX, _bits(2.0)),
    (MAX, _bits(-1.0)),
    (_bits(2.0**64), _bits(2.0**64)),
    (_bits(2.0**63), _bits(2.0**64)),
    (_bits(1.5 * 2.0**63), _bits(1.5 * 2.0**64)),
    (_bits(2.0**127), _bits(1.0 + 2.0**-23)),
    (MAX, _bits(1.0 + 2.0**-23)),
    # DAZ: subnormal operands are signed zeros; 0 * inf is the NaN
    (0x0000_0001, _bits(2.0**100)),
    (0x807F_FFFF, _bits(3.0)),
    (0x807F_FFFF, INF),
    (0x0000_0001, INF | NEG),
    (NEG, NEG),
    (NEG, _bits(5.0)),
    (0, INF),
    (INF, NEG),
    (INF, INF | NEG),
    (INF, _bits(-2.0)),
    (0x7F80_0001, _bits(1.0)),
    (0xFFFF_FFFF, 0),
    (NAN, INF),
]


@pytest.mark.sim
def test_corner_cases_have_known_results(run_pipeline: Callable[..., list[int]]) -> None:
    """A few corner cases spelled out, independently of the reference."""
    got = dict(zip(CORNERS, run_pipeline(FP32Multiplier(3), CORNERS), strict=True))
    assert got[(_bits(1.0 - 2.0**-24), MIN_NORMAL)] == MIN_NORMAL
    assert got[(_bits(-(1.0 - 2.0**-24)), MIN_NORMAL)] == MIN_NORMAL | NEG
    assert got[(_bits(1.0 - 2.0**-23), MIN_NORMAL)] == 0
    assert got[(_bits(0.5), MIN_NORMAL)] == 0
    assert got[(_bits(-0.5), MIN_NORMAL)] == NEG
    assert got[(_bits(2.0**-63), _bits(2.0**-63))] == MIN_NORMAL
    assert got[(MAX, _bits(2.0))] == INF
    assert got[(MAX, _bits(-1.0))] == MAX | NEG
    assert got[(0x807F_FFFF, _bits(3.0))] == NEG
    assert got[(0x807F_FFFF, INF)] == NAN
    assert got[(INF, _bits(-2.0))] == INF | NEG
    assert got[(_bits(1.0 + 2.0**-23), _bits(1.5))] == _bits(1.5 + 2.0**-22)


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 2, 3, 4, 7])
def test_corner_cases_match_numerics(
    latency: int, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    got = run_pipeline(FP32Multiplier(latency), CORNERS)
    assert_same_bits(CORNERS, got, _reference(CORNERS))


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 2, 3])
@BATCH
@given(pairs=PAIRS, idle=st.sampled_from([0.0, 0.3]))
def test_random_operands_match_numerics(
    latency: int,
    pairs: Pairs,
    idle: float,
    run_pipeline: Callable[..., list[int]],
    assert_same_bits: Any,
) -> None:
    got = run_pipeline(FP32Multiplier(latency), pairs, idle_fraction=idle, seed=len(pairs))
    assert_same_bits(pairs, got, _reference(pairs))


def _underflow_pairs(seed: int, count: int) -> Pairs:
    """Pairs whose product lies within a few ulps of 2**-126, mostly just below it.

    With ``ea + eb = 127`` the product is ``sa * sb * 2**-127``; choosing ``sb`` next to
    ``2 / sa`` puts the significand product next to 2, i.e. the product next to 2**-126.
    """
    rng = np.random.default_rng(seed)
    fraction_a = rng.integers(0, 1 << 23, size=count)
    significand_b = 2.0 / (1.0 + fraction_a / 2.0**23)
    fraction_b = np.floor((significand_b - 1.0) * 2.0**23).astype(np.int64)
    fraction_b = np.clip(fraction_b + rng.integers(-1, 2, size=count), 0, (1 << 23) - 1)
    exponent_a = rng.integers(1, 127, size=count)
    exponent_b = 127 - exponent_a + rng.choice([-1, 0, 0, 0, 1], size=count)
    sign_a = rng.integers(0, 2, size=count) << 31
    sign_b = rng.integers(0, 2, size=count) << 31
    a = sign_a | (exponent_a << 23) | fraction_a
    b = sign_b | (exponent_b << 23) | fraction_b
    return [(int(x), int(y)) for x, y in zip(a, b, strict=True)]


@pytest.mark.sim
def test_underflow_boundary_matches_numerics(
    run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    pairs = _underflow_pairs(1, 3000)
    want = _reference(pairs)
    kept = sum(1 for w in want if w & 0x7FFF_FFFF == MIN_NORMAL)
    assert kept > 20, "the generator should produce products that round up to 2**-126"
    assert_same_bits(pairs, run_pipeline(FP32Multiplier(3), pairs), want)


@pytest.mark.sim
@pytest.mark.parametrize("latency", [1, 2, 3, 4, 5, 6, 8, 16])
def test_back_to_back_operations(
    latency: int, run_pipeline: Callable[..., list[int]], assert_same_bits: Any
) -> None:
    """One operation per cycle, no bubble, at every latency: throughput and exact latency."""
    rng = np.random.default_rng(latency)
    raw = rng.integers(0, 1 << 32, size=(2000, 2), dtype=np.uint64)
    pairs = [(int(a), int(b)) for a, b in raw]
    assert_same_bits(pairs, run_pipeline(FP32Multiplier(latency), pairs), _reference(pairs))


def test_rejects_bad_latency() -> None:
    # The half-built components are never elaborated; line 1 silences Amaranth's warning.
    with pytest.raises(ValueError, match="at least 1"):
        FP32Multiplier(0)
    with pytest.raises(TypeError, match="integer"):
        FP32Multiplier(2.0)  # type: ignore[arg-type]


@pytest.mark.sim
@pytest.mark.parametrize("latency", [3, 4])
def test_converts_to_verilog(latency: int) -> None:
    multiplier = FP32Multiplier(latency)
    assert multiplier.latency_cycles == latency
    text = verilog.convert(multiplier, name="fp32_mul")
    assert "module fp32_mul" in text
    assert "o__result" in text
