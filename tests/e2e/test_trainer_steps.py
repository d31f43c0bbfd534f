"""Several training steps through the Python model (exact mode) equal the numpy trainer's.

The trainer is models.layers' Sequential with SATArith GEMMs, FP16Storage after each GEMM
layer (the accelerator stores activations and gradients in FP16), the exact SGD update and the
reference loss; both see the same digits batches, initial weights and learning-rate schedule.
After three steps the master weights and momentum are equal bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nmsat.compiler import compile_model
from nmsat.hw import numerics
from nmsat.hw.params import load_params
from nmsat.models.bdwp import SATArith
from nmsat.models.datasets import load_digits
from nmsat.models.layers import FP16Storage, Linear, ReLU, Sequential, softmax_cross_entropy
from nmsat.models.optim import SGD
from nmsat.models.zoo import get_model
from nmsat.sim.runner import load_machine, read_tensor, simulate, write_tensor

TINY = load_params("tiny")
BATCH = 8
STEPS = 3
LR, MOMENTUM, DECAY, LAMBDA = 0.1, 0.9, 5e-4, 2e-4


def _trainer(nm: tuple[int, int], rng: np.random.Generator) -> Sequential:
    n, m = nm
    sparse = {"n": n, "m": m, "sparsity": "bdwp" if n < m else "dense"}
    sat = SATArith()
    return Sequential(
        Linear(64, 128, bias=False, rng=rng, arith=sat, input_grad=False, **sparse),
        FP16Storage(),
        ReLU(),
        Linear(128, 64, bias=False, rng=rng, arith=sat, **sparse),
        FP16Storage(),
        ReLU(),
        Linear(64, 10, bias=False, rng=rng, arith=sat),
        FP16Storage(),
    )


@pytest.mark.slow
@pytest.mark.parametrize("nm", [(2, 8), (1, 1)], ids=["2:8", "dense"])
def test_three_steps_equal_the_numpy_trainer(nm: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    x_train, y_train, _, _ = load_digits(0)
    model = _trainer(nm, rng)
    optimizer = SGD(
        model.params(),
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=DECAY,
        srste_lambda=LAMBDA,
        exact=True,
    )
    prog = compile_model(get_model("mlp", BATCH), nm, TINY)
    names = ["fc1", "fc2", "fc3"]
    weights = [p for p in model.params() if p.name == "weight"]
    initial = {f"w:{name}": p.value for name, p in zip(names, weights, strict=True)}
    machine = load_machine(prog, TINY, "exact", initial)
    for step in range(STEPS):
        lr = 0.5 * LR * (1.0 + math.cos(math.pi * step / STEPS))
        batch = slice(step * BATCH, (step + 1) * BATCH)
        x = numerics.to_fp16(x_train[batch]).astype(np.float32)  # the input is stored in FP16
        labels = y_train[batch]
        # the numpy trainer
        optimizer.lr = lr
        logits = model.forward(x, training=True)
        _, dlogits = softmax_cross_entropy(logits, labels)
        model.backward(dlogits)
        optimizer.step()
        # the accelerator: new batch, labels and learning rate; the copies carry over
        write_tensor(machine, prog.tensor("act:input"), x.T.reshape(64, 1, 1, BATCH))
        write_tensor(
            machine, prog.tensor("hyper"), np.array([lr, MOMENTUM, DECAY, LAMBDA], np.float32)
        )
        data = {"labels": labels}
        simulate(prog, TINY, "exact", data=data, machine=machine, run_init=step == 0)
    for i, (name, param) in enumerate(zip(names, weights, strict=True)):
        got_w = read_tensor(machine, prog.tensor(f"w:{name}"))
        got_v = read_tensor(machine, prog.tensor(f"v:{name}"))
        np.testing.assert_array_equal(
            got_w.view(np.uint32), param.value.view(np.uint32), err_msg=f"w:{name}"
        )
        np.testing.assert_array_equal(
            got_v.view(np.uint32), optimizer.velocities[i * 1].view(np.uint32), err_msg=f"v:{name}"
        )
