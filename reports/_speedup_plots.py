"""The evaluation report's plots, each returned as PNG bytes without a timestamp.

Grouped bars (step speedup, pass speedups, forward-only vs BDWP, GPU 2:4 vs SAT, ablation,
energy breakdown), a speedup-vs-energy plot per pattern and a roofline of the array against
its DRAM bandwidth with every layer's GEMM passes as points. Colours are fixed per pattern so
the figures read together.

Ref: S. Williams, A. Waterman and D. Patterson, "Roofline: an insightful visual performance
     model for multicore architectures", CACM 52(4), 2009; matplotlib's object-oriented API
     (Figure + FigureCanvasAgg, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nmsat.hw.params import SATParams
from nmsat.models.nm import parse_nm
from nmsat.reports._plot import figure, png_bytes

from ._speedup_data import (
    ABLATIONS,
    GPU_2_4,
    PAPER_SPEEDUP_2_8,
    PASS_GROUPS,
    Results,
    compute_bound,
)
from ._speedup_tables import roofline_patterns

__all__ = [
    "plot_ablation",
    "plot_energy",
    "plot_forward",
    "plot_gpu",
    "plot_pareto",
    "plot_passes",
    "plot_roofline",
    "plot_speedup",
]

_PATTERN_COLORS = {
    "dense": "#333333",
    "1:4": "#54a24b",
    "2:4": "#4c78a8",
    "4:8": "#72b7b2",
    "2:8": "#f58518",
    "1:8": "#e45756",
}
_MODEL_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#9d755d", "#72b7b2"]
_MODEL_MARKERS = ["o", "s", "D", "^", "v", "P", "X"]


def _color(nm: str) -> str:
    return _PATTERN_COLORS.get(nm, "#888888")


def _offsets(count: int, width: float) -> list[float]:
    return [(j - (count - 1) / 2) * width for j in range(count)]


def _style(ax: Any) -> None:
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.axhline(1.0, color="#555555", linewidth=0.8)


def _label_bars(
    ax: Any, xs: Sequence[float], ys: Sequence[float], size: float = 7.0, dark: bool = False
) -> None:
    """Write each bar's value inside its top end (above it when the bar is short)."""
    for x, y in zip(xs, ys, strict=True):
        if math.isnan(y):
            continue
        inside = y > 0.35
        ax.text(
            x,
            y - 0.03 if inside else y + 0.02,
            f"{y:.2f}",
            ha="center",
            va="top" if inside else "bottom",
            fontsize=size,
            color="black" if dark or not inside else "white",
            fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6} if dark else None,
        )


def plot_speedup(res: Results) -> bytes:
    """Grouped bars: step speedup per model and pattern, the bounds and the paper's 1.75x."""
    sparse = res.sparse
    groups = [*res.models, "mean"]
    fig = figure(max(7.5, 1.45 * len(groups) + 2.0), 4.6)
    ax = fig.subplots()
    width = 0.8 / len(sparse)
    top = 1.0
    for j, (nm, dx) in enumerate(zip(sparse, _offsets(len(sparse), width), strict=True)):
        xs = [i + dx for i in range(len(groups))]
        ys = [res.speedup(m, nm) for m in res.models] + [res.mean_speedup(nm)]
        ax.bar(xs, ys, width, color=_color(nm), label=f"{nm} (bound {compute_bound(nm):.2f}x)")
        _label_bars(ax, xs, ys)
        bound = compute_bound(nm)
        top = max(top, bound, *ys)
        for x in xs:
            ax.plot(
                [x - width / 2, x + width / 2],
                [bound] * 2,
                color="black",
                linewidth=1.4,
                label="bound 3M/(2N+M)" if j == 0 and x == xs[0] else None,
            )
        if nm == "2:8":
            ax.plot(
                [xs[-1]],
                [PAPER_SPEEDUP_2_8],
                marker="*",
                markersize=15,
                color="#f58518",
                markeredgecolor="black",
                linestyle="none",
                label=f"paper: {PAPER_SPEEDUP_2_8:.2f}x at 2:8 (mean)",
            )
            ax.axhline(PAPER_SPEEDUP_2_8, color="#f58518", linestyle="--", linewidth=0.9)
    ax.axvline(len(res.models) - 0.5, color="#999999", linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("training-step speedup over dense (x)")
    ax.set_title("BDWP training step on SAT: N:M over dense, same hardware")
    _style(ax)
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    return png_bytes(fig)


def plot_passes(res: Results) -> bytes:
    """Per pattern, the speedup of every pass group and of the step, per model."""
    sparse = res.sparse
    cols = 2 if len(sparse) > 1 else 1
    rows = math.ceil(len(sparse) / cols)
    fig = figure(6.2 * cols, 3.3 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    keys: list[tuple[str, tuple[str, ...] | None]] = [*PASS_GROUPS, ("step", None)]
    colors = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#333333"]
    width = 0.8 / len(keys)
    for ax, nm in zip(axes, sparse, strict=False):
        top = 1.0
        for j, ((label, names), dx) in enumerate(
            zip(keys, _offsets(len(keys), width), strict=True)
        ):
            xs = [i + dx for i in range(len(res.models))]
            ys = [
                res.speedup(m, nm) if names is None else res.pass_speedup(m, nm, names)
                for m in res.models
            ]
            ax.bar(xs, ys, width, label=label if ax is axes[0] else None, color=colors[j])
            top = max(top, *(y for y in ys if not math.isnan(y)))
        n, m = parse_nm(nm)
        ax.axhline(
            m / n,
            color="#444444",
            linestyle="-.",
            linewidth=0.9,
            label="FF/BP ideal M/N" if ax is axes[0] else None,
        )
        ax.axhline(
            compute_bound(nm),
            color="black",
            linestyle=":",
            linewidth=1.3,
            label="step bound 3M/(2N+M)" if ax is axes[0] else None,
        )
        ax.set_ylim(0, max(top, m / n) * 1.12)
        ax.set_xticks(range(len(res.models)), res.models, fontsize=8)
        ax.set_title(f"{nm}: FF/BP ideal {m / n:.2f}x, step bound {compute_bound(nm):.2f}x")
        ax.set_ylabel("speedup over dense (x)")
        _style(ax)
    for ax in axes[len(sparse) :]:
        ax.set_visible(False)
    fig.legend(loc="outside upper center", ncols=7, fontsize=8)
    return png_bytes(fig)


def plot_forward(res: Results) -> bytes:
    """Grouped bars: BDWP against forward-only N:M, per model, with both bounds."""
    groups = [*res.models, "mean"]
    series = [(nm, s) for nm in res.forward_patterns for s in ("bdwp", "forward")]
    fig = figure(max(7.5, 1.35 * len(groups) + 2.2), 4.2)
    ax = fig.subplots()
    width = 0.8 / len(series)
    for (nm, sparsity), dx in zip(series, _offsets(len(series), width), strict=True):
        xs = [i + dx for i in range(len(groups))]
        ys = [res.speedup(m, nm, sparsity) for m in res.models] + [res.mean_speedup(nm, sparsity)]
        bdwp = sparsity == "bdwp"
        ax.bar(
            xs,
            ys,
            width,
            color=_color(nm) if bdwp else "white",
            edgecolor=_color(nm),
            hatch=None if bdwp else "//",
            linewidth=1.2,
            label=f"{nm} {'BDWP (FF+BP sparse)' if bdwp else 'forward only (FF sparse)'}",
        )
        _label_bars(ax, xs, ys, 7, dark=not bdwp)
        ax.axhline(
            compute_bound(nm, sparsity),
            color=_color(nm),
            linestyle=":" if bdwp else "--",
            linewidth=1.0,
            label=f"bound {compute_bound(nm, sparsity):.2f}x "
            + ("3M/(2N+M)" if bdwp else "3M/(N+2M)"),
        )
    ax.axvline(len(res.models) - 0.5, color="#999999", linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 2.45)
    ax.set_ylabel("training-step speedup over dense (x)")
    ax.set_title("Forward-only N:M (SR-STE style) vs BDWP, same hardware")
    _style(ax)
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    return png_bytes(fig)


def plot_gpu(res: Results) -> bytes:
    """Per GEMM of PAPER.md's GPU table: the GPU's 2:4 step speedup and SAT's."""
    rows = list(GPU_2_4)
    fig = figure(9.5, 4.2)
    ax = fig.subplots()
    width = 0.38
    gpu = [r.step for r in rows]
    sat = [
        res.layer_speedup(r.model, "2:4", r, ("ff", "bp", "wu"))
        if r.model in res.models and "2:4" in res.patterns
        else None
        for r in rows
    ]
    xs = list(range(len(rows)))
    ax.bar([x - width / 2 for x in xs], gpu, width, color="#9d9d9d", label="H100 2:4 (PAPER.md)")
    _label_bars(ax, [x - width / 2 for x in xs], gpu, 7)
    sat_x = [x + width / 2 for x, v in zip(xs, sat, strict=True) if v is not None]
    sat_y = [v for v in sat if v is not None]
    ax.bar(sat_x, sat_y, width, color=_color("2:4"), label="SAT 2:4, comparable zoo layers")
    _label_bars(ax, sat_x, sat_y, 7)
    for x, v in zip(xs, sat, strict=True):
        if v is None:
            ax.text(x + width / 2, 0.05, "no zoo\nlayer", ha="center", fontsize=7, color="#666666")
    ax.axhline(compute_bound("2:4"), color="black", linestyle=":", linewidth=1.0)
    ax.text(
        len(rows) - 0.4, compute_bound("2:4") + 0.02, "2:4 step bound 1.50x", ha="right", fontsize=8
    )
    names = [r.gpu_layer.replace(", ", "\n", 1) for r in rows]
    ax.set_xticks(xs, names, fontsize=7.5)
    ax.set_xlim(-0.6, len(rows) - 0.35)
    ax.set_ylim(0, 1.75)
    ax.set_ylabel("2:4 speedup of the layer's FF+BP+WU")
    ax.set_title("2:4 training GEMMs: GPU (cuSPARSELt) vs SAT (BDWP)")
    _style(ax)
    ax.legend(fontsize=8, loc="upper left")
    return png_bytes(fig)


def plot_ablation(res: Results) -> bytes:
    """Grouped bars: step cycles with each optimisation off, over all on."""
    nm = res.ablation_nm
    assert nm is not None
    variants = list(ABLATIONS)
    fig = figure(max(7.0, 1.8 * len(res.models) + 2.5), 4.0)
    ax = fig.subplots()
    width = 0.8 / len(variants)
    palette = ["#333333", "#4c78a8", "#f58518", "#54a24b", "#e45756"]
    for j, (v, dx) in enumerate(zip(variants, _offsets(len(variants), width), strict=True)):
        xs = [i + dx for i in range(len(res.models))]
        ys = [res.get(m, nm, variant=v).cycles / res.get(m, nm).cycles for m in res.models]
        ax.bar(xs, ys, width, label=v, color=palette[j % len(palette)])
    ax.set_xticks(range(len(res.models)), res.models)
    ax.set_ylabel("step cycles / cycles with all on")
    ax.set_title(f"Ablation of the dataflow optimisations at {nm}")
    _style(ax)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_energy(res: Results, table: str) -> bytes:
    """Stacked bars: energy per step by component, relative to the dense step."""
    comps = [
        ("MAC", ("mac_pj",)),
        ("SRAM", ("sram_pj",)),
        ("DRAM", ("dram_pj",)),
        ("SORE + WUVE", ("sore_pj", "wuve_pj")),
        ("control", ("control_pj",)),
        ("static", ("static_pj",)),
    ]
    colors = ["#4c78a8", "#72b7b2", "#e45756", "#54a24b", "#b279a2", "#9d755d"]
    patterns = res.patterns
    fig = figure(max(7.5, 2.0 * len(res.models) + 2.5), 4.4)
    ax = fig.subplots()
    width = 0.8 / len(patterns)
    for j, (nm, dx) in enumerate(zip(patterns, _offsets(len(patterns), width), strict=True)):
        xs = [i + dx for i in range(len(res.models))]
        bottoms = [0.0] * len(res.models)
        for c, (label, keys) in enumerate(comps):
            ys = []
            for model in res.models:
                e = res.get(model, nm).record["energy_breakdown_pj"]
                ys.append(sum(e[k] for k in keys) / res.dense(model).energy_pj)
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
            ax.text(x, top + 0.01, nm, ha="center", va="bottom", fontsize=7.5, rotation=90)
    ax.set_xticks(range(len(res.models)), res.models)
    ax.set_ylabel("energy per step / dense step")
    ax.set_ylim(0, 1.3)
    ax.set_title(f"Energy per training step by component (table {table})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncols=6, loc="upper center")
    return png_bytes(fig)


def plot_pareto(res: Results, table: str) -> bytes:
    """Speedup against energy per step (both over dense), per model and pattern."""
    fig = figure(7.8, 5.2)
    ax = fig.subplots()
    for i, model in enumerate(res.models):
        marker = _MODEL_MARKERS[i % len(_MODEL_MARKERS)]
        xs = [res.energy_ratio(model, nm) for nm in res.patterns]
        ys = [res.speedup(model, nm) for nm in res.patterns]
        ax.plot(xs, ys, color="#bbbbbb", linewidth=0.9, zorder=1)
        for nm, x, y in zip(res.patterns, xs, ys, strict=True):
            ax.scatter([x], [y], color=_color(nm), marker=marker, s=42, zorder=3)
        for nm in res.forward_patterns:
            ax.scatter(
                [res.energy_ratio(model, nm, "forward")],
                [res.speedup(model, nm, "forward")],
                facecolor="white",
                edgecolor=_color(nm),
                marker=marker,
                s=42,
                linewidth=1.3,
                zorder=3,
            )
    mean_x = [
        math.fsum(res.energy_ratio(m, nm) for m in res.models) / len(res.models)
        for nm in res.patterns
    ]
    mean_y = [1.0] + [res.mean_speedup(nm) for nm in res.sparse]
    ax.plot(mean_x, mean_y, color="black", linewidth=1.6, zorder=2, label="mean over models")
    labels: dict[tuple[float, float], list[str]] = {}
    for nm, x, y in zip(res.patterns, mean_x, mean_y, strict=True):
        ax.scatter([x], [y], color=_color(nm), marker="o", s=140, edgecolor="black", zorder=4)
        labels.setdefault((round(x, 2), round(y, 2)), []).append(nm)
    for (x, y), names in labels.items():
        ax.annotate(
            " = ".join(names),
            (x, y),
            textcoords="offset points",
            xytext=(-12, 10),
            fontsize=9,
            fontweight="bold",
        )
    handles = [
        ax.scatter([], [], color=_color(nm), marker="o", s=42, label=nm) for nm in res.patterns
    ]
    handles += [
        ax.scatter([], [], color="#666666", marker=_MODEL_MARKERS[i % 7], s=36, label=m)
        for i, m in enumerate(res.models)
    ]
    if res.forward_patterns:
        handles.append(
            ax.scatter(
                [],
                [],
                facecolor="white",
                edgecolor="#666666",
                marker="o",
                s=36,
                label="forward only (hollow)",
            )
        )
    handles.append(ax.plot([], [], color="black", linewidth=1.6, label="mean over models")[0])
    ax.legend(handles=handles, fontsize=7.5, loc="upper right", ncols=2)
    ax.annotate(
        "better",
        xy=(0.03, 0.22),
        xytext=(0.12, 0.06),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "->", "color": "#444444"},
        fontsize=9,
        color="#444444",
    )
    ax.set_xlabel(f"energy per step / dense step (table {table})")
    ax.set_ylabel("training-step speedup over dense (x)")
    ax.set_title("Speedup against energy, per model and N:M pattern")
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    return png_bytes(fig)


def _roofline_points(res: Results, nm: str) -> list[tuple[int, str, float, float, float, str]]:
    """(model index, pass, intensity, attained effective MAC/cycle, cycle share, layer)."""
    out = []
    for i, model in enumerate(res.models):
        run = res.get(model, nm)
        total = max(1, run.cycles)
        for c in run.layers:
            if c.span_cycles > 0 and c.dram_traffic_bytes > 0:
                out.append(
                    (
                        i,
                        c.phase,
                        c.macs_dense_equivalent / c.dram_traffic_bytes,
                        c.macs_dense_equivalent / c.span_cycles,
                        c.cycles / total,
                        c.layer,
                    )
                )
    return out


def plot_roofline(res: Results, params: SATParams) -> bytes:
    """Roofline of the array against DRAM bandwidth; every layer's GEMM passes as points."""
    patterns = roofline_patterns(res)
    fig = figure(6.2 * len(patterns) + 0.3, 5.4)
    axes = fig.subplots(1, len(patterns), squeeze=False, sharey=True)[0]
    clock = params.clock_hz
    peak = params.peak_macs_per_s / 1e12
    bw = params.dram_bandwidth_bytes_per_s / 1e12
    pass_markers = {"ff": "o", "bp": "s", "wu": "^"}
    points = {nm: _roofline_points(res, nm) for nm in patterns}
    xs_all = [p[2] for pts in points.values() for p in pts] or [1.0]
    ys_all = [p[3] * clock / 1e12 for pts in points.values() for p in pts] or [peak]
    xmin = min(min(xs_all), 1.0) * 0.5
    xmax = 10 ** math.ceil(math.log10(max(max(xs_all), 4 * peak / bw) * 1.5))
    ymin = 10 ** math.floor(math.log10(min(ys_all) * 0.8))
    for ax, nm in zip(axes, patterns, strict=True):
        n, m = parse_nm(nm)
        roofs = [(peak, "dense peak", "-")]
        if n < m:
            roofs.append((peak * m / n, f"{nm} effective peak (x{m / n:g}, FF and BP)", "--"))
        for r, (value, label, style) in enumerate(roofs):
            knee = value / bw
            ax.plot([xmin, knee, xmax], [bw * xmin, value, value], color="black", linestyle=style)
            top = r == len(roofs) - 1  # nothing lies above the highest roof
            ax.annotate(
                f"{label}: {value:.3f} TMAC/s, ridge {knee:g} MAC/B",
                (xmax, value),
                textcoords="offset points",
                xytext=(-4, 4 if top else -4),
                ha="right",
                va="bottom" if top else "top",
                fontsize=7.5,
            )
        ax.text(
            xmin * 1.3,
            bw * xmin * 1.3 * 5,
            f"DRAM {params.dram_bandwidth_bytes_per_s / 1e9:.1f} GB/s",
            fontsize=7.5,
        )
        for phase, marker in pass_markers.items():
            for i in range(len(res.models)):
                pts = [p for p in points[nm] if p[0] == i and p[1] == phase]
                ax.scatter(
                    [p[2] for p in pts],
                    [p[3] * clock / 1e12 for p in pts],
                    s=[8 + 900 * p[4] for p in pts],
                    marker=marker,
                    color=_MODEL_COLORS[i % len(_MODEL_COLORS)],
                    alpha=0.6,
                    linewidths=0,
                )
        slow = [p for p in points[nm] if p[2] < peak / bw]
        if slow:
            worst = max(slow, key=lambda p: p[4])
            ax.annotate(
                f"memory-bound: {worst[5]} ({worst[1].upper()})\nand the like",
                (worst[2], worst[3] * clock / 1e12),
                textcoords="offset points",
                xytext=(18, -28),
                fontsize=7.5,
                arrowprops={"arrowstyle": "->", "color": "#444444"},
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, peak * 8)
        ax.set_xlabel("operational intensity (dense-equivalent MACs per byte of DRAM traffic)")
        ax.set_title(f"{nm}: {params.array_rows}x{params.array_cols} PEs at {clock / 1e6:g} MHz")
        ax.grid(which="both", alpha=0.2)
    axes[0].set_ylabel("attained throughput (effective TMAC/s)")
    handles = [
        axes[0].scatter([], [], color=_MODEL_COLORS[i % len(_MODEL_COLORS)], marker="o", label=m)
        for i, m in enumerate(res.models)
    ]
    handles += [
        axes[0].scatter([], [], color="#666666", marker=mk, label=p.upper())
        for p, mk in pass_markers.items()
    ]
    axes[0].legend(handles=handles, fontsize=7.5, loc="lower right", ncols=2)
    fig.suptitle(
        "Roofline: one point per layer and pass (FF, BP, WU); marker area: share of the step's "
        "cycles",
        fontsize=10,
    )
    return png_bytes(fig)
