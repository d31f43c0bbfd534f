"""nmsat: a design environment for SAT-style N:M sparse DNN training accelerators.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (arXiv 2309.13015).

Subpackages are layers (see docs/decisions.md and tests/test_layering.py):

- :mod:`nmsat.hw`: the contract (parameters, ISA, numerics) and the Amaranth HDL;
- :mod:`nmsat.compiler`: training steps to instruction streams;
- :mod:`nmsat.sim`: the cycle-accurate Python model, energy model and cocotb testbenches;
- :mod:`nmsat.models`: the numpy BDWP reference, layers, model zoo and training;
- :mod:`nmsat.reports`: generated reports.

Importing :mod:`nmsat` imports nothing else, so ``import nmsat.hw.isa`` stays cheap.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
