# amaranth: UnusedElaboratable=no
# Ref: hw/stce/array.py (STCE docstring, "Buffer ports": every edge reads its group of one
#      vector in the same cycle); docs/isa.md, section GEMM (B's layouts and row pitches).
"""The STCE's activation reads can be served by a banked ACT buffer: in every cycle of a GEMM
program the *distinct* addresses that the enabled ``act_read`` ports read fall in distinct
banks (element ``e`` in bank ``e % banks``), while results and cycles still match the model
(the harness in conftest.py records the reads and checks the rest).

- Weight-stationary: all rows read the groups of one vector of B in the same cycle, so with
  B transposed (``b_trans``: a vector's k are consecutive) or at an odd row pitch
  (``b_pad``: consecutive k an odd distance apart) the R groups, ``R * m_max`` elements at
  most, fall in distinct banks modulo ``R * m_max``. Several lanes may read one address
  (rows sharing an N:M group).
- Output-stationary, dense: all columns read in the same cycle, C consecutive j of one k,
  a row of B (``b_trans = 0``) or a column at an odd pitch (``b_trans = 1``, ``b_pad``):
  distinct banks modulo C.
- Negative control: weight-stationary with B packed row-major and ``cols`` a multiple of
  the bank count puts the rows' distinct k of one vector in one bank, so the check fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from nmsat.hw import isa
from nmsat.hw.isa import Dataflow, Opcode
from nmsat.hw.params import SATParams, load_params

TINY = load_params("tiny")

PARAMS = {
    "tiny": TINY,
    # n not dividing R: the rows' groups start at every phase within a group.
    "odd-nm": TINY.replace(nm_patterns=((3, 4), (1, 2), (3, 8)), adder_latency=2),
}


def _clashes(reads: list[list[tuple[int, int]]], banks: int) -> list[tuple[int, list[int]]]:
    """The cycles in which two distinct addresses fall in one bank, with those addresses."""
    found = []
    for cycle, ports in enumerate(reads):
        by_bank: dict[int, set[int]] = {}
        for _port, addr in ports:
            by_bank.setdefault(addr % banks, set()).add(addr)
        clash = sorted(a for same in by_bank.values() if len(same) > 1 for a in same)
        if clash:
            found.append((cycle, clash))
    return found


def _edges_per_cycle(reads: list[list[tuple[int, int]]], params: SATParams) -> int:
    """The most array edges that read in one cycle (the check is vacuous below 2)."""
    return max((len({port // params.m_max for port, _ in ports}) for ports in reads), default=0)


@pytest.mark.sim
@pytest.mark.parametrize("name", list(PARAMS))
def test_ws_reads_fall_in_distinct_banks(stce, name: str) -> None:
    """WS, every pattern (dense m = 1..16 and the N:M), B transposed (either pitch) or
    row-major at an odd pitch: distinct banks modulo ``R * m_max`` in every cycle."""
    params = PARAMS[name]
    rng = np.random.default_rng(list(map(ord, name)))
    program = []
    for nm in stce.patterns(params):
        for b_trans in (1, 0):
            pads = (
                int(rng.integers(2)),
                int(rng.integers(2)) | (1 - b_trans),
                int(rng.integers(2)),
            )
            program.append(stce.gemm(params, rng, Dataflow.WS, nm, pads=pads, b_trans=b_trans))
    reads: list[list[tuple[int, int]]] = []
    stce.run(params, [(stce.memory(params, 3), program)], act_reads=reads)
    assert _edges_per_cycle(reads, params) == params.array_rows
    banks = params.array_rows * params.m_max
    clashes = _clashes(reads, banks)
    assert not clashes, f"{len(clashes)} cycles, first {clashes[:3]}, banks {banks}"


@pytest.mark.sim
def test_os_reads_fall_in_distinct_banks(stce) -> None:
    """OS, dense m = 1..16, B row-major (either pitch) or transposed at an odd pitch:
    distinct banks modulo C in every cycle."""
    rng = np.random.default_rng(5)
    program = []
    for m in (1, 2, 4, 8, 16):
        for b_trans in (0, 1):
            pads = (int(rng.integers(2)), int(rng.integers(2)) | b_trans, int(rng.integers(2)))
            program.append(stce.gemm(TINY, rng, Dataflow.OS, (m, m), pads=pads, b_trans=b_trans))
    reads: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 5), program)], act_reads=reads)
    assert _edges_per_cycle(reads, TINY) == TINY.array_cols
    clashes = _clashes(reads, TINY.array_cols)
    assert not clashes, f"{len(clashes)} cycles, first {clashes[:3]}, banks {TINY.array_cols}"


@pytest.mark.sim
def test_packed_row_major_b_clashes(stce) -> None:
    """Negative control: WS, B row-major and packed with ``cols = 32``, dense: the rows'
    k of one vector are 32 elements apart, one bank of 32."""
    banks = TINY.array_rows * TINY.m_max
    instr = isa.make(
        Opcode.GEMM,
        n=1,
        m=1,
        dataflow=Dataflow.WS,
        accumulate=0,
        b_trans=0,
        interleave=1,
        rows=3,
        cols=banks,
        depth=2 * TINY.array_rows,
        a_addr=5,
        b_addr=9,
        c_addr=0,
        a_pad=0,
        b_pad=0,
        c_pad=0,
    )
    reads: list[list[tuple[int, int]]] = []
    stce.run(TINY, [(stce.memory(TINY, 9), [instr])], act_reads=reads)
    assert _clashes(reads, banks)
