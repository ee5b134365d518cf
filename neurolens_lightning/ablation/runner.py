"""The interventions and the runner that measures them: Δ of y for every job, batched and sharded.

**Two questions, four interventions.** Every intervention draws its replacement from concept-absent
inputs only (the ranking split's negatives), never from concept examples (:func:`control_activations`):

* ``interchange`` (default) — *does the model use the neuron's concept-dependent activity?* On each
  input the neuron is shifted at every position so that its pooled activation (the scan's pooling:
  span mean or max over real tokens, spatial mean for images) equals its pooled activation on a
  random negative of the ranking split; its token-to-token pattern is kept. A neuron that fires alike
  on concept and control inputs is moved by nothing on average, so its Δ is ~0 *by construction*,
  however much leverage it has on y (causal mediation at the neuron level, Vig et al. 2020;
  interchange interventions, Geiger et al. 2021).
* ``zero`` (the user's text), ``mean`` (the mean over the negatives' real tokens) and ``resample``
  (each position gets the activation of a random negative token) — *is the neuron necessary for y?*
  A neuron that matters for every input passes these, concept or not.

Batching: ``replicas`` interventions share one forward pass — the batch is replicated and each
replica gets its own mask — so cost grows with jobs / replicas instead of jobs. Every
hook is removed on exit (also on exceptions) and the model's modes are restored.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Sequence

import torch

from neurolens_lightning.ablation.plan import METHODS, AblationJob, AblationPlan
from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.adapters.base import pool_activations
from neurolens_lightning.distributed import all_gather_objects, dist_context
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.functional.statistics import studentize
from neurolens_lightning.hooks import capture, eval_mode, intervene


class AblationRunner:
    """Measures y with and without each job's ablation on concept and control inputs.

    ``step(kind, batch)`` processes one chunk of examples for every job of that kind (this
    is the validation step); :meth:`mean_deltas` returns each job's mean Δ and
    :meth:`deltas` the per-example Δ of the jobs whose CIs are reported (``row_jobs``;
    default every job). Control inputs are measured for the jobs in ``control_jobs`` only
    (the tested neurons and the joint ablation: the null and audit neurons need no
    specificity). Jobs without rows stream a running sum, so memory does not grow with
    jobs × inputs.

    Scheduling: the jobs of one chunk are grouped by the block at which their ablated
    forward re-enters the network (see below), ``replicas`` per forward, so a job at a deep
    layer never pays for a shallow one's re-entry.

    Reuse: when the adapter exposes ``blocks``/``tail``, the clean forward records each
    block's inputs, and an ablated forward re-enters the network at the first ablated block
    of its group, so the activations below the ablated layer are computed once per chunk.

    Distributed (``rank``/``world_size``, default: the initialised ``torch.distributed``
    group, else one process): every rank sees every input and ablates the jobs ``k`` with
    ``k % world_size == rank``; :meth:`mean_deltas`/:meth:`deltas` gather, so every rank
    ends with the single-process numbers (a job's Δ is computed from the same inputs
    whichever rank runs it). Sharding jobs rather than inputs keeps every rank busy when
    there are far more jobs (hundreds of null neurons) than input chunks.
    """

    def __init__(self, adapter: ModelAdapter, sites: Sequence[Any], jobs: Sequence[AblationJob], method: str = "zero",
                 offsets: Sequence[int] | None = None, head: Any = None, replicas: int = 8,
                 control_jobs: Sequence[int] | None = None, reuse: bool = True,
                 row_jobs: Sequence[int] | None = None, rank: int | None = None,
                 world_size: int | None = None, clean_cache: dict[Any, Any] | None = None,
                 cache_budget_bytes: int = 1 << 30, control_source: Callable[[int], dict[str, torch.Tensor]] | None = None,
                 pooling: str | None = None, seed: int = 0) -> None:
        if method not in METHODS:
            raise NeuroLensError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")
        if method != "zero" and control_source is None:
            raise NeuroLensError(f"{method} ablation needs the concept-absent (control) activations (control_source)")
        if replicas < 1:
            raise NeuroLensError(f"replicas must be >= 1, got {replicas}")
        self.adapter, self.sites, self.jobs, self.method = adapter, list(sites), list(jobs), method
        self.offsets, self.head, self.replicas = offsets, head, replicas
        # concept-absent activations per site (ranking-split negatives): pooled per example, token mean, token pool
        self.control_source, self.pooling, self.seed = control_source, pooling or adapter.pooling, seed
        self._draws: dict[Any, torch.Tensor] = {}  # resample: per (chunk, site) token draws shared by every job
        self._anon = 0  # chunk counter for steps without a key
        self.reuse = reuse and adapter.blocks is not None and len(adapter.blocks) == len(adapter.sites)
        self.site_ids = [adapter.sites.index(s) if s in adapter.sites else None for s in self.sites]
        all_idx = list(range(len(self.jobs)))
        self.job_index = {"concept": all_idx, "control": all_idx if control_jobs is None else list(control_jobs)}
        keep = set(all_idx if row_jobs is None else row_jobs)
        self.row_index = {kind: [k for k in idx if k in keep] for kind, idx in self.job_index.items()}
        if rank is None or world_size is None:
            rank, world_size = dist_context()
        self.rank, self.world_size = rank, world_size
        self.mine = {kind: [k for k in idx if k % world_size == rank] for kind, idx in self.job_index.items()}
        self.y_clean: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}
        # this rank's measurements, on the model's device until gathered: per kind, the running sum of Δ
        # of each of its jobs and, for its row jobs, the per-chunk Δ rows
        self._sums: dict[str, torch.Tensor | None] = {"concept": None, "control": None}
        self._sq: dict[str, torch.Tensor | None] = {"concept": None, "control": None}  # running sums of Δ²
        self._rows: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}
        self._gathered: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # the clean forward of each input chunk (y, block inputs, fixed batch), keyed by the caller's chunk key and
        # shared with the runners of later null rounds (``clean_cache=runner.clean_cache``), so the rounds pay only
        # for their ablated forwards; chunks beyond ``cache_budget_bytes`` are recomputed instead
        self.clean_cache: dict[Any, Any] = {} if clean_cache is None else clean_cache
        self.cache_budget_bytes = cache_budget_bytes

    # -------------------------------------------------------------- one chunk
    def _site_tensors(self, group: Sequence[AblationJob], example_index: torch.Tensor | None, chunk: Any = None,
                      batch: Batch | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per touched site: mask ``[R, U]`` and value: ``[U]`` (zero, mean), ``[B, U]`` (interchange: the
        target pooled level; legacy resample) or ``[B, P, U]`` (resample per position)."""
        dev = self.adapter.device
        masks: dict[int, torch.Tensor] = {}  # built on the host, moved once (no per-unit device writes)
        for r, job in enumerate(group):
            for s, u in job.units:
                if s not in masks:
                    masks[s] = torch.zeros(len(group), self.sites[s].units)
                masks[s][r, u] = 1.0
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for s, mask in masks.items():
            units = self.sites[s].units
            if self.method == "zero":
                val = torch.zeros(units, device=dev)
            elif self.method == "mean":
                val = self.control_source(s)["token_mean"].to(dev, torch.float32)
            elif self.method == "interchange":  # [2, B, U]: the negative's pooled activation, and its max
                src = self.control_source(s)
                idx = example_index.to(dev)
                val = torch.stack([src["pooled"].to(dev, torch.float32)[idx],
                                   src.get("pooled_max", src["pooled"]).to(dev, torch.float32)[idx]])
            else:  # the pool of concept-absent token activations; positions are drawn in edit (_token_draws)
                val = self.control_source(s)["tokens"]
            out[s] = (mask.to(dev, non_blocking=True), val)
        return out

    def _token_draws(self, s: int, chunk: Any, B: int, P: int, tokens: torch.Tensor) -> torch.Tensor:
        """Resample: per example and position, the activation of a random concept-absent token ``[B, P, U]``,
        drawn once per (chunk, site) from a stream seeded by (seed, chunk, site), so every job (and every
        later null round, and every rank) sees the same replacement."""
        key = (chunk, s, B, P)
        if key not in self._draws:
            g = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, chunk, s)).encode()))
            idx = torch.randint(0, tokens.shape[0], (B, P), generator=g)
            self._draws[key] = tokens[idx].to(self.adapter.device, torch.float32)
        return self._draws[key]

    def _clean(self, batch: Batch) -> tuple[torch.Tensor, dict[int, tuple[tuple, dict]], Batch]:
        """Clean y, (when reusing) every block's inputs, and the batch with own-prediction targets fixed
        to the clean model's predictions (so ablated runs score the original top-1)."""
        cache: dict[int, tuple[tuple, dict]] = {}
        handles = []
        try:
            if self.reuse:
                for i, blk in enumerate(self.adapter.blocks):
                    def pre(_m, args, kwargs, i=i):
                        cache[i] = (args, kwargs)
                    handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
            with torch.no_grad(), eval_mode(self.adapter.model):
                outputs = self.adapter.forward(batch)
                batch = self.adapter.fix_targets(batch, outputs)
                y = self.adapter.confidence(batch, outputs, self.head).float()
        finally:
            for h in handles:
                h.remove()
        return y, cache, batch

    def _ablated(self, batch: Batch, group: Sequence[AblationJob], cache: dict[int, tuple[tuple, dict]],
                 example_index: torch.Tensor | None, chunk: Any = None) -> torch.Tensor:
        R, B = len(group), batch.size
        tensors = self._site_tensors(group, example_index, chunk, batch)
        modules = {s: self.sites[s].module for s in tensors}
        rep = batch.repeat(R)

        def edit(key: Any, out: torch.Tensor) -> torch.Tensor:
            mask, val = tensors[key]
            view = self.adapter.site_view(out)
            P, U = view.shape[1], view.shape[2]
            v4 = view.reshape(R, B, P, U)
            m = mask.to(view.dtype)[:, None, None, :]
            if self.method == "interchange":  # shift every position: the pooled activation becomes the target's
                pooled = pool_activations(view, rep.position_mask, rep.span_mask, self.pooling)[0].reshape(R, B, U)
                target = val[0].to(view.dtype)
                if self.pooling in ("span", "auto") and batch.span_mask is not None:
                    # rows without a marked span are pooled by their max (pool_activations): so is their target
                    has = batch.span_mask.to(view.device).any(1)[:, None]
                    target = torch.where(has, target, val[1].to(view.dtype))
                elif self.pooling in ("span", "auto"):
                    target = val[1].to(view.dtype)
                new = v4 + m * (target[None, :, :] - pooled)[:, :, None, :]
                return self.adapter.unview(new.reshape(R * B, P, U), out)
            if self.method == "resample":  # per position
                v = self._token_draws(key, chunk, B, P, val).to(view.dtype)[None]
            else:
                v = val.to(view.dtype)
                v = v[None, None, None, :] if v.dim() == 1 else v[None, :, None, :]
            new = v4 * (1 - m) + m * v
            return self.adapter.unview(new.reshape(R * B, P, U), out)

        with torch.no_grad(), eval_mode(self.adapter.model), intervene(modules, edit):
            if self.reuse and cache:
                start = min(self.site_ids[s] for s in tensors)
                outputs = self._replay(start, cache, B, R, rep)
            else:
                outputs = self.adapter.forward(rep)
            y = self.adapter.confidence(rep, outputs, self.head).float()
        return y.view(R, B)

    def _replay(self, start: int, cache: dict[int, tuple[tuple, dict]], B: int, R: int, batch: Batch) -> Any:
        """Run blocks ``start..`` on the recorded inputs replicated R times, then the model's tail."""

        def rep(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == B:
                return t.repeat(R, *([1] * (t.dim() - 1)))
            return t

        blocks = self.adapter.blocks
        args, _ = cache[start]
        hidden = rep(args[0])
        for j in range(start, len(blocks)):
            a, kw = cache[j]
            out = blocks[j](hidden, *[rep(x) for x in a[1:]], **{k: rep(v) for k, v in kw.items()})
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        return self.adapter.tail(hidden, batch)

    def _start(self, job: AblationJob) -> int:
        return min(self.site_ids[s] if self.site_ids[s] is not None else 0 for s, _ in job.units)

    def groups(self, kind: str) -> list[list[int]]:
        """This rank's jobs of ``kind`` in forward groups: one re-entry block per group, ``replicas`` at most,
        deepest first."""
        by_start: dict[int, list[int]] = {}
        for k in self.mine[kind]:
            by_start.setdefault(self._start(self.jobs[k]) if self.reuse else 0, []).append(k)
        return [ks[i:i + self.replicas] for start in sorted(by_start, reverse=True)
                for ks in [by_start[start]] for i in range(0, len(ks), self.replicas)]

    def _clean_cached(self, batch: Batch, key: Any) -> tuple[torch.Tensor, dict[int, tuple[tuple, dict]], Batch]:
        if key is not None and key in self.clean_cache:
            return self.clean_cache[key]
        got = self._clean(batch.to(self.adapter.device))
        if key is not None:
            size = tensor_nbytes(got)
            used = self.clean_cache.setdefault("__bytes__", 0)
            if used + size <= self.cache_budget_bytes:
                self.clean_cache[key] = got
                self.clean_cache["__bytes__"] = used + size
        return got

    def step(self, kind: str, batch: Batch, example_index: torch.Tensor | None = None, key: Any = None) -> None:
        """Clean and ablated y for one chunk of ``kind`` (``concept`` or ``control``) inputs.

        ``key`` names the chunk (the same inputs must always get the same key): its clean forward is
        then computed once and reused by every runner sharing :attr:`clean_cache`.
        """
        if self._gathered:
            raise NeuroLensError("this ablation run was already summarised; start a new runner for more inputs")
        y, cache, batch = self._clean_cached(batch, None if key is None else (kind, key))
        self.y_clean[kind].append(y.detach())
        self._draws.clear()  # resample draws belong to one chunk
        if key is None:
            self._anon += 1
        chunk = (kind, key if key is not None else f"anon{self._anon}")
        mine = self.mine[kind]
        pos = {k: n for n, k in enumerate(mine)}
        d = torch.zeros(len(mine), batch.size, dtype=torch.float64, device=y.device)
        for part in self.groups(kind):
            ya = self._ablated(batch, [self.jobs[k] for k in part], cache, example_index, chunk)
            d[[pos[k] for k in part]] = y.double().unsqueeze(0) - ya.double()
        sums = d.sum(1)
        self._sums[kind] = sums if self._sums[kind] is None else self._sums[kind] + sums
        sq = (d * d).sum(1)
        self._sq[kind] = sq if self._sq[kind] is None else self._sq[kind] + sq
        keep = set(self.row_index[kind])
        rows = [n for n, k in enumerate(mine) if k in keep]
        self._rows[kind].append(d[rows])

    def n_inputs(self, kind: str) -> int:
        return sum(len(y) for y in self.y_clean[kind])

    def _gather(self, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean Δ of every job of ``kind`` [J], per-example Δ of its row jobs [R, n], SD of Δ over the examples
        [J]); a collective under DDP."""
        if kind in self._gathered:
            return self._gathered[kind]
        mine, keep = self.mine[kind], set(self.row_index[kind])
        n = self.n_inputs(kind)
        zeros = torch.zeros(len(mine), dtype=torch.float64)
        sums = self._sums[kind].cpu() if self._sums[kind] is not None else zeros
        sq = self._sq[kind].cpu() if self._sq[kind] is not None else zeros
        rows = torch.cat([r.cpu() for r in self._rows[kind]], dim=1) if self._rows[kind] else \
            torch.zeros(sum(k in keep for k in mine), n, dtype=torch.float64)
        local = {"jobs": mine, "sums": sums, "sq": sq, "rows": rows, "row_jobs": [k for k in mine if k in keep]}
        mean, sd = {}, {}
        per_example = {}
        for part in all_gather_objects(local):
            for k, v, q in zip(part["jobs"], part["sums"].tolist(), part["sq"].tolist()):
                m = v / max(n, 1)
                mean[k] = m
                sd[k] = math.sqrt(max(q - n * m * m, 0.0) / (n - 1)) if n > 1 else math.nan
            per_example.update(zip(part["row_jobs"], part["rows"]))
        means = torch.tensor([mean[k] for k in self.job_index[kind]], dtype=torch.float64)
        sds = torch.tensor([sd[k] for k in self.job_index[kind]], dtype=torch.float64)
        rows_all = torch.stack([per_example[k] for k in self.row_index[kind]]) if self.row_index[kind] else \
            torch.zeros(0, n, dtype=torch.float64)
        self._gathered[kind] = (means, rows_all, sds)
        return self._gathered[kind]

    def mean_deltas(self, kind: str) -> torch.Tensor:
        """Mean ``y(x) − y_ablated(x)`` over the inputs of ``kind``, per job of ``job_index[kind]``: ``[J]``."""
        return self._gather(kind)[0]

    def t_stats(self, kind: str = "concept") -> torch.Tensor:
        """Studentized mean Δ per job, ``mean / (sd / sqrt(n))`` over the inputs of ``kind``: ``[J]``
        (0 where Δ is identically 0; ±inf where Δ is a non-zero constant)."""
        means, _, sds = self._gather(kind)
        return studentize(means, sds, self.n_inputs(kind))

    def deltas(self, kind: str) -> torch.Tensor:
        """``y(x) − y_ablated(x)`` per row job of ``kind`` (order of ``row_index[kind]``) and example: ``[R, n]``."""
        return self._gather(kind)[1]


def tensor_nbytes(obj: Any) -> int:
    """Bytes held by the tensors in ``obj`` (nested tuples, lists, dicts, batches)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(tensor_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_nbytes(o) for o in obj.values())
    if isinstance(obj, Batch):
        return (tensor_nbytes(obj.inputs) + tensor_nbytes(obj.target)
                + tensor_nbytes([obj.position_mask, obj.span_mask]))
    return 0


def control_activations(adapter: ModelAdapter, scanner: Any, max_tokens: int = 8192, seed: int = 0
                        ) -> dict[int, dict[str, torch.Tensor]]:
    """Concept-absent activations of every scanned site, from the ranking split's negatives (one pass).

    Per site: ``pooled [n_neg, U]`` (each negative's pooled activation, the scan's pooling; ``pooled_max`` the
    same by max, the statistic of inputs without a marked span, e.g. task prompts), ``token_mean [U]``
    (the mean over every real token of the negatives) and ``tokens [n, U]`` (the real tokens' activations,
    a seeded random subset of at most ``max_tokens``). Every intervention draws its replacement from these,
    never from concept examples.
    """
    negatives = [e for e, pos in zip(scanner.examples, scanner.is_positive.tolist()) if not pos]
    if not negatives:
        raise NeuroLensError("this intervention needs concept-absent (negative) examples in the ranking split")
    pooled: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(scanner.sites))}
    pooled_max: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(scanner.sites))}
    toks: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(scanner.sites))}
    for _, batch in scanner.batches(negatives):
        def on_output(k: Any, a: torch.Tensor, b: Batch = batch) -> None:
            pooled[k].append(adapter.pool(a, b, scanner.pooling)[0].float().cpu())
            pooled_max[k].append(adapter.pool(a, b, "max")[0].float().cpu())
            view = adapter.site_view(a)
            pm = b.position_mask
            flat = view[pm] if pm is not None else view.reshape(-1, view.shape[-1])
            toks[k].append(flat.float().cpu())

        with torch.no_grad(), eval_mode(adapter.model), capture(scanner.modules, on_output=on_output):
            adapter.forward(batch)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in pooled:
        t = torch.cat(toks[k])
        mean = t.mean(0)
        if t.shape[0] > max_tokens:
            t = t[torch.randperm(t.shape[0], generator=g)[:max_tokens]]
        out[k] = {"pooled": torch.cat(pooled[k]), "pooled_max": torch.cat(pooled_max[k]), "token_mean": mean,
                  "tokens": t}
    return out


def make_runner(plan: AblationPlan, result: Any, adapter: ModelAdapter, scanner: Any, replicas: int = 8,
                reuse: bool = True) -> AblationRunner:
    """The runner for ``plan``; every replacement comes from the ranking split's negatives (concept-absent)."""
    control = None
    if plan.method != "zero":
        acts = control_activations(adapter, scanner, seed=plan.seed)
        control = acts.__getitem__
    return AblationRunner(adapter, scanner.sites, plan.jobs, method=plan.method,
                          offsets=scanner.offsets, head=scanner.head,
                          replicas=replicas, control_source=control, control_jobs=plan.control_jobs,
                          reuse=reuse, row_jobs=plan.row_jobs, pooling=scanner.pooling, seed=plan.seed)
