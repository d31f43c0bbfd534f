"""The WUVE, the weight update vector engine: VEC and UPDATE (the update queue's unit)."""

from .wuve import WUVE

__all__ = ["WUVE"]
