"""The evaluation report: what BDWP N:M training gains on the SAT-style accelerator.

:func:`make_speedup_report` compiles and simulates one training step of every workload
(:data:`WORKLOADS`) at every pattern (:data:`PATTERNS`, dense included), forward-only N:M at
:data:`FORWARD_PATTERNS`, and the ablation of the three dataflow optimisations at one pattern,
all on one hardware configuration, in a process pool. Every run serves every table it can
(the 2:8 run is the speedup's, the energy's, the roofline's and the ablation's baseline).
It writes into one folder:

- ``README.md``: the configuration, how to regenerate the report, and the tables: step and
  per-pass speedup against dense beside the bound ``3M / (2N + M)``, the paper's 1.75x at 2:8
  and PAPER.md's GPU 2:4 measurements; forward-only N:M against BDWP; the ablation; energy
  per step and efficiency (the energy table named); the roofline summary; utilisation,
  effective and executed throughput; the accuracy table of ``reports/accuracy``;
- data: ``runs.csv`` (one row per simulated step), ``speedup.csv`` (pass and step speedups),
  ``layers.csv`` (cycles, MACs and DRAM bytes of every layer's GEMM passes: the roofline's
  points), ``summary.json`` (the headline figures);
- plots: ``speedup.png``, ``passes.png``, ``forward.png``, ``gpu.png``, ``ablation.png``,
  ``energy.png``, ``pareto.png``, ``roofline.png``.

Every file is written atomically and records no time or machine; rows come in a fixed order
and floats with fixed decimals, so a rerun gives the same bytes (STYLE.md G18) and
tests/reports/test_speedup_committed.py can compare the committed data exactly.

Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
     Dataflow Co-Design", IEEE TCAD 2023 (1.75x average at 2:8 on a VCU1525); PAPER.md (the
     bounds, the GPU 2:4 figures); DESIGN.md sections 5 and 7.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from nmsat.hw.errors import ConfigError
from nmsat.hw.files import write_atomic
from nmsat.hw.params import SATParams, load_params
from nmsat.models.nm import parse_nm
from nmsat.models.zoo import MatMul, get_model
from nmsat.sim.energy import load_energy_table

from . import _speedup_plots as _plots
from . import _speedup_tables as tables
from ._speedup_data import (
    ABLATIONS,
    FORWARD_PATTERNS,
    GPU_2_4,
    PAPER_SPEEDUP_2_8,
    PATTERNS,
    WORKLOADS,
    Results,
    Run,
    compute_bound,
)
from ._step_profile import profile_step

__all__ = [
    "ABLATIONS",
    "ACCURACY_CSV",
    "DATA_FILES",
    "FORWARD_PATTERNS",
    "PAPER_SPEEDUP_2_8",
    "PATTERNS",
    "PLOT_FILES",
    "WORKLOADS",
    "Results",
    "Run",
    "compute_bound",
    "make_speedup_report",
    "regenerate_command",
    "run_one",
    "write_report",
]

#: The accuracy report's committed data, whose table the report includes (not retrained).
ACCURACY_CSV = Path(__file__).resolve().parent / "accuracy" / "accuracy.csv"
#: The text files of the report: what the staleness test compares.
DATA_FILES = ("README.md", "runs.csv", "speedup.csv", "layers.csv", "summary.json")
#: The plots (only with ``plots=True``; ``gpu.png`` needs 2:4, ``ablation.png`` the ablation,
#: ``forward.png`` forward patterns).
PLOT_FILES = (
    "speedup.png",
    "passes.png",
    "forward.png",
    "gpu.png",
    "ablation.png",
    "energy.png",
    "pareto.png",
    "roofline.png",
)

_Job = tuple[str, str, str, str]  # model, nm, sparsity, variant


def run_one(
    model: str,
    nm: str,
    sparsity: str,
    variant: str,
    config: str,
    overrides: Sequence[str],
    batch: int,
    keep_layers: bool,
) -> Run:
    """Compile and simulate one step (perf mode); a top-level function for worker processes."""
    params = load_params(config, overrides)
    summary, layers = profile_step(
        get_model(model, batch),
        parse_nm(nm),
        params,
        ABLATIONS[variant],
        sparsity=sparsity,
        layers=keep_layers,
    )
    record = summary.to_json()
    record.pop("events", None)
    return Run(model, nm, sparsity, variant, record, layers)


def _jobs(
    models: Sequence[str],
    patterns: Sequence[str],
    forward_patterns: Sequence[str],
    ablation_nm: str | None,
) -> list[_Job]:
    jobs = [(m, nm, "bdwp", "all on") for m in models for nm in patterns]
    jobs += [(m, nm, "forward", "all on") for m in models for nm in forward_patterns]
    if ablation_nm is not None:
        jobs += [(m, ablation_nm, "bdwp", v) for m in models for v in ABLATIONS if v != "all on"]
    return jobs


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_all(
    jobs: list[_Job],
    config: str,
    overrides: Sequence[str],
    batch: int,
    workers: int,
    progress: bool,
) -> list[Run]:
    """Run every job; results in job order. Larger models start first (shorter tail)."""
    cost = {m: get_model(m, batch).forward_macs for m in {j[0] for j in jobs}}
    order = sorted(range(len(jobs)), key=lambda i: (-cost[jobs[i][0]], i))
    args = [
        (*job, config, overrides, batch, job[2] == "bdwp" and job[3] == "all on") for job in jobs
    ]
    bar = tqdm(
        total=len(jobs),
        desc="evaluation report",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    results: list[Run | None] = [None] * len(jobs)
    with bar:
        if workers == 1:
            for i in order:
                results[i] = run_one(*args[i])
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(run_one, *args[i]): i for i in order}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
    return [r for r in results if r is not None]


def _check(
    params: SATParams,
    models: Sequence[str],
    patterns: Sequence[str],
    forward_patterns: Sequence[str],
    ablation_nm: str | None,
    batch: int,
    jobs: int | None,
) -> None:
    for nm in (*patterns, *forward_patterns):
        n, m = parse_nm(nm)
        if n < m and not params.supports_nm(n, m):
            raise ConfigError(f"pattern {nm} is not supported by configuration {params.name}")
    for nm in forward_patterns:
        n, m = parse_nm(nm)
        if n == m or nm not in patterns:
            raise ConfigError(
                f"forward-only pattern {nm}: must be one of the N:M patterns "
                f"({', '.join(p for p in patterns if p != 'dense')})"
            )
    if ablation_nm is not None and ablation_nm not in patterns:
        raise ConfigError(
            f"ablation pattern {ablation_nm} must be one of the patterns ({', '.join(patterns)})"
        )
    if not models:
        raise ConfigError("models: the list is empty; name at least one zoo model")
    for model in models:
        get_model(model, batch)  # fails early on an unknown name or batch
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs = {jobs}; must be at least 1")


def regenerate_command(
    *,
    config: str = "vcu1525",
    overrides: Sequence[str] = (),
    batch: int = 32,
    models: Sequence[str] = WORKLOADS,
    patterns: Sequence[str] = PATTERNS,
    forward_patterns: Sequence[str] = FORWARD_PATTERNS,
    ablation_nm: str | None = "2:8",
    out: str = "reports/speedup",
) -> str:
    """The ``nmsat report`` command line that makes a report with these settings."""
    command = "nmsat report"
    if config != "vcu1525":
        command += f" --config {config}"
    command += "".join(f" --set {o}" for o in overrides)
    if batch != 32:
        command += f" --batch {batch}"
    if tuple(models) != WORKLOADS:
        command += f" --models {','.join(models)}"
    if tuple(patterns) != PATTERNS:
        command += f" --patterns {','.join(patterns)}"
    if tuple(forward_patterns) != FORWARD_PATTERNS:
        command += f" --forward-patterns {','.join(forward_patterns) or 'none'}"
    if ablation_nm is None:
        command += " --no-ablation"
    return f"{command} --out {out}"


def make_speedup_report(
    out_dir: Path,
    *,
    config: str = "vcu1525",
    overrides: Sequence[str] = (),
    batch: int = 32,
    models: Sequence[str] = WORKLOADS,
    patterns: Sequence[str] = PATTERNS,
    forward_patterns: Sequence[str] = FORWARD_PATTERNS,
    ablation_nm: str | None = "2:8",
    jobs: int | None = None,
    progress: bool = True,
    plots: bool = True,
    accuracy_csv: Path = ACCURACY_CSV,
) -> str:
    """Simulate every step of the report and write it into ``out_dir``; return its main table.

    Parameters
    ----------
    out_dir : Path
        The folder (created if needed).
    config, overrides : str, sequence of str
        The configuration and its ``--set`` overrides.
    batch : int
        Samples per step.
    models, patterns : sequence of str
        Zoo models; N:M patterns (``dense`` is added first if missing).
    forward_patterns : sequence of str
        Patterns also run with forward-only N:M (BP dense).
    ablation_nm : str or None
        The ablation's pattern (one of ``patterns``); None skips the ablation.
    jobs : int, optional
        Worker processes (default: the usable CPUs).
    progress : bool
        Show a progress bar on standard error.
    plots : bool
        Write the PNG plots (the data files are always written).
    accuracy_csv : Path
        The accuracy report's CSV whose table is included (a note if it is missing).

    Returns
    -------
    str
        The step speedup table (Markdown).

    Raises
    ------
    NmsatError
        For a bad configuration, model or pattern (before anything is written).
    """
    params = load_params(config, overrides)
    if "dense" not in patterns:
        patterns = ("dense", *patterns)
    patterns = ("dense", *(p for p in patterns if p != "dense"))
    _check(params, models, patterns, forward_patterns, ablation_nm, batch, jobs)
    job_list = _jobs(models, patterns, forward_patterns, ablation_nm)
    workers = max(1, min(jobs or _usable_cpus(), len(job_list)))
    runs = _run_all(job_list, config, overrides, batch, workers, progress)
    res = Results(tuple(runs), tuple(models), tuple(patterns), tuple(forward_patterns), ablation_nm)
    command = regenerate_command(
        config=config,
        overrides=overrides,
        batch=batch,
        models=models,
        patterns=patterns,
        forward_patterns=forward_patterns,
        ablation_nm=ablation_nm,
    )
    write_report(
        res, out_dir, params=params, command=command, accuracy_csv=accuracy_csv, plots=plots
    )
    return tables.speedup_table(res)


def write_report(
    res: Results,
    out_dir: Path,
    *,
    params: SATParams,
    command: str,
    accuracy_csv: Path = ACCURACY_CSV,
    plots: bool = True,
) -> None:
    """Write the report of simulated runs ``res`` into ``out_dir`` (created if needed).

    Parameters
    ----------
    res : Results
        The runs (see :func:`make_speedup_report`).
    out_dir : Path
        The folder.
    params : SATParams
        The configuration the runs used.
    command : str
        The command line the README names to regenerate the report.
    accuracy_csv : Path
        The accuracy report's CSV whose table is included.
    plots : bool
        Write the PNG plots too.
    """
    table = load_energy_table(params.energy_table)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "runs.csv", tables.runs_csv(res))
    write_atomic(out_dir / "speedup.csv", tables.speedup_csv(res))
    write_atomic(out_dir / "layers.csv", tables.layers_csv(res, params))
    write_atomic(out_dir / "summary.json", tables.summary_json(res, params, table.name))
    write_atomic(
        out_dir / "README.md",
        _readme(res, params, table.name, table.source, command, accuracy_csv),
    )
    if plots:
        write_atomic(out_dir / "speedup.png", _plots.plot_speedup(res))
        write_atomic(out_dir / "passes.png", _plots.plot_passes(res))
        if res.forward_patterns:
            write_atomic(out_dir / "forward.png", _plots.plot_forward(res))
        if "2:4" in res.patterns:
            write_atomic(out_dir / "gpu.png", _plots.plot_gpu(res))
        if res.ablation_nm is not None:
            write_atomic(out_dir / "ablation.png", _plots.plot_ablation(res))
        write_atomic(out_dir / "energy.png", _plots.plot_energy(res, table.name))
        write_atomic(out_dir / "pareto.png", _plots.plot_pareto(res, table.name))
        write_atomic(out_dir / "roofline.png", _plots.plot_roofline(res, params))


# -- README ------------------------------------------------------------------------------------


def _headlines(res: Results, table: str, params: SATParams) -> list[str]:
    out = []
    if "2:8" in res.patterns:
        mean = res.mean_speedup("2:8")
        out.append(
            f"- **{mean:.2f}x** mean training-step speedup at 2:8 over dense on the same "
            f"hardware ({100 * mean / compute_bound('2:8'):.0f} % of the bound "
            f"{compute_bound('2:8'):.2f}x); the paper reports {PAPER_SPEEDUP_2_8:.2f}x on its "
            f"benchmarks ({100 * PAPER_SPEEDUP_2_8 / compute_bound('2:8'):.0f} % of the bound)."
        )
    means = ", ".join(f"{nm} {res.mean_speedup(nm):.2f}x" for nm in res.sparse)
    out.append(f"- Mean step speedup by pattern: {means}.")
    for nm in res.forward_patterns:
        gain = _mean([res.speedup(m, nm) / res.speedup(m, nm, "forward") for m in res.models])
        out.append(
            f"- Forward-only N:M at {nm} (SR-STE style, BP dense): "
            f"{res.mean_speedup(nm, 'forward'):.2f}x mean (bound "
            f"{compute_bound(nm, 'forward'):.2f}x), against {res.mean_speedup(nm):.2f}x for "
            "BDWP: N:M weights in BP make the step "
            f"{gain:.2f}x faster still."
        )
    if "2:4" in res.patterns:
        steps = [row.step for row in GPU_2_4]
        out.append(
            f"- At 2:4, SAT's step speedup is {min(res.speedup(m, '2:4') for m in res.models):.2f}x"
            f" to {max(res.speedup(m, '2:4') for m in res.models):.2f}x; PAPER.md's H100 "
            f"measurements of 2:4 training GEMMs range from {min(steps):.2f}x to "
            f"{max(steps):.2f}x."
        )
    sparse = "2:8" if "2:8" in res.patterns else res.sparse[-1] if res.sparse else None
    if sparse is not None:
        energy = _mean([res.energy_ratio(m, sparse) for m in res.models])
        dense_eff = _mean([res.dense(m).gflops_per_w(True) for m in res.models])
        eff = _mean([res.get(m, sparse).gflops_per_w(True) for m in res.models])
        out.append(
            f"- Energy per step at {sparse}: {energy:.2f} of dense on average (table `{table}`); "
            f"effective efficiency {eff:.0f} GFLOPS/W against {dense_eff:.0f} GFLOPS/W dense."
        )
    nm = tables.roofline_patterns(res)[-1]
    shares = ", ".join(
        f"{m} {100 * tables.memory_bound_share(res, params, m, nm):.0f} %" for m in res.models
    )
    line = (
        f"- Roofline at {nm}: share of the GEMM passes' cycles spent in memory-bound layer "
        f"passes: {shares}."
    )
    batch = int(res.runs[0].record["batch"])
    attention = []
    for m in res.models:
        bound = tables.memory_bound_cycles(res, params, m, nm)
        products = {x.name for x in get_model(m, batch).layers if isinstance(x, MatMul)}
        in_products = sum(v for k, v in bound.items() if k in products)
        if in_products:
            attention.append(f"{m} {100 * in_products / sum(bound.values()):.0f} %")
    if attention:
        line += (
            " Of those cycles, attention products (operands gathered one element per memory "
            f"beat, docs/decisions.md) take: {', '.join(attention)}."
        )
    out.append(line)
    if res.ablation_nm is not None:
        nm = res.ablation_nm
        gains = {
            v: _mean([res.get(m, nm, variant=v).cycles / res.get(m, nm).cycles for m in res.models])
            for v in ABLATIONS
            if v not in ("all on",)
        }
        out.append(
            f"- Ablation at {nm}: without interleave mapping a step takes "
            f"{gains['no interleave']:.2f}x the cycles, without offline scheduling "
            f"{gains['no scheduling']:.2f}x, without pre-generation "
            f"{gains['no pre-generation']:.2f}x; all off {gains['all off']:.2f}x."
        )
    return out


def _same_density_note(res: Results) -> list[str]:
    """A note on patterns of equal density N/M (e.g. 2:4 and 4:8), which cost the same time."""
    notes = []
    sparse = list(res.sparse)
    for i, a in enumerate(sparse):
        for b in sparse[i + 1 :]:
            (na, ma), (nb, mb) = parse_nm(a), parse_nm(b)
            if na * mb != nb * ma:
                continue
            diff = max(
                abs(res.get(m, a).cycles - res.get(m, b).cycles) / res.get(m, a).cycles
                for m in res.models
            )
            accuracy = (
                " What sets them apart is accuracy (SR-STE's ResNet-50 on ImageNet: 77.0 % "
                "top-1 at 2:4, 77.4 % at 4:8; PAPER.md)."
                if {a, b} == {"2:4", "4:8"}
                else ""
            )
            notes.append(
                f"{a} and {b} keep the same share N/M = {na}/{ma} of the weights and take the "
                f"same step cycles within {100 * diff:.3f} %: on this array the step time is "
                f"set by N/M, not by M.{accuracy}"
            )
    return [*notes, ""] if notes else []


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _readme(
    res: Results,
    params: SATParams,
    table: str,
    source: str,
    command: str,
    accuracy_csv: Path,
) -> str:
    hosts = sorted({h["kind"] for r in res.runs for h in r.record["host_ops"]})
    batch = int(res.runs[0].record["batch"])
    peak = params.peak_macs_per_s
    bw = params.dram_bandwidth_bytes_per_s
    parts = [
        "# Evaluation: BDWP N:M sparse training on the SAT-style accelerator",
        "",
        "Generated by `nmsat.reports.speedup`; do not edit. Regenerate with",
        "",
        "```sh",
        command,
        "```",
        "",
        "tests/reports/test_speedup_committed.py regenerates the data files (CSV, JSON and this "
        "page) and fails if they differ from the committed ones.",
        "",
        "## Headline figures",
        "",
        *_headlines(res, table, params),
        "",
        "## What was run",
        "",
        f"- Hardware: configuration `{params.name}`: a {params.array_rows} x {params.array_cols} "
        f"array of FP16 x FP16 -> FP32 PEs at {params.clock_hz / 1e6:g} MHz "
        f"({peak / 1e12:.3f} TMAC/s peak), external memory "
        f"{params.dram_bytes_per_cycle} bytes per cycle ({bw / 1e9:.1f} GB/s) with "
        f"{params.dram_latency_cycles} cycles latency, FP32 adder latency "
        f"{params.adder_latency}, interleave {params.interleave}, SORE {params.sore_lanes} "
        f"lanes, WUVE {params.wuve_lanes} lanes.",
        f"- Workloads: one training step (FF, BP, WU, SGD update with SR-STE, pruning) of "
        f"{', '.join(res.models)} at batch {batch}, compiled by `nmsat.compiler` and run on the "
        "cycle-accurate Python model (`nmsat.sim`, perf mode). First convs, patch embeddings "
        "and classifiers stay dense (docs/decisions.md).",
        f"- Patterns: {', '.join(res.patterns)}; *dense* is the same hardware without N:M. "
        "BDWP prunes the weights N:M in FF (groups along C_in) and BP (groups along C_out); WU "
        "is dense."
        + (
            f" Forward-only N:M (SR-STE style: FF sparse, BP dense) at "
            f"{', '.join(res.forward_patterns)}."
            if res.forward_patterns
            else ""
        ),
        "- Cycles count the accelerator only. Work left to the host ("
        + ", ".join(hosts)
        + ") is listed per step in runs.csv and not included.",
        f"- Energy: table `{table}` ({source.strip().rstrip('.')}). Energy = events x energy "
        "per event + "
        "static power x time.",
        "",
        "## Step speedup over dense",
        "",
        "Cycles of the dense step divided by cycles of the N:M step, same hardware. The "
        "paper's figure is the mean over its own benchmarks on its VCU1525 design; the GPU row "
        "is the range of PAPER.md's H100 2:4 measurements of single layers' training GEMMs "
        "(see below), not whole steps.",
        "",
        tables.speedup_table(res),
        "",
        *_same_density_note(res),
        "![step speedup](speedup.png)",
        "",
        "## Speedup by pass",
        "",
        "Each pass's cycles (the cycles in which its oldest instruction runs) in the dense step "
        "over the N:M step. FF and BP use the N:M copies (ideal M/N); WU, the update, pruning "
        "and the element-wise passes (*update + other*) are dense in both, so they bound the "
        "step speedup (Amdahl).",
        "",
        tables.pass_table(res),
        "",
        "![speedup by pass](passes.png)",
        "",
    ]
    if res.forward_patterns:
        parts += [
            "## Forward-only N:M against BDWP",
            "",
            "Forward-only N:M (SR-STE, the usual way to train N:M networks on GPUs) prunes the "
            "weights in FF only; BDWP also in BP. Same hardware, same compiler: the "
            "forward-only BP uses a dense FP16 copy of the weights. Bounds with equal FF, BP "
            "and WU work: 3M/(2N+M) for BDWP, 3M/(N+2M) for forward only.",
            "",
            tables.forward_table(res),
            "",
            "![forward-only vs BDWP](forward.png)",
            "",
        ]
    if "2:4" in res.patterns:
        parts += [
            "## GPU 2:4 against SAT",
            "",
            "PAPER.md's measurements of 2:4 sparsity on an NVIDIA H100 (fp16, cuSPARSELt through "
            "PyTorch 2.11, kernel time only, one training step's three GEMMs per layer: FF and "
            "BP 2:4, WU dense; measured for this project, not figures of Fang et al.), beside "
            "SAT's 2:4 figures for the zoo layers closest to each GEMM (the same kind of layer; "
            "batch and sizes differ as noted). SAT's layer figures are the cycles of those "
            "layers' FF, BP and WU passes in the dense step over the 2:4 step (layers.csv).",
            "",
            tables.gpu_table(res),
            "",
            "![GPU 2:4 vs SAT](gpu.png)",
            "",
        ]
    if res.ablation_nm is not None:
        parts += [
            f"## Ablation of the dataflow optimisations ({res.ablation_nm})",
            "",
            "Step cycles with every optimisation on, each one off in turn, and all off "
            "(interleave mapping: GEMMs interleave accumulations to hide the FP32 adder "
            "latency; pre-generation: the SORE makes next step's FF and BP copies right after "
            "each update; offline scheduling: double buffering and tokens only where data "
            "flows, off = every instruction waits for the previous one).",
            "",
            tables.ablation_table(res),
            "",
            "![ablation](ablation.png)",
            "",
        ]
    parts += [
        "## Energy per step and efficiency",
        "",
        f"Table `{table}`. Shares of the step's energy by component. *Effective* efficiency "
        "counts the dense-equivalent FLOPs (2 per MAC) of the step per joule (N:M skipping "
        "counts as done); *executed* counts the FLOPs the array performed.",
        "",
        tables.energy_table(res),
        "",
        "![energy](energy.png)",
        "",
        "Speedup against energy, both relative to the dense step: up and to the left is "
        "better; each grey line is one model from dense through the N:M patterns.",
        "",
        "![speedup vs energy](pareto.png)",
        "",
        "## Roofline",
        "",
        f"The array's peak is {peak / 1e12:.3f} TMAC/s dense and M/N times that effective in "
        f"N:M mode (FF and BP only); external memory gives {bw / 1e9:.1f} GB/s, so the ridge "
        f"point is {peak / bw:g} dense-equivalent MACs per byte of DRAM traffic dense and M/N "
        "times that for N:M passes. Each point is one layer's FF, BP or WU pass: its "
        "dense-equivalent MACs over the DRAM traffic of its LOADs and STOREs (memory beats x "
        f"{params.dram_bytes_per_cycle} bytes: every contiguous run starts on a new beat, "
        "docs/isa.md), and over its span (first start to last completion of its instructions, "
        "work of other passes overlapped with it included, so no point lies above its roofs). "
        "A marker's area is the pass's share of the step's cycles (each cycle goes to the "
        "oldest running instruction, so the shares add up to the step). Attention products "
        "(`qk`, `av`) gather their operands with one element per memory beat "
        "(docs/decisions.md): they move little data but much traffic, and sit on the "
        "bandwidth slope far to the left.",
        "",
        tables.roofline_table(res, params),
        "",
        "*Memory-bound* counts the cycles of layer passes left of their ridge point (M/N times "
        "the dense one for N:M passes). Per-layer figures, with both the data moved "
        "(`dram_bytes`) and the traffic (`dram_traffic_bytes`): [layers.csv](layers.csv).",
        "",
        "![roofline](roofline.png)",
        "",
        "## Utilisation and throughput",
        "",
        "*Effective* throughput counts the MACs a dense step performs (N:M skipping counts as "
        "done); *executed* counts the MACs the array performed. Utilisation is executed MACs "
        "over PEs x cycles.",
        "",
        tables.throughput_table(res),
        "",
        "## Accuracy",
        "",
    ]
    accuracy = tables.accuracy_table(accuracy_csv)
    if accuracy is None:
        parts += [
            "The accuracy report's data (reports/accuracy/accuracy.csv) was not found; "
            "regenerate it with `nmsat report accuracy --out reports/accuracy`.",
            "",
        ]
    else:
        parts += [
            "What N:M costs in accuracy, from the committed accuracy report "
            "([reports/accuracy](../accuracy/README.md): small models on the 8x8 digits, "
            "numpy BDWP training; not retrained by this report). Mean ± standard deviation "
            "over seeds. For scale: the paper reports a 0.56 % average accuracy loss at 2:8 "
            "with BDWP on its much larger benchmarks.",
            "",
            accuracy,
            "",
        ]
    parts += [
        "## Files",
        "",
        "- [runs.csv](runs.csv): one row per simulated step (all passes, energy, throughput, "
        "instruction counts);",
        "- [speedup.csv](speedup.csv): pass and step speedups and energy over dense;",
        "- [layers.csv](layers.csv): cycles, MACs and DRAM bytes of every layer's GEMM passes;",
        "- [summary.json](summary.json): the headline figures.",
        "",
    ]
    return "\n".join(parts)
