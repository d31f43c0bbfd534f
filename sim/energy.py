"""Energy of a run: event counts x energy per event + static power x time.

The energy of a run is computed from its :class:`~nmsat.sim.events.Events` record, its cycle
count and a NAMED table of energies per event stored as data in ``configs/energy/<name>.yaml``
(DESIGN.md section 7). A table carries its name, its source and, for every figure, a comment
with the figure's origin; a report names the table it used and never mixes two. Shipped
tables: ``horowitz45`` (default, 45 nm ASIC figures) and ``fpga_vu9p_estimate`` (XCVU9P,
labelled estimates). A user table is any YAML file with the same keys.

Every counter of :class:`~nmsat.sim.events.Events` is either priced (:data:`PRICED_EVENTS`,
which also names the breakdown component it adds to) or free (:data:`FREE_EVENTS`, with the
reason); tests/sim/test_energy.py checks that the two lists cover the record.

Ref: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014
     (45 nm energies per operation and per access: configs/energy/horowitz45.yaml).
Ref: I. Kuon and J. Rose, "Measuring the gap between FPGAs and ASICs", IEEE TCAD 2007, and
     A. Stillmaker and B. Baas, Integration 58, 2017 (configs/energy/fpga_vu9p_estimate.yaml).
Ref: Y. N. Wu, J. S. Emer and V. Sze, "Accelergy", ICCAD 2019 (energy = action counts x
     energy per action, from a named table per component).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nmsat.hw.errors import ConfigError
from nmsat.hw.files import read_yaml_mapping, resolve_data_file
from nmsat.hw.params import SATParams, presets_dir
from nmsat.sim.events import Events

__all__ = [
    "FREE_EVENTS",
    "PRICED_EVENTS",
    "EnergyBreakdown",
    "EnergyTable",
    "energy_table_names",
    "energy_tables_dir",
    "estimate_energy",
    "event_prices_pj",
    "gflops_per_watt",
    "load_energy_table",
]

_PJ_PER_J = 1e12

# The rule SATParams applies to its energy_table field, so a configuration can name any table.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RULE = "a lower-case name like 'horowitz45' (a-z, 0-9, '_')"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnergyTable:
    """Energies per event of one technology, validated on construction.

    Load with :func:`load_energy_table`; direct construction validates the same way. Energies
    are in pJ per event (per byte for memory traffic), power in W. Integer values are stored
    as floats.
    """

    name: str
    """Name of the table, reported with every result (the file's stem for shipped tables)."""

    description: str
    """One-paragraph summary: technology, what is estimated, what is left out."""

    source: str
    """Citation of the figures' origins (the YAML file comments each figure)."""

    technology: str
    """Process and supply voltage the figures refer to."""

    mac_dense_pj: float
    """One FP16 x FP16 -> FP32 multiply-accumulate of a dense GEMM (``Events.macs_dense``)."""

    mac_sparse_pj: float
    """One multiply-accumulate of an N:M GEMM, operand selection included
    (``Events.macs_sparse``)."""

    sram_read_pj_per_byte: float
    """Reading one byte from an SRAM of ``sram_ref_bytes`` (every buffer's ``*_read_bytes``)."""

    sram_write_pj_per_byte: float
    """Writing one byte to an SRAM of ``sram_ref_bytes`` (every buffer's ``*_write_bytes``)."""

    sram_ref_bytes: float
    """Capacity of the SRAM the two figures above were given for, in bytes (> 0)."""

    sram_capacity_exponent: float
    """Growth of access energy with capacity, in [0, 1]: a buffer bank of ``b`` bytes costs
    ``(b / sram_ref_bytes) ** sram_capacity_exponent`` times the reference figures (0.5: the
    square-root rule; 0: no growth)."""

    dram_read_pj_per_byte: float
    """Reading one byte from external memory (``Events.dram_read_bytes``)."""

    dram_write_pj_per_byte: float
    """Writing one byte to external memory (``Events.dram_write_bytes``)."""

    sore_compare_pj: float
    """One compare-exchange of the SORE's networks (``Events.sore_compares``)."""

    wuve_element_pj: float
    """Per-element routing, control and pipeline registers of the WUVE, arithmetic excluded
    (``Events.wuve_elements``)."""

    wuve_fp32_add_pj: float
    """One FP32 addition of the WUVE (``Events.wuve_fp32_adds``)."""

    wuve_fp32_mul_pj: float
    """One FP32 multiplication of the WUVE (``Events.wuve_fp32_muls``)."""

    instruction_pj: float
    """Fetching and decoding one 256-bit instruction (``Events.instructions``)."""

    static_power_w: float
    """Power drawn whatever the activity (leakage), in W; charged for every cycle of a run."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _TEXT_FIELDS:
                _check_text(field.name, value)
            else:
                # Frozen: store numbers as floats through object.__setattr__.
                object.__setattr__(self, field.name, _check_number(field.name, value))

    def to_dict(self) -> dict[str, Any]:
        """Return the table as YAML-ready data (the inverse of loading)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_TEXT_FIELDS = ("name", "description", "source", "technology")

# Allowed range of each number other than the default "non-negative": (rule, check).
_NUMBER_RULES: dict[str, tuple[str, Any]] = {
    "sram_ref_bytes": ("a positive number of bytes", lambda v: v > 0),
    "sram_capacity_exponent": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "static_power_w": ("a non-negative number of watts", lambda v: v >= 0),
}
_DEFAULT_RULE: tuple[str, Any] = ("a non-negative number of pJ", lambda v: v >= 0)


def _check_text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    if key == "name" and not _NAME_RE.match(value):
        raise ConfigError(f"name: must be {_NAME_RULE}, got {value!r}")


def _check_number(key: str, value: Any) -> float:
    rule, ok = _NUMBER_RULES.get(key, _DEFAULT_RULE)
    # bool is an int in Python; a table never means True for an energy.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be {rule}, got {value!r}")
    if not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{key}: must be {rule}, got {value!r}")
    return float(value)


# -- events and prices -----------------------------------------------------------------------

#: The buffers of the ISA, by the prefix of their Events counters.
_BUFFERS = ("act", "wgt", "idx", "acc", "vec")

#: Every priced counter of Events and the EnergyBreakdown component its energy adds to.
PRICED_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "macs_dense": "mac_dense_pj",
        "macs_sparse": "mac_sparse_pj",
        **{f"{b}_{rw}_bytes": f"sram_{b}_pj" for b in _BUFFERS for rw in ("read", "write")},
        "dram_read_bytes": "dram_pj",
        "dram_write_bytes": "dram_pj",
        "sore_compares": "sore_pj",
        "wuve_elements": "wuve_pj",
        "wuve_fp32_adds": "wuve_pj",
        "wuve_fp32_muls": "wuve_pj",
        "instructions": "control_pj",
    }
)

#: Counters of Events that cost no energy of their own, each for a stated reason.
FREE_EVENTS: tuple[str, ...] = (
    # Work dense hardware would have done; the array executes macs_dense + macs_sparse only.
    "macs_dense_equivalent",
    # A group's cost is its compare-exchanges (sore_compares) and its buffer traffic.
    "sore_groups",
    # Time, not work: busy and idle cycles cost static power x time, which covers every cycle
    # of the run; switching energy is charged per event above.
    "busy_load_cycles",
    "busy_compute_cycles",
    "busy_prune_cycles",
    "busy_update_cycles",
    "busy_store_cycles",
)


def _bank_bytes(params: SATParams, buffer: str) -> float:
    # One access reads or writes one bank, so a bank's capacity sets the access energy.
    total = {
        "act": params.act_buffer_bytes,
        "wgt": params.wgt_buffer_bytes,
        "idx": params.idx_buffer_bits / 8,
        "acc": params.acc_buffer_bytes,
        "vec": params.vec_buffer_bytes,
    }[buffer]
    return total / params.buffer_banks


def event_prices_pj(table: EnergyTable, params: SATParams) -> dict[str, float]:
    """Return the energy of one unit of every priced counter, in pJ, for one configuration.

    Buffer traffic is priced per byte with the table's SRAM figures scaled to the bank
    capacity of each buffer (``buffer bytes / buffer_banks``; the index buffer holds
    ``idx_buffer_bits / 8`` bytes) by ``sram_capacity_exponent``.

    Parameters
    ----------
    table
        The energy table.
    params
        The configuration whose buffer and bank sizes scale the SRAM figures.

    Returns
    -------
    dict[str, float]
        One entry per key of :data:`PRICED_EVENTS`.
    """
    prices = {
        "macs_dense": table.mac_dense_pj,
        "macs_sparse": table.mac_sparse_pj,
        "dram_read_bytes": table.dram_read_pj_per_byte,
        "dram_write_bytes": table.dram_write_pj_per_byte,
        "sore_compares": table.sore_compare_pj,
        "wuve_elements": table.wuve_element_pj,
        "wuve_fp32_adds": table.wuve_fp32_add_pj,
        "wuve_fp32_muls": table.wuve_fp32_mul_pj,
        "instructions": table.instruction_pj,
    }
    for buffer in _BUFFERS:
        ratio = _bank_bytes(params, buffer) / table.sram_ref_bytes
        scale = ratio**table.sram_capacity_exponent
        prices[f"{buffer}_read_bytes"] = table.sram_read_pj_per_byte * scale
        prices[f"{buffer}_write_bytes"] = table.sram_write_pj_per_byte * scale
    return prices


# -- the breakdown ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnergyBreakdown:
    """Energy of a run by component, in pJ, and the table it came from.

    Members
    -------
    table : str
        Name of the :class:`EnergyTable` used; reports print it next to every figure.
    mac_dense_pj, mac_sparse_pj : float
        STCE multiply-accumulates of dense and of N:M GEMMs.
    sram_act_pj, sram_wgt_pj, sram_idx_pj, sram_acc_pj, sram_vec_pj : float
        Reads and writes of each on-chip buffer.
    dram_pj : float
        External memory reads and writes.
    sore_pj : float
        SORE compare-exchanges.
    wuve_pj : float
        WUVE per-element overhead, FP32 additions and multiplications.
    control_pj : float
        Instruction fetch and decode.
    static_pj : float
        Static power x run time.
    """

    table: str
    mac_dense_pj: float = 0.0
    mac_sparse_pj: float = 0.0
    sram_act_pj: float = 0.0
    sram_wgt_pj: float = 0.0
    sram_idx_pj: float = 0.0
    sram_acc_pj: float = 0.0
    sram_vec_pj: float = 0.0
    dram_pj: float = 0.0
    sore_pj: float = 0.0
    wuve_pj: float = 0.0
    control_pj: float = 0.0
    static_pj: float = 0.0

    @property
    def mac_pj(self) -> float:
        """Multiply-accumulates of the STCE, dense and N:M."""
        return self.mac_dense_pj + self.mac_sparse_pj

    @property
    def sram_pj(self) -> float:
        """Traffic of all on-chip buffers."""
        act_wgt_idx = self.sram_act_pj + self.sram_wgt_pj + self.sram_idx_pj
        return act_wgt_idx + self.sram_acc_pj + self.sram_vec_pj

    @property
    def dynamic_pj(self) -> float:
        """Every component that counts events: everything but static energy."""
        memory = self.sram_pj + self.dram_pj
        return self.mac_pj + memory + self.sore_pj + self.wuve_pj + self.control_pj

    @property
    def total_pj(self) -> float:
        """Dynamic plus static energy."""
        return self.dynamic_pj + self.static_pj

    def to_dict(self) -> dict[str, str | float]:
        """Return the components, the subtotals and the table name as plain data (for JSON)."""
        out: dict[str, str | float] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
        }
        for name in ("mac_pj", "sram_pj", "dynamic_pj", "total_pj"):
            out[name] = getattr(self, name)
        return out


def estimate_energy(
    events: Events, cycles: int, params: SATParams, table: EnergyTable
) -> EnergyBreakdown:
    """Estimate the energy of a run from its events and its cycle count.

    Dynamic energy is the sum over :data:`PRICED_EVENTS` of count x price
    (:func:`event_prices_pj`), so it is linear in the events; static energy is
    ``table.static_power_w * cycles / params.clock_hz``, converted to pJ.

    Parameters
    ----------
    events
        Event counts of the run.
    cycles
        Cycle count of the run (docs/isa.md: from the first fetch to ``done``), >= 0.
    params
        The configuration that ran: its clock turns cycles into time, its buffer sizes
        scale the SRAM figures.
    table
        The energy table; its name is carried into the result.

    Raises
    ------
    ValueError
        If ``cycles`` is negative or not an integer.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"cycles: must be a non-negative integer, got {cycles!r}")
    prices = event_prices_pj(table, params)
    parts: dict[str, float] = {}
    for event, component in PRICED_EVENTS.items():
        parts[component] = parts.get(component, 0.0) + getattr(events, event) * prices[event]
    static_pj = table.static_power_w * (cycles / params.clock_hz) * _PJ_PER_J
    return EnergyBreakdown(table=table.name, static_pj=static_pj, **parts)


def gflops_per_watt(macs: float, energy_pj: float) -> float:
    """Return energy efficiency in GFLOPS/W: ``2 * macs`` FLOPs (a MAC is a multiply and an
    add) per joule of ``energy_pj``, over 10^9.

    With dense-equivalent MACs it is the *effective* efficiency, with executed MACs the
    *executed* one (DESIGN.md section 7); 0 when ``energy_pj`` is 0.
    """
    if energy_pj <= 0:
        return 0.0
    return 2 * float(macs) / (energy_pj * 1e-12) / 1e9


# -- loading ---------------------------------------------------------------------------------


def energy_tables_dir() -> Path:
    """Return the folder of the named tables (``configs/energy/`` of the installed package)."""
    return presets_dir() / "energy"


def energy_table_names() -> tuple[str, ...]:
    """Return the names of the tables in ``configs/energy/``, sorted."""
    return tuple(sorted(p.stem for p in energy_tables_dir().glob("*.yaml")))


def _from_mapping(data: Mapping[Any, Any]) -> EnergyTable:
    fields = [f.name for f in dataclasses.fields(EnergyTable)]
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{key!r}: keys must be strings; allowed keys: {', '.join(fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise ConfigError(f"{missing[0]}: missing (required keys: {', '.join(fields)})")
    kwargs = dict(data)
    for key, value in data.items():
        # PyYAML (YAML 1.1) reads 1e-3 without a decimal point as a string; accept it as a
        # number. Anything float() rejects stays a string and fails validation.
        if key not in _TEXT_FIELDS and isinstance(value, str):
            with contextlib.suppress(ValueError):
                kwargs[key] = float(value)
    return EnergyTable(**kwargs)


def load_energy_table(source: str | Path) -> EnergyTable:
    """Load an energy table from a table name or a YAML file.

    Parameters
    ----------
    source
        A name from :func:`energy_table_names` (``"horowitz45"``, ``"fpga_vu9p_estimate"``;
        a configuration's ``energy_table``) or a path to a YAML file with the keys of
        :class:`EnergyTable`.

    Raises
    ------
    ConfigError
        In one line naming the file, the key and the rule broken, or the known table names
        when ``source`` is neither a table nor a file. A shipped table's ``name`` must equal
        its file name.
    """
    path, named = resolve_data_file(
        source, energy_tables_dir(), "energy table", "table", energy_table_names()
    )
    data = read_yaml_mapping(path)
    try:
        table = _from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if named and table.name != path.stem:
        raise ConfigError(f"{path}: name: must be {path.stem!r}, got {table.name!r}")
    return table
