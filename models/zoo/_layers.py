"""Layer records of the model zoo: the base class and the GEMM layers (conv, linear, matmul).

A layer record describes one operation of a training step for ONE sample; only the GEMM view
(:meth:`WeightLayer.gemm`, :meth:`MatMul.gemm`) takes the batch. Records are frozen and
validated on construction: a size that is not a positive integer, or a kernel larger than its
padded input, raises :class:`~nmsat.hw.errors.ShapeError` naming the layer, the field and the
rule.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (BDWP: FF, BP, WU per layer).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (first conv and classifier dense; groups along input channels).
Ref: PAPER.md (BDWP math table, im2col view); docs/zoo.md (the choices made here).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from nmsat.hw.errors import ShapeError

__all__ = ["Conv2d", "Layer", "Linear", "MatMul", "Sparsity", "WeightLayer"]

Sparsity = Literal["bdwp", "forward", "dense"]
"""Which GEMM passes use N:M weights: FF and BP (BDWP), FF only (SR-STE), or none."""


def check_int(layer: str, field: str, value: object, minimum: int) -> None:
    """Raise ShapeError unless ``value`` is an integer >= ``minimum`` (package-private)."""
    # bool is an int subclass; True as a channel count is always a mistake.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ShapeError(f"layer {layer!r}: {field} must be an integer >= {minimum}, got {value!r}")


def conv_out(layer: str, field: str, size: int, kernel: int, stride: int, padding: int) -> int:
    """Return a window's output length along one axis; raise if the kernel does not fit."""
    if size + 2 * padding < kernel:
        raise ShapeError(
            f"layer {layer!r}: {field} {kernel} is larger than the padded input "
            f"({size} + 2 x padding {padding})"
        )
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True, kw_only=True)
class Layer(ABC):
    """One operation of a training step, described per sample.

    Parameters
    ----------
    name : str
        Unique within its :class:`~nmsat.models.zoo.Model` (torchvision-style where one exists,
        e.g. ``layer1.0.conv2``); ``"input"`` is reserved for the model's input.
    inputs : tuple of str
        The tensors the layer reads, in operand order: names of earlier layers of its model,
        or ``"input"`` for the model's input (a list is accepted and stored as a tuple). The
        default ``()`` means "the previous layer's output" (the model input for the first
        layer); :class:`~nmsat.models.zoo.Model` resolves it, stores every layer with
        explicit names and checks the count against :attr:`arity`.
    """

    op: ClassVar[str]
    """The operation's name in layer files and summaries (``"conv2d"``, ``"relu"``, ...)."""

    name: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ShapeError(f"{self.op} layer: name must be a non-empty string, got {self.name!r}")
        if isinstance(self.inputs, list):
            object.__setattr__(self, "inputs", tuple(self.inputs))
        if not isinstance(self.inputs, tuple) or not all(
            isinstance(ref, str) and ref for ref in self.inputs
        ):
            raise ShapeError(
                f"layer {self.name!r}: inputs must be a tuple of layer names or 'input', "
                f"got {self.inputs!r}"
            )

    @property
    def arity(self) -> int:
        """Number of tensors the layer reads: 1 (2 for :class:`MatMul` and a two-input ``Add``)."""
        return 1

    @property
    @abstractmethod
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one sample's output: ``(C, H, W)``, ``(tokens, features)`` and so on."""

    @property
    def output_elements(self) -> int:
        """Number of elements of one sample's output."""
        return math.prod(self.output_shape)

    @property
    def macs_per_sample(self) -> int:
        """Forward multiply-accumulates per sample (0 for layers without a GEMM)."""
        return 0

    @property
    def weight_count(self) -> int:
        """Number of GEMM weights (no biases, no normalisation parameters)."""
        return 0


@dataclass(frozen=True, kw_only=True)
class WeightLayer(Layer):
    """A layer with a weight ``W[C_out, K]``: the three BDWP passes run on it.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels (features). C_in groups the FF copy, C_out the BP copy.
    sparse : bool
        Whether the layer is N:M-eligible by policy (default True). The zoo sets False for
        the first conv, patch embeddings and the final classifier; divisibility by M is
        checked later by :meth:`sparse_passes`.
    """

    c_in: int
    c_out: int
    sparse: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.name, "c_in", self.c_in, 1)
        check_int(self.name, "c_out", self.c_out, 1)
        if not isinstance(self.sparse, bool):
            raise ShapeError(f"layer {self.name!r}: sparse must be true or false")

    @property
    @abstractmethod
    def k(self) -> int:
        """Reduction length of the GEMM view: ``C_in * kh * kw`` (C_in for a linear)."""

    @abstractmethod
    def positions(self) -> int:
        """Return the output positions per sample (``H_out * W_out``, or tokens)."""

    def gemm(self, batch: int) -> tuple[int, int, int]:
        """Return ``(C_out, K, P)``: ``W[C_out, K]``, ``X[K, P]``, ``P = batch * positions``.

        FF ``Y = W X`` and BP ``dX = W^T dY`` and WU ``dW = dY X^T`` each take
        ``C_out * K * P`` MACs (before N:M skipping).
        """
        check_int(self.name, "batch", batch, 1)
        return self.c_out, self.k, batch * self.positions()

    def gemm_count(self, batch: int) -> int:
        """Return the number of GEMMs of :meth:`gemm`'s size per pass: 1 (batch is in P)."""
        check_int(self.name, "batch", batch, 1)
        return 1

    @property
    def macs_per_sample(self) -> int:
        """Forward MACs per sample: ``C_out * K * positions``."""
        return self.c_out * self.k * self.positions()

    @property
    def weight_count(self) -> int:
        """``C_out * K``."""
        return self.c_out * self.k

    def sparse_passes(self, m: int, sparsity: Sparsity = "bdwp") -> tuple[bool, bool]:
        """Return whether FF and BP use N:M weights with group size ``m``.

        Parameters
        ----------
        m : int
            The N:M group size (>= 1).
        sparsity : {"bdwp", "forward", "dense"}
            The training mode. ``"bdwp"`` needs C_in (FF groups) AND C_out (BP groups) to be
            multiples of ``m``, else the layer is dense in every pass; ``"forward"`` needs
            C_in only and keeps BP dense. WU is dense in every mode.

        Returns
        -------
        (bool, bool)
            ``(FF sparse, BP sparse)``; both False when :attr:`sparse` is False.
        """
        check_int(self.name, "m", m, 1)
        if sparsity not in ("bdwp", "forward", "dense"):
            raise ShapeError(f"sparsity {sparsity!r}; allowed: bdwp, forward, dense")
        ff_ok = self.sparse and self.c_in % m == 0
        if sparsity == "dense" or not ff_ok:
            return False, False
        if sparsity == "forward":
            return True, False
        both = self.c_out % m == 0
        return both, both


@dataclass(frozen=True, kw_only=True)
class Conv2d(WeightLayer):
    """A 2-D convolution (no groups, no dilation); im2col ``K = C_in * kh * kw``.

    Parameters
    ----------
    kh, kw : int
        Kernel height and width.
    stride : int
        Stride along both axes (default 1).
    padding : int
        Zero padding on each side of both axes (default 0).
    h_in, w_in : int
        Input height and width.
    """

    op: ClassVar[str] = "conv2d"
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0
    h_in: int
    w_in: int

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("kh", "kw", "stride", "h_in", "w_in"):
            check_int(self.name, field, getattr(self, field), 1)
        check_int(self.name, "padding", self.padding, 0)
        conv_out(self.name, "kh", self.h_in, self.kh, self.stride, self.padding)
        conv_out(self.name, "kw", self.w_in, self.kw, self.stride, self.padding)

    @property
    def h_out(self) -> int:
        """Output height: ``(h_in + 2 * padding - kh) // stride + 1``."""
        return conv_out(self.name, "kh", self.h_in, self.kh, self.stride, self.padding)

    @property
    def w_out(self) -> int:
        """Output width: ``(w_in + 2 * padding - kw) // stride + 1``."""
        return conv_out(self.name, "kw", self.w_in, self.kw, self.stride, self.padding)

    @property
    def k(self) -> int:
        """``C_in * kh * kw``, ordered ``(kh, kw, C_in)`` (C_in fastest, as SR-STE groups)."""
        return self.c_in * self.kh * self.kw

    def positions(self) -> int:
        """Return ``h_out * w_out``."""
        return self.h_out * self.w_out

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(C_out, h_out, w_out)``."""
        return self.c_out, self.h_out, self.w_out


@dataclass(frozen=True, kw_only=True)
class Linear(WeightLayer):
    """A fully connected layer applied to each of ``tokens`` rows of a sample.

    Parameters
    ----------
    tokens : int
        Rows per sample (default 1: a CNN classifier; the sequence length in a transformer).
    """

    op: ClassVar[str] = "linear"
    tokens: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.name, "tokens", self.tokens, 1)

    @property
    def k(self) -> int:
        """``C_in``."""
        return self.c_in

    def positions(self) -> int:
        """Return ``tokens``."""
        return self.tokens

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(tokens, C_out)``."""
        return self.tokens, self.c_out


@dataclass(frozen=True, kw_only=True)
class MatMul(Layer):
    """``count`` products of two activations ``A[m, k] @ B[k, n]`` per sample; always dense.

    The attention products of a transformer: ``Q K^T`` is ``m = tokens, k = d_head,
    n = tokens``, ``A V`` is ``m = tokens, k = tokens, n = d_head``, with ``count = heads``.
    There is no weight, so no N:M pruning; the backward pass is two dense GEMMs,
    ``dA = dY B^T`` and ``dB = A^T dY``. ``m`` here is a GEMM dimension, not an N:M group.
    ``inputs`` names the two operands ``(A, B)``; an operand may be a slice of its tensor
    (``Q K^T`` reads Q and K from the fused QKV output: ``inputs = (qkv, qkv)``; ``A V`` reads
    ``(softmax, qkv)``).

    Parameters
    ----------
    m, k, n : int
        GEMM dimensions of one product.
    count : int
        Products per sample (default 1; the number of heads for attention).
    """

    op: ClassVar[str] = "matmul"
    m: int
    k: int
    n: int
    count: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("m", "k", "n", "count"):
            check_int(self.name, field, getattr(self, field), 1)

    @property
    def arity(self) -> int:
        """2: the operands A and B."""
        return 2

    def gemm(self, batch: int) -> tuple[int, int, int]:
        """Return ``(m, k, n)`` of one product (the batch is in :meth:`gemm_count`)."""
        check_int(self.name, "batch", batch, 1)
        return self.m, self.k, self.n

    def gemm_count(self, batch: int) -> int:
        """Return the number of products per pass: ``batch * count``."""
        check_int(self.name, "batch", batch, 1)
        return batch * self.count

    @property
    def macs_per_sample(self) -> int:
        """``count * m * k * n``."""
        return self.count * self.m * self.k * self.n

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(count, m, n)``."""
        return self.count, self.m, self.n
