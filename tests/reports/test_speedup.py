"""Tests of the evaluation report, nmsat.reports.speedup, on reduced runs (tiny, mlp)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from matplotlib.image import imread

from nmsat.cli import main
from nmsat.compiler import CompileOptions
from nmsat.hw.errors import NmsatError
from nmsat.hw.params import load_params
from nmsat.models.zoo import get_model
from nmsat.reports._speedup_tables import LAYERS_COLUMNS, RUNS_COLUMNS, accuracy_table
from nmsat.reports._step_profile import profile_step
from nmsat.reports.speedup import (
    ABLATIONS,
    DATA_FILES,
    PLOT_FILES,
    compute_bound,
    make_speedup_report,
    regenerate_command,
)
from nmsat.sim.step import simulate_step

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {"config": "tiny", "batch": 4, "models": ("mlp",), "progress": False}


@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    table = make_speedup_report(out, jobs=1, **SMALL)  # type: ignore[arg-type]
    return out, table


@pytest.mark.parametrize(
    ("nm", "sparsity", "bound"),
    [
        ("2:4", "bdwp", 1.5),
        ("4:8", "bdwp", 1.5),
        ("2:8", "bdwp", 2.0),
        ("1:8", "bdwp", 2.4),
        ("2:8", "forward", 24 / 18),
        ("2:4", "forward", 1.2),
        ("dense", "bdwp", 1.0),
    ],
)
def test_compute_bounds(nm: str, sparsity: str, bound: float) -> None:
    assert compute_bound(nm, sparsity) == pytest.approx(bound)


@pytest.mark.parametrize(
    ("nm", "sparsity"), [((2, 8), "bdwp"), ((2, 4), "forward"), ((1, 1), "bdwp")]
)
def test_profile_matches_simulate_step(nm: tuple[int, int], sparsity: str) -> None:
    params = load_params("tiny")
    model = get_model("mlp", 4)
    summary, layers = profile_step(model, nm, params, CompileOptions(), sparsity=sparsity)
    expected = simulate_step(model, nm, params, sparsity=sparsity)
    assert summary.to_json() == expected.to_json()
    events = summary.result.events
    assert sum(c.macs_executed for c in layers) == events.macs_executed
    assert sum(c.macs_dense_equivalent for c in layers) == events.macs_dense_equivalent
    for phase in ("ff", "bp", "wu"):
        cycles = sum(c.cycles for c in layers if c.phase == phase)
        assert 0 < cycles <= summary.result.passes[phase]
    peak = params.pe_count
    for c in layers:
        # a pass's span holds all its work: never above the array's peak nor the DRAM's
        assert c.span_cycles >= c.cycles
        assert c.macs_executed <= peak * c.span_cycles
        assert c.dram_traffic_bytes <= params.dram_bytes_per_cycle * c.span_cycles
        assert c.dram_bytes <= c.dram_traffic_bytes
    assert {c.layer for c in layers} == {layer.name for layer in model.weight_layers}
    traffic = events.dram_read_bytes + events.dram_write_bytes
    assert 0 < sum(c.dram_bytes for c in layers) <= traffic


def test_report_files_and_tables(small_report: tuple[Path, str]) -> None:
    out, table = small_report
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted((*DATA_FILES, *PLOT_FILES))
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert table in readme
    assert regenerate_command(config="tiny", batch=4, models=("mlp",)) in readme
    assert "nmsat report --config tiny --batch 4 --models mlp --out reports/speedup" in readme
    assert "| bound 3M/(2N+M) | 1.50x | 1.50x | 2.00x | 2.40x |" in table
    assert "| paper, SAT on VCU1525 |  |  | 1.75x (mean) |  |" in table
    assert "0.76x to 1.28x" in table  # PAPER.md's GPU 2:4 range
    for png in PLOT_FILES:
        assert f"]({png})" in readme
    assert "table `horowitz45`" in readme.lower() or "`horowitz45`" in readme
    for heading in ("Forward-only", "GPU 2:4", "Ablation", "Energy", "Roofline", "Accuracy"):
        assert f"## {heading}" in readme
    assert "executed GFLOPS/W" in readme and "effective TMAC/s" in readme


def test_runs_csv_rows_in_canonical_order(small_report: tuple[Path, str]) -> None:
    out, _ = small_report
    rows = list(csv.DictReader(io.StringIO((out / "runs.csv").read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == RUNS_COLUMNS
    keys = [(r["nm"], r["sparsity"], r["variant"]) for r in rows]
    expected = [(nm, "bdwp", "all on") for nm in ("dense", "2:4", "4:8", "2:8", "1:8")]
    expected += [("2:8", "forward", "all on")]
    expected += [("2:8", "bdwp", v) for v in ABLATIONS if v != "all on"]
    assert keys == expected
    by_key = {(r["nm"], r["sparsity"], r["variant"]): r for r in rows}
    dense = int(by_key[("dense", "bdwp", "all on")]["cycles"])
    for row in rows:
        assert float(row["speedup"]) == pytest.approx(dense / int(row["cycles"]), abs=1e-4)
        bound = compute_bound(row["nm"], row["sparsity"])
        assert float(row["bound"]) == pytest.approx(bound, abs=1e-4)
        assert row["energy_table"] == "horowitz45"
        eff, exe = float(row["gflops_per_w_effective"]), float(row["gflops_per_w_executed"])
        assert eff >= exe > 0
        assert (eff == exe) == (row["nm"] == "dense")
    # forward-only keeps BP dense: its BP cycles are the dense step's, BDWP's are fewer
    fwd = by_key[("2:8", "forward", "all on")]
    bdwp = by_key[("2:8", "bdwp", "all on")]
    assert int(fwd["bp_cycles"]) > int(bdwp["bp_cycles"])
    assert int(fwd["cycles"]) > int(bdwp["cycles"])


def test_speedup_layers_and_summary_files(small_report: tuple[Path, str]) -> None:
    out, _ = small_report
    speed = list(csv.DictReader(io.StringIO((out / "speedup.csv").read_text(encoding="utf-8"))))
    assert [(r["nm"], r["sparsity"]) for r in speed] == [
        ("2:4", "bdwp"),
        ("4:8", "bdwp"),
        ("2:8", "bdwp"),
        ("1:8", "bdwp"),
        ("2:8", "forward"),
    ]
    for row in speed:
        assert re.fullmatch(r"\d+\.\d{4}", row["step"])
    layers = list(csv.DictReader(io.StringIO((out / "layers.csv").read_text(encoding="utf-8"))))
    assert tuple(layers[0]) == LAYERS_COLUMNS
    assert {r["pass"] for r in layers} == {"ff", "bp", "wu"}
    assert {r["nm"] for r in layers} == {"dense", "2:4", "4:8", "2:8", "1:8"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"] == "tiny"
    assert summary["paper_speedup_2_8"] == 1.75
    assert set(summary["step_speedup_mean"]) == {"2:4", "4:8", "2:8", "1:8"}
    assert summary["forward_bound"] == {"2:8": 1.3333}
    assert 1.0 < summary["step_speedup_mean"]["2:8"] < 4.0


def test_plots_are_readable_pngs(small_report: tuple[Path, str]) -> None:
    out, _ = small_report
    for name in PLOT_FILES:
        png = (out / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE), name
        image = imread(io.BytesIO(png), format="png")
        assert image.shape[0] >= 400 and image.shape[1] >= 600, name


def test_parallel_run_gives_the_same_data(small_report: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = small_report
    make_speedup_report(tmp_path, jobs=2, plots=False, **SMALL)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DATA_FILES)
    for name in DATA_FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_accuracy_table_matches_the_accuracy_report() -> None:
    table = accuracy_table(ROOT / "reports" / "accuracy" / "accuracy.csv")
    assert table is not None
    committed = (ROOT / "reports" / "accuracy" / "README.md").read_text(encoding="utf-8")
    rows = [line for line in committed.splitlines() if re.match(r"\| (mlp|cnn) \|", line)]
    assert rows
    ours = [line for line in table.splitlines() if re.match(r"\| (mlp|cnn) \|", line)]
    assert len(ours) == len(rows)
    for theirs, mine in zip(rows, ours, strict=True):
        a, b = theirs.split("|"), mine.split("|")
        assert (a[1], a[2], a[4], a[5], a[6]) == (b[1], b[2], b[4], b[5], b[6])
    assert accuracy_table(ROOT / "no" / "such.csv") is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"patterns": ("dense", "3:16")}, "3:16"),
        ({"forward_patterns": ("1:4",)}, "forward-only pattern 1:4"),
        ({"ablation_nm": "1:4"}, "ablation pattern 1:4"),
        ({"models": ("resnet",)}, "resnet"),
        ({"models": ()}, "models"),
        ({"jobs": 0}, "jobs"),
    ],
)
def test_bad_arguments_fail_before_writing(
    tmp_path: Path, kwargs: dict[str, object], needle: str
) -> None:
    args = {**SMALL, **kwargs}
    with pytest.raises(NmsatError, match=re.escape(needle)):
        make_speedup_report(tmp_path / "out", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


CLI = ["report", "--config", "tiny", "--models", "mlp", "--batch", "4", "--jobs", "1"]


def test_cli_forward_patterns_and_no_ablation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*CLI, "--no-progress", "--patterns", "dense,2:8", "--forward-patterns", "none"]
    assert main([*args, "--no-ablation", "--out", str(tmp_path)]) == 0
    assert "| bound 3M/(2N+M) | 2.00x |" in capsys.readouterr().out
    rows = (tmp_path / "runs.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[1:4] for r in rows[1:]] == [
        ["dense", "bdwp", "all on"],
        ["2:8", "bdwp", "all on"],
    ]
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "--patterns dense,2:8 --forward-patterns none --no-ablation" in readme
    assert "## Ablation" not in readme and "## Forward-only" not in readme
    assert not (tmp_path / "ablation.png").exists() and not (tmp_path / "gpu.png").exists()


def test_cli_bad_forward_pattern_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*CLI, "--patterns", "dense,2:8", "--forward-patterns", "2:4", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    assert "forward-only pattern 2:4" in err
