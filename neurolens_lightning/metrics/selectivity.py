"""Selectivity metric: Cohen's d and Welch p-value per neuron, streamed."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from neurolens_lightning.functional.moments import class_moments, mean_var
from neurolens_lightning.functional.selectivity import cohens_d, welch_t_test


class Selectivity(Metric):
    """Per-neuron selectivity for concept-positive vs negative examples.

    ``update(acts [B, U], is_positive [B])``; ``compute()`` returns a dict with ``d``
    (Cohen's d, signed), ``p_value`` (Welch, two-sided), ``t``, ``mean_pos``, ``mean_neg``,
    ``var_pos``, ``var_neg`` (unbiased), ``n_pos``, ``n_neg``.

    Example:
        >>> import torch
        >>> m = Selectivity(num_neurons=1)
        >>> m.update(torch.tensor([[2.0], [4.0]]), torch.tensor([True, True]))
        >>> m.update(torch.tensor([[0.0], [2.0]]), torch.tensor([False, False]))
        >>> round(m.compute()["d"].item(), 4)
        1.4142
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_neurons: int, eps: float = 1e-8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_neurons = num_neurons
        self.eps = eps
        self.add_state("count", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(2, num_neurons, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(2, num_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, acts: torch.Tensor, is_positive: torch.Tensor) -> None:
        n, s, ss = class_moments(acts, is_positive.long(), 2)
        self.count += n
        self.total += s
        self.total_sq += ss

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count[0] < 2 or self.count[1] < 2:
            raise ValueError(f"selectivity needs >= 2 positive and >= 2 negative examples, got "
                             f"{int(self.count[1])} and {int(self.count[0])}")
        mean, var = mean_var(self.count.unsqueeze(1), self.total, self.total_sq)
        d = cohens_d(mean[1], var[1], mean[0], var[0], self.eps)
        t, p = welch_t_test(mean[1], var[1], float(self.count[1]), mean[0], var[0], float(self.count[0]))
        return {"d": d, "p_value": p, "t": t, "mean_pos": mean[1], "mean_neg": mean[0],
                "var_pos": var[1], "var_neg": var[0], "n_pos": self.count[1], "n_neg": self.count[0]}
