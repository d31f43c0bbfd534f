# Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
#      Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (SAT: STCE, SORE, WUVE).
# Ref: hw/top.py (which unit reaches which buffer, the instruction memory); docs/isa.md (five
#      queues with dependency tokens); docs/decisions.md (what runs on the host).
# Ref: matplotlib documentation (Figure without pyplot, Agg canvas, FancyArrowPatch).
"""Draw the block diagram of the accelerator into docs/figures/architecture.png.

Run ``.venv/bin/python docs/figures/architecture.py`` from the repository root; it takes no
parameters. Every size in the labels is read from the ``vcu1525`` preset
(:func:`nmsat.hw.params.load_params`) and from :data:`nmsat.hw.top.IMEM_ADDR_BITS`, so the
picture cannot drift from the configuration. :func:`labels` returns the label texts (the test
checks their numbers against the preset); :func:`preset_table` returns the Markdown table of
both presets that docs/architecture.md quotes.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmsat.hw.files import write_atomic
from nmsat.hw.params import SATParams, format_nm, load_params

__all__ = ["OUT", "PRESET", "draw", "labels", "preset_table", "render"]

#: The preset the picture shows.
PRESET = "vcu1525"

#: Where ``python docs/figures/architecture.py`` writes the picture.
OUT = Path(__file__).with_name("architecture.png")

# Queue colours (also the tint of each queue's unit); the reports' palette.
_QUEUE_COLOURS = {
    "load": "#4c78a8",
    "store": "#72b7b2",
    "compute": "#f58518",
    "update": "#b279a2",
    "prune": "#54a24b",
}
_UNIT_FILL = {
    "dma": "#dde7f1",
    "stce": "#fde6cf",
    "sore": "#dcedd9",
    "wuve": "#efe2ec",
}
_BUFFER_FILL = "#fff4d1"
_BUFFER_EDGE = "#b08a1e"
_DATA = "#2b2b2b"


def _size(nbytes: float) -> str:
    """``4194304`` -> ``"4 MiB"``; ``393216`` -> ``"384 KiB"``; ``768`` -> ``"768 B"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{int(nbytes // scale)} {unit}"
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def _imem_words() -> int:
    # The top level (not SATParams) fixes the instruction memory; importing it loads Amaranth.
    from nmsat.hw.top import IMEM_ADDR_BITS

    return int(2**IMEM_ADDR_BITS)


def labels(params: SATParams) -> dict[str, str]:
    """Return the text of every block of the diagram, keyed by block, sizes from ``params``."""
    p = params
    patterns = ", ".join(format_nm(n, m) for n, m in p.nm_patterns)
    depth = {q: p.queue_depth(q) for q in _QUEUE_COLOURS}
    idx_bytes = p.idx_buffer_bits / 8
    return {
        "title": f"nmsat accelerator, preset {p.name} ({p.clock_hz / 1e6:g} MHz)",
        "host": "Host CPU\nloss + softmax, batch/layer norm,\npooling, GELU; runs the\n"
        "program segment by segment",
        "dram": f"External memory\n{_size(p.dram_bytes)}\n"
        f"{p.dram_bytes_per_cycle} B/cycle "
        f"({p.dram_bandwidth_bytes_per_s / 1e9:g} GB/s)\n"
        f"latency {p.dram_latency_cycles} cycles\n\nactivations, gradients,\n"
        "FP32 weights, momentum,\nN:M copies",
        "imem": f"Instruction memory\n{_imem_words()} x 256 bit",
        "controller": "Controller\nfetch 1 word per cycle, check it in gateware, issue in order "
        f"per queue;\ndependency tokens between queues (at most {p.token_depth} waiting "
        "per pair)",
        **{f"queue_{q}": f"{q}\n{depth[q]} deep" for q in _QUEUE_COLOURS},
        "dma": "DMA engine\nLOAD, STORE\n4-D strided,\none at a time",
        "stce": f"STCE: {p.array_rows} x {p.array_cols} PE systolic array\n"
        "GEMM: C (in ACC) = A (in WGT, N:M or dense) . B (in ACT) [+ C]\n"
        f"FP16 x FP16 -> FP32 MAC, N:M operand select ({patterns}, dense)\n"
        f"WS (FF, BP) and OS (WU); FP32 adder {p.adder_latency} stages, interleave "
        f"{p.interleave}; {p.peak_macs_per_s / 1e12:.3f} TMAC/s dense",
        "sore": f"PruneUnit + SORE: {p.sore_lanes} bitonic lanes\n"
        "one M-group per lane per cycle\nFP32 master weights -> FP16 N:M copies (FF, BP)",
        "wuve": f"WUVE: {p.wuve_lanes} FP32 lanes\nVEC: copy, ReLU, ReLU grad, add, scale\n"
        "UPDATE: SGD momentum, weight decay, SR-STE",
        "buffers": f"on-chip buffers\nbuffer_banks = {p.buffer_banks}",
        "buf_vec": f"VEC\n{_size(p.vec_buffer_bytes)} FP32\nmaster weights,\nmomentum",
        "buf_wgt": f"WGT\n{_size(p.wgt_buffer_bytes)} FP16\nN:M weight\ncopies; dY in WU",
        "buf_idx": f"IDX\n{_size(idx_bytes)}\n{p.index_bits}-bit N:M\nindices",
        "buf_act": f"ACT\n{_size(p.act_buffer_bytes)} FP16\nactivations,\ngradients",
        "buf_acc": f"ACC\n{_size(p.acc_buffer_bytes)} FP32\nsums, weight\ngradients",
    }


def preset_table(presets: Sequence[str] = ("tiny", "vcu1525")) -> str:
    """Return the Markdown table of the presets' sizes that docs/architecture.md quotes."""
    ps = [load_params(name) for name in presets]

    def row(what: str, values: Sequence[str]) -> str:
        return f"| {what} | " + " | ".join(values) + " |"

    def each(fn: Any) -> list[str]:
        return [fn(p) for p in ps]

    lines = [
        row("preset", [f"`{p.name}`" for p in ps]),
        row("---", ["---"] * len(ps)),
        row("STCE array (R x C)", each(lambda p: f"{p.array_rows} x {p.array_cols} PEs")),
        row("clock", each(lambda p: f"{p.clock_hz / 1e6:g} MHz")),
        row("dense peak", each(lambda p: f"{p.peak_macs_per_s / 1e9:g} GMAC/s")),
        row(
            "N:M patterns (besides dense)",
            each(lambda p: ", ".join(format_nm(n, m) for n, m in p.nm_patterns)),
        ),
        row("FP32 adder latency L", each(lambda p: str(p.adder_latency))),
        row("FP32 multiplier latency Lm (WUVE)", each(lambda p: str(p.multiplier_latency))),
        row("interleave (accumulators per PE)", each(lambda p: str(p.interleave))),
        row("ACT (FP16)", each(lambda p: _size(p.act_buffer_bytes))),
        row("WGT (FP16)", each(lambda p: _size(p.wgt_buffer_bytes))),
        row(
            "IDX (derived)",
            each(lambda p: f"{_size(p.idx_buffer_bits / 8)}, {p.index_bits}-bit indices"),
        ),
        row("ACC (FP32)", each(lambda p: _size(p.acc_buffer_bytes))),
        row("VEC (FP32)", each(lambda p: _size(p.vec_buffer_bytes))),
        row("banks per buffer", each(lambda p: str(p.buffer_banks))),
        row("SORE lanes", each(lambda p: str(p.sore_lanes))),
        row("WUVE lanes", each(lambda p: str(p.wuve_lanes))),
        row(
            "DRAM bandwidth",
            each(
                lambda p: (
                    f"{p.dram_bytes_per_cycle} B/cycle "
                    f"({p.dram_bandwidth_bytes_per_s / 1e9:g} GB/s)"
                )
            ),
        ),
        row("DRAM latency", each(lambda p: f"{p.dram_latency_cycles} cycles")),
        row("external memory", each(lambda p: _size(p.dram_bytes))),
        row(
            "queue depths (load, compute, prune, update, store)",
            each(lambda p: ", ".join(str(d) for d in p.queue_depths)),
        ),
        row("token depth", each(lambda p: str(p.token_depth))),
        row("energy table", each(lambda p: f"`{p.energy_table}`")),
    ]
    return "\n".join(lines)


# -- drawing ---------------------------------------------------------------------------------


def _box(
    ax: Any, x: float, y: float, w: float, h: float, fill: str, edge: str, lw: float = 1.4
) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.8",
            facecolor=fill,
            edgecolor=edge,
            linewidth=lw,
        )
    )


def _text(ax: Any, x: float, y: float, text: str, size: float = 10.5, **kw: Any) -> None:
    kw.setdefault("ha", "center")
    kw.setdefault("va", "center")
    ax.text(x, y, text, fontsize=size, linespacing=1.35, **kw)


def _titled(
    ax: Any,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    size: float = 10.5,
) -> None:
    """Text centred in a box, its first line in bold."""
    head, _, body = text.partition("\n")
    if not body:
        _text(ax, x + w / 2, y + h / 2, head, size, weight="bold")
        return
    n_body = body.count("\n") + 1
    line = size * 1.35 / 72 * 6.1  # one text line in data units (6.1 units per inch)
    top = y + h / 2 + (n_body + 1) * line / 2
    _text(ax, x + w / 2, top - line / 2, head, size + 0.5, weight="bold")
    _text(ax, x + w / 2, top - line - n_body * line / 2, body, size)


def _arrow(
    ax: Any,
    start: tuple[float, float],
    end: tuple[float, float],
    colour: str = _DATA,
    both: bool = False,
    lw: float = 2.2,
) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="<|-|>" if both else "-|>",
            mutation_scale=16,
            color=colour,
            linewidth=lw,
            shrinkA=0,
            shrinkB=0,
        )
    )


def _wire(ax: Any, points: Sequence[tuple[float, float]], colour: str) -> None:
    """A dashed issue line through ``points``, with an arrowhead at the last one."""
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color=colour, linewidth=1.8, linestyle=(0, (5, 3)), solid_capstyle="butt")
    # A short solid piece carries the arrowhead, so the whole line stays dashed.
    (x0, y0), (x1, y1) = points[-2], points[-1]
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    tail = (x1 - (x1 - x0) * 1.2 / length, y1 - (y1 - y0) * 1.2 / length)
    _arrow(ax, tail, points[-1], colour=colour, lw=1.8)


def draw(params: SATParams) -> Any:
    """Return the diagram of ``params`` as a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    t = labels(params)
    fig = Figure(figsize=(19.7, 10.8), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 120)
    ax.set_ylim(0, 66)
    ax.axis("off")

    # Outside the chip: host and external memory.
    _box(ax, 1, 45, 21, 18, "#ececec", "#555555")
    _titled(ax, 1, 45, 21, 18, t["host"])
    _box(ax, 1, 12, 21, 24, "#e4e4e4", "#555555")
    _titled(ax, 1, 12, 21, 24, t["dram"])
    _arrow(ax, (11.5, 45), (11.5, 36), both=True)
    _text(ax, 12.6, 40.5, "data, host work\nbetween segments", 9, ha="left")

    # The chip.
    _box(ax, 26.5, 0.5, 92, 64.5, "#fbfbfb", "#333333", lw=1.8)
    _text(ax, 28, 63.3, t["title"], 12.5, ha="left", weight="bold")

    _box(ax, 29, 46.5, 14, 11, "#eeeeee", "#555555")
    _titled(ax, 29, 46.5, 14, 11, t["imem"], 10)
    _arrow(ax, (22, 52), (29, 52))
    _text(ax, 25.5, 53, "program", 9, va="bottom")
    _arrow(ax, (22, 59.5), (50, 59.5), both=True)
    _text(ax, 36, 60.2, "start / done, error", 9, va="bottom")
    _arrow(ax, (43, 52), (50, 52))
    _text(ax, 46.5, 53, "fetch", 9, va="bottom")

    # Controller with its five queue FIFOs.
    _box(ax, 50, 45.5, 64, 16, "#e9eef5", "#4a5d78")
    _titled(ax, 50, 54.6, 64, 6.9, t["controller"], 10)
    queue_x: dict[str, float] = {}
    for i, q in enumerate(_QUEUE_COLOURS):
        x = 51.5 + i * 12.5
        queue_x[q] = x + 5.5
        _box(ax, x, 47, 11, 7.6, "white", _QUEUE_COLOURS[q], lw=2.2)
        _text(ax, x + 5.5, 50.8, t[f"queue_{q}"], 10)

    # Units.
    _box(ax, 29, 16, 14, 14, _UNIT_FILL["dma"], _QUEUE_COLOURS["load"], lw=2)
    _titled(ax, 29, 16, 14, 14, t["dma"], 10)
    _box(ax, 63, 32, 51, 10.5, _UNIT_FILL["stce"], _QUEUE_COLOURS["compute"], lw=2)
    _titled(ax, 63, 32, 51, 10.5, t["stce"], 10.5)
    _box(ax, 51, 2.5, 36.7, 10, _UNIT_FILL["sore"], _QUEUE_COLOURS["prune"], lw=2)
    _titled(ax, 51, 2.5, 36.7, 10, t["sore"], 10.5)
    _box(ax, 89, 2.5, 25, 10, _UNIT_FILL["wuve"], _QUEUE_COLOURS["update"], lw=2)
    _titled(ax, 89, 2.5, 25, 10, t["wuve"], 10)

    # Buffers: VEC, WGT, IDX, ACT, ACC, so that the STCE sits over the four it uses and the
    # SORE under the three it uses.
    _box(ax, 50, 16, 64, 12, "#fffaf0", _BUFFER_EDGE, lw=1.2)
    _text(ax, 51, 30.2, t["buffers"], 9.5, ha="left", style="italic")
    centre: dict[str, float] = {}
    width = (64 - 6 * 1.2) / 5
    for i, name in enumerate(("vec", "wgt", "idx", "act", "acc")):
        x = 51.2 + i * (width + 1.2)
        centre[name] = x + width / 2
        _box(ax, x, 17, width, 10, _BUFFER_FILL, _BUFFER_EDGE)
        _titled(ax, x, 17, width, 10, t[f"buf_{name}"], 9.5)

    # Data flow (solid): memory bus, DMA, STCE, SORE, WUVE.
    _arrow(ax, (22, 23), (29, 23), both=True)
    _text(ax, 25.5, 23.8, "bus", 9, va="bottom")
    _arrow(ax, (43, 23), (50, 23), both=True)
    _text(ax, 46.5, 23.8, "all five", 9, va="bottom")
    for name, note in (("wgt", "A"), ("idx", "A's indices"), ("act", "B")):
        _arrow(ax, (centre[name], 27), (centre[name], 32))
        _text(ax, centre[name] + 0.6, 29.5, note, 8.5, ha="left")
    _arrow(ax, (centre["acc"], 27), (centre["acc"], 32), both=True)
    _text(ax, centre["acc"] + 0.6, 29.5, "C", 8.5, ha="left")
    _arrow(ax, (centre["vec"], 17), (centre["vec"], 12.5))
    _text(ax, centre["vec"] + 0.6, 14.7, "FP32", 8.5, ha="left")
    for name in ("wgt", "idx"):
        _arrow(ax, (centre[name], 12.5), (centre[name], 17))
        _text(ax, centre[name] + 0.6, 14.7, "FP16" if name == "wgt" else "index", 8.5, ha="left")
    gap = 51.2 + 4 * (width + 1.2) - 0.6  # between ACT and ACC: to the group, not one buffer
    _arrow(ax, (gap, 12.5), (gap, 16), both=True)
    _text(ax, gap + 0.6, 14.3, "all five", 8.5, ha="left")

    # Instruction issue (dashed, one colour per queue).
    _wire(
        ax,
        [(queue_x["load"] - 1.5, 47), (queue_x["load"] - 1.5, 44.2), (34.5, 44.2), (34.5, 30)],
        _QUEUE_COLOURS["load"],
    )
    _wire(
        ax,
        [(queue_x["store"], 47), (queue_x["store"], 43.4), (37.5, 43.4), (37.5, 30)],
        _QUEUE_COLOURS["store"],
    )
    _wire(ax, [(queue_x["compute"], 47), (queue_x["compute"], 42.5)], _QUEUE_COLOURS["compute"])
    _wire(
        ax,
        [
            (queue_x["update"], 47),
            (queue_x["update"], 44.2),
            (115.6, 44.2),
            (115.6, 7.5),
            (114, 7.5),
        ],
        _QUEUE_COLOURS["update"],
    )
    _wire(
        ax,
        [(queue_x["prune"] + 5.5, 50.8), (117.3, 50.8), (117.3, 1.4), (69, 1.4), (69, 2.5)],
        _QUEUE_COLOURS["prune"],
    )

    # Legend.
    _arrow(ax, (2, 7.5), (7, 7.5))
    _text(ax, 8, 7.5, "data", 9.5, ha="left")
    ax.plot((2, 7), (4.5, 4.5), color="#666666", linewidth=1.8, linestyle=(0, (5, 3)))
    _text(ax, 8, 4.5, "instruction issue\n(colour: queue)", 9.5, ha="left")
    return fig


def render(path: str | Path, params: SATParams | None = None) -> None:
    """Write the diagram of ``params`` (default: the vcu1525 preset) as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(params if params is not None else load_params(PRESET))
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No software version in the metadata: the file changes only when the picture does.
    fig.savefig(buf, format="png", metadata={"Software": None})
    write_atomic(path, buf.getvalue())


def main(argv: Sequence[str]) -> int:
    """Write the picture to ``argv[0]`` (default: docs/figures/architecture.png)."""
    render(Path(argv[0]) if argv else OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
