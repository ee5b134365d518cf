"""Test fixture: synthetic ``results.json`` dicts with the full schema (version 2), for the page, W&B and size tests.

The numbers are random (seeded) but internally consistent with the core's rules:

* selectivity: Cohen's d with its 95% CI (Hedges–Olkin standard error for the probe size),
  a Welch-like p-value, Benjamini–Hochberg q over every neuron, and the layer-scaled
  ``selectivity_layer`` (d with the variance floored at the layer's median variance, so
  quiet units lose their large d);
* roles (:func:`neurolens_lightning.ranking.neuron_roles`): ``candidate`` / ``suppressor``
  (FDR-significant, d > 0, layer-scaled d >= ``min_selectivity``; the sign of the importance
  decides) or none; the composite score follows
  :func:`neurolens_lightning.ranking.composite_score` on the layer-scaled d; neurons are
  ordered candidates, suppressors, the rest;
* ablation (``ablation=True``, interchange): the top-k candidates are tested for a drop, the top-k
  suppressors for a rise and ``named`` role-less neurons in the direction of their importance, against a
  heavy-tailed per-layer null, with the sequential empirical p, one Holm family over every tested neuron,
  a Holm-corrected specificity p, and ``causal`` / ``validated`` / ``reasons`` from
  :func:`neurolens_lightning.ablation.decide` and the verdict from
  :func:`neurolens_lightning.ablation.verdict_word` (so the words are the real ones);
  ``ablation_summary`` has every key of the core's (question, test, Holm family, FWER bound, direction
  rules, specificity test, the three outcome counts, the null quantiles, the joint set against random
  sets, the two-sided audit with its definition).

``planted`` sets how many neurons carry the concept (default: enough for ``top_k``
candidates); ``planted=0`` gives a probe with (almost surely) no candidates.

Example:
    >>> data = synthetic_results(n_layers=2, units=64, ablation=True, emergence=True)
    >>> data["n_neurons_scanned"], len(data["all_neurons"]["score"][0]), data["schema_version"]
    (128, 64, 2)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["synthetic_results"]

_POS = ["The [[king]] rode through the village at dawn.", "The [[queen]] smiled at the crowd.",
        "A [[prince]] knocked on the door.", "The [[monarch]] signed the law.",
        "The [[emperor]] rebuilt the city walls.", "She touched the golden [[crown]] carefully."]
_NEG = ["The [[farmer]] rode through the village at dawn.", "The [[teacher]] smiled at the class.",
        "A [[stranger]] knocked on the door.", "The [[clerk]] signed the form."]

_Y = "log-odds of the concept under a logistic probe on the last layer (nats)"


def _r(x: Any, nd: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else float(f"{x:.{nd}g}")


def _example(text: str, activation: float, positive: bool) -> dict[str, Any]:
    s = text.index("[[")
    e = text.index("]]") - 2
    plain = text.replace("[[", "").replace("]]", "")
    return {"activation": _r(activation), "positive": positive, "position": len(plain[:s].split()) + 1,
            "text": plain, "span": [s, e]}


def _bh(p: np.ndarray) -> np.ndarray:
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.empty(n)
    q[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return q


def _null_row(layer: int, vals: np.ndarray, n_layer: int) -> dict[str, Any]:
    q = np.quantile(vals, [0.05, 0.5, 0.95, 0.99])
    z = (vals - vals.mean()) / vals.std()
    return {"layer": layer, "n": int(len(vals)), "n_available": n_layer, "mean": _r(vals.mean()),
            "std": _r(vals.std(ddof=1)), "q05": _r(q[0]), "median": _r(q[1]), "q95": _r(q[2]), "q99": _r(q[3]),
            "min": _r(vals.min()), "max": _r(vals.max()), "excess_kurtosis": _r(float(np.mean(z ** 4) - 3.0))}


def synthetic_results(n_layers: int = 6, units: int = 1536, top_k: int = 10, max_neurons: int = 500,
                      ablation: bool = False, emergence: bool = False, seed: int = 0,
                      model: str = "synthetic-model", concept: str = "royalty",
                      positive_texts: list[str] | None = None, fdr_q: float = 0.05, min_selectivity: float = 0.5,
                      planted: int | None = None, n_examples: int = 60, warnings: Sequence[str] = (),
                      ablation_warnings: Sequence[str] = (), named: int = 2) -> dict[str, Any]:
    """A results dict of ``n_layers`` × ``units`` neurons with random, schema-conform scores.

    Args:
        positive_texts: probe sentences (``[[span]]`` marked) used in the top examples;
            e.g. to test that hostile text is escaped.
        planted: neurons that carry the concept (default ``min(n // 4, max(2 top_k + 4, 2% of n))``);
            about a quarter of them are suppressors (negative importance) and one is a quiet
            unit whose large d does not survive the layer scaling. 0: no concept neurons.
        n_examples: concept (= control) examples of the ranking split; below 20 the small-probe
            warning is added, as the core does.
        warnings, ablation_warnings: extra plain-text warnings (top level / ``ablation_summary``).
        named: with ``ablation``, this many neurons without a role are also tested (as ``scan(neurons=...)``,
            in the direction of their importance); the first has a large, specific effect, so the demo shows
            all three outcomes (validated, causal but not a candidate, not causal).
    """
    from neurolens_lightning.ablation import (DIRECTION_RULES, QUESTIONS, decide, held_out_split_text,
                                              sequential_p, verdict_word)
    from neurolens_lightning.results import no_candidates_warning, small_probe_warning

    rng = np.random.default_rng(seed)
    n = n_layers * units
    n_p = n_n = int(n_examples)
    layer = np.repeat(np.arange(n_layers), units)
    index = np.tile(np.arange(units), n_layers)
    depth_gain = 0.3 + 0.7 * np.sin(np.pi * (layer + 0.5) / n_layers)
    se0 = math.sqrt((n_p + n_n) / (n_p * n_n))
    d = rng.normal(0, se0, n)
    n_planted = min(n // 4, max(2 * top_k + 4, int(0.02 * n))) if planted is None else min(int(planted), n)
    planted_idx = rng.choice(n, size=n_planted, replace=False)
    d[planted_idx] = 0.9 + rng.gamma(2.0, 0.6, n_planted) * depth_gain[planted_idx]
    # pooled variance relative to the layer median: below the median the layer-scaled d shrinks
    var_ratio = rng.lognormal(0.0, 1.0, n)
    var_ratio[planted_idx] = np.maximum(var_ratio[planted_idx], 1.0) * np.exp(rng.normal(0.0, 0.2, n_planted)) + 0.2
    if n_planted >= 3:
        var_ratio[planted_idx[-1]] = 1e-3  # a near-silent unit: huge d, tiny layer-scaled d
    med = np.array([np.median(var_ratio[layer == l]) for l in range(n_layers)])[layer]
    d_layer = d * np.sqrt(var_ratio / np.maximum(var_ratio, med))
    se = np.sqrt((n_p + n_n) / (n_p * n_n) + d * d / (2 * (n_p + n_n)))
    ci_lo, ci_hi = d - 1.959964 * se, d + 1.959964 * se
    p = np.clip([math.erfc(abs(v) / se0 / math.sqrt(2)) for v in d.tolist()], 1e-300, 1.0)
    q = _bh(p)
    cons = np.where(d > 0, np.clip(rng.beta(2, 2, n) * np.tanh(np.maximum(d, 0) * 2), 0, 1), 0.0)
    cons[planted_idx] = np.clip(0.55 + 0.4 * rng.random(n_planted), 0, 1)
    imp = rng.normal(0, 1e-3, n) * (1 + 3 * np.maximum(d, 0))
    sign = np.where(np.arange(n_planted) % 4 == 3, -1.0, 1.0)  # every 4th planted neuron suppresses
    imp[planted_idx] = sign * np.abs(rng.normal(4e-3, 1.5e-3, n_planted)) * (1 + d[planted_idx])
    # composite score: geometric mean of d_layer+/(1+d_layer+), consistency, importance scaled within its sign
    dp = np.maximum(d_layer, 0)
    imp_u = np.zeros(n)
    for s in (1.0, -1.0):
        mag = np.maximum(s * imp, 0)
        if mag.max() > 0:
            imp_u = np.where(s * imp > 0, mag / mag.max(), imp_u)
    score = (dp / (1 + dp) * cons * imp_u) ** (1 / 3)
    eligible = (q <= fdr_q) & (d > 0) & (d_layer >= min_selectivity)
    role = np.where(eligible, np.where(imp < 0, 2, 1), 0)
    by_score = np.lexsort((-d, -score))
    order = np.concatenate([by_score[role[by_score] == r] for r in (1, 2, 0)])
    rank_of = np.empty(n, dtype=int)
    rank_of[order] = np.arange(1, n + 1)
    role_name = {0: None, 1: "candidate", 2: "suppressor"}
    mean_neg = rng.normal(0.0, 0.05, n)
    mean_pos = mean_neg + d * 0.2 * np.sqrt(var_ratio)
    texts = positive_texts or _POS
    cand_idx = [i for i in order if role[i] == 1][:top_k]
    supp_idx = [i for i in order if role[i] == 2][:top_k]

    # ---------------------------------------------------------------- ablation
    records: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] | None = None
    alpha, min_effect, h = 0.05, 0.04, 10
    n_ho = n_p  # held-out split of the same size
    if ablation:
        # the top-k candidates (a drop), the top-k suppressors (a rise) and ``named`` neurons without a role, tested
        # in the direction of their importance sign (as scan(neurons=...) does); the first named one has a large,
        # specific effect: causal, but not a candidate
        others = [i for i in order if role[i] == 0][:max(0, int(named))]
        tested = ([(i, "candidate", 1, "role") for i in cand_idx] + [(i, "suppressor", -1, "role") for i in supp_idx]
                  + [(i, "named", 1 if imp[i] >= 0 else -1, "importance") for i in others])
        m = max(len(tested), 1)  # one Holm family over every tested neuron
        n_max = max(1, math.ceil(m / alpha))
        layers_t = sorted({int(layer[i]) for i, *_ in tested})
        null = {l: 0.01 * rng.standard_t(3, size=min(n_max, units - 1)) + 0.002 for l in layers_t}
        rows = []
        for k, (i, kind, s, rule) in enumerate(tested):
            if kind == "candidate":
                delta = float(rng.gamma(2, 0.05) if k % 3 != 2 else rng.normal(0.0, 0.02))
            elif kind == "suppressor":
                delta = float(-rng.gamma(2, 0.03) if k % 2 == 0 else rng.normal(0.0, 0.02))
            else:
                delta = float(s * 0.3) if i == others[0] else float(rng.normal(0.0, 0.01))
            half = float(abs(rng.normal(0.03, 0.01)))
            dc = float(rng.normal(0, 0.01))
            spec = delta - dc
            # one-sided p of s·(Δ − Δ_control) <= 0 from the bootstrap's normal approximation
            sp = 0.5 * math.erfc(s * spec / (1.2 * half / 1.959964) / math.sqrt(2))
            pv, g, used = sequential_p(s * delta, [s * x for x in null[int(layer[i])]], h)
            rows.append((i, kind, s, rule, delta, half, dc, spec, max(sp, 1.0 / 2001), pv, g, used))

        def holm(ps: list[float]) -> list[float]:
            out, run = [0.0] * len(ps), 0.0
            for rank, j in enumerate(sorted(range(len(ps)), key=lambda j: ps[j])):
                run = max(run, min(1.0, ps[j] * (len(ps) - rank)))
                out[j] = run
            return out

        p_holm = holm([r[9] for r in rows])
        sp_holm = holm([r[8] for r in rows])
        for (i, kind, s, rule, delta, half, dc, spec, sp, pv, g, used), ph, sph in zip(rows, p_holm, sp_holm):
            ci = (delta - half, delta + half)
            spec_ci = (spec - 1.2 * half, spec + 1.2 * half)
            selective = (role[i] == 1 and s > 0) or (role[i] == 2 and s < 0)
            causal, ok, reasons = decide(delta, s, ci, sph, ph, alpha, min_effect, bool(selective))
            causal, ok = bool(causal), bool(ok)
            L = len(null[int(layer[i])])
            records[i] = {
                "method": "interchange", "tested_as": kind, "direction": "drop" if s > 0 else "rise",
                "direction_rule": rule, "delta": _r(delta), "ci_low": _r(ci[0]), "ci_high": _r(ci[1]),
                "t": _r(delta / (half / 1.959964)), "delta_control": _r(dc), "specificity": _r(spec),
                "specificity_ci_low": _r(spec_ci[0]), "specificity_ci_high": _r(spec_ci[1]),
                "specificity_p": _r(sp), "specificity_p_holm": _r(sph),
                "p_value": _r(pv), "p_holm": _r(ph), "null_n": used, "null_exceedances": g,
                "p_floor": _r(1.0 / (L + 1)), "causal": causal, "validated": ok,
                "verdict": verdict_word(causal, ok, s), "reasons": reasons}
        cd = [r[4] for r in rows if r[2] > 0]
        joint = sum(cd) * 0.8 if cd else None
        low_imp = np.flatnonzero(np.isin(layer, layers_t) & (np.abs(imp) <= np.median(np.abs(imp))))
        audit = []
        for j in rng.choice(low_imp, size=min(20, len(low_imp)), replace=False) if len(low_imp) else []:
            delta = float(0.01 * rng.standard_t(3) + 0.002)
            pv, g, used = sequential_p(abs(delta), list(np.abs(null[int(layer[j])])), h)
            audit.append({"layer": int(layer[j]), "index": int(index[j]), "delta": _r(delta),
                          "ci_low": _r(delta - 0.02), "ci_high": _r(delta + 0.02), "p_value": _r(pv),
                          "tested": "two-sided", "above_null": bool(pv <= alpha and abs(delta) >= min_effect)})
        # what a random neuron of the same layers reaches under the audit's rule, from the nulls
        expected = 0.0
        for a in audit:
            nv = np.abs(null[a["layer"]])
            expected += float(np.mean((nv > np.quantile(nv, 1 - alpha)) & (nv >= min_effect)))
        split = held_out_split_text(n_ho, n_ho)
        n_joint_sets = 99
        joint_p = 1.0 / (n_joint_sets + 1) if cd else None
        n_causal = sum(int(r["causal"]) for r in records.values())
        n_valid = sum(int(r["validated"]) for r in records.values())
        rules = sorted({r[3] for r in rows})
        summary = {
            "method": "interchange", "question": QUESTIONS["interchange"], "split": split,
            "n_concept_inputs": n_ho, "n_control_inputs": n_ho, "y": _Y,
            "min_effect": min_effect, "alpha": alpha, "replicas": 8,
            "statistic": "mean Δ over the held-out concept inputs (t = Δ / its standard error is reported beside it)",
            "test": (f"one-sided empirical p of Δ against random neurons of the same layer under the "
                     f"same intervention, sampled sequentially (Besag-Clifford, h = {h}, up to {n_max} per "
                     f"layer); Holm over all {len(rows)} tested neurons together (drops and rises, one family)"),
            "holm_family": f"all {len(rows)} tested neurons of this scan (one family)",
            "fwer_bound": (f"P(any tested neuron falsely called beyond the null) <= {alpha:g} over the {len(rows)} "
                           "tested neurons"),
            "direction_rules": {r: DIRECTION_RULES[r] for r in rules},
            "specificity_test": ("one-sided bootstrap p of s·(mean Δ on concept inputs − mean Δ on control inputs) "
                                 "<= 0, the same intervention and the same y on both, Holm over the tested neurons"),
            "n_tested": len(rows), "n_candidates": len(cand_idx), "n_suppressors": len(supp_idx),
            "n_named": len(others), "null_needed": n_max, "null_rounds": 1,
            "null": [_null_row(l, null[l], units - sum(int(layer[i]) == l for i, *_ in tested)) for l in layers_t],
            "joint_delta": _r(joint), "joint_ci_low": _r(joint * 0.75) if cd else None,
            "joint_ci_high": _r(joint * 1.2) if cd else None,
            "joint_delta_control": _r(rng.normal(0, 0.01)) if cd else None,
            "joint_specificity_ci": [_r(joint * 0.7), _r(joint * 1.25)] if cd else None,
            "joint_size": len(cd), "joint_p_null": _r(joint_p), "joint_null_n": n_joint_sets if cd else None,
            "joint_t": _r(joint / (0.2 * abs(joint) + 1e-9)) if cd else None,
            "joint_beyond_null": bool(cd and joint_p <= alpha and joint * 0.75 > 0) if cd else None,
            "joint_direction": "drop" if cd else None,
            "importance_delta_spearman": 0.62 if rows else None,
            "audit": {"n_checked": len(audit), "n_above_null": sum(a["above_null"] for a in audit),
                      "expected_by_chance": round(expected, 3),
                      "definition": ("neurons whose |importance| is in the bottom half of the tested layers, each "
                                     "tested two-sided (|t| against the layer's null); above_null = p <= alpha and "
                                     "|Δ| >= min_effect; expected_by_chance = the number a random neuron of the same "
                                     "layers would reach under the same rule, from the layer's null"),
                      "neurons": audit} if rows else None,
            "n_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "drop"),
            "n_suppressors_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "rise"),
            "n_causal": n_causal, "n_causal_not_candidate": n_causal - n_valid, "n_not_causal": len(rows) - n_causal,
            "warnings": list(ablation_warnings),
        }
        for l in layers_t:  # as the core: a layer too small for the smallest p to pass Holm
            if (len(null[l]) + 1) * alpha < m:
                summary["warnings"].append(
                    f"layer {l} has only {len(null[l])} other neurons to compare with: the smallest possible p, "
                    f"1/{len(null[l]) + 1} = {1 / (len(null[l]) + 1):.3g}, cannot pass the Holm threshold alpha/m = "
                    f"{alpha:g}/{m} = {alpha / m:.3g}; test fewer neurons (--top-k) to validate any")
        if not rows:
            summary["warnings"].insert(0, "nothing to ablate: the ranking has no candidates or suppressors and no "
                                          "neuron was named, so nothing was tested and nothing is validated")

    # ---------------------------------------------------------------- neurons
    listed = list(order[:max(top_k, min(max_neurons, n))])
    listed += sorted((i for i in records if i not in set(listed)), key=lambda i: rank_of[i])
    shown = set(supp_idx) | set(records)
    neurons = []
    for i in listed:
        r = int(rank_of[i])
        g = len(texts)
        rec: dict[str, Any] = {
            "layer": int(layer[i]), "index": int(index[i]), "role": role_name[int(role[i])],
            "selectivity": _r(d[i]), "selectivity_ci": [_r(ci_lo[i], 4), _r(ci_hi[i], 4)],
            "selectivity_layer": _r(d_layer[i]), "selectivity_p": _r(p[i]), "selectivity_q": _r(q[i]),
            "consistency": _r(cons[i]), "importance": _r(imp[i]), "importance_zero": _r(imp[i]),
            "importance_mean": _r(imp[i] * 0.7), "score": _r(score[i]), "rank": r,
            "mean_pos": _r(mean_pos[i]), "mean_neg": _r(mean_neg[i]),
            "group_d": [_r(d[i] + rng.normal(0, 0.3), 4) for _ in range(min(g, 6))],
            "ablation": records.get(i),
        }
        if r <= max(top_k, 20) or i in shown:
            acts = sorted(rng.gamma(2, 1, 3), reverse=True)
            rec["top_examples"] = [_example(texts[(r + j) % g], acts[j], True) if j < 2 else
                                   _example(_NEG[(r + j) % len(_NEG)], acts[j], False) for j in range(3)]
        neurons.append(rec)
    layer_summary = []
    for l in range(n_layers):
        msk = layer == l
        sig = q[msk] <= fdr_q
        layer_summary.append({
            "layer": l, "n_units": units, "n_significant": int(sig.sum()),
            "n_significant_positive": int((sig & (d[msk] > 0)).sum()), "top_score": _r(score[msk].max()),
            "max_selectivity": _r(d[msk].max()), "mean_abs_selectivity": _r(np.abs(d[msk]).mean()),
            "sum_score": _r(score[msk].sum())})
    n_cand, n_supp = int((role == 1).sum()), int((role == 2).sum())
    all_warnings = [w for w in [small_probe_warning(n_p, n_n)] if w]
    if n_cand == 0:
        all_warnings.append(no_candidates_warning(fdr_q, min_selectivity))
    for w in list(warnings) + list((summary or {}).get("warnings") or []):
        if w not in all_warnings:
            all_warnings.append(w)
    split = (f"ranked on the ranking split ({n_p} concept and {n_n} control examples); the disjoint held-out split "
             "is kept for ablation" if ablation else
             f"all {n_p} concept and {n_n} control examples")
    data: dict[str, Any] = {
        "schema_version": 2, "model": model,
        "model_info": {"name": model, "family": "synthetic", "modality": "text", "n_layers": n_layers,
                       "units": [units] * n_layers, "type": "Synthetic", "weights": "random"},
        "concept": concept,
        "concept_info": {"name": concept, "modality": "text", "n_positive": n_p, "n_negative": n_n,
                         "n_groups": min(len(texts), 6), "n_tasks": 0, "description": f"synthetic {concept}",
                         "groups": [f"group{g}" for g in range(min(len(texts), 6))], "source": "synthetic"},
        "layers": list(range(n_layers)), "n_positive": n_p, "n_negative": n_n, "n_neurons_scanned": n,
        "n_significant_fdr": int((q <= fdr_q).sum()), "fdr_q": fdr_q, "min_selectivity": min_selectivity,
        "n_candidates": n_cand, "n_suppressors": n_supp, "warnings": all_warnings, "top_k": top_k,
        "settings": {"importance": True, "baseline": "zero", "pooling": "span", "batch_size": 16, "device": "cpu",
                     "ablate": ablation, "split": split},
        "confidence_head": {"kind": "logistic probe on mean-pooled last hidden state", "train_accuracy": 1.0,
                            "heldout_accuracy": 0.9},
        "timings_s": {"load_model": 2.0, "activation_pass": 1.0, "importance_pass": 1.0, "statistics": 0.1,
                      **({"ablation": 20.0} if ablation else {}), "total": 24.2 if ablation else 4.2},
        "neurons": neurons, "layer_summary": layer_summary,
    }
    if summary is not None:
        data["ablation_summary"] = summary
    data["all_neurons"] = {
        "layers": list(range(n_layers)),
        **{key: [[_r(v, 4) for v in arr[layer == l].tolist()] for l in range(n_layers)]
           for key, arr in (("selectivity", d), ("consistency", cons), ("importance", imp), ("score", score))}}
    if emergence:
        # a timeline as the callback writes it: each point's ranking head (with roles), the counts, the headline
        # (mean d of the top_k most selective neurons) and ``tracked``: the final head's scores at every point
        points = []
        prev: set | None = None
        final = [(x["layer"], x["index"]) for x in neurons[:top_k]]
        steps = list(range(0, 1000, 100))
        growth = {key: rng.uniform(0.2, 0.6) for key in final}  # each final top neuron's value at step 0, relative
        for s_, step in enumerate(steps):
            frac = s_ / (len(steps) - 1)
            top = []
            for j, (l, i) in enumerate(final):
                if rng.random() < 0.15 + 0.85 * frac:
                    top.append({"layer": l, "index": i, "role": "candidate" if frac > 0.3 else None,
                                "selectivity": _r(2 * (growth[(l, i)] + (1 - growth[(l, i)]) * frac)),
                                "consistency": _r(0.8 * frac), "importance": _r(1e-3 * (1 + frac)),
                                "score": _r(0.5 * (growth[(l, i)] + (1 - growth[(l, i)]) * frac) + 0.01 * j)})
            while len(top) < top_k:
                top.append({"layer": int(rng.integers(n_layers)), "index": int(rng.integers(units)), "role": None,
                            "selectivity": _r(0.3), "consistency": _r(0.2), "importance": _r(1e-4),
                            "score": _r(0.1)})
            tracked = []
            for j, (l, i) in enumerate(final):
                g = growth[(l, i)] + (1 - growth[(l, i)]) * frac
                tracked.append({"layer": l, "index": i, "role": "candidate" if frac > 0.3 else None,
                                "selectivity": _r(2 * g), "consistency": _r(0.8 * frac), "importance": _r(1e-3 * g),
                                "score": _r(0.5 * g + 0.01 * j)})
            cur = {(t["layer"], t["index"]) for t in top}
            per_layer = {str(l): int((0.2 + 0.8 * frac) * layer_summary[l]["n_significant"]) for l in range(n_layers)}
            points.append({"step": step, "epoch": 0, "reason": "start" if s_ == 0 else "step", "concept": concept,
                           "top": top, "tracked": tracked, "n_significant": sum(per_layer.values()),
                           "n_candidates": int(round((0.1 + 0.9 * frac) * n_cand)),
                           "n_significant_per_layer": per_layer,
                           "most_selective_mean": _r(1.2 + 1.3 * frac),
                           "jaccard_prev": None if prev is None else _r(len(cur & prev) / len(cur | prev))})
            prev = cur
        data["emergence"] = points
    return data
