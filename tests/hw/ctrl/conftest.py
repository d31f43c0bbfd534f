"""Shared harness of the controller tests: the controller with an instruction memory and mock
execution units in pysim, compared run by run with the Python model (sim.model, perf mode).

``run_controller(params, words, cases)`` loads ``words`` into an instruction memory (a
synchronous read port, latency 1), starts one run per ``(start_pc, program_length)`` case,
back to back in one simulation, and records every run's fetch, start and completion cycles
and its status. Each execution unit is a mock: a small coroutine that sees ``start``, checks
that the issued word is the program's word at the issued pc, and pulses ``done`` exactly
``isa.cycles(instr)`` cycles later (through a register, so the pulse is one clock cycle
long whatever order the testbenches run in). ``compare_with_model`` runs the same case on
``Machine(params, "perf")`` and lists every difference.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from nmsat.hw import isa
from nmsat.hw.ctrl import Controller, ErrorCause
from nmsat.hw.isa import Buffer, Dataflow, Direction, Opcode, Queue, VecOp
from nmsat.hw.params import QUEUE_NAMES, SATParams
from nmsat.sim.model import Machine
from nmsat.sim.model.decode import decode_fast

Case = tuple[int, int]  # (start_pc, program_length)


@dataclasses.dataclass
class Run:
    """What the controller did in one run (cycles count from the run's first fetch)."""

    fetch: dict[int, int]
    start: dict[int, int]
    complete: dict[int, int]
    status: str
    cycles: int
    pc: int | None
    cause: ErrorCause


def cause_of(message: str | None) -> ErrorCause:
    """Return the ErrorCause of a model error message (RunResult.cause or an IsaError)."""
    if message is None:
        return ErrorCause.NONE
    if message.startswith("illegal instruction: opcode"):
        return ErrorCause.ILLEGAL_OPCODE
    if message.startswith("token overflow"):
        return ErrorCause.TOKEN_OVERFLOW
    if message.startswith("token deadlock"):
        return ErrorCause.DEADLOCK
    if message.startswith("no HALT"):
        return ErrorCause.PAST_END
    if "overruns the" in message or "past the" in message:
        return ErrorCause.OUT_OF_RANGE
    return ErrorCause.ILLEGAL_FIELD


def run_controller(params: SATParams, words: Sequence[int], cases: Sequence[Case]) -> list[Run]:
    """Run each case on the controller in pysim; see the module docstring."""
    ctrl = Controller(params)
    m = Module()
    m.submodules.ctrl = ctrl
    addr_bits = max(1, (len(words) - 1).bit_length())
    m.submodules.imem = imem = Memory(shape=isa.INSTR_BITS, depth=1 << addr_bits, init=words)
    read = imem.read_port()
    m.d.comb += [read.addr.eq(ctrl.imem_addr[:addr_bits]), ctrl.imem_data.eq(read.data)]
    ports = [getattr(ctrl, name) for name in QUEUE_NAMES]
    # One wide probe per cycle is much cheaper to sample in pysim than twenty signals.
    trace = ctrl.trace
    fields = [ctrl.elapsed_cycles, trace.fetch, trace.fetch_pc, trace.start, trace.complete,
              ctrl.done, ctrl.error, *(port.pc for port in ports)]  # fmt: skip
    widths = [len(field) for field in fields]
    probe = Signal(sum(widths))
    m.d.comb += probe.eq(Cat(*fields))
    done_next = [Signal(name=f"{name}_done_next") for name in QUEUE_NAMES]
    m.d.sync += [port.done.eq(late) for port, late in zip(ports, done_next, strict=True)]
    finish = Signal()
    cycles: dict[int, int] = {}
    retired: list[int] = []

    def cycles_of(word: int) -> int:
        if word not in cycles:
            cycles[word] = isa.cycles(decode_fast(word), params)
        return cycles[word]

    def unit(q: int) -> Callable[[Any], Any]:
        port = ports[q]

        async def mock(ctx: Any) -> None:
            # Sleeps until start rises (ctx.changed), so idle units cost nothing per cycle.
            while True:
                if not ctx.get(port.start):
                    if ctx.get(finish):
                        break
                    await ctx.changed(port.start, finish)
                    continue
                while True:  # start is high in this cycle, s
                    word = ctx.get(port.instr.as_value())
                    assert word == words[ctx.get(port.pc)], f"{QUEUE_NAMES[q]}: wrong word"
                    k = cycles_of(word)
                    if k > 1:
                        await ctx.tick().repeat(k - 1)
                    ctx.set(done_next[q], 1)  # done in cycle s + k
                    await ctx.tick()
                    ctx.set(done_next[q], 0)
                    if not ctx.get(port.start):
                        break
            retired.append(q)

        return mock

    runs: list[Run] = []

    async def bench(ctx: Any) -> None:
        for start_pc, length in cases:
            ctx.set(ctrl.start_pc, start_pc)
            ctx.set(ctrl.program_length, length)
            ctx.set(ctrl.start, 1)
            await ctx.tick()
            ctx.set(ctrl.start, 0)
            fetch: dict[int, int] = {}
            start: dict[int, int] = {}
            complete: dict[int, int] = {}
            running: list[int | None] = [None] * len(QUEUE_NAMES)
            async for _, _, value in ctx.tick().sample(probe):
                unpacked = []
                for width in widths:
                    unpacked.append(value & ((1 << width) - 1))
                    value >>= width
                t, fetched, fetch_pc, started, completed, done, error, *pcs = unpacked
                if done or error:
                    break
                for q in range(len(QUEUE_NAMES)):
                    if completed >> q & 1:
                        complete[running[q]] = t  # type: ignore[index]
                        running[q] = None
                for q in range(len(QUEUE_NAMES)):
                    if started >> q & 1:
                        assert running[q] is None, f"{QUEUE_NAMES[q]} started while busy"
                        start[pcs[q]] = t
                        running[q] = pcs[q]
                if fetched:
                    fetch[fetch_pc] = t
            status = "done" if ctx.get(ctrl.done) else "error"
            runs.append(
                Run(
                    fetch,
                    start,
                    complete,
                    status,
                    ctx.get(ctrl.elapsed_cycles),
                    ctx.get(ctrl.error_pc) if status == "error" else None,
                    ctx.get(ctrl.error_cause),
                )
            )
        ctx.set(finish, 1)
        while len(retired) < len(QUEUE_NAMES):
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    for q in range(len(QUEUE_NAMES)):
        sim.add_testbench(unit(q), background=True)
    sim.add_testbench(bench)
    sim.run()
    return runs


def compare_with_model(params: SATParams, words: Sequence[int], case: Case, run: Run) -> list[str]:
    """Return the differences between a controller run and the model's run of ``case``.

    The model lists a completion cycle for every started instruction, also those that would
    complete after an error stopped the run; the controller reports only completions up to
    the run's last cycle, so those are compared.
    """
    start_pc, length = case
    machine = Machine(params, "perf")
    machine.load_program(list(words[:length]))
    result = machine.run(start_pc)
    trace = result.trace
    pcs = [int(pc) for pc in trace.pc]
    want = {
        "fetch": dict(zip(pcs, map(int, trace.fetch), strict=True)),
        "start": {pc: int(s) for pc, s in zip(pcs, trace.start, strict=True) if s >= 0},
        "complete": {
            pc: int(c) for pc, c in zip(pcs, trace.complete, strict=True) if 0 <= c <= result.cycles
        },
    }
    got = {
        "fetch": {pc: f for pc, f in run.fetch.items() if pc < length},
        "start": run.start,
        "complete": run.complete,
    }
    problems = []
    for name in ("fetch", "start", "complete"):
        diff = sorted(set(got[name].items()) ^ set(want[name].items()))
        if diff:
            problems.append(f"case {case}: {name} (pc, cycle) differ: {diff[:6]}")
    got_status = (run.status, run.cycles, run.pc, run.cause)
    want_status = (result.status, result.cycles, result.pc, cause_of(result.cause))
    if got_status != want_status:
        problems.append(f"case {case}: status {got_status}, model {want_status} ({result.cause})")
    return problems


# -- random legal instructions ------------------------------------------------------------------

_QUEUE_OPCODES = {
    Queue.LOAD: (Opcode.LOAD,),
    Queue.COMPUTE: (Opcode.GEMM,),
    Queue.PRUNE: (Opcode.PRUNE,),
    Queue.UPDATE: (Opcode.VEC, Opcode.UPDATE),
    Queue.STORE: (Opcode.STORE,),
}
_VEC_BUFFERS = (Buffer.ACT, Buffer.WGT, Buffer.ACC, Buffer.VEC)


def _patterns(params: SATParams, m_max: int = 8) -> list[tuple[int, int]]:
    dense = [(m, m) for m in (1, 2, 4, 8, 16) if m <= m_max]
    return [(n, m) for n, m in params.nm_patterns if m <= m_max] + dense


def random_operation(
    rng: random.Random, params: SATParams, queue: Queue, **masks: Any
) -> isa.Instruction:
    """Return a legal instruction of ``queue`` with small shapes (a few to 100 cycles)."""
    if rng.random() < 0.25:
        return isa.make(Opcode.NOP, queue=queue, **masks)
    op = rng.choice(_QUEUE_OPCODES[queue])
    if op in (Opcode.LOAD, Opcode.STORE):
        rows, cols, planes = rng.randint(1, 4), rng.randint(1, 24), rng.randint(1, 2)
        stride = cols + rng.randint(0, 3)
        return isa.make(
            op, buffer=rng.choice(list(Buffer)), buf_addr=rng.randint(0, 256),
            dram_addr=rng.randint(0, 4096), dram_stride=stride, rows=rows, cols=cols,
            planes=planes, plane_stride=rows * stride + rng.randint(0, 5), **masks,
        )  # fmt: skip
    if op is Opcode.GEMM:
        n, m = rng.choice(_patterns(params))
        return isa.make(
            op, n=n, m=m, dataflow=rng.choice(list(Dataflow)), accumulate=rng.randint(0, 1),
            interleave=rng.randint(1, params.interleave), rows=rng.randint(1, 8),
            cols=rng.randint(1, 8), depth=m * rng.randint(1, 3), **masks,
        )  # fmt: skip
    if op is Opcode.PRUNE:
        n, m = rng.choice(_patterns(params, params.m_max))
        direction = rng.choice(list(Direction))
        rows, cols = rng.randint(1, 6), rng.randint(1, 6)
        rows, cols = (rows, cols * m) if direction is Direction.FF else (rows * m, cols)
        return isa.make(
            op, direction=direction, n=n, m=m, rows=rows, cols=cols, src_addr=0,
            dst_addr=rng.randint(0, 64), **masks,
        )  # fmt: skip
    if op is Opcode.VEC:
        return isa.make(
            op, op=rng.choice(list(VecOp)), length=rng.randint(1, 40),
            dst_buf=rng.choice(_VEC_BUFFERS), dst_addr=rng.randint(0, 100),
            src0_buf=rng.choice(_VEC_BUFFERS), src0_addr=200 + rng.randint(0, 100),
            src1_buf=rng.choice(_VEC_BUFFERS), src1_addr=400, imm=rng.getrandbits(32), **masks,
        )  # fmt: skip
    n, m = rng.choice(_patterns(params, 16))
    return isa.make(
        Opcode.UPDATE, length=m * rng.randint(1, 4), n=n, m=m, w_addr=0, v_addr=200, g_addr=0,
        idx_addr=0, hp_addr=500, **masks,
    )  # fmt: skip


@pytest.fixture(scope="session")
def controller_harness(make_legal: Any) -> Any:
    """The harness functions of this folder (pytest imports test modules by path)."""
    return _Harness(make_legal)


class _Harness:
    run = staticmethod(run_controller)
    compare = staticmethod(compare_with_model)
    cause_of = staticmethod(cause_of)

    def __init__(self, make_legal: Any) -> None:
        self._make_legal = make_legal

    def random_operation(
        self, rng: random.Random, params: SATParams, queue: Queue, **masks: Any
    ) -> isa.Instruction:
        """:func:`random_operation`, its GEMMs free of bank conflicts (odd pitches)."""
        instr = random_operation(rng, params, queue, **masks)
        return self._make_legal(instr, params) if instr.opcode is Opcode.GEMM else instr
