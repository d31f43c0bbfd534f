"""The fast decoder equals nmsat.hw.isa.decode on legal and illegal words (STYLE.md G4)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw import isa
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Opcode
from nmsat.sim.model import decode_fast
from nmsat.sim.model.decode import opcode_of


def _outcome(decoder: Any, word: int) -> tuple[str, Any]:
    try:
        return "ok", decoder(word)
    except IsaError as exc:
        return "error", str(exc)


@st.composite
def words(draw: st.DrawFn) -> int:
    """Words whose fields are random within their widths: some legal, many illegal."""
    opcode = draw(st.integers(0, 15))
    word = opcode | draw(st.integers(0, (1 << 10) - 1)) << 4
    if draw(st.booleans()):
        word |= draw(st.integers(0, 3)) << 14  # reserved bits
    layout = isa.PAYLOADS.get(Opcode(opcode)) if opcode in {op.value for op in Opcode} else None
    payload = 0
    if layout is not None:
        for _, field in layout:
            small = draw(st.booleans())
            limit = min(field.width, 4) if small else field.width
            payload |= draw(st.integers(0, (1 << limit) - 1)) << field.offset
        if draw(st.integers(0, 9)) == 0:
            payload |= 1 << draw(st.integers(0, isa.INSTR_BITS - isa.HEADER.size - 1))
    return word | payload << isa.HEADER.size


@st.composite
def legal_words(draw: st.DrawFn) -> int:
    """Encodings of legal instructions, optionally with one bit flipped."""
    opcode = draw(st.sampled_from(list(Opcode)))
    fields: dict[str, Any] = {}
    if opcode in (Opcode.LOAD, Opcode.STORE):
        fields = {"rows": draw(st.integers(1, 9)), "cols": draw(st.integers(1, 9))}
        fields["dram_stride"] = 9
        fields["buffer"] = draw(st.sampled_from(list(isa.Buffer)))
    elif opcode is Opcode.GEMM:
        n, m = draw(st.sampled_from([(1, 1), (2, 4), (1, 8), (4, 8)]))
        fields = {"n": n, "m": m, "rows": 3, "cols": 5, "depth": 2 * m, "interleave": 2}
    elif opcode is Opcode.PRUNE:
        fields = {"n": 2, "m": 4, "rows": 4, "cols": 8}
    elif opcode is Opcode.VEC:
        fields = {"length": draw(st.integers(1, 99)), "op": draw(st.sampled_from(list(isa.VecOp)))}
    elif opcode is Opcode.UPDATE:
        fields = {"length": 16, "n": 2, "m": 4, "v_addr": 16, "hp_addr": draw(st.integers(0, 99))}
    elif opcode is Opcode.NOP:
        fields = {"queue": draw(st.sampled_from(list(isa.Queue)))}
    pop = draw(st.sets(st.sampled_from(list(isa.Queue))))
    push = draw(st.sets(st.sampled_from(list(isa.Queue))))
    word = isa.encode(opcode, pop=pop, push=push, **fields)
    if draw(st.booleans()):
        word ^= 1 << draw(st.integers(0, isa.INSTR_BITS - 1))
    return word


@given(words())
def test_decode_fast_equals_decode_on_random_fields(word: int) -> None:
    assert _outcome(decode_fast, word) == _outcome(isa.decode, word)


@given(legal_words())
def test_decode_fast_equals_decode_on_legal_and_mutated_words(word: int) -> None:
    assert _outcome(decode_fast, word) == _outcome(isa.decode, word)


def test_decode_fast_rejects_words_out_of_range() -> None:
    for word in (-1, 1 << isa.INSTR_BITS):
        assert _outcome(decode_fast, word) == _outcome(isa.decode, word)
        assert opcode_of(word) is None


def test_opcode_of() -> None:
    assert opcode_of(isa.encode(Opcode.HALT)) is Opcode.HALT
    assert opcode_of(7) is None
