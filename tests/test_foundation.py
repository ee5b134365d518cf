"""Foundation tests: neuron sites, hooks, model loading errors, probe validation, spans/pooling,
built-in concepts and the confidence y of each adapter family (DESIGN §1-2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_bert, tiny_gpt2, tiny_roberta

from neurolens_lightning.adapters import BertAdapter, GPT2Adapter, ResNetAdapter, adapter_for, pool_activations
from neurolens_lightning.adapters.resnet import load_image_tensor
from neurolens_lightning.concepts import (ImageTask, TextTask, builtin_concept_names, concept_from_dict,
                                          load_concept, load_concept_file, parse_marked_text)
from neurolens_lightning.errors import ModelLoadError, NeuroLensError, ProbeError
from neurolens_lightning.hooks import capture, count_hooks, intervene
from neurolens_lightning.registry import REGISTRY, load_model

TEXTS = ["The [[king]] spoke to the people.", "A farmer sat on the old chair at night.", "the queen"]
RESNET18_UNITS = [64, 64, 128, 128, 256, 256, 512, 512]
RESNET50_UNITS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3


def _examples(texts=TEXTS):
    return [parse_marked_text(t, "test") for t in texts]


@pytest.fixture(scope="module")
def resnet18():
    return load_model("resnet18", weights="random", image_size=64, device="cpu")


@pytest.fixture(scope="module")
def resnet50():
    return load_model("resnet50", weights="random", image_size=64, device="cpu")


@pytest.fixture(scope="module")
def image_files():
    c = load_concept("red")
    return [ex.path for ex in c.positive[:2] + c.negative[:2]]


# ============================================================================ neuron sites (DESIGN §1)


def test_gpt2_sites(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    assert isinstance(a, GPT2Adapter)
    assert [s.units for s in a.sites] == [128, 128]  # 4 * n_embd per layer
    assert [s.layer for s in a.sites] == [0, 1]
    for s, blk in zip(a.sites, gpt2_model.transformer.h):
        assert s.module is blk.mlp.act
    assert a.sites[1].name == "transformer.h.1.mlp.act"


@pytest.mark.parametrize("n_layer,n_embd,n_head,units", [(24, 1024, 16, 4096), (12, 768, 12, 3072)])
def test_gpt2_real_sizes_on_meta(n_layer, n_embd, n_head, units):
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):  # no memory: shapes only
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    a = adapter_for(model, tokenizer=None, check_tokenizer=False)
    assert len(a.sites) == n_layer
    assert all(s.units == units for s in a.sites)


def test_bert_family_sites(bert_tokenizer, bert_model, bert_encoder, roberta_tokenizer, roberta_model):
    for model, tok, prefix in [(bert_model, bert_tokenizer, "bert."), (bert_encoder, bert_tokenizer, ""),
                               (roberta_model, roberta_tokenizer, "roberta.")]:
        a = adapter_for(model, tok)
        assert isinstance(a, BertAdapter)
        assert [s.units for s in a.sites] == [128, 128]  # intermediate_size
        layers = model.base_model.encoder.layer
        for s, layer in zip(a.sites, layers):
            assert s.module is layer.intermediate
        assert a.sites[0].name == f"{prefix}encoder.layer.0.intermediate"
    assert adapter_for(bert_model, bert_tokenizer).has_output_head
    assert not adapter_for(bert_encoder, bert_tokenizer).has_output_head


def test_minilm_sites(minilm):
    assert isinstance(minilm, BertAdapter)
    assert [s.units for s in minilm.sites] == [1536] * 6
    assert not minilm.has_output_head
    assert not minilm.model.training


def test_resnet_sites(resnet18, resnet50):
    assert isinstance(resnet18, ResNetAdapter) and isinstance(resnet50, ResNetAdapter)
    assert [s.units for s in resnet18.sites] == RESNET18_UNITS
    assert [s.units for s in resnet50.sites] == RESNET50_UNITS
    assert resnet50.sites[3].name == "layer2.0" and resnet50.sites[15].name == "layer4.2"
    blocks = [b for st in ("layer1", "layer2", "layer3", "layer4") for b in getattr(resnet50.model, st)]
    assert [s.module for s in resnet50.sites] == blocks
    assert resnet18.image_size == 64
    assert not resnet18.model.training


def test_layer_out_of_range(gpt2_tokenizer, gpt2_model, small_probe):
    import neurolens_lightning as nl

    a = adapter_for(gpt2_model, gpt2_tokenizer)
    with pytest.raises(NeuroLensError, match=r"0\.\.1"):
        a.select_sites([7])
    with pytest.raises(NeuroLensError, match=r"0\.\.1"):
        a.select_sites([-1])
    with pytest.raises(NeuroLensError, match="duplicate"):
        a.select_sites([1, 1])
    assert [s.layer for s in a.select_sites([1])] == [1]
    with pytest.raises(NeuroLensError, match=r"0\.\.1"):
        nl.scan(model=gpt2_model, tokenizer=gpt2_tokenizer, concept=small_probe, layers=[2])
    assert count_hooks(gpt2_model) == 0


# ============================================================================ hooks capture exact values


def test_gpt2_capture_matches_direct(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    batch = a.encode(_examples())
    with torch.no_grad():
        ref = gpt2_model(**batch.inputs).logits
        mods = {}
        for i, blk in enumerate(gpt2_model.transformer.h):
            mods[("in", i)] = blk.ln_2  # its output is the input of blk.mlp
            mods[("act", i)] = a.sites[i].module
        with capture(mods) as acts:
            hooked = gpt2_model(**batch.inputs).logits
        assert count_hooks(gpt2_model) == 0
        for i, blk in enumerate(gpt2_model.transformer.h):
            x = acts[("in", i)]
            direct = blk.mlp.act(blk.mlp.c_fc(x))
            assert acts[("act", i)].shape == (batch.size, batch.inputs["input_ids"].shape[1], 128)
            torch.testing.assert_close(acts[("act", i)], direct, atol=1e-5, rtol=0)
            assert acts[("act", i)].abs().sum() > 0
    torch.testing.assert_close(hooked, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["bert", "bert_encoder", "roberta", "minilm"])
def test_bert_capture_matches_direct(which, request):
    if which == "minilm":
        adapter = request.getfixturevalue("minilm")
        model = adapter.model
    else:
        model = request.getfixturevalue({"bert": "bert_model", "bert_encoder": "bert_encoder",
                                         "roberta": "roberta_model"}[which])
        tok = request.getfixturevalue("roberta_tokenizer" if which == "roberta" else "bert_tokenizer")
        adapter = adapter_for(model, tok)
    batch = adapter.encode(_examples())

    def out(o):
        return o.logits if hasattr(o, "logits") else o.last_hidden_state

    layers = model.base_model.encoder.layer
    with torch.no_grad():
        ref = out(model(**batch.inputs))
        mods = {}
        for i, layer in enumerate(layers):
            mods[("attn", i)] = layer.attention
            mods[("act", i)] = adapter.sites[i].module
        with capture(mods) as acts:
            hooked = out(model(**batch.inputs))
        assert count_hooks(model) == 0
        for i, layer in enumerate(layers):
            direct = layer.intermediate(acts[("attn", i)])
            assert acts[("act", i)].shape[-1] == adapter.sites[i].units
            torch.testing.assert_close(acts[("act", i)], direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(hooked, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["resnet18", "resnet50"])
def test_resnet_capture_matches_direct(which, request):
    adapter = request.getfixturevalue(which)
    model = adapter.model
    red = load_concept("red")
    n = 2 if which == "resnet18" else 1  # ResNet-50 forwards are slow on 2 CPU cores: one image is enough
    batch = adapter.encode([red.positive[0], red.negative[0]][:n])
    assert batch.inputs["x"].shape == (n, 3, 64, 64)
    with torch.no_grad():
        mods = {"stem": model.maxpool, **{i: s.module for i, s in enumerate(adapter.sites)}}
        with capture(mods) as acts:
            hooked = adapter.forward(batch)
        assert count_hooks(model) == 0
        prev = acts["stem"]
        for i, s in enumerate(adapter.sites):
            direct = s.module(prev)
            assert acts[i].shape[1] == s.units
            torch.testing.assert_close(acts[i], direct, atol=1e-5, rtol=1e-5)
            assert (acts[i] >= 0).all()  # after the final ReLU
            prev = acts[i]
        # the rest of the network applied to the last captured block gives the hooked logits
        torch.testing.assert_close(model.fc(torch.flatten(model.avgpool(prev), 1)), hooked, atol=1e-5, rtol=0)
        view = adapter.site_view(acts[0])
        assert view.shape == (n, acts[0].shape[2] * acts[0].shape[3], adapter.sites[0].units)
        pooled, _ = adapter.pool(acts[0], batch)
        torch.testing.assert_close(pooled, acts[0].mean((2, 3)))
        if which == "resnet18":  # hooks leave the output unchanged
            torch.testing.assert_close(hooked, adapter.forward(batch), atol=1e-5, rtol=0)


def test_hooks_removed_when_body_raises(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    batch = a.encode(_examples())
    mods = {s.layer: s.module for s in a.sites}
    with torch.no_grad():
        before = gpt2_model(**batch.inputs).logits.clone()
        with pytest.raises(RuntimeError, match="boom"):
            with capture(mods) as acts:
                gpt2_model(**batch.inputs)
                assert count_hooks(gpt2_model) == 2
                raise RuntimeError("boom")
        assert len(acts) == 2
        assert count_hooks(gpt2_model) == 0
        torch.testing.assert_close(gpt2_model(**batch.inputs).logits, before, atol=0, rtol=0)

        with pytest.raises(RuntimeError, match="boom"):
            with intervene(mods, lambda k, t: torch.zeros_like(t)):
                ablated = gpt2_model(**batch.inputs).logits
                assert count_hooks(gpt2_model) == 2
                raise RuntimeError("boom")
        assert not torch.allclose(ablated, before, atol=1e-4)  # the intervention did act
        assert count_hooks(gpt2_model) == 0
        torch.testing.assert_close(gpt2_model(**batch.inputs).logits, before, atol=0, rtol=0)

        # an edit that breaks the shape raises inside the forward, and still cleans up
        with pytest.raises(RuntimeError, match="shape"):
            with intervene(mods, lambda k, t: t[..., :3]):
                gpt2_model(**batch.inputs)
        assert count_hooks(gpt2_model) == 0
        torch.testing.assert_close(gpt2_model(**batch.inputs).logits, before, atol=0, rtol=0)


def test_intervene_identity_is_exact(bert_tokenizer, bert_model):
    a = adapter_for(bert_model, bert_tokenizer)
    batch = a.encode(_examples())
    mods = {s.layer: s.module for s in a.sites}
    with torch.no_grad():
        before = bert_model(**batch.inputs).logits
        with intervene(mods, lambda k, t: t.clone()):
            same = bert_model(**batch.inputs).logits
        with intervene({0: mods[0]}, lambda k, t: torch.zeros_like(t)):
            changed = bert_model(**batch.inputs).logits
    torch.testing.assert_close(same, before, atol=0, rtol=0)
    assert not torch.allclose(changed, before, atol=1e-4)
    assert count_hooks(bert_model) == 0


# ============================================================================ model loading errors


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every model cache at an empty directory and force offline mode."""
    import huggingface_hub.constants as hfc

    hf_home = tmp_path / "hf_home"
    torch_home = tmp_path / "torch_home"
    hf_home.mkdir()
    torch_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(hfc, "HF_HOME", str(hf_home), raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hf_home / "hub"), raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return hf_home, torch_home


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_load_hub_model_without_cache(empty_caches):
    hf_home, _ = empty_caches
    with pytest.raises(ModelLoadError) as e:
        load_model("gpt2", device="cpu")
    msg = _one_line(e)
    assert "'gpt2'" in msg
    assert str(hf_home) in msg  # where it looked
    assert "--weights random" in msg or "weights=random" in msg
    assert "local path" in msg
    assert "--download" in msg


def test_load_random_hub_model_without_tokenizer(empty_caches):
    with pytest.raises(ModelLoadError) as e:
        load_model("gpt2", weights="random", device="cpu")
    msg = _one_line(e)
    assert "'gpt2'" in msg and "tokenizer" in msg and "--tokenizer" in msg


def test_load_unknown_model_lists_registry():
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-model", device="cpu")
    msg = _one_line(e)
    assert "no-such-model" in msg
    for name in REGISTRY:
        assert name in msg


def test_load_resnet_pretrained_without_cache(empty_caches):
    _, torch_home = empty_caches
    with pytest.raises(ModelLoadError) as e:
        load_model("resnet18", device="cpu")
    msg = _one_line(e)
    assert "resnet18" in msg
    assert str(torch_home) in msg
    assert "weights=random" in msg or "--weights random" in msg


def test_load_bad_weights_value():
    with pytest.raises(ModelLoadError, match="weights"):
        load_model("resnet18", weights="imagenet", device="cpu")


# ============================================================================ probe validation


def _probe_error(data, tmp_path=None) -> str:
    with pytest.raises(ProbeError) as e:
        concept_from_dict(data, base_dir=tmp_path or ".", source="p.json")
    return _one_line(e)


def test_probe_not_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "negative": [\n  "a",\n', encoding="utf-8")
    with pytest.raises(ProbeError) as e:
        load_concept_file(bad)
    msg = _one_line(e)
    assert "not valid JSON" in msg and "bad.json" in msg and "line" in msg
    with pytest.raises(ProbeError) as e:
        load_concept(str(bad))  # same via load_concept with a path
    _one_line(e)


def test_probe_missing_file(tmp_path):
    with pytest.raises(ProbeError) as e:
        load_concept_file(tmp_path / "nope.json")
    assert "nope.json" in _one_line(e)


def test_probe_missing_negative():
    msg = _probe_error({"name": "x", "positive": ["a king", "a queen"]})
    assert "'negative'" in msg and "missing" in msg


def test_probe_empty_negative():
    msg = _probe_error({"name": "x", "positive": ["a king", "a queen"], "negative": []})
    assert "'negative'" in msg and "empty" in msg


def test_probe_too_few_negatives():
    msg = _probe_error({"name": "x", "positive": ["a king", "a queen"], "negative": ["a man"]})
    assert "negative" in msg and "2" in msg


def test_probe_unknown_modality():
    msg = _probe_error({"name": "x", "modality": "audio", "positive": ["a", "b"], "negative": ["c", "d"]})
    assert "'modality'" in msg and "audio" in msg


def test_probe_missing_image(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    msg = _probe_error({"name": "x", "modality": "image", "positive": ["ok.png", "missing.png"],
                        "negative": ["ok.png", "ok.png"]}, tmp_path)
    assert "positive[1]" in msg and "missing.png" in msg and "does not exist" in msg


def test_probe_non_string_entry():
    msg = _probe_error({"name": "x", "positive": ["a king", "a queen"], "negative": ["a man", 3]})
    assert "negative[1]" in msg
    msg = _probe_error({"name": "x", "groups": {"king": ["a [[king]]", None]}, "negative": ["a", "b"]})
    assert "groups.king[1]" in msg


def test_probe_bad_span_and_fields():
    msg = _probe_error({"name": "x", "positive": ["a [[king]] [[queen]]", "b"], "negative": ["a", "b"]})
    assert "positive[0]" in msg
    msg = _probe_error({"name": "x", "positive": ["a [[king", "b"], "negative": ["a", "b"]})
    assert "positive[0]" in msg and "unbalanced" in msg
    msg = _probe_error({"name": "x", "positive": ["a", "b"], "negative": ["a", "b"], "labels": []})
    assert "labels" in msg
    msg = _probe_error({"name": "x", "positive": ["a", "b"], "negative": ["a", "b"],
                        "tasks": [{"prompt": "The king sat on his"}]})
    assert "tasks[0]" in msg and "target" in msg


def test_unknown_concept_name():
    with pytest.raises(ProbeError) as e:
        load_concept("no_such_concept")
    msg = _one_line(e)
    assert "no_such_concept" in msg and "royalty" in msg


def test_valid_small_probe(small_probe):
    assert small_probe.group_names == ["king", "queen", "prince"]
    assert len(small_probe.positive) == 9 and len(small_probe.negative) == 6
    assert small_probe.positive[0].text == "The king spoke to the people."
    assert small_probe.positive[0].span_text == "king"
    assert small_probe.tasks[0] == TextTask("The king sat on his", " throne")
    # ungrouped positives are grouped by their marked word
    c = load_concept({"name": "x", "positive": ["a [[King]]", "the [[queen]]", "one [[king]]"], "negative": ["a", "b"]})
    assert c.positive_groups == ["word:king", "word:queen", "word:king"]


# ============================================================================ spans and pooling


@pytest.mark.parametrize("kind", ["gpt2", "bert", "roberta"])
def test_span_mask_marks_exactly_the_span(kind, request):
    tok = request.getfixturevalue(f"{kind}_tokenizer")
    model = {"gpt2": tiny_gpt2, "bert": tiny_bert, "roberta": tiny_roberta}[kind](tok, n_layer=1)
    a = adapter_for(model, tok)
    texts = ["The [[king]] spoke", "The [[crown prince]] spoke to them all", "Nobody spoke", "[[Zyzzyvas]] spoke"]
    batch = a.encode(_examples(texts))
    ids = batch.inputs["input_ids"]
    strip = lambda t: t.replace("\u0120", "").replace("##", "")  # noqa: E731
    for b, text in enumerate(texts):
        toks = batch.tokens[b]
        marked = [strip(toks[p]) for p in batch.span_mask[b].nonzero().flatten().tolist()]
        real = [p for p in range(ids.shape[1]) if batch.position_mask[b, p]]
        # position mask: exactly the non-special, non-padding tokens
        n_real = len(tok(parse_marked_text(text, "t").text, add_special_tokens=False)["input_ids"])
        assert len(real) == n_real
        assert all(toks[p] not in tok.all_special_tokens for p in real)
        if b == 0:
            assert marked == ["king"]
        elif b == 1:
            assert marked == ["crown", "prince"]
        elif b == 2:
            assert marked == []
        else:  # a word outside the vocabulary: all of its sub-word pieces, nothing else
            assert "".join(marked) == "zyzzyvas" and len(marked) > 1
        assert (batch.span_mask[b] <= batch.position_mask[b]).all()


def test_pool_activations_by_hand():
    # 3 examples x 5 positions x 2 units; row 0: [CLS] a b c [SEP]; row 1: a b pad pad pad; row 2: a b c d e
    view = torch.tensor([
        [[100., 0.], [1., 5.], [2., 6.], [3., 7.], [100., 0.]],
        [[4., -1.], [5., -2.], [99., 99.], [99., 99.], [99., 99.]],
        [[1., 1.], [2., 2.], [3., 3.], [4., 4.], [-5., 9.]],
    ])
    pm = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]).bool()
    sm = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]).bool()

    mx, arg = pool_activations(view, pm, sm, "max")
    assert mx.tolist() == [[3., 7.], [5., -1.], [4., 9.]]
    assert arg.tolist() == [[3, 3], [1, 0], [3, 4]]

    mean, _ = pool_activations(view, pm, sm, "mean")
    torch.testing.assert_close(mean, torch.tensor([[2., 6.], [4.5, -1.5], [1., 3.8]]))

    span, _ = pool_activations(view, pm, sm, "span")
    torch.testing.assert_close(span, torch.tensor([[1.5, 5.5], [5., -1.], [-0.5, 6.5]]))  # row 1: no span -> max
    auto, _ = pool_activations(view, pm, sm, "auto")
    torch.testing.assert_close(auto, span)
    nospan, _ = pool_activations(view, pm, None, "span")
    torch.testing.assert_close(nospan, mx)

    last, _ = pool_activations(view, pm, sm, "last")
    assert last.tolist() == [[3., 7.], [5., -2.], [-5., 9.]]

    allpos, _ = pool_activations(view, None, None, "max")
    assert allpos.tolist() == [[100., 7.], [99., 99.], [4., 9.]]

    with pytest.raises(NeuroLensError, match="pooling"):
        pool_activations(view, pm, sm, "median")


def test_adapter_pool_uses_span(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    batch = a.encode(_examples(["The [[king]] spoke to the people", "The farmer spoke"]))
    with torch.no_grad(), capture({0: a.sites[0].module}) as acts:
        a.forward(batch)
    act = acts[0]
    pooled, _ = a.pool(act, batch)
    k = batch.span_mask[0].nonzero().flatten()
    torch.testing.assert_close(pooled[0], act[0, k].mean(0))
    real = batch.position_mask[1]
    torch.testing.assert_close(pooled[1], act[1, real].max(0).values)


# ============================================================================ built-in concepts


def test_builtin_concepts():
    names = builtin_concept_names()
    for n in ["royalty", "negation", "past_tense", "plural", "red", "striped", "circle"]:
        assert n in names
    for n in ["royalty", "negation", "past_tense", "plural"]:
        c = load_concept(n)
        assert c.modality == "text"
        assert len(c.group_names) >= 5, n
        assert len(c.positive) >= 40 and len(c.negative) >= 40, n
        assert len(c.tasks) >= 1 and all(isinstance(t, TextTask) for t in c.tasks), n
        assert sum(ex.span is not None for ex in c.positive) >= len(c.positive) // 2, n
    for n in ["red", "striped", "circle"]:
        c = load_concept(n)
        assert c.modality == "image"
        assert len(c.positive) >= 10 and len(c.negative) >= 10
        for ex in c.positive + c.negative:
            assert Path(ex.path).is_file(), ex.path
        for t in c.tasks:
            assert isinstance(t, ImageTask) and Path(t.image).is_file()


def test_builtin_probes_tokenize_without_unk(gpt2_tokenizer, bert_tokenizer):
    from helpers import count_unk

    for n in ["royalty", "negation"]:
        c = load_concept(n)
        for ex in c.positive + c.negative:
            assert count_unk(gpt2_tokenizer, ex.text) == 0
            assert count_unk(bert_tokenizer, ex.text) == 0


# ============================================================================ confidence y (DESIGN §2)


def test_gpt2_confidence_is_log_p_target(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    tasks = [TextTask("the king sat on his", " throne"), TextTask("a long story about the", " zyzzyvas")]
    batch = a.encode_confidence(None, tasks)
    with torch.no_grad():
        y = a.confidence(batch, a.forward(batch))
        expected = []
        for t in tasks:
            p = gpt2_tokenizer(t.prompt, add_special_tokens=False)["input_ids"]
            tgt = gpt2_tokenizer(t.target, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(gpt2_model(input_ids=torch.tensor([p + tgt])).logits[0].float(), -1)
            expected.append(sum(logp[len(p) - 1 + j, tid] for j, tid in enumerate(tgt)))
    assert len(gpt2_tokenizer(" zyzzyvas", add_special_tokens=False)["input_ids"]) > 1  # a multi-token target
    assert y.shape == (2,)
    torch.testing.assert_close(y, torch.stack(expected), atol=1e-5, rtol=0)


def test_gpt2_confidence_without_tasks(gpt2_tokenizer, gpt2_model):
    a = adapter_for(gpt2_model, gpt2_tokenizer)
    exs = _examples(["the king spoke to the people", "the queen"])
    batch = a.encode_confidence(exs, None)
    with torch.no_grad():
        y = a.confidence(batch, a.forward(batch))
        for b, ex in enumerate(exs):
            ids = gpt2_tokenizer(ex.text)["input_ids"]
            logp = torch.log_softmax(gpt2_model(input_ids=torch.tensor([ids])).logits[0], -1)
            own = logp[: len(ids) - 1].max(-1).values.mean()
            torch.testing.assert_close(y[b], own, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_masked_lm_confidence_is_log_p_at_mask(kind, request):
    tok = request.getfixturevalue(f"{kind}_tokenizer")
    model = request.getfixturevalue(f"{kind}_model")
    a = adapter_for(model, tok)
    tasks = [TextTask("the king sat on his", " throne"), TextTask("a story about", " zyzzyvas")]
    batch = a.encode_confidence(None, tasks)
    with torch.no_grad():
        y = a.confidence(batch, a.forward(batch))
        expected = []
        for t in tasks:
            p = tok(t.prompt, add_special_tokens=False)["input_ids"]
            tgt = tok(t.target, add_special_tokens=False)["input_ids"]
            ids = [tok.cls_token_id] + p + [tok.mask_token_id] * len(tgt) + [tok.sep_token_id]
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
            expected.append(sum(logp[1 + len(p) + j, tid] for j, tid in enumerate(tgt)))
    torch.testing.assert_close(y, torch.stack(expected), atol=1e-5, rtol=0)
    # the mask positions count as real positions; [CLS]/[SEP]/padding do not
    row = batch.inputs["input_ids"][0]
    assert batch.position_mask[0, 0].item() is False
    assert batch.position_mask[0][row == tok.mask_token_id].all()


def test_masked_lm_confidence_without_tasks_masks_span(bert_tokenizer, bert_model):
    a = adapter_for(bert_model, bert_tokenizer)
    exs = _examples(["the [[king]] spoke", "the queen spoke"])
    batch = a.encode_confidence(exs, None)
    tok = bert_tokenizer
    with torch.no_grad():
        y = a.confidence(batch, a.forward(batch))
        # row 0: the span "king" is masked and scored; row 1: no span -> the last real token
        ids0 = [tok.cls_token_id] + tok("the king spoke", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
        king = ids0[2]
        ids0[2] = tok.mask_token_id
        lp0 = torch.log_softmax(bert_model(input_ids=torch.tensor([ids0])).logits[0], -1)[2, king]
        ids1 = [tok.cls_token_id] + tok("the queen spoke", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
        spoke = ids1[3]
        ids1[3] = tok.mask_token_id
        lp1 = torch.log_softmax(bert_model(input_ids=torch.tensor([ids1])).logits[0], -1)[3, spoke]
    torch.testing.assert_close(y, torch.stack([lp0, lp1]), atol=1e-5, rtol=0)


def test_masked_lm_tasks_with_real_transformers5_tokenizer(minilm):
    tok = minilm.tokenizer  # the real BertTokenizer of all-MiniLM-L6-v2 (transformers 5, tokenizers backend)
    model = tiny_bert(tok, n_layer=1, hidden=16)
    a = adapter_for(model, tok)
    batch = a.encode_confidence(None, [TextTask("the king sat on his", " throne")])
    row = batch.inputs["input_ids"][0].tolist()
    assert row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id and tok.mask_token_id in row


def test_resnet_confidence_is_log_p_label(resnet18, image_files):
    a = resnet18
    tasks = [ImageTask(image_files[0], 3), ImageTask(image_files[2], 917)]
    batch = a.encode_confidence(None, tasks)
    x = torch.stack([load_image_tensor(p, 64) for p in (image_files[0], image_files[2])])
    torch.testing.assert_close(batch.inputs["x"], x)
    with torch.no_grad():
        logits = a.forward(batch)
        y = a.confidence(batch, logits)
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(y, torch.stack([logp[0, 3], logp[1, 917]]), atol=1e-5, rtol=0)
    # without tasks: log p of the model's own top-1 class
    own = a.encode_confidence(load_concept("red").positive[:2], None)
    own.inputs["x"] = x  # same images: reuse the logits above
    torch.testing.assert_close(a.confidence(own, logits), logp.max(-1).values, atol=1e-5, rtol=0)
    with pytest.raises(NeuroLensError, match="out of range"):
        a.encode_confidence(None, [ImageTask(image_files[0], 1000)])


def test_scan_leaves_model_clean(gpt2_tokenizer, gpt2_model, small_probe):
    import neurolens_lightning as nl

    a = adapter_for(gpt2_model, gpt2_tokenizer)
    batch = a.encode(_examples())
    gpt2_model.train()  # the scan must run in eval mode and restore the flag
    with torch.no_grad():
        gpt2_model.eval()
        before = gpt2_model(**batch.inputs).logits
        gpt2_model.train()
    params = {k: v.clone() for k, v in gpt2_model.state_dict().items()}
    res = nl.scan(model=gpt2_model, tokenizer=gpt2_tokenizer, concept=small_probe, top_k=3)
    assert gpt2_model.training
    assert count_hooks(gpt2_model) == 0
    assert all(p.grad is None for p in gpt2_model.parameters())
    for k, v in gpt2_model.state_dict().items():
        assert torch.equal(v, params[k]), k
    gpt2_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(gpt2_model(**batch.inputs).logits, before, atol=0, rtol=0)
    assert len(res.ranked(3)) == 3
    assert all(c["role"] == "candidate" for c in res.candidates(3))  # a random model may have none
    assert res.scores.selectivity.shape == (256,)


def test_single_group_is_split_for_consistency():
    """One phrasing group says nothing about consistency: it is split by marked word, else into folds."""
    from neurolens_lightning.concepts import concept_from_dict

    by_word = concept_from_dict({"name": "x", "groups": {"only": ["a [[king]]", "a [[queen]]", "the [[king]] x",
                                                                  "the [[queen]] y"]}, "negative": ["a b", "c d"]})
    assert by_word.positive_groups == ["word:king", "word:queen", "word:king", "word:queen"]
    folds = concept_from_dict({"name": "x", "positive": ["a b c", "d e", "f g", "h i", "j k"],
                               "negative": ["a b", "c d"]})
    assert len(folds.group_names) == 2 and folds.positive_groups[:2] == ["fold0", "fold1"]
    kept = concept_from_dict({"name": "x", "groups": {"g1": ["a", "b"], "g2": ["c", "d"]}, "negative": ["e", "f"]})
    assert kept.group_names == ["g1", "g2"]
