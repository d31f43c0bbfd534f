"""One simulated training step with its cycles, MACs and DRAM bytes per layer and pass.

:func:`profile_step` compiles and runs a step in perf mode like
:func:`nmsat.sim.step.simulate_step` (the same program, the same segments in the same order,
the same :class:`~nmsat.sim.step.StepSummary`), and in the same run partitions the cycles by
``(layer, pass)`` with :func:`nmsat.sim.runner.attribute` (each cycle goes to the oldest
running instruction's label), so the per-layer figures of the report cost no second
simulation. The per-layer MACs and DRAM bytes are read from the fields of the layer's GEMM,
LOAD and STORE instructions (MACs ``rows * cols * depth`` dense-equivalent, ``N/M`` of that
executed; ``blocks * planes * rows * cols`` elements moved), the model's event rules.

The program is verified once, after scheduling (the program that runs), not also after
lowering as ``compile_model(check=True)`` does: a report compiles fifty steps, and the second
check costs about a tenth of each. tests/reports/test_speedup.py checks that the summary
equals ``simulate_step``'s and that the layer MACs add up to the step's events.

Ref: docs/decisions.md (per-pass cycles partition the step's timeline by the oldest running
     instruction); S. Williams, A. Waterman and D. Patterson, "Roofline: an insightful visual
     performance model for multicore architectures", CACM 52(4), 2009 (operational
     intensity: operations per byte of DRAM traffic).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from nmsat.compiler import CompileOptions, Op, Phase, compile_model, verify
from nmsat.hw import isa
from nmsat.hw.isa import Opcode
from nmsat.hw.params import SATParams
from nmsat.models.zoo import Model
from nmsat.sim.energy import estimate_energy, load_energy_table
from nmsat.sim.model import RunResult
from nmsat.sim.runner import (
    attribute,
    simulate,
)
from nmsat.sim.step import StepSummary

__all__ = ["GEMM_PASSES", "LayerCost", "profile_step"]

#: The passes whose instructions are GEMMs on the array (the roofline's kernels).
GEMM_PASSES = ("ff", "bp", "wu")

_PRICED = (Opcode.GEMM, Opcode.LOAD, Opcode.STORE)
_GEMM_PHASES = frozenset(p.value for p in (Phase.FF, Phase.BP, Phase.WU))


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What one pass of one layer cost in a step.

    Members
    -------
    layer : str
        The zoo layer.
    phase : str
        ``"ff"``, ``"bp"`` or ``"wu"``.
    cycles : int
        Cycles in which the oldest running instruction is one of this layer's pass (the
        layer-pass cycles add up to the pass's cycles of the step).
    span_cycles : int
        From the first start to the last completion of the pass's instructions, summed over
        segments: the time the pass takes, overlapped work included (the roofline's time;
        ``cycles`` can be much shorter when a pass runs under an older one).
    macs_executed, macs_dense_equivalent : int
        MACs the array performs, and those a dense step would perform.
    dram_bytes : int
        Bytes read and written in external memory by the pass's LOAD and STORE.
    dram_traffic_bytes : int
        The memory beats those transfers occupy times the beat width: every contiguous run
        starts on a new beat (docs/isa.md, ``dma_cycles``), so short runs carry less than a
        beat of data each; this is the traffic the roofline's bandwidth limits.
    """

    layer: str
    phase: str
    cycles: int
    span_cycles: int
    macs_executed: int
    macs_dense_equivalent: int
    dram_bytes: int
    dram_traffic_bytes: int


def _label(op_layer: str, phase: Phase) -> str:
    return "idle" if phase is Phase.CONTROL else f"{op_layer}|{phase.value}"


def profile_step(
    model: Model,
    nm: tuple[int, int],
    params: SATParams,
    options: CompileOptions,
    *,
    sparsity: str = "bdwp",
    layers: bool = True,
) -> tuple[StepSummary, tuple[LayerCost, ...]]:
    """Compile and run one step in perf mode; return its summary and its GEMM layer passes.

    Parameters
    ----------
    model : Model
        The zoo model (its batch is the step's).
    nm : (int, int)
        The N:M pattern ((1, 1): dense).
    params : SATParams
        The configuration.
    options : CompileOptions
        The dataflow optimisations.
    sparsity : {"bdwp", "forward"}
        BDWP (N:M in FF and BP) or forward-only N:M (SR-STE style: BP dense).
    layers : bool
        Also return the layer passes (else an empty tuple).

    Returns
    -------
    (StepSummary, tuple of LayerCost)
        The summary (equal to :func:`nmsat.sim.step.simulate_step`'s) and one record per
        layer and GEMM pass, in program order.

    Raises
    ------
    ShapeError
        From the compiler, for a layer that does not fit.
    VerifyError
        A broken compiler invariant in the scheduled program (a compiler bug).
    SimulationError
        When a segment stops with the error status.
    """
    prog = compile_model(model, nm, params, options, sparsity=sparsity, check=False)
    verify(prog, params)
    device = [op for op in prog.ops if op.opcode is not None]
    labels = [_label(op.layer, op.phase) for op in device]
    by_label: dict[str, int] = defaultdict(int)
    spans: dict[str, int] = defaultdict(int)

    def on_segment(result: RunResult) -> None:
        for key, value in attribute(result, labels).items():
            by_label[key] += value
        if layers:
            _add_spans(result, labels, spans)

    step = simulate(prog, params, "perf", on_segment=on_segment)
    events, cycles = step.events, step.cycles
    energy = estimate_energy(events, cycles, params, load_energy_table(params.energy_table))
    summary = StepSummary(
        model.name,
        params.name,
        model.batch,
        nm,
        options,
        "perf",
        step,
        energy,
        params.clock_hz,
        params.pe_count,
    )
    beat = params.dram_bytes_per_cycle
    return summary, (_layer_costs(device, labels, by_label, spans, beat) if layers else ())


def _add_spans(result: RunResult, labels: list[str], spans: dict[str, int]) -> None:
    """Add each label's span in this run (first start to last completion) to ``spans``."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    trace = result.trace
    for pc, start, complete in zip(
        trace.pc.tolist(), trace.start.tolist(), trace.complete.tolist(), strict=True
    ):
        if start < 0 or complete <= start:
            continue
        label = labels[pc]
        if label not in first:
            first[label] = start
        last[label] = max(last.get(label, complete), complete)
    for label, start in first.items():
        spans[label] += last[label] - start


def _layer_costs(
    device: list[Op],
    labels: list[str],
    by_label: dict[str, int],
    spans: dict[str, int],
    beat: int,
) -> tuple[LayerCost, ...]:
    totals: dict[str, list[int]] = {}
    for op, label in zip(device, labels, strict=True):
        layer, _, phase = label.rpartition("|")
        if phase not in _GEMM_PHASES or not layer:
            continue
        acc = totals.setdefault(label, [0, 0, 0, 0])
        if op.opcode not in _PRICED:
            continue
        f = dict(op.fields)
        if op.opcode is Opcode.GEMM:
            rows_cols = f["rows"] * f["cols"]
            acc[0] += rows_cols * (f["depth"] * f["n"] // f["m"])
            acc[1] += rows_cols * f["depth"]
        else:
            lines = f["blocks"] * f["planes"] * f["rows"]
            run = f["cols"] * isa.element_bytes(f["buffer"])
            acc[2] += lines * run
            acc[3] += lines * -(-run // beat) * beat
    return tuple(
        LayerCost(
            label.rpartition("|")[0],
            label.rpartition("|")[2],
            by_label.get(label, 0),
            spans.get(label, 0),
            *acc,
        )
        for label, acc in totals.items()
    )
