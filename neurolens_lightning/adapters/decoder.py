"""Adapter for decoder-only LMs from ``transformers`` other than GPT-2: gated-MLP decoders
(Llama, Mistral, Qwen2/Qwen3, Gemma/Gemma2/Gemma3, Phi-3), GPT-NeoX (Pythia) and OPT.

Neurons (DESIGN §1): the **input of the MLP's down projection**, one unit per column of its
weight: ``act(gate_proj(x)) * up_proj(x)`` entering ``mlp.down_proj`` in gated MLPs (Phi-3:
``up * act(gate)`` from the fused ``gate_up_proj``), ``act(dense_h_to_4h(x))`` entering
``mlp.dense_4h_to_h`` in GPT-NeoX, ``act(fc1(x))`` entering ``fc2`` in OPT. Zeroing unit ``u``
removes exactly that neuron's write to the residual stream (column ``u`` of the down
projection). No module *outputs* the gated product, so the sites are
:class:`~neurolens_lightning.hooks.InputOf` the down projection: capturing or intervening on
a site hooks the projection's input (a forward pre-hook). OPT flattens the MLP input to
``[B*T, H]``; its sites restore ``[B, T, U]`` from the decoder layer's input shape.

Confidence y is GPT-2's (DESIGN §2): ``log p(target | prompt)`` summed over the target's
tokens for tasks (the tokenizer's leading special tokens, e.g. Llama's BOS, come first, as
in every encoding the model was trained on), else the mean log-probability of the model's
own next-token predictions over the example's real tokens (any padding side). Position ids
are counted over real tokens (``cumsum(attention_mask) - 1``), so left padding does not shift
an example's positions. The bare base models (``LlamaModel``, ...) have no LM
head: y is a fitted probe head's log-odds on the mean-pooled last hidden state, as for
``GPT2Model``.

Block re-entry (ablation / steering speed-up): ``blocks`` are the decoder layers, wrapped so
that replaying a recorded layer call on R replicas of the batch also replicates the
batch-first tensors nested in tuples (the rotary ``position_embeddings = (cos, sin)``); the
recorded 4D attention masks and position ids are replicated by the runner itself. ``tail``
is the final norm (OPT: and ``project_out``), the LM head at the scored positions and
Gemma-2/3's final logit soft-capping.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, NeuronSite
from neurolens_lightning.adapters.text import TextAdapter, causal_lm_confidence
from neurolens_lightning.concepts import Example, TextTask
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import InputOf


@dataclass(frozen=True)
class DecoderSpec:
    """Where one family keeps its layers, their down projections and its final modules (all from the base model)."""

    layers: str                 # attribute path of the layer list under the base model
    down: str                   # attribute path of the down projection under a layer
    final: tuple[str, ...]      # modules applied, in order, to the last layer's output (missing / None skipped)
    flat_mlp: bool = False      # the MLP sees ``[B*T, H]`` (OPT): sites restore ``[B, T, U]``


_GATED = DecoderSpec(layers="layers", down="mlp.down_proj", final=("norm",))

#: ``config.model_type`` -> layout. Every entry is exercised by tests/test_gated_decoders.py.
DECODER_SPECS: dict[str, DecoderSpec] = {
    "llama": _GATED, "mistral": _GATED, "qwen2": _GATED, "qwen3": _GATED, "phi3": _GATED,
    "gemma": _GATED, "gemma2": _GATED, "gemma3_text": _GATED,
    "gpt_neox": DecoderSpec(layers="layers", down="mlp.dense_4h_to_h", final=("final_layer_norm",)),
    "opt": DecoderSpec(layers="decoder.layers", down="fc2", final=("decoder.final_layer_norm", "decoder.project_out"),
                       flat_mlp=True),
}


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_spec(model: nn.Module) -> DecoderSpec | None:
    """The layout of a supported decoder (``*ForCausalLM`` or the bare base model), else None."""
    spec = DECODER_SPECS.get(getattr(getattr(model, "config", None), "model_type", None))
    if spec is None:
        return None
    base = getattr(model, "base_model", None)
    if not (type(model).__name__.endswith("ForCausalLM") or base is model):
        return None  # classifiers etc.: their heads are not scored here
    if not isinstance(_get(base, spec.layers), nn.ModuleList):
        return None
    return spec


def _expand(x: Any, n: int) -> Any:
    """``x`` with every batch-first tensor in it (dim >= 2, a batch > 1 dividing ``n``; also inside tuples and lists)
    replicated to batch ``n`` (as the runners replicate: ``t.repeat(n // batch, ...)``)."""
    if isinstance(x, torch.Tensor):
        if x.dim() >= 2 and 1 < x.shape[0] < n and n % x.shape[0] == 0:
            return x.repeat(n // x.shape[0], *([1] * (x.dim() - 1)))
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(_expand(v, n) for v in x)
    return x


class DecoderBlock(nn.Module):
    """A decoder layer as a re-entry block.

    Hooks registered on it go to the layer itself (so they see the model's own forward).
    Calling it runs the layer with batch-first tensors nested in the arguments (rotary
    ``(cos, sin)``) replicated to the hidden state's batch: the runners replicate only
    top-level tensors when they replay a recorded call on R copies of the batch.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "layer", layer)  # not a submodule: the block owns no parameters

    def register_forward_pre_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                                  with_kwargs: bool = False) -> Any:
        return self.layer.register_forward_pre_hook(hook, prepend=prepend, with_kwargs=with_kwargs)

    def register_forward_hook(self, hook: Callable[..., Any], **kwargs: Any) -> Any:
        return self.layer.register_forward_hook(hook, **kwargs)

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        n = hidden.shape[0]
        return self.layer(hidden, *[_expand(a, n) for a in args], **{k: _expand(v, n) for k, v in kwargs.items()})

    def extra_repr(self) -> str:
        return f"re-entry of {type(self.layer).__name__}"


def _special_prefix(tok: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text (Llama's / Gemma's BOS; none for GPT-2, Qwen)."""
    bare = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return list(full[:i])
    return []


class DecoderAdapter(TextAdapter):
    """Decoder-only LMs (Llama, Mistral, Qwen2/3, Gemma/2/3, Phi-3, GPT-NeoX, OPT); neurons at the down
    projection's input."""

    family = "decoder"

    # ---------------------------------------------------------------- layout
    @property
    def spec(self) -> DecoderSpec:
        spec = decoder_spec(self.model)
        if spec is None:
            raise NeuroLensError(f"{type(self.model).__name__} is not a supported decoder LM")
        return spec

    @property
    def _base(self) -> nn.Module:
        return self.model.base_model

    @property
    def _layers(self) -> nn.ModuleList:
        return _get(self._base, self.spec.layers)

    @property
    def sites(self) -> list[NeuronSite]:
        # built once and kept: a site's module is compared by identity (``adapter.sites.index(site)``)
        spec, layers = self.spec, list(self._layers)
        downs = [_get(layer, spec.down) for layer in layers]
        cached = self.__dict__.get("_sites")
        if cached is None or len(cached) != len(downs) or any(s.module.target is not d for s, d in zip(cached, downs)):
            for i, d in enumerate(downs):
                if not isinstance(getattr(d, "in_features", None), int):
                    raise NeuroLensError(f"{type(self.model).__name__}: layer {i} has no linear down projection at "
                                         f"{spec.down!r}; its MLP is not one NeuroLens knows")
            names = {id(m): n for n, m in self.model.named_modules()}
            cached = [NeuronSite(i, f"{names.get(id(d), spec.down)}:input",
                                 InputOf(d, shape_from=layer if spec.flat_mlp else None), d.in_features)
                      for i, (layer, d) in enumerate(zip(layers, downs))]
            self.__dict__["_sites"] = cached
        return list(cached)

    @property
    def has_output_head(self) -> bool:
        return type(self.model).__name__.endswith("ForCausalLM")

    @property
    def blocks(self) -> list[nn.Module]:
        layers = list(self._layers)
        cached = self.__dict__.get("_blocks_cache")
        if cached is None or [b.layer for b in cached] != layers:
            cached = [DecoderBlock(layer) for layer in layers]
            self.__dict__["_blocks_cache"] = cached
        return list(cached)

    # ---------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> Any:
        # only what a decoder takes (a tokenizer may add token_type_ids); no KV cache: probes are single passes
        inputs = {k: v for k, v in batch.inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        attn = inputs.get("attention_mask")
        if attn is not None and "position_ids" not in inputs:
            # positions counted over real tokens (0..n-1 on any padding side). Left padding would otherwise shift a
            # padded example's positions: plain rotary attention is invariant to that common shift, but learned
            # positions, position-dependent RoPE scalings (dynamic NTK, Phi-3 longrope) and long-context numerics
            # are not. Under right padding real tokens keep the default positions
            inputs["position_ids"] = (attn.long().cumsum(-1) - 1).clamp_min(0)
        return self.model(**inputs, use_cache=False)

    def _final(self, h: torch.Tensor) -> torch.Tensor:
        for path in self.spec.final:
            m = _get(self._base, path)
            if m is not None:
                h = m(h)
        return h

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        if not self.has_output_head:
            return SimpleNamespace(last_hidden_state=self._final(hidden), hidden_states=None)
        # final norm (per position) and the LM head only where y reads them
        h = self._final(self._at_scored_positions(hidden, batch))
        logits = self.model.get_output_embeddings()(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2/3
            logits = torch.tanh(logits / cap) * cap
        return SimpleNamespace(logits=logits, gathered=True)

    # ---------------------------------------------------------------- confidence inputs
    def task_overhead(self) -> int | None:
        return len(_special_prefix(self.tokenizer))

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[TextTask] | None) -> Batch:
        return causal_lm_confidence(self, examples, tasks, prefix=_special_prefix(self.tokenizer))
