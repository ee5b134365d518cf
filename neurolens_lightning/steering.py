"""Steering: turn chosen neurons down or up and watch the model's outputs move (DESIGN §7).

Two verbs:

* :func:`steer` — a context manager that multiplies the chosen neurons' activations by a
  scale (``scale=0`` is zero ablation, 1 leaves them, > 1 amplifies), or sets them to a value,
  at every position, around any code of yours: ``model.generate(...)``, a classifier forward,
  a torchvision model. The hooks are removed on exit, also when the body raises, so the
  model's outputs afterwards are bit-identical to before.
* :func:`dose_response` — the whole experiment: y on concept and control inputs at each scale
  with bootstrap CIs, the steering effect judged against random neurons, and before/after
  outputs people can read (GPT-2: target log-prob, top-5 next tokens and a short greedy
  continuation; masked LM: top-5 fills; probe head: p(concept); ResNet: top-5 classes). Its
  :class:`SteeringResult` saves ``steering.json`` and ``steering.html``.

**The verdict needs a null.** Any neuron with a non-zero effect moves y smoothly with its
scale, so a trend test across the scales is "significant" for random neurons too (measured on
MiniLM: 14/14 random single neurons and 5/5 random 7-neuron sets "monotonic"). The verdict is
therefore a comparison with random neurons (:func:`null_test`):

* per input, the **effect** ``e = y(highest scale) − y(lowest scale)``;
* the statistic ``T = direction × mean of e over the concept inputs``, with ``direction = +1``
  when turning the neurons up is predicted to raise y (neurons validated for a drop: ablating
  them lowers y) and ``−1`` when it is predicted to lower it (validated for a rise, suppressors);
* the **null**: random sets of the same size drawn from the same layers with the same count
  per layer (never one of the steered neurons), steered identically — the same two scales on
  the same inputs, through the same batched hook — each giving its own ``T``;
* ``p_null`` is one-sided (a large ``T`` in the predicted direction), the sequential empirical
  p of :func:`neurolens_lightning.ablation.sequential_p` (Besag & Clifford 1991): 19 sets first,
  doubling while fewer than ``h = 10`` null sets reach ``T``, at most ``null_sets`` (199); exact
  for a set exchangeable with the null, with a floor of ``1 / (null_sets + 1)``;
* **verdict** ``beyond_null = p_null <= alpha``;
* secondary, the concept-vs-control contrast ``T_spec = direction × (mean_concept e −
  mean_control e)`` against the same null sets' ``T_spec``: ``p_null_specific`` (one-sided);
* ``wrong_direction_share``: the share of concept inputs with ``direction × e < 0`` (steering
  vectors reverse on up to half the inputs of some datasets, Tan et al. 2024).

Descriptive only (no verdict): Page's L test of an ordered trend across the scales, each input
a block (two-sided, ``p_trend``; ``monotonic`` = the mean y strictly ordered by the scale and
``p_trend < alpha``), and a two-sided Mann-Whitney test of the per-input slopes of y on the
scale, concept against control inputs (``p_specific``; ``mw_side`` says which side is larger).
Modes ``set`` and ``mean`` have no null (the predicted sign of ``y(setting) − y(clean)`` depends
on each neuron's activations): their ``test`` says so (``null: "none"``, ``beyond_null: null``).

Inputs: ``inputs="heldout"`` (default) steers on the held-out split of ``seed``/``holdout`` —
the very inputs on which a scan with that split validated its neurons; ``inputs="ranking"``
steers on the ranking split, disjoint from them (``neurolens steer --from`` picks it for a scan
that ablated). ``steering.json`` records ``inputs``, ``seed`` and ``holdout``.

Example:
    >>> import neurolens_lightning as nl
    >>> with nl.steer(model, [(3, 1125)], scale=4.0):                     # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=10)
    >>> res = nl.dose_response("minilm", "royalty", [(1, 1035)])           # doctest: +SKIP
    >>> res.to_dict()["test"]["beyond_null"], res.to_dict()["test"]["p_null"]  # doctest: +SKIP
    >>> res.save("reports/steer-royalty")                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from neurolens_lightning.ablation import tensor_nbytes
from neurolens_lightning.adapters import ModelAdapter, adapter_for
from neurolens_lightning.concepts import Concept, ImageTask, TextExample, TextTask, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import eval_mode, intervene
from neurolens_lightning.settings import ScanSettings

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
    """Descriptive trend statistics of a dose-response (no verdict: see :func:`null_test`).

    Page's L test for an ordered trend (inputs are blocks, scales are ordered treatments; it
    uses every input's ranking of the scales, so 4 inputs that all rise give p = 0.0002 where a
    sign test of slopes cannot go below 0.125), two-sided (the smaller one-sided p of a rise and a
    fall, doubled): ``p_trend``; ``trend_direction`` = whether the mean y is strictly increasing
    or decreasing in the scale; ``monotonic`` = strictly ordered and ``p_trend < alpha``. Any
    neuron with a non-zero effect passes it, random ones included, so it is descriptive only.
    Specificity, also descriptive: a two-sided Mann-Whitney test of the per-input slopes of y on
    the scale, concept against control inputs (``p_specific``), and which side is larger
    (``mw_side``: ``"concept > control"``, ``"control > concept"`` or ``"neither"``, from U).

    Example:
        >>> t = monotonic_test(np.array([[0.0, 0.1], [1.0, 1.2]]), np.array([[0.0, 0.0], [0.1, 0.2]]), [0, 1])
        >>> t["trend_direction"], t["mw_side"]
        ('increasing', 'concept > control')
    """
    from scipy.stats import mannwhitneyu, page_trend_test

    order = np.argsort(np.asarray(scales, dtype=np.float64), kind="stable")
    yc = y_con[order]
    means = yc.mean(1) if yc.shape[1] else np.zeros(len(order))
    inc = bool(yc.shape[1] and np.all(np.diff(means) > 0))
    dec = bool(yc.shape[1] and np.all(np.diff(means) < 0))
    sl = slope_per_input(y_con, scales)
    p = 1.0
    if yc.shape[1] >= 1 and yc.shape[0] >= 3 and np.ptp(yc) > 0:
        p_up = float(page_trend_test(yc.T).pvalue)
        p_down = float(page_trend_test(-yc.T).pvalue)
        p = min(1.0, 2 * min(p_up, p_down))
    out: dict[str, Any] = {
        "trend_direction": "increasing" if inc else "decreasing" if dec else "not monotone",
        "slope_mean": float(sl.mean()) if len(sl) else None, "slope_median": float(np.median(sl)) if len(sl) else None,
        "p_trend": p, "alpha": alpha, "monotonic": bool((inc or dec) and p < alpha),
    }
    if y_ctl is not None and y_ctl.shape[1] and len(sl):
        slc = slope_per_input(y_ctl, scales)
        out["control_slope_mean"] = float(slc.mean())
        try:
            res = mannwhitneyu(sl, slc)
            ps, u = float(res.pvalue), float(res.statistic)
        except ValueError:  # too few inputs
            ps, u = math.nan, len(sl) * len(slc) / 2
        out["p_specific"] = ps if math.isfinite(ps) else 1.0
        half = len(sl) * len(slc) / 2
        out["mw_side"] = "concept > control" if u > half else "control > concept" if u < half else "neither"
    return out


# ----------------------------------------------------------------------------- the random-neuron null


def null_sets_design(units_per_layer: "dict[int, int] | Sequence[int]", neurons: Sequence[tuple[int, int]]
                     ) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Per layer: how many of ``neurons`` it holds, and the units a null set may draw from there (the others).

    Example:
        >>> null_sets_design([4, 3], [(0, 1), (1, 2), (0, 3)])
        ({0: 2, 1: 1}, {0: [0, 2], 1: [0, 1]})
    """
    units = dict(enumerate(units_per_layer)) if not isinstance(units_per_layer, dict) else units_per_layer
    steered = set((int(l), int(i)) for l, i in neurons)
    counts = dict(sorted(Counter(int(l) for l, _ in steered).items()))
    pools = {l: [u for u in range(int(units[l])) if (l, u) not in steered] for l in counts}
    return counts, pools


def draw_null_sets(counts: dict[int, int], pools: dict[int, list[int]], n: int, rng: random.Random
                   ) -> list[list[tuple[int, int]]]:
    """``n`` random sets with ``counts[l]`` distinct units of layer ``l`` each, drawn from ``pools`` by ``rng``.

    Sets are independent draws (two sets may share a unit); the same ``rng`` state gives the same sets.

    Example:
        >>> draw_null_sets({0: 2}, {0: [0, 2, 5]}, 2, random.Random(0))
        [[(0, 2), (0, 5)], [(0, 0), (0, 2)]]
    """
    for l, c in counts.items():
        if len(pools[l]) < c:
            raise NeuroLensError(f"layer {l} has {len(pools[l])} other units: too few to draw random sets of {c} "
                                 "from it for the null")
    return [[(l, u) for l, c in counts.items() for u in rng.sample(pools[l], c)] for _ in range(n)]


def null_test(e_con: np.ndarray, e_ctl: np.ndarray | None, null_con: Sequence[float],
              null_spec: Sequence[float] | None, direction: int = 1, alpha: float = 0.05, h: int = 10,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The verdict of a steering effect against random sets (see the module docstring).

    Args:
        e_con, e_ctl: per-input effects ``y(highest scale) − y(lowest scale)`` of the steered set on
            concept and control inputs.
        null_con: per null set, in sampling order, ``direction × mean_concept e``; ``null_spec``
            the same sets' ``direction × (mean_concept e − mean_control e)``.
        direction: +1 when turning the neurons up is predicted to raise y, −1 to lower it.

    Example:
        >>> t = null_test(np.array([2.0, 3.0]), np.array([0.1, 0.0]), [0.1 * k for k in range(19)],
        ...               [0.0] * 19, n_boot=50)
        >>> t["beyond_null"], t["p_null"], t["null_n"], t["wrong_direction_share"]
        (True, 0.05, 19, 0.0)
    """
    from neurolens_lightning.ablation import bootstrap_ci, sequential_p

    d = 1 if direction >= 0 else -1
    T = d * float(e_con.mean()) if len(e_con) else math.nan
    p, g, n = sequential_p(T, list(null_con), h) if len(e_con) else (1.0, 0, 0)
    lo, hi = (bootstrap_ci(torch.from_numpy(d * np.asarray(e_con, dtype=np.float64))[None], n_boot=n_boot,
                           seed=seed) if len(e_con) > 1 else ([T], [T]))
    q = np.quantile(np.asarray(null_con, dtype=np.float64), [0.05, 0.5, 0.95]) if len(null_con) else [math.nan] * 3
    out: dict[str, Any] = {
        "beyond_null": bool(len(e_con) > 0 and p <= alpha), "p_null": float(p), "null_n": int(n),
        "null_exceedances": int(g), "null_beaten": int(n - g), "null_sets_drawn": len(null_con),
        "null_effect_quantiles": {"q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2])},
        "null_effects": [float(v) for v in null_con],
        "effect": T, "effect_ci_low": float(lo[0]), "effect_ci_high": float(hi[0]),
        "effect_raw_mean": float(e_con.mean()) if len(e_con) else math.nan,
        "direction": d, "predicted": "rise" if d > 0 else "fall",
        "wrong_direction_share": float(np.mean(d * e_con < 0)) if len(e_con) else math.nan,
        "wrong_direction_n": int(np.sum(d * e_con < 0)), "n_concept_inputs": int(len(e_con)),
        "alpha": alpha, "h": h,
    }
    if e_ctl is not None and len(e_ctl) and len(e_con) and null_spec is not None:
        t_spec = d * (float(e_con.mean()) - float(e_ctl.mean()))
        ps, gs, ns = sequential_p(t_spec, list(null_spec), h)
        out.update({"control_effect": d * float(e_ctl.mean()), "effect_specific": t_spec,
                    "p_null_specific": float(ps), "null_n_specific": int(ns),
                    "beyond_null_specific": bool(ps <= alpha)})
    else:
        out.update({"control_effect": None, "effect_specific": None, "p_null_specific": None,
                    "null_n_specific": 0, "beyond_null_specific": None})
    return out


def _task_items(scanner: Any, items: Sequence[Any]) -> bool:
    """Whether a chunk is scored as tasks (concept tasks, or control sentences paired with task targets)."""
    return bool(scanner.uses_tasks and items and isinstance(items[0], (TextTask, ImageTask)))


def _null_open(value: float, seq: Sequence[float], h: int) -> bool:
    """True while fewer than ``h`` of ``seq`` reach ``value`` (its sequential p is not settled)."""
    return sum(1 for x in seq if x >= value) < h


class _ReplicaSteering:
    """y of many steerings of the same inputs, several per forward (the batch replicated, one factor row each).

    A replica is ``(neurons, scale)``: those neurons' activations multiplied by ``scale`` at every
    position (what :func:`steer` does). The clean forward of each chunk records the inputs of the
    blocks from the first steered layer on, so steered forwards re-enter the network there (every
    replica of one run steers the same layers) — the same batching as
    :class:`neurolens_lightning.ablation.AblationRunner`.
    """

    def __init__(self, adapter: ModelAdapter, scanner: Any, chunks: Sequence[tuple[str, list[Any]]],
                 layers: Sequence[int], replicas: int = 16, cache_budget_bytes: int = 1 << 30,
                 rows_budget: int = 1 << 27) -> None:
        self.adapter, self.scanner, self.chunks, self.replicas = adapter, scanner, list(chunks), max(1, replicas)
        blocks = adapter.blocks
        self.reuse = blocks is not None and len(blocks) == len(adapter.sites)
        self.layers = sorted({int(l) for l in layers})
        self.start = self.layers[0]
        self.rows_budget = rows_budget
        self.cache: dict[int, Any] = {}
        self.budget, self.used = cache_budget_bytes, 0
        self.y_clean: dict[str, list[torch.Tensor]] = {"concept": [], "control": []}

    def _clean(self, i: int) -> tuple[torch.Tensor, dict[int, tuple[tuple, dict]], Any, int]:
        if i in self.cache:
            return self.cache[i]
        kind, items = self.chunks[i]
        a = self.adapter
        batch = self.scanner.encode_confidence(items, tasks=_task_items(self.scanner, items)).to(a.device)
        cache: dict[int, tuple[tuple, dict]] = {}
        handles = []
        per_example = [0]

        def size(_m: Any, _i: Any, out: Any) -> None:  # elements of a steered site's output per example
            t = out[0] if isinstance(out, (tuple, list)) else out
            per_example[0] = max(per_example[0], t.numel() // max(batch.size, 1))

        try:
            for l in self.layers:
                handles.append(a.sites[l].module.register_forward_hook(size))
            if self.reuse:
                for j in range(self.start, len(a.blocks)):
                    def pre(_m: Any, args: tuple, kwargs: dict, j: int = j) -> None:
                        # the hidden state is needed at the re-entry block only; later blocks' extra args are kept
                        cache[j] = (args if j == self.start else (None, *args[1:]), kwargs)
                    handles.append(a.blocks[j].register_forward_pre_hook(pre, with_kwargs=True))
            outputs = a.forward(batch)
            batch = a.fix_targets(batch, outputs)  # own-prediction targets: the clean top-1
            y = a.confidence(batch, outputs, self.scanner.head).float()
        finally:
            for h in handles:
                h.remove()
        # replicas per forward: at most ``replicas``, and the steered sites' outputs within the element budget
        r_max = max(1, min(self.replicas, self.rows_budget // max(per_example[0] * batch.size, 1)))
        got = (y, cache, batch, r_max)
        nbytes = tensor_nbytes(got[:3])
        if self.used + nbytes <= self.budget:
            self.cache[i] = got
            self.used += nbytes
        return got

    def _forward(self, batch: Any, cache: dict[int, tuple[tuple, dict]],
                 group: Sequence[tuple[Sequence[tuple[int, int]], float]]) -> torch.Tensor:
        a = self.adapter
        R, B = len(group), batch.size
        factors: dict[int, torch.Tensor] = {}
        for r, (units, s) in enumerate(group):
            for l, u in units:
                if l not in factors:
                    factors[l] = torch.ones(R, a.sites[l].units)
                factors[l][r, u] = float(s)
        factors = {l: f.to(a.device) for l, f in factors.items()}

        def edit(key: Any, out: torch.Tensor) -> torch.Tensor:
            view = a.site_view(out)
            P, U = view.shape[1], view.shape[2]
            new = view.reshape(R, B, P, U) * factors[key].to(view.dtype)[:, None, None, :]
            return a.unview(new.reshape(R * B, P, U), out)

        rep = batch.repeat(R)
        with intervene({l: a.sites[l].module for l in factors}, edit):
            if self.reuse and cache:
                outputs = self._replay(cache, B, R, rep)
            else:
                outputs = a.forward(rep)
            y = a.confidence(rep, outputs, self.scanner.head).float()
        return y.view(R, B)

    def _replay(self, cache: dict[int, tuple[tuple, dict]], B: int, R: int, batch: Any) -> Any:
        def rep(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == B:
                return t.repeat(R, *([1] * (t.dim() - 1)))
            return t

        blocks = self.adapter.blocks
        hidden = rep(cache[self.start][0][0])
        for j in range(self.start, len(blocks)):
            args, kw = cache[j]
            out = blocks[j](hidden, *[rep(x) for x in args[1:]], **{k: rep(v) for k, v in kw.items()})
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        return self.adapter.tail(hidden, batch)

    def run(self, replicas: Sequence[tuple[Sequence[tuple[int, int]], float]],
            kinds: Sequence[str] = ("concept", "control"), progress: bool = False, desc: str = ""
            ) -> dict[str, np.ndarray]:
        """y per replica and input of each kind: ``{kind: [R, n]}`` (a scale of exactly 1 is the clean y)."""
        todo = [r for r, (_, s) in enumerate(replicas) if float(s) != 1.0]
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("concept", "control")}
        it: Any = [i for i, (k, _) in enumerate(self.chunks) if k in kinds]
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=desc, leave=False, unit="batch")
        for i in it:
            kind = self.chunks[i][0]
            y, cache, batch, r_max = self._clean(i)
            rows = y.double().cpu()[None].repeat(len(replicas), 1)
            for g in range(0, len(todo), r_max):
                part = todo[g:g + r_max]
                rows[part] = self._forward(batch, cache, [replicas[r] for r in part]).double().cpu()
            parts[kind].append(rows)
        return {k: (torch.cat(v, dim=1).numpy() if v else np.zeros((len(replicas), 0))) for k, v in parts.items()
                if k in kinds}


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
    """The neurons of an earlier scan's results.json, and that results dict.

    ``which``: ``validated`` (default: validated for a drop — ablating them lowers y, so turning
    them up is predicted to raise it, steering direction +1), ``suppressors`` (validated for a
    rise, direction −1) or ``candidates`` (its top-k candidates, direction +1). The scan's split
    is in the returned dict: see :func:`scan_split`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NeuroLensError(f"--from {path}: cannot read a results.json ({e}); pass a scan's output folder or "
                             "its results.json") from None
    neurons = data.get("neurons") or []
    if which in ("validated", "suppressors"):
        want = "drop" if which == "validated" else "rise"
        picked = [n for n in neurons if isinstance(n.get("ablation"), dict) and n["ablation"].get("validated")
                  and n["ablation"].get("direction", "drop") == want]
        if not picked:
            what = "no neuron" if which == "validated" else "no suppressor (no neuron validated for a rise)"
            raise NeuroLensError(f"--from {path}: the scan validated {what} (run it with --ablate, or pass "
                                 "--neurons L:I to steer chosen neurons)")
    elif which == "candidates":
        picked = [n for n in neurons if n.get("role") == "candidate"][: int(data.get("top_k") or 10)]
        if not picked:
            raise NeuroLensError(f"--from {path}: the scan has no candidates to steer")
    else:
        raise NeuroLensError(f"--from: which must be validated, suppressors or candidates, got {which!r}")
    return [(int(n["layer"]), int(n["index"])) for n in picked], data


def scan_split(data: dict[str, Any]) -> dict[str, Any]:
    """The split of a scan's results dict: ``seed`` and ``holdout`` (0 and 0.5 when not recorded) and
    ``ablated`` (its neurons were validated on the held-out split of that seed and holdout).

    Example:
        >>> scan_split({"settings": {"seed": 3, "holdout": 0.25, "ablate": True}})
        {'seed': 3, 'holdout': 0.25, 'ablated': True, 'recorded': True}
        >>> scan_split({})
        {'seed': 0, 'holdout': 0.5, 'ablated': False, 'recorded': False}
    """
    st = data.get("settings") or {}
    ablated = bool(st.get("ablate")) or any(isinstance(n.get("ablation"), dict) for n in data.get("neurons") or [])
    recorded = "seed" in st and "holdout" in st
    return {"seed": int(st["seed"]) if st.get("seed") is not None else 0,
            "holdout": float(st["holdout"]) if st.get("holdout") is not None else 0.5,
            "ablated": ablated, "recorded": recorded}


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
        progress: tqdm bars for the forwards (the CLI turns them on).
        settings: the :class:`~neurolens_lightning.settings.ScanSettings` of the scan that chose the neurons:
            its ``holdout``, ``seed`` and ``batch_size`` give the same split (``holdout``, ``seed`` and
            ``batch_size`` above, where they differ from their defaults, override them).
    """
    from neurolens_lightning.ablation import ablation_inputs, y_description
    from neurolens_lightning.registry import load_model
    from neurolens_lightning.scanner import ConceptScanner

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
    st = ScanSettings.resolve(settings, {"holdout": holdout, "seed": seed, "batch_size": batch_size})
    holdout, seed, batch_size = st.holdout, st.seed, st.batch_size
    neurons = list(dict.fromkeys((int(l), int(i)) for l, i in neurons))
    concept_obj = load_concept(concept)
    adapter = load_model(model, tokenizer=tokenizer, weights=weights, device=device, seed=seed)
    _sites_for(adapter, neurons)
    rank, held = concept_obj.split(holdout, seed=seed) if holdout > 0 else (concept_obj, concept_obj)
    on = held if inputs == "heldout" else rank
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

    chunks = ablation_inputs(adapter, scanner, on, batch_size, seed)
    if mode == "scale" and adapter.family != "resnet":  # text: less padding in the many replicated forwards
        chunks = _length_sorted(scanner, chunks, batch_size)
    test: dict[str, Any] | None
    with torch.no_grad(), eval_mode(adapter.model):
        if mode == "scale":
            y_con, y_ctl, test = _scale_and_null(adapter, scanner, chunks, neurons, scales, direction, null_sets, h,
                                                 replicas, alpha, n_boot, seed, progress)
        else:
            ys: dict[str, list[np.ndarray]] = {"concept": [], "control": []}
            for kind, items in chunks:
                batch = scanner.encode_confidence(items, tasks=_task_items(scanner, items)).to(adapter.device)
                batch = adapter.fix_targets(batch, adapter.forward(batch))  # own-prediction targets: the clean top-1
                rows = [run(lambda: adapter.confidence(batch, adapter.forward(batch), scanner.head).float().cpu(), st)
                        for st in settings]
                ys[kind].append(torch.stack(rows).double().numpy())
            y_con = np.concatenate(ys["concept"], axis=1) if ys["concept"] else np.zeros((len(settings), 0))
            y_ctl = np.concatenate(ys["control"], axis=1) if ys["control"] else np.zeros((len(settings), 0))
            test = {"null": "none", "null_free": True, "beyond_null": None, "p_null": None, "null_n": 0,
                    "direction": direction,
                    "alpha": alpha,
                    "definition": (f"mode {mode!r} has no random-neuron null (the predicted sign of "
                                   "y(setting) - y(clean) depends on each neuron's own activations), so this test is "
                                   "null-free and gives no verdict; use mode 'scale' for a verdict against random "
                                   "sets of the same size and layers")}
        examples = _examples(adapter, scanner, on, neurons, settings, run, n_examples, max_new_tokens)

    def block(y: np.ndarray) -> dict[str, Any]:
        lo, hi = _ci(y, n_boot, seed)
        return {"n": int(y.shape[1]), "mean_y": [float(v) for v in y.mean(1)] if y.shape[1] else [],
                "ci_low": lo, "ci_high": hi}

    data = {
        "schema_version": SCHEMA_VERSION, "model": adapter.name, "model_info": adapter.describe(),
        "concept": concept_obj.name, "mode": mode, "scales": scales if mode == "scale" else [],
        "labels": [st["label"] for st in settings],
        "neurons": [{"layer": int(l), "index": int(i)} for l, i in neurons],
        "y": y_description(scanner), "inputs": inputs if holdout > 0 else "all", "seed": int(seed),
        "holdout": float(holdout),
        "split": _split_text(inputs, holdout, seed, y_con.shape[1], y_ctl.shape[1], rank, held, scanner),
        "concept_inputs": block(y_con), "control_inputs": block(y_ctl),
        "test": test, "examples": examples,
    }
    return SteeringResult(data)


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
    try:
        while len(e_con) and len(null_con) < null_sets:
            sets = draw_null_sets(counts, pools, target - len(null_con), rng)
            kinds = ("concept", "control") if spec_open else ("concept",)
            got = runner.run([(st, s) for st in sets for s in (s_lo, s_hi)], kinds=kinds, progress=progress,
                             desc=f"null [{len(sets)} random sets of {n}, {len(null_con) + len(sets)}/{null_sets}]")
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
    if family in ("gpt2", "decoder"):  # causal LMs: next tokens and a greedy continuation
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
