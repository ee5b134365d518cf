"""A logistic probe head: the confidence y for models without an output head.

Fitted on the pooled last-layer representation of concept-positive vs negative examples
(a stratified train split; the rest measures held-out accuracy), then frozen. The confidence used for importance and ablation is the log-odds
``y(x) = w . f(x) + b = log p(concept | x) - log p(not concept | x)`` (:meth:`ProbeHead.logits`);
``forward`` gives ``log p(concept | x)``.

Example:
    >>> import torch
    >>> f = torch.cat([torch.randn(20, 3) + 2, torch.randn(20, 3) - 2])
    >>> head = fit_probe_head(f, torch.cat([torch.ones(20), torch.zeros(20)]))
    >>> head.heldout_accuracy > 0.9
    True
"""

from __future__ import annotations

import torch
from torch import nn


class ProbeHead(nn.Module):
    """Frozen logistic regression on standardized features."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 train_accuracy: float, heldout_accuracy: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.train_accuracy = train_accuracy
        self.heldout_accuracy = heldout_accuracy

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.to(self.weight.dtype) - self.mean) / self.std
        return z @ self.weight + self.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(self.logits(features))


def fit_probe_head(features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-2, heldout: float = 0.25,
                   seed: int = 0, steps: int = 200) -> ProbeHead:
    """Fit a L2-regularized logistic regression with LBFGS; report train and held-out accuracy."""
    x = features.detach().double().cpu()
    y = labels.detach().double().cpu()
    g = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(y), dtype=torch.bool)
    for cls in (0.0, 1.0):
        idx = (y == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(len(idx) * heldout) if len(idx) >= 4 else 0
        test[idx[:n_test]] = True
    train = ~test
    mean = x[train].mean(0)
    std = x[train].std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logit = z[train] @ w + b
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y[train]) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (z @ w + b) > 0
        acc = lambda m: float((pred[m] == (y[m] > 0.5)).double().mean()) if m.any() else float("nan")  # noqa: E731
        head = ProbeHead(w.detach().float(), b.detach().float(), mean.float(), std.float(), acc(train), acc(test))
    return head.to(features.device)
