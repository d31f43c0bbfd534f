"""Timing: hand-computed schedules of small programs (docs/isa.md rules 1-5) and the cycle
count of fully serial programs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmsat.hw import isa
from nmsat.hw.isa import Buffer, Dataflow, Direction, Opcode, Queue, VecOp
from nmsat.hw.isa_asm import assemble, assemble_line
from nmsat.hw.params import SATParams, load_params
from nmsat.sim.model import Machine, RunResult, schedule
from nmsat.sim.model.timing import HALT, STOP

TINY = load_params("tiny")

LOAD = "LOAD buffer=ACT rows=8 cols=4 dram_stride=4"
STORE = "STORE buffer=ACC rows=4 cols=4 dram_stride=4 dram_addr=0x1000"
GEMM = "GEMM n=1 m=1 rows=4 cols=4 depth=8 interleave=1 c_pad=1"
VEC = "VEC op=COPY length=36 dst_buf=VEC src0_buf=VEC dst_addr=100"


def _cycles(line: str, params: SATParams = TINY) -> int:
    instr = assemble_line(line)
    assert instr is not None
    return isa.cycles(instr, params)


def _run(text: str, params: SATParams = TINY, mode: str = "perf") -> RunResult:
    machine = Machine(params, mode)  # type: ignore[arg-type]
    machine.load_program(assemble(text))
    return machine.run()


def _with(line: str, tokens: str) -> str:
    opcode, _, rest = line.partition(" ")
    return f"{opcode} {tokens} {rest}"


def _timing(result: RunResult) -> tuple[list[int], list[int], list[int]]:
    trace = result.trace
    return trace.fetch.tolist(), trace.start.tolist(), trace.complete.tolist()


def test_dependent_instructions_wait_for_the_token() -> None:
    result = _run(f"{_with(LOAD, 'push=compute')}\n{_with(GEMM, 'pop=load')}\nHALT")
    load, gemm = _cycles(LOAD), _cycles(GEMM)
    assert result.status == "done"
    assert _timing(result) == ([0, 1, 2], [1, 1 + load, -1], [1 + load, 1 + load + gemm, -1])
    assert result.cycles == 1 + load + gemm
    assert result.trace.pc.tolist() == [0, 1, 2]
    assert result.instructions == 3


def test_a_token_is_usable_in_the_cycle_it_is_pushed() -> None:
    result = _run("NOP queue=load push=compute\nNOP queue=compute pop=load\nHALT")
    assert _timing(result) == ([0, 1, 2], [1, 2, -1], [2, 3, -1])
    assert result.cycles == 3


def test_independent_queues_overlap() -> None:
    result = _run(f"{LOAD}\n{GEMM}\nNOP queue=prune\nHALT")
    load, gemm = _cycles(LOAD), _cycles(GEMM)
    assert _timing(result) == ([0, 1, 2, 3], [1, 2, 3, -1], [1 + load, 2 + gemm, 4, -1])
    assert result.cycles == max(1 + load, 2 + gemm)


def test_same_queue_runs_in_order() -> None:
    result = _run(f"{GEMM}\n{GEMM}\nHALT")
    gemm = _cycles(GEMM)
    assert _timing(result)[1] == [1, 1 + gemm, -1]
    assert result.cycles == 1 + 2 * gemm


def test_dma_queues_share_the_memory_port() -> None:
    result = _run(f"{STORE}\n{LOAD}\nHALT")
    store, load = _cycles(STORE), _cycles(LOAD)
    assert _timing(result)[1:] == ([1, 1 + store, -1], [1 + store, 1 + store + load, -1])


def test_load_wins_the_port_on_a_tie() -> None:
    # The STORE is older in program order and ready as early, but the LOAD goes first.
    text = f"{_with(VEC, 'push=load,store')}\n{_with(STORE, 'pop=update')}\n"
    text += f"{_with(LOAD, 'pop=update')}\nHALT"
    result = _run(text)
    ready = 1 + _cycles(VEC)
    load, store = _cycles(LOAD), _cycles(STORE)
    assert _timing(result)[1] == [1, ready + load, ready, -1]
    assert result.cycles == ready + load + store


@pytest.mark.parametrize("depth", [2, 4])
def test_fifo_back_pressure(depth: int) -> None:
    params = TINY.replace(queue_depths=(4, depth, 4, 4, 4))
    text = f"{_with(VEC, 'push=compute')}\nNOP queue=compute pop=update\n"
    text += "NOP queue=compute\nNOP queue=compute\nHALT"
    result = _run(text, params)
    ready = 1 + _cycles(VEC)
    fetch, start, complete = _timing(result)
    # With depth 2, pc 3 is fetched in the cycle pc 1 starts and frees its slot.
    assert fetch == ([0, 1, 2, ready, ready + 1] if depth == 2 else [0, 1, 2, 3, 4])
    assert start == [1, ready, ready + 1, ready + 2, -1]
    assert complete[3] == result.cycles == ready + 3


def test_halt_timing() -> None:
    assert _run("HALT").cycles == 1
    assert _run("NOP queue=store\nHALT").cycles == 2
    result = _run(f"{GEMM}\nHALT")
    assert result.cycles == 1 + _cycles(GEMM)
    assert result.trace.fetch.tolist() == [0, 1]
    # Fetch stops at HALT: what follows is never fetched.
    result = _run("HALT\nNOP queue=load")
    assert (result.status, result.instructions, result.cycles) == ("done", 1, 1)


# -- fully serial programs -------------------------------------------------------------

TEMPLATES: list[tuple[Opcode, dict[str, Any]]] = [
    (Opcode.LOAD, {"buffer": Buffer.ACT, "rows": 8, "cols": 4, "dram_stride": 4}),
    (
        Opcode.LOAD,
        {
            "buffer": Buffer.IDX,
            "rows": 2,
            "cols": 40,
            "planes": 3,
            "dram_stride": 40,
            "plane_stride": 80,
        },
    ),
    (Opcode.STORE, {"buffer": Buffer.ACC, "rows": 4, "cols": 4, "dram_stride": 4}),
    (Opcode.GEMM, {"n": 2, "m": 8, "rows": 7, "cols": 5, "depth": 32, "interleave": 2}),
    (
        Opcode.GEMM,
        {
            "n": 1,
            "m": 1,
            "rows": 9,
            "cols": 13,
            "depth": 6,
            "interleave": 3,
            "dataflow": Dataflow.OS,
            "accumulate": 1,
            "a_pad": 1,
        },
    ),
    (Opcode.PRUNE, {"n": 1, "m": 4, "rows": 8, "cols": 8, "direction": Direction.BP}),
    (
        Opcode.VEC,
        {
            "op": VecOp.ADD,
            "length": 17,
            "dst_buf": Buffer.VEC,
            "src0_buf": Buffer.ACC,
            "src1_buf": Buffer.ACC,
        },
    ),
    (Opcode.UPDATE, {"length": 24, "n": 2, "m": 4, "v_addr": 24}),
    *[(Opcode.NOP, {"queue": q}) for q in Queue],
]


@given(st.lists(st.sampled_from(TEMPLATES), min_size=1, max_size=30))
def test_serial_program_takes_the_sum_of_its_cycles(program: list[Any]) -> None:
    """Each instruction waits for its predecessor's token: cycles = 1 + sum(isa.cycles)."""
    instrs = [isa.make(op, **fields) for op, fields in program]
    queues = [instr.queue for instr in instrs]
    words = []
    for i, (op, fields) in enumerate(program):
        pop = [queues[i - 1]] if i > 0 and queues[i - 1] is not queues[i] else []
        push = [queues[i + 1]] if i + 1 < len(queues) and queues[i + 1] is not queues[i] else []
        words.append(isa.encode(op, pop=pop, push=push, **fields))
    words.append(isa.encode(Opcode.HALT))
    machine = Machine(TINY, "perf")
    machine.load_program(words)
    result = machine.run()
    costs = [isa.cycles(instr, TINY) for instr in instrs]
    assert result.status == "done"
    assert result.cycles == 1 + sum(costs)
    assert result.trace.start[:-1].tolist() == (1 + np.cumsum([0, *costs[:-1]])).tolist()


def test_schedule_needs_a_terminated_segment() -> None:
    with pytest.raises(ValueError, match="must end"):
        schedule([0], [1], [0], [0], TINY)
    result = schedule([0, HALT], [3, 0], [0, 0], [0, 0], TINY)
    assert (result.status, result.cycles, result.order) == ("done", 4, [0])
    result = schedule([STOP], [0], [0], [0], TINY)
    assert (result.status, result.cycles, result.error_kind) == ("error", 1, "illegal")


# -- the event-driven schedule against a literal cycle-by-cycle reference ---------------------


def _bits(mask: int) -> list[int]:
    return [q for q in range(5) if mask >> q & 1]


def _reference(
    queues: list[int], costs: list[int], pops: list[int], pushes: list[int], params: SATParams
) -> tuple[str, int, int | None, list[int], list[int], list[int]]:
    """Rules 1-6 of docs/isa.md stepped one cycle at a time, with no shortcuts."""
    n = len(queues)
    fetch, start, complete = [-1] * n, [-1] * n, [-1] * n
    tokens = {(p, c): 0 for p in range(5) for c in range(5)}
    pc, fetching, halt_at, illegal_at = 0, True, -1, None
    for t in range(10_000):
        pushed = []
        for i in range(n):
            if complete[i] == t:
                for c in _bits(pushes[i]):
                    tokens[queues[i], c] += 1
                    pushed.append((i, (queues[i], c)))
        started = False
        for q in range(5):
            waiting = [i for i in range(n) if queues[i] == q and fetch[i] >= 0 and start[i] < 0]
            if not waiting:
                continue
            i = waiting[0]
            unit_free = all(complete[j] <= t for j in range(n) if queues[j] == q and start[j] >= 0)
            other = {0: 4, 4: 0}.get(q)
            port_free = all(not start[j] <= t < complete[j] for j in range(n) if queues[j] == other)
            ready = all(tokens[p, q] > 0 for p in _bits(pops[i]))
            if fetch[i] + 1 <= t and unit_free and port_free and ready:
                for p in _bits(pops[i]):
                    tokens[p, q] -= 1
                start[i], complete[i], started = t, t + costs[i], True
        errors = [i for i, pair in pushed if tokens[pair] > params.token_depth]
        if illegal_at is not None and illegal_at[0] == t:
            errors.append(illegal_at[1])
        if errors:
            return "error", t, min(errors), fetch, start, complete
        fetched = False
        if fetching and (pc == 0 or t >= fetch[pc - 1] + 1):
            q = queues[pc]
            held = sum(1 for j in range(n) if queues[j] == q and fetch[j] >= 0 and start[j] < 0)
            if q < 0 or held < params.queue_depths[q]:
                fetch[pc], fetched = t, True
                if q < 0:
                    fetching = False
                    halt_at = t if q == HALT else -1
                    illegal_at = (t + 1, pc) if q == STOP else None
                pc += 1
        busy = any(start[j] <= t < complete[j] for j in range(n) if start[j] >= 0)
        fetched_units = [j for j in range(n) if queues[j] >= 0 and fetch[j] >= 0]
        all_started = all(start[j] >= 0 for j in fetched_units)
        everything_done = all(complete[j] <= t for j in fetched_units)
        if halt_at >= 0 and t >= halt_at + 1 and all_started and everything_done:
            return "done", t, None, fetch, start, complete
        if not (busy or started or fetched) and illegal_at is None:
            waiting = [j for j in fetched_units if start[j] < 0]
            return "error", t, min(waiting), fetch, start, complete
    raise AssertionError("reference did not terminate")


@st.composite
def random_programs(draw: st.DrawFn) -> tuple[list[int], ...]:
    size = draw(st.integers(0, 12))
    queues = draw(st.lists(st.integers(0, 4), min_size=size, max_size=size))
    queues.append(draw(st.sampled_from([HALT, HALT, STOP])))
    costs = draw(st.lists(st.integers(1, 4), min_size=size + 1, max_size=size + 1))
    masks = st.lists(st.sampled_from([0, 0, 0, 1, 2, 4, 8, 16, 3, 17]), min_size=size + 1)
    pops = draw(masks.map(lambda m: m[: size + 1]))
    pushes = draw(masks.map(lambda m: m[: size + 1]))
    return queues, costs, pops, pushes


@settings(max_examples=300)
@given(
    random_programs(),
    st.lists(st.integers(1, 3), min_size=5, max_size=5),
    st.integers(1, 3),
)
def test_schedule_equals_the_cycle_by_cycle_reference(
    program: tuple[list[int], ...], depths: list[int], token_depth: int
) -> None:
    params = TINY.replace(queue_depths=tuple(depths), token_depth=token_depth)
    queues, costs, pops, pushes = program
    got = schedule(queues, costs, pops, pushes, params)
    status, cycles, index, fetch, start, complete = _reference(*program, params)
    assert (got.status, got.cycles, got.error_index) == (status, cycles, index)
    assert (got.fetch, got.start, got.complete) == (fetch, start, complete)
