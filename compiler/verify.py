"""Invariants of a program, checked after every pass (STYLE.md G14).

- every instruction is legal for the configuration (fields, N:M support, buffer bounds);
- dependencies point backwards and stay inside their device segment;
- every device segment ends with a HALT, and host operations sit between segments;
- tokens balance: in each segment, every ordered pair of queues has as many pushes as pops,
  and the k-th pop comes after the k-th push in program order;
- external tensors are allocated, do not overlap and fit external memory.

Ref: tinygrad ``spec.py`` (type_verify between passes), as cited in STYLE.md G14.
"""

from __future__ import annotations

import itertools

from nmsat.hw import isa
from nmsat.hw.errors import NmsatError
from nmsat.hw.isa import Opcode, Queue
from nmsat.hw.params import SATParams

from .ir import Program
from .schedule import op_queue

__all__ = ["VerifyError", "verify"]


class VerifyError(NmsatError):
    """A program breaks an invariant: a compiler bug, or a hand-edited program."""


def verify(prog: Program, params: SATParams) -> Program:
    """Check ``prog``; return it unchanged or raise :class:`VerifyError` naming the op."""
    start = 0
    pushed: dict[tuple[Queue, Queue], list[int]] = {}
    popped: dict[tuple[Queue, Queue], list[int]] = {}
    for index, op in enumerate(prog.ops):
        where = f"op {index} ({op.opcode.name if op.opcode else 'host'} of {op.layer or '-'})"
        if op.opcode is None:
            if index != start:
                raise VerifyError(f"{where}: host operation inside a device segment")
            start = index + 1
            continue
        if op.opcode is Opcode.HALT:
            for pair, times in pushed.items():
                if len(times) != len(popped.get(pair, [])):
                    raise VerifyError(
                        f"{where}: {len(times)} tokens {pair[0].name}->"
                        f"{pair[1].name} pushed, {len(popped.get(pair, []))} "
                        "popped in this segment"
                    )
            for pair, times in popped.items():
                if len(times) > len(pushed.get(pair, [])):
                    raise VerifyError(
                        f"{where}: more {pair[0].name}->{pair[1].name} tokens popped than pushed"
                    )
            pushed.clear()
            popped.clear()
            start = index + 1
            continue
        try:
            instr = op.instr
            if instr is None or instr.pop != op.pop or instr.push != op.push:
                instr = isa.make(op.opcode, pop=op.pop, push=op.push, **dict(op.fields))
            isa.check_for_params(instr, params)
        except NmsatError as exc:
            raise VerifyError(f"{where}: {exc}") from None
        for dep in op.deps:
            if not start <= dep < index:
                raise VerifyError(f"{where}: depends on op {dep} outside its segment")
        q = op_queue(op)
        assert q is not None
        for src in op.pop:
            times = popped.setdefault((src, q), [])
            pushes = pushed.get((src, q), [])
            if len(pushes) <= len(times):
                raise VerifyError(f"{where}: pops a {src.name} token no earlier op pushed")
            times.append(index)
        for dst in op.push:
            pushed.setdefault((q, dst), []).append(index)
    if start != len(prog.ops):
        raise VerifyError("the last device segment does not end with HALT")
    spans = sorted((t.addr, t.addr + t.nbytes, t.name) for t in prog.tensors)
    for (a0, a1, name), (b0, _, other) in itertools.pairwise(spans):
        if a0 < 0:
            raise VerifyError(f"tensor {name!r} is not allocated")
        if b0 < a1:
            raise VerifyError(f"tensors {name!r} and {other!r} overlap in external memory")
    if spans and spans[-1][1] > params.dram_bytes:
        raise VerifyError(
            f"the tensors need {spans[-1][1]} bytes; {params.name} has {params.dram_bytes}"
        )
    return prog
