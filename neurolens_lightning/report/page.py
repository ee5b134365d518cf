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
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

from neurolens_lightning.concepts import EXAMPLE_CHARS, clip_text
from neurolens_lightning.report import figures
from neurolens_lightning.report.figures import build_figures  # render_report's `figures` argument hides the module
from neurolens_lightning.report.html import (PLOTLY_CONFIG, definition_list, escape, figure_html, fmt_general,
                                             fmt_number, grid_style, html_document, isnum, join_words, kv_table, pct,
                                             plural, write_page)

__all__ = ["write_report", "render_report", "summary_sentences", "all_warnings", "PLOTLY_CONFIG"]

_CAPTIONS = {
    "layers": "How many neurons of each layer respond to the concept significantly (after false-discovery-rate "
              "control), split by the sign of the effect, with the best composite score of the layer.",
    "heatmap": None,  # filled from heatmap_reduction()
    "scatter": "Each dot is a neuron. Right = fires more on the concept than on the controls; up = does so for "
               "every phrasing group; colour = predicted effect on the model's concept confidence (the scale is "
               "symmetric and covers every ringed neuron). The ringed dots are the top candidates, each numbered by its "
               "rank in the candidate table (the key at the end of this caption names them), the diamonds the top suppressors.",
    "sankey": None,  # filled from the statuses shown (_sankey_caption)
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
def _ci(lo: Any, hi: Any) -> str:
    """``[lo, hi]`` or an empty string when either end is missing."""
    return f"[{fmt_number(lo)}, {fmt_number(hi)}]" if isnum(lo) and isnum(hi) else ""


def _y_unit(summ: dict[str, Any]) -> str:
    """The unit of y from the summary's description (``... (nats)`` -> ``nats``), else empty."""
    m = re.search(r"\(([^()]*)\)\s*$", str(summ.get("y") or ""))
    return m.group(1).strip() if m else ""


def _with_unit(x: Any, summ: dict[str, Any]) -> str:
    unit = _y_unit(summ)
    return f"{fmt_general(x)}{' ' + escape(unit) if unit else ''}"


def _p_html(a: dict[str, Any]) -> str:
    """The ablation p-value with the null it came from (never below ``p_floor``), HTML-escaped."""
    return escape(figures.p_value_text(a))


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
    items = "".join(f"<li>{escape(w)}</li>" for w in ws)
    return (f"<div class='warnbox' role='alert'><div class='warn-title'>⚠ {plural(len(ws), 'warning')} about "
            f"this scan</div><ul>{items}</ul></div>")


# ---------------------------------------------------------------------------- summary
def _carrying_layers(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Layers with at least half as many positively selective neurons as the best layer."""
    summ = [s for s in data.get("layer_summary") or [] if isnum(s.get("n_significant_positive"))]
    if not summ:
        return []
    best = max(s["n_significant_positive"] for s in summ)
    if best <= 0:
        return []
    top = [s for s in summ if s["n_significant_positive"] >= 0.5 * best]
    top.sort(key=lambda s: -s["n_significant_positive"])
    return top[:5]


def _neuron_name(n: dict[str, Any]) -> str:
    return f"neuron {escape(n.get('index'))} of layer {escape(n.get('layer'))}"


def _candidate_rule(data: dict[str, Any], plural: bool = False) -> str:
    return (f"fire{'' if plural else 's'} significantly more on the concept (FDR q ≤ {fmt_general(data.get('fdr_q'))}) "
            f"with a layer-scaled d ≥ {fmt_general(data.get('min_selectivity'))}")


def summary_sentences(data: dict[str, Any]) -> list[str]:
    """The plain-words summary as HTML paragraphs (all user text escaped), every number from ``data``."""
    out = []
    mi = data.get("model_info") or {}
    ci = data.get("concept_info") or {}
    model = escape(data.get("model") or mi.get("name") or "the model")
    # the class after the name only when it says more than the name (a callback's network may be named by class)
    kind = mi.get("type") if escape(mi.get("type") or "") != model else None
    arch = " ".join(escape(v) for v in (kind, f"({mi['family']})" if mi.get("family") else None) if v)
    layers = data.get("layers") or []
    nl = mi.get("n_layers")
    layer_txt = (f"{len(layers)} of its {nl} layers" if isnum(nl) and nl != len(layers) else
                 f"all {len(layers)} layers" if layers else "its layers")
    npos, nneg = data.get("n_positive"), data.get("n_negative")
    out.append(
        f"We scanned <b>{fmt_number(data.get('n_neurons_scanned'))} neurons</b> in {layer_txt} of <b>{model}</b>"
        f"{(' — ' if kind else ' ') + arch if arch else ''} for the concept <b>{escape(data.get('concept'))}</b>, "
        f"comparing "
        f"<b>{fmt_number(npos)}</b> concept examples with <b>{fmt_number(nneg)}</b> control examples"
        f"{' in ' + fmt_number(ci.get('n_groups')) + ' phrasing groups' if isnum(ci.get('n_groups')) else ''}.")
    split = (data.get("settings") or {}).get("split")
    if split:
        out.append(f"<b>Examples</b>: {escape(split)}.")
    nsig, q = data.get("n_significant_fdr"), data.get("fdr_q")
    npos_sig = sum(int(s.get("n_significant_positive") or 0) for s in data.get("layer_summary") or [])
    sent = (f"<b>{fmt_number(nsig)}</b> neurons{pct(nsig, data.get('n_neurons_scanned'))} respond to the concept "
            f"significantly (Benjamini–Hochberg false discovery rate q = {fmt_general(q)})")
    if data.get("layer_summary") and nsig:
        sent += f"; {fmt_number(npos_sig)} of them fire more on the concept, the rest less"
    out.append(sent + ".")
    carry = _carrying_layers(data)
    n_scanned_layers = len(data.get("layer_summary") or [])
    if carry:
        parts = [f"layer {escape(s['layer'])} ({fmt_number(s['n_significant_positive'])} of "
                 f"{fmt_number(s.get('n_units'))})"
                 for s in carry[:3]]
        if n_scanned_layers >= 3 and len(carry) >= 0.6 * n_scanned_layers:
            out.append(f"The concept is spread over most layers ({len(carry)} of {n_scanned_layers} have at least "
                       f"half as many positively selective neurons as the best one); the most are in "
                       f"{join_words(parts)}.")
        else:
            out.append(f"The concept is carried mostly by {join_words(parts)} — counting neurons that fire "
                       f"significantly more on the concept.")
    out.append(_roles_sentence(data))
    cands = figures.candidates(data)
    if cands:
        c = cands[0]
        by_layer: dict[Any, int] = {}
        for n in cands:
            by_layer[n.get("layer")] = by_layer.get(n.get("layer"), 0) + 1
        dist = join_words([f"layer {escape(l)} ({k})" for l, k in sorted(by_layer.items(), key=lambda t: -t[1])])
        dci = c.get("selectivity_ci") if isinstance(c.get("selectivity_ci"), list) else [None, None]
        dci_txt = _ci(*(dci + [None, None])[:2])
        d_layer = c.get("selectivity_layer")
        out.append(
            f"The strongest candidate is <b>{_neuron_name(c)}</b>: selectivity d = {fmt_number(c.get('selectivity'))}"
            f"{' [95% CI ' + dci_txt[1:] if dci_txt else ''}"
            f"{', layer-scaled d = ' + fmt_number(d_layer) if isnum(d_layer) else ''}"
            f"; mean activation {fmt_number(c.get('mean_pos'))} on concept examples vs {fmt_number(c.get('mean_neg'))} "
            f"on control examples{' — it ' + escape(quiet_text(c, data)) if quiet_text(c, data) else ''}; consistency {fmt_number(c.get('consistency'))}, importance "
            f"{fmt_number(c.get('importance'))}, score {fmt_number(c.get('score'))}. The top "
            f"{plural(len(cands), 'candidate')} sit in {dist}.")
    out.extend(_ablation_sentences(data))
    out.append(_emergence_sentence(data))
    head = data.get("confidence_head")
    if isinstance(head, dict) and isnum(head.get("heldout_accuracy")):
        train = (f" (train {100 * head['train_accuracy']:.1f}%)" if isnum(head.get("train_accuracy")) else "")
        out.append(f"The confidence head used for importance and ablation ({escape(head.get('kind') or 'probe')}) "
                   f"reaches <b>{100 * head['heldout_accuracy']:.1f}%</b> accuracy on held-out examples{train}.")
    return [s for s in out if s]


def _change(a: Any, b: Any, nd: int = 3) -> str:
    """``a → b (+d)`` for two numbers (``—`` for a missing one)."""
    if not (isnum(a) and isnum(b)):
        return f"{fmt_number(a, nd)} → {fmt_number(b, nd)}"
    d = b - a
    sign = "+" if d > 0 else ("−" if d < 0 else "±")
    return f"{fmt_number(a, nd)} → {fmt_number(b, nd)} ({sign}{fmt_number(abs(d), nd)})"


def _interrupted_sentence(data: dict[str, Any]) -> str:
    """The fit stopped early (``results.json["interrupted"]``, written by the callback): where, and what is here."""
    stop = data.get("interrupted")
    if not isinstance(stop, dict):
        return ""
    last = stop.get("last_probe_step")
    return (f"<b>The run was interrupted at step {escape(stop.get('step'))}</b> ({escape(stop.get('exception'))}): "
            f"this report holds the probe points measured until then"
            f"{', the final scan is the one of step ' + escape(last) if isnum(last) else ''}.")


def _emergence_sentence(data: dict[str, Any]) -> str:
    """One summary sentence on the training timeline (first point → last point), or empty without one; led by the
    interruption, when the fit stopped early."""
    stop = _interrupted_sentence(data)
    h = figures.emergence_headline(data.get("emergence") or [])
    if not h or h["n_points"] < 2:
        return stop
    s0, s1 = h["first"].get("step"), h["last"].get("step")
    parts = []
    if any(isnum(v) for v in h["most_selective_mean"]):
        parts.append(f"the headline (mean selectivity d of the {fmt_number(h['k'])} most selective neurons) went "
                     f"<b>{_change(*h['most_selective_mean'])}</b>")
    if any(isnum(v) for v in h["n_significant"]):
        parts.append(f"FDR-significant neurons {_change(*h['n_significant'])}")
    if any(isnum(v) for v in h["n_candidates"]):
        parts.append(f"candidates {_change(*h['n_candidates'])}")
    if not parts:
        return stop
    return (f"{stop + ' ' if stop else ''}<b>Over training</b> ({plural(h['n_points'], 'probe point')}, step "
            f"{escape(s0)} → step {escape(s1)}), {join_words(parts)}; the first point is the baseline (see "
            f"<a href='#sec-emergence'>Emergence</a>).")


def _baseline_html(data: dict[str, Any]) -> str:
    """What significance at the first probe point means, with that point's numbers: the emergence baseline."""
    h = figures.emergence_headline(data.get("emergence") or [])
    if not h:
        return ""
    first, last = h["first"], h["last"]
    step = first.get("step")
    before = step == 0 or first.get("reason") == "start"
    when = (f"the first probe point (step {escape(step)}, before the first training step)" if before else
            f"the first probe point (step {escape(step)})")
    image = (data.get("concept_info") or {}).get("modality") == "image"
    nums = []
    if isnum(first.get("n_significant")):
        verb = "were" if first["n_significant"] != 1 else "was"
        nums.append(f"<b>{plural(first['n_significant'], 'neuron')}</b> {verb} already FDR-significant")
    if isnum(first.get("n_candidates")):
        nums.append(f"<b>{fmt_number(first['n_candidates'])}</b> qualified as candidates")
    if isnum(first.get("most_selective_mean")):
        nums.append(f"the {fmt_number(h['k'])} most selective neurons had a mean d of "
                    f"<b>{fmt_number(first['most_selective_mean'])}</b>")
    if not nums:
        return ""
    text = (f"<b>The baseline.</b> At {when}, {join_words(nums)}. "
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
        if isnum(first.get("n_significant")) and isnum(last.get("n_significant")):
            changes.append(f"significant neurons {_change(first['n_significant'], last['n_significant'])}")
        if isnum(first.get("n_candidates")) and isnum(last.get("n_candidates")):
            changes.append(f"candidates {_change(first['n_candidates'], last['n_candidates'])}")
        if isnum(first.get("most_selective_mean")) and isnum(last.get("most_selective_mean")):
            changes.append(f"mean d of the {fmt_number(h['k'])} most selective "
                           f"{_change(first['most_selective_mean'], last['most_selective_mean'])}")
    text += (f" (by step {escape(last.get('step'))}: {join_words(changes)})." if changes else ".")
    return f"<p class='note baseline'>{text}</p>"


def _roles_sentence(data: dict[str, Any]) -> str:
    """How many neurons qualify as candidates and suppressors (schema 2), or plainly that none does."""
    nc, ns = data.get("n_candidates"), data.get("n_suppressors")
    if not isnum(nc):
        return ""
    supp = ""
    if isnum(ns) and ns:
        supp = (f" {'Another' if nc else 'Still,'} <b>{plural(ns, 'neuron')}</b> "
                f"{'qualify' if ns != 1 else 'qualifies'} as {'suppressors' if ns != 1 else 'a suppressor'}: "
                "selective in the same way, but removing them is predicted to <i>raise</i> the concept confidence.")
    if nc == 0:
        return (f"<b>No neuron qualifies as a candidate</b>: none {_candidate_rule(data)} and non-negative "
                "importance, so this scan reports no concept neuron and <b>nothing was validated</b> as one." + supp)
    return (f"<b>{plural(nc, 'neuron')} {'qualify' if nc != 1 else 'qualifies'} as "
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
    return fmt_number(sum(bool(n["ablation"].get("validated")) for n in neurons))


def _words(x: Any) -> str:
    """A sentence of results.json, HTML-escaped, with ``<=`` / ``>=`` shown as ≤ / ≥."""
    return escape(str(x).replace("<=", "≤").replace(">=", "≥")) if x is not None else ""


def outcome_counts(data: dict[str, Any]) -> dict[str, int]:
    """The three outcomes of the causal test: ``validated`` (candidates for a drop + suppressors for a rise),
    ``causal, not a candidate``, ``not causal`` and ``tested`` — from ``ablation_summary`` (``n_validated`` +
    ``n_suppressors_validated``, ``n_causal_not_candidate``, ``n_not_causal``), counted from the records where a
    summary lacks them (older results)."""
    summ = data.get("ablation_summary") or {}
    verdicts = [figures.verdict_of(n["ablation"]) for n in figures.ablated_neurons(data)]
    counted = {"validated": sum(v.startswith("validated") for v in verdicts),
               "causal, not a candidate": verdicts.count("causal, not a candidate"),
               "not causal": verdicts.count("not causal"), "tested": len(verdicts)}
    out = dict(counted)
    if isnum(summ.get("n_validated")) or isnum(summ.get("n_suppressors_validated")):
        out["validated"] = int(summ.get("n_validated") or 0) + int(summ.get("n_suppressors_validated") or 0)
    for key, field in (("causal, not a candidate", "n_causal_not_candidate"), ("not causal", "n_not_causal"),
                       ("tested", "n_tested")):
        if isnum(summ.get(field)):
            out[key] = int(summ[field])
    return out


def _floor_note(a: dict[str, Any], summ: dict[str, Any]) -> str:
    """For a neuron whose Holm p is the smallest its null allows: say so, and what it means (no random neuron of its
    layer did as well; it is not a borderline result); empty otherwise."""
    m = summ.get("n_tested")
    if not figures.holm_at_floor(a, m):
        return ""
    L = round(1 / a["p_floor"]) if isnum(a.get("p_floor")) and a["p_floor"] > 0 else None
    how = f"1/{L} × {fmt_number(m)} tested" if L else f"p_floor × {fmt_number(m)} tested"
    return f"the smallest p this null can give ({how}): no random neuron of its layer did as well"


def _holm_html(a: dict[str, Any], summ: dict[str, Any]) -> str:
    note = _floor_note(a, summ)
    return f"Holm p = {fmt_number(a.get('p_holm'))}" + (f" — {note}, so not a borderline result" if note else "")


def floor_sentence(data: dict[str, Any]) -> str:
    """What the smallest p of the causal test is and what a p at it means, from the tested records' ``p_floor``
    and ``ablation_summary.n_tested`` (HTML); empty without a tested neuron.

    A null of N random neurons gives p ≥ 1/(N + 1), and Holm over m tested neurons multiplies the smallest by m:
    every validated neuron can show the same Holm p, at that floor, which reads as "barely significant" unless
    the page says so.
    """
    ab = figures.ablated_neurons(data)
    m = (data.get("ablation_summary") or {}).get("n_tested")
    floors: dict[int, list[str]] = {}
    for n in ab:
        f = n["ablation"].get("p_floor")
        if isnum(f) and f > 0:
            floors.setdefault(round(1 / f), [])
            if str(n.get("layer")) not in floors[round(1 / f)]:
                floors[round(1 / f)].append(str(n.get("layer")))
    if not floors or not isnum(m):
        return ""
    parts = []
    for L, layers in sorted(floors.items()):
        where = "" if len(floors) == 1 else f" (layer{'s' if len(layers) > 1 else ''} {join_words(layers)})"
        parts.append(f"with {fmt_number(L - 1)} random neurons{where} the smallest p is 1/{L} = "
                     f"{fmt_number(1 / L)} and the smallest Holm p {fmt_number(m)} × 1/{L} = "
                     f"{fmt_number(min(1.0, m / L))}")
    n_at = sum(figures.holm_at_floor(n["ablation"], m) for n in ab)
    return (f"<b>The smallest p.</b> The p-values are counts against a finite null: {'; '.join(parts)}. A p at that "
            "floor means that no random neuron of the layer had an effect as extreme; a larger null could only lower "
            f"it, so it is not a borderline result. Here {fmt_number(n_at)} of the {plural(len(ab), 'tested neuron')} "
            "sit at the floor.")


def _best_sentence(neurons: list[dict[str, Any]], summ: dict[str, Any], rise: bool) -> str:
    val = [n for n in neurons if n["ablation"].get("validated") and (n["ablation"].get("direction") == "rise") == rise]
    if not val:
        return ""
    best = max(val, key=lambda n: (-1 if rise else 1) * figures.to_float(n["ablation"].get("delta")))
    a = best["ablation"]
    return (f"The largest validated {'rise' if rise else 'drop'} is {_neuron_name(best)}: Δ = "
            f"{fmt_number(a.get('delta'))} {_ci(a.get('ci_low'), a.get('ci_high'))} (control inputs: "
            f"{fmt_number(a.get('delta_control'))}), "
            f"{_p_html(a)}, {_holm_html(a, summ)}.")


def _outcomes_sentence(data: dict[str, Any], ab: list[dict[str, Any]]) -> str:
    """How many tested neurons were validated, causal but not a candidate, not causal (ablation_summary)."""
    c = outcome_counts(data)
    groups = _tested_groups(ab)
    per = []
    if groups["candidate"]:
        per.append(f"{_n_valid(groups['candidate'])} of the {plural(len(groups['candidate']), 'candidate')} tested "
                   "for a drop of y")
    if groups["suppressor"]:
        per.append(f"{_n_valid(groups['suppressor'])} of the {plural(len(groups['suppressor']), 'suppressor')} "
                   "tested for a rise")
    if groups["named"]:
        per.append(f"{_n_valid(groups['named'])} of the {plural(len(groups['named']), 'named neuron')}")
    cnc = c["causal, not a candidate"]
    return (f"Of the <b>{plural(c['tested'], 'neuron')} tested</b>: "
            f"<b class='o-valid'>{fmt_number(c['validated'])} validated</b>"
            f"{' (' + ', '.join(per) + ')' if per else ''}; "
            f"<b class='o-cnc'>{fmt_number(cnc)} causal, not a candidate</b>"
            + (" (every causal criterion met, but the ranking did not select "
               f"{'it' if cnc == 1 else 'them'} as concept-selective)" if cnc else "")
            + f"; <b class='o-not'>{fmt_number(c['not causal'])} not causal</b>.")


def _ablation_sentences(data: dict[str, Any]) -> list[str]:
    ab = figures.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not ab and not summ:
        if figures.candidates(data):
            how = ("give the callback <code>ablate_top_k=k</code>" if data.get("emergence") else
                   "run the scan with <code>ablate=True</code> (or <code>--ablate</code>)")
            return [f"<b>No ablation was run</b>, so these candidates are correlational: {how} to test them "
                    "causally."]
        return ["<b>No ablation was run</b>."]
    method = escape(summ.get("method") or (ab[0]["ablation"].get("method") if ab else None) or "zero")
    question = summ.get("question")
    first = (f"<b>The causal test</b> asks: <span class='question'>{_words(question)}</span>"
             if question else f"<b>The causal test</b> ({method})")
    first = first.rstrip(".") + "."
    if summ.get("split"):
        first += f" It ran on <b>{escape(summ['split'])}</b>"
        first += f"; y is the {escape(summ['y'])}." if summ.get("y") else "."
    elif summ.get("y"):
        first += f" y is the {escape(summ['y'])}."
    if not ab:
        return [first + " <b>No neuron was tested</b>, so nothing was validated."]
    out = [first, _outcomes_sentence(data, ab)]
    best = " ".join(x for x in (_best_sentence(ab, summ, False), _best_sentence(ab, summ, True)) if x)
    if best:
        out.append(best)
    floor = floor_sentence(data)
    if floor:
        out.append(floor)
    fam = []
    if summ.get("holm_family"):
        fam.append(f"Holm's correction runs over {_words(summ['holm_family'])}"
                   + (f": {_words(summ['fwer_bound'])}" if summ.get("fwer_bound") else "") + ".")
    joint = figures.joint_text(summ, ab, control=True)
    if joint:
        fam.append(f"<span class='joint'>{_words(joint[0].upper() + joint[1:])}.</span>")
    if fam:
        out.append(" ".join(fam))
    more = []
    if isnum(summ.get("importance_delta_spearman")):
        more.append(f"Importance (grad × activation) predicted the measured effects with Spearman ρ = "
                    f"{fmt_number(summ['importance_delta_spearman'])}.")
    audit = summ.get("audit")
    if isinstance(audit, dict) and isnum(audit.get("n_checked")):
        two = any((r or {}).get("tested") == "two-sided" for r in audit.get("neurons") or [] if isinstance(r, dict))
        more.append(f"Audit outside the ranking: {fmt_number(audit.get('n_above_null'))} of "
                    f"{plural(audit['n_checked'], 'low-importance neuron')} had an effect beyond random neurons "
                    f"({'each tested two-sided: ' if two else ''}p ≤ {fmt_general(summ.get('alpha'))}, |Δ| ≥ "
                    f"{_with_unit(summ.get('min_effect'), summ)}); "
                    f"<b>{fmt_general(audit.get('expected_by_chance'))}</b> "
                    "expected by chance.")
    if more:
        out.append(" ".join(more))
    return out


def _cross_concept_caption(data: dict[str, Any]) -> str:
    """What the cross-concept matrix shows, in words, from results.json."""
    cc = data.get("cross_concept") or {}
    shared = cc.get("shared") or []
    n = len(cc.get("neurons") or [])
    s = f"{escape(cc.get('definition'))}. "
    if shared:
        parts = [f"{escape(r['layer'])}:{escape(r['index'])} "
                 f"({escape(', '.join(r.get('selective_for') or []))})" for r in shared]
        s += (f"<b>{len(shared)} of {n}</b> neurons are selective for more than one concept: {join_words(parts)} — "
              "check them before steering.")
    else:
        s += f"None of the {n} neurons is selective for another of these concepts."
    return s


def _cards(data: dict[str, Any]) -> str:
    cards = [("neurons scanned", fmt_number(data.get("n_neurons_scanned")),
              f"{len(data.get('layers') or [])} layers"),
             (f"significant at q = {fmt_general(data.get('fdr_q'))}", fmt_number(data.get("n_significant_fdr")),
              pct(data.get("n_significant_fdr"), data.get("n_neurons_scanned")).strip(" ()") + " of scanned")]
    if isnum(data.get("n_candidates")):
        cards.append(("candidates", fmt_number(data["n_candidates"]),
                      f"+ {plural(data.get('n_suppressors') or 0, 'suppressor')}"))
    cards.append(("examples", f"{fmt_number(data.get('n_positive'))} / {fmt_number(data.get('n_negative'))}",
                  "concept / control (ranking)"))
    ab = figures.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not (ab or summ):
        cards.append(("validated by ablation", "—", "ablation not run"))
    head = data.get("confidence_head")
    if isinstance(head, dict) and isnum(head.get("heldout_accuracy")):
        cards.append(("confidence head", f"{100 * head['heldout_accuracy']:.1f}%", "held-out accuracy"))
    stages, total, summed = timing_stages(data)
    if stages or total is not None:
        cards.append(("time" + (" of the final probe" if data.get("emergence") else "")
                      + (" (sum of the stages)" if summed else ""), _secs(total),
                      " · ".join(f"{escape(_STAGE_SHORT.get(k, k))}&nbsp;{_secs(v)}" for k, v in stages)))
    return _card_grid(cards) + _outcome_cards(data)


def _card_grid(cards: Sequence[tuple[str, str, str]], cls: str = "", colours: Sequence[str | None] = ()) -> str:
    colours = list(colours) + [None] * (len(cards) - len(colours))
    out = []
    for (k, v, sub), c in zip(cards, colours):
        style = f" style='border-left:5px solid {c}'" if c else ""
        out.append(f"<div class='card'{style}><div class='card-v'>{v}</div><div class='card-k'>{k}</div>"
                   f"<div class='card-s'>{sub}</div></div>")
    # balanced rows, never a lone tile (html.grid_style)
    return (f"<div class='cards grid{' ' + cls if cls else ''}' style='{grid_style(len(cards))}'>"
            + "".join(out) + "</div>")


def _outcome_cards(data: dict[str, Any]) -> str:
    """The causal test's tiles: tested, the three outcomes, the joint set (ablation_summary)."""
    ab = figures.ablated_neurons(data)
    summ = data.get("ablation_summary") or {}
    if not (ab or summ):
        return ""
    c = outcome_counts(data)
    nt = c["tested"]
    kinds = [f"{fmt_number(summ.get(k))} "
             f"{w}" for k, w in (("n_candidates", "candidates"), ("n_suppressors", "suppressors"),
                                                      ("n_named", "named")) if isnum(summ.get(k)) and summ.get(k)]
    nv, nsv = summ.get("n_validated"), summ.get("n_suppressors_validated")
    split = (f"{fmt_number(nv)} candidate{'' if nv == 1 else 's'} (drop)"
             + (f" · {fmt_number(nsv)} suppressor{'' if nsv == 1 else 's'} (rise)" if isnum(nsv) and
                (nsv or summ.get("n_suppressors")) else "")) if isnum(nv) else f"of {fmt_number(nt)} tested"
    # each verdict defined where it is first shown (the console's VALIDATED / CAUSAL, NOT A CANDIDATE / NOT CAUSAL)
    cards = [("neurons tested", fmt_number(nt), " · ".join(kinds) or "by the causal test"),
             ("validated", fmt_number(c["validated"]), f"selective and causal: {split}"),
             ("causal, not a candidate", fmt_number(c["causal, not a candidate"]),
              escape(figures.STATUS_GLOSS["causal, not a candidate"])),
             ("not causal", fmt_number(c["not causal"]), f"of {fmt_number(nt)} tested: some causal criterion failed")]
    colours = [None, figures.STATUS_COLORS["validated"], figures.STATUS_COLORS["causal, not a candidate"],
               figures.STATUS_COLORS["not causal"]]
    beyond = summ.get("joint_beyond_null")
    if isnum(summ.get("joint_delta")) and beyond is not None:
        n, p = summ.get("joint_null_n"), summ.get("joint_p_null")
        size = f" of {fmt_number(summ.get('joint_size'))}" if isnum(summ.get("joint_size")) else ""
        cards.append(("joint set" + size,
                      "<span class='card-word'>" + ("beyond" if beyond else "not beyond") + "</span>",
                      (f"{fmt_number(n)} random sets of the same size, p = {p:.2g}" if isnum(p) and isnum(n)
                       else "random sets of the same size")))
        colours.append(figures.STATUS_COLORS["validated"] if beyond else figures.STATUS_COLORS["not causal"])
    method = escape(summ.get("method") or "")
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
    t = {k: v for k, v in (data.get("timings_s") or {}).items() if isnum(v)}
    order = list(_STAGES) + sorted(k for k in t if k not in _STAGES and k != "total")
    stages = [(k, float(t[k])) for k in order if k in t]
    if "total" in t:
        return stages, float(t["total"]), False
    return stages, (sum(v for _, v in stages) if stages else None), bool(stages)


def _secs(x: Any) -> str:
    if not isnum(x):
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
    body = "".join(f"<tr><th>{escape(k)}</th><td class='num'>{_secs(v)}</td></tr>" for k, v in rows)
    title = "time of the final probe" if data.get("emergence") else "time"
    return f"<div class='kv'><h4>{title}</h4><table class='times'>{body}</table></div>"


# ---------------------------------------------------------------------------- examples
_DATA_URI = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


def _thumb(path: str, data: dict[str, Any], size: int = 72, label: str | None = None) -> str:
    """An ``<img>`` of an image example: a file (resolved next to the probe file when relative) shrunk to
    ``size`` px and inlined, or an inlined PNG as the callback writes it (``data:image/png;base64,...``);
    the path as text when the file cannot be read."""
    alt = escape(label or Path(path).name) if not path.startswith("data:") else escape(label or "image example")
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
        return (f"<img class='thumb' alt='{alt}' title='{escape(path)}' "
                f"src='data:image/png;base64,{b64}'>")
    except Exception:  # missing file or no PIL: show the path
        return f"<span class='path'>{escape(path)}</span>"


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
    if len(text) > EXAMPLE_CHARS:  # a results.json written before examples were stored clipped
        ok = isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, int) for v in span)
        text, span = clip_text(text, span if ok and 0 <= span[0] < span[1] <= len(text) else None, EXAMPLE_CHARS)
    if (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, int) for v in span)
            and 0 <= span[0] < span[1] <= len(text)):
        s, e = span
        body = f"{escape(text[:s])}<mark>{escape(text[s:e])}</mark>{escape(text[e:])}"
    else:
        body = escape(text)
    tokens, pos = rec.get("tokens"), rec.get("position")
    if isinstance(tokens, list) and isinstance(pos, int) and 0 <= pos < len(tokens):
        body += f" <span class='tok'>strongest token: <code>{escape(tokens[pos])}</code></span>"
    return body


def _image_tiles(exs: Sequence[dict[str, Any]], data: dict[str, Any]) -> str:
    """Image examples as tiles: the thumbnail framed in the class colour, its label and the activation."""
    tiles = []
    for r in exs:
        label = _image_label(r, data)
        cls = "pos" if r.get("positive") else "ctrl"
        kind = "concept" if r.get("positive") else "control"
        tiles.append(f"<div class='ex-img {cls}' title='{escape(label)} ({kind} example), activation "
                     f"{fmt_number(r.get('activation'))}'>{_thumb(str(r['image']), data, label=label)}"
                     f"<div class='ex-lab'>{escape(label)}</div><div "
                     f"class='ex-act'>{fmt_number(r.get('activation'))}</div>"
                     "</div>")
    return f"<div class='ex-imgs'>{''.join(tiles)}</div>"


#: a neuron "barely fires" when its largest activation on any probe example is below this fraction of the typical
#: spread of a neuron of its layer (:func:`activation_scale`)
QUIET_FRACTION = 0.5


def activation_scale(data: dict[str, Any], layer: Any) -> float | None:
    """The typical spread of a neuron of ``layer``: the standard deviation the layer-scaled d divides by,
    √(the median over the layer's neurons of the pooled variance of their activations); None when results.json
    does not give it.

    Read from ``layer_summary[].activation_scale`` when the results carry it; otherwise recovered from the listed
    neurons: (mean_pos − mean_neg) / d_layer is each neuron's own spread, floored at the layer's, and equals
    the layer's exactly for a neuron quieter than the median (d_layer < d), so the median over those neurons
    is the layer's spread (None when no listed neuron of the layer is that quiet).
    """
    for row in data.get("layer_summary") or []:
        if row.get("layer") == layer and isnum(row.get("activation_scale")):
            return float(row["activation_scale"])
    vals = []
    for n in data.get("neurons") or []:
        mp, mn, d, dl = (n.get(k) for k in ("mean_pos", "mean_neg", "selectivity", "selectivity_layer"))
        if n.get("layer") != layer or not all(isnum(v) for v in (mp, mn, d, dl)) or dl == 0:
            continue
        if abs(dl) < 0.999 * abs(d) and (mp - mn) / dl > 0:
            vals.append((mp - mn) / dl)
    if not vals:
        return None
    vals.sort()
    return vals[len(vals) // 2]


def barely_fires(neuron: dict[str, Any], data: dict[str, Any]) -> tuple[float, float] | None:
    """(largest activation, layer spread) of a neuron whose largest activation on any probe example is within
    ``QUIET_FRACTION`` × its layer's spread of zero (:func:`activation_scale`): its "top" examples are where it is
    least silent, not where it fires (a GELU unit in its flat negative region); None otherwise or unknown."""
    acts = [r.get("activation") for r in neuron.get("top_examples") or [] if isinstance(r, dict)]
    acts = [float(a) for a in acts if isnum(a)]
    scale = activation_scale(data, neuron.get("layer"))
    if not acts or scale is None or scale <= 0:
        return None
    top = max(acts)
    return (top, scale) if abs(top) < QUIET_FRACTION * scale else None


def quiet_text(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    """The barely-fires note of a neuron (plain text), or empty (:func:`barely_fires`)."""
    q = barely_fires(neuron, data)
    if q is None:
        return ""
    top, scale = q
    return (f"barely fires: its largest activation on any probe example, {fmt_number(top)}, is "
            f"{fmt_number(abs(top) / scale, 2)}× the typical spread of a neuron of layer {neuron.get('layer')} "
            f"({fmt_number(scale)}), so these are the examples on which it is least silent, not where it fires")


def _examples_html(neuron: dict[str, Any], data: dict[str, Any], limit: int = 3) -> str:
    exs = [r for r in neuron.get("top_examples") or [] if isinstance(r, dict)][:limit]
    if not exs:
        return "<span class='muted'>—</span>"
    quiet = quiet_text(neuron, data)
    quiet = f"<div class='quiet'>{escape(quiet[0].upper() + quiet[1:])}.</div>" if quiet else ""
    if all(r.get("image") for r in exs):
        return quiet + _image_tiles(exs, data)
    rows = []
    for r in exs:
        badge = ("<span class='badge b-pos'>concept</span>" if r.get("positive")
                 else "<span class='badge b-neg'>control</span>")
        content = _thumb(str(r["image"]), data) if r.get("image") else _text_html(r)
        cls = "ex" if r.get("positive") else "ex ctrl"
        rows.append(f"<div class='{cls}'><span class='act' title='activation'>{fmt_number(r.get('activation'))}</span>"
                    f"{badge}<span class='ex-body'>{content}</span></div>")
    return quiet + "".join(rows)


# ---------------------------------------------------------------------------- tables
def _status_badge(status: str) -> str:
    col = figures.STATUS_COLORS.get(status, "#777")
    return f"<span class='status' style='background:{col}'>{escape(status)}</span>"


def _group_d_html(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    """Per-group effect sizes as small labelled bars (what consistency summarises)."""
    gd = neuron.get("group_d")
    if not isinstance(gd, list) or not gd:
        return ""
    names = (data.get("concept_info") or {}).get("groups") or []
    vals = [v for v in gd if isnum(v)]
    top = max([abs(v) for v in vals] + [1e-12])
    rows = []
    for i, v in enumerate(gd):
        name = escape(names[i]) if i < len(names) else f"g{i + 1}"
        w = 0 if not isnum(v) else int(round(100 * abs(v) / top))
        cls = "gbar neg" if isnum(v) and v < 0 else "gbar"
        rows.append(f"<div class='grow' title='{name}: d = {fmt_number(v)}'><span class='gname' "
                    f"title='{name}'>{name}</span><span class='gtrack'><span class='{cls}' "
                    f"style='width:{w}%'></span></span>"
                    f"<span class='gval'>{fmt_number(v, 2)}</span></div>")
    return f"<div class='gd'>{''.join(rows)}</div>"


def _ablation_cell(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    st = figures.candidate_status(neuron, data)
    a = neuron.get("ablation")
    if not isinstance(a, dict):
        note = "not tested" if st == "not ablated" else "ablation not run"
        return f"{_status_badge(st)}<div class='sub'>{note}</div>"
    summ = data.get("ablation_summary") or {}
    spec = _ci(a.get("specificity_ci_low"), a.get("specificity_ci_high"))
    p_txt = figures.p_value_text(a)
    p_main, _, p_null = p_txt.partition(" (")
    floor = _floor_note(a, summ)
    rule = a.get("direction_rule")
    lines = [f"Δ = <b>{fmt_number(a.get('delta'))}</b> <span "
             f"class='sub'>{_ci(a.get('ci_low'), a.get('ci_high'))}</span>"
             + (f" <span class='sub'>t = {fmt_number(a.get('t'), 2)}</span>" if isnum(a.get("t")) else ""),
             f"control Δ = {fmt_number(a.get('delta_control'))}",
             f"specificity CI {spec if spec else '—'}"
             + (f"<div class='sub'>specificity Holm p = {fmt_number(a.get('specificity_p_holm'))}</div>"
                if isnum(a.get("specificity_p_holm")) else ""),
             escape(p_main) + (f"<div class='sub'>{escape(p_null.rstrip(')'))}</div>" if p_null else ""),
             f"Holm p = {fmt_number(a.get('p_holm'))}" + (f"<div class='sub "
                                                          f"floor'>{escape(floor)}</div>" if floor else ""),
             f"<span class='sub'>tested for a {escape(a.get('direction') or 'drop')}"
             f"{' (named)' if a.get('tested_as') == 'named' else ''}"
             f"{' · direction by ' + escape(rule) if rule and rule != 'role' else ''}</span>"]
    reasons = [r for r in a.get("reasons") or [] if r]
    why = ("<ul class='reasons'>" + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>"
           if reasons and not a.get("validated") else "")
    return _status_badge(st) + "".join(f"<div class='abl-l'>{l}</div>" for l in lines) + why


def _d_cell(n: dict[str, Any]) -> str:
    dci = n.get("selectivity_ci")
    ci = _ci(*dci[:2]) if isinstance(dci, list) and len(dci) >= 2 else ""
    rows = [f"<b>{fmt_number(n.get('selectivity'))}</b>"]
    if ci:
        rows.append(f"<div class='sub' title='95% CI of Cohen&#x27;s d'>CI {ci}</div>")
    if "selectivity_layer" in n:
        rows.append(f"<div class='sub' title='layer-scaled d (used for ranking)'>d<sub>layer</sub> = "
                    f"{fmt_number(n.get('selectivity_layer'))}</div>")
    rows.append(f"<div class='sub'>q = {fmt_number(n.get('selectivity_q'))}</div>")
    rows.append(f"<div class='sub' title='mean activation on concept / control examples'>mean "
                f"{fmt_number(n.get('mean_pos'))} / {fmt_number(n.get('mean_neg'))}</div>")
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
            f"<tr><td class='num'>{fmt_number(n.get('rank'))}</td>"
            f"<td class='neuron'>{escape(n.get('layer'))} : {escape(n.get('index'))}</td>"
            f"<td class='num'>{_d_cell(n)}</td>"
            f"<td class='num'>{fmt_number(n.get('consistency'))}{_group_d_html(n, data)}</td>"
            f"<td class='num'><b>{fmt_number(n.get('score'))}</b><div class='sub' title='importance (grad × "
            f"activation)'>{fmt_number(n.get('importance'))}</div></td>"
            f"<td class='abl'>{_ablation_cell(n, data)}</td>"
            f"<td class='exs{ex_cls}'>{_examples_html(n, data)}</td></tr>")
    return (f"<div class='tablewrap'><table class='{cls}'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _candidates_table(data: dict[str, Any]) -> str:
    cands = figures.candidates(data)
    if not cands:
        if isnum(data.get("n_candidates")):
            return (f"<p class='none'>No neuron qualifies as a candidate: none {_candidate_rule(data)} and "
                    "non-negative importance. Nothing was validated as a concept neuron.</p>")
        return "<p class='muted'>No neurons were listed.</p>"
    return _neurons_table(cands, data)


def _suppressors_html(data: dict[str, Any]) -> str:
    supps = figures.suppressors(data)
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
             + (f" Here y is the {escape(summ['y'])}." if summ.get("y") else ""))
    shown = f"the top {len(supps)} of {fmt_number(ns)}" if isnum(ns) and ns > len(supps) else f"all {len(supps)}"
    body = _neurons_table(supps, data, cls="cands supps") if supps else ""
    return (f"<h3 id='sec-suppressors'>Suppressors <span class='muted'>({shown})</span></h3>"
            f"<p class='muted'>{intro}</p>{body}")


def _named_html(data: dict[str, Any]) -> str:
    """Ablated neurons outside the candidate and suppressor tables (e.g. named with ``neurons=``)."""
    shown = {(n.get("layer"), n.get("index")) for n in figures.candidates(data) + figures.suppressors(data)}
    rest = [n for n in figures.ablated_neurons(data) if (n.get("layer"), n.get("index")) not in shown]
    if not rest:
        return ""
    return ("<h3>Other tested neurons</h3><p class='muted'>Neurons tested because they were named "
            "(<code>neurons=</code> / <code>--neurons</code>) that are not among the listed candidates or "
            "suppressors. A neuron the ranking does not select can be <i>causal, not a candidate</i> at most, never "
            "<i>validated</i>.</p>" + _neurons_table(rest, data, cls="cands"))


def _more_table(data: dict[str, Any]) -> str:
    shown = {(n.get("layer"), n.get("index")) for n in figures.candidates(data) + figures.suppressors(data)
             + figures.ablated_neurons(data)}
    rest = [n for n in sorted(data.get("neurons") or [], key=lambda n: n.get("rank") or 0)
            if (n.get("layer"), n.get("index")) not in shown]
    if not rest:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{fmt_number(n.get('rank'))}</td>"
        f"<td class='neuron'>{escape(n.get('layer'))} : "
        f"{escape(n.get('index'))}</td><td>{escape(n.get('role') or '—')}</td><td "
        f"class='num'>{fmt_number(n.get('selectivity'))}</td><td "
        f"class='num'>{fmt_number(n.get('selectivity_layer'))}</td><td "
        f"class='num'>{fmt_number(n.get('selectivity_q'))}</td><td "
        f"class='num'>{fmt_number(n.get('consistency'))}</td><td class='num'>{fmt_number(n.get('importance'))}</td><td "
        f"class='num'>{fmt_number(n.get('score'))}</td><td class='num'>{fmt_number(n.get('mean_pos'))}</td>"
        f"<td class='num'>{fmt_number(n.get('mean_neg'))}</td></tr>" for n in rest)
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
    body = "".join("<tr>" + "".join(f"<td class='num'>{fmt_number(r.get(k))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return ("<details class='null' id='sec-null' open><summary>The null: Δ of random neurons, per layer</summary>"
            "<div class='tablewrap'>"
            "<table class='more'><thead><tr>" + "".join(f"<th>{t}</th>" for _, t in cols)
            + f"</tr></thead><tbody>{body}</tbody></table></div></details>")


def _ablation_caption(data: dict[str, Any]) -> str:
    summ = data.get("ablation_summary") or {}
    me = summ.get("min_effect")
    split = f" on {escape(summ['split'])}" if summ.get("split") else ""
    method = escape(summ.get("method") or "zero")
    verdicts = {figures.candidate_status(n, data) for n in figures.ablated_neurons(data)}
    shown = [st for st in figures.STATUS_COLORS if st in verdicts]
    words = ", ".join(f"<span class='st-word' "
                      f"style='color:{figures.STATUS_COLORS[st]}'>{escape(st)}</span>" for st in shown)
    has_null = any(isinstance(r, dict) for r in summ.get("null") or [])
    return (f"Δ = y − y<sub>intervened</sub> of each tested neuron ({method} intervention){split}, coloured by its "
            f"verdict ({words}) with its 95% bootstrap CI (● tested for a drop, ▼ for a rise), and on control inputs "
            "(open diamonds). The grey band is the 5–95% range of Δ over random neurons of the same layer under the "
            "same intervention (the null the p-values are computed against)"
            + (f"; the dashed lines mark the minimum effect ±{_with_unit(me, summ)}" if isnum(me) else "")
            + (". The null of each layer (quantiles, excess kurtosis) is in <a href='#sec-null'>the null table</a> "
               "under this chart." if has_null else "."))


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
    y_name = summ.get("y") or head.get("kind")
    pooling = s.get("pooling", "auto")
    q, min_sel = fmt_general(data.get("fdr_q")), fmt_general(data.get("min_selectivity"))
    items = [
        ("Activation", f"per example, the neuron's output pooled over the example (pooling "
                       f"<code>{escape(pooling)}</code>"
                       f"{': ' + escape(_POOLING[pooling]) if pooling in _POOLING else ''})."),
        ("Selectivity", "Cohen's d = (mean<sub>concept</sub> − mean<sub>control</sub>) / "
                        "√((var<sub>concept</sub> + var<sub>control</sub>)/2), with a Welch t-test p-value; q is the "
                        f"Benjamini–Hochberg adjusted p-value over all {fmt_number(data.get('n_neurons_scanned'))} "
                        f"scanned neurons, and a neuron is <i>significant</i> when q ≤ {q}. "
                        "The 95% CI of d (shown under it) is the large-sample interval "
                        f"d ± 1.96·√((n<sub>c</sub> + n<sub>n</sub>)/(n<sub>c</sub>n<sub>n</sub>) + "
                        f"d²/(2(n<sub>c</sub> + n<sub>n</sub>))) for the {fmt_number(data.get('n_positive'))} concept "
                        f"and {fmt_number(data.get('n_negative'))} control examples that ranked the neurons: a large d "
                        f"from few examples gets a wide interval. "
                        "The <i>layer-scaled d</i> (d<sub>layer</sub>, used for ranking) divides the same mean "
                        "difference by √max(pooled variance, the median pooled variance of the neuron's layer): a "
                        "near-silent unit (values near 0 on both classes, tiny variance) reaches a huge d without "
                        "ever firing, and measured against a typical unit of its layer its tiny difference stays "
                        "tiny. A unit at least as variable as its layer's median keeps d<sub>layer</sub> = d."),
        ("Consistency", "the same d computed separately for each phrasing group g "
                        f"({escape(', '.join(map(str, groups))) if groups else 'folds of the concept examples'}) "
                        "against the controls: consistency = clip(1 − std<sub>g</sub>(d<sub>g</sub>) / "
                        "mean<sub>g</sub>(d<sub>g</sub>), 0, 1) when mean<sub>g</sub>(d<sub>g</sub>) &gt; 0, else 0. "
                        "Near 1: fires for every phrasing; near 0: for one word only."),
        ("Importance", "gradient × activation, the first-order estimate of the ablation effect: mean over concept "
                       "examples of Σ<sub>positions</sub> (a − b)·∂y/∂a with baseline b = "
                       f"<code>{escape(s.get('baseline', 'zero'))}</code>; y is the model's concept confidence"
                       f"{' (' + escape(y_name) + ')' if y_name else ''}"
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
                      f"This scan has {fmt_number(data.get('n_candidates'))}; only candidates are reported as concept "
                      "neurons, and a weak probe may have none."),
        ("Suppressor", f"the same selectivity criteria (q ≤ {q}, d &gt; 0, d<sub>layer</sub> ≥ {min_sel}) but "
                       "importance &lt; 0: removing it is predicted to <i>raise</i> y. This scan has "
                       f"{fmt_number(data.get('n_suppressors'))}."),
    ]
    if summ or figures.ablated_neurons(data):
        items += _ablation_definitions(data)
    else:
        items.append(("Status", f"without ablation: <i>significant</i> = positively selective at q ≤ {q}; "
                                "<i>suppressor</i> = a <a href='#def-suppressor'>suppressor</a>; <i>not significant</i> otherwise. "
                                "Ablation turns these into causal verdicts."))
    if figures.neuron_table(data)["score"].size:
        items.append(("Heatmap", escape(figures.heatmap_reduction(data))))
        items.append(("Scatter", escape(figures.scatter_reduction(data))))
    return definition_list(items)


#: ablation_summary sentences shown in the Definitions (left out of the Setup table)
_DEFINED_IN_DEFS = ("question", "statistic", "test", "holm_family", "fwer_bound", "specificity_test",
                    "direction_rules", "audit")


def _ablation_definitions(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The causal test's definitions, worded from ``ablation_summary`` (question, statistic, test, Holm family,
    FWER bound, direction rules, specificity test, audit definition): nothing here restates a rule that
    results.json does not carry."""
    summ = data.get("ablation_summary") or {}
    me, alpha, unit = summ.get("min_effect"), summ.get("alpha"), _y_unit(summ)
    me_txt = f"{fmt_general(me)}{' ' + escape(unit) if unit else ''}"
    method = escape(summ.get("method") or "zero")
    items: list[tuple[str, str]] = []
    if summ.get("question"):
        items.append(("Question", f"the <code>{method}</code> intervention asks: {_words(summ['question'])}"))
    stat = f" The statistic: {_words(summ['statistic'])}." if summ.get("statistic") else ""
    items.append(("Intervention", f"Δ = mean<sub>x</sub>[y(x) − y<sub>intervened</sub>(x)] is measured on "
                  f"{escape(summ.get('split') or 'the ablation inputs')}, with a bootstrap 95% CI over examples; y is "
                  f"the {escape(summ.get('y') or 'concept confidence')}. Control Δ is the same on control inputs, and "
                  f"specificity = Δ<sub>concept</sub> − Δ<sub>control</sub>.{stat}"))
    kurt = [(r.get("layer"), r.get("excess_kurtosis")) for r in summ.get("null") or []
            if isinstance(r, dict) and isnum(r.get("excess_kurtosis"))]
    in_table = " (each layer's null is in <a href='#sec-null'>the null table</a>)" if _null_table(data) else ""
    kurt_txt = (" The null's excess kurtosis here: " + ", ".join(f"layer {escape(l)}: "
                                                                 f"{fmt_number(k, 2)}" for l, k in kurt)
                + f" (0 for a normal distribution){in_table}." if kurt else "")
    items.append(("Test", f"{_words(summ.get('test') or 'empirical p against random neurons of the same layer')}. "
                  "Random neurons of the layer are intervened on one by one in a random order; a tested neuron "
                  "whose h-th at-least-as-extreme random neuron appears after L draws gets p = h/L, otherwise p = "
                  "(g + 1)/(L + 1) with g at-least-as-extreme among all L, so the smallest p a null of L neurons "
                  "can give is 1/(L + 1) (the page never shows a smaller one). The p is exact whatever the null's "
                  f"shape.{kurt_txt}"))
    if summ.get("holm_family") or summ.get("fwer_bound"):
        items.append(("Holm family", (f"{_words(summ.get('holm_family'))}, " if summ.get("holm_family") else "")
                      + f"at alpha = {fmt_general(alpha)}"
                      + (f": {_words(summ['fwer_bound'])}" if summ.get("fwer_bound") else "")
                      + ". A neuron whose Holm p equals the smallest p its null allows (1/(L + 1) × the number "
                        "tested) is marked as such in the candidate table: no random neuron did as well, and a larger "
                        "null could only lower it."))
    rules = summ.get("direction_rules")
    if isinstance(rules, dict) and rules:
        items.append(("Direction", "each tested neuron is tested for a drop (Δ &gt; 0) or a rise (Δ &lt; 0), "
                      "chosen by " + "; ".join(f"<i>{escape(k)}</i>: {_words(v)}" for k, v in rules.items()) + "."))
    if summ.get("specificity_test"):
        items.append(("Specificity", f"{_words(summ['specificity_test'])}."))
    spec = ("the <a href='#def-specificity'>specificity</a> test" if summ.get("specificity_test") else
            "Δ on concept inputs beyond Δ on control inputs")
    items.append(("Causal", "in the tested direction s (+1 for a drop, −1 for a rise): Holm p ≤ "
                  f"{fmt_general(alpha)} against the random neurons, the 95% CI of s·Δ above 0, specific ({spec}, "
                  f"Holm p ≤ {fmt_general(alpha)}) and s·Δ ≥ the minimum effect {me_txt}."))
    items.append(("Verdict", "<i>validated</i>: causal, and a candidate of the ranking tested for a drop; "
                  "<i>validated suppressor</i>: causal, and a suppressor tested for a rise; <i>causal, not a "
                  "candidate</i>: causal, but the ranking did not select the neuron (so it is not reported as a "
                  "concept neuron); <i>not causal</i>: some causal criterion failed. Every neuron short of "
                  "<i>validated</i> lists the criteria it failed. <i>not ablated</i>: a candidate or suppressor "
                  "beyond the tested ones."))
    if isnum(summ.get("joint_delta")):
        j = figures.joint_text(summ, figures.ablated_neurons(data))
        items.append(("Joint set", "the neurons tested for a drop, intervened on all at once (redundant neurons "
                      "can hide from single interventions), compared with random sets of the same size from the same "
                      f"layers{'; here ' + _words(j) if j else ''}. The set counts as evidence only when it is "
                      "beyond those random sets."))
    audit = summ.get("audit")
    if isinstance(audit, dict):
        defn = (_words(audit["definition"]) if audit.get("definition") else
                f"random low-importance neurons of the tested layers; above the null when p ≤ {fmt_general(alpha)} and "
                f"|Δ| ≥ {me_txt}")
        items.append(("Audit", f"{defn}. Here {fmt_number(audit.get('n_above_null'))} of "
                               f"{fmt_number(audit.get('n_checked'))} "
                      f"were above the null, {fmt_general(audit.get('expected_by_chance'))} expected by chance. Many "
                      "more than expected would mean the ranking misses causal neurons."))
    return items


# ---------------------------------------------------------------------------- page


def _header_html(data: dict[str, Any], figs: dict[str, Any], concept: str, model: str) -> str:
    """The page header: title, concept description and the table of contents (one link per section)."""
    desc = escape((data.get("concept_info") or {}).get("description") or "")
    toc = [("summary", "Summary")] + [(f"sec-{n}", _SECTION_TITLES.get(n, n)) for n in figs] + [
        ("sec-table", "Candidate table")]
    if figures.suppressors(data):
        toc.append(("sec-suppressors", "Suppressors"))
    toc += [("sec-setup", "Setup"), ("sec-defs", "Definitions")]
    return ("<header><div class='kicker'>NeuroLens concept report</div>"
            f"<h1>Neurons for <span class='concept'>“{concept}”</span> in {model}</h1>"
            f"{'<p class=desc>' + desc + '</p>' if desc else ''}"
            "<nav class='toc'>" + "".join(f"<a href='#{a}'>{escape(t)}</a>" for a, t in toc) + "</nav></header>")


def _no_ablation_chart_note(data: dict[str, Any], figs: dict[str, Any]) -> str:
    """Why the causal-validation chart is missing (no ablation ran, or none tested); empty when it is there."""
    if "ablation" in figs:
        return ""
    if not data.get("ablation_summary"):
        return ("<div class='note'>No ablation ran for this scan, so there is no causal-validation chart. "
                + ("Give the callback <code>ablate_top_k=k</code>" if data.get("emergence") else
                   "Re-run with <code>ablate=True</code>") + " to test the candidates.</div>")
    return ("<div class='note'>Ablation ran, but no neuron was tested, so there is no causal-validation "
            "chart.</div>")


def _figure_caption(name: str, data: dict[str, Any]) -> str | None:
    """The caption under figure ``name`` (HTML), worded from the results where it depends on them."""
    if name == "heatmap":
        return escape(figures.heatmap_reduction(data))
    if name == "scatter":
        caption = f"{_CAPTIONS['scatter']} {escape(figures.scatter_reduction(data))}"
        if figures.ablated_neurons(data) or data.get("ablation_summary"):
            caption += (" Rings and diamonds are coloured by the verdict of the causal test, in the words of the "
                        "candidate table (not ablated: not tested); validated ones are stars.")
        return caption + _scatter_key(data)
    if name == "ablation":
        return _ablation_caption(data)
    if name == "crossconcept":
        return _cross_concept_caption(data)
    if name == "sankey":
        return _sankey_caption(data)
    return _CAPTIONS.get(name)


def _scatter_key(data: dict[str, Any]) -> str:
    """The key of the scatter's numbers: each candidate's rank, neuron and status (HTML)."""
    cands = figures.candidates(data)
    if not cands:
        return ""
    items = []
    for n in cands:
        st = figures.candidate_status(n, data)
        items.append(f"<li><b>{escape(n.get('rank'))}</b> {escape(figures.neuron_label(n))} <span class='st-word' "
                     f"style='color:{figures.STATUS_COLORS.get(st, '#777')}'>{escape(st)}</span></li>")
    return f"<ul class='scatter-key'>{''.join(items)}</ul>"


def _sankey_caption(data: dict[str, Any]) -> str:
    """Concept → layer → status, with each status shown defined in words (figures.STATUS_GLOSS)."""
    shown = figures.candidates(data) + figures.suppressors(data)
    statuses = [st for st in figures.STATUS_COLORS if st in {figures.candidate_status(n, data) for n in shown}]
    words = "; ".join(f"<span class='st-word' style='color:{figures.STATUS_COLORS[st]}'>{escape(st)}</span>: "
                      f"{escape(figures.STATUS_GLOSS[st])}" for st in statuses if st in figures.STATUS_GLOSS)
    return ("Concept → layer → status of each top candidate and suppressor" + (f". The statuses: {words}" if words else "")
            + " (all terms: <a href='#sec-defs'>Definitions</a>).")


def _figure_sections(data: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    """One section per figure (the missing-ablation note after the Sankey, or on its own without one)."""
    note = _no_ablation_chart_note(data, figs)
    sections = []
    for name, fig in figs.items():
        extra = _null_table(data) if name == "ablation" else ""
        before = _baseline_html(data) if name == "emergence" else ""
        sections.append(f"<section id='sec-{name}'><h2>{escape(_SECTION_TITLES.get(name, name))}</h2>{before}"
                        f"{figure_html(name, fig, _figure_caption(name, data))}{extra}"
                        f"{note if name == 'sankey' else ''}</section>")
    if "sankey" not in figs and note:
        sections.append(f"<section id='sec-sankey'>{note}</section>")
    return sections


def _table_section(data: dict[str, Any]) -> str:
    """The candidate table section: candidates, suppressors, other tested neurons and the next ranked ones."""
    cands = figures.candidates(data)
    of = f" (of {fmt_number(data['n_candidates'])})" if isnum(data.get("n_candidates")) else ""
    image = (data.get("concept_info") or {}).get("modality") == "image"
    shown = ("(each image with its label, the group of a concept image or <i>control</i>, and the activation "
             "under it)" if image else "(activation value on the left; the concept span is marked)")
    intro = (f"<p class='muted'>The top {plural(len(cands), 'candidate')}{of} with their raw scores, the composite "
             "score, the verdict of the causal test where it ran, and the probe examples on which they fire most "
             f"{shown}.</p>" if cands else "")
    return (f"<section id='sec-table'><h2>Candidate table</h2>{intro}{_candidates_table(data)}"
            f"{_suppressors_html(data)}{_named_html(data)}{_more_table(data)}</section>")


#: the Setup tables' keys in words (with the unit where one applies; ``{y}`` is y's unit); a key not listed here
#: is still shown, with ``_`` as spaces (html.key_label)
SETUP_LABELS: dict[str, dict[str, str]] = {
    "model": {"name": "model", "family": "family", "modality": "modality", "n_layers": "layers in the model",
              "units": "neurons per layer", "type": "architecture (class)", "neuron": "neuron site (module pattern)",
              "weights": "weights", "path": "path", "arch": "architecture", "n_params": "parameters"},
    "concept": {"name": "concept", "modality": "modality", "n_positive": "concept examples (ranking)",
                "n_negative": "control examples (ranking)", "n_groups": "phrasing groups", "groups": "groups",
                "n_tasks": "prompt tasks (y measured on them)", "source": "probe file (split)"},
    "settings": {"importance": "importance (grad × activation) computed", "baseline": "importance baseline",
                 "pooling": "pooling over an example", "batch_size": "batch size (examples)", "device": "device",
                 "ablate": "causal test (ablation) run", "seed": "random seed", "holdout": "held-out fraction",
                 "ablation": "intervention", "direction": "direction of named neurons",
                 "suppressors": "suppressors tested", "split": "examples"},
    "ablation": {"method": "intervention", "split": "inputs", "n_concept_inputs": "concept inputs",
                 "n_control_inputs": "control inputs", "y": "y (the model's concept confidence)",
                 "min_effect": "minimum effect |Δ| ({y})", "alpha": "alpha (family-wise error rate)",
                 "replicas": "interventions per forward pass", "n_tested": "neurons tested",
                 "n_candidates": "candidates tested", "n_suppressors": "suppressors tested",
                 "n_named": "named neurons tested", "null_needed": "random neurons per layer, at most",
                 "null_rounds": "rounds of the sequential null", "joint_delta": "joint set: Δ ({y})",
                 "joint_ci_low": "joint set: Δ, 95% CI low ({y})", "joint_ci_high": "joint set: Δ, 95% CI high ({y})",
                 "joint_delta_control": "joint set: Δ on control inputs ({y})",
                 "joint_specificity_ci": "joint set: specificity 95% CI ({y})", "joint_size": "joint set: neurons",
                 "joint_p_null": "joint set: p against random sets", "joint_beyond_null": "joint set: beyond random sets",
                 "joint_null_n": "joint set: random sets drawn", "joint_t": "joint set: t (Δ / standard error)",
                 "joint_direction": "joint set: tested for a", "importance_delta_spearman":
                 "Spearman ρ of importance vs measured Δ", "n_validated": "validated (candidates, drop)",
                 "n_suppressors_validated": "validated suppressors (rise)", "n_causal": "causal",
                 "n_causal_not_candidate": "causal, not a candidate", "n_not_causal": "not causal",
                 "warnings": "warnings"},
    "confidence head": {"kind": "kind", "train_accuracy": "accuracy on training examples",
                        "heldout_accuracy": "accuracy on held-out examples", "layer": "layer", "C": "regularisation C"},
}


def setup_labels(table: str, data: dict[str, Any]) -> dict[str, str]:
    """The labels of one Setup table (:data:`SETUP_LABELS`), with y's unit filled in (``nats``), or no unit."""
    unit = _y_unit(data.get("ablation_summary") or {})
    return {k: v.replace(" ({y})", f" ({unit})" if unit else "") for k, v in SETUP_LABELS.get(table, {}).items()}


def _setup_section(data: dict[str, Any]) -> str:
    """The setup section: model, concept, settings, ablation and confidence-head tables and the timings, each key
    in words (:data:`SETUP_LABELS`)."""
    mi = dict(data.get("model_info") or {})
    ci = {k: v for k, v in (data.get("concept_info") or {}).items() if k != "description"}
    tables = [("model", mi), ("concept", ci), ("settings", data.get("settings") or {}),
              ("ablation", {k: v for k, v in (data.get("ablation_summary") or {}).items() if k not in _DEFINED_IN_DEFS}),
              ("confidence head", data.get("confidence_head") or {})]
    return ("<section id='sec-setup'><h2>Setup</h2><div class='kvs'>"
            + "".join(kv_table(t, d, setup_labels(t, data)) for t, d in tables)
            + _timings_table(data) + "</div></section>")


def render_report(data: dict[str, Any], plotlyjs: str = "inline", figures: dict[str, Any] | None = None) -> str:
    """The report page as an HTML string.

    Args:
        data: the results dict (``ScanResult.to_dict()`` / ``results.json``).
        plotlyjs: ``inline`` (default; the page works offline) or ``cdn``.
        figures: prebuilt ``{name: Figure}`` (default: :func:`figures.build_figures`).
    """
    figs = build_figures(data) if figures is None else figures
    concept = escape(data.get("concept") or "concept")
    model = escape(data.get("model") or "model")
    parts = [
        _header_html(data, figs, concept, model),
        "<section id='summary' class='summary'>" + _warnings_html(data) + _cards(data)
        + "".join(f"<p>{s}</p>" for s in summary_sentences(data)) + "</section>",
        *_figure_sections(data, figs),
        _table_section(data),
        _setup_section(data),
        f"<section id='sec-defs'><h2>Definitions</h2>{_definitions(data)}</section>",
        "<footer>Generated by neurolens_lightning from results.json (schema "
        f"{escape(data.get('schema_version', '?'))}); every number on this page is in that file.</footer>",
    ]
    return html_document(f"NeuroLens: {concept} in {model}", "".join(parts), plotlyjs)


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
    return write_page(path, render_report(data, plotlyjs=plotlyjs))
