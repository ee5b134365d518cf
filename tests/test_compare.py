"""Cross-model comparison: depth alignment, the encoding distribution, JS divergence, the
comparison.json schema, the page, and bad input.

The pure functions are checked against hand computations on fabricated results dicts; one
end-to-end ``neurolens compare`` runs on two tiny random BERT encoders (2 and 4 layers) saved
as local model folders (no network), with ablation, and its page is rendered in headless
Chromium (skipped when Chromium is absent).
"""

from __future__ import annotations

import json
import os
import math
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from neurolens_lightning.cli import main
from neurolens_lightning.compare import (DISTRIBUTION_DEFINITION, ModelSpec, build_comparison, compare,
                                         layer_distribution, parse_model_spec, relative_depths,
                                         resample_distribution)
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.functional import js_divergence
from neurolens_lightning.report.compare_page import render_comparison, summary_sentences

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
# in CI (CI or NEUROLENS_REQUIRE_CHROMIUM set) a missing Chromium fails the rendering tests instead of skipping them
REQUIRE_CHROMIUM = any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no")
                       for k in ("CI", "NEUROLENS_REQUIRE_CHROMIUM"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not REQUIRE_CHROMIUM,
                                    reason="headless Chromium not installed (apt-get install chromium)")


def fake_results(n_layers: int, n_pos: list[int], units: int = 100, model: str = "m", concept: str = "negation",
                 modality: str = "text", top_k: int = 3) -> dict:
    """A minimal results.json dict: per-layer counts of positively selective neurons + a few neurons."""
    summ = [{"layer": l, "n_units": units, "n_significant": p + 1, "n_significant_positive": p,
             "max_selectivity": 1.0 + l} for l, p in enumerate(n_pos)]
    neurons = [{"rank": r + 1, "layer": r % n_layers, "index": r, "selectivity": 2.0 - r / 10,
                "selectivity_q": 0.01, "consistency": 0.5, "importance": 0.1, "score": 0.9 - r / 10,
                "top_examples": [{"text": f"example {r}", "positive": True, "activation": 1.0}]}
               for r in range(5)]
    return {"model": model, "model_info": {"name": model, "n_layers": n_layers, "modality": modality},
            "concept": concept, "concept_info": {"description": "d"}, "n_positive": 10, "n_negative": 10,
            "fdr_q": 0.05, "top_k": top_k, "n_neurons_scanned": n_layers * units, "layer_summary": summ,
            "neurons": neurons}


# ---------------------------------------------------------------------------- pure functions
def test_relative_depth_alignment():
    assert relative_depths(2) == [0.0, 1.0]
    assert relative_depths(4) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert relative_depths(1) == [0.0]  # a one-layer model sits at 0
    assert relative_depths(12, [0, 11]) == [0.0, 1.0]
    with pytest.raises(NeuroLensError):
        relative_depths(0)


def test_layer_distribution_is_width_normalised():
    # f = n_sig+ / n_units = [10/100, 10/50] = [0.1, 0.2] -> share = [1/3, 2/3]
    frac, share = layer_distribution([10, 10], [100, 50])
    assert frac.tolist() == pytest.approx([0.1, 0.2])
    assert share.tolist() == pytest.approx([1 / 3, 2 / 3])
    frac, share = layer_distribution([0, 0], [10, 10])
    assert share.tolist() == [0.0, 0.0]


def test_resample_onto_grid_by_hand():
    # 2 layers at depths 0, 1 with f = [0, 0.1]: f(x) = 0.1 x; grid G = 4 at x = 0, 1/3, 2/3, 1
    # -> [0, 1/30, 2/30, 3/30], normalised by 6/30 -> [0, 1/6, 2/6, 3/6]
    q = resample_distribution([0.0, 1.0], [0.0, 0.1], grid=4)
    assert q.tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    # 4 layers at 0, 1/3, 2/3, 1 lie on the G = 4 grid: the resampled values are the layer values
    q = resample_distribution(relative_depths(4), [0, 0, 0.1, 0.1], grid=4)
    assert q.tolist() == pytest.approx([0, 0, 0.5, 0.5])
    # one layer: a constant profile -> uniform
    assert resample_distribution([0.0], [0.3], grid=5).tolist() == pytest.approx([0.2] * 5)
    # no selective neuron anywhere: no distribution
    assert resample_distribution([0.0, 1.0], [0.0, 0.0], grid=4) is None
    # the same shape at two depths resolutions resamples to the same distribution
    a = resample_distribution(relative_depths(2), [0.1, 0.3], grid=21)
    b = resample_distribution(relative_depths(3), [0.1, 0.2, 0.3], grid=21)
    assert np.allclose(a, b)


def test_js_divergence_by_hand():
    # identical -> 0; disjoint supports -> 1 bit (the maximum, base 2)
    assert js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]) == pytest.approx(1.0)
    # P = [0, 1/6, 2/6, 3/6], Q = [0, 0, 1/2, 1/2], M = (P+Q)/2 = [0, 1/12, 5/12, 1/2]
    # KL(P||M) = 1/6 log2((1/6)/(1/12)) + 2/6 log2((2/6)/(5/12)) + 3/6 log2(1)
    #          = 1/6 * 1 + 1/3 * log2(4/5) = 0.1666667 - 0.1073096 = 0.0593571
    # KL(Q||M) = 1/2 log2((1/2)/(5/12)) + 1/2 log2(1) = 1/2 * log2(6/5) = 0.1315172
    # JS = (0.0593571 + 0.1315172) / 2 = 0.0954371
    expected = 0.5 * ((1 / 6) + (1 / 3) * math.log2(4 / 5)) + 0.5 * (0.5 * math.log2(6 / 5))
    assert expected == pytest.approx(0.0954371, abs=1e-6)
    assert js_divergence([0, 1 / 6, 2 / 6, 3 / 6], [0, 0, 0.5, 0.5]) == pytest.approx(expected, abs=1e-12)
    # symmetric, and unnormalised inputs are normalised
    assert js_divergence([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(NeuroLensError):
        js_divergence([0, 0], [1, 0])


def test_js_reference_points_quoted_in_the_docs():
    """The scale given on the page and in the README (21-point grid)."""
    x = np.linspace(0, 1, 21)
    bump = lambda c: np.exp(-(x - c) ** 2 / (2 * 0.15 ** 2))  # noqa: E731
    assert js_divergence(x + 1e-12, np.ones(21)) == pytest.approx(0.09, abs=0.005)        # ramp vs flat
    assert js_divergence(bump(0.425), bump(0.575)) == pytest.approx(0.16, abs=0.005)     # one sigma apart
    assert js_divergence(1 - x + 1e-12, x + 1e-12) == pytest.approx(0.32, abs=0.005)     # opposite ramps
    assert js_divergence(bump(0.25), bump(0.75)) == pytest.approx(0.82, abs=0.005)       # 0.5 apart


def test_comparison_of_2_and_4_layer_models_by_hand():
    # model A: 2 layers, 0 and 10 of 100 units selective; model B: 4 layers, 0, 0, 10, 10 of 100
    # on the G = 4 grid: P = [0, 1/6, 2/6, 3/6], Q = [0, 0, 1/2, 1/2] (see above): JS = 0.0954371
    a, b = fake_results(2, [0, 10], model="a"), fake_results(4, [0, 0, 10, 10], model="b")
    comp = build_comparison([a, b], ["A", "B"], grid=4)
    ma, mb = comp["models"]
    assert [l["rel_depth"] for l in ma["layers"]] == [0.0, 1.0]
    assert [l["rel_depth"] for l in mb["layers"]] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-6)
    assert [l["share"] for l in ma["layers"]] == [0.0, 1.0]
    assert [l["share"] for l in mb["layers"]] == [0.0, 0.0, 0.5, 0.5]
    assert ma["peak_rel_depth"] == 1.0 and ma["peak_layer"] == 1
    assert mb["peak_rel_depth"] == pytest.approx(2 / 3, abs=1e-6)  # tie between layers 2 and 3: the shallowest
    assert mb["mean_rel_depth"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 1, abs=1e-6)
    assert ma["grid_distribution"] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6], abs=1e-6)
    js = 0.5 * ((1 / 6) + (1 / 3) * math.log2(4 / 5)) + 0.5 * (0.5 * math.log2(6 / 5))
    m = comp["divergence"]["matrix"]
    assert m[0][1] == m[1][0] == pytest.approx(js, abs=1e-6)
    assert m[0][0] == m[1][1] == 0.0
    assert comp["divergence"]["pairs"] == [{"a": "A", "b": "B", "js": m[0][1]}]
    assert "n_validated" not in ma  # no ablation ran
    # identical profiles at different depth resolutions -> 0; disjoint -> 1
    same = build_comparison([fake_results(2, [10, 30]), fake_results(3, [10, 20, 30])], ["x", "y"])
    assert same["divergence"]["matrix"][0][1] == pytest.approx(0.0, abs=1e-6)
    # 4 layers each: only layer 0 (f(x) = 0.1 (1 - 3x) on [0, 1/3]) vs only layer 3 (on [2/3, 1]): no overlap
    disj = build_comparison([fake_results(4, [10, 0, 0, 0]), fake_results(4, [0, 0, 0, 10])], ["x", "y"])
    assert disj["divergence"]["matrix"][0][1] == pytest.approx(1.0)


def test_model_without_selective_neurons_has_no_distribution():
    comp = build_comparison([fake_results(2, [0, 0]), fake_results(2, [3, 1])], ["none", "some"])
    none, some = comp["models"]
    assert none["grid_distribution"] is None and none["peak_rel_depth"] is None
    assert comp["divergence"]["matrix"][0][1] is None and comp["divergence"]["matrix"][1][1] == 0.0
    assert "undefined" in " ".join(summary_sentences(comp))
    json.dumps(comp, allow_nan=False)


def test_build_comparison_rejects_bad_inputs():
    with pytest.raises(NeuroLensError, match="at least two"):
        build_comparison([fake_results(2, [1, 1])])
    with pytest.raises(NeuroLensError, match="same concept"):
        build_comparison([fake_results(2, [1, 1]), fake_results(2, [1, 1], concept="royalty")], ["a", "b"])
    with pytest.raises(NeuroLensError, match="modality"):
        build_comparison([fake_results(2, [1, 1]), fake_results(2, [1, 1], modality="image")], ["a", "b"])
    with pytest.raises(NeuroLensError, match="unique"):
        build_comparison([fake_results(2, [1, 1]), fake_results(2, [1, 1])], ["a", "a"])


def test_model_specs():
    s = parse_model_spec("minilm:random")
    assert (s.label, s.model, s.weights) == ("minilm:random", "minilm", "random")
    assert parse_model_spec("minilm").weights == "pretrained"
    assert parse_model_spec("minilm", default_weights="random").label == "minilm:random"
    assert parse_model_spec("minilm:pretrained", default_weights="random").label == "minilm"
    with pytest.raises(NeuroLensError, match="unknown weights"):
        parse_model_spec("minilm:randm")


def test_page_escapes_every_user_string():
    evil = "<script>alert(1)</script>"
    a = fake_results(2, [1, 3], concept=f"neg {evil}")
    b = fake_results(3, [2, 2, 2], concept=f"neg {evil}")
    a["neurons"][0]["top_examples"][0]["text"] = f"He said {evil} loudly"
    a["concept_info"]["description"] = "desc <img src=x onerror=alert(2)>"
    comp = build_comparison([a, b], [f"model <b>{evil}</b>", "plain & simple"])
    page = render_comparison(comp)
    body = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S | re.I)
    assert "<script>alert" not in body and "<img" not in body and "<b><script" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "plain &amp; simple" in body
    # inside the plotly JSON '<' is written as \u003c, so no data can close the script tag
    assert "</script>alert" not in page and page.count("<script") == page.count("</script>")


# ---------------------------------------------------------------------------- end to end (tiny models)
@pytest.fixture(scope="module")
def tiny_model_dirs(tmp_path_factory, bert_tokenizer):
    """Two random-init BERT encoders (2 and 4 layers) saved as local Hugging Face model folders."""
    from helpers import tiny_bert_encoder

    root = tmp_path_factory.mktemp("tiny-models")
    dirs = []
    for n in (2, 4):
        d = root / f"tiny{n}"
        tiny_bert_encoder(bert_tokenizer, n_layer=n, seed=n).save_pretrained(d)
        bert_tokenizer.save_pretrained(d)
        dirs.append(d)
    return dirs


@pytest.fixture(scope="module")
def cli_comparison(tiny_model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "two-vs-four"
    d2, d4 = tiny_model_dirs
    rc = main(["compare", "--models", str(d2), str(d4), "--concept", "negation", "--out", str(out), "--top-k", "3",
               "--ablate", "--null-samples", "5", "--device", "cpu", "grid=13"])
    assert rc == 0
    return out, json.loads((out / "comparison.json").read_text(encoding="utf-8"))


def test_cli_comparison_schema_and_alignment(cli_comparison):
    out, comp = cli_comparison
    assert comp["schema_version"] == 1 and comp["concept"] == "negation" and comp["modality"] == "text"
    assert comp["distribution"]["definition"] == DISTRIBUTION_DEFINITION
    assert len(comp["distribution"]["grid"]) == 13 and comp["settings"]["grid"] == 13
    m2, m4 = comp["models"]
    assert (m2["n_layers"], m4["n_layers"]) == (2, 4)
    assert [l["rel_depth"] for l in m2["layers"]] == [0.0, 1.0]
    assert [l["rel_depth"] for l in m4["layers"]] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-6)
    for m in comp["models"]:
        assert set(m) >= {"name", "n_layers", "layers", "peak_rel_depth", "top_neurons", "n_validated",
                          "grid_distribution", "scan_dir", "n_significant", "n_significant_positive"}
        for l in m["layers"]:
            assert set(l) >= {"layer", "rel_depth", "n_significant", "share"}
        # only candidates (FDR-significant, positively selective) are listed; random tiny models may have few
        assert len(m["top_neurons"]) == min(3, m["n_candidates"])
        for n in m["top_neurons"]:
            assert n["role"] == "candidate"
            assert set(n) >= {"rank", "layer", "index", "rel_depth", "selectivity", "consistency", "importance",
                              "score", "ablation"}
            assert n["rel_depth"] == pytest.approx(n["layer"] / (m["n_layers"] - 1), abs=1e-6)
        # each model's own scan folder
        scan = json.loads((out / m["scan_dir"] / "results.json").read_text())
        assert scan["model_info"]["n_layers"] == m["n_layers"] and (out / m["scan_dir"] / "report.html").is_file()
        assert m["n_significant_positive"] == sum(s["n_significant_positive"] for s in scan["layer_summary"])
        # the ablation counts are the scan's own per-neuron verdicts (here 0 of 0 and 0 of 3)
        ablated = [n for n in scan["neurons"] if isinstance(n.get("ablation"), dict)]
        assert m["n_ablated"] == len(ablated)
        assert m["n_validated"] == sum(bool(n["ablation"]["validated"]) for n in ablated if n["role"] == "candidate")
        # share and peak recomputed from the scan's layer counts (f = n_sig+ / n_units, share = f / sum f)
        frac = _scan_fractions(scan)
        if frac.sum() > 0:
            assert [l["share"] for l in m["layers"]] == pytest.approx((frac / frac.sum()).tolist(), abs=1e-5)
            peak = int(np.flatnonzero(frac == frac.max())[0])  # ties: the shallowest layer
            assert m["peak_rel_depth"] == pytest.approx(peak / (m["n_layers"] - 1), abs=1e-6)
        else:
            assert m["peak_rel_depth"] is None and m["grid_distribution"] is None
    # the divergence: scipy's Jensen-Shannon of the scans' profiles interpolated onto the 13-point grid
    # (undefined when a model has no selective neuron: with these tiny random models the 2-layer one has none)
    scans = [json.loads((out / m["scan_dir"] / "results.json").read_text()) for m in (m2, m4)]
    expected = _scan_js(*scans, grid=13)
    got = comp["divergence"]["matrix"]
    if expected is None:
        assert got[0][1] is None and got[1][0] is None and comp["divergence"]["pairs"][0]["js"] is None
    else:
        assert got[0][1] == got[1][0] == pytest.approx(expected, abs=1e-5)
    assert not list(out.parent.glob(".*tmp*")), "temporary folders left behind"


def test_cli_comparison_divergence_is_computed_when_both_models_have_selective_neurons(tiny_model_dirs, tmp_path):
    """The numeric branch of the divergence check: at fdr_q = 1 every positively selective neuron counts, so both
    tiny models have a depth profile and the JS divergence must be a number equal to scipy's on the scans'
    profiles (the fixture above, at q = 0.05, only reaches the undefined branch: its 2-layer model has none)."""
    out = tmp_path / "cmp-q1"
    d2, d4 = tiny_model_dirs
    rc = main(["compare", "--models", str(d2), str(d4), "--concept", "negation", "--out", str(out), "--top-k", "3",
               "--device", "cpu", "grid=13", "fdr_q=1.0"])
    assert rc == 0
    comp = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    scans = [json.loads((out / m["scan_dir"] / "results.json").read_text()) for m in comp["models"]]
    expected = _scan_js(*scans, grid=13)
    assert expected is not None and 0.0 <= expected <= 1.0
    got = comp["divergence"]["matrix"]
    assert got[0][1] == got[1][0] == pytest.approx(expected, abs=1e-5)
    assert comp["divergence"]["pairs"][0]["js"] == pytest.approx(expected, abs=1e-5)


def _scan_fractions(scan: dict) -> np.ndarray:
    """f = n_significant_positive / n_units per scanned layer, in layer order, from a results.json dict."""
    summ = sorted(scan["layer_summary"], key=lambda s: s["layer"])
    return np.array([s["n_significant_positive"] / s["n_units"] for s in summ], dtype=np.float64)


def _scan_js(a: dict, b: dict, grid: int) -> float | None:
    """JS divergence (bits) of two scans' depth profiles, computed without neurolens_lightning.compare."""
    from scipy.spatial.distance import jensenshannon

    dists = []
    for scan in (a, b):
        n_layers = scan["model_info"]["n_layers"]
        depth = [s["layer"] / (n_layers - 1) for s in sorted(scan["layer_summary"], key=lambda s: s["layer"])]
        vals = np.interp(np.linspace(0, 1, grid), depth, _scan_fractions(scan))
        if vals.sum() == 0:
            return None
        dists.append(vals / vals.sum())
    return float(jensenshannon(dists[0], dists[1], base=2) ** 2)


def test_cli_comparison_page_content(cli_comparison):
    import plotly.offline

    out, comp = cli_comparison
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count(plotly.offline.get_plotlyjs()[:200]) == 1, "plotly.js must be inlined exactly once"
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page
    assert 'id="nl-fig-depth"' in page and "Divergence of the depth profiles" in page
    for m in comp["models"]:
        assert m["scan_dir"] + "/report.html" in page
        for top in m["top_neurons"][:1]:
            assert f"{top['layer']}:{top['index']}" in page
    js = comp["divergence"]["matrix"][0][1]
    if js is not None:
        from neurolens_lightning.report.html import fmt_number as _fmt

        assert _fmt(js) in page


@needs_chromium
def test_cli_comparison_page_renders(cli_comparison):
    out, _ = cli_comparison
    with tempfile.TemporaryDirectory(prefix="nl-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", (out / "report.html").resolve().as_uri()],
            capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l and
              re.search(r"Uncaught|TypeError|ReferenceError|SyntaxError|RangeError", l)]
    assert not errors, errors
    dom = re.sub(r"<script\b[^>]*>.*?</script>", "", proc.stdout, flags=re.S | re.I)
    start = dom.find('id="nl-fig-depth"')
    frag = dom[start:dom.find("<figcaption", start)]
    assert 'class="main-svg"' in frag, "plotly did not draw"
    assert len(re.findall(r'class="(?:[^"]* )?js-line[ "]', frag)) >= 4  # 2 models x 2 panels
    assert re.search(r'class="(?:[^"]* )?point[ "]', frag)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, message", [
    (["--models", "minilm", "no-such-model-xyz"], "unknown model 'no-such-model-xyz'"),
    (["--models", "minilm", "resnet18:random"], "share a modality"),
    (["--models", "minilm", "minilm:randm"], "unknown weights"),
    (["--models", "minilm"], "at least two models"),
    (["--models", "minilm", "minilm:random", "--concept", "red"], "image probe"),
    (["--models", "minilm", "minilm:random", "--concept", "no_such_concept"], "no_such_concept"),
    (["--models", "minilm", "minilm:random", "grid=1"], "grid"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    rc = main(["compare", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and err.startswith("neurolens: "), err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_api_rejects_mixed_modalities_before_loading(tmp_path, bert_tokenizer):
    from helpers import tiny_bert_encoder
    from neurolens_lightning.compare import _check_modalities
    from neurolens_lightning.concepts import load_concept

    with pytest.raises(NeuroLensError, match="share a modality"):
        _check_modalities(["a", "b"], ["text", "image"], load_concept("negation"))
    with pytest.raises(NeuroLensError, match="at least two"):
        compare([ModelSpec("one", tiny_bert_encoder(bert_tokenizer), tokenizer=bert_tokenizer)], "negation",
                out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
