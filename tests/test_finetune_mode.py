"""The fine-tuning wrappers train in train mode (issue 12).

Lightning >= 2.2 no longer calls ``.train()`` when ``fit`` starts: it keeps each submodule's mode
(to respect frozen layers) and only warns, through ``rank_zero_warn`` -> ``warnings.warn``
(a ``PossibleUserWarning``, not logging), "Found N module(s) in eval mode at the start of
training". A network from ``load_model`` / ``from_pretrained`` (and the tiny test models) comes in
eval mode, so each wrapper puts itself and the wrapped network in train mode when constructed.

Pinned, for ``TextClassifier`` (the real MiniLM by name, and a tiny ``BertModel``), ``CausalLM``
(a tiny GPT-2 built in eval mode) and ``ImageClassifier`` (ResNet-18, random init, and from a
state-dict file): at the first training step every submodule has ``training == True`` (also
with a sanity-check validation and with a ``NeuroLensCallback`` probing at the start of training,
which restores the modes it finds), dropout is active, and Lightning's eval-mode warning is absent.
A submodule the user sets to eval mode after construction stays in eval mode (Lightning's rule).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from helpers import small_probe_dict, tiny_bert_encoder, tiny_gpt2

from neurolens_lightning.training.finetune import CausalLM, ImageClassifier, TextClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL_WARNING = "module(s) in eval mode at the start of training"

PAIRS = [("The king spoke to the people.", 1), ("The farmer spoke to the people.", 0),
         ("A queen sat on the old chair.", 1), ("A baker sat on the old chair.", 0)]
TEXTS = ["the king sat on his throne", "the farmer saw the old chair", "a queen spoke to the people",
         "everyone saw the prince at night"]


class _ModeRecorder(Callback):
    """Records, at the first training batch, which submodules are in eval mode (and that dropout is on)."""

    def __init__(self) -> None:
        self.eval_at_first_step: list[str] | None = None
        self.dropout_training: list[bool] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.eval_at_first_step is None:
            self.eval_at_first_step = [name or "<root>" for name, m in pl_module.named_modules() if not m.training]
            self.dropout_training = [m.training for m in pl_module.modules() if isinstance(m, torch.nn.Dropout)]


def _fit(module: pl.LightningModule, loader: DataLoader, val_loader: DataLoader | None = None,
         callbacks: list | None = None, max_steps: int = 2) -> tuple[_ModeRecorder, list[str]]:
    """Fit a few steps; return the mode recorder and every warning message raised during the fit."""
    rec = _ModeRecorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=1 if val_loader is not None else 0,
                         callbacks=[*(callbacks or []), rec])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the project's pytest config ignores UserWarning; record them all here
        trainer.fit(module, loader, val_dataloaders=val_loader)
    assert trainer.global_step == max_steps
    return rec, [str(w.message) for w in caught]


def _assert_train_mode(rec: _ModeRecorder, messages: list[str]) -> None:
    assert rec.eval_at_first_step == [], f"in eval mode at the first training step: {rec.eval_at_first_step[:10]}"
    assert not [m for m in messages if EVAL_WARNING in m], "Lightning warned about eval-mode modules"


@pytest.fixture(scope="module")
def bert_tok(bert_tokenizer):
    return bert_tokenizer  # the session's (conftest)


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_tokenizer):
    return gpt2_tokenizer


# ------------------------------------------------------------------------------------------ text


def test_text_classifier_minilm_by_name_trains_in_train_mode():
    """The issue's case: TextClassifier("minilm") loads the encoder through load_model, in eval mode."""
    module = TextClassifier("minilm", num_labels=2, max_length=16)
    assert all(m.training for m in module.modules())
    loader = DataLoader(PAIRS, batch_size=2, collate_fn=module.collate)
    rec, messages = _fit(module, loader, max_steps=1)
    _assert_train_mode(rec, messages)
    assert rec.dropout_training and all(rec.dropout_training)  # MiniLM's dropout layers + the head's


def test_text_classifier_tiny_encoder_with_sanity_check(bert_tok):
    encoder = tiny_bert_encoder(bert_tok)
    assert not encoder.training  # built in eval mode, as from_pretrained returns it
    module = TextClassifier(encoder, tokenizer=bert_tok, num_labels=2, lr=1e-3)
    loader = DataLoader(PAIRS, batch_size=2, collate_fn=module.collate)
    rec, messages = _fit(module, loader, val_loader=DataLoader(PAIRS, batch_size=2, collate_fn=module.collate))
    _assert_train_mode(rec, messages)  # the sanity check's eval mode was undone


def test_text_classifier_encoder_dropout_is_active(bert_tok):
    """The encoder's own dropout is on after construction: two forwards of a batch differ (and agree in eval)."""
    encoder = tiny_bert_encoder(bert_tok)
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.1  # the tiny config has dropout 0; the head's dropout is off below, so only the encoder's acts
    module = TextClassifier(encoder, tokenizer=bert_tok, num_labels=2, dropout=0.0)
    batch = module.collate(PAIRS)
    inputs = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    with torch.no_grad():
        assert not torch.equal(module(*inputs), module(*inputs))
        module.eval()
        assert torch.equal(module(*inputs), module(*inputs))


# ------------------------------------------------------------------------------------------ causal LM


def test_causal_lm_with_eval_mode_model_trains_in_train_mode(gpt2_tok):
    model = tiny_gpt2(gpt2_tok)
    assert not model.training
    module = CausalLM(model, gpt2_tok, lr=1e-3)
    loader = DataLoader(TEXTS, batch_size=2, collate_fn=module.collate)
    rec, messages = _fit(module, loader)
    _assert_train_mode(rec, messages)


def test_causal_lm_with_callback_probing_at_start(gpt2_tok):
    """The NeuroLens callback probes in on_train_start (eval mode inside) and restores train mode."""
    from neurolens_lightning.training.callback import NeuroLensCallback

    module = CausalLM(tiny_gpt2(gpt2_tok), gpt2_tok, lr=1e-3)
    cb = NeuroLensCallback(small_probe_dict(), every_n_train_steps=1, importance=False, top_k=3, batch_size=8,
                           probe_at_end=False)
    loader = DataLoader(TEXTS, batch_size=2, collate_fn=module.collate)
    rec, messages = _fit(module, loader, callbacks=[cb])
    assert [p["reason"] for p in cb.history][:1] == ["start"]
    _assert_train_mode(rec, messages)
    assert all(m.training for m in module.modules())  # after the step probes too


def test_submodule_set_to_eval_after_construction_stays_in_eval(gpt2_tok):
    """Construction sets train mode; a later explicit choice (a frozen block) is Lightning's to keep."""
    module = CausalLM(tiny_gpt2(gpt2_tok), gpt2_tok, lr=1e-3)
    module.model.transformer.h[0].eval()
    loader = DataLoader(TEXTS, batch_size=2, collate_fn=module.collate)
    rec, messages = _fit(module, loader, max_steps=1)
    assert rec.eval_at_first_step and all(n.startswith("model.transformer.h.0") for n in rec.eval_at_first_step)
    assert [m for m in messages if EVAL_WARNING in m]  # and Lightning says so


# ------------------------------------------------------------------------------------------ images


def _image_loader(n: int = 4, classes: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=2)


def test_image_classifier_trains_in_train_mode():
    module = ImageClassifier("resnet18", num_classes=3)
    rec, messages = _fit(module, _image_loader(), max_steps=1)
    _assert_train_mode(rec, messages)


def test_image_classifier_from_eval_mode_weights_file(tmp_path):
    import torchvision.models as tvm

    src = tvm.resnet18(weights=None, num_classes=5).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    module = ImageClassifier("resnet18", num_classes=3, weights=str(path))  # fc replaced: 5 -> 3 classes
    rec, messages = _fit(module, _image_loader(), max_steps=1)
    _assert_train_mode(rec, messages)
