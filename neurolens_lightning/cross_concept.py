"""Cross-concept specificity: what else does each neuron respond to? (DESIGN §7)

Before anyone steers a neuron, they should know whether it serves one concept or several.
:func:`cross_concept` scores the same neurons on other probes of the same modality — the
built-in concepts plus any the user adds — with one activation pass per probe on the model
already loaded, and returns one matrix: Cohen's d, its FDR q and whether the neuron would be
*selective* for that concept by the scan's own rule (positively selective at FDR q, layer-scaled
d above the floor). A neuron selective for two or more of the concepts is listed under ``shared``.

Example:
    >>> m = cross_concept(adapter, [(1, 1035), (4, 1251)], ["negation", "plural"])   # doctest: +SKIP
    >>> m["shared"]                                                                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import Concept, builtin_concept_names, load_concept
from neurolens_lightning.errors import NeuroLensError


def other_concepts(concept: Concept, also: Sequence[Any] = ()) -> list[Concept]:
    """The built-in concepts of ``concept``'s modality (except itself) followed by ``also``."""
    out: list[Concept] = []
    for name in builtin_concept_names():
        c = load_concept(name)
        if c.modality == concept.modality and c.name != concept.name:
            out.append(c)
    for a in also:
        c = load_concept(a)
        if c.modality != concept.modality:
            raise NeuroLensError(f"--also {c.name!r} is a {c.modality} probe but {concept.name!r} is {concept.modality}"
                                 "; cross-concept specificity compares probes of the same modality")
        if c.name not in {x.name for x in out} and c.name != concept.name:
            out.append(c)
    return out


def cross_concept(adapter: ModelAdapter, neurons: Sequence[tuple[int, int]], concepts: Sequence[Any],
                  layers: Sequence[int] | None = None, batch_size: int = 16, fdr_q: float = 0.05,
                  min_selectivity: float = 0.5, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Selectivity of ``neurons`` on every concept of ``concepts`` (built-in names, paths or Concepts).

    Each concept is scanned over ``layers`` (the scan's layers, so the FDR correction covers the
    same neurons as the scan's own) without the importance pass. ``reference``: the scanned
    concept's own row (``{"name", "d", "selective"}``), put first in the matrix.

    Returns ``{"concepts", "neurons", "d", "q", "selective", "shared", "definition"}`` with
    ``d[i][j]`` the Cohen's d of neuron i on concept j.
    """
    from neurolens_lightning.scanner import ConceptScanner

    cons = [load_concept(c) for c in concepts]
    names, d_rows, q_rows, sel_rows = [], [], [], []
    if reference is not None:
        names.append(reference["name"])
        d_rows.append(list(reference["d"]))
        q_rows.append(list(reference["q"]))
        sel_rows.append(list(reference["selective"]))
    for c in cons:
        sc = ConceptScanner(adapter, c, layers=layers, batch_size=batch_size, importance=False, fdr_q=fdr_q,
                            min_d=min_selectivity)
        sc.run_activation_pass()
        s = sc.compute()
        flat = [s.flat_index(l, i) for l, i in neurons]
        names.append(c.name)
        d_rows.append([float(s.selectivity[f]) for f in flat])
        q_rows.append([float(s.selectivity_q[f]) for f in flat])
        sel_rows.append([bool(s.role[f] != 0) for f in flat])  # without importance every eligible neuron is role 1
    transpose = lambda rows: [list(r) for r in zip(*rows)] if rows else []  # noqa: E731
    d, q, sel = transpose(d_rows), transpose(q_rows), transpose(sel_rows)
    shared = []  # neurons that serve several concepts of the matrix
    for (l, i), row in zip(neurons, sel):
        hits = [names[j] for j in range(len(names)) if row[j]]
        if len(hits) >= 2:
            shared.append({"layer": int(l), "index": int(i), "selective_for": hits})
    return {
        "concepts": names, "neurons": [{"layer": int(l), "index": int(i)} for l, i in neurons],
        "d": d, "q": q, "selective": sel, "shared": shared,
        "definition": (f"Cohen's d of each neuron on each probe (one activation pass per probe, same model and "
                       f"layers); selective = positively selective at FDR q <= {fdr_q:g} with a layer-scaled d >= "
                       f"{min_selectivity:g}, the scan's own candidate rule without the importance sign"),
    }


def cross_concept_for_result(result: Any, adapter: ModelAdapter, also: Sequence[Any] = (),
                             batch_size: int = 16) -> dict[str, Any]:
    """The matrix for a scan's candidates, suppressors and ablated neurons against the other concepts."""
    neurons = list(dict.fromkeys(result.top_neurons() + result.top_suppressors() + list(result.ablation)))
    if not neurons:
        return {"concepts": [], "neurons": [], "d": [], "q": [], "selective": [], "shared": [],
                "definition": "no candidates or suppressors to compare"}
    s = result.scores
    flat = [s.flat_index(l, i) for l, i in neurons]
    ref = {"name": result.concept.name, "d": [float(s.selectivity[f]) for f in flat],
           "q": [float(s.selectivity_q[f]) for f in flat], "selective": [bool(s.role[f] != 0) for f in flat]}
    others = other_concepts(result.concept, also)
    return cross_concept(adapter, neurons, others, layers=result.layers, batch_size=batch_size, fdr_q=result.fdr_q,
                         min_selectivity=result.min_selectivity, reference=ref)


__all__ = ["cross_concept", "cross_concept_for_result", "other_concepts"]
