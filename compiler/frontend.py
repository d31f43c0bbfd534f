"""Frontend: a zoo model (or a user's layer file) to the compiler's layer graph.

Every layer becomes a :class:`Node` that names the nodes it reads and says how it runs:
``"conv"`` (convolutions and linears, both lowered as convolutions: a linear is a 1x1
convolution over ``tokens x 1`` positions), ``"matmul"`` (activation x activation products),
``"add"`` and ``"relu"`` on the WUVE, or ``"host"`` (normalisation, pooling, GELU, softmax:
work left to the host, docs/decisions.md). A ReLU right after a conv or an add is fused into
it (the WUVE applies it while converting the result to FP16); one right after host work runs
on the host with it.

Ref: DESIGN.md section 4 (what stays on the host); docs/zoo.md (layer records).
"""

from __future__ import annotations

import dataclasses

from nmsat.hw.errors import ShapeError
from nmsat.models.zoo import Add, Conv2d, Layer, Linear, MatMul, Model, ReLU, WeightLayer

__all__ = ["Graph", "Node", "build_graph"]


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer of the graph.

    Members
    -------
    name : str
        The zoo layer's name.
    kind : str
        ``"conv"``, ``"matmul"``, ``"add"``, ``"relu"`` or ``"host"``.
    inputs : tuple of str
        Names of the nodes read (``"input"``: the model's input).
    shape : tuple of int
        Output per sample as ``(C, H, W)`` (token layers: ``(features, tokens, 1)``).
    layer : Layer
        The zoo record.
    relu : bool
        A following ReLU is fused into this node.
    alias : str
        For a fused ReLU: the node whose output it is ("" otherwise).
    ff_nm, bp_nm : (int, int)
        N:M pattern of the FF and BP copies ((m, m) when dense); conv nodes only.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, int, int]
    layer: Layer
    relu: bool = False
    alias: str = ""
    ff_nm: tuple[int, int] = (1, 1)
    bp_nm: tuple[int, int] = (1, 1)


@dataclasses.dataclass(frozen=True)
class Graph:
    """The layer graph of one model at one batch size and N:M pattern."""

    model: str
    batch: int
    nm: tuple[int, int]
    input_shape: tuple[int, int, int]
    nodes: tuple[Node, ...]

    def node(self, name: str) -> Node:
        """Return the node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self, name: str) -> tuple[Node, ...]:
        """Return the nodes that read ``name``'s output (fused aliases resolved)."""
        return tuple(n for n in self.nodes if name in n.inputs and not n.alias)


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Channel-major view of a per-sample shape: (C, H, W); tokens become H."""
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    if len(shape) == 2:
        return (shape[1], shape[0], 1)
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise ShapeError(f"shape {shape} has {len(shape)} axes; the compiler takes 1 to 3")


def _inputs_of(model: Model, index: int) -> tuple[str, ...]:
    layer = model.layers[index]
    resolver = getattr(model, "inputs_of", None)
    if resolver is not None:
        return tuple(resolver(layer.name))
    return (model.layers[index - 1].name if index else "input",)


def _kind(layer: Layer) -> str:
    if isinstance(layer, Conv2d | Linear):
        return "conv"
    if isinstance(layer, MatMul):
        return "matmul"
    if isinstance(layer, Add):
        return "add"
    if isinstance(layer, ReLU):
        return "relu"
    return "host"


def build_graph(model: Model, nm: tuple[int, int], sparsity: str = "bdwp") -> Graph:
    """Return the layer graph of ``model`` for the N:M pattern ``nm`` ((1, 1): dense).

    A weight layer uses ``nm`` in FF and BP where :meth:`WeightLayer.sparse_passes` allows
    it (the zoo's policy: first conv and classifier dense, group axes divisible by M).
    """
    n, m = nm
    if model.input_shape is None:
        raise ShapeError(f"model {model.name!r} has no input shape; the compiler needs one")
    nodes: list[Node] = []
    for index, layer in enumerate(model.layers):
        kind = _kind(layer)
        inputs = _inputs_of(model, index)
        ff_nm = bp_nm = (1, 1)
        if isinstance(layer, WeightLayer) and n < m:
            ff, bp = layer.sparse_passes(m, sparsity)  # type: ignore[arg-type]
            ff_nm = (n, m) if ff else (1, 1)
            bp_nm = (n, m) if bp else (1, 1)
        shape = _chw(layer.output_shape)
        if isinstance(layer, MatMul):  # stored with heads joined: [count n][m][1][B]
            shape = (layer.count * layer.n, layer.m, 1)
        node = Node(layer.name, kind, inputs, shape, layer, ff_nm=ff_nm, bp_nm=bp_nm)
        if kind == "relu" and nodes and inputs == (nodes[-1].name,):
            prev = nodes[-1]
            alone = all(
                prev.name not in _inputs_of(model, j) for j in range(index + 1, len(model.layers))
            )
            if prev.kind in ("conv", "add", "host") and not prev.relu and alone:
                nodes[-1] = dataclasses.replace(prev, relu=True)
                node = dataclasses.replace(node, alias=prev.name)
        nodes.append(node)
    return Graph(model.name, model.batch, nm, _chw(model.input_shape), tuple(nodes))
