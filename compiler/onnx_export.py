"""ONNX export: a zoo :class:`~nmsat.models.zoo.Model` as an ONNX file the importer reads back.

The inverse of :mod:`nmsat.compiler.onnx_import`: each zoo record becomes the ONNX node that
:func:`~nmsat.compiler.onnx_import.load_onnx` maps back to it, so a file written here imports
as the same layers (and compiles to the same instruction words). It gives users an example
graph for ``nmsat simulate --onnx`` without downloading anything, and the importer a
round-trip test.

How each record is written (the importer's table in docs/onnx.md, read right to left):

- :class:`~nmsat.models.zoo.Conv2d` -> ``Conv`` (explicit ``kernel_shape``, ``strides``,
  four equal ``pads``; no bias); :class:`~nmsat.models.zoo.Linear` -> ``Gemm`` with
  ``transB = 1`` and a bias, as ``torch.onnx.export`` writes ``nn.Linear`` (one token), or
  ``MatMul`` against a ``[K, O]`` weight (several tokens);
- :class:`~nmsat.models.zoo.MatMul` -> ``MatMul`` of two activations, when each operand is
  a whole tensor of ``[count, m, k]`` / ``[count, k, n]`` elements;
- ``ReLU`` -> ``Relu``, ``Add`` -> ``Add`` (of two activations, or of a ``[1, *shape]``
  initializer with ``parameter=True``), ``Norm`` -> ``BatchNormalization`` (its four
  parameter tensors) or ``LayerNormalization`` (last axis), ``Softmax`` -> ``Softmax``
  (last axis), ``GELU`` -> ``Gelu`` (opset 20), ``Pool`` -> ``MaxPool`` / ``AveragePool``
  (``count_include_pad = 1``), or ``GlobalAveragePool`` / ``GlobalMaxPool`` for a window
  that covers the whole map;
- a layer that reads its input under another shape (a classifier after a feature map) gets
  a ``Flatten`` (to one axis) or a ``Reshape`` with a constant ``[0, ...]`` target first.

What the importer cannot read back is refused in one line naming the layer, before any
weight is drawn: an operand that is a slice of its tensor (the attention products of
``vit_b16`` and ``bert_base`` read Q, K and V from the fused QKV output, which takes
``Split``/``Transpose`` in ONNX), a class-token concatenation or selection, an element-wise
layer whose shape is not its input's layout. As a last guard the graph is imported again and
compared with the model, layer by layer.

Weights are FP32 initializers drawn from a seeded generator (He-normal for convs and
linears, so a forward pass stays finite; zero biases; PyTorch's initial values for the
normalisation parameters): the file has the right shapes and runs, but it is not a trained
network. The zoo's N:M eligibility does not travel: the importer applies its own policy
(dense stem and classifier), which is the zoo's.

Ref: ONNX operator specifications, https://onnx.ai/onnx/operators/ (Conv, Gemm, MatMul,
     BatchNormalization, LayerNormalization, pooling, Flatten, Reshape, Softmax, Gelu).
Ref: ONNX Python API, https://onnx.ai/onnx/api/helper.html (make_node, make_graph,
     make_model, find_min_ir_version_for) and numpy_helper.from_array.
Ref: K. He et al., "Delving Deep into Rectifiers", ICCV 2015 (He-normal: std sqrt(2 / fan_in)).
Ref: docs/onnx.md (import table, Export section); docs/zoo.md (layer records).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from nmsat.hw.errors import NmsatError
from nmsat.hw.files import write_atomic
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

from .onnx_import import OnnxImportError, import_onnx

__all__ = ["OPSET", "ExportedOnnx", "OnnxExportError", "export_onnx", "save_onnx"]

OPSET = 17
"""The opset written (``torch.onnx.export``'s default); 20 when the model has a GELU."""

_BATCH_PARAM = "N"
"""The ``dim_param`` of a symbolic batch axis."""

_MAX_BYTES = 2**31 - 2**24
"""A protobuf message holds at most 2 GiB; keep 16 MiB for everything that is not a weight."""


class OnnxExportError(NmsatError, ValueError):
    """A model the ONNX importer could not read back, or a file that cannot be written."""


@dataclasses.dataclass(frozen=True)
class ExportedOnnx:
    """What :func:`save_onnx` wrote.

    Members
    -------
    model : str
        The model's name.
    path : Path
        The file.
    size_bytes : int
        Its size; the FP32 weights are nearly all of it.
    node_count : int
        ONNX nodes in the graph.
    parameter_count : int
        Values in the initializers (weights, biases, normalisation parameters).
    opset : int
        The default domain's opset.
    batch : int or None
        The graph input's fixed batch axis; None when it is symbolic (``N``).
    policy_layers : tuple of str
        Layers whose N:M eligibility the importer's policy sets differently from the model
        (empty for the zoo's models).
    """

    model: str
    path: Path
    size_bytes: int
    node_count: int
    parameter_count: int
    opset: int
    batch: int | None
    policy_layers: tuple[str, ...]

    def summary(self) -> str:
        """Return one line for the command line."""
        batch = str(self.batch) if self.batch is not None else f"{_BATCH_PARAM} (symbolic)"
        mega = self.size_bytes >= 10**6
        size = f"{self.size_bytes / (1e6 if mega else 1e3):.1f} {'MB' if mega else 'kB'}"
        line = (
            f"{self.model}: wrote {self.path} ({size}, opset {self.opset}, "
            f"{self.node_count} nodes, {self.parameter_count:,} FP32 parameters, batch {batch})"
        )
        if self.policy_layers:
            line += f"; N:M eligibility not kept for {', '.join(self.policy_layers)}"
        return line


@dataclasses.dataclass(frozen=True)
class _Value:
    """An activation in the graph: its ONNX tensor name and shape per sample."""

    name: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Init:
    """An initializer to draw once the graph is known: ``normal`` (He-normal over
    ``fan_in``; std 0.02 when it is 0, a learned embedding), ``ones``, ``zeros``, or the
    integers of ``ints``."""

    name: str
    dims: tuple[int, ...]
    fill: Literal["normal", "ones", "zeros", "ints"]
    fan_in: int = 0
    ints: tuple[int, ...] = ()


def export_onnx(
    model: Model, batch: int | None = None, *, seed: int = 0, check: bool = True
) -> Any:
    """Return ``model`` as an ``onnx.ModelProto`` that imports as the same layers.

    Parameters
    ----------
    model : Model
        A zoo model (or one from a layer file) with a known input shape.
    batch : int or None
        The graph input's batch axis: a fixed size, or None for a symbolic one (``N``, as
        ``torch.onnx.export(dynamic_axes=...)`` writes it), which the importer sizes from
        ``--batch``.
    seed : int
        Seed of the weights' generator; one seed gives the same bytes.
    check : bool
        Import the graph again (ONNX checker and shape inference included) and compare it
        with ``model`` layer by layer (default True).

    Raises
    ------
    OnnxExportError
        One line naming the layer the importer could not read back, or a model whose
        weights exceed the 2 GiB a protobuf holds.
    """
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise OnnxExportError(f"batch must be an integer >= 1 or None, got {batch!r}")
    proto = _Exporter(model).proto(batch, seed)
    if check:
        _check_round_trip(model, proto)
    return proto


def save_onnx(
    model: Model, path: str | Path, batch: int | None = None, *, seed: int = 0
) -> ExportedOnnx:
    """Write ``model`` to ``path`` as ONNX (atomically) and return what was written.

    See :func:`export_onnx` for ``batch`` and ``seed``; the round-trip check always runs,
    before anything is written.
    """
    proto = export_onnx(model, batch, seed=seed, check=False)
    policy_layers = _check_round_trip(model, proto)
    blob = proto.SerializeToString()
    try:
        write_atomic(path, blob)
    except OSError as exc:
        raise OnnxExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return ExportedOnnx(
        model=model.name,
        path=Path(path),
        size_bytes=len(blob),
        node_count=len(proto.graph.node),
        parameter_count=sum(
            math.prod(t.dims) for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT
        ),
        opset=next(o.version for o in proto.opset_import if o.domain == ""),
        batch=batch,
        policy_layers=policy_layers,
    )


def _check_round_trip(model: Model, proto: Any) -> tuple[str, ...]:
    """Import ``proto``; raise unless it gives ``model``'s layers and input shape.

    Returns the weight layers whose ``sparse`` flag (N:M eligibility) the importer's policy
    sets otherwise than ``model``: the flag has no ONNX form.
    """
    source = f"exported {model.name}"
    try:
        back = import_onnx(proto, model.batch, name=model.name, source=source)
    except OnnxImportError as exc:
        raise OnnxExportError(
            f"model {model.name!r}: the importer refuses the graph ({exc})"
        ) from None
    for mine, read in zip(model.layers, back.layers, strict=False):
        if _unflagged(mine) != _unflagged(read):
            raise OnnxExportError(
                f"model {model.name!r}: layer {mine.name!r} ({mine.op}) reads back as {read!r}"
            )
    if len(model.layers) != len(back.layers) or back.input_shape != model.input_shape:
        raise OnnxExportError(
            f"model {model.name!r}: the graph reads back as {len(back.layers)} layers on input "
            f"{_dims(back.input_shape)}, not {len(model.layers)} on {_dims(model.input_shape)}"
        )
    return tuple(
        mine.name
        for mine, read in zip(model.layers, back.layers, strict=True)
        if isinstance(mine, WeightLayer) and mine != read
    )


def _unflagged(layer: Layer) -> Layer:
    return dataclasses.replace(layer, sparse=True) if isinstance(layer, WeightLayer) else layer


def _dims(shape: tuple[int, ...] | None) -> str:
    return "x".join(map(str, shape)) if shape else "unknown"


def _host_shape(
    stored: tuple[int, ...], shape: tuple[int, ...], axis: int | None
) -> tuple[int, ...]:
    """The shape the importer gives a host layer reading ``shape`` from a tensor stored as
    ``stored`` (onnx_import._host_shape): the stored one when they agree up to size-1 axes."""
    same = [d for d in stored if d != 1] == [d for d in shape if d != 1]
    if same and (axis is None or stored[axis] == shape[axis]):
        return stored
    return shape


class _RefusedError(Exception):
    """A layer the importer could not read back, and why (collected, then reported)."""

    def __init__(self, layer: Layer, rule: str) -> None:
        super().__init__(rule)
        self.layer = layer
        self.rule = rule


class _Exporter:
    """One pass over the layers in order: ``values`` maps zoo tensor names (layers and
    ``"input"``) to graph activations, ``stored`` to their zoo shapes."""

    def __init__(self, model: Model) -> None:
        self.model = model
        if model.input_shape is None:
            raise OnnxExportError(
                f"model {model.name!r}: the input shape is unknown; the graph input needs one"
            )
        self.stored: dict[str, tuple[int, ...]] = {"input": model.input_shape}
        self.values: dict[str, _Value] = {"input": _Value("input", model.input_shape)}
        self.views: dict[tuple[str, tuple[int, ...]], _Value] = {}
        self.nodes: list[Any] = []
        self.inits: list[_Init] = []
        self.used: set[str] = {"input"} | {layer.name for layer in model.layers}
        self.opset = OPSET
        self.layer: Layer = model.layers[0]

    def proto(self, batch: int | None, seed: int) -> Any:
        refused: list[_RefusedError] = []
        for layer in self.model.layers:
            self.layer = layer
            try:
                self.values[layer.name] = self._write(layer)
            except _RefusedError as exc:
                # Go on with the zoo's layout, so that the message can say whether the
                # refusal is the only one.
                refused.append(exc)
                self.values[layer.name] = _Value(layer.name, layer.output_shape)
            self.stored[layer.name] = layer.output_shape
        if refused:
            raise self._refusal(refused)
        weight_bytes = 4 * sum(math.prod(i.dims) for i in self.inits if i.fill != "ints")
        if weight_bytes > _MAX_BYTES:
            raise OnnxExportError(
                f"model {self.model.name!r}: {weight_bytes / 2**30:.1f} GiB of FP32 weights; "
                "an ONNX file without external data holds at most 2 GiB"
            )
        first: int | str = batch if batch is not None else _BATCH_PARAM
        out = self.values[self.model.layers[-1].name]
        graph = helper.make_graph(
            self.nodes,
            self.model.name,
            [
                helper.make_tensor_value_info(
                    "input", TensorProto.FLOAT, [first, *self.stored["input"]]
                )
            ],
            [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [first, *out.shape])],
            initializer=_draw(self.inits, seed),
        )
        opsets = [helper.make_opsetid("", self.opset)]
        proto = helper.make_model(
            graph,
            opset_imports=opsets,
            ir_version=helper.find_min_ir_version_for(opsets),
            producer_name="nmsat",
            doc_string=(
                f"nmsat zoo model {self.model.name}: random FP32 weights (seed {seed}), "
                "the right shapes, not trained"
            ),
        )
        return proto

    # -- graph pieces ----------------------------------------------------------------------
    def refuse(self, rule: str) -> _RefusedError:
        return _RefusedError(self.layer, rule)

    def _refusal(self, refused: list[_RefusedError]) -> OnnxExportError:
        first = refused[0]
        text = (
            f"model {self.model.name!r} has no ONNX form the importer reads back: layer "
            f"{first.layer.name!r} ({first.layer.op}) {first.rule}"
        )
        if len(refused) > 1:
            other = next((r for r in refused if r.layer.op != first.layer.op), refused[1])
            text += (
                f"; {len(refused) - 1} more layers too, e.g. {other.layer.name!r} "
                f"({other.layer.op})"
            )
        return OnnxExportError(text)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> None:
        name = output if output == self.layer.name else self.fresh(f"{self.layer.name}/{op}")
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))

    def param(
        self,
        suffix: str,
        dims: tuple[int, ...],
        fill: Literal["normal", "ones", "zeros"],
        fan_in: int = 0,
    ) -> str:
        name = self.fresh(f"{self.layer.name}.{suffix}")
        self.inits.append(_Init(name, dims, fill, fan_in))
        return name

    def view(self, source: str, shape: tuple[int, ...], role: str = "its input") -> _Value:
        """The activation ``source`` under the sample shape ``shape`` (Flatten or Reshape)."""
        value = self.values[source]
        if value.shape == shape:
            return value
        if math.prod(value.shape) != math.prod(shape):
            raise self.refuse(
                f"reads {role} {source!r} ({_dims(self.stored[source])} per sample) as "
                f"{_dims(shape)}, a part of it: a slice or a selection (Split, Slice or Gather "
                "in ONNX, which the importer does not map)"
            )
        cached = self.views.get((source, shape))
        if cached is not None:
            return cached
        out = self.fresh(f"{source}/{'flat' if len(shape) == 1 else 'view'}")
        if len(shape) == 1:
            self.node("Flatten", [value.name], out, axis=1)
        else:
            target = self.fresh(f"{out}.shape")
            self.inits.append(_Init(target, (len(shape) + 1,), "ints", ints=(0, *shape)))
            self.node("Reshape", [value.name, target], out)
        self.views[(source, shape)] = _Value(out, shape)
        return self.views[(source, shape)]

    def same_layout(self, source: str, shape: tuple[int, ...]) -> _Value:
        """``source`` for a layer the importer gives its input's stored shape."""
        stored = self.stored[source]
        if math.prod(stored) != math.prod(shape):
            raise self.refuse(
                f"reads its input {source!r} ({_dims(stored)} per sample) as {_dims(shape)}: "
                "a concatenation or a selection (Concat, Slice or Gather in ONNX, which the "
                "importer does not map)"
            )
        if stored != shape:
            raise self.refuse(
                f"has shape {_dims(shape)}, not the layout of its input {source!r} "
                f"({_dims(stored)}), which the importer gives it"
            )
        return self.values[source]

    # -- one layer -------------------------------------------------------------------------
    def _write(self, layer: Layer) -> _Value:
        out = layer.name
        if isinstance(layer, Conv2d):
            x = self.view(layer.inputs[0], (layer.c_in, layer.h_in, layer.w_in))
            fan_in = layer.c_in * layer.kh * layer.kw
            w = self.param(
                "weight", (layer.c_out, layer.c_in, layer.kh, layer.kw), "normal", fan_in
            )
            self.node(
                "Conv",
                [x.name, w],
                out,
                kernel_shape=[layer.kh, layer.kw],
                strides=[layer.stride] * 2,
                pads=[layer.padding] * 4,
            )
            return _Value(out, layer.output_shape)
        if isinstance(layer, Linear):
            return self._linear(layer)
        if isinstance(layer, MatMul):
            shape_a = (layer.count, layer.m, layer.k) if layer.count > 1 else (layer.m, layer.k)
            shape_b = (layer.count, layer.k, layer.n) if layer.count > 1 else (layer.k, layer.n)
            a = self.view(layer.inputs[0], shape_a, "operand A")
            b = self.view(layer.inputs[1], shape_b, "operand B")
            self.node("MatMul", [a.name, b.name], out)
            return _Value(out, (*shape_a[:-1], layer.n))
        if isinstance(layer, ReLU):
            x = self.same_layout(layer.inputs[0], layer.shape)
            self.node("Relu", [x.name], out)
            return _Value(out, x.shape)
        if isinstance(layer, Add):
            return self._add(layer)
        if isinstance(layer, Pool):
            return self._pool(layer)
        if isinstance(layer, Norm | Softmax | GELU):
            return self._host(layer)
        raise self.refuse("has no ONNX operator")

    def _linear(self, layer: Linear) -> _Value:
        out = layer.name
        if layer.tokens == 1:  # nn.Linear as torch.onnx.export writes it
            x = self.view(layer.inputs[0], (layer.c_in,))
            w = self.param("weight", (layer.c_out, layer.c_in), "normal", layer.c_in)
            b = self.param("bias", (layer.c_out,), "zeros")
            self.node("Gemm", [x.name, w, b], out, transB=1)
            return _Value(out, (layer.c_out,))
        x = self.view(layer.inputs[0], (layer.tokens, layer.c_in))
        w = self.param("weight", (layer.c_in, layer.c_out), "normal", layer.c_in)
        self.node("MatMul", [x.name, w], out)
        return _Value(out, (layer.tokens, layer.c_out))

    def _add(self, layer: Add) -> _Value:
        out = layer.name
        if layer.parameter:
            x = self.same_layout(layer.inputs[0], layer.shape)
            p = self.param("parameter", (1, *x.shape), "normal")
            self.node("Add", [x.name, p], out)
            return _Value(out, x.shape)
        a, b = (self.values[name] for name in layer.inputs)
        if a.shape != b.shape:  # one layout (the model checks it), two ONNX shapes
            a, b = (self.view(name, layer.shape) for name in layer.inputs)
        self.node("Add", [a.name, b.name], out)
        return _Value(out, a.shape)

    def _pool(self, layer: Pool) -> _Value:
        out = layer.name
        x = self.view(layer.inputs[0], (layer.c, layer.h_in, layer.w_in))
        op = "MaxPool" if layer.kind == "max" else "AveragePool"
        whole = layer.kernel == layer.h_in == layer.w_in and layer.padding == 0
        if whole and layer.stride == 1:
            self.node(f"Global{op}", [x.name], out)
        else:
            counting = {"count_include_pad": 1} if op == "AveragePool" and layer.padding else {}
            self.node(
                op,
                [x.name],
                out,
                kernel_shape=[layer.kernel] * 2,
                strides=[layer.stride] * 2,
                pads=[layer.padding] * 4,
                **counting,
            )
        return _Value(out, layer.output_shape)

    def _host(self, layer: Norm | Softmax | GELU) -> _Value:
        out = layer.name
        source = layer.inputs[0]
        batch_norm = isinstance(layer, Norm) and layer.kind == "batch"
        axis = 0 if batch_norm else None if isinstance(layer, GELU) else -1
        stored, x = self.stored[source], self.values[source]
        if _host_shape(stored, x.shape, axis) != layer.shape:  # else: read as it is
            read = _host_shape(stored, layer.shape, axis)
            if read != layer.shape:
                raise self.refuse(
                    f"has shape {_dims(layer.shape)}, which the importer would read as its "
                    f"input's layout {_dims(read)}"
                )
            x = self.view(source, layer.shape)
        if isinstance(layer, Norm):
            c = x.shape[0 if batch_norm else -1]  # BN: channels on axis 1 of [N, C, ...]
            scale, bias = self.param("weight", (c,), "ones"), self.param("bias", (c,), "zeros")
            if batch_norm:
                mean = self.param("running_mean", (c,), "zeros")
                var = self.param("running_var", (c,), "ones")
                self.node("BatchNormalization", [x.name, scale, bias, mean, var], out)
            else:
                self.node("LayerNormalization", [x.name, scale, bias], out, axis=-1)
        elif isinstance(layer, Softmax):
            self.node("Softmax", [x.name], out, axis=-1)
        else:
            self.opset = max(self.opset, 20)  # Gelu entered the default domain in opset 20
            self.node("Gelu", [x.name], out)
        return _Value(out, x.shape)


def _draw(inits: list[_Init], seed: int) -> list[Any]:
    """The initializers' tensors, drawn in graph order from one seeded generator."""
    rng = np.random.default_rng(seed)
    tensors = []
    for init in inits:
        if init.fill == "ints":
            array: np.ndarray[Any, Any] = np.asarray(init.ints, np.int64)
        elif init.fill == "normal":
            # He-normal keeps a ReLU network's activations finite; 0.02 is ViT's embedding std.
            std = math.sqrt(2.0 / init.fan_in) if init.fan_in else 0.02
            array = rng.standard_normal(init.dims, dtype=np.float32)
            array *= np.float32(std)
        else:
            array = np.full(init.dims, 1.0 if init.fill == "ones" else 0.0, np.float32)
        tensors.append(numpy_helper.from_array(array, init.name))
    return tensors
