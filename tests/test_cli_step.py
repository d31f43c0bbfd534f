"""The step commands (compile, simulate, report): real argument strings through main()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmsat.cli import main
from nmsat.hw.isa_asm import read_program


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def test_compile_writes_binary_listing_and_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prog"
    args = ["compile", "--config", "tiny", "--model", "mlp", "--batch", "8", "--nm", "2:8"]
    assert main([*args, "--out", str(out)]) == 0
    assert "instructions" in capsys.readouterr().out
    words = read_program(out.with_suffix(".nmsb"))
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["instructions"] == len(words)
    assert manifest["segments"][0]["start_pc"] == 0
    assert any(s["kind"] == "init" for s in manifest["segments"])
    listing = out.with_suffix(".s").read_text()
    assert listing.count("\nHALT") == len(manifest["segments"])


def test_simulate_prints_passes_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    args = [
        "simulate",
        "--config",
        "tiny",
        "--model",
        "mlp",
        "--batch",
        "8",
        "--nm",
        "2:4",
        "--mode",
        "exact",
        "--no-progress",
        "--json",
        str(path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "utilization" in out and "horowitz45" in out
    record = json.loads(path.read_text())
    for key in (
        "cycles",
        "seconds",
        "passes",
        "macs_executed",
        "macs_dense_equivalent",
        "utilization",
        "energy_pj",
        "energy_table",
        "events",
    ):
        assert key in record
    assert sum(record["passes"].values()) == record["cycles"]
    assert set(record["passes"]) >= {"ff", "bp", "wu", "update", "prune"}
    assert record["macs_executed"] < record["macs_dense_equivalent"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["simulate", "--config", "tiny", "--model", "nosuchnet"], ["nosuchnet", "mlp"]),
        (["simulate", "--config", "tiny", "--model", "mlp", "--nm", "3:8"], ["3:8", "2:8"]),
        (["simulate", "--config", "tiny", "--model", "mlp", "--nm", "5:4"], ["n = 5", "m = 4"]),
        (["compile", "--config", "tiny", "--model", "resnet50", "--out", "x"], ["batch"]),
        (
            [
                "simulate",
                "--config",
                "tiny",
                "--model",
                "mlp",
                "--batch",
                "8",
                "--energy-table",
                "nosuchtable",
            ],
            ["nosuchtable", "horowitz45"],
        ),
    ],
)
def test_step_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    assert main(args) == 2
    _one_line_error(capsys, *words)


def test_simulate_functional_mode_rejects_unsupported_host_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # batch norm of a layer file: the host keeps its parameters only for zoo models
    from nmsat.models import zoo

    path = Path(zoo.__file__).with_name("example_resnet_block.yaml")
    args = [
        "simulate",
        "--config",
        "tiny",
        "--model",
        str(path),
        "--batch",
        "2",
        "--mode",
        "fast",
        "--no-progress",
    ]
    assert main(args) == 2
    _one_line_error(capsys, "perf")


def test_simulate_cnn_with_host_work_in_exact_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "simulate",
        "--config",
        "tiny",
        "--model",
        "cnn",
        "--batch",
        "2",
        "--mode",
        "exact",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "norm" in capsys.readouterr().out


def test_report_on_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    args = [
        "report",
        "--config",
        "tiny",
        "--models",
        "mlp",
        "--batch",
        "8",
        "--jobs",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "bound 3M/(2N+M)" in capsys.readouterr().out
    for name in (
        "README.md",
        "runs.csv",
        "speedup.png",
        "passes.png",
        "ablation.png",
        "energy.png",
    ):
        assert (out / name).stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "horowitz45" in readme and "Ablation" in readme and "effective" in readme
    rows = (out / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 + 1 + 4  # header, 5 patterns, forward-only 2:8, 4 ablation variants


def test_run_reports_the_error_pc_and_opcode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.s"
    good.write_text(
        "LOAD push=compute buffer=ACT rows=2 cols=8 dram_stride=8\n"
        "GEMM pop=load n=2 m=8 rows=2 cols=8 depth=8 interleave=1 b_pad=1 c_pad=1\nHALT\n"
    )
    assert main(["isa", "asm", str(good), "--out", str(tmp_path / "good.nmsb")]) == 0
    assert main(["run", str(tmp_path / "good.nmsb"), "--config", "tiny"]) == 0
    assert "done in" in capsys.readouterr().out
    # a GEMM past the ACC buffer of tiny (the assembler does not know the configuration)
    bad = tmp_path / "bad.s"
    bad.write_text(
        "NOP queue=load\nGEMM n=1 m=1 rows=4 cols=4 depth=4 interleave=1 c_addr=9000\nHALT\n"
    )
    assert main(["isa", "asm", str(bad), "--out", str(tmp_path / "bad.nmsb")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "bad.nmsb"), "--config", "tiny"]) == 2
    _one_line_error(capsys, "pc 1", "GEMM", "ACC")
    # a token nobody pushes: deadlock at the waiting instruction
    dead = tmp_path / "dead.s"
    dead.write_text(
        "NOP queue=load\nGEMM pop=store n=1 m=1 rows=4 cols=4 depth=4 interleave=1\nHALT\n"
    )
    assert main(["isa", "asm", str(dead), "--out", str(tmp_path / "dead.nmsb")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "dead.nmsb"), "--config", "tiny"]) == 2
    _one_line_error(capsys, "pc 1", "GEMM")
