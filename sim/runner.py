"""Run a compiled training step on the Python model: segments, host operations, statistics.

A compiled :class:`~nmsat.compiler.Program` is a sequence of device segments (each ending with
HALT) with host operations between them, plus an init segment (pre-generation's first FF and
BP copies). :func:`simulate` runs the init segment once, then the step's segments in order;
between two segments it performs the host operations in numpy on the DRAM image (fast and
exact modes) or skips them (perf mode: they take no accelerator time). The step's cycle count
is the sum of its segments' cycle counts (each counted as docs/isa.md defines it); host time
is not included and is reported separately as the work left to the host.

Per-pass cycles partition each segment's timeline: every cycle goes to the pass (FF, BP, WU,
UPDATE, PRUNE, element-wise) of the oldest instruction running in it, or to ``idle`` when no
instruction runs (fetch and token waits). They add up to the step's cycles.

Ref: DESIGN.md sections 6 and 7; STYLE.md G12 (one runner over a backend).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.compiler import HostOp, Phase, Program, Tensor, emit
from nmsat.hw.errors import NmsatError
from nmsat.hw.params import SATParams
from nmsat.models.zoo import Model, get_model, model_names
from nmsat.sim.events import Events
from nmsat.sim.host import HostError, HostState, chw, interior, softmax_loss_grad, with_interior
from nmsat.sim.model import Machine, RunResult

__all__ = [
    "PASS_NAMES",
    "SimulationError",
    "StepResult",
    "attribute",
    "default_data",
    "load_machine",
    "read_tensor",
    "simulate",
    "write_tensor",
]

#: Keys of :attr:`StepResult.passes`, in report order.
PASS_NAMES = ("ff", "bp", "wu", "update", "prune", "vector", "idle")

_NP_DTYPES: Mapping[str, Any] = {"fp16": np.float16, "fp32": np.float32, "u8": np.uint8}


class SimulationError(NmsatError):
    """A run stopped with the error status (illegal instruction, bounds, token deadlock)."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one simulated training step cost.

    Members
    -------
    cycles : int
        Cycles of the step's device segments, summed.
    init_cycles : int
        Cycles of the init segment (pre-generation's first copies), not in ``cycles``.
    passes : dict of str to int
        ``cycles`` partitioned by pass (:data:`PASS_NAMES`).
    events : Events
        Event counts of the step (init segment excluded).
    segments : int
        Device segments of the step.
    host_ops : tuple of HostOp
        Work left to the host, in order.
    instructions : int
        Instructions of the step.
    """

    cycles: int
    init_cycles: int
    passes: dict[str, int]
    events: Events
    segments: int
    host_ops: tuple[HostOp, ...]
    instructions: int


def _check(result: RunResult, what: str) -> None:
    if result.status != "done":
        opcode = result.opcode or "?"
        raise SimulationError(f"{what}: error at pc {result.pc} ({opcode}): {result.cause}")


def attribute(result: RunResult, phase_of_pc: list[str]) -> dict[str, int]:
    """Partition a run's cycles by the label of its oldest running instruction.

    ``phase_of_pc[pc]`` labels instruction ``pc`` (a pass name, or any string such as
    ``"layer|pass"``); cycles in which nothing runs go to ``"idle"``. The values add up to
    the run's cycles.
    """
    out = dict.fromkeys(PASS_NAMES, 0)
    trace = result.trace
    events: list[tuple[int, int, int]] = []
    for pc, start, complete in zip(
        trace.pc.tolist(), trace.start.tolist(), trace.complete.tolist(), strict=True
    ):
        if start >= 0 and complete > start:
            events.append((start, 1, pc))
            events.append((complete, 0, pc))
    events.sort()
    active: list[int] = []
    ended: set[int] = set()
    time = 0
    for t, kind, pc in events:
        if t > time:
            while active and active[0] in ended:
                heapq.heappop(active)
            key = phase_of_pc[active[0]] if active else "idle"
            out[key] = out.get(key, 0) + t - time
            time = t
        if kind:
            heapq.heappush(active, pc)
        else:
            ended.add(pc)
    out["idle"] += max(0, result.cycles - time)
    return out


def _tensor_view(t: Tensor) -> tuple[Any, int]:
    dtype = _NP_DTYPES[t.dtype]
    return dtype, t.elements


def write_tensor(machine: Machine, t: Tensor, values: NDArray[Any]) -> None:
    """Write ``values`` (any shape with ``t.elements`` elements) into tensor ``t``."""
    dtype, count = _tensor_view(t)
    arr = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    if arr.size != count:
        raise SimulationError(f"tensor {t.name}: {arr.size} values for {count} elements")
    machine.write_dram(t.addr, arr.view(np.uint8))


def read_tensor(machine: Machine, t: Tensor) -> NDArray[Any]:
    """Read tensor ``t`` in its stored shape."""
    dtype, _count = _tensor_view(t)
    raw = machine.read_dram(t.addr, t.nbytes)
    return np.frombuffer(raw, dtype=dtype).reshape(t.shape).copy()


def default_data(prog: Program, seed: int = 0) -> dict[str, NDArray[Any]]:
    """Initial contents for a functional run: inputs, labels, weights, hyper-parameters.

    Inputs are uniform in [0, 1) inside their zero border; weights are He-normal FP32
    (fan-in ``K``); momentum starts at zero; the hyper-parameters are lr 0.05, momentum 0.9,
    weight decay 5e-4 and the SR-STE lambda 2e-4; ``"labels"`` holds one class per sample.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, NDArray[Any]] = {}
    for t in prog.tensors:
        if t.role == "input":
            values = np.zeros(t.shape, np.float16)
            p = t.padding
            inner = values[:, p : t.shape[1] - p, p : t.shape[2] - p, :]
            inner[...] = rng.random(inner.shape).astype(np.float16)
            data[t.name] = values
        elif t.role == "weight" and t.dtype == "fp32":
            fan_in = t.shape[1]
            data[t.name] = (rng.standard_normal(t.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif t.name == "hyper":
            data[t.name] = np.array([0.05, 0.9, 5e-4, 2e-4], np.float32)
    logits = prog.tensors[[t.name for t in prog.tensors].index(_loss_op(prog).reads[0])]
    data["labels"] = rng.integers(0, logits.shape[0], prog.batch)
    return data


def _loss_op(prog: Program) -> HostOp:
    for op in prog.ops:
        if op.host is not None and op.host.kind == "softmax_loss":
            return op.host
    raise SimulationError("the program has no loss operation")


def _host_softmax_loss(machine: Machine, prog: Program, op: HostOp, labels: NDArray[Any]) -> None:
    logits_t = prog.tensor(op.reads[0])
    grad_t = prog.tensor(op.writes[0])
    logits = read_tensor(machine, logits_t).reshape(logits_t.shape[0], -1)
    write_tensor(machine, grad_t, softmax_loss_grad(logits, labels).reshape(grad_t.shape))


def load_machine(
    prog: Program,
    params: SATParams,
    mode: str,
    data: Mapping[str, NDArray[Any]] | None = None,
    words: Sequence[int] | None = None,
) -> Machine:
    """A machine holding ``prog`` and, in fast and exact mode, the tensors named in ``data``.

    The DRAM image covers every tensor (perf mode allocates none). ``words`` saves emitting
    the program again when the caller has them.
    """
    dram = max((t.addr + t.nbytes for t in prog.tensors), default=0) + 4096
    machine = Machine(params, mode, dram_bytes=dram if mode != "perf" else None)  # type: ignore[arg-type]
    machine.load_program(list(words if words is not None else emit(prog).words))
    if mode != "perf" and data is not None:
        for t in prog.tensors:
            if t.name in data:
                write_tensor(machine, t, data[t.name])
    return machine


def simulate(
    prog: Program,
    params: SATParams,
    mode: str = "perf",
    *,
    data: Mapping[str, NDArray[Any]] | None = None,
    machine: Machine | None = None,
    run_init: bool = True,
    progress: Callable[[int, int], None] | None = None,
    host_state: HostState | None = None,
    on_segment: Callable[[RunResult], None] | None = None,
) -> StepResult:
    """Run one training step of ``prog``; see the module docstring.

    Parameters
    ----------
    mode : {"perf", "fast", "exact"}
        The model's mode. Fast and exact modes need ``data`` (see :func:`default_data`) or
        a ``machine`` already holding it.
    machine : Machine, optional
        Reuse a machine (its DRAM holds the state of earlier steps); ``run_init`` False then
        skips the init segment, for a second step.
    progress : callable, optional
        Called as ``progress(segments_done, segments_total)``.
    host_state : HostState, optional
        State of the host operations in fast and exact modes (normalisation parameters and
        what forward passes save for backward passes). Pass the same state to every step
        of a multi-step run. Default: a fresh state over the zoo model named
        ``prog.model`` at ``prog.batch`` (none for other models: then normalisation and
        pooling need ``HostState(model)``).
    on_segment : callable, optional
        Called with each step segment's :class:`~nmsat.sim.model.RunResult` (its trace and
        events), for per-layer profiles (:mod:`nmsat.reports._step_profile`).

    Raises
    ------
    SimulationError
        When a segment stops with the error status, or a host operation is not supported
        in a functional mode.
    """
    emitted = emit(prog)
    manifest = emitted.manifest
    if machine is None:
        if mode != "perf" and data is None:
            data = default_data(prog)
        machine = load_machine(prog, params, mode, data, emitted.words)
    labels = np.asarray(data["labels"]) if data is not None and "labels" in data else None
    if host_state is None and mode != "perf":
        host_state = HostState(_zoo_model(prog))
    device_ops = [op for op in prog.ops if op.opcode is not None]
    phase_of_pc = [op.phase.value if op.phase is not Phase.CONTROL else "idle" for op in device_ops]
    segments = manifest["segments"]
    step_segments = [s for s in segments if s["kind"] == "step"]
    total = len(step_segments) + (1 if run_init else 0)
    done = 0
    init_cycles = 0
    if run_init:
        for seg in segments:
            if seg["kind"] == "init":
                result = machine.run(seg["start_pc"])
                _check(result, "init segment")
                init_cycles += result.cycles
        done += 1
    cycles = 0
    events = Events()
    passes = dict.fromkeys(PASS_NAMES, 0)
    hosts: list[HostOp] = []
    for index, seg in enumerate(step_segments):
        for host in seg["host_before"]:
            op = HostOp.from_dict(host)
            hosts.append(op)
            if host_state is not None and mode != "perf":
                _run_host(machine, prog, op, labels, host_state)
        result = machine.run(seg["start_pc"])
        _check(result, f"segment {index}")
        cycles += result.cycles
        events = events + result.events
        for key, value in attribute(result, phase_of_pc).items():
            passes[key] += value
        if on_segment is not None:
            on_segment(result)
        done += 1
        if progress is not None:
            progress(done, total)
    for host in manifest["host_after"]:
        hosts.append(HostOp.from_dict(host))
    return StepResult(
        cycles,
        init_cycles,
        passes,
        events,
        len(step_segments),
        tuple(hosts),
        sum(s["halt_pc"] - s["start_pc"] + 1 for s in step_segments),
    )


def _zoo_model(prog: Program) -> Model | None:
    """The zoo model a program was compiled from, if its name is a zoo model's."""
    if prog.model not in model_names():
        return None
    return get_model(prog.model, prog.batch)


def _hyper(machine: Machine, prog: Program) -> tuple[float, float] | None:
    """Learning rate and momentum from the program's ``hyper`` tensor (None without one)."""
    try:
        t = prog.tensor("hyper")
    except KeyError:
        return None
    values = read_tensor(machine, t)
    return float(values[0]), float(values[1])


def _run_host(
    machine: Machine, prog: Program, op: HostOp, labels: NDArray[Any] | None, host: HostState
) -> None:
    """Perform one host operation on the DRAM image (see :mod:`nmsat.sim.host`).

    Forward kinds read their input tensors and write their output; ``<kind>_bwd`` reads
    ``(dy, *forward inputs)`` and writes the input gradient (none where the input is the
    model's input). Each tensor's interior is converted to NCHW float32 and back; the zero
    border of a written tensor is left as it was.
    """
    if op.kind == "softmax_loss":
        if labels is None:
            raise SimulationError("a functional run needs 'labels' in its data")
        _host_softmax_loss(machine, prog, op, labels)
        return
    try:
        reads = [prog.tensor(name) for name in op.reads]
        writes = [prog.tensor(name) for name in op.writes]
        arrays = [interior(t, read_tensor(machine, t)) for t in reads]
        if op.kind.endswith("_bwd"):
            if len(writes) > 1 or len(writes) + len(reads) < 2:
                raise HostError(f"reads {op.reads} and writes {op.writes} do not fit a backward")
            # Without a write, the forward input is the model's (no gradient to store), but
            # the layer's parameters still learn.
            in_chw = chw(writes[0] if writes else reads[1])
            out = host.backward(
                op.kind, op.layer, arrays[0], arrays[1:], in_chw, hyper=_hyper(machine, prog)
            )
            if not writes:
                return
        else:
            if len(writes) != 1:
                raise HostError(f"{len(writes)} outputs; forward host operations have one")
            out = host.forward(op.kind, op.layer, arrays, chw(writes[0]))
    except HostError as exc:
        raise SimulationError(
            f"host operation {op.kind} ({op.layer}) failed in a functional run: {exc}; "
            "use --mode perf for this model"
        ) from exc
    t = writes[0]
    write_tensor(machine, t, with_interior(t, read_tensor(machine, t), out))
