# Ref: K. E. Batcher, "Sorting networks and their applications", AFIPS SJCC 1968 (bitonic
#      sorter: log2(M) * (log2(M) + 1) / 2 compare stages over M inputs).
# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (SORE: the N:M pruning unit of SAT).
# Ref: DESIGN.md section 4 (SORE); docs/isa.md (PRUNE semantics and sore_pipeline_cycles);
#      nmsat.models.nm (top-N order) and nmsat.hw.numerics.to_fp16 (the output rounding).
"""The SORE: N:M pruning of FP32 master weights into FP16 values and indices."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from nmsat.hw.arith.fp32_to_fp16 import FP32ToFP16
from nmsat.hw.params import SATParams
from nmsat.hw.shared import Shared

__all__ = ["SORE", "bitonic_stages"]


def bitonic_stages(size_log2: int) -> list[list[tuple[int, int]]]:
    """Return the compare stages of a bitonic sorter over ``2**size_log2`` slots.

    Parameters
    ----------
    size_log2 : int
        ``log2`` of the number of slots, at least 0.

    Returns
    -------
    list of list of (int, int)
        ``size_log2 * (size_log2 + 1) / 2`` stages in order; each stage pairs every slot with
        one other as ``(high, low)``: after the stage, slot ``high`` holds the larger of the
        two and slot ``low`` the smaller. Applied in order, the stages sort descending (the
        largest in slot 0). Phase ``p`` (stages ``p(p-1)/2`` to ``p(p+1)/2 - 1``) merges
        blocks of ``2**p`` slots, so after the first ``k(k+1)/2`` stages every block of
        ``2**k`` slots is sorted, block 0 descending.

    Raises
    ------
    ValueError
        If ``size_log2`` is negative.
    """
    if size_log2 < 0:
        raise ValueError(f"bitonic_stages: size_log2 must be at least 0, got {size_log2}")
    stages = []
    for phase in range(1, size_log2 + 1):
        for step in reversed(range(phase)):
            distance = 1 << step
            pairs = []
            for slot in range(1 << size_log2):
                if slot & distance:
                    continue
                partner = slot | distance
                # Blocks of 2**phase alternate descending / ascending so that each pair of
                # them is a bitonic sequence for the next phase; block 0 is descending.
                descending = (slot >> phase) & 1 == 0
                pairs.append((slot, partner) if descending else (partner, slot))
            stages.append(pairs)
    return stages


class SORE(wiring.Component):
    """Sparse online reduction engine: keep the N largest of every M FP32 weights.

    Each of the ``params.sore_lanes`` lanes takes one group of ``m`` FP32 master weights per
    cycle and returns the ``n`` weights of largest magnitude, converted to FP16, with their
    positions in the group, in increasing position order: exactly PRUNE's inner loop
    (docs/isa.md), :func:`nmsat.models.nm.compress` followed by
    :func:`nmsat.hw.numerics.to_fp16`. Magnitudes are ranked by their FP32 bit patterns with
    the sign cleared, as unsigned integers (NaN above infinity, ``-0.0`` ties ``+0.0``);
    ties go to the lower position. Dense (``n == m``) keeps every weight in order.

    **Network.** Every lane is one bitonic sorting network over ``M = params.m_max`` slots,
    descending by the key ``(|w| bits, complemented position)``; the positions make all keys
    distinct, so equal magnitudes are ordered lower position first. Each of its
    ``log2(M) * (log2(M) + 1) / 2`` compare stages ends in a register. A group of ``m < M``
    enters slots ``0 .. m-1`` and leaves after the first ``log2(m) * (log2(m) + 1) / 2``
    stages, which already sort every block of ``m`` slots (:func:`bitonic_stages`); the other
    slots are ignored. So a group of ``m`` takes :meth:`latency_cycles` ``(m)`` cycles for
    every ``m`` the network supports, with one group per lane per cycle.

    **Output cycle.** After the register of its last stage, a group's first ``n`` slots (the
    ``n`` largest) are reordered by position (each kept slot's rank among them: ``n * n``
    index comparators) and converted to FP16 combinationally, so that the result drives the
    buffer write port in the same cycle.

    **Timing contract** (``nmsat.hw.isa_timing.sore_pipeline_cycles``): a group read from the
    VEC buffer has its address on the buffer's read port in cycle ``t`` (the *read* cycle),
    its weights on ``i`` in cycle ``t + 1`` (buffer read latency 1, the first compare stage
    works on them in that cycle), its result on ``o`` in cycle ``t + 1 + S`` with
    ``S = latency_cycles(m)`` (the *write* cycle: the WGT and IDX write ports take it there
    and store it at the end of the cycle). That is ``S + 2 = sore_pipeline_cycles(m)``
    cycles from read to write, inclusive; ``m == 1`` has ``S = 0`` and goes from ``i`` to
    ``o`` in the same cycle.

    Parameters
    ----------
    params : SATParams
        Uses ``sore_lanes``, ``m_max`` (the network size) and ``index_bits``.

    Members
    -------
    n : ``In(range(params.m_max + 1))``
        Kept weights per group, sampled with every group that enters.
    m : ``In(range(params.m_max + 1))``
        Group size, a power of two up to ``params.m_max``, sampled with every group. Any other
        value makes the groups entering in that cycle produce no output. ``n`` must be in
        ``1 .. m``; outside it the output is unspecified.
    i : ``In(Signature({"valid": Out(1), "weights": Out(ArrayLayout(32, M))})).array(lanes)``
        One port per lane: a group of FP32 bit patterns, element ``u`` the weight at position
        ``u`` (elements ``m .. M-1`` are ignored), and whether the lane takes a group this
        cycle.
    o : ``Out(Signature({"valid": Out(1), "values": ..., "indices": ...})).array(lanes)``
        One port per lane; ``valid`` rises ``latency_cycles(m)`` cycles after the group's
        input. ``values``: ``ArrayLayout(16, M)``, the kept weights as FP16 bit patterns in
        increasing position order in elements ``0 .. n-1``, zeros after; ``indices``:
        ``ArrayLayout(params.index_bits, M)``, their positions, zeros after element ``n-1``.

    Notes
    -----
    The ports are plain valid-qualified signals, not :mod:`amaranth.lib.stream` streams: the
    engine has no backpressure, and a component with ``always_ready`` streams cannot be
    converted to Verilog as a top level in Amaranth 0.5 (amaranth-lang/amaranth#1574), which
    the per-unit cocotb tests need.

    ``n`` and ``m`` travel with each group, so they may change between any two cycles, with
    one restriction: groups of different ``m`` must not reach ``o`` in the same cycle, so
    after groups of a larger ``m`` a group of a smaller ``m`` waits for the difference of
    their latencies. A PRUNE instruction drains the pipeline before the next one starts
    (docs/isa.md, rule 3), which satisfies this.
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        self._size_log2 = params.m_max.bit_length() - 1
        self._stages = bitonic_stages(self._size_log2)
        group_in = wiring.Signature(
            {"valid": Out(1), "weights": Out(data.ArrayLayout(32, params.m_max))}
        )
        group_out = wiring.Signature(
            {
                "valid": Out(1),
                "values": Out(data.ArrayLayout(16, params.m_max)),
                "indices": Out(data.ArrayLayout(params.index_bits, params.m_max)),
            }
        )
        super().__init__(
            {
                "n": In(range(params.m_max + 1)),
                "m": In(range(params.m_max + 1)),
                "i": In(group_in).array(params.sore_lanes),
                "o": Out(group_out).array(params.sore_lanes),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameters the engine was built for."""
        return self._params

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Group sizes ``m`` the network supports: the powers of two up to ``params.m_max``."""
        return tuple(1 << k for k in range(self._size_log2 + 1))

    def latency_cycles(self, m: int) -> int:
        """Return the cycles from a group of ``m`` on ``i`` to its result on ``o``.

        It is ``log2(m) * (log2(m) + 1) / 2``, one register per compare stage, which is
        ``sore_pipeline_cycles(m) - 2`` (the buffer read and write cycles; class docstring).

        Raises
        ------
        ValueError
            If ``m`` is not in :attr:`group_sizes`.
        """
        if m not in self.group_sizes:
            raise ValueError(f"SORE: group size m={m!r} is not supported; allowed: "
                             f"{', '.join(map(str, self.group_sizes))}")  # fmt: skip
        k = m.bit_length() - 1
        return k * (k + 1) // 2

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for lane in range(self._params.sore_lanes):
            self._elaborate_lane(m, lane)
        return m

    def _elaborate_lane(self, m: Module, lane: int) -> None:
        params = self._params
        size = params.m_max
        index_bits = params.index_bits
        key_bits = index_bits + 31
        i_lane, o_lane = self.i[lane], self.o[lane]

        # A slot holds Cat(~position, |w| bits, sign): its low key_bits bits are the sort key
        # (magnitude first, then the complemented position, so the lower position is larger).
        slots: list[Value] = [
            Cat(Const((1 << index_bits) - 1 - u, index_bits), i_lane.weights[u])
            for u in range(size)
        ]
        valid: Value = i_lane.valid
        n_tag: Value = self.n
        m_tag: Value = self.m
        # taps[s] = (slots, valid, n, m) after s compare stages (s = 0: the input itself).
        taps = [(slots, valid, n_tag, m_tag)]
        for stage, pairs in enumerate(self._stages):
            result: list[Value] = list(slots)
            for high, low in pairs:
                swap = slots[low][:key_bits] > slots[high][:key_bits]
                result[high] = Mux(swap, slots[low], slots[high])
                result[low] = Mux(swap, slots[high], slots[low])
            prefix = f"lane{lane}_stage{stage + 1}"
            slots = [Signal.like(result[u], name=f"{prefix}_slot{u}", reset_less=True)
                     for u in range(size)]  # fmt: skip
            m.d.sync += [reg.eq(value) for reg, value in zip(slots, result, strict=True)]
            valid, n_tag, m_tag = _register(m, prefix, valid, n_tag, m_tag)
            taps.append((slots, valid, n_tag, m_tag))

        # Pick the tap where the group's own m ends its network.
        sorted_slots = [Signal(index_bits + 32, name=f"lane{lane}_sorted{u}") for u in range(size)]
        kept_count = Signal.like(self.n, name=f"lane{lane}_kept_count")
        for order, group_size in enumerate(self.group_sizes):
            tap_slots, tap_valid, tap_n, tap_m = taps[self.latency_cycles(group_size)]
            fire = tap_valid & (tap_m == group_size)
            with m.If(fire) if order == 0 else m.Elif(fire):
                m.d.comb += [o_lane.valid.eq(1), kept_count.eq(tap_n)]
                m.d.comb += [s.eq(t) for s, t in zip(sorted_slots, tap_slots, strict=True)]

        # The n largest are in slots 0 .. n-1; reorder them by position. A kept slot's output
        # place is the number of kept slots with a lower position.
        positions = [~s[:index_bits] for s in sorted_slots]
        kept = [Const(t) < kept_count for t in range(size)]
        places = []
        for t in range(size):
            place = Signal(range(size), name=f"lane{lane}_place{t}")
            lower = [kept[u] & (positions[u] < positions[t]) for u in range(size) if u != t]
            m.d.comb += place.eq(sum(lower, Const(0, range(size))))
            places.append(place)
        for place in range(size):
            chosen = [kept[t] & (places[t] == place) for t in range(size)]
            value = _select(chosen, [s[index_bits:] for s in sorted_slots])
            index = _select(chosen, positions)
            convert = FP32ToFP16(latency_cycles=0)
            m.submodules[f"lane{lane}_to_fp16_{place}"] = Shared(
                convert, (FP32ToFP16, 0), "fp32_to_fp16"
            )
            m.d.comb += [
                convert.i.valid.eq(o_lane.valid),
                convert.i.a.eq(value),
                o_lane.values[place].eq(convert.o.result),
                o_lane.indices[place].eq(index),
            ]


def _select(chosen: list[Value], values: list[Value]) -> Value:
    """Return the value whose ``chosen`` bit is set (at most one is), or zero (an AND-OR mux)."""
    result: Value = Const(0, len(values[0]))
    for bit, value in zip(chosen, values, strict=True):
        result = result | Mux(bit, value, 0)
    return result


def _register(m: Module, prefix: str, valid: Value, n: Value, size: Value) -> tuple[Value, ...]:
    """Return registered copies of a group's valid bit and pattern (one pipeline stage)."""
    valid_reg = Signal(name=f"{prefix}_valid")
    n_reg = Signal.like(n, name=f"{prefix}_n", reset_less=True)
    m_reg = Signal.like(size, name=f"{prefix}_m", reset_less=True)
    m.d.sync += [valid_reg.eq(valid), n_reg.eq(n), m_reg.eq(size)]
    return valid_reg, n_reg, m_reg
