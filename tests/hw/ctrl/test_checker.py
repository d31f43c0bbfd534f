"""The controller's instruction checker against the ISA's own checks, word by word.

Thousands of words (legal instructions, then fields forced to edge values, N:M pairs, DMA
stride orders around the overlap rule, undefined opcodes, flipped bits) stream through the
checker in one simulation, with random stalls; its verdict must be the cause the model
reports (:func:`nmsat.hw.isa.decode` then :func:`nmsat.hw.isa.check_for_params`, as
``Machine`` runs them), and for a legal word the queue and HALT flag must be the
instruction's.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from amaranth.sim import Simulator

from nmsat.hw import isa
from nmsat.hw.ctrl import ErrorCause
from nmsat.hw.ctrl._checker import CHECK_STAGES, Illegal, InstructionChecker
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Opcode, Queue
from nmsat.hw.params import SATParams, load_params
from nmsat.sim.model.decode import decode_fast

_VERDICT = {
    Illegal.NONE: ErrorCause.NONE,
    Illegal.OPCODE: ErrorCause.ILLEGAL_OPCODE,
    Illegal.FIELD: ErrorCause.ILLEGAL_FIELD,
    Illegal.RANGE: ErrorCause.OUT_OF_RANGE,
}
_NM = [(1, 4), (2, 4), (3, 4), (4, 4), (1, 8), (4, 8), (5, 8), (8, 8), (8, 16), (16, 16),
       (1, 1), (2, 2), (0, 4), (5, 4), (1, 3), (2, 6), (0, 0), (31, 31)]  # fmt: skip


def _set(word: int, opcode: Opcode, name: str, value: int) -> int:
    field = dict(isa.PAYLOADS[opcode])[name]
    offset = isa.HEADER.size + field.offset
    value &= (1 << field.width) - 1
    return (word & ~(((1 << field.width) - 1) << offset)) | value << offset


def _edge_value(rng: random.Random, width: int, params: SATParams) -> int:
    """Small values, all-ones, values around buffer and memory sizes, or random bits."""
    kind = rng.random()
    if kind < 0.3:
        return rng.randint(0, min(3, (1 << width) - 1))
    if kind < 0.45:
        return (1 << width) - 1 - rng.randint(0, 1)
    if kind < 0.8:
        sizes = [params.act_buffer_entries, params.wgt_buffer_entries, params.acc_buffer_entries,
                 params.vec_buffer_entries, params.dram_bytes, params.interleave]  # fmt: skip
        return min((1 << width) - 1, max(0, rng.choice(sizes) + rng.randint(-40, 4)))
    return rng.getrandbits(width)


def _dma_levels(rng: random.Random, word: int, opcode: Opcode) -> int:
    """Counts of 1..4 per level and strides near the extents below them, in any order."""
    cols = rng.randint(1, 6)
    word = _set(word, opcode, "cols", cols)
    names = [("rows", "dram_stride"), ("planes", "plane_stride"), ("blocks", "block_stride")]
    rng.shuffle(names)
    extent = cols
    for count_name, stride_name in names:
        count = rng.choice([1, 1, 2, 3, 4])
        stride = max(0, extent + rng.choice([-1, 0, 0, 1, 3]))
        word = _set(word, opcode, count_name, count)
        word = _set(word, opcode, stride_name, stride)
        extent = (count - 1) * stride + extent if count > 1 else extent
    if rng.random() < 0.2:  # equal strides
        word = _set(word, opcode, names[0][1], rng.randint(cols, cols + 2))
        word = _set(word, opcode, names[1][1], rng.randint(cols, cols + 2))
    return word


def _random_word(rng: random.Random, params: SATParams, random_operation: Any) -> int:
    masks = {"pop": [q for q in Queue if rng.random() < 0.3],
             "push": [q for q in Queue if rng.random() < 0.3]}  # fmt: skip
    if rng.random() < 0.05:
        word = isa.encode(Opcode.HALT, **masks)
    else:
        word = random_operation(rng, params, rng.choice(list(Queue)), **masks).encode()
    kind = rng.random()
    opcode = decode_fast(word).opcode
    if kind < 0.25:
        pass
    elif kind < 0.35:
        word = (word & ~0xF) | rng.randint(7, 14)
    elif kind < 0.45 and opcode in (Opcode.GEMM, Opcode.PRUNE, Opcode.UPDATE):
        n, m = rng.choice(_NM)
        word = _set(_set(word, opcode, "n", n), opcode, "m", m)
    elif kind < 0.6 and opcode in (Opcode.LOAD, Opcode.STORE):
        word = _dma_levels(rng, word, opcode)
    elif opcode in isa.PAYLOADS:
        fields = list(isa.PAYLOADS[opcode])
        for _ in range(rng.randint(1, 3)):
            name, field = rng.choice(fields)
            word = _set(word, opcode, name, _edge_value(rng, field.width, params))
    if rng.random() < 0.15:
        word ^= 1 << rng.randrange(isa.INSTR_BITS)
    return word


def _model(
    word: int, params: SATParams, cause_of: Any
) -> tuple[ErrorCause, isa.Instruction | None, str]:
    """The model's verdict: Machine decodes with decode_fast, then check_for_params."""
    try:
        instr = decode_fast(word)
        isa.check_for_params(instr, params)
    except IsaError as exc:
        return cause_of(str(exc)), None, str(exc)
    return ErrorCause.NONE, instr, ""


@pytest.mark.sim
@pytest.mark.parametrize("name", ["tiny", "vcu1525"])
def test_checker_matches_isa_checks(name: str, controller_harness: Any) -> None:
    params = load_params(name)
    rng = random.Random(f"checker-{name}")
    words = [_random_word(rng, params, controller_harness.random_operation) for _ in range(6000)]
    lengths = [rng.choice([1 << 31, rng.randint(0, 6000)]) for _ in words]
    dut = InstructionChecker(params, 32)
    seen: list[tuple[int, Any, int, int, int]] = []

    async def bench(ctx: Any) -> None:
        pipeline: list[int | None] = [None] * CHECK_STAGES
        index = 0
        while index < len(words) or any(p is not None for p in pipeline):
            advance = rng.random() < 0.85
            ctx.set(dut.advance, advance)
            entering = index if index < len(words) else None
            ctx.set(dut.i_valid, entering is not None)
            if entering is not None:
                ctx.set(dut.i_word, words[entering])
                ctx.set(dut.i_pc, entering)
                ctx.set(dut.program_length, lengths[entering])
            await ctx.tick()
            if advance:
                pipeline = [entering, *pipeline[:-1]]
                index += entering is not None
            out = pipeline[-1]
            assert ctx.get(dut.o_valid) == (out is not None)
            if out is not None:
                assert ctx.get(dut.o_pc) == out
                seen.append(
                    (out, ctx.get(dut.o_illegal), ctx.get(dut.o_queue.as_value()),
                     ctx.get(dut.o_halt), ctx.get(dut.o_past_end))
                )  # fmt: skip

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    verdicts = set()
    problems = []
    for pc, illegal, queue, halt, past_end in dict.fromkeys(seen):
        want, instr, message = _model(words[pc], params, controller_harness.cause_of)
        verdicts.add(want)
        got = _VERDICT[illegal]
        if got != want:
            problems.append(f"{words[pc]:#x}: checker {got.name}, model {want.name}: {message}")
        elif instr is not None and (
            bool(halt) != (instr.opcode is Opcode.HALT)
            or (instr.queue is not None and queue != instr.queue.value)
        ):
            problems.append(f"{words[pc]:#x}: queue {queue} halt {halt} for {instr}")
        if past_end != (pc >= lengths[pc]):
            problems.append(f"pc {pc}: past_end {past_end}, program length {lengths[pc]}")
    assert not problems, "\n".join(problems[:10])
    assert len({pc for pc, *_ in seen}) == len(words)
    assert verdicts == set(_VERDICT.values())
