"""Assembler, disassembler and program files: errors name the line; files are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmsat.hw import isa
from nmsat.hw.errors import IsaError
from nmsat.hw.isa_asm import (
    PROGRAM_MAGIC,
    assemble,
    disassemble,
    program_from_bytes,
    program_to_bytes,
    read_program,
    write_program,
)

PROGRAM = """\
# one FF tile of a 2:8 layer
LOAD push=compute buffer=act buf_addr=0 dram_addr=0x100 dram_stride=16 rows=16 cols=16
GEMM pop=load,prune push=store n=2 m=8 rows=4 cols=16 depth=16 interleave=3  # 2:8
STORE pop=compute buffer=ACC rows=4 cols=16 dram_stride=16 dram_addr=0x4000

HALT
"""


def test_assemble_parses_names_numbers_comments() -> None:
    words = assemble(PROGRAM)
    assert len(words) == 4
    gemm = isa.decode(words[1])
    assert gemm.opcode is isa.Opcode.GEMM
    assert gemm.pop == (isa.Queue.LOAD, isa.Queue.PRUNE)
    assert gemm["n"] == 2 and gemm["depth"] == 16 and gemm["a_addr"] == 0
    assert isa.decode(words[0])["dram_addr"] == 0x100
    assert assemble(disassemble(words)) == words


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("JUMP 3", "line 2: unknown opcode 'JUMP'"),
        ("GEMM n=2 m=8 rows=4 cols=4 depth=8 interleave=1 colour=3", "unknown field 'colour'"),
        ("LOAD buffer=DISK rows=1 cols=1", "buffer=DISK is not one of ACT"),
        ("LOAD rows=one cols=1", "rows='one' is not an integer"),
        ("LOAD rows=1 cols=1 rows=2", "given twice"),
        ("LOAD rows", "expected field=value"),
        ("NOP queue=compute pop=fetch", "unknown queue 'fetch'"),
        ("GEMM n=2 m=8 rows=4 cols=4 depth=12 interleave=1", "depth=12 is not a multiple"),
    ],
)
def test_assembly_errors_name_the_line(line: str, match: str) -> None:
    with pytest.raises(IsaError, match=match) as info:
        assemble("HALT\n" + line + "\n")
    assert str(info.value).startswith("line 2: ")


def test_program_file_round_trip(tmp_path: Path) -> None:
    words = assemble(PROGRAM)
    path = tmp_path / "sub" / "prog.nmsb"
    write_program(path, words)
    assert read_program(path) == words
    assert path.read_bytes()[:8] == PROGRAM_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["prog.nmsb"]  # no temporary left


def test_corrupt_program_files(tmp_path: Path) -> None:
    blob = program_to_bytes(assemble(PROGRAM))
    with pytest.raises(IsaError, match="shorter than its header"):
        program_from_bytes(blob[:10])
    with pytest.raises(IsaError, match="magic"):
        program_from_bytes(b"XXXXXXXX" + blob[8:])
    with pytest.raises(IsaError, match="version 7"):
        program_from_bytes(blob[:8] + (7).to_bytes(4, "little") + blob[12:])
    with pytest.raises(IsaError, match="header says 4 instructions"):
        program_from_bytes(blob[:-1])
    corrupt = bytearray(blob)
    corrupt[16 + 32 * 2] = 0x0B  # instruction 2 gets undefined opcode 11
    with pytest.raises(IsaError, match="instruction 2: illegal instruction: opcode 11"):
        program_from_bytes(bytes(corrupt))
    path = tmp_path / "bad.nmsb"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(IsaError, match=r"bad\.nmsb: instruction 2"):
        read_program(path)
    with pytest.raises(IsaError, match="cannot read"):
        read_program(tmp_path / "missing.nmsb")
