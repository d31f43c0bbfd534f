# amaranth: UnusedElaboratable=no
"""Controller against the Python model (sim.model Machine, perf mode), cycle by cycle.

Random programs with dependency tokens (placed as a compiler would, and some with random
masks that overflow or deadlock), run back to back in one simulation per configuration, and
every error of docs/isa.md rule 6; for each run the fetch, start and completion cycle of
every instruction, the status, the error pc and cause and the cycle count must equal the
model's exactly.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from nmsat.hw import isa
from nmsat.hw.ctrl import PRIME_CYCLES, Controller, ErrorCause, IssueSignature
from nmsat.hw.isa import Buffer, Opcode, Queue, VecOp
from nmsat.hw.params import SATParams, load_params

LOAD, COMPUTE, PRUNE, UPDATE, STORE = Queue


def _random_program(
    rng: random.Random, params: SATParams, harness: Any, count: int, chaos: float
) -> list[int]:
    """Instructions on random queues with tokens, ending with HALT.

    An instruction pops from queue p only if an earlier instruction, in program order,
    pushed a token to its queue that no other instruction took (a compiler's placement: no
    deadlock); leftover tokens are drained by NOPs. A ``chaos`` fraction of the instructions
    takes random masks instead (overflows and deadlocks).
    """
    outstanding = {(p, c): 0 for p in Queue for c in Queue}
    words = []
    for _ in range(count):
        q = rng.choices(list(Queue), (3, 3, 1, 2, 3))[0]
        pop, push = [], []
        if rng.random() < chaos:
            pop = [p for p in Queue if rng.random() < 0.2]
            push = [c for c in Queue if rng.random() < 0.2]
        else:
            for p in Queue:
                if outstanding[p, q] and rng.random() < 0.5:
                    outstanding[p, q] -= 1
                    pop.append(p)
            for c in Queue:
                if outstanding[q, c] < params.token_depth and rng.random() < 0.25:
                    outstanding[q, c] += 1
                    push.append(c)
        instr = harness.random_operation(rng, params, q, pop=pop, push=push)
        isa.check_for_params(instr, params)
        words.append(instr.encode())
    for (p, c), left in outstanding.items():
        words += [isa.encode(Opcode.NOP, queue=c, pop=[p])] * left
    # HALT's masks are ignored.
    masks = [Queue(rng.randrange(5))] if rng.random() < 0.3 else []
    words.append(isa.encode(Opcode.HALT, pop=masks, push=masks))
    return words


def _check(params: SATParams, words: list[int], cases: list[tuple[int, int]], harness: Any) -> list:
    runs = harness.run(params, words, cases)
    problems = []
    for case, run in zip(cases, runs, strict=True):
        problems += harness.compare(params, words, case, run)
    assert not problems, "\n".join(problems[:10])
    return runs


_TINY = load_params("tiny")
_CONFIGS = {
    "tiny": _TINY,
    # Shallow queues and token counters: fetch stalls, same-cycle FIFO refills, overflows.
    "shallow": _TINY.replace(queue_depths=(1, 2, 1, 1, 3), token_depth=2),
    "single": _TINY.replace(queue_depths=(2, 1, 3, 1, 1), token_depth=1, dram_latency_cycles=3),
}


@pytest.mark.sim
@pytest.mark.parametrize("config", sorted(_CONFIGS))
def test_random_programs_match_model(config: str, controller_harness: Any) -> None:
    params = _CONFIGS[config]
    rng = random.Random(f"controller-{config}")
    words: list[int] = []
    starts = []
    for k in range(60):
        starts.append(len(words))
        chaos = 0.3 if k % 4 == 3 else 0.0
        words += _random_program(rng, params, controller_harness, rng.randint(1, 80), chaos)
    cases = [(start, len(words)) for start in starts]
    runs = _check(params, words, cases, controller_harness)
    statuses = {run.cause for run in runs}
    assert ErrorCause.NONE in statuses
    assert sum(run.status == "done" for run in runs) >= 30


def _program(*lines: Any) -> list[int]:
    """Encode (opcode, fields) pairs; an int is a raw word."""
    words = []
    for line in lines:
        if isinstance(line, int):
            words.append(line)
        else:
            opcode, fields = line
            words.append(isa.encode(opcode, **fields))
    return words


def _raw(opcode: Opcode, fields: dict[str, Any], *, flip: int = 0, **raw: int) -> int:
    """Encode ``fields`` legally, then force payload fields to raw values and flip a bit."""
    word = isa.encode(opcode, **fields)
    layout = dict(isa.PAYLOADS[opcode]) if opcode in isa.PAYLOADS else {}
    for name, value in raw.items():
        field = layout[name]
        offset = isa.HEADER.size + field.offset
        word &= ~(((1 << field.width) - 1) << offset)
        word |= value << offset
    return word ^ flip


_LONG_LOAD = (Opcode.LOAD, {"buffer": Buffer.ACT, "rows": 40, "cols": 8, "dram_stride": 8})
_GEMM = {"n": 2, "m": 4, "rows": 4, "cols": 4, "depth": 8, "interleave": 1, "c_pad": 1}
_NOP_PUSH = (Opcode.NOP, {"queue": LOAD, "push": [COMPUTE]})


def _error_programs(params: SATParams) -> list[tuple[ErrorCause, list[int], bool]]:
    """(expected cause, program, ends with HALT) for every error of rule 6 and its edges.

    A program without HALT runs with ``program_length`` at its end (off the end), the others
    with the whole instruction memory as the program.
    """
    programs: list[tuple[ErrorCause, list[int], bool]] = []

    def add(cause: ErrorCause, *lines: Any) -> None:
        words = _program(*lines)
        programs.append((cause, words, words[-1] == halt))

    halt = isa.encode(Opcode.HALT)
    dma = {"buffer": Buffer.ACT, "rows": 2, "cols": 4, "dram_stride": 4}
    prune = {"n": 1, "m": 4, "rows": 4, "cols": 16}
    update = {"length": 8, "n": 8, "m": 8, "v_addr": 8}
    vec_add = {"length": 8, "op": VecOp.ADD, "src1_addr": 16}
    nops = [_NOP_PUSH] * params.token_depth
    add(ErrorCause.NONE, halt)
    add(ErrorCause.NONE, (Opcode.HALT, {"pop": [LOAD], "push": list(Queue)}), halt)
    # LOAD and STORE ready in the same cycle: the LOAD takes the memory port first.
    add(ErrorCause.NONE, (Opcode.STORE, dma), (Opcode.LOAD, dma), (Opcode.STORE, dma), halt)
    # An illegal opcode while a long LOAD runs (the next run waits for the unit to finish).
    add(ErrorCause.ILLEGAL_OPCODE, _LONG_LOAD, (Opcode.NOP, {"queue": PRUNE}), 7, halt)
    add(ErrorCause.ILLEGAL_OPCODE, 14)
    add(ErrorCause.ILLEGAL_FIELD, isa.encode(Opcode.NOP) | 1 << 14)  # reserved bit
    add(ErrorCause.ILLEGAL_FIELD, halt | 1 << 200)  # unused bit
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.NOP, {}, queue=5))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.VEC, {"length": 4}, op=6))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.GEMM, _GEMM, depth=6))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.GEMM, _GEMM, m=3))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.GEMM, _GEMM, n=3, m=4))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.GEMM, _GEMM, interleave=params.interleave + 1))
    # C's 4 rows 4 apart, packed: in one bank of 4 (docs/isa.md, bank conflicts).
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.GEMM, _GEMM, c_pad=0))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.PRUNE, prune, n=16, m=16))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.LOAD, dma, dram_stride=3))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.UPDATE, update, v_addr=4))
    add(ErrorCause.ILLEGAL_FIELD, _raw(Opcode.VEC, vec_add, dst_addr=19, src1_buf=0))
    add(ErrorCause.OUT_OF_RANGE, _raw(Opcode.LOAD, dma, buf_addr=params.act_buffer_entries - 7))
    add(ErrorCause.OUT_OF_RANGE, _raw(Opcode.GEMM, _GEMM, c_addr=params.acc_buffer_entries - 15))
    add(ErrorCause.OUT_OF_RANGE, _raw(Opcode.STORE, dma, dram_addr=params.dram_bytes - 14))
    # token_depth + 1 pushes of one-cycle NOPs without a consumer.
    add(ErrorCause.TOKEN_OVERFLOW, *nops, _NOP_PUSH, halt)
    # The overflowing push and an illegal instruction's error in the same cycle: the push's
    # instruction (the lower pc) is reported.
    add(ErrorCause.TOKEN_OVERFLOW, *nops, _NOP_PUSH, 9, halt)
    # The overflow in the cycle that would have been done: the error wins.
    add(ErrorCause.TOKEN_OVERFLOW, *nops, _LONG_LOAD, _NOP_PUSH, halt)
    add(ErrorCause.DEADLOCK, (Opcode.GEMM, {**_GEMM, "pop": [STORE]}), halt)
    # Deadlock and an illegal instruction's error in the same cycle: the illegal one wins
    # (the model stops at the error before it looks for quiescence).
    add(ErrorCause.ILLEGAL_OPCODE, (Opcode.NOP, {"queue": LOAD, "pop": [COMPUTE]}), 8, halt)
    # A full queue whose head waits forever stalls fetch: still a deadlock.
    add(ErrorCause.DEADLOCK, *[(Opcode.NOP, {"queue": PRUNE, "pop": [UPDATE]})] * 6, halt)
    add(ErrorCause.PAST_END, (Opcode.NOP, {"queue": STORE}), _LONG_LOAD)
    return programs


@pytest.mark.sim
def test_errors_match_model(controller_harness: Any) -> None:
    params = load_params("tiny")
    words: list[int] = []
    cases = []
    expected = []
    for cause, program, halts in _error_programs(params):
        start = len(words)
        words += program
        # Off the end: the program (as far as the controller is told) ends with the segment.
        cases.append((start, len(words) + (1000 if halts else 0)))
        expected.append(cause)
    words.append(isa.encode(Opcode.HALT))
    # Segments run with the whole memory as the program, except off-the-end ones.
    cases = [(start, min(length, len(words))) for start, length in cases]
    # A start pc at and past the end of the program.
    cases += [(3, 3), (5, 2)]
    expected += [ErrorCause.PAST_END, ErrorCause.PAST_END]
    runs = _check(params, words, cases, controller_harness)
    assert [run.cause for run in runs] == expected
    assert runs[0].status == "done" and runs[0].cycles == 1


@pytest.mark.sim
def test_status_timing() -> None:
    """Prime latency, ``running``, registered ``done``, a ``start`` while running ignored."""
    ctrl = Controller(load_params("tiny"))
    m = Module()
    m.submodules.ctrl = ctrl
    program = [isa.encode(Opcode.NOP, queue=STORE), isa.encode(Opcode.HALT)] * 2
    m.submodules.imem = imem = Memory(shape=isa.INSTR_BITS, depth=4, init=program)
    read = imem.read_port()
    m.d.comb += [read.addr.eq(ctrl.imem_addr[:2]), ctrl.imem_data.eq(read.data)]
    seen = []

    async def bench(ctx: Any) -> None:
        ctx.set(ctrl.program_length, 4)
        for cycle in range(12):
            # start in cycle 0 and again (ignored) in cycle 3, while the run primes
            ctx.set(ctrl.start, cycle in (0, 3))
            ctx.set(ctrl.start_pc, 0 if cycle == 0 else 2)
            seen.append(
                (ctx.get(ctrl.trace.fetch), ctx.get(ctrl.running), ctx.get(ctrl.done),
                 ctx.get(ctrl.elapsed_cycles))
            )  # fmt: skip
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    first = PRIME_CYCLES + 1
    assert [f for f, *_ in seen].index(1) == first
    assert [r for _, r, *_ in seen] == [0] + [1] * (first + 2) + [0] * (11 - first - 2)
    # NOP fetched at 0, starts at 1, completes at 2; HALT fetched at 1: done rises at 2.
    assert seen[first + 3][2:] == (1, 2) and seen[first + 2][2] == 0


def test_interface() -> None:
    params = load_params("tiny")
    ctrl = Controller(params, pc_bits=20)
    assert ctrl.pc_bits == 20 and ctrl.params is params
    assert ctrl.signature.members["compute"].signature == IssueSignature(20)
    assert len(ctrl.imem_data) == isa.INSTR_BITS and len(ctrl.error_pc) == 20
    with pytest.raises(ValueError, match="pc_bits"):
        Controller(params, pc_bits=0)


@pytest.mark.parametrize("name", ["tiny", "vcu1525"])
def test_elaborates_and_converts(name: str) -> None:
    ctrl = Controller(load_params(name))
    Fragment.get(ctrl, None)
    if name == "tiny":
        text = verilog.convert(ctrl, name="nmsat_controller")
        assert "module nmsat_controller" in text
        assert "compute__instr" in text and "imem_data" in text
