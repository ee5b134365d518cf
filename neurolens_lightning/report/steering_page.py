"""The steering page: :func:`write_steering_report` renders ``steering.json`` as one self-contained HTML file.

Same style and helpers as the scan report (:mod:`neurolens_lightning.report.html`): plotly.js
inlined once, every user string HTML-escaped, every sentence and number read from the dict.
The headline is the verdict against random neurons (``test.beyond_null``, ``test.p_null``;
:func:`verdict_sentence`); the trend tests are stated as descriptive only.

Example:
    >>> import json
    >>> data = json.load(open("reports/steer/steering.json"))            # doctest: +SKIP
    >>> write_steering_report(data, "reports/steer/steering.html")        # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from neurolens_lightning.io import json_safe
from neurolens_lightning.report.html import (escape, figure_html, fmt_general, fmt_number, html_document, plural,
                                             write_page)

__all__ = ["dose_response_figure", "floor_note", "null_figure", "p_floor", "render_steering_report",
           "verdict_sentence", "write_steering_report"]

_COLORS = {"concept": ("#2c7fb8", "rgba(44,127,184,0.18)"), "control": ("#8c6d62", "rgba(140,109,98,0.18)")}


def dose_response_figure(data: dict[str, Any]) -> go.Figure:
    """y against the scale (or setting) for concept and control inputs, each mean with its 95% CI band."""
    x = data.get("scales") or []
    labels = data.get("labels") or [str(v) for v in x]
    categorical = data.get("mode") != "scale"
    xs = labels if categorical else x
    fig = go.Figure()
    for kind, name in (("concept", "concept inputs"), ("control", "control inputs")):
        blk = data.get(f"{kind}_inputs") or {}
        mean, lo, hi = (json_safe(list(blk.get(k) or [])) for k in ("mean_y", "ci_low", "ci_high"))
        if not mean:
            continue
        line, band = _COLORS[kind]
        if all(v is not None for v in lo + hi) and lo:
            fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=hi + lo[::-1], fill="toself", fillcolor=band,
                                     mode="lines", line={"width": 0}, hoverinfo="skip", showlegend=False,
                                     name=f"{name} 95% CI"))
        fig.add_trace(go.Scatter(
            x=xs, y=mean, mode="lines+markers", name=f"{name} (n = {blk.get('n')})", line={"color": line, "width": 3},
            customdata=list(zip(lo, hi)),
            hovertemplate="%{x}: mean y %{y:.4g}<br>95% CI [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra>"
                          + escape(name) + "</extra>"))
    xtitle = "setting" if categorical else "scale of the neurons' activations (1 = unchanged)"
    fig.update_layout(height=430, margin={"l": 90, "r": 20, "t": 30, "b": 60}, template="plotly_white",
                      legend={"orientation": "h", "y": 1.08, "x": 0},
                      xaxis={"title": xtitle}, yaxis={"title": _wrap(escape(data.get("y") or "y"), 40)})
    return fig


def null_figure(data: dict[str, Any]) -> go.Figure | None:
    """The steered set's effect T (a vertical line) on the histogram of the random sets' T; None without a null."""
    t = data.get("test")
    if not isinstance(t, dict) or not t.get("null_effects"):
        return None
    vals = json_safe(list(t["null_effects"]))
    n = len(data.get("neurons") or [])
    fig = go.Figure(go.Histogram(x=[v for v in vals if v is not None], nbinsx=40, marker={"color": "#9aa5b1"},
                                 name=f"random sets of {n} (n = {len(vals)})",
                                 hovertemplate="effect %{x}<br>%{y} random sets<extra></extra>"))
    eff = t.get("effect")
    if isinstance(eff, (int, float)) and math.isfinite(eff):
        xs = [v for v in vals if v is not None] + [eff]
        right = eff > (min(xs) + max(xs)) / 2  # label on the side with room, inside the plot
        fig.add_vline(x=eff, line={"color": "#c0392b", "width": 3})
        fig.add_annotation(x=eff, y=0.97, yref="paper", text=f"steered set: {fmt_number(eff)}", showarrow=False,
                           xanchor="right" if right else "left", xshift=-6 if right else 6, yanchor="top",
                           font={"color": "#c0392b", "size": 13}, bgcolor="rgba(255,255,255,0.85)")
    xs_all = [v for v in vals if v is not None] + ([eff] if isinstance(eff, (int, float)) and math.isfinite(eff)
                                                  else [])
    lo, hi = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    span = (hi - lo) or 1.0
    # 5% air on both sides: a tick at the very corner (x = 0 at the left edge) would sit on the count axis's 0
    fig.update_xaxes(range=[lo - 0.05 * span, hi + 0.05 * span])
    fig.update_layout(height=300, margin={"l": 70, "r": 20, "t": 36, "b": 60}, template="plotly_white",
                      showlegend=False, bargap=0.05,
                      xaxis={"title": "effect T = direction × mean over concept inputs of y(×"
                                      f"{fmt_general(t.get('scale_high'))}) − y(×{fmt_general(t.get('scale_low'))})"},
                      yaxis={"title": "random sets"})
    return fig


def _wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (plotly titles do not wrap themselves)."""
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return "<br>".join(lines + [cur])


def _pct_of(share: Any) -> str:
    return "—" if not isinstance(share, (int, float)) or not math.isfinite(share) else f"{100 * share:.0f}%"


def p_floor(t: dict[str, Any]) -> float | None:
    """The smallest p_null the random sets drawn can give, 1/(null_n + 1); None without ``null_n``."""
    n = t.get("null_n")
    return 1.0 / (n + 1) if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def floor_note(t: dict[str, Any]) -> str:
    """``: the smallest p 39 random sets can give (1/40); none of them did as well`` when p_null is at its floor
    (every random set beaten); empty otherwise."""
    f, p = p_floor(t), t.get("p_null")
    if f is None or not isinstance(p, (int, float)) or abs(p - f) > 1e-4 * f:
        return ""
    n = t["null_n"]
    return (f" — the smallest p {fmt_number(n)} random sets can give (1/{fmt_number(n + 1)}): none of them did as "
            "well, and more sets could only lower it")


def verdict_sentence(data: dict[str, Any]) -> str:
    """The headline verdict (HTML), every word and number from ``data["test"]``; empty without a test."""
    t = data.get("test")
    if not isinstance(t, dict):
        return ""
    n = len(data.get("neurons") or [])
    these = "this neuron" if n == 1 else f"these {fmt_number(n)} neurons"
    if t.get("beyond_null") is None:
        return f"<b>No verdict</b>: {escape(t.get('definition'))}."
    up = (t.get("direction") or 1) > 0
    lo, hi = fmt_general(t.get("scale_low")), fmt_general(t.get("scale_high"))
    q = t.get("null_effect_quantiles") or {}
    same = f"random sets of {plural(n, 'neuron')} from the same layers, steered the same way on the same inputs"
    p = f"p_null = {fmt_number(t.get('p_null'))}, one-sided, α = {fmt_general(t.get('alpha'))}{floor_note(t)}"
    if t.get("beyond_null"):
        eff = t.get("effect")
        verb = ("raises" if up else "lowers") if isinstance(eff, (int, float)) and eff > 0 else \
            f"moves (predicted: {'up' if up else 'down'})"
        return (f"<b>Beyond random neurons</b>: turning {these} up (×{lo} → ×{hi}) {verb} y on concept inputs "
                f"more than {fmt_number(t.get('null_beaten'))} of {fmt_number(t.get('null_n'))} {same} ({p}): the mean "
                f"change of y is {fmt_number(t.get('effect_raw_mean'))} (effect in the predicted direction "
                f"{fmt_number(eff)}, 95% CI [{fmt_number(t.get('effect_ci_low'))}, "
                f"{fmt_number(t.get('effect_ci_high'))}]; random sets: median "
                f"{fmt_number(q.get('q50'))}, 95th percentile {fmt_number(q.get('q95'))}).")
    raw = t.get("effect_raw_mean")
    moved = ("leaves y on concept inputs unchanged" if raw == 0 else
             f"changes y on concept inputs by {fmt_number(raw)} on average")
    return (f"<b>Not beyond random neurons</b>: turning {these} up (×{lo} → ×{hi}) {moved}; the predicted "
            f"{'rise' if up else 'fall'} beats only {fmt_number(t.get('null_beaten'))} of "
            f"{fmt_number(t.get('null_n'))} {same} ({p}; random sets: median {fmt_number(q.get('q50'))}, 95th "
            f"percentile {fmt_number(q.get('q95'))}). Random neurons with a non-zero effect move y smoothly with their "
            f"scale too, so the <a href='#sec-dose'>dose-response</a> is "
            f"no evidence that {these} {'carries' if n == 1 else 'carry'} the concept.")


def _detail_sentences(data: dict[str, Any]) -> list[str]:
    """Wrong-direction share, the concept-vs-control contrast and the descriptive trend tests, from ``test``."""
    t = data.get("test")
    if not isinstance(t, dict) or t.get("beyond_null") is None:
        return []
    up = (t.get("direction") or 1) > 0
    out = [f"On {_pct_of(t.get('wrong_direction_share'))} of the concept inputs "
           f"({fmt_number(t.get('wrong_direction_n'))} of {fmt_number(t.get('n_concept_inputs'))}) y moved the wrong "
           f"way ({'fell' if up else 'rose'} where a "
           f"{'rise' if up else 'fall'} was predicted)."]
    if t.get("p_null_specific") is not None:
        out.append(f"Concept vs control (secondary): the effect in the predicted direction is "
                   f"{fmt_number(t.get('control_effect'))} on control inputs, so concept minus control is "
                   f"{fmt_number(t.get('effect_specific'))}; against the same random sets p_null_specific = "
                   f"{fmt_number(t.get('p_null_specific'))} "
                   f"({'beyond' if t.get('beyond_null_specific') else 'not beyond'} "
                   f"them at α = {fmt_general(t.get('alpha'))}).")
    word = {"increasing": "rises", "decreasing": "falls"}.get(t.get("trend_direction"), "is not monotone")
    s = (f"Descriptive only, not a verdict: the mean y on concept inputs {word} with the scale (Page's trend test, "
         f"two-sided, p = {fmt_number(t.get('p_trend'))}); per input, the slope of y on the scale has mean "
         f"{fmt_number(t.get('slope_mean'))}")
    if t.get("control_slope_mean") is not None:
        side = t.get("mw_side")
        side_txt = {"concept > control": "larger on concept inputs", "control > concept": "larger on control inputs"
                    }.get(side, "larger on neither side")
        s += (f", against {fmt_number(t.get('control_slope_mean'))} on control inputs (Mann–Whitney, two-sided, p = "
              f"{fmt_number(t.get('p_specific'))}; the slopes are {side_txt})")
    out.append(s + ".")
    for w in t.get("warnings") or []:
        out.append(f"Warning: {escape(w)}.")
    return out


def _summary(data: dict[str, Any]) -> list[str]:
    neurons = ", ".join(f"{escape(n.get('layer'))}:{escape(n.get('index'))}" for n in data.get("neurons") or [])
    labels = data.get("labels") or []
    out = [f"Neurons <b>{neurons}</b> of <b>{escape(data.get('model'))}</b> were steered together "
           f"({escape(data.get('mode'))}: {escape(', '.join(map(str, labels)))}) with the probe of the concept "
           f"<b>{escape(data.get('concept'))}</b>; y is the {escape(data.get('y'))}. Inputs: the "
           f"{escape(data.get('split'))}."]
    con, ctl = data.get("concept_inputs") or {}, data.get("control_inputs") or {}
    if con.get("mean_y"):
        pairs = "; ".join(f"{escape(l)}: {fmt_number(v)}" for l, v in zip(labels, con["mean_y"]))
        out.append(f"Mean y on concept inputs — {pairs}.")
    if ctl.get("mean_y"):
        pairs = "; ".join(f"{escape(l)}: {fmt_number(v)}" for l, v in zip(labels, ctl["mean_y"]))
        out.append(f"On control inputs — {pairs}.")
    return out + _detail_sentences(data)


def _output_cell(o: dict[str, Any]) -> str:
    parts = []
    if o.get("target_logprob") is not None:
        parts.append(f"log p(target) = {fmt_number(o['target_logprob'])}")
    elif o.get("p_concept") is not None:
        parts.append(f"p(concept) = {fmt_number(o['p_concept'])}")
    else:
        parts.append(f"y = {fmt_number(o.get('y'))}")
    for key, title in (("top_next", "next"), ("top_fills", "fills")):
        if o.get(key):
            toks = ", ".join(f"<code>{escape(t['token'])}</code> {fmt_number(t['p'], 2)}" for t in o[key])
            parts.append(f"<span class='sub'>{title}: {toks}</span>")
    if o.get("top_classes"):
        parts.append("<span class='sub'>classes: " + ", ".join(f"{escape(c['class'])} ({fmt_number(c['p'], 2)})"
                                                             for c in o["top_classes"]) + "</span>")
    if o.get("continuation") is not None:
        parts.append(f"<span class='cont'>…{escape(o['continuation'])}</span>")
    return "<br>".join(parts)


def _examples_table(data: dict[str, Any]) -> str:
    exs = data.get("examples") or []
    if not exs:
        return "<p class='muted'>No examples were recorded.</p>"
    labels = data.get("labels") or []
    head = "<tr><th>input</th>" + "".join(f"<th>{escape(l)}</th>" for l in labels) + "</tr>"
    rows = []
    for ex in exs:
        inp = ex.get("input") or {}
        if inp.get("prompt") is not None:
            desc = f"{escape(inp['prompt'])}<span class='sub'> → target <code>{escape(inp.get('target'))}</code></span>"
        else:
            desc = escape(inp.get("text") or inp.get("image") or "")
        cells = "".join(f"<td>{_output_cell(o)}</td>" for o in ex.get("outputs") or [])
        rows.append(f"<tr><td class='inp'>{desc}</td>{cells}</tr>")
    return f"<div class='tablewrap'><table class='steer'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"


_EXTRA_CSS = """
table.steer{width:100%;table-layout:fixed}
.steer th,.steer td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top;text-align:left;
 overflow-wrap:anywhere}
.steer thead th{background:var(--bg);font-size:13px}
.steer td.inp{font-weight:600}
.cont{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;color:#1f2328}
p.verdict{font-size:17px;max-width:1100px;margin:0 0 14px;padding:10px 14px;border-radius:8px;border-left:5px solid}
p.verdict.beyond{background:#eef6ee;border-color:#2e7d32}
p.verdict.not-beyond{background:#fdf3e7;border-color:#b26a00}
p.verdict.none{background:var(--bg);border-color:var(--line)}
"""


def render_steering_report(data: dict[str, Any], plotlyjs: str = "inline") -> str:
    """The steering page as an HTML string (self-contained with ``plotlyjs="inline"``)."""
    concept, model = escape(data.get("concept") or "concept"), escape(data.get("model") or "model")
    t = data.get("test") if isinstance(data.get("test"), dict) else {}
    n = len(data.get("neurons") or [])
    verdict = verdict_sentence(data)
    cls = "none" if t.get("beyond_null") is None else "beyond" if t.get("beyond_null") else "not-beyond"
    defs = ("<dl class='defs'><dt>Steering</dt><dd>the chosen neurons' activations are multiplied by the scale "
            "(0 = zero ablation, 1 = unchanged) — or set to a value — at every position, through the same "
            "intervention hooks as ablation.</dd><dt>y</dt><dd>" + escape(data.get("y")) + "; 95% CIs are percentile "
            "bootstraps over inputs.</dd><dt>Inputs</dt><dd>" + escape(data.get("split")) + "</dd>"
            + (f"<dt>Test</dt><dd>{escape(t.get('definition'))}.</dd>" if t.get("definition") else "") + "</dl>")
    null_fig = null_figure(data)
    null_sec = ""
    if null_fig is not None:
        null_sec = ("<section><h2>Against random neurons</h2>"
                    + figure_html("null", null_fig,
                                   f"The effect of the steered set (red line) among the effects of the "
                                   f"{fmt_number(len(t.get('null_effects') or []))} random sets of "
                                   f"{plural(n, 'neuron')} drawn from the same layers (per layer as many as the "
                                   f"steered set has there), each steered ×{fmt_general(t.get('scale_low'))} and "
                                   f"×{fmt_general(t.get('scale_high'))} on the same inputs. p_null = "
                                   f"{fmt_number(t.get('p_null'))} (sequential: the first "
                                   f"{fmt_number(t.get('null_n'))} sets decide it){floor_note(t)}.")
                    + "</section>")
    parts = [
        "<header><div class='kicker'>NeuroLens steering report</div>"
        f"<h1>Steering {plural(n, 'neuron')} of {model} on <span class='concept'>“{concept}”</span> "
        f"inputs</h1></header>",
        "<section class='summary'>" + (f"<p class='verdict {cls}' id='verdict'>{verdict}</p>" if verdict else "")
        + "".join(f"<p>{s}</p>" for s in _summary(data)) + "</section>",
        "<section id='sec-dose'><h2>Dose-response</h2>"
        + figure_html("dose", dose_response_figure(data),
                       "Mean y at each setting on concept inputs and control inputs, with 95% bootstrap CI bands. "
                       + ("<a href='#verdict'>The verdict</a> compares the change from the lowest to the highest "
                          "scale with random sets of the same size; a smooth curve alone is no evidence."
                          if t.get("beyond_null") is not None else "No verdict in this mode."))
        + "</section>",
        null_sec,
        "<section><h2>Outputs before and after</h2><p class='muted'>The first concept inputs of the steered split: "
        "what the model outputs at each setting.</p>" + _examples_table(data) + "</section>",
        f"<section><h2>Definitions</h2>{defs}</section>",
        "<footer>Generated by neurolens_lightning from steering.json; every number on this page is in that "
        "file.</footer>",
    ]
    return html_document(f"NeuroLens steering: {concept} in {model}", "".join(parts), plotlyjs, extra_css=_EXTRA_CSS)


def write_steering_report(data: dict[str, Any], path: "str | Path", plotlyjs: str = "inline") -> Path:
    """Write the steering page for ``data`` (a steering.json dict) to ``path``."""
    return write_page(path, render_steering_report(data, plotlyjs=plotlyjs))
