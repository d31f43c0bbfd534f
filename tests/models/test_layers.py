"""Tests of the training layers and the optimizer, nmsat.models.layers and nmsat.models.optim.

Every layer's backward is checked in float64 against central finite differences of its own
forward pass (dense weights, so the true gradient), for the input and for every parameter.
The optimizer is checked against the update order of the numerics contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from nmsat.hw import numerics as nx
from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.layers import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    Param,
    ReLU,
    Residual,
    Sequential,
    effective_sparsity,
    softmax_cross_entropy,
)
from nmsat.models.nm import nm_mask
from nmsat.models.optim import SGD

F64 = NDArray[np.float64]
EPS = 1e-6


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_layer(layer: Layer, x: F64, seed: int = 0) -> None:
    """Compare backward with finite differences of sum(dy * forward(x)), input and params."""
    y = layer.forward(x, training=True)
    dy = _rng(seed + 1).standard_normal(y.shape)
    dx = layer.backward(dy)
    grads = [p.grad.copy() for p in layer.params()]

    def loss() -> float:
        return float(np.sum(dy * layer.forward(x, training=True)))

    dx_fd = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + EPS
        up = loss()
        x[index] = saved - EPS
        down = loss()
        x[index] = saved
        dx_fd[index] = (up - down) / (2 * EPS)
    np.testing.assert_allclose(dx, dx_fd, rtol=1e-5, atol=1e-7)
    for param, grad in zip(layer.params(), grads, strict=True):
        fd = np.zeros_like(param.value)
        for index in np.ndindex(param.value.shape):
            saved = param.value[index]
            param.value[index] = saved + EPS
            up = loss()
            param.value[index] = saved - EPS
            down = loss()
            param.value[index] = saved
            fd[index] = (up - down) / (2 * EPS)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7, err_msg=param.name)


def test_linear_dense() -> None:
    layer = Linear(6, 4, rng=_rng(), dtype=np.float64)
    _check_layer(layer, _rng(2).standard_normal((3, 6)))


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0), (2, 2)])
def test_conv2d_dense(stride: int, padding: int) -> None:
    layer = Conv2d(2, 3, 3, stride=stride, padding=padding, rng=_rng(), dtype=np.float64)
    _check_layer(layer, _rng(3).standard_normal((2, 2, 5, 4)))


def test_relu() -> None:
    x = _rng(4).standard_normal((3, 5))
    x[np.abs(x) < 0.05] = 0.5  # keep away from the kink
    _check_layer(ReLU(), x)


@pytest.mark.parametrize(("kernel", "stride"), [(2, None), (3, 2), (2, 1)])
def test_max_pool(kernel: int, stride: int | None) -> None:
    _check_layer(MaxPool2d(kernel, stride), _rng(5).standard_normal((2, 2, 5, 6)))


def test_max_pool_values_and_ties() -> None:
    x = np.array([[[[1.0, 3.0, 2.0, 2.0], [0.0, -1.0, 2.0, 2.0]]]])
    pool = MaxPool2d(2)
    np.testing.assert_array_equal(pool.forward(x), [[[[3.0, 2.0]]]])
    # The gradient of a tie goes to the first maximum (row-major in the window).
    np.testing.assert_array_equal(
        pool.backward(np.array([[[[1.0, 5.0]]]])), [[[[0, 1, 5, 0], [0, 0, 0, 0]]]]
    )


@pytest.mark.parametrize(("kernel", "stride"), [(2, None), (3, 2), (2, 1)])
def test_avg_pool(kernel: int, stride: int | None) -> None:
    _check_layer(AvgPool2d(kernel, stride), _rng(6).standard_normal((2, 2, 5, 6)))


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 2)])
def test_batch_norm_training(shape: tuple[int, ...]) -> None:
    layer = BatchNorm(shape[1], dtype=np.float64)
    layer.gamma.value = _rng(7).standard_normal(shape[1]) + 1
    layer.beta.value = _rng(8).standard_normal(shape[1])
    _check_layer(layer, _rng(9).standard_normal(shape))


def test_batch_norm_statistics() -> None:
    x = _rng(10).standard_normal((8, 3, 2, 2)) * 3 + 1
    layer = BatchNorm(3, momentum=1.0, dtype=np.float64)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(layer.running_mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.running_var, x.var(axis=(0, 2, 3), ddof=1))
    # Evaluation uses the running statistics: the batch of one is not normalised to zero.
    one = x[:1]
    expected = (one - layer.running_mean[None, :, None, None]) / np.sqrt(
        layer.running_var[None, :, None, None] + layer.eps
    )
    np.testing.assert_allclose(layer.forward(one, training=False), expected)
    with pytest.raises(ShapeError, match=r"need \(B, 3\)"):
        layer.forward(np.ones((2, 4)))


def test_flatten_and_sequential() -> None:
    model = Sequential(
        Conv2d(1, 2, 3, padding=1, rng=_rng(), dtype=np.float64),
        AvgPool2d(2),
        Flatten(),
        Linear(8, 3, rng=_rng(1), dtype=np.float64),
    )
    _check_layer(model, _rng(11).standard_normal((2, 1, 4, 4)))
    assert [p.name for p in model.params()] == ["weight", "bias", "weight", "bias"]


@pytest.mark.parametrize("projection", [False, True])
def test_residual_add(projection: bool) -> None:
    body = Sequential(Linear(4, 4, rng=_rng(), dtype=np.float64), BatchNorm(4, dtype=np.float64))
    shortcut = Linear(4, 4, bias=False, rng=_rng(1), dtype=np.float64) if projection else None
    block = Residual(body, shortcut)
    _check_layer(block, _rng(12).standard_normal((5, 4)))
    assert len(block.params()) == 4 + int(projection)


def test_residual_shape_mismatch() -> None:
    block = Residual(Linear(4, 3, rng=_rng(), dtype=np.float64))
    with pytest.raises(ShapeError, match="Residual"):
        block.forward(np.ones((2, 4)))


def test_softmax_cross_entropy() -> None:
    logits = _rng(13).standard_normal((4, 5)) * 3
    labels = np.array([0, 4, 2, 2])
    loss, grad = softmax_cross_entropy(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), labels])), rel=1e-12)
    fd = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += EPS
        minus[index] -= EPS
        fd[index] = (
            softmax_cross_entropy(plus, labels)[0] - softmax_cross_entropy(minus, labels)[0]
        ) / (2 * EPS)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
    # Stable for huge logits.
    big_loss, big_grad = softmax_cross_entropy(np.array([[1e4, 0.0]]), np.array([1]))
    assert big_loss == pytest.approx(1e4)
    assert np.isfinite(big_grad).all()
    with pytest.raises(ShapeError, match=r"labels span 0 \.\. 5"):
        softmax_cross_entropy(logits, np.array([0, 5, 1, 1]))
    with pytest.raises(ShapeError, match="need"):
        softmax_cross_entropy(logits, labels[:3])


def test_sparse_linear_uses_the_bdwp_masks() -> None:
    layer = Linear(16, 8, n=2, m=4, sparsity="bdwp", rng=_rng(), dtype=np.float64)
    assert layer.sparsity == "bdwp"
    x = _rng(14).standard_normal((3, 16))
    w = layer.weight.value
    y = layer.forward(x)
    np.testing.assert_allclose(y, x @ np.where(nm_mask(w, 2, 4, axis=1), w, 0).T + 0)
    np.testing.assert_array_equal(layer.weight.mask, nm_mask(w, 2, 4, axis=1))
    dy = _rng(15).standard_normal((3, 8))
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, dy @ np.where(nm_mask(w, 2, 4, axis=0), w, 0))
    np.testing.assert_allclose(layer.weight.grad, dy.T @ x)


def test_sparse_conv_masks_follow_the_weights() -> None:
    layer = Conv2d(8, 8, 3, padding=1, n=1, m=8, sparsity="forward", rng=_rng(), dtype=np.float64)
    x = _rng(16).standard_normal((1, 8, 3, 3))
    layer.forward(x)
    before = layer.weight.mask.copy()
    assert (before.sum(axis=1) == 1).all()
    layer.weight.value = -layer.weight.value[:, ::-1].copy()  # a new ranking along C_in
    layer.forward(x)
    np.testing.assert_array_equal(layer.weight.mask, before[:, ::-1])


@pytest.mark.parametrize(
    ("sparsity", "c_in", "c_out", "expected"),
    [
        ("bdwp", 16, 8, "bdwp"),
        ("bdwp", 16, 10, "dense"),  # BP groups along C_out = 10
        ("forward", 16, 10, "forward"),  # BP is dense anyway
        ("forward", 3, 16, "dense"),  # a first conv: C_in = 3
        ("dense", 16, 16, "dense"),
    ],
)
def test_effective_sparsity_policy(sparsity: Any, c_in: int, c_out: int, expected: str) -> None:
    assert effective_sparsity(sparsity, 2, 8, c_in, c_out) == expected
    assert Linear(c_in, c_out, n=2, m=8, sparsity=sparsity, rng=_rng()).sparsity == expected
    assert effective_sparsity("bdwp", 8, 8, 16, 16) == "dense"


def test_first_layer_skips_bp() -> None:
    layer = Linear(8, 4, input_grad=False, rng=_rng(), dtype=np.float64)
    x = _rng(17).standard_normal((2, 8))
    layer.forward(x)
    dy = np.ones((2, 4))
    assert not layer.backward(dy).any()
    np.testing.assert_allclose(layer.weight.grad, dy.T @ x)


def test_backward_before_forward_raises() -> None:
    with pytest.raises(RuntimeError, match="before a training forward"):
        ReLU().backward(np.ones(3))
    layer = Linear(4, 4, rng=_rng())
    layer.forward(np.ones((1, 4), dtype=np.float32), training=False)
    with pytest.raises(RuntimeError, match="Linear"):
        layer.backward(np.ones((1, 4), dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# Optimizer


def _param(dtype: Any, decay: bool = True) -> Param:
    rng = _rng(20)
    p = Param.create("weight", rng.standard_normal((4, 8)).astype(dtype), decay=decay)
    p.grad = rng.standard_normal((4, 8)).astype(dtype)
    p.mask = nm_mask(p.value, 2, 4, axis=1)
    return p


def test_sgd_step_order_float64() -> None:
    p = _param(np.float64)
    w0, g, mask = p.value.copy(), p.grad.copy(), p.mask.copy()
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-2, srste_lambda=0.5)
    opt.step()
    g2 = g + 1e-2 * w0 + np.where(mask, 0.0, 0.5 * w0)
    np.testing.assert_allclose(opt.velocities[0], g2, rtol=1e-15)
    np.testing.assert_allclose(p.value, w0 - 0.1 * g2, rtol=1e-15)
    # Second step: momentum accumulates the velocity.
    w1 = p.value.copy()
    opt.step()
    g2b = g + 1e-2 * w1 + np.where(mask, 0.0, 0.5 * w1)
    np.testing.assert_allclose(p.value, w1 - 0.1 * (0.9 * g2 + g2b), rtol=1e-14)


@pytest.mark.parametrize("exact", [False, True])
def test_sgd_float32_matches_the_wuve_bits(exact: bool) -> None:
    p = _param(np.float32)
    w0, g, mask = p.value.copy(), p.grad.copy(), p.mask.copy()
    opt = SGD([p], lr=0.05, momentum=0.9, weight_decay=5e-4, srste_lambda=2e-4, exact=exact)
    v = np.zeros_like(w0)
    w = w0
    for _ in range(3):
        opt.step()
        w, v = nx.sgd_update(w, g, v, mask, 0.05, 0.9, 5e-4, 2e-4)
        assert p.value.dtype == np.float32
        np.testing.assert_array_equal(nx.fp32_bits(p.value), nx.fp32_bits(w))
        np.testing.assert_array_equal(nx.fp32_bits(opt.velocities[0]), nx.fp32_bits(v))


def test_sgd_exact_flushes_subnormals() -> None:
    p = Param.create("weight", np.full((2,), 1e-30, dtype=np.float32), decay=True)
    p.grad = np.zeros(2, dtype=np.float32)
    p.mask = np.array([False, True])
    # lambda * w = 1e-38 * ... is subnormal: the WUVE flushes it, plain numpy keeps it.
    for exact, expect_zero in ((True, True), (False, False)):
        q = Param.create("weight", p.value.copy(), decay=True)
        q.grad, q.mask = p.grad, p.mask
        opt = SGD([q], lr=1.0, momentum=0.0, srste_lambda=1e-9, exact=exact)
        opt.step()
        assert (opt.velocities[0][0] == 0) == expect_zero


def test_sgd_skips_decay_and_srste_for_biases() -> None:
    p = _param(np.float64, decay=False)
    w0, g = p.value.copy(), p.grad.copy()
    SGD([p], lr=0.1, momentum=0.9, weight_decay=1.0, srste_lambda=1.0).step()
    np.testing.assert_allclose(p.value, w0 - 0.1 * g)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"lr": 0.0}, "lr = 0.0"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum = 1.0"),
        ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay = -1.0"),
        ({"lr": 0.1, "srste_lambda": float("nan")}, "srste_lambda = nan"),
    ],
)
def test_sgd_rejects_bad_hyper_parameters(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(NmsatError, match=needle):
        SGD([], **kwargs)
