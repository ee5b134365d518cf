"""OmegaConf structured configs for the ``neurolens`` commands.

A config file (YAML) is merged over the dataclass defaults, then ``key=value`` overrides
from the command line. Unknown keys and wrong types fail with OmegaConf's message, which
names the full key.

Schemas (one per file kind in ``configs/``, see :func:`schema_for_file`):

* :class:`ScanConfig` - ``neurolens scan`` (``configs/scan.yaml``)
* :class:`CompareConfig` - ``neurolens compare`` (``configs/compare.yaml``)
* :class:`CallbackConfig` - the arguments of :class:`~neurolens_lightning.callback.NeuroLensCallback`
  (``configs/callback.yaml``)
* :class:`EvalConfig` - ``neurolens eval``, a Lightning ``Trainer.validate`` run with a
  :class:`LoggerConfig` (CSV or W&B) and a :class:`TrainerConfig` (``configs/eval_*.yaml``)

Choice fields of the newer schemas are ``typing.Literal`` (validated by OmegaConf >= 2.4).

Example:
    >>> cfg = load_config(ScanConfig, overrides=["model=minilm", "top_k=20"])
    >>> cfg.model, cfg.top_k
    ('minilm', 20)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Type, TypeVar

from omegaconf import OmegaConf

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import ScanSettings

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
class ScanConfig(ScanSettings):
    """``neurolens scan``: score (and optionally ablate) one concept in one model. The scoring and causal-test
    fields are :class:`~neurolens_lightning.settings.ScanSettings`' (one schema for every entry point)."""

    model: str = "minilm"
    concept: str = "royalty"
    weights: str = "pretrained"
    arch: Optional[str] = None
    site: Optional[str] = None  # "PATTERN[:input|:output]": neurons of a model NeuroLens does not know
    tokenizer: Optional[str] = None
    device: str = "auto"
    download: bool = False
    image_size: Optional[int] = None
    cross_concept: bool = False
    also: List[str] = field(default_factory=list)
    out: Optional[str] = None
    overwrite: bool = False  # allow ``out`` to be a symlink or a non-empty folder that is not a NeuroLens output
    report: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CompareConfig(ScanSettings):
    """``neurolens compare``: the same probe on several models, layers aligned by relative depth.

    ``models`` entries are ``NAME`` or ``NAME:WEIGHTS`` (``minilm:random``); a name without a
    suffix uses ``weights``. See :mod:`neurolens_lightning.compare`. The scoring fields are
    :class:`~neurolens_lightning.settings.ScanSettings`' (``layers`` must stay None: depths are aligned).
    """

    models: List[str] = field(default_factory=list)
    concept: str = "negation"
    weights: Literal["pretrained", "random"] = "pretrained"
    grid: int = 21
    tokenizer: Optional[str] = None
    device: str = "auto"
    download: bool = False
    out: Optional[str] = None
    overwrite: bool = False  # allow ``out`` to be a symlink or a non-empty folder that is not a NeuroLens output
    report: bool = True


@dataclass
class CallbackConfig:
    """The arguments of :class:`~neurolens_lightning.callback.NeuroLensCallback` (primitives only).

    Example:
        >>> cfg = load_config(CallbackConfig, overrides=["every_n_train_steps=50"])
        >>> cfg.kwargs()["every_n_train_steps"]
        50
    """

    concepts: List[str] = field(default_factory=lambda: ["royalty"])
    layers: Optional[List[int]] = None
    every_n_train_steps: Optional[int] = None
    every_n_epochs: Optional[int] = None
    on_checkpoint: bool = False
    on_validation_end: bool = False
    ablate_top_k: int = 0
    report_dir: Optional[str] = None
    tokenizer: Optional[str] = None
    top_k: int = 10
    importance: bool = True
    batch_size: Optional[int] = None    # None = ScanSettings' default (16)
    null_samples: Optional[int] = None  # None = ScanSettings' default (50)
    fdr_q: float = 0.05
    probe_at_start: bool = True
    probe_at_end: bool = True
    log_charts: bool = True
    store_scores: bool = True
    steer_scales: Optional[List[float]] = None

    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``NeuroLensCallback(**cfg.kwargs())``."""
        return asdict(self)


@dataclass
class LoggerConfig:
    """The Lightning logger of an eval run.

    ``kind``: ``csv`` (``CSVLogger``, the default) or ``wandb`` (``WandbLogger``; ``mode`` None =
    ``WANDB_MODE`` if set, else online when an API key is configured and offline otherwise).
    ``save_dir`` None = ``<out>/logs``.
    """

    kind: Literal["csv", "wandb"] = "csv"
    save_dir: Optional[str] = None
    name: str = "neurolens-eval"
    version: Optional[str] = None
    project: str = "neurolens"
    entity: Optional[str] = None
    mode: Optional[Literal["online", "offline", "disabled"]] = None
    log_report: bool = True


@dataclass
class TrainerConfig:
    """Arguments of the ``lightning.Trainer`` of an eval run (``inference_mode`` is always False)."""

    accelerator: str = "auto"
    devices: Any = "auto"
    precision: Optional[str] = None
    enable_progress_bar: bool = False


@dataclass
class EvalConfig(ScanSettings):
    """``neurolens eval``: score one concept as ``Trainer.validate(ProbeModule, ...)``.

    With ``ablate`` (or any ``neurons``) the probe is split like ``neurolens scan --ablate``
    (``holdout``, ``seed``): the neurons are ranked on the ranking split, then
    ``Trainer.validate(AblationModule, ...)`` ablates the top-k candidates, the top suppressors
    and the named ``neurons`` (``"LAYER:INDEX"`` strings) on the held-out split (``ablation``
    method, ``null_samples`` random neurons per layer, family-wise ``alpha``, ``min_effect``
    None = the default of y's units). ``holdout=0`` ranks and ablates on the same examples.
    """

    model: str = "minilm"
    concept: str = "royalty"
    weights: Literal["pretrained", "random"] = "pretrained"
    tokenizer: Optional[str] = None
    out: Optional[str] = None
    overwrite: bool = False  # allow ``out`` to be a symlink or a non-empty folder that is not a NeuroLens output
    report: bool = True
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


#: config file name prefix -> schema (``configs/eval_minilm.yaml`` -> EvalConfig)
CONFIG_SCHEMAS: Dict[str, type] = {"scan": ScanConfig, "compare": CompareConfig, "callback": CallbackConfig,
                                   "eval": EvalConfig}


def schema_for_file(path: str | Path) -> type:
    """The schema of a config file, from its name: ``scan*``, ``compare*``, ``callback*``, ``eval*``."""

    stem = Path(path).stem
    for prefix, schema in CONFIG_SCHEMAS.items():
        if stem == prefix or stem.startswith(prefix + "_") or stem.startswith(prefix + "-"):
            return schema
    raise NeuroLensError(f"no config schema for {str(path)!r}: name it {', '.join(p + '*.yaml' for p in CONFIG_SCHEMAS)}")


def load_config(schema: Type[T], paths: Sequence[str | Path] = (), overrides: Sequence[str] = (),
                updates: Optional[Mapping[str, Any]] = None) -> T:
    """Merge YAML ``paths`` and ``key=value`` ``overrides`` over ``schema``'s defaults and validate.

    ``updates`` (a plain mapping, e.g. from command-line flags) is merged last, so values with
    characters the dotlist grammar would reinterpret pass through unchanged.
    """

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
    if updates:
        parts.append(OmegaConf.create(dict(updates)))
    merged = OmegaConf.merge(*parts)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
