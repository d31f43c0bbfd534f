"""Lowering: one BDWP training step of a layer graph to a tiled instruction program.

The step runs FF over the graph in order, the host loss, then BP in reverse order. Per conv
or linear layer (a linear is a 1x1 convolution over ``tokens x 1`` positions):

- **FF** ``Y = W_F X``: weight-stationary N:M GEMMs. The im2col matrix of a tile of output
  positions is assembled in the ACT buffer by one DMA transfer per kernel position and
  channel range (K order ``(kh, kw, C_in)``), so one GEMM reduces over all of K in increasing
  k, as the reference does. The WUVE converts the FP32 result to FP16 (fusing a following
  ReLU) and it is stored channel-major ``[C][H][W][B]`` with a zero border for the next
  layer's padding.
- **BP** ``dX = W_B^T dY``: the transposed convolution, split into ``stride^2`` phases of the
  input positions; phase ``(ph, pw)`` gathers, for each kernel position that reaches it, a
  shifted window of the zero-padded dY, and reduces over (kernel position, C_out) with the BP
  copy (groups along C_out) in one weight-stationary GEMM per tile. Skipped for the first
  layer.
- **WU** ``dW = dY X^T``: dense output-stationary GEMMs per (C_out, K) tile, accumulating
  over chunks of positions; then **UPDATE** (SGD momentum, weight decay, SR-STE) on the FP32
  master weights and momentum, and, with pre-generation, **PRUNE** of next step's FF and BP
  copies from the updated tile still in the VEC buffer.

Without pre-generation, the copies are made at the start of each layer's FF and BP from the
master weights loaded again. ReLU gradients and residual sums run on the WUVE as element-wise
passes; normalisation, pooling, GELU and the loss run on the host between device segments.

Ref: Fang et al., TCAD 2023 (BDWP, interleave mapping, pre-generation, offline scheduling);
     PAPER.md (BDWP math); V. Dumoulin and F. Visin, "A guide to convolution arithmetic for
     deep learning", 2016 (transposed convolution as a convolution over the output gradient).
"""

from __future__ import annotations

import math

from nmsat.hw.errors import ShapeError
from nmsat.hw.isa import Direction, VecOp
from nmsat.hw.params import SATParams

from .frontend import Graph, Node
from .ir import CompileOptions, HostOp, Phase, Program
from .lower_base import ConvShape, TensorView
from .lower_conv import ConvLowering
from .lower_matmul import MatMulLowering

__all__ = ["lower"]


class _Lowering(ConvLowering, MatMulLowering):
    # -- the step ------------------------------------------------------------------------
    def run(self) -> Program:
        nodes = list(self.g.nodes)
        # A final softmax is the loss: the host computes softmax and cross-entropy together
        # and returns the gradient of the logits (its input).
        last = nodes[-1]
        loss_name = last.name
        if last.kind == "host" and type(last.layer).__name__ == "Softmax":
            nodes.pop()
            loss_name = last.name
            last = self.g.node(self._source(last.inputs[0]))
        for node in nodes:  # fail fast: a layer that cannot be tiled, before any lowering
            if node.kind == "conv" and not node.alias:
                self.check_fits(node)
        for node in nodes:
            self.forward(node)
        logits = self._source(last.name)
        self.b.host(
            HostOp(
                "softmax_loss",
                loss_name,
                (self.act(logits).name,),
                (self.grad(logits).name,),
                math.prod(last.shape) * self.batch,
            )
        )
        self.grad_parts[logits] = [self.grad(logits).name]
        for node in reversed(nodes):
            self.backward(node)
        self.b.halt()
        if self.o.pregen:
            self.prologue()
        return Program(
            self.g.model,
            self.batch,
            self.g.nm,
            self.p.name,
            self.o,
            tuple(self.b.tensors.values()),
            tuple(self.b.ops),
            tuple(self.layers),
        )

    def prologue(self) -> None:
        """Append the init segment: the first step's FF and BP copies (pre-generation)."""
        self.b.kind = "init"
        for node in self.g.nodes:
            if node.kind == "conv":
                self.make_copies(node, Direction.FF)
                if self.needs_bp(node):
                    self.make_copies(node, Direction.BP)
        self.b.halt()

    # -- forward -------------------------------------------------------------------------
    def forward(self, node: Node) -> None:
        if node.alias:
            return
        if node.kind == "conv":
            shape = ConvShape.of(node)
            self.layers.append(
                (node.name, (node.ff_nm[0] < node.ff_nm[1], node.bp_nm[0] < node.bp_nm[1]))
            )
            if not self.o.pregen:
                self.make_copies(node, Direction.FF)
            self.conv_ff(node, shape)
        elif self._is_host_add(node):
            # A parameter added after a reshape the host does (ViT: class token, then the
            # position embedding): host work.
            self._host_forward(node)
        elif node.kind == "add":
            srcs = [self.act(i) for i in node.inputs]
            if len(srcs) == 1:  # a learned parameter added to the input (ViT's pos_embed)
                c, h, w = node.shape
                t = self._alloc(
                    f"param:{node.name}", "fp16", (c, h, w, self.batch), "C,H,W,B", "weight"
                )
                srcs.append(TensorView(t.name, t.addr, c, h, w, 0, self.batch))
            self.elementwise(
                node, VecOp.ADD, srcs, self.act(node.name), Phase.VECTOR, relu=node.relu
            )
        elif node.kind == "relu":
            self.elementwise(
                node, VecOp.RELU, [self.act(node.inputs[0])], self.act(node.name), Phase.VECTOR
            )
        elif node.kind == "matmul":
            self.matmul_ff(node)
        elif node.kind == "host":
            self._host_forward(node)
        else:
            raise ShapeError(
                f"layer {node.name!r}: {node.kind} layers are not lowered yet "
                "(conv, linear, relu, add and host layers are)"
            )

    def _is_host_add(self, node: Node) -> bool:
        """A one-input add after a host reshape (ViT: class token, then position embedding)."""
        return (
            node.kind == "add"
            and len(node.inputs) == 1
            and self._shape_of(self._source(node.inputs[0])) != node.shape
        )

    def _host_forward(self, node: Node) -> None:
        self.b.host(
            HostOp(
                type(node.layer).__name__.lower() + ("+relu" if node.relu else ""),
                node.name,
                tuple(self.act(i).name for i in node.inputs),
                (self.act(node.name).name,),
                math.prod(node.shape) * self.batch,
            )
        )

    def backward(self, node: Node) -> None:
        if node.alias:
            return
        pad = 0
        if node.kind == "conv":
            pad = self.dy_padding(ConvShape.of(node))
        dy = self.gradient(node.name, 0 if node.relu else pad, node.name)
        if node.relu:
            pre = self.grad(node.name, "pre", pad)
            self.elementwise(node, VecOp.RELU_GRAD, [dy, self.act(node.name)], pre, Phase.VECTOR)
            dy = pre
        if node.kind == "conv":
            self.conv_bp(node, ConvShape.of(node), dy)
        elif node.kind == "add" and not self._is_host_add(node):
            for i in node.inputs:
                self._add_part(i, dy.name)
        elif node.kind == "matmul":
            self.matmul_bp(node)
        elif node.kind == "relu":
            g = self.grad(node.inputs[0], node.name)
            self.elementwise(node, VecOp.RELU_GRAD, [dy, self.act(node.name)], g, Phase.VECTOR)
            self._add_part(node.inputs[0], g.name)
        else:  # host
            parts = []
            for i in node.inputs:
                if i != "input":
                    part = self.grad(self._source(i), node.name)
                    parts.append(part.name)
                    self._add_part(i, part.name)
            self.b.host(
                HostOp(
                    type(node.layer).__name__.lower() + "_bwd",
                    node.name,
                    (dy.name, *(self.act(i).name for i in node.inputs)),
                    tuple(parts),
                    math.prod(node.shape) * self.batch,
                )
            )


def lower(graph: Graph, params: SATParams, options: CompileOptions) -> Program:
    """Lower one training step of ``graph`` for ``params`` (see the module docstring)."""
    return _Lowering(graph, params, options).run()
