"""Adapters for text transformers: GPT-2 (causal LM) and BERT-like encoders (BERT, RoBERTa, MiniLM).

Neurons are MLP hidden units (DESIGN §1): the output of ``transformer.h[L].mlp.act`` for
GPT-2 and of ``encoder.layer[L].intermediate`` (post-GELU) for BERT-like models.

Confidence y (DESIGN §2):

* GPT-2 with an LM head: ``log p(target | prompt)`` summed over the target's tokens for
  tasks; without tasks, the mean log-probability of the model's own next-token
  predictions over the example.
* masked LM heads: ``log p(target at [MASK])`` (the target's tokens each masked) for tasks;
  without tasks the concept span is masked (the last real token if none is marked) and
  the original tokens are scored.
* models without an LM head (``BertModel``, ``GPT2Model``, sequence classifiers): a
  logistic probe fitted on the mean-pooled last hidden state; y is its log-odds
  ``log p(concept) - log p(not concept)`` (log p itself saturates near 0 for confidently
  classified positives, which would hide ablation effects).

Length: an example is read up to ``max_length`` tokens, the smaller of the configured
length (128) and what the model can read (its position embeddings: ``n_positions`` /
``max_position_embeddings``, less RoBERTa's padding offset; the tokenizer's
``model_max_length``). Longer examples are cut to it, counted in one warning
(:meth:`TextAdapter.input_warnings`); a ``[[span]]`` reaching past the cut is an error
naming the example (its pooling would otherwise silently change). Task prompts are cut
from the left so that prompt and target fit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, ModelAdapter, NeuronSite
from neurolens_lightning.concepts import Example, ImageTask, TextExample, TextTask
from neurolens_lightning.errors import NeuroLensError, ProbeError

#: a tokenizer ``model_max_length`` at or above this is transformers' "no limit" sentinel (``int(1e30)``)
_NO_LIMIT = 1_000_000


def _short(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def model_token_limit(model: nn.Module, tokenizer: Any) -> tuple[int | None, str]:
    """The most tokens ``model`` can read and where that number comes from, or ``(None, "")`` when nothing says.

    From the config's ``n_positions`` / ``max_position_embeddings`` (less the padding offset of RoBERTa-style
    position embeddings, whose positions start after the pad id) and the tokenizer's ``model_max_length``.

    Example:
        >>> from types import SimpleNamespace
        >>> model_token_limit(SimpleNamespace(config=SimpleNamespace(n_positions=16)), None)
        (16, 'its n_positions')
    """
    found: list[tuple[int, str]] = []
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            emb = getattr(getattr(model, "base_model", model), "embeddings", None)
            pe = getattr(emb, "position_embeddings", None)
            offset = pe.padding_idx + 1 if isinstance(pe, nn.Embedding) and pe.padding_idx is not None else 0
            found.append((v - offset, f"its {key}" + (f" {v} less the padding offset {offset}" if offset else "")))
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _NO_LIMIT:
        found.append((tok_max, "its tokenizer's model_max_length"))
    return min(found) if found else (None, "")


def _with_special_tokens(tok: Any, ids: list[int]) -> list[int]:
    """``ids`` wrapped in the tokenizer's special tokens (e.g. [CLS] ... [SEP]).

    transformers 5 fast tokenizers have no ``build_inputs_with_special_tokens``: the
    template is read off the encoding of a one-word text instead.
    """
    build = getattr(tok, "build_inputs_with_special_tokens", None)
    if build is not None:
        return list(build(ids))
    probe = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    i = next(i for i in range(len(full)) if full[i:i + len(probe)] == probe)
    return full[:i] + list(ids) + full[i + len(probe):]


class TextAdapter(ModelAdapter):
    """Shared tokenization, span handling and confidence for text models."""

    modality = "text"
    max_length = 128

    def __init__(self, model: nn.Module, tokenizer: Any, name: str = "model",
                 device: str | torch.device | None = None, pooling: str | None = None,
                 max_length: int | None = None) -> None:
        super().__init__(model, name=name, device=device, pooling=pooling)
        if tokenizer is None:
            raise NeuroLensError(f"{name}: a text model needs a tokenizer; pass tokenizer=... (a Hugging Face "
                                 "tokenizer object or a directory containing one)")
        if not getattr(tokenizer, "is_fast", False):
            raise NeuroLensError(f"{name}: tokenizer {type(tokenizer).__name__} is a slow (Python) tokenizer; span "
                                 "marks need character offsets - load it with use_fast=True")
        self.tokenizer = tokenizer
        #: the token this adapter pads with; a tokenizer without one gets it only while encoding, so the
        #: user's tokenizer is never left changed (load_model, ProbeModule, steer and compare included)
        self.pad_token = tokenizer.pad_token or tokenizer.eos_token or tokenizer.unk_token
        configured = max_length or self.max_length
        limit, why = model_token_limit(model, tokenizer)
        #: the most tokens an example is read to: the configured length, or less where the model reads fewer
        self.max_length = min(configured, limit) if limit is not None and limit > 0 else configured
        #: where :attr:`max_length` comes from (for the messages)
        self.length_source = why if self.max_length < configured else "the configured max_length"

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token is not None else tok.convert_tokens_to_ids(self.pad_token)

    @contextmanager
    def padding(self) -> Iterator[None]:
        """The tokenizer with a pad token inside the block (its own, or :attr:`pad_token` set and unset again)."""
        tok = self.tokenizer
        if tok.pad_token is not None:
            yield
            return
        tok.pad_token = self.pad_token
        try:
            yield
        finally:
            tok.pad_token = None

    # ---------------------------------------------------------------- encoding
    def _check_cut(self, ex: TextExample, n_tokens: int, kept: Sequence[tuple[int, int]]) -> bool:
        """Whether ``ex`` (``n_tokens`` real tokens) was cut to the ``kept`` token offsets; a ``[[span]]`` that
        reaches past the cut raises (it would be read partly or not at all)."""
        if n_tokens <= len(kept):
            return False
        if ex.span is not None:
            s, e = ex.span
            end = s + len(ex.text[s:e].rstrip())
            if end > max((o[1] for o in kept), default=0):
                raise ProbeError(f"example {_short(ex.text)!r} ({n_tokens} tokens): its [[concept span]] "
                                 f"{_short(ex.text[s:e], 30)!r} lies (partly) beyond the first {self.max_length} "
                                 f"tokens that {self.name} reads ({self.length_source}); shorten the example or "
                                 "move the span nearer its start")
        return True

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Real tokens (no special tokens) of each text, uncut."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def truncated(self, examples: Sequence[Example]) -> list[int]:
        """Indices of the text ``examples`` longer than :attr:`max_length` tokens (they are cut to it); raises
        :class:`ProbeError` for an example whose ``[[span]]`` reaches past the cut."""
        items = [(i, ex) for i, ex in enumerate(examples) if isinstance(ex, TextExample)]
        if not items:
            return []
        texts = [ex.text for _, ex in items]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True,
                             return_special_tokens_mask=True, verbose=False)
        full = [b for b, ids in enumerate(enc["input_ids"]) if len(ids) >= self.max_length]  # only these may be cut
        out = []
        for b, n in zip(full, self._token_counts([texts[b] for b in full])):
            kept = [tuple(o) for o, sp in zip(enc["offset_mapping"][b], enc["special_tokens_mask"][b]) if not sp]
            if self._check_cut(items[b][1], n, kept):
                out.append(items[b][0])
        return out

    def task_overhead(self) -> int | None:
        """Tokens a task encoding adds around prompt and target (BOS, [CLS] ... [SEP]); None if tasks are not
        encoded."""
        return 0

    def _prompt_room(self, task: TextTask, n_target: int) -> int:
        """How many prompt tokens fit beside ``n_target`` target tokens; a target that leaves none raises."""
        room = self.max_length - (self.task_overhead() or 0) - n_target
        if room < 1:
            raise ProbeError(f"task {_short(task.prompt, 40)!r} -> {_short(task.target, 30)!r}: the target's "
                             f"{n_target} tokens leave no room for the prompt in the {self.max_length} tokens "
                             f"{self.name} reads ({self.length_source}); shorten the target")
        return room

    def input_warnings(self, examples: Sequence[Example], tasks: Sequence[TextTask | ImageTask]) -> list[str]:
        """One warning counting the examples (and task prompts) cut to :attr:`max_length` tokens; a span past the
        cut or a task target too long to fit raises.

        Example:
            >>> adapter.input_warnings([TextExample("word " * 500)], [])  # doctest: +SKIP
            ['long examples: 1 of 1 examples are longer than the 128 tokens ...']
        """
        cut = self.truncated(examples)
        n_prompts, text_tasks = 0, [t for t in tasks if isinstance(t, TextTask)]
        if text_tasks and self.task_overhead() is not None:
            for t in text_tasks:
                n_prompt = len(self.tokenizer(t.prompt, add_special_tokens=False)["input_ids"])
                n_prompts += n_prompt > self._prompt_room(t, len(self._target_ids(t.target)))
        if not cut and not n_prompts:
            return []
        what = [f"{len(cut)} of {len(examples)} examples"] if cut else []
        what += [f"{n_prompts} of {len(text_tasks)} task prompts"] if n_prompts else []
        eg = f" (e.g. {_short(examples[cut[0]].text)!r})" if cut else ""
        return [f"long examples: {' and '.join(what)} are longer than the {self.max_length} tokens {self.name} "
                f"reads ({self.length_source}) and were cut to fit{eg}; the model never sees the rest (examples "
                "keep their first tokens, prompts their last) - shorten them to compare what the model reads"]

    def encode(self, examples: Sequence[Example]) -> Batch:
        for ex in examples:
            if not isinstance(ex, TextExample):
                raise NeuroLensError(f"{self.name} is a text model but got a {type(ex).__name__}; use a text probe")
        texts = [ex.text for ex in examples]
        with self.padding():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        special = enc.pop("special_tokens_mask").bool()
        attn = enc["attention_mask"].bool()
        position_mask = attn & ~special
        for b in (~position_mask.any(1)).nonzero().flatten().tolist():
            raise ProbeError(f"example {texts[b]!r} tokenizes to no tokens for {self.name} (nothing but special "
                             "tokens): every activation of it would be undefined; remove it from the probe or give "
                             "it visible text")
        span_mask = torch.zeros_like(position_mask)
        marked = [b for b, ex in enumerate(examples) if ex.span is not None]
        # a span is read whole or the example is refused: pooling never silently changes. Only an example that
        # fills max_length may have been cut: the others are not tokenized again
        full = [b for b in marked if int(attn[b].sum()) >= self.max_length]
        for b, n in zip(full, self._token_counts([texts[b] for b in full])):
            self._check_cut(examples[b], n, [tuple(o) for o in offsets[b][position_mask[b]].tolist()])
        for b in marked:
            s, e = examples[b].span
            starts, ends = offsets[b, :, 0], offsets[b, :, 1]
            span_mask[b] = position_mask[b] & (starts < e) & (ends > s)
            if not bool(span_mask[b].any()):
                raise ProbeError(f"example {_short(texts[b])!r}: its [[concept span]] {examples[b].span_text!r} "
                                 f"covers no token of {self.name}'s tokenization; mark a span of visible text")
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        tokens = [self.tokenizer.convert_ids_to_tokens(row.tolist()) for row in enc["input_ids"]]
        return Batch(inputs=inputs, size=len(texts), position_mask=position_mask, span_mask=span_mask, tokens=tokens)

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    def _target_ids(self, target: str) -> list[int]:
        ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        if not ids:
            raise NeuroLensError(f"task target {target!r} encodes to no tokens")
        return ids

    def site_view(self, act: torch.Tensor) -> torch.Tensor:
        return act

    # ---------------------------------------------------------------- confidence
    @staticmethod
    def _score_positions(logits: torch.Tensor, target: dict[str, torch.Tensor], gathered: bool = False
                         ) -> torch.Tensor:
        """Sum over m of ``weight[b, m] * log p(target_ids[b, m])`` at ``pred_pos[b, m]`` (own argmax if id < 0).

        ``gathered``: ``logits`` is already ``[B, M, V]`` at the scored positions.
        """
        pos, ids, weight = target["pred_pos"], target["target_ids"], target["weight"]
        if gathered:
            sel = logits.float()
        else:
            b_idx = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
            sel = logits[b_idx, pos].float()  # [B, M, V]
        lse = torch.logsumexp(sel, dim=-1)
        own = sel.max(dim=-1).values
        picked = sel.gather(-1, ids.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        chosen = torch.where(ids < 0, own, picked) - lse
        return (chosen * weight).sum(dim=1)

    @staticmethod
    def _at_scored_positions(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``hidden [B, T, H]`` at the positions confidence reads: ``[B, M, H]``."""
        pos = batch.target["pred_pos"]
        b_idx = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1)
        return hidden[b_idx, pos]

    def fix_targets(self, batch: Batch, outputs: Any) -> Batch:
        ids = batch.target.get("target_ids")
        if not self.has_output_head or ids is None or not bool((ids < 0).any()):
            return batch
        logits = outputs.logits
        if getattr(outputs, "gathered", False):
            own = logits.argmax(-1)
        else:
            b_idx = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
            own = logits[b_idx, batch.target["pred_pos"]].argmax(-1)
        fixed = torch.where(ids < 0, own.to(ids.device), ids)
        return replace(batch, target={**batch.target, "target_ids": fixed})

    def features(self, batch: Batch, outputs: Any) -> torch.Tensor:
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is None:
            hidden = outputs.hidden_states[-1]
        mask = batch.inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)

    def _needs_hidden_states(self) -> bool:
        """Whether the features must come from ``hidden_states``: a model without an LM head that is not its own
        base model (e.g. a sequence classifier) returns no ``last_hidden_state``. Hidden states are asked for only
        then: transformers 5 answers ``output_hidden_states=True`` by installing output-capturing forward hooks
        that stay on the user's model."""
        return not self.has_output_head and getattr(self.model, "base_model", self.model) is not self.model

    def forward(self, batch: Batch) -> Any:
        if not self._needs_hidden_states():
            return self.model(**batch.inputs)
        return self.model(**batch.inputs, output_hidden_states=True)

    def confidence(self, batch: Batch, outputs: Any, head: nn.Module | None = None) -> torch.Tensor:
        if not self.has_output_head:
            if head is None:
                raise NeuroLensError(f"{self.name} has no LM head: confidence needs a fitted probe head")
            return head.logits(self.features(batch, outputs))
        return self._score_positions(outputs.logits, batch.target, gathered=getattr(outputs, "gathered", False))


def causal_lm_confidence(adapter: "TextAdapter", examples: Sequence[Example] | None,
                          tasks: Sequence[TextTask] | None, prefix: Sequence[int] = ()) -> Batch:
    """Confidence inputs of a causal LM (GPT-2 and the decoder adapters): tasks as ``prefix + prompt + target`` with
    y read at the positions that predict the target tokens (``prefix``, e.g. a BOS, is neither pooled nor scored),
    else the examples with y the log p of the model's own next token wherever both positions are real tokens."""
    if tasks:
        rows, pos, ids = [], [], []
        for t in tasks:
            tgt = adapter._target_ids(t.target)
            room = adapter._prompt_room(t, len(tgt))  # prefix + prompt + target fit the model (prompt cut on the left)
            p = list(prefix) + adapter.tokenizer(t.prompt, add_special_tokens=False)["input_ids"][-room:]
            if not p:
                raise NeuroLensError(f"task prompt {t.prompt!r} encodes to no tokens and {adapter.name}'s tokenizer "
                                     "adds no BOS: nothing predicts the target")
            rows.append(p + tgt)
            pos.append(list(range(len(p) - 1, len(p) - 1 + len(tgt))))
            ids.append(tgt)
        input_ids = adapter._pad(rows, adapter.pad_token_id)
        attn = adapter._pad([[1] * len(r) for r in rows], 0)
        pm = adapter._pad([[0] * len(prefix) + [1] * (len(r) - len(prefix)) for r in rows], 0).bool()
        target = {"pred_pos": adapter._pad(pos, 0), "target_ids": adapter._pad(ids, 0),
                  "weight": adapter._pad([[1] * len(i) for i in ids], 0).float()}
        return Batch(inputs={"input_ids": input_ids, "attention_mask": attn}, size=len(rows), position_mask=pm,
                     span_mask=torch.zeros_like(pm), target=target,
                     tokens=[adapter.tokenizer.convert_ids_to_tokens(r) for r in rows])
    batch = adapter.encode(examples or [])
    if adapter.has_output_head:
        # predict token p+1 from position p wherever both are real tokens (any padding side)
        attn = batch.inputs["attention_mask"].bool()
        T = attn.shape[1]
        pos = torch.arange(max(T - 1, 1)).unsqueeze(0).expand(batch.size, -1)
        valid = (attn[:, :-1] & attn[:, 1:]).float() if T > 1 else torch.zeros(batch.size, 1)
        valid = valid / valid.sum(1, keepdim=True).clamp_min(1)
        batch.target = {"pred_pos": pos.clone(), "target_ids": torch.full_like(pos, -1), "weight": valid}
    return batch


class GPT2Adapter(TextAdapter):
    """GPT-2 (``GPT2LMHeadModel`` or ``GPT2Model``); neurons at ``h[L].mlp.act``."""

    family = "gpt2"

    @property
    def _blocks(self) -> nn.ModuleList:
        base = getattr(self.model, "transformer", self.model)
        return base.h

    @property
    def sites(self) -> list[NeuronSite]:
        prefix = "transformer.h" if hasattr(self.model, "transformer") else "h"
        return [NeuronSite(i, f"{prefix}.{i}.mlp.act", blk.mlp.act, blk.mlp.c_fc.nf)
                for i, blk in enumerate(self._blocks)]

    @property
    def has_output_head(self) -> bool:
        return hasattr(self.model, "lm_head")

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def forward(self, batch: Batch) -> Any:
        # no KV cache: probes are single forward passes, and re-entry at a block must not append to a cache
        inputs = dict(batch.inputs)
        attn = inputs.get("attention_mask")
        if attn is not None and "position_ids" not in inputs:
            # GPT-2 numbers positions 0, 1, ... regardless of the mask, which under left padding would shift every
            # padded example's real tokens: count positions over real tokens instead. Real tokens get exactly the
            # default positions under right padding (only the pads' own, never-read positions change), and no
            # host sync is needed to tell the padding side apart
            inputs["position_ids"] = (attn.long().cumsum(-1) - 1).clamp_min(0)
        if not self._needs_hidden_states():
            return self.model(**inputs, use_cache=False)
        return self.model(**inputs, use_cache=False, output_hidden_states=True)

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        base = getattr(self.model, "transformer", self.model)
        h = base.ln_f(hidden)
        if self.has_output_head:  # the LM head only where y reads it
            return SimpleNamespace(logits=self.model.lm_head(self._at_scored_positions(h, batch)), gathered=True)
        return SimpleNamespace(last_hidden_state=h, hidden_states=None)

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[TextTask] | None) -> Batch:
        return causal_lm_confidence(self, examples, tasks)


class BertAdapter(TextAdapter):
    """BERT-like encoders (BERT, RoBERTa, MiniLM, ...); neurons at ``encoder.layer[L].intermediate``."""

    family = "bert"

    @property
    def _encoder_layers(self) -> nn.ModuleList:
        base = getattr(self.model, "base_model", self.model)
        return base.encoder.layer

    @property
    def sites(self) -> list[NeuronSite]:
        base = getattr(self.model, "base_model", self.model)
        prefix = "" if base is self.model else f"{self.model.base_model_prefix}."
        return [NeuronSite(i, f"{prefix}encoder.layer.{i}.intermediate", layer.intermediate,
                           layer.intermediate.dense.out_features)
                for i, layer in enumerate(self._encoder_layers)]

    @property
    def has_output_head(self) -> bool:
        return type(self.model).__name__.endswith("ForMaskedLM")

    def task_overhead(self) -> int | None:
        return len(_with_special_tokens(self.tokenizer, [])) if self.has_output_head else None

    @property
    def blocks(self) -> list[nn.Module] | None:
        if not self.has_output_head and type(self.model).__name__ not in ("BertModel", "RobertaModel"):
            return None  # e.g. sequence classifiers: their head is not re-entered here
        return list(self._encoder_layers)

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        if not self.has_output_head:
            return SimpleNamespace(last_hidden_state=hidden, hidden_states=None)
        head = getattr(self.model, "cls", None) or getattr(self.model, "lm_head")
        return SimpleNamespace(logits=head(self._at_scored_positions(hidden, batch)), gathered=True)

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[TextTask] | None) -> Batch:
        if not self.has_output_head:
            return self.encode(examples or [])
        tok = self.tokenizer
        mask_id = tok.mask_token_id
        if tasks:
            rows, pos, ids = [], [], []
            for t in tasks:
                tgt = self._target_ids(t.target)
                p = tok(t.prompt, add_special_tokens=False)["input_ids"][-self._prompt_room(t, len(tgt)):]
                full = _with_special_tokens(tok, p + [mask_id] * len(tgt))
                first = full.index(mask_id)
                rows.append(full)
                pos.append(list(range(first, first + len(tgt))))
                ids.append(tgt)
            input_ids = self._pad(rows, self.pad_token_id)
            attn = self._pad([[1] * len(r) for r in rows], 0)
            special_ids = torch.tensor(sorted(set(tok.all_special_ids) - {mask_id}))
            special = torch.isin(input_ids, special_ids)
            pm = attn.bool() & ~special | (input_ids == mask_id)
            target = {"pred_pos": self._pad(pos, 0), "target_ids": self._pad(ids, 0),
                      "weight": self._pad([[1] * len(i) for i in ids], 0).float()}
            inputs = {"input_ids": input_ids, "attention_mask": attn}
            return Batch(inputs=inputs, size=len(rows), position_mask=pm, span_mask=torch.zeros_like(pm),
                         target=target, tokens=[tok.convert_ids_to_tokens(r) for r in rows])
        batch = self.encode(examples or [])
        ids = batch.inputs["input_ids"].clone()
        pos, tgt = [], []
        for b in range(batch.size):
            where = batch.span_mask[b].nonzero().flatten().tolist()
            if not where:
                real = batch.position_mask[b].nonzero().flatten().tolist()
                where = real[-1:] if real else [0]
            pos.append(where)
            tgt.append(ids[b, where].tolist())
            ids[b, where] = mask_id
        batch.inputs["input_ids"] = ids
        batch.target = {"pred_pos": self._pad(pos, 0), "target_ids": self._pad(tgt, 0),
                        "weight": self._pad([[1] * len(p) for p in pos], 0).float()}
        return batch
