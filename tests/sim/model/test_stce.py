"""GEMM: exact mode against nmsat.hw.numerics and the loop nest, fast within tolerance,
events by the fold rules of sim/model/stce.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, Dataflow, Opcode
from nmsat.hw.params import load_params
from nmsat.models import nm
from nmsat.sim.model import Machine, gemm

TINY = load_params("tiny")
# Dense patterns of several group sizes and every sparse pattern of tiny.yaml.
PATTERNS = [(1, 1), (2, 2), (4, 4), (8, 8), *TINY.nm_patterns]


@st.composite
def gemm_cases(draw: st.DrawFn) -> dict[str, Any]:
    n, m = draw(st.sampled_from(PATTERNS))
    case = {
        "n": n,
        "m": m,
        "rows": draw(st.integers(1, 9)),
        "cols": draw(st.integers(1, 9)),
        "depth": m * draw(st.integers(1, 32 // m)),
        "b_trans": draw(st.integers(0, 1)),
        "accumulate": draw(st.integers(0, 1)),
        "dataflow": draw(st.sampled_from(list(Dataflow))),
        "interleave": draw(st.integers(1, TINY.interleave)),
        "a_addr": draw(st.integers(0, 100)),
        "b_addr": draw(st.integers(0, 100)),
        "c_addr": draw(st.integers(0, 100)),
        "a_pad": draw(st.integers(0, 1)),
        "b_pad": draw(st.integers(0, 1)),
        "c_pad": draw(st.integers(0, 1)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    # Packed rows that would clash in a bank are illegal: pad them all (docs/isa.md).
    fields = {k: v for k, v in case.items() if k != "seed"}
    if isa.gemm_bank_conflict(isa.make(Opcode.GEMM, **fields), TINY) is not None:
        case.update(a_pad=1, b_pad=1, c_pad=1)
        fields.update(a_pad=1, b_pad=1, c_pad=1)
    assume(isa.gemm_bank_conflict(isa.make(Opcode.GEMM, **fields), TINY) is None)
    return case


def _write_rows(machine: Machine, buffer: Buffer, addr: int, block: Any, pitch: int) -> None:
    """Write a 2-D block's rows ``pitch`` elements apart (docs/isa.md, GEMM pitches)."""
    for r, row in enumerate(np.asarray(block)):
        machine.write_buffer(buffer, addr + r * pitch, np.ascontiguousarray(row))


def _operands(case: dict[str, Any]) -> dict[str, Any]:
    """Random operands: A dense FP16 and its N:M compression, B, C."""
    rng = np.random.default_rng(case["seed"])
    rows, cols, depth = case["rows"], case["cols"], case["depth"]
    dense = numerics.to_fp16(rng.standard_normal((rows, depth)))
    values, indices = nm.compress(dense, case["n"], case["m"], axis=1)
    b = numerics.to_fp16(rng.standard_normal((depth, cols)) * 4)
    c = numerics.to_fp32(rng.standard_normal((rows, cols)))
    return {"values": values, "indices": indices, "b": b, "c": c}


def _run(case: dict[str, Any], ops: dict[str, Any], mode: str) -> np.ndarray:
    """Run the GEMM with its operands stored at their pitches; check that it writes C's rows
    only (the pad elements between them and the rest of ACC keep their contents)."""
    fields = {k: v for k, v in case.items() if k != "seed"}
    instr = isa.make(Opcode.GEMM, **fields)
    lda, ldb, ldc = isa.gemm_pitches(instr)
    machine = Machine(TINY, mode)  # type: ignore[arg-type]
    _write_rows(machine, Buffer.WGT, case["a_addr"], ops["values"], lda)
    _write_rows(machine, Buffer.IDX, case["a_addr"], ops["indices"], lda)
    b_stored = ops["b"].T if case["b_trans"] else ops["b"]
    _write_rows(machine, Buffer.ACT, case["b_addr"], b_stored, ldb)
    acc_before = np.random.default_rng(case["seed"] + 1).integers(0, 2**32, 400, np.uint32)
    machine.write_buffer(Buffer.ACC, 0, acc_before)
    _write_rows(machine, Buffer.ACC, case["c_addr"], ops["c"], ldc)
    acc_before = machine.read_buffer(Buffer.ACC, 0, 400).view(np.uint32).copy()
    machine.load_program([isa.encode(Opcode.GEMM, **fields), isa.encode(Opcode.HALT)])
    result = machine.run()
    assert result.status == "done", result.cause
    rows, cols = case["rows"], case["cols"]
    at = case["c_addr"] + ldc * np.arange(rows)[:, None] + np.arange(cols)
    acc_after = machine.read_buffer(Buffer.ACC, 0, 400).view(np.uint32)
    untouched = np.ones(400, dtype=bool)
    untouched[at.reshape(-1)] = False
    assert np.array_equal(acc_after[untouched], acc_before[untouched])
    out: np.ndarray = machine.read_buffer(Buffer.ACC, 0, 400)[at]
    return out


@given(gemm_cases())
def test_gemm_exact_equals_numerics(case: dict[str, Any]) -> None:
    ops = _operands(case)
    c = ops["c"] if case["accumulate"] else None
    if case["n"] < case["m"]:
        nm_ = (case["n"], case["m"])
        expected = numerics.gemm_nm(ops["values"], ops["indices"], *nm_, ops["b"], c)
    else:
        expected = numerics.gemm(ops["values"], ops["b"], c)
    got = _run(case, ops, "exact")
    assert numerics.fp32_bits(got).tolist() == numerics.fp32_bits(expected).tolist()


@settings(max_examples=50)
@given(gemm_cases())
def test_gemm_fast_within_tolerance_of_exact(case: dict[str, Any]) -> None:
    ops = _operands(case)
    exact = _run(case, ops, "exact")
    fast = _run(case, ops, "fast")
    dense = nm.decompress(ops["values"], ops["indices"], case["n"], case["m"], axis=1)
    scale = np.abs(dense.astype(np.float64)) @ np.abs(ops["b"].astype(np.float64))
    scale += np.abs(ops["c"]) * case["accumulate"]
    assert np.all(np.abs(fast.astype(np.float64) - exact) <= 1e-5 * scale + 1e-30)


def _loop_nest(f: dict[str, Any], wgt: Any, idx: Any, act: Any, acc: Any) -> np.ndarray:
    """docs/isa.md, GEMM, element by element with the numerics functions."""
    n, m = f["n"], f["m"]
    kc = f["depth"] * n // m
    out = np.zeros((f["rows"], f["cols"]), dtype=np.float32)
    for i in range(f["rows"]):
        for j in range(f["cols"]):
            total = acc[i * f["cols"] + j] if f["accumulate"] else np.float32(0.0)
            total = np.asarray([total], dtype=np.float32)
            for q in range(kc):
                k = (q // n) * m + (int(idx[i * kc + q]) & (m - 1)) if n < m else q
                b = act[j * f["depth"] + k] if f["b_trans"] else act[k * f["cols"] + j]
                weight = wgt[i * kc + q : i * kc + q + 1]
                product = numerics.fp16_mul_fp32(weight, np.asarray([b]))
                total = numerics.fp32_add(total, product)
            out[i, j] = total[0]
    return out


@pytest.mark.parametrize("order", ["increasing", "any"])
def test_gemm_exact_follows_the_loop_nest(order: str) -> None:
    """Indices PRUNE would write, and any others (repeated, decreasing, above m - 1)."""
    rng = np.random.default_rng(7)
    f = {"n": 2, "m": 8, "rows": 3, "cols": 3, "depth": 16, "b_trans": 1, "accumulate": 1}
    kc = f["depth"] * f["n"] // f["m"]
    wgt = numerics.to_fp16(rng.standard_normal(f["rows"] * kc))
    if order == "increasing":
        idx = np.sort(np.argsort(rng.random((f["rows"] * kc // 2, 8)), axis=1)[:, :2], axis=1)
    else:
        idx = rng.integers(0, 8, size=(f["rows"] * kc // 2, 2)) | 8  # high bit is ignored
    idx = idx.astype(np.uint8).reshape(-1)
    act = numerics.to_fp16(rng.standard_normal(f["depth"] * f["cols"]))
    acc = numerics.to_fp32(rng.standard_normal(f["rows"] * f["cols"]))
    machine = Machine(TINY, "exact")
    machine.write_buffer(Buffer.WGT, 0, wgt)
    machine.write_buffer(Buffer.IDX, 0, idx)
    machine.write_buffer(Buffer.ACT, 0, act)
    machine.write_buffer(Buffer.ACC, 0, acc)
    word = isa.encode(Opcode.GEMM, interleave=1, **f)
    machine.load_program([word, isa.encode(Opcode.HALT)])
    assert machine.run().status == "done"
    stored_idx = machine.read_buffer(Buffer.IDX, 0, idx.size)
    expected = _loop_nest(f, wgt, stored_idx, act, acc)
    got = machine.read_buffer(Buffer.ACC, 0, f["rows"] * f["cols"]).reshape(f["rows"], f["cols"])
    assert numerics.fp32_bits(got).tolist() == numerics.fp32_bits(expected).tolist()


def _events(params: Any, **fields: Any) -> Any:
    return gemm(isa.make(Opcode.GEMM, **fields), params)


def test_gemm_events_weight_stationary() -> None:
    ev = _events(TINY, n=2, m=8, rows=6, cols=5, depth=16, interleave=1, accumulate=1)
    # Kc = 4: one reduction fold (R = 4), two output-row folds (C = 4).
    assert (ev.macs_sparse, ev.macs_dense, ev.macs_dense_equivalent) == (120, 0, 480)
    assert (ev.wgt_read_bytes, ev.idx_read_bytes) == (6 * 4 * 2, 6 * 4)
    assert ev.act_read_bytes == 2 * 16 * 5 * 2
    assert (ev.acc_read_bytes, ev.acc_write_bytes) == (120, 120)
    dense = {"n": 4, "m": 4, "rows": 4, "cols": 3, "depth": 12, "interleave": 1}
    ev = _events(TINY, **dense)
    # Dense, Kc = 12: three reduction folds; ACC read for folds 2 and 3, written by all.
    assert (ev.macs_dense, ev.macs_sparse, ev.idx_read_bytes) == (144, 0, 0)
    assert (ev.acc_read_bytes, ev.acc_write_bytes) == (2 * 48, 3 * 48)
    assert ev.busy_compute_cycles == isa.cycles(isa.make(Opcode.GEMM, **dense), TINY)


def test_gemm_events_output_stationary() -> None:
    ev = _events(TINY, n=1, m=1, rows=6, cols=10, depth=8, interleave=3, dataflow=Dataflow.OS)
    # I = min(3, ceil(10 / 4)) = 3, Fi = 2, Fj = ceil(10 / 12) = 1.
    assert ev.wgt_read_bytes == 6 * 8 * 2
    assert ev.act_read_bytes == 2 * 8 * 10 * 2
    assert (ev.acc_read_bytes, ev.acc_write_bytes) == (0, 240)
    sparse = {"n": 2, "m": 4, "rows": 4, "cols": 9, "depth": 8, "interleave": 1}
    ev = _events(TINY, dataflow=Dataflow.OS, accumulate=1, **sparse)
    # I = 1, Fi = 1, Fj = 3: A and its indices read three times.
    assert (ev.wgt_read_bytes, ev.idx_read_bytes) == (3 * 4 * 4 * 2, 3 * 4 * 4)
    assert (ev.acc_read_bytes, ev.acc_write_bytes) == (144, 144)


@given(
    st.sampled_from([2, 4, 8]),
    st.sampled_from([(1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (3, 8)]),
    st.integers(1, 12),
)
def test_gemm_ws_activation_reads_count_split_groups(rows_r: int, nm_: Any, groups: int) -> None:
    n, m = nm_
    params = TINY.replace(array_rows=rows_r, nm_patterns=((n, m),))
    depth = groups * m
    kc = groups * n
    # Brute force: every reduction fold reads all m activations of each group it touches.
    dense_rows = sum(
        m * len({q // n for q in range(start, min(start + rows_r, kc))})
        for start in range(0, kc, rows_r)
    )
    ev = _events(params, n=n, m=m, rows=1, cols=1, depth=depth, interleave=1)
    assert ev.act_read_bytes == dense_rows * 2
