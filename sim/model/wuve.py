# Ref: docs/isa.md, sections VEC and UPDATE (loop nests, vec_cycles, update_cycles);
#      hw/numerics.py (relu, relu_grad, fp32_add, fp32_mul, sgd_update, to_fp16, to_fp32).
"""VEC and UPDATE on the WUVE: FP32 element-wise operations and the fused SGD step.

VEC reads FP16 sources (ACT, WGT) widened exactly with subnormals flushed
(:func:`nmsat.hw.numerics.to_fp32`) and FP32 sources (ACC, VEC) as stored; COPY passes the
value on untouched, the other operations are the numerics functions; FP16 destinations
receive :func:`~nmsat.hw.numerics.to_fp16` of the result, FP32 destinations its bits. All
sources are read before the destination is written, which is the loop nest's result
whenever the destination does not start inside a source range (in place is fine).

UPDATE applies :func:`nmsat.hw.numerics.sgd_update` to ``length`` elements: weights and
momentum in VEC (updated in place), the gradient in ACC, the four hyper-parameters (lr,
momentum, weight decay, SR-STE lambda) from VEC, and the N:M mask of the SR-STE term from the
FF indices in IDX (low ``log2(m)`` bits of each index, as the GEMM selector reads them).

Both are already vectorised, so fast mode computes them exactly too.

Events: ``length`` WUVE elements. VEC: ADD counts one FP32 add and SCALE one multiply per
element; buffer reads of each source and writes of the destination at their element sizes.
UPDATE: the fused pipeline computes every operation of ``sgd_update`` for every element (the
SR-STE term too, then selects by the mask), 4 FP32 adds (the final subtraction included) and
4 multiplies per element; it reads the weights, momentum and the four hyper-parameters from
VEC, the gradient from ACC and ``length * n / m`` indices (when ``n < m``), and writes the
weights and momentum back.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.typing import NDArray

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, VecOp
from nmsat.hw.params import SATParams
from nmsat.sim.events import Events

from ._instr import Mode, instruction_events
from .memory import Memory

__all__ = ["update", "vec"]

_BINARY = (VecOp.RELU_GRAD, VecOp.ADD)


def _read(mem: Memory, buffer: Buffer, addr: int, length: int, operand: str) -> NDArray[np.float32]:
    """Read a VEC operand as FP32: FP16 widened (DAZ), FP32 as stored (a copy)."""
    raw = mem.values(buffer, addr, length, operand)
    if raw.dtype == np.float16:
        return numerics.to_fp32(raw)
    return np.array(raw, dtype=np.float32, copy=True)


def _vec_events(instr: isa.Instruction, params: SATParams) -> Events:
    f = instr.fields
    length, op = f["length"], f["op"]
    traffic: Counter[str] = Counter()
    sources = [f["src0_buf"], f["src1_buf"]] if op in _BINARY else [f["src0_buf"]]
    for buffer in sources:
        traffic[f"{buffer.name.lower()}_read_bytes"] += length * isa.element_bytes(buffer)
    dst = f["dst_buf"]
    traffic[f"{dst.name.lower()}_write_bytes"] += length * isa.element_bytes(dst)
    return instruction_events(
        instr,
        params,
        wuve_elements=length,
        wuve_fp32_adds=length if op is VecOp.ADD else 0,
        wuve_fp32_muls=length if op is VecOp.SCALE else 0,
        **traffic,
    )


def vec(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute VEC (docs/isa.md, VEC): ``dst[e] = op(src0[e], src1[e])`` for ``length`` e.

    Parameters
    ----------
    instr : Instruction
        A VEC that passed :func:`nmsat.hw.isa.check_for_params`.
    params : SATParams
        The configuration (cycles).
    mem : Memory, optional
        The storage to update; None only counts the events.
    mode : {"perf", "fast", "exact"}
        Fast and exact compute the same bits.

    Returns
    -------
    Events
        WUVE elements and arithmetic, buffer traffic, one instruction, ``busy_update_cycles``.

    Raises
    ------
    MachineError
        If an operand leaves its buffer.
    """
    if mem is not None and mode != "perf":
        f = instr.fields
        length, op = f["length"], f["op"]
        x0 = _read(mem, f["src0_buf"], f["src0_addr"], length, "src0_addr")
        if op is VecOp.COPY:
            y = x0
        elif op is VecOp.RELU:
            y = numerics.relu(x0)
        elif op is VecOp.SCALE:
            imm = np.array([f["imm"]], dtype=np.uint32).view(np.float32)
            y = numerics.fp32_mul(imm, x0)
        else:
            x1 = _read(mem, f["src1_buf"], f["src1_addr"], length, "src1_addr")
            y = numerics.relu_grad(x0, x1) if op is VecOp.RELU_GRAD else numerics.fp32_add(x0, x1)
        target = mem.values(f["dst_buf"], f["dst_addr"], length, "dst_addr")
        target[:] = numerics.to_fp16(y) if target.dtype == np.float16 else y
    return _vec_events(instr, params)


def _update_events(instr: isa.Instruction, params: SATParams) -> Events:
    f = instr.fields
    length, n, m = f["length"], f["n"], f["m"]
    return instruction_events(
        instr,
        params,
        wuve_elements=length,
        wuve_fp32_adds=4 * length,
        wuve_fp32_muls=4 * length,
        vec_read_bytes=(2 * length + 4) * 4,
        vec_write_bytes=2 * length * 4,
        acc_read_bytes=length * 4,
        idx_read_bytes=length * n // m if n < m else 0,
    )


def update(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute UPDATE (docs/isa.md, UPDATE): one fused SGD-momentum step with SR-STE.

    Parameters and return value as for :func:`vec`; the arithmetic is
    :func:`nmsat.hw.numerics.sgd_update`, bit-exact in every mode.
    """
    if mem is not None and mode != "perf":
        f = instr.fields
        length, n, m = f["length"], f["n"], f["m"]
        lr, momentum, decay, srste = mem.values(Buffer.VEC, f["hp_addr"], 4, "hp_addr").tolist()
        w = np.array(mem.values(Buffer.VEC, f["w_addr"], length, "w_addr"))
        v = np.array(mem.values(Buffer.VEC, f["v_addr"], length, "v_addr"))
        g = mem.values(Buffer.ACC, f["g_addr"], length, "g_addr")
        groups = length // m
        if n < m:
            kept = mem.bits(Buffer.IDX, f["idx_addr"], groups * n, "idx_addr").reshape(groups, n)
            mask = np.zeros((groups, m), dtype=np.bool_)
            mask[np.arange(groups)[:, None], kept & np.uint8(m - 1)] = True
        else:
            mask = np.ones((groups, m), dtype=np.bool_)
        w_new, v_new = numerics.sgd_update(w, g, v, mask.reshape(-1), lr, momentum, decay, srste)
        mem.values(Buffer.VEC, f["w_addr"], length, "w_addr")[:] = w_new
        mem.values(Buffer.VEC, f["v_addr"], length, "v_addr")[:] = v_new
    return _update_events(instr, params)
