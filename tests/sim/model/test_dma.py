"""LOAD and STORE: 4-D strided round trips against the loop nest of docs/isa.md, events."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw import isa
from nmsat.hw.isa import Buffer, Opcode
from nmsat.hw.params import load_params
from nmsat.sim.model import Machine, load, store

TINY = load_params("tiny")
STORE_BASE = 1 << 20


def _addresses(f: dict[str, int], base: int, size: int) -> np.ndarray:
    """Byte address of every element, in loop-nest order (docs/isa.md, LOAD)."""
    k, p, r, c = np.indices((f["blocks"], f["planes"], f["rows"], f["cols"])).reshape(4, -1)
    offset = k * f["block_stride"] + p * f["plane_stride"] + r * f["dram_stride"] + c
    return np.asarray(base + offset * size)


@st.composite
def transfers(draw: st.DrawFn) -> dict[str, int]:
    f = {"cols": draw(st.integers(1, 5))}
    extent = f["cols"]
    for count, stride in (
        ("rows", "dram_stride"),
        ("planes", "plane_stride"),
        ("blocks", "block_stride"),
    ):
        f[count] = draw(st.integers(1, 3))
        f[stride] = (
            draw(st.integers(extent, extent + 4)) if f[count] > 1 else draw(st.integers(0, 9))
        )
        extent = (f[count] - 1) * f[stride] + extent
    f["dram_addr"] = draw(st.integers(0, 64))
    f["buf_addr"] = draw(st.integers(0, 200))
    f["buf_pad"] = draw(st.integers(0, 7))
    return f


def _buffer_elements(f: dict[str, int]) -> np.ndarray:
    """Buffer element of every transferred element, in loop-nest order (docs/isa.md)."""
    pad = f["buf_pad"]
    rp = f["cols"] | 1 if pad & 1 else f["cols"]
    pp = f["rows"] * rp | 1 if pad & 2 else f["rows"] * rp
    bp = f["planes"] * pp | 1 if pad & 4 else f["planes"] * pp
    k, p, r, c = np.indices((f["blocks"], f["planes"], f["rows"], f["cols"])).reshape(4, -1)
    return np.asarray(f["buf_addr"] + k * bp + p * pp + r * rp + c)


@given(transfers(), st.sampled_from(list(Buffer)), st.integers(0, 2**32 - 1))
def test_load_store_round_trip(f: dict[str, int], buffer: Buffer, seed: int) -> None:
    size = isa.element_bytes(buffer)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, 4096, dtype=np.uint8)
    machine = Machine(TINY, "exact")
    machine.write_dram(0, image.tobytes())
    before = machine.read_buffer(buffer, 0, 400)
    words = [
        isa.encode(Opcode.LOAD, push=[isa.Queue.STORE], buffer=buffer, **f),
        isa.encode(
            Opcode.STORE, pop=[isa.Queue.LOAD], buffer=buffer, **{**f, "dram_addr": STORE_BASE}
        ),
        isa.encode(Opcode.HALT),
    ]
    machine.load_program(words)
    assert machine.run().status == "done"

    addresses = _addresses(f, f["dram_addr"], size)
    moved = image[addresses[:, None] + np.arange(size)]  # [elements, bytes]
    if buffer is Buffer.IDX:
        moved = moved & ((1 << TINY.index_bits) - 1)
    count = addresses.size
    elements = _buffer_elements(f)
    after = machine.read_buffer(buffer, 0, 400)
    loaded = after[elements]
    assert loaded.view(np.uint8).reshape(count, size).tolist() == moved.tolist()
    outside = np.ones(400, dtype=bool)
    outside[elements] = False
    assert np.array_equal(after.view(f"u{size}")[outside], before.view(f"u{size}")[outside])

    span = int(_addresses(f, 0, size).max()) + size
    stored = np.frombuffer(machine.read_dram(STORE_BASE, span + 8), dtype=np.uint8)
    expected = np.zeros(span + 8, dtype=np.uint8)
    expected[(addresses - f["dram_addr"])[:, None] + np.arange(size)] = moved
    assert stored.tolist() == expected.tolist()


def test_dma_events_and_perf_mode() -> None:
    instr = isa.make(
        Opcode.LOAD, buffer=Buffer.WGT, rows=3, cols=5, planes=2, dram_stride=8, plane_stride=40
    )
    events = load(instr, TINY)
    assert events.dram_read_bytes == events.wgt_write_bytes == 3 * 5 * 2 * 2
    assert events.instructions == 1
    assert events.busy_load_cycles == isa.cycles(instr, TINY) == 8 + 6 * 1
    out = isa.make(Opcode.STORE, buffer=Buffer.IDX, rows=4, cols=40, dram_stride=40)
    events = store(out, TINY)
    assert events.dram_write_bytes == events.idx_read_bytes == 160
    assert events.busy_store_cycles == 8 + 4 * 3
    assert events.dram_read_bytes == events.busy_load_cycles == 0
