"""Lowering of activation x activation products (attention): dense GEMMs per sample and head.

A :class:`~nmsat.models.zoo.MatMul` computes ``count`` products ``C = A B`` per sample
(``A[m, k]``, ``B[k, n]``). Both operands are activations, so each product is one dense
weight-stationary GEMM with A in the WGT buffer, per sample and head. The operands are
slices of channel-major tensors, gathered by DMA transfers whose levels may be transposed
(docs/isa.md: no element twice, in any order); a gather of single elements costs one memory
beat per element, which is what a channel-major layout costs attention.

Operand patterns (the zoo's attention, docs/zoo.md):

- ``Q K^T``: both operands from the fused QKV output ``[3 d][T][1][B]``: ``A[i][c] =
  QKV[h k + c][i]``, ``B[c][j] = QKV[d + h k + c][j]``.
- ``A V``: A from the softmax output ``[count][m][k][B]`` (``A[i][t] = S[h][i][t]``) and
  ``B[t][c] = QKV[2 d + h n + c][t]``.

The output is stored with heads joined, ``[count n][m][1][B]`` (what the output projection
reads). BP runs ``dA = dC B^T`` and ``dB = A^T dC`` and writes both into the gradient of the
source tensor (disjoint slices of it).

Ref: A. Vaswani et al., "Attention is all you need", NeurIPS 2017; docs/zoo.md (operands).
"""

from __future__ import annotations

from nmsat.hw import isa
from nmsat.hw.errors import ShapeError
from nmsat.hw.isa import Buffer, Dataflow, Opcode, VecOp
from nmsat.models.zoo import MatMul

from .frontend import Node
from .ir import Phase, Region
from .lower_base import LoweringBase, TensorView

__all__ = ["MatMulLowering"]

#: An operand's gather for head 0: (tensor view, element offset, elements from one head to
#: the next, [(count, stride)] of the matrix, outermost first).
_Pattern = tuple[TensorView, int, int, list[tuple[int, int]]]


class MatMulLowering(LoweringBase):
    """The MatMul passes (FF and BP; no weights, no WU)."""

    def _operands(self, node: Node, b: int, grad: bool = False) -> tuple[_Pattern, _Pattern]:
        """Gather patterns of A ``[m][k]`` and B ``[k][n]`` of sample b's products.

        With ``grad``, the patterns address the gradient tensors of the sources instead.
        """
        layer = node.layer
        assert isinstance(layer, MatMul)
        m, k, n, heads = layer.m, layer.k, layer.n, layer.count
        src_a, src_b = node.inputs
        view_a = self._operand_view(node, src_a, grad)
        view_b = self._operand_view(node, src_b, grad)
        bt = view_b.batch
        if src_a == src_b and view_a.c == 3 * heads * k and view_a.h == m == n:
            # Q K^T from the fused QKV output.
            t_stride = bt
            c_stride = view_a.h * bt
            a = (view_a, b, k * c_stride, [(m, t_stride), (k, c_stride)])
            b_pat = (view_b, heads * k * c_stride + b, k * c_stride, [(k, c_stride), (n, t_stride)])
            return a, b_pat
        if view_a.c == heads and view_a.h == m and view_a.w == k and view_b.c == 3 * heads * n:
            # A V: scores [count][m][k] and V from the fused QKV output.
            a = (view_a, b, m * k * bt, [(m, k * bt), (k, bt)])
            c_stride = view_b.h * bt
            b_pat = (view_b, 2 * heads * n * c_stride + b, n * c_stride, [(k, bt), (n, c_stride)])
            return a, b_pat
        raise ShapeError(
            f"layer {node.name!r}: matmul operands {src_a!r} and {src_b!r} do not match an "
            "attention pattern the compiler lowers (Q K^T from one QKV tensor, or scores x V)"
        )

    def _operand_view(self, node: Node, src: str, grad: bool) -> TensorView:
        if not grad:
            return self.act(src)
        return self.grad(self._source(src), node.name)

    def _gather(
        self,
        pattern: _Pattern,
        h0: int,
        heads: int,
        buffer: Buffer,
        base: int,
        node: Node,
        phase: Phase,
        store: bool = False,
        transpose: bool = False,
        padded: bool = False,
    ) -> None:
        """One DMA transfer of heads ``h0 .. h0+heads`` of an operand (head outermost), its
        rows packed or, with ``padded``, at an odd pitch (``isa.row_pitch``)."""
        view, offset, head_stride, dims = pattern
        if transpose:
            dims = dims[::-1]
        opcode = Opcode.STORE if store else Opcode.LOAD
        addr = view.addr + 2 * (offset + h0 * head_stride)
        self._dma(
            opcode,
            buffer,
            base,
            addr,
            [(heads, head_stride), *dims, (1, 1)],
            node.name,
            phase,
            view.name,
            padded=1 if padded else None,
        )

    def _heads_per_group(self, node: Node, rows: int, cols: int, depth: int) -> int:
        layer = node.layer
        assert isinstance(layer, MatMul)
        wgt_half = self.entries(Buffer.WGT) // 2
        act_q = self.entries(Buffer.ACT) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        group = min(
            layer.count,
            wgt_half // (rows * depth),
            act_q // (depth * isa.row_pitch(cols, 1)),
            min(acc_half, act_q) // (rows * isa.row_pitch(cols, 1)),
        )
        if group < 1:
            raise ShapeError(
                f"layer {node.name!r}: a {rows}x{depth}x{cols} product does not fit the "
                f"buffers of {self.p.name}"
            )
        return group

    def _products(
        self,
        node: Node,
        phase: Phase,
        rows: int,
        cols: int,
        depth: int,
        a_pat: _Pattern,
        b_pat: _Pattern,
        out_pat: _Pattern,
        *,
        a_transpose: bool = False,
        b_trans: bool = False,
    ) -> None:
        """Per group of heads: LOAD A (WGT) and B (ACT), one dense WS GEMM per head,
        convert to FP16, STORE C."""
        layer = node.layer
        assert isinstance(layer, MatMul)
        group = self._heads_per_group(node, rows, cols, depth)
        wgt_half = self.entries(Buffer.WGT) // 2
        act_q = self.entries(Buffer.ACT) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        ilv = self.p.interleave if self.o.interleave else 1
        # The STCE reads a column of B (unless B is transposed: then K is contiguous) and of C
        # per cycle: those rows go at an odd pitch (docs/decisions.md).
        b_pad = 0 if b_trans else 1
        b_lines, b_row = (cols, depth) if b_trans else (depth, cols)
        ldb, ldc = isa.row_pitch(b_row, b_pad), isa.row_pitch(cols, 1)
        b_size, c_size = b_lines * ldb, rows * ldc  # one head's operand, its last pad included
        for h0 in range(0, layer.count, group):
            g = min(group, layer.count - h0)
            a_base = self.slot("mm_a", Buffer.WGT, 0, wgt_half)
            self._gather(a_pat, h0, g, Buffer.WGT, a_base, node, phase, transpose=a_transpose)
            b_base = self.slot("mm_b", Buffer.ACT, 0, act_q)
            self._gather(b_pat, h0, g, Buffer.ACT, b_base, node, phase, padded=bool(b_pad))
            c_base = self.slot("mm_c", Buffer.ACC, 0, acc_half)
            for h in range(g):
                a_addr = a_base + h * rows * depth
                b_addr = b_base + h * b_size
                c_addr = c_base + h * c_size
                self.b.instr(
                    Opcode.GEMM,
                    {
                        "n": 1,
                        "m": 1,
                        "dataflow": Dataflow.WS,
                        "accumulate": 0,
                        "b_trans": int(b_trans),
                        "interleave": ilv,
                        "rows": rows,
                        "cols": cols,
                        "depth": depth,
                        "a_addr": a_addr,
                        "b_addr": b_addr,
                        "c_addr": c_addr,
                        "b_pad": b_pad,
                        "c_pad": 1,
                    },
                    layer=node.name,
                    phase=phase,
                    reads=(
                        Region(Buffer.WGT, a_addr, rows * depth),
                        Region(Buffer.ACT, b_addr, (b_lines - 1) * ldb + b_row),
                    ),
                    writes=(Region(Buffer.ACC, c_addr, (rows - 1) * ldc + cols),),
                )
            o_base = self.slot("mm_o", Buffer.ACT, 2 * act_q, act_q)
            self.vec(
                VecOp.COPY,
                Buffer.ACT,
                o_base,
                Buffer.ACC,
                c_base,
                (g * rows - 1) * ldc + cols,
                node.name,
                phase,
            )
            self._gather(out_pat, h0, g, Buffer.ACT, o_base, node, phase, store=True, padded=True)

    def _output(self, node: Node, b: int, grad: bool) -> _Pattern:
        """C[i][j] of sample b's products in the heads-joined ``[count n][m][1][B]``."""
        layer = node.layer
        assert isinstance(layer, MatMul)
        view = self.gradient(node.name, 0, node.name) if grad else self.act(node.name)
        bt = view.batch
        return (view, b, layer.n * layer.m * bt, [(layer.m, bt), (layer.n, layer.m * bt)])

    def matmul_ff(self, node: Node) -> None:
        """FF: C = A B for every sample and head."""
        layer = node.layer
        assert isinstance(layer, MatMul)
        for b in range(self.batch):
            a_pat, b_pat = self._operands(node, b)
            self._products(
                node,
                Phase.FF,
                layer.m,
                layer.n,
                layer.k,
                a_pat,
                b_pat,
                self._output(node, b, grad=False),
            )

    def matmul_bp(self, node: Node) -> None:
        """BP: dA = dC B^T and dB = A^T dC, into the sources' gradients."""
        layer = node.layer
        assert isinstance(layer, MatMul)
        for b in range(self.batch):
            a_pat, b_pat = self._operands(node, b)
            da_pat, db_pat = self._operands(node, b, grad=True)
            dc_pat = self._output(node, b, grad=True)
            # dA[m][k] = dC[m][n] . (B[k][n])^T: B stored [k][n] is b_trans's [cols, depth].
            self._products(
                node, Phase.BP, layer.m, layer.k, layer.n, dc_pat, b_pat, da_pat, b_trans=True
            )
            # dB[k][n] = A^T[k][m] . dC[m][n]
            self._products(
                node, Phase.BP, layer.k, layer.n, layer.m, a_pat, dc_pat, db_pat, a_transpose=True
            )
        for src in dict.fromkeys(node.inputs):
            self._add_part(src, self.grad(self._source(src), node.name).name)
