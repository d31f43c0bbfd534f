# Ref: STYLE.md G2 (downstream copies are generated), G11 (``<top>.v`` plus ``<top>.ports.json``
#      from the component's metadata, names joined with ``__``, so testbenches never type a
#      port name), G18 (outputs written atomically).
# Ref: Amaranth 0.5 amaranth.back.verilog (conversion through the bundled Yosys) and
#      amaranth.lib.memory (the ``get_memory`` platform hook); coreblocks ships ``core.v`` with
#      ``core.v.json`` the same way.
"""Verilog generation: the accelerator's Verilog, its port map and a parameter header.

:func:`generate` writes three files for one configuration:

``nmsat_top.v``
    The :class:`~nmsat.hw.top.Accelerator` as Verilog (module ``nmsat_top``), followed by
    ``nmsat_ram``, the generic RAM module every on-chip memory is an instance of.
``nmsat_top.ports.json``
    Every top-level port: name, direction and width (plus ``clk`` and ``rst``), and the
    component's metadata (:meth:`amaranth.lib.wiring.ComponentMetadata.as_json`).
``nmsat_params.vh``
    Every SATParams field, and the derived sizes, as a Verilog ```define``.

Memories. Amaranth writes a memory's initial contents into the Verilog word by word, which
for the buffers of vcu1525.yaml (7 Mi words) takes longer than the rest of the design. So
the generator elaborates the design with a platform whose ``get_memory`` hook replaces each
:class:`amaranth.lib.memory.Memory` by an instance of ``nmsat_ram``: synchronous read ports
with enable (latency 1, data held while disabled, the contents before the cycle's writes),
write ports at the end of the cycle, exactly Amaranth's non-transparent ports. Its contents
start at zero in simulation (``ifndef SYNTHESIS``), like the Amaranth simulator's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

from amaranth.back import verilog
from amaranth.hdl import Cat, ClockSignal, Const, Elaboratable, Instance, Module, Shape, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from .files import write_atomic
from .isa import INSTR_BITS, Buffer, buffer_entries
from .params import BUFFER_ADDR_BITS, DRAM_ADDR_BITS, QUEUE_NAMES, SATParams
from .shared import instance_of
from .top import IMEM_ADDR_BITS, Accelerator

__all__ = [
    "HEADER_FILE",
    "PORTS_FILE",
    "RAM_MODULE",
    "TOP_NAME",
    "VERILOG_FILE",
    "Generated",
    "generate",
    "params_header",
    "port_list",
    "to_verilog",
]

#: Name of the top-level Verilog module.
TOP_NAME = "nmsat_top"
#: File names written by :func:`generate`.
VERILOG_FILE = f"{TOP_NAME}.v"
PORTS_FILE = f"{TOP_NAME}.ports.json"
HEADER_FILE = "nmsat_params.vh"
#: Name of the generic RAM module.
RAM_MODULE = "nmsat_ram"

# The RAM every Amaranth Memory becomes. Ports are packed into vectors, port i at bits
# [i * W, (i + 1) * W). Nonblocking assignments give the contents before the cycle's writes to
# its reads; of two writes to one word in one cycle the higher port wins (unspecified for
# the design, which never does it).
_RAM_VERILOG = f"""
// Generic RAM of nmsat.hw.gen: every amaranth.lib.memory.Memory of the design is one.
module {RAM_MODULE} #(
    parameter WIDTH = 8,
    parameter DEPTH = 2,
    parameter ABITS = 1,
    parameter READ_PORTS = 1,
    parameter WRITE_PORTS = 1,
    parameter GRANULES = 1
) (
    input  wire                            clk,
    input  wire [READ_PORTS-1:0]           ren,
    input  wire [READ_PORTS*ABITS-1:0]     raddr,
    output reg  [READ_PORTS*WIDTH-1:0]     rdata,
    input  wire [WRITE_PORTS*GRANULES-1:0] wen,
    input  wire [WRITE_PORTS*ABITS-1:0]    waddr,
    input  wire [WRITE_PORTS*WIDTH-1:0]    wdata
);
    localparam GW = WIDTH / GRANULES;
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    integer r, w, g;
`ifndef SYNTHESIS
    integer i;
    initial begin
        rdata = {{(READ_PORTS*WIDTH){{1'b0}}}};
        for (i = 0; i < DEPTH; i = i + 1)
            mem[i] = {{WIDTH{{1'b0}}}};
    end
`endif
    always @(posedge clk) begin
        for (r = 0; r < READ_PORTS; r = r + 1)
            if (ren[r])
                rdata[r*WIDTH +: WIDTH] <= mem[raddr[r*ABITS +: ABITS]];
        for (w = 0; w < WRITE_PORTS; w = w + 1)
            for (g = 0; g < GRANULES; g = g + 1)
                if (wen[w*GRANULES + g])
                    mem[waddr[w*ABITS +: ABITS]][g*GW +: GW] <= wdata[w*WIDTH + g*GW +: GW];
    end
endmodule
"""


class _RAMInstance(Elaboratable):
    """A :class:`Memory` as an instance of ``nmsat_ram`` (the ``get_memory`` override)."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def elaborate(self, platform: object) -> Module:
        m = Module()
        memory = self._memory
        width = Shape.cast(memory.shape).width
        abits = max(1, (memory.depth - 1).bit_length())
        reads, writes = memory.read_ports, memory.write_ports
        if any(memory.init):
            raise ValueError(f"{RAM_MODULE}: a memory with initial contents is not supported")
        domains = {port.domain for port in (*reads, *writes)}
        if domains - {"sync"} or any(port.transparent_for for port in reads):
            raise ValueError(
                f"{RAM_MODULE}: only non-transparent ports in the sync domain are supported, "
                f"got domains {sorted(domains)}"
            )
        # Every write port gets the finest granularity among them: its enable bits repeat.
        granules = max((len(port.en) for port in writes), default=1)
        if any(granules % len(port.en) for port in writes):
            raise ValueError(
                f"{RAM_MODULE}: write enables of {sorted({len(p.en) for p in writes})} bits "
                "do not share a granularity"
            )

        def enables(port: Any) -> Value:
            repeat = granules // len(port.en)
            return Cat(*(bit.replicate(repeat) for bit in port.en))

        def addr(port: Any) -> Value:
            value = Value.cast(port.addr)
            return Cat(value, Const(0, abits - len(value)))

        connections: dict[str, Any] = {
            "p_WIDTH": width,
            "p_DEPTH": memory.depth,
            "p_ABITS": abits,
            "p_READ_PORTS": max(1, len(reads)),
            "p_WRITE_PORTS": max(1, len(writes)),
            "p_GRANULES": granules,
            "i_clk": ClockSignal("sync"),
            "i_ren": Cat(*(port.en for port in reads)) if reads else Const(0, 1),
            "i_raddr": Cat(*map(addr, reads)) if reads else Const(0, abits),
            "i_wen": Cat(*map(enables, writes)) if writes else Const(0, 1),
            "i_waddr": Cat(*map(addr, writes)) if writes else Const(0, abits),
            "i_wdata": Cat(*(port.data for port in writes)) if writes else Const(0, width),
        }
        if reads:
            connections["o_rdata"] = Cat(*(port.data for port in reads))
        m.submodules.ram = Instance(RAM_MODULE, **connections)
        return m


class _MemoryPlatform:
    """A platform with only the ``get_memory`` hook: every shared unit is elaborated in place
    (``to_verilog(..., share=False)``, the baseline of benchmarks/gen_targets.py), so
    :attr:`modules` stays empty."""

    def __init__(self) -> None:
        self.modules: dict[Hashable, tuple[str, str, set[str]]] = {}

    def get_memory(self, memory: Memory) -> Elaboratable:
        return _RAMInstance(memory)


class _VerilogPlatform(_MemoryPlatform):
    """The platform :func:`generate` elaborates with: the ``get_memory`` and ``get_shared``
    hooks.

    ``get_shared`` (see :mod:`nmsat.hw.shared`) converts a shared unit to Verilog the first
    time its key is seen, as a module ``nmsat_<name>`` (``nmsat_stce_cell_inner``), and
    returns an instance of that module; :attr:`modules` keeps each module's text for
    :func:`to_verilog` to append.
    """

    def get_shared(self, component: wiring.Component, key: Hashable, name: str) -> Module:
        if key not in self.modules:
            base = f"nmsat_{name}"
            taken = {module for module, _, _ in self.modules.values()}
            name, serial = base, 1
            while name in taken:
                serial += 1
                name = f"{base}_{serial}"
            text: str = verilog.convert(
                component, name=name, platform=self, emit_src=False,
                strip_internal_attrs=True,
            )  # fmt: skip
            self.modules[key] = (name, text, _module_ports(text, name))
        name, _, ports = self.modules[key]
        return instance_of(component, name, ports)


def _module_ports(text: str, name: str) -> set[str]:
    """The port names in the header of module ``name`` of Amaranth's Verilog ``text``."""
    found = re.search(rf"^module {re.escape(name)}\((.*?)\);", text, re.MULTILINE | re.DOTALL)
    if found is None:
        raise ValueError(f"module {name} not found in its own conversion")
    return {port.strip().lstrip("\\").strip() for port in found.group(1).split(",")}


# -- ports -----------------------------------------------------------------------------------


def _walk(members: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the port entries of a metadata ``members`` mapping, depth first, in order."""
    for member in members.values():
        for item in member if isinstance(member, list) else [member]:
            yield from _walk_item(item)


def _walk_item(item: Any) -> Iterator[dict[str, Any]]:
    if isinstance(item, list):
        for sub in item:
            yield from _walk_item(sub)
    elif item["type"] == "port":
        yield item
    else:
        yield from _walk(item["members"])


def port_list(component: wiring.Component) -> list[dict[str, Any]]:
    """Return every top-level port of ``component`` as Verilog sees it.

    Each entry has ``name`` (the member path joined with ``__``, as
    :func:`amaranth.back.verilog.convert` names the port), ``direction`` (``"input"`` or
    ``"output"``), ``width`` and ``signed``; ``clk`` and ``rst`` of the sync domain come first.
    """
    ports = [
        {"name": "clk", "direction": "input", "width": 1, "signed": False},
        {"name": "rst", "direction": "input", "width": 1, "signed": False},
    ]
    metadata = component.metadata.as_json()
    for port in _walk(metadata["interface"]["members"]):
        ports.append(
            {
                "name": port["name"],
                "direction": "input" if port["dir"] == "in" else "output",
                "width": port["width"],
                "signed": port["signed"],
            }
        )
    return ports


# -- parameter header ------------------------------------------------------------------------


def _verilog_literal(value: Any) -> str:
    """A Verilog literal: integers of 31 bits or more as 64-bit, strings quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and value < 2**31 else repr(value)
    value = int(value)
    return str(value) if value < 2**31 else f"64'd{value}"


def params_header(params: SATParams) -> str:
    """Return ``nmsat_params.vh``: every SATParams field and derived size as a ```define``.

    Names are ``NMSAT_`` and the field in upper case (``NMSAT_ARRAY_ROWS``). A field that is
    a list is spelled out: ``nm_patterns`` as a string (``"1:4,2:4"``), a count and one N and
    M per pattern; ``queue_depths`` as one ``NMSAT_QUEUE_DEPTH_<QUEUE>`` per queue.
    """
    lines = [
        f"// Generated by nmsat.hw.gen from SATParams {params.name!r}; do not edit.",
        "// Regenerate with `nmsat build --config <name> --out <dir>`.",
        "`ifndef NMSAT_PARAMS_VH",
        "`define NMSAT_PARAMS_VH",
        "",
        "// SATParams fields (nmsat/hw/params.py)",
    ]

    def define(name: str, value: Any) -> None:
        lines.append(f"`define NMSAT_{name.upper()} {_verilog_literal(value)}")

    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if field.name == "nm_patterns":
            define("nm_patterns", ",".join(f"{n}:{m}" for n, m in value))
            define("nm_pattern_count", len(value))
            for index, (n, m) in enumerate(value):
                define(f"nm_pattern_{index}_n", n)
                define(f"nm_pattern_{index}_m", m)
        elif field.name == "queue_depths":
            for queue, depth in zip(QUEUE_NAMES, value, strict=True):
                define(f"queue_depth_{queue}", depth)
        else:
            define(field.name, value)
    lines += ["", "// Derived sizes and the ISA's widths"]
    for name in ("pe_count", "m_max", "index_bits"):
        define(name, getattr(params, name))
    for buffer in Buffer:
        define(f"{buffer.name}_buffer_entries", buffer_entries(buffer, params))
    define("instr_bits", INSTR_BITS)
    define("buffer_addr_bits", BUFFER_ADDR_BITS)
    define("dram_addr_bits", DRAM_ADDR_BITS)
    define("imem_addr_bits", IMEM_ADDR_BITS)
    lines += ["", "`endif", ""]
    return "\n".join(lines)


# -- generation ------------------------------------------------------------------------------


def to_verilog(component: wiring.Component, name: str, *, share: bool = True) -> str:
    """Return ``component`` as Verilog: module ``name``, the shared modules, ``nmsat_ram``.

    Memories become ``nmsat_ram`` instances (module docstring); with ``share`` (the
    default) every :class:`nmsat.hw.shared.Shared` unit is written once and instantiated,
    without it elaborated in place. Source locations and Amaranth's internal attributes are
    left out, so the text does not depend on the machine.
    """
    platform = _VerilogPlatform() if share else _MemoryPlatform()
    text: str = verilog.convert(
        component, name=name, platform=platform, emit_src=False,
        strip_internal_attrs=True,
    )  # fmt: skip
    shared = "".join(f"\n{module_text}" for _, module_text, _ in platform.modules.values())
    return text + shared + _RAM_VERILOG


@dataclasses.dataclass(frozen=True)
class Generated:
    """What :func:`generate` wrote.

    Members
    -------
    paths : tuple of Path
        The Verilog, the port map and the header, in that order.
    verilog_bytes : int
        Size of the Verilog.
    port_count : int
        Top-level ports (``clk`` and ``rst`` included).
    seconds : float
        Wall time of elaboration and conversion.
    """

    paths: tuple[Path, ...]
    verilog_bytes: int
    port_count: int
    seconds: float


def generate(params: SATParams, out_dir: str | Path) -> Generated:
    """Write the Verilog, port map and parameter header of ``params`` into ``out_dir``.

    Each file is written atomically (:func:`nmsat.hw.files.write_atomic`) once all three
    are ready, so a failed conversion leaves earlier outputs untouched. The outputs do not
    depend on the machine (no source paths are embedded).
    """
    began = time.perf_counter()
    top = Accelerator(params, conflict_check=False)  # the detectors are a simulation check
    ports = port_list(top)
    text = to_verilog(top, TOP_NAME)
    port_map = {
        "format": "nmsat-ports",
        "version": 1,
        "top": TOP_NAME,
        "config": params.name,
        "clock": "clk",
        "reset": "rst",
        "ports": ports,
        "metadata": top.metadata.as_json(),
    }
    seconds = time.perf_counter() - began
    out = Path(out_dir)
    paths = (out / VERILOG_FILE, out / PORTS_FILE, out / HEADER_FILE)
    write_atomic(paths[0], text)
    write_atomic(paths[1], json.dumps(port_map, indent=1) + "\n")
    write_atomic(paths[2], params_header(params))
    return Generated(paths, len(text.encode("utf-8")), len(ports), seconds)
