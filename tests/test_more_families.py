"""More model families: DistilBERT, ELECTRA, DeBERTa-v2, ModernBERT (text); HF ViT, torchvision ViT and ConvNeXt.

On tiny random models (no downloads), per family:

1. the adapter is chosen automatically and has one site per layer with the right unit count;
2. the captured site equals a plain hook on the same tensor (the next linear layer's input,
   or for ConvNeXt the block outputs computed by running ``features`` by hand);
3. zeroing unit u through ``hooks.intervene`` equals zeroing column u of the next linear layer;
4. y is finite (tasks and own predictions), the block re-entry ``tail`` reproduces the forward's outputs where
   an adapter offers re-entry, ViT pools the mean over patch tokens without [CLS];
plus ablation with block re-entry == full forwards (ELECTRA, both ViTs) and end-to-end ``scan(..., ablate=True)``
runs (DistilBERT MLM, ModernBERT / ELECTRA base models with a probe head, torchvision ViT, ConvNeXt) that leave
no hook behind.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as T
from helpers import make_word_tokenizer, small_probe_dict

import neurolens_lightning as nl
from neurolens_lightning.adapters import (ConvNeXtAdapter, DebertaV2Adapter, DistilBertAdapter, ElectraAdapter,
                                          HFViTAdapter, ModernBertAdapter, TorchvisionViTAdapter, adapter_for,
                                          family_of)
from neurolens_lightning.concepts import TextExample, TextTask
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, count_hooks, intervene

N_LAYERS, HIDDEN, UNITS = 2, 32, 48
EXAMPLES = [TextExample("The king sat on the old chair by the river.", span=(4, 8)), TextExample("A dog ran."),
            TextExample("They looked at the queen in the morning.")]
TASKS = [TextTask("The king sat on the", " throne"), TextTask("A dog", " ran")]

TEXT = {  # family -> (adapter class, masked LM class, base model class, family_of)
    "distilbert": (DistilBertAdapter, "DistilBertForMaskedLM", "DistilBertModel"),
    "electra": (ElectraAdapter, "ElectraForMaskedLM", "ElectraModel"),
    "deberta-v2": (DebertaV2Adapter, "DebertaV2ForMaskedLM", "DebertaV2Model"),
}
if hasattr(T, "ModernBertForMaskedLM"):
    TEXT["modernbert"] = (ModernBertAdapter, "ModernBertForMaskedLM", "ModernBertModel")


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("bert")


def _config(family: str, tok):
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if family == "distilbert":
        return T.DistilBertConfig(**ids, dim=HIDDEN, hidden_dim=UNITS, n_layers=N_LAYERS, n_heads=2, dropout=0.0,
                                  attention_dropout=0.0, max_position_embeddings=128)
    common = dict(ids, hidden_size=HIDDEN, intermediate_size=UNITS, num_hidden_layers=N_LAYERS,
                  num_attention_heads=2, max_position_embeddings=128)
    if family == "electra":  # embedding size != hidden size: exercises embeddings_project
        return T.ElectraConfig(**common, embedding_size=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if family == "deberta-v2":
        return T.DebertaV2Config(**common, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                 position_buckets=16, max_relative_positions=32, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    if family == "modernbert":
        return T.ModernBertConfig(**common, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                                  bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                  global_attn_every_n_layers=2, local_attention=8)
    raise KeyError(family)


def tiny_text(family: str, tok, base: bool = False, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = getattr(T, TEXT[family][2 if base else 1])
    model = cls(_config(family, tok)).eval()
    with torch.no_grad():  # larger weights: every unit visibly moves the logits
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    return model


def _next_linear(adapter, i: int) -> torch.nn.Linear:
    """The linear layer that reads site ``i``'s units (the one whose weight column u is unit u's write)."""
    layer = adapter._encoder_layers[i]
    fam = adapter.family
    if fam == "distilbert":
        return layer.ffn.lin2
    if fam == "modernbert":
        return layer.mlp.Wo
    return layer.output.dense


def _sites_and_prehooks(adapter, downs, batch):
    """One forward of ``batch``: the adapter's site activations (``capture``) and, from plain forward pre-hooks,
    the inputs of the ``downs`` modules (what each site must equal). Returns ``(acts, plain, outputs)``."""
    plain: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _m, a, i=i: plain.__setitem__(i, a[0])) for i, m in enumerate(downs)]
    try:
        with torch.no_grad(), capture({i: s.module for i, s in enumerate(adapter.sites)}) as acts:
            out = adapter.forward(batch)
    finally:
        for h in handles:
            h.remove()
    return acts, plain, out


@pytest.mark.parametrize("family", list(TEXT))
def test_text_family_sites_and_capture(family, tok):
    cls = TEXT[family][0]
    model = tiny_text(family, tok)
    assert family_of(model) == family
    adapter = adapter_for(model, tok)
    assert type(adapter) is cls and adapter.family == family and adapter.has_output_head
    assert [s.units for s in adapter.sites] == [UNITS] * N_LAYERS
    assert adapter.sites == adapter.sites  # the same site objects every time (ablation looks them up)
    base = adapter_for(tiny_text(family, tok, base=True), tok)
    assert type(base) is cls and not base.has_output_head and [s.units for s in base.sites] == [UNITS] * N_LAYERS
    assert len({s.name for s in adapter.sites}) == N_LAYERS

    batch = adapter.encode(EXAMPLES)
    acts, plain, out = _sites_and_prehooks(adapter, [_next_linear(adapter, i) for i in range(N_LAYERS)], batch)
    assert count_hooks(model) == 0
    for i in range(N_LAYERS):
        assert acts[i].shape == (batch.size, batch.inputs["input_ids"].shape[1], UNITS)
        assert torch.allclose(acts[i], plain[i], atol=1e-6, rtol=0)
        assert acts[i].abs().sum() > 0
    assert out.logits.shape[:2] == batch.inputs["input_ids"].shape

    # y: tasks at [MASK] and the masked span / last token without tasks, finite and per example
    for b in (adapter.encode_confidence(None, TASKS), adapter.encode_confidence(EXAMPLES, None)):
        with torch.no_grad():
            y = adapter.confidence(b, adapter.forward(b))
        assert y.shape == (b.size,) and torch.isfinite(y).all() and (y <= 0).all()
    with torch.no_grad():  # the base model: the probe head's features
        bb = base.encode(EXAMPLES)
        assert base.features(bb, base.forward(bb)).shape == (len(EXAMPLES), HIDDEN)


@pytest.mark.parametrize("family", list(TEXT))
def test_text_zeroing_a_unit_equals_deleting_its_column(family, tok):
    model = tiny_text(family, tok)
    adapter = adapter_for(model, tok)
    batch = adapter.encode(EXAMPLES)
    for layer, u in ((0, 3), (N_LAYERS - 1, UNITS - 1)):
        site = adapter.sites[layer].module

        def zero(_k, out, u=u):
            out = out.clone()
            out[..., u] = 0
            return out

        with torch.no_grad():
            clean = adapter.forward(batch).logits
            with intervene({0: site}, zero):
                hooked = adapter.forward(batch).logits
        assert count_hooks(model) == 0
        edited = copy.deepcopy(model)
        ref = adapter_for(edited, tok)
        with torch.no_grad():
            _next_linear(ref, layer).weight[:, u] = 0
            cut = ref.forward(batch).logits
        assert (hooked - clean).abs().max() > 1e-4  # the unit matters
        assert torch.allclose(hooked, cut, atol=1e-5, rtol=1e-5), (hooked - cut).abs().max()


def test_electra_tail_reproduces_the_forward(tok):
    """ELECTRA offers block re-entry: its MLM head from the last layer's output gives the forward's logits."""
    for base in (False, True):
        model = tiny_text("electra", tok, base=base)
        adapter = adapter_for(model, tok)
        assert adapter.blocks is not None and len(adapter.blocks) == N_LAYERS
        batch = adapter.encode_confidence(None, TASKS) if not base else adapter.encode(EXAMPLES)
        with torch.no_grad(), capture({0: adapter.blocks[-1]}) as last:
            out = adapter.forward(batch)
            tail = adapter.tail(last[0], batch)
        if base:
            assert torch.allclose(tail.last_hidden_state, out.last_hidden_state, atol=1e-5)
        else:
            b_idx = torch.arange(batch.size).unsqueeze(1)
            want = out.logits[b_idx, batch.target["pred_pos"]]
            assert torch.allclose(tail.logits, want, atol=1e-5)
    for family in ("distilbert", "deberta-v2") + (("modernbert",) if "modernbert" in TEXT else ()):
        assert adapter_for(tiny_text(family, tok), tok).blocks is None  # full forwards only


@pytest.mark.parametrize("family,base", [("distilbert", False), ("modernbert", True), ("electra", True)])
def test_scan_with_ablation_on_tiny_encoders(family, base, tok):
    """End to end, with the MLM head (DistilBERT) and with a probe head on a base model; no hook is left behind
    (transformers 5 installs output-capturing hooks when asked for hidden states: base models are not asked)."""
    if family not in TEXT:
        pytest.skip(f"{family} is not in this transformers")
    model = tiny_text(family, tok, base=base)
    model.train()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    res = nl.scan(model, small_probe_dict(), tokenizer=tok, ablate=True, neurons=[(0, 1)], test_top_k=False,
                  null_samples=20, top_k=2)
    assert count_hooks(model) == 0 and model.training
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert res.model["family"] == family and res.scores.selectivity.shape == (N_LAYERS * UNITS,)
    rec = res.ablation[(0, 1)]
    assert math.isfinite(rec["delta"]) and rec["null_n"] >= 1 and rec["verdict"]  # sequential p: it may stop early


# ----------------------------------------------------------------------------- vision

def tiny_hf_vit(head: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                      num_attention_heads=2, intermediate_size=64, num_labels=10, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)
    return (T.ViTForImageClassification(cfg) if head else T.ViTModel(cfg)).eval()


def tiny_tv_vit(seed: int = 0):
    from torchvision.models import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(image_size=32, patch_size=16, num_layers=N_LAYERS, num_heads=2, hidden_dim=32,
                              mlp_dim=64, num_classes=10).eval()
    with torch.no_grad():  # torchvision initializes the head to zero: every logit would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def tiny_convnext(seed: int = 0):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(seed)
    return ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)], num_classes=10).eval()


def _images(n: int = 3, size: int = 32, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, size, size, generator=g) for _ in range(n)]


def _vit_down(adapter, i: int) -> torch.nn.Linear:
    if isinstance(adapter, HFViTAdapter):
        layer = adapter._layers[i]
        return layer.mlp.fc2 if hasattr(layer, "mlp") else layer.output.dense
    return adapter.model.encoder.layers[i].mlp[3]


@pytest.mark.parametrize("which", ["hf", "hf_base", "torchvision"])
def test_vit_sites_capture_pooling_and_zeroing(which):
    model = tiny_tv_vit() if which == "torchvision" else tiny_hf_vit(head=which == "hf")
    assert family_of(model) == "vit"
    adapter = adapter_for(model)
    assert isinstance(adapter, TorchvisionViTAdapter if which == "torchvision" else HFViTAdapter)
    assert [s.units for s in adapter.sites] == [64] * N_LAYERS and adapter.image_size == 32
    assert adapter.sites[0].name.endswith(":input")
    n_tok = 1 + (32 // (16 if which == "torchvision" else 8)) ** 2

    batch = adapter.encode(_images())
    assert batch.position_mask.shape == (3, n_tok) and not batch.position_mask[:, 0].any()
    acts, plain, out = _sites_and_prehooks(adapter, [_vit_down(adapter, i) for i in range(N_LAYERS)], batch)
    assert count_hooks(model) == 0
    for i in range(N_LAYERS):
        assert acts[i].shape == (3, n_tok, 64) and torch.allclose(acts[i], plain[i], atol=1e-6, rtol=0)
        pooled, _ = adapter.pool(acts[i], batch)  # mean over patch tokens, [CLS] excluded
        assert torch.allclose(pooled, acts[i][:, 1:].mean(1), atol=1e-6)

    # re-entry: the tail from the last block's output reproduces the forward
    with torch.no_grad(), capture({0: adapter.blocks[-1]}) as last:
        out = adapter.forward(batch)
        tail = adapter.tail(last[0], batch)
    if which == "hf_base":
        assert not adapter.has_output_head
        assert torch.allclose(tail.last_hidden_state, out.last_hidden_state, atol=1e-5)
        assert adapter.features(batch, out).shape == (3, HIDDEN)
        return
    assert torch.allclose(tail, out, atol=1e-5)
    cb = adapter.encode_confidence(_images(), None)
    with torch.no_grad():
        cb = adapter.fix_targets(cb, adapter.forward(cb))
        y = adapter.confidence(cb, adapter.forward(cb))
    assert torch.allclose(y, torch.log_softmax(out, -1).max(-1).values, atol=1e-5)

    # zeroing unit u of a site == zeroing column u of the MLP's second linear layer
    u = 5

    def zero(_k, t):
        t = t.clone()
        t[..., u] = 0
        return t

    with torch.no_grad(), intervene({0: adapter.sites[1].module}, zero):
        hooked = adapter.forward(batch)
    edited = copy.deepcopy(model)
    ref = adapter_for(edited)
    with torch.no_grad():
        _vit_down(ref, 1).weight[:, u] = 0
        cut = ref.forward(batch)
    assert count_hooks(model) == 0 and (hooked - out).abs().max() > 1e-6
    assert torch.allclose(hooked, cut, atol=1e-5, rtol=1e-5)


def test_vit_image_size_is_the_models():
    with pytest.raises(NeuroLensError, match="built for 32x32"):
        adapter_for(tiny_tv_vit(), image_size=64)
    adapter = adapter_for(tiny_hf_vit(), image_size=32)
    with pytest.raises(NeuroLensError, match="32x32"):
        adapter.encode(_images(1, size=48))


def test_convnext_sites_and_capture():
    model = tiny_convnext()
    assert family_of(model) == "convnext"
    adapter = adapter_for(model, image_size=32)
    assert isinstance(adapter, ConvNeXtAdapter) and adapter.blocks is None and adapter.num_classes == 10
    assert [s.units for s in adapter.sites] == [8, 8, 16]
    assert [s.name for s in adapter.sites] == ["features.1.0", "features.1.1", "features.3.0"]
    batch = adapter.encode(_images())
    with torch.no_grad(), capture({i: s.module for i, s in enumerate(adapter.sites)}) as acts:
        out = adapter.forward(batch)
    with torch.no_grad():  # by hand: run the stem / stages / downsampling layers one by one
        x, want = batch.inputs["x"], []
        for stage in model.features:
            if isinstance(stage, torch.nn.Sequential) and all(type(b).__name__ == "CNBlock" for b in stage):
                for b in stage:
                    x = b(x)
                    want.append(x)
            else:
                x = stage(x)
    for i, w in enumerate(want):
        assert torch.allclose(acts[i], w, atol=1e-6, rtol=0)
    pooled, _ = adapter.pool(acts[2], batch)
    assert torch.allclose(pooled, acts[2].mean((2, 3)), atol=1e-6)
    cb = adapter.encode_confidence(_images(), None)
    with torch.no_grad():
        cb = adapter.fix_targets(cb, out)
        y = adapter.confidence(cb, out)
    assert torch.allclose(y, torch.log_softmax(out, -1).max(-1).values, atol=1e-6)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("which", ["tv_vit", "convnext"])
def test_scan_with_ablation_on_tiny_vision_models(which):
    model = tiny_tv_vit() if which == "tv_vit" else tiny_convnext()
    model.train()
    kw = {} if which == "tv_vit" else {"image_size": 32}
    res = nl.scan(model, "red", ablate=True, neurons=[(0, 1)], test_top_k=False, null_samples=20, top_k=2, **kw)
    assert count_hooks(model) == 0 and model.training
    if which == "tv_vit":
        assert res.model["family"] == "vit" and res.scores.selectivity.shape == (N_LAYERS * 64,)
    else:
        assert res.model["family"] == "convnext" and res.scores.selectivity.shape == (8 + 8 + 16,)
    rec = res.ablation[(0, 1)]
    assert math.isfinite(rec["delta"]) and rec["null_n"] >= 1 and rec["verdict"]  # sequential p: it may stop early


def _runner_deltas(adapter, chunks, reuse: bool) -> torch.Tensor:
    from neurolens_lightning.ablation import AblationJob, AblationRunner

    jobs = [AblationJob([(0, 1)], "null", 0), AblationJob([(1, 5)], "null", 1), AblationJob([(0, 7)], "null", 0),
            AblationJob([(0, 2), (1, 9)], "joint")]
    runner = AblationRunner(adapter, adapter.sites, jobs, replicas=2, reuse=reuse)
    assert runner.reuse is reuse
    for b in chunks:
        runner.step("concept", b)
    return runner.deltas("concept")


@pytest.mark.parametrize("which", ["electra", "hf_vit", "tv_vit"])
def test_ablation_with_reentry_equals_full_forwards(which, tok):
    if which == "electra":
        adapter = adapter_for(tiny_text("electra", tok), tok)
        chunks = [adapter.encode_confidence(None, TASKS), adapter.encode_confidence(EXAMPLES, None)]
    else:
        adapter = adapter_for(tiny_hf_vit() if which == "hf_vit" else tiny_tv_vit())
        chunks = [adapter.encode_confidence(_images(2), None), adapter.encode_confidence(_images(3, seed=2), None)]
    full = _runner_deltas(adapter, chunks, reuse=False)
    assert (full.abs().max(dim=1).values > 1e-6).all(), full  # every job reaches y
    torch.testing.assert_close(_runner_deltas(adapter, chunks, reuse=True), full, atol=1e-5, rtol=0)
    assert count_hooks(adapter.model) == 0
