# Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
#      Dataflow Co-Design", IEEE TCAD 2023 (STCE PE: N:M operand multiplexers, FP32
#      accumulation; interleave mapping hides the adder latency).
# Ref: H. T. Kung, "Why systolic architectures?", IEEE Computer 1982 (weight- and
#      output-stationary cells); N. P. Jouppi et al., "In-datacenter performance analysis of
#      a tensor processing unit", ISCA 2017 (double-buffered weights switched by a flag that
#      travels with the data).
# Ref: DESIGN.md sections 4 and 5; docs/numerics.md (gemm, gemm_nm: one rounded FP32 add per
#      product, increasing k); docs/isa.md (gemm_ws_cycles, gemm_os_cycles).
"""The processing element of the STCE systolic array."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arith._stages import delay
from ..arith.fp16_mul import FP16Multiplier
from ..arith.fp32_add import FP32Adder
from ..params import SATParams

__all__ = ["ProcessingElement"]

_PRODUCT_LATENCY_CYCLES = 1
"""Cycles from an operation to its product at the adder input (the FP16 multiplier stage)."""


class ProcessingElement(wiring.Component):
    """One MAC cell of the STCE: N:M operand select, exact FP16 product, FP32 accumulation.

    The PE holds a double-buffered FP16 weight with its N:M index, multiplies it by one of
    the ``m_max`` activations of a group (the one its index names; lane 0 in dense mode), and
    adds the exact FP32 product either to a partial sum passing through (weight-stationary
    chain) or to one of ``interleave`` accumulator registers (output-stationary). Every add
    is :func:`nmsat.hw.numerics.fp32_add`, so chains of operations reproduce
    :func:`~nmsat.hw.numerics.gemm` and :func:`~nmsat.hw.numerics.gemm_nm` bit for bit.

    **Timing.** An operation is presented in cycle ``t`` (``mac`` and its fields, ``acts``,
    ``dense``). Its product is ready at the adder input in cycle ``t + 1``; the addend is
    taken in that cycle (``psum_in`` for a chained operation, else an accumulator), and the
    sum leaves the adder in cycle ``t + 1 + L`` with ``L = adder_latency``: on ``psum_out``
    with ``psum_valid`` when chained, else written back to its accumulator at the end of
    that cycle. The PE never stalls; one operation may start every cycle.

    - *Weight-stationary chain*: a column of R PEs adds in R hops of exactly L cycles each
      (``psum_out`` of one PE feeds ``psum_in`` of the next, no register between), so a
      partial sum crosses the column in ``R * L`` cycles, provided each row's operation is
      presented L cycles after the row above's (the activation skew) and the top row's one
      cycle before its ``psum_in``.
    - *Interleaved accumulation*: an accumulator's new value is forwarded to the adder input
      in the cycle it leaves the adder, so operations on one accumulator may follow each
      other every L cycles; round robin over ``I >= L`` accumulators starts one operation per
      cycle, and ``I < L`` needs ``L`` cycles per round (``max(I, L)``, as gemm_os_cycles
      assumes).
    - *Preload and drain*: each accumulator has a shadow register. ``acc_swap`` exchanges the
      selected accumulator with its shadow (taking the forwarded value, one cycle after it is
      presented, like the addend); with ``mac`` in the same operation, the product is added
      to the swapped-in value. The shadows of a column form a shift chain (``shadow_in`` ->
      shadow 0 -> ... -> shadow I-1 -> ``shadow_out``) that brings the next fold's initial
      sums ``c`` in and the finished sums out while the array computes; a fold that starts
      from ``+0`` sets ``acc_zero`` on its first operations instead. A column's chain moves
      one value per cycle and must hold still while the column's swaps take effect (R + I - 1
      cycles with a one-cycle skew per row), so a drain hides behind the next fold only when
      the fold lasts at least ``R * I + R + I - 1`` cycles. ``shadow_last`` shortens the
      chain to the instruction's ``I`` when it interleaves fewer accumulations.

    **Weights.** ``w_load`` writes the next weight (value and index) into the shadow weight
    register; an operation with ``next_weight`` makes it the active weight and uses it,
    taking ``w_value``/``w_index`` directly when ``w_load`` is high in the same cycle (the
    output-stationary dataflow streams A this way). The PE has no hop registers between
    neighbours: the array adds them, in the direction its dataflow needs (weight-stationary:
    activation groups and operations move right, weights load down the columns; output-
    stationary: A values move right, activation groups down).

    The ports are plain signals, not streams (STYLE.md G5): the array is a static schedule
    whose cycle counts are the timing contract, so a PE never applies back-pressure.

    Parameters
    ----------
    params : SATParams
        Uses ``adder_latency`` (L), ``interleave`` (accumulators I), ``m_max`` (activation
        lanes) and ``index_bits``.

    Members
    -------
    w_load : ``In(1)``
        Write ``w_value`` and ``w_index`` into the shadow weight register.
    w_value : ``In(16)``
        FP16 weight bit pattern.
    w_index : ``In(index_bits)``
        Position of the weight in its N:M group, ``0 .. m - 1``.
    mac : ``In(1)``
        An operation starts this cycle: multiply and add (see Timing).
    next_weight : ``In(1)``
        This operation switches to the shadow weight first (first operation of a fold).
    chained : ``In(1)``
        Weight-stationary: the addend is ``psum_in`` one cycle later and the sum goes to
        ``psum_out``; otherwise the addend is accumulator ``acc_sel`` and the sum returns to it.
    acc_sel : ``In(range(interleave))``
        Accumulator of this operation (and of ``acc_swap``).
    acc_swap : ``In(1)``
        Exchange accumulator ``acc_sel`` with its shadow, one cycle later; allowed without
        ``mac`` (to drain the last fold).
    acc_zero : ``In(1)``
        The addend of this (not chained) operation is ``+0`` instead of the accumulator or
        its shadow: the first operation of a fold that does not accumulate onto ``c``, so
        the shadow chain need not be filled with zeros first.
    acts : ``In(data.ArrayLayout(16, m_max))``
        The FP16 activations of one N:M group; in dense mode only lane 0 is used.
    dense : ``In(1)``
        Use lane 0 and ignore the weight's index.
    psum_in : ``In(32)``
        FP32 partial sum of a chained operation, one cycle after the operation.
    psum_out : ``Out(32)``
        ``fp32_add(psum_in, product)``, ``L`` cycles after ``psum_in``.
    psum_valid : ``Out(1)``
        ``psum_out`` holds a chained operation's sum.
    shadow_shift : ``In(1)``
        Shift the shadow chain by one register this cycle. Never in a cycle where an
        ``acc_swap`` takes effect (the swap wins and the shift is dropped).
    shadow_in : ``In(32)``
        Value entering shadow 0 on a shift (from the PE above, or the array's edge).
    shadow_out : ``Out(32)``
        Shadow ``shadow_last``, the value leaving on a shift.
    shadow_last : ``In(range(interleave))``, init ``interleave - 1``
        Last shadow of the chain: an instruction that interleaves ``I < interleave``
        accumulations uses a chain of ``I`` shadows per PE (``I - 1`` here), so a column
        drains ``R * I`` values, not ``R * interleave``. The shadows past it still shift
        and hold don't-care values.
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        super().__init__(
            {
                "w_load": In(1),
                "w_value": In(16),
                "w_index": In(params.index_bits),
                "mac": In(1),
                "next_weight": In(1),
                "chained": In(1),
                "acc_sel": In(range(params.interleave)),
                "acc_swap": In(1),
                "acc_zero": In(1),
                "acts": In(data.ArrayLayout(16, params.m_max)),
                "dense": In(1),
                "psum_in": In(32),
                "psum_out": Out(32),
                "psum_valid": Out(1),
                "shadow_shift": In(1),
                "shadow_in": In(32),
                "shadow_out": Out(32),
                "shadow_last": In(range(params.interleave), init=params.interleave - 1),
            }
        )

    @property
    def params(self) -> SATParams:
        """The parameter set the PE was built for."""
        return self._params

    @property
    def latency_cycles(self) -> int:
        """Cycles from an operation to its sum: ``1 + adder_latency``."""
        return _PRODUCT_LATENCY_CYCLES + self._params.adder_latency

    def elaborate(self, platform: object) -> Module:
        m = Module()
        params = self._params
        interleave = params.interleave

        # -- weight registers and operand select (cycle t) ----------------------------------
        shadow_value = Signal(16)
        shadow_index = Signal(params.index_bits)
        active_value = Signal(16)
        active_index = Signal(params.index_bits)
        next_value = Mux(self.w_load, self.w_value, shadow_value)
        next_index = Mux(self.w_load, self.w_index, shadow_index)
        with m.If(self.w_load):
            m.d.sync += [shadow_value.eq(self.w_value), shadow_index.eq(self.w_index)]
        with m.If(self.next_weight):
            m.d.sync += [active_value.eq(next_value), active_index.eq(next_index)]
        weight_value = Mux(self.next_weight, next_value, active_value)
        weight_index = Mux(self.next_weight, next_index, active_index)
        lane = Signal(range(params.m_max))
        if params.m_max > 1:
            m.d.comb += lane.eq(Mux(self.dense, 0, weight_index))
        activation = Signal(16)
        m.d.comb += activation.eq(self.acts[lane])

        m.submodules.multiplier = multiplier = FP16Multiplier(_PRODUCT_LATENCY_CYCLES)
        m.d.comb += [
            multiplier.i.a.eq(weight_value),
            multiplier.i.b.eq(activation),
            multiplier.i.valid.eq(self.mac),
        ]

        # -- addend select (cycle t + 1) ----------------------------------------------------
        chained = delay(m, self.chained, _PRODUCT_LATENCY_CYCLES, "chained", reset_less=False)
        acc_sel = delay(m, self.acc_sel, _PRODUCT_LATENCY_CYCLES, "acc_sel")
        acc_swap = delay(m, self.acc_swap, _PRODUCT_LATENCY_CYCLES, "acc_swap", reset_less=False)
        acc_zero = delay(m, self.acc_zero, _PRODUCT_LATENCY_CYCLES, "acc_zero")

        m.submodules.adder = adder = FP32Adder(params.adder_latency)
        # Which accumulator each sum belongs to travels beside the adder pipeline.
        done_chained = delay(m, chained, params.adder_latency, "done_chained")
        done_sel = delay(m, acc_sel, params.adder_latency, "done_sel")
        writeback = adder.o.valid & ~done_chained

        accs = [Signal(32, name=f"acc{k}") for k in range(interleave)]
        shadows = [Signal(32, name=f"shadow{k}") for k in range(interleave)]
        # The current value of each accumulator, with the sum leaving the adder forwarded.
        current = []
        for k, acc in enumerate(accs):
            value = Signal(32, name=f"acc{k}_current")
            m.d.comb += value.eq(Mux(writeback & (done_sel == k), adder.o.result, acc))
            current.append(value)
        addend = Signal(32)
        local = Mux(acc_swap, Array(shadows)[acc_sel], Array(current)[acc_sel])
        m.d.comb += addend.eq(Mux(chained, self.psum_in, Mux(acc_zero, 0, local)))
        m.d.comb += [
            adder.i.a.eq(addend),
            adder.i.b.eq(multiplier.o.result),
            adder.i.valid.eq(multiplier.o.valid),
        ]

        # -- write back, swap, shift ----------------------------------------------------------
        for k in range(interleave):
            with m.If(writeback & (done_sel == k)):
                m.d.sync += accs[k].eq(adder.o.result)
            with m.If(acc_swap & (acc_sel == k)):
                m.d.sync += [accs[k].eq(shadows[k]), shadows[k].eq(current[k])]
        with m.If(self.shadow_shift & ~acc_swap):
            m.d.sync += shadows[0].eq(self.shadow_in)
            m.d.sync += [shadows[k].eq(shadows[k - 1]) for k in range(1, interleave)]

        last_shadow = Array(shadows)[self.shadow_last] if interleave > 1 else shadows[0]
        m.d.comb += [
            self.psum_out.eq(adder.o.result),
            self.psum_valid.eq(adder.o.valid & done_chained),
            self.shadow_out.eq(last_shadow),
        ]
        return m
