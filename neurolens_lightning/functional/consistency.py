"""Consistency: does a neuron's effect hold for every phrasing group of the concept?

With ``d_g`` the Cohen's d of group g against the negatives,
``consistency = clip(1 - std_g(d_g) / mean_g(d_g), 0, 1)`` where ``mean_g(d_g) > 0``, else 0.
``std_g`` is the population standard deviation over the groups that have examples.
A neuron firing for one of K groups only scores 0; equal effects in all groups score 1.

Example:
    >>> import torch
    >>> consistency_from_effects(torch.tensor([[2.0, 4.0], [2.0, 0.0]])).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

import torch

from neurolens_lightning.functional.moments import class_moments, mean_var
from neurolens_lightning.functional.selectivity import EPS, cohens_d


def group_effects(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor, eps: float = EPS
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group effect sizes ``d_g [K, U]`` from moments of K groups + negatives (last row).

    Returns ``(d_g, present)`` where ``present[g]`` says group g has at least one example.
    """
    mean, var = mean_var(count.unsqueeze(1), total, total_sq)
    d_g = cohens_d(mean[:-1], var[:-1], mean[-1:], var[-1:], eps)
    return d_g, count[:-1] > 0


def consistency_from_effects(d_g: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Consistency ``[U]`` from group effect sizes ``d_g [K, U]`` (rows not ``present`` are skipped)."""
    if present is not None:
        d_g = d_g[present]
    if d_g.shape[0] == 0:
        return torch.zeros(d_g.shape[1], dtype=d_g.dtype, device=d_g.device)
    m = d_g.mean(0)
    s = d_g.std(0, correction=0)
    c = (1 - s / m.where(m > 0, torch.ones_like(m))).clamp(0, 1)
    return torch.where(m > 0, c, torch.zeros_like(c))


def consistency(acts: torch.Tensor, groups: torch.Tensor, num_groups: int, eps: float = EPS) -> torch.Tensor:
    """Consistency of ``acts [B, U]`` where ``groups[b]`` is the group of a positive row, -1 for a negative."""
    labels = torch.where(groups < 0, torch.full_like(groups, num_groups), groups)
    n, s, ss = class_moments(acts, labels, num_groups + 1)
    d_g, present = group_effects(n, s, ss, eps)
    return consistency_from_effects(d_g, present)
