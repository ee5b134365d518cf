"""Roles, composite score, Benjamini-Hochberg FDR control and the ranked candidate list.

Who can be a candidate (:func:`neuron_roles`): a neuron that is positively selective at the
FDR level (Welch test, Benjamini-Hochberg q <= ``fdr_q``) **and** whose layer-scaled
selectivity ``d_layer`` (Cohen's d with a variance floor at the layer's median variance,
:func:`~neurolens_lightning.functional.selectivity.layer_scaled_d`) reaches ``min_d``
(default 0.5: half the spread of a typical unit of its layer). Among those, the sign of the
importance decides the role: ``candidate`` (importance >= 0: removing it is predicted to
lower the concept confidence) or ``suppressor`` (importance < 0: removing it is predicted to
*raise* it). Every other neuron has no role and is never a candidate.

Composite score (documented in the README): the geometric mean of three scores mapped to
[0, 1], each increasing in its raw score:

* selectivity: ``d+ / (1 + d+)`` with ``d+ = max(d_layer, 0)`` (d = 1 -> 0.5, d = 3 -> 0.75);
* consistency: already in [0, 1];
* importance *in the neuron's own direction*: ``I / max_j I_j`` over neurons with I > 0, and
  ``-I / max_j (-I_j)`` over neurons with I < 0 (a suppressor is scored by how strongly it
  suppresses; the sign is its role, reported beside it).

Without importance the score is the geometric mean of the first two and every eligible
neuron is a candidate. The order: candidates by score, then suppressors by score, then
everything else by score.

Example:
    >>> import torch
    >>> [round(q, 4) for q in bh_qvalues(torch.tensor([0.01, 0.04, 0.03, 0.5], dtype=torch.float64)).tolist()]
    [0.04, 0.0533, 0.0533, 0.5]
"""

from __future__ import annotations

import torch

# re-exported: the scanner and the tests import them from here
from neurolens_lightning.functional.statistics import bh_qvalues as bh_qvalues
from neurolens_lightning.functional.statistics import holm_adjust as holm_adjust

ROLE_NONE, ROLE_CANDIDATE, ROLE_SUPPRESSOR = 0, 1, 2
ROLE_NAMES = {ROLE_NONE: None, ROLE_CANDIDATE: "candidate", ROLE_SUPPRESSOR: "suppressor"}


def selectivity_unit(d: torch.Tensor) -> torch.Tensor:
    dp = d.clamp_min(0)
    return dp / (1 + dp)


def importance_unit(imp: torch.Tensor) -> torch.Tensor:
    """|I| scaled to [0, 1] within its own sign: I / max(I > 0) and -I / max(-I) for I < 0."""
    out = torch.zeros_like(imp)
    for sign in (1.0, -1.0):
        mag = (sign * imp).clamp_min(0)
        top = mag.max() if mag.numel() else mag.new_tensor(0.0)
        if top > 0:
            out = torch.where(sign * imp > 0, mag / top, out)
    return out


def composite_score(d: torch.Tensor, consistency: torch.Tensor, imp: torch.Tensor | None = None) -> torch.Tensor:
    """Geometric mean of the [0, 1]-mapped selectivity, consistency and (optionally) importance."""
    parts = [selectivity_unit(d.double()), consistency.double().clamp(0, 1)]
    if imp is not None:
        parts.append(importance_unit(imp.double()))
    prod = torch.ones_like(parts[0])
    for part in parts:
        prod = prod * part
    return prod ** (1.0 / len(parts))


def neuron_roles(q: torch.Tensor, d: torch.Tensor, d_layer: torch.Tensor, imp: torch.Tensor | None = None,
                 fdr_q: float = 0.05, min_d: float = 0.5) -> torch.Tensor:
    """Role per neuron: 1 = candidate, 2 = suppressor, 0 = neither (see the module docstring).

    An importance within ``1e-6 * max|I|`` of 0 counts as 0 (a neuron with no predicted effect
    is not a suppressor; it ranks last among the candidates).

    Example:
        >>> import torch
        >>> q = torch.tensor([0.01, 0.01, 0.01, 0.5])
        >>> d = torch.tensor([2.0, 2.0, 9.0, 2.0])
        >>> d_layer = torch.tensor([2.0, 2.0, 0.1, 2.0])  # the third is a near-silent unit
        >>> neuron_roles(q, d, d_layer, torch.tensor([0.3, -0.2, 0.5, 0.3])).tolist()
        [1, 2, 0, 0]
    """
    eligible = (q.to(d.device) <= fdr_q) & (d > 0) & (d_layer >= min_d)
    role = torch.where(eligible, torch.full_like(d, ROLE_CANDIDATE, dtype=torch.long),
                       torch.full_like(d, ROLE_NONE, dtype=torch.long))
    if imp is not None and imp.numel():
        tol = 1e-6 * float(imp.abs().max())
        role = torch.where(eligible & (imp.to(d.device) < -tol), torch.full_like(role, ROLE_SUPPRESSOR), role)
    return role


def rank_order(score: torch.Tensor, d: torch.Tensor, role: torch.Tensor | None = None) -> torch.Tensor:
    """Indices by descending score, ties broken by descending selectivity.

    With ``role`` (:func:`neuron_roles`): candidates first, then suppressors, then the rest,
    each by score, so a statistically unsupported neuron never outranks a candidate.
    """
    by_d = torch.argsort(d.double(), descending=True, stable=True)
    order = by_d[torch.argsort(score.double()[by_d], descending=True, stable=True)]
    if role is None:
        return order
    r = role[order]
    return torch.cat([order[r == ROLE_CANDIDATE], order[r == ROLE_SUPPRESSOR], order[r == ROLE_NONE]])
