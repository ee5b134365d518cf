"""The comparison page: one self-contained HTML file per ``neurolens compare`` run.

:func:`render_comparison` turns the comparison dict (``comparison.json``, built by
:func:`neurolens_lightning.compare.build_comparison`) into the page: per-model cards, the
plain-words summary (:func:`summary_sentences`), the depth figure (:func:`depth_figure`), the
divergence matrix, each model's top neurons, and the definitions. It shares the scan report's
formatting, escaping, CSS, figure embedding and plotly.js loading (``report/html.py``); every
user string goes through :func:`html.escape` and every number is read from the comparison dict.

Example:
    >>> import json
    >>> comp = json.load(open("reports/demo-compare/comparison.json"))        # doctest: +SKIP
    >>> html_text = render_comparison(comp)                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from neurolens_lightning.report import figures
from neurolens_lightning.report.html import (definition_list, escape, figure_html, fmt_general, fmt_number,
                                             grid_style, html_document, isnum, join_words, kv_table, pct, plural)

__all__ = ["render_comparison", "summary_sentences", "depth_figure"]

_COLORS = ["#2c7fb8", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]

_DEPTH_CAPTION = (
    "Top: how many of each layer's neurons respond to the concept (fire significantly more on it). Bottom: the same "
    "per-layer values normalised over the model (its share of the model's selective neurons) and scaled by the "
    "number of layers, so that 1 = an even spread whatever the depth; the dotted lines are the linear interpolation "
    "used to resample onto the common grid for the divergence, ★ marks each model's peak and the dashed verticals "
    "its depth.")


def _depth(x: Any) -> str:
    """A relative depth for display, always two decimals (``—`` when missing)."""
    return f"{float(x):.2f}" if isnum(x) else "—"


def _flatness(m: Mapping[str, Any]) -> str:
    """``, though the profile is nearly flat (...)`` when the peak layer holds < 1.2x an even share."""
    layers = m.get("layers") or []
    shares = [l.get("share") for l in layers if isnum(l.get("share"))]
    if len(shares) < 2:
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

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.13,
                        subplot_titles=("<b>Amount</b>: % of each layer's neurons that fire significantly more on "
                                        "the concept",
                                        "<b>Placement</b>: each layer's share of the model's selective neurons, "
                                        "relative to an even spread (1 = even; ★ = peak)"))
    top = 1.0
    stars: list[tuple[Any, str, str, Any, float]] = []
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        name = escape(m.get("name"))
        layers = m.get("layers") or []
        x = np.array([figures.to_float(l.get("rel_depth")) for l in layers], dtype=np.float64)
        frac = np.array([figures.to_float(l.get("fraction")) * 100 for l in layers], dtype=np.float64)
        share = np.array([figures.to_float(l.get("share")) for l in layers], dtype=np.float64)
        conc = share * max(len(layers), 1)  # share relative to an even spread over the scanned layers
        if np.isfinite(conc).any():
            top = max(top, float(np.nanmax(conc)))
        custom = np.array([[l.get("layer"), m.get("n_layers"), l.get("n_significant_positive"), l.get("n_units"),
                            figures.to_float(l.get("share")) * 100] for l in layers], dtype=np.float64)
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
                stars.append((m, name, col, pk, figures.to_float(pk.get("share")) * max(len(layers), 1)))
    # the peaks: a star each; labels of stars that share a place take turns around it (same text: said once)
    placed: list[tuple[float, float, str]] = []
    for m, name, col, pk, y in stars:
        x, text = figures.to_float(pk.get("rel_depth")), f"peak {figures.to_float(m.get('peak_rel_depth')):.2f}"
        near = [p for p in placed if abs(p[0] - x) < 0.12 and abs(p[1] - y) < 0.15 * top * 1.22]
        same = any(abs(p[0] - x) < 1e-9 and abs(p[1] - y) < 1e-9 and p[2] == text for p in near)
        placed.append((x, y, text))
        fig.add_trace(go.Scatter(
            x=[pk.get("rel_depth")], y=[y], mode="markers+text", showlegend=False,
            legendgroup=name, marker={"symbol": "star", "size": 20, "color": col, "line": {"color": "#222", "width": 1}},
            text=["" if same else text],
            textposition=("top center", "bottom center", "middle right", "middle left")[min(len(near), 3)],
            textfont={"color": col, "size": 12},
            hovertemplate=(f"<b>{name}</b> peak: layer {escape(m.get('peak_layer'))} · relative depth "
                           "%{x:.2f}<extra></extra>")), row=2, col=1)
        fig.add_vline(x=x, line={"color": col, "width": 1.2, "dash": "dash"}, opacity=0.6)
    fig.update_xaxes(range=[-0.04, 1.04], dtick=0.1, zeroline=False)
    fig.update_xaxes(title_text="relative depth ℓ/(L−1)   (0 = first layer, 1 = last layer)", row=2, col=1)
    fig.update_yaxes(title_text="% of layer", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="× even share", range=[0, top * 1.22], row=2, col=1)
    fig.add_hline(y=1.0, line={"color": "#888", "width": 1, "dash": "dot"}, row=2, col=1)
    n_models = len(comp.get("models") or [])
    figures.style_figure(fig, "", 680, legend_rows=1 + (n_models > 4))
    fig.update_layout(title=None, margin={"t": 40})
    for ann in fig.layout.annotations:
        if ann.text and ann.text.startswith("<b>"):
            ann.update(font={"size": 14, "color": "#333"}, x=0.0, xanchor="left")
    return fig


def summary_sentences(comp: Mapping[str, Any]) -> list[str]:
    """The plain-words summary as HTML paragraphs (every user string escaped)."""
    models = comp.get("models") or []
    out = []
    names = [f"<b>{escape(m.get('name'))}</b> ({fmt_number(m.get('n_layers'))} layers)" for m in models]
    out.append(f"The concept <b>{escape(comp.get('concept'))}</b> ({fmt_number(comp.get('n_positive'))} concept and "
               f"{fmt_number(comp.get('n_negative'))} control examples) was scanned with the same probe in "
               f"{join_words(names)}; layers are aligned by relative depth ℓ/(L−1).")
    for m in models:
        nsp, ntot = m.get("n_significant_positive"), m.get("n_neurons_scanned")
        if m.get("peak_rel_depth") is None:
            out.append(f"<b>{escape(m.get('name'))}</b>: no neuron fires significantly more on the concept, so it has "
                       "no depth profile to compare.")
            continue
        s = (f"<b>{escape(m.get('name'))}</b>: {fmt_number(nsp)} of {fmt_number(ntot)} neurons{pct(nsp, ntot)} fire "
             f"significantly more on the concept; they are densest at relative depth "
             f"<b>{_depth(m.get('peak_rel_depth'))}</b> (layer {escape(m.get('peak_layer'))} of layers "
             f"0–{fmt_number((m.get('n_layers') or 1) - 1)}) and centred at "
             f"{_depth(m.get('mean_rel_depth'))}{_flatness(m)}; the strongest selectivity is d = "
             f"{fmt_number(m.get('max_selectivity'))}")
        if m.get("n_validated") is not None:
            nv = m["n_validated"]
            s += (f"; the causal test validated {plural(nv, 'candidate')} of the "
                  f"{fmt_number(m.get('n_ablated'))} neurons it tested")
        out.append(s + ".")
    for p in (comp.get("divergence") or {}).get("pairs") or []:
        if p.get("js") is None:
            out.append(f"The divergence between {escape(p.get('a'))} and {escape(p.get('b'))} is undefined (a model "
                       "without concept-selective neurons).")
            continue
        out.append(f"Jensen–Shannon divergence between the depth profiles of <b>{escape(p.get('a'))}</b> and "
                   f"<b>{escape(p.get('b'))}</b>: <b>{fmt_number(p['js'])}</b> bits (0 = same profile, 1 = no overlap) "
                   f"— {_js_words(p['js'])}.")
    counts = [(m.get("name"), m.get("n_significant_positive") or 0) for m in models]
    if len(counts) >= 2:
        hi = max(counts, key=lambda t: t[1])
        lo = min(counts, key=lambda t: t[1])
        if lo[1] > 0 and hi[1] >= 1.5 * lo[1]:
            out.append(f"In amount rather than placement: {escape(hi[0])} has <b>{hi[1] / lo[1]:.1f}×</b> as many "
                       f"concept-selective neurons as {escape(lo[0])}.")
    return out


def _cards(comp: Mapping[str, Any]) -> str:
    cards = []
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        nsp, ntot = m.get("n_significant_positive"), m.get("n_neurons_scanned")
        share = pct(nsp, ntot).strip(" ()")  # "12.5%", or "" without a count
        share = f"{share} of {fmt_number(ntot)} neurons" if share else ""
        rows = [("peak depth", _depth(m.get("peak_rel_depth"))), ("centre of mass", _depth(m.get("mean_rel_depth"))),
                ("layers", fmt_number(m.get("n_layers"))), ("strongest d", fmt_number(m.get("max_selectivity")))]
        if m.get("n_validated") is not None:
            rows.append(("<a href='#def-verdict'>validated</a>",
                         f"{fmt_number(m['n_validated'])} / {fmt_number(m.get('n_ablated'))} tested"))
        kv = "".join(f"<div><span class='ck'>{k}</span> <b>{v}</b></div>" for k, v in rows)
        cards.append(f"<div class='card' style='border-top:4px solid {col}'><div class='card-k'>{escape(m.get('name'))}"
                     f"</div><div class='card-v'>{fmt_number(nsp)}</div><div class='card-s'>concept-selective neurons "
                     f"· {share}</div><div class='card-kv'>{kv}</div></div>")
    # balanced rows, never a lone tile (html.grid_style)
    return f"<div class='cards grid' style='{grid_style(len(cards))}'>" + "".join(cards) + "</div>"


def _divergence_table(comp: Mapping[str, Any]) -> str:
    div = comp.get("divergence") or {}
    names, matrix = div.get("names") or [], div.get("matrix") or []
    head = "<tr><th></th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for n, row in zip(names, matrix):
        cells = []
        for v in row:
            if v is None:
                cells.append("<td class='num muted'>—</td>")
            else:
                a = min(1.0, max(0.0, float(v))) ** 0.5
                cells.append(f"<td class='num' style='background:rgba(192,57,43,{0.08 + 0.8 * a:.2f});"
                             f"color:{'#fff' if a > 0.6 else '#1f2328'}'>{fmt_number(v)}</td>")
        rows.append(f"<tr><th>{escape(n)}</th>{''.join(cells)}</tr>")
    return (f"<div class='tablewrap'><table class='div'><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
            "</table></div>")


def _top_tables(comp: Mapping[str, Any]) -> str:
    blocks = []
    any_ab = any(m.get("n_validated") is not None for m in comp.get("models") or [])
    for i, m in enumerate(comp.get("models") or []):
        col = _COLORS[i % len(_COLORS)]
        head = ("<tr><th>#</th><th>neuron</th><th>depth</th><th>d</th><th>consist.</th><th>import.</th>"
                "<th>score</th>" + ("<th>ablation</th>" if any_ab else "")
                + "<th>probe example it fires most on</th></tr>")
        rows = []
        for n in m.get("top_neurons") or []:
            ab = n.get("ablation")
            ab_cell = ""
            if any_ab:
                if isinstance(ab, dict):
                    st = figures.verdict_of(ab)  # validated / causal, not a candidate / not causal (one vocabulary)
                    ab_cell = (f"<td class='num'>Δ = {fmt_number(ab.get('delta'))}<div class='sub'>"
                               f"<span class='st' style='background:{figures.STATUS_COLORS.get(st, '#777')}'>"
                               f"{escape(st)}"
                               "</span></div></td>")
                else:
                    ab_cell = "<td class='muted'>—</td>"
            ex = n.get("top_example")
            if ex is None:
                ex_html = "<span class='muted'>—</span>"
            else:
                ctrl = not n.get("top_example_positive")
                ex_html = (("<span class='badge b-neg'>control</span>" if ctrl else "")
                           + f"<span class='{'ctrl' if ctrl else ''}'>{escape(str(ex)[:90])}"
                           f"{'…' if len(str(ex)) > 90 else ''}</span>")
            rows.append(f"<tr><td class='num'>{fmt_number(n.get('rank'))}</td>"
                        f"<td class='neuron'>{escape(n.get('layer'))}:{escape(n.get('index'))}</td>"
                        f"<td class='num'>{_depth(n.get('rel_depth'))}</td>"
                        f"<td class='num'>{fmt_number(n.get('selectivity'))}</td>"
                        f"<td class='num'>{fmt_number(n.get('consistency'))}</td>"
                        f"<td class='num'>{fmt_number(n.get('importance'))}</td>"
                        f"<td class='num'><b>{fmt_number(n.get('score'))}</b></td>{ab_cell}"
                        f"<td class='ex'>{ex_html}</td></tr>")
        link = m.get("scan_dir")
        link_html = (f" · <a href='{escape(link)}/report.html'>full report</a>" if link else "")
        blocks.append(f"<div class='tbl'><h3><span class='dot' style='background:{col}'></span>{escape(m.get('name'))}"
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
    """The comparison page as one self-contained HTML string.

    Args:
        comp: the comparison dict (what ``comparison.json`` holds).
        plotlyjs: ``inline`` (default; plotly.js inlined once, the page works offline) or ``cdn``.
    """
    concept = escape(comp.get("concept") or "concept")
    names = [m.get("name") for m in comp.get("models") or []]
    title_models = " vs ".join(escape(n) for n in names)
    dist = comp.get("distribution") or {}
    div_def = (comp.get("divergence") or {}).get("definition")
    defs = [
        ("Alignment", escape(dist.get("alignment"))),
        ("Selective neuron", f"FDR-significant (Benjamini–Hochberg q ≤ {fmt_general(comp.get('fdr_q'))} over all "
                             "neurons of the model) with positive selectivity: it fires more on the concept than on "
                             "the controls."),
        ("Encoding distribution", escape(dist.get("definition"))),
        ("Common grid", escape(dist.get("resampling")) + f" (G = {len(dist.get('grid') or [])})."),
        ("Divergence", escape(div_def) + "; 0 = the same depth profile, 1 = no overlap. The words used in the summary: "
                       "&lt; 0.01 nearly identical, &lt; 0.05 similar, &lt; 0.15 moderately different, &lt; 0.4 "
                       "clearly different, else largely non-overlapping (a reading aid, not a test; for scale: a "
                       "linear ramp against a flat profile gives 0.09, two bumps of width σ = 0.15 one σ apart 0.16, "
                       "opposite ramps 0.32)."),
        ("Peak depth", "relative depth of the layer with the largest share (ties: the shallowest); centre of mass = "
                       "Σ share × relative depth."),
    ]
    if any(m.get("n_validated") is not None for m in comp.get("models") or []):
        defs.append(("Verdict", "the causal test's verdict of a tested neuron, in the words of the console and of "
                     "each model's scan report: " + "; ".join(
                         f"<i>{escape(v)}</i>: {escape(figures.STATUS_GLOSS[v])}" for v in figures.VERDICTS) + "."))
    parts = [
        "<header><div class='kicker'>NeuroLens cross-model comparison</div>"
        f"<h1>Where <span class='concept'>“{concept}”</span> lives: {title_models}</h1>"
        f"<p class='desc'>{escape((comp.get('concept_info') or {}).get('description') or '')}</p></header>",
        "<section id='summary' class='summary'>" + _cards(comp)
        + "".join(f"<p>{s}</p>" for s in summary_sentences(comp)) + "</section>",
        "<section id='sec-depth'><h2>Layer distribution by relative depth</h2>"
        + figure_html("depth", depth_figure(comp), _DEPTH_CAPTION) + "</section>",
        f"<section id='sec-div'><h2>Divergence of the depth profiles</h2>{_divergence_table(comp)}"
        "<p class='muted'>Jensen–Shannon divergence in bits between the grid distributions.</p></section>",
        f"<section id='sec-top'><h2>Top neurons of each model</h2>{_top_tables(comp)}</section>",
        "<section id='sec-defs'><h2>Definitions</h2>" + definition_list(defs)
        + kv_table("settings", dict(comp.get("settings") or {}))
        + "</section>",
        "<footer>Generated by neurolens_lightning from comparison.json (schema "
        f"{escape(comp.get('schema_version', '?'))}); every number on this page is in that file.</footer>",
    ]
    return html_document(f"NeuroLens comparison: {concept} in {title_models}", "".join(parts), plotlyjs,
                         extra_css=_CSS_EXTRA)
