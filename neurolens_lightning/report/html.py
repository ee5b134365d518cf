"""The HTML primitives every NeuroLens page shares: escaping, number formatting, the stylesheet,
figure embedding, plotly.js loading and the page shell.

The scan report (:mod:`~neurolens_lightning.report.page`), the comparison page
(:mod:`~neurolens_lightning.report.compare_page`) and the steering page
(:mod:`~neurolens_lightning.report.steering_page`) are built from these, so that they look alike
and escape and format every value the same way.

Example:
    >>> fmt_number(1234567)
    '1,234,567'
    >>> escape("<b>x</b>")
    '&lt;b&gt;x&lt;/b&gt;'
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import plotly.io as pio
import plotly.offline

__all__ = ["CSS", "PLOTLY_CONFIG", "escape", "isnum", "fmt_number", "fmt_general", "pct", "plural", "join_words",
           "key_label", "kv_table", "grid_style", "definition_id", "definition_list", "figure_html", "plotlyjs_tag",
           "html_document", "write_page"]

#: plotly config of every chart on a page
PLOTLY_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True,
                                 "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


# ---------------------------------------------------------------------------- formatting
def escape(s: Any) -> str:
    """HTML-escape any value (None -> empty).

    >>> escape(None), escape("a & 'b'")
    ('', 'a &amp; &#x27;b&#x27;')
    """
    return "" if s is None else html.escape(str(s), quote=True)


def isnum(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (a bool is not a number here).

    >>> isnum(3), isnum(float("nan")), isnum(True), isnum("3")
    (True, False, False, False)
    """
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def fmt_number(x: Any, nd: int = 3) -> str:
    """A number for display: ``—`` for missing, thousands separators for ints, ``nd`` significant digits.

    >>> fmt_number(12345), fmt_number(0.123456), fmt_number(None), fmt_number(2.5e-5)
    ('12,345', '0.123', '—', '2.50e-05')
    """
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "—" if x is None else escape(x)
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


def fmt_general(x: Any) -> str:
    """A parameter value as written (0.05, not 0.0500); ints and missing values as :func:`fmt_number`.

    >>> fmt_general(0.05), fmt_general(1000)
    ('0.05', '1,000')
    """
    return f"{x:g}" if isnum(x) and not isinstance(x, int) else fmt_number(x)


def pct(num: Any, den: Any) -> str:
    """`` (12.5%)`` for ``num / den``, or an empty string when either is missing or ``den`` is 0.

    >>> pct(1, 8), pct(1, 0)
    (' (12.5%)', '')
    """
    if not (isnum(num) and isnum(den)) or den == 0:
        return ""
    return f" ({100.0 * num / den:.1f}%)"


def plural(n: Any, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the number it asks for.

    >>> plural(1, "neuron"), plural(3, "neuron"), plural(2, "query", "queries")
    ('1 neuron', '3 neurons', '2 queries')
    """
    return f"{fmt_number(n)} {one if n == 1 else (many or one + 's')}"


def join_words(items: Sequence[str]) -> str:
    """A list in words: ``a, b and c``.

    >>> join_words(["a", "b", "c"]), join_words(["a"])
    ('a, b and c', 'a')
    """
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------- blocks
def key_label(key: Any, labels: dict[str, str] | None = None) -> str:
    """A results.json key in words: its label from ``labels``, else the key with ``_`` as spaces.

    >>> key_label("null_needed", {"null_needed": "random neurons per layer, at most"}), key_label("joint_ci_low")
    ('random neurons per layer, at most', 'joint ci low')
    """
    k = str(key)
    return (labels or {}).get(k) or k.replace("_", " ")


def kv_table(title: str, d: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """A titled two-column table of the plain (not nested) items of ``d``; empty for an empty dict. Each key is
    shown in words (:func:`key_label`: ``labels[key]``, else the key with spaces), the raw key in its hover title.

    >>> kv_table("model", {"n_layers": 6}, {"n_layers": "layers"})
    "<div class='kv'><h4>model</h4><table><tr><th title='n_layers'>layers</th><td>6</td></tr></table></div>"
    """
    if not isinstance(d, dict) or not d:
        return ""

    def num(x: Any) -> str:
        return str(x) if isinstance(x, int) else f"{x:.4g}"

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            return ", ".join(num(x) if isnum(x) else escape(x) for x in v)
        return num(v) if isnum(v) else escape(v)

    def plain(v: Any) -> bool:
        return not isinstance(v, dict) and not (isinstance(v, list) and (not v or any(isinstance(x, (dict, list))
                                                                                     for x in v)))

    rows = "".join(f"<tr><th title='{escape(k)}'>{escape(key_label(k, labels))}</th><td>{val(v)}</td></tr>"
                   for k, v in d.items() if plain(v))
    return f"<div class='kv'><h4>{escape(title)}</h4><table>{rows}</table></div>"


def grid_style(n: int) -> str:
    """The ``style`` of a grid of ``n`` tiles (``.cards.grid``): columns chosen so that rows are balanced and
    no row holds a lone tile: one row where the tiles fit (up to 7 on a wide page, 6 under 1100 px), else two
    rows of ``ceil(n / 2)``; the CSS never lets a tile get narrower than its minimum (auto-fit falls back to
    fewer columns on a phone).

    >>> grid_style(7)
    '--cols:7;--cols-narrow:4'
    """
    n = max(int(n), 1)
    return f"--cols:{n if n <= 7 else math.ceil(n / 2)};--cols-narrow:{n if n <= 6 else math.ceil(n / 2)}"


def definition_id(term: str) -> str:
    """The anchor id of a term of :func:`definition_list` (``def-`` + the term in lower case, ``-`` between words).

    >>> definition_id("Holm family")
    'def-holm-family'
    """
    return "def-" + "-".join(w for w in "".join(c if c.isalnum() else " " for c in str(term).lower()).split())


def definition_list(items: Sequence[tuple[str, str]]) -> str:
    """``(term, HTML definition)`` pairs as the page's definitions list (the terms are not escaped); each term has
    the anchor :func:`definition_id`, so that the page can link to it.

    >>> definition_list([("q", "the FDR level")])
    "<dl class='defs'><dt id='def-q'>q</dt><dd>the FDR level</dd></dl>"
    """
    return "<dl class='defs'>" + "".join(f"<dt id='{definition_id(k)}'>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


#: the stylesheet of every page (the comparison and steering pages add their own rules after it)
CSS = """
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
.cards.grid{--c:var(--cols,6);display:grid;
 grid-template-columns:repeat(auto-fit,minmax(max(140px,calc((100% - (var(--c) - 1) * 12px) / var(--c) - 0.5px)),1fr))}
.card{flex:1 1 170px;background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card-v{font-size:26px;font-weight:700;line-height:1.2}
.card-k{font-size:14px;font-weight:600}
.card-s{font-size:13px;color:var(--muted)}
nav.toc{font-size:14px;margin:6px 0 0;color:var(--muted)}
main a{color:var(--accent)}
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
.gd{margin-top:4px;font-size:11.5px;color:var(--muted);min-width:155px;display:grid;align-items:center;
 grid-template-columns:fit-content(140px) minmax(36px,1fr) 34px;gap:0 5px;line-height:1.25}
.grow{display:contents}
.gname{text-align:left;overflow-wrap:anywhere}
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
ul.scatter-key{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:2px 18px}
ul.scatter-key li{white-space:nowrap}
.quiet{font-size:12.5px;color:#8a4b00;background:#fff4e5;border-radius:4px;padding:2px 6px;margin:0 0 5px}
footer{margin-top:40px;font-size:13px;color:var(--muted)}
@media (max-width:1100px){main{padding:22px 16px 48px}
 .cards.grid{--c:var(--cols-narrow,4)}}
"""


def figure_html(name: str, fig: Any, caption: str | None) -> str:
    """A plotly figure as a ``<figure>`` (div id ``nl-fig-{name}``, no plotly.js) with an optional HTML caption."""
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"nl-fig-{name}",
                      config=PLOTLY_CONFIG, default_height=f"{int(fig.layout.height or 450)}px")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure class='nl-figure' data-figure='{escape(name)}'>{div}{cap}</figure>"


def plotlyjs_tag(plotlyjs: str = "inline") -> str:
    """The ``<script>`` tag(s) that load plotly.js once per page: inlined (offline) or from the CDN."""
    if plotlyjs == "inline":
        return ("<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
                "<script type='text/javascript'>" + plotly.offline.get_plotlyjs() + "</script>")
    if plotlyjs == "cdn":
        from plotly.io._utils import plotly_cdn_url

        return f"<script charset='utf-8' src='{escape(plotly_cdn_url())}'></script>"
    raise ValueError(f"plotlyjs must be 'inline' or 'cdn', got {plotlyjs!r}")


# ---------------------------------------------------------------------------- page
def html_document(title: str, body: str, plotlyjs: str = "inline", extra_css: str = "") -> str:
    """A whole page: ``title`` (HTML, already escaped), :data:`CSS` + ``extra_css``, plotly.js and ``body`` in
    ``<main>``."""
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{title}</title><style>{CSS}{extra_css}</style>{plotlyjs_tag(plotlyjs)}</head>"
            f"<body><main>{body}</main></body></html>\n")


def write_page(path: str | Path, text: str) -> Path:
    """Write a page (UTF-8) to ``path``, creating its folder, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
