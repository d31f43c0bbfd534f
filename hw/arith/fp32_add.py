# Ref: IEEE Std 754-2008, sections 4.3.1 (roundTiesToEven), 6.3 (the sign of an exact zero
#      sum is +0 under roundTiesToEven, and x + x keeps the sign of x), 7.4 (overflow).
# Ref: M. D. Ercegovac and T. Lang, "Digital Arithmetic", Morgan Kaufmann 2004, section 8.5
#      (floating-point addition: operand swap, alignment with guard, round and sticky bits,
#      significand addition, leading-zero count, normalisation, rounding).
# Ref: D. Goldberg, "What every computer scientist should know about floating-point
#      arithmetic", ACM Computing Surveys 23(1), 1991 (three extra bits round correctly).
# Ref: docs/numerics.md (DAZ, FTZ after rounding, canonical NaN); DESIGN.md section 5
#      (the adder is pipelined; interleave mapping hides its latency).
"""The FP32 adder of the PEs and the WUVE: a fixed-latency, fully pipelined unit."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux

from ._fp import FP32_NAN, leading_zeros, unpack
from ._stages import PhasePipeline, Values

__all__ = ["FP32Adder"]

# Relative delay of each phase (gate levels, roughly); plan_registers balances the stages.
_PHASE_WEIGHTS = (1, 2, 2, 1, 2, 2, 1)
_GRS_BITS = 3  # guard, round and sticky bits below the 24-bit significand
_WIDE = 24 + _GRS_BITS  # aligned significand width; the sum has one more (carry) bit


class FP32Adder(PhasePipeline):
    """FP32 + FP32 with round-to-nearest-even, as :func:`nmsat.hw.numerics.fp32_add`.

    Bit-exact with the numerics contract: subnormal operands count as signed zeros (DAZ), the
    sum is rounded to nearest even, then a subnormal result becomes a zero of its sign (FTZ);
    overflow gives a signed infinity; every NaN result is ``0x7FC00000`` (also ``inf - inf``);
    an exact cancellation ``x + (-x)`` gives ``+0`` and ``(-0) + (-0)`` gives ``-0``.

    The unit is a fixed-latency pipeline that never stalls: an operation presented with
    ``i.valid`` in cycle ``t`` appears on ``o`` with ``o.valid`` in cycle
    ``t + latency_cycles``, and a new operation may enter every cycle. It has plain ports
    instead of streams (STYLE.md G5): its users (the PE's accumulation loop, the WUVE lanes)
    schedule statically with the latencies in the timing formulas, so a ``ready`` signal
    would never be low and would only add logic to the accumulation loop. ``valid`` travels
    with the data so users can tag results.

    The logic is split into phases (unpack and swap, align, add, leading-zero count,
    normalise, round, pack) and the ``latency_cycles`` registers are placed between them to
    balance the stages: one register stage after the pack phase (the output is always a
    flip-flop), the others at the cut points that minimise the slowest stage; latencies above
    seven add the surplus registers at the output, for synthesis retiming.

    Parameters
    ----------
    latency_cycles : int
        Pipeline latency in cycles, at least 1 (``SATParams.adder_latency`` in the PEs and the
        WUVE).

    Members
    -------
    i : ``In(Signature({"a": Out(32), "b": Out(32), "valid": Out(1)}))``
        The operands as binary32 bit patterns, and whether they hold an operation.
    o : ``Out(Signature({"result": Out(32), "valid": Out(1)}))``
        The rounded sum as a binary32 bit pattern, ``latency_cycles`` after its operands,
        and the delayed ``valid``. ``result`` is unspecified while ``valid`` is low.

    Raises
    ------
    TypeError
        If ``latency_cycles`` is not an integer.
    ValueError
        If ``latency_cycles`` is below 1.
    """

    def __init__(self, latency_cycles: int) -> None:
        super().__init__(
            latency_cycles,
            min_latency_cycles=1,
            operand_bits=32,
            result_bits=32,
            phases=(_unpack, _align, _add, _count, _normalise, _round, _pack),
            phase_weights=_PHASE_WEIGHTS,
            prefix="add",
        )


# ----------------------------------------------------------------------------------------------
# Phases. Each returns only what the later phases need.


def _unpack(m: Module, v: Values) -> Values:
    """Decode, resolve the special cases, and order the operands so that |big| >= |small|."""
    a, b = unpack(v["a"], 8, 23), unpack(v["b"], 8, 23)
    # Magnitudes as 31-bit integers order IEEE values; flushed subnormals compare as zero.
    mag_a = Mux(a.is_zero, 0, v["a"][:31])
    mag_b = Mux(b.is_zero, 0, v["b"][:31])
    swap = mag_b > mag_a
    is_nan = a.is_nan | b.is_nan | (a.is_inf & b.is_inf & (a.sign != b.sign))
    return {
        "valid": v["valid"],
        "is_nan": is_nan,
        "is_inf": a.is_inf | b.is_inf,
        "inf_sign": Mux(a.is_inf, a.sign, b.sign),
        # An exact zero sum: +0 unless both operands are -0 (IEEE 754 section 6.3, RNE).
        "zero_sign": a.sign & b.sign,
        "subtract": a.sign ^ b.sign,
        "sign": Mux(swap, b.sign, a.sign),
        "exponent": Mux(swap, b.exponent, a.exponent),
        "shift": (Mux(swap, b.exponent - a.exponent, a.exponent - b.exponent))[:8],
        "big": Mux(swap, b.significand, a.significand),
        "small": Mux(swap, a.significand, b.significand),
    }


def _align(m: Module, v: Values) -> Values:
    """Shift the smaller significand right; every bit shifted past the round bit is sticky."""
    # Shifts of 27 or more leave only sticky bits, so the shifter needs 5 bits of amount.
    amount = Mux(v["shift"] >= _WIDE, _WIDE, v["shift"][:5])
    wide = Cat(Const(0, _WIDE + _GRS_BITS), v["small"]) >> amount
    aligned = wide[_WIDE:]
    sticky = wide[:_WIDE].any()
    out = {k: v[k] for k in ("valid", "is_nan", "is_inf", "inf_sign", "zero_sign", "subtract")}
    out.update(sign=v["sign"], exponent=v["exponent"])
    out["big"] = Cat(Const(0, _GRS_BITS), v["big"])
    out["small"] = Cat(aligned[0] | sticky, aligned[1:])
    return out


def _add(m: Module, v: Values) -> Values:
    """Add or subtract the aligned significands (big >= small, so a difference is >= 0)."""
    total = Mux(v["subtract"], (v["big"] - v["small"]).as_unsigned(), v["big"] + v["small"])
    keys = ("valid", "is_nan", "is_inf", "inf_sign", "zero_sign", "sign", "exponent")
    return {**{k: v[k] for k in keys}, "total": total[: _WIDE + 1]}


def _count(m: Module, v: Values) -> Values:
    """Count the leading zeros of the 28-bit sum (28 when it is zero)."""
    return {**v, "zeros": leading_zeros(v["total"])}


def _normalise(m: Module, v: Values) -> Values:
    """Shift the leading one to bit 27 and adjust the exponent; split off guard and sticky."""
    normal = (v["total"] << v["zeros"])[: _WIDE + 1]
    keys = ("valid", "is_nan", "is_inf", "inf_sign", "zero_sign", "sign")
    return {
        **{k: v[k] for k in keys},
        # The sum's binary point sits one bit below its top bit, hence the + 1.
        "exponent": v["exponent"] + 1 - v["zeros"],
        "is_zero": v["zeros"] == _WIDE + 1,
        "mantissa": normal[4:],
        "guard": normal[3],
        "sticky": normal[:3].any(),
    }


def _round(m: Module, v: Values) -> Values:
    """Round to nearest, ties to even; a carry out of the significand bumps the exponent."""
    mantissa = v["mantissa"]
    up = v["guard"] & (v["sticky"] | mantissa[0])
    rounded = mantissa + up
    keys = ("valid", "is_nan", "is_inf", "inf_sign", "zero_sign", "sign", "is_zero")
    return {
        **{k: v[k] for k in keys},
        # On a carry the rounded significand is exactly 2**24, whose fraction bits are zero.
        "exponent": v["exponent"] + rounded[24],
        "fraction": rounded[:23],
    }


def _pack(m: Module, v: Values) -> Values:
    """Assemble the result, with the special cases, overflow and flush to zero."""
    sign, exponent = v["sign"], v["exponent"]
    # Normal operands cancel only exactly, so a result below 2**-126 is exact: flushing it
    # after rounding equals IEEE gradual underflow followed by FTZ.
    result = Mux(
        v["is_nan"],
        FP32_NAN,
        Mux(
            v["is_inf"],
            Cat(Const(0, 23), Const(0xFF, 8), v["inf_sign"]),
            Mux(
                v["is_zero"],
                Cat(Const(0, 31), v["zero_sign"]),
                Mux(
                    exponent <= 0,
                    Cat(Const(0, 31), sign),
                    Mux(
                        exponent >= 0xFF,
                        Cat(Const(0, 23), Const(0xFF, 8), sign),
                        Cat(v["fraction"], exponent[:8], sign),
                    ),
                ),
            ),
        ),
    )
    return {"valid": v["valid"], "result": result}
