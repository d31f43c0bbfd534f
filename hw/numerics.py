# Ref: IEEE Std 754-2008, binary16/binary32 encodings (3.4), roundTiesToEven (4.3.1),
#      NaN operations (6.2), overflow (7.4) and underflow (7.5).
# Ref: DESIGN.md section 4 (numerics: FP16 operands, exact products, FP32 accumulation, RNE,
#      subnormals flushed; FP32 master weights and momentum).
# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (STCE, WUVE, SORE).
# Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
#      Scratch", ICLR 2021 (the SR-STE term lambda * (1 - mask) * W).
# Ref: PyTorch torch.optim.SGD (momentum, weight decay; dampening 0, no Nesterov).
"""The numerics contract: the one definition of number semantics in nmsat.

The numpy reference (:mod:`nmsat.models`), the cycle-accurate Python model (:mod:`nmsat.sim`)
and the Amaranth RTL (:mod:`nmsat.hw`) all implement these functions bit for bit; tests compare
them with :func:`fp32_bits` and :func:`fp16_bits`. docs/numerics.md explains the rules.

Formats
    GEMM operands are FP16 (IEEE binary16); products and accumulation are FP32 (binary32);
    master weights, momentum and every WUVE vector operation are FP32.
Rounding
    IEEE round-to-nearest-even (RNE) everywhere; overflow rounds to signed infinity. Never a
    fused multiply-add: every product is rounded before it is added.
Subnormals
    Flushed. DAZ: a subnormal operand of an FP32 operation (or an FP16 subnormal entering a
    product) counts as a zero of the same sign. FTZ: a result that IEEE RNE with gradual
    underflow (what numpy float32 arithmetic computes) makes subnormal becomes a zero of the
    same sign. Round first, then flush.
NaN
    Every NaN result is the canonical quiet NaN, positive sign: FP32 ``0x7FC00000``, FP16
    ``0x7E00``. Infinity arithmetic is IEEE (``inf - inf`` and ``0 * inf`` give the NaN).

All functions are pure: they never modify their arguments and always return new arrays.
Floating-point exceptions are not signalled (no numpy warnings); the results carry them.

Part of the contract: imports nothing from nmsat but :mod:`nmsat.hw.errors`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import ShapeError

__all__ = [
    "FP16_CANONICAL_NAN_BITS",
    "FP16_EXPONENT_MASK_BITS",
    "FP16_FRACTION_MASK_BITS",
    "FP16_MAX",
    "FP16_MIN_NORMAL",
    "FP16_PRECISION_BITS",
    "FP16_SIGN_MASK_BITS",
    "FP32_CANONICAL_NAN_BITS",
    "FP32_EXPONENT_MASK_BITS",
    "FP32_FRACTION_MASK_BITS",
    "FP32_MAX",
    "FP32_MIN_NORMAL",
    "FP32_PRECISION_BITS",
    "FP32_SIGN_MASK_BITS",
    "NM_GROUP_SIZES",
    "FP16Array",
    "FP32Array",
    "FP32Operand",
    "fp16_bits",
    "fp16_from_bits",
    "fp16_mul_fp32",
    "fp32_add",
    "fp32_bits",
    "fp32_from_bits",
    "fp32_mul",
    "fp32_sub",
    "gemm",
    "gemm_nm",
    "is_subnormal",
    "nm_columns",
    "relu",
    "relu_grad",
    "sgd_update",
    "to_fp16",
    "to_fp32",
    "vec_add",
    "vec_scale",
]

FP16Array: TypeAlias = NDArray[np.float16]
"""An array of FP16 (IEEE binary16) values."""
FP32Array: TypeAlias = NDArray[np.float32]
"""An array of FP32 (IEEE binary32) values."""
FP32Operand: TypeAlias = NDArray[np.float32] | float | np.floating[Any]
"""An FP32 operand: a float32 array, or a scalar that is first rounded with :func:`to_fp32`."""

FP16_PRECISION_BITS = 11
"""Significand precision of FP16 in bits, hidden bit included (10 stored fraction bits)."""
FP32_PRECISION_BITS = 24
"""Significand precision of FP32 in bits, hidden bit included (23 stored fraction bits)."""

FP16_SIGN_MASK_BITS = 0x8000
"""Sign bit of an FP16 bit pattern."""
FP16_EXPONENT_MASK_BITS = 0x7C00
"""Biased exponent field (5 bits, bias 15) of an FP16 bit pattern."""
FP16_FRACTION_MASK_BITS = 0x03FF
"""Fraction field (10 bits) of an FP16 bit pattern."""
FP16_CANONICAL_NAN_BITS = 0x7E00
"""The one FP16 NaN every operation returns: quiet, positive sign, payload zero."""

FP32_SIGN_MASK_BITS = 0x8000_0000
"""Sign bit of an FP32 bit pattern."""
FP32_EXPONENT_MASK_BITS = 0x7F80_0000
"""Biased exponent field (8 bits, bias 127) of an FP32 bit pattern."""
FP32_FRACTION_MASK_BITS = 0x007F_FFFF
"""Fraction field (23 bits) of an FP32 bit pattern."""
FP32_CANONICAL_NAN_BITS = 0x7FC0_0000
"""The one FP32 NaN every operation returns: quiet, positive sign, payload zero."""

FP16_MIN_NORMAL = 2.0**-14
"""Smallest positive normal FP16 value; anything smaller in magnitude is flushed."""
FP16_MAX = (2.0 - 2.0**-10) * 2.0**15
"""Largest finite FP16 value, 65504."""
FP32_MIN_NORMAL = 2.0**-126
"""Smallest positive normal FP32 value; anything smaller in magnitude is flushed."""
FP32_MAX = (2.0 - 2.0**-23) * 2.0**127
"""Largest finite FP32 value, about 3.4028235e38."""

NM_GROUP_SIZES = (1, 2, 4, 8, 16)
"""Group sizes M an N:M compressed operand may use: powers of two up to 16 (4-bit indices)."""

# The masks as numpy scalars, so that bit operations stay in uint16/uint32.
_F16_SIGN = np.uint16(FP16_SIGN_MASK_BITS)
_F16_EXP = np.uint16(FP16_EXPONENT_MASK_BITS)
_F16_FRAC = np.uint16(FP16_FRACTION_MASK_BITS)
_F16_NAN = np.uint16(FP16_CANONICAL_NAN_BITS)
_F32_SIGN = np.uint32(FP32_SIGN_MASK_BITS)
_F32_EXP = np.uint32(FP32_EXPONENT_MASK_BITS)
_F32_FRAC = np.uint32(FP32_FRACTION_MASK_BITS)
_F32_NAN = np.uint32(FP32_CANONICAL_NAN_BITS)
_F32_POS_ZERO = np.float32(0.0)


# ----------------------------------------------------------------------------------------------
# Bit patterns and classification


def fp32_bits(x: ArrayLike) -> NDArray[np.uint32]:
    """Return the IEEE binary32 bit patterns of FP32 values.

    Parameters
    ----------
    x : array_like of float32
        FP32 values (a float32 array or a ``numpy.float32`` scalar).

    Returns
    -------
    numpy.ndarray of uint32
        A new array of the same shape; compare these, not the floats, for bit exactness
        (``+0.0 == -0.0`` and ``nan != nan`` as floats).

    Raises
    ------
    TypeError
        If ``x`` is not float32.
    """
    arr = _require_dtype(x, np.float32, "x")
    return np.array(arr.view(np.uint32), copy=True)


def fp16_bits(x: ArrayLike) -> NDArray[np.uint16]:
    """Return the IEEE binary16 bit patterns of FP16 values.

    Parameters
    ----------
    x : array_like of float16
        FP16 values (a float16 array or a ``numpy.float16`` scalar).

    Returns
    -------
    numpy.ndarray of uint16
        A new array of the same shape.

    Raises
    ------
    TypeError
        If ``x`` is not float16.
    """
    arr = _require_dtype(x, np.float16, "x")
    return np.array(arr.view(np.uint16), copy=True)


def fp32_from_bits(bits: ArrayLike) -> FP32Array:
    """Return the FP32 values whose binary32 bit patterns are ``bits``.

    Parameters
    ----------
    bits : array_like of int
        Bit patterns, each in ``0 .. 2**32 - 1``.

    Returns
    -------
    numpy.ndarray of float32
        The values, bit for bit (NaN payloads and subnormals are kept, not canonicalised).

    Raises
    ------
    TypeError
        If ``bits`` is not integer.
    ValueError
        If a pattern is outside ``0 .. 2**32 - 1``.
    """
    return _from_bits(bits, np.uint32, 32).view(np.float32)


def fp16_from_bits(bits: ArrayLike) -> FP16Array:
    """Return the FP16 values whose binary16 bit patterns are ``bits``.

    Parameters
    ----------
    bits : array_like of int
        Bit patterns, each in ``0 .. 2**16 - 1``.

    Returns
    -------
    numpy.ndarray of float16
        The values, bit for bit (NaN payloads and subnormals are kept, not canonicalised).

    Raises
    ------
    TypeError
        If ``bits`` is not integer.
    ValueError
        If a pattern is outside ``0 .. 2**16 - 1``.
    """
    return _from_bits(bits, np.uint16, 16).view(np.float16)


def is_subnormal(x: ArrayLike) -> NDArray[np.bool_]:
    """Return which values are subnormal in their own format.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        The values; the format is the array's dtype.

    Returns
    -------
    numpy.ndarray of bool
        True where ``0 < |x| < smallest normal`` of the dtype (zeros, NaN and Inf are False).

    Raises
    ------
    TypeError
        If ``x`` is not float16, float32 or float64.
    """
    arr = np.asarray(x)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(
            f"is_subnormal: x has dtype {arr.dtype}; allowed: float16, float32, float64"
        )
    tiny = np.finfo(arr.dtype).smallest_normal
    with np.errstate(invalid="ignore"):
        return np.asarray((arr != 0) & (np.abs(arr) < tiny), dtype=np.bool_)


# ----------------------------------------------------------------------------------------------
# Conversions


def to_fp32(x: ArrayLike) -> FP32Array:
    """Convert values to FP32 as the machine stores them.

    Parameters
    ----------
    x : array_like of float16, float32, float64 or int
        float64 (and Python ``float``) values are rounded to FP32 with IEEE RNE and gradual
        underflow, exactly numpy's ``astype(np.float32)``, then flushed (FTZ); overflow gives
        signed infinity. Integers are converted as float64 first (exact up to ``2**53``).
        float16 values are widened exactly, after FP16 subnormals are flushed (DAZ). float32
        values keep their value, with subnormals flushed.

    Returns
    -------
    numpy.ndarray of float32
        A new array with no subnormals and only the canonical NaN.

    Raises
    ------
    TypeError
        If ``x`` is neither floating point (16, 32 or 64 bits) nor integer.
    """
    arr = _as_float_array(x, "to_fp32", "x")
    if arr.dtype == np.float16:
        return _canon32(_canon16(arr).astype(np.float32))
    with np.errstate(all="ignore"):
        return _canon32(arr.astype(np.float32))


def to_fp16(x: ArrayLike) -> FP16Array:
    """Convert values to FP16, the GEMM operand format.

    The conversion is IEEE RNE with gradual underflow (exactly numpy's ``astype(np.float16)``
    on float32 input), after which an FP16 subnormal result becomes a zero of the same sign.
    Rounding comes first, so a value just below the FP16 normal range can round up into it:
    ``2**-14 - 2**-25`` is a tie that rounds to the even neighbour ``2**-14`` (kept), while
    ``2**-15`` rounds to a subnormal and becomes ``+0``. Values from ``65520`` up (in
    magnitude) overflow to infinity.

    Parameters
    ----------
    x : array_like of float16, float32, float64 or int
        float64 inputs (and Python floats and ints) are first rounded to FP32 (RNE, FTZ) with
        :func:`to_fp32`; rounding float64 straight to FP16 could differ by double rounding.
        FP32 subnormal inputs are flushed first (DAZ); IEEE would round them to zero anyway.

    Returns
    -------
    numpy.ndarray of float16
        A new array with no subnormals and only the canonical NaN ``0x7E00``.

    Raises
    ------
    TypeError
        If ``x`` is neither floating point (16, 32 or 64 bits) nor integer.
    """
    arr = _as_float_array(x, "to_fp16", "x")
    if arr.dtype == np.float16:
        return _canon16(arr)
    arr32 = to_fp32(arr) if arr.dtype != np.float32 else _canon32(arr)
    with np.errstate(all="ignore"):
        return _canon16(arr32.astype(np.float16))


# ----------------------------------------------------------------------------------------------
# Scalar operations (elementwise, broadcasting)


def fp16_mul_fp32(a: ArrayLike, b: ArrayLike) -> FP32Array:
    """Multiply FP16 values into an exact FP32 product, as one STCE PE does.

    Parameters
    ----------
    a, b : array_like of float16
        The operands; they broadcast against each other. FP16 subnormals count as zeros of
        the same sign (DAZ).

    Returns
    -------
    numpy.ndarray of float32
        ``a * b``, exact; NaN (from a NaN operand or ``0 * inf``) is the canonical NaN.

    Raises
    ------
    TypeError
        If an operand is not float16.
    ShapeError
        If the shapes do not broadcast.

    Notes
    -----
    The product needs no rounding. A normal FP16 significand has 11 bits, so the product of
    two has at most 22 significant bits, which fit the 24 of FP32. Normal FP16 magnitudes lie
    in ``[2**-14, 65504]``, so nonzero products lie in ``[2**-28, 65504**2 < 2**32]``, far
    inside the FP32 normal range ``[2**-126, 2**128)``: products never overflow, never round
    and are never subnormal. A tree of FP16 multipliers with a 22-bit significand product is
    therefore bit-exact with this function.
    """
    x = _require_dtype(a, np.float16, "a")
    y = _require_dtype(b, np.float16, "b")
    _broadcast_shape("fp16_mul_fp32", x, y)
    with np.errstate(all="ignore"):
        product = np.multiply(
            _canon16(x).astype(np.float32), _canon16(y).astype(np.float32), dtype=np.float32
        )
    return _canon32(product)


def fp32_add(a: FP32Operand, b: FP32Operand) -> FP32Array:
    """Add FP32 values: DAZ, IEEE RNE, FTZ, canonical NaN.

    Parameters
    ----------
    a, b : float32 array or scalar
        The operands; they broadcast. Scalars (Python or numpy floats) are rounded to FP32
        with :func:`to_fp32` first; arrays must be float32.

    Returns
    -------
    numpy.ndarray of float32
        ``a + b`` rounded to nearest even; a subnormal result becomes a zero of the same sign;
        ``inf + -inf`` gives the canonical NaN; overflow gives signed infinity.

    Raises
    ------
    TypeError
        If an array operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    x, y = _fp32_operands("fp32_add", a, b)
    with np.errstate(all="ignore"):
        return _canon32(np.add(x, y, dtype=np.float32))


def fp32_sub(a: FP32Operand, b: FP32Operand) -> FP32Array:
    """Subtract FP32 values, ``a - b``: DAZ, IEEE RNE, FTZ, canonical NaN.

    Parameters
    ----------
    a, b : float32 array or scalar
        As for :func:`fp32_add`.

    Returns
    -------
    numpy.ndarray of float32
        ``a - b``, with the rounding, flushing and NaN rules of :func:`fp32_add`.

    Raises
    ------
    TypeError
        If an array operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    x, y = _fp32_operands("fp32_sub", a, b)
    with np.errstate(all="ignore"):
        return _canon32(np.subtract(x, y, dtype=np.float32))


def fp32_mul(a: FP32Operand, b: FP32Operand) -> FP32Array:
    """Multiply FP32 values: DAZ, IEEE RNE, FTZ, canonical NaN.

    Parameters
    ----------
    a, b : float32 array or scalar
        As for :func:`fp32_add`.

    Returns
    -------
    numpy.ndarray of float32
        ``a * b`` rounded to nearest even with gradual underflow, then flushed if subnormal.
        Rounding comes first: ``(1 - 2**-24) * 2**-126`` is a tie that rounds to the normal
        ``2**-126`` and is kept. ``0 * inf`` gives the canonical NaN.

    Raises
    ------
    TypeError
        If an array operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    x, y = _fp32_operands("fp32_mul", a, b)
    with np.errstate(all="ignore"):
        return _canon32(np.multiply(x, y, dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# GEMM: the accumulation order


def gemm(a: ArrayLike, b: ArrayLike, c: ArrayLike | None = None) -> FP32Array:
    """Multiply FP16 matrices with FP32 accumulation, in the one contract order.

    Parameters
    ----------
    a : array_like of float16, shape (I, K)
        Left operand.
    b : array_like of float16, shape (K, J)
        Right operand.
    c : array_like of float32, shape (I, J), optional
        Partial sums to accumulate onto (preloaded into the accumulators); flushed (DAZ)
        first. Without it the accumulators start at ``+0.0``.

    Returns
    -------
    numpy.ndarray of float32, shape (I, J)
        For every ``(i, j)``: ``acc = c[i, j]`` (or ``+0.0``), then for ``k = 0 .. K-1`` in
        increasing order ``acc = fp32_add(acc, fp16_mul_fp32(a[i, k], b[k, j]))``.

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not float16, or ``c`` not float32.
    ShapeError
        If ``a`` or ``b`` is not 2-D, the K dimensions differ, or ``c`` is not (I, J).

    Notes
    -----
    The order is part of the contract; it does not depend on the array size, the dataflow or
    the tiling. Splitting K into chunks processed in increasing k order, each starting from the
    previous chunk's result as ``c``, gives the same bits, because every step is the same
    rounded add in the same order. The products are exact (:func:`fp16_mul_fp32`), so a fused
    multiply-add would give the same bits here, but the add is still one rounded FP32 add
    per product. Tiling over I and J never changes which additions an element sees.

    After the flushed start the accumulator is never subnormal, so FTZ never fires inside a
    GEMM: a nonzero product is a multiple of ``2**-48`` of magnitude at least ``2**-28``; an
    accumulator of magnitude at least ``2**-29`` is a multiple of ``2**-52``, so a sum that
    cancels is exactly zero or at least ``2**-52``, and a smaller accumulator cannot cancel
    the product. An accumulator may therefore omit FTZ, but it must flush ``c`` on entry
    (``-2**-149 + 0.0`` is ``+0.0`` under DAZ, ``-0.0`` after a late flush).
    """
    x = _require_matrix(a, np.float16, "gemm", "a")
    y = _require_matrix(b, np.float16, "gemm", "b")
    rows, K = x.shape
    if y.shape[0] != K:
        raise ShapeError(
            f"gemm: a has shape {x.shape} and b has shape {y.shape}; "
            "a (I, K) times b (K, J) needs a.shape[1] == b.shape[0]"
        )
    cols = y.shape[1]
    acc = _init_accumulators("gemm", c, rows, cols)
    x32 = _canon16(x).astype(np.float32)
    y32 = _canon16(y).astype(np.float32)
    product = np.empty((rows, cols), dtype=np.float32)
    with np.errstate(all="ignore"):
        for k in range(K):
            np.multiply(x32[:, k, None], y32[None, k, :], out=product)
            _accumulate(acc, product)
    return _canon32(acc)


def nm_columns(indices: ArrayLike, n: int, m: int) -> NDArray[np.intp]:
    """Return the dense column of every compressed position of an N:M operand.

    Parameters
    ----------
    indices : array_like of uint8, shape (I, Q)
        Position of each kept value within its group of ``m`` (``0 .. m-1``), strictly
        increasing within each group. Compressed position ``q`` belongs to group ``q // n``.
    n, m : int
        The pattern: ``n`` kept values in every ``m`` consecutive ones, ``1 <= n <= m``,
        ``m`` in :data:`NM_GROUP_SIZES`.

    Returns
    -------
    numpy.ndarray of intp, shape (I, Q)
        ``(q // n) * m + indices[i, q]``, which increases with ``q`` along every row.

    Raises
    ------
    TypeError
        If ``indices`` is not uint8.
    ShapeError
        If ``n`` or ``m`` break the rule, ``indices`` is not 2-D, ``Q`` is not a multiple of
        ``n``, or an index is out of range or not increasing within its group.
    """
    _check_nm(n, m)
    return _nm_columns(
        "nm_columns", _require_matrix(indices, np.uint8, "nm_columns", "indices"), n, m
    )


def gemm_nm(
    values: ArrayLike,
    indices: ArrayLike,
    n: int,
    m: int,
    b: ArrayLike,
    c: ArrayLike | None = None,
) -> FP32Array:
    """Multiply an N:M compressed FP16 matrix by a dense one, as the STCE's sparse mode does.

    Parameters
    ----------
    values : array_like of float16, shape (I, K * n / m)
        The kept values of the left operand, row by row, group by group.
    indices : array_like of uint8, shape (I, K * n / m)
        Their positions within their groups; see :func:`nm_columns`.
    n, m : int
        The N:M pattern, ``1 <= n <= m``, ``m`` in :data:`NM_GROUP_SIZES`.
    b : array_like of float16, shape (K, J)
        Dense right operand; ``K`` must be a multiple of ``m``.
    c : array_like of float32, shape (I, J), optional
        Partial sums to accumulate onto; as for :func:`gemm`.

    Returns
    -------
    numpy.ndarray of float32, shape (I, J)
        For every ``(i, j)``: ``acc = c[i, j]`` (or ``+0.0``), then for ``q = 0 .. Q-1``
        ``acc = fp32_add(acc, fp16_mul_fp32(values[i, q], b[col, j]))`` with
        ``col = (q // n) * m + indices[i, q]``. Increasing ``q`` is increasing ``k``.

    Raises
    ------
    TypeError
        If an operand has the wrong dtype.
    ShapeError
        If the shapes or the N:M pattern do not fit together.

    Notes
    -----
    Pruned positions are skipped, not multiplied by zero. The result equals :func:`gemm` of
    the dense masked matrix (kept values in place, ``+0.0`` elsewhere) whenever ``b`` holds no
    Inf or NaN and the accumulators do not start at ``-0.0`` (``c`` is None or has no ``-0.0``
    and no negative subnormal). A pruned position's product is then a signed zero, and adding
    a signed zero to an accumulator that is not ``-0.0`` leaves it unchanged. An accumulator
    that does not start at ``-0.0`` never becomes ``-0.0``: an exact zero sum is ``+0.0`` under
    RNE, and a nonzero sum of a product (a multiple of ``2**-48`` of magnitude at least
    ``2**-28``) is never subnormal. With an Inf or NaN in ``b``, the dense form computes
    ``0 * inf = NaN`` where this one does not.
    """
    _check_nm(n, m)
    vals = _require_matrix(values, np.float16, "gemm_nm", "values")
    idx = _require_matrix(indices, np.uint8, "gemm_nm", "indices")
    y = _require_matrix(b, np.float16, "gemm_nm", "b")
    if vals.shape != idx.shape:
        raise ShapeError(
            f"gemm_nm: values has shape {vals.shape} and indices has shape {idx.shape}; "
            "they must be equal"
        )
    rows, Q = vals.shape
    K, cols = y.shape
    if K % m != 0 or (K // m) * n != Q:
        raise ShapeError(
            f"gemm_nm: b has K = {K} rows and values has {Q} columns; {n}:{m} needs K a "
            f"multiple of {m} and K * {n} / {m} columns"
        )
    dense_col = _nm_columns("gemm_nm", idx, n, m)
    acc = _init_accumulators("gemm_nm", c, rows, cols)
    v32 = _canon16(vals).astype(np.float32)
    y32 = _canon16(y).astype(np.float32)
    product = np.empty((rows, cols), dtype=np.float32)
    with np.errstate(all="ignore"):
        for q in range(Q):
            np.multiply(v32[:, q, None], y32[dense_col[:, q], :], out=product)
            _accumulate(acc, product)
    return _canon32(acc)


# ----------------------------------------------------------------------------------------------
# WUVE: optimizer step and element-wise operations


def sgd_update(
    w: FP32Array,
    g: FP32Array,
    v: FP32Array,
    mask: NDArray[np.bool_],
    lr: float,
    momentum: float,
    weight_decay: float,
    srste_lambda: float,
) -> tuple[FP32Array, FP32Array]:
    """Apply one fused SGD-momentum step with weight decay and the SR-STE term, in FP32.

    The WUVE computes, elementwise and in exactly this order (each line one rounded FP32
    operation, :func:`fp32_add`, :func:`fp32_sub`, :func:`fp32_mul`; never fused)::

        t     = weight_decay * w
        g1    = g + t
        g2    = g1                          where mask
                g1 + srste_lambda * w       elsewhere
        v_new = momentum * v + g2           (the product rounded first)
        w_new = w - lr * v_new              (the product rounded first)

    This is PyTorch's ``torch.optim.SGD`` (dampening 0, no Nesterov) with the SR-STE
    regulariser ``lambda * (1 - mask) * W`` of Zhou et al. (ICLR 2021) added to the gradient.
    PyTorch starts its momentum buffer at the first gradient; starting ``v`` at zeros gives
    the same first step except for the sign of zero results.

    Parameters
    ----------
    w : numpy.ndarray of float32
        FP32 master weights.
    g : numpy.ndarray of float32
        Weight gradient (``dW`` from the WU pass), same shape.
    v : numpy.ndarray of float32
        Momentum buffer, same shape.
    mask : numpy.ndarray of bool
        The N:M mask, True where the weight is kept; same shape.
    lr, momentum, weight_decay, srste_lambda : float
        Hyper-parameters; each is rounded to FP32 (RNE, FTZ) before use.

    Returns
    -------
    w_new, v_new : numpy.ndarray of float32
        Updated weights and momentum, new arrays.

    Raises
    ------
    TypeError
        If an array has the wrong dtype.
    ShapeError
        If the shapes differ.
    """
    w32 = _require_dtype(w, np.float32, "w")
    g32 = _require_dtype(g, np.float32, "g")
    v32 = _require_dtype(v, np.float32, "v")
    kept = _require_dtype(mask, np.bool_, "mask")
    for name, arr in (("g", g32), ("v", v32), ("mask", kept)):
        if arr.shape != w32.shape:
            raise ShapeError(
                f"sgd_update: {name} has shape {arr.shape} but w has shape {w32.shape}; "
                "w, g, v and mask must have equal shapes"
            )
    lr32, momentum32, decay32, lambda32 = (
        to_fp32(float(s)) for s in (lr, momentum, weight_decay, srste_lambda)
    )
    g1 = fp32_add(g32, fp32_mul(decay32, w32))
    g2 = np.where(kept, g1, fp32_add(g1, fp32_mul(lambda32, w32)))
    v_new = fp32_add(fp32_mul(momentum32, v32), g2)
    w_new = fp32_sub(w32, fp32_mul(lr32, v_new))
    return w_new, v_new


def relu(x: FP32Array) -> FP32Array:
    """Apply ReLU to FP32 values.

    Parameters
    ----------
    x : numpy.ndarray of float32
        Input; subnormals are flushed first (DAZ).

    Returns
    -------
    numpy.ndarray of float32
        ``x`` where ``x > 0``, ``+0.0`` elsewhere (``-0.0`` and ``-inf`` included); NaN gives
        the canonical NaN.

    Raises
    ------
    TypeError
        If ``x`` is not float32.
    """
    x32 = _canon32(_require_dtype(x, np.float32, "x"))
    keep = np.isnan(x32) | (x32 > 0)
    return _canon32(np.where(keep, x32, _F32_POS_ZERO))


def relu_grad(dy: FP32Array, y: FP32Array) -> FP32Array:
    """Pass the gradient through ReLU, using the forward output as the mask.

    Parameters
    ----------
    dy : numpy.ndarray of float32
        Gradient with respect to the ReLU output; subnormals flushed first (DAZ).
    y : numpy.ndarray of float32
        The ReLU output of the forward pass (or its input: the sign test is the same); it
        broadcasts against ``dy``. Subnormals flushed first, so they count as zero.

    Returns
    -------
    numpy.ndarray of float32
        ``dy`` where ``y > 0``, ``+0.0`` elsewhere (also where ``y`` is NaN); a NaN in ``dy``
        that passes gives the canonical NaN.

    Raises
    ------
    TypeError
        If an operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    dy32 = _canon32(_require_dtype(dy, np.float32, "dy"))
    y32 = _canon32(_require_dtype(y, np.float32, "y"))
    _broadcast_shape("relu_grad", dy32, y32)
    return _canon32(np.where(y32 > 0, dy32, _F32_POS_ZERO))


def vec_add(a: FP32Operand, b: FP32Operand) -> FP32Array:
    """Add FP32 vectors elementwise (residual add); the same operation as :func:`fp32_add`.

    Parameters
    ----------
    a, b : float32 array or scalar
        The operands; they broadcast.

    Returns
    -------
    numpy.ndarray of float32
        ``fp32_add(a, b)``.

    Raises
    ------
    TypeError
        If an array operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    return fp32_add(a, b)


def vec_scale(a: FP32Operand, s: FP32Operand) -> FP32Array:
    """Scale FP32 values by a factor; the same operation as ``fp32_mul(s, a)``.

    Parameters
    ----------
    a : float32 array or scalar
        The values.
    s : float32 array or scalar
        The factor; a Python float is rounded to FP32 first.

    Returns
    -------
    numpy.ndarray of float32
        ``fp32_mul(s, a)``.

    Raises
    ------
    TypeError
        If an array operand is not float32.
    ShapeError
        If the shapes do not broadcast.
    """
    return fp32_mul(s, a)


# ----------------------------------------------------------------------------------------------
# Private helpers


def _canon32(x: NDArray[np.float32]) -> FP32Array:
    """Flush FP32 subnormals to signed zero and make every NaN canonical (new array)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exponent = bits & _F32_EXP
    out = np.where(exponent == 0, bits & _F32_SIGN, bits)
    is_nan = (exponent == _F32_EXP) & ((bits & _F32_FRAC) != 0)
    out = np.where(is_nan, _F32_NAN, out)
    return np.asarray(out, dtype=np.uint32).view(np.float32)


def _canon16(x: NDArray[np.float16]) -> FP16Array:
    """Flush FP16 subnormals to signed zero and make every NaN canonical (new array)."""
    bits = np.asarray(x, dtype=np.float16).view(np.uint16)
    exponent = bits & _F16_EXP
    out = np.where(exponent == 0, bits & _F16_SIGN, bits)
    is_nan = (exponent == _F16_EXP) & ((bits & _F16_FRAC) != 0)
    out = np.where(is_nan, _F16_NAN, out)
    return np.asarray(out, dtype=np.uint16).view(np.float16)


def _accumulate(acc: FP32Array, product: FP32Array) -> None:
    """Add ``product`` into ``acc`` in place: one RNE add, then FTZ.

    Equals ``acc = fp32_add(acc, product)`` for a flushed ``acc`` and an exact product: the
    product is never subnormal (see :func:`fp16_mul_fp32`) and NaN payloads are made canonical
    once at the end, which gives the same bits because a NaN accumulator stays NaN. The FTZ
    step never changes a value here (see :func:`gemm`); it is kept so that this is literally
    the contract's add.
    """
    np.add(acc, product, out=acc)
    bits = acc.view(np.uint32)
    np.bitwise_and(bits, _F32_SIGN, out=bits, where=(bits & _F32_EXP) == 0)


def _init_accumulators(func: str, c: ArrayLike | None, rows: int, cols: int) -> FP32Array:
    """Return the starting accumulators: flushed ``c``, or ``+0.0``; a new writable array."""
    if c is None:
        return np.zeros((rows, cols), dtype=np.float32)
    c32 = _require_dtype(c, np.float32, "c")
    if c32.shape != (rows, cols):
        raise ShapeError(
            f"{func}: c has shape {c32.shape}; it must be the result's shape ({rows}, {cols})"
        )
    return np.ascontiguousarray(_canon32(c32))


def _require_dtype(x: ArrayLike, dtype: type[np.generic], name: str) -> NDArray[Any]:
    """Return ``x`` as an array, or raise TypeError if its dtype is not ``dtype``."""
    arr = np.asarray(x)
    if arr.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; {np.dtype(dtype).name} is required "
            "(convert with to_fp16 or to_fp32)"
        )
    return arr


def _require_matrix(x: ArrayLike, dtype: type[np.generic], func: str, name: str) -> NDArray[Any]:
    """Return ``x`` as a 2-D array of ``dtype``, or raise TypeError / ShapeError."""
    arr = _require_dtype(x, dtype, name)
    if arr.ndim != 2:
        raise ShapeError(f"{func}: {name} has shape {arr.shape}; it must be 2-D")
    return arr


def _broadcast_shape(func: str, *arrays: NDArray[Any]) -> tuple[int, ...]:
    """Return the broadcast shape of ``arrays``, or raise ShapeError naming their shapes."""
    try:
        return np.broadcast_shapes(*(arr.shape for arr in arrays))
    except ValueError:
        shapes = ", ".join(str(arr.shape) for arr in arrays)
        raise ShapeError(f"{func}: shapes {shapes} do not broadcast together") from None


def _fp32_operand(x: FP32Operand, func: str, name: str) -> FP32Array:
    """Return an FP32 operand, flushed: arrays must be float32; scalars go through to_fp32."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.float32:
            raise TypeError(
                f"{func}: {name} has dtype {x.dtype}; float32 arrays are required "
                "(convert with to_fp32)"
            )
        return _canon32(x)
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.number)):
        raise TypeError(f"{func}: {name} is {type(x).__name__}; a float32 array or a number")
    return to_fp32(x)


def _fp32_operands(func: str, a: FP32Operand, b: FP32Operand) -> tuple[FP32Array, FP32Array]:
    """Return both operands of a binary FP32 operation, flushed, after a broadcast check."""
    x = _fp32_operand(a, func, "a")
    y = _fp32_operand(b, func, "b")
    _broadcast_shape(func, x, y)
    return x, y


def _as_float_array(x: ArrayLike, func: str, name: str) -> NDArray[Any]:
    """Return ``x`` as a float16/32/64 array; integers become float64."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iu":
        return arr.astype(np.float64)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(
            f"{func}: {name} has dtype {arr.dtype}; allowed: float16, float32, float64, integers"
        )
    return arr


def _from_bits(bits: ArrayLike, dtype: type[np.unsignedinteger[Any]], width: int) -> NDArray[Any]:
    """Return integer bit patterns as an array of ``dtype``, checking their range."""
    arr = np.asarray(bits)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"bits has dtype {arr.dtype}; integer bit patterns are required")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << width):
        raise ValueError(f"bit pattern out of range; each must be in 0 .. 2**{width} - 1")
    return arr.astype(dtype)


def _check_nm(n: int, m: int) -> None:
    """Raise ShapeError unless ``n:m`` is a pattern the STCE supports."""
    for name, val in (("n", n), ("m", m)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ShapeError(f"N:M {name} = {val!r} is not an integer")
    if m not in NM_GROUP_SIZES:
        raise ShapeError(
            f"N:M m = {m} is not supported; allowed: {', '.join(map(str, NM_GROUP_SIZES))}"
        )
    if not 1 <= n <= m:
        raise ShapeError(f"N:M n = {n} with m = {m}; need 1 <= n <= m")


def _nm_columns(func: str, idx: NDArray[np.uint8], n: int, m: int) -> NDArray[np.intp]:
    """Validate 2-D uint8 ``indices`` against a checked ``n:m``; return their dense columns."""
    rows, Q = idx.shape
    if Q % n != 0:
        raise ShapeError(f"{func}: indices has {Q} columns; {n}:{m} needs a multiple of n = {n}")
    if idx.size and int(idx.max()) >= m:
        raise ShapeError(
            f"{func}: index {int(idx.max())} out of range; {n}:{m} needs 0 <= index < {m}"
        )
    groups = idx.reshape(rows, Q // n, n).astype(np.intp)
    unordered = np.argwhere(np.diff(groups, axis=2) <= 0)
    if unordered.size:
        bad_row, bad_group = int(unordered[0, 0]), int(unordered[0, 1])
        raise ShapeError(
            f"{func}: indices {groups[bad_row, bad_group].tolist()} (row {bad_row}, group "
            f"{bad_group}) are not strictly increasing; each group of {n} must be"
        )
    group_start = (np.arange(Q, dtype=np.intp) // n) * m
    return np.asarray(group_start[None, :] + idx.astype(np.intp), dtype=np.intp)
