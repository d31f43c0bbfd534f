"""Shared state and helpers of the lowering: tensors, views, buffer slots, DMA, WUVE passes.

:class:`LoweringBase` owns the program builder, allocates external tensors (activations and
gradients channel-major ``[C][H][W][B]`` with a zero border for the consumers' padding),
hands out double-buffered slots of the on-chip buffers, and emits the DMA transfers and the
element-wise WUVE passes every layer kind uses. The layer kinds build on it
(:mod:`.lower_conv`, :mod:`.lower_matmul`); :mod:`.lower` drives the step.

Ref: DESIGN.md sections 4 and 5; docs/decisions.md ("Compiler").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nmsat.hw import isa
from nmsat.hw.errors import ShapeError
from nmsat.hw.isa import Buffer, Opcode, VecOp
from nmsat.hw.params import SATParams
from nmsat.models.zoo import Conv2d, Linear

from .builder import ProgramBuilder
from .frontend import Graph, Node
from .ir import CompileOptions, Phase, Region, Tensor
from .tiling import PositionTile, position_tiles

__all__ = ["ConvShape", "LoweringBase", "Segment", "TensorView"]

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
class TensorView:
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
Segment = tuple["TensorView", int, int, int, int, int]


class LoweringBase:
    """State and helpers shared by the layer lowerings (see the module docstring)."""

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
        self._gradients: dict[tuple[str, int], TensorView] = {}
        self._reshaped: dict[str, TensorView] = {}
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

    def act(self, name: str) -> TensorView:
        """The activation tensor of node ``name`` (its output), allocated on first use."""
        name = self._source(name)
        c, h, w = self._shape_of(name)
        pad = self.act_pad.get(name, 0)
        role = "input" if name == "input" else "activation"
        t = self._alloc(
            f"act:{name}", "fp16", (c, h + 2 * pad, w + 2 * pad, self.batch), "C,H,W,B", role, pad
        )
        return TensorView(t.name, t.addr, c, h, w, pad, self.batch)

    def grad(self, name: str, tag: str = "", pad: int = 0) -> TensorView:
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
        return TensorView(t.name, t.addr, c, h, w, t.padding, self.batch)

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
        padded: int | None = None,
    ) -> None:
        """One transfer; ``dims`` = [(count, stride)] outermost first, last = (cols, 1).

        With ``padded`` = i, the entries of level ``dims[i]`` are the rows of a GEMM operand
        with an odd pitch: each starts ``isa.row_pitch(size, 1)`` after the previous one,
        ``size`` being the elements of the levels inside it (``buf_pad``, docs/isa.md); the
        levels outside it are packed multiples of that pitch. The compiler pads the rows of
        every operand the STCE reads a column of in one cycle (B and C of weight-stationary
        GEMMs, A and B of output-stationary ones), so that the column falls in distinct
        buffer banks (docs/decisions.md, "Bank-conflict-free operand rows").
        """
        levels = [(c, st, i == padded) for i, (c, st) in enumerate(dims[:-1]) if c > 1]
        cols = dims[-1][0]
        # Merge a level into the one inside it where the two are contiguous (never the padded
        # level, whose entries must stay apart).
        while (
            levels
            and levels[-1][1] == cols
            and not levels[-1][2]
            and cols * levels[-1][0] <= 0xFFFF
        ):
            cols *= levels.pop()[0]
        if len(levels) > 3 or cols > 0xFFFF or any(c > 0xFFFF for c, _, _ in levels):
            raise ShapeError(f"layer {layer!r}: a transfer of {dims} does not fit one DMA")
        levels = [(1, 0, False)] * (3 - len(levels)) + levels
        (blocks, bstride, pad2), (planes, pstride, pad1), (rows, rstride, pad0) = levels
        fields: dict[str, Any] = {
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
            "buf_pad": pad0 | pad1 << 1 | pad2 << 2,
        }
        region = Region(buffer, buf_addr, isa.dma_buffer_extent(fields))
        if opcode is Opcode.LOAD:
            self.b.instr(
                opcode, fields, layer=layer, phase=phase, writes=(region,), dram_reads=(tensor,)
            )
        else:
            self.b.instr(
                opcode, fields, layer=layer, phase=phase, reads=(region,), dram_writes=(tensor,)
            )

    def window(
        self,
        opcode: Opcode,
        view: TensorView,
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
        operand: bool = False,
    ) -> None:
        """LOAD or STORE channels c0..c0+nc of a tile at positions (y0 + step*oh,
        x0 + step*ow) of a channel-major tensor: one transfer of channels x rows x columns x
        batch. On the buffer side each channel is one row of ``tile.count`` positions,
        packed, or with ``operand`` at an odd pitch (a GEMM operand's padded rows)."""
        y = y0 + step * tile.oh0
        x = x0 + step * tile.ow0
        addr = view.addr + 2 * view.element(c0, y, x)
        dims = [
            (nc, view.hp * view.wp * view.batch),
            (tile.n_oh, step * view.wp * view.batch),
            (tile.n_ow, step * view.batch),
            (view.batch, 1),
        ]
        padded = 0 if operand else None
        self._dma(opcode, buffer, buf_addr, addr, dims, layer, phase, view.name, padded)

    def load_window(self, view: TensorView, *args: Any, **kwargs: Any) -> None:
        """:meth:`window` with LOAD."""
        self.window(Opcode.LOAD, view, *args, **kwargs)

    def store_window(self, view: TensorView, *args: Any, **kwargs: Any) -> None:
        """:meth:`window` with STORE."""
        self.window(Opcode.STORE, view, *args, **kwargs)

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
        self,
        node: Node,
        op: VecOp,
        srcs: list[TensorView],
        dst: TensorView,
        phase: Phase,
        relu: bool = False,
    ) -> None:
        """``dst = op(srcs)`` over the interior of channel-major tensors, tile by tile."""
        part = self._ew_part()
        vec_half = self.entries(Buffer.VEC) // 2
        limit = min(part, vec_half)
        for tile in position_tiles(dst.h, dst.w, self.batch, limit, node.name):
            nc_max = max(1, limit // tile.count)
            for c0 in range(0, dst.c, nc_max):
                nc = min(nc_max, dst.c - c0)
                self._elementwise_tile(node, op, srcs, dst, phase, relu, tile, c0, nc)

    def _ew_part(self) -> int:
        """Slot size of an element-wise pass: ACT holds two sources and the output, each
        with two slots (double buffering), in disjoint sixths."""
        return self.entries(Buffer.ACT) // 6

    def _elementwise_tile(
        self,
        node: Node,
        op: VecOp,
        srcs: list[TensorView],
        dst: TensorView,
        phase: Phase,
        relu: bool,
        tile: PositionTile,
        c0: int,
        nc: int,
    ) -> None:
        part = self._ew_part()
        vec_half = self.entries(Buffer.VEC) // 2
        length = nc * tile.count
        bases = []
        for index, src in enumerate(srcs):
            base = self.slot(f"ew{index}", Buffer.ACT, 2 * index * part, part)
            self.load_window(src, c0, nc, src.pad, src.pad, 1, tile, base, node.name, phase)
            bases.append(base)
        o_base = self.slot("ew_out", Buffer.ACT, 4 * part, part)
        src1 = (Buffer.ACT, bases[1]) if len(bases) > 1 else None
        if relu:
            v_base = self.slot("ew_vec", Buffer.VEC, 0, vec_half)
            self.vec(op, Buffer.VEC, v_base, Buffer.ACT, bases[0], length, node.name, phase, src1)
            self.vec(VecOp.RELU, Buffer.ACT, o_base, Buffer.VEC, v_base, length, node.name, phase)
        else:
            self.vec(op, Buffer.ACT, o_base, Buffer.ACT, bases[0], length, node.name, phase, src1)
        self.store_window(dst, c0, nc, dst.pad, dst.pad, 1, tile, o_base, node.name, phase)

    # -- backward ------------------------------------------------------------------------
    def gradient(self, name: str, pad: int, node: str) -> TensorView:
        """The full gradient of ``name``'s output with zero border ``pad``, summing parts."""
        key = (name, pad)
        if key not in self._gradients:
            self._gradients[key] = self._gradient(name, pad, node)
        return self._gradients[key]

    def _gradient(self, name: str, pad: int, node: str) -> TensorView:
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

    def _view_of(self, tensor_name: str) -> TensorView:
        t = self.b.tensors[tensor_name]
        c, hp, wp, batch = t.shape
        return TensorView(
            t.name, t.addr, c, hp - 2 * t.padding, wp - 2 * t.padding, t.padding, batch
        )

    def _add_part(self, name: str, tensor: str) -> None:
        if name == "input":
            return
        parts = self.grad_parts.setdefault(self._source(name), [])
        if tensor not in parts:
            parts.append(tensor)
