"""Cross-architecture comparison: the same concept probe on several models, aligned by depth.

    neurolens compare --models bert-base-uncased roberta-base --concept negation
    neurolens compare --models minilm minilm:random --concept negation --out reports/demo-compare
    neurolens compare --config configs/compare.yaml models=[minilm,minilm:random] top_k=5

Each model is scanned with :func:`~neurolens_lightning.api.scan` (same probe, same settings);
its own ``results.json`` + ``report.html`` go to ``<out>/models/<label>/``, and the comparison
to ``<out>/comparison.json`` + ``<out>/report.html``. This module holds the comparison itself
(model specs, alignment and divergence, orchestration, atomic writing); the page is rendered by
:mod:`neurolens_lightning.report.compare_page` and the ``neurolens compare`` command is wired in
:mod:`neurolens_lightning.cli`.

**Model specs**: ``NAME`` or ``NAME:WEIGHTS`` (``pretrained`` | ``random``; ``minilm:random`` = MiniLM's
architecture, random weights); the spec is the label (a repeat gets `` #2``). **Alignment**: layer ℓ of L sits
at relative depth ℓ/(L−1). **Encoding distribution**: per layer the fraction ``f_ℓ`` of its neurons that are
FDR-significant and positively selective, interpolated linearly in depth (constant beyond the ends) at the grid
``x_g = g/(G−1)`` and normalised to sum to 1 (dividing by the width first keeps wide layers from dominating).
**Divergence**: Jensen–Shannon in bits between two grid distributions (0 = same profile, 1 = no overlap); a
model without a positively selective neuron has none (``null``). The exact wording is in the definitions below.

Example:
    >>> comp = compare(["minilm", "minilm:random"], concept="negation", out="reports/demo")  # doctest: +SKIP
    >>> comp["divergence"]["matrix"][0][1]                                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neurolens_lightning.catalog import model_facts
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.io import Output, check_out, publish, rounded, slug
from neurolens_lightning.settings import ScanSettings

__all__ = [
    "ModelSpec", "parse_model_spec", "relative_depths", "layer_distribution", "resample_distribution",
    "model_entry", "build_comparison", "compare", "write_comparison", "SCHEMA_VERSION", "DISTRIBUTION_DEFINITION",
    "RESAMPLING_DEFINITION",
]

SCHEMA_VERSION = 1
WEIGHT_CHOICES = ("pretrained", "random")

DISTRIBUTION_DEFINITION = (
    "per layer, the encoding fraction f = (FDR-significant, positively selective neurons) / (neurons in the "
    "layer); share = f / (sum of f over the model's layers)")
RESAMPLING_DEFINITION = (
    "f linearly interpolated in relative depth l/(L-1) between the model's layers (constant beyond its first and "
    "last layer), evaluated at the grid points g/(G-1), g = 0..G-1, and normalised to sum to 1")
DIVERGENCE_DEFINITION = ("Jensen-Shannon divergence, base 2 (bits, in [0, 1]) between the grid distributions: "
                         "JS(P,Q) = KL(P||M)/2 + KL(Q||M)/2 with M = (P+Q)/2")


# ---------------------------------------------------------------------------- specs
@dataclass
class ModelSpec:
    """One model of a comparison.

    Args:
        label: the name shown in the report and comparison.json (unique within a comparison).
        model: a registry name / local path, an ``nn.Module`` or a ``ModelAdapter``.
        weights: ``pretrained`` or ``random`` (for registry names).
        tokenizer: a tokenizer object or directory (for modules and random-weight models).
    """

    label: str
    model: Any
    weights: str = "pretrained"
    tokenizer: Any = None


def parse_model_spec(spec: str, default_weights: str = "pretrained") -> ModelSpec:
    """``NAME`` or ``NAME:WEIGHTS`` (WEIGHTS ``pretrained`` | ``random``) as a :class:`ModelSpec`.

    Only a trailing ``:pretrained`` / ``:random`` is a weights suffix, so paths with colons stay intact.

    Example:
        >>> parse_model_spec("minilm:random")
        ModelSpec(label='minilm:random', model='minilm', weights='random', tokenizer=None)
        >>> parse_model_spec("minilm").weights
        'pretrained'
    """
    if default_weights not in WEIGHT_CHOICES:
        raise NeuroLensError(f"weights must be one of {WEIGHT_CHOICES}, got {default_weights!r}")
    text = str(spec).strip()
    if not text:
        raise NeuroLensError("empty model spec: use NAME or NAME:WEIGHTS (e.g. minilm:random)")
    name, weights = text, default_weights
    head, sep, tail = text.rpartition(":")
    if sep and tail in WEIGHT_CHOICES and head:
        name, weights = head, tail
    elif sep and head and re.fullmatch(r"[A-Za-z]+", tail) and not Path(text).exists() and len(head) > 1:
        raise NeuroLensError(f"model spec {text!r}: unknown weights {tail!r}; use NAME or NAME:WEIGHTS with WEIGHTS "
                             f"one of {', '.join(WEIGHT_CHOICES)} (e.g. minilm:random)")
    label = name if weights == "pretrained" else f"{name}:{weights}"
    return ModelSpec(label=label, model=name, weights=weights)


def _unique_labels(specs: list[ModelSpec]) -> None:
    seen: dict[str, int] = {}
    for s in specs:
        seen[s.label] = seen.get(s.label, 0) + 1
        if seen[s.label] > 1:
            s.label = f"{s.label} #{seen[s.label]}"


def _static_modality(spec: ModelSpec) -> str | None:
    """The modality of a string spec without loading it (None: decided after loading).

    Raises :class:`ModelLoadError` for a name that is neither registered nor an existing path.
    """
    if not isinstance(spec.model, (str, Path)):
        return None
    return model_facts(spec.model, where="in --models").modality


def _check_modalities(labels: Sequence[str], modalities: Sequence[str | None], concept: Any) -> None:
    known = [(l, m) for l, m in zip(labels, modalities) if m is not None]
    kinds = sorted({m for _, m in known})
    if len(kinds) > 1:
        desc = ", ".join(f"{l} ({m})" for l, m in known)
        raise NeuroLensError(f"models must share a modality to be compared on one probe, got {desc}; compare text "
                             "models with text models and image models with image models")
    if kinds and kinds[0] != concept.modality:
        raise NeuroLensError(f"concept {concept.name!r} is a {concept.modality} probe but the models are {kinds[0]} "
                             "models; choose a matching concept")


# ---------------------------------------------------------------------------- pure functions
def relative_depths(n_layers: int, layers: Sequence[int] | None = None) -> list[float]:
    """Relative depth ℓ/(L−1) of ``layers`` (default all) of an ``n_layers``-layer model; 0 when L = 1.

    Example:
        >>> relative_depths(4)
        [0.0, 0.3333333333333333, 0.6666666666666666, 1.0]
        >>> relative_depths(1)
        [0.0]
    """
    n_layers = int(n_layers)
    if n_layers < 1:
        raise NeuroLensError(f"a model needs at least one layer, got n_layers={n_layers}")
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    return [l / (n_layers - 1) if n_layers > 1 else 0.0 for l in layers]


def layer_distribution(n_significant_positive: Sequence[float], n_units: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(fraction, share)`` per layer: f = n_sig⁺/n_units and share = f/Σf (all zeros when Σf = 0).

    Example:
        >>> f, s = layer_distribution([10, 30], [100, 100])
        >>> f.round(6).tolist(), s.round(6).tolist()
        ([0.1, 0.3], [0.25, 0.75])
    """
    pos = np.asarray(n_significant_positive, dtype=np.float64)
    units = np.asarray(n_units, dtype=np.float64)
    if pos.shape != units.shape:
        raise NeuroLensError(f"per-layer counts and widths differ in length: {pos.shape} vs {units.shape}")
    frac = np.where(units > 0, pos / np.where(units > 0, units, 1.0), 0.0)
    total = frac.sum()
    share = frac / total if total > 0 else np.zeros_like(frac)
    return frac, share


def resample_distribution(rel_depth: Sequence[float], profile: Sequence[float], grid: int = 21) -> np.ndarray | None:
    """The profile linearly interpolated onto ``grid`` points g/(G−1) and normalised to sum 1.

    Constant beyond the first/last given depth (``numpy.interp``); a single layer gives a
    uniform distribution. None when the profile is zero everywhere (no distribution).

    Example:
        >>> resample_distribution([0.0, 1.0], [0.0, 0.1], grid=4).round(4).tolist()
        [0.0, 0.1667, 0.3333, 0.5]
    """
    if grid < 2:
        raise NeuroLensError(f"grid must have at least 2 points, got {grid}")
    x = np.asarray(rel_depth, dtype=np.float64)
    y = np.asarray(profile, dtype=np.float64)
    if x.size == 0 or x.shape != y.shape:
        raise NeuroLensError("resample_distribution needs one profile value per relative depth")
    if np.any(y < 0) or not np.all(np.isfinite(y)):
        raise NeuroLensError("the encoding profile must be finite and non-negative")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    pts = np.linspace(0.0, 1.0, grid)
    vals = np.interp(pts, x, y)
    total = vals.sum()
    if total <= 0:
        return None
    return vals / total


def _neuron_summary(n: Mapping[str, Any], n_layers: int) -> dict[str, Any]:
    layer = int(n.get("layer", 0))
    rec: dict[str, Any] = {
        "rank": n.get("rank"), "layer": layer, "index": n.get("index"), "role": n.get("role"),
        "rel_depth": rounded(relative_depths(n_layers, [layer])[0]) if 0 <= layer < max(n_layers, 1) else None,
        "selectivity": n.get("selectivity"), "selectivity_q": n.get("selectivity_q"),
        "consistency": n.get("consistency"), "importance": n.get("importance"), "score": n.get("score"),
    }
    ex = next((e for e in n.get("top_examples") or [] if isinstance(e, dict)), None)
    if ex is not None:
        rec["top_example"] = ex.get("text") if ex.get("text") is not None else ex.get("image")
        rec["top_example_positive"] = ex.get("positive")
    ab = n.get("ablation")
    if isinstance(ab, dict):
        rec["ablation"] = {k: ab.get(k) for k in ("method", "delta", "ci_low", "ci_high", "delta_control", "p_value",
                                                  "p_holm", "causal", "validated", "verdict")}
    return rec


def model_entry(data: Mapping[str, Any], label: str | None = None, top_k: int | None = None,
                grid: int = 21) -> dict[str, Any]:
    """One model's block of ``comparison.json`` from its ``results.json`` dict.

    Needs ``model_info.n_layers`` (else the largest scanned layer + 1), ``layer_summary``
    (``layer``, ``n_units``, ``n_significant``, ``n_significant_positive``) and ``neurons``.
    """
    mi = dict(data.get("model_info") or {})
    summ = sorted(data.get("layer_summary") or [], key=lambda s: int(s.get("layer", 0)))
    if not summ:
        raise NeuroLensError(f"results of {label or data.get('model')!r} have no layer_summary")
    layers = [int(s["layer"]) for s in summ]
    n_layers = int(mi.get("n_layers") or (max(layers) + 1))
    depth = relative_depths(n_layers, layers)
    units = [int(s.get("n_units") or 0) for s in summ]
    pos = [int(s.get("n_significant_positive") or 0) for s in summ]
    sig = [int(s.get("n_significant") or 0) for s in summ]
    frac, share = layer_distribution(pos, units)
    has = bool(frac.sum() > 0)
    peak_i = int(np.argmax(share)) if has else None  # ties: the shallowest layer
    dist = resample_distribution(depth, frac, grid)
    k = int(top_k if top_k is not None else data.get("top_k") or 10)
    neurons = [n for n in sorted(data.get("neurons") or [], key=lambda n: n.get("rank") or 0)
               if n.get("role") == "candidate"][:k]
    entry: dict[str, Any] = {
        "name": label or data.get("model"),
        "model": data.get("model") or mi.get("name"),
        "weights": mi.get("weights"),
        "family": mi.get("family"), "type": mi.get("type"), "modality": mi.get("modality"),
        "n_layers": n_layers,
        "n_neurons_scanned": int(data.get("n_neurons_scanned") or sum(units)),
        "n_significant": int(sum(sig)),
        "n_significant_positive": int(sum(pos)),
        "max_selectivity": rounded(max((float(s["max_selectivity"]) for s in summ
                                   if isinstance(s.get("max_selectivity"), (int, float))), default=math.nan)),
        "layers": [{"layer": l, "rel_depth": rounded(d), "n_units": u, "n_significant": s, "n_significant_positive": p,
                    "fraction": rounded(fr), "share": rounded(sh)}
                   for l, d, u, s, p, fr, sh in zip(layers, depth, units, sig, pos, frac, share)],
        "peak_layer": layers[peak_i] if peak_i is not None else None,
        "peak_rel_depth": rounded(depth[peak_i]) if peak_i is not None else None,
        "mean_rel_depth": rounded(float(np.dot(share, depth))) if has else None,
        "grid_distribution": [rounded(v) for v in dist] if dist is not None else None,
        "n_candidates": data.get("n_candidates"),
        "top_neurons": [_neuron_summary(n, n_layers) for n in neurons],
        "confidence_head": data.get("confidence_head"),
    }
    ab_summary = data.get("ablation_summary")
    ablated = [n for n in data.get("neurons") or [] if isinstance(n.get("ablation"), dict)]
    if isinstance(ab_summary, dict) or ablated:
        nval = (ab_summary or {}).get("n_validated")
        entry["n_validated"] = int(nval if nval is not None else sum(bool(n["ablation"].get("validated"))
                                                                     for n in ablated))
        entry["n_ablated"] = len(ablated)
    return entry


def build_comparison(results: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None,
                     top_k: int | None = None, grid: int = 21, settings: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """``comparison.json`` from the ``results.json`` dicts of the compared models (same concept)."""
    if len(results) < 2:
        raise NeuroLensError(f"a comparison needs at least two models, got {len(results)}")
    labels = list(labels) if labels is not None else [str(r.get("model")) for r in results]
    if len(labels) != len(results) or len(set(labels)) != len(labels):
        raise NeuroLensError(f"model labels must be unique, one per model, got {labels}")
    concepts = {r.get("concept") for r in results}
    if len(concepts) != 1:
        raise NeuroLensError(f"all models must be scanned with the same concept, got {sorted(map(str, concepts))}")
    mods = {(r.get("model_info") or {}).get("modality") for r in results} - {None}
    if len(mods) > 1:
        raise NeuroLensError(f"models must share a modality, got {sorted(mods)}")
    from neurolens_lightning.functional import js_divergence  # functional/__init__ imports torch

    models = [model_entry(r, l, top_k, grid) for r, l in zip(results, labels)]
    n = len(models)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    pairs = []
    for i in range(n):
        for j in range(n):
            pi, pj = models[i]["grid_distribution"], models[j]["grid_distribution"]
            if pi is None or pj is None:
                continue
            matrix[i][j] = 0.0 if i == j else rounded(js_divergence(pi, pj))
        for j in range(i + 1, n):
            pairs.append({"a": labels[i], "b": labels[j], "js": matrix[i][j]})
    first = results[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "neurolens-comparison",
        "concept": first.get("concept"),
        "concept_info": first.get("concept_info"),
        "modality": next(iter(mods), None),
        "n_positive": first.get("n_positive"), "n_negative": first.get("n_negative"),
        "fdr_q": first.get("fdr_q"),
        "top_k": int(top_k if top_k is not None else first.get("top_k") or 10),
        "distribution": {"definition": DISTRIBUTION_DEFINITION, "resampling": RESAMPLING_DEFINITION,
                         "alignment": "relative depth l/(L-1); a one-layer model sits at 0",
                         "grid": [rounded(x) for x in np.linspace(0.0, 1.0, grid)]},
        "models": models,
        "divergence": {"measure": "jensen-shannon", "base": 2, "definition": DIVERGENCE_DEFINITION,
                       "names": labels, "matrix": matrix, "pairs": pairs},
        "settings": dict(settings or {}),
    }


# ---------------------------------------------------------------------------- running
def _to_specs(models: Sequence[Any], weights: str, tokenizer: Any = None) -> list[ModelSpec]:
    """The compared models as uniquely labelled specs (at least two); ``tokenizer`` for those without one."""
    specs = []
    for m in models:
        if isinstance(m, ModelSpec):
            specs.append(ModelSpec(m.label, m.model, m.weights, m.tokenizer))
        elif isinstance(m, (str, Path)):
            specs.append(parse_model_spec(str(m), weights))
        else:  # an nn.Module or adapter
            label = getattr(m, "name", None) or type(getattr(m, "model", m)).__name__
            specs.append(ModelSpec(str(label), m, weights))
    _unique_labels(specs)
    if len(specs) < 2:
        raise NeuroLensError(f"compare needs at least two models (--models A B), got {len(specs)}")
    if tokenizer is not None:
        for s in specs:
            s.tokenizer = s.tokenizer if s.tokenizer is not None else tokenizer
    return specs


def compare(
    models: Sequence[Any],
    concept: Any = "negation",
    *,
    out: str | Path | None = None,
    top_k: int = 10,
    ablate: bool = False,
    weights: str = "pretrained",
    grid: int = 21,
    tokenizer: Any = None,
    device: Any = None,
    download: bool = False,
    importance: bool = True,
    baseline: str = "zero",
    batch_size: int = 16,
    fdr_q: float = 0.05,
    ablation: str = "interchange",
    null_samples: int = 50,
    holdout: float = 0.5,
    seed: int = 0,
    report: bool = True,
    progress: bool = False,
    settings: ScanSettings | None = None,
) -> dict[str, Any]:
    """Scan ``concept`` in every model and compare where along the depth each encodes it.

    Args:
        models: specs ``NAME`` / ``NAME:WEIGHTS`` (``minilm:random``), :class:`ModelSpec`, modules or
            adapters; at least two, all of one modality (text or image).
        concept: built-in name, probe JSON path, dict or Concept (one probe for all models).
        out: output folder; written atomically: ``comparison.json``, ``report.html`` and
            ``models/<label>/{results.json,report.html}``. None: nothing is written.
        top_k: candidates per model (and ablated per model with ``ablate``).
        weights: default weights of specs without a ``:WEIGHTS`` suffix.
        grid: number of points G of the common relative-depth grid.
        report: also write each model's own report.html.
        settings: a :class:`~neurolens_lightning.settings.ScanSettings` for every model's scan (the same object
            that drives ``scan()``, eval, the callback and steer); the keyword arguments above that differ from
            their defaults override its fields. ``layers`` must be None (the models' depths are aligned).

    Returns:
        the comparison dict (what ``comparison.json`` holds); each model's full results are
        written to ``out/models/<label>/``.
    """
    st = _scan_settings(settings, grid, {
        "top_k": top_k, "ablate": ablate, "importance": importance, "baseline": baseline, "batch_size": batch_size,
        "fdr_q": fdr_q, "ablation": ablation, "null_samples": null_samples, "holdout": holdout, "seed": seed})
    specs = _to_specs(list(models), weights, tokenizer)
    concept_obj = load_concept(concept)
    # fail fast, before any model is loaded: unknown names, mixed modalities
    _check_modalities([s.label for s in specs], [_static_modality(s) for s in specs], concept_obj)
    st.split(concept_obj)  # a probe too small for the causal test's split, and an output that cannot take the run
    output = check_out(out) if out is not None else None
    results, t_all = _load_and_scan(specs, concept_obj, st, device, download, progress)
    datas = [r.to_dict() for r in results]
    comp = build_comparison(datas, [s.label for s in specs], top_k=st.top_k, grid=grid,
                            settings=_recorded(st, weights, grid))
    for m, name, r in zip(comp["models"], _dir_names([s.label for s in specs]), results):
        m["scan_dir"] = f"models/{name}"
        m["timing_s"] = round(r.timings.get("total", 0.0), 3)
    comp["timings_s"] = {"total": round(time.perf_counter() - t_all, 3)}
    if output is not None:
        write_comparison(comp, output, results=results, scan_reports=report)
    return comp


def _scan_settings(settings: ScanSettings | None, grid: int, overrides: dict[str, Any]) -> ScanSettings:
    """Every model's scan settings (checked); the grid and layers checked for a comparison."""
    if grid < 2:
        raise NeuroLensError(f"grid must be >= 2, got {grid}")
    st = ScanSettings.resolve(settings, overrides).check()
    if st.layers is not None:
        raise NeuroLensError("compare scans every layer of each model (depths are aligned): leave layers unset")
    return st


def _load_and_scan(specs: list[ModelSpec], concept_obj: Any, st: ScanSettings, device: Any, download: bool,
                   progress: bool) -> tuple[list[Any], float]:
    """Every model loaded, then scanned one by one (each freed once scanned); the user's modules, tokenizers
    and the global RNGs are left as they were. Returns the results and the time the scans started."""
    from neurolens_lightning.api import scan  # torch: not at import (neurolens --help)
    from neurolens_lightning.guards import preserved_module, untouched, user_objects  # torch, as above
    from neurolens_lightning.registry import load_model  # torch, as above

    with ExitStack() as guards:
        guards.enter_context(untouched())
        for s in specs:
            module, tok = user_objects(s.model, s.tokenizer)
            if module is not None:
                guards.enter_context(preserved_module(module, tok))
        # random-weight models are drawn from ``seed`` (reproducible), without touching the global RNG
        adapters = [load_model(s.model, tokenizer=s.tokenizer, weights=s.weights, device=device, download=download,
                               seed=st.seed) for s in specs]
        _check_modalities([s.label for s in specs], [a.modality for a in adapters], concept_obj)
        results = []
        t_all = time.perf_counter()
        for i, (s, adapter) in enumerate(zip(specs, adapters)):
            if progress:
                print(f"[{i + 1}/{len(specs)}] scanning {s.label} ({adapter.num_layers} layers) for "
                      f"'{concept_obj.name}' ...", flush=True)
            t0 = time.perf_counter()
            res = scan(model=adapter, concept=concept_obj, weights=s.weights, progress=progress, settings=st)
            res.model["label"] = s.label
            res.timings["total"] = time.perf_counter() - t0
            results.append(res)
            adapters[i] = None  # free the model once scanned
    return results, t_all


def _recorded(st: ScanSettings, weights: str, grid: int) -> dict[str, Any]:
    """comparison.json's ``settings``: what every model was scanned with."""
    recorded = {"top_k": st.top_k, "ablate": st.tests_causally, "weights": weights, "importance": st.importance,
                "baseline": st.baseline, "batch_size": st.batch_size, "fdr_q": st.fdr_q, "grid": grid, "seed": st.seed}
    if st.tests_causally:
        recorded.update(ablation=st.ablation, null_samples=st.null_samples, holdout=st.holdout)
    return recorded


def _dir_names(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for l in labels:
        base = slug(l)
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def write_comparison(comp: dict[str, Any], out: "str | Path | Output", results: Sequence[Any] = (),
                     scan_reports: bool = True) -> Path:
    """Write ``comparison.json``, ``report.html`` and each model's scan folder into ``out`` atomically."""
    from neurolens_lightning.report import compare_page  # plotly: only when a page is written


    def write(tmp: Path) -> None:
        for m, r in zip(comp["models"], results):
            r.save(tmp / m.get("scan_dir", f"models/{slug(m['name'])}"), report=scan_reports)
        (tmp / "comparison.json").write_text(json.dumps(comp, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "report.html").write_text(compare_page.render_comparison(comp), encoding="utf-8")

    return publish(out, write)
