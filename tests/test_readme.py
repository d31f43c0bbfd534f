"""The README's two set-up commands exist, and .ci/run calls the test command verbatim."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nmsat.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_exactly_two_setup_commands() -> None:
    commands = _setup_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "scripts/setup.sh" in main_job and "nmsat report" in main_job
    assert "scripts/setup.sh --tests" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _setup_commands()[1] in ci.splitlines()


def _tour_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.+?)\n```", section, re.S)
    assert len(block) == 1, "the tour is one sh block"
    return [shlex.split(line, comments=True) for line in block[0].splitlines() if line.strip()]


def test_tour_uses_only_nmsat() -> None:
    commands = _tour_commands()
    assert len(commands) >= 10
    assert all(argv[0] == ".venv/bin/nmsat" for argv in commands)


@pytest.mark.slow
def test_tour_runs_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run from a copy of the repository root's layout: the tour reads configs/ and writes
    # build/tour/; every command must exit 0, and the files it names must appear.
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    for argv in _tour_commands():
        code = main([*argv[1:], "--no-progress"] if _takes_no_progress(argv) else argv[1:])
        out = capsys.readouterr()
        assert code == 0, f"{' '.join(argv)} exited {code}: {out.err.strip()}"
    tour = tmp_path / "build" / "tour"
    for name in (
        "mlp.json", "r50.nmsb", "r50.json", "resnet18.onnx", "mlp_again.nmsb",
        "report/README.md", "accuracy/README.md", "sweep/results.csv", "rtl/nmsat_top.v",
    ):  # fmt: skip
        assert (tour / name).is_file(), name
    # The listing assembles back to the same program.
    assert (tour / "mlp_again.nmsb").read_bytes() == (tour / "mlp.nmsb").read_bytes()


def _takes_no_progress(argv: list[str]) -> bool:
    """Commands with a progress bar get --no-progress (the test's output stays readable)."""
    return argv[1] in {"train", "report", "sweep"}
