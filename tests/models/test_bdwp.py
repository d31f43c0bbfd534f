"""Tests of the BDWP passes, nmsat.models.bdwp.

Gradients are checked in float64 against central finite differences of independent
references (an explicit loop convolution, not im2col). Every pass is linear in the operand
being differentiated, so finite differences are exact up to rounding. In BDWP mode the three
results are checked against what each pass computes: FF with ``W . E_F``, BP the gradient of
the map with ``W . E_B``, WU the gradient with respect to the effective weights (the
straight-through estimator hands it to every dense weight). :class:`SATArith` is compared bit
for bit with the numerics contract, including the compressed FF and BP copies of the SORE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.bdwp import (
    NumpyArith,
    SATArith,
    bdwp_masks,
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv2d_grads,
    conv_weight_matrix,
    im2col,
    linear_backward,
    linear_grads,
    transposed_im2col,
)
from nmsat.models.nm import compress, nm_mask

F64 = NDArray[np.float64]


def _numeric_grad(f: Callable[[F64], float], x: F64, eps: float = 1e-6) -> F64:
    """Central finite differences of a scalar function at every element of ``x``."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (f(plus) - f(minus)) / (2 * eps)
    return grad


def _conv_loop(x: F64, w: F64, stride: int, padding: int) -> F64:
    """Reference convolution: an explicit loop over output pixels (no im2col)."""
    batch, _, height, width = x.shape
    c_out, _, kh, kw = w.shape
    oh = (height + 2 * padding - kh) // stride + 1
    ow = (width + 2 * padding - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((batch, c_out, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            y[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, w)
    return y


@pytest.mark.parametrize("sparsity", ["bdwp", "forward", "dense"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 8), (2, 8)])
def test_linear_grads_float64(sparsity: Any, n: int, m: int) -> None:
    rng = np.random.default_rng(n * 10 + m)
    w = rng.standard_normal((16, 24))
    x = rng.standard_normal((5, 24))
    dy = rng.standard_normal((5, 16))
    y, dx, dw = linear_grads(w, x, dy, n, m, sparsity=sparsity)
    assert y.dtype == dx.dtype == dw.dtype == np.float64
    e_f = nm_mask(w, n, m, axis=1) if sparsity != "dense" else np.ones(w.shape, bool)
    e_b = nm_mask(w, n, m, axis=0) if sparsity == "bdwp" else np.ones(w.shape, bool)
    w_f, w_b = np.where(e_f, w, 0), np.where(e_b, w, 0)
    np.testing.assert_allclose(y, x @ w_f.T, rtol=1e-12, atol=1e-12)
    # BP: the gradient of the map that uses the BP-pruned weights.
    dx_fd = _numeric_grad(lambda xx: float(np.sum(dy * (xx @ w_b.T))), x)
    np.testing.assert_allclose(dx, dx_fd, rtol=1e-6, atol=1e-7)
    # WU: the gradient with respect to the effective (FF) weights, dense.
    dw_fd = _numeric_grad(lambda ww: float(np.sum(dy * (x @ ww.T))), w_f)
    np.testing.assert_allclose(dw, dw_fd, rtol=1e-6, atol=1e-7)
    if sparsity == "dense":
        # Dense training: the exact gradients of the loss.
        full = _numeric_grad(lambda ww: float(np.sum(dy * (x @ ww.T))), w)
        np.testing.assert_allclose(dw, full, rtol=1e-6, atol=1e-7)


def test_bdwp_bp_differs_from_the_forward_gradient() -> None:
    # E_B is not E_F: BDWP's dx is not the gradient of the sparse forward map (by design).
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8))
    x, dy = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    masks = bdwp_masks(w, 2, 4)
    assert not np.array_equal(masks.ff, masks.bp)
    _, dx, _ = linear_grads(w, x, dy, 2, 4)
    np.testing.assert_allclose(dx, dy @ np.where(masks.bp, w, 0))
    assert not np.allclose(dx, dy @ np.where(masks.ff, w, 0))


@pytest.mark.parametrize(
    ("stride", "padding", "kernel", "hw"),
    [(1, 0, 3, (6, 5)), (1, 1, 3, (5, 5)), (2, 1, 3, (7, 6)), (3, 2, 2, (6, 7)), (1, 0, 1, (3, 4))],
)
@pytest.mark.parametrize("sparsity", ["bdwp", "forward", "dense"])
def test_conv2d_grads_float64(
    stride: int, padding: int, kernel: int, hw: tuple[int, int], sparsity: Any
) -> None:
    rng = np.random.default_rng(stride * 7 + padding)
    n, m = 2, 4
    w = rng.standard_normal((8, 4, kernel, kernel))
    x = rng.standard_normal((2, 4, *hw))
    y_ref_shape = _conv_loop(x, w, stride, padding).shape
    dy = rng.standard_normal(y_ref_shape)
    y, dx, dw = conv2d_grads(w, x, dy, n, m, stride, padding, sparsity=sparsity)
    assert y.dtype == dx.dtype == dw.dtype == np.float64
    e_f = nm_mask(w, n, m, axis=1) if sparsity != "dense" else np.ones(w.shape, bool)
    e_b = nm_mask(w, n, m, axis=0) if sparsity == "bdwp" else np.ones(w.shape, bool)
    w_f, w_b = np.where(e_f, w, 0), np.where(e_b, w, 0)
    np.testing.assert_allclose(y, _conv_loop(x, w_f, stride, padding), rtol=1e-12, atol=1e-12)
    dx_fd = _numeric_grad(lambda xx: float(np.sum(dy * _conv_loop(xx, w_b, stride, padding))), x)
    np.testing.assert_allclose(dx, dx_fd, rtol=1e-6, atol=1e-7)
    dw_fd = _numeric_grad(lambda ww: float(np.sum(dy * _conv_loop(x, ww, stride, padding))), w_f)
    np.testing.assert_allclose(dw, dw_fd, rtol=1e-6, atol=1e-7)


def test_conv_masks_group_along_channels() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16, 3, 3))
    masks = bdwp_masks(w, 2, 8)
    # FF groups: 8 consecutive input channels at one (c_out, kh, kw); BP: 8 output channels.
    assert (masks.ff.reshape(8, 2, 8, 3, 3).sum(axis=2) == 2).all()
    assert (masks.bp.reshape(1, 8, 16, 3, 3).sum(axis=1) == 2).all()
    # K is ordered (kh, kw, C_in): the FF copy of W[C_out, K] groups the same weights.
    np.testing.assert_array_equal(
        nm_mask(conv_weight_matrix(w), 2, 8, axis=1), conv_weight_matrix(masks.ff)
    )
    np.testing.assert_array_equal(
        nm_mask(conv_weight_matrix(w), 2, 8, axis=0), conv_weight_matrix(masks.bp)
    )


def test_im2col_and_col2im_are_adjoint() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    cols = im2col(x, 3, 2, 2, 1)
    # OH = (6 + 2 - 3) // 2 + 1 = 3, OW = (5 + 2 - 2) // 2 + 1 = 3.
    assert cols.shape == (3 * 2 * 3, 2 * 3 * 3)
    g = rng.standard_normal(cols.shape)
    back = col2im(g, (2, 3, 6, 5), 3, 2, 2, 1)
    np.testing.assert_allclose(np.sum(cols * g), np.sum(x * back), rtol=1e-12)
    # Entry ((i, j, c), (b, oh, ow)) reads the padded input at (oh*s + i, ow*s + j).
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i, j, c, b, oh, ow in ((2, 1, 1, 1, 2, 2), (0, 0, 2, 0, 1, 0), (1, 1, 0, 1, 0, 2)):
        got = cols[(i * 2 + j) * 3 + c, (b * 3 + oh) * 3 + ow]
        assert got == xp[b, c, oh * 2 + i, ow * 2 + j]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_arith_keeps_the_dtype(dtype: Any) -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 8)).astype(dtype)
    x, dy = rng.standard_normal((3, 8)).astype(dtype), rng.standard_normal((3, 8)).astype(dtype)
    for out in linear_grads(w, x, dy, 2, 4):
        assert out.dtype == dtype
    wc = rng.standard_normal((8, 8, 3, 3)).astype(dtype)
    xc = rng.standard_normal((2, 8, 4, 4)).astype(dtype)
    for out in conv2d_grads(wc, xc, np.ones((2, 8, 4, 4), dtype), 2, 4, 1, 1):
        assert out.dtype == dtype
    with pytest.raises(TypeError, match="float32"):
        NumpyArith().matmul(w, x.T.astype(np.float16))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sat_arith_is_the_contract_gemm(dtype: Any) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 40)).astype(dtype)
    b = rng.standard_normal((40, 7)).astype(dtype)
    got = SATArith().matmul(a, b)
    want = nx.gemm(nx.to_fp16(a), nx.to_fp16(b))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(nx.fp32_bits(got), nx.fp32_bits(want))


def test_sat_linear_passes_match_the_compressed_copies_bit_for_bit() -> None:
    rng = np.random.default_rng(6)
    n, m, c_out, c_in, batch = 2, 8, 16, 32, 5
    w = rng.standard_normal((c_out, c_in)).astype(np.float32)
    x = rng.standard_normal((batch, c_in)).astype(np.float32)
    dy = rng.standard_normal((batch, c_out)).astype(np.float32)
    y, dx, dw = linear_grads(w, x, dy, n, m, arith=SATArith())
    # FF: the SORE's FF copy through the STCE's sparse mode.
    ff_values, ff_indices = compress(w, n, m, axis=1)
    y_hw = nx.gemm_nm(nx.to_fp16(ff_values), ff_indices, n, m, nx.to_fp16(x.T)).T
    # BP: the BP copy, stored transposed, [C_in, C_out * n / m].
    bp_values, bp_indices = compress(w.T, n, m, axis=1)
    dx_hw = nx.gemm_nm(nx.to_fp16(bp_values), bp_indices, n, m, nx.to_fp16(dy.T)).T
    # WU: dense, reducing over the batch in increasing order.
    dw_hw = nx.gemm(nx.to_fp16(dy.T), nx.to_fp16(x))
    for got, want in ((y, y_hw), (dx, dx_hw), (dw, dw_hw)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(nx.fp32_bits(got), nx.fp32_bits(np.ascontiguousarray(want)))


def test_sat_conv_passes_match_the_contract_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    n, m, stride, padding = 1, 4, 2, 1
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    y, dx, dw = conv2d_grads(w, x, dy, n, m, stride, padding, arith=SATArith())
    w_mat = conv_weight_matrix(w)
    cols = im2col(x, 3, 3, stride, padding)
    ff_values, ff_indices = compress(w_mat, n, m, axis=1)
    y_mat = nx.gemm_nm(nx.to_fp16(ff_values), ff_indices, n, m, nx.to_fp16(cols))
    y_hw = y_mat.reshape(8, 2, 3, 3).transpose(1, 0, 2, 3)
    # BP: the BP copy Wt[C_in, (kh, kw, C_out)] (groups of M output channels) through the
    # sparse mode, times the transposed im2col of dY: one chain per input element.
    w_t = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(4, -1)
    bp_values, bp_indices = compress(w_t, n, m, axis=1)
    dy_cols = transposed_im2col(dy, 5, 5, 3, 3, stride, padding)
    dx_mat = nx.gemm_nm(nx.to_fp16(bp_values), bp_indices, n, m, nx.to_fp16(dy_cols))
    dx_hw = np.ascontiguousarray(dx_mat.reshape(4, 5, 5, 2).transpose(3, 0, 1, 2))
    # WU: dense, positions in the order (oh, ow, b), batch fastest.
    dy_mat = np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).reshape(8, -1)
    x_t = cols.reshape(36, 2, 9).transpose(2, 1, 0).reshape(18, 36)
    dw_hw = nx.gemm(nx.to_fp16(dy_mat), nx.to_fp16(x_t)).reshape(8, 3, 3, 4)
    np.testing.assert_array_equal(nx.fp32_bits(y), nx.fp32_bits(np.ascontiguousarray(y_hw)))
    np.testing.assert_array_equal(nx.fp32_bits(dx), nx.fp32_bits(dx_hw))
    np.testing.assert_array_equal(
        nx.fp32_bits(dw), nx.fp32_bits(np.ascontiguousarray(dw_hw.transpose(0, 3, 1, 2)))
    )


def test_input_grad_false_skips_bp_only() -> None:
    rng = np.random.default_rng(8)
    w, x, dy = rng.standard_normal((8, 8)), rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    ones = np.ones(w.shape, bool)
    dx, dw = linear_backward(w, x, dy, ones, input_grad=False)
    assert not dx.any()
    np.testing.assert_allclose(dw, dy.T @ x)
    wc, xc = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((1, 2, 4, 4))
    yc, cols = conv2d_forward(wc, xc, np.ones(wc.shape, bool), 1, 1)
    dxc, dwc = conv2d_backward(
        wc, cols, (1, 2, 4, 4), np.ones_like(yc), np.ones(wc.shape, bool), 1, 1, input_grad=False
    )
    assert dxc.shape == xc.shape
    assert not dxc.any()
    assert dwc.any()


def test_bad_shapes_and_modes_raise() -> None:
    w = np.ones((8, 8))
    with pytest.raises(ShapeError, match=r"x has shape \(3, 7\)"):
        linear_grads(w, np.ones((3, 7)), np.ones((3, 8)), 2, 4)
    with pytest.raises(ShapeError, match=r"dy has shape \(3, 7\)"):
        linear_grads(w, np.ones((3, 8)), np.ones((3, 7)), 2, 4)
    with pytest.raises(ShapeError, match="length 6"):
        linear_grads(np.ones((8, 6)), np.ones((3, 6)), np.ones((3, 8)), 2, 4)
    with pytest.raises(NmsatError, match="sparsity 'sparse'"):
        linear_grads(w, np.ones((3, 8)), np.ones((3, 8)), 2, 4, sparsity="sparse")  # type: ignore[arg-type]
    wc = np.ones((8, 4, 3, 3))
    with pytest.raises(ShapeError, match="shorter than kernel"):
        conv2d_grads(wc, np.ones((1, 4, 2, 2)), np.ones((1, 8, 1, 1)), 2, 4)
    with pytest.raises(ShapeError, match="stride 0"):
        conv2d_grads(wc, np.ones((1, 4, 5, 5)), np.ones((1, 8, 3, 3)), 2, 4, stride=0)
    with pytest.raises(ShapeError, match=r"dy has shape"):
        conv2d_grads(wc, np.ones((1, 4, 5, 5)), np.ones((1, 8, 5, 5)), 2, 4)
    with pytest.raises(ShapeError, match="4-D"):
        conv2d_grads(np.ones((8, 4, 3)), np.ones((1, 4, 5, 5)), np.ones((1, 8, 3, 3)), 2, 4)
