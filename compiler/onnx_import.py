"""ONNX import: a user's exported model (an ONNX file) as a zoo :class:`~nmsat.models.zoo.Model`.

The compiler consumes zoo models (layer records with shapes, docs/zoo.md); this module walks
an ONNX graph in its (topological) node order and writes each node as the zoo record that
does the same work, so everything downstream (frontend, lowering, the simulated step) is the
one the zoo models use. Nothing is executed and no weight value is read: the zoo describes
shapes, and the Python model's ``fast``/``exact`` modes draw their own weights.

How each operator maps (docs/onnx.md has the table and the limits):

- ``Gemm`` (weight ``B`` an initializer, ``transA = 0``) and ``MatMul`` against a 2-D
  initializer become :class:`~nmsat.models.zoo.Linear` (``tokens`` = the rows of the input);
  ``Conv`` (2-D, ``group = 1``, dilation 1, one stride and one padding for all sides) becomes
  :class:`~nmsat.models.zoo.Conv2d`. Biases are dropped, as the zoo drops them.
- ``MatMul`` of two activations becomes :class:`~nmsat.models.zoo.MatMul` (``count``
  products ``A[m, k] B[k, n]`` per sample, no broadcasting).
- ``Relu`` -> ``ReLU``, ``Add`` of two activations of one shape -> ``Add`` (WUVE); ``Add``
  of an initializer of the full sample shape -> ``Add(parameter=True)``; a smaller one that
  broadcasts is a bias and is dropped.
- ``BatchNormalization``, ``LayerNormalization``, ``MaxPool``, ``AveragePool``,
  ``GlobalAveragePool``, ``GlobalMaxPool``, ``Softmax``, ``LogSoftmax``, ``Gelu`` become the
  host layers ``Norm``, ``Pool``, ``Softmax``, ``GELU``.
- ``Flatten``, ``Reshape``, ``Squeeze``, ``Unsqueeze`` (keeping the batch axis first),
  ``Identity`` and ``Dropout`` make no layer: the next layer reads the same data under
  another shape, as a zoo layer reads through a host reshape.
- ``Constant`` nodes, and nodes that read only constants or tensor shapes (``Shape``,
  ``Gather`` on a shape, ``Concat`` of shape pieces), are folded: they compute sizes, not
  activations.

Any other operator, or a shape the zoo cannot describe, raises :class:`OnnxImportError` in
one line naming the file, the node and its operator.

The batch is the graph input's first axis: a fixed size is used as it is, a symbolic one
(``dim_param``, as ``torch.onnx.export(dynamic_axes=...)`` writes) takes ``batch`` or
:data:`DEFAULT_BATCH`; an explicit ``batch`` always wins (layers are per sample).

Ref: ONNX operator specifications, https://onnx.ai/onnx/operators/ (Gemm, MatMul, Conv,
     pooling, Reshape, Flatten, Squeeze/Unsqueeze attribute and input forms per opset).
Ref: ONNX Python API, https://onnx.ai/onnx/api/ (onnx.load, onnx.checker.check_model,
     onnx.shape_inference.infer_shapes with data_prop, onnx.numpy_helper.to_array).
Ref: docs/zoo.md (layer records, host reshapes, sparsity policy); docs/onnx.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from nmsat.hw.errors import NmsatError
from nmsat.models.zoo import (
    GELU,
    Add,
    Conv2d,
    Layer,
    Linear,
    MatMul,
    Model,
    Norm,
    Pool,
    ReLU,
    Softmax,
    WeightLayer,
)

__all__ = ["DEFAULT_BATCH", "SUPPORTED_OPS", "OnnxImportError", "import_onnx", "load_onnx"]

DEFAULT_BATCH = 32
"""Samples per step when the graph's batch axis is symbolic and no batch is given."""

_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (TensorProto)
_SMALL = 64  # constants up to this many integers keep their values (shapes, axes)
_BATCH = 1_000_003
"""Stands for a symbolic batch size in folded shape values: a prime no real axis equals, so
a reshape that keeps the batch first is told from one that mixes it with other axes."""


class OnnxImportError(NmsatError, ValueError):
    """An ONNX file nmsat cannot read or describe: unreadable, invalid, unsupported op or shape."""


@dataclasses.dataclass(frozen=True)
class _Act:
    """An activation tensor: the zoo layer (or ``"input"``) holding it, its sample shape."""

    source: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Const:
    """A tensor known without running the model: an initializer, a constant, a size."""

    dims: tuple[int, ...] | None
    value: np.ndarray[Any, Any] | None = None


def load_onnx(path: str | Path, batch: int | None = None, *, name: str | None = None) -> Model:
    """Read an ONNX file and return the equivalent zoo model.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file. External weight data is not loaded (only shapes are needed), but
        the checker wants its files beside the model, where the exporter wrote them.
    batch : int or None
        Samples per training step; None takes the graph input's fixed batch size, or
        :data:`DEFAULT_BATCH` when that axis is symbolic.
    name : str or None
        The model's name (default: the file name without its extension).

    Returns
    -------
    Model
        Layers in the graph's node order, named after the nodes.

    Raises
    ------
    OnnxImportError
        If the file cannot be read, is not a valid ONNX model, or holds an operator or a
        shape nmsat does not support (one line: file, node, operator, rule).
    """
    # protobuf ships no type stubs; its DecodeError is what a corrupt file raises.
    decode_error = importlib.import_module("google.protobuf.message").DecodeError
    text = str(path)
    try:
        proto = onnx.load(text, load_external_data=False)
    except OSError as exc:
        raise OnnxImportError(f"{text}: cannot read ({exc.strerror or exc})") from None
    except (decode_error, ValueError, RuntimeError):
        raise OnnxImportError(f"{text}: not an ONNX model (the protobuf does not parse)") from None
    base = str(Path(text).parent)
    for tensor in proto.graph.initializer:  # small integer constants (shapes) stored outside
        if tensor.data_location == onnx.TensorProto.EXTERNAL and _small_ints(tensor):
            with contextlib.suppress(OSError, ValueError, onnx.checker.ValidationError):
                onnx.external_data_helper.load_external_data_for_tensor(tensor, base)
    # A missing data file is named by the checker, which finds external data from the file.
    return _import(proto, batch, name or Path(text).stem, text, text)


def import_onnx(
    proto: Any, batch: int | None = None, *, name: str = "onnx", source: str = "<onnx>"
) -> Model:
    """Return the zoo model of an in-memory ``onnx.ModelProto`` (see :func:`load_onnx`).

    ``source`` names the model in error messages. A model with external data must be
    loaded with :func:`load_onnx`.
    """
    return _import(proto, batch, name, source, proto)


def _import(proto: Any, batch: int | None, name: str, source: str, check: Any) -> Model:
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise OnnxImportError(f"{source}: batch must be an integer >= 1, got {batch!r}")
    try:
        onnx.checker.check_model(check)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise OnnxImportError(f"{source}: not a valid ONNX model ({_first_line(exc)})") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise OnnxImportError(
            f"{source}: ONNX shape inference failed ({_first_line(exc)})"
        ) from None
    return _Importer(inferred, source).model(name, batch)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _dims_text(dims: Sequence[object]) -> str:
    """``[N, 3, ?, 4]``: N a symbolic batch, ? an unknown size."""
    names: dict[object, str] = {None: "?", _BATCH: "N"}
    return "[" + ", ".join(names.get(d, str(d)) for d in dims) + "]"


class _Importer:
    """One pass over the nodes in order: ``acts`` maps ONNX tensor names to activations,
    ``consts`` to initializers and folded sizes; ``layers`` collects the zoo records."""

    def __init__(self, proto: Any, source: str) -> None:
        self.graph = proto.graph
        self.source = source
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts: dict[str, _Const] = {
            t.name: _Const(tuple(int(d) for d in t.dims), _array(t)) for t in self.graph.initializer
        }
        self.acts: dict[str, _Act] = {}
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # zoo output shape of each layer
        self.names: set[str] = {"input"}
        self.inferred: dict[str, tuple[int | str | None, ...]] = {}
        for info in (*self.graph.value_info, *self.graph.output, *self.graph.input):
            shape = _info_dims(info)
            if shape is not None:
                self.inferred.setdefault(info.name, shape)
        self.where = ""
        self.node_name = ""
        self.graph_batch: int | None = None
        self.batch_param: str | None = None

    # -- the model -----------------------------------------------------------------------
    def model(self, name: str, batch: int | None) -> Model:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            listed = ", ".join(repr(i.name) for i in inputs) or "none"
            raise OnnxImportError(
                f"{self.source}: the graph has {len(inputs)} inputs ({listed}); nmsat takes one "
                "input tensor (initializers aside)"
            )
        info = inputs[0]
        dims = _info_dims(info)
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type not in _FLOAT_TYPES:
            raise OnnxImportError(
                f"{self.source}: input {info.name!r} is not a floating-point tensor; nmsat takes "
                "images, features or token embeddings (embedding lookups are not supported)"
            )
        if dims is None or not 2 <= len(dims) <= 4:
            raise OnnxImportError(
                f"{self.source}: input {info.name!r} has shape "
                f"{_dims_text(dims) if dims is not None else 'unknown'}; allowed: [N, F], "
                "[N, T, F] or [N, C, H, W] with N the batch"
            )
        sample = dims[1:]
        if not all(isinstance(d, int) and d > 0 for d in sample):
            raise OnnxImportError(
                f"{self.source}: input {info.name!r} has shape {_dims_text(dims)}; every axis "
                "but the first (the batch) must have a fixed size"
            )
        first = dims[0]
        self.graph_batch = first if isinstance(first, int) and first > 0 else None
        self.batch_param = first if isinstance(first, str) else None
        chosen = batch or self.graph_batch or DEFAULT_BATCH
        input_shape = tuple(int(d) for d in sample)  # type: ignore[arg-type]
        self.acts[info.name] = _Act("input", input_shape)
        self.shapes["input"] = input_shape
        for index, node in enumerate(self.graph.node):
            self._node(index, node)
        layers = self._sparsity_policy()
        if not layers:
            raise OnnxImportError(
                f"{self.source}: the graph has no layer nmsat models (only reshapes, "
                "pass-throughs or constants)"
            )
        try:
            return Model(name, chosen, tuple(layers), input_shape)
        except NmsatError as exc:
            raise OnnxImportError(f"{self.source}: {exc}") from None

    def _sparsity_policy(self) -> list[Layer]:
        """The zoo's policy: a stem on 1 or 3 channels and the classifier are dense."""
        weights = [i for i, layer in enumerate(self.layers) if isinstance(layer, WeightLayer)]
        layers = list(self.layers)
        for position, i in enumerate(weights):
            layer = layers[i]
            assert isinstance(layer, WeightLayer)
            stem = position == 0 and layer.c_in in (1, 3)
            if stem or i == weights[-1]:
                layers[i] = dataclasses.replace(layer, sparse=False)
        return layers

    # -- one node ------------------------------------------------------------------------
    def _node(self, index: int, node: Any) -> None:
        op = node.op_type
        label = repr(node.name) if node.name else f"#{index}"
        self.where = f"{self.source}: node {label} ({op})"
        if node.domain not in ("", "ai.onnx"):
            raise self.error(f"operator domain {node.domain!r} is not supported (only ONNX's)")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "Constant":
            self._constant(node, attrs)
            return
        present = [name for name in node.input if name]
        for name in present:
            if name not in self.acts and name not in self.consts:
                raise self.error(
                    f"input {name!r} comes from an output nmsat does not model (a second output "
                    "of a node, or a graph input)"
                )
        if all(name in self.consts for name in present) or (op in ("Shape", "Size") and present):
            # Sizes and constant folding: no activation flows through this node.
            values = self._fold(node, attrs)
            for i, out in enumerate(node.output):
                value = values[i] if i < len(values) else None
                if out:
                    small = value is not None and value.size <= _SMALL
                    dims = tuple(value.shape) if value is not None else self._static_dims(out)
                    self.consts[out] = _Const(dims, value if small else None)
            return
        handler = _HANDLERS.get(op)
        if handler is None:
            raise self.error(f"operator not supported; supported: {', '.join(SUPPORTED_OPS)}")
        self.node_name = self._layer_name(node.name, op, index)
        result = handler(self, node, attrs)
        out = node.output[0]
        inferred = self.inferred.get(out)
        if inferred is not None and len(inferred) >= 1:
            sample = inferred[1:]
            if all(isinstance(d, int) for d in sample) and tuple(sample) != result.shape:
                raise self.error(
                    f"output {out!r} is {_dims_text(result.shape)} per sample here, but ONNX "
                    f"shape inference gives {_dims_text(sample)}"
                )
        self.acts[out] = result

    def error(self, rule: str) -> OnnxImportError:
        return OnnxImportError(f"{self.where}: {rule}")

    def _layer_name(self, name: str, op: str, index: int) -> str:
        base = name if name and name != "input" else f"{op.lower()}_{index}"
        unique, k = base, 1
        while unique in self.names:
            unique, k = f"{base}_{k}", k + 1
        return unique

    def _fold(self, node: Any, attrs: dict[str, Any]) -> list[np.ndarray[Any, Any] | None]:
        """Values of a node that computes sizes: Shape of an activation (the batch as
        :data:`_BATCH` unless fixed), or any op on known small constants; [] if unknown."""
        first = node.input[0] if node.input else ""
        if first in self.acts:
            full = np.asarray((self.graph_batch or _BATCH, *self.acts[first].shape), np.int64)
            if node.op_type == "Size":
                return [np.asarray(np.prod(full), np.int64)]
            start, end = int(attrs.get("start", 0)), attrs.get("end")
            return [full[start : None if end is None else int(end)]]
        feeds = {name: self.consts[name].value for name in node.input if name}
        if any(value is None for value in feeds.values()):
            return []
        try:
            results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except (ValueError, TypeError, RuntimeError, KeyError, IndexError, NotImplementedError):
            return []
        return [np.asarray(r) if isinstance(r, np.ndarray | np.generic) else None for r in results]

    def _constant(self, node: Any, attrs: dict[str, Any]) -> None:
        value: np.ndarray[Any, Any] | None = None
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"])
        elif "value_ints" in attrs or "value_int" in attrs:
            value = np.asarray(attrs.get("value_ints", attrs.get("value_int")), dtype=np.int64)
        elif "value_floats" in attrs or "value_float" in attrs:
            value = np.asarray(
                attrs.get("value_floats", attrs.get("value_float")), dtype=np.float32
            )
        dims = tuple(int(d) for d in value.shape) if value is not None else None
        if value is not None and value.size > _SMALL:
            value = None  # a weight: its shape is all nmsat needs
        self.consts[node.output[0]] = _Const(
            dims if dims is not None else self._static_dims(node.output[0]), value
        )

    def _static_dims(self, name: str) -> tuple[int, ...] | None:
        dims = self.inferred.get(name)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return tuple(int(d) for d in dims)  # type: ignore[arg-type]

    # -- helpers for the handlers ----------------------------------------------------------
    def act(self, name: str, role: str = "input") -> _Act:
        found = self.acts.get(name)
        if found is None:
            raise self.error(f"{role} {name!r} must be an activation, not a constant")
        return found

    def weight(self, name: str, role: str) -> tuple[int, ...]:
        found = self.consts.get(name)
        if found is None:
            raise self.error(
                f"{role} {name!r} is an activation; nmsat takes weights as initializers "
                "(constants of the graph)"
            )
        if found.dims is None:
            raise self.error(f"{role} {name!r} has no known shape")
        return found.dims

    def stored(self, act: _Act) -> tuple[int, ...]:
        """The zoo shape of the layer whose output holds ``act`` (its layout in memory)."""
        return self.shapes[act.source]

    def add_layer(
        self, make: Callable[..., Layer], sample: tuple[int, ...] | None, **fields: Any
    ) -> _Act:
        """Append the node's layer; ``sample`` is its ONNX sample shape (None: the layer's)."""
        try:
            layer = make(name=self.node_name, **fields)
        except NmsatError as exc:
            message = str(exc).removeprefix(f"layer {self.node_name!r}: ")
            raise self.error(message) from None
        self.layers.append(layer)
        self.names.add(layer.name)
        self.shapes[layer.name] = layer.output_shape
        return _Act(layer.name, layer.output_shape if sample is None else sample)

    def const_ints(self, name: str, role: str) -> list[int]:
        found = self.consts.get(name)
        if found is None or found.value is None:
            raise self.error(f"{role} {name!r} must be a constant known before running the model")
        return [int(v) for v in np.asarray(found.value).reshape(-1)]

    def reshaped(self, act: _Act, sample: tuple[int, ...]) -> _Act:
        """``act`` under another sample shape (a host reshape: no layer)."""
        if math.prod(sample) != math.prod(act.shape) or any(d < 1 for d in sample):
            raise self.error(
                f"output {_dims_text(sample)} per sample does not hold the input's "
                f"{_dims_text(act.shape)}"
            )
        return _Act(act.source, sample)

    def attr_pair(self, attrs: dict[str, Any], key: str, default: int) -> tuple[int, int]:
        values = [int(v) for v in attrs.get(key, [default, default])]
        if len(values) != 2:
            raise self.error(f"{key} {values}: a 2-D operation takes two values")
        return values[0], values[1]

    def window(
        self, attrs: dict[str, Any], act: _Act, kh: int, kw: int, what: str
    ) -> tuple[int, int]:
        """Return (stride, padding) of a 2-D window; refuse what the zoo cannot describe."""
        sh, sw = self.attr_pair(attrs, "strides", 1)
        if sh != sw:
            raise self.error(f"strides [{sh}, {sw}]: the zoo's {what} has one stride for both axes")
        if self.attr_pair(attrs, "dilations", 1) != (1, 1):
            raise self.error(f"dilations {list(attrs['dilations'])}: only 1 is supported")
        _, h, w = act.shape
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for size, k in ((h, kh), (w, kw)):
                total = max((-(-size // sh) - 1) * sh + k - size, 0)
                pads.append((total // 2, total - total // 2))
            (t, b), (left, r) = pads
            if auto == "SAME_LOWER":
                t, b, left, r = b, t, r, left
            begin_end = [t, left, b, r]
        elif auto == "VALID":
            begin_end = [0, 0, 0, 0]
        else:
            begin_end = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        if len(begin_end) != 4 or len(set(begin_end)) != 1:
            raise self.error(
                f"pads {begin_end} (auto_pad {auto}): nmsat pads all four sides equally "
                "(the zoo's records have one padding)"
            )
        return sh, begin_end[0]


def _small_ints(tensor: Any) -> bool:
    """Whether an initializer may be a shape or axes: INT32 or INT64, a few elements."""
    return tensor.data_type in (6, 7) and math.prod(tensor.dims) <= _SMALL


def _array(tensor: Any) -> np.ndarray[Any, Any] | None:
    """The value of a small integer initializer (shapes, axes); None for weights."""
    if not _small_ints(tensor) or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except (ValueError, RuntimeError, OSError):  # external data not loaded
        return None


def _info_dims(info: Any) -> tuple[int | str | None, ...] | None:
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return tuple(dims)


# -- the operators ---------------------------------------------------------------------------


def _conv(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    w = imp.weight(node.input[1], "weight")
    if len(x.shape) != 3 or len(w) != 4:
        raise imp.error(
            f"input {_dims_text(x.shape)} per sample: nmsat supports 2-D convolutions "
            "(N x C x H x W)"
        )
    group = int(attrs.get("group", 1))
    if group != 1:
        raise imp.error(
            f"group {group}: grouped and depthwise convolutions are not supported (group must be 1)"
        )
    c_out, c_in, kh, kw = w
    if c_in != x.shape[0]:
        raise imp.error(f"weight {_dims_text(w)} does not take {x.shape[0]} input channels")
    stride, padding = imp.window(attrs, x, kh, kw, "Conv2d")
    _, h_in, w_in = x.shape
    return imp.add_layer(
        Conv2d,
        None,
        inputs=(x.source,),
        c_in=c_in,
        c_out=c_out,
        kh=kh,
        kw=kw,
        stride=stride,
        padding=padding,
        h_in=h_in,
        w_in=w_in,
    )


def _linear(imp: _Importer, x: _Act, c_in: int, c_out: int) -> _Act:
    if x.shape[-1] != c_in:
        raise imp.error(
            f"weight takes {c_in} features, the input has {_dims_text(x.shape)} per sample"
        )
    tokens = math.prod(x.shape[:-1])
    return imp.add_layer(
        Linear, (*x.shape[:-1], c_out), inputs=(x.source,), c_in=c_in, c_out=c_out, tokens=tokens
    )


def _gemm(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    if int(attrs.get("transA", 0)):
        raise imp.error("transA 1: the activation must be A, untransposed (x @ W^T + b)")
    x = imp.act(node.input[0], "A")
    w = imp.weight(node.input[1], "B (the weight)")
    if len(x.shape) != 1 or len(w) != 2:
        raise imp.error(f"A {_dims_text(x.shape)} per sample: Gemm takes [N, F] x [F, O]")
    c_in, c_out = (w[1], w[0]) if int(attrs.get("transB", 0)) else (w[0], w[1])
    return _linear(imp, x, c_in, c_out)


def _matmul(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    a_name, b_name = node.input[0], node.input[1]
    if a_name in imp.consts:
        raise imp.error(
            "the constant operand is A; nmsat takes x @ W (the weight second) or a product "
            "of two activations"
        )
    a = imp.act(a_name, "A")
    if b_name in imp.consts:
        w = imp.weight(b_name, "B (the weight)")
        if len(w) != 2:
            raise imp.error(f"weight {_dims_text(w)}: a linear weight is 2-D [K, O]")
        return _linear(imp, a, w[0], w[1])
    b = imp.act(b_name, "B")
    if len(a.shape) not in (2, 3) or len(a.shape) != len(b.shape):
        raise imp.error(
            f"A {_dims_text(a.shape)} and B {_dims_text(b.shape)} per sample: a product of "
            "two activations takes [m, k] x [k, n] or [count, m, k] x [count, k, n]"
        )
    count = a.shape[0] if len(a.shape) == 3 else 1
    m, k = a.shape[-2:]
    k_b, n = b.shape[-2:]
    if k != k_b or (len(b.shape) == 3 and b.shape[0] != count):
        raise imp.error(
            f"A {_dims_text(a.shape)} and B {_dims_text(b.shape)} per sample do not multiply "
            "without broadcasting (not supported)"
        )
    shape = (count, m, n) if len(a.shape) == 3 else (m, n)
    return imp.add_layer(MatMul, shape, inputs=(a.source, b.source), m=m, k=k, n=n, count=count)


def _relu(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    return imp.add_layer(ReLU, x.shape, inputs=(x.source,), shape=imp.stored(x))


def _add(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    a_name, b_name = node.input[0], node.input[1]
    if a_name in imp.consts:
        a_name, b_name = b_name, a_name
    a = imp.act(a_name, "operand")
    if b_name in imp.consts:
        dims = imp.weight(b_name, "operand")
        trimmed = list(dims)
        while len(trimmed) > len(a.shape) and trimmed[0] == 1:
            trimmed.pop(0)
        if tuple(trimmed) == a.shape:  # a learned tensor of the sample's shape
            return imp.add_layer(
                Add, a.shape, inputs=(a.source,), shape=imp.stored(a), parameter=True
            )
        if len(trimmed) <= len(a.shape) and all(
            d in (1, s) for d, s in zip(reversed(trimmed), reversed(a.shape), strict=False)
        ):
            return a  # a bias: the zoo counts no biases, like Gemm's and Conv's
        raise imp.error(
            f"constant {_dims_text(dims)} does not broadcast to the input's "
            f"{_dims_text(a.shape)} per sample"
        )
    b = imp.act(b_name, "operand")
    if a.shape != b.shape:
        raise imp.error(
            f"operands {_dims_text(a.shape)} and {_dims_text(b.shape)} per sample: nmsat adds "
            "tensors of one shape (no broadcasting)"
        )
    if imp.stored(a) != imp.stored(b):
        raise imp.error(
            f"operands are stored as {_dims_text(imp.stored(a))} and "
            f"{_dims_text(imp.stored(b))} (one is reshaped); add them before the reshape"
        )
    return imp.add_layer(Add, a.shape, inputs=(a.source, b.source), shape=imp.stored(a))


def _host_shape(
    imp: _Importer, x: _Act, shape: tuple[int, ...], axis: int | None
) -> tuple[int, ...]:
    """The shape a host layer is given: its input's stored shape when that is ``shape`` up to
    size-1 axes and agrees on ``axis`` (so a zoo network's import equals the zoo's layers);
    else ``shape`` (the host reshapes)."""
    stored = imp.stored(x)
    same = [d for d in stored if d != 1] == [d for d in shape if d != 1]
    if same and (axis is None or stored[axis] == shape[axis]):
        return stored
    return shape


def _host(
    make: Callable[..., Layer], axis: int | None, **fixed: Any
) -> Callable[[_Importer, Any, Any], _Act]:
    def handler(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
        x = imp.act(node.input[0])
        shape = _host_shape(imp, x, x.shape, axis)
        return imp.add_layer(make, x.shape, inputs=(x.source,), shape=shape, **fixed)

    return handler


def _layer_norm(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    axis = int(attrs.get("axis", -1))
    if axis % (len(x.shape) + 1) != len(x.shape):
        raise imp.error(f"axis {axis}: nmsat normalises over the last axis only")
    shape = _host_shape(imp, x, x.shape, -1)
    return imp.add_layer(Norm, x.shape, inputs=(x.source,), shape=shape, kind="layer")


def _softmax(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    rank = len(x.shape) + 1
    axis = int(attrs.get("axis", -1 if imp.opset >= 13 else 1)) % rank
    if axis == rank - 1:
        shape = x.shape
    elif imp.opset < 13 and axis == 1:  # before opset 13: one softmax over the flattened sample
        shape = (math.prod(x.shape),)
    else:
        raise imp.error(f"axis {axis}: nmsat's softmax runs along the last axis")
    shape = _host_shape(imp, x, shape, -1)
    return imp.add_layer(Softmax, x.shape, inputs=(x.source,), shape=shape)


def _pool(kind: Literal["max", "avg"]) -> Callable[[_Importer, Any, Any], _Act]:
    def handler(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
        x = imp.act(node.input[0])
        if len(x.shape) != 3:
            raise imp.error(f"input {_dims_text(x.shape)} per sample: nmsat pools 2-D maps")
        kh, kw = imp.attr_pair(attrs, "kernel_shape", 1)
        if kh != kw:
            raise imp.error(f"kernel_shape [{kh}, {kw}]: the zoo's Pool has square windows")
        stride, padding = imp.window(attrs, x, kh, kw, "Pool")
        if kind == "avg" and padding and not int(attrs.get("count_include_pad", 0)):
            raise imp.error(
                "count_include_pad 0 with padding: the zoo's average pool counts the zeros"
            )
        if int(attrs.get("ceil_mode", 0)):
            # Ceil mode adds a last partial window unless the windows tile the input exactly
            # (or the exporter's shape says the extra window is dropped).
            spans = [size + 2 * padding - kh for size in x.shape[1:]]
            floor = tuple(span // stride + 1 for span in spans)
            inferred = imp.inferred.get(node.output[0], ())
            if any(span % stride for span in spans) and tuple(inferred[2:]) != floor:
                raise imp.error("ceil_mode 1 adds a partial window here; nmsat pools with floor")
        return _pool_layer(imp, x, kind, kh, stride, padding)

    return handler


def _pool_layer(
    imp: _Importer,
    x: _Act,
    kind: Literal["max", "avg"],
    kernel: int,
    stride: int,
    padding: int,
) -> _Act:
    c, h, w = x.shape
    return imp.add_layer(
        Pool,
        None,
        inputs=(x.source,),
        kind=kind,
        c=c,
        h_in=h,
        w_in=w,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )


def _global_pool(kind: Literal["max", "avg"]) -> Callable[[_Importer, Any, Any], _Act]:
    def handler(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
        x = imp.act(node.input[0])
        if len(x.shape) != 3 or x.shape[1] != x.shape[2]:
            raise imp.error(
                f"input {_dims_text(x.shape)} per sample: nmsat pools square 2-D maps "
                "(C x H x H) globally"
            )
        return _pool_layer(imp, x, kind, x.shape[1], 1, 0)

    return handler


def _pass(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    return imp.act(node.input[0])


def _flatten(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    rank = len(x.shape) + 1
    axis = int(attrs.get("axis", 1))
    if axis % rank != 1 and not (axis == rank and rank == 2):
        raise imp.error(f"axis {axis}: nmsat flattens each sample (axis 1), keeping the batch")
    return imp.reshaped(x, (math.prod(x.shape),))


def _reshape(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    target = imp.consts[node.input[1]].value if node.input[1] in imp.consts else None
    if target is not None:
        values = [int(v) for v in np.asarray(target).reshape(-1)]
        allowzero = bool(int(attrs.get("allowzero", 0)))
        batch = imp.graph_batch or _BATCH
        return imp.reshaped(x, _resolve_reshape(imp, values, (batch, *x.shape), allowzero, batch))
    dims = imp.inferred.get(node.output[0])
    if dims is None or not dims or not all(isinstance(d, int) for d in dims[1:]):
        raise imp.error(
            "the target shape is computed at run time and ONNX shape inference cannot size it"
        )
    first = dims[0]
    sample = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
    batch_ok = first is None or first == imp.batch_param or first == imp.graph_batch
    if not batch_ok or math.prod(sample) != math.prod(x.shape):
        raise imp.error(f"output {_dims_text(dims)}: nmsat reshapes each sample, the batch first")
    return imp.reshaped(x, sample)


def _resolve_reshape(
    imp: _Importer, target: list[int], full: tuple[int, ...], allowzero: bool, batch: int
) -> tuple[int, ...]:
    """Resolve an ONNX Reshape target (0: copy, -1: infer) and return the sample shape."""
    out = [
        full[i] if d == 0 and not allowzero and i < len(full) else d for i, d in enumerate(target)
    ]
    total = math.prod(full)
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        if known > 0 and total % known == 0:
            out[out.index(-1)] = total // known
    if any(d < 1 for d in out) or math.prod(out) != total:
        raise imp.error(f"shape {_dims_text(target)} does not fit the input {_dims_text(full)}")
    if out[0] != batch:
        raise imp.error(
            f"shape {_dims_text(target)} moves the batch axis; nmsat reshapes each sample, "
            "the batch first"
        )
    return tuple(out[1:])


def _axes(imp: _Importer, node: Any, attrs: dict[str, Any]) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return imp.const_ints(node.input[1], "axes")
    return None


def _squeeze(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    rank = len(x.shape) + 1
    axes = _axes(imp, node, attrs)
    if axes is None:
        if imp.graph_batch == 1:
            raise imp.error("no axes with a batch of 1: the batch axis would be squeezed too")
        return imp.reshaped(x, tuple(d for d in x.shape if d != 1))
    drop = {a % rank for a in axes}
    if 0 in drop or any(x.shape[a - 1] != 1 for a in drop):
        raise imp.error(f"axes {axes}: nmsat squeezes size-1 axes of each sample, not the batch")
    return imp.reshaped(x, tuple(d for i, d in enumerate(x.shape, 1) if i not in drop))


def _unsqueeze(imp: _Importer, node: Any, attrs: dict[str, Any]) -> _Act:
    x = imp.act(node.input[0])
    axes = _axes(imp, node, attrs)
    rank = len(x.shape) + 1 + len(axes or ())
    if not axes or 0 in {a % rank for a in axes}:
        raise imp.error(f"axes {axes}: nmsat adds axes to each sample, after the batch")
    full: list[int | None] = [None] * rank
    for a in {a % rank for a in axes}:
        full[a] = 1
    rest = iter((0, *x.shape))  # the batch (placeholder 0), then the sample axes
    shape = [d if d is not None else next(rest) for d in full]
    return imp.reshaped(x, tuple(shape[1:]))


_HANDLERS: dict[str, Callable[[_Importer, Any, Any], _Act]] = {
    "Add": _add,
    "AveragePool": _pool("avg"),
    "BatchNormalization": _host(Norm, 0, kind="batch"),
    "Conv": _conv,
    "Dropout": _pass,
    "Flatten": _flatten,
    "Gelu": _host(GELU, None),
    "Gemm": _gemm,
    "GlobalAveragePool": _global_pool("avg"),
    "GlobalMaxPool": _global_pool("max"),
    "Identity": _pass,
    "LayerNormalization": _layer_norm,
    "LogSoftmax": _softmax,
    "MatMul": _matmul,
    "MaxPool": _pool("max"),
    "Relu": _relu,
    "Reshape": _reshape,
    "Softmax": _softmax,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(("Constant", *_HANDLERS)))
"""Operators :func:`load_onnx` maps (plus nodes that only compute sizes, folded)."""
