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
from neurolens_lightning.settings import ScanSettings, settings_fields


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
    """Score every neuron of ``layers`` for ``concept``, rank them and (``ablate``) test the top ``top_k`` causally.

    Args:
        model: registry name (``minilm``, ``smollm2``, ``gpt2`` ...), local path or ``.gguf``, ``nn.Module`` or
            adapter. ``device``: ``None`` / ``"auto"`` = CUDA when available for a model loaded here; a user's
            module stays where it lies unless a device is given (then it is moved back afterwards).
        concept: built-in name, probe JSON path, dict or :class:`Concept`.
        site: ``"PATTERN[:input|:output]"``: neurons of a model NeuroLens does not know (a glob over
            ``named_modules()`` names; see ``adapters/sites.py``).
        cross_concept, also: also score the tested neurons on the other built-in concepts and ``also`` probes.
        settings: a :class:`~neurolens_lightning.settings.ScanSettings`: every scoring and causal-test field
            at once (its docstring defines them: ``layers``, ``top_k``, ``ablate``, ``ablation``,
            ``null_samples``, ``neurons``, ``holdout``, ``seed`` ...). The same object drives eval, the
            callback, steer and compare; a keyword argument of the same name that differs from its default
            overrides the field.

    The user's objects are left as they were, also when the scan raises: a given module's device(s) and
    train/eval modes, a given tokenizer's pad token, and the global RNG states (CPU, CUDA, numpy, random).

    Returns a :class:`ScanResult`; ``result.save(out_dir)`` writes results.json (+ report.html).
    """
    given = locals()  # the keyword arguments named like a ScanSettings field override it where not default
    s = ScanSettings.resolve(settings, {k: given[k] for k in settings_fields()}).check()
    with untouched(*user_objects(model, tokenizer)):
        t_start = time.perf_counter()
        concept_obj = load_concept(concept)
        adapter = _adapter(model, tokenizer, weights, arch, device, download, s, image_size, site)
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
                                                                     full_concept=concept_obj, progress=progress)
            result.timings["cross_concept"] = time.perf_counter() - t4
        result.timings["total"] = time.perf_counter() - t_start  # every stage above, and what runs between them
        return result


def _adapter(model: Any, tokenizer: Any, weights: str, arch: str | None, device: Any, download: bool,
             s: ScanSettings, image_size: int | None, site: str | None) -> ModelAdapter:
    """The model as an adapter (loaded here, or the user's wrapped in place)."""
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
    return load_model(model, tokenizer=tokenizer, weights=weights, arch=arch, device=device, download=download,
                      seed=s.seed, **kwargs)
