"""Offline scheduling: turn each op's dependencies into dependency tokens between queues.

Five queues run concurrently (docs/isa.md). A dependency on an op of the same queue needs no
token: each queue executes in program order, one instruction at a time. A dependency on
another queue becomes one token: the producer pushes to the consumer's queue when it
completes and the consumer pops it before it starts. Tokens between two queues are matched in
order, so per consumer only the latest producer of each queue gets a token, and a producer
already covered by an earlier consumer of the same queue needs none (that consumer finished
first). With offline scheduling off, the lowering made every instruction depend on the one
before it, and this pass chains them all.

Ref: T. Moreau et al., VTA, IEEE Micro 2019 (dependency-token queues between load, compute and
     store); DESIGN.md section 5 (offline scheduling).
"""

from __future__ import annotations

import operator

from nmsat.hw.isa import OPCODE_QUEUE, Instruction, Opcode, Queue
from nmsat.hw.params import SATParams

from .ir import Op, Program

__all__ = ["op_queue", "schedule"]


def op_queue(op: Op) -> Queue | None:
    """The queue an op runs on (None for HALT and host operations)."""
    if op.opcode is None or op.opcode is Opcode.HALT:
        return None
    if op.opcode is Opcode.NOP:
        return Queue(op.field("queue"))
    return OPCODE_QUEUE[op.opcode]


def schedule(prog: Program, params: SATParams) -> Program:
    """Set the pop and push masks of every instruction from its dependencies."""
    del params  # the token rules do not depend on the configuration
    ops = list(prog.ops)
    pops: list[set[Queue]] = [set() for _ in ops]
    pushes: list[set[Queue]] = [set() for _ in ops]
    matched: dict[tuple[Queue, Queue], int] = {}
    for index, op in enumerate(ops):
        if op.opcode is Opcode.HALT:
            matched.clear()
            continue
        q = op_queue(op)
        if q is None:
            continue
        latest: dict[Queue, int] = {}
        for dep in op.deps:
            qd = op_queue(ops[dep])
            if qd is None or qd is q:
                continue
            latest[qd] = max(latest.get(qd, -1), dep)
        for qd, producer in latest.items():
            if producer > matched.get((qd, q), -1):
                matched[(qd, q)] = producer
                pushes[producer].add(q)
                pops[index].add(qd)
    key = operator.attrgetter("value")
    new_ops = []
    for i, op in enumerate(ops):
        pop = tuple(sorted(pops[i], key=key))
        push = tuple(sorted(pushes[i], key=key))
        if not pop and not push:
            new_ops.append(op)
            continue
        # Tokens do not enter the instruction rules: copy without a new check (this pass runs
        # over 10^5 ops for a large model; dataclasses.replace re-runs __init__).
        new = object.__new__(Op)
        new.__dict__.update(op.__dict__, pop=pop, push=push)
        if op.instr is not None:
            instr = object.__new__(Instruction)
            instr.__dict__.update(op.instr.__dict__, pop=pop, push=push)
            instr.__dict__.pop("_by_name", None)
            new.__dict__["instr"] = instr
        new_ops.append(new)
    return prog.replace(ops=tuple(new_ops))
