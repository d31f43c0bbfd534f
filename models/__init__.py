"""nmsat.models: the numpy BDWP reference, layers, N:M masks, model zoo and training.

Imports only the contract from :mod:`nmsat.hw` (never the compiler, simulator or reports).
"""

__all__: list[str] = []
