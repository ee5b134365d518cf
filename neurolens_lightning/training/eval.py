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

import argparse
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import ScanSettings, parse_neuron

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


def _check_neuron_spelling(cfg: Any) -> None:
    """Named neurons are quoted "L:I" strings: YAML 1.1 reads an unquoted 5:17 as the base-60 integer 317."""
    for spec in cfg.neurons:
        try:
            parse_neuron(spec)
        except NeuroLensError as e:
            if str(spec).strip().isdigit():
                raise NeuroLensError(f"{e}; write neurons as quoted strings, e.g. neurons=[\"5:17\"] (YAML reads "
                                     "an unquoted 5:17 as the base-60 number 317)") from None
            raise


def run_eval(cfg: Any) -> dict[str, Any]:
    """Run one eval (see the module docstring).

    Returns ``{"out", "result", "logger", "metrics", "ablation_metrics", "global_zero"}``: ``metrics``
    are the scoring run's logged scalars, ``ablation_metrics`` the ablation run's (empty without
    ``ablate``); ``global_zero`` is False on the other ranks of a DDP run (only rank 0 saves).
    """
    import time

    import lightning.pytorch as pl

    from neurolens_lightning.concepts import load_concept
    from neurolens_lightning.training.modules import AblationModule, ProbeModule
    from neurolens_lightning.registry import load_model

    t_start = time.perf_counter()
    settings = ScanSettings.from_any(cfg)
    _check_neuron_spelling(cfg)
    settings.check()
    ablate = settings.tests_causally  # naming neurons asks for their ablation, as in `neurolens scan`
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    if out.exists() and not out.is_dir():
        raise NeuroLensError(f"output {str(out)!r} exists and is not a folder")
    # everything that can fail on user input happens before the logger creates a folder
    concept = load_concept(cfg.concept)
    # the adapter is loaded here (as `neurolens scan` does) so random weights are drawn from `seed`
    adapter = load_model(cfg.model, tokenizer=cfg.tokenizer, weights=cfg.weights, device="cpu", seed=cfg.seed)
    module = ProbeModule(adapter, concept, weights=cfg.weights, settings=settings)  # checks layers and neurons
    datamodule = module.datamodule()
    t_loaded = time.perf_counter()
    logger = make_logger(cfg, out)
    tc = cfg.trainer
    trainer_kwargs: dict[str, Any] = {"inference_mode": False, "logger": logger, "accelerator": tc.accelerator,
                                      "devices": tc.devices, "enable_progress_bar": tc.enable_progress_bar,
                                      "enable_model_summary": False, "enable_checkpointing": False,
                                      "default_root_dir": str(out)}
    if tc.precision:
        trainer_kwargs["precision"] = tc.precision
    trainer = pl.Trainer(**trainer_kwargs)
    t0 = time.perf_counter()
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)
    t_scored = time.perf_counter()
    result = module.result
    if result is None:  # pragma: no cover - validate always runs the epoch end
        raise NeuroLensError("the validation run produced no result")
    result.timings.update({"load_model": t_loaded - t_start, "scoring": t_scored - t0})
    ablation_metrics: list[dict[str, Any]] = []
    if ablate:  # (a model without an output head gets its probe head fitted by AblationModule)
        t3 = time.perf_counter()
        ablation_metrics = trainer.validate(AblationModule.from_scoring(result, module.scoring), verbose=False)
        result.timings["ablation"] = time.perf_counter() - t3
    result.timings["total"] = time.perf_counter() - t_start
    if trainer.is_global_zero:
        result.settings.update({"runner": "lightning Trainer.validate (neurolens eval)", "logger": cfg.logger.kind,
                                "world_size": trainer.world_size})
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
    return {"out": out, "result": result, "logger": logger, "metrics": metrics[0] if metrics else {},
            "ablation_metrics": ablation_metrics[0] if ablation_metrics else {},
            "global_zero": trainer.is_global_zero}


def _print_ablation(result: Any, n_show: int = 10) -> None:
    """The ablation verdicts: how many validated, and Δ / p / verdict of the first tested neurons."""
    summ = result.ablation_summary
    if summ is None:
        return
    print(f"\nablation ({summ['method']}) on {summ.get('split')}: validated {summ['n_validated']} of "
          f"{summ['n_candidates']} candidates and {summ['n_suppressors_validated']} of {summ['n_suppressors']} "
          f"suppressors; {summ.get('n_causal_not_candidate', 0)} causal, not a candidate; "
          f"{summ.get('n_not_causal', 0)} not causal ({summ['n_tested']} neurons tested"
          f"{', ' + str(summ['n_named']) + ' named' if summ.get('n_named') else ''}); "
          f"y = {summ['y']}, minimum effect {summ['min_effect']:g}")
    if summ.get("question"):
        print(f"  question: {summ['question']}")
    if summ.get("joint_delta") is not None:
        beyond = summ.get("joint_beyond_null")
        vs = ("" if beyond is None else
              f"; {'beyond' if beyond else 'NOT beyond'} {summ.get('joint_null_n')} random sets of the same size, "
              f"p = {summ.get('joint_p_null') or float('nan'):.3g}")
        print(f"  joint Δ = {summ['joint_delta']:.4g} [{summ['joint_ci_low']:.4g}, {summ['joint_ci_high']:.4g}] "
              f"({summ.get('joint_size', 0)} neurons intervened on together{vs})")
    items = list(result.ablation.items())
    for (l, i), ab in items[:n_show]:
        dc = "-" if ab["delta_control"] is None else f"{ab['delta_control']:.3g}"
        print(f"  {str(l) + ':' + str(i):>10} {ab['tested_as']:<10} Δ={ab['delta']:.4g} "
              f"[{ab['ci_low']:.3g},{ab['ci_high']:.3g}] control Δ={dc} p={ab['p_value']:.3g} "
              f"(Holm {ab['p_holm']:.3g}) {ab['verdict'].upper()}"
              + (f" - {ab['reasons'][0]}" + (f" (+{len(ab['reasons']) - 1} more)" if len(ab['reasons']) > 1 else "")
                 if ab.get("reasons") and not ab.get("validated") else ""))
    if len(items) > n_show:
        print(f"  ... and {len(items) - n_show} more tested neurons (results.json)")


def cmd_eval(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import EvalConfig, load_config

    updates = {"out": args.out} if args.out else None
    cfg = load_config(EvalConfig, args.config, list(args.overrides or []), updates)
    info = run_eval(cfg)
    if not info.get("global_zero", True):
        return 0  # DDP: rank 0 saved the result and prints it
    result, logger, out = info["result"], info["logger"], info["out"]
    print(f"\n{result.model.get('name')} · concept '{result.concept.name}' · layers {result.layers} · "
          f"{result.n_significant_fdr} neurons selective at FDR q<={result.fdr_q}")
    print(f"examples: {result.settings.get('split')}")
    for c in result.candidates(min(5, result.top_k)):
        print(f"  #{c['rank']:<3} {c['layer']}:{c['index']:<6} d={c['selectivity']:.3f} "
              f"consistency={c['consistency']:.3f} score={c['score']:.3f}")
    # the headline scalars (the per-neuron ablation/... metrics are in the log and in results.json)
    scalars = {**info["metrics"], **info.get("ablation_metrics", {})}
    for k, v in sorted(scalars.items()):
        if ":" not in k:
            print(f"  {k} = {v:.4g}")
    _print_ablation(result)
    t = {k: v for k, v in result.timings.items() if isinstance(v, (int, float)) and k != "total"}
    if t:
        print("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g} s" for k, v in t.items())
              + (f", total {result.timings['total']:.3g} s" if "total" in result.timings else ""))
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
                    "report.html. With ablate=true the neurons are ranked on one split of the probe and a "
                    "second validate (AblationModule) ablates the top-k on the held-out split.")
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (EvalConfig), merged in order")
    p.add_argument("--out", help="output folder (default reports/eval-<model>-<concept>-<timestamp>/)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. layers=[5] logger.kind=wandb)")
    p.set_defaults(func=cmd_eval)
