"""SGD with momentum, weight decay and the SR-STE term: the WUVE's update step.

For every parameter, elementwise and in this order (the order of
:func:`nmsat.hw.numerics.sgd_update`, which the WUVE implements)::

    g1 = grad + weight_decay * w
    g2 = g1 + srste_lambda * w      where the FF mask E_F is False (pruned), g1 elsewhere
    v  = momentum * v + g2
    w  = w - lr * v

Weight decay and the SR-STE term apply to weights only (:attr:`Param.decay`); biases and
BatchNorm parameters get ``g2 = grad``. The SR-STE mask is ``E_F`` of the step's forward pass,
that is the mask of the current weights (docs/decisions.md: UPDATE uses the FF indices).
Momentum starts at zeros.

Arithmetic (decision): every dtype computes in its own precision with plain numpy in the order
above, each operation one IEEE round-to-nearest-even result, never fused. For float32 this is
the WUVE's arithmetic except at the edges the contract adds: subnormal inputs and results are
flushed and NaNs made canonical. With ``exact=True``, float32 parameters go through
:func:`nmsat.hw.numerics.sgd_update` instead, bit for bit what the WUVE computes; it is about
thirty times slower on small tensors (a step of the digits MLP: 2.2 ms against 0.07 ms), so
training uses the fast path unless asked. The two agree bit for bit as long as no subnormal or
NaN appears, which tests check on a training run.

Ref: C. Fang, W. Sun, A. Zhou, Z. Wang, "Efficient N:M Sparse DNN Training Using Algorithm,
     Architecture, and Dataflow Co-Design", IEEE TCAD 2023 (WUVE: FP32 master weights).
Ref: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
     Scratch", ICLR 2021 (SR-STE: lambda * (1 - mask) * W added to the gradient, lambda 2e-4).
Ref: PyTorch ``torch.optim.SGD`` (momentum, weight decay; dampening 0, no Nesterov).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from nmsat.hw import numerics
from nmsat.hw.errors import NmsatError

from .bdwp import FloatArray
from .layers import Param

__all__ = ["SGD", "SRSTE_LAMBDA"]

SRSTE_LAMBDA = 2e-4
"""SR-STE's regularisation strength lambda (Zhou et al., ICLR 2021)."""


class SGD:
    """Stochastic gradient descent with momentum, weight decay and the SR-STE term.

    Parameters
    ----------
    params : sequence of Param
        The tensors to update; each keeps its dtype (float32 or float64).
    lr : float
        Learning rate, > 0.
    momentum : float
        Momentum factor in ``[0, 1)``.
    weight_decay : float
        L2 factor, >= 0, for parameters with ``decay`` set.
    srste_lambda : float
        SR-STE factor, >= 0, applied to the pruned (mask False) weights with ``decay`` set.
    exact : bool
        Route float32 tensors through :func:`nmsat.hw.numerics.sgd_update` (FTZ, canonical
        NaN) instead of plain float32 numpy.

    Members
    -------
    params : list of Param
        The tensors.
    velocities : list of numpy.ndarray
        Momentum buffers, one per parameter, same order.
    lr : float
        The learning rate; a schedule may change it between steps.

    Raises
    ------
    NmsatError
        If a hyper-parameter is out of range.
    """

    def __init__(
        self,
        params: Sequence[Param],
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        srste_lambda: float = SRSTE_LAMBDA,
        exact: bool = False,
    ) -> None:
        if not lr > 0:
            raise NmsatError(f"lr = {lr}; it must be > 0")
        if not 0 <= momentum < 1:
            raise NmsatError(f"momentum = {momentum}; allowed: 0 <= momentum < 1")
        for name, val in (("weight_decay", weight_decay), ("srste_lambda", srste_lambda)):
            if not val >= 0:
                raise NmsatError(f"{name} = {val}; it must be >= 0")
        self.params = list(params)
        self.velocities: list[FloatArray] = [np.zeros_like(p.value) for p in self.params]
        self.lr, self.momentum = lr, momentum
        self.weight_decay, self.srste_lambda = weight_decay, srste_lambda
        self.exact = exact

    def step(self) -> None:
        """Update every parameter from its ``grad`` and ``mask``; replace ``value``."""
        for i, p in enumerate(self.params):
            decay = self.weight_decay if p.decay else 0.0
            srste = self.srste_lambda if p.decay else 0.0
            update = _exact_update if self.exact and p.value.dtype == np.float32 else _update
            p.value, self.velocities[i] = update(
                p.value, p.grad, self.velocities[i], p.mask, self.lr, self.momentum, decay, srste
            )


def _update(
    w: FloatArray,
    g: FloatArray,
    v: FloatArray,
    mask: NDArray[np.bool_],
    lr: float,
    momentum: float,
    weight_decay: float,
    srste_lambda: float,
) -> tuple[FloatArray, FloatArray]:
    """Return the new weights and momentum of one tensor in ``w``'s precision, in order."""
    scalar = w.dtype.type
    g1 = g.astype(w.dtype, copy=False) + scalar(weight_decay) * w
    g2 = np.where(mask, g1, g1 + scalar(srste_lambda) * w)
    v_new = scalar(momentum) * v + g2
    w_new: FloatArray = w - scalar(lr) * v_new
    return w_new, v_new


def _exact_update(
    w: FloatArray,
    g: FloatArray,
    v: FloatArray,
    mask: NDArray[np.bool_],
    lr: float,
    momentum: float,
    weight_decay: float,
    srste_lambda: float,
) -> tuple[FloatArray, FloatArray]:
    """Return the WUVE's bit-exact update of one float32 tensor."""
    g32 = g.astype(np.float32, copy=False)
    w_new: FloatArray
    v_new: FloatArray
    w_new, v_new = numerics.sgd_update(w, g32, v, mask, lr, momentum, weight_decay, srste_lambda)
    return w_new, v_new
