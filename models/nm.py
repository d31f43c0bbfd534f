"""N:M masks and N:M compression: the numpy definition of what the SORE computes.

An N:M pattern keeps ``n`` of every ``m`` consecutive weights along one axis (the *grouping
axis*). This module defines which weights are kept (:func:`nm_mask`), how the kept weights are
stored (:func:`compress`, :func:`decompress`) and how patterns are written (:func:`parse_nm`).

Magnitude order
    Weights are ranked by magnitude exactly as the SORE comparator network ranks them: the IEEE
    bit pattern with the sign bit cleared, compared as an unsigned integer (float16 as uint16,
    float32 as uint32, float64 as uint64). This order is exact and total: it equals the order
    of ``|w|`` for every non-NaN value (``-0.0`` and ``+0.0`` tie), and a NaN ranks above
    infinity. Ties go to the lower index within the group. docs/decisions.md (PRUNE).

Hardware layout
    A weight matrix ``W[C_out, K]`` (a conv weight in its im2col view, see
    :mod:`nmsat.models.bdwp`) has two compressed copies, both made by the SORE from the same
    FP32 master weights:

    - FF copy, groups along K (C_in): ``compress(W, n, m, axis=1)``, shape
      ``[C_out, K * n / m]``, used by ``Y = (W . E_F) X``;
    - BP copy, groups along C_out, stored transposed: ``compress(W.T, n, m, axis=1)`` (the
      same values as ``compress(W, n, m, axis=0)`` transposed), shape ``[K, C_out * n / m]``,
      used by ``dX = (W . E_B)^T dY``.

    In both copies each group of ``m`` becomes ``n`` values in increasing index order plus
    ``n`` uint8 indices (``0 .. m-1``, strictly increasing) of their positions in the group:
    the operand format of :func:`nmsat.hw.numerics.gemm_nm` and of the ISA's PRUNE
    (``Direction.FF``, ``Direction.BP``).

Which layers are N:M (decision)
    Nothing is padded: :func:`nm_mask` and :func:`compress` reject an axis whose length is not
    a multiple of ``m``. A layer whose grouping dimension is not a multiple of ``m`` (C_in for
    the FF copy, C_out for the BP copy; :func:`nm_applicable`) stays dense in every pass. The
    first conv (C_in = 1 or 3) and the final classifier stay dense too, as in SR-STE and
    common practice; the model builders of :mod:`nmsat.models.train` mark them so.

Patterns
    ``1 <= n <= m`` and ``m`` in :data:`nmsat.hw.numerics.NM_GROUP_SIZES` (1, 2, 4, 8, 16; the
    ISA's indices have at most 4 bits). ``n == m`` keeps everything: it is dense, and
    :func:`parse_nm` writes dense as ``(1, 1)``.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (BDWP, SORE).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (SR-STE: masks by magnitude, groups along input channels).
Ref: DESIGN.md section 4 (SORE, the FF and BP copies); docs/decisions.md (PRUNE order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.hw.errors import ShapeError
from nmsat.hw.numerics import NM_GROUP_SIZES

__all__ = [
    "check_nm",
    "compress",
    "decompress",
    "magnitude_key",
    "nm_applicable",
    "nm_mask",
    "parse_nm",
]

# Unsigned view and sign-cleared mask of each supported float format.
_KEY_FORMATS: dict[np.dtype[Any], tuple[type[np.unsignedinteger[Any]], int]] = {
    np.dtype(np.float16): (np.uint16, 0x7FFF),
    np.dtype(np.float32): (np.uint32, 0x7FFF_FFFF),
    np.dtype(np.float64): (np.uint64, 0x7FFF_FFFF_FFFF_FFFF),
}


def check_nm(n: int, m: int) -> None:
    """Raise unless ``n:m`` is a supported pattern.

    Parameters
    ----------
    n, m : int
        Kept values per group and group size.

    Raises
    ------
    ShapeError
        If ``n`` or ``m`` is not an integer, ``m`` is not in ``NM_GROUP_SIZES`` (1, 2, 4, 8,
        16) or ``n`` is outside ``1 .. m``.
    """
    for name, val in (("n", n), ("m", m)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ShapeError(f"N:M {name} = {val!r} is not an integer")
    if m not in NM_GROUP_SIZES:
        allowed = ", ".join(map(str, NM_GROUP_SIZES))
        raise ShapeError(f"N:M m = {m} is not supported; allowed: {allowed}")
    if not 1 <= n <= m:
        raise ShapeError(f"N:M n = {n} with m = {m}; need 1 <= n <= m")


def nm_applicable(length: int, m: int) -> bool:
    """Return whether an axis of ``length`` elements can be grouped in groups of ``m``.

    Parameters
    ----------
    length : int
        The grouping dimension: C_in for the FF copy, C_out for the BP copy.
    m : int
        The group size.

    Returns
    -------
    bool
        ``length % m == 0`` (and ``length > 0``). A layer for which this is False stays dense;
        nothing is padded (see the module docstring).
    """
    return length > 0 and m > 0 and length % m == 0


def parse_nm(text: str) -> tuple[int, int]:
    """Parse an N:M pattern written ``"N:M"`` (``"2:8"``) or ``"dense"``.

    Parameters
    ----------
    text : str
        ``"N:M"`` with decimal integers, surrounding spaces allowed, or ``"dense"`` (any case).

    Returns
    -------
    (int, int)
        ``(n, m)``; ``"dense"`` gives ``(1, 1)``, the smallest pattern with ``n == m``.

    Raises
    ------
    ShapeError
        If the text is not of that form or the pattern is not supported (:func:`check_nm`).
    """
    stripped = text.strip()
    if stripped.lower() == "dense":
        return 1, 1
    parts = stripped.split(":")
    if len(parts) != 2 or not all(p.strip().isdecimal() for p in parts):
        raise ShapeError(
            f"N:M pattern {text!r} is not valid; expected 'N:M' such as '2:8', or 'dense'"
        )
    n, m = int(parts[0]), int(parts[1])
    check_nm(n, m)
    return n, m


def magnitude_key(w: NDArray[Any]) -> NDArray[np.unsignedinteger[Any]]:
    """Return the SORE's ranking key of each value: its bit pattern with the sign cleared.

    Parameters
    ----------
    w : numpy.ndarray of float16, float32 or float64
        The values.

    Returns
    -------
    numpy.ndarray of uint16, uint32 or uint64
        A new array; a larger key is a larger magnitude, a NaN ranks above infinity and
        ``-0.0`` ties with ``+0.0``.

    Raises
    ------
    TypeError
        If ``w`` is not float16, float32 or float64.
    """
    arr = np.asarray(w)
    if arr.dtype not in _KEY_FORMATS:
        raise TypeError(f"w has dtype {arr.dtype}; allowed: float16, float32, float64")
    utype, sign_cleared = _KEY_FORMATS[arr.dtype]
    return np.asarray(np.ascontiguousarray(arr).view(utype) & utype(sign_cleared))


def nm_mask(w: NDArray[Any], n: int, m: int, axis: int) -> NDArray[np.bool_]:
    """Return the N:M mask of ``w``: the ``n`` largest magnitudes of each group of ``m``.

    Parameters
    ----------
    w : numpy.ndarray of float16, float32 or float64
        The weights, any number of dimensions.
    n, m : int
        The pattern (:func:`check_nm`).
    axis : int
        The grouping axis: groups are ``m`` consecutive elements along it. Negative values
        count from the end.

    Returns
    -------
    numpy.ndarray of bool
        Same shape as ``w``; exactly ``n`` True values in every group, at the ``n`` largest
        keys of :func:`magnitude_key`, ties to the lower index. ``n == m`` gives all True.

    Raises
    ------
    ShapeError
        If the pattern is not supported, ``axis`` is out of range, or the axis length is not a
        multiple of ``m`` (nothing is padded).
    TypeError
        If ``w`` is not float16, float32 or float64.
    """
    arr = np.asarray(w)
    key = magnitude_key(arr)
    ax = _check_axis(arr.shape, n, m, axis, "nm_mask")
    groups = _grouped(np.moveaxis(key, ax, -1), m)
    mask = np.zeros(groups.shape, dtype=np.bool_)
    np.put_along_axis(mask, _kept_positions(groups, n), True, axis=-1)
    return np.moveaxis(mask.reshape(np.moveaxis(key, ax, -1).shape), -1, ax)


def compress(w: NDArray[Any], n: int, m: int, axis: int) -> tuple[NDArray[Any], NDArray[np.uint8]]:
    """Compress ``w`` to N:M form along ``axis``: kept values and their in-group indices.

    Parameters
    ----------
    w : numpy.ndarray of float16, float32 or float64
        The dense weights.
    n, m : int
        The pattern (:func:`check_nm`).
    axis : int
        The grouping axis.

    Returns
    -------
    values : numpy.ndarray, same dtype as ``w``
        ``w``'s shape with ``axis`` of length ``len * n / m``: for each group, its ``n`` kept
        values (those of :func:`nm_mask`) in increasing index order.
    indices : numpy.ndarray of uint8
        Same shape as ``values``: each value's position ``0 .. m-1`` in its group, strictly
        increasing within a group.

    Raises
    ------
    ShapeError
        As for :func:`nm_mask`.
    TypeError
        If ``w`` is not float16, float32 or float64.

    Notes
    -----
    The FF copy of ``W[C_out, K]`` is ``compress(W, n, m, axis=1)``; the BP copy, stored
    transposed, is ``compress(W.T, n, m, axis=1)`` (module docstring).
    """
    arr = np.asarray(w)
    key = magnitude_key(arr)
    ax = _check_axis(arr.shape, n, m, axis, "compress")
    moved = np.moveaxis(arr, ax, -1)
    positions = _kept_positions(_grouped(np.moveaxis(key, ax, -1), m), n)
    values = np.take_along_axis(_grouped(moved, m), positions, axis=-1)
    out_shape = (*moved.shape[:-1], moved.shape[-1] // m * n)
    values_out = np.moveaxis(values.reshape(out_shape), -1, ax)
    indices_out = np.moveaxis(positions.astype(np.uint8).reshape(out_shape), -1, ax)
    return np.ascontiguousarray(values_out), np.ascontiguousarray(indices_out)


def decompress(
    values: NDArray[Any], indices: NDArray[np.uint8], n: int, m: int, axis: int
) -> NDArray[Any]:
    """Expand N:M compressed values back to a dense array with zeros at pruned positions.

    Parameters
    ----------
    values : numpy.ndarray
        Kept values as :func:`compress` returns them.
    indices : numpy.ndarray of uint8
        Their in-group positions, same shape; each group's ``n`` indices strictly increasing
        and below ``m``.
    n, m : int
        The pattern (:func:`check_nm`).
    axis : int
        The grouping axis; its length must be a multiple of ``n``.

    Returns
    -------
    numpy.ndarray
        Dense array of ``values``' dtype with ``axis`` of length ``len * m / n``: each value at
        its position, ``0`` elsewhere. ``decompress(*compress(w, n, m, a), n, m, a)`` equals
        ``np.where(nm_mask(w, n, m, a), w, 0)``.

    Raises
    ------
    ShapeError
        If the pattern is not supported, the shapes differ, ``axis`` is out of range, the axis
        length is not a multiple of ``n``, or an index is out of range or not increasing.
    TypeError
        If ``indices`` is not uint8.
    """
    vals = np.asarray(values)
    idx = np.asarray(indices)
    check_nm(n, m)
    if idx.dtype != np.uint8:
        raise TypeError(f"indices has dtype {idx.dtype}; uint8 is required")
    if vals.shape != idx.shape:
        raise ShapeError(
            f"decompress: values has shape {vals.shape} and indices has shape {idx.shape}; "
            "they must be equal"
        )
    ax = _normalize_axis(vals.shape, axis, "decompress")
    length = vals.shape[ax]
    if length % n != 0:
        raise ShapeError(
            f"decompress: axis {axis} of shape {vals.shape} has length {length}; {n}:{m} "
            f"needs a multiple of n = {n}"
        )
    moved_idx = np.moveaxis(idx, ax, -1)
    groups_idx = moved_idx.reshape(*moved_idx.shape[:-1], length // n, n).astype(np.intp)
    if idx.size and int(idx.max()) >= m:
        raise ShapeError(f"decompress: index {int(idx.max())} out of range; {n}:{m} needs < {m}")
    if n > 1 and bool(np.any(np.diff(groups_idx, axis=-1) <= 0)):
        raise ShapeError(
            f"decompress: indices are not strictly increasing within a group of {n}; "
            "each group's positions must be distinct and sorted"
        )
    moved_vals = np.moveaxis(vals, ax, -1)
    groups_vals = moved_vals.reshape(groups_idx.shape)
    dense = np.zeros((*groups_idx.shape[:-1], m), dtype=vals.dtype)
    np.put_along_axis(dense, groups_idx, groups_vals, axis=-1)
    dense_shape = (*moved_vals.shape[:-1], length // n * m)
    return np.ascontiguousarray(np.moveaxis(dense.reshape(dense_shape), -1, ax))


# ----------------------------------------------------------------------------------------------
# Private helpers


def _normalize_axis(shape: tuple[int, ...], axis: int, func: str) -> int:
    """Return ``axis`` as a non-negative index into ``shape``, or raise ShapeError."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShapeError(f"{func}: axis {axis!r} is not an integer")
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(
            f"{func}: axis {axis} is out of range for shape {shape}; "
            f"allowed: {-len(shape)} .. {len(shape) - 1}"
        )
    return int(axis) % len(shape)


def _check_axis(shape: tuple[int, ...], n: int, m: int, axis: int, func: str) -> int:
    """Validate the pattern and the grouping axis of ``shape``; return the axis, normalised."""
    check_nm(n, m)
    ax = _normalize_axis(shape, axis, func)
    if shape[ax] % m != 0:
        raise ShapeError(
            f"{func}: axis {axis} of shape {shape} has length {shape[ax]}, not a multiple of "
            f"m = {m}; N:M applies only where the grouping axis divides (no padding)"
        )
    return ax


def _grouped(moved: NDArray[Any], m: int) -> NDArray[Any]:
    """Reshape an array whose grouping axis is last to ``(..., groups, m)``."""
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def _kept_positions(key_groups: NDArray[Any], n: int) -> NDArray[np.intp]:
    """Return the in-group positions of the ``n`` largest keys, increasing, ties to lower.

    A stable ascending sort of the bitwise complement of the keys is a descending sort of the
    keys that keeps equal keys in index order, so the first ``n`` positions are the kept ones.
    """
    order = np.argsort(~key_groups, axis=-1, kind="stable")
    return np.sort(order[..., :n], axis=-1)
