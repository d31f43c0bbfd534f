"""Tests of the numerics contract, nmsat.hw.numerics.

The vectorised functions are checked against an independent scalar reference written with
Python floats (binary64) and ``struct``: a binary32 sum or product computed in binary64 and
rounded once to binary32 is correctly rounded, because 53 >= 2 * 24 + 2 (Figueroa, 1995), so
the reference needs no numpy arithmetic. Comparisons are on bit patterns.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.errors import ShapeError

F16 = np.float16
F32 = np.float32

# Per-test example budgets keep the whole file well under 20 s; determinism for CI comes from
# the profile registered in tests/conftest.py, if any.
FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------------------------
# Independent scalar reference (Python floats)


def _round32(x: float) -> float:
    """Round a binary64 value to binary32: RNE, gradual underflow, overflow to infinity."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _round16(x: float) -> float:
    """Round a binary64 value to binary16: RNE, gradual underflow, overflow to infinity."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return float(struct.unpack("<e", struct.pack("<e", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _flush(x: float, min_normal: float) -> float:
    """Replace a subnormal (below ``min_normal`` in magnitude) by a zero of the same sign."""
    return math.copysign(0.0, x) if 0.0 < abs(x) < min_normal else x


def _ref32(x: float) -> float:
    return _flush(_round32(x), 2.0**-126)


def _ref_add(a: float, b: float) -> float:
    return _ref32(_flush(a, 2.0**-126) + _flush(b, 2.0**-126))


def _ref_sub(a: float, b: float) -> float:
    return _ref32(_flush(a, 2.0**-126) - _flush(b, 2.0**-126))


def _ref_mul(a: float, b: float) -> float:
    return _ref32(_flush(a, 2.0**-126) * _flush(b, 2.0**-126))


def _ref_mul16(a: float, b: float) -> float:
    """FP16 x FP16 product: DAZ, then the exact binary64 product (22 significant bits)."""
    return _flush(a, 2.0**-14) * _flush(b, 2.0**-14)


def _ref_to_fp16(x32: float) -> float:
    return _flush(_round16(_flush(x32, 2.0**-126)), 2.0**-14)


def _ref_bits32(x: float) -> int:
    if math.isnan(x):
        return nx.FP32_CANONICAL_NAN_BITS
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def _ref_bits16(x: float) -> int:
    if math.isnan(x):
        return nx.FP16_CANONICAL_NAN_BITS
    return int(struct.unpack("<H", struct.pack("<e", x))[0])


def _ref_gemm(a: NDArray[np.float16], b: NDArray[np.float16], c: Any) -> list[list[int]]:
    """The contract loop, one element at a time, as bit patterns."""
    rows, K = a.shape
    cols = b.shape[1]
    out = []
    for i in range(rows):
        row = []
        for j in range(cols):
            acc = 0.0 if c is None else _flush(float(c[i, j]), 2.0**-126)
            for k in range(K):
                acc = _ref_add(acc, _ref_mul16(float(a[i, k]), float(b[k, j])))
            row.append(_ref_bits32(acc))
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# Helpers and strategies


def f32(*values: float) -> NDArray[np.float32]:
    return np.array(values, dtype=F32)


def f16(*values: float) -> NDArray[np.float16]:
    return np.array(values, dtype=F16)


def bits32(x: NDArray[np.float32]) -> list[int]:
    return [int(v) for v in nx.fp32_bits(x).ravel()]


def bits16(x: NDArray[np.float16]) -> list[int]:
    return [int(v) for v in nx.fp16_bits(x).ravel()]


def from_bits32(*patterns: int) -> NDArray[np.float32]:
    return nx.fp32_from_bits(np.array(patterns, dtype=np.uint32))


POS_ZERO32 = 0x0000_0000
NEG_ZERO32 = 0x8000_0000
TINY32 = 2.0**-126
SUB32 = float(from_bits32(0x0000_0001)[0])  # 2**-149, the smallest FP32 subnormal

# Any float32, with subnormals, infinities and NaNs (hypothesis prefers edge cases), or any
# bit pattern (NaN payloads, both signs).
ANY32 = st.one_of(
    st.floats(width=32),
    st.integers(0, 2**32 - 1).map(lambda b: float(from_bits32(b)[0])),
)
ANY16 = st.floats(width=16)
FINITE16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
FINITE32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _wide_fp16(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float16]:
    """Finite FP16 values over the whole exponent range (subnormals and both zeros included)."""
    patterns = rng.integers(0, 2**16, size=shape, dtype=np.uint16)
    patterns[(patterns & 0x7C00) == 0x7C00] &= 0xBFFF  # Inf/NaN -> a finite pattern
    return nx.fp16_from_bits(patterns)


# ----------------------------------------------------------------------------------------------
# Rounding: ties to even


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1.0, 2.0**-24, 1.0),  # tie, 1.0 is even
        (1.0 + 2.0**-23, 2.0**-24, 1.0 + 2.0**-22),  # tie, rounds up to the even neighbour
        (-1.0, -(2.0**-24), -1.0),
        (2.0**24, 1.0, 2.0**24),
        (2.0**24 + 2.0, 1.0, 2.0**24 + 4.0),
        (1.0, 2.0**-24 + 2.0**-47, 1.0 + 2.0**-23),  # just above the tie
    ],
)
def test_fp32_add_ties_to_even(a: float, b: float, expected: float) -> None:
    assert bits32(nx.fp32_add(f32(a), f32(b))) == bits32(f32(expected))
    assert bits32(nx.fp32_add(f32(b), f32(a))) == bits32(f32(expected))


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (1.0 + 2.0**-11, 1.0),  # tie, 1.0 is even
        (1.0 + 3 * 2.0**-11, 1.0 + 2.0**-9),  # tie, rounds up to the even neighbour
        (-(1.0 + 2.0**-11), -1.0),
        (2049.0, 2048.0),
        (2051.0, 2052.0),
        (65519.0, 65504.0),  # below the tie with Inf
        (65520.0, math.inf),  # the tie between 65504 (odd) and 2**16 (Inf): overflow
        (-65520.0, -math.inf),
    ],
)
def test_to_fp16_ties_to_even(x: float, expected: float) -> None:
    assert bits16(nx.to_fp16(f32(x))) == bits16(f16(expected))


# ----------------------------------------------------------------------------------------------
# Subnormals: DAZ and FTZ


@pytest.mark.parametrize(
    ("x", "expected_bits"),
    [
        (2.0**-14 - 2.0**-25, 0x0400),  # tie below 2**-14 rounds to the even 2**-14: kept
        (-(2.0**-14 - 2.0**-25), 0x8400),
        (2.0**-14 - 2.0**-26, 0x0400),  # rounds up into the normal range
        (2.0**-14 - 3 * 2.0**-26, 0x0000),  # rounds to the subnormal 2**-14 - 2**-24: flushed
        (2.0**-15, 0x0000),  # subnormal in FP16: +0
        (-(2.0**-15), 0x8000),  # -0
        (2.0**-24, 0x0000),
        (2.0**-14, 0x0400),
        (SUB32, 0x0000),  # FP32 subnormal input (DAZ)
        (-SUB32, 0x8000),
    ],
)
def test_to_fp16_flushes_after_rounding(x: float, expected_bits: int) -> None:
    assert bits16(nx.to_fp16(f32(x))) == [expected_bits]


def test_to_fp16_rounds_float64_to_fp32_first() -> None:
    x = 1.0 + 2.0**-11 + 2.0**-40  # FP32 rounds it to the tie 1 + 2**-11, which FP16 rounds to 1
    assert float(np.float64(x).astype(F16)) == 1.0 + 2.0**-10  # a direct cast rounds up
    assert bits16(nx.to_fp16(np.array([x]))) == bits16(f16(1.0))
    assert bits16(nx.to_fp16(x)) == bits16(f16(1.0))


@pytest.mark.parametrize(
    ("op", "a", "b", "expected_bits"),
    [
        (nx.fp32_add, 1.5 * TINY32, -TINY32, POS_ZERO32),  # exact 2**-127: subnormal -> +0
        (nx.fp32_add, -1.5 * TINY32, TINY32, NEG_ZERO32),  # -2**-127 -> -0
        (nx.fp32_sub, 1.5 * TINY32, TINY32, POS_ZERO32),
        (nx.fp32_sub, TINY32, 1.5 * TINY32, NEG_ZERO32),
        (nx.fp32_add, TINY32, -TINY32, POS_ZERO32),  # exact zero: +0 under RNE
        (nx.fp32_mul, 2.0**-70, 2.0**-60, POS_ZERO32),  # 2**-130 -> +0
        (nx.fp32_mul, -(2.0**-70), 2.0**-60, NEG_ZERO32),
        (nx.fp32_mul, 1.0 - 2.0**-24, TINY32, 0x0080_0000),  # rounds up to 2**-126: kept
    ],
)
def test_subnormal_results_flush_to_signed_zero(
    op: Callable[[Any, Any], NDArray[np.float32]], a: float, b: float, expected_bits: int
) -> None:
    assert bits32(op(f32(a), f32(b))) == [expected_bits]


@pytest.mark.parametrize(
    ("op", "a", "b", "expected_bits"),
    [
        (nx.fp32_add, SUB32, TINY32, 0x0080_0000),  # IEEE would give 0x00800001
        (nx.fp32_add, SUB32, 0.0, POS_ZERO32),
        (nx.fp32_add, -SUB32, -0.0, NEG_ZERO32),  # -0 + -0
        (nx.fp32_add, -SUB32, 0.0, POS_ZERO32),  # -0 + +0
        (nx.fp32_sub, 1.0, SUB32, 0x3F80_0000),
        (nx.fp32_mul, 2.0**-130, 2.0**100, POS_ZERO32),  # IEEE would give 2**-30
        (nx.fp32_mul, -(2.0**-130), 2.0**100, NEG_ZERO32),
        (nx.fp32_mul, 2.0**-149, math.inf, nx.FP32_CANONICAL_NAN_BITS),  # 0 * inf
    ],
)
def test_subnormal_inputs_count_as_signed_zero(
    op: Callable[[Any, Any], NDArray[np.float32]], a: float, b: float, expected_bits: int
) -> None:
    assert bits32(op(f32(a), f32(b))) == [expected_bits]


def test_fp16_subnormal_operands_count_as_signed_zero() -> None:
    assert bits32(nx.fp16_mul_fp32(f16(2.0**-24), f16(1024.0))) == [POS_ZERO32]  # not 2**-14
    assert bits32(nx.fp16_mul_fp32(f16(-(2.0**-15)), f16(1.0))) == [NEG_ZERO32]
    assert bits32(nx.fp16_mul_fp32(f16(2.0**-14), f16(2.0**-14))) == bits32(f32(2.0**-28))
    assert bits32(nx.to_fp32(f16(2.0**-20))) == [POS_ZERO32]


# ----------------------------------------------------------------------------------------------
# Overflow and NaN


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        (nx.fp32_add, nx.FP32_MAX, nx.FP32_MAX, math.inf),
        (nx.fp32_add, nx.FP32_MAX, 2.0**103, math.inf),  # tie with 2**128; FP32_MAX is odd
        (nx.fp32_add, nx.FP32_MAX, 2.0**102, nx.FP32_MAX),
        (nx.fp32_sub, -nx.FP32_MAX, nx.FP32_MAX, -math.inf),
        (nx.fp32_mul, 2.0**100, -(2.0**100), -math.inf),
        (nx.fp32_add, math.inf, 1.0, math.inf),
    ],
)
def test_overflow_rounds_to_infinity(
    op: Callable[[Any, Any], NDArray[np.float32]], a: float, b: float, expected: float
) -> None:
    assert bits32(op(f32(a), f32(b))) == bits32(f32(expected))


def test_conversions_overflow_to_infinity() -> None:
    assert bits32(nx.to_fp32(np.array([1e39, -1e300]))) == bits32(f32(math.inf, -math.inf))
    assert bits16(nx.to_fp16(f32(1e6, -7e4))) == bits16(f16(math.inf, -math.inf))


NAN32_ODD = (0xFFC0_0000, 0x7F80_0001, 0xFFFF_FFFF, 0x7FC0_1234)  # x86 default NaN, sNaN, ...


@pytest.mark.parametrize("pattern", NAN32_ODD)
def test_nan_inputs_give_canonical_nan(pattern: int) -> None:
    nan = from_bits32(pattern)
    canonical = [nx.FP32_CANONICAL_NAN_BITS]
    assert bits32(nx.fp32_add(nan, f32(1.0))) == canonical
    assert bits32(nx.fp32_sub(f32(1.0), nan)) == canonical
    assert bits32(nx.fp32_mul(nan, f32(0.0))) == canonical
    assert bits32(nx.to_fp32(nan)) == canonical
    assert bits32(nx.relu(nan)) == canonical
    assert bits16(nx.to_fp16(nan)) == [nx.FP16_CANONICAL_NAN_BITS]


def test_invalid_operations_give_canonical_nan() -> None:
    inf = f32(math.inf)
    canonical = [nx.FP32_CANONICAL_NAN_BITS]
    assert bits32(nx.fp32_add(inf, -inf)) == canonical  # numpy on x86 gives 0xFFC00000
    assert bits32(nx.fp32_sub(inf, inf)) == canonical
    assert bits32(nx.fp32_mul(f32(0.0), inf)) == canonical
    assert bits32(nx.fp32_mul(f32(-0.0), -inf)) == canonical
    assert bits32(nx.fp16_mul_fp32(f16(0.0), f16(-math.inf))) == canonical
    assert bits32(nx.fp16_mul_fp32(nx.fp16_from_bits(np.uint16(0xFE01)), f16(1.0))) == canonical
    assert bits16(nx.to_fp16(np.array([math.nan]))) == [nx.FP16_CANONICAL_NAN_BITS]
    assert bits16(nx.to_fp16(nx.fp16_from_bits(np.uint16(0xFE01)))) == [0x7E00]


# ----------------------------------------------------------------------------------------------
# Element-wise operations against the scalar reference


@FAST
@given(st.lists(st.tuples(ANY32, ANY32), min_size=1, max_size=16))
def test_fp32_ops_match_scalar_reference(pairs: list[tuple[float, float]]) -> None:
    a = np.array([p[0] for p in pairs], dtype=F32)
    b = np.array([p[1] for p in pairs], dtype=F32)
    for op, ref in ((nx.fp32_add, _ref_add), (nx.fp32_sub, _ref_sub), (nx.fp32_mul, _ref_mul)):
        expected = [_ref_bits32(ref(float(x), float(y))) for x, y in zip(a, b, strict=True)]
        assert bits32(op(a, b)) == expected, op.__name__


@FAST
@given(st.lists(ANY32, min_size=1, max_size=16))
def test_to_fp16_matches_scalar_reference(values: list[float]) -> None:
    x = np.array(values, dtype=F32)
    assert bits16(nx.to_fp16(x)) == [_ref_bits16(_ref_to_fp16(float(v))) for v in x]


def test_to_fp16_matches_reference_across_the_fp16_range() -> None:
    rng = np.random.default_rng(16)
    patterns = rng.integers(0, 2**32, size=100_000, dtype=np.uint32)
    # biased exponents 96..150 cover 2**-31 .. 2**23: FP16 subnormals, normals and overflow
    exponent = rng.integers(96, 151, size=patterns.size, dtype=np.uint32)
    patterns = (patterns & np.uint32(0x807F_FFFF)) | (exponent << np.uint32(23))
    x = nx.fp32_from_bits(patterns)
    expected = [_ref_bits16(_ref_to_fp16(v)) for v in x.tolist()]
    assert bits16(nx.to_fp16(x)) == expected


@FAST
@given(st.lists(st.one_of(st.floats(), st.floats(width=32)), min_size=1, max_size=16))
def test_to_fp32_matches_scalar_reference(values: list[float]) -> None:
    assert bits32(nx.to_fp32(np.array(values))) == [_ref_bits32(_ref32(v)) for v in values]


# ----------------------------------------------------------------------------------------------
# Exact FP16 products


@FAST
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1))
def test_fp16_products_are_exact(a_bits: int, b_bits: int) -> None:
    a = nx.fp16_from_bits(np.uint16(a_bits))
    b = nx.fp16_from_bits(np.uint16(b_bits))
    exact = _ref_mul16(float(a), float(b))  # binary64 holds the 22-bit product exactly
    got = nx.fp16_mul_fp32(a, b)
    assert bits32(got) == [_ref_bits32(exact)]
    if not math.isnan(exact):
        assert float(got) == exact
        assert exact == 0.0 or math.isinf(exact) or 2.0**-28 <= abs(exact) < 2.0**32


def _daz16_exact(x: NDArray[np.float16]) -> NDArray[np.float64]:
    """FP16 values as float64, subnormals replaced by zeros of the same sign."""
    x64 = x.astype(np.float64)
    return np.where(nx.is_subnormal(x), np.copysign(0.0, x64), x64)


def test_fp16_products_are_exact_for_every_fp16_value() -> None:
    every = nx.fp16_from_bits(np.arange(2**16, dtype=np.uint16))
    every = every[np.isfinite(every)]
    partners = np.concatenate(
        [_wide_fp16(np.random.default_rng(7), (48,)), f16(nx.FP16_MAX, -nx.FP16_MAX, -0.0)]
    )
    got = nx.fp16_mul_fp32(every[:, None], partners[None, :])
    exact = _daz16_exact(every)[:, None] * _daz16_exact(partners)[None, :]
    assert np.array_equal(got.astype(np.float64), exact)
    assert np.array_equal(np.signbit(got), np.signbit(exact))


# ----------------------------------------------------------------------------------------------
# GEMM accumulation order


@st.composite
def gemm_cases(
    draw: st.DrawFn,
) -> tuple[NDArray[np.float16], NDArray[np.float16], NDArray[np.float32] | None]:
    rows, K, cols = draw(st.integers(1, 4)), draw(st.integers(0, 9)), draw(st.integers(1, 4))
    a = draw(hnp.arrays(F16, (rows, K), elements=ANY16))
    b = draw(hnp.arrays(F16, (K, cols), elements=ANY16))
    c = draw(st.none() | hnp.arrays(F32, (rows, cols), elements=st.floats(width=32)))
    return a, b, c


@FAST
@given(gemm_cases())
def test_gemm_matches_scalar_loop(
    case: tuple[NDArray[np.float16], NDArray[np.float16], NDArray[np.float32] | None],
) -> None:
    a, b, c = case
    got = nx.gemm(a, b, c)
    assert got.dtype == F32
    assert nx.fp32_bits(got).tolist() == _ref_gemm(a, b, c)


@pytest.mark.parametrize("seed", range(6))
def test_gemm_matches_scalar_loop_on_long_reductions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scale = 2.0 ** rng.integers(-12, 12, size=(3, 40))  # wide range: rounding in every add
    a = (rng.standard_normal((3, 40)) * scale).astype(F16)
    b = rng.standard_normal((40, 2)).astype(F16)
    c = rng.standard_normal((3, 2)).astype(F32) if seed % 2 else None
    assert nx.fp32_bits(nx.gemm(a, b, c)).tolist() == _ref_gemm(a, b, c)


def test_gemm_adds_in_increasing_k() -> None:
    tiny = 2.0**-12  # tiny * tiny = 2**-24, half an ulp of 1.0
    a = f16(1.0, tiny, tiny).reshape(1, 3)
    b = f16(1.0, tiny, tiny).reshape(3, 1)
    # (1 + 2**-24) + 2**-24: two ties to even, 1.0; the reverse order or a wider adder gives
    # 1 + 2**-23.
    assert bits32(nx.gemm(a, b)) == bits32(f32(1.0))
    assert bits32(nx.gemm(a[:, ::-1], b[::-1, :])) == bits32(f32(1.0 + 2.0**-23))


@SLOW
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 48), max_size=4),
    st.booleans(),
)
def test_gemm_chunked_k_equals_full(seed: int, cuts: list[int], with_c: bool) -> None:
    rng = np.random.default_rng(seed)
    scale = 2.0 ** rng.integers(-10, 10, size=(5, 48))
    a = (rng.standard_normal((5, 48)) * scale).astype(F16)
    b = rng.standard_normal((48, 4)).astype(F16)
    c = rng.standard_normal((5, 4)).astype(F32) if with_c else None
    full = nx.gemm(a, b, c)
    acc = c
    bounds = [0, *sorted(cuts), 48]
    for start, stop in itertools.pairwise(bounds):
        acc = nx.gemm(a[:, start:stop], b[start:stop, :], acc)
    assert acc is not None
    assert np.array_equal(nx.fp32_bits(acc), nx.fp32_bits(full))


def test_gemm_tiling_over_outputs_equals_full() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 20)).astype(F16)
    b = rng.standard_normal((20, 5)).astype(F16)
    tiled = np.block([[nx.gemm(a[i : i + 4], b[:, j : j + 2]) for j in (0, 2, 4)] for i in (0, 4)])
    assert np.array_equal(nx.fp32_bits(tiled), nx.fp32_bits(nx.gemm(a, b)))


def test_gemm_flushes_c_before_adding() -> None:
    a = f16(0.0).reshape(1, 1)
    b = f16(1.0).reshape(1, 1)
    c = from_bits32(0x8000_0001).reshape(1, 1)  # -2**-149: DAZ makes it -0; -0 + +0 = +0
    assert bits32(nx.gemm(a, b, c)) == [POS_ZERO32]


@FAST
@given(gemm_cases())
def test_gemm_accumulator_is_never_subnormal(
    case: tuple[NDArray[np.float16], NDArray[np.float16], NDArray[np.float32] | None],
) -> None:
    # docs/numerics.md: after the flushed start, FTZ never fires inside a GEMM, so plain
    # gradual-underflow float32 adds give the same bits.
    a, b, c = case
    acc = np.zeros((a.shape[0], b.shape[1]), F32) if c is None else nx.to_fp32(c)
    with np.errstate(all="ignore"):
        for k in range(a.shape[1]):
            acc = acc + nx.fp16_mul_fp32(a[:, k, None], b[None, k, :])
            assert not nx.is_subnormal(acc).any()
    assert np.array_equal(nx.fp32_bits(nx.to_fp32(acc)), nx.fp32_bits(nx.gemm(a, b, c)))


def test_gemm_leaves_its_inputs_unchanged() -> None:
    a = f16(1.0, 2.0).reshape(1, 2)
    b = f16(3.0, 4.0).reshape(2, 1)
    c = f32(float(from_bits32(0x0000_0001)[0])).reshape(1, 1)  # subnormal: flushed in the copy
    assert bits32(nx.gemm(a, b, c)) == bits32(f32(11.0))
    assert bits32(c) == [0x0000_0001]


def test_gemm_with_empty_k_returns_the_flushed_accumulators() -> None:
    a = np.zeros((2, 0), dtype=F16)
    b = np.zeros((0, 3), dtype=F16)
    assert bits32(nx.gemm(a, b)) == [POS_ZERO32] * 6
    c = from_bits32(0x8000_0001, 0x3F80_0000, 0xFFC0_0000, 0, 1, 2).reshape(2, 3)
    expected = [NEG_ZERO32, 0x3F80_0000, nx.FP32_CANONICAL_NAN_BITS, 0, 0, 0]
    assert bits32(nx.gemm(a, b, c)) == expected


# ----------------------------------------------------------------------------------------------
# N:M compressed GEMM


NM_PATTERNS = [(n, m) for m in nx.NM_GROUP_SIZES for n in range(1, m + 1)]


def _compress(
    rng: np.random.Generator, dense: NDArray[np.float16], n: int, m: int
) -> tuple[NDArray[np.float16], NDArray[np.uint8], NDArray[np.float16]]:
    """Pick n random positions per group; return values, indices and the masked dense matrix."""
    rows, K = dense.shape
    groups = K // m
    keys = rng.random((rows, groups, m))
    kept = np.sort(np.argsort(keys, axis=2)[:, :, :n], axis=2).astype(np.uint8)
    indices = kept.reshape(rows, groups * n)
    cols = (np.arange(groups * n) // n) * m + indices.astype(np.intp)
    values = np.take_along_axis(dense, cols, axis=1)
    masked = np.zeros_like(dense)
    np.put_along_axis(masked, cols, values, axis=1)
    return values, indices, masked


@SLOW
@given(
    st.sampled_from(NM_PATTERNS),
    st.integers(1, 5),
    st.integers(0, 4),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_gemm_nm_equals_dense_gemm_of_masked_matrix(
    nm: tuple[int, int], rows: int, groups: int, cols: int, seed: int, with_c: bool
) -> None:
    n, m = nm
    rng = np.random.default_rng(seed)
    K = groups * m
    values, indices, masked = _compress(rng, _wide_fp16(rng, (rows, K)), n, m)
    b = _wide_fp16(rng, (K, cols))
    c = None
    if with_c:
        c = rng.standard_normal((rows, cols)).astype(F32)
        c[0, 0] = 0.0  # a +0 start; -0 starts are outside the equivalence
    got = nx.gemm_nm(values, indices, n, m, b, c)
    assert np.array_equal(nx.fp32_bits(got), nx.fp32_bits(nx.gemm(masked, b, c)))


def test_gemm_nm_matches_scalar_loop() -> None:
    rng = np.random.default_rng(11)
    values, indices, masked = _compress(rng, rng.standard_normal((4, 32)).astype(F16), 2, 8)
    b = rng.standard_normal((32, 3)).astype(F16)
    assert nx.fp32_bits(nx.gemm_nm(values, indices, 2, 8, b)).tolist() == _ref_gemm(masked, b, None)


def test_gemm_nm_skips_pruned_positions() -> None:
    values = f16(2.0).reshape(1, 1)
    indices = np.array([[1]], dtype=np.uint8)  # 1:2, keeps k = 1; k = 0 is pruned
    b = f16(math.inf, 3.0).reshape(2, 1)
    assert bits32(nx.gemm_nm(values, indices, 1, 2, b)) == bits32(f32(6.0))
    masked = f16(0.0, 2.0).reshape(1, 2)
    assert bits32(nx.gemm(masked, b)) == [nx.FP32_CANONICAL_NAN_BITS]  # 0 * inf in dense
    # A -0 accumulator survives a skipped position but not a dense +0 product (-0 + +0 = +0).
    c = f32(-0.0).reshape(1, 1)
    neg_zero_value = f16(-0.0).reshape(1, 1)
    finite_b = f16(1.0, 3.0).reshape(2, 1)
    assert bits32(nx.gemm_nm(neg_zero_value, indices, 1, 2, finite_b, c)) == [NEG_ZERO32]
    assert bits32(nx.gemm(f16(0.0, -0.0).reshape(1, 2), finite_b, c)) == [POS_ZERO32]


def test_nm_columns_maps_compressed_positions() -> None:
    indices = np.array([[0, 3, 1, 2], [2, 3, 0, 1]], dtype=np.uint8)
    expected = [[0, 3, 5, 6], [2, 3, 4, 5]]
    assert nx.nm_columns(indices, 2, 4).tolist() == expected


# ----------------------------------------------------------------------------------------------
# WUVE: optimizer step and element-wise operations


def _ref_sgd(
    w: float, g: float, v: float, kept: bool, hyper: tuple[float, float, float, float]
) -> tuple[float, float]:
    lr, momentum, decay, lam = (_ref32(h) for h in hyper)
    g1 = _ref_add(g, _ref_mul(decay, w))
    g2 = g1 if kept else _ref_add(g1, _ref_mul(lam, w))
    v_new = _ref_add(_ref_mul(momentum, v), g2)
    return _ref_sub(w, _ref_mul(lr, v_new)), v_new


@FAST
@given(
    st.lists(st.tuples(ANY32, ANY32, ANY32, st.booleans()), min_size=1, max_size=8),
    st.tuples(
        st.floats(0.0, 1.0),
        st.floats(0.0, 1.0),
        st.floats(0.0, 0.1),
        st.floats(0.0, 0.01),
    ),
)
def test_sgd_update_matches_scalar_reference(
    elements: list[tuple[float, float, float, bool]],
    hyper: tuple[float, float, float, float],
) -> None:
    w, g, v = (np.array([e[k] for e in elements], dtype=F32) for k in range(3))
    mask = np.array([e[3] for e in elements], dtype=np.bool_)
    w_new, v_new = nx.sgd_update(w, g, v, mask, *hyper)
    expected = [
        _ref_sgd(float(wi), float(gi), float(vi), bool(ki), hyper)
        for wi, gi, vi, ki in zip(w, g, v, mask, strict=True)
    ]
    assert bits32(w_new) == [_ref_bits32(e[0]) for e in expected]
    assert bits32(v_new) == [_ref_bits32(e[1]) for e in expected]


def test_sgd_update_never_fuses_multiply_add() -> None:
    one_ulp = 1.0 + 2.0**-23
    w, g, v = f32(5.0), f32(-(1.0 + 2.0**-22)), f32(one_ulp)
    # momentum * v = 1 + 2**-22 + 2**-46 rounds to 1 + 2**-22, so v_new = +0; a fused
    # multiply-add would keep 2**-46.
    w_new, v_new = nx.sgd_update(w, g, v, np.array([True]), 0.5, one_ulp, 0.0, 0.0)
    assert bits32(v_new) == [POS_ZERO32]
    assert bits32(w_new) == bits32(f32(5.0))


def test_sgd_update_applies_srste_only_to_pruned_weights() -> None:
    w = f32(2.0, 2.0)
    g = f32(1.0, 1.0)
    v = f32(0.0, 0.0)
    w_new, v_new = nx.sgd_update(w, g, v, np.array([True, False]), 0.5, 0.9, 0.25, 0.5)
    # kept: g2 = 1 + 0.25 * 2 = 1.5; pruned: g2 = 1.5 + 0.5 * 2 = 2.5; v_new = g2
    assert bits32(v_new) == bits32(f32(1.5, 2.5))
    assert bits32(w_new) == bits32(f32(2.0 - 0.75, 2.0 - 1.25))
    assert bits32(w) == bits32(f32(2.0, 2.0))  # inputs unchanged


def test_sgd_update_rounds_scalars_to_fp32_first() -> None:
    w, g, v = f32(1.0), f32(1.0), f32(0.0)
    w_new, _ = nx.sgd_update(w, g, v, np.array([True]), 0.1, 0.0, 0.0, 0.0)
    assert bits32(w_new) == bits32(f32(1.0) - f32(0.1))  # the FP32 0.1, not the float64 one


def test_relu() -> None:
    x = np.concatenate([f32(-1.0, -0.0, 0.0, 2.0, -math.inf, math.inf), from_bits32(1, 0xFFC00000)])
    expected = [0, 0, 0, 0x4000_0000, 0, 0x7F80_0000, 0, nx.FP32_CANONICAL_NAN_BITS]
    assert bits32(nx.relu(x)) == expected


def test_relu_grad() -> None:
    dy = np.concatenate([f32(3.0, -3.0, 3.0, 3.0, -3.0), from_bits32(0xFFC0_0000, 0x8000_0001)])
    y = f32(1.0, 2.0, 0.0, -0.0, -1.0, 5.0, 5.0)
    y_special = np.concatenate([f32(math.nan), from_bits32(0x0000_0001)])
    expected = [0x4040_0000, 0xC040_0000, 0, 0, 0, nx.FP32_CANONICAL_NAN_BITS, NEG_ZERO32]
    assert bits32(nx.relu_grad(dy, y)) == expected
    assert bits32(nx.relu_grad(f32(3.0, 3.0), y_special)) == [0, 0]  # NaN and subnormal y
    assert bits32(nx.relu_grad(f32(3.0, 4.0)[:, None], f32(1.0, -1.0))) == [
        0x4040_0000,
        0,
        0x4080_0000,
        0,
    ]


def test_vec_ops_are_the_fp32_ops() -> None:
    a = from_bits32(0x3F80_0001, 0x0000_0001, 0x7F7F_FFFF)
    b = f32(2.0**-24, 1.0, 2.0)
    assert bits32(nx.vec_add(a, b)) == bits32(nx.fp32_add(a, b))
    assert bits32(nx.vec_scale(a, 0.1)) == bits32(nx.fp32_mul(f32(0.1), a))
    assert bits32(nx.vec_scale(a, 2.0)) == [0x4000_0001, 0, 0x7F80_0000]


def test_fp32_ops_broadcast() -> None:
    got = nx.fp32_add(f32(1.0, 2.0, 3.0)[:, None], f32(10.0, 20.0)[None, :])
    assert got.shape == (3, 2)
    assert bits32(got) == bits32(f32(11.0, 21.0, 12.0, 22.0, 13.0, 23.0))
    assert nx.fp32_mul(np.float32(3.0), 2.0).shape == ()


# ----------------------------------------------------------------------------------------------
# Bit helpers and classification


def test_bit_helpers_round_trip() -> None:
    patterns32 = np.array([0, 1, 0x7F7F_FFFF, 0xFFC0_0001, 0x8000_0000], dtype=np.uint32)
    assert np.array_equal(nx.fp32_bits(nx.fp32_from_bits(patterns32)), patterns32)
    patterns16 = np.arange(2**16, dtype=np.uint16)
    assert np.array_equal(nx.fp16_bits(nx.fp16_from_bits(patterns16)), patterns16)
    assert bits32(nx.fp32_from_bits([nx.FP32_CANONICAL_NAN_BITS])) == [0x7FC0_0000]
    with pytest.raises(ValueError, match="out of range"):
        nx.fp16_from_bits([2**16])
    with pytest.raises(TypeError, match="integer"):
        nx.fp32_from_bits([1.0])


def test_is_subnormal() -> None:
    x32 = from_bits32(0, 0x8000_0000, 1, 0x807F_FFFF, 0x0080_0000, 0x7F80_0000, 0x7FC0_0000)
    assert nx.is_subnormal(x32).tolist() == [False, False, True, True, False, False, False]
    x16 = f16(0.0, 2.0**-24, -(2.0**-15), 2.0**-14, math.inf)
    assert nx.is_subnormal(x16).tolist() == [False, True, True, False, False]
    with pytest.raises(TypeError, match="dtype"):
        nx.is_subnormal(np.array([1], dtype=np.int32))


# ----------------------------------------------------------------------------------------------
# Errors


def _call(func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: func(*args)


A23 = np.zeros((2, 3), dtype=F16)
B34 = np.zeros((3, 4), dtype=F16)
V22 = np.zeros((2, 2), dtype=F16)
I22 = np.array([[0, 1], [0, 1]], dtype=np.uint8)
B44 = np.zeros((4, 4), dtype=F16)
W3 = np.zeros(3, dtype=F32)
MASK3 = np.ones(3, dtype=np.bool_)


@pytest.mark.parametrize(
    ("thunk", "match"),
    [
        (_call(nx.gemm, A23, np.zeros((4, 4), dtype=F16)), r"a\.shape\[1\] == b\.shape\[0\]"),
        (_call(nx.gemm, np.zeros(3, dtype=F16), B34), "must be 2-D"),
        (_call(nx.gemm, A23, B34, np.zeros((4, 2), dtype=F32)), r"result's shape \(2, 4\)"),
        (_call(nx.gemm_nm, V22, I22, 5, 4, B44), "1 <= n <= m"),
        (_call(nx.gemm_nm, V22, I22, 0, 4, B44), "1 <= n <= m"),
        (_call(nx.gemm_nm, V22, I22, 1, 3, B44), "m = 3 is not supported"),
        (_call(nx.gemm_nm, V22, I22, 1, 32, B44), "m = 32 is not supported"),
        (_call(nx.gemm_nm, V22, I22, 2.0, 4, B44), "not an integer"),
        (_call(nx.gemm_nm, V22, I22, 2, 4, np.zeros((6, 4), dtype=F16)), "multiple of 4"),
        (_call(nx.gemm_nm, V22, I22, 1, 4, B44), "K \\* 1 / 4 columns"),
        (_call(nx.gemm_nm, V22, I22[:1], 2, 4, B44), "must be equal"),
        (_call(nx.gemm_nm, V22, I22 + 3, 2, 4, B44), "index 4 out of range"),
        (_call(nx.gemm_nm, V22, I22[:, ::-1], 2, 4, B44), "not strictly increasing"),
        (_call(nx.gemm_nm, V22, np.zeros((2, 2), np.uint8), 2, 4, B44), "strictly increasing"),
        (_call(nx.nm_columns, np.zeros((2, 3), np.uint8), 2, 4), "multiple of n = 2"),
        (_call(nx.sgd_update, W3, W3[:2], W3, MASK3, 0.1, 0.9, 0.0, 0.0), "equal shapes"),
        (_call(nx.sgd_update, W3, W3, W3, MASK3[:1], 0.1, 0.9, 0.0, 0.0), "equal shapes"),
        (_call(nx.fp32_add, W3, np.zeros(2, dtype=F32)), "do not broadcast"),
        (_call(nx.fp16_mul_fp32, np.zeros(3, F16), np.zeros(2, F16)), "do not broadcast"),
        (_call(nx.relu_grad, W3, np.zeros(2, dtype=F32)), "do not broadcast"),
    ],
)
def test_bad_shapes_raise_shape_error(thunk: Callable[[], Any], match: str) -> None:
    with pytest.raises(ShapeError, match=match) as info:
        thunk()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "thunk",
    [
        _call(nx.gemm, A23.astype(F32), B34),
        _call(nx.gemm, A23, B34, np.zeros((2, 4), dtype=np.float64)),
        _call(nx.gemm_nm, V22, I22.astype(np.int64), 2, 4, B44),
        _call(nx.fp32_add, W3.astype(np.float64), W3),
        _call(nx.fp32_mul, W3, W3.astype(F16)),
        _call(nx.fp32_add, W3, True),
        _call(nx.fp16_mul_fp32, W3, W3),
        _call(nx.sgd_update, W3, W3, W3, MASK3.astype(F32), 0.1, 0.9, 0.0, 0.0),
        _call(nx.relu, W3.astype(np.float64)),
        _call(nx.fp32_bits, W3.astype(F16)),
        _call(nx.fp16_bits, W3),
        _call(nx.to_fp16, np.array(["1.0"])),
    ],
)
def test_wrong_dtypes_raise_type_error(thunk: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match=r"dtype|bool"):
        thunk()
