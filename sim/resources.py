"""An analytic ESTIMATE of the FPGA resources of a configuration (DSP, LUT, FF, BRAM, URAM).

:func:`estimate_resources` prices every unit of the accelerator (the STCE's PEs, the SORE and
WUVE lanes, the DMA, the controller) with per-instance costs that are linear in numbers
derived from :class:`~nmsat.hw.params.SATParams` (:data:`DRIVERS`), and maps every on-chip
memory (the five buffers, bank by bank, and the instruction memory) to URAM288 or BRAM36
blocks by capacity. The costs are data in a NAMED table, ``configs/resources/<name>.yaml``,
that carries its source, the device's totals and an assumption next to every figure; the
shipped ``xcvu9p_estimate`` targets the XCVU9P of the paper's VCU1525 board.

These are ESTIMATES from the gateware's structure, not synthesis results: every output says
so and names its table. Yosys ``synth_xilinx`` (or Vivado) reports of the generated Verilog
supersede them; the coefficients are meant to be calibrated against those reports.

Ref: AMD UG573, UltraScale Architecture Memory Resources (BRAM36 shapes, URAM288 4K x 72).
Ref: AMD UG579, UltraScale Architecture DSP Slice (DSP48E2, 27 x 18 multiplier).
Ref: PAPER.md (XCVU9P totals); docs/decisions.md (about 500 LUTs and one DSP48E2 per PE).
Ref: K. E. Batcher, "Sorting networks and their applications", AFIPS 1968 (bitonic network
     size, the SORE lane's compare-exchanges).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nmsat.hw.errors import ConfigError
from nmsat.hw.files import read_yaml_mapping, resolve_data_file
from nmsat.hw.params import SATParams, presets_dir

__all__ = [
    "DEFAULT_TABLE",
    "DRIVERS",
    "KIND_LABELS",
    "RESOURCE_KINDS",
    "Device",
    "MemoryModel",
    "ResourceEstimate",
    "ResourceTable",
    "Resources",
    "UnitModel",
    "estimate_resources",
    "load_resource_table",
    "resource_table_names",
    "resource_tables_dir",
]

#: The resources counted, in report order.
RESOURCE_KINDS = ("dsp", "lut", "ff", "bram36", "uram")

#: Names of the kinds in tables and plots.
KIND_LABELS: Mapping[str, str] = MappingProxyType(
    {"dsp": "DSP48E2", "lut": "LUT", "ff": "FF", "bram36": "BRAM36", "uram": "URAM"}
)

#: Default table: the XCVU9P of the VCU1525 board.
DEFAULT_TABLE = "xcvu9p_estimate"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LOGIC_KINDS = ("dsp", "lut", "ff")


def _bitonic_compare_exchanges(m: int) -> int:
    """Compare-exchanges of a bitonic sorting network on ``m = 2**k`` inputs (Batcher)."""
    k = int(math.log2(m)) if m > 1 else 0
    return (m // 2) * k * (k + 1) // 2


def _queue_lutram_blocks(p: SATParams) -> int:
    return sum(math.ceil(depth / 32) for depth in p.queue_depths)


#: Numbers a unit's cost may be linear in, with what each one is.
DRIVERS: Mapping[str, tuple[str, Callable[[SATParams], float]]] = MappingProxyType(
    {
        "one": ("the constant 1 (a unit present once)", lambda p: 1),
        "pe_count": ("array_rows x array_cols", lambda p: p.pe_count),
        "array_rows": ("PE rows", lambda p: p.array_rows),
        "array_cols": ("PE columns", lambda p: p.array_cols),
        "m_max": ("largest supported group size M (1 when only dense)", lambda p: p.m_max),
        "index_bits": ("bits of one N:M index", lambda p: p.index_bits),
        "interleave": ("accumulators per PE", lambda p: p.interleave),
        "adder_latency": ("FP32 adder stages", lambda p: p.adder_latency),
        "multiplier_latency": ("FP32 multiplier stages", lambda p: p.multiplier_latency),
        "sore_lanes": ("SORE lanes", lambda p: p.sore_lanes),
        "sore_compare_exchanges": (
            "compare-exchanges of a bitonic network on m_max inputs",
            lambda p: _bitonic_compare_exchanges(p.m_max),
        ),
        "wuve_lanes": ("WUVE lanes", lambda p: p.wuve_lanes),
        "dram_bits_per_cycle": (
            "external memory bus width, 8 x dram_bytes_per_cycle",
            lambda p: 8 * p.dram_bytes_per_cycle,
        ),
        "dma_shifter_bits": (
            "bits x stages of a byte aligner: 8B log2(B), B = dram_bytes_per_cycle",
            lambda p: 8 * p.dram_bytes_per_cycle * math.log2(p.dram_bytes_per_cycle),
        ),
        "queue_lutram_blocks": (
            "started 32-entry blocks of the five instruction queues",
            _queue_lutram_blocks,
        ),
    }
)


@dataclasses.dataclass(frozen=True)
class Resources:
    """Counts of each resource kind (:data:`RESOURCE_KINDS`)."""

    dsp: int = 0
    lut: int = 0
    ff: int = 0
    bram36: int = 0
    uram: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, k) + getattr(other, k) for k in RESOURCE_KINDS))

    def to_dict(self) -> dict[str, int]:
        """Return ``{kind: count}`` in :data:`RESOURCE_KINDS` order."""
        return {k: getattr(self, k) for k in RESOURCE_KINDS}


@dataclasses.dataclass(frozen=True)
class Device:
    """An FPGA's name, part number and totals of each resource kind."""

    name: str
    part: str
    totals: Resources


@dataclasses.dataclass(frozen=True)
class UnitModel:
    """The cost of one kind of unit: ``count`` instances of ``base + sum(coef x driver)``.

    Members
    -------
    count : str
        The driver (:data:`DRIVERS`) that gives the number of instances.
    costs : mapping of str to mapping of str to float
        Per logic kind (``dsp``, ``lut``, ``ff``): ``{"base": b, driver: coefficient, ...}``.
    """

    count: str
    costs: Mapping[str, Mapping[str, float]]

    def per_instance(self, params: SATParams) -> dict[str, float]:
        """Cost of one instance for ``params``, by logic kind."""
        out = {}
        for kind in _LOGIC_KINDS:
            terms = self.costs.get(kind, {})
            total = float(terms.get("base", 0.0))
            for driver, coef in terms.items():
                if driver != "base":
                    total += coef * DRIVERS[driver][1](params)
            out[kind] = total
        return out


@dataclasses.dataclass(frozen=True)
class MemoryModel:
    """How memories map to block RAMs (see configs/resources/xcvu9p_estimate.yaml)."""

    uram_depth: int
    uram_width_bits: int
    bram36_shapes: tuple[tuple[int, int], ...]
    element_word_bits: int
    uram_min_bank_bytes: int
    instruction_words: int
    instruction_width_bits: int

    def blocks(self, depth: int, width_bits: int, use_uram: bool) -> tuple[int, int]:
        """Return ``(bram36, uram)`` blocks for one memory of ``depth`` words of ``width_bits``."""
        if use_uram:
            uram = math.ceil(width_bits / self.uram_width_bits) * math.ceil(depth / self.uram_depth)
            return 0, uram
        bram = min(math.ceil(width_bits / w) * math.ceil(depth / d) for d, w in self.bram36_shapes)
        return bram, 0

    def buffer_blocks(self, total_bits: int, element_bits: int, banks: int) -> Resources:
        """Blocks of a buffer of ``total_bits`` in ``banks`` banks of packed elements.

        Elements of 16 or 32 bits pack ``element_word_bits`` per word (parity bits unused);
        narrower entries (N:M indices) pack the block's full word.
        """
        bank_bits = total_bits // banks
        entries = bank_bits // element_bits
        packed_bits = self.element_word_bits if element_bits >= 8 else self.uram_width_bits
        per_word = max(1, packed_bits // element_bits)
        words = math.ceil(entries / per_word)
        use_uram = bank_bits >= 8 * self.uram_min_bank_bytes
        bram, uram = self.blocks(words, self.uram_width_bits, use_uram)
        return Resources(bram36=bram * banks, uram=uram * banks)


@dataclasses.dataclass(frozen=True)
class ResourceTable:
    """A named resource model: the device, the memory mapping and the unit costs."""

    name: str
    description: str
    source: str
    device: Device
    memory: MemoryModel
    units: Mapping[str, UnitModel]


@dataclasses.dataclass(frozen=True)
class ResourceEstimate:
    """Estimated resources of one configuration, by unit, with the table they came from.

    Members
    -------
    table : str
        Name of the :class:`ResourceTable`; outputs print it beside every figure.
    device : Device
        The FPGA the percentages refer to.
    units : mapping of str to Resources
        Per unit (``pe``, ``sore_lane``, ..., ``buffer_act``, ..., ``instruction_memory``),
        all instances together.
    """

    table: str
    device: Device
    units: Mapping[str, Resources]

    @property
    def total(self) -> Resources:
        """The sum over units."""
        out = Resources()
        for res in self.units.values():
            out = out + res
        return out

    def percent(self) -> dict[str, float]:
        """Percentage of the device's total of each kind."""
        total, dev = self.total, self.device.totals
        return {k: 100.0 * getattr(total, k) / getattr(dev, k) for k in RESOURCE_KINDS}

    @property
    def max_percent(self) -> float:
        """The largest percentage over the kinds: the binding resource."""
        return max(self.percent().values())

    @property
    def fits(self) -> bool:
        """Whether every kind is within the device's total."""
        return self.max_percent <= 100.0

    def to_dict(self) -> dict[str, Any]:
        """The estimate as JSON-ready data."""
        return {
            "table": self.table,
            "device": self.device.name,
            "total": self.total.to_dict(),
            "percent": self.percent(),
            "fits": self.fits,
            "units": {name: res.to_dict() for name, res in self.units.items()},
        }

    def format_table(self) -> str:
        """A plain-text table by unit, with totals and the device's percentages."""
        head = f"{'unit':<20}" + "".join(f"{KIND_LABELS[k]:>11}" for k in RESOURCE_KINDS)
        lines = [
            f"resource ESTIMATE ({self.table}; not a synthesis result) on {self.device.name}",
            head,
        ]
        for name, res in self.units.items():
            lines.append(f"{name:<20}" + "".join(f"{getattr(res, k):>11,}" for k in RESOURCE_KINDS))
        total, pct = self.total, self.percent()
        lines.append(
            f"{'total':<20}" + "".join(f"{getattr(total, k):>11,}" for k in RESOURCE_KINDS)
        )
        lines.append(f"{'% of device':<20}" + "".join(f"{pct[k]:>10.1f}%" for k in RESOURCE_KINDS))
        return "\n".join(lines)


# -- estimating ------------------------------------------------------------------------------


def estimate_resources(params: SATParams, table: ResourceTable | None = None) -> ResourceEstimate:
    """Estimate the resources of ``params`` with ``table`` (default :data:`DEFAULT_TABLE`).

    Logic units cost ``count x (base + sum(coef x driver))`` of each of DSP, LUT and FF,
    rounded up per unit. Buffers are ``buffer_banks`` banks each (the index buffer holds
    ``index_bits`` per weight entry); a bank of at least ``uram_min_bank_bytes`` maps to
    URAM288, a smaller one to the best-shaped BRAM36. The instruction memory is one memory of
    ``instruction_words`` x ``instruction_width_bits``.
    """
    table = table or load_resource_table(DEFAULT_TABLE)
    units: dict[str, Resources] = {}
    for name, unit in table.units.items():
        count = DRIVERS[unit.count][1](params)
        cost = unit.per_instance(params)
        units[name] = Resources(**{k: math.ceil(count * cost[k] - 1e-9) for k in _LOGIC_KINDS})
    mem = table.memory
    buffers = {
        "act": (params.act_buffer_bytes * 8, 16),
        "wgt": (params.wgt_buffer_bytes * 8, 16),
        "idx": (params.idx_buffer_bits, params.index_bits),
        "acc": (params.acc_buffer_bytes * 8, 32),
        "vec": (params.vec_buffer_bytes * 8, 32),
    }
    for name, (bits, element_bits) in buffers.items():
        units[f"buffer_{name}"] = mem.buffer_blocks(bits, element_bits, params.buffer_banks)
    words, width = mem.instruction_words, mem.instruction_width_bits
    use_uram = words * width >= 8 * mem.uram_min_bank_bytes
    bram, uram = mem.blocks(words, width, use_uram)
    units["instruction_memory"] = Resources(bram36=bram, uram=uram)
    return ResourceEstimate(table.name, table.device, MappingProxyType(units))


# -- loading ---------------------------------------------------------------------------------


def resource_tables_dir() -> Path:
    """Return the folder of the named tables (``configs/resources/`` of the package)."""
    return presets_dir() / "resources"


def resource_table_names() -> tuple[str, ...]:
    """Return the names of the tables in ``configs/resources/``, sorted."""
    return tuple(sorted(p.stem for p in resource_tables_dir().glob("*.yaml")))


def load_resource_table(source: str | Path = DEFAULT_TABLE) -> ResourceTable:
    """Load a resource table from a table name or a YAML file.

    Parameters
    ----------
    source
        A name from :func:`resource_table_names` (``"xcvu9p_estimate"``) or a path to a YAML
        file with the same keys.

    Raises
    ------
    ConfigError
        In one line naming the file, the key and the rule broken.
    """
    path, _ = resolve_data_file(
        source, resource_tables_dir(), "resource table", "table", resource_table_names()
    )
    data = read_yaml_mapping(path)
    try:
        return _from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_TOP_KEYS = ("name", "description", "source", "device", "memory", "units")
_DEVICE_KEYS = ("name", "part", *RESOURCE_KINDS)
_MEMORY_KEYS = tuple(f.name for f in dataclasses.fields(MemoryModel))


def _mapping(value: Any, where: str, keys: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if keys is not None:
        unknown = sorted(set(value) - set(keys), key=str)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(keys)}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise ConfigError(f"{where}.{missing[0]}: missing")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: must be a positive integer, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def _from_mapping(data: Any) -> ResourceTable:
    top = _mapping(data, "table", _TOP_KEYS)
    name = _text(top["name"], "name")
    if not _NAME_RE.match(name):
        raise ConfigError(f"name: must be a lower-case name like 'xcvu9p_estimate', got {name!r}")
    dev = _mapping(top["device"], "device", _DEVICE_KEYS)
    device = Device(
        _text(dev["name"], "device.name"),
        _text(dev["part"], "device.part"),
        Resources(**{k: _positive_int(dev[k], f"device.{k}") for k in RESOURCE_KINDS}),
    )
    mem = _mapping(top["memory"], "memory", _MEMORY_KEYS)
    shapes = mem["bram36_shapes"]
    if not isinstance(shapes, list) or not shapes:
        raise ConfigError(
            f"memory.bram36_shapes: expected a list of [depth, width], got {shapes!r}"
        )
    parsed: list[tuple[int, int]] = []
    for shape in shapes:
        if not isinstance(shape, list) or len(shape) != 2:
            raise ConfigError(f"memory.bram36_shapes: expected [depth, width], got {shape!r}")
        parsed.append(
            (
                _positive_int(shape[0], "memory.bram36_shapes depth"),
                _positive_int(shape[1], "memory.bram36_shapes width"),
            )
        )
    memory = MemoryModel(
        bram36_shapes=tuple(parsed),
        **{k: _positive_int(mem[k], f"memory.{k}") for k in _MEMORY_KEYS if k != "bram36_shapes"},
    )
    units: dict[str, UnitModel] = {}
    for unit_name, spec in _mapping(top["units"], "units", None).items():
        where = f"units.{unit_name}"
        body = _mapping(spec, where, None)
        unknown = sorted(set(body) - {"count", *_LOGIC_KINDS}, key=str)
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}: unknown key; allowed: count, {', '.join(_LOGIC_KINDS)}"
            )
        count = body.get("count")
        if count not in DRIVERS:
            raise ConfigError(f"{where}.count: must be one of {', '.join(DRIVERS)}, got {count!r}")
        costs: dict[str, Mapping[str, float]] = {}
        for kind in _LOGIC_KINDS:
            terms = _mapping(body.get(kind, {}), f"{where}.{kind}", None)
            for driver in terms:
                if driver != "base" and driver not in DRIVERS:
                    raise ConfigError(
                        f"{where}.{kind}.{driver}: unknown driver; allowed: base, "
                        f"{', '.join(DRIVERS)}"
                    )
            costs[kind] = MappingProxyType(
                {d: _number(v, f"{where}.{kind}.{d}") for d, v in terms.items()}
            )
        units[str(unit_name)] = UnitModel(str(count), MappingProxyType(costs))
    return ResourceTable(
        name,
        _text(top["description"], "description"),
        _text(top["source"], "source"),
        device,
        memory,
        MappingProxyType(units),
    )
