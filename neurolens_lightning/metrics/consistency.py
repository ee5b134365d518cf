"""Consistency metric: does the effect hold across the concept's phrasing groups?"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from neurolens_lightning.functional.consistency import consistency_from_effects, group_effects
from neurolens_lightning.functional.moments import class_moments


class Consistency(Metric):
    """Per-neuron consistency across ``num_groups`` phrasing groups.

    ``update(acts [B, U], groups [B])`` where ``groups[b]`` is the group index of a
    positive example and -1 for a negative one. ``compute()`` returns ``consistency [U]``
    and the per-group effect sizes ``group_d [K, U]``.

    Example:
        >>> import torch
        >>> m = Consistency(num_neurons=1, num_groups=2)
        >>> m.update(torch.tensor([[3.0], [5.0], [3.0], [5.0], [0.0], [2.0]]), torch.tensor([0, 0, 1, 1, -1, -1]))
        >>> m.compute()["consistency"].item()
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_neurons: int, num_groups: int, eps: float = 1e-8, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_groups < 1:
            raise ValueError("num_groups must be >= 1")
        self.num_neurons, self.num_groups, self.eps = num_neurons, num_groups, eps
        k = num_groups + 1  # last row: negatives
        self.add_state("count", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(k, num_neurons, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(k, num_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, acts: torch.Tensor, groups: torch.Tensor) -> None:
        labels = torch.where(groups < 0, torch.full_like(groups, self.num_groups), groups)
        n, s, ss = class_moments(acts, labels, self.num_groups + 1)
        self.count += n
        self.total += s
        self.total_sq += ss

    def compute(self) -> dict[str, torch.Tensor]:
        d_g, present = group_effects(self.count, self.total, self.total_sq, self.eps)
        return {"consistency": consistency_from_effects(d_g, present), "group_d": d_g,
                "group_count": self.count[:-1]}
