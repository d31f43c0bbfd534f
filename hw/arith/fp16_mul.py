# Ref: IEEE Std 754-2008, section 3.4 (binary16 and binary32 encodings), 6.2 (NaN) and
#      7.2 (0 * inf is invalid).
# Ref: docs/numerics.md, "Exact products": an 11 x 11-bit significand product has at most 22
#      significant bits and nonzero products lie in [2**-28, 2**32), so an FP16 x FP16
#      product is exact in FP32 and never rounds, overflows or underflows.
# Ref: DESIGN.md section 4 (STCE: FP16 x FP16 -> FP32 MAC PEs).
"""The PE multiplier: FP16 x FP16 -> exact FP32 product, fixed latency."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux

from ._fp import FP32_NAN, unpack
from ._stages import PhasePipeline, Values

__all__ = ["FP16Multiplier"]

# Relative delay of each phase (unpack, 11 x 11-bit multiply, pack).
_PHASE_WEIGHTS = (1, 3, 1)
_MULTIPLY_PHASE = 1
# value = P * 2**(ea + eb - 50) with P the 22-bit significand product; P in [2**20, 2**22).
# With P's leading one at bit 20 the FP32 biased exponent is ea + eb - 50 + 20 + 127.
_EXPONENT_OFFSET = 97


class FP16Multiplier(PhasePipeline):
    """FP16 x FP16 -> FP32, exact, as :func:`nmsat.hw.numerics.fp16_mul_fp32`.

    Subnormal FP16 operands count as zeros of their sign (DAZ); zero results are signed
    (sign of a XOR sign of b); ``inf * 0`` and any NaN operand give the canonical FP32 NaN
    ``0x7FC00000``; infinities follow IEEE 754. Every other product is exact: the 22-bit
    significand product and the exponent sum fit FP32 with room to spare, so the unit has no
    rounding, overflow or underflow logic.

    The unit is a fixed-latency pipeline that never stalls: an operation presented with
    ``i.valid`` in cycle ``t`` appears on ``o`` with ``o.valid`` in cycle
    ``t + latency_cycles``; a new operation may enter every cycle. It has plain ports
    instead of streams (STYLE.md G5) because the PE schedules it statically. The PE uses
    ``latency_cycles = 1``: the product is computed in the cycle its operands are selected and
    registered at the adder's input, so the product costs the systolic array one cycle of
    skew and never a cycle per hop (``SATParams.multiplier_latency`` is the WUVE's FP32
    multiplier, not this one). With 0 the unit is combinational; latencies above 3 add the
    surplus registers after the multiply, for the DSP's pipeline registers.

    Parameters
    ----------
    latency_cycles : int
        Pipeline latency in cycles, at least 0 (default 1).

    Members
    -------
    i : ``In(Signature({"a": Out(16), "b": Out(16), "valid": Out(1)}))``
        The operands as binary16 bit patterns, and whether they hold an operation.
    o : ``Out(Signature({"result": Out(32), "valid": Out(1)}))``
        The exact product as a binary32 bit pattern, ``latency_cycles`` after its operands,
        and the delayed ``valid``. ``result`` is unspecified while ``valid`` is low.

    Raises
    ------
    TypeError
        If ``latency_cycles`` is not an integer.
    ValueError
        If ``latency_cycles`` is negative.
    """

    def __init__(self, latency_cycles: int = 1) -> None:
        super().__init__(
            latency_cycles,
            min_latency_cycles=0,
            operand_bits=16,
            result_bits=32,
            phases=(_unpack, _multiply, _pack),
            phase_weights=_PHASE_WEIGHTS,
            extra_after=_MULTIPLY_PHASE,
            prefix="mul16",
        )


def _unpack(m: Module, v: Values) -> Values:
    """Decode both FP16 operands (DAZ) and resolve the special cases."""
    a, b = unpack(v["a"], 5, 10), unpack(v["b"], 5, 10)
    return {
        "valid": v["valid"],
        "is_nan": a.is_nan | b.is_nan | (a.is_inf & b.is_zero) | (a.is_zero & b.is_inf),
        "is_inf": a.is_inf | b.is_inf,
        "is_zero": a.is_zero | b.is_zero,
        "sign": a.sign ^ b.sign,
        "exponent": a.exponent + b.exponent + _EXPONENT_OFFSET,
        "a": a.significand,
        "b": b.significand,
    }


def _multiply(m: Module, v: Values) -> Values:
    """Multiply the 11-bit significands exactly."""
    keys = ("valid", "is_nan", "is_inf", "is_zero", "sign", "exponent")
    return {**{k: v[k] for k in keys}, "product": v["a"] * v["b"]}


def _pack(m: Module, v: Values) -> Values:
    """Normalise by at most one bit (never rounding) and assemble the FP32 pattern."""
    product, sign = v["product"], v["sign"]
    top = product[21]
    # The leading one moves to the hidden bit; the 20 or 21 bits below it fill the top of
    # the 23-bit fraction and the rest is zeros.
    fraction = Mux(top, Cat(Const(0, 2), product[:21]), Cat(Const(0, 3), product[:20]))
    exponent = (v["exponent"] + top)[:8]
    finite = Cat(fraction, exponent, sign)
    infinity = Cat(Const(0, 23), Const(0xFF, 8), sign)
    zero = Cat(Const(0, 31), sign)
    result = Mux(v["is_nan"], FP32_NAN, Mux(v["is_inf"], infinity, Mux(v["is_zero"], zero, finite)))
    return {"valid": v["valid"], "result": result}
