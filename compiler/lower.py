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

import dataclasses
import math
from collections.abc import Callable

from nmsat.hw.errors import ShapeError
from nmsat.hw.isa import Buffer, Dataflow, Direction, Opcode, VecOp
from nmsat.hw.params import SATParams
from nmsat.models.zoo import Conv2d, Linear

from .builder import ProgramBuilder
from .frontend import Graph, Node
from .ir import CompileOptions, HostOp, Phase, Program, Region, Tensor
from .tiling import PositionTile, k_chunks, position_tiles, round_down

__all__ = ["ConvShape", "lower"]

#: External memory is allocated from this byte address on (address 0 stays unused).
_DRAM_BASE = 1 << 12


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """A conv or linear layer as the compiler sees it (linear: 1x1 over tokens x 1)."""

    c_in: int
    c_out: int
    kh: int
    kw: int
    stride: int
    pad: int
    h_in: int
    w_in: int
    h_out: int
    w_out: int

    @property
    def k(self) -> int:
        """``kh * kw * C_in``."""
        return self.kh * self.kw * self.c_in

    @classmethod
    def of(cls, node: Node) -> ConvShape:
        """The shape of a conv node."""
        layer = node.layer
        if isinstance(layer, Conv2d):
            return cls(
                layer.c_in,
                layer.c_out,
                layer.kh,
                layer.kw,
                layer.stride,
                layer.padding,
                layer.h_in,
                layer.w_in,
                node.shape[1],
                node.shape[2],
            )
        assert isinstance(layer, Linear)
        tokens = node.shape[1]
        return cls(layer.c_in, layer.c_out, 1, 1, 1, 0, tokens, 1, tokens, 1)

    def phases(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """BP phases ``(ph, pw, kernel positions reaching it)``, in increasing (i, j)."""
        s, p = self.stride, self.pad
        out = []
        for ph in range(s):
            for pw in range(s):
                pos = [
                    (i, j)
                    for i in range(self.kh)
                    for j in range(self.kw)
                    if (ph + p - i) % s == 0 and (pw + p - j) % s == 0
                ]
                if pos and ph < self.h_in and pw < self.w_in:
                    out.append((ph, pw, pos))
        return out


@dataclasses.dataclass(frozen=True)
class _View:
    """An activation or gradient tensor seen as ``[C][H+2p][W+2p][B]``."""

    name: str
    addr: int
    c: int
    h: int
    w: int
    pad: int
    batch: int

    @property
    def hp(self) -> int:
        return self.h + 2 * self.pad

    @property
    def wp(self) -> int:
        return self.w + 2 * self.pad

    def element(self, c: int, y: int, x: int) -> int:
        """Element offset of (c, y, x, b=0); y and x count in the padded frame."""
        return ((c * self.hp + y) * self.wp + x) * self.batch


#: One DMA gather of a GEMM's B operand: (tensor view, first channel, channels, first row,
#: first column, position step).
_Segment = tuple["_View", int, int, int, int, int]


class _Lowering:
    def __init__(self, graph: Graph, params: SATParams, options: CompileOptions) -> None:
        self.g = graph
        self.p = params
        self.o = options
        self.b = ProgramBuilder(options)
        self.batch = graph.batch
        self.slots = 2 if options.schedule else 1
        self.next_addr = _DRAM_BASE
        self._slot_turn: dict[str, int] = {}
        self.act_pad = self._activation_padding()
        self.grad_parts: dict[str, list[str]] = {}
        self.layers: list[tuple[str, tuple[bool, bool]]] = []

    # -- external memory -----------------------------------------------------------------
    def _alloc(
        self, name: str, dtype: str, shape: tuple[int, ...], layout: str, role: str, pad: int = 0
    ) -> Tensor:
        known = self.b.tensors.get(name)
        if known is not None:
            return known
        t = Tensor(name, dtype, shape, layout, self.next_addr, pad, role)
        self.next_addr += -(-t.nbytes // 64) * 64  # 64-byte aligned
        return self.b.tensor(t)

    def _source(self, name: str) -> str:
        """Resolve a fused ReLU to the node that produces its output."""
        if name == "input":
            return name
        node = self.g.node(name)
        return node.alias or name

    def _shape_of(self, name: str) -> tuple[int, int, int]:
        return self.g.input_shape if name == "input" else self.g.node(name).shape

    def _activation_padding(self) -> dict[str, int]:
        pads: dict[str, int] = {}
        for node in self.g.nodes:
            if node.kind == "conv":
                src = self._source(node.inputs[0])
                pads[src] = max(pads.get(src, 0), ConvShape.of(node).pad)
        return pads

    def act(self, name: str) -> _View:
        """The activation tensor of node ``name`` (its output), allocated on first use."""
        name = self._source(name)
        c, h, w = self._shape_of(name)
        pad = self.act_pad.get(name, 0)
        role = "input" if name == "input" else "activation"
        t = self._alloc(
            f"act:{name}", "fp16", (c, h + 2 * pad, w + 2 * pad, self.batch), "C,H,W,B", role, pad
        )
        return _View(t.name, t.addr, c, h, w, pad, self.batch)

    def grad(self, name: str, tag: str = "", pad: int = 0) -> _View:
        """A gradient tensor of node ``name``'s output (``tag`` names a partial one)."""
        c, h, w = self._shape_of(name)
        suffix = f"<-{tag}" if tag else ""
        t = self._alloc(
            f"grad:{name}{suffix}",
            "fp16",
            (c, h + 2 * pad, w + 2 * pad, self.batch),
            "C,H,W,B",
            "gradient",
            pad,
        )
        return _View(t.name, t.addr, c, h, w, t.padding, self.batch)

    # -- on-chip buffers -----------------------------------------------------------------
    def slot(self, key: str, buffer: Buffer, base: int, size: int) -> int:
        """Return the start of the next slot of a double- (or single-) buffered operand."""
        turn = self._slot_turn.get(key, 0)
        self._slot_turn[key] = turn + 1
        return base + (turn % self.slots) * size

    def entries(self, buffer: Buffer) -> int:
        from nmsat.hw.isa import buffer_entries

        return buffer_entries(buffer, self.p)

    # -- DMA helpers ---------------------------------------------------------------------
    def _dma(
        self,
        opcode: Opcode,
        buffer: Buffer,
        buf_addr: int,
        dram_addr: int,
        dims: list[tuple[int, int]],
        layer: str,
        phase: Phase,
        tensor: str,
    ) -> None:
        """One transfer; ``dims`` = [(count, stride)] outermost first, last = (cols, 1)."""
        levels = [(c, st) for c, st in dims[:-1] if c > 1]
        cols = dims[-1][0]
        # Merge a level into the one inside it where the two are contiguous.
        while levels and levels[-1][1] == cols and cols * levels[-1][0] <= 0xFFFF:
            cols *= levels.pop()[0]
        if len(levels) > 3 or cols > 0xFFFF or any(c > 0xFFFF for c, _ in levels):
            raise ShapeError(f"layer {layer!r}: a transfer of {dims} does not fit one DMA")
        levels = [(1, 0)] * (3 - len(levels)) + levels
        (blocks, bstride), (planes, pstride), (rows, rstride) = levels
        count = blocks * planes * rows * cols
        region = Region(buffer, buf_addr, count)
        fields = {
            "buffer": buffer,
            "buf_addr": buf_addr,
            "dram_addr": dram_addr,
            "dram_stride": rstride if rows > 1 else 0,
            "rows": rows,
            "cols": cols,
            "planes": planes,
            "plane_stride": pstride if planes > 1 else 0,
            "blocks": blocks,
            "block_stride": bstride if blocks > 1 else 0,
        }
        if opcode is Opcode.LOAD:
            self.b.instr(
                opcode, fields, layer=layer, phase=phase, writes=(region,), dram_reads=(tensor,)
            )
        else:
            self.b.instr(
                opcode, fields, layer=layer, phase=phase, reads=(region,), dram_writes=(tensor,)
            )

    def load_window(
        self,
        view: _View,
        c0: int,
        nc: int,
        y0: int,
        x0: int,
        step: int,
        tile: PositionTile,
        buf_addr: int,
        layer: str,
        phase: Phase,
        buffer: Buffer = Buffer.ACT,
    ) -> None:
        """Load channels c0..c0+nc at positions (y0 + step*oh, x0 + step*ow) of a tile."""
        y = y0 + step * tile.oh0
        x = x0 + step * tile.ow0
        addr = view.addr + 2 * view.element(c0, y, x)
        dims = [
            (nc, view.hp * view.wp * view.batch),
            (tile.n_oh, step * view.wp * view.batch),
            (tile.n_ow, step * view.batch),
            (view.batch, 1),
        ]
        self._dma(Opcode.LOAD, buffer, buf_addr, addr, dims, layer, phase, view.name)

    def store_window(
        self,
        view: _View,
        c0: int,
        nc: int,
        y0: int,
        x0: int,
        step: int,
        tile: PositionTile,
        buf_addr: int,
        layer: str,
        phase: Phase,
    ) -> None:
        """Store channels c0..c0+nc of a tile to positions (y0 + step*oh, x0 + step*ow)."""
        y = y0 + step * tile.oh0
        x = x0 + step * tile.ow0
        addr = view.addr + 2 * view.element(c0, y, x)
        dims = [
            (nc, view.hp * view.wp * view.batch),
            (tile.n_oh, step * view.wp * view.batch),
            (tile.n_ow, step * view.batch),
            (view.batch, 1),
        ]
        self._dma(Opcode.STORE, Buffer.ACT, buf_addr, addr, dims, layer, phase, view.name)

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
        elif node.kind == "add":
            srcs = [self.act(i) for i in node.inputs]
            if len(srcs) == 1:  # a learned parameter added to the input (ViT's pos_embed)
                c, h, w = node.shape
                t = self._alloc(
                    f"param:{node.name}", "fp16", (c, h, w, self.batch), "C,H,W,B", "weight"
                )
                srcs.append(_View(t.name, t.addr, c, h, w, 0, self.batch))
            self.elementwise(
                node, VecOp.ADD, srcs, self.act(node.name), Phase.VECTOR, relu=node.relu
            )
        elif node.kind == "relu":
            self.elementwise(
                node, VecOp.RELU, [self.act(node.inputs[0])], self.act(node.name), Phase.VECTOR
            )
        elif node.kind == "host":
            self.b.host(
                HostOp(
                    type(node.layer).__name__.lower() + ("+relu" if node.relu else ""),
                    node.name,
                    tuple(self.act(i).name for i in node.inputs),
                    (self.act(node.name).name,),
                    math.prod(node.shape) * self.batch,
                )
            )
        else:
            raise ShapeError(
                f"layer {node.name!r}: {node.kind} layers are not lowered yet "
                "(conv, linear, relu, add and host layers are)"
            )

    def weights(self, node: Node, shape: ConvShape) -> dict[str, Tensor]:
        """The external tensors of a weight layer (master, momentum, FF and BP copies)."""
        n, m = node.ff_nm
        nb, mb = node.bp_nm
        kc = shape.k * n // m
        out = {
            "w": self._alloc(f"w:{node.name}", "fp32", (shape.c_out, shape.k), "Co,K", "weight"),
            "v": self._alloc(f"v:{node.name}", "fp32", (shape.c_out, shape.k), "Co,K", "momentum"),
            "ff": self._alloc(f"ff:{node.name}", "fp16", (shape.c_out, kc), "Co,Kc", "ff_copy"),
            "ff_idx": self._alloc(
                f"ff_idx:{node.name}", "u8", (shape.c_out, kc), "Co,Kc", "ff_copy"
            ),
            "hp": self._alloc("hyper", "fp32", (4,), "lr,momentum,wd,lambda", "hyper"),
        }
        cc = shape.c_out * nb // mb
        for index, (_, _, pos) in enumerate(shape.phases() if self.needs_bp(node) else []):
            out[f"bp{index}"] = self._alloc(
                f"bp{index}:{node.name}",
                "fp16",
                (shape.c_in, len(pos) * cc),
                "Ci,(pos,Coc)",
                "bp_copy",
            )
            out[f"bp{index}_idx"] = self._alloc(
                f"bp{index}_idx:{node.name}",
                "u8",
                (shape.c_in, len(pos) * cc),
                "Ci,(pos,Coc)",
                "bp_copy",
            )
        return out

    def conv_ff(self, node: Node, shape: ConvShape) -> None:
        x = self.act(node.inputs[0])
        y = self.act(node.name)
        tensors = self.weights(node, shape)

        # K = (i, j, c): segment for position (i, j) reads x at offset (i - pad, j - pad).
        def segments(k0: int, nk: int) -> list[tuple[_View, int, int, int, int, int]]:
            out = []
            k = k0
            while k < k0 + nk:
                ij, c = divmod(k, shape.c_in)
                i, j = divmod(ij, shape.kw)
                nc = min(shape.c_in - c, k0 + nk - k)
                out.append((x, c, nc, x.pad + i - shape.pad, x.pad + j - shape.pad, shape.stride))
                k += nc
            return out

        self.ws_gemm(
            node,
            Phase.FF,
            shape.c_out,
            shape.k,
            node.ff_nm,
            tensors["ff"],
            tensors["ff_idx"],
            shape.h_out,
            shape.w_out,
            segments,
            y,
            (y.pad, y.pad, 1),
            VecOp.RELU if node.relu else VecOp.COPY,
        )

    # -- the weight-stationary GEMM pass (FF and BP) ------------------------------------
    def ws_gemm(
        self,
        node: Node,
        phase: Phase,
        rows_total: int,
        k_total: int,
        nm: tuple[int, int],
        a: Tensor,
        a_idx: Tensor,
        out_h: int,
        out_w: int,
        segments: Callable[[int, int], list[_Segment]],
        out: _View,
        out_at: tuple[int, int, int],
        conv_op: VecOp,
    ) -> None:
        n, m = nm
        kc_total = k_total * n // m
        wgt_half = self.entries(Buffer.WGT) // 2
        act_q = self.entries(Buffer.ACT) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        to = min(rows_total, wgt_half // kc_total) if kc_total <= wgt_half else 0
        if to >= self.p.array_cols:
            to = round_down(to, self.p.array_cols)
        if to < 1:
            raise ShapeError(
                f"layer {node.name!r}: one row of its {phase.value} weights ({kc_total} "
                f"elements) does not fit half the WGT buffer ({wgt_half}) of {self.p.name}"
            )
        tp_limit = min(4096, acc_half // to, act_q // to, act_q // m)
        tiles = position_tiles(out_h, out_w, self.batch, tp_limit, node.name)
        ilv = self.p.interleave if self.o.interleave else 1
        for r0 in range(0, rows_total, to):
            nr = min(to, rows_total - r0)
            a_base = self.slot("wgt", Buffer.WGT, 0, wgt_half)
            chunks = None
            for tile in tiles:
                chunks = k_chunks(k_total, m, act_q // tile.count, node.name)
                if tile is tiles[0]:
                    # Weights of this row block stay resident: one block per K chunk.
                    off = a_base
                    for k0, nk in chunks:
                        kc0, nkc = k0 * n // m, nk * n // m
                        src = a.addr + 2 * (r0 * kc_total + kc0)
                        self._dma(
                            Opcode.LOAD,
                            Buffer.WGT,
                            off,
                            src,
                            [(nr, kc_total), (nkc, 1)],
                            node.name,
                            phase,
                            a.name,
                        )
                        if n < m:
                            self._dma(
                                Opcode.LOAD,
                                Buffer.IDX,
                                off,
                                a_idx.addr + r0 * kc_total + kc0,
                                [(nr, kc_total), (nkc, 1)],
                                node.name,
                                phase,
                                a_idx.name,
                            )
                        off += nr * nkc
                c_base = self.slot("acc", Buffer.ACC, 0, acc_half)
                off = a_base
                for index, (k0, nk) in enumerate(chunks):
                    nkc = nk * n // m
                    b_base = self.slot("act_in", Buffer.ACT, 0, act_q)
                    row = 0
                    for view, c0, nc, y0, x0, step in segments(k0, nk):
                        self.load_window(
                            view,
                            c0,
                            nc,
                            y0,
                            x0,
                            step,
                            tile,
                            b_base + row * tile.count,
                            node.name,
                            phase,
                        )
                        row += nc
                    reads = [
                        Region(Buffer.WGT, off, nr * nkc),
                        Region(Buffer.ACT, b_base, nk * tile.count),
                    ]
                    if n < m:
                        reads.append(Region(Buffer.IDX, off, nr * nkc))
                    c_region = Region(Buffer.ACC, c_base, nr * tile.count)
                    if index:
                        reads.append(c_region)
                    self.b.instr(
                        Opcode.GEMM,
                        {
                            "n": n,
                            "m": m,
                            "dataflow": Dataflow.WS,
                            "accumulate": int(index > 0),
                            "b_trans": 0,
                            "interleave": ilv,
                            "rows": nr,
                            "cols": tile.count,
                            "depth": nk,
                            "a_addr": off,
                            "b_addr": b_base,
                            "c_addr": c_base,
                        },
                        layer=node.name,
                        phase=phase,
                        reads=tuple(reads),
                        writes=(c_region,),
                    )
                    off += nr * nkc
                o_base = self.slot("act_out", Buffer.ACT, 2 * act_q, act_q)
                self.vec(
                    conv_op,
                    Buffer.ACT,
                    o_base,
                    Buffer.ACC,
                    c_base,
                    nr * tile.count,
                    node.name,
                    phase,
                )
                y0, x0, step = out_at
                self.store_window(out, r0, nr, y0, x0, step, tile, o_base, node.name, phase)

    def vec(
        self,
        op: VecOp,
        dst_buf: Buffer,
        dst: int,
        src_buf: Buffer,
        src: int,
        length: int,
        layer: str,
        phase: Phase,
        src1: tuple[Buffer, int] | None = None,
        imm: int = 0,
    ) -> None:
        """One WUVE element-wise instruction (split at the 24-bit length limit)."""
        step = (1 << 24) - 1
        for e in range(0, length, step):
            ln = min(step, length - e)
            reads = [Region(src_buf, src + e, ln)]
            fields = {
                "op": op,
                "length": ln,
                "dst_buf": dst_buf,
                "dst_addr": dst + e,
                "src0_buf": src_buf,
                "src0_addr": src + e,
                "imm": imm,
            }
            if src1 is not None:
                reads.append(Region(src1[0], src1[1] + e, ln))
                fields |= {"src1_buf": src1[0], "src1_addr": src1[1] + e}
            self.b.instr(
                Opcode.VEC,
                fields,
                layer=layer,
                phase=phase,
                reads=tuple(reads),
                writes=(Region(dst_buf, dst + e, ln),),
            )

    # -- element-wise passes on the WUVE -------------------------------------------------
    def elementwise(
        self, node: Node, op: VecOp, srcs: list[_View], dst: _View, phase: Phase, relu: bool = False
    ) -> None:
        """``dst = op(srcs)`` over the interior of channel-major tensors, tile by tile."""
        act_q = self.entries(Buffer.ACT) // 4
        vec_half = self.entries(Buffer.VEC) // 2
        limit = min(act_q, vec_half)
        for tile in position_tiles(dst.h, dst.w, self.batch, limit, node.name):
            nc_max = max(1, limit // tile.count)
            for c0 in range(0, dst.c, nc_max):
                nc = min(nc_max, dst.c - c0)
                self._elementwise_tile(node, op, srcs, dst, phase, relu, tile, c0, nc)

    def _elementwise_tile(
        self,
        node: Node,
        op: VecOp,
        srcs: list[_View],
        dst: _View,
        phase: Phase,
        relu: bool,
        tile: PositionTile,
        c0: int,
        nc: int,
    ) -> None:
        act_q = self.entries(Buffer.ACT) // 4
        vec_half = self.entries(Buffer.VEC) // 2
        length = nc * tile.count
        bases = []
        for index, src in enumerate(srcs):
            base = self.slot(f"ew{index}", Buffer.ACT, index * act_q, act_q)
            self.load_window(src, c0, nc, src.pad, src.pad, 1, tile, base, node.name, phase)
            bases.append(base)
        o_base = self.slot("ew_out", Buffer.ACT, 2 * act_q, act_q)
        src1 = (Buffer.ACT, bases[1]) if len(bases) > 1 else None
        if relu:
            v_base = self.slot("ew_vec", Buffer.VEC, 0, vec_half)
            self.vec(op, Buffer.VEC, v_base, Buffer.ACT, bases[0], length, node.name, phase, src1)
            self.vec(VecOp.RELU, Buffer.ACT, o_base, Buffer.VEC, v_base, length, node.name, phase)
        else:
            self.vec(op, Buffer.ACT, o_base, Buffer.ACT, bases[0], length, node.name, phase, src1)
        self.store_window(dst, c0, nc, dst.pad, dst.pad, 1, tile, o_base, node.name, phase)

    # -- backward ------------------------------------------------------------------------
    def gradient(self, name: str, pad: int, node: str) -> _View:
        """The full gradient of ``name``'s output with zero border ``pad``, summing parts."""
        parts = self.grad_parts.get(name, [])
        if not parts:
            raise ShapeError(f"layer {name!r}: its output reaches no loss (no gradient)")
        views = [self._view_of(t) for t in parts]
        if len(views) == 1 and views[0].pad == pad:
            return views[0]
        total = self.grad(name, "sum", pad)
        acc = views[0]
        for index, part in enumerate(views[1:]):
            dst = total if index == len(views) - 2 else self.grad(name, f"sum{index}", pad)
            self.elementwise(self.g.node(node), VecOp.ADD, [acc, part], dst, Phase.VECTOR)
            acc = dst
        if len(views) == 1:
            self.elementwise(self.g.node(node), VecOp.COPY, [acc], total, Phase.VECTOR)
        return total

    def _view_of(self, tensor_name: str) -> _View:
        t = self.b.tensors[tensor_name]
        c, hp, wp, batch = t.shape
        return _View(t.name, t.addr, c, hp - 2 * t.padding, wp - 2 * t.padding, t.padding, batch)

    def _add_part(self, name: str, tensor: str) -> None:
        if name == "input":
            return
        self.grad_parts.setdefault(self._source(name), []).append(tensor)

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
        elif node.kind == "add":
            for i in node.inputs:
                self._add_part(i, dy.name)
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

    def needs_bp(self, node: Node) -> bool:
        """Whether the layer's BP pass runs (not for a layer reading the model's input)."""
        return self._source(node.inputs[0]) != "input"

    def dy_padding(self, shape: ConvShape) -> int:
        """Zero border of dY that every BP phase window stays inside."""
        need = 0
        for ph, _, pos in shape.phases():
            n_h = -(-(shape.h_in - ph) // shape.stride)
            for i, _ in pos:
                off = (ph + shape.pad - i) // shape.stride
                need = max(need, -off, off + n_h - shape.h_out)
        for _, pw, pos in shape.phases():
            n_w = -(-(shape.w_in - pw) // shape.stride)
            for _, j in pos:
                off = (pw + shape.pad - j) // shape.stride
                need = max(need, -off, off + n_w - shape.w_out)
        return need

    def conv_bp(self, node: Node, shape: ConvShape, dy: _View) -> None:
        tensors = self.weights(node, shape)
        src = node.inputs[0]
        if self._source(src) != "input":
            if not self.o.pregen:
                self.make_copies(node, Direction.BP)
            producer_pad = 0
            sname = self._source(src)
            if self.g.node(sname).kind == "conv" and not self.g.node(sname).relu:
                producer_pad = self.dy_padding(ConvShape.of(self.g.node(sname)))
            dx = self.grad(sname, node.name, producer_pad)
            for index, (ph, pw, pos) in enumerate(shape.phases()):

                def segments(k0: int, nk: int, pos=pos, ph=ph, pw=pw):  # type: ignore[no-untyped-def]
                    out = []
                    k = k0
                    while k < k0 + nk:
                        q, co = divmod(k, shape.c_out)
                        i, j = pos[q]
                        nc = min(shape.c_out - co, k0 + nk - k)
                        out.append(
                            (
                                dy,
                                co,
                                nc,
                                dy.pad + (ph + shape.pad - i) // shape.stride,
                                dy.pad + (pw + shape.pad - j) // shape.stride,
                                1,
                            )
                        )
                        k += nc
                    return out

                n_h = -(-(shape.h_in - ph) // shape.stride)
                n_w = -(-(shape.w_in - pw) // shape.stride)
                self.ws_gemm(
                    node,
                    Phase.BP,
                    shape.c_in,
                    len(pos) * shape.c_out,
                    node.bp_nm,
                    tensors[f"bp{index}"],
                    tensors[f"bp{index}_idx"],
                    n_h,
                    n_w,
                    segments,
                    dx,
                    (dx.pad + ph, dx.pad + pw, shape.stride),
                    VecOp.COPY,
                )
            self._add_part(src, dx.name)
        self.conv_wu(node, shape, dy, tensors)

    # -- weight gradient, update and pre-generation -------------------------------------
    def wu_tiles(self, node: Node, shape: ConvShape) -> tuple[int, int]:
        """(rows of C_out, columns of K) of a weight tile of WU and UPDATE.

        The tile's weights, momentum and gradient must fit the VEC and ACC slots and its
        compressed copies the PRUNE slots of WGT (a sixteenth each); WU streams at least one
        position of the whole batch, so ``rows * batch`` must fit a WGT quarter and
        ``cols * batch`` an ACT half. Rows are whole C_out groups of the BP pattern (PRUNE BP
        groups along C_out) and columns whole K groups of the FF pattern.
        """
        m_rows, m_cols = node.bp_nm[1], node.ff_nm[1]
        limit = min(
            self.entries(Buffer.VEC) // 4 - 4,
            self.entries(Buffer.ACC) // 2,
            self.entries(Buffer.WGT) // 16,
        )
        cap = min(shape.c_out, 256, self.entries(Buffer.WGT) // 4 // self.batch, limit // m_cols)
        to = shape.c_out if shape.c_out <= cap else round_down(cap, m_rows)
        tk = 0
        if to >= 1:
            tk = round_down(min(shape.k, limit // to, self.entries(Buffer.ACT) // 2 // self.batch),
                            m_cols)  # fmt: skip
        if to < 1 or tk < m_cols:
            raise ShapeError(
                f"layer {node.name!r}: no weight tile fits the buffers of {self.p.name} at "
                f"batch {self.batch}; use a smaller batch or larger buffers"
            )
        return to, tk

    def conv_wu(self, node: Node, shape: ConvShape, dy: _View, tensors: dict[str, Tensor]) -> None:
        x = self.act(node.inputs[0])
        to, tk = self.wu_tiles(node, shape)
        wgt_q = self.entries(Buffer.WGT) // 4
        act_half = self.entries(Buffer.ACT) // 2
        vec_q = self.entries(Buffer.VEC) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        hp_addr = self.entries(Buffer.VEC) - 4
        self._dma(
            Opcode.LOAD,
            Buffer.VEC,
            hp_addr,
            tensors["hp"].addr,
            [(4, 1)],
            node.name,
            Phase.UPDATE,
            "hyper",
        )
        n, m = node.ff_nm
        kc_total = shape.k * n // m
        ilv = self.p.interleave if self.o.interleave else 1
        for co0 in range(0, shape.c_out, to):
            nco = min(to, shape.c_out - co0)
            for k0 in range(0, shape.k, tk):
                nk = min(tk, shape.k - k0)
                tp_limit = min(wgt_q // nco, act_half // nk)
                tiles = position_tiles(shape.h_out, shape.w_out, self.batch, tp_limit, node.name)
                c_base = self.slot("wu_acc", Buffer.ACC, 0, acc_half)
                c_region = Region(Buffer.ACC, c_base, nco * nk)
                for index, tile in enumerate(tiles):
                    a_base = self.slot("wu_a", Buffer.WGT, 0, wgt_q)
                    self.load_window(
                        dy,
                        co0,
                        nco,
                        dy.pad,
                        dy.pad,
                        1,
                        tile,
                        a_base,
                        node.name,
                        Phase.WU,
                        Buffer.WGT,
                    )
                    b_base = self.slot("wu_b", Buffer.ACT, 0, act_half)
                    row = 0
                    k = k0
                    while k < k0 + nk:
                        ij, c = divmod(k, shape.c_in)
                        i, j = divmod(ij, shape.kw)
                        nc = min(shape.c_in - c, k0 + nk - k)
                        self.load_window(
                            x,
                            c,
                            nc,
                            x.pad + i - shape.pad,
                            x.pad + j - shape.pad,
                            shape.stride,
                            tile,
                            b_base + row * tile.count,
                            node.name,
                            Phase.WU,
                        )
                        row += nc
                        k += nc
                    reads = [
                        Region(Buffer.WGT, a_base, nco * tile.count),
                        Region(Buffer.ACT, b_base, nk * tile.count),
                    ]
                    if index:
                        reads.append(c_region)
                    self.b.instr(
                        Opcode.GEMM,
                        {
                            "n": 1,
                            "m": 1,
                            "dataflow": Dataflow.OS,
                            "accumulate": int(index > 0),
                            "b_trans": 1,
                            "interleave": ilv,
                            "rows": nco,
                            "cols": nk,
                            "depth": tile.count,
                            "a_addr": a_base,
                            "b_addr": b_base,
                            "c_addr": c_base,
                        },
                        layer=node.name,
                        phase=Phase.WU,
                        reads=tuple(reads),
                        writes=(c_region,),
                    )
                self.update_tile(
                    node, shape, tensors, co0, nco, k0, nk, c_base, vec_q, hp_addr, kc_total
                )

    def update_tile(
        self,
        node: Node,
        shape: ConvShape,
        tensors: dict[str, Tensor],
        co0: int,
        nco: int,
        k0: int,
        nk: int,
        g_base: int,
        vec_q: int,
        hp_addr: int,
        kc_total: int,
    ) -> None:
        n, m = node.ff_nm
        w_base = self.slot("upd_w", Buffer.VEC, 0, vec_q)
        v_base = self.slot("upd_v", Buffer.VEC, 2 * vec_q, vec_q)
        length = nco * nk
        w_src = tensors["w"].addr + 4 * (co0 * shape.k + k0)
        v_src = tensors["v"].addr + 4 * (co0 * shape.k + k0)
        dims = [(nco, shape.k), (nk, 1)]
        self._dma(
            Opcode.LOAD, Buffer.VEC, w_base, w_src, dims, node.name, Phase.UPDATE, tensors["w"].name
        )
        self._dma(
            Opcode.LOAD, Buffer.VEC, v_base, v_src, dims, node.name, Phase.UPDATE, tensors["v"].name
        )
        idx_base = 2 * (self.entries(Buffer.WGT) // 4)
        reads = [
            Region(Buffer.ACC, g_base, length),
            Region(Buffer.VEC, hp_addr, 4),
            Region(Buffer.VEC, w_base, length),
            Region(Buffer.VEC, v_base, length),
        ]
        if n < m:
            self._dma(
                Opcode.LOAD,
                Buffer.IDX,
                idx_base,
                tensors["ff_idx"].addr + co0 * kc_total + k0 * n // m,
                [(nco, kc_total), (nk * n // m, 1)],
                node.name,
                Phase.UPDATE,
                tensors["ff_idx"].name,
            )
            reads.append(Region(Buffer.IDX, idx_base, length * n // m))
        self.b.instr(
            Opcode.UPDATE,
            {
                "length": length,
                "n": n,
                "m": m,
                "w_addr": w_base,
                "v_addr": v_base,
                "g_addr": g_base,
                "idx_addr": idx_base,
                "hp_addr": hp_addr,
            },
            layer=node.name,
            phase=Phase.UPDATE,
            reads=tuple(reads),
            writes=(Region(Buffer.VEC, w_base, length), Region(Buffer.VEC, v_base, length)),
        )
        if self.o.pregen:
            self.prune_tile(node, shape, tensors, Direction.FF, co0, nco, k0, nk, w_base)
            if self.needs_bp(node):
                self.prune_tile(node, shape, tensors, Direction.BP, co0, nco, k0, nk, w_base)
        self._dma(
            Opcode.STORE,
            Buffer.VEC,
            w_base,
            w_src,
            dims,
            node.name,
            Phase.UPDATE,
            tensors["w"].name,
        )
        self._dma(
            Opcode.STORE,
            Buffer.VEC,
            v_base,
            v_src,
            dims,
            node.name,
            Phase.UPDATE,
            tensors["v"].name,
        )

    def make_copies(self, node: Node, direction: Direction) -> None:
        """Load master weights tile by tile and prune them into one direction's copy."""
        shape = ConvShape.of(node)
        tensors = self.weights(node, shape)
        to, tk = self.wu_tiles(node, shape)
        vec_q = self.entries(Buffer.VEC) // 4
        for co0 in range(0, shape.c_out, to):
            nco = min(to, shape.c_out - co0)
            for k0 in range(0, shape.k, tk):
                nk = min(tk, shape.k - k0)
                w_base = self.slot("upd_w", Buffer.VEC, 0, vec_q)
                w_src = tensors["w"].addr + 4 * (co0 * shape.k + k0)
                self._dma(
                    Opcode.LOAD,
                    Buffer.VEC,
                    w_base,
                    w_src,
                    [(nco, shape.k), (nk, 1)],
                    node.name,
                    Phase.PRUNE,
                    tensors["w"].name,
                )
                self.prune_tile(node, shape, tensors, direction, co0, nco, k0, nk, w_base)

    def prune_tile(
        self,
        node: Node,
        shape: ConvShape,
        tensors: dict[str, Tensor],
        direction: Direction,
        co0: int,
        nco: int,
        k0: int,
        nk: int,
        w_base: int,
    ) -> None:
        """PRUNE one master-weight tile in VEC and store the copy to external memory."""
        wgt_q = self.entries(Buffer.WGT) // 4
        # The last quarter of WGT/IDX: two FF slots, then two BP slots, of wgt_q / 4 each.
        if direction is Direction.FF:
            n, m = node.ff_nm
            dst = self.slot("prune_ff", Buffer.WGT, 3 * wgt_q, wgt_q // 4)
        else:
            n, m = node.bp_nm
            dst = self.slot("prune_bp", Buffer.WGT, 3 * wgt_q + wgt_q // 2, wgt_q // 4)
        kept = nco * nk * n // m
        writes = [Region(Buffer.WGT, dst, kept)]
        if n < m:
            writes.append(Region(Buffer.IDX, dst, kept))
        self.b.instr(
            Opcode.PRUNE,
            {
                "direction": direction,
                "n": n,
                "m": m,
                "rows": nco,
                "cols": nk,
                "src_addr": w_base,
                "dst_addr": dst,
            },
            layer=node.name,
            phase=Phase.PRUNE,
            reads=(Region(Buffer.VEC, w_base, nco * nk),),
            writes=tuple(writes),
        )
        if direction is Direction.FF:
            kc_total = shape.k * n // m
            for buf, t, size in (
                (Buffer.WGT, tensors["ff"], 2),
                (Buffer.IDX, tensors["ff_idx"], 1),
            )[: 2 if n < m else 1]:
                self._dma(
                    Opcode.STORE,
                    buf,
                    dst,
                    t.addr + size * (co0 * kc_total + k0 * n // m),
                    [(nco, kc_total), (nk * n // m, 1)],
                    node.name,
                    Phase.PRUNE,
                    t.name,
                )
            return
        # BP copy: rows k = (i, j, c) of the tile, each nco*n/m long, go to the tensor of the
        # phase that kernel position (i, j) reaches, at row c, position slot q.
        cc_total = shape.c_out * n // m
        phase_of = {}
        for index, (_, _, pos) in enumerate(shape.phases()):
            for q, position in enumerate(pos):
                phase_of[position] = (index, q, len(pos))
        k = k0
        while k < k0 + nk:
            ij, c = divmod(k, shape.c_in)
            i, j = divmod(ij, shape.kw)
            nc = min(shape.c_in - c, k0 + nk - k)
            if (i, j) in phase_of:
                index, q, npos = phase_of[(i, j)]
                row_len = npos * cc_total
                for buf, key, size in (
                    (Buffer.WGT, f"bp{index}", 2),
                    (Buffer.IDX, f"bp{index}_idx", 1),
                )[: 2 if n < m else 1]:
                    t = tensors[key]
                    addr = t.addr + size * (c * row_len + q * cc_total + co0 * n // m)
                    self._dma(
                        Opcode.STORE,
                        buf,
                        dst + (k - k0) * nco * n // m,
                        addr,
                        [(nc, row_len), (nco * n // m, 1)],
                        node.name,
                        Phase.PRUNE,
                        t.name,
                    )
            k += nc


def lower(graph: Graph, params: SATParams, options: CompileOptions) -> Program:
    """Lower one training step of ``graph`` for ``params`` (see the module docstring)."""
    return _Lowering(graph, params, options).run()
