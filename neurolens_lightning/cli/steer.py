"""``neurolens steer``: the dose-response of chosen (or validated) neurons, judged against random neurons.

    neurolens steer --model minilm --concept royalty --neurons 4:1251 --scales 0 1 4
    neurolens steer --from reports/minilm-royalty-.../results.json [--which validated|suppressors|candidates]

Writes steering.json + steering.html (the module, with torch, is imported only when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neurolens_lightning.io import default_out
from neurolens_lightning.cli.common import (add_command, add_output_flags, print_notes, print_published,
                                            quiet_libraries)
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import parse_neuron


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "steer", cmd_steer,
        help="dose-response: scale chosen or validated neurons, judged against random neurons",
        description="Multiply the chosen neurons' activations by each scale (or set them) on concept and control "
                    "inputs; write steering.json and steering.html with y per scale (95% CI), the verdict (is "
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
    add_output_flags(p, "reports/steer-<model>-<concept>-<timestamp>/")


def cmd_steer(args: argparse.Namespace) -> int:
    """``neurolens steer``: the dose-response of chosen (or validated) neurons against random neurons, saved as
    steering.json + page."""
    plan = _steer_plan(args)
    model, concept = plan["model"], plan["concept"]
    out = Path(args.out) if args.out else default_out("steer", model, concept)  # timestamped, as scan's
    output = _preflight(args, plan, out)  # every check that needs no model: one line and exit 2, nothing started
    quiet_libraries()
    from neurolens_lightning.steering import dose_response  # lazy: keeps neurolens --help fast

    mode = "set" if args.set else "mean" if args.mean else "scale"
    scales = args.set if args.set else args.scales
    res = dose_response(model, concept, plan["neurons"], scales=scales, mode=mode, tokenizer=args.tokenizer,
                        weights=args.weights, device=None if args.device in (None, "auto") else args.device,
                        holdout=plan["holdout"], seed=plan["seed"], inputs=plan["inputs"],
                        direction=plan["direction"], null_sets=args.null_sets, n_examples=args.examples,
                        max_new_tokens=args.tokens, progress=True)
    res.extra["source"] = plan["source"]
    out = res.save(output)
    _print_steering(res.to_dict(), out)
    print_published(output, out)
    return 0


def _preflight(args: argparse.Namespace, plan: dict[str, Any], out: Path) -> Any:
    """The checks of ``steer`` that need no model: names, probe and split, neurons, output folder."""
    from neurolens_lightning.catalog import model_facts  # no torch
    from neurolens_lightning.concepts import load_concept
    from neurolens_lightning.io import check_out
    from neurolens_lightning.preflight import check_layers, check_modality, check_units

    facts = model_facts(plan["model"], site=None)
    probe = load_concept(plan["concept"])
    check_modality(facts, probe)
    if not 0 <= plan["holdout"] < 1:
        raise NeuroLensError(f"neurolens steer: --holdout must be in [0, 1), got {plan['holdout']}")
    if plan["holdout"] > 0:
        probe.split(plan["holdout"], seed=plan["seed"])  # a probe too small for the split fails here
    check_layers(sorted({l for l, _ in plan["neurons"]}), facts.n_layers, facts.name, what="neuron layer(s)")
    check_units(plan["neurons"], facts)
    output = check_out(out, overwrite=bool(args.overwrite))
    print_notes(output)
    return output


def _steer_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The model, concept, neurons, split (seed, holdout, inputs), direction and source of a steer run: from the
    flags, or from an earlier scan's results.json (``--from``; explicit flags win). Bad input raises here."""
    from neurolens_lightning.schema import neurons_from_results, scan_split

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
    return {"model": model, "concept": concept, "neurons": neurons, "seed": seed, "holdout": holdout,
            "inputs": inputs, "direction": direction, "source": source}


def _print_steering(d: dict[str, Any], out: Path) -> None:
    """The dose-response table (y per setting on concept and control inputs) and the one-line verdict."""
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
