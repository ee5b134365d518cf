"""Cross-concept specificity: the same neurons scored on other probes, with the model already loaded.

Planted tiny GPT-2 (helpers.planted_gpt2): PLANTED fires on every concept word (king, queen, monarch,
emperor), DECOY on "king" only. Against a "king vs other royals" probe DECOY is selective and PLANTED is
not (it fires on both sides, a little less on "king", whose embedding also carries DECOY's direction);
against a "sailor vs soldier" probe neither is.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CONCEPT, DECOY, NEGATIVE, PLANTED, TEMPLATES, make_word_tokenizer, planted_gpt2, planted_probe

import neurolens_lightning as nl
from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.cross_concept import cross_concept, other_concepts
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
    (p_roy, p_king, p_sail), (d_roy, d_king, d_sail) = m["d"]
    assert p_roy > 5 and m["selective"][0][0] is True          # PLANTED: the royalty concept ...
    assert m["selective"][0][1] is False and p_king < 1.0       # ... not "king" among royals (it fires on all)
    assert d_king > 5 and m["selective"][1][1] is True          # DECOY: "king" only
    assert m["selective"][0][2] is False and m["selective"][1][2] is False
    shared = {(s["layer"], s["index"]): s["selective_for"] for s in m["shared"]}
    assert (0, PLANTED) not in shared                           # one concept only
    assert all(len(v) >= 2 for v in shared.values())
    assert ((0, DECOY) in shared) == bool(m["selective"][1][0])  # DECOY serves royalty too iff selective there
    # the d of a concept equals what a scan of that concept alone reports
    alone = nl.scan(model=model, tokenizer=tok, concept=KING_ONLY, importance=False)
    assert d_king == pytest.approx(float(alone.scores.selectivity[alone.scores.flat_index(0, DECOY)]), rel=1e-6)


def test_scan_writes_the_matrix_with_its_own_row_first(model, tok, tmp_path):
    res = nl.scan(model=model, tokenizer=tok, concept=planted_probe("gpt2"), top_k=3, also=[KING_ONLY, SAILOR])
    data = json.loads((res.save(tmp_path / "scan") / "results.json").read_text())
    cc = data["cross_concept"]
    # the built-ins of the modality come first (their words fall back to characters here), then the extra probes
    assert cc["concepts"][0] == "planted_royalty" and cc["concepts"][-2:] == ["king_only", "sailor"]
    assert {"negation", "past_tense", "plural", "royalty"} <= set(cc["concepts"])
    keys = [(n["layer"], n["index"]) for n in cc["neurons"]]
    assert keys[: len(res.top_neurons())] == res.top_neurons()
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
