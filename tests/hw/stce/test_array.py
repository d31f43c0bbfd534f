# amaranth: UnusedElaboratable=no
"""Tests of nmsat.hw.stce.array: the STCE against the Python model, bit for bit and cycle by
cycle, on tiny.yaml (4 x 4 PEs, adder latency 3, interleave 3, N:M 1:4 2:4 1:8 2:8 4:8).

Every simulation runs programs of GEMMs back to back (each ``start`` in the cycle of the
previous ``done``) from random buffer contents, and checks each GEMM's cycles against
``isa.cycles`` and the whole ACC buffer against :func:`nmsat.sim.model.gemm` in exact mode
(the harness is in conftest.py). Shapes span a few folds in every dimension; every pattern
runs in both dataflows with random ``accumulate``, ``b_trans``, ``interleave`` and operand
row pitches (``a_pad``, ``b_pad``, ``c_pad``); one test runs every combination of the pads on
shapes whose rows are of even length, so that each padded pitch differs from the packed one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmsat.hw import isa
from nmsat.hw.isa import Buffer, Dataflow, Opcode
from nmsat.hw.params import load_params
from nmsat.hw.stce import STCE

TINY = load_params("tiny")


@pytest.mark.sim
@pytest.mark.parametrize("dataflow", list(Dataflow), ids=lambda d: d.name)
def test_every_pattern_matches_model(stce, dataflow: Dataflow) -> None:
    """Each pattern of tiny (dense m = 1..16, and its five N:M) once per batch, two batches
    with different data, the second with many special values."""
    batches = []
    for seed, specials in ((1, 0.05), (2, 0.4)):
        rng = np.random.default_rng([seed, dataflow.value])
        program = [stce.gemm(TINY, rng, dataflow, nm) for nm in stce.patterns(TINY)]
        batches.append((stce.memory(TINY, seed, specials), program))
    stce.run(TINY, batches)


@pytest.mark.sim
def test_dependent_gemms_back_to_back(stce) -> None:
    """GEMMs accumulating onto the previous one's result, dataflows alternating, each start
    in the previous done cycle: every write must be visible at done. Then the same program
    with idle cycles between the GEMMs."""
    rng = np.random.default_rng(7)
    program = []
    for k in range(6):
        dataflow = (Dataflow.WS, Dataflow.OS)[k % 2]
        nm = stce.patterns(TINY)[int(rng.integers(len(stce.patterns(TINY))))]
        # Same output block: rows, cols and c_addr of the first GEMM.
        instr = stce.gemm(TINY, rng, dataflow, nm, c_addr=100, accumulate=int(k > 0))
        if program:
            f = instr.fields
            first = program[0]
            f.update(rows=first["rows"], cols=first["cols"], c_pad=first["c_pad"], c_addr=100)
            instr = stce.fit(TINY, isa.make(Opcode.GEMM, **f))
        program.append(instr)
    stce.run(TINY, [(stce.memory(TINY, 7), program)])
    stce.run(TINY, [(stce.memory(TINY, 8), program[:3])], gap_cycles=2)


@st.composite
def _programs(draw: st.DrawFn) -> tuple[int, list[isa.Instruction]]:
    """A data seed and one to three GEMMs drawn field by field (the test lowers addresses
    that a padded operand would push past its buffer's end: ``stce.fit``)."""
    patterns = [(m, m) for m in (1, 2, 4, 8, 16)] + list(TINY.nm_patterns)
    program = []
    for _ in range(draw(st.integers(1, 3))):
        n, m = draw(st.sampled_from(patterns))
        rows = draw(st.integers(1, 12))
        cols = draw(st.integers(1, 14))
        depth = m * draw(st.integers(1, max(1, 14 // n)))
        kc = depth * n // m
        program.append(
            isa.make(
                Opcode.GEMM,
                n=n,
                m=m,
                dataflow=draw(st.sampled_from(list(Dataflow))),
                accumulate=draw(st.integers(0, 1)),
                b_trans=draw(st.integers(0, 1)),
                interleave=draw(st.integers(1, TINY.interleave)),
                rows=rows,
                cols=cols,
                depth=depth,
                a_addr=draw(st.integers(0, isa.buffer_entries(Buffer.WGT, TINY) - rows * kc)),
                b_addr=draw(st.integers(0, isa.buffer_entries(Buffer.ACT, TINY) - depth * cols)),
                c_addr=draw(st.integers(0, isa.buffer_entries(Buffer.ACC, TINY) - rows * cols)),
                a_pad=draw(st.integers(0, 1)),
                b_pad=draw(st.integers(0, 1)),
                c_pad=draw(st.integers(0, 1)),
            )
        )
    return draw(st.integers(0, 2**32 - 1)), program


@pytest.mark.sim
@settings(max_examples=4, deadline=None)
@given(_programs())
def test_drawn_programs_match_model(stce, drawn: tuple[int, list[isa.Instruction]]) -> None:
    seed, program = drawn
    program = [stce.fit(TINY, instr) for instr in program]
    stce.run(TINY, [(stce.memory(TINY, seed), program)])


@pytest.mark.sim
@pytest.mark.parametrize("dataflow", list(Dataflow), ids=lambda d: d.name)
def test_every_pad_combination_matches_model(stce, dataflow: Dataflow) -> None:
    """Dense and 2:4, both B layouts, all eight (a_pad, b_pad, c_pad): A, B and C rows of
    even length (Kc = 6, depth 6 or 12, cols = 10), so each pad makes the pitch one longer,
    on shapes of two folds in every dimension (WS: rows 6 > C and Kc > R; OS: rows 6 > R and
    cols 10 > C * I with I = 2), and accumulate in half of them (C read with its pitch).
    Every other element of ACC must keep its value, the gaps between C's padded rows too."""
    rng = np.random.default_rng([11, dataflow.value])
    program = []
    for (n, m), b_trans, pads in itertools.product(
        ((1, 1), (2, 4)), (0, 1), itertools.product((0, 1), repeat=3)
    ):
        instr = isa.make(
            Opcode.GEMM,
            n=n,
            m=m,
            dataflow=dataflow,
            accumulate=(b_trans + pads[0] + pads[1]) % 2,
            b_trans=b_trans,
            interleave=2,
            rows=6,
            cols=10,
            depth=6 * m // n,
            a_addr=int(rng.integers(0, isa.buffer_entries(Buffer.WGT, TINY))),
            b_addr=int(rng.integers(0, isa.buffer_entries(Buffer.ACT, TINY))),
            c_addr=int(rng.integers(0, isa.buffer_entries(Buffer.ACC, TINY))),
            a_pad=pads[0],
            b_pad=pads[1],
            c_pad=pads[2],
        )
        # The shape makes every padded pitch one longer than the packed one.
        packed = isa.gemm_pitches(
            isa.make(Opcode.GEMM, **{**instr.fields, "a_pad": 0, "b_pad": 0, "c_pad": 0})
        )
        assert isa.gemm_pitches(instr) == tuple(
            p + pad for p, pad in zip(packed, pads, strict=True)
        )
        program.append(stce.fit(TINY, instr))
    stce.run(TINY, [(stce.memory(TINY, 11 + dataflow.value), program)])


def test_ports_follow_params() -> None:
    """One-element ports: an activation group per array edge, A per row (and weight bus),
    partial sums per column."""
    for name, act, wgt, acc in (("tiny", 32, 4, 4), ("vcu1525", 256, 32, 32)):
        params = load_params(name)
        dut = STCE(params)
        assert dut.params is params
        assert len(dut.act_read) == dut.act_port_count == act
        assert len(dut.wgt_read) == len(dut.idx_read) == wgt
        assert len(dut.acc_read) == len(dut.acc_write) == acc
        for ports, entries, bits in (
            (dut.act_read, params.act_buffer_entries, 16),
            (dut.wgt_read, params.wgt_buffer_entries, 16),
            (dut.idx_read, params.wgt_buffer_entries, params.index_bits),
            (dut.acc_read, params.acc_buffer_entries, 32),
            (dut.acc_write, params.acc_buffer_entries, 32),
        ):
            assert len(ports[0].data.as_value()) == bits
            assert len(ports[0].addr) == (entries - 1).bit_length()
    wide = STCE(TINY.replace(array_cols=8))
    assert len(wide.wgt_read) == 4 * 2  # two weight buses per row when C = 2 R
    assert len(wide.act_read) == 8 * TINY.m_max
