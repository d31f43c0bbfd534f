"""docs/isa.md is generated from the ISA module and must be current."""

from __future__ import annotations

from pathlib import Path

from nmsat.hw import isa
from nmsat.hw.isa_doc import FIELD_DOCS, SEMANTICS, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def test_committed_isa_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/isa.md is stale: run `nmsat isa doc --out docs/isa.md`"
    )


def test_every_opcode_and_field_documented() -> None:
    assert set(SEMANTICS) == set(isa.Opcode)
    for layout in isa.PAYLOADS.values():
        for name, _ in layout:
            assert name in FIELD_DOCS
    text = render()
    for opcode in isa.Opcode:
        assert f"## {opcode.name} (opcode {opcode.value})" in text
