"""ISA: round trips (fields -> bits -> fields, bits -> text -> bits), illegal words, limits,
and the cycle formulas."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from nmsat.hw import isa, isa_timing
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Buffer, Dataflow, Direction, Opcode, Queue, VecOp
from nmsat.hw.isa_asm import assemble, disassemble, format_instruction
from nmsat.hw.params import load_params

TINY = load_params("tiny")
BOARD = load_params("vcu1525")

_NM = st.sampled_from([(1, 1), (4, 4), (8, 8), (1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (2, 16)])


def _bits(width: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << width) - 1)


@st.composite
def instructions(draw: st.DrawFn) -> isa.Instruction:
    """Any legal instruction (configuration-independent rules only)."""
    opcode = draw(st.sampled_from(list(Opcode)))
    layout = isa.PAYLOADS.get(opcode)
    fields: dict[str, Any] = {}
    for name, field in layout or ():
        shape = field.shape
        if isinstance(shape, type) and hasattr(shape, "__members__"):
            fields[name] = draw(st.sampled_from(list(shape)))
        else:
            fields[name] = draw(_bits(field.width))
    if "n" in fields:
        fields["n"], fields["m"] = draw(_NM)
    if opcode in (Opcode.LOAD, Opcode.STORE):
        fields["rows"] = draw(st.integers(1, 0xFFFF))
        fields["cols"] = draw(st.integers(1, 0xFFFF))
        extent = fields["cols"]
        for count, stride in (("rows", "dram_stride"), ("planes", "plane_stride"),
                              ("blocks", "block_stride")):  # fmt: skip
            if count != "rows":
                fields[count] = draw(st.integers(1, 0xFFFF)) if extent <= 0xFFFF_FFFF else 1
            if fields[count] > 1:
                fields[stride] = draw(st.integers(extent, 0xFFFF_FFFF))
            extent = (fields[count] - 1) * fields[stride] + extent
    elif opcode is Opcode.GEMM:
        fields["rows"] = draw(st.integers(1, 0xFFFF))
        fields["cols"] = draw(st.integers(1, 0xFFFF))
        fields["depth"] = fields["m"] * draw(st.integers(1, 0xFFFF // fields["m"]))
        fields["interleave"] = draw(st.integers(1, 31))
    elif opcode is Opcode.PRUNE:
        fields["rows"] = fields["m"] * draw(st.integers(1, 0xFFFF // fields["m"]))
        fields["cols"] = fields["m"] * draw(st.integers(1, 0xFFFF // fields["m"]))
    elif opcode is Opcode.VEC:
        for key in ("dst_buf", "src0_buf", "src1_buf"):
            fields[key] = draw(st.sampled_from([b for b in Buffer if b is not Buffer.IDX]))
        fields["length"] = draw(st.integers(1, (1 << 24) - 1))
        for src in ("src0", "src1"):
            start, dst = fields[f"{src}_addr"], fields["dst_addr"]
            if fields[f"{src}_buf"] is fields["dst_buf"] and start < dst < start + fields["length"]:
                # a destination starting inside a source is illegal: make it in place
                fields["src0_addr"] = fields["src1_addr"] = fields["dst_addr"]
    elif opcode is Opcode.UPDATE:
        fields["length"] = fields["m"] * draw(st.integers(1, ((1 << 24) - 1) // fields["m"]))
        if abs(fields["w_addr"] - fields["v_addr"]) < fields["length"]:  # must not overlap
            fields["length"] = fields["m"]
            w = fields["w_addr"]
            fields["v_addr"] = w + fields["m"] if w + fields["m"] < 1 << 24 else w - fields["m"]
    pop = draw(st.sets(st.sampled_from(list(Queue))))
    push = draw(st.sets(st.sampled_from(list(Queue))))
    return isa.make(opcode, pop=pop, push=push, **fields)


def test_layout_widths() -> None:
    assert isa.INSTR.size == isa.INSTR_BITS == 256
    assert isa.HEADER.size == 16
    assert dict(isa.INSTR)["header"].offset == 0
    for layout in isa.PAYLOADS.values():
        assert layout.size <= isa.INSTR_BITS - isa.HEADER.size
    assert set(isa.PAYLOADS) | {Opcode.HALT} == set(Opcode)


@given(instructions())
def test_fields_bits_fields(instr: isa.Instruction) -> None:
    word = instr.encode()
    assert 0 <= word < 1 << isa.INSTR_BITS
    assert isa.decode(word) == instr


@given(instructions())
def test_bits_text_bits(instr: isa.Instruction) -> None:
    word = instr.encode()
    text = disassemble([word])
    assert assemble(text) == [word]
    assert text.startswith(instr.opcode.name)


@given(st.integers(0, (1 << 256) - 1))
def test_any_word_decodes_or_is_illegal(word: int) -> None:
    try:
        instr = isa.decode(word)
    except IsaError as exc:
        assert "\n" not in str(exc)
        return
    assert instr.encode() == word


@given(instructions(), st.integers(0, 255))
def test_unused_payload_bits_are_illegal(instr: isa.Instruction, bit: int) -> None:
    layout = isa.PAYLOADS.get(instr.opcode)
    used = isa.HEADER.size + (layout.size if layout is not None else 0)
    assume(bit >= used)
    with pytest.raises(IsaError, match="unused payload bits"):
        isa.decode(instr.encode() | 1 << bit)


def test_illegal_words() -> None:
    for opcode in range(7, 15):
        with pytest.raises(IsaError, match=f"opcode {opcode} is not defined"):
            isa.decode(opcode)
    halt = isa.encode(Opcode.HALT)
    with pytest.raises(IsaError, match="reserved header bits"):
        isa.decode(halt | 1 << 15)
    vec = isa.encode(Opcode.VEC, op=VecOp.ADD, length=4)
    with pytest.raises(IsaError, match="field op has an undefined value"):
        isa.decode(vec | 7 << isa.HEADER.size)
    with pytest.raises(IsaError, match="does not fit 256 bits"):
        isa.decode(1 << 256)


@pytest.mark.parametrize(
    ("opcode", "fields", "match"),
    [
        (Opcode.GEMM, {"n": 9, "m": 8, "rows": 1, "cols": 1, "depth": 8, "interleave": 1}, "9"),
        (Opcode.GEMM, {"n": 2, "m": 6, "rows": 1, "cols": 1, "depth": 6, "interleave": 1}, "m=6"),
        (Opcode.GEMM, {"n": 2, "m": 8, "rows": 1, "cols": 1, "depth": 12, "interleave": 1}, "12"),
        (Opcode.GEMM, {"n": 2, "m": 8, "rows": 0, "cols": 1, "depth": 8, "interleave": 1}, "rows"),
        (Opcode.GEMM, {"n": 8, "m": 8, "rows": 1, "cols": 1, "depth": 8, "interleave": 0}, "inter"),
        (Opcode.GEMM, {"n": 1, "m": 1, "rows": 1 << 16, "cols": 1, "depth": 1}, "16 unsigned"),
        (Opcode.LOAD, {"rows": 2, "cols": 8, "dram_stride": 4}, "overlap"),
        (
            Opcode.STORE,
            {"rows": 2, "cols": 8, "dram_stride": 8, "planes": 2, "plane_stride": 15},
            "plane_stride=15 is less than the 16",
        ),
        (
            Opcode.STORE,
            {"rows": 1, "cols": 4, "planes": 2, "plane_stride": 4, "blocks": 2, "block_stride": 7},
            "blocks would overlap",
        ),
        (Opcode.LOAD, {"rows": 1, "cols": 4, "planes": 0}, "planes must be at least 1"),
        (Opcode.VEC, {"length": 8, "src0_addr": 4, "dst_addr": 6}, "starts inside src0"),
        (Opcode.UPDATE, {"n": 1, "m": 1, "length": 8, "w_addr": 0, "v_addr": 4}, "overlap"),
        (Opcode.LOAD, {"rows": 1, "cols": 8, "buffer": 7}, "not one of"),
        (Opcode.PRUNE, {"n": 2, "m": 4, "rows": 3, "cols": 8, "direction": Direction.BP}, "rows"),
        (Opcode.VEC, {"length": 4, "dst_buf": Buffer.IDX}, "IDX"),
        (Opcode.UPDATE, {"n": 2, "m": 8, "length": 12}, "length=12"),
        (Opcode.HALT, {"rows": 1}, "unknown field"),
        (Opcode.LOAD, {"rows": 1, "cols": -1}, "unsigned"),
        (Opcode.LOAD, {"rows": True, "cols": 1}, "unsigned"),
    ],
)
def test_rules(opcode: Opcode, fields: dict[str, Any], match: str) -> None:
    with pytest.raises(IsaError, match=match):
        isa.encode(opcode, **fields)


def _gemm(**kw: Any) -> isa.Instruction:
    base = {"n": 2, "m": 8, "rows": 4, "cols": 16, "depth": 64, "interleave": 3, "b_pad": 1,
            "c_pad": 1}  # fmt: skip
    return isa.make(Opcode.GEMM, **{**base, **kw})


@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("b_trans", [0, 1])
def test_padded_operands_fit_to_the_last_element(pad: int, b_trans: int) -> None:
    """Each operand spans ``(lines - 1) * pitch + row`` elements: ending on the buffer's last
    element fits, one element further overruns (even row lengths, so the pad shows; two rows
    of C, which packed at pitch 6 still fall in two of tiny's four ACC banks)."""
    rows, cols, depth, n, m = 2, 6, 16, 2, 8
    kc = depth * n // m
    pitch = isa.row_pitch
    spans = {
        "a_addr": (Buffer.WGT, (rows - 1) * pitch(kc, pad) + kc),
        "b_addr": (
            Buffer.ACT,
            (cols - 1) * pitch(depth, pad) + depth
            if b_trans
            else (depth - 1) * pitch(cols, pad) + cols,
        ),
        "c_addr": (Buffer.ACC, (rows - 1) * pitch(cols, pad) + cols),
    }
    fields = {"rows": rows, "cols": cols, "depth": depth, "n": n, "m": m, "b_trans": b_trans,
              "interleave": 1, "a_pad": pad, "b_pad": pad, "c_pad": pad}  # fmt: skip
    assert pitch(6, pad) == (7 if pad else 6) and pitch(5, pad) == 5
    for name, (buffer, span) in spans.items():
        last = isa.buffer_entries(buffer, TINY) - span
        isa.check_for_params(isa.make(Opcode.GEMM, **fields, **{name: last}), TINY)
        with pytest.raises(IsaError, match=f"{name}={last + 1} .* overruns the {buffer.name}"):
            isa.check_for_params(isa.make(Opcode.GEMM, **fields, **{name: last + 1}), TINY)
    dma = {"buffer": Buffer.VEC, "rows": 2, "cols": 2, "planes": 2, "blocks": 3,
           "dram_stride": 4, "plane_stride": 8, "block_stride": 16, "buf_pad": 7 * pad}  # fmt: skip
    pitches = isa.dma_buffer_pitches(isa.make(Opcode.LOAD, **dma))
    assert pitches == ((3, 7, 15) if pad else (2, 4, 8))
    span = 2 * pitches[2] + pitches[1] + pitches[0] + 2
    assert isa.dma_buffer_extent(isa.make(Opcode.LOAD, **dma)) == span
    last = TINY.vec_buffer_entries - span
    isa.check_for_params(isa.make(Opcode.STORE, **dma, buf_addr=last), TINY)
    with pytest.raises(IsaError, match="overruns the VEC buffer"):
        isa.check_for_params(isa.make(Opcode.STORE, **dma, buf_addr=last + 1), TINY)


def test_check_for_params_limits() -> None:
    isa.check_for_params(_gemm(), TINY)
    with pytest.raises(IsaError, match="overruns the ACC buffer"):
        isa.check_for_params(_gemm(c_addr=TINY.acc_buffer_entries - 10), TINY)
    with pytest.raises(IsaError, match="overruns the WGT buffer"):
        isa.check_for_params(_gemm(a_addr=TINY.wgt_buffer_entries - 1), TINY)
    with pytest.raises(IsaError, match="2:16 is not supported by tiny"):
        isa.check_for_params(_gemm(m=16, depth=64), TINY)
    with pytest.raises(IsaError, match="interleave=4 exceeds"):
        isa.check_for_params(_gemm(interleave=4), TINY)
    load = isa.make(
        Opcode.LOAD, buffer=Buffer.ACT, rows=2, cols=4, dram_stride=8,
        dram_addr=TINY.dram_bytes - 16,
    )  # fmt: skip
    with pytest.raises(IsaError, match="past the"):
        isa.check_for_params(load, TINY)
    upd = isa.make(
        Opcode.UPDATE, n=2, m=8, length=64, v_addr=64, hp_addr=TINY.vec_buffer_entries - 2
    )
    with pytest.raises(IsaError, match="hp_addr"):
        isa.check_for_params(upd, TINY)


def test_cycle_formulas_by_hand() -> None:
    # tiny: R = C = 4, L = 3, B = 16, D = 8.
    load = isa.make(Opcode.LOAD, buffer=Buffer.ACT, rows=3, cols=10, dram_stride=10)
    assert isa.cycles(load, TINY) == 8 + 3 * 2  # 20 bytes per row: 2 beats of 16
    # 4-D: 2 blocks x 3 planes x 3 rows of 20 bytes; each run starts on a new beat
    load4 = isa.make(Opcode.LOAD, buffer=Buffer.ACT, rows=3, cols=10, dram_stride=10,
                     planes=3, plane_stride=30, blocks=2, block_stride=100)  # fmt: skip
    assert isa.dma_elements(load4) == 180
    assert isa.cycles(load4, TINY) == 8 + 18 * 2
    # WS, 2:8, depth 64 -> Kc 16 -> Fk 4; rows 4 -> Fi 1; step max(16, 4, (12 + 4 + 1) / 1)
    assert isa.cycles(_gemm(), TINY) == 4 + 4 * 17 + 12 + 4
    # cols 2 -> the partial-sum dependency dominates: step = 17 cycles
    assert isa.cycles(_gemm(cols=2), TINY) == 4 + 4 * 17 + 12 + 4
    # OS: dense depth 8, rows 4, cols 12, interleave 3 -> I = 3, Fj = 1
    os_ = _gemm(n=8, m=8, depth=8, cols=12, dataflow=Dataflow.OS)
    assert isa.cycles(os_, TINY) == 8 * 3 + 4 * 3 + 4 + 4 + 3
    # a short reduction: the drain of R * I + R + I - 1 = 18 cycles bounds each of 2 folds
    short = _gemm(n=4, m=4, depth=4, rows=8, cols=12, dataflow=Dataflow.OS)
    assert isa.cycles(short, TINY) == 2 * 18 + 4 * 3 + 4 + 4 + 3
    # accumulating: the first fold's sums shift in first (R * I = 12 cycles)
    acc = _gemm(n=4, m=4, depth=4, rows=8, cols=12, dataflow=Dataflow.OS, accumulate=1)
    assert isa.cycles(acc, TINY) == 12 + 2 * 18 + 4 * 3 + 4 + 4 + 3
    prune = isa.make(Opcode.PRUNE, n=2, m=8, rows=4, cols=16)
    # 8 groups; 4 banks feed half a group of 8 per cycle, so one group per cycle + pipeline
    assert isa.cycles(prune, TINY) == 8 + (2 + 3 * 4 // 2)
    prune4 = isa.make(Opcode.PRUNE, n=2, m=4, rows=4, cols=16)  # 4 banks feed 1 group of 4
    assert isa.cycles(prune4, TINY) == 16 + (2 + 2 * 3 // 2)
    with pytest.raises(IsaError, match="exceeds the SORE's group size 8"):
        isa.check_for_params(isa.make(Opcode.PRUNE, n=16, m=16, rows=1, cols=16), TINY)
    vec = isa.make(Opcode.VEC, op=VecOp.ADD, length=10)
    assert isa.cycles(vec, TINY) == 3 + 2 + 3
    upd = isa.make(Opcode.UPDATE, n=2, m=8, length=16, v_addr=16)
    assert isa.cycles(upd, TINY) == 4 + 3 + 2 * 2 + 4 * 3
    assert isa.cycles(isa.make(Opcode.HALT), TINY) == 1


@given(
    st.integers(1, 200), st.integers(1, 300), st.integers(1, 64), _NM, st.integers(1, 4)
)  # fmt: skip
def test_cycle_formula_properties(
    rows: int, cols: int, groups: int, nm: tuple[int, int], ilv: int
) -> None:
    n, m = nm
    depth = groups * m
    ws, os_ = isa_timing.gemm_ws_cycles, isa_timing.gemm_os_cycles
    for formula in (ws, os_):
        dense = formula(rows, cols, depth, m, m, ilv, BOARD)
        sparse = formula(rows, cols, depth, n, m, ilv, BOARD)
        assert sparse <= dense  # N:M never costs more than dense on the same shape
        # at least the MACs divided by the PEs
        assert sparse >= rows * cols * (depth * n // m) / BOARD.pe_count
    # WS: more interleave never hurts.
    assert ws(rows, cols, depth, n, m, ilv + 1, BOARD) <= ws(rows, cols, depth, n, m, ilv, BOARD)
    # OS: interleave = L beats none once the reduction is long enough to amortise the drain of
    # the extra accumulators (a short one can lose: more results to shift out).
    L = BOARD.adder_latency
    if depth * n // m >= BOARD.array_rows:
        assert os_(rows, cols, depth, n, m, L, BOARD) <= os_(rows, cols, depth, n, m, 1, BOARD)


def test_interleave_hides_adder_latency_in_os() -> None:
    # A long WU reduction: interleave = L runs L times faster than no interleave.
    slow = isa_timing.gemm_os_cycles(64, 1024, 4096, 8, 8, 1, BOARD)
    fast = isa_timing.gemm_os_cycles(64, 1024, 4096, 8, 8, BOARD.adder_latency, BOARD)
    assert slow / fast == pytest.approx(BOARD.adder_latency, rel=0.01)


def test_format_instruction_names_fields() -> None:
    text = format_instruction(_gemm(push=[Queue.STORE], pop=[Queue.LOAD, Queue.PRUNE]))
    assert text.startswith("GEMM pop=load,prune push=store n=2 m=8 dataflow=WS")


# -- bank conflicts ------------------------------------------------------------------------

_BANK_PARAMS = {
    "tiny": TINY,
    "vcu1525": BOARD,
    # n not dividing R: a fold's positions start at every phase of a group.
    "odd-nm": TINY.replace(nm_patterns=((3, 4), (1, 2), (3, 8))),
}


@st.composite
def _small_gemms(draw: Any, params: Any) -> isa.Instruction:
    n, m = draw(st.sampled_from([*params.nm_patterns, (1, 1), (4, 4)]))
    rows_r, cols_c = params.array_rows, params.array_cols
    return isa.make(
        Opcode.GEMM, n=n, m=m, interleave=1,
        dataflow=draw(st.sampled_from(Dataflow)),
        b_trans=draw(st.integers(0, 1)),
        rows=draw(st.integers(1, 2 * max(rows_r, cols_c) + 1)),
        cols=draw(st.sampled_from([1, 2, 3, cols_c, cols_c + 1, 2 * cols_c, 96, 100])),
        depth=m * draw(st.integers(1, 3 * rows_r + 1)),
        a_pad=draw(st.integers(0, 1)), b_pad=draw(st.integers(0, 1)),
        c_pad=draw(st.integers(0, 1)),
    )  # fmt: skip


@pytest.mark.parametrize("name", list(_BANK_PARAMS))
def test_gemm_bank_conflict_matches_enumeration(name: str, bank_clash: Any) -> None:
    """The closed forms of isa.gemm_bank_conflict agree with listing every vector the STCE
    reads per cycle, on random GEMMs of both verdicts; check_for_params raises exactly then."""
    params = _BANK_PARAMS[name]
    seen: set[bool] = set()

    @given(_small_gemms(params))
    def check(instr: isa.Instruction) -> None:
        want = bank_clash(instr, params)
        got = isa.gemm_bank_conflict(instr, params)
        assert (got is not None) == want, (instr, got)
        seen.add(want)
        if want:
            with pytest.raises(IsaError, match=r"bank conflict|overruns"):  # ranges first
                isa.check_for_params(instr, params)

    check()
    assert seen == {False, True}


def test_gemm_bank_conflict_pads_make_compiled_layouts_legal() -> None:
    """What the compiler emits is legal: WS with B and C padded (or B transposed), OS with A
    and B padded; packed rows at a multiple of the banks are not."""
    for n, m in [*BOARD.nm_patterns, (1, 1)]:
        ws = {"n": n, "m": m, "rows": 96, "cols": 64, "depth": 16 * m, "interleave": 4}
        legal = isa.make(Opcode.GEMM, **ws, b_pad=1, c_pad=1)
        assert isa.gemm_bank_conflict(legal, BOARD) is None
        legal_t = isa.make(Opcode.GEMM, **ws, b_trans=1, c_pad=1)
        assert isa.gemm_bank_conflict(legal_t, BOARD) is None
        packed = isa.make(Opcode.GEMM, **ws)
        assert "B's row pitch 64" in (isa.gemm_bank_conflict(packed, BOARD) or "")
    os_ = {
        "n": 1,
        "m": 1,
        "dataflow": Dataflow.OS,
        "rows": 64,
        "cols": 64,
        "depth": 64,
        "interleave": 4,
        "b_trans": 1,
    }
    assert isa.gemm_bank_conflict(isa.make(Opcode.GEMM, **os_, a_pad=1, b_pad=1), BOARD) is None
    assert "A's row pitch 64" in (isa.gemm_bank_conflict(isa.make(Opcode.GEMM, **os_, b_pad=1),
                                                          BOARD) or "")  # fmt: skip
