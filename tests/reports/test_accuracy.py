"""Tests of the accuracy report, nmsat.reports.accuracy (reduced runs)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from matplotlib.image import imread

from nmsat.hw.errors import NmsatError
from nmsat.models.train import TrainConfig, TrainResult
from nmsat.reports.accuracy import (
    CSV_COLUMNS,
    SETTINGS,
    Setting,
    make_accuracy_report,
    render_table,
    summarize,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_reduced_report_writes_three_files(tmp_path: Path) -> None:
    out = tmp_path / "accuracy"
    table = make_accuracy_report(out, seeds=(0,), epochs=1, models=("mlp",), jobs=1)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "accuracy.csv", "accuracy.png"]
    rows = list(csv.DictReader(io.StringIO((out / "accuracy.csv").read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(SETTINGS)
    assert {(r["pattern"], r["sparsity"]) for r in rows} == {
        (s.pattern, s.sparsity) for s in SETTINGS
    }
    for row in rows:
        assert 0.5 < float(row["test_accuracy"]) <= 1.0
        assert row["epochs"] == "1"
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 300
    assert image.shape[1] > 300
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert table in readme
    assert "nmsat report accuracy --out reports/accuracy --seeds 1 --epochs 1" in readme
    assert "(accuracy.png)" in readme
    assert table.count("\n") == 2 + len(SETTINGS)
    assert "| mlp | 2:8 | BDWP (FF+BP) |" in table


def test_parallel_runs_give_the_same_files(tmp_path: Path) -> None:
    kwargs = {"seeds": (0,), "epochs": 1, "models": ("mlp",)}
    make_accuracy_report(tmp_path / "serial", jobs=1, **kwargs)  # type: ignore[arg-type]
    make_accuracy_report(tmp_path / "parallel", jobs=2, **kwargs)  # type: ignore[arg-type]
    for name in ("accuracy.csv", "README.md"):
        assert (tmp_path / "serial" / name).read_bytes() == (
            tmp_path / "parallel" / name
        ).read_bytes()


def _result(model: str, setting: Setting, seed: int, accuracy: float) -> TrainResult:
    cfg = TrainConfig(
        model=model,  # type: ignore[arg-type]
        n=setting.n,
        m=setting.m,
        sparsity=setting.sparsity,
        seed=seed,
    )
    return TrainResult(cfg, accuracy, 1.0, (0.5,), (accuracy,), (0.5,), (), 450, 0.0)


def test_summary_statistics_and_table() -> None:
    dense, bdwp28 = SETTINGS[0], Setting(2, 8, "bdwp")
    results = [
        _result("mlp", dense, 0, 0.96),
        _result("mlp", dense, 1, 0.98),
        _result("mlp", bdwp28, 0, 0.95),
        _result("mlp", bdwp28, 1, 0.95),
    ]
    rows = summarize(results)
    assert [(r.setting, r.runs) for r in rows] == [(dense, 2), (bdwp28, 2)]
    assert rows[0].mean == pytest.approx(0.97)
    assert rows[0].std == pytest.approx(0.0141421356)  # sample standard deviation
    assert rows[1].std == 0.0
    assert rows[1].delta == pytest.approx(-0.02)
    table = render_table(rows)
    assert "| mlp | dense | dense | 97.00 ± 1.41 |  | 2 |" in table
    assert "| mlp | 2:8 | BDWP (FF+BP) | 95.00 ± 0.00 | -2.00 | 2 |" in table


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seeds": ()}, "no seeds"),
        ({"models": ("resnet",)}, "resnet"),
        ({"models": ()}, "non-empty"),
        ({"jobs": 0}, "jobs = 0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(NmsatError, match=needle):
        make_accuracy_report(tmp_path, epochs=1, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
