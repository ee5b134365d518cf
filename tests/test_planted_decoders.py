"""Ground truth for the gated-MLP decoders (Llama, Mistral, Qwen2/3, Gemma/2/3, Phi-3): planted neurons must be found.

A neuron of these families is the input of ``mlp.down_proj`` (``adapters/decoder.py``):
``act(gate_proj(x)) * up_proj(x)`` (Phi-3: from the fused ``gate_up_proj``). Construction, per
family, on a tiny 2-layer model built from its config (hidden 32, float32, no downloads), with
the residual dimensions of ``helpers._plant_embeddings`` (0 = concept, 1 = king only, 2 = " throne",
4/5 = fillers) plus one more:

* dim 6 = ``C`` on every token: a constant direction. The input RMSNorm divides a token by its
  RMS, which differs between tokens, but never changes a sign: a gate reading
  ``G * (x[0] - T * x[6] / C)`` is ``G * (raw x[0] - T) / rms``, positive exactly when the token's
  raw concept value exceeds ``T`` (no bias needed; these MLPs have none). ``up_proj`` reads dim 6
  only, so it is about the same on every token; ``act(gate) * up`` is large on the concept words
  and ~0 elsewhere (negatives have raw concept values up to 3.5 < T).
* PLANTED (layer 0, unit 7): gate reads the concept direction, its ``down_proj`` column writes
  ``w_out`` into dim 2, which the " throne" row of the unembedding reads (the LM head is a copy of
  the planted embeddings where the family does not tie them; Gemma's embeddings are scaled by
  ``sqrt(hidden)`` inside the model, so its write is scaled alike). Every token has dim 6 = C, so
  the final norm's dim 6 shifts every logit alike (no effect on log-probabilities).
* MUTE (unit 13): the gate / up rows of PLANTED, an all-zero ``down_proj`` column.
* DECOY (unit 11): the gate reads the king-only direction, the same write as PLANTED: it fires
  on one of the four phrasings of the concept (king) only.
* Gemma-2/3 normalize the MLP's output before adding it to the residual ("sandwich" norms):
  ``(1 + w) * x / sqrt(mean(x^2) + eps)``. With the default eps a near-zero write (a silent unit's
  GELU tail) is blown up to unit RMS, so no linear write can be planted. Their configs take
  ``eps = 100`` (the norm is then ~linear, ``x / 10`` for the writes here) and layer 0's
  ``post_feedforward_layernorm`` weight ``sqrt(eps) - 1`` undoes the division: the same construction
  as the others, through the family's own modules.
* Layer 0's attention output projection is zeroed (attention adds nothing before the MLP);
  everything else keeps its random init (std 0.02: tiny next to the planted values).

``scan(..., ablate=True)`` with the default (interchange) intervention must rank PLANTED first
and validate it, find MUTE not causal and not validate DECOY; the site's activations must equal a
plain forward pre-hook on ``down_proj``.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from helpers import (CONCEPT, DECOY, NEGATIVE, PLANTED, _plant_embeddings, make_word_tokenizer, planted_probe)

import neurolens_lightning as nl
from neurolens_lightning.adapters import DecoderAdapter, adapter_for
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.hooks import capture, count_hooks

pytestmark = pytest.mark.usefixtures("one_thread")

MUTE = 13
HIDDEN, UNITS = 32, 128  # 4 x hidden, as GPT-2: layer 0 needs enough null neurons for Holm over 3 tests
CONST, C = 6, 8.0          # the constant residual direction and its value on every token
T_RAW = 5.0                # gate threshold on the raw concept value (negatives <= 3.5 < T < 8 = concept words)
G, U = 4.0, 0.3            # gate gain (on the normalized input) and the up projection's weight on dim 6
W_OUT, V_THRONE = 4.0, 2.0
SANDWICH_EPS = 100.0      # Gemma-2/3 normalize the MLP's output too (see the module docstring)
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"]


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


def _config(family: str, tok):
    kw = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id, max_position_embeddings=128, num_hidden_layers=2, hidden_size=HIDDEN,
              num_attention_heads=4, num_key_value_heads=2, intermediate_size=UNITS)
    return {"llama": lambda: (T.LlamaForCausalLM, T.LlamaConfig(**kw)),
            "mistral": lambda: (T.MistralForCausalLM, T.MistralConfig(**kw)),
            "qwen2": lambda: (T.Qwen2ForCausalLM, T.Qwen2Config(**kw)),
            "qwen3": lambda: (T.Qwen3ForCausalLM, T.Qwen3Config(**kw, head_dim=8)),
            "gemma": lambda: (T.GemmaForCausalLM, T.GemmaConfig(**kw, head_dim=8)),
            "gemma2": lambda: (T.Gemma2ForCausalLM, T.Gemma2Config(**kw, head_dim=8, rms_norm_eps=SANDWICH_EPS)),
            "gemma3": lambda: (T.Gemma3ForCausalLM, T.Gemma3TextConfig(**kw, head_dim=8, rms_norm_eps=SANDWICH_EPS)),
            "phi3": lambda: (T.Phi3ForCausalLM, T.Phi3Config(**kw))}[family]()


def _gate_up(mlp):
    """(gate weight rows, up weight rows) as views ``[UNITS, HIDDEN]`` of the family's parameters."""
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: one fused projection, gate first, then up
        w = mlp.gate_up_proj.weight
        return w[:UNITS], w[UNITS:]
    return mlp.gate_proj.weight, mlp.up_proj.weight


def planted_decoder(family: str, tok, seed: int = 0, mute_column: float = 0.0):
    """Tiny gated decoder of ``family`` with PLANTED, MUTE and DECOY in layer 0's MLP (see the module docstring).

    ``mute_column``: the weight MUTE's down_proj column writes into dim 2 (0 = mute; non-zero breaks the twin)."""
    cls, cfg = _config(family, tok)
    torch.manual_seed(seed)
    model = cls(cfg).float().eval()
    base = model.model
    E = base.embed_tokens.weight
    scale = float(getattr(base.embed_tokens, "scalar_embed_scale", 1.0))  # Gemma: sqrt(hidden)
    with torch.no_grad():
        _plant_embeddings(E, tok, V_THRONE)
        E[:, CONST] = C
        head = model.get_output_embeddings().weight
        if head is not E:
            head.copy_(E)  # untied families: the unembedding reads the same directions
        layer0 = base.layers[0]
        layer0.self_attn.o_proj.weight.zero_()
        mlp = layer0.mlp
        gate, up = _gate_up(mlp)
        down = mlp.down_proj.weight  # [HIDDEN, UNITS]
        for unit, dim in ((PLANTED, 0), (DECOY, 1)):
            gate[unit] = 0
            gate[unit, dim] = G
            gate[unit, CONST] = -G * T_RAW / C
            up[unit] = 0
            up[unit, CONST] = U
            down[:, unit] = 0
            down[2, unit] = W_OUT * scale
        gate[MUTE], up[MUTE] = gate[PLANTED], up[PLANTED]
        down[:, MUTE] = 0
        down[2, MUTE] = mute_column * scale
        post = getattr(layer0, "post_feedforward_layernorm", None)
        if post is not None:  # Gemma-2/3: out = (1 + w) * x / sqrt(mean(x^2) + eps) ~ x for small x
            post.weight.fill_(SANDWICH_EPS ** 0.5 - 1.0)
    return model


def scan_planted(model, tok, **kw):
    args = dict(tokenizer=tok, ablate=True, top_k=2, neurons=[(0, PLANTED), (0, MUTE)], null_samples=20)
    args.update(kw)
    return nl.scan(model, planted_probe("gpt2"), **args)


@pytest.fixture(scope="module")
def scans(tok):
    return {}


def _scan(scans, family, tok):
    """(model, result) of one default scan per family, shared by the tests."""
    if family not in scans:
        model = planted_decoder(family, tok)
        scans[family] = (model, scan_planted(model, tok))
    return scans[family]


# ----------------------------------------------------------------------------- the construction


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_site_equals_down_proj_pre_hook_and_units_fire_as_planted(family, side, tok):
    """The GPT-2-style word tokenizer (pad = eos, no BOS) drives the adapter on either padding side; the site is
    the down projection's input; PLANTED / MUTE fire on every concept word, DECOY on king only."""
    model = planted_decoder(family, tok)
    adapter = adapter_for(model, tok)
    assert isinstance(adapter, DecoderAdapter)
    concept = load_concept(planted_probe("gpt2"))
    original, tok.padding_side = tok.padding_side, side
    try:
        batch = adapter.encode(concept.positive + concept.negative)
    finally:
        tok.padding_side = original
    assert not batch.inputs["attention_mask"].bool().all()  # padded: the examples differ in length
    down = model.model.layers[0].mlp.down_proj
    seen = {}
    handle = down.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    try:
        with torch.no_grad(), capture({0: adapter.sites[0].module}) as acts:
            adapter.forward(batch)
    finally:
        handle.remove()
    assert acts[0].shape == seen["x"].shape and (acts[0] - seen["x"]).abs().max() <= 1e-6
    assert count_hooks(model) == 0

    pooled, _ = adapter.pool(acts[0], batch)
    n_pos = len(concept.positive)
    j, m, k = pooled[:, PLANTED], pooled[:, MUTE], pooled[:, DECOY]
    assert torch.equal(j, m)  # the twin reads exactly like PLANTED
    assert (j[:n_pos] > 1.0).all() and (j[n_pos:].abs() < 0.3).all(), (j[:n_pos].min(), j[n_pos:].abs().max())
    king = torch.tensor([g == "king" for g in concept.positive_groups])
    assert (k[:n_pos][king] > 1.0).all() and (k[:n_pos][~king].abs() < 0.3).all() and (k[n_pos:].abs() < 0.3).all()


# ----------------------------------------------------------------------------- scan finds it


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_ranks_and_validates_planted_neuron(family, tok, scans):
    model, result = _scan(scans, family, tok)
    assert count_hooks(model) == 0
    top = result.candidates(1)[0]
    assert (top["layer"], top["index"]) == (0, PLANTED), result.candidates(2)
    s = result.scores
    j, m, k = (s.flat_index(0, u) for u in (PLANTED, MUTE, DECOY))
    assert s.consistency[j] > 0.7 and s.consistency[k] < 0.3, (float(s.consistency[j]), float(s.consistency[k]))
    assert torch.allclose(s.selectivity[m], s.selectivity[j], rtol=1e-5)

    summ = result.ablation_summary
    assert summ["method"] == "interchange"
    planted, mute = result.ablation[(0, PLANTED)], result.ablation[(0, MUTE)]
    assert planted["causal"] is True and planted["validated"] is True and planted["verdict"] == "validated", planted
    assert planted["delta"] > 1.0, planted
    assert mute["causal"] is False and mute["validated"] is False and mute["verdict"] == "not causal", mute
    assert abs(mute["delta"]) < 1e-4, mute


@pytest.mark.parametrize("family", FAMILIES)
def test_decoy_not_validated(family, tok, scans):
    _, result = _scan(scans, family, tok)
    order = [(c["layer"], c["index"]) for c in result.candidates(2)]
    assert order[0] == (0, PLANTED)
    rec = result.ablation.get((0, DECOY))
    if rec is None:  # not among the tested candidates: test it by name
        rec = scan_planted(planted_decoder(family, tok), tok, neurons=[(0, DECOY)], test_top_k=False).ablation[
            (0, DECOY)]
    # a real effect on its one phrasing (king prompts), but not consistent across phrasings: never validated
    assert rec["validated"] is False and rec["verdict"] != "validated", rec
    s = result.scores
    assert s.consistency[s.flat_index(0, DECOY)] < 0.3
    assert s.order.tolist().index(s.flat_index(0, DECOY)) > s.order.tolist().index(s.flat_index(0, PLANTED)) == 0


def test_breaking_the_twin_is_seen(tok):
    """A 'mute' twin with a non-zero down_proj column is causal: the mute assertions can fail."""
    result = scan_planted(planted_decoder("llama", tok, mute_column=W_OUT), tok)
    mute = result.ablation[(0, MUTE)]
    assert mute["causal"] is True and abs(mute["delta"]) > 1.0, mute
