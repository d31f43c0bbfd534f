"""Host operations of a training step: the work the accelerator leaves to the host processor.

The compiler marks them in the program (:class:`nmsat.compiler.HostOp`); functional runs of
the Python model (and, later, the RTL backends) perform them here, in numpy, on the external
memory image between device segments. The numpy reference calls the same functions, so the
host's arithmetic never separates the two.

Ref: DESIGN.md section 4 (what stays on the host is decided and documented);
     docs/decisions.md (host-side work: loss, normalisation, pooling).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from nmsat.hw import numerics

__all__ = ["softmax_loss_grad"]


def softmax_loss_grad(logits: NDArray[Any], labels: NDArray[Any]) -> NDArray[np.float16]:
    """Return the FP16 gradient of the mean softmax cross-entropy with respect to the logits.

    Parameters
    ----------
    logits : numpy.ndarray, shape (classes, samples)
        Channel-major logits, as the accelerator stores them.
    labels : numpy.ndarray of int, shape (samples,)

    Returns
    -------
    numpy.ndarray of float16, shape (classes, samples)
        ``(softmax(logits) - onehot(labels)) / samples``, computed in float32 and rounded with
        :func:`nmsat.hw.numerics.to_fp16`.
    """
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=0, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=0, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[np.asarray(labels), np.arange(p.shape[1])] = 1.0
    grad = ((p - onehot) / np.float32(p.shape[1])).astype(np.float32)
    out: NDArray[np.float16] = numerics.to_fp16(grad)
    return out
