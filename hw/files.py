"""Files: atomic writes, and the YAML data files every layer reads, with one-line errors.

Outputs are never left half-written: data goes to a temporary file in the target's folder,
which is then renamed over the target (``os.replace`` is atomic on POSIX file systems).
Data files (configurations, energy and resource tables, sweep grids) are YAML mappings, found
by a name among shipped ones or by a path; any problem is a :class:`ConfigError` in one line
naming the file.

Ref: STYLE.md G18 (Glasgow writes fixtures to ``.new`` and renames).

Part of the contract: imports only nmsat.hw.errors.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["read_yaml_mapping", "resolve_data_file", "write_atomic"]


def resolve_data_file(
    source: str | Path, folder: Path, what: str, noun: str, names: Iterable[str]
) -> tuple[Path, bool]:
    """Return the YAML file ``source`` names and whether it is a shipped one.

    ``source`` is a path, or (no suffix, no such file) the name of ``folder / <name>.yaml``.
    An unknown name is a :class:`ConfigError`: ``<what> 'x': no such <noun> or file;
    <noun>s: <names>``.
    """
    path = Path(source)
    if path.suffix or path.exists():
        return path, False
    path = folder / f"{source}.yaml"
    if not path.exists():
        raise ConfigError(
            f"{what} {str(source)!r}: no such {noun} or file; {noun}s: {', '.join(names)}"
        )
    return path, True


def read_yaml_mapping(path: str | Path, expected: str = "a mapping of keys to values") -> Any:
    """Read the YAML file ``path`` and return its top-level mapping.

    Raises
    ------
    ConfigError
        One line naming the file: it cannot be read, it is malformed (with the line), or its
        top level is not a mapping (``expected`` says what was wanted).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}")
    return data


def write_atomic(path: str | Path, content: bytes | str) -> None:
    """Write ``content`` (bytes, or text as UTF-8) to ``path`` atomically.

    Parent folders are created. On any failure the target is unchanged and the temporary
    file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
