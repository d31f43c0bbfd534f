"""Cycle cost of each instruction, as closed-form formulas of its fields and SATParams.

These functions ARE the timing contract: the Python model (``nmsat.sim``) calls them, the RTL
(``nmsat.hw``) must take exactly as many cycles, and ``docs/isa.md`` prints them next to each
opcode (:mod:`nmsat.hw.isa` links every opcode to its formula). A cost counts the cycles from
the cycle an instruction starts on its unit to the cycle its unit can start the next one of
the same queue; how queues overlap through dependency tokens is described in docs/isa.md.

Symbols: R = ``array_rows``, C = ``array_cols``, L = ``adder_latency``,
Lm = ``multiplier_latency``, B = ``dram_bytes_per_cycle``, D = ``dram_latency_cycles``.

Ref: H. T. Kung, "Why systolic architectures?", IEEE Computer 1982 (fill and drain);
     SCALE-Sim (Samajdar et al., ISPASS 2020) for the fold structure of WS and OS dataflows;
     Fang et al., TCAD 2023 (interleave mapping hides the FP32 adder latency).

Part of the contract: imports nothing from nmsat but :mod:`nmsat.hw.params`.
"""

from __future__ import annotations

import math

from .params import SATParams

__all__ = [
    "dma_cycles",
    "gemm_os_cycles",
    "gemm_ws_cycles",
    "prune_cycles",
    "prune_groups_per_cycle",
    "sore_pipeline_cycles",
    "update_cycles",
    "update_pipeline_cycles",
    "vec_cycles",
    "vec_pipeline_cycles",
]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def dma_cycles(lines: int, cols: int, element_bytes: int, p: SATParams) -> int:
    """Cycles of a DMA transfer: ``D + lines * ceil(cols * element_bytes / B)``.

    ``lines = blocks * planes * rows`` contiguous runs of ``cols`` elements each. The request
    pipeline issues run after run; only the first run's latency is exposed. Each run starts
    on a new beat: the memory moves at most B bytes per cycle and never packs two runs into
    one beat, so short runs waste bandwidth as they do on a real bus.
    """
    return p.dram_latency_cycles + lines * _cdiv(cols * element_bytes, p.dram_bytes_per_cycle)


def gemm_ws_cycles(rows: int, cols: int, depth: int, n: int, m: int, interleave: int,
                   p: SATParams) -> int:  # fmt: skip
    """Cycles of a weight-stationary GEMM.

    The compressed reduction ``Kc = depth * n / m`` maps onto the R array rows, the ``rows``
    outputs of A onto the C array columns, and the ``cols`` columns of B stream through in
    time: ``Fk = ceil(Kc / R)`` by ``Fi = ceil(rows / C)`` folds. A fold streams ``cols``
    vectors while the next fold's R weight rows shift in behind them, so it lasts
    ``step = max(cols, R)``. Partial sums enter the top of a column preloaded from the
    accumulator buffer, so when ``Fk > 1`` fold k+1 of an output block needs fold k's sums,
    which are written ``R * L + C`` cycles after they were read (R chained adders and the
    column skew; all columns read a vector in one cycle and write it in one cycle) and can
    be read back one cycle after that; interleave mapping runs the k-folds of
    ``min(interleave, Fi)`` output blocks round robin, so
    ``step = max(cols, R, ceil((R * L + C + 1) / min(interleave, Fi)))``. Total:
    ``R + Fi * Fk * step + R * L + C`` (first weight preload, folds, last drain: C - 1 cycles
    of column skew and the product stage). Each PE holds two weights (double buffering) and
    the weight network addresses PEs individually, so the next fold's weights load during
    the current fold.
    """
    R, C, L = p.array_rows, p.array_cols, p.adder_latency
    kc = depth * n // m
    fk = _cdiv(kc, R)
    fi = _cdiv(rows, C)
    step = max(cols, R)
    if fk > 1:
        step = max(step, _cdiv(R * L + C + 1, min(interleave, fi)))
    return R + fi * fk * step + R * L + C


def gemm_os_cycles(rows: int, cols: int, depth: int, n: int, m: int, interleave: int,
                   p: SATParams, accumulate: bool = False) -> int:  # fmt: skip
    """Cycles of an output-stationary GEMM.

    Each PE owns ``I = min(interleave, ceil(cols / C))`` output elements (interleave mapping:
    one accumulator register each) and accumulates them round robin, one MAC per cycle; an
    accumulator can take its next product only L cycles after the last, so a PE needs
    ``max(I, L)`` cycles per reduction step. Folds: ``Fi = ceil(rows / R)`` by
    ``Fj = ceil(cols / (C * I))`` with ``Kc = depth * n / m`` reduction steps each. A fold's
    results drain through the column's shadow registers, one value per cycle, while the next
    fold computes, so a fold lasts ``max(Kc * max(I, L), R * I + R + I - 1)``. With
    ``accumulate`` the first fold's starting sums shift in first (``R * I``). The last drain,
    the operand skew and the buffer write add ``R * I + R + C + I``.
    """
    R, C, L = p.array_rows, p.array_cols, p.adder_latency
    kc = depth * n // m
    ilv = min(interleave, _cdiv(cols, C))
    fi = _cdiv(rows, R)
    fj = _cdiv(cols, C * ilv)
    fold = max(kc * max(ilv, L), R * ilv + R + ilv - 1)
    preload = R * ilv if accumulate else 0
    return preload + fi * fj * fold + R * ilv + R + C + ilv


def sore_pipeline_cycles(m: int) -> int:
    """Latency of the SORE pipeline for groups of ``m``: read, bitonic network, write.

    A bitonic network over M inputs has ``log2(M) * (log2(M) + 1) / 2`` compare stages
    (Batcher 1968); one register stage each, plus one to read FP32 weights and one to write
    the FP16 values and indices.
    """
    k = int(math.log2(m))
    return 2 + k * (k + 1) // 2


def prune_groups_per_cycle(m: int, p: SATParams) -> int:
    """Groups of ``m`` that enter the SORE per cycle: ``G = max(1, min(sore_lanes, banks // m))``.

    The VEC buffer delivers ``buffer_banks`` FP32 weights per cycle (at least one whole group).
    """
    return max(1, min(p.sore_lanes, p.buffer_banks // m))


def prune_cycles(rows: int, cols: int, m: int, p: SATParams, transposed: bool = False) -> int:
    """Cycles of PRUNE: ``phases + sore_pipeline_cycles(m)``.

    Each SORE lane takes one M-group per cycle (the paper's lanes take M cycles per group) and
    ``G`` groups enter per cycle (:func:`prune_groups_per_cycle`). FF (groups along a row):
    ``phases = ceil(rows * cols / m / G)``. BP (groups down a column, ``transposed``): the
    source is read in tiles of ``W = G * m`` rows by ``W`` columns through a double-buffered
    corner turn; a tile's rows enter one per cycle while the previous tile leaves one column
    (G groups) per cycle, so with ``nb = ceil(rows / W)`` row blocks, ``ns = ceil(cols / W)``
    column strips and the last block and strip ``rl`` rows and ``cl`` columns,
    ``phases = rows + cols`` when ``nb == 1`` and ``(nb * ns - 1) * W + max(rl, cl) + cl``
    otherwise (about FF's phases plus W for a large matrix).
    """
    g = prune_groups_per_cycle(m, p)
    if not transposed:
        return _cdiv(rows * cols // m, g) + sore_pipeline_cycles(m)
    width = g * m
    row_blocks = _cdiv(rows, width)
    strips = _cdiv(cols, width)
    if row_blocks == 1:
        phases = rows + cols
    else:
        last_rows = rows - (row_blocks - 1) * width
        last_cols = cols - (strips - 1) * width
        phases = (row_blocks * strips - 1) * width + max(last_rows, last_cols) + last_cols
    return phases + sore_pipeline_cycles(m)


def vec_pipeline_cycles(op_name: str, p: SATParams) -> int:
    """Latency of one WUVE element-wise op: 2 (read, write) plus its arithmetic.

    COPY, RELU and RELU_GRAD select or convert only; ADD adds L; SCALE adds Lm.
    """
    arith = {"ADD": p.adder_latency, "SCALE": p.multiplier_latency}.get(op_name, 0)
    return 2 + arith


def vec_cycles(op_name: str, length: int, p: SATParams) -> int:
    """Cycles of VEC: ``ceil(length / wuve_lanes) + vec_pipeline_cycles(op)``."""
    return _cdiv(length, p.wuve_lanes) + vec_pipeline_cycles(op_name, p)


def update_pipeline_cycles(p: SATParams) -> int:
    """Latency of the fused SGD update: ``3 + 2 * Lm + 4 * L``.

    One cycle reads the four hyper-parameters, then read and write (2) around the critical
    path wd*w (Lm), +g (L), +SR-STE term (L), +momentum*v (L), lr*v (Lm), w - (L).
    """
    return 3 + 2 * p.multiplier_latency + 4 * p.adder_latency


def update_cycles(length: int, p: SATParams) -> int:
    """Cycles of UPDATE: ``ceil(length / wuve_lanes) + update_pipeline_cycles()``."""
    return _cdiv(length, p.wuve_lanes) + update_pipeline_cycles(p)
