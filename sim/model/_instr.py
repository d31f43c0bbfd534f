# Ref: DESIGN.md section 6 (modes perf, fast, exact); sim/events.py (Events).
"""What every opcode function of the model shares: the mode and the per-instruction events."""

from __future__ import annotations

from typing import Literal, get_args

from nmsat.hw import isa
from nmsat.hw.params import SATParams
from nmsat.sim.events import Events

__all__ = ["MODES", "Mode", "instruction_events"]

#: Execution mode of the model: ``perf`` counts cycles and events and touches no data;
#: ``fast`` also computes results, GEMM with numpy float32 matrix products; ``exact`` computes
#: every result bit-exact with :mod:`nmsat.hw.numerics` (and so with the RTL).
Mode = Literal["perf", "fast", "exact"]
MODES: tuple[str, ...] = get_args(Mode)


def instruction_events(instr: isa.Instruction, params: SATParams, **counts: int) -> Events:
    """Return the events of one instruction: ``counts`` plus those every instruction has.

    Every instruction retires once (``instructions = 1``) and keeps its queue's unit busy
    for ``isa.cycles(instr, params)`` cycles (``busy_<queue>_cycles``); HALT belongs to the
    fetch unit and keeps no unit busy.
    """
    queue = instr.queue
    if queue is not None:
        counts[f"busy_{queue.name.lower()}_cycles"] = isa.cycles(instr, params)
    return Events(instructions=1, **counts)
