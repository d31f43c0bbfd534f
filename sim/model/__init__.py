# Ref: DESIGN.md section 6 (the Python model); STYLE.md G6 (public names re-exported here).
"""The cycle-accurate Python model of the accelerator (perf, fast and exact modes).

Public API: :class:`Machine` (load a program and data, :meth:`Machine.run` it, read results),
its :class:`RunResult` and :class:`Trace`, the opcode functions of :mod:`.ops`, the scheduler
:func:`schedule` (docs/isa.md rules 1-6) and the fast decoder :func:`decode_fast`.
"""

from ._instr import MODES, Mode
from .decode import decode_fast
from .machine import DEFAULT_DRAM_IMAGE_BYTES, Machine, Progress, RunResult, Trace
from .memory import MachineError, Memory
from .ops import OPS, execute, gemm, halt, load, nop, prune, store, update, vec
from .timing import Schedule, schedule

__all__ = [
    "DEFAULT_DRAM_IMAGE_BYTES",
    "MODES",
    "OPS",
    "Machine",
    "MachineError",
    "Memory",
    "Mode",
    "Progress",
    "RunResult",
    "Schedule",
    "Trace",
    "decode_fast",
    "execute",
    "gemm",
    "halt",
    "load",
    "nop",
    "prune",
    "schedule",
    "store",
    "update",
    "vec",
]
