# Ref: IEEE Std 754-2008, section 3.4 (binary16/binary32 encodings) and 6.2 (NaN).
# Ref: docs/numerics.md (DAZ: a subnormal operand counts as a zero of the same sign;
#      every NaN result is the canonical quiet NaN).
# Ref: V. G. Oklobdzija, "An algorithmic and novel design of a leading zero detector
#      circuit", IEEE Trans. VLSI Systems 2(1), 1994 (the recursive halving count below).
"""Field decoding shared by the floating-point units (private to nmsat.hw.arith)."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Mux, Value

from ..numerics import FP32_CANONICAL_NAN_BITS

__all__ = ["FP32_NAN", "Unpacked", "leading_zeros", "unpack"]

FP32_NAN = Const(FP32_CANONICAL_NAN_BITS, 32)
"""The canonical FP32 NaN, ``0x7FC00000``."""


@dataclass(frozen=True)
class Unpacked:
    """The decoded fields of one operand, with subnormals already flushed (DAZ)."""

    sign: Value
    """Sign bit."""
    exponent: Value
    """Biased exponent field; 0 for zeros and flushed subnormals."""
    significand: Value
    """Significand with its hidden bit (``precision`` bits); 0 for zeros."""
    is_zero: Value
    """Zero or subnormal (DAZ)."""
    is_inf: Value
    """Infinity."""
    is_nan: Value
    """Any NaN."""


def unpack(bits: Value, exponent_bits: int, fraction_bits: int) -> Unpacked:
    """Decode an IEEE binary bit pattern into its fields, flushing a subnormal to zero."""
    fraction = bits[:fraction_bits]
    exponent = bits[fraction_bits : fraction_bits + exponent_bits]
    sign = bits[fraction_bits + exponent_bits]
    all_ones = (1 << exponent_bits) - 1
    is_zero = exponent == 0
    is_special = exponent == all_ones
    return Unpacked(
        sign=sign,
        exponent=exponent,
        significand=Mux(is_zero, 0, Cat(fraction, Const(1, 1))),
        is_zero=is_zero,
        is_inf=is_special & (fraction == 0),
        is_nan=is_special & (fraction != 0),
    )


def leading_zeros(value: Value) -> Value:
    """Return the number of leading zero bits of ``value`` (``len(value)`` when it is zero).

    A log-depth count: the width is padded at the bottom with ones to a power of two, then
    each level asks whether the upper half is all zeros.
    """
    width = len(value)
    padded_width = 1 << max(0, (width - 1).bit_length())
    padded = Cat(Const((1 << (padded_width - width)) - 1, padded_width - width), value)
    return _count(padded)


def _count(value: Value) -> Value:
    width = len(value)
    if width == 1:
        return ~value[0]
    half = width // 2
    upper, lower = value[half:], value[:half]
    return Mux(upper.any(), _count(upper), half + _count(lower))
