"""Tests of nmsat.hw.stce.pe: the STCE processing element against nmsat.hw.numerics.

Every run streams many operations through one simulation with the schedule the array will
use (one operation per cycle, no stall) and compares bit patterns with
:func:`~nmsat.hw.numerics.gemm` / :func:`~nmsat.hw.numerics.gemm_nm`:

- output-stationary: interleaved accumulators round robin, operands of one N:M group per
  cycle, several folds whose initial sums come in and results go out through the shadow
  chain while the next fold computes;
- weight-stationary: a column of PEs chained through ``psum_in``/``psum_out``, skewed by the
  adder latency, double-buffered weights switched without a bubble; the sums leave the column
  exactly ``1 + R * L`` cycles after their operations enter the top.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.params import SATParams, load_params
from nmsat.hw.stce import ProcessingElement

U16 = NDArray[np.uint16]
U32 = NDArray[np.uint32]


def _params(adder_latency: int, interleave: int) -> SATParams:
    return load_params("tiny").replace(adder_latency=adder_latency, interleave=interleave)


def _fp16(rng: np.random.Generator, shape: tuple[int, ...], specials: bool = False) -> U16:
    """FP16 bit patterns: moderate magnitudes of both signs (sums cancel and round)."""
    exponent = rng.integers(12, 19, size=shape)
    bits = (rng.integers(0, 2, size=shape) << 15) | (exponent << 10) | rng.integers(0, 1024, shape)
    if specials:
        raw = rng.integers(0, 1 << 16, size=shape)
        pick = rng.random(shape) < 0.15
        bits = np.where(pick, raw, bits)
        corners = np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7E00, 0x7BFF])
        pick = rng.random(shape) < 0.05
        bits = np.where(pick, rng.choice(corners, size=shape), bits)
    return bits.astype(np.uint16)


def _fp32(rng: np.random.Generator, shape: tuple[int, ...]) -> U32:
    """FP32 bit patterns for initial sums: moderate magnitudes, some zeros and subnormals."""
    exponent = rng.integers(120, 136, size=shape)
    bits = (
        (rng.integers(0, 2, size=shape) << 31) | (exponent << 23) | rng.integers(0, 1 << 23, shape)
    )
    corners = np.array([0x0000_0000, 0x8000_0000, 0x8000_0001, 0x007F_FFFF])
    pick = rng.random(shape) < 0.1
    return np.where(pick, rng.choice(corners, size=shape), bits).astype(np.uint32)


def _lanes_word(values: Sequence[int]) -> int:
    return sum(int(v) << (16 * lane) for lane, v in enumerate(values))


def _expected(
    values: U16, indices: NDArray[np.uint8], b: U16, c: U32 | None, nm: tuple[int, int] | None
) -> U32:
    """One output row: gemm (dense) or gemm_nm of ``values`` (one row of A) and ``b``."""
    a = nx.fp16_from_bits(values[None, :])
    b16 = nx.fp16_from_bits(b)
    c32 = None if c is None else nx.fp32_from_bits(c[None, :])
    if nm is None:
        out = nx.gemm(a, b16, c32)
    else:
        out = nx.gemm_nm(a, indices[None, :], nm[0], nm[1], b16, c32)
    return nx.fp32_bits(out)[0]


def _nm_indices(rng: np.random.Generator, groups: int, n: int, m: int) -> NDArray[np.uint8]:
    rows = [np.sort(rng.choice(m, size=n, replace=False)) for _ in range(groups)]
    return np.concatenate(rows).astype(np.uint8)


@dataclasses.dataclass
class _Fold:
    """One output-stationary fold of a PE: I outputs over a reduction of Kc steps."""

    values: U16  # [Kc] the PE's row of A (compressed in N:M mode)
    indices: NDArray[np.uint8]  # [Kc]
    b: U16  # [K, I]
    c: U32 | None  # [I] initial sums; None: start from +0 (acc_zero)


def _make_folds(
    rng: np.random.Generator,
    count: int,
    steps: int,
    interleave: int,
    nm: tuple[int, int] | None,
    specials: bool = False,
    zero_start: Sequence[int] = (),
) -> list[_Fold]:
    folds = []
    for f in range(count):
        if nm is None:
            depth, indices = steps, rng.integers(0, 8, size=steps).astype(np.uint8)
        else:
            n, m = nm
            depth, indices = steps // n * m, _nm_indices(rng, steps // n, n, m)
        folds.append(
            _Fold(
                values=_fp16(rng, (steps,), specials),
                indices=indices,
                b=_fp16(rng, (depth, interleave), specials),
                c=None if f in zero_start else _fp32(rng, (interleave,)),
            )
        )
    return folds


def _run_os(params: SATParams, folds: list[_Fold], nm: tuple[int, int] | None) -> list[U32]:
    """Run output-stationary folds back to back on one PE; return each fold's I sums.

    Round robin over the I accumulators, one operation per cycle when I >= L (else L cycles
    per round). Fold f's initial sums enter the shadow chain during fold f-1 and swap in with
    fold f's first operations, which swap fold f-1's sums out; those leave through the chain
    during fold f. A fold without initial sums starts from +0 with ``acc_zero`` (its preload
    slots carry junk). After the last fold, I swap-only operations and I shifts drain it.
    """
    dut = ProcessingElement(params)
    lat, ilv = params.adder_latency, params.interleave
    round_cycles = max(ilv, lat)
    steps = len(folds[0].values)
    fold_cycles = steps * round_cycles
    assert fold_cycles >= 2 * ilv, "the shadow chain needs 2 * I cycles per fold"
    rng = np.random.default_rng(7)
    cycles: dict[int, dict[str, Any]] = {}
    captures: dict[int, tuple[int, int]] = {}  # cycle -> (fold, accumulator) leaving

    def at(cycle: int) -> dict[str, Any]:
        return cycles.setdefault(cycle, {})

    def shifts(start: int, preload: U32 | None, drained_fold: int | None) -> None:
        junk = rng.integers(0, 1 << 32, size=ilv)
        for k in range(ilv):
            port = at(start + k)
            port["shadow_shift"] = 1
            port["shadow_in"] = int((junk if preload is None else preload)[ilv - 1 - k])
            if drained_fold is not None:
                captures[start + k] = (drained_fold, ilv - 1 - k)

    shifts(0, folds[0].c, None)
    start = ilv
    for f, fold in enumerate(folds):
        for q in range(steps):
            # Even steps take the weight straight from w_value (bypass), odd steps from the
            # shadow weight loaded in the cycle before (when that cycle does not switch).
            preload_weight = q % 2 == 1 and (ilv > 1 or round_cycles > 1)
            if preload_weight:
                port = at(start + q * round_cycles - 1)
                port.update(w_load=1, w_value=int(fold.values[q]), w_index=int(fold.indices[q]))
            for j in range(ilv):
                port = at(start + q * round_cycles + j)
                if nm is None:
                    lanes = [int(fold.b[q, j]), *rng.integers(0, 1 << 16, size=7)]
                    port["dense"] = 1
                else:
                    n, m = nm
                    group = fold.b[q // n * m : q // n * m + m, j]
                    lanes = [*map(int, group), *rng.integers(0, 1 << 16, size=8 - m)]
                port.update(mac=1, acc_sel=j, acc_swap=int(q == 0), acts=_lanes_word(lanes))
                port["acc_zero"] = int(q == 0 and fold.c is None)
                if j == 0:
                    port["next_weight"] = 1
                    if not preload_weight:
                        port.update(
                            w_load=1, w_value=int(fold.values[q]), w_index=int(fold.indices[q])
                        )
        following = folds[f + 1].c if f + 1 < len(folds) else None
        shifts(start + ilv + 1, following, f - 1 if f else None)
        start += fold_cycles
    for j in range(ilv):  # drain the last fold
        at(start + j).update(acc_swap=1, acc_sel=j)
    shifts(start + ilv + 1, None, len(folds) - 1)
    end = start + 2 * ilv + 2

    results = [np.zeros(ilv, dtype=np.uint32) for _ in folds]
    names = ("w_load", "w_value", "w_index", "mac", "next_weight", "chained", "acc_sel")
    names += ("acc_swap", "acc_zero", "dense", "psum_in", "shadow_shift", "shadow_in")

    async def bench(ctx: Any) -> None:
        for cycle in range(end):
            port = cycles.get(cycle, {})
            for name in names:
                ctx.set(getattr(dut, name), port.get(name, 0))
            ctx.set(dut.acts.as_value(), port.get("acts", 0))
            assert not ctx.get(dut.psum_valid)
            if cycle in captures:
                fold, acc = captures[cycle]
                results[fold][acc] = ctx.get(dut.shadow_out)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


OS_CASES = [
    # (adder_latency, interleave): I >= L streams one MAC per cycle; I < L waits L per round.
    (3, 3),
    (3, 4),
    (4, 4),
    (1, 1),
    (3, 1),
    (4, 2),
]


@pytest.mark.sim
@pytest.mark.parametrize(("adder_latency", "interleave"), OS_CASES)
@pytest.mark.parametrize("nm", [None, (2, 4), (1, 8), (4, 8)], ids=str)
def test_os_interleaved_accumulation_matches_gemm(
    adder_latency: int, interleave: int, nm: tuple[int, int] | None
) -> None:
    params = _params(adder_latency, interleave)
    rng = np.random.default_rng([adder_latency, interleave, 0 if nm is None else nm[1] + nm[0]])
    steps = 8
    folds = _make_folds(rng, 3, steps, interleave, nm, zero_start=[1])
    got = _run_os(params, folds, nm)
    for fold, result in zip(folds, got, strict=True):
        want = _expected(fold.values, fold.indices, fold.b, fold.c, nm)
        np.testing.assert_array_equal(result, want)


@pytest.mark.sim
def test_os_special_values_match_gemm() -> None:
    """NaN, infinities, signed zeros and FP16/FP32 subnormals in every operand."""
    params = _params(3, 3)
    rng = np.random.default_rng(11)
    for nm in (None, (2, 4)):
        folds = _make_folds(rng, 4, 8, 3, nm, specials=True, zero_start=[0])
        got = _run_os(params, folds, nm)
        for fold, result in zip(folds, got, strict=True):
            want = _expected(fold.values, fold.indices, fold.b, fold.c, nm)
            np.testing.assert_array_equal(result, want)


@pytest.mark.sim
def test_interleaved_equals_sequential() -> None:
    """The same outputs computed round robin (I = L, no stall) and one at a time (I = 1)."""
    rng = np.random.default_rng(5)
    lat = 3
    folds = _make_folds(rng, 2, 6, lat, (2, 4))
    interleaved = _run_os(_params(lat, lat), folds, (2, 4))
    sequential = []
    for fold in folds:
        singles = [
            _Fold(fold.values, fold.indices, fold.b[:, j : j + 1], fold.c[j : j + 1])
            for j in range(lat)
        ]
        sums = _run_os(_params(lat, 1), singles, (2, 4))
        sequential.append(np.concatenate(sums))
    for a, b in zip(interleaved, sequential, strict=True):
        np.testing.assert_array_equal(a, b)


class _Column(wiring.Component):
    """A weight-stationary column for the test: PE r's psum_in is PE r-1's psum_out.

    The testbench drives the PEs' other ports directly, each at its row's skewed cycle.
    """

    def __init__(self, params: SATParams, rows: int) -> None:
        self.pes = [ProcessingElement(params) for _ in range(rows)]
        super().__init__({"psum_in": In(32)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for r, pe in enumerate(self.pes):
            m.submodules[f"pe{r}"] = pe
        m.d.comb += self.pes[0].psum_in.eq(self.psum_in)
        for above, below in zip(self.pes, self.pes[1:], strict=False):
            m.d.comb += below.psum_in.eq(above.psum_out)
        return m


def _run_ws(
    params: SATParams,
    weights: list[tuple[U16, NDArray[np.uint8]]],
    b: list[U16],
    c: list[U32],
    nm: tuple[int, int] | None,
) -> list[U32]:
    """Stream folds through a column of R = len(weights[0][0]) PEs; return each fold's sums.

    Vector g (fold f, column j) enters row r in cycle ``g + r * L``; the first vector of a fold
    switches to the weights loaded into the shadow registers during the previous fold (odd
    folds load in the switching cycle itself, through the bypass). Its sum must leave the
    bottom in cycle ``g + 1 + R * L`` exactly, one per cycle.
    """
    rows = len(weights[0][0])
    lat = params.adder_latency
    cols = b[0].shape[1]
    col = _Column(params, rows)
    rng = np.random.default_rng(3)
    cycles: dict[tuple[int, int], dict[str, Any]] = {}  # (cycle, row) -> ports
    top: dict[int, int] = {}
    exits: dict[int, tuple[int, int]] = {}
    for f, (values, indices) in enumerate(weights):
        for r in range(rows):
            switch = f * cols + r * lat + rows  # leave `rows` cycles for the first loads
            load_at = switch if f % 2 else switch - 1
            cycles.setdefault((load_at, r), {}).update(
                w_load=1, w_value=int(values[r]), w_index=int(indices[r])
            )
        for j in range(cols):
            g = f * cols + j
            for r in range(rows):
                if nm is None:
                    lanes = [int(b[f][r, j]), *rng.integers(0, 1 << 16, size=7)]
                else:
                    n, m = nm
                    base = r // n * m
                    group = b[f][base : base + m, j]
                    lanes = [*map(int, group), *rng.integers(0, 1 << 16, size=8 - m)]
                port = cycles.setdefault((g + r * lat + rows, r), {})
                port.update(mac=1, chained=1, next_weight=int(j == 0), acts=_lanes_word(lanes))
                port["dense"] = int(nm is None)
            top[g + 1 + rows] = int(c[f][j])
            exits[g + 1 + rows + rows * lat] = (f, j)
    end = max(exits) + 3
    results = [np.zeros(cols, dtype=np.uint32) for _ in weights]
    names = ("w_load", "w_value", "w_index", "mac", "next_weight", "chained", "dense")
    bottom = col.pes[-1]

    async def bench(ctx: Any) -> None:
        for cycle in range(end):
            for r, pe in enumerate(col.pes):
                port = cycles.get((cycle, r), {})
                for name in names:
                    ctx.set(getattr(pe, name), port.get(name, 0))
                ctx.set(pe.acts.as_value(), port.get("acts", 0))
            ctx.set(col.psum_in, top.get(cycle, 0))
            valid = ctx.get(bottom.psum_valid)
            assert valid == (cycle in exits), f"psum_valid = {valid} in cycle {cycle}"
            if valid:
                fold, j = exits[cycle]
                results[fold][j] = ctx.get(bottom.psum_out)
            await ctx.tick()

    sim = Simulator(col)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.sim
@pytest.mark.parametrize("adder_latency", [1, 3, 4])
@pytest.mark.parametrize("nm", [None, (2, 4), (1, 8)], ids=str)
def test_ws_chain_matches_gemm(adder_latency: int, nm: tuple[int, int] | None) -> None:
    params = _params(adder_latency, 2)
    rng = np.random.default_rng([adder_latency, 0 if nm is None else sum(nm)])
    rows, cols, folds = 4, 12, 3
    depth = rows if nm is None else rows // nm[0] * nm[1]
    weights = []
    for _ in range(folds):
        if nm is None:
            weights.append((_fp16(rng, (rows,)), rng.integers(0, 8, rows).astype(np.uint8)))
        else:
            weights.append((_fp16(rng, (rows,)), _nm_indices(rng, rows // nm[0], *nm)))
    b = [_fp16(rng, (depth, cols)) for _ in range(folds)]
    c = [_fp32(rng, (cols,)) for _ in range(folds)]
    got = _run_ws(params, weights, b, c, nm)
    for f in range(folds):
        want = _expected(weights[f][0], weights[f][1], b[f], c[f], nm)
        np.testing.assert_array_equal(got[f], want)


def test_ports_follow_params() -> None:
    params = _params(4, 3)
    pe = ProcessingElement(params)
    assert pe.latency_cycles == 5
    assert pe.params is params
    assert len(pe.acts.as_value()) == 16 * params.m_max
    assert len(pe.w_index) == params.index_bits
    assert len(pe.acc_sel) == 2
    Fragment.get(pe, None)  # an unelaborated Elaboratable warns when collected


@pytest.mark.sim
@pytest.mark.parametrize("adder_latency", [3, 4])
def test_converts_to_verilog(adder_latency: int) -> None:
    pe = ProcessingElement(_params(adder_latency, adder_latency))
    text = verilog.convert(pe, name="pe")
    assert "module pe" in text
    assert "psum_out" in text
