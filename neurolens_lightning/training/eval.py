"""``neurolens eval``: a standalone concept-scoring run as a Lightning ``Trainer.validate``.

    neurolens eval --config configs/eval_minilm.yaml [key=value ...]
    neurolens eval --config configs/eval_minilm.yaml layers=[5] logger.kind=wandb
    neurolens eval --config configs/eval_minilm.yaml layers=[4,5] ablate=true null_samples=100

The run builds a :class:`~neurolens_lightning.training.modules.ProbeModule`, validates it with
``lightning.Trainer(inference_mode=False, logger=..., ...)`` on ``module.datamodule()``
(importance needs gradients, hence ``inference_mode=False``), logs the headline scalars
(``neurolens/n_significant_fdr``, ``neurolens/top_selectivity`` ...) to the configured
Lightning logger and saves ``module.result`` to the output folder (``results.json`` +
``report.html``).

Causal validation (``ablate=true``, or any ``neurons``): the probe is split like
``neurolens scan --ablate`` (``concept.split(holdout, seed=seed)``); the scoring validate runs on
the ranking split, then a second ``trainer.validate`` of an
:class:`~neurolens_lightning.training.modules.AblationModule` ablates the top-k candidates, the top
suppressors and the named ``neurons`` on the held-out split and logs ``ablation/delta/L:I``,
``ablation/p/L:I``, ``ablation/validated/L:I``, ``ablation/joint_delta``,
``ablation/n_validated`` and ``ablation/n_suppressors_validated`` to the same logger;
results.json then holds ``ablation_summary`` and each tested neuron's ``ablation`` record, and
``timings_s`` an ``ablation`` entry. Keys: ``ablation`` (zero | mean | resample),
``null_samples`` (>= 2, random neurons per layer in the first round of the null), ``neurons``
(``["L:I", ...]``, always tested; quote them: YAML reads an unquoted ``5:17`` as the base-60
number 317), ``alpha`` (family-wise error rate), ``min_effect`` (None =
the default of y's units), ``holdout`` (in [0, 1); 0 ranks and ablates on the same examples)
and ``seed`` (the split, the null's draw and random weights). Bad values fail before any
folder is created. Several devices (``trainer.devices=2``) run both validates under DDP.

Loggers (``logger.kind``): ``csv`` (default; ``CSVLogger`` writing
``<save_dir>/<name>/version_N/metrics.csv``, ``save_dir`` default ``<out>/logs``) or
``wandb`` (``WandbLogger``; ``logger.mode`` None = ``WANDB_MODE`` if set, else online when an
API key is configured and offline otherwise; with ``log_report`` the report's charts, the
candidate table and the page are logged too).

Example:
    >>> from neurolens_lightning.config import EvalConfig, load_config
    >>> cfg = load_config(EvalConfig, overrides=["layers=[5]", "out=reports/eval"])   # doctest: +SKIP
    >>> run_eval(cfg)                                                                   # doctest: +SKIP
    >>> cfg = load_config(EvalConfig, overrides=["ablate=true", 'neurons=["5:17"]'])  # doctest: +SKIP
    >>> run_eval(cfg)["result"].ablation_summary["n_validated"]                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from neurolens_lightning.io import Output, check_out, default_out
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.progress import Bar, progress_bar
from neurolens_lightning.registry import load_model
from neurolens_lightning.report import log_scan_to_wandb, wandb_logging
from neurolens_lightning.results import ScanResult
from neurolens_lightning.settings import ScanSettings
from neurolens_lightning.training.modules import AblationModule, ProbeModule

__all__ = ["make_logger", "run_eval"]


#: the folder of ``<out>`` the default CSV / W&B logger writes into (kept when the result is published)
LOGS = "logs"


def _default_out(cfg: Any) -> Path:
    return default_out("eval", cfg.model, cfg.concept)


def _wandb_mode(mode: str | None) -> str:
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    return "online" if wandb_logging._api_key_configured() else "offline"


def make_logger(cfg: Any, out: str | Path) -> Any:
    """The Lightning logger of an :class:`~neurolens_lightning.config.EvalConfig` (its ``logger`` section).

    Returns a ``CSVLogger`` or a ``WandbLogger`` (offline unless an API key is configured or
    ``logger.mode`` says otherwise); ``save_dir`` defaults to ``<out>/logs``.
    """
    lc = cfg.logger
    save_dir = Path(lc.save_dir) if lc.save_dir else Path(out) / LOGS
    if lc.kind == "csv":
        return CSVLogger(save_dir=str(save_dir), name=lc.name, version=lc.version)
    if lc.kind == "wandb":
        mode = _wandb_mode(lc.mode)
        save_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"project": lc.project, "entity": lc.entity, "save_dir": str(save_dir),
                                  "name": lc.name, "offline": mode == "offline"}
        if lc.version:
            kwargs["version"] = lc.version
        if mode == "disabled":
            kwargs["mode"] = "disabled"
        return WandbLogger(**kwargs)
    raise NeuroLensError(f"logger.kind must be csv or wandb, got {lc.kind!r}")  # pragma: no cover (schema)


def run_eval(cfg: Any, progress: bool = False) -> dict[str, Any]:
    """Run one eval (see the module docstring). ``progress`` (the CLI's): a bar per validate and per null round
    of the ablation on stderr, on rank 0 only (:mod:`neurolens_lightning.progress`; not with
    ``trainer.enable_progress_bar``, which draws Lightning's own).

    Returns ``{"out", "result", "logger", "metrics", "ablation_metrics", "global_zero"}``: ``metrics``
    are the scoring run's logged scalars, ``ablation_metrics`` the ablation run's (empty without
    ``ablate``); ``global_zero`` is False on the other ranks of a DDP run (only rank 0 saves).
    """
    t_start = time.perf_counter()
    settings = ScanSettings.from_any(cfg)
    settings.check()
    ablate = settings.tests_causally  # naming neurons asks for their ablation, as in `neurolens scan`
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    output = check_out(out, overwrite=bool(getattr(cfg, "overwrite", False)), keep=(LOGS,))  # before any work
    # everything that can fail on user input happens before the logger creates a folder
    concept = load_concept(cfg.concept)
    # the adapter is loaded here (as `neurolens scan` does) so random weights are drawn from `seed`
    adapter = load_model(cfg.model, tokenizer=cfg.tokenizer, weights=cfg.weights, device="cpu", seed=cfg.seed)
    module = ProbeModule(adapter, concept, weights=cfg.weights, settings=settings)  # checks layers and neurons
    datamodule = module.datamodule()
    t_loaded = time.perf_counter()
    logger = make_logger(cfg, out)
    with quiet_lightning():  # this Trainer is NeuroLens': none of Lightning's tips and notes about it
        trainer = _build_trainer(cfg, logger, out, progress)
        t0 = time.perf_counter()
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)
        t_scored = time.perf_counter()
        result = module.result
        if result is None:  # pragma: no cover - validate always runs the epoch end
            raise NeuroLensError("the validation run produced no result")
        result.timings.update({"load_model": t_loaded - t_start, "scoring": t_scored - t0})
        ablation_metrics = _validate_ablation(trainer, module, progress) if ablate else []
    result.timings["total"] = time.perf_counter() - t_start
    if trainer.is_global_zero:
        _save_and_log(cfg, trainer, logger, result, output)
    return {"out": output.published or out, "result": result, "logger": logger,
            "metrics": metrics[0] if metrics else {},
            "ablation_metrics": ablation_metrics[0] if ablation_metrics else {},
            "global_zero": trainer.is_global_zero}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Around a Trainer NeuroLens builds itself: Lightning's info lines (device summary, litlogger / litmodels
    tips) and its own deprecation notice about ``_pytree`` are not shown; warnings are restored afterwards."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
            yield
    finally:
        log.setLevel(level)


class ValidationProgress(pl.Callback):
    """One bar per ``trainer.validate`` (every validation batch of every dataloader), drawn on global rank 0
    only, closed at its true count (:mod:`neurolens_lightning.progress`).

    Example:
        >>> trainer = pl.Trainer(callbacks=[ValidationProgress()], enable_progress_bar=False)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.bar: Bar | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, AblationModule):
            desc = f"ablation round 1 [{pl_module.plan.method}]"
        else:
            desc = f"scoring [{getattr(getattr(pl_module, 'concept', None), 'name', type(pl_module).__name__)}]"
        total = sum(int(n) for n in trainer.num_val_batches if n != float("inf"))
        self.bar = progress_bar(total, desc, enabled=trainer.is_global_zero)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.bar is not None:
            self.bar.update()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:  # runs before the module's epoch end (the ablation's null rounds draw their own)
            self.bar.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.bar is not None:
            self.bar.close(completed=False)


def _build_trainer(cfg: Any, logger: Any, out: Path, progress: bool = False) -> pl.Trainer:
    """The validate-only ``Trainer`` of the config's ``trainer`` section (``inference_mode=False``: importance
    takes gradients); with ``progress`` and without Lightning's own bar, a :class:`ValidationProgress`."""
    tc = cfg.trainer
    trainer_kwargs: dict[str, Any] = {"inference_mode": False, "logger": logger, "accelerator": tc.accelerator,
                                      "devices": tc.devices, "enable_progress_bar": tc.enable_progress_bar,
                                      "enable_model_summary": False, "enable_checkpointing": False,
                                      "default_root_dir": str(out)}
    if tc.precision:
        trainer_kwargs["precision"] = tc.precision
    if progress and not tc.enable_progress_bar:
        trainer_kwargs["callbacks"] = [ValidationProgress()]
    return pl.Trainer(**trainer_kwargs)


def _validate_ablation(trainer: pl.Trainer, module: ProbeModule, progress: bool = False) -> list[dict[str, Any]]:
    """The second validate: an :class:`AblationModule` tests the scored neurons on the held-out split (a model
    without an output head gets its probe head fitted there); records its time in the result's timings."""
    result = module.result
    t3 = time.perf_counter()
    ablation = AblationModule.from_scoring(result, module.scoring, progress=progress)
    ablation_metrics = trainer.validate(ablation, verbose=False)
    result.timings["ablation"] = time.perf_counter() - t3
    return ablation_metrics


def _save_and_log(cfg: Any, trainer: pl.Trainer, logger: Any, result: ScanResult, out: "Path | Output") -> None:
    """Rank 0: save the result (results.json + report.html) and, with a W&B logger and ``log_report``, log the
    report's charts, table and page to the run."""
    result.settings.update({"runner": "lightning Trainer.validate (neurolens eval)", "logger": cfg.logger.kind,
                            "world_size": trainer.world_size})
    out = result.save(out, report=cfg.report, keep=(LOGS,))  # the logger's files stay in the folder
    if isinstance(logger, WandbLogger) and cfg.logger.log_report and _wandb_mode(cfg.logger.mode) != "disabled":
        data = result.to_dict()  # logged from memory (what results.json holds)
        report = out / "report.html"
        log_scan_to_wandb(data, report_path=report if report.exists() else None, run=logger,
                          step=trainer.global_step)
