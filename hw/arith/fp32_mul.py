# Ref: IEEE Std 754-2008, sections 4.3.1 (roundTiesToEven), 7.4 (overflow) and 7.5
#      (underflow: the result is rounded as if the exponent range were unbounded below the
#      subnormal grid, i.e. gradual underflow).
# Ref: M. D. Ercegovac and T. Lang, "Digital Arithmetic", Morgan Kaufmann 2004, section 8.4
#      (floating-point multiplication: significand product, one-bit normalisation, rounding).
# Ref: docs/numerics.md (DAZ; round first, then flush: (1 - 2**-24) * 2**-126 rounds to the
#      normal 2**-126 and is kept; canonical NaN; 0 * inf is the NaN).
"""The FP32 multiplier of the WUVE: a fixed-latency, fully pipelined unit."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux

from ._fp import FP32_NAN, unpack
from ._stages import PhasePipeline, Values

__all__ = ["FP32Multiplier"]

# Relative delay of each phase (unpack, multiply, normalise, round, pack): the 24 x 24-bit
# product dominates (on the XCVU9P it maps to a cascade of two DSP48E2 multipliers).
_PHASE_WEIGHTS = (1, 4, 1, 2, 1)
_MULTIPLY_PHASE = 1
_EXPONENT_BIAS = 127


class FP32Multiplier(PhasePipeline):
    """FP32 x FP32 with round-to-nearest-even, as :func:`nmsat.hw.numerics.fp32_mul`.

    Bit-exact with the numerics contract over the whole range: subnormal operands count as
    signed zeros (DAZ); the product is rounded to nearest even with gradual underflow and a
    subnormal result then becomes a zero of its sign (round first, then flush: a product in
    ``[2**-126 - 2**-150, 2**-126)`` rounds to the normal ``2**-126`` and is kept); overflow
    gives a signed infinity; every NaN result is ``0x7FC00000`` (also ``0 * inf``).

    The unit is a fixed-latency pipeline that never stalls: an operation presented with
    ``i.valid`` in cycle ``t`` appears on ``o`` with ``o.valid`` in cycle
    ``t + latency_cycles``; a new operation may enter every cycle. It has plain ports instead
    of streams (STYLE.md G5) because the WUVE schedules it statically with the latencies of
    the timing formulas (``Lm`` in docs/isa.md), so a ``ready`` would never be low.

    The logic is split into phases (unpack, 24 x 24-bit multiply, normalise, round, pack);
    one register stage follows the pack phase, the other cut points balance the stages, and
    latencies above five add the surplus registers right after the multiply, where synthesis
    pulls them into the DSP pipeline registers.

    Parameters
    ----------
    latency_cycles : int
        Pipeline latency in cycles, at least 1 (``SATParams.multiplier_latency``).

    Members
    -------
    i : ``In(Signature({"a": Out(32), "b": Out(32), "valid": Out(1)}))``
        The operands as binary32 bit patterns, and whether they hold an operation.
    o : ``Out(Signature({"result": Out(32), "valid": Out(1)}))``
        The rounded product as a binary32 bit pattern, ``latency_cycles`` after its
        operands, and the delayed ``valid``. ``result`` is unspecified while ``valid`` is low.

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
            phases=(_unpack, _multiply, _normalise, _round, _pack),
            phase_weights=_PHASE_WEIGHTS,
            extra_after=_MULTIPLY_PHASE,
            prefix="mul",
        )


# ----------------------------------------------------------------------------------------------
# Phases. Each returns only what the later phases need.


def _unpack(m: Module, v: Values) -> Values:
    """Decode both operands and resolve the special cases."""
    a, b = unpack(v["a"], 8, 23), unpack(v["b"], 8, 23)
    is_nan = a.is_nan | b.is_nan | (a.is_inf & b.is_zero) | (a.is_zero & b.is_inf)
    return {
        "valid": v["valid"],
        "is_nan": is_nan,
        "is_inf": a.is_inf | b.is_inf,
        "is_zero": a.is_zero | b.is_zero,
        "sign": a.sign ^ b.sign,
        # Biased exponent of the product if its significand lies in [1, 2): ea + eb - 127.
        "exponent": a.exponent + b.exponent - _EXPONENT_BIAS,
        "a": a.significand,
        "b": b.significand,
    }


def _multiply(m: Module, v: Values) -> Values:
    """Multiply the 24-bit significands exactly: a 48-bit product in [2**46, 2**48)."""
    keys = ("valid", "is_nan", "is_inf", "is_zero", "sign", "exponent")
    return {**{k: v[k] for k in keys}, "product": v["a"] * v["b"]}


def _normalise(m: Module, v: Values) -> Values:
    """Keep 24 significant bits, the guard bit and the sticky OR of the rest."""
    product = v["product"]
    top = product[47]
    keys = ("valid", "is_nan", "is_inf", "is_zero", "sign")
    return {
        **{k: v[k] for k in keys},
        "exponent": v["exponent"] + top,
        "mantissa": Mux(top, product[24:48], product[23:47]),
        "guard": Mux(top, product[23], product[22]),
        "sticky": Mux(top, product[:23].any(), product[:22].any()),
    }


def _round(m: Module, v: Values) -> Values:
    """Round to nearest even; decide between a normal result and a flush to zero."""
    mantissa, exponent = v["mantissa"], v["exponent"]
    up = v["guard"] & (v["sticky"] | mantissa[0])
    rounded = mantissa + up
    keys = ("valid", "is_nan", "is_inf", "is_zero", "sign")
    return {
        **{k: v[k] for k in keys},
        "exponent": exponent + rounded[24],
        "fraction": rounded[:23],
        # A product in [2**-127, 2**-126) has biased exponent 0. Gradual underflow rounds it
        # on the subnormal grid (2**-149), where it reaches 2**-126 exactly when it is at
        # least 2**-126 - 2**-150, i.e. when its 24 leading bits are all ones (the tie goes
        # to the even 2**-126). Any other such product rounds to a subnormal and is flushed.
        "to_min_normal": (exponent == 0) & (mantissa == (1 << 24) - 1),
    }


def _pack(m: Module, v: Values) -> Values:
    """Assemble the result, with the special cases, overflow and flush to zero."""
    sign, exponent = v["sign"], v["exponent"]
    infinity = Cat(Const(0, 23), Const(0xFF, 8), sign)
    zero = Cat(Const(0, 31), sign)
    min_normal = Cat(Const(0, 23), Const(1, 8), sign)
    finite = Mux(
        exponent >= 0xFF,
        infinity,
        Mux(
            exponent >= 1,
            Cat(v["fraction"], exponent[:8], sign),
            Mux(v["to_min_normal"], min_normal, zero),
        ),
    )
    result = Mux(v["is_nan"], FP32_NAN, Mux(v["is_inf"], infinity, Mux(v["is_zero"], zero, finite)))
    return {"valid": v["valid"], "result": result}
