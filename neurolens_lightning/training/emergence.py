"""The emergence history of :class:`~neurolens_lightning.training.callback.NeuroLensCallback`.

One point per probe and concept: the step, the top-k neurons with their scores, the FDR-significant count per
layer, the Jaccard overlap of the top-k with the previous point and two ranking-independent measures (mean
selectivity of the k most selective neurons - the emergence headline - and best selectivity per layer). With
``store_scores`` every neuron's scores at every point are kept too, compactly (bfloat16 / float16 / int8 tensors,
9 bytes per neuron per point), so the trajectories of the *final* top neurons are continuous from the first point
(:meth:`EmergenceHistory.emergence`). Everything is plain data (ints, floats, strings, lists, dicts and tensors),
so the callback's checkpoint state loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.ranking import ROLE_NAMES
from neurolens_lightning.results import ScanResult
from neurolens_lightning.training.reports import image_thumbnail

#: the per-neuron scores kept at every probe point (``store_scores``) and their storage dtypes: the
#: unbounded ones in bfloat16 (float32's range, ~3 significant digits), the [0, 1] ones in float16
_STORED = {"selectivity": torch.bfloat16, "importance": torch.bfloat16, "consistency": torch.float16,
           "score": torch.float16}
_TRACKED_KEYS = ("selectivity", "consistency", "importance", "score")


def _round(x: Any, nd: int = 6) -> float | None:
    """A plain, JSON-safe float with ``nd`` significant digits (None for NaN/inf), like the rest of the history."""
    v = float(x)
    return None if (v != v or v in (float("inf"), float("-inf"))) else float(f"{v:.{nd}g}")


class EmergenceHistory:
    """The history points and the score log of a callback's probes, and the timelines drawn from them.

    Args:
        top_k: neurons recorded per probe point (and the k of ``most_selective_mean``).
        store_scores: also keep every neuron's scores at every point (:meth:`score_entry`).
    """

    def __init__(self, top_k: int, store_scores: bool) -> None:
        self.top_k, self.store_scores = top_k, bool(store_scores)
        self.history: list[dict[str, Any]] = []
        #: per probe point and concept: every neuron's scores as compact tensors (see ``store_scores``)
        self.score_log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ recording
    def record(self, result: ScanResult, step: int, epoch: int, reason: str) -> dict[str, Any]:
        """The history point of ``result`` (not appended yet: :meth:`extend` adds a probe's points together);
        its score-log entry is appended now when ``store_scores``."""
        point = self.point(result, step, epoch, reason)
        if self.store_scores:
            self.score_log.append(self.score_entry(result, step))
        return point

    def extend(self, points: list[dict[str, Any]]) -> None:
        self.history.extend(points)

    def score_entry(self, result: ScanResult, step: int) -> dict[str, Any]:
        """Every neuron's scores at this point, compactly (see ``store_scores``): plain tensors, rank-independent."""
        s = result.scores
        entry: dict[str, Any] = {"concept": result.concept.name, "step": int(step),
                                 "layers": [int(l) for l in result.layers], "units": [int(u) for u in result.units],
                                 "role": s.role.detach().cpu().to(torch.int8).clone()}
        for key, dtype in _STORED.items():
            t = getattr(s, key)
            entry[key] = None if t is None else t.detach().float().cpu().to(dtype).clone()
        return entry

    def point(self, result: ScanResult, step: int, epoch: int, reason: str) -> dict[str, Any]:
        # the head of the ranking (candidates first), each with its role: the timeline stays continuous
        # from random init, where few neurons qualify as candidates yet
        top = result.ranked(self.top_k)
        d = torch.nan_to_num(result.scores.selectivity.double(), nan=0.0)
        prev = next((p for p in reversed(self.history) if p["concept"] == result.concept.name), None)
        cur_set = {(c["layer"], c["index"]) for c in top}
        jaccard = None
        if prev is not None:
            prev_set = {(c["layer"], c["index"]) for c in prev["top"]}
            jaccard = len(cur_set & prev_set) / max(1, len(cur_set | prev_set))
        layers = result.layer_summary()
        point: dict[str, Any] = {
            "step": step, "epoch": int(epoch), "reason": reason, "concept": result.concept.name,
            "top": [{k: c[k] for k in ("layer", "index", "role", "selectivity", "selectivity_p", "consistency",
                                       "importance", "score")} for c in top],
            "n_significant": result.n_significant_fdr,
            "n_candidates": result.scores.n_candidates,
            "n_significant_per_layer": {str(s["layer"]): s["n_significant"] for s in layers},
            "jaccard_prev": jaccard,
            # ranking-independent emergence measures: the k most selective neurons, and the best per layer
            "most_selective_mean": _round(torch.topk(d, min(self.top_k, d.numel())).values.mean()),
            "max_selectivity_per_layer": {str(s["layer"]): s["max_selectivity"] for s in layers},
        }
        if result.ablation_summary is not None:
            summ = result.ablation_summary
            point["ablation"] = {"n_validated": summ["n_validated"], "n_tested": summ["n_candidates"],
                                 "n_causal": summ.get("n_causal", 0), "method": summ.get("method"),
                                 "joint_delta": summ["joint_delta"], "joint_p_null": summ.get("joint_p_null"),
                                 # the joint set is evidence only beyond random sets of the same size and layers
                                 "joint_beyond_null": summ.get("joint_beyond_null")}
        return point

    # ------------------------------------------------------------------ timeline
    def emergence(self, concept: str) -> list[dict[str, Any]]:
        """The history points of ``concept`` (copies), each with ``tracked``: the latest point's top-k neurons
        (in its order) with their role, selectivity, consistency, importance and score *at that point*.

        A value comes from that point's ``top`` when the neuron was in it (6 significant digits), else from the
        score log (``store_scores``; 4 significant digits, the storage precision), so with the score log the
        trajectories have no gaps. Without it (``store_scores=False``, or points restored from a checkpoint
        written before the log existed) a neuron outside a point's top-k has ``None`` values there.
        """
        points = [p for p in self.history if p["concept"] == concept]
        if not points:
            return []
        final = [(int(c["layer"]), int(c["index"])) for c in points[-1].get("top") or []]
        logs = {int(e["step"]): e for e in self.score_log if e.get("concept") == concept}
        out = []
        for p in points:
            top = {(int(c["layer"]), int(c["index"])): c for c in p.get("top") or []}
            entry = logs.get(int(p["step"]))
            tracked = [self._tracked(top.get((layer, index)), entry, layer, index) for layer, index in final]
            out.append({**copy.deepcopy(p), "tracked": tracked})
        return out

    def _tracked(self, hit: dict[str, Any] | None, entry: dict[str, Any] | None, layer: int,
                 index: int) -> dict[str, Any]:
        """Neuron ``layer:index`` at one point: from the point's ``top`` (``hit``), else from its score-log entry."""
        rec: dict[str, Any] = {"layer": layer, "index": index}
        j = None if entry is None else self._flat(entry, layer, index)
        if hit is not None:
            rec["role"] = hit.get("role")
            rec.update({k: hit.get(k) for k in _TRACKED_KEYS})
        elif j is not None:
            rec["role"] = ROLE_NAMES.get(int(entry["role"][j]))
            rec.update({k: None if entry.get(k) is None else _round(entry[k][j], 4) for k in _TRACKED_KEYS})
        else:
            rec["role"] = None
            rec.update({k: None for k in _TRACKED_KEYS})
        return rec

    @staticmethod
    def _flat(entry: dict[str, Any], layer: int, index: int) -> int | None:
        """The flat position of neuron ``layer:index`` in a score-log entry (layer-major, as the scanner's)."""
        layers, units = entry.get("layers") or [], entry.get("units") or []
        if layer not in layers:
            return None
        k = layers.index(layer)
        if not 0 <= index < units[k]:
            return None
        return int(sum(units[:k]) + index)

    # ------------------------------------------------------------------ report data
    @staticmethod
    def label_examples(result: ScanResult, neurons: list[dict[str, Any]]) -> None:
        """Label every top example of an image probe with its group (``control`` for a control example), and
        inline examples given as tensors (which have no file to show) as PNG thumbnails; in place."""
        concept = result.concept
        if concept.modality != "image":
            return
        s = result.scores
        items = list(concept.positive) + list(concept.negative)
        n_pos = len(concept.positive)
        thumbs: dict[int, str | None] = {}
        for n in neurons:
            recs = n.get("top_examples")
            if not recs:
                continue
            try:
                i = s.flat_index(int(n["layer"]), int(n["index"]))
            except NeuroLensError:
                continue
            # the same filter as ScanResult.examples_for, so records and example ids line up
            ids = [e for e in s.top_example_ids[:, i].tolist() if 0 <= e < len(items)]
            if len(ids) != len(recs) or any(bool(r.get("positive")) != (e < n_pos) for r, e in zip(recs, ids)):
                continue
            for rec, eid in zip(recs, ids):
                rec["label"] = concept.positive_groups[eid] if eid < n_pos else "control"
                ex = items[eid]
                if rec.get("image") is None and isinstance(ex, torch.Tensor):
                    if eid not in thumbs:
                        thumbs[eid] = image_thumbnail(ex)
                    if thumbs[eid]:
                        rec["image"] = thumbs[eid]

    def data_with_history(self, result: ScanResult) -> dict[str, Any]:
        """``result.to_dict()`` with the concept's emergence timeline and labelled image examples (W&B charts)."""
        data = result.to_dict()
        data["emergence"] = self.emergence(result.concept.name)
        self.label_examples(result, data["neurons"])
        return data
