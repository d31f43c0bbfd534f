"""VEC and UPDATE: exact mode against nmsat.hw.numerics, events."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw import isa, numerics
from nmsat.hw.isa import Buffer, Opcode, VecOp
from nmsat.hw.params import load_params
from nmsat.models import nm
from nmsat.sim.model import Machine, update, vec

TINY = load_params("tiny")
FP16 = (Buffer.ACT, Buffer.WGT)
VECTOR_BUFFERS = [Buffer.ACT, Buffer.WGT, Buffer.ACC, Buffer.VEC]
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e-6, 70000.0]


def _data(rng: np.random.Generator, buffer: Buffer, length: int) -> np.ndarray:
    values = rng.standard_normal(length) * 3
    special = rng.random(length) < 0.2
    values[special] = rng.choice(SPECIALS, size=int(special.sum()))
    if buffer in FP16:
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float32).astype(np.float16)
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    bits[rng.random(length) < 0.05] = 0xFFC1_2345  # a NaN with a payload
    return bits.view(np.float32)


def _widen(x: np.ndarray) -> np.ndarray:
    return numerics.to_fp32(x) if x.dtype == np.float16 else x


@given(
    st.sampled_from(list(VecOp)),
    st.sampled_from(VECTOR_BUFFERS),
    st.sampled_from(VECTOR_BUFFERS),
    st.sampled_from(VECTOR_BUFFERS),
    st.integers(1, 40),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_vec_exact_equals_numerics(
    op: VecOp, dst: Buffer, src0: Buffer, src1: Buffer, length: int, in_place: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x0, x1 = _data(rng, src0, length), _data(rng, src1, length)
    imm = np.float32(rng.choice([0.5, -3.0, 1e-30, np.inf])).view(np.uint32)
    machine = Machine(TINY, "exact")
    machine.write_buffer(src0, 10, x0)
    machine.write_buffer(src1, 300, x1)
    dst_addr = 10 if in_place and dst is src0 else 900
    fields = {"op": op, "length": length, "imm": int(imm), "dst_buf": dst, "dst_addr": dst_addr}
    fields |= {"src0_buf": src0, "src0_addr": 10, "src1_buf": src1, "src1_addr": 300}
    machine.load_program([isa.encode(Opcode.VEC, **fields), isa.encode(Opcode.HALT)])
    assert machine.run().status == "done"
    a, b = _widen(x0), _widen(x1)
    y = {
        VecOp.COPY: lambda: a,
        VecOp.RELU: lambda: numerics.relu(a),
        VecOp.RELU_GRAD: lambda: numerics.relu_grad(a, b),
        VecOp.ADD: lambda: numerics.fp32_add(a, b),
        VecOp.SCALE: lambda: numerics.fp32_mul(np.array([imm]).view(np.float32), a),
    }[op]()
    expected = numerics.to_fp16(y) if dst in FP16 else y
    got = machine.read_buffer(dst, dst_addr, length)
    assert got.view(f"u{got.itemsize}").tolist() == expected.view(f"u{got.itemsize}").tolist()


@given(
    st.sampled_from([(1, 1), (4, 4), *TINY.nm_patterns]),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_update_exact_equals_sgd_update(nm_: Any, groups: int, seed: int) -> None:
    n, m = nm_
    length = groups * m
    rng = np.random.default_rng(seed)
    w = numerics.to_fp32(rng.standard_normal(length))
    v = numerics.to_fp32(rng.standard_normal(length) * 0.1)
    g = numerics.to_fp32(rng.standard_normal(length) * 0.01)
    hp = numerics.to_fp32(rng.choice([0.1, 0.9, 1e-4, 2e-4, 0.0, 1e-40], size=4))
    _, indices = nm.compress(w.reshape(groups, m), n, m, axis=1)
    machine = Machine(TINY, "exact")
    machine.write_buffer(Buffer.VEC, 100, w)
    machine.write_buffer(Buffer.VEC, 300, v)
    machine.write_buffer(Buffer.ACC, 50, g)
    machine.write_buffer(Buffer.IDX, 7, indices)
    machine.write_buffer(Buffer.VEC, 0, hp)
    word = isa.encode(
        Opcode.UPDATE,
        length=length,
        n=n,
        m=m,
        w_addr=100,
        v_addr=300,
        g_addr=50,
        idx_addr=7,
        hp_addr=0,
    )
    machine.load_program([word, isa.encode(Opcode.HALT)])
    assert machine.run().status == "done"
    mask = nm.nm_mask(w.reshape(groups, m), n, m, axis=1).reshape(-1)
    w_new, v_new = numerics.sgd_update(w, g, v, mask, *(float(x) for x in hp))
    got_w = machine.read_buffer(Buffer.VEC, 100, length)
    got_v = machine.read_buffer(Buffer.VEC, 300, length)
    assert numerics.fp32_bits(got_w).tolist() == numerics.fp32_bits(w_new).tolist()
    assert numerics.fp32_bits(got_v).tolist() == numerics.fp32_bits(v_new).tolist()


def test_vec_events() -> None:
    add = isa.make(
        Opcode.VEC,
        op=VecOp.ADD,
        length=10,
        dst_buf=Buffer.ACT,
        src0_buf=Buffer.ACC,
        src1_buf=Buffer.ACC,
    )
    ev = vec(add, TINY)
    assert (ev.wuve_elements, ev.wuve_fp32_adds, ev.wuve_fp32_muls) == (10, 10, 0)
    assert (ev.acc_read_bytes, ev.act_write_bytes) == (80, 20)
    assert ev.busy_update_cycles == isa.cycles(add, TINY)
    scale = isa.make(
        Opcode.VEC,
        op=VecOp.SCALE,
        length=10,
        dst_buf=Buffer.VEC,
        src0_buf=Buffer.WGT,
        src1_buf=Buffer.ACC,
    )
    ev = vec(scale, TINY)
    assert (ev.wuve_fp32_adds, ev.wuve_fp32_muls) == (0, 10)
    assert (ev.wgt_read_bytes, ev.acc_read_bytes, ev.vec_write_bytes) == (20, 0, 40)


def test_update_events() -> None:
    instr = isa.make(Opcode.UPDATE, length=16, n=2, m=8, v_addr=16)
    ev = update(instr, TINY)
    assert (ev.wuve_elements, ev.wuve_fp32_adds, ev.wuve_fp32_muls) == (16, 64, 64)
    assert (ev.vec_read_bytes, ev.vec_write_bytes) == ((32 + 4) * 4, 32 * 4)
    assert (ev.acc_read_bytes, ev.idx_read_bytes) == (64, 4)
    assert ev.busy_update_cycles == isa.cycles(instr, TINY)
