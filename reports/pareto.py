"""The Pareto plot of a design-space sweep: cycles vs energy, coloured by estimated resources.

:func:`plot_pareto` draws one panel per model of a :class:`~nmsat.sim.sweep.SweepResult`:
every point that ran at (cycles per step, energy per step), both on log scales when they span
more than a factor of ten, coloured by the largest fraction of the FPGA it would use by the
resource ESTIMATE (the binding one of LUT, FF, DSP, BRAM, URAM; crosses: beyond the device),
with the Pareto-optimal points (cycles, energy and resources all minimised, as
:mod:`nmsat.sim.sweep` marks them) ringed and labelled with the swept values that differ
between points and their binding resource. Points whose model does not fit are counted in the
panel's title, not drawn. :func:`write_pareto_plot` writes it atomically.

Ref: matplotlib documentation (Figure without pyplot, Agg canvas; ``scatter`` with a
     colormap and ``colorbar(extend="max")``).
Ref: DESIGN.md section 7 (every output names the energy table it used).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nmsat.hw.files import write_atomic
from nmsat.reports._plot import figure, png_bytes
from nmsat.sim.resources import KIND_LABELS, RESOURCE_KINDS
from nmsat.sim.sweep import SweepResult

__all__ = ["plot_pareto", "point_label", "write_pareto_plot"]

#: Short names of the commonly swept keys in point labels; others keep their name.
_SHORT = {
    "array_rows": "R",
    "array_cols": "C",
    "adder_latency": "L",
    "interleave": "I",
    "dram_bytes_per_cycle": "B/cyc",
    "dram_latency_cycles": "lat",
    "buffer_banks": "banks",
    "sore_lanes": "SORE",
    "wuve_lanes": "WUVE",
    "act_buffer_bytes": "ACT",
    "wgt_buffer_bytes": "WGT",
    "acc_buffer_bytes": "ACC",
    "vec_buffer_bytes": "VEC",
    "clock_hz": "f",
}


def _size(value: float) -> str:
    for unit, scale in (("M", 2**20), ("K", 2**10)):
        if value >= scale and value % scale == 0:
            return f"{value // scale:g}{unit}"
    return f"{value:g}"


def point_label(values: Mapping[str, Any]) -> str:
    """A short label of a point's swept values, e.g. ``"32x16 2:8 B/cyc=256"``."""
    parts = []
    rows, cols = values.get("array_rows"), values.get("array_cols")
    if rows is not None and cols is not None:
        parts.append(f"{rows}x{cols}")
    for key, value in values.items():
        if key in ("array_rows", "array_cols") and rows is not None and cols is not None:
            continue
        if key in ("nm", "model"):
            parts.append(str(value))
        elif key.endswith("_bytes") and isinstance(value, int):
            parts.append(f"{_SHORT.get(key, key)}={_size(value)}")
        elif key == "clock_hz" and isinstance(value, int | float):
            parts.append(f"f={value / 1e6:g}MHz")
        else:
            parts.append(f"{_SHORT.get(key, key)}={value}")
    return " ".join(parts)


def _tick(value: float, _pos: Any = None) -> str:
    """A tick label without exponents: 600, 2M, 1.5G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _sig4(value: float) -> str:
    """``value`` with four significant digits, trailing zeros kept: 0.3200, 12.34, 1251."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, 3 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def _minor_tick(value: float, _pos: Any = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis, and no other."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return _tick(value) if round(mantissa, 6) in (2.0, 5.0) else ""


def _spread(values: Sequence[float]) -> float:
    low, high = min(values), max(values)
    return high / low if low > 0 else math.inf


#: Offsets (points) and alignments of the numbers beside Pareto-optimal points, in turn.
_NUMBER_PLACES = (
    (-7, 7, "right", "bottom"),
    (7, -7, "left", "top"),
    (7, 7, "left", "bottom"),
    (-7, -7, "right", "top"),
)

#: Pareto-optimal points listed under a panel; more are only in results.csv.
_MAX_LISTED = 20


def plot_pareto(result: SweepResult) -> bytes:
    """Return the Pareto plot of ``result`` as PNG bytes (see the module docstring)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        groups.setdefault(f"{row['model']}, batch {row['batch']}", []).append(row)
    listed = {
        name: min(_MAX_LISTED, sum(1 for r in rows if r["pareto"])) for name, rows in groups.items()
    }
    ratios: list[float] = []
    for name in groups:
        ratios += [5.0, 0.14 * (listed[name] + 1.5)]
    fig = figure(10.0, sum(ratios) + 0.3)
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    cmap = colormaps["viridis"].with_extremes(over="#d62728")
    norm = Normalize(vmin=0.0, vmax=100.0)
    plots = []
    peak = 0.0
    for j, (name, rows) in enumerate(groups.items()):
        ax = fig.add_subplot(grid[2 * j])
        table_ax = fig.add_subplot(grid[2 * j + 1])
        table_ax.axis("off")
        front = _panel(ax, name, rows, result, cmap, norm)
        _front_table(table_ax, rows, front, result, listed[name])
        plots.append(ax)
        peak = max([peak, *(float(r["device_pct"]) for r in rows if r["error"] is None)])
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=plots, extend="max" if peak > 100 else "neither")
    bar.set_label(
        f"estimated use of the {result.device}: binding resource (%)\n"
        f"({result.resource_table}: an estimate, not a synthesis result)"
    )
    return png_bytes(fig)


def _binding(row: Mapping[str, Any]) -> tuple[str, float]:
    kind = max(RESOURCE_KINDS, key=lambda k: float(row[f"{k}_pct"]))
    return kind, float(row[f"{kind}_pct"])


def _panel(
    ax: Any,
    name: str,
    rows: Sequence[dict[str, Any]],
    result: SweepResult,
    cmap: Any,
    norm: Any,
) -> list[dict[str, Any]]:
    """Draw one model's points; return its Pareto-optimal rows, fastest first."""
    from matplotlib.ticker import FuncFormatter

    ok = [r for r in rows if r["error"] is None]
    failed = len(rows) - len(ok)
    tables = sorted({str(r["energy_table"]) for r in ok})
    title = f"{name}: {len(ok)} design points"
    if failed:
        title += f" ({failed} more where the model does not fit; not shown)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("cycles per training step")
    ax.set_ylabel(f"energy per training step (mJ)\ntable {', '.join(tables) or '-'}")
    ax.grid(alpha=0.3, which="both")
    ax.set_axisbelow(True)
    if not ok:
        ax.text(0.5, 0.5, "no point ran", ha="center", va="center", transform=ax.transAxes)
        return []
    xs = [float(r["cycles"]) for r in ok]
    ys = [float(r["energy_j"]) * 1e3 for r in ok]
    if _spread(xs) > 3:
        ax.set_xscale("log")
    if _spread(ys) > 3:
        ax.set_yscale("log")
    fits = [bool(r["fits_device"]) for r in ok]
    inside = [i for i, f in enumerate(fits) if f]
    beyond = [i for i, f in enumerate(fits) if not f]
    ax.scatter(
        [xs[i] for i in inside],
        [ys[i] for i in inside],
        c=[float(ok[i]["device_pct"]) for i in inside],
        cmap=cmap,
        norm=norm,
        s=40,
        alpha=0.9,
        edgecolors="none",
        zorder=2,
        label=f"design point (colour: {result.device} use)",
    )
    if beyond:
        ax.scatter(
            [xs[i] for i in beyond],
            [ys[i] for i in beyond],
            marker="x",
            color=cmap(norm(1e9)),
            s=40,
            linewidths=1.5,
            zorder=2,
            label=f"beyond the {result.device} (estimate)",
        )
    front = sorted((r for r in ok if r["pareto"]), key=lambda r: (r["cycles"], r["energy_j"]))
    ax.scatter(
        [float(r["cycles"]) for r in front],
        [float(r["energy_j"]) * 1e3 for r in front],
        s=150,
        facecolors="none",
        edgecolors="black",
        linewidths=1.3,
        zorder=3,
        label="Pareto-optimal among designs that fit (cycles, energy, resources)",
    )
    for number, row in enumerate(front[:_MAX_LISTED], start=1):
        # Turn round the point from one number to the next, so that close neighbours'
        # numbers do not land on each other.
        dx, dy, ha, va = _NUMBER_PLACES[(number - 1) % len(_NUMBER_PLACES)]
        ax.annotate(
            str(number),
            (float(row["cycles"]), float(row["energy_j"]) * 1e3),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=8,
            fontweight="bold",
            zorder=4,
        )
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(FuncFormatter(_minor_tick))
    # Points run from lower left (fast, frugal) to upper right: the lower right stays empty.
    ax.legend(loc="lower right", fontsize=8)
    return front


def _front_table(
    ax: Any,
    rows: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    result: SweepResult,
    count: int,
) -> None:
    """List the numbered Pareto-optimal points of one panel's ``rows`` under it."""
    varying = [k for k in result.swept if len({str(r[k]) for r in rows}) > 1] or [
        k for k in result.swept if k != "model"
    ]
    labels = [point_label({k: r[k] for k in varying}) for r in front[:count]]
    width = max([len("design"), *(len(t) for t in labels)])
    lines = [
        f"{'#':>2}  {'design':<{width}}  {'cycles':>13}  {'ms':>9}  {'mJ':>9}  "
        f"{'GFLOPS/W':>8}  binding resource"
    ]
    for number, (row, label) in enumerate(zip(front, labels, strict=False), start=1):
        kind, pct = _binding(row)
        over = " (beyond the device)" if not row["fits_device"] else ""
        lines.append(
            f"{number:>2}  {label:<{width}}  {row['cycles']:>13,d}  {row['seconds'] * 1e3:>9.3f}"
            f"  {_sig4(row['energy_j'] * 1e3):>9}  {row['gflops_per_w']:>8.1f}  "
            f"{pct:5.1f}% {KIND_LABELS[kind]}{over}"
        )
    if len(front) > count:
        lines.append(f"    ... {len(front) - count} more: the pareto column of results.csv")
    ax.text(
        0.0,
        1.0,
        "\n".join(lines),
        family="monospace",
        fontsize=7.5,
        va="top",
        ha="left",
        transform=ax.transAxes,
    )


def write_pareto_plot(result: SweepResult, path: str | Path) -> Path:
    """Write :func:`plot_pareto` of ``result`` to ``path`` atomically; return the path."""
    target = Path(path)
    write_atomic(target, plot_pareto(result))
    return target
