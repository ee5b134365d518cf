"""The one scoring pipeline behind ``scan()``, the callback, ``ProbeModule`` / ``neurolens eval`` and ``compare``.

    concept --settings.split--> ranking part --ConceptScanner passes--> scores --build_result--> ScanResult
            --test_causally (held-out part)--> verdicts --add_cross_concept--> other concepts' scores

Every entry point runs these steps with one :class:`~neurolens_lightning.settings.ScanSettings`; they differ only in
who drives the passes (a plain loop here, Lightning's validation loop in ``ProbeModule``) and in what they do
with the result (save, log, track over training).

Example:
    >>> from neurolens_lightning.registry import load_model                  # doctest: +SKIP
    >>> adapter = load_model("minilm")                                       # doctest: +SKIP
    >>> result = run_scan(adapter, load_concept("royalty"), ScanSettings(ablate=True))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from neurolens_lightning.ablation import check_ablation_args, run_ablation
from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import Concept, split_text, without_duplicates
from neurolens_lightning.distributed import dist_context, gather_cat
from neurolens_lightning.io import rounded
from neurolens_lightning.results import ScanResult
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.settings import ScanSettings

__all__ = ["Scoring", "check_for_model", "make_scanner", "score", "build_result", "test_causally", "run_scan"]

SAME_EXAMPLES = "the same examples that ranked the neurons (no held-out split: holdout=0)"


@dataclass
class Scoring:
    """One scoring run in progress: the ranking part of the probe, the part kept for the causal test, the
    scanner whose passes ran (or run) on it, and the stage timings."""

    adapter: ModelAdapter
    concept: Concept
    rank_concept: Concept
    held_out: Concept | None
    scanner: ConceptScanner
    settings: ScanSettings
    timings: dict[str, float] = field(default_factory=dict)
    #: what the probe's reading and encoding changed (duplicates dropped, long examples cut), for the result
    warnings: list[str] = field(default_factory=list)


def check_for_model(adapter: ModelAdapter, settings: ScanSettings) -> None:
    """The checks that need the model (layers in range, named neurons inside them), before any work."""
    adapter.select_sites(settings.layers)
    if settings.tests_causally:
        check_ablation_args(adapter, settings.layers, settings.ablation, settings.null_samples,
                            settings.named_neurons())


def make_scanner(adapter: ModelAdapter, concept: Concept, settings: ScanSettings, *, rank: int | None = None,
                 world: int | None = None, progress: bool = False) -> Scoring:
    """Split the probe as ``settings`` says and build the scanner of its ranking part (no pass runs yet)."""
    if rank is None or world is None:
        rank, world = dist_context()
    concept = without_duplicates(concept)  # a Concept built in code (a loaded probe has none left)
    warnings = list(concept.warnings) + adapter.input_warnings(list(concept.positive) + list(concept.negative),
                                                               concept.tasks)
    rank_concept, held_out = settings.split(concept)
    if settings.pooling:  # the adapter is NeuroLens' wrapper (never the user's module): it carries the pooling
        adapter.pooling = settings.pooling
    scanner = ConceptScanner(adapter, rank_concept, layers=settings.layers, batch_size=settings.batch_size,
                             importance=settings.importance, baseline=settings.baseline,
                             top_examples=settings.top_examples, progress=progress, fdr_q=settings.fdr_q,
                             min_d=settings.min_selectivity, rank=rank, world_size=world)
    return Scoring(adapter, concept, rank_concept, held_out, scanner, settings, warnings=warnings)


def score(run: Scoring, gather: Callable[[Any], Any] | None = gather_cat) -> Scoring:
    """Run the scanner's passes in a plain loop: one fused forward + backward where the model allows it,
    else the activation pass and (with ``importance``) the importance pass."""
    sc, t0 = run.scanner, time.perf_counter()
    if sc.can_fuse():  # activations and importance of the positives from one forward + backward
        sc.run_fused_pass()
        run.timings["scoring_pass"] = time.perf_counter() - t0
    else:
        sc.run_activation_pass()
        t1 = time.perf_counter()
        run.timings["activation_pass"] = t1 - t0
        if run.settings.importance:
            sc.run_importance_pass(gather=gather)
            run.timings["importance_pass"] = time.perf_counter() - t1
    return run


def build_result(run: Scoring, weights: str = "pretrained", **settings_extra: Any) -> ScanResult:
    """Compute the statistics (a collective under DDP) and the ranked :class:`ScanResult`."""
    sc, s, t = run.scanner, run.settings, time.perf_counter()
    scores = sc.compute()
    run.timings["statistics"] = time.perf_counter() - t
    head, warnings = None, [sc.pooling_warning] if sc.pooling_warning else []
    if sc.head is not None:
        head = {"kind": "logistic probe on mean-pooled last hidden state",
                "train_accuracy": rounded(sc.head.train_accuracy, 4),
                "heldout_accuracy": rounded(sc.head.heldout_accuracy, 4)}
        if head["heldout_accuracy"] is None:  # a class with < 4 examples: every example trained the head
            warnings.append("the confidence head's held-out accuracy could not be measured (saved as null): a class "
                            "has fewer than 4 examples, so every example trained the head - add examples to check it")
    record = s.record(sc.pooling, str(run.adapter.device),
                      split=split_text(run.rank_concept, run.held_out, s.tests_causally), **settings_extra)
    return ScanResult(model={**run.adapter.describe(), "weights": weights}, concept=run.rank_concept,
                      layers=sc.layers, units=[site.units for site in sc.sites], scores=scores, top_k=s.top_k,
                      max_neurons=s.max_neurons, fdr_q=s.fdr_q, min_selectivity=s.min_selectivity, head=head,
                      settings=record, timings=run.timings, warnings=run.warnings + warnings)


def test_causally(result: ScanResult, run: Scoring, progress: bool = False) -> ScanResult:
    """The causal test of ``settings`` on the held-out part (plain loop; ``AblationModule`` is its Lightning form)."""
    s, t = run.settings, time.perf_counter()
    run_ablation(result, run.adapter, run.scanner, run.held_out or run.concept, method=s.ablation,
                 null_samples=s.null_samples, neurons=s.named_neurons(), test_top_k=s.test_top_k, seed=s.seed,
                 direction=s.direction, suppressors=s.suppressors, batch_size=s.batch_size, progress=progress,
                 min_effect=s.min_effect, alpha=s.alpha, split=None if run.held_out is not None else SAME_EXAMPLES)
    result.timings["ablation"] = time.perf_counter() - t
    return result


def run_scan(adapter: ModelAdapter, concept: Concept, settings: ScanSettings, *, weights: str = "pretrained",
             progress: bool = False, gather: Callable[[Any], Any] | None = gather_cat,
             rank: int | None = None, world: int | None = None) -> tuple[ScanResult, Scoring]:
    """Score ``concept`` in ``adapter`` and, when the settings ask, test the candidates causally."""
    run = score(make_scanner(adapter, concept, settings, rank=rank, world=world, progress=progress), gather=gather)
    result = build_result(run, weights=weights)
    if settings.tests_causally:
        test_causally(result, run, progress=progress)
    return result, run
