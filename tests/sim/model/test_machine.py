"""The Machine: errors reported with their pc (docs/isa.md rules 4 and 6), runs in
segments, the host interface, and agreement of the three modes."""

from __future__ import annotations

import numpy as np
import pytest

from nmsat.hw import isa, numerics
from nmsat.hw.errors import IsaError
from nmsat.hw.isa import Buffer, Opcode
from nmsat.hw.isa_asm import assemble, program_to_bytes
from nmsat.hw.params import SATParams, load_params
from nmsat.models import nm
from nmsat.sim.events import EVENT_FIELDS
from nmsat.sim.model import DEFAULT_DRAM_IMAGE_BYTES, Machine, MachineError, RunResult

TINY = load_params("tiny")


def _run(
    program: str | list[int],
    params: SATParams = TINY,
    mode: str = "perf",
    start_pc: int = 0,
    **kwargs: int,
) -> RunResult:
    machine = Machine(params, mode, **kwargs)  # type: ignore[arg-type]
    machine.load_program(assemble(program) if isinstance(program, str) else program)
    return machine.run(start_pc)


def _error(result: RunResult) -> tuple[str, int, int | None, str | None]:
    return result.status, result.cycles, result.pc, result.opcode


# -- errors ------------------------------------------------------------------------------


def test_illegal_word_stops_the_run_after_its_fetch() -> None:
    words = [*assemble("NOP queue=load\nNOP queue=compute"), 7, isa.encode(Opcode.HALT)]
    result = _run(words)
    assert _error(result) == ("error", 3, 2, None)
    assert result.cause == "illegal instruction: opcode 7 is not defined"
    assert result.trace.pc.tolist() == [0, 1, 2]
    assert result.trace.start.tolist() == [1, 2, -1]


def test_unused_bits_and_broken_rules_are_illegal() -> None:
    word = isa.encode(Opcode.NOP) | 1 << 200
    assert _error(_run([word])) == ("error", 1, 0, "NOP")
    gemm = isa.encode(Opcode.GEMM, n=2, m=4, rows=1, cols=1, depth=4, interleave=9)
    result = _run([gemm, isa.encode(Opcode.HALT)])
    assert _error(result) == ("error", 1, 0, "GEMM")
    assert result.cause is not None and "interleave=9" in result.cause


def test_out_of_bounds_buffer_address() -> None:
    size = isa.buffer_entries(Buffer.ACT, TINY)
    text = f"NOP queue=load\nLOAD buffer=ACT buf_addr={size - 3} rows=1 cols=4\nHALT"
    for mode in ("perf", "exact"):
        result = _run(text, mode=mode)
        assert _error(result) == ("error", 2, 1, "LOAD")
        assert result.cause is not None and "overruns the ACT buffer" in result.cause


def test_dram_beyond_the_image() -> None:
    text = "LOAD buffer=ACT dram_addr=0x1ff8 rows=1 cols=8\nHALT"
    result = _run(text, mode="exact", dram_bytes=8192)
    assert _error(result) == ("error", 1, 0, "LOAD")
    assert result.cause is not None and "DRAM image" in result.cause
    assert _run(text, mode="perf", dram_bytes=8192).status == "done"  # perf keeps no image
    assert _run(text.replace("0x1ff8", "0x1ff0"), mode="exact", dram_bytes=8192).status == "done"
    past = f"STORE buffer=ACC dram_addr={TINY.dram_bytes - 4} rows=1 cols=2\nHALT"
    result = _run(past, mode="perf")
    assert _error(result) == ("error", 1, 0, "STORE")


def test_token_overflow_names_the_pushing_instruction() -> None:
    # Nine pushes load -> compute with token_depth 8; the ninth completes at cycle 10.
    result = _run("NOP queue=load push=compute\n" * 9 + "HALT")
    assert _error(result) == ("error", 10, 8, "NOP")
    assert result.cause == "token overflow: load -> compute would hold 9 tokens (token_depth 8)"


@pytest.mark.parametrize("pops", [True, False])
def test_a_push_and_a_pop_in_one_cycle_at_depth_do_not_overflow(pops: bool) -> None:
    # Eight tokens load -> compute wait at cycle 10; at cycle 12 pc 10 pushes a ninth while
    # pc 9 (released by the VEC's token at 12) takes one.
    waits = "pop=load,update" if pops else "pop=update"
    text = "VEC push=compute op=COPY length=36 dst_buf=VEC src0_buf=VEC\n"
    text += "NOP queue=load push=compute\n" * 8
    text += f"NOP queue=compute {waits}\nNOP queue=load push=compute\n"
    text += "NOP queue=compute pop=load\n" * (8 if pops else 9) + "HALT"
    result = _run(text)
    if pops:
        assert result.status == "done", result.cause
        assert result.trace.start[9] == result.trace.complete[10] == 12
    else:
        assert _error(result) == ("error", 12, 10, "NOP")


def test_deadlock_names_the_oldest_waiting_instruction() -> None:
    result = _run("NOP queue=prune\nNOP queue=compute pop=load\nNOP queue=store pop=update\nHALT")
    # Quiescent once the prune NOP has completed (2) and HALT's fetch (3) is past: cycle 4.
    assert _error(result) == ("error", 4, 1, "NOP")
    assert result.cause == (
        "token deadlock: NOP on the compute queue waits for a token from load that no queue "
        "can send"
    )


def test_deadlock_behind_a_full_fifo() -> None:
    # Depth 1: pc 1 cannot be fetched before pc 0 starts, which needs pc 2's token.
    params = TINY.replace(queue_depths=(4, 1, 4, 4, 4))
    text = "NOP queue=compute pop=load\nNOP queue=compute\nNOP queue=load push=compute\nHALT"
    result = _run(text, params)
    assert _error(result) == ("error", 1, 0, "NOP")
    assert result.trace.pc.tolist() == [0]
    assert _run(text).status == "done"  # depth 4: pc 2 is fetched and unblocks pc 0


def test_running_off_the_end_is_an_error() -> None:
    result = _run("NOP queue=update\nNOP queue=update")
    assert _error(result) == ("error", 3, 2, None)
    assert result.cause == "no HALT: pc 2 is past the end of the program (2 instructions)"
    assert result.trace.pc.tolist() == [0, 1]
    result = _run("HALT", start_pc=5)
    assert _error(result) == ("error", 1, 5, None)
    assert len(result.trace) == 0


def test_a_negative_start_pc_is_a_usage_error() -> None:
    machine = Machine(TINY, "perf")
    with pytest.raises(MachineError, match="start_pc"):
        machine.run(-1)


# -- segments and the host interface -------------------------------------------------------


def test_segments_restart_the_cycle_count_and_keep_the_data() -> None:
    machine = Machine(TINY, "exact")
    machine.write_dram(0x100, np.arange(16, dtype=np.float16))
    machine.load_program(
        assemble(
            "LOAD buffer=ACT buf_addr=4 dram_addr=0x100 rows=1 cols=16\nHALT\n"
            "STORE buffer=ACT buf_addr=4 dram_addr=0x800 rows=2 cols=8 dram_stride=16\nHALT"
        )
    )
    first, second = machine.run(), machine.run(start_pc=2)
    assert first.status == second.status == "done"
    assert first.trace.fetch[0] == second.trace.fetch[0] == 0
    assert second.trace.pc.tolist() == [2, 3]
    data = np.frombuffer(machine.read_dram(0x800, 64), dtype=np.float16)
    assert data[:8].tolist() == list(range(8))
    assert data[16:24].tolist() == list(range(8, 16))
    assert not data[8:16].any()


def test_program_file_bytes() -> None:
    words = assemble("NOP queue=load\nHALT")
    machine = Machine(TINY, "perf")
    machine.load_program(program_to_bytes(words))
    assert machine.program == tuple(words)
    assert machine.run().cycles == 2
    with pytest.raises(IsaError):
        machine.load_program(b"not a program")
    with pytest.raises(MachineError, match="not an integer"):
        machine.load_program([1.5])  # type: ignore[list-item]


def test_host_access_checks() -> None:
    machine = Machine(TINY, "exact", dram_bytes=4096)
    assert machine.dram_bytes == 4096
    with pytest.raises(MachineError, match="image"):
        machine.write_dram(4090, b"12345678")
    with pytest.raises(MachineError, match="image"):
        machine.read_dram(-1, 2)
    with pytest.raises(MachineError, match="float16"):
        machine.write_buffer(Buffer.ACT, 0, np.zeros(2, dtype=np.float32))
    with pytest.raises(MachineError, match="overruns"):
        machine.read_buffer(Buffer.VEC, isa.buffer_entries(Buffer.VEC, TINY) - 1, 2)
    machine.write_buffer(Buffer.IDX, 0, np.array([255, 3], dtype=np.uint8))
    assert machine.read_buffer(Buffer.IDX, 0, 2).tolist() == [(1 << TINY.index_bits) - 1, 3]
    perf = Machine(TINY, "perf")
    with pytest.raises(MachineError, match="perf"):
        perf.read_buffer(Buffer.ACT, 0, 1)
    with pytest.raises(MachineError, match="perf"):
        perf.write_dram(0, b"x")
    with pytest.raises(MachineError, match="mode"):
        Machine(TINY, "slow")  # type: ignore[arg-type]
    with pytest.raises(MachineError, match="dram_bytes"):
        Machine(TINY, "exact", dram_bytes=TINY.dram_bytes + 1)
    assert Machine(load_params("vcu1525"), "exact").dram_bytes == DEFAULT_DRAM_IMAGE_BYTES


# -- modes, events and progress ------------------------------------------------------------

MIXED = """
LOAD push=compute buffer=ACT rows=16 cols=8 dram_stride=8 buf_pad=1
LOAD push=prune buffer=VEC buf_addr=64 rows=4 cols=16 dram_stride=16 dram_addr=0x400
PRUNE pop=load push=compute n=2 m=4 rows=4 cols=16 src_addr=64
GEMM pop=load,prune push=store n=2 m=4 rows=4 cols=8 depth=16 interleave=2 b_pad=1 c_pad=1
GEMM push=update n=1 m=1 rows=4 cols=8 depth=16 interleave=1 c_addr=64 b_pad=1 c_pad=1
VEC pop=compute push=store op=RELU length=35 dst_buf=ACC src0_buf=ACC dst_addr=64 src0_addr=64
STORE pop=compute buffer=ACC rows=4 cols=8 dram_stride=8 dram_addr=0x1000 buf_pad=1
STORE pop=update buffer=ACC buf_addr=64 rows=4 cols=8 dram_stride=8 dram_addr=0x2000 buf_pad=1
HALT
"""
# B (ACT) and C (ACC) rows at the odd pitch 9: the packed pitch 8 would put a column of B
# and of C in one bank (docs/isa.md, bank conflicts).


def _mixed_outputs(mode: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = numerics.to_fp16(rng.standard_normal((16, 8)))
    w = numerics.to_fp32(rng.standard_normal((4, 16)))
    machine = Machine(TINY, mode)  # type: ignore[arg-type]
    machine.write_dram(0, b)
    machine.write_dram(0x400, w)
    machine.load_program(assemble(MIXED))
    assert machine.run().status == "done"
    out1 = np.frombuffer(machine.read_dram(0x1000, 128), dtype=np.float32).reshape(4, 8)
    out2 = np.frombuffer(machine.read_dram(0x2000, 128), dtype=np.float32).reshape(4, 8)
    return b, w, out1, out2


def test_mixed_program_equals_the_numpy_reference() -> None:
    b, w, out1, out2 = _mixed_outputs("exact", 3)
    values, indices = nm.compress(w, 2, 4, axis=1)
    a16 = numerics.to_fp16(values)
    expected1 = numerics.gemm_nm(a16, indices, 2, 4, b)
    dense_a = np.concatenate([a16.reshape(-1), np.zeros(32, np.float16)]).reshape(4, 16)
    expected2 = numerics.relu(numerics.gemm(dense_a, b))
    assert numerics.fp32_bits(out1).tolist() == numerics.fp32_bits(expected1).tolist()
    assert numerics.fp32_bits(out2).tolist() == numerics.fp32_bits(expected2).tolist()
    _, _, fast1, fast2 = _mixed_outputs("fast", 3)
    np.testing.assert_allclose(fast1, out1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast2, out2, rtol=1e-5, atol=1e-5)


def test_modes_agree_on_timing_and_events() -> None:
    results = [_run(MIXED, mode=mode) for mode in ("perf", "fast", "exact")]
    assert results[0].status == "done", results[0].cause
    assert results[0] == results[1] == results[2]


def test_events_sum_the_instructions() -> None:
    result = _run(MIXED)
    instrs = [isa.decode(word) for word in assemble(MIXED)]
    busy = dict.fromkeys(isa.Queue, 0)
    for instr in instrs:
        if instr.queue is not None:
            busy[instr.queue] += isa.cycles(instr, TINY)
    events = result.events
    assert events.instructions == result.instructions == len(instrs)
    for queue, cycles in busy.items():
        assert getattr(events, f"busy_{queue.name.lower()}_cycles") == cycles
    assert events.dram_read_bytes == 16 * 8 * 2 + 4 * 16 * 4
    assert events.dram_write_bytes == 2 * 4 * 8 * 4
    assert events.macs_dense_equivalent == 2 * 4 * 8 * 16
    assert set(events.to_dict()) == set(EVENT_FIELDS)


def test_progress_is_reported() -> None:
    calls: list[tuple[str, int, int]] = []
    machine = Machine(TINY, "exact")
    machine.load_program(assemble(MIXED))
    machine.run(progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert ("timing", 9, 9) in calls
    assert calls[-1] == ("execute", 8, 8)
