"""Composite score, Benjamini-Hochberg FDR control and the ranked candidate table.

Composite score (documented in the README): the geometric mean of three scores mapped to
[0, 1], each increasing in its raw score:

* selectivity: ``d+ / (1 + d+)`` with ``d+ = max(d, 0)`` (d = 1 -> 0.5, d = 3 -> 0.75);
* consistency: already in [0, 1];
* importance: ``|I| / max_j |I_j|`` over the scanned neurons (magnitude of the predicted
  ablation effect; the sign is reported beside it).

Without importance the score is the geometric mean of the first two. Any neuron that is
not positively selective, or not consistent at all, scores 0. The ranking puts neurons that
are positively selective at the FDR level first (by score), then the rest (by score).

Example:
    >>> import torch
    >>> [round(q, 4) for q in bh_qvalues(torch.tensor([0.01, 0.04, 0.03, 0.5], dtype=torch.float64)).tolist()]
    [0.04, 0.0533, 0.0533, 0.5]
"""

from __future__ import annotations

import torch


def bh_qvalues(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg adjusted p-values (q-values), same order as ``p``."""
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
    """Holm-Bonferroni adjusted p-values (family-wise error), same order as ``p``."""
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


def selectivity_unit(d: torch.Tensor) -> torch.Tensor:
    dp = d.clamp_min(0)
    return dp / (1 + dp)


def importance_unit(imp: torch.Tensor) -> torch.Tensor:
    mag = imp.abs()
    top = mag.max() if mag.numel() else mag.new_tensor(0.0)
    return mag / top if top > 0 else torch.zeros_like(mag)


def composite_score(d: torch.Tensor, consistency: torch.Tensor, imp: torch.Tensor | None = None) -> torch.Tensor:
    """Geometric mean of the [0, 1]-mapped selectivity, consistency and (optionally) importance."""
    parts = [selectivity_unit(d.double()), consistency.double().clamp(0, 1)]
    if imp is not None:
        parts.append(importance_unit(imp.double()))
    prod = torch.ones_like(parts[0])
    for part in parts:
        prod = prod * part
    return prod ** (1.0 / len(parts))


def rank_order(score: torch.Tensor, d: torch.Tensor, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Indices by descending score, ties broken by descending selectivity.

    With ``eligible`` (e.g. FDR-significant and positively selective), eligible neurons come
    first, so a consistent but statistically unsupported neuron never outranks a significant one.
    """
    by_d = torch.argsort(d.double(), descending=True, stable=True)
    order = by_d[torch.argsort(score.double()[by_d], descending=True, stable=True)]
    if eligible is None:
        return order
    first = eligible[order]
    return torch.cat([order[first], order[~first]])
