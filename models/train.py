"""Train small models with BDWP in numpy, to see what N:M sparsity costs in accuracy.

:func:`train` runs one configuration (:class:`TrainConfig`) end to end: load the data, build
the model, run SGD for some epochs, measure accuracy. Every step recomputes the N:M masks
from the current dense weights (SR-STE), runs FF with ``E_F``, BP with ``E_B`` (``bdwp``) or
the dense weights (``forward``), the dense WU pass, and the SGD step with the SR-STE term.

Models (decision; :mod:`nmsat.models.nm` has the dense-layer policy)
    ``mlp``: 64 -> 128 -> 64 -> 10, ReLU between; the first two layers are N:M (their C_in,
    64 and 128, and C_out, 128 and 64, divide by every supported M), so even the input layer
    is sparse; the classifier stays dense.
    ``cnn``: on 1 x 8 x 8 images, conv 3x3 1 -> 16 (dense: C_in = 1), BN, ReLU, max-pool 2,
    conv 3x3 16 -> 32 on 4 x 4 (N:M, no bias), BN, ReLU, flatten, linear 512 -> 10 (dense
    classifier). Pooling before the second conv keeps a run at about 4.5 s.
    The first layer of both skips its BP pass (its input is data).

Schedule (decision): the learning rate follows a cosine from ``lr`` down to 0 over all steps
(updated every step), so the last epochs take small steps and the final accuracy depends
little on the last few batches; momentum, weight decay and lambda are constant. Batches are
drawn from a fresh permutation every epoch; the last batch of an epoch may be smaller.

Determinism: everything random (initial weights, split, batch order) comes from
``numpy.random.default_rng(seed)`` in a fixed order, so one seed gives one result on one
machine and numpy build (BLAS may round differently elsewhere).

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (BDWP training, 2:8 accuracy).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (SR-STE: masks every iteration, lambda = 2e-4).
Ref: I. Loshchilov, F. Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
     ICLR 2017 (cosine learning-rate schedule).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from nmsat.hw.errors import NmsatError
from nmsat.hw.files import write_atomic

from .bdwp import SPARSITY_MODES, FloatArray, Sparsity
from .datasets import DIGITS_CLASSES, DIGITS_SHAPE, load_digits
from .layers import (
    BatchNorm,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    softmax_cross_entropy,
)
from .nm import check_nm
from .optim import SGD, SRSTE_LAMBDA

__all__ = [
    "DATASETS",
    "DTYPES",
    "MODELS",
    "ModelName",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "train",
    "write_json",
]

ModelName: TypeAlias = Literal["mlp", "cnn"]
"""Names of the models :func:`build_model` knows."""

MODELS: tuple[ModelName, ...] = ("mlp", "cnn")
"""Model names :func:`build_model` knows."""

DATASETS = ("digits",)
"""Dataset names :func:`train` knows."""

DTYPES = ("float32", "float64")
"""Training dtypes: float32 (the machine's master weights) or float64 (a reference)."""

# Evaluation batch: large enough to be fast, small enough to keep memory low.
_EVAL_BATCH = 512


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Members
    -------
    model : {"mlp", "cnn"}
        The architecture (module docstring).
    dataset : {"digits"}
        The data (:func:`nmsat.models.datasets.load_digits`).
    n, m : int
        The N:M pattern; ignored when ``sparsity`` is ``"dense"``; ``n == m`` is dense.
    sparsity : {"bdwp", "forward", "dense"}
        N:M in FF and BP, in FF only (SR-STE), or nowhere.
    epochs : int
        Passes over the training set, >= 1.
    seed : int
        Seed of the split, the initial weights and the batch order, >= 0.
    batch_size : int
        Images per step, >= 1.
    lr : float
        Peak learning rate (cosine schedule), > 0.
    momentum : float
        SGD momentum, ``0 <= momentum < 1``.
    weight_decay : float
        L2 factor on weights, >= 0.
    srste_lambda : float
        SR-STE factor on pruned weights, >= 0 (Zhou et al.: 2e-4).
    dtype : {"float32", "float64"}
        Arithmetic of the whole run.
    exact_update : bool
        Run the SGD step through :func:`nmsat.hw.numerics.sgd_update` (bit-exact WUVE,
        slower) instead of plain numpy in the same order (:mod:`nmsat.models.optim`).

    Raises
    ------
    NmsatError
        On construction, if a field is out of range (one line naming the field and value).
    ShapeError
        If ``n:m`` is not a supported pattern.
    """

    model: ModelName = "mlp"
    dataset: Literal["digits"] = "digits"
    n: int = 2
    m: int = 8
    sparsity: Sparsity = "bdwp"
    epochs: int = 30
    seed: int = 0
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    srste_lambda: float = SRSTE_LAMBDA
    dtype: Literal["float32", "float64"] = "float32"
    exact_update: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("model", MODELS),
            ("dataset", DATASETS),
            ("sparsity", SPARSITY_MODES),
            ("dtype", DTYPES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise NmsatError(f"{name} {value!r} is not known; allowed: {', '.join(allowed)}")
        check_nm(self.n, self.m)
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NmsatError(f"{name} = {value!r}; it must be an integer >= {low}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise NmsatError(f"lr = {self.lr}; it must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            raise NmsatError(f"momentum = {self.momentum}; allowed: 0 <= momentum < 1")
        for name in ("weight_decay", "srste_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise NmsatError(f"{name} = {value}; it must be a finite number >= 0")

    @property
    def pattern(self) -> str:
        """The pattern as reports write it: ``"dense"`` or ``"N:M"``."""
        if self.sparsity == "dense" or self.n == self.m:
            return "dense"
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class TrainResult:
    """What one training run measured.

    Members
    -------
    config : TrainConfig
        The run.
    test_accuracy : float
        Share of test images classified correctly after the last epoch.
    train_accuracy : float
        The same on the training images (evaluation mode).
    loss_curve : tuple of float
        Mean training loss of each epoch.
    test_accuracy_curve : tuple of float
        Test accuracy after each epoch.
    step_losses : tuple of float
        Loss of every step, in order.
    sparse_layers : tuple of str
        ``"<index>:<class>:<sparsity>"`` of each Linear/Conv2d layer, as used.
    test_count : int
        Number of test images.
    seconds : float
        Wall-clock time of the run (data loading included).
    """

    config: TrainConfig
    test_accuracy: float
    train_accuracy: float
    loss_curve: tuple[float, ...]
    test_accuracy_curve: tuple[float, ...]
    step_losses: tuple[float, ...]
    sparse_layers: tuple[str, ...]
    test_count: int
    seconds: float

    def to_json_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data (the config nested, the pattern spelled out)."""
        data = dataclasses.asdict(self)
        data["pattern"] = self.config.pattern
        return data


def build_model(cfg: TrainConfig, rng: np.random.Generator) -> Sequential:
    """Return the untrained model of ``cfg`` (module docstring), initialised from ``rng``.

    Parameters
    ----------
    cfg : TrainConfig
        Model name, pattern, sparsity mode and dtype.
    rng : numpy.random.Generator
        Source of the initial weights.

    Returns
    -------
    Sequential
        The layers; its input is (B, 64) for ``mlp`` and (B, 1, 8, 8) for ``cnn``.
    """
    dtype = np.dtype(cfg.dtype)
    nm: dict[str, Any] = {"n": cfg.n, "m": cfg.m, "sparsity": cfg.sparsity}
    if cfg.model == "mlp":
        features = int(np.prod(DIGITS_SHAPE))
        return Sequential(
            Linear(features, 128, rng=rng, dtype=dtype, input_grad=False, **nm),
            ReLU(),
            Linear(128, 64, rng=rng, dtype=dtype, **nm),
            ReLU(),
            Linear(64, DIGITS_CLASSES, rng=rng, dtype=dtype),
        )
    channels, height, width = DIGITS_SHAPE
    return Sequential(
        Conv2d(channels, 16, 3, padding=1, rng=rng, dtype=dtype, input_grad=False),
        BatchNorm(16, dtype=dtype),
        ReLU(),
        MaxPool2d(2),
        Conv2d(16, 32, 3, padding=1, bias=False, rng=rng, dtype=dtype, **nm),
        BatchNorm(32, dtype=dtype),
        ReLU(),
        Flatten(),
        Linear(32 * (height // 2) * (width // 2), DIGITS_CLASSES, rng=rng, dtype=dtype),
    )


def train(cfg: TrainConfig, progress: bool = False) -> TrainResult:
    """Train ``cfg``'s model on its dataset and measure it.

    Parameters
    ----------
    cfg : TrainConfig
        The run.
    progress : bool
        Show a progress bar per epoch on standard error (tqdm).

    Returns
    -------
    TrainResult
        Accuracies, loss curves and time.

    Raises
    ------
    NmsatError
        If the dataset cannot be loaded (scikit-learn missing) or the loss stops being
        finite (the learning rate is too high).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    x_train, y_train, x_test, y_test = load_digits(cfg.seed, dtype=cfg.dtype)
    if cfg.model == "cnn":
        x_train = x_train.reshape(-1, *DIGITS_SHAPE)
        x_test = x_test.reshape(-1, *DIGITS_SHAPE)
    model = build_model(cfg, rng)
    optimizer = SGD(
        model.params(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        srste_lambda=cfg.srste_lambda,
        exact=cfg.exact_update,
    )
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    step_losses: list[float] = []
    loss_curve: list[float] = []
    test_curve: list[float] = []
    bar = tqdm(
        total=cfg.epochs,
        desc=f"{cfg.model} {cfg.pattern} {cfg.sparsity}",
        unit="epoch",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    # Overflow and NaN show up in the loss, which is checked every step; numpy's warnings
    # would only repeat it.
    with bar, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(x_train))
            epoch_losses: list[float] = []
            for first in range(0, len(order), cfg.batch_size):
                step = len(step_losses)
                optimizer.lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * step / total_steps))
                batch = order[first : first + cfg.batch_size]
                logits = model.forward(x_train[batch], training=True)
                loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
                if not math.isfinite(loss):
                    raise NmsatError(
                        f"training diverged at epoch {epoch + 1}, step {step + 1} "
                        f"(loss {loss}); lower lr = {cfg.lr}"
                    )
                model.backward(dlogits)
                optimizer.step()
                step_losses.append(loss)
                epoch_losses.append(loss)
            loss_curve.append(float(np.mean(epoch_losses)))
            test_curve.append(_accuracy(model, x_test, y_test))
            bar.set_postfix(
                loss=f"{loss_curve[-1]:.4f}", test=f"{test_curve[-1]:.3f}", refresh=False
            )
            bar.update(1)
    sparse_layers = tuple(
        f"{i}:{type(layer).__name__}:{layer.sparsity}"
        for i, layer in enumerate(model.layers)
        if isinstance(layer, (Linear, Conv2d))
    )
    return TrainResult(
        config=cfg,
        test_accuracy=test_curve[-1],
        train_accuracy=_accuracy(model, x_train, y_train),
        loss_curve=tuple(loss_curve),
        test_accuracy_curve=tuple(test_curve),
        step_losses=tuple(step_losses),
        sparse_layers=sparse_layers,
        test_count=len(x_test),
        seconds=time.perf_counter() - start,
    )


def write_json(result: TrainResult, path: str | Path) -> None:
    """Write ``result.to_json_dict()`` as indented JSON, atomically (temp file, then rename).

    Parameters
    ----------
    result : TrainResult
        The run.
    path : str or pathlib.Path
        Target file; parent folders are created.
    """
    text = json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n"
    write_atomic(path, text)


def _accuracy(model: Sequential, x: FloatArray, y: NDArray[np.int64]) -> float:
    """Return the share of ``x`` that ``model`` (evaluation mode) classifies as ``y``."""
    correct = 0
    for first in range(0, len(x), _EVAL_BATCH):
        logits = model.forward(x[first : first + _EVAL_BATCH], training=False)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y[first : first + _EVAL_BATCH]))
    return correct / len(x)
