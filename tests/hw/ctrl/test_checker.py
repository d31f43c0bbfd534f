"""The controller's instruction checker against the ISA's own checks, word by word.

Thousands of words (legal instructions, then fields forced to edge values, N:M pairs, DMA
stride orders around the overlap rule, padded operands at the end of their buffer,
undefined opcodes, flipped bits) stream through the checker in one simulation, with random
stalls; its verdict must be the cause the model reports (:func:`nmsat.hw.isa.decode` then
:func:`nmsat.hw.isa.check_for_params`, as ``Machine`` runs them), and for a legal word the
queue and HALT flag must be the instruction's. Padded operands at the exact end of their
buffer, and one element further, are also enumerated with their verdict written out.
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
from nmsat.hw.isa import Buffer, Opcode, Queue
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


def _odd(size: int, pad: int) -> int:
    """A row pitch: ``size`` rounded up to odd when ``pad`` (docs/isa.md)."""
    return size | 1 if pad else size


def _operand_spans(instr: isa.Instruction) -> list[tuple[str, Buffer, int]]:
    """(address field, buffer, elements spanned) of the padded operands, from docs/isa.md."""
    f = instr.fields
    if instr.opcode in (Opcode.LOAD, Opcode.STORE):
        pad = f["buf_pad"]
        rp = _odd(f["cols"], pad & 1)
        pp = _odd(f["rows"] * rp, pad >> 1 & 1)
        bp = _odd(f["planes"] * pp, pad >> 2 & 1)
        last = (f["blocks"] - 1) * bp + (f["planes"] - 1) * pp + (f["rows"] - 1) * rp
        return [("buf_addr", f["buffer"], last + f["cols"])]
    assert instr.opcode is Opcode.GEMM
    kc = f["depth"] * f["n"] // f["m"]
    lines, row = (f["cols"], f["depth"]) if f["b_trans"] else (f["depth"], f["cols"])
    return [
        ("a_addr", Buffer.WGT, (f["rows"] - 1) * _odd(kc, f["a_pad"]) + kc),
        ("b_addr", Buffer.ACT, (lines - 1) * _odd(row, f["b_pad"]) + row),
        ("c_addr", Buffer.ACC, (f["rows"] - 1) * _odd(f["cols"], f["c_pad"]) + f["cols"]),
    ]


def _at_end(word: int, params: SATParams, which: int, beyond: int) -> int:
    """Place operand ``which`` of a LOAD/STORE/GEMM word ``beyond`` elements past its buffer's
    end (0: its last element is the buffer's last)."""
    instr = decode_fast(word)
    name, buffer, span = _operand_spans(instr)[which]
    addr = isa.buffer_entries(buffer, params) - span + beyond
    return _set(word, instr.opcode, name, max(0, addr))


def _padded(rng: random.Random, params: SATParams, word: int, opcode: Opcode) -> int:
    """Random pads, then (mostly) one operand moved to the end of its buffer, +-1."""
    if opcode in (Opcode.LOAD, Opcode.STORE):
        if rng.random() < 0.5:
            word = _dma_levels(rng, word, opcode)
        word = _set(word, opcode, "buf_pad", rng.randint(0, 7))
        which = 0
    else:
        for name in ("a_pad", "b_pad", "c_pad", "b_trans"):
            word = _set(word, opcode, name, rng.randint(0, 1))
        which = rng.randint(0, 2)
    try:
        isa.check_for_params(decode_fast(word), params)
    except IsaError:
        return word  # an illegal shape: the pads are only extra set bits
    if rng.random() < 0.8:
        word = _at_end(word, params, which, rng.choice([-1, 0, 0, 1, 1, 2]))
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
    elif kind < 0.55 and opcode in (Opcode.LOAD, Opcode.STORE):
        word = _dma_levels(rng, word, opcode)
    elif kind < 0.7 and opcode in (Opcode.LOAD, Opcode.STORE, Opcode.GEMM):
        word = _padded(rng, params, word, opcode)
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


def _run_checker(
    params: SATParams, words: list[int], lengths: list[int], rng: random.Random
) -> list[tuple[int, Any, int, int, int]]:
    """Stream ``words`` (pc = index) through the checker with random stalls.

    Returns (pc, illegal, queue, halt, past_end) of each checked word, in order.
    """
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
    return seen


@pytest.mark.sim
@pytest.mark.parametrize("name", ["tiny", "vcu1525"])
def test_checker_matches_isa_checks(name: str, controller_harness: Any) -> None:
    params = load_params(name)
    rng = random.Random(f"checker-{name}")
    words = [_random_word(rng, params, controller_harness.random_operation) for _ in range(6000)]
    lengths = [rng.choice([1 << 31, rng.randint(0, 6000)]) for _ in words]
    seen = _run_checker(params, words, lengths, rng)

    verdicts = set()
    padded_verdicts = set()
    problems = []
    for pc, illegal, queue, halt, past_end in dict.fromkeys(seen):
        want, instr, message = _model(words[pc], params, controller_harness.cause_of)
        verdicts.add(want)
        if _has_gap(words[pc]):
            padded_verdicts.add(want)
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
    # Operands whose pads add elements, both fitting and overrunning their buffer.
    assert {ErrorCause.NONE, ErrorCause.OUT_OF_RANGE} <= padded_verdicts


def _has_gap(word: int) -> bool:
    """A LOAD, STORE or GEMM word whose pads make an operand span more than its elements."""
    try:
        instr = decode_fast(word)
    except IsaError:
        return False
    f = instr.fields
    if instr.opcode in (Opcode.LOAD, Opcode.STORE):
        elements = f["blocks"] * f["planes"] * f["rows"] * f["cols"]
        return _operand_spans(instr)[0][2] > elements
    if instr.opcode is Opcode.GEMM and f["m"] and f["m"] >= f["n"] > 0:
        kc = f["depth"] * f["n"] // f["m"]
        elements = [f["rows"] * kc, f["depth"] * f["cols"], f["rows"] * f["cols"]]
        spans = [span for _, _, span in _operand_spans(instr)]
        return any(x > e for x, e in zip(spans, elements, strict=True))
    return False


def _boundary_words(params: SATParams) -> list[tuple[int, bool]]:
    """Padded LOAD/STORE and GEMM operands ending at their buffer's last element or one past.

    Returns (word, fits) pairs; every shape has at least one gap for some pad value.
    """
    rng = random.Random("checker-boundary")
    out = []
    shapes = [(1, 1, 1, 1), (2, 2, 2, 2), (3, 2, 3, 5), (2, 3, 1, 4), (2, 1, 2, 3), (1, 3, 3, 7)]
    for opcode in (Opcode.LOAD, Opcode.STORE):
        for buffer in Buffer:
            for blocks, planes, rows, cols in shapes:
                for pad in range(8):
                    instr = isa.make(
                        opcode, buffer=buffer, dram_addr=rng.randint(0, 999), rows=rows,
                        cols=cols, planes=planes, blocks=blocks, dram_stride=cols,
                        plane_stride=rows * cols, block_stride=planes * rows * cols,
                        buf_pad=pad,
                    )  # fmt: skip
                    for beyond in (0, 1):
                        out.append((_at_end(instr.encode(), params, 0, beyond), not beyond))
    dense = [(m, m) for m in (1, 2, 4, 8)]
    for n, m in [*params.nm_patterns, *dense]:
        for rows, cols, k in [(1, 1, 1), (2, 4, 2), (3, 5, 3), (4, 2, 1)]:
            for pads in range(16):
                instr = isa.make(
                    Opcode.GEMM, n=n, m=m, rows=rows, cols=cols, depth=m * k, interleave=1,
                    a_pad=pads & 1, b_pad=pads >> 1 & 1, c_pad=pads >> 2 & 1,
                    b_trans=pads >> 3 & 1,
                )  # fmt: skip
                for which in range(3):
                    for beyond in (0, 1):
                        out.append((_at_end(instr.encode(), params, which, beyond), not beyond))
    return out


@pytest.mark.sim
@pytest.mark.parametrize("name", ["tiny", "vcu1525"])
def test_checker_padded_operands_at_buffer_end(
    name: str, controller_harness: Any, bank_clash: Any
) -> None:
    """An operand whose padded span ends at the buffer's last element fits; one more overruns.
    A GEMM that fits but whose packed rows clash in a bank is illegal (a configuration rule,
    after the range checks)."""
    params = load_params(name)
    cases = _boundary_words(params)
    words = [word for word, _ in cases]
    assert sum(map(_has_gap, words)) > len(words) // 3
    seen = _run_checker(params, words, [1 << 31] * len(words), random.Random(name))
    verdict = {pc: illegal for pc, illegal, *_ in seen}  # a stalled output repeats
    assert list(verdict) == list(range(len(words)))
    problems = []
    for (pc, illegal), (word, fits) in zip(verdict.items(), cases, strict=True):
        want = ErrorCause.NONE if fits else ErrorCause.OUT_OF_RANGE
        instr = decode_fast(word)
        if fits and instr.opcode is Opcode.GEMM and bank_clash(instr, params):
            want = ErrorCause.ILLEGAL_FIELD
        model, _, message = _model(word, params, controller_harness.cause_of)
        got = _VERDICT[illegal]
        if not got == model == want:
            problems.append(f"{pc}: {decode_fast(word)}: checker {got.name}, model "
                            f"{model.name} ({message}), expected {want.name}")  # fmt: skip
    assert not problems, "\n".join(problems[:10])
