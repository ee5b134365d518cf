"""Many steerings of the same inputs, several per forward: the batch replicated, one factor row per replica.

Example:
    >>> runner = _ReplicaSteering(adapter, scanner, chunks, layers=[3])      # doctest: +SKIP
    >>> runner.run([([(3, 7)], 0.0), ([(3, 7)], 4.0)])["concept"].shape       # doctest: +SKIP
    (2, 12)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from neurolens_lightning.ablation import tensor_nbytes
from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import ImageTask, TextTask
from neurolens_lightning.hooks import intervene
from neurolens_lightning.progress import track



def _task_items(scanner: Any, items: Sequence[Any]) -> bool:
    """Whether a chunk is scored as tasks (concept tasks, or control sentences paired with task targets)."""
    return bool(scanner.uses_tasks and items and isinstance(items[0], (TextTask, ImageTask)))


class _ReplicaSteering:
    """y of many steerings of the same inputs, several per forward (the batch replicated, one factor row each).

    A replica is ``(neurons, scale)``: those neurons' activations multiplied by ``scale`` at every
    position (what :func:`steer` does). The clean forward of each chunk records the inputs of the
    blocks from the first steered layer on, so steered forwards re-enter the network there (every
    replica of one run steers the same layers) — the same batching as
    :class:`neurolens_lightning.ablation.AblationRunner`.
    """

    def __init__(self, adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
                 layers: Sequence[int], replicas: int = 16, cache_budget_bytes: int = 1 << 30,
                 rows_budget: int = 1 << 27) -> None:
        self.adapter, self.scanner, self.chunks, self.replicas = adapter, scanner, list(chunks), max(1, replicas)
        blocks = adapter.blocks
        self.reuse = blocks is not None and len(blocks) == len(adapter.sites)
        self.layers = sorted({int(l) for l in layers})
        self.start = self.layers[0]
        self.rows_budget = rows_budget
        self.cache: dict[int, Any] = {}
        self.budget, self.used = cache_budget_bytes, 0
        self.y_clean: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}

    def _clean(self, i: int) -> tuple[torch.Tensor, dict[int, tuple[tuple, dict]], Any, int]:
        if i in self.cache:
            return self.cache[i]
        kind, items = self.chunks[i]
        a = self.adapter
        batch = self.scanner.encode_confidence(items, tasks=_task_items(self.scanner, items)).to(a.device)
        cache: dict[int, tuple[tuple, dict]] = {}
        handles = []
        per_example = [0]

        def size(_m: Any, _i: Any, out: Any) -> None:  # elements of a steered site's output per example
            t = out[0] if isinstance(out, (tuple, list)) else out
            per_example[0] = max(per_example[0], t.numel() // max(batch.size, 1))

        try:
            for l in self.layers:
                handles.append(a.sites[l].module.register_forward_hook(size))
            if self.reuse:
                for j in range(self.start, len(a.blocks)):
                    def pre(_m: Any, args: tuple, kwargs: dict, j: int = j) -> None:
                        # the hidden state is needed at the re-entry block only; later blocks' extra args are kept
                        cache[j] = (args if j == self.start else (None, *args[1:]), kwargs)
                    handles.append(a.blocks[j].register_forward_pre_hook(pre, with_kwargs=True))
            outputs = a.forward(batch)
            batch = a.fix_targets(batch, outputs)  # own-prediction targets: the clean top-1
            y = a.confidence(batch, outputs, self.scanner.head).float()
        finally:
            for h in handles:
                h.remove()
        # replicas per forward: at most ``replicas``, and the steered sites' outputs within the element budget
        r_max = max(1, min(self.replicas, self.rows_budget // max(per_example[0] * batch.size, 1)))
        got = (y, cache, batch, r_max)
        nbytes = tensor_nbytes(got[:3])
        if self.used + nbytes <= self.budget:
            self.cache[i] = got
            self.used += nbytes
        return got

    def _forward(self, batch: Any, cache: dict[int, tuple[tuple, dict]],
                 group: Sequence[tuple[Sequence[tuple[int, int]], float]]) -> torch.Tensor:
        a = self.adapter
        R, B = len(group), batch.size
        factors: dict[int, torch.Tensor] = {}
        for r, (units, s) in enumerate(group):
            for l, u in units:
                if l not in factors:
                    factors[l] = torch.ones(R, a.sites[l].units)
                factors[l][r, u] = float(s)
        factors = {l: f.to(a.device) for l, f in factors.items()}

        def edit(key: Any, out: torch.Tensor) -> torch.Tensor:
            view = a.site_view(out)
            P, U = view.shape[1], view.shape[2]
            new = view.reshape(R, B, P, U) * factors[key].to(view.dtype)[:, None, None, :]
            return a.unview(new.reshape(R * B, P, U), out)

        rep = batch.repeat(R)
        with intervene({l: a.sites[l].module for l in factors}, edit):
            if self.reuse and cache:
                outputs = self._replay(cache, B, R, rep)
            else:
                outputs = a.forward(rep)
            y = a.confidence(rep, outputs, self.scanner.head).float()
        return y.view(R, B)

    def _replay(self, cache: dict[int, tuple[tuple, dict]], B: int, R: int, batch: Any) -> Any:
        def rep(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == B:
                return t.repeat(R, *([1] * (t.dim() - 1)))
            return t

        blocks = self.adapter.blocks
        hidden = rep(cache[self.start][0][0])
        for j in range(self.start, len(blocks)):
            args, kw = cache[j]
            out = blocks[j](hidden, *[rep(x) for x in args[1:]], **{k: rep(v) for k, v in kw.items()})
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        return self.adapter.tail(hidden, batch)

    def run(self, replicas: Sequence[tuple[Sequence[tuple[int, int]], float]],
            kinds: Sequence[str] = ("concept", "control"), progress: bool = False, desc: str = ""
            ) -> dict[str, np.ndarray]:
        """y per replica and input of each kind: ``{kind: [R, n]}`` (a scale of exactly 1 is the clean y)."""
        todo = [r for r, (_, s) in enumerate(replicas) if float(s) != 1.0]
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("concept", "control")}
        todo_chunks = [i for i, (k, _) in enumerate(self.chunks) if k in kinds]
        for i in track(todo_chunks, len(todo_chunks), desc, progress):
            kind = self.chunks[i][0]
            y, cache, batch, r_max = self._clean(i)
            rows = y.double().cpu()[None].repeat(len(replicas), 1)
            for g in range(0, len(todo), r_max):
                part = todo[g:g + r_max]
                rows[part] = self._forward(batch, cache, [replicas[r] for r in part]).double().cpu()
            parts[kind].append(rows)
        return {k: (torch.cat(v, dim=1).numpy() if v else np.zeros((len(replicas), 0))) for k, v in parts.items()
                if k in kinds}

