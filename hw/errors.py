"""Errors a user can cause, shared by every layer.

Every exception a user can trigger with bad input (a configuration, a program, a model file,
a command-line value) derives from :class:`NmsatError`. The CLI catches it once and prints
``nmsat: error: <message>`` in one line, exit code 2 (``nmsat.cli``). Messages name the
offending value and what is allowed.

Part of the contract: imports nothing from nmsat.
"""

__all__ = ["ConfigError", "IsaError", "NmsatError", "ShapeError"]


class NmsatError(Exception):
    """Bad input from a user: reported in one line, exit code 2, no traceback."""


class ConfigError(NmsatError, ValueError):
    """An invalid hardware configuration: unknown key, wrong type or impossible value."""


class IsaError(NmsatError, ValueError):
    """An instruction that cannot be encoded, decoded, assembled or disassembled."""


class ShapeError(NmsatError, ValueError):
    """Tensor shapes or an N:M pattern that do not fit together."""
