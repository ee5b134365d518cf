"""OmegaConf structured configs for the ``neurolens`` commands.

A config file (YAML) is merged over the dataclass defaults, then ``key=value`` overrides
from the command line. Unknown keys and wrong types fail with OmegaConf's message, which
names the full key.

Example:
    >>> cfg = load_config(ScanConfig, overrides=["model=minilm", "top_k=20"])
    >>> cfg.model, cfg.top_k
    ('minilm', 20)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Type, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")


@dataclass
class WandbConfig:
    """Weights & Biases logging. ``mode`` None = online if an API key is configured, else offline."""

    enabled: bool = False
    project: str = "neurolens"
    entity: Optional[str] = None
    mode: Optional[str] = None
    artifact: bool = True


@dataclass
class ScanConfig:
    """``neurolens scan``: score (and optionally ablate) one concept in one model."""

    model: str = "minilm"
    concept: str = "royalty"
    layers: Optional[List[int]] = None
    top_k: int = 10
    ablate: bool = False
    ablation: str = "zero"
    null_samples: int = 50
    neurons: List[str] = field(default_factory=list)
    weights: str = "pretrained"
    arch: Optional[str] = None
    tokenizer: Optional[str] = None
    device: str = "auto"
    download: bool = False
    importance: bool = True
    baseline: str = "zero"
    pooling: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 16
    max_neurons: int = 500
    fdr_q: float = 0.05
    holdout: float = 0.5
    seed: int = 0
    out: Optional[str] = None
    report: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


def load_config(schema: Type[T], paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> T:
    """Merge YAML ``paths`` and ``key=value`` ``overrides`` over ``schema``'s defaults and validate."""
    from neurolens_lightning.errors import NeuroLensError

    base = OmegaConf.structured(schema)
    parts: list[Any] = [base]
    for p in paths:
        if not Path(p).is_file():
            raise NeuroLensError(f"config file {str(p)!r} does not exist")
        parts.append(OmegaConf.load(str(p)))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise NeuroLensError(f"override(s) {bad} are not key=value pairs (e.g. top_k=20)")
    parts.append(OmegaConf.from_dotlist(list(overrides)))
    merged = OmegaConf.merge(*parts)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
