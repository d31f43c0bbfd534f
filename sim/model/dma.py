# Ref: docs/isa.md, sections LOAD and STORE (4-D strided loop nest, dma_cycles);
#      docs/decisions.md (LOAD and STORE are 4-D strided transfers; one memory port).
"""LOAD and STORE: 4-D strided transfers between the DRAM image and an on-chip buffer.

Both move ``blocks x planes x rows x cols`` elements; the buffer side holds them in that loop
order at the pitches of ``isa.dma_buffer_pitches`` (packed, or rounded up to odd by
``buf_pad``), the DRAM side is strided (element strides ``block_stride``, ``plane_stride``,
``dram_stride``, scaled by ``element_bytes(buffer)``). The model moves the whole block in one
numpy assignment between a strided view of the image and the buffer range, bits unchanged
(the ISA's rules forbid overlapping DRAM rows, so the order of the loop nest cannot matter).
Writes to the IDX buffer keep the low ``index_bits`` bits of each byte (:mod:`.memory`).

Events: ``E * elements`` bytes of DRAM traffic and the same bytes of buffer traffic, where
``E`` is ``element_bytes(buffer)`` (1 for IDX: the model counts one byte per index).
"""

from __future__ import annotations

from nmsat.hw import isa
from nmsat.hw.isa import Buffer
from nmsat.hw.params import SATParams
from nmsat.sim.events import Events

from ._instr import Mode, instruction_events
from .memory import Memory

__all__ = ["dram_end", "load", "store"]


def dram_end(instr: isa.Instruction) -> int:
    """Return one past the last DRAM byte a LOAD or STORE addresses (its loop nest's extent)."""
    f = instr.fields
    span = (
        (f["blocks"] - 1) * f["block_stride"]
        + (f["planes"] - 1) * f["plane_stride"]
        + (f["rows"] - 1) * f["dram_stride"]
        + f["cols"]
    )
    end: int = f["dram_addr"] + span * isa.element_bytes(f["buffer"])
    return end


def _transfer(instr: isa.Instruction, mem: Memory, to_buffer: bool) -> None:
    """Copy the 4-D block between DRAM and the buffer range (loop nest of docs/isa.md)."""
    f = instr.fields
    buffer: Buffer = f["buffer"]
    size = isa.element_bytes(buffer)
    counts = (f["blocks"], f["planes"], f["rows"])
    strides = (f["block_stride"] * size, f["plane_stride"] * size, f["dram_stride"] * size)
    dram = mem.dram_block(f["dram_addr"], counts, strides, f["cols"] * size)
    row, plane, block = isa.dma_buffer_pitches(instr)
    cols = f["cols"]
    side = mem.strided(buffer, f["buf_addr"], (*counts, cols), (block, plane, row), "buf_addr")
    if to_buffer:
        bits = side.view("u1").reshape(*counts, cols, size)
        if buffer is Buffer.IDX:
            side[...] = dram.reshape(side.shape) & mem.idx_mask
        else:
            bits[...] = dram.reshape(bits.shape)
    else:
        dram[...] = side.view("u1").reshape(dram.shape)


def _dma_events(instr: isa.Instruction, params: SATParams, direction: str) -> Events:
    buffer: Buffer = instr["buffer"]
    moved = isa.dma_elements(instr) * isa.element_bytes(buffer)
    side = "write" if direction == "read" else "read"
    return instruction_events(
        instr,
        params,
        **{f"dram_{direction}_bytes": moved, f"{buffer.name.lower()}_{side}_bytes": moved},
    )


def load(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute LOAD (docs/isa.md, LOAD): copy a 4-D DRAM block into a buffer range.

    Parameters
    ----------
    instr : Instruction
        A LOAD that passed :func:`nmsat.hw.isa.check_for_params`.
    params : SATParams
        The configuration (cycle count of the events).
    mem : Memory, optional
        The storage to update; None (perf mode) only counts the events.
    mode : {"perf", "fast", "exact"}
        Data movement is the same in every mode.

    Returns
    -------
    Events
        DRAM read bytes, buffer write bytes, one instruction, ``busy_load_cycles``.

    Raises
    ------
    MachineError
        If the block leaves the DRAM image or the buffer.
    """
    if mem is not None and mode != "perf":
        _transfer(instr, mem, to_buffer=True)
    return _dma_events(instr, params, "read")


def store(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute STORE (docs/isa.md, STORE): copy a buffer range into a 4-D DRAM block.

    Parameters and return value as for :func:`load`; the events are DRAM write bytes, buffer
    read bytes, one instruction and ``busy_store_cycles``.
    """
    if mem is not None and mode != "perf":
        _transfer(instr, mem, to_buffer=False)
    return _dma_events(instr, params, "write")
