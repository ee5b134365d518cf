"""Trend statistics of a dose-response: per-input slopes, Page's L trend test, Mann-Whitney specificity.

Descriptive only: any neuron with a non-zero effect moves y smoothly with its scale, random ones
included (the verdict of a steering is its null test, :func:`neurolens_lightning.steering.null_test`).

Example:
    >>> import numpy as np
    >>> slope_per_input(np.array([[0.0, 1.0], [2.0, 1.0]]), [0, 1]).tolist()
    [2.0, 0.0]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import mannwhitneyu, page_trend_test

__all__ = ["slope_per_input", "monotonic_test"]


def slope_per_input(y: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Least-squares slope of y on the scale, per input: ``y [S, n]`` -> ``[n]``.

    Example:
        >>> slope_per_input(np.array([[0.0, 1.0], [2.0, 1.0]]), [0, 1]).tolist()
        [2.0, 0.0]
    """
    s = np.asarray(scales, dtype=np.float64)
    sc = s - s.mean()
    return (sc[:, None] * (y - y.mean(0, keepdims=True))).sum(0) / max(float((sc * sc).sum()), 1e-12)


def monotonic_test(y_con: np.ndarray, y_ctl: np.ndarray | None, scales: Sequence[float], alpha: float = 0.05
                   ) -> dict[str, Any]:
    """Descriptive trend statistics of a dose-response (no verdict: see :func:`neurolens_lightning.steering.null_test`).

    Page's L test for an ordered trend (inputs are blocks, scales are ordered treatments; it
    uses every input's ranking of the scales, so 4 inputs that all rise give p = 0.0002 where a
    sign test of slopes cannot go below 0.125), two-sided (the smaller one-sided p of a rise and a
    fall, doubled): ``p_trend``; ``trend_direction`` = whether the mean y is strictly increasing
    or decreasing in the scale; ``monotonic`` = strictly ordered and ``p_trend < alpha``. Any
    neuron with a non-zero effect passes it, random ones included, so it is descriptive only.
    Specificity, also descriptive: a two-sided Mann-Whitney test of the per-input slopes of y on
    the scale, concept against control inputs (``p_specific``), and which side is larger
    (``mw_side``: ``"concept > control"``, ``"control > concept"`` or ``"neither"``, from U).

    Example:
        >>> t = monotonic_test(np.array([[0.0, 0.1], [1.0, 1.2]]), np.array([[0.0, 0.0], [0.1, 0.2]]), [0, 1])
        >>> t["trend_direction"], t["mw_side"]
        ('increasing', 'concept > control')
    """
    order = np.argsort(np.asarray(scales, dtype=np.float64), kind="stable")
    yc = y_con[order]
    means = yc.mean(1) if yc.shape[1] else np.zeros(len(order))
    inc = bool(yc.shape[1] and np.all(np.diff(means) > 0))
    dec = bool(yc.shape[1] and np.all(np.diff(means) < 0))
    sl = slope_per_input(y_con, scales)
    p = 1.0
    if yc.shape[1] >= 1 and yc.shape[0] >= 3 and np.ptp(yc) > 0:
        p_up = float(page_trend_test(yc.T).pvalue)
        p_down = float(page_trend_test(-yc.T).pvalue)
        p = min(1.0, 2 * min(p_up, p_down))
    out: dict[str, Any] = {
        "trend_direction": "increasing" if inc else "decreasing" if dec else "not monotone",
        "slope_mean": float(sl.mean()) if len(sl) else None, "slope_median": float(np.median(sl)) if len(sl) else None,
        "p_trend": p, "alpha": alpha, "monotonic": bool((inc or dec) and p < alpha),
    }
    if y_ctl is not None and y_ctl.shape[1] and len(sl):
        out.update(_specificity(sl, slope_per_input(y_ctl, scales)))
    return out


def _specificity(sl: np.ndarray, slc: np.ndarray) -> dict[str, Any]:
    """Mann-Whitney of the concept inputs' slopes ``sl`` against the control inputs' ``slc`` (two-sided)."""
    out: dict[str, Any] = {"control_slope_mean": float(slc.mean())}
    try:
        res = mannwhitneyu(sl, slc)
        ps, u = float(res.pvalue), float(res.statistic)
    except ValueError:  # too few inputs
        ps, u = math.nan, len(sl) * len(slc) / 2
    out["p_specific"] = ps if math.isfinite(ps) else 1.0
    half = len(sl) * len(slc) / 2
    out["mw_side"] = "concept > control" if u > half else "control > concept" if u < half else "neither"
    return out
