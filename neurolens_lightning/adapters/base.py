"""What every architecture adapter provides.

An adapter knows, for one model family: where the neurons live (:class:`NeuronSite`),
how to turn probe examples into a model batch (:class:`Batch`), how to view a site's
output as ``[batch, positions, units]``, and what the model's *confidence* y is on an
example (DESIGN §2). Everything downstream (metrics, ranking, ablation) is generic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
from torch import nn

from neurolens_lightning.concepts import Example, ImageTask, TextTask
from neurolens_lightning.errors import ModelLoadError, NeuroLensError
from neurolens_lightning.preflight import check_layers

Pooling = Literal["auto", "max", "mean", "span", "last"]


@dataclass
class NeuronSite:
    """One layer of neurons: the module whose output holds them and how many there are."""

    layer: int
    name: str
    module: nn.Module
    units: int


@dataclass
class Batch:
    """A model-ready batch plus what pooling and confidence need.

    ``position_mask[b, p]`` marks positions that belong to example ``b`` (real tokens, no
    padding or special tokens); ``None`` means every position counts (images).
    ``span_mask`` marks the concept span (all False for rows without one).
    """

    inputs: dict[str, torch.Tensor]
    size: int
    position_mask: torch.Tensor | None = None
    span_mask: torch.Tensor | None = None
    target: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: list[list[str]] | None = None

    @property
    def device(self) -> torch.device:
        """The device of the model inputs (where the statistics of this batch are gathered)."""
        for t in self.inputs.values():
            if isinstance(t, torch.Tensor):
                return t.device
        return torch.device("cpu")

    def to(self, device: torch.device) -> "Batch":
        mv = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(
            inputs={k: mv(v) for k, v in self.inputs.items()},
            size=self.size,
            position_mask=mv(self.position_mask),
            span_mask=mv(self.span_mask),
            target={k: mv(v) for k, v in self.target.items()},
            tokens=self.tokens,
        )

    def repeat(self, times: int) -> "Batch":
        """The batch replicated ``times`` along the batch dimension (for batched ablation)."""
        rep = lambda t: t.repeat(times, *([1] * (t.dim() - 1))) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(
            inputs={k: rep(v) for k, v in self.inputs.items()},
            size=self.size * times,
            position_mask=rep(self.position_mask),
            span_mask=rep(self.span_mask),
            target={k: rep(v) for k, v in self.target.items()},
            tokens=None if self.tokens is None else self.tokens * times,
        )


def pool_activations(
    view: torch.Tensor,
    position_mask: torch.Tensor | None,
    span_mask: torch.Tensor | None,
    how: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool a site view ``[B, P, U]`` to per-example activations ``[B, U]``.

    Returns ``(pooled, strongest_position)`` where ``strongest_position[b, u]`` is the
    position of the largest activation of unit ``u`` among the example's positions.

    ``how``: ``max`` / ``mean`` over real positions; ``span`` = mean over the marked span
    (rows without a span fall back to max); ``auto`` = ``span``; ``last`` = last real position.
    """
    B, P, U = view.shape
    if position_mask is None:
        position_mask = torch.ones(B, P, dtype=torch.bool, device=view.device)
    pm = position_mask.unsqueeze(-1)
    neg_inf = torch.finfo(view.dtype).min
    mx, arg = view.masked_fill(~pm, neg_inf).max(dim=1)
    if how == "max":
        return mx, arg
    if how == "mean":
        cnt = position_mask.sum(1, keepdim=True).clamp_min(1).to(view.dtype)
        return (view * pm).sum(1) / cnt, arg
    if how == "last":
        last = (position_mask.long().cumsum(1).argmax(1))  # index of last True
        return view[torch.arange(B, device=view.device), last], arg
    if how in ("span", "auto"):
        if span_mask is None:
            return mx, arg
        has = span_mask.any(1, keepdim=True)
        sm = span_mask.unsqueeze(-1)
        cnt = span_mask.sum(1, keepdim=True).clamp_min(1).to(view.dtype)
        span_mean = (view * sm).sum(1) / cnt
        return torch.where(has, span_mean, mx), arg
    raise NeuroLensError(f"unknown pooling {how!r}; use one of auto, max, mean, span, last")


class ModelAdapter(ABC):
    """Base class of the architecture adapters."""

    family: str = "base"
    modality: Literal["text", "image"] = "text"
    default_pooling: str = "auto"

    def __init__(self, model: nn.Module, name: str = "model", device: str | torch.device | None = None,
                 pooling: str | None = None) -> None:
        self.model = model
        self.name = name
        self.pooling = pooling or self.default_pooling
        if device is not None:
            if dispatched(model):
                raise ModelLoadError(
                    f"this model is dispatched with device_map ({sorted(set(map(str, model.hf_device_map.values())))}); "
                    "NeuroLens scans it where it lies: pass device=None (CLI: --device auto)")
            self.model.to(torch.device(device))

    # ---------------------------------------------------------------- neurons
    @property
    def device(self) -> torch.device:
        """Where inputs go and statistics are gathered: the device of the model's parameters, or for a
        model dispatched with ``device_map`` (accelerate) the execution device of its input embeddings."""
        return input_device(self.model)

    @property
    @abstractmethod
    def sites(self) -> list[NeuronSite]:
        """All neuron sites (one per layer), in depth order."""

    @property
    def num_layers(self) -> int:
        return len(self.sites)

    def select_sites(self, layers: Sequence[int] | None = None) -> list[NeuronSite]:
        """The sites for ``layers`` (default: all), validating the indices."""
        sites = self.sites
        if layers is None or len(layers) == 0:
            return sites
        check_layers(list(layers), len(sites), self.name)  # the rule preflight applies before loading
        return [sites[l] for l in sorted(layers)]

    # ---------------------------------------------------------------- data
    @abstractmethod
    def encode(self, examples: Sequence[Example]) -> Batch:
        """Encode probe examples for the activation pass."""

    @abstractmethod
    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[TextTask | ImageTask] | None
                          ) -> Batch:
        """Encode the inputs on which confidence y is measured: the tasks if given, else ``examples``."""

    def input_warnings(self, examples: Sequence[Example], tasks: Sequence[TextTask | ImageTask]) -> list[str]:
        """Warnings about what encoding changes in the probe's inputs (e.g. text cut to the model's length),
        checked once before any pass; an input that cannot be encoded faithfully raises instead."""
        return []

    def forward(self, batch: Batch) -> Any:
        return self.model(**batch.inputs)

    @abstractmethod
    def site_view(self, act: torch.Tensor) -> torch.Tensor:
        """A site's output as ``[B, positions, units]`` (a view where possible)."""

    # ---------------------------------------------------------------- re-entry (ablation speed-up)
    @property
    def blocks(self) -> list[nn.Module] | None:
        """The computation blocks, ``blocks[i]`` containing site ``i``, if the forward can be
        re-entered at a block (see :meth:`tail`); None disables reuse of lower activations."""
        return None

    def tail(self, hidden: torch.Tensor, batch: Batch) -> Any:
        """Model outputs from the last block's output, enough for :meth:`confidence` on ``batch``."""
        raise NotImplementedError

    def unview(self, view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`site_view`: back to the layout of the site output ``like``."""
        return view.reshape(like.shape)

    def pool(self, act: torch.Tensor, batch: Batch, how: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example activations ``[B, U]`` of a site output, pooled by ``how`` (default :attr:`pooling`)."""
        return pool_activations(self.site_view(act), batch.position_mask, batch.span_mask, how or self.pooling)

    # ---------------------------------------------------------------- confidence
    @property
    def has_output_head(self) -> bool:
        """Whether y comes from the model's own head (else a fitted probe on :meth:`features`)."""
        return True

    @abstractmethod
    def confidence(self, batch: Batch, outputs: Any, head: "nn.Module | None" = None) -> torch.Tensor:
        """Per-example confidence y ``[B]`` (differentiable w.r.t. the activations)."""

    def fix_targets(self, batch: Batch, outputs: Any) -> Batch:
        """``batch`` with "the model's own prediction" targets replaced by the clean model's prediction.

        Ablation must score the *original* top-1 (DESIGN §2), not the ablated model's own.
        """
        return batch

    def features(self, batch: Batch, outputs: Any) -> torch.Tensor:
        """Pooled last-layer representation ``[B, H]`` for a fitted probe head."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        sites = self.sites
        return {"name": self.name, "family": self.family, "modality": self.modality, "n_layers": len(sites),
                "units": [s.units for s in sites], "type": type(self.model).__name__, "neuron": site_pattern(sites)}


def site_pattern(sites: Sequence[NeuronSite]) -> str:
    """Where the neurons are, as one module-path pattern over the layers (``*`` where the layers' paths differ):
    ``"model.layers.*.mlp.down_proj:input"`` (the unit dimension of that module's input or output).

    >>> import torch
    >>> site_pattern([NeuronSite(i, f"h.{i}.mlp.act", torch.nn.Identity(), 4) for i in range(3)])
    'h.*.mlp.act'
    """
    parts = [s.name.split(".") for s in sites]
    if not parts:
        return ""
    if len({len(p) for p in parts}) != 1:
        return f"{sites[0].name} … {sites[-1].name}"
    return ".".join(col[0] if len(set(col)) == 1 else "*" for col in zip(*parts))


def dispatched(model: nn.Module) -> bool:
    """True for a model placed by accelerate's ``device_map`` (its modules may sit on several devices,
    CPU or disk)."""
    return bool(getattr(model, "hf_device_map", None))


def input_device(model: nn.Module) -> torch.device:
    """The device a forward of ``model`` takes its inputs on (see ``ModelAdapter.device``)."""
    if dispatched(model):
        get = getattr(model, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        for m in ([emb] if emb is not None else []) + list(model.modules()):
            hook = getattr(m, "_hf_hook", None)
            dev = getattr(hook, "execution_device", None)
            if dev is not None:
                return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and w.device.type != "meta":
                return w.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def auto_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
