"""Host operations of a training step: the work the accelerator leaves to the host processor.

The compiler marks them in the program (:class:`nmsat.compiler.HostOp`); functional runs of
the Python model (and, later, the RTL backends) perform them here, in numpy, on the external
memory image between device segments. The numpy reference calls the same functions, so the
host's arithmetic never separates the two.

Data path of one host operation (:meth:`HostState.forward`, :meth:`HostState.backward`):
the runner reads each tensor's interior (no zero border) from the DRAM image and converts
channel-major ``[C][H][W][B]`` to NCHW float32 (:func:`interior`); the operation computes in
float32 with the reference layers of :mod:`nmsat.models.layers` where there is one
(:class:`~nmsat.models.layers.BatchNorm`, :class:`~nmsat.models.layers.MaxPool2d`,
:class:`~nmsat.models.layers.AvgPool2d`) and with this module's float32 code otherwise
(layer normalisation, GELU, softmax, the class token and position embedding, reshapes);
the result is rounded to FP16 with :func:`nmsat.hw.numerics.to_fp16` and written back into
the interior of the output tensor, the border left as it was (:func:`with_interior`).

Decisions
    - **State.** A :class:`HostState` keeps, per layer name, the reference layer object: its
      parameters (BatchNorm's and LayerNorm's gamma = 1 and beta = 0 at first, as the
      reference initialises them; ViT's class token and position embedding at zeros) and
      what its forward pass saves for the backward pass (normalised input and inverse
      standard deviation, arg-max of max pooling). Several steps on one machine need one
      state passed to every :func:`nmsat.sim.runner.simulate` call.
    - **Host parameter updates.** A backward operation of a layer with parameters
      (normalisation, position embedding) updates them right away with the reference
      optimizer's arithmetic for parameters without decay (:func:`nmsat.hw.numerics.sgd_update`
      with weight decay and SR-STE 0: ``models.optim.SGD(exact=True)``), learning rate and
      momentum from the program's ``hyper`` tensor, momentum buffers starting at zero. The
      backward operation is the layer's last use within a step, so no accelerator result of
      the step depends on the update; the next step's forward does.
    - **Fused ReLU.** ``"<kind>+relu"`` applies :func:`nmsat.hw.numerics.relu` to the float32
      result before the FP16 rounding; the ReLU's gradient runs on the WUVE before the
      backward operation (the compiler's RELU_GRAD pass).
    - **Padding of pooling.** The reference pools take no padding: a padded pool pads the
      input with ``-inf`` (max) or zeros (average, the padding counted in the mean) and
      crops the gradient.
    - **GELU** is the tanh approximation (``approximate="tanh"`` in PyTorch) in float32:
      numpy has no ``erf``.
    - **Layer normalisation** uses ``eps = 1e-5`` (PyTorch's default); it normalises the
      features (the C axis of a token tensor ``[d][T][1][B]``) per token.
    - **Attention softmax** reads the ``Q K^T`` output as the compiler stores it, heads
      joined ``[heads x keys][queries][1][B]``, and writes ``[heads][queries][keys][B]``
      (what ``A V`` reads); its backward recomputes the float32 probabilities from the
      scores and writes the scores' gradient in the ``Q K^T`` layout.

Ref: DESIGN.md section 4 (what stays on the host is decided and documented);
     docs/decisions.md (host-side work: loss, normalisation, pooling);
     J. L. Ba et al., "Layer Normalization", 2016; D. Hendrycks, K. Gimpel, "Gaussian Error
     Linear Units", 2016 (the tanh approximation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.compiler import Tensor
from nmsat.hw import numerics
from nmsat.hw.errors import NmsatError
from nmsat.models.layers import (
    AvgPool2d,
    BatchNorm,
    Layer,
    MaxPool2d,
    Param,
    softmax_cross_entropy,
)
from nmsat.models.zoo import Layer as ZooLayer
from nmsat.models.zoo import Model, ModelError, Norm, Pool

__all__ = [
    "LAYER_NORM_EPS",
    "HostError",
    "HostState",
    "LayerNorm",
    "PositionEmbedding",
    "chw",
    "gelu",
    "gelu_grad",
    "interior",
    "softmax",
    "softmax_grad",
    "softmax_loss_grad",
    "with_interior",
]

#: ``eps`` of layer normalisation (PyTorch's default).
LAYER_NORM_EPS = 1e-5

#: Per-sample shape ``(C, H, W)`` of a channel-major tensor's interior.
CHW = tuple[int, int, int]

F32 = NDArray[np.float32]


class HostError(NmsatError):
    """A host operation that cannot run: unknown kind, missing layer record, wrong shapes."""


# -- layout --------------------------------------------------------------------------------


def interior(t: Tensor, stored: NDArray[Any]) -> F32:
    """Return the interior of a channel-major tensor as NCHW float32.

    Parameters
    ----------
    t : Tensor
        The tensor (its ``padding`` is the zero border on H and W).
    stored : numpy.ndarray
        Its contents in the stored shape ``[C][H+2p][W+2p][B]``.

    Returns
    -------
    numpy.ndarray of float32, shape (B, C, H, W)
        A new C-contiguous array (a transpose and a conversion, no arithmetic).
    """
    p = t.padding
    arr = np.asarray(stored).reshape(t.shape)
    inner = arr[:, p : arr.shape[1] - p, p : arr.shape[2] - p, :]
    return np.ascontiguousarray(inner.transpose(3, 0, 1, 2), dtype=np.float32)


def with_interior(t: Tensor, stored: NDArray[Any], values: NDArray[Any]) -> NDArray[np.float16]:
    """Return ``stored`` with its interior replaced by ``values`` rounded to FP16.

    Parameters
    ----------
    t : Tensor
        An FP16 channel-major tensor.
    stored : numpy.ndarray
        Its current contents (stored shape); the zero border is kept as it is.
    values : numpy.ndarray, shape (B, C, H, W)
        The new interior, rounded with :func:`nmsat.hw.numerics.to_fp16`.

    Raises
    ------
    HostError
        If ``values`` does not have the interior's shape.
    """
    p = t.padding
    out = np.array(stored, dtype=np.float16).reshape(t.shape)
    c, h, w, b = t.shape[0], t.shape[1] - 2 * p, t.shape[2] - 2 * p, t.shape[3]
    if values.shape != (b, c, h, w):
        raise HostError(f"tensor {t.name}: values of shape {values.shape}, need {(b, c, h, w)}")
    out[:, p : p + h, p : p + w, :] = numerics.to_fp16(values).transpose(1, 2, 3, 0)
    return out


def chw(t: Tensor) -> CHW:
    """Return the per-sample interior shape ``(C, H, W)`` of a channel-major tensor."""
    p = t.padding
    return t.shape[0], t.shape[1] - 2 * p, t.shape[2] - 2 * p


# -- element-wise functions ----------------------------------------------------------------

_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
_GELU_A = np.float32(0.044715)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_THREE = np.float32(3.0)


def gelu(x: NDArray[Any]) -> F32:
    """Return GELU (tanh approximation) of ``x`` in float32.

    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``.
    """
    x32 = np.asarray(x, dtype=np.float32)
    t = np.tanh(_GELU_C * (x32 + _GELU_A * x32 * x32 * x32))
    out: F32 = (_HALF * x32 * (_ONE + t)).astype(np.float32)
    return out


def gelu_grad(x: NDArray[Any], dy: NDArray[Any]) -> F32:
    """Return ``dy * GELU'(x)`` (tanh approximation) in float32."""
    x32 = np.asarray(x, dtype=np.float32)
    t = np.tanh(_GELU_C * (x32 + _GELU_A * x32 * x32 * x32))
    du = _GELU_C * (_ONE + _THREE * _GELU_A * x32 * x32)
    d = _HALF * (_ONE + t) + _HALF * x32 * (_ONE - t * t) * du
    out: F32 = (np.asarray(dy, dtype=np.float32) * d).astype(np.float32)
    return out


def softmax(x: NDArray[Any], axis: int = -1) -> F32:
    """Return the softmax of ``x`` along ``axis`` in float32 (the maximum subtracted first)."""
    z = np.asarray(x, dtype=np.float32)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    out: F32 = (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)
    return out


def softmax_grad(y: NDArray[Any], dy: NDArray[Any], axis: int = -1) -> F32:
    """Return the gradient of the softmax input: ``y (dy - sum(dy y))`` along ``axis``."""
    y32 = np.asarray(y, dtype=np.float32)
    dy32 = np.asarray(dy, dtype=np.float32)
    out: F32 = (y32 * (dy32 - (dy32 * y32).sum(axis=axis, keepdims=True))).astype(np.float32)
    return out


def softmax_loss_grad(logits: NDArray[Any], labels: NDArray[Any]) -> NDArray[np.float16]:
    """Return the FP16 gradient of the mean softmax cross-entropy with respect to the logits.

    Parameters
    ----------
    logits : numpy.ndarray, shape (classes, samples)
        Channel-major logits, as the accelerator stores them.
    labels : numpy.ndarray of int, shape (samples,)

    Returns
    -------
    numpy.ndarray of float16, shape (classes, samples)
        ``(softmax(logits) - onehot(labels)) / samples``, computed in float32 by the reference
        :func:`nmsat.models.layers.softmax_cross_entropy` and rounded with
        :func:`nmsat.hw.numerics.to_fp16`.
    """
    # The reference trainer's loss (models.layers), on a contiguous (samples, classes) copy,
    # so the host's bits are the trainer's.
    by_sample = np.ascontiguousarray(np.asarray(logits, dtype=np.float32).T)
    _, dlogits = softmax_cross_entropy(by_sample, np.asarray(labels))
    grad = np.ascontiguousarray(dlogits.T, dtype=np.float32)
    out: NDArray[np.float16] = numerics.to_fp16(grad)
    return out


# -- layers without a reference in models.layers -------------------------------------------


class LayerNorm(Layer):
    """Layer normalisation of an NCHW array over one axis, in the style of ``BatchNorm``.

    Parameters
    ----------
    features : int
        Size of the normalised axis.
    axis : int
        The normalised axis of the (B, C, H, W) input: 1 (the features of a token tensor
        ``[d][T][1][B]``) or 3.
    eps : float
        Added to the variance before the square root.

    Members
    -------
    gamma, beta : Param
        Scale and shift, shape (features,); no weight decay.
    """

    def __init__(self, features: int, *, axis: int = 1, eps: float = LAYER_NORM_EPS) -> None:
        if features < 1 or axis not in (1, 3):
            raise HostError(f"LayerNorm: features {features}, axis {axis}")
        self.axis, self.eps = axis, eps
        self.gamma = Param.create("gamma", np.ones(features, np.float32), decay=False)
        self.beta = Param.create("beta", np.zeros(features, np.float32), decay=False)
        self._cache: tuple[F32, F32] | None = None

    def _shape(self, x: NDArray[Any]) -> tuple[int, ...]:
        features = self.gamma.value.shape[0]
        if x.ndim != 4 or x.shape[self.axis] != features:
            raise HostError(f"LayerNorm: x has shape {x.shape}; axis {self.axis} != {features}")
        shape = [1, 1, 1, 1]
        shape[self.axis] = features
        return tuple(shape)

    def forward(self, x: F32, *, training: bool = True) -> F32:
        """Return ``gamma * (x - mean) / sqrt(var + eps) + beta`` along :attr:`axis`."""
        shape = self._shape(x)
        mean = x.mean(axis=self.axis, keepdims=True)
        var = x.var(axis=self.axis, keepdims=True)
        inv_std = (1.0 / np.sqrt(var + np.float32(self.eps))).astype(x.dtype)
        x_hat = (x - mean) * inv_std
        if training:
            self._cache = (x_hat, inv_std)
        y: F32 = x_hat * self.gamma.value.reshape(shape) + self.beta.value.reshape(shape)
        return y

    def backward(self, dy: F32) -> F32:
        """Return the input gradient; set dgamma and dbeta (summed over the other axes)."""
        if self._cache is None:
            raise HostError("LayerNorm: backward called before a training forward pass")
        x_hat, inv_std = self._cache
        shape = self._shape(dy)
        others = tuple(a for a in range(4) if a != self.axis)
        count = dy.shape[self.axis]
        self.gamma.grad = (dy * x_hat).sum(axis=others)
        self.beta.grad = dy.sum(axis=others)
        dx_hat = dy * self.gamma.value.reshape(shape)
        mean_dx_hat = dx_hat.sum(axis=self.axis, keepdims=True) / np.float32(count)
        mean_proj = (dx_hat * x_hat).sum(axis=self.axis, keepdims=True) / np.float32(count)
        dx: F32 = (dx_hat - mean_dx_hat - x_hat * mean_proj) * inv_std
        return dx

    def params(self) -> list[Param]:
        """Return gamma, then beta."""
        return [self.gamma, self.beta]


class PositionEmbedding(Layer):
    """ViT's class token and position embedding on a token tensor (B, d, T, 1).

    ``prepend`` class tokens (0 or 1) are put before the input's tokens, then the position
    embedding (d, T) is added. Both parameters start at zeros (no decay).
    """

    def __init__(self, features: int, tokens: int, prepend: int) -> None:
        self.prepend = prepend
        self.cls = Param.create("cls", np.zeros(features, np.float32), decay=False)
        self.pos = Param.create("pos", np.zeros((features, tokens), np.float32), decay=False)

    def forward(self, x: F32, *, training: bool = True) -> F32:
        """Return ``concat(cls, x) + pos`` along the tokens."""
        batch = x.shape[0]
        parts = [np.broadcast_to(self.cls.value[None, :, None, None], (batch, x.shape[1], 1, 1))]
        stacked = np.concatenate(parts * self.prepend + [x], axis=2)
        y: F32 = (stacked + self.pos.value[None, :, :, None]).astype(np.float32)
        return y

    def backward(self, dy: F32) -> F32:
        """Return the patches' gradient; set the class token's and the embedding's."""
        self.pos.grad = dy.sum(axis=(0, 3))
        self.cls.grad = (
            dy[:, :, 0, 0].sum(axis=0) if self.prepend else np.zeros_like(self.cls.value)
        )
        dx: F32 = np.ascontiguousarray(dy[:, :, self.prepend :])
        return dx

    def params(self) -> list[Param]:
        """Return the class token, then the position embedding."""
        return [self.cls, self.pos]


# -- the host state ------------------------------------------------------------------------


def _base(kind: str) -> tuple[str, bool, bool]:
    """Split ``"norm+relu"`` / ``"pool_bwd"`` into (base kind, fused ReLU, backward)."""
    relu = kind.endswith("+relu")
    base = kind.removesuffix("+relu")
    backward = base.endswith("_bwd")
    return base.removesuffix("_bwd"), relu, backward


class HostState:
    """Per-layer state of the host operations of a functional run.

    Parameters
    ----------
    model : Model, optional
        The zoo model (or a user's layer file) the program was compiled from: normalisation
        and pooling need its layer records (kind, kernel, stride, padding). GELU, softmax,
        reshapes and the position embedding need none.

    Members
    -------
    layers : dict of str to Layer
        The reference layer object of each host layer that ran (parameters, saved forward
        state), created at its first forward pass.
    velocities : dict of (str, str) to numpy.ndarray
        Momentum buffers of the host parameters, per (layer, parameter name).
    """

    def __init__(self, model: Model | None = None) -> None:
        self.model = model
        self.layers: dict[str, Layer] = {}
        self.velocities: dict[tuple[str, str], F32] = {}

    def record(self, name: str) -> ZooLayer:
        """Return the zoo record of layer ``name``.

        Raises
        ------
        HostError
            If the state has no model or the model has no such layer.
        """
        if self.model is None:
            raise HostError(
                f"host layer {name!r} needs its layer record: give the run a HostState(model)"
            )
        try:
            return self.model.layer(name)
        except ModelError as exc:
            raise HostError(str(exc)) from exc

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self, kind: str, name: str, inputs: Sequence[NDArray[Any]], out_chw: CHW
    ) -> NDArray[np.float16]:
        """Run a forward host operation.

        Parameters
        ----------
        kind : str
            The operation's kind (:attr:`nmsat.compiler.HostOp.kind`), e.g. ``"norm+relu"``.
        name : str
            The zoo layer.
        inputs : sequence of numpy.ndarray, shape (B, C, H, W)
            The interiors of the tensors it reads (:func:`interior`).
        out_chw : (int, int, int)
            The interior shape of the tensor it writes.

        Returns
        -------
        numpy.ndarray of float16, shape (B, C, H, W)
            The output's interior, rounded with :func:`nmsat.hw.numerics.to_fp16`.
        """
        base, relu, backward = _base(kind)
        if backward:
            raise HostError(f"host operation {kind}: a backward kind given to forward")
        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        batch = x.shape[0]
        y: F32
        if base == "norm":
            y = self._layer(name, base, x).forward(x, training=True)
        elif base == "pool":
            layer = self.record(name)
            assert isinstance(layer, Pool)
            y = self._layer(name, base, x).forward(_pad_pool(x, layer), training=True)
        elif base == "gelu":
            y = gelu(x)
        elif base == "softmax":
            y = softmax(self._scores(name, x, out_chw), axis=self._softmax_axis(name, x, out_chw))
        elif base == "add":
            y = self._layer(name, base, x, out_chw).forward(x, training=True)
        elif base == "reshape":
            y = _reshape(x, out_chw)
        else:
            raise HostError(f"host operation {kind} ({name}) is not supported")
        if relu:
            y = numerics.relu(np.ascontiguousarray(y, dtype=np.float32))
        if y.shape != (batch, *out_chw):
            raise HostError(f"host operation {kind} ({name}): output {y.shape[1:]} != {out_chw}")
        out: NDArray[np.float16] = numerics.to_fp16(np.asarray(y, dtype=np.float32))
        return out

    # -- backward ---------------------------------------------------------------------------
    def backward(
        self,
        kind: str,
        name: str,
        dy: NDArray[Any],
        inputs: Sequence[NDArray[Any]],
        in_chw: CHW,
        *,
        hyper: tuple[float, float] | None = None,
    ) -> NDArray[np.float16]:
        """Run a backward host operation: the gradient of the forward's (first) input.

        Parameters
        ----------
        kind : str
            ``"<kind>_bwd"``.
        name : str
            The zoo layer.
        dy : numpy.ndarray, shape (B, C, H, W)
            The gradient of the forward output (after the WUVE's ReLU gradient when a ReLU
            was fused).
        inputs : sequence of numpy.ndarray
            The forward's inputs as the backward operation reads them (softmax and GELU
            use them; layers with saved state use that).
        in_chw : (int, int, int)
            The interior shape of the gradient it writes.
        hyper : (float, float), optional
            Learning rate and momentum for the update of the layer's parameters (none:
            no update).

        Returns
        -------
        numpy.ndarray of float16, shape (B, C, H, W)
            The input gradient's interior, rounded with :func:`nmsat.hw.numerics.to_fp16`.
        """
        base, _relu, backward = _base(kind)
        if not backward:
            raise HostError(f"host operation {kind}: a forward kind given to backward")
        g = np.ascontiguousarray(dy, dtype=np.float32)
        dx: F32
        if base in ("norm", "add"):
            layer = self._saved(name, kind)
            dx = layer.backward(g)
            if hyper is not None:
                self._update(name, layer, *hyper)
        elif base == "pool":
            record = self.record(name)
            assert isinstance(record, Pool)
            dx = _crop_pool(self._saved(name, kind).backward(g), record)
        elif base == "gelu":
            dx = gelu_grad(np.asarray(inputs[0], dtype=np.float32), g)
        elif base == "softmax":
            x = np.asarray(inputs[0], dtype=np.float32)
            out_chw = (g.shape[1], g.shape[2], g.shape[3])
            axis = self._softmax_axis(name, x, out_chw)
            y = softmax(self._scores(name, x, out_chw), axis=axis)
            dx = self._unscores(softmax_grad(y, g, axis=axis), x)
        elif base == "reshape":
            dx = _reshape_back(g, in_chw)
        else:
            raise HostError(f"host operation {kind} ({name}) is not supported")
        if dx.shape != (g.shape[0], *in_chw):
            raise HostError(f"host operation {kind} ({name}): gradient {dx.shape[1:]} != {in_chw}")
        out: NDArray[np.float16] = numerics.to_fp16(np.asarray(dx, dtype=np.float32))
        return out

    # -- helpers ----------------------------------------------------------------------------
    def _layer(self, name: str, base: str, x: F32, out_chw: CHW | None = None) -> Layer:
        """The layer object of ``name``, created at its first forward pass."""
        layer = self.layers.get(name)
        if layer is not None:
            return layer
        if base == "norm":
            record = self.record(name)
            assert isinstance(record, Norm)
            if record.kind == "batch":
                layer = BatchNorm(x.shape[1], dtype=np.float32)
            else:
                axis = 3 if len(record.shape) == 3 else 1
                layer = LayerNorm(x.shape[axis], axis=axis)
        elif base == "pool":
            record = self.record(name)
            assert isinstance(record, Pool)
            pool = MaxPool2d if record.kind == "max" else AvgPool2d
            layer = pool(record.kernel, record.stride)
        elif base == "add":
            assert out_chw is not None
            features, tokens = out_chw[0], out_chw[1] * out_chw[2]
            prepend = tokens - x.shape[2] * x.shape[3]
            if x.shape[1] != features or x.shape[3] != 1 or prepend not in (0, 1):
                raise HostError(
                    f"host add {name!r}: input {x.shape[1:]} and output {out_chw} are not a "
                    "token tensor and the same with a class token prepended"
                )
            layer = PositionEmbedding(features, tokens, prepend)
        else:  # pragma: no cover - callers pass only the kinds above
            raise HostError(f"host layer {name!r}: no state for {base}")
        self.layers[name] = layer
        return layer

    def _saved(self, name: str, kind: str) -> Layer:
        layer = self.layers.get(name)
        if layer is None:
            raise HostError(f"host operation {kind} ({name}): no forward pass ran in this state")
        return layer

    def _update(self, name: str, layer: Layer, lr: float, momentum: float) -> None:
        """SGD with momentum, no decay (models.optim.SGD(exact=True) for these parameters)."""
        for p in layer.params():
            key = (name, p.name)
            v = self.velocities.get(key)
            if v is None:
                v = np.zeros_like(p.value, dtype=np.float32)
            mask = np.ones(p.value.shape, np.bool_)
            grad = np.asarray(p.grad, dtype=np.float32)
            p.value, self.velocities[key] = numerics.sgd_update(
                p.value, grad, v, mask, lr, momentum, 0.0, 0.0
            )

    def _softmax_axis(self, name: str, x: F32, out_chw: CHW) -> int:
        """The NCHW axis of the output the softmax normalises (the zoo shape's last)."""
        if (x.shape[1], x.shape[2], x.shape[3]) != out_chw:
            return 3  # attention scores: [heads][queries][keys]
        if self.model is not None:
            record = self.record(name)
            shape = getattr(record, "shape", out_chw)
            return 3 if len(shape) == 3 else 1
        return 3 if out_chw[2] > 1 else 1

    @staticmethod
    def _scores(name: str, x: F32, out_chw: CHW) -> F32:
        """The scores as the output's [count][m][n] (from Q K^T's ``[count n][m][1]``)."""
        if (x.shape[1], x.shape[2], x.shape[3]) == out_chw:
            return x
        count, m, n = out_chw
        if x.shape[1:] != (count * n, m, 1):
            raise HostError(
                f"softmax {name!r}: input {x.shape[1:]} is neither the output {out_chw} nor "
                f"the heads-joined scores {(count * n, m, 1)}"
            )
        s: F32 = np.ascontiguousarray(x.reshape(x.shape[0], count, n, m).transpose(0, 1, 3, 2))
        return s

    @staticmethod
    def _unscores(g: F32, x: F32) -> F32:
        """The inverse of :meth:`_scores` for a gradient laid out like the output."""
        if g.shape == x.shape:
            return g
        out: F32 = np.ascontiguousarray(g.transpose(0, 1, 3, 2)).reshape(x.shape)
        return out


def _pad_pool(x: F32, layer: Pool) -> F32:
    p = layer.padding
    if not p:
        return x
    fill = -np.inf if layer.kind == "max" else 0.0
    out: F32 = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    return out


def _crop_pool(dx: F32, layer: Pool) -> F32:
    p = layer.padding
    if not p:
        return dx
    out: F32 = np.ascontiguousarray(dx[:, :, p : dx.shape[2] - p, p : dx.shape[3] - p])
    return out


def _reshape(x: F32, out_chw: CHW) -> F32:
    """A host reshape: a flatten of the interior, or the first tokens of a token tensor."""
    batch, c, h, w = x.shape
    co, ho, wo = out_chw
    if c * h * w == co * ho * wo:
        return np.ascontiguousarray(x.reshape(batch, co, ho, wo))
    if c == co and ho * wo < h * w:
        first = x.reshape(batch, c, h * w)[:, :, : ho * wo]
        return np.ascontiguousarray(first.reshape(batch, co, ho, wo))
    raise HostError(f"reshape: {(c, h, w)} to {out_chw} is neither a flatten nor a token slice")


def _reshape_back(g: F32, in_chw: CHW) -> F32:
    """The gradient of :func:`_reshape` for an input of interior shape ``in_chw``."""
    batch, co, ho, wo = g.shape
    c, h, w = in_chw
    if c * h * w == co * ho * wo:
        return np.ascontiguousarray(g.reshape(batch, c, h, w))
    if c == co and ho * wo < h * w:
        out = np.zeros((batch, c, h * w), np.float32)
        out[:, :, : ho * wo] = g.reshape(batch, c, ho * wo)
        return out.reshape(batch, c, h, w)
    raise HostError(f"reshape: {in_chw} to {(co, ho, wo)} is neither a flatten nor a token slice")
