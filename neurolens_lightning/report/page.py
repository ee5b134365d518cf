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
import html
import io
import math
from pathlib import Path
from typing import Any, Sequence

import plotly.io as pio
import plotly.offline

from neurolens_lightning.report import figures as F

__all__ = ["write_report", "render_report", "summary_sentences", "PLOTLY_CONFIG"]

#: plotly config of every chart on the page
PLOTLY_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True,
                                 "modeBarButtonsToRemove": ["select2d", "lasso2d"]}

_CAPTIONS = {
    "layers": "How many neurons of each layer respond to the concept significantly (after false-discovery-rate "
              "control), split by the sign of the effect, with the best composite score of the layer.",
    "heatmap": None,  # filled from heatmap_reduction()
    "scatter": "Each dot is a neuron. Right = fires more on the concept than on the controls; up = does so for "
               "every phrasing group; colour = predicted effect on the model's concept confidence. The ringed "
               "dots are the top candidates.",
    "sankey": "Concept → layer → status of each top candidate. See the definitions at the bottom for what the "
              "statuses mean.",
    "ablation": "Each candidate is switched off and the drop in the model's concept confidence (Δ) is measured on "
                "held-out concept inputs (coloured, with 95% bootstrap CI) and control inputs (open diamonds). "
                "The grey band is what switching off random neurons of the same layer does (mean ± 2 std).",
    "emergence": "How the concept's neurons appeared during training: significant neurons per layer, the score "
                 "of the final top neurons at each probe point, and how stable the top-k set was.",
}
_SECTION_TITLES = {
    "layers": "Layers", "heatmap": "All neurons", "scatter": "Selectivity and consistency",
    "sankey": "Candidates", "ablation": "Causal validation", "emergence": "Emergence over training",
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


def summary_sentences(data: dict[str, Any]) -> list[str]:
    """The plain-words summary as HTML paragraphs (all user text escaped)."""
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
    nsig, q = data.get("n_significant_fdr"), data.get("fdr_q")
    npos_sig = sum(int(s.get("n_significant_positive") or 0) for s in data.get("layer_summary") or [])
    sent = (f"<b>{_fmt(nsig)}</b> neurons{_pct(nsig, data.get('n_neurons_scanned'))} respond to the concept "
            f"significantly (Benjamini–Hochberg false discovery rate q = {_g(q)})")
    if data.get("layer_summary"):
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
    cands = F.candidates(data)
    if cands:
        c = cands[0]
        by_layer: dict[Any, int] = {}
        for n in cands:
            by_layer[n.get("layer")] = by_layer.get(n.get("layer"), 0) + 1
        dist = _join([f"layer {_e(l)} ({k})" for l, k in sorted(by_layer.items(), key=lambda t: -t[1])])
        out.append(
            f"The strongest candidate is <b>neuron {_e(c.get('index'))} of layer {_e(c.get('layer'))}</b> "
            f"(selectivity d = {_fmt(c.get('selectivity'))}, consistency {_fmt(c.get('consistency'))}, "
            f"importance {_fmt(c.get('importance'))}, score {_fmt(c.get('score'))}); "
            f"the top {len(cands)} candidates sit in {dist}.")
    out.append(_ablation_sentence(data))
    head = data.get("confidence_head")
    if isinstance(head, dict) and _isnum(head.get("heldout_accuracy")):
        train = (f" (train {100 * head['train_accuracy']:.1f}%)" if _isnum(head.get("train_accuracy")) else "")
        out.append(f"The confidence head used for importance and ablation ({_e(head.get('kind') or 'probe')}) "
                   f"reaches <b>{100 * head['heldout_accuracy']:.1f}%</b> accuracy on held-out examples{train}.")
    return [s for s in out if s]


def _ablation_sentence(data: dict[str, Any]) -> str:
    ab = [n for n in data.get("neurons") or [] if isinstance(n.get("ablation"), dict)]
    summ = data.get("ablation_summary") or {}
    if not ab:
        return ("<b>No ablation was run</b>, so these candidates are correlational: run the scan with "
                "<code>ablate=True</code> (or <code>--ablate</code>) to test them causally.")
    val = [n for n in ab if n["ablation"].get("validated")]
    nval = summ.get("n_validated", len(val))
    s = (f"Switching candidates off ({_e(summ.get('method') or 'zero')} ablation"
         f"{', on ' + _e(summ['split']) if summ.get('split') else ''}) <b>validated {_fmt(nval)} of {len(ab)}</b> "
         f"as causal")
    if val:
        best = max(val, key=lambda n: F._num(n["ablation"].get("delta")))
        a = best["ablation"]
        s += (f"; the strongest is neuron {_e(best.get('index'))} of layer {_e(best.get('layer'))}: Δ = "
              f"{_fmt(a.get('delta'))} [95% CI {_fmt(a.get('ci_low'))}, {_fmt(a.get('ci_high'))}], "
              f"z = {_fmt(a.get('z'))} against random neurons of its layer")
    s += "."
    if _isnum(summ.get("joint_delta")):
        s += (f" Ablating all {len(ab)} together lowers the concept confidence by Δ = {_fmt(summ['joint_delta'])} "
              f"[{_fmt(summ.get('joint_ci_low'))}, {_fmt(summ.get('joint_ci_high'))}].")
    if _isnum(summ.get("importance_delta_spearman")):
        s += (f" Importance (grad × activation) predicted the measured effects with Spearman ρ = "
              f"{_fmt(summ['importance_delta_spearman'])}.")
    audit = summ.get("audit")
    if isinstance(audit, dict) and _isnum(audit.get("n_checked")):
        s += (f" Audit outside the candidate list: {_fmt(audit.get('n_missed'))} of {_fmt(audit['n_checked'])} "
              f"other neurons checked had an effect the ranking missed.")
    return s


def _cards(data: dict[str, Any]) -> str:
    cards = [("neurons scanned", _fmt(data.get("n_neurons_scanned")),
              f"{len(data.get('layers') or [])} layers"),
             (f"significant at q = {_g(data.get('fdr_q'))}", _fmt(data.get("n_significant_fdr")),
              _pct(data.get("n_significant_fdr"), data.get("n_neurons_scanned")).strip(" ()") + " of scanned"),
             ("examples", f"{_fmt(data.get('n_positive'))} / {_fmt(data.get('n_negative'))}", "concept / control")]
    ab = [n for n in data.get("neurons") or [] if isinstance(n.get("ablation"), dict)]
    if ab:
        nval = (data.get("ablation_summary") or {}).get("n_validated",
                                                          sum(bool(n["ablation"].get("validated")) for n in ab))
        cards.append(("validated by ablation", f"{_fmt(nval)} / {len(ab)}", "candidates"))
    else:
        cards.append(("validated by ablation", "—", "ablation not run"))
    head = data.get("confidence_head")
    if isinstance(head, dict) and _isnum(head.get("heldout_accuracy")):
        cards.append(("confidence head", f"{100 * head['heldout_accuracy']:.1f}%", "held-out accuracy"))
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='card-v'>{v}</div><div class='card-k'>{k}</div>"
        f"<div class='card-s'>{s}</div></div>" for k, v, s in cards) + "</div>"


# ---------------------------------------------------------------------------- examples
def _thumb(path: str, data: dict[str, Any], size: int = 72) -> str:
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
        return (f"<img class='thumb' alt='{_e(p.name)}' title='{_e(path)}' "
                f"src='data:image/png;base64,{b64}'>")
    except Exception:  # missing file or no PIL: show the path
        return f"<span class='path'>{_e(path)}</span>"


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


def _examples_html(neuron: dict[str, Any], data: dict[str, Any], limit: int = 3) -> str:
    exs = [r for r in neuron.get("top_examples") or [] if isinstance(r, dict)][:limit]
    if not exs:
        return "<span class='muted'>—</span>"
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
        rows.append(f"<div class='grow' title='{name}: d = {_fmt(v)}'><span class='gname'>{name}</span>"
                    f"<span class='gtrack'><span class='{cls}' style='width:{w}%'></span></span>"
                    f"<span class='gval'>{_fmt(v, 2)}</span></div>")
    return f"<div class='gd'>{''.join(rows)}</div>"


def _ablation_cell(neuron: dict[str, Any]) -> str:
    a = neuron.get("ablation")
    if not isinstance(a, dict):
        return "<span class='muted'>—</span>"
    return (f"Δ = {_fmt(a.get('delta'))}<div class='sub'>[{_fmt(a.get('ci_low'))}, {_fmt(a.get('ci_high'))}]</div>"
            f"<div class='sub'>z = {_fmt(a.get('z'))}, p = {_fmt(a.get('p_value'))}</div>"
            f"<div class='sub'>control Δ = {_fmt(a.get('delta_control'))}</div>")


def _candidates_table(data: dict[str, Any]) -> str:
    cands = F.candidates(data)
    if not cands:
        return "<p class='muted'>No neurons were listed.</p>"
    head = ("<tr><th>#</th><th>neuron<div class='sub'>layer : index</div></th>"
            "<th>selectivity d<div class='sub'>FDR q</div></th><th>consistency<div class='sub'>d per group</div></th>"
            "<th>importance</th><th>score</th><th>ablation</th><th>status</th>"
            "<th class='exs'>probe examples that activate it most<div class='sub'>activation · "
            "concept span <mark>marked</mark></div></th></tr>")
    rows = []
    for n in cands:
        st = F.candidate_status(n, data)
        rows.append(
            f"<tr><td class='num'>{_fmt(n.get('rank'))}</td>"
            f"<td class='neuron'>{_e(n.get('layer'))} : {_e(n.get('index'))}</td>"
            f"<td class='num'>{_fmt(n.get('selectivity'))}"
            f"<div class='sub'>q = {_fmt(n.get('selectivity_q'))}</div></td>"
            f"<td class='num'>{_fmt(n.get('consistency'))}{_group_d_html(n, data)}</td>"
            f"<td class='num'>{_fmt(n.get('importance'))}</td>"
            f"<td class='num'><b>{_fmt(n.get('score'))}</b></td>"
            f"<td class='num'>{_ablation_cell(n)}</td><td>{_status_badge(st)}</td>"
            f"<td class='exs'>{_examples_html(n, data)}</td></tr>")
    return (f"<div class='tablewrap'><table class='cands'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _more_table(data: dict[str, Any]) -> str:
    k = int(data.get("top_k") or 10)
    rest = sorted(data.get("neurons") or [], key=lambda n: n.get("rank") or 0)[k:]
    if not rest:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{_fmt(n.get('rank'))}</td>"
        f"<td class='neuron'>{_e(n.get('layer'))} : {_e(n.get('index'))}</td>"
        f"<td class='num'>{_fmt(n.get('selectivity'))}</td><td class='num'>{_fmt(n.get('selectivity_q'))}</td>"
        f"<td class='num'>{_fmt(n.get('consistency'))}</td><td class='num'>{_fmt(n.get('importance'))}</td>"
        f"<td class='num'>{_fmt(n.get('score'))}</td><td class='num'>{_fmt(n.get('mean_pos'))}</td>"
        f"<td class='num'>{_fmt(n.get('mean_neg'))}</td></tr>" for n in rest)
    return (f"<details><summary>The next {len(rest)} ranked neurons (as saved in results.json)</summary>"
            "<div class='tablewrap'><table class='more'><thead><tr><th>#</th><th>layer : index</th><th>d</th>"
            "<th>q</th><th>consistency</th><th>importance</th><th>score</th><th>mean on concept</th>"
            f"<th>mean on control</th></tr></thead><tbody>{rows}</tbody></table></div></details>")


def _kv_table(title: str, d: dict[str, Any]) -> str:
    if not isinstance(d, dict) or not d:
        return ""
    def val(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(str(x) if _isnum(x) else _e(x) for x in v)
        return _fmt(v) if _isnum(v) else _e(v)

    rows = "".join(f"<tr><th>{_e(k)}</th><td>{val(v)}</td></tr>" for k, v in d.items() if not isinstance(v, dict))
    return f"<div class='kv'><h4>{_e(title)}</h4><table>{rows}</table></div>"


# ---------------------------------------------------------------------------- definitions
def _definitions(data: dict[str, Any]) -> str:
    s = data.get("settings") or {}
    ci = data.get("concept_info") or {}
    groups = ci.get("groups") or []
    head = data.get("confidence_head") or {}
    summ = data.get("ablation_summary") or {}
    imp = s.get("importance", True)
    items = [
        ("Activation", f"per example, the neuron's output pooled over the example (pooling: "
                       f"<code>{_e(s.get('pooling', 'auto'))}</code>; for marked examples the mean over the marked "
                       "concept span, otherwise the max over real tokens; spatial mean for images)."),
        ("Selectivity", "Cohen's d = (mean<sub>concept</sub> − mean<sub>control</sub>) / "
                        "√((var<sub>concept</sub> + var<sub>control</sub>)/2), with a Welch t-test p-value; q is the "
                        f"Benjamini–Hochberg adjusted p-value over all {_fmt(data.get('n_neurons_scanned'))} scanned "
                        f"neurons, and a neuron is <i>significant</i> when q ≤ {_g(data.get('fdr_q'))}."),
        ("Consistency", "the same d computed separately for each phrasing group g "
                        f"({_e(', '.join(map(str, groups))) if groups else 'folds of the concept examples'}) "
                        "against the controls: consistency = clip(1 − std<sub>g</sub>(d<sub>g</sub>) / "
                        "mean<sub>g</sub>(d<sub>g</sub>), 0, 1) when mean<sub>g</sub>(d<sub>g</sub>) &gt; 0, else 0. "
                        "Near 1: fires for every phrasing; near 0: for one word only."),
        ("Importance", "gradient × activation, the first-order estimate of the ablation effect: mean over concept "
                       "examples of Σ<sub>positions</sub> (a − b)·∂y/∂a with baseline b = "
                       f"<code>{_e(s.get('baseline', 'zero'))}</code>; y is the model's concept confidence"
                       f"{' (' + _e(head.get('kind')) + ')' if head.get('kind') else ''}. Positive: removing the "
                       "neuron is predicted to lower the confidence."
         if imp is not False else "not computed in this scan."),
        ("Composite score", "geometric mean of the three scores mapped to [0, 1]: d⁺/(1 + d⁺) with "
                            "d⁺ = max(d, 0), consistency, and |importance| / max |importance| over the scanned neurons"
                            + ("" if imp is not False else
                               " (here without importance: geometric mean of the first two)")
                            + ". The raw scores are always shown beside it."),
    ]
    if any(isinstance(n.get("ablation"), dict) for n in data.get("neurons") or []):
        me = summ.get("min_effect")
        items.append(("Ablation", f"the neuron is set to {_e(summ.get('method') or 'zero')} at every position and "
                      "Δ = mean<sub>x</sub>[y(x) − y<sub>ablated</sub>(x)] is measured on held-out concept inputs, with "
                      "a bootstrap 95% CI over examples; control Δ is the same on control inputs and specificity = "
                      "Δ<sub>concept</sub> − Δ<sub>control</sub>. The null model ablates random neurons of the same "
                      "layer; z = (Δ − mean<sub>null</sub>) / std<sub>null</sub>, with a one-sided p-value "
                      "Holm-corrected over the candidates."))
        items.append(("Status", "<i>validated</i>: corrected p &lt; 0.05, the CI of Δ excludes 0 and Δ ≥ the minimum "
                      f"effect ({_g(me) if _isnum(me) else 'see settings'}); <i>weak</i>: not validated but the CI "
                      "of Δ lies above 0; <i>not validated</i>: otherwise; <i>not ablated</i>: not tested."))
    else:
        items.append(("Status", "without ablation, <i>significant</i> = positively selective at the FDR level "
                                "above; <i>not significant</i> otherwise. Ablation turns these into causal verdicts."))
    if F.neuron_table(data)["score"].size:
        items.append(("Heatmap", _e(F.heatmap_reduction(data))))
        items.append(("Scatter", _e(F.scatter_reduction(data))))
    return "<dl class='defs'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


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
.card{flex:1 1 170px;background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card-v{font-size:26px;font-weight:700;line-height:1.2}
.card-k{font-size:14px;font-weight:600}
.card-s{font-size:13px;color:var(--muted)}
nav.toc{font-size:14px;margin:6px 0 0;color:var(--muted)}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px}
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
.gd{margin-top:4px;font-size:11.5px;color:var(--muted);width:210px}
.grow{display:flex;align-items:center;gap:5px;line-height:1.25}
.gname{flex:0 0 86px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;text-align:left}
.gtrack{flex:1 1 auto;height:7px;background:#eef1f4;border-radius:3px}
.gbar{display:block;height:7px;background:#2c7fb8;border-radius:3px}.gbar.neg{background:#c0392b}
.gval{flex:0 0 34px;text-align:right;font-variant-numeric:tabular-nums}
th.exs,td.exs{min-width:360px}
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
.path{font-family:ui-monospace,monospace;font-size:12px}
.muted{color:var(--muted)}
details{margin:12px 0}
summary{cursor:pointer;color:var(--accent);font-weight:600}
.kvs{display:flex;flex-wrap:wrap;gap:24px}
.kv table th{text-align:left;padding:2px 14px 2px 0;font-weight:600;color:var(--muted)}
.kv table td{padding:2px 0;word-break:break-all;max-width:520px}
dl.defs{font-size:14.5px;display:grid;grid-template-columns:170px 1fr;gap:6px 18px}
dl.defs dt{font-weight:700}
dl.defs dd{margin:0}
.note{background:var(--bg);border-left:4px solid var(--line);padding:8px 12px;font-size:14.5px;color:var(--muted)}
footer{margin-top:40px;font-size:13px;color:var(--muted)}
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
        ("sec-table", "Candidate table"), ("sec-setup", "Setup"), ("sec-defs", "Definitions")]
    parts = [
        "<header><div class='kicker'>NeuroLens concept report</div>"
        f"<h1>Neurons for <span class='concept'>“{concept}”</span> in {model}</h1>"
        f"{'<p class=desc>' + desc + '</p>' if desc else ''}"
        "<nav class='toc'>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in toc) + "</nav></header>",
        "<section id='summary' class='summary'>" + _cards(data)
        + "".join(f"<p>{s}</p>" for s in summary_sentences(data)) + "</section>",
    ]
    if "ablation" not in figs:
        figs_note = ("<div class='note'>No ablation ran for this scan, so there is no causal-validation chart. "
                     "Re-run with <code>ablate=True</code> to test the candidates.</div>")
    else:
        figs_note = ""
    for name, fig in figs.items():
        if name == "heatmap":
            caption = _e(F.heatmap_reduction(data))
        elif name == "scatter":
            caption = f"{_CAPTIONS['scatter']} {_e(F.scatter_reduction(data))}"
        else:
            caption = _CAPTIONS.get(name)
        parts.append(f"<section id='sec-{name}'><h2>{_e(_SECTION_TITLES.get(name, name))}</h2>"
                     f"{_figure_html(name, fig, caption)}"
                     f"{figs_note if name == 'sankey' else ''}</section>")
    parts.append("<section id='sec-table'><h2>Candidate table</h2>"
                 "<p class='muted'>The top candidates with their three raw scores, the composite score and the probe "
                 "examples on which they fire most (activation value on the left; the concept span is marked).</p>"
                 f"{_candidates_table(data)}{_more_table(data)}</section>")
    mi = dict(data.get("model_info") or {})
    ci = {k: v for k, v in (data.get("concept_info") or {}).items() if k != "description"}
    parts.append("<section id='sec-setup'><h2>Setup</h2><div class='kvs'>"
                 + _kv_table("model", mi) + _kv_table("concept", ci)
                 + _kv_table("settings", data.get("settings") or {})
                 + _kv_table("confidence head", data.get("confidence_head") or {})
                 + _kv_table("time (s)", data.get("timings_s") or {}) + "</div></section>")
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


def write_report(data: dict[str, Any], path: str | Path, result: Any = None, plotlyjs: str = "inline") -> Path:
    """Write the self-contained HTML report of a scan to ``path`` and return it.

    Args:
        data: the results dict (``ScanResult.to_dict()`` or the loaded ``results.json``).
        path: the HTML file to write (the caller makes the folder write atomic).
        result: the :class:`~neurolens_lightning.ScanResult`, optional; the page is built from
            ``data`` alone so that it always matches results.json.
        plotlyjs: ``inline`` (default, opens offline) or ``cdn`` (smaller, needs network).

    Returns:
        the path written.
    """
    del result  # the page must show exactly what results.json holds
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data, plotlyjs=plotlyjs), encoding="utf-8")
    return path
