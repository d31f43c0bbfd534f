"""Atomic file writes, shared by every layer that writes outputs.

Outputs are never left half-written: data goes to a temporary file in the target's folder,
which is then renamed over the target (``os.replace`` is atomic on POSIX file systems).

Ref: STYLE.md G18 (Glasgow writes fixtures to ``.new`` and renames).

Part of the contract: imports nothing from nmsat.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


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
