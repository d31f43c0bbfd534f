"""Weightless operations of a training step: pooling and element-wise layers.

They carry no weights and no GEMM. Where they run is the compiler's choice; the split that
:mod:`nmsat.models.layers` documents puts ReLU (and its gradient mask) and the adds on the
WUVE, and normalisation, pooling and softmax on the host (DESIGN.md section 4).

Ref: S. Ioffe, C. Szegedy, "Batch Normalization", ICML 2015; J. L. Ba et al., "Layer
     Normalization", 2016; D. Hendrycks, K. Gimpel, "Gaussian Error Linear Units", 2016.
Ref: docs/zoo.md (which operations each model runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from nmsat.hw.errors import ShapeError

from ._layers import Layer, check_int, conv_out

__all__ = ["GELU", "Add", "ElementwiseLayer", "Norm", "Pool", "ReLU", "Softmax"]


@dataclass(frozen=True, kw_only=True)
class Pool(Layer):
    """Max or average pooling over square windows.

    Parameters
    ----------
    kind : {"max", "avg"}
        The reduction.
    c, h_in, w_in : int
        Input channels, height and width.
    kernel : int
        Window size (square); a global average pool has ``kernel == h_in == w_in``.
    stride : int
        Window stride.
    padding : int
        Padding on each side (default 0; ignored values for max, zeros for avg).
    """

    op: ClassVar[str] = "pool"
    kind: Literal["max", "avg"]
    c: int
    h_in: int
    w_in: int
    kernel: int
    stride: int
    padding: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in ("max", "avg"):
            raise ShapeError(f"layer {self.name!r}: kind {self.kind!r}; allowed: max, avg")
        for field in ("c", "h_in", "w_in", "kernel", "stride"):
            check_int(self.name, field, getattr(self, field), 1)
        check_int(self.name, "padding", self.padding, 0)
        conv_out(self.name, "kernel", self.h_in, self.kernel, self.stride, self.padding)
        conv_out(self.name, "kernel", self.w_in, self.kernel, self.stride, self.padding)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(c, h_out, w_out)``."""
        h = conv_out(self.name, "kernel", self.h_in, self.kernel, self.stride, self.padding)
        w = conv_out(self.name, "kernel", self.w_in, self.kernel, self.stride, self.padding)
        return self.c, h, w


@dataclass(frozen=True, kw_only=True)
class ElementwiseLayer(Layer):
    """A weightless operation whose output has the shape of its input.

    Parameters
    ----------
    shape : tuple of int
        One sample's tensor shape (a list is accepted and stored as a tuple).
    """

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if type(self) is ElementwiseLayer:
            raise TypeError("ElementwiseLayer is a base class; use ReLU, GELU, Add, Softmax, Norm")
        super().__post_init__()
        if isinstance(self.shape, list):
            object.__setattr__(self, "shape", tuple(self.shape))
        if not isinstance(self.shape, tuple) or not self.shape:
            raise ShapeError(f"layer {self.name!r}: shape must be a non-empty list of integers")
        for size in self.shape:
            check_int(self.name, "shape", size, 1)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``shape``."""
        return self.shape

    @property
    def elements(self) -> int:
        """Elements per sample the operation reads (and writes)."""
        return math.prod(self.shape)


@dataclass(frozen=True, kw_only=True)
class ReLU(ElementwiseLayer):
    """``max(x, 0)``; its gradient is a mask of the forward input (WUVE)."""

    op: ClassVar[str] = "relu"


@dataclass(frozen=True, kw_only=True)
class GELU(ElementwiseLayer):
    """Gaussian error linear unit (transformer MLPs)."""

    op: ClassVar[str] = "gelu"


@dataclass(frozen=True, kw_only=True)
class Add(ElementwiseLayer):
    """Element-wise sum of two tensors of ``shape`` (a residual, a position embedding).

    ``inputs`` names both operands, ``(residual stream or main path, branch or shortcut)``:
    a model checks that each has ``shape``. With ``parameter=True`` the second operand is a
    learned parameter of ``shape`` that the layer owns (ViT's position embedding), not a
    layer's output, and the add reads one tensor.

    Parameters
    ----------
    parameter : bool
        Whether the second operand is the layer's own parameter (default False: two
        activations).
    """

    op: ClassVar[str] = "add"
    parameter: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.parameter, bool):
            raise ShapeError(f"layer {self.name!r}: parameter must be true or false")

    @property
    def arity(self) -> int:
        """2, or 1 when the second operand is the layer's parameter."""
        return 1 if self.parameter else 2


@dataclass(frozen=True, kw_only=True)
class Softmax(ElementwiseLayer):
    """Softmax along the last axis of ``shape`` (attention scores, or the loss)."""

    op: ClassVar[str] = "softmax"


@dataclass(frozen=True, kw_only=True)
class Norm(ElementwiseLayer):
    """Batch normalisation (per channel, axis 0 of ``shape``) or layer normalisation.

    Parameters
    ----------
    kind : {"batch", "layer"}
        ``"batch"``: statistics over batch and pixels per channel; ``"layer"``: statistics
        over the last axis of ``shape`` per row.
    """

    op: ClassVar[str] = "norm"
    kind: Literal["batch", "layer"]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in ("batch", "layer"):
            raise ShapeError(f"layer {self.name!r}: kind {self.kind!r}; allowed: batch, layer")
