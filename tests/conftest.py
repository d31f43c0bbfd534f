"""Shared pytest set-up: hypothesis profiles and the --require-tools switch.

Tests that need an external tool (a simulator, Yosys) call ``require_tool`` from
tests/support/tools.py: locally a missing tool skips with the reason; with
``--require-tools``, or when the CI environment variable is set (as on the CI machine), a
missing tool fails the test instead (STYLE.md G9).
"""

from __future__ import annotations

import os

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
