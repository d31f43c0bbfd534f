# Ref: docs/isa.md (buffers: addresses count elements of the buffer's type; DRAM addresses
#      count bytes; LOAD/STORE loop nest); hw/params.py (buffer sizes, index_bits).
"""The storage of the model: five on-chip buffers and an external-memory (DRAM) image.

Every buffer holds raw bit patterns, so moving data never changes a bit (LOAD and STORE copy
bits unchanged, docs/isa.md): ACT and WGT are ``uint16`` (FP16 patterns), IDX is ``uint8``,
ACC and VEC are ``uint32`` (FP32 patterns). Arithmetic reads them through typed views
(:meth:`Memory.values`). Every access is bounds-checked and raises :class:`MachineError`
naming the operand, its first element and the buffer's size.

The index buffer holds ``params.index_bits`` bits per entry in hardware (one index per WGT
entry, hw/params.py); the model stores one byte per entry and keeps only the low
``index_bits`` bits of what is written to it (:attr:`Memory.idx_mask`), as the hardware
does. Reads see exactly the stored value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.hw.errors import NmsatError
from nmsat.hw.isa import Buffer, buffer_entries
from nmsat.hw.params import SATParams

__all__ = ["BIT_DTYPES", "VALUE_DTYPES", "MachineError", "Memory"]

#: Storage type of each buffer: unsigned integers of the element's width (raw bit patterns).
BIT_DTYPES: dict[Buffer, type[np.unsignedinteger[Any]]] = {
    Buffer.ACT: np.uint16,
    Buffer.WGT: np.uint16,
    Buffer.IDX: np.uint8,
    Buffer.ACC: np.uint32,
    Buffer.VEC: np.uint32,
}

#: Value type of each buffer, as arithmetic reads it.
VALUE_DTYPES: dict[Buffer, type[np.generic]] = {
    Buffer.ACT: np.float16,
    Buffer.WGT: np.float16,
    Buffer.IDX: np.uint8,
    Buffer.ACC: np.float32,
    Buffer.VEC: np.float32,
}


class MachineError(NmsatError, ValueError):
    """A use of the model it cannot honour: an access outside a buffer or the DRAM image, a
    data access in perf mode, a malformed program or argument."""


class Memory:
    """The five on-chip buffers and the DRAM image of one :class:`~nmsat.sim.model.Machine`.

    Parameters
    ----------
    params : SATParams
        Sizes the buffers (:func:`nmsat.hw.isa.buffer_entries`) and the index width.
    dram_bytes : int
        Size of the DRAM image in bytes; it starts zeroed (the pages are allocated lazily by
        the operating system, so a large image costs nothing until written).

    Members
    -------
    dram : numpy.ndarray of uint8
        The external memory image.
    buffers : dict of Buffer to numpy.ndarray
        Raw bit patterns of each buffer (:data:`BIT_DTYPES`).
    idx_mask : int
        ``2**index_bits - 1``: the bits an index-buffer entry keeps.
    """

    def __init__(self, params: SATParams, dram_bytes: int) -> None:
        self.dram: NDArray[np.uint8] = np.zeros(dram_bytes, dtype=np.uint8)
        self.buffers: dict[Buffer, NDArray[Any]] = {
            buf: np.zeros(buffer_entries(buf, params), dtype=BIT_DTYPES[buf]) for buf in Buffer
        }
        self.idx_mask = (1 << params.index_bits) - 1

    def bits(self, buffer: Buffer, addr: int, count: int, operand: str) -> NDArray[Any]:
        """Return a writable view of ``count`` raw elements of ``buffer`` from ``addr``.

        Raises
        ------
        MachineError
            If the range leaves the buffer; the message names ``operand``.
        """
        store = self.buffers[buffer]
        if addr < 0 or count < 0 or addr + count > store.size:
            raise MachineError(
                f"{operand}={addr} + {count} elements overruns the {buffer.name} buffer of "
                f"{store.size} elements"
            )
        return store[addr : addr + count]

    def values(self, buffer: Buffer, addr: int, count: int, operand: str) -> NDArray[Any]:
        """Return a writable typed view (:data:`VALUE_DTYPES`) of a range of ``buffer``."""
        return self.bits(buffer, addr, count, operand).view(VALUE_DTYPES[buffer])

    def strided(
        self,
        buffer: Buffer,
        addr: int,
        shape: tuple[int, ...],
        pitches: tuple[int, ...],
        operand: str,
    ) -> NDArray[Any]:
        """Return a writable view of raw elements: index ``(i, j, ..., c)`` is element
        ``addr + i*pitches[0] + j*pitches[1] + ... + c``, the last level contiguous.

        ``pitches`` has one entry per level but the last, outermost first. Raises
        :class:`MachineError` like :meth:`bits` if the span leaves the buffer.
        """
        span = 1 + sum((n - 1) * p for n, p in zip(shape, (*pitches, 1), strict=True))
        flat = self.bits(buffer, addr, span, operand)
        step = flat.strides[0]
        view: NDArray[Any] = np.lib.stride_tricks.as_strided(
            flat, shape=shape, strides=tuple(p * step for p in (*pitches, 1)), writeable=True
        )
        return view

    def rows(
        self, buffer: Buffer, addr: int, shape: tuple[int, int], pitch: int, operand: str
    ) -> NDArray[Any]:
        """Return a writable ``(lines, length)`` view of raw elements, rows ``pitch`` apart
        (:meth:`strided`; ``pitch >= length``, see :func:`nmsat.hw.isa.row_pitch`)."""
        return self.strided(buffer, addr, shape, (pitch,), operand)

    def row_values(
        self, buffer: Buffer, addr: int, shape: tuple[int, int], pitch: int, operand: str
    ) -> NDArray[Any]:
        """Return :meth:`rows` as typed values (:data:`VALUE_DTYPES`)."""
        return self.rows(buffer, addr, shape, pitch, operand).view(VALUE_DTYPES[buffer])

    def write_idx(self, addr: int, indices: NDArray[Any], operand: str) -> None:
        """Write indices to the IDX buffer, keeping their low ``index_bits`` bits."""
        flat = np.asarray(indices).reshape(-1)
        self.bits(Buffer.IDX, addr, flat.size, operand)[:] = flat & self.idx_mask

    def dram_block(
        self, addr: int, counts: tuple[int, ...], strides: tuple[int, ...], run_bytes: int
    ) -> NDArray[np.uint8]:
        """Return a writable strided view of the DRAM image.

        Parameters
        ----------
        addr : int
            Byte address of the first byte.
        counts : tuple of int
            Extent of each outer level (e.g. blocks, planes, rows), outermost first; each >= 1.
        strides : tuple of int
            Bytes between consecutive entries of each level, same length as ``counts``.
        run_bytes : int
            Contiguous bytes of the innermost level (one row).

        Returns
        -------
        numpy.ndarray of uint8, shape ``(*counts, run_bytes)``
            A view into :attr:`dram` (writes go to the image).

        Raises
        ------
        MachineError
            If any addressed byte lies outside the image.
        """
        span = run_bytes + sum((n - 1) * s for n, s in zip(counts, strides, strict=True))
        if addr < 0 or addr + span > self.dram.size:
            raise MachineError(
                f"dram_addr={addr:#x} + {span} bytes reaches byte {addr + span:#x}, past the "
                f"{self.dram.size:#x}-byte DRAM image of the model"
            )
        # A level of extent 1 never moves; its stride is irrelevant and is set to 0 so the
        # view's memory extent stays inside the image.
        byte_strides = tuple(s if n > 1 else 0 for n, s in zip(counts, strides, strict=True))
        view: NDArray[np.uint8] = np.lib.stride_tricks.as_strided(
            self.dram[addr:], shape=(*counts, run_bytes), strides=(*byte_strides, 1)
        )
        return view
