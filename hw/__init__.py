"""The machine definition: the contract (parameters, ISA, numerics) and the Amaranth HDL.

The contract modules :mod:`nmsat.hw.params`, :mod:`nmsat.hw.isa`, :mod:`nmsat.hw.numerics`
and :mod:`nmsat.hw.errors` import nothing from nmsat but each other. This ``__init__`` imports
no gateware, so importing the contract never elaborates hardware.
"""

__all__: list[str] = []
