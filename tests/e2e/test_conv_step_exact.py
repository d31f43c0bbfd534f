"""Three-way agreement, first leg, for convolutions: a compiled training step of a small CNN
(3x3 convs with padding and stride 2, ReLU, a classifier) on the Python model in exact mode
equals the numpy BDWP reference (models.bdwp with SATArith) bit for bit.

Activations live channel-major ``[C][H][W][B]`` in external memory, the reference works in
NCHW; the conversion is a transpose, never arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nmsat.compiler import CompileOptions, compile_model
from nmsat.hw import numerics
from nmsat.hw.params import load_params
from nmsat.models import bdwp
from nmsat.models.nm import compress
from nmsat.models.zoo import Conv2d, Linear, Model, ReLU, Softmax
from nmsat.sim.host import softmax_loss_grad
from nmsat.sim.runner import default_data, load_machine, read_tensor, simulate

TINY = load_params("tiny")
SAT = bdwp.SATArith()
BATCH = 2


def _cnn() -> Model:
    layers = [
        Conv2d(name="c1", c_in=8, c_out=16, kh=3, kw=3, padding=1, h_in=6, w_in=6),
        ReLU(name="r1", shape=(16, 6, 6)),
        Conv2d(name="c2", c_in=16, c_out=16, kh=3, kw=3, stride=2, padding=1, h_in=6, w_in=6),
        ReLU(name="r2", shape=(16, 3, 3)),
        Linear(name="fc", c_in=144, c_out=8, sparse=False),
        Softmax(name="softmax", shape=(1, 8)),
    ]
    return Model("cnn_e2e", BATCH, tuple(layers), (8, 6, 6))


def _interior(t: Any, values: np.ndarray) -> np.ndarray:
    """[C][H+2p][W+2p][B] -> NCHW of the interior."""
    p = t.padding
    inner = values[:, p : values.shape[1] - p, p : values.shape[2] - p, :]
    return np.ascontiguousarray(inner.transpose(3, 0, 1, 2)).astype(np.float32)


def _w4(w: np.ndarray, layer: Conv2d) -> np.ndarray:
    """Master weights [C_out][(kh, kw, C_in)] -> (C_out, C_in, kh, kw)."""
    return np.ascontiguousarray(
        w.reshape(layer.c_out, layer.kh, layer.kw, layer.c_in).transpose(0, 3, 1, 2)
    )


def _reference(prog: Any, model: Model, data: dict[str, Any]) -> dict[str, np.ndarray]:
    n, m = prog.nm
    sparse = dict(prog.layers)
    lr, mom, wd, lam = (float(v) for v in data["hyper"])
    x = _interior(prog.tensor("act:input"), data["act:input"])
    convs = [model.layer("c1"), model.layer("c2")]
    acts, cols, masks = [x], [], []
    for layer in convs:
        w4 = _w4(data[f"w:{layer.name}"], layer)
        mk = bdwp.bdwp_masks(w4, n, m) if sparse[layer.name][0] else bdwp.bdwp_masks(w4, 1, 1)
        y, col = bdwp.conv2d_forward(w4, acts[-1], mk.ff, layer.stride, layer.padding, arith=SAT)
        masks.append(mk)
        cols.append(col)
        acts.append(numerics.to_fp16(numerics.relu(y)).astype(np.float32))
    wf = data["w:fc"]
    flat = acts[-1].reshape(BATCH, -1)
    logits = numerics.to_fp16(bdwp.linear_forward(wf, flat, np.ones(wf.shape, bool), arith=SAT))
    dy = softmax_loss_grad(logits.T.astype(np.float32), data["labels"]).T.astype(np.float32)
    out: dict[str, np.ndarray] = {}
    dx, dwf = bdwp.linear_backward(wf, flat, dy, np.ones(wf.shape, bool), arith=SAT)
    out["w:fc"], out["v:fc"] = numerics.sgd_update(
        wf, dwf, np.zeros_like(wf), np.ones(wf.shape, bool), lr, mom, wd, lam
    )
    g = numerics.to_fp16(dx).astype(np.float32).reshape(acts[-1].shape)
    for index in reversed(range(len(convs))):
        layer = convs[index]
        g = numerics.to_fp16(numerics.relu_grad(g, acts[index + 1])).astype(np.float32)
        w = data[f"w:{layer.name}"]
        w4 = _w4(w, layer)
        dxc, dw4 = bdwp.conv2d_backward(
            w4,
            cols[index],
            acts[index].shape,
            g,
            masks[index].bp,
            layer.stride,
            layer.padding,
            arith=SAT,
            input_grad=index > 0,
        )
        dw = dw4.transpose(0, 2, 3, 1).reshape(w.shape)
        ff_mask = masks[index].ff.transpose(0, 2, 3, 1).reshape(w.shape)
        w_new, v_new = numerics.sgd_update(w, dw, np.zeros_like(w), ff_mask, lr, mom, wd, lam)
        out[f"w:{layer.name}"], out[f"v:{layer.name}"] = w_new, v_new
        if sparse[layer.name][0] and prog.options.pregen:
            vals, idx = compress(w_new, n, m, axis=1)
            out[f"ff:{layer.name}"] = numerics.to_fp16(vals)
            out[f"ff_idx:{layer.name}"] = idx
        g = numerics.to_fp16(dxc).astype(np.float32)
    out["act:c1"] = acts[1]  # the fused ReLU writes the conv's tensor
    out["act:c2"] = acts[2]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("nm", [(2, 8), (1, 1)], ids=["2:8", "dense"])
@pytest.mark.parametrize(
    "options",
    [CompileOptions(), CompileOptions(schedule=False), CompileOptions(pregen=False)],
    ids=["all", "serial", "no-pregen"],
)
def test_cnn_step_bit_exact(nm: tuple[int, int], options: CompileOptions) -> None:
    model = _cnn()
    prog = compile_model(model, nm, TINY, options)
    data = default_data(prog, seed=5)
    machine = load_machine(prog, TINY, "exact", data)
    simulate(prog, TINY, "exact", data=data, machine=machine)
    expected = _reference(prog, model, data)
    for name, want in sorted(expected.items(), key=lambda kv: not kv[0].startswith("act:")):
        t = prog.tensor(name)
        got = read_tensor(machine, t)
        if name.startswith("act:"):
            got = _interior(t, got)
        got = got.reshape(want.shape)
        if want.dtype == np.uint8:
            np.testing.assert_array_equal(got & 7, want, err_msg=name)
        else:
            np.testing.assert_array_equal(
                np.ascontiguousarray(got.astype(np.float32)).view(np.uint32),
                np.ascontiguousarray(want.astype(np.float32)).view(np.uint32),
                err_msg=name,
            )
