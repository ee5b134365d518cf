"""The fused scoring pass (issue 11, item 3): one forward + backward over the positives gives their
activations and importance, one no-grad forward over the negatives, with every score equal to the two-pass
scan (``run_activation_pass`` then ``run_importance_pass``) to 1e-6.

Every fused test also checks that the fused path really ran (``last_run_fused``, ``fused_batches`` and the
number of model forwards), so a silent fall-back to the two passes fails them. The same holds for
``ProbeModule``'s ``trainer.validate`` (``neurolens eval``): one dataloader of fused batches where the scanner
can fuse, the two dataloaders otherwise, with the scores of ``scan()``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import small_probe_dict

from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import count_hooks
from neurolens_lightning.pipeline import make_scanner, run_scan
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.training import modules

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-6


def _no_tasks(concept):
    return dataclasses.replace(concept, tasks=[])


def _small(tasks: bool = False):
    c = load_concept(small_probe_dict())  # 9 positives (3 groups), 6 negatives, [[spans]], 2 tasks
    return c if tasks else _no_tasks(c)


class _ForwardLog:
    """Wraps ``adapter.forward`` on the instance: counts calls and records grad mode / train flag / batch size."""

    def __init__(self, adapter):
        self.adapter, self.calls = adapter, []
        self._orig = adapter.forward
        adapter.forward = self

    def __call__(self, batch):
        call = {"grad": torch.is_grad_enabled(), "training": self.adapter.model.training, "size": batch.size,
                "stopped": False}
        self.calls.append(call)
        try:
            return self._orig(batch)
        except Exception as e:  # the fused pass's no-grad forwards stop after the deepest scanned site
            call["stopped"] = type(e).__name__ == "_StopForward"
            raise

    def restore(self):
        del self.adapter.forward


def _scan(adapter, concept, fused: bool, **kw):
    """(scores, scanner, forward log) of the fused ``run()`` or of the two explicit passes."""
    sc = ConceptScanner(adapter, concept, **kw)
    log = _ForwardLog(adapter)
    try:
        if fused:
            sc.run()
        else:
            sc.run_activation_pass()
            if sc.use_importance:
                sc.run_importance_pass()
    finally:
        log.restore()
    return sc.compute(), sc, log


def _assert_same_scores(a, b, tol=TOL):
    checked = []
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor), f.name
            assert x.shape == y.shape and x.dtype == y.dtype, f.name
            if x.is_floating_point():
                torch.testing.assert_close(y, x, atol=tol, rtol=tol, equal_nan=True, msg=lambda m: f"{f.name}: {m}")
            else:  # role, order, layer/index, top example ids and positions: exactly equal
                assert torch.equal(x, y), f.name
            checked.append(f.name)
        else:
            assert x == y, f.name
    for name in ("selectivity", "selectivity_p", "consistency", "importance_zero", "importance_mean",
                 "mean_activation", "top_values", "top_example_ids", "top_positions", "role", "order"):
        if getattr(a, name) is not None:
            assert name in checked


# ============================================================================ fused == two passes


@pytest.mark.parametrize("concept_name,batch_size", [("small", 3), ("small", 4), ("small", 5),
                                                     ("royalty", 16)])
def test_fused_gpt2_matches_two_pass(gpt2_tokenizer, gpt2_model, concept_name, batch_size):
    concept = _small() if concept_name == "small" else _no_tasks(load_concept("royalty"))
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    n_pos, n_neg = len(concept.positive), len(concept.negative)
    tail = n_pos % batch_size  # positives sharing the activation pass's batch with the first negatives
    two, sc2, log2 = _scan(adapter, concept, fused=False, batch_size=batch_size)
    fused, sc, log = _scan(adapter, concept, fused=True, batch_size=batch_size)
    # the fused path really ran: one forward + backward per batch of positives (it gives their activations
    # too), one no-grad forward per batch of negatives; only the tail positives are forwarded twice
    assert sc.can_fuse() and sc.last_run_fused is True and sc2.last_run_fused is None
    assert sc.fused_batches == n_pos // batch_size and sc.split_batches == 0
    grad_calls = [c["size"] for c in log.calls if c["grad"]]
    assert grad_calls == [batch_size] * (n_pos // batch_size) + ([tail] if tail else [])
    assert sum(c["size"] for c in log.calls if not c["grad"]) == n_neg + tail
    assert sum(c["size"] for c in log.calls) == n_pos + n_neg + tail
    assert sum(c["size"] for c in log2.calls) == 2 * n_pos + n_neg  # the two passes see every positive twice
    assert not any(c["training"] for c in log.calls)
    # the no-grad forwards (negatives, mixed batch) skip the LM head; the two passes run every forward to the end
    assert all(c["stopped"] != c["grad"] for c in log.calls) and not any(c["stopped"] for c in log2.calls)
    _assert_same_scores(two, fused)
    assert fused.importance is not None and fused.n_pos == n_pos and fused.n_neg == n_neg
    # the top examples name global example indices (negatives are indices >= n_pos)
    assert fused.top_example_ids.max() < n_pos + n_neg and (fused.top_example_ids >= n_pos).any()


def test_fused_on_a_lower_layer_only(gpt2_tokenizer, gpt2_model):
    """Scanning layer 0 of 2: the negatives' forwards stop after block 0; importance still reads y at the head."""
    concept = _small()
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    seen = []
    handle = gpt2_model.transformer.h[1].register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
    try:
        two, _, _ = _scan(adapter, concept, fused=False, batch_size=3, layers=[0])
        n_two = len(seen)
        fused, sc, log = _scan(adapter, concept, fused=True, batch_size=3, layers=[0])
    finally:
        handle.remove()
    assert sc.last_run_fused and sc.fused_batches == 3
    assert seen[n_two:] == [True] * 3  # block 1 ran only in the fused forward + backward of the positives
    assert [c["stopped"] for c in log.calls] == [False] * 3 + [True] * 2
    _assert_same_scores(two, fused)
    assert count_hooks(gpt2_model) == 0


def test_fewer_positives_than_a_batch_is_not_fused(gpt2_tokenizer, gpt2_model):
    """With every positive in the batch that also holds negatives there is no batch of positives to fuse."""
    concept = _small()
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=16)
    res, sc, _ = _scan(adapter, concept, fused=True, batch_size=16)
    assert sc.fusable_setup() and not sc.can_fuse() and sc.last_run_fused is False
    _assert_same_scores(two, res, tol=0.0)
    sc = ConceptScanner(adapter, concept, batch_size=16)
    sc.run_fused_pass()  # called directly it still scores everything, with nothing fused
    assert sc.fused_batches == sc.split_batches == 0
    _assert_same_scores(two, sc.compute(), tol=0.0)


def test_fused_exact_ties_in_top_activations_resolve_as_in_two_passes(gpt2_tokenizer, gpt2_model):
    """Examples with the same prefix up to the span get bit-identical span activations in a causal model; the
    per-example metric updates follow the activation pass's batches, so the tied ids come out in the same order."""
    concept = _no_tasks(load_concept("royalty"))
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=4)
    fused, sc, _ = _scan(adapter, concept, fused=True, batch_size=4)
    assert sc.last_run_fused
    v = two.top_values
    assert bool((v[:-1] == v[1:]).any())  # the case exists in this probe
    assert torch.equal(two.top_example_ids, fused.top_example_ids)
    assert torch.equal(two.top_positions, fused.top_positions)


def test_fused_step_equals_activation_step_plus_importance_step(gpt2_tokenizer, gpt2_model):
    concept = _small()
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    a, b = ConceptScanner(adapter, concept), ConceptScanner(adapter, concept)
    items = concept.positive[:5]
    ids = torch.arange(5)
    batch = a.encode_confidence(items, tasks=False)
    assert ConceptScanner.same_encoding(adapter.encode(items), batch)
    a.activation_step(adapter.encode(items), a.is_positive[ids], a.groups[ids], ids)
    y_two = a.importance_step(batch)
    y_fused = b.fused_step(batch, b.is_positive[ids], b.groups[ids], ids)
    torch.testing.assert_close(y_fused, y_two, atol=TOL, rtol=TOL)
    assert not y_fused.requires_grad
    for ma, mb in zip(a.metrics(), b.metrics()):
        for name in ma._defaults:
            torch.testing.assert_close(getattr(mb, name), getattr(ma, name), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("world", [2, 3])
def test_fused_respects_sharding(gpt2_tokenizer, gpt2_model, world):
    concept = _small()
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    n = len(concept.positive) + len(concept.negative)
    for rank in range(world):
        two, _, log2 = _scan(adapter, concept, fused=False, batch_size=2, rank=rank, world_size=world)
        fused, sc, log = _scan(adapter, concept, fused=True, batch_size=2, rank=rank, world_size=world)
        assert sc.last_run_fused
        mine = list(range(rank, n, world))
        mine_pos = [i for i in mine if i < len(concept.positive)]
        tail = len(mine_pos) % 2 if len(mine_pos) < len(mine) else 0
        assert sc.fused_batches == len(mine_pos) // 2 + (tail == 0 and len(mine_pos) % 2)
        assert sum(c["size"] for c in log.calls if c["grad"]) == len(mine_pos)
        assert sum(c["size"] for c in log.calls) == len(mine) + tail
        assert sc.selectivity.count.sum() == len(mine) and sc.importance.n == len(mine_pos)
        _assert_same_scores(two, fused)
        ids = fused.top_example_ids[fused.top_example_ids >= 0]
        assert bool(((ids % world) == rank).all())  # global indices of this rank's shard


def test_fused_resnet_without_position_mask():
    """Images (no position mask, BatchNorm): fusable when the probe scores no tasks, and identical."""
    from neurolens_lightning.registry import load_model

    adapter = load_model("resnet18", weights="random", image_size=32, device="cpu")
    base = load_concept("red")
    concept = dataclasses.replace(_no_tasks(base), positive=base.positive[:5], negative=base.negative[:4],
                                  positive_groups=base.positive_groups[:5])
    adapter.model.train()  # BatchNorm in train mode would make a batch's statistics leak between examples
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=3, layers=[6, 7])
    fused, sc, log = _scan(adapter, concept, fused=True, batch_size=3, layers=[6, 7])
    assert sc.last_run_fused and sc.fused_batches == 1 and [c["size"] for c in log.calls if c["grad"]] == [3, 2]
    assert not any(c["training"] for c in log.calls)
    assert all(m.training for m in adapter.model.modules())  # restored
    _assert_same_scores(two, fused)


# ============================================================================ fall-backs


def test_probe_with_tasks_falls_back(gpt2_tokenizer, gpt2_model):
    concept = _small(tasks=True)
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=4)
    res, sc, log = _scan(adapter, concept, fused=True, batch_size=4)
    assert sc.uses_tasks and not sc.fusable_setup() and not sc.can_fuse() and sc.last_run_fused is False
    assert sum(c["size"] for c in log.calls if not c["grad"]) == len(concept.positive) + len(concept.negative)
    assert sum(c["size"] for c in log.calls if c["grad"]) == len(concept.tasks)
    _assert_same_scores(two, res, tol=0.0)
    with pytest.raises(NeuroLensError, match="fused pass"):
        sc.run_fused_pass()


def test_bert_mlm_falls_back(bert_tokenizer, bert_model):
    """A masked LM masks the span for y: the confidence inputs are not the activation inputs."""
    concept = _small()
    adapter = adapter_for(bert_model, bert_tokenizer)
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=4)
    res, sc, log = _scan(adapter, concept, fused=True, batch_size=4)
    assert sc.fusable_setup() and not sc.can_fuse() and sc.last_run_fused is False
    assert sum(c["size"] for c in log.calls) == 2 * len(concept.positive) + len(concept.negative)
    _assert_same_scores(two, res, tol=0.0)


def test_fused_pass_scores_mismatched_batches_in_two(bert_tokenizer, bert_model):
    """Called directly on a model whose encodings differ, the fused pass checks every batch and scores it by
    the two steps: the scores still match (the safety net behind can_fuse's first-batch check)."""
    concept = _small()
    adapter = adapter_for(bert_model, bert_tokenizer)
    two, _, _ = _scan(adapter, concept, fused=False, batch_size=4)
    sc = ConceptScanner(adapter, concept, batch_size=4)
    sc.run_fused_pass()
    assert sc.fused_batches == 0 and sc.split_batches == len(concept.positive) // 4
    _assert_same_scores(two, sc.compute())


def test_no_output_head_falls_back(bert_tokenizer, bert_encoder):
    """y comes from a probe head fitted on the activation pass's features: never fused."""
    concept = _small()
    adapter = adapter_for(bert_encoder, bert_tokenizer)
    two, sc2, _ = _scan(adapter, concept, fused=False, batch_size=4)
    res, sc, _ = _scan(adapter, concept, fused=True, batch_size=4)
    assert not adapter.has_output_head and not sc.can_fuse() and sc.last_run_fused is False
    assert sc.head is not None
    _assert_same_scores(two, res, tol=0.0)


def test_importance_off_is_not_fused(gpt2_tokenizer, gpt2_model):
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    res, sc, log = _scan(adapter, _small(), fused=True, batch_size=4, importance=False)
    assert not sc.can_fuse() and sc.last_run_fused is False and res.importance is None
    assert not any(c["grad"] for c in log.calls)


# ============================================================================ model left as it was


def test_fused_restores_modes_hooks_and_grads(gpt2_tokenizer, gpt2_model):
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    gpt2_model.train()
    gpt2_model.transformer.h[1].eval()  # a mixed state must come back exactly
    modes = {n: m.training for n, m in gpt2_model.named_modules()}
    assert all(p.requires_grad for p in gpt2_model.parameters())
    n_hooks = count_hooks(gpt2_model)
    _, sc, log = _scan(adapter, _small(), fused=True, batch_size=4)
    assert sc.last_run_fused and not any(c["training"] for c in log.calls)
    assert {n: m.training for n, m in gpt2_model.named_modules()} == modes
    assert count_hooks(gpt2_model) == n_hooks == 0
    assert all(p.grad is None for p in gpt2_model.parameters())


def test_fused_on_frozen_model(gpt2_tokenizer, gpt2_model):
    """Parameters without grad: the hooks start the graph at the activations; same scores."""
    gpt2_model.requires_grad_(False)
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    two, _, _ = _scan(adapter, _small(), fused=False, batch_size=4)
    fused, sc, _ = _scan(adapter, _small(), fused=True, batch_size=4)
    assert sc.last_run_fused and fused.importance is not None and bool((fused.importance != 0).any())
    _assert_same_scores(two, fused)


@pytest.mark.parametrize("where", ["confidence", "negative_forward"])
def test_exception_inside_fused_pass_leaves_no_hooks(gpt2_tokenizer, gpt2_model, where):
    adapter = adapter_for(gpt2_model, gpt2_tokenizer)
    gpt2_model.train()
    sc = ConceptScanner(adapter, _small(), batch_size=4)
    assert sc.can_fuse()
    if where == "confidence":  # inside the fused forward + backward (hooks of intervene in place)
        def boom(*args, **kwargs):
            raise RuntimeError("boom")
        adapter.confidence = boom
    else:  # inside a no-grad negative forward (capture hooks in place)
        orig, calls = adapter.forward, []

        def boom(batch):
            calls.append(torch.is_grad_enabled())
            if not torch.is_grad_enabled():
                raise RuntimeError("boom")
            return orig(batch)
        adapter.forward = boom
    try:
        with pytest.raises(RuntimeError, match="boom"):
            sc.run()
    finally:
        adapter.__dict__.pop("confidence", None)
        adapter.__dict__.pop("forward", None)
    if where == "negative_forward":
        assert calls.count(True) == sc.fused_batches == 2  # the positive batches were fused before the failure
    assert count_hooks(gpt2_model) == 0
    assert all(m.training for m in gpt2_model.modules())
    assert all(p.grad is None for p in gpt2_model.parameters())


# ============================================================================ ProbeModule: trainer.validate


def _validate(module, inference_mode: bool = False):
    """``trainer.validate`` of ``module`` on its datamodule: (datamodule, batches per dataloader, forward log)."""
    import lightning.pytorch as pl

    dm = module.datamodule()
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=inference_mode, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    log = _ForwardLog(module.adapter)
    try:
        trainer.validate(module, datamodule=dm, verbose=False)
    finally:
        log.restore()
    return dm, list(trainer.num_val_batches), log


def _two_pass(module, concept, **kw):
    """The two-pass scores of ``module``'s settings (activation pass, then importance pass)."""
    sc = make_scanner(module.adapter, concept, module.settings, **{"rank": 0, "world": 1, **kw}).scanner
    sc.run_activation_pass()
    sc.run_importance_pass()
    return sc.compute()


@pytest.mark.parametrize("batch_size", [3, 4])
def test_probe_module_fuses_and_matches_scan(gpt2_tokenizer, gpt2_model, batch_size):
    """GPT-2 with its LM head, a probe without tasks, importance on: one dataloader of the fused pass's batches,
    one forward + backward per batch of positives, and exactly the scores of scan() (to 1e-6 of the two passes)."""
    from neurolens_lightning.training.modules import ProbeModule

    concept = _small()
    n_pos, n_neg = len(concept.positive), len(concept.negative)
    module = ProbeModule(gpt2_model, concept, tokenizer=gpt2_tokenizer, batch_size=batch_size)
    dm, n_batches, log = _validate(module)
    sc = module.scanner
    # the fused path really ran: one dataloader walking the activation pass's batches, fused_step per batch of
    # positives (a silent fall-back to the two dataloaders fails every line here)
    assert dm.fused is True and n_batches == [-(-(n_pos + n_neg) // batch_size)]
    assert sc.last_run_fused is True and sc.fused_batches == n_pos // batch_size and sc.split_batches == 0
    tail = n_pos % batch_size
    assert [c["size"] for c in log.calls if c["grad"]] == [batch_size] * (n_pos // batch_size) + ([tail] if tail else [])
    assert sum(c["size"] for c in log.calls) == n_pos + n_neg + tail
    assert module.result.settings["passes"] == "fused"
    assert set(module.result.timings) == {"statistics"}  # eval adds load_model / scoring / total: no pass keys
    got = module.result.scores
    ref, run = run_scan(module.adapter, concept, module.settings, rank=0, world=1)
    assert run.scanner.fused_batches == sc.fused_batches  # scan() fused the same batches ...
    _assert_same_scores(ref.scores, got, tol=0.0)  # ... so its scores are bit-identical
    _assert_same_scores(_two_pass(module, concept), got)
    assert got.importance is not None and got.n_pos == n_pos and got.n_neg == n_neg


def test_probe_module_with_tasks_keeps_two_dataloaders(gpt2_tokenizer, gpt2_model):
    """A probe with tasks (y on the tasks, not the positives) cannot fuse: activation + confidence dataloaders."""
    from neurolens_lightning.training.modules import ProbeModule

    concept = _small(tasks=True)
    module = ProbeModule(gpt2_model, concept, tokenizer=gpt2_tokenizer, batch_size=4)
    dm, n_batches, log = _validate(module)
    sc = module.scanner
    n_all = len(concept.positive) + len(concept.negative)
    assert dm.fused is False and n_batches == [-(-n_all // 4), -(-len(concept.tasks) // 4)]
    assert sc.last_run_fused is False and sc.fused_batches == sc.split_batches == 0
    assert sum(c["size"] for c in log.calls if c["grad"]) == len(concept.tasks)
    assert module.result.settings["passes"] == "activation + importance"
    ref, _ = run_scan(module.adapter, concept, module.settings, rank=0, world=1)
    _assert_same_scores(ref.scores, module.result.scores, tol=0.0)
    _assert_same_scores(_two_pass(module, concept), module.result.scores, tol=0.0)


@pytest.mark.parametrize("batch_size,world", [(2, 2), (2, 3), (5, 2)])
def test_probe_module_shards_like_the_scanner(gpt2_tokenizer, gpt2_model, monkeypatch, batch_size, world):
    """Under DDP each rank's dataloader walks its shard ``r, r + W, ...``: the rank decides to fuse as its scanner
    would (with batch 5 on 2 ranks, rank 0 fuses and rank 1 cannot) and accumulates that rank's scores."""
    from neurolens_lightning.training.modules import ProbeModule, ShardSampler

    concept = _small()
    decisions = []
    for rank in range(world):
        monkeypatch.setattr(modules, "_sampler", lambda ds, r=rank: ShardSampler(ds, num_replicas=world, rank=r))
        module = ProbeModule(gpt2_model, concept, tokenizer=gpt2_tokenizer, batch_size=batch_size)
        dm, n_batches, _ = _validate(module)
        ref = ConceptScanner(module.adapter, concept, batch_size=batch_size, rank=rank, world_size=world)
        assert dm.fused is ref.can_fuse() and len(n_batches) == (1 if dm.fused else 2)
        decisions.append(dm.fused)
        if dm.fused:
            ref.run_fused_pass()
            assert 0 < module.scanner.fused_batches == ref.fused_batches
        sc = ConceptScanner(module.adapter, concept, batch_size=batch_size, rank=rank, world_size=world)
        sc.run_activation_pass()
        sc.run_importance_pass()
        _assert_same_scores(sc.compute(), module.result.scores)
        assert module.scanner.selectivity.count.sum() == len(range(rank, len(sc.examples), world))
    assert decisions == ([True, False] if batch_size == 5 else [True] * world)


def test_probe_module_fused_needs_gradients(gpt2_tokenizer, gpt2_model):
    from neurolens_lightning.training.modules import ProbeModule

    module = ProbeModule(gpt2_model, _small(), tokenizer=gpt2_tokenizer, batch_size=4)
    with pytest.raises(NeuroLensError, match="inference_mode=False"):
        _validate(module, inference_mode=True)
    assert count_hooks(gpt2_model) == 0
