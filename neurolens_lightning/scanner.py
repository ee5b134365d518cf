"""The scoring passes: concept -> adapter -> hooks -> metrics.

:class:`ConceptScanner` owns the metrics for one (model, concept, layers) and exposes the
two per-batch steps, so the same logic runs from :func:`neurolens_lightning.scan`, from a
Lightning ``validation_step`` and from the training callback:

* :meth:`ConceptScanner.activation_step` (no grad): pooled activations of every scanned
  neuron -> Selectivity, Consistency, MeanActivation, TopActivations (+ features for a
  probe head when the model has no output head);
* :meth:`ConceptScanner.importance_step` (one backward for all neurons): gradient x
  activation of the confidence y on concept inputs -> Importance;
* :meth:`ConceptScanner.fused_step` (one forward + backward): both of the above on a batch
  of positives whose confidence inputs *are* the activation inputs (see
  :meth:`ConceptScanner.can_fuse`), so a full scan costs one forward + backward over the
  positives and one forward over the negatives instead of two full passes (the fused pass and
  its per-batch rule live in :mod:`neurolens_lightning.scanner_fused`).

Example:
    >>> scanner = ConceptScanner(adapter, concept)               # doctest: +SKIP
    >>> scanner.run(); scores = scanner.compute()               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters import Batch, ModelAdapter, NeuronSite
from neurolens_lightning.concepts import Concept, Example
from neurolens_lightning.errors import NeuroLensError, ProbeError
from neurolens_lightning.hooks import capture, eval_mode, intervene
from neurolens_lightning.metrics import Consistency, Importance, MeanActivation, Selectivity, TopActivations
from neurolens_lightning.probe_head import ProbeHead, fit_probe_head
from neurolens_lightning.functional.selectivity import d_confidence_interval, layer_scaled_d, layer_variance_floor
from neurolens_lightning.ranking import ROLE_CANDIDATE, ROLE_SUPPRESSOR, bh_qvalues, composite_score, neuron_roles, rank_order
from neurolens_lightning.scanner_fused import FusedPass, chunks as _chunks


@dataclass
class NeuronScores:
    """Flat per-neuron scores over every scanned neuron (``layer[i]``, ``index[i]``)."""

    layer: torch.Tensor
    index: torch.Tensor
    selectivity: torch.Tensor
    selectivity_p: torch.Tensor
    selectivity_q: torch.Tensor
    selectivity_layer: torch.Tensor
    selectivity_ci_low: torch.Tensor
    selectivity_ci_high: torch.Tensor
    role: torch.Tensor
    consistency: torch.Tensor
    group_d: torch.Tensor
    importance: torch.Tensor | None
    importance_zero: torch.Tensor | None
    importance_mean: torch.Tensor | None
    mean_activation: torch.Tensor
    mean_pos: torch.Tensor
    mean_neg: torch.Tensor
    score: torch.Tensor
    order: torch.Tensor
    top_values: torch.Tensor
    top_example_ids: torch.Tensor
    top_positions: torch.Tensor
    n_pos: int = 0
    n_neg: int = 0
    #: per neuron, sqrt of its layer's median pooled variance: the activation spread layer-scaled d divides by
    activation_scale: torch.Tensor | None = None

    @property
    def n_candidates(self) -> int:
        return int((self.role == ROLE_CANDIDATE).sum())

    @property
    def n_suppressors(self) -> int:
        return int((self.role == ROLE_SUPPRESSOR).sum())

    def flat_index(self, layer: int, index: int) -> int:
        hit = ((self.layer == layer) & (self.index == index)).nonzero().flatten()
        if hit.numel() == 0:
            raise NeuroLensError(f"neuron {layer}:{index} was not scanned (check the layer list and unit count)")
        return int(hit[0])


def resolve_pooling(pooling: str, concept: Concept) -> tuple[str, str | None]:
    """The one pooling statistic used for every example of ``concept``, and a warning if it differs from the request.

    Concept and control examples must be pooled by the same statistic: comparing the span
    mean of marked positives with the max over tokens of unmarked negatives manufactures
    selectivity (the max is larger for every unit). ``auto`` pools by the span mean when
    *every* example marks a ``[[span]]``, else by the max over tokens for all of them (with a
    warning when the marking is mixed); ``span`` requires a span in every example.
    """
    if concept.modality != "text" or pooling not in ("auto", "span"):
        return pooling, None
    examples = list(concept.positive) + list(concept.negative)
    unmarked = [ex for ex in examples if getattr(ex, "span", None) is None]
    if not unmarked:
        return "span", None
    if pooling == "span":
        raise ProbeError(f"probe '{concept.name}': pooling 'span' needs a [[...]] concept span in every example, but "
                         f"{len(unmarked)} of {len(examples)} have none (e.g. {unmarked[0].text!r}); mark a span in "
                         "each example (positives and negatives alike), or use pooling 'max' or 'auto'")
    if len(unmarked) == len(examples):
        return "max", None
    return "max", (f"{len(examples) - len(unmarked)} of {len(examples)} examples mark a [[concept span]] and "
                   f"{len(unmarked)} do not: every example was pooled by the max over its tokens so that concept "
                   "and control examples are compared like with like; mark a span in every example (positives "
                   "and negatives) to pool by the span instead")


class _StopForward(Exception):
    """Raised by a hook once every scanned site is pooled, to skip the rest of a forward whose outputs are not used."""


class ConceptScanner(FusedPass):
    """Accumulates the three scores for one concept over the chosen layers of one model (the fused pass:
    :class:`~neurolens_lightning.scanner_fused.FusedPass`)."""

    def __init__(self, adapter: ModelAdapter, concept: Concept, layers: Sequence[int] | None = None,
                 batch_size: int = 16, importance: bool = True, baseline: str = "zero",
                 top_examples: int = 3, progress: bool = False, rank: int = 0, world_size: int = 1,
                 fdr_q: float = 0.05, min_d: float = 0.5) -> None:
        if concept.modality != adapter.modality:
            raise NeuroLensError(f"concept {concept.name!r} is a {concept.modality} probe but {adapter.name} is a "
                                 f"{adapter.modality} model; choose a matching concept or model")
        if baseline not in ("zero", "mean"):
            raise NeuroLensError(f"importance baseline must be 'zero' or 'mean', got {baseline!r}")
        if batch_size < 1:
            raise NeuroLensError(f"batch_size must be >= 1, got {batch_size}")
        self.adapter = adapter
        self.concept = concept
        self.sites: list[NeuronSite] = adapter.select_sites(layers)
        self.layers = [s.layer for s in self.sites]
        self.offsets = [0]
        for s in self.sites:
            self.offsets.append(self.offsets[-1] + s.units)
        self.num_neurons = self.offsets[-1]
        self.batch_size = batch_size
        self.use_importance = importance
        self.baseline = baseline
        self.progress = progress
        self.rank, self.world_size = rank, world_size  # this process scores examples rank, rank+W, ...
        self.fdr_q = fdr_q  # candidates: positively selective at this FDR level ...
        self.min_d = min_d  # ... with a layer-scaled d of at least this
        self.pooling, self.pooling_warning = resolve_pooling(adapter.pooling, concept)
        self.examples: list[Example] = list(concept.positive) + list(concept.negative)
        n_pos = len(concept.positive)
        self.is_positive = torch.tensor([True] * n_pos + [False] * len(concept.negative))
        self.groups = torch.tensor(concept.group_index + [-1] * len(concept.negative))
        self.num_groups = len(concept.group_names)
        device = adapter.device
        u = self.num_neurons
        self.selectivity = Selectivity(u).to(device)
        self.consistency = Consistency(u, self.num_groups).to(device)
        self.mean_activation = MeanActivation(u).to(device)
        self.top = TopActivations(u, k=top_examples).to(device)
        self.importance = Importance(u).to(device)
        self.head: ProbeHead | None = None
        self._features: list[torch.Tensor] = []
        self._feature_labels: list[torch.Tensor] = []
        self._feature_ids: list[torch.Tensor] = []  # example ids: the head sees its rows in example order
        self._fuse_checked: dict[tuple[int, ...], bool] = {}  # can_fuse()'s encoding check, by first batch
        self.last_run_fused: bool | None = None  # whether run_passes() used the fused pass
        self.fused_batches = self.split_batches = 0  # run_fused_pass(): positive batches fused / scored in two

    # ----------------------------------------------------------------- helpers
    @property
    def modules(self) -> dict[int, nn.Module]:
        return {i: s.module for i, s in enumerate(self.sites)}

    def batches(self, examples: Sequence[Any] | None = None) -> Iterator[tuple[slice, Batch]]:
        """Encoded batches of ``examples`` (default: positives then negatives), on the model's device."""
        items = self.examples if examples is None else examples
        for sl in _chunks(len(items), self.batch_size):
            yield sl, self.adapter.encode(items[sl]).to(self.adapter.device)

    def _progress(self, it: Any, total: int, desc: str) -> Any:
        if not self.progress:
            return it
        from neurolens_lightning.progress import track  # the one bar helper (stderr, rank 0, closes at n/n)

        return track(it, total, desc, enabled=True)

    # ----------------------------------------------------------------- activation pass
    def _pooler(self, batch: Batch) -> tuple[Any, dict[str, dict[int, torch.Tensor]]]:
        """A hook body ``on_output(key, act)`` that pools a (detached) site output into per-site stats.

        Returns the function and the dict of stats it fills (``pooled``, ``argpos``, ``act_sum``,
        ``counts``, each keyed by site). Everything stays on the device (no host syncs).
        """
        stats: dict[str, dict[int, torch.Tensor]] = {"pooled": {}, "argpos": {}, "act_sum": {}, "counts": {}}
        pm = batch.position_mask

        device = batch.device

        def on_output(key: Any, act: torch.Tensor) -> None:
            act = act.to(device)  # a model dispatched over devices: statistics are gathered on the input's
            view = self.adapter.site_view(act)
            stats["pooled"][key], stats["argpos"][key] = self.adapter.pool(act, batch, self.pooling)
            if pm is not None:
                stats["act_sum"][key] = (view * pm.unsqueeze(-1)).sum((0, 1))
                stats["counts"][key] = pm.sum().expand(view.shape[2])
            else:
                stats["act_sum"][key] = view.sum((0, 1))
                stats["counts"][key] = torch.full((view.shape[2],), view.shape[0] * view.shape[1], device=view.device)

        return on_output, stats

    @torch.no_grad()
    def _activation_forward(self, batch: Batch, stop_early: bool = False
                            ) -> tuple[Any, dict[str, dict[int, torch.Tensor]]]:
        """No-grad forward of one batch with every site pooled in its hook: ``(outputs, stats)``.

        ``stop_early``: abandon the forward as soon as every scanned site has been pooled (the
        layers above the deepest site and the output head are not run; ``outputs`` is then
        None). Only for callers that need the activations alone.
        """
        on_output, stats = self._pooler(batch)
        pooled, n_sites = stats["pooled"], len(self.sites)

        def hook(key: Any, act: torch.Tensor) -> None:
            on_output(key, act)
            if stop_early and len(pooled) == n_sites:
                raise _StopForward

        outputs = None
        with eval_mode(self.adapter.model), capture(self.modules, on_output=hook):
            try:
                outputs = self.adapter.forward(batch)
            except _StopForward:
                pass
        return outputs, stats

    @torch.no_grad()
    def _update_activation_metrics(self, batch: Batch, outputs: Any, stats: dict[str, dict[int, torch.Tensor]],
                                   is_positive: torch.Tensor, groups: torch.Tensor, example_ids: torch.Tensor) -> None:
        """Selectivity, Consistency, MeanActivation, TopActivations (``example_ids``: global example indices) and,
        for models without an output head, the probe head's features, from one batch's pooled stats."""
        keys = range(len(self.sites))
        acts = torch.cat([stats["pooled"][k] for k in keys], dim=1)
        device = acts.device
        is_positive, groups, example_ids = is_positive.to(device), groups.to(device), example_ids.to(device)
        self.selectivity.update(acts, is_positive)
        self.consistency.update(acts, groups)
        self.mean_activation.update(torch.cat([stats["act_sum"][k] for k in keys]),
                                    torch.cat([stats["counts"][k] for k in keys]))
        self.top.update(acts, example_ids, torch.cat([stats["argpos"][k] for k in keys], dim=1))
        if not self.adapter.has_output_head:  # the probe head's features (importance and ablation need y)
            self._features.append(self.adapter.features(batch, outputs).detach().float())
            self._feature_labels.append(is_positive.float())
            self._feature_ids.append(example_ids.detach())

    @torch.no_grad()
    def activation_step(self, batch: Batch, is_positive: torch.Tensor, groups: torch.Tensor,
                        example_ids: torch.Tensor) -> Any:
        """Forward one batch, pool every site and update the activation metrics. Returns the model outputs."""
        outputs, stats = self._activation_forward(batch)
        self._update_activation_metrics(batch, outputs, stats, is_positive, groups, example_ids)
        return outputs

    def _shard(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world_size))

    def run_activation_pass(self) -> None:
        mine = self._shard(len(self.examples))
        total = (len(mine) + self.batch_size - 1) // self.batch_size
        for sl in self._progress(_chunks(len(mine), self.batch_size), total, f"activations [{self.concept.name}]"):
            ids = torch.tensor(mine[sl], dtype=torch.long)
            batch = self.adapter.encode([self.examples[i] for i in mine[sl]]).to(self.adapter.device)
            self.activation_step(batch, self.is_positive[ids], self.groups[ids], ids)

    # ----------------------------------------------------------------- probe head
    def fit_head(self, gather: Any = None) -> ProbeHead | None:
        """Fit the probe head on the activation pass's features (``gather`` concatenates them across ranks)."""
        if self.adapter.has_output_head:
            return self.head
        if not self._features:
            return self.head
        feats = torch.cat(self._features)
        labels = torch.cat(self._feature_labels)
        ids = torch.cat(self._feature_ids) if len(self._feature_ids) == len(self._features) else None
        if gather is not None:
            feats, labels = gather(feats), gather(labels.unsqueeze(1)).squeeze(1)
            ids = None if ids is None else gather(ids.unsqueeze(1)).squeeze(1)
        if ids is not None:  # example order, whatever the sharding: the head's held-out split depends on it
            order = torch.argsort(ids)
            feats, labels = feats[order], labels[order]
        self.head = fit_probe_head(feats, labels)
        self._features, self._feature_labels, self._feature_ids = [], [], []
        return self.head

    # ----------------------------------------------------------------- importance pass
    @property
    def uses_tasks(self) -> bool:
        """y is measured on the probe's tasks when the model has an output head that can score them."""
        return bool(self.concept.tasks) and self.adapter.has_output_head

    def confidence_inputs(self) -> list[Any]:
        return list(self.concept.tasks) if self.uses_tasks else list(self.concept.positive)

    def encode_confidence(self, items: Sequence[Any], tasks: bool | None = None) -> Batch:
        """Encode confidence inputs: as tasks (default: when :attr:`uses_tasks`), else as examples."""
        if self.uses_tasks if tasks is None else tasks:
            return self.adapter.encode_confidence(None, items)
        return self.adapter.encode_confidence(items, None)

    def _grad_acts(self, batch: Batch, on_output: Any = None) -> tuple[Any, torch.Tensor, dict[int, torch.Tensor],
                                                                        tuple[torch.Tensor | None, ...]]:
        """One forward + ``torch.autograd.grad`` of ``y.sum()`` w.r.t. every site's output.

        ``on_output(key, act)`` (optional) also sees each site output, detached, as it is
        produced (the fused pass pools it there). Returns ``(outputs, y, acts, grads)``; no
        parameter ``.grad`` is touched, the model's modes are restored and the hooks removed
        (also on exceptions).
        """
        acts: dict[int, torch.Tensor] = {}

        def keep(key: Any, out: torch.Tensor) -> torch.Tensor:
            if on_output is not None:
                with torch.no_grad():
                    on_output(key, out.detach())
            if not out.requires_grad:  # frozen model: start the graph here; values are unchanged
                out = out.detach().requires_grad_(True)
            acts[key] = out
            return out

        with eval_mode(self.adapter.model), torch.enable_grad(), intervene(self.modules, keep):
            outputs = self.adapter.forward(batch)
            y = self.adapter.confidence(batch, outputs, self.head)
            grads = torch.autograd.grad(y.sum(), [acts[k] for k in range(len(self.sites))], allow_unused=True)
        return outputs, y, acts, grads

    @torch.no_grad()
    def _update_importance(self, batch: Batch, acts: dict[int, torch.Tensor],
                           grads: Sequence[torch.Tensor | None]) -> None:
        attn = batch.inputs.get("attention_mask")
        ag_parts, g_parts = [], []
        for k, g in zip(range(len(self.sites)), grads):
            a = self.adapter.site_view(acts[k].detach().to(batch.device))
            g = torch.zeros_like(a) if g is None else self.adapter.site_view(g.to(batch.device))
            if attn is not None:
                g = g * attn.unsqueeze(-1).to(g.dtype)
            ag_parts.append((a * g).sum(1))
            g_parts.append(g.sum(1))
        self.importance.update(torch.cat(ag_parts, 1), torch.cat(g_parts, 1))

    def importance_step(self, batch: Batch) -> torch.Tensor:
        """One forward + backward: per-example sum over positions of a*dy/da and dy/da for every neuron.

        Gradients are taken with ``torch.autograd.grad`` w.r.t. the activations only, so no
        parameter ``.grad`` is touched. Returns y ``[B]`` (detached).
        """
        _, y, acts, grads = self._grad_acts(batch)
        self._update_importance(batch, acts, grads)
        return y.detach()

    def run_importance_pass(self, gather: Any = None) -> None:
        self.fit_head(gather=gather)
        all_items = self.confidence_inputs()
        items = [all_items[i] for i in self._shard(len(all_items))]
        total = (len(items) + self.batch_size - 1) // self.batch_size
        for sl in self._progress(_chunks(len(items), self.batch_size), total, f"importance [{self.concept.name}]"):
            self.importance_step(self.encode_confidence(items[sl]).to(self.adapter.device))

    def run_passes(self, gather: Any = None) -> bool:
        """Every score's accumulation for this rank: the fused pass when :meth:`can_fuse`, else the activation
        pass then (if importance is on) the importance pass (``gather``: see :meth:`fit_head`).

        Returns whether the fused pass ran (also kept in ``last_run_fused``).
        """
        fused = self.can_fuse()
        if fused:
            self.run_fused_pass()
        else:
            self.run_activation_pass()
            if self.use_importance:
                self.run_importance_pass(gather=gather)
        self.last_run_fused = fused
        return fused

    def run(self) -> "ConceptScanner":
        self.run_passes()
        return self

    # ----------------------------------------------------------------- results
    def metrics(self) -> list[Any]:
        return [self.selectivity, self.consistency, self.mean_activation, self.top, self.importance]

    def reset(self) -> None:
        """Forget everything accumulated (metrics, probe-head features, the fitted head, the fused-pass counters)."""
        for m in self.metrics():
            m.reset()
        self.head = None
        self._features, self._feature_labels, self._feature_ids = [], [], []
        self.fused_batches = self.split_batches = 0

    def compute(self) -> NeuronScores:
        """Compute (and, under DDP, sync) every score and rank the neurons."""
        sel = self.selectivity.compute()
        cons = self.consistency.compute()
        mean_act = self.mean_activation.compute()
        top = self.top.compute()
        imp = imp0 = impm = None
        if self.use_importance:
            r = self.importance.compute(baseline=mean_act)
            imp0, impm = r["zero"], r["mean"]
            imp = imp0 if self.baseline == "zero" else impm
        d = sel["d"]
        for name, t in (("selectivity", d), ("consistency", cons["consistency"])):
            if not torch.isfinite(t).all():
                raise NeuroLensError(f"{name} is not finite for some neurons: the model produced NaN/inf "
                                     "activations on the probe examples; check the model weights and inputs")
        layer = torch.cat([torch.full((s.units,), s.layer, dtype=torch.long) for s in self.sites])
        index = torch.cat([torch.arange(s.units) for s in self.sites])
        # from compute()'s (synced) moments: under DDP the metric's own states are this rank's only
        d_layer = layer_scaled_d(sel["mean_pos"], sel["var_pos"], sel["mean_neg"], sel["var_neg"], layer.to(d.device),
                                 self.selectivity.eps)
        n_pos, n_neg = float(sel["n_pos"]), float(sel["n_neg"])
        ci_lo, ci_hi = d_confidence_interval(d, n_pos, n_neg)
        score = composite_score(d_layer, cons["consistency"], imp)
        q = bh_qvalues(sel["p_value"])
        role = neuron_roles(q, d, d_layer, imp, fdr_q=self.fdr_q, min_d=self.min_d)
        return NeuronScores(
            layer=layer, index=index, selectivity=d.cpu(), selectivity_p=sel["p_value"].cpu(),
            selectivity_q=q.cpu(), selectivity_layer=d_layer.cpu(), selectivity_ci_low=ci_lo.cpu(),
            selectivity_ci_high=ci_hi.cpu(), role=role.cpu(), consistency=cons["consistency"].cpu(),
            group_d=cons["group_d"].cpu(), importance=None if imp is None else imp.cpu(),
            importance_zero=None if imp0 is None else imp0.cpu(), importance_mean=None if impm is None else impm.cpu(),
            mean_activation=mean_act.cpu(), mean_pos=sel["mean_pos"].cpu(), mean_neg=sel["mean_neg"].cpu(),
            score=score.cpu(), order=rank_order(score, d_layer, role).cpu(), top_values=top["values"].cpu(),
            top_example_ids=top["example_ids"].cpu(), top_positions=top["positions"].cpu(),
            n_pos=int(n_pos), n_neg=int(n_neg),
            activation_scale=layer_variance_floor(sel["var_pos"], sel["var_neg"], layer.to(d.device)).sqrt().cpu(),
        )

