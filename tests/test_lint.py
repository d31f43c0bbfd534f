"""ruff (lint and format) and mypy --strict are clean on the whole package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lint_and_types_clean() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lint.sh")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
