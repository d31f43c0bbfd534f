# Ref: Amaranth 0.5 language guide, "Elaboration" (an elaboratable may return another
#      elaboratable; ``Fragment.get`` keeps elaborating) and "Instances" (``Instance`` with
#      ``i_``/``o_`` port arguments); amaranth.lib.wiring.Signature.flatten (the member paths
#      a component's Verilog ports are named after, joined with ``__``).
"""Shared modules: a unit written out once in Verilog and instantiated many times.

Amaranth elaborates every submodule of a design separately, and its Verilog backend writes
every one as a module of its own, so the vcu1525 array's 1024 identical PEs cost 1024
elaborations and 1024 copies of the PE in the Verilog. :class:`Shared` wraps a component
built many times with the same parameters: in simulation (no platform, or a platform
without the hook) it elaborates to the component itself; with a platform that has
``get_shared(component, key, name)`` (the Verilog generator's, :mod:`nmsat.hw.gen`) it elaborates
to whatever that returns, an ``Instance`` of one module converted the first time ``key`` is
seen.

The component's ports must all be signature members (no clock or reset but the ``sync``
domain's): the instance connects the members by their flattened names and the ``sync``
domain's clock and reset as ``clk`` and ``rst``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, ResetSignal
from amaranth.lib import wiring

__all__ = ["Shared", "instance_of", "port_name"]


class Shared(Elaboratable):
    """``component``, or an instance of a module shared by every component with ``key``.

    Parameters
    ----------
    component : wiring.Component
        The unit; the design connects to its signature members as usual.
    key : hashable
        Equal for components whose Verilog is identical (class and parameters).
    name : str
        The Verilog module's name without the ``nmsat_`` prefix (``"stce_cell"``); the
        generator appends a number when two keys share a name.
    """

    def __init__(self, component: wiring.Component, key: Hashable, name: str) -> None:
        self.component = component
        self.key = key
        self.name = name

    def elaborate(self, platform: object) -> Any:
        hook = getattr(platform, "get_shared", None)
        if hook is None:
            return self.component
        # The component itself is not elaborated here: silence Amaranth's warning about an
        # elaboratable created but never used (the attribute its MustUse mixin checks).
        self.component._MustUse__silence = True
        return hook(self.component, self.key, self.name)


def port_name(path: tuple[Any, ...]) -> str:
    """The Verilog port name of a signature member path, as Amaranth's backend spells it."""
    return "__".join(str(part) for part in path)


def instance_of(component: wiring.Component, module_name: str, ports: set[str]) -> Module:
    """Return a module holding an ``Instance`` of ``module_name`` wired to ``component``.

    ``ports`` are the port names the converted module has (a member that the conversion
    dropped, an input nothing reads, is left unconnected; ``clk`` and ``rst`` are connected
    when present).
    """
    m = Module()
    connections: dict[str, Any] = {}
    for path, member, value in component.signature.flatten(component):
        name = port_name(path)
        if name not in ports:
            continue
        prefix = "i_" if member.flow == wiring.In else "o_"
        connections[prefix + name] = value
    if "clk" in ports:
        connections["i_clk"] = ClockSignal("sync")
    if "rst" in ports:
        connections["i_rst"] = ResetSignal("sync")
    m.submodules.unit = Instance(module_name, **connections)
    return m
