# Ref: docs/isa.md, sections VEC and UPDATE (vec_pipeline_cycles, update_pipeline_cycles);
#      hw/numerics.py (relu, relu_grad, fp32_add, fp32_mul, sgd_update: the operation order).
# Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
#      Scratch", ICLR 2021 (the SR-STE term lambda * (1 - mask) * W).
"""One lane of the WUVE: the element-wise operations and the fused SGD step on one element."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arith._stages import delay
from ..arith.fp32_add import FP32Adder
from ..arith.fp32_mul import FP32Multiplier
from ..isa import VecOp
from ..numerics import FP32_CANONICAL_NAN_BITS, FP32_SIGN_MASK_BITS
from ..params import SATParams

__all__ = ["HP_FIELDS", "HP_LAYOUT", "Lane", "canonical", "is_nan", "is_positive"]

#: The four hyper-parameter words of UPDATE, in their order in the VEC buffer.
HP_FIELDS = ("lr", "momentum", "weight_decay", "srste_lambda")

#: The hyper-parameters as one value, ``lr`` in the low word.
HP_LAYOUT = data.StructLayout(dict.fromkeys(HP_FIELDS, 32))


def is_nan(x: Value) -> Value:
    """Whether the FP32 pattern ``x`` is a NaN (any payload, any sign)."""
    return (x[23:31] == 0xFF) & x[:23].any()


def is_positive(x: Value) -> Value:
    """Whether ``x > 0`` after DAZ: positive sign, not zero or subnormal, not NaN."""
    return ~x[31] & (x[23:31] != 0) & ~is_nan(x)


def canonical(x: Value) -> Value:
    """Return ``x`` with a subnormal flushed to its signed zero and a NaN made canonical."""
    flushed = Mux(x[23:31] == 0, Cat(Const(0, 31), x[31]), x)
    return Mux(is_nan(x), Const(FP32_CANONICAL_NAN_BITS, 32), flushed)


class Lane(wiring.Component):
    """One WUVE lane: a VEC operation or the fused UPDATE step on one FP32 element per cycle.

    An element presented with ``valid`` in cycle ``t`` leaves on ``o`` with ``o.valid`` after
    the latency of its operation, and a new element may enter every cycle (the lane never
    stalls). The operation (``update``, ``op``) and the constants (``imm``, ``hp``) must stay
    unchanged while elements are in flight: the WUVE runs one instruction at a time.

    Latencies, with ``L = adder_latency`` and ``Lm = multiplier_latency``:

    - COPY, RELU, RELU_GRAD: 0 (combinational, from ``a`` and ``b``);
    - ADD: ``L`` (``fp32_add(a, b)``); SCALE: ``Lm`` (``fp32_mul(imm, a)``);
    - UPDATE: ``2 * Lm + 4 * L``, the critical path of :func:`nmsat.hw.numerics.sgd_update`:
      ``weight_decay * w`` (Lm), ``+ g`` (L), ``+ srste_lambda * w`` (L, selected away for a
      kept weight), ``momentum * v +`` (L), ``lr * v_new`` (Lm), ``w -`` (L). The products
      ``srste_lambda * w`` and ``momentum * v`` run in parallel with the first one and wait
      in delay registers, so every element takes the same path and one enters per cycle.

    These are ``vec_pipeline_cycles - 2`` and ``update_pipeline_cycles - 3`` of
    :mod:`nmsat.hw.isa_timing`: the WUVE adds the buffer read, the buffer write and (UPDATE)
    the hyper-parameter read around them.

    Parameters
    ----------
    params : SATParams
        Uses ``adder_latency`` and ``multiplier_latency``.

    Members
    -------
    valid : ``In(1)``
        An element enters this cycle.
    update : ``In(1)``
        1: the UPDATE step; 0: the VEC operation ``op``.
    op : ``In(VecOp)``
        The VEC operation (ignored for UPDATE).
    a : ``In(32)``
        VEC: the first source, FP32 (FP16 sources already widened); UPDATE: the weight ``w``.
    b : ``In(32)``
        VEC: the second source; UPDATE: the momentum ``v``.
    g : ``In(32)``
        UPDATE: the gradient.
    kept : ``In(1)``
        UPDATE: the weight is in the N:M mask (no SR-STE term).
    imm : ``In(32)``
        VEC SCALE: the factor.
    hp : ``In(StructLayout({"lr": 32, "momentum": 32, "weight_decay": 32,
    "srste_lambda": 32}))``
        UPDATE: the hyper-parameters as FP32 patterns.
    o : ``Out(Signature({"valid": Out(1), "result": Out(32), "velocity": Out(32)}))``
        ``result``: the VEC result or the new weight; ``velocity``: the new momentum (UPDATE).
    """

    def __init__(self, params: SATParams) -> None:
        self._params = params
        super().__init__(
            {
                "valid": In(1),
                "update": In(1),
                "op": In(VecOp),
                "a": In(32),
                "b": In(32),
                "g": In(32),
                "kept": In(1),
                "imm": In(32),
                "hp": In(HP_LAYOUT),
                "o": Out(
                    wiring.Signature({"valid": Out(1), "result": Out(32), "velocity": Out(32)})
                ),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        add_l = self._params.adder_latency
        mul_l = self._params.multiplier_latency
        muls = [FP32Multiplier(mul_l) for _ in range(4)]
        adds = [FP32Adder(add_l) for _ in range(4)]
        for index, unit in enumerate(muls):
            m.submodules[f"mul{index}"] = unit
        for index, unit in enumerate(adds):
            m.submodules[f"add{index}"] = unit
        decay_mul, lambda_mul, momentum_mul, lr_mul = muls
        grad_add, srste_add, momentum_add, weight_add = adds
        hp = self.hp
        step = self.valid & self.update

        # Stage 1 (cycle t): the three products of the inputs. decay_mul doubles as SCALE.
        m.d.comb += [
            decay_mul.i.a.eq(Mux(self.update, hp.weight_decay, self.imm)),
            decay_mul.i.b.eq(self.a),
            decay_mul.i.valid.eq(step | (self.valid & (self.op == VecOp.SCALE))),
            lambda_mul.i.a.eq(hp.srste_lambda),
            lambda_mul.i.b.eq(self.a),
            lambda_mul.i.valid.eq(step),
            momentum_mul.i.a.eq(hp.momentum),
            momentum_mul.i.b.eq(self.b),
            momentum_mul.i.valid.eq(step),
        ]
        # Stage 2 (t + Lm): g1 = g + weight_decay * w. grad_add doubles as ADD (at cycle t).
        m.d.comb += [
            grad_add.i.a.eq(Mux(self.update, delay(m, self.g, mul_l, "g"), self.a)),
            grad_add.i.b.eq(Mux(self.update, decay_mul.o.result, self.b)),
            grad_add.i.valid.eq(
                Mux(self.update, decay_mul.o.valid, self.valid & (self.op == VecOp.ADD))
            ),
        ]
        # Stage 3 (t + Lm + L): g1 + srste_lambda * w; the mask selects g1 or the sum.
        m.d.comb += [
            srste_add.i.a.eq(grad_add.o.result),
            srste_add.i.b.eq(delay(m, lambda_mul.o.result, add_l, "lambda_w")),
            srste_add.i.valid.eq(grad_add.o.valid & self.update),
        ]
        g1 = delay(m, grad_add.o.result, add_l, "g1")
        kept = delay(m, self.kept, mul_l + 2 * add_l, "kept")
        g2 = Mux(kept, g1, srste_add.o.result)
        # Stage 4 (t + Lm + 2L): v_new = momentum * v + g2.
        m.d.comb += [
            momentum_add.i.a.eq(delay(m, momentum_mul.o.result, 2 * add_l, "momentum_v")),
            momentum_add.i.b.eq(g2),
            momentum_add.i.valid.eq(srste_add.o.valid),
        ]
        velocity = momentum_add.o.result
        # Stage 5 (t + Lm + 3L): lr * v_new.
        m.d.comb += [
            lr_mul.i.a.eq(hp.lr),
            lr_mul.i.b.eq(velocity),
            lr_mul.i.valid.eq(momentum_add.o.valid),
        ]
        # Stage 6 (t + 2Lm + 3L): w - lr * v_new, as w + (-(lr * v_new)): IEEE subtraction is
        # addition of the negated operand, signed zeros and NaN included.
        m.d.comb += [
            weight_add.i.a.eq(delay(m, self.a, 2 * mul_l + 3 * add_l, "w")),
            weight_add.i.b.eq(lr_mul.o.result ^ FP32_SIGN_MASK_BITS),
            weight_add.i.valid.eq(lr_mul.o.valid),
        ]

        with m.If(self.update):
            m.d.comb += [
                self.o.valid.eq(weight_add.o.valid),
                self.o.result.eq(weight_add.o.result),
                self.o.velocity.eq(delay(m, velocity, mul_l + add_l, "velocity")),
            ]
        with m.Elif(self.op == VecOp.ADD):
            m.d.comb += [self.o.valid.eq(grad_add.o.valid), self.o.result.eq(grad_add.o.result)]
        with m.Elif(self.op == VecOp.SCALE):
            m.d.comb += [self.o.valid.eq(decay_mul.o.valid), self.o.result.eq(decay_mul.o.result)]
        with m.Else():
            m.d.comb += [
                self.o.valid.eq(self.valid),
                self.o.result.eq(_select(self.op, self.a, self.b)),
            ]
        return m


def _select(op: Value, a: Value, b: Value) -> Value:
    """COPY (raw bits), RELU and RELU_GRAD of the FP32 patterns ``a`` and ``b``."""
    zero = Const(0, 32)
    relu = Mux(is_nan(a) | is_positive(a), canonical(a), zero)
    relu_grad = Mux(is_positive(b), canonical(a), zero)
    return Mux(op == VecOp.RELU, relu, Mux(op == VecOp.RELU_GRAD, relu_grad, a))
