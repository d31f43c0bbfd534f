"""BDWP: the three GEMM passes of a linear or conv layer, with pluggable arithmetic.

For a weight ``W[C_out, K]`` (a conv weight in its im2col view) and activations ``X[K, P]``
(``P`` = batch x output pixels), one training step of bidirectional weight pruning is:

- FF: ``Y = (W . E_F) X`` with ``E_F = nm_mask(W, n, m, axis=1)``, groups along K (C_in);
- BP: ``dX = (W . E_B)^T dY`` with ``E_B = nm_mask(W, n, m, axis=0)``, groups along C_out;
- WU: ``dW = dY X^T``, dense: the gradient reaches every weight (straight-through estimator).

``E_B`` prunes the dense ``W``, not the FF-pruned ``W . E_F`` (decision): the SORE makes both
compressed copies from the same FP32 master weights, so each copy is the top-N of the dense
weights in its own direction and neither depends on the other. Pruning ``W . E_F`` instead
would chain the two prunings (the BP copy could not be made before the FF copy) and leave
C_out groups with fewer than ``n`` non-zeros where FF already pruned.

Sparsity modes (:data:`SPARSITY_MODES`): ``"bdwp"`` (N:M in FF and BP, the paper's method),
``"forward"`` (N:M in FF only, dense BP: SR-STE), ``"dense"`` (no pruning; ``n``, ``m``
ignored). ``n == m`` is dense in every mode.

Arithmetic is pluggable (:class:`Arith`): :class:`NumpyArith` (the default) multiplies in the
inputs' dtype, float32 or float64, with ``np.matmul``; :class:`SATArith` computes as the STCE
does: operands rounded to FP16 (:func:`nmsat.hw.numerics.to_fp16`), exact products, FP32
accumulation in increasing reduction index (:func:`nmsat.hw.numerics.gemm`), float32 result.
Every pass calls ``matmul`` in the hardware's orientation with the reduction axis in the
accelerator's order, so :class:`SATArith` gives the accelerator's bits. For a linear layer:
FF ``W_F [C_out, K] @ X [K, P]``, BP ``W_B^T [K, C_out] @ dY [C_out, P]`` (the BP copy is
stored transposed), WU ``dY [C_out, P] @ X^T [P, K]``. The masked dense operand gives the same
bits as the compressed one (:func:`nmsat.hw.numerics.gemm_nm`) whenever the activations hold no
Inf or NaN.

Conv reduction orders (docs/numerics.md, "Reduction orders of the three passes"): the
accelerator stores activations channel-major ``[C][H][W][B]``. FF reduces over K = ``(i, j,
c)``. WU reduces over the positions ``(oh, ow, b)``, batch fastest. BP is the transposed
convolution computed directly: every input gradient ``dX[c, h, w, b]`` is one chain over the
kernel positions ``(i, j)`` that reach it (row-major), then ``C_out``, computed as
``Wt [C_in, (i, j, C_out)] @ transposed_im2col(dY) [(i, j, C_out), (h, w, b)]``, not as
``col2im(W_B^T dY)`` (which rounds every kernel position's sum separately).

Conv im2col view (decision): ``K`` is ordered ``(kh, kw, C_in)``, C_in fastest, as in SR-STE's
``(C_out, kh, kw, C_in)`` grouping, so that a group of ``m`` consecutive K entries of the FF
copy is a group of ``m`` input channels: ``nm_mask(w, n, m, axis=1)`` of the 4-D weight
``(C_out, C_in, kh, kw)`` equals ``nm_mask(W, n, m, axis=1)`` of ``W[C_out, K]``. The columns
``P`` of :func:`im2col` are ordered ``(batch, oh, ow)``; the WU pass reorders them to ``(oh,
ow, batch)``. The BP copy ``Wt[C_in, (kh, kw, C_out)]`` groups ``m`` consecutive output
channels of one kernel position, as ``nm_mask(w, n, m, axis=0)`` does.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (BDWP; FF, BP, WU passes).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (SR-STE: forward-only N:M, straight-through dense gradient).
Ref: PAPER.md (BDWP math table); DESIGN.md section 4; docs/numerics.md (GEMM order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
from numpy.typing import NDArray

from nmsat.hw import numerics
from nmsat.hw.errors import NmsatError, ShapeError

from .nm import check_nm, nm_mask

__all__ = [
    "NUMPY_ARITH",
    "SPARSITY_MODES",
    "Arith",
    "BDWPMasks",
    "FloatArray",
    "NumpyArith",
    "SATArith",
    "Sparsity",
    "bdwp_masks",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_grads",
    "conv_output_size",
    "conv_weight_matrix",
    "im2col",
    "linear_backward",
    "linear_forward",
    "linear_grads",
    "transposed_im2col",
]

FloatArray: TypeAlias = NDArray[np.floating[Any]]
"""A float16, float32 or float64 array."""

Sparsity: TypeAlias = Literal["bdwp", "forward", "dense"]
"""Where N:M applies: FF and BP (``bdwp``), FF only (``forward``), nowhere (``dense``)."""

SPARSITY_MODES: tuple[Sparsity, ...] = ("bdwp", "forward", "dense")
"""The sparsity modes, in the order reports list them."""


# ----------------------------------------------------------------------------------------------
# Arithmetic


class Arith(Protocol):
    """The matrix product every BDWP pass goes through.

    Members
    -------
    matmul(a, b)
        Return ``a @ b`` for 2-D ``a`` ``[I, K]`` and ``b`` ``[K, J]``, reducing over K.
    """

    def matmul(self, a: FloatArray, b: FloatArray) -> FloatArray:
        """Return the matrix product ``a @ b`` of 2-D operands."""
        ...


@dataclass(frozen=True)
class NumpyArith:
    """``np.matmul`` in the operands' dtype (float32 or float64): the fast reference.

    The reduction order is numpy's (BLAS, blocked), so float32 results are close to, not
    bit-equal with, the accelerator's; use :class:`SATArith` for bit exactness.
    """

    def matmul(self, a: FloatArray, b: FloatArray) -> FloatArray:
        """Return ``a @ b`` in the common dtype of ``a`` and ``b``.

        Raises
        ------
        TypeError
            If the operands are not both float32 or both float64.
        ShapeError
            If they are not 2-D with matching inner dimensions.
        """
        _check_matmul(a, b)
        if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"NumpyArith: operands have dtypes {a.dtype} and {b.dtype}; "
                "both float32 or both float64 are required"
            )
        product: FloatArray = np.matmul(a, b)
        return product


@dataclass(frozen=True)
class SATArith:
    """The STCE's arithmetic: FP16 operands, exact products, FP32 accumulation in order.

    Each operand goes through :func:`nmsat.hw.numerics.to_fp16` (float64 through FP32 first,
    RNE, subnormals flushed) and the product is :func:`nmsat.hw.numerics.gemm`: for every
    output, products added one by one in increasing reduction index with FP32 RNE adds. The
    result is float32 whatever the inputs' dtype. Slow (a Python loop over K); meant for
    checking bits on small layers.
    """

    def matmul(self, a: FloatArray, b: FloatArray) -> FloatArray:
        """Return ``gemm(to_fp16(a), to_fp16(b))`` as float32.

        Raises
        ------
        ShapeError
            If the operands are not 2-D with matching inner dimensions.
        """
        _check_matmul(a, b)
        # Row-major copies: gemm reads a row of b per step (a transposed view would stride).
        a16 = np.ascontiguousarray(numerics.to_fp16(a))
        b16 = np.ascontiguousarray(numerics.to_fp16(b))
        product: FloatArray = numerics.gemm(a16, b16)
        return product


NUMPY_ARITH = NumpyArith()
"""The default arithmetic of every function here."""


# ----------------------------------------------------------------------------------------------
# Masks


@dataclass(frozen=True)
class BDWPMasks:
    """The two N:M masks of one weight tensor for one training step.

    Members
    -------
    ff : numpy.ndarray of bool
        ``E_F``, the weights the FF pass uses (groups along C_in, axis 1); also the mask of
        the SR-STE term in the update.
    bp : numpy.ndarray of bool
        ``E_B``, the weights the BP pass uses (groups along C_out, axis 0).
    """

    ff: NDArray[np.bool_]
    bp: NDArray[np.bool_]


def bdwp_masks(w: FloatArray, n: int, m: int, sparsity: Sparsity = "bdwp") -> BDWPMasks:
    """Return the FF and BP masks of a weight (2-D ``[C_out, C_in]`` or 4-D conv).

    Parameters
    ----------
    w : numpy.ndarray of float16, float32 or float64
        Dense weights, ``C_out`` on axis 0 and ``C_in`` on axis 1.
    n, m : int
        The pattern (:func:`nmsat.models.nm.check_nm`).
    sparsity : {"bdwp", "forward", "dense"}
        ``bdwp``: both masks N:M; ``forward``: FF N:M, BP all True; ``dense``: both all True.

    Returns
    -------
    BDWPMasks
        Both masks computed from the dense ``w`` (never one from the other).

    Raises
    ------
    ShapeError
        If the pattern is not supported or a grouping dimension (C_in for FF, C_out for BP)
        is not a multiple of ``m``.
    NmsatError
        If ``sparsity`` is not one of :data:`SPARSITY_MODES`.
    """
    check_nm(n, m)
    _check_sparsity(sparsity)
    dense = np.ones(w.shape, dtype=np.bool_)
    if sparsity == "dense" or n == m:
        return BDWPMasks(ff=dense, bp=dense)
    ff = nm_mask(w, n, m, axis=1)
    bp = nm_mask(w, n, m, axis=0) if sparsity == "bdwp" else dense
    return BDWPMasks(ff=ff, bp=bp)


# ----------------------------------------------------------------------------------------------
# Linear layers: w [C_out, C_in], x [B, C_in], y and dy [B, C_out]


def linear_forward(
    w: FloatArray, x: FloatArray, mask_ff: NDArray[np.bool_], *, arith: Arith = NUMPY_ARITH
) -> FloatArray:
    """Run the FF pass of a linear layer: ``y = x (w . E_F)^T``.

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in)
        Dense weights.
    x : numpy.ndarray, shape (B, C_in)
        Input activations.
    mask_ff : numpy.ndarray of bool, shape (C_out, C_in)
        ``E_F`` (:func:`bdwp_masks`).
    arith : Arith
        The arithmetic; computed as ``((w . E_F) @ x^T)^T``.

    Returns
    -------
    numpy.ndarray, shape (B, C_out)
        The outputs, in ``arith``'s dtype.

    Raises
    ------
    ShapeError
        If the shapes do not fit together.
    """
    _check_linear(w, x, None, mask_ff)
    return _transposed(arith.matmul(_masked(w, mask_ff), np.ascontiguousarray(x.T)))


def linear_backward(
    w: FloatArray,
    x: FloatArray,
    dy: FloatArray,
    mask_bp: NDArray[np.bool_],
    *,
    arith: Arith = NUMPY_ARITH,
    input_grad: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """Run the BP and WU passes of a linear layer.

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in)
        Dense weights.
    x : numpy.ndarray, shape (B, C_in)
        The FF pass's input activations.
    dy : numpy.ndarray, shape (B, C_out)
        Gradient of the loss with respect to the outputs.
    mask_bp : numpy.ndarray of bool, shape (C_out, C_in)
        ``E_B`` (:func:`bdwp_masks`).
    arith : Arith
        The arithmetic; BP as ``((w . E_B)^T @ dy^T)^T``, WU as ``dy^T @ x``.
    input_grad : bool
        Run the BP pass. False skips it (a network's first layer, whose input is data) and
        returns zeros for ``dx``.

    Returns
    -------
    dx : numpy.ndarray, shape (B, C_in)
        ``dy (w . E_B)``.
    dw : numpy.ndarray, shape (C_out, C_in)
        ``dy^T x``, dense.

    Raises
    ------
    ShapeError
        If the shapes do not fit together.
    """
    _check_linear(w, x, dy, mask_bp)
    dy_t = np.ascontiguousarray(dy.T)
    dw = arith.matmul(dy_t, np.ascontiguousarray(x))
    if not input_grad:
        return np.zeros(x.shape, dtype=dw.dtype), dw
    w_bp_t = np.ascontiguousarray(_masked(w, mask_bp).T)
    dx = _transposed(arith.matmul(w_bp_t, dy_t))
    return dx, dw


def linear_grads(
    w: FloatArray,
    x: FloatArray,
    dy: FloatArray,
    n: int,
    m: int,
    *,
    sparsity: Sparsity = "bdwp",
    arith: Arith = NUMPY_ARITH,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Run all three BDWP passes of a linear layer.

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in)
        Dense weights; ``C_in`` (and, for ``bdwp``, ``C_out``) a multiple of ``m``.
    x : numpy.ndarray, shape (B, C_in)
        Input activations.
    dy : numpy.ndarray, shape (B, C_out)
        Gradient with respect to the outputs.
    n, m : int
        The N:M pattern.
    sparsity : {"bdwp", "forward", "dense"}
        Which passes prune (module docstring).
    arith : Arith
        The arithmetic (:class:`NumpyArith` by default).

    Returns
    -------
    y : numpy.ndarray, shape (B, C_out)
        ``x (w . E_F)^T``, ``E_F = nm_mask(w, n, m, axis=1)``.
    dx : numpy.ndarray, shape (B, C_in)
        ``dy (w . E_B)``, ``E_B = nm_mask(w, n, m, axis=0)`` of the dense ``w``.
    dw : numpy.ndarray, shape (C_out, C_in)
        ``dy^T x``, dense.

    Raises
    ------
    ShapeError
        If the shapes or the pattern do not fit together.
    NmsatError
        If ``sparsity`` is unknown.
    """
    _check_linear(w, x, dy, None)
    masks = bdwp_masks(w, n, m, sparsity)
    y = linear_forward(w, x, masks.ff, arith=arith)
    dx, dw = linear_backward(w, x, dy, masks.bp, arith=arith)
    return y, dx, dw


# ----------------------------------------------------------------------------------------------
# Conv layers (NCHW): w [C_out, C_in, kh, kw], x [B, C_in, H, W], y and dy [B, C_out, OH, OW]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Return the output length of a convolution along one spatial axis.

    Parameters
    ----------
    size, kernel, stride, padding : int
        Input length, kernel length, stride (>= 1) and zero padding on each side (>= 0).

    Returns
    -------
    int
        ``(size + 2 * padding - kernel) // stride + 1``.

    Raises
    ------
    ShapeError
        If ``stride < 1``, ``padding < 0`` or the padded input is shorter than the kernel.
    """
    if stride < 1 or padding < 0:
        raise ShapeError(
            f"conv: stride {stride} and padding {padding}; need stride >= 1 and padding >= 0"
        )
    if size + 2 * padding < kernel:
        raise ShapeError(
            f"conv: input length {size} with padding {padding} is shorter than kernel {kernel}"
        )
    return (size + 2 * padding - kernel) // stride + 1


def conv_weight_matrix(w: NDArray[Any]) -> NDArray[Any]:
    """Return the im2col view ``W[C_out, K]`` of a conv weight (or mask), K = (kh, kw, C_in).

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in, kh, kw)
        Conv weights, or a mask of that shape.

    Returns
    -------
    numpy.ndarray, shape (C_out, kh * kw * C_in)
        A new contiguous array, C_in fastest along K.
    """
    c_out = w.shape[0]
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(c_out, -1)


def im2col(x: FloatArray, kh: int, kw: int, stride: int, padding: int) -> FloatArray:
    """Return the im2col matrix ``X[K, P]`` of an NCHW input.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, C_in, H, W)
        Input activations.
    kh, kw : int
        Kernel height and width.
    stride, padding : int
        Stride and zero padding, the same on both spatial axes.

    Returns
    -------
    numpy.ndarray, shape (kh * kw * C_in, B * OH * OW)
        ``X[(i, j, c), (b, oh, ow)] = xpad[b, c, oh * stride + i, ow * stride + j]``.

    Raises
    ------
    ShapeError
        If ``x`` is not 4-D or the sizes do not allow a convolution.
    """
    if x.ndim != 4:
        raise ShapeError(f"conv: x has shape {x.shape}; it must be 4-D (B, C_in, H, W)")
    batch, c_in, height, width = x.shape
    oh = conv_output_size(height, kh, stride, padding)
    ow = conv_output_size(width, kw, stride, padding)
    # Channel-major padded copy, so every kernel offset copies one (C_in, B, OH, OW) block.
    xp = np.zeros((c_in, batch, height + 2 * padding, width + 2 * padding), dtype=x.dtype)
    xp[:, :, padding : padding + height, padding : padding + width] = x.transpose(1, 0, 2, 3)
    cols = np.empty((kh, kw, c_in, batch, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[i, j] = xp[:, :, _window(i, oh, stride), _window(j, ow, stride)]
    return cols.reshape(kh * kw * c_in, batch * oh * ow)


def col2im(
    cols: FloatArray,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: int,
    padding: int,
) -> FloatArray:
    """Sum an im2col-shaped gradient back onto the input: the adjoint of :func:`im2col`.

    The pooling layers use it. The conv BP pass does not: it would round every kernel
    position's contribution separately; BP uses :func:`transposed_im2col` instead.

    Parameters
    ----------
    cols : numpy.ndarray, shape (kh * kw * C_in, B * OH * OW)
        Gradient with respect to the im2col matrix.
    x_shape : (int, int, int, int)
        ``(B, C_in, H, W)`` of the input.
    kh, kw, stride, padding : int
        As for :func:`im2col`.

    Returns
    -------
    numpy.ndarray, shape ``x_shape``
        Each input element receives the sum of the entries of ``cols`` it was copied to
        (padding discarded).
    """
    batch, c_in, height, width = x_shape
    oh = conv_output_size(height, kh, stride, padding)
    ow = conv_output_size(width, kw, stride, padding)
    blocks = cols.reshape(kh, kw, c_in, batch, oh, ow)
    xp = np.zeros((c_in, batch, height + 2 * padding, width + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, _window(i, oh, stride), _window(j, ow, stride)] += blocks[i, j]
    inner = xp[:, :, padding : padding + height, padding : padding + width]
    return np.ascontiguousarray(inner.transpose(1, 0, 2, 3))


def transposed_im2col(
    dy: FloatArray, height: int, width: int, kh: int, kw: int, stride: int, padding: int
) -> FloatArray:
    """Return the BP operand ``dYcol[(i, j, co), (h, w, b)]`` of the transposed convolution.

    The BP pass computes ``dX[c, (h, w, b)] = sum over (i, j, co) of (W . E_B)[co, c, i, j] *
    dYcol[(i, j, co), (h, w, b)]`` as one matrix product, so each input element is one FP32
    chain over the kernel positions ``(i, j)`` in row-major order, then ``co``: the
    accelerator's order (docs/numerics.md). Entries of kernel positions that do not reach
    ``(h, w)`` are ``+0.0``; a zero product leaves an FP32 sum that never holds ``-0.0``
    unchanged, so the chain equals the chain over the reaching positions alone.

    Parameters
    ----------
    dy : numpy.ndarray, shape (B, C_out, OH, OW)
        Gradient with respect to the conv outputs.
    height, width : int
        ``H`` and ``W`` of the conv input.
    kh, kw, stride, padding : int
        As for :func:`im2col`.

    Returns
    -------
    numpy.ndarray, shape (kh * kw * C_out, H * W * B)
        In the dtype of ``dy``. Entry ``((i, j, co), (h, w, b))`` is ``dy[b, co, oh, ow]``
        with ``oh = (h + padding - i) / stride`` and ``ow = (w + padding - j) / stride``
        when both are integers in ``[0, OH)`` and ``[0, OW)``, else ``0``. Rows are ordered
        ``(i, j, co)``, ``co`` fastest; columns ``(h, w, b)``, ``b`` fastest (channel-major
        ``[C][H][W][B]`` activations).

    Raises
    ------
    ShapeError
        If ``dy`` is not 4-D or its output size does not match the input size and kernel.
    """
    if dy.ndim != 4:
        raise ShapeError(f"conv: dy has shape {dy.shape}; it must be 4-D (B, C_out, OH, OW)")
    oh, ow = dy.shape[2], dy.shape[3]
    expected = (
        conv_output_size(height, kh, stride, padding),
        conv_output_size(width, kw, stride, padding),
    )
    if (oh, ow) != expected:
        raise ShapeError(
            f"conv: dy has output size {(oh, ow)}; input {(height, width)}, kernel {(kh, kw)}, "
            f"stride {stride} and padding {padding} give {expected}"
        )
    dy_cm = np.ascontiguousarray(dy.transpose(1, 2, 3, 0))
    return _transposed_im2col_cm(dy_cm, height, width, kh, kw, stride, padding)


def conv2d_forward(
    w: FloatArray,
    x: FloatArray,
    mask_ff: NDArray[np.bool_],
    stride: int = 1,
    padding: int = 0,
    *,
    arith: Arith = NUMPY_ARITH,
) -> tuple[FloatArray, FloatArray]:
    """Run the FF pass of a conv layer: ``Y = (W . E_F) X`` in the im2col view.

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in, kh, kw)
        Dense weights.
    x : numpy.ndarray, shape (B, C_in, H, W)
        Input activations.
    mask_ff : numpy.ndarray of bool, shape of ``w``
        ``E_F`` (:func:`bdwp_masks`).
    stride, padding : int
        Stride and zero padding on both spatial axes.
    arith : Arith
        The arithmetic; computed as ``W_F [C_out, K] @ X [K, P]``.

    Returns
    -------
    y : numpy.ndarray, shape (B, C_out, OH, OW)
        The outputs.
    cols : numpy.ndarray, shape (K, P)
        The im2col matrix of ``x``, for :func:`conv2d_backward`.

    Raises
    ------
    ShapeError
        If the shapes do not fit together.
    """
    _check_conv(w, x.shape, None, mask_ff, stride, padding)
    c_out, _, kh, kw = w.shape
    batch, _, height, width = x.shape
    oh = conv_output_size(height, kh, stride, padding)
    ow = conv_output_size(width, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)
    y_mat = arith.matmul(conv_weight_matrix(_masked(w, mask_ff)), cols)
    y = y_mat.reshape(c_out, batch, oh, ow).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(y), cols


def conv2d_backward(
    w: FloatArray,
    cols: FloatArray,
    x_shape: tuple[int, int, int, int],
    dy: FloatArray,
    mask_bp: NDArray[np.bool_],
    stride: int = 1,
    padding: int = 0,
    *,
    arith: Arith = NUMPY_ARITH,
    input_grad: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """Run the BP and WU passes of a conv layer in the im2col view.

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in, kh, kw)
        Dense weights.
    cols : numpy.ndarray, shape (K, P)
        The im2col matrix of the FF input (:func:`conv2d_forward`).
    x_shape : (int, int, int, int)
        The FF input's shape ``(B, C_in, H, W)``.
    dy : numpy.ndarray, shape (B, C_out, OH, OW)
        Gradient with respect to the outputs.
    mask_bp : numpy.ndarray of bool, shape of ``w``
        ``E_B`` (:func:`bdwp_masks`).
    stride, padding : int
        As in the FF pass.
    arith : Arith
        The arithmetic. WU as ``dY [C_out, P] @ X^T [P, K]`` with ``P`` ordered
        ``(oh, ow, b)``, batch fastest. BP as ``Wt [C_in, kh * kw * C_out] @
        transposed_im2col(dY) [kh * kw * C_out, H * W * B]``, ``Wt[c, (i, j, co)] =
        (W . E_B)[co, c, i, j]``: each input element is one chain over the kernel positions
        ``(i, j)`` that reach it, then ``C_out`` (:func:`transposed_im2col`).
    input_grad : bool
        Run the BP pass. False skips it (a network's first layer, whose input is data) and
        returns zeros for ``dx``.

    Returns
    -------
    dx : numpy.ndarray, shape ``x_shape``
        Gradient with respect to the input.
    dw : numpy.ndarray, shape of ``w``
        Dense weight gradient.

    Raises
    ------
    ShapeError
        If the shapes (``cols`` included) do not fit together.
    """
    _check_conv(w, x_shape, dy, mask_bp, stride, padding)
    c_out, c_in, kh, kw = w.shape
    batch, _, height, width = x_shape
    k_len = kh * kw * c_in
    if cols.shape != (k_len, dy.shape[0] * dy.shape[2] * dy.shape[3]):
        raise ShapeError(
            f"conv: cols has shape {cols.shape}; w {w.shape} and dy {dy.shape} need "
            f"({k_len}, {dy.shape[0] * dy.shape[2] * dy.shape[3]})"
        )
    # Channel-major copies [C][OH][OW][B] first: the strided gathers below then move
    # contiguous batch runs (several times faster than gathering from NCHW views).
    dy_cm = np.ascontiguousarray(dy.transpose(1, 2, 3, 0))
    # WU: reduce over the positions in the accelerator's order (oh, ow, b), batch fastest.
    # X^T is passed as the transposed view of a contiguous X[K, (oh, ow, b)]: no second copy.
    x_cm = np.ascontiguousarray(cols.reshape(k_len, batch, -1).transpose(0, 2, 1))
    dw_mat = arith.matmul(dy_cm.reshape(c_out, -1), x_cm.reshape(k_len, -1).T)
    dw = np.ascontiguousarray(dw_mat.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2))
    if not input_grad:
        return np.zeros(x_shape, dtype=dw.dtype), dw
    # BP: one chain per input element over (i, j), then C_out; no col2im.
    w_bp_t = np.ascontiguousarray(_masked(w, mask_bp).transpose(1, 2, 3, 0)).reshape(c_in, -1)
    dy_cols = _transposed_im2col_cm(dy_cm, height, width, kh, kw, stride, padding)
    dx_mat = arith.matmul(w_bp_t, dy_cols)
    dx = dx_mat.reshape(c_in, height, width, batch).transpose(3, 0, 1, 2)
    return np.ascontiguousarray(dx), dw


def conv2d_grads(
    w: FloatArray,
    x: FloatArray,
    dy: FloatArray,
    n: int,
    m: int,
    stride: int = 1,
    padding: int = 0,
    *,
    sparsity: Sparsity = "bdwp",
    arith: Arith = NUMPY_ARITH,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Run all three BDWP passes of a conv layer (NCHW).

    Parameters
    ----------
    w : numpy.ndarray, shape (C_out, C_in, kh, kw)
        Dense weights; ``C_in`` (and, for ``bdwp``, ``C_out``) a multiple of ``m``.
    x : numpy.ndarray, shape (B, C_in, H, W)
        Input activations.
    dy : numpy.ndarray, shape (B, C_out, OH, OW)
        Gradient with respect to the outputs.
    n, m : int
        The N:M pattern.
    stride, padding : int
        Stride and zero padding on both spatial axes.
    sparsity : {"bdwp", "forward", "dense"}
        Which passes prune (module docstring).
    arith : Arith
        The arithmetic (:class:`NumpyArith` by default).

    Returns
    -------
    y : numpy.ndarray, shape (B, C_out, OH, OW)
        FF with ``E_F = nm_mask(w, n, m, axis=1)`` (groups along C_in).
    dx : numpy.ndarray, shape of ``x``
        BP with ``E_B = nm_mask(w, n, m, axis=0)`` (groups along C_out) of the dense ``w``.
    dw : numpy.ndarray, shape of ``w``
        WU, dense.

    Raises
    ------
    ShapeError
        If the shapes, the pattern, the stride or the padding do not fit together.
    NmsatError
        If ``sparsity`` is unknown.
    """
    _check_conv(w, x.shape, dy, None, stride, padding)
    masks = bdwp_masks(w, n, m, sparsity)
    y, cols = conv2d_forward(w, x, masks.ff, stride, padding, arith=arith)
    x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    dx, dw = conv2d_backward(w, cols, x_shape, dy, masks.bp, stride, padding, arith=arith)
    return y, dx, dw


# ----------------------------------------------------------------------------------------------
# Private helpers


def _window(offset: int, out_size: int, stride: int) -> slice:
    """Return the padded-input positions that kernel offset ``offset`` reads, one per output."""
    return slice(offset, offset + (out_size - 1) * stride + 1, stride)


def _transposed_im2col_cm(
    dy_cm: FloatArray, height: int, width: int, kh: int, kw: int, stride: int, padding: int
) -> FloatArray:
    """Return :func:`transposed_im2col` of a channel-major ``dy_cm[C_out, OH, OW, B]``."""
    c_out, oh, ow, batch = dy_cm.shape
    cols = np.zeros((kh, kw, c_out, height, width, batch), dtype=dy_cm.dtype)
    for i in range(kh):
        out_rows, in_rows = _reach(i, oh, height, stride, padding)
        for j in range(kw):
            out_cols, in_cols = _reach(j, ow, width, stride, padding)
            cols[i, j, :, in_rows, in_cols, :] = dy_cm[:, out_rows, out_cols, :]
    return cols.reshape(kh * kw * c_out, height * width * batch)


def _reach(
    offset: int, out_size: int, in_size: int, stride: int, padding: int
) -> tuple[slice, slice]:
    """Return the outputs that kernel offset ``offset`` maps onto real input, and those inputs.

    Output ``o`` reads input ``o * stride + offset - padding``; the slices select the ``o`` in
    ``[0, out_size)`` whose input lies in ``[0, in_size)``, and those inputs, in step.
    """
    first = max(0, -((offset - padding) // stride))
    last = min(out_size, (in_size - 1 + padding - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    start = first * stride + offset - padding
    return slice(first, last), slice(start, start + (last - first - 1) * stride + 1, stride)


def _masked(w: FloatArray, mask: NDArray[np.bool_]) -> FloatArray:
    """Return ``w`` with pruned entries set to ``+0.0`` (a new array)."""
    return np.where(mask, w, w.dtype.type(0))


def _transposed(a: FloatArray) -> FloatArray:
    """Return the transpose of a 2-D array as a new contiguous array."""
    return np.ascontiguousarray(a.T)


def _check_sparsity(sparsity: str) -> None:
    """Raise NmsatError unless ``sparsity`` is a known mode."""
    if sparsity not in SPARSITY_MODES:
        raise NmsatError(
            f"sparsity {sparsity!r} is not known; allowed: {', '.join(SPARSITY_MODES)}"
        )


def _check_matmul(a: NDArray[Any], b: NDArray[Any]) -> None:
    """Raise ShapeError unless ``a`` (I, K) and ``b`` (K, J) can be multiplied."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(
            f"matmul: a has shape {a.shape} and b has shape {b.shape}; "
            "need 2-D a (I, K) and b (K, J)"
        )


def _check_linear(
    w: NDArray[Any], x: NDArray[Any], dy: NDArray[Any] | None, mask: NDArray[Any] | None
) -> None:
    """Raise ShapeError unless the linear-layer operands fit together."""
    if w.ndim != 2:
        raise ShapeError(f"linear: w has shape {w.shape}; it must be 2-D (C_out, C_in)")
    c_out, c_in = w.shape
    if x.ndim != 2 or x.shape[1] != c_in:
        raise ShapeError(f"linear: x has shape {x.shape}; w {w.shape} needs (B, {c_in})")
    if dy is not None and dy.shape != (x.shape[0], c_out):
        raise ShapeError(
            f"linear: dy has shape {dy.shape}; x {x.shape} and w {w.shape} need "
            f"({x.shape[0]}, {c_out})"
        )
    if mask is not None and mask.shape != w.shape:
        raise ShapeError(f"linear: mask has shape {mask.shape}; it must equal w's {w.shape}")


def _check_conv(
    w: NDArray[Any],
    x_shape: tuple[int, ...],
    dy: NDArray[Any] | None,
    mask: NDArray[Any] | None,
    stride: int,
    padding: int,
) -> None:
    """Raise ShapeError unless the conv-layer operands fit together."""
    if w.ndim != 4:
        raise ShapeError(f"conv: w has shape {w.shape}; it must be 4-D (C_out, C_in, kh, kw)")
    c_out, c_in, kh, kw = w.shape
    if len(x_shape) != 4 or x_shape[1] != c_in:
        raise ShapeError(f"conv: x has shape {x_shape}; w {w.shape} needs (B, {c_in}, H, W)")
    oh = conv_output_size(x_shape[2], kh, stride, padding)
    ow = conv_output_size(x_shape[3], kw, stride, padding)
    expected = (x_shape[0], c_out, oh, ow)
    if dy is not None and dy.shape != expected:
        raise ShapeError(
            f"conv: dy has shape {dy.shape}; x {x_shape} and w {w.shape} need {expected}"
        )
    if mask is not None and mask.shape != w.shape:
        raise ShapeError(f"conv: mask has shape {mask.shape}; it must equal w's {w.shape}")
