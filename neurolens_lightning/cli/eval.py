"""``neurolens eval``: a concept-scoring run as a Lightning ``Trainer.validate``, logged to CSV or W&B.

    neurolens eval --config configs/eval_minilm.yaml [key=value ...]
    neurolens eval --config configs/eval_minilm.yaml layers=[4,5] ablate=true null_samples=100

The run itself is :func:`neurolens_lightning.training.eval.run_eval` (imported, with Lightning, only when the
command runs); this module holds the command's flags and its printed summary.
"""

from __future__ import annotations

import argparse
from typing import Any

from neurolens_lightning.cli.common import add_command


#: the command's line in ``neurolens --help`` and the description of ``neurolens eval --help``
HELP = "score a concept as a Lightning Trainer.validate run, logging to CSV or W&B"
DESCRIPTION = ("Score a concept with ProbeModule under lightning.Trainer(inference_mode=False).validate, log the "
               "headline metrics to the configured logger (csv or wandb) and save results.json + report.html. With "
               "ablate=true the neurons are ranked on one split of the probe and a second validate (AblationModule) "
               "ablates the top-k on the held-out split.")


#: what each headline scalar the eval run logs means (printed beside its value)
SCALARS = {
    "neurolens/n_significant_fdr": "neurons selective at the FDR level, either sign",
    "neurolens/top_selectivity": "mean selectivity d (concept vs control) of the top-k candidates",
    "neurolens/top_consistency": "mean consistency of the top-k candidates across phrasing groups (0..1)",
    "neurolens/top_score": "combined score of the best-ranked neuron",
    "ablation/joint_delta": "change of y when the tested candidates are ablated together",
    "ablation/joint_beyond_null": "1 when that joint change is beyond random sets of the same size and layers",
    "ablation/joint_p_null": "its p-value against those random sets",
    "ablation/n_causal": "tested neurons whose ablation moves y beyond random neurons of their layer",
    "ablation/n_validated": "candidates that are selective and causal (VALIDATED)",
    "ablation/n_suppressors_validated": "suppressors validated for a rise of y",
}


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "eval", cmd_eval, help=HELP, description=DESCRIPTION)
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (EvalConfig), merged in order")
    p.add_argument("--out", help="output folder (default reports/eval-<model>-<concept>-<timestamp>/)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. layers=[5] logger.kind=wandb)")


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
    from neurolens_lightning.config import EvalConfig, load_config  # lazy: keeps neurolens --help fast
    from neurolens_lightning.training.eval import run_eval  # lazy: keeps neurolens --help fast

    updates = {"out": args.out} if args.out else None
    cfg = load_config(EvalConfig, args.config, list(args.overrides or []), updates)
    info = run_eval(cfg, progress=True)  # bars on stderr, rank 0 only
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
    shown = [(k, v) for k, v in sorted(scalars.items()) if ":" not in k]
    if shown:
        print("logged scalars:")
    for k, v in shown:
        print(f"  {k} = {v:.4g}" + (f"  ({SCALARS[k]})" if k in SCALARS else ""))
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
            import wandb  # lazy: keeps neurolens --help fast

            if wandb.run is not None:
                wandb.finish()
        except Exception:  # pragma: no cover
            pass
    return 0
