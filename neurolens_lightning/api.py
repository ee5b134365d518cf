"""The Python entry point: :func:`scan`.

Example:
    >>> import neurolens_lightning as nl
    >>> result = nl.scan(model="minilm", concept="royalty", layers=[3, 4, 5], top_k=5)  # doctest: +SKIP
    >>> result.save("reports/minilm-royalty")                                           # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from neurolens_lightning.adapters import ModelAdapter, auto_device
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.cross_concept import cross_concept_for_result
from neurolens_lightning.distributed import gather_cat
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.guards import untouched, user_objects
from neurolens_lightning.pipeline import build_result, check_for_model, make_scanner, score, test_causally
from neurolens_lightning.registry import load_model
from neurolens_lightning.results import ScanResult
from neurolens_lightning.settings import ScanSettings


def scan(
    model: "str | Path | torch.nn.Module | ModelAdapter" = "minilm",
    concept: "str | Path | Concept | dict[str, Any]" = "royalty",
    layers: Sequence[int] | None = None,
    top_k: int = 10,
    ablate: bool = False,
    *,
    tokenizer: Any = None,
    weights: str = "pretrained",
    arch: str | None = None,
    device: str | torch.device | None = None,
    download: bool = False,
    importance: bool = True,
    baseline: str = "zero",
    pooling: str | None = None,
    batch_size: int = 16,
    max_neurons: int = 500,
    fdr_q: float = 0.05,
    min_selectivity: float = 0.5,
    top_examples: int = 3,
    ablation: str = "interchange",
    null_samples: int = 50,
    neurons: Sequence[tuple[int, int]] | None = None,
    test_top_k: bool = True,
    suppressors: int = 0,
    direction: str = "importance",
    min_effect: float | None = None,
    alpha: float = 0.05,
    cross_concept: bool = False,
    also: Sequence[Any] = (),
    holdout: float = 0.5,
    seed: int = 0,
    progress: bool = False,
    image_size: int | None = None,
    site: str | None = None,
    settings: ScanSettings | None = None,
) -> ScanResult:
    """Score every neuron of ``layers`` for ``concept`` and rank them.

    Args:
        model: registry name (``minilm``, ``gpt2``, ...), local path, ``nn.Module`` or adapter.
        site: ``"PATTERN[:input|:output]"``: the neurons are the input or output (default) of the
            modules whose ``named_modules()`` names match the glob (``*`` = one path component),
            numbered 0..L-1 in model order, units in the last dimension; for a text model
            NeuroLens does not know (y: a fitted probe head; see ``adapters/sites.py``).
        concept: built-in name, probe JSON path, dict or :class:`Concept`.
        layers: layer indices (default: all).
        top_k: number of candidates (and of suppressors) reported, and ablated with
            ``ablate=True``. Only FDR-significant, positively selective neurons qualify, so a
            weak probe may have fewer, or none (the result then says so).
        ablate: validate the candidates causally against a calibrated random-neuron null. Candidates
            are then ranked on one split of the probe data and tested on the disjoint ``holdout`` split.
        ablation: the intervention: ``interchange`` (default: does the model use the neuron's
            concept-dependent activity — its pooled activation moved to a concept-absent example's),
            or ``zero`` / ``mean`` / ``resample`` (is the neuron necessary for y).
        suppressors: with ``ablate``, also test this many top suppressors (predicted to raise y when
            removed). Default 0: every tested neuron joins one Holm family, whose null must reach
            ``m / alpha`` neurons per layer, so each tested neuron costs null work.
        direction: how a named neuron's direction is chosen: ``importance`` (the sign of its
            importance; its null neurons are signed by their own importance) or ``drop`` / ``rise``.
        fdr_q: Benjamini-Hochberg level of the selectivity test.
        min_selectivity: the smallest layer-scaled d (Cohen's d with a variance floor at the
            layer's median variance) a candidate needs: near-silent units never qualify.
        neurons: ``(layer, index)`` pairs ablated and tested whatever their rank.
        test_top_k: with ``ablate``, also test the top-k candidates (and ``suppressors``) (False: only
            ``neurons``, e.g. to check a few named neurons without paying for the ranking's).
        min_effect: the smallest |Δ| that validates, in y's units (default: 0.01 nats for
            log-probabilities, 0.04 for a probe head's log-odds).
        alpha: family-wise error rate of the causal test over all tested neurons (one Holm family).
        cross_concept: also score the candidates and suppressors on every other built-in concept
            of the same modality (and the ``also`` probes): ``results.json["cross_concept"]``.
        also: extra probes (names, paths, dicts) for the cross-concept matrix (implies it).
        importance: compute gradient x activation importance (one backward pass).
        baseline: importance baseline, ``zero`` or ``mean``.
        device: where the model runs. For a registry name or a path (a model loaded here),
            ``None`` or ``"auto"`` means CUDA when available, else CPU; an explicit device
            (``"cpu"``, ``"cuda:1"``) is used as given. For a user's ``nn.Module`` or adapter,
            ``None`` or ``"auto"`` scores it on the device(s) it is already on (it is never moved);
            an explicit device moves it there for the scan and moves it back afterwards.

    The user's objects are left as they were, also when the scan raises: a given module's
    device(s) and each submodule's train/eval mode (the passes run in eval mode), a given
    tokenizer's pad token (set for padding while the scan runs), and the global RNG state of
    the CPU and of every initialized CUDA device (``weights="random"`` draws from ``seed``).

        settings: a :class:`~neurolens_lightning.settings.ScanSettings` holding the scoring and causal-test
            arguments at once (the same object drives eval, the callback, steer and compare); a keyword
            argument above that differs from its default overrides its field.

    Returns:
        a :class:`ScanResult`; ``result.save(out_dir)`` writes results.json (+ report.html).
    """
    overrides = {"layers": layers, "top_k": top_k, "ablate": ablate, "importance": importance, "baseline": baseline,
                 "pooling": pooling, "batch_size": batch_size, "max_neurons": max_neurons, "fdr_q": fdr_q,
                 "min_selectivity": min_selectivity, "top_examples": top_examples, "ablation": ablation,
                 "null_samples": null_samples, "neurons": list(neurons or []), "test_top_k": test_top_k,
                 "suppressors": suppressors, "direction": direction, "min_effect": min_effect, "alpha": alpha,
                 "holdout": holdout, "seed": seed}
    s = ScanSettings.resolve(settings, overrides).check()
    # never disturb the user's objects: the global RNGs (CPU and CUDA), and a given module's device(s),
    # train/eval modes and tokenizer pad token, are as they were when scan returns or raises
    with untouched(*user_objects(model, tokenizer)):
        t_start = time.perf_counter()
        concept_obj = load_concept(concept)
        kwargs: dict[str, Any] = {}
        if s.pooling:
            kwargs["pooling"] = s.pooling
        if image_size:
            kwargs["image_size"] = image_size
        if site:
            if isinstance(model, ModelAdapter):
                raise NeuroLensError("site= names where a model's neurons are; pass the model, not an adapter")
            kwargs["site"] = site
        if isinstance(model, ModelAdapter) and not (device is None or str(device) == "auto"):
            model.model.to(auto_device(device))  # load_model returns an adapter as it is
        adapter = load_model(model, tokenizer=tokenizer, weights=weights, arch=arch, device=device,
                             download=download, seed=s.seed, **kwargs)
        check_for_model(adapter, s)  # before any work
        # inside a distributed launch (torchrun, a Lightning DDP process) every rank scores its share of the
        # examples and the metrics sync; the ablation shares its jobs the same way
        run = make_scanner(adapter, concept_obj, s, progress=progress)
        run.timings["load_model"] = time.perf_counter() - t_start  # the probe, the model and the checks
        score(run, gather=gather_cat)
        result = build_result(run, weights=weights if not isinstance(model, torch.nn.Module) else "given")
        if s.tests_causally:
            test_causally(result, run, progress=progress)
        if cross_concept or also:

            t4 = time.perf_counter()
            result.extra["cross_concept"] = cross_concept_for_result(result, adapter, also, batch_size=s.batch_size,
                                                                     full_concept=concept_obj)
            result.timings["cross_concept"] = time.perf_counter() - t4
        result.timings["total"] = time.perf_counter() - t_start  # every stage above, and what runs between them
        return result

