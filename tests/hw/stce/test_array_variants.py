# amaranth: UnusedElaboratable=no
"""The STCE on variants of tiny.yaml against the Python model, bit for bit and cycle by
cycle: other adder latencies and interleave depths (1 and 4: no interleave, and the
vcu1525 values), arrays that are not square (R > C; C > R, which needs two weight buses per
row), and other N:M patterns (n not a power of two, m = 2 and 16, and dense only).
The harness is in conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from nmsat.hw.isa import Dataflow
from nmsat.hw.params import load_params

TINY = load_params("tiny")

VARIANTS = {
    "L1-I1": {"adder_latency": 1, "interleave": 1},
    "L4-I4": {"adder_latency": 4, "interleave": 4},
    "L2-I3": {"adder_latency": 2},
    "R8-C4": {"array_rows": 8},
    "R4-C8": {"array_cols": 8, "adder_latency": 2},
    "R2-C2": {"array_rows": 2, "array_cols": 2, "interleave": 2},
    "odd-nm": {"nm_patterns": ((3, 4), (1, 2), (3, 8), (5, 16)), "adder_latency": 2},
    "dense-only": {"nm_patterns": ()},
}


@pytest.mark.sim
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_matches_model(stce, name: str) -> None:
    params = TINY.replace(**VARIANTS[name])
    rng = np.random.default_rng(list(map(ord, name)))
    program = []
    for k, nm in enumerate(rng.permutation(stce.patterns(params))[:5]):
        dataflow = (Dataflow.WS, Dataflow.OS)[k % 2]
        program.append(stce.gemm(params, rng, dataflow, (int(nm[0]), int(nm[1]))))
    stce.run(params, [(stce.memory(params, len(name)), program)])
