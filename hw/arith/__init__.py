"""Floating-point arithmetic units of the accelerator, bit-exact with nmsat.hw.numerics.

Fixed-latency, fully pipelined units with plain ports (operands, ``valid`` in; result,
``valid`` out): :class:`FP16Multiplier` (the PE product, exact), :class:`FP32Adder` (PE
accumulation and WUVE, ``adder_latency`` cycles) and :class:`FP32Multiplier` (WUVE,
``multiplier_latency`` cycles), and :class:`FP32ToFP16` (SORE and WUVE results into FP16
buffers).
"""

from .fp16_mul import FP16Multiplier
from .fp32_add import FP32Adder
from .fp32_mul import FP32Multiplier
from .fp32_to_fp16 import FP32ToFP16

__all__ = ["FP16Multiplier", "FP32Adder", "FP32Multiplier", "FP32ToFP16"]
