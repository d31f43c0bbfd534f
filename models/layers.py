"""Training layers in numpy: forward, backward and parameters, with BDWP in Linear and Conv2d.

Every layer follows one protocol (:class:`Layer`): ``forward(x, training=...)`` returns the
output and, when training, keeps what ``backward`` needs; ``backward(dy)`` returns the
gradient with respect to the input and stores the parameter gradients in
:attr:`Param.grad`; ``params()`` lists the trainable tensors. Parameter gradients are set,
not accumulated: every layer runs once per step.

Where each operation runs on the accelerator (decision; DESIGN.md section 4)
    - STCE (GEMMs): :class:`Linear` and :class:`Conv2d`, the three BDWP passes of
      :mod:`nmsat.models.bdwp`.
    - WUVE (FP32 element-wise): :class:`ReLU` and its gradient, the residual add of
      :class:`Residual`, and the optimizer step (:mod:`nmsat.models.optim`).
    - Host: :class:`BatchNorm` (batch statistics need a reduction over batch and pixels and a
      square root; small next to the GEMMs), :class:`MaxPool2d` and :class:`AvgPool2d`
      (window reductions with arg-max bookkeeping), :class:`Flatten` (a relabelling, no data
      movement) and :func:`softmax_cross_entropy` (exponentials and a logarithm).

Sparsity per layer (decision; see :mod:`nmsat.models.nm`)
    :class:`Linear` and :class:`Conv2d` take ``n``, ``m`` and a mode ``sparsity`` in
    ``{"bdwp", "forward", "dense"}``. A layer whose grouping dimensions do not divide by ``m``
    (C_in for FF; also C_out for ``bdwp``) becomes dense in every pass; its ``sparsity``
    attribute then reads ``"dense"``. Masks are recomputed from the current dense weights at
    every forward pass (SR-STE); the FF mask is also left in :attr:`Param.mask` for the
    SR-STE term of the update.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (BDWP; STCE, WUVE, host split).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (SR-STE: masks recomputed every iteration).
Ref: S. Ioffe, C. Szegedy, "Batch Normalization", ICML 2015 (BN; running statistics as in
     PyTorch ``BatchNorm2d``: momentum 0.1, unbiased running variance).
Ref: K. He et al., "Delving Deep into Rectifiers", ICCV 2015 (He-normal initialisation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import DTypeLike, NDArray

from nmsat.hw import numerics
from nmsat.hw.errors import ShapeError

from .bdwp import (
    NUMPY_ARITH,
    Arith,
    BDWPMasks,
    FloatArray,
    Sparsity,
    bdwp_masks,
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    linear_backward,
    linear_forward,
)
from .nm import check_nm, nm_applicable

__all__ = [
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "FP16Storage",
    "Flatten",
    "Layer",
    "Linear",
    "MaxPool2d",
    "Param",
    "ReLU",
    "Residual",
    "Sequential",
    "effective_sparsity",
    "softmax_cross_entropy",
]

_T = TypeVar("_T")


@dataclass(eq=False)
class Param:
    """A trainable tensor.

    Members
    -------
    name : str
        Its role within its layer (``"weight"``, ``"bias"``, ``"gamma"``, ``"beta"``).
    value : numpy.ndarray
        The dense master values; the optimizer replaces this array at every step.
    grad : numpy.ndarray
        The gradient of the last ``backward``, same shape (zeros before the first).
    mask : numpy.ndarray of bool
        ``E_F`` of the last forward pass: True where the FF pass kept the weight; all True for
        dense tensors. The SR-STE term acts where it is False.
    decay : bool
        Whether weight decay and the SR-STE term apply (weights: yes; biases and BN: no).
    """

    name: str
    value: FloatArray
    grad: FloatArray
    mask: NDArray[np.bool_]
    decay: bool

    @classmethod
    def create(cls, name: str, value: FloatArray, *, decay: bool) -> Param:
        """Return a parameter with zero gradient and an all-True mask."""
        return cls(
            name=name,
            value=value,
            grad=np.zeros_like(value),
            mask=np.ones(value.shape, dtype=np.bool_),
            decay=decay,
        )


class Layer(ABC):
    """A differentiable operation with optional parameters.

    Members
    -------
    forward(x, training)
        Return the output; when ``training``, keep what ``backward`` needs.
    backward(dy)
        Return the gradient with respect to the last training forward's input; set
        parameter gradients.
    params()
        The trainable tensors, in a fixed order.
    """

    @abstractmethod
    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return the layer's output for input ``x``."""

    @abstractmethod
    def backward(self, dy: FloatArray) -> FloatArray:
        """Return the gradient with respect to the input, given the output gradient ``dy``."""

    def params(self) -> list[Param]:
        """Return the trainable tensors (none by default)."""
        return []


def effective_sparsity(sparsity: Sparsity, n: int, m: int, c_in: int, c_out: int) -> Sparsity:
    """Return the sparsity mode a layer actually uses, after the divisibility policy.

    Parameters
    ----------
    sparsity : {"bdwp", "forward", "dense"}
        The requested mode.
    n, m : int
        The pattern.
    c_in, c_out : int
        The layer's input and output channels (the FF and BP grouping dimensions).

    Returns
    -------
    {"bdwp", "forward", "dense"}
        ``"dense"`` if ``n == m``, or if C_in (FF) or, for ``bdwp``, C_out (BP) is not a
        multiple of ``m``; otherwise ``sparsity``.
    """
    check_nm(n, m)
    if sparsity == "dense" or n == m or not nm_applicable(c_in, m):
        return "dense"
    if sparsity == "bdwp" and not nm_applicable(c_out, m):
        return "dense"
    return sparsity


class _WeightLayer(Layer):
    """Shared parameter handling of :class:`Linear` and :class:`Conv2d`."""

    weight: Param
    bias: Param | None
    n: int
    m: int
    sparsity: Sparsity
    arith: Arith
    input_grad: bool
    _masks: BDWPMasks | None

    def _init_params(
        self,
        shape: tuple[int, ...],
        fan_in: int,
        bias: bool,
        rng: np.random.Generator,
        dtype: DTypeLike,
    ) -> None:
        std = math.sqrt(2.0 / fan_in)
        self.weight = Param.create(
            "weight", (rng.standard_normal(shape) * std).astype(dtype), decay=True
        )
        self.bias = (
            Param.create("bias", np.zeros(shape[0], dtype=dtype), decay=False) if bias else None
        )
        self._masks = None

    def _current_masks(self) -> BDWPMasks:
        """Compute E_F and E_B from the current dense weights; publish E_F for SR-STE."""
        masks = bdwp_masks(self.weight.value, self.n, self.m, self.sparsity)
        self.weight.mask = masks.ff
        return masks

    def params(self) -> list[Param]:
        """Return the weight, then the bias if there is one."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]


class Linear(_WeightLayer):
    """A fully connected layer, ``y = x (W . E_F)^T + b``, with BDWP gradients.

    Parameters
    ----------
    c_in, c_out : int
        Input and output features.
    n, m : int
        The N:M pattern (ignored when the layer is dense).
    sparsity : {"bdwp", "forward", "dense"}
        Requested mode; :func:`effective_sparsity` decides what is used.
    bias : bool
        Whether to add a bias (not pruned, no weight decay).
    rng : numpy.random.Generator
        Source of the He-normal initial weights.
    dtype : numpy dtype
        float32 or float64.
    arith : Arith
        Arithmetic of the GEMM passes (:class:`nmsat.models.bdwp.NumpyArith` by default).
    input_grad : bool
        Whether ``backward`` runs the BP pass. Pass False for a network's first layer: its
        input is data, the BP pass is skipped and ``backward`` returns zeros.

    Members
    -------
    weight : Param
        Shape (C_out, C_in).
    bias : Param or None
        Shape (C_out,).
    sparsity : str
        The mode in use.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        n: int = 1,
        m: int = 1,
        sparsity: Sparsity = "dense",
        bias: bool = True,
        rng: np.random.Generator,
        dtype: DTypeLike = np.float32,
        arith: Arith = NUMPY_ARITH,
        input_grad: bool = True,
    ) -> None:
        if c_in < 1 or c_out < 1:
            raise ShapeError(f"Linear: features {c_in} -> {c_out}; both must be >= 1")
        self.n, self.m, self.arith, self.input_grad = n, m, arith, input_grad
        self.sparsity = effective_sparsity(sparsity, n, m, c_in, c_out)
        self._init_params((c_out, c_in), c_in, bias, rng, dtype)
        self._x: FloatArray | None = None

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return ``x (W . E_F)^T + b`` for ``x`` of shape (B, C_in)."""
        masks = self._current_masks()
        y = linear_forward(self.weight.value, x, masks.ff, arith=self.arith)
        if self.bias is not None:
            y = y + self.bias.value
        if training:
            self._x, self._masks = x, masks
        return y

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return ``dy (W . E_B)``; set ``dW = dy^T x`` (dense) and ``db = sum(dy)``."""
        x, masks = _require(self._x, "Linear"), _require(self._masks, "Linear")
        dx, dw = linear_backward(
            self.weight.value, x, dy, masks.bp, arith=self.arith, input_grad=self.input_grad
        )
        self.weight.grad = dw
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=0)
        return dx


class Conv2d(_WeightLayer):
    """A 2-D convolution (NCHW, square kernel) with BDWP gradients.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels. FF groups run along C_in, BP groups along C_out.
    kernel : int
        Kernel height and width.
    stride, padding : int
        Stride and zero padding on both spatial axes.
    n, m, sparsity, bias, rng, dtype, arith, input_grad
        As for :class:`Linear`.

    Members
    -------
    weight : Param
        Shape (C_out, C_in, kernel, kernel).
    bias : Param or None
        Shape (C_out,).
    sparsity : str
        The mode in use.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int = 0,
        n: int = 1,
        m: int = 1,
        sparsity: Sparsity = "dense",
        bias: bool = True,
        rng: np.random.Generator,
        dtype: DTypeLike = np.float32,
        arith: Arith = NUMPY_ARITH,
        input_grad: bool = True,
    ) -> None:
        if min(c_in, c_out, kernel, stride) < 1 or padding < 0:
            raise ShapeError(
                f"Conv2d: channels {c_in} -> {c_out}, kernel {kernel}, stride {stride}, "
                f"padding {padding}; need positive sizes and padding >= 0"
            )
        self.n, self.m, self.arith, self.input_grad = n, m, arith, input_grad
        self.stride, self.padding = stride, padding
        self.sparsity = effective_sparsity(sparsity, n, m, c_in, c_out)
        shape = (c_out, c_in, kernel, kernel)
        self._init_params(shape, c_in * kernel * kernel, bias, rng, dtype)
        self._cols: FloatArray | None = None
        self._x_shape: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return the convolution of ``x`` (B, C_in, H, W) with ``W . E_F``, plus bias."""
        masks = self._current_masks()
        y, cols = conv2d_forward(
            self.weight.value, x, masks.ff, self.stride, self.padding, arith=self.arith
        )
        if self.bias is not None:
            y = y + self.bias.value[None, :, None, None]
        if training:
            self._cols, self._masks = cols, masks
            self._x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return y

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return the input gradient through ``W . E_B``; set the dense ``dW`` and ``db``."""
        cols, masks = _require(self._cols, "Conv2d"), _require(self._masks, "Conv2d")
        dx, dw = conv2d_backward(
            self.weight.value,
            cols,
            self._x_shape,
            dy,
            masks.bp,
            self.stride,
            self.padding,
            arith=self.arith,
            input_grad=self.input_grad,
        )
        self.weight.grad = dw
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=(0, 2, 3))
        return dx


class FP16Storage(Layer):
    """Round activations (forward) and gradients (backward) to FP16, as stored on the accelerator.

    The accelerator keeps activations and activation gradients in FP16 in its buffers and in
    external memory (docs/compiler.md); placed after each GEMM layer, this layer makes the
    numpy trainer see the same values (with ``SATArith`` and the exact update, a training step
    then equals the accelerator's bit for bit: tests/e2e). Values keep their dtype.
    """

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        out: FloatArray = numerics.to_fp16(x).astype(x.dtype)
        return out

    def backward(self, dy: FloatArray) -> FloatArray:
        out: FloatArray = numerics.to_fp16(dy).astype(dy.dtype)
        return out


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where the input was positive (WUVE RELU_GRAD)."""

    def __init__(self) -> None:
        self._positive: NDArray[np.bool_] | None = None

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return ``x`` where positive, ``0`` elsewhere."""
        positive = x > 0
        if training:
            self._positive = positive
        return np.where(positive, x, x.dtype.type(0))

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return ``dy`` where the forward input was positive, ``0`` elsewhere."""
        positive = _require(self._positive, "ReLU")
        return np.where(positive, dy, dy.dtype.type(0))


class _Pool2d(Layer):
    """Shared window handling of the pooling layers (no padding)."""

    def __init__(self, kernel: int, stride: int | None = None) -> None:
        step = kernel if stride is None else stride
        if kernel < 1 or step < 1:
            raise ShapeError(f"pooling: kernel {kernel}, stride {step}; both must be >= 1")
        self.kernel, self.stride = kernel, step
        self._x_shape: tuple[int, int, int, int] | None = None

    def _windows(self, x: FloatArray) -> tuple[NDArray[Any], int, int]:
        """Return the (B, C, OH, OW, k * k) windows of ``x`` and the output size."""
        if x.ndim != 4:
            raise ShapeError(f"pooling: x has shape {x.shape}; it must be 4-D (B, C, H, W)")
        k, s = self.kernel, self.stride
        oh = conv_output_size(x.shape[2], k, s, 0)
        ow = conv_output_size(x.shape[3], k, s, 0)
        win = sliding_window_view(x, (k, k), axis=(2, 3))[
            :, :, : (oh - 1) * s + 1 : s, : (ow - 1) * s + 1 : s
        ]
        return win.reshape(*win.shape[:4], k * k), oh, ow

    def _scatter(self, blocks: FloatArray, x_shape: tuple[int, int, int, int]) -> FloatArray:
        """Sum per-window-position gradients ``blocks[k * k, B, C, OH, OW]`` onto the input.

        This is :func:`nmsat.models.bdwp.col2im` with every (B, C) plane as its own image of
        one channel; overlapping windows add up.
        """
        batch, chan, height, width = x_shape
        planes = (batch * chan, 1, height, width)
        cols = np.ascontiguousarray(blocks).reshape(self.kernel * self.kernel, -1)
        dx = col2im(cols, planes, self.kernel, self.kernel, self.stride, 0)
        return dx.reshape(x_shape)


class MaxPool2d(_Pool2d):
    """Maximum over ``kernel x kernel`` windows; the gradient goes to the first maximum.

    Parameters
    ----------
    kernel : int
        Window height and width.
    stride : int, optional
        Step between windows (default: ``kernel``).
    """

    def __init__(self, kernel: int, stride: int | None = None) -> None:
        super().__init__(kernel, stride)
        self._argmax: NDArray[np.intp] | None = None

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return the window maxima, shape (B, C, OH, OW)."""
        win, _, _ = self._windows(x)
        argmax = np.argmax(win, axis=-1)
        if training:
            self._argmax = argmax
            self._x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return np.ascontiguousarray(np.take_along_axis(win, argmax[..., None], axis=-1)[..., 0])

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return ``dy`` routed to each window's arg-max (summed where windows overlap)."""
        argmax = _require(self._argmax, "MaxPool2d")
        x_shape = _require(self._x_shape, "MaxPool2d")
        positions = np.arange(self.kernel * self.kernel).reshape(-1, 1, 1, 1, 1)
        return self._scatter(
            np.where(argmax[None] == positions, dy[None], dy.dtype.type(0)), x_shape
        )


class AvgPool2d(_Pool2d):
    """Mean over ``kernel x kernel`` windows.

    Parameters
    ----------
    kernel : int
        Window height and width.
    stride : int, optional
        Step between windows (default: ``kernel``).
    """

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return the window means, shape (B, C, OH, OW)."""
        win, _, _ = self._windows(x)
        if training:
            self._x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return np.ascontiguousarray(win.mean(axis=-1, dtype=x.dtype))

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return ``dy / k**2`` spread evenly over each window (summed where they overlap)."""
        x_shape = _require(self._x_shape, "AvgPool2d")
        share = (dy / (self.kernel * self.kernel)).astype(dy.dtype)
        return self._scatter(np.broadcast_to(share, (self.kernel**2, *share.shape)), x_shape)


class BatchNorm(Layer):
    """Batch normalisation over every axis but the channel axis 1 (runs on the host).

    For (B, C) inputs it normalises over the batch, for (B, C, H, W) over batch and pixels.
    Training uses the batch's mean and biased variance and updates the running statistics
    (``momentum`` weight of the new batch; unbiased variance, as PyTorch); evaluation uses
    the running statistics.

    Parameters
    ----------
    channels : int
        C.
    eps : float
        Added to the variance before the square root.
    momentum : float
        Weight of the current batch in the running statistics.
    dtype : numpy dtype
        float32 or float64.

    Members
    -------
    gamma, beta : Param
        Scale and shift, shape (C,); no weight decay.
    running_mean, running_var : numpy.ndarray
        Statistics for evaluation, shape (C,).
    """

    def __init__(
        self,
        channels: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        if channels < 1:
            raise ShapeError(f"BatchNorm: channels = {channels}; must be >= 1")
        self.eps, self.momentum = eps, momentum
        self.gamma = Param.create("gamma", np.ones(channels, dtype=dtype), decay=False)
        self.beta = Param.create("beta", np.zeros(channels, dtype=dtype), decay=False)
        self.running_mean = np.zeros(channels, dtype=dtype)
        self.running_var = np.ones(channels, dtype=dtype)
        self._cache: tuple[FloatArray, FloatArray] | None = None

    def _axes_and_shape(self, x: FloatArray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        channels = self.gamma.value.shape[0]
        if x.ndim not in (2, 4) or x.shape[1] != channels:
            raise ShapeError(
                f"BatchNorm: x has shape {x.shape}; need (B, {channels}) or (B, {channels}, H, W)"
            )
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, channels) if x.ndim == 2 else (1, channels, 1, 1)
        return axes, shape

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return ``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel."""
        axes, shape = self._axes_and_shape(x)
        if training:
            count = x.size // x.shape[1]
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            unbiased = var * (count / max(count - 1, 1))
            self.running_mean = (
                (1 - self.momentum) * self.running_mean + self.momentum * mean
            ).astype(x.dtype)
            self.running_var = (
                (1 - self.momentum) * self.running_var + self.momentum * unbiased
            ).astype(x.dtype)
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        if training:
            self._cache = (x_hat, inv_std)
        y: FloatArray = x_hat * self.gamma.value.reshape(shape) + self.beta.value.reshape(shape)
        return y

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return the input gradient through the batch statistics; set dgamma and dbeta."""
        x_hat, inv_std = _require(self._cache, "BatchNorm")
        axes, shape = self._axes_and_shape(dy)
        count = dy.size // dy.shape[1]
        self.gamma.grad = (dy * x_hat).sum(axis=axes)
        self.beta.grad = dy.sum(axis=axes)
        dx_hat = dy * self.gamma.value.reshape(shape)
        mean_dx_hat = dx_hat.sum(axis=axes).reshape(shape) / count
        mean_proj = (dx_hat * x_hat).sum(axis=axes).reshape(shape) / count
        dx: FloatArray = (dx_hat - mean_dx_hat - x_hat * mean_proj) * inv_std.reshape(shape)
        return dx

    def params(self) -> list[Param]:
        """Return gamma, then beta."""
        return [self.gamma, self.beta]


class Flatten(Layer):
    """Reshape (B, ...) to (B, prod(...)); the gradient is reshaped back."""

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return ``x`` as (B, features)."""
        if training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return ``dy`` in the input's shape."""
        return dy.reshape(_require(self._shape, "Flatten"))


class Sequential(Layer):
    """Layers applied one after another.

    Parameters
    ----------
    *layers : Layer
        In forward order.

    Members
    -------
    layers : list of Layer
        The layers.
    """

    def __init__(self, *layers: Layer) -> None:
        self.layers = list(layers)

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return the last layer's output."""
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, dy: FloatArray) -> FloatArray:
        """Run every layer's backward in reverse order; return the input gradient."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def params(self) -> list[Param]:
        """Return the layers' parameters in forward order."""
        return [p for layer in self.layers for p in layer.params()]


class Residual(Layer):
    """``body(x) + shortcut(x)``: a residual block; the add runs on the WUVE.

    Parameters
    ----------
    body : Layer
        The main branch.
    shortcut : Layer, optional
        The projection branch; the identity when omitted.
    """

    def __init__(self, body: Layer, shortcut: Layer | None = None) -> None:
        self.body, self.shortcut = body, shortcut

    def forward(self, x: FloatArray, *, training: bool = True) -> FloatArray:
        """Return ``body(x) + shortcut(x)``."""
        skip = x if self.shortcut is None else self.shortcut.forward(x, training=training)
        out = self.body.forward(x, training=training)
        if out.shape != skip.shape:
            raise ShapeError(
                f"Residual: body gives shape {out.shape} and shortcut {skip.shape}; "
                "they must be equal"
            )
        return out + skip

    def backward(self, dy: FloatArray) -> FloatArray:
        """Return the sum of both branches' input gradients."""
        dx = self.body.backward(dy)
        return dx + (dy if self.shortcut is None else self.shortcut.backward(dy))

    def params(self) -> list[Param]:
        """Return the body's parameters, then the shortcut's."""
        extra = [] if self.shortcut is None else self.shortcut.params()
        return self.body.params() + extra


def softmax_cross_entropy(
    logits: FloatArray, labels: NDArray[np.integer[Any]]
) -> tuple[float, FloatArray]:
    """Return the mean softmax cross-entropy loss and its gradient (runs on the host).

    Parameters
    ----------
    logits : numpy.ndarray, shape (B, classes)
        Unnormalised scores.
    labels : numpy.ndarray of int, shape (B,)
        Class indices in ``0 .. classes-1``.

    Returns
    -------
    loss : float
        ``mean_b(-log softmax(logits)[b, labels[b]])``, computed stably (max subtracted).
    dlogits : numpy.ndarray, shape (B, classes)
        ``(softmax(logits) - onehot(labels)) / B`` in the logits' dtype.

    Raises
    ------
    ShapeError
        If the shapes do not fit or a label is out of range.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ShapeError(
            f"softmax_cross_entropy: logits {logits.shape} and labels {labels.shape}; "
            "need (B, classes) and (B,)"
        )
    batch, classes = logits.shape
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ShapeError(
            f"softmax_cross_entropy: labels span {int(labels.min())} .. {int(labels.max())}; "
            f"allowed: 0 .. {classes - 1}"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    rows = np.arange(batch)
    loss = -float(log_probs[rows, labels].mean())
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    return loss, (grad / batch).astype(logits.dtype)


def _require(value: _T | None, layer: str) -> _T:
    """Return ``value``, or raise if ``backward`` comes before a training ``forward``."""
    if value is None:
        raise RuntimeError(f"{layer}: backward called before a training forward pass")
    return value
