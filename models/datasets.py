"""Datasets for training in numpy: the 8x8 handwritten digits that scikit-learn bundles.

:func:`load_digits` reads the UCI optical-recognition digits (1,797 images of 8 x 8 pixels,
16 grey levels, 10 classes) from the copy shipped inside scikit-learn: nothing is downloaded.
scikit-learn is the optional extra ``nmsat[data]`` and is imported only when a dataset is
loaded, so the rest of :mod:`nmsat.models` works without it.

The split is stratified and seeded (decision): within each class, a permutation drawn from
``numpy.random.default_rng(seed)`` sends ``round(count * test_fraction)`` images to the test
set, so every class keeps its share and the split does not depend on scikit-learn's version.

Ref: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
     Learning Repository, 1998 (the 8x8 digits); scikit-learn ``sklearn.datasets.load_digits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from nmsat.hw.errors import NmsatError

__all__ = ["DIGITS_CLASSES", "DIGITS_SHAPE", "load_digits"]

DIGITS_SHAPE = (1, 8, 8)
"""Channels, height and width of one digit image; :func:`load_digits` returns them flat."""

DIGITS_CLASSES = 10
"""Number of classes of the digits (0 to 9)."""

# Pixels hold integers 0..16 (counts of set pixels in 4x4 blocks of a 32x32 bitmap).
_DIGITS_MAX_PIXEL = 16.0


def load_digits(
    seed: int, test_fraction: float = 0.25, *, dtype: DTypeLike = np.float32
) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[Any], NDArray[np.int64]]:
    """Return the 8x8 digits, scaled to [0, 1], split into training and test sets.

    Parameters
    ----------
    seed : int
        Seed of the split and of the order of both sets.
    test_fraction : float
        Share of each class held out for testing, ``0 < test_fraction < 1``.
    dtype : numpy dtype
        Floating dtype of the images (the values ``k / 16`` are exact in float16 and up).

    Returns
    -------
    x_train : numpy.ndarray, shape (N_train, 64)
        Images, row-major 8 x 8 (reshape to ``(-1, *DIGITS_SHAPE)`` for a conv net).
    y_train : numpy.ndarray of int64, shape (N_train,)
        Labels 0 to 9.
    x_test, y_test : numpy.ndarray
        The held-out images and labels, likewise.

    Raises
    ------
    NmsatError
        If scikit-learn is missing or ``test_fraction`` is out of range.
    """
    if not 0 < test_fraction < 1:
        raise NmsatError(f"test_fraction = {test_fraction}; allowed: 0 < test_fraction < 1")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise NmsatError(
            "the digits dataset needs scikit-learn: install nmsat[data] (pip install scikit-learn)"
        ) from None
    bunch = sklearn_load_digits()
    images = np.asarray(bunch.data, dtype=np.float64) / _DIGITS_MAX_PIXEL
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test_parts: list[NDArray[np.intp]] = []
    train_parts: list[NDArray[np.intp]] = []
    for cls in range(DIGITS_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == cls))
        held_out = round(len(members) * test_fraction)
        test_parts.append(members[:held_out])
        train_parts.append(members[held_out:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    x = images.astype(dtype)
    return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]
