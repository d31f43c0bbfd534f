# amaranth: UnusedElaboratable=no
"""BankedBuffer against a Python dict of elements, in the Amaranth simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from nmsat.hw.mem import BankedBuffer, WideReadPortSignature, WideWritePortSignature
from nmsat.hw.params import SATParams, load_params


def _pack(values: list[int], bits: int) -> int:
    return sum(v << (bits * j) for j, v in enumerate(values))


def _unpack(word: int, bits: int, lanes: int) -> list[int]:
    return [(word >> (bits * j)) & ((1 << bits) - 1) for j in range(lanes)]


def _random_run(dut: BankedBuffer, cycles: int, seed: int) -> int:
    """Random reads and writes on every port; every read lane checked against a dict.

    Returns the number of lanes compared. Write ports never touch the same element in one
    cycle (unspecified); read lanes past the end are not compared (unspecified).
    """
    rng = np.random.default_rng(seed)
    depth, bits, lanes = dut.depth_entries, dut.element_bits, dut.bank_count
    model: dict[int, int] = {}
    compared = 0

    def start() -> int:
        # Mostly anywhere; often near the end so that lanes fall off it.
        if rng.random() < 0.15:
            return int(depth - 1 - rng.integers(0, lanes))
        return int(rng.integers(0, depth))

    async def bench(ctx: Any) -> None:
        nonlocal compared
        held: list[list[int | None] | None] = [None] * len(dut.read)
        for _ in range(cycles):
            expected: list[list[int | None] | None] = []
            for port in dut.read:
                if rng.random() < 0.8:
                    addr = start()
                    ctx.set(port.addr, addr)
                    ctx.set(port.en, 1)
                    expected.append(
                        [model.get(addr + j, 0) if addr + j < depth else None for j in range(lanes)]
                    )
                else:
                    ctx.set(port.addr, int(rng.integers(0, depth)))
                    ctx.set(port.en, 0)
                    expected.append(None)
            written: set[int] = set()
            updates: dict[int, int] = {}
            for port in dut.write:
                addr = start()
                mask = int(rng.integers(0, 1 << lanes)) if rng.random() < 0.9 else 0
                values = [int(v) for v in rng.integers(0, 1 << bits, lanes, dtype=np.uint64)]
                for j in range(lanes):
                    if mask >> j & 1 and addr + j in written:
                        mask &= ~(1 << j)
                    if mask >> j & 1:
                        written.add(addr + j)
                        if addr + j < depth:
                            updates[addr + j] = values[j]
                ctx.set(port.addr, addr)
                ctx.set(port.en, mask)
                ctx.set(port.data.as_value(), _pack(values, bits))
            await ctx.tick()
            model.update(updates)
            for index, port in enumerate(dut.read):
                got = _unpack(ctx.get(port.data.as_value()), bits, lanes)
                # A port that did not read holds the data of its last read.
                want = expected[index] if expected[index] is not None else held[index]
                held[index] = want
                if want is not None:
                    for lane, value in enumerate(want):
                        if value is not None:
                            assert got[lane] == value, (index, lane)
                            compared += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return compared


@pytest.mark.sim
def test_random_traffic_two_by_two_ports() -> None:
    params = load_params("tiny")
    dut = BankedBuffer(
        params,
        depth_entries=params.wgt_buffer_entries // 16,
        element_bits=16,
        read_port_count=2,
        write_port_count=2,
    )
    assert _random_run(dut, cycles=1500, seed=1) > 5000


@pytest.mark.sim
@pytest.mark.parametrize(
    ("banks", "bits", "depth"),
    [(4, 3, 64), (4, 32, 96), (1, 8, 40), (8, 16, 24)],
    ids=["idx-3bit", "acc-32bit-non-pow2-rows", "one-bank", "eight-banks"],
)
def test_random_traffic_shapes(banks: int, bits: int, depth: int) -> None:
    params = load_params("tiny").replace(buffer_banks=banks)
    dut = BankedBuffer(params, depth_entries=depth, element_bits=bits)
    assert _random_run(dut, cycles=500, seed=banks * bits) > 200


@pytest.mark.sim
def test_wide_consecutive_stream() -> None:
    """Fill the buffer B elements per cycle from an unaligned start; read it back unaligned."""
    params = load_params("tiny")
    depth, lanes = 256, params.buffer_banks
    dut = BankedBuffer(params, depth_entries=depth, element_bits=16)
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


def test_verilog_for_tiny(tmp_path: Path) -> None:
    params = load_params("tiny")
    dut = BankedBuffer(
        params, depth_entries=params.act_buffer_entries, element_bits=16, write_port_count=2
    )
    text = verilog.convert(dut, name="act_buffer")
    (tmp_path / "act_buffer.v").write_text(text)
    assert "module act_buffer" in text
    for name in ("read__0__addr", "read__0__data", "write__1__en", "write__1__data"):
        assert name in text


def test_vcu1525_constructs_quickly() -> None:
    params = load_params("vcu1525")
    dut = BankedBuffer(params, depth_entries=params.act_buffer_entries, element_bits=16)
    Fragment.get(dut, None)
    assert dut.bank_count == 32 and dut.depth_entries == 2**21


def test_signatures() -> None:
    params = load_params("tiny")
    dut = BankedBuffer(params, depth_entries=64, element_bits=32, read_port_count=3)
    assert len(dut.read) == 3 and len(dut.write) == 1
    sig = WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4)
    assert dut.signature.members["read"].signature == sig
    assert sig != WideWritePortSignature(depth_entries=64, element_bits=32, lanes=4)
    assert repr(sig) == "WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4)"
    assert hash(sig) == hash(WideReadPortSignature(depth_entries=64, element_bits=32, lanes=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth_entries": 30, "element_bits": 16}, "multiple of buffer_banks = 4, got 30"),
        ({"depth_entries": 0, "element_bits": 16}, "multiple of buffer_banks"),
        ({"depth_entries": 64, "element_bits": 0}, "element_bits must be at least 1"),
        ({"depth_entries": 64, "element_bits": 8, "read_port_count": 0}, "read_port_count"),
    ],
)
def test_rejects_bad_shapes(kwargs: dict[str, int], message: str) -> None:
    params: SATParams = load_params("tiny")
    with pytest.raises(ValueError, match=message):
        BankedBuffer(params, **kwargs)
