"""Tests of N:M masks and compression, nmsat.models.nm.

The mask is checked against an independent reference that sorts each group with Python's
``sorted`` by (-|w|, index), the hardware order for values without NaN, and the NaN and
bit-pattern rules separately. Compressed operands are cross-checked against the numerics
contract's :func:`nmsat.hw.numerics.gemm_nm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.nm import (
    check_nm,
    compress,
    decompress,
    magnitude_key,
    nm_applicable,
    nm_mask,
    parse_nm,
)

FAST = settings(max_examples=150, deadline=None)

PATTERNS = [(n, m) for m in (1, 2, 4, 8, 16) for n in range(1, m + 1)]
DTYPES = [np.float16, np.float32, np.float64]


@st.composite
def weights_and_pattern(draw: st.DrawFn, allow_nan: bool = False) -> tuple[Any, ...]:
    """Draw (w, n, m, axis): a 1- to 3-D float array whose ``axis`` divides by ``m``."""
    n, m = draw(st.sampled_from(PATTERNS))
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, 3))
    axis = draw(st.integers(-ndim, ndim - 1))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[axis] = m * draw(st.integers(1, 3))
    # Few distinct values, so ties (and signed zeros) are common.
    elements = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, np.inf, -np.inf])
    if draw(st.booleans()):
        elements = hnp.from_dtype(np.dtype(dtype), allow_nan=allow_nan, allow_subnormal=True)
    w = draw(hnp.arrays(dtype, tuple(shape), elements=elements))
    return w, n, m, axis


def _reference_mask(w: NDArray[Any], n: int, m: int, axis: int) -> NDArray[np.bool_]:
    """Top-n by magnitude per group with Python sorting; ties to the lower index (no NaN)."""
    moved = np.moveaxis(w, axis, -1)
    mask = np.zeros(moved.shape, dtype=bool)
    for index in np.ndindex(moved.shape[:-1]):
        row = moved[index]
        for start in range(0, row.shape[0], m):
            group = [abs(float(v)) for v in row[start : start + m]]
            order = sorted(range(m), key=lambda i, g=group: (-g[i], i))  # type: ignore[misc]
            for i in order[:n]:
                mask[(*index, start + i)] = True
    return np.moveaxis(mask, -1, axis)


@FAST
@given(weights_and_pattern())
def test_mask_keeps_n_per_group_like_the_reference(case: tuple[Any, ...]) -> None:
    w, n, m, axis = case
    mask = nm_mask(w, n, m, axis)
    assert mask.shape == w.shape
    assert mask.dtype == np.bool_
    groups = np.moveaxis(mask, axis, -1).reshape(-1, m)
    assert (groups.sum(axis=1) == n).all()
    np.testing.assert_array_equal(mask, _reference_mask(w, n, m, axis))


@FAST
@given(weights_and_pattern(allow_nan=True))
def test_compress_decompress_round_trip(case: tuple[Any, ...]) -> None:
    w, n, m, axis = case
    values, indices = compress(w, n, m, axis)
    expected_shape = list(w.shape)
    expected_shape[axis] = w.shape[axis] * n // m
    assert values.shape == indices.shape == tuple(expected_shape)
    assert values.dtype == w.dtype
    assert indices.dtype == np.uint8
    idx_groups = np.moveaxis(indices, axis, -1).reshape(-1, n).astype(int)
    assert (idx_groups < m).all()
    assert (np.diff(idx_groups, axis=1) > 0).all()
    dense = decompress(values, indices, n, m, axis)
    expected = np.where(nm_mask(w, n, m, axis), w, np.zeros_like(w))
    # Compare bits: NaN payloads and signed zeros must survive.
    assert dense.dtype == w.dtype
    np.testing.assert_array_equal(magnitude_key(dense), magnitude_key(expected))
    np.testing.assert_array_equal(np.signbit(dense), np.signbit(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_lower_index(dtype: type[np.floating[Any]]) -> None:
    w = np.array([[1.0, -1.0, 1.0, -1.0], [-0.0, 0.0, 0.0, -0.0], [2, 3, 3, 2]], dtype=dtype)
    np.testing.assert_array_equal(
        nm_mask(w, 2, 4, axis=1),
        [[True, True, False, False], [True, True, False, False], [False, True, True, False]],
    )
    np.testing.assert_array_equal(nm_mask(w, 1, 4, axis=1)[0], [True, False, False, False])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_ranks_above_infinity_and_order_is_exact(dtype: type[np.floating[Any]]) -> None:
    big = np.finfo(dtype).max
    w = np.array([[big, -np.inf, np.nan, 1.0]], dtype=dtype)
    np.testing.assert_array_equal(nm_mask(w, 1, 4, axis=1), [[False, False, True, False]])
    np.testing.assert_array_equal(nm_mask(w, 2, 4, axis=1), [[False, True, True, False]])
    one = dtype(1.0)
    above = np.nextafter(one, dtype(2.0))
    w = np.array([one, -above, one, one], dtype=dtype)
    np.testing.assert_array_equal(nm_mask(w, 1, 4, axis=0), [False, True, False, False])


def test_subnormals_rank_by_bits() -> None:
    tiny16 = np.float16(2.0**-14)  # smallest normal FP16
    sub16 = np.nextafter(tiny16, np.float16(0))  # largest subnormal
    w = np.array([sub16, -tiny16, sub16, 0.0], dtype=np.float16)
    np.testing.assert_array_equal(nm_mask(w, 1, 4, axis=0), [False, True, False, False])
    np.testing.assert_array_equal(nm_mask(w, 2, 4, axis=0), [True, True, False, False])


def test_dense_pattern_keeps_everything() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 12) - 7
    for m in (1, 2, 4):
        assert nm_mask(w, m, m, axis=1).all()
        values, indices = compress(w, m, m, axis=1)
        np.testing.assert_array_equal(values, w)
        np.testing.assert_array_equal(indices, np.tile(np.arange(m), 12 // m)[None].repeat(2, 0))


def test_hardware_layouts_ff_and_bp() -> None:
    rng = np.random.default_rng(3)
    c_out, k, n, m = 16, 24, 2, 8
    w = rng.standard_normal((c_out, k)).astype(np.float32)
    ff_values, ff_indices = compress(w, n, m, axis=1)
    assert ff_values.shape == (c_out, k * n // m)
    bp_values, bp_indices = compress(w.T, n, m, axis=1)
    assert bp_values.shape == (k, c_out * n // m)
    axis0_values, axis0_indices = compress(w, n, m, axis=0)
    np.testing.assert_array_equal(bp_values, axis0_values.T)
    np.testing.assert_array_equal(bp_indices, axis0_indices.T)
    # The BP copy expands to W . E_B transposed; E_B groups along C_out.
    np.testing.assert_array_equal(
        decompress(bp_values, bp_indices, n, m, axis=1),
        np.where(nm_mask(w, n, m, axis=0), w, 0).T,
    )
    # Both copies are the operands of the contract's compressed GEMM: same bits as the dense
    # masked operand.
    x = nx.to_fp16(rng.standard_normal((k, 5)))
    dy = nx.to_fp16(rng.standard_normal((c_out, 5)))
    ff = nx.gemm_nm(nx.to_fp16(ff_values), ff_indices, n, m, x)
    ff_dense = nx.gemm(nx.to_fp16(np.where(nm_mask(w, n, m, axis=1), w, 0)), x)
    np.testing.assert_array_equal(nx.fp32_bits(ff), nx.fp32_bits(ff_dense))
    bp = nx.gemm_nm(nx.to_fp16(bp_values), bp_indices, n, m, dy)
    bp_dense = nx.gemm(nx.to_fp16(np.where(nm_mask(w, n, m, axis=0), w, 0).T), dy)
    np.testing.assert_array_equal(nx.fp32_bits(bp), nx.fp32_bits(bp_dense))


@pytest.mark.parametrize(
    ("n", "m", "shape", "axis", "needle"),
    [
        (2, 3, (2, 6), 1, "m = 3"),
        (2, 32, (2, 32), 1, "m = 32"),
        (0, 4, (2, 8), 1, "n = 0"),
        (5, 4, (2, 8), 1, "n = 5"),
        (2, 4, (2, 6), 1, "length 6"),
        (2, 4, (3, 8), 0, "length 3"),
        (2, 4, (2, 8), 2, "axis 2"),
        (2, 4, (2, 8), -3, "axis -3"),
    ],
)
def test_bad_patterns_and_shapes_raise_one_line(
    n: int, m: int, shape: tuple[int, ...], axis: int, needle: str
) -> None:
    w = np.ones(shape, dtype=np.float32)
    for func in (nm_mask, compress):
        with pytest.raises(ShapeError) as info:
            func(w, n, m, axis)
        assert needle in str(info.value)
        assert "\n" not in str(info.value)


def test_non_integer_pattern_and_bad_dtype() -> None:
    with pytest.raises(ShapeError, match="not an integer"):
        check_nm(True, 4)
    with pytest.raises(ShapeError, match="not an integer"):
        check_nm(2, 4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int32"):
        nm_mask(np.ones((2, 4), dtype=np.int32), 2, 4, 1)  # type: ignore[arg-type]


def test_decompress_validates_its_operands() -> None:
    values = np.ones((2, 4), dtype=np.float32)
    good = np.array([[0, 1, 2, 3]] * 2, dtype=np.uint8)
    np.testing.assert_array_equal(decompress(values, good, 2, 4, 1), [[1, 1, 0, 0, 0, 0, 1, 1]] * 2)
    with pytest.raises(ShapeError, match="out of range"):
        decompress(values, np.array([[0, 4, 0, 1]] * 2, dtype=np.uint8), 2, 4, 1)
    with pytest.raises(ShapeError, match="strictly increasing"):
        decompress(values, np.array([[1, 1, 0, 1]] * 2, dtype=np.uint8), 2, 4, 1)
    with pytest.raises(ShapeError, match="must be equal"):
        decompress(values, good[:, :2], 2, 4, 1)
    with pytest.raises(ShapeError, match="multiple of n = 3"):
        decompress(values, good, 3, 4, 1)
    with pytest.raises(TypeError, match="uint8"):
        decompress(values, good.astype(np.int64), 2, 4, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2:8", (2, 8)), (" 1:4 ", (1, 4)), ("4:4", (4, 4)), ("dense", (1, 1)), ("DENSE", (1, 1))],
)
def test_parse_nm_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_nm(text) == expected


@pytest.mark.parametrize("text", ["2-8", "2:", ":8", "a:b", "2:8:1", "", "-1:4", "3:8x"])
def test_parse_nm_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ShapeError, match="not valid") as info:
        parse_nm(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, NmsatError)


@pytest.mark.parametrize(("text", "needle"), [("3:6", "m = 6"), ("9:8", "n = 9"), ("0:4", "n = 0")])
def test_parse_nm_rejects_unsupported_patterns(text: str, needle: str) -> None:
    with pytest.raises(ShapeError, match=needle):
        parse_nm(text)


def test_nm_applicable() -> None:
    assert nm_applicable(64, 8)
    assert nm_applicable(8, 8)
    assert nm_applicable(3, 1)
    assert not nm_applicable(3, 4)
    assert not nm_applicable(0, 4)
    assert not nm_applicable(12, 8)
