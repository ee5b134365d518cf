"""Architecture adapters: one per model family, chosen from the module's type.

Example:
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
    >>> [s.units for s in adapter_for(model, tokenizer=None, check_tokenizer=False).sites]
    [128, 128]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, ModelAdapter, NeuronSite, auto_device, pool_activations
from neurolens_lightning.adapters.decoder import DecoderAdapter, decoder_spec
from neurolens_lightning.adapters.encoders import (DebertaV2Adapter, DistilBertAdapter, ElectraAdapter,
                                                   ModernBertAdapter)
from neurolens_lightning.adapters.resnet import ResNetAdapter
from neurolens_lightning.adapters.sites import SiteAdapter, match_modules, parse_site
from neurolens_lightning.adapters.text import BertAdapter, GPT2Adapter, TextAdapter
from neurolens_lightning.adapters.vision import ConvNeXtAdapter, HFViTAdapter, TorchvisionViTAdapter
from neurolens_lightning.errors import NeuroLensError

__all__ = ["Batch", "ModelAdapter", "NeuronSite", "TextAdapter", "GPT2Adapter", "BertAdapter", "DecoderAdapter",
           "ResNetAdapter", "adapter_for", "auto_device", "pool_activations", "family_of", "SiteAdapter",
           "match_modules", "parse_site", "DistilBertAdapter", "ElectraAdapter", "DebertaV2Adapter",
           "ModernBertAdapter", "HFViTAdapter", "TorchvisionViTAdapter", "ConvNeXtAdapter"]

#: ``config.model_type`` -> family of the encoders in ``adapters/encoders.py`` and HF ViT (``adapters/vision.py``)
_HF_FAMILIES = {"distilbert": "distilbert", "electra": "electra", "deberta-v2": "deberta-v2",
                "modernbert": "modernbert", "vit": "vit"}
_FAMILY_ADAPTERS = {"distilbert": DistilBertAdapter, "electra": ElectraAdapter, "deberta-v2": DebertaV2Adapter,
                    "modernbert": ModernBertAdapter}


def family_of(model: nn.Module) -> str | None:
    """``gpt2`` / ``bert`` / ``decoder`` / ``resnet`` / ``distilbert`` / ``electra`` / ``deberta-v2`` /
    ``modernbert`` / ``vit`` (Hugging Face or torchvision) / ``convnext`` for a supported module, else None.

    ``decoder``: a ``*ForCausalLM`` (or the bare base model) of Llama, Mistral, Qwen2/Qwen3,
    Gemma/Gemma2/Gemma3 (text), Phi-3, GPT-NeoX or OPT (see ``adapters/decoder.py``).
    """
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype == "gpt2":
        return "gpt2"
    if mtype in ("bert", "roberta", "xlm-roberta", "camembert"):
        return "bert"
    if mtype in _HF_FAMILIES:
        return _HF_FAMILIES[mtype]
    if decoder_spec(model) is not None:
        return "decoder"
    try:
        from torchvision.models import ResNet
    except Exception:  # pragma: no cover - torchvision missing
        ResNet = ()  # type: ignore[assignment]
    if ResNet and isinstance(model, ResNet):
        return "resnet"
    try:
        from torchvision.models import ConvNeXt, VisionTransformer
    except Exception:  # pragma: no cover - torchvision missing
        return None
    if isinstance(model, VisionTransformer):
        return "vit"
    if isinstance(model, ConvNeXt):
        return "convnext"
    return None


def adapter_for(model: nn.Module, tokenizer: Any = None, name: str | None = None,
                device: str | torch.device | None = None, check_tokenizer: bool = True, **kwargs: Any
                ) -> ModelAdapter:
    """Wrap a supported ``nn.Module`` in its adapter (GPT-2, BERT-like, decoder LM or ResNet).

    ``site="PATTERN[:input|:output]"`` (any text model, known or not): a :class:`SiteAdapter`
    with the neurons at the matched modules (see ``adapters/sites.py``).
    """
    if isinstance(model, ModelAdapter):
        if kwargs.get("site"):
            raise NeuroLensError("site= names where the neurons of a model are; pass the nn.Module, not an adapter")
        return model
    if kwargs.get("site"):
        return SiteAdapter(model, tokenizer, name=name or type(model).__name__, device=device, **kwargs)
    kwargs.pop("site", None)
    family = family_of(model)
    name = name or type(model).__name__
    if family is None:
        raise NeuroLensError(
            f"unsupported model type {type(model).__name__}: NeuroLens supports GPT-2, BERT/RoBERTa-like encoders, "
            "DistilBERT, ELECTRA, DeBERTa-v2/v3, ModernBERT, decoder LMs (Llama, Mistral, Qwen2/3, Gemma/2/3, Phi-3, "
            "GPT-NeoX, OPT: *ForCausalLM or the base model), ViTs (Hugging Face or torchvision) and torchvision "
            "ResNets / ConvNeXts (pass one of those, or a registry name such as 'minilm'); for any other "
            "text model name its neurons with --site 'PATTERN[:input|:output]' (Python: site=...), e.g. "
            "'blocks.*.mlp.fc2:input'")
    if family == "resnet":
        return ResNetAdapter(model, name=name, device=device, **kwargs)
    if family == "convnext":
        return ConvNeXtAdapter(model, name=name, device=device, **kwargs)
    if family == "vit":
        vit = HFViTAdapter if getattr(model, "config", None) is not None else TorchvisionViTAdapter
        return vit(model, name=name, device=device, **kwargs)
    cls = {"gpt2": GPT2Adapter, "decoder": DecoderAdapter, **_FAMILY_ADAPTERS}.get(family, BertAdapter)
    if tokenizer is None and not check_tokenizer:
        adapter = cls.__new__(cls)
        ModelAdapter.__init__(adapter, model, name=name, device=device)
        return adapter
    return cls(model, tokenizer, name=name, device=device, **kwargs)
