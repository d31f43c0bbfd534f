"""On-chip memories: the banked buffers of the accelerator."""

from .buffer import BankedBuffer, WideReadPortSignature, WideWritePortSignature

__all__ = ["BankedBuffer", "WideReadPortSignature", "WideWritePortSignature"]
