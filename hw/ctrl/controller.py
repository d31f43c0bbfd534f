# Ref: docs/isa.md, "Queues, tokens and the cycle count" (rules 1-6); sim/model/timing.py,
#      the executable specification of those rules that this controller reproduces cycle
#      for cycle (in-cycle order, FIFO refill, token overflow, deadlock, error precedence).
# Ref: DESIGN.md sections 4 (controller: queues with dependency tokens, an illegal instruction
#      sets an error status and halts, never hangs) and 9 (cycles count from the first fetch).
# Ref: T. Moreau et al., VTA, IEEE Micro 2019 (decoupled queues with dependency tokens).
"""Controller: fetch, check and issue of the instruction stream to the five execution units."""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .._signature import ParameterizedSignature
from ..isa import INSTR, INSTR_BITS, Opcode, Queue
from ..params import QUEUE_NAMES, SATParams
from ._checker import CHECK_STAGES, Illegal, InstructionChecker
from ._fifo import InstructionFIFO
from ._shaped import ShapedEnum

__all__ = [
    "CYCLE_BITS",
    "PRIME_CYCLES",
    "Controller",
    "ErrorCause",
    "IssueSignature",
    "TraceSignature",
]

#: Width of the cycle counter (2**48 cycles: 16 days at 200 MHz).
CYCLE_BITS = 48

#: Fewest cycles strictly between the ``start`` pulse and cycle 0 (the first fetch): the
#: instruction memory read, the checker's stages and the hand-over to the run. They are not
#: counted: cycle numbers, as in the model, start at the first fetch.
PRIME_CYCLES = 1 + CHECK_STAGES + 1

_QUEUES = len(Queue)
_LOAD, _STORE = Queue.LOAD.value, Queue.STORE.value
assert tuple(q.name.lower() for q in Queue) == QUEUE_NAMES


class ErrorCause(ShapedEnum, shape=3):
    """Why a run ended with ``error`` (docs/isa.md rule 6)."""

    NONE = 0
    ILLEGAL_OPCODE = 1  # undefined opcode
    ILLEGAL_FIELD = 2  # reserved/unused bits, undefined enum value, a rule of the opcode
    OUT_OF_RANGE = 3  # a buffer operand or the external-memory block out of range
    TOKEN_OVERFLOW = 4  # a push beyond token_depth between two queues
    DEADLOCK = 5  # no queue can ever start again
    PAST_END = 6  # the run fell off the end of the program (no HALT)


class IssueSignature(ParameterizedSignature):
    """Signature of the issue port from the controller to one execution unit.

    Parameters
    ----------
    pc_bits : int
        Width of a pc.

    Members
    -------
    start : ``Out(1)``
        One-cycle pulse: start ``instr`` (never for a NOP, which the controller retires).
    instr : ``Out(INSTR)``
        The queue's head instruction (valid with ``start``); units read its payload
        (``instr.payload.gemm`` and so on) and the WUVE its ``instr.header.opcode``.
    pc : ``Out(pc_bits)``
        Its pc.
    done : ``In(1)``
        One-cycle pulse from the unit, exactly ``isa.cycles(instr)`` cycles after ``start``
        (the unit contract); ``start`` may pulse again in that cycle.
    """

    def __init__(self, pc_bits: int) -> None:
        members = {"start": Out(1), "instr": Out(INSTR), "pc": Out(pc_bits), "done": In(1)}
        super().__init__(members, pc_bits=pc_bits)


class TraceSignature(ParameterizedSignature):
    """Signature of the controller's trace port: the events of each cycle of a run.

    Parameters
    ----------
    pc_bits : int
        Width of a pc.

    Members
    -------
    fetch : ``Out(1)``
        An instruction is fetched in this cycle (HALT, an illegal word and the fetch past the
        end of the program included).
    fetch_pc : ``Out(pc_bits)``
        Its pc.
    start : ``Out(5)``
        Bit q: the head of queue ``Queue(q)`` starts (NOPs included); its pc is on the
        queue's issue port.
    complete : ``Out(5)``
        Bit q: the instruction running on queue ``Queue(q)`` completes.
    """

    def __init__(self, pc_bits: int) -> None:
        super().__init__(
            {
                "fetch": Out(1),
                "fetch_pc": Out(pc_bits),
                "start": Out(_QUEUES),
                "complete": Out(_QUEUES),
            },
            pc_bits=pc_bits,
        )


def _lowest(candidates: Sequence[tuple[Value, Value]]) -> tuple[Value, Value]:
    """Return (any valid, lowest pc among the valid ones) of (valid, pc) pairs."""
    valid, pc = candidates[0]
    for other_valid, other_pc in candidates[1:]:
        take = other_valid & (~valid | (other_pc < pc))
        valid, pc = valid | other_valid, Mux(take, other_pc, pc)
    return valid, pc


class Controller(wiring.Component):
    """The controller: fetches, checks and issues instructions to the five queues.

    It implements rules 1-6 of docs/isa.md exactly as :func:`nmsat.sim.model.timing.schedule`
    interprets them, so a run's fetch, start and completion cycles, its status, error pc and
    cycle count equal those of ``Machine(params, "perf").run(start_pc)`` for every program.
    Within each cycle t of a run:

    1. *Completions*: a queue whose unit pulses ``done`` (or whose NOP started in t - 1)
       frees the unit and pushes its tokens, which can be taken in cycle t.
    2. *Starts*: each queue's head starts if its unit is free, a token waits from each queue
       of its ``pop`` mask (it takes them), and for LOAD and STORE the other DMA queue is not
       running; a LOAD wins over a STORE starting in the same cycle. The head was fetched in
       an earlier cycle (``s >= f + 1``).
    3. *Token overflow*: a push that leaves more than ``token_depth`` tokens between a pair of
       queues, after this cycle's pops, raises ``error`` in t.
    4. *Fetch*: the next instruction is fetched in t if its queue's FIFO, after this cycle's
       starts, holds fewer than ``queue_depths[queue]`` instructions. HALT, an illegal
       instruction and the pc ``program_length`` (off the end) are fetched without
       occupying a FIFO and stop fetching; HALT's token masks are ignored; an illegal
       instruction raises ``error`` in t + 1.
    5. *Termination*: when no unit runs past t and nothing was fetched in t, nothing can change
       any more: ``done`` if HALT was fetched and every queue is empty, a token deadlock
       (``error``, the lowest pc among the queue heads) otherwise. An overflow or an illegal
       instruction stops the run in its cycle before termination is looked at, so it wins
       over ``done`` and over a deadlock of the same cycle; of several overflows the lowest
       pc is reported, and an overflow wins over an illegal instruction of the same cycle
       (its instruction was fetched earlier, so its pc is lower).

    The instruction memory is read through ``imem_addr``/``imem_data`` with a latency of one
    cycle (a synchronous read port: the word at the address of cycle t is on ``imem_data`` in
    cycle t + 1). The controller reads ahead, up to ``CHECK_STAGES + 1`` words past the
    last fetched pc (their contents are ignored): after ``start`` it spends at least
    :data:`PRIME_CYCLES` cycles filling the read and check pipeline (and waits until every
    unit is idle, after an error that left some running); the first fetch is cycle 0 and
    ``elapsed_cycles`` counts from it. Instruction words are checked in gateware
    (:class:`~nmsat.hw.ctrl._checker.InstructionChecker`) with every rule of
    :func:`nmsat.hw.isa.decode` and :func:`nmsat.hw.isa.check_for_params`, external memory
    bounded by ``params.dram_bytes``.

    Parameters
    ----------
    params : SATParams
        ``queue_depths``, ``token_depth`` and everything the checker uses.
    pc_bits : int
        Width of a pc (instruction index); programs hold fewer than ``2**pc_bits`` words.

    Members
    -------
    imem_addr : ``Out(pc_bits)``
        Instruction memory read address.
    imem_data : ``In(INSTR_BITS)``
        The word at last cycle's ``imem_addr``.
    start : ``In(1)``
        Start a run (ignored while ``running``).
    start_pc : ``In(pc_bits)``
        First pc of the run, sampled with ``start``.
    program_length : ``In(pc_bits)``
        Words in the program, sampled with ``start``: fetching pc ``program_length`` is the
        error PAST_END.
    running : ``Out(1)``
        From the cycle after ``start`` to the cycle ``done`` or ``error`` rises (exclusive).
    done, error : ``Out(1)``
        The run ended (registered: high from the cycle after the run's last cycle T until the
        next ``start``).
    error_pc : ``Out(pc_bits)``
        The pc the error names: the illegal instruction, the overflowing push's instruction,
        the oldest waiting instruction of a deadlock, or ``program_length``.
    error_cause : ``Out(ErrorCause)``
        Why.
    elapsed_cycles : ``Out(CYCLE_BITS)``
        Cycle number within the run; after the run, T, the cycle ``done`` or ``error`` rose
        (the model's ``RunResult.cycles``).
    load, compute, prune, update, store : ``Out(IssueSignature(pc_bits))``
        Issue ports to the units, in :class:`~nmsat.hw.isa.Queue` order.
    trace : ``Out(TraceSignature(pc_bits))``
        Fetch, start and completion events of each cycle (for lockstep checking).
    """

    def __init__(self, params: SATParams, *, pc_bits: int = 32) -> None:
        if not 1 <= pc_bits <= 64:
            raise ValueError(f"pc_bits={pc_bits!r} must be in [1, 64]")
        self._params = params
        self._pc_bits = pc_bits
        issue = {name: Out(IssueSignature(pc_bits)) for name in QUEUE_NAMES}
        super().__init__(
            {
                "imem_addr": Out(pc_bits),
                "imem_data": In(INSTR_BITS),
                "start": In(1),
                "start_pc": In(pc_bits),
                "program_length": In(pc_bits),
                "running": Out(1),
                "done": Out(1),
                "error": Out(1),
                "error_pc": Out(pc_bits),
                "error_cause": Out(ErrorCause),
                "elapsed_cycles": Out(CYCLE_BITS),
                **issue,
                "trace": Out(TraceSignature(pc_bits)),
            }
        )

    @property
    def params(self) -> SATParams:
        """The configuration."""
        return self._params

    @property
    def pc_bits(self) -> int:
        """Width of a pc."""
        return self._pc_bits

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        pc_bits = self._pc_bits
        ports = [getattr(self, name) for name in QUEUE_NAMES]
        queues = range(_QUEUES)

        m.submodules.checker = checker = InstructionChecker(params, pc_bits)
        fifos = []
        for q, name in enumerate(QUEUE_NAMES):
            fifo = InstructionFIFO(params.queue_depths[q], pc_bits)
            m.submodules[f"{name}_fifo"] = fifo
            fifos.append(fifo)

        # -- state ---------------------------------------------------------------------------
        priming = Signal()  # filling the read-ahead pipeline
        active = Signal()  # a run is in progress: cycles 0..T
        program_length = Signal(pc_bits)
        read_pc = Signal(pc_bits)  # the next word to read
        word_pc = Signal(pc_bits)  # the word on imem_data
        word_valid = Signal()
        fetching = Signal()
        halted = Signal()
        illegal_pending = Signal()  # an illegal fetch in the last cycle: error now
        illegal_pc = Signal(pc_bits)
        illegal_cause = Signal(ErrorCause)
        busy = Signal(_QUEUES)  # the queue's unit (or NOP) runs
        nop_running = Signal(_QUEUES)
        running_pc = [Signal(pc_bits, name=f"{n}_running_pc") for n in QUEUE_NAMES]
        push_mask = [Signal(_QUEUES, name=f"{n}_push_mask") for n in QUEUE_NAMES]
        # tokens[p][c]: tokens from producer queue p waiting for consumer queue c
        tokens = [
            [Signal(range(params.token_depth + 1), name=f"tokens_{p}_{c}") for c in QUEUE_NAMES]
            for p in QUEUE_NAMES
        ]

        def wire(value: Value, name: str) -> Signal:
            """A named signal for ``value`` (computed once, also in simulation)."""
            signal = Signal(Value.cast(value).shape(), name=name)
            m.d.comb += signal.eq(value)
            return signal

        # -- 1. completions ----------------------------------------------------------------
        heads = [fifo.r_data for fifo in fifos]
        waiting = wire(Cat(*(fifo.level != 0 for fifo in fifos)), "waiting")
        complete = wire(busy & (nop_running | Cat(*(port.done for port in ports))), "complete")
        running_on = wire(busy & ~complete, "running_on")  # busy after this cycle
        # push[p] bit c: a token from p to c this cycle
        push = [
            wire(Mux(active & complete[p], push_mask[p], 0), f"{n}_push")
            for p, n in enumerate(QUEUE_NAMES)
        ]

        # -- 2. starts -----------------------------------------------------------------------
        starts = Signal(_QUEUES)
        for q in queues:
            pops = heads[q].instr.header.pop
            tokens_ok = [~pops[p] | (tokens[p][q] != 0) | push[p][q] for p in queues]
            ready = active & waiting[q] & ~running_on[q] & Cat(*tokens_ok).all()
            if q == _LOAD:
                ready &= ~running_on[_STORE]
            elif q == _STORE:
                ready &= ~running_on[_LOAD] & ~starts[_LOAD]
            m.d.comb += starts[q].eq(ready)
        # pop[c] bit p: a token from p taken by c this cycle
        pop = [
            wire(Mux(starts[c], heads[c].instr.header.pop, 0), f"{n}_pop")
            for c, n in enumerate(QUEUE_NAMES)
        ]

        # -- 3. token overflow: a push without a pop onto a full pair ------------------------
        overflows = []
        for p in queues:
            full = [push[p][c] & ~pop[c][p] & (tokens[p][c] == params.token_depth) for c in queues]
            overflows.append((Cat(*full).any(), running_pc[p]))
        lowest_overflow, lowest_overflow_pc = _lowest(overflows)
        overflow = wire(lowest_overflow, "overflow")
        overflow_pc = wire(lowest_overflow_pc, "overflow_pc")

        # -- 4. fetch ------------------------------------------------------------------------
        room = Array((fifos[q].level != params.queue_depths[q]) | starts[q] for q in queues)
        stop_word = wire((checker.o_illegal != Illegal.NONE) | checker.o_past_end, "stop_word")
        fetch = wire(
            active
            & fetching
            & checker.o_valid
            & ~overflow
            & (stop_word | checker.o_halt | room[checker.o_queue.as_value()]),
            "fetch",
        )
        enqueue = wire(fetch & ~stop_word & ~checker.o_halt, "enqueue")
        advance = wire((priming | active) & (~checker.o_valid | fetch), "advance")
        for q, fifo in enumerate(fifos):
            m.d.comb += [
                fifo.w_en.eq(enqueue & (checker.o_queue.as_value() == q)),
                fifo.w_data.instr.eq(checker.o_word),
                fifo.w_data.pc.eq(checker.o_pc),
                fifo.r_en.eq(starts[q]),
            ]

        # -- 5. termination ------------------------------------------------------------------
        quiet = ~fetch & ~running_on.any() & ~starts.any()
        empty = ~waiting.any()
        finishing = active & ~overflow & ~illegal_pending & quiet
        done_now = wire(finishing & halted & empty, "done_now")
        deadlock = wire(finishing & ~(halted & empty), "deadlock")
        _, lowest_waiting_pc = _lowest([(waiting[q], heads[q].pc) for q in queues])
        deadlock_pc = wire(lowest_waiting_pc, "deadlock_pc")
        end = wire(active & (overflow | illegal_pending | quiet), "end")

        # -- outputs -------------------------------------------------------------------------
        m.d.comb += [
            self.imem_addr.eq(Mux(advance, read_pc, word_pc)),
            checker.advance.eq(advance),
            checker.program_length.eq(program_length),
            checker.i_word.eq(self.imem_data),
            checker.i_pc.eq(word_pc),
            checker.i_valid.eq(word_valid),
            self.running.eq(priming | active),
            self.trace.fetch.eq(fetch),
            self.trace.fetch_pc.eq(checker.o_pc),
            self.trace.start.eq(starts),
            self.trace.complete.eq(Mux(active, complete, 0)),
        ]
        for q, port in enumerate(ports):
            m.d.comb += [
                port.start.eq(starts[q] & (heads[q].instr.header.opcode != Opcode.NOP)),
                port.instr.eq(heads[q].instr),
                port.pc.eq(heads[q].pc),
            ]

        # -- sequential ----------------------------------------------------------------------
        with m.If(advance):
            m.d.sync += [
                word_pc.eq(read_pc),
                read_pc.eq(read_pc + 1),
                word_valid.eq(1),
            ]
        for q in queues:
            with m.If(starts[q]):
                m.d.sync += [
                    busy[q].eq(1),
                    nop_running[q].eq(heads[q].instr.header.opcode == Opcode.NOP),
                    running_pc[q].eq(heads[q].pc),
                    push_mask[q].eq(heads[q].instr.header.push),
                ]
            with m.Elif(complete[q]):
                m.d.sync += [busy[q].eq(0), nop_running[q].eq(0)]
            for p in queues:
                m.d.sync += tokens[p][q].eq(tokens[p][q] + push[p][q] - pop[q][p])

        with m.If(fetch):
            with m.If(stop_word):
                cause = Mux(
                    checker.o_past_end,
                    ErrorCause.PAST_END,
                    Mux(
                        checker.o_illegal == Illegal.OPCODE,
                        ErrorCause.ILLEGAL_OPCODE,
                        Mux(
                            checker.o_illegal == Illegal.FIELD,
                            ErrorCause.ILLEGAL_FIELD,
                            ErrorCause.OUT_OF_RANGE,
                        ),
                    ),
                )
                m.d.sync += [
                    fetching.eq(0),
                    illegal_pending.eq(1),
                    illegal_pc.eq(checker.o_pc),
                    illegal_cause.eq(cause),
                ]
            with m.Elif(checker.o_halt):
                m.d.sync += [fetching.eq(0), halted.eq(1)]

        with m.If(active):
            with m.If(end):
                m.d.sync += [
                    active.eq(0),
                    self.done.eq(done_now),
                    self.error.eq(~done_now),
                ]
                with m.If(overflow):
                    m.d.sync += [
                        self.error_pc.eq(overflow_pc),
                        self.error_cause.eq(ErrorCause.TOKEN_OVERFLOW),
                    ]
                with m.Elif(illegal_pending):
                    m.d.sync += [
                        self.error_pc.eq(illegal_pc),
                        self.error_cause.eq(illegal_cause),
                    ]
                with m.Elif(deadlock):
                    m.d.sync += [
                        self.error_pc.eq(deadlock_pc),
                        self.error_cause.eq(ErrorCause.DEADLOCK),
                    ]
            with m.Else():
                m.d.sync += self.elapsed_cycles.eq(self.elapsed_cycles + 1)

        with m.If(priming & checker.o_valid & ~busy.any()):
            m.d.sync += [priming.eq(0), active.eq(1)]

        # A start while idle: reset everything a run uses (overrides the above).
        launch = self.start & ~priming & ~active
        m.d.comb += [checker.clear.eq(launch), *(fifo.clear.eq(launch) for fifo in fifos)]
        with m.If(launch):
            m.d.sync += [
                priming.eq(1),
                program_length.eq(self.program_length),
                read_pc.eq(self.start_pc),
                word_valid.eq(0),
                fetching.eq(1),
                halted.eq(0),
                illegal_pending.eq(0),
                self.done.eq(0),
                self.error.eq(0),
                self.error_pc.eq(0),
                self.error_cause.eq(ErrorCause.NONE),
                self.elapsed_cycles.eq(0),
                *(tokens[p][c].eq(0) for p in queues for c in queues),
            ]
        return m
