"""Adapters for more masked-LM encoders: DistilBERT, ELECTRA, DeBERTa-v2/v3 and ModernBERT.

They reuse :class:`~neurolens_lightning.adapters.text.BertAdapter` (tokenization, span
handling, confidence y) and change only where the neurons are:

* **ELECTRA** (``ElectraForMaskedLM`` / ``ElectraModel`` / ``ElectraForPreTraining`` ...) and
  **DeBERTa-v2/v3** (``DebertaV2ForMaskedLM`` / ``DebertaV2Model`` ...): BERT's layout, the
  output of ``<base>.encoder.layer[L].intermediate`` (post-activation FFN hidden units).
* **DistilBERT** (``DistilBertForMaskedLM`` / ``DistilBertModel`` ...): the output of the FFN
  activation, which no module outputs by itself: the sites are
  :class:`~neurolens_lightning.hooks.InputOf` ``distilbert.transformer.layer[L].ffn.lin2``.
* **ModernBERT** (``ModernBertForMaskedLM`` / ``ModernBertModel`` ...): the gated product
  ``act(input) * gate`` of the fused ``mlp.Wi`` (chunked in two), i.e. the input of
  ``model.layers[L].mlp.Wo`` (``InputOf``), one unit per column of ``Wo``.

Zeroing a unit therefore removes exactly that neuron's write through the next linear layer
(``output.dense`` / ``lin2`` / ``Wo``): column ``u`` of its weight.

Confidence y is BERT's (DESIGN §2): with a masked-LM head, ``log p(target at [MASK])`` for
tasks, else the masked concept span's original tokens; without one (base models,
classifiers), a fitted probe head's log-odds on the mean-pooled last hidden state.
DistilBERT and ModernBERT take no ``token_type_ids``: the encoding drops them.

Block re-entry (the ablation speed-up) is offered for ELECTRA (its layers are BERT layers,
its MLM head is ``generator_lm_head(generator_predictions(h))``); the other families run
full forwards (``blocks`` is None).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, NeuronSite
from neurolens_lightning.adapters.text import BertAdapter
from neurolens_lightning.concepts import Example
from neurolens_lightning.hooks import InputOf


class _EncoderAdapter(BertAdapter):
    """A BERT-like encoder whose neurons are the input of a linear layer in each block (cached ``InputOf`` sites)."""

    layers_path: str = "encoder.layer"      # the layer list under the base model
    down_path: str = ""                     # the linear layer whose input holds the neurons, under a layer
    drop_inputs: tuple[str, ...] = ()       # tokenizer outputs the model does not accept

    @property
    def _base(self) -> nn.Module:
        return getattr(self.model, "base_model", self.model)

    @property
    def _encoder_layers(self) -> nn.ModuleList:
        obj: Any = self._base
        for part in self.layers_path.split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def sites(self) -> list[NeuronSite]:
        cached = self.__dict__.get("_sites")
        if cached is None:
            names = {id(m): n for n, m in self.model.named_modules()}
            cached = []
            for i, layer in enumerate(self._encoder_layers):
                down: Any = layer
                for part in self.down_path.split("."):
                    down = getattr(down, part)
                cached.append(NeuronSite(i, f"{names.get(id(down), self.down_path)}:input", InputOf(down),
                                         down.in_features))
            self.__dict__["_sites"] = cached  # the same InputOf objects every time (ablation looks sites up)
        return cached

    @property
    def blocks(self) -> list[nn.Module] | None:
        return None

    def encode(self, examples: Sequence[Example]) -> Batch:
        batch = super().encode(examples)
        for k in self.drop_inputs:
            batch.inputs.pop(k, None)
        return batch


class DistilBertAdapter(_EncoderAdapter):
    """DistilBERT; neurons = the FFN activation, the input of ``transformer.layer[L].ffn.lin2``."""

    family = "distilbert"
    layers_path = "transformer.layer"
    down_path = "ffn.lin2"
    drop_inputs = ("token_type_ids",)


class ModernBertAdapter(_EncoderAdapter):
    """ModernBERT; neurons = ``act(input) * gate`` of the fused ``mlp.Wi``, the input of ``layers[L].mlp.Wo``."""

    family = "modernbert"
    layers_path = "layers"
    down_path = "mlp.Wo"
    drop_inputs = ("token_type_ids",)


class ElectraAdapter(BertAdapter):
    """ELECTRA; BERT's layout (``electra.encoder.layer[L].intermediate``), its own MLM head for the tail."""

    family = "electra"

    @property
    def blocks(self) -> list[nn.Module] | None:
        name = type(self.model).__name__
        if self.has_output_head or name == "ElectraModel":
            return list(self._encoder_layers)
        return None

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        if not self.has_output_head:
            return SimpleNamespace(last_hidden_state=hidden, hidden_states=None)
        h = self._at_scored_positions(hidden, batch)
        return SimpleNamespace(logits=self.model.generator_lm_head(self.model.generator_predictions(h)),
                               gathered=True)


class DebertaV2Adapter(BertAdapter):
    """DeBERTa-v2/v3; BERT's layout (``deberta.encoder.layer[L].intermediate``); full forwards only."""

    family = "deberta-v2"

    @property
    def blocks(self) -> list[nn.Module] | None:
        return None
