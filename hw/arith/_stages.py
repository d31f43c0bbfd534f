# Ref: M. D. Ercegovac and T. Lang, "Digital Arithmetic", Morgan Kaufmann 2004, section 8.5
#      (pipelined floating-point units: registers between alignment, addition,
#      normalisation and rounding).
# Ref: J. L. Hennessy and D. A. Patterson, "Computer Architecture: A Quantitative Approach",
#      appendix C (balancing pipeline stages: the clock is set by the slowest stage).
"""Fixed-latency pipelines built from combinational phases (private to the arithmetic units).

An arithmetic unit is written as a list of *phases*, functions from a dictionary of named
values to the next one. :func:`plan_registers` decides how many register stages follow each
phase so that the unit has exactly the requested latency and its slowest stage is as short as
possible; :func:`build_pipeline` elaborates the phases and the registers. The key ``"valid"``
is the only register with a reset; data registers are ``reset_less`` (no reset net on FPGAs).
:class:`PhasePipeline` is the component the two-operand units share: ports, latency check
and elaboration.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Phase", "PhasePipeline", "Values", "build_pipeline", "delay", "plan_registers"]

Values = dict[str, Value]
"""The named values flowing from one phase to the next."""
Phase = Callable[[Module, Values], Values]
"""One combinational phase: reads named values, adds its logic to the module, returns the
named values the later phases need (everything not returned is dropped)."""


def plan_registers(
    phase_weights: Sequence[int], latency_cycles: int, *, extra_after: int = -1
) -> tuple[int, ...]:
    """Return how many register stages follow each phase, ``latency_cycles`` in all.

    Parameters
    ----------
    phase_weights : sequence of int
        Relative logic delay of each phase (a rough count of gate levels).
    latency_cycles : int
        Total register stages, at least 0. With 0 the unit is combinational.
    extra_after : int
        Phase after which the registers beyond one per phase go (default: the last phase, so
        the surplus sits at the output where retiming can move it).

    Returns
    -------
    tuple of int
        Registers after each phase. When ``latency_cycles >= 1`` the last phase is always
        registered (the output comes from a flip-flop); the other cut points minimise the
        largest sum of weights between two registers, then the second largest, and so on.
    """
    count = len(phase_weights)
    regs = [0] * count
    if latency_cycles <= 0:
        return tuple(regs)
    cuts = min(latency_cycles, count) - 1
    best: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    for combo in itertools.combinations(range(count - 1), cuts):
        bounds = [*combo, count - 1]
        starts = [0, *(b + 1 for b in combo)]
        stages = [sum(phase_weights[a : b + 1]) for a, b in zip(starts, bounds, strict=True)]
        # The slowest stage first, then the next slowest, and so on.
        cost = tuple(sorted(stages, reverse=True))
        if best is None or cost < best[0]:
            best = (cost, combo)
    assert best is not None
    for index in best[1]:
        regs[index] += 1
    regs[-1] += 1
    regs[extra_after] += latency_cycles - min(latency_cycles, count)
    return tuple(regs)


def _name(m: Module, values: Mapping[str, Value], prefix: str) -> Values:
    """Drive each value that is not yet a signal onto a named combinational signal."""
    out: Values = {}
    for key, value in values.items():
        if isinstance(value, Signal):
            out[key] = value
        else:
            wire = Signal(value.shape(), name=f"{prefix}_{key}")
            m.d.comb += wire.eq(value)
            out[key] = wire
    return out


def _register(m: Module, values: Mapping[str, Value], prefix: str) -> Values:
    """Register every value once; only ``valid`` has a reset."""
    out: Values = {}
    for key, value in values.items():
        reg = Signal(value.shape(), name=f"{prefix}_{key}", reset_less=key != "valid")
        m.d.sync += reg.eq(value)
        out[key] = reg
    return out


def build_pipeline(
    m: Module,
    phases: Sequence[Phase],
    inputs: Mapping[str, Value],
    registers: Sequence[int],
    prefix: str,
) -> Values:
    """Elaborate ``phases`` in order with ``registers[i]`` register stages after phase ``i``.

    Returns the named values after the last phase and its registers; ``inputs`` should hold a
    ``"valid"`` value that every phase passes on, so it travels with the data.
    """
    values: Values = dict(inputs)
    stage = 0
    for index, (phase, count) in enumerate(zip(phases, registers, strict=True)):
        values = phase(m, values)
        # Name every phase output: it keeps the netlist readable and stops the expression
        # trees of later phases from repeating the earlier ones (which slows pysim badly).
        values = _name(m, values, f"{prefix}_p{index}")
        for _ in range(count):
            stage += 1
            values = _register(m, values, f"{prefix}_s{stage}")
    return values


def delay(m: Module, value: Value, cycles: int, name: str, *, reset_less: bool = True) -> Value:
    """Return ``value`` delayed by ``cycles`` register stages (``value`` itself for 0)."""
    for stage in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{stage + 1}", reset_less=reset_less)
        m.d.sync += reg.eq(value)
        value = reg
    return value


class PhasePipeline(wiring.Component):
    """A two-operand unit built from phases: ``o = f(i.a, i.b)``, ``latency_cycles`` later.

    The common part of :class:`~nmsat.hw.arith.FP16Multiplier`,
    :class:`~nmsat.hw.arith.FP32Adder` and :class:`~nmsat.hw.arith.FP32Multiplier`: the
    latency check, the plain ports, and the elaboration of the phases with the registers
    :func:`plan_registers` places. The first phase reads the keys ``"a"``, ``"b"`` and
    ``"valid"``; the last returns ``"result"`` and ``"valid"``.

    Parameters
    ----------
    latency_cycles : int
        Pipeline latency in cycles, at least ``min_latency_cycles``.
    min_latency_cycles : int
        0 for a unit that may be combinational, else 1.
    operand_bits, result_bits : int
        Widths of ``i.a``/``i.b`` and of ``o.result``.
    phases : sequence of Phase
        The combinational phases, in order.
    phase_weights : sequence of int
        Relative delay of each phase, for :func:`plan_registers`.
    extra_after : int
        Phase after which registers beyond one per phase go (:func:`plan_registers`).
    prefix : str
        Prefix of the generated signal names.

    Members
    -------
    i : ``In(Signature({"a": Out(operand_bits), "b": Out(operand_bits), "valid": Out(1)}))``
        The operands as bit patterns, and whether they hold an operation.
    o : ``Out(Signature({"result": Out(result_bits), "valid": Out(1)}))``
        The result, ``latency_cycles`` after its operands, and the delayed ``valid``.

    Raises
    ------
    TypeError
        If ``latency_cycles`` is not an integer.
    ValueError
        If ``latency_cycles`` is below ``min_latency_cycles``.
    """

    def __init__(
        self,
        latency_cycles: int,
        *,
        min_latency_cycles: int,
        operand_bits: int,
        result_bits: int,
        phases: Sequence[Phase],
        phase_weights: Sequence[int],
        extra_after: int = -1,
        prefix: str,
    ) -> None:
        if isinstance(latency_cycles, bool) or not isinstance(latency_cycles, int):
            raise TypeError(f"latency_cycles must be an integer, got {latency_cycles!r}")
        if latency_cycles < min_latency_cycles:
            raise ValueError(
                f"latency_cycles must be at least {min_latency_cycles}, got {latency_cycles}"
            )
        assert len(phases) == len(phase_weights)
        self._latency_cycles = latency_cycles
        self._phases = tuple(phases)
        self._registers = plan_registers(phase_weights, latency_cycles, extra_after=extra_after)
        self._prefix = prefix
        operands = {"a": Out(operand_bits), "b": Out(operand_bits), "valid": Out(1)}
        super().__init__(
            {
                "i": In(wiring.Signature(operands)),
                "o": Out(wiring.Signature({"result": Out(result_bits), "valid": Out(1)})),
            }
        )

    @property
    def latency_cycles(self) -> int:
        """Cycles from operands in to result out."""
        return self._latency_cycles

    def elaborate(self, platform: object) -> Module:
        m = Module()
        inputs: Values = {"a": self.i.a, "b": self.i.b, "valid": self.i.valid}
        out = build_pipeline(m, self._phases, inputs, self._registers, self._prefix)
        m.d.comb += [self.o.result.eq(out["result"]), self.o.valid.eq(out["valid"])]
        return m
