# amaranth: UnusedElaboratable=no
"""BankedBuffer against a Python array of elements, in the Amaranth simulator.

Wide and gather/scatter ports in random mixes, lane addresses that keep the no-conflict rule
(odd-stride or stride-1 runs with broadcast duplicates, random sets of distinct banks) and
some that break it; the conflict outputs against the rule itself.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape
from amaranth.sim import Simulator

from nmsat.hw.mem import (
    BankedBuffer,
    GatherReadPortSignature,
    PortKind,
    PortSpec,
    ScatterWritePortSignature,
    WideReadPortSignature,
    WideWritePortSignature,
)
from nmsat.hw.params import load_params

wide, gather, scatter = PortSpec.wide, PortSpec.gather, PortSpec.scatter


def _pack(values: list[int], bits: int) -> int:
    return sum(v << (bits * j) for j, v in enumerate(values))


def _unpack(word: int, bits: int, lanes: int) -> list[int]:
    return [(word >> (bits * j)) & ((1 << bits) - 1) for j in range(lanes)]


def _conflict(addrs: list[int], mask: int, banks: int) -> bool:
    """The no-conflict rule itself: two enabled lanes in one bank at different rows."""
    rows: dict[int, int] = {}
    for lane, addr in enumerate(addrs):
        if mask >> lane & 1 and rows.setdefault(addr % banks, addr // banks) != addr // banks:
            return True
    return False


@dataclass
class _Lanes:
    """One cycle of a gather or scatter port: lane addresses and enable mask."""

    addrs: list[int]
    mask: int


def _safe_elements(rng: np.random.Generator, count: int, banks: int, depth: int) -> list[int]:
    """Up to ``count`` distinct elements in distinct banks, as the compiler lays them out.

    Half the time a run from a random start with stride 1 or an odd stride (any ``banks``
    consecutive steps of an odd stride reach distinct banks), else random distinct banks at
    random rows.
    """
    count = min(count, banks)
    if rng.random() < 0.5:
        stride = 1 if rng.random() < 0.3 else int(rng.integers(0, 4 * banks)) * 2 + 1
        start = int(rng.integers(0, depth))
        return [(start + i * stride) % depth for i in range(count)]
    chosen = rng.permutation(banks)[:count]
    rows = depth // banks
    return [int(rng.integers(0, rows)) * banks + int(bank) for bank in chosen]


def _safe_lanes(
    rng: np.random.Generator, lanes: int, banks: int, depth: int, *, broadcast: bool
) -> _Lanes:
    """Conflict-free lane addresses; with ``broadcast``, lanes may repeat an element.

    Disabled lanes get fully random addresses: they must not matter.
    """
    elements = _safe_elements(rng, int(rng.integers(1, lanes + 1)), banks, depth)
    addrs = list(elements[:lanes])
    while len(addrs) < lanes:
        addrs.append(elements[int(rng.integers(0, len(elements)))] if broadcast else -1)
    order = rng.permutation(lanes) if rng.random() < 0.5 else np.arange(lanes)
    addrs = [addrs[int(i)] for i in order]
    mask = 0
    for lane in range(lanes):
        if addrs[lane] >= 0 and rng.random() < 0.85:
            mask |= 1 << lane
        if not mask >> lane & 1:
            addrs[lane] = int(rng.integers(0, depth))
    return _Lanes(addrs, mask)


def _break_rule(rng: np.random.Generator, cycle: _Lanes, banks: int, depth: int) -> None:
    """Move one enabled lane to the bank of another at a different row (needs two lanes)."""
    lanes = len(cycle.addrs)
    first, second = (int(i) for i in rng.choice(lanes, 2, replace=False))
    cycle.mask |= 1 << first | 1 << second
    rows = depth // banks
    addr = cycle.addrs[first]
    row = (addr // banks + int(rng.integers(1, rows))) % rows
    cycle.addrs[second] = row * banks + addr % banks


def _random_run(dut: BankedBuffer, cycles: int, seed: int, conflicts: float = 0.0) -> int:
    """Random reads and writes on every port, every read lane checked against an array.

    Write lanes never touch an element another lane or port writes in the same cycle
    (unspecified), nor break the no-conflict rule. Gather ports break it in a fraction
    ``conflicts`` of their cycles; every conflict output is compared with the rule in every
    cycle, and the data of a lane whose read conflicted is not compared (unspecified), nor
    are read lanes past the end. Returns the number of lanes compared.
    """
    rng = np.random.default_rng(seed)
    depth, bits, banks = dut.depth_entries, dut.element_bits, dut.bank_count
    rows = depth // banks
    model = np.zeros(depth, dtype=np.int64)
    compared = 0

    def start(lanes: int) -> int:
        # Mostly anywhere; often near the end so that lanes fall off it.
        if rng.random() < 0.15:
            return int(depth - 1 - rng.integers(0, lanes))
        return int(rng.integers(0, depth))

    async def bench(ctx: Any) -> None:
        nonlocal compared
        held: list[list[int | None]] = [[None] * spec.lanes for spec in dut.read_ports]
        for _ in range(cycles):
            # -- reads: what each lane should return after the clock edge, None if unknown
            expected: list[list[int | None]] = []
            for index, (spec, port) in enumerate(zip(dut.read_ports, dut.read, strict=True)):
                want = list(held[index])
                if spec.kind is PortKind.WIDE:
                    addr = start(spec.lanes)
                    enabled = rng.random() < 0.8
                    ctx.set(port.addr, addr if enabled else int(rng.integers(0, depth)))
                    ctx.set(port.en, enabled)
                    if enabled:
                        want = [
                            int(model[addr + j]) if addr + j < depth else None
                            for j in range(spec.lanes)
                        ]
                else:
                    cycle = _safe_lanes(rng, spec.lanes, banks, depth, broadcast=True)
                    if rng.random() < 0.1:
                        cycle.mask = 0
                    elif spec.lanes > 1 and rows > 1 and rng.random() < conflicts:
                        _break_rule(rng, cycle, banks, depth)
                    broken = _conflict(cycle.addrs, cycle.mask, banks)
                    ctx.set(port.addr.as_value(), _pack(cycle.addrs, len(port.addr[0])))
                    ctx.set(port.en, cycle.mask)
                    for lane, addr in enumerate(cycle.addrs):
                        if cycle.mask >> lane & 1:
                            want[lane] = None if broken else int(model[addr])
                    flag = dut.read_conflict[index]
                    if flag is not None:
                        assert ctx.get(flag) == broken, ("read", index, cycle)
                expected.append(want)
            # -- writes: at most one writer per element
            written: set[int] = set()
            updates: dict[int, int] = {}
            for index, (spec, port) in enumerate(zip(dut.write_ports, dut.write, strict=True)):
                values = [int(v) for v in rng.integers(0, 1 << bits, spec.lanes, dtype=np.uint64)]
                if spec.kind is PortKind.WIDE:
                    addr = start(spec.lanes)
                    mask = int(rng.integers(0, 1 << spec.lanes)) if rng.random() < 0.9 else 0
                    targets = [addr + j for j in range(spec.lanes)]
                    ctx.set(port.addr, addr)
                else:
                    cycle = _safe_lanes(rng, spec.lanes, banks, depth, broadcast=False)
                    mask, targets = cycle.mask, cycle.addrs
                    ctx.set(port.addr.as_value(), _pack(targets, len(port.addr[0])))
                for lane, target in enumerate(targets):
                    if mask >> lane & 1 and target in written:
                        mask &= ~(1 << lane)
                    if mask >> lane & 1:
                        written.add(target)
                        if target < depth:
                            updates[target] = values[lane]
                ctx.set(port.en, mask)
                ctx.set(port.data.as_value(), _pack(values, bits))
                flag = dut.write_conflict[index]
                if flag is not None:
                    assert not ctx.get(flag), ("write", index)
            await ctx.tick()
            for element, value in updates.items():
                model[element] = value
            for index, port in enumerate(dut.read):
                lanes = dut.read_ports[index].lanes
                got = _unpack(ctx.get(port.data.as_value()), bits, lanes)
                held[index] = expected[index]
                for lane, value in enumerate(expected[index]):
                    if value is not None:
                        assert got[lane] == value, (index, lane)
                        compared += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return compared


# -- wide ports only (the DMA's use) ---------------------------------------------------------


@pytest.mark.sim
def test_random_traffic_two_by_two_wide_ports() -> None:
    params = load_params("tiny")
    banks = params.buffer_banks
    dut = BankedBuffer(
        depth_entries=params.wgt_buffer_entries // 16,
        element_bits=16,
        banks=banks,
        read_ports=[wide(banks)] * 2,
        write_ports=[wide(banks)] * 2,
    )
    assert _random_run(dut, cycles=1500, seed=1) > 5000


@pytest.mark.sim
@pytest.mark.parametrize(
    ("banks", "bits", "depth", "lanes"),
    [(4, 3, 64, 4), (4, 32, 96, 3), (1, 8, 40, 1), (8, 16, 24, 8), (8, 16, 64, 5)],
    ids=["idx-3bit", "acc-32bit-non-pow2-rows", "one-bank", "eight-banks", "narrow"],
)
def test_random_traffic_wide_shapes(banks: int, bits: int, depth: int, lanes: int) -> None:
    dut = BankedBuffer(
        depth_entries=depth,
        element_bits=bits,
        banks=banks,
        read_ports=[wide(lanes)],
        write_ports=[wide(lanes)],
    )
    assert _random_run(dut, cycles=500, seed=banks * bits + lanes) > 150


@pytest.mark.sim
def test_wide_consecutive_stream() -> None:
    """Fill the buffer B elements per cycle from an unaligned start; read it back unaligned."""
    depth, lanes = 256, 4
    dut = BankedBuffer(depth_entries=depth, element_bits=16, banks=lanes)
    contents = [(7919 * e + 13) & 0xFFFF for e in range(depth)]

    async def bench(ctx: Any) -> None:
        write, read = dut.write[0], dut.read[0]
        # Element 0 first (one lane), then full-width writes from element 1 on; the last
        # access reaches past the end and its extra lanes must be dropped.
        ctx.set(write.addr, 0)
        ctx.set(write.en, 1)
        ctx.set(write.data.as_value(), contents[0])
        await ctx.tick()
        for addr in range(1, depth, lanes):
            chunk = [contents[e] if e < depth else 0xFFFF for e in range(addr, addr + lanes)]
            ctx.set(write.addr, addr)
            ctx.set(write.en, (1 << lanes) - 1)
            ctx.set(write.data.as_value(), _pack(chunk, 16))
            await ctx.tick()
        ctx.set(write.en, 0)
        # Read back one access per cycle, from start 2, results one cycle later.
        ctx.set(read.en, 1)
        starts = [*range(2, depth - lanes + 1, lanes), 0]
        previous = None
        for addr in starts:
            ctx.set(read.addr, addr)
            await ctx.tick()
            got = _unpack(ctx.get(read.data.as_value()), 16, lanes)
            assert got == contents[addr : addr + lanes]
            assert previous is None or got != previous
            previous = got

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- gather and scatter ports ----------------------------------------------------------------


@pytest.mark.sim
@pytest.mark.parametrize(
    ("banks", "bits", "depth", "reads", "writes"),
    [
        (4, 8, 64, [gather(6), wide(4), wide(2)], [scatter(5), wide(3)]),
        (8, 16, 96, [wide(8), gather(8)], [wide(8), scatter(4)]),
        (1, 3, 8, [gather(3), wide(1)], [scatter(2), wide(1)]),
        (16, 16, 256, [gather(16), wide(16), gather(5)], [scatter(16), wide(16)]),
    ],
    ids=["more-lanes-than-banks", "non-pow2-rows", "one-bank", "sixteen-banks"],
)
def test_random_traffic_mixed_ports(
    banks: int, bits: int, depth: int, reads: list[PortSpec], writes: list[PortSpec]
) -> None:
    dut = BankedBuffer(
        depth_entries=depth,
        element_bits=bits,
        banks=banks,
        read_ports=reads,
        write_ports=writes,
    )
    assert _random_run(dut, cycles=400, seed=banks + depth, conflicts=0.15) > 1000


@pytest.mark.sim
def test_random_traffic_without_conflict_check() -> None:
    dut = BankedBuffer(
        depth_entries=128,
        element_bits=16,
        banks=8,
        read_ports=[gather(8), wide(8)],
        write_ports=[scatter(8), wide(4)],
        conflict_check=False,
    )
    assert dut.read_conflict == (None, None) and dut.write_conflict == (None, None)
    assert not any("conflict" in name for name in dut.signature.members)
    assert _random_run(dut, cycles=400, seed=5) > 1500


@pytest.mark.sim
def test_gather_holds_while_another_lane_uses_the_bank() -> None:
    """Lane 0 idles while lane 1 reads another row of lane 0's bank: lane 0 keeps its data."""
    banks, depth = 4, 64
    dut = BankedBuffer(
        depth_entries=depth,
        element_bits=16,
        banks=banks,
        read_ports=[gather(2)],
        write_ports=[wide(banks)],
    )
    contents = [(40503 * e + 7) & 0xFFFF for e in range(depth)]

    async def bench(ctx: Any) -> None:
        write, read = dut.write[0], dut.read[0]
        for addr in range(0, depth, banks):
            ctx.set(write.addr, addr)
            ctx.set(write.en, (1 << banks) - 1)
            ctx.set(write.data.as_value(), _pack(contents[addr : addr + banks], 16))
            await ctx.tick()
        ctx.set(write.en, 0)
        steps = [  # (lane addresses, enable mask)
            ([9, 13], 0b01),  # lane 0 reads 9 (bank 1, row 2)
            ([9, 13], 0b10),  # lane 1 reads 13 (bank 1, row 3); lane 0 holds 9
            ([21, 5], 0b10),  # lane 1 reads 5 (bank 1, row 1); lane 0 still 9
            ([21, 5], 0b11),  # both read bank 1 at different rows: a conflict
            ([6, 6], 0b11),  # a broadcast: both read 6
            ([6, 6], 0b00),  # both hold
        ]
        held = [0, 0]
        for addrs, mask in steps:
            ctx.set(read.addr.as_value(), _pack(addrs, len(read.addr[0])))
            ctx.set(read.en, mask)
            assert ctx.get(dut.read_conflict[0]) == (mask == 0b11 and addrs[0] != addrs[1])
            await ctx.tick()
            got = _unpack(ctx.get(read.data.as_value()), 16, 2)
            if mask == 0b11 and addrs[0] != addrs[1]:
                held = got  # unspecified: only the later cycles are checked
                continue
            for lane in range(2):
                if mask >> lane & 1:
                    held[lane] = contents[addrs[lane]]
            assert got == held, (addrs, mask)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.sim
@pytest.mark.parametrize(
    ("banks", "lanes", "depth"),
    [(4, 6, 64), (8, 8, 96), (16, 16, 128), (32, 12, 256), (1, 3, 8)],
    ids=["more-lanes-than-banks", "non-pow2-rows", "sixteen-banks", "tiny-act", "one-bank"],
)
def test_conflict_flag_follows_the_rule(banks: int, lanes: int, depth: int) -> None:
    """The conflict outputs of a gather and a scatter port against the rule, both ways.

    Each cycle's addresses are conflict-free (runs, random distinct banks, broadcasts),
    conflict-free then broken on purpose, or fully random.
    """
    dut = BankedBuffer(
        depth_entries=depth,
        element_bits=8,
        banks=banks,
        read_ports=[gather(lanes)],
        write_ports=[scatter(lanes)],
    )
    rng = np.random.default_rng(banks * lanes)
    seen = {False: 0, True: 0}

    async def bench(ctx: Any) -> None:
        for _ in range(300):
            for port, flag in ((dut.read[0], dut.read_conflict[0]),
                               (dut.write[0], dut.write_conflict[0])):  # fmt: skip
                kind = rng.integers(0, 3)
                cycle = _safe_lanes(rng, lanes, banks, depth, broadcast=True)
                if kind == 1:
                    _break_rule(rng, cycle, banks, depth)
                elif kind == 2:
                    cycle = _Lanes(
                        [int(a) for a in rng.integers(0, depth, lanes)],
                        int(rng.integers(0, 1 << lanes)),
                    )
                want = _conflict(cycle.addrs, cycle.mask, banks)
                ctx.set(port.addr.as_value(), _pack(cycle.addrs, len(port.addr[0])))
                ctx.set(port.en, cycle.mask)
                assert ctx.get(flag) == want, cycle
                seen[want] += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) > 100, seen


# -- construction, signatures, Verilog -------------------------------------------------------


def test_verilog_for_tiny(tmp_path: Path) -> None:
    params = load_params("tiny")
    dut = BankedBuffer(
        depth_entries=params.act_buffer_entries,
        element_bits=16,
        banks=params.buffer_banks,
        read_ports=[gather(8), wide(4)],
        write_ports=[wide(4), scatter(4)],
    )
    text = verilog.convert(dut, name="act_buffer")
    (tmp_path / "act_buffer.v").write_text(text)
    assert "module act_buffer" in text
    for name in ("read0__addr", "read0_conflict", "read1__data", "write0__en", "write1__data"):
        assert name in text


def test_verilog_shares_the_crossbar_modules() -> None:
    """Through the generator, every bank group and lane group is one shared module."""
    from nmsat.hw.gen import to_verilog  # the generator imports the whole top

    dut = BankedBuffer(
        depth_entries=1024,
        element_bits=16,
        banks=16,
        read_ports=[gather(16), gather(16), wide(8)],
        write_ports=[scatter(8), wide(16)],
    )
    text = to_verilog(dut, "act_buffer")
    modules = re.findall(r"^module (nmsat_buffer_\w+)\(", text, re.MULTILINE)
    instances = Counter(re.findall(r"^\s+(nmsat_buffer_\w+) \S+ \(", text, re.MULTILINE))
    # One module per shape; 4 groups of 4 banks or lanes per port.
    assert sorted(modules) == [
        "nmsat_buffer_gather_return",
        "nmsat_buffer_gather_select",
        "nmsat_buffer_scatter_select",
    ]
    assert instances == {
        "nmsat_buffer_gather_select": 2 * 4,
        "nmsat_buffer_gather_return": 2 * 4,
        "nmsat_buffer_scatter_select": 4,
    }


def test_vcu1525_act_constructs_quickly() -> None:
    """vcu1525's ACT geometry: 2**21 elements in 256 banks, the ports of the measurement."""
    params = load_params("vcu1525")
    dut = BankedBuffer(
        depth_entries=params.act_buffer_entries,
        element_bits=16,
        banks=256,
        read_ports=[gather(256), wide(64), wide(64), wide(128)],
        write_ports=[wide(64), wide(128)],
    )
    Fragment.get(dut, None)
    assert dut.bank_count == 256 and dut.depth_entries == 2**21


def test_signatures() -> None:
    dut = BankedBuffer(
        depth_entries=64,
        element_bits=32,
        banks=4,
        read_ports=[wide(4), gather(6), wide(2)],
        write_ports=[scatter(3)],
    )
    assert len(dut.read) == 3 and len(dut.write) == 1
    assert dut.read_ports == (wide(4), gather(6), wide(2))
    sig = WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4)
    assert dut.signature.members["read0"].signature == sig
    assert dut.signature.members["read1"].signature == GatherReadPortSignature(
        depth_entries=64, element_bits=32, lanes=6
    )
    assert dut.signature.members["write0"].signature == ScatterWritePortSignature(
        depth_entries=64, element_bits=32, lanes=3
    )
    assert [flag is not None for flag in dut.read_conflict] == [False, True, False]
    assert dut.write_conflict[0] is not None and "write0_conflict" in dut.signature.members
    assert sig != WideWritePortSignature(depth_entries=64, element_bits=32, lanes=4)
    assert repr(sig) == "WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4)"
    assert hash(sig) == hash(WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4))
    gather_sig = GatherReadPortSignature(depth_entries=96, element_bits=8, lanes=3)
    addr_shape = gather_sig.members["addr"].shape
    assert addr_shape.length == 3 and Shape.cast(addr_shape.elem_shape).width == 7
    default = BankedBuffer(depth_entries=64, element_bits=8, banks=8)
    assert default.read_ports == (wide(8),) and default.write_ports == (wide(8),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"banks": 3}, "banks must be a power of two, got 3"),
        ({"banks": 0}, "banks must be a power of two, got 0"),
        ({"depth_entries": 30}, "positive multiple of banks = 4, got 30"),
        ({"depth_entries": 0}, "positive multiple of banks"),
        ({"element_bits": 0}, "element_bits must be at least 1"),
        ({"read_ports": [wide(8)]}, r"read port 0 \(wide\): a wide port has at most banks = 4"),
        ({"write_ports": [wide(4), wide(5)]}, "write port 1 .* at most banks = 4 lanes, got 5"),
        ({"read_ports": [gather(0)]}, r"read port 0 \(gather\): lanes must be at least 1"),
        ({"read_ports": [scatter(2)]}, "a read port is 'wide' or 'gather'"),
        ({"write_ports": [gather(2)]}, "a write port is 'wide' or 'scatter'"),
        ({"read_ports": []}, "at least one read port"),
    ],
)
def test_rejects_bad_shapes(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"depth_entries": 64, "element_bits": 16, "banks": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        BankedBuffer(**args)
