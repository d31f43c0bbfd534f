"""The controller: instruction fetch, gateware checks, queues with dependency tokens, status."""

from .controller import (
    CYCLE_BITS,
    PRIME_CYCLES,
    Controller,
    ErrorCause,
    IssueSignature,
    TraceSignature,
)

__all__ = [
    "CYCLE_BITS",
    "PRIME_CYCLES",
    "Controller",
    "ErrorCause",
    "IssueSignature",
    "TraceSignature",
]
