"""Steering (DESIGN §7): the verdict against random neurons, the planted neurons, hygiene of ``steer``, the page,
``--from``.

The planted tiny GPT-2 of ``helpers.planted_gpt2`` (see test_ground_truth.py) has PLANTED (layer 0,
unit 7), which writes the " throne" direction when a concept word is present, so scaling it up
raises log p(" throne") on the concept tasks; MUTE (unit 13) reads exactly like PLANTED but writes
nothing, so scaling it can change nothing. SMALL (built in :func:`small_effect_model`) fires the same
on every input and writes a little onto " throne": it moves y smoothly and in the same direction on
every input (Page's trend test calls it "monotonic"), but no more than random neurons do.
"""

from __future__ import annotations

import html
import json
import random
import re

import numpy as np
import pytest
import torch
from helpers import (CONCEPT, DECOY, NEGATIVE, PLANTED, make_word_tokenizer, planted_gpt2, planted_probe,
                     steered_confidence)
from test_report import console_errors, needs_chromium, render, strip_scripts

from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import count_hooks
from neurolens_lightning.steering import (dose_response, draw_null_sets, monotonic_test, neurons_from_results,
                                          null_sets_design, null_test, scan_split, steer)

MUTE = 13
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


@pytest.fixture(scope="module")
def model(tok):
    return planted_gpt2(tok, mute=MUTE)


SMALL, SMALL_W = 40, 0.0005


@pytest.fixture(scope="module")
def doses(model, tok):
    return {n: dose_response(model, planted_probe("gpt2"), [(0, n)], tokenizer=tok, n_boot=200).to_dict()
            for n in (PLANTED, MUTE)}


def small_effect_model(tok, w: float = SMALL_W):
    """The planted GPT-2 plus SMALL: a layer-0 unit with a constant input (bias only, GELU(2) ~ 1.95 at every
    position of every input: not concept-selective) and a small output weight ``w`` onto the " throne" direction."""
    model = planted_gpt2(tok, mute=MUTE)
    mlp = model.transformer.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, SMALL] = 0
        mlp.c_fc.bias[SMALL] = 2.0
        mlp.c_proj.weight[SMALL, :] = 0
        mlp.c_proj.weight[SMALL, 2] = w
    return model


def _logits(model, tok):
    ids = tok(["the seat of the king", "a farmer sat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_planted_neuron_is_beyond_the_null_mute_is_not(doses):
    causal, mute = doses[PLANTED], doses[MUTE]
    assert causal["scales"] == [0.0, 0.5, 1.0, 2.0, 4.0]
    y = causal["concept_inputs"]["mean_y"]
    assert all(a < b for a, b in zip(y, y[1:])), y                 # strictly increasing at every step
    t = causal["test"]
    # the verdict: beyond every one of the 199 random layer-0 neurons, at the floor p = 1/200
    assert t["beyond_null"] is True and t["p_null"] == pytest.approx(1 / 200) and t["null_n"] == 199
    assert t["null_beaten"] == 199 and t["null_exceedances"] == 0 and t["direction"] == 1
    assert t["effect"] == pytest.approx(y[4] - y[0]) and t["effect"] > 10      # tens of nats: " throne" written
    assert t["effect_ci_low"] > t["null_effect_quantiles"]["q95"]
    assert t["wrong_direction_share"] == 0.0
    assert t["p_null_specific"] <= 0.05 and abs(t["control_effect"]) < 0.01 * t["effect"]
    assert t["null_design"] == {"size": 1, "per_layer": {"0": 1}} and len(t["null_effects"]) == 199
    # the trend tests stay, as description: the planted neuron's slopes are steeper on concept inputs
    assert t["trend_direction"] == "increasing" and t["monotonic"] is True and t["mw_side"] == "concept > control"
    assert "verdict = beyond_null" in t["definition"] and "Descriptive only" in t["definition"]
    m = mute["test"]
    assert max(mute["concept_inputs"]["mean_y"]) - min(mute["concept_inputs"]["mean_y"]) < 1e-4
    assert m["effect"] == 0.0 and m["beyond_null"] is False and m["p_null"] > 0.05
    assert m["null_n"] < 199  # sequential: it stops once 10 random neurons reach it
    blk = causal["concept_inputs"]
    assert all(lo <= v <= hi for lo, v, hi in zip(blk["ci_low"], blk["mean_y"], blk["ci_high"]))


def test_the_null_is_one_sided_in_the_predicted_direction(model, tok):
    """Predicting that turning PLANTED up *lowers* y (direction -1) is wrong: its huge rise is no evidence for
    that claim. A two-sided null, or one that ignored ``direction``, would call it beyond."""
    t = dose_response(model, planted_probe("gpt2"), [(0, PLANTED)], tokenizer=tok, n_boot=50, n_examples=0,
                      direction=-1).to_dict()["test"]
    assert t["direction"] == -1 and t["effect"] < -10 and t["effect_raw_mean"] > 10
    assert t["beyond_null"] is False and t["p_null"] > 0.5
    assert t["wrong_direction_share"] == 1.0  # y rose on every concept input where a fall was predicted


def test_small_effect_non_concept_neuron_is_not_beyond_the_null(tok):
    """SMALL moves y a little, in the predicted direction, on every input: the old Page rule calls it monotonic
    (and its effect CI excludes 0), the random-neuron null does not call it beyond."""
    d = dose_response(small_effect_model(tok), planted_probe("gpt2"), [(0, SMALL)], tokenizer=tok, n_boot=200,
                      n_examples=0).to_dict()
    t = d["test"]
    assert t["effect"] > 1e-3 and t["effect_ci_low"] > 0        # a real, non-zero effect on every concept input
    assert t["wrong_direction_share"] == 0.0 and t["control_effect"] > 0
    assert t["monotonic"] is True and t["p_trend"] < 0.05       # what the old verdict said
    assert t["beyond_null"] is False and t["p_null"] > 0.05     # what the null says
    assert t["p_null_specific"] > 0.5                           # and it is no more on concept than on control


def test_random_single_neurons_are_calibrated_and_the_page_rule_is_not(model, tok):
    """30 random single neurons of the planted model (layer 0 outside the planted units, and layer 1): the share
    beyond the null stays within alpha + a binomial margin; the old "monotonic" rule passes most of them."""
    from scipy.stats import binom

    rng = random.Random(0)
    pool = [(0, u) for u in range(128) if u not in (PLANTED, DECOY, MUTE)] + [(1, u) for u in range(128)]
    picks = rng.sample(pool, 30)
    tests = [dose_response(model, planted_probe("gpt2"), [n], tokenizer=tok, n_boot=20, n_examples=0
                           ).to_dict()["test"] for n in picks]
    beyond = sum(t["beyond_null"] for t in tests)
    monotonic = sum(t["monotonic"] for t in tests)
    margin = int(binom.ppf(0.999, len(tests), 0.05))  # 6 of 30: P(more) < 0.001 under a calibrated null
    assert beyond <= margin, [(n, t["p_null"]) for n, t in zip(picks, tests) if t["beyond_null"]]
    assert monotonic >= 0.8 * len(tests), monotonic
    assert all(0 < t["p_null"] <= 1 and t["null_n"] >= 10 for t in tests)


def test_null_sets_have_the_same_size_and_layers(model, tok):
    counts, pools = null_sets_design([128, 128], [(0, 7), (1, 3), (0, 9)])
    assert counts == {0: 2, 1: 1} and 7 not in pools[0] and 9 not in pools[0] and 3 not in pools[1]
    sets = draw_null_sets(counts, pools, 50, random.Random(5))
    assert sets == draw_null_sets(counts, pools, 50, random.Random(5))        # seeded: deterministic
    assert sets != draw_null_sets(counts, pools, 50, random.Random(6))
    for st in sets:
        assert sorted(l for l, _ in st) == [0, 0, 1] and len(set(st)) == 3
        assert not set(st) & {(0, 7), (1, 3), (0, 9)}
    with pytest.raises(NeuroLensError, match="too few"):
        draw_null_sets({0: 3}, {0: [1, 2]}, 1, random.Random(0))
    d = dose_response(model, planted_probe("gpt2"), [(0, PLANTED), (1, 3)], tokenizer=tok, n_boot=20,
                      n_examples=0, null_sets=39).to_dict()
    assert d["test"]["null_design"] == {"size": 2, "per_layer": {"0": 1, "1": 1}}
    assert d["test"]["null_sets_max"] == 39 and d["test"]["null_n"] <= 39 and d["test"]["p_null"] >= 1 / 40
    # steered identically: the first null sets (drawn again from the same seed), steered as the set under test,
    # have exactly the effects recorded for them in the null
    counts, pools = null_sets_design([128, 128], [(0, PLANTED), (1, 3)])
    for k, st in enumerate(draw_null_sets(counts, pools, 3, random.Random(0))):
        own = dose_response(model, planted_probe("gpt2"), st, tokenizer=tok, n_boot=20, n_examples=0,
                            null_sets=1).to_dict()["test"]["effect"]
        assert own == pytest.approx(d["test"]["null_effects"][k], abs=1e-5), (k, st)


def test_null_test_by_hand():
    e_con, e_ctl = np.array([1.0, 2.0, -0.5, 3.0]), np.array([0.1, 0.2])
    null = [0.1 * k for k in range(19)]  # 0 .. 1.8: T = 1.375 beats 14, 5 reach it
    t = null_test(e_con, e_ctl, null, [0.0] * 19, n_boot=100)
    assert t["effect"] == pytest.approx(1.375) and t["null_exceedances"] == 5 and t["null_n"] == 19
    assert t["p_null"] == pytest.approx(6 / 20) and t["beyond_null"] is False and t["null_beaten"] == 14
    assert t["wrong_direction_share"] == 0.25 and t["wrong_direction_n"] == 1
    assert t["control_effect"] == pytest.approx(0.15) and t["p_null_specific"] == pytest.approx(1 / 20)
    down = null_test(e_con, e_ctl, [-x for x in null], [0.0] * 19, direction=-1, n_boot=100)
    assert down["effect"] == pytest.approx(-1.375) and down["wrong_direction_share"] == 0.75
    assert down["p_null"] > 0.5  # the same data, claimed as a fall: one-sided, no evidence


def test_replicated_steering_matches_steer(model, tok):
    """Several steerings in one replicated forward (re-entering at the first steered block) give what ``steer``
    gives, replica by replica: no factor leaks between replicas."""
    from neurolens_lightning.ablation import ablation_inputs
    from neurolens_lightning.concepts import load_concept
    from neurolens_lightning.scanner import ConceptScanner
    from neurolens_lightning.steering.replicas import _ReplicaSteering

    adapter = adapter_for(model, tok)
    rank, held = load_concept(planted_probe("gpt2")).split(0.5, seed=0)
    scanner = ConceptScanner(adapter, rank, batch_size=16)
    chunks = ablation_inputs(adapter, scanner, held, 16, 0)
    a, b = [(0, PLANTED), (1, 5)], [(0, 3), (1, 9)]
    reps = [(a, 4.0), (b, 0.0), (a, 0.5), (b, 2.0), (a, 1.0)]
    with torch.no_grad():
        got = _ReplicaSteering(adapter, scanner, chunks, [0, 1], replicas=3).run(reps)
        for r, (neurons, s) in enumerate(reps):
            for kind in ("concept", "control"):
                want = steered_confidence(adapter, scanner, chunks, kind, neurons, s)
                torch.testing.assert_close(torch.from_numpy(got[kind][r]), want, atol=1e-4, rtol=1e-5)
    assert count_hooks(model) == 0


def test_generated_text_changes_with_the_scale(doses):
    ex = doses[PLANTED]["examples"][0]
    by_label = {o["label"]: o for o in ex["outputs"]}
    off, on = by_label["×0"], by_label["×4"]
    assert off["continuation"] != on["continuation"], ex
    assert "throne" in on["continuation"] and "throne" not in off["continuation"]
    assert on["target_logprob"] > off["target_logprob"]
    assert [t["token"] for t in on["top_next"]][0].strip() == "throne"
    mute_ex = doses[MUTE]["examples"][0]
    assert len({o["continuation"] for o in mute_ex["outputs"]}) == 1  # nothing changes


def test_steer_is_clean_even_when_the_body_raises(model, tok):
    before = _logits(model, tok)
    n0 = count_hooks(model)
    with steer(model, [(0, PLANTED)], scale=4.0) as m:
        assert m is model and count_hooks(model) == n0 + 1
        steered = _logits(model, tok)
    assert not torch.equal(steered, before)
    assert torch.equal(_logits(model, tok), before) and count_hooks(model) == n0
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, [(0, PLANTED), (1, 3)], value=0.5):
            _logits(model, tok)
            raise RuntimeError("boom")
    assert torch.equal(_logits(model, tok), before) and count_hooks(model) == n0


def test_steer_scale_and_value_by_hand(model, tok):
    adapter = adapter_for(model, tok)
    site = adapter.sites[0].module

    def acts():
        """The site's output as the rest of the network sees it (a hook registered after steer's)."""
        seen = {}
        h = site.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out.detach().clone()))
        try:
            _logits(model, tok)
        finally:
            h.remove()
        return seen["a"]

    clean = acts()
    others = [u for u in range(clean.shape[-1]) if u != PLANTED]
    with steer(model, [(0, PLANTED)], scale=2.0):
        a = acts()
    assert torch.allclose(a[..., PLANTED], 2 * clean[..., PLANTED]) and not torch.equal(a, clean)
    assert torch.equal(a[..., others], clean[..., others])
    with steer(model, [(0, PLANTED), (0, 3)], value=torch.tensor([1.5, -2.0])):
        a = acts()
    assert (a[..., PLANTED] == 1.5).all() and (a[..., 3] == -2.0).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(neurons=[(5, 0)], scale=2.0), r"layer 5 out of range"),
    (dict(neurons=[(0, 10 ** 6)], scale=2.0), r"index out of range.*128 units"),
    (dict(neurons=[(0, 1)]), r"exactly one of scale= .* or value="),
    (dict(neurons=[(0, 1)], scale=1.0, value=0.0), r"exactly one of"),
    (dict(neurons=[], scale=1.0), r"at least one neuron"),
    (dict(neurons=[(0, 1), (0, 2)], value=[1.0, 2.0, 3.0]), r"3 entries for 2 neurons"),
])
def test_bad_steering_arguments(model, kwargs, match):
    with pytest.raises(NeuroLensError, match=match):
        with steer(model, **kwargs):
            pass
    assert count_hooks(model) == 0


def test_monotonic_test_by_hand():
    scales = [0, 1, 2]
    rising = np.array([[0.0, 0.1, 0.0, 0.2], [1.0, 1.1, 0.9, 1.3], [2.0, 2.5, 1.9, 2.2]])
    t = monotonic_test(rising, np.zeros((3, 4)), scales)
    assert t["trend_direction"] == "increasing" and t["slope_mean"] == pytest.approx(np.mean([1.0, 1.2, 0.95, 1.0]))
    assert t["p_trend"] < 0.05 and t["monotonic"] is True and t["mw_side"] == "concept > control"
    assert monotonic_test(-rising, np.zeros((3, 4)), scales)["mw_side"] == "control > concept"
    flat = np.ones((3, 4))
    assert monotonic_test(flat, None, scales)["monotonic"] is False
    mixed = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 2.0, 0.0]])
    assert monotonic_test(mixed, None, scales)["p_trend"] > 0.5


def test_steering_page_and_json(doses, tmp_path):
    from neurolens_lightning.report.html import fmt_number as _fmt
    from neurolens_lightning.steering import SteeringResult

    out = SteeringResult(doses[PLANTED]).save(tmp_path / "steer")
    data = json.loads((out / "steering.json").read_text())
    assert {"scales", "neurons", "concept_inputs", "control_inputs", "examples", "test", "inputs", "seed",
            "holdout"} <= set(data)
    assert {"beyond_null", "p_null", "null_n", "null_effect_quantiles", "effect", "effect_ci_low", "effect_ci_high",
            "direction", "wrong_direction_share", "p_null_specific", "control_effect", "mw_side", "monotonic",
            "p_trend", "p_specific", "definition"} <= set(data["test"])
    assert data["inputs"] == "heldout" and data["seed"] == 0 and data["holdout"] == 0.5
    assert "held-out split" in data["split"] and "seed 0, holdout 0.5" in data["split"]
    page = (out / "steering.html").read_text()
    assert "Beyond random neurons" in page and html.escape(data["y"]) in page
    assert "monotonic dose-response" not in page and "A concept neuron" not in page
    for v in data["concept_inputs"]["mean_y"] + [data["test"]["p_null"], data["test"]["p_null_specific"]]:
        assert _fmt(v) in page  # every mean and p is on the page, from steering.json
    assert not list(tmp_path.glob(".*tmp*"))


def test_steering_page_escapes_user_strings(doses):
    from neurolens_lightning.report.steering_page import render_steering_report

    data = json.loads(json.dumps(doses[MUTE]))
    data.update(concept="evil <b>x</b>", model="m<script>alert(1)</script>", y="y & <i>z</i>")
    data["labels"][0] = "<img src=x onerror=alert(2)>"
    page = render_steering_report(data, plotlyjs="cdn")
    for raw in ("<b>x</b>", "<script>alert(1)", "<i>z</i>", "<img src=x"):
        assert raw not in page, raw
    assert "evil &lt;b&gt;x&lt;/b&gt;" in page and "y &amp; &lt;i&gt;z&lt;/i&gt;" in page


def _verdict_text(dom: str) -> str:
    m = re.search(r"<p class=\"verdict [^\"]*\" id=\"verdict\">(.*?)</p>", strip_scripts(dom), flags=re.S)
    assert m, "no verdict paragraph on the rendered page"
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", m.group(1)))).strip()


def _page_text(dom: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", strip_scripts(dom))))


@needs_chromium
def test_steering_page_renders_the_verdict(doses, tmp_path):
    """Both verdicts, read back from the page as Chromium renders it: words and numbers from steering.json."""
    from neurolens_lightning.report.html import fmt_number as _fmt
    from neurolens_lightning.steering import SteeringResult

    out = SteeringResult(doses[PLANTED]).save(tmp_path / "beyond")
    dom, log, _ = render(out / "steering.html")
    assert not console_errors(log), console_errors(log)
    body = strip_scripts(dom)
    assert 'class="main-svg"' in body and re.search(r'class="(?:[^"]* )?js-line[ "]', body)
    assert 'id="nl-fig-null"' in body  # the null histogram is drawn
    t = doses[PLANTED]["test"]
    v = _verdict_text(dom)
    assert v.startswith("Beyond random neurons: turning this neuron up (×0 → ×4) raises y on concept inputs more "
                        "than 199 of 199 random sets of 1 neuron from the same layers"), v
    assert f"p_null = {_fmt(t['p_null'])}, one-sided" in v
    text = _page_text(dom)
    assert "On 0% of the concept inputs (0 of 4) y moved the wrong way" in text
    assert "Mann–Whitney, two-sided" in text and "the slopes are larger on concept inputs" in text
    assert "Descriptive only, not a verdict" in text

    out = SteeringResult(doses[MUTE]).save(tmp_path / "not")
    dom, log, _ = render(out / "steering.html")
    assert not console_errors(log), console_errors(log)
    m = doses[MUTE]["test"]
    v = _verdict_text(dom)
    assert v.startswith("Not beyond random neurons: turning this neuron up (×0 → ×4) leaves y on concept inputs "
                        f"unchanged; the predicted rise beats only {m['null_beaten']} of {m['null_n']} random sets "
                        "of 1 neuron from the same layers"), v
    assert f"p_null = {_fmt(m['p_null'])}, one-sided" in v
    text = _page_text(dom)
    assert "concept neuron" not in text.lower() and "Beyond random neurons" not in text
    assert "y moved the wrong way" in text and "the slopes are larger on neither side" in text


def test_neurons_from_results(tmp_path):
    rec = lambda l, i, **ab: {"layer": l, "index": i, "role": "candidate", "ablation": ab or None}  # noqa: E731
    data = {"top_k": 2, "neurons": [rec(0, 1, validated=True, direction="drop"), rec(0, 2, validated=False),
                                    rec(1, 3, validated=True, direction="rise"), rec(1, 4)]}
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert neurons_from_results(tmp_path)[0] == [(0, 1)]
    assert neurons_from_results(tmp_path, which="suppressors")[0] == [(1, 3)]
    assert neurons_from_results(tmp_path / "results.json", which="candidates")[0] == [(0, 1), (0, 2)]
    assert scan_split(data) == {"seed": 0, "holdout": 0.5, "ablated": True, "recorded": False}
    data["settings"] = {"seed": 7, "holdout": 0.3, "ablate": True}
    assert scan_split(data) == {"seed": 7, "holdout": 0.3, "ablated": True, "recorded": True}
    data["neurons"] = [rec(0, 2, validated=False)]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(NeuroLensError, match="validated no neuron"):
        neurons_from_results(tmp_path)
    with pytest.raises(NeuroLensError, match="no suppressor"):
        neurons_from_results(tmp_path, which="suppressors")
    with pytest.raises(NeuroLensError, match="cannot read a results.json"):
        neurons_from_results(tmp_path / "missing.json")


def test_ranking_inputs_are_disjoint_from_the_held_out_split(model, tok):
    from neurolens_lightning.concepts import load_concept

    rank, held = load_concept(planted_probe("gpt2")).split(0.5, seed=3)
    d = dose_response(model, planted_probe("gpt2"), [(0, PLANTED)], tokenizer=tok, n_boot=20, n_examples=8,
                      seed=3, inputs="ranking", null_sets=19).to_dict()
    assert (d["inputs"], d["seed"], d["holdout"]) == ("ranking", 3, 0.5)
    assert "ranking split" in d["split"] and "disjoint from" in d["split"] and "seed 3" in d["split"]
    assert d["concept_inputs"]["n"] == len(rank.tasks) and d["control_inputs"]["n"] == len(rank.negative)
    steered = {ex["input"]["prompt"] for ex in d["examples"]}
    assert steered == {t.prompt for t in rank.tasks} and not steered & {t.prompt for t in held.tasks}
    with pytest.raises(NeuroLensError, match="'heldout' or 'ranking'"):
        dose_response(model, planted_probe("gpt2"), [(0, PLANTED)], tokenizer=tok, inputs="validation")


def test_cli_steer_from_honours_the_scan_split(doses, tmp_path, monkeypatch, capsys):
    """``--from``: the scan's recorded seed and holdout, its ranking split when it ablated, direction from
    --which (explicit flags win)."""
    import neurolens_lightning.steering as st
    from neurolens_lightning.cli import main

    calls = []

    def fake(model, concept, neurons, **kw):
        calls.append({"model": model, "concept": concept, "neurons": neurons, **kw})
        return st.SteeringResult(json.loads(json.dumps(doses[PLANTED])))

    monkeypatch.setattr(st, "dose_response", fake)
    rec = lambda l, i, **ab: {"layer": l, "index": i, "role": "candidate", "ablation": ab}  # noqa: E731
    scan = {"model": "minilm", "concept": "royalty", "settings": {"seed": 4, "holdout": 0.25, "ablate": True},
            "neurons": [rec(2, 5, validated=True, direction="drop"), rec(3, 6, validated=True, direction="rise")]}
    (tmp_path / "results.json").write_text(json.dumps(scan))
    assert main(["steer", "--from", str(tmp_path), "--out", str(tmp_path / "a")]) == 0
    c = calls[-1]
    assert (c["seed"], c["holdout"], c["inputs"], c["direction"]) == (4, 0.25, "ranking", 1)
    assert c["neurons"] == [(2, 5)] and c["null_sets"] == 199 and c["progress"] is True
    printed = capsys.readouterr().out
    assert "verdict: BEYOND random neurons (beyond_null=True, p_null = 0.005 against null_n = 199" in printed
    assert "wrong-direction share 0%" in printed
    assert main(["steer", "--from", str(tmp_path), "--which", "suppressors", "--null-sets", "39", "--seed", "1",
                 "--inputs", "heldout", "--out", str(tmp_path / "b")]) == 0
    c = calls[-1]
    assert (c["seed"], c["holdout"], c["inputs"], c["direction"], c["null_sets"]) == (1, 0.25, "heldout", -1, 39)
    assert c["neurons"] == [(3, 6)]
    del scan["settings"]  # an older scan: fall back to seed 0, holdout 0.5 (it ablated: its ranking split)
    (tmp_path / "results.json").write_text(json.dumps(scan))
    assert main(["steer", "--from", str(tmp_path), "--direction", "down", "--out", str(tmp_path / "c")]) == 0
    c = calls[-1]
    assert (c["seed"], c["holdout"], c["inputs"], c["direction"]) == (0, 0.5, "ranking", -1)
    saved = json.loads((tmp_path / "c" / "steering.json").read_text())
    assert saved["source"]["scan_split_recorded"] is False and saved["source"]["scan_seed"] == 0


def test_cli_steer_on_minilm_and_bad_input(tmp_path, capsys):
    from neurolens_lightning.cli import main

    out = tmp_path / "steer"
    # a late layer and the smallest null keep it fast: the replicated forwards re-enter at block 4 of 6
    rc = main(["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "4:1251", "--scales", "0", "1", "4",
               "--examples", "1", "--null-sets", "19", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "steering.json").read_text())
    assert data["neurons"] == [{"layer": 4, "index": 1251}] and data["scales"] == [0.0, 1.0, 4.0]
    assert data["concept_inputs"]["n"] > 20 and "p_concept" in data["examples"][0]["outputs"][0]
    t = data["test"]
    assert t["null_sets_max"] == 19 and 10 <= t["null_n"] <= 19 and t["null_design"]["per_layer"] == {"4": 1}
    assert (out / "steering.html").is_file()
    printed = capsys.readouterr().out
    assert re.search(r"verdict: (BEYOND|not beyond) random neurons \(beyond_null=(True|False), p_null = [0-9.e-]+ "
                     r"against null_n = \d+ random sets", printed), printed
    assert "wrong-direction share" in printed and "descriptive only: trend" in printed
    assert str(out / "steering.json") in printed
    bad = tmp_path / "bad"
    assert main(["steer", "--model", "minilm", "--concept", "royalty", "--out", str(bad)]) == 2
    assert main(["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "9:1", "--out", str(bad)]) == 2
    assert "neuron layer(s) [9] out of range for minilm" in capsys.readouterr().err
    assert main(["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "1:1", "--null-sets", "0",
                 "--out", str(bad)]) == 2
    assert "--null-sets must be >= 1" in capsys.readouterr().err
    assert not bad.exists()


def test_callback_steering_check_at_fit_end(tok, tmp_path):
    """``steer_scales``: after the end probe the callback steers the final top candidates and logs the verdict."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from neurolens_lightning import CausalLM, NeuroLensCallback

    model = planted_gpt2(tok, mute=MUTE)
    module = CausalLM(model, tok, lr=0.0)  # lr 0: the planted weights stay as built
    texts = ["the king sat on his throne", "the farmer sat on the bench"] * 4
    loader = DataLoader(texts, batch_size=4, collate_fn=module.collate)
    cb = NeuroLensCallback(planted_probe("gpt2"), every_n_train_steps=100, probe_at_start=False, top_k=3,
                           steer_scales=[0, 1, 4], report_dir=str(tmp_path / "reports"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, callbacks=[cb], logger=CSVLogger(tmp_path / "logs"), enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(module, loader)
    d = cb.steering["planted_royalty"]
    assert d["source"]["which"] == "top candidates" and {"layer": 0, "index": PLANTED} in d["neurons"]
    y = d["concept_inputs"]["mean_y"]
    assert y[0] < y[1] < y[2] and d["test"]["beyond_null"] is True and d["test"]["p_null"] <= 0.05
    assert d["inputs"] == "heldout"  # no ablation in this run: nothing was validated on the held-out split
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and count_hooks(model) == 0
    metrics = (tmp_path / "logs").rglob("metrics.csv")
    lines = next(metrics).read_text().splitlines()
    header = lines[0].split(",")
    pre = "neurolens/planted_royalty/"
    assert f"{pre}steer_beyond_null" in header and f"{pre}steer_p_null" in header
    assert "neurolens/planted_royalty/steer_monotonic" not in header
    row = [dict(zip(header, l.split(","))) for l in lines[1:]]
    assert any(r.get("neurolens/planted_royalty/steer_beyond_null") == "1.0" for r in row)
    assert (tmp_path / "reports" / "planted_royalty" / "steering" / "steering.html").is_file()
    with pytest.raises(NeuroLensError, match="at least 2 scales"):
        NeuroLensCallback("royalty", steer_scales=[1.0])
