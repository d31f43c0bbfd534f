"""Lowering of conv and linear layers: FF and BP GEMMs, WU, UPDATE and the SORE's copies.

See :mod:`.lower` for the step as a whole. A linear is a 1x1 convolution over ``tokens x 1``
positions. FF assembles the im2col block of a tile of positions in the ACT buffer (one DMA
transfer per kernel position and channel range, K order ``(kh, kw, C_in)``) and reduces over
all of K in one weight-stationary GEMM; BP runs the transposed convolution per phase of the
stride; WU reduces over positions in output-stationary GEMMs; UPDATE and pre-generation work
on weight tiles in the VEC buffer.

Ref: Fang et al., TCAD 2023 (BDWP, pre-generation); V. Dumoulin and F. Visin, "A guide to
     convolution arithmetic for deep learning", 2016 (transposed convolution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nmsat.hw import isa
from nmsat.hw.errors import ShapeError
from nmsat.hw.isa import Buffer, Dataflow, Direction, Opcode, VecOp

from .frontend import Node
from .ir import HostOp, Phase, Region, Tensor
from .lower_base import ConvShape, LoweringBase, Segment, TensorView
from .tiling import k_chunks, position_tiles, round_down

__all__ = ["ConvLowering"]


class ConvLowering(LoweringBase):
    """The conv and linear layer passes."""

    def input_view(self, node: Node, shape: ConvShape, view: TensorView) -> TensorView | None:
        """The layer's input (or its gradient) as ``[C_in][H_in][W_in][B]``, if it can be.

        A linear reads its input flattened: ``[C][H][W][B]`` is ``[C*H*W][1][1][B]`` in
        memory (K order (c, h, w), as a flatten of NCHW), and ``[F][T][1][B]`` is
        ``tokens = T`` rows of F features. None when the sizes differ or a zero border
        breaks the flattening: then the host reshapes (:meth:`layer_input`).
        """
        if (view.c, view.h, view.w) == (shape.c_in, shape.h_in, shape.w_in):
            return view
        if view.pad or view.c * view.h * view.w != shape.c_in * shape.h_in * shape.w_in:
            return None
        return dataclasses.replace(view, c=shape.c_in, h=shape.h_in, w=shape.w_in)

    def layer_input(self, node: Node, shape: ConvShape) -> TensorView:
        """The input activations; a host reshape first when the layout does not allow a view
        (BERT's classifier reads the first token of each sequence)."""
        source = self.act(node.inputs[0])
        view = self.input_view(node, shape, source)
        if view is not None:
            return view
        if node.name not in self._reshaped:
            t = self._alloc(
                f"act:{node.name}/in",
                "fp16",
                (shape.c_in, shape.h_in, shape.w_in, self.batch),
                "C,H,W,B",
                "activation",
            )
            self._reshaped[node.name] = TensorView(
                t.name, t.addr, shape.c_in, shape.h_in, shape.w_in, 0, self.batch
            )
            self.b.host(HostOp("reshape", node.name, (source.name,), (t.name,), t.elements))
        return self._reshaped[node.name]

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
        x = self.layer_input(node, shape)
        y = self.act(node.name)
        tensors = self.weights(node, shape)

        # K = (i, j, c): segment for position (i, j) reads x at offset (i - pad, j - pad).
        def segments(k0: int, nk: int) -> list[tuple[TensorView, int, int, int, int, int]]:
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
        segments: Callable[[int, int], list[Segment]],
        out: TensorView,
        out_at: tuple[int, int, int],
        conv_op: VecOp,
    ) -> None:
        n, m = nm
        kc_total = k_total * n // m
        wgt_half = self.entries(Buffer.WGT) // 2
        act_q = self.entries(Buffer.ACT) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        to, tp_limit, stream = self.ws_sizes(node, phase, rows_total, k_total, nm)
        tiles = position_tiles(out_h, out_w, self.batch, tp_limit, node.name)
        # B's rows (K) and C's rows (outputs) at an odd pitch: the STCE reads a column of
        # each per cycle (docs/isa.md, "Bank conflicts"; docs/decisions.md).
        pad = True
        ilv = self.p.interleave if self.o.interleave else 1
        for r0 in range(0, rows_total, to):
            nr = min(to, rows_total - r0)
            # One K chunking for every tile (the largest tile's): resident weights are laid
            # out by it. Streamed weights (too many for a block of C * interleave rows to
            # stay resident) also bound a chunk's A by a WGT slot.
            limit = act_q // max(isa.row_pitch(t.count, pad) for t in tiles)
            if stream:
                limit = min(limit, wgt_half // nr * m // n)
            chunks = k_chunks(k_total, m, limit, node.name, self.fold_k(nm))
            a_base = 0 if stream else self.slot("wgt", Buffer.WGT, 0, wgt_half)

            def load_a(base: int, k0: int, nk: int, r0: int = r0, nr: int = nr) -> None:
                kc0, nkc = k0 * n // m, nk * n // m
                dims = [(nr, kc_total), (nkc, 1)]
                src = a.addr + 2 * (r0 * kc_total + kc0)
                self._dma(Opcode.LOAD, Buffer.WGT, base, src, dims, node.name, phase, a.name)
                if n < m:
                    idx_src = a_idx.addr + r0 * kc_total + kc0
                    self._dma(Opcode.LOAD, Buffer.IDX, base, idx_src, dims, node.name, phase,
                              a_idx.name)  # fmt: skip

            for tile in tiles:
                if tile is tiles[0] and not stream:
                    # Weights of this row block stay resident: one block per K chunk.
                    off = a_base
                    for k0, nk in chunks:
                        load_a(off, k0, nk)
                        off += nr * (nk * n // m)
                c_base = self.slot("acc", Buffer.ACC, 0, acc_half)
                pitch = isa.row_pitch(tile.count, pad)
                c_span = (nr - 1) * pitch + tile.count
                off = a_base
                for index, (k0, nk) in enumerate(chunks):
                    nkc = nk * n // m
                    if stream:
                        off = self.slot("wgt", Buffer.WGT, 0, wgt_half)
                        load_a(off, k0, nk)
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
                            b_base + row * pitch,
                            node.name,
                            phase,
                            operand=pad,
                        )
                        row += nc
                    reads = [
                        Region(Buffer.WGT, off, nr * nkc),
                        Region(Buffer.ACT, b_base, (nk - 1) * pitch + tile.count),
                    ]
                    if n < m:
                        reads.append(Region(Buffer.IDX, off, nr * nkc))
                    c_region = Region(Buffer.ACC, c_base, c_span)
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
                            "b_pad": int(pad),
                            "c_pad": int(pad),
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
                    c_span,
                    node.name,
                    phase,
                )
                y0, x0, step = out_at
                self.store_window(
                    out, r0, nr, y0, x0, step, tile, o_base, node.name, phase, operand=pad
                )

    def ws_sizes(
        self, node: Node, phase: Phase, rows_total: int, k_total: int, nm: tuple[int, int]
    ) -> tuple[int, int, bool]:
        """Rows of A per block, the most positions per tile, and whether A is streamed.

        Normally all K chunks of a block of A rows stay resident in half the WGT buffer and
        are reused by every tile of positions. When fewer than ``C * interleave`` rows would
        fit (a long K, as VGG's fc6), the array could not hide the adder latency (one output
        block, ``step`` bound by ``R L + C``): then blocks of ``C * interleave`` rows stream
        their K chunks through WGT instead. A tile's outputs fit half the ACC buffer and a
        quarter of ACT (their FP16 copy), its B chunks another quarter. Raises ShapeError
        when not even one row or one batch of positions fits.
        """
        n, m = nm
        kc_total = k_total * n // m
        wgt_half = self.entries(Buffer.WGT) // 2
        act_q = self.entries(Buffer.ACT) // 4
        acc_half = self.entries(Buffer.ACC) // 2
        cols = self.p.array_cols
        wanted = min(rows_total, cols * self.p.interleave)
        to = min(rows_total, wgt_half // kc_total) if kc_total <= wgt_half else 0
        stream = to < wanted
        if stream:
            to = wanted
            if wgt_half // to * m // n < m:
                raise ShapeError(
                    f"layer {node.name!r}: a block of {to} rows of its {phase.value} weights "
                    f"does not fit half the WGT buffer ({wgt_half}) of {self.p.name}"
                )
        if to >= cols:
            to = round_down(to, cols)
        packed_limit = min(4096, acc_half // to, act_q // to, act_q // m)
        if self.batch > packed_limit:
            raise ShapeError(
                f"layer {node.name!r}: batch {self.batch} exceeds the {packed_limit} positions "
                f"a tile can hold in {self.p.name}; use a smaller batch or larger buffers"
            )
        # B's and C's rows go at an odd pitch (isa.row_pitch), one element more each, so that
        # the GEMMs are free of bank conflicts (a rule of the ISA): fewer rows per block where
        # a whole batch of positions would not fit with it, but not below one array width.
        if self.batch >= min(acc_half, act_q) // to:
            fitting = min(acc_half, act_q) // (self.batch + 1)
            if fitting >= min(cols, rows_total):
                to = round_down(fitting, cols) if fitting >= cols else fitting
        tp_limit = min(4096, acc_half // to - 1, act_q // to - 1, act_q // m - 1)
        if self.batch > tp_limit:
            raise ShapeError(
                f"layer {node.name!r}: batch {self.batch} exceeds the {tp_limit} positions a "
                f"tile can hold in {self.p.name} with its rows at an odd pitch; use a smaller "
                "batch or larger buffers"
            )
        return to, tp_limit, stream

    def fold_k(self, nm: tuple[int, int]) -> int:
        """Reduction elements of one full fold of the array: ``R m / n`` (whole M-groups).

        K chunks are multiples of it, so every GEMM's compressed depth fills whole folds.
        """
        n, m = nm
        per_fold = self.p.array_rows * m // n if n < m else self.p.array_rows
        return -(-per_fold // m) * m

    def check_fits(self, node: Node) -> None:
        """Raise ShapeError now if a pass of this layer cannot be tiled for the buffers."""
        shape = ConvShape.of(node)
        self.ws_sizes(node, Phase.FF, shape.c_out, shape.k, node.ff_nm)
        if self.needs_bp(node):
            for _, _, pos in shape.phases():
                self.ws_sizes(node, Phase.BP, shape.c_in, len(pos) * shape.c_out, node.bp_nm)
        self.wu_tiles(node, shape)

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

    def conv_bp(self, node: Node, shape: ConvShape, dy: TensorView) -> None:
        tensors = self.weights(node, shape)
        src = node.inputs[0]
        if self._source(src) != "input":
            if not self.o.pregen:
                self.make_copies(node, Direction.BP)
            producer_pad = 0
            sname = self._source(src)
            if self.g.node(sname).kind == "conv" and not self.g.node(sname).relu:
                producer_pad = self.dy_padding(ConvShape.of(self.g.node(sname)))
            target = self.grad(sname, node.name, producer_pad)
            reshaped = node.name in self._reshaped
            if reshaped:
                t = self._alloc(
                    f"grad:{node.name}/in",
                    "fp16",
                    (shape.c_in, shape.h_in, shape.w_in, self.batch),
                    "C,H,W,B",
                    "gradient",
                )
                dx = TensorView(t.name, t.addr, shape.c_in, shape.h_in, shape.w_in, 0, self.batch)
            else:
                view = self.input_view(node, shape, target)
                if view is None:
                    # A linear cannot write a flattened gradient into a bordered tensor: it
                    # writes a border-free one; gradient() copies it into a bordered one.
                    target = self.grad(sname, f"{node.name}/flat", 0)
                    view = self.input_view(node, shape, target)
                assert view is not None
                dx = view
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
            if reshaped:
                self.b.host(
                    HostOp(
                        "reshape_bwd",
                        node.name,
                        (dx.name,),
                        (target.name,),
                        dx.c * dx.h * dx.w * self.batch,
                    )
                )
            self._add_part(src, target.name)
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
        # A's and B's rows go at an odd pitch (bank conflicts, docs/isa.md): a whole batch of
        # positions takes up to batch + 1 elements per row.
        per_row = self.batch + 1
        cap = min(shape.c_out, 256, self.entries(Buffer.WGT) // 4 // per_row, limit // m_cols)
        to = shape.c_out if shape.c_out <= cap else round_down(cap, m_rows)
        tk = 0
        if to >= 1:
            tk = round_down(
                min(shape.k, limit // to, self.entries(Buffer.ACT) // 2 // per_row), m_cols
            )
        if to < 1 or tk < m_cols:
            raise ShapeError(
                f"layer {node.name!r}: no weight tile fits the buffers of {self.p.name} at "
                f"batch {self.batch}; use a smaller batch or larger buffers"
            )
        return to, tk

    def conv_wu(
        self, node: Node, shape: ConvShape, dy: TensorView, tensors: dict[str, Tensor]
    ) -> None:
        x = self.layer_input(node, shape)
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
                # A's rows (dY channels) and B's rows (X^T: K) at an odd pitch where they fit
                # (up to one element more per row): the OS array reads a column of A and a
                # row of B^T per cycle.
                # wu_tiles leaves room for the pad.
                pad = True
                tp_limit = min(wgt_q // nco - 1, act_half // nk - 1)
                tiles = position_tiles(shape.h_out, shape.w_out, self.batch, tp_limit, node.name)
                c_base = self.slot("wu_acc", Buffer.ACC, 0, acc_half)
                c_region = Region(Buffer.ACC, c_base, nco * nk)
                for index, tile in enumerate(tiles):
                    pitch = isa.row_pitch(tile.count, pad)
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
                        operand=pad,
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
                            b_base + row * pitch,
                            node.name,
                            Phase.WU,
                            operand=pad,
                        )
                        row += nc
                        k += nc
                    reads = [
                        Region(Buffer.WGT, a_base, (nco - 1) * pitch + tile.count),
                        Region(Buffer.ACT, b_base, (nk - 1) * pitch + tile.count),
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
                            "a_pad": int(pad),
                            "b_pad": int(pad),
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
