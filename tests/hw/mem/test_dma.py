# amaranth: UnusedElaboratable=no
"""DMAEngine + DRAMModel against sim.model's LOAD/STORE, bit for bit and cycle for cycle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Elaboratable, Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from nmsat.hw import isa
from nmsat.hw.errors import ConfigError
from nmsat.hw.isa import Buffer, Opcode
from nmsat.hw.mem import (
    BankedBuffer,
    DMAEngine,
    MemoryBusSignature,
    WideReadPortSignature,
    WideWritePortSignature,
)
from nmsat.hw.params import SATParams, load_params
from nmsat.sim.model import dma as model_dma
from nmsat.sim.model.memory import Memory
from nmsat.sim.testing import DRAMModel

_IMAGE_BYTES = 1 << 16  # the DRAM image of the tests: enough for every random transfer
_LAYOUT = isa.PAYLOADS[Opcode.LOAD]


@dataclass(frozen=True)
class _Step:
    """One transfer of a test program and the idle cycles before its start."""

    instr: isa.Instruction
    gap_cycles: int = 0


def _random_state(
    params: SATParams, rng: np.random.Generator
) -> tuple[Memory, dict[Buffer, NDArray[Any]], NDArray[np.uint8]]:
    """A model Memory with random contents, and copies of its buffers and DRAM for the RTL."""
    mem = Memory(params, _IMAGE_BYTES)
    mem.dram[:] = rng.integers(0, 256, _IMAGE_BYTES, dtype=np.uint8)
    for buf, store in mem.buffers.items():
        info = np.iinfo(store.dtype)
        store[:] = rng.integers(0, int(info.max) + 1, store.size, dtype=np.uint64)
        if buf is Buffer.IDX:
            store &= mem.idx_mask
    buffers = {buf: store.copy() for buf, store in mem.buffers.items()}
    return mem, buffers, mem.dram.copy()


def _buffer_pitches(counts: tuple[int, int, int, int], pad: int) -> tuple[int, int, int]:
    """docs/isa.md's buffer-side (block, plane, row) pitches of a LOAD/STORE with ``buf_pad``."""
    _, planes, rows, cols = counts

    def odd(size: int, bit: int) -> int:
        return size | 1 if pad >> bit & 1 else size

    row = odd(cols, 0)
    plane = odd(rows * row, 1)
    return odd(planes * plane, 2), plane, row


def _make_transfer(
    params: SATParams,
    *,
    store: bool,
    buffer: Buffer,
    counts: tuple[int, int, int, int],
    slack: tuple[int, int, int],
    dram_fraction: float,
    buf_fraction: float,
    pad: int = 0,
) -> isa.Instruction:
    """A LOAD/STORE with the given shape; strides = inner extent + slack, addresses in range.

    ``pad`` is ``buf_pad``: bits 0, 1, 2 round the buffer's row, plane, block pitch up to odd.
    """
    blocks, planes, rows, cols = counts
    size = isa.element_bytes(buffer)
    entries = isa.buffer_entries(buffer, params)
    extent = cols
    strides = []
    for count, extra in zip((rows, planes, blocks), slack, strict=True):
        strides.append(extent + extra)
        extent = (count - 1) * (extent + extra) + extent
    span_bytes = extent * size
    dram_addr = int(dram_fraction * (_IMAGE_BYTES - span_bytes))
    pitches = _buffer_pitches(counts, pad)
    buf_span = sum((n - 1) * q for n, q in zip(counts[:3], pitches, strict=True)) + cols
    buf_addr = int(buf_fraction * (entries - buf_span))
    instr = isa.make(
        Opcode.STORE if store else Opcode.LOAD,
        buffer=buffer,
        buf_addr=buf_addr,
        dram_addr=dram_addr,
        dram_stride=strides[0],
        plane_stride=strides[1],
        block_stride=strides[2],
        rows=rows,
        cols=cols,
        planes=planes,
        blocks=blocks,
        buf_pad=pad,
    )
    assert isa.dma_buffer_extent(instr) == buf_span
    isa.check_for_params(instr, params)
    return instr


def _random_program(
    params: SATParams, rng: np.random.Generator, count: int, max_beats: int
) -> list[_Step]:
    """Random transfers: all buffers, odd byte addresses, run lengths around beat multiples."""
    B = params.dram_bytes_per_cycle
    steps = []
    while len(steps) < count:
        buffer = Buffer(int(rng.integers(len(Buffer))))
        size = isa.element_bytes(buffer)
        per_beat = max(1, B // size)
        kind = rng.integers(4)
        if kind == 0:  # one long run
            counts = (1, 1, 1, int(rng.integers(1, 64 * per_beat)))
        elif kind == 1:  # rows of a 2-D block, cols near a beat multiple
            cols = max(1, int(rng.integers(1, 4)) * per_beat + int(rng.integers(-1, 2)))
            counts = (1, 1, int(rng.integers(1, 7)), cols)
        else:  # 3-D and 4-D blocks of short runs
            cols = int(rng.integers(1, 2 * per_beat + 2))
            counts = (
                int(rng.integers(1, 4)),
                int(rng.integers(1, 4)),
                int(rng.integers(1, 4)),
                cols,
            )
        lines = counts[0] * counts[1] * counts[2]
        if lines * -(-counts[3] * size // B) > max_beats:
            continue
        slack = [int(v) for v in rng.choice([0, 0, 1, 3, 17], 3)]
        instr = _make_transfer(
            params,
            store=bool(rng.integers(2)),
            buffer=buffer,
            counts=counts,
            slack=(slack[0], slack[1], slack[2]),
            dram_fraction=float(rng.random()),
            buf_fraction=float(rng.random()),
            pad=int(rng.integers(1, 8)) if rng.random() < 0.5 else 0,
        )
        gap = 0 if rng.random() < 0.7 else int(rng.integers(1, 4))
        steps.append(_Step(instr, gap))
    return steps


def _buffer_process(dut: DMAEngine, buffers: dict[Buffer, NDArray[Any]]) -> Any:
    """Behavioural buffers behind the engine's ports (the WideRead/WritePort contract).

    Read latency 1 with data held while ``en`` is low, a read sees the old value of an
    element written in the same cycle, writes past the end are dropped.
    """
    ports = []
    sampled: list[Any] = []
    for buf in Buffer:
        write, read = dut.port(buf, "write"), dut.port(buf, "read")
        bits = DMAEngine.element_bits(buf, dut.params)
        lanes = DMAEngine.port_lanes(buf, dut.params)
        ports.append((buf, read, bits, lanes))
        sampled += [write.addr, write.en, write.data.as_value(), read.addr, read.en]

    async def process(ctx: Any) -> None:
        async for _, _, *values in ctx.tick().sample(*sampled):
            for index, (buf, read, bits, lanes) in enumerate(ports):
                w_addr, w_en, w_data, r_addr, r_en = values[5 * index : 5 * index + 5]
                store = buffers[buf]
                if r_en:
                    word = 0
                    for lane in range(lanes):
                        if r_addr + lane < store.size:
                            word |= int(store[r_addr + lane]) << (bits * lane)
                    ctx.set(read.data.as_value(), word)
                mask = (1 << bits) - 1
                for lane in range(lanes):
                    if w_en >> lane & 1 and w_addr + lane < store.size:
                        store[w_addr + lane] = (w_data >> (bits * lane)) & mask

    return process


def _run_program(
    params: SATParams,
    steps: list[_Step],
    seed: int,
    *,
    stall_probability: float = 0.0,
    base_addr: int = 0,
    final: dict[str, NDArray[Any]] | None = None,
) -> int:
    """Run ``steps`` on the engine and on sim.model; compare state after each, and cycles.

    The whole of every buffer and of the DRAM image is compared, so an element the engine
    writes and the model does not (a gap element between buffer rows) fails. With a
    stalling memory only the values are compared (cycles can only grow). The engine sees
    every DRAM address moved up by ``base_addr``. Returns the simulated cycles; the engine's
    final buffers (by name) and DRAM image (``"DRAM"``) go into ``final`` when given.
    """
    rng = np.random.default_rng(seed)
    mem, buffers, image = _random_state(params, rng)
    if final is not None:  # the same arrays: the simulation writes into them
        final.update({buf.name: store for buf, store in buffers.items()}, DRAM=image)
    dut = DMAEngine(params)
    dram = DRAMModel(
        dut.bus, params, image, base_addr=base_addr, stall_probability=stall_probability, seed=seed
    )
    now = 0

    async def bench(ctx: Any) -> None:
        nonlocal now
        for step in steps:
            for _ in range(step.gap_cycles):
                await ctx.tick()
                now += 1
                assert not ctx.get(dut.done)
            instr = step.instr
            fields = {**instr.fields, "dram_addr": instr["dram_addr"] + base_addr}
            ctx.set(dut.instr.as_value(), _LAYOUT.const(fields).as_bits())
            ctx.set(dut.store, instr.opcode is Opcode.STORE)
            ctx.set(dut.start, 1)
            started = now
            expected = isa.cycles(instr, params)
            requests_before = len(dram.requests)
            await ctx.tick()
            now += 1
            ctx.set(dut.start, 0)
            ctx.set(dut.instr.as_value(), 0)
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy)
                if not stall_probability:
                    assert now - started < expected, instr
                await ctx.tick()
                now += 1
            if not stall_probability:
                assert now - started == expected, instr
            # In the cycle of done every write is visible: compare with the model now.
            (model_dma.store if instr.opcode is Opcode.STORE else model_dma.load)(
                instr, params, mem, "exact"
            )
            assert np.array_equal(image, mem.dram), instr
            for buf in Buffer:
                assert np.array_equal(buffers[buf], mem.buffers[buf]), (buf, instr)
            # One request per run, each ``cols * E`` bytes from its run's first byte.
            lines = instr["blocks"] * instr["planes"] * instr["rows"]
            new = dram.requests[requests_before:]
            assert len(new) == lines
            run_bytes = instr["cols"] * isa.element_bytes(instr["buffer"])
            assert {r.length_bytes for r in new} == {run_bytes}
            assert new[0].addr == instr["dram_addr"] + base_addr
            assert all(r.write == (instr.opcode is Opcode.STORE) for r in new)
        # Idle afterwards: no stray done or request.
        for _ in range(3):
            await ctx.tick()
            now += 1
            assert not ctx.get(dut.done) and not ctx.get(dut.bus.req.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(_buffer_process(dut, buffers))
    sim.add_process(dram.process)
    sim.add_testbench(bench)
    sim.run()
    return now


@pytest.mark.sim
def test_random_transfers_tiny() -> None:
    """Seeded random LOAD/STOREs on tiny.yaml, mostly back to back."""
    params = load_params("tiny")
    steps = _random_program(params, np.random.default_rng(5), count=400, max_beats=300)
    assert {s.instr["buffer"] for s in steps} == set(Buffer)
    assert {s.instr.opcode for s in steps} == {Opcode.LOAD, Opcode.STORE}
    assert {s.instr["dram_addr"] % 4 for s in steps} == {0, 1, 2, 3}
    assert max(s.instr["cols"] for s in steps) * 2 > 8 * params.dram_bytes_per_cycle
    assert any(s.instr["blocks"] > 1 and s.instr["planes"] > 1 for s in steps)
    padded = [s.instr for s in steps if isa.dma_buffer_extent(s.instr) > isa.dma_elements(s.instr)]
    assert {i["buffer"] for i in padded} == set(Buffer)
    assert {i.opcode for i in padded} == {Opcode.LOAD, Opcode.STORE}
    _run_program(params, steps, seed=5)


@pytest.mark.sim
def test_random_transfers_top_of_address_space() -> None:
    """All 40 address bits: the image sits just below the top of a 2**40-byte memory."""
    params = load_params("tiny").replace(dram_bytes=2**40)
    steps = _random_program(params, np.random.default_rng(8), count=40, max_beats=60)
    _run_program(params, steps, seed=8, base_addr=2**40 - _IMAGE_BYTES)


@pytest.mark.sim
@pytest.mark.parametrize(
    ("bytes_per_cycle", "latency_cycles"),
    [(4, 1), (2, 3), (1, 2), (32, 2)],
    ids=["B4-D1", "B2-D3", "B1-D2", "B32-D2"],
)
def test_random_transfers_bus_widths(bytes_per_cycle: int, latency_cycles: int) -> None:
    """Other beat widths (an element over several beats when B < E) and latencies."""
    params = load_params("tiny").replace(
        dram_bytes_per_cycle=bytes_per_cycle, dram_latency_cycles=latency_cycles
    )
    rng = np.random.default_rng(bytes_per_cycle * 10 + latency_cycles)
    _run_program(params, _random_program(params, rng, count=80, max_beats=60), seed=1)


_SHAPES = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 40)
).filter(lambda c: c[0] * c[1] * c[2] * c[3] <= 200)


@st.composite
def _transfers(draw: st.DrawFn) -> list[_Step]:
    params = load_params("tiny")
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        instr = _make_transfer(
            params,
            store=draw(st.booleans()),
            buffer=draw(st.sampled_from(list(Buffer))),
            counts=draw(_SHAPES),
            slack=draw(st.tuples(*(st.sampled_from([0, 1, 5]) for _ in range(3)))),
            dram_fraction=draw(st.floats(0, 1)),
            buf_fraction=draw(st.floats(0, 1)),
            pad=draw(st.integers(0, 7)),
        )
        steps.append(_Step(instr, draw(st.sampled_from([0, 0, 2]))))
    return steps


@pytest.mark.sim
@settings(max_examples=30)
@given(steps=_transfers(), seed=st.integers(0, 2**16))
def test_hypothesis_transfers(steps: list[_Step], seed: int) -> None:
    _run_program(load_params("tiny"), steps, seed)


def _loop_nest(
    instr: isa.Instruction,
    params: SATParams,
    buffers: dict[str, NDArray[Any]],
    image: NDArray[np.uint8],
) -> set[int]:
    """docs/isa.md's LOAD/STORE loop nest, one element at a time (independent of sim.model).

    Returns the buffer elements the transfer addresses.
    """
    f = instr.fields
    buf = f["buffer"]
    size = isa.element_bytes(buf)
    mask = (1 << DMAEngine.element_bits(buf, params)) - 1
    counts = (f["blocks"], f["planes"], f["rows"], f["cols"])
    block_pitch, plane_pitch, row_pitch = _buffer_pitches(counts, f["buf_pad"])
    addressed = set()
    store = buffers[buf.name]
    for k in range(f["blocks"]):
        for p in range(f["planes"]):
            for r in range(f["rows"]):
                for c in range(f["cols"]):
                    offset = k * f["block_stride"] + p * f["plane_stride"] + r * f["dram_stride"]
                    d = f["dram_addr"] + (offset + c) * size
                    b = f["buf_addr"] + k * block_pitch + p * plane_pitch + r * row_pitch + c
                    addressed.add(b)
                    if instr.opcode is Opcode.LOAD:
                        store[b] = int.from_bytes(image[d : d + size].tobytes(), "little") & mask
                    else:
                        image[d : d + size] = list(int(store[b]).to_bytes(size, "little"))
    return addressed


def _padded_program(params: SATParams) -> list[_Step]:
    """Per buffer: padded 4-D LOADs, each to its own odd buffer address, each STOREd back.

    The shapes give even and odd rows, planes and blocks (a gap at each level, or none when
    the packed size is already odd); ``buf_pad`` is 7 and one other value per shape.
    """
    B = params.dram_bytes_per_cycle
    steps = []
    dram = 0x101
    others = (1, 2, 4, 3, 5, 6)
    for index, buf in enumerate(Buffer):
        per_beat = max(1, B // isa.element_bytes(buf))
        buf_addr = 2 * index + 1
        for j, (blocks, planes, rows, cols) in enumerate(
            [
                (3, 2, 2, 1),
                (2, 3, 1, 2 * per_beat),
                (2, 2, 3, per_beat + 1),
                (2, 1, 2, 2 * per_beat + 3),
                (2, 3, 1, 3),  # every size odd: no gap whatever buf_pad says
            ]
        ):
            for pad in (7, others[(j + index) % len(others)]):
                for opcode in (Opcode.LOAD, Opcode.STORE):
                    instr = isa.make(
                        opcode, buffer=buf, buf_addr=buf_addr, dram_addr=dram,
                        dram_stride=cols + 1, plane_stride=rows * (cols + 1) + 3,
                        block_stride=planes * (rows * (cols + 1) + 3) + 7, rows=rows,
                        cols=cols, planes=planes, blocks=blocks, buf_pad=pad,
                    )  # fmt: skip
                    isa.check_for_params(instr, params)
                    steps.append(_Step(instr, int(cols == 1)))
                    dram = model_dma.dram_end(instr) + 2 * index + 1
                    assert dram <= _IMAGE_BYTES
                buf_addr += isa.dma_buffer_extent(instr) + 1 + (j & 1)
    return steps


@pytest.mark.sim
@pytest.mark.parametrize(
    ("bytes_per_cycle", "latency_cycles", "stall_probability"),
    [(16, 8, 0.0), (16, 3, 0.3), (2, 3, 0.0), (1, 2, 0.25)],
    ids=["B16", "B16-stalls", "B2", "B1-stalls"],
)
def test_padded_buffer_side_follows_the_loop_nest(
    bytes_per_cycle: int, latency_cycles: int, stall_probability: float
) -> None:
    """buf_pad: odd row, plane, block pitches; a LOAD leaves the skipped elements alone.

    Checked against the model inside the run (cycles included without stalls) and, at the
    end, against docs/isa.md's loop nest written out element by element from the same
    initial state.
    """
    params = load_params("tiny").replace(
        dram_bytes_per_cycle=bytes_per_cycle, dram_latency_cycles=latency_cycles
    )
    steps = _padded_program(params)
    # Every level has a gap somewhere: a pitch above the packed size of the level below.
    gapped = set()
    for step in steps:
        f = step.instr.fields
        block, plane, row = isa.dma_buffer_pitches(step.instr)[::-1]
        gapped |= {
            level
            for level, (pitch, packed) in enumerate(
                [(row, f["cols"]), (plane, f["rows"] * row), (block, f["planes"] * plane)]
            )
            if pitch > packed
        }
        assert (block, plane, row) == _buffer_pitches(
            (f["blocks"], f["planes"], f["rows"], f["cols"]), f["buf_pad"]
        )
    assert gapped == {0, 1, 2}
    final: dict[str, NDArray[Any]] = {}
    _run_program(params, steps, seed=21, stall_probability=stall_probability, final=final)

    _, initial, image = _random_state(params, np.random.default_rng(21))
    want = {buf.name: store.copy() for buf, store in initial.items()}
    skipped = 0
    for step in steps:
        instr = step.instr
        addressed = _loop_nest(instr, params, want, image)
        if instr.opcode is Opcode.LOAD:  # each LOAD has a buffer range of its own
            first = instr["buf_addr"]
            gaps = sorted(set(range(first, first + isa.dma_buffer_extent(instr))) - addressed)
            name = instr["buffer"].name
            assert np.array_equal(final[name][gaps], initial[instr["buffer"]][gaps]), instr
            skipped += len(gaps)
    assert skipped > 0
    assert np.array_equal(final["DRAM"], image)
    for buf in Buffer:
        assert np.array_equal(final[buf.name], want[buf.name]), buf


@pytest.mark.sim
def test_back_to_back_dependent_sequence() -> None:
    """STORE then LOAD of the same bytes, LOAD then STORE of the same elements, no gaps."""
    params = load_params("tiny")
    common = {"rows": 3, "cols": 7, "dram_stride": 9}
    short_runs = {"rows": 5, "cols": 1, "dram_stride": 3, "planes": 2, "plane_stride": 20}
    program = [
        # ACC out to DRAM at an odd address, straight back into VEC, out again elsewhere.
        isa.make(Opcode.STORE, buffer=Buffer.ACC, buf_addr=5, dram_addr=0x1003, **common),
        isa.make(Opcode.LOAD, buffer=Buffer.VEC, buf_addr=100, dram_addr=0x1003, **common),
        isa.make(Opcode.STORE, buffer=Buffer.VEC, buf_addr=100, dram_addr=0x2001, **common),
        # One-beat runs back to back, then a single element, both directions.
        isa.make(Opcode.LOAD, buffer=Buffer.IDX, buf_addr=7, dram_addr=0x3005, **short_runs),
        isa.make(Opcode.STORE, buffer=Buffer.IDX, buf_addr=7, dram_addr=0x4000, rows=1, cols=10),
        isa.make(Opcode.LOAD, buffer=Buffer.ACT, buf_addr=0, dram_addr=0x4000, rows=1, cols=1),
        isa.make(Opcode.STORE, buffer=Buffer.ACT, buf_addr=0, dram_addr=0x5001, rows=1, cols=1),
    ]
    cycles = _run_program(params, [_Step(i) for i in program], seed=3)
    # Back to back: the program takes exactly the sum of its formulas (+ 1 start, 3 idle).
    assert cycles == sum(isa.cycles(i, params) for i in program) + 3


@pytest.mark.sim
def test_backpressure_keeps_values() -> None:
    """A memory that stalls requests and beats at random: same results, more cycles."""
    params = load_params("tiny").replace(dram_latency_cycles=3)
    steps = _random_program(params, np.random.default_rng(11), count=30, max_beats=40)
    cycles = _run_program(params, steps, seed=11, stall_probability=0.3)
    assert cycles > sum(isa.cycles(s.instr, params) + s.gap_cycles for s in steps) + 3


class _Harness(Elaboratable):
    """The engine wired to real BankedBuffers whose bank count matches its port lanes."""

    def __init__(self, params: SATParams) -> None:
        self.dma = DMAEngine(params)
        self.buffers = {}
        for buf in Buffer:
            lanes = DMAEngine.port_lanes(buf, params)
            self.buffers[buf] = BankedBuffer(
                depth_entries=isa.buffer_entries(buf, params),
                element_bits=DMAEngine.element_bits(buf, params),
                banks=lanes,
            )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dma = self.dma
        for buf, buffer in self.buffers.items():
            m.submodules[buf.name.lower()] = buffer
            wiring.connect(m, self.dma.port(buf, "write"), buffer.write[0])
            wiring.connect(m, self.dma.port(buf, "read"), buffer.read[0])
        return m


@pytest.mark.sim
def test_round_trip_through_banked_buffers() -> None:
    """LOAD every buffer from DRAM and STORE it back elsewhere, through real BankedBuffers."""
    params = load_params("tiny")
    harness = _Harness(params)
    dma = harness.dma
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, _IMAGE_BYTES, dtype=np.uint8)
    mem = Memory(params, _IMAGE_BYTES)
    mem.dram[:] = image
    dram = DRAMModel(dma.bus, params, image)
    program = []
    for index, buf in enumerate(Buffer):
        shape = {"rows": 3, "cols": 13, "dram_stride": 21, "buf_addr": 3 + index}
        source, target = 0x100 * index + index, 0x8000 + 0x100 * index + 2 * index + 1
        program += [
            isa.make(Opcode.LOAD, buffer=buf, dram_addr=source, **shape),
            isa.make(Opcode.STORE, buffer=buf, dram_addr=target, **shape),
        ]

    async def bench(ctx: Any) -> None:
        for instr in program:
            ctx.set(dma.instr.as_value(), _LAYOUT.const(instr.fields).as_bits())
            ctx.set(dma.store, instr.opcode is Opcode.STORE)
            ctx.set(dma.start, 1)
            await ctx.tick()
            ctx.set(dma.start, 0)
            elapsed = 1
            while not ctx.get(dma.done):
                await ctx.tick()
                elapsed += 1
            assert elapsed == isa.cycles(instr, params)
            (model_dma.store if instr.opcode is Opcode.STORE else model_dma.load)(
                instr, params, mem, "exact"
            )

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_process(dram.process)
    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(image, mem.dram)


def test_port_lanes_and_signatures() -> None:
    params = load_params("tiny")  # B = 16 bytes per cycle
    lanes = {buf: DMAEngine.port_lanes(buf, params) for buf in Buffer}
    assert lanes == {Buffer.ACT: 8, Buffer.WGT: 8, Buffer.IDX: 16, Buffer.ACC: 4, Buffer.VEC: 4}
    dut = DMAEngine(params)
    members = dut.signature.members
    assert members["bus"].signature == MemoryBusSignature(params)
    assert members["act_write"].flow == wiring.In
    assert members["act_write"].signature.flip() == WideWritePortSignature(
        depth_entries=params.act_buffer_entries, element_bits=16, lanes=8
    )
    assert members["idx_read"].signature.flip() == WideReadPortSignature(
        depth_entries=params.wgt_buffer_entries, element_bits=params.index_bits, lanes=16
    )
    bus = MemoryBusSignature(params)
    assert repr(bus) == "MemoryBusSignature(bytes_per_beat=16)"
    assert bus.bytes_per_beat == 16 and hash(bus) == hash(MemoryBusSignature(params))
    assert bus != MemoryBusSignature(params.replace(dram_bytes_per_cycle=32))
    assert bus.members["w"].signature.members["data"].shape == 128
    with pytest.raises(ValueError, match="kind must be 'read' or 'write'"):
        dut.port(Buffer.ACT, "both")


def test_zero_latency_is_rejected() -> None:
    # A STORE needs one cycle to read the buffer before its first beat: SATParams rejects 0.
    with pytest.raises(ConfigError, match="dram_latency_cycles"):
        load_params("tiny").replace(dram_latency_cycles=0)
    dut = DMAEngine(load_params("tiny"))
    image = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError, match="1-D uint8"):
        DRAMModel(dut.bus, load_params("tiny"), np.zeros(4, dtype=np.uint16))
    with pytest.raises(ValueError, match="stall_probability"):
        DRAMModel(dut.bus, load_params("tiny"), image, stall_probability=1.0)


def _clocked() -> Module:
    """An empty design with a sync domain, to run the memory model on its own."""
    m = Module()
    m.domains.sync = ClockDomain()
    return m


@pytest.mark.sim
def test_memory_model_rejects_bad_accesses() -> None:
    """A request past the image, or write strobes past the request, stop the simulation."""
    params = load_params("tiny")
    for case in ("range", "strobe"):
        dut = DMAEngine(params)
        dram = DRAMModel(dut.bus, params, np.zeros(256, dtype=np.uint8))

        async def bench(ctx: Any, case: str = case, dut: DMAEngine = dut) -> None:
            bus = dut.bus
            ctx.set(bus.req.valid, 1)
            ctx.set(bus.req.write, 1)
            ctx.set(bus.req.addr, 250 if case == "range" else 0)
            ctx.set(bus.req.length_bytes, 10)
            ctx.set(bus.w.valid, 1)
            ctx.set(bus.w.strb, 0x7FF)
            for _ in range(params.dram_latency_cycles + 2):
                await ctx.tick()

        sim = Simulator(_clocked())
        sim.add_process(dram.process)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        match = "leaves the 0x100-byte image" if case == "range" else "reach past the 10 bytes"
        with pytest.raises(ValueError, match=match):
            sim.run()


def test_verilog_for_tiny(tmp_path: Path) -> None:
    dut = DMAEngine(load_params("tiny"))
    text = verilog.convert(dut, name="dma")
    (tmp_path / "dma.v").write_text(text)
    assert "module dma" in text
    for name in (
        "bus__req__addr",
        "bus__w__strb",
        "bus__r__data",
        "act_write__en",
        "vec_read__data",
    ):
        assert name in text


def test_vcu1525_converts_quickly() -> None:
    params = load_params("vcu1525")
    dut = DMAEngine(params)
    Fragment.get(dut, None)
    text = verilog.convert(dut, name="dma")
    assert DMAEngine.port_lanes(Buffer.IDX, params) == params.dram_bytes_per_cycle
    assert "bus__w__data" in text


@pytest.mark.sim
def test_memory_model_timing() -> None:
    """Beats of requests taken in cycles t and t+1 come from t + D without a gap, in order."""
    params = load_params("tiny").replace(dram_bytes_per_cycle=4, dram_latency_cycles=5)
    image = np.arange(64, dtype=np.uint8)
    bus = DMAEngine(params).bus
    dram = DRAMModel(bus, params, image)
    seen: list[tuple[int, int]] = []

    async def bench(ctx: Any) -> None:
        await ctx.tick()  # requests in cycles 1 and 2
        for addr, length in ((3, 10), (40, 2)):
            ctx.set(bus.req.valid, 1)
            ctx.set(bus.req.addr, addr)
            ctx.set(bus.req.length_bytes, length)
            assert ctx.get(bus.req.ready)
            await ctx.tick()
        ctx.set(bus.req.valid, 0)
        for cycle in range(3, 12):
            if ctx.get(bus.r.valid):
                seen.append((cycle, ctx.get(bus.r.data)))
            assert not ctx.get(bus.w.ready)
            await ctx.tick()

    sim = Simulator(_clocked())
    sim.add_process(dram.process)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    def word(*values: int) -> int:
        return int.from_bytes(bytes(values), "little")

    assert seen == [
        (6, word(3, 4, 5, 6)),
        (7, word(7, 8, 9, 10)),
        (8, word(11, 12)),  # past the end of the request: zeros
        (9, word(40, 41)),
    ]
    assert [(r.cycle, r.addr, r.length_bytes, r.write) for r in dram.requests] == [
        (1, 3, 10, False),
        (2, 40, 2, False),
    ]
    assert dram.beats == 4
