# Ref: DESIGN.md section 4 (banked, double-buffered on-chip buffers); docs/isa.md (buffer
#      addresses count elements of the buffer's type); docs/decisions.md, "Bank-conflict-free
#      operand rows: odd row pitches" (the layouts that keep a port's lanes in distinct banks).
# Ref: Amaranth 0.5 amaranth.lib.memory (Memory, ReadPort, WritePort: synchronous read,
#      latency 1, not transparent) and amaranth.lib.wiring (Signature, Component).
# Ref: Xilinx UG573, UltraScale Architecture Memory Resources (block RAM and UltraRAM have
#      at most two ports each, hence replication or multi-pumping for more).
"""BankedBuffer: an on-chip buffer of interleaved banks with wide and gather/scatter ports.

The port signatures (seen from the buffer; a unit uses them flipped):

* :class:`WideReadPortSignature`, :class:`WideWritePortSignature`: ``lanes`` consecutive
  elements from one start address.
* :class:`GatherReadPortSignature`, :class:`ScatterWritePortSignature`: one address and one
  enable per lane.

:class:`PortSpec` names a port's kind and lanes for the :class:`BankedBuffer` constructor.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .._signature import ParameterizedSignature
from ..shared import Shared

__all__ = [
    "BankedBuffer",
    "GatherReadPortSignature",
    "PortKind",
    "PortSpec",
    "ScatterWritePortSignature",
    "WideReadPortSignature",
    "WideWritePortSignature",
]


class _PortSignature(ParameterizedSignature):
    """A buffer port of ``lanes`` elements: ``addr``, ``en`` and ``data``; the subclasses
    choose one address for all lanes or one per lane (``_per_lane``) and the direction of the
    data (``_read``). A read port's single-address form has one enable, every other form one
    per lane."""

    _per_lane: bool
    _read: bool

    def __init__(self, *, depth_entries: int, element_bits: int, lanes: int) -> None:
        addr = range(depth_entries)
        members = {
            "addr": In(data.ArrayLayout(addr, lanes) if self._per_lane else addr),
            "en": In(1 if self._read and not self._per_lane else lanes),
            "data": (Out if self._read else In)(data.ArrayLayout(element_bits, lanes)),
        }
        super().__init__(
            members, depth_entries=depth_entries, element_bits=element_bits, lanes=lanes
        )


class WideReadPortSignature(_PortSignature):
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

    _per_lane = False
    _read = True


class WideWritePortSignature(_PortSignature):
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

    _per_lane = False
    _read = False


class GatherReadPortSignature(_PortSignature):
    """Signature of a gather read port: one element per lane, each at its own address.

    Parameters
    ----------
    depth_entries : int
        Elements in the buffer; the addresses count elements.
    element_bits : int
        Width of one element.
    lanes : int
        Lanes of the port.

    Members
    -------
    addr : ``In(data.ArrayLayout(range(depth_entries), lanes))``
        Lane ``j`` reads element ``addr[j]``. Lanes may share an address (a broadcast); two
        enabled lanes in one bank at different rows are a conflict (see
        :class:`BankedBuffer`).
    en : ``In(lanes)``
        Bit ``j``: lane ``j`` reads this cycle; while it is low, ``data[j]`` holds its value.
    data : ``Out(data.ArrayLayout(element_bits, lanes))``
        One cycle after ``en[j]``: element ``addr[j]`` in lane ``j``.
    """

    _per_lane = True
    _read = True


class ScatterWritePortSignature(_PortSignature):
    """Signature of a scatter write port: one element per lane, each at its own address.

    Parameters
    ----------
    depth_entries : int
        Elements in the buffer; the addresses count elements.
    element_bits : int
        Width of one element.
    lanes : int
        Lanes of the port.

    Members
    -------
    addr : ``In(data.ArrayLayout(range(depth_entries), lanes))``
        Lane ``j`` writes element ``addr[j]``. Two enabled lanes in one bank at different
        rows are a conflict; two at the same element leave it unspecified.
    en : ``In(lanes)``
        Bit ``j``: lane ``j`` writes at the end of this cycle.
    data : ``In(data.ArrayLayout(element_bits, lanes))``
        Lane ``j``'s element.
    """

    _per_lane = True
    _read = False


class PortKind(enum.Enum):
    """How a port's lanes address the buffer."""

    #: ``lanes`` consecutive elements from one start address (read or write).
    WIDE = "wide"
    #: One address per lane, read side.
    GATHER = "gather"
    #: One address per lane, write side.
    SCATTER = "scatter"


@dataclass(frozen=True)
class PortSpec:
    """One port of a :class:`BankedBuffer`: its kind and its lanes.

    Build one with :meth:`wide`, :meth:`gather` or :meth:`scatter`.
    """

    kind: PortKind
    lanes: int

    @classmethod
    def wide(cls, lanes: int) -> PortSpec:
        """A wide read or write port of ``lanes`` consecutive elements."""
        return cls(PortKind.WIDE, lanes)

    @classmethod
    def gather(cls, lanes: int) -> PortSpec:
        """A gather read port of ``lanes`` lanes."""
        return cls(PortKind.GATHER, lanes)

    @classmethod
    def scatter(cls, lanes: int) -> PortSpec:
        """A scatter write port of ``lanes`` lanes."""
        return cls(PortKind.SCATTER, lanes)


class BankedBuffer(wiring.Component):
    """An on-chip buffer of ``banks`` interleaved banks with wide and gather/scatter ports.

    **Geometry.** Element ``e`` (``0 <= e < depth_entries``) lives in bank ``e % B`` at row
    ``e // B``, ``B = banks`` a power of two (low-order interleaving: the bank is the low
    ``log2 B`` address bits, the row the rest). Each bank is one
    :class:`amaranth.lib.memory.Memory` of ``depth_entries / B`` rows with one memory port
    per buffer port (not per lane); a crossbar per port routes lanes to banks.

    **Ports.** A *wide* port (:class:`WideReadPortSignature`,
    :class:`WideWritePortSignature`) accesses ``lanes <= B`` consecutive elements
    ``addr + j`` from any start address: they sit in distinct banks, so it never conflicts;
    its crossbar is a rotation by ``addr % B`` (bank ``b`` serves lane ``(b - addr) % B``,
    at row ``addr // B`` plus one where ``b < addr % B``). A *gather* read or *scatter*
    write port (:class:`GatherReadPortSignature`, :class:`ScatterWritePortSignature`) has
    an address and an enable per lane, and any number of lanes.

    **The no-conflict rule.** In one cycle, two enabled lanes of one gather or scatter port
    must not address one bank at two different rows: each bank port reads or writes one row
    per cycle. Lanes at the same element are legal for a gather port (a broadcast; both get
    the element); for a scatter port they leave the element unspecified. Lanes of different
    ports never conflict (each port has its own port on every bank). The compiler keeps to
    the rule by layout (odd row pitches, see docs/decisions.md); the hardware does not
    arbitrate. With ``conflict_check``, output ``read<i>_conflict`` (``write<i>_conflict``)
    is high, combinationally in the cycle of the access, exactly when two enabled lanes of
    gather port ``i`` (scatter port ``i``) address one bank at different rows. In such a
    cycle the lanes of a gather port that address such a bank read unspecified data, and a
    scatter port may store unspecified data at any one row of such a bank; banks without a
    conflict work as usual. Simulation checks the outputs; synthesis builds the buffer
    without them.

    **Gather/scatter crossbar.** Per port and bank ``b``, ``sel[b]`` is the vector of lanes
    ``j`` with ``en[j]`` and ``addr[j] % B == b`` (a one-hot decode of each lane's bank,
    transposed). The bank's row is the OR over its selected lanes of their rows, which by
    the no-conflict rule is the row of every one of them (likewise the data of a scatter
    port); the bank port is enabled when ``sel[b]`` is not zero. The detector ORs the
    inverted rows the same way: a bank has a conflict when some bit of its selected rows is
    one in one lane and zero in another, which is exact (two different rows differ in a
    bit; equal rows never do). Read data returns to lane ``j`` from bank ``addr[j] % B``,
    selected by that bank number registered in the read cycle; a per-lane register holds
    the data while ``en[j]`` is low, since another lane may read the same bank meanwhile.
    A wide port's crossbar is a barrel shifter (``log2 B`` stages of word multiplexers).

    **Verilog.** The selection logic of about ``sqrt(B)`` banks, and the return path of
    about ``sqrt(B)`` lanes, are each one :class:`nmsat.hw.shared.Shared` unit, so
    :func:`nmsat.hw.gen.to_verilog` writes each shape once and instantiates it (about
    ``sqrt(B)`` times per port): one module per bank made the parent wire every lane to
    every bank, one for all banks made a module whose netlist Amaranth is slow to build.
    The memories become ``nmsat_ram`` instances through the generator's ``get_memory``
    hook.

    **Timing.** Read latency 1 (address and ``en`` in cycle t, data in cycle t + 1, held
    until the lane's next read); a write stores at the end of its cycle. A read of an
    element written in the same cycle returns the old value (no transparency). Two ports
    writing the same element in one cycle leave it unspecified; the compiler's tokens never
    let that happen. Elements at or past ``depth_entries`` do not exist: write lanes that
    reach them are dropped, read lanes that reach them return unspecified data (a wide port
    may start near the end).

    **FPGA mapping.** Block RAM and UltraRAM have two ports per memory, so a bank with more
    than two ports (here, one per buffer port) is replicated (one copy per read port, every
    write to all copies) or multi-pumped by synthesis; issue 7 measures the cost.

    Double buffering is not a hardware mode: the compiler splits a buffer's address range in
    two halves and alternates between them (a LOAD fills one half while GEMM reads the other;
    the dependency tokens order them). The buffer itself is one flat address space.

    Parameters
    ----------
    depth_entries : int
        Elements the buffer holds, a positive multiple of ``banks`` (for the ISA's buffers:
        :func:`nmsat.hw.isa.buffer_entries`).
    element_bits : int
        Width of an element: 16 for ACT and WGT, ``params.index_bits`` (or 8) for IDX, 32 for
        ACC and VEC.
    banks : int
        Banks, a power of two (1 allowed); the top chooses it per buffer (it need not be
        ``params.buffer_banks``).
    read_ports : sequence of PortSpec, optional
        Wide and gather read ports, at least one; default one wide port of ``banks`` lanes.
    write_ports : sequence of PortSpec, optional
        Wide and scatter write ports, at least one; default one wide port of ``banks`` lanes.
    conflict_check : bool
        Build the conflict detectors and their outputs (default); without, the outputs do
        not exist.

    Members
    -------
    read0, read1, ... : ``Out(WideReadPortSignature | GatherReadPortSignature)``
        The read ports, in the order of ``read_ports``; also the tuple :attr:`read`.
    write0, write1, ... : ``Out(WideWritePortSignature | ScatterWritePortSignature)``
        The write ports, in the order of ``write_ports``; also the tuple :attr:`write`.
    read<i>_conflict, write<i>_conflict : ``Out(1)``
        With ``conflict_check``, one per gather or scatter port; also the tuples
        :attr:`read_conflict` and :attr:`write_conflict`.

    Raises
    ------
    ValueError
        If ``banks`` is not a power of two, ``depth_entries`` not a positive multiple of
        it, ``element_bits`` or a port's lanes below 1, a wide port wider than ``banks``,
        a port of the wrong side (gather writes, scatter reads), or no read or write port.
    """

    def __init__(
        self,
        *,
        depth_entries: int,
        element_bits: int,
        banks: int,
        read_ports: Sequence[PortSpec] | None = None,
        write_ports: Sequence[PortSpec] | None = None,
        conflict_check: bool = True,
    ) -> None:
        if banks < 1 or banks & (banks - 1):
            raise ValueError(f"BankedBuffer: banks must be a power of two, got {banks!r}")
        if depth_entries <= 0 or depth_entries % banks:
            raise ValueError(
                f"BankedBuffer: depth_entries must be a positive multiple of banks = "
                f"{banks}, got {depth_entries!r}"
            )
        if element_bits < 1:
            raise ValueError(f"BankedBuffer: element_bits must be at least 1, got {element_bits!r}")
        reads = tuple(read_ports) if read_ports is not None else (PortSpec.wide(banks),)
        writes = tuple(write_ports) if write_ports is not None else (PortSpec.wide(banks),)
        for side, specs, indexed in (
            ("read", reads, PortKind.GATHER),
            ("write", writes, PortKind.SCATTER),
        ):
            if not specs:
                raise ValueError(f"BankedBuffer: at least one {side} port is needed")
            for index, spec in enumerate(specs):
                where = f"BankedBuffer: {side} port {index} ({spec.kind.value})"
                if spec.kind not in (PortKind.WIDE, indexed):
                    raise ValueError(
                        f"{where}: a {side} port is {PortKind.WIDE.value!r} or {indexed.value!r}"
                    )
                if spec.lanes < 1:
                    raise ValueError(f"{where}: lanes must be at least 1, got {spec.lanes!r}")
                if spec.kind is PortKind.WIDE and spec.lanes > banks:
                    raise ValueError(
                        f"{where}: a wide port has at most banks = {banks} lanes, "
                        f"got {spec.lanes!r}"
                    )
        self._depth_entries = depth_entries
        self._element_bits = element_bits
        self._banks = banks
        self._read_specs = reads
        self._write_specs = writes
        self._conflict_check = conflict_check

        shape: dict[str, Any] = {"depth_entries": depth_entries, "element_bits": element_bits}
        read_sigs = {
            PortKind.WIDE: WideReadPortSignature,
            PortKind.GATHER: GatherReadPortSignature,
        }
        write_sigs = {
            PortKind.WIDE: WideWritePortSignature,
            PortKind.SCATTER: ScatterWritePortSignature,
        }
        members: dict[str, Any] = {}
        for side, specs, sigs in (("read", reads, read_sigs), ("write", writes, write_sigs)):
            for index, spec in enumerate(specs):
                members[f"{side}{index}"] = Out(sigs[spec.kind](**shape, lanes=spec.lanes))
                if conflict_check and spec.kind is not PortKind.WIDE:
                    members[f"{side}{index}_conflict"] = Out(1)
        super().__init__(members)

        def ports(side: str, count: int) -> tuple[Any, ...]:
            return tuple(getattr(self, f"{side}{i}") for i in range(count))

        def conflicts(side: str, specs: tuple[PortSpec, ...]) -> tuple[Signal | None, ...]:
            return tuple(getattr(self, f"{side}{i}_conflict", None) for i in range(len(specs)))

        self.read = ports("read", len(reads))
        self.write = ports("write", len(writes))
        #: Per read port, its conflict output, or None (wide port, or no ``conflict_check``).
        self.read_conflict = conflicts("read", reads)
        #: Per write port, its conflict output, or None.
        self.write_conflict = conflicts("write", writes)

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
        """Banks, a power of two."""
        return self._banks

    @property
    def read_ports(self) -> tuple[PortSpec, ...]:
        """The read ports' kinds and lanes, in order."""
        return self._read_specs

    @property
    def write_ports(self) -> tuple[PortSpec, ...]:
        """The write ports' kinds and lanes, in order."""
        return self._write_specs

    @property
    def conflict_check(self) -> bool:
        """Whether the conflict detectors and outputs are built."""
        return self._conflict_check

    def elaborate(self, platform: object) -> Module:
        m = Module()
        banks = self._banks
        memories = []
        for bank in range(banks):
            memory = Memory(shape=self._element_bits, depth=self._depth_entries // banks, init=[])
            m.submodules[f"bank{bank}"] = memory
            memories.append(memory)
        for index, (spec, port) in enumerate(zip(self._write_specs, self.write, strict=True)):
            name = f"write{index}"
            if spec.kind is PortKind.WIDE:
                self._wide_write(m, name, port, memories)
            else:
                self._indexed(m, name, port, memories, self.write_conflict[index], write=True)
        for index, (spec, port) in enumerate(zip(self._read_specs, self.read, strict=True)):
            name = f"read{index}"
            if spec.kind is PortKind.WIDE:
                self._wide_read(m, name, port, memories)
            else:
                self._indexed(m, name, port, memories, self.read_conflict[index], write=False)
        return m

    # -- wide ports: a rotation by addr % B ----------------------------------------------

    def _wide_rows(self, m: Module, name: str, addr: Any) -> tuple[Value, Value, Value, Value]:
        """Start bank, per-bank wrap flags, and the two rows a wide access touches.

        Bank ``b`` holds lane ``(b - start) % B``, in row ``addr // B`` plus one where
        ``b < start`` (the access wrapped past the last bank): ``wrap`` bit ``b``.
        """
        value = Value.cast(addr)
        bits = self._lane_bits
        start, first_row = value[:bits], value[bits:]
        # Signals, not expressions: Amaranth emits an expression once per use, and every
        # bank uses these.
        wrap = Signal(self._banks, name=f"{name}_wrap")
        next_row = Signal(len(first_row) + 1, name=f"{name}_next_row")
        ones = Const((1 << self._banks) - 1, self._banks)
        # Bits b >= start of (ones << start) are set, so its complement flags b < start.
        m.d.comb += [wrap.eq(~(ones << start)[: self._banks]), next_row.eq(first_row + 1)]
        return start, wrap, first_row, next_row

    def _rotate(
        self, m: Module, name: str, value: Value, amount: Value, *, word: int, left: bool
    ) -> Value:
        """``value``, words of ``word`` bits, rotated by ``amount`` words.

        A barrel shifter, one multiplexer stage per bit of ``amount`` (B log B word muxes
        instead of B B-way ones), each stage a signal so that it is emitted once.
        """
        for position, select in enumerate(amount):
            step = word << position
            rotated = value.rotate_left(step) if left else value.rotate_right(step)
            stage = Signal(len(value), name=f"{name}_rotate{position}")
            m.d.comb += stage.eq(Mux(select, rotated, value))
            value = stage
        return value

    def _wide_write(self, m: Module, name: str, port: Any, memories: list[Memory]) -> None:
        banks, bits = self._banks, self._element_bits
        start, wrap, first_row, next_row = self._wide_rows(m, name, port.addr)
        lanes = len(port.en)
        padding = (banks - lanes) * bits
        # Bank b writes lane (b - start) % B: the lanes, padded to B, rotated left by start.
        data_in = Cat(port.data.as_value(), Const(0, padding))
        bank_data = self._rotate(m, f"{name}_data", data_in, start, word=bits, left=True)
        en_in = Cat(port.en, Const(0, banks - lanes))
        bank_en = self._rotate(m, f"{name}_en", en_in, start, word=1, left=True)
        # Rows past the end are dropped (with a power-of-two row count, only the wrap of
        # the last row reaches one).
        first_ok, next_ok = Signal(name=f"{name}_first_ok"), Signal(name=f"{name}_next_ok")
        m.d.comb += [first_ok.eq(self._in_range(first_row)), next_ok.eq(self._in_range(next_row))]
        for bank, memory in enumerate(memories):
            mem_port = memory.write_port()
            m.d.comb += [
                mem_port.addr.eq(Mux(wrap[bank], next_row, first_row)),
                mem_port.data.eq(bank_data.word_select(bank, bits)),
                mem_port.en.eq(bank_en[bank] & Mux(wrap[bank], next_ok, first_ok)),
            ]

    def _wide_read(self, m: Module, name: str, port: Any, memories: list[Memory]) -> None:
        bits = self._element_bits
        start, wrap, first_row, next_row = self._wide_rows(m, name, port.addr)
        start_reg = Signal.like(start, name=f"{name}_start_bank")
        with m.If(port.en):
            m.d.sync += start_reg.eq(start)
        bank_data = []
        for bank, memory in enumerate(memories):
            mem_port = memory.read_port()
            m.d.comb += [
                mem_port.addr.eq(Mux(wrap[bank], next_row, first_row)),
                mem_port.en.eq(port.en),
            ]
            bank_data.append(mem_port.data)
        # Lane j is element addr + j, in bank (start + j) % B: rotate right by start.
        lanes = self._rotate(m, name, Cat(bank_data), start_reg, word=bits, left=False)
        m.d.comb += port.data.as_value().eq(lanes[: len(port.data) * bits])

    def _in_range(self, row: Value) -> Value:
        """``row < rows``; constant true when the row's bits cannot reach past the end."""
        if 1 << len(row) <= self._rows:
            return Const(1)
        return row < self._rows

    # -- gather and scatter ports: a selection per bank ----------------------------------

    def _indexed(
        self,
        m: Module,
        name: str,
        port: Any,
        memories: list[Memory],
        conflict: Signal | None,
        *,
        write: bool,
    ) -> None:
        lanes, bits, banks = len(port.en), self._element_bits, self._banks
        data_bits = bits if write else 0
        check = conflict is not None
        group = _group_size(banks)
        row_bits = Shape.cast(range(self._depth_entries)).width - self._lane_bits
        bank_conflicts, bank_data = [], []
        for first in range(0, banks, group):
            select = _BankSelect(
                depth_entries=self._depth_entries,
                banks=banks,
                group=group,
                lanes=lanes,
                data_bits=data_bits,
                conflict_check=check,
            )
            # Every group of every port of this shape shares one Verilog module.
            key = (_BankSelect, self._depth_entries, banks, group, lanes, data_bits, check)
            unit = "buffer_scatter_select" if write else "buffer_gather_select"
            m.submodules[f"{name}_select{first}"] = Shared(select, key, unit)
            m.d.comb += [
                select.addr.eq(port.addr.as_value()),
                select.en.eq(port.en),
                select.first.eq(first // group),
            ]
            if write:
                m.d.comb += select.data.eq(port.data.as_value())
            if check:
                bank_conflicts.append(select.conflict)
            for index, memory in enumerate(memories[first : first + group]):
                row = select.rows.word_select(index, row_bits)
                active = select.active[index]
                if write:
                    write_port = memory.write_port()
                    m.d.comb += [
                        write_port.addr.eq(row),
                        write_port.data.eq(select.bank_data.word_select(index, bits)),
                        write_port.en.eq(active & self._in_range(row)),
                    ]
                else:
                    read_port = memory.read_port()
                    m.d.comb += [read_port.addr.eq(row), read_port.en.eq(active)]
                    bank_data.append(read_port.data)
        if conflict is not None:
            m.d.comb += conflict.eq(Cat(bank_conflicts).any())
        if write:
            return
        lane_bits = self._lane_bits
        lane_group = min(lanes, _group_size(banks))
        for first in range(0, lanes, lane_group):
            count = min(lane_group, lanes - first)
            back = _GatherReturn(banks=banks, lanes=count, element_bits=bits)
            return_key = (_GatherReturn, banks, count, bits)
            m.submodules[f"{name}_return{first}"] = Shared(back, return_key, "buffer_gather_return")
            chosen = range(first, first + count)
            m.d.comb += [
                back.en.eq(port.en[first : first + count]),
                back.bank.eq(Cat(Value.cast(port.addr[j])[:lane_bits] for j in chosen)),
                back.bank_data.eq(Cat(bank_data)),
                Cat(port.data[j] for j in chosen).eq(back.data),
            ]

    @property
    def _lane_bits(self) -> int:
        return self._banks.bit_length() - 1

    @property
    def _rows(self) -> int:
        return self._depth_entries // self._banks


def _group_size(count: int) -> int:
    """Banks (or lanes) per shared module: about the square root of ``count``, a power of two.

    A gather or scatter crossbar is ``lanes x banks`` wide. One module for all banks is
    slow to convert (Amaranth's netlist grows with every lane-bank pair inside it), one per
    bank makes the parent connect every lane to every bank; groups of about the square root
    keep both small: for 256 lanes and 256 banks, 16 instances of a 16-bank module.
    """
    return 1 << (count.bit_length() // 2)


class _BankSelect(wiring.Component):
    """A group of banks' side of a gather or scatter port: which lanes address each bank.

    For bank ``b`` of the group, ``sel`` bit ``j`` is set when lane ``j`` is enabled and
    ``addr[j] % B == b``. The bank's row (and a scatter port's data) is the OR over its
    selected lanes of theirs, the row of every selected lane when the port keeps the
    no-conflict rule. ``conflict`` is high when, for some bank, some bit of the selected
    rows is one in one lane and zero in another, that is exactly when two selected lanes are
    at different rows.

    The group's number is an input, so that every group of every buffer of one shape
    shares one Verilog module (:class:`nmsat.hw.shared.Shared`); synthesis propagates the
    constant. Vectors that many cells read (``sel`` of a bank, bit ``k`` of every lane's
    row) are the outputs of an AND with ``en``, not bare concatenations, so that the Verilog
    names them once instead of spelling out their bits at every use.

    Members
    -------
    addr : ``In(lanes * address bits)``
        The port's lane addresses, lane ``j`` at word ``j``.
    en : ``In(lanes)``
        The port's lane enables.
    first : ``In(log2(banks / group))``
        The group's number: its banks are ``first * group + i``.
    data : ``In(lanes * data_bits)``
        The lanes' data (scatter ports only, ``data_bits > 0``).
    rows : ``Out(group * row bits)``
        The row bank ``first * group + i`` accesses, at word ``i``.
    active : ``Out(group)``
        Bit ``i``: some lane selects the bank.
    bank_data : ``Out(group * data_bits)``
        The data each bank writes (scatter ports only).
    conflict : ``Out(1)``
        Two lanes selecting one bank of the group at different rows (``conflict_check``).
    """

    def __init__(
        self,
        *,
        depth_entries: int,
        banks: int,
        group: int,
        lanes: int,
        data_bits: int,
        conflict_check: bool,
    ) -> None:
        self._lane_bits = banks.bit_length() - 1
        self._group_bits = group.bit_length() - 1
        self._group = group
        self._lanes = lanes
        self._addr_bits = Shape.cast(range(depth_entries)).width
        self._row_bits = self._addr_bits - self._lane_bits
        self._data_bits = data_bits
        # Flat vectors rather than arrays: the Verilog wrapper of a shared module declares
        # a wire per array element.
        members: dict[str, Any] = {
            "addr": In(lanes * self._addr_bits),
            "en": In(lanes),
            "first": In(self._lane_bits - self._group_bits),
            "rows": Out(group * self._row_bits),
            "active": Out(group),
        }
        if data_bits:
            members["data"] = In(lanes * data_bits)
            members["bank_data"] = Out(group * data_bits)
        if conflict_check:
            members["conflict"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        lane_bits, group_bits = self._lane_bits, self._group_bits
        addrs = [self.addr.word_select(j, self._addr_bits) for j in range(self._lanes)]
        # Per lane, its bank within the group, one-hot, or zero when the lane is disabled or
        # addresses another group.
        decoded = []
        for j, addr in enumerate(addrs):
            in_group = self.en[j] & (addr[group_bits:lane_bits] == self.first)
            one_hot = Signal(self._group, name=f"lane{j}_bank")
            m.d.comb += one_hot.eq(in_group << addr[:group_bits])
            decoded.append(one_hot)
        rows = self._planes(m, "row", [addr[lane_bits:] for addr in addrs])
        words = []
        if self._data_bits:
            words = [self.data.word_select(j, self._data_bits) for j in range(self._lanes)]
        data_planes = self._planes(m, "data", words) if words else []
        conflicts = []
        for bank in range(self._group):
            sel = Signal(self._lanes, name=f"bank{bank}_sel")
            m.d.comb += sel.eq(Cat(one_hot[bank] for one_hot in decoded) & self.en)
            m.d.comb += [
                self.rows.word_select(bank, self._row_bits).eq(
                    Cat((sel & plane).any() for plane in rows)
                ),
                self.active[bank].eq(sel.any()),
            ]
            if data_planes:
                m.d.comb += self.bank_data.word_select(bank, self._data_bits).eq(
                    Cat((sel & plane).any() for plane in data_planes)
                )
            if "conflict" in self.signature.members:
                conflicts += [(sel & plane).any() & (sel & ~plane).any() for plane in rows]
        if "conflict" in self.signature.members:
            m.d.comb += self.conflict.eq(Cat(conflicts).any())
        return m

    def _planes(self, m: Module, name: str, words: list[Value]) -> list[Signal]:
        """Bit ``k`` of every lane's word, one signal of ``lanes`` bits per ``k``."""
        planes = []
        for k in range(len(words[0])):
            plane = Signal(self._lanes, name=f"{name}_bit{k}")
            m.d.comb += plane.eq(Cat(word[k] for word in words) & self.en)
            planes.append(plane)
        return planes


class _GatherReturn(wiring.Component):
    """The data path back to a group of a gather port's lanes: the bank each read, held.

    Lane ``j`` registers its bank ``addr[j] % B`` when ``en[j]`` is high; in the next cycle
    it takes that bank's read data, and a register holds it while the lane is idle (the
    bank may serve other lanes, at other rows, meanwhile). A port's lanes are split into
    groups of about the square root of the banks, each an instance of one shared module.

    Members
    -------
    en : ``In(lanes)``
        The lanes' enables.
    bank : ``In(lanes * log2 banks)``
        Lane ``j``'s bank at bits ``[j * log2 B, (j + 1) * log2 B)``.
    bank_data : ``In(banks * element_bits)``
        The banks' read data, bank ``b`` at word ``b``.
    data : ``Out(lanes * element_bits)``
        The lanes' data, lane ``j`` at word ``j``.
    """

    def __init__(self, *, banks: int, lanes: int, element_bits: int) -> None:
        self._lanes, self._bits = lanes, element_bits
        self._lane_bits = banks.bit_length() - 1
        super().__init__(
            {
                "en": In(lanes),
                "bank": In(lanes * self._lane_bits),
                "bank_data": In(banks * element_bits),
                "data": Out(lanes * element_bits),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        bits, lane_bits = self._bits, self._lane_bits
        for lane in range(self._lanes):
            bank = Signal(lane_bits, name=f"lane{lane}_bank")
            fresh = Signal(name=f"lane{lane}_fresh")
            held = Signal(bits, name=f"lane{lane}_held", reset_less=True)
            m.d.sync += fresh.eq(self.en[lane])
            with m.If(self.en[lane]):
                m.d.sync += bank.eq(self.bank.word_select(lane, lane_bits))
            value = Signal(bits, name=f"lane{lane}_data")
            m.d.comb += value.eq(Mux(fresh, self.bank_data.word_select(bank, bits), held))
            m.d.sync += held.eq(value)
            m.d.comb += self.data.word_select(lane, bits).eq(value)
        return m
