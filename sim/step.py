"""One simulated training step, summarised: cycles, passes, throughput, utilisation, energy.

:func:`simulate_step` compiles a model's BDWP step for a configuration, runs it on the Python
model (:mod:`nmsat.sim.runner`) and prices its events with a named energy table
(:mod:`nmsat.sim.energy`). The result's :meth:`StepSummary.to_json` is what ``nmsat simulate
--json`` writes and what the reports aggregate.

Throughput is given two ways (DESIGN.md section 7): *effective* counts the MACs dense
hardware would execute for the same step (``macs_dense_equivalent``: the N:M skipping counts
as done), *executed* counts the MACs the array performed. Utilisation is executed MACs over
``pe_count * cycles``.

Ref: DESIGN.md sections 6 and 7; PAPER.md (the compute bound 3M / (2N + M)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nmsat.compiler import CompileOptions, Program, compile_model
from nmsat.hw.params import SATParams, format_nm
from nmsat.models.zoo import Model
from nmsat.sim.energy import EnergyBreakdown, estimate_energy, load_energy_table
from nmsat.sim.runner import PASS_NAMES, StepResult, simulate

__all__ = ["StepSummary", "simulate_step"]


@dataclasses.dataclass(frozen=True)
class StepSummary:
    """A simulated step with its configuration, pattern and derived figures.

    Members
    -------
    model, config : str
    batch : int
    nm : (int, int)
    options : CompileOptions
    mode : str
    result : StepResult
    energy : EnergyBreakdown
    clock_hz : float
    pe_count : int
    """

    model: str
    config: str
    batch: int
    nm: tuple[int, int]
    options: CompileOptions
    mode: str
    result: StepResult
    energy: EnergyBreakdown
    clock_hz: float
    pe_count: int

    @property
    def cycles(self) -> int:
        """Cycles of the step on the accelerator (host work excluded)."""
        return self.result.cycles

    @property
    def seconds(self) -> float:
        """``cycles / clock_hz``."""
        return self.result.cycles / self.clock_hz

    @property
    def utilization(self) -> float:
        """Executed MACs over ``pe_count * cycles``."""
        return self.result.events.macs_executed / max(1, self.pe_count * self.result.cycles)

    @property
    def effective_tmacs(self) -> float:
        """Dense-equivalent MACs per second, in units of 10^12."""
        return self.result.events.macs_dense_equivalent / max(self.seconds, 1e-30) / 1e12

    @property
    def executed_tmacs(self) -> float:
        """Executed MACs per second, in units of 10^12."""
        return self.result.events.macs_executed / max(self.seconds, 1e-30) / 1e12

    def to_json(self) -> dict[str, Any]:
        """The JSON record of ``nmsat simulate --json``."""
        ev = self.result.events
        return {
            "model": self.model,
            "config": self.config,
            "batch": self.batch,
            "nm": format_nm(*self.nm) if self.nm[0] < self.nm[1] else "dense",
            "mode": self.mode,
            "options": dataclasses.asdict(self.options),
            "cycles": self.result.cycles,
            "seconds": self.seconds,
            "passes": {k: self.result.passes[k] for k in PASS_NAMES},
            "init_cycles": self.result.init_cycles,
            "macs_executed": ev.macs_executed,
            "macs_dense_equivalent": ev.macs_dense_equivalent,
            "utilization": self.utilization,
            "throughput_effective_tmacs": self.effective_tmacs,
            "throughput_executed_tmacs": self.executed_tmacs,
            "energy_pj": self.energy.total_pj,
            "energy_table": self.energy.table,
            "energy_breakdown_pj": self.energy.to_dict(),
            "instructions": self.result.instructions,
            "segments": self.result.segments,
            "host_ops": [
                {"kind": h.kind, "layer": h.layer, "elements": h.elements}
                for h in self.result.host_ops
            ],
            "events": ev.to_dict(),
        }


def simulate_step(
    model: Model,
    nm: tuple[int, int],
    params: SATParams,
    options: CompileOptions | None = None,
    *,
    mode: str = "perf",
    sparsity: str = "bdwp",
    energy_table: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    program: Program | None = None,
) -> StepSummary:
    """Compile (unless ``program`` is given), run and price one training step."""
    options = options or CompileOptions()
    prog = program or compile_model(model, nm, params, options, sparsity=sparsity)
    result = simulate(prog, params, mode, progress=progress)
    table = load_energy_table(energy_table or params.energy_table)
    energy = estimate_energy(result.events, result.cycles, params, table)
    return StepSummary(
        model.name,
        params.name,
        model.batch,
        nm,
        options,
        mode,
        result,
        energy,
        params.clock_hz,
        params.pe_count,
    )
