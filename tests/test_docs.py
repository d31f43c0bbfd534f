"""The documentation stays true: the architecture figure, quoted tables, links.

- docs/figures/architecture.py renders, and its labels come from SATParams (change a field,
  the label changes), so the picture cannot drift from configs/vcu1525.yaml;
- the preset table of docs/architecture.md is the one the script generates;
- the figures docs/dataflow.md quotes match the committed speedup report and the compiler;
- every relative link in docs/*.md and README.md reaches an existing file (and heading).
"""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from nmsat.hw.params import load_params

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCRIPT = DOCS / "figures" / "architecture.py"


@pytest.fixture(scope="module")
def arch() -> ModuleType:
    """docs/figures/architecture.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("nmsat_docs_architecture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the architecture figure -----------------------------------------------------------------


def test_figure_renders(arch: ModuleType, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = tmp_path / "figures" / "architecture.png"
    arch.main([str(out)])
    image = imread(out)
    committed = imread(arch.OUT)
    assert image.shape == committed.shape
    assert image.shape[0] > 800 and image.shape[1] > 1500
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_labels_follow_the_parameters(arch: ModuleType) -> None:
    p = load_params("vcu1525").replace(
        array_rows=64,
        array_cols=16,
        adder_latency=6,
        interleave=7,
        sore_lanes=8,
        wuve_lanes=128,
        act_buffer_bytes=8 * 2**20,
        wgt_buffer_bytes=2**20,
        acc_buffer_bytes=2 * 2**20,
        vec_buffer_bytes=3 * 2**20,
        buffer_banks=16,
        clock_hz=250e6,
        dram_bytes_per_cycle=128,
        dram_latency_cycles=100,
        dram_bytes=2**34,
        queue_depths=(3, 5, 6, 7, 9),
        token_depth=11,
        nm_patterns=((2, 4), (1, 16)),
    )
    t = arch.labels(p)
    assert "64 x 16 PE" in t["stce"]
    assert "adder 6 stages, interleave 7" in t["stce"]
    assert "(2:4, 1:16, dense)" in t["stce"]
    assert "0.256 TMAC/s" in t["stce"]  # 1024 PEs at 250 MHz
    assert t["sore"].startswith("PruneUnit + SORE: 8 bitonic lanes")
    assert t["wuve"].startswith("WUVE: 128 FP32 lanes")
    assert "8 MiB FP16" in t["buf_act"]
    assert "1 MiB FP16" in t["buf_wgt"]
    assert "2 MiB FP32" in t["buf_acc"]
    assert "3 MiB FP32" in t["buf_vec"]
    assert "256 KiB\n4-bit" in t["buf_idx"]  # 2**19 entries x 4 bits (m_max 16)
    assert "buffer_banks = 16" in t["buffers"]
    assert "(250 MHz)" in t["title"]
    assert "16 GiB\n128 B/cycle (32 GB/s)\nlatency 100 cycles" in t["dram"]
    depths = {"load": 3, "compute": 5, "prune": 6, "update": 7, "store": 9}
    for queue, depth in depths.items():
        assert t[f"queue_{queue}"] == f"{queue}\n{depth} deep"
    assert "at most 11 waiting" in t["controller"]
    assert "16384 x 256 bit" in t["imem"]


def test_figure_draws_the_labels(arch: ModuleType) -> None:
    p = load_params("tiny")
    fig = arch.draw(p)
    drawn = "\n".join(text.get_text() for ax in fig.axes for text in ax.texts)
    for key, label in arch.labels(p).items():
        for line in label.splitlines():
            assert line in drawn, (key, line)


def test_preset_table_is_in_architecture_md(arch: ModuleType) -> None:
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert arch.preset_table() in page


# -- figures quoted in docs/dataflow.md ------------------------------------------------------


def _between(text: str, start: str, end: str) -> list[str]:
    block = text.split(start, 1)[1].split(end, 1)[0]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_ablation_quote_matches_the_report() -> None:
    page = (DOCS / "dataflow.md").read_text(encoding="utf-8")
    report = (ROOT / "reports" / "speedup" / "README.md").read_text(encoding="utf-8")
    quoted = _between(page, "<!-- quote: reports/speedup/README.md", "<!-- end quote -->")
    assert len(quoted) >= 10
    report_lines = set(report.splitlines())
    stale = [line for line in quoted if line not in report_lines]
    assert not stale, f"docs/dataflow.md quotes lines no longer in the report: {stale}"


def test_per_pass_figures_match_runs_csv() -> None:
    page = (DOCS / "dataflow.md").read_text(encoding="utf-8")
    rows = _between(page, "<!-- from reports/speedup/runs.csv", "<!-- end numbers -->")[2:]
    with (ROOT / "reports" / "speedup" / "runs.csv").open(encoding="utf-8") as handle:
        runs = {
            (r["model"], r["variant"]): r
            for r in csv.DictReader(handle)
            if r["nm"] == "2:8" and r.get("sparsity", "bdwp") == "bdwp"
        }
    assert len(rows) == 5
    for line in rows:
        model, *cells = [c.strip() for c in line.strip("|").split("|")]
        expected = [
            f"{int(runs[(model, variant)][column]) / 1e6:,.1f} M"
            for column in ("ff_cycles", "bp_cycles", "wu_cycles")
            for variant in ("all on", "no interleave")
        ]
        assert cells == expected, model


@pytest.mark.slow
def test_dataflow_example_matches_the_compiler() -> None:
    from collections import Counter

    from nmsat.compiler import CompileOptions, compile_model
    from nmsat.hw.isa import Opcode, cycles
    from nmsat.hw.isa_timing import gemm_os_cycles, gemm_ws_cycles
    from nmsat.models.zoo import get_model

    p = load_params("vcu1525")
    prog = compile_model(get_model("resnet18", 32), (2, 8), p, CompileOptions())

    def gemms(layer: str, phase: str) -> Counter[tuple[int, ...]]:
        out: Counter[tuple[int, ...]] = Counter()
        for op in prog.ops:
            if op.layer == layer and op.phase.value == phase and op.opcode is Opcode.GEMM:
                f = dict(op.fields)
                assert op.instr is not None
                out[(f["rows"], f["cols"], f["depth"], f["n"], f["m"], cycles(op.instr, p))] += 1
        return out

    conv = "layer2.1.conv1"
    assert gemms(conv, "ff") == {(128, 3584, 128, 2, 8, 14528): 63}
    assert gemms(conv, "bp") == {(128, 3584, 128, 2, 8, 14528): 63}
    assert gemms(conv, "wu") == {
        (128, 512, 1792, 1, 1, 114884): 2,
        (128, 512, 1792, 1, 1, 115012): 26,
        (128, 128, 1792, 1, 1, 28868): 1,
        (128, 128, 1792, 1, 1, 28996): 13,
    }
    assert gemm_os_cycles(128, 512, 1792, 1, 1, 1, p, accumulate=True) == 458881
    fc = gemms("fc", "ff")
    assert fc[(992, 32, 512, 1, 1, 20528)] == 1
    assert gemm_ws_cycles(992, 32, 512, 1, 1, 1, p) == 80048


# -- links -----------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _links(page: Path) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    return _LINK.findall(text) + _REF.findall(text)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_link_checker_finds_links() -> None:
    page = DOCS / "architecture.md"
    links = _links(page)
    assert "figures/architecture.png" in links
    assert "#where-this-differs-from-the-paper" in links
    assert "where-this-differs-from-the-paper" in _anchors(page)
    assert "figures/architecture.py" not in _links(DOCS / "hw.md")
