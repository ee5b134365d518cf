"""Decoder LMs beyond GPT-2: gated-MLP decoders (Llama, Mistral, Qwen2/3, Gemma/2/3, Phi-3), GPT-NeoX, OPT.

A neuron is the input of the MLP's down projection (``adapters/decoder.py``), hooked through
``hooks.InputOf`` (a forward pre-hook on the projection). Per family, on tiny random models
built from configs with the local word tokenizer (no downloads):

1. the adapter is chosen automatically; one site per layer, ``intermediate_size`` units;
2. the captured site equals the down projection's input computed by hand from the MLP input;
3. zeroing unit u at every position equals deleting column u of the down projection's weight;
4. y (own next tokens) of each example is the same alone, left- and right-padded;
5. ``tail`` (block re-entry) reproduces the forward's logits, soft-capping and OPT's project_out included;
6. ablation with block re-entry equals ablation by full forwards;
plus ``InputOf`` itself, task y after a BOS, base models / unsupported heads, a local model directory,
and an end-to-end ``scan(..., ablate=True)`` on a tiny Llama that leaves no hook behind.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as T
from helpers import naive_deltas, planted_probe, steered_confidence
from tokenizers import processors

import neurolens_lightning as nl
from neurolens_lightning.ablation import AblationJob, AblationRunner
from neurolens_lightning.adapters import DecoderAdapter, adapter_for, family_of
from neurolens_lightning.concepts import TextExample, TextTask, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import InputOf, capture, count_hooks, intervene

N_LAYERS, HIDDEN, UNITS = 3, 32, 48

EXAMPLES = [TextExample("The king sat on the old chair by the river."), TextExample("A dog ran."),
            TextExample("They looked at the queen in the morning."), TextExample("Everyone saw the man.")]


def _config(family: str, tok) -> tuple[type, object]:
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, max_position_embeddings=128, num_hidden_layers=N_LAYERS,
               hidden_size=HIDDEN, num_attention_heads=4)
    gated = dict(ids, intermediate_size=UNITS, num_key_value_heads=2)
    if family == "llama":
        return T.LlamaForCausalLM, T.LlamaConfig(**gated)
    if family == "mistral":  # a window shorter than the examples: padding must not move it
        return T.MistralForCausalLM, T.MistralConfig(**gated, sliding_window=4)
    if family == "qwen2":
        return T.Qwen2ForCausalLM, T.Qwen2Config(**gated)
    if family == "qwen3":
        return T.Qwen3ForCausalLM, T.Qwen3Config(**gated, head_dim=8)
    if family == "gemma":
        return T.GemmaForCausalLM, T.GemmaConfig(**gated, head_dim=8)
    if family == "gemma2":
        return T.Gemma2ForCausalLM, T.Gemma2Config(**gated, head_dim=8, sliding_window=4,
                                                   final_logit_softcapping=3.0)
    if family == "gemma3":
        return T.Gemma3ForCausalLM, T.Gemma3TextConfig(
            **gated, head_dim=8, sliding_window=4, final_logit_softcapping=3.0,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    if family == "phi3":
        return T.Phi3ForCausalLM, T.Phi3Config(**gated)
    if family == "gpt_neox":
        return T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**ids, intermediate_size=UNITS, rotary_pct=0.5)
    if family == "opt":
        return T.OPTForCausalLM, T.OPTConfig(**ids, ffn_dim=UNITS, word_embed_proj_dim=HIDDEN, dropout=0.0)
    if family == "opt350":  # post-LN layers, no final norm, project_in / project_out (like opt-350m)
        return T.OPTForCausalLM, T.OPTConfig(**ids, ffn_dim=UNITS, word_embed_proj_dim=16, do_layer_norm_before=False,
                                             dropout=0.0)
    raise KeyError(family)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt_neox", "opt", "opt350"]


def tiny(family: str, tok, seed: int = 0) -> torch.nn.Module:
    """A random tiny decoder with weights scaled up so that every unit has a visible effect on the logits."""
    cls, cfg = _config(family, tok)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer):
    return copy.deepcopy(gpt2_tokenizer)  # tests set padding_side: keep the session tokenizer untouched


@pytest.fixture
def right(tok):
    tok.padding_side = "right"
    yield tok
    tok.padding_side = "right"


def _mlp_by_hand(family: str, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The down projection's input from the MLP's input ``x``, written out from the architecture."""
    if family in ("gpt_neox",):
        return layer.mlp.act(layer.mlp.dense_h_to_4h(x))
    if family in ("opt", "opt350"):
        return layer.activation_fn(layer.fc1(x))
    if family == "phi3":
        gate, up = layer.mlp.gate_up_proj(x).chunk(2, dim=-1)
        return layer.mlp.activation_fn(gate) * up
    return layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)


def _first_projection(family: str, layer: torch.nn.Module) -> torch.nn.Module:
    return {"gpt_neox": lambda: layer.mlp.dense_h_to_4h, "opt": lambda: layer.fc1, "opt350": lambda: layer.fc1,
            "phi3": lambda: layer.mlp.gate_up_proj}.get(family, lambda: layer.mlp.gate_proj)()


def _down(adapter, i):
    return adapter.sites[i].module.target


# ----------------------------------------------------------------------------- 1. selection and sites


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_chosen_with_one_site_per_layer(family, right):
    model = tiny(family, right)
    adapter = adapter_for(model, right)
    assert isinstance(adapter, DecoderAdapter) and family_of(model) == "decoder" and adapter.family == "decoder"
    units = model.config.ffn_dim if family.startswith("opt") else model.config.intermediate_size
    assert adapter.num_layers == N_LAYERS and [s.units for s in adapter.sites] == [units] * N_LAYERS == [UNITS] * 3
    assert adapter.has_output_head and len(adapter.blocks) == N_LAYERS
    # the site is the input of each layer's own down projection (fc2 / dense_4h_to_h / down_proj)
    names = {id(m): n for n, m in model.named_modules()}
    for i, s in enumerate(adapter.sites):
        assert isinstance(s.module, InputOf) and s.module.target.in_features == UNITS
        assert names[id(s.module.target)].split(".")[-1] in ("down_proj", "dense_4h_to_h", "fc2")
        assert f".{i}." in s.name and s.name.endswith(":input")
    assert adapter.sites == adapter.sites  # stable objects: the runners look sites up by identity


def test_base_model_and_unsupported_heads(right):
    base = tiny("llama", right).model  # LlamaModel: no LM head, y from a fitted probe head
    adapter = adapter_for(base, right)
    assert isinstance(adapter, DecoderAdapter) and not adapter.has_output_head and adapter.num_layers == N_LAYERS
    batch = adapter.encode_confidence(EXAMPLES, None)
    with torch.no_grad():
        full = adapter.forward(batch).last_hidden_state
        last = {}
        h = adapter.blocks[-1].register_forward_hook(lambda m, a, o: last.__setitem__("h", o))
        try:
            adapter.forward(batch)
        finally:
            h.remove()
        torch.testing.assert_close(adapter.tail(last["h"], batch).last_hidden_state, full, atol=1e-5, rtol=0)
    _, cfg = _config("llama", right)
    cfg.num_labels = 2
    with pytest.raises(NeuroLensError, match="unsupported model type LlamaForSequenceClassification"):
        adapter_for(T.LlamaForSequenceClassification(cfg), right)
    moe = T.MixtralForCausalLM(T.MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1, num_local_experts=2))
    with pytest.raises(NeuroLensError, match="unsupported model type"):  # MoE MLPs: not one down projection
        adapter_for(moe, right)


# ----------------------------------------------------------------------------- 2. the site is the down_proj input


@pytest.mark.parametrize("family", FAMILIES)
def test_site_equals_down_projection_input_by_hand(family, right):
    model = tiny(family, right)
    adapter = adapter_for(model, right)
    batch = adapter.encode(EXAMPLES)
    assert not batch.inputs["attention_mask"].bool().all()
    layers = list(adapter._layers)
    mlp_in: dict[int, torch.Tensor] = {}
    handles = [_first_projection(family, layer).register_forward_pre_hook(
        lambda m, args, i=i: mlp_in.setdefault(i, args[0].detach())) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad(), capture({i: s.module for i, s in enumerate(adapter.sites)}) as acts:
            adapter.forward(batch)
    finally:
        for h in handles:
            h.remove()
    B, P = batch.inputs["input_ids"].shape
    for i, layer in enumerate(layers):
        with torch.no_grad():
            want = _mlp_by_hand(family, layer, mlp_in[i]).reshape(B, P, UNITS)
        assert acts[i].shape == (B, P, UNITS)
        torch.testing.assert_close(acts[i], want, atol=1e-5, rtol=1e-5)
        assert want.abs().max() > 1e-2  # a real signal, not two zero tensors
    assert count_hooks(model) == 0


# ----------------------------------------------------------------------------- 3. zeroing a unit = deleting its column


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_a_unit_equals_deleting_its_down_projection_column(family, right):
    model = tiny(family, right)
    adapter = adapter_for(model, right)
    batch = adapter.encode(EXAMPLES)
    layer, unit = 1, 5

    def zero(key, t):
        t = t.clone()
        adapter.site_view(t)[..., unit] = 0
        return t

    with torch.no_grad():
        clean = adapter.forward(batch).logits
        with intervene({layer: adapter.sites[layer].module}, zero):
            zeroed = adapter.forward(batch).logits
        _down(adapter, layer).weight[:, unit] = 0  # the neuron's write to the residual stream, removed
        deleted = adapter.forward(batch).logits
    assert (zeroed - clean).abs().max() > 1e-2  # the unit matters, so the comparison can fail
    torch.testing.assert_close(zeroed, deleted, atol=1e-5, rtol=0)
    assert count_hooks(model) == 0


# ----------------------------------------------------------------------------- 4. padding


@pytest.mark.parametrize("family", FAMILIES)
def test_confidence_without_tasks_is_independent_of_padding(family, tok):
    model = tiny(family, tok)
    adapter = adapter_for(model, tok)
    ys = {}
    try:
        for side in ("left", "right"):
            tok.padding_side = side
            batch = adapter.encode_confidence(EXAMPLES, None)
            attn = batch.inputs["attention_mask"].bool()
            assert not attn.all() and (attn[:, -1].all() if side == "left" else attn[:, 0].all())
            with torch.no_grad():
                ys[side] = adapter.confidence(batch, adapter.forward(batch)).double()
                alone = torch.cat([adapter.confidence(b, adapter.forward(b)) for b in
                                   (adapter.encode_confidence([ex], None) for ex in EXAMPLES)]).double()
            torch.testing.assert_close(ys[side], alone, atol=1e-5, rtol=0,
                                       msg=lambda m: f"{family} padding_side={side}: {m}")
    finally:
        tok.padding_side = "right"
    torch.testing.assert_close(ys["left"], ys["right"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_layers_see_positions_counted_over_real_tokens(family, tok):
    """Under left padding every layer sees the positions 0..n-1 on an example's n real tokens.

    (Rotary attention depends on position differences only, so y alone cannot tell a shifted start;
    learned positions (OPT) and long-context RoPE scalings can.)"""
    model = tiny(family, tok)
    adapter = adapter_for(model, tok)
    seen = {}
    h = adapter.blocks[0].register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        tok.padding_side = "left"
        batch = adapter.encode_confidence(EXAMPLES, None)
        with torch.no_grad():
            adapter.forward(batch)
    finally:
        h.remove()
        tok.padding_side = "right"
    attn = batch.inputs["attention_mask"].bool()
    pos = seen["position_ids"].expand_as(attn)
    for b in range(batch.size):
        assert pos[b][attn[b]].tolist() == list(range(int(attn[b].sum())))
    assert not attn[:, 0].all()


# ----------------------------------------------------------------------------- 5./6. re-entry


def _tasks():
    return [TextTask("the seat of the king", " throne"), TextTask("they bowed to the queen", " throne"),
            TextTask("a dog", " ran")]


@pytest.mark.parametrize("family", FAMILIES)
def test_tail_reproduces_the_forward(family, right):
    model = tiny(family, right)
    adapter = adapter_for(model, right)
    for batch in (adapter.encode_confidence(EXAMPLES, None), adapter.encode_confidence(None, _tasks())):
        last = {}
        h = adapter.blocks[-1].register_forward_hook(lambda m, a, o: last.__setitem__("h", o))
        try:
            with torch.no_grad():
                out = adapter.forward(batch)
                y = adapter.confidence(batch, out)
                tail = adapter.tail(last["h"], batch)
                y_tail = adapter.confidence(batch, tail)
        finally:
            h.remove()
        b_idx = torch.arange(batch.size).unsqueeze(1)
        torch.testing.assert_close(tail.logits, out.logits[b_idx, batch.target["pred_pos"]], atol=1e-5, rtol=0)
        torch.testing.assert_close(y_tail, y, atol=1e-5, rtol=0)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_with_reentry_equals_full_forwards(family, right):
    model = tiny(family, right)
    adapter = adapter_for(model, right)
    c = load_concept(planted_probe("gpt2"))
    # tasks (prompt + target, right-padded) and padded examples of different lengths
    chunks = [adapter.encode_confidence(None, c.tasks[:3]),
              adapter.encode_confidence([c.positive[0], c.positive[3], c.negative[0]], None)]
    assert (chunks[1].inputs["attention_mask"] == 0).any()
    pairs = [(0, 1), (1, 5), (2, 7), (0, 40), (2, 3), (1, 47)]
    jobs = [AblationJob([p], "null", p[0]) for p in pairs] + [AblationJob([(0, 2), (2, 9)], "joint")]
    ref = torch.cat([naive_deltas(adapter, b, jobs) for b in chunks], dim=1)
    # the jobs have measurable effects (OPT's ReLU may leave a unit dead on these inputs)
    assert (ref.abs().max(dim=1).values > 1e-3).sum() >= len(jobs) - 1, ref

    calls = {"n": 0}
    handle = adapter.blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        for reuse, replicas in ((False, 3), (True, 3)):  # R = 3 replicas: the rotary (cos, sin) are replicated
            calls["n"] = 0
            runner = AblationRunner(adapter, adapter.sites, jobs, replicas=replicas, reuse=reuse)
            assert runner.reuse is reuse
            for b in chunks:
                runner.step("concept", b)
            torch.testing.assert_close(runner.deltas("concept"), ref, atol=1e-5, rtol=0,
                                       msg=lambda m: f"{family} reuse={reuse} replicas={replicas}: {m}")
            full = len(chunks) * (1 + math.ceil(len(jobs) / replicas))
            # without reuse every forward starts at the input; with it, block 0 re-runs only for the groups that
            # ablate a unit of site 0 (jobs are grouped by re-entry block: the two site-0 jobs and the joint one)
            touching0 = math.ceil(sum(any(s == 0 for s, _ in j.units) for j in jobs) / replicas)
            assert calls["n"] == (full if not reuse else len(chunks) * (1 + touching0)), (reuse, calls["n"], full)
    finally:
        handle.remove()
    assert count_hooks(model) == 0


@pytest.mark.parametrize("family", ["llama", "gemma2", "opt"])
def test_replicated_steering_matches_steer(family, right):
    """Steering's replicated re-entry (steering.py) on decoder blocks gives what ``steer`` gives, replica by replica."""
    from neurolens_lightning.ablation import ablation_inputs
    from neurolens_lightning.scanner import ConceptScanner
    from neurolens_lightning.steering.replicas import _ReplicaSteering

    model = tiny(family, right)
    adapter = adapter_for(model, right)
    rank, held = load_concept(planted_probe("gpt2")).split(0.5, seed=0)
    scanner = ConceptScanner(adapter, rank, batch_size=16)
    chunks = ablation_inputs(adapter, scanner, held, 8, 0)[:2]
    a, b = [(1, 7), (2, 5)], [(1, 3), (2, 9)]
    reps = [(a, 4.0), (b, 0.0), (a, 0.5), (b, 2.0)]
    with torch.no_grad():
        got = _ReplicaSteering(adapter, scanner, chunks, [1, 2], replicas=3).run(reps)
        for r, (neurons, s) in enumerate(reps):
            for kind in ("concept", "control"):
                want = steered_confidence(adapter, scanner, chunks, kind, neurons, s)
                if want is not None:
                    torch.testing.assert_close(torch.from_numpy(got[kind][r]), want, atol=1e-4, rtol=1e-5)
    assert count_hooks(model) == 0


# ----------------------------------------------------------------------------- task y after a BOS


def test_task_confidence_is_log_p_target_after_bos(tok):
    """A tokenizer that adds a BOS (Llama, Gemma): task rows start with it, y = log p(target | BOS + prompt)."""
    bos_tok = copy.deepcopy(tok)
    bos = bos_tok.bos_token_id
    bos_tok.backend_tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single=f"{bos_tok.bos_token} $A", special_tokens=[(bos_tok.bos_token, bos)])])
    assert bos_tok("a dog")["input_ids"][0] == bos
    model = tiny("llama", bos_tok)
    adapter = adapter_for(model, bos_tok)
    tasks = _tasks()
    batch = adapter.encode_confidence(None, tasks)
    assert (batch.inputs["input_ids"][:, 0] == bos).all() and not batch.position_mask[:, 0].any()
    with torch.no_grad():
        y = adapter.confidence(batch, adapter.forward(batch))
        for b, t in enumerate(tasks):
            p = [bos] + bos_tok(t.prompt, add_special_tokens=False)["input_ids"]
            tgt = bos_tok(t.target, add_special_tokens=False)["input_ids"]
            logp = model(input_ids=torch.tensor([p + tgt])).logits[0].log_softmax(-1)
            want = sum(float(logp[len(p) - 1 + k, tid]) for k, tid in enumerate(tgt))
            assert float(y[b]) == pytest.approx(want, abs=1e-4)
    # examples: the BOS is a special token, not a scored real token
    ex = adapter.encode_confidence(EXAMPLES[:2], None)
    assert (ex.inputs["input_ids"][:, 0] == bos).all() and not ex.position_mask[:, 0].any()


# ----------------------------------------------------------------------------- InputOf


def test_input_of_captures_replaces_and_removes_itself():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    site = InputOf(lin)
    assert list(site.parameters()) == [] and "input of Linear" in repr(site)
    with capture({"s": site}) as acts:
        y = lin(x)
    torch.testing.assert_close(acts["s"], x)
    torch.testing.assert_close(y, lin(x))
    assert count_hooks(lin) == 0
    with intervene({"s": site}, lambda k, t: t * 0):
        torch.testing.assert_close(lin(x), lin.bias.expand(2, 3))
        torch.testing.assert_close(lin(input=x), lin.bias.expand(2, 3))  # the input passed by keyword
    assert count_hooks(lin) == 0
    with pytest.raises(RuntimeError, match="changed the output shape"):
        with intervene({"s": site}, lambda k, t: t[:1]):
            lin(x)
    assert count_hooks(lin) == 0
    with pytest.raises(RuntimeError, match="hook site"):
        site(x)
    with pytest.raises(RuntimeError, match="never runs"):
        site.register_forward_pre_hook(lambda *a: None)
    seen_kw = {}
    with site.register_forward_hook(lambda m, a, kw, t: seen_kw.setdefault("t", t), with_kwargs=True):
        lin(x)
    torch.testing.assert_close(seen_kw["t"], x)
    assert count_hooks(lin) == 0
    # a flattened input gets the leading shape of ``shape_from``'s input, and goes back flattened
    outer = torch.nn.Sequential(torch.nn.Flatten(0, 1), lin)
    seen = {}
    h = InputOf(lin, shape_from=outer).register_forward_hook(lambda m, a, t: seen.setdefault("t", t) * 2)
    try:
        z = torch.randn(2, 5, 4)
        got = outer(z)
    finally:
        h.remove()
    assert seen["t"].shape == (2, 5, 4) and count_hooks(outer) == 0
    torch.testing.assert_close(got, lin(2 * z.reshape(10, 4)))


# ----------------------------------------------------------------------------- end to end


def test_scan_with_ablation_on_tiny_llama(right):
    model = tiny("llama", right)
    model.train()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    # a random model may have no candidate: two named neurons make sure the causal test runs
    res = nl.scan(model, planted_probe("gpt2"), tokenizer=right, ablate=True, top_k=2, null_samples=20,
                  neurons=[(0, 5), (2, 7)])
    assert count_hooks(model) == 0 and model.training
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert res.scores.selectivity.shape == (N_LAYERS * UNITS,)
    assert res.model["family"] == "decoder" and res.model["type"] == "LlamaForCausalLM"
    assert {(0, 5), (2, 7)} <= set(res.ablation)
    for rec in res.ablation.values():
        assert math.isfinite(rec["delta"]) and rec["null_n"] >= 20 and rec["verdict"]
    assert res.ablation[(2, 7)]["delta"] != 0  # the intervention reached the model


def test_local_model_directory_loads_as_decoder(tmp_path, right):
    model = tiny("qwen2", right)
    model.save_pretrained(tmp_path)
    right.save_pretrained(tmp_path)
    adapter = nl.load_model(str(tmp_path), device="cpu")
    assert isinstance(adapter, DecoderAdapter) and type(adapter.model).__name__ == "Qwen2ForCausalLM"
    assert [s.units for s in adapter.sites] == [UNITS] * N_LAYERS


def test_steering_readout_of_a_decoder_is_a_causal_lm_readout(right):
    """dose_response on a tiny Llama reports next tokens and a greedy continuation (a causal LM), not mask fills."""
    from neurolens_lightning.steering import dose_response

    probe = planted_probe("gpt2")
    res = dose_response(tiny("llama", right), probe, [(0, 3)], scales=[0, 1], tokenizer=right, n_examples=1,
                        max_new_tokens=3, null_sets=19).to_dict()
    outs = res["examples"][0]["outputs"]
    assert all("continuation" in o and "top_next" in o and "top_fills" not in o for o in outs), outs
    assert res["test"]["null_n"] >= 10 and isinstance(res["test"]["beyond_null"], bool)


def test_model_dispatched_with_device_map_is_scanned_where_it_lies(tmp_path, right):
    """A Llama loaded with accelerate's ``device_map`` (layer 0 on CPU; the embeddings and layers 1-2 offloaded to disk: their
    weights sit on the meta device and are loaded by accelerate's hooks during each forward) is scanned,
    ablated and steered in place: the same selectivity, importance, Δ and steering as the model in memory;
    its placement, hooks and modes are left as they were; an explicit device is refused in one line."""
    pytest.importorskip("accelerate")
    from neurolens_lightning.steering import dose_response

    model = tiny("llama", right)
    model.save_pretrained(tmp_path / "m")
    dmap = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
            "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    placed = T.LlamaForCausalLM.from_pretrained(tmp_path / "m", device_map=dmap, offload_folder=tmp_path / "off")
    assert placed.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # really offloaded
    hooks_before = count_hooks(placed)
    probe = planted_probe("gpt2")
    kw = dict(tokenizer=right, ablate=True, top_k=1, null_samples=20, neurons=[(1, 5), (2, 7)])
    ref, got = nl.scan(model, probe, **kw), nl.scan(placed, probe, **kw)
    torch.testing.assert_close(got.scores.selectivity, ref.scores.selectivity, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.scores.importance, ref.scores.importance, atol=1e-6, rtol=0)
    for key in ((1, 5), (2, 7)):
        assert abs(got.ablation[key]["delta"] - ref.ablation[key]["delta"]) <= 1e-6
        assert got.ablation[key]["verdict"] == ref.ablation[key]["verdict"]
    assert count_hooks(placed) == hooks_before and placed.hf_device_map == dmap
    assert placed.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    s_ref = dose_response(model, probe, [(2, 7)], scales=[0, 2], tokenizer=right, n_examples=2, null_sets=19)
    s_got = dose_response(placed, probe, [(2, 7)], scales=[0, 2], tokenizer=right, n_examples=2, null_sets=19)
    for side in ("concept_inputs", "control_inputs"):
        assert s_got.to_dict()[side]["mean_y"] == pytest.approx(s_ref.to_dict()[side]["mean_y"], abs=1e-5)
    with pytest.raises(NeuroLensError, match="device_map.*device=None"):
        nl.scan(placed, probe, tokenizer=right, device="cpu")
