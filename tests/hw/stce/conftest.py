"""Shared harness of the STCE tests: GEMMs in pysim against the Python model.

:class:`Harness` serves every STCE port from one :class:`amaranth.lib.memory.Memory` per
buffer with BankedBuffer's timing (read latency 1, data held while ``en`` is low, no
read-during-write transparency, writes stored at the end of the cycle). :func:`run_gemms`
loads a model :class:`~nmsat.sim.model.Memory` into it, issues a program of GEMMs with each
``start`` in the cycle of the previous ``done``, and checks against
:func:`nmsat.sim.model.gemm` in exact mode on the same contents: every GEMM's cycles equal
:func:`nmsat.hw.isa.cycles`, ``busy`` is high exactly between ``start`` and ``done``, and
the whole ACC buffer is equal bit for bit afterwards (so nothing outside C is written, the
elements between C's rows included when ``c_pad`` makes its pitch exceed ``cols``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory as AmaranthMemory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from numpy.typing import NDArray

from nmsat.hw import isa
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Buffer, Dataflow, Opcode
from nmsat.hw.params import SATParams
from nmsat.hw.stce import STCE
from nmsat.sim.model import Memory, gemm

_SPECIAL16 = (0x0000, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0xFE01, 0x3C00)
_SPECIAL32 = (0x0000_0000, 0x8000_0000, 0x8000_0001, 0x007F_FFFF, 0x7F80_0000, 0xFFC0_0001)

Program = list[isa.Instruction]
RunGemms = Callable[..., None]
#: One cycle's enabled ports of one kind (``act_read``, ``wgt_read``, ``idx_read``,
#: ``acc_read``, ``acc_write``), as (port, address) pairs in port order.
PortReads = list[tuple[int, int]]


def _fp16(rng: np.random.Generator, count: int, specials: float) -> NDArray[np.uint16]:
    """FP16 patterns of moderate magnitude and both signs (sums cancel and round); a
    fraction ``specials`` is random bits or special values (zeros, subnormals, inf, NaN)."""
    exponent = rng.integers(11, 20, size=count)
    bits = (rng.integers(0, 2, count) << 15) | (exponent << 10) | rng.integers(0, 1024, count)
    bits = np.where(rng.random(count) < specials / 2, rng.integers(0, 1 << 16, count), bits)
    corner = rng.choice(np.asarray(_SPECIAL16), size=count)
    return np.where(rng.random(count) < specials / 2, corner, bits).astype(np.uint16)


def _fp32(rng: np.random.Generator, count: int, specials: float) -> NDArray[np.uint32]:
    """FP32 initial sums: moderate magnitudes, a fraction ``specials`` of signed zeros,
    subnormals, infinities and NaNs."""
    exponent = rng.integers(118, 138, size=count)
    bits = (rng.integers(0, 2, count) << 31) | (exponent << 23) | rng.integers(0, 1 << 23, count)
    corner = rng.choice(np.asarray(_SPECIAL32), size=count)
    return np.where(rng.random(count) < specials, corner, bits).astype(np.uint32)


def random_memory(params: SATParams, seed: int, specials: float = 0.1) -> Memory:
    """A model memory with random ACT, WGT, ACC contents and random indices (the IDX buffer
    keeps their low ``index_bits``, so indices of a group of m < m_max may exceed m - 1 and
    need not increase: the GEMM must mask them and add in q order, as the model does)."""
    rng = np.random.default_rng(seed)
    mem = Memory(params, 4096)
    for buffer in (Buffer.ACT, Buffer.WGT):
        store = mem.buffers[buffer]
        store[:] = _fp16(rng, store.size, specials)
    acc = mem.buffers[Buffer.ACC]
    acc[:] = _fp32(rng, acc.size, specials)
    mem.write_idx(0, rng.integers(0, 256, mem.buffers[Buffer.IDX].size), "idx")
    return mem


def patterns(params: SATParams) -> list[tuple[int, int]]:
    """Every (n, m) the configuration runs: dense for each m the ISA allows, and its N:M."""
    return [(m, m) for m in (1, 2, 4, 8, 16)] + list(params.nm_patterns)


_OPERANDS = (("a_addr", Buffer.WGT), ("b_addr", Buffer.ACT), ("c_addr", Buffer.ACC))


def fit(params: SATParams, instr: isa.Instruction) -> isa.Instruction:
    """``instr`` with each operand address lowered, where needed, so that its span (with
    the pitches) ends inside its buffer."""
    fields = dict(instr.fields)
    for (name, buffer), span in zip(_OPERANDS, isa.gemm_spans(instr), strict=True):
        fields[name] = max(0, min(fields[name], isa.buffer_entries(buffer, params) - span))
    out = isa.make(Opcode.GEMM, **fields)
    check_unit_rules(out, params)
    return out


def check_unit_rules(instr: isa.Instruction, params: SATParams) -> None:
    """:func:`nmsat.hw.isa.check_for_params` without the bank-conflict rule: the STCE
    computes any layout (the harness serves it from one flat memory); that rule belongs to
    the top's banked buffers, and test_array_banks.py runs clashing layouts on purpose."""
    try:
        isa.check_for_params(instr, params)
    except IsaError as exc:
        if "bank conflict" not in str(exc):
            raise


def random_gemm(
    params: SATParams,
    rng: np.random.Generator,
    dataflow: Dataflow,
    pattern: tuple[int, int],
    *,
    c_addr: int | None = None,
    accumulate: int | None = None,
    pads: tuple[int, int, int] | None = None,
    b_trans: int | None = None,
) -> isa.Instruction:
    """A GEMM of a few folds in every dimension, its operands anywhere in their buffers,
    each operand's rows packed or padded to an odd pitch at random (or as ``pads`` says:
    ``a_pad``, ``b_pad``, ``c_pad``), B in a random layout (or as ``b_trans`` says)."""
    R, C = params.array_rows, params.array_cols
    n, m = pattern
    outer = C if dataflow is Dataflow.WS else R
    rows = int(rng.integers(1, min(3 * outer, 24) + 1))
    cols = int(rng.integers(1, min(5 * C, 24) + 1))
    groups = int(rng.integers(1, max(1, (3 * R + 2) // n) + 1))
    depth = groups * m
    a_pad, b_pad, c_pad = tuple(int(p) for p in rng.integers(0, 2, 3)) if pads is None else pads
    fields: dict[str, Any] = {
        "n": n,
        "m": m,
        "dataflow": dataflow,
        "accumulate": int(rng.integers(2)) if accumulate is None else accumulate,
        "b_trans": int(rng.integers(2)) if b_trans is None else b_trans,
        "interleave": int(rng.integers(1, params.interleave + 1)),
        "rows": rows,
        "cols": cols,
        "depth": depth,
        "a_pad": a_pad,
        "b_pad": b_pad,
        "c_pad": c_pad,
    }
    act = isa.buffer_entries(Buffer.ACT, params)
    while isa.gemm_spans(isa.make(Opcode.GEMM, **fields))[1] > act:
        fields["cols"] -= 1
    instr = isa.make(Opcode.GEMM, **fields)
    for (name, buffer), span in zip(_OPERANDS, isa.gemm_spans(instr), strict=True):
        room = isa.buffer_entries(buffer, params) - span
        fields[name] = int(rng.integers(0, room + 1))
    if c_addr is not None:
        fields["c_addr"] = c_addr
    return fit(params, isa.make(Opcode.GEMM, **fields))


def describe(instr: isa.Instruction) -> str:
    """One line naming a GEMM's fields, for assertion messages."""
    f = instr.fields
    return (
        f"{f['dataflow'].name} {f['n']}:{f['m']} rows={f['rows']} cols={f['cols']} "
        f"depth={f['depth']} accumulate={f['accumulate']} b_trans={f['b_trans']} "
        f"interleave={f['interleave']} a={f['a_addr']} b={f['b_addr']} c={f['c_addr']} "
        f"pads={f['a_pad']}{f['b_pad']}{f['c_pad']}"
    )


class Harness(wiring.Component):
    """The STCE with one memory per buffer behind its ports.

    Members
    -------
    start, gemm, busy, done
        The STCE's.
    """

    def __init__(self, params: SATParams) -> None:
        self.stce = STCE(params)
        shapes = {
            Buffer.ACT: 16,
            Buffer.WGT: 16,
            Buffer.IDX: params.index_bits,
            Buffer.ACC: 32,
        }
        self.memories = {
            buffer: AmaranthMemory(shape=bits, depth=isa.buffer_entries(buffer, params), init=[])
            for buffer, bits in shapes.items()
        }
        super().__init__(
            {
                "start": In(1),
                "gemm": In(isa.PAYLOADS[Opcode.GEMM]),
                "busy": Out(1),
                "done": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        stce = self.stce
        m.submodules.stce = stce
        for buffer, memory in self.memories.items():
            m.submodules[buffer.name.lower()] = memory
        m.d.comb += [
            stce.start.eq(self.start),
            stce.gemm.eq(self.gemm),
            self.busy.eq(stce.busy),
            self.done.eq(stce.done),
        ]
        reads = {
            Buffer.ACT: stce.act_read,
            Buffer.WGT: stce.wgt_read,
            Buffer.IDX: stce.idx_read,
            Buffer.ACC: stce.acc_read,
        }
        for buffer, ports in reads.items():
            for port in ports:
                mem_port = self.memories[buffer].read_port()
                m.d.comb += [
                    mem_port.addr.eq(port.addr),
                    mem_port.en.eq(port.en),
                    port.data[0].eq(mem_port.data),
                ]
        for port in stce.acc_write:
            mem_port = self.memories[Buffer.ACC].write_port()
            m.d.comb += [
                mem_port.addr.eq(port.addr),
                mem_port.en.eq(port.en),
                mem_port.data.eq(port.data[0]),
            ]
        return m


def _payload(instr: isa.Instruction) -> int:
    layout = isa.PAYLOADS[Opcode.GEMM]
    return (instr.encode() >> isa.HEADER.size) & ((1 << layout.size) - 1)


def _model(params: SATParams, mem: Memory, program: Program) -> NDArray[np.uint32]:
    """Run ``program`` on a copy of ``mem`` in exact mode; return the ACC buffer."""
    copy = Memory(params, 4096)
    for buffer in Buffer:
        copy.buffers[buffer][:] = mem.buffers[buffer]
    for instr in program:
        check_unit_rules(instr, params)
        gemm(instr, params, copy, "exact")
    return copy.buffers[Buffer.ACC].copy()


def _run_gemms(
    params: SATParams,
    batches: Sequence[tuple[Memory, Program]],
    gap_cycles: int = 0,
    act_reads: list[PortReads] | None = None,
    wgt_reads: list[PortReads] | None = None,
    idx_reads: list[PortReads] | None = None,
    acc_reads: list[PortReads] | None = None,
    acc_writes: list[PortReads] | None = None,
) -> None:
    """Run each batch's program from its memory contents, all in one simulation, and check
    cycles, ``busy`` and the ACC buffer against the model (see the module docstring).
    ``gap_cycles`` idle cycles separate two GEMMs (0: ``start`` in the ``done`` cycle).
    With ``act_reads`` (``wgt_reads``, ``idx_reads``, ``acc_reads``, ``acc_writes``), append
    to it every simulated cycle's enabled ``act_read`` (``wgt_read``, ``idx_read``,
    ``acc_read``, ``acc_write``) ports and their addresses."""
    harness = Harness(params)
    results: list[tuple[list[int], list[int], NDArray[np.uint32]]] = []
    stce = harness.stce
    watched = [
        (ports, out)
        for ports, out in (
            (stce.act_read, act_reads),
            (stce.wgt_read, wgt_reads),
            (stce.idx_read, idx_reads),
            (stce.acc_read, acc_reads),
            (stce.acc_write, acc_writes),
        )
        if out is not None
    ]

    async def monitor(ctx: Any) -> None:
        # Sampled at each clock edge: the values of the cycle that the edge ends.
        signals = [s for ports, _ in watched for port in ports for s in (port.en, port.addr)]
        async for _clock, _reset, *values in ctx.tick().sample(*signals):
            base = 0
            for ports, out in watched:
                here = values[base : base + 2 * len(ports)]
                out.append([(p, here[2 * p + 1]) for p in range(len(ports)) if here[2 * p]])
                base += 2 * len(ports)

    async def bench(ctx: Any) -> None:
        for mem, program in batches:
            for buffer, memory in harness.memories.items():
                for addr, value in enumerate(mem.buffers[buffer].tolist()):
                    ctx.set(memory.data[addr], value)
            cycles, busy_errors = [], []
            for number, instr in enumerate(program):
                ctx.set(harness.gemm.as_value(), _payload(instr))
                ctx.set(harness.start, 1)
                await ctx.tick()
                ctx.set(harness.start, 0)
                count = 1
                limit = 4 * isa.cycles(instr, params) + 100
                while not ctx.get(harness.done):
                    if not ctx.get(harness.busy):
                        busy_errors.append(number)
                    await ctx.tick()
                    count += 1
                    assert count < limit, f"no done after {limit} cycles: {describe(instr)}"
                if ctx.get(harness.busy):
                    busy_errors.append(number)
                cycles.append(count)
                for _ in range(gap_cycles):
                    await ctx.tick()
                    assert not ctx.get(harness.done) and not ctx.get(harness.busy)
            memory = harness.memories[Buffer.ACC]
            size = mem.buffers[Buffer.ACC].size
            acc = np.array([ctx.get(memory.data[a]) for a in range(size)], dtype=np.uint32)
            results.append((cycles, busy_errors, acc))

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if watched:
        sim.add_process(monitor)
    sim.run()

    for (mem, program), (cycles, busy_errors, acc) in zip(batches, results, strict=True):
        listing = "\n".join(describe(instr) for instr in program)
        assert cycles == [isa.cycles(i, params) for i in program], listing
        assert not busy_errors, f"busy wrong in GEMMs {busy_errors} of\n{listing}"
        want = _model(params, mem, program)
        wrong = np.flatnonzero(acc != want)
        assert wrong.size == 0, (
            f"ACC differs at {wrong[:8].tolist()} (of {wrong.size}): got "
            f"{[hex(v) for v in acc[wrong[:4]]]}, want {[hex(v) for v in want[wrong[:4]]]}\n"
            f"{listing}"
        )


class Tools(NamedTuple):
    """The harness's functions, for the test modules (conftest is not importable)."""

    run: RunGemms
    memory: Callable[..., Memory]
    gemm: Callable[..., isa.Instruction]
    patterns: Callable[[SATParams], list[tuple[int, int]]]
    describe: Callable[[isa.Instruction], str]
    fit: Callable[[SATParams, isa.Instruction], isa.Instruction]


@pytest.fixture(scope="session")
def stce() -> Tools:
    """Run GEMM programs on the STCE against the model, and make random ones."""
    return Tools(_run_gemms, random_memory, random_gemm, patterns, describe, fit)
