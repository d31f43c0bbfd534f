"""Event counts of a run on the accelerator: what the energy model and the reports consume.

Every instruction the Python model executes returns one :class:`Events` record; a run's record
is their sum (STYLE.md G13: a frozen record, not loose counters). Counts are exact integers,
never estimates: the model derives them from the instruction fields and SATParams with the
same fold structure as the cycle formulas of docs/isa.md.

Ref: DESIGN.md sections 6 and 7 (events feed energy = events x energy per event + static power
     x time); SCALE-Sim (Samajdar et al., ISPASS 2020) counts SRAM reads per fold the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["EVENT_FIELDS", "Events"]


@dataclasses.dataclass(frozen=True)
class Events:
    """Counts of the energy-relevant events of one instruction or one run.

    Members
    -------
    macs_dense : int
        FP16 x FP16 -> FP32 multiply-accumulates executed by dense GEMMs (``n == m``).
    macs_sparse : int
        Multiply-accumulates executed by N:M GEMMs (compressed: ``rows * cols * depth * n / m``).
    macs_dense_equivalent : int
        ``rows * cols * depth`` summed over every GEMM: what dense hardware would execute for
        the same result. Effective throughput counts these; executed throughput counts
        ``macs_dense + macs_sparse``.
    act_read_bytes, act_write_bytes, wgt_read_bytes, wgt_write_bytes, idx_read_bytes,
    idx_write_bytes, acc_read_bytes, acc_write_bytes, vec_read_bytes, vec_write_bytes : int
        On-chip buffer traffic in bytes, by buffer, as the units access them.
    dram_read_bytes, dram_write_bytes : int
        External memory traffic of LOAD (read) and STORE (write).
    sore_groups : int
        M-groups ranked by the SORE (PRUNE).
    sore_compares : int
        Compare-exchange operations of the SORE's bitonic networks.
    wuve_elements : int
        Elements processed by the WUVE (VEC and UPDATE).
    wuve_fp32_adds, wuve_fp32_muls : int
        FP32 additions and multiplications of the WUVE.
    instructions : int
        Instructions retired (HALT and NOP included).
    busy_load_cycles, busy_compute_cycles, busy_prune_cycles, busy_update_cycles,
    busy_store_cycles : int
        Cycles each queue's unit spent executing instructions; a run's idle cycles of a unit
        are its total cycles minus these.
    """

    macs_dense: int = 0
    macs_sparse: int = 0
    macs_dense_equivalent: int = 0
    act_read_bytes: int = 0
    act_write_bytes: int = 0
    wgt_read_bytes: int = 0
    wgt_write_bytes: int = 0
    idx_read_bytes: int = 0
    idx_write_bytes: int = 0
    acc_read_bytes: int = 0
    acc_write_bytes: int = 0
    vec_read_bytes: int = 0
    vec_write_bytes: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    sore_groups: int = 0
    sore_compares: int = 0
    wuve_elements: int = 0
    wuve_fp32_adds: int = 0
    wuve_fp32_muls: int = 0
    instructions: int = 0
    busy_load_cycles: int = 0
    busy_compute_cycles: int = 0
    busy_prune_cycles: int = 0
    busy_update_cycles: int = 0
    busy_store_cycles: int = 0

    def __add__(self, other: Events) -> Events:
        if not isinstance(other, Events):
            return NotImplemented
        return Events(**{f: getattr(self, f) + getattr(other, f) for f in EVENT_FIELDS})

    @property
    def macs_executed(self) -> int:
        """Multiply-accumulates the array executed (dense and N:M)."""
        return self.macs_dense + self.macs_sparse

    def to_dict(self) -> dict[str, int]:
        """Return the counts as a plain dictionary (for JSON)."""
        return {f: getattr(self, f) for f in EVENT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Events:
        """Build a record from :meth:`to_dict` output; unknown keys are an error."""
        unknown = sorted(set(data) - set(EVENT_FIELDS))
        if unknown:
            raise KeyError(f"unknown event {unknown[0]!r}; events: {', '.join(EVENT_FIELDS)}")
        return cls(**{k: int(v) for k, v in data.items()})


#: Names of the counters, in declaration order.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Events))
