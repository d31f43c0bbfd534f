"""Three-way agreement, first leg: a compiled training step on the Python model in exact mode
equals the numpy BDWP reference (models.bdwp with SATArith) bit for bit.

The reference below is written from the BDWP definition (PAPER.md), not from the compiler:
FF with the FF copy, host loss, BP with the BP copy of the same (pre-update) weights, dense
WU, the fused SGD update with the SR-STE mask E_F, then next step's compressed copies.
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
from nmsat.models.zoo import get_model
from nmsat.sim.host import softmax_loss_grad
from nmsat.sim.runner import default_data, load_machine, read_tensor, simulate

TINY = load_params("tiny")
SAT = bdwp.SATArith()


def _reference_mlp_step(prog: Any, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """Expected contents of external memory after one step of the mlp.

    With pre-generation the compressed copies in memory are next step's (from the updated
    weights); without it, they are this step's, made at the start of FF and BP.
    """
    n, m = prog.nm
    layers = [name for name, _ in prog.layers]
    sparse = dict(prog.layers)
    lr, mom, wd, lam = (float(v) for v in data["hyper"])
    x = data["act:input"].reshape(64, -1).T.astype(np.float32)  # (B, C_in)
    acts = [x]
    masks = []
    out: dict[str, np.ndarray] = {}
    for index, name in enumerate(layers):
        w = data[f"w:{name}"]
        ff, _bp = sparse[name]
        mk = bdwp.bdwp_masks(w, n, m) if ff else bdwp.bdwp_masks(w, 1, 1)
        masks.append(mk)
        y = bdwp.linear_forward(w, acts[-1], mk.ff, arith=SAT)
        if index < len(layers) - 1:
            y = numerics.relu(y)
        acts.append(numerics.to_fp16(y).astype(np.float32))
    logits = acts[-1]
    dy = softmax_loss_grad(logits.T, data["labels"]).T.astype(np.float32)
    for index in reversed(range(len(layers))):
        name = layers[index]
        w = data[f"w:{name}"]
        dx, dw = bdwp.linear_backward(
            w, acts[index], dy, masks[index].bp, arith=SAT, input_grad=index > 0
        )
        w_new, v_new = numerics.sgd_update(
            w, dw, np.zeros_like(w), masks[index].ff, lr, mom, wd, lam
        )
        out[f"w:{name}"] = w_new
        out[f"v:{name}"] = v_new
        ff, _ = sparse[name]
        if ff:
            w_copy = w_new if prog.options.pregen else w
            vals, idx = compress(w_copy, n, m, axis=1)
            out[f"ff:{name}"] = numerics.to_fp16(vals)
            out[f"ff_idx:{name}"] = idx
            if index:  # the first layer has no BP pass, hence no BP copy
                bvals, bidx = compress(w_copy, n, m, axis=0)
                out[f"bp0:{name}"] = numerics.to_fp16(bvals).T
                out[f"bp0_idx:{name}"] = bidx.T
        if index:
            g = numerics.to_fp16(dx).astype(np.float32)
            out[f"grad:{layers[index - 1]}<-{name}"] = g.T  # dx of this layer, FP16
            dy = numerics.to_fp16(numerics.relu_grad(g, acts[index])).astype(np.float32)
    for index, name in enumerate(layers[:-1]):
        out[f"act:{name}"] = numerics.to_fp16(acts[index + 1].T)
    return out


@pytest.mark.parametrize(
    "options",
    [
        CompileOptions(),
        CompileOptions(pregen=False),
        CompileOptions(schedule=False, interleave=False),
    ],
    ids=["all", "no-pregen", "serial"],
)
@pytest.mark.parametrize("nm", [(2, 8), (2, 4), (1, 1)], ids=["2:8", "2:4", "dense"])
def test_mlp_step_bit_exact(nm: tuple[int, int], options: CompileOptions) -> None:
    prog = compile_model(get_model("mlp", 8), nm, TINY, options)
    data = default_data(prog, seed=3)
    machine = load_machine(prog, TINY, "exact", data)
    result = simulate(prog, TINY, "exact", data=data, machine=machine)
    assert result.cycles > 0
    expected = _reference_mlp_step(prog, data)
    checked = 0
    for name, want in expected.items():
        if name.startswith(("ff", "bp0")) and nm == (1, 1):
            continue
        got = read_tensor(machine, prog.tensor(name)).reshape(want.shape)
        if want.dtype == np.uint8:
            np.testing.assert_array_equal(got & 7, want, err_msg=name)
        else:
            np.testing.assert_array_equal(
                got.view(np.uint8),
                np.ascontiguousarray(want.astype(got.dtype)).view(np.uint8),
                err_msg=name,
            )
        checked += 1
    assert checked >= 8


def test_fast_mode_is_close_to_exact() -> None:
    """Fast mode (float32 matmuls) gives the exact mode's results within FP rounding."""
    prog = compile_model(get_model("mlp", 8), (2, 8), TINY)
    data = default_data(prog, seed=4)
    results = {}
    for mode in ("fast", "exact"):
        machine = load_machine(prog, TINY, mode, data)
        step = simulate(prog, TINY, mode, data=data, machine=machine)
        results[mode] = (
            step.cycles,
            {
                n: read_tensor(machine, prog.tensor(n))
                for n in ("w:fc1", "w:fc2", "w:fc3", "act:fc3")
            },
        )
    assert results["fast"][0] == results["exact"][0]  # timing does not depend on the mode
    for name, exact in results["exact"][1].items():
        fast = results["fast"][1][name]
        np.testing.assert_allclose(
            fast.astype(np.float64), exact.astype(np.float64), rtol=2e-3, atol=2e-3, err_msg=name
        )
