"""Cross-concept specificity: what else does each neuron respond to? (DESIGN §7)

Before anyone steers a neuron, they should know whether it serves one concept or several.
:func:`cross_concept` scores the same neurons on several probes of the same modality — for a scan
(:func:`cross_concept_for_result`): the scanned concept itself, the other built-in concepts and
any the user adds — with one activation pass per probe on the model already loaded, and returns
one matrix: Cohen's d, its FDR q and whether the neuron is *selective* for that concept.

**Like with like.** Every row is scored on the same kind of examples, and none on the examples
that selected the neurons (their d there is inflated by the selection: winner's curse). When the
scan ranked its neurons on a split of the probe (``ablate=True`` with ``holdout > 0``), the scanned
concept is scored on its *held-out* split, and every other probe on *its* held-out split of the
same ``holdout`` and ``seed``: the same fraction of each probe, disjoint from any selection.
Without a held-out split every probe is scored whole; the scanned concept's row is then the data
that selected the neurons, and the output says so (``own_row_is_selection_data``). ``split``
names, per concept, the examples its row was scored on (``held-out``, ``full`` or ``ranking``).

**Selective, corrected across concepts.** A neuron is selective for a concept when it passes the
scan's candidate rule without the importance sign — positively selective, layer-scaled d at
least ``min_selectivity``, Benjamini-Hochberg q (over every scanned neuron of that probe) at most
``q_threshold`` — with ``q_threshold = fdr_q / C`` for the C concepts of the matrix (Bonferroni).
BH never rejects a p-value above its level, so a neuron with no effect on a concept is called
selective for it with probability at most ``fdr_q / C``, and a neuron that serves one concept (or
none) is listed under ``shared`` (selective for two or more) with probability at most
``(C - 1) / C * fdr_q < fdr_q``. ``q`` reports the uncorrected BH q of each probe.

Example:
    >>> m = cross_concept(adapter, [(1, 1035), (4, 1251)], ["negation", "plural"])   # doctest: +SKIP
    >>> m["shared"], m["q_threshold"]                                                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import Concept, builtin_concept_names, load_concept, load_concept_file
from neurolens_lightning.errors import NeuroLensError, ProbeError
from neurolens_lightning.progress import progress_bar
from neurolens_lightning.scanner import ConceptScanner

HELD_OUT, FULL, RANKING = "held-out", "full", "ranking"
_RANKING_TAG = " [ranking split]"


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


def held_out_split(concept: Concept, holdout: float, seed: int) -> Concept | None:
    """``concept``'s held-out split as a scan with ``holdout`` and ``seed`` makes it (:meth:`Concept.split`), or
    None when the probe is too small to split. Tasks are dropped first: the matrix scores activations only, and
    the examples' split does not depend on them."""
    try:
        return replace(concept, tasks=[]).split(holdout, seed=seed)[1]
    except ProbeError:
        return None


def _same_examples(a: Concept, b: Concept) -> bool:
    return (a.positive == b.positive and a.negative == b.negative
            and a.positive_groups == b.positive_groups)


def _scanned_probe(result: Any, full_concept: Any, holdout: float, seed: int) -> Concept | None:
    """The full probe that ``result``'s ranking split was cut from: ``full_concept`` (checked), else the probe
    file named by the ranking split's source (checked), else None."""
    rank = result.concept
    if full_concept is not None:
        full = load_concept(full_concept)
        if not _same_examples(replace(full, tasks=[]).split(holdout, seed=seed)[0], rank):
            raise NeuroLensError(f"full_concept {full.name!r} is not the probe the scan ranked on: its ranking split "
                                 f"(holdout={holdout:g}, seed={seed}) differs from result.concept")
        return full
    src = rank.source[: -len(_RANKING_TAG)] if rank.source.endswith(_RANKING_TAG) else None
    if src and Path(src).is_file():
        try:
            full = load_concept_file(src)
        except ProbeError:
            return None
        if full.name == rank.name and _same_examples(replace(full, tasks=[]).split(holdout, seed=seed)[0], rank):
            return full
    return None


def _scan_rows(adapter: ModelAdapter, neurons: Sequence[tuple[int, int]], rows: Sequence[tuple[str, Concept, str]],
               layers: Sequence[int] | None, batch_size: int, fdr_q: float, min_selectivity: float,
               holdout: float, seed: int, own: str | None, progress: bool = False) -> dict[str, Any]:
    """Score ``neurons`` on each ``(name, examples, split label)`` row at the Bonferroni-corrected level (with
    ``progress``, one bar over every row's examples)."""

    n_concepts = len(rows)
    q_threshold = fdr_q / max(n_concepts, 1)
    names, splits, sizes, d_rows, q_rows, sel_rows = [], [], [], [], [], []
    desc = f"cross-concept [{len(neurons)} neurons x {n_concepts} concepts]"
    with progress_bar(sum(len(c.positive) + len(c.negative) for _, c, _ in rows), desc, progress,
                      unit="example") as bar:
        for name, c, split in rows:
            bar.set_postfix(name)
            sc = ConceptScanner(adapter, c, layers=layers, batch_size=batch_size, importance=False,
                                fdr_q=q_threshold, min_d=min_selectivity)
            sc.run_activation_pass()
            s = sc.compute()
            flat = [s.flat_index(l, i) for l, i in neurons]
            names.append(name)
            splits.append(split)
            sizes.append([len(c.positive), len(c.negative)])
            d_rows.append([float(s.selectivity[f]) for f in flat])
            q_rows.append([float(s.selectivity_q[f]) for f in flat])
            # without importance every eligible neuron is role 1; the scanner's level is q_threshold
            sel_rows.append([bool(s.role[f] != 0) for f in flat])
            bar.update(len(c.positive) + len(c.negative))
    transpose = lambda rows_: [list(r) for r in zip(*rows_)] if rows_ else []  # noqa: E731
    d, q, sel = transpose(d_rows), transpose(q_rows), transpose(sel_rows)
    shared = []  # neurons that serve several concepts of the matrix
    for (l, i), row in zip(neurons, sel):
        hits = [names[j] for j in range(len(names)) if row[j]]
        if len(hits) >= 2:
            shared.append({"layer": int(l), "index": int(i), "selective_for": hits})
    own_selection = own is not None and own in names and splits[names.index(own)] != HELD_OUT
    return {
        "concepts": names, "neurons": [{"layer": int(l), "index": int(i)} for l, i in neurons],
        "d": d, "q": q, "selective": sel, "shared": shared,
        "split": splits, "n_examples": sizes, "holdout": float(holdout), "seed": int(seed),
        "own_concept": own, "own_row_is_selection_data": bool(own_selection),
        "q_threshold": q_threshold, "correction": _correction(fdr_q, n_concepts),
        "definition": _definition(names, splits, holdout, seed, own if own_selection else None, fdr_q,
                                  q_threshold, n_concepts, min_selectivity),
    }


def _correction(fdr_q: float, n: int) -> str:
    if n <= 1:
        return f"none needed: one concept, tested at FDR q <= {fdr_q:g}; no neuron can be shared"
    return (f"Bonferroni over the {n} concepts of the matrix: each probe's Benjamini-Hochberg test (over every "
            f"scanned neuron) runs at q <= {fdr_q:g} / {n} = {fdr_q / n:.4g}. BH never rejects a p-value above its "
            f"level, so a neuron with no effect on a concept is called selective for it with probability at most "
            f"{fdr_q / n:.4g}, and a neuron that serves one concept (or none) is listed as shared with probability "
            f"at most {(n - 1) * fdr_q / n:.4g} < {fdr_q:g}")


def _definition(names: list[str], splits: list[str], holdout: float, seed: int, own_selection: str | None,
                fdr_q: float, q_threshold: float, n: int, min_selectivity: float) -> str:
    s = "Cohen's d of each neuron on each probe (one activation pass per probe, same model and layers)"
    if holdout > 0:
        s += (f", every {'other ' if own_selection else ''}probe scored on its held-out split ({holdout:.0%} of its "
              f"examples, seed {seed}), disjoint from the examples that ranked the neurons")
        whole = [nm for nm, sp in zip(names, splits) if sp == FULL]
        if whole:
            s += f" ({', '.join(whole)}: too small to split, scored whole)"
    else:
        s += ", every probe scored on all its examples"
    if own_selection is not None:
        how = ("the ranking split (the full probe, to cut its held-out split from, was not available)"
               if splits[names.index(own_selection)] == RANKING else "all its examples (no held-out split)")
        s += (f"; the {own_selection} row is scored on {how}: the very examples that selected the neurons, so its "
              "d is inflated by the selection")
    s += (f"; selective = positively selective with a layer-scaled d >= {min_selectivity:g} at FDR q <= "
          f"{q_threshold:.4g}" + (f" ({fdr_q:g} / {n} concepts, Bonferroni)" if n > 1 else "")
          + ", the scan's own candidate rule without the importance sign")
    return s


def cross_concept(adapter: ModelAdapter, neurons: Sequence[tuple[int, int]], concepts: Sequence[Any],
                  layers: Sequence[int] | None = None, batch_size: int = 16, fdr_q: float = 0.05,
                  min_selectivity: float = 0.5, holdout: float = 0.0, seed: int = 0,
                  selected_on: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Selectivity of ``neurons`` on every concept of ``concepts`` (built-in names, paths, dicts or Concepts).

    Each concept is scanned over ``layers`` (the scan's layers, so the FDR correction covers the
    same neurons as the scan's own) without the importance pass, on its held-out split
    (``Concept.split(holdout, seed)``; a probe too small to split is scored whole) when
    ``holdout > 0``, else on all its examples. ``selected_on``: the name of the concept, if any of
    ``concepts``, whose probe selected the neurons — with ``holdout > 0`` the caller guarantees the
    neurons were ranked on the other split of the same ``holdout`` and ``seed``; without, its row
    is flagged as the selection data. A neuron is selective for a concept at FDR level
    ``fdr_q / len(concepts)`` (see the module docstring).

    Returns ``{"concepts", "neurons", "d", "q", "selective", "shared", "split", "n_examples",
    "holdout", "seed", "own_concept", "own_row_is_selection_data", "q_threshold", "correction",
    "definition"}`` with ``d[i][j]`` the Cohen's d of neuron i on concept j and ``split[j]`` the
    examples concept j was scored on. ``progress``: a bar on stderr (:mod:`neurolens_lightning.progress`).
    """
    rows = []
    for c in (load_concept(c) for c in concepts):
        part = held_out_split(c, holdout, seed) if holdout > 0 else None
        rows.append((c.name, part, HELD_OUT) if part is not None else (c.name, c, FULL))
    return _scan_rows(adapter, neurons, rows, layers, batch_size, fdr_q, min_selectivity, holdout, seed,
                      selected_on, progress)


def cross_concept_for_result(result: Any, adapter: ModelAdapter, also: Sequence[Any] = (), batch_size: int = 16,
                             full_concept: Any = None, progress: bool = False) -> dict[str, Any]:
    """The matrix for a scan's candidates, suppressors and ablated neurons: the scanned concept first, then the
    other concepts (:func:`other_concepts`).

    When the scan ranked on a split (``result.settings["holdout"] > 0``; ``result.concept`` is then the ranking
    split), the scanned concept is scored on its held-out split, cut again from the full probe: ``full_concept``
    (the probe as given to the scan; checked against ``result.concept``), else the probe file the ranking split
    came from. Should neither be available, its row is scored on the ranking split and flagged
    (``own_row_is_selection_data``; ``split`` = ``ranking``).
    """
    neurons = list(dict.fromkeys(result.top_neurons() + result.top_suppressors() + list(result.ablation)))
    settings = getattr(result, "settings", None) or {}
    holdout, seed = float(settings.get("holdout") or 0.0), int(settings.get("seed") or 0)
    if not neurons:
        return {"concepts": [], "neurons": [], "d": [], "q": [], "selective": [], "shared": [], "split": [],
                "n_examples": [], "holdout": holdout, "seed": seed, "own_concept": result.concept.name,
                "own_row_is_selection_data": False, "q_threshold": result.fdr_q,
                "correction": "none: no neurons to compare", "definition": "no candidates or suppressors to compare"}
    own = result.concept
    others = other_concepts(own, also)
    if holdout > 0:
        full = _scanned_probe(result, full_concept, holdout, seed)
        part = held_out_split(full, holdout, seed) if full is not None else None
        own_row = (own.name, part, HELD_OUT) if part is not None else (own.name, own, RANKING)
    else:  # result.concept is the data that selected the neurons: the whole probe (or, from a result that does
        # not record its holdout, a ranking split)
        own_row = (own.name, own, RANKING if own.source.endswith(_RANKING_TAG) else FULL)
    rows = [own_row]
    for c in others:
        part = held_out_split(c, holdout, seed) if holdout > 0 else None
        rows.append((c.name, part, HELD_OUT) if part is not None else (c.name, c, FULL))
    return _scan_rows(adapter, neurons, rows, result.layers, batch_size, result.fdr_q, result.min_selectivity,
                      holdout, seed, own.name, progress)


__all__ = ["cross_concept", "cross_concept_for_result", "held_out_split", "other_concepts"]
