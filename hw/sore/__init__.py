"""The SORE, the N:M pruning unit: FP32 master weights in, FP16 values and indices out.

:class:`SORE` is the comparator network; :class:`PruneUnit` runs PRUNE instructions on it
(the prune queue's execution unit), reading VEC and writing WGT and IDX.
"""

from .prune_unit import PruneUnit, prune_bp_cycles, prune_groups_per_cycle
from .sore import SORE, bitonic_stages

__all__ = ["SORE", "PruneUnit", "bitonic_stages", "prune_bp_cycles", "prune_groups_per_cycle"]
