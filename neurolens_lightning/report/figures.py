"""Plotly figures of a scan, one function per figure, each taking the ``results.json`` dict.

Every function reads only the results dict (so a report can be rebuilt from ``results.json``
alone) and returns a :class:`plotly.graph_objects.Figure`, or ``None`` where the section does
not apply (no ablation ran, no training history). Text that comes from the user (concept
name, model name) is HTML-escaped before it goes into a figure: plotly renders a subset of
HTML in titles and labels and turns entities back into plain characters.

Size and rendering rules (see CONVENTIONS.md):

* at most one WebGL trace per page (the selectivity/consistency scatter, and only past
  ``gl_threshold`` points); everything else is SVG;
* the heatmap never has more than ``max_per_layer`` columns: large layers are reduced to
  their highest-scoring neurons (or binned), and :func:`heatmap_reduction` says how;
* numeric arrays are numpy ``float32`` so plotly serialises them as base64, not lists.

Example:
    >>> import json
    >>> data = json.load(open("reports/minilm-royalty/results.json"))     # doctest: +SKIP
    >>> scatter_figure(data).data[0].type                                  # doctest: +SKIP
    'scattergl'
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "STATUS_COLORS",
    "STATUS_GLOSS",
    "label_offsets",
    "FIGURE_BUILDERS",
    "ablation_figure",
    "build_figures",
    "cross_concept_figure",
    "ablated_neurons",
    "candidate_status",
    "candidates",
    "holm_at_floor",
    "joint_text",
    "smallest_p",
    "status_words_html",
    "style_figure",
    "to_float",
    "verdict_of",
    "VERDICTS",
    "emergence_figure",
    "emergence_headline",
    "layer_colors",
    "NEURON_COLORS",
    "heatmap_figure",
    "heatmap_reduction",
    "layer_distribution_figure",
    "layer_profile",
    "neuron_table",
    "nice_ticks",
    "p_value_text",
    "place_labels",
    "sankey_figure",
    "scatter_figure",
    "scatter_reduction",
    "suppressors",
    "wrap",
]

#: the verdicts of a tested neuron, in the one vocabulary of the causal test
#: (:func:`neurolens_lightning.ablation.verdict_word`: results.json ``ablation.verdict``, console, page, W&B)
VERDICTS = ("validated", "validated suppressor", "causal, not a candidate", "not causal")

#: colours of the neuron statuses (Sankey, scatter rings, ablation chart, table badges): the verdicts, then
#: ``not ablated`` (ablation ran, the neuron was not tested), then the statuses of a scan without ablation
STATUS_COLORS: dict[str, str] = {
    "validated": "#1a9850",
    "validated suppressor": "#5e3c99",
    "causal, not a candidate": "#e08214",
    "not causal": "#b2182b",
    "not ablated": "#7f8c8d",
    "significant": "#2c7fb8",
    "suppressor": "#8c6bb1",
    "not significant": "#b8860b",
}

#: each status in words (one line; the page's tiles, Sankey caption and scatter key, the console's meaning of the
#: same upper-case words)
STATUS_GLOSS: dict[str, str] = {
    "validated": "selective and causal: a candidate whose intervention moved y beyond random neurons",
    "validated suppressor": "selective and causal: a suppressor whose intervention raised y beyond random neurons",
    "causal, not a candidate": "every causal criterion met, but the ranking did not select it",
    "not causal": "some causal criterion failed (the candidate table lists which)",
    "not ablated": "ranked, but beyond the neurons tested",
    "significant": "positively selective at the FDR level (no ablation ran)",
    "suppressor": "selective, but removing it is predicted to raise y (no ablation ran)",
    "not significant": "not selective at the FDR level",
}

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


# ---------------------------------------------------------------------------- helpers
def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def to_float(x: Any) -> float:
    """A float, NaN for None / non-numbers."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _arr(values: Iterable[Any] | None, n: int | None = None) -> np.ndarray:
    if values is None:
        return np.full(n or 0, np.nan, dtype=np.float64)
    return np.array([to_float(v) for v in values], dtype=np.float64)


def wrap(text: str, width: int = 100, sep: str = "<br>") -> str:
    """``text`` broken at spaces into lines of at most ``width`` characters joined by ``sep`` (plotly
    titles and axis labels do not wrap by themselves)."""
    lines: list[str] = []
    for word in str(text).split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return sep.join(lines)


def style_figure(fig: go.Figure, title: str, height: int, subtitle: str | None = None,
                 legend_rows: int = 0) -> go.Figure:
    """The house style of every chart: bold left title (and subtitle), white template, margins, legend below."""
    t: dict[str, Any] = {"text": f"<b>{title}</b>", "x": 0.0, "xanchor": "left", "font": {"size": 17}}
    extra = 0
    if subtitle:
        t["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555"}}
        extra = 19 * subtitle.count("<br>")
    fig.update_layout(
        template="plotly_white", title=t, height=height + extra,
        font={"family": FONT, "size": 13, "color": "#222"},
        margin={"l": 70, "r": 30, "t": (90 if subtitle else 60) + extra, "b": 64 + 24 * legend_rows},
        showlegend=legend_rows > 0,
        hoverlabel={"font": {"family": FONT, "size": 12}},
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0, "xanchor": "left",
                "x": 0.0, "font": {"size": 12}},
    )
    # axis titles and tick labels push the margins out instead of being clipped on a narrow page
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def nice_ticks(hi: float, lo: float = 0.0, n: int = 5) -> list[float]:
    """Round tick values from ``lo`` (rounded down) to ``hi`` (rounded up): at most ``n`` steps of 1, 2 or 5
    × a power of ten, so that an axis reads 0, 0.2, 0.4 … rather than 0.087, 0.173 ….

    >>> nice_ticks(0.553), nice_ticks(150)
    ([0.0, 0.2, 0.4, 0.6], [0.0, 50.0, 100.0, 150.0])
    """
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo] if math.isfinite(lo) else [0.0]
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [float(round(k * step, digits)) for k in range(first, last + 1)]


def neuron_label(n: dict[str, Any]) -> str:
    """Short label of a neuron record, e.g. ``L3:1035``."""
    return f"L{n.get('layer')}:{n.get('index')}"


def _by_rank(neurons: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(neurons, key=lambda n: (n.get("rank") is None, n.get("rank") or 0))


def _has_roles(data: dict[str, Any]) -> bool:
    """Whether the neurons carry a ``role`` (schema 2); older results rank every neuron as a candidate."""
    return any("role" in n for n in data.get("neurons") or [])


def candidates(data: dict[str, Any], k: int | None = None) -> list[dict[str, Any]]:
    """Up to ``k`` (``data['top_k']`` by default) neurons with the ``candidate`` role, best first.

    A weak probe can have fewer than ``k`` candidates, or none. (Results without roles, schema 1:
    the first ``k`` ranked neurons.)
    """
    k = int(data.get("top_k") or 10) if k is None else k
    neurons = _by_rank(data.get("neurons") or [])
    if _has_roles(data):
        neurons = [n for n in neurons if n.get("role") == "candidate"]
    return neurons[:k]


def suppressors(data: dict[str, Any], k: int | None = None) -> list[dict[str, Any]]:
    """Up to ``k`` (``data['top_k']`` by default) neurons with the ``suppressor`` role, best first."""
    k = int(data.get("top_k") or 10) if k is None else k
    return [n for n in _by_rank(data.get("neurons") or []) if n.get("role") == "suppressor"][:k]


def ablated_neurons(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every neuron with an ablation record (candidates, suppressors, named neurons), by rank."""
    return [n for n in _by_rank(data.get("neurons") or []) if isinstance(n.get("ablation"), dict)]


def _ablation_ran(data: dict[str, Any]) -> bool:
    return data.get("ablation_summary") is not None or any(
        isinstance(n.get("ablation"), dict) for n in data.get("neurons") or [])


def verdict_of(ab: dict[str, Any]) -> str:
    """The verdict of one ablation record, in the words of :data:`VERDICTS`.

    The record's own ``verdict`` when it is one of them; else (results written before the three outcomes)
    derived from ``validated``, ``causal`` and, where ``causal`` is missing, the reasons: a neuron whose only
    failed criterion is the candidate gate was causal.
    """
    v = ab.get("verdict")
    if v in VERDICTS:
        return str(v)
    rise = ab.get("direction") == "rise"
    if ab.get("validated"):
        return "validated suppressor" if rise else "validated"
    causal = ab.get("causal")
    if causal is None:
        reasons = [str(r) for r in ab.get("reasons") or []]
        causal = bool(reasons) and all(r.startswith("not a candidate") for r in reasons)
    return "causal, not a candidate" if causal else "not causal"


def candidate_status(neuron: dict[str, Any], data: dict[str, Any]) -> str:
    """Status of a neuron for the Sankey, the scatter, the ablation chart and the tables.

    With an ablation record: its verdict (:func:`verdict_of`: ``validated``, ``validated suppressor``,
    ``causal, not a candidate``, ``not causal``). A neuron without an ablation record in a scan where
    ablation ran is ``not ablated``. Without ablation: ``suppressor`` (the suppressor role), ``significant``
    (positively selective at FDR q) or ``not significant``.
    """
    ab = neuron.get("ablation")
    if isinstance(ab, dict):
        return verdict_of(ab)
    if _ablation_ran(data):
        return "not ablated"
    if neuron.get("role") == "suppressor":
        return "suppressor"
    q = to_float(neuron.get("selectivity_q"))
    d = to_float(neuron.get("selectivity"))
    fdr_q = to_float(data.get("fdr_q", 0.05))
    return "significant" if (q <= fdr_q and d > 0) else "not significant"


def holm_at_floor(ab: dict[str, Any], n_tested: Any) -> bool:
    """Whether a record's Holm p is the smallest its null allows: ``p_floor`` × the number of tested neurons
    (every random neuron of the layer less extreme than it; a larger null could only lower it)."""
    ph, floor = to_float(ab.get("p_holm")), to_float(ab.get("p_floor"))
    m = to_float(n_tested)
    if math.isnan(ph) or math.isnan(floor) or math.isnan(m) or m < 1:
        return False
    # relative 1e-4: results.json may round to 6 digits, and neighbouring p-values of a null differ far more
    return abs(ph - min(1.0, floor * m)) <= 1e-4 * max(ph, 1e-12)


def status_words_html(statuses: Sequence[str]) -> str:
    """The given statuses as coloured words (plotly titles render ``<span style>``), joined by `` · ``."""
    return " · ".join(f"<span style='color:{STATUS_COLORS.get(s, '#777')}'>{_esc(s)}</span>" for s in statuses)


def neuron_table(data: dict[str, Any]) -> dict[str, Any]:
    """Every scanned neuron as flat arrays (from ``all_neurons``; falls back to ``neurons``).

    Returns a dict with ``layer``, ``index``, ``selectivity``, ``consistency``, ``importance``
    (NaN where absent), ``score`` arrays, ``layers`` (the scanned layers in order),
    ``units`` (per layer) and ``source`` (``"all"`` or ``"listed"``).
    """
    alln = data.get("all_neurons")
    layers = [int(x) for x in (data.get("layers") or [])]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("layer", "index", "selectivity", "consistency",
                                                          "importance", "score")}
    if isinstance(alln, dict) and alln.get("score") is not None:
        layers = [int(x) for x in (alln.get("layers") or layers)]
        units = []
        for li, layer in enumerate(layers):
            sc = _arr(alln["score"][li])
            n = len(sc)
            units.append(n)
            cols["layer"].append(np.full(n, layer, dtype=np.float64))
            cols["index"].append(np.arange(n, dtype=np.float64))
            cols["score"].append(sc)
            for key in ("selectivity", "consistency", "importance"):
                per = alln.get(key)
                cols[key].append(_arr(per[li], n) if per is not None else np.full(n, np.nan))
        source = "all"
    else:
        neurons = data.get("neurons") or []
        if not layers:
            layers = sorted({int(n["layer"]) for n in neurons})
        summ = {int(s["layer"]): s.get("n_units") for s in data.get("layer_summary") or []}
        units = [int(summ.get(l) or 0) for l in layers]
        for key in cols:
            cols[key].append(_arr([n.get(key) for n in neurons]))
        source = "listed"
    out: dict[str, Any] = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    out.update(layers=layers, units=units, source=source)
    return out


def layer_profile(data: dict[str, Any], relative: bool = False) -> dict[str, Any]:
    """Per-layer counts from ``layer_summary`` (reusable by a cross-model comparison).

    ``x`` is the layer index, or the relative depth ℓ/(L−1) with ``relative=True`` (L from
    ``model_info.n_layers`` when known, else the largest scanned layer + 1).
    """
    summ = sorted(data.get("layer_summary") or [], key=lambda s: s.get("layer", 0))
    layers = [int(s.get("layer", 0)) for s in summ]
    n_layers = (data.get("model_info") or {}).get("n_layers") or ((max(layers) + 1) if layers else 1)
    depth = [l / (n_layers - 1) if n_layers > 1 else 0.0 for l in layers]
    units = np.array([to_float(s.get("n_units")) for s in summ])
    pos = np.array([to_float(s.get("n_significant_positive")) for s in summ])
    sig = np.array([to_float(s.get("n_significant")) for s in summ])
    return {
        "layer": layers, "depth": depth, "x": depth if relative else layers,
        "n_units": units, "n_significant": sig, "n_significant_positive": pos,
        "n_significant_negative": sig - pos,
        "frac_positive": np.where(units > 0, pos / np.where(units > 0, units, 1), np.nan),
        "top_score": np.array([to_float(s.get("top_score")) for s in summ]),
        "max_selectivity": np.array([to_float(s.get("max_selectivity")) for s in summ]),
        "mean_abs_selectivity": np.array([to_float(s.get("mean_abs_selectivity")) for s in summ]),
        "sum_score": np.array([to_float(s.get("sum_score")) for s in summ]),
    }


# ---------------------------------------------------------------------------- heatmap
def _heatmap_plan(table: dict[str, Any], max_per_layer: int, reduction: str, n_bins: int) -> dict[str, Any]:
    """Which ranks are drawn one by one (``exact``) and which rank ranges are averaged (``bins``)."""
    counts = [int(np.sum(table["layer"] == l)) for l in table["layers"]]
    widest = max(counts, default=0)
    if reduction not in ("auto", "all", "top", "top+bins"):
        raise ValueError(f"reduction must be auto, all, top or top+bins, got {reduction!r}")
    if reduction == "auto":
        reduction = "all" if widest <= max_per_layer else "top+bins"
    if reduction == "all" or widest <= max_per_layer:
        return {"how": "all", "exact": widest, "bins": [], "widest": widest, "counts": counts}
    exact = max_per_layer if reduction == "top" else max(1, max_per_layer // 4)
    bins: list[tuple[int, int]] = []
    if reduction == "top+bins":
        edges = np.unique(np.round(np.geomspace(exact + 1, widest + 1, n_bins + 1)).astype(int))
        bins = [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return {"how": reduction, "exact": exact, "bins": bins, "widest": widest, "counts": counts}


def heatmap_reduction(data: dict[str, Any], max_per_layer: int = 2048, reduction: str = "auto",
                      n_bins: int = 48) -> str:
    """One sentence saying what the heatmap shows (which neurons, sorted how, reduced how)."""
    table = neuron_table(data)
    plan = _heatmap_plan(table, max_per_layer, reduction, n_bins)
    total = sum(plan["counts"])
    if table["source"] == "listed":
        return (f"Only the {total} neurons listed in results.json are shown (the per-neuron arrays were not "
                "saved), sorted by composite score within each layer.")
    if plan["how"] == "all":
        return (f"All {total:,} scanned neurons are shown: each row is a layer, its neurons sorted by composite "
                "score, best on the left (rank axis is logarithmic); hover a cell for the neuron index and its "
                "three scores.")
    if plan["how"] == "top":
        return (f"Reduced for size: each layer shows only its {plan['exact']:,} highest-scoring neurons (of up to "
                f"{plan['widest']:,}), sorted by composite score (rank axis is logarithmic); the rest of each layer "
                "is summarised in the layer chart.")
    lo, hi = plan["bins"][0][0], plan["bins"][-1][1]
    return (f"Reduced for size: each layer's neurons are sorted by composite score; ranks 1–{plan['exact']:,} are "
            f"drawn one neuron per column and ranks {lo:,}–{hi:,} are averaged in {len(plan['bins'])} bins of "
            f"growing width (mean score per bin; logarithmic rank axis). All {total:,} scanned neurons are covered.")


def heatmap_figure(data: dict[str, Any], max_per_layer: int = 2048, reduction: str = "auto",
                   n_bins: int = 48) -> go.Figure | None:
    """Layers × neurons heatmap of the composite score, neurons sorted by score within each layer.

    The x axis is the rank within the layer (logarithmic), so the few strong neurons of each
    layer are wide and the long tail is compressed.

    Args:
        data: the results dict.
        max_per_layer: layers up to this many neurons are drawn in full.
        reduction: ``auto`` (``all`` if every layer fits, else ``top+bins``), ``all``, ``top``
            (only the ``max_per_layer`` best neurons of each layer) or ``top+bins`` (the best
            ``max_per_layer // 4`` one by one, the remaining ranks averaged in ``n_bins``
            log-spaced bins).
    """
    table = neuron_table(data)
    if not table["layers"] or table["score"].size == 0:
        return None
    plan = _heatmap_plan(table, max_per_layer, reduction, n_bins)
    layers = table["layers"]
    exact, bins = plan["exact"], plan["bins"]
    z = np.full((len(layers), max(exact, 1)), np.nan, dtype=np.float32)
    custom = np.full((len(layers), max(exact, 1), 5), np.nan, dtype=np.float32)
    zb = np.full((len(layers), max(len(bins), 1)), np.nan, dtype=np.float32)
    cb = np.full((len(layers), max(len(bins), 1), 3), np.nan, dtype=np.float32)
    for r, layer in enumerate(layers):
        m = table["layer"] == layer
        sc, sel = table["score"][m], table["selectivity"][m]
        order = np.lexsort((-np.nan_to_num(sel, nan=-np.inf), -np.where(np.isnan(sc), -np.inf, sc)))
        top = order[:exact]
        n = len(top)
        z[r, :n] = sc[top]
        custom[r, :n, 0] = table["index"][m][top]
        custom[r, :n, 1] = sel[top]
        custom[r, :n, 2] = table["consistency"][m][top]
        custom[r, :n, 3] = table["importance"][m][top]
        custom[r, :n, 4] = np.arange(1, n + 1)
        for c, (lo, hi) in enumerate(bins):
            part = order[lo - 1:hi]
            if part.size and np.any(~np.isnan(sc[part])):
                zb[r, c] = np.nanmean(sc[part])
                cb[r, c] = [np.nanmax(sc[part]), np.nanmean(sel[part]), part.size]
    y = np.array(layers, dtype=np.int32)
    colour = {"colorscale": "Viridis", "zmin": 0.0,
              "zmax": float(np.nanmax([np.nanmax(z) if np.any(~np.isnan(z)) else 0.0,
                                       np.nanmax(zb) if np.any(~np.isnan(zb)) else 0.0, 1e-6]))}
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(0.5, exact + 1, dtype=np.float32), y=y, customdata=custom, hoverongaps=False,
        hovertemplate=("layer %{y}, rank %{customdata[4]} → neuron %{customdata[0]}<br>score = %{z:.3f}"
                       "<br>selectivity d = %{customdata[1]:.3f}<br>consistency = %{customdata[2]:.3f}"
                       "<br>importance = %{customdata[3]:.3g}<extra></extra>"),
        colorbar={"title": {"text": "score"}, "thickness": 14}, name="neurons", **colour))
    if bins:
        xb = np.array([bins[0][0] - 0.5] + [b[1] + 0.5 for b in bins], dtype=np.float32)
        rng = np.array([[f"ranks {a:,}–{b:,}" for a, b in bins]] * len(layers))
        fig.add_trace(go.Heatmap(
            z=zb, x=xb, y=y, customdata=cb, text=rng, hoverongaps=False, showscale=False, name="binned",
            hovertemplate=("layer %{y}, %{text}<br>mean score = %{z:.3f}<br>max score = %{customdata[0]:.3f}"
                           "<br>mean selectivity d = %{customdata[1]:.3f}<br>%{customdata[2]} neurons"
                           "<extra></extra>"), **colour))
        fig.add_vline(x=exact + 0.5, line={"color": "#fff", "width": 1.5, "dash": "dot"})
    fig.update_yaxes(title_text="layer", tickmode="array", tickvals=layers, ticktext=[str(l) for l in layers])
    fig.update_xaxes(title_text="rank of the neuron within its layer, by composite score (log scale)",
                     type="log", range=[math.log10(0.5), math.log10(plan["widest"] + 0.5)],
                     tickvals=[v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
                               if v <= plan["widest"]])
    if table["source"] == "listed":
        note = "listed neurons only"
    elif plan["how"] == "all":
        note = "all neurons"
    elif plan["how"] == "top":
        note = f"top {exact:,} per layer"
    else:
        note = f"top {exact:,} per layer one by one, the rest in {len(bins)} bins"
    height = int(min(760, max(320, 130 + 28 * len(layers))))
    return style_figure(fig, "Composite score of every neuron, layer by layer", height,
                  subtitle=f"rows = layers; columns = neurons sorted by score within the layer ({note})")


# ---------------------------------------------------------------------------- scatter
def scatter_reduction(data: dict[str, Any], gl_threshold: int = 5000, density_threshold: int = 20000,
                      max_points: int = 5000) -> str:
    """One sentence saying how the scatter draws the neurons (SVG, WebGL, or density + dots)."""
    t = neuron_table(data)
    n = int(np.sum(~(np.isnan(t["selectivity"]) | np.isnan(t["consistency"]))))
    if n > density_threshold:
        return (f"All {n:,} neurons are drawn as a grey density (darker = more neurons); the {min(n, max_points):,} "
                f"highest-scoring ones are also drawn as dots{' (WebGL)' if max_points > gl_threshold else ''} "
                "that show their scores on hover.")
    return f"All {n:,} neurons are drawn as dots{' (WebGL)' if n > gl_threshold else ''}; hover a dot for its scores."


#: candidate label positions around a ring, in order of preference: plotly ``textposition`` and the label
#: box's offset from the marker in pixels (left, bottom) as a function of the label's width and height
_LABEL_SLOTS = [
    ("top center", lambda w, h: (-w / 2, 9)), ("bottom center", lambda w, h: (-w / 2, -9 - h)),
    ("middle right", lambda w, h: (10, -h / 2)), ("middle left", lambda w, h: (-10 - w, -h / 2)),
    ("top right", lambda w, h: (6, 6)), ("top left", lambda w, h: (-6 - w, 6)),
    ("bottom right", lambda w, h: (6, -6 - h)), ("bottom left", lambda w, h: (-6 - w, -6 - h)),
]


def place_labels(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], x_range: tuple[float, float],
                 y_range: tuple[float, float], obstacles: Sequence[tuple[float, float]] = (), max_labels: int = 6,
                 width_px: float = 640.0, height_px: float = 400.0, font_px: float = 11.0
                 ) -> tuple[list[str], list[str]]:
    """Labels that do not overlap: (text per point, ``""`` for an unlabelled one; plotly ``textposition`` each).

    Points are labelled in the given order (best first), at most ``max_labels``: each label goes to the first
    slot around its marker (above, below, right, left, then the diagonals) whose box overlaps no label placed
    so far, no other marker (the points and ``obstacles``) and stays inside the plot; a point without such a
    slot gets no label (its hover still names it). Pixel sizes are estimated for a ``width_px`` ×
    ``height_px`` plot area - the narrowest the report's scatter gets (a 1000 px window) - so that labels
    that do not collide there do not collide on wider screens either.
    """
    x0, x1 = x_range
    pad = 0.05 * ((x1 - x0) or 1.0)  # plotly's autorange margin
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = y_range

    def px(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) / ((x1 - x0) or 1.0) * width_px, (y - y0) / ((y1 - y0) or 1.0) * height_px)

    def hit(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    pts = [px(x, y) for x, y in zip(xs, ys)]
    r = 7.0  # marker radius (size 14)
    blocked = [(u - r, v - r, u + r, v + r) for u, v in pts + [px(x, y) for x, y in obstacles]
               if not (math.isnan(u) or math.isnan(v))]
    texts, positions = [""] * len(pts), ["top center"] * len(pts)
    placed = 0
    for i, ((u, v), label) in enumerate(zip(pts, labels)):
        if placed >= max_labels or math.isnan(u) or math.isnan(v):
            continue
        w, h = 0.62 * font_px * len(label) + 4, font_px + 3
        for name, off in _LABEL_SLOTS:
            dx, dy = off(w, h)
            box = (u + dx, v + dy, u + dx + w, v + dy + h)
            if box[0] < 0 or box[2] > width_px or box[1] < 0 or box[3] > height_px:
                continue
            own = (u - r, v - r, u + r, v + r)
            if any(hit(box, b) for b in blocked if b != own):
                continue
            texts[i], positions[i] = label, name
            blocked.append(box)
            placed += 1
            break
    return texts, positions


def label_offsets(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], x_range: tuple[float, float],
                  y_range: tuple[float, float], obstacles: Sequence[tuple[float, float]] = (),
                  width_px: float = 640.0, height_px: float = 400.0, font_px: float = 12.0
                  ) -> list[tuple[float, float]]:
    """A pixel offset (ax, ay; y down, as plotly annotations take them) for the label of EVERY point.

    Each label, in the given order, goes to the nearest free spot on rings of growing radius around its marker
    (16 directions): a spot whose box overlaps no label placed so far, no marker (the points and ``obstacles``)
    and stays inside the plot; where no ring has one, the spot of the outermost ring with the fewest overlaps
    (so no point is ever left without a label; far labels get a leader line). Pixel sizes are estimated for a
    ``width_px`` × ``height_px`` plot area, the narrowest the report's scatter gets (a 1000 px window).
    """
    x0, x1 = x_range
    pad = 0.05 * ((x1 - x0) or 1.0)  # plotly's autorange margin
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = y_range

    def px(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) / ((x1 - x0) or 1.0) * width_px, (1 - (y - y0) / ((y1 - y0) or 1.0)) * height_px)

    def hit(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    pts = [px(x, y) for x, y in zip(xs, ys)]
    r = 8.0  # marker radius (size 14-18) and a little air
    markers = [(u - r, v - r, u + r, v + r) for u, v in pts + [px(x, y) for x, y in obstacles]
               if not (math.isnan(u) or math.isnan(v))]
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float]] = []
    angles = [math.radians(a) for a in (90, 270, 0, 180, 45, 135, 315, 225, 22.5, 157.5, 337.5, 202.5, 67.5, 112.5,
                                        292.5, 247.5)]
    for (u, v), label in zip(pts, labels):
        w, h = 0.62 * font_px * len(label) + 6, font_px + 4
        if math.isnan(u) or math.isnan(v):
            out.append((0.0, -(r + h / 2)))
            continue
        best, best_cost = None, None
        for radius in (r + h / 2 + 1, 26.0, 38.0, 52.0, 68.0):
            for a in angles:
                dx, dy = radius * math.cos(a) * max(1.0, w / h / 1.6), -radius * math.sin(a)
                box = (u + dx - w / 2, v + dy - h / 2, u + dx + w / 2, v + dy + h / 2)
                if box[0] < 0 or box[2] > width_px or box[1] < 0 or box[3] > height_px:
                    continue
                cost = sum(hit(box, b) for b in placed + markers)
                if best_cost is None or cost < best_cost:
                    best, best_cost = (dx, dy, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        if best is None:  # the plot is smaller than the label: above the marker
            best = (0.0, -(r + h / 2), (u - w / 2, v - r - h, u + w / 2, v - r))
        out.append((best[0], best[1]))
        placed.append(best[2])
    return out


def scatter_figure(data: dict[str, Any], gl_threshold: int = 5000, density_threshold: int = 20000,
                   max_points: int = 5000, label_top: int | None = None, max_labels: int = 6) -> go.Figure | None:
    """Selectivity (Cohen's d) vs consistency for every scanned neuron, colour = importance.

    Up to ``gl_threshold`` neurons: one SVG scatter; up to ``density_threshold``: one
    ``Scattergl`` trace with every neuron. Beyond: a density of all neurons (an SVG heatmap of
    counts) under dots for the ``max_points`` highest-scoring neurons (SVG when that is at most
    ``gl_threshold``). WebGL start-up dominates the render time of a page in software GL, so a
    100k-neuron model renders faster this way, and the bulk near d = 0 is noise anyway. The
    top-k candidates are overlaid as SVG rings, the best-ranked ``max_labels`` of them labelled where a label
    fits without overlapping (:func:`place_labels`; every ring names its neuron on hover), the top-k
    suppressors as purple diamonds. The importance colour scale is symmetric and covers every ringed neuron.
    """
    t = neuron_table(data)
    ok = ~(np.isnan(t["selectivity"]) | np.isnan(t["consistency"]))
    n_all = int(ok.sum())
    if n_all == 0:
        return None
    has_imp = bool(np.any(~np.isnan(t["importance"][ok])))
    colour = t["importance"] if has_imp else t["score"]
    key = np.nan_to_num(t["score"][ok], nan=-1.0) + 1e-9 * np.tanh(np.nan_to_num(t["selectivity"][ok]))
    order = np.argsort(key, kind="stable")  # best drawn last (on top)
    idx = np.flatnonzero(ok)[order]
    fig = go.Figure()
    if n_all > density_threshold:
        sel_all, con_all = t["selectivity"][ok], t["consistency"][ok]
        lo, hi = float(np.nanmin(sel_all)), float(np.nanmax(sel_all))
        xe = np.linspace(lo, hi if hi > lo else lo + 1, 121)
        ye = np.linspace(-0.02, 1.02, 53)
        counts, _, _ = np.histogram2d(sel_all, con_all, bins=[xe, ye])
        dens = np.where(counts.T > 0, np.log10(np.maximum(counts.T, 1)) + 0.3, np.nan).astype(np.float32)
        fig.add_trace(go.Heatmap(
            z=dens, x=xe.astype(np.float32), y=ye.astype(np.float32), customdata=counts.T.astype(np.int32),
            colorscale=[[0, "#e9ecef"], [1, "#495057"]], showscale=False, hoverongaps=False,
            name=f"density of all {n_all:,} neurons", showlegend=True,
            hovertemplate="%{customdata} neurons here<extra></extra>"))
        idx = idx[-max_points:]
    n = len(idx)
    c = colour[idx]
    cands = candidates(data, label_top)
    supps = suppressors(data, label_top)
    if has_imp:
        # symmetric around 0 and wide enough for every listed candidate and suppressor (the strongest neurons
        # are the ones the reader looks up; a 99th-percentile range alone saturates them)
        lim = float(np.nanpercentile(np.abs(c), 99)) if np.any(~np.isnan(c)) else 0.0
        listed = [abs(to_float(n_.get("importance"))) for n_ in cands + supps]
        lim = max([lim] + [v for v in listed if not math.isnan(v)])
        # 5% headroom: no tick label sits at the very top of the colour bar, against its title
        lim = 1.05 * lim if lim > 0 else 1.0
        marker = {"color": c.astype(np.float32), "cmin": -lim, "cmax": lim,
                  "colorscale": [[0.0, "#053061"], [0.25, "#4393c3"], [0.5, "#b8b8b8"], [0.75, "#d6604d"],
                                 [1.0, "#67001f"]],
                  "colorbar": {"title": {"text": "importance<br>(grad×act)"}, "thickness": 14}}
    else:
        marker = {"color": c.astype(np.float32), "colorscale": "Viridis", "cmin": 0,
                  "colorbar": {"title": {"text": "score"}, "thickness": 14}}
    use_gl = n > gl_threshold
    marker.update(size=4 if use_gl else 6, opacity=0.75 if use_gl else 0.8)
    custom = np.stack([t["layer"][idx], t["index"][idx], t["importance"][idx], t["score"][idx]], axis=1)
    hover = ("layer %{customdata[0]}, neuron %{customdata[1]}<br>selectivity d = %{x:.3f}"
             "<br>consistency = %{y:.3f}<br>importance = %{customdata[2]:.3g}"
             "<br>score = %{customdata[3]:.3f}<extra></extra>")
    cls = go.Scattergl if use_gl else go.Scatter
    name = f"top {n:,} neurons by score" if n < n_all else f"all {n:,} neurons"
    fig.add_trace(cls(x=t["selectivity"][idx].astype(np.float32), y=t["consistency"][idx].astype(np.float32),
                      mode="markers", marker=marker, customdata=custom.astype(np.float32),
                      hovertemplate=hover, name=name, showlegend=True))
    ablated = _ablation_ran(data)
    sx = [to_float(n_.get("selectivity")) for n_ in supps]
    sy = [to_float(n_.get("consistency")) for n_ in supps]
    st_c = [candidate_status(n_, data) for n_ in cands]
    st_s = [candidate_status(n_, data) for n_ in supps]
    if cands:
        cx, cy = [to_float(n_.get("selectivity")) for n_ in cands], [to_float(n_.get("consistency")) for n_ in cands]
        names = [neuron_label(n_) for n_ in cands]
        # one trace per status, so that the legend names the verdicts; validated rings are stars
        for st in (_STATUS_ORDER if ablated else [None]):
            sel = [i for i, s_ in enumerate(st_c) if st is None or s_ == st]
            if not sel:
                continue
            valid = st == "validated"
            colour = STATUS_COLORS.get(st, "#111") if ablated else "#111"
            fig.add_trace(go.Scatter(
                x=[cx[i] for i in sel], y=[cy[i] for i in sel], mode="markers",
                marker={"symbol": "star-open" if valid else "circle-open", "size": 20 if valid else 14,
                        "line": {"width": 2.5 if valid else 2}, "color": colour},
                customdata=[[cands[i].get("rank"), to_float(cands[i].get("importance")),
                             to_float(cands[i].get("score")), names[i], st_c[i]] for i in sel],
                hovertemplate=("candidate #%{customdata[0]}: %{customdata[3]}<br>selectivity d = %{x:.3f}<br>"
                               "consistency = %{y:.3f}<br>importance = %{customdata[1]:.3g}<br>score = "
                               "%{customdata[2]:.3f}<br>status: %{customdata[4]}<extra></extra>"),
                name=(f"candidate: {st} ({len(sel)})" if ablated else f"top {len(cands)} candidates"),
                meta={"role": "candidate", "status": st}))
        # every candidate is labelled with its rank (the number of the candidate table), placed without overlap
        x_all = t["selectivity"][ok]
        x_range = (float(np.nanmin(x_all)), float(np.nanmax(x_all)))
        nums = [str(n_.get("rank")) for n_ in cands]
        offs = label_offsets(cx, cy, nums, x_range, (-0.04, 1.08), obstacles=list(zip(sx, sy)))
        for n_, x_, y_, num, (ax, ay), st in zip(cands, cx, cy, nums, offs, st_c):
            if math.isnan(x_) or math.isnan(y_):
                continue
            colour = STATUS_COLORS.get(st, "#111") if ablated and st != "not ablated" else "#111"
            fig.add_annotation(x=x_, y=y_, ax=ax, ay=ay, text=f"<b>{_esc(num)}</b>", showarrow=True, arrowhead=0,
                               arrowwidth=1, arrowcolor="#777", standoff=8 if st != "validated" else 10,
                               font={"size": 12, "color": colour}, bgcolor="rgba(255,255,255,0.8)", borderpad=0,
                               hovertext=f"candidate #{_esc(num)}: {neuron_label(n_)} ({_esc(st)})",
                               name=f"candidate-label {n_.get('layer')}:{n_.get('index')}")
    if supps:
        for st in (_STATUS_ORDER if ablated else [None]):
            sel = [i for i, s_ in enumerate(st_s) if st is None or s_ == st]
            if not sel:
                continue
            valid = st == "validated suppressor"
            fig.add_trace(go.Scatter(
                x=[sx[i] for i in sel], y=[sy[i] for i in sel], mode="markers",
                text=[neuron_label(supps[i]) for i in sel],
                marker={"symbol": "star-diamond-open" if valid else "diamond-open", "size": 18 if valid else 13,
                        "line": {"width": 2.5 if valid else 2},
                        "color": STATUS_COLORS.get(st, "#777") if ablated else STATUS_COLORS["validated suppressor"]},
                customdata=[[supps[i].get("rank"), to_float(supps[i].get("importance")),
                             to_float(supps[i].get("score")), st_s[i]] for i in sel],
                hovertemplate=("suppressor #%{customdata[0]}: %{text}<br>selectivity d = %{x:.3f}<br>consistency = "
                               "%{y:.3f}<br>importance = %{customdata[1]:.3g}<br>score = %{customdata[2]:.3f}"
                               "<br>status: %{customdata[3]}<extra></extra>"),
                name=(f"suppressor: {st} ({len(sel)})" if ablated else f"top {len(supps)} suppressors"),
                meta={"role": "suppressor", "status": st}))
    fig.update_xaxes(title_text="selectivity (Cohen's d, concept vs control)", zeroline=True,
                     zerolinecolor="#999")
    fig.update_yaxes(title_text="consistency across phrasing groups", range=[-0.04, 1.08])
    how = (f"{n:,} highest-scoring of {n_all:,} neurons as dots{' (WebGL)' if use_gl else ''}, all as grey density"
           if n < n_all else
           f"{n:,} neurons{' (WebGL)' if use_gl else ''}")
    colour_txt = ("importance (red: removing it is predicted to lower the concept confidence)" if has_imp
                  else "composite score")
    sub = f"{how}; colour = {colour_txt}"
    if ablated and (cands or supps):
        shown = set(st_c + st_s)
        sub += ("<br>rings (candidates) and diamonds (suppressors) coloured by their ablation status, validated ones "
                "as stars;<br>each candidate numbered by its rank in the candidate table. Status: "
                + status_words_html([st for st in _STATUS_ORDER if st in shown]))
    elif cands:
        sub += "<br>each candidate numbered by its rank in the candidate table"
    n_traces = sum(1 for tr in fig.data if tr.showlegend is not False)
    return style_figure(fig, "Selectivity vs consistency", 600, subtitle=sub, legend_rows=1 + (n_traces > 4))


# ---------------------------------------------------------------------------- sankey
_STATUS_ORDER = list(STATUS_COLORS)


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return "rgba({},{},{},{})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)), alpha)


def sankey_figure(data: dict[str, Any]) -> go.Figure | None:
    """Sankey: concept → layer → status of each top-k candidate and suppressor (see :func:`candidate_status`)."""
    cands = candidates(data)
    supps = suppressors(data)
    shown = cands + supps
    if not shown:
        return None
    concept = _esc(data.get("concept") or "concept")
    layers = sorted({int(c.get("layer", 0)) for c in shown})
    status = [candidate_status(c, data) for c in shown]
    statuses = [s for s in _STATUS_ORDER if s in status]
    per_layer = {l: sum(1 for c in shown if int(c.get("layer", 0)) == l) for l in layers}
    per_status = {st: status.count(st) for st in statuses}
    labels = ([f"{concept} ({len(shown)})"] + [f"layer {l} ({per_layer[l]})" for l in layers]
              + [f"{st} ({per_status[st]})" for st in statuses])
    colors = ["#34495e"] + ["#95a5a6"] * len(layers) + [STATUS_COLORS[s] for s in statuses]
    li = {l: 1 + i for i, l in enumerate(layers)}
    si = {s: 1 + len(layers) + i for i, s in enumerate(statuses)}
    src, dst, val, lcol = [], [], [], []
    for l in layers:
        src.append(0), dst.append(li[l]), val.append(per_layer[l]), lcol.append("rgba(52,73,94,0.25)")
    for l in layers:
        for s in statuses:
            n = sum(1 for c, st in zip(shown, status) if int(c.get("layer", 0)) == l and st == s)
            if n:
                src.append(li[l]), dst.append(si[s]), val.append(n), lcol.append(_rgba(STATUS_COLORS[s], 0.35))
    # nodes at fixed places and every label beside its node, off the links: the concept's label left of its
    # node, each layer's label in the gap above its node (the gaps are wide enough for a line of text clear of the
    # links curving past), each status's label right of its node
    columns = [[(0, len(shown))], [(li[l], per_layer[l]) for l in layers], [(si[s], per_status[s]) for s in statuses]]
    top_m, bottom_m, pad = 110, 24, 40  # the subtitle is one line
    room = pad / 2 + 12  # above the Sankey: the first layer's label
    plot_h = 150 + pad * (max(len(c) for c in columns) - 1)
    height = int(plot_h + room + top_m + bottom_m)
    dom_top = plot_h / (plot_h + room)
    # one scale for all columns, as plotly computes it: the fullest column fills the height
    ky = min((plot_h - pad * (len(col) - 1)) / max(sum(v for _, v in col), 1) for col in columns)
    xs, ys, tops = [0.0] * len(labels), [0.0] * len(labels), [0.0] * len(labels)
    dom = (0.16, 0.80)
    for k, col in enumerate(columns):
        y = 0.0
        for node, v in col:
            xs[node], ys[node], tops[node] = (0.001, 0.5, 0.999)[k], (y + v * ky / 2) / plot_h, y
            y += v * ky + pad
    fig = go.Figure(go.Sankey(
        arrangement="fixed", valueformat="d", domain={"x": list(dom), "y": [0.0, dom_top]},
        # plotly draws a node's label over the links: the labels are annotations instead (below), the names kept
        # for hover in customdata
        node={"label": [""] * len(labels), "customdata": labels, "color": colors, "pad": pad, "thickness": 18,
              "line": {"width": 0}, "x": xs, "y": ys, "hovertemplate": "%{customdata}<extra></extra>"},
        link={"source": src, "target": dst, "value": val, "color": lcol, "customdata": [labels[d] for d in dst],
              "hovertemplate": "→ %{customdata}: %{value}<extra></extra>"}))
    fig.update_layout(font={"size": 13})
    for node, text in enumerate(labels):
        x = dom[0] + xs[node] * (dom[1] - dom[0])
        if node == 0:
            ann = {"x": x, "xanchor": "right", "xshift": -14, "y": dom_top * (1 - ys[node]), "yanchor": "middle",
                   "align": "right"}
        elif node in si.values():
            ann = {"x": x, "xanchor": "left", "xshift": 14, "y": dom_top * (1 - ys[node]), "yanchor": "middle",
                   "align": "left"}
        else:
            ann = {"x": x, "xanchor": "center", "y": dom_top * (1 - (tops[node] - pad / 2) / plot_h),
                   "yanchor": "middle"}
        fig.add_annotation(xref="paper", yref="paper", text=wrap(text, 16 if node == 0 else 22), showarrow=False,
                           font={"size": 13, "color": "#222"}, name=f"sankey-label {node}", **ann)
    who = f"top {len(cands)} candidates" + (f" and {len(supps)} suppressors" if supps else "")
    ablated = any(isinstance(c.get("ablation"), dict) for c in shown)
    sub = (f"{who}; status = the verdict of the causal test ({status_words_html(statuses)})" if ablated else
           f"{who}; no ablation ran: status = role and FDR significance of the selectivity")
    fig = style_figure(fig, "Where the candidates sit, and what survived", height, subtitle=sub)
    fig.update_layout(margin={"b": bottom_m, "l": 30, "r": 30, "t": top_m})
    return fig


# ---------------------------------------------------------------------------- ablation
def p_value_text(a: dict[str, Any]) -> str:
    """An ablation p-value as text, with the null it came from: ``p = 0.034 (7 of 205 random neurons as
    extreme)``; with no random neuron as extreme, ``p = 1/201 ≈ 0.005 (0 of 200 ...)``, the smallest p a
    null of that size can give. Never shows a p below ``p_floor``."""
    p, g, L = to_float(a.get("p_value")), a.get("null_exceedances"), a.get("null_n")
    floor = to_float(a.get("p_floor"))
    if not math.isnan(floor) and not math.isnan(p):
        p = max(p, floor)
    if math.isnan(p):
        return "p = —"
    if isinstance(g, int) and isinstance(L, int) and not isinstance(g, bool):
        if g == 0:
            return f"p = 1/{L + 1} ≈ {p:.2g} (0 of {L} random neurons as extreme)"
        return f"p = {p:.2g} ({g} of {L} random neurons as extreme)"
    return f"p = {p:.2g}"


def smallest_p(n: Any) -> float:
    """The smallest empirical p a null of ``n`` draws can give, 1/(n + 1)."""
    return 1.0 / (n + 1) if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else math.nan


def joint_text(summary: dict[str, Any], ab_neurons: Sequence[dict[str, Any]] = (), control: bool = False,
               short: bool = False) -> str:
    """The joint intervention in words (plain text, not escaped), from ``ablation_summary``; empty without one.

    The set is described as evidence only when ``joint_beyond_null`` is true: "beyond N random sets of the
    same size from the same layers (p = …)"; otherwise it says that the set is not beyond them. ``control``:
    also its Δ on control inputs and the specificity CI. ``short``: the chart's version (no "from the same
    layers", no note on the smallest p).
    """
    jd = to_float(summary.get("joint_delta"))
    if math.isnan(jd):
        return ""
    size = summary.get("joint_size") or len([n for n in ab_neurons if n["ablation"].get("direction") != "rise"])
    direction = summary.get("joint_direction") or "drop"
    lo, hi = to_float(summary.get("joint_ci_low")), to_float(summary.get("joint_ci_high"))
    ci = f" [{lo:.3g}, {hi:.3g}]" if not (math.isnan(lo) or math.isnan(hi)) else ""
    s = (f"the {size} neurons tested for a {direction}, together: Δ = {jd:.3g}{ci}" if short else
         f"intervening on the {size} neurons tested for a {direction} together gives Δ = {jd:.3g}{ci}")
    if control:
        jc, spec = to_float(summary.get("joint_delta_control")), summary.get("joint_specificity_ci")
        extra = [f"control inputs: Δ = {jc:.3g}"] if not math.isnan(jc) else []
        if isinstance(spec, (list, tuple)) and len(spec) >= 2 and not any(math.isnan(to_float(v)) for v in spec[:2]):
            extra.append(f"specificity CI [{to_float(spec[0]):.3g}, {to_float(spec[1]):.3g}]")
        s += f" ({'; '.join(extra)})" if extra else ""
    beyond, p, n = summary.get("joint_beyond_null"), to_float(summary.get("joint_p_null")), summary.get("joint_null_n")
    n_txt = f"{n:,} random sets" if isinstance(n, int) and not isinstance(n, bool) else "random sets"
    p_txt = ""
    if not math.isnan(p):
        at_floor = abs(p - smallest_p(n)) <= 1e-4 * p and not short
        p_txt = f" (p = {p:.2g}{', the smallest p ' + n_txt + ' can give' if at_floor else ''})"
    where = "" if short else " from the same layers"
    if beyond is True:
        return s + f", beyond {n_txt} of the same size{where}{p_txt}"
    if beyond is False:
        return (s + f", not beyond {n_txt} of the same size{where}{p_txt}"
                + ("" if short else ": the set as a whole is no evidence for the concept"))
    return s + " (not compared with random sets)"


def ablation_figure(data: dict[str, Any]) -> go.Figure | None:
    """Δ of every ablated neuron (candidates, suppressors, named) with its 95% CI, coloured by status,
    its Δ on control inputs, and the null band.

    The grey band is the null of the neuron's layer: the 5–95% quantiles of Δ over random
    neurons of that layer (``ablation_summary.null``: the nulls are heavy-tailed, so no mean ±
    k std). ``None`` when no neuron was ablated.
    """
    ab_neurons = ablated_neurons(data)
    if not ab_neurons:
        return None
    summary = data.get("ablation_summary") or {}
    null = {int(r["layer"]): r for r in summary.get("null") or [] if r.get("layer") is not None}
    x = [f"#{n.get('rank')} {neuron_label(n)}" for n in ab_neurons]
    fig = go.Figure()
    lo_b, hi_b, med_b, hov = [], [], [], []
    for n in ab_neurons:
        r = null.get(int(n.get("layer", -1))) or {}
        lo, hi, med = to_float(r.get("q05")), to_float(r.get("q95")), to_float(r.get("median"))
        lo_b.append(lo), hi_b.append(hi), med_b.append(med)
        hov.append(f"null of layer {n.get('layer')}: {r.get('n', '?')} random neurons<br>5–95%: [{lo:.3g}, "
                   f"{hi:.3g}], median {med:.3g}<br>1% of them above {to_float(r.get('q99')):.3g}")
    if any(not (math.isnan(a) or math.isnan(b)) for a, b in zip(lo_b, hi_b)):
        fig.add_trace(go.Bar(x=x, y=[h - l for h, l in zip(hi_b, lo_b)], base=lo_b, width=0.6,
                             marker={"color": "rgba(127,140,141,0.28)", "line": {"width": 0}},
                             name="null: 5–95% of random neurons of the layer",
                             hovertext=hov, hovertemplate="%{hovertext}<extra></extra>"))
        fig.add_trace(go.Scatter(x=x, y=med_b, mode="markers", name="null median",
                                 marker={"symbol": "line-ew-open", "size": 22, "color": "#7f8c8d",
                                         "line": {"width": 2, "color": "#7f8c8d"}},
                                 hoverinfo="skip", showlegend=False))
    ctrl = [to_float(n["ablation"].get("delta_control")) for n in ab_neurons]
    if any(not math.isnan(v) for v in ctrl):
        fig.add_trace(go.Scatter(x=x, y=ctrl, mode="markers", name="Δ on control inputs",
                                 marker={"symbol": "diamond-open", "size": 10, "color": "#555",
                                         "line": {"width": 1.5}},
                                 hovertemplate="%{x}<br>Δ control = %{y:.3g}<extra></extra>"))
    status = [candidate_status(n, data) for n in ab_neurons]
    for st in _STATUS_ORDER:
        sel = [i for i, s_ in enumerate(status) if s_ == st]
        if not sel:
            continue
        abs_ = [ab_neurons[i]["ablation"] for i in sel]
        d = [to_float(a.get("delta")) for a in abs_]
        plus = [max(0.0, to_float(a.get("ci_high")) - v) for a, v in zip(abs_, d)]
        minus = [max(0.0, v - to_float(a.get("ci_low"))) for a, v in zip(abs_, d)]
        text = [f"<b>{_esc(st)}</b> · tested for a {_esc(a.get('direction') or 'drop')} "
                f"({_esc(a.get('tested_as') or 'candidate')})"
                f"<br>Δ = {to_float(a.get('delta')):.3g} [{to_float(a.get('ci_low')):.3g}, "
                f"{to_float(a.get('ci_high')):.3g}]<br>specificity CI [{to_float(a.get('specificity_ci_low')):.3g}, "
                f"{to_float(a.get('specificity_ci_high')):.3g}]<br>{p_value_text(a)}<br>Holm p = "
                f"{to_float(a.get('p_holm')):.2g}"
                + "".join(f"<br>· {wrap(_esc(r), 70, '<br>  ')}" for r in (a.get("reasons") or [])
                          if not a.get("validated"))
                for a in abs_]
        fig.add_trace(go.Scatter(
            x=[x[i] for i in sel], y=d, mode="markers", name=f"Δ concept: {st}",
            marker={"size": 11, "color": STATUS_COLORS[st], "line": {"width": 1, "color": "#222"},
                    "symbol": ["triangle-down" if (a.get("direction") == "rise") else "circle" for a in abs_]},
            error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus,
                     "thickness": 1.6, "width": 5, "color": STATUS_COLORS[st]},
            hovertext=text, hovertemplate="%{x}<br>%{hovertext}<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#444", "width": 1})
    me = to_float(summary.get("min_effect"))
    dirs = {n["ablation"].get("direction") or "drop" for n in ab_neurons}
    if not math.isnan(me) and me > 0:
        unit = re.search(r"\(([^()]*)\)\s*$", str(summary.get("y") or ""))
        unit_txt = f" {_esc(unit.group(1))}" if unit else ""
        for sign, direction, colour in ((1, "drop", STATUS_COLORS["validated"]),
                                        (-1, "rise", STATUS_COLORS["validated suppressor"])):
            if direction not in dirs:
                continue
            fig.add_hline(y=sign * me, line={"color": colour, "width": 1, "dash": "dash"})
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", hoverinfo="skip",
                                     line={"color": colour, "width": 1, "dash": "dash"},
                                     name=f"minimum effect {'+' if sign > 0 else '−'}{me:g}{unit_txt} ({direction})"))
    fig.update_xaxes(title_text="tested neuron (rank, layer:index); ● tested for a drop, ▼ for a rise",
                     type="category", automargin=True)
    y_desc = summary.get("y")
    fig.update_yaxes(title_text=("Δ = y − y<sub>intervened</sub>" + (f"<br><span style='font-size:11px'>y = "
                                 f"{wrap(_esc(y_desc), 48, '<br>')}</span>" if y_desc else "")),
                     automargin=True)
    sub_parts = [f"{_esc(summary.get('method') or 'zero')} intervention"
                 + (f" on {_esc(summary['split'])}" if summary.get("split") else "")]
    joint = joint_text(summary, ab_neurons, short=True)
    if joint:
        sub_parts.append(_esc(joint))
    sub_parts.append("error bars = 95% bootstrap CI")
    fig.update_layout(barmode="overlay", bargap=0.4)
    title = "Causal test: the effect of each tested neuron on y"
    return style_figure(fig, title, 560, subtitle=wrap("; ".join(sub_parts), 120), legend_rows=2)


# ---------------------------------------------------------------------------- emergence
def _int_or_str(k: Any) -> Any:
    try:
        return int(k)
    except (TypeError, ValueError):
        return str(k)


#: colours of the tracked neurons in the emergence timeline: no blue, so they never share a colour with the layers
NEURON_COLORS = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#17becf",
                 "#a6761d"]
#: colour of the emergence headline (mean selectivity of the k most selective neurons)
HEADLINE_COLOR = "#111111"


def layer_colors(n: int) -> list[str]:
    """``n`` colours for layers, shallow to deep: a light-to-dark blue ramp (ordered, and disjoint from
    :data:`NEURON_COLORS`)."""
    from plotly.colors import sample_colorscale

    return sample_colorscale("Blues", list(np.linspace(0.45, 1.0, n)) if n > 1 else [0.8])


def emergence_headline(points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The emergence baseline and change, from the first and last points of a timeline.

    Returns ``first``/``last`` (the points), ``k`` (how many of the most selective neurons the headline
    averages), and the headline (``most_selective_mean``), ``n_significant`` and ``n_candidates`` at both
    ends (None where a point lacks one); None without points.
    """
    pts = sorted((p for p in points if isinstance(p, dict) and p.get("step") is not None),
                 key=lambda p: to_float(p.get("step")))
    if not pts:
        return None
    first, last = pts[0], pts[-1]
    k = max((len(p.get("top") or []) for p in pts), default=0) or None
    out: dict[str, Any] = {"first": first, "last": last, "k": k, "n_points": len(pts)}
    for key in ("most_selective_mean", "n_significant", "n_candidates"):
        out[key] = (first.get(key), last.get(key))
    return out


def _tracked_series(points: list[dict[str, Any]], max_tracked: int) -> list[dict[str, Any]]:
    """Per final top neuron: label and, per point, score, selectivity and role (None where unknown).

    Uses each point's ``tracked`` list (the callback fills it from its score log: no gaps) and falls back to
    looking the neuron up in each point's ``top`` (gaps where it was not in that point's top-k).
    """
    final = (points[-1].get("tracked") or points[-1].get("top") or [])[:max_tracked]
    series = []
    for n in final:
        key = (n.get("layer"), n.get("index"))
        score, sel, role = [], [], []
        for p in points:
            pool = p.get("tracked") if isinstance(p.get("tracked"), list) else p.get("top") or []
            hit = next((m for m in pool if (m.get("layer"), m.get("index")) == key), None)
            ok = hit is not None and hit.get("score") is not None
            score.append(to_float(hit.get("score")) if ok else None)
            sel.append(to_float(hit.get("selectivity")) if ok else math.nan)
            role.append((hit.get("role") or "no role") if ok else "not recorded")
        series.append({"label": neuron_label(n), "score": score, "selectivity": sel, "role": role})
    return series


def emergence_figure(data: dict[str, Any], max_tracked: int = 10, max_lines: int = 8) -> go.Figure | None:
    """The emergence timeline of a training run (``data['emergence']``), or ``None``.

    Rows: the headline (mean selectivity d of the k most selective neurons, ``most_selective_mean``) with
    its value at the first point as the baseline; FDR-significant neurons per layer (lines in a blue ramp up
    to ``max_lines`` layers, else a step × layer heatmap); the composite score of the final top neurons at
    every point (from each point's ``tracked`` list, continuous from the first point; filled markers where
    the neuron was a candidate at that point); the Jaccard overlap of the top-k with the previous point.
    Layers and neurons never share a colour (:func:`layer_colors`, :data:`NEURON_COLORS`).
    """
    points = [p for p in data.get("emergence") or [] if isinstance(p, dict) and p.get("step") is not None]
    if not points:
        return None
    points.sort(key=lambda p: to_float(p.get("step")))
    steps = [p["step"] for p in points]
    head = emergence_headline(points) or {}
    k = head.get("k") or data.get("top_k") or 10
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.065,
                        row_heights=[0.22, 0.28, 0.32, 0.18],
                        subplot_titles=(f"headline: mean selectivity d of the {k} most selective neurons",
                                        "FDR-significant neurons per layer",
                                        "composite score of the final top neurons (● candidate at that point, "
                                        "○ not)",
                                        "top-k overlap with the previous point (Jaccard)"))
    # row 1: the headline and its baseline (the first point)
    hl = [to_float(p.get("most_selective_mean")) for p in points]
    if any(not math.isnan(v) for v in hl):
        fig.add_trace(go.Scatter(x=steps, y=hl, mode="lines+markers", name=f"mean d of the {k} most selective",
                                 legendgroup="headline", legendgrouptitle={"text": "headline"},
                                 line={"color": HEADLINE_COLOR, "width": 3},
                                 marker={"size": 7, "symbol": "diamond", "color": HEADLINE_COLOR},
                                 hovertemplate=f"step %{{x}}: mean d of the {k} most selective = %{{y:.3f}}"
                                               "<extra></extra>"), row=1, col=1)
        if not math.isnan(hl[0]):
            fig.add_trace(go.Scatter(x=[steps[0], steps[-1]], y=[hl[0], hl[0]], mode="lines",
                                     name=f"baseline (step {steps[0]})", legendgroup="headline",
                                     line={"color": HEADLINE_COLOR, "width": 1, "dash": "dot"},
                                     hovertemplate=f"baseline at step {steps[0]}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
    else:
        fig.add_annotation(text="not recorded", xref="x domain", yref="y domain", x=0.5, y=0.5,
                           showarrow=False, font={"color": "#777"}, row=1, col=1)
    fig.update_yaxes(title_text="d", row=1, col=1)
    # row 2: significant neurons per layer
    layer_keys = sorted({_int_or_str(k_) for p in points for k_ in (p.get("n_significant_per_layer") or {})},
                        key=lambda k_: (isinstance(k_, str), k_))
    per_point = [p.get("n_significant_per_layer") or {} for p in points]
    counts = np.array([[to_float(d.get(str(lk), d.get(lk))) for d in per_point] for lk in layer_keys],
                      dtype=np.float64).reshape(len(layer_keys), len(points))
    heat = len(layer_keys) > max_lines
    if heat:
        fig.add_trace(go.Heatmap(
            z=counts.astype(np.float32), x=steps, y=[str(k_) for k_ in layer_keys], colorscale="Blues",
            colorbar={"title": {"text": "significant"}, "len": 0.26, "y": 0.77, "yanchor": "top", "thickness": 12,
                      "x": 1.02, "xanchor": "left"},
            hovertemplate="layer %{y}, step %{x}: %{z} significant<extra></extra>", name="significant"),
            row=2, col=1)
        fig.update_yaxes(title_text="layer", row=2, col=1)
    else:
        for lk, colour in zip(layer_keys, layer_colors(len(layer_keys))):
            r = layer_keys.index(lk)
            fig.add_trace(go.Scatter(x=steps, y=counts[r], mode="lines+markers", name=f"layer {_esc(lk)}",
                                     legendgroup="layers", legendgrouptitle={"text": "significant, per layer"},
                                     line={"color": colour}, marker={"size": 5, "color": colour},
                                     hovertemplate=f"layer {_esc(lk)}<br>step %{{x}}: %{{y}} significant"
                                                   "<extra></extra>"),
                          row=2, col=1)
        fig.update_yaxes(title_text="neurons", rangemode="tozero", row=2, col=1)
    # row 3: the final top neurons, continuous where the callback tracked them
    for j, ser in enumerate(_tracked_series(points, max_tracked)):
        colour = NEURON_COLORS[j % len(NEURON_COLORS)]
        custom = [[("—" if math.isnan(d) else f"{d:.3f}"), r] for d, r in zip(ser["selectivity"], ser["role"])]
        fig.add_trace(go.Scatter(
            x=steps, y=ser["score"], mode="lines+markers", name=_esc(ser["label"]), legendgroup="top",
            legendgrouptitle={"text": "final top neurons"}, connectgaps=False,
            line={"color": colour, "width": 1.8, "dash": "solid" if j < 5 else "dot"},
            marker={"size": 6, "color": colour, "line": {"color": colour, "width": 1.5},
                    "symbol": ["circle" if r == "candidate" else "circle-open" for r in ser["role"]]},
            customdata=custom,
            hovertemplate=(f"{_esc(ser['label'])} · step %{{x}}<br>score %{{y:.3f}}, d = %{{customdata[0]}}"
                           "<br>%{customdata[1]}<extra></extra>")),
            row=3, col=1)
    fig.update_yaxes(title_text="score", rangemode="tozero", row=3, col=1)
    jac = [to_float(p.get("jaccard_prev")) for p in points]
    fig.add_trace(go.Scatter(x=steps, y=jac, mode="lines+markers", name="Jaccard", line={"color": "#34495e"},
                             showlegend=False, hovertemplate="step %{x}: Jaccard %{y:.2f}<extra></extra>"),
                  row=4, col=1)
    fig.update_yaxes(title_text="Jaccard", range=[-0.05, 1.05], row=4, col=1)
    fig.update_xaxes(title_text="training step", row=4, col=1)
    fig = style_figure(fig, "Emergence over training", 940,
                 subtitle=f"{len(points)} probe points, steps {steps[0]}–{steps[-1]}", legend_rows=1)
    # with the heatmap its colour bar sits beside row 2: the legend starts below it
    fig.update_layout(legend={"orientation": "v", "yref": "paper", "y": 0.46 if heat else 1.0, "yanchor": "top",
                              "x": 1.02, "xanchor": "left", "groupclick": "toggleitem", "tracegroupgap": 14},
                      margin={"r": 190, "b": 64})
    for ann in fig.layout.annotations:  # subplot titles: left-aligned, muted
        if ann.text and ann.text != "not recorded":
            ann.update(font={"size": 13, "color": "#444"}, x=0.0, xanchor="left")
    return fig


# ---------------------------------------------------------------------------- layers
def layer_distribution_figure(data: dict[str, Any], relative: bool = False) -> go.Figure | None:
    """Per layer: FDR-significant neurons (positive / negative selectivity) and the best score.

    With ``relative=True`` the x axis is the relative depth ℓ/(L−1), so that models of
    different depths can be compared side by side.
    """
    p = layer_profile(data, relative=relative)
    if not p["layer"]:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = p["x"] if relative else [str(l) for l in p["layer"]]
    custom = np.stack([p["n_units"], p["frac_positive"] * 100, p["depth"]], axis=1)
    fig.add_trace(go.Bar(x=x, y=p["n_significant_positive"], name="significant, fires more on concept",
                         marker={"color": "#2c7fb8"}, customdata=custom,
                         hovertemplate=("layer %{x}: %{y} of %{customdata[0]} neurons (%{customdata[1]:.1f}%)"
                                        "<br>relative depth %{customdata[2]:.2f}<extra></extra>")),
                  secondary_y=False)
    fig.add_trace(go.Bar(x=x, y=p["n_significant_negative"], name="significant, fires less on concept",
                         marker={"color": "#bdc3c7"},
                         hovertemplate="layer %{x}: %{y} neurons<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=p["top_score"], name="best composite score in layer", mode="lines+markers",
                             line={"color": "#d35400", "width": 2}, marker={"size": 8},
                             hovertemplate="layer %{x}: best score %{y:.3f}<extra></extra>"), secondary_y=True)
    fig.update_layout(barmode="stack", bargap=0.25)
    fig.update_xaxes(title_text="relative depth ℓ/(L−1)" if relative else "layer",
                     type="linear" if relative else "category")
    fig.update_yaxes(title_text="FDR-significant neurons", secondary_y=False, rangemode="tozero")
    best = [v for v in p["top_score"].tolist() if math.isfinite(v)]
    ticks = nice_ticks(max(best + [0.0]) or 1.0)
    # round ticks of its own: plotly would otherwise share the count axis's tick positions (0.087, 0.173 ...)
    fig.update_yaxes(title_text="best score", secondary_y=True, showgrid=False, tickmode="array", tickvals=ticks,
                     range=[0, ticks[-1] * 1.02])
    q = data.get("fdr_q", 0.05)
    sub = f"neurons selective at Benjamini–Hochberg FDR q = {q}, per layer"
    if not np.nansum(p["n_significant"]) > 0:
        # empty state: no bar to draw, so no count axis (plotly would show an empty -1..1 range)
        for tr in fig.data[:2]:
            tr.showlegend = False
        fig.update_yaxes(range=[0, 1], showticklabels=False, showgrid=False, title_text="", secondary_y=False)
        fig.add_annotation(text=f"no significant neurons (FDR q = {q}) in any layer", xref="paper", yref="paper",
                           x=0.5, y=0.62, showarrow=False, font={"size": 16, "color": "#8a1c1c"},
                           name="empty-state")
        sub = f"no neuron is selective at Benjamini–Hochberg FDR q = {q}; the line is each layer's best score"
    return style_figure(fig, "Which layers carry the concept", 440, subtitle=sub, legend_rows=1)


# ---------------------------------------------------------------------------- all
#: name -> builder, in page order; each returns a Figure or None (section not applicable)
def cross_concept_figure(data: dict[str, Any]) -> go.Figure | None:
    """Neurons × concepts heatmap of Cohen's d (results.json ``cross_concept``); ✓ marks "selective"."""
    cc = data.get("cross_concept")
    if not isinstance(cc, dict) or not cc.get("neurons") or not cc.get("concepts"):
        return None
    roles = {(n.get("layer"), n.get("index")): n.get("role") for n in data.get("neurons") or []}
    rows = [f"{neuron_label(n)}{' (supp.)' if roles.get((n['layer'], n['index'])) == 'suppressor' else ''}"
            for n in cc["neurons"]]
    z = [[to_float(v) for v in row] for row in cc["d"]]
    top = max([abs(v) for row in z for v in row if math.isfinite(v)] + [1.0])
    sel = cc.get("selective") or [[False] * len(cc["concepts"]) for _ in rows]
    text = [[(f"{v:.2f}" if math.isfinite(v) else "") + (" ✓" if ok else "") for v, ok in zip(zr, sr)]
            for zr, sr in zip(z, sel)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[_esc(c) for c in cc["concepts"]], y=rows, text=text, texttemplate="%{text}", zmin=-top, zmax=top,
        colorscale="RdBu", reversescale=True, colorbar={"title": {"text": "d"}, "thickness": 12},
        hovertemplate="%{y} on %{x}<br>d = %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(side="top", type="category")
    style_figure(fig, "What else do the top neurons respond to?", 140 + 24 * len(rows),
           subtitle="Cohen's d on each probe of the same modality; ✓ = selective by the scan's candidate rule")
    return fig


FIGURE_BUILDERS = {
    "layers": layer_distribution_figure,
    "heatmap": heatmap_figure,
    "scatter": scatter_figure,
    "sankey": sankey_figure,
    "ablation": ablation_figure,
    "crossconcept": cross_concept_figure,
    "emergence": emergence_figure,
}


def build_figures(data: dict[str, Any], names: Sequence[str] | None = None) -> dict[str, go.Figure]:
    """Every applicable figure of ``data`` as ``{name: Figure}`` (page order)."""
    out: dict[str, go.Figure] = {}
    for name, fn in FIGURE_BUILDERS.items():
        if names is not None and name not in names:
            continue
        fig = fn(data)
        if fig is not None:
            out[name] = fig
    return out
