# Ref: DESIGN.md sections 3.3, 6 and 9 (the model executes the binary; perf, fast, exact;
#      cycle-exact against a fixed-latency memory); docs/isa.md (semantics and rules 1-6);
#      STYLE.md G12, G13 (one backend among several; fast by construction).
"""The Python model of the accelerator: load a program and data, run it, read results.

A :class:`Machine` holds the on-chip buffers and a DRAM image (:class:`.memory.Memory`) and
executes programs in three modes:

``perf``
    Timing and event counts only; no buffer or DRAM data exists. Fast enough for a full
    training step: about 3 x 10^4 instructions per second when every word is new (decoding
    dominates), over 10^5 when words repeat (decoding is cached by word).
``fast``
    Also the data: GEMM as a numpy float32 matrix product, everything else exact.
``exact``
    Bit-exact with :mod:`nmsat.hw.numerics`, hence with the numpy reference and the RTL.

A run (:meth:`Machine.run`) starts at a pc and ends at the first HALT or error; its cycles
count from 0. Buffers and DRAM keep their contents between runs, so a host can run a
program in segments (each ending with a HALT) and exchange data in between.

How a run is computed: the instructions from the start pc up to the first HALT (or illegal
instruction, or the end of the program) are decoded once (:func:`.decode.decode_fast`,
cached by word) and checked against the configuration (:func:`nmsat.hw.isa.check_for_params`
and, in fast and exact mode, the DRAM image size: an access beyond the image is an illegal
instruction to the model). :func:`.timing.schedule` then gives every instruction its fetch,
start and completion cycle, and the data effects are applied in start order, each atomically
(:func:`.ops.execute`). For a program whose dependencies are all carried by tokens this is
the result of the hardware; a program that races two units on one buffer range has no
defined result anyway. After an error, buffer and DRAM contents hold the effects of the
instructions that started up to the error cycle; they are not part of the contract, only
the status, pc, cause and cycle count are.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nmsat.hw import isa
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Buffer, Opcode
from nmsat.hw.isa_asm import program_from_bytes
from nmsat.hw.params import QUEUE_NAMES, SATParams
from nmsat.sim.events import EVENT_FIELDS, Events

from ._instr import MODES, Mode
from .decode import decode_fast, opcode_of
from .dma import dram_end
from .memory import BIT_DTYPES, VALUE_DTYPES, MachineError, Memory
from .ops import execute
from .timing import HALT, STOP, Schedule, schedule

__all__ = ["DEFAULT_DRAM_IMAGE_BYTES", "Machine", "Progress", "RunResult", "Trace"]

#: Largest DRAM image a machine allocates unless told otherwise (64 MiB).
DEFAULT_DRAM_IMAGE_BYTES = 64 << 20

#: Progress callback of :meth:`Machine.run`: ``progress(phase, done, total)`` with phase
#: ``"timing"`` (instructions fetched of those in the segment) or ``"execute"`` (data
#: effects applied of the instructions started; fast and exact mode only).
Progress = Callable[[str, int, int], None]

_PROGRESS_EVERY = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
    """Per-instruction timing of a run, for the lockstep checker: one entry per fetched
    instruction, in fetch (program) order.

    Members
    -------
    pc : numpy.ndarray of int64
        Instruction index in the program.
    fetch, start, complete : numpy.ndarray of int64
        Cycles of the instruction's fetch, start and completion; -1 where it did not happen
        (HALT and illegal instructions never start; after an error some never do).
    """

    pc: NDArray[np.int64]
    fetch: NDArray[np.int64]
    start: NDArray[np.int64]
    complete: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.pc.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in ("pc", "fetch", "start", "complete")
        )

    __hash__ = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Outcome of one :meth:`Machine.run`.

    Members
    -------
    status : {"done", "error"}
        ``done``: HALT reached and every instruction completed; ``error``: see ``cause``.
    cycles : int
        The cycle ``done`` or ``error`` rose, counted from the first fetch (cycle 0).
    pc : int or None
        The instruction the error names (None when done): the illegal instruction, the one
        whose token push overflowed, the oldest waiting one of a deadlock, or the program
        length when the run fell off its end.
    opcode : str or None
        Name of that instruction's opcode; None when done, for an undefined opcode and past
        the end of the program.
    cause : str or None
        One line saying what went wrong (None when done).
    events : Events
        Sum of the events of the instructions that started (HALT included when done).
    trace : Trace
        Fetch, start and completion cycle of every fetched instruction.
    instructions : int
        Instructions fetched (HALT included; the length of ``trace``).
    """

    status: Literal["done", "error"]
    cycles: int
    pc: int | None
    opcode: str | None
    cause: str | None
    events: Events
    trace: Trace
    instructions: int


class _Decoded(NamedTuple):
    """One program word as the run needs it (cached by word)."""

    instr: isa.Instruction | None
    opcode: str | None
    queue: int  # Queue.value, HALT or STOP
    cycles: int
    pop: int
    push: int
    events: tuple[int, ...]
    cause: str | None


#: The counts of an Events record as a tuple, in EVENT_FIELDS order.
_event_counts: Callable[[Events], tuple[int, ...]] = operator.attrgetter(*EVENT_FIELDS)


def _mask(queues: Sequence[isa.Queue]) -> int:
    return sum(1 << q.value for q in queues)


class Machine:
    """The cycle-accurate Python model of one accelerator.

    Parameters
    ----------
    params : SATParams
        The configuration.
    mode : {"perf", "fast", "exact"}
        What a run computes (module docstring).
    dram_bytes : int, optional
        Size of the DRAM image (fast and exact mode), default
        ``min(params.dram_bytes, DEFAULT_DRAM_IMAGE_BYTES)``; at most ``params.dram_bytes``.
        An instruction addressing DRAM beyond the image is illegal to the model. Perf mode
        keeps no image and checks addresses against ``params.dram_bytes`` only.

    Raises
    ------
    MachineError
        For an unknown mode or an image size out of range.
    """

    def __init__(self, params: SATParams, mode: Mode = "exact", dram_bytes: int | None = None):
        if mode not in MODES:
            raise MachineError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if dram_bytes is None:
            dram_bytes = min(params.dram_bytes, DEFAULT_DRAM_IMAGE_BYTES)
        if isinstance(dram_bytes, bool) or not 0 < dram_bytes <= params.dram_bytes:
            raise MachineError(
                f"dram_bytes={dram_bytes!r} must be in [1, {params.dram_bytes}] "
                f"(params.dram_bytes of {params.name})"
            )
        self._params = params
        self._mode: Mode = mode
        self._dram_bytes = dram_bytes if mode != "perf" else params.dram_bytes
        self._memory = Memory(params, dram_bytes) if mode != "perf" else None
        self._program: tuple[int, ...] = ()
        self._decoded: dict[int, _Decoded] = {}

    # -- configuration -------------------------------------------------------------------

    @property
    def params(self) -> SATParams:
        """The configuration."""
        return self._params

    @property
    def mode(self) -> Mode:
        """The execution mode."""
        return self._mode

    @property
    def dram_bytes(self) -> int:
        """Bytes of external memory an instruction may address (the image, in perf mode
        ``params.dram_bytes``)."""
        return self._dram_bytes

    @property
    def program(self) -> tuple[int, ...]:
        """The loaded instruction words."""
        return self._program

    # -- host interface ------------------------------------------------------------------

    def load_program(self, program: Sequence[int] | bytes) -> None:
        """Load a program: instruction words, or the contents of an ``.nmsb`` file.

        Words are not checked here: an illegal word stops the run that fetches it, with its
        pc (docs/isa.md rule 6).

        Raises
        ------
        IsaError
            For program-file bytes with a wrong header or length.
        MachineError
            For a word that is not an integer.
        """
        if isinstance(program, (bytes, bytearray, memoryview)):
            words = program_from_bytes(bytes(program), check=False)
        else:
            words = list(program)
        for index, word in enumerate(words):
            if isinstance(word, bool) or not isinstance(word, (int, np.integer)):
                raise MachineError(f"program word {index} is {word!r}, not an integer")
        self._program = tuple(int(word) for word in words)

    def write_dram(self, addr: int, data: bytes | bytearray | memoryview | ArrayLike) -> None:
        """Write bytes (or an array's raw little-endian bytes) into the DRAM image at ``addr``.

        Raises
        ------
        MachineError
            In perf mode, or if the bytes do not fit the image.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = np.frombuffer(bytes(data), dtype=np.uint8)
        else:
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._dram_range(addr, raw.size)[:] = raw

    def read_dram(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` bytes of the DRAM image from ``addr``.

        Raises
        ------
        MachineError
            In perf mode, or if the range leaves the image.
        """
        return self._dram_range(addr, nbytes).tobytes()

    def write_buffer(self, buffer: Buffer, addr: int, values: ArrayLike) -> None:
        """Write elements into a buffer from ``addr``.

        ``values`` must have the buffer's value type (float16 for ACT and WGT, uint8 for IDX,
        float32 for ACC and VEC) or its bit type (uint16, uint8, uint32); bits are stored
        unchanged, except that IDX keeps the low ``index_bits`` bits.

        Raises
        ------
        MachineError
            In perf mode, for another dtype, or if the range leaves the buffer.
        """
        buffer = Buffer(buffer)
        arr = np.asarray(values).reshape(-1)
        if arr.dtype not in (VALUE_DTYPES[buffer], BIT_DTYPES[buffer]):
            raise MachineError(
                f"{buffer.name} holds {np.dtype(VALUE_DTYPES[buffer]).name} (or its bits as "
                f"{np.dtype(BIT_DTYPES[buffer]).name}); got {arr.dtype}"
            )
        memory = self._data("write_buffer")
        if buffer is Buffer.IDX:
            memory.write_idx(addr, arr, "addr")
        else:
            memory.bits(buffer, addr, arr.size, "addr")[:] = arr.view(BIT_DTYPES[buffer])

    def read_buffer(self, buffer: Buffer, addr: int, count: int) -> NDArray[Any]:
        """Return a copy of ``count`` elements of a buffer from ``addr``, in its value type.

        Raises
        ------
        MachineError
            In perf mode, or if the range leaves the buffer.
        """
        buffer = Buffer(buffer)
        return np.array(self._data("read_buffer").values(buffer, addr, count, "addr"))

    # -- running -------------------------------------------------------------------------

    def run(self, start_pc: int = 0, progress: Progress | None = None) -> RunResult:
        """Run the loaded program from ``start_pc`` to the first HALT or error.

        Parameters
        ----------
        start_pc : int
            Index of the first instruction to fetch. A pc at or past the end of the program
            is a run that falls off its end (an error at cycle 1).
        progress : callable, optional
            :data:`Progress` callback (for a progress bar), called every few thousand
            instructions.

        Returns
        -------
        RunResult
            Errors of the program (illegal instruction, token overflow, deadlock, no HALT)
            are reported in it, never raised.

        Raises
        ------
        MachineError
            For a negative ``start_pc``.
        """
        if isinstance(start_pc, bool) or start_pc < 0:
            raise MachineError(f"start_pc={start_pc!r} must be a non-negative instruction index")
        segment = self._segment(start_pc)
        timing_progress = None
        if progress is not None:
            report = progress

            def timing_progress(done: int, total: int) -> None:
                report("timing", done, total)

        sched = schedule(
            [d.queue for d in segment],
            [d.cycles for d in segment],
            [d.pop for d in segment],
            [d.push for d in segment],
            self._params,
            timing_progress,
        )
        if self._memory is not None:
            self._execute(segment, sched.order, progress)
        retired = [segment[i].events for i in sched.order]
        if sched.status == "done":
            retired.append(segment[-1].events)  # the HALT
        columns = zip(*retired, strict=True) if retired else [()] * len(EVENT_FIELDS)
        events = Events(**dict(zip(EVENT_FIELDS, map(sum, columns), strict=True)))
        # Past the end of the program there is no instruction to list.
        last = len(self._program) - start_pc
        fetched = [i for i, f in enumerate(sched.fetch) if f >= 0 and i < last]
        trace = Trace(
            pc=np.asarray(fetched, dtype=np.int64) + start_pc,
            fetch=np.asarray([sched.fetch[i] for i in fetched], dtype=np.int64),
            start=np.asarray([sched.start[i] for i in fetched], dtype=np.int64),
            complete=np.asarray([sched.complete[i] for i in fetched], dtype=np.int64),
        )
        pc = opcode = cause = None
        if sched.status == "error":
            assert sched.error_index is not None
            named = segment[sched.error_index]
            pc, opcode = start_pc + sched.error_index, named.opcode
            cause = self._cause(sched, named)
        return RunResult(sched.status, sched.cycles, pc, opcode, cause, events, trace, len(trace))

    # -- internals -----------------------------------------------------------------------

    def _data(self, what: str) -> Memory:
        if self._memory is None:
            raise MachineError(f"{what}: a perf-mode machine holds no data; use fast or exact")
        return self._memory

    def _dram_range(self, addr: int, nbytes: int) -> NDArray[np.uint8]:
        dram = self._data("DRAM access").dram
        if isinstance(addr, bool) or addr < 0 or nbytes < 0 or addr + nbytes > dram.size:
            raise MachineError(
                f"DRAM bytes [{addr:#x}, {addr + nbytes:#x}) leave the {dram.size:#x}-byte image"
            )
        return dram[addr : addr + nbytes]

    def _segment(self, start_pc: int) -> list[_Decoded]:
        """Decode from ``start_pc`` to the first HALT or STOP (fetch never goes further)."""
        program = self._program
        segment = []
        for pc in range(start_pc, len(program)):
            word = program[pc]
            decoded = self._decoded.get(word)
            if decoded is None:
                decoded = self._decoded[word] = self._decode(word)
            segment.append(decoded)
            if decoded.queue < 0:
                return segment
        cause = (
            f"no HALT: pc {max(start_pc, len(program))} is past the end of the program "
            f"({len(program)} instructions)"
        )
        segment.append(_Decoded(None, None, STOP, 0, 0, 0, (), cause))
        return segment

    def _decode(self, word: int) -> _Decoded:
        opcode = opcode_of(word)
        name = opcode.name if opcode is not None else None
        try:
            instr = decode_fast(word)
            isa.check_for_params(instr, self._params)
            if instr.opcode in (Opcode.LOAD, Opcode.STORE) and dram_end(instr) > self._dram_bytes:
                raise MachineError(
                    f"{instr.opcode.name}: dram_addr={instr['dram_addr']:#x} reaches byte "
                    f"{dram_end(instr):#x}, past the {self._dram_bytes:#x}-byte DRAM image of "
                    "the model (Machine dram_bytes)"
                )
        except (IsaError, MachineError) as exc:
            return _Decoded(None, name, STOP, 0, 0, 0, (), str(exc))
        queue = instr.queue
        events = execute(instr, self._params)
        return _Decoded(
            instr,
            name,
            queue.value if queue is not None else HALT,
            isa.cycles(instr, self._params),
            _mask(instr.pop),
            _mask(instr.push),
            _event_counts(events),
            None,
        )

    def _execute(
        self, segment: list[_Decoded], order: list[int], progress: Progress | None
    ) -> None:
        memory = self._memory
        total = len(order)
        for done, i in enumerate(order, start=1):
            instr = segment[i].instr
            assert instr is not None
            execute(instr, self._params, memory, self._mode)
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == total):
                progress("execute", done, total)

    def _cause(self, sched: Schedule, named: _Decoded) -> str:
        if sched.error_kind == "illegal":
            return named.cause or "illegal instruction"
        if sched.error_kind == "overflow":
            assert sched.error_pair is not None
            producer, consumer = sched.error_pair
            return (
                f"token overflow: {QUEUE_NAMES[producer]} -> {QUEUE_NAMES[consumer]} would hold "
                f"{self._params.token_depth + 1} tokens (token_depth {self._params.token_depth})"
            )
        lacking = ", ".join(QUEUE_NAMES[q] for q in sched.waiting_for) or "a token"
        return (
            f"token deadlock: {named.opcode} on the {QUEUE_NAMES[named.queue]} queue waits for "
            f"a token from {lacking} that no queue can send"
        )
