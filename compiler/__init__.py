"""nmsat.compiler: see docs/decisions.md for this layer's place in the import order."""

__all__: list[str] = []
