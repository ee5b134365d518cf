"""Importance metric: gradient x activation on concept inputs, zero and mean baselines."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from neurolens_lightning.functional.importance import importance


class Importance(Metric):
    """Per-neuron first-order ablation effect on the confidence y.

    ``update(act_grad [B, U], grad [B, U])`` takes, per example, ``sum_positions a * dy/da``
    and ``sum_positions dy/da``. ``compute(baseline=None)`` returns ``zero`` (b = 0),
    ``mean`` (b = ``baseline``, the neuron's mean activation, if given) and the means of the
    two sums. Signed: ``higher_is_better`` is None.

    Example:
        >>> import torch
        >>> m = Importance(num_neurons=1)
        >>> m.update(torch.tensor([[3.0], [1.0]]), torch.tensor([[1.0], [1.0]]))
        >>> m.compute(baseline=torch.tensor([1.0]))["mean"].item()
        1.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_neurons: int, **kwargs) -> None:
        kwargs.setdefault("compute_with_cache", False)  # compute(baseline=...) depends on its argument
        super().__init__(**kwargs)
        self.num_neurons = num_neurons
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("act_grad", torch.zeros(num_neurons, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("grad", torch.zeros(num_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, act_grad: torch.Tensor, grad: torch.Tensor) -> None:
        self.n += act_grad.shape[0]
        self.act_grad += act_grad.to(torch.float64).sum(0)
        self.grad += grad.to(torch.float64).sum(0)

    def compute(self, baseline: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1)
        mag, mg = self.act_grad / n, self.grad / n
        out = {"zero": importance(mag, mg), "mean_act_grad": mag, "mean_grad": mg}
        if baseline is not None:
            out["mean"] = importance(mag, mg, baseline.to(mag))
        return out
