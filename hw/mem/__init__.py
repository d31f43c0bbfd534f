"""On-chip memories and the path to external memory: banked buffers, the memory bus, the DMA."""

from .buffer import (
    BankedBuffer,
    GatherReadPortSignature,
    PortKind,
    PortSpec,
    ScatterWritePortSignature,
    WideReadPortSignature,
    WideWritePortSignature,
)
from .bus import MAX_REQUEST_BYTES, MemoryBusSignature
from .dma import DMAEngine

__all__ = [
    "MAX_REQUEST_BYTES",
    "BankedBuffer",
    "DMAEngine",
    "GatherReadPortSignature",
    "MemoryBusSignature",
    "PortKind",
    "PortSpec",
    "ScatterWritePortSignature",
    "WideReadPortSignature",
    "WideWritePortSignature",
]
