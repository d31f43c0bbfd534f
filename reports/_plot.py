"""Figures for the reports: a matplotlib Figure on the Agg canvas, and its PNG bytes.

No pyplot (no global state, no display); PNG metadata without the software version, so the
bytes depend only on the drawing and the matplotlib build.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["figure", "png_bytes"]


def figure(width: float, height: float) -> Any:
    """A constrained-layout Figure of ``width`` x ``height`` inches at 110 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    """The PNG of ``fig``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
