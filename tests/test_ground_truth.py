"""Ground truth: neurons planted by hand into tiny GPT-2 / BERT models must be found by ``scan``.

Construction (n_embd = 32, both families):

* Residual dimensions are reserved in the token embeddings: dim 0 = "concept" (+8 for every
  concept word: king/queen/monarch/emperor), dim 1 = "king only" (+8 for king), dim 2 =
  "throne" (the target token's embedding, read by the tied unembedding), dims 4/5 = fillers
  that give every token the same norm (so LayerNorm scales them alike). Negative words get
  dim 0 values spread over [0, 3.5], so negatives have a genuine activation spread.
* Planted unit J of layer 0's MLP reads dim 0 (threshold between negatives and concept
  words) and writes +W into dim 2, i.e. it raises the logit of " throne".
* Decoy unit K reads dim 1, so it fires on the "king" group only; it writes the same output
  as J (so importance alone cannot tell them apart: consistency must).
* BERT additionally needs the effect to reach the [MASK] position: layer 0's attention
  output is zeroed, layer 1's attention is made uniform and copies dim 2 to every position,
  and the MLM head's transform is the identity.

``scan`` must rank J first with p < 1e-6, consistency > 0.7 and the largest (positive)
importance; K is selective for its group, but its consistency is < 0.3 and it ranks below J.
The construction itself is checked by zero-ablating J and K and measuring the real drop in
log p(" throne").
"""

from __future__ import annotations

import pytest
import torch
from helpers import (CONCEPT, DECOY, NEGATIVE, PLANTED, make_word_tokenizer, planted_bert,  # shared builders
                     planted_gpt2, planted_probe)

import neurolens_lightning as nl
from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.hooks import capture, count_hooks, intervene


@pytest.fixture(scope="module")
def tokenizers():
    words = CONCEPT + NEGATIVE + ["throne", "seat", "bowed"]
    return {"gpt2": make_word_tokenizer("gpt2", words), "bert": make_word_tokenizer("bert", words)}


def _build(family: str, tok, seed: int = 0):
    return planted_gpt2(tok, seed) if family == "gpt2" else planted_bert(tok, seed)


def _y(adapter, tasks, ablate: int | None = None) -> torch.Tensor:
    """Confidence y on the tasks, optionally with one layer-0 unit zeroed at every position."""
    batch = adapter.encode_confidence(None, tasks)

    def zero(_key, t):
        t = t.clone()
        t[..., ablate] = 0
        return t

    with torch.no_grad():
        if ablate is None:
            return adapter.confidence(batch, adapter.forward(batch))
        with intervene({0: adapter.sites[0].module}, zero):
            return adapter.confidence(batch, adapter.forward(batch))


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_construction_is_causal(family, tokenizers):
    """Sanity of the hand-made model: the concept words are single tokens, J fires on every concept
    word and K on king only, and zeroing J really lowers log p(' throne') on the tasks."""
    tok = tokenizers[family]
    for w in CONCEPT + NEGATIVE + ["throne"]:
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w
    model = _build(family, tok)
    adapter = adapter_for(model, tok)
    concept = load_concept(planted_probe(family))
    batch = adapter.encode(concept.positive + concept.negative)
    with torch.no_grad(), capture({0: adapter.sites[0].module}) as acts:
        adapter.forward(batch)
    pooled, _ = adapter.pool(acts[0], batch)
    n_pos = len(concept.positive)
    j, k = pooled[:, PLANTED], pooled[:, DECOY]
    assert (j[:n_pos] > 5).all() and (j[n_pos:] < 3).all()
    king = torch.tensor([g == "king" for g in concept.positive_groups])
    assert (k[:n_pos][king] > 5).all() and (k[:n_pos][~king].abs() < 0.1).all() and (k[n_pos:].abs() < 0.1).all()

    tasks = concept.tasks
    y = _y(adapter, tasks)
    drop_j = (y - _y(adapter, tasks, PLANTED)).mean()
    drop_k = (y - _y(adapter, tasks, DECOY)).mean()
    assert drop_j > 0.5, float(drop_j)
    assert drop_j > 2 * drop_k > 0, (float(drop_j), float(drop_k))
    assert count_hooks(model) == 0


@pytest.mark.parametrize("family", ["gpt2", "bert"])
@pytest.mark.parametrize("seed", [0, 1])
def test_scan_finds_planted_neuron(family, seed, tokenizers):
    tok = tokenizers[family]
    model = _build(family, tok, seed)
    result = nl.scan(model=model, tokenizer=tok, concept=planted_probe(family), top_k=5)
    assert count_hooks(model) == 0
    s = result.scores

    top = result.candidates(1)[0]
    assert (top["layer"], top["index"]) == (0, PLANTED), result.candidates(5)
    j, k = s.flat_index(0, PLANTED), s.flat_index(0, DECOY)

    # selectivity: a huge, significant effect that survives FDR control
    assert s.selectivity[j] > 5
    assert s.selectivity_p[j] < 1e-6
    assert s.selectivity_q[j] < 1e-4
    assert result.n_significant_fdr >= 1

    # consistency: the planted unit fires for every group, the decoy for one
    assert s.consistency[j] > 0.7, float(s.consistency[j])
    assert s.consistency[k] < 0.3, float(s.consistency[k])
    groups = result.concept.group_names
    king = groups.index("king")
    assert (s.group_d[:, j] > 5).all()
    assert s.group_d[king, k] > 5  # highly selective for its own group ...
    others = [g for g in range(len(groups)) if g != king]
    assert (s.group_d[others, k].abs() < 1).all()  # ... and for no other

    # importance: positive, and the largest in magnitude of all scanned neurons
    imp = s.importance
    assert imp[j] > 0
    rest = imp.abs().clone()
    rest[j] = 0
    assert imp[j] > 3 * rest.max(), (float(imp[j]), float(rest.max()))
    assert imp[k] > 0  # the decoy also raises the target (on king prompts) ...

    # ... yet it ranks below the planted unit
    order = s.order.tolist()
    assert order.index(k) > order.index(j) == 0
    assert s.score[j] > s.score[k]
    assert top["consistency"] > 0.7 and top["selectivity_p"] < 1e-6 and top["importance"] > 0
