"""The ``neurolens`` command.

    neurolens scan --model minilm --concept royalty --layers 3 4 5 --top-k 10 [--ablate] [--out DIR]
    neurolens scan --config configs/scan.yaml model=minilm top_k=20
    neurolens concepts
    neurolens compare --models minilm minilm:random --concept negation     (runs neurolens_lightning.compare)
    neurolens eval --config configs/eval_minilm.yaml                         (neurolens_lightning.training.eval)

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
from typing import Any, Mapping, Sequence

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import ScanSettings, parse_neuron


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


def _add_runtime_flags(p: argparse.ArgumentParser, tokenizer_help: str) -> None:
    """Flags shared by scan and compare: tokenizer, device, download, importance, batch size."""
    p.add_argument("--tokenizer", help=tokenizer_help)
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--download", action="store_true", default=None, help="allow downloading hub weights")
    p.add_argument("--no-importance", action="store_false", dest="importance", default=None,
                   help="skip the gradient x activation pass")
    p.add_argument("--batch-size", type=int, dest="batch_size")


def _add_scan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    p.add_argument("--model", help="registry name (minilm, smollm2, gemma3-270m, gpt2, gpt2-medium, bert-base-uncased, "
                                   "roberta-base, resnet18, resnet50), a local model folder or .gguf file")
    p.add_argument("--concept", help="built-in concept name (see `neurolens concepts`) or a probe JSON path")
    p.add_argument("--layers", type=int, nargs="+", help="layer indices to scan (default: all)")
    p.add_argument("--top-k", type=int, dest="top_k", help="number of candidates to report / ablate")
    p.add_argument("--ablate", action="store_true", default=None, help="validate candidates by ablation")
    p.add_argument("--ablation", choices=["interchange", "zero", "mean", "resample"],
                   help="intervention (default interchange: does the model use the neuron's concept-dependent "
                        "activity; zero/mean/resample: is the neuron necessary for y)")
    p.add_argument("--null-samples", type=int, dest="null_samples", help="random neurons per layer for the null")
    p.add_argument("--neurons", nargs="+", help="explicit neurons to ablate, as LAYER:INDEX (alone: only these are "
                   "tested; with --ablate: the top-k too)")
    p.add_argument("--suppressors", type=int, help="with --ablate, also test this many top suppressors (default 0; "
                   "they join the one Holm family, so the null grows with them)")
    p.add_argument("--direction", choices=["importance", "drop", "rise"],
                   help="direction a --neurons neuron is tested in (default importance: the sign of its importance, "
                        "with every null neuron signed by its own; drop / rise: as you state)")
    p.add_argument("--out", help="output folder (default reports/<model>-<concept>-<timestamp>/)")
    p.add_argument("--weights", choices=["pretrained", "random"], help="pretrained (default) or random init")
    p.add_argument("--arch", help="architecture of a .pt/.pth state dict (resnet18|resnet50)")
    p.add_argument("--site", help="any other text model: its neurons as 'PATTERN[:input|:output]', a glob over "
                   "module names ('*' = one path component; default :output), e.g. "
                   "'model.layers.*.mlp.down_proj:input'")
    _add_runtime_flags(p, tokenizer_help="tokenizer directory (for local models / weights=random)")
    p.add_argument("--wandb", action="store_true", default=None, help="also log to Weights & Biases")
    p.add_argument("--cross-concept", action="store_true", default=None, dest="cross_concept",
                   help="also score the candidates on every other built-in concept of the modality")
    p.add_argument("--also", nargs="+", help="extra probes (names or JSON paths) for the cross-concept matrix")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=20 wandb.enabled=true)")


_FLAG_KEYS = ["model", "concept", "layers", "top_k", "ablate", "ablation", "null_samples", "neurons", "out",
              "weights", "arch", "tokenizer", "device", "download", "importance", "batch_size", "cross_concept", "also"]


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


def _join_distributed_launch() -> str | None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join its process group (NCCL on CUDA, else gloo)
    so that ``scan`` shares its work across the ranks; returns this rank's device, or None outside a launch."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if not dist.is_initialized():
        if device != "cpu":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return device


def cmd_scan(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import ScanConfig, load_config

    cfg = load_config(ScanConfig, args.config, list(args.overrides) + _flags_to_dotlist(args),
                      {"site": args.site} if getattr(args, "site", None) else None)  # verbatim: ':' '*' in it
    from neurolens_lightning.api import scan

    # --neurons alone tests just those; with --ablate the top-k too
    settings = ScanSettings.from_any(cfg, test_top_k=cfg.test_top_k and (cfg.ablate or not cfg.neurons)).check()
    device = None if cfg.device == "auto" else cfg.device
    launched = _join_distributed_launch()
    if launched is not None and device is None:
        device = launched
    result = scan(model=cfg.model, concept=cfg.concept, tokenizer=cfg.tokenizer, weights=cfg.weights, arch=cfg.arch,
                  device=device, download=cfg.download, progress=True, image_size=cfg.image_size,
                  cross_concept=cfg.cross_concept, also=list(cfg.also), site=cfg.site, settings=settings)
    from neurolens_lightning.distributed import dist_context

    if dist_context()[0] != 0:  # every rank holds the result; rank 0 alone writes and reports it
        return 0
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
    summ = result.ablation_summary
    # the split sizes: which examples ranked the neurons, and which inputs the ablation ran on
    examples = (f"examples: {len(result.concept.positive)} concept and {len(result.concept.negative)} control examples "
                "ranked the neurons")
    if summ is not None:
        examples += f"; the ablation ran on {summ.get('split') or 'the same examples'}"
    print(examples)
    print(f"{result.n_significant_fdr} neurons selective at FDR q<={result.fdr_q:g}; {s.n_candidates} candidates and "
          f"{s.n_suppressors} suppressors (positively selective, layer-scaled d >= {result.min_selectivity:g})")
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
        print(f"\nablation ({summ['method']}: {summ.get('question', '')}):\n  of {summ['n_tested']} tested neurons "
              f"(Holm over all of them): {summ['n_validated'] + summ['n_suppressors_validated']} VALIDATED "
              f"(selective and causal: {summ['n_validated']} of {summ['n_candidates']} candidates, "
              f"{summ['n_suppressors_validated']} of {summ['n_suppressors']} suppressors), "
              f"{summ.get('n_causal_not_candidate', 0)} CAUSAL, NOT A CANDIDATE, {summ.get('n_not_causal', 0)} NOT "
              f"CAUSAL; y = {summ['y']}, minimum effect {summ['min_effect']:g}")
        named = [(k, a) for k, a in result.ablation.items() if a.get("tested_as") == "named"]
        for (l, i), a in named:
            print(f"  named {l}:{i} (tested for a {a['direction']}): Δ={a['delta']:.3g} [{a['ci_low']:.3g},"
                  f"{a['ci_high']:.3g}] p={a['p_value']:.3g} (Holm {a['p_holm']:.3g}) {a['verdict'].upper()}")
        if summ.get("joint_p_null") is not None:
            print(f"  joint set of {summ['joint_size']}: Δ={summ['joint_delta']:.3g} against random sets of the same "
                  f"size and layers p={summ['joint_p_null']:.3g} ({summ['joint_null_n']} sets): "
                  f"{'BEYOND' if summ['joint_beyond_null'] else 'NOT BEYOND'} THE NULL")
    for w in result.all_warnings():
        print(f"warning: {w}")
    t = {k: v for k, v in result.timings.items() if isinstance(v, (int, float))}
    if t:
        total = t.pop("total", None)
        parts = [f"{k.replace('_', ' ')} {v:.3g} s" for k, v in t.items()]
        total_s = (f"total {total:.3g} s" if total is not None else f"total (sum of the stages) {sum(t.values()):.3g} s")
        print("time: " + ", ".join(parts + [total_s]))
    print(f"\nwrote {out / 'results.json'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else ""))


def cmd_concepts(args: argparse.Namespace) -> int:
    from neurolens_lightning.concepts import builtin_concept_names, load_concept

    print(f"{'name':<12} {'modality':<8} {'groups':>6} {'positive':>8} {'negative':>8} {'tasks':>5}  description")
    for name in builtin_concept_names():
        c = load_concept(name)
        print(f"{name:<12} {c.modality:<8} {len(c.group_names):>6} {len(c.positive):>8} {len(c.negative):>8} "
              f"{len(c.tasks):>5}  {c.description}")
    return 0


# ---------------------------------------------------------------------------- compare
def default_compare_out_dir(concept: str) -> Path:
    from neurolens_lightning.compare import _slug as compare_slug

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"compare-{compare_slug(Path(concept).stem)}-{stamp}"


def _add_compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (CompareConfig), merged in order")
    p.add_argument("--models", nargs="+", help="two or more models: NAME or NAME:WEIGHTS (e.g. minilm minilm:random)")
    p.add_argument("--concept", help="built-in concept name or probe JSON path")
    p.add_argument("--weights", choices=["pretrained", "random"], help="weights of models given without :WEIGHTS")
    p.add_argument("--top-k", type=int, dest="top_k", help="top neurons per model (ablated with --ablate)")
    p.add_argument("--ablate", action="store_true", default=None, help="validate each model's top-k by ablation")
    p.add_argument("--ablation", choices=["interchange", "zero", "mean", "resample"],
                   help="intervention (default interchange: does the model use the neuron's concept-dependent "
                        "activity; zero/mean/resample: is the neuron necessary for y)")
    p.add_argument("--null-samples", type=int, dest="null_samples", help="random neurons per layer for the null")
    p.add_argument("--grid", type=int, help="points of the common relative-depth grid (default 21)")
    p.add_argument("--out", help="output folder (default reports/compare-<concept>-<timestamp>/)")
    _add_runtime_flags(p, tokenizer_help="tokenizer directory (random-weight GPT-2/RoBERTa)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=5 grid=41)")


_COMPARE_FLAG_KEYS = ["concept", "weights", "top_k", "out", "device", "tokenizer", "grid", "batch_size", "ablation",
                      "null_samples", "ablate", "download", "importance"]


def cmd_compare(args: argparse.Namespace) -> int:
    from neurolens_lightning.compare import compare
    from neurolens_lightning.config import CompareConfig, load_config

    models = list(args.models or [])
    overrides = list(args.overrides or [])
    # argparse's nargs="+" swallows trailing key=value overrides: give them back
    overrides += [m for m in models if "=" in m]
    models = [m for m in models if "=" not in m]
    updates: dict[str, Any] = {"models": models} if models else {}
    for key in _COMPARE_FLAG_KEYS:
        val = getattr(args, key, None)
        if val is not None:
            updates[key] = val
    cfg = load_config(CompareConfig, args.config, overrides, updates)
    if len(cfg.models) < 2:
        raise NeuroLensError(f"compare needs at least two models (--models A B, or models=[A,B]), got {cfg.models}")
    out = Path(cfg.out) if cfg.out else default_compare_out_dir(cfg.concept)
    comp = compare(cfg.models, cfg.concept, out=out, weights=cfg.weights, grid=cfg.grid, tokenizer=cfg.tokenizer,
                   device=None if cfg.device == "auto" else cfg.device, download=cfg.download, report=cfg.report,
                   progress=True, settings=ScanSettings.from_any(cfg))
    _print_comparison(comp, out)
    return 0


def _print_comparison(comp: Mapping[str, Any], out: Path) -> None:
    print(f"\nconcept '{comp.get('concept')}' in {len(comp['models'])} models (layers aligned by relative depth)")
    print(f"{'model':<28} {'layers':>6} {'selective+':>10} {'peak depth':>10} {'centre':>7}  validated")
    for m in comp["models"]:
        pk = "-" if m.get("peak_rel_depth") is None else f"{m['peak_rel_depth']:.2f}"
        ce = "-" if m.get("mean_rel_depth") is None else f"{m['mean_rel_depth']:.2f}"
        val = "" if m.get("n_validated") is None else f"{m['n_validated']}/{m.get('n_ablated')}"
        print(f"{str(m['name'])[:28]:<28} {m['n_layers']:>6} {m['n_significant_positive']:>10} {pk:>10} {ce:>7}  {val}")
    for p in comp["divergence"]["pairs"]:
        js = "undefined" if p["js"] is None else f"{p['js']:.4f} bits"
        print(f"JS divergence {p['a']} vs {p['b']}: {js}")
    print(f"\nwrote {out / 'comparison.json'} and {out / 'report.html'} (per-model scans in {out / 'models'})")


def cmd_steer(args: Any) -> int:
    """``neurolens steer``: the dose-response of chosen (or validated) neurons against random neurons, saved as
    steering.json + page."""
    from neurolens_lightning.steering import dose_response, neurons_from_results, scan_split

    if bool(args.neurons) == bool(args.from_results):
        raise NeuroLensError("neurolens steer: pass either --neurons L:I [L:I ...] or --from RESULTS.json (the "
                             "validated neurons of an earlier scan with --ablate)")
    source: dict[str, Any] = {}
    seed = 0 if args.seed is None else args.seed
    holdout = 0.5 if args.holdout is None else args.holdout
    inputs = "heldout" if args.inputs == "auto" else args.inputs
    direction = 1
    if args.from_results:
        neurons, data = neurons_from_results(args.from_results, which=args.which)
        split = scan_split(data)
        # the scan's own split (explicit --seed/--holdout override it): its held-out inputs validated the neurons
        seed = split["seed"] if args.seed is None else args.seed
        holdout = split["holdout"] if args.holdout is None else args.holdout
        if args.inputs == "auto":
            inputs = "ranking" if split["ablated"] and holdout > 0 else "heldout"
        direction = -1 if args.which == "suppressors" else 1
        source = {"from": str(args.from_results), "which": args.which, "scan_seed": split["seed"],
                  "scan_holdout": split["holdout"], "scan_split_recorded": split["recorded"],
                  "scan_ablated": split["ablated"]}
        model = args.model or data.get("model")
        concept = args.concept or data.get("concept")
        src = (data.get("concept_info") or {}).get("source") or ""
        if not args.concept and src.split(" [")[0].endswith(".json"):
            concept = src.split(" [")[0]  # a custom probe: the file it came from
    else:
        neurons = [parse_neuron(n) for n in args.neurons]
        model, concept = args.model, args.concept
    if args.direction:
        direction = 1 if args.direction == "up" else -1
    if not model or not concept:
        raise NeuroLensError("neurolens steer: --model and --concept are needed (or --from a scan's results.json)")
    if args.null_sets < 1:
        raise NeuroLensError(f"neurolens steer: --null-sets must be >= 1 (199 gives p down to 0.005), got "
                             f"{args.null_sets}")
    mode = "set" if args.set else "mean" if args.mean else "scale"
    scales = args.set if args.set else args.scales
    res = dose_response(model, concept, neurons, scales=scales, mode=mode, tokenizer=args.tokenizer,
                        weights=args.weights, device=None if args.device in (None, "auto") else args.device,
                        holdout=holdout, seed=seed, inputs=inputs, direction=direction, null_sets=args.null_sets,
                        n_examples=args.examples, max_new_tokens=args.tokens, progress=True)
    res.extra["source"] = source
    out = Path(args.out) if args.out else Path("reports") / f"steer-{Path(str(model)).name}-{Path(str(concept)).stem}"
    res.save(out)
    d = res.to_dict()
    print(f"\n{d['model']} · concept '{d['concept']}' · neurons "
          + " ".join(f"{n['layer']}:{n['index']}" for n in d["neurons"]) + f" · {d['split']}")
    print(f"y = {d['y']}")
    print(f"{'setting':>10} {'concept y [95% CI]':>32} {'control y':>10}")
    con, ctl = d["concept_inputs"], d["control_inputs"]
    for k, label in enumerate(d["labels"]):
        c = f"{con['mean_y'][k]:.4g} [{con['ci_low'][k]:.4g}, {con['ci_high'][k]:.4g}]" if con["mean_y"] else "-"
        print(f"{label:>10} {c:>32} {ctl['mean_y'][k] if ctl['mean_y'] else float('nan'):>10.4g}")
    t = d.get("test") or {}
    if t.get("beyond_null") is not None:  # one line: the verdict against random neurons
        word = "BEYOND random neurons" if t["beyond_null"] else "not beyond random neurons"
        spec = "" if t.get("p_null_specific") is None else f"; concept-vs-control p_null = {t['p_null_specific']:.3g}"
        print(f"verdict: {word} (beyond_null={t['beyond_null']}, p_null = {t['p_null']:.3g} against null_n = "
              f"{t['null_n']} random sets of the same size and layers, direction {t['direction']:+d}); effect "
              f"{t['effect']:.4g} [{t['effect_ci_low']:.4g}, {t['effect_ci_high']:.4g}] vs null median "
              f"{t['null_effect_quantiles']['q50']:.3g}; wrong-direction share {t['wrong_direction_share']:.0%} "
              f"({t['wrong_direction_n']}/{t['n_concept_inputs']}){spec}")
        print(f"descriptive only: trend {t['trend_direction']}, Page's test p = {t['p_trend']:.3g}"
              + (f"; Mann-Whitney (per-input slopes) p = {t['p_specific']:.3g}, {t['mw_side']}"
                 if "p_specific" in t else ""))
    elif t:
        print(f"verdict: none ({t.get('definition')})")
    print(f"\nwrote {out / 'steering.json'} and {out / 'steering.html'}")
    return 0


def _add_steer_parser(subparsers: Any) -> None:
    """``neurolens steer`` (its module, with torch, is imported only when the command runs)."""
    p = subparsers.add_parser(
        "steer", help="dose-response: scale chosen or validated neurons, judged against random neurons",
        description="Multiply the chosen neurons' activations by each scale (or set them) on concept and control "
                    "inputs; write steering.json and steering.html with y per scale (95%% CI), the verdict (is "
                    "the effect, y at the highest minus the lowest scale on concept inputs, beyond random sets of "
                    "the same size from the same layers? one-sided p_null) and before/after outputs.")
    p.add_argument("--model", help="registry name or path (default with --from: the scan's model)")
    p.add_argument("--concept", help="built-in concept or probe JSON (default with --from: the scan's concept)")
    p.add_argument("--neurons", nargs="+", help="neurons to steer together, as LAYER:INDEX")
    p.add_argument("--from", dest="from_results", help="an earlier scan's results.json (or its folder)")
    p.add_argument("--which", choices=["validated", "suppressors", "candidates"], default="validated",
                   help="with --from: its neurons validated for a drop (default; direction up), for a rise "
                        "(suppressors; direction down) or its top-k candidates")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0],
                   help="scales (default 0 0.5 1 2 4)")
    p.add_argument("--set", type=float, nargs="+", help="set the neurons to these values instead of scaling "
                   "(compared with the clean model; no verdict)")
    p.add_argument("--mean", action="store_true", help="set the neurons to their mean activation (vs clean; no "
                   "verdict)")
    p.add_argument("--direction", choices=["up", "down"],
                   help="predicted effect of turning the neurons up: up = y rises (default; --which suppressors: "
                        "down)")
    p.add_argument("--null-sets", type=int, default=199,
                   help="at most this many random sets in the null (sequential: 19 first, doubling; default 199, "
                        "p down to 0.005)")
    p.add_argument("--inputs", choices=["auto", "heldout", "ranking"], default="auto",
                   help="which split to steer on: auto (default) = with --from a scan that ablated, its ranking "
                        "split (disjoint from the held-out inputs that validated the neurons), else held-out")
    p.add_argument("--examples", type=int, default=4, help="concept inputs shown before/after (default 4)")
    p.add_argument("--tokens", type=int, default=8, help="length of greedy continuations (GPT-2, default 8)")
    p.add_argument("--holdout", type=float, default=None,
                   help="held-out fraction (default: with --from the scan's, else 0.5)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: with --from the scan's, else 0)")
    p.add_argument("--tokenizer", help="tokenizer directory (local models)")
    p.add_argument("--weights", choices=["pretrained", "random"], default="pretrained")
    p.add_argument("--device", help="cpu, cuda or auto (default)")
    p.add_argument("--out", help="output folder (default reports/steer-<model>-<concept>/)")
    p.set_defaults(func=cmd_steer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurolens", description="Find, validate and report concept neurons.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_scan = sub.add_parser("scan", help="score neurons for a concept (and optionally ablate the top-k)")
    _add_scan_flags(p_scan)
    p_scan.set_defaults(func=cmd_scan)
    p_con = sub.add_parser("concepts", help="list the built-in concepts")
    p_con.set_defaults(func=cmd_concepts)
    p_cmp = sub.add_parser(
        "compare", help="the same probe on several models, layers aligned by relative depth",
        description="Scan one concept in several models and compare where along the depth each encodes it. "
                    "Models: NAME or NAME:WEIGHTS (WEIGHTS = pretrained | random), e.g. --models minilm "
                    "minilm:random.")
    _add_compare_flags(p_cmp)
    p_cmp.set_defaults(func=cmd_compare)
    _add_steer_parser(sub)
    _register_optional_commands(sub)
    return parser


def _register_optional_commands(sub: Any) -> None:
    """Commands defined in other modules (eval) register themselves here when present."""
    for modname in ("neurolens_lightning.training.eval",):
        try:
            mod = __import__(modname, fromlist=["register_cli"])
        except ImportError:
            continue
        if hasattr(mod, "register_cli"):
            mod.register_cli(sub)


# commands that run without torch / transformers: they start fast, so transformers is not imported for them
_LIGHT_COMMANDS = frozenset({"concepts"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, before any heavy import
    if args.command not in _LIGHT_COMMANDS:
        _quiet_libraries()  # imports transformers (about a second): only for the commands that load models
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
