"""Per-class running moments (count, sum, sum of squares) of per-neuron activations.

These are the sufficient statistics of every score: they add across batches and across
processes, so accumulation streams in constant memory and DDP reduction is a plain sum.

Example:
    >>> import torch
    >>> n, s, ss = class_moments(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2)
    >>> n.tolist(), s.tolist(), ss.tolist()
    ([2.0, 1.0], [[4.0], [5.0]], [[10.0], [25.0]])
"""

from __future__ import annotations

import torch


def class_moments(acts: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count ``[C]``, sum ``[C, U]`` and sum of squares ``[C, U]`` of ``acts [B, U]`` by class.

    Rows whose label is negative or ``>= num_classes`` are ignored.
    """
    if acts.dim() != 2 or labels.dim() != 1 or acts.shape[0] != labels.shape[0]:
        raise ValueError(f"expected acts [B, U] and labels [B], got {tuple(acts.shape)} and {tuple(labels.shape)}")
    keep = (labels >= 0) & (labels < num_classes)
    onehot = torch.nn.functional.one_hot(labels.clamp(0, num_classes - 1), num_classes).to(dtype)
    onehot = onehot * keep.unsqueeze(1).to(dtype)
    a = acts.to(dtype)
    return onehot.sum(0), onehot.T @ a, onehot.T @ (a * a)


def mean_var(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased (n - 1) variance from moments; variance is 0 where count < 2.

    ``count`` broadcasts against ``total`` (e.g. ``[C, 1]`` against ``[C, U]``).
    """
    n = count.to(total.dtype)
    mean = total / n.clamp_min(1)
    var = (total_sq - n * mean * mean) / (n - 1).clamp_min(1)
    return mean, var.clamp_min(0)
