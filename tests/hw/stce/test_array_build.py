# amaranth: UnusedElaboratable=no
"""The STCE builds: Verilog for tiny.yaml, and elaboration of the 32 x 32 vcu1525 array in
well under a minute (its 1024 PEs' arithmetic units take most of that time)."""

from __future__ import annotations

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment

from nmsat.hw.params import load_params
from nmsat.hw.stce import STCE


@pytest.mark.sim
def test_converts_to_verilog_tiny() -> None:
    text = verilog.convert(STCE(load_params("tiny")), name="stce")
    assert "module stce" in text
    for port in ("act_read__0__addr", "wgt_read__3__en", "acc_write__3__data", "done"):
        assert port in text


@pytest.mark.slow
def test_elaborates_vcu1525() -> None:
    # Elaboration time is a benchmark figure, not a test assertion (guide: no timed tests).
    dut = STCE(load_params("vcu1525"))
    fragment = Fragment.get(dut, None)
    assert fragment is not None
