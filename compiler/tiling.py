"""Tiling: how a GEMM layer's loops are cut to fit the array, the buffers and the ISA fields.

All sizes are in elements. The rules (docs/decisions.md, "Compiler"):

- The reduction axis K of a GEMM is cut into chunks of whole N:M groups (multiples of M), so
  a group never straddles two GEMM instructions and the compressed copy of a chunk is a
  contiguous block.
- Output positions are tiled by whole rows where they fit (``n_oh`` rows of ``n_ow`` columns
  of the whole batch): a tile's activations are then one 3-D or 4-D DMA transfer per kernel
  position and channel range.
- With offline scheduling, every streamed operand gets two slots (double buffering);
  without it, one.

Ref: SCALE-Sim (Samajdar et al., ISPASS 2020) and Gemmini (Genc et al., DAC 2021) for the fold
     and tile structure of systolic GEMMs; DESIGN.md section 5.
"""

from __future__ import annotations

import dataclasses

from nmsat.hw.errors import ShapeError

__all__ = ["FIELD_MAX", "PositionTile", "k_chunks", "position_tiles", "round_down"]

#: Largest value of the 16-bit rows/cols/depth/count fields of the ISA.
FIELD_MAX = 0xFFFF


def round_down(value: int, multiple: int) -> int:
    """Return the largest multiple of ``multiple`` not above ``value`` (0 if none)."""
    return value // multiple * multiple


@dataclasses.dataclass(frozen=True)
class PositionTile:
    """A tile of output positions: rows ``oh0 .. oh0+n_oh`` by columns ``ow0 .. ow0+n_ow``.

    Positions are ordered (oh, ow, b), batch fastest, as activations are stored.
    """

    oh0: int
    n_oh: int
    ow0: int
    n_ow: int
    batch: int

    @property
    def count(self) -> int:
        """Positions in the tile (GEMM columns)."""
        return self.n_oh * self.n_ow * self.batch


def position_tiles(
    out_h: int, out_w: int, batch: int, limit: int, layer: str
) -> list[PositionTile]:
    """Cut ``out_h x out_w x batch`` positions into tiles of at most ``limit`` positions."""
    limit = min(limit, FIELD_MAX)
    if batch > limit:
        raise ShapeError(
            f"layer {layer!r}: batch {batch} exceeds the {limit} positions a tile can hold "
            "in this configuration; use a smaller batch or larger buffers"
        )
    n_ow = min(out_w, limit // batch)
    n_oh = min(out_h, max(1, limit // (n_ow * batch))) if n_ow == out_w else 1
    tiles = []
    for oh0 in range(0, out_h, n_oh):
        for ow0 in range(0, out_w, n_ow):
            tiles.append(
                PositionTile(oh0, min(n_oh, out_h - oh0), ow0, min(n_ow, out_w - ow0), batch)
            )
    return tiles


def k_chunks(k_total: int, m: int, limit: int, layer: str, align: int = 0
             ) -> list[tuple[int, int]]:  # fmt: skip
    """Cut ``range(k_total)`` into (start, length) chunks of whole M-groups, each <= limit.

    Chunks are multiples of ``align`` (a multiple of ``m``: the reduction of one full fold of
    the array) where the limit allows, else of ``m``; all of K is one chunk when it fits.
    """
    limit = min(limit, FIELD_MAX)
    if k_total <= limit:
        return [(0, k_total)]
    size = round_down(limit, align) if align and limit >= align else round_down(limit, m)
    if size < m:
        raise ShapeError(
            f"layer {layer!r}: a reduction chunk of {limit} elements cannot hold "
            f"one group of M={m}; the buffers of this configuration are too small"
        )
    return [(k0, min(size, k_total - k0)) for k0 in range(0, k_total, size)]
