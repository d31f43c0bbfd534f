"""Emission: a scheduled program to instruction words, an assembly listing and a manifest.

The binary (``.nmsb``, :mod:`nmsat.hw.isa_asm`) holds the device instructions in program
order; host operations are not instructions. The manifest (JSON) tells a runner what the
binary alone cannot: where each device segment starts, which host operations come after it,
which segments are the init program (pre-generation's first copies) and where every tensor
lives in external memory.

Ref: STYLE.md G14 (binary emission plus listing); DESIGN.md section 3 (one ISA).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from nmsat.hw import isa
from nmsat.hw.files import write_atomic
from nmsat.hw.isa import Opcode
from nmsat.hw.isa_asm import format_instruction, program_to_bytes

from .ir import Program

__all__ = ["Emitted", "emit", "write_outputs"]


@dataclasses.dataclass(frozen=True)
class Emitted:
    """The emitted forms of a program.

    Members
    -------
    words : tuple of int
        The instruction words, pc = index.
    listing : str
        Assembly text with a comment per segment and per host operation.
    manifest : dict
        JSON-ready description: segments, host operations, tensors, layers, options.
    """

    words: tuple[int, ...]
    listing: str
    manifest: dict[str, Any]


def emit(prog: Program) -> Emitted:
    """Encode ``prog`` (already scheduled and verified)."""
    words: list[int] = []
    lines = [
        f"# nmsat program: {prog.model}, batch {prog.batch}, "
        f"{prog.nm[0]}:{prog.nm[1]}, config {prog.params_name}, "
        f"optimisations: {prog.options.describe()}"
    ]
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    pending_host: list[dict[str, Any]] = []
    init_from = _init_start(prog)
    for index, op in enumerate(prog.ops):
        if op.opcode is None:
            assert op.host is not None
            host = dataclasses.asdict(op.host)
            pending_host.append(host)
            lines.append(f"# host: {op.host.kind} ({op.host.layer})")
            continue
        if current is None:
            kind = "init" if index >= init_from else "step"
            current = {"kind": kind, "start_pc": len(words), "host_before": pending_host}
            pending_host = []
            lines.append(f"# segment {len(segments)} ({kind}) at pc {len(words)}")
        instr = op.instr
        if instr is None or instr.pop != op.pop or instr.push != op.push:
            instr = isa.make(op.opcode, pop=op.pop, push=op.push, **dict(op.fields))
        words.append(instr.encode())
        text = format_instruction(instr)
        lines.append(f"{text}  # {op.phase.value} {op.layer}" if op.layer else text)
        if op.opcode is Opcode.HALT:
            current["halt_pc"] = len(words) - 1
            segments.append(current)
            current = None
    manifest = {
        "format": "nmsat-program",
        "version": 1,
        "model": prog.model,
        "batch": prog.batch,
        "nm": f"{prog.nm[0]}:{prog.nm[1]}",
        "config": prog.params_name,
        "options": dataclasses.asdict(prog.options),
        "instructions": len(words),
        "segments": segments,
        "host_after": pending_host,
        "tensors": [dataclasses.asdict(t) for t in prog.tensors],
        "layers": [{"name": n, "ff_sparse": ff, "bp_sparse": bp} for n, (ff, bp) in prog.layers],
        "dram_bytes": max((t.addr + t.nbytes for t in prog.tensors), default=0),
    }
    return Emitted(tuple(words), "\n".join(lines) + "\n", manifest)


def _init_start(prog: Program) -> int:
    """Index of the first op of the trailing init segment (len(ops) when there is none)."""
    index = len(prog.ops)
    while index > 0 and prog.ops[index - 1].phase.value in ("prune", "control"):
        index -= 1
    has_prune = any(op.phase.value == "prune" for op in prog.ops[index:])
    return index if has_prune and index > 0 else len(prog.ops)


def write_outputs(emitted: Emitted, out: str | Path) -> list[Path]:
    """Write ``out.nmsb``, ``out.s`` and ``out.json`` atomically; return their paths."""
    base = Path(out)
    if base.suffix in (".nmsb", ".s", ".json"):
        base = base.with_suffix("")
    paths = [base.with_suffix(".nmsb"), base.with_suffix(".s"), base.with_suffix(".json")]
    write_atomic(paths[0], program_to_bytes(list(emitted.words)))
    write_atomic(paths[1], emitted.listing)
    write_atomic(paths[2], json.dumps(emitted.manifest, indent=1) + "\n")
    return paths
