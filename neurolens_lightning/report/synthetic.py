"""Synthetic ``results.json`` dicts with the full schema, for tests, demos and size checks.

The numbers are random (seeded) but internally consistent: the composite score follows the
documented rule, neurons are ranked by it, ``layer_summary`` counts the listed q-values, and
the optional ``ablation``/``ablation_summary``/``emergence`` sections follow the schema the
report reads.

Example:
    >>> data = synthetic_results(n_layers=2, units=64, ablation=True, emergence=True)
    >>> data["n_neurons_scanned"], len(data["all_neurons"]["score"][0])
    (128, 64)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["synthetic_results"]

_POS = ["The [[king]] rode through the village at dawn.", "The [[queen]] smiled at the crowd.",
        "A [[prince]] knocked on the door.", "The [[monarch]] signed the law.",
        "The [[emperor]] rebuilt the city walls.", "She touched the golden [[crown]] carefully."]
_NEG = ["The [[farmer]] rode through the village at dawn.", "The [[teacher]] smiled at the class.",
        "A [[stranger]] knocked on the door.", "The [[clerk]] signed the form."]


def _r(x: float, nd: int = 6) -> float | None:
    x = float(x)
    return None if math.isnan(x) else float(f"{x:.{nd}g}")


def _example(text: str, activation: float, positive: bool) -> dict[str, Any]:
    s = text.index("[[")
    e = text.index("]]") - 2
    plain = text.replace("[[", "").replace("]]", "")
    return {"activation": _r(activation), "positive": positive, "position": len(plain[:s].split()) + 1,
            "text": plain, "span": [s, e]}


def synthetic_results(n_layers: int = 6, units: int = 1536, top_k: int = 10, max_neurons: int = 500,
                      ablation: bool = False, emergence: bool = False, seed: int = 0,
                      model: str = "synthetic-model", concept: str = "royalty",
                      positive_texts: list[str] | None = None, fdr_q: float = 0.05) -> dict[str, Any]:
    """A results dict of ``n_layers`` × ``units`` neurons with random, schema-conform scores.

    Args:
        positive_texts: probe sentences (``[[span]]`` marked) used in the top examples;
            e.g. to test that hostile text is escaped.
    """
    rng = np.random.default_rng(seed)
    n = n_layers * units
    layer = np.repeat(np.arange(n_layers), units)
    index = np.tile(np.arange(units), n_layers)
    depth_gain = 0.3 + 0.7 * np.sin(np.pi * (layer + 0.5) / n_layers)
    d = rng.normal(0, 0.35, n) + (rng.random(n) < 0.02) * rng.gamma(2.0, 0.6, n) * depth_gain
    p = np.exp(-np.abs(d) * 6.0)  # stand-in for the Welch p-value
    order_p = np.argsort(p)
    q = np.empty(n)
    ranked = p[order_p] * n / np.arange(1, n + 1)
    q[order_p] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    cons = np.where(d > 0, np.clip(rng.beta(2, 2, n) * np.tanh(np.maximum(d, 0) * 2), 0, 1), 0.0)
    imp = rng.normal(0, 1e-3, n) * (1 + 3 * np.maximum(d, 0))
    dp = np.maximum(d, 0)
    score = (dp / (1 + dp) * cons * np.abs(imp) / np.abs(imp).max()) ** (1 / 3)
    order = np.lexsort((-np.tanh(d), -score))
    texts = positive_texts or _POS
    neurons = []
    for r, i in enumerate(order[:max(top_k, min(max_neurons, n))]):
        g = len(texts)
        rec: dict[str, Any] = {
            "layer": int(layer[i]), "index": int(index[i]), "selectivity": _r(d[i]), "selectivity_p": _r(p[i]),
            "selectivity_q": _r(q[i]), "consistency": _r(cons[i]), "importance": _r(imp[i]),
            "importance_zero": _r(imp[i]), "importance_mean": _r(imp[i] * 0.7), "score": _r(score[i]),
            "rank": r + 1, "mean_pos": _r(0.5 + d[i] * 0.4), "mean_neg": _r(0.5),
            "group_d": [_r(d[i] + rng.normal(0, 0.3), 4) for _ in range(min(g, 6))], "ablation": None,
        }
        if r < max(top_k, 20):
            acts = sorted(rng.gamma(2, 1, 3), reverse=True)
            rec["top_examples"] = [_example(texts[(r + j) % g], acts[j], True) if j < 2 else
                                   _example(_NEG[(r + j) % len(_NEG)], acts[j], False) for j in range(3)]
        if ablation and r < top_k:
            delta = float(rng.gamma(2, 0.05) if r % 3 != 2 else rng.normal(0.0, 0.02))
            half = float(abs(rng.normal(0.03, 0.01)))
            z = (delta - 0.01) / 0.02
            pv = min(1.0, 0.5 * math.erfc(z / math.sqrt(2)) * top_k)
            validated = pv < 0.05 and delta - half > 0 and delta >= 0.05
            rec["ablation"] = {"method": "zero", "delta": _r(delta), "ci_low": _r(delta - half),
                               "ci_high": _r(delta + half), "delta_control": _r(rng.normal(0, 0.01)),
                               "specificity": _r(delta - 0.005), "z": _r(z), "p_value": _r(pv),
                               "validated": bool(validated)}
        neurons.append(rec)
    layer_summary = []
    for l in range(n_layers):
        m = layer == l
        sig = q[m] <= fdr_q
        layer_summary.append({
            "layer": l, "n_units": units, "n_significant": int(sig.sum()),
            "n_significant_positive": int((sig & (d[m] > 0)).sum()), "top_score": _r(score[m].max()),
            "max_selectivity": _r(d[m].max()), "mean_abs_selectivity": _r(np.abs(d[m]).mean()),
            "sum_score": _r(score[m].sum())})
    data: dict[str, Any] = {
        "schema_version": 1, "model": model,
        "model_info": {"name": model, "family": "synthetic", "modality": "text", "n_layers": n_layers,
                       "units": [units] * n_layers, "type": "Synthetic", "weights": "random"},
        "concept": concept,
        "concept_info": {"name": concept, "modality": "text", "n_positive": 60, "n_negative": 60,
                         "n_groups": min(len(texts), 6), "n_tasks": 0, "description": f"synthetic {concept}",
                         "groups": [f"group{g}" for g in range(min(len(texts), 6))], "source": "synthetic"},
        "layers": list(range(n_layers)), "n_positive": 60, "n_negative": 60, "n_neurons_scanned": n,
        "n_significant_fdr": int((q <= fdr_q).sum()), "fdr_q": fdr_q, "top_k": top_k,
        "settings": {"importance": True, "baseline": "zero", "pooling": "auto", "batch_size": 16, "device": "cpu",
                     "ablate": ablation, "split": "ranking half of the probe" if ablation else "all examples"},
        "confidence_head": {"kind": "logistic probe on mean-pooled last hidden state", "train_accuracy": 1.0,
                            "heldout_accuracy": 0.9},
        "timings_s": {"activation_pass": 1.0, "importance_pass": 1.0},
        "neurons": neurons, "layer_summary": layer_summary,
        "all_neurons": {
            "layers": list(range(n_layers)),
            **{key: [[_r(v, 4) for v in arr[layer == l].tolist()] for l in range(n_layers)]
               for key, arr in (("selectivity", d), ("consistency", cons), ("importance", imp), ("score", score))}},
    }
    if ablation:
        abl = [x["ablation"] for x in neurons if x["ablation"]]
        data["ablation_summary"] = {
            "method": "zero", "split": "held-out half of the probe", "min_effect": 0.05,
            "null": [{"layer": l, "mean": _r(rng.normal(0.005, 0.003)), "std": _r(abs(rng.normal(0.02, 0.005))),
                      "n": 50} for l in range(n_layers)],
            "joint_delta": _r(sum(a["delta"] for a in abl) * 0.8),
            "joint_ci_low": _r(sum(a["delta"] for a in abl) * 0.6), "joint_ci_high": _r(sum(a["delta"] for a in abl)),
            "importance_delta_spearman": 0.62,
            "audit": {"n_checked": 20, "n_missed": 1}, "n_validated": sum(bool(a["validated"]) for a in abl)}
    if emergence:
        points = []
        prev: set | None = None
        final = [(x["layer"], x["index"]) for x in neurons[:top_k]]
        for s, step in enumerate(range(0, 1000, 100)):
            frac = (s + 1) / 10
            top = []
            for j, (l, i) in enumerate(final):
                if rng.random() < frac:
                    top.append({"layer": l, "index": i, "selectivity": _r(frac * 2), "consistency": _r(frac * 0.8),
                                "score": _r(frac * 0.5 + 0.01 * j)})
            while len(top) < top_k:
                top.append({"layer": int(rng.integers(n_layers)), "index": int(rng.integers(units)),
                            "selectivity": _r(0.3), "consistency": _r(0.2), "score": _r(0.1)})
            cur = {(t["layer"], t["index"]) for t in top}
            points.append({"step": step, "top": top,
                           "n_significant_per_layer": {str(l): int(frac * layer_summary[l]["n_significant"])
                                                       for l in range(n_layers)},
                           "jaccard_prev": None if prev is None else _r(len(cur & prev) / len(cur | prev))})
            prev = cur
        data["emergence"] = points
    return data
