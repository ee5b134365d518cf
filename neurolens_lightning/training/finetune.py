"""LightningModule wrappers for fine-tuning the networks NeuroLens scans.

Each wrapper stores the network it trains as ``self.model`` (and a text tokenizer as
``self.tokenizer``), which is where :class:`~neurolens_lightning.training.callback.NeuroLensCallback`
looks for it, so tracking concept emergence during fine-tuning needs no model code:

* :class:`TextClassifier` - a BERT-like encoder (``"minilm"`` or any ``BertModel``) with a
  linear head on the mean-pooled last hidden state; batches are ``{"text": [...], "label": [...]}``
  dicts or ``(texts, labels)`` pairs, tokenized by :meth:`TextClassifier.collate`.
* :class:`CausalLM` - a GPT-2 language model (``GPT2LMHeadModel``); batches are lists of
  strings (tokenized by :meth:`CausalLM.collate`) or ``{"input_ids", "attention_mask"}`` dicts.
* :class:`ImageClassifier` - a torchvision ResNet with ``num_classes`` outputs (random init
  or a state-dict file); batches are ``(images [B, 3, H, W], labels [B])``.

All three log ``train_loss`` / ``train_acc`` (``val_loss`` / ``val_acc`` in validation) and
use AdamW (``lr``, ``weight_decay``) unless ``optimizer="sgd"`` (momentum 0.9), at a constant
learning rate or, with ``lr_schedule="cosine"``, annealed per step to 0 at the end of the fit.

Each wrapper is in train mode when constructed, the wrapped network included: a network from
:func:`~neurolens_lightning.load_model` or ``from_pretrained`` comes in eval mode, and Lightning (>= 2.2)
no longer calls ``.train()`` when ``fit`` starts (it keeps each submodule's mode, to respect frozen
layers), so without this the network would fine-tune with dropout off. A submodule set to eval mode
*after* construction stays in eval mode during the fit.

Example:
    >>> import lightning.pytorch as pl
    >>> from neurolens_lightning.training.callback import NeuroLensCallback
    >>> module = TextClassifier("minilm", num_labels=2, lr=3e-5)                       # doctest: +SKIP
    >>> loader = DataLoader(pairs, batch_size=16, shuffle=True, collate_fn=module.collate)  # doctest: +SKIP
    >>> pl.Trainer(max_epochs=3, callbacks=[NeuroLensCallback("negation")]).fit(module, loader)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from neurolens_lightning.registry import load_model

__all__ = ["TextClassifier", "CausalLM", "ImageClassifier"]

OptimizerName = Literal["adamw", "sgd"]
ScheduleName = Literal["constant", "cosine"]


class _Base(pl.LightningModule):
    """Shared optimizer, learning-rate schedule and metric logging."""

    lr: float
    weight_decay: float
    optimizer_name: OptimizerName
    lr_schedule: ScheduleName = "constant"

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9,
                                                         weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)  # per step, down to 0 at the end
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _train_mode(self) -> None:
        """Put the module and the wrapped network in train mode (see the module docstring): the last step of
        every ``__init__``, so a pretrained network (loaded in eval mode) fine-tunes with dropout on."""
        self.train()

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        """The loss of ``batch`` (``stage``: train | val), logged with the accuracy: each wrapper's own."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def _log_step(self, stage: str, loss: torch.Tensor, acc: torch.Tensor | None, batch_size: int) -> None:
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=batch_size)
        if acc is not None:
            self.log(f"{stage}_acc", acc, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=batch_size)


def _check_optimizer(name: str) -> OptimizerName:
    if name not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")
    return name  # type: ignore[return-value]


def _check_schedule(name: str) -> ScheduleName:
    if name not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {name!r}")
    return name  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- text


class TextClassifier(_Base):
    """A BERT-like encoder + linear head for sequence classification.

    Args:
        model: ``"minilm"`` (or another registry name / local model directory, loaded with
            :func:`neurolens_lightning.load_model`) or an encoder module (``BertModel``).
        num_labels: number of classes.
        tokenizer: the encoder's fast tokenizer (taken from the registry when ``model`` is a name).
        lr, weight_decay, optimizer, lr_schedule: optimizer settings (AdamW, constant lr by default).
        max_length: tokenizer truncation length in :meth:`collate`.
        dropout: dropout before the head.

    ``self.model`` is the encoder (what the callback scans); ``self.head`` the classifier.
    """

    def __init__(self, model: "str | nn.Module" = "minilm", num_labels: int = 2, tokenizer: Any = None,
                 lr: float = 3e-5, weight_decay: float = 0.01, optimizer: OptimizerName = "adamw",
                 lr_schedule: ScheduleName = "constant", max_length: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        #: the registry name / model directory the encoder was loaded from (the callback's reports show it)
        self.model_name: str | None = str(model) if isinstance(model, (str, Path)) else None
        if isinstance(model, (str, Path)):
            adapter = load_model(model, tokenizer=tokenizer, device="cpu")
            model, tokenizer = adapter.model, getattr(adapter, "tokenizer", tokenizer)
        if tokenizer is None:
            raise ValueError("TextClassifier needs the encoder's tokenizer (tokenizer=...)")
        self.model: nn.Module = model
        self.tokenizer = tokenizer
        hidden = int(model.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        self.num_labels, self.max_length = num_labels, max_length
        self.lr, self.weight_decay, self.optimizer_name = lr, weight_decay, _check_optimizer(optimizer)
        self.lr_schedule = _check_schedule(lr_schedule)
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self._train_mode()

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Tokenize a list of ``(text, label)`` pairs or ``{"text", "label"}`` dicts into a batch."""
        texts = [it["text"] if isinstance(it, dict) else it[0] for it in items]
        labels = [int(it["label"] if isinstance(it, dict) else it[1]) for it in items]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``[B, num_labels]`` from the mean-pooled last hidden state."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.head(self.dropout(pooled))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = F.cross_entropy(logits, batch["labels"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        self._log_step(stage, loss, acc, len(batch["labels"]))
        return loss


class CausalLM(_Base):
    """A GPT-2 language model trained with next-token cross-entropy.

    Args:
        model: a ``GPT2LMHeadModel`` (see :meth:`from_scratch` for a small random one).
        tokenizer: its fast tokenizer (needs a pad token; the eos token is used if unset).
        lr, weight_decay, optimizer, lr_schedule: optimizer settings (AdamW, constant lr by default).
        max_length: tokenizer truncation length in :meth:`collate`.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, lr: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: OptimizerName = "adamw", lr_schedule: ScheduleName = "constant",
                 max_length: int = 64) -> None:
        super().__init__()
        self.model: nn.Module = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.lr, self.weight_decay, self.optimizer_name = lr, weight_decay, _check_optimizer(optimizer)
        self.lr_schedule = _check_schedule(lr_schedule)
        self.max_length = max_length
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self._train_mode()

    @classmethod
    def from_scratch(cls, tokenizer: Any, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                     n_positions: int = 64, dropout: float = 0.0, seed: int | None = 0, **kwargs: Any) -> "CausalLM":
        """A random-init GPT-2 sized to ``tokenizer``'s vocabulary (``dropout`` for resid/embd/attn).

        ``seed`` is applied with ``torch.manual_seed`` (global, as a training script's own seeding would be), so
        the weights *and* the training that follows are reproducible; ``seed=None`` leaves the RNG alone.
        """
        from transformers import GPT2Config, GPT2LMHeadModel

        if seed is not None:
            torch.manual_seed(seed)
        eos = tokenizer.eos_token_id
        cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                         n_head=n_head, bos_token_id=eos, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                         resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        return cls(GPT2LMHeadModel(cfg), tokenizer, **kwargs)

    def collate(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize a list of strings (right padding) into ``input_ids`` / ``attention_mask``."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab]``."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        ids = batch["input_ids"]
        attn = batch.get("attention_mask")
        logits = self(ids, attn)
        labels = ids[:, 1:].clone()
        if attn is not None:
            labels[attn[:, 1:] == 0] = -100
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        valid = labels != -100
        acc = ((logits[:, :-1].argmax(-1) == labels) & valid).sum() / valid.sum().clamp_min(1)
        self._log_step(stage, loss, acc, ids.shape[0])
        return loss


# ---------------------------------------------------------------------------------- images


class ImageClassifier(_Base):
    """A torchvision ResNet classifier.

    Args:
        arch: ``resnet18`` (default), ``resnet34``, ``resnet50``, ...
        num_classes: outputs of the final ``fc`` layer.
        weights: optional path to a torchvision state dict (``.pt``/``.pth``, e.g. ImageNet
            weights); its ``fc`` is replaced when the class count differs. Random init otherwise.
        lr, weight_decay, optimizer, lr_schedule: optimizer settings (AdamW, constant lr by default).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, arch: str = "resnet18", num_classes: int = 10, weights: str | None = None,
                 lr: float = 1e-3, weight_decay: float = 1e-4, optimizer: OptimizerName = "adamw",
                 lr_schedule: ScheduleName = "constant", label_smoothing: float = 0.0) -> None:
        super().__init__()
        import torchvision.models as tvm

        if not arch.startswith("resnet") or not hasattr(tvm, arch):
            raise ValueError(f"arch must be a torchvision ResNet (resnet18, resnet50, ...), got {arch!r}")
        self.model: nn.Module = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        if weights:
            self._load_weights(Path(weights), num_classes)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.lr, self.weight_decay, self.optimizer_name = lr, weight_decay, _check_optimizer(optimizer)
        self.lr_schedule = _check_schedule(lr_schedule)
        self.save_hyperparameters()
        self._train_mode()

    def _load_weights(self, path: Path, num_classes: int) -> None:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if sd.get("fc.weight") is not None and sd["fc.weight"].shape[0] != num_classes:
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # new head for the new classes
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
        if bad:
            raise ValueError(f"{str(path)!r} does not match {type(self.model).__name__}: {bad[:5]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.model(x)

    def _step(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(-1) == y).float().mean()
        self._log_step(stage, loss, acc, len(y))
        return loss
