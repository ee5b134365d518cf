"""Adapters for more image models: Vision Transformers (Hugging Face and torchvision) and torchvision ConvNeXt.

Image encoding and confidence y follow ``adapters/resnet.py``: images are read as normalized
``[3, S, S]`` tensors (ImageNet statistics); y is ``log p(label)`` for labelled task images,
else ``log p`` of the model's own top-1 class (the clean model's, also under ablation).

* **Hugging Face ViT** (``ViTForImageClassification`` / ``ViTModel``): a neuron is an MLP
  hidden unit, the input of the MLP's second linear layer (= the output of the intermediate
  activation), hooked as :class:`~neurolens_lightning.hooks.InputOf`: ``vit.layers[L].mlp.fc2``
  in transformers >= 5 (``vit.encoder.layer[L].output.dense`` in the 4.x layout; both are found).
  ``ViTModel`` has no classifier: y is a fitted probe head's log-odds on the final [CLS]
  state (after the last layer norm), as for text base models.
* **torchvision ViT** (``VisionTransformer``, e.g. ``vit_b_16``): the input of the second
  ``Linear`` of ``encoder.layers[L].mlp`` (``mlp.3``).
* **torchvision ConvNeXt**: a channel of each ``CNBlock``'s output (after layer scale and the
  residual add), blocks numbered across the four stages (``features.1.0`` ...).

Per-example statistic of a ViT unit: the **mean over the patch tokens, the [CLS] token
excluded** (``pooling="max"``: the max over patch tokens). The [CLS] position is marked out
of ``position_mask``, so an ablation still edits it (every position of the site changes) but
it never enters the pooled activation. ConvNeXt channels are pooled like ResNet channels
(spatial mean, or max).

A ViT only takes images of the size it was built for (its position embeddings): the image
size defaults to the model's and any other ``image_size`` is an error.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, ModelAdapter, NeuronSite
from neurolens_lightning.adapters.resnet import ResNetAdapter
from neurolens_lightning.concepts import Example, ImageTask
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import InputOf


def _size(v: Any) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise NeuroLensError(f"non-square ViT input size {tuple(v)} is not supported; NeuroLens feeds square "
                                 "images")
        return int(v[0])
    return int(v)


class _ViTBase(ResNetAdapter):
    """Shared by the ViT adapters: fixed image size, [CLS] excluded from pooling, token-major site views."""

    family = "vit"

    def __init__(self, model: nn.Module, name: str = "vit", device: str | torch.device | None = None,
                 pooling: str | None = None, image_size: int | None = None) -> None:
        ModelAdapter.__init__(self, model, name=name, device=device, pooling=pooling)
        if self.pooling == "auto":
            self.pooling = "mean"
        if self.pooling not in ("mean", "max"):
            raise NeuroLensError(f"image pooling must be 'mean' or 'max', got {self.pooling!r}")
        own = self._model_image_size()
        if image_size is not None and image_size != own:
            raise NeuroLensError(f"{name} is a ViT built for {own}x{own} images (its position embeddings); "
                                 f"image_size={image_size!r} cannot be used - leave it unset or pass {own}")
        self.image_size = own

    # what a subclass provides
    def _model_image_size(self) -> int:
        raise NotImplementedError

    def _patch_size(self) -> int:
        raise NotImplementedError

    @property
    def n_tokens(self) -> int:
        """[CLS] + patch tokens."""
        return 1 + (self.image_size // self._patch_size()) ** 2

    def _sites_from(self, downs: Sequence[nn.Module]) -> list[NeuronSite]:
        cached = self.__dict__.get("_sites")
        if cached is None:
            names = {id(m): n for n, m in self.model.named_modules()}
            cached = [NeuronSite(i, f"{names[id(d)]}:input", InputOf(d), d.in_features) for i, d in enumerate(downs)]
            self.__dict__["_sites"] = cached  # the same InputOf objects every time (ablation looks sites up)
        return cached

    def encode(self, examples: Sequence[Example]) -> Batch:
        x = self._images(examples)
        if x.shape[-1] != self.image_size:
            raise NeuroLensError(f"image tensor of size {x.shape[-1]} given to {self.name}, a ViT for "
                                 f"{self.image_size}x{self.image_size} images; resize it or pass an image file")
        pm = torch.ones(len(examples), self.n_tokens, dtype=torch.bool)
        pm[:, 0] = False  # [CLS] is not a patch: excluded from the pooled statistic
        return Batch(inputs={"x": x}, size=len(examples), position_mask=pm)

    def site_view(self, act: torch.Tensor) -> torch.Tensor:
        return act

    def unview(self, view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return view.reshape(like.shape)


class HFViTAdapter(_ViTBase):
    """Hugging Face ViT; neurons = the input of ``encoder.layer[L].output.dense`` (the MLP hidden units)."""

    @property
    def _base(self) -> nn.Module:
        return getattr(self.model, "vit", self.model)

    def _model_image_size(self) -> int:
        return _size(self.model.config.image_size)

    def _patch_size(self) -> int:
        return _size(self.model.config.patch_size)

    @property
    def _layers(self) -> nn.ModuleList:
        base = self._base
        return base.layers if hasattr(base, "layers") else base.encoder.layer

    @staticmethod
    def _down(layer: nn.Module) -> nn.Module:
        mlp = getattr(layer, "mlp", None)
        return mlp.fc2 if mlp is not None else layer.output.dense

    @property
    def sites(self) -> list[NeuronSite]:
        return self._sites_from([self._down(layer) for layer in self._layers])

    @property
    def has_output_head(self) -> bool:
        return isinstance(getattr(self.model, "classifier", None), nn.Linear)

    @property
    def num_classes(self) -> int:
        return self.model.classifier.out_features

    def forward(self, batch: Batch) -> Any:
        out = self.model(pixel_values=batch.inputs["x"])
        return out.logits if self.has_output_head else out

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self._layers)

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        h = self._base.layernorm(hidden)
        if self.has_output_head:
            return self.model.classifier(h[:, 0, :])
        return SimpleNamespace(last_hidden_state=h)

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[ImageTask] | None) -> Batch:
        if not self.has_output_head:
            return self.encode(examples or [])
        return super().encode_confidence(examples, tasks)

    def fix_targets(self, batch: Batch, outputs: Any) -> Batch:
        return super().fix_targets(batch, outputs) if self.has_output_head else batch

    def features(self, batch: Batch, outputs: Any) -> torch.Tensor:
        return outputs.last_hidden_state[:, 0, :]

    def confidence(self, batch: Batch, outputs: Any, head: nn.Module | None = None) -> torch.Tensor:
        if not self.has_output_head:
            if head is None:
                raise NeuroLensError(f"{self.name} has no classifier: confidence needs a fitted probe head")
            return head.logits(self.features(batch, outputs))
        return super().confidence(batch, outputs, head)


class TorchvisionViTAdapter(_ViTBase):
    """torchvision ``VisionTransformer``; neurons = the input of the second Linear of ``encoder.layers[L].mlp``."""

    def _model_image_size(self) -> int:
        return int(self.model.image_size)

    def _patch_size(self) -> int:
        return int(self.model.patch_size)

    @property
    def sites(self) -> list[NeuronSite]:
        downs = []
        for blk in self.model.encoder.layers:
            linears = [m for m in blk.mlp.modules() if isinstance(m, nn.Linear)]
            if len(linears) != 2:
                raise NeuroLensError(f"{self.name}: an encoder block's MLP has {len(linears)} Linear layers, not 2; "
                                     "its layout is not one NeuroLens knows")
            downs.append(linears[1])
        return self._sites_from(downs)

    @property
    def num_classes(self) -> int:
        return [m for m in self.model.heads.modules() if isinstance(m, nn.Linear)][-1].out_features

    def forward(self, batch: Batch) -> Any:
        return self.model(batch.inputs["x"])

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        return self.model.heads(self.model.encoder.ln(hidden)[:, 0])


class ConvNeXtAdapter(ResNetAdapter):
    """torchvision ConvNeXt; neurons = the channels of each ``CNBlock``'s output (spatial mean by default)."""

    family = "convnext"

    @property
    def sites(self) -> list[NeuronSite]:
        from torchvision.models.convnext import CNBlock

        names = {id(m): n for n, m in self.model.named_modules()}
        blocks = [m for m in self.model.features.modules() if isinstance(m, CNBlock)]
        return [NeuronSite(i, names[id(b)], b, b.block[0].out_channels) for i, b in enumerate(blocks)]

    @property
    def num_classes(self) -> int:
        return [m for m in self.model.classifier.modules() if isinstance(m, nn.Linear)][-1].out_features

    @property
    def blocks(self) -> list[nn.Module] | None:
        return None  # downsampling layers sit between the stages' blocks: no simple re-entry
