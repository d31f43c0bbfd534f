# Ref: docs/isa.md (one section per opcode); STYLE.md G13 (per-instruction semantics in
#      functions named after the opcodes, returning an Events record).
"""The opcode functions of the model, one per opcode, and their dispatch table.

Every function has the signature ``op(instr, params, mem=None, mode="exact") -> Events``:
with ``mem`` it applies the instruction's effect on the buffers and the DRAM image (the loop
nest of its docs/isa.md section; none in perf mode), and it always returns the instruction's
:class:`~nmsat.sim.events.Events`, which depend on the fields and SATParams only. The
functions assume an instruction that passed :func:`nmsat.hw.isa.check_for_params`; their own
bounds checks raise :class:`~nmsat.sim.model.memory.MachineError` otherwise.

======== ============================== =====================
opcode   function                       unit (queue)
======== ============================== =====================
NOP      :func:`nop`                    the queue it names
LOAD     :func:`~.dma.load`             load
STORE    :func:`~.dma.store`            store
GEMM     :func:`~.stce.gemm`            compute (STCE)
PRUNE    :func:`~.sore.prune`           prune (SORE)
VEC      :func:`~.wuve.vec`             update (WUVE)
UPDATE   :func:`~.wuve.update`          update (WUVE)
HALT     :func:`halt`                   fetch unit
======== ============================== =====================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nmsat.hw import isa
from nmsat.hw.isa import Opcode
from nmsat.hw.params import SATParams
from nmsat.sim.events import Events

from ._instr import Mode, instruction_events
from .dma import load, store
from .memory import Memory
from .sore import prune
from .stce import gemm
from .wuve import update, vec

__all__ = [
    "OPS",
    "OpFunction",
    "execute",
    "gemm",
    "halt",
    "load",
    "nop",
    "prune",
    "store",
    "update",
    "vec",
]

#: Signature of an opcode function.
OpFunction = Callable[[isa.Instruction, SATParams, Memory | None, Mode], Events]


def nop(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute NOP (docs/isa.md, NOP): one cycle on its queue; no data effect."""
    return instruction_events(instr, params)


def halt(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute HALT (docs/isa.md, HALT): no data effect; the fetch unit stops (timing)."""
    return instruction_events(instr, params)


#: The function of each opcode.
OPS: Mapping[Opcode, OpFunction] = {
    Opcode.NOP: nop,
    Opcode.LOAD: load,
    Opcode.STORE: store,
    Opcode.GEMM: gemm,
    Opcode.PRUNE: prune,
    Opcode.VEC: vec,
    Opcode.UPDATE: update,
    Opcode.HALT: halt,
}
assert set(OPS) == set(Opcode)


def execute(
    instr: isa.Instruction, params: SATParams, mem: Memory | None = None, mode: Mode = "exact"
) -> Events:
    """Execute one instruction with its opcode function; return its events."""
    return OPS[instr.opcode](instr, params, mem, mode)
