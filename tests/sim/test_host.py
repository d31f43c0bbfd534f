"""The host operations of functional runs (nmsat.sim.host): layouts, the layers without a
reference in models.layers checked against finite differences, the state across forward and
backward, and the runner's read-modify-write of a bordered tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nmsat.compiler import CompileOptions, HostOp, Program, Tensor
from nmsat.hw import numerics
from nmsat.hw.params import load_params
from nmsat.models.layers import BatchNorm, MaxPool2d
from nmsat.models.zoo import Model, Norm, Pool, ReLU
from nmsat.sim import runner
from nmsat.sim.host import (
    HostError,
    HostState,
    LayerNorm,
    PositionEmbedding,
    chw,
    gelu,
    gelu_grad,
    interior,
    softmax,
    softmax_grad,
    with_interior,
)
from nmsat.sim.model import Machine

RNG = np.random.default_rng(0)


def _numeric_grad(f: Any, x: np.ndarray, dy: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d(sum(f(x) * dy))/dx by central differences in float64."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float((f(x) * dy).sum())
        flat[i] = old - eps
        down = float((f(x) * dy).sum())
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def test_interior_and_with_interior_keep_the_border() -> None:
    t = Tensor("act:x", "fp16", (3, 6, 6, 2), "C,H,W,B", 0, padding=1)
    stored = np.zeros(t.shape, np.float16)
    stored[:, 1:5, 1:5, :] = RNG.standard_normal((3, 4, 4, 2)).astype(np.float16)
    x = interior(t, stored)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[1, 2], stored[2, 1:5, 1:5, 1])
    assert chw(t) == (3, 4, 4)
    stored[0, 0, 0, 0] = 7  # a border value a host write must not touch
    out = with_interior(t, stored, x * 2 + np.float32(1e-9))
    assert out[0, 0, 0, 0] == 7
    np.testing.assert_array_equal(
        out[:, 1:5, 1:5, :], numerics.to_fp16(x * 2).transpose(1, 2, 3, 0)
    )
    with pytest.raises(HostError):
        with_interior(t, stored, x[:, :2])


def test_layer_norm_matches_finite_differences() -> None:
    x = RNG.standard_normal((2, 5, 3, 1))
    dy = RNG.standard_normal(x.shape)
    layer = LayerNorm(5, axis=1)
    layer.gamma.value = RNG.standard_normal(5).astype(np.float32)
    layer.beta.value = RNG.standard_normal(5).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), _ln(x, layer), rtol=1e-6)
    dx = layer.backward(dy)

    def f(z: np.ndarray) -> np.ndarray:
        return _ln(z, layer)

    np.testing.assert_allclose(dx, _numeric_grad(f, x.copy(), dy), rtol=1e-4, atol=1e-6)
    x_hat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(layer.gamma.grad, (dy * x_hat).sum(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(layer.beta.grad, dy.sum(axis=(0, 2, 3)), rtol=1e-6)


def _ln(z: np.ndarray, layer: LayerNorm) -> np.ndarray:
    mean = z.mean(axis=1, keepdims=True)
    var = z.var(axis=1, keepdims=True)
    g = layer.gamma.value.astype(np.float64)[None, :, None, None]
    b = layer.beta.value.astype(np.float64)[None, :, None, None]
    return np.asarray((z - mean) / np.sqrt(var + layer.eps) * g + b)


def test_gelu_and_softmax_gradients() -> None:
    x = RNG.standard_normal((3, 7)).astype(np.float32) * 3
    np.testing.assert_allclose(
        gelu(np.array([0.0, 1.0, -1.0], np.float32)), [0, 0.8412, -0.1588], atol=1e-4
    )
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    x64 = x.astype(np.float64)

    def g64(z: np.ndarray) -> np.ndarray:
        c = np.sqrt(2 / np.pi)
        return np.asarray(0.5 * z * (1 + np.tanh(c * (z + 0.044715 * z**3))))

    np.testing.assert_allclose(gelu(x), g64(x64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        gelu_grad(x, dy), _numeric_grad(g64, x64.copy(), dy), rtol=1e-4, atol=1e-5
    )

    def s64(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    y = softmax(x, axis=1)
    np.testing.assert_allclose(y, s64(x64), rtol=1e-5)
    np.testing.assert_allclose(
        softmax_grad(y, dy, axis=1), _numeric_grad(s64, x64.copy(), dy), rtol=1e-4, atol=1e-6
    )


def test_position_embedding_prepends_the_class_token() -> None:
    layer = PositionEmbedding(features=3, tokens=5, prepend=1)
    layer.cls.value = np.array([1, 2, 3], np.float32)
    layer.pos.value = RNG.standard_normal((3, 5)).astype(np.float32)
    x = RNG.standard_normal((2, 3, 4, 1)).astype(np.float32)
    y = layer.forward(x)
    assert y.shape == (2, 3, 5, 1)
    np.testing.assert_array_equal(y[1, :, 0, 0], layer.cls.value + layer.pos.value[:, 0])
    np.testing.assert_array_equal(y[:, :, 1:, 0], x[..., 0] + layer.pos.value[:, 1:])
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(dy), dy[:, :, 1:])
    np.testing.assert_array_equal(layer.cls.grad, dy[:, :, 0, 0].sum(axis=0))
    np.testing.assert_array_equal(layer.pos.grad, dy[..., 0].sum(axis=0))


def _model(*layers: Any) -> Model:
    return Model("host_test", 2, tuple(layers), (4, 6, 6))


def test_batch_norm_state_matches_the_reference_layer() -> None:
    state = HostState(_model(Norm(name="bn", kind="batch", shape=(4, 6, 6))))
    x = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    y = state.forward("norm+relu", "bn", [x], (4, 6, 6))
    ref = BatchNorm(4)
    want = numerics.to_fp16(numerics.relu(ref.forward(x)))
    np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    dx = state.backward("norm_bwd", "bn", dy, [x], (4, 6, 6), hyper=(0.5, 0.9))
    np.testing.assert_array_equal(
        dx.view(np.uint16), numerics.to_fp16(ref.backward(dy)).view(np.uint16)
    )
    layer = state.layers["bn"]
    assert isinstance(layer, BatchNorm)
    # One SGD step from zero momentum, no decay: value - lr * grad.
    want_gamma, _ = numerics.sgd_update(
        np.ones(4, np.float32),
        ref.gamma.grad,
        np.zeros(4, np.float32),
        np.ones(4, bool),
        0.5,
        0.9,
        0,
        0,
    )
    np.testing.assert_array_equal(layer.gamma.value, want_gamma)
    np.testing.assert_array_equal(state.velocities["bn", "beta"], ref.beta.grad)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_padded_pooling(kind: str) -> None:
    record = Pool(name="p", kind=kind, c=4, h_in=6, w_in=6, kernel=3, stride=2, padding=1)
    state = HostState(_model(record))
    x = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    y = state.forward("pool", "p", [x], record.output_shape)
    xp = np.pad(
        x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf if kind == "max" else 0
    )
    win = np.stack([xp[:, :, i : i + 5 : 2, j : j + 5 : 2] for i in range(3) for j in range(3)])
    want = win.max(axis=0) if kind == "max" else win.mean(axis=0)
    np.testing.assert_allclose(y.astype(np.float32), numerics.to_fp16(want), rtol=0, atol=0)
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dx = state.backward("pool_bwd", "p", dy, [x], (4, 6, 6))
    assert dx.shape == x.shape
    if kind == "max":  # the gradient of a max lands on the window's first maximum
        ref = MaxPool2d(3, 2)
        ref.forward(xp)
        np.testing.assert_array_equal(dx, numerics.to_fp16(ref.backward(dy)[:, :, 1:-1, 1:-1]))
    else:  # the corner is in one window only, whose padding shares its gradient
        assert dx[0, 0, 0, 0] == numerics.to_fp16(dy[0, 0, 0, 0] / np.float32(9))


def test_attention_softmax_transposes_the_scores() -> None:
    heads, m, n = 2, 3, 4
    scores = RNG.standard_normal((2, heads, m, n)).astype(np.float32)  # [h][query][key]
    stored = np.ascontiguousarray(scores.transpose(0, 1, 3, 2)).reshape(2, heads * n, m, 1)
    state = HostState()
    y = state.forward("softmax", "s", [stored], (heads, m, n))
    np.testing.assert_array_equal(y, numerics.to_fp16(softmax(scores, axis=3)))
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dx = state.backward("softmax_bwd", "s", dy, [stored], (heads * n, m, 1))
    want = softmax_grad(softmax(scores, axis=3), dy, axis=3).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(dx, numerics.to_fp16(want.reshape(stored.shape)))


def test_reshapes_flatten_or_take_the_first_token() -> None:
    state = HostState()
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    flat = state.forward("reshape", "fc", [x], (36, 1, 1))
    np.testing.assert_array_equal(flat, numerics.to_fp16(x.reshape(2, 36, 1, 1)))
    back = state.backward("reshape_bwd", "fc", flat, [], (4, 3, 3))
    np.testing.assert_array_equal(back, numerics.to_fp16(x))
    tokens = RNG.standard_normal((2, 8, 5, 1)).astype(np.float32)
    first = state.forward("reshape", "head", [tokens], (8, 1, 1))
    np.testing.assert_array_equal(first, numerics.to_fp16(tokens[:, :, :1]))
    g = state.backward("reshape_bwd", "head", first, [], (8, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(g[:, :, 0], first[:, :, 0])
    assert not g[:, :, 1:].any()
    with pytest.raises(HostError):
        state.forward("reshape", "bad", [tokens], (3, 1, 1))


def test_state_errors() -> None:
    state = HostState()
    x = np.zeros((2, 4, 6, 6), np.float32)
    with pytest.raises(HostError, match="HostState\\(model\\)"):
        state.forward("norm", "bn", [x], (4, 6, 6))
    with pytest.raises(HostError, match="no forward pass"):
        state.backward("norm_bwd", "bn", x, [x], (4, 6, 6))
    with pytest.raises(HostError, match="not supported"):
        state.forward("dropout", "d", [x], (4, 6, 6))
    with pytest.raises(HostError, match="backward kind"):
        state.forward("norm_bwd", "bn", [x], (4, 6, 6))


def _program(tensors: tuple[Tensor, ...]) -> Program:
    return Program("host_test", 2, (1, 1), "tiny", CompileOptions(), tensors, ())


def test_run_host_reads_and_writes_the_dram_image() -> None:
    params = load_params("tiny")
    src = Tensor("act:c", "fp16", (4, 6, 6, 2), "C,H,W,B", 0, padding=0)
    dst = Tensor("act:bn", "fp16", (4, 8, 8, 2), "C,H,W,B", 1024, padding=1)
    prog = _program((src, dst))
    machine = Machine(params, "exact", dram_bytes=4096)
    x = RNG.standard_normal(src.shape).astype(np.float16)
    runner.write_tensor(machine, src, x)
    border = np.zeros(dst.shape, np.float16)
    border[1, 0, 3, 1] = 5  # not the host's to write
    runner.write_tensor(machine, dst, border)
    model = _model(Norm(name="bn", kind="batch", shape=(4, 6, 6)), ReLU(name="r", shape=(4, 6, 6)))
    state = HostState(model)
    op = HostOp("norm+relu", "bn", ("act:c",), ("act:bn",), 288)
    runner._run_host(machine, prog, op, None, state)
    got = runner.read_tensor(machine, dst)
    assert got[1, 0, 3, 1] == 5
    want = HostState(model).forward("norm+relu", "bn", [interior(src, x)], (4, 6, 6))
    np.testing.assert_array_equal(interior(dst, got), want.astype(np.float32))
    with pytest.raises(runner.SimulationError, match="HostState\\(model\\)"):
        runner._run_host(machine, prog, op, None, HostState())
    loss = HostOp("softmax_loss", "softmax", ("act:c",), ("act:bn",), 8)
    with pytest.raises(runner.SimulationError, match="labels"):
        runner._run_host(machine, prog, loss, None, state)


def test_host_add_of_vit_learns_its_parameters() -> None:
    state = HostState()  # the class token and position embedding need no layer record
    x = RNG.standard_normal((2, 3, 4, 1)).astype(np.float32)
    y = state.forward("add", "pos_embed", [x], (3, 5, 1))
    np.testing.assert_array_equal(y[:, :, 1:], numerics.to_fp16(x))
    assert not y[:, :, 0].any()  # both parameters start at zeros
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dx = state.backward("add_bwd", "pos_embed", dy, [x], (3, 4, 1), hyper=(0.25, 0.9))
    np.testing.assert_array_equal(dx, numerics.to_fp16(dy[:, :, 1:]))
    layer = state.layers["pos_embed"]
    assert isinstance(layer, PositionEmbedding)
    want, _ = numerics.sgd_update(
        np.zeros((3, 5), np.float32),
        dy[..., 0].sum(axis=0),
        np.zeros((3, 5), np.float32),
        np.ones((3, 5), bool),
        0.25,
        0.9,
        0,
        0,
    )
    np.testing.assert_array_equal(layer.pos.value, want)
    y2 = state.forward("add", "pos_embed", [x], (3, 5, 1))  # the next step sees them
    assert y2[:, :, 0].any()
    with pytest.raises(HostError, match="class token"):
        state.forward("add", "other", [x], (3, 7, 1))
