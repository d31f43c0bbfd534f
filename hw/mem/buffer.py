# Ref: DESIGN.md section 4 (banked, double-buffered on-chip buffers); docs/isa.md (buffer
#      addresses count elements of the buffer's type).
# Ref: Amaranth 0.5 amaranth.lib.memory (Memory, ReadPort, WritePort: synchronous read,
#      latency 1).
# Ref: Xilinx UG573, UltraScale Architecture Memory Resources (block RAM and UltraRAM have
#      at most two ports each, hence few ports per bank).
"""BankedBuffer: an on-chip buffer of ``buffer_banks`` interleaved banks with wide ports."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nmsat.hw.params import SATParams

from .._signature import ParameterizedSignature

__all__ = ["BankedBuffer", "WideReadPortSignature", "WideWritePortSignature"]


class WideReadPortSignature(ParameterizedSignature):
    """Signature of a wide read port: ``lanes`` consecutive elements per cycle.

    Parameters
    ----------
    depth_entries : int
        Elements in the buffer; the address counts elements.
    element_bits : int
        Width of one element.
    lanes : int
        Elements per access.

    Members
    -------
    addr : ``In(range(depth_entries))``
        Address of the first element, any element (no alignment needed).
    en : ``In(1)``
        Read this cycle; while low, ``data`` holds its value.
    data : ``Out(data.ArrayLayout(element_bits, lanes))``
        One cycle after ``en``: element ``addr + j`` in lane ``j``.
    """

    def __init__(self, *, depth_entries: int, element_bits: int, lanes: int) -> None:
        super().__init__(
            {
                "addr": In(range(depth_entries)),
                "en": In(1),
                "data": Out(data.ArrayLayout(element_bits, lanes)),
            },
            depth_entries=depth_entries,
            element_bits=element_bits,
            lanes=lanes,
        )


class WideWritePortSignature(ParameterizedSignature):
    """Signature of a wide write port: up to ``lanes`` consecutive elements per cycle.

    Parameters
    ----------
    depth_entries : int
        Elements in the buffer; the address counts elements.
    element_bits : int
        Width of one element.
    lanes : int
        Elements per access.

    Members
    -------
    addr : ``In(range(depth_entries))``
        Address of the first element, any element (no alignment needed).
    en : ``In(lanes)``
        Lane mask: bit ``j`` writes lane ``j`` to element ``addr + j`` at the end of the cycle.
    data : ``In(data.ArrayLayout(element_bits, lanes))``
        The elements, lane ``j`` for element ``addr + j``.
    """

    def __init__(self, *, depth_entries: int, element_bits: int, lanes: int) -> None:
        super().__init__(
            {
                "addr": In(range(depth_entries)),
                "en": In(lanes),
                "data": In(data.ArrayLayout(element_bits, lanes)),
            },
            depth_entries=depth_entries,
            element_bits=element_bits,
            lanes=lanes,
        )


class BankedBuffer(wiring.Component):
    """An on-chip buffer of ``params.buffer_banks`` banks with wide, conflict-free ports.

    Element ``e`` lives in bank ``e % B`` at row ``e // B`` (``B = buffer_banks``, low-order
    interleaving), so any ``B`` consecutive elements sit in ``B`` different banks: every port
    reads or writes up to ``B`` consecutive elements from any start address in one cycle,
    without conflicts. Each bank is one :class:`amaranth.lib.memory.Memory` with all the
    buffer's ports; a rotation by ``addr % B`` maps lanes to banks.

    Timing: read latency 1 (address and ``en`` in cycle t, data in cycle t + 1, held until
    the next read); a write stores at the end of its cycle. A read of an element written in
    the same cycle returns the old value (no transparency). Two write ports writing the same
    element in one cycle leave it unspecified; the compiler's tokens never let that happen.
    Elements at or past ``depth_entries`` do not exist: write lanes that reach them are
    dropped, read lanes that reach them return unspecified data.

    Double buffering is not a hardware mode: the compiler splits a buffer's address range in
    two halves and alternates between them (a LOAD fills one half while GEMM reads the other;
    the dependency tokens order them). The buffer itself is one flat address space.

    Parameters
    ----------
    params : SATParams
        Uses ``buffer_banks``.
    depth_entries : int
        Elements the buffer holds, a positive multiple of ``buffer_banks`` (for the ISA's
        buffers: ``params.act_buffer_entries`` and so on, see
        :func:`nmsat.hw.isa.buffer_entries`).
    element_bits : int
        Width of an element: 16 for ACT and WGT, ``params.index_bits`` (or 8) for IDX, 32 for
        ACC and VEC.
    read_port_count, write_port_count : int
        Number of wide read and write ports (at least 1 each; FPGA block RAM has two ports
        per bank, so more than two in all costs replicated or multi-pumped memories).

    Members
    -------
    read : ``Out(WideReadPortSignature).array(read_port_count)``
        The wide read ports.
    write : ``Out(WideWritePortSignature).array(write_port_count)``
        The wide write ports.

    Raises
    ------
    ValueError
        If ``depth_entries`` is not a positive multiple of ``buffer_banks``, or
        ``element_bits`` or a port count is below 1.
    """

    def __init__(
        self,
        params: SATParams,
        *,
        depth_entries: int,
        element_bits: int,
        read_port_count: int = 1,
        write_port_count: int = 1,
    ) -> None:
        banks = params.buffer_banks
        if depth_entries <= 0 or depth_entries % banks:
            raise ValueError(
                f"BankedBuffer: depth_entries must be a positive multiple of buffer_banks = "
                f"{banks}, got {depth_entries!r}"
            )
        for name, value in (
            ("element_bits", element_bits),
            ("read_port_count", read_port_count),
            ("write_port_count", write_port_count),
        ):
            if value < 1:
                raise ValueError(f"BankedBuffer: {name} must be at least 1, got {value!r}")
        self._params = params
        self._depth_entries = depth_entries
        self._element_bits = element_bits
        shape: dict[str, Any] = {
            "depth_entries": depth_entries,
            "element_bits": element_bits,
            "lanes": banks,
        }
        super().__init__(
            {
                "read": Out(WideReadPortSignature(**shape)).array(read_port_count),
                "write": Out(WideWritePortSignature(**shape)).array(write_port_count),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameters the buffer was built for."""
        return self._params

    @property
    def depth_entries(self) -> int:
        """Elements the buffer holds."""
        return self._depth_entries

    @property
    def element_bits(self) -> int:
        """Width of one element in bits."""
        return self._element_bits

    @property
    def bank_count(self) -> int:
        """Banks, ``params.buffer_banks``; also the lanes of every port."""
        return self._params.buffer_banks

    def elaborate(self, platform: object) -> Module:
        m = Module()
        banks = self.bank_count
        rows = self._depth_entries // banks
        lane_bits = banks.bit_length() - 1
        memories = []
        for bank in range(banks):
            memory = Memory(shape=self._element_bits, depth=rows, init=[])
            m.submodules[f"bank{bank}"] = memory
            memories.append(memory)

        for port in self.write:
            start_lane, first_row = _split(port.addr, lane_bits)
            for bank, memory in enumerate(memories):
                row, lane = _bank_access(first_row, start_lane, bank, lane_bits)
                mem_port = memory.write_port()
                # Lane (bank - addr) % B lands here; a row past the end is dropped.
                m.d.comb += [
                    mem_port.addr.eq(row),
                    mem_port.data.eq(port.data[lane]),
                    mem_port.en.eq(port.en.bit_select(lane, 1) & (row < rows)),
                ]

        for port_no, port in enumerate(self.read):
            start_lane, first_row = _split(port.addr, lane_bits)
            start_lane_reg = Signal.like(start_lane, name=f"read{port_no}_start_lane")
            with m.If(port.en):
                m.d.sync += start_lane_reg.eq(start_lane)
            bank_data = []
            for bank, memory in enumerate(memories):
                row, _ = _bank_access(first_row, start_lane, bank, lane_bits)
                mem_port = memory.read_port()
                m.d.comb += [mem_port.addr.eq(row), mem_port.en.eq(port.en)]
                bank_data.append(mem_port.data)
            # Lane j of the result is element addr + j, which is in bank (addr + j) % B.
            all_banks = Cat(*bank_data)
            for lane in range(banks):
                bank = (start_lane_reg + lane)[:lane_bits] if lane_bits else Const(0)
                m.d.comb += port.data[lane].eq(all_banks.word_select(bank, self._element_bits))
        return m


def _split(addr: Value, lane_bits: int) -> tuple[Value, Value]:
    """Split an element address into (bank of its first element, row of its first element)."""
    return addr[:lane_bits], addr[lane_bits:]


def _bank_access(
    first_row: Value, start_lane: Value, bank: int, lane_bits: int
) -> tuple[Value, Value]:
    """Return (row, lane) of ``bank`` for an access starting at ``(first_row, start_lane)``.

    The lane that lands in ``bank`` is ``(bank - start_lane) % B``; it is in the next row
    when the access started in a higher bank (``bank < start_lane``).
    """
    if not lane_bits:
        return first_row, Const(0)
    row = first_row + (Const(bank, lane_bits) < start_lane)
    lane = (Const(bank, lane_bits) - start_lane)[:lane_bits]
    return row, lane
