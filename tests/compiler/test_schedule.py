"""Scheduling and verification: tokens balance, the serial baseline chains every instruction,
the verifier catches broken programs, and golden binaries do not change unnoticed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from nmsat.compiler import CompileOptions, VerifyError, compile_model, emit, verify
from nmsat.compiler.schedule import op_queue
from nmsat.hw.isa import Opcode
from nmsat.hw.params import load_params
from nmsat.models.zoo import get_model

TINY = load_params("tiny")
GOLDEN = Path(__file__).with_name("golden.json")


def _mlp(options: CompileOptions | None = None, nm: tuple[int, int] = (2, 8)):  # type: ignore[no-untyped-def]
    return compile_model(get_model("mlp", 8), nm, TINY, options or CompileOptions())


def test_tokens_balance_per_segment_and_pair() -> None:
    prog = _mlp()
    pushes: dict[tuple[str, str], int] = {}
    pops: dict[tuple[str, str], int] = {}
    for op in prog.ops:
        if op.opcode is Opcode.HALT:
            assert pushes == pops
            pushes.clear()
            pops.clear()
            continue
        q = op_queue(op)
        if q is None:
            continue
        for dst in op.push:
            pushes[(q.name, dst.name)] = pushes.get((q.name, dst.name), 0) + 1
        for src in op.pop:
            pops[(src.name, q.name)] = pops.get((src.name, q.name), 0) + 1
    assert sum(len(op.pop) for op in prog.ops) > 0


def test_serial_baseline_chains_every_instruction() -> None:
    prog = _mlp(CompileOptions(schedule=False))
    device = [i for i, op in enumerate(prog.ops) if op.opcode not in (None, Opcode.HALT)]
    chained = sum(1 for i in device if prog.ops[i].deps == (i - 1,))
    firsts = sum(1 for i in device if not prog.ops[i].deps)
    assert chained + firsts == len(device)
    # the scheduled program overlaps queues: some instruction depends on one further back
    sched = _mlp()
    assert any(op.deps and op.deps[-1] < i - 1 for i, op in enumerate(sched.ops))


def test_interleave_switch_sets_the_gemm_field() -> None:
    on = {dict(op.fields)["interleave"] for op in _mlp().ops if op.opcode is Opcode.GEMM}
    off = {
        dict(op.fields)["interleave"]
        for op in _mlp(CompileOptions(interleave=False)).ops
        if op.opcode is Opcode.GEMM
    }
    assert on == {TINY.interleave} and off == {1}


def test_pregen_moves_pruning_after_the_update() -> None:
    def prune_phases(options: CompileOptions) -> list[str]:
        prog = _mlp(options)
        out = []
        for i, op in enumerate(prog.ops):
            if op.opcode is Opcode.PRUNE:
                before = [o.opcode for o in prog.ops[max(0, i - 3) : i]]
                out.append("after-update" if Opcode.UPDATE in before else "other")
        return out

    assert "after-update" in prune_phases(CompileOptions())
    assert "after-update" not in prune_phases(CompileOptions(pregen=False))


def test_verifier_catches_a_missing_token() -> None:
    prog = _mlp()
    index = next(i for i, op in enumerate(prog.ops) if op.push)
    ops = list(prog.ops)
    ops[index] = dataclasses.replace(ops[index], push=(), instr=None)
    with pytest.raises(VerifyError, match=r"pop|pushed"):
        verify(prog.replace(ops=tuple(ops)), TINY)


def test_verifier_catches_a_buffer_overrun() -> None:
    prog = _mlp()
    index = next(i for i, op in enumerate(prog.ops) if op.opcode is Opcode.LOAD)
    ops = list(prog.ops)
    fields = dict(ops[index].fields) | {"buf_addr": TINY.act_buffer_entries * 4}
    ops[index] = dataclasses.replace(ops[index], fields=tuple(fields.items()), instr=None)
    with pytest.raises(VerifyError, match="overruns"):
        verify(prog.replace(ops=tuple(ops)), TINY)


def _digest(model: str, batch: int, nm: tuple[int, int], options: CompileOptions) -> str:
    prog = compile_model(get_model(model, batch), nm, TINY, options)
    words = emit(prog).words
    return hashlib.sha256(b"".join(w.to_bytes(32, "little") for w in words)).hexdigest()


_CASES = {
    "mlp-b8-2:8": ("mlp", 8, (2, 8), CompileOptions()),
    "mlp-b8-dense": ("mlp", 8, (1, 1), CompileOptions()),
    "mlp-b8-2:4-serial": ("mlp", 8, (2, 4), CompileOptions(schedule=False)),
    "mlp-b8-2:8-no-pregen": ("mlp", 8, (2, 8), CompileOptions(pregen=False)),
}


def test_golden_programs_are_unchanged() -> None:
    """Emitted binaries equal the committed digests (STYLE.md G14). After an intended
    compiler change, regenerate with ``python tests/compiler/test_schedule.py`` and say so in
    the commit."""
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == set(_CASES)
    for name, case in _CASES.items():
        assert _digest(*case) == golden[name], f"{name}: the emitted program changed"


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({k: _digest(*v) for k, v in _CASES.items()}, indent=1) + "\n")
