# amaranth: UnusedElaboratable=no
"""The Accelerator top level against the Python model (sim.model.Machine, exact mode).

Compiled training steps of small MLPs (every opcode) run segment by segment on tiny.yaml in
pysim: the init segment, then the step's segments with the host's softmax loss between them,
with sim.testing.DRAMModel as external memory. The final external memory must equal the
model's bit for bit, every segment's cycle count must equal the model's, and so must the
cycle of every fetch, start and completion. An illegal instruction must end the run with the error
status, the right pc and cause, in the model's cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.sim import Simulator
from numpy.typing import NDArray

from nmsat.compiler import HostOp, Program, compile_model, emit
from nmsat.hw import isa
from nmsat.hw.ctrl import ErrorCause
from nmsat.hw.isa import Buffer, Opcode, Queue
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.top import Accelerator
from nmsat.models.zoo import load_model_yaml
from nmsat.sim.host import softmax_loss_grad
from nmsat.sim.model import Machine, RunResult
from nmsat.sim.model.decode import decode_fast
from nmsat.sim.runner import default_data, read_tensor, write_tensor
from nmsat.sim.testing import DRAMModel

# Two small MLPs: 8 -> 8 -> 8 (fc1 N:M in FF only: its dX is never needed) and
# 8 -> 16 -> 8 -> 8 (fc2 N:M in FF and BP, so PRUNE BP with N < M and the sparse BP GEMM).
_MLP2 = """\
name: mlp2
input: [8]
layers:
  - {op: linear, name: fc1, c_out: 8}
  - {op: relu, name: relu1}
  - {op: linear, name: fc2, c_out: 8}
  - {op: softmax, name: softmax}
"""
_MLP3 = """\
name: mlp3
input: [8]
layers:
  - {op: linear, name: fc1, c_out: 16}
  - {op: relu, name: relu1}
  - {op: linear, name: fc2, c_out: 8}
  - {op: relu, name: relu2}
  - {op: linear, name: fc3, c_out: 8}
  - {op: softmax, name: softmax}
"""


@dataclasses.dataclass
class _Run:
    """What the accelerator did in one run; event cycles count from the first fetch."""

    status: str
    cycles: int
    error_pc: int | None
    cause: ErrorCause
    fetch: list[tuple[int, int]]  # (cycle, pc)
    start: list[tuple[int, int]]  # (cycle, queue)
    complete: list[tuple[int, int]]  # (cycle, queue)
    conflicts: int = 0  # cycles in which a buffer port met two rows of one bank


class _ImageMemory:
    """DRAM access to a numpy image, the two methods sim.runner's tensor helpers use."""

    def __init__(self, image: NDArray[np.uint8]) -> None:
        self.image = image

    def read_dram(self, addr: int, nbytes: int) -> bytes:
        return self.image[addr : addr + nbytes].tobytes()

    def write_dram(self, addr: int, data: Any) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self.image[addr : addr + raw.size] = raw


class _Host:
    """Runs the accelerator in pysim: loads a program, then the runs and host work of
    :meth:`run`, all in one simulation.

    ``steps`` lists start pcs (one run each, to its HALT or error) and host functions,
    called between runs with the DRAM image as an :class:`_ImageMemory`.
    """

    def __init__(self, params: SATParams, words: Sequence[int], image: NDArray[np.uint8]):
        self.params = params
        self.words = list(words)
        self.image = image
        self.top = Accelerator(params)

    def run(self, steps: Sequence[Any]) -> list[_Run]:
        top = self.top
        m = Module()
        m.submodules.top = top
        trace = top.trace
        fields = [top.elapsed_cycles, trace.fetch, trace.fetch_pc, trace.start,
                  trace.complete, top.done, top.error, top.bank_conflict]  # fmt: skip
        widths = [len(field) for field in fields]
        probe = Signal(sum(widths))
        m.d.comb += probe.eq(Cat(*fields))
        dram = DRAMModel(top.bus, self.params, self.image)
        runs: list[_Run] = []

        async def bench(ctx: Any) -> None:
            for pc, word in enumerate(self.words):
                ctx.set(top.program.addr, pc)
                ctx.set(top.program.data, word)
                ctx.set(top.program.en, 1)
                await ctx.tick()
            ctx.set(top.program.en, 0)
            for step in steps:
                if callable(step):
                    step(_ImageMemory(self.image))
                    continue
                ctx.set(top.start_pc, step)
                ctx.set(top.program_length, len(self.words))
                ctx.set(top.start, 1)
                await ctx.tick()
                ctx.set(top.start, 0)
                run = _Run("", 0, None, ErrorCause.NONE, [], [], [])
                async for _, _, value in ctx.tick().sample(probe):
                    unpacked = []
                    for width in widths:
                        unpacked.append(value & ((1 << width) - 1))
                        value >>= width
                    t, fetched, fetch_pc, started, completed, done, error, clash = unpacked
                    run.conflicts += clash
                    if done or error:
                        break
                    if fetched:
                        run.fetch.append((t, fetch_pc))
                    run.start += [(t, q) for q in range(len(Queue)) if started >> q & 1]
                    run.complete += [(t, q) for q in range(len(Queue)) if completed >> q & 1]
                run.status = "done" if ctx.get(top.done) else "error"
                run.cycles = ctx.get(top.elapsed_cycles)
                run.cause = ctx.get(top.error_cause)
                run.error_pc = ctx.get(top.error_pc) if run.status == "error" else None
                runs.append(run)

        sim = Simulator(m)
        sim.add_clock(1e-8)
        sim.add_process(dram.process)
        sim.add_testbench(bench)
        sim.run()
        return runs


def _expected_events(machine: Machine, result: RunResult) -> dict[str, list[tuple[int, int]]]:
    """The model's fetch (cycle, pc), start and completion (cycle, queue) events of a run,
    up to its last cycle, in the order the accelerator's trace lists them."""
    trace = result.trace
    events: dict[str, list[tuple[int, int]]] = {"fetch": [], "start": [], "complete": []}
    for pc, fetch, start, complete in zip(
        trace.pc.tolist(), trace.fetch.tolist(), trace.start.tolist(),
        trace.complete.tolist(), strict=True,
    ):  # fmt: skip
        if fetch <= result.cycles:
            events["fetch"].append((fetch, pc))
        if start < 0:
            continue
        instr = decode_fast(machine.program[pc])
        queue = instr.queue
        assert queue is not None
        events["start"].append((start, queue.value))
        if complete <= result.cycles:
            events["complete"].append((complete, queue.value))
    for key in events:
        events[key].sort()
    return events


def _check_run(machine: Machine, result: RunResult, run: _Run, what: str) -> None:
    assert run.status == result.status, f"{what}: {run} vs {result.cause}"
    assert run.cycles == result.cycles, f"{what}: {run.cycles} cycles, model {result.cycles}"
    assert run.conflicts == 0, f"{what}: {run.conflicts} cycles with a bank conflict"
    want = _expected_events(machine, result)
    assert sorted(run.fetch) == want["fetch"], what
    assert sorted(run.start) == want["start"], what
    assert sorted(run.complete) == want["complete"], what
    if result.status == "error":
        assert run.error_pc == result.pc, what


def _compile(
    tmp_path: Path, text: str, batch: int, nm: tuple[int, int], params: SATParams
) -> Program:
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_model(load_model_yaml(path, batch), nm, params)


def _softmax_step(prog: Program, op: HostOp, labels: NDArray[Any]) -> Any:
    """A host function applying the softmax loss ``op`` to a DRAM image or a Machine."""
    logits_t = prog.tensor(op.reads[0])
    grad_t = prog.tensor(op.writes[0])

    def apply(memory: Any) -> None:
        logits = read_tensor(memory, logits_t).reshape(logits_t.shape[0], -1)
        grad = softmax_loss_grad(logits, labels).reshape(grad_t.shape)
        write_tensor(memory, grad_t, grad)

    return apply


@pytest.mark.sim
@pytest.mark.parametrize(
    ("text", "batch", "nm"),
    [
        pytest.param(_MLP2, 2, (2, 4), id="mlp2-2:4"),
        pytest.param(_MLP3, 4, (2, 8), id="mlp3-2:8", marks=pytest.mark.slow),
    ],
)
def test_compiled_step_matches_model(
    tmp_path: Path, text: str, batch: int, nm: tuple[int, int]
) -> None:
    params = load_params("tiny")
    prog = _compile(tmp_path, text, batch, nm, params)
    emitted = emit(prog)
    manifest = emitted.manifest
    opcodes = {Opcode(word & 0xF) for word in emitted.words}
    assert opcodes == {Opcode.LOAD, Opcode.STORE, Opcode.GEMM, Opcode.PRUNE, Opcode.VEC,
                       Opcode.UPDATE, Opcode.HALT}  # fmt: skip

    size = manifest["dram_bytes"] + 4096
    machine = Machine(params, "exact", dram_bytes=size)
    machine.load_program(list(emitted.words))
    data = default_data(prog, seed=3)
    for tensor in prog.tensors:
        if tensor.name in data:
            write_tensor(machine, tensor, data[tensor.name])
    image = np.frombuffer(machine.read_dram(0, size), dtype=np.uint8).copy()
    initial = image.copy()

    # The same sequence on both: the init segment, then the step's segments with the host's
    # operations before each.
    segments = manifest["segments"]
    order = [s for s in segments if s["kind"] == "init"] + [
        s for s in segments if s["kind"] == "step"
    ]
    steps: list[Any] = []
    for segment in order:
        for host in segment["host_before"]:
            op = HostOp.from_dict(host)
            assert op.kind == "softmax_loss"
            steps.append(_softmax_step(prog, op, np.asarray(data["labels"])))
        steps.append(segment["start_pc"])
    assert len(order) == 3 and sum(callable(s) for s in steps) == 1

    results = []
    for step in steps:
        if callable(step):
            step(machine)
        else:
            results.append(machine.run(step))
    assert all(r.status == "done" for r in results), [r.cause for r in results]

    runs = _Host(params, emitted.words, image).run(steps)
    for index, (run, result) in enumerate(zip(runs, results, strict=True)):
        _check_run(machine, result, run, f"segment {index}")
    final = machine.read_dram(0, size)
    assert not np.array_equal(image, initial)  # the step changed the weights
    diff = np.flatnonzero(image != np.frombuffer(final, dtype=np.uint8))
    assert diff.size == 0, f"{diff.size} bytes differ, first at {diff[:8]}"


@pytest.mark.sim
def test_illegal_instruction_stops_with_its_pc() -> None:
    params = load_params("tiny")
    words = [
        isa.encode(Opcode.LOAD, push=[Queue.COMPUTE], buffer=Buffer.ACT, dram_addr=0x100,
                   rows=1, cols=32),
        isa.encode(Opcode.GEMM, pop=[Queue.LOAD], n=4, m=4, rows=4, cols=4, depth=4,
                   interleave=1, c_pad=1),
        7,  # undefined opcode
        isa.encode(Opcode.HALT),
        # A second program: a VEC whose destination overruns the ACC buffer.
        isa.encode(Opcode.VEC, length=16, dst_buf=Buffer.ACC,
                   dst_addr=params.acc_buffer_entries - 8, src0_buf=Buffer.VEC),
        isa.encode(Opcode.HALT),
    ]  # fmt: skip
    size = 1 << 16
    machine = Machine(params, "exact", dram_bytes=size)
    machine.load_program(words)
    results = [machine.run(0), machine.run(4)]
    assert [r.status for r in results] == ["error", "error"]
    assert [r.pc for r in results] == [2, 4]
    image = np.zeros(size, dtype=np.uint8)
    runs = _Host(params, words, image).run([0, 4])
    for run, result in zip(runs, results, strict=True):
        _check_run(machine, result, run, f"run from {result.trace.pc[0]}")
    assert [run.cause for run in runs] == [ErrorCause.ILLEGAL_OPCODE, ErrorCause.OUT_OF_RANGE]
