"""The SORE, the N:M pruning unit: FP32 master weights in, FP16 values and indices out."""

from .sore import SORE, bitonic_stages

__all__ = ["SORE", "bitonic_stages"]
