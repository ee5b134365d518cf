""":func:`dose_response`: y at each scale on concept and control inputs, the null test, readable outputs.

Example:
    >>> res = dose_response("minilm", "royalty", [(1, 1035)])                   # doctest: +SKIP
    >>> res.to_dict()["test"]["beyond_null"], res.to_dict()["test"]["p_null"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from neurolens_lightning.ablation import ablation_inputs, bootstrap_ci, y_description
from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.functional.trend import monotonic_test
from neurolens_lightning.guards import untouched, user_objects
from neurolens_lightning.hooks import eval_mode
from neurolens_lightning.progress import note
from neurolens_lightning.registry import load_model
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.settings import ScanSettings
from neurolens_lightning.steering.intervention import _sites_for, steer
from neurolens_lightning.steering.null import _null_open, draw_null_sets, null_sets_design, null_test
from neurolens_lightning.steering.readout import _examples
from neurolens_lightning.steering.replicas import _ReplicaSteering, _task_items
from neurolens_lightning.steering.result import SteeringResult

__all__ = ["dose_response", "DEFAULT_SCALES", "INPUTS", "SCHEMA_VERSION"]

DEFAULT_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
SCHEMA_VERSION = 1
INPUTS = ("heldout", "ranking")


def dose_response(model: "str | Path | nn.Module | ModelAdapter", concept: "str | Path | Concept | dict[str, Any]",
                  neurons: Sequence[tuple[int, int]], scales: Sequence[float] = DEFAULT_SCALES, *,
                  mode: str = "scale", value: float | None = None, tokenizer: Any = None, weights: str = "pretrained",
                  device: "str | torch.device | None" = None, holdout: float = 0.5, seed: int = 0,
                  inputs: str = "heldout", direction: int = 1, null_sets: int = 199, h: int = 10,
                  batch_size: int = 16, replicas: int = 16, n_boot: int = 1000, n_examples: int = 4,
                  max_new_tokens: int = 8, alpha: float = 0.05, progress: bool = False,
                  settings: "ScanSettings | None" = None) -> SteeringResult:
    """y on concept and control inputs at each scale, the verdict against random neurons, readable outputs.

    Args:
        model, concept: as for :func:`neurolens_lightning.scan` (the same split: ``holdout``,
            ``seed``; the probe head, where y needs one, is fitted on the ranking split).
        neurons: the ``(layer, index)`` pairs steered together.
        scales: the factors (``mode="scale"``). ``mode="set"`` compares the clean model with the
            neurons set to each value of ``scales``; ``mode="mean"`` compares the clean model
            with the neurons set to their mean activation over the ranking split. The null and the
            trend test run for ``mode="scale"`` only.
        inputs: ``"heldout"`` (default) steers on the held-out split, ``"ranking"`` on the ranking
            split — disjoint from the held-out inputs on which a scan with the same ``seed`` and
            ``holdout`` validated its neurons.
        direction: +1 (default) when turning the neurons up is predicted to raise y (neurons
            validated for a drop), −1 when it is predicted to lower y (validated for a rise).
        null_sets: the most random sets of the same size and layers in the null (sampled
            sequentially: 19 first, doubling while fewer than ``h`` reach the observed effect).
        replicas: steerings per forward (the batch is replicated; more = fewer, larger forwards).
        n_examples: concept inputs shown with before/after outputs.
        max_new_tokens: length of the greedy continuations (GPT-2).
        progress: progress bars on stderr (:mod:`neurolens_lightning.progress`; the CLI turns them on): the
            activation pass, the steered forwards, each round of the null (announced with its bound) and
            the before/after outputs.
        settings: the :class:`~neurolens_lightning.settings.ScanSettings` of the scan that chose the neurons:
            its ``holdout``, ``seed`` and ``batch_size`` give the same split (``holdout``, ``seed`` and
            ``batch_size`` above, where they differ from their defaults, override them).
    """
    scales = _checked_scales(mode, scales, inputs, direction, null_sets, h)
    st = ScanSettings.resolve(settings, {"holdout": holdout, "seed": seed, "batch_size": batch_size})
    holdout, seed, batch_size = st.holdout, st.seed, st.batch_size
    neurons = list(dict.fromkeys((int(l), int(i)) for l, i in neurons))
    concept_obj = load_concept(concept)
    with untouched(*user_objects(model, tokenizer)):  # the user's module, tokenizer and RNGs as they were
        adapter = load_model(model, tokenizer=tokenizer, weights=weights, device=device, seed=seed)
        _sites_for(adapter, neurons)
        rank, held = concept_obj.split(holdout, seed=seed) if holdout > 0 else (concept_obj, concept_obj)
        on = held if inputs == "heldout" else rank
        scanner = ConceptScanner(adapter, rank, batch_size=batch_size, progress=progress)
        scanner.run_activation_pass()
        scanner.fit_head()
        steerings = _settings(mode, scales, scanner, neurons)
        run = partial(_run_steered, adapter, neurons)
        chunks = ablation_inputs(adapter, scanner, on, batch_size, seed)
        if mode == "scale" and adapter.family != "resnet":  # text: less padding in the many replicated forwards
            chunks = _length_sorted(scanner, chunks, batch_size)
        with torch.no_grad(), eval_mode(adapter.model):
            if mode == "scale":
                y_con, y_ctl, test = _scale_and_null(adapter, scanner, chunks, neurons, scales, direction, null_sets,
                                                     h, replicas, alpha, n_boot, seed, progress)
            else:
                y_con, y_ctl, test = _fixed_settings(adapter, scanner, chunks, steerings, run, mode, direction, alpha)
            examples = _examples(adapter, scanner, on, neurons, steerings, run, n_examples, max_new_tokens,
                                 progress)
        data = {
            "schema_version": SCHEMA_VERSION, "model": adapter.name, "model_info": adapter.describe(),
            "concept": concept_obj.name, "mode": mode, "scales": scales if mode == "scale" else [],
            "labels": [s["label"] for s in steerings],
            "neurons": [{"layer": int(l), "index": int(i)} for l, i in neurons],
            "y": y_description(scanner), "inputs": inputs if holdout > 0 else "all", "seed": int(seed),
            "holdout": float(holdout),
            "split": _split_text(inputs, holdout, seed, y_con.shape[1], y_ctl.shape[1], rank, held, scanner),
            "concept_inputs": _block(y_con, n_boot, seed), "control_inputs": _block(y_ctl, n_boot, seed),
            "test": test, "examples": examples,
        }
    return SteeringResult(data)


def _checked_scales(mode: str, scales: Sequence[float], inputs: str, direction: int, null_sets: int, h: int
                    ) -> list[float]:
    """The scales as floats, after checking every argument of :func:`dose_response` that needs no model."""
    if mode not in ("scale", "set", "mean"):
        raise NeuroLensError(f"steering mode must be scale, set or mean, got {mode!r}")
    if inputs not in INPUTS:
        raise NeuroLensError(f"steering inputs must be 'heldout' or 'ranking', got {inputs!r}")
    if direction not in (1, -1):
        raise NeuroLensError(f"steering direction must be +1 (turning up raises y) or -1 (lowers it), got "
                             f"{direction!r}")
    if null_sets < 1:
        raise NeuroLensError(f"null_sets must be >= 1 (199 gives p down to 0.005), got {null_sets}")
    if h < 1:
        raise NeuroLensError(f"h (exceedances that stop the sequential null) must be >= 1, got {h}")
    scales = [float(s) for s in scales]
    if mode == "scale" and len(scales) < 2:
        raise NeuroLensError("a dose-response needs at least 2 scales (e.g. 0 0.5 1 2 4)")
    if mode == "scale" and min(scales) == max(scales):
        raise NeuroLensError(f"a dose-response needs two different scales, got {scales}")
    if mode == "set" and not scales:
        raise NeuroLensError("mode 'set' needs at least one value to set the neurons to")
    return scales


def _settings(mode: str, scales: list[float], scanner: Any, neurons: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """One steering per column of the result: ``{"label", "scale"}`` (multiply) or ``{"label", "value"}`` (set)."""
    if mode == "mean":
        mean_act = scanner.mean_activation.compute().cpu()
        flat = [scanner.offsets[scanner.layers.index(l)] + i for l, i in neurons]
        return [{"label": "clean", "scale": 1.0}, {"label": "mean", "value": mean_act[flat].float()}]
    if mode == "set":
        return [{"label": "clean", "scale": 1.0}] + [{"label": f"set {v:g}", "value": v} for v in scales]
    return [{"label": f"×{s:g}", "scale": s} for s in scales]


def _run_steered(adapter: ModelAdapter, neurons: list[tuple[int, int]], fn_batch: Callable[[], Any],
                 setting: dict[str, Any]) -> Any:
    """``fn_batch()`` under one steering of :func:`_settings` (set to its value, or multiplied by its scale)."""
    if "value" in setting:
        with steer(adapter, neurons, value=setting["value"]):
            return fn_batch()
    with steer(adapter, neurons, scale=setting["scale"]):
        return fn_batch()


def _fixed_settings(adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
                    steerings: list[dict[str, Any]], run: Callable[..., Any], mode: str, direction: int, alpha: float
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """y of modes ``set`` and ``mean`` at every setting, and their null-free test (no verdict)."""
    ys: dict[str, list[np.ndarray]] = {"concept": [], "control": []}
    for kind, items in chunks:
        batch = scanner.encode_confidence(items, tasks=_task_items(scanner, items)).to(adapter.device)
        batch = adapter.fix_targets(batch, adapter.forward(batch))  # own-prediction targets: the clean top-1
        rows = [run(lambda: adapter.confidence(batch, adapter.forward(batch), scanner.head).float().cpu(), st)
                for st in steerings]
        ys[kind].append(torch.stack(rows).double().numpy())
    y_con = np.concatenate(ys["concept"], axis=1) if ys["concept"] else np.zeros((len(steerings), 0))
    y_ctl = np.concatenate(ys["control"], axis=1) if ys["control"] else np.zeros((len(steerings), 0))
    test = {"null": "none", "null_free": True, "beyond_null": None, "p_null": None, "null_n": 0,
            "direction": direction,
            "alpha": alpha,
            "definition": (f"mode {mode!r} has no random-neuron null (the predicted sign of "
                           "y(setting) - y(clean) depends on each neuron's own activations), so this test is "
                           "null-free and gives no verdict; use mode 'scale' for a verdict against random "
                           "sets of the same size and layers")}
    return y_con, y_ctl, test


def null_rounds_bound(null_sets: int) -> int:
    """At most how many rounds the sequential null of :func:`dose_response` runs: 19 sets (or ``null_sets``)
    first, then doubling up to ``null_sets``.

    Example:
        >>> null_rounds_bound(199)   # 19, 38, 76, 152, 199
        5
    """
    have, rounds = min(19, null_sets), 1
    while have < null_sets:
        have, rounds = min(null_sets, 2 * have), rounds + 1
    return rounds


def _block(y: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """steering.json's ``concept_inputs`` / ``control_inputs``: n, mean y per setting and its bootstrap CI."""
    lo, hi = _ci(y, n_boot, seed)
    return {"n": int(y.shape[1]), "mean_y": [float(v) for v in y.mean(1)] if y.shape[1] else [],
            "ci_low": lo, "ci_high": hi}


def _ci(y: np.ndarray, n_boot: int, seed: int) -> tuple[list[float], list[float]]:
    if y.shape[1] == 0:
        return [math.nan] * y.shape[0], [math.nan] * y.shape[0]
    lo, hi = bootstrap_ci(torch.from_numpy(y), n_boot=n_boot, seed=seed)
    return [float(v) for v in lo], [float(v) for v in hi]


def _length_sorted(scanner: Any, chunks: Sequence[tuple[str, list[Any]]], size: int) -> list[tuple[str, list[Any]]]:
    """The same inputs, each kind sorted by its encoded length and re-chunked by ``size`` (less padding)."""
    out: list[tuple[str, list[Any]]] = []
    for kind in ("concept", "control"):
        items = [it for k, c in chunks if k == kind for it in c]
        lens = []
        for it in items:
            ids = scanner.encode_confidence([it], tasks=_task_items(scanner, [it])).inputs.get("input_ids")
            lens.append(0 if ids is None else int(ids.shape[-1]))
        items = [items[i] for i in sorted(range(len(items)), key=lambda i: lens[i])]
        out += [(kind, items[i:i + size]) for i in range(0, len(items), size)]
    return out


def _split_text(inputs: str, holdout: float, seed: int, n_con: int, n_ctl: int, rank: Concept, held: Concept,
                scanner: Any) -> str:
    """Which inputs were steered, in words (steering.json ``split``)."""
    head = "the probe head" if scanner.head is not None else ""
    if holdout <= 0:
        return (f"all examples of the probe ({n_con} concept and {n_ctl} control inputs; holdout 0: the same "
                "examples rank and validate neurons, so no inputs are disjoint from them)")
    where = f"seed {seed}, holdout {holdout:g}"
    if inputs == "ranking":
        return (f"ranking split of the probe ({where}: {n_con} concept and {n_ctl} control inputs), disjoint from "
                f"the {len(held.positive)} + {len(held.negative)} held-out examples on which a scan with this split "
                "validates its neurons; a scan ranks its neurons on these inputs"
                + (f", and {head} is fitted on them" if head else ""))
    return (f"held-out split of the probe ({where}: {n_con} concept and {n_ctl} control inputs)"
            + (f"; {head} and the mean activations come from the other {len(rank.positive)} + {len(rank.negative)} "
               "examples" if head else f"; the mean activations come from the other {len(rank.positive)} + "
               f"{len(rank.negative)} examples")
            + "; a scan with this split validates its neurons on these same inputs")


def _scale_and_null(adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
                    neurons: Sequence[tuple[int, int]], scales: Sequence[float], direction: int, null_sets: int,
                    h: int, replicas: int, alpha: float, n_boot: int, seed: int, progress: bool
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """y of the steered set at every scale and the null test of its effect (mode ``scale``)."""
    runner = _ReplicaSteering(adapter, scanner, chunks, [l for l, _ in neurons], replicas=replicas)
    n = len(neurons)
    most = null_rounds_bound(null_sets)
    note(f"steering: {len(scales)} scales on {len(chunks)} input chunks; then the null: random sets of {n} neuron"
         f"{'s' if n != 1 else ''} steered at x{min(scales):g} and x{max(scales):g}, {min(19, null_sets)} sets first, "
         f"doubling while the p-value is not settled: at most {most} round{'s' if most != 1 else ''} and "
         f"{null_sets} sets", progress)
    ys = runner.run([(neurons, s) for s in scales], progress=progress,
                    desc=f"steering [{n} neuron{'s' if n != 1 else ''} x {len(scales)} scales]")
    y_con, y_ctl = ys["concept"], ys["control"]
    lo_k, hi_k = int(np.argmin(scales)), int(np.argmax(scales))
    s_lo, s_hi = scales[lo_k], scales[hi_k]
    e_con, e_ctl = y_con[hi_k] - y_con[lo_k], y_ctl[hi_k] - y_ctl[lo_k]
    has_ctl = e_ctl.shape[0] > 0
    T = direction * float(e_con.mean()) if len(e_con) else math.nan
    T_spec = direction * (float(e_con.mean()) - float(e_ctl.mean())) if has_ctl and len(e_con) else math.nan

    counts, pools = null_sets_design([s.units for s in adapter.sites], neurons)
    rng = random.Random(seed)
    null_con: list[float] = []
    null_spec: list[float] = []
    warnings: list[str] = []
    target = min(19, null_sets)
    spec_open = has_ctl and len(e_con) > 0
    r = 0
    try:
        while len(e_con) and len(null_con) < null_sets:
            sets = draw_null_sets(counts, pools, target - len(null_con), rng)
            kinds = ("concept", "control") if spec_open else ("concept",)
            r += 1
            got = runner.run([(st, s) for st in sets for s in (s_lo, s_hi)], kinds=kinds, progress=progress,
                             desc=f"null round {r} of at most {most} [{len(sets)} random sets of {n}, "
                                  f"{len(null_con) + len(sets)} of at most {null_sets}]")
            gc = got["concept"]
            ec = gc[1::2] - gc[0::2]  # [sets, n_concept]
            null_con += (direction * ec.mean(1)).tolist()
            if spec_open:
                gt = got["control"]
                null_spec += (direction * (ec.mean(1) - (gt[1::2] - gt[0::2]).mean(1))).tolist()
                spec_open = _null_open(T_spec, null_spec, h)
            if not _null_open(T, null_con, h) and not spec_open:
                break
            target = min(null_sets, 2 * len(null_con))
    except NeuroLensError as e:  # a layer too small to draw random sets from
        warnings.append(str(e))
    runner.cache.clear()
    # the contrast's sequence may be shorter (its p settled first: later rounds measured concept inputs only)
    test = null_test(e_con, e_ctl if has_ctl else None, null_con, null_spec if has_ctl else None, direction, alpha,
                     h, n_boot, seed)
    if not null_con:
        test.update(beyond_null=False, p_null=1.0)
    desc = monotonic_test(y_con, y_ctl, scales, alpha)
    per_layer = ", ".join(f"{c} from layer {l}" for l, c in counts.items())
    test.update({
        "null": "random sets of the same size from the same layers", "null_free": False,
        "scale_low": s_lo, "scale_high": s_hi, "null_sets_max": int(null_sets),
        "null_design": {"size": n, "per_layer": {str(l): c for l, c in counts.items()}},
        "verdict": "beyond random neurons" if test["beyond_null"] else "not beyond random neurons",
        **desc,
        "definition": (
            f"verdict = beyond_null: p_null <= alpha. Per input, effect e = y(x{s_hi:g}) - y(x{s_lo:g}); "
            f"T = direction x mean of e over the concept inputs (direction {direction:+d}: turning the neurons up is "
            f"predicted to {'raise' if direction > 0 else 'lower'} y); p_null = one-sided sequential empirical p "
            f"(Besag-Clifford, h = {h}, 19 sets first, doubling, at most {null_sets}) of T among random sets of "
            f"{n} neuron{'s' if n != 1 else ''} ({per_layer}; never a steered neuron) steered identically on the "
            "same inputs. Secondary: p_null_specific, the same for direction x (mean concept e - mean control e). "
            "wrong_direction_share = share of concept inputs with direction x e < 0. Descriptive only, no verdict: "
            "Page's L trend test across the scales, each input a block, two-sided (p_trend; monotonic = mean y "
            "strictly ordered by the scale and p_trend < alpha), and a two-sided Mann-Whitney test of the per-input "
            "slopes of y on the scale, concept vs control inputs (p_specific; mw_side = which side's slopes are "
            "larger)"),
        "warnings": warnings,
    })
    # the contract's direction is the predicted sign (+1/-1); the trend's word is trend_direction
    test["direction"] = 1 if direction >= 0 else -1
    return y_con, y_ctl, test
