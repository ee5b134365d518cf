"""Importance: first-order (gradient x activation) estimate of a neuron's ablation effect.

``importance = mean_x sum_positions (a(x) - b) * dy(x)/da(x)``, with b = 0 (zero ablation)
or the neuron's mean activation (mean ablation). Given the per-neuron means of
``sum_pos a * g`` and ``sum_pos g`` over examples, ``importance = mean_ag - b * mean_g``.
Positive importance: removing the neuron is predicted to lower the confidence y.

Example:
    >>> import torch
    >>> importance(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.5])).tolist()
    [2.5]
"""

from __future__ import annotations

import torch


def importance(mean_act_grad: torch.Tensor, mean_grad: torch.Tensor,
               baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Gradient x (activation - baseline), averaged over examples and summed over positions."""
    return mean_act_grad - baseline * mean_grad
