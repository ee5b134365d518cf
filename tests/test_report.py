"""The HTML report: figures, escaping, size, and rendering in headless Chromium.

Chromium tests render the product page as is (nothing injected) with ``--dump-dom`` after a
virtual time budget, then check in the serialised DOM that every chart drew (an
``svg.main-svg`` with its traces, a ``canvas`` for the WebGL scatter) and read Chromium's
console log (``--enable-logging=stderr``) for uncaught script errors. Where no Chromium is
installed (``apt-get install chromium``) they are skipped with a reason (``-ra`` lists it),
except under CI (``CI`` or ``NEUROLENS_REQUIRE_CHROMIUM`` set to a true value), where a missing
Chromium fails them instead of skipping silently.

One test runs a real scan with ablation on a tiny planted model and checks that the page
states the split sentences and warnings of results.json verbatim.
"""

from __future__ import annotations

import json
import os
from html import escape as html_escape
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from neurolens_lightning.report import (
    ablation_figure,
    build_figures,
    candidate_status,
    heatmap_figure,
    heatmap_reduction,
    scatter_figure,
    write_report,
)
from neurolens_lightning.ablation import verdict_word
from neurolens_lightning.report.figures import STATUS_COLORS, VERDICTS, candidates, scatter_reduction, suppressors
from synthetic import synthetic_results

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
REQUIRE_CHROMIUM = any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no")
                       for k in ("CI", "NEUROLENS_REQUIRE_CHROMIUM"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not REQUIRE_CHROMIUM,
                                    reason="headless Chromium not installed (apt-get install chromium)")

HOSTILE_TEXT = "The [[king]] said <script>alert(1)</script> loudly."
HOSTILE_CONCEPT = {
    "name": "evil <b>x</b>",
    "modality": "text",
    "description": "royalty, with <i>markup</i> & \"quotes\"",
    "groups": {
        "g<1>": [HOSTILE_TEXT, "A [[queen]] </script><script>alert(2)</script> smiled.", "The [[prince]] waved.",
                 "The [[king]] slept."],
        "g2": ["The [[emperor]] ruled.", "The [[monarch]] <img src=x onerror=alert(3)> spoke.",
               "A [[king]] rode home.", "The [[queen]] sang."],
    },
    "negative": ["The [[farmer]] said <script>alert(1)</script> loudly.", "A [[teacher]] smiled.",
                 "The [[baker]] waved.", "The [[clerk]] ruled.", "The [[man]] spoke.", "A [[dog]] slept.",
                 "The [[driver]] rode home.", "The [[child]] sang."],
}


# ---------------------------------------------------------------------------- helpers
def _scan(**kwargs):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import neurolens_lightning as nl

    try:
        return nl.scan(**kwargs)
    except nl.ModelLoadError as err:  # pragma: no cover - depends on the local model cache
        pytest.skip(f"MiniLM is not available offline: {err}")


@pytest.fixture(scope="session")
def minilm_report(tmp_path_factory):
    """A real small scan (MiniLM, royalty, layers 2-3: its top candidates include GELU units that barely fire) saved
    with its report."""
    result = _scan(model="minilm", concept="royalty", layers=[2, 3])
    out = result.save(tmp_path_factory.mktemp("minilm") / "royalty")
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="session")
def hostile_report(tmp_path_factory):
    """A real scan of a probe whose name and sentences contain HTML/JS."""
    result = _scan(model="minilm", concept=HOSTILE_CONCEPT, layers=[5], top_k=5)
    out = result.save(tmp_path_factory.mktemp("hostile") / "evil")
    return out, json.loads((out / "results.json").read_text())


def render(page: Path, budget_ms: int = 5000, timeout: float = 90) -> tuple[str, str, float]:
    """Render ``page`` in headless Chromium: (serialised DOM, console log, wall seconds)."""
    assert CHROMIUM, "headless Chromium is required under CI (apt-get install chromium)"
    with tempfile.TemporaryDirectory(prefix="nl-chromium-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--disable-quic", f"--user-data-dir={profile}", "--window-size=1400,1000",
               "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}", "--dump-dom",
               Path(page).resolve().as_uri()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr, wall


def console_errors(log: str) -> list[str]:
    """Uncaught script errors from Chromium's console log."""
    lines = [l for l in log.splitlines() if ":CONSOLE" in l]
    return [l for l in lines if re.search(r"Uncaught|TypeError|ReferenceError|SyntaxError|RangeError", l)]


def strip_scripts(dom: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "<script></script>", dom, flags=re.S | re.I)


def figure_fragments(dom: str) -> dict[str, str]:
    """``{figure name: serialised DOM of its plot div}`` (scripts removed)."""
    body = strip_scripts(dom)
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="nl-fig-([a-z]+)"', body)]
    out = {}
    for i, (pos, name) in enumerate(starts):
        end = body.find("<figcaption", pos)
        nxt = starts[i + 1][0] if i + 1 < len(starts) else len(body)
        out[name] = body[pos:min(end if end > 0 else nxt, nxt)]
    return out


#: what must be in a plot div once its traces are drawn
_CLS = r'class="(?:[^"]* )?{}[ "]'
DRAWN = {
    "layers": [_CLS.format("bars"), _CLS.format("point"), _CLS.format("js-line")],
    "heatmap": [_CLS.format("hm"), r"<image "],
    "scatter": [_CLS.format("point")],  # + canvas when WebGL, checked below
    "sankey": [_CLS.format("sankey-node"), _CLS.format("sankey-link")],
    "ablation": [_CLS.format("bars"), _CLS.format("errorbar"), _CLS.format("point")],
    "emergence": [_CLS.format("js-line")],
    "crossconcept": [_CLS.format("hm")],
}


def assert_all_drawn(dom: str, data: dict) -> dict[str, str]:
    frags = figure_fragments(dom)
    expected = set(build_figures(data))
    assert set(frags) == expected, (set(frags), expected)
    for name, frag in frags.items():
        assert 'class="main-svg"' in frag, f"{name}: plotly did not draw (no svg.main-svg)"
        assert re.search(r'class="(trace|hm|sankey)', frag), f"{name}: no trace drawn"
        for marker in DRAWN[name]:
            assert re.search(marker, frag), f"{name}: {marker} missing, the chart is empty"
    if any(t.type == "scattergl" for t in build_figures(data)["scatter"].data):
        assert "<canvas" in frags["scatter"] and "gl-canvas" in frags["scatter"], "WebGL scatter has no canvas"
    body = strip_scripts(dom)
    assert "WebGL is not supported" not in body
    return frags


def sankey_labels(frag: str) -> list[str]:
    """The drawn labels of a Sankey's nodes (annotations beside the nodes, the lines of a wrapped one joined)."""
    return [page_text(re.sub(r"</tspan>", " </tspan>", t)) for t in
            re.findall(r'<g class="annotation"[^>]*>.*?<text class="annotation-text"[^>]*>(.*?)</text>', frag,
                       flags=re.S)]


def page_text(html_or_dom: str) -> str:
    """The visible text of a page or DOM fragment: scripts and tags removed, entities decoded, whitespace folded."""
    import html as html_mod

    body = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", html_or_dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html_mod.unescape(re.sub(r"<[^>]+>", "", body))).strip()


def _shown(sentence: str) -> str:
    """A results.json sentence as the page shows it (``<=`` / ``>=`` as ≤ / ≥)."""
    return re.sub(r"\s+", " ", sentence.replace("<=", "≤").replace(">=", "≥"))


def _plotly_banner() -> str:
    import plotly.offline

    return plotly.offline.get_plotlyjs()[:200]


# ---------------------------------------------------------------------------- real scan
def test_real_scan_report_content(minilm_report):
    out, data = minilm_report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count(_plotly_banner()) == 1, "plotly.js must be inlined exactly once"
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page, "the page must not load anything"
    for name in ("layers", "heatmap", "scatter", "sankey"):
        assert f'id="nl-fig-{name}"' in page
    assert 'id="nl-fig-ablation"' not in page and "No ablation was run" in page
    # numbers on the page come from results.json
    assert f"{data['n_neurons_scanned']:,}" in page and f"{data['n_significant_fdr']:,}" in page
    head = data["confidence_head"]
    assert f"{100 * head['heldout_accuracy']:.1f}%" in page
    assert html_escape(data["settings"]["split"]) in page
    cands = [n for n in data["neurons"] if n["role"] == "candidate"]
    assert cands and cands[0] is data["neurons"][0], "candidates come first in the ranking"
    top = cands[0]
    assert f"The strongest candidate is <b>neuron {top['index']} of layer {top['layer']}</b>" in page
    assert f"{data['n_candidates']:,} neurons qualify as candidates" in page
    # the strongest examples, with the concept span marked
    ex = top["top_examples"][0]
    s, e = ex["span"]
    assert f"<mark>{ex['text'][s:e]}</mark>" in page
    assert "Cohen&#x27;s d" in page or "Cohen's d" in page
    assert "layer-scaled d" in page and "near-silent" in page
    assert heatmap_reduction(data).split(":")[0] in page


@needs_chromium
def test_real_scan_report_renders(minilm_report):
    out, data = minilm_report
    dom, log, _ = render(out / "report.html")
    assert not console_errors(log), console_errors(log)
    frags = assert_all_drawn(dom, data)
    n_cands = sum(n["role"] == "candidate" for n in data["neurons"][:data["top_k"]])
    assert len(re.findall(_CLS.format("point"), frags["scatter"])) >= n_cands  # the ringed candidates (SVG)


@needs_chromium
def test_console_error_detection_works(tmp_path):
    """The error check is not vacuous: a page with a broken script is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction()</script></body></html>")
    _, log, _ = render(page, budget_ms=500)
    assert console_errors(log)


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    """A REAL scan with ablation on the tiny planted GPT-2 (unit PLANTED of layer 0 carries the concept)."""
    import torch
    from helpers import CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer, planted_gpt2, planted_probe

    import neurolens_lightning as nl

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster on a shared machine
    try:
        tok = make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])
        result = nl.scan(model=planted_gpt2(tok), tokenizer=tok, concept=planted_probe("gpt2"), top_k=3,
                         ablate=True, neurons=[(0, PLANTED)], null_samples=20)
    finally:
        torch.set_num_threads(n_threads)
    out = result.save(tmp_path_factory.mktemp("planted") / "planted")
    return out, json.loads((out / "results.json").read_text()), PLANTED


def test_real_ablation_report_states_splits_and_warnings(planted_report):
    out, data, planted = planted_report
    page = (out / "report.html").read_text(encoding="utf-8")
    summ = data["ablation_summary"]
    # where the neurons were ranked and where they were ablated: the sentences of results.json, verbatim
    assert data["settings"]["split"] and summ["split"]
    assert html_escape(data["settings"]["split"]) in page
    assert html_escape(summ["split"]) in page
    for wrong in ("ranking half", "held-out half"):
        assert wrong not in page
    # every warning of results.json is on the page, in the warning box near the top
    warnings = list(dict.fromkeys(data["warnings"] + summ["warnings"]))
    assert warnings, "the planted probe has 8 examples per class in the ranking split: a small-probe warning"
    box = re.search(r"<div class='warnbox'.*?</ul></div>", page, flags=re.S)
    assert box and box.start() < page.index("id='sec-layers'")
    for w in warnings:
        assert f"<li>{html_escape(w)}</li>" in box.group(0)
    # the planted neuron was tested and its verdict and p are on the page, never a p below the floor
    rec = next(n for n in data["neurons"] if (n["layer"], n["index"]) == (0, planted))
    a = rec["ablation"]
    assert rec["role"] == "candidate" and a["tested_as"] == "candidate" and a["verdict"] == "validated"
    assert f"#{rec['rank']} L0:{planted}" in page  # on the ablation chart's axis
    floor_n = round(1 / a["p_floor"])
    if a["null_exceedances"] == 0:
        assert f"p = 1/{a['null_n'] + 1} ≈" in page and f"0 of {a['null_n']} random neurons as extreme" in page
        assert a["null_n"] + 1 == floor_n
    for n in data["neurons"]:
        if isinstance(n.get("ablation"), dict) and n["ablation"]["reasons"]:
            for r in n["ablation"]["reasons"]:
                assert html_escape(r) in page
    assert "z = " not in strip_scripts(page), "the ablation z was dropped (not calibrated)"
    n_val = summ["n_validated"] + summ["n_suppressors_validated"]
    text = page_text(page)
    assert f"Of the {summ['n_tested']} neurons tested: {n_val} validated" in text
    assert f"; {summ['n_causal_not_candidate']} causal, not a candidate" in text
    assert f"; {summ['n_not_causal']} not causal." in text
    audit = summ["audit"]
    assert (f"{audit['n_above_null']} of {audit['n_checked']} low-importance neurons had an effect beyond random "
            "neurons") in page


@needs_chromium
def test_real_ablation_report_renders(planted_report):
    out, data, _ = planted_report
    dom, log, _ = render(out / "report.html")
    assert not console_errors(log), console_errors(log)
    frags = assert_all_drawn(dom, data)
    n_ablated = sum(isinstance(n.get("ablation"), dict) for n in data["neurons"])
    assert len(re.findall(_CLS.format("errorbar"), frags["ablation"])) >= n_ablated


# ---------------------------------------------------------------------------- the three outcomes, real scans
@pytest.fixture(scope="module")
def outcome_reports(tmp_path_factory):
    """REAL scans with ablation (interchange, the default) on the tiny planted GPT-2 of test_ablation.py, with
    CAUSAL (concept -> " throne"), MUTE (reads like CAUSAL, writes nothing) and SMALL (not a concept unit, a small
    effect on y on every input):

    * ``ranked``: the top-2 candidates and suppressors + the three named: CAUSAL validated, the rest not causal,
      the joint set beyond random sets;
    * ``no_candidates``: ``min_selectivity=50``, so the ranking selects nothing and the three are tested as named
      neurons: CAUSAL is *causal, not a candidate*;
    * ``mute_only``: MUTE and SMALL alone: nothing causal, the joint set not beyond random sets.
    """
    import torch
    from helpers import CONCEPT, NEGATIVE, make_word_tokenizer, planted_gpt2, planted_probe
    from test_ablation import CAUSAL, MUTE, SMALL, with_small_unit

    import neurolens_lightning as nl

    tok = make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])
    runs = {"ranked": dict(top_k=2, neurons=[(0, CAUSAL), (0, MUTE), (0, SMALL)]),
            "no_candidates": dict(top_k=2, neurons=[(0, CAUSAL), (0, MUTE), (0, SMALL)], min_selectivity=50.0),
            "mute_only": dict(top_k=2, neurons=[(0, MUTE), (0, SMALL)], test_top_k=False)}
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, kw in runs.items():
            model = with_small_unit("gpt2", planted_gpt2(tok, mute=MUTE))
            result = nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), ablate=True, null_samples=20,
                             **kw)
            folder = result.save(tmp_path_factory.mktemp(name) / name)
            out[name] = (folder, json.loads((folder / "results.json").read_text()))
    finally:
        torch.set_num_threads(n_threads)
    # the three scans cover the three outcomes and both joint-set sentences
    summs = {k: d["ablation_summary"] for k, (_, d) in out.items()}
    assert summs["ranked"]["n_validated"] >= 1 and summs["no_candidates"]["n_causal_not_candidate"] >= 1
    assert all(s_["n_not_causal"] >= 1 for s_ in summs.values())
    assert summs["ranked"]["joint_beyond_null"] is True and summs["mute_only"]["joint_beyond_null"] is False
    return out


def _outcome_tiles(dom: str) -> dict[str, str]:
    """``{label: value}`` of the causal test's tiles."""
    grid = re.search(r"<div class=[\"']cards grid outcomes[\"'][^>]*>(.*?)(?=<p>)", dom, flags=re.S)
    assert grid, "no tiles of the causal test"
    cards = re.findall(r"<div class=[\"']card-v[\"']>(.*?)</div><div class=[\"']card-k[\"']>(.*?)</div>", grid.group(1),
                       flags=re.S)
    return {page_text(k): page_text(v) for v, k in cards}


def _check_outcomes(page: str, data: dict) -> str:
    """What the page must say about the causal test, every word and number from results.json; returns its text."""
    text = page_text(page)
    summ = data["ablation_summary"]
    tested = [n for n in data["neurons"] if isinstance(n.get("ablation"), dict)]
    n_val = summ["n_validated"] + summ["n_suppressors_validated"]
    # the three outcomes with their counts: the summary sentence and the tiles
    assert (f"Of the {summ['n_tested']} neurons tested: {n_val} validated" in text
            and f"; {summ['n_causal_not_candidate']} causal, not a candidate" in text
            and f"; {summ['n_not_causal']} not causal." in text), text[:3000]
    tiles = _outcome_tiles(page)
    assert tiles["neurons tested"] == str(summ["n_tested"]) and tiles["validated"] == str(n_val)
    assert tiles["causal, not a candidate"] == str(summ["n_causal_not_candidate"])
    assert tiles["not causal"] == str(summ["n_not_causal"])
    # the question the intervention answers, the Holm family and the FWER bound, the direction rules, the
    # specificity test and the audit's definition and expectation: the sentences of results.json
    assert f"The causal test asks: {_shown(summ['question'])}" in text
    assert f"Holm's correction runs over {_shown(summ['holm_family'])}: {_shown(summ['fwer_bound'])}." in text
    for rule, sentence in summ["direction_rules"].items():
        assert f"{rule}: {_shown(sentence)}" in text
    assert _shown(summ["specificity_test"]) in text and _shown(summ["audit"]["definition"]) in text
    audit = summ["audit"]
    assert (f"{audit['n_above_null']} of {audit['n_checked']} low-importance neurons had an effect beyond random "
            f"neurons") in text and f"{audit['expected_by_chance']:g} expected by chance" in text
    # the joint set is evidence only when it is beyond the random sets
    n_sets = summ["joint_null_n"]
    beyond = f", beyond {n_sets:,} random sets of the same size from the same layers (p = "
    not_beyond = f", not beyond {n_sets:,} random sets of the same size from the same layers (p = "
    if summ["joint_beyond_null"]:
        assert beyond in text and not_beyond not in text and "no evidence for the concept" not in text
        assert tiles[f"joint set of {summ['joint_size']}"] == "beyond"
    else:
        assert not_beyond in text and "the set as a whole is no evidence for the concept" in text
        assert tiles[f"joint set of {summ['joint_size']}"] == "not beyond"
    # each tested neuron's row: its verdict, and its reasons when it is not validated
    for n in tested:
        a = n["ablation"]
        row = re.search(rf"<td class=[\"']neuron[\"']>{n['layer']} : {n['index']}</td>.*?</tr>", page, flags=re.S)
        assert row, (n["layer"], n["index"])
        badge = re.search(r"<span class=[\"']status[\"'][^>]*>([^<]*)</span>", row.group(0)).group(1)
        assert badge == a["verdict"] and a["verdict"] in VERDICTS
        for r in a["reasons"] if not a["validated"] else []:
            assert page_text(r) in page_text(row.group(0))
        # a neuron at the smallest Holm p its null allows says so, validated or not (it is not borderline)
        at_floor = a["p_holm"] == pytest.approx(min(1.0, a["p_floor"] * summ["n_tested"]), rel=1e-4)
        assert ("the smallest p this null can give" in page_text(row.group(0))) == at_floor
    # the old words are gone
    assert "not validated" not in text and not re.search(r">\s*weak\s*<", page)
    return text


def test_outcomes_on_real_pages(outcome_reports):
    for name, (folder, data) in outcome_reports.items():
        text = _check_outcomes((folder / "report.html").read_text(encoding="utf-8"), data)
        if name == "ranked":  # CAUSAL's Holm p is p_floor × n_tested: the page says it is the smallest possible
            from helpers import PLANTED

            a = next(n["ablation"] for n in data["neurons"] if (n["layer"], n["index"]) == (0, PLANTED))
            m = data["ablation_summary"]["n_tested"]
            assert a["validated"] and a["p_holm"] == pytest.approx(a["p_floor"] * m)
            assert (f"Holm p = {a['p_holm']:#.3g} — the smallest p this null can give (1/{round(1 / a['p_floor'])} "
                    f"× {m} tested): no random neuron of its layer did as well, so not a borderline result") in text


@needs_chromium
def test_outcomes_on_real_pages_render(outcome_reports):
    """The rendered pages (headless Chromium, the live DOM) state the three outcomes with their counts, the joint
    set as the results say, the question; the Sankey's drawn nodes use the same words and counts."""
    for name, (folder, data) in outcome_reports.items():
        dom, log, _ = render(folder / "report.html")
        assert not console_errors(log), console_errors(log)
        frags = assert_all_drawn(dom, data)
        _check_outcomes(strip_scripts(dom), data)
        shown = [n for n in data["neurons"] if n.get("role") in ("candidate", "suppressor")]
        shown = ([n for n in shown if n["role"] == "candidate"][:data["top_k"]]
                 + [n for n in shown if n["role"] == "suppressor"][:data["top_k"]])
        if shown:
            statuses = [candidate_status(n, data) for n in shown]
            nodes = sankey_labels(frags["sankey"])
            for st in set(statuses):
                assert f"{st} ({statuses.count(st)})" in nodes, (st, nodes)
            assert not any(w in " ".join(nodes) for w in ("weak", "not validated"))


def test_compare_page_uses_the_verdicts():
    """The comparison page's ablation column shows each neuron's verdict in the same words (no "not validated")."""
    from neurolens_lightning.compare import build_comparison
    from neurolens_lightning.report.compare_page import render_comparison

    a = synthetic_results(n_layers=4, units=512, ablation=True, model="m1", seed=1)
    b = synthetic_results(n_layers=6, units=512, ablation=True, model="m2", seed=2)
    comp = build_comparison([a, b], labels=["m1", "m2"], top_k=10)
    html = render_comparison(comp, plotlyjs="cdn")
    shown = re.findall(r"<span class='st'[^>]*>([^<]*)</span>", html)
    expected = [n["ablation"]["verdict"] for m in comp["models"] for n in m["top_neurons"] if n.get("ablation")]
    assert shown == expected and {"validated", "not causal"} <= set(shown)
    assert "not validated" not in page_text(html)
    for m in comp["models"]:
        assert f"validated {m['n_validated']} candidate" in page_text(html)


# ---------------------------------------------------------------------------- synthetic sections
def test_synthetic_results_follow_schema_2():
    data = synthetic_results(n_layers=3, units=256, ablation=True, top_k=5)
    assert data["schema_version"] == 2
    roles = [n["role"] for n in data["neurons"]]
    first_other = roles.index(None)
    assert roles[:first_other] == sorted(roles[:first_other], key=lambda r: r != "candidate"), "ordered by role"
    assert data["n_candidates"] == roles.count("candidate") and data["n_suppressors"] == roles.count("suppressor")
    summ = data["ablation_summary"]
    assert {"split", "y", "alpha", "test", "null", "audit", "warnings", "n_suppressors_validated"} <= set(summ)
    assert {"q05", "q95", "median", "excess_kurtosis"} <= set(summ["null"][0])
    for n in data["neurons"]:
        lo, hi = n["selectivity_ci"]
        assert lo <= n["selectivity"] <= hi
        assert n["selectivity_layer"] <= n["selectivity"] + 1e-9 or n["selectivity"] < 0
        a = n["ablation"]
        if a:
            assert "z" not in a and a["p_value"] >= a["p_floor"]
            if a["tested_as"] != "named":
                assert a["direction"] == ("rise" if a["tested_as"] == "suppressor" else "drop")
            # the one vocabulary of the core, and causal / validated / reasons as decide() gives them
            assert a["verdict"] == verdict_word(a["causal"], a["validated"], -1 if a["direction"] == "rise" else 1)
            assert (a["reasons"] == []) == a["validated"] and (not a["validated"] or a["causal"])
    verdicts = [n["ablation"]["verdict"] for n in data["neurons"] if n["ablation"]]
    assert summ["n_causal_not_candidate"] == verdicts.count("causal, not a candidate") >= 1  # the named one
    assert summ["n_not_causal"] == verdicts.count("not causal") >= 1
    assert summ["n_validated"] + summ["n_suppressors_validated"] == sum(v.startswith("validated") for v in verdicts)
    assert {"question", "holm_family", "fwer_bound", "direction_rules", "specificity_test", "joint_beyond_null",
            "joint_p_null", "joint_null_n", "n_causal"} <= set(summ) and "definition" in summ["audit"]


def test_sections_present_only_with_data():
    plain = synthetic_results(n_layers=3, units=64)
    full = synthetic_results(n_layers=6, units=512, ablation=True, emergence=True, seed=1)
    assert set(build_figures(plain)) == {"layers", "heatmap", "scatter", "sankey"}
    assert set(build_figures(full)) == {"layers", "heatmap", "scatter", "sankey", "ablation", "emergence"}
    ablated = [n for n in full["neurons"] if n["ablation"]]
    statuses = {candidate_status(n, full) for n in ablated}
    assert statuses == set(VERDICTS), statuses  # the synthetic demo has all four verdicts
    assert VERDICTS == tuple(verdict_word(*a) for a in [(True, True, 1), (True, True, -1), (True, False, 1),
                                                        (False, False, 1)]), "the page's words are the core's"
    assert {candidate_status(n, full) for n in full["neurons"] if not n["ablation"]} == {"not ablated"}
    assert {candidate_status(n, plain) for n in plain["neurons"][:10]} <= {"significant", "not significant"}
    supp = next(n for n in plain["neurons"] if n["role"] == "suppressor")
    assert candidate_status(supp, plain) == "suppressor"
    assert set(STATUS_COLORS) >= {"validated suppressor", "suppressor"}
    assert len(set(STATUS_COLORS.values())) == len(STATUS_COLORS), "every status has its own colour"


def test_ablation_chart_null_band_is_quantiles():
    data = synthetic_results(n_layers=4, units=512, ablation=True, seed=2)
    fig = ablation_figure(data)
    ablated = [n for n in data["neurons"] if n["ablation"]]
    band = next(t for t in fig.data if t.type == "bar")
    null = {r["layer"]: r for r in data["ablation_summary"]["null"]}
    assert list(band.base) == pytest.approx([null[n["layer"]]["q05"] for n in ablated])
    assert [b + h for b, h in zip(band.base, band.y)] == pytest.approx([null[n["layer"]]["q95"] for n in ablated])
    points = [t for t in fig.data if t.type == "scatter" and (t.name or "").startswith("Δ concept")]
    assert sum(len(t.x) for t in points) == len(ablated), "every ablated neuron is plotted once"
    assert data["ablation_summary"]["y"] in fig.layout.yaxis.title.text.replace("<br>", " ")


@needs_chromium
def test_synthetic_ablation_and_emergence_render(tmp_path):
    data = synthetic_results(n_layers=6, units=512, ablation=True, emergence=True, seed=1)
    page = write_report(json.loads(json.dumps(data)), tmp_path / "report.html")
    html = page.read_text(encoding="utf-8")
    summ = data["ablation_summary"]
    text = page_text(html)
    cands = [n for n in data["neurons"] if n["ablation"] and n["ablation"]["tested_as"] == "candidate"]
    supps = [n for n in data["neurons"] if n["ablation"] and n["ablation"]["tested_as"] == "suppressor"]
    assert f"{sum(n['ablation']['validated'] for n in cands)} of the {len(cands)} candidates tested for a drop" in text
    assert f"{sum(n['ablation']['validated'] for n in supps)} of the {len(supps)} suppressors tested for a rise" in text
    assert "Spearman" in html and "Holm" in html and _shown(summ["test"]) in text
    assert "Suppressors" in html and "tested for a <b>rise</b>" in html
    dom, log, _ = render(page)
    assert not console_errors(log), console_errors(log)
    frags = assert_all_drawn(dom, data)
    # every ablated neuron has its error bar; the null band is drawn per neuron
    n_ablated = sum(bool(n["ablation"]) for n in data["neurons"])
    assert len(re.findall(_CLS.format("errorbar"), frags["ablation"])) >= n_ablated


def test_no_candidates_is_said_plainly(tmp_path):
    data = synthetic_results(n_layers=2, units=64, planted=0, ablation=True, n_examples=12, named=0)
    assert data["n_candidates"] == 0
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No neuron qualifies as a candidate" in html and "nothing was validated" in html
    assert "The strongest candidate" not in html
    for w in data["warnings"]:
        assert html_escape(w) in html
    assert any(w.startswith("small probe") for w in data["warnings"])
    assert "No neuron was tested" in html and 'id="nl-fig-ablation"' not in html


def test_p_never_below_its_floor_and_reasons_shown(tmp_path):
    data = synthetic_results(n_layers=2, units=256, ablation=True, top_k=3)
    rec = next(n for n in data["neurons"] if n["ablation"] and n["role"] == "candidate")
    a = rec["ablation"]
    a.update(p_value=1e-9, null_n=99, null_exceedances=0, p_floor=0.01, validated=False, causal=False,
             verdict="not causal", reasons=["not specific: <control> effect as large"])
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "p = 1/100 ≈ 0.01" in html and "0 of 99 random neurons as extreme" in html and "1e-09" not in html
    assert "not specific: &lt;control&gt; effect as large" in html


def test_warnings_from_both_levels_are_shown_once(tmp_path):
    w1, w2 = "mixed span marking: <b>7 of 64</b>", "layer 3 has only 12 other neurons"
    data = synthetic_results(n_layers=2, units=64, ablation=True, warnings=[w1], ablation_warnings=[w2])
    assert data["warnings"].count(w2) == 1  # the core copies the ablation warnings to the top level too
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    box = re.search(r"<div class='warnbox'.*?</ul></div>", html, flags=re.S).group(0)
    assert box.count(html_escape(w1)) == 1 and box.count(html_escape(w2)) == 1 and "<b>7 of 64</b>" not in html


def test_listed_neurons_fallback(tmp_path):
    """Without all_neurons (include_all=False) the page still builds from the listed neurons."""
    data = synthetic_results(n_layers=2, units=300)
    del data["all_neurons"]
    assert "Only the" in heatmap_reduction(data)
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="nl-fig-heatmap"' in html and 'id="nl-fig-scatter"' in html


def test_image_examples_and_tokens(tmp_path):
    import neurolens_lightning

    img = next((Path(neurolens_lightning.__file__).parent / "builtin_concepts" / "images" / "red").glob("*.png"))
    data = synthetic_results(n_layers=2, units=64)
    data["neurons"][0]["top_examples"] = [
        {"activation": 2.5, "positive": True, "position": 0, "image": str(img)},
        {"activation": 1.5, "positive": True, "position": 3, "text": "The old king slept.", "span": [8, 12],
         "tokens": ["[CLS]", "the", "old", "king", "slept", "."]},
    ]
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "src='data:image/png;base64," in html
    assert "The old <mark>king</mark> slept." in html and "strongest token: <code>king</code>" in html


def _png_data_uri(value: int = 200) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def test_image_candidates_show_thumbnails_with_labels(tmp_path):
    """An image probe's examples are tiles: the thumbnail (a file, or a PNG the callback inlined) with its label
    (the group - written by the callback, or looked up in the probe file -, ``control``, or the file name) and
    activation; an inline image that is not a plain base64 PNG never reaches the page."""
    import neurolens_lightning

    img = next((Path(neurolens_lightning.__file__).parent / "builtin_concepts" / "images" / "red").glob("*.png"))
    data = synthetic_results(n_layers=2, units=64)
    data["concept_info"]["modality"] = "image"
    uri = _png_data_uri()
    cand = next(n for n in data["neurons"] if n["role"] == "candidate")
    cand["top_examples"] = [
        {"activation": 2.5, "positive": True, "position": 0, "image": uri, "label": "digit <8>"},
        {"activation": 1.5, "positive": False, "position": 0, "image": uri, "label": "control"},
        {"activation": 1.25, "positive": True, "position": 0, "image": str(img)},
    ]
    other = next(n for n in data["neurons"][1:] if n["role"] == "candidate" and n.get("top_examples"))
    other["top_examples"] = [{"activation": 1.0, "positive": True, "position": 0,
                              "image": "data:image/png;base64,AAAA' onerror='alert(1)", "label": "x"}]
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    tiles = re.findall(r"<div class='ex-img (pos|ctrl)'.*?</div></div>", html)
    assert tiles[:3] == ["pos", "ctrl", "pos"]
    assert f"src='{uri}'" in html                                             # the inlined PNG, as written
    assert "<div class='ex-lab'>digit &lt;8&gt;</div>" in html               # its label, escaped
    assert "<div class='ex-lab'>control</div>" in html
    assert f"<div class='ex-lab'>{img.stem}</div>" in html                   # a file without label: its name
    assert "<div class='ex-act'>2.50</div>" in html
    assert "onerror" not in strip_scripts(html) and "unreadable inline image" in html
    assert "label (group; control)" in html                                  # the column says what the label is
    from neurolens_lightning.report.wandb_logging import candidate_rows

    assert candidate_rows(data)[0][14] == "digit <8> (inline image)"          # W&B table: the label, not the PNG
    # a scan of a probe file: a concept image is labelled with its group from that file, a control as control
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"name": "p", "modality": "image", "groups": {"red discs": [str(img)]},
                                 "negative": [str(img)]}))
    data["concept_info"]["source"] = f"{probe} [ranking split]"
    cand["top_examples"] = [{"activation": 1.25, "positive": True, "position": 0, "image": str(img)},
                            {"activation": 1.0, "positive": False, "position": 0, "image": str(img)}]
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<div class='ex-lab'>red discs</div>" in html and "<div class='ex-lab'>control</div>" in html
    assert f"<div class='ex-lab'>{img.stem}</div>" not in html


def test_emergence_figure_headline_trajectories_and_palettes():
    """The timeline plots the headline with its baseline, the final top neurons' scores from ``tracked`` (no
    gaps), and layers and neurons in disjoint colours; without ``tracked`` it falls back to each point's top-k."""
    from neurolens_lightning.report.figures import NEURON_COLORS, emergence_figure

    data = synthetic_results(n_layers=4, units=128, emergence=True, seed=3)
    points = data["emergence"]
    fig = emergence_figure(data)
    head = next(t for t in fig.data if (t.name or "").startswith("mean d of the"))
    assert list(head.y) == pytest.approx([p["most_selective_mean"] for p in points])
    base = next(t for t in fig.data if (t.name or "").startswith("baseline"))
    assert list(base.y) == pytest.approx([points[0]["most_selective_mean"]] * 2)
    tops = [t for t in fig.data if t.legendgroup == "top"]
    final = [f"L{n['layer']}:{n['index']}" for n in points[-1]["tracked"]]
    assert [t.name for t in tops] == final
    for t in tops:
        assert all(v is not None for v in t.y), f"{t.name} has a gap"
        j = final.index(t.name)
        assert list(t.y) == pytest.approx([p["tracked"][j]["score"] for p in points])
    layers = [t for t in fig.data if t.legendgroup == "layers"]
    assert len(layers) == 4
    layer_cols = {t.line.color for t in layers}
    neuron_cols = {t.line.color for t in tops}
    assert len(layer_cols) == 4 and len(neuron_cols) == len(tops) and not layer_cols & neuron_cols
    assert not layer_cols & set(NEURON_COLORS)
    # the filled markers are the points where the neuron was a candidate
    t0 = tops[0]
    assert list(t0.marker.symbol) == ["circle" if p["tracked"][0]["role"] == "candidate" else "circle-open"
                                      for p in points]
    # without the tracked lists (older results): the top-k lookup, with gaps where a neuron was not in the top-k
    for p in points:
        del p["tracked"]
    gaps = [t for t in emergence_figure(data).data if t.legendgroup == "top" and any(v is None for v in t.y)]
    assert gaps


def test_emergence_baseline_is_explained_with_the_first_points_numbers(tmp_path):
    data = synthetic_results(n_layers=3, units=128, emergence=True, seed=4)
    first, last = data["emergence"][0], data["emergence"][-1]
    first.update(n_significant=228, n_candidates=44, most_selective_mean=1.47)
    last.update(n_significant=372, n_candidates=41, most_selective_mean=1.36)
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    box = re.search(r"<p class='note baseline'>.*?</p>", html, flags=re.S).group(0)
    assert "step 0, before the first training step" in box
    assert "<b>228 neurons</b> were already FDR-significant" in box and "<b>44</b> qualified as candidates" in box
    assert "mean d of <b>1.47</b>" in box and "random initialisation" in box and "baseline" in box
    assert "significant neurons 228 → 372 (+144)" in box and "candidates 44 → 41 (−3)" in box
    assert html.index(box) < html.index('id="nl-fig-emergence"')          # read before the chart
    assert "<b>Over training</b>" in html and "<b>1.47 → 1.36 (−0.110)</b>" in html


def test_layer_chart_empty_state():
    """With no significant neuron the layer chart says so instead of drawing an empty -1..1 count axis."""
    from neurolens_lightning.report.figures import layer_distribution_figure

    data = synthetic_results(n_layers=3, units=64)
    assert layer_distribution_figure(data).layout.annotations == ()  # not shown when there is something to draw
    for s_ in data["layer_summary"]:
        s_.update(n_significant=0, n_significant_positive=0)
    fig = layer_distribution_figure(data)
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("no significant neurons") for t in texts), texts
    assert tuple(fig.layout.yaxis.range) == (0, 1) and fig.layout.yaxis.showticklabels is False
    assert not any(t.showlegend is not False for t in fig.data if t.type == "bar")


def test_scatter_labels_do_not_overlap_and_colours_cover_the_candidates():
    from neurolens_lightning.report.figures import place_labels

    data = synthetic_results(n_layers=4, units=256, seed=5)
    cands = [n for n in data["neurons"] if n["role"] == "candidate"][:data["top_k"]]
    supps = [n for n in data["neurons"] if n["role"] == "suppressor"][:data["top_k"]]
    cands[0]["importance"] = 0.5                     # far beyond the bulk: the colour range must still reach it
    fig = scatter_figure(data)
    main, ring = fig.data[0], next(t for t in fig.data if (t.name or "").endswith("candidates"))
    lim = max(abs(n["importance"]) for n in cands + supps)
    assert main.marker.cmax == pytest.approx(-main.marker.cmin) and main.marker.cmax >= lim * (1 - 1e-3)
    assert [c[3] for c in ring.customdata] == [f"L{n['layer']}:{n['index']}" for n in cands]  # hover names all
    # a crowded cluster (as in a real MiniLM scan): the labels placed never overlap one another
    xs = [1.05, 1.12, 1.20, 1.25, 1.33, 1.30, 1.45, 1.10, 1.38, 1.28]
    ys = [0.55, 0.57, 0.56, 0.58, 0.57, 0.52, 0.40, 0.63, 0.50, 0.47]
    labels = [f"L{i % 6}:{1000 + i}" for i in range(10)]
    texts, pos = place_labels(xs, ys, labels, (-2.0, 2.5), (-0.04, 1.08), max_labels=10)
    w, h = 640.0, 400.0
    boxes = []
    for x, y, t, p in zip(xs, ys, texts, pos):
        if not t:
            continue
        u, v = (x + 2.225) / 4.95 * w, (y + 0.04) / 1.12 * h
        bw, bh = 0.62 * 11 * len(t) + 4, 14
        dx = {"center": -bw / 2, "right": 6, "left": -6 - bw}[p.split()[1]]
        dy = {"top": 6, "bottom": -6 - bh, "middle": -bh / 2}[p.split()[0]]
        if p == "middle right":
            dx = 10
        if p == "middle left":
            dx = -10 - bw
        if p in ("top center",):
            dy = 9
        if p in ("bottom center",):
            dy = -9 - bh
        boxes.append((u + dx, v + dy, u + dx + bw, v + dy + bh))
    assert 1 < len(boxes) < 10                          # some labelled, not all: the rest by hover
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_timings_show_every_stage_and_the_total(tmp_path):
    data = synthetic_results(n_layers=2, units=64, ablation=True)
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    card = re.search(r"<div class='card'><div class='card-v'>([^<]*)</div><div class='card-k'>time</div>"
                     r"<div class='card-s'>(.*?)</div>", html)
    assert card and card.group(1) == "24&nbsp;s"
    for stage in ("load", "activations", "importance", "statistics", "ablation"):
        assert f"{stage}&nbsp;" in card.group(2), stage
    setup = re.search(r"<h4>time</h4><table class='times'>(.*?)</table>", html).group(1)
    for row in ("loading the model", "activation pass", "importance pass (backward)", "statistics and ranking",
                "ablation (causal test)", "total"):
        assert f"<th>{html_escape(row)}</th>" in setup, row
    assert setup.index("ablation (causal test)") < setup.index("<th>total</th>")
    del data["timings_s"]["total"]  # older results: the total is the sum of the stages, and says so
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "total (sum of the stages)" in html and "24&nbsp;s" in html


def test_group_names_have_their_full_name_on_hover(tmp_path):
    data = synthetic_results(n_layers=2, units=64)
    data["concept_info"]["groups"] = ["prince_princess_and_heirs", "g2", "g3", "g4", "g5", "g6"]
    html = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<span class='gname' title='prince_princess_and_heirs'>prince_princess_and_heirs</span>" in html


#: the JS both page probes share: every pair of overlapping (unrotated) texts of a chart goes to out.overlaps
_OVERLAPS_JS = r"""  document.querySelectorAll('.nl-figure').forEach(fig => {
    const texts = [...fig.querySelectorAll('svg text')].filter(t => t.textContent.trim()
      && t.getBoundingClientRect().width > 0
      && !/rotate\((?!0)/.test((t.getAttribute('transform') || '') + (t.parentNode.getAttribute('transform') || '')));
    const r = texts.map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
    for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) {
      const a = r[i][1], b = r[j][1];
      const ox = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const oy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (ox > 1 && oy > 1) out.overlaps.push([fig.dataset.figure, r[i][0], r[j][0]]);
    }
  });
"""


_LAYOUT_PROBE = r"""<script>
window.addEventListener('load', () => setTimeout(() => {
  const out = {inner: window.innerWidth, doc: document.documentElement.scrollWidth, scrolling: [], overlaps: [],
               wide_words: []};
  document.querySelectorAll('.tablewrap').forEach(el => {
    if (el.scrollWidth > el.clientWidth + 1) out.scrolling.push((el.closest('section') || {}).id); });
""" + _OVERLAPS_JS + r"""  out.breaks_anywhere = [...document.querySelectorAll('.kv td')].filter(td => {
    const cs = getComputedStyle(td); return cs.overflowWrap === 'anywhere' || cs.wordBreak === 'break-all'; }).length;
  document.querySelectorAll('.kv td').forEach(td => {
    const span = document.createElement('span');
    span.style.cssText = 'white-space:nowrap;position:absolute;visibility:hidden';
    td.appendChild(span);
    for (const w of td.textContent.split(/\s+/).filter(Boolean)) {
      span.textContent = w;
      if (span.getBoundingClientRect().width > td.clientWidth + 1) out.wide_words.push(w);
    }
    td.removeChild(span);
  });
  const pre = document.createElement('pre'); pre.id = 'nl-layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1500));
</script>"""


@needs_chromium
@pytest.mark.parametrize("width", [1000, 1920])
def test_layout_at_narrow_and_wide_windows(tmp_path, width):
    """At 1000 and 1920 px: no table scrolls sideways (the examples column used to), the page is not wider than
    the window, no two texts of a chart overlap (e.g. crowded scatter labels), no word of the Setup tables is
    broken mid-word. Measured on a copy of the page with a probe script appended (the page itself is unchanged)."""
    data = synthetic_results(n_layers=6, units=512, ablation=True, emergence=True, seed=1)
    data["concept_info"]["groups"] = ["prince_princess", "royal_objects", "monarch", "king", "queen", "emperor"]
    data["settings"]["split"] = ("ranked on the ranking split (31 concept and 33 control examples); the disjoint "
                                 "held-out split is kept for ablation")
    page = write_report(data, tmp_path / "report.html")
    got = _render_with_probe(page, _LAYOUT_PROBE, "nl-layout", width, tmp_path / "probe.html", timeout=120)
    assert got["scrolling"] == [], f"tables scrolling sideways at {width} px: {got['scrolling']}"
    assert got["doc"] <= got["inner"], got
    assert got["overlaps"] == [], got["overlaps"][:10]
    assert got["wide_words"] == [], got["wide_words"]
    # a word in the Setup tables breaks only when it is wider than its whole cell (never "rank-ing" to save space)
    assert got["breaks_anywhere"] == 0


# ---------------------------------------------------------------------------- escaping
def test_plotly_json_cannot_close_the_script_tag():
    fig = go.Figure(go.Scatter(x=[1], y=[1], text=["</script><script>alert(1)</script>"]))
    frag = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id="t")
    assert frag.count("</script>") == frag.count("<script")
    assert "<script>alert(1)" not in frag and "\\u003c\\u002fscript\\u003e" in frag


def test_hostile_probe_is_escaped(hostile_report):
    out, data = hostile_report
    assert data["concept"] == "evil <b>x</b>"
    texts = [ex.get("text") for n in data["neurons"] for ex in n.get("top_examples") or []]
    assert any("<script>alert(1)</script>" in (t or "") for t in texts), "the hostile sentence must be shown"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(" not in page and "<img src=x" not in page
    assert "<b>x</b>" not in page and "evil &lt;b&gt;x&lt;/b&gt;" in page
    assert "<i>markup</i>" not in page and "&lt;i&gt;markup&lt;/i&gt;" in page
    assert "g&lt;1&gt;" in page and "g<1>" not in page
    # every <script> opened is closed by its own tag: the data JSON never contains "</script"
    assert page.count("</script>") == len(re.findall(r"<script\b", page))


def test_every_user_string_is_escaped(tmp_path):
    """Model name, concept, description, group names, paths, settings, splits, y, warnings, reasons, probe text."""
    bad = {"model": "<img src=x onerror=alert(5)>", "concept": "<b>x</b>", "desc": "<svg onload=alert(6)>",
           "group": "<i>g</i>", "path": "/tmp/<script>alert(7)</script>/p.json", "setting": "<u>cpu</u>",
           "split": "<em>held</em>", "y": "<s>log p</s> (nats)", "warning": "<marquee>w</marquee>",
           "reason": "<blink>r</blink>", "test": "<q>t</q>"}
    data = synthetic_results(n_layers=2, units=64, ablation=True, emergence=True, model=bad["model"],
                             concept=bad["concept"], positive_texts=[HOSTILE_TEXT, "The [[queen]] <u>sang</u>."],
                             warnings=[bad["warning"]])
    data["concept_info"].update(description=bad["desc"], groups=[bad["group"], "g2"], source=bad["path"])
    data["settings"]["device"] = bad["setting"]
    data["settings"]["split"] = bad["split"]
    data["ablation_summary"].update(split=bad["setting"], y=bad["y"], test=bad["test"])
    rec = next(n for n in data["neurons"] if n["ablation"])
    rec["ablation"].update(validated=False, causal=False, verdict="not causal", reasons=[bad["reason"]])
    bad.update(question="<i>q</i>", holm_family="<dfn>h</dfn>", fwer_bound="<kbd>f</kbd>", spec="<var>s</var>",
               rule="<sup>r</sup>", audit="<sub>a</sub>")
    data["ablation_summary"].update(question=bad["question"], holm_family=bad["holm_family"],
                                    fwer_bound=bad["fwer_bound"], specificity_test=bad["spec"],
                                    direction_rules={"role": bad["rule"]})
    data["ablation_summary"]["audit"]["definition"] = bad["audit"]
    page = write_report(data, tmp_path / "r.html").read_text(encoding="utf-8")
    for raw in bad.values():
        assert raw not in page, raw
    for raw in ("<script>alert(1)", "<u>sang</u>"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(5)&gt;" in page and "&lt;i&gt;g&lt;/i&gt;" in page
    assert html_escape(bad["split"]) in page and html_escape(bad["warning"]) in page
    assert page.count("</script>") == len(re.findall(r"<script\b", page))


@needs_chromium
def test_hostile_probe_renders_as_text(hostile_report):
    out, data = hostile_report
    dom, log, _ = render(out / "report.html")
    assert not console_errors(log), console_errors(log)
    assert_all_drawn(dom, data)
    body = strip_scripts(dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # shown as text in the live DOM
    assert "<b>x</b>" not in body and "<img src=\"x\"" not in body
    assert len(re.findall(r"<script\b", dom)) == len(re.findall(r"<script\b", (out / "report.html").read_text()))


# ---------------------------------------------------------------------------- size
@pytest.fixture(scope="module")
def gpt2_medium_sized(tmp_path_factory):
    data = synthetic_results(n_layers=24, units=4096, ablation=True, emergence=True, model="gpt2-medium-synthetic")
    page = write_report(data, tmp_path_factory.mktemp("big") / "report.html")
    return page, data


def test_large_scan_page_size_and_reductions(gpt2_medium_sized):
    page, data = gpt2_medium_sized
    size = page.stat().st_size
    assert size < 15e6, f"{size / 1e6:.1f} MB"
    figs = build_figures(data)
    gl = [t for f in figs.values() for t in f.data if t.type.endswith("gl")]
    assert len(gl) <= 1, "at most one WebGL trace per page"
    hm = figs["heatmap"]
    assert max(np.asarray(t.z).shape[1] for t in hm.data) <= 2048  # far below plotly's ~65k-per-axis limit
    note = heatmap_reduction(data)
    assert "Reduced for size" in note and "98,304" in note
    html = page.read_text(encoding="utf-8")
    assert html_escape(note) in html and html_escape(scatter_reduction(data)) in html


@needs_chromium
def test_large_scan_renders(gpt2_medium_sized):
    """The 98k-neuron page draws every chart without script errors (render time: benchmarks, not here)."""
    page, data = gpt2_medium_sized
    dom, log, _ = render(page, timeout=180)
    assert not console_errors(log), console_errors(log)
    assert_all_drawn(dom, data)


def test_small_models_use_svg_and_full_heatmap():
    data = synthetic_results(n_layers=2, units=3000)
    assert scatter_figure(data).data[0].type == "scattergl"
    small = synthetic_results(n_layers=2, units=500)
    assert scatter_figure(small).data[0].type == "scatter"
    hm = heatmap_figure(small)
    assert np.asarray(hm.data[0].z).shape == (2, 500) and len(hm.data) == 1
    assert heatmap_reduction(small).startswith("All 1,000 scanned neurons")


def test_cdn_option_is_small_and_inline_is_default(tmp_path):
    from neurolens_lightning.report import render_report

    data = synthetic_results(n_layers=2, units=64)
    cdn = render_report(data, plotlyjs="cdn")
    assert re.search(r"<script charset='utf-8' src='https://cdn\.plot\.ly/plotly-[0-9.]+\.min\.js'>", cdn)
    assert len(cdn) < 1e6 < len(render_report(data))
    with pytest.raises(ValueError):
        render_report(data, plotlyjs="nope")


# ---------------------------------------------------------------------------- the pages read on their own (issue 20.4)
_READ_PROBE = r"""<script>
window.addEventListener('load', () => setTimeout(() => {
  const out = {inner: window.innerWidth, doc: document.documentElement.scrollWidth, tile_rows: [], sankey_hits: [],
               ticks: {}, cut_names: [], missing_targets: [], overlaps: [], n_sankey_labels: 0};
  // tiles: the number of tiles in each row of every tile grid
  document.querySelectorAll('.cards').forEach(grid => {
    const rows = {};
    [...grid.children].forEach(c => { const t = Math.round(c.getBoundingClientRect().top);
                                      rows[t] = (rows[t] || 0) + 1; });
    out.tile_rows.push(Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]));
  });
  // Sankey: points of each label's box that lie inside a link's band
  document.querySelectorAll('#nl-fig-sankey .annotation-text').forEach(t => {
    out.n_sankey_labels += 1;
    const r = t.getBoundingClientRect();
    let hits = 0;
    for (let i = 1; i < 6; i++) for (let j = 1; j < 4; j++) {
      const x = r.left + i * r.width / 6, y = r.top + j * r.height / 4;
      document.querySelectorAll('#nl-fig-sankey path.sankey-link').forEach(p => {
        const m = p.getScreenCTM().inverse(), pt = new DOMPoint(x, y).matrixTransform(m);
        if (p.isPointInFill(pt)) hits += 1;
      });
    }
    if (hits) out.sankey_hits.push([t.textContent, hits]);
  });
  // tick labels of every axis of every chart
  document.querySelectorAll('.nl-figure').forEach(fig => {
    fig.querySelectorAll('g[class$="tick"]').forEach(g => {
      const key = fig.dataset.figure + ':' + g.getAttribute('class');
      const txt = [...g.querySelectorAll('text')].map(t => t.textContent.trim()).filter(Boolean);
      if (txt.length) out.ticks[key] = (out.ticks[key] || []).concat(txt);
    });
  });
  // group names cut by their box
  document.querySelectorAll('.gname').forEach(el => {
    if (el.scrollWidth > el.clientWidth + 1 || getComputedStyle(el).textOverflow === 'ellipsis')
      out.cut_names.push(el.textContent); });
  // every link inside the page goes to something the page shows
  document.querySelectorAll('a[href^="#"]').forEach(a => {
    const el = document.getElementById(a.getAttribute('href').slice(1));
    if (!el || !el.getClientRects().length) out.missing_targets.push(a.getAttribute('href')); });
  // no two texts of a chart overlap
""" + _OVERLAPS_JS + r"""  const pre = document.createElement('pre'); pre.id = 'nl-read'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 2000));
</script>"""


def _render_with_probe(page: Path, script: str, pre_id: str, width: int, copy: Path, timeout: int) -> dict:
    """Render ``copy`` (``page`` with ``script`` appended; the page itself is unchanged) in headless Chromium at
    ``width`` px and return the JSON the script left in ``<pre id=pre_id>``."""
    import html as html_mod

    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="nl-chromium-") as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},1000",
                               "--virtual-time-budget=8000", "--dump-dom", copy.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    m = re.search(rf'<pre id="{pre_id}">(.*?)</pre>', proc.stdout, flags=re.S)
    assert m, proc.stderr[-2000:]
    return json.loads(html_mod.unescape(m.group(1)))


def read_page(page: Path, width: int, tmp: Path) -> dict:
    """Render a copy of ``page`` with :data:`_READ_PROBE` appended at ``width`` px and return what it measured."""
    return _render_with_probe(page, _READ_PROBE, "nl-read", width, tmp / f"read-{width}-{page.name}", timeout=150)


def is_nice(ticks: list[str]) -> bool:
    """Whether tick labels are round numbers: equal steps of 1, 2, 2.5 or 5 × a power of ten, every tick a multiple
    of the step (non-numeric labels - categories, dates - are not judged)."""
    try:
        vals = [float(t.replace("−", "-").replace(",", "").replace("\u2212", "-")) for t in ticks]
    except ValueError:
        return True
    if len(vals) < 3:
        return True
    vals = sorted(vals)

    def round_mantissa(x: float) -> bool:
        mant = x / 10 ** np.floor(np.log10(x))
        return any(abs(mant - m) < 1e-6 for m in (1, 2, 2.5, 5, 10))

    if all(v > 0 for v in vals) and all(round_mantissa(v) for v in vals) and vals[-1] / vals[0] >= 10:
        return True  # a logarithmic axis: 1, 2, 5, 10, 20, ...
    steps = [b - a for a, b in zip(vals, vals[1:])]
    step = steps[0]
    if step <= 0 or any(abs(s_ - step) > 1e-6 * max(1.0, abs(step)) for s_ in steps):
        return False
    return round_mantissa(step) and all(abs(v / step - round(v / step)) < 1e-6 for v in vals)


def test_is_nice_tells_round_ticks():
    assert is_nice(["0", "0.2", "0.4", "0.6"]) and is_nice(["0", "50", "100", "150"]) and is_nice(["−0.1", "0", "0.1"])
    assert is_nice(["1", "2", "5", "10", "20", "50", "100"])  # a log axis
    assert not is_nice(["0", "0.087", "0.173", "0.26"]) and not is_nice(["0.184", "0.368", "0.553"])


@pytest.fixture(scope="module")
def steering_page(tmp_path_factory):
    """A REAL steering page: the planted neuron of the tiny GPT-2 steered against random sets."""
    from helpers import CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer, planted_gpt2, planted_probe

    from neurolens_lightning.steering import SteeringResult, dose_response

    tok = make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])
    res = dose_response(planted_gpt2(tok), planted_probe("gpt2"), [(0, PLANTED)], tokenizer=tok, n_boot=200)
    out = SteeringResult(res.to_dict()).save(tmp_path_factory.mktemp("steer") / "steer")
    return out / "steering.html", json.loads((out / "steering.json").read_text())


@pytest.fixture(scope="module")
def compare_page(outcome_reports, tmp_path_factory):
    """A comparison page of two REAL scans with ablation of the same probe (the planted GPT-2 with CAUSAL, and the
    one with only MUTE and SMALL)."""
    from neurolens_lightning.compare import build_comparison
    from neurolens_lightning.report.compare_page import render_comparison

    comp = build_comparison([outcome_reports["ranked"][1], outcome_reports["mute_only"][1]],
                            labels=["planted gpt2", "mute only"], top_k=5)
    page = tmp_path_factory.mktemp("compare") / "report.html"
    page.write_text(render_comparison(comp), encoding="utf-8")
    return page, comp


def _real_pages(outcome_reports, minilm_report, steering_page, compare_page) -> dict[str, Path]:
    return {"scan+ablation": outcome_reports["ranked"][0] / "report.html", "scan": minilm_report[0] / "report.html",
            "steering": steering_page[0], "compare": compare_page[0]}


@needs_chromium
@pytest.mark.parametrize("width", [1000, 1400, 1920])
def test_real_pages_read_on_their_own(outcome_reports, minilm_report, steering_page, compare_page, tmp_path, width):
    """Rendered at 1000, 1400 and 1920 px, the real scan page (with and without ablation), steering page and
    comparison page: tiles wrap in balanced rows (never a lone tile), no Sankey label sits on a link, every axis
    has round ticks, no group name is cut, every in-page link reaches something shown, no two chart texts
    overlap and the page is not wider than the window."""
    for name, page in _real_pages(outcome_reports, minilm_report, steering_page, compare_page).items():
        got = read_page(page, width, tmp_path)
        where = f"{name} at {width} px"
        for rows in got["tile_rows"]:
            assert max(rows) - min(rows) <= 1 and not (len(rows) > 1 and rows[-1] == 1), (where, got["tile_rows"])
        if name.startswith("scan"):
            assert got["n_sankey_labels"] >= 3, where
        assert got["sankey_hits"] == [], (where, got["sankey_hits"])
        bad = {k: v for k, v in got["ticks"].items() if not is_nice(v)}
        assert not bad, (where, bad)
        assert got["cut_names"] == [], (where, got["cut_names"])
        assert got["missing_targets"] == [], (where, got["missing_targets"])
        assert got["overlaps"] == [], (where, got["overlaps"][:10])
        assert got["doc"] <= got["inner"], (where, got)


#: phrases that point at something elsewhere on the page: each must be an in-page link (a), never bare text
_REFERENCES = re.compile(r"under the chart|at the bottom|(?:table|chart|figure|definitions?|list|section|verdict|"
                         r"dose-response|candidates|suppressors)\s+(?:below|above)|as defined (?:above|below)|"
                         r"\bsee (?:the|below|above)\b|(?:test|table|chart)\s+above", flags=re.I)


def _dangling_references(page: str) -> list[str]:
    """Reference phrases outside an in-page link, and in-page links whose target id the page lacks."""
    body = re.sub(r"<script\b[^>]*>.*?</script>", " ", page, flags=re.S | re.I)
    ids = set(re.findall(r"\bid=['\"]([^'\"]+)['\"]", body))
    missing = [h for h in re.findall(r"<a href=['\"]#([^'\"]+)['\"]", body) if h not in ids]
    # the sentence around each link counts as linked: drop each link's sentence-local context
    unlinked = re.sub(r"[^.;:(]*<a href=['\"]#[^'\"]+['\"]>.*?</a>[^.;)]*", " ", body, flags=re.S)
    return [f"#{h} (no such id)" for h in missing] + _REFERENCES.findall(page_text(unlinked))


def test_no_reference_to_what_the_page_does_not_show(outcome_reports, minilm_report, steering_page, compare_page):
    """Every "see the table under the chart" / "the definitions at the bottom" / "the dose-response below" is a
    link to an id the page has; the excess kurtosis the Test definition mentions is in the null table it links."""
    for name, page in _real_pages(outcome_reports, minilm_report, steering_page, compare_page).items():
        html = page.read_text(encoding="utf-8")
        assert _dangling_references(html) == [], (name, _dangling_references(html))
    html = (outcome_reports["ranked"][0] / "report.html").read_text(encoding="utf-8")
    assert "excess kurtosis here" in html and "<a href='#sec-null'>the null table</a>" in html
    null = re.search(r"<details class='null' id='sec-null' open>.*?</details>", html, flags=re.S)
    assert null and "<th>excess kurtosis</th>" in null.group(0)
    # the detector works: the old wording is caught
    assert _dangling_references("<p>the table under the chart has each layer's null.</p>")
    assert _dangling_references("<p><a href='#nowhere'>x</a></p>") == ["#nowhere (no such id)"]


def test_one_vocabulary_with_the_console(outcome_reports):
    """The page's verdicts are the console's (verdict_word; the console prints them upper-case), each explained
    where first shown: the tiles of the causal test and the Sankey caption define the words they show."""
    from neurolens_lightning.report.figures import STATUS_GLOSS, sankey_figure

    for name, (folder, data) in outcome_reports.items():
        html = (folder / "report.html").read_text(encoding="utf-8")
        text = page_text(html)
        tiles = re.search(r"<div class=[\"']cards grid outcomes[\"'][^>]*>(.*?)(?=<p>)", html, flags=re.S).group(1)
        assert "selective and causal" in page_text(tiles)                          # validated, as the console
        assert STATUS_GLOSS["causal, not a candidate"] in page_text(tiles)
        assert "some causal criterion failed" in page_text(tiles)
        tested = [n for n in data["neurons"] if isinstance(n.get("ablation"), dict)]
        for n in tested:  # the console's word of each tested neuron (upper-cased there) is the page's badge
            a = n["ablation"]
            word = verdict_word(a["causal"], a["validated"], 1 if a["direction"] == "drop" else -1)
            assert word == a["verdict"] and f">{word}</span>" in html
        fig = sankey_figure(data)
        if fig is None:
            continue
        labels = [a.text.replace("<br>", " ") for a in fig.layout.annotations]
        shown = [candidate_status(n, data) for n in candidates(data) + suppressors(data)]
        for st in set(shown):
            assert f"{st} ({shown.count(st)})" in labels and f"{st}: {STATUS_GLOSS[st]}" in text, (name, st)
        assert not re.search(r"\bweak\b", " ".join(labels)) and not re.search(r">\s*weak[^<]*<", html)


def test_the_p_floor_is_explained_where_p_is_shown(outcome_reports):
    """A null of N random neurons cannot give p < 1/(N + 1), nor Holm p < m/(N + 1): the summary says so with this
    scan's numbers, and every neuron whose Holm p sits at that floor says that no random neuron did as well."""
    folder, data = outcome_reports["ranked"]
    text = page_text((folder / "report.html").read_text(encoding="utf-8"))
    m = data["ablation_summary"]["n_tested"]
    tested = [n["ablation"] for n in data["neurons"] if isinstance(n.get("ablation"), dict)]
    floors: dict[int, list[str]] = {}
    for n in data["neurons"]:
        if isinstance(n.get("ablation"), dict):
            floors.setdefault(round(1 / n["ablation"]["p_floor"]), []).append(str(n["layer"]))
    assert "The smallest p. The p-values are counts against a finite null: with " in text
    for L, layers in floors.items():
        where = "" if len(floors) == 1 else f" (layer{'s' if len(set(layers)) > 1 else ''} "
        assert (f"with {L - 1} random neurons{where}" in text
                and f"the smallest p is 1/{L} = {1 / L:#.3g} and the smallest Holm p {m} × 1/{L} = "
                    f"{min(1, m / L):#.3g}" in text), (L, layers)
    assert "A p at that floor means that no random neuron of the layer had an effect as extreme" in text
    n_at = sum(a["p_holm"] == pytest.approx(min(1.0, a["p_floor"] * m), rel=1e-4) for a in tested)
    assert n_at >= 1 and f"Here {n_at} of the {m} tested neurons sit at the floor." in text
    assert text.count("no random neuron of its layer did as well") >= n_at


def test_the_steering_p_floor_is_explained(steering_page):
    page, data = steering_page
    t = data["test"]
    text = page_text(page.read_text(encoding="utf-8"))
    at_floor = t["p_null"] == pytest.approx(1 / (t["null_n"] + 1))
    assert at_floor, "the planted neuron beats every random set"
    assert (f"the smallest p {t['null_n']} random sets can give (1/{t['null_n'] + 1}): none of them did as well"
            in text)


def test_setup_is_in_words(outcome_reports):
    """Every key of the Setup tables is shown as a label (no raw snake_case key), the raw key in its hover title;
    a key the page does not know is still shown, readable."""
    from neurolens_lightning.report.page import render_report

    folder, data = outcome_reports["ranked"]
    data = json.loads(json.dumps(data))
    data["ablation_summary"]["brand_new_key"] = 7
    html = render_report(data, plotlyjs="cdn")
    setup = re.search(r"<section id='sec-setup'>.*?</section>", html, flags=re.S).group(0)
    heads = re.findall(r"<th title='([^']*)'>([^<]*)</th>", setup)
    assert len(heads) > 40
    for key, label in heads:
        assert "_" not in label, (key, label)
    shown = dict(heads)
    for key in ("joint_ci_low", "replicas", "null_needed", "importance_delta_spearman", "min_effect"):
        assert key in shown and shown[key] != key.replace("_", " "), (key, shown.get(key))
    assert shown["null_needed"] == "random neurons per layer, at most"
    assert shown["brand_new_key"] == "brand new key"
    unit = re.search(r"\(([^()]*)\)\s*$", data["ablation_summary"]["y"])
    if unit:
        assert shown["min_effect"] == f"minimum effect |Δ| ({unit.group(1)})"


def test_a_neuron_that_barely_fires_says_so(minilm_report):
    """MiniLM's layers 2-3 rank GELU units whose top activations sit in GELU's flat negative region (around -1e-3):
    their examples say that the neuron barely fires, with the numbers, and a unit that fires does not."""
    from neurolens_lightning.report.page import QUIET_FRACTION, activation_scale, barely_fires

    out, data = minilm_report
    html = (out / "report.html").read_text(encoding="utf-8")
    cands = candidates(data)
    quiet = [n for n in cands if barely_fires(n, data)]
    loud = [n for n in cands if not barely_fires(n, data)]
    assert quiet and loud, "layers 2-3 of MiniLM have both among their top candidates"
    for n in cands:
        row = re.search(rf"<td class=[\"']neuron[\"']>{n['layer']} : {n['index']}</td>.*?</tr>", html, flags=re.S)
        top = max(e["activation"] for e in n["top_examples"])
        scale = activation_scale(data, n["layer"])
        has_note = "Barely fires: its largest activation on any probe example" in page_text(row.group(0))
        assert has_note == (abs(top) < QUIET_FRACTION * scale)
        if has_note:
            assert f"{top:#.3g}".rstrip(".") in page_text(row.group(0)) or f"{top:.2e}" in page_text(row.group(0))


def test_activation_scale_is_the_layers_median_spread():
    """activation_scale recovers √(median pooled variance) of a layer from (mean_pos − mean_neg) / d_layer of a
    neuron quieter than the median, and prefers layer_summary's own field when results.json has one."""
    from neurolens_lightning.report.page import activation_scale

    med_var = 0.04  # spread 0.2
    neurons = []
    for i, (diff, var) in enumerate([(0.5, 0.09), (0.01, 1e-6), (0.3, 0.04), (-0.02, 4e-6)]):
        d = diff / var ** 0.5
        dl = diff / max(var, med_var) ** 0.5
        neurons.append({"layer": 1, "index": i, "mean_pos": diff, "mean_neg": 0.0, "selectivity": d,
                        "selectivity_layer": dl})
    data = {"neurons": neurons, "layer_summary": [{"layer": 1}]}
    assert activation_scale(data, 1) == pytest.approx(0.2)
    assert activation_scale({"neurons": neurons[:1] + neurons[2:3]}, 1) is None  # none quieter than the median
    data["layer_summary"][0]["activation_scale"] = 0.3
    assert activation_scale(data, 1) == 0.3


def test_saved_activation_scale_is_what_layer_scaled_d_divides_by(minilm_report):
    """layer_summary[].activation_scale (saved by the scan) equals the spread recovered from the neurons quieter
    than their layer's median, on a real MiniLM scan."""
    from neurolens_lightning.report.page import activation_scale

    data = minilm_report[1]
    for row in data["layer_summary"]:
        saved = row["activation_scale"]
        recovered = activation_scale({"neurons": data["neurons"], "layer_summary": [{"layer": row["layer"]}]},
                                     row["layer"])
        assert saved is not None and saved > 0
        if recovered is not None:
            assert saved == pytest.approx(recovered, rel=1e-3)


def test_scatter_labels_every_candidate_and_marks_the_validated(outcome_reports, minilm_report):
    """Every listed candidate has a numbered label (its rank) placed without overlap; validated candidates are
    their own trace (star, the verdict in the legend)."""
    from neurolens_lightning.report.figures import scatter_figure

    for data in (outcome_reports["ranked"][1], minilm_report[1]):
        fig = scatter_figure(data)
        cands = candidates(data)
        labels = {a.name: a.text for a in fig.layout.annotations if (a.name or "").startswith("candidate-label")}
        assert labels == {f"candidate-label {n['layer']}:{n['index']}": f"<b>{n['rank']}</b>" for n in cands}
        rings = [t for t in fig.data if (t.meta or {}).get("role") == "candidate"]
        assert sum(len(t.x) for t in rings) == len(cands)
        for st in {candidate_status(n, data) for n in cands}:
            tr = [t for t in rings if t.meta["status"] == st] if "ablation_summary" in data else rings
            assert len(tr) == 1
            if st == "validated":
                assert tr[0].marker.symbol == "star-open" and tr[0].name.startswith("candidate: validated")
            elif "ablation_summary" in data:
                assert tr[0].marker.symbol == "circle-open"
    assert any(candidate_status(n, outcome_reports["ranked"][1]) == "validated"
               for n in candidates(outcome_reports["ranked"][1]))


def test_label_offsets_never_overlap_in_a_crowded_cluster():
    from neurolens_lightning.report.figures import label_offsets

    xs = [1.05, 1.12, 1.20, 1.25, 1.33, 1.30, 1.45, 1.10, 1.38, 1.28]
    ys = [0.55, 0.57, 0.56, 0.58, 0.57, 0.52, 0.40, 0.63, 0.50, 0.47]
    labels = [str(i + 1) for i in range(10)]
    offs = label_offsets(xs, ys, labels, (-2.0, 2.5), (-0.04, 1.08))
    assert len(offs) == 10
    w, h = 640.0, 400.0
    boxes = []
    for x, y, t, (dx, dy) in zip(xs, ys, labels, offs):
        u, v = (x + 2.225) / 4.95 * w, (1 - (y + 0.04) / 1.12) * h
        bw, bh = 0.62 * 12 * len(t) + 6, 16
        boxes.append((u + dx - bw / 2, v + dy - bh / 2, u + dx + bw / 2, v + dy + bh / 2))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_layer_chart_has_round_ticks(minilm_report):
    from neurolens_lightning.report.figures import layer_distribution_figure, nice_ticks

    fig = layer_distribution_figure(minilm_report[1])
    ticks = list(fig.layout.yaxis2.tickvals)
    assert is_nice([str(v) for v in ticks]) and ticks[0] == 0
    assert ticks[-1] >= max(s["top_score"] for s in minilm_report[1]["layer_summary"])
    assert nice_ticks(0.553) == [0.0, 0.2, 0.4, 0.6]


def test_group_names_are_shown_in_full(minilm_report):
    out, data = minilm_report
    html = (out / "report.html").read_text(encoding="utf-8")
    for g in data["concept_info"]["groups"]:
        assert f"title='{html_escape(g)}'>{html_escape(g)}</span>" in html
    assert "text-overflow:ellipsis" not in re.search(r"\.gname\{[^}]*\}", html).group(0)
