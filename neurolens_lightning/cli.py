"""The ``neurolens`` command.

    neurolens scan --model minilm --concept royalty --layers 3 4 5 --top-k 10 [--ablate] [--out DIR]
    neurolens scan --config configs/scan.yaml model=minilm top_k=20
    neurolens concepts
    neurolens compare --models minilm minilm:random --concept negation     (neurolens_lightning.compare)
    neurolens eval --config configs/eval_minilm.yaml                         (neurolens_lightning.eval_run)

Every user error prints one line (``neurolens: error: ...``) and exits with status 2;
nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from neurolens_lightning.errors import NeuroLensError


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name or text).strip("_") or "model"


def default_out_dir(model: str, concept: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"{_slug(model)}-{_slug(Path(concept).stem)}-{stamp}"


def parse_neuron(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(spec))
    if not m:
        raise NeuroLensError(f"neuron {spec!r} is not LAYER:INDEX (e.g. 2:37)")
    return int(m.group(1)), int(m.group(2))


def _add_scan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    p.add_argument("--model", help="registry name (minilm, gpt2, gpt2-medium, bert-base-uncased, roberta-base, "
                                   "resnet18, resnet50) or a local path")
    p.add_argument("--concept", help="built-in concept name (see `neurolens concepts`) or a probe JSON path")
    p.add_argument("--layers", type=int, nargs="+", help="layer indices to scan (default: all)")
    p.add_argument("--top-k", type=int, dest="top_k", help="number of candidates to report / ablate")
    p.add_argument("--ablate", action="store_true", default=None, help="validate candidates by ablation")
    p.add_argument("--ablation", choices=["zero", "mean", "resample"], help="ablation method (default zero)")
    p.add_argument("--null-samples", type=int, dest="null_samples", help="random neurons per layer for the null")
    p.add_argument("--neurons", nargs="+", help="explicit neurons to ablate, as LAYER:INDEX")
    p.add_argument("--out", help="output folder (default reports/<model>-<concept>-<timestamp>/)")
    p.add_argument("--weights", choices=["pretrained", "random"], help="pretrained (default) or random init")
    p.add_argument("--arch", help="architecture of a .pt/.pth state dict (resnet18|resnet50)")
    p.add_argument("--tokenizer", help="tokenizer directory (for local models / weights=random)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--download", action="store_true", default=None, help="allow downloading hub weights")
    p.add_argument("--no-importance", action="store_false", dest="importance", default=None,
                   help="skip the gradient x activation pass")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--wandb", action="store_true", default=None, help="also log to Weights & Biases")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=20 wandb.enabled=true)")


_FLAG_KEYS = ["model", "concept", "layers", "top_k", "ablate", "ablation", "null_samples", "neurons", "out",
              "weights", "arch", "tokenizer", "device", "download", "importance", "batch_size"]


def _flags_to_dotlist(args: argparse.Namespace) -> list[str]:
    out = []
    for key in _FLAG_KEYS:
        val = getattr(args, key, None)
        if val is None:
            continue
        out.append(f"{key}={json.dumps(val) if isinstance(val, list) else val}")
    if getattr(args, "wandb", None):
        out.append("wandb.enabled=true")
    return out


def cmd_scan(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import ScanConfig, load_config

    cfg = load_config(ScanConfig, args.config, list(args.overrides) + _flags_to_dotlist(args))
    neurons = [parse_neuron(n) for n in cfg.neurons] or None
    from neurolens_lightning.api import scan

    result = scan(
        model=cfg.model, concept=cfg.concept, layers=cfg.layers, top_k=cfg.top_k, ablate=cfg.ablate or bool(neurons),
        tokenizer=cfg.tokenizer, weights=cfg.weights, arch=cfg.arch, device=None if cfg.device == "auto" else cfg.device,
        download=cfg.download, importance=cfg.importance, baseline=cfg.baseline, pooling=cfg.pooling,
        batch_size=cfg.batch_size, max_neurons=cfg.max_neurons, fdr_q=cfg.fdr_q, ablation=cfg.ablation,
        null_samples=cfg.null_samples, neurons=neurons, holdout=cfg.holdout, seed=cfg.seed, progress=True,
        image_size=cfg.image_size, min_selectivity=cfg.min_selectivity, alpha=cfg.alpha, min_effect=cfg.min_effect,
    )
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg.model, cfg.concept)
    result.save(out, report=cfg.report)
    _print_summary(result, out)
    if cfg.wandb.enabled:
        from neurolens_lightning.report import log_scan_to_wandb, wandb_run_for

        run = wandb_run_for(cfg.wandb, name=out.name)
        if run is not None:
            data = json.loads((out / "results.json").read_text())
            report = out / "report.html"
            log_scan_to_wandb(data, report_path=report if report.exists() else None, run=run,
                              artifact=cfg.wandb.artifact)
            run.finish()
    return 0


def _print_summary(result: Any, out: Path) -> None:
    s = result.scores
    print(f"\n{result.model['name']} · concept '{result.concept.name}' · {len(result.scores.order)} neurons in layers "
          f"{result.layers}")
    print(f"split: {result.settings.get('split', '')}")
    print(f"{result.n_significant_fdr} neurons selective at FDR q<={result.fdr_q:g}; {s.n_candidates} candidates and "
          f"{s.n_suppressors} suppressors (positively selective, layer-scaled d >= {result.min_selectivity:g})")
    summ = result.ablation_summary
    for title, rows in (("candidates", result.candidates()), ("suppressors", result.suppressors())):
        if not rows:
            continue
        print(f"\n{title}:\n{'rank':>4} {'layer:index':>12} {'d [95% CI]':>19} {'d_layer':>7} {'consist.':>8} "
              f"{'importance':>10} {'score':>6}  ablation")
        for c in rows:
            imp = "-" if c["importance"] is None else f"{c['importance']:.4g}"
            ab = c.get("ablation")
            ab_s = "" if not ab else (f"Δ={ab['delta']:.3g} [{ab['ci_low']:.3g},{ab['ci_high']:.3g}] control Δ="
                                      f"{'-' if ab['delta_control'] is None else format(ab['delta_control'], '.3g')} "
                                      f"p={ab['p_value']:.3g} (Holm {ab['p_holm']:.3g}) {ab['verdict'].upper()}")
            d_ci = f"{c['selectivity']:.2f} [{c['selectivity_ci'][0]:.2f},{c['selectivity_ci'][1]:.2f}]"
            print(f"{c['rank']:>4} {str(c['layer']) + ':' + str(c['index']):>12} {d_ci:>19} "
                  f"{c['selectivity_layer']:>7.2f} {c['consistency']:>8.3f} {imp:>10} {c['score']:>6.3f}  {ab_s}")
    if summ is not None:
        print(f"\nablation ({summ['method']}) on {summ['split']}: validated {summ['n_validated']} of "
              f"{summ['n_candidates']} candidates and {summ['n_suppressors_validated']} of {summ['n_suppressors']} "
              f"suppressors; y = {summ['y']}, minimum effect {summ['min_effect']:g}")
    for w in result.all_warnings():
        print(f"warning: {w}")
    print(f"\nwrote {out / 'results.json'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else ""))


def cmd_concepts(args: argparse.Namespace) -> int:
    from neurolens_lightning.concepts import builtin_concept_names, load_concept

    print(f"{'name':<12} {'modality':<8} {'groups':>6} {'positive':>8} {'negative':>8} {'tasks':>5}  description")
    for name in builtin_concept_names():
        c = load_concept(name)
        print(f"{name:<12} {c.modality:<8} {len(c.group_names):>6} {len(c.positive):>8} {len(c.negative):>8} "
              f"{len(c.tasks):>5}  {c.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurolens", description="Find, validate and report concept neurons.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_scan = sub.add_parser("scan", help="score neurons for a concept (and optionally ablate the top-k)")
    _add_scan_flags(p_scan)
    p_scan.set_defaults(func=cmd_scan)
    p_con = sub.add_parser("concepts", help="list the built-in concepts")
    p_con.set_defaults(func=cmd_concepts)
    _register_optional_commands(sub)
    return parser


def _register_optional_commands(sub: Any) -> None:
    """Commands defined in other modules (compare, eval) register themselves here when present."""
    for modname in ("neurolens_lightning.compare", "neurolens_lightning.eval_run"):
        try:
            mod = __import__(modname, fromlist=["register_cli"])
        except ImportError:
            continue
        if hasattr(mod, "register_cli"):
            mod.register_cli(sub)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover
        OmegaConfBaseException = ()  # type: ignore[assignment]
    try:
        return int(args.func(args) or 0)
    except NeuroLensError as e:
        print(f"neurolens: error: {e}", file=sys.stderr)
        return 2
    except OmegaConfBaseException as e:  # type: ignore[misc]
        msg = str(e).strip().splitlines()
        print(f"neurolens: config error: {' | '.join(l.strip() for l in msg if l.strip())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("neurolens: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
