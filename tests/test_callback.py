"""NeuroLensCallback inside real Lightning fits (tiny GPT-2, CPU).

What is pinned:

* non-interference: a seeded fit with the callback (probe every 2 steps, ``ablate_top_k=2``,
  importance on) ends with bit-identical weights and optimizer state, and sees the batches in
  the same (shuffled) order, as the same fit without it - with dropout on, so RNG matters;
* resume: fit to step 4 with ``ModelCheckpoint(every_n_train_steps=4)``, resume with
  ``ckpt_path=`` to step 8: the history and the score log continue 0, 2, 4, 6, 8 (no gaps, no
  duplicates) and the checkpoint loads with ``weights_only=True``; also with another cadence (steps 2 -> 3,
  steps -> epochs), from a checkpoint of the earlier key (which held the cadence) and from one of a larger
  concept set; other layers / top_k / importance are refused with one line;
* interrupted fits (Ctrl-C, an exception, a probe failing half way): the report of the points measured so far
  is written, marked as interrupted, and the exception propagates; the page names the model once;
* trajectories: the final top neurons' scores are filled in at every probe point from the score
  log (no gaps from the first point) and match the full-precision scores of each point;
* DDP: a 2-process ``ddp`` fit (CPU, gloo; run as a subprocess of this file with a hard timeout)
  gives the single-process scores (top neurons, selectivity to 1e-6) and only rank 0 logs and
  writes the report (once);
* CSVLogger metrics, ``fast_dev_run``, ``on_validation_end`` probes, epoch and end cadence;
* hygiene: hooks removed, train mode restored, no ``.grad`` created, RNG states restored;
* the examples' ``--fast`` modes run and write an emergence report with a timeline; the digits
  example's image candidates carry inlined thumbnails with their group labels.

Run ``python tests/test_callback.py --ddp-worker OUT DEVICES`` to run one DDP fit by hand.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import DataLoader, Dataset

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(TESTS), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from helpers import TokenSequences, make_word_tokenizer, nested_tensors, small_probe_dict  # noqa: E402

from neurolens_lightning.training.callback import NeuroLensCallback  # noqa: E402
from neurolens_lightning.training.finetune import CausalLM  # noqa: E402
from neurolens_lightning.hooks import count_hooks  # noqa: E402

CONCEPT = small_probe_dict()["name"]  # "small_royalty"
SEQ_LEN = 12
N_SEQ = 32
DDP_TIMEOUT_S = 240


# ------------------------------------------------------------------------------------------ fixtures/helpers


class _RecordingLM(CausalLM):
    """CausalLM that records which examples each training step saw."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["idx"].tolist())
        return super().training_step(batch, batch_idx)


def _make_module(tokenizer: Any, dropout: float = 0.1, optimizer: str = "adamw", lr: float = 3e-3) -> _RecordingLM:
    return _RecordingLM.from_scratch(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=32, dropout=dropout,
                                     seed=0, lr=lr, optimizer=optimizer)


def _trainer(**kw: Any) -> pl.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    base.update(kw)
    return pl.Trainer(**base)


def _callback(**kw: Any) -> NeuroLensCallback:
    base = dict(concepts=small_probe_dict(), every_n_train_steps=2, importance=True, top_k=5, batch_size=8,
                null_samples=8)
    base.update(kw)
    return NeuroLensCallback(**base)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2")


@pytest.fixture(scope="module")
def data(tok):
    return TokenSequences(tok, N_SEQ, SEQ_LEN)


def _fit(tok: Any, data: Dataset, callbacks: list, max_steps: int = 6, shuffle: bool = True, seed: int = 0,
         module: _RecordingLM | None = None, ckpt_path: str | None = None, **trainer_kw: Any
         ) -> tuple[_RecordingLM, pl.Trainer]:
    pl.seed_everything(seed, verbose=False)
    module = module or _make_module(tok)
    loader = DataLoader(data, batch_size=4, shuffle=shuffle)
    trainer = _trainer(max_steps=max_steps, callbacks=callbacks, **trainer_kw)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module, trainer


# ------------------------------------------------------------------------------------------ non-interference


def _greedy_scanner(monkeypatch) -> list:
    """Make every activation pass draw from the global torch / numpy / random generators."""
    from neurolens_lightning import scanner as scanner_mod

    consumed: list = []
    original = scanner_mod.ConceptScanner.run_activation_pass

    def greedy_pass(self):
        consumed.append((torch.rand(1).item(), np.random.rand(), random.random()))
        return original(self)

    monkeypatch.setattr(scanner_mod.ConceptScanner, "run_activation_pass", greedy_pass)
    return consumed


@pytest.mark.parametrize("greedy", [False, True], ids=["plain", "rng-consuming-probe"])
def test_fit_is_bit_identical_with_and_without_callback(tok, data, greedy, monkeypatch):
    """Weights, optimizer state and the shuffled batch order do not depend on the callback - also when the
    probe itself draws random numbers (the callback restores every global RNG)."""
    ref, ref_tr = _fit(tok, data, callbacks=[])
    consumed = _greedy_scanner(monkeypatch) if greedy else None
    cb = _callback(ablate_top_k=2)
    got, got_tr = _fit(tok, data, callbacks=[cb])
    assert consumed is None or len(consumed) == 4

    assert [p["step"] for p in cb.history] == [0, 2, 4, 6]       # it did probe (start + every 2 steps)
    assert all("ablation" in p for p in cb.history)               # ... with the ablation and
    assert all(p["top"][0]["importance"] is not None for p in cb.history)  # importance passes
    assert got.model.config.resid_pdrop > 0 and got.model.config.attn_pdrop > 0  # dropout on: RNG matters

    assert got.seen == ref.seen                                   # same shuffled order, same batches
    assert got.seen != sorted(got.seen) or len(got.seen) == 1
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert ref_sd.keys() == got_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), f"weight {k} differs"
    ref_opt, got_opt = nested_tensors(ref_tr.optimizers[0].state_dict()), nested_tensors(got_tr.optimizers[0].state_dict())
    assert ref_opt.keys() == got_opt.keys() and len(ref_opt) > 0
    for k in ref_opt:
        assert torch.equal(ref_opt[k], got_opt[k]), f"optimizer state {k} differs"
    # the weights did move: the comparison is not vacuous
    init = _make_module(tok).state_dict()
    key = "model.transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(init[key], got_sd[key])


class _Snapshot(Callback):
    """Records module modes, grads, hooks and RNG states (before the NeuroLens callback runs)."""

    def __init__(self) -> None:
        self.snaps: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.snaps.append({
            "step": trainer.global_step,
            "modes": [m.training for m in pl_module.modules()],
            "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
            "requires_grad": [p.requires_grad for p in pl_module.parameters()],
            "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
        })


class _Check(Callback):
    """Compares the state after the NeuroLens callback with the snapshot taken before it."""

    def __init__(self, before: _Snapshot, cb: NeuroLensCallback) -> None:
        self.before, self.cb, self.checked = before, cb, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        snap = self.before.snaps[-1]
        assert count_hooks(pl_module) == 0
        assert [m.training for m in pl_module.modules()] == snap["modes"]
        assert all(snap["modes"])                                  # train mode after the probe
        assert [p.requires_grad for p in pl_module.parameters()] == snap["requires_grad"]
        for p, g in zip(pl_module.parameters(), snap["grads"]):
            assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
        assert torch.equal(torch.get_rng_state(), snap["rng"][0])
        assert np.array_equal(np.random.get_state()[1], snap["rng"][1])
        assert random.getstate() == snap["rng"][2]
        if self.cb.last_probe_step == trainer.global_step:
            self.checked += 1


def test_probe_leaves_modes_grads_hooks_and_rng_untouched(tok, data, monkeypatch):
    consumed = _greedy_scanner(monkeypatch)  # a probe that draws from every global RNG: the callback restores them
    cb = _callback(ablate_top_k=2)
    snap = _Snapshot()
    check = _Check(snap, cb)
    module, trainer = _fit(tok, data, callbacks=[snap, cb, check], max_steps=4)
    assert check.checked == 2 and consumed  # steps 2 and 4 were probed and checked

    # a direct probe on a module without gradients creates none, and leaves eval/train flags as they were
    module.train()
    module.model.transformer.h[1].eval()  # a mixed-mode module: each flag must come back as it was
    modes = [m.training for m in module.modules()]
    for p in module.parameters():
        p.grad = None
    rng = torch.get_rng_state()
    points = cb.probe(trainer, module, reason="manual")
    assert points and points[0]["reason"] == "manual"
    assert all(p.grad is None for p in module.parameters())
    assert [m.training for m in module.modules()] == modes
    assert count_hooks(module) == 0
    assert torch.equal(torch.get_rng_state(), rng)


# ------------------------------------------------------------------------------------------ resume


def test_resume_continues_history_without_gaps_or_duplicates(tok, data, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    cb1 = _callback()
    mc = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _fit(tok, data, callbacks=[cb1, mc], max_steps=4, enable_checkpointing=True)
    assert [p["step"] for p in cb1.history] == [0, 2, 4]
    ckpt = ckpt_dir / "step=4.ckpt"
    assert ckpt.is_file()

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # callback state is plain data
    state = raw["callbacks"][cb1.state_key]
    assert [p["step"] for p in state["history"]] == [0, 2, 4] and state["last_probe_step"] == 4
    assert [e["step"] for e in state["score_log"]] == [0, 2, 4]        # every neuron's scores, compactly
    assert all(isinstance(e["score"], torch.Tensor) and e["score"].numel() == sum(e["units"])
               for e in state["score_log"])

    cb2 = _callback()
    assert cb2.state_key == cb1.state_key
    mc2 = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _fit(tok, data, callbacks=[cb2, mc2], max_steps=8, ckpt_path=str(ckpt), enable_checkpointing=True)
    steps = [p["step"] for p in cb2.history]
    assert steps == [0, 2, 4, 6, 8]                                   # continued, no gap, no duplicate
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert [p["reason"] for p in cb2.history] == ["start", "step", "step", "step", "step"]
    assert cb2.history[:3] == state["history"]                        # the restored points are kept as saved
    assert cb2.history[3]["jaccard_prev"] is not None                 # the chain of overlaps continues
    assert [e["step"] for e in cb2.score_log] == steps                # the score log continued too ...
    for a, b in zip(cb2.score_log[:3], state["score_log"]):
        assert torch.equal(a["score"], b["score"]) and torch.equal(a["role"], b["role"])
    timeline = cb2.emergence(CONCEPT)                                 # ... so the final top neurons have no gap
    assert all(t["score"] is not None and t["selectivity"] is not None for p in timeline for t in p["tracked"])
    final = torch.load(ckpt_dir / "step=8.ckpt", map_location="cpu", weights_only=True)
    assert [p["step"] for p in final["callbacks"][cb2.state_key]["history"]] == steps


def _fit_to_step4(tok, data, tmp_path, **cb_kw: Any) -> tuple[NeuroLensCallback, Path]:
    """A fit to step 4 (probes every 2 steps, checkpoint at step 4); returns the callback and the checkpoint."""
    cb = _callback(**cb_kw)
    mc = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _fit(tok, data, callbacks=[cb, mc], max_steps=4, enable_checkpointing=True)
    assert sorted({p["step"] for p in cb.history}) == [0, 2, 4]
    return cb, tmp_path / "ckpt" / "step=4.ckpt"


@pytest.mark.parametrize("cadence,steps,reasons", [
    (dict(every_n_train_steps=3), [0, 2, 4, 6, 8], ["start", "step", "step", "step", "end"]),
    (dict(every_n_train_steps=None, every_n_epochs=1), [0, 2, 4, 8], ["start", "step", "step", "epoch"]),
], ids=["steps-2-to-3", "steps-to-epochs"])
def test_resume_with_another_cadence_keeps_every_point(tok, data, tmp_path, cadence, steps, reasons):
    """The checkpoint entry does not depend on the cadence: a resume with another one continues the history (the
    saved points as saved, no second "start" at the resume step)."""
    cb1, ckpt = _fit_to_step4(tok, data, tmp_path)
    saved = copy.deepcopy(cb1.history)
    cb2 = _callback(**cadence)
    _fit(tok, data, callbacks=[cb2], max_steps=8, ckpt_path=str(ckpt))
    assert [p["step"] for p in cb2.history] == steps
    assert [p["reason"] for p in cb2.history] == reasons
    assert cb2.history[:3] == saved
    assert [e["step"] for e in cb2.score_log] == steps
    assert all(t["score"] is not None for p in cb2.emergence(CONCEPT) for t in p["tracked"])


def _legacy_checkpoint(ckpt: Path, out: Path, key_cadence: tuple[int | None, int | None]) -> Path:
    """``ckpt`` as an earlier NeuroLens wrote it: the callback's entry under the key that held the cadence, its
    state without ``probe_setup``."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    (key, state), = [(k, v) for k, v in raw["callbacks"].items() if k.startswith("NeuroLensCallback")]
    state.pop("probe_setup")
    old = (f"NeuroLensCallback{{'concepts': [{CONCEPT!r}], 'every_n_train_steps': {key_cadence[0]!r}, "
           f"'every_n_epochs': {key_cadence[1]!r}}}")
    raw["callbacks"] = {old: state, **{k: v for k, v in raw["callbacks"].items() if k != key}}
    torch.save(raw, out)
    return out


@pytest.mark.parametrize("every", [2, 3])
def test_resume_from_a_checkpoint_of_the_earlier_key(tok, data, tmp_path, every):
    """Checkpoints written under the earlier key (concepts + cadence) still resume: with the same cadence (what
    the earlier key found) and with another one."""
    cb1, ckpt = _fit_to_step4(tok, data, tmp_path)
    legacy = _legacy_checkpoint(ckpt, tmp_path / "legacy.ckpt", (2, None))
    cb2 = _callback(every_n_train_steps=every)
    _fit(tok, data, callbacks=[cb2], max_steps=8, ckpt_path=str(legacy))
    assert cb2.history[:3] == cb1.history
    assert [p["step"] for p in cb2.history] == [0, 2, 4, 6, 8]
    assert [p["reason"] for p in cb2.history][:3] == ["start", "step", "step"]
    assert [e["step"] for e in cb2.score_log] == [p["step"] for p in cb2.history]


def test_resume_with_a_smaller_concept_set_keeps_the_shared_concepts(tok, data, tmp_path):
    """A checkpoint of concepts [A, B] resumed by a callback of [A]: A's points continue, B's are not taken."""
    other = dict(small_probe_dict(), name="other_royalty")
    cb1, ckpt = _fit_to_step4(tok, data, tmp_path, concepts=[small_probe_dict(), other])
    cb2 = _callback()
    _fit(tok, data, callbacks=[cb2], max_steps=6, ckpt_path=str(ckpt))
    assert [(p["concept"], p["step"]) for p in cb2.history] == [(CONCEPT, s) for s in (0, 2, 4, 6)]
    assert cb2.history[:3] == [p for p in cb1.history if p["concept"] == CONCEPT]
    assert [(e["concept"], e["step"]) for e in cb2.score_log] == [(CONCEPT, s) for s in (0, 2, 4, 6)]


@pytest.mark.parametrize("change,match", [
    (dict(top_k=3), r"top_k=5, this NeuroLensCallback has top_k=3.*resume with top_k=5"),
    (dict(layers=[1]), r"layers=\[0, 1\], this NeuroLensCallback has layers=\[1\]"),
    (dict(importance=False), r"importance=True, this NeuroLensCallback has importance=False"),
])
def test_resume_with_incomparable_probes_is_refused(tok, data, tmp_path, change, match):
    """Points of other layers / top_k / importance are not comparable with the saved ones: one line naming the
    setting, before a step is trained - also from a checkpoint of the earlier key (setup read from the points)."""
    from neurolens_lightning.errors import NeuroLensError

    _, ckpt = _fit_to_step4(tok, data, tmp_path)
    legacy = _legacy_checkpoint(ckpt, tmp_path / "legacy.ckpt", (2, None))
    for path in (ckpt, legacy):
        if "top_k" in change and path == legacy:
            continue  # the earlier state did not hold top_k (a point's top may be shorter than k)
        cb = _callback(**change)
        module = _make_module(tok)
        with pytest.raises(NeuroLensError, match=match) as err:
            _fit(tok, data, callbacks=[cb], max_steps=8, ckpt_path=str(path), module=module)
        assert "\n" not in str(err.value)
        assert cb.history == [] and module.seen == []


def test_two_callbacks_of_one_concept_set_are_refused():
    """One checkpoint entry per concept set: Lightning refuses a second callback of the same set (other cadence) when
    the Trainer is built, instead of one history silently overwriting the other in the checkpoint."""
    with pytest.raises(RuntimeError, match="state_key` must be unique"):
        _trainer(max_steps=2, callbacks=[_callback(), _callback(every_n_train_steps=3)])
    _trainer(max_steps=2, callbacks=[_callback(), _callback(concepts=dict(small_probe_dict(), name="other"))])


# ------------------------------------------------------------------------------------------ interrupted fits


class _StopAt(Callback):
    """Raises ``error`` at the end of training step ``step`` (after the NeuroLens callback, listed before it)."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise self.error


@pytest.fixture
def restore_sigint():
    """Lightning ignores SIGINT after a KeyboardInterrupt (for its shutdown): put the handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize("error,raised", [(KeyboardInterrupt(), SystemExit), (RuntimeError("boom"), RuntimeError)],
                         ids=["ctrl-c", "runtime-error"])
def test_interrupted_fit_writes_the_measured_points(tok, data, tmp_path, error, raised, restore_sigint):
    """Ctrl-C (Lightning turns it into exit 1) or an exception at step 5: the report of the points measured before
    (0, 2, 4) is written, marked as interrupted at step 5, with a warning; the exception still propagates."""
    out = tmp_path / "reports"
    cb = _callback(report_dir=str(out))
    with pytest.warns(UserWarning, match="interrupted at step 5"), pytest.raises(raised):
        _fit(tok, data, callbacks=[cb, _StopAt(5, error)], max_steps=8)
    saved = json.loads((out / CONCEPT / "results.json").read_text())
    assert [p["step"] for p in saved["emergence"]] == [0, 2, 4]
    assert saved["interrupted"] == {"step": 5, "exception": type(error).__name__, "last_probe_step": 4}
    page = (out / CONCEPT / "report.html").read_text(encoding="utf-8")
    assert "The run was interrupted at step 5</b> (" + type(error).__name__ in page
    assert sorted(p.name for p in out.iterdir()) == [CONCEPT]            # published whole: no temporary folder
    assert sorted(p.name for p in (out / CONCEPT).iterdir()) == ["report.html", "results.json"]
    # a later fit that ends normally writes an unmarked report
    cb.report_dir = str(out)
    _fit(tok, data, callbacks=[cb], max_steps=2)
    assert "interrupted" not in json.loads((out / CONCEPT / "results.json").read_text())


def test_probe_interrupted_half_way_adds_nothing(tok, data, tmp_path, monkeypatch):
    """Two concepts, the second one's scan fails at step 4: the report holds steps 0 and 2 of both, the score log
    and the final scans agree with the history, and the scan's error propagates."""
    from neurolens_lightning.training import callback as cb_mod

    run_scan, calls = cb_mod.run_scan, []

    def failing(adapter, concept, *args, **kwargs):
        calls.append(concept.name)
        if len(calls) == 6:  # step 4, second concept
            raise RuntimeError("scan failed")
        return run_scan(adapter, concept, *args, **kwargs)

    monkeypatch.setattr(cb_mod, "run_scan", failing)
    other = dict(small_probe_dict(), name="other_royalty")
    out = tmp_path / "reports"
    cb = _callback(concepts=[small_probe_dict(), other], report_dir=str(out))
    with pytest.warns(UserWarning, match="interrupted at step 4"), pytest.raises(RuntimeError, match="scan failed"):
        _fit(tok, data, callbacks=[cb], max_steps=8)
    assert [p["step"] for p in cb.history] == [0, 0, 2, 2]
    assert [e["step"] for e in cb.score_log] == [0, 0, 2, 2]
    for name in (CONCEPT, "other_royalty"):
        assert [p["step"] for p in json.loads((out / name / "results.json").read_text())["emergence"]] == [0, 2]


def test_interrupt_report_failure_does_not_replace_the_error(tok, data, tmp_path, monkeypatch):
    from neurolens_lightning.results import ScanResult

    def no_disk(self, out_dir, report=True):
        raise OSError("disk full")

    monkeypatch.setattr(ScanResult, "save", no_disk)
    cb = _callback(report_dir=str(tmp_path / "reports"))
    with pytest.warns(UserWarning, match="could not be written: OSError: disk full"), \
            pytest.raises(RuntimeError, match="boom"):
        _fit(tok, data, callbacks=[cb, _StopAt(3, RuntimeError("boom"))], max_steps=8)


# ------------------------------------------------------------------------------------------ model name


def test_report_names_the_model_once(tok, data, tmp_path):
    """The page names the network by its name (``model_name``, ``pl_module.model_name``, the HF
    ``_name_or_path``), its class once after it; a network known only by its class is named once."""
    out = tmp_path / "reports"
    cb = _callback(report_dir=str(out), probe_at_start=False)  # one point: the end probe at step 1
    _fit(tok, data, callbacks=[cb], max_steps=1)
    page = (out / CONCEPT / "report.html").read_text(encoding="utf-8")
    assert "of <b>GPT2LMHeadModel</b> (gpt2) for the concept" in page
    assert json.loads((out / CONCEPT / "results.json").read_text())["model"] == "GPT2LMHeadModel"

    module = _make_module(tok)
    module.model.config._name_or_path = "tiny-gpt2"
    cb = _callback(report_dir=str(out), probe_at_start=False)
    _fit(tok, data, callbacks=[cb], max_steps=1, module=module)
    page = (out / CONCEPT / "report.html").read_text(encoding="utf-8")
    assert "of <b>tiny-gpt2</b> — GPT2LMHeadModel (gpt2) for the concept" in page

    module.model_name = "my-lm"                                    # as TextClassifier("minilm") sets it
    cb = _callback(report_dir=str(out), probe_at_start=False)
    _fit(tok, data, callbacks=[cb], max_steps=1, module=module)
    assert "of <b>my-lm</b> — GPT2LMHeadModel (gpt2)" in (out / CONCEPT / "report.html").read_text(encoding="utf-8")
    cb = _callback(report_dir=str(out), probe_at_start=False, model_name="run-7")
    _fit(tok, data, callbacks=[cb], max_steps=1, module=module)
    assert json.loads((out / CONCEPT / "results.json").read_text())["model"] == "run-7"


# ------------------------------------------------------------------------------------------ trajectories


class _FullScores(Callback):
    """After the NeuroLens callback (listed after it), keeps every neuron's full-precision scores of each probe."""

    def __init__(self, cb: NeuroLensCallback) -> None:
        self.cb, self.by_step = cb, {}

    def _grab(self, trainer) -> None:
        step = trainer.global_step
        if self.cb.last_probe_step == step and step not in self.by_step:
            s = self.cb.last_results[CONCEPT].scores
            self.by_step[step] = {k: getattr(s, k).clone() for k in ("layer", "index", "selectivity", "consistency",
                                                                     "importance", "score", "role")}

    def on_train_start(self, trainer, pl_module) -> None:
        self._grab(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._grab(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._grab(trainer)


def test_final_top_neurons_have_continuous_trajectories(tok, data, tmp_path):
    """Every final top neuron has its scores at every probe point from the first (no None gap), equal to that
    point's full-precision scores, also where it was not in that point's top-k; the report plots them."""
    from neurolens_lightning.ranking import ROLE_NAMES
    from neurolens_lightning.report.figures import emergence_figure

    cb = _callback(top_k=5, report_dir=str(tmp_path / "reports"))
    spy = _FullScores(cb)
    _fit(tok, data, callbacks=[cb, spy], max_steps=6)
    timeline = cb.emergence(CONCEPT)
    assert [p["step"] for p in timeline] == [0, 2, 4, 6] == sorted(spy.by_step)
    final = [(c["layer"], c["index"]) for c in cb.history[-1]["top"]]
    assert len(final) == 5
    filled = 0
    for p in timeline:
        assert [(t["layer"], t["index"]) for t in p["tracked"]] == final
        in_top = {(c["layer"], c["index"]) for c in p["top"]}
        ref = spy.by_step[p["step"]]
        for t in p["tracked"]:
            assert None not in (t["selectivity"], t["consistency"], t["importance"], t["score"]), (p["step"], t)
            i = int(((ref["layer"] == t["layer"]) & (ref["index"] == t["index"])).nonzero()[0])
            assert t["score"] == pytest.approx(float(ref["score"][i]), abs=2e-3)
            assert t["consistency"] == pytest.approx(float(ref["consistency"][i]), abs=2e-3)
            assert t["selectivity"] == pytest.approx(float(ref["selectivity"][i]), rel=1e-2, abs=1e-3)
            assert t["importance"] == pytest.approx(float(ref["importance"][i]), rel=1e-2, abs=1e-9)
            assert t["role"] == ROLE_NAMES[int(ref["role"][i])]
            filled += (t["layer"], t["index"]) not in in_top
    assert filled > 0, "no final top neuron was outside an earlier top-k: the fill-in was not exercised"
    assert all("tracked" not in p for p in cb.history)          # the history itself stays as recorded
    entry = cb.score_log[0]
    assert (entry["score"].dtype, entry["selectivity"].dtype, entry["role"].dtype) == (
        torch.float16, torch.bfloat16, torch.int8)
    # results.json carries the filled timeline, the figure draws it without gaps, the headline included
    saved = json.loads((tmp_path / "reports" / CONCEPT / "results.json").read_text())
    assert [len(p["tracked"]) for p in saved["emergence"]] == [5, 5, 5, 5]
    fig = emergence_figure(saved)
    tops = [t for t in fig.data if t.legendgroup == "top"]
    assert len(tops) == 5 and all(v is not None for t in tops for v in t.y)
    head = next(t for t in fig.data if (t.name or "").startswith("mean d of the 5 most selective"))
    assert list(head.y) == pytest.approx([p["most_selective_mean"] for p in saved["emergence"]])
    passes = {"scoring_pass"} if "scoring_pass" in saved["timings_s"] else {"activation_pass", "importance_pass"}
    assert passes | {"statistics", "total"} <= set(saved["timings_s"])
    # without the score log (store_scores=False, or an old checkpoint) the same timeline has exactly those gaps
    cb.score_log = []
    assert sum(t["score"] is None for p in cb.emergence(CONCEPT) for t in p["tracked"]) == filled


# ------------------------------------------------------------------------------------------ loggers / modes


def test_csv_logger_gets_neurolens_metrics(tok, data, tmp_path):
    cb = _callback(report_dir=str(tmp_path / "reports"))
    logger = CSVLogger(tmp_path / "logs", name="run")
    _fit(tok, data, callbacks=[cb], max_steps=4, logger=logger)
    metrics = Path(logger.log_dir) / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    for key in ("n_significant", "top_selectivity", "top_score", "mean_topk_selectivity", "most_selective_mean",
                "jaccard_prev"):
        assert f"neurolens/{CONCEPT}/{key}" in header, key
    assert "neurolens/probe_seconds" in header
    import csv

    rows = list(csv.DictReader(metrics.open()))
    steps = sorted({int(r["step"]) for r in rows if r.get(f"neurolens/{CONCEPT}/n_significant")})
    assert steps == [0, 2, 4]
    data_json = json.loads((tmp_path / "reports" / CONCEPT / "results.json").read_text())
    assert [p["step"] for p in data_json["emergence"]] == [0, 2, 4]
    assert (tmp_path / "reports" / CONCEPT / "report.html").is_file()


def test_wandb_logger_gets_charts_and_table(tok, data, tmp_path, monkeypatch):
    """With a WandbLogger (offline), every probe point logs the charts (as html media) and the candidate table."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()
    try:
        cb = _callback()
        logger = WandbLogger(project="neurolens-test", save_dir=str(tmp_path), offline=True)
        _fit(tok, data, callbacks=[cb], max_steps=4, logger=logger)
        run_dir = Path(logger.experiment.dir).parent
        wandb.finish()
    finally:
        wandb.teardown()
    media = run_dir / "files" / "media"
    html = sorted(p.name.split("_")[0] for p in (media / "html").rglob("*.html"))
    for chart in ("layers", "heatmap", "scatter", "sankey", "emergence", "report"):
        assert html.count(chart) == 3, (chart, html)  # probe points at steps 0, 2 and 4
    assert len(list((media / "table").rglob("*.table.json"))) == 3


def test_fast_dev_run_does_not_crash_or_probe(tok, data, tmp_path):
    cb = _callback(report_dir=str(tmp_path / "reports"), on_validation_end=True, on_checkpoint=True)
    pl.seed_everything(0, verbose=False)
    module = _make_module(tok)
    loader = DataLoader(data, batch_size=4)
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", callbacks=[cb], enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, loader, loader)
    assert cb.history == [] and not (tmp_path / "reports").exists()


class _ValLM(_RecordingLM):
    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)


def test_validation_end_probe(tok, data):
    """Probes at validation end (inside the loop's no-grad context): importance still works; sanity check skipped."""
    cb = _callback(every_n_train_steps=None, on_validation_end=True, probe_at_start=False, probe_at_end=False)
    pl.seed_everything(0, verbose=False)
    module = _ValLM.from_scratch(tok, n_layer=2, n_embd=32, n_head=2, n_positions=32, seed=0)
    loader = DataLoader(data, batch_size=8)
    trainer = _trainer(max_epochs=2, callbacks=[cb], limit_val_batches=1, inference_mode=True,
                       num_sanity_val_steps=1)
    trainer.fit(module, loader, loader)
    assert [p["reason"] for p in cb.history] == ["validation", "validation"]   # sanity check skipped
    assert [p["step"] for p in cb.history] == [4, 8]
    assert all(p["top"][0]["importance"] is not None for p in cb.history)
    assert all(m.training for m in module.modules())


def test_epoch_and_end_cadence(tok, data):
    # every_n_epochs: 8 steps per epoch; max_steps=10 ends epoch 1 early, and Lightning still ends the epoch
    cb = _callback(every_n_train_steps=None, every_n_epochs=1, probe_at_start=False)
    _fit(tok, data, callbacks=[cb], max_steps=10)
    assert [(p["step"], p["reason"]) for p in cb.history] == [(8, "epoch"), (10, "epoch")]
    # off-cadence stop: the final model still gets a point ("end"), once
    cb = _callback(every_n_train_steps=3)
    _fit(tok, data, callbacks=[cb], max_steps=7)
    assert [(p["step"], p["reason"]) for p in cb.history] == [(0, "start"), (3, "step"), (6, "step"), (7, "end")]
    cb = _callback(every_n_train_steps=3, probe_at_start=False, probe_at_end=False)
    _fit(tok, data, callbacks=[cb], max_steps=7)
    assert [p["step"] for p in cb.history] == [3, 6]
    # gradient accumulation: several batches end at the same global_step; one point per step, none at step 0
    cb = _callback(every_n_train_steps=2, probe_at_start=False)
    _fit(tok, data, callbacks=[cb], max_steps=4, accumulate_grad_batches=2)
    assert [(p["step"], p["reason"]) for p in cb.history] == [(2, "step"), (4, "step")]


def test_misconfiguration_fails_before_training(tok, data):
    from neurolens_lightning.errors import NeuroLensError

    with pytest.raises(NeuroLensError, match="top_k"):
        _callback(top_k=0)
    small = {"name": "tiny", "modality": "text", "positive": ["a [[king]]", "a [[queen]]", "the [[prince]]"],
             "negative": ["a man", "a dog", "the cat"]}
    module = _make_module(tok)
    for cb, match in ((_callback(concepts=small, ablate_top_k=2), "held-out split"),
                      (_callback(layers=[5]), "out of range")):
        with pytest.raises(NeuroLensError, match=match):
            _fit(tok, data, callbacks=[cb], max_steps=2, module=module)
        assert cb.history == [] and module.seen == []  # raised in setup: not a single training step


# ------------------------------------------------------------------------------------------ DDP


class _RecordingLogger(Logger):
    """A logger that is *not* rank-zero guarded: it records every call with the calling rank."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = Path(out)

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        rank = int(os.environ.get("LOCAL_RANK", 0))
        with open(self.out / f"log_metrics_rank{rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "keys": sorted(metrics)}) + "\n")


DDP_CONCEPT = "ddp_royal_words"


def _ddp_probe() -> dict:
    """Royal vs common words in the same sentences (the words of ``_Sequences``): enough examples (24 + 24, 12 + 12
    after the ablation split) for FDR-significant candidates, so the callback's ablation has jobs to share."""
    templates = ["the {w} sat on his chair", "a {w} spoke to the people", "the old {w} saw the throne",
                 "at night the {w} sat", "the people saw a {w}", "his {w} spoke at night", "a {w} on the old chair",
                 "the {w} saw his people"]
    royal, common = ["king", "queen", "prince"], ["farmer", "baker", "doctor"]
    return {"name": DDP_CONCEPT, "modality": "text",
            "groups": {w: [t.format(w=f"[[{w}]]") for t in templates] for w in royal},
            "negative": [t.format(w=f"[[{w}]]") for w in common for t in templates]}


def _ddp_fit(out: Path, devices: int) -> None:
    """One fit (1 or 2 processes) for the DDP comparison; every rank dumps its history and final scores."""
    from neurolens_lightning.results import ScanResult
    from neurolens_lightning.scanner import ConceptScanner

    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    save, step = ScanResult.save, ConceptScanner._update_activation_metrics
    scored: list[int] = []

    def spy_save(self, out_dir, report=True):  # who writes report folders, and how often
        with open(out / "saves.log", "a") as f:
            f.write(f"{rank} {out_dir}\n")
        return save(self, out_dir, report)

    def spy_step(self, batch, outputs, stats, is_positive, groups, example_ids):  # which examples this rank scored
        scored.extend(example_ids.tolist())  # (the activation metrics' update, in the fused and two-pass scans)
        return step(self, batch, outputs, stats, is_positive, groups, example_ids)

    from neurolens_lightning.ablation import AblationRunner

    runner_step = AblationRunner.step
    shares: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def spy_runner(self, kind, batch, example_index=None, key=None):  # which ablation jobs this rank ran
        shares.append((kind, tuple(self.mine[kind]), tuple(self.job_index[kind])))
        return runner_step(self, kind, batch, example_index, key)

    ScanResult.save, ConceptScanner._update_activation_metrics = spy_save, spy_step
    AblationRunner.step = spy_runner
    try:
        tokenizer = make_word_tokenizer("gpt2")
        data = TokenSequences(tokenizer, N_SEQ, SEQ_LEN)
        pl.seed_everything(0, verbose=False)
        module = _make_module(tokenizer, dropout=0.0, optimizer="sgd", lr=0.05)
        cb = _callback(concepts=_ddp_probe(), report_dir=str(out / "reports"), ablate_top_k=2)
        # every rank trains on the same batches as the single process: DDP's average of identical gradients is
        # exact, so the weights stay bit-identical to the single-process fit and any score difference can only
        # come from the callback's sharded scoring and metric sync (not from float noise of DDP training)
        loader = DataLoader(data, batch_size=4, shuffle=False)
        trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                             max_steps=4, callbacks=[cb], logger=_RecordingLogger(out), enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             use_distributed_sampler=False)
        trainer.fit(module, loader)
    finally:
        ScanResult.save, ConceptScanner._update_activation_metrics = save, step
        AblationRunner.step = runner_step
    res = cb.last_results[DDP_CONCEPT]
    torch.save({"history": cb.history, "score_log": cb.score_log, "selectivity": res.scores.selectivity.clone(),
                "score": res.scores.score.clone(), "order": res.scores.order.clone(),
                "world_size": trainer.world_size, "rank": trainer.global_rank, "seen": module.seen,
                "scored": scored, "shares": shares,
                "ablation": json.dumps({f"{l}:{i}": r for (l, i), r in res.ablation.items()}, sort_keys=True),
                "weights": {k: v.clone() for k, v in module.state_dict().items()}},
               out / f"rank{trainer.global_rank}_of{trainer.world_size}.pt")


def _run_ddp_subprocess(out: Path, devices: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # single node: gloo over loopback, whatever the hostname resolves to
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--ddp-worker", str(out), str(devices)],
                            cwd=str(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=DDP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the launcher and the rank it started
        stdout, _ = proc.communicate()
        pytest.fail(f"DDP fit still running after {DDP_TIMEOUT_S} s (killed). Output tail:\n{stdout[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out2 = tmp_path_factory.mktemp("ddp2")
    t0 = time.perf_counter()
    done = _run_ddp_subprocess(out2, 2)
    if done.returncode != 0:  # one retry (e.g. a port taken between choosing and binding it), on a clean folder
        first = done.stdout[-3000:]
        out2 = tmp_path_factory.mktemp("ddp2_retry")
        done = _run_ddp_subprocess(out2, 2)
        assert done.returncode == 0, f"first try:\n{first}\n\nretry:\n{done.stdout[-6000:]}"
    seconds = time.perf_counter() - t0
    out1 = tmp_path_factory.mktemp("ddp1")
    cwd = os.getcwd()
    try:
        os.chdir(out1)
        _ddp_fit(out1, 1)
    finally:
        os.chdir(cwd)
    return out1, out2, seconds


def test_ddp_two_processes_match_single_process(ddp_runs):
    out1, out2, _ = ddp_runs
    single = torch.load(out1 / "rank0_of1.pt", weights_only=True)
    ranks = [torch.load(out2 / f"rank{r}_of2.pt", weights_only=True) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    # the premise: identical training (see _ddp_fit), so the networks probed are bit-identical ...
    for r in ranks:
        assert r["seen"] == single["seen"]
        assert all(torch.equal(r["weights"][k], single["weights"][k]) for k in single["weights"])
    # ... and the probe examples were really sharded: each rank scored its own half, together all of them
    # (ids index the ranking split's examples; rank r scores examples r, r + 2, ...)
    assert sorted(ranks[0]["scored"] + ranks[1]["scored"]) == sorted(single["scored"])
    assert ranks[0]["scored"] and all(i % 2 == 0 for i in ranks[0]["scored"])
    assert ranks[1]["scored"] and all(i % 2 == 1 for i in ranks[1]["scored"])
    for r in ranks:
        # the final point at full precision: every neuron's selectivity, and the ranking
        torch.testing.assert_close(r["selectivity"], single["selectivity"], rtol=0, atol=1e-6)
        torch.testing.assert_close(r["score"], single["score"], rtol=0, atol=1e-6)
        assert torch.equal(r["order"][:10], single["order"][:10])
        # every point of the history: same top neurons, selectivity (rounded to 6 digits in the history)
        assert [p["step"] for p in r["history"]] == [p["step"] for p in single["history"]] == [0, 2, 4]
        for a, b in zip(r["history"], single["history"]):
            assert [(c["layer"], c["index"]) for c in a["top"]] == [(c["layer"], c["index"]) for c in b["top"]]
            for ca, cb in zip(a["top"], b["top"]):
                assert ca["selectivity"] == pytest.approx(cb["selectivity"], abs=1e-6, rel=2e-6)
            assert a["n_significant"] == b["n_significant"]
            assert a["n_significant_per_layer"] == b["n_significant_per_layer"]
            assert a["ablation"]["n_validated"] == b["ablation"]["n_validated"]
    assert ranks[0]["history"] == ranks[1]["history"]  # synced: both ranks hold the same history
    # the callback's ablation: the ranks split every step's ablation jobs (disjoint shares that cover them) and
    # gather, so both hold the single-process records of the last probe
    assert len(ranks[0]["shares"]) == len(ranks[1]["shares"]) > 0
    for (k0, mine0, all0), (k1, mine1, all1) in zip(ranks[0]["shares"], ranks[1]["shares"]):
        assert k0 == k1 and all0 == all1 and not set(mine0) & set(mine1) and sorted(mine0 + mine1) == sorted(all0)
    assert all(len(m) for _, m, a in ranks[1]["shares"] if len(a) > 1)
    ab1 = json.loads(single["ablation"])
    assert ab1 and ranks[0]["ablation"] == ranks[1]["ablation"]
    for r in ranks:
        ab = json.loads(r["ablation"])
        assert ab.keys() == ab1.keys()
        for key in ab1:
            assert ab[key]["delta"] == pytest.approx(ab1[key]["delta"], abs=1e-6)
            assert ab[key]["p_value"] == ab1[key]["p_value"] and ab[key]["verdict"] == ab1[key]["verdict"]
    # ... and the same score log (every neuron at every point), which matches the single process
    for r in ranks:
        assert [e["step"] for e in r["score_log"]] == [e["step"] for e in single["score_log"]] == [0, 2, 4]
        for a, b in zip(r["score_log"], single["score_log"]):
            torch.testing.assert_close(a["score"].float(), b["score"].float(), rtol=0, atol=2e-3)
            torch.testing.assert_close(a["selectivity"].float(), b["selectivity"].float(), rtol=1e-2, atol=1e-2)
    for a, b in zip(ranks[0]["score_log"], ranks[1]["score_log"]):
        assert all(torch.equal(a[k], b[k]) for k in ("selectivity", "consistency", "importance", "score", "role"))


def test_ddp_only_rank_zero_writes_and_logs(ddp_runs):
    _, out2, seconds = ddp_runs
    saves = (out2 / "saves.log").read_text().splitlines()
    assert saves == [f"0 {out2 / 'reports' / DDP_CONCEPT}"]             # one report, written once, by rank 0
    files = sorted(str(p.relative_to(out2 / "reports")) for p in (out2 / "reports").rglob("*"))
    assert files == [DDP_CONCEPT, f"{DDP_CONCEPT}/report.html", f"{DDP_CONCEPT}/results.json"]  # no leftovers
    data = json.loads((out2 / "reports" / DDP_CONCEPT / "results.json").read_text())
    assert [p["step"] for p in data["emergence"]] == [0, 2, 4]

    def neurolens_steps(rank: int) -> list[int]:
        path = out2 / f"log_metrics_rank{rank}.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["step"] for r in rows if any(k.startswith("neurolens/") for k in r["keys"])]

    assert neurolens_steps(0) == [0, 2, 4]
    assert neurolens_steps(1) == []                                       # rank 1 never logs probe metrics
    assert not list(out2.glob("lightning_logs"))
    print(f"2-process DDP fit subprocess: {seconds:.1f} s")


# ------------------------------------------------------------------------------------------ examples


def _run_example(name: str, tmp_path: Path, extra: list[str] | None = None) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        return mod.main(["--fast", "--report-dir", str(tmp_path / "reports")] + (extra or []))
    finally:
        torch.set_num_threads(threads)


def _check_report(tmp_path: Path, concept: str, min_points: int = 2) -> dict[str, Any]:
    data = json.loads((tmp_path / "reports" / concept / "results.json").read_text())
    timeline = data["emergence"]
    assert len(timeline) >= min_points
    steps = [p["step"] for p in timeline]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert all(p["concept"] == concept and p["top"] for p in timeline)
    assert (tmp_path / "reports" / concept / "report.html").is_file()
    return data


@pytest.mark.parametrize("name,concept", [
    ("finetune_resnet_digits", "closed_loop"),
    ("finetune_minilm_negation", "negation"),
    ("train_tiny_gpt2_concept", "royal"),
])
def test_example_fast_mode(name, concept, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    summary = _run_example(name, tmp_path)
    seconds = time.perf_counter() - t0
    data = _check_report(tmp_path, concept)
    assert summary["points"] >= 2
    assert seconds < 90, f"{name} --fast took {seconds:.0f} s"
    # the final top neurons are tracked from the first point, without gaps
    assert all(len(p["tracked"]) == len(data["emergence"][-1]["top"]) and
               all(t["score"] is not None for t in p["tracked"]) for p in data["emergence"])
    if name == "finetune_resnet_digits":
        # image probe given as tensors: each top example is inlined as a PNG with its label (the digit group)
        exs = [e for n in data["neurons"] if n["role"] == "candidate" for e in n.get("top_examples") or []]
        assert exs and all(e["image"].startswith("data:image/png;base64,") for e in exs)
        assert {e["label"] for e in exs} <= {"digit 0", "digit 6", "digit 8", "digit 9", "control"}
        assert all((e["label"] == "control") == (not e["positive"]) for e in exs)
        page = (tmp_path / "reports" / concept / "report.html").read_text(encoding="utf-8")
        assert f"src='{exs[0]['image']}'" in page and f"<div class='ex-lab'>{exs[0]['label']}</div>" in page
        assert "<p class='note baseline'>" in page


# ------------------------------------------------------------------------------------------ script entry


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--ddp-worker":
        _ddp_fit(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        print(__doc__)
