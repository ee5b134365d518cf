"""The few collectives NeuroLens needs, written once for one process and for a distributed launch.

Code that runs the same way in a single process, under Lightning's DDP or under
``torchrun`` asks :func:`dist_context` for its rank and world size, and gathers with
:func:`all_gather_objects` / :func:`gather_cat`. Outside an initialised
``torch.distributed`` process group these are no-ops (rank 0 of 1), so the single-process
path pays nothing.

Example:
    >>> import torch
    >>> dist_context()
    (0, 1)
    >>> gather_cat(torch.ones(2, 3)).shape      # one process: the tensor itself
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["dist_context", "all_gather_objects", "gather_cat"]


def dist_context() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when none is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable; keep tensors on the CPU), in rank order. A collective:
    every rank must call it the same number of times. One process: ``[obj]``."""
    rank, world = dist_context()
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def gather_cat(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank ``[n_r, ...]`` tensor across ranks in rank order (``n_r`` may differ)."""
    parts = all_gather_objects(rows.detach().cpu())
    if len(parts) == 1:
        return rows
    return torch.cat(parts).to(rows.device)
