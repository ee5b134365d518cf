"""Verdicts: who may be called a concept neuron, and when an ablation validates one.

1. The causal test's decision rule (sequential empirical p, Besag-Clifford, + Holm) is calibrated
   on a heavy-tailed synthetic null (Student-t, 2 d.o.f.), where the old normal-z rule is not,
   and it still has power against a planted effect.
2. ``sequential_p`` and ``decide`` by hand.
3. A "whisper" unit (reads like PLANTED at 1/1000 of its scale: perfect separation, tiny
   activations) gets a huge Cohen's d but never a role: the layer-scaled d keeps it out.
4. Like-with-like pooling: marked positives vs the same sentences unmarked select nothing.
5. A probe without a concept (shuffled labels, gates relaxed so candidates exist) rarely validates; random
   named neurons get valid p-values through ``scan``.
6. A small probe warns, and its d intervals are wider.
7. Edge cases: an example that tokenizes to nothing, GPT-2 under left padding, a one-task
   probe and the split, the unit of y (min_effect) with and without an LM head.
8. Every named neuron keeps its ablation record in results.json whatever its rank.
9. A suppressor (reads like PLANTED, writes against " throne") is tested for a rise and validated.

Models are the planted tiny GPT-2 / BERT of ``helpers`` (PLANTED = unit 7, DECOY = unit 11 of
layer 0; see test_ground_truth.py) and random tiny models with a local word tokenizer.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from helpers import (CONCEPT, DECOY, NEGATIVE, PLANTED, make_word_tokenizer, planted_gpt2, planted_probe, tiny_bert,
                     small_probe_dict, tiny_bert_encoder, tiny_gpt2)

import neurolens_lightning as nl
from neurolens_lightning.ablation import decide, null_size_needed, sequential_p
from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.concepts import Concept, TextExample, load_concept, parse_marked_text
from neurolens_lightning.errors import ProbeError
from neurolens_lightning.hooks import capture
from neurolens_lightning.ranking import holm_adjust
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.results import SMALL_PROBE

WHISPER, SUPPRESSOR = 13, 17  # extra layer-0 units planted by the tests below
W_OUT = 4.0                   # planted_gpt2's default output weight of PLANTED into the " throne" dim

TEMPLATES = ["The [[{w}]] spoke to the people.", "Everyone saw the [[{w}]] at night.",
             "A [[{w}]] sat on the old chair.", "They looked at the [[{w}]] in the morning.",
             "My [[{w}]] went home.", "Her [[{w}]] ate the bread."]
PEOPLE = ["farmer", "baker", "teacher", "doctor", "sailor", "soldier", "man", "woman", "boy", "girl"]
ROYAL = ["king", "queen", "prince", "princess", "crown", "throne"]


# ----------------------------------------------------------------------------- fixtures / builders


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted_tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


@pytest.fixture(scope="module")
def planted_bert_tok():
    return make_word_tokenizer("bert", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


@pytest.fixture(scope="module")
def bert_tok(bert_tokenizer):
    return bert_tokenizer


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_tokenizer):
    return gpt2_tokenizer


def _copy_reader(model, unit: int, in_scale: float, out_weight: float):
    """Layer-0 ``unit`` of a planted GPT-2 reads like PLANTED (input weights and bias x ``in_scale``)
    and writes ``out_weight`` into the " throne" residual dimension (2) only."""
    mlp = model.transformer.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, unit] = mlp.c_fc.weight[:, PLANTED] * in_scale
        mlp.c_fc.bias[unit] = mlp.c_fc.bias[PLANTED] * in_scale
        mlp.c_proj.weight[unit, :] = 0
        mlp.c_proj.weight[unit, 2] = out_weight
    return model


def _sentences(words, templates=TEMPLATES, marked: bool = True) -> list[str]:
    out = [t.format(w=w) for t in templates for w in words]
    return out if marked else [s.replace("[[", "").replace("]]", "") for s in out]


def _record(data: dict, layer: int, index: int) -> dict | None:
    hits = [r for r in data["neurons"] if (r["layer"], r["index"]) == (layer, index)]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


# ----------------------------------------------------------------------------- 1. calibration (no model)


def _binom_bound(rate: float, n: int, k: float = 3.0) -> float:
    return rate + k * math.sqrt(rate * (1 - rate) / n)


def test_decision_rule_calibrated_on_heavy_tailed_null():
    """Family-wise and per-neuron error of sequential p + Holm on a Student-t(2) 'layer' (infinite
    variance, like the heavy-tailed nulls measured on MiniLM), against the old normal z rule."""
    from scipy.stats import norm

    alpha, m, h, n_units, n_families = 0.05, 10, 10, 2000, 2000
    n_null = null_size_needed(m, alpha)
    assert n_null == 200
    rng = np.random.default_rng(12345)
    fam_new = fam_old = planted_hits = 0
    p_all = []
    for _ in range(n_families):
        layer = rng.standard_t(2, size=n_units)
        perm = rng.permutation(n_units)
        cand, null_seq = layer[perm[:m]], layer[perm[m:]]  # the null: the other neurons in random order
        seq = null_seq[:n_null].tolist()
        p = [sequential_p(float(v), seq, h=h)[0] for v in cand]
        p_all += p
        fam_new += bool((holm_adjust(torch.tensor(p, dtype=torch.float64)) <= alpha).any())

        # the old rule: normal z against the first 50 null neurons, Holm
        ref = null_seq[:50]
        z = (cand - ref.mean()) / ref.std(ddof=1)
        fam_old += bool((holm_adjust(torch.from_numpy(norm.sf(z))) <= alpha).any())

        # power: one candidate replaced by a planted effect far beyond the layer's 99th percentile
        big = 50.0 * float(np.quantile(null_seq, 0.99))
        p_planted = [sequential_p(big, seq, h=h)[0]] + p[1:]
        planted_hits += bool(holm_adjust(torch.tensor(p_planted, dtype=torch.float64))[0] <= alpha)

    fwer_new, fwer_old = fam_new / n_families, fam_old / n_families
    p_all = np.asarray(p_all)
    assert fwer_new <= _binom_bound(alpha, n_families), f"family-wise error {fwer_new:.4f} > {alpha}"
    for level in (0.05, 0.01):
        rate = float((p_all <= level).mean())
        assert rate <= _binom_bound(level, p_all.size), f"P(p <= {level}) = {rate:.4f}"
    # the test can see miscalibration: the normal z rule rejects far too often on this null
    assert fwer_old > 0.08, f"old rule family-wise error {fwer_old:.4f}"
    assert fwer_old > fwer_new + 0.03
    assert planted_hits / n_families >= 0.99, f"power {planted_hits / n_families:.4f}"


# ----------------------------------------------------------------------------- 2. sequential_p / decide


def test_sequential_p_by_hand():
    # never reached: (g + 1) / (L + 1)
    assert sequential_p(5.0, [0.1, -0.3, 0.2, 0.0]) == (pytest.approx(1 / 5), 0, 4)
    assert sequential_p(1.0, [1.5, 0.0, 0.0, 0.0], h=10) == (pytest.approx(2 / 5), 1, 4)
    assert sequential_p(1.0, [], h=10) == (pytest.approx(1.0), 0, 0)
    # ties count as exceedances; stop at the h-th one: p = h / L, later draws unused
    assert sequential_p(1.0, [1.0, 0.5, 1.0, 2.0, 9.0, 9.0, 9.0], h=3) == (pytest.approx(3 / 4), 3, 4)
    assert sequential_p(1.0, [1.0, 1.0], h=2) == (pytest.approx(1.0), 2, 2)
    # h-th exceedance exactly at the last draw: the stopped form
    assert sequential_p(0.0, [-1.0, -1.0, 0.0, -1.0, 0.5], h=2) == (pytest.approx(2 / 5), 2, 5)
    # a one-sided test: values far below never count
    assert sequential_p(-3.0, [-4.0, -5.0, -6.0], h=10) == (pytest.approx(1 / 4), 0, 3)


def test_decide_each_reason():
    ok = dict(delta=0.5, direction=1, ci=(0.3, 0.7), spec_p_holm=0.01, p_holm=0.01, alpha=0.05,
              min_effect=0.01, selective=True)
    assert decide(**ok) == (True, True, [])
    assert decide(**{**ok, "p_holm": 0.05})[:2] == (True, True)  # p <= alpha

    def reasons(**kw):
        causal, valid, why = decide(**{**ok, **kw})
        assert valid is False and len(why) == 1, why
        return why[0]

    # the candidate gate alone: causal, not validated
    assert decide(**{**ok, "selective": False})[:2] == (True, False)
    assert "not a candidate" in reasons(selective=False)
    assert "Holm p" in reasons(p_holm=0.06) and "0.06" in reasons(p_holm=0.06)
    assert "CI of Δ includes 0" in reasons(ci=(-0.1, 0.7))
    assert "not specific" in reasons(spec_p_holm=0.2) and "0.2" in reasons(spec_p_holm=0.2)
    assert "not specific" in reasons(spec_p_holm=None)
    assert "below the minimum effect" in reasons(delta=0.005, ci=(0.001, 0.009), min_effect=0.01)
    for kw in ({"p_holm": 0.06}, {"ci": (-0.1, 0.7)}, {"spec_p_holm": 0.2}, {"delta": 0.005, "ci": (0.001, 0.009)}):
        assert decide(**{**ok, **kw})[0] is False  # every causal criterion is needed for "causal"

    # a suppressor (direction -1): a rise is what validates ...
    rise = dict(ok, delta=-0.5, direction=-1, ci=(-0.7, -0.3))
    assert decide(**rise) == (True, True, [])
    # ... and a drop is not: CI and the effect's direction are wrong
    causal, valid, why = decide(**{**rise, "delta": 0.5, "ci": (0.3, 0.7)})
    assert (causal, valid) == (False, False) and len(why) == 2, why
    assert any("no clear rise" in r for r in why) and any("other direction" in r for r in why)
    # and a candidate that rises is not validated either
    causal, valid, why = decide(**{**ok, "delta": -0.5, "ci": (-0.7, -0.3)})
    assert valid is False and any("no clear drop" in r for r in why)


def _scaled_tiny_gpt2(tok, seed: int):
    """A tiny random GPT-2 with stronger weights: every MLP unit moves y visibly, and its gradient x activation
    importance predicts the sign of its zero-ablation Δ (what made named neurons' p-values anti-conservative)."""
    model = tiny_gpt2(tok, n_layer=2, n_embd=32, n_head=2, seed=seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(25.0 if ("wte" in name or "wpe" in name) else 4.0)
    return model


def test_random_named_neurons_are_calibrated_through_scan(planted_tok):
    """Random *named* neurons go through ``scan`` exactly as a user's would. Their direction comes from their
    importance, which predicts Δ's sign on this model (checked below, so a same-direction null *would* be
    anti-conservative here); each null neuron is signed by its own importance, so p stays valid: the share of
    p <= 0.1 stays within binomial bounds of 0.1 and the median p near 0.5 (0.235 with the old rule on MiniLM)."""
    probe = planted_probe("gpt2")
    probe = {k: v for k, v in probe.items() if k != "tasks"}  # y: the model's own next tokens
    ps, agree, n = [], 0, 0
    for run in range(12):
        model = _scaled_tiny_gpt2(planted_tok, seed=100 + run)
        rng = random.Random(run)
        named = sorted({(rng.randrange(2), rng.randrange(128)) for _ in range(6)})
        r = nl.scan(model=model, tokenizer=planted_tok, concept=probe, ablate=True, neurons=named, test_top_k=False,
                    ablation="zero", null_samples=20, seed=run)
        for key in named:
            a = r.ablation[key]
            assert a["direction_rule"] == "importance" and a["tested_as"] == "named"
            imp = float(r.scores.importance[r.scores.flat_index(*key)])
            agree += (imp >= 0) == (a["delta"] >= 0)
            n += 1
            ps.append(a["p_value"])
        assert r.ablation_summary["holm_family"].startswith(f"all {len(named)} tested")
    ps = np.array(ps)
    assert agree / n >= 0.7, f"importance predicts Δ's sign for only {agree}/{n}: the test would not be sharp"
    assert float((ps <= 0.1).mean()) <= _binom_bound(0.1, len(ps)), ps
    assert float(np.median(ps)) >= 0.35, np.median(ps)


# ----------------------------------------------------------------------------- 3. whisper neuron


def test_whisper_neuron_never_enters_the_top_k(planted_tok):
    model = _copy_reader(planted_gpt2(planted_tok), WHISPER, in_scale=1e-3, out_weight=W_OUT)
    probe = planted_probe("gpt2")
    result = nl.scan(model=model, tokenizer=planted_tok, concept=probe, top_k=10)
    s = result.scores
    w, j, k = s.flat_index(0, WHISPER), s.flat_index(0, PLANTED), s.flat_index(0, DECOY)

    # the whisper separates the classes perfectly, with tiny activations
    adapter = adapter_for(model, planted_tok)
    concept = load_concept(probe)
    batch = adapter.encode(concept.positive + concept.negative)
    with torch.no_grad(), capture({0: adapter.sites[0].module}) as acts:
        adapter.forward(batch)
    pooled = adapter.pool(acts[0], batch, result.settings["pooling"])[0][:, WHISPER]
    n_pos = len(concept.positive)
    assert pooled[:n_pos].min() > pooled[n_pos:].max(), pooled
    assert pooled.abs().max() < 0.05, pooled
    assert float(s.selectivity[w]) > 5, float(s.selectivity[w])
    assert float(s.selectivity_q[w]) <= result.fdr_q  # significant: only the layer-scaled floor stops it
    # its raw d beats that of some reported candidate: a ranking by Cohen's d alone would admit it
    cand_d = [c["selectivity"] for c in result.candidates()]
    assert len(cand_d) == 10 and min(cand_d) < float(s.selectivity[w]), cand_d

    assert float(s.selectivity_layer[w]) < result.min_selectivity, float(s.selectivity_layer[w])
    rec = result.neuron_record(w)
    assert rec["role"] is None
    assert (0, WHISPER) not in result.top_neurons(10) and (0, WHISPER) not in result.top_suppressors(10)
    assert (0, WHISPER) not in [(c["layer"], c["index"]) for c in result.suppressors(len(s.order))]
    assert (0, WHISPER) not in [(c["layer"], c["index"]) for c in result.candidates(len(s.order))]

    assert result.top_neurons(1) == [(0, PLANTED)]
    order = s.order.tolist()
    assert order.index(j) == 0 and order.index(k) > order.index(j)
    assert order.index(w) >= s.n_candidates + s.n_suppressors  # ranked after every neuron with a role


# ----------------------------------------------------------------------------- 4. like-with-like pooling


def test_marked_positives_vs_same_sentences_unmarked_select_nothing(bert_tok):
    marked = _sentences(PEOPLE, TEMPLATES[:4])
    plain = _sentences(PEOPLE, TEMPLATES[:4], marked=False)
    assert len(marked) == 40 and len(set(plain)) == 40
    probe = {"name": "same_sentences", "modality": "text", "positive": marked, "negative": plain}
    # the same sentences in both classes are refused outright (issue 21 item 8: an input in both classes) ...
    with pytest.raises(ProbeError, match=r"is both a concept \(positive\) and a control \(negative\) example"):
        nl.scan(model=tiny_bert(bert_tok), tokenizer=bert_tok, concept=probe, top_k=5)

    # ... and below that check, the pooling rule still compares them like with like
    concept = Concept("same_sentences", "text", [parse_marked_text(t, "p") for t in marked],
                      [TextExample(t) for t in plain], [f"fold{i % 5}" for i in range(40)])
    adapter = adapter_for(tiny_bert(bert_tok), bert_tok)
    sc = ConceptScanner(adapter, concept, importance=False).run()
    scores = sc.compute()
    n_neurons = len(scores.order)
    assert n_neurons == 256
    assert sc.pooling == "max"
    assert int((scores.selectivity_q <= 0.05).sum()) / n_neurons <= 0.01
    assert scores.n_candidates == 0
    assert float(scores.selectivity.abs().max()) < 1e-3
    assert "40 of 80 examples mark a [[concept span]]" in sc.pooling_warning and "like with like" in sc.pooling_warning

    adapter.pooling = "span"
    with pytest.raises(ProbeError) as err:
        ConceptScanner(adapter, concept, importance=False)
    msg = str(err.value)
    assert "40 of 80" in msg and "mark a span in each example" in msg and "pooling 'max' or 'auto'" in msg


# ----------------------------------------------------------------------------- 5. no signal -> nothing validated


def test_probe_without_signal_rarely_validates_even_with_candidates(planted_tok):
    """Probes with no concept (shuffled labels), gates relaxed so that every run has top-k candidates to test
    (fdr_q=1, min_selectivity=0) and min_effect=0: the default causal test validates a neuron in few runs, and
    its joint set is rarely beyond random sets (``bench_calibration.py`` measures the rates over 60 runs)."""
    base = planted_probe("gpt2")
    texts = [t for g in base["groups"].values() for t in g] + list(base["negative"])
    validated = joint = tested = 0
    runs = 12
    for run in range(runs):
        sh = texts[:]
        random.Random(run).shuffle(sh)
        probe = {"name": "shuffled", "modality": "text", "negative": sh[16:],
                 "groups": {f"g{i}": sh[i * 4:(i + 1) * 4] for i in range(4)}}
        model = tiny_gpt2(planted_tok, n_layer=2, n_embd=32, n_head=2, seed=run)
        r = nl.scan(model=model, tokenizer=planted_tok, concept=probe, ablate=True, top_k=3, fdr_q=1.0,
                    min_selectivity=0.0, min_effect=0.0, null_samples=20, seed=run)
        summ = r.ablation_summary
        assert summ["method"] == "interchange" and summ["n_candidates"] >= 1  # candidates exist: the test can fail
        tested += summ["n_candidates"]
        validated += summ["n_validated"] > 0
        joint += bool(summ["joint_beyond_null"])
        for rec in r.ablation.values():
            assert rec["verdict"] in ("validated", "causal, not a candidate", "not causal"), rec
    assert tested >= runs
    assert validated <= 2, f"{validated}/{runs} runs validated a neuron of a probe without a concept"
    assert joint <= 2, f"{joint}/{runs} joint sets beyond their null on a probe without a concept"


# ----------------------------------------------------------------------------- 6. small probe


def test_small_probe_warns_and_has_wider_intervals(bert_tok):
    def probe(n_words: int, n_templates: int) -> dict:
        return {"name": f"royal_{n_words}x{n_templates}", "modality": "text",
                "positive": _sentences(ROYAL[:n_words], TEMPLATES[:n_templates]),
                "negative": _sentences(PEOPLE[:n_words], TEMPLATES[:n_templates])}

    model = tiny_bert(bert_tok)
    small = nl.scan(model=model, tokenizer=bert_tok, concept=probe(6, 1), top_k=5)
    large = nl.scan(model=model, tokenizer=bert_tok, concept=probe(6, 5), top_k=5)
    assert (small.scores.n_pos, small.scores.n_neg) == (6, 6) and min(large.scores.n_pos, large.scores.n_neg) == 30
    assert 6 < SMALL_PROBE <= 30
    small_w = [w for w in small.to_dict()["warnings"] if w.startswith("small probe")]
    assert small_w and "6 concept and 6 control" in small_w[0], small.to_dict()["warnings"]
    assert not any(w.startswith("small probe") for w in large.to_dict()["warnings"])

    ws = small.scores.selectivity_ci_high - small.scores.selectivity_ci_low
    wl = large.scores.selectivity_ci_high - large.scores.selectivity_ci_low
    assert torch.isfinite(ws).all() and torch.isfinite(wl).all()
    assert (ws > wl).all(), int((ws <= wl).sum())
    assert float((ws / wl).median()) > 1.5
    for res in (small, large):  # every d lies inside its own interval
        s = res.scores
        assert ((s.selectivity_ci_low <= s.selectivity) & (s.selectivity <= s.selectivity_ci_high)).all()
    rec = small.to_dict()["neurons"][0]
    assert rec["selectivity_ci"][0] <= rec["selectivity"] <= rec["selectivity_ci"][1]


# ----------------------------------------------------------------------------- 7. edge cases


def test_example_that_tokenizes_to_nothing_is_named():
    """A zero-width space passes the probe loader (it is not whitespace to Python) but a BERT
    tokenizer that cleans text (like the real BertTokenizerFast) removes it: nothing is left."""
    from tokenizers import normalizers

    tok = make_word_tokenizer("bert")
    tok.backend_tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=True,
                                                                  handle_chinese_chars=True, strip_accents=False)
    bad = "\u200b"
    assert tok(bad)["input_ids"] == [tok.cls_token_id, tok.sep_token_id]
    probe = {"name": "empty_token", "modality": "text",
             "positive": ["The king spoke to the people.", bad, "A queen sat on the old chair."],
             "negative": ["The farmer spoke to the people.", "A baker sat on the old chair."]}
    with pytest.raises(ProbeError) as err:
        nl.scan(model=tiny_bert(tok), tokenizer=tok, concept=probe, top_k=3)
    msg = str(err.value)
    assert repr(bad) in msg and "tokenizes to no tokens" in msg
    assert "king" not in msg and "queen" not in msg  # names the culprit, not its batch mates


@pytest.mark.parametrize("side", ["right", "left"])
def test_gpt2_confidence_without_tasks_is_independent_of_padding(side):
    """y of each example in a padded batch equals y of the example alone (no padding)."""
    tok = make_word_tokenizer("gpt2")
    tok.padding_side = side
    model = tiny_gpt2(tok)
    adapter = adapter_for(model, tok)
    examples = [TextExample("The king sat on the old chair by the river."), TextExample("A dog ran."),
                TextExample("They looked at the queen in the morning."), TextExample("Everyone saw the man.")]
    batch = adapter.encode_confidence(examples, None)
    attn = batch.inputs["attention_mask"].bool()
    assert not attn.all()  # really padded
    if side == "left":
        assert not attn[:, 0].all() and attn[:, -1].all()

    # no weighted position is a pad: position p predicts p+1, both real tokens
    pos, weight = batch.target["pred_pos"], batch.target["weight"]
    b_idx = torch.arange(batch.size).unsqueeze(1)
    used = weight > 0
    assert used.any(1).all()
    assert attn[b_idx, pos][used].all() and attn[b_idx, (pos + 1).clamp_max(attn.shape[1] - 1)][used].all()
    torch.testing.assert_close(weight.sum(1), torch.ones(batch.size))

    with torch.no_grad():
        y = adapter.confidence(batch, adapter.forward(batch)).double()
        alone = torch.cat([adapter.confidence(b, adapter.forward(b)) for b in
                           (adapter.encode_confidence([ex], None) for ex in examples)]).double()
    torch.testing.assert_close(y, alone, atol=1e-5, rtol=0,
                               msg=lambda m: f"padding_side={side}: batched y {y.tolist()} vs alone "
                                             f"{alone.tolist()}: {m}")


def test_one_task_probe_cannot_be_split(planted_tok):
    raw = planted_probe("gpt2")
    raw["tasks"] = raw["tasks"][:1]
    concept = load_concept(raw)
    with pytest.raises(ProbeError, match=r"1 task: a held-out split needs at least 2"):
        concept.split(0.5, seed=0)
    with pytest.raises(ProbeError, match=r"needs at least 2"):
        nl.scan(model=planted_gpt2(planted_tok), tokenizer=planted_tok, concept=raw, top_k=1, ablate=True,
                null_samples=20)
    # without a split the single task is fine
    assert nl.scan(model=planted_gpt2(planted_tok), tokenizer=planted_tok, concept=raw, top_k=1).top_neurons(1)
    two = dict(raw, tasks=planted_probe("gpt2")["tasks"][:2])
    rank, held = load_concept(two).split(0.5, seed=0)
    assert len(rank.tasks) == 1 and len(held.tasks) == 1 and rank.tasks != held.tasks


@pytest.fixture(scope="module")
def named_scan(planted_tok):
    """Planted GPT-2, top_k=1, 15 named layer-1 neurons + PLANTED, only 5 neurons listed."""
    named = [(1, u) for u in range(3, 128, 8)][:15] + [(0, PLANTED)]
    result = nl.scan(model=planted_gpt2(planted_tok), tokenizer=planted_tok, concept=planted_probe("gpt2"),
                     top_k=1, ablate=True, neurons=named, null_samples=20, max_neurons=5)
    return named, result


def test_min_effect_follows_the_unit_of_y(planted_bert_tok, named_scan):
    enc = nl.scan(model=tiny_bert_encoder(planted_bert_tok), tokenizer=planted_bert_tok,
                  concept=planted_probe("bert"), top_k=1, ablate=True, null_samples=20, neurons=[(0, 3)])
    assert enc.head is not None  # no LM head: y is the probe head's log-odds
    summ = enc.ablation_summary
    assert summ["min_effect"] == pytest.approx(0.04) and "log-odds" in summ["y"], summ["y"]
    assert enc.to_dict()["ablation_summary"]["min_effect"] == pytest.approx(0.04)

    _, gpt = named_scan
    summ = gpt.ablation_summary
    assert gpt.head is None
    assert summ["min_effect"] == pytest.approx(0.01) and "log p" in summ["y"], summ["y"]
    assert "log-odds" not in summ["y"]


# ----------------------------------------------------------------------------- 8. named neurons keep records


def test_every_named_neuron_keeps_its_ablation_record(named_scan):
    named, result = named_scan
    data = result.to_dict()
    assert len(data["neurons"]) > 5  # more than max_neurons: the ablated ones were appended
    for layer, index in named:
        rec = _record(data, layer, index)
        assert rec is not None, (layer, index)
        abl = rec["ablation"]
        assert isinstance(abl, dict), (layer, index)
        assert abl["delta"] == pytest.approx(result.ablation[(layer, index)]["delta"])
        assert rec["rank"] >= 1 and "top_examples" in rec
    # 16 neurons tested (one Holm family), layer 0 has 127 others: PLANTED beats all of them (p = 1/128) but the
    # null is too small for Holm at 0.05/16, which is the only reason given, and a warning says so
    planted = _record(data, 0, PLANTED)["ablation"]
    assert planted["null_exceedances"] == 0 and planted["p_value"] == pytest.approx(1 / 128), planted
    assert len(planted["reasons"]) == 1 and "Holm p" in planted["reasons"][0], planted
    assert any(w.startswith("layer 0 has only 127 other neurons") for w in data["warnings"]), data["warnings"]
    ranks = [_record(data, l, i)["rank"] for l, i in named]
    assert max(ranks) > 5  # some named neuron ranks beyond the listed ones
    assert {(r["layer"], r["index"]) for r in data["neurons"] if r["ablation"]} == set(result.ablation)


# ----------------------------------------------------------------------------- 9. suppressor


def test_suppressor_is_tested_for_a_rise_and_validated(planted_tok):
    model = _copy_reader(planted_gpt2(planted_tok), SUPPRESSOR, in_scale=1.0, out_weight=-W_OUT)
    m = 2  # top_k=1, suppressors=1: one candidate and one suppressor are tested, one Holm family
    null_samples = null_size_needed(m, 0.05)
    assert null_samples == 40
    result = nl.scan(model=model, tokenizer=planted_tok, concept=planted_probe("gpt2"), top_k=1, ablate=True,
                     suppressors=1, neurons=[(0, SUPPRESSOR)], null_samples=null_samples)
    s = result.scores
    i = s.flat_index(0, SUPPRESSOR)
    rec = result.neuron_record(i)
    assert rec["role"] == "suppressor" and float(s.importance[i]) < 0, rec
    assert result.top_suppressors(1) == [(0, SUPPRESSOR)]
    assert result.neuron_record(s.flat_index(0, PLANTED))["role"] == "candidate"

    abl = result.ablation[(0, SUPPRESSOR)]
    assert abl["direction"] == "rise" and abl["tested_as"] == "suppressor", abl
    assert abl["delta"] < 0 and abl["ci_high"] < 0, abl
    assert abl["specificity_ci_high"] < 0 and abl["specificity_p_holm"] <= 0.05, abl
    assert abl["verdict"] == "validated suppressor" and abl["validated"] is True, abl
    assert abl["p_holm"] <= 0.05
    summ = result.ablation_summary
    assert summ["n_suppressors_validated"] >= 1 and summ["n_suppressors"] == 1
    assert _record(result.to_dict(), 0, SUPPRESSOR)["ablation"]["verdict"] == "validated suppressor"


def test_ablation_without_importance_fits_the_probe_head(bert_tok):
    """A model without a head has y from the probe head; with importance off, ablation still fits it."""
    model = tiny_bert_encoder(bert_tok)
    res = nl.scan(model=model, tokenizer=bert_tok, concept=small_probe_dict(), importance=False, ablate=True,
                  neurons=[(0, 1), (1, 2)], null_samples=20, top_k=2)
    assert set(res.ablation) >= {(0, 1), (1, 2)}
    assert "log-odds" in res.ablation_summary["y"] and res.ablation_summary["min_effect"] == 0.04
