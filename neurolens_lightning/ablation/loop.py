"""The ablation loop: held-out inputs in chunks, the first pass, the adaptive null rounds, the statistics.

:func:`run_ablation` is the plain-loop form of :class:`neurolens_lightning.modules.AblationModule`'s
validation loop; both plan (:func:`~neurolens_lightning.ablation.plan.plan_ablation`), encode the same chunks
with the same random streams (:func:`ablation_inputs`, :func:`encode_chunk`, :func:`chunk_generator`) and
end in :func:`finish_ablation`: while a tested neuron's sequential p is not settled, another round of random
null neurons (or random joint sets) is ablated on the concept inputs, reusing the first pass's clean forwards;
then :func:`~neurolens_lightning.ablation.statistics.summarize_ablation` fills ``result.ablation``.

Example:
    >>> result = scan("minilm", "royalty", ablate=True, top_k=5)     # doctest: +SKIP
    >>> result.ablation_summary["joint_beyond_null"]                  # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from neurolens_lightning.ablation.plan import DEFAULT_METHOD, AblationPlan, plan_ablation
from neurolens_lightning.ablation.runner import AblationRunner, make_runner
from neurolens_lightning.ablation.statistics import SummarySettings, empty_summary, summarize_ablation
from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.concepts import Concept, ImageTask, TextExample, TextTask
from neurolens_lightning.distributed import gather_cat
from neurolens_lightning.progress import note, progress_bar


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


def held_out_split_text(n_concept: int, n_control: int) -> str:
    """How ``ablation_summary["split"]`` names the held-out inputs the ablation ran on."""
    return (f"the held-out split ({n_concept} concept and {n_control} control inputs, disjoint from the examples "
            "that ranked the neurons)")


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
        announce_ablation(plan, chunks, progress)
        run_chunks(runner, adapter, scanner, chunks, seed, progress=progress, desc=f"ablation round 1 [{method}]")
    finish_ablation(result, plan, runner, adapter, scanner, chunks, min_effect=min_effect, alpha=alpha,
                    n_boot=n_boot, seed=seed, split=split, replicas=replicas, reuse=reuse, progress=progress)
    return result


def announce_ablation(plan: AblationPlan, chunks: Sequence[tuple[str, list[Any]]], progress: bool) -> None:
    """Say up front (with ``progress``) what the ablation runs: the first round's jobs and the bound on the null
    rounds that may follow (:meth:`AblationPlan.null_bound`), so its bar's ETA is not mistaken for the whole."""
    rounds, jobs = plan.null_bound()
    n_concept = sum(k == "concept" for k, _ in chunks)
    then = (f"then, while a p-value is not settled, up to {rounds} more null round{'s' if rounds != 1 else ''} "
            f"(at most {jobs} more random neurons/sets in all, on the {n_concept} concept input "
            f"chunk{'s' if n_concept != 1 else ''} only)" if rounds else "no further null rounds can follow")
    note(f"ablation: round 1 = {len(plan.jobs)} jobs ({len(plan.tested)} tested neurons, the others random "
         f"neurons/sets) on {len(chunks)} input chunks; {then}", progress)


def run_chunks(runner: AblationRunner, adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
               seed: int, kinds: Sequence[str] = ("concept", "control"), progress: bool = False, desc: str = "") -> None:
    """Feed every chunk of ``kinds`` to ``runner`` (interchange sources drawn from the same seeded stream each time;
    chunks of other kinds are skipped, not encoded). The bar counts this rank's ablated forwards, so a chunk with
    many jobs weighs what it costs."""
    todo = [i for i, (kind, _) in enumerate(chunks) if kind in kinds]
    cost = {kind: max(1, len(runner.groups(kind))) for kind in kinds}
    with progress_bar(sum(cost[chunks[i][0]] for i in todo), desc, progress, unit="forward") as bar:
        for i in todo:
            kind, items = chunks[i]
            batch, src = encode_chunk(adapter, scanner, kind, items, chunk_generator(seed, i))
            runner.step(kind, batch, src, key=i)
            bar.update(cost[kind])


@dataclass(frozen=True)
class RoundOptions:
    """How the null rounds run the chunks: the seed of their random streams, ablations per forward
    (``replicas``), block re-entry (``reuse``) and progress bars."""

    seed: int = 0
    replicas: int = 8
    reuse: bool = True
    progress: bool = False


def finish_ablation(result: Any, plan: AblationPlan, runner: AblationRunner | None, adapter: ModelAdapter,
                    scanner: Any, chunks: Sequence[tuple[str, list[Any]]], min_effect: float | None = None,
                    alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, split: str | None = None,
                    replicas: int = 8, reuse: bool = True, progress: bool = False) -> None:
    """After the first pass: grow the null where a p-value is not settled, then the statistics."""
    n_concept = sum(len(c) for k, c in chunks if k == "concept")
    n_control = sum(len(c) for k, c in chunks if k == "control")
    min_effect = default_min_effect(scanner) if min_effect is None else min_effect
    split = split or held_out_split_text(n_concept, n_control)
    settings = SummarySettings(min_effect, alpha, n_boot, seed, split, n_concept, n_control, y_description(scanner))
    if runner is None:
        result.ablation = {}
        result.ablation_summary = empty_summary(plan, settings)
    else:
        delta, rounds = grow_null(plan, runner, adapter, scanner, chunks, RoundOptions(seed, replicas, reuse, progress))
        runner.clean_cache.clear()  # the clean forwards were only needed for the rounds
        summarize_ablation(result, runner, plan, delta, **asdict(settings), null_rounds=rounds + 1)
    result.warnings += [w for w in result.ablation_summary["warnings"] if w not in result.warnings]


def grow_null(plan: AblationPlan, runner: AblationRunner, adapter: ModelAdapter, scanner: Any,
              chunks: Sequence[tuple[str, list[Any]]], opts: RoundOptions) -> tuple[np.ndarray, int]:
    """Ablate more null neurons / random joint sets on the concept inputs while a p-value is not settled
    (:meth:`AblationPlan.more_null`); returns the mean Δ of every job of ``plan.jobs`` and the number of
    extra rounds."""
    delta = runner.mean_deltas("concept").numpy()
    rounds = 0
    most = 1 + plan.null_bound()[0]  # the first round and at most this many in all
    while True:
        new = plan.more_null(delta)
        if not new:
            break
        rounds += 1
        extra = AblationRunner(adapter, scanner.sites, new, method=plan.method,
                               offsets=runner.offsets, head=runner.head, replicas=opts.replicas, control_jobs=[],
                               reuse=opts.reuse, row_jobs=[], clean_cache=runner.clean_cache,
                               control_source=runner.control_source, pooling=runner.pooling, seed=runner.seed)
        run_chunks(extra, adapter, scanner, chunks, opts.seed, kinds=("concept",), progress=opts.progress,
                   desc=f"null round {rounds + 1} of at most {most} [{len(new)} more random neurons/sets]")
        delta = np.concatenate([delta, extra.mean_deltas("concept").numpy()])
    return delta, rounds
