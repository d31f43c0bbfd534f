"""Tests of BDWP training on the 8x8 digits, nmsat.models.train and nmsat.models.datasets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.datasets import load_digits
from nmsat.models.train import TrainConfig, TrainResult, build_model, train, write_json


def _comparable(result: TrainResult) -> dict[str, Any]:
    data = result.to_json_dict()
    del data["seconds"]
    return data


@pytest.mark.parametrize(("n", "m", "sparsity"), [(1, 1, "dense"), (2, 4, "bdwp"), (2, 8, "bdwp")])
def test_mlp_learns_the_digits(n: int, m: int, sparsity: Any) -> None:
    result = train(TrainConfig(model="mlp", n=n, m=m, sparsity=sparsity, epochs=10, seed=0))
    assert result.test_accuracy >= 0.9
    assert result.train_accuracy >= 0.95
    assert len(result.loss_curve) == 10
    assert result.loss_curve[-1] < result.loss_curve[0] / 5
    assert len(result.step_losses) == 10 * 43  # ceil(1347 / 32) steps per epoch
    assert result.test_count == 450
    expected = "dense" if sparsity == "dense" else sparsity
    assert result.sparse_layers == (
        f"0:Linear:{expected}",
        f"2:Linear:{expected}",
        "4:Linear:dense",  # the classifier
    )


def test_forward_only_and_float64_train() -> None:
    forward = train(TrainConfig(sparsity="forward", n=2, m=8, epochs=5))
    assert forward.test_accuracy >= 0.9
    double = train(TrainConfig(n=2, m=8, epochs=5, dtype="float64"))
    assert double.test_accuracy >= 0.9


def test_cnn_trains_with_a_sparse_middle_conv() -> None:
    result = train(TrainConfig(model="cnn", n=2, m=8, epochs=2, seed=1))
    assert result.sparse_layers == ("0:Conv2d:dense", "4:Conv2d:bdwp", "8:Linear:dense")
    assert result.test_accuracy >= 0.85


def test_same_seed_same_result_and_other_seed_differs() -> None:
    cfg = TrainConfig(n=2, m=4, epochs=2, seed=3)
    first, second = train(cfg), train(cfg)
    assert _comparable(first) == _comparable(second)
    other = train(dataclasses.replace(cfg, seed=4))
    assert other.step_losses != first.step_losses


def test_exact_update_gives_the_same_training() -> None:
    # No subnormal appears in this run, so the WUVE's FP32 step and numpy agree bit for bit.
    cfg = TrainConfig(n=2, m=8, epochs=1, seed=5)
    fast = train(cfg)
    exact = train(dataclasses.replace(cfg, exact_update=True))
    assert fast.step_losses == exact.step_losses


def test_json_output(tmp_path: Path) -> None:
    result = train(TrainConfig(n=2, m=8, epochs=2))
    path = tmp_path / "out" / "run.json"
    write_json(result, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["test_accuracy"] == result.test_accuracy
    assert data["loss_curve"] == list(result.loss_curve)
    assert len(data["loss_curve"]) == 2
    assert data["config"]["n"] == 2
    assert data["config"]["sparsity"] == "bdwp"
    assert data["pattern"] == "2:8"
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    train(TrainConfig(epochs=1), progress=True)
    captured = capsys.readouterr()
    assert "mlp 2:8 bdwp" in captured.err
    assert captured.out == ""


def test_divergence_is_a_one_line_error() -> None:
    with pytest.raises(NmsatError, match="diverged") as info:
        train(TrainConfig(lr=1e4, epochs=2))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("model", "resnet", "model 'resnet'"),
        ("dataset", "mnist", "dataset 'mnist'"),
        ("sparsity", "both", "sparsity 'both'"),
        ("dtype", "float16", "dtype 'float16'"),
        ("epochs", 0, "epochs = 0"),
        ("batch_size", 2.5, "batch_size = 2.5"),
        ("seed", -1, "seed = -1"),
        ("lr", 0.0, "lr = 0.0"),
        ("lr", float("inf"), "lr = inf"),
        ("momentum", 1.0, "momentum = 1.0"),
        ("weight_decay", -0.1, "weight_decay = -0.1"),
        ("srste_lambda", float("nan"), "srste_lambda = nan"),
    ],
)
def test_config_validation(field: str, value: Any, needle: str) -> None:
    with pytest.raises(NmsatError, match=needle) as info:
        TrainConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_config_pattern() -> None:
    with pytest.raises(ShapeError, match="m = 6"):
        TrainConfig(n=2, m=6)
    assert TrainConfig(n=2, m=8).pattern == "2:8"
    assert TrainConfig(n=8, m=8).pattern == "dense"
    assert TrainConfig(n=2, m=8, sparsity="dense").pattern == "dense"


def test_build_model_shapes() -> None:
    rng = np.random.default_rng(0)
    mlp = build_model(TrainConfig(), rng)
    assert mlp.forward(np.zeros((2, 64), dtype=np.float32), training=False).shape == (2, 10)
    cnn = build_model(TrainConfig(model="cnn"), rng)
    out = cnn.forward(np.zeros((2, 1, 8, 8), dtype=np.float32), training=False)
    assert out.shape == (2, 10)
    assert out.dtype == np.float32


def test_digits_split_is_stratified_and_seeded() -> None:
    x_train, y_train, x_test, y_test = load_digits(0)
    assert x_train.shape == (1347, 64)
    assert x_test.shape == (450, 64)
    assert x_train.dtype == np.float32
    assert x_train.min() == 0.0
    assert x_train.max() == 1.0
    counts_train, counts_test = np.bincount(y_train), np.bincount(y_test)
    shares = counts_test / (counts_train + counts_test)
    assert np.all(np.abs(shares - 0.25) < 0.01)
    again = load_digits(0)
    np.testing.assert_array_equal(again[0], x_train)
    other = load_digits(1)
    assert not np.array_equal(other[1], y_train)
    with pytest.raises(NmsatError, match=r"test_fraction = 1\.0"):
        load_digits(0, test_fraction=1.0)


def test_missing_scikit_learn_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(NmsatError, match=r"install nmsat\[data\]") as info:
        load_digits(0)
    assert "\n" not in str(info.value)
