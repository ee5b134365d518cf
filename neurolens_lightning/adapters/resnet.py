"""Adapter for torchvision ResNets (18/34/50/101/152).

A neuron is a channel of a residual block's output (after the add and ReLU); blocks are
numbered across ``layer1..layer4`` (ResNet-18: 8 blocks, 64…512 channels; ResNet-50: 16
blocks, 256…2048 channels). The per-example activation is the spatial mean of the channel
map (``pooling="max"`` for the spatial max). Confidence y is ``log p(label)`` for labelled
task images, else ``log p`` of the model's own top-1 class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, ModelAdapter, NeuronSite
from neurolens_lightning.concepts import Example, ImageExample, ImageTask, check_image_file
from neurolens_lightning.errors import NeuroLensError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIZE = 32


def load_image_tensor(path: Any, size: int) -> torch.Tensor:
    """Read an image file as a normalized ``[3, size, size]`` tensor (RGB, ImageNet statistics); a file above
    :data:`~neurolens_lightning.concepts.MAX_IMAGE_PIXELS` is refused in one line before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    check_image_file(path, "image")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise NeuroLensError(f"cannot read image {str(path)!r} ({e}); give a PNG/JPEG file") from None
    x = data.view(size, size, 3).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class ResNetAdapter(ModelAdapter):
    """torchvision ResNet; neurons are the channels of each residual block's output."""

    family = "resnet"
    modality = "image"
    default_pooling = "mean"

    def __init__(self, model: nn.Module, name: str = "resnet", device: str | torch.device | None = None,
                 pooling: str | None = None, image_size: int = 224) -> None:
        super().__init__(model, name=name, device=device, pooling=pooling)
        if self.pooling == "auto":
            self.pooling = "mean"
        if self.pooling not in ("mean", "max"):
            raise NeuroLensError(f"image pooling must be 'mean' or 'max', got {self.pooling!r}")
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise NeuroLensError(f"image_size={image_size!r} is too small for a ResNet (5 stride-2 stages); use "
                                 f"at least {MIN_IMAGE_SIZE} (224 is what ImageNet weights expect)")
        self.image_size = image_size

    @property
    def sites(self) -> list[NeuronSite]:
        out = []
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for j, block in enumerate(getattr(self.model, stage)):
                last_bn = getattr(block, "bn3", None) or block.bn2
                out.append(NeuronSite(len(out), f"{stage}.{j}", block, last_bn.num_features))
        return out

    @property
    def num_classes(self) -> int:
        return self.model.fc.out_features

    def _images(self, items: Sequence[Any]) -> torch.Tensor:
        tensors = []
        for it in items:
            if isinstance(it, ImageExample):
                tensors.append(load_image_tensor(it.path, self.image_size))
            elif isinstance(it, torch.Tensor):
                if it.dim() != 3 or it.shape[0] != 3 or it.shape[1] != it.shape[2] or it.shape[1] < MIN_IMAGE_SIZE:
                    raise NeuroLensError(f"image tensor of shape {tuple(it.shape)} is not a [3, H, H] image with "
                                         f"H >= {MIN_IMAGE_SIZE}; resize it or pass an image file")
                tensors.append(it.float())
            else:
                raise NeuroLensError(f"{self.name} is an image model but got {type(it).__name__}; use an image probe")
        return torch.stack(tensors)

    def encode(self, examples: Sequence[Example]) -> Batch:
        return Batch(inputs={"x": self._images(examples)}, size=len(examples))

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[ImageTask] | None) -> Batch:
        if tasks:
            labels = [t.label for t in tasks]
            bad = [l for l in labels if l >= self.num_classes]
            if bad:
                raise NeuroLensError(f"task label(s) {bad} out of range: {self.name} has {self.num_classes} classes")
            batch = self.encode([ImageExample(t.image) for t in tasks])
            batch.target = {"labels": torch.tensor(labels)}
            return batch
        batch = self.encode(examples or [])
        batch.target = {"labels": torch.full((batch.size,), -1, dtype=torch.long)}
        return batch

    def forward(self, batch: Batch) -> Any:
        return self.model(batch.inputs["x"])

    def site_view(self, act: torch.Tensor) -> torch.Tensor:
        return act.flatten(2).transpose(1, 2)

    @property
    def blocks(self) -> list[nn.Module]:
        return [s.module for s in self.sites]

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        return self.model.fc(torch.flatten(self.model.avgpool(hidden), 1))

    def unview(self, view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return view.transpose(1, 2).reshape(like.shape)

    def fix_targets(self, batch: Batch, outputs: Any) -> Batch:
        labels = batch.target["labels"]
        if bool((labels < 0).any()):
            fixed = torch.where(labels < 0, outputs.argmax(-1).to(labels.device), labels)
            batch = replace(batch, target={**batch.target, "labels": fixed})
        return batch

    def confidence(self, batch: Batch, outputs: Any, head: nn.Module | None = None) -> torch.Tensor:
        logp = torch.log_softmax(outputs.float(), dim=-1)
        labels = batch.target["labels"]
        own = logp.max(dim=-1).values
        picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return torch.where(labels < 0, own, picked)
