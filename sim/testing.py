# Ref: DESIGN.md section 9 (cycle equality is defined against a DRAM model with a fixed latency
#      and bandwidth from SATParams, granting requests in a documented order); STYLE.md G10
#      (external devices as Python coroutines in the Amaranth simulator).
# Ref: docs/isa.md, LOAD/STORE (dma_cycles) and "Queues, tokens and the cycle count".
"""Simulation helpers shared by the Amaranth (pysim) testbenches.

:class:`DRAMModel` is the external memory of every pysim test: it answers the memory bus of
:class:`nmsat.hw.mem.DMAEngine` (:class:`nmsat.hw.mem.bus.MemoryBusSignature`) with the fixed
latency ``D = params.dram_latency_cycles`` and bandwidth ``B = params.dram_bytes_per_cycle``
that the Python model assumes (:func:`nmsat.hw.isa_timing.dma_cycles`).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.hw.params import SATParams

__all__ = ["DRAMModel", "DRAMRequest"]


@dataclasses.dataclass(frozen=True)
class DRAMRequest:
    """One request the memory took.

    Members
    -------
    cycle : int
        Cycle in which the memory took it (``req.valid`` and ``req.ready`` high), counted
        from 0 at the start of the simulation.
    write : bool
        A write (True) or a read.
    addr : int
        Byte address of its first byte.
    length_bytes : int
        Bytes it moves.
    """

    cycle: int
    write: bool
    addr: int
    length_bytes: int


@dataclasses.dataclass
class _Pending:
    request: DRAMRequest
    beats: int
    served: int = 0


class DRAMModel:
    """External memory with a fixed latency and bandwidth, for the Amaranth simulator.

    The rules, which make a LOAD or STORE take exactly
    :func:`nmsat.hw.isa_timing.dma_cycles` on :class:`nmsat.hw.mem.DMAEngine`:

    1. ``req.ready`` is always high (unless ``stall_probability`` is set); a request taken in
       cycle ``t`` joins the back of one in-order queue.
    2. In each cycle the memory serves at most one beat (``B`` bytes): the next beat of the
       request at the front of the queue, if that request was taken in cycle ``t`` with
       ``t + D`` not later than the current cycle. A read beat appears on ``r`` (``valid``
       high, bytes past the end of the request read as 0). A write beat raises ``w.ready``
       and is written at the end of the cycle if ``w.valid`` is high; otherwise the same beat
       is offered again next cycle (the initiator was late).
    3. So a request of ``n`` bytes takes ``ceil(n / B)`` beats at any byte address, and
       requests taken one per cycle from cycle ``s`` are served without a gap from ``s + D``.

    A read beat returns the memory as it is at the start of its cycle: every earlier write
    beat is visible, none of a later one.

    Parameters
    ----------
    bus : interface of ``MemoryBusSignature``
        The initiator's bus, e.g. ``dma.bus``; the model drives ``req.ready``, ``w.ready``,
        ``r.valid`` and ``r.data``.
    params : SATParams
        ``dram_latency_cycles`` (at least 1) and ``dram_bytes_per_cycle``.
    image : numpy.ndarray of uint8
        The memory contents from byte ``base_addr`` on, read and written in place; it may be
        smaller than ``params.dram_bytes`` (an access outside it raises).
    base_addr : int
        Bus address of ``image[0]`` (0 by default), to test high addresses with a small image.
    stall_probability : float
        Probability that ``req.ready`` is low in a cycle, and that a beat which could be served
        is not. 0 (the default) is the deterministic memory of docs/isa.md; anything else
        tests back-pressure (values must stay right, cycle counts grow).
    seed : int
        Seed of the stall pattern.

    Members
    -------
    image : numpy.ndarray of uint8
        The memory contents.
    base_addr : int
        Bus address of ``image[0]``.
    requests : list of DRAMRequest
        Every request taken, in order.
    beats : int
        Beats served so far.

    Raises
    ------
    ValueError
        If ``dram_latency_cycles`` is 0, ``image`` is not a 1-D uint8 array, or
        ``stall_probability`` is outside ``[0, 1)``.
    """

    def __init__(
        self,
        bus: Any,
        params: SATParams,
        image: NDArray[np.uint8],
        *,
        base_addr: int = 0,
        stall_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        if params.dram_latency_cycles < 1:
            raise ValueError(
                f"DRAMModel: dram_latency_cycles must be at least 1, got "
                f"{params.dram_latency_cycles}"
            )
        if image.dtype != np.uint8 or image.ndim != 1:
            raise ValueError(f"DRAMModel: image must be a 1-D uint8 array, got {image.dtype}")
        if not 0.0 <= stall_probability < 1.0:
            raise ValueError(
                f"DRAMModel: stall_probability must be in [0, 1), got {stall_probability}"
            )
        self._bus = bus
        self._bytes_per_beat = params.dram_bytes_per_cycle
        self._latency_cycles = params.dram_latency_cycles
        self._stall_probability = stall_probability
        self._rng = np.random.default_rng(seed)
        self.image = image
        self.base_addr = base_addr
        self.requests: list[DRAMRequest] = []
        self.beats = 0
        self._queue: deque[_Pending] = deque()

    def _stall(self) -> bool:
        return self._stall_probability > 0 and self._rng.random() < self._stall_probability

    def _check_range(self, request: DRAMRequest) -> None:
        first = request.addr - self.base_addr
        if request.length_bytes < 1 or first < 0 or first + request.length_bytes > self.image.size:
            raise ValueError(
                f"DRAMModel: request of {request.length_bytes} bytes at {request.addr:#x} "
                f"leaves the {self.image.size:#x}-byte image at {self.base_addr:#x} "
                f"(cycle {request.cycle})"
            )

    def _beat_span(self, pending: _Pending) -> tuple[int, int]:
        """Return (first byte address, byte count) of the next beat of ``pending``."""
        B = self._bytes_per_beat
        offset = pending.served * B
        first = pending.request.addr - self.base_addr + offset
        return first, min(B, pending.request.length_bytes - offset)

    def _write_beat(self, pending: _Pending, data: int, strobes: int) -> None:
        first, count = self._beat_span(pending)
        if strobes >> count:
            raise ValueError(
                f"DRAMModel: write strobes {strobes:#x} reach past the {count} bytes of the "
                f"beat at {first + self.base_addr:#x}"
            )
        raw = np.frombuffer(data.to_bytes(self._bytes_per_beat, "little"), dtype=np.uint8)
        mask = ((strobes >> np.arange(count)) & 1).astype(bool)
        target = self.image[first : first + count]
        target[mask] = raw[:count][mask]

    def _read_beat(self, pending: _Pending) -> int:
        first, count = self._beat_span(pending)
        return int.from_bytes(self.image[first : first + count].tobytes(), "little")

    async def process(self, ctx: Any) -> None:
        """Run the memory; add with ``Simulator.add_process(model.process)``."""
        bus = self._bus
        D = self._latency_cycles
        req_ready = not self._stall()
        ctx.set(bus.req.ready, req_ready)
        serving: _Pending | None = None  # the beat offered in the current cycle
        cycle = 0
        sampled = (
            bus.req.valid, bus.req.write, bus.req.addr, bus.req.length_bytes,
            bus.w.valid, bus.w.data, bus.w.strb,
        )  # fmt: skip
        async for _, _, *values in ctx.tick().sample(*sampled):
            req_valid, req_write, req_addr, req_length, w_valid, w_data, w_strb = values
            # End of `cycle`: finish the beat served in it, take the request offered in it.
            if serving is not None:
                moved = True
                if serving.request.write:
                    moved = bool(w_valid)
                    if moved:
                        self._write_beat(serving, w_data, w_strb)
                if moved:
                    serving.served += 1
                    self.beats += 1
                    if serving.served == serving.beats:
                        self._queue.popleft()
            if req_valid and req_ready:
                request = DRAMRequest(cycle, bool(req_write), req_addr, req_length)
                self._check_range(request)
                beats = -(-req_length // self._bytes_per_beat)
                self._queue.append(_Pending(request, beats))
                self.requests.append(request)
            cycle += 1
            # Start of the new `cycle`: offer its beat and its request slot.
            serving = None
            if self._queue and self._queue[0].request.cycle + D <= cycle and not self._stall():
                serving = self._queue[0]
            read = serving is not None and not serving.request.write
            ctx.set(bus.r.valid, read)
            ctx.set(bus.r.data, self._read_beat(serving) if read and serving else 0)
            ctx.set(bus.w.ready, serving is not None and serving.request.write)
            req_ready = not self._stall()
            ctx.set(bus.req.ready, req_ready)
