"""Reduction orders of the conv BP and WU passes, nmsat.models.bdwp (docs/numerics.md).

The accelerator stores activations channel-major ``[C][H][W][B]``. WU reduces over the
positions ``(oh, ow, b)``, batch fastest; BP computes every input gradient as one FP32 chain
over the kernel positions ``(i, j)`` that reach it, then ``C_out`` (the transposed
convolution computed directly, not ``col2im`` of per-position products). In float64 these
are the textbook formulas up to reassociation; under :class:`SATArith` they are checked bit
for bit against explicit Python chains built from the numerics contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.errors import ShapeError
from nmsat.models.bdwp import (
    SATArith,
    bdwp_masks,
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    conv_weight_matrix,
    im2col,
    transposed_im2col,
)

SAT = SATArith()
N, M = 2, 4


def _old_backward(
    w_b: NDArray[Any], x: NDArray[Any], dy: NDArray[Any], stride: int, padding: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The former formulation: positions (b, oh, ow); BP as ``W_B^T dY`` then col2im."""
    c_out, c_in, kh, kw = w_b.shape
    cols = im2col(x, kh, kw, stride, padding)
    dy_mat = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(c_out, -1)
    dw = (dy_mat @ cols.T).reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)
    dcols = conv_weight_matrix(w_b).T @ dy_mat
    x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    return col2im(dcols, x_shape, kh, kw, stride, padding), dw


def _case(
    rng: np.random.Generator,
    batch: int,
    c_in: int,
    c_out: int,
    kernel: int,
    size: tuple[int, int],
    stride: int,
    padding: int,
    dtype: Any = np.float64,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Random ``w``, ``x`` and ``dy`` of a conv layer."""
    oh = conv_output_size(size[0], kernel, stride, padding)
    ow = conv_output_size(size[1], kernel, stride, padding)
    w = rng.standard_normal((c_out, c_in, kernel, kernel)).astype(dtype)
    x = rng.standard_normal((batch, c_in, *size)).astype(dtype)
    dy = rng.standard_normal((batch, c_out, oh, ow)).astype(dtype)
    return w, x, dy


@settings(max_examples=60, deadline=None)
@given(
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1, 2]),
    kernel=st.sampled_from([1, 3, 5]),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    batch=st.integers(1, 3),
    channels=st.tuples(st.sampled_from([4, 8]), st.sampled_from([4, 8])),
    seed=st.integers(0, 2**32 - 1),
)
def test_float64_backward_equals_the_col2im_formulation(
    stride: int,
    padding: int,
    kernel: int,
    extra: tuple[int, int],
    batch: int,
    channels: tuple[int, int],
    seed: int,
) -> None:
    # The input is at least as large as the kernel once padded; extra adds rows and columns.
    base = max(1, kernel - 2 * padding)
    size = (base + extra[0], base + extra[1])
    c_in, c_out = channels
    rng = np.random.default_rng(seed)
    w, x, dy = _case(rng, batch, c_in, c_out, kernel, size, stride, padding)
    masks = bdwp_masks(w, N, M)  # N:M in FF and BP
    _, cols = conv2d_forward(w, x, masks.ff, stride, padding)
    dx, dw = conv2d_backward(w, cols, x.shape, dy, masks.bp, stride, padding)  # type: ignore[arg-type]
    dx_old, dw_old = _old_backward(np.where(masks.bp, w, 0.0), x, dy, stride, padding)
    assert dx.shape == x.shape and dw.shape == w.shape
    scale_dx = max(1.0, float(np.abs(dx_old).max()))
    scale_dw = max(1.0, float(np.abs(dw_old).max()))
    np.testing.assert_allclose(dx, dx_old, rtol=1e-12, atol=1e-12 * scale_dx)
    np.testing.assert_allclose(dw, dw_old, rtol=1e-12, atol=1e-12 * scale_dw)


def _bp_chain(w_b: NDArray[Any], dy: NDArray[Any], x_shape: tuple[int, ...], stride: int,
              padding: int) -> NDArray[np.float32]:  # fmt: skip
    """BP as the accelerator runs it: per input element, (i, j) row-major, then co.

    Every ``(h, w)`` is one chain, vectorised over ``(c, b)`` only; kernel positions that do
    not reach ``(h, w)`` with an integer, in-range output are skipped, not multiplied by zero.
    """
    batch, c_in, height, width = x_shape
    c_out, _, kh, kw = w_b.shape
    _, _, oh_n, ow_n = dy.shape
    w16, dy16 = nx.to_fp16(w_b), nx.to_fp16(dy)
    dx = np.zeros((batch, c_in, height, width), dtype=np.float32)
    for h in range(height):
        for wc in range(width):
            acc = np.zeros((c_in, batch), dtype=np.float32)
            for i in range(kh):
                for j in range(kw):
                    num_h, num_w = h + padding - i, wc + padding - j
                    if num_h % stride or num_w % stride:
                        continue
                    oh, ow = num_h // stride, num_w // stride
                    if not (0 <= oh < oh_n and 0 <= ow < ow_n):
                        continue
                    for co in range(c_out):
                        prod = nx.fp16_mul_fp32(w16[co, :, i, j, None], dy16[None, :, co, oh, ow])
                        acc = nx.fp32_add(acc, prod)
            dx[:, :, h, wc] = acc.T
    return dx


def _wu_chain(x: NDArray[Any], dy: NDArray[Any], kh: int, kw: int, stride: int,
              padding: int) -> NDArray[np.float32]:  # fmt: skip
    """WU as the accelerator runs it: every dW entry one chain over (oh, ow, b), b fastest.

    Patches are read from the padded input directly (no im2col); the chain is vectorised over
    ``(co, k)`` with ``k = (i, j, c)``.
    """
    batch, c_in = x.shape[:2]
    _, c_out, oh_n, ow_n = dy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    x16, dy16 = nx.to_fp16(xp), nx.to_fp16(dy)
    acc = np.zeros((c_out, kh * kw * c_in), dtype=np.float32)
    for oh in range(oh_n):
        for ow in range(ow_n):
            for b in range(batch):
                patch = x16[b, :, oh * stride : oh * stride + kh, ow * stride : ow * stride + kw]
                row = patch.transpose(1, 2, 0).reshape(-1)  # (i, j, c), c fastest
                acc = nx.fp32_add(acc, nx.fp16_mul_fp32(dy16[b, :, oh, ow, None], row[None, :]))
    return acc.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)


SAT_CASES = [
    # batch, c_in, c_out, kernel, (H, W), stride, padding
    (2, 4, 8, 3, (5, 5), 1, 1),
    (2, 4, 8, 3, (5, 6), 2, 1),
    (1, 8, 4, 5, (6, 5), 2, 2),
    (3, 4, 4, 1, (3, 4), 1, 0),
    (2, 4, 8, 1, (5, 5), 2, 0),
    (2, 4, 4, 3, (7, 6), 2, 0),
    (1, 4, 8, 5, (3, 4), 1, 2),
]


@pytest.mark.parametrize(("batch", "c_in", "c_out", "kernel", "size", "stride", "padding"),
                         SAT_CASES)  # fmt: skip
def test_sat_bp_and_wu_are_the_accelerator_chains(
    batch: int,
    c_in: int,
    c_out: int,
    kernel: int,
    size: tuple[int, int],
    stride: int,
    padding: int,
) -> None:
    rng = np.random.default_rng(batch * 1000 + kernel * 100 + stride * 10 + padding)
    w, x, dy = _case(rng, batch, c_in, c_out, kernel, size, stride, padding, np.float32)
    masks = bdwp_masks(w, N, M)
    _, cols = conv2d_forward(w, x, masks.ff, stride, padding, arith=SAT)
    dx, dw = conv2d_backward(w, cols, x.shape, dy, masks.bp, stride, padding, arith=SAT)  # type: ignore[arg-type]
    assert dx.dtype == dw.dtype == np.float32
    w_b = np.where(masks.bp, w, np.float32(0))
    dx_hw = _bp_chain(w_b, dy, x.shape, stride, padding)
    dw_hw = _wu_chain(x, dy, kernel, kernel, stride, padding)
    np.testing.assert_array_equal(nx.fp32_bits(dx), nx.fp32_bits(dx_hw))
    np.testing.assert_array_equal(nx.fp32_bits(dw), nx.fp32_bits(np.ascontiguousarray(dw_hw)))


def test_sat_orders_are_observable() -> None:
    # The former orders (col2im of per-position chains; positions (b, oh, ow)) give other
    # bits on ordinary data, so the tests above do pin the order.
    rng = np.random.default_rng(12)
    stride, padding = 1, 1
    w, x, dy = _case(rng, 4, 8, 8, 3, (6, 6), stride, padding, np.float32)
    ones = np.ones(w.shape, dtype=np.bool_)
    _, cols = conv2d_forward(w, x, ones, stride, padding, arith=SAT)
    dx, dw = conv2d_backward(w, cols, x.shape, dy, ones, stride, padding, arith=SAT)  # type: ignore[arg-type]
    dy_mat = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(8, -1)
    dcols = nx.gemm(nx.to_fp16(conv_weight_matrix(w).T), nx.to_fp16(dy_mat))
    dx_old = col2im(dcols, x.shape, 3, 3, stride, padding)  # type: ignore[arg-type]
    dw_old = nx.gemm(nx.to_fp16(dy_mat), nx.to_fp16(cols.T))
    dw_old = np.ascontiguousarray(dw_old.reshape(8, 3, 3, 8).transpose(0, 3, 1, 2))
    assert (nx.fp32_bits(dx) != nx.fp32_bits(dx_old)).any()
    assert (nx.fp32_bits(dw) != nx.fp32_bits(dw_old)).any()
    np.testing.assert_allclose(dx, dx_old, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_old, rtol=1e-5, atol=1e-5)


def test_transposed_im2col_entries() -> None:
    rng = np.random.default_rng(13)
    batch, c_out, height, width, k, stride, padding = 2, 3, 6, 5, 3, 2, 1
    oh_n = conv_output_size(height, k, stride, padding)
    ow_n = conv_output_size(width, k, stride, padding)
    dy = rng.standard_normal((batch, c_out, oh_n, ow_n))
    got = transposed_im2col(dy, height, width, k, k, stride, padding)
    assert got.shape == (k * k * c_out, height * width * batch)
    assert got.dtype == dy.dtype
    blocks = got.reshape(k, k, c_out, height, width, batch)
    for index in np.ndindex(blocks.shape):
        i, j, co, h, wc, b = index
        num_h, num_w = h + padding - i, wc + padding - j
        oh, ow = num_h // stride, num_w // stride
        reached = num_h % stride == 0 and num_w % stride == 0
        reached = reached and 0 <= oh < oh_n and 0 <= ow < ow_n
        assert blocks[index] == (dy[b, co, oh, ow] if reached else 0.0)
    # Every output gradient lands once per kernel position whose input exists.
    assert (
        np.count_nonzero(got)
        == np.count_nonzero(im2col(np.ones((batch, 1, height, width)), k, k, stride, padding))
        * c_out
    )
    with pytest.raises(ShapeError, match="output size"):
        transposed_im2col(dy, height + 2, width, k, k, stride, padding)
    with pytest.raises(ShapeError, match="4-D"):
        transposed_im2col(dy[0], height, width, k, k, stride, padding)
