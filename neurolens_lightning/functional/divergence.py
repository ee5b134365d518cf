"""Divergences between distributions: Jensen-Shannon in bits (the depth profiles of :mod:`neurolens_lightning.compare`).

Example:
    >>> js_divergence([1, 0], [0, 1]), js_divergence([0.5, 0.5], [0.5, 0.5])
    (1.0, 0.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from neurolens_lightning.errors import NeuroLensError

__all__ = ["js_divergence"]


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon divergence in bits (base 2, in [0, 1]) of two distributions (renormalised).

    ``JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M)``, ``M = (P + Q)/2``, ``0·log 0 = 0``.

    Example:
        >>> js_divergence([1, 0], [0, 1]), js_divergence([0.5, 0.5], [0.5, 0.5])
        (1.0, 0.0)
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise NeuroLensError(f"distributions must be 1-D of equal length, got {a.shape} and {b.shape}")
    if np.any(a < 0) or np.any(b < 0) or a.sum() <= 0 or b.sum() <= 0:
        raise NeuroLensError("distributions must be non-negative with positive mass")
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    js = 0.5 * kl(a) + 0.5 * kl(b)
    return float(min(1.0, max(0.0, js)))
