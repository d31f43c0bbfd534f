"""nmsat.compiler: lowers a BDWP training step of a model to the accelerator's instructions.

The pipeline (STYLE.md G14): :func:`build_graph` (frontend) -> :func:`lower` (tiling, buffer
allocation, hazards) -> :func:`schedule` (dependency tokens) -> :func:`emit` (words, listing,
manifest), with :func:`verify` after each pass when ``check`` is set.
"""

from __future__ import annotations

from nmsat.hw.params import SATParams
from nmsat.models.zoo import Model

from .emit import Emitted, emit, write_outputs
from .frontend import Graph, Node, build_graph
from .ir import CompileOptions, HostOp, Op, Phase, Program, Region, Tensor
from .lower import lower
from .schedule import schedule
from .verify import VerifyError, verify

__all__ = [
    "CompileOptions",
    "Emitted",
    "Graph",
    "HostOp",
    "Node",
    "Op",
    "Phase",
    "Program",
    "Region",
    "Tensor",
    "VerifyError",
    "build_graph",
    "compile_model",
    "emit",
    "lower",
    "schedule",
    "verify",
    "write_outputs",
]


def compile_model(
    model: Model,
    nm: tuple[int, int],
    params: SATParams,
    options: CompileOptions | None = None,
    *,
    sparsity: str = "bdwp",
    check: bool = True,
) -> Program:
    """Compile one training step of ``model`` at pattern ``nm`` for ``params``.

    Raises
    ------
    ShapeError
        A layer that does not fit the configuration or is not supported.
    VerifyError
        With ``check``, a broken invariant (a compiler bug).
    """
    options = options or CompileOptions()
    graph = build_graph(model, nm, sparsity)
    prog = lower(graph, params, options)
    if check:
        verify(prog, params)
    prog = schedule(prog, params)
    if check:
        verify(prog, params)
    return prog
