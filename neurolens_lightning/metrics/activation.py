"""Reference statistics of activations: the mean (for mean ablation) and the top examples."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MeanActivation(Metric):
    """Mean of each neuron's activation over every position of every reference example.

    ``update(act_sum [U], n_positions)`` where ``n_positions`` is a scalar or a per-neuron
    ``[U]`` count (sites can have different numbers of positions, e.g. ResNet stages).
    Used as the mean-ablation value and the mean baseline of importance.

    Example:
        >>> import torch
        >>> m = MeanActivation(2)
        >>> m.update(torch.tensor([2.0, 4.0]), 2)
        >>> m.compute().tolist()
        [1.0, 2.0]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_neurons: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(num_neurons, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, act_sum: torch.Tensor, n_positions: int | torch.Tensor) -> None:
        self.total += act_sum.to(torch.float64)
        self.count += n_positions

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)


class TopActivations(Metric):
    """The ``k`` examples that activate each neuron most, in constant memory.

    ``update(acts [B, U], example_ids [B], positions [B, U])``; ``compute()`` returns
    ``values``, ``example_ids`` and ``positions``, each ``[k, U]``, best first (id -1 = empty).

    Example:
        >>> import torch
        >>> m = TopActivations(num_neurons=1, k=2)
        >>> m.update(torch.tensor([[1.0], [5.0], [3.0]]), torch.tensor([0, 1, 2]), torch.zeros(3, 1, dtype=torch.long))
        >>> m.compute()["example_ids"].flatten().tolist()
        [1, 2]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_neurons: int, k: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("values", torch.full((k, num_neurons), -torch.inf), dist_reduce_fx="cat")
        self.add_state("example_ids", torch.full((k, num_neurons), -1, dtype=torch.long), dist_reduce_fx="cat")
        self.add_state("positions", torch.zeros((k, num_neurons), dtype=torch.long), dist_reduce_fx="cat")

    @staticmethod
    def _select(values, ids, pos, k):
        top = values.topk(min(k, values.shape[0]), dim=0)
        return top.values, ids.gather(0, top.indices), pos.gather(0, top.indices)

    def update(self, acts: torch.Tensor, example_ids: torch.Tensor, positions: torch.Tensor) -> None:
        ids = example_ids.to(self.example_ids.device).unsqueeze(1).expand(-1, acts.shape[1])
        values = torch.cat([self.values, acts.to(self.values.dtype)])
        self.values, self.example_ids, self.positions = self._select(
            values, torch.cat([self.example_ids, ids]), torch.cat([self.positions, positions.long()]), self.k)

    def _reduce_states(self, incoming_state: dict) -> None:
        # forward(): merge the batch's top-k with the running top-k and keep k rows (constant memory)
        super()._reduce_states(incoming_state)
        self.values, self.example_ids, self.positions = self._select(
            self.values, self.example_ids, self.positions, self.k)

    def compute(self) -> dict[str, torch.Tensor]:
        values, ids, pos = self.values, self.example_ids, self.positions
        if isinstance(values, list):  # pragma: no cover - unsynced list states
            values, ids, pos = torch.cat(values), torch.cat(ids), torch.cat(pos)
        u = values.shape[-1]  # after a DDP sync the gathered states are stacked as [world, k, U]
        v, i, p = self._select(values.reshape(-1, u), ids.reshape(-1, u), pos.reshape(-1, u), self.k)
        return {"values": v, "example_ids": i, "positions": p}
