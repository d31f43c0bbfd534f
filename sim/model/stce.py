# Ref: docs/isa.md, section GEMM (loop nest, gemm_ws_cycles, gemm_os_cycles);
#      docs/numerics.md (accumulation in increasing k onto the preloaded accumulator);
#      hw/isa_timing.py (fold structure of the WS and OS dataflows);
#      SCALE-Sim (Samajdar et al., ISPASS 2020): SRAM reads counted per fold.
"""GEMM on the STCE: ``C = A . B (+ C)`` with A dense or N:M-compressed.

Operands (docs/isa.md): A in WGT, row-major ``[rows, Kc]`` with ``Kc = depth * n / m``, its
indices at the same IDX address when ``n < m``; B in ACT, ``[depth, cols]`` (or ``[cols,
depth]`` with ``b_trans``); C in ACC, ``[rows, cols]``; each operand's rows
``isa.gemm_pitches`` apart (packed, or an odd pitch with ``a_pad``/``b_pad``/``c_pad``).

Exact mode calls :func:`nmsat.hw.numerics.gemm` (dense) or :func:`~nmsat.hw.numerics.gemm_nm`
(N:M) with the preloaded ACC when ``accumulate`` is 1: products added in increasing k onto the
accumulator, one rounded FP32 add each. Fast mode computes a numpy float32 matrix product
(summation order and subnormal handling are numpy's; results agree within rounding).

Indices. The N:M selector of a group of ``m`` is an ``m``-to-1 multiplexer: it uses the low
``log2(m)`` bits of each index, so the model reads ``IDX & (m - 1)``. Indices that PRUNE
wrote are strictly increasing within a group; for any other contents the loop nest of
docs/isa.md still defines the result (products added in increasing compressed position q),
which the model then computes directly with the same numerics functions.

Buffer traffic (events), with ``R x C`` PEs and ``E`` bytes per element:

WS
    ``Fk = ceil(Kc / R)`` reduction folds by ``Fi = ceil(rows / C)`` output-row folds. Each
    weight (and index) is read once. B is read once per output-row fold, whole M-groups: a
    fold that holds any compressed weight of a group needs all ``m`` activations of it, so a
    group split between two reduction folds is read twice. ACC is read for every reduction
    fold after the first, and for the first too when ``accumulate`` is 1; it is written once
    per reduction fold.
OS
    ``I = min(interleave, ceil(cols / C))``, ``Fi = ceil(rows / R)`` by
    ``Fj = ceil(cols / (C * I))`` folds. A (and its indices) is read once per column fold, B
    once per row fold; ACC is read once when ``accumulate`` is 1 and written once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, Dataflow
from nmsat.hw.params import SATParams
from nmsat.sim.events import Events

from ._instr import Mode, instruction_events
from .memory import Memory

__all__ = ["gemm"]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _split_groups(kc: int, n: int, folds: int, fold: int) -> int:
    """Return how many of the ``folds - 1`` fold boundaries (every ``fold`` compressed
    positions) fall inside a group of ``n``."""
    boundaries = folds - 1
    if boundaries <= 0:
        return 0
    period = n // math.gcd(fold, n)  # boundary f * fold is a group start iff period | f
    return boundaries - boundaries // period


def _gemm_events(instr: isa.Instruction, params: SATParams) -> Events:
    f = instr.fields
    rows, cols, depth, n, m = f["rows"], f["cols"], f["depth"], f["n"], f["m"]
    sparse = n < m
    kc = depth * n // m
    out_bytes = rows * cols * 4
    R, C = params.array_rows, params.array_cols
    if f["dataflow"] is Dataflow.WS:
        fk, fi = _cdiv(kc, R), _cdiv(rows, C)
        weight_reads = 1
        b_rows = depth + (m * _split_groups(kc, n, fk, R) if sparse else 0)
        b_reads = fi * b_rows * cols * 2
        acc_read = (fk - 1 + f["accumulate"]) * out_bytes
        acc_write = fk * out_bytes
    else:
        ilv = min(f["interleave"], _cdiv(cols, C))
        fi, fj = _cdiv(rows, R), _cdiv(cols, C * ilv)
        weight_reads = fj
        b_reads = fi * depth * cols * 2
        acc_read = f["accumulate"] * out_bytes
        acc_write = out_bytes
    macs = rows * cols * kc
    return instruction_events(
        instr,
        params,
        macs_dense=0 if sparse else macs,
        macs_sparse=macs if sparse else 0,
        macs_dense_equivalent=rows * cols * depth,
        wgt_read_bytes=weight_reads * rows * kc * 2,
        idx_read_bytes=weight_reads * rows * kc if sparse else 0,
        act_read_bytes=b_reads,
        acc_read_bytes=acc_read,
        acc_write_bytes=acc_write,
    )


def _operands(
    instr: isa.Instruction, mem: Memory
) -> tuple[NDArray[np.float16], NDArray[np.uint8] | None, NDArray[np.float16], Any]:
    """Return A, its indices (None when dense), B as ``[depth, cols]`` and C (or None)."""
    f = instr.fields
    rows, cols, depth, n, m = f["rows"], f["cols"], f["depth"], f["n"], f["m"]
    kc = depth * n // m
    lda, ldb, ldc = isa.gemm_pitches(instr)
    a = mem.row_values(Buffer.WGT, f["a_addr"], (rows, kc), lda, "a_addr")
    idx = None
    if n < m:
        raw = mem.rows(Buffer.IDX, f["a_addr"], (rows, kc), lda, "a_addr")
        idx = raw & np.uint8(m - 1)
    if f["b_trans"]:
        b = mem.row_values(Buffer.ACT, f["b_addr"], (cols, depth), ldb, "b_addr").T
    else:
        b = mem.row_values(Buffer.ACT, f["b_addr"], (depth, cols), ldb, "b_addr")
    c = None
    if f["accumulate"]:
        c = mem.row_values(Buffer.ACC, f["c_addr"], (rows, cols), ldc, "c_addr")
    return a, idx, b, c


def _dense_columns(idx: NDArray[np.uint8], n: int, m: int) -> NDArray[np.intp]:
    """Return the dense k of every compressed position: ``(q // n) * m + idx``."""
    q = np.arange(idx.shape[1], dtype=np.intp)
    return np.asarray((q // n * m)[None, :] + idx.astype(np.intp), dtype=np.intp)


def _increasing(idx: NDArray[np.uint8], n: int) -> bool:
    if n == 1:
        return True
    groups = idx.reshape(idx.shape[0], -1, n).astype(np.int16)
    return bool(np.all(np.diff(groups, axis=2) > 0))


def _exact(a: Any, idx: Any, n: int, m: int, b: Any, c: Any) -> numerics.FP32Array:
    if idx is None:
        return numerics.gemm(a, b, c)
    if _increasing(idx, n):
        return numerics.gemm_nm(a, idx, n, m, b, c)
    # Indices not written by PRUNE: the loop nest of docs/isa.md, position by position.
    k = _dense_columns(idx, n, m)
    shape = (k.shape[0], b.shape[1])
    acc = numerics.to_fp32(c) if c is not None else np.zeros(shape, dtype=np.float32)
    for q in range(k.shape[1]):
        acc = numerics.fp32_add(acc, numerics.fp16_mul_fp32(a[:, q, None], b[k[:, q], :]))
    return acc


def _fast(a: Any, idx: Any, n: int, m: int, b: Any, c: Any) -> NDArray[np.float32]:
    with np.errstate(all="ignore"):
        a32 = a.astype(np.float32)
        if idx is not None:
            dense = np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
            rows = np.arange(a.shape[0], dtype=np.intp)[:, None]
            np.add.at(dense, (rows, _dense_columns(idx, n, m)), a32)
            a32 = dense
        out: NDArray[np.float32] = np.matmul(a32, b.astype(np.float32))
        if c is not None:
            out += c
    return out


def gemm(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute GEMM (docs/isa.md, GEMM): ``ACC[C] = WGT[A] . ACT[B] (+ ACC[C])``.

    Parameters
    ----------
    instr : Instruction
        A GEMM that passed :func:`nmsat.hw.isa.check_for_params`.
    params : SATParams
        The configuration (array size for the fold counts, cycles).
    mem : Memory, optional
        The storage to update; None only counts the events.
    mode : {"perf", "fast", "exact"}
        ``exact``: bit-exact with :mod:`nmsat.hw.numerics`; ``fast``: float32 matmul;
        ``perf``: no data.

    Returns
    -------
    Events
        MACs (dense or sparse, and dense-equivalent), buffer traffic by the rules of the
        module docstring, one instruction, ``busy_compute_cycles``.

    Raises
    ------
    MachineError
        If an operand leaves its buffer.
    """
    if mem is not None and mode != "perf":
        f = instr.fields
        a, idx, b, c = _operands(instr, mem)
        compute = _exact if mode == "exact" else _fast
        out = compute(a, idx, f["n"], f["m"], b, c)
        ldc = isa.gemm_pitches(instr)[2]
        target = mem.row_values(Buffer.ACC, f["c_addr"], (f["rows"], f["cols"]), ldc, "c_addr")
        target[...] = out
    return _gemm_events(instr, params)
