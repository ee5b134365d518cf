"""``neurolens eval``: a standalone concept-scoring run as a Lightning ``Trainer.validate``.

    neurolens eval --config configs/eval_minilm.yaml [key=value ...]
    neurolens eval --config configs/eval_minilm.yaml layers=[5] logger.kind=wandb

The run builds a :class:`~neurolens_lightning.modules.ProbeModule`, validates it with
``lightning.Trainer(inference_mode=False, logger=..., ...)`` on ``module.datamodule()``
(importance needs gradients, hence ``inference_mode=False``), logs the headline scalars
(``neurolens/n_significant_fdr``, ``neurolens/top_selectivity`` ...) to the configured
Lightning logger and saves ``module.result`` to the output folder (``results.json`` +
``report.html``).

Loggers (``logger.kind``): ``csv`` (default; ``CSVLogger`` writing
``<save_dir>/<name>/version_N/metrics.csv``, ``save_dir`` default ``<out>/logs``) or
``wandb`` (``WandbLogger``; ``logger.mode`` None = ``WANDB_MODE`` if set, else online when an
API key is configured and offline otherwise; with ``log_report`` the report's charts, the
candidate table and the page are logged too).

Example:
    >>> from neurolens_lightning.config import EvalConfig, load_config
    >>> cfg = load_config(EvalConfig, overrides=["layers=[5]", "out=reports/eval"])   # doctest: +SKIP
    >>> run_eval(cfg)                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from neurolens_lightning.errors import NeuroLensError

__all__ = ["make_logger", "run_eval", "register_cli"]


def _default_out(cfg: Any) -> Path:
    import re

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = lambda t: re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(t).name or t).strip("_") or "x"  # noqa: E731
    return Path("reports") / f"eval-{slug(cfg.model)}-{slug(Path(cfg.concept).stem)}-{stamp}"


def _wandb_mode(mode: str | None) -> str:
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    from neurolens_lightning.report.wandb_logging import _api_key_configured

    return "online" if _api_key_configured() else "offline"


def make_logger(cfg: Any, out: str | Path) -> Any:
    """The Lightning logger of an :class:`~neurolens_lightning.config.EvalConfig` (its ``logger`` section).

    Returns a ``CSVLogger`` or a ``WandbLogger`` (offline unless an API key is configured or
    ``logger.mode`` says otherwise); ``save_dir`` defaults to ``<out>/logs``.
    """
    lc = cfg.logger
    save_dir = Path(lc.save_dir) if lc.save_dir else Path(out) / "logs"
    if lc.kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name=lc.name, version=lc.version)
    if lc.kind == "wandb":
        try:
            from lightning.pytorch.loggers import WandbLogger
        except ImportError as e:  # pragma: no cover
            raise NeuroLensError(f"logger.kind=wandb needs wandb (pip install wandb): {e}") from None
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


def run_eval(cfg: Any) -> dict[str, Any]:
    """Run one eval (see the module docstring); returns ``{"out", "result", "logger", "metrics"}``."""
    import lightning.pytorch as pl

    from neurolens_lightning.modules import ProbeModule

    if cfg.top_k < 1:
        raise NeuroLensError(f"top_k must be >= 1, got {cfg.top_k}")
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    if out.exists() and not out.is_dir():
        raise NeuroLensError(f"output {str(out)!r} exists and is not a folder")
    # everything that can fail on user input happens before the logger creates a folder
    module = ProbeModule(cfg.model, cfg.concept, layers=cfg.layers, tokenizer=cfg.tokenizer,
                         importance=cfg.importance, baseline=cfg.baseline, top_k=cfg.top_k,
                         batch_size=cfg.batch_size, fdr_q=cfg.fdr_q, weights=cfg.weights)
    datamodule = module.datamodule()
    logger = make_logger(cfg, out)
    tc = cfg.trainer
    trainer_kwargs: dict[str, Any] = {"inference_mode": False, "logger": logger, "accelerator": tc.accelerator,
                                      "devices": tc.devices, "enable_progress_bar": tc.enable_progress_bar,
                                      "enable_model_summary": False, "enable_checkpointing": False,
                                      "default_root_dir": str(out)}
    if tc.precision:
        trainer_kwargs["precision"] = tc.precision
    trainer = pl.Trainer(**trainer_kwargs)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)
    result = module.result
    if result is None:  # pragma: no cover - validate always runs the epoch end
        raise NeuroLensError("the validation run produced no result")
    if trainer.is_global_zero:
        result.model = {**result.model, "weights": cfg.weights}
        result.settings.update({"batch_size": cfg.batch_size, "pooling": module.adapter.pooling,
                                "runner": "lightning Trainer.validate (neurolens eval)",
                                "logger": cfg.logger.kind})
        result.save(out, report=cfg.report)
        try:
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:  # pragma: no cover
            WandbLogger = ()  # type: ignore[assignment]
        if WandbLogger and isinstance(logger, WandbLogger) and cfg.logger.log_report and \
                _wandb_mode(cfg.logger.mode) != "disabled":
            from neurolens_lightning.report import log_scan_to_wandb

            data = json.loads((out / "results.json").read_text(encoding="utf-8"))
            report = out / "report.html"
            log_scan_to_wandb(data, report_path=report if report.exists() else None, run=logger,
                              step=trainer.global_step)
    return {"out": out, "result": result, "logger": logger, "metrics": metrics[0] if metrics else {}}


def cmd_eval(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import EvalConfig, load_config

    updates = {"out": args.out} if args.out else None
    cfg = load_config(EvalConfig, args.config, list(args.overrides or []), updates)
    info = run_eval(cfg)
    result, logger, out = info["result"], info["logger"], info["out"]
    print(f"\n{result.model.get('name')} · concept '{result.concept.name}' · layers {result.layers} · "
          f"{result.n_significant_fdr} neurons selective at FDR q<={result.fdr_q}")
    for c in result.candidates(min(5, result.top_k)):
        print(f"  #{c['rank']:<3} {c['layer']}:{c['index']:<6} d={c['selectivity']:.3f} "
              f"consistency={c['consistency']:.3f} score={c['score']:.3f}")
    for k, v in sorted(info["metrics"].items()):
        print(f"  {k} = {v:.4g}")
    log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    print(f"\nwrote {out / 'results.json'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else "")
          + f"; {type(logger).__name__} logs in {log_dir}")
    if cfg.logger.kind == "wandb":
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except Exception:  # pragma: no cover
            pass
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``neurolens eval`` to the ``neurolens`` command."""
    p = subparsers.add_parser(
        "eval", help="score a concept as a Lightning Trainer.validate run, logging to CSV or W&B",
        description="Score a concept with ProbeModule under lightning.Trainer(inference_mode=False).validate, log "
                    "the headline metrics to the configured logger (csv or wandb) and save results.json + "
                    "report.html.")
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (EvalConfig), merged in order")
    p.add_argument("--out", help="output folder (default reports/eval-<model>-<concept>-<timestamp>/)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. layers=[5] logger.kind=wandb)")
    p.set_defaults(func=cmd_eval)
