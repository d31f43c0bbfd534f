"""The committed evaluation report (reports/speedup/) is what the code makes today.

The slow test regenerates the report's data files (README.md, CSV, JSON; not the PNG bytes,
which depend on the matplotlib version) with the command the committed README names, and
compares them byte for byte with the committed ones. When it fails, regenerate the report
with that command and commit the result (STYLE.md G18).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from nmsat.reports.speedup import DATA_FILES, PLOT_FILES, make_speedup_report, regenerate_command

COMMITTED = Path(__file__).resolve().parents[2] / "reports" / "speedup"


def test_committed_report_names_the_default_command() -> None:
    readme = (COMMITTED / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{regenerate_command()}\n```" in readme
    for name in (*DATA_FILES, *PLOT_FILES):
        assert (COMMITTED / name).is_file(), f"reports/speedup/{name} is missing"


@pytest.mark.slow
def test_committed_report_is_up_to_date(tmp_path: Path) -> None:
    make_speedup_report(tmp_path, progress=False, plots=False)
    stale = []
    for name in DATA_FILES:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (COMMITTED / name).read_text(encoding="utf-8")
        if fresh != committed:
            diff = difflib.unified_diff(
                committed.splitlines(),
                fresh.splitlines(),
                f"reports/speedup/{name} (committed)",
                f"{name} (regenerated)",
                lineterm="",
                n=0,
            )
            stale.append("\n".join(list(diff)[:12]))
    assert not stale, (
        f"reports/speedup is stale; regenerate it with `{regenerate_command()}`:\n"
        + "\n".join(stale)
    )
