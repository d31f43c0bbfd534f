"""The CLI: real argument strings through main(); one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nmsat.cli import main

PROGRAM = """\
LOAD push=compute buffer=ACT rows=4 cols=8 dram_stride=8
GEMM pop=load n=2 m=8 rows=4 cols=8 depth=8 interleave=1 b_pad=1 c_pad=1
HALT
"""


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "params" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["train", "--epochs", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_params_prints_validated_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--config", "tiny", "--set", "array_cols=8"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["array_cols"] == 8 and data["name"] == "tiny"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["params", "--config", "tiny", "--set", "array_rows=5"], ["array_rows", "power of two"]),
        (["params", "--config", "tiny", "--set", "bogus=1"], ["bogus", "unknown key"]),
        (["params", "--config", "missing_preset"], ["missing_preset", "tiny"]),
    ],
)
def test_config_errors(capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    assert main(args) == 2
    _one_line_error(capsys, *words)


def test_malformed_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("array_rows: {\n")
    assert main(["params", "--config", str(bad)]) == 2
    _one_line_error(capsys, "bad.yaml", "malformed YAML")


def test_isa_asm_disasm_cycles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "p.s"
    source.write_text(PROGRAM)
    prog = tmp_path / "p.nmsb"
    assert main(["isa", "asm", str(source), "--out", str(prog)]) == 0
    assert "3 instructions" in capsys.readouterr().out
    assert main(["isa", "disasm", str(prog)]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[1].startswith("GEMM pop=load n=2 m=8")
    assert main(["isa", "cycles", str(prog), "--config", "tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].split()[0] == "sum"


def test_isa_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.s"
    source.write_text("HALT\nGEMM n=2 m=8 rows=4 cols=8 depth=12 interleave=1\n")
    out = tmp_path / "bad.nmsb"
    assert main(["isa", "asm", str(source), "--out", str(out)]) == 2
    _one_line_error(capsys, "line 2", "depth=12")
    assert not out.exists()  # nothing half-written
    junk = tmp_path / "junk.nmsb"
    junk.write_bytes(b"\x00" * 40)
    assert main(["isa", "disasm", str(junk)]) == 2
    _one_line_error(capsys, "junk.nmsb", "magic")
    big = tmp_path / "big.s"
    big.write_text("GEMM n=2 m=8 rows=4 cols=8 depth=8 interleave=1 c_addr=2047\n")
    prog = tmp_path / "big.nmsb"
    assert main(["isa", "asm", str(big), "--out", str(prog)]) == 0
    capsys.readouterr()
    assert main(["isa", "cycles", str(prog), "--config", "tiny"]) == 2
    _one_line_error(capsys, "pc 0", "ACC buffer")
    assert main(["isa", "asm", str(tmp_path / "none.s"), "--out", str(prog)]) == 2
    _one_line_error(capsys, "none.s", "cannot read")


def test_isa_doc_to_file(tmp_path: Path) -> None:
    out = tmp_path / "isa.md"
    assert main(["isa", "doc", "--out", str(out)]) == 0
    assert out.read_text().startswith("# The nmsat instruction set")
