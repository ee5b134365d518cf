"""Pure statistics behind the ranking and the causal test: multiple testing, bootstrap, sequential p-values.

* :func:`bh_qvalues` — Benjamini-Hochberg q-values (FDR; who may be a candidate, :mod:`neurolens_lightning.ranking`);
* :func:`holm_adjust` — Holm's step-down adjustment (family-wise error; the verdicts of the ablation);
* :func:`bootstrap_means`, :func:`bootstrap_ci`, :func:`specificity_p` — percentile bootstrap of a mean over
  examples, its CI, and the one-sided bootstrap p of a difference of two means;
* :func:`sequential_p` — the Besag-Clifford sequential Monte-Carlo p-value against a null sampled in order;
* :func:`studentize` — mean over its standard error, with the degenerate cases spelled out.

No model is involved: tensors and arrays in, numbers out. A seeded function draws the same random numbers,
in the same order, on every call.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["bh_qvalues", "holm_adjust", "bootstrap_means", "bootstrap_ci", "specificity_p", "sequential_p",
           "studentize"]


def bh_qvalues(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg adjusted p-values (q-values), same order as ``p``.

    Example:
        >>> [round(q, 4) for q in bh_qvalues(torch.tensor([0.01, 0.04, 0.03, 0.5], dtype=torch.float64)).tolist()]
        [0.04, 0.0533, 0.0533, 0.5]
    """
    p = p.double().flatten()
    m = p.numel()
    if m == 0:
        return p
    order = torch.argsort(p)
    ranked = p[order] * m / torch.arange(1, m + 1, dtype=p.dtype, device=p.device)
    ranked = torch.flip(torch.cummin(torch.flip(ranked, [0]), 0).values, [0]).clamp(max=1.0)
    q = torch.empty_like(p)
    q[order] = ranked
    return q


def holm_adjust(p: torch.Tensor) -> torch.Tensor:
    """Holm-Bonferroni adjusted p-values (family-wise error), same order as ``p``.

    Example:
        >>> [round(q, 4) for q in holm_adjust(torch.tensor([0.04, 0.01, 0.02], dtype=torch.float64)).tolist()]
        [0.04, 0.03, 0.04]
    """
    p = p.double().flatten()
    m = p.numel()
    if m == 0:
        return p
    order = torch.argsort(p)
    adj = p[order] * (m - torch.arange(m, dtype=p.dtype, device=p.device))
    adj = torch.cummax(adj, 0).values.clamp(max=1.0)
    out = torch.empty_like(p)
    out[order] = adj
    return out


def bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means over the examples of each row of ``x [J, n]``: ``[J, n_boot]``.

    One draw of ``n_boot × n`` example indices from ``rng``, shared by every row (the rows are measured on the
    same examples).

    Example:
        >>> bootstrap_means(np.full((2, 5), 3.0), 4, np.random.default_rng(0)).tolist()
        [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
    """
    idx = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    return x[:, idx].mean(axis=2)


def bootstrap_ci(diffs: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 minus: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over examples, per row of ``diffs [J, n]``.

    With ``minus [J, n2]`` (other, independent examples): the CI of ``mean(diffs) − mean(minus)``,
    each resampled on its own (the specificity Δ_concept − Δ_control).

    Example:
        >>> lo, hi = bootstrap_ci(torch.full((1, 8), 0.5, dtype=torch.float64), n_boot=50)
        >>> float(lo[0]), float(hi[0])
        (0.5, 0.5)
    """
    rng = np.random.default_rng(seed)
    means = bootstrap_means(diffs.numpy(), n_boot, rng)  # [J, n_boot]
    if minus is not None:
        means = means - bootstrap_means(minus.numpy(), n_boot, rng)
    a = (1 - level) / 2
    return np.quantile(means, a, axis=1), np.quantile(means, 1 - a, axis=1)


def specificity_p(d_con: torch.Tensor, d_ctl: torch.Tensor, direction: Sequence[int], n_boot: int, seed: int
                  ) -> np.ndarray:
    """One-sided bootstrap p of ``s·(mean Δ_concept − mean Δ_control) <= 0`` per row: the share of bootstrap
    differences at or beyond 0 against the direction, ``(1 + count) / (n_boot + 1)``.

    Example:
        >>> p = specificity_p(torch.ones(1, 20) + torch.linspace(0, .1, 20), torch.zeros(1, 20) + torch.linspace(0, .1, 20), [1], 999, 0)
        >>> float(p[0])
        0.001
    """
    rng = np.random.default_rng(seed)
    con = bootstrap_means(d_con.numpy(), n_boot, rng)
    ctl = bootstrap_means(d_ctl.numpy(), n_boot, rng)
    s = np.asarray(direction, dtype=np.float64)[:, None]
    diff = s * (con - ctl)  # [J, n_boot]
    return (1 + (diff <= 0).sum(axis=1)) / (n_boot + 1)


def sequential_p(value: float, null_sequence: Sequence[float], h: int = 10) -> tuple[float, int, int]:
    """Besag-Clifford sequential Monte Carlo p-value of ``value`` against a null sampled in order.

    Walks the null values in their (random) sampling order; at the ``h``-th value ``>= value``
    after ``L`` draws it stops with ``p = h / L``; if fewer than ``h`` of all ``L`` draws reach
    it, ``p = (g + 1) / (L + 1)``. Exact (P(p <= u) <= u) for a neuron exchangeable with the
    null, whatever the null's distribution. Returns ``(p, exceedances, draws used)``.

    Example:
        >>> sequential_p(5.0, [0.1, -0.3, 0.2, 0.0])      # beats all 4: p = 1/5
        (0.2, 0, 4)
        >>> sequential_p(0.0, [1.0, 2.0, -1.0, 3.0], h=2)  # 2nd exceedance at draw 2: p = 2/2
        (1.0, 2, 2)
    """
    g = 0
    for n, x in enumerate(null_sequence, start=1):
        if x >= value:
            g += 1
            if g >= h:
                return h / n, g, n
    n = len(null_sequence)
    return (g + 1) / (n + 1), g, n


def studentize(means: torch.Tensor, sds: torch.Tensor, n: int) -> torch.Tensor:
    """``mean / (sd / sqrt(n))`` elementwise: 0 where the mean is 0, ±inf where the SD is 0 but the mean is not.

    Reported beside Δ (``t``): how consistent the effect is over the inputs. (Not the statistic of the test: a
    tiny but perfectly consistent effect gets a huge t, which would beat a large, variable causal effect.)

    Example:
        >>> studentize(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2.0, 0.0, 0.0]), 4).tolist()
        [1.0, 0.0, inf]
    """
    se = sds / math.sqrt(max(n, 1))
    t = torch.where(se > 0, means / torch.where(se > 0, se, torch.ones_like(se)),
                    torch.sign(means) * math.inf)
    return torch.nan_to_num(torch.where(means == 0, torch.zeros_like(means), t), nan=0.0, posinf=math.inf,
                            neginf=-math.inf)
