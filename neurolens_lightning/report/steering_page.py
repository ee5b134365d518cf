"""The steering page: :func:`write_steering_report` renders ``steering.json`` as one self-contained HTML file.

Same style and helpers as the scan report (:mod:`neurolens_lightning.report.page`): plotly.js
inlined once, every user string HTML-escaped, every sentence and number read from the dict.

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

from neurolens_lightning.report.page import _CSS, _e, _figure_html, _fmt, _g, plotlyjs_tag

__all__ = ["dose_response_figure", "render_steering_report", "write_steering_report"]

_COLORS = {"concept": ("#2c7fb8", "rgba(44,127,184,0.18)"), "control": ("#8c6d62", "rgba(140,109,98,0.18)")}


def _finite(xs: list[Any]) -> list[float | None]:
    return [x if isinstance(x, (int, float)) and math.isfinite(x) else None for x in xs]


def dose_response_figure(data: dict[str, Any]) -> go.Figure:
    """y against the scale (or setting) for concept and control inputs, each mean with its 95% CI band."""
    x = data.get("scales") or []
    labels = data.get("labels") or [str(v) for v in x]
    categorical = data.get("mode") != "scale"
    xs = labels if categorical else x
    fig = go.Figure()
    for kind, name in (("concept", "concept inputs"), ("control", "control inputs")):
        blk = data.get(f"{kind}_inputs") or {}
        mean, lo, hi = _finite(blk.get("mean_y") or []), _finite(blk.get("ci_low") or []), _finite(blk.get("ci_high") or [])
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
                          + _e(name) + "</extra>"))
    xtitle = "setting" if categorical else "scale of the neurons' activations (1 = unchanged)"
    fig.update_layout(height=430, margin={"l": 90, "r": 20, "t": 30, "b": 60}, template="plotly_white",
                      legend={"orientation": "h", "y": 1.08, "x": 0},
                      xaxis={"title": xtitle}, yaxis={"title": _wrap(_e(data.get("y") or "y"), 40)})
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


def _test_sentence(data: dict[str, Any]) -> str:
    t = data.get("test")
    if not isinstance(t, dict):
        return ""
    word = {"increasing": "rises", "decreasing": "falls"}.get(t.get("direction"), "does not move monotonically")
    s = (f"On concept inputs the mean y <b>{word}</b> with the scale (Page's trend test p = {_fmt(t.get('p_trend'))}); "
         f"per input, the slope of y on the scale has mean {_fmt(t.get('slope_mean'))}")
    if t.get("control_slope_mean") is not None:
        s += (f", against {_fmt(t.get('control_slope_mean'))} on control inputs (Mann–Whitney p = "
              f"{_fmt(t.get('p_specific'))})")
    verdict = ("<b>monotonic dose-response</b>" if t.get("monotonic") else
               "<b>no monotonic dose-response</b> at this level")
    return s + f". Verdict at α = {_g(t.get('alpha'))}: {verdict}."


def _summary(data: dict[str, Any]) -> list[str]:
    neurons = ", ".join(f"{n['layer']}:{n['index']}" for n in data.get("neurons") or [])
    labels = data.get("labels") or []
    out = [f"Neurons <b>{_e(neurons)}</b> of <b>{_e(data.get('model'))}</b> were steered together "
           f"({_e(data.get('mode'))}: {_e(', '.join(map(str, labels)))}) on the {_e(data.get('split'))}, for the "
           f"concept <b>{_e(data.get('concept'))}</b>. y is the {_e(data.get('y'))}."]
    con, ctl = data.get("concept_inputs") or {}, data.get("control_inputs") or {}
    if con.get("mean_y"):
        pairs = "; ".join(f"{_e(l)}: {_fmt(v)}" for l, v in zip(labels, con["mean_y"]))
        out.append(f"Mean y on concept inputs — {pairs}.")
    if ctl.get("mean_y"):
        pairs = "; ".join(f"{_e(l)}: {_fmt(v)}" for l, v in zip(labels, ctl["mean_y"]))
        out.append(f"On control inputs — {pairs}.")
    sent = _test_sentence(data)
    if sent:
        out.append(sent)
    return out


def _output_cell(o: dict[str, Any]) -> str:
    parts = []
    if o.get("target_logprob") is not None:
        parts.append(f"log p(target) = {_fmt(o['target_logprob'])}")
    elif o.get("p_concept") is not None:
        parts.append(f"p(concept) = {_fmt(o['p_concept'])}")
    else:
        parts.append(f"y = {_fmt(o.get('y'))}")
    for key, title in (("top_next", "next"), ("top_fills", "fills")):
        if o.get(key):
            toks = ", ".join(f"<code>{_e(t['token'])}</code> {_fmt(t['p'], 2)}" for t in o[key])
            parts.append(f"<span class='sub'>{title}: {toks}</span>")
    if o.get("top_classes"):
        parts.append("<span class='sub'>classes: " + ", ".join(f"{_e(c['class'])} ({_fmt(c['p'], 2)})"
                                                             for c in o["top_classes"]) + "</span>")
    if o.get("continuation") is not None:
        parts.append(f"<span class='cont'>…{_e(o['continuation'])}</span>")
    return "<br>".join(parts)


def _examples_table(data: dict[str, Any]) -> str:
    exs = data.get("examples") or []
    if not exs:
        return "<p class='muted'>No examples were recorded.</p>"
    labels = data.get("labels") or []
    head = "<tr><th>input</th>" + "".join(f"<th>{_e(l)}</th>" for l in labels) + "</tr>"
    rows = []
    for ex in exs:
        inp = ex.get("input") or {}
        if inp.get("prompt") is not None:
            desc = f"{_e(inp['prompt'])}<span class='sub'> → target <code>{_e(inp.get('target'))}</code></span>"
        else:
            desc = _e(inp.get("text") or inp.get("image") or "")
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
"""


def render_steering_report(data: dict[str, Any], plotlyjs: str = "inline") -> str:
    """The steering page as an HTML string (self-contained with ``plotlyjs="inline"``)."""
    concept, model = _e(data.get("concept") or "concept"), _e(data.get("model") or "model")
    t = data.get("test") or {}
    defs = (f"<dl class='defs'><dt>Steering</dt><dd>the chosen neurons' activations are multiplied by the scale "
            "(0 = zero ablation, 1 = unchanged) — or set to a value — at every position, through the same "
            "intervention hooks as ablation.</dd><dt>y</dt><dd>" + _e(data.get("y")) + "; 95% CIs are percentile "
            "bootstraps over inputs.</dd>"
            + (f"<dt>Test</dt><dd>{_e(t.get('definition'))}.</dd>" if t.get("definition") else "") + "</dl>")
    parts = [
        "<header><div class='kicker'>NeuroLens steering report</div>"
        f"<h1>Steering <span class='concept'>“{concept}”</span> neurons in {model}</h1></header>",
        "<section class='summary'>" + "".join(f"<p>{s}</p>" for s in _summary(data)) + "</section>",
        "<section><h2>Dose-response</h2>"
        + _figure_html("dose", dose_response_figure(data),
                       "Mean y at each setting on held-out concept inputs and control inputs, with 95% bootstrap "
                       "CI bands. A concept neuron moves y on concept inputs much more than on controls.")
        + "</section>",
        "<section><h2>Outputs before and after</h2><p class='muted'>The first held-out concept inputs: what the "
        "model outputs at each setting.</p>" + _examples_table(data) + "</section>",
        f"<section><h2>Definitions</h2>{defs}</section>",
        "<footer>Generated by neurolens_lightning from steering.json; every number on this page is in that "
        "file.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>NeuroLens steering: {concept} in {model}</title><style>{_CSS}{_EXTRA_CSS}</style>"
            f"{plotlyjs_tag(plotlyjs)}</head><body><main>{''.join(parts)}</main></body></html>\n")


def write_steering_report(data: dict[str, Any], path: "str | Path", plotlyjs: str = "inline") -> Path:
    """Write the steering page for ``data`` (a steering.json dict) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_steering_report(data, plotlyjs=plotlyjs), encoding="utf-8")
    return path
