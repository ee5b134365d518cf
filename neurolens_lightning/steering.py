"""Steering: turn chosen neurons down or up and watch the model's outputs move (DESIGN §7).

Two verbs:

* :func:`steer` — a context manager that multiplies the chosen neurons' activations by a
  scale (``scale=0`` is zero ablation, 1 leaves them, > 1 amplifies), or sets them to a value,
  at every position, around any code of yours: ``model.generate(...)``, a classifier forward,
  a torchvision model. The hooks are removed on exit, also when the body raises, so the
  model's outputs afterwards are bit-identical to before.
* :func:`dose_response` — the whole experiment: y on held-out concept and control inputs at
  each scale with bootstrap CIs, a test of whether y moves monotonically with the scale, and
  before/after outputs people can read (GPT-2: target log-prob, top-5 next tokens and a short
  greedy continuation; masked LM: top-5 fills; probe head: p(concept); ResNet: top-5
  classes). Its :class:`SteeringResult` saves ``steering.json`` and ``steering.html``.

Why a dose-response: one zero ablation says "removing it matters"; y rising with the scale on
concept inputs and much less on controls says the neuron *carries* the concept in a
controllable way — stronger causal evidence, and what anyone who wants to intervene needs.

The monotonicity test (:func:`monotonic_test`): Page's L test of an ordered trend across the
scales, each input a block (two-sided), and a Mann-Whitney test of the per-input slopes of y on
the scale, concept against control inputs (specificity). ``monotonic`` = the mean y is strictly
ordered by the scale **and** the trend test has p < alpha.

Example:
    >>> import neurolens_lightning as nl
    >>> with nl.steer(model, [(3, 1125)], scale=4.0):                     # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=10)
    >>> res = nl.dose_response("minilm", "royalty", [(1, 1035)])           # doctest: +SKIP
    >>> res.save("reports/steer-royalty")                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from neurolens_lightning.adapters import ModelAdapter, adapter_for
from neurolens_lightning.concepts import Concept, TextExample, TextTask, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import eval_mode, intervene

DEFAULT_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
SCHEMA_VERSION = 1


def _sites_for(adapter: ModelAdapter, neurons: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """``{site position: [units]}`` for ``(layer, index)`` pairs, validating both."""
    sites = adapter.sites
    out: dict[int, list[int]] = {}
    if not neurons:
        raise NeuroLensError("steering needs at least one neuron, as (layer, index) pairs (CLI: --neurons L:I)")
    for l, i in neurons:
        if not 0 <= int(l) < len(sites):
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} out of range, {adapter.name} has layers "
                                 f"0..{len(sites) - 1}")
        if not 0 <= int(i) < sites[l].units:
            raise NeuroLensError(f"neuron {l}:{i}: index out of range, layer {l} has {sites[l].units} units "
                                 f"(0..{sites[l].units - 1})")
        out.setdefault(int(l), []).append(int(i))
    return out


@contextmanager
def steer(model: "nn.Module | ModelAdapter", neurons: Sequence[tuple[int, int]], scale: float | None = None, *,
          value: "float | torch.Tensor | None" = None) -> Iterator[nn.Module]:
    """Multiply (``scale``) or set (``value``) the activations of ``neurons`` at every position.

    Args:
        model: a supported model (GPT-2, BERT-like, torchvision ResNet) or its adapter.
        neurons: ``(layer, index)`` pairs, layers numbered as in a scan.
        scale: the factor (0 = zero ablation, 1 = unchanged, 2 = doubled, ...).
        value: instead of a scale, the value to set: a number, or a tensor with one value
            per neuron (e.g. their mean activations).

    Yields the underlying ``nn.Module``; every hook is removed on exit, also on exceptions.

    Example:
        >>> with steer(gpt2, [(0, 7)], scale=4.0) as m:              # doctest: +SKIP
        ...     text = tok.decode(m.generate(ids, max_new_tokens=8)[0])
    """
    if (scale is None) == (value is None):
        raise NeuroLensError("steer: pass exactly one of scale= (multiply) or value= (set)")
    adapter = model if isinstance(model, ModelAdapter) else adapter_for(model, check_tokenizer=False)
    by_site = _sites_for(adapter, neurons)
    order = [(l, i) for l, units in by_site.items() for i in units]
    vals: dict[int, torch.Tensor] = {}
    if value is not None:
        v = torch.as_tensor(value, dtype=torch.float32).flatten()
        if v.numel() not in (1, len(order)):
            raise NeuroLensError(f"steer: value= has {v.numel()} entries for {len(order)} neurons (give 1 or one each)")
        for l, units in by_site.items():
            vals[l] = (v.expand(len(order)) if v.numel() == 1 else v)[[order.index((l, i)) for i in units]]

    def edit(key: int, out: torch.Tensor) -> torch.Tensor:
        new = out.clone()
        view = adapter.site_view(new)
        units = by_site[key]
        if value is None:
            view[..., units] = view[..., units] * scale
        else:
            view[..., units] = vals[key].to(view.device, view.dtype)
        return adapter.unview(view, new)

    with intervene({l: adapter.sites[l].module for l in by_site}, edit):
        yield adapter.model


# ----------------------------------------------------------------------------- dose-response


def slope_per_input(y: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Least-squares slope of y on the scale, per input: ``y [S, n]`` -> ``[n]``.

    Example:
        >>> slope_per_input(np.array([[0.0, 1.0], [2.0, 1.0]]), [0, 1]).tolist()
        [2.0, 0.0]
    """
    s = np.asarray(scales, dtype=np.float64)
    sc = s - s.mean()
    return (sc[:, None] * (y - y.mean(0, keepdims=True))).sum(0) / max(float((sc * sc).sum()), 1e-12)


def monotonic_test(y_con: np.ndarray, y_ctl: np.ndarray | None, scales: Sequence[float], alpha: float = 0.05
                   ) -> dict[str, Any]:
    """Does y move monotonically with the scale on concept inputs, and more than on control inputs?

    Page's L test for an ordered trend (inputs are blocks, scales are ordered treatments; it
    uses every input's ranking of the scales, so 4 inputs that all rise give p = 0.0002 where a
    sign test of slopes cannot go below 0.125), two-sided (the smaller one-sided p of a rise and a
    fall, doubled). Specificity: Mann-Whitney test of the per-input slopes of y on the scale,
    concept against control inputs.
    """
    from scipy.stats import mannwhitneyu, page_trend_test

    order = np.argsort(np.asarray(scales, dtype=np.float64), kind="stable")
    yc = y_con[order]
    means = yc.mean(1)
    inc = bool(np.all(np.diff(means) > 0))
    dec = bool(np.all(np.diff(means) < 0))
    sl = slope_per_input(y_con, scales)
    p = 1.0
    if yc.shape[1] >= 1 and yc.shape[0] >= 3 and np.ptp(yc) > 0:
        p_up = float(page_trend_test(yc.T).pvalue)
        p_down = float(page_trend_test(-yc.T).pvalue)
        p = min(1.0, 2 * min(p_up, p_down))
    out: dict[str, Any] = {
        "direction": "increasing" if inc else "decreasing" if dec else "not monotone",
        "slope_mean": float(sl.mean()) if len(sl) else None, "slope_median": float(np.median(sl)) if len(sl) else None,
        "p_trend": p, "alpha": alpha, "monotonic": bool((inc or dec) and p < alpha),
        "definition": ("Page's L test of an ordered trend of y across the scales, each input a block (two-sided); "
                       "monotonic = the mean y is strictly ordered by the scale and that test has p < alpha; "
                       "specificity: Mann-Whitney test of the per-input slopes of y on the scale, concept against "
                       "control inputs"),
    }
    if y_ctl is not None and y_ctl.shape[1]:
        slc = slope_per_input(y_ctl, scales)
        out["control_slope_mean"] = float(slc.mean())
        try:
            ps = float(mannwhitneyu(sl, slc).pvalue)
        except ValueError:  # too few inputs
            ps = math.nan
        out["p_specific"] = ps if math.isfinite(ps) else 1.0
    return out


def _ci(y: np.ndarray, n_boot: int, seed: int) -> tuple[list[float], list[float]]:
    from neurolens_lightning.ablation import bootstrap_ci

    if y.shape[1] == 0:
        return [math.nan] * y.shape[0], [math.nan] * y.shape[0]
    lo, hi = bootstrap_ci(torch.from_numpy(y), n_boot=n_boot, seed=seed)
    return [float(v) for v in lo], [float(v) for v in hi]


@dataclass
class SteeringResult:
    """What :func:`dose_response` measured; :meth:`save` writes steering.json and steering.html."""

    data: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.data, **self.extra}

    def save(self, out_dir: "str | Path", report: bool = True) -> Path:
        """Write ``steering.json`` (and ``steering.html``) into ``out_dir`` atomically."""
        out = Path(out_dir)
        data = _json_safe(self.to_dict())
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            (tmp / "steering.json").write_text(json.dumps(data, indent=1, allow_nan=False), encoding="utf-8")
            if report:
                from neurolens_lightning.report.steering_page import write_steering_report

                write_steering_report(data, tmp / "steering.html")
            out.mkdir(parents=True, exist_ok=True)
            for child in tmp.iterdir():
                os.replace(child, out / child.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def neurons_from_results(path: "str | Path", which: str = "validated") -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """The neurons of an earlier scan's results.json: ``validated`` (default: validated for a drop), or
    ``candidates`` (its top-k candidates). Returns ``(neurons, results dict)``."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NeuroLensError(f"--from {path}: cannot read a results.json ({e}); pass a scan's output folder or "
                             "its results.json") from None
    neurons = data.get("neurons") or []
    if which == "validated":
        picked = [n for n in neurons if isinstance(n.get("ablation"), dict) and n["ablation"].get("validated")
                  and n["ablation"].get("direction", "drop") == "drop"]
        if not picked:
            raise NeuroLensError(f"--from {path}: the scan validated no neuron (run it with --ablate, or pass "
                                 "--neurons L:I to steer chosen neurons)")
    else:
        picked = [n for n in neurons if n.get("role") == "candidate"][: int(data.get("top_k") or 10)]
        if not picked:
            raise NeuroLensError(f"--from {path}: the scan has no candidates to steer")
    return [(int(n["layer"]), int(n["index"])) for n in picked], data


def dose_response(model: "str | Path | nn.Module | ModelAdapter", concept: "str | Path | Concept | dict[str, Any]",
                  neurons: Sequence[tuple[int, int]], scales: Sequence[float] = DEFAULT_SCALES, *,
                  mode: str = "scale", value: float | None = None, tokenizer: Any = None, weights: str = "pretrained",
                  device: "str | torch.device | None" = None, holdout: float = 0.5, seed: int = 0,
                  batch_size: int = 16, n_boot: int = 1000, n_examples: int = 4, max_new_tokens: int = 8,
                  alpha: float = 0.05) -> SteeringResult:
    """y on held-out concept and control inputs at each scale, the monotonicity test and readable outputs.

    Args:
        model, concept: as for :func:`neurolens_lightning.scan` (the same held-out split:
            ``holdout``, ``seed``).
        neurons: the ``(layer, index)`` pairs steered together.
        scales: the factors (``mode="scale"``). ``mode="set"`` compares the clean model with the
            neurons set to each value of ``scales``; ``mode="mean"`` compares the clean model
            with the neurons set to their mean activation over the ranking split. The trend test
            runs for ``mode="scale"`` only.
        n_examples: concept inputs shown with before/after outputs.
        max_new_tokens: length of the greedy continuations (GPT-2).
    """
    from neurolens_lightning.ablation import ablation_inputs, y_description
    from neurolens_lightning.registry import load_model
    from neurolens_lightning.scanner import ConceptScanner

    if mode not in ("scale", "set", "mean"):
        raise NeuroLensError(f"steering mode must be scale, set or mean, got {mode!r}")
    scales = [float(s) for s in scales]
    if mode == "scale" and len(scales) < 2:
        raise NeuroLensError("a dose-response needs at least 2 scales (e.g. 0 0.5 1 2 4)")
    if mode == "set" and not scales:
        raise NeuroLensError("mode 'set' needs at least one value to set the neurons to")
    concept_obj = load_concept(concept)
    adapter = load_model(model, tokenizer=tokenizer, weights=weights, device=device, seed=seed)
    _sites_for(adapter, neurons)
    rank, held = concept_obj.split(holdout, seed=seed) if holdout > 0 else (concept_obj, concept_obj)
    scanner = ConceptScanner(adapter, rank, batch_size=batch_size)
    scanner.run_activation_pass()
    scanner.fit_head()
    settings: list[dict[str, Any]]
    if mode == "mean":
        mean_act = scanner.mean_activation.compute().cpu()
        flat = [scanner.offsets[scanner.layers.index(l)] + i for l, i in neurons]
        settings = [{"label": "clean", "scale": 1.0}, {"label": "mean", "value": mean_act[flat].float()}]
    elif mode == "set":
        settings = [{"label": "clean", "scale": 1.0}] + [{"label": f"set {v:g}", "value": v} for v in scales]
    else:
        settings = [{"label": f"×{s:g}", "scale": s} for s in scales]

    def run(fn_batch: Any, setting: dict[str, Any]) -> Any:
        if "value" in setting:
            with steer(adapter, neurons, value=setting["value"]):
                return fn_batch()
        with steer(adapter, neurons, scale=setting["scale"]):
            return fn_batch()

    ys: dict[str, list[np.ndarray]] = {"concept": [], "control": []}
    with torch.no_grad(), eval_mode(adapter.model):
        for kind, items in ablation_inputs(adapter, scanner, held, batch_size, seed):
            batch = scanner.encode_confidence(items, tasks=kind == "concept" and scanner.uses_tasks).to(adapter.device)
            batch = adapter.fix_targets(batch, adapter.forward(batch))  # own-prediction targets: the clean top-1
            rows = [run(lambda: adapter.confidence(batch, adapter.forward(batch), scanner.head).float().cpu(), st)
                    for st in settings]
            ys[kind].append(torch.stack(rows).double().numpy())
        y_con = np.concatenate(ys["concept"], axis=1) if ys["concept"] else np.zeros((len(settings), 0))
        y_ctl = np.concatenate(ys["control"], axis=1) if ys["control"] else np.zeros((len(settings), 0))
        examples = _examples(adapter, scanner, held, neurons, settings, run, n_examples, max_new_tokens)

    def block(y: np.ndarray) -> dict[str, Any]:
        lo, hi = _ci(y, n_boot, seed)
        return {"n": int(y.shape[1]), "mean_y": [float(v) for v in y.mean(1)] if y.shape[1] else [],
                "ci_low": lo, "ci_high": hi}

    data = {
        "schema_version": SCHEMA_VERSION, "model": adapter.name, "model_info": adapter.describe(),
        "concept": concept_obj.name, "mode": mode, "scales": scales if mode == "scale" else [],
        "labels": [st["label"] for st in settings],
        "neurons": [{"layer": int(l), "index": int(i)} for l, i in neurons],
        "y": y_description(scanner),
        "split": (f"held-out split of the probe ({y_con.shape[1]} concept and {y_ctl.shape[1]} control inputs); "
                  f"{'the probe head and ' if scanner.head is not None else ''}the mean activations come from the "
                  f"other {len(rank.positive)} + {len(rank.negative)} examples" if holdout > 0 else
                  "all examples of the probe"),
        "concept_inputs": block(y_con), "control_inputs": block(y_ctl),
        "test": monotonic_test(y_con, y_ctl, scales, alpha) if mode == "scale" else None,
        "examples": examples,
    }
    return SteeringResult(data)


def _examples(adapter: ModelAdapter, scanner: Any, held: Concept, neurons: Sequence[tuple[int, int]],
              settings: list[dict[str, Any]], run: Any, n: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """Readable before/after outputs of the first ``n`` held-out concept inputs at every setting."""
    items = (list(held.tasks) if scanner.uses_tasks else list(held.positive))[:n]
    out = []
    for it in items:
        batch = scanner.encode_confidence([it], tasks=scanner.uses_tasks).to(adapter.device)
        clean = adapter.forward(batch)
        batch = adapter.fix_targets(batch, clean)
        rec: dict[str, Any] = {"input": _describe_input(it), "outputs": []}
        for st in settings:
            rec["outputs"].append({"label": st["label"], **run(lambda: _readout(adapter, scanner, batch, it,
                                                                                   max_new_tokens), st)})
        out.append(rec)
    return out


def _describe_input(it: Any) -> dict[str, Any]:
    if isinstance(it, TextTask):
        return {"prompt": it.prompt, "target": it.target}
    if isinstance(it, TextExample):
        return {"text": it.text}
    if hasattr(it, "image"):
        return {"image": str(it.image), "label": getattr(it, "label", None)}
    return {"image": str(getattr(it, "path", it))}


def _top_tokens(adapter: ModelAdapter, logits: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
    p = torch.softmax(logits.float(), -1)
    top = p.topk(k)
    tok = adapter.tokenizer
    return [{"token": tok.decode([int(i)]), "p": float(v)} for v, i in zip(top.values, top.indices)]


def _readout(adapter: ModelAdapter, scanner: Any, batch: Any, item: Any, max_new_tokens: int) -> dict[str, Any]:
    """What a person reads for one input under the current steering (called inside :func:`steer`)."""
    outputs = adapter.forward(batch)
    y = float(adapter.confidence(batch, outputs, scanner.head)[0])
    rec: dict[str, Any] = {"y": y}
    family = adapter.family
    if scanner.head is not None:
        rec["p_concept"] = float(torch.sigmoid(torch.tensor(y)))
        return rec
    if family == "resnet":
        p = torch.softmax(outputs.float()[0], -1)
        top = p.topk(min(5, p.numel()))
        rec["top_classes"] = [{"class": int(i), "p": float(v)} for v, i in zip(top.values, top.indices)]
        return rec
    logits = outputs.logits
    pos = batch.target["pred_pos"][0]
    first = logits[0, 0] if getattr(outputs, "gathered", False) else logits[0, int(pos[0])]
    if family == "gpt2":
        if isinstance(item, TextTask):
            rec["target_logprob"] = y
            prompt_ids = adapter.tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = adapter.tokenizer(item.text, add_special_tokens=False)["input_ids"]
            first = adapter.forward(_ids_batch(adapter, prompt_ids)).logits[0, -1]
        rec["top_next"] = _top_tokens(adapter, first)
        rec["continuation"] = _greedy(adapter, prompt_ids, max_new_tokens)
    else:  # masked LM: the fills at the first [MASK]
        rec["top_fills"] = _top_tokens(adapter, first)
        if isinstance(item, TextTask):
            rec["target_logprob"] = y
    return rec


def _ids_batch(adapter: ModelAdapter, ids: list[int]) -> Any:
    from neurolens_lightning.adapters import Batch

    t = torch.tensor([ids], device=adapter.device)
    return Batch(inputs={"input_ids": t, "attention_mask": torch.ones_like(t)}, size=1)


def _greedy(adapter: ModelAdapter, ids: list[int], n: int) -> str:
    """A short greedy continuation (no sampling: the same text for the same steering)."""
    ids = list(ids)
    new: list[int] = []
    for _ in range(n):
        logits = adapter.forward(_ids_batch(adapter, ids + new)).logits[0, -1]
        new.append(int(logits.argmax()))
    return adapter.tokenizer.decode(new)
