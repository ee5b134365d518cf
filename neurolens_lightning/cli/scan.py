"""``neurolens scan``: score every neuron of a model for a concept, optionally test the top-k by ablation.

    neurolens scan --model minilm --concept royalty --layers 3 4 5 --top-k 10 [--ablate] [--out DIR]
    neurolens scan --config configs/scan.yaml model=minilm top_k=20

Under ``torchrun`` the ranks share the work; rank 0 writes the result folder and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from neurolens_lightning.io import default_out
from neurolens_lightning.cli.common import (add_ablation_flags, add_command, add_output_flags, add_runtime_flags,
                                            print_notes, print_published, quiet_libraries)
from neurolens_lightning.preflight import preflight
from neurolens_lightning.settings import ScanSettings


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "scan", cmd_scan,
                    help="score neurons for a concept (and optionally ablate the top-k)")
    _add_scan_flags(p)


def default_out_dir(model: str, concept: str) -> Path:
    """``reports/<model>-<concept>-<timestamp>`` (:func:`neurolens_lightning.io.default_out`)."""
    return default_out("", model, concept)


def _add_scan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    p.add_argument("--model", help="registry name (minilm, smollm2, gemma3-270m, gpt2, gpt2-medium, bert-base-uncased, "
                                   "roberta-base, resnet18, resnet50), a local model folder or .gguf file")
    p.add_argument("--concept", help="built-in concept name (see `neurolens concepts`) or a probe JSON path")
    p.add_argument("--layers", type=int, nargs="+", help="layer indices to scan (default: all)")
    add_ablation_flags(p, top_k_help="number of candidates to report / ablate",
                       ablate_help="validate candidates by ablation")
    p.add_argument("--neurons", nargs="+", help="explicit neurons to ablate, as LAYER:INDEX (alone: only these are "
                   "tested; with --ablate: the top-k too)")
    p.add_argument("--suppressors", type=int, help="with --ablate, also test this many top suppressors (default 0; "
                   "they join the one Holm family, so the null grows with them)")
    p.add_argument("--direction", choices=["importance", "drop", "rise"],
                   help="direction a --neurons neuron is tested in (default importance: the sign of its importance, "
                        "with every null neuron signed by its own; drop / rise: as you state)")
    add_output_flags(p, "reports/<model>-<concept>-<timestamp>/")
    p.add_argument("--weights", choices=["pretrained", "random"], help="pretrained (default) or random init")
    p.add_argument("--arch", help="architecture of a .pt/.pth state dict (resnet18|resnet50)")
    p.add_argument("--site", help="any other text model: its neurons as 'PATTERN[:input|:output]', a glob over "
                   "module names ('*' = one path component; default :output), e.g. "
                   "'model.layers.*.mlp.down_proj:input'")
    add_runtime_flags(p, tokenizer_help="tokenizer directory (for local models / weights=random)")
    p.add_argument("--wandb", action="store_true", default=None, help="also log to Weights & Biases")
    p.add_argument("--cross-concept", action="store_true", default=None, dest="cross_concept",
                   help="also score the candidates on every other built-in concept of the modality")
    p.add_argument("--also", nargs="+", help="extra probes (names or JSON paths) for the cross-concept matrix")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=20 wandb.enabled=true)")


_FLAG_KEYS = ["model", "concept", "layers", "top_k", "ablate", "ablation", "null_samples", "neurons", "suppressors",
              "direction", "out", "overwrite", "weights", "arch", "tokenizer", "device", "download", "importance",
              "batch_size", "cross_concept", "also"]


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
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch  # lazy: keeps neurolens --help fast
    import torch.distributed as dist  # lazy: keeps neurolens --help fast

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if not dist.is_initialized():
        if device != "cpu":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return device


def cmd_scan(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import ScanConfig, load_config  # lazy: keeps neurolens --help fast

    cfg = load_config(ScanConfig, args.config, list(args.overrides) + _flags_to_dotlist(args),
                      {"site": args.site} if getattr(args, "site", None) else None)  # verbatim: ':' '*' in it
    # --neurons alone tests just those; with --ablate the top-k too
    settings = ScanSettings.from_any(cfg, test_top_k=cfg.test_top_k and (cfg.ablate or not cfg.neurons)).check()
    writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 alone writes the folder
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg.model, cfg.concept)
    # every check that needs no model, before any heavy import: one line and exit 2, nothing started
    pf = preflight(cfg.model, cfg.concept, settings, arch=cfg.arch, site=cfg.site, also=list(cfg.also),
                   out=out if writer else None, overwrite=cfg.overwrite)
    print_notes(pf.output)
    quiet_libraries()
    from neurolens_lightning.api import scan  # lazy: keeps neurolens --help fast
    from neurolens_lightning.distributed import dist_context  # lazy: keeps neurolens --help fast

    device = None if cfg.device == "auto" else cfg.device
    launched = _join_distributed_launch()
    if launched is not None and device is None:
        device = launched
    result = scan(model=cfg.model, concept=cfg.concept, tokenizer=cfg.tokenizer, weights=cfg.weights, arch=cfg.arch,
                  device=device, download=cfg.download, progress=True, image_size=cfg.image_size,
                  cross_concept=cfg.cross_concept, also=list(cfg.also), site=cfg.site, settings=settings)
    if dist_context()[0] != 0:  # every rank holds the result; rank 0 alone writes and reports it
        return 0
    out = result.save(pf.output or out, report=cfg.report)
    _print_summary(result, out)
    print_published(pf.output, out)
    if cfg.wandb.enabled:
        from neurolens_lightning.report import log_scan_to_wandb, wandb_run_for  # lazy: keeps neurolens --help fast

        run = wandb_run_for(cfg.wandb, name=out.name)
        if run is not None:
            report = out / "report.html"  # the result logged from memory; the files as the run's artifact
            log_scan_to_wandb(result.to_dict(), report_path=report if report.exists() else None, run=run,
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
    cc = (getattr(result, "extra", None) or {}).get("cross_concept")
    if cc and cc.get("concepts"):  # scan --cross-concept / --also: which neurons serve other concepts too
        shared, n = cc.get("shared") or [], len(cc.get("neurons") or [])
        print(f"\ncross-concept ({len(cc['concepts'])} concepts: {', '.join(cc['concepts'])}; selective = FDR q <= "
              f"{cc['q_threshold']:.4g}, layer-scaled d >= {result.min_selectivity:g}):")
        if shared:
            print(f"  {len(shared)} of {n} neurons are selective for more than one concept (check before steering):")
            for r in shared:
                print(f"  {str(r['layer']) + ':' + str(r['index']):>12}  selective for {', '.join(r['selective_for'])}")
        else:
            print(f"  none of the {n} neurons is selective for more than one of these concepts")
        if cc.get("own_row_is_selection_data"):
            print(f"  note: the {cc.get('own_concept')} row is scored on the examples that selected the neurons "
                  "(its d is inflated by the selection)")
    for w in result.all_warnings():
        print(f"warning: {w}")
    t = {k: v for k, v in result.timings.items() if isinstance(v, (int, float))}
    if t:
        total = t.pop("total", None)
        parts = [f"{k.replace('_', ' ')} {v:.3g} s" for k, v in t.items()]
        total_s = (f"total {total:.3g} s" if total is not None else f"total (sum of the stages) {sum(t.values()):.3g} s")
        print("time: " + ", ".join(parts + [total_s]))
    print(f"\nwrote {out / 'results.json'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else ""))
