"""The evaluation report's tables: Markdown for the README, CSV and JSON for the data files.

Every function is pure over :class:`~._speedup_data.Results` and formats floats with a fixed
number of decimals, in a fixed row order, so a rerun writes the same bytes and the committed
files can be compared exactly (tests/reports/test_speedup_committed.py).

Ref: DESIGN.md section 7 (effective and executed throughput, a named energy table);
     S. Williams et al., "Roofline", CACM 52(4), 2009 (ridge point = peak / bandwidth).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmsat.hw.params import SATParams
from nmsat.sim.runner import PASS_NAMES

from ._speedup_data import (
    ABLATIONS,
    GPU_2_4,
    PAPER_SPEEDUP_2_8,
    PASS_GROUPS,
    SPARSITY_LABELS,
    Results,
    Run,
    compute_bound,
)

__all__ = [
    "RUNS_COLUMNS",
    "ablation_table",
    "accuracy_table",
    "energy_table",
    "forward_table",
    "gpu_table",
    "layers_csv",
    "memory_bound_cycles",
    "memory_bound_share",
    "pass_table",
    "ridge",
    "roofline_patterns",
    "roofline_table",
    "runs_csv",
    "speedup_csv",
    "speedup_table",
    "summary_json",
    "throughput_table",
]

RUNS_COLUMNS = (
    "model",
    "nm",
    "sparsity",
    "variant",
    "batch",
    "cycles",
    *(f"{p}_cycles" for p in PASS_NAMES),
    "seconds",
    "speedup",
    "bound",
    "macs_executed",
    "macs_dense_equivalent",
    "utilization",
    "throughput_effective_tmacs",
    "throughput_executed_tmacs",
    "energy_mj",
    "energy_table",
    "gflops_per_w_effective",
    "gflops_per_w_executed",
    "instructions",
    "host_ops",
)

SPEEDUP_COLUMNS = (
    "model",
    "nm",
    "sparsity",
    "ff",
    "bp",
    "wu",
    "update_other",
    "step",
    "bound",
    "energy_vs_dense",
)

LAYERS_COLUMNS = (
    "model",
    "nm",
    "layer",
    "pass",
    "cycles",
    "span_cycles",
    "macs_executed",
    "macs_dense_equivalent",
    "dram_bytes",
    "dram_traffic_bytes",
    "intensity_mac_per_byte",
    "effective_tmacs",
)


def _x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


# -- Markdown ----------------------------------------------------------------------------------


def speedup_table(res: Results) -> str:
    """Step speedup per model and pattern, the mean, the bound, the paper's and the GPU's."""
    sparse = res.sparse
    lines = ["| model | " + " | ".join(sparse) + " |", "|---" * (len(sparse) + 1) + "|"]
    for model in res.models:
        lines.append(f"| {model} | " + " | ".join(_x(res.speedup(model, nm)) for nm in sparse))
        lines[-1] += " |"
    means = [res.mean_speedup(nm) for nm in sparse]
    lines.append("| **mean** | " + " | ".join(f"**{v:.2f}x**" for v in means) + " |")
    lines.append("| bound 3M/(2N+M) | " + " | ".join(_x(compute_bound(nm)) for nm in sparse) + " |")
    paper = [f"{PAPER_SPEEDUP_2_8:.2f}x (mean)" if nm == "2:8" else "" for nm in sparse]
    lines.append("| paper, SAT on VCU1525 | " + " | ".join(paper) + " |")
    steps = [row.step for row in GPU_2_4]
    gpu = [f"{min(steps):.2f}x to {max(steps):.2f}x" if nm == "2:4" else "" for nm in sparse]
    lines.append("| GPU 2:4, H100 (per layer, PAPER.md) | " + " | ".join(gpu) + " |")
    return "\n".join(lines)


def pass_table(res: Results) -> str:
    """Speedup of every pass group and of the step, per model and pattern."""
    head = " | ".join(label for label, _ in PASS_GROUPS)
    lines = [
        f"| model | pattern | {head} | step | bound |",
        "|---" * (len(PASS_GROUPS) + 4) + "|",
    ]
    for model in res.models:
        for nm in res.sparse:
            cells = [_x(res.pass_speedup(model, nm, names)) for _, names in PASS_GROUPS]
            cells += [_x(res.speedup(model, nm)), _x(compute_bound(nm))]
            lines.append(f"| {model} | {nm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forward_table(res: Results) -> str:
    """Forward-only N:M against BDWP, per model and forward pattern."""
    lines = [
        "| model | pattern | BDWP step | forward-only step | forward-only FF | forward-only BP "
        "| BDWP energy vs dense | forward-only energy vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nm in res.forward_patterns:
        for model in res.models:
            cells = [
                _x(res.speedup(model, nm)),
                _x(res.speedup(model, nm, "forward")),
                _x(res.pass_speedup(model, nm, ("ff",), "forward")),
                _x(res.pass_speedup(model, nm, ("bp",), "forward")),
                f"{res.energy_ratio(model, nm):.2f}",
                f"{res.energy_ratio(model, nm, 'forward'):.2f}",
            ]
            lines.append(f"| {model} | {nm} | " + " | ".join(cells) + " |")
        lines.append(
            f"| **mean** | {nm} | **{res.mean_speedup(nm):.2f}x** | "
            f"**{res.mean_speedup(nm, 'forward'):.2f}x** | | | | |"
        )
        lines.append(
            f"| bound | {nm} | {compute_bound(nm):.2f}x (3M/(2N+M)) | "
            f"{compute_bound(nm, 'forward'):.2f}x (3M/(N+2M)) | | | | |"
        )
    return "\n".join(lines)


def gpu_table(res: Results) -> str:
    """PAPER.md's GPU 2:4 figures beside SAT's 2:4 figures for comparable layers."""
    lines = [
        "| GPU GEMMs (H100, PAPER.md) | GPU FF | GPU BP | GPU step | comparable layers on SAT "
        "| SAT FF | SAT BP | SAT step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in GPU_2_4:
        sat = ["-", "-", "-"]
        label = row.sat_layer or "-"
        if row.model in res.models and "2:4" in res.patterns:
            sat = [
                _x(res.layer_speedup(row.model, "2:4", row, passes))
                for passes in (("ff",), ("bp",), ("ff", "bp", "wu"))
            ]
        lines.append(
            f"| {row.gpu_layer} | {row.ff:.2f}x | {row.bp:.2f}x | {row.step:.2f}x | {label} | "
            + " | ".join(sat)
            + " |"
        )
    return "\n".join(lines)


def ablation_table(res: Results) -> str:
    """Step cycles with each optimisation off, and each one's mean gain."""
    nm = res.ablation_nm
    assert nm is not None
    variants = list(ABLATIONS)
    lines = ["| model | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for model in res.models:
        base = res.get(model, nm).cycles
        cells = []
        for v in variants:
            cycles = res.get(model, nm, variant=v).cycles
            cells.append(
                f"{cycles / 1e6:,.1f} M" + ("" if v == "all on" else f" ({cycles / base:.2f}x)")
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Each optimisation's gain at {nm} (cycles with it off / cycles with all on):",
        "",
    ]
    for v in variants[1:-1]:
        gains = [res.get(m, nm, variant=v).cycles / res.get(m, nm).cycles for m in res.models]
        lines.append(
            f"- {v.replace('no ', '')}: mean {statistics.fmean(gains):.2f}x "
            f"(from {min(gains):.2f}x to {max(gains):.2f}x)"
        )
    return "\n".join(lines)


def _energy_rows(res: Results) -> list[tuple[str, str, str, Run]]:
    rows = [(m, nm, "bdwp", res.get(m, nm)) for m in res.models for nm in res.patterns]
    rows += [
        (m, nm, "forward", res.get(m, nm, "forward"))
        for m in res.models
        for nm in res.forward_patterns
    ]
    return sorted(rows, key=lambda r: res.models.index(r[0]))


def energy_table(res: Results) -> str:
    """Energy per step, its breakdown and the efficiency, per model and pattern."""
    lines = [
        "| model | pattern | energy per step (mJ) | vs dense | MAC | SRAM | DRAM | SORE + "
        "WUVE | control | static | effective GFLOPS/W | executed GFLOPS/W |",
        "|---" * 12 + "|",
    ]
    for model, nm, sparsity, run in _energy_rows(res):
        e = run.record["energy_breakdown_pj"]
        total = e["total_pj"]
        shares = [
            e["mac_pj"],
            e["sram_pj"],
            e["dram_pj"],
            e["sore_pj"] + e["wuve_pj"],
            e["control_pj"],
            e["static_pj"],
        ]
        cells = [f"{total / 1e9:,.1f}", f"{total / res.dense(model).energy_pj:.2f}"]
        cells += [f"{100 * s / total:.1f} %" for s in shares]
        cells += [f"{run.gflops_per_w(True):.1f}", f"{run.gflops_per_w(False):.1f}"]
        label = nm if sparsity == "bdwp" else f"{nm} forward only"
        lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(res: Results) -> str:
    """Step time, utilisation, effective and executed throughput per model and pattern."""
    lines = [
        "| model | pattern | step time (ms) | utilisation | effective TMAC/s | "
        "executed TMAC/s | instructions | host operations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, nm, sparsity, run in _energy_rows(res):
        rec = run.record
        cells = [
            f"{rec['seconds'] * 1e3:,.1f}",
            f"{100 * rec['utilization']:.1f} %",
            f"{rec['throughput_effective_tmacs']:.3f}",
            f"{rec['throughput_executed_tmacs']:.3f}",
            f"{rec['instructions']:,}",
            str(len(rec["host_ops"])),
        ]
        label = nm if sparsity == "bdwp" else f"{nm} forward only"
        lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ridge(params: SATParams, speedup: float = 1.0) -> float:
    """Ridge point of the roofline, in MACs per DRAM byte, for a peak ``speedup`` x dense."""
    return params.peak_macs_per_s * speedup / params.dram_bandwidth_bytes_per_s


def roofline_patterns(res: Results) -> tuple[str, ...]:
    """The patterns the roofline shows: dense and 2:8 (else the sparsest pattern)."""
    sparse = "2:8" if "2:8" in res.patterns else (res.sparse[-1] if res.sparse else None)
    return ("dense",) if sparse is None else ("dense", sparse)


def memory_bound_cycles(res: Results, params: SATParams, model: str, nm: str) -> dict[str, int]:
    """Cycles of the layer passes left of their ridge point, by layer (program order)."""
    out: dict[str, int] = {}
    for c in res.get(model, nm).layers:
        ridge_point = ridge(params, c.macs_dense_equivalent / max(1, c.macs_executed))
        if c.dram_traffic_bytes and c.macs_dense_equivalent / c.dram_traffic_bytes < ridge_point:
            out[c.layer] = out.get(c.layer, 0) + c.cycles
    return out


def memory_bound_share(res: Results, params: SATParams, model: str, nm: str) -> float:
    """Share of the step's GEMM-pass cycles spent in layer passes left of their ridge point."""
    cycles = sum(c.cycles for c in res.get(model, nm).layers)
    bound = sum(memory_bound_cycles(res, params, model, nm).values())
    return bound / cycles if cycles else math.nan


def roofline_table(res: Results, params: SATParams) -> str:
    """Per model and pattern: the GEMM passes' attained throughput and memory-bound share."""
    lines = [
        "| model | pattern | GEMM-pass cycles | attained effective TMAC/s | "
        "cycles in memory-bound layer passes | DRAM traffic of the GEMM passes (GB) |",
        "|---|---|---|---|---|---|",
    ]
    for model in res.models:
        for nm in roofline_patterns(res):
            run = res.get(model, nm)
            cycles = sum(c.cycles for c in run.layers)
            macs = sum(c.macs_dense_equivalent for c in run.layers)
            share = memory_bound_share(res, params, model, nm)
            dram = sum(c.dram_traffic_bytes for c in run.layers)
            attained = macs / (cycles / params.clock_hz) / 1e12 if cycles else math.nan
            lines.append(
                f"| {model} | {nm} | {cycles / 1e6:,.1f} M | {attained:.3f} | "
                f"{100 * share:.1f} % | {dram / 1e9:.2f} |"
            )
    return "\n".join(lines)


def accuracy_table(path: Path) -> str | None:
    """The accuracy report's table from its committed CSV (None if the file is missing)."""
    if not path.is_file():
        return None
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    groups: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        key = (row["model"], row["pattern"], row["sparsity"])
        groups.setdefault(key, []).append(float(row["test_accuracy"]))
    labels = {"dense": "dense", **SPARSITY_LABELS}
    lines = [
        "| model | N:M | training | test accuracy (%) | vs dense (points) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for (model, pattern, sparsity), accs in groups.items():
        mean = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        dense = groups.get((model, "dense", "dense"))
        delta = ""
        if dense and sparsity != "dense":
            # + 0.0 turns a rounded -0.00 (equal accuracies, CSV rounding) into +0.00
            delta = f"{round(100 * (mean - statistics.fmean(dense)), 2) + 0.0:+.2f}"
        lines.append(
            f"| {model} | {pattern} | {labels.get(sparsity, sparsity)} | "
            f"{100 * mean:.2f} ± {100 * std:.2f} | {delta} | {len(accs)} |"
        )
    return "\n".join(lines)


# -- data files --------------------------------------------------------------------------------


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def runs_csv(res: Results) -> str:
    """One row per simulated step, in the report's order."""
    rows: list[Sequence[Any]] = [RUNS_COLUMNS]
    for run in res.runs:
        rec = run.record
        rows.append(
            [
                run.model,
                run.nm,
                run.sparsity,
                run.variant,
                rec["batch"],
                rec["cycles"],
                *(rec["passes"][p] for p in PASS_NAMES),
                f"{rec['seconds']:.6f}",
                f"{res.dense(run.model).cycles / run.cycles:.4f}",
                f"{compute_bound(run.nm, run.sparsity):.4f}",
                rec["macs_executed"],
                rec["macs_dense_equivalent"],
                f"{rec['utilization']:.4f}",
                f"{rec['throughput_effective_tmacs']:.4f}",
                f"{rec['throughput_executed_tmacs']:.4f}",
                f"{rec['energy_pj'] / 1e9:.4f}",
                rec["energy_table"],
                f"{run.gflops_per_w(True):.2f}",
                f"{run.gflops_per_w(False):.2f}",
                rec["instructions"],
                len(rec["host_ops"]),
            ]
        )
    return _csv(rows)


def _speedup_rows(res: Results) -> list[tuple[str, str, str]]:
    rows = [(m, nm, "bdwp") for m in res.models for nm in res.sparse]
    rows += [(m, nm, "forward") for m in res.models for nm in res.forward_patterns]
    return rows


def speedup_csv(res: Results) -> str:
    """Pass and step speedups over dense, one row per model, pattern and training mode."""
    rows: list[Sequence[Any]] = [SPEEDUP_COLUMNS]
    for model, nm, sparsity in _speedup_rows(res):
        cells = [res.pass_speedup(model, nm, names, sparsity) for _, names in PASS_GROUPS]
        cells += [res.speedup(model, nm, sparsity), compute_bound(nm, sparsity)]
        cells += [res.energy_ratio(model, nm, sparsity)]
        rows.append([model, nm, sparsity, *(f"{v:.4f}" for v in cells)])
    return _csv(rows)


def layers_csv(res: Results, params: SATParams) -> str:
    """Every GEMM pass of every layer of the BDWP runs: cycles, MACs, DRAM bytes."""
    rows: list[Sequence[Any]] = [LAYERS_COLUMNS]
    for model in res.models:
        for nm in res.patterns:
            for c in res.get(model, nm).layers:
                intensity = (
                    c.macs_dense_equivalent / c.dram_traffic_bytes
                    if c.dram_traffic_bytes
                    else math.inf
                )
                rate = (
                    c.macs_dense_equivalent * params.clock_hz / c.span_cycles / 1e12
                    if c.span_cycles
                    else math.inf
                )
                rows.append(
                    [
                        model,
                        nm,
                        c.layer,
                        c.phase,
                        c.cycles,
                        c.span_cycles,
                        c.macs_executed,
                        c.macs_dense_equivalent,
                        c.dram_bytes,
                        c.dram_traffic_bytes,
                        f"{intensity:.3f}",
                        f"{rate:.4f}",
                    ]
                )
    return _csv(rows)


def _r(value: float) -> float:
    return round(value, 4)


def summary_json(res: Results, params: SATParams, table: str) -> str:
    """The headline figures as JSON (4 decimals)."""
    data: dict[str, Any] = {
        "config": params.name,
        "batch": int(res.runs[0].record["batch"]),
        "energy_table": table,
        "models": list(res.models),
        "paper_speedup_2_8": PAPER_SPEEDUP_2_8,
        "step_speedup_mean": {nm: _r(res.mean_speedup(nm)) for nm in res.sparse},
        "bound": {nm: _r(compute_bound(nm)) for nm in res.sparse},
        "forward_step_speedup_mean": {
            nm: _r(res.mean_speedup(nm, "forward")) for nm in res.forward_patterns
        },
        "forward_bound": {nm: _r(compute_bound(nm, "forward")) for nm in res.forward_patterns},
        "energy_vs_dense_mean": {
            nm: _r(_mean([res.energy_ratio(m, nm) for m in res.models])) for nm in res.sparse
        },
        "gflops_per_w_effective_mean": {
            nm: _r(_mean([res.get(m, nm).gflops_per_w(True) for m in res.models]))
            for nm in res.patterns
        },
        "gflops_per_w_executed_mean": {
            nm: _r(_mean([res.get(m, nm).gflops_per_w(False) for m in res.models]))
            for nm in res.patterns
        },
        "throughput_effective_tmacs_mean": {
            nm: _r(_mean([res.get(m, nm).record["throughput_effective_tmacs"] for m in res.models]))
            for nm in res.patterns
        },
    }
    if res.ablation_nm is not None:
        nm = res.ablation_nm
        data["ablation_nm"] = nm
        data["ablation_slowdown_mean"] = {
            v: _r(
                _mean(
                    [res.get(m, nm, variant=v).cycles / res.get(m, nm).cycles for m in res.models]
                )
            )
            for v in ABLATIONS
            if v != "all on"
        }
    return json.dumps(data, indent=2) + "\n"
