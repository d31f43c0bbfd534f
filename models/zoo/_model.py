"""A model of the zoo: a named layer list at one batch size, its totals and its summary table.

Ref: PAPER.md (BDWP math table: FF, BP and WU MACs per layer); docs/zoo.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nmsat.hw.errors import NmsatError

from ._layers import Layer, MatMul, Sparsity, WeightLayer

__all__ = ["Model", "ModelError"]


class ModelError(NmsatError, ValueError):
    """An invalid model: unknown zoo name, bad batch, duplicate layer name or bad layer file."""


@dataclass(frozen=True)
class Model:
    """The layers of one training step of a network, in execution order of the forward pass.

    The list is not a graph: a residual block's shortcut conv comes after the block's main
    path, and an :class:`~nmsat.models.zoo.Add` stands for the sum. Every layer is described
    per sample; the batch enters only the GEMM view (``P = batch * positions``).

    Parameters
    ----------
    name : str
        The model's name (a zoo name, or the ``name`` of a layer file).
    batch : int
        Samples per training step (>= 1).
    layers : tuple of Layer
        The layers (a list is accepted and stored as a tuple); names must be unique.
    input_shape : tuple of int or None
        One sample's input shape, ``(C, H, W)`` or ``(tokens, features)``; None if unknown.

    Raises
    ------
    ModelError
        If ``batch < 1``, ``layers`` is empty, holds a non-layer, or repeats a name.
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
        seen: set[str] = set()
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ModelError(f"model {self.name!r}: layer {index} is not a Layer: {layer!r}")
            if layer.name in seen:
                raise ModelError(f"model {self.name!r}: layer name {layer.name!r} used twice")
            seen.add(layer.name)

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


def _si(value: int) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3f} {prefix}"
    return str(value)
