"""Selectivity: Cohen's d between concept-positive and negative activations, with a Welch t-test.

``d = (mean_P - mean_N) / sqrt((var_P + var_N) / 2 + eps)`` with unbiased variances.
Positive d means the neuron fires more on the concept.

Example:
    >>> import torch
    >>> d, p = selectivity(torch.tensor([[2.0], [4.0], [0.0], [2.0]]), torch.tensor([1, 1, 0, 0]).bool())
    >>> round(d.item(), 4)  # (3 - 1) / sqrt((2 + 2) / 2)
    1.4142
"""

from __future__ import annotations

import numpy as np
import torch

from neurolens_lightning.functional.moments import class_moments, mean_var

EPS = 1e-8


def cohens_d(mean_p: torch.Tensor, var_p: torch.Tensor, mean_n: torch.Tensor, var_n: torch.Tensor,
             eps: float = EPS) -> torch.Tensor:
    """Standardized mean difference with the average of the two variances."""
    return (mean_p - mean_n) / torch.sqrt((var_p + var_n) / 2 + eps)


def welch_t_test(mean_p: torch.Tensor, var_p: torch.Tensor, n_p: float, mean_n: torch.Tensor, var_n: torch.Tensor,
                 n_n: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Welch's unequal-variance t statistic and two-sided p-value, per neuron.

    Where both variances are 0 the test is degenerate: p = 0 if the means differ, else 1.
    The p-value is computed in float64 with SciPy's Student-t survival function, accurate
    far below 1e-6.
    """
    from scipy import stats

    vp = var_p.double() / n_p
    vn = var_n.double() / n_n
    se2 = vp + vn
    diff = (mean_p - mean_n).double()
    t = diff / se2.sqrt()
    df = se2 * se2 / (vp * vp / max(n_p - 1, 1) + vn * vn / max(n_n - 1, 1))
    t_np = t.detach().cpu().numpy()
    df_np = df.detach().cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2.0 * stats.t.sf(np.abs(t_np), np.where(np.isfinite(df_np) & (df_np > 0), df_np, 1.0))
    degenerate = ~(se2.detach().cpu().numpy() > 0)
    diff_np = diff.detach().cpu().numpy()
    p = np.where(degenerate, np.where(diff_np != 0, 0.0, 1.0), p)
    t = torch.where(se2 > 0, t, torch.where(diff != 0, torch.sign(diff) * torch.inf, torch.zeros_like(diff)))
    return t, torch.as_tensor(np.clip(p, 0.0, 1.0), dtype=torch.float64, device=mean_p.device)


def selectivity(acts: torch.Tensor, is_positive: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen's d and Welch two-sided p-value of ``acts [B, U]`` for positive vs negative rows."""
    n, s, ss = class_moments(acts, is_positive.long(), 2)
    mean, var = mean_var(n.unsqueeze(1), s, ss)
    d = cohens_d(mean[1], var[1], mean[0], var[0], eps)
    _, p = welch_t_test(mean[1], var[1], float(n[1]), mean[0], var[0], float(n[0]))
    return d, p


def layer_variance_floor(var_p: torch.Tensor, var_n: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Per neuron, the median pooled variance ``(var_P + var_N) / 2`` of its layer ``[U]``.

    ``layer[u]`` is the layer id of neuron ``u``. This is the spread of a *typical* unit of
    the layer, the floor of :func:`layer_scaled_d`.
    """
    pooled = ((var_p + var_n) / 2).double()
    floor = torch.empty_like(pooled)
    for l in torch.unique(layer).tolist():
        m = layer == l
        floor[m] = pooled[m].median()
    return floor


def layer_scaled_d(mean_p: torch.Tensor, var_p: torch.Tensor, mean_n: torch.Tensor, var_n: torch.Tensor,
                   layer: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Cohen's d with a variance floor at the layer's median variance (the ranking's selectivity).

    ``d_layer = (mean_P - mean_N) / sqrt(max((var_P + var_N) / 2, median_layer) + eps)``.

    Cohen's d is scale-free: a near-silent unit (post-GELU values around -0.01 on both
    classes, tiny variance) reaches a large d without ever firing. Measured against the
    spread of a typical unit of its layer instead, its tiny mean difference stays tiny. A
    unit that varies at least as much as the layer's median keeps its d exactly
    (``d_layer == d``), so the floor only ever lowers the scores of unusually quiet units.

    Example:
        >>> import torch
        >>> mp, mn = torch.tensor([2.0, 0.01, 1.0]), torch.tensor([0.0, 0.0, 0.0])
        >>> v = torch.tensor([1.0, 1e-6, 1.0])
        >>> [round(x, 3) for x in layer_scaled_d(mp, v, mn, v, torch.zeros(3, dtype=torch.long)).tolist()]
        [2.0, 0.01, 1.0]
    """
    pooled = (var_p + var_n) / 2
    floor = layer_variance_floor(var_p, var_n, layer).to(pooled.dtype)
    return (mean_p - mean_n) / torch.sqrt(torch.maximum(pooled, floor) + eps)


def d_confidence_interval(d: torch.Tensor, n_p: float, n_n: float, level: float = 0.95
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Large-sample CI of Cohen's d: ``d ± z * sqrt((n_P + n_N) / (n_P n_N) + d² / (2 (n_P + n_N)))``.

    The standard error of Hedges & Olkin (1985); it widens with |d| and shrinks with the
    number of examples, so a huge d from a handful of examples gets a visibly wide interval.

    Example:
        >>> import torch
        >>> lo, hi = d_confidence_interval(torch.tensor([1.0]), 20, 20)
        >>> round(lo.item(), 2), round(hi.item(), 2)
        (0.34, 1.66)
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    d = d.double()
    se = torch.sqrt((n_p + n_n) / max(n_p * n_n, 1.0) + d * d / (2 * max(n_p + n_n, 1.0)))
    return d - z * se, d + z * se
