# Ref: docs/isa.md (LOAD and STORE: dma_cycles; "the external memory of the simulators has a
#      fixed latency D and a fixed bandwidth B and serves requests in issue order");
#      DESIGN.md sections 4 and 9 (a fixed-latency, fixed-bandwidth memory in simulation).
# Ref: ARM IHI 0022 (AMBA AXI): separate address, write-data and read-data channels with
#      valid/ready handshakes and byte strobes, the shape this bus keeps in a simpler form.
"""The memory bus between the DMA engine and external memory (a simple request/response bus).

The AXI4 master of the board build (a later issue) adapts this bus to AXI; simulation
connects it to :class:`nmsat.sim.testing.DRAMModel`.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nmsat.hw import isa
from nmsat.hw.params import DRAM_ADDR_BITS, SATParams

from .._signature import ParameterizedSignature

__all__ = ["MAX_REQUEST_BYTES", "MemoryBusSignature"]

#: The longest request the DMA makes: one run of a LOAD/STORE, ``cols * element_bytes`` with
#: ``cols`` at its largest (16-bit field) and 4-byte elements.
MAX_REQUEST_BYTES = (2 ** isa.PAYLOADS[isa.Opcode.LOAD]["cols"].width - 1) * 4


class MemoryBusSignature(ParameterizedSignature):
    """Signature of the memory bus, seen from the initiator (the DMA engine).

    Three channels, with ``B = params.dram_bytes_per_cycle`` bytes per beat:

    - ``req``: a request is taken in a cycle where ``valid`` and ``ready`` are both high. It
      names a direction (``write``), a byte address (``addr``, any alignment) and a length
      (``length_bytes``, at least 1). It moves ``ceil(length_bytes / B)`` beats; beat ``k``
      covers bytes ``addr + k*B`` to ``addr + min((k+1)*B, length_bytes) - 1``, byte ``j`` of
      the beat in bits ``[8j, 8j+8)`` of the data. Beats are aligned to the request, not to
      ``B``: a request of ``n`` bytes takes ``ceil(n / B)`` beats at any address.
    - ``w``: write data. A write beat moves in a cycle where ``valid`` and ``ready`` are both
      high; byte ``j`` is written when ``strb`` bit ``j`` is set (only bytes inside the
      request may be strobed).
    - ``r``: read data. In a cycle where ``valid`` is high, ``data`` holds the next beat of the
      oldest read; the initiator always takes it (no back-pressure). Bytes past the end of the
      request are unspecified.

    The memory serves requests in the order it took them, one beat per cycle (a read beat on
    ``r``, or a write beat taken from ``w``), and starts the first beat of a request taken in
    cycle ``t`` no earlier than cycle ``t + D`` (``D = params.dram_latency_cycles``). The
    simulation memory (:class:`nmsat.sim.testing.DRAMModel`) serves each beat as early as
    these rules allow and never holds ``req.ready`` low, so a run of requests taken one per
    cycle from cycle ``s`` has its beats in cycles ``s + D`` to ``s + D + beats - 1`` without a
    gap: the timing of :func:`nmsat.hw.isa_timing.dma_cycles`. An AXI adapter may hold
    ``ready`` low and add cycles; the data stays correct.

    Parameters
    ----------
    params : SATParams
        Uses ``dram_bytes_per_cycle``.

    Members
    -------
    req : ``Out(Signature)``
        ``valid: Out(1)``, ``ready: In(1)``, ``write: Out(1)`` (1: write, 0: read),
        ``addr: Out(DRAM_ADDR_BITS)`` (byte address), ``length_bytes: Out(range(1,
        MAX_REQUEST_BYTES + 1))``.
    w : ``Out(Signature)``
        ``valid: Out(1)``, ``ready: In(1)``, ``data: Out(8 * B)``, ``strb: Out(B)``.
    r : ``Out(Signature)``
        ``valid: In(1)``, ``data: In(8 * B)``.
    """

    def __init__(self, params: SATParams) -> None:
        self._bytes_per_beat = params.dram_bytes_per_cycle
        width = 8 * self._bytes_per_beat
        super().__init__(
            {
                "req": Out(
                    wiring.Signature(
                        {
                            "valid": Out(1),
                            "ready": In(1),
                            "write": Out(1),
                            "addr": Out(DRAM_ADDR_BITS),
                            "length_bytes": Out(range(1, MAX_REQUEST_BYTES + 1)),
                        }
                    )
                ),
                "w": Out(
                    wiring.Signature(
                        {
                            "valid": Out(1),
                            "ready": In(1),
                            "data": Out(width),
                            "strb": Out(self._bytes_per_beat),
                        }
                    )
                ),
                "r": Out(wiring.Signature({"valid": In(1), "data": In(width)})),
            },
            bytes_per_beat=self._bytes_per_beat,
        )

    @property
    def bytes_per_beat(self) -> int:
        """Bytes moved per beat, ``params.dram_bytes_per_cycle``."""
        return self._bytes_per_beat
