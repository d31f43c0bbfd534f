# Ref: IEEE Std 754-2008, binary16/binary32 encodings (3.4), roundTiesToEven (4.3.1),
#      overflow (7.4) and underflow (7.5).
# Ref: docs/numerics.md and nmsat.hw.numerics.to_fp16 (round first, then flush; DAZ; the
#      canonical FP16 NaN 0x7E00): the rules this unit matches bit for bit.
"""FP32 to FP16 conversion, as :func:`nmsat.hw.numerics.to_fp16` defines it."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FP32ToFP16"]

# FP32 biased exponents at the edges of the FP16 ranges (FP32 bias 127, FP16 bias 15).
_EXP_BIAS_DELTA = 127 - 15
# 2**-14, the smallest normal FP16 value: FP32 biased exponent 113.
_EXP_MIN_NORMAL = 1 + _EXP_BIAS_DELTA
# 2**16 and above overflow whatever the fraction: FP32 biased exponent 143.
_EXP_OVERFLOW = 31 + _EXP_BIAS_DELTA
_FP16_INF = 0x7C00
_FP16_MIN_NORMAL = 0x0400
_FP16_NAN = 0x7E00


def _convert(bits: Value) -> Value:
    """Return the FP16 pattern of the FP32 pattern ``bits`` (combinational)."""
    sign = bits[31]
    exponent = bits[23:31]
    fraction = bits[0:23]
    # Normal FP16 results: keep 10 of the 23 fraction bits and round to nearest even. The
    # carry of the increment runs into the exponent field, so 1.11..1 * 2**e rounds up to
    # 2**(e+1), and 65520 and above reach 0x7C00, the infinity pattern.
    guard = fraction[12]
    sticky = fraction[0:12].any()
    lsb = fraction[13]
    truncated = Cat(fraction[13:23], (exponent - _EXP_BIAS_DELTA)[0:5])
    rounded = (truncated + (guard & (sticky | lsb)))[0:15]
    # Below 2**-14 IEEE rounds to a subnormal on the grid of 2**-24, which FTZ then flushes.
    # Only the largest binade below, [2**-15, 2**-14), can round up to the normal 2**-14:
    # that needs the 10 bits above the rounding point all ones and the guard bit set
    # (2**-14 - 2**-25, a tie to the even 2**-14, is the smallest such value).
    rounds_to_min_normal = (exponent == _EXP_MIN_NORMAL - 1) & fraction[13:23].all()
    magnitude = Mux(
        exponent >= _EXP_OVERFLOW,
        _FP16_INF,
        Mux(
            exponent >= _EXP_MIN_NORMAL,
            rounded,
            Mux(rounds_to_min_normal, _FP16_MIN_NORMAL, 0),
        ),
    )
    # FP32 subnormal inputs fall in the last branch (DAZ): a signed zero, as IEEE gives too.
    is_nan = (exponent == 0xFF) & fraction.any()
    return Mux(is_nan, Const(_FP16_NAN, 16), Cat(magnitude[0:15], sign))


class FP32ToFP16(wiring.Component):
    """Convert FP32 bit patterns to FP16 with the contract's rounding.

    The result equals :func:`nmsat.hw.numerics.to_fp16` of the FP32 value, bit for bit: IEEE
    round-to-nearest-even; magnitudes from 65520 up (and infinities) give a signed infinity;
    a result below the FP16 normal range after rounding becomes a zero of the input's sign
    (rounding first: ``2**-14 - 2**-25`` rounds up to ``2**-14`` and is kept); FP32 subnormal
    inputs count as signed zeros (DAZ); every NaN gives the canonical ``0x7E00``.

    Parameters
    ----------
    latency_cycles : int
        ``1`` (default): the result is registered and appears one cycle after its input;
        ``0``: purely combinational, for units that fold the conversion into another cycle
        (the SORE's write cycle).

    Members
    -------
    i : ``In(Signature({"a": Out(32), "valid": Out(1)}))``
        The FP32 bit pattern to convert, and whether it holds an operation (the port
        convention of the other units of :mod:`nmsat.hw.arith`).
    o : ``Out(Signature({"result": Out(16), "valid": Out(1)}))``
        The FP16 bit pattern of the input ``latency_cycles`` earlier, and the delayed
        ``valid``. With ``latency_cycles == 1``, ``result`` holds its value while ``valid`` is
        low.

    Raises
    ------
    ValueError
        If ``latency_cycles`` is not 0 or 1.
    """

    def __init__(self, latency_cycles: int = 1) -> None:
        if isinstance(latency_cycles, bool) or latency_cycles not in (0, 1):
            raise ValueError(f"FP32ToFP16: latency_cycles must be 0 or 1, got {latency_cycles!r}")
        self._latency_cycles = latency_cycles
        super().__init__(
            {
                "i": In(wiring.Signature({"a": Out(32), "valid": Out(1)})),
                "o": Out(wiring.Signature({"result": Out(16), "valid": Out(1)})),
            }
        )

    @property
    def latency_cycles(self) -> int:
        """Cycles from an input to its result."""
        return self._latency_cycles

    def elaborate(self, platform: object) -> Module:
        m = Module()
        result = _convert(self.i.a)
        if self._latency_cycles == 0:
            m.d.comb += [self.o.result.eq(result), self.o.valid.eq(self.i.valid)]
        else:
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += self.o.result.eq(result)
        return m
