"""PRUNE: FF and BP against a direct loop nest of docs/isa.md (ties, signed zeros, NaN)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, Direction, Opcode
from nmsat.hw.params import load_params
from nmsat.sim.model import Machine, prune
from nmsat.sim.model.sore import bitonic_compares

TINY = load_params("tiny")
PATTERNS = [(1, 1), (4, 4), (8, 8), *TINY.nm_patterns]
# Few distinct magnitudes, so that ties (and +0/-0, x/-x) are frequent.
SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-40, np.inf, -np.inf, np.nan, 3.0])


def _loop_nest(
    src: np.ndarray, n: int, m: int, direction: Direction
) -> tuple[list[int], list[int]]:
    """docs/isa.md, PRUNE: FP16 bit patterns and indices of the kept values, in order."""
    rows, cols = src.shape
    outer, inner = (rows, cols) if direction is Direction.FF else (cols, rows)
    size = outer * inner * n // m
    wgt, idx = [0] * size, [0] * size
    for o in range(outer):
        for g in range(inner // m):
            group = [
                src[o, g * m + u] if direction is Direction.FF else src[g * m + u, o]
                for u in range(m)
            ]
            keys = [int(np.float32(v).view(np.uint32)) & 0x7FFF_FFFF for v in group]
            keep = sorted(sorted(range(m), key=lambda u: (-keys[u], u))[:n])
            for t, u in enumerate(keep):
                e = o * (inner * n // m) + g * n + t
                wgt[e] = int(numerics.fp16_bits(numerics.to_fp16(np.float32(group[u]))))
                idx[e] = u
    return wgt, idx


@given(
    st.sampled_from(PATTERNS),
    st.sampled_from(list(Direction)),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.integers(0, 64),
)
def test_prune_equals_loop_nest(
    nm_: Any, direction: Direction, a: int, b: int, seed: int, dst: int
) -> None:
    n, m = nm_
    rng = np.random.default_rng(seed)
    rows, cols = (a, b * m) if direction is Direction.FF else (a * m, b)
    src = rng.choice(SPECIALS, size=(rows, cols)).astype(np.float32)
    src *= rng.choice([1.0, 1.0, 1.5], size=src.shape).astype(np.float32)
    machine = Machine(TINY, "exact")
    machine.write_buffer(Buffer.VEC, 5, src)
    instr = {"direction": direction, "n": n, "m": m, "rows": rows, "cols": cols}
    instr |= {"src_addr": 5, "dst_addr": dst}
    machine.load_program([isa.encode(Opcode.PRUNE, **instr), isa.encode(Opcode.HALT)])
    assert machine.run().status == "done"
    wgt, idx = _loop_nest(src, n, m, direction)
    got_wgt = machine.read_buffer(Buffer.WGT, dst, len(wgt)).view(np.uint16)
    got_idx = machine.read_buffer(Buffer.IDX, dst, len(idx))
    assert got_wgt.tolist() == wgt
    assert got_idx.tolist() == [u & ((1 << TINY.index_bits) - 1) for u in idx]


def test_bitonic_compares() -> None:
    # Batcher: log2(m) * (log2(m) + 1) / 2 stages of m / 2 comparators.
    assert [bitonic_compares(m) for m in (1, 2, 4, 8, 16)] == [0, 1, 6, 24, 80]


def test_prune_events() -> None:
    instr = isa.make(Opcode.PRUNE, direction=Direction.BP, n=2, m=8, rows=16, cols=8)
    ev = prune(instr, TINY)
    assert (ev.sore_groups, ev.sore_compares) == (16, 16 * 24)
    assert (ev.vec_read_bytes, ev.wgt_write_bytes, ev.idx_write_bytes) == (512, 64, 32)
    assert ev.busy_prune_cycles == isa.cycles(instr, TINY)
