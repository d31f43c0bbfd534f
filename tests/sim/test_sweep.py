"""Design-space sweeps: results, resume, interruption, engines, bad grids, Pareto marks."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmsat.cli import main
from nmsat.hw.params import load_params
from nmsat.models.zoo import get_model
from nmsat.sim import sweep
from nmsat.sim.resources import estimate_resources
from nmsat.sim.step import simulate_step
from nmsat.sim.sweep import (
    RESULT_COLUMNS,
    SweepPoint,
    load_grid,
    pareto_mask,
    plan_sweep,
    run_sweep,
)

# Four points of the tiny configuration: mlp at batch 4 takes about 0.3 s each.
GRID = 'array_rows: [4, 8]\nnm: ["2:8", "dense"]\n'


def _grid(tmp_path: Path, text: str = GRID, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _plan(grid_path: Path) -> tuple[list[SweepPoint], tuple[str, ...]]:
    grid = load_grid(grid_path)
    return plan_sweep(grid, config="tiny", model="mlp", batch=4), grid.keys


def _run(points: list[SweepPoint], keys: tuple[str, ...], out: Path, **kw: Any) -> Any:
    kw.setdefault("jobs", 1)
    return run_sweep(points, out, swept=keys, progress=False, **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the key of every point evaluate_point sees (jobs=1 runs in this process)."""
    seen: list[str] = []
    real = sweep.evaluate_point

    def counting(point: SweepPoint) -> dict[str, Any]:
        seen.append(point.key)
        return real(point)

    monkeypatch.setattr(sweep, "evaluate_point", counting)
    return seen


# -- the grid and the plan ---------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_file_order(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path))
    assert grid.keys == ("array_rows", "nm")
    assert grid.size == 4
    assert grid.points() == [
        {"array_rows": 4, "nm": "2:8"},
        {"array_rows": 4, "nm": "dense"},
        {"array_rows": 8, "nm": "2:8"},
        {"array_rows": 8, "nm": "dense"},
    ]


def test_point_keys_are_stable_and_distinct(tmp_path: Path) -> None:
    first, _ = _plan(_grid(tmp_path))
    again, _ = _plan(_grid(tmp_path, "nm: [dense, '2:8']\narray_rows: [8, 4]\n", "other.yaml"))
    assert len({p.key for p in first}) == 4
    # The same configurations spelt in another order get the same keys.
    assert {p.key for p in first} == {p.key for p in again}
    # A --set changes every point.
    grid = load_grid(_grid(tmp_path))
    changed = plan_sweep(grid, config="tiny", overrides=["clock_hz=2e8"], model="mlp", batch=4)
    assert not {p.key for p in changed} & {p.key for p in first}


# -- results -----------------------------------------------------------------------------------


def test_csv_matches_a_direct_simulation(tmp_path: Path) -> None:
    points, keys = _plan(_grid(tmp_path))
    result = _run(points, keys, tmp_path / "out")
    rows = _rows(tmp_path / "out" / "results.csv")
    fixed = ["point", "array_rows", "nm", "model", "batch", "config"]
    assert list(rows[0]) == [*fixed, *RESULT_COLUMNS]
    assert [(r["array_rows"], r["nm"]) for r in rows] == [
        ("4", "2:8"),
        ("4", "dense"),
        ("8", "2:8"),
        ("8", "dense"),
    ]
    params = load_params("tiny", ["array_rows=8"])
    direct = simulate_step(get_model("mlp", 4), (2, 8), params)
    row = rows[2]
    assert int(row["cycles"]) == direct.cycles
    assert float(row["seconds"]) == direct.seconds
    assert float(row["energy_j"]) == direct.energy.total_pj * 1e-12
    assert row["energy_table"] == direct.energy.table == "horowitz45"
    assert float(row["utilization"]) == direct.utilization
    macs = direct.result.events.macs_dense_equivalent
    assert float(row["gflops_per_w"]) == pytest.approx(2 * macs / (direct.energy.total_pj * 1e-3))
    est = estimate_resources(params)
    assert int(row["lut"]) == est.total.lut and int(row["uram"]) == est.total.uram
    assert row["resource_estimate"] == "xcvu9p_estimate" and row["fits_device"] == "True"
    assert row["error"] == "" and row["model"] == "mlp" and row["batch"] == "4"
    # Dense is slower and costlier than 2:8 on the same array: never Pareto-optimal here.
    assert rows[1]["pareto"] == rows[3]["pareto"] == "False"
    assert result.evaluated == 4 and result.reused == 0 and result.failed == 0
    assert "Pareto-optimal" in result.format_pareto()


def test_a_model_that_does_not_fit_is_an_error_row(tmp_path: Path) -> None:
    points, keys = _plan(_grid(tmp_path, "act_buffer_bytes: [1024, 8192]\n"))
    result = _run(points, keys, tmp_path / "out")
    bad, good = _rows(tmp_path / "out" / "results.csv")
    assert "fc1" in bad["error"] and "larger buffers" in bad["error"]
    assert bad["cycles"] == "" and bad["energy_j"] == "" and bad["pareto"] == "False"
    assert bad["lut"] != ""  # resources depend on the configuration only
    assert good["error"] == "" and int(good["cycles"]) > 0 and good["pareto"] == "True"
    assert result.failed == 1


def test_rerun_reuses_every_point_and_gives_the_same_bytes(
    tmp_path: Path, counter: list[str]
) -> None:
    points, keys = _plan(_grid(tmp_path))
    out = tmp_path / "out"
    _run(points, keys, out)
    first = (out / "results.csv").read_bytes()
    counter.clear()
    result = _run(points, keys, out)
    assert counter == [] and result.reused == 4
    assert (out / "results.csv").read_bytes() == first


def test_resume_evaluates_only_the_missing_point(tmp_path: Path, counter: list[str]) -> None:
    points, keys = _plan(_grid(tmp_path))
    out = tmp_path / "out"
    _run(points, keys, out)
    first = (out / "results.csv").read_bytes()
    assert sorted(counter) == sorted(p.key for p in points)
    missing = points[2]
    (out / "points" / f"{missing.key}.json").unlink()
    (out / "results.csv").unlink()
    counter.clear()
    result = _run(points, keys, out)
    assert counter == [missing.key]
    assert result.evaluated == 1 and result.reused == 3
    assert (out / "results.csv").read_bytes() == first


def test_a_corrupt_point_file_is_evaluated_again(tmp_path: Path, counter: list[str]) -> None:
    points, keys = _plan(_grid(tmp_path, "array_rows: [4, 8]\n"))
    out = tmp_path / "out"
    _run(points, keys, out)
    (out / "points" / f"{points[0].key}.json").write_text("{not json", encoding="utf-8")
    counter.clear()
    _run(points, keys, out)
    assert counter == [points[0].key]


def test_interruption_leaves_no_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points, keys = _plan(_grid(tmp_path))
    out = tmp_path / "out"
    real = sweep.evaluate_point
    calls = 0

    def interrupted(point: SweepPoint) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real(point)

    monkeypatch.setattr(sweep, "evaluate_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(points, keys, out)
    assert not (out / "results.csv").exists()
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(
        f"{p.key}.json" for p in points[:2]
    )
    monkeypatch.setattr(sweep, "evaluate_point", real)
    result = _run(points, keys, out)
    assert result.evaluated == 2 and result.reused == 2
    assert len(_rows(out / "results.csv")) == 4


def test_interrupted_rerun_keeps_the_previous_complete_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, small_keys = _plan(_grid(tmp_path, "array_rows: [4]\n"))
    out = tmp_path / "out"
    _run(small, small_keys, out)
    before = (out / "results.csv").read_bytes()

    def stop(point: SweepPoint) -> dict[str, Any]:
        raise KeyboardInterrupt

    big, big_keys = _plan(_grid(tmp_path, "array_rows: [4, 8]\n", "big.yaml"))
    monkeypatch.setattr(sweep, "evaluate_point", stop)
    with pytest.raises(KeyboardInterrupt):
        _run(big, big_keys, out)
    assert (out / "results.csv").read_bytes() == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# -- engines -----------------------------------------------------------------------------------


def test_dask_engine_gives_the_same_rows_as_local(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    grid = "array_rows: [4]\nnm: ['2:8', dense]\nact_buffer_bytes: [1024, 8192]\n"
    points, keys = _plan(_grid(tmp_path, grid))
    _run(points, keys, tmp_path / "local")
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        _run(points, keys, tmp_path / "dask", engine="dask", scheduler=cluster.scheduler_address)
    local = (tmp_path / "local" / "results.csv").read_bytes()
    assert (tmp_path / "dask" / "results.csv").read_bytes() == local
    rows = _rows(tmp_path / "local" / "results.csv")
    assert len(rows) == 4 and sum(1 for r in rows if r["error"]) == 2


def test_dask_engine_starts_a_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    points, keys = _plan(_grid(tmp_path, "array_rows: [4]\n"))
    _run(points, keys, tmp_path / "local")
    # In-process workers keep the test fast; the CLI's default starts worker processes.
    monkeypatch.setitem(sweep.LOCAL_CLUSTER_OPTIONS, "processes", False)
    _run(points, keys, tmp_path / "dask", engine="dask")
    assert (tmp_path / "dask" / "results.csv").read_bytes() == (
        tmp_path / "local" / "results.csv"
    ).read_bytes()


@pytest.mark.slow
def test_local_process_pool_gives_the_same_rows(tmp_path: Path) -> None:
    points, keys = _plan(_grid(tmp_path))
    _run(points, keys, tmp_path / "serial")
    _run(points, keys, tmp_path / "pool", jobs=2)
    assert (tmp_path / "pool" / "results.csv").read_bytes() == (
        tmp_path / "serial" / "results.csv"
    ).read_bytes()


def test_parquet_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    points, keys = _plan(_grid(tmp_path, "array_rows: [4]\n"))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "results.parquet").write_bytes(b"stale")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    result = _run(points, keys, out)
    assert result.paths == (out / "results.csv",)
    assert not (out / "results.parquet").exists()


def test_parquet_holds_the_csv_rows(tmp_path: Path, require_tools: bool) -> None:
    # pyarrow is optional for users and part of the dev group: missing, this test skips on a
    # developer's machine and fails in CI.
    try:
        import pyarrow.parquet as pq
    except ImportError:
        if require_tools:
            pytest.fail("pyarrow is not installed (it is in the dev group)")
        pytest.skip("pyarrow is optional; Parquet is written when present")

    points, keys = _plan(_grid(tmp_path, GRID + "act_buffer_bytes: [1024, 8192]\n"))
    out = tmp_path / "out"
    result = _run(points, keys, out)
    assert out / "results.parquet" in result.paths
    table = pq.read_table(out / "results.parquet").to_pylist()
    rows = _rows(out / "results.csv")
    assert len(table) == len(rows) == 8
    for got, want in zip(table, rows, strict=True):
        assert {k: "" if v is None else str(v) for k, v in got.items()} == want


# -- the command line --------------------------------------------------------------------------


def test_cli_sweep_writes_csv_and_pareto_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    grid = _grid(tmp_path)
    argv = ["sweep", "--config", "tiny", "--grid", str(grid), "--model", "mlp", "--batch", "4"]
    argv += ["--out", str(out), "--jobs", "1", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 points: 4 simulated, 0 reused" in text
    assert "Pareto-optimal points" in text and "ESTIMATE" in text
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_rows(out / "results.csv")) == 4
    assert main(argv) == 0
    assert "0 simulated, 4 reused" in capsys.readouterr().out


_BAD_GRIDS = [
    ("colour: [1]\n", "colour: unknown key"),
    ("array_rows: []\n", "array_rows: empty list"),
    ("array_rows: 8\n", "array_rows: expected a list"),
    ("array_rows: [4, 4]\n", "listed twice"),
    ("array_rows: [3]\n", "array_rows: must be a power of two"),
    ("buffer_banks: [64]\nvec_buffer_bytes: [2048]\n", "vec_buffer_bytes: must be a positive"),
    ("nm: [2:8]\n", "YAML reads 2:8 as the number 128"),
    ("nm: ['3:7']\n", "nm:"),
    ("nm: ['1:16']\n", "nm 1:16: not supported by tiny"),
    ("model: [nosuchnet]\n", "unknown model 'nosuchnet'"),
    ("energy_table: [nosuchtable]\n", "energy table 'nosuchtable'"),
    ("[1, 2]\n", "expected a mapping"),
    ("{}\n", "no parameters"),
    ("array_rows: [4\n", "malformed YAML"),
    ("clock_hz: [2e8, 200000000.0]\n", "are the same configuration"),
]


@pytest.mark.parametrize(("text", "needle"), _BAD_GRIDS)
def test_bad_grids_exit_2_in_one_line_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    out = tmp_path / "out"
    model = [] if text.startswith("model") else ["--model", "mlp"]
    argv = ["sweep", "--config", "tiny", "--grid", str(_grid(tmp_path, text)), *model]
    assert main([*argv, "--batch", "4", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "no model: give --model"),
        (["--model", "mlp", "--scheduler", "tcp://127.0.0.1:1"], "needs --engine dask"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    grid = _grid(tmp_path, "array_rows: [4]\n")
    argv = ["sweep", "--config", "tiny", "--grid", str(grid), "--out", str(tmp_path / "o")]
    assert main([*argv, "--batch", "4", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_swept_model_and_model_option_conflict(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, "model: [mlp]\n"))
    with pytest.raises(sweep.ConfigError, match="drop --model"):
        plan_sweep(grid, config="tiny", model="mlp", batch=4)


# -- Pareto marks ------------------------------------------------------------------------------


def test_pareto_mask_examples() -> None:
    assert pareto_mask([(1, 3), (2, 2), (3, 1), (3, 3), None]) == [True, True, True, False, False]
    assert pareto_mask([(1, 1), (1, 1), (2, 2)]) == [True, True, False]
    assert pareto_mask([(1, 2, 3), (1, 2, 2)]) == [False, True]
    assert pareto_mask([None, None]) == [False, False]
    assert pareto_mask([]) == []


_coords = st.lists(
    st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))),
    max_size=12,
)


@given(points=_coords)
def test_pareto_mask_is_non_domination(points: list[tuple[int, int, int] | None]) -> None:
    mask = pareto_mask(points)

    def dominates(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    for p, optimal in zip(points, mask, strict=True):
        expected = p is not None and not any(q is not None and dominates(q, p) for q in points)
        assert optimal == expected
    if any(p is not None for p in points):
        assert any(mask)


# -- the Pareto plot (reports/pareto.py draws it from a SweepResult) ---------------------------


def test_pareto_plot_of_two_models_with_failed_points(tmp_path: Path) -> None:
    from nmsat.reports.pareto import plot_pareto, point_label

    grid = load_grid(_grid(tmp_path, "model: [mlp, cnn]\nact_buffer_bytes: [1024, 8192]\n"))
    points = plan_sweep(grid, config="tiny", batch=4)
    result = _run(points, grid.keys, tmp_path / "out")
    assert result.failed == 2
    png = plot_pareto(result)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert point_label({"array_rows": 32, "array_cols": 16, "nm": "2:8"}) == "32x16 2:8"
    assert point_label({"act_buffer_bytes": 4194304, "clock_hz": 2e8}) == "ACT=4M f=200MHz"


def test_a_swept_result_column_appears_once(tmp_path: Path) -> None:
    grid = "energy_table: [horowitz45, fpga_vu9p_estimate]\nact_buffer_bytes: [1024, 8192]\n"
    points, keys = _plan(_grid(tmp_path, grid))
    _run(points, keys, tmp_path / "out")
    text = (tmp_path / "out" / "results.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].split(",").count("energy_table") == 1
    rows = _rows(tmp_path / "out" / "results.csv")
    assert [r["energy_table"] for r in rows] == ["horowitz45"] * 2 + ["fpga_vu9p_estimate"] * 2
    # The FPGA table prices the same step differently.
    assert float(rows[1]["energy_j"]) != float(rows[3]["energy_j"])
