"""Cross-concept specificity: the same neurons scored on other probes, with the model already loaded.

Planted tiny GPT-2 (helpers.planted_gpt2): PLANTED fires on every concept word (king, queen, monarch,
emperor), DECOY on "king" only. Against a "king vs other royals" probe DECOY is selective and PLANTED is
not (it fires on both sides, a little less on "king", whose embedding also carries DECOY's direction);
against a "sailor vs soldier" probe neither is.

What can fail: ``shared`` holds exactly the neuron selective for two probes (PLANTED: "queen, emperor" and
"monarch") and not the one selective for one (DECOY: king only); a neuron whose q passes fdr_q alone but not
fdr_q / C is selective and shared only without the correction; on probes with shuffled labels the shared count
stays within a binomial bound; with a held-out split the scanned concept's row (and every other row) is scored
on held-out examples: its d matches a direct scan of the held-out split and differs from the ranking split's.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from helpers import (CONCEPT, DECOY, NEGATIVE, PLANTED, TEMPLATES, make_word_tokenizer, planted_gpt2, planted_probe,
                     tiny_gpt2)

import neurolens_lightning as nl
from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.concepts import Concept
from neurolens_lightning.cross_concept import cross_concept, cross_concept_for_result, other_concepts
from neurolens_lightning.errors import NeuroLensError

pytestmark = pytest.mark.usefixtures("one_thread")


def _probe(name, pos_words, neg_words):
    return {"name": name, "modality": "text",
            "groups": {w: [t.format(w=w) for t in TEMPLATES] * 2 for w in pos_words},
            "negative": [t.format(w=w) for w in neg_words for t in TEMPLATES] * 2}


KING_ONLY = _probe("king_only", ["king"], ["queen", "monarch", "emperor"])
SAILOR = _probe("sailor", ["sailor"], ["soldier"])


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


@pytest.fixture(scope="module")
def model(tok):
    return planted_gpt2(tok)


def test_matrix_separates_a_concept_neuron_from_a_word_neuron(model, tok):
    adapter = adapter_for(model, tok)
    m = cross_concept(adapter, [(0, PLANTED), (0, DECOY)], [planted_probe("gpt2"), KING_ONLY, SAILOR])
    assert m["concepts"] == ["planted_royalty", "king_only", "sailor"]
    assert m["neurons"] == [{"layer": 0, "index": PLANTED}, {"layer": 0, "index": DECOY}]
    assert m["split"] == ["full"] * 3 and m["own_row_is_selection_data"] is False  # no scan selected them here
    (p_roy, p_king, p_sail), (d_roy, d_king, d_sail) = m["d"]
    assert p_roy > 5 and m["selective"][0][0] is True          # PLANTED: the royalty concept ...
    assert m["selective"][0][1] is False and p_king < 1.0       # ... not "king" among royals (it fires on all)
    assert d_king > 5 and m["selective"][1][1] is True          # DECOY: "king" only
    assert m["selective"][0][2] is False and m["selective"][1][2] is False
    # the d of a concept equals what a scan of that concept alone reports
    alone = nl.scan(model=model, tokenizer=tok, concept=KING_ONLY, importance=False)
    assert d_king == pytest.approx(float(alone.scores.selectivity[alone.scores.flat_index(0, DECOY)]), rel=1e-6)


# ----------------------------------------------------------------------------- shared, corrected across concepts

QUEEN_EMPEROR = _probe("queen_emperor", ["queen", "emperor"], ["sailor", "soldier"])
MONARCH = _probe("monarch", ["monarch"], ["farmer", "baker"])


def test_a_neuron_selective_for_two_probes_is_shared_and_one_for_one_probe_is_not(model, tok):
    # PLANTED fires on queen, emperor and monarch (two probes) but on both sides of king_only; DECOY on king only
    adapter = adapter_for(model, tok)
    m = cross_concept(adapter, [(0, PLANTED), (0, DECOY)], [KING_ONLY, QUEEN_EMPEROR, MONARCH, SAILOR])
    assert m["q_threshold"] == pytest.approx(0.05 / 4)
    assert m["selective"] == [[False, True, True, False], [True, False, False, False]]
    shared = {(s["layer"], s["index"]): s["selective_for"] for s in m["shared"]}
    assert shared == {(0, PLANTED): ["queen_emperor", "monarch"]}   # DECOY serves king_only alone: not shared


def test_shared_is_bonferroni_corrected_across_concepts(model, tok):
    """DECOY (king only) is weakly selective for royalty (king is a quarter of its positives): its BH q there, q0,
    passes a level fdr_q in [q0, 2 q0) when royalty is the only concept, but not fdr_q / 2 once the matrix holds
    two concepts, so DECOY, selective for king_only at any level, is not called shared (uncorrected it would be)."""
    adapter = adapter_for(model, tok)
    royalty = planted_probe("gpt2")
    q0 = cross_concept(adapter, [(0, DECOY)], [royalty])["q"][0][0]
    assert 1e-4 < q0 < 0.6  # a weak effect: the construction below needs fdr_q = 1.5 q0 < 1
    fdr_q = 1.5 * q0
    one = cross_concept(adapter, [(0, DECOY)], [royalty], fdr_q=fdr_q)
    assert one["q_threshold"] == pytest.approx(fdr_q) and one["selective"] == [[True]]
    two = cross_concept(adapter, [(0, DECOY)], [royalty, KING_ONLY], fdr_q=fdr_q)
    assert two["q"][0][0] == pytest.approx(q0, rel=1e-9)        # the same test ...
    assert two["q_threshold"] == pytest.approx(fdr_q / 2)       # ... at the corrected level
    assert two["selective"] == [[False, True]] and two["shared"] == []
    assert "Bonferroni" in two["correction"] and f"{fdr_q / 2:.4g}" in two["definition"]


def _binomial_upper(n: int, p: float, tail: float = 1e-3) -> int:
    """The smallest k with P(Binomial(n, p) > k) <= tail."""
    cdf, k = 0.0, 0
    while True:
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if 1 - cdf <= tail:
            return k
        k += 1


def _shuffled(name: str, seed: int) -> Concept:
    """A built-in probe with its concept / control labels shuffled: no neuron can be selective for it."""
    c = nl.load_concept(name)
    examples = list(c.positive) + list(c.negative)
    random.Random(seed).shuffle(examples)
    n = len(examples) // 2
    return Concept(f"shuffled_{name}", "text", examples[:n], examples[n:], [f"fold{i % 4}" for i in range(n)])


@pytest.mark.parametrize("holdout", [0.0, 0.5])
def test_null_probes_rarely_share_a_neuron(holdout):
    """Every neuron of tiny random GPT-2s against 4 probes with shuffled labels. With independent shuffles a neuron
    is called selective for a probe with probability <= fdr_q / 4, so shared with probability <= C(4, 2) (fdr_q / 4)^2;
    the count over every neuron stays below that binomial's 99.9% bound."""
    tok = make_word_tokenizer("gpt2")
    probes = [_shuffled(name, seed) for seed, name in enumerate(("royalty", "negation", "past_tense", "plural"))]
    n_shared = n_neurons = 0
    for seed in (0, 1):
        adapter = adapter_for(tiny_gpt2(tok, n_layer=2, n_embd=64, seed=seed), tok)
        neurons = [(s.layer, i) for s in adapter.select_sites(None) for i in range(s.units)]
        m = cross_concept(adapter, neurons, probes, holdout=holdout, seed=seed)
        assert m["q_threshold"] == pytest.approx(0.05 / 4)
        assert m["split"] == ["held-out" if holdout else "full"] * 4
        n_shared += len(m["shared"])
        n_neurons += len(neurons)
    assert n_neurons >= 1000
    assert n_shared <= _binomial_upper(n_neurons, math.comb(4, 2) * (0.05 / 4) ** 2)


# ----------------------------------------------------------------------------- like splits


@pytest.fixture(scope="module")
def ablated(model, tok):
    """A scan ranked on one half of the planted probe and ablated on the other (holdout 0.5, seed 0)."""
    return nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), top_k=3, ablate=True, null_samples=5)


def _d_on(model, tok, concept, neurons, layers):
    s = nl.scan(model=model, tokenizer=tok, concept=concept, layers=layers, importance=False).scores
    return [float(s.selectivity[s.flat_index(l, i)]) for l, i in neurons]


def test_own_row_is_scored_on_the_held_out_split(model, tok, ablated):
    res = ablated
    assert res.settings["holdout"] == 0.5 and res.concept.source.endswith("[ranking split]")
    cc = cross_concept_for_result(res, adapter_for(model, tok), also=[KING_ONLY], full_concept=planted_probe("gpt2"))
    assert cc["concepts"][0] == "planted_royalty" and cc["concepts"][-1] == "king_only"
    assert cc["split"] == ["held-out"] * len(cc["concepts"]) and cc["own_row_is_selection_data"] is False
    assert (cc["holdout"], cc["seed"]) == (0.5, 0) and "held-out split (50%" in cc["definition"]
    neurons = [(n["layer"], n["index"]) for n in cc["neurons"]]
    held = nl.load_concept(planted_probe("gpt2")).split(0.5, seed=0)[1]
    assert cc["n_examples"][0] == [len(held.positive), len(held.negative)] == [8, 8]
    direct = _d_on(model, tok, held, neurons, res.layers)
    ranking = [float(res.scores.selectivity[res.scores.flat_index(l, i)]) for l, i in neurons]
    for own, h, r in zip((row[0] for row in cc["d"]), direct, ranking):
        assert own == pytest.approx(h, rel=1e-6)   # the held-out examples ...
        assert abs(own - r) > 1e-3                  # ... not the ranking split that selected the neurons
    # every other concept on its own held-out split of the same holdout and seed
    king_held = nl.load_concept(KING_ONLY).split(0.5, seed=0)[1]
    assert cc["n_examples"][-1] == [len(king_held.positive), len(king_held.negative)]
    for got, want in zip((row[-1] for row in cc["d"]), _d_on(model, tok, king_held, neurons, res.layers)):
        assert got == pytest.approx(want, rel=1e-6)


def test_without_the_full_probe_the_own_row_is_flagged(model, tok, ablated):
    adapter = adapter_for(model, tok)
    cc = cross_concept_for_result(ablated, adapter, also=[KING_ONLY])  # a dict probe: no file to cut it again from
    assert cc["split"][0] == "ranking" and cc["split"][1:] == ["held-out"] * (len(cc["concepts"]) - 1)
    assert cc["own_row_is_selection_data"] is True and "selected the neurons" in cc["definition"]
    s = ablated.scores
    for n, row in zip(cc["neurons"], cc["d"]):
        assert row[0] == pytest.approx(float(s.selectivity[s.flat_index(n["layer"], n["index"])]), rel=1e-6)
    with pytest.raises(NeuroLensError, match="not the probe the scan ranked on"):
        cross_concept_for_result(ablated, adapter, full_concept=KING_ONLY)


def test_scan_of_a_probe_file_scores_its_own_row_on_the_held_out_split(model, tok, tmp_path):
    path = tmp_path / "planted.json"
    path.write_text(json.dumps(planted_probe("gpt2")))
    res = nl.scan(model=model, tokenizer=tok, concept=str(path), top_k=3, ablate=True, null_samples=5,
                  also=[KING_ONLY])
    cc = json.loads((res.save(tmp_path / "scan") / "results.json").read_text())["cross_concept"]
    assert cc["split"][0] == "held-out" and cc["own_row_is_selection_data"] is False
    row = [(n["layer"], n["index"]) for n in cc["neurons"]].index((0, PLANTED))
    held = nl.load_concept(path).split(0.5, seed=0)[1]
    assert cc["d"][row][0] == pytest.approx(_d_on(model, tok, held, [(0, PLANTED)], res.layers)[0], rel=1e-6)


def test_scan_writes_the_matrix_with_its_own_row_first(model, tok, tmp_path):
    res = nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), top_k=3, also=[KING_ONLY, SAILOR])
    data = json.loads((res.save(tmp_path / "scan") / "results.json").read_text())
    cc = data["cross_concept"]
    # the built-ins of the modality come first (their words fall back to characters here), then the extra probes
    assert cc["concepts"][0] == "planted_royalty" and cc["concepts"][-2:] == ["king_only", "sailor"]
    assert {"negation", "past_tense", "plural", "royalty"} <= set(cc["concepts"])
    keys = [(n["layer"], n["index"]) for n in cc["neurons"]]
    assert keys[: len(res.top_neurons())] == res.top_neurons()
    # no held-out split (no ablation): every probe whole, and the own row is flagged as the selection data
    assert cc["split"] == ["full"] * len(cc["concepts"]) and cc["own_row_is_selection_data"] is True
    assert "selected the neurons" in cc["definition"] and cc["q_threshold"] == pytest.approx(0.05 / len(cc["concepts"]))
    row = keys.index((0, PLANTED))
    assert cc["d"][row][0] == pytest.approx(float(res.scores.selectivity[res.scores.flat_index(0, PLANTED)]))
    assert cc["selective"][row][0] is True
    assert "cross_concept" in data["timings_s"]


def test_other_concepts_and_modality_mismatch():
    royalty = nl.load_concept("royalty")
    names = [c.name for c in other_concepts(royalty)]
    assert names == [n for n in nl.builtin_concept_names() if n != "royalty" and nl.load_concept(n).modality == "text"]
    with pytest.raises(NeuroLensError, match="same modality"):
        other_concepts(royalty, also=["red"])


def test_scan_without_cross_concept_has_no_matrix(model, tok):
    res = nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), top_k=3)
    assert "cross_concept" not in res.to_dict()
    assert torch.is_tensor(res.scores.role)


def test_report_shows_the_matrix_from_results_json(model, tok, tmp_path):
    from neurolens_lightning.report.figures import build_figures

    res = nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), top_k=3, also=[KING_ONLY])
    out = res.save(tmp_path / "scan")
    data = json.loads((out / "results.json").read_text())
    fig = build_figures(data)["crossconcept"]
    assert list(fig.data[0].x) == data["cross_concept"]["concepts"] and len(fig.data[0].y) == len(
        data["cross_concept"]["neurons"])
    page = (out / "report.html").read_text()
    assert "Other concepts" in page and 'id="nl-fig-crossconcept"' in page
    n_shared, n = len(data["cross_concept"]["shared"]), len(data["cross_concept"]["neurons"])
    assert (f"<b>{n_shared} of {n}</b> neurons are selective for more than one concept" in page if n_shared
            else f"None of the {n} neurons is selective for another of these concepts." in page)
