"""``neurolens compare``: one concept in several models, layers aligned by relative depth.

    neurolens compare --models minilm minilm:random --concept negation     (runs neurolens_lightning.compare)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from neurolens_lightning.io import default_out
from neurolens_lightning.cli.common import (add_ablation_flags, add_command, add_output_flags, add_runtime_flags,
                                            print_notes, print_published, quiet_libraries)
from neurolens_lightning.compare import compare
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import ScanSettings


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "compare", cmd_compare, help="the same probe on several models, layers aligned by relative depth",
        description="Scan one concept in several models and compare where along the depth each encodes it. "
                    "Models: NAME or NAME:WEIGHTS (WEIGHTS = pretrained | random), e.g. --models minilm "
                    "minilm:random.")
    _add_compare_flags(p)


def default_compare_out_dir(concept: str) -> Path:
    """``reports/compare-<concept>-<timestamp>`` (:func:`neurolens_lightning.io.default_out`)."""
    return default_out("compare", concept)


def _add_compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) (CompareConfig), merged in order")
    p.add_argument("--models", nargs="+", help="two or more models: NAME or NAME:WEIGHTS (e.g. minilm minilm:random)")
    p.add_argument("--concept", help="built-in concept name or probe JSON path")
    p.add_argument("--weights", choices=["pretrained", "random"], help="weights of models given without :WEIGHTS")
    add_ablation_flags(p, top_k_help="top neurons per model (ablated with --ablate)",
                       ablate_help="validate each model's top-k by ablation")
    p.add_argument("--grid", type=int, help="points of the common relative-depth grid (default 21)")
    add_output_flags(p, "reports/compare-<concept>-<timestamp>/")
    add_runtime_flags(p, tokenizer_help="tokenizer directory (random-weight GPT-2/RoBERTa)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. top_k=5 grid=41)")


_COMPARE_FLAG_KEYS = ["concept", "weights", "top_k", "out", "overwrite", "device", "tokenizer", "grid", "batch_size", "ablation",
                      "null_samples", "ablate", "download", "importance"]


def cmd_compare(args: argparse.Namespace) -> int:
    from neurolens_lightning.config import CompareConfig, load_config  # lazy: keeps neurolens --help fast

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
    output = _preflight(cfg, out)  # every check that needs no model: one line and exit 2, nothing started
    quiet_libraries()
    comp = compare(cfg.models, cfg.concept, out=output, weights=cfg.weights, grid=cfg.grid, tokenizer=cfg.tokenizer,
                   device=None if cfg.device == "auto" else cfg.device, download=cfg.download, report=cfg.report,
                   progress=True, settings=ScanSettings.from_any(cfg))
    out = output.published or out
    _print_comparison(comp, out)
    print_published(output, out)
    return 0


def _preflight(cfg: Any, out: Path) -> Any:
    """The checks of ``compare`` that need no model (names, probe, split, settings, layers, output folder)."""
    from neurolens_lightning.compare import _check_modalities, _static_modality, parse_model_spec  # no torch
    from neurolens_lightning.concepts import load_concept
    from neurolens_lightning.io import check_out

    st = ScanSettings.from_any(cfg).check()
    probe = load_concept(cfg.concept)
    specs = [parse_model_spec(m, cfg.weights) for m in cfg.models]
    _check_modalities([s.label for s in specs], [_static_modality(s) for s in specs], probe)
    st.split(probe)
    output = check_out(out, overwrite=cfg.overwrite)
    print_notes(output)
    return output


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
