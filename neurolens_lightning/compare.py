"""Cross-architecture comparison: the same concept probe on several models, aligned by depth.

    neurolens compare --models bert-base-uncased roberta-base --concept negation
    neurolens compare --models minilm minilm:random --concept negation --out reports/demo-compare
    neurolens compare --config configs/compare.yaml models=[minilm,minilm:random] top_k=5

Each model is scanned with :func:`~neurolens_lightning.api.scan` (same probe, same settings);
its own ``results.json`` + ``report.html`` go to ``<out>/models/<label>/``, and the comparison
to ``<out>/comparison.json`` + ``<out>/report.html``.

**Model specs.** ``NAME`` or ``NAME:WEIGHTS`` with WEIGHTS ``pretrained`` or ``random``
(``minilm:random`` = MiniLM's architecture with random weights). A name without a suffix uses
``--weights`` (default ``pretrained``). The label of a model is its spec (``minilm``,
``minilm:random``); a repeated label gets `` #2``, `` #3``.

**Alignment.** Layer ℓ of a model with L layers sits at relative depth ℓ/(L−1) (a one-layer
model sits at 0).

**Encoding distribution** (what the divergence compares). For layer ℓ, the *encoding fraction*
``f_ℓ = n_sig⁺_ℓ / n_units_ℓ`` is the fraction of the layer's neurons that are FDR-significant
(Benjamini–Hochberg q ≤ fdr_q) *and* positively selective (fire more on the concept). The
layer's ``share`` is ``f_ℓ / Σ_ℓ' f_ℓ'`` (with equal layer widths: the layer's share of the
model's concept-selective neurons). Dividing by the width first keeps wide layers (late ResNet
blocks) from dominating.

**Common grid.** The profile f is linearly interpolated in relative depth between the model's
layers (constant beyond the first/last scanned layer; a one-layer model's profile is constant)
and evaluated at the G grid points ``x_g = g/(G−1)``, g = 0..G−1 (default G = 21); the values
are normalised to sum to 1: ``q_g = f(x_g) / Σ f(x_g')``.

**Divergence.** Jensen–Shannon divergence in bits between two grid distributions:
``JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M)``, ``M = (P + Q)/2``, ``0·log 0 = 0``; 0 = the same depth
profile, 1 = no overlap. A model without any positively selective neuron has no distribution;
its divergences are ``null``.

Example:
    >>> comp = compare(["minilm", "minilm:random"], concept="negation", out="reports/demo")  # doctest: +SKIP
    >>> comp["divergence"]["matrix"][0][1]                                                    # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neurolens_lightning.errors import ModelLoadError, NeuroLensError

__all__ = [
    "ModelSpec", "parse_model_spec", "relative_depths", "layer_distribution", "resample_distribution",
    "js_divergence", "model_entry", "build_comparison", "compare", "render_comparison", "write_comparison",
    "register_cli", "SCHEMA_VERSION", "DISTRIBUTION_DEFINITION", "RESAMPLING_DEFINITION",
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.") or "model"


def _static_modality(spec: ModelSpec) -> str | None:
    """The modality of a string spec without loading it (None: decided after loading).

    Raises :class:`ModelLoadError` for a name that is neither registered nor an existing path.
    """
    if not isinstance(spec.model, (str, Path)):
        return None
    from neurolens_lightning.registry import REGISTRY

    name = str(spec.model)
    if name in REGISTRY:
        return "image" if REGISTRY[name].head == "image" else "text"
    path = Path(name)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return "image"
    if path.is_dir():
        return "text"
    if path.exists():
        return None  # load_model gives the precise error
    raise ModelLoadError(f"unknown model {name!r} (in --models): use one of {', '.join(REGISTRY)} or a local path "
                         "(a Hugging Face model directory, or a .pt/.pth ResNet state dict), optionally with "
                         ":random or :pretrained (e.g. minilm:random)")


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


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon divergence in bits (base 2, in [0, 1]) of two distributions (renormalised).

    Example:
        >>> js_divergence([1, 0], [0, 1]), js_divergence([0.5, 0.5], [0.5, 0.5])
        (1.0, 0.0)
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise NeuroLensError(f"distributions must be 1-D of equal length, got {a.shape} and {b.shape}")
    if np.any(a < 0) or np.any(b < 0) or a.sum() <= 0 or b.sum() <= 0:
        raise NeuroLensError("distributions must be non-negative with positive mass")
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    js = 0.5 * kl(a) + 0.5 * kl(b)
    return float(min(1.0, max(0.0, js)))


def _f(x: Any, nd: int = 6) -> float | None:
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{nd}g}")


def _neuron_summary(n: Mapping[str, Any], n_layers: int) -> dict[str, Any]:
    layer = int(n.get("layer", 0))
    rec: dict[str, Any] = {
        "rank": n.get("rank"), "layer": layer, "index": n.get("index"), "role": n.get("role"),
        "rel_depth": _f(relative_depths(n_layers, [layer])[0]) if 0 <= layer < max(n_layers, 1) else None,
        "selectivity": n.get("selectivity"), "selectivity_q": n.get("selectivity_q"),
        "consistency": n.get("consistency"), "importance": n.get("importance"), "score": n.get("score"),
    }
    ex = next((e for e in n.get("top_examples") or [] if isinstance(e, dict)), None)
    if ex is not None:
        rec["top_example"] = ex.get("text") if ex.get("text") is not None else ex.get("image")
        rec["top_example_positive"] = ex.get("positive")
    ab = n.get("ablation")
    if isinstance(ab, dict):
        rec["ablation"] = {k: ab.get(k) for k in ("delta", "ci_low", "ci_high", "delta_control", "p_value", "p_holm",
                                                  "validated", "verdict")}
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
        "max_selectivity": _f(max((float(s["max_selectivity"]) for s in summ
                                   if isinstance(s.get("max_selectivity"), (int, float))), default=math.nan)),
        "layers": [{"layer": l, "rel_depth": _f(d), "n_units": u, "n_significant": s, "n_significant_positive": p,
                    "fraction": _f(fr), "share": _f(sh)}
                   for l, d, u, s, p, fr, sh in zip(layers, depth, units, sig, pos, frac, share)],
        "peak_layer": layers[peak_i] if peak_i is not None else None,
        "peak_rel_depth": _f(depth[peak_i]) if peak_i is not None else None,
        "mean_rel_depth": _f(float(np.dot(share, depth))) if has else None,
        "grid_distribution": [_f(v) for v in dist] if dist is not None else None,
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
    models = [model_entry(r, l, top_k, grid) for r, l in zip(results, labels)]
    n = len(models)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    pairs = []
    for i in range(n):
        for j in range(n):
            pi, pj = models[i]["grid_distribution"], models[j]["grid_distribution"]
            if pi is None or pj is None:
                continue
            matrix[i][j] = 0.0 if i == j else _f(js_divergence(pi, pj))
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
                         "grid": [_f(x) for x in np.linspace(0.0, 1.0, grid)]},
        "models": models,
        "divergence": {"measure": "jensen-shannon", "base": 2, "definition": DIVERGENCE_DEFINITION,
                       "names": labels, "matrix": matrix, "pairs": pairs},
        "settings": dict(settings or {}),
    }


# ---------------------------------------------------------------------------- running
def _to_specs(models: Sequence[Any], weights: str) -> list[ModelSpec]:
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
    ablation: str = "zero",
    null_samples: int = 50,
    holdout: float = 0.5,
    seed: int = 0,
    report: bool = True,
    progress: bool = False,
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

    Returns:
        the comparison dict (what ``comparison.json`` holds); each model's full results are
        written to ``out/models/<label>/``.
    """
    from neurolens_lightning.concepts import load_concept

    if grid < 2:
        raise NeuroLensError(f"grid must be >= 2, got {grid}")
    if top_k < 1:
        raise NeuroLensError(f"top_k must be >= 1, got {top_k}")
    specs = _to_specs(list(models), weights)
    if len(specs) < 2:
        raise NeuroLensError(f"compare needs at least two models (--models A B), got {len(specs)}")
    if tokenizer is not None:
        for s in specs:
            s.tokenizer = s.tokenizer if s.tokenizer is not None else tokenizer
    concept_obj = load_concept(concept)
    # fail fast, before any model is loaded: unknown names, mixed modalities
    _check_modalities([s.label for s in specs], [_static_modality(s) for s in specs], concept_obj)
    from neurolens_lightning.registry import load_model

    # random-weight models are drawn from ``seed`` (reproducible), without touching the global RNG
    adapters = [load_model(s.model, tokenizer=s.tokenizer, weights=s.weights, device=device, download=download,
                           seed=seed) for s in specs]
    _check_modalities([s.label for s in specs], [a.modality for a in adapters], concept_obj)

    from neurolens_lightning.api import scan

    results = []
    t_all = time.perf_counter()
    for i, (s, adapter) in enumerate(zip(specs, adapters)):
        if progress:
            print(f"[{i + 1}/{len(specs)}] scanning {s.label} ({adapter.num_layers} layers) for "
                  f"'{concept_obj.name}' ...", flush=True)
        t0 = time.perf_counter()
        res = scan(model=adapter, concept=concept_obj, top_k=top_k, ablate=ablate, weights=s.weights,
                   importance=importance, baseline=baseline, batch_size=batch_size, fdr_q=fdr_q,
                   ablation=ablation, null_samples=null_samples, holdout=holdout, seed=seed, progress=progress)
        res.model["label"] = s.label
        res.timings["total"] = time.perf_counter() - t0
        results.append(res)
        adapters[i] = None  # free the model once scanned
    datas = [r.to_dict() for r in results]
    settings = {"top_k": top_k, "ablate": ablate, "weights": weights, "importance": importance,
                "baseline": baseline, "batch_size": batch_size, "fdr_q": fdr_q, "grid": grid, "seed": seed}
    if ablate:
        settings.update(ablation=ablation, null_samples=null_samples, holdout=holdout)
    comp = build_comparison(datas, [s.label for s in specs], top_k=top_k, grid=grid, settings=settings)
    slugs = _dir_names([s.label for s in specs])
    for m, slug, r in zip(comp["models"], slugs, results):
        m["scan_dir"] = f"models/{slug}"
        m["timing_s"] = round(r.timings.get("total", 0.0), 3)
    comp["timings_s"] = {"total": round(time.perf_counter() - t_all, 3)}
    if out is not None:
        write_comparison(comp, out, results=results, scan_reports=report)
    return comp


def _dir_names(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for l in labels:
        base = _slug(l)
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def _move_into(tmp: Path, out: Path) -> None:
    """Atomically publish ``tmp`` as ``out`` (child by child when ``out`` exists)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for child in tmp.iterdir():
        target = out / child.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(child, target)
    shutil.rmtree(tmp, ignore_errors=True)


def write_comparison(comp: dict[str, Any], out: str | Path, results: Sequence[Any] = (),
                     scan_reports: bool = True) -> Path:
    """Write ``comparison.json``, ``report.html`` and each model's scan folder into ``out`` atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeuroLensError(f"output {str(out)!r} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for m, r in zip(comp["models"], results):
            r.save(tmp / m.get("scan_dir", f"models/{_slug(m['name'])}"), report=scan_reports)
        (tmp / "comparison.json").write_text(json.dumps(comp, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "report.html").write_text(render_comparison(comp), encoding="utf-8")
        _move_into(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------- page
_COLORS = ["#2c7fb8", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def _e(s: Any) -> str:
    return "" if s is None else html.escape(str(s), quote=True)


def _fmt(x: Any, nd: int = 3) -> str:
    from neurolens_lightning.report.page import _fmt as page_fmt

    return page_fmt(x, nd)


def _depth(x: Any) -> str:
    """A relative depth for display, always two decimals (``—`` when missing)."""
    return f"{float(x):.2f}" if isinstance(x, (int, float)) and math.isfinite(float(x)) else "—"


def _flatness(m: Mapping[str, Any]) -> str:
    """``, though the profile is nearly flat (...)`` when the peak layer holds < 1.2x an even share."""
    layers = m.get("layers") or []
    shares = [l.get("share") for l in layers if isinstance(l.get("share"), (int, float))]
    if len(shares) < 2 or not shares:
        return ""
    even, top = 1.0 / len(shares), max(shares)
    if top >= 1.2 * even:
        return ""
    return (f", though the profile is nearly flat (the peak layer holds {100 * top:.1f}% of them, an even spread "
            f"would give {100 * even:.1f}% per layer)")


def _js_words(js: float) -> str:
    # reference points on the 21-point grid: a linear ramp vs a flat profile 0.09; two Gaussian bumps
    # (sd 0.15) one sd apart 0.16; opposite ramps 0.32; bumps 0.5 apart 0.82
    if js < 0.01:
        return "nearly identical depth profiles"
    if js < 0.05:
        return "similar depth profiles"
    if js < 0.15:
        return "moderately different depth profiles"
    if js < 0.4:
        return "clearly different depth profiles"
    return "largely non-overlapping depth profiles"


def depth_figure(comp: Mapping[str, Any]) -> Any:
    """Two panels over relative depth, one trace per model, layers aligned by ℓ/(L−1).

    Top (*amount*): % of each layer's neurons that are selective. Bottom (*placement*): each
    layer's share relative to an even spread (share × number of layers; 1 = even), so models
    with different numbers of layers sit on one scale; its shape is what the divergence
    compares. ★ marks each model's peak and a dashed vertical its depth.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from neurolens_lightning.report import figures as F

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.13,
                        subplot_titles=("<b>Amount</b>: % of each layer's neurons that fire significantly more on "
                                        "the concept",
                                        "<b>Placement</b>: each layer's share of the model's selective neurons, "
                                        "relative to an even spread (1 = even; ★ = peak)"))
    top = 1.0
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        name = _e(m.get("name"))
        layers = m.get("layers") or []
        x = np.array([F._num(l.get("rel_depth")) for l in layers], dtype=np.float64)
        frac = np.array([F._num(l.get("fraction")) * 100 for l in layers], dtype=np.float64)
        share = np.array([F._num(l.get("share")) for l in layers], dtype=np.float64)
        conc = share * max(len(layers), 1)  # share relative to an even spread over the scanned layers
        if np.isfinite(conc).any():
            top = max(top, float(np.nanmax(conc)))
        custom = np.array([[l.get("layer"), m.get("n_layers"), l.get("n_significant_positive"), l.get("n_units"),
                            F._num(l.get("share")) * 100] for l in layers], dtype=np.float64)
        hover = (f"<b>{name}</b><br>layer %{{customdata[0]:.0f}} of %{{customdata[1]:.0f}} · relative depth %{{x:.2f}}"
                 "<br>%{customdata[2]:.0f} of %{customdata[3]:.0f} neurons")
        fig.add_trace(go.Scatter(x=x, y=frac, name=name, legendgroup=name, mode="lines+markers",
                                 line={"color": col, "width": 2.5}, marker={"size": 9, "color": col},
                                 customdata=custom, hovertemplate=hover + " (%{y:.1f}%)<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=conc, name=name, legendgroup=name, showlegend=False,
                                 mode="lines+markers", line={"color": col, "width": 2.5, "dash": "dot"},
                                 marker={"size": 8, "color": col}, customdata=custom,
                                 hovertemplate=hover + "<br>share %{customdata[4]:.1f}% of the model's selective "
                                                       "neurons = %{y:.2f}× an even spread<extra></extra>"),
                      row=2, col=1)
        if m.get("peak_rel_depth") is not None:
            pk = next((l for l in layers if l.get("layer") == m.get("peak_layer")), None)
            if pk is not None:
                fig.add_trace(go.Scatter(
                    x=[pk.get("rel_depth")], y=[F._num(pk.get("share")) * max(len(layers), 1)],
                    mode="markers+text", showlegend=False,
                    legendgroup=name, marker={"symbol": "star", "size": 20, "color": col,
                                              "line": {"color": "#222", "width": 1}},
                    text=[f"peak {F._num(m.get('peak_rel_depth')):.2f}"],
                    textposition="top center", textfont={"color": col, "size": 12},
                    hovertemplate=(f"<b>{name}</b> peak: layer {_e(m.get('peak_layer'))} · relative depth "
                                   "%{x:.2f}<extra></extra>")), row=2, col=1)
                fig.add_vline(x=F._num(pk.get("rel_depth")), line={"color": col, "width": 1.2, "dash": "dash"},
                              opacity=0.6)
    fig.update_xaxes(range=[-0.04, 1.04], dtick=0.1, zeroline=False)
    fig.update_xaxes(title_text="relative depth ℓ/(L−1)   (0 = first layer, 1 = last layer)", row=2, col=1)
    fig.update_yaxes(title_text="% of layer", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="× even share", range=[0, top * 1.22], row=2, col=1)
    fig.add_hline(y=1.0, line={"color": "#888", "width": 1, "dash": "dot"}, row=2, col=1)
    n_models = len(comp.get("models") or [])
    F._style(fig, "", 680, legend_rows=1 + (n_models > 4))
    fig.update_layout(title=None, margin={"t": 40})
    for ann in fig.layout.annotations:
        if ann.text and ann.text.startswith("<b>"):
            ann.update(font={"size": 14, "color": "#333"}, x=0.0, xanchor="left")
    return fig


def summary_sentences(comp: Mapping[str, Any]) -> list[str]:
    """The plain-words summary as HTML paragraphs (every user string escaped)."""
    models = comp.get("models") or []
    out = []
    names = [f"<b>{_e(m.get('name'))}</b> ({_fmt(m.get('n_layers'))} layers)" for m in models]
    from neurolens_lightning.report.page import _join

    out.append(f"The concept <b>{_e(comp.get('concept'))}</b> ({_fmt(comp.get('n_positive'))} concept and "
               f"{_fmt(comp.get('n_negative'))} control examples) was scanned with the same probe in "
               f"{_join(names)}; layers are aligned by relative depth ℓ/(L−1).")
    for m in models:
        nsp, ntot = m.get("n_significant_positive"), m.get("n_neurons_scanned")
        pct = f" ({100.0 * nsp / ntot:.1f}%)" if ntot else ""
        if m.get("peak_rel_depth") is None:
            out.append(f"<b>{_e(m.get('name'))}</b>: no neuron fires significantly more on the concept, so it has no "
                       "depth profile to compare.")
            continue
        s = (f"<b>{_e(m.get('name'))}</b>: {_fmt(nsp)} of {_fmt(ntot)} neurons{pct} fire significantly more on the "
             f"concept; they are densest at relative depth <b>{_depth(m.get('peak_rel_depth'))}</b> (layer "
             f"{_e(m.get('peak_layer'))} of layers 0–{_fmt((m.get('n_layers') or 1) - 1)}) and centred at "
             f"{_depth(m.get('mean_rel_depth'))}{_flatness(m)}; the strongest selectivity is d = "
             f"{_fmt(m.get('max_selectivity'))}")
        if m.get("n_validated") is not None:
            s += f"; ablation validated {_fmt(m['n_validated'])} of its {_fmt(m.get('n_ablated'))} candidates"
        out.append(s + ".")
    for p in (comp.get("divergence") or {}).get("pairs") or []:
        if p.get("js") is None:
            out.append(f"The divergence between {_e(p.get('a'))} and {_e(p.get('b'))} is undefined (a model without "
                       "concept-selective neurons).")
            continue
        out.append(f"Jensen–Shannon divergence between the depth profiles of <b>{_e(p.get('a'))}</b> and "
                   f"<b>{_e(p.get('b'))}</b>: <b>{_fmt(p['js'])}</b> bits (0 = same profile, 1 = no overlap) — "
                   f"{_js_words(p['js'])}.")
    counts = [(m.get("name"), m.get("n_significant_positive") or 0) for m in models]
    if len(counts) >= 2:
        hi = max(counts, key=lambda t: t[1])
        lo = min(counts, key=lambda t: t[1])
        if lo[1] > 0 and hi[1] >= 1.5 * lo[1]:
            out.append(f"In amount rather than placement: {_e(hi[0])} has <b>{hi[1] / lo[1]:.1f}×</b> as many "
                       f"concept-selective neurons as {_e(lo[0])}.")
    return out


def _cards(comp: Mapping[str, Any]) -> str:
    cards = []
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        nsp, ntot = m.get("n_significant_positive"), m.get("n_neurons_scanned")
        pct = f"{100.0 * nsp / ntot:.1f}% of {_fmt(ntot)} neurons" if ntot else ""
        rows = [("peak depth", _depth(m.get("peak_rel_depth"))), ("centre of mass", _depth(m.get("mean_rel_depth"))),
                ("layers", _fmt(m.get("n_layers"))), ("strongest d", _fmt(m.get("max_selectivity")))]
        if m.get("n_validated") is not None:
            rows.append(("validated", f"{_fmt(m['n_validated'])} / {_fmt(m.get('n_ablated'))}"))
        kv = "".join(f"<div><span class='ck'>{k}</span> <b>{v}</b></div>" for k, v in rows)
        cards.append(f"<div class='card' style='border-top:4px solid {col}'><div class='card-k'>{_e(m.get('name'))}"
                     f"</div><div class='card-v'>{_fmt(nsp)}</div><div class='card-s'>concept-selective neurons · "
                     f"{pct}</div><div class='card-kv'>{kv}</div></div>")
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _divergence_table(comp: Mapping[str, Any]) -> str:
    div = comp.get("divergence") or {}
    names, matrix = div.get("names") or [], div.get("matrix") or []
    head = "<tr><th></th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    rows = []
    for n, row in zip(names, matrix):
        cells = []
        for v in row:
            if v is None:
                cells.append("<td class='num muted'>—</td>")
            else:
                a = min(1.0, max(0.0, float(v))) ** 0.5
                cells.append(f"<td class='num' style='background:rgba(192,57,43,{0.08 + 0.8 * a:.2f});"
                             f"color:{'#fff' if a > 0.6 else '#1f2328'}'>{_fmt(v)}</td>")
        rows.append(f"<tr><th>{_e(n)}</th>{''.join(cells)}</tr>")
    return (f"<div class='tablewrap'><table class='div'><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
            "</table></div>")


def _top_tables(comp: Mapping[str, Any]) -> str:
    blocks = []
    any_ab = any(m.get("n_validated") is not None for m in comp.get("models") or [])
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        head = ("<tr><th>#</th><th>neuron</th><th>depth</th><th>d</th><th>consist.</th><th>import.</th>"
                "<th>score</th>" + ("<th>ablation</th>" if any_ab else "") + "<th>probe example it fires most on</th></tr>")
        rows = []
        for n in m.get("top_neurons") or []:
            ab = n.get("ablation")
            ab_cell = ""
            if any_ab:
                if isinstance(ab, dict):
                    st = "validated" if ab.get("validated") else "not validated"
                    ab_cell = (f"<td class='num'>Δ = {_fmt(ab.get('delta'))}<div class='sub'>"
                               f"<span class='st {'ok' if ab.get('validated') else 'no'}'>{st}</span></div></td>")
                else:
                    ab_cell = "<td class='muted'>—</td>"
            ex = n.get("top_example")
            if ex is None:
                ex_html = "<span class='muted'>—</span>"
            else:
                ctrl = not n.get("top_example_positive")
                ex_html = (("<span class='badge b-neg'>control</span>" if ctrl else "")
                           + f"<span class='{'ctrl' if ctrl else ''}'>{_e(str(ex)[:90])}"
                           f"{'…' if len(str(ex)) > 90 else ''}</span>")
            rows.append(f"<tr><td class='num'>{_fmt(n.get('rank'))}</td>"
                        f"<td class='neuron'>{_e(n.get('layer'))}:{_e(n.get('index'))}</td>"
                        f"<td class='num'>{_depth(n.get('rel_depth'))}</td>"
                        f"<td class='num'>{_fmt(n.get('selectivity'))}</td>"
                        f"<td class='num'>{_fmt(n.get('consistency'))}</td>"
                        f"<td class='num'>{_fmt(n.get('importance'))}</td>"
                        f"<td class='num'><b>{_fmt(n.get('score'))}</b></td>{ab_cell}"
                        f"<td class='ex'>{ex_html}</td></tr>")
        link = m.get("scan_dir")
        link_html = (f" · <a href='{_e(link)}/report.html'>full report</a>" if link else "")
        blocks.append(f"<div class='tbl'><h3><span class='dot' style='background:{col}'></span>{_e(m.get('name'))}"
                      f"<span class='sub'> top {len(m.get('top_neurons') or [])}{link_html}</span></h3>"
                      f"<div class='tablewrap'><table class='cands'><thead>{head}</thead>"
                      f"<tbody>{''.join(rows)}</tbody></table></div></div>")
    return f"<div class='tbls'>{''.join(blocks)}</div>"


_CSS_EXTRA = """
.card-kv{margin-top:6px;font-size:13.5px;display:grid;grid-template-columns:1fr 1fr;gap:0 10px}
.ck{color:var(--muted)}
.tbls{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:22px}
.tbls table.cands{font-size:13px}
.tbls .cands th,.tbls .cands td{padding:5px 5px}
.tbls .cands td.ex{white-space:normal;min-width:0;font-size:12.5px;line-height:1.35}
.tbl h3{font-size:17px;margin:8px 0 6px}
.dot{display:inline-block;width:12px;height:12px;border-radius:6px;margin-right:8px;vertical-align:baseline}
td.ex{font-size:13px}
td.ex .ctrl{color:#8c6d62}
table.div th,table.div td{border:1px solid var(--line);padding:8px 14px}
table.div thead th{background:var(--bg)}
.st{color:#fff;border-radius:9px;padding:0 7px;font-size:11.5px}.st.ok{background:#1a9850}.st.no{background:#b2182b}
"""


def render_comparison(comp: Mapping[str, Any], plotlyjs: str = "inline") -> str:
    """The comparison page as one self-contained HTML string (plotly.js inlined once)."""
    import plotly.io as pio

    from neurolens_lightning.report.page import _CSS, PLOTLY_CONFIG, plotlyjs_tag

    concept = _e(comp.get("concept") or "concept")
    names = [m.get("name") for m in comp.get("models") or []]
    title_models = " vs ".join(_e(n) for n in names)
    fig = depth_figure(comp)
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id="nl-fig-depth", config=PLOTLY_CONFIG,
                      default_height=f"{int(fig.layout.height or 700)}px")
    dist = comp.get("distribution") or {}
    div_def = (comp.get("divergence") or {}).get("definition")
    defs = [
        ("Alignment", _e(dist.get("alignment"))),
        ("Selective neuron", f"FDR-significant (Benjamini–Hochberg q ≤ {_e(comp.get('fdr_q'))} over all neurons of "
                             "the model) with positive selectivity: it fires more on the concept than on the controls."),
        ("Encoding distribution", _e(dist.get("definition"))),
        ("Common grid", _e(dist.get("resampling")) + f" (G = {len(dist.get('grid') or [])})."),
        ("Divergence", _e(div_def) + "; 0 = the same depth profile, 1 = no overlap. The words used in the summary: "
                       "&lt; 0.01 nearly identical, &lt; 0.05 similar, &lt; 0.15 moderately different, &lt; 0.4 clearly "
                       "different, else largely non-overlapping (a reading aid, not a test; for scale: a linear "
                       "ramp against a flat profile gives 0.09, two bumps of width σ = 0.15 one σ apart 0.16, "
                       "opposite ramps 0.32)."),
        ("Peak depth", "relative depth of the layer with the largest share (ties: the shallowest); centre of mass = "
                       "Σ share × relative depth."),
    ]
    settings = comp.get("settings") or {}
    settings_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in settings.items())
    parts = [
        "<header><div class='kicker'>NeuroLens cross-model comparison</div>"
        f"<h1>Where <span class='concept'>“{concept}”</span> lives: {title_models}</h1>"
        f"<p class='desc'>{_e((comp.get('concept_info') or {}).get('description') or '')}</p></header>",
        "<section id='summary' class='summary'>" + _cards(comp)
        + "".join(f"<p>{s}</p>" for s in summary_sentences(comp)) + "</section>",
        "<section id='sec-depth'><h2>Layer distribution by relative depth</h2>"
        f"<figure class='nl-figure' data-figure='depth'>{div}<figcaption>Top: how many of each layer's neurons "
        "respond to the concept (fire significantly more on it). Bottom: the same per-layer values normalised over "
        "the model (its share of the model's selective neurons) and scaled by the number of layers, so that 1 = an "
        "even spread whatever the depth; the dotted lines are the linear interpolation used to resample onto the "
        "common grid for the divergence, ★ marks each model's peak and the dashed verticals its depth.</figcaption></figure></section>",
        f"<section id='sec-div'><h2>Divergence of the depth profiles</h2>{_divergence_table(comp)}"
        "<p class='muted'>Jensen–Shannon divergence in bits between the grid distributions.</p></section>",
        f"<section id='sec-top'><h2>Top neurons of each model</h2>{_top_tables(comp)}</section>",
        "<section id='sec-defs'><h2>Definitions</h2><dl class='defs'>"
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in defs) + "</dl>"
        + (f"<div class='kv'><h4>settings</h4><table>{settings_html}</table></div>" if settings_html else "")
        + "</section>",
        "<footer>Generated by neurolens_lightning from comparison.json (schema "
        f"{_e(comp.get('schema_version', '?'))}); every number on this page is in that file.</footer>",
    ]
    js = plotlyjs_tag(plotlyjs)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>NeuroLens comparison: {concept} in {title_models}</title><style>{_CSS}{_CSS_EXTRA}</style>{js}"
            f"</head><body><main>{''.join(parts)}</main></body></html>\n")


# ---------------------------------------------------------------------------- CLI
def _default_out(concept: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"compare-{_slug(Path(concept).stem)}-{stamp}"


def cmd_compare(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import CompareConfig, load_config

    models = list(args.models or [])
    overrides = list(args.overrides or [])
    # argparse's nargs="+" swallows trailing key=value overrides: give them back
    overrides += [m for m in models if "=" in m]
    models = [m for m in models if "=" not in m]
    updates: dict[str, Any] = {}
    if models:
        updates["models"] = models
    for key in ("concept", "weights", "top_k", "out", "device", "tokenizer", "grid", "batch_size", "ablation",
                "null_samples"):
        val = getattr(args, key, None)
        if val is not None:
            updates[key] = val
    for key in ("ablate", "download", "importance"):
        val = getattr(args, key, None)
        if val is not None:
            updates[key] = val
    cfg = load_config(CompareConfig, args.config, overrides, updates)
    if len(cfg.models) < 2:
        raise NeuroLensError(f"compare needs at least two models (--models A B, or models=[A,B]), got {cfg.models}")
    out = Path(cfg.out) if cfg.out else _default_out(cfg.concept)
    comp = compare(cfg.models, cfg.concept, out=out, top_k=cfg.top_k, ablate=cfg.ablate, weights=cfg.weights,
                   grid=cfg.grid, tokenizer=cfg.tokenizer, device=None if cfg.device == "auto" else cfg.device,
                   download=cfg.download, importance=cfg.importance, baseline=cfg.baseline,
                   batch_size=cfg.batch_size, fdr_q=cfg.fdr_q, ablation=cfg.ablation, null_samples=cfg.null_samples,
                   holdout=cfg.holdout, seed=cfg.seed, report=cfg.report, progress=True)
    _print_summary(comp, out)
    return 0


def _print_summary(comp: Mapping[str, Any], out: Path) -> None:
    print(f"\nconcept '{comp.get('concept')}' in {len(comp['models'])} models (layers aligned by relative depth)")
    print(f"{'model':<28} {'layers':>6} {'selective+':>10} {'peak depth':>10} {'centre':>7}  validated")
    for m in comp["models"]:
        pk = "-" if m.get("peak_rel_depth") is None else f"{m['peak_rel_depth']:.2f}"
        ce = "-" if m.get("mean_rel_depth") is None else f"{m['mean_rel_depth']:.2f}"
        val = "" if m.get("n_validated") is None else f"{m['n_validated']}/{m.get('n_ablated')}"
        print(f"{str(m['name'])[:28]:<28} {m['n_layers']:>6} {m['n_significant_positive']:>10} {pk:>10} {ce:>7}  {val}")
    for p in comp["divergence"]["pairs"]:
        js = "undefined" if p["js"] is None else f"{p['js']:.4f} bits"
        print(f"JS divergence {p['a']} vs {p['b']}: {js}")
    print(f"\nwrote {out / 'comparison.json'} and {out / 'report.html'} (per-model scans in {out / 'models'})")


def register_cli(subparsers: Any) -> None:
    """Add ``neurolens compare`` to the ``neurolens`` command."""
    p = subparsers.add_parser(
        "compare", help="the same probe on several models, layers aligned by relative depth",
        description="Scan one concept in several models and compare where along the depth each encodes it. "
                    "Models: NAME or NAME:WEIGHTS (WEIGHTS = pretrained | random), e.g. --models minilm "
                    "minilm:random.")
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (CompareConfig), merged in order")
    p.add_argument("--models", nargs="+", help="two or more models: NAME or NAME:WEIGHTS (e.g. minilm minilm:random)")
    p.add_argument("--concept", help="built-in concept name or probe JSON path")
    p.add_argument("--weights", choices=list(WEIGHT_CHOICES), help="weights of models given without :WEIGHTS")
    p.add_argument("--top-k", type=int, dest="top_k", help="top neurons per model (ablated with --ablate)")
    p.add_argument("--ablate", action="store_true", default=None, help="validate each model's top-k by ablation")
    p.add_argument("--ablation", choices=["zero", "mean", "resample"], help="ablation method (default zero)")
    p.add_argument("--null-samples", type=int, dest="null_samples", help="random neurons per layer for the null")
    p.add_argument("--grid", type=int, help="points of the common relative-depth grid (default 21)")
    p.add_argument("--out", help="output folder (default reports/compare-<concept>-<timestamp>/)")
    p.add_argument("--tokenizer", help="tokenizer directory (random-weight GPT-2/RoBERTa)")
    p.add_argument("--device", help="cpu, cuda or auto (default)")
    p.add_argument("--download", action="store_true", default=None, help="allow downloading hub weights")
    p.add_argument("--no-importance", action="store_false", dest="importance", default=None,
                   help="skip the gradient x activation pass")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=5 grid=41)")
    p.set_defaults(func=cmd_compare)
