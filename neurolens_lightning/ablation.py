"""Causal validation: ablate candidate neurons and compare with a random-neuron null (DESIGN §3).

For each job (one neuron, or a set ablated jointly) the neuron is set at every position to
0 (``zero``), to its mean activation over the ranking split (``mean``), or to its pooled
activation on a random example of the ranking split (``resample``), and the change in the
model's confidence ``Δ = mean_x [y(x) − y_ablated(x)]`` is measured on held-out concept
inputs (with a bootstrap 95% CI) and on held-out control (negative) inputs.

Who is tested: the top-k candidates (predicted to *lower* y when ablated, Δ > 0), the top-k
suppressors (predicted to *raise* it, Δ < 0) and any neuron the user names; each is tested
in its predicted direction.

The null and the p-value (:func:`sequential_p`): the same Δ for random neurons of the same
layer, drawn without replacement in a fixed random order. A random neuron of the layer is
exchangeable with them, so the empirical p-value is exact whatever the null's shape (the
nulls measured on MiniLM are heavy-tailed, excess kurtosis up to 53, which a normal z gets
badly wrong). The null is sampled adaptively (Besag & Clifford 1991): a layer's sample grows
(``null_samples``, then doubling) only while one of its tested neurons has fewer than ``h``
null neurons at least as extreme and the sample is below ``n_max = ceil(m / alpha)`` (m =
neurons tested), the size at which the smallest possible p, ``1 / (n_max + 1)``, passes the
strictest Holm threshold ``alpha / m``. A neuron stopped at its h-th exceedance after L null
neurons gets ``p = h / L``; otherwise ``p = (g + 1) / (L + 1)`` with g exceedances among all L.
Holm's correction then controls the family-wise error within each family: the neurons tested
for a drop (candidates) and those tested for a rise (suppressors) are two separate claims.

**Validated** (in the predicted direction s = +1 for a candidate, −1 for a suppressor): Holm
p <= alpha, ``s·Δ`` CI above 0, specificity ``s·(Δ_concept − Δ_control)`` CI above 0 (the
effect is on the concept, not on every input), ``s·Δ >= min_effect`` (in y's units, see
:func:`default_min_effect`), and the neuron is a candidate or suppressor of the ranking
(FDR-significant and positively selective). A neuron drawn at random from a layer is
validated with probability <= alpha (``benchmarks/bench_calibration.py`` measures it).

Batching: ``replicas`` ablations share one forward pass — the batch is replicated and each
replica gets its own mask — so cost grows with jobs / replicas instead of jobs. Every
hook is removed on exit (also on exceptions) and the model's modes are restored.

Example:
    >>> result = scan("minilm", "royalty", ablate=True, top_k=5)     # doctest: +SKIP
    >>> result.ablation_summary["joint_delta"]                        # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.concepts import Concept
from neurolens_lightning.distributed import all_gather_objects, dist_context, gather_cat
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, eval_mode, intervene
from neurolens_lightning.ranking import holm_adjust

METHODS = ("zero", "mean", "resample")


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
                 mean_values: torch.Tensor | None = None, offsets: Sequence[int] | None = None,
                 head: Any = None, replicas: int = 8, resample_source: Callable[[int], torch.Tensor] | None = None,
                 control_jobs: Sequence[int] | None = None, reuse: bool = True,
                 row_jobs: Sequence[int] | None = None, rank: int | None = None,
                 world_size: int | None = None, clean_cache: dict[Any, Any] | None = None,
                 cache_budget_bytes: int = 1 << 30) -> None:
        if method not in METHODS:
            raise NeuroLensError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")
        if method == "mean" and mean_values is None:
            raise NeuroLensError("mean ablation needs the neurons' mean activations")
        if replicas < 1:
            raise NeuroLensError(f"replicas must be >= 1, got {replicas}")
        self.adapter, self.sites, self.jobs, self.method = adapter, list(sites), list(jobs), method
        self.mean_values, self.offsets, self.head, self.replicas = mean_values, offsets, head, replicas
        self.resample_source = resample_source
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
        self._rows: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}
        self._gathered: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # the clean forward of each input chunk (y, block inputs, fixed batch), keyed by the caller's chunk key and
        # shared with the runners of later null rounds (``clean_cache=runner.clean_cache``), so the rounds pay only
        # for their ablated forwards; chunks beyond ``cache_budget_bytes`` are recomputed instead
        self.clean_cache: dict[Any, Any] = {} if clean_cache is None else clean_cache
        self.cache_budget_bytes = cache_budget_bytes

    # -------------------------------------------------------------- one chunk
    def _site_tensors(self, group: Sequence[AblationJob], example_index: torch.Tensor | None
                      ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per touched site: mask ``[R, U]`` and value ``[U]`` or ``[B, U]`` (resample)."""
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
                lo = self.offsets[s]
                val = self.mean_values[lo:lo + units].to(dev, torch.float32)
            else:
                val = self.resample_source(s).to(dev, torch.float32)[example_index.to(dev)]
            out[s] = (mask.to(dev, non_blocking=True), val)
        return out

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
                 example_index: torch.Tensor | None) -> torch.Tensor:
        R, B = len(group), batch.size
        tensors = self._site_tensors(group, example_index)
        modules = {s: self.sites[s].module for s in tensors}

        def edit(key: Any, out: torch.Tensor) -> torch.Tensor:
            mask, val = tensors[key]
            view = self.adapter.site_view(out)
            P, U = view.shape[1], view.shape[2]
            v4 = view.reshape(R, B, P, U)
            m = mask.to(view.dtype)[:, None, None, :]
            v = val.to(view.dtype)
            v = v[None, None, None, :] if v.dim() == 1 else v[None, :, None, :]
            new = v4 * (1 - m) + m * v
            return self.adapter.unview(new.reshape(R * B, P, U), out)

        rep = batch.repeat(R)
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
            size = _nbytes(got)
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
        mine = self.mine[kind]
        pos = {k: n for n, k in enumerate(mine)}
        d = torch.zeros(len(mine), batch.size, dtype=torch.float64, device=y.device)
        for part in self.groups(kind):
            ya = self._ablated(batch, [self.jobs[k] for k in part], cache, example_index)
            d[[pos[k] for k in part]] = y.double().unsqueeze(0) - ya.double()
        sums = d.sum(1)
        self._sums[kind] = sums if self._sums[kind] is None else self._sums[kind] + sums
        keep = set(self.row_index[kind])
        rows = [n for n, k in enumerate(mine) if k in keep]
        self._rows[kind].append(d[rows])

    def n_inputs(self, kind: str) -> int:
        return sum(len(y) for y in self.y_clean[kind])

    def _gather(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean Δ of every job of ``kind`` [J], per-example Δ of its row jobs [R, n]); a collective under DDP."""
        if kind in self._gathered:
            return self._gathered[kind]
        mine, keep = self.mine[kind], set(self.row_index[kind])
        n = self.n_inputs(kind)
        sums = self._sums[kind].cpu() if self._sums[kind] is not None else torch.zeros(len(mine), dtype=torch.float64)
        rows = torch.cat([r.cpu() for r in self._rows[kind]], dim=1) if self._rows[kind] else \
            torch.zeros(sum(k in keep for k in mine), n, dtype=torch.float64)
        local = {"jobs": mine, "sums": sums, "rows": rows, "row_jobs": [k for k in mine if k in keep]}
        mean = {}
        per_example = {}
        for part in all_gather_objects(local):
            mean.update({k: float(v) / max(n, 1) for k, v in zip(part["jobs"], part["sums"].tolist())})
            per_example.update(zip(part["row_jobs"], part["rows"]))
        means = torch.tensor([mean[k] for k in self.job_index[kind]], dtype=torch.float64)
        rows_all = torch.stack([per_example[k] for k in self.row_index[kind]]) if self.row_index[kind] else \
            torch.zeros(0, n, dtype=torch.float64)
        self._gathered[kind] = (means, rows_all)
        return self._gathered[kind]

    def mean_deltas(self, kind: str) -> torch.Tensor:
        """Mean ``y(x) − y_ablated(x)`` over the inputs of ``kind``, per job of ``job_index[kind]``: ``[J]``."""
        return self._gather(kind)[0]

    def deltas(self, kind: str) -> torch.Tensor:
        """``y(x) − y_ablated(x)`` per row job of ``kind`` (order of ``row_index[kind]``) and example: ``[R, n]``."""
        return self._gather(kind)[1]


def _nbytes(obj: Any) -> int:
    """Bytes held by the tensors in ``obj`` (nested tuples, lists, dicts, batches)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    if isinstance(obj, Batch):
        return _nbytes(obj.inputs) + _nbytes(obj.target) + _nbytes([obj.position_mask, obj.span_mask])
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


def decide(delta: float, direction: int, ci: tuple[float, float], spec_ci: tuple[float, float] | None,
           p_holm: float, alpha: float, min_effect: float, selective: bool) -> tuple[bool, list[str]]:
    """The verdict of one tested neuron and, when not validated, every reason why.

    Example:
        >>> decide(0.5, 1, (0.3, 0.7), (0.2, 0.6), 0.01, 0.05, 0.01, True)
        (True, [])
        >>> decide(0.5, 1, (0.3, 0.7), (-0.1, 0.6), 0.01, 0.05, 0.01, True)[1]
        ['not specific: its effect on control inputs is as large (specificity CI reaches 0)']
    """
    s = 1 if direction >= 0 else -1
    word = "drop" if s > 0 else "rise"
    reasons = []
    if not selective:
        reasons.append("not a candidate of the ranking (not FDR-significant and positively selective)")
    if not p_holm <= alpha:
        reasons.append(f"its {word} is not beyond random neurons of its layer (Holm p = {p_holm:.3g} > {alpha:g})")
    lo, hi = ci
    if not (s * lo > 0 and s * hi > 0):
        reasons.append(f"the 95% CI of Δ includes 0 or the other direction (no clear {word})")
    if spec_ci is None or not (s * spec_ci[0] > 0 and s * spec_ci[1] > 0):
        reasons.append("not specific: its effect on control inputs is as large (specificity CI reaches 0)")
    if not s * delta >= min_effect:
        reasons.append(f"|Δ| = {abs(delta):.3g} is below the minimum effect {min_effect:g}")
    return not reasons, reasons


@dataclass
class AblationPlan:
    """What one ablation run measures: the jobs, the tested neurons, the null sequence per layer.

    ``null_order[l]`` is the random order in which layer l's non-tested neurons enter the
    null; the first ``null_taken[l]`` of them have jobs so far (:meth:`more_null`).
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

    def families(self) -> tuple[list[int], list[int]]:
        """The two Holm families: neurons tested for a drop (candidates) and for a rise (suppressors)."""
        return ([k for k in self.tested if self.jobs[k].direction > 0],
                [k for k in self.tested if self.jobs[k].direction < 0])

    def null_deltas(self, delta: np.ndarray) -> dict[int, list[float]]:
        """Null Δ per layer, in sampling order."""
        out: dict[int, list[float]] = {l: [] for l in self.null_order}
        for k, j in enumerate(self.jobs):
            if j.kind == "null":
                out[j.layer].append(float(delta[k]))
        return out

    def more_null(self, delta: np.ndarray) -> list[AblationJob]:
        """The next round of null jobs (empty when every tested neuron's p is settled).

        A layer's sample grows (doubling) while a tested neuron of the layer has fewer than
        ``h`` null neurons at least as extreme, up to ``n_max`` or the layer's size.
        """
        null = self.null_deltas(delta)
        new: list[AblationJob] = []
        for l, order in self.null_order.items():
            have = self.null_taken[l]
            cap = min(self.n_max, len(order))
            if have >= cap:
                continue
            open_ = False
            for k in self.tested:
                j = self.jobs[k]
                if j.layer != l:
                    continue
                _, g, _ = sequential_p(j.direction * float(delta[k]), [j.direction * x for x in null[l]], self.h)
                open_ = open_ or g < self.h
            if not open_:
                continue
            take = min(cap, max(2 * have, have + 1))
            new += [AblationJob([(self.site_pos[l], u)], "null", l) for u in order[have:take]]
            self.null_taken[l] = take
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


def plan_ablation(result: Any, scanner: Any, method: str = "zero", null_samples: int = 50,
                  neurons: Sequence[tuple[int, int]] | None = None, audit_samples: int = 20,
                  seed: int = 0, alpha: float = 0.05, h: int = 10, suppressors: int | None = None,
                  test_top_k: bool = True) -> AblationPlan:
    """Tested neurons (top-k candidates, top suppressors, explicit ``neurons``), their joint set,
    the first round of the per-layer random null and the audit sample.

    ``suppressors``: how many of the top suppressors to test (default: ``result.top_k``).
    ``test_top_k=False``: test the named ``neurons`` only (no top-k candidates or suppressors, and
    no audit of the ranking, which those tests would not use).
    """
    check_ablation_args(scanner.adapter, scanner.layers, method, null_samples, neurons)
    scores = result.scores
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    tested: list[tuple[tuple[int, int], str, int]] = []
    if test_top_k:
        tested += [(n, "candidate", 1) for n in result.top_neurons()]
        tested += [(n, "suppressor", -1) for n in result.top_suppressors(suppressors)]
    seen = {n for n, _, _ in tested}
    imp = scores.importance
    for l, i in neurons or []:
        if (l, i) in seen:
            continue
        seen.add((l, i))
        flat = scores.flat_index(l, i)
        role = int(scores.role[flat])
        direction = (-1 if role == 2 else 1) if role else (-1 if imp is not None and float(imp[flat]) < 0 else 1)
        tested.append(((l, i), "named", direction))
    rng = random.Random(seed)
    layers = sorted({l for (l, _), _, _ in tested})
    n_max = null_size_needed(max(sum(d > 0 for _, _, d in tested), sum(d < 0 for _, _, d in tested)), alpha)
    null_order: dict[int, list[int]] = {}
    null_jobs: list[AblationJob] = []
    for l in layers:
        pool = [u for u in range(scanner.sites[site_pos[l]].units) if (l, u) not in seen]
        rng.shuffle(pool)
        null_order[l] = pool
        first = min(null_samples, len(pool))
        null_jobs += [AblationJob([(site_pos[l], u)], "null", l) for u in pool[:first]]
    audit_jobs: list[AblationJob] = []
    if imp is not None and audit_samples > 0 and test_top_k:
        in_layers = torch.tensor([int(l) in layers for l in scores.layer.tolist()])
        med = imp[in_layers].median() if bool(in_layers.any()) else imp.new_tensor(0.0)
        low = [(int(scores.layer[j]), int(scores.index[j])) for j in
               (in_layers & (imp <= med)).nonzero().flatten().tolist()]
        low = [n for n in low if n not in seen]
        for l, u in rng.sample(low, min(audit_samples, len(low))):
            audit_jobs.append(AblationJob([(site_pos[l], u)], "audit", l))
    tested_jobs = [AblationJob([(site_pos[l], i)], kind, l, direction) for (l, i), kind, direction in tested]
    joint = AblationJob([(site_pos[l], i) for (l, i), _, direction in tested if direction > 0]
                        or [(site_pos[l], i) for (l, i), _, _ in tested], "joint")
    jobs = tested_jobs + ([joint] if tested else []) + null_jobs + audit_jobs
    return AblationPlan(jobs, [n for n, _, _ in tested], method, seed, null_order,
                        {l: min(null_samples, len(o)) for l, o in null_order.items()}, n_max, h, site_pos)


def pooled_site_activations(adapter: ModelAdapter, scanner: Any, s: int) -> torch.Tensor:
    """Pooled activations ``[n_examples, units]`` of site ``s`` on the scanner's (ranking-split) examples."""
    rows = []
    for _, batch in scanner.batches():
        got: dict[int, torch.Tensor] = {}
        with torch.no_grad(), eval_mode(adapter.model), capture(
                {s: scanner.sites[s].module}, on_output=lambda k, a, b=batch: got.__setitem__(k, adapter.pool(a, b, scanner.pooling)[0])):
            adapter.forward(batch)
        rows.append(got[s].float().cpu())
    return torch.cat(rows)


def make_runner(plan: AblationPlan, result: Any, adapter: ModelAdapter, scanner: Any, replicas: int = 8,
                reuse: bool = True) -> AblationRunner:
    """The runner for ``plan`` (resample ablation reads the ranking split's pooled activations lazily)."""
    resample_source = None
    if plan.method == "resample":
        resample_source = functools.lru_cache(maxsize=None)(functools.partial(pooled_site_activations, adapter,
                                                                              scanner))

    return AblationRunner(adapter, scanner.sites, plan.jobs, method=plan.method,
                          mean_values=result.scores.mean_activation, offsets=scanner.offsets, head=scanner.head,
                          replicas=replicas, resample_source=resample_source, control_jobs=plan.control_jobs,
                          reuse=reuse, row_jobs=plan.row_jobs)


def ablation_inputs(adapter: ModelAdapter, scanner: Any, held_out: Concept, batch_size: int = 16, seed: int = 0
                    ) -> list[tuple[str, list[Any]]]:
    """Chunks ``(kind, items)`` of held-out concept inputs (tasks or positives) and control inputs (negatives)."""
    concept_items = list(held_out.tasks) if scanner.uses_tasks else list(held_out.positive)
    chunks = []
    for kind, items in (("concept", concept_items), ("control", list(held_out.negative))):
        for start in range(0, len(items), batch_size):
            chunks.append((kind, items[start:start + batch_size]))
    return chunks


def encode_chunk(adapter: ModelAdapter, scanner: Any, kind: str, items: Sequence[Any], generator: torch.Generator
                 ) -> tuple[Batch, torch.Tensor]:
    """Encode one chunk; also draw, per example, the ranking-split example a resample ablation copies."""
    batch = scanner.encode_confidence(items, tasks=kind == "concept" and scanner.uses_tasks)
    src = torch.randint(0, len(scanner.examples), (batch.size,), generator=generator)
    return batch, src


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


def run_ablation(result: Any, adapter: ModelAdapter, scanner: Any, held_out: Concept, method: str = "zero",
                 null_samples: int = 50, neurons: Sequence[tuple[int, int]] | None = None, seed: int = 0,
                 batch_size: int = 16, replicas: int = 8, audit_samples: int = 20, min_effect: float | None = None,
                 alpha: float = 0.05, n_boot: int = 1000, progress: bool = False, reuse: bool = True,
                 split: str | None = None, suppressors: int | None = None, test_top_k: bool = True) -> Any:
    """Ablate ``result``'s candidates, suppressors and explicit ``neurons`` on ``held_out``; fill ``result.ablation``.

    This is the plain-loop form of :class:`neurolens_lightning.modules.AblationModule`'s
    validation loop (same plan, runner and statistics). ``split`` describes the inputs in
    words (default: the held-out split).
    """
    plan = plan_ablation(result, scanner, method, null_samples, neurons, audit_samples, seed, alpha=alpha,
                         suppressors=suppressors, test_top_k=test_top_k)
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
    """Feed every chunk of ``kinds`` to ``runner`` (resample sources drawn from the same seeded stream each time)."""
    gen = torch.Generator().manual_seed(seed)
    it: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc=desc, leave=False, unit="batch")
    for i, (kind, items) in enumerate(it):
        batch, src = encode_chunk(adapter, scanner, kind, items, gen)
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
    while True:
        new = plan.more_null(delta)
        if not new:
            break
        extra = AblationRunner(adapter, scanner.sites, new, method=plan.method,
                               mean_values=runner.mean_values, offsets=runner.offsets, head=runner.head,
                               replicas=replicas, resample_source=runner.resample_source, control_jobs=[],
                               reuse=reuse, row_jobs=[], clean_cache=runner.clean_cache)
        run_chunks(extra, adapter, scanner, chunks, seed, kinds=("concept",), progress=progress,
                   desc=f"null [{len(new)} more random neurons]")
        delta = np.concatenate([delta, extra.mean_deltas("concept").numpy()])
    runner.clean_cache.clear()  # the clean forwards were only needed for the rounds
    summarize_ablation(result, runner, plan, delta, min_effect=min_effect, alpha=alpha, n_boot=n_boot, seed=seed,
                       split=split, n_concept=n_concept, n_control=n_control, y=y_description(scanner))


def _empty_summary(plan: AblationPlan, min_effect: float, alpha: float, split: str, n_concept: int, n_control: int,
                   scanner: Any) -> dict[str, Any]:
    return {"method": plan.method, "split": split, "n_concept_inputs": n_concept, "n_control_inputs": n_control,
            "min_effect": min_effect, "alpha": alpha, "y": y_description(scanner), "n_tested": 0,
            "n_candidates": 0, "n_suppressors": 0, "n_named": 0, "n_validated": 0, "n_suppressors_validated": 0,
            "null": [], "joint_delta": None, "joint_ci_low": None, "joint_ci_high": None,
            "joint_delta_control": None, "joint_specificity_ci": None, "importance_delta_spearman": None,
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


def summarize_ablation(result: Any, runner: AblationRunner, plan: AblationPlan, delta: np.ndarray,
                       min_effect: float, alpha: float, n_boot: int, seed: int, split: str, n_concept: int,
                       n_control: int, y: str = "") -> None:
    """Statistics of a finished run: CIs, sequential p per tested neuron, Holm, verdicts, joint, audit.

    ``delta`` holds the mean Δ of every job of ``plan.jobs`` on the concept inputs (the
    runner's jobs first, then the null jobs of later rounds).
    """
    jobs = plan.jobs
    n_first = len(runner.jobs)
    d_con = runner.deltas("concept")
    d_ctl = runner.deltas("control")
    con_pos = {k: n for n, k in enumerate(runner.row_index["concept"])}
    ctl_pos = {k: n for n, k in enumerate(runner.row_index["control"])}
    tested = plan.tested
    joint = [k for k, j in enumerate(jobs[:n_first]) if j.kind == "joint"]
    audit = [k for k, j in enumerate(jobs[:n_first]) if j.kind == "audit"]
    ci_rows = tested + joint + audit  # CIs only where they are reported
    lo, hi = bootstrap_ci(d_con[[con_pos[k] for k in ci_rows]], n_boot=n_boot, seed=seed)
    ci = {k: (float(lo[n]), float(hi[n])) for n, k in enumerate(ci_rows)}
    spec_rows = [k for k in tested + joint if k in ctl_pos]
    spec: dict[int, tuple[float, float]] = {}
    delta_ctl: dict[int, float] = {}
    if spec_rows and d_ctl.shape[1]:
        slo, shi = bootstrap_ci(d_con[[con_pos[k] for k in spec_rows]], n_boot=n_boot, seed=seed + 1,
                                minus=d_ctl[[ctl_pos[k] for k in spec_rows]])
        spec = {k: (float(slo[n]), float(shi[n])) for n, k in enumerate(spec_rows)}
        delta_ctl = {k: float(d_ctl[ctl_pos[k]].mean()) for k in spec_rows}
    null = plan.null_deltas(delta)
    layer_units = {l: len(o) for l, o in plan.null_order.items()}

    def test(k: int) -> tuple[float, int, int]:
        j = jobs[k]
        return sequential_p(j.direction * float(delta[k]), [j.direction * x for x in null[j.layer]], plan.h)

    pv = {k: test(k) for k in tested + audit}
    holm_of: dict[int, float] = {}
    for family in plan.families():  # activators and suppressors: each family-wise at alpha
        adj = holm_adjust(torch.tensor([pv[k][0] for k in family], dtype=torch.float64)).tolist()
        holm_of.update(zip(family, adj))
    holm = [holm_of[k] for k in tested]
    roles = {(int(l), int(i)): r for l, i, r in zip(result.scores.layer.tolist(), result.scores.index.tolist(),
                                                     result.scores.role.tolist())}
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for k, ph in zip(tested, holm):
        j = jobs[k]
        s_, u = j.units[0]
        key = (j.layer, u)
        p, g, n_used = pv[k]
        selective = roles.get(key, 0) != 0 and (roles[key] == 1) == (j.direction > 0)
        ok, reasons = decide(float(delta[k]), j.direction, ci[k], spec.get(k), ph, alpha, min_effect, selective)
        dc = delta_ctl.get(k)
        records[key] = {
            "method": plan.method, "tested_as": j.kind, "direction": "drop" if j.direction > 0 else "rise",
            "delta": float(delta[k]), "ci_low": ci[k][0], "ci_high": ci[k][1],
            "delta_control": dc, "specificity": None if dc is None else float(delta[k]) - dc,
            "specificity_ci_low": spec[k][0] if k in spec else None,
            "specificity_ci_high": spec[k][1] if k in spec else None,
            "p_value": p, "p_holm": float(ph), "null_n": n_used, "null_exceedances": g,
            "p_floor": 1.0 / (len(null[j.layer]) + 1),
            "validated": ok,
            "verdict": ("validated suppressor" if j.direction < 0 else "validated") if ok else "not validated",
            "reasons": reasons,
        }
    result.ablation = records
    warnings = []
    n_tested = len(tested)
    m_family = max((len(f) for f in plan.families()), default=1)
    for l, vals in null.items():
        if (len(vals) + 1) * alpha < m_family and any(jobs[k].layer == l for k in tested):
            warnings.append(
                f"layer {l} has only {len(vals)} other neurons to compare with: the smallest possible p, "
                f"1/{len(vals) + 1} = {1 / (len(vals) + 1):.3g}, cannot pass the Holm threshold alpha/m = "
                f"{alpha:g}/{m_family} = {alpha / m_family:.3g}; test fewer neurons (--top-k) to validate any")
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
    audit_recs = []
    for k in audit:
        p, g, n_used = pv[k]
        audit_recs.append({"layer": jobs[k].layer, "index": jobs[k].units[0][1], "delta": float(delta[k]),
                           "ci_low": ci[k][0], "ci_high": ci[k][1], "p_value": p,
                           "above_null": bool(p <= alpha and delta[k] >= min_effect)})
    jk = joint[0] if joint else None
    kinds = [jobs[k].kind for k in tested]
    result.ablation_summary = {
        "method": plan.method, "split": split, "n_concept_inputs": n_concept, "n_control_inputs": n_control,
        "y": y, "min_effect": min_effect, "alpha": alpha, "replicas": runner.replicas,
        "test": (f"one-sided empirical p against random neurons of the same layer, sampled sequentially "
                 f"(Besag-Clifford, h = {plan.h}, up to {plan.n_max} per layer), Holm-corrected within each "
                 f"family: {' and '.join(f'{len(f)} tested for a {w}' for f, w in zip(plan.families(), ('drop', 'rise')) if f)}"),
        "n_tested": n_tested, "n_candidates": kinds.count("candidate"), "n_suppressors": kinds.count("suppressor"),
        "n_named": kinds.count("named"), "null_needed": plan.n_max,
        "null": [_null_row(l, np.array(v), layer_units[l]) for l, v in null.items()],
        "joint_delta": float(delta[jk]) if jk is not None else None,
        "joint_ci_low": ci[jk][0] if jk is not None else None, "joint_ci_high": ci[jk][1] if jk is not None else None,
        "joint_delta_control": delta_ctl.get(jk) if jk is not None else None,
        "joint_specificity_ci": list(spec[jk]) if jk is not None and jk in spec else None,
        "joint_size": len(jobs[jk].units) if jk is not None else 0,
        "importance_delta_spearman": spearman,
        "audit": {"n_checked": len(audit), "n_above_null": sum(r["above_null"] for r in audit_recs),
                  "expected_by_chance": round(alpha * len(audit), 3), "neurons": audit_recs},
        "n_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "drop"),
        "n_suppressors_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "rise"),
        "warnings": warnings,
    }


def _opt(x: float) -> float | None:
    """None where a quantity was not measured (NaN)."""
    return None if x is None or math.isnan(float(x)) else float(x)
