"""The accuracy report: what N:M sparsity costs when training with BDWP.

:func:`make_accuracy_report` trains the small models of :mod:`nmsat.models.train` on the 8x8
digits for every setting in :data:`SETTINGS` (dense; BDWP at 2:4, 2:8 and 1:8; forward-only
N:M, as SR-STE, at the same patterns) and several seeds, then writes into one folder:

- ``README.md``: what was run, how to regenerate it, and the summary table (mean and sample
  standard deviation of the test accuracy over the seeds, and the difference to dense);
- ``accuracy.csv``: one row per run (model, pattern, sparsity, seed, accuracies, final loss);
- ``accuracy.png``: grouped bars of the mean test accuracy with standard-deviation error bars.

Every file is written atomically (:func:`nmsat.hw.files.write_atomic`). No file records a
time or a machine, so a rerun on the same platform gives the same bytes and CI can diff them
(STYLE.md G18).

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (2:8 BDWP: 0.56 % average loss).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (forward-only N:M with SR-STE).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import multiprocessing
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from tqdm import tqdm

from nmsat.hw.errors import NmsatError
from nmsat.hw.files import write_atomic
from nmsat.models.bdwp import Sparsity
from nmsat.models.train import MODELS, ModelName, TrainConfig, TrainResult, train

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_EPOCHS",
    "DEFAULT_MODELS",
    "DEFAULT_SEEDS",
    "SETTINGS",
    "Setting",
    "Summary",
    "make_accuracy_report",
    "render_table",
    "summarize",
]


@dataclass(frozen=True)
class Setting:
    """One sparsity setting of the report.

    Members
    -------
    n, m : int
        The pattern (``n == m`` for dense).
    sparsity : {"bdwp", "forward", "dense"}
        Where N:M applies.
    """

    n: int
    m: int
    sparsity: Sparsity

    @property
    def pattern(self) -> str:
        """``"dense"`` or ``"N:M"``."""
        return "dense" if self.sparsity == "dense" else f"{self.n}:{self.m}"

    @property
    def label(self) -> str:
        """How tables and plots name the sparsity mode."""
        return _MODE_LABELS[self.sparsity]


SETTINGS: tuple[Setting, ...] = (
    Setting(1, 1, "dense"),
    Setting(2, 4, "bdwp"),
    Setting(2, 4, "forward"),
    Setting(2, 8, "bdwp"),
    Setting(2, 8, "forward"),
    Setting(1, 8, "bdwp"),
    Setting(1, 8, "forward"),
)
"""The settings, dense first; each N:M pattern with BDWP and with forward-only sparsity."""

DEFAULT_SEEDS = (0, 1, 2)
"""Seeds per setting (split, initial weights, batch order)."""

DEFAULT_EPOCHS = 30
"""Epochs per run (the ``nmsat train`` default)."""

DEFAULT_MODELS = ("mlp", "cnn")
"""Models of the report."""

CSV_COLUMNS = (
    "model",
    "pattern",
    "sparsity",
    "seed",
    "epochs",
    "test_accuracy",
    "train_accuracy",
    "final_loss",
)
"""Columns of ``accuracy.csv``, one row per run."""

_REGENERATE = "nmsat report accuracy --out reports/accuracy"

# Thread-count variables of OpenBLAS (numpy's wheels), OpenMP builds and MKL (conda numpy).
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_MODE_LABELS: dict[str, str] = {
    "dense": "dense",
    "bdwp": "BDWP (FF+BP)",
    "forward": "forward only",
}


@dataclass(frozen=True)
class Summary:
    """Test accuracy of one model and setting over the seeds.

    Members
    -------
    model : str
        The model.
    setting : Setting
        The sparsity setting.
    mean, std : float
        Mean and sample standard deviation (0 for one seed) of the test accuracy, as shares.
    delta : float
        ``mean`` minus the dense mean of the same model.
    runs : int
        Number of seeds.
    """

    model: str
    setting: Setting
    mean: float
    std: float
    delta: float
    runs: int


def summarize(results: Sequence[TrainResult]) -> list[Summary]:
    """Group runs by model and setting and summarise their test accuracy.

    Parameters
    ----------
    results : sequence of TrainResult
        Runs of the settings in :data:`SETTINGS`, including each model's dense runs.

    Returns
    -------
    list of Summary
        Ordered by model (as first seen), then as :data:`SETTINGS`.
    """
    models = list(dict.fromkeys(r.config.model for r in results))
    out: list[Summary] = []
    for model in models:
        groups: dict[Setting, list[float]] = {}
        for setting in SETTINGS:
            accs = [r.test_accuracy for r in results if _matches(r, model, setting)]
            if accs:
                groups[setting] = accs
        dense = groups.get(SETTINGS[0])
        dense_mean = statistics.fmean(dense) if dense else math.nan
        for setting, accs in groups.items():
            mean = statistics.fmean(accs)
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            out.append(Summary(model, setting, mean, std, mean - dense_mean, len(accs)))
    return out


def render_table(summaries: Sequence[Summary]) -> str:
    """Return the Markdown table of :func:`summarize`'s rows (accuracies in percent).

    Parameters
    ----------
    summaries : sequence of Summary
        The rows.

    Returns
    -------
    str
        A GitHub Markdown table, one line per row, ending with a newline.
    """
    lines = [
        "| model | N:M | sparsity | test accuracy (%) | vs dense (points) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        delta = "" if s.setting.sparsity == "dense" else f"{100 * s.delta:+.2f}"
        lines.append(
            f"| {s.model} | {s.setting.pattern} | {s.setting.label} | "
            f"{100 * s.mean:.2f} ± {100 * s.std:.2f} | {delta} | {s.runs} |"
        )
    return "\n".join(lines) + "\n"


def make_accuracy_report(
    out_dir: str | Path,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    epochs: int = DEFAULT_EPOCHS,
    models: Sequence[str] = DEFAULT_MODELS,
    progress: bool = False,
    jobs: int | None = None,
) -> str:
    """Train every setting of :data:`SETTINGS` and write the report into ``out_dir``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Folder for ``README.md``, ``accuracy.csv`` and ``accuracy.png`` (created if needed).
    seeds : sequence of int
        Seeds per setting; the standard deviation needs at least two.
    epochs : int
        Epochs per run.
    models : sequence of str
        Models of :data:`nmsat.models.train.MODELS`.
    progress : bool
        Show one progress bar over all runs on standard error.
    jobs : int, optional
        Runs trained at the same time, each in its own process with single-threaded BLAS;
        1 trains in this process, one run after the other. Default: the usable CPU count.
        The results do not depend on it.

    Returns
    -------
    str
        The Markdown table of the README.

    Raises
    ------
    NmsatError
        If ``seeds`` or ``models`` is empty or names an unknown model, ``jobs`` is below 1, or
        training fails (scikit-learn missing, divergence).

    Notes
    -----
    The defaults train 42 runs (2 models, 7 settings, 3 seeds, 30 epochs): an MLP run takes
    about 1 s and a CNN run about 4.5 s of one core, so the report takes about one minute
    with two processes on a 2-core machine (56 s measured) and about 2 min 20 s with
    ``jobs=1``.
    """
    if not seeds:
        raise NmsatError("accuracy report: no seeds given; need at least one")
    if not models or any(model not in MODELS for model in models):
        raise NmsatError(
            f"accuracy report: models {list(models)}; allowed: a non-empty subset of "
            f"{', '.join(MODELS)}"
        )
    configs = [
        TrainConfig(
            model=cast(ModelName, model),
            n=setting.n,
            m=setting.m,
            sparsity=setting.sparsity,
            epochs=epochs,
            seed=seed,
        )
        for model in models
        for setting in SETTINGS
        for seed in seeds
    ]
    if jobs is not None and jobs < 1:
        raise NmsatError(f"accuracy report: jobs = {jobs}; it must be >= 1")
    workers = min(len(configs), _usable_cpus() if jobs is None else jobs)
    results = _run_all(configs, workers, progress)
    summaries = summarize(results)
    table = render_table(summaries)
    out = Path(out_dir)
    write_atomic(out / "accuracy.csv", _csv_text(results))
    write_atomic(out / "accuracy.png", _plot_png(summaries, epochs, len(seeds)))
    write_atomic(out / "README.md", _readme(table, results, summaries, seeds, epochs, models))
    return table


# ----------------------------------------------------------------------------------------------
# Private helpers


def _usable_cpus() -> int:
    """Return how many CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_all(configs: Sequence[TrainConfig], workers: int, progress: bool) -> list[TrainResult]:
    """Train every config, in ``workers`` processes (or here when 1); keep their order."""
    bar = tqdm(
        total=len(configs),
        desc="accuracy report",
        unit="run",
        file=sys.stderr,
        disable=not progress,
    )
    with bar:
        if workers == 1:
            results = []
            for cfg in configs:
                results.append(train(cfg))
                bar.update(1)
            return results
        # A fresh interpreter per worker (spawn: no fork of a process with BLAS threads) whose
        # BLAS runs one thread: the GEMMs here are tiny, and OpenBLAS's default of one thread
        # per core made two concurrent runs about 3x slower each on a 2-core machine.
        context = multiprocessing.get_context("spawn")
        with _single_threaded_blas(), ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(train, cfg) for cfg in configs]
            for _ in as_completed(futures):
                bar.update(1)
        return [future.result() for future in futures]


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Set the BLAS thread-count variables to 1 while worker processes are started.

    Child processes read them when they load their BLAS; this process's BLAS, already
    loaded, is unaffected, and the previous values are restored on exit.
    """
    saved = {name: os.environ.get(name) for name in _BLAS_THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_BLAS_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _matches(result: TrainResult, model: str, setting: Setting) -> bool:
    """Whether ``result`` is a run of ``model`` at ``setting``."""
    cfg = result.config
    if cfg.model != model or cfg.sparsity != setting.sparsity:
        return False
    return setting.sparsity == "dense" or (cfg.n, cfg.m) == (setting.n, setting.m)


def _csv_text(results: Sequence[TrainResult]) -> str:
    """Return ``accuracy.csv``: one row per run, accuracies as shares with 6 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        cfg = r.config
        writer.writerow(
            [
                cfg.model,
                cfg.pattern,
                cfg.sparsity,
                cfg.seed,
                cfg.epochs,
                f"{r.test_accuracy:.6f}",
                f"{r.train_accuracy:.6f}",
                f"{r.loss_curve[-1]:.6f}",
            ]
        )
    return buffer.getvalue()


def _readme(
    table: str,
    results: Sequence[TrainResult],
    summaries: Sequence[Summary],
    seeds: Sequence[int],
    epochs: int,
    models: Sequence[str],
) -> str:
    """Return the report's README.md."""
    cfg = TrainConfig()
    extra = ""
    if tuple(seeds) != tuple(range(len(seeds))):
        extra += " (seeds " + ", ".join(map(str, seeds)) + ": use the library call)"
    else:
        extra += f" --seeds {len(seeds)}" if len(seeds) != len(DEFAULT_SEEDS) else ""
    extra += f" --epochs {epochs}" if epochs != DEFAULT_EPOCHS else ""
    notes = _observations(summaries)
    test_count = results[0].test_count
    return "\n".join(
        [
            "# Accuracy of N:M sparse training with BDWP",
            "",
            "Generated by `nmsat.reports.accuracy`; do not edit. Regenerate with",
            "",
            "```sh",
            f"{_REGENERATE}{extra}",
            "```",
            "",
            "## What was run",
            "",
            "- Data: the 8x8 handwritten digits bundled with scikit-learn (1,797 images, 10",
            "  classes), pixels scaled to [0, 1]; a stratified, seeded split with 25 % of each",
            "  class held out for testing.",
            "- Models (`nmsat.models.train`): "
            + ", ".join(f"`{m}`" for m in models)
            + ". `mlp` is 64-128-64-10 with",
            "  ReLU; its first two layers are N:M. `cnn` is conv 1->16 (dense), BN, ReLU,",
            "  max-pool, conv 16->32 (N:M), BN, ReLU, linear 512->10. Classifiers and the first",
            "  conv stay dense (docs/decisions.md).",
            "- Training: float32 numpy, SGD with momentum "
            f"{cfg.momentum}, weight decay {cfg.weight_decay},",
            f"  SR-STE lambda {cfg.srste_lambda}, batch {cfg.batch_size}, peak learning rate "
            f"{cfg.lr} with a cosine schedule,",
            f"  {epochs} epochs; seeds {', '.join(map(str, seeds))}. N:M masks are recomputed "
            "from the dense",
            "  weights at every step.",
            "- Sparsity: *BDWP (FF+BP)* prunes the weights N:M in the forward pass (groups along",
            "  C_in) and the backward pass (groups along C_out); *forward only* prunes them in",
            "  the forward pass and keeps the backward pass dense (SR-STE). The weight-gradient",
            "  pass is dense in both.",
            "- Accuracy: share of test images classified correctly after the last epoch; mean ±",
            "  sample standard deviation over the seeds, in percent; *vs dense* is the",
            "  difference of the means in percentage points.",
            "",
            "## Results",
            "",
            table.rstrip("\n"),
            "",
            "![test accuracy by N:M pattern](accuracy.png)",
            "",
            *notes,
            "Per-run numbers: [accuracy.csv](accuracy.csv). For scale: the paper reports a",
            "0.56 % average accuracy loss at 2:8 BDWP on its (much larger) benchmarks.",
            f"Here one test image is {100 / test_count:.2f} points ({test_count} test images),",
            "so differences smaller than about one standard deviation are noise.",
            "",
        ]
    )


def _observations(summaries: Sequence[Summary]) -> list[str]:
    """Return README lines stating the 2:8 BDWP difference to dense for each model."""
    lines: list[str] = []
    for s in summaries:
        if s.setting == Setting(2, 8, "bdwp"):
            lines.append(
                f"- `{s.model}`, 2:8 BDWP vs dense: {100 * s.delta:+.2f} points "
                f"(std {100 * s.std:.2f} over {s.runs} seeds)."
            )
    return ["## Notes", "", *lines, ""] if lines else ["## Notes", ""]


def _plot_png(summaries: Sequence[Summary], epochs: int, seed_count: int) -> bytes:
    """Return the grouped bar chart as PNG bytes (Agg canvas, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(s.model for s in summaries))
    patterns = list(dict.fromkeys(s.setting.pattern for s in summaries))
    modes: list[Sparsity] = ["dense", "bdwp", "forward"]
    colors = {"dense": "#7f7f7f", "bdwp": "#1f77b4", "forward": "#ff7f0e"}
    fig = Figure(figsize=(4.2 * len(models) + 1.0, 4.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    lows = [100 * (s.mean - s.std) for s in summaries]
    bottom = max(0.0, math.floor(min(lows) - 2.0))
    width = 0.38
    for ax, model in zip(axes, models, strict=True):
        rows = {(s.setting.pattern, s.setting.sparsity): s for s in summaries if s.model == model}
        for mode in modes:
            xs, heights, errs = [], [], []
            for i, pattern in enumerate(patterns):
                s = rows.get((pattern, mode))
                if s is None:
                    continue
                offset = (
                    0.0 if pattern == "dense" else (-width / 2 if mode == "bdwp" else width / 2)
                )
                xs.append(i + offset)
                heights.append(100 * s.mean)
                errs.append(100 * s.std)
            if xs:
                ax.bar(
                    xs,
                    [h - bottom for h in heights],
                    width,
                    bottom=bottom,
                    yerr=errs,
                    capsize=4,
                    color=colors[mode],
                    label=_MODE_LABELS[mode],
                )
        dense = rows.get(("dense", "dense"))
        if dense is not None:
            ax.axhline(100 * dense.mean, color="#4d4d4d", linestyle="--", linewidth=0.9)
        ax.set_xticks(range(len(patterns)), patterns)
        ax.set_title(f"{model} on 8x8 digits")
        ax.set_xlabel("N:M pattern")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_ylim(bottom, 100.0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle(
        f"N:M sparse training: mean ± std over {seed_count} seed"
        f"{'s' if seed_count != 1 else ''}, {epochs} epochs (dashed: dense mean)"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
