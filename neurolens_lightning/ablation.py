"""Causal validation: ablate candidate neurons and compare with a random-neuron null (DESIGN §3).

For each job (one neuron, or a set ablated jointly) the neuron is set at every position to
0 (``zero``), to its mean activation over the ranking split (``mean``), or to its pooled
activation on a random example of the ranking split (``resample``), and the drop in the
model's confidence ``Δ = mean_x [y(x) − y_ablated(x)]`` is measured on held-out concept
inputs (with a bootstrap 95% CI) and on held-out control (negative) inputs.

Null model: Δ of ``null_samples`` random neurons of the same layer; each candidate gets
``z = (Δ − mean_null) / std_null``, a one-sided p-value from z and a Holm correction over
the candidates. **Validated** = Holm p < 0.05, the CI excludes 0 (``ci_low > 0``) and
``Δ >= min_effect`` (default 0.01 nats of y, about a 1% relative drop in probability).

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
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.concepts import Concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, eval_mode, intervene
from neurolens_lightning.ranking import holm_adjust

METHODS = ("zero", "mean", "resample")


@dataclass
class AblationJob:
    """Neurons ablated together in one replica: ``(site position, unit)`` pairs."""

    units: list[tuple[int, int]]
    kind: str  # candidate | null | audit | joint
    layer: int | None = None


class AblationRunner:
    """Measures y with and without each job's ablation on concept and control inputs.

    ``step(kind, batch)`` processes one chunk of examples for every job of that kind (this
    is the validation step); :meth:`deltas` returns the per-job, per-example Δ. Control
    inputs are measured for the jobs in ``control_jobs`` only (candidates and the joint
    ablation: the null and audit neurons need no specificity).

    Reuse: when the adapter exposes ``blocks``/``tail``, the clean forward records each
    block's inputs, and an ablated forward re-enters the network at the first ablated block
    of its group, so the activations below the ablated layer are computed once per chunk.
    """

    def __init__(self, adapter: ModelAdapter, sites: Sequence[Any], jobs: Sequence[AblationJob], method: str = "zero",
                 mean_values: torch.Tensor | None = None, offsets: Sequence[int] | None = None,
                 head: Any = None, replicas: int = 8, resample_source: Callable[[int], torch.Tensor] | None = None,
                 control_jobs: Sequence[int] | None = None, reuse: bool = True) -> None:
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
        self.y_clean: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}
        self.y_ablated: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}

    # -------------------------------------------------------------- one chunk
    def _site_tensors(self, group: Sequence[AblationJob], example_index: torch.Tensor | None
                      ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per touched site: mask ``[R, U]`` and value ``[U]`` or ``[B, U]`` (resample)."""
        dev = self.adapter.device
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for r, job in enumerate(group):
            for s, u in job.units:
                units = self.sites[s].units
                if s not in out:
                    mask = torch.zeros(len(group), units, device=dev)
                    if self.method == "zero":
                        val = torch.zeros(units, device=dev)
                    elif self.method == "mean":
                        lo = self.offsets[s]
                        val = self.mean_values[lo:lo + units].to(dev, torch.float32)
                    else:
                        val = self.resample_source(s).to(dev, torch.float32)[example_index.to(dev)]
                    out[s] = (mask, val)
                out[s][0][r, u] = 1.0
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

    def step(self, kind: str, batch: Batch, example_index: torch.Tensor | None = None) -> None:
        """Clean and ablated y for one chunk of ``kind`` (``concept`` or ``control``) inputs."""
        batch = batch.to(self.adapter.device)
        y, cache, batch = self._clean(batch)
        self.y_clean[kind].append(y.cpu())
        idx = sorted(self.job_index[kind], key=lambda k: self._start(self.jobs[k]), reverse=True)
        rows = torch.zeros(len(self.job_index[kind]), batch.size)
        pos = {k: n for n, k in enumerate(self.job_index[kind])}
        for start in range(0, len(idx), self.replicas):
            part = idx[start:start + self.replicas]
            ya = self._ablated(batch, [self.jobs[k] for k in part], cache, example_index).cpu()
            for r, k in enumerate(part):
                rows[pos[k]] = ya[r]
        self.y_ablated[kind].append(rows)

    def deltas(self, kind: str) -> torch.Tensor:
        """``y(x) − y_ablated(x)`` per job of ``kind`` (order of ``job_index[kind]``) and example: ``[J, n]``."""
        clean = torch.cat(self.y_clean[kind]).double()
        abl = torch.cat(self.y_ablated[kind], dim=1).double()
        return clean.unsqueeze(0) - abl


def bootstrap_ci(diffs: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over examples, per row of ``diffs [J, n]``."""
    d = diffs.numpy()
    n = d.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = d[:, idx].mean(axis=2)  # [J, n_boot]
    a = (1 - level) / 2
    return np.quantile(means, a, axis=1), np.quantile(means, 1 - a, axis=1)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class AblationPlan:
    """What one ablation run measures: the jobs, the candidates and the inputs."""

    jobs: list[AblationJob]
    candidates: list[tuple[int, int]]
    method: str
    seed: int = 0

    @property
    def control_jobs(self) -> list[int]:
        return [k for k, j in enumerate(self.jobs) if j.kind in ("candidate", "joint")]


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
                  seed: int = 0) -> AblationPlan:
    """Candidates (top-k + explicit ``neurons``), their joint set, the per-layer random null and the audit sample."""
    if method not in METHODS:
        raise NeuroLensError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")
    if null_samples < 2:
        raise NeuroLensError(f"null_samples must be >= 2 to estimate a null spread, got {null_samples}")
    scores = result.scores
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    cands: list[tuple[int, int]] = list(result.top_neurons())
    for l, i in neurons or []:
        if l not in site_pos:
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} was not scanned (scanned layers: {scanner.layers})")
        units = scanner.sites[site_pos[l]].units
        if not 0 <= i < units:
            raise NeuroLensError(f"neuron {l}:{i}: index out of range, layer {l} has {units} units (0..{units - 1})")
        if (l, i) not in cands:
            cands.append((l, i))
    rng = random.Random(seed)
    cand_set = set(cands)
    layers = sorted({l for l, _ in cands})
    null_jobs: list[AblationJob] = []
    for l in layers:
        pool = [u for u in range(scanner.sites[site_pos[l]].units) if (l, u) not in cand_set]
        for u in rng.sample(pool, min(null_samples, len(pool))):
            null_jobs.append(AblationJob([(site_pos[l], u)], "null", l))
    audit_jobs: list[AblationJob] = []
    if scores.importance is not None and audit_samples > 0:
        in_layers = torch.tensor([int(l) in layers for l in scores.layer.tolist()])
        imp = scores.importance
        med = imp[in_layers].median()
        low = [(int(scores.layer[j]), int(scores.index[j])) for j in
               (in_layers & (imp <= med)).nonzero().flatten().tolist()]
        low = [n for n in low if n not in cand_set]
        for l, u in rng.sample(low, min(audit_samples, len(low))):
            audit_jobs.append(AblationJob([(site_pos[l], u)], "audit", l))
    cand_jobs = [AblationJob([(site_pos[l], i)], "candidate", l) for l, i in cands]
    joint = AblationJob([(site_pos[l], i) for l, i in cands], "joint")
    return AblationPlan(cand_jobs + [joint] + null_jobs + audit_jobs, cands, method, seed)


def pooled_site_activations(adapter: ModelAdapter, scanner: Any, s: int) -> torch.Tensor:
    """Pooled activations ``[n_examples, units]`` of site ``s`` on the scanner's (ranking-split) examples."""
    rows = []
    for _, batch in scanner.batches():
        got: dict[int, torch.Tensor] = {}
        with torch.no_grad(), eval_mode(adapter.model), capture(
                {s: scanner.sites[s].module}, on_output=lambda k, a, b=batch: got.__setitem__(k, adapter.pool(a, b)[0])):
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
                          reuse=reuse)


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


def run_ablation(result: Any, adapter: ModelAdapter, scanner: Any, held_out: Concept, method: str = "zero",
                 null_samples: int = 50, neurons: Sequence[tuple[int, int]] | None = None, seed: int = 0,
                 batch_size: int = 16, replicas: int = 8, audit_samples: int = 20, min_effect: float = 0.01,
                 alpha: float = 0.05, n_boot: int = 1000, progress: bool = False, reuse: bool = True) -> Any:
    """Ablate ``result``'s top-k (and explicit ``neurons``) on ``held_out``; fill ``result.ablation``.

    This is the plain-loop form of :class:`neurolens_lightning.modules.AblationModule`'s
    validation loop (same plan, runner and statistics).
    """
    plan = plan_ablation(result, scanner, method, null_samples, neurons, audit_samples, seed)
    runner = make_runner(plan, result, adapter, scanner, replicas=replicas, reuse=reuse)
    chunks = ablation_inputs(adapter, scanner, held_out, batch_size, seed)
    gen = torch.Generator().manual_seed(seed)
    it: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc=f"ablation [{method}, {len(plan.jobs)} jobs]", leave=False, unit="batch")
    for kind, items in it:
        batch, src = encode_chunk(adapter, scanner, kind, items, gen)
        runner.step(kind, batch, src)
    summarize_ablation(result, runner, plan.jobs, plan.candidates, method=method, min_effect=min_effect,
                       alpha=alpha, n_boot=n_boot, seed=seed, split=result.settings.get("split", ""),
                       n_concept=sum(len(c) for k, c in chunks if k == "concept"),
                       n_control=sum(len(c) for k, c in chunks if k == "control"))
    return result


def summarize_ablation(result: Any, runner: AblationRunner, jobs: Sequence[AblationJob],
                       cands: Sequence[tuple[int, int]], method: str, min_effect: float, alpha: float,
                       n_boot: int, seed: int, split: str, n_concept: int, n_control: int) -> None:
    """Statistics of a finished run: CIs, null per layer, z / Holm p, validated flags, joint, audit."""
    d_con = runner.deltas("concept")
    d_ctl = runner.deltas("control")
    delta = d_con.mean(1).numpy()
    delta_ctl = np.full(len(jobs), np.nan)
    if d_ctl.shape[1]:
        delta_ctl[runner.job_index["control"]] = d_ctl.mean(1).numpy()
    lo, hi = bootstrap_ci(d_con, n_boot=n_boot, seed=seed)
    null: dict[int, tuple[float, float, int]] = {}
    for l in sorted({j.layer for j in jobs if j.kind == "null"}):
        vals = np.array([delta[k] for k, j in enumerate(jobs) if j.kind == "null" and j.layer == l])
        null[l] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals))

    def z_p(k: int) -> tuple[float, float]:
        mu, sd, _ = null[jobs[k].layer]
        diff = delta[k] - mu
        z = diff / sd if sd > 0 else (math.copysign(math.inf, diff) if diff != 0 else 0.0)
        return z, _norm_sf(z)

    def judge(idx: list[int]) -> dict[int, dict[str, Any]]:
        zp = [z_p(k) for k in idx]
        holm = holm_adjust(torch.tensor([p for _, p in zp], dtype=torch.float64)).tolist() if idx else []
        out = {}
        for k, (z, p), ph in zip(idx, zp, holm):
            ok = bool(ph < alpha and lo[k] > 0 and delta[k] >= min_effect)
            out[k] = {"method": method, "delta": float(delta[k]), "ci_low": float(lo[k]), "ci_high": float(hi[k]),
                      "delta_control": _opt(delta_ctl[k]), "specificity": _opt(delta[k] - delta_ctl[k]),
                      "z": _finite(z), "p_value": float(p), "p_holm": float(ph), "validated": ok}
        return out

    cand_idx = [k for k, j in enumerate(jobs) if j.kind == "candidate"]
    audit_idx = [k for k, j in enumerate(jobs) if j.kind == "audit"]
    joint_k = next(k for k, j in enumerate(jobs) if j.kind == "joint")
    cand_stats = judge(cand_idx)
    audit_stats = judge(audit_idx)
    result.ablation = {tuple(cands[n]): cand_stats[k] for n, k in enumerate(cand_idx)}
    spearman = None
    if result.scores.importance is not None:
        single = [k for k, j in enumerate(jobs) if j.kind in ("candidate", "null", "audit")]
        # the importance estimate that matches the ablation: mean baseline for mean ablation, else zero
        est = result.scores.importance_mean if method == "mean" else result.scores.importance_zero
        est = result.scores.importance if est is None else est
        imps = []
        for k in single:
            s, u = jobs[k].units[0]
            imps.append(float(est[runner.offsets[s] + u]))
        if len(single) > 2 and np.std(imps) > 0 and np.std(delta[single]) > 0:
            from scipy.stats import spearmanr

            spearman = float(spearmanr(imps, delta[single]).statistic)
    result.ablation_summary = {
        "method": method, "split": split, "n_concept_inputs": n_concept, "n_control_inputs": n_control,
        "min_effect": min_effect, "alpha": alpha, "replicas": runner.replicas,
        "null": [{"layer": l, "mean": m, "std": s, "n": n} for l, (m, s, n) in null.items()],
        "joint_delta": float(delta[joint_k]), "joint_ci_low": float(lo[joint_k]), "joint_ci_high": float(hi[joint_k]),
        "joint_delta_control": _opt(delta_ctl[joint_k]),
        "importance_delta_spearman": spearman,
        "audit": {"n_checked": len(audit_idx), "n_missed": sum(int(v["validated"]) for v in audit_stats.values()),
                  "neurons": [{"layer": jobs[k].layer, "index": jobs[k].units[0][1], **audit_stats[k]}
                              for k in audit_idx]},
        "n_validated": sum(int(v["validated"]) for v in cand_stats.values()),
        "n_candidates": len(cand_idx),
    }


def _opt(x: float) -> float | None:
    """None where a quantity was not measured (NaN)."""
    return None if math.isnan(float(x)) else float(x)


def _finite(x: float) -> float:
    return float(max(min(x, 1e300), -1e300))
