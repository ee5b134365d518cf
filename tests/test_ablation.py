"""Causal ablation (DESIGN §3): ground truth, ablation methods, batching, non-interference, statistics.

Models are the hand-built tiny GPT-2 / BertForMaskedLM of ``helpers.planted_gpt2`` /
``helpers.planted_bert`` (see test_ground_truth.py for the construction), with one more unit:

* CAUSAL = ``PLANTED`` (layer 0, unit 7): fires on every concept word, writes into the residual
  dimension read by the " throne" logit, so zeroing it lowers log p(" throne") on the tasks.
* MUTE (layer 0, unit 13): the same input weights as CAUSAL (identical activations, hence the
  same selectivity and consistency) but an all-zero output projection: ablating it can change
  nothing, so its Δ must be 0 (up to float noise) and it must never be validated.

The planted probe has 16 positives (4 groups), 16 negatives and 8 tasks, so ``ablate=True``'s
held-out half has 8 / 8 / 4: candidates are ranked on one half and ablated on the other.

The batching tests compare :class:`AblationRunner` at several ``replicas`` (ablations per
forward) with and without re-entry (``reuse``) against a naive reference: one plain forward per
job with :func:`neurolens_lightning.hooks.intervene` zeroing the job's units.
"""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer, naive_deltas, planted_bert, planted_gpt2,
                     planted_probe, tiny_bert, tiny_gpt2)

import neurolens_lightning as nl
from neurolens_lightning.ablation import (AblationJob, AblationPlan, AblationRunner, bootstrap_ci, null_size_needed,
                                          summarize_ablation)
from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import capture, count_hooks, intervene

CAUSAL, MUTE = PLANTED, 13
FAMILIES = ("gpt2", "bert")
RECORD_KEYS = {"method", "delta", "ci_low", "ci_high", "delta_control", "specificity", "specificity_ci_low",
               "specificity_ci_high", "specificity_p", "specificity_p_holm", "p_value", "p_holm", "null_n", "p_floor",
               "causal", "validated", "verdict", "reasons", "direction_rule"}


# ----------------------------------------------------------------------------- fixtures / helpers


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toks():
    words = CONCEPT + NEGATIVE + ["throne", "seat", "bowed"]
    return {"gpt2": make_word_tokenizer("gpt2", words), "bert": make_word_tokenizer("bert", words)}


def planted(family: str, tok):
    """The planted model (default configs: GPT-2 keeps ``use_cache=True`` like the real one) + a MUTE unit."""
    return planted_gpt2(tok, mute=MUTE) if family == "gpt2" else planted_bert(tok, mute=MUTE)


def ablation_scan(family: str, tok, model=None, **kw):
    model = planted(family, tok) if model is None else model
    args = dict(tokenizer=tok, concept=planted_probe(family), top_k=2, ablate=True,
                neurons=[(0, CAUSAL), (0, MUTE)], null_samples=20)
    args.update(kw)
    return nl.scan(model=model, **args)


@pytest.fixture(scope="module")
def zero_scans(toks):
    """One zero-ablation scan per family (shared by the ground-truth and method tests)."""
    return {f: ablation_scan(f, toks[f], ablation="zero") for f in FAMILIES}


SMALL = 21  # layer 0: a non-concept unit with a small, real effect on y (see with_small_unit)


def with_small_unit(family: str, model, w_out: float = 0.5):
    """Add SMALL to a planted model: it reads nothing (a positive bias: the same activation on every token of every
    input, concept or not) and writes ``w_out`` into the dimension the " throne" logit reads. Zeroing it moves y
    on every input; its activation does not depend on the concept at all."""
    with torch.no_grad():
        if family == "gpt2":
            mlp = model.transformer.h[0].mlp
            fc, proj = mlp.c_fc, mlp.c_proj
            fc.weight[:, SMALL] = 0
            fc.bias[SMALL] = 1.0
            proj.weight[SMALL, :] = 0
            proj.weight[SMALL, 2] = w_out
        else:
            layer0 = model.bert.encoder.layer[0]
            fc, proj = layer0.intermediate.dense, layer0.output.dense
            fc.weight[SMALL] = 0
            fc.bias[SMALL] = 1.0
            proj.weight[:, SMALL] = 0
            proj.weight[2, SMALL] = w_out
    return model


@pytest.fixture(scope="module")
def default_scans(toks):
    """One scan per family with the default intervention (interchange), CAUSAL, MUTE and SMALL named."""
    return {f: ablation_scan(f, toks[f], model=with_small_unit(f, planted(f, toks[f])),
                             neurons=[(0, CAUSAL), (0, MUTE), (0, SMALL)]) for f in FAMILIES}


def held_out_tasks(family: str):
    return load_concept(planted_probe(family)).split(0.5, seed=0)[1].tasks


def y_with(adapter, batch, site: int, units, value) -> torch.Tensor:
    """Confidence y with ``units`` of ``site`` set to ``value`` at every position (``value=None``: clean)."""
    def edit(_key, t):
        t = t.clone()
        v = adapter.site_view(t)
        v[..., units] = value
        return adapter.unview(v, t)

    with torch.no_grad():
        if value is None:
            return adapter.confidence(batch, adapter.forward(batch)).double()
        with intervene({site: adapter.sites[site].module}, edit):
            return adapter.confidence(batch, adapter.forward(batch)).double()


# ----------------------------------------------------------------------------- 1. ground truth


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_neuron_validated_mute_neuron_not(family, zero_scans):
    result = zero_scans[family]
    s = result.scores
    j, m = s.flat_index(0, CAUSAL), s.flat_index(0, MUTE)
    # the construction: the two units are indistinguishable by selectivity / consistency
    assert torch.allclose(s.selectivity[m], s.selectivity[j], rtol=1e-5) and s.selectivity[j] > 5
    assert torch.allclose(s.consistency[m], s.consistency[j], rtol=1e-5) and s.consistency[j] > 0.7
    assert abs(float(s.importance[m])) < 1e-6 < float(s.importance[j])

    causal, mute = result.ablation[(0, CAUSAL)], result.ablation[(0, MUTE)]
    assert RECORD_KEYS <= set(causal) and causal["method"] == "zero"
    assert causal["validated"] is True, causal
    assert causal["delta"] > 2.0, causal                       # GPT-2 ~42 nats, BERT ~5.5 nats
    assert 0 < causal["ci_low"] <= causal["delta"] <= causal["ci_high"], causal
    assert causal["null_exceedances"] == 0 and causal["p_value"] == causal["p_floor"], causal  # beats every null
    assert causal["specificity"] > 2.0, causal                 # the control inputs barely move

    assert abs(mute["delta"]) < 1e-4, mute
    assert abs(mute["ci_low"]) < 1e-4 and abs(mute["ci_high"]) < 1e-4, mute
    assert mute["delta_control"] is None or abs(mute["delta_control"]) < 1e-4, mute
    assert mute["validated"] is False, mute

    summ = result.ablation_summary
    assert summ["method"] == "zero"
    assert isinstance(summ["split"], str) and summ["split"]
    assert isinstance(summ["null"], list) and summ["null"]
    for row in summ["null"]:
        assert {"layer", "mean", "std", "n"} <= set(row)
    (null0,) = [r for r in summ["null"] if r["layer"] == 0]
    assert null0["n"] >= 20 and null0["std"] > 0
    # random units of a tiny model do ~nothing (the null may include DECOY, which writes " throne" for "king")
    assert abs(null0["median"]) < 0.05 and null0["q95"] < 0.05
    assert summ["joint_delta"] > 2.0                           # the joint set contains CAUSAL
    assert "importance_delta_spearman" in summ
    # on the planted model the gradient x activation importance ranks the single-neuron Δs almost exactly
    # (measured: 0.99995 for both families): a sign flip or a mismatched importance estimate drops it
    rho = summ["importance_delta_spearman"]
    assert rho is not None and rho > 0.9, rho
    assert summ["audit"]["n_checked"] == 20
    assert all(a["tested"] == "two-sided" for a in summ["audit"]["neurons"])
    assert 0 <= summ["audit"]["expected_by_chance"] <= 0.05 * 20 + 1e-9  # a random neuron's rate, at most alpha

    data = result.to_dict()
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN / inf anywhere
    assert data["ablation_summary"]["method"] == "zero"
    recs = {(r["layer"], r["index"]): r for r in data["neurons"]}
    for key in [(0, CAUSAL), (0, MUTE)]:
        abl = recs[key]["ablation"]
        assert isinstance(abl, dict) and RECORD_KEYS <= set(abl), abl
        assert abl["delta"] == pytest.approx(result.ablation[key]["delta"])
    assert recs[(0, CAUSAL)]["ablation"]["validated"] is True
    assert recs[(0, MUTE)]["ablation"]["validated"] is False
    assert sum(r["ablation"] is not None for r in data["neurons"]) == len(result.ablation)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_interchange_tests_the_concept(family, default_scans, toks):
    """The default intervention asks whether the concept-dependent activity matters: CAUSAL is validated, MUTE is
    not causal, and SMALL — a non-concept unit whose zeroing does move y on every input — is neither causal nor
    validated, while zero ablation does see its effect (so the SMALL arm can fail)."""
    result = default_scans[family]
    summ = result.ablation_summary
    assert summ["method"] == "interchange" and "concept-dependent" in summ["question"]
    causal, mute, small = (result.ablation[(0, u)] for u in (CAUSAL, MUTE, SMALL))
    assert RECORD_KEYS <= set(causal)
    assert causal["causal"] is True and causal["validated"] is True and causal["verdict"] == "validated", causal
    assert causal["delta"] > 2.0 and causal["specificity_p_holm"] <= 0.05, causal
    assert mute["causal"] is False and mute["verdict"] == "not causal"
    s = result.scores
    assert abs(float(s.selectivity[s.flat_index(0, SMALL)])) < 0.5  # not a concept unit
    assert small["causal"] is False and small["validated"] is False, small
    assert abs(small["delta"]) < 0.5 * max(summ["min_effect"], abs(causal["delta"]) * 1e-3) + 1e-3, small
    # the same unit under zero ablation: a real, consistent effect on y (necessity), yet not validated
    zero = ablation_scan(family, toks[family], model=with_small_unit(family, planted(family, toks[family])),
                         neurons=[(0, SMALL)], test_top_k=False, ablation="zero")
    z = zero.ablation[(0, SMALL)]
    assert abs(z["delta"]) > 1e-3 and z["ci_low"] * z["ci_high"] > 0, z  # zeroing SMALL moves y, consistently
    # ... and not causal either: its effect on the control inputs (the same y, log p of a task target) is as large
    assert z["validated"] is False and z["causal"] is False, z
    assert any(r.startswith("not specific") for r in z["reasons"]), z
    assert summ["n_causal"] == sum(r["causal"] for r in result.ablation.values())
    assert summ["n_causal_not_candidate"] == summ["n_causal"] - summ["n_validated"] - summ["n_suppressors_validated"]
    assert summ["joint_beyond_null"] is True and summ["joint_p_null"] <= 0.05  # the joint set contains CAUSAL
    assert summ["holm_family"].startswith(f"all {summ['n_tested']} tested")


# ----------------------------------------------------------------------------- 2. mean / resample


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_ablation_uses_the_mean_activation(family, toks, zero_scans):
    tok = toks[family]
    model = planted(family, tok)
    result = ablation_scan(family, tok, model=model, ablation="mean")
    rec = result.ablation[(0, CAUSAL)]
    assert rec["method"] == "mean" and result.ablation_summary["method"] == "mean"
    assert rec["delta"] > 0, rec
    assert abs(result.ablation[(0, MUTE)]["delta"]) < 1e-4

    # the mean is over the real tokens of the ranking split's negatives only (concept-absent; recomputed by hand)
    adapter = adapter_for(model, tok)
    rank = load_concept(planted_probe(family)).split(0.5, seed=0)[0]
    batch = adapter.encode(rank.negative)
    with torch.no_grad(), capture({0: adapter.sites[0].module}) as acts:
        adapter.forward(batch)
    a = adapter.site_view(acts[0])[..., CAUSAL]
    mean_value = float(a[batch.position_mask].mean())
    s = result.scores
    assert abs(mean_value - float(s.mean_activation[s.flat_index(0, CAUSAL)])) > 0.05  # not the all-example mean
    assert mean_value > 0.01  # so that mean and zero ablation differ (checked below)

    # Δ by hand: CAUSAL set to its mean activation at every position of the held-out tasks
    tb = adapter.encode_confidence(None, held_out_tasks(family))
    manual = float((y_with(adapter, tb, 0, CAUSAL, None) - y_with(adapter, tb, 0, CAUSAL, mean_value)).mean())
    assert rec["delta"] == pytest.approx(manual, abs=1e-4 * max(1.0, abs(manual)))
    zero_manual = float((y_with(adapter, tb, 0, CAUSAL, None) - y_with(adapter, tb, 0, CAUSAL, 0.0)).mean())
    assert zero_scans[family].ablation[(0, CAUSAL)]["delta"] == pytest.approx(zero_manual,
                                                                             abs=1e-4 * max(1.0, zero_manual))
    assert abs(rec["delta"] - zero_manual) > 1e-3  # the mean value was used, not 0
    if family == "gpt2":
        assert rec["delta"] > 2.0 and rec["validated"] is True, rec


@pytest.mark.parametrize("family", FAMILIES)
def test_resample_ablation_runs(family, toks, zero_scans):
    result = ablation_scan(family, toks[family], ablation="resample")
    rec = result.ablation[(0, CAUSAL)]
    assert rec["method"] == "resample" and result.ablation_summary["method"] == "resample"
    assert rec["delta"] > 0, rec
    assert abs(result.ablation[(0, MUTE)]["delta"]) < 1e-4
    assert rec["delta"] != pytest.approx(zero_scans[family].ablation[(0, CAUSAL)]["delta"], abs=1e-3)
    # every position gets a random concept-absent token's activation: the concept is switched off, so CAUSAL is
    # validated (before, half the replacements came from concept examples and switched the concept on)
    assert rec["delta"] > 2.0 and rec["validated"] is True, rec


# ----------------------------------------------------------------------------- 3. batching invariance


def _scale_weights(model, factor: float = 8.0, embeddings: float = 25.0):
    """Stronger random weights (the tied unembedding included) so that every unit has a visible,
    non-linear effect on y: |Δ| of every job is ~1e-2..1e-1, float noise ~1e-6."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                emb = "embeddings" in name or "wte" in name or "wpe" in name
                p.mul_(embeddings if emb else factor)
    return model


def _batching_case(family: str, toks):
    """(adapter, chunks, jobs): jobs at every depth, in mixed order, plus a joint job over two sites."""
    if family == "resnet":
        from neurolens_lightning.registry import load_model

        with torch.random.fork_rng():
            torch.manual_seed(0)
            adapter = load_model("resnet18", weights="random", image_size=64, device="cpu")
        c = load_concept("red")
        chunks = [adapter.encode_confidence(c.positive[:2], None), adapter.encode_confidence(c.negative[:1], None)]
        pairs = [(0, 1), (3, 7), (7, 300), (5, 100), (2, 5), (7, 3), (1, 40)]
        joint = [(1, 2), (6, 9)]
    else:
        tok = toks[family]
        model = tiny_gpt2(tok, n_layer=3) if family == "gpt2" else tiny_bert(tok, n_layer=3)
        adapter = adapter_for(_scale_weights(model), tok)
        c = load_concept(planted_probe(family))
        # chunks of 3, 2 and 1 inputs: tasks (prompt + target) and plain examples of different lengths (padding)
        chunks = [adapter.encode_confidence(None, c.tasks[:3]),
                  adapter.encode_confidence([c.positive[0], c.positive[3]], None),
                  adapter.encode_confidence(c.negative[:1], None)]
        assert (chunks[1].inputs["attention_mask"] == 0).any()
        pairs = [(0, 1), (1, 5), (2, 7), (0, 100), (2, 3), (1, 77), (1, 0)]
        joint = [(0, 2), (2, 9)]
    jobs = [AblationJob([p], "null", p[0]) for p in pairs] + [AblationJob(joint, "joint")]
    return adapter, chunks, jobs


@pytest.mark.parametrize("family", ["gpt2", "bert", "resnet"])
def test_batching_and_reuse_invariance(family, toks):
    adapter, chunks, jobs = _batching_case(family, toks)
    ref = torch.cat([naive_deltas(adapter, b, jobs) for b in chunks], dim=1)
    assert ref.abs().max(dim=1).values.min() > 5e-3, ref  # every job has a clearly measurable effect

    calls = {"block0": 0}
    block0 = adapter.blocks[0]
    handle = block0.register_forward_pre_hook(lambda *_: calls.__setitem__("block0", calls["block0"] + 1))
    try:
        for reuse in (False, True):
            for replicas in (1, 2, 3, 8):
                calls["block0"] = 0
                runner = AblationRunner(adapter, adapter.sites, jobs, replicas=replicas, reuse=reuse)
                assert runner.reuse is reuse
                for b in chunks:
                    runner.step("concept", b)
                got = runner.deltas("concept")
                assert got.shape == ref.shape
                torch.testing.assert_close(got, ref, atol=1e-5, rtol=0,
                                           msg=lambda m: f"replicas={replicas} reuse={reuse}: {m}")
                # without reuse every forward starts at the input: one clean + one per group of replicas;
                # with reuse, block 0 re-runs only for groups that ablate a unit of site 0
                full = len(chunks) * (1 + math.ceil(len(jobs) / replicas))
                if not reuse:
                    assert calls["block0"] == full
                elif replicas == 1:
                    touching0 = sum(any(s == 0 for s, _ in job.units) for job in jobs)
                    assert calls["block0"] == len(chunks) * (1 + touching0) < full
                else:
                    assert calls["block0"] <= full
    finally:
        handle.remove()

    # a runner over a subset of the sites (as scan(layers=[...]) builds it): job units are local positions
    sub = [1, len(adapter.sites) - 1]
    local = {g: i for i, g in enumerate(sub)}
    keep = [k for k, job in enumerate(jobs) if all(s in local for s, _ in job.units)]
    sub_jobs = [AblationJob([(local[s], u) for s, u in jobs[k].units], jobs[k].kind, jobs[k].layer) for k in keep]
    assert len(sub_jobs) >= 2
    for reuse in (False, True):
        runner = AblationRunner(adapter, [adapter.sites[g] for g in sub], sub_jobs, replicas=3, reuse=reuse)
        for b in chunks:
            runner.step("concept", b)
        torch.testing.assert_close(runner.deltas("concept"), ref[keep], atol=1e-5, rtol=0)
    assert count_hooks(adapter.model) == 0


def test_resnet_untargeted_y_is_measured_on_the_clean_top1():
    """DESIGN §2: without labels, y is log p of the model's *original* top-1 class. An ablation that
    changes the top-1 must be measured on the clean class, not on whatever the ablated model prefers."""
    from neurolens_lightning.registry import load_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = load_model("resnet18", weights="random", image_size=64, device="cpu")
    c = load_concept("red")
    batch = adapter.encode_confidence(c.positive[:2], None)
    last = len(adapter.sites) - 1
    job = AblationJob([(last, u) for u in range(adapter.sites[last].units)], "joint")  # whole last block
    runner = AblationRunner(adapter, adapter.sites, [job], replicas=1)
    runner.step("concept", batch)
    with torch.no_grad():
        logp_clean = torch.log_softmax(adapter.forward(batch).float(), -1)
        top1 = logp_clean.argmax(-1)
        logp_abl = torch.log_softmax(adapter.model.fc.bias.float(), -1).expand_as(logp_clean)  # block output = 0
    expected = logp_clean.gather(1, top1[:, None])[:, 0] - logp_abl.gather(1, top1[:, None])[:, 0]
    assert (logp_abl.argmax(-1) != top1).any()  # the ablation does change the prediction here
    torch.testing.assert_close(runner.deltas("concept")[0], expected.double(), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- 4. non-interference


def _snapshot(model, inputs):
    modes = {n: m.training for n, m in model.named_modules()}
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits.clone()
    for n, m in model.named_modules():
        m.training = modes[n]
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    return modes, out, params, flags


@pytest.mark.parametrize("interrupt", [False, True], ids=["complete", "interrupted"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_leaves_the_model_untouched(family, interrupt, toks, monkeypatch):
    tok = toks[family]
    model = planted(family, tok)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.1
    model.train()
    sub = model.transformer.h[1] if family == "gpt2" else model.bert.encoder.layer[1]
    sub.eval()  # mixed modes: each module's own flag must come back
    inputs = dict(tok(["The king spoke to the people.", "A farmer sat on the old chair."], padding=True,
                      return_tensors="pt"))
    modes, out, params, flags = _snapshot(model, inputs)
    adapter = adapter_for(model, tok)

    seen = {"calls": 0}
    if interrupt:
        confidence = adapter.confidence

        def failing(batch, outputs, head=None):
            seen["calls"] += 1
            if seen["calls"] == 4:  # 1 importance batch, 1 clean chunk, then inside the 2nd ablated forward
                seen["hooks"] = count_hooks(model)
                seen["training"] = model.training
                raise RuntimeError("boom")
            return confidence(batch, outputs, head)

        monkeypatch.setattr(adapter, "confidence", failing)

    rng_torch, rng_py, rng_np = torch.get_rng_state(), random.getstate(), np.random.get_state()
    if interrupt:
        with pytest.raises(RuntimeError, match="boom"):
            ablation_scan(family, tok, model=adapter, null_samples=5)
        assert seen["hooks"] > 0 and seen["training"] is False  # it really broke inside an ablated forward
    else:
        ablation_scan(family, tok, model=model, null_samples=5)  # the plain nn.Module path
    assert torch.equal(torch.get_rng_state(), rng_torch), "scan/ablation consumed the global torch RNG"
    assert random.getstate() == rng_py, "scan/ablation consumed the global Python RNG"
    st = np.random.get_state()
    assert np.array_equal(st[1], rng_np[1]) and st[2:] == rng_np[2:], "scan/ablation consumed the numpy RNG"

    assert count_hooks(model) == 0
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
    modes_after, out_after, _, _ = _snapshot(model, inputs)
    assert torch.equal(out_after, out)
    assert modes_after == modes


# ----------------------------------------------------------------------------- 5. statistics


def test_bootstrap_ci_constant_and_normal():
    const = torch.tensor([[0.3] * 12, [-1.7] * 12], dtype=torch.float64)
    lo, hi = bootstrap_ci(const, n_boot=200)
    np.testing.assert_allclose(lo, [0.3, -1.7], atol=1e-12)
    np.testing.assert_allclose(hi, [0.3, -1.7], atol=1e-12)

    x = np.random.default_rng(5).normal(0.5, 2.0, size=(2, 1000))
    x[1] = x[1] * 0.1 - 3.0
    lo, hi = bootstrap_ci(torch.from_numpy(x), n_boot=2000, seed=1)
    m, hw = x.mean(1), 1.96 * x.std(1, ddof=1) / math.sqrt(x.shape[1])
    assert np.all(np.abs(lo - (m - hw)) < 0.1 * hw), (lo, m - hw)
    assert np.all(np.abs(hi - (m + hw)) < 0.1 * hw), (hi, m + hw)
    lo2, hi2 = bootstrap_ci(torch.from_numpy(x), n_boot=2000, seed=1)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)  # seeded: reproducible
    lo50, hi50 = bootstrap_ci(torch.from_numpy(x), n_boot=2000, seed=1, level=0.5)
    assert np.all(lo < lo50) and np.all(hi50 < hi)


def _summarize(cand_rows, null_values, n: int = 8, min_effect: float = 0.01, alpha: float = 0.05,
               ctl_rows=None, roles=None, directions=None, audit_rows=(), pool: int = 0):
    """Run summarize_ablation on a fake runner: tested per-example Δ rows (candidates; ``directions`` -1 makes one a
    suppressor), constant null Δ's (layer 0) and audit rows."""
    nc, nn_, na = len(cand_rows), len(null_values), len(audit_rows)
    dirs = directions or [1] * nc
    jobs = ([AblationJob([(0, i)], "candidate" if d > 0 else "suppressor", 0, d) for i, d in enumerate(dirs)]
            + [AblationJob([(0, i) for i in range(nc)], "joint")]
            + [AblationJob([(0, nc + k)], "null", 0) for k in range(nn_)]
            + [AblationJob([(0, nc + nn_ + k)], "audit", 0) for k in range(na)])
    rows = [np.asarray(r, dtype=np.float64) for r in cand_rows]
    rows.append(np.sum(rows, axis=0))
    rows += [np.full(n, v, dtype=np.float64) for v in null_values]
    rows += [np.asarray(r, dtype=np.float64) for r in audit_rows]
    d_con = torch.from_numpy(np.stack(rows))
    ctl = [np.zeros(4) for _ in range(nc)] if ctl_rows is None else [np.asarray(r, dtype=np.float64) for r in ctl_rows]
    ctl.append(np.sum(ctl, axis=0))
    d_ctl = torch.from_numpy(np.stack(ctl))
    runner = SimpleNamespace(deltas=lambda kind: d_con if kind == "concept" else d_ctl, replicas=8, jobs=jobs,
                             job_index={"concept": list(range(len(jobs))), "control": list(range(nc + 1))},
                             row_index={"concept": list(range(len(jobs))), "control": list(range(nc + 1))},
                             offsets=[0, nc + nn_ + na], t_stats=lambda kind: torch.zeros(len(jobs)))
    units = nc + nn_ + na
    role = torch.zeros(units, dtype=torch.long)
    role[:nc] = torch.as_tensor(roles if roles is not None else [1 if d > 0 else 2 for d in dirs])
    scores = SimpleNamespace(importance=None, layer=torch.zeros(units, dtype=torch.long),
                             index=torch.arange(units), role=role)
    result = SimpleNamespace(scores=scores, ablation={}, ablation_summary=None)
    plan = AblationPlan(jobs, [(0, i) for i in range(nc)], "zero", 0, {0: list(range(nc, units + pool))}, {0: nn_},
                        null_size_needed(nc, alpha), 10, {0: 0})
    summarize_ablation(result, runner, plan, d_con.mean(1).numpy(), min_effect=min_effect, alpha=alpha,
                       n_boot=1000, seed=0, split="test", n_concept=n, n_control=4)
    return [result.ablation[c] for c in plan.candidates], result.ablation_summary


def test_validated_needs_every_criterion():
    """One candidate per run (Holm = raw p): each case fails exactly one criterion, A passes them all."""
    n = 10
    null = [0.25 + 2.0 ** -8 * k for k in range(-20, 20)]  # 40 null neurons around 0.25
    alt = np.array([1.0, -1.0] * (n // 2))
    cases = {  # name: (per-example Δ, min_effect, control rows, role)
        "A_all": (np.full(n, 1.0) + 0.01 * alt, 0.5, None, 1),
        "B_at_null_median": (np.full(n, 0.25), 0.01, None, 1),          # CI > 0, Δ >= min_effect, p ~ 0.5
        "C_below_min_effect": (np.full(n, 0.4) + 0.01 * alt, 0.5, None, 1),  # beyond the null, Δ < min_effect
        "D_ci_spans_zero": (np.full(n, 0.75) + 5.25 * alt, 0.5, None, 1),    # Δ >= min_effect, CI spans 0
        "E_not_specific": (np.full(n, 1.0) + 0.01 * alt, 0.5, [np.full(4, 1.0)], 1),  # same Δ on controls
        "F_not_selective": (np.full(n, 1.0) + 0.01 * alt, 0.5, None, 0),     # named, but not a candidate
    }
    got = {}
    for name, (row, min_effect, ctl, role) in cases.items():
        (rec,), summ = _summarize([row], null, n=n, min_effect=min_effect, ctl_rows=ctl, roles=[role])
        got[name] = rec
        (null0,) = summ["null"]
        assert null0["layer"] == 0 and null0["n"] == 40
        assert rec["delta"] == pytest.approx(row.mean(), abs=1e-12)
        g = sum(v >= rec["delta"] for v in null)
        if g < 10:  # never reached h = 10 exceedances: (g + 1) / (L + 1) over all 40
            assert rec["p_value"] == pytest.approx((g + 1) / 41) and rec["null_exceedances"] == g
        assert rec["p_holm"] == pytest.approx(rec["p_value"], rel=1e-12)  # one candidate
        assert rec["p_value"] >= rec["p_floor"] == pytest.approx(1 / 41)  # never below what the null supports
        assert summ["n_validated"] == int(rec["validated"]) and summ["n_candidates"] == 1
        assert summ["importance_delta_spearman"] is None and summ["audit"]["n_checked"] == 0
        assert summ["joint_delta"] == pytest.approx(rec["delta"])
        assert rec["validated"] is (not rec["reasons"]) and rec["verdict"] == (
            "validated" if rec["validated"] else "causal, not a candidate" if rec["causal"] else "not causal")
        assert rec["causal"] is (not [r for r in rec["reasons"] if not r.startswith("not a candidate")])

    a, b, c, d, e, f = (got[k] for k in cases)
    assert a["validated"] is True and a["ci_low"] > 0 and a["p_value"] == pytest.approx(1 / 41)
    assert a["specificity_ci_low"] > 0
    assert b["validated"] is False and b["p_value"] > 0.3 and b["ci_low"] > 0 and len(b["reasons"]) == 1
    assert "not beyond random neurons" in b["reasons"][0]
    assert c["validated"] is False and c["reasons"] == [f"|Δ| = {c['delta']:.3g} is below the minimum effect 0.5"]
    assert d["validated"] is False and d["ci_low"] < 0 < d["ci_high"] and len(d["reasons"]) == 2  # CI and specificity
    assert e["validated"] is False and e["specificity_ci_low"] <= 0 and len(e["reasons"]) == 1
    assert "not specific" in e["reasons"][0] and e["specificity_p_holm"] > 0.05
    assert a["specificity_p_holm"] <= 0.05
    # F passes every causal criterion: causal, but not a candidate (the three outcomes)
    assert f["validated"] is False and f["causal"] is True and f["verdict"] == "causal, not a candidate"
    assert f["reasons"] == ["not a candidate of the ranking (not FDR-significant and positively selective)"]
    assert [got[k]["causal"] for k in cases] == [True, False, False, False, False, True]


def test_holm_correction_over_candidates():
    """Three candidates beyond all 40 null neurons: p = 1/41 each, Holm x3 = 0.073 -> none validated; alone, one is."""
    null = list(np.random.default_rng(1).normal(0.0, 0.01, 40))
    delta = max(null) + 0.02
    recs, summ = _summarize([np.full(8, delta)] * 3, null)
    for r in recs:
        assert r["p_value"] == pytest.approx(1 / 41) and r["ci_low"] > 0
        assert r["p_holm"] == pytest.approx(3 / 41, rel=1e-9)
        assert r["validated"] is False
    assert any("cannot pass the Holm threshold" in w for w in summ["warnings"])  # 40 nulls < 3 / 0.05
    (alone,), summ = _summarize([np.full(8, delta)], null)
    assert alone["p_holm"] == pytest.approx(alone["p_value"]) and alone["validated"] is True
    assert summ["warnings"] == []
    # a large layer whose null stopped early (every p settled) is not "too small": no warning
    _, summ = _summarize([np.full(8, delta)] * 3, null, pool=1000)
    assert not any("cannot pass the Holm threshold" in w for w in summ["warnings"]), summ["warnings"]


def test_one_holm_family_over_drops_and_rises_and_a_two_sided_audit():
    """A candidate (drop) and a suppressor (rise), each beyond all 40 null neurons: Holm covers both together
    (x2: 2/41), not one family per direction (which bounds the FWER by 2 alpha only). The audit counts a rise as
    well as a drop beyond the null (it used to count drops only)."""
    null = list(np.random.default_rng(1).normal(0.0, 0.01, 40))
    big = max(abs(v) for v in null) + 0.5
    recs, summ = _summarize([np.full(8, big), np.full(8, -big)], null, directions=[1, -1],
                            audit_rows=[np.full(8, -big), np.full(8, 0.0)])
    for r in recs:
        assert r["p_value"] == pytest.approx(1 / 41) and r["p_holm"] == pytest.approx(2 / 41, rel=1e-9), r
    assert [r["direction"] for r in recs] == ["drop", "rise"]
    assert summ["holm_family"] == "all 2 tested neurons of this scan (one family)"
    audit = summ["audit"]["neurons"]
    assert [a["above_null"] for a in audit] == [True, False] and summ["audit"]["n_above_null"] == 1


def test_null_grows_only_while_a_p_value_is_open():
    """Besag-Clifford: the null sample doubles while a tested neuron has < h exceedances, up to m / alpha."""
    from neurolens_lightning.ablation import AblationPlan

    jobs = [AblationJob([(0, 0)], "candidate", 0), AblationJob([(0, 1)], "candidate", 0)]
    plan = AblationPlan(jobs, [(0, 0), (0, 1)], "zero", 0, {0: list(range(2, 500))}, {0: 0},
                        null_size_needed(2, 0.05), 10, {0: 0})
    assert plan.n_max == 40
    plan.null_taken[0] = 5
    plan.jobs += [AblationJob([(0, u)], "null", 0) for u in range(2, 7)]
    delta = np.array([10.0, -10.0] + [0.0] * 5)  # job 0 beats every null, job 1 is beaten by every one
    sizes = []
    while True:
        new = plan.more_null(delta)
        if not new:
            break
        delta = np.concatenate([delta, np.zeros(len(new))])
        sizes.append(plan.null_taken[0])
    assert sizes == [10, 20, 40]  # job 0 keeps the layer open until n_max; then it stops
    jobs2 = [AblationJob([(0, 0)], "candidate", 0)]
    plan2 = AblationPlan(jobs2 + [AblationJob([(0, u)], "null", 0) for u in range(1, 21)], [(0, 0)], "zero", 0,
                         {0: list(range(1, 500))}, {0: 20}, 400, 10, {0: 0})
    assert plan2.more_null(np.array([-5.0] + [0.0] * 20)) == []  # 20 >= h exceedances: settled, no more null


# ----------------------------------------------------------------------------- 6. bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(neurons=[(5, 0)]), r"layer 5 was not scanned"),
    (dict(neurons=[(0, 3)], layers=[1]), r"layer 0 was not scanned"),
    (dict(neurons=[(0, 10 ** 6)]), r"index out of range.*128 units"),
    (dict(neurons=[(0, -1)]), r"index out of range"),
    (dict(ablation="bogus"), r"unknown ablation method 'bogus'"),
    (dict(null_samples=1), r"null_samples must be >= 2"),
])
def test_bad_ablation_input(kwargs, match, toks):
    tok = toks["bert"]
    with pytest.raises(NeuroLensError, match=match):
        ablation_scan("bert", tok, **kwargs)


def test_named_neurons_only_tests_just_them(toks, zero_scans):
    """``test_top_k=False``: only the named neurons are tested (no top-k, no audit); their records equal the ones of
    the scan that also tests the top-k (same inputs, same null order), and the causal one is still validated."""
    only = ablation_scan("gpt2", toks["gpt2"], test_top_k=False, ablation="zero")
    both = zero_scans["gpt2"]
    assert set(only.ablation) == {(0, CAUSAL), (0, MUTE)}
    assert all(r["tested_as"] == "named" for r in only.ablation.values())
    assert only.ablation_summary["n_candidates"] == 0 and only.ablation_summary["audit"]["n_checked"] == 0
    assert only.ablation[(0, CAUSAL)]["validated"] and not only.ablation[(0, MUTE)]["validated"]
    # the same Δ for the named neurons as when the top-k are tested too (a job's Δ never depends on its company)
    for key in only.ablation:
        assert only.ablation[key]["delta"] == pytest.approx(both.ablation[key]["delta"], abs=1e-6)
