"""One self-contained HTML report per scan: :func:`write_report`.

The page is a thin template around plotly's own serialisation: plotly.js is inlined once
(``plotly.offline.get_plotlyjs()``) and each figure is rendered with
``plotly.io.to_html(fig, full_html=False, include_plotlyjs=False, div_id=...)`` (plotly
escapes ``<``, ``>`` and ``/`` inside the embedded JSON, so no data can close the script
tag). Everything else is plain HTML built here, and every user-provided string (probe
text, concept name and description, model name, paths, settings) goes through
:func:`html.escape`. Every number on the page is read from the results dict.

Example:
    >>> import json
    >>> data = json.load(open("reports/minilm-royalty/results.json"))      # doctest: +SKIP
    >>> write_report(data, "reports/minilm-royalty/report.html")            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import plotly.io as pio
import plotly.offline

from neurolens_lightning.report import figures as F

__all__ = ["write_report", "render_report", "summary_sentences", "all_warnings", "PLOTLY_CONFIG"]

#: plotly config of every chart on the page
PLOTLY_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True,
                                 "modeBarButtonsToRemove": ["select2d", "lasso2d"]}

_CAPTIONS = {
    "layers": "How many neurons of each layer respond to the concept significantly (after false-discovery-rate "
              "control), split by the sign of the effect, with the best composite score of the layer.",
    "heatmap": None,  # filled from heatmap_reduction()
    "scatter": "Each dot is a neuron. Right = fires more on the concept than on the controls; up = does so for "
               "every phrasing group; colour = predicted effect on the model's concept confidence (the scale is "
               "symmetric and covers every ringed neuron). The ringed dots are the top candidates (the best-ranked "
               "labelled where a label fits; hover names every one), the diamonds the top suppressors.",
    "sankey": "Concept → layer → status of each top candidate and suppressor. See the definitions at the bottom "
              "for what the statuses mean.",
    "ablation": None,  # filled from the ablation summary (_ablation_caption)
    "crossconcept": None,  # filled from cross_concept (_cross_concept_caption)
    "emergence": "How the concept's neurons appeared during training. Top: the headline, the mean selectivity d "
                 "of the most selective neurons at each probe point (dotted: its value at the first point, the "
                 "baseline). Then the FDR-significant neurons per layer (blue, darker = deeper), the composite "
                 "score of the final top neurons at every probe point (each its own colour; a filled marker where "
                 "the neuron was a candidate at that point, open where it was not yet), and how stable the top-k "
                 "set was from one point to the next.",
}
_SECTION_TITLES = {
    "layers": "Layers", "heatmap": "All neurons", "scatter": "Selectivity and consistency",
    "sankey": "Candidates", "ablation": "Causal validation", "crossconcept": "Other concepts",
    "emergence": "Emergence over training",
}


# ---------------------------------------------------------------------------- formatting
def _e(s: Any) -> str:
    """HTML-escape any value (None -> empty)."""
    return "" if s is None else html.escape(str(s), quote=True)


def _isnum(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _fmt(x: Any, nd: int = 3) -> str:
    """A number for display: ``—`` for missing, thousands separators for ints, ``nd`` significant digits."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "—" if x is None else _e(x)
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.2e}"
    if abs(x) >= 10 ** nd:
        return f"{x:,.0f}"
    return f"{x:#.{nd}g}".rstrip(".")


def _g(x: Any) -> str:
    """A parameter value as written (0.05, not 0.0500)."""
    return f"{x:g}" if _isnum(x) and not isinstance(x, int) else _fmt(x)


def _pct(num: Any, den: Any) -> str:
    if not (_isnum(num) and _isnum(den)) or den == 0:
        return ""
    return f" ({100.0 * num / den:.1f}%)"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _ci(lo: Any, hi: Any) -> str:
    """``[lo, hi]`` or an empty string when either end is missing."""
    return f"[{_fmt(lo)}, {_fmt(hi)}]" if _isnum(lo) and _isnum(hi) else ""


def _plural(n: Any, one: str, many: str | None = None) -> str:
    return f"{_fmt(n)} {one if n == 1 else (many or one + 's')}"


def _y_unit(summ: dict[str, Any]) -> str:
    """The unit of y from the summary's description (``... (nats)`` -> ``nats``), else empty."""
    m = re.search(r"\(([^()]*)\)\s*$", str(summ.get("y") or ""))
    return m.group(1).strip() if m else ""


def _with_unit(x: Any, summ: dict[str, Any]) -> str:
    unit = _y_unit(summ)
    return f"{_g(x)}{' ' + _e(unit) if unit else ''}"


def _p_html(a: dict[str, Any]) -> str:
    """The ablation p-value with the null it came from (never below ``p_floor``), HTML-escaped."""
    return _e(F.p_value_text(a))


def all_warnings(data: dict[str, Any]) -> list[str]:
    """Every warning of the results (top level, then the ablation summary's), each once, in order."""
    out: list[str] = []
    summ = data.get("ablation_summary") or {}
    for w in list(data.get("warnings") or []) + list(summ.get("warnings") or []):
        if w and str(w) not in out:
            out.append(str(w))
    return out


def _warnings_html(data: dict[str, Any]) -> str:
    ws = all_warnings(data)
    if not ws:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in ws)
    return (f"<div class='warnbox' role='alert'><div class='warn-title'>⚠ {_plural(len(ws), 'warning')} about "
            f"this scan</div><ul>{items}</ul></div>")


# ---------------------------------------------------------------------------- summary
def _carrying_layers(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Layers with at least half as many positively selective neurons as the best layer."""
    summ = [s for s in data.get("layer_summary") or [] if _isnum(s.get("n_significant_positive"))]
    if not summ:
        return []
    best = max(s["n_significant_positive"] for s in summ)
    if best <= 0:
        return []
    top = [s for s in summ if s["n_significant_positive"] >= 0.5 * best]
    top.sort(key=lambda s: -s["n_significant_positive"])
    return top[:5]


def _neuron_name(n: dict[str, Any]) -> str:
    return f"neuron {_e(n.get('index'))} of layer {_e(n.get('layer'))}"


def _candidate_rule(data: dict[str, Any], plural: bool = False) -> str:
    return (f"fire{'' if plural else 's'} significantly more on the concept (FDR q ≤ {_g(data.get('fdr_q'))}) with "
            f"a layer-scaled d ≥ {_g(data.get('min_selectivity'))}")


def summary_sentences(data: dict[str, Any]) -> list[str]:
    """The plain-words summary as HTML paragraphs (all user text escaped), every number from ``data``."""
    out = []
    mi = data.get("model_info") or {}
    ci = data.get("concept_info") or {}
    model = _e(data.get("model") or mi.get("name") or "the model")
    arch = " ".join(_e(v) for v in (mi.get("type"), f"({mi['family']})" if mi.get("family") else None) if v)
    layers = data.get("layers") or []
    nl = mi.get("n_layers")
    layer_txt = (f"{len(layers)} of its {nl} layers" if _isnum(nl) and nl != len(layers) else
                 f"all {len(layers)} layers" if layers else "its layers")
    npos, nneg = data.get("n_positive"), data.get("n_negative")
    out.append(
        f"We scanned <b>{_fmt(data.get('n_neurons_scanned'))} neurons</b> in {layer_txt} of <b>{model}</b>"
        f"{' — ' + arch if arch else ''} for the concept <b>{_e(data.get('concept'))}</b>, comparing "
        f"<b>{_fmt(npos)}</b> concept examples with <b>{_fmt(nneg)}</b> control examples"
        f"{' in ' + _fmt(ci.get('n_groups')) + ' phrasing groups' if _isnum(ci.get('n_groups')) else ''}.")
    split = (data.get("settings") or {}).get("split")
    if split:
        out.append(f"<b>Examples</b>: {_e(split)}.")
    nsig, q = data.get("n_significant_fdr"), data.get("fdr_q")
    npos_sig = sum(int(s.get("n_significant_positive") or 0) for s in data.get("layer_summary") or [])
    sent = (f"<b>{_fmt(nsig)}</b> neurons{_pct(nsig, data.get('n_neurons_scanned'))} respond to the concept "
            f"significantly (Benjamini–Hochberg false discovery rate q = {_g(q)})")
    if data.get("layer_summary") and nsig:
        sent += f"; {_fmt(npos_sig)} of them fire more on the concept, the rest less"
    out.append(sent + ".")
    carry = _carrying_layers(data)
    n_scanned_layers = len(data.get("layer_summary") or [])
    if carry:
        parts = [f"layer {_e(s['layer'])} ({_fmt(s['n_significant_positive'])} of {_fmt(s.get('n_units'))})"
                 for s in carry[:3]]
        if n_scanned_layers >= 3 and len(carry) >= 0.6 * n_scanned_layers:
            out.append(f"The concept is spread over most layers ({len(carry)} of {n_scanned_layers} have at least "
                       f"half as many positively selective neurons as the best one); the most are in {_join(parts)}.")
        else:
            out.append(f"The concept is carried mostly by {_join(parts)} — counting neurons that fire "
                       f"significantly more on the concept.")
    out.append(_roles_sentence(data))
    cands = F.candidates(data)
    if cands:
        c = cands[0]
        by_layer: dict[Any, int] = {}
        for n in cands:
            by_layer[n.get("layer")] = by_layer.get(n.get("layer"), 0) + 1
        dist = _join([f"layer {_e(l)} ({k})" for l, k in sorted(by_layer.items(), key=lambda t: -t[1])])
        dci = c.get("selectivity_ci") if isinstance(c.get("selectivity_ci"), list) else [None, None]
        dci_txt = _ci(*(dci + [None, None])[:2])
        out.append(
            f"The strongest candidate is <b>{_neuron_name(c)}</b>: selectivity d = {_fmt(c.get('selectivity'))}"
            f"{' [95% CI ' + dci_txt[1:] if dci_txt else ''}"
            f"{', layer-scaled d = ' + _fmt(c.get('selectivity_layer')) if _isnum(c.get('selectivity_layer')) else ''}"
            f"; mean activation {_fmt(c.get('mean_pos'))} on concept examples vs {_fmt(c.get('mean_neg'))} on "
            f"control examples; consistency {_fmt(c.get('consistency'))}, importance {_fmt(c.get('importance'))}, "
            f"score {_fmt(c.get('score'))}. The top {_plural(len(cands), 'candidate')} sit in {dist}.")
    out.extend(_ablation_sentences(data))
    out.append(_emergence_sentence(data))
    head = data.get("confidence_head")
    if isinstance(head, dict) and _isnum(head.get("heldout_accuracy")):
        train = (f" (train {100 * head['train_accuracy']:.1f}%)" if _isnum(head.get("train_accuracy")) else "")
        out.append(f"The confidence head used for importance and ablation ({_e(head.get('kind') or 'probe')}) "
                   f"reaches <b>{100 * head['heldout_accuracy']:.1f}%</b> accuracy on held-out examples{train}.")
    return [s for s in out if s]


def _change(a: Any, b: Any, nd: int = 3) -> str:
    """``a → b (+d)`` for two numbers (``—`` for a missing one)."""
    if not (_isnum(a) and _isnum(b)):
        return f"{_fmt(a, nd)} → {_fmt(b, nd)}"
    d = b - a
    sign = "+" if d > 0 else ("−" if d < 0 else "±")
    return f"{_fmt(a, nd)} → {_fmt(b, nd)} ({sign}{_fmt(abs(d), nd)})"


def _emergence_sentence(data: dict[str, Any]) -> str:
    """One summary sentence on the training timeline (first point → last point), or empty without one."""
    h = F.emergence_headline(data.get("emergence") or [])
    if not h or h["n_points"] < 2:
        return ""
    s0, s1 = h["first"].get("step"), h["last"].get("step")
    parts = []
    if any(_isnum(v) for v in h["most_selective_mean"]):
        parts.append(f"the headline (mean selectivity d of the {_fmt(h['k'])} most selective neurons) went "
                     f"<b>{_change(*h['most_selective_mean'])}</b>")
    if any(_isnum(v) for v in h["n_significant"]):
        parts.append(f"FDR-significant neurons {_change(*h['n_significant'])}")
    if any(_isnum(v) for v in h["n_candidates"]):
        parts.append(f"candidates {_change(*h['n_candidates'])}")
    if not parts:
        return ""
    return (f"<b>Over training</b> ({_plural(h['n_points'], 'probe point')}, step {_e(s0)} → step {_e(s1)}), "
            f"{_join(parts)}; the first point is the baseline (see <a href='#sec-emergence'>Emergence</a>).")


def _baseline_html(data: dict[str, Any]) -> str:
    """What significance at the first probe point means, with that point's numbers: the emergence baseline."""
    h = F.emergence_headline(data.get("emergence") or [])
    if not h:
        return ""
    first, last = h["first"], h["last"]
    step = first.get("step")
    before = step == 0 or first.get("reason") == "start"
    when = (f"the first probe point (step {_e(step)}, before the first training step)" if before else
            f"the first probe point (step {_e(step)})")
    image = (data.get("concept_info") or {}).get("modality") == "image"
    nums = []
    if _isnum(first.get("n_significant")):
        verb = "were" if first["n_significant"] != 1 else "was"
        nums.append(f"<b>{_plural(first['n_significant'], 'neuron')}</b> {verb} already FDR-significant")
    if _isnum(first.get("n_candidates")):
        nums.append(f"<b>{_fmt(first['n_candidates'])}</b> qualified as candidates")
    if _isnum(first.get("most_selective_mean")):
        nums.append(f"the {_fmt(h['k'])} most selective neurons had a mean d of "
                    f"<b>{_fmt(first['most_selective_mean'])}</b>")
    if not nums:
        return ""
    text = (f"<b>The baseline.</b> At {when}, {_join(nums)}. "
            + ("A network at random initialisation already has neurons that separate the concept examples from the "
               "controls: random features respond to low-level differences between the two sets ("
               + ("brightness, contrast, stroke or edge density" if image else "word identity and frequency, length")
               + "), and with enough neurons some pass the test. "
               if before else
               "Part of that is present in any network, trained or not: random features respond to low-level "
               "differences between the two sets. ")
            + "So significance at this point is not a learned concept neuron: these counts are the baseline against "
              "which emergence is measured, and what matters is the change from them")
    changes = []
    if last is not first:
        if _isnum(first.get("n_significant")) and _isnum(last.get("n_significant")):
            changes.append(f"significant neurons {_change(first['n_significant'], last['n_significant'])}")
        if _isnum(first.get("n_candidates")) and _isnum(last.get("n_candidates")):
            changes.append(f"candidates {_change(first['n_candidates'], last['n_candidates'])}")
        if _isnum(first.get("most_selective_mean")) and _isnum(last.get("most_selective_mean")):
            changes.append(f"mean d of the {_fmt(h['k'])} most selective "
                           f"{_change(first['most_selective_mean'], last['most_selective_mean'])}")
    text += (f" (by step {_e(last.get('step'))}: {_join(changes)})." if changes else ".")
    return f"<p class='note baseline'>{text}</p>"


def _roles_sentence(data: dict[str, Any]) -> str:
    """How many neurons qualify as candidates and suppressors (schema 2), or plainly that none does."""
    nc, ns = data.get("n_candidates"), data.get("n_suppressors")
    if not _isnum(nc):
        return ""
    supp = ""
    if _isnum(ns) and ns:
        supp = (f" {'Another' if nc else 'Still,'} <b>{_plural(ns, 'neuron')}</b> "
                f"{'qualify' if ns != 1 else 'qualifies'} as {'suppressors' if ns != 1 else 'a suppressor'}: "
                "selective in the same way, but removing them is predicted to <i>raise</i> the concept confidence.")
    if nc == 0:
        return (f"<b>No neuron qualifies as a candidate</b>: none {_candidate_rule(data)} and non-negative "
                "importance, so this scan reports no concept neuron and <b>nothing was validated</b> as one." + supp)
    return (f"<b>{_plural(nc, 'neuron')} {'qualify' if nc != 1 else 'qualifies'} as "
            f"{'candidates' if nc != 1 else 'a candidate'}</b>: each {_candidate_rule(data)} and removing it is "
            "predicted to lower the concept confidence (importance ≥ 0)." + supp)


def _tested_groups(ab: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Ablated neurons by what they were tested as: ``candidate`` (a drop), ``suppressor`` (a rise), ``named``."""
    out: dict[str, list[dict[str, Any]]] = {"candidate": [], "suppressor": [], "named": []}
    for n in ab:
        a = n["ablation"]
        kind = a.get("tested_as") or ("suppressor" if a.get("direction") == "rise" else "candidate")
        out.setdefault(kind, []).append(n)
    return out


def _n_valid(neurons: list[dict[str, Any]]) -> str:
    return _fmt(sum(bool(n["ablation"].get("validated")) for n in neurons))


def _words(x: Any) -> str:
    """A sentence of results.json, HTML-escaped, with ``<=`` / ``>=`` shown as ≤ / ≥."""
    return _e(str(x).replace("<=", "≤").replace(">=", "≥")) if x is not None else ""


def outcome_counts(data: dict[str, Any]) -> dict[str, int]:
    """The three outcomes of the causal test: ``validated`` (candidates for a drop + suppressors for a rise),
    ``causal, not a candidate``, ``not causal`` and ``tested`` — from ``ablation_summary`` (``n_validated`` +
    ``n_suppressors_validated``, ``n_causal_not_candidate``, ``n_not_causal``), counted from the records where a
    summary lacks them (older results)."""
    summ = data.get("ablation_summary") or {}
    verdicts = [F.verdict_of(n["ablation"]) for n in F.ablated_neurons(data)]
    counted = {"validated": sum(v.startswith("validated") for v in verdicts),
               "causal, not a candidate": verdicts.count("causal, not a candidate"),
               "not causal": verdicts.count("not causal"), "tested": len(verdicts)}
    out = dict(counted)
    if _isnum(summ.get("n_validated")) or _isnum(summ.get("n_suppressors_validated")):
        out["validated"] = int(summ.get("n_validated") or 0) + int(summ.get("n_suppressors_validated") or 0)
    for key, field in (("causal, not a candidate", "n_causal_not_candidate"), ("not causal", "n_not_causal"),
                       ("tested", "n_tested")):
        if _isnum(summ.get(field)):
            out[key] = int(summ[field])
    return out


def _floor_note(a: dict[str, Any], summ: dict[str, Any]) -> str:
    """For a validated neuron whose Holm p is the smallest its null allows: say so (it is not borderline)."""
    m = summ.get("n_tested")
    if not a.get("validated") or not F.holm_at_floor(a, m):
        return ""
    L = round(1 / a["p_floor"]) if _isnum(a.get("p_floor")) and a["p_floor"] > 0 else None
    how = f"1/{L} × {_fmt(m)} tested" if L else f"p_floor × {_fmt(m)} tested"
    return f"the smallest p this null can give ({how})"


def _holm_html(a: dict[str, Any], summ: dict[str, Any]) -> str:
    note = _floor_note(a, summ)
    return f"Holm p = {_fmt(a.get('p_holm'))}" + (f" — {note}, not a borderline result" if note else "")


def _best_sentence(neurons: list[dict[str, Any]], summ: dict[str, Any], rise: bool) -> str:
    val = [n for n in neurons if n["ablation"].get("validated") and (n["ablation"].get("direction") == "rise") == rise]
    if not val:
        return ""
    best = max(val, key=lambda n: (-1 if rise else 1) * F._num(n["ablation"].get("delta")))
    a = best["ablation"]
    return (f"The largest validated {'rise' if rise else 'drop'} is {_neuron_name(best)}: Δ = {_fmt(a.get('delta'))} "
            f"{_ci(a.get('ci_low'), a.get('ci_high'))} (control inputs: {_fmt(a.get('delta_control'))}), "
            f"{_p_html(a)}, {_holm_html(a, summ)}.")


def _outcomes_sentence(data: dict[str, Any], ab: list[dict[str, Any]]) -> str:
    """How many tested neurons were validated, causal but not a candidate, not causal (ablation_summary)."""
    c = outcome_counts(data)
    groups = _tested_groups(ab)
    per = []
    if groups["candidate"]:
        per.append(f"{_n_valid(groups['candidate'])} of the {_plural(len(groups['candidate']), 'candidate')} tested "
                   "for a drop of y")
    if groups["suppressor"]:
        per.append(f"{_n_valid(groups['suppressor'])} of the {_plural(len(groups['suppressor']), 'suppressor')} "
                   "tested for a rise")
    if groups["named"]:
        per.append(f"{_n_valid(groups['named'])} of the {_plural(len(groups['named']), 'named neuron')}")
    cnc = c["causal, not a candidate"]
    return (f"Of the <b>{_plural(c['tested'], 'neuron')} tested</b>: "
            f"<b class='o-valid'>{_fmt(c['validated'])} validated</b>{' (' + ', '.join(per) + ')' if per else ''}; "
            f"<b class='o-cnc'>{_fmt(cnc)} causal, not a candidate</b>"
            + (" (every causal criterion met, but the ranking did not select "
               f"{'it' if cnc == 1 else 'them'} as concept-selective)" if cnc else "")
            + f"; <b class='o-not'>{_fmt(c['not causal'])} not causal</b>.")


def _ablation_sentences(data: dict[str, Any]) -> list[str]:
    ab = F.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not ab and not summ:
        if F.candidates(data):
            how = ("give the callback <code>ablate_top_k=k</code>" if data.get("emergence") else
                   "run the scan with <code>ablate=True</code> (or <code>--ablate</code>)")
            return [f"<b>No ablation was run</b>, so these candidates are correlational: {how} to test them "
                    "causally."]
        return ["<b>No ablation was run</b>."]
    method = _e(summ.get("method") or (ab[0]["ablation"].get("method") if ab else None) or "zero")
    question = summ.get("question")
    first = (f"<b>The causal test</b> asks: <span class='question'>{_words(question)}</span>"
             if question else f"<b>The causal test</b> ({method})")
    first = first.rstrip(".") + "."
    if summ.get("split"):
        first += f" It ran on <b>{_e(summ['split'])}</b>"
        first += f"; y is the {_e(summ['y'])}." if summ.get("y") else "."
    elif summ.get("y"):
        first += f" y is the {_e(summ['y'])}."
    if not ab:
        return [first + " <b>No neuron was tested</b>, so nothing was validated."]
    out = [first, _outcomes_sentence(data, ab)]
    best = " ".join(x for x in (_best_sentence(ab, summ, False), _best_sentence(ab, summ, True)) if x)
    if best:
        out.append(best)
    fam = []
    if summ.get("holm_family"):
        fam.append(f"Holm's correction runs over {_words(summ['holm_family'])}"
                   + (f": {_words(summ['fwer_bound'])}" if summ.get("fwer_bound") else "") + ".")
    joint = F.joint_text(summ, ab, control=True)
    if joint:
        fam.append(f"<span class='joint'>{_words(joint[0].upper() + joint[1:])}.</span>")
    if fam:
        out.append(" ".join(fam))
    more = []
    if _isnum(summ.get("importance_delta_spearman")):
        more.append(f"Importance (grad × activation) predicted the measured effects with Spearman ρ = "
                    f"{_fmt(summ['importance_delta_spearman'])}.")
    audit = summ.get("audit")
    if isinstance(audit, dict) and _isnum(audit.get("n_checked")):
        two = any((r or {}).get("tested") == "two-sided" for r in audit.get("neurons") or [] if isinstance(r, dict))
        more.append(f"Audit outside the ranking: {_fmt(audit.get('n_above_null'))} of "
                    f"{_plural(audit['n_checked'], 'low-importance neuron')} had an effect beyond random neurons "
                    f"({'each tested two-sided: ' if two else ''}p ≤ {_g(summ.get('alpha'))}, |Δ| ≥ "
                    f"{_with_unit(summ.get('min_effect'), summ)}); <b>{_g(audit.get('expected_by_chance'))}</b> "
                    "expected by chance.")
    if more:
        out.append(" ".join(more))
    return out


def _cross_concept_caption(data: dict[str, Any]) -> str:
    """What the cross-concept matrix shows, in words, from results.json."""
    cc = data.get("cross_concept") or {}
    shared = cc.get("shared") or []
    n = len(cc.get("neurons") or [])
    s = f"{_e(cc.get('definition'))}. "
    if shared:
        parts = [f"{_e(r['layer'])}:{_e(r['index'])} ({_e(', '.join(r.get('selective_for') or []))})" for r in shared]
        s += (f"<b>{len(shared)} of {n}</b> neurons are selective for more than one concept: {_join(parts)} — "
              "check them before steering.")
    else:
        s += f"None of the {n} neurons is selective for another of these concepts."
    return s


def _cards(data: dict[str, Any]) -> str:
    cards = [("neurons scanned", _fmt(data.get("n_neurons_scanned")),
              f"{len(data.get('layers') or [])} layers"),
             (f"significant at q = {_g(data.get('fdr_q'))}", _fmt(data.get("n_significant_fdr")),
              _pct(data.get("n_significant_fdr"), data.get("n_neurons_scanned")).strip(" ()") + " of scanned")]
    if _isnum(data.get("n_candidates")):
        cards.append(("candidates", _fmt(data["n_candidates"]),
                      f"+ {_plural(data.get('n_suppressors') or 0, 'suppressor')}"))
    cards.append(("examples", f"{_fmt(data.get('n_positive'))} / {_fmt(data.get('n_negative'))}",
                  "concept / control (ranking)"))
    ab = F.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not (ab or summ):
        cards.append(("validated by ablation", "—", "ablation not run"))
    head = data.get("confidence_head")
    if isinstance(head, dict) and _isnum(head.get("heldout_accuracy")):
        cards.append(("confidence head", f"{100 * head['heldout_accuracy']:.1f}%", "held-out accuracy"))
    stages, total, summed = timing_stages(data)
    if stages or total is not None:
        cards.append(("time" + (" of the final probe" if data.get("emergence") else "")
                      + (" (sum of the stages)" if summed else ""), _secs(total),
                      " · ".join(f"{_e(_STAGE_SHORT.get(k, k))}&nbsp;{_secs(v)}" for k, v in stages)))
    return _card_grid(cards) + _outcome_cards(data)


def _card_grid(cards: Sequence[tuple[str, str, str]], cls: str = "", colours: Sequence[str | None] = ()) -> str:
    colours = list(colours) + [None] * (len(cards) - len(colours))
    n = max(len(cards), 1)
    # columns chosen so that no row holds a lone tile: one row where the tiles fit (up to 8 on a wide page, 6 under
    # 1100 px), else two balanced rows; 2 columns on a phone
    cols = (n if n <= 8 else math.ceil(n / 2), n if n <= 6 else math.ceil(n / 2))
    out = []
    for (k, v, sub), c in zip(cards, colours):
        style = f" style='border-left:5px solid {c}'" if c else ""
        out.append(f"<div class='card'{style}><div class='card-v'>{v}</div><div class='card-k'>{k}</div>"
                   f"<div class='card-s'>{sub}</div></div>")
    return (f"<div class='cards grid{' ' + cls if cls else ''}' style='--cols:{cols[0]};--cols-narrow:{cols[1]}'>"
            + "".join(out) + "</div>")


def _outcome_cards(data: dict[str, Any]) -> str:
    """The causal test's tiles: tested, the three outcomes, the joint set (ablation_summary)."""
    ab = F.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not (ab or summ):
        return ""
    c = outcome_counts(data)
    nt = c["tested"]
    kinds = [f"{_fmt(summ.get(k))} {w}" for k, w in (("n_candidates", "candidates"), ("n_suppressors", "suppressors"),
                                                      ("n_named", "named")) if _isnum(summ.get(k)) and summ.get(k)]
    nv, nsv = summ.get("n_validated"), summ.get("n_suppressors_validated")
    split = (f"{_fmt(nv)} candidate{'' if nv == 1 else 's'} (drop)"
             + (f" · {_fmt(nsv)} suppressor{'' if nsv == 1 else 's'} (rise)" if _isnum(nsv) and
                (nsv or summ.get("n_suppressors")) else "")) if _isnum(nv) else f"of {_fmt(nt)} tested"
    cards = [("neurons tested", _fmt(nt), " · ".join(kinds) or "by the causal test"),
             ("validated", _fmt(c["validated"]), split),
             ("causal, not a candidate", _fmt(c["causal, not a candidate"]), "causal, but not selected by the ranking"),
             ("not causal", _fmt(c["not causal"]), f"of {_fmt(nt)} tested")]
    colours = [None, F.STATUS_COLORS["validated"], F.STATUS_COLORS["causal, not a candidate"],
               F.STATUS_COLORS["not causal"]]
    beyond = summ.get("joint_beyond_null")
    if _isnum(summ.get("joint_delta")) and beyond is not None:
        n, p = summ.get("joint_null_n"), summ.get("joint_p_null")
        cards.append(("joint set" + (f" of {_fmt(summ.get('joint_size'))}" if _isnum(summ.get("joint_size")) else ""),
                      "<span class='card-word'>" + ("beyond" if beyond else "not beyond") + "</span>",
                      (f"{_fmt(n)} random sets of the same size, p = {p:.2g}" if _isnum(p) and _isnum(n)
                       else "random sets of the same size")))
        colours.append(F.STATUS_COLORS["validated"] if beyond else F.STATUS_COLORS["not causal"])
    method = _e(summ.get("method") or "")
    return (f"<div class='cards-title'>Causal test{' (' + method + ')' if method else ''}</div>"
            + _card_grid(cards, "outcomes", colours))


# ---------------------------------------------------------------------------- timings
#: names of the timed stages (``timings_s`` keys), in the order they run
_STAGES = {"load_model": "loading the model", "scoring_pass": "scoring pass (activations and importance, fused)",
           "activation_pass": "activation pass", "importance_pass": "importance pass (backward)", "statistics": "statistics and ranking",
           "ablation": "ablation (causal test)", "cross_concept": "cross-concept specificity"}
_STAGE_SHORT = {"load_model": "load", "scoring_pass": "scoring", "activation_pass": "activations", "importance_pass": "importance",
                "statistics": "statistics", "ablation": "ablation", "cross_concept": "cross-concept"}


def timing_stages(data: dict[str, Any]) -> tuple[list[tuple[str, float]], float | None, bool]:
    """``timings_s`` as (stages in run order, total, whether the total is the sum of the stages because
    results.json has none)."""
    t = {k: v for k, v in (data.get("timings_s") or {}).items() if _isnum(v)}
    order = list(_STAGES) + sorted(k for k in t if k not in _STAGES and k != "total")
    stages = [(k, float(t[k])) for k in order if k in t]
    if "total" in t:
        return stages, float(t["total"]), False
    return stages, (sum(v for _, v in stages) if stages else None), bool(stages)


def _secs(x: Any) -> str:
    if not _isnum(x):
        return "—"
    if x < 0.01:
        return "&lt;&nbsp;0.01&nbsp;s"
    return f"{x:.2g}&nbsp;s" if x < 10 else f"{x:,.0f}&nbsp;s"


def _timings_table(data: dict[str, Any]) -> str:
    stages, total, summed = timing_stages(data)
    if not stages and total is None:
        return ""
    rows = [(_STAGES.get(k, k), v) for k, v in stages]
    rows.append(("total (sum of the stages)" if summed else "total", total))
    body = "".join(f"<tr><th>{_e(k)}</th><td class='num'>{_secs(v)}</td></tr>" for k, v in rows)
    title = "time of the final probe" if data.get("emergence") else "time"
    return f"<div class='kv'><h4>{title}</h4><table class='times'>{body}</table></div>"


# ---------------------------------------------------------------------------- examples
_DATA_URI = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


def _thumb(path: str, data: dict[str, Any], size: int = 72, label: str | None = None) -> str:
    """An ``<img>`` of an image example: a file (resolved next to the probe file when relative) shrunk to
    ``size`` px and inlined, or an inlined PNG as the callback writes it (``data:image/png;base64,...``);
    the path as text when the file cannot be read."""
    alt = _e(label or Path(path).name) if not path.startswith("data:") else _e(label or "image example")
    if path.startswith("data:"):
        if not _DATA_URI.fullmatch(path):
            return "<span class='path'>(unreadable inline image)</span>"
        return f"<img class='thumb' alt='{alt}' title='{alt}' src='{path}'>"
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        src = (data.get("concept_info") or {}).get("source")
        if src:
            p = Path(src).parent / p
    try:
        from PIL import Image

        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        return (f"<img class='thumb' alt='{alt}' title='{_e(path)}' "
                f"src='data:image/png;base64,{b64}'>")
    except Exception:  # missing file or no PIL: show the path
        return f"<span class='path'>{_e(path)}</span>"


@functools.lru_cache(maxsize=16)
def _probe_image_groups(source: str, mtime_ns: int) -> dict[str, str]:
    """``{resolved image path: group}`` of an image probe JSON file (``mtime_ns`` keys the cache)."""
    del mtime_ns
    path = Path(source)
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    if not isinstance(raw, dict) or raw.get("modality") != "image" or not isinstance(raw.get("groups"), dict):
        return out
    for group, items in raw["groups"].items():
        for item in items if isinstance(items, list) else []:
            p = Path(str(item))
            p = p if p.is_absolute() else path.parent / p
            for f in (sorted(p.iterdir()) if p.is_dir() else [p]):
                out[str(f.resolve())] = str(group)
    return out


def _group_of_image(path: str, data: dict[str, Any]) -> str | None:
    """The phrasing group of an image example, looked up in the probe file the scan was loaded from."""
    src = str((data.get("concept_info") or {}).get("source") or "")
    src = re.sub(r"\s*\[[^\]]*split\]\s*$", "", src)  # "probe.json [ranking split]"
    try:
        probe = Path(src)
        if not src or probe.suffix.lower() != ".json" or not probe.is_file():
            return None
        p = Path(path)
        p = p if p.is_absolute() or p.exists() else probe.parent / p
        return _probe_image_groups(str(probe.resolve()), probe.stat().st_mtime_ns).get(str(p.resolve()))
    except Exception:  # an unreadable probe file: no group, the file name is the label
        return None


def _image_label(rec: dict[str, Any], data: dict[str, Any] | None = None) -> str:
    """The label under an image thumbnail: the example's ``label`` (the callback writes the group, or
    ``control``), else ``control`` for a control example, else its group in the probe file, else the file name
    without its extension."""
    if rec.get("label"):
        return str(rec["label"])
    if not rec.get("positive"):
        return "control"
    img = str(rec.get("image") or "")
    if img and not img.startswith("data:"):
        return (_group_of_image(img, data) if data else None) or Path(img).stem
    return "concept"


def _text_html(rec: dict[str, Any]) -> str:
    text = str(rec.get("text") or "")
    span = rec.get("span")
    if (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, int) for v in span)
            and 0 <= span[0] < span[1] <= len(text)):
        s, e = span
        body = f"{_e(text[:s])}<mark>{_e(text[s:e])}</mark>{_e(text[e:])}"
    else:
        body = _e(text)
    tokens, pos = rec.get("tokens"), rec.get("position")
    if isinstance(tokens, list) and isinstance(pos, int) and 0 <= pos < len(tokens):
        body += f" <span class='tok'>strongest token: <code>{_e(tokens[pos])}</code></span>"
    return body


def _image_tiles(exs: Sequence[dict[str, Any]], data: dict[str, Any]) -> str:
    """Image examples as tiles: the thumbnail framed in the class colour, its label and the activation."""
    tiles = []
    for r in exs:
        label = _image_label(r, data)
        cls = "pos" if r.get("positive") else "ctrl"
        kind = "concept" if r.get("positive") else "control"
        tiles.append(f"<div class='ex-img {cls}' title='{_e(label)} ({kind} example), activation "
                     f"{_fmt(r.get('activation'))}'>{_thumb(str(r['image']), data, label=label)}"
                     f"<div class='ex-lab'>{_e(label)}</div><div class='ex-act'>{_fmt(r.get('activation'))}</div>"
                     "</div>")
    return f"<div class='ex-imgs'>{''.join(tiles)}</div>"


def _examples_html(neuron: dict[str, Any], data: dict[str, Any], limit: int = 3) -> str:
    exs = [r for r in neuron.get("top_examples") or [] if isinstance(r, dict)][:limit]
    if not exs:
        return "<span class='muted'>—</span>"
    if all(r.get("image") for r in exs):
        return _image_tiles(exs, data)
    rows = []
    for r in exs:
        badge = ("<span class='badge b-pos'>concept</span>" if r.get("positive")
                 else "<span class='badge b-neg'>control</span>")
        content = _thumb(str(r["image"]), data) if r.get("image") else _text_html(r)
        cls = "ex" if r.get("positive") else "ex ctrl"
        rows.append(f"<div class='{cls}'><span class='act' title='activation'>{_fmt(r.get('activation'))}</span>"
                    f"{badge}<span class='ex-body'>{content}</span></div>")
    return "".join(rows)


# ---------------------------------------------------------------------------- tables
def _status_badge(status: str) -> str:
    col = F.STATUS_COLORS.get(status, "#777")
    return f"<span class='status' style='background:{col}'>{_e(status)}</span>"


def _group_d_html(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    """Per-group effect sizes as small labelled bars (what consistency summarises)."""
    gd = neuron.get("group_d")
    if not isinstance(gd, list) or not gd:
        return ""
    names = (data.get("concept_info") or {}).get("groups") or []
    vals = [v for v in gd if _isnum(v)]
    top = max([abs(v) for v in vals] + [1e-12])
    rows = []
    for i, v in enumerate(gd):
        name = _e(names[i]) if i < len(names) else f"g{i + 1}"
        w = 0 if not _isnum(v) else int(round(100 * abs(v) / top))
        cls = "gbar neg" if _isnum(v) and v < 0 else "gbar"
        rows.append(f"<div class='grow' title='{name}: d = {_fmt(v)}'><span class='gname' title='{name}'>{name}</span>"
                    f"<span class='gtrack'><span class='{cls}' style='width:{w}%'></span></span>"
                    f"<span class='gval'>{_fmt(v, 2)}</span></div>")
    return f"<div class='gd'>{''.join(rows)}</div>"


def _ablation_cell(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    st = F.candidate_status(neuron, data)
    a = neuron.get("ablation")
    if not isinstance(a, dict):
        note = "not tested" if st == "not ablated" else "ablation not run"
        return f"{_status_badge(st)}<div class='sub'>{note}</div>"
    summ = data.get("ablation_summary") or {}
    spec = _ci(a.get("specificity_ci_low"), a.get("specificity_ci_high"))
    p_txt = F.p_value_text(a)
    p_main, _, p_null = p_txt.partition(" (")
    floor = _floor_note(a, summ)
    rule = a.get("direction_rule")
    lines = [f"Δ = <b>{_fmt(a.get('delta'))}</b> <span class='sub'>{_ci(a.get('ci_low'), a.get('ci_high'))}</span>"
             + (f" <span class='sub'>t = {_fmt(a.get('t'), 2)}</span>" if _isnum(a.get("t")) else ""),
             f"control Δ = {_fmt(a.get('delta_control'))}",
             f"specificity CI {spec if spec else '—'}"
             + (f"<div class='sub'>specificity Holm p = {_fmt(a.get('specificity_p_holm'))}</div>"
                if _isnum(a.get("specificity_p_holm")) else ""),
             _e(p_main) + (f"<div class='sub'>{_e(p_null.rstrip(')'))}</div>" if p_null else ""),
             f"Holm p = {_fmt(a.get('p_holm'))}" + (f"<div class='sub floor'>{_e(floor)}</div>" if floor else ""),
             f"<span class='sub'>tested for a {_e(a.get('direction') or 'drop')}"
             f"{' (named)' if a.get('tested_as') == 'named' else ''}"
             f"{' · direction by ' + _e(rule) if rule and rule != 'role' else ''}</span>"]
    reasons = [r for r in a.get("reasons") or [] if r]
    why = ("<ul class='reasons'>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>"
           if reasons and not a.get("validated") else "")
    return _status_badge(st) + "".join(f"<div class='abl-l'>{l}</div>" for l in lines) + why


def _d_cell(n: dict[str, Any]) -> str:
    dci = n.get("selectivity_ci")
    ci = _ci(*dci[:2]) if isinstance(dci, list) and len(dci) >= 2 else ""
    rows = [f"<b>{_fmt(n.get('selectivity'))}</b>"]
    if ci:
        rows.append(f"<div class='sub' title='95% CI of Cohen&#x27;s d'>CI {ci}</div>")
    if "selectivity_layer" in n:
        rows.append(f"<div class='sub' title='layer-scaled d (used for ranking)'>d<sub>layer</sub> = "
                    f"{_fmt(n.get('selectivity_layer'))}</div>")
    rows.append(f"<div class='sub'>q = {_fmt(n.get('selectivity_q'))}</div>")
    rows.append(f"<div class='sub' title='mean activation on concept / control examples'>mean "
                f"{_fmt(n.get('mean_pos'))} / {_fmt(n.get('mean_neg'))}</div>")
    return "".join(rows)


_TABLE_HEAD = ("<tr><th>#</th><th>neuron<div class='sub'>layer : index</div></th>"
               "<th>selectivity d<div class='sub'>95% CI · d<sub>layer</sub> · FDR q · mean on concept / "
               "control</div></th><th>consistency<div class='sub'>d per group</div></th>"
               "<th>score<div class='sub'>importance</div></th><th class='abl'>verdict · causal test<div class='sub'>"
               "Δ [95% CI] of y</div></th><th class='exs'>probe examples that activate it most<div class='sub'>"
               "activation · concept span <mark>marked</mark></div></th></tr>")


def _neurons_table(neurons: Sequence[dict[str, Any]], data: dict[str, Any], cls: str = "cands") -> str:
    head, ex_cls = _TABLE_HEAD, ""
    if (data.get("concept_info") or {}).get("modality") == "image":
        head = head.replace("activation · concept span <mark>marked</mark>",
                            "label (group; control) · activation; frame: blue = concept, brown = control")
        ex_cls = " exs-img"  # wide enough for three tiles side by side
    rows = []
    for n in neurons:
        rows.append(
            f"<tr><td class='num'>{_fmt(n.get('rank'))}</td>"
            f"<td class='neuron'>{_e(n.get('layer'))} : {_e(n.get('index'))}</td>"
            f"<td class='num'>{_d_cell(n)}</td>"
            f"<td class='num'>{_fmt(n.get('consistency'))}{_group_d_html(n, data)}</td>"
            f"<td class='num'><b>{_fmt(n.get('score'))}</b><div class='sub' title='importance (grad × activation)'>"
            f"{_fmt(n.get('importance'))}</div></td>"
            f"<td class='abl'>{_ablation_cell(n, data)}</td>"
            f"<td class='exs{ex_cls}'>{_examples_html(n, data)}</td></tr>")
    return (f"<div class='tablewrap'><table class='{cls}'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _candidates_table(data: dict[str, Any]) -> str:
    cands = F.candidates(data)
    if not cands:
        if _isnum(data.get("n_candidates")):
            return (f"<p class='none'>No neuron qualifies as a candidate: none {_candidate_rule(data)} and "
                    "non-negative importance. Nothing was validated as a concept neuron.</p>")
        return "<p class='muted'>No neurons were listed.</p>"
    return _neurons_table(cands, data)


def _suppressors_html(data: dict[str, Any]) -> str:
    supps = F.suppressors(data)
    ns = data.get("n_suppressors")
    if not supps and not ns:
        return ""
    summ = data.get("ablation_summary") or {}
    tested = any(isinstance(n.get("ablation"), dict) for n in supps)
    intro = (f"Suppressors are selective like the candidates: they {_candidate_rule(data, plural=True)}. But their "
             "importance is negative: removing them is predicted to <i>raise</i> the concept confidence y, so they "
             "lower it while active. "
             + ("They are tested for a <b>rise</b> of y (Δ &lt; 0) and validated as suppressors"
                + (f"; Holm's correction runs over {_words(summ['holm_family'])}." if summ.get("holm_family")
                   else ".") if tested else "An ablation would test them for a rise of y (Δ &lt; 0).")
             + (f" Here y is the {_e(summ['y'])}." if summ.get("y") else ""))
    shown = f"the top {len(supps)} of {_fmt(ns)}" if _isnum(ns) and ns > len(supps) else f"all {len(supps)}"
    body = _neurons_table(supps, data, cls="cands supps") if supps else ""
    return (f"<h3 id='sec-suppressors'>Suppressors <span class='muted'>({shown})</span></h3>"
            f"<p class='muted'>{intro}</p>{body}")


def _named_html(data: dict[str, Any]) -> str:
    """Ablated neurons outside the candidate and suppressor tables (e.g. named with ``neurons=``)."""
    shown = {(n.get("layer"), n.get("index")) for n in F.candidates(data) + F.suppressors(data)}
    rest = [n for n in F.ablated_neurons(data) if (n.get("layer"), n.get("index")) not in shown]
    if not rest:
        return ""
    return ("<h3>Other tested neurons</h3><p class='muted'>Neurons tested because they were named "
            "(<code>neurons=</code> / <code>--neurons</code>) that are not among the candidates or suppressors "
            "above. A neuron the ranking does not select can be <i>causal, not a candidate</i> at most, never "
            "<i>validated</i>.</p>" + _neurons_table(rest, data, cls="cands"))


def _more_table(data: dict[str, Any]) -> str:
    shown = {(n.get("layer"), n.get("index")) for n in F.candidates(data) + F.suppressors(data)
             + F.ablated_neurons(data)}
    rest = [n for n in sorted(data.get("neurons") or [], key=lambda n: n.get("rank") or 0)
            if (n.get("layer"), n.get("index")) not in shown]
    if not rest:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{_fmt(n.get('rank'))}</td>"
        f"<td class='neuron'>{_e(n.get('layer'))} : {_e(n.get('index'))}</td><td>{_e(n.get('role') or '—')}</td>"
        f"<td class='num'>{_fmt(n.get('selectivity'))}</td><td class='num'>{_fmt(n.get('selectivity_layer'))}</td>"
        f"<td class='num'>{_fmt(n.get('selectivity_q'))}</td>"
        f"<td class='num'>{_fmt(n.get('consistency'))}</td><td class='num'>{_fmt(n.get('importance'))}</td>"
        f"<td class='num'>{_fmt(n.get('score'))}</td><td class='num'>{_fmt(n.get('mean_pos'))}</td>"
        f"<td class='num'>{_fmt(n.get('mean_neg'))}</td></tr>" for n in rest)
    return (f"<details><summary>The next {len(rest)} ranked neurons (as saved in results.json)</summary>"
            "<div class='tablewrap'><table class='more'><thead><tr><th>#</th><th>layer : index</th><th>role</th>"
            "<th>d</th><th>d<sub>layer</sub></th><th>q</th><th>consistency</th><th>importance</th><th>score</th>"
            f"<th>mean on concept</th><th>mean on control</th></tr></thead><tbody>{rows}</tbody></table></div>"
            "</details>")


def _null_table(data: dict[str, Any]) -> str:
    """The per-layer null of the ablation test (``ablation_summary.null``)."""
    rows = [r for r in (data.get("ablation_summary") or {}).get("null") or [] if isinstance(r, dict)]
    if not rows:
        return ""
    cols = [("layer", "layer"), ("n", "random neurons"), ("n_available", "available"), ("q05", "5%"),
            ("median", "median"), ("q95", "95%"), ("q99", "99%"), ("min", "min"), ("max", "max"),
            ("excess_kurtosis", "excess kurtosis")]
    body = "".join("<tr>" + "".join(f"<td class='num'>{_fmt(r.get(k))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return ("<details class='null'><summary>The null: Δ of random neurons, per layer</summary><div class='tablewrap'>"
            "<table class='more'><thead><tr>" + "".join(f"<th>{t}</th>" for _, t in cols)
            + f"</tr></thead><tbody>{body}</tbody></table></div></details>")


def _kv_table(title: str, d: dict[str, Any]) -> str:
    if not isinstance(d, dict) or not d:
        return ""

    def num(x: Any) -> str:
        return str(x) if isinstance(x, int) else f"{x:.4g}"

    def val(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(num(x) if _isnum(x) else _e(x) for x in v)
        return num(v) if _isnum(v) else _e(v)

    def plain(v: Any) -> bool:
        return not isinstance(v, dict) and not (isinstance(v, list) and (not v or any(isinstance(x, (dict, list))
                                                                                     for x in v)))

    rows = "".join(f"<tr><th>{_e(k)}</th><td>{val(v)}</td></tr>" for k, v in d.items() if plain(v))
    return f"<div class='kv'><h4>{_e(title)}</h4><table>{rows}</table></div>"


def _ablation_caption(data: dict[str, Any]) -> str:
    summ = data.get("ablation_summary") or {}
    me = summ.get("min_effect")
    split = f" on {_e(summ['split'])}" if summ.get("split") else ""
    method = _e(summ.get("method") or "zero")
    shown = [st for st in F.STATUS_COLORS if st in {F.candidate_status(n, data) for n in F.ablated_neurons(data)}]
    words = ", ".join(f"<span class='st-word' style='color:{F.STATUS_COLORS[st]}'>{_e(st)}</span>" for st in shown)
    has_null = any(isinstance(r, dict) for r in summ.get("null") or [])
    return (f"Δ = y − y<sub>intervened</sub> of each tested neuron ({method} intervention){split}, coloured by its "
            f"verdict ({words}) with its 95% bootstrap CI (● tested for a drop, ▼ for a rise), and on control inputs "
            "(open diamonds). The grey band is the 5–95% range of Δ over random neurons of the same layer under the "
            "same intervention (the null the p-values are computed against)"
            + (f"; the dashed lines mark the minimum effect ±{_with_unit(me, summ)}" if _isnum(me) else "")
            + (". The null of each layer (quantiles, excess kurtosis) is in the table below." if has_null else "."))


# ---------------------------------------------------------------------------- definitions
_POOLING = {
    "span": "the mean over the marked [[concept span]] of every example, concept and control alike",
    "max": "the max over the example's real tokens, for concept and control examples alike",
    "mean": "the mean over the example's real positions (spatial mean for images)",
    "last": "the activation at the example's last real token",
    "auto": "the span mean when every example marks a span, else the max over real tokens",
}


def _definitions(data: dict[str, Any]) -> str:
    s = data.get("settings") or {}
    ci = data.get("concept_info") or {}
    groups = ci.get("groups") or []
    head = data.get("confidence_head") or {}
    summ = data.get("ablation_summary") or {}
    imp = s.get("importance", True)
    pooling = s.get("pooling", "auto")
    q, min_sel = _g(data.get("fdr_q")), _g(data.get("min_selectivity"))
    items = [
        ("Activation", f"per example, the neuron's output pooled over the example (pooling <code>{_e(pooling)}</code>"
                       f"{': ' + _e(_POOLING[pooling]) if pooling in _POOLING else ''})."),
        ("Selectivity", "Cohen's d = (mean<sub>concept</sub> − mean<sub>control</sub>) / "
                        "√((var<sub>concept</sub> + var<sub>control</sub>)/2), with a Welch t-test p-value; q is the "
                        f"Benjamini–Hochberg adjusted p-value over all {_fmt(data.get('n_neurons_scanned'))} scanned "
                        f"neurons, and a neuron is <i>significant</i> when q ≤ {q}. "
                        "The 95% CI of d (shown under it) is the large-sample interval "
                        f"d ± 1.96·√((n<sub>c</sub> + n<sub>n</sub>)/(n<sub>c</sub>n<sub>n</sub>) + "
                        f"d²/(2(n<sub>c</sub> + n<sub>n</sub>))) for the {_fmt(data.get('n_positive'))} concept and "
                        f"{_fmt(data.get('n_negative'))} control examples that ranked the neurons: a large d from few "
                        "examples gets a wide interval. "
                        "The <i>layer-scaled d</i> (d<sub>layer</sub>, used for ranking) divides the same mean "
                        "difference by √max(pooled variance, the median pooled variance of the neuron's layer): a "
                        "near-silent unit (values near 0 on both classes, tiny variance) reaches a huge d without "
                        "ever firing, and measured against a typical unit of its layer its tiny difference stays "
                        "tiny. A unit at least as variable as its layer's median keeps d<sub>layer</sub> = d."),
        ("Consistency", "the same d computed separately for each phrasing group g "
                        f"({_e(', '.join(map(str, groups))) if groups else 'folds of the concept examples'}) "
                        "against the controls: consistency = clip(1 − std<sub>g</sub>(d<sub>g</sub>) / "
                        "mean<sub>g</sub>(d<sub>g</sub>), 0, 1) when mean<sub>g</sub>(d<sub>g</sub>) &gt; 0, else 0. "
                        "Near 1: fires for every phrasing; near 0: for one word only."),
        ("Importance", "gradient × activation, the first-order estimate of the ablation effect: mean over concept "
                       "examples of Σ<sub>positions</sub> (a − b)·∂y/∂a with baseline b = "
                       f"<code>{_e(s.get('baseline', 'zero'))}</code>; y is the model's concept confidence"
                       f"{' (' + _e(summ.get('y') or head.get('kind')) + ')' if (summ.get('y') or head.get('kind')) else ''}"
                       ". Positive: removing the neuron is predicted to lower the confidence; negative: to raise it."
         if imp is not False else "not computed in this scan."),
        ("Composite score", "geometric mean of three scores mapped to [0, 1]: d<sub>layer</sub>⁺/(1 + "
                            "d<sub>layer</sub>⁺) with d<sub>layer</sub>⁺ = max(d<sub>layer</sub>, 0), consistency, and "
                            "the importance scaled within its own sign (I / max I over positive I, −I / max(−I) over "
                            "negative I, so a suppressor is scored by how strongly it suppresses)"
                            + ("" if imp is not False else
                               " (here without importance: geometric mean of the first two)")
                            + ". The raw scores are always shown beside it; the ranking lists candidates first, then "
                              "suppressors, then every other neuron, each by score."),
        ("Candidate", f"a neuron that fires significantly more on the concept (q ≤ {q}, d &gt; 0) with "
                      f"d<sub>layer</sub> ≥ {min_sel} and importance ≥ 0 (removing it is predicted to lower y). "
                      f"This scan has {_fmt(data.get('n_candidates'))}; only candidates are reported as concept "
                      "neurons, and a weak probe may have none."),
        ("Suppressor", f"the same selectivity criteria (q ≤ {q}, d &gt; 0, d<sub>layer</sub> ≥ {min_sel}) but "
                       "importance &lt; 0: removing it is predicted to <i>raise</i> y. This scan has "
                       f"{_fmt(data.get('n_suppressors'))}."),
    ]
    if summ or F.ablated_neurons(data):
        items += _ablation_definitions(data)
    else:
        items.append(("Status", f"without ablation: <i>significant</i> = positively selective at q ≤ {q}; "
                                "<i>suppressor</i> = a suppressor as defined above; <i>not significant</i> otherwise. "
                                "Ablation turns these into causal verdicts."))
    if F.neuron_table(data)["score"].size:
        items.append(("Heatmap", _e(F.heatmap_reduction(data))))
        items.append(("Scatter", _e(F.scatter_reduction(data))))
    return "<dl class='defs'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


#: ablation_summary sentences shown in the Definitions (left out of the Setup table)
_DEFINED_IN_DEFS = ("question", "statistic", "test", "holm_family", "fwer_bound", "specificity_test",
                    "direction_rules", "audit")


def _ablation_definitions(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The causal test's definitions, worded from ``ablation_summary`` (question, statistic, test, Holm family,
    FWER bound, direction rules, specificity test, audit definition): nothing here restates a rule that
    results.json does not carry."""
    summ = data.get("ablation_summary") or {}
    me, alpha, unit = summ.get("min_effect"), summ.get("alpha"), _y_unit(summ)
    me_txt = f"{_g(me)}{' ' + _e(unit) if unit else ''}"
    method = _e(summ.get("method") or "zero")
    items: list[tuple[str, str]] = []
    if summ.get("question"):
        items.append(("Question", f"the <code>{method}</code> intervention asks: {_words(summ['question'])}"))
    stat = f" The statistic: {_words(summ['statistic'])}." if summ.get("statistic") else ""
    items.append(("Intervention", f"Δ = mean<sub>x</sub>[y(x) − y<sub>intervened</sub>(x)] is measured on "
                  f"{_e(summ.get('split') or 'the ablation inputs')}, with a bootstrap 95% CI over examples; y is "
                  f"the {_e(summ.get('y') or 'concept confidence')}. Control Δ is the same on control inputs, and "
                  f"specificity = Δ<sub>concept</sub> − Δ<sub>control</sub>.{stat}"))
    kurt = [(r.get("layer"), r.get("excess_kurtosis")) for r in summ.get("null") or []
            if isinstance(r, dict) and _isnum(r.get("excess_kurtosis"))]
    kurt_txt = (" The null's excess kurtosis here: " + ", ".join(f"layer {_e(l)}: {_fmt(k, 2)}" for l, k in kurt)
                + " (0 for a normal distribution; the table under the chart has each layer's null)." if kurt else "")
    items.append(("Test", f"{_words(summ.get('test') or 'empirical p against random neurons of the same layer')}. "
                  "Random neurons of the layer are intervened on one by one in a random order; a tested neuron "
                  "whose h-th at-least-as-extreme random neuron appears after L draws gets p = h/L, otherwise p = "
                  "(g + 1)/(L + 1) with g at-least-as-extreme among all L, so the smallest p a null of L neurons "
                  "can give is 1/(L + 1) (the page never shows a smaller one). The p is exact whatever the null's "
                  f"shape.{kurt_txt}"))
    if summ.get("holm_family") or summ.get("fwer_bound"):
        items.append(("Holm family", (f"{_words(summ.get('holm_family'))}, " if summ.get("holm_family") else "")
                      + f"at alpha = {_g(alpha)}"
                      + (f": {_words(summ['fwer_bound'])}" if summ.get("fwer_bound") else "")
                      + ". A validated neuron whose Holm p equals the smallest p its null allows (1/(L + 1) × the "
                        "number tested) is marked as such: a larger null could only lower it."))
    rules = summ.get("direction_rules")
    if isinstance(rules, dict) and rules:
        items.append(("Direction", "each tested neuron is tested for a drop (Δ &gt; 0) or a rise (Δ &lt; 0), "
                      "chosen by " + "; ".join(f"<i>{_e(k)}</i>: {_words(v)}" for k, v in rules.items()) + "."))
    if summ.get("specificity_test"):
        items.append(("Specificity", f"{_words(summ['specificity_test'])}."))
    items.append(("Causal", f"in the tested direction s (+1 for a drop, −1 for a rise): Holm p ≤ {_g(alpha)} against "
                  "the random neurons, the 95% CI of s·Δ above 0, specific (the specificity test above, Holm p ≤ "
                  f"{_g(alpha)}) and s·Δ ≥ the minimum effect {me_txt}."))
    items.append(("Verdict", "<i>validated</i>: causal, and a candidate of the ranking tested for a drop; "
                  "<i>validated suppressor</i>: causal, and a suppressor tested for a rise; <i>causal, not a "
                  "candidate</i>: causal, but the ranking did not select the neuron (so it is not reported as a "
                  "concept neuron); <i>not causal</i>: some causal criterion failed. Every neuron short of "
                  "<i>validated</i> lists the criteria it failed. <i>not ablated</i>: a candidate or suppressor "
                  "beyond the tested ones."))
    if _isnum(summ.get("joint_delta")):
        j = F.joint_text(summ, F.ablated_neurons(data))
        items.append(("Joint set", "the neurons tested for a drop, intervened on all at once (redundant neurons "
                      "can hide from single interventions), compared with random sets of the same size from the same "
                      f"layers{'; here ' + _words(j) if j else ''}. The set counts as evidence only when it is "
                      "beyond those random sets."))
    audit = summ.get("audit")
    if isinstance(audit, dict):
        defn = (_words(audit["definition"]) if audit.get("definition") else
                f"random low-importance neurons of the tested layers; above the null when p ≤ {_g(alpha)} and "
                f"|Δ| ≥ {me_txt}")
        items.append(("Audit", f"{defn}. Here {_fmt(audit.get('n_above_null'))} of {_fmt(audit.get('n_checked'))} "
                      f"were above the null, {_g(audit.get('expected_by_chance'))} expected by chance. Many more "
                      "than expected would mean the ranking misses causal neurons."))
    return items


# ---------------------------------------------------------------------------- page
_CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--bg:#f6f8fa;--accent:#2c7fb8}
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
 font-size:16px;line-height:1.55;background:#fff}
main{max-width:1240px;margin:0 auto;padding:28px 32px 60px}
header{border-bottom:3px solid var(--accent);padding-bottom:14px;margin-bottom:18px}
header .kicker{color:var(--muted);font-size:14px;letter-spacing:.04em;text-transform:uppercase}
h1{font-size:30px;margin:4px 0 6px;line-height:1.2}
h1 .concept{color:var(--accent)}
header .desc{color:var(--muted);font-size:15px;margin:0}
h2{font-size:22px;margin:40px 0 6px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h4{margin:0 0 6px;font-size:14px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.summary p{margin:0 0 10px;font-size:16.5px;max-width:1100px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0 10px}
.cards.grid{display:grid;grid-template-columns:repeat(var(--cols,6),minmax(0,1fr))}
.card{flex:1 1 170px;background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card-v{font-size:26px;font-weight:700;line-height:1.2}
.card-k{font-size:14px;font-weight:600}
.card-s{font-size:13px;color:var(--muted)}
nav.toc{font-size:14px;margin:6px 0 0;color:var(--muted)}
.summary a{color:var(--accent)}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap;display:inline-block}
figure{margin:10px 0 8px;border:1px solid var(--line);border-radius:8px;padding:8px 8px 2px}
figcaption{font-size:14px;color:var(--muted);margin:2px 6px 8px}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;font-size:14px}
table.cands,table.more{width:100%}
.cands th,.cands td,.more th,.more td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top;text-align:left}
.cands thead th,.more thead th{background:var(--bg);position:sticky;top:0;font-size:13px}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.neuron{white-space:nowrap;font-weight:600;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.sub{font-size:12px;color:var(--muted);font-weight:normal}
.gd{margin-top:4px;font-size:11.5px;color:var(--muted);width:155px}
.grow{display:flex;align-items:center;gap:5px;line-height:1.25}
.gname{flex:0 0 64px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;text-align:left}
.gtrack{flex:1 1 auto;height:7px;background:#eef1f4;border-radius:3px}
.gbar{display:block;height:7px;background:#2c7fb8;border-radius:3px}.gbar.neg{background:#c0392b}
.gval{flex:0 0 34px;text-align:right;font-variant-numeric:tabular-nums}
th.exs,td.exs{min-width:235px;overflow-wrap:break-word}
td.exs-img{min-width:268px}
.ex{margin:0 0 5px;line-height:1.45}
.act{display:inline-block;min-width:46px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;
 background:#fff3c4;border-radius:4px;padding:0 4px;margin-right:6px;text-align:right}
.badge{font-size:11px;border-radius:10px;padding:1px 7px;margin-right:6px;color:#fff}
.b-pos{background:#2c7fb8}.b-neg{background:#8c6d62}
mark{background:#ffd54f;padding:0 2px;border-radius:3px}
.ex.ctrl mark{background:#e6dcd6}
.tok{font-size:12px;color:var(--muted)}
.status{color:#fff;border-radius:10px;padding:2px 9px;font-size:12.5px;white-space:nowrap}
.thumb{width:56px;height:56px;object-fit:contain;vertical-align:middle;border:1px solid var(--line);border-radius:4px}
.ex-imgs{display:flex;flex-wrap:wrap;gap:6px}
.ex-img{width:80px;text-align:center;font-size:11.5px;line-height:1.3}
.ex-img .thumb{width:64px;height:64px;border:3px solid #2c7fb8;border-radius:5px;background:#fff}
.ex-img.ctrl .thumb{border-color:#8c6d62}
.ex-lab{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.ex-img.ctrl .ex-lab{color:#8c6d62}
.ex-act{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11px;color:var(--muted)}
.path{font-family:ui-monospace,monospace;font-size:12px}
.muted{color:var(--muted)}
details{margin:12px 0}
summary{cursor:pointer;color:var(--accent);font-weight:600}
.kvs{display:flex;flex-wrap:wrap;gap:24px}
.kv{min-width:0;max-width:100%}
.kv table th{text-align:left;padding:2px 14px 2px 0;font-weight:600;color:var(--muted);vertical-align:top;
 white-space:nowrap}
.kv table td{padding:2px 0;overflow-wrap:break-word;word-break:normal;hyphens:none;max-width:520px}
.kv table.times td{text-align:right;white-space:nowrap}
dl.defs{font-size:14.5px;display:grid;grid-template-columns:170px 1fr;gap:6px 18px}
dl.defs dt{font-weight:700}
dl.defs dd{margin:0}
.warnbox{background:#fff4e5;border:1px solid #f0b46a;border-left:5px solid #e08214;border-radius:6px;
 padding:10px 14px;margin:14px 0 6px;font-size:15px}
.warnbox .warn-title{font-weight:700;color:#8a4b00;margin-bottom:4px}
.warnbox ul{margin:0;padding-left:20px}.warnbox li{margin:2px 0}
p.none{background:#fdecea;border-left:4px solid #b2182b;padding:8px 12px;font-weight:600}
h3{font-size:18px;margin:28px 0 4px}
td.abl,th.abl{min-width:175px;max-width:250px;font-size:13px;line-height:1.4}
.abl-l{white-space:normal;font-variant-numeric:tabular-nums}
td.abl .status{display:inline-block;margin-bottom:3px}
ul.reasons{margin:3px 0 0;padding-left:16px;font-size:11.5px;color:#8a1c1c;line-height:1.35}
.note{background:var(--bg);border-left:4px solid var(--line);padding:8px 12px;font-size:14.5px;color:var(--muted)}
.cards-title{font-size:13px;font-weight:700;color:var(--muted);text-transform:uppercase;letter-spacing:.03em;
 margin:14px 0 -6px}
.card-word{font-size:21px;line-height:1.45}
.summary .question{font-style:italic}
.sub.floor{color:#1a6b3a}
footer{margin-top:40px;font-size:13px;color:var(--muted)}
@media (max-width:1100px){main{padding:22px 16px 48px}
 .cards.grid{grid-template-columns:repeat(var(--cols-narrow,4),minmax(0,1fr))}}
@media (max-width:700px){.cards.grid{grid-template-columns:repeat(2,minmax(0,1fr))}}
"""


def _figure_html(name: str, fig: Any, caption: str | None) -> str:
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"nl-fig-{name}",
                      config=PLOTLY_CONFIG, default_height=f"{int(fig.layout.height or 450)}px")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure class='nl-figure' data-figure='{_e(name)}'>{div}{cap}</figure>"


def render_report(data: dict[str, Any], plotlyjs: str = "inline", figures: dict[str, Any] | None = None) -> str:
    """The report page as an HTML string.

    Args:
        data: the results dict (``ScanResult.to_dict()`` / ``results.json``).
        plotlyjs: ``inline`` (default; the page works offline) or ``cdn``.
        figures: prebuilt ``{name: Figure}`` (default: :func:`figures.build_figures`).
    """
    figs = F.build_figures(data) if figures is None else figures
    concept = _e(data.get("concept") or "concept")
    model = _e(data.get("model") or "model")
    desc = _e((data.get("concept_info") or {}).get("description") or "")
    toc = [("summary", "Summary")] + [(f"sec-{n}", _SECTION_TITLES.get(n, n)) for n in figs] + [
        ("sec-table", "Candidate table")]
    if F.suppressors(data):
        toc.append(("sec-suppressors", "Suppressors"))
    toc += [("sec-setup", "Setup"), ("sec-defs", "Definitions")]
    parts = [
        "<header><div class='kicker'>NeuroLens concept report</div>"
        f"<h1>Neurons for <span class='concept'>“{concept}”</span> in {model}</h1>"
        f"{'<p class=desc>' + desc + '</p>' if desc else ''}"
        "<nav class='toc'>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in toc) + "</nav></header>",
        "<section id='summary' class='summary'>" + _warnings_html(data) + _cards(data)
        + "".join(f"<p>{s}</p>" for s in summary_sentences(data)) + "</section>",
    ]
    if "ablation" not in figs:
        figs_note = ("<div class='note'>No ablation ran for this scan, so there is no causal-validation chart. "
                     + ("Give the callback <code>ablate_top_k=k</code>" if data.get("emergence") else
                        "Re-run with <code>ablate=True</code>") + " to test the candidates.</div>"
                     if not data.get("ablation_summary") else
                     "<div class='note'>Ablation ran, but no neuron was tested, so there is no causal-validation "
                     "chart.</div>")
    else:
        figs_note = ""
    for name, fig in figs.items():
        extra = ""
        if name == "heatmap":
            caption = _e(F.heatmap_reduction(data))
        elif name == "scatter":
            caption = f"{_CAPTIONS['scatter']} {_e(F.scatter_reduction(data))}"
            if F.ablated_neurons(data) or data.get("ablation_summary"):
                caption += (" Rings and diamonds are coloured by the verdict of the causal test, in the words of the "
                            "candidate table (not ablated: not tested).")
        elif name == "ablation":
            caption = _ablation_caption(data)
            extra = _null_table(data)
        elif name == "crossconcept":
            caption = _cross_concept_caption(data)
        else:
            caption = _CAPTIONS.get(name)
        before = _baseline_html(data) if name == "emergence" else ""
        parts.append(f"<section id='sec-{name}'><h2>{_e(_SECTION_TITLES.get(name, name))}</h2>{before}"
                     f"{_figure_html(name, fig, caption)}{extra}"
                     f"{figs_note if name == 'sankey' else ''}</section>")
    if "sankey" not in figs and figs_note:
        parts.append(f"<section id='sec-sankey'>{figs_note}</section>")
    cands = F.candidates(data)
    of = f" (of {_fmt(data['n_candidates'])})" if _isnum(data.get("n_candidates")) else ""
    image = (data.get("concept_info") or {}).get("modality") == "image"
    shown = ("(each image with its label, the group of a concept image or <i>control</i>, and the activation "
             "under it)" if image else "(activation value on the left; the concept span is marked)")
    intro = (f"<p class='muted'>The top {_plural(len(cands), 'candidate')}{of} with their raw scores, the composite "
             "score, the verdict of the causal test where it ran, and the probe examples on which they fire most "
             f"{shown}.</p>" if cands else "")
    parts.append(f"<section id='sec-table'><h2>Candidate table</h2>{intro}{_candidates_table(data)}"
                 f"{_suppressors_html(data)}{_named_html(data)}{_more_table(data)}</section>")
    mi = dict(data.get("model_info") or {})
    ci = {k: v for k, v in (data.get("concept_info") or {}).items() if k != "description"}
    parts.append("<section id='sec-setup'><h2>Setup</h2><div class='kvs'>"
                 + _kv_table("model", mi) + _kv_table("concept", ci)
                 + _kv_table("settings", data.get("settings") or {})
                 + _kv_table("ablation", {k: v for k, v in (data.get("ablation_summary") or {}).items()
                                          if k not in _DEFINED_IN_DEFS})
                 + _kv_table("confidence head", data.get("confidence_head") or {})
                 + _timings_table(data) + "</div></section>")
    parts.append(f"<section id='sec-defs'><h2>Definitions</h2>{_definitions(data)}</section>")
    parts.append("<footer>Generated by neurolens_lightning from results.json (schema "
                 f"{_e(data.get('schema_version', '?'))}); every number on this page is in that file.</footer>")
    js = plotlyjs_tag(plotlyjs)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>NeuroLens: {concept} in {model}</title><style>{_CSS}</style>{js}</head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def plotlyjs_tag(plotlyjs: str = "inline") -> str:
    """The ``<script>`` tag(s) that load plotly.js once per page: inlined (offline) or from the CDN."""
    if plotlyjs == "inline":
        return ("<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
                "<script type='text/javascript'>" + plotly.offline.get_plotlyjs() + "</script>")
    if plotlyjs == "cdn":
        from plotly.io._utils import plotly_cdn_url

        return f"<script charset='utf-8' src='{_e(plotly_cdn_url())}'></script>"
    raise ValueError(f"plotlyjs must be 'inline' or 'cdn', got {plotlyjs!r}")


def write_report(data: dict[str, Any], path: str | Path, plotlyjs: str = "inline") -> Path:
    """Write the self-contained HTML report of a scan to ``path`` and return it.

    Args:
        data: the results dict (``ScanResult.to_dict()`` or the loaded ``results.json``).
        path: the HTML file to write (the caller makes the folder write atomic). The page is built from
            ``data`` alone, so that it always matches results.json.
        plotlyjs: ``inline`` (default, opens offline) or ``cdn`` (smaller, needs network).

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data, plotlyjs=plotlyjs), encoding="utf-8")
    return path
