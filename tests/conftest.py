"""Shared pytest set-up: hypothesis profiles and the --require-tools switch.

Tests that need an external tool (a simulator, Yosys) call ``require_tool`` from
tests/support/tools.py: locally a missing tool skips with the reason; with
``--require-tools``, or when the CI environment variable is set (as on the CI machine), a
missing tool fails the test instead (STYLE.md G9).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI is deterministic: derandomized examples and a fixed budget (STYLE.md G15).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-tools",
        action="store_true",
        default=False,
        help="fail (instead of skip) tests whose external tool is missing; on when CI is set",
    )


@pytest.fixture(scope="session")
def require_tools(request: pytest.FixtureRequest) -> bool:
    """Whether a missing external tool must fail the test."""
    return bool(request.config.getoption("--require-tools") or os.environ.get("CI"))


def _distinct_banks(addresses: set[int], banks: int) -> bool:
    return len({a % banks for a in addresses}) == len(addresses)


def gemm_bank_clash_by_enumeration(instr: Any, params: Any) -> bool:
    """Whether some cycle's STCE reads of a GEMM put two distinct addresses in one bank.

    The oracle for :func:`nmsat.hw.isa.gemm_bank_conflict`, written from the STCE's schedule
    (hw/stce/array.py, "Buffer ports") by listing every edge vector the array reads, not from
    the closed forms: WS reads per cycle the k of one fold's R compressed positions (their
    N:M groups, all m lanes) of one column of B, and C's rows of one output block; OS the m
    k of one group for C consecutive columns of B, and A's rows of one fold.
    """
    from nmsat.hw import isa

    f = instr.fields
    rows_r, cols_c = params.array_rows, params.array_cols
    n, m = f["n"], f["m"]
    n_eff, m_eff = (1, 1) if n == m else (n, m)
    kc = f["depth"] * n // m
    lda, ldb, ldc = (isa.row_pitch(length, f[pad]) for length, pad in (
        (kc, "a_pad"), (f["depth"] if f["b_trans"] else f["cols"], "b_pad"), (f["cols"], "c_pad")
    ))  # fmt: skip
    act, wgt, acc = (isa.bank_count(b, params) for b in (isa.Buffer.ACT, isa.Buffer.WGT,
                                                          isa.Buffer.ACC))  # fmt: skip

    def b_at(k: int, j: int) -> int:
        return j * ldb + k if f["b_trans"] else k * ldb + j

    vectors: list[tuple[set[int], int]] = []
    if f["dataflow"] is isa.Dataflow.WS:
        for q0 in range(0, kc, rows_r):
            groups = {q // n_eff for q in range(q0, min(q0 + rows_r, kc))}
            ks = {g * m_eff + u for g in groups for u in range(m_eff)}
            vectors.append(({b_at(k, 0) for k in ks}, act))
        for i0 in range(0, f["rows"], cols_c):
            vectors.append(({i * ldc for i in range(i0, min(i0 + cols_c, f["rows"]))}, acc))
    else:
        for g in range(f["depth"] // m_eff):
            for j0 in range(0, f["cols"], cols_c):
                js = range(j0, min(j0 + cols_c, f["cols"]))
                vectors.append(({b_at(g * m_eff + u, j) for u in range(m_eff) for j in js}, act))
        for i0 in range(0, f["rows"], rows_r):
            vectors.append(({i * lda for i in range(i0, min(i0 + rows_r, f["rows"]))}, wgt))
    return not all(_distinct_banks(addresses, banks) for addresses, banks in vectors)


def legal_gemm(instr: Any, params: Any) -> Any:
    """``instr`` (a GEMM) made free of bank conflicts the way the compiler does it: every
    operand's rows at an odd pitch, and WS for an output-stationary N:M GEMM that still
    clashes; unchanged when it is legal already."""
    from nmsat.hw import isa

    if isa.gemm_bank_conflict(instr, params) is None:
        return instr
    fields = {**instr.fields, "a_pad": 1, "b_pad": 1, "c_pad": 1}
    out = isa.make(isa.Opcode.GEMM, pop=instr.pop, push=instr.push, **fields)
    if isa.gemm_bank_conflict(out, params) is not None:
        fields["dataflow"] = isa.Dataflow.WS
        out = isa.make(isa.Opcode.GEMM, pop=instr.pop, push=instr.push, **fields)
    assert isa.gemm_bank_conflict(out, params) is None, out
    return out


@pytest.fixture(scope="session")
def make_legal() -> Any:
    """:func:`legal_gemm`, for tests in any directory."""
    return legal_gemm


@pytest.fixture(scope="session")
def bank_clash() -> Any:
    """:func:`gemm_bank_clash_by_enumeration`, for tests in any directory."""
    return gemm_bank_clash_by_enumeration
