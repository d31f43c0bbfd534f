"""Controller against the Python model on a compiled training step (compiler output, not
random programs): every segment of one MLP step at 2:8 on tiny.yaml, run from its start pc,
with the fetch, start and completion cycle of every instruction and the cycle count equal
to ``Machine(params, "perf").run(start_pc)``."""

from __future__ import annotations

from typing import Any

import pytest

from nmsat.compiler import compile_model, emit
from nmsat.hw.params import load_params
from nmsat.models.zoo import get_model


@pytest.mark.sim
@pytest.mark.slow
def test_compiled_mlp_step_matches_model(controller_harness: Any) -> None:
    params = load_params("tiny")
    emitted = emit(compile_model(get_model("mlp", 8), (2, 8), params))
    words = list(emitted.words)
    cases = [(segment["start_pc"], len(words)) for segment in emitted.manifest["segments"]]
    assert len(cases) >= 2
    runs = controller_harness.run(params, words, cases)
    problems = []
    for case, run in zip(cases, runs, strict=True):
        problems += controller_harness.compare(params, words, case, run)
    assert not problems, "\n".join(problems[:10])
    assert all(run.status == "done" for run in runs)
    assert sum(len(run.start) for run in runs) > 2000
