"""Any other model, by naming its site: ``site="blocks.*.mlp.fc2:input"`` (adapters/sites.py).

A small custom text model NeuroLens does not know (embedding + 2 blocks with an MLP each,
returning hidden states ``[B, T, H]``) is scanned, ablated and steered through a glob over its
module names; the activations NeuroLens captures equal plain PyTorch hooks on the same modules.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import make_word_tokenizer, small_probe_dict, tiny_gpt2
from neurolens_lightning import scan
from neurolens_lightning.adapters import SiteAdapter, adapter_for, match_modules, parse_site, pool_activations
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, count_hooks
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.steering import steer

H, U = 16, 24


class MLP(nn.Module):
    def __init__(self, flat: bool = False) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.flat = nn.Linear(H, U), nn.GELU(), nn.Linear(U, H), flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.flat:  # an MLP fed [B*T, H]: its sites do not fit the contract
            x = x.reshape(-1, H)
        return self.fc2(self.act(self.fc1(x))).reshape(shape)


class Block(nn.Module):
    def __init__(self, flat: bool = False) -> None:
        super().__init__()
        self.norm, self.mlp = nn.LayerNorm(H), MLP(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TinyLM(nn.Module):
    """Not a model NeuroLens knows: ``forward(input_ids, attention_mask=None) -> [B, T, H]``."""

    def __init__(self, vocab: int, flat: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, H)
        self.blocks = nn.ModuleList([Block(flat), Block(flat)])
        self.unused = nn.Linear(H, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids)
        for blk in self.blocks:
            x = blk(x)
        return x


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("bert")


def tiny(tok, flat: bool = False) -> TinyLM:
    torch.manual_seed(0)
    return TinyLM(len(tok), flat=flat).eval()


def plain_hooks(modules: list[nn.Module], kind: str) -> tuple[dict[int, torch.Tensor], list]:
    """What plain PyTorch hooks see: the first input (pre-hook) or the output of each module."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i, m in enumerate(modules):
        if kind == "input":
            handles.append(m.register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, args[0].detach())))
        else:
            handles.append(m.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, out.detach())))
    return seen, handles


def test_parse_and_match(tok):
    assert parse_site("blocks.*.mlp.fc2:input") == ("blocks.*.mlp.fc2", "input")
    assert parse_site("blocks.*.mlp.fc2") == ("blocks.*.mlp.fc2", "output")
    assert parse_site("blocks.*.mlp.act:output") == ("blocks.*.mlp.act", "output")
    with pytest.raises(NeuroLensError, match="must be 'input' or 'output'"):
        parse_site("blocks.*.mlp.fc2:inputs")
    model = tiny(tok)
    # '*' is one path component: it never crosses a dot; matches come in model order
    assert [n for n, _ in match_modules(model, "blocks.*.mlp.fc2")] == ["blocks.0.mlp.fc2", "blocks.1.mlp.fc2"]
    assert match_modules(model, "*.fc2") == []
    assert [n for n, _ in match_modules(model, "blocks.*.mlp.fc*")] == [
        "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]


@pytest.mark.parametrize("site, kind, attr, units", [
    ("blocks.*.mlp.fc2:input", "input", "fc2", U),
    ("blocks.*.mlp.act:output", "output", "act", U),
    ("blocks.*.mlp.fc1", "output", "fc1", U),
    ("blocks.*.mlp", "output", None, H),
])
def test_activations_equal_plain_hooks(tok, site, kind, attr, units):
    model = tiny(tok)
    adapter = SiteAdapter(model, tok, site=site)
    targets = [blk.mlp if attr is None else getattr(blk.mlp, attr) for blk in model.blocks]
    sites = adapter.sites
    assert [s.layer for s in sites] == [0, 1] and [s.units for s in sites] == [units, units]
    assert sites[1].name == site.split(":")[0].replace("*", "1") + f":{kind}"
    concept = load_concept(small_probe_dict())
    examples = list(concept.positive) + list(concept.negative)
    batch = adapter.encode(examples)
    seen, handles = plain_hooks(targets, kind)
    try:
        with capture({i: s.module for i, s in enumerate(sites)}) as got:
            adapter.forward(batch)
    finally:
        for h in handles:
            h.remove()
    assert count_hooks(model) == 0
    for i in range(2):
        assert got[i].shape == seen[i].shape == (batch.size, batch.inputs["input_ids"].shape[1], units)
        assert torch.allclose(got[i], seen[i], atol=1e-6, rtol=0)
    # what the scanner pools from its own hooks equals pooling the plain hooks' tensors
    scanner = ConceptScanner(adapter, concept, batch_size=64)
    _, stats = scanner._activation_forward(batch)
    for i in range(2):
        ref, _ = pool_activations(seen[i], batch.position_mask, batch.span_mask, scanner.pooling)
        assert torch.allclose(stats["pooled"][i], ref, atol=1e-6, rtol=0)


def test_scan_by_site_runs_and_ablates(tok):
    model = tiny(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = scan(model, small_probe_dict(), tokenizer=tok, site="blocks.*.mlp.fc2:input", top_k=3, batch_size=8)
    assert res.layers == [0, 1] and res.units == [U, U]
    assert res.model["family"] == "site" and res.model["site"] == "blocks.*.mlp.fc2:input"
    assert res.head is not None  # y: a fitted probe head on the pooled hidden states
    res2 = scan(model, small_probe_dict(), tokenizer=tok, site="blocks.*.mlp.fc2:input", ablate=True,
                neurons=[(0, 1)], test_top_k=False, null_samples=5, batch_size=8)
    assert list(res2.ablation) == [(0, 1)]  # the named neuron was ablated and tested against its null
    assert res2.ablation[(0, 1)]["delta"] != 0  # the intervention went through the site's hook
    assert count_hooks(model) == 0 and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # :output sites scan too
    res3 = scan(model, small_probe_dict(), tokenizer=tok, site="blocks.*.mlp.act", top_k=3, batch_size=8,
                importance=False)
    assert res3.units == [U, U]


def test_site_on_a_transformers_model_equals_its_adapter():
    """A transformers model through site=: GPT-2's c_proj input is its known site (mlp.act's output)."""
    gtok = make_word_tokenizer("gpt2")
    model = tiny_gpt2(gtok)
    by_site = adapter_for(model, gtok, site="transformer.h.*.mlp.c_proj:input")
    known = adapter_for(model, gtok)
    assert isinstance(by_site, SiteAdapter) and [s.units for s in by_site.sites] == [s.units for s in known.sites]
    batch = by_site.encode(list(load_concept(small_probe_dict()).positive))
    with torch.no_grad(), capture({i: s.module for i, s in enumerate(by_site.sites)}) as a:
        out = by_site.forward(batch)
    with torch.no_grad(), capture({i: s.module for i, s in enumerate(known.sites)}) as b:
        known.forward(batch)
    real = batch.position_mask  # GPT2Adapter renumbers the (never read) padding positions; real tokens agree
    for i in range(2):
        assert torch.allclose(a[i][real], b[i][real], atol=1e-5, rtol=0)
    assert by_site.features(batch, out).shape == (batch.size, model.config.n_embd)  # the last hidden state


def test_steer_site_neuron(tok):
    model = tiny(tok)
    adapter = SiteAdapter(model, tok, site="blocks.*.mlp.fc2:input")
    batch = adapter.encode(list(load_concept(small_probe_dict()).positive)[:3])
    with torch.no_grad():
        clean = adapter.forward(batch)
        with steer(adapter, [(0, 1)], scale=0.0):
            steered = adapter.forward(batch)
        # zeroing unit 1 entering blocks.0.mlp.fc2 removes column 1 of its weight: the same edit by hand
        w = model.blocks[0].mlp.fc2.weight
        saved = w[:, 1].clone()
        w[:, 1] = 0
        manual = adapter.forward(batch)
        w[:, 1] = saved
    assert count_hooks(model) == 0
    assert not torch.allclose(clean, steered)
    assert torch.allclose(steered, manual, atol=1e-6)


def test_bad_sites_one_line_error(tok):
    model = tiny(tok)
    with pytest.raises(NeuroLensError, match=r"site 'blocks\.\*\.mlp\.fc3:input' matches no module of TinyLM; "
                                             r"module names look like: .*blocks\.\*\.mlp\.fc2") as e:
        scan(model, small_probe_dict(), tokenizer=tok, site="blocks.*.mlp.fc3:input")
    assert "\n" not in str(e.value)
    with pytest.raises(NeuroLensError, match=r"site 'unused' matches module\(s\) that never run in a forward"):
        SiteAdapter(model, tok, site="unused").sites
    flat = tiny(tok, flat=True)
    with pytest.raises(NeuroLensError, match=r"site 'blocks\.\*\.mlp\.fc2:input' matches blocks\.0\.mlp\.fc2 whose "
                                             r"input has shape \(\d+, 24\), not \[batch, tokens, units\]"):
        scan(flat, small_probe_dict(), tokenizer=tok, site="blocks.*.mlp.fc2:input")
    assert count_hooks(model) == 0 and count_hooks(flat) == 0


def test_unknown_model_error_names_site(tok):
    with pytest.raises(NeuroLensError, match=r"unsupported model type TinyLM: .*--site .*site="):
        adapter_for(tiny(tok), tok)


def test_cli_site_flag(tok, monkeypatch, tmp_path):
    from neurolens_lightning import api, cli
    from neurolens_lightning.config import ScanConfig, load_config

    assert load_config(ScanConfig).site is None
    assert load_config(ScanConfig, overrides=["site=blocks.*.mlp.fc2:input"]).site == "blocks.*.mlp.fc2:input"
    seen = {}

    class Stop(Exception):
        pass

    def fake_scan(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(api, "scan", fake_scan)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')  # a local model folder
    with pytest.raises(Stop):
        cli.main(["scan", "--model", str(tmp_path), "--site", "model.layers.*.mlp.down_proj:input", "--out",
                  str(tmp_path / "out")])
    assert seen["site"] == "model.layers.*.mlp.down_proj:input"
