"""The result of a scan: candidate table, layer summaries, results.json and the saved report folder.

``results.json`` (schema in the README) holds every number the report shows. Saving is
atomic: files are written into a temporary sibling folder that is renamed into place, so
an error never leaves a half-written report behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.concepts import EXAMPLE_CHARS, Concept, ImageExample, TextExample, clip_text
from neurolens_lightning.io import Output, json_safe, nonfinite_paths, nonfinite_warning, publish, rounded
from neurolens_lightning.ranking import ROLE_CANDIDATE, ROLE_NAMES, ROLE_SUPPRESSOR
from neurolens_lightning.report.page import write_report
from neurolens_lightning.scanner import NeuronScores

SCHEMA_VERSION = 2

#: fewer examples per class than this (in the split that ranks the neurons) draws a warning:
#: measured in benchmarks/bench_probe_size.py (README "How many examples a concept needs")
SMALL_PROBE = 20


def small_probe_warning(n_pos: int, n_neg: int) -> str | None:
    """The warning for a probe with fewer than :data:`SMALL_PROBE` examples in a class, else None."""
    if min(n_pos, n_neg) >= SMALL_PROBE:
        return None
    return (f"small probe: the neurons were ranked on {n_pos} concept and {n_neg} control examples; below "
            f"{SMALL_PROBE} per class effect sizes are noisy (see each d's 95% CI) and real concept neurons are "
            "often missed - add examples (README: How many examples a concept needs)")


def no_candidates_warning(fdr_q: float, min_selectivity: float) -> str:
    """The warning for a scan where no neuron qualifies as a candidate."""
    return (f"no candidates: no neuron is positively selective at FDR q <= {fdr_q:g} with a layer-scaled d >= "
            f"{min_selectivity:g}, so nothing is reported as a concept neuron and nothing is validated; a larger or "
            "sharper probe may find some")


@dataclass
class ScanResult:
    """Scores of one concept in one model, ranked.

    Example:
        >>> result = scan(model="minilm", concept="royalty")   # doctest: +SKIP
        >>> result.candidates(3)[0]["layer"]                    # doctest: +SKIP
    """

    model: dict[str, Any]
    concept: Concept
    layers: list[int]
    units: list[int]
    scores: NeuronScores
    top_k: int = 10
    max_neurons: int = 500
    fdr_q: float = 0.05
    min_selectivity: float = 0.5
    settings: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    ablation: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    ablation_summary: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: called as ``label_neurons(result, neurons)`` on the listed neuron records before they are returned (the
    #: callback labels image examples and inlines their thumbnails); it edits records, never replaces keys
    label_neurons: Callable[["ScanResult", list[dict[str, Any]]], None] | None = field(default=None, repr=False,
                                                                                         compare=False)

    # ------------------------------------------------------------------ tables
    @property
    def significant(self) -> torch.Tensor:
        return self.scores.selectivity_q <= self.fdr_q

    @property
    def n_significant_fdr(self) -> int:
        return int(self.significant.sum())

    def neuron_record(self, i: int, rank: int | None = None) -> dict[str, Any]:
        s = self.scores
        rec = {
            "layer": int(s.layer[i]), "index": int(s.index[i]), "role": ROLE_NAMES[int(s.role[i])],
            "selectivity": rounded(s.selectivity[i]),
            "selectivity_ci": [rounded(s.selectivity_ci_low[i], 4), rounded(s.selectivity_ci_high[i], 4)],
            "selectivity_layer": rounded(s.selectivity_layer[i]),
            "selectivity_p": rounded(s.selectivity_p[i]),
            "selectivity_q": rounded(s.selectivity_q[i]), "consistency": rounded(s.consistency[i]),
            "importance": None if s.importance is None else rounded(s.importance[i]),
            "importance_zero": None if s.importance_zero is None else rounded(s.importance_zero[i]),
            "importance_mean": None if s.importance_mean is None else rounded(s.importance_mean[i]),
            "score": rounded(s.score[i]), "rank": rank,
            "mean_pos": rounded(s.mean_pos[i]), "mean_neg": rounded(s.mean_neg[i]),
            "group_d": [rounded(v, 4) for v in s.group_d[:, i].tolist()],
            "ablation": self.ablation.get((int(s.layer[i]), int(s.index[i]))),
        }
        return rec

    def _with_role(self, role: int, k: int | None) -> list[dict[str, Any]]:
        k = self.top_k if k is None else k
        order = self.scores.order.tolist()
        rank_of = {i: r + 1 for r, i in enumerate(order)}
        picked = [i for i in order if int(self.scores.role[i]) == role][:k]
        return [self.neuron_record(i, rank=rank_of[i]) for i in picked]

    def candidates(self, k: int | None = None) -> list[dict[str, Any]]:
        """Up to ``k`` (default ``top_k``) candidates as records, best first.

        Only neurons with the ``candidate`` role (FDR-significant, positively selective, above
        the layer-scaled floor, importance >= 0) qualify, so a weak probe can have fewer
        than ``k`` candidates, or none.
        """
        return self._with_role(ROLE_CANDIDATE, k)

    def suppressors(self, k: int | None = None) -> list[dict[str, Any]]:
        """Up to ``k`` suppressors: selective like candidates, but removing them is predicted to raise y."""
        return self._with_role(ROLE_SUPPRESSOR, k)

    def ranked(self, k: int | None = None) -> list[dict[str, Any]]:
        """The first ``k`` neurons of the ranking whatever their role (candidates, suppressors, then the rest)."""
        k = self.top_k if k is None else k
        return [self.neuron_record(i, rank=r + 1) for r, i in enumerate(self.scores.order[:k].tolist())]

    def top_neurons(self, k: int | None = None) -> list[tuple[int, int]]:
        return [(c["layer"], c["index"]) for c in self.candidates(k)]

    def top_suppressors(self, k: int | None = None) -> list[tuple[int, int]]:
        return [(c["layer"], c["index"]) for c in self.suppressors(k)]

    def all_warnings(self) -> list[str]:
        """Every warning about this result: probe size, no candidates, and those added while scanning."""
        out = []
        small = small_probe_warning(self.scores.n_pos, self.scores.n_neg)
        if small:
            out.append(small)
        if self.scores.n_candidates == 0:
            out.append(no_candidates_warning(self.fdr_q, self.min_selectivity))
        return out + [w for w in self.warnings if w not in out]

    def layer_summary(self) -> list[dict[str, Any]]:
        s = self.scores
        out = []
        sig = self.significant
        for layer, units in zip(self.layers, self.units):
            m = s.layer == layer
            out.append({
                "layer": layer, "n_units": units, "n_significant": int(sig[m].sum()),
                "n_significant_positive": int((sig & (s.selectivity > 0))[m].sum()),
                "top_score": rounded(s.score[m].max()), "max_selectivity": rounded(s.selectivity[m].max()),
                "mean_abs_selectivity": rounded(s.selectivity[m].abs().mean()),
                "sum_score": rounded(s.score[m].sum()),
                # the activation spread a neuron of this layer typically has (what layer-scaled d divides by)
                "activation_scale": None if s.activation_scale is None else rounded(s.activation_scale[m][0]),
            })
        return out

    def examples_for(self, i: int) -> list[dict[str, Any]]:
        """The probe examples that activate neuron ``i`` most, with the strongest position; a text longer than
        :data:`~neurolens_lightning.concepts.EXAMPLE_CHARS` characters is clipped around its span (``…`` at each cut,
        ``span`` into the clipped text, ``text_chars`` its full length)."""
        s = self.scores
        items = list(self.concept.positive) + list(self.concept.negative)
        n_pos = len(self.concept.positive)
        out = []
        for v, eid, pos in zip(s.top_values[:, i].tolist(), s.top_example_ids[:, i].tolist(),
                               s.top_positions[:, i].tolist()):
            if eid < 0 or eid >= len(items):
                continue
            ex = items[eid]
            rec: dict[str, Any] = {"activation": rounded(v), "positive": eid < n_pos, "position": int(pos)}
            if isinstance(ex, TextExample):  # a long text is stored clipped around its span (EXAMPLE_CHARS)
                text, span = clip_text(ex.text, ex.span, EXAMPLE_CHARS)
                rec["text"], rec["span"] = text, list(span) if span else None
                if text != ex.text:
                    rec["text_chars"] = len(ex.text)
            elif isinstance(ex, ImageExample):
                rec["image"] = str(ex.path)
            out.append(rec)
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, include_all: bool = True) -> dict[str, Any]:
        s = self.scores
        n_listed = max(self.top_k, min(self.max_neurons, len(s.order)))
        all_order = s.order.tolist()
        order = all_order[:n_listed]
        listed = set(order)
        # every ablated neuron keeps its record whatever its rank (e.g. one named with --neurons)
        ablated = {s.flat_index(l, u) for l, u in self.ablation}
        rank_of = {i: r + 1 for r, i in enumerate(all_order)}
        order += sorted((i for i in ablated if i not in listed), key=rank_of.__getitem__)
        shown = {s.flat_index(l, u) for l, u in self.top_suppressors()} | ablated
        neurons = []
        for i in order:
            rec = self.neuron_record(i, rank=rank_of[i])
            if rank_of[i] <= max(self.top_k, 20) or i in shown:
                rec["top_examples"] = self.examples_for(i)
            neurons.append(rec)
        if self.label_neurons is not None:
            self.label_neurons(self, neurons)
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model.get("name"),
            "model_info": self.model,
            "concept": self.concept.name,
            "concept_info": {**self.concept.summary(), "groups": self.concept.group_names,
                             "source": self.concept.source},
            "layers": self.layers,
            "n_positive": len(self.concept.positive),
            "n_negative": len(self.concept.negative),
            "n_neurons_scanned": int(len(s.order)),
            "n_significant_fdr": self.n_significant_fdr,
            "fdr_q": self.fdr_q,
            "min_selectivity": self.min_selectivity,
            "n_candidates": s.n_candidates,
            "n_suppressors": s.n_suppressors,
            "warnings": self.all_warnings(),
            "top_k": self.top_k,
            "settings": self.settings,
            "confidence_head": self.head,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "neurons": neurons,
            "layer_summary": self.layer_summary(),
        }
        if self.ablation_summary is not None:
            data["ablation_summary"] = self.ablation_summary
        if include_all:
            data["all_neurons"] = {
                "layers": self.layers,
                "selectivity": [[rounded(v, 4) for v in s.selectivity[s.layer == l].tolist()] for l in self.layers],
                "consistency": [[rounded(v, 4) for v in s.consistency[s.layer == l].tolist()] for l in self.layers],
                "importance": None if s.importance is None else
                [[rounded(v, 4) for v in s.importance[s.layer == l].tolist()] for l in self.layers],
                "score": [[rounded(v, 4) for v in s.score[s.layer == l].tolist()] for l in self.layers],
            }
        clash = sorted(set(self.extra) & set(data))
        if clash:  # extra sections add to the schema; they never silently replace one of its keys
            raise NeuroLensError(f"ScanResult.extra may not replace results.json keys {clash}")
        data.update(self.extra)
        # nothing finished is lost to a value that could not be computed: it is saved as null, with a warning
        # that the console, results.json and the page all show
        missing = nonfinite_warning(nonfinite_paths({k: v for k, v in data.items() if k != "warnings"}))
        if missing and missing not in self.warnings:
            self.warnings.append(missing)
            data["warnings"] = self.all_warnings()
        return json_safe(data)

    def save(self, out_dir: "str | Path | Output", report: bool = True, keep: "tuple[str, ...]" = ()) -> Path:
        """Write ``results.json`` (and ``report.html`` when ``report``) as the folder ``out_dir``, atomically and
        whole (:func:`~neurolens_lightning.io.publish`; ``keep``: entries of an existing folder carried over).
        Returns the folder written."""
        data = self.to_dict()

        def write(tmp: Path) -> None:
            (tmp / "results.json").write_text(json.dumps(data, indent=1, allow_nan=False), encoding="utf-8")
            if report:
                write_report(data, tmp / "report.html")

        return publish(out_dir, write, keep=keep)
