"""The speedup report: what BDWP N:M training gains on the SAT-style accelerator.

:func:`make_speedup_report` compiles and simulates one training step of every workload
(:data:`WORKLOADS`) at every pattern (:data:`PATTERNS`, dense included) on one hardware
configuration, plus the ablation of the three dataflow optimisations at one pattern, and
writes into one folder:

- ``README.md``: the configuration, how to regenerate the report, and the tables: step and
  per-pass speedup against dense on the same hardware beside the compute bound
  ``3M / (2N + M)`` and the paper's 1.75x at 2:8; the ablation; energy per step, its
  breakdown and efficiency (with the energy table named); utilisation; effective and
  executed throughput;
- ``runs.csv``: one row per simulated step with every figure;
- ``speedup.png``, ``passes.png``, ``ablation.png``, ``energy.png``: the plots.

Every file is written atomically and records no time or machine, so a rerun gives the same
bytes (STYLE.md G18).

Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
     Dataflow Co-Design", IEEE TCAD 2023 (1.75x average at 2:8 on a VCU1525); PAPER.md (the
     bound 3M / (2N + M)); DESIGN.md sections 5 and 7.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import multiprocessing
import os
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nmsat.compiler import CompileOptions
from nmsat.hw.errors import ConfigError
from nmsat.hw.files import write_atomic
from nmsat.hw.params import SATParams, load_params
from nmsat.models.nm import parse_nm
from nmsat.models.zoo import get_model
from nmsat.sim.energy import load_energy_table
from nmsat.sim.runner import PASS_NAMES
from nmsat.sim.step import simulate_step

__all__ = [
    "ABLATIONS",
    "CSV_COLUMNS",
    "PAPER_SPEEDUP_2_8",
    "PATTERNS",
    "WORKLOADS",
    "Run",
    "compute_bound",
    "make_speedup_report",
    "run_one",
]

#: Models of the report (docs/zoo.md).
WORKLOADS = ("resnet18", "resnet50", "vgg16", "vit_b16", "bert_base")
#: Patterns of the report; ``dense`` is the baseline on the same hardware.
PATTERNS = ("dense", "2:4", "2:8", "1:8")
#: The paper's average training speedup at 2:8 over dense on the same hardware.
PAPER_SPEEDUP_2_8 = 1.75
#: The ablation's variants: each optimisation off in turn, then all off.
ABLATIONS: dict[str, CompileOptions] = {
    "all on": CompileOptions(),
    "no interleave": CompileOptions(interleave=False),
    "no pre-generation": CompileOptions(pregen=False),
    "no scheduling": CompileOptions(schedule=False),
    "all off": CompileOptions(interleave=False, pregen=False, schedule=False),
}

CSV_COLUMNS = (
    "model",
    "nm",
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
    "instructions",
    "host_ops",
)


def compute_bound(nm: str) -> float:
    """BDWP's ideal step speedup ``3M / (2N + M)`` (1.0 for dense)."""
    n, m = parse_nm(nm)
    return 3 * m / (2 * n + m)


@dataclasses.dataclass(frozen=True)
class Run:
    """One simulated step of the report: its coordinates and its JSON record."""

    model: str
    nm: str
    variant: str
    record: dict[str, Any]

    @property
    def cycles(self) -> int:
        """Cycles of the step."""
        return int(self.record["cycles"])

    def passes(self) -> dict[str, int]:
        """Cycles by pass."""
        return {k: int(v) for k, v in self.record["passes"].items()}


def run_one(
    model: str, nm: str, variant: str, config: str, overrides: Sequence[str], batch: int
) -> Run:
    """Compile and simulate one step (perf mode); a top-level function for worker processes."""
    params = load_params(config, overrides)
    summary = simulate_step(get_model(model, batch), parse_nm(nm), params, ABLATIONS[variant])
    record = summary.to_json()
    record.pop("events", None)
    return Run(model, nm, variant, record)


def _jobs(
    models: Sequence[str], patterns: Sequence[str], ablation_nm: str | None
) -> list[tuple[str, str, str]]:
    jobs = [(model, nm, "all on") for model in models for nm in patterns]
    if ablation_nm is not None:
        jobs += [(model, ablation_nm, v) for model in models for v in ABLATIONS if v != "all on"]
    return jobs


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_all(
    jobs: list[tuple[str, str, str]],
    config: str,
    overrides: Sequence[str],
    batch: int,
    workers: int,
    progress: bool,
) -> list[Run]:
    bar = tqdm(
        total=len(jobs), desc="speedup report", unit="step", file=sys.stderr, disable=not progress
    )
    with bar:
        if workers == 1:
            runs = []
            for job in jobs:
                runs.append(run_one(*job, config, overrides, batch))
                bar.update(1)
            return runs
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(run_one, *job, config, overrides, batch) for job in jobs]
            for _ in as_completed(futures):
                bar.update(1)
        return [future.result() for future in futures]


def make_speedup_report(
    out_dir: Path,
    *,
    config: str = "vcu1525",
    overrides: Sequence[str] = (),
    batch: int = 32,
    models: Sequence[str] = WORKLOADS,
    patterns: Sequence[str] = PATTERNS,
    ablation_nm: str | None = "2:8",
    jobs: int | None = None,
    progress: bool = True,
) -> str:
    """Simulate every step of the report and write it into ``out_dir``; return its main table.

    Raises
    ------
    NmsatError
        For a bad configuration, model or pattern (before anything is written).
    """
    params = load_params(config, overrides)
    for nm in patterns:
        n, m = parse_nm(nm)
        if n < m and not params.supports_nm(n, m):
            raise ConfigError(f"pattern {nm} is not supported by configuration {params.name}")
    if "dense" not in patterns:
        patterns = ("dense", *patterns)
    for model in models:
        get_model(model, batch)  # fails early on an unknown name
    table = load_energy_table(params.energy_table)
    job_list = _jobs(models, patterns, ablation_nm)
    workers = max(1, min(jobs or _usable_cpus(), len(job_list)))
    runs = _run_all(job_list, config, overrides, batch, workers, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    main_table = _speedup_table(runs, models, patterns)
    write_atomic(out_dir / "runs.csv", _csv_text(runs))
    write_atomic(
        out_dir / "README.md",
        _readme(
            runs,
            params,
            table.name,
            table.source,
            batch,
            models,
            patterns,
            ablation_nm,
            config,
            overrides,
        ),
    )
    write_atomic(out_dir / "speedup.png", _plot_speedup(runs, models, patterns))
    write_atomic(out_dir / "passes.png", _plot_passes(runs, models, patterns))
    if ablation_nm is not None:
        write_atomic(out_dir / "ablation.png", _plot_ablation(runs, models, ablation_nm))
    write_atomic(out_dir / "energy.png", _plot_energy(runs, models, patterns, table.name))
    return main_table


# -- tables ------------------------------------------------------------------------------------


def _index(runs: Sequence[Run]) -> dict[tuple[str, str, str], Run]:
    return {(r.model, r.nm, r.variant): r for r in runs}


def _speedup(
    runs: dict[tuple[str, str, str], Run], model: str, nm: str, variant: str = "all on"
) -> float:
    return runs[(model, "dense", "all on")].cycles / runs[(model, nm, variant)].cycles


def _speedup_table(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> str:
    idx = _index(runs)
    sparse = [p for p in patterns if p != "dense"]
    head = "| model | " + " | ".join(sparse) + " |"
    lines = [head, "|---" * (len(sparse) + 1) + "|"]
    for model in models:
        cells = [f"{_speedup(idx, model, nm):.2f}x" for nm in sparse]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    means = [statistics.fmean(_speedup(idx, model, nm) for model in models) for nm in sparse]
    lines.append("| **mean** | " + " | ".join(f"**{v:.2f}x**" for v in means) + " |")
    lines.append(
        "| bound 3M/(2N+M) | " + " | ".join(f"{compute_bound(nm):.2f}x" for nm in sparse) + " |"
    )
    paper = [f"{PAPER_SPEEDUP_2_8:.2f}x (mean)" if nm == "2:8" else "" for nm in sparse]
    lines.append("| paper (VCU1525) | " + " | ".join(paper) + " |")
    return "\n".join(lines)


def _pass_table(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> str:
    idx = _index(runs)
    sparse = [p for p in patterns if p != "dense"]
    lines = [
        "| model | pattern | FF | BP | WU | update + prune | element-wise | step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        dense = idx[(model, "dense", "all on")].passes()
        for nm in sparse:
            run = idx[(model, nm, "all on")].passes()
            cells = []
            for keys in (("ff",), ("bp",), ("wu",), ("update", "prune"), ("vector",)):
                d = sum(dense[k] for k in keys)
                s = sum(run[k] for k in keys)
                cells.append(f"{d / s:.2f}x" if s else "-")
            cells.append(f"{_speedup(idx, model, nm):.2f}x")
            lines.append(f"| {model} | {nm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ablation_table(runs: Sequence[Run], models: Sequence[str], nm: str) -> str:
    idx = _index(runs)
    variants = list(ABLATIONS)
    lines = ["| model | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for model in models:
        base = idx[(model, nm, "all on")].cycles
        cells = []
        for v in variants:
            run = idx[(model, nm, v)]
            cells.append(
                f"{run.cycles / 1e6:,.1f} M"
                + ("" if v == "all on" else f" ({run.cycles / base:.2f}x)")
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Each optimisation's gain at " + nm + " (cycles with it off / cycles with all on):"
    )
    lines.append("")
    for v in variants[1:-1]:
        gains = [idx[(m, nm, v)].cycles / idx[(m, nm, "all on")].cycles for m in models]
        lines.append(
            f"- {v.replace('no ', '')}: mean {statistics.fmean(gains):.2f}x "
            f"(from {min(gains):.2f}x to {max(gains):.2f}x)"
        )
    return "\n".join(lines)


def _energy_table(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> str:
    idx = _index(runs)
    lines = [
        "| model | pattern | energy per step (mJ) | vs dense | MAC | SRAM | DRAM | SORE + "
        "WUVE | control | static | effective GFLOPS/W |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        dense_pj = idx[(model, "dense", "all on")].record["energy_pj"]
        for nm in patterns:
            rec = idx[(model, nm, "all on")].record
            e = rec["energy_breakdown_pj"]
            total = e["total_pj"]
            shares = [
                e["mac_pj"],
                e["sram_pj"],
                e["dram_pj"],
                e["sore_pj"] + e["wuve_pj"],
                e["control_pj"],
                e["static_pj"],
            ]
            cells = [f"{total / 1e9:,.1f}", f"{total / dense_pj:.2f}"]
            cells += [f"{100 * s / total:.1f} %" for s in shares]
            cells.append(f"{_gflops_per_w(rec):.1f}")
            lines.append(f"| {model} | {nm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gflops_per_w(rec: dict[str, Any]) -> float:
    """Dense-equivalent FLOPs (2 per MAC) per joule, in GFLOPS/W."""
    return 2 * float(rec["macs_dense_equivalent"]) / (float(rec["energy_pj"]) * 1e-12) / 1e9


def _throughput_table(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> str:
    idx = _index(runs)
    lines = [
        "| model | pattern | step time (ms) | utilisation | effective TMAC/s | "
        "executed TMAC/s | instructions | host operations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for nm in patterns:
            rec = idx[(model, nm, "all on")].record
            cells = [
                f"{rec['seconds'] * 1e3:,.1f}",
                f"{100 * rec['utilization']:.1f} %",
                f"{rec['throughput_effective_tmacs']:.3f}",
                f"{rec['throughput_executed_tmacs']:.3f}",
                f"{rec['instructions']:,}",
                str(len(rec["host_ops"])),
            ]
            lines.append(f"| {model} | {nm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_text(runs: Sequence[Run]) -> str:
    idx = _index(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        rec = run.record
        dense = idx.get((run.model, "dense", "all on"))
        speedup = dense.cycles / run.cycles if dense is not None else float("nan")
        writer.writerow(
            [
                run.model,
                run.nm,
                run.variant,
                rec["batch"],
                rec["cycles"],
                *(rec["passes"][p] for p in PASS_NAMES),
                f"{rec['seconds']:.6g}",
                f"{speedup:.4f}",
                f"{compute_bound(run.nm):.4f}",
                rec["macs_executed"],
                rec["macs_dense_equivalent"],
                f"{rec['utilization']:.4f}",
                f"{rec['throughput_effective_tmacs']:.4f}",
                f"{rec['throughput_executed_tmacs']:.4f}",
                f"{rec['energy_pj'] / 1e9:.4f}",
                rec["energy_table"],
                f"{_gflops_per_w(rec):.2f}",
                rec["instructions"],
                len(rec["host_ops"]),
            ]
        )
    return buffer.getvalue()


def _readme(
    runs: Sequence[Run],
    params: SATParams,
    table: str,
    source: str,
    batch: int,
    models: Sequence[str],
    patterns: Sequence[str],
    ablation_nm: str | None,
    config: str,
    overrides: Sequence[str],
) -> str:
    command = f"nmsat report --config {config}" + "".join(f" --set {o}" for o in overrides)
    if batch != 32:
        command += f" --batch {batch}"
    idx = _index(runs)
    hosts = sorted({h["kind"] for r in runs for h in r.record["host_ops"]})
    mean_28 = (
        statistics.fmean(_speedup(idx, m, "2:8") for m in models) if "2:8" in patterns else math.nan
    )
    parts = [
        "# Speedup of BDWP N:M sparse training on the SAT-style accelerator",
        "",
        "Generated by `nmsat.reports.speedup`; do not edit. Regenerate with",
        "",
        "```sh",
        f"{command} --out <folder>",
        "```",
        "",
        "## What was run",
        "",
        f"- Hardware: configuration `{params.name}`: a {params.array_rows} x {params.array_cols} "
        f"array of FP16 x FP16 -> FP32 PEs at {params.clock_hz / 1e6:g} MHz "
        f"({params.peak_macs_per_s / 1e12:.3f} TMAC/s peak), external memory "
        f"{params.dram_bytes_per_cycle} bytes per cycle "
        f"({params.dram_bandwidth_bytes_per_s / 1e9:.1f} GB/s) with "
        f"{params.dram_latency_cycles} cycles latency, FP32 adder latency "
        f"{params.adder_latency}, interleave {params.interleave}, SORE {params.sore_lanes} "
        f"lanes, WUVE {params.wuve_lanes} lanes.",
        f"- Workloads: one BDWP training step (FF, BP, WU, SGD update with SR-STE, pruning) of "
        f"{', '.join(models)} at batch {batch}, compiled by `nmsat.compiler` and run on the "
        "cycle-accurate Python model (`nmsat.sim`, perf mode). First convs, patch embeddings "
        "and classifiers stay dense (docs/decisions.md).",
        f"- Patterns: {', '.join(patterns)}; *dense* is the same hardware without N:M.",
        "- Cycles count the accelerator only. Work left to the host ("
        + ", ".join(hosts)
        + ") is listed per step in runs.csv and not included.",
        f"- Energy: table `{table}` ({source.strip()}). Energy = events x energy per event + "
        "static power x time.",
        "",
        "## Step speedup over dense",
        "",
        "Cycles of the dense step divided by cycles of the N:M step, same hardware.",
        "",
        _speedup_table(runs, models, patterns),
        "",
        "![step speedup](speedup.png)",
        "",
    ]
    if not math.isnan(mean_28):
        parts += [
            f"At 2:8 the mean speedup is {mean_28:.2f}x, {100 * mean_28 / 2.0:.0f} % of the "
            f"bound 2.00x; the paper reports {PAPER_SPEEDUP_2_8:.2f}x "
            f"({100 * PAPER_SPEEDUP_2_8 / 2.0:.0f} % of the bound) on its benchmarks.",
            "",
        ]
    parts += [
        "## Speedup by pass",
        "",
        "Each pass's cycles (the cycles in which its oldest instruction runs) in the dense step "
        "over the N:M step. FF and BP use the N:M copies; WU, the update and the element-wise "
        "passes are dense in both, so they bound the step speedup (Amdahl).",
        "",
        _pass_table(runs, models, patterns),
        "",
        "![speedup by pass](passes.png)",
        "",
    ]
    if ablation_nm is not None:
        parts += [
            f"## Ablation of the dataflow optimisations ({ablation_nm})",
            "",
            "Step cycles with every optimisation on, each one off in turn, and all off "
            "(interleave mapping: GEMMs interleave accumulations to hide the FP32 adder "
            "latency; pre-generation: the SORE makes next step's FF and BP copies right after "
            "each update; offline scheduling: double buffering and tokens only where data "
            "flows, off = every instruction waits for the previous one).",
            "",
            _ablation_table(runs, models, ablation_nm),
            "",
            "![ablation](ablation.png)",
            "",
        ]
    parts += [
        "## Energy per step",
        "",
        f"Table `{table}`. Shares of the step's energy by component; efficiency counts the "
        "dense-equivalent FLOPs (2 per MAC) of the step per joule.",
        "",
        _energy_table(runs, models, patterns),
        "",
        "![energy](energy.png)",
        "",
        "## Utilisation and throughput",
        "",
        "*Effective* throughput counts the MACs a dense step performs (N:M skipping counts as "
        "done); *executed* counts the MACs the array performed. Utilisation is executed MACs "
        "over PEs x cycles.",
        "",
        _throughput_table(runs, models, patterns),
        "",
        "Per-run figures (all passes, energy, instruction counts): [runs.csv](runs.csv).",
        "",
    ]
    return "\n".join(parts)


# -- plots -------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


_COLORS = {"2:4": "#4c78a8", "4:8": "#72b7b2", "2:8": "#f58518", "1:8": "#e45756", "1:4": "#54a24b"}


def _plot_speedup(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> bytes:
    idx = _index(runs)
    sparse = [p for p in patterns if p != "dense"]
    fig = _figure(1.6 * len(models) + 2.5, 4.2)
    ax = fig.subplots()
    width = 0.8 / len(sparse)
    for j, nm in enumerate(sparse):
        xs = [i + (j - (len(sparse) - 1) / 2) * width for i in range(len(models))]
        ys = [_speedup(idx, m, nm) for m in models]
        ax.bar(xs, ys, width, label=f"{nm} (bound {compute_bound(nm):.2f}x)", color=_COLORS.get(nm))
        for x in xs:
            ax.plot(
                [x - width / 2, x + width / 2],
                [compute_bound(nm)] * 2,
                color="black",
                linewidth=1.0,
            )
    if "2:8" in sparse:
        ax.axhline(
            PAPER_SPEEDUP_2_8,
            color="#f58518",
            linestyle="--",
            linewidth=1.0,
            label=f"paper, 2:8 mean ({PAPER_SPEEDUP_2_8}x)",
        )
    ax.axhline(1.0, color="#555555", linewidth=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("step speedup over dense (x)")
    ax.set_title("BDWP training step: N:M over dense, same hardware (black ticks: 3M/(2N+M))")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _plot_passes(runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str]) -> bytes:
    idx = _index(runs)
    sparse = [p for p in patterns if p != "dense"]
    fig = _figure(4.0 * len(sparse) + 1.0, 4.0)
    axes = fig.subplots(1, len(sparse), squeeze=False, sharey=True)[0]
    keys = [("FF", ("ff",)), ("BP", ("bp",)), ("WU", ("wu",)), ("step", None)]
    colors = ["#4c78a8", "#f58518", "#54a24b", "#333333"]
    width = 0.8 / len(keys)
    for ax, nm in zip(axes, sparse, strict=True):
        for j, (label, names) in enumerate(keys):
            xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(models))]
            ys = []
            for model in models:
                if names is None:
                    ys.append(_speedup(idx, model, nm))
                    continue
                d = sum(idx[(model, "dense", "all on")].passes()[k] for k in names)
                s = sum(idx[(model, nm, "all on")].passes()[k] for k in names)
                ys.append(d / s if s else 0.0)
            ax.bar(xs, ys, width, label=label, color=colors[j])
        ax.axhline(compute_bound(nm), color="black", linestyle=":", linewidth=1.0)
        ax.axhline(1.0, color="#555555", linewidth=0.8)
        ax.set_xticks(range(len(models)), models, rotation=20)
        ax.set_title(f"{nm} (dotted: step bound {compute_bound(nm):.2f}x)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("speedup over dense (x)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _plot_ablation(runs: Sequence[Run], models: Sequence[str], nm: str) -> bytes:
    idx = _index(runs)
    variants = list(ABLATIONS)
    fig = _figure(1.8 * len(models) + 2.5, 4.0)
    ax = fig.subplots()
    width = 0.8 / len(variants)
    palette = ["#333333", "#4c78a8", "#f58518", "#54a24b", "#e45756"]
    for j, v in enumerate(variants):
        xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(models))]
        ys = [idx[(m, nm, v)].cycles / idx[(m, nm, "all on")].cycles for m in models]
        ax.bar(xs, ys, width, label=v, color=palette[j % len(palette)])
    ax.axhline(1.0, color="#555555", linewidth=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("step cycles / cycles with all on")
    ax.set_title(f"Ablation of the dataflow optimisations at {nm}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_energy(
    runs: Sequence[Run], models: Sequence[str], patterns: Sequence[str], table: str
) -> bytes:
    idx = _index(runs)
    comps = [
        ("MAC", ("mac_pj",)),
        ("SRAM", ("sram_pj",)),
        ("DRAM", ("dram_pj",)),
        ("SORE + WUVE", ("sore_pj", "wuve_pj")),
        ("control", ("control_pj",)),
        ("static", ("static_pj",)),
    ]
    colors = ["#4c78a8", "#72b7b2", "#e45756", "#54a24b", "#b279a2", "#9d755d"]
    fig = _figure(1.9 * len(models) + 2.5, 4.2)
    ax = fig.subplots()
    width = 0.8 / len(patterns)
    for j, nm in enumerate(patterns):
        xs = [i + (j - (len(patterns) - 1) / 2) * width for i in range(len(models))]
        bottoms = [0.0] * len(models)
        for c, (label, keys) in enumerate(comps):
            ys = []
            for model in models:
                e = idx[(model, nm, "all on")].record["energy_breakdown_pj"]
                dense = idx[(model, "dense", "all on")].record["energy_pj"]
                ys.append(sum(e[k] for k in keys) / dense)
            ax.bar(
                xs,
                ys,
                width,
                bottom=bottoms,
                color=colors[c],
                label=label if j == 0 else None,
                edgecolor="white",
                linewidth=0.3,
            )
            bottoms = [b + y for b, y in zip(bottoms, ys, strict=True)]
        for x, top in zip(xs, bottoms, strict=True):
            ax.text(x, top + 0.01, nm, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("energy per step / dense step")
    ax.set_ylim(0, 1.25)
    ax.set_title(f"Energy per training step by component (table {table})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncols=3, loc="upper right")
    return _png(fig)
