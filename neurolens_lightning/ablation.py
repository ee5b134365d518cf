"""Causal validation: intervene on neurons and compare with a random-neuron null (DESIGN §3).

**Two questions, four interventions.** Every intervention draws its replacement from concept-absent
inputs only (the ranking split's negatives), never from concept examples:

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

``Δ = mean_x [y(x) − y_intervened(x)]`` on held-out concept inputs (bootstrap 95% CI), and the same on
held-out control inputs with **the same y**: with tasks, control inputs are the negative sentences
followed by a task target (targets cycled), so both sides are Δ log p(target).

**Who is tested, in which direction, against which null.** The top-k candidates (a drop, Δ > 0), the
top suppressors if asked for (a rise; ``suppressors=k``) and any neuron the user names. A named neuron's direction is the sign of
its ranking-split importance (which predicts Δ's sign), so each null neuron is signed by *its own*
importance — the named neuron and its null undergo the same choice and stay exchangeable — or the
user states it (``direction="drop" | "rise"``). The null: the same Δ for random neurons of the same
layer under the same intervention, drawn without replacement in a fixed random order, sampled
adaptively (Besag & Clifford 1991): a layer's sample grows (``null_samples``, then doubling) while a
tested neuron has fewer than ``h`` null neurons at least as extreme, up to ``n_max = ceil(m / alpha)``
(m = all tested neurons). ``p = h / L`` at the h-th exceedance after L draws, else ``(g + 1) / (L + 1)``.
**Holm runs once over every tested neuron** (drops and rises together): P(any false "beyond the null")
<= alpha over the scan.

**Specificity**: the one-sided bootstrap p of ``s·(Δ_concept − Δ_control) <= 0``, Holm over the tested
neurons. **Causal** (``causal``): Holm p <= alpha, the ``s·Δ`` CI above 0, specific, ``s·Δ >=
min_effect``. **Validated**: causal *and* a candidate / suppressor of the ranking. Three outcomes, one
vocabulary (:func:`verdict_word`): validated, causal but not a candidate, not causal.

**The joint set** (the tested drop neurons together) is compared with random sets of the same size and
per-layer counts, drawn among the same layers' neurons of the same importance sign (sequential, up to
99 sets): ``joint_p_null``, ``joint_beyond_null``. **The audit**: neurons the ranking calls unimportant
(bottom half of |importance|), each tested two-sided; ``expected_by_chance`` is what random neurons of
the same layers reach under the same rule. ``benchmarks/bench_calibration.py`` measures all of this
through :func:`neurolens_lightning.scan`.

Batching: ``replicas`` interventions share one forward pass — the batch is replicated and each
replica gets its own mask — so cost grows with jobs / replicas instead of jobs. Every
hook is removed on exit (also on exceptions) and the model's modes are restored.

Example:
    >>> result = scan("minilm", "royalty", ablate=True, top_k=5)     # doctest: +SKIP
    >>> result.ablation_summary["joint_beyond_null"]                  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.adapters.base import pool_activations
from neurolens_lightning.concepts import Concept, ImageTask, TextExample, TextTask
from neurolens_lightning.distributed import all_gather_objects, dist_context, gather_cat
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, eval_mode, intervene
from neurolens_lightning.ranking import holm_adjust

METHODS = ("interchange", "zero", "mean", "resample")
DEFAULT_METHOD = "interchange"
#: method -> what it asks, in words (results.json ``ablation_summary["question"]``, the page)
QUESTIONS = {
    "interchange": ("does the model use the neuron's concept-dependent activity? (interchange: on each input the "
                    "neuron is shifted at every position so that its pooled activation equals its pooled activation "
                    "on a random concept-absent example; its token-to-token pattern is kept)"),
    "zero": "is the neuron necessary for y? (zero ablation: set to 0 at every position)",
    "mean": "is the neuron necessary for y? (mean ablation: set to its mean activation over concept-absent tokens)",
    "resample": ("is the neuron necessary for y? (resample ablation: each position gets the activation of a random "
                 "concept-absent token)"),
}


@dataclass
class AblationJob:
    """Neurons ablated together in one replica: ``(site position, unit)`` pairs."""

    units: list[tuple[int, int]]
    kind: str  # candidate | suppressor | named | null | audit | joint
    layer: int | None = None
    direction: int = 1  # the predicted sign of Δ: +1 a drop of y, -1 a rise


TESTED = ("candidate", "suppressor", "named")


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


def studentize(means: torch.Tensor, sds: torch.Tensor, n: int) -> torch.Tensor:
    """``mean / (sd / sqrt(n))`` elementwise: 0 where the mean is 0, ±inf where the SD is 0 but the mean is not.

    Reported beside Δ (``t``): how consistent the effect is over the inputs. (Not the statistic of the test: a
    tiny but perfectly consistent effect gets a huge t, which would beat a large, variable causal effect.)

    Example:
        >>> studentize(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2.0, 0.0, 0.0]), 4).tolist()
        [1.0, 0.0, inf]
    """
    se = sds / math.sqrt(max(n, 1))
    t = torch.where(se > 0, means / torch.where(se > 0, se, torch.ones_like(se)),
                    torch.sign(means) * math.inf)
    return torch.nan_to_num(torch.where(means == 0, torch.zeros_like(means), t), nan=0.0, posinf=math.inf,
                            neginf=-math.inf)


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


def bootstrap_ci(diffs: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 minus: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over examples, per row of ``diffs [J, n]``.

    With ``minus [J, n2]`` (other, independent examples): the CI of ``mean(diffs) − mean(minus)``,
    each resampled on its own (the specificity Δ_concept − Δ_control).
    """
    d = diffs.numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.shape[1], size=(n_boot, d.shape[1]))
    means = d[:, idx].mean(axis=2)  # [J, n_boot]
    if minus is not None:
        m = minus.numpy()
        idx2 = rng.integers(0, m.shape[1], size=(n_boot, m.shape[1]))
        means = means - m[:, idx2].mean(axis=2)
    a = (1 - level) / 2
    return np.quantile(means, a, axis=1), np.quantile(means, 1 - a, axis=1)


def sequential_p(value: float, null_sequence: Sequence[float], h: int = 10) -> tuple[float, int, int]:
    """Besag-Clifford sequential Monte Carlo p-value of ``value`` against a null sampled in order.

    Walks the null values in their (random) sampling order; at the ``h``-th value ``>= value``
    after ``L`` draws it stops with ``p = h / L``; if fewer than ``h`` of all ``L`` draws reach
    it, ``p = (g + 1) / (L + 1)``. Exact (P(p <= u) <= u) for a neuron exchangeable with the
    null, whatever the null's distribution. Returns ``(p, exceedances, draws used)``.

    Example:
        >>> sequential_p(5.0, [0.1, -0.3, 0.2, 0.0])      # beats all 4: p = 1/5
        (0.2, 0, 4)
        >>> sequential_p(0.0, [1.0, 2.0, -1.0, 3.0], h=2)  # 2nd exceedance at draw 2: p = 2/2
        (1.0, 2, 2)
    """
    g = 0
    for n, x in enumerate(null_sequence, start=1):
        if x >= value:
            g += 1
            if g >= h:
                return h / n, g, n
    n = len(null_sequence)
    return (g + 1) / (n + 1), g, n


def null_size_needed(n_tested: int, alpha: float) -> int:
    """Null neurons per layer at which the smallest empirical p, 1/(n+1), passes Holm's ``alpha / m``."""
    return max(1, math.ceil(max(n_tested, 1) / alpha))


def decide(delta: float, direction: int, ci: tuple[float, float], spec_p_holm: float | None,
           p_holm: float, alpha: float, min_effect: float, selective: bool) -> tuple[bool, bool, list[str]]:
    """The verdict of one tested neuron: ``(causal, validated, reasons)``.

    ``causal``: the causal criteria alone — Holm p <= alpha against random neurons of the layer, the 95% CI
    of Δ wholly in the tested direction, specific (the concept-minus-control test, Holm-corrected, <= alpha)
    and ``s·Δ >= min_effect``. ``validated``: causal **and** a candidate (or suppressor) of the ranking.
    ``reasons``: every criterion that failed (the candidate gate included).

    Example:
        >>> decide(0.5, 1, (0.3, 0.7), 0.01, 0.01, 0.05, 0.01, True)
        (True, True, [])
        >>> decide(0.5, 1, (0.3, 0.7), 0.01, 0.01, 0.05, 0.01, False)[:2]
        (True, False)
        >>> decide(0.5, 1, (0.3, 0.7), 0.2, 0.01, 0.05, 0.01, True)[2]
        ['not specific: its effect on concept inputs is not beyond its effect on control inputs (Holm p = 0.2 > 0.05)']
    """
    s = 1 if direction >= 0 else -1
    word = "drop" if s > 0 else "rise"
    causal_reasons = []
    if not p_holm <= alpha:
        causal_reasons.append(f"its {word} is not beyond random neurons of its layer (Holm p = {p_holm:.3g} > "
                              f"{alpha:g})")
    lo, hi = ci
    if not (s * lo > 0 and s * hi > 0):
        causal_reasons.append(f"the 95% CI of Δ includes 0 or the other direction (no clear {word})")
    if spec_p_holm is None:
        causal_reasons.append("not specific: no control inputs to compare with")
    elif not spec_p_holm <= alpha:
        causal_reasons.append(f"not specific: its effect on concept inputs is not beyond its effect on control "
                              f"inputs (Holm p = {spec_p_holm:.3g} > {alpha:g})")
    if not s * delta >= min_effect:
        causal_reasons.append(f"|Δ| = {abs(delta):.3g} is below the minimum effect {min_effect:g}"
                              if s * delta >= 0 else f"Δ = {delta:.3g} is in the other direction")
    causal = not causal_reasons
    reasons = ([] if selective else ["not a candidate of the ranking (not FDR-significant and positively "
                                     "selective)"]) + causal_reasons
    return causal, causal and selective, reasons


def verdict_word(causal: bool, validated: bool, direction: int) -> str:
    """The one vocabulary of the three outcomes (console, results.json, page).

    Example:
        >>> [verdict_word(*a) for a in [(True, True, 1), (True, True, -1), (True, False, 1), (False, False, 1)]]
        ['validated', 'validated suppressor', 'causal, not a candidate', 'not causal']
    """
    if validated:
        return "validated suppressor" if direction < 0 else "validated"
    return "causal, not a candidate" if causal else "not causal"


#: the rules that choose a tested neuron's direction, and how its null neurons are signed accordingly
DIRECTION_RULES = {
    "role": "its role in the ranking (candidate: a drop, suppressor: a rise); null neurons in the same direction",
    "importance": ("the sign of its ranking-split importance (>= 0: a drop); each null neuron in the direction of "
                   "its own importance sign, so the named neuron and its null undergo the same choice"),
    "drop": "a drop, as stated by the user; null neurons the same",
    "rise": "a rise, as stated by the user; null neurons the same",
}


@dataclass
class AblationPlan:
    """What one ablation run measures: the jobs, the tested neurons, the null sequence per layer.

    ``null_order[l]`` is the random order in which layer l's non-tested neurons enter the
    null; the first ``null_taken[l]`` of them have jobs so far (:meth:`more_null`).
    ``null_sign[l][u]``: the sign of neuron u's ranking-split importance (the direction rule "importance").
    ``joint_null_sets``: random sets with the joint set's per-layer counts, in sampling order; the first
    ``joint_null_taken`` have jobs so far.
    """

    jobs: list[AblationJob]
    candidates: list[tuple[int, int]]
    method: str
    seed: int = 0
    null_order: dict[int, list[int]] = field(default_factory=dict)
    null_taken: dict[int, int] = field(default_factory=dict)
    n_max: int = 0
    h: int = 10
    site_pos: dict[int, int] = field(default_factory=dict)
    null_sign: dict[int, dict[int, int]] = field(default_factory=dict)
    joint_null_sets: list[list[tuple[int, int]]] = field(default_factory=list)
    joint_null_taken: int = 0
    rules: dict[int, str] = field(default_factory=dict)  # tested job -> direction rule

    @property
    def control_jobs(self) -> list[int]:
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED + ("joint",)]

    @property
    def row_jobs(self) -> list[int]:
        """Jobs whose per-example Δ is kept: those with a reported CI (tested, joint, audit)."""
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED + ("joint", "audit")]

    @property
    def tested(self) -> list[int]:
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED]

    @property
    def joint(self) -> int | None:
        return next((k for k, j in enumerate(self.jobs) if j.kind == "joint"), None)

    def null_deltas(self, stat: np.ndarray) -> dict[int, list[float]]:
        """The statistic of each single-neuron null job, per layer, in sampling order."""
        out: dict[int, list[float]] = {l: [] for l in self.null_order}
        for k, j in enumerate(self.jobs):
            if j.kind == "null":
                out[j.layer].append(float(stat[k]))
        return out

    def null_units(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {l: [] for l in self.null_order}
        for j in self.jobs:
            if j.kind == "null":
                out[j.layer].append(j.units[0][1])
        return out

    def null_sequence(self, k: int, stat: np.ndarray, null: dict[int, list[float]] | None = None,
                      units: dict[int, list[int]] | None = None) -> list[float]:
        """The null sequence job ``k`` is compared with, signed by its direction rule."""
        j = self.jobs[k]
        null = self.null_deltas(stat) if null is None else null
        if j.kind == "joint":
            return [j.direction * float(stat[q]) for q, jj in enumerate(self.jobs) if jj.kind == "joint_null"]
        if j.kind == "audit":  # two-sided: |statistic|
            return [abs(x) for x in null[j.layer]]
        if self.rules.get(k) == "importance":
            units = self.null_units() if units is None else units
            sign = self.null_sign.get(j.layer, {})
            return [sign.get(u, 1) * x for u, x in zip(units[j.layer], null[j.layer])]
        return [j.direction * x for x in null[j.layer]]

    def test(self, k: int, stat: np.ndarray, null: dict[int, list[float]] | None = None,
             units: dict[int, list[int]] | None = None) -> tuple[float, int, int]:
        """``(p, exceedances, null draws used)`` of job ``k`` (tested, audit or joint)."""
        j = self.jobs[k]
        value = abs(float(stat[k])) if j.kind == "audit" else j.direction * float(stat[k])
        return sequential_p(value, self.null_sequence(k, stat, null, units), self.h)

    def more_null(self, stat: np.ndarray) -> list[AblationJob]:
        """The next round of null jobs (empty when every tested neuron's p is settled).

        A layer's sample grows (doubling) while a tested neuron of the layer has fewer than
        ``h`` null neurons at least as extreme, up to ``n_max`` or the layer's size; the joint
        set's random sets grow the same way up to ``len(joint_null_sets)``.
        """
        null, units = self.null_deltas(stat), self.null_units()
        new: list[AblationJob] = []
        for l, order in self.null_order.items():
            have = self.null_taken[l]
            cap = min(self.n_max, len(order))
            if have >= cap:
                continue
            if not any(self.test(k, stat, null, units)[1] < self.h for k in self.tested if self.jobs[k].layer == l):
                continue
            take = min(cap, max(2 * have, have + 1))
            new += [AblationJob([(self.site_pos[l], u)], "null", l) for u in order[have:take]]
            self.null_taken[l] = take
        jk = self.joint
        have = self.joint_null_taken
        if jk is not None and have < len(self.joint_null_sets) and self.test(jk, stat)[1] < self.h:
            take = min(len(self.joint_null_sets), 2 * have + 1)
            new += [AblationJob([(self.site_pos[l], u) for l, u in units_], "joint_null")
                    for units_ in self.joint_null_sets[have:take]]
            self.joint_null_taken = take
        self.jobs += new
        return new


def check_ablation_args(adapter: ModelAdapter, layers: Sequence[int] | None, method: str, null_samples: int,
                        neurons: Sequence[tuple[int, int]] | None) -> None:
    """Validate ablation arguments up front, before any scoring work."""
    if method not in METHODS:
        raise NeuroLensError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")
    if null_samples < 2:
        raise NeuroLensError(f"null_samples must be >= 2 to estimate a null spread, got {null_samples}")
    sites = {s.layer: s for s in adapter.select_sites(layers)}
    for l, i in neurons or []:
        if l not in sites:
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} was not scanned (scanned layers: {sorted(sites)})")
        if not 0 <= i < sites[l].units:
            raise NeuroLensError(f"neuron {l}:{i}: index out of range, layer {l} has {sites[l].units} units "
                                 f"(0..{sites[l].units - 1})")


JOINT_NULL_FIRST, JOINT_NULL_MAX = 19, 99


def plan_ablation(result: Any, scanner: Any, method: str = DEFAULT_METHOD, null_samples: int = 50,
                  neurons: Sequence[tuple[int, int]] | None = None, audit_samples: int = 20,
                  seed: int = 0, alpha: float = 0.05, h: int = 10, suppressors: int | None = None,
                  test_top_k: bool = True, direction: str = "importance") -> AblationPlan:
    """Tested neurons (top-k candidates, top suppressors, explicit ``neurons``), their joint set,
    the first round of the per-layer random null, the joint set's random sets and the audit sample.

    ``suppressors``: how many of the top suppressors to test as well (default 0: they join the one Holm family
    and would double the null it needs; pass ``result.top_k`` to test as many as candidates).
    ``test_top_k=False``: test the named ``neurons`` only (no top-k candidates or suppressors, and
    no audit of the ranking, which those tests would not use).
    ``direction``: how a named neuron's direction is chosen (:data:`DIRECTION_RULES`): ``importance``
    (default; its null neurons are signed by their own importance), or ``drop`` / ``rise`` as the user states.
    """
    check_ablation_args(scanner.adapter, scanner.layers, method, null_samples, neurons)
    if direction not in ("importance", "drop", "rise"):
        raise NeuroLensError(f"direction must be importance, drop or rise, got {direction!r}")
    scores = result.scores
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    tested: list[tuple[tuple[int, int], str, int, str]] = []
    if test_top_k:
        tested += [(n, "candidate", 1, "role") for n in result.top_neurons()]
        if suppressors:
            tested += [(n, "suppressor", -1, "role") for n in result.top_suppressors(suppressors)]
    seen = {n for n, _, _, _ in tested}
    imp = scores.importance
    rule = direction if (direction != "importance" or imp is not None) else "drop"
    for l, i in neurons or []:
        if (l, i) in seen:
            continue
        seen.add((l, i))
        if rule == "importance":
            d = -1 if float(imp[scores.flat_index(l, i)]) < 0 else 1
        else:
            d = 1 if rule == "drop" else -1
        tested.append(((l, i), "named", d, rule))
    rng = random.Random(seed)
    layers = sorted({l for (l, _), _, _, _ in tested})
    n_max = null_size_needed(len(tested), alpha)
    null_order: dict[int, list[int]] = {}
    null_sign: dict[int, dict[int, int]] = {}
    null_jobs: list[AblationJob] = []
    for l in layers:
        pool = [u for u in range(scanner.sites[site_pos[l]].units) if (l, u) not in seen]
        rng.shuffle(pool)
        null_order[l] = pool
        if imp is not None:
            lo = scanner.offsets[site_pos[l]]
            null_sign[l] = {u: (-1 if float(imp[lo + u]) < 0 else 1) for u in pool}
        first = min(null_samples, len(pool))
        null_jobs += [AblationJob([(site_pos[l], u)], "null", l) for u in pool[:first]]
    audit_jobs: list[AblationJob] = []
    if imp is not None and audit_samples > 0 and test_top_k:
        # the audit: neurons the ranking calls unimportant (|importance| in the bottom half of the tested layers),
        # each tested two-sided (any effect, drop or rise, beyond random neurons)
        in_layers = torch.tensor([int(l) in layers for l in scores.layer.tolist()])
        mag = imp.abs()
        med = mag[in_layers].median() if bool(in_layers.any()) else mag.new_tensor(0.0)
        low = [(int(scores.layer[j]), int(scores.index[j])) for j in
               (in_layers & (mag <= med)).nonzero().flatten().tolist()]
        low = [n for n in low if n not in seen]
        for l, u in rng.sample(low, min(audit_samples, len(low))):
            audit_jobs.append(AblationJob([(site_pos[l], u)], "audit", l))
    tested_jobs = [AblationJob([(site_pos[l], i)], kind, l, d) for (l, i), kind, d, _ in tested]
    rules = {k: r for k, (_, _, _, r) in enumerate(tested)}
    drops = [(l, i) for (l, i), _, d, _ in tested if d > 0]
    members = drops or [n for n, _, _, _ in tested]
    joint_dir = 1 if drops else -1
    joint_jobs: list[AblationJob] = []
    joint_sets: list[list[tuple[int, int]]] = []
    if tested:
        joint_jobs = [AblationJob([(site_pos[l], i) for l, i in members], "joint", None, joint_dir)]
        counts: dict[int, int] = {}
        for l, _ in members:
            counts[l] = counts.get(l, 0) + 1
        jrng = random.Random(seed + 1)
        # random sets with the joint set's per-layer counts, from the same layers' untested neurons whose
        # importance has the joint set's sign (members are chosen by that sign: candidates have importance >= 0,
        # named neurons are tested in their importance's direction), so the set and its null undergo the same choice
        same_sign = bool(null_sign)
        for _ in range(JOINT_NULL_MAX):
            one: list[tuple[int, int]] = []
            for l, c in counts.items():
                pool = [u for u in null_order[l] if not same_sign or null_sign[l].get(u, 1) == joint_dir] \
                    or null_order[l]
                one += [(l, u) for u in jrng.sample(pool, min(c, len(pool)))]
            joint_sets.append(one)
    first_sets = joint_sets[:JOINT_NULL_FIRST]
    joint_null_jobs = [AblationJob([(site_pos[l], u) for l, u in one], "joint_null") for one in first_sets]
    jobs = tested_jobs + joint_jobs + null_jobs + audit_jobs + joint_null_jobs
    return AblationPlan(jobs, [n for n, _, _, _ in tested], method, seed, null_order,
                        {l: min(null_samples, len(o)) for l, o in null_order.items()}, n_max, h, site_pos,
                        null_sign, joint_sets, len(first_sets), rules)


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


def ablation_inputs(adapter: ModelAdapter, scanner: Any, held_out: Concept, batch_size: int = 16, seed: int = 0
                    ) -> list[tuple[str, list[Any]]]:
    """Chunks ``(kind, items)`` of held-out concept inputs (tasks or positives) and control inputs (negatives)."""
    concept_items = list(held_out.tasks) if scanner.uses_tasks else list(held_out.positive)
    control_items: list[Any] = list(held_out.negative)
    if scanner.uses_tasks and held_out.tasks and all(isinstance(e, TextExample) for e in control_items):
        # like with like: y on a control input is the same quantity as on a concept input, log p of a task
        # target, here after a concept-absent sentence (targets cycled over the held-out tasks)
        targets = [t.target for t in held_out.tasks]
        control_items = [TextTask(e.text, targets[i % len(targets)]) for i, e in enumerate(control_items)]
    chunks = []
    for kind, items in (("concept", concept_items), ("control", control_items)):
        for start in range(0, len(items), batch_size):
            chunks.append((kind, items[start:start + batch_size]))
    return chunks


def encode_chunk(adapter: ModelAdapter, scanner: Any, kind: str, items: Sequence[Any], generator: torch.Generator
                 ) -> tuple[Batch, torch.Tensor]:
    """Encode one chunk; also draw, per example, the concept-absent (negative) ranking-split example whose pooled
    activation an interchange intervention moves the neuron to."""
    batch = scanner.encode_confidence(items, tasks=is_task_chunk(scanner, items))
    n_neg = max(int((~scanner.is_positive).sum()), 1)
    src = torch.randint(0, n_neg, (batch.size,), generator=generator)
    return batch, src


def chunk_generator(seed: int, index: int) -> torch.Generator:
    """The random stream of input chunk ``index`` (its interchange sources): the same for every runner, null
    round, rank and loop (plain or Lightning), whatever order or how often the chunks are encoded."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{index}".encode()))


def is_task_chunk(scanner: Any, items: Sequence[Any]) -> bool:
    """Whether ``items`` are scored as tasks (concept tasks, or control sentences paired with task targets)."""
    return bool(scanner.uses_tasks and items and isinstance(items[0], (TextTask, ImageTask)))


def default_min_effect(scanner: Any) -> float:
    """The smallest |Δ| called practically visible, in the units of y.

    * y = log p(target) (LM heads, ResNet classes): 0.01 nats, a 1% relative change of p;
    * y = the probe head's log-odds (encoders without a head): 0.04, one percentage point of
      probability where p = 0.5 (dp = p(1 − p)·d(log-odds) = 0.25 × 0.04).
    """
    return 0.04 if scanner.head is not None else 0.01


def y_description(scanner: Any) -> str:
    """What y is, in words, with its unit (for results.json and the report)."""
    if scanner.head is not None:
        return "log-odds of the concept under a logistic probe on the last layer (nats)"
    if scanner.uses_tasks:
        return "log p(task target) under the model's own head (nats)"
    return "log p of the model's own prediction on the concept examples (nats)"


def run_ablation(result: Any, adapter: ModelAdapter, scanner: Any, held_out: Concept, method: str = DEFAULT_METHOD,
                 null_samples: int = 50, neurons: Sequence[tuple[int, int]] | None = None, seed: int = 0,
                 batch_size: int = 16, replicas: int = 8, audit_samples: int = 20, min_effect: float | None = None,
                 alpha: float = 0.05, n_boot: int = 1000, progress: bool = False, reuse: bool = True,
                 split: str | None = None, suppressors: int | None = None, test_top_k: bool = True,
                 direction: str = "importance") -> Any:
    """Ablate ``result``'s candidates, suppressors and explicit ``neurons`` on ``held_out``; fill ``result.ablation``.

    This is the plain-loop form of :class:`neurolens_lightning.modules.AblationModule`'s
    validation loop (same plan, runner and statistics). ``split`` describes the inputs in
    words (default: the held-out split).
    """
    plan = plan_ablation(result, scanner, method, null_samples, neurons, audit_samples, seed, alpha=alpha,
                         suppressors=suppressors, test_top_k=test_top_k, direction=direction)
    if scanner.head is None:  # models without a head: y is the probe head's (not fitted when importance was off)
        scanner.fit_head(gather=gather_cat)  # on every rank's features under a distributed launch
    chunks = ablation_inputs(adapter, scanner, held_out, batch_size, seed)
    runner = None
    if plan.candidates:
        runner = make_runner(plan, result, adapter, scanner, replicas=replicas, reuse=reuse)
        run_chunks(runner, adapter, scanner, chunks, seed, progress=progress,
                   desc=f"ablation [{method}, {len(plan.jobs)} jobs]")
    finish_ablation(result, plan, runner, adapter, scanner, chunks, min_effect=min_effect, alpha=alpha,
                    n_boot=n_boot, seed=seed, split=split, replicas=replicas, reuse=reuse, progress=progress)
    return result


def run_chunks(runner: AblationRunner, adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
               seed: int, kinds: Sequence[str] = ("concept", "control"), progress: bool = False, desc: str = "") -> None:
    """Feed every chunk of ``kinds`` to ``runner`` (interchange sources drawn from the same seeded stream each time)."""
    it: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc=desc, leave=False, unit="batch")
    for i, (kind, items) in enumerate(it):
        batch, src = encode_chunk(adapter, scanner, kind, items, chunk_generator(seed, i))
        if kind in kinds:
            runner.step(kind, batch, src, key=i)


def held_out_split_text(n_concept: int, n_control: int) -> str:
    """How ``ablation_summary["split"]`` names the held-out inputs the ablation ran on."""
    return (f"the held-out split ({n_concept} concept and {n_control} control inputs, disjoint from the examples "
            "that ranked the neurons)")


def finish_ablation(result: Any, plan: AblationPlan, runner: AblationRunner | None, adapter: ModelAdapter,
                    scanner: Any, chunks: Sequence[tuple[str, list[Any]]], min_effect: float | None = None,
                    alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, split: str | None = None,
                    replicas: int = 8, reuse: bool = True, progress: bool = False) -> None:
    """After the first pass: grow the null where a p-value is not settled, then the statistics."""
    n_concept = sum(len(c) for k, c in chunks if k == "concept")
    n_control = sum(len(c) for k, c in chunks if k == "control")
    min_effect = default_min_effect(scanner) if min_effect is None else min_effect
    split = split or held_out_split_text(n_concept, n_control)
    if runner is None:
        result.ablation = {}
        result.ablation_summary = _empty_summary(plan, min_effect, alpha, split, n_concept, n_control, scanner)
    else:
        _grow_null_and_summarize(result, plan, runner, adapter, scanner, chunks, min_effect, alpha, n_boot, seed,
                                 split, n_concept, n_control, replicas, reuse, progress)
    result.warnings += [w for w in result.ablation_summary["warnings"] if w not in result.warnings]


def _grow_null_and_summarize(result: Any, plan: AblationPlan, runner: AblationRunner, adapter: ModelAdapter,
                             scanner: Any, chunks: Sequence[tuple[str, list[Any]]], min_effect: float, alpha: float,
                             n_boot: int, seed: int, split: str, n_concept: int, n_control: int, replicas: int,
                             reuse: bool, progress: bool) -> None:
    delta = runner.mean_deltas("concept").numpy()
    rounds = 0
    while True:
        new = plan.more_null(delta)
        if not new:
            break
        rounds += 1
        extra = AblationRunner(adapter, scanner.sites, new, method=plan.method,
                               offsets=runner.offsets, head=runner.head, replicas=replicas, control_jobs=[],
                               reuse=reuse, row_jobs=[], clean_cache=runner.clean_cache,
                               control_source=runner.control_source, pooling=runner.pooling, seed=runner.seed)
        run_chunks(extra, adapter, scanner, chunks, seed, kinds=("concept",), progress=progress,
                   desc=f"null round {rounds + 1} [{len(new)} more random neurons/sets: a p-value is not settled]")
        delta = np.concatenate([delta, extra.mean_deltas("concept").numpy()])

    runner.clean_cache.clear()  # the clean forwards were only needed for the rounds
    summarize_ablation(result, runner, plan, delta, min_effect=min_effect, alpha=alpha, n_boot=n_boot, seed=seed,
                       split=split, n_concept=n_concept, n_control=n_control, y=y_description(scanner),
                       null_rounds=rounds + 1)


def _empty_summary(plan: AblationPlan, min_effect: float, alpha: float, split: str, n_concept: int, n_control: int,
                   scanner: Any) -> dict[str, Any]:
    return {"method": plan.method, "question": QUESTIONS[plan.method], "split": split,
            "n_concept_inputs": n_concept, "n_control_inputs": n_control,
            "min_effect": min_effect, "alpha": alpha, "y": y_description(scanner), "n_tested": 0,
            "n_candidates": 0, "n_suppressors": 0, "n_named": 0, "n_validated": 0, "n_suppressors_validated": 0,
            "n_causal": 0, "n_causal_not_candidate": 0, "n_not_causal": 0,
            "null": [], "joint_delta": None, "joint_ci_low": None, "joint_ci_high": None,
            "joint_delta_control": None, "joint_specificity_ci": None, "joint_p_null": None,
            "joint_beyond_null": None, "importance_delta_spearman": None,
            "audit": None, "warnings": ["nothing to ablate: the ranking has no candidates or suppressors and no "
                                        "neuron was named, so nothing was tested and nothing is validated"]}


def _null_row(layer: int, vals: np.ndarray, n_layer: int) -> dict[str, Any]:
    from scipy.stats import kurtosis

    q = np.quantile(vals, [0.05, 0.5, 0.95, 0.99]) if len(vals) else [math.nan] * 4
    return {"layer": layer, "n": int(len(vals)), "n_available": n_layer,
            "mean": float(vals.mean()) if len(vals) else None,
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else None,
            "q05": _opt(q[0]), "median": _opt(q[1]), "q95": _opt(q[2]), "q99": _opt(q[3]),
            "min": float(vals.min()) if len(vals) else None, "max": float(vals.max()) if len(vals) else None,
            "excess_kurtosis": _opt(kurtosis(vals)) if len(vals) > 3 else None}


def specificity_p(d_con: torch.Tensor, d_ctl: torch.Tensor, direction: Sequence[int], n_boot: int, seed: int
                  ) -> np.ndarray:
    """One-sided bootstrap p of ``s·(mean Δ_concept − mean Δ_control) <= 0`` per row: the share of bootstrap
    differences at or beyond 0 against the direction, ``(1 + count) / (n_boot + 1)``.

    Example:
        >>> p = specificity_p(torch.ones(1, 20) + torch.linspace(0, .1, 20), torch.zeros(1, 20) + torch.linspace(0, .1, 20), [1], 999, 0)
        >>> float(p[0])
        0.001
    """
    a, b = d_con.numpy(), d_ctl.numpy()
    rng = np.random.default_rng(seed)
    i1 = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    i2 = rng.integers(0, b.shape[1], size=(n_boot, b.shape[1]))
    s = np.asarray(direction, dtype=np.float64)[:, None]
    diff = s * (a[:, i1].mean(axis=2) - b[:, i2].mean(axis=2))  # [J, n_boot]
    return (1 + (diff <= 0).sum(axis=1)) / (n_boot + 1)


def summarize_ablation(result: Any, runner: AblationRunner, plan: AblationPlan, delta: np.ndarray,
                       min_effect: float, alpha: float, n_boot: int, seed: int, split: str, n_concept: int,
                       n_control: int, y: str = "", null_rounds: int = 1) -> None:
    """Statistics of a finished run: CIs, sequential p per tested neuron, Holm, verdicts, joint, audit.

    ``delta`` holds the mean Δ of every job of ``plan.jobs`` on the concept inputs (the runner's jobs first,
    then the null jobs of later rounds): the statistic the p-values compare.
    """
    jobs = plan.jobs
    stat = delta
    tvals = runner.t_stats("concept").numpy()  # descriptive: Δ over its standard error, per first-round job
    n_first = len(runner.jobs)
    d_con = runner.deltas("concept")
    d_ctl = runner.deltas("control")
    con_pos = {k: n for n, k in enumerate(runner.row_index["concept"])}
    ctl_pos = {k: n for n, k in enumerate(runner.row_index["control"])}
    tested = plan.tested
    jk = plan.joint
    audit = [k for k, j in enumerate(jobs[:n_first]) if j.kind == "audit"]
    ci_rows = tested + ([jk] if jk is not None else []) + audit  # CIs only where they are reported
    lo, hi = bootstrap_ci(d_con[[con_pos[k] for k in ci_rows]], n_boot=n_boot, seed=seed)
    ci = {k: (float(lo[n]), float(hi[n])) for n, k in enumerate(ci_rows)}
    spec_rows = [k for k in tested + ([jk] if jk is not None else []) if k in ctl_pos]
    spec: dict[int, tuple[float, float]] = {}
    spec_p: dict[int, float] = {}
    delta_ctl: dict[int, float] = {}
    if spec_rows and d_ctl.shape[1]:
        rows_con = d_con[[con_pos[k] for k in spec_rows]]
        rows_ctl = d_ctl[[ctl_pos[k] for k in spec_rows]]
        slo, shi = bootstrap_ci(rows_con, n_boot=n_boot, seed=seed + 1, minus=rows_ctl)
        spec = {k: (float(slo[n]), float(shi[n])) for n, k in enumerate(spec_rows)}
        delta_ctl = {k: float(d_ctl[ctl_pos[k]].mean()) for k in spec_rows}
        # enough resamples that the smallest p passes Holm's strictest threshold alpha / m
        n_sp = max(n_boot, math.ceil(2 * max(len(tested), 1) / alpha))
        ps = specificity_p(rows_con, rows_ctl, [jobs[k].direction for k in spec_rows], n_sp, seed + 2)
        spec_p = {k: float(ps[n]) for n, k in enumerate(spec_rows)}
    null = plan.null_deltas(stat)
    units = plan.null_units()
    null_delta = plan.null_deltas(delta)
    layer_units = {l: len(o) for l, o in plan.null_order.items()}
    pv = {k: plan.test(k, stat, null, units) for k in tested + audit + ([jk] if jk is not None else [])}
    holm = dict(zip(tested, holm_adjust(torch.tensor([pv[k][0] for k in tested], dtype=torch.float64)).tolist())) \
        if tested else {}
    spec_tested = [k for k in tested if k in spec_p]
    spec_holm = dict(zip(spec_tested, holm_adjust(torch.tensor([spec_p[k] for k in spec_tested],
                                                               dtype=torch.float64)).tolist())) if spec_tested else {}
    roles = {(int(l), int(i)): r for l, i, r in zip(result.scores.layer.tolist(), result.scores.index.tolist(),
                                                     result.scores.role.tolist())}
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for k in tested:
        j = jobs[k]
        s_, u = j.units[0]
        key = (j.layer, u)
        p, g, n_used = pv[k]
        selective = roles.get(key, 0) != 0 and (roles[key] == 1) == (j.direction > 0)
        causal, ok, reasons = decide(float(delta[k]), j.direction, ci[k], spec_holm.get(k), holm[k], alpha,
                                     min_effect, selective)
        dc = delta_ctl.get(k)
        records[key] = {
            "method": plan.method, "tested_as": j.kind, "direction": "drop" if j.direction > 0 else "rise",
            "direction_rule": plan.rules.get(k, "role"),
            "delta": float(delta[k]), "ci_low": ci[k][0], "ci_high": ci[k][1], "t": _opt(float(tvals[k])),
            "delta_control": dc, "specificity": None if dc is None else float(delta[k]) - dc,
            "specificity_ci_low": spec[k][0] if k in spec else None,
            "specificity_ci_high": spec[k][1] if k in spec else None,
            "specificity_p": spec_p.get(k), "specificity_p_holm": spec_holm.get(k),
            "p_value": p, "p_holm": float(holm[k]), "null_n": n_used, "null_exceedances": g,
            "p_floor": 1.0 / (len(null[j.layer]) + 1),
            "causal": causal, "validated": ok,
            "verdict": verdict_word(causal, ok, j.direction),
            "reasons": reasons,
        }
    result.ablation = records
    warnings = []
    n_tested = len(tested)
    for l in null:
        n_avail = layer_units[l]  # the layer's untested neurons: what the null could ever grow to
        if (n_avail + 1) * alpha < max(n_tested, 1) and any(jobs[k].layer == l for k in tested):
            warnings.append(
                f"layer {l} has only {n_avail} other neurons to compare with: the smallest possible p, "
                f"1/{n_avail + 1} = {1 / (n_avail + 1):.3g}, cannot pass the Holm threshold alpha/m = "
                f"{alpha:g}/{n_tested} = {alpha / max(n_tested, 1):.3g}; test fewer neurons (--top-k) to validate any")
    spearman = None
    if result.scores.importance is not None:
        single = [k for k, j in enumerate(jobs) if j.kind in TESTED + ("null", "audit")]
        # the importance estimate that matches the ablation: mean baseline for mean ablation, else zero
        est = result.scores.importance_mean if plan.method == "mean" else result.scores.importance_zero
        est = result.scores.importance if est is None else est
        imps = [float(est[runner.offsets[jobs[k].units[0][0]] + jobs[k].units[0][1]]) for k in single]
        if len(single) > 2 and np.std(imps) > 0 and np.std(delta[single]) > 0:
            from scipy.stats import spearmanr

            spearman = float(spearmanr(imps, delta[single]).statistic)
    # the audit: unimportant-ranked neurons, each tested two-sided; what a random neuron of the layer would give
    # under the same rule (|t| beyond the null at alpha and |Δ| >= min_effect) is the expectation by chance
    audit_recs = []
    expected = 0.0
    for k in audit:
        p, g, n_used = pv[k]
        l = jobs[k].layer
        audit_recs.append({"layer": l, "index": jobs[k].units[0][1], "delta": float(delta[k]),
                           "ci_low": ci[k][0], "ci_high": ci[k][1], "p_value": p, "tested": "two-sided",
                           "above_null": bool(p <= alpha and abs(delta[k]) >= min_effect)})
        nt, nd = np.abs(np.asarray(null[l])), np.abs(np.asarray(null_delta[l]))
        if len(nt):
            thr = np.quantile(nt, 1 - alpha)
            expected += float(np.mean((nt > thr) & (nd >= min_effect)))
    jrec: dict[str, Any] = {}
    if jk is not None:
        jp, jg, jn = pv[jk]
        jrec = {"joint_p_null": jp, "joint_null_n": jn, "joint_t": _opt(float(tvals[jk])),
                "joint_beyond_null": bool(jp <= alpha and jobs[jk].direction * ci[jk][0] > 0
                                          and jobs[jk].direction * ci[jk][1] > 0),
                "joint_direction": "drop" if jobs[jk].direction > 0 else "rise"}
    kinds = [jobs[k].kind for k in tested]
    n_causal = sum(int(r["causal"]) for r in records.values())
    n_valid = sum(int(r["validated"]) for r in records.values())
    rules = sorted({plan.rules.get(k, "role") for k in tested})
    result.ablation_summary = {
        "method": plan.method, "question": QUESTIONS[plan.method], "split": split,
        "n_concept_inputs": n_concept, "n_control_inputs": n_control,
        "y": y, "min_effect": min_effect, "alpha": alpha, "replicas": runner.replicas,
        "statistic": "mean Δ over the held-out concept inputs (t = Δ / its standard error is reported beside it)",
        "test": (f"one-sided empirical p of Δ against random neurons of the same layer under the "
                 f"same intervention, sampled sequentially (Besag-Clifford, h = {plan.h}, up to {plan.n_max} per "
                 f"layer); Holm over all {n_tested} tested neurons together (drops and rises, one family)"),
        "holm_family": f"all {n_tested} tested neurons of this scan (one family)",
        "fwer_bound": (f"P(any tested neuron falsely called beyond the null) <= {alpha:g} over the {n_tested} tested "
                       "neurons"),
        "direction_rules": {r: DIRECTION_RULES[r] for r in rules},
        "specificity_test": ("one-sided bootstrap p of s·(mean Δ on concept inputs − mean Δ on control inputs) <= 0, "
                             "the same intervention and the same y on both, Holm over the tested neurons"),
        "n_tested": n_tested, "n_candidates": kinds.count("candidate"), "n_suppressors": kinds.count("suppressor"),
        "n_named": kinds.count("named"), "null_needed": plan.n_max, "null_rounds": null_rounds,
        "null": [_null_row(l, np.array(v), layer_units[l]) for l, v in null_delta.items()],
        "joint_delta": float(delta[jk]) if jk is not None else None,
        "joint_ci_low": ci[jk][0] if jk is not None else None, "joint_ci_high": ci[jk][1] if jk is not None else None,
        "joint_delta_control": delta_ctl.get(jk) if jk is not None else None,
        "joint_specificity_ci": list(spec[jk]) if jk is not None and jk in spec else None,
        "joint_size": len(jobs[jk].units) if jk is not None else 0,
        "joint_p_null": None, "joint_beyond_null": None, **jrec,
        "importance_delta_spearman": spearman,
        "audit": {"n_checked": len(audit), "n_above_null": sum(r["above_null"] for r in audit_recs),
                  "expected_by_chance": round(expected, 3),
                  "definition": ("neurons whose |importance| is in the bottom half of the tested layers, each tested "
                                 "two-sided (|t| against the layer's null); above_null = p <= alpha and |Δ| >= "
                                 "min_effect; expected_by_chance = the number a random neuron of the same layers "
                                 "would reach under the same rule, from the layer's null"),
                  "neurons": audit_recs},
        "n_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "drop"),
        "n_suppressors_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "rise"),
        "n_causal": n_causal, "n_causal_not_candidate": n_causal - n_valid, "n_not_causal": n_tested - n_causal,
        "warnings": warnings,
    }


def _opt(x: float) -> float | None:
    """None where a quantity was not measured (NaN) or is infinite (not JSON)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)
