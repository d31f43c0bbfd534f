"""A model of the zoo: a named layer list at one batch size, its totals and its summary table.

Ref: PAPER.md (BDWP math table: FF, BP and WU MACs per layer); docs/zoo.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nmsat.hw.errors import NmsatError

from ._layers import Layer, MatMul, Sparsity, WeightLayer
from ._ops import Add

__all__ = ["Model", "ModelError"]

INPUT = "input"
"""The name a layer's ``inputs`` give to the model's input (reserved: no layer has it)."""


class ModelError(NmsatError, ValueError):
    """An invalid model: unknown zoo name, bad batch, duplicate layer name or bad layer file."""


@dataclass(frozen=True)
class Model:
    """The layers of one training step of a network, in execution order of the forward pass.

    The list is the forward order and, through each layer's ``inputs``, the data-flow graph:
    a layer reads the outputs of the earlier layers it names (``"input"``: the model's
    input). A layer given with ``inputs=()`` reads the previous layer's output; the model
    stores every layer with its inputs resolved to explicit names (see :meth:`inputs_of`).
    Every layer is described per sample; the batch enters only the GEMM view
    (``P = batch * positions``).

    Parameters
    ----------
    name : str
        The model's name (a zoo name, or the ``name`` of a layer file).
    batch : int
        Samples per training step (>= 1).
    layers : tuple of Layer
        The layers (a list is accepted and stored as a tuple); names must be unique and not
        ``"input"``.
    input_shape : tuple of int or None
        One sample's input shape, ``(C, H, W)`` or ``(tokens, features)``; None if unknown.

    Raises
    ------
    ModelError
        If ``batch < 1``, ``layers`` is empty, holds a non-layer, repeats a name or uses the
        name ``"input"``; or if a layer's inputs name an unknown or a later layer (or the
        layer itself), are not as many as its :attr:`~nmsat.models.zoo.Layer.arity`, or have
        a size the layer cannot read: an ``Add`` operand whose shape is not the add's
        ``shape``, a ``MatMul`` operand with fewer than ``count * m * k`` (A) or
        ``count * k * n`` (B) elements. Other layers' input sizes are not checked: an edge may
        pass through a host reshape (a flatten, the heads' concatenation, a class-token
        selection).
    """

    name: str
    batch: int
    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ModelError(
                f"model {self.name!r}: batch must be an integer >= 1, got {self.batch!r}"
            )
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not self.layers:
            raise ModelError(f"model {self.name!r}: no layers")
        position: dict[str, int] = {}
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ModelError(f"model {self.name!r}: layer {index} is not a Layer: {layer!r}")
            if layer.name == INPUT:
                raise ModelError(
                    f"model {self.name!r}: layer {index}: the name 'input' is reserved for "
                    "the model's input"
                )
            if layer.name in position:
                raise ModelError(f"model {self.name!r}: layer name {layer.name!r} used twice")
            position[layer.name] = index
        resolved = tuple(
            self._resolve(index, layer, position) for index, layer in enumerate(self.layers)
        )
        object.__setattr__(self, "layers", resolved)

    def _resolve(self, index: int, layer: Layer, position: dict[str, int]) -> Layer:
        """Return ``layer`` with explicit inputs, after checking names, arity and sizes."""
        where = f"model {self.name!r}: layer {layer.name!r} ({layer.op})"
        refs = layer.inputs or ((self.layers[index - 1].name if index else INPUT),)
        for ref in refs:
            at = position.get(ref, -1) if ref != INPUT else -1
            if ref != INPUT and at < 0:
                raise ModelError(
                    f"{where}: input {ref!r} is not a layer of the model; a layer reads "
                    "'input' or an earlier layer"
                )
            if at >= index:
                what = "the layer itself" if at == index else f"a later layer (#{at})"
                raise ModelError(
                    f"{where}: input {ref!r} is {what}; a layer reads 'input' or an earlier layer"
                )
        if len(refs) != layer.arity:
            default = " (the previous layer, by default)" if not layer.inputs else ""
            raise ModelError(
                f"{where}: has {len(refs)} input(s) {list(refs)}{default}, needs "
                f"{layer.arity}: give inputs=({', '.join(['...'] * layer.arity)})"
            )
        shapes = [
            self.input_shape if ref == INPUT else self.layers[position[ref]].output_shape
            for ref in refs
        ]
        if isinstance(layer, Add) and not layer.parameter:
            for ref, shape in zip(refs, shapes, strict=True):
                if shape is not None and shape != layer.shape:
                    raise ModelError(
                        f"{where}: input {ref!r} has shape {_dims(shape)}, not the add's "
                        f"{_dims(layer.shape)}"
                    )
        if isinstance(layer, MatMul):
            needs = (layer.count * layer.m * layer.k, layer.count * layer.k * layer.n)
            for operand, ref, shape, need in zip("AB", refs, shapes, needs, strict=True):
                if shape is not None and math.prod(shape) < need:
                    raise ModelError(
                        f"{where}: operand {operand} {ref!r} has {math.prod(shape)} elements, "
                        f"fewer than the {need} the product reads"
                    )
        return layer if layer.inputs == refs else replace(layer, inputs=refs)

    def inputs_of(self, layer_name: str) -> tuple[str, ...]:
        """Return the tensors the layer reads, in operand order: earlier layers or ``"input"``.

        Always explicit: a layer built with ``inputs=()`` reads the previous layer (the first
        reads ``"input"``). A residual ``Add`` gives ``(main path, shortcut)``, an attention
        ``MatMul`` ``(A, B)``.

        Raises
        ------
        ModelError
            If there is no layer called ``layer_name``.
        """
        return self.layer(layer_name).inputs

    @property
    def graph(self) -> dict[str, tuple[str, ...]]:
        """The data-flow graph: each layer's name mapped to :meth:`inputs_of`, in layer order.

        A fresh dict on every call.
        """
        return {layer.name: layer.inputs for layer in self.layers}

    @property
    def macs_per_sample(self) -> int:
        """Forward MACs per sample: convs, linears and activation products (MatMul)."""
        return sum(layer.macs_per_sample for layer in self.layers)

    @property
    def forward_macs(self) -> int:
        """Forward MACs of the whole batch: ``batch * macs_per_sample``."""
        return self.batch * self.macs_per_sample

    @property
    def weight_count(self) -> int:
        """GEMM weights of all layers (no biases, no normalisation parameters)."""
        return sum(layer.weight_count for layer in self.layers)

    @property
    def weight_layers(self) -> tuple[WeightLayer, ...]:
        """The layers with a weight (convs and linears), in order."""
        return tuple(layer for layer in self.layers if isinstance(layer, WeightLayer))

    def layer(self, name: str) -> Layer:
        """Return the layer called ``name``.

        Raises
        ------
        ModelError
            If there is none.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ModelError(f"model {self.name!r}: no layer named {name!r}")

    def sparse_layers(self, m: int, sparsity: Sparsity = "bdwp") -> tuple[WeightLayer, ...]:
        """Return the weight layers whose FF pass uses N:M weights with group size ``m``.

        See :meth:`WeightLayer.sparse_passes` for the rule.
        """
        return tuple(layer for layer in self.weight_layers if layer.sparse_passes(m, sparsity)[0])

    def with_batch(self, batch: int) -> Model:
        """Return the same model at another batch size (the layers do not change)."""
        return replace(self, batch=batch)

    def summary(self) -> str:
        """Return a plain-text table: one row per layer, then the totals.

        Columns: index, name, op, output shape per sample, GEMM dims at this batch
        (``C_out x K x P`` for weight layers, ``count x (m x k x n)`` for MatMul), forward
        MACs per sample, weights, and ``sparse`` (the layer's N:M eligibility).
        """
        header = ("#", "name", "op", "output", "GEMM", "MACs/sample", "weights", "sparse")
        rows = [header]
        for index, layer in enumerate(self.layers):
            rows.append(
                (
                    str(index),
                    layer.name,
                    _op_label(layer),
                    "x".join(map(str, layer.output_shape)),
                    _gemm_label(layer, self.batch),
                    f"{layer.macs_per_sample:,}" if layer.macs_per_sample else "",
                    f"{layer.weight_count:,}" if layer.weight_count else "",
                    _sparse_label(layer),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        right = {0, 5, 6}
        lines = [
            "  ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        shape = "x".join(map(str, self.input_shape)) if self.input_shape else "unknown"
        lines.insert(0, f"model {self.name}: batch {self.batch}, input {shape} per sample")
        lines.append(
            f"total: forward MACs {_si(self.macs_per_sample)} per sample, "
            f"{_si(self.forward_macs)} per batch; weights {_si(self.weight_count)}"
        )
        return "\n".join(lines)


def _op_label(layer: Layer) -> str:
    kind = getattr(layer, "kind", None)
    return f"{layer.op}:{kind}" if isinstance(kind, str) else layer.op


def _gemm_label(layer: Layer, batch: int) -> str:
    if isinstance(layer, WeightLayer):
        return "x".join(map(str, layer.gemm(batch)))
    if isinstance(layer, MatMul):
        return f"{layer.gemm_count(batch)}*" + "x".join(map(str, layer.gemm(batch)))
    return ""


def _sparse_label(layer: Layer) -> str:
    if isinstance(layer, WeightLayer):
        return "yes" if layer.sparse else "dense"
    return "dense" if isinstance(layer, MatMul) else ""


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _si(value: int) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3f} {prefix}"
    return str(value)
