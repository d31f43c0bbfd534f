"""Tiling properties (hypothesis): every output element of a layer's FF pass is computed and
stored exactly once, no element outside the tensor's interior is written, the BP pass writes
each input-gradient element at most once and reaches every element a kernel position reaches,
and every program passes the verifier (buffer bounds, tokens, segments)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nmsat.compiler import CompileOptions, Program, compile_model
from nmsat.hw.isa import Opcode
from nmsat.hw.params import load_params
from nmsat.models.zoo import Conv2d, Linear, Model, Softmax

TINY = load_params("tiny")


def _stored_elements(prog: Program, tensor: str) -> Counter[int]:
    """Element offsets (fp16) written into ``tensor`` by the program's STOREs."""
    t = prog.tensor(tensor)
    written: Counter[int] = Counter()
    for op in prog.ops:
        if op.opcode is not Opcode.STORE or tensor not in op.dram_writes:
            continue
        f = dict(op.fields)
        base = (f["dram_addr"] - t.addr) // 2
        blocks = np.arange(f["blocks"]) * f["block_stride"]
        planes = np.arange(f["planes"]) * f["plane_stride"]
        rows = np.arange(f["rows"]) * f["dram_stride"]
        cols = np.arange(f["cols"])
        grid = base + (
            blocks[:, None, None, None]
            + planes[None, :, None, None]
            + rows[None, None, :, None]
            + cols[None, None, None, :]
        )
        written.update(grid.ravel().tolist())
    return written


def _interior(t_shape: tuple[int, ...], pad: int) -> set[int]:
    c, hp, wp, b = t_shape
    idx = np.arange(c * hp * wp * b).reshape(t_shape)
    return set(idx[:, pad : hp - pad, pad : wp - pad, :].ravel().tolist())


@st.composite
def _convs(draw: st.DrawFn) -> tuple[Model, tuple[int, int]]:
    nm = draw(st.sampled_from([(1, 1), (2, 4), (2, 8)]))
    m = nm[1]
    c_in = m * draw(st.integers(1, 3))
    c_mid = m * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, k // 2))
    size = draw(st.integers(max(k, 2), 6))  # the classifier row must fit half of WGT
    batch = draw(st.integers(1, 3))
    first = Conv2d(name="c0", c_in=8, c_out=c_in, kh=1, kw=1, h_in=size, w_in=size)
    conv = Conv2d(
        name="c1",
        c_in=c_in,
        c_out=c_mid,
        kh=k,
        kw=k,
        stride=stride,
        padding=pad,
        h_in=size,
        w_in=size,
    )
    h_out, w_out = conv.output_shape[1], conv.output_shape[2]
    fc = Linear(name="fc", c_in=c_mid * h_out * w_out, c_out=4, sparse=False)
    layers = (first, conv, fc, Softmax(name="softmax", shape=(1, 4)))
    return Model("prop", batch, layers, (8, size, size)), nm


@settings(max_examples=40, deadline=None)
@given(_convs(), st.booleans())
def test_ff_outputs_once_and_bp_inputs_at_most_once(
    case: tuple[Model, tuple[int, int]], schedule: bool
) -> None:
    model, nm = case
    prog = compile_model(model, nm, TINY, CompileOptions(schedule=schedule))  # verifies
    # FF: every interior element of c1's output exactly once, nothing else.
    out = prog.tensor("act:c1")
    written = _stored_elements(prog, "act:c1")
    assert set(written) == _interior(out.shape, out.padding)
    assert max(written.values()) == 1
    # BP: c1's input gradient (c0's output): each element at most once, every element that
    # some kernel position reaches written.
    conv = model.layer("c1")
    assert isinstance(conv, Conv2d)
    name = next(t.name for t in prog.tensors if t.name.startswith("grad:c0<-c1"))
    grad = prog.tensor(name)
    written = _stored_elements(prog, name)
    assert max(written.values()) == 1
    interior = _interior(grad.shape, grad.padding)
    assert set(written) <= interior
    reached = 0
    h_out, w_out = conv.output_shape[1], conv.output_shape[2]
    for h in range(conv.h_in):
        for w in range(conv.w_in):
            hits = [
                (i, j)
                for i in range(conv.kh)
                for j in range(conv.kw)
                if (h + conv.padding - i) % conv.stride == 0
                and (w + conv.padding - j) % conv.stride == 0
                and 0 <= (h + conv.padding - i) // conv.stride < h_out
                and 0 <= (w + conv.padding - j) // conv.stride < w_out
            ]
            reached += bool(hits)
    assert len(written) >= reached * conv.c_in * model.batch


def test_every_zoo_model_compiles_and_verifies_on_vcu1525_resnet18() -> None:
    from nmsat.models.zoo import get_model

    prog = compile_model(get_model("resnet18_cifar", 8), (2, 8), load_params("vcu1525"))
    assert sum(op.opcode is Opcode.GEMM for op in prog.ops) > 100
