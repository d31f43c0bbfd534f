# Ref: docs/isa.md, section PRUNE (loop nest, prune_cycles, sore_pipeline_cycles);
#      models/nm.py (top-N by sign-cleared bit patterns, ties to the lower index);
#      K. E. Batcher, "Sorting networks and their applications", AFIPS 1968 (bitonic network).
"""PRUNE on the SORE: FP32 master weights in VEC to an N:M-compressed FP16 copy in WGT/IDX.

FF groups ``m`` consecutive elements along a row; BP groups them down a column and writes
the result transposed (``[cols, rows * n / m]``), so one ``[rows, cols]`` weight matrix gives
both compressed copies of BDWP. Each group keeps its ``n`` largest magnitudes, ranked by the
FP32 bit pattern with the sign cleared, ties to the lower index, listed in increasing index
order: :func:`nmsat.models.nm.compress`, which defines that order. Kept values are converted
with :func:`nmsat.hw.numerics.to_fp16`; their indices go to IDX at the same address. Every
mode computes this exactly: it is selection and one conversion, already vectorised.

Events: ``rows * cols / m`` groups; a bitonic network over ``m`` inputs has
``log2(m) * (log2(m) + 1) / 2`` stages of ``m / 2`` compare-exchanges each (Batcher 1968), so
a group costs ``m / 2 * log2(m) * (log2(m) + 1) / 2`` compares (0 for ``m = 1``). The SORE
reads ``rows * cols`` FP32 words of VEC and writes ``rows * cols * n / m`` FP16 values and
as many indices (one byte each).
"""

from __future__ import annotations

import numpy as np

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, Direction
from nmsat.hw.params import SATParams
from nmsat.models import nm
from nmsat.sim.events import Events

from ._instr import Mode, instruction_events
from .memory import Memory

__all__ = ["bitonic_compares", "prune"]


def bitonic_compares(m: int) -> int:
    """Return the compare-exchange operations of a bitonic sorting network over ``m`` inputs.

    ``m`` is a power of two; the network has ``log2(m) * (log2(m) + 1) / 2`` stages of
    ``m / 2`` comparators.
    """
    k = m.bit_length() - 1
    return m // 2 * (k * (k + 1) // 2)


def _prune_events(instr: isa.Instruction, params: SATParams) -> Events:
    f = instr.fields
    size = f["rows"] * f["cols"]
    groups = size // f["m"]
    kept = groups * f["n"]
    return instruction_events(
        instr,
        params,
        sore_groups=groups,
        sore_compares=groups * bitonic_compares(f["m"]),
        vec_read_bytes=size * 4,
        wgt_write_bytes=kept * 2,
        idx_write_bytes=kept,
    )


def prune(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute PRUNE (docs/isa.md, PRUNE): N:M-compress FP32 weights into WGT and IDX.

    Parameters
    ----------
    instr : Instruction
        A PRUNE that passed :func:`nmsat.hw.isa.check_for_params`.
    params : SATParams
        The configuration (cycles).
    mem : Memory, optional
        The storage to update; None only counts the events.
    mode : {"perf", "fast", "exact"}
        Fast and exact compute the same bits.

    Returns
    -------
    Events
        SORE groups and compares, buffer traffic, one instruction, ``busy_prune_cycles``.

    Raises
    ------
    MachineError
        If an operand leaves its buffer.
    """
    if mem is not None and mode != "perf":
        f = instr.fields
        rows, cols, n, m = f["rows"], f["cols"], f["n"], f["m"]
        src = mem.values(Buffer.VEC, f["src_addr"], rows * cols, "src_addr").reshape(rows, cols)
        grouped = src if f["direction"] is Direction.FF else src.T
        values, indices = nm.compress(np.asarray(grouped, dtype=np.float32), n, m, axis=1)
        kept = values.size
        wgt = mem.values(Buffer.WGT, f["dst_addr"], kept, "dst_addr")
        wgt[:] = numerics.to_fp16(values).reshape(-1)
        mem.write_idx(f["dst_addr"], indices, "dst_addr")
    return _prune_events(instr, params)
